"""remora as an App Mesh sidecar configured by remora-xds (flavour B). remora-xds translates a
mesh for the node mesh/shop/virtualNode/front; `GET /debug/xds?node=...&format=bootstrap`
gives what that sidecar is served as one static bootstrap (RDS inline, EDS endpoints as
load_assignment), which remora then runs in an ECS-like task namespace
(netnsutil: the aws-appmesh CNI plugin's nat rules, remora as uid 1337):

  egress   the app dials the virtual service's port; the egress listener (15001) routes by Host
           through the router's routes to the target node's port, and with ALLOW_ALL passes
           other names and ports through to where the app sent them (DROP_ALL: closed);
  ingress  a peer dials the node's app port; the ingress listener (15000) hands it to the app on
           127.0.0.1.

The ADS client of remora (LDS/CDS over xDS) is separate work: this runs the same resources
statically. The debug endpoint's own answers are tested without namespaces."""

import json
import subprocess
import urllib.parse

import lib
from lib import build_request, raw_exchange
from netnsutil import install_ecs_rules, netns_pair, start_remora_in_task, start_upstream_in
from proxyutil import stats
from test_xds_api import api
from test_xds_serve import start_xds_server

MESH = "shop"
NODE = f"mesh/{MESH}/virtualNode/front"
VS = "svc.shop.local"
P = "/v20190125/meshes"


def put(x, path, body):
    r = api(x.port, "PUT", path, body)
    assert r.status == 200, r
    return r.json()


def make_mesh(x, svc_ip, front_ip, egress="ALLOW_ALL"):
    """Nodes a (svc:8080) and b (svc:8081), router r on 8080 (/a -> a, the rest -> b),
    service svc.shop.local by r, and front (its app on 9080) with svc.shop.local as backend."""
    put(x, P, {"meshName": MESH, "spec": {"egressFilter": {"type": egress}}})
    for name, port in (("a", 8080), ("b", 8081)):
        put(x, f"{P}/{MESH}/virtualNodes", {
            "virtualNodeName": name,
            "spec": {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                     "serviceDiscovery": {"dns": {"hostname": svc_ip}}}})
    put(x, f"{P}/{MESH}/virtualRouters", {
        "virtualRouterName": "r",
        "spec": {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]}})
    put(x, f"{P}/{MESH}/virtualRouter/r/routes", {
        "routeName": "to-a", "spec": {"priority": 0, "httpRoute": {
            "match": {"prefix": "/a"},
            "action": {"weightedTargets": [{"virtualNode": "a", "weight": 1}]}}}})
    put(x, f"{P}/{MESH}/virtualRouter/r/routes", {
        "routeName": "rest", "spec": {"priority": 1, "httpRoute": {
            "match": {"prefix": "/"},
            "action": {"weightedTargets": [{"virtualNode": "b", "weight": 1}]},
            "retryPolicy": {"maxRetries": 1, "httpRetryEvents": ["gateway-error"],
                            "perRetryTimeout": {"unit": "s", "value": 2}},
            "timeout": {"perRequest": {"unit": "s", "value": 5}}}}})
    put(x, f"{P}/{MESH}/virtualServices", {
        "virtualServiceName": VS,
        "spec": {"provider": {"virtualRouter": {"virtualRouterName": "r"}}}})
    put(x, f"{P}/{MESH}/virtualNodes", {
        "virtualNodeName": "front",
        "spec": {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"},
                                "timeout": {"http": {"perRequest": {"unit": "s", "value": 7}}}}],
                 "serviceDiscovery": {"dns": {"hostname": front_ip}},
                 "backends": [{"virtualService": {"virtualServiceName": VS}}]}})


def debug(xds, params):
    return api(xds.port, "GET", "/debug/xds?" + urllib.parse.urlencode(params))


def bootstrap(ctx, x, node=NODE):
    """The node's static bootstrap from remora-xds, with an admin block, written to a file."""
    r = debug(x, {"node": node, "format": "bootstrap"})
    assert r.status == 200, r
    b = r.json()
    b["admin"] = {"address": lib.socket_address(9901)}
    path = ctx.tmp / f"sidecar-{len(list(ctx.tmp.glob('sidecar-*')))}.yaml"
    path.write_text(lib.to_yaml(b) + "\n")  # YAML: lib's port scan reads the admin block
    return path


def test_debug_xds_endpoint(ctx):
    x = start_xds_server(ctx)
    make_mesh(x, "127.0.0.1", "127.0.0.1")
    r = debug(x, {"node": NODE})
    assert r.status == 200, r
    d = r.json()
    assert d["mesh"] == MESH and d["node"] == "front", d
    assert [l["name"] for l in d["listeners"]] == ["lds_egress_0.0.0.0_15001",
                                                    "lds_ingress_0.0.0.0_15000"], d
    assert all(l["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
               for l in d["listeners"])
    assert [c["name"] for c in d["clusters"]] == [
        "cds_egress_passthrough", "cds_egress_shop_a_http_8080", "cds_egress_shop_b_http_8081",
        "cds_ingress_shop_front_http_9080"], d["clusters"]
    assert [c["name"] for c in d["route_configs"]] == ["rds_egress_http_8080",
                                                        "rds_ingress_http_9080"]
    # The ARN form names the same node.
    arn = f"arn:aws:appmesh:us-west-2:111122223333:mesh/{MESH}/virtualNode/front"
    assert debug(x, {"node": arn}).json() == d
    # The mesh's gRPC flavour: a listener per virtual service name (and NAME:PORT).
    m = debug(x, {"mesh": MESH}).json()
    assert [l["name"] for l in m["listeners"]] == [VS, f"{VS}:8080"], m["listeners"]
    assert m["node"] is None

    # The bootstrap is one remora takes as it is.
    path = bootstrap(ctx, x)
    v = subprocess.run([str(ctx.bin("remora")), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=30 * lib.slow_factor())
    assert v.returncode == 0, (v.stdout, v.stderr)
    b = debug(x, {"node": NODE, "format": "bootstrap"}).json()
    assert "admin" not in b
    eg = [l for l in b["static_resources"]["listeners"] if l["name"].startswith("lds_egress")][0]
    hcm = eg["filter_chains"][0]["filters"][0]["typed_config"]
    assert "rds" not in hcm and hcm["route_config"]["name"] == "rds_egress_http_8080", hcm

    # Errors.
    for params, status, words in (
            ({"node": "web-1"}, 400, "an id naming a virtual node"),
            ({}, 400, "exactly one of node, mesh"),
            ({"node": NODE, "mesh": MESH}, 400, "exactly one of node, mesh"),
            ({"node": NODE, "format": "yaml"}, 400, "format"),
            ({"node": NODE, "x": "1"}, 400, "unknown parameter"),
            ({"mesh": "nope"}, 404, "mesh nope not found")):
        r = debug(x, params)
        assert r.status == status and words in r.json()["message"], (params, r, r.body)
    r = api(x.port, "POST", "/debug/xds?node=" + NODE, {})
    assert r.status == 405 and r.header("allow") == "GET", r
    # A node that does not exist (yet): an empty set, as its sidecar would get.
    e = debug(x, {"node": f"mesh/{MESH}/virtualNode/nobody"}).json()
    assert e["listeners"] == [] and e["clusters"] == [], e


def app_get(pair, ip, port, host, path="/"):
    """A request from the app (root in the task namespace: captured) to ip:port."""
    return pair.call(pair.task, raw_exchange, port, build_request("GET", path, host=host),
                     timeout=3.0, host=ip, until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n"))


def served_by(reply, upstream):
    text = bytes(reply).decode("latin-1")
    assert text.startswith("HTTP/1.1 200"), reply
    assert f"x-upstream-name: {upstream}\r\n" in text.lower(), reply


def test_sidecar_in_ecs_task(ctx):
    pair = netns_pair(ctx)  # skips unless root with ip netns and iptables
    install_ecs_rules(pair, proxy_ingress_port=15000, app_ports=[9080])
    start_upstream_in(ctx, pair, pair.svc, "a", "0.0.0.0:8080")
    start_upstream_in(ctx, pair, pair.svc, "b", "0.0.0.0:8081")
    start_upstream_in(ctx, pair, pair.svc, "ext", "0.0.0.0:7777")
    start_upstream_in(ctx, pair, pair.task, "app", "127.0.0.1:9080")
    x = start_xds_server(ctx)
    make_mesh(x, pair.svc_ip, pair.task_ip)
    r = start_remora_in_task(ctx, pair, bootstrap(ctx, x).read_text())

    # Egress: the app dials svc:8080 by the service's name; the router's routes choose.
    served_by(app_get(pair, pair.svc_ip, 8080, VS), "b")  # b listens on 8081
    served_by(app_get(pair, pair.svc_ip, 8080, f"{VS}:8080", "/a/x"), "a")
    # ALLOW_ALL: a name the mesh does not know goes where the app sent it (HTTP port: the
    # allow_all virtual host; any other port: the default chain), through the passthrough.
    served_by(app_get(pair, pair.svc_ip, 8080, "other.example"), "a")
    served_by(app_get(pair, pair.svc_ip, 7777, "ext.example"), "ext")
    # Ingress: a peer dials the app's port on the task; remora hands it to 127.0.0.1:9080.
    served_by(pair.call(pair.svc, raw_exchange, 9080, build_request("GET", "/in", host="front"),
                        timeout=3.0, host=pair.task_ip,
                        until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")), "app")
    s = pair.call(pair.task, stats, r)
    assert s["cluster.cds_ingress_shop_front_http_9080.upstream_rq_total"] == 1, s
    assert s["cluster.cds_egress_shop_b_http_8081.upstream_rq_total"] == 1, s
    assert s["cluster.cds_egress_shop_a_http_8080.upstream_rq_total"] == 1, s
    assert s["http.egress.downstream_rq_total"] == 3, s
    assert s["http.ingress.downstream_rq_total"] == 1, s
    assert s["tcp.egress_passthrough.downstream_cx_total"] == 1, s
    assert r.stop(r.term_timeout) == 0, r.tail()

    # DROP_ALL: the same sidecar, restarted on the new resources, closes what is not the
    # mesh's and still routes what is.
    put(x, f"{P}/{MESH}", {"spec": {"egressFilter": {"type": "DROP_ALL"}}})
    r = start_remora_in_task(ctx, pair, bootstrap(ctx, x).read_text())
    reply = app_get(pair, pair.svc_ip, 7777, "ext.example")
    assert bytes(reply) == b"" and reply.end in ("eof", "rst"), reply
    reply = app_get(pair, pair.svc_ip, 8080, "other.example")
    assert bytes(reply).startswith(b"HTTP/1.1 404"), reply
    served_by(app_get(pair, pair.svc_ip, 8080, VS), "b")
