"""App Mesh health checks end to end: a mesh made through remora-xds's API whose virtual nodes
have healthCheck protocol http2 (on another port than the listener's) and grpc; remora, as the
mesh's sidecar node over ADS (CDS and EDS), runs the checks remora-xds translated: an HTTP/2
GET sent to the check port (health_check_config.port_value) of the h2c test upstream, and the
gRPC Health Checking Protocol against tests/grpc/server.js, whose NOT_SERVING node is out."""

from adsutil import ads_bootstrap
from grpcutil import start_grpc_server
from healthutil import wait_flags
from lib import free_port, http_request, wait_for
from proxyutil import stats
from test_xds_api import api
from test_xds_serve import start_xds_server

MESH = "m1"
NODE = f"mesh/{MESH}/virtualNode/front"
P = "/v20190125/meshes"


def put(x, path, body):
    r = api(x.port, "PUT", path, body)
    assert r.status == 200, (path, r.status, r.text)
    return r.json()


def hc(protocol, **extra):
    d = {"protocol": protocol, "healthyThreshold": 2, "unhealthyThreshold": 2,
         "timeoutMillis": 2000, "intervalMillis": 5000}
    d.update(extra)
    return d


def node(x, name, port, protocol, check):
    put(x, f"{P}/{MESH}/virtualNodes", {
        "virtualNodeName": name,
        "spec": {"listeners": [{"portMapping": {"port": port, "protocol": protocol},
                                "healthCheck": check}],
                 "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})


def test_xds_health_http2_other_port_and_grpc(ctx):
    u = ctx.start_upstream("hcport")  # answers the HTTP/2 checks of node a
    g = start_grpc_server(ctx, name="g")
    g2 = start_grpc_server(ctx, name="g2")
    r = http_request(g.stats_port, "POST", "/health?service=&status=NOT_SERVING")
    assert r.status == 200, r
    a_port = free_port()  # node a's traffic port: nothing listens there
    x = start_xds_server(ctx)
    put(x, P, {"meshName": MESH, "spec": {}})
    node(x, "a", a_port, "http", hc("http2", path="/healthz", port=u.port))
    node(x, "g", g.port, "grpc", hc("grpc"))
    node(x, "g2", g2.port, "grpc", hc("grpc"))
    put(x, f"{P}/{MESH}/virtualRouters", {
        "virtualRouterName": "r",
        "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})
    put(x, f"{P}/{MESH}/virtualRouter/r/routes", {"routeName": "rt", "spec": {
        "priority": 0, "httpRoute": {"match": {"prefix": "/"}, "action": {
            "weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}})
    services = {"svc.m1.local": {"virtualRouter": {"virtualRouterName": "r"}},
                "g.m1.local": {"virtualNode": {"virtualNodeName": "g"}},
                "g2.m1.local": {"virtualNode": {"virtualNodeName": "g2"}}}
    for vs, provider in services.items():
        put(x, f"{P}/{MESH}/virtualServices",
            {"virtualServiceName": vs, "spec": {"provider": provider}})
    put(x, f"{P}/{MESH}/virtualNodes", {
        "virtualNodeName": "front",
        "spec": {"backends": [{"virtualService": {"virtualServiceName": vs}}
                              for vs in services],
                 "listeners": [{"portMapping": {"port": free_port(), "protocol": "http"}}],
                 "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}})

    cfg = ads_bootstrap({}, x.xds_port, route_config_name="rds_egress_http_8080",
                        cds={"ads": {}, "resource_api_version": "V3"},
                        node={"id": NODE, "cluster": "front"})
    rem = ctx.start_remora(cfg)
    # a: its checks go to the check port over HTTP/2 and pass, although its traffic port is
    # closed; g: NOT_SERVING, out; g2: SERVING, in.
    wait_flags(rem, f"cds_egress_{MESH}_a_http_{a_port}", a_port, "healthy")
    assert u.stats()["h2_streams"] >= 1, u.stats()
    wait_flags(rem, f"cds_egress_{MESH}_g_grpc_{g.port}", g.port, "/failed_active_hc")
    wait_flags(rem, f"cds_egress_{MESH}_g2_grpc_{g2.port}", g2.port, "healthy")
    assert g2.stats()["by_method"].get("Check", 0) >= 1
    s = stats(rem)
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    wait_for(lambda: stats(rem).get(
        f"cluster.cds_egress_{MESH}_g_grpc_{g.port}.health_check.failure", 0) >= 1, 5,
        "g's failure counted")
