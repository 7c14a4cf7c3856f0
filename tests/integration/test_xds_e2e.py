"""remora fed by remora-xds end to end: remora-xds (--xds-listen) holds a mesh made through its
App Mesh API (raw HTTP); remora runs as that mesh's sidecar node (node.id
mesh/<m>/virtualNode/front) with clusters (CDS), their endpoints (EDS) and routes (RDS) over one
ADS stream. Its listener is static (remora takes no LDS yet): an egress-style HCM whose rds
names remora-xds's `rds_egress_http_<port>`. Requests with Host: <virtual service> reach the
router's weighted targets; route updates through the API move traffic (deadline-polled); a
target removed from the route takes its traffic with it."""

from adsutil import ads_bootstrap
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
