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
