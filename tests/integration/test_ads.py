"""The proxy's ADS client (proxy/xds/ads.c): routes over a real gRPC ADS stream from
tests/grpc/ads_server.js (@grpc/grpc-js serving the repo's protos). Routes arrive and traffic
follows them; a pushed version shifts traffic; every response is ACKed with its version and
nonce; an invalid RouteConfiguration is NACKed with the field path while the old routes keep
serving; startup waits for the first routes (/ready 503 INITIALIZING) or initial_fetch_timeout;
a restarted server gets every subscription again with the last version and an empty nonce while
traffic keeps flowing; a hostile server (oversize messages, garbage, not HTTP/2 at all) costs a
reconnect, never the proxy."""

import socket
import threading
import time

from adsutil import (RC_TYPE, ads_bootstrap, route_config, start_ads_server, to, weighted)
from lib import HttpConn, free_port, slow_factor, wait_for
from proxyutil import stats

PREFIX = "http.ingress_http.rds.r1."


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def share_a(port, n):
    c = HttpConn(port)
    try:
        return sum(who(c.request("GET", "/")) == "a" for _ in range(n)) / n
    finally:
        c.close()


def start(ctx, ads_port, wait_ready=True, **kw):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    cfg = ads_bootstrap({"a": [a.port], "b": [b.port]}, ads_port, **kw)
    r = ctx.start_remora(cfg, wait_ready=wait_ready, log_level="debug")
    return r, a, b


def ready(r):
    return r.admin("GET", "/ready")


def rds_reqs(ads):
    return [q for q in ads.requests() if q.get("type_url") == RC_TYPE]


def acked(ads, version, nonce):
    return lambda q: (q.get("type_url") == RC_TYPE and q.get("version_info") == version
                      and q.get("response_nonce") == nonce and not q.get("error_detail"))


# ---- routes arrive, traffic follows, ACKs ----

def test_ads_routes_arrive_and_traffic_follows_and_is_acked(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    r, a, b = start(ctx, ads.port)
    assert who(HttpConn(r.port()).request("GET", "/")) == "a"

    first = rds_reqs(ads)[0]
    # The first request: the subscription, no version or nonce yet, and the bootstrap's node.
    assert first["resource_names"] == ["r1"], first
    assert first.get("version_info", "") == "" and first.get("response_nonce", "") == "", first
    node = first["node"]
    assert node["id"] == "mesh/m/virtualNode/web" and node["cluster"] == "web", node
    assert node["locality"]["zone"] == "z1", node
    app = node["metadata"]["fields"]["app"]  # protobufjs's own Struct: camelCase
    assert app.get("string_value", app.get("stringValue")) == "web", node
    assert node["user_agent_name"] == "remora", node
    # The response (nonce 1) is ACKed with its version and nonce, and without the node again
    # (set_node_on_first_message_only).
    ack = ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")
    assert ack["resource_names"] == ["r1"] and not ack.get("node"), ack

    s = stats(r)
    assert s[PREFIX + "update_success"] == 1 and s[PREFIX + "update_rejected"] == 0, s
    assert s["control_plane.connected_state"] == 1, s
    assert s["control_plane.rate_limit_enforced"] == 0, s
    dump = r.admin("GET", "/config_dump").json()
    dyn = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")][0]
    entry = dyn["dynamic_route_configs"][0]
    assert entry["version_info"] == "v1" and entry["route_config"]["name"] == "r1", entry


def test_ads_pushed_version_shifts_traffic_90_10_to_0_100(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [weighted(90, 10)])])
    r, a, b = start(ctx, ads.port)
    before = share_a(r.port(), 400)
    assert 0.82 <= before <= 0.97, before

    res = ads.set_routes("v2", [route_config("r1", [weighted(0, 100)])])
    assert res["pushed"] == 1, res
    ads.wait_request(acked(ads, "v2", res["nonce"]), what="the ACK of v2")
    wait_for(lambda: who(HttpConn(r.port()).request("GET", "/")) == "b", 5, "traffic on v2")
    assert share_a(r.port(), 200) == 0.0


def test_ads_invalid_route_config_is_nacked_with_field_path_old_routes_keep_serving(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    r, a, b = start(ctx, ads.port)
    ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")

    res = ads.set_routes("v2", [route_config("r1", [to("a", "/x"), to("nope")])])
    nack = ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and q.get("error_detail")
                            and q.get("response_nonce") == res["nonce"], what="the NACK")
    # NACK: the previous version, the response's nonce, INVALID_ARGUMENT and the field path.
    assert nack["version_info"] == "v1", nack
    assert nack["error_detail"]["code"] == 3, nack
    msg = nack["error_detail"]["message"]
    assert "resources[0].virtual_hosts[0].routes[1].route.cluster" in msg, msg
    assert "nope" in msg, msg
    assert who(HttpConn(r.port()).request("GET", "/")) == "a"
    s = stats(r)
    assert s[PREFIX + "update_rejected"] == 1 and s[PREFIX + "update_success"] == 1, s
    dump = r.admin("GET", "/config_dump").json()
    dyn = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")][0]
    assert dyn["dynamic_route_configs"][0]["version_info"] == "v1", dyn

    # A fixed config is accepted afterwards.
    res = ads.set_routes("v3", [route_config("r1", [to("b")])])
    ads.wait_request(acked(ads, "v3", res["nonce"]), what="the ACK of v3")
    wait_for(lambda: who(HttpConn(r.port()).request("GET", "/")) == "b", 5, "traffic on v3")


def test_ads_resources_not_subscribed_are_ignored_and_wrong_types_nacked(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    r, a, b = start(ctx, ads.port)
    ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")
    # "other" is not subscribed (and would not even build): ignored; r1 is applied.
    res = ads.set_routes("v2", [route_config("other", [to("nope")]),
                                route_config("r1", [to("b")])])
    ads.wait_request(acked(ads, "v2", res["nonce"]), what="the ACK of v2")
    wait_for(lambda: who(HttpConn(r.port()).request("GET", "/")) == "b", 5, "traffic on v2")
    # An Any whose type is not the response's: NACKed, naming the resource.
    cl_type = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
    res = ads.set(RC_TYPE, "v3", [{"type_url": cl_type, "json": {"name": "r1"}}])
    nack = ads.wait_request(lambda q: q.get("error_detail")
                            and q.get("response_nonce") == res["nonce"], what="the NACK")
    assert nack["version_info"] == "v2", nack
    assert nack["error_detail"]["message"].startswith("resources[0]: type "), nack
    assert who(HttpConn(r.port()).request("GET", "/")) == "b"
