"""RBAC (envoy.filters.http.rbac and envoy.filters.network.rbac) through the real proxy, with
real mTLS clients (curl) holding SPIFFE identities issued by the mesh CA (build/remora-certs):
a workload allowed to GET /api but not to POST, another denied everywhere, a plaintext client
denied by an `authenticated` policy, a route that turns the filter off (RBACPerRoute), shadow
rules that count without enforcing, the network filter closing a TCP connection by source IP
before its bytes reach the endpoint, config rejections with field paths, and
examples/rbac.yaml."""

import copy
import socket
import subprocess

from lib import REPO, bootstrap_dict, build_dir, free_port, slow_factor, to_yaml, wait_for
from proxyutil import stats
from test_certs import TD, identity, new_ca, pem_files

RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
NET_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"

WEB = f"spiffe://{TD}/ns/shop/sa/web"
API = f"spiffe://{TD}/ns/shop/sa/api"
INTRUDER = f"spiffe://{TD}/ns/shop/sa/intruder"


def method(m):
    return {"header": {"name": ":method", "string_match": {"exact": m}}}


def path_prefix(p):
    return {"url_path": {"path": {"prefix": p}}}


def spiffe(id_):
    return {"authenticated": {"principal_name": {"exact": id_}}}


# web may GET /api...; nobody else may do anything (ALLOW: no matching policy is a denial)
WEB_READS_API = {"policies": {"web-reads-api": {
    "permissions": [{"and_rules": {"rules": [method("GET"), path_prefix("/api")]}}],
    "principals": [spiffe(WEB)]}}}


def mesh_down_tls(sds):
    """api's DownstreamTlsContext: its identity and the mesh CA from the SDS file; a client
    certificate is asked for but not required, and no SAN is pinned: RBAC decides."""
    src = {"resource_api_version": "V3", "path_config_source": {"path": str(sds)}}
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS_DOWN,
        "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": "default", "sds_config": src}],
            "validation_context_sds_secret_config": {"name": "ROOTCA", "sds_config": src}}}}


def api_sidecar(ctx, up_port, sds, rbac_cfg, routes=None):
    """An mTLS listener (0) and a plaintext one (1), both with `rbac_cfg` as their HTTP RBAC
    filter, in front of the upstream."""
    d = bootstrap_dict(clusters={"app": [up_port]}, routes=routes, stat_prefix="api",
                       http_filters=[{"name": "envoy.filters.http.rbac",
                                      "typed_config": dict({"@type": RBAC}, **rbac_cfg)}])
    tls_l = d["static_resources"]["listeners"][0]
    tls_l["filter_chains"][0]["transport_socket"] = mesh_down_tls(sds)
    plain = copy.deepcopy(tls_l)
    del plain["filter_chains"][0]["transport_socket"]
    plain["name"] = "plain"
    plain["address"]["socket_address"]["port_value"] = free_port()
    d["static_resources"]["listeners"].append(plain)
    return ctx.start_remora(d)


def curl(port, *args, path="/api/items", tls=True, method_="GET"):
    """(HTTP status, body) of a request through curl; over TLS with the client identity in
    args (--cert/--key), the server not verified (its certificate names a SPIFFE ID only)."""
    scheme = "https" if tls else "http"
    argv = ["curl", "-sS", "--max-time", str(5 * slow_factor()), "-o", "-", "-w",
            "\n%{http_code}", "-X", method_, *(["-k"] if tls else []), *args,
            f"{scheme}://127.0.0.1:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=15 * slow_factor())
    assert p.returncode == 0, p.stderr
    body, _, code = p.stdout.rpartition("\n")
    return int(code), body.strip()


def client(ctx, ca, id_, name):
    cert, key = pem_files(ctx, identity(ctx, ca, id_, name), name)
    return ["--cert", cert, "--key", key]


def test_rbac_spiffe_identity_may_get_api_but_not_post(ctx):
    ca = new_ca(ctx)
    up = ctx.start_upstream("app")
    r = api_sidecar(ctx, up.port, identity(ctx, ca, API, "api"), {"rules": WEB_READS_API})
    web, intruder = client(ctx, ca, WEB, "web"), client(ctx, ca, INTRUDER, "intruder")
    port, plain = r.port(0), r.port(1)

    assert curl(port, *web) == (200, "app")
    assert curl(port, *web, method_="POST") == (403, "RBAC: access denied")
    assert curl(port, *web, path="/admin") == (403, "RBAC: access denied")
    for m in ("GET", "POST"):
        assert curl(port, *intruder, method_=m) == (403, "RBAC: access denied")
    # TLS without a client certificate, and plaintext: no principal at all
    assert curl(port) == (403, "RBAC: access denied")
    assert curl(plain, tls=False) == (403, "RBAC: access denied")

    st = stats(r)
    assert st["http.api.rbac.allowed"] == 1, st
    assert st["http.api.rbac.denied"] == 6, st
    assert "http.api.rbac.shadow_denied" in st and st["http.api.rbac.shadow_denied"] == 0
    assert up.stats()["requests"] == 1


def test_rbac_authenticated_policy_denies_plaintext_and_a_route_can_turn_it_off(ctx):
    ca = new_ca(ctx)
    up = ctx.start_upstream("app")
    # any authenticated peer may do anything, except on /health, where RBACPerRoute without
    # rbac turns the filter off, and /web-only, where the route's own rules admit only web
    routes = [
        {"match": {"prefix": "/health"}, "route": {"cluster": "app"},
         "typed_per_filter_config": {"envoy.filters.http.rbac": {"@type": RBAC_ROUTE}}},
        {"match": {"prefix": "/web-only"}, "route": {"cluster": "app"},
         "typed_per_filter_config": {"envoy.filters.http.rbac": {
             "@type": RBAC_ROUTE, "rbac": {"rules": {"policies": {"w": {
                 "permissions": [{"any": True}], "principals": [spiffe(WEB)]}}}}}}},
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]
    rules = {"policies": {"mtls": {"permissions": [{"any": True}],
                                   "principals": [{"authenticated": {}}]}}}
    r = api_sidecar(ctx, up.port, identity(ctx, ca, API, "api"), {"rules": rules}, routes)
    web, intruder = client(ctx, ca, WEB, "web"), client(ctx, ca, INTRUDER, "intruder")
    port, plain = r.port(0), r.port(1)

    assert curl(plain, tls=False) == (403, "RBAC: access denied")
    assert curl(port, *intruder) == (200, "app")
    assert curl(plain, tls=False, path="/health") == (200, "app")
    # the same over HTTP/2 (h2c): the filter does not depend on the codec
    assert curl(plain, "--http2-prior-knowledge", tls=False) == (403, "RBAC: access denied")
    assert curl(plain, "--http2-prior-knowledge", tls=False, path="/health") == (200, "app")
    assert curl(port, *intruder, path="/web-only") == (403, "RBAC: access denied")
    assert curl(port, *web, path="/web-only") == (200, "app")
    st = stats(r)
    assert (st["http.api.rbac.allowed"], st["http.api.rbac.denied"]) == (2, 3), st


def test_rbac_shadow_rules_count_without_enforcing(ctx):
    ca = new_ca(ctx)
    up = ctx.start_upstream("app")
    r = api_sidecar(ctx, up.port, identity(ctx, ca, API, "api"),
                    {"shadow_rules": WEB_READS_API, "shadow_rules_stat_prefix": "audit_"})
    web, intruder = client(ctx, ca, WEB, "web"), client(ctx, ca, INTRUDER, "intruder")
    port = r.port(0)
    assert curl(port, *web) == (200, "app")
    assert curl(port, *web, method_="POST") == (200, "app")
    assert curl(port, *intruder) == (200, "app")
    assert curl(r.port(1), tls=False) == (200, "app")
    st = stats(r)
    assert st["http.api.rbac.audit_shadow_allowed"] == 1, st
    assert st["http.api.rbac.audit_shadow_denied"] == 3, st
    assert st.get("http.api.rbac.denied", 0) == 0 and st.get("http.api.rbac.allowed", 0) == 0
    assert up.stats()["requests"] == 4


def tcp_config(up_port, rules, shadow=None):
    net = {"@type": NET_RBAC, "stat_prefix": "tcp_in.", "rules": rules}
    if shadow:
        net["shadow_rules"] = shadow
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": free_port()}}},
        "static_resources": {
            "listeners": [{"name": "tcp", "address": {"socket_address": {
                "address": "0.0.0.0", "port_value": free_port()}},
                "filter_chains": [{"filters": [
                    {"name": "envoy.filters.network.rbac", "typed_config": net},
                    {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                        "@type": TCP, "stat_prefix": "tcp", "cluster": "app"}}]}]}],
            "clusters": [{"name": "app", "connect_timeout": "1s", "type": "STATIC",
                          "load_assignment": {"cluster_name": "app", "endpoints": [{
                              "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                                  "address": "127.0.0.1", "port_value": up_port}}}}]}]}}]}}


def tcp_get(port, source):
    """An HTTP GET through the TCP proxy from `source` (a loopback address); the bytes that
    came back before the proxy closed."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor(),
                                 source_address=(source, 0))
    try:
        s.sendall(b"GET /x HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        data = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return data
            if not b:
                return data
            data += b
    finally:
        s.close()


def test_rbac_network_filter_closes_a_connection_by_source_ip(ctx):
    up = ctx.start_upstream("app")
    # DENY 127.0.0.1/32 on port 'L' (a destination rule: the listener learns its address)
    rules = {"action": "DENY", "policies": {"no-local-one": {
        "permissions": [{"destination_port_range": {"start": 1, "end": 65536}}],
        "principals": [{"direct_remote_ip": {"address_prefix": "127.0.0.1", "prefix_len": 32}}]}}}
    shadow = {"policies": {"only-two": {"permissions": [{"any": True}], "principals": [
        {"source_ip": {"address_prefix": "127.0.0.2", "prefix_len": 32}}]}}}
    r = ctx.start_remora(tcp_config(up.port, rules, shadow))
    port = r.port(0)
    assert tcp_get(port, "127.0.0.1") == b""
    out = tcp_get(port, "127.0.0.2")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"app\n"), out
    wait_for(lambda: stats(r).get("tcp_in.rbac.allowed") == 1, 5, "allowed counted")
    st = stats(r)
    assert st["tcp_in.rbac.denied"] == 1, st
    assert (st["tcp_in.rbac.shadow_allowed"], st["tcp_in.rbac.shadow_denied"]) == (1, 1), st
    assert up.stats()["requests"] == 1  # the denied connection's bytes went nowhere


def test_rbac_network_filter_before_the_connection_manager(ctx):
    """The same filter in front of an HTTP connection manager: a denied client's request is
    never parsed (no response, no upstream request), an allowed one is served."""
    up = ctx.start_upstream("app")
    d = bootstrap_dict(clusters={"app": [up.port]}, stat_prefix="web")
    d["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] = "0.0.0.0"
    chain = d["static_resources"]["listeners"][0]["filter_chains"][0]
    chain["filters"].insert(0, {"name": "envoy.filters.network.rbac", "typed_config": {
        "@type": NET_RBAC, "stat_prefix": "web_net", "rules": {"policies": {"two": {
            "permissions": [{"any": True}],
            "principals": [{"remote_ip": {"address_prefix": "127.0.0.2", "prefix_len": 32}}]}}}}})
    r = ctx.start_remora(d)
    assert tcp_get(r.port(0), "127.0.0.1") == b""
    out = tcp_get(r.port(0), "127.0.0.2")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"app\n"), out
    wait_for(lambda: stats(r).get("web_net.rbac.allowed") == 1, 5, "allowed counted")
    assert stats(r)["web_net.rbac.denied"] == 1
    assert up.stats()["requests"] == 1


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _ld(field, payload):
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def hostile_listener(name, port, depth):
    """A Listener, as protobuf bytes, whose first network filter is an RBAC config with a
    permission of `depth` nested not_rules (a few hundred KiB): what a hostile or broken
    control plane could send."""
    heads, n = [], 2  # Permission{any: true} is 2 bytes
    for _ in range(depth):
        h = _varint(8 << 3 | 2) + _varint(n)  # not_rule
        heads.append(h)
        n += len(h)
    perm = b"".join(reversed(heads)) + b"\x18\x01"
    policy = _ld(1, perm) + _ld(2, b"\x18\x01")  # permissions, principals: [any]
    rules = _ld(2, _ld(1, b"p") + _ld(2, policy))  # policies {"p": policy}
    net = _ld(1, rules) + _ld(3, b"deep")  # rules, stat_prefix
    any_ = _ld(1, NET_RBAC.encode()) + _ld(2, net)
    flt = _ld(1, b"envoy.filters.network.rbac") + _ld(4, any_)
    addr = _ld(1, _ld(2, b"127.0.0.1") + _varint(3 << 3) + _varint(port))
    return _ld(1, name.encode()) + _ld(2, addr) + _ld(3, _ld(3, flt))


def test_rbac_over_ads_and_a_hostile_nesting_is_nacked(ctx):
    """Both filters in a listener from LDS over ADS (binary protobuf from the test control
    plane); then a listener nesting rules 200000 deep (protobuf-c alone would overflow the
    stack unpacking it) is NACKed with its path, and the listener in force keeps serving."""
    from adsutil import LST_TYPE, ads_bootstrap, route_config, start_ads_server, to
    up = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    port = free_port()
    deny_evil = {"action": "DENY", "policies": {"evil": {
        "permissions": [{"header": {"name": "x-evil", "present_match": True}}],
        "principals": [{"any": True}]}}}
    # (protobufjs's object form, inside an Any: the wrapper as a message)
    net_allow = {"policies": {"loopback": {"permissions": [{"any": True}], "principals": [
        {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": {"value": 8}}}]}}}
    lst = bootstrap_dict(listener_port=port, clusters={"a": [up.port]}, stat_prefix="dyn",
                         http_filters=[{"name": "envoy.filters.http.rbac", "typed_config": {
                             "@type": RBAC, "rules": deny_evil}}])["static_resources"]["listeners"][0]
    lst["name"] = "one"
    lst["filter_chains"][0]["filters"].insert(0, {
        "name": "envoy.filters.network.rbac",
        "typed_config": {"@type": NET_RBAC, "stat_prefix": "dyn_net", "rules": net_allow}})
    ads.set_listeners("l1", [lst])
    d = ads_bootstrap({"a": [up.port]}, ads.port)
    d["dynamic_resources"]["lds_config"] = {"ads": {}, "resource_api_version": "V3"}
    r = ctx.start_remora(d)
    assert curl(port, tls=False, path="/x") == (200, "a")
    assert curl(port, "-H", "x-evil: 1", tls=False, path="/x") == (403, "RBAC: access denied")

    import base64
    bad = base64.b64encode(hostile_listener("one", port, 200000)).decode()
    ads.set(LST_TYPE, "l2", [{"type_url": LST_TYPE, "b64": bad}])
    nack = ads.wait_request(lambda q: q.get("type_url") == LST_TYPE and q.get("error_detail"),
                            what="the LDS NACK")
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[0].filter_chains[0].filters[0].typed_config: "
                          "envoy.extensions.filters.network.rbac.v3.RBAC nested deeper than 64 "
                          "levels"), msg
    assert nack["version_info"] == "l1", nack
    assert curl(port, "-H", "x-evil: 1", tls=False, path="/x") == (403, "RBAC: access denied")
    assert curl(port, tls=False, path="/x") == (200, "a")
    st = stats(r)
    assert st["dyn_net.rbac.allowed"] == 4 and st["http.dyn.rbac.denied"] == 2, st


def validate(ctx, cfg):
    path = ctx.tmp / "v.yaml"
    path.write_text(cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n")
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    return p.returncode, p.stdout + p.stderr


def test_rbac_config_rejections_name_their_field(ctx):
    def http(cfg):
        return bootstrap_dict(clusters={"app": [1]}, http_filters=[
            {"name": "envoy.filters.http.rbac", "typed_config": dict({"@type": RBAC}, **cfg)}])

    hf = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
          "http_filters[0].typed_config")
    rc, out = validate(ctx, http({"rules": {"policies": {"p": {
        "permissions": [{"metadata": {}}], "principals": [{"any": True}]}}}}))
    assert rc != 0 and f"{hf}.rules.policies.p.permissions[0].metadata: unknown field" in out, out
    deep = {"any": True}
    for _ in range(40):
        deep = {"not_rule": deep}
    rc, out = validate(ctx, http({"rules": {"policies": {"p": {
        "permissions": [deep], "principals": [{"any": True}]}}}}))
    assert rc != 0 and "rules nested deeper than 32 levels" in out, out

    nf = "static_resources.listeners[0].filter_chains[0].filters[0]"
    cfg = tcp_config(1, {"action": "DENY"})
    net = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    net[0]["typed_config"]["enforcement_type"] = "CONTINUOUS"
    rc, out = validate(ctx, cfg)
    assert rc != 0 and f"{nf}.typed_config.enforcement_type: CONTINUOUS is not supported" in out
    net[0]["typed_config"]["enforcement_type"] = "ONE_TIME_ON_FIRST_BYTE"
    net[0]["typed_config"]["rules"] = {"policies": {"p": {
        "permissions": [path_prefix("/")], "principals": [{"any": True}]}}}
    rc, out = validate(ctx, cfg)
    assert rc != 0 and (f"{nf}.typed_config.rules.policies.p.permissions[0].url_path: url_path "
                        "rules are not supported by the network filter") in out, out
    net[0]["typed_config"]["rules"] = {"action": "DENY"}
    del net[0]["typed_config"]["stat_prefix"]
    rc, out = validate(ctx, cfg)
    assert rc != 0 and f"{nf}.typed_config.stat_prefix: required" in out, out
    net[0]["typed_config"]["stat_prefix"] = "x"
    net.reverse()  # the RBAC filter last
    rc, out = validate(ctx, cfg)
    assert rc != 0 and "filters[0]: the tcp_proxy must be the last network filter" in out, out
    net.pop(0)
    rc, out = validate(ctx, cfg)
    assert rc != 0 and ("filters[0]: the last network filter must be the "
                        "http_connection_manager or tcp_proxy") in out, out


def test_rbac_example_validates(ctx):
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c",
                        "examples/rbac.yaml"], cwd=REPO, capture_output=True, text=True,
                       timeout=10 * slow_factor())
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr
