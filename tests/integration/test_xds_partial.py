"""Updates as Envoy applies them, listener warming and two LDS drain gaps.

Partial updates (Envoy's CdsApiImpl/LdsApiImpl): a CDS or LDS response (over ADS, or a file)
with one resource remora rejects applies the others; the bad one is skipped and the version of
its name in force keeps serving; the response is NACKed with the bad one's path and the previous
version, and update_rejected counts it. Listener warming: a listener added or modified at run time
whose connection manager names RDS routes over ADS that have not arrived takes no traffic (an
added one refuses connections, a modified one's old version serves) until they arrive or its
initial_fetch_timeout passes: never a 404 NR meanwhile. Drain gaps: an LDS change after
/drain_listeners does not dup the stopped listeners' closed sockets, and a TCP proxy session of
a removed listener is closed at the drain deadline (--drain-time-s)."""

import socket
import time

from adsutil import (CL_TYPE, LST_TYPE, ads_bootstrap, eds_cluster, assignment, route_config,
                     start_ads_server, static_cluster, to)
from lib import HttpConn, free_port, slow_factor, wait_for
from proxyutil import proxy_config, stats
from test_dynamic_resources import cds_doc, cluster, cm, wait_cds
from test_dynamic_resources import start as cds_file_start
from test_lds import lds_doc, listener, lm, refused, wait_lds, who
from test_lds_rds import rds_listener, rds_stat
from test_reload import write_doc

CDS_ADS = {"ads": {}, "resource_api_version": "V3"}
TCP_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
# a cluster field remora does not support (rejected with its path)
PER_HOST = {"per_host_thresholds": [{"max_connections": 1}]}


def nack_of(ads, url, nonce):
    return ads.wait_request(lambda q: q.get("type_url") == url and q.get("error_detail")
                            and q.get("response_nonce") == nonce, what=f"the NACK of {nonce}")


def acked(ads, url, version, nonce):
    return ads.wait_request(lambda q: q.get("type_url") == url
                            and q.get("version_info") == version
                            and q.get("response_nonce") == nonce
                            and not q.get("error_detail"), what=f"the ACK of {version}")


def get(port, path="/"):
    return HttpConn(port).request("GET", path)


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2 * slow_factor()).close()
    except ConnectionRefusedError:
        return False
    return True


def dyn_listeners(r):
    dump = r.admin("GET", "/config_dump").json()
    return [e for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump")
            for e in c.get("dynamic_listeners", [])]


# ---- partial updates ----

def test_ads_cds_partial_update_applies_good_clusters_bad_one_keeps_its_version(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    c = ctx.start_upstream("c")
    ads = start_ads_server(ctx)
    ads.set_clusters("c1", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b")])
    ads.set_endpoints("e1", [assignment("svc-b", [b.port])])
    ads.set_routes("r1", [route_config("r1", [to("a", "/a"), to("n", "/n"), to("b", "/")])])
    r = ctx.start_remora(ads_bootstrap({}, ads.port, cds=CDS_ADS))
    acked(ads, CL_TYPE, "c1", "1")
    assert who(get(r.port(), "/")) == "b"
    version = cm(r, "cds.version")

    # a changes (to c's port), b's new version is one remora rejects, n is new and good.
    bad_b = dict(eds_cluster("b", "svc-b"), circuit_breakers=PER_HOST)
    res = ads.set_clusters("c2", [static_cluster("a", [c.port]), bad_b,
                                  static_cluster("n", [a.port])])
    nack = nack_of(ads, CL_TYPE, res["nonce"])
    assert nack["version_info"] == "c1", nack
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[1].circuit_breakers.per_host_thresholds: not supported"), msg
    # the good ones serve, the bad one's previous version still does (with its endpoints)
    wait_for(lambda: who(get(r.port(), "/a")) == "c", 5 * slow_factor(), "a modified")
    assert who(get(r.port(), "/n")) == "a"
    assert who(get(r.port(), "/")) == "b"
    # Envoy's stats for a partly applied, NACKed response
    assert cm(r, "cds.update_rejected") == 1 and cm(r, "cds.update_success") == 1
    assert cm(r, "cds.version") == version
    assert cm(r, "cluster_modified") == 1 and cm(r, "active_clusters") >= 4
    dump = r.admin("GET", "/config_dump").json()
    cd = [x for x in dump["configs"] if x["@type"].endswith("ClustersConfigDump")][0]
    vers = {e["cluster"]["name"]: e["version_info"] for e in cd["dynamic_active_clusters"]}
    assert vers == {"a": "c2", "b": "c1", "n": "c2"}, vers

    # A response leaving b out removes it, even while its last version was bad.
    res = ads.set_clusters("c3", [static_cluster("a", [c.port]), static_cluster("n", [a.port])])
    acked(ads, CL_TYPE, "c3", res["nonce"])
    wait_for(lambda: get(r.port(), "/").status == 503, 5 * slow_factor(), "b removed: NC")
    assert cm(r, "cds.update_success") == 2


def test_ads_lds_partial_update_applies_good_listeners_bad_one_keeps_its_version(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1, p2, p3 = free_port(), free_port(), free_port()

    def lst(name, port, cl):
        x = listener(name, port, cl)
        del x["@type"]
        return x
    ads.set_listeners("l1", [lst("one", p1, "a"), lst("two", p2, "a")])
    d = ads_bootstrap({"a": [a.port], "b": [b.port]}, ads.port)
    d["dynamic_resources"]["lds_config"] = {"ads": {}, "resource_api_version": "V3"}
    r = ctx.start_remora(d)
    k2 = HttpConn(p2)
    assert who(k2.request()) == "a"

    bad = lst("two", p2, "b")
    bad["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0][
        "routes"][0]["route"]["cluster"] = "nope"
    res = ads.set_listeners("l2", [lst("one", p1, "b"), bad, lst("three", p3, "b")])
    nack = nack_of(ads, LST_TYPE, res["nonce"])
    assert nack["version_info"] == "l1", nack
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[1].filter_chains[0].filters[0].typed_config.route_config."
                          "virtual_hosts[0].routes[0].route.cluster: unknown cluster 'nope'"), msg
    wait_for(lambda: accepts(p3), 5 * slow_factor(), "three added")
    assert who(get(p3)) == "b"
    assert who(get(p1)) == "b"
    # two's version in force is untouched: the same keep-alive connection, not drained
    resp = k2.request()
    assert who(resp) == "a" and resp.header("connection") != "close", resp
    assert lm(r, "lds.update_rejected") == 1 and lm(r, "lds.update_success") == 1
    assert lm(r, "listener_added") == 3 and lm(r, "listener_modified") == 1
    names = {e["name"]: e["active_state"]["version_info"] for e in dyn_listeners(r)}
    assert names == {"one": "l2", "two": "l1", "three": "l2"}, names


def test_cds_file_with_one_bad_cluster_applies_the_others(ctx):
    b = ctx.start_upstream("b")
    c = ctx.start_upstream("c")
    routes = [to("x", "/x"), to("dyn")]
    r, cds_path, _ = cds_file_start(ctx, cds_doc("v1", [cluster("dyn", [b.port])]), routes)
    conn = HttpConn(r.port())
    assert who(conn.request()) == "b"
    write_doc(cds_path, cds_doc("v2", [cluster("dyn", [c.port], circuit_breakers=PER_HOST),
                                       cluster("x", [c.port])]))
    wait_cds(r, "update_rejected", 1)
    r.wait_output("resources[0].circuit_breakers.per_host_thresholds: not supported",
                  5 * slow_factor())
    assert str(cds_path) in r.stderr
    assert who(conn.request("GET", "/x")) == "c"  # the good one is applied
    assert who(conn.request()) == "b"  # the bad one's version in force stays
    assert cm(r, "cds.update_success") == 1 and cm(r, "cluster_added") == 3


# ---- listener warming ----

def lds_ads_start(ctx, ads, clusters):
    d = ads_bootstrap(clusters, ads.port)
    d["dynamic_resources"]["lds_config"] = {"ads": {}, "resource_api_version": "V3"}
    return ctx.start_remora(d)


def with_timeout(lst, seconds):
    """initial_fetch_timeout on its RDS source (as ads_server.js encodes a Duration)."""
    cs = lst["filter_chains"][0]["filters"][0]["typed_config"]["rds"]["config_source"]
    cs["initial_fetch_timeout"] = {"seconds": int(seconds),
                                   "nanos": int((seconds - int(seconds)) * 1e9)}
    return lst


def test_lds_added_listener_warms_until_its_routes_arrive(ctx):
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l1", [listener_inline("one", p1, "a")])
    r = lds_ads_start(ctx, ads, {"a": [a.port]})
    assert who(get(p1)) == "a"

    res = ads.set_listeners("l2", [listener_inline("one", p1, "a"),
                                   with_timeout(rds_listener("two", p2, "rn"), 60)])
    acked(ads, LST_TYPE, "l2", res["nonce"])
    ads.wait_request(lambda q: q.get("type_url", "").endswith("RouteConfiguration")
                     and "rn" in (q.get("resource_names") or []), what="rn subscribed")
    # warming: bound, not accepting (Envoy does not take traffic on it yet), never 404 NR
    assert refused(p2)
    assert lm(r, "total_listeners_warming") == 1 and lm(r, "total_listeners_active") == 1
    two = [e for e in dyn_listeners(r) if e["name"] == "two"]
    assert len(two) == 1 and "warming_state" in two[0] and "active_state" not in two[0], two
    assert two[0]["warming_state"]["version_info"] == "l2"

    ads.set_routes("r2", [route_config("r1", [to("a")]), route_config("rn", [to("a")])])
    wait_for(lambda: accepts(p2), 5 * slow_factor(), "two warm and accepting")
    assert who(get(p2)) == "a"  # its first request is routed
    assert lm(r, "total_listeners_warming") == 0 and lm(r, "total_listeners_active") == 2
    assert rds_stat(r, "dyn", "rn", "config_reload") == 1
    two = [e for e in dyn_listeners(r) if e["name"] == "two"]
    assert "active_state" in two[0] and "warming_state" not in two[0], two


def listener_inline(name, port, cl):
    x = listener(name, port, cl)
    del x["@type"]
    return x


def test_lds_modified_listener_old_version_serves_while_the_new_one_warms(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1 = free_port()
    ads.set_listeners("l1", [listener_inline("one", p1, "a")])
    r = lds_ads_start(ctx, ads, {"a": [a.port], "b": [b.port]})
    k1 = HttpConn(p1)
    assert who(k1.request()) == "a"

    res = ads.set_listeners("l2", [with_timeout(rds_listener("one", p1, "rm"), 60)])
    acked(ads, LST_TYPE, "l2", res["nonce"])
    ads.wait_request(lambda q: q.get("type_url", "").endswith("RouteConfiguration")
                     and "rm" in (q.get("resource_names") or []), what="rm subscribed")
    # the old version takes new connections and keeps its open ones (not drained)
    assert who(get(p1)) == "a"
    resp = k1.request()
    assert who(resp) == "a" and resp.header("connection") != "close", resp
    assert lm(r, "total_listeners_warming") == 1 and lm(r, "total_listeners_active") == 1
    one = dyn_listeners(r)[0]
    assert one["active_state"]["version_info"] == "l1", one
    assert one["warming_state"]["version_info"] == "l2", one

    ads.set_routes("r2", [route_config("r1", [to("a")]), route_config("rm", [to("b")])])
    wait_for(lambda: who(get(p1)) == "b", 5 * slow_factor(), "the new version serves")
    resp = k1.request()  # the old version's connection drains
    assert who(resp) == "a" and resp.header("connection") == "close", resp
    assert lm(r, "total_listeners_warming") == 0 and lm(r, "listener_modified") == 1


def test_lds_warming_ends_at_initial_fetch_timeout(ctx):
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l1", [listener_inline("one", p1, "a")])
    r = lds_ads_start(ctx, ads, {"a": [a.port]})
    timeout = 1.5 * slow_factor()
    t0 = time.monotonic()
    res = ads.set_listeners("l2", [listener_inline("one", p1, "a"),
                                   with_timeout(rds_listener("two", p2, "rt"), timeout)])
    acked(ads, LST_TYPE, "l2", res["nonce"])
    if time.monotonic() - t0 < timeout - 0.3:
        assert refused(p2)
        assert lm(r, "total_listeners_warming") == 1
    # the server never sends rt: at the timeout it serves on its empty table (404 NR)
    wait_for(lambda: accepts(p2), 5 * slow_factor() + timeout, "two warm after its timeout")
    assert time.monotonic() - t0 >= timeout - 0.1
    assert get(p2).status == 404
    assert lm(r, "total_listeners_warming") == 0


# ---- LDS drain gaps ----

def tcp_listener(name, port, cluster):
    return {"@type": LST_TYPE, "name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy",
                                            "typed_config": {"@type": TCP_TYPE,
                                                             "stat_prefix": "t",
                                                             "cluster": cluster}}]}]}


def lds_file_start(ctx, doc, clusters, extra_args=()):
    d = ctx.tmp / "lds"
    d.mkdir(exist_ok=True)
    path = d / "lds.yaml"
    write_doc(path, doc)
    cfg = proxy_config(clusters)
    cfg["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(path)},
                                               "resource_api_version": "V3"}}
    return ctx.start_remora(cfg, extra_args=extra_args), path


def test_lds_removed_listener_tcp_session_closed_at_drain_deadline(ctx):
    a = ctx.start_upstream("a")
    p1 = free_port()
    drain = 1.0
    r, path = lds_file_start(ctx, lds_doc("v1", [tcp_listener("t", p1, "a")]),
                             {"a": [a.port]}, extra_args=("--drain-time-s", "1"))
    s = socket.create_connection(("127.0.0.1", p1), timeout=5)
    ctx.on_cleanup(s.close)
    s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # through the TCP proxy to the upstream
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got
    t0 = time.monotonic()
    write_doc(path, lds_doc("v2", []))
    wait_lds(r, "update_success", 2)
    wait_for(lambda: refused(p1), 5 * slow_factor(), "the port closed")
    # the session (idle, keep-alive upstream) stays until the drain deadline, then is closed
    s.settimeout(drain + 10 * slow_factor())
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        pass
    took = time.monotonic() - t0
    assert took >= drain - 0.2, took
    wait_for(lambda: lm(r, "total_listeners_draining") == 0, 5 * slow_factor(),
             "the drained version freed")


def test_lds_change_after_drain_listeners_is_not_applied_and_safe(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    p1 = free_port()
    r, path = lds_file_start(ctx, lds_doc("v1", [listener("one", p1, "a")]),
                             {"a": [a.port], "b": [b.port]})
    assert who(get(p1)) == "a"
    assert r.admin("POST", "/drain_listeners").status == 200
    wait_for(lambda: refused(p1), 5 * slow_factor(), "listeners stopped")
    # the same address modified: no dup of a closed (or reused) descriptor, nothing started
    write_doc(path, lds_doc("v2", [listener("one", p1, "b")]))
    wait_lds(r, "update_success", 2)
    r.wait_output("listener 'one' not modified: listeners are stopped", 5 * slow_factor())
    assert lm(r, "lds.update_rejected") == 0 and lm(r, "listener_modified") == 0
    assert refused(p1)
    assert r.admin("GET", "/ready").status in (200, 503)  # alive
