"""Listeners that come, change and go while remora runs (LDS from a file:
dynamic_resources.lds_config). A listener added accepts and routes; a modified one serves new
connections with its new config while an open keep-alive connection finishes on the old one
(connection: close on its next response); a removed one refuses new connections and closes its
open ones after answering their request; bad updates (a bad field, a port in use, a bootstrap
listener's name) are rejected with their field path and change nothing; an unrelated change
under load fails no request; memory stays flat over 50 updates."""

import json
import socket
import threading

from lib import HttpConn, free_port, is_sanitized, proc_rss_kb, slow_factor, wait_for
from proxyutil import proxy_config, stats
from test_reload import write_doc

LST_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def listener(name, port, cluster, prefix="dyn", **extra):
    hcm = {"@type": HCM_TYPE, "stat_prefix": prefix, "codec_type": "AUTO",
           "route_config": {"name": "r", "virtual_hosts": [
               {"name": "vh", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]}]},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER_TYPE}}]}
    lst = {"@type": LST_TYPE, "name": name,
           "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
           "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                           "typed_config": hcm}]}]}
    lst.update(extra)
    return lst


def lds_doc(version, listeners):
    return {"version_info": version, "resources": listeners}


def start(ctx, doc, clusters, concurrency=1):
    """remora with static clusters ``clusters`` ({name: [port]}) and listeners from an LDS file
    (``doc``: its first document). Returns (remora, lds path)."""
    d = ctx.tmp / "lds"
    d.mkdir(exist_ok=True)
    path = d / "lds.yaml"
    write_doc(path, doc)
    cfg = proxy_config(clusters)
    cfg["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(path)},
                                               "resource_api_version": "V3"}}
    return ctx.start_remora(cfg, concurrency=concurrency), path


def lm(r, name):
    return stats(r, "listener_manager").get("listener_manager." + name, 0)


def wait_lds(r, name, want, timeout=5.0):
    wait_for(lambda: lm(r, "lds." + name) >= want, timeout * slow_factor(),
             f"listener_manager.lds.{name} >= {want}")


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2 * slow_factor()).close()
    except ConnectionRefusedError:
        return True
    return False


def test_lds_listener_added_modified_removed(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    p1, p2 = free_port(), free_port()
    r, path = start(ctx, lds_doc("v1", [listener("one", p1, "a")]),
                    {"a": [a.port], "b": [b.port]}, concurrency=2)
    # Added at startup from the file: it accepts and routes.
    k1 = HttpConn(p1)
    assert who(k1.request()) == "a"
    assert lm(r, "listener_added") == 1 and lm(r, "total_listeners_active") == 1
    assert lm(r, "lds.update_success") == 1 and lm(r, "listener_create_success") == 1
    assert refused(p2)

    # Another one arrives while running.
    write_doc(path, lds_doc("v2", [listener("one", p1, "a"), listener("two", p2, "b")]))
    wait_lds(r, "update_success", 2)
    assert who(HttpConn(p2).request()) == "b"
    assert lm(r, "listener_added") == 2 and lm(r, "listener_modified") == 0
    # "one" had the same bytes: its connection was not touched (no connection: close).
    resp = k1.request()
    assert who(resp) == "a" and resp.header("connection") != "close", resp

    # "one" is modified (another route): new connections get the new config, while the open
    # keep-alive connection is answered on the old one, then closed (its listener drains).
    write_doc(path, lds_doc("v3", [listener("one", p1, "b"), listener("two", p2, "b")]))
    wait_lds(r, "update_success", 3)
    assert lm(r, "listener_modified") == 1
    assert who(HttpConn(p1).request()) == "b"
    resp = k1.request()
    assert who(resp) == "a", resp
    assert resp.header("connection") == "close", resp
    assert k1.closed(2 * slow_factor())

    # "two" is removed: new connections are refused; an open keep-alive connection gets its
    # in-flight answer, with connection: close, and is closed.
    k2 = HttpConn(p2)
    assert who(k2.request()) == "b"
    k2.send(b"GET /slow HTTP/1.1\r\nhost: x\r\nx-upstream-delay-ms: 300\r\n\r\n")
    write_doc(path, lds_doc("v4", [listener("one", p1, "b")]))
    wait_lds(r, "update_success", 4)
    resp = k2.read_response()
    assert who(resp) == "b" and resp.header("connection") == "close", resp
    assert k2.closed(2 * slow_factor())
    # the workers close the sockets when they take the new set, after main counted the update
    wait_for(lambda: refused(p2), 5, "listener two's port closed")
    assert lm(r, "listener_removed") == 1 and lm(r, "total_listeners_active") == 1
    wait_for(lambda: lm(r, "total_listeners_draining") == 0, 5 * slow_factor(),
             "drained versions freed")
    assert who(HttpConn(p1).request()) == "b"

    # Admin: /listeners, /config_dump and the listener's own stats.
    text = r.admin("GET", "/listeners").text
    assert f"one::127.0.0.1:{p1}" in text and f"127.0.0.1:{p2}" not in text, text
    dump = json.loads(r.admin("GET", "/config_dump").text)
    ls = [c for c in dump["configs"] if c["@type"].endswith("ListenersConfigDump")][0]
    assert ls["version_info"] == "v4"
    dyn = ls["dynamic_listeners"]
    assert [d["name"] for d in dyn] == ["one"], dyn
    st = dyn[0]["active_state"]
    assert st["version_info"] == "v3" and st["listener"]["@type"] == LST_TYPE
    assert st["last_updated"].endswith("Z")
    s = stats(r, f"listener.127.0.0.1_{p1}.downstream_cx_total")
    assert s[f"listener.127.0.0.1_{p1}.downstream_cx_total"] >= 1, s
    assert stats(r, "http.dyn.downstream_rq_2xx")["http.dyn.downstream_rq_2xx"] >= 1


def test_lds_invalid_updates_rejected_with_field_path(ctx):
    a = ctx.start_upstream("a")
    p1, p2 = free_port(), free_port()
    r, path = start(ctx, lds_doc("v1", [listener("one", p1, "a")]), {"a": [a.port]})
    conn = HttpConn(p1)
    assert who(conn.request()) == "a"
    taken = socket.socket()
    taken.bind(("127.0.0.1", p2))  # a port in use by someone else (no SO_REUSEPORT)
    taken.listen(1)
    ctx.on_cleanup(taken.close)
    static_port = r.port()
    bad = [
        (lds_doc("x1", [listener("one", p1, "a", bogus=1)]), "resources[0].bogus: unknown field"),
        (lds_doc("x2", [listener("one", p1, "a"), listener("two", p2, "a")]),
         f"resources[1]: address: cannot bind 127.0.0.1:{p2}: Address already in use"),
        (lds_doc("x3", [listener("listener_0", free_port(), "a"), listener("one", p1, "a")]),
         "resources[0].name: 'listener_0' is a static listener"),
        (lds_doc("x4", [listener("one", p1, "a"), listener("one", free_port(), "a")]),
         "resources[1].name: duplicate listener name 'one'"),
        (lds_doc("x5", [listener("three", static_port, "a"), listener("one", p1, "a")]),
         f"resources[0].address: 127.0.0.1:{static_port} is already used by listener "
         "'listener_0'"),
        (lds_doc("x6", [listener("one", p1, "nope")]),
         "resources[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]."
         "routes[0].route.cluster: unknown cluster 'nope'"),
    ]
    for i, (doc, want) in enumerate(bad):
        write_doc(path, doc)
        wait_lds(r, "update_rejected", i + 1)
        r.wait_output(want, 5 * slow_factor())
        # Nothing changed (each bad resource is skipped and "one" is there unchanged, or is the
        # bad one: kept as it was): the same keep-alive connection still works, on the same
        # config.
        resp = conn.request()
        assert who(resp) == "a" and resp.header("connection") != "close", resp
    assert lm(r, "lds.update_success") == 1 and lm(r, "listener_create_failure") == 1
    assert lm(r, "total_listeners_active") == 1
    assert refused(free_port())


def test_lds_unrelated_change_under_load_fails_nothing(ctx):
    a = ctx.start_upstream("a", threads=2)
    p1 = free_port()
    r, path = start(ctx, lds_doc("v0", [listener("one", p1, "a")]), {"a": [a.port]},
                    concurrency=2)
    stop = threading.Event()
    failures, done = [], [0]

    def client():
        while not stop.is_set():
            try:
                with HttpConn(p1) as c:
                    for _ in range(20):
                        resp = c.request()
                        if resp.status != 200 or resp.header("connection") == "close":
                            failures.append(resp)
                        done[0] += 1
            except OSError as e:
                failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(1, 9):
            others = [listener("other", free_port(), "a", prefix=f"o{i}")] if i % 2 else []
            write_doc(path, lds_doc(f"v{i}", [listener("one", p1, "a")] + others))
            wait_lds(r, "update_success", i + 1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures[:3]
    assert done[0] > 0
    assert lm(r, "listener_modified") == 0 and lm(r, "listener_removed") == 4


def test_lds_modify_same_address_keeps_the_socket(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    p1 = free_port()
    r, path = start(ctx, lds_doc("v1", [listener("one", p1, "a")]),
                    {"a": [a.port], "b": [b.port]}, concurrency=2)
    assert who(HttpConn(p1).request()) == "a"
    # Connections made while the change goes through are never refused.
    stop = threading.Event()
    errors = []

    def connector():
        while not stop.is_set():
            try:
                with HttpConn(p1) as c:
                    c.request()
            except OSError as e:
                errors.append(e)

    t = threading.Thread(target=connector)
    t.start()
    try:
        for i in range(2, 8):
            write_doc(path, lds_doc(f"v{i}", [listener("one", p1, "b" if i % 2 == 0 else "a")]))
            wait_lds(r, "update_success", i)
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:3]
    assert who(HttpConn(p1).request()) == "a"


def test_lds_churn_50_updates_memory_flat(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    p1, p2 = free_port(), free_port()
    r, path = start(ctx, lds_doc("v0", [listener("one", p1, "a")]),
                    {"a": [a.port], "b": [b.port]}, concurrency=2)
    rss = []
    for i in range(1, 51):
        up = b if i % 2 else a
        ls = [listener("one", p1, up.upstream_name)]
        if i % 3:
            ls.append(listener("two", p2, "a"))
        write_doc(path, lds_doc(f"v{i}", ls))
        wait_lds(r, "update_success", i + 1)
        with HttpConn(p1) as c:
            assert who(c.request()) == up.upstream_name
        if i in (10, 50):
            rss.append(proc_rss_kb(r.pid))
    wait_for(lambda: lm(r, "total_listeners_draining") == 0, 5 * slow_factor(),
             "drained versions freed")
    r.stop(10 * slow_factor())
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 2048, rss


def test_lds_startup_needs_a_valid_file(ctx):
    a = ctx.start_upstream("a")
    d = ctx.tmp / "bad"
    d.mkdir()
    path = d / "lds.yaml"
    write_doc(path, lds_doc("v1", [listener("one", free_port(), "a", bogus=1)]))
    cfg = proxy_config({"a": [a.port]})
    cfg["dynamic_resources"] = {"lds_config": {"path": str(path)}}
    cfg_path = ctx.tmp / "boot.yaml"
    from lib import to_yaml
    cfg_path.write_text(to_yaml(cfg) + "\n")
    p = ctx.spawn("serve", [ctx.bin("remora"), "-c", cfg_path])
    assert p.wait() == 1
    assert "invalid configuration: dynamic_resources.lds_config: " in p.stderr, p.stderr
    assert "resources[0].bogus: unknown field" in p.stderr, p.stderr


# ---- over ADS (lds_config: {ads: {}}) ----

def ads_start(ctx, ads, clusters, wait_ready=True, fetch_timeout=None):
    from adsutil import ads_bootstrap
    d = ads_bootstrap(clusters, ads.port)
    lc = {"ads": {}, "resource_api_version": "V3"}
    if fetch_timeout is not None:
        lc["initial_fetch_timeout"] = fetch_timeout
    d["dynamic_resources"]["lds_config"] = lc
    # the static listener's routes come over ADS too: give it a table so startup can finish
    r = ctx.start_remora(d, wait_ready=False)
    if wait_ready:
        r.wait_ready(10 * slow_factor())
    return r


def ads_listener(name, port, cluster, prefix="dyn"):
    lst = listener(name, port, cluster, prefix)
    del lst["@type"]
    return lst


def test_lds_over_ads_added_modified_removed_nacked(ctx):
    from adsutil import LST_TYPE as ADS_LST, route_config, start_ads_server, to
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l1", [ads_listener("one", p1, "a")])
    r = ads_start(ctx, ads, {"a": [a.port], "b": [b.port]})
    # Startup waited for the listeners: the first request finds the listener there.
    k1 = HttpConn(p1)
    assert who(k1.request()) == "a"
    reqs = ads.requests()
    lreq = [q for q in reqs if q.get("type_url") == ADS_LST]
    assert lreq and not lreq[0].get("resource_names"), lreq  # a wildcard subscription
    ads.wait_request(lambda q: q.get("type_url") == ADS_LST and q.get("version_info") == "l1"
                     and not q.get("error_detail"), what="the LDS ACK")

    # Added and modified over the stream.
    ads.set_listeners("l2", [ads_listener("one", p1, "b"), ads_listener("two", p2, "a")])
    wait_lds(r, "update_success", 2)
    assert who(HttpConn(p1).request()) == "b"
    assert who(HttpConn(p2).request()) == "a"
    resp = k1.request()  # the old version's connection: answered on it, then closed
    assert who(resp) == "a" and resp.header("connection") == "close", resp

    # A bad one is NACKed with its path; the listeners in force keep serving.
    bad = ads_listener("two", p2, "a")
    bad["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0][
        "routes"][0]["route"]["cluster"] = "nope"
    ads.set_listeners("l3", [ads_listener("one", p1, "b"), bad])
    ads.wait_request(lambda q: q.get("type_url") == ADS_LST and q.get("error_detail"),
                     what="the LDS NACK")
    nack = [q for q in ads.requests() if q.get("type_url") == ADS_LST and q.get("error_detail")]
    msg = nack[-1]["error_detail"]["message"]
    assert msg.startswith("resources[1].filter_chains[0].filters[0].typed_config.route_config."
                          "virtual_hosts[0].routes[0].route.cluster: unknown cluster 'nope'"), msg
    assert nack[-1]["version_info"] == "l2", nack[-1]
    assert who(HttpConn(p2).request()) == "a"
    assert lm(r, "lds.update_rejected") == 1

    # Removed: refused.
    ads.set_listeners("l4", [ads_listener("one", p1, "b")])
    wait_lds(r, "update_success", 3)
    # the workers close the sockets when they take the new set, after main counted the update
    wait_for(lambda: refused(p2), 5, "listener two's port closed")
    assert who(HttpConn(p1).request()) == "b"
    assert lm(r, "listener_removed") == 1 and lm(r, "listener_modified") == 1


def test_lds_over_ads_startup_waits_for_listeners(ctx):
    from adsutil import route_config, start_ads_server, to
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    r = ads_start(ctx, ads, {"a": [a.port]}, wait_ready=False, fetch_timeout="30s")
    # No Listener response yet: still initialising.
    ads.wait_request(lambda q: q.get("type_url", "").endswith("Listener"),
                     what="the LDS request")
    assert r.admin("GET", "/ready").status == 503
    p1 = free_port()
    ads.set_listeners("l1", [ads_listener("one", p1, "a")])
    r.wait_ready(10 * slow_factor())
    assert who(HttpConn(p1).request()) == "a"


def v6_addr(port, compat):
    return {"socket_address": {"address": "::", "port_value": port, "ipv4_compat": compat}}


def test_lds_ipv6_listener_ipv4_compat(ctx):
    """A listener on [::] takes IPv4 connections only with socket_address.ipv4_compat (as
    Envoy: without it the socket is IPV6_V6ONLY), the bootstrap's and LDS's alike; a listener
    whose ipv4_compat changes on the same address gets a new socket with the new setting (App
    Mesh's listeners with an ipPreference: [::] with ipv4_compat)."""
    a = ctx.start_upstream("a")
    p_boot, p_v6, p_dual = free_port("::"), free_port("::"), free_port("::")
    d = ctx.tmp / "lds"
    d.mkdir(exist_ok=True)
    path = d / "lds.yaml"
    write_doc(path, lds_doc("v1", [listener("v6", p_v6, "a", address=v6_addr(p_v6, False)),
                                   listener("dual", p_dual, "a", address=v6_addr(p_dual, True))]))
    cfg = proxy_config({"a": [a.port]},
                       listener_extra={"address": v6_addr(p_boot, True)})
    cfg["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(path)},
                                               "resource_api_version": "V3"}}
    r = ctx.start_remora(cfg)
    for port in (p_boot, p_dual):
        assert who(HttpConn(port, "127.0.0.1").request()) == "a"
        assert who(HttpConn(port, "::1").request()) == "a"
    assert who(HttpConn(p_v6, "::1").request()) == "a"
    assert refused(p_v6)  # IPv6 only
    # v6 becomes dual-stack on the same address; dual becomes IPv6 only
    write_doc(path, lds_doc("v2", [listener("v6", p_v6, "a", address=v6_addr(p_v6, True)),
                                   listener("dual", p_dual, "a", address=v6_addr(p_dual, False))]))
    wait_lds(r, "update_success", 2)
    wait_for(lambda: not refused(p_v6) and refused(p_dual), 3 * slow_factor(),
             "the sockets follow ipv4_compat")
    assert who(HttpConn(p_v6, "127.0.0.1").request()) == "a"
    assert who(HttpConn(p_dual, "::1").request()) == "a"
