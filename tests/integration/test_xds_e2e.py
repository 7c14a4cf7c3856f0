"""remora fed by remora-xds end to end: remora-xds (--xds-listen) holds a mesh made through its
App Mesh API (raw HTTP); remora runs as that mesh's sidecar node (node.id
mesh/<m>/virtualNode/front) with clusters (CDS), their endpoints (EDS) and routes (RDS) over one
ADS stream. Its listener is static: an egress-style HCM whose rds
names remora-xds's `rds_egress_http_<port>` (the first two tests). The last one takes
everything, listeners included, from remora-xds in an ECS-like task namespace. Requests with Host: <virtual service> reach the
router's weighted targets; route updates through the API move traffic (deadline-polled); a
target removed from the route takes its traffic with it."""

from adsutil import ads_bootstrap
from healthutil import FlipUpstream
from lib import HttpConn, free_port, wait_for
from proxyutil import stats
from test_xds_api import api
from test_xds_serve import start_xds_server

MESH = "m1"
NODE = f"mesh/{MESH}/virtualNode/front"
VS = "svc.m1.local"
ROUTER_PORT = 8080
P = "/v20190125/meshes"


def put(x, path, body):
    r = api(x.port, "PUT", path, body)
    assert r.status == 200, (path, r.status, r.text)
    return r.json()


def route_spec(targets):
    return {"priority": 0, "httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": n, "weight": w} for n, w in targets]}}}


def make_mesh(x, a_port, b_port, front_port, egress="DROP_ALL"):
    """Nodes a and b (the two upstreams on 127.0.0.1, with outlier detection), router r with one
    weighted http route, service VS by r, and the sidecar's node front (a health-checked app
    port: an ingress cluster) with VS as its backend. DROP_ALL (App Mesh's default) unless
    ``egress`` says otherwise (ALLOW_ALL: remora-xds adds the ORIGINAL_DST cluster
    cds_egress_passthrough and a catch-all route to it)."""
    put(x, P, {"meshName": MESH, "spec": {"egressFilter": {"type": egress}}})
    for name, port in (("a", a_port), ("b", b_port)):
        put(x, f"{P}/{MESH}/virtualNodes", {
            "virtualNodeName": name,
            "spec": {"listeners": [{"portMapping": {"port": port, "protocol": "http"},
                                    "outlierDetection": {
                                        "maxServerErrors": 5,
                                        "interval": {"unit": "s", "value": 10},
                                        "baseEjectionDuration": {"unit": "s", "value": 10},
                                        "maxEjectionPercent": 50}}],
                     "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})
    put(x, f"{P}/{MESH}/virtualRouters", {
        "virtualRouterName": "r",
        "spec": {"listeners": [{"portMapping": {"port": ROUTER_PORT, "protocol": "http"}}]}})
    put(x, f"{P}/{MESH}/virtualRouter/r/routes",
        {"routeName": "rt", "spec": route_spec([("a", 1), ("b", 1)])})
    put(x, f"{P}/{MESH}/virtualServices", {
        "virtualServiceName": VS,
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}})
    put(x, f"{P}/{MESH}/virtualNodes", {
        "virtualNodeName": "front",
        "spec": {"backends": [{"virtualService": {"virtualServiceName": VS}}],
                 "listeners": [{"portMapping": {"port": front_port, "protocol": "http"},
                                "healthCheck": {"protocol": "http", "path": "/health",
                                                "healthyThreshold": 2, "unhealthyThreshold": 2,
                                                "timeoutMillis": 2000, "intervalMillis": 5000}}],
                 "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})


def update_route(x, targets):
    put(x, f"{P}/{MESH}/virtualRouter/r/routes/rt", {"spec": route_spec(targets)})


def spread(r, n, path="/"):
    """Who answered n requests with Host: VS ({upstream name: count}; "<status>" for others)."""
    c = HttpConn(r.port())
    got = {}
    try:
        for _ in range(n):
            resp = c.request("GET", path, {"Host": VS})
            k = resp.header("x-upstream-name") if resp.status == 200 else f"<{resp.status}>"
            got[k] = got.get(k, 0) + 1
    finally:
        c.close()
    return got


def test_xds_e2e_remora_sidecar_over_ads(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    x = start_xds_server(ctx)
    make_mesh(x, a.port, b.port, free_port())

    cfg = ads_bootstrap({}, x.xds_port, route_config_name=f"rds_egress_http_{ROUTER_PORT}",
                        cds={"ads": {}, "resource_api_version": "V3"},
                        node={"id": NODE, "cluster": "front"})
    r = ctx.start_remora(cfg, log_level="debug")

    # The clusters remora-xds gives the sidecar, as CDS over ADS (and their endpoints by EDS).
    views = r.admin("GET", "/clusters").text
    for name in (f"cds_egress_{MESH}_a_http_{a.port}", f"cds_egress_{MESH}_b_http_{b.port}"):
        assert f"{name}::added_via_api::true" in views, views
        assert f"{name}::127.0.0.1:" in views, views  # an endpoint from EDS
        # App Mesh's client-side circuit breakers, taken over CDS: 2147483647 each, never
        # Envoy's 1024 (connections, pending, requests) and 3 (retries).
        for field in ("max_connections", "max_pending_requests", "max_requests", "max_retries"):
            assert f"{name}::default_priority::{field}::2147483647\n" in views, (field, views)
    assert "cds_ingress_" in views, views  # front's app port, health-checked
    s = stats(r)
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    assert s["control_plane.connected_state"] == 1, s

    # 1:1 weighted targets: both upstreams answer.
    got = spread(r, 200)
    assert set(got) == {"a", "b"}, got
    assert 50 <= got["a"] <= 150, got

    # The route's weights change through the API: traffic follows.
    update_route(x, [("a", 0), ("b", 1)])
    wait_for(lambda: spread(r, 20) == {"b": 20}, 10, "traffic on b only")

    # Target b removed from the route: its traffic moves to a.
    update_route(x, [("a", 1)])
    wait_for(lambda: spread(r, 20) == {"a": 20}, 10, "traffic on a only")

    # Other names are not the mesh's: no virtual host (DROP_ALL: 404).
    resp = HttpConn(r.port()).request("GET", "/", {"Host": "other.local"})
    assert resp.status == 404, resp
    s = stats(r)
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    assert s["http.ingress_http.rds.rds_egress_http_8080.update_rejected"] == 0, s
    assert r.alive()


def test_xds_e2e_allow_all_mesh_is_accepted(ctx):
    """An ALLOW_ALL mesh: the CDS update with remora-xds's ORIGINAL_DST passthrough cluster is
    ACKed (it was NACKed whole before remora took ORIGINAL_DST from CDS), the mesh's routes
    serve, and a name the mesh does not know takes the passthrough route instead of a 404. With
    this static loopback listener (no original_dst listener filter, no iptables REDIRECT) the
    passthrough has no original destination to go to: 503 UH. Reaching an outside destination
    through the same CDS cluster under the ECS rules is test_capture.py's
    test_capture_egress_passthrough_from_cds."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    x = start_xds_server(ctx)
    make_mesh(x, a.port, b.port, free_port(), egress="ALLOW_ALL")
    cfg = ads_bootstrap({}, x.xds_port, route_config_name=f"rds_egress_http_{ROUTER_PORT}",
                        cds={"ads": {}, "resource_api_version": "V3"},
                        node={"id": NODE, "cluster": "front"})
    r = ctx.start_remora(cfg, log_level="debug")
    s = stats(r)
    assert s["cluster_manager.cds.update_success"] >= 1, s
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    views = r.admin("GET", "/clusters").text
    assert "cds_egress_passthrough::added_via_api::true" in views, views
    got = spread(r, 40)
    assert set(got) == {"a", "b"}, got
    resp = HttpConn(r.port()).request("GET", "/", {"Host": "outside.example"})
    assert resp.status == 503, resp  # the passthrough route (DROP_ALL: 404), no destination
    s = stats(r)
    assert s["cluster.cds_egress_passthrough.upstream_cx_none_healthy"] == 1, s
    assert s["cluster_manager.cds.update_rejected"] == 0, s


def test_xds_e2e_default_retry_policy(ctx):
    """App Mesh's default retry policy (a route without retryPolicy): a backend that answers
    503 once and then 200 is retried by the sidecar, so the app gets 200 (Envoy's defaults, or
    remora-xds before it emitted App Mesh's policy: no retry, the 503 reaches the app). A
    route's own retryPolicy replaces it: maxRetries 0 means no retry."""
    b = ctx.start_upstream("b")
    with FlipUpstream("a") as a:
        x = start_xds_server(ctx)
        make_mesh(x, a.port, b.port, free_port())
        update_route(x, [("a", 1)])
        cfg = ads_bootstrap({}, x.xds_port, route_config_name=f"rds_egress_http_{ROUTER_PORT}",
                            cds={"ads": {}, "resource_api_version": "V3"},
                            node={"id": NODE, "cluster": "front"})
        r = ctx.start_remora(cfg)
        cluster = f"cds_egress_{MESH}_a_http_{a.port}"
        assert spread(r, 1) == {"a": 1}
        a.fail_next = 1
        assert spread(r, 1, "/once") == {"a": 1}  # 503, retried: 200
        assert a.count("/once") == 2
        s = stats(r)
        assert s[f"cluster.{cluster}.upstream_rq_retry"] == 1, s
        assert s[f"cluster.{cluster}.upstream_rq_retry_success"] == 1, s
        # 2 retries at most: three 503s in a row reach the app.
        a.fail_next = 3
        assert spread(r, 1, "/thrice") == {"<503>": 1}
        assert a.count("/thrice") == 3

        # The route's own policy (maxRetries 0: none) replaces the default.
        spec = route_spec([("a", 1)])
        spec["httpRoute"]["retryPolicy"] = {"maxRetries": 0, "httpRetryEvents": ["server-error"],
                                            "perRetryTimeout": {"unit": "s", "value": 1}}
        put(x, f"{P}/{MESH}/virtualRouter/r/routes/rt", {"spec": spec})

        def no_retry():
            a.fail_next = 1
            return spread(r, 1, "/own") == {"<503>": 1}

        wait_for(no_retry, 10, "the route's own policy (no retries)")
        before = stats(r)[f"cluster.{cluster}.upstream_rq_retry"]
        a.fail_next = 1
        assert spread(r, 1, "/own") == {"<503>": 1}
        assert stats(r)[f"cluster.{cluster}.upstream_rq_retry"] == before


def test_xds_dns_response_type_and_ip_preference(ctx):
    """A virtual node's DNS hostname as App Mesh's Envoy resolved it: remora-xds in a mount
    namespace whose /etc/hosts gives multi.test two IPv4 addresses and one IPv6 (getaddrinfo
    answers both families). responseType LOADBALANCER (the default) gives one endpoint, of
    the preferred family (no preference: IPv6); ENDPOINTS all of the preferred family's;
    IPv4_ONLY none of IPv6's; the mesh's ipPreference applies to a node without one."""
    import os
    from lib import Skip
    from test_dns_refresh import REFUSED_NS, mount_prefix
    if os.geteuid() != 0:
        raise Skip("the mount namespace needs root")
    hosts, resolv = ctx.tmp / "hosts", ctx.tmp / "resolv.conf"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.2 multi.test\n127.0.0.3 multi.test\n"
                     "::2 multi.test\n")
    resolv.write_text(f"nameserver {REFUSED_NS}\noptions timeout:1 attempts:1\n")
    x = start_xds_server(ctx, prefix=mount_prefix(hosts, resolv))
    put(x, P, {"meshName": MESH, "spec": {}})
    nodes = {"lb": {}, "all": {"responseType": "ENDPOINTS"},
             "all4": {"responseType": "ENDPOINTS", "ipPreference": "IPv4_PREFERRED"},
             "only4": {"ipPreference": "IPv4_ONLY"}}
    for i, (name, extra) in enumerate(nodes.items()):
        put(x, f"{P}/{MESH}/virtualNodes", {
            "virtualNodeName": name,
            "spec": {"listeners": [{"portMapping": {"port": 8000 + i, "protocol": "http"}}],
                     "serviceDiscovery": {"dns": {"hostname": "multi.test", **extra}}}})

    def endpoints():
        r = api(x.port, "GET", f"/debug/xds?mesh={MESH}")
        assert r.status == 200, r
        got = {}
        for cla in r.json()["endpoints"]:
            name = cla["cluster_name"].split("_")[3]
            got[name] = sorted(e["endpoint"]["address"]["socket_address"]["address"]
                               for loc in cla.get("endpoints", []) for e in loc["lb_endpoints"])
        return got
    want = {"lb": ["::2"], "all": ["::2"], "all4": ["127.0.0.2", "127.0.0.3"],
            "only4": ["127.0.0.2"]}
    wait_for(lambda: endpoints() == want, 10, f"endpoints {want}")
    # The mesh's preference for the nodes without their own.
    put(x, f"{P}/{MESH}", {"spec": {"serviceDiscovery": {"ipPreference": "IPv4_PREFERRED"}}})
    want.update({"lb": ["127.0.0.2"], "all": ["127.0.0.2", "127.0.0.3"]})
    wait_for(lambda: endpoints() == want, 10, f"endpoints {want}")


# ---- mTLS across the mesh: identities from remora-xds's CA over SDS ----

TD = "mesh.test"
MTLS_MESH = "sec"
BUNDLE = f"spiffe://{TD}"


def spiffe(vn):
    return f"spiffe://{TD}/mesh/{MTLS_MESH}/virtualNode/{vn}"


TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
ADS_CS = {"ads": {}, "resource_api_version": "V3"}


def sds(name):
    return {"name": name, "sds_config": ADS_CS}


def pinned(peer):
    """A combined_validation_context: the mesh CA over SDS, the peer's SPIFFE ID pinned."""
    return {"validation_context_sds_secret_config": sds(BUNDLE),
            "default_validation_context": {"match_typed_subject_alt_names": [
                {"san_type": "URI", "matcher": {"exact": spiffe(peer)}}]}}


def sidecar(ctx, vn, xds_port, listener_port, cluster_port, tls_listener):
    """A remora sidecar of node `vn` whose only ADS use is its Secrets (its identity and the
    CA). Its listener and cluster are static (remora takes no LDS, and rejects SDS in CDS
    clusters), written as remora-xds translates them. tls_listener: back's ingress (mTLS,
    front pinned) to the app; else an egress to back's ingress with front's identity."""
    cfg = ads_bootstrap({"app": [cluster_port]}, xds_port, node={"id": f"mesh/{MTLS_MESH}/"
                                                                 f"virtualNode/{vn}",
                                                                 "cluster": vn})
    lst = cfg["static_resources"]["listeners"][0]
    lst["address"]["socket_address"]["port_value"] = listener_port
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["rds"]
    hcm["route_config"] = {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
        {"match": {"prefix": "/"}, "route": {"cluster": "app"}}]}]}
    if tls_listener:
        lst["filter_chains"][0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": TLS_DOWN, "require_client_certificate": True,
                "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [sds(spiffe(vn))],
                    "combined_validation_context": pinned("front")}}}
    else:
        [app] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "app"]
        app["transport_socket"] = {
            "name": "envoy.transport_sockets.tls", "typed_config": {
                "@type": TLS_UP, "common_tls_context": {
                    "tls_certificate_sds_secret_configs": [sds(spiffe(vn))],
                    "combined_validation_context": pinned("back")}}}
    return ctx.start_remora(cfg, name=vn)


def test_xds_e2e_mtls_identities_over_sds(ctx):
    """front -> back over mTLS with certificates remora-xds issues (--ca-dir) and serves over
    SDS; back's listener pins front's SPIFFE ID: a third node (a valid identity of the same
    mesh, not pinned) is refused."""
    ca_dir = ctx.tmp / "ca"
    ca_dir.mkdir()
    import subprocess
    subprocess.run([str(ctx.bin("remora-certs")), "init-ca", "--dir", str(ca_dir),
                    "--trust-domain", TD], check=True, capture_output=True)
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--cert-lifetime", "1h"])
    app = ctx.start_upstream("back-app")
    back_port = free_port()
    put(x, P, {"meshName": MTLS_MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    put(x, f"{P}/{MTLS_MESH}/virtualNodes", {"virtualNodeName": "back", "spec": {
        "listeners": [{"portMapping": {"port": app.port, "protocol": "http"}, "tls": {
            "mode": "STRICT", "certificate": {"sds": {"secretName": spiffe("back")}},
            "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                           "subjectAlternativeNames": {"match": {"exact": [spiffe("front")]}}}}}],
        "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})
    put(x, f"{P}/{MTLS_MESH}/virtualServices", {
        "virtualServiceName": "back.sec.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "back"}}}})
    for vn in ("front", "third"):
        put(x, f"{P}/{MTLS_MESH}/virtualNodes", {"virtualNodeName": vn, "spec": {
            "backends": [{"virtualService": {"virtualServiceName": "back.sec.local"}}],
            "backendDefaults": {"clientPolicy": {"tls": {
                "certificate": {"sds": {"secretName": spiffe(vn)}},
                "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                               "subjectAlternativeNames": {
                                   "match": {"exact": [spiffe("back")]}}}}}},
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})

    # Each sidecar starts only once its certificate (and the CA) arrived over SDS.
    back = sidecar(ctx, "back", x.xds_port, back_port, app.port, True)
    front = sidecar(ctx, "front", x.xds_port, free_port(), back_port, False)
    third = sidecar(ctx, "third", x.xds_port, free_port(), back_port, False)
    for r, vn in ((back, "back"), (front, "front"), (third, "third")):
        st = stats(r)
        assert st[f"sds.{spiffe(vn)}.update_success"] == 1, st
        assert st[f"sds.{BUNDLE}.update_success"] == 1, st
        dump = r.admin("GET", "/config_dump").text
        assert spiffe(vn) in dump and "[redacted]" in dump and "PRIVATE KEY" not in dump

    resp = HttpConn(front.port()).request("GET", "/", {"Host": "back.sec.local"})
    assert resp.status == 200, resp
    assert resp.header("x-upstream-name") == "back-app", resp.headers
    lp = f"listener.127.0.0.1_{back_port}.ssl"
    wait_for(lambda: stats(back).get(f"{lp}.handshake", 0) >= 1, 5, "back's mTLS handshake")

    # third has a valid identity of the mesh, but back pins front's: refused.
    resp = HttpConn(third.port()).request("GET", "/", {"Host": "back.sec.local"})
    assert resp.status == 503, resp
    wait_for(lambda: stats(back).get(f"{lp}.fail_verify_san", 0) >= 1, 5, "SAN refusal")
    assert stats(back).get(f"{lp}.fail_verify_error", 0) == 0
    resp = HttpConn(front.port()).request("GET", "/", {"Host": "back.sec.local"})
    assert resp.status == 200, resp


def ecs_full_sidecar(ctx, front_extra=None, start=None):
    """The mesh of test_xds_e2e_full_sidecar_in_ecs_task and remora as front's full sidecar in
    an ECS-like task namespace: returns (pair, xa: the API's port holder, r: remora, in_svc:
    run a function in the service namespace). ``front_extra(pair)``: more fields of front's
    spec (e.g. logging). ``start(pair, xds_port)``: starts remora (ready) instead of the
    bootstrap below."""
    from netnsutil import install_ecs_rules, netns_pair, start_remora_in_task, start_upstream_in
    from adsutil import HPO_KEY, HPO_TYPE
    pair = netns_pair(ctx)  # skips unless root with ip netns and iptables
    install_ecs_rules(pair, proxy_ingress_port=15000, app_ports=[9080])
    start_upstream_in(ctx, pair, pair.svc, "a", "0.0.0.0:8080")
    start_upstream_in(ctx, pair, pair.svc, "b", "0.0.0.0:8081")
    start_upstream_in(ctx, pair, pair.task, "app", "127.0.0.1:9080")
    # remora-xds on the service host: its API on the service host's loopback, ADS on its
    # address (what the task reaches)
    pf, xpf = ctx.tmp / "xds-api.port", ctx.tmp / "xds-ads.port"
    x = ctx.spawn("xds", pair.exec_prefix(pair.svc) + [
        str(ctx.bin("remora-xds")), "--listen", "127.0.0.1:0", "--port-file", str(pf),
        "--db", str(ctx.tmp / "xds.db"), "--xds-listen", "0.0.0.0:0", "--xds-port-file",
        str(xpf), "-l", "debug"], managed=True)

    def port(f):
        def ready():
            x._check_alive()
            text = f.read_text() if f.exists() else ""
            return text.endswith("\n") and int(text)
        return wait_for(ready, 5.0, f"{f.name}")
    x.port, xds_port = port(pf), port(xpf)

    def in_svc(fn, *a):
        return pair.call(pair.svc, fn, *a)

    class X:  # put() and update_route() take an object with the API port
        pass
    xa = X()
    xa.port = x.port
    mesh_put = lambda path, body: in_svc(put, xa, path, body)  # noqa: E731
    mesh_put(P, {"meshName": MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    for name, p in (("a", 8080), ("b", 8081)):
        mesh_put(f"{P}/{MESH}/virtualNodes", {
            "virtualNodeName": name,
            "spec": {"listeners": [{"portMapping": {"port": p, "protocol": "http"}}],
                     "serviceDiscovery": {"dns": {"hostname": pair.svc_ip}}}})
    mesh_put(f"{P}/{MESH}/virtualRouters", {
        "virtualRouterName": "r",
        "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})
    mesh_put(f"{P}/{MESH}/virtualRouter/r/routes",
             {"routeName": "rt", "spec": route_spec([("a", 1), ("b", 1)])})
    mesh_put(f"{P}/{MESH}/virtualServices", {
        "virtualServiceName": VS,
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}})
    mesh_put(f"{P}/{MESH}/virtualNodes", {
        "virtualNodeName": "front",
        "spec": {"backends": [{"virtualService": {"virtualServiceName": VS}}],
                 "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}],
                 "serviceDiscovery": {"dns": {"hostname": pair.task_ip}},
                 **(front_extra(pair) if front_extra else {})}})

    if start is not None:
        return pair, xa, start(pair, xds_port), in_svc
    ads = {"api_type": "GRPC", "transport_api_version": "V3",
           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
           "set_node_on_first_message_only": True}
    cfg = {
        "node": {"id": NODE, "cluster": "front"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {"clusters": [{
            "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {HPO_KEY: {
                "@type": HPO_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": pair.svc_ip, "port_value": xds_port}}}}]}]}}]},
        "dynamic_resources": {"ads_config": ads,
                              "lds_config": {"ads": {}, "resource_api_version": "V3"},
                              "cds_config": {"ads": {}, "resource_api_version": "V3"}},
    }
    r = start_remora_in_task(ctx, pair, cfg)
    return pair, xa, r, in_svc


def test_xds_e2e_full_sidecar_in_ecs_task(ctx):
    """remora takes everything from remora-xds: its bootstrap holds only the node, the admin,
    the ADS cluster and `lds_config`/`cds_config: {ads: {}}`. remora-xds's listeners
    (0.0.0.0:15000 ingress, 0.0.0.0:15001 egress, original_dst) come by LDS with their routes
    by RDS inside them; remora runs in an ECS-like task namespace (netnsutil: the CNI plugin's
    nat rules, remora as uid 1337), remora-xds and the upstreams on the service host. The app
    dials the virtual service (its name as Host, the router's port on the service host):
    traffic follows the router's weights and a weight change through the API; a peer dialling
    the app's port reaches the app through the ingress listener."""
    from lib import build_request, raw_exchange, slow_factor
    pair, xa, r, in_svc = ecs_full_sidecar(ctx)
    s = pair.call(pair.task, stats, r)
    for k in ("listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected"):
        assert s[k] == 0, (k, s)
    assert s["listener_manager.total_listeners_active"] == 2, s
    rds = {k: v for k, v in s.items() if ".rds." in k and k.endswith(".update_rejected")}
    assert rds and not any(rds.values()), rds

    def spread(n):
        got = {}
        for _ in range(n):
            reply = bytes(pair.call(pair.task, raw_exchange, 8080,
                                    build_request("GET", "/", host=VS), timeout=3.0,
                                    host=pair.svc_ip,
                                    until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
            text = reply.decode("latin-1").lower()
            k = f"<{text[:12]}>"
            if text.startswith("http/1.1 200"):
                k = text.split("x-upstream-name: ", 1)[1].split("\r\n", 1)[0]
            got[k] = got.get(k, 0) + 1
        return got

    # Egress: the app dials the virtual service; the router's 1:1 weights spread it.
    got = spread(60)
    assert set(got) == {"a", "b"}, got
    assert 10 <= got["a"] <= 50, got
    # A weight change through the API moves it.
    in_svc(update_route, xa, [("a", 0), ("b", 1)])
    wait_for(lambda: spread(10) == {"b": 10}, 10 * slow_factor(),
             "traffic on b only")
    # Ingress: a peer dials the app's port on the task; remora hands it to the app.
    reply = bytes(pair.call(pair.svc, raw_exchange, 9080, build_request("GET", "/in", host="front"),
                            timeout=3.0, host=pair.task_ip,
                            until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
    assert reply.startswith(b"HTTP/1.1 200") and b"x-upstream-name: app\r\n" in reply.lower(), reply
    s = pair.call(pair.task, stats, r)
    assert s["http.ingress.downstream_rq_total"] == 1, s
    assert s["listener_manager.lds.update_rejected"] == 0, s
    assert r.stop(r.term_timeout) == 0, r.tail()


def test_xds_e2e_drop_all_allows_amazonaws_in_ecs_task(ctx):
    """DROP_ALL (App Mesh's default) still lets the app reach AWS's APIs, *.amazonaws.com, as
    App Mesh's Envoy did: HTTPS (TLS, no Host to route by) through the egress listener's chain
    matched by the ClientHello's SNI to the passthrough (the destination the app dialled), and
    plain HTTP on a mesh port by a *.amazonaws.com virtual host. Another name is refused: TLS
    closed, HTTP 404. The "AWS" endpoint is a TLS server on the service host's port 443."""
    from lib import build_request, raw_exchange
    from tlsutil import Pki, TlsHttpServer
    pair, xa, r, in_svc = ecs_full_sidecar(ctx)
    pki = Pki(ctx.tmp / "pki")
    aws = "sts.us-west-2.amazonaws.com"
    cert, key = pki.leaf("aws", f"DNS:{aws},DNS:example.com")
    srv = pair.call(pair.svc, TlsHttpServer, "aws", cert, key, host="0.0.0.0", port=443)
    ctx.on_cleanup(srv.close)

    def https(name):
        return pair.curl(pair.task, ["--cacert", pki.ca, "--resolve", f"{name}:443:{pair.svc_ip}",
                                     "-m", "5", f"https://{name}/x"])
    got = https(aws)
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"aws sni={aws} peer=-\n".encode(), got.stdout
    got = https("example.com")  # not AWS's: no chain takes it, remora closes it
    assert got.returncode != 0 and srv.requests == 1, (got, srv.requests)

    # Plain HTTP on the router's port 8080: Host *.amazonaws.com goes where the app dialled
    # (upstream a on the service host), another name is not the mesh's (404).
    reply = bytes(pair.call(pair.task, raw_exchange, 8080,
                            build_request("GET", "/", host="sqs.us-east-1.amazonaws.com"),
                            timeout=3.0, host=pair.svc_ip,
                            until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
    text = reply.decode("latin-1").lower()
    assert text.startswith("http/1.1 200") and "x-upstream-name: a\r\n" in text, text
    reply = bytes(pair.call(pair.task, raw_exchange, 8080,
                            build_request("GET", "/", host="other.example"), timeout=3.0,
                            host=pair.svc_ip, until=lambda b: b"\r\n\r\n" in b))
    assert reply.startswith(b"HTTP/1.1 404"), reply
    s = pair.call(pair.task, stats, r)
    assert s["listener_manager.lds.update_rejected"] == 0
    assert s["cluster_manager.cds.update_rejected"] == 0
    assert s["tcp.egress_passthrough.downstream_cx_total"] == 1  # the HTTPS to AWS
    assert s["listener.0.0.0.0_15001.no_filter_chain_match"] == 1  # the one to example.com


def test_xds_e2e_mtls_sidecars_wholly_over_ads_in_ecs_tasks(ctx):
    """STRICT mTLS between two virtual nodes, each sidecar taking everything over ADS from
    remora-xds (--ca-dir): listeners (LDS) with the SDS certificate and validation named
    inside them, clusters (CDS) with the client policy's SDS secrets. front's sidecar runs in
    the ECS-like task namespace, back's in the service host's namespace (each with the CNI
    plugin's nat rules, remora as uid 1337; remora-xds beside back). front's app dials back's
    virtual service: the request leaves through front's egress listener over mTLS (front's
    SPIFFE identity, back's pinned) into back's ingress listener, which pins front's; a
    plaintext connection to back's app port (taken by its STRICT ingress) gets no HTTP answer:
    the TLS layer refuses it."""
    import subprocess
    from lib import build_request, raw_exchange, slow_factor
    from netnsutil import (PROXY_UID, _iptables, ecs_rules, install_ecs_rules, netns_pair,
                           start_remora_in_task, start_upstream_in)
    from adsutil import HPO_KEY, HPO_TYPE
    pair = netns_pair(ctx)  # skips unless root with ip netns and iptables
    install_ecs_rules(pair)  # front: egress capture only (it serves no port)
    # back (in pair.svc): its app port 9080 taken by its sidecar's ingress, egress captured
    rules = ecs_rules(ignored_uid=PROXY_UID, proxy_ingress_port=15000, proxy_egress_port=15001,
                      app_ports=[9080])
    cmd = _iptables(pair.svc)
    pair.run(pair.svc, ["sh", "-ec", "\n".join(
        " ".join([cmd, "-w", *r]).replace("!", "'!'") for r in rules)])
    start_upstream_in(ctx, pair, pair.svc, "back-app", "127.0.0.1:9080")

    ca_dir = ctx.tmp / "ca"
    ca_dir.mkdir()
    subprocess.run([str(ctx.bin("remora-certs")), "init-ca", "--dir", str(ca_dir),
                    "--trust-domain", TD], check=True, capture_output=True)
    pf, xpf = ctx.tmp / "xds-api.port", ctx.tmp / "xds-ads.port"
    x = ctx.spawn("xds", pair.exec_prefix(pair.svc) + [
        str(ctx.bin("remora-xds")), "--listen", "127.0.0.1:0", "--port-file", str(pf),
        "--db", str(ctx.tmp / "xds.db"), "--xds-listen", "0.0.0.0:0", "--xds-port-file",
        str(xpf), "--ca-dir", str(ca_dir), "--cert-lifetime", "1h", "-l", "debug"],
        managed=True)

    def port(f):
        def ready():
            x._check_alive()
            text = f.read_text() if f.exists() else ""
            return text.endswith("\n") and int(text)
        return wait_for(ready, 5.0, f"{f.name}")
    x.port, xds_port = port(pf), port(xpf)

    class X:
        pass
    xa = X()
    xa.port = x.port

    def mesh_put(path, body):
        return pair.call(pair.svc, put, xa, path, body)
    mesh_put(P, {"meshName": MTLS_MESH, "spec": {"egressFilter": {"type": "DROP_ALL"}}})
    mesh_put(f"{P}/{MTLS_MESH}/virtualNodes", {"virtualNodeName": "back", "spec": {
        "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}, "tls": {
            "mode": "STRICT", "certificate": {"sds": {"secretName": spiffe("back")}},
            "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                           "subjectAlternativeNames": {"match": {"exact": [spiffe("front")]}}}}}],
        "serviceDiscovery": {"dns": {"hostname": pair.svc_ip}}}})
    mesh_put(f"{P}/{MTLS_MESH}/virtualServices", {
        "virtualServiceName": "back.sec.local",
        "spec": {"provider": {"virtualNode": {"virtualNodeName": "back"}}}})
    mesh_put(f"{P}/{MTLS_MESH}/virtualNodes", {"virtualNodeName": "front", "spec": {
        "backends": [{"virtualService": {"virtualServiceName": "back.sec.local"}}],
        "backendDefaults": {"clientPolicy": {"tls": {
            "certificate": {"sds": {"secretName": spiffe("front")}},
            "validation": {"trust": {"sds": {"secretName": BUNDLE}},
                           "subjectAlternativeNames": {"match": {"exact": [spiffe("back")]}}}}}},
        "serviceDiscovery": {"dns": {"hostname": pair.task_ip}}}})

    def bootstrap(vn, xds_ip):
        """node + admin + the ADS cluster + lds_config/cds_config {ads: {}}: nothing else."""
        ads = {"api_type": "GRPC", "transport_api_version": "V3",
               "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
               "set_node_on_first_message_only": True}
        return {
            "node": {"id": f"mesh/{MTLS_MESH}/virtualNode/{vn}", "cluster": vn},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": 9901}}},
            "static_resources": {"clusters": [{
                "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
                "typed_extension_protocol_options": {HPO_KEY: {
                    "@type": HPO_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}},
                "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{
                    "lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                        "address": xds_ip, "port_value": xds_port}}}}]}]}}]},
            "dynamic_resources": {"ads_config": ads, "lds_config": ADS_CS, "cds_config": ADS_CS},
        }

    # Each sidecar is ready only once its listeners and clusters came, and their secrets.
    front = start_remora_in_task(ctx, pair, bootstrap("front", pair.svc_ip), name="front")
    back = ctx.start_remora(bootstrap("back", "127.0.0.1"), name="back", wait_ready=False,
                            prefix=pair.exec_prefix(pair.svc, uid=PROXY_UID))

    def back_ready():
        if not back.alive():
            return "exited"
        return back.admin("GET", "/ready").status == 200
    pair.call(pair.svc, wait_for, back_ready, 10 * slow_factor(), "back ready")
    assert back.alive(), back.tail()
    sf = pair.call(pair.task, stats, front)
    sb = pair.call(pair.svc, stats, back)
    for s, vn in ((sf, "front"), (sb, "back")):
        for k in ("listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected",
                  f"sds.{spiffe(vn)}.update_rejected", f"sds.{BUNDLE}.update_rejected"):
            assert s.get(k) == 0, (vn, k, s)
        assert s[f"sds.{spiffe(vn)}.update_success"] >= 1, (vn, s)
        assert s[f"sds.{BUNDLE}.update_success"] >= 1, (vn, s)
    # back's ingress listener came over LDS with its certificate and validation over SDS
    lp = "listener.0.0.0.0_15000"
    assert sb[f"{lp}.server_ssl_socket_factory.ssl_context_update_by_sds"] >= 2, sb

    # front's app dials back's virtual service: egress -> mTLS -> back's ingress -> back's app.
    reply = bytes(pair.call(pair.task, raw_exchange, 9080,
                            build_request("GET", "/", host="back.sec.local"), timeout=5.0,
                            host=pair.svc_ip,
                            until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
    assert reply.startswith(b"HTTP/1.1 200") and b"x-upstream-name: back-app\r\n" in \
        reply.lower(), reply
    sb = pair.call(pair.svc, stats, back)
    assert sb[f"{lp}.ssl.handshake"] >= 1, sb
    assert sb.get(f"{lp}.ssl.fail_verify_san", 0) == 0, sb
    sf = pair.call(pair.task, stats, front)
    hs = {k: v for k, v in sf.items() if k.startswith("cluster.cds_egress_")
          and k.endswith(".ssl.handshake")}
    assert hs and sum(hs.values()) >= 1, hs

    # Plaintext to back's app port (as uid 1337, which front's capture lets through): back's
    # STRICT ingress takes it and the TLS layer refuses it, no HTTP answer.
    before = sb.get(f"{lp}.ssl.connection_error", 0)
    p = subprocess.run(pair.exec_prefix(pair.task, uid=PROXY_UID) + [
        "curl", "-sS", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}",
        f"http://{pair.svc_ip}:9080/"], capture_output=True, timeout=15 * slow_factor())
    assert p.returncode != 0 and p.stdout in (b"000", b""), (p.returncode, p.stdout, p.stderr)
    wait_for(lambda: pair.call(pair.svc, stats, back).get(f"{lp}.ssl.connection_error", 0)
             > before, 5, "back's TLS layer refusing the plaintext connection")
    assert front.stop(front.term_timeout) == 0, front.tail()
    assert back.stop(back.term_timeout) == 0, back.tail()


def test_xds_e2e_access_log_in_ecs_task(ctx):
    """front's logging.accessLog.file (a JSON format) reaches its sidecar over LDS: remora
    writes one JSON object per request to that file, for the app's call to the virtual service
    (egress) and for a peer's call to the app port (ingress), with the values the format asks
    for (keys sorted, numbers typed); a format change through the API changes the lines."""
    import json
    from lib import build_request, raw_exchange
    log = {}

    def logging(pair):
        log["path"] = pair.rundir / "front-access.log"  # the proxy's uid writes there
        return {"logging": {"accessLog": {"file": {"path": str(log["path"]), "format": {
            "json": [{"key": "status", "value": "%RESPONSE_CODE%"},
                     {"key": "request", "value": "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"},
                     {"key": "authority", "value": "%REQ(:AUTHORITY)%"},
                     {"key": "upstream", "value": "%UPSTREAM_CLUSTER%"}]}}}}}
    pair, xa, r, in_svc = ecs_full_sidecar(ctx, logging)
    path = log["path"]

    def call(ns, host_ip, port, target, host):
        reply = bytes(pair.call(ns, raw_exchange, port, build_request("GET", target, host=host),
                                timeout=3.0, host=host_ip,
                                until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
        assert reply.startswith(b"HTTP/1.1 200"), reply

    call(pair.task, pair.svc_ip, 8080, "/out", VS)          # egress: the app to the service
    call(pair.svc, pair.task_ip, 9080, "/in", "front")      # ingress: a peer to the app

    def lines():
        text = path.read_text() if path.exists() else ""
        return [json.loads(ln) for ln in text.splitlines() if ln]
    got = wait_for(lambda: len(lines()) >= 2 and lines(), 5, "two access log lines")
    assert all(list(e) == sorted(e) for e in got), got  # keys sorted, as Envoy writes them
    by = {e["request"]: e for e in got}
    out, inn = by["GET /out"], by["GET /in"]
    assert out["status"] == 200 and out["authority"] == VS, out
    assert out["upstream"].startswith(f"cds_egress_{MESH}_"), out
    assert inn["status"] == 200 and inn["upstream"] == f"cds_ingress_{MESH}_front_http_9080", inn

    # A text format through the API: the next lines follow it.
    spec = {"backends": [{"virtualService": {"virtualServiceName": VS}}],
            "listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": pair.task_ip}},
            "logging": {"accessLog": {"file": {"path": str(path), "format": {
                "text": "text %RESPONSE_CODE% %REQ(:PATH)%"}}}}}
    in_svc(put, xa, f"{P}/{MESH}/virtualNodes/front", {"spec": spec})

    def text_line():
        call(pair.task, pair.svc_ip, 8080, "/again", VS)
        return "text 200 /again\n" in path.read_text()
    wait_for(text_line, 10, "a line in the new format")
    assert r.alive()
