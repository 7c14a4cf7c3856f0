"""remora as an App Mesh virtual gateway fed by remora-xds. The mesh is made with the AWS CLI
(as App Mesh users do, pointed at --endpoint-url): nodes a, b, c (test upstreams on
127.0.0.1), router r (/api -> b first, the rest -> a), services svc.gwm.local (by r) and
c.gwm.local (by node c), virtual gateway gw with an http listener on a free port, and its
gateway routes. remora's bootstrap holds only the node (the gateway's ARN), the admin, the
ADS cluster and `lds_config`/`cds_config` `ads: {}` (examples/ads_gateway.yaml): it takes the
gateway's listener, routes, clusters and endpoints from remora-xds and serves the listener's
port itself (no iptables).

Checked at the upstreams (their echo: path and Host as received): requests by prefix reach the
service's router's targets with the matched prefix rewritten to "/" and Host rewritten to the
service name; by hostname (any case, with a port) reach c with the prefix kept (rewrite
DISABLED); a lower priority number wins over a longer prefix; a gateway route updated through
the CLI is followed live; a request no route matches gets 404. And /debug/xds shows the
gateway's resources in App Mesh's gateway Envoy shape (names in xds/README.md)."""

import json
import urllib.parse

from lib import HttpConn, free_port, wait_for, slow_factor
from proxyutil import stats
from test_xds_api import api, aws
from test_xds_serve import start_xds_server

MESH = "gwm"
GW = "gw"
GW_ARN = f"arn:aws:appmesh:us-west-2:111122223333:mesh/{MESH}/virtualGateway/{GW}"
SVC = "svc.gwm.local"
CSVC = "c.gwm.local"
HPO_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HPO_TYPE = "type.googleapis.com/" + HPO_KEY


def gateway_bootstrap(xds_port, admin_port, node_id=GW_ARN):
    """What examples/ads_gateway.yaml holds, with these ports."""
    return {
        "node": {"id": node_id, "cluster": GW},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"clusters": [{
            "name": "xds_cluster", "type": "STATIC", "connect_timeout": "1s",
            "typed_extension_protocol_options": {HPO_KEY: {
                "@type": HPO_TYPE, "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "xds_cluster", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": xds_port}}}}]}]}}]},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds_cluster"}}],
                           "set_node_on_first_message_only": True},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"}},
    }


def node_spec(port):
    return {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}


def target(vs):
    return {"target": {"virtualService": {"virtualServiceName": vs}}}


def make_mesh(ctx, x, ports, gw_port):
    """The mesh through the AWS CLI; ports: {node name: upstream port}."""
    aws(ctx, x, "create-mesh", "--mesh-name", MESH)
    for name, port in ports.items():
        aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", name,
            "--spec", node_spec(port))
    aws(ctx, x, "create-virtual-router", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--spec", {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]})
    aws(ctx, x, "create-route", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--route-name", "api", "--spec", {"priority": 0, "httpRoute": {
            "match": {"prefix": "/api"},
            "action": {"weightedTargets": [{"virtualNode": "b", "weight": 1}]}}})
    aws(ctx, x, "create-route", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--route-name", "web", "--spec", {"priority": 1, "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}})
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name", SVC,
        "--spec", {"provider": {"virtualRouter": {"virtualRouterName": "r"}}})
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name", CSVC,
        "--spec", {"provider": {"virtualNode": {"virtualNodeName": "c"}}})
    vg = aws(ctx, x, "create-virtual-gateway", "--mesh-name", MESH, "--virtual-gateway-name", GW,
             "--spec", {"listeners": [{"portMapping": {"port": gw_port, "protocol": "http"}}]})
    assert vg["virtualGateway"]["metadata"]["arn"] == GW_ARN, vg

    def groute(name, spec):
        aws(ctx, x, "create-gateway-route", "--mesh-name", MESH, "--virtual-gateway-name", GW,
            "--gateway-route-name", name, "--spec", spec)
    # by prefix, App Mesh's default rewrites (prefix -> "/", Host -> the service)
    groute("svc", {"priority": 1, "httpRoute": {"match": {"prefix": "/svc"},
                                                "action": target(SVC)}})
    # by hostname, the prefix kept
    groute("by-host", {"priority": 0, "httpRoute": {
        "match": {"prefix": "/", "hostname": {"exact": "c.example.com"}},
        "action": {**target(CSVC), "rewrite": {"prefix": {"defaultPrefix": "DISABLED"}}}}})
    # a longer prefix, but a lower priority than "svc"
    groute("special", {"priority": 5, "httpRoute": {"match": {"prefix": "/svc/special"},
                                                    "action": target(CSVC)}})


def echo(port, path, host="gateway.example"):
    """GET path through the gateway: (status, upstream name, path seen, Host seen)."""
    with HttpConn(port) as c:
        resp = c.request("GET", path, {"Host": host, "x-upstream-echo": "1"})
    if resp.status != 200:
        return resp.status, None, None, None
    e = json.loads(resp.text)
    hdrs = {k.lower(): v for k, v in e["headers"]}
    return resp.status, e["name"], e["path"], hdrs.get("host")


def test_xds_gateway_remora_as_virtual_gateway(ctx):
    ups = {n: ctx.start_upstream(n) for n in ("a", "b", "c")}
    x = start_xds_server(ctx)
    gw_port = free_port()
    make_mesh(ctx, x, {n: u.port for n, u in ups.items()}, gw_port)

    r = ctx.start_remora(gateway_bootstrap(x.xds_port, free_port()), log_level="debug")
    s = stats(r)
    for k in ("listener_manager.lds.update_rejected", "cluster_manager.cds.update_rejected"):
        assert s[k] == 0, (k, s)
    assert s["listener_manager.total_listeners_active"] == 1, s
    listeners = r.admin("GET", "/listeners").text
    assert f"lds_ingress_0.0.0.0_{gw_port}::0.0.0.0:{gw_port}" in listeners, listeners

    # By prefix: the router's routes see the rewritten path; Host is the service's name.
    assert echo(gw_port, "/svc/hello?q=1") == (200, "a", "/hello?q=1", SVC)
    assert echo(gw_port, "/svc/api/x") == (200, "b", "/api/x", SVC)
    assert echo(gw_port, "/svc") == (200, "a", "/", SVC)
    # By hostname (no case, with a port): c, the prefix not rewritten, Host the service's.
    assert echo(gw_port, "/any/path", host="C.Example.com:8443") == (200, "c", "/any/path", CSVC)
    # Priority 1 ("/svc") wins over priority 5, though "/svc/special" is the longer prefix.
    assert echo(gw_port, "/svc/special/1") == (200, "a", "/special/1", SVC)
    # The gateway normalizes paths (normalize_path, merge_slashes: App Mesh's): routed and
    # rewritten as the normalized path.
    assert echo(gw_port, "/nothing/../svc/api/./x") == (200, "b", "/api/x", SVC)
    assert echo(gw_port, "//svc//%61pi/%2e%2e/api/y") == (200, "b", "/api/y", SVC)
    # No route: 404.
    assert echo(gw_port, "/nothing")[0] == 404
    assert echo(gw_port, "/any", host="d.example.com")[0] == 404

    # An API update is followed live: "special" takes priority 0.
    aws(ctx, x, "update-gateway-route", "--mesh-name", MESH, "--virtual-gateway-name", GW,
        "--gateway-route-name", "special", "--spec", {"priority": 0, "httpRoute": {
            "match": {"prefix": "/svc/special"}, "action": target(CSVC)}})
    wait_for(lambda: echo(gw_port, "/svc/special/1") == (200, "c", "/1", CSVC),
             10 * slow_factor(), "the updated gateway route")
    assert echo(gw_port, "/svc/hello")[1] == "a"
    s = stats(r)
    rds = {k: v for k, v in s.items() if ".rds." in k and k.endswith(".update_rejected")}
    assert rds and not any(rds.values()), rds
    assert s["listener_manager.lds.update_rejected"] == 0, s
    assert r.alive()


def test_xds_gateway_debug_shows_gateway_envoy_shape(ctx):
    """The direct check: remora-xds's answer for the gateway node is App Mesh's gateway Envoy
    shape: one listener per gateway listener, bound to 0.0.0.0:<port> without original_dst,
    an HCM (stat_prefix ingress, AUTO for http) with RDS over ADS rds_ingress_http_<port>;
    one virtual host "*" with the routes in priority order carrying the rewrites; EDS clusters
    cds_egress_<mesh>_<node>_<protocol>_<port>; the bootstrap form runs as well."""
    ups = {n: free_port() for n in ("a", "b", "c")}
    x = start_xds_server(ctx)
    gw_port = free_port()
    make_mesh(ctx, x, ups, gw_port)
    node = urllib.parse.quote(f"mesh/{MESH}/virtualGateway/{GW}", safe="")
    resp = api(x.port, "GET", f"/debug/xds?node={node}")
    assert resp.status == 200, resp
    d = resp.json()
    assert d["mesh"] == MESH and d["virtualGateway"] == GW and d["node"] is None, d
    [lis] = d["listeners"]
    assert lis["name"] == f"lds_ingress_0.0.0.0_{gw_port}", lis
    assert lis["address"] == {"socket_address": {"address": "0.0.0.0", "port_value": gw_port}}
    assert "listener_filters" not in lis, lis  # no original_dst: the gateway binds the port
    [chain] = lis["filter_chains"]
    [hcm_f] = chain["filters"]
    hcm = hcm_f["typed_config"]
    assert hcm_f["name"] == "envoy.filters.network.http_connection_manager"
    assert hcm["stat_prefix"] == "ingress" and "codec_type" not in hcm, hcm  # AUTO
    assert hcm["normalize_path"] is True and hcm["merge_slashes"] is True, hcm
    assert hcm["rds"] == {"config_source": {"ads": {}, "resource_api_version": "V3"},
                          "route_config_name": f"rds_ingress_http_{gw_port}"}, hcm
    [rc] = d["route_configs"]
    assert rc["name"] == f"rds_ingress_http_{gw_port}"
    [vh] = rc["virtual_hosts"]
    assert vh["domains"] == ["*"], vh
    names = [rt["name"] for rt in vh["routes"]]
    assert names == ["by-host", "svc/api", "svc/web", "svc/api", "svc/web", "special",
                     "special"], names
    svc_api = vh["routes"][1]
    assert svc_api["match"] == {"prefix": "/svc/api"}, svc_api
    assert svc_api["route"]["prefix_rewrite"] == "/api", svc_api
    assert svc_api["route"]["host_rewrite_literal"] == SVC, svc_api
    assert svc_api["route"]["cluster"] == f"cds_egress_{MESH}_b_http_{ups['b']}", svc_api
    clusters = sorted(c["name"] for c in d["clusters"])
    assert clusters == sorted(f"cds_egress_{MESH}_{n}_http_{p}" for n, p in ups.items()), clusters
    assert all(c["type"] == "EDS" for c in d["clusters"]), d["clusters"]

    # The ARN works as well, and the bootstrap form is a whole static config.
    arn = urllib.parse.quote(GW_ARN, safe="")
    b = api(x.port, "GET", f"/debug/xds?node={arn}&format=bootstrap")
    assert b.status == 200, b
    sr = b.json()["static_resources"]
    assert len(sr["listeners"]) == 1 and len(sr["clusters"]) == 3, sr
    hcm = sr["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert "route_config" in hcm and "rds" not in hcm, hcm
    # A name of neither kind is refused.
    bad = api(x.port, "GET", "/debug/xds?node=" + urllib.parse.quote(f"mesh/{MESH}/gateway/gw"))
    assert bad.status == 400, bad


def test_xds_gateway_tls_http2_listener_alpn(ctx):
    """A gateway listener of protocol http2 with tls STRICT (certificate files): remora-xds
    gives its DownstreamTlsContext App Mesh's ALPN (h2, http/1.1), so `curl --http2` over TLS
    negotiates h2 and the listener's HTTP/2 codec serves it (without ALPN curl falls back to
    HTTP/1.1, which an HTTP/2-only listener cannot take). A client offering only http/1.1
    gets http/1.1, which the http2 listener refuses, as App Mesh's Envoy would."""
    import subprocess
    from tlsutil import Pki
    c = ctx.start_upstream("c")
    x = start_xds_server(ctx)
    pki = Pki(ctx.tmp / "pki")
    cert, key = pki.leaf("gw", "DNS:gateway.example")
    gw_port = free_port()

    def put(path, body):
        r = api(x.port, "PUT", "/v20190125/meshes" + path, body)
        assert r.status == 200, (path, r.status, r.text)
    put("", {"meshName": MESH, "spec": {}})
    put(f"/{MESH}/virtualNodes", {"virtualNodeName": "c", "spec": node_spec(c.port)})
    put(f"/{MESH}/virtualServices", {"virtualServiceName": CSVC, "spec": {
        "provider": {"virtualNode": {"virtualNodeName": "c"}}}})
    put(f"/{MESH}/virtualGateways", {"virtualGatewayName": GW, "spec": {"listeners": [{
        "portMapping": {"port": gw_port, "protocol": "http2"},
        "tls": {"mode": "STRICT", "certificate": {"file": {"certificateChain": cert,
                                                           "privateKey": key}}}}]}})
    put(f"/{MESH}/virtualGateway/{GW}/gatewayRoutes", {"gatewayRouteName": "all", "spec": {
        "http2Route": {"match": {"prefix": "/"}, "action": target(CSVC)}}})
    r = ctx.start_remora(gateway_bootstrap(x.xds_port, free_port()))
    assert stats(r)["listener_manager.lds.update_rejected"] == 0

    def curl(*flags):
        return subprocess.run(
            ["curl", "-sS", "-m", str(5 * slow_factor()), *flags, "--cacert", pki.ca,
             "--resolve", f"gateway.example:{gw_port}:127.0.0.1", "-H", "x-upstream-echo: 1",
             "-w", "\\n%{http_code} %{http_version}", f"https://gateway.example:{gw_port}/h2"],
            capture_output=True, text=True, timeout=30 * slow_factor())
    got = curl("--http2")
    assert got.returncode == 0, got.stderr
    body, status = got.stdout.rsplit("\n", 1)
    assert status == "200 2", got.stdout  # HTTP/2 over TLS, by ALPN
    e = json.loads(body)
    assert e["name"] == "c" and e["path"] == "/h2", e
    s = stats(r)
    assert s["http.ingress.downstream_cx_http2_total"] == 1, s
    assert s["http.ingress.downstream_cx_ssl_total"] == 1, s
    # http/1.1 only: negotiated, and not HTTP/2's preface: the HTTP/2 listener closes it.
    got = curl("--http1.1")
    assert got.returncode != 0 or not got.stdout.endswith("200 1.1"), got
