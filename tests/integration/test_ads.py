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


def test_ads_service_node_flags_override_the_bootstrap_node(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    a = ctx.start_upstream("a")
    cfg = ads_bootstrap({"a": [a.port]}, ads.port,
                        ads_extra={"set_node_on_first_message_only": False})
    ctx.start_remora(cfg, extra_args=["--service-node", "n2", "--service-cluster", "c2"])
    ack = ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")
    # Without set_node_on_first_message_only every request carries the node.
    assert ack["node"]["id"] == "n2" and ack["node"]["cluster"] == "c2", ack["node"]
    assert ack["node"]["locality"]["zone"] == "z1", ack["node"]


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

    # An unknown cluster is an error only with validate_clusters (RDS's default is false, as in
    # Envoy: such a route answers 503 NC until CDS brings the cluster).
    bad = route_config("r1", [to("a", "/x"), to("nope")])
    bad["validate_clusters"] = True
    res = ads.set_routes("v2", [bad])
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


# ---- initialisation (Envoy's init manager) ----

def test_ads_server_down_at_start_not_live_until_routes_arrive(ctx):
    port = free_port()
    r, a, b = start(ctx, port, wait_ready=False, initial_fetch_timeout="60s")
    # Not LIVE while the routes are missing: /ready 503 INITIALIZING, server.state 3 (Envoy's
    # number), and the listener is bound but does not serve yet.
    wait_for(lambda: ready(r).status == 503, 5, "admin up")
    resp = ready(r)
    assert resp.text.strip() == "INITIALIZING", resp.text
    s = stats(r)
    assert s["server.state"] == 3 and s["server.live"] == 0, s
    assert s["control_plane.connected_state"] == 0, s
    # A request sent now waits in the listen backlog, and is served on the routes that arrive.
    got = {}

    def early():
        try:
            got["resp"] = HttpConn(r.port(), timeout=30 * slow_factor()).request("GET", "/")
        except Exception as e:  # noqa: BLE001 - reported below
            got["err"] = e

    t = threading.Thread(target=early)
    t.start()
    ads = start_ads_server(ctx, port=port)
    ads.set_routes("v1", [route_config("r1", [to("b")])])
    wait_for(lambda: ready(r).status == 200, 10, "LIVE after the routes arrived")
    t.join(30 * slow_factor())
    assert "resp" in got, got
    assert who(got["resp"]) == "b"
    assert ready(r).text.strip() == "LIVE"
    s = stats(r)
    assert s["server.state"] == 0 and s["control_plane.connected_state"] == 1, s


def test_ads_initial_fetch_timeout_goes_live_without_routes_404_nr(ctx):
    ads = start_ads_server(ctx)  # up, but has no routes to give
    r, a, b = start(ctx, ads.port, wait_ready=False, initial_fetch_timeout="0.5s")
    ads.wait_request(lambda q: q.get("type_url") == RC_TYPE, what="the subscription")
    wait_for(lambda: ready(r).status == 200, 10, "LIVE after initial_fetch_timeout")
    resp = HttpConn(r.port()).request("GET", "/")
    assert resp.status == 404, resp
    assert "initial_fetch_timeout" in r.stderr
    # The routes arrive later and are used.
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    wait_for(lambda: HttpConn(r.port()).request("GET", "/").status == 200, 5, "routes arrive")


# ---- reconnects ----

def test_ads_server_restart_resubscribes_with_last_version_and_keeps_serving(ctx):
    port = free_port()
    ads = start_ads_server(ctx, port=port)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    r, a, b = start(ctx, port)
    ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")

    stop = threading.Event()
    flow = {"n": 0, "bad": []}

    def pump():
        c = HttpConn(r.port())
        deadline = time.monotonic() + 60 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp = c.request("GET", "/")
                if resp.status != 200 or resp.header("x-upstream-name") != "a":
                    flow["bad"].append((resp.status, resp.header("x-upstream-name")))
                flow["n"] += 1
            except (OSError, EOFError) as e:
                flow["bad"].append(repr(e))
                c = HttpConn(r.port())
        c.close()

    t = threading.Thread(target=pump)
    t.start()
    try:
        ads.stop(5)
        wait_for(lambda: stats(r)["control_plane.connected_state"] == 0, 5, "stream down")
        n_down = flow["n"]
        wait_for(lambda: flow["n"] >= n_down + 20, 10, "traffic while the server is away")
        ads2 = start_ads_server(ctx, port=port, name="ads2")  # knows nothing yet
        first = ads2.wait_request(lambda q: q.get("type_url") == RC_TYPE, 15,
                                  "the re-subscription")
        # The last accepted version, an empty nonce, every name, and the node (a new stream).
        assert first["version_info"] == "v1", first
        assert first.get("response_nonce", "") == "", first
        assert first["resource_names"] == ["r1"], first
        assert first["node"]["id"] == "mesh/m/virtualNode/web", first
        wait_for(lambda: stats(r)["control_plane.connected_state"] == 1, 5, "stream up")
        res = ads2.set_routes("v2", [route_config("r1", [to("b", "/b"), to("a", "/")])])
        ads2.wait_request(acked(ads2, "v2", res["nonce"]), what="the ACK of v2")
    finally:
        stop.set()
        t.join(30)
    assert flow["n"] > 0 and flow["bad"] == [], flow["bad"][:5]
    assert who(HttpConn(r.port()).request("GET", "/b")) == "b"


# ---- a hostile server ----

def test_ads_oversize_message_fails_stream_and_is_retried_old_routes_serve(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    r, a, b = start(ctx, ads.port)
    ads.wait_request(acked(ads, "v1", "1"), what="the ACK of v1")
    # 17 MiB in one message: over the 16 MiB bound, refused from its prefix.
    ads.set(RC_TYPE, "big", [{"garbage_bytes": 17 << 20}])
    wait_for(lambda: ads.info()["streams"] >= 2, 10, "a reconnect")
    assert "a message over 16777216 bytes" in r.stderr
    assert who(HttpConn(r.port()).request("GET", "/")) == "a"
    # Undecodable resource bytes within the bound: a NACK, not a crash.
    ads.set(RC_TYPE, "junk", [{"garbage_bytes": 64}])  # pushed now, or on the reconnect
    nack = ads.wait_request(lambda q: "does not decode" in (q.get("error_detail") or {})
                            .get("message", ""), 15, "the NACK")
    assert nack["version_info"] == "v1", nack
    assert who(HttpConn(r.port()).request("GET", "/")) == "a"
    assert r.alive()


def test_ads_garbage_server_is_retried_proxy_survives(ctx):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    accepted = {"n": 0}
    stop = threading.Event()

    def serve():
        deadline = time.monotonic() + 60 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            accepted["n"] += 1
            try:
                # Read the client's preface and request, answer garbage, and wait for the
                # client to give up on the connection (bounded by the socket timeout).
                c.settimeout(2.0)
                c.recv(65536)
                c.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + bytes(range(256)) * 64)
                c.shutdown(socket.SHUT_WR)
                while c.recv(65536):
                    pass
            except OSError:
                pass
            c.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        r, a, b = start(ctx, srv.getsockname()[1], wait_ready=False,
                        initial_fetch_timeout="0.3s")
        wait_for(lambda: accepted["n"] >= 3, 15, "three connection attempts")
        wait_for(lambda: ready(r).status == 200, 10, "LIVE after initial_fetch_timeout")
        assert r.alive()
        # nghttp2 read the garbage and gave up on the session (no crash, no hang).
        assert "HTTP/2" in r.stderr or "session ended" in r.stderr, r.tail()
        assert stats(r)["control_plane.connected_state"] in (0, 1)
    finally:
        stop.set()
        t.join(10)
        srv.close()
