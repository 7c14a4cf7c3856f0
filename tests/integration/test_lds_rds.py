"""RDS inside listeners from LDS over ADS: a listener's HttpConnectionManager with
`rds: {config_source: {ads: {}}}`. The route names follow the listener set (a new RDS
DiscoveryRequest with the complete list when a listener adds or drops one); startup waits for
them; a route push moves the traffic; a modified listener keeps the routes its name has; a
removed one unsubscribes its name; a bad RouteConfiguration is NACKed with its path; stats
http.<prefix>.rds.<name>.* and /config_dump's dynamic_route_configs; RSS flat over 50 listener
updates."""

from adsutil import (LST_TYPE, RC_TYPE, ads_bootstrap, route_config, start_ads_server, to)
from lib import HttpConn, free_port, is_sanitized, proc_rss_kb, slow_factor, wait_for
from proxyutil import stats
from test_lds import HCM_TYPE, ROUTER_TYPE, lm, refused, wait_lds, who


def rds_listener(name, port, route_name, prefix="dyn", source=None):
    hcm = {"@type": HCM_TYPE, "stat_prefix": prefix, "codec_type": "AUTO",
           "rds": {"route_config_name": route_name,
                   "config_source": source or {"ads": {}, "resource_api_version": "V3"}},
           "http_filters": [{"name": "envoy.filters.http.router",
                             "typed_config": {"@type": ROUTER_TYPE}}]}
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def start(ctx, ads, clusters, wait_ready=True, fetch_timeout=None, concurrency=1):
    d = ads_bootstrap(clusters, ads.port)
    lc = {"ads": {}, "resource_api_version": "V3"}
    if fetch_timeout is not None:
        lc["initial_fetch_timeout"] = fetch_timeout
    d["dynamic_resources"]["lds_config"] = lc
    r = ctx.start_remora(d, wait_ready=False, concurrency=concurrency)
    if wait_ready:
        r.wait_ready(10 * slow_factor())
    return r


def rds_names(q):
    return sorted(q.get("resource_names") or [])


def last_rds_names(ads):
    reqs = [q for q in ads.requests() if q.get("type_url") == RC_TYPE]
    return rds_names(reqs[-1]) if reqs else None


def rds_stat(r, prefix, name, stat):
    key = f"http.{prefix}.rds.{name}.{stat}"
    return stats(r, f"http.{prefix}.rds").get(key, 0)


def test_lds_rds_over_ads_routes_follow_listeners(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")]), route_config("rl", [to("a")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l1", [rds_listener("one", p1, "rl")])
    r = start(ctx, ads, {"a": [a.port], "b": [b.port]}, concurrency=2)
    # Startup waited for the listener and its routes: the first request is routed.
    assert who(HttpConn(p1).request()) == "a"
    ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and rds_names(q) == ["r1", "rl"],
                     what="the RDS request naming the listener's route config")
    assert rds_stat(r, "dyn", "rl", "config_reload") == 1
    assert rds_stat(r, "dyn", "rl", "update_success") >= 1

    # A route push moves the traffic.
    ads.set_routes("v2", [route_config("r1", [to("a")]), route_config("rl", [to("b")])])
    wait_for(lambda: who(HttpConn(p1).request()) == "b", 5 * slow_factor(), "routes to b")
    assert rds_stat(r, "dyn", "rl", "config_reload") == 2
    dump = r.admin("GET", "/config_dump").json()
    dyn = [e for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")
           for e in c.get("dynamic_route_configs", [])]
    rl = [e for e in dyn if e["route_config"]["name"] == "rl"]
    assert len(rl) == 1 and rl[0]["version_info"] == "v2", dyn
    assert rl[0]["route_config"]["virtual_hosts"][0]["routes"][0]["route"]["cluster"] == "b"

    # Modified (another stat prefix) and a second listener naming the same routes: both
    # route on the table the name has, at once (the server does not resend it).
    ads.set_listeners("l2", [rds_listener("one", p1, "rl", prefix="dyn1"),
                             rds_listener("two", p2, "rl", prefix="dyn2")])
    wait_lds(r, "update_success", 2)
    assert who(HttpConn(p1).request()) == "b"
    assert who(HttpConn(p2).request()) == "b"
    assert lm(r, "listener_modified") == 1 and lm(r, "listener_added") >= 2

    # An invalid route config is NACKed with its path; the routes in force stay.
    bad = route_config("rl", [to("b", "/x"), to("nope")])
    bad["validate_clusters"] = True
    ads.set_routes("v3", [route_config("r1", [to("a")]), bad])
    nack = ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and q.get("error_detail"),
                            what="the RDS NACK")
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[1].virtual_hosts[0].routes[1].route.cluster"), msg
    assert "nope" in msg, msg
    assert nack["version_info"] == "v2", nack
    assert who(HttpConn(p1).request()) == "b"
    assert rds_stat(r, "dyn1", "rl", "update_rejected") == 1

    # Both removed: the name is unsubscribed (the bootstrap's r1 stays).
    ads.set_routes("v4", [route_config("r1", [to("a")]), route_config("rl", [to("a")])],
                   push=False)
    ads.set_listeners("l3", [])
    wait_lds(r, "update_success", 3)
    ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and rds_names(q) == ["r1"],
                     what="the RDS request without rl")
    wait_for(lambda: refused(p1) and refused(p2), 5, "both ports closed")

    # Re-added: subscribed again, and the server's current table serves it.
    ads.set_listeners("l4", [rds_listener("one", p1, "rl")])
    wait_lds(r, "update_success", 4)
    wait_for(lambda: last_rds_names(ads) == ["r1", "rl"], 5 * slow_factor(),
             "rl subscribed again")
    wait_for(lambda: who(HttpConn(p1).request()) == "a", 5 * slow_factor(), "routes to a")


def test_lds_rds_startup_waits_for_routes(ctx):
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    p1 = free_port()
    ads.set_listeners("l1", [rds_listener("one", p1, "rl")])
    r = start(ctx, ads, {"a": [a.port]}, wait_ready=False)
    ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and "rl" in rds_names(q),
                     what="the RDS request naming rl")
    wait_lds(r, "update_success", 1)
    # Listeners accepted, their routes not there yet: still initialising.
    assert r.admin("GET", "/ready").status == 503
    ads.set_routes("v2", [route_config("r1", [to("a")]), route_config("rl", [to("a")])])
    r.wait_ready(10 * slow_factor())
    assert who(HttpConn(p1).request()) == "a"


def test_lds_rds_from_a_file_rejected_with_path(ctx):
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    p1 = free_port()
    src = {"path_config_source": {"path": str(ctx.tmp / "rds.yaml")}}
    ads.set_listeners("l1", [rds_listener("one", p1, "rl", source=src)])
    r = start(ctx, ads, {"a": [a.port]})
    nack = ads.wait_request(lambda q: q.get("type_url") == LST_TYPE and q.get("error_detail"),
                            what="the LDS NACK")
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[0].filter_chains[0].filters[0].typed_config.rds."
                          "config_source: RDS from a file in a listener from LDS"), msg
    assert lm(r, "lds.update_rejected") == 1


def test_lds_rds_churn_50_updates_memory_flat(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_routes("v0", [route_config("r1", [to("a")]), route_config("ra", [to("a")]),
                          route_config("rb", [to("b")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l0", [rds_listener("one", p1, "ra")])
    r = start(ctx, ads, {"a": [a.port], "b": [b.port]}, concurrency=2)
    rss = []
    for i in range(1, 51):
        up = "b" if i % 2 else "a"
        ls = [rds_listener("one", p1, "r" + up, prefix=f"p{i % 4}")]
        if i % 3:
            ls.append(rds_listener("two", p2, "ra"))
        ads.set_listeners(f"l{i}", ls)
        wait_lds(r, "update_success", i + 1)
        wait_for(lambda: who(HttpConn(p1).request()) == up, 5 * slow_factor(),
                 f"update {i} routes to {up}")
        if i in (10, 50):
            rss.append(proc_rss_kb(r.pid))
    wait_for(lambda: lm(r, "total_listeners_draining") == 0, 5 * slow_factor(),
             "drained versions freed")
    r.stop(10 * slow_factor())
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 2048, rss
