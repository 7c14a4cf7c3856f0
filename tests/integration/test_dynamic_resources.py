"""Clusters that change while remora runs (CDS from a file: dynamic_resources.cds_config):
a route to a cluster that arrives later answers 503 NC, then 200; endpoints change; removal
brings NC back; bad updates are rejected with their field path and change nothing; an update
of another cluster keeps an unchanged cluster's pools and outlier state, with no failed request
under load; /config_dump and /clusters show the dynamic clusters; memory stays flat over 50
updates (and the ASan run checks leaks at exit)."""

import json
import threading

from lib import HttpConn, is_sanitized, proc_rss_kb, slow_factor, to_yaml, wait_for
from proxyutil import proxy_config, stats
from test_reload import move_into_place, rds_block, rds_doc, to, write_doc

CL_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def cluster(name, ports, **extra):
    if extra.get("type") == "ORIGINAL_DST":
        c = {"@type": CL_TYPE, "name": name, "connect_timeout": "1s"}
        c.update(extra)
        return c
    c = {"@type": CL_TYPE, "name": name, "type": "STATIC", "connect_timeout": "1s",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": p}}}}
             for p in ports]}]}}
    c.update(extra)
    return c


def cds_doc(version, clusters):
    return {"version_info": version, "resources": clusters}


def start(ctx, cds, routes, concurrency=1, static=None):
    """remora with static clusters ``static`` ({name: [port]}), routes from an RDS file and
    clusters from a CDS file (``cds``: the first document). Returns (remora, cds path, rds
    path)."""
    d = ctx.tmp / "dyn"
    d.mkdir(exist_ok=True)
    cds_path, rds_path = d / "cds.yaml", d / "rds.yaml"
    write_doc(cds_path, cds)
    write_doc(rds_path, rds_doc("r1", routes))
    cfg = proxy_config(static or {"s": [1]})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    hcm["rds"] = rds_block(rds_path)
    cfg["dynamic_resources"] = {"cds_config": {"path_config_source": {"path": str(cds_path)},
                                               "resource_api_version": "V3"}}
    r = ctx.start_remora(cfg, concurrency=concurrency)
    return r, cds_path, rds_path


def cm(r, name):
    return stats(r, "cluster_manager").get("cluster_manager." + name, 0)


def wait_cds(r, name, want, timeout=5.0):
    wait_for(lambda: cm(r, "cds." + name) >= want, timeout * slow_factor(),
             f"cluster_manager.cds.{name} >= {want}")


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def test_cds_cluster_arrives_changes_and_goes(ctx):
    b = ctx.start_upstream("b")
    c2 = ctx.start_upstream("c")
    r, cds_path, _ = start(ctx, cds_doc("v1", []), [to("dyn")])
    conn = HttpConn(r.port())
    # No such cluster yet: Envoy's 503 with flag NC (RDS does not validate clusters).
    resp = conn.request()
    assert resp.status == 503, resp
    assert stats(r, "no_cluster")["http.ingress_http.no_cluster"] == 1
    assert cm(r, "cds.update_success") == 1 and cm(r, "active_clusters") == 1
    assert "cluster.dyn." not in r.admin("GET", "/stats").text

    # It arrives: the same keep-alive connection reaches it.
    write_doc(cds_path, cds_doc("v2", [cluster("dyn", [b.port])]))
    wait_cds(r, "update_success", 2)
    assert who(conn.request()) == "b"
    assert cm(r, "cluster_added") == 2 and cm(r, "active_clusters") == 2  # s, then dyn
    s = stats(r, "cluster.dyn.upstream_rq_total")
    assert s["cluster.dyn.upstream_rq_total"] == 1, s

    # Its endpoints change: traffic moves.
    write_doc(cds_path, cds_doc("v3", [cluster("dyn", [c2.port])]))
    wait_cds(r, "update_success", 3)
    assert who(conn.request()) == "c"
    assert cm(r, "cluster_modified") == 1

    # It goes: NC again, and its stats are gone.
    write_doc(cds_path, cds_doc("v4", []))
    wait_cds(r, "update_success", 4)
    resp = conn.request()
    assert resp.status == 503, resp
    assert cm(r, "cluster_removed") == 1 and cm(r, "active_clusters") == 1
    wait_for(lambda: "cluster.dyn." not in r.admin("GET", "/stats").text, 5 * slow_factor(),
             "cluster.dyn.* gone")
    assert cm(r, "cds.update_attempt") == 4 and cm(r, "cds.update_rejected") == 0


def test_cds_invalid_updates_rejected_with_field_path(ctx):
    b = ctx.start_upstream("b")
    r, cds_path, _ = start(ctx, cds_doc("v1", [cluster("dyn", [b.port])]), [to("dyn")],
                           static={"s": [b.port]})
    conn = HttpConn(r.port())
    assert who(conn.request()) == "b"
    bad = [
        (cds_doc("x1", [cluster("dyn", [b.port], bogus=1)]), "resources[0].bogus: unknown field"),
        (cds_doc("x2", [cluster("dyn", [b.port], lb_policy="LOAD_BALANCING_POLICY_CONFIG")]),
         "resources[0].lb_policy"),
        (cds_doc("x3", [cluster("dyn", [b.port]), cluster("", [b.port])]),
         "resources[1].name: required"),
        (cds_doc("x4", [cluster("dyn", [b.port]), cluster("dyn", [b.port])]),
         "resources[1].name: duplicate cluster name 'dyn'"),
        (cds_doc("x5", [cluster("s", [b.port]), cluster("dyn", [b.port])]),
         "resources[0].name: 's' is a static cluster (bootstrap): CDS cannot replace it"),
        (cds_doc("x6", [{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                         "name": "rc"}, cluster("dyn", [b.port])]),
         "resources[0]: type 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration' "
         "is not type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        (cds_doc("x7", [cluster("dyn", [b.port], type="ORIGINAL_DST")]),
         "resources[0].lb_policy: ROUND_ROBIN is not valid for cluster type ORIGINAL_DST"),
    ]
    for i, (doc, want) in enumerate(bad, 1):
        write_doc(cds_path, doc)
        wait_cds(r, "update_rejected", i)
        r.wait_output(want)
        assert str(cds_path) in r.stderr
        # the clusters in force still serve (a bad resource is skipped, the rest is unchanged)
        assert who(conn.request()) == "b"
    move_into_place(cds_path, "resources: [ {\n")
    wait_cds(r, "update_rejected", len(bad) + 1)
    r.wait_output("YAML")
    assert cm(r, "cds.update_success") == 1 and cm(r, "cluster_modified") == 0
    assert cm(r, "active_clusters") == 2
    assert who(conn.request()) == "b"


def test_cds_unrelated_change_under_load_keeps_pool_and_outlier_state(ctx):
    k1 = ctx.start_upstream("k1")
    k2 = ctx.start_upstream("k2")
    o1 = ctx.start_upstream("o1")
    od = {"consecutive_5xx": 2, "interval": "60s", "base_ejection_time": "300s",
          "max_ejection_percent": 100}
    # checked once at start, then every 60 s: a checker that started over would check again
    hc = [{"timeout": "1s", "interval": "60s", "no_traffic_interval": "60s",
           "unhealthy_threshold": 1, "healthy_threshold": 1,
           "http_health_check": {"path": "/hc"}}]
    keep = cluster("keep", [k1.port, k2.port], outlier_detection=od, health_checks=hc)

    def doc(i):
        # "other" changes at every update (its connect timeout), "keep" never does
        return cds_doc(f"v{i}", [keep, cluster("other", [o1.port],
                                               connect_timeout=f"{i + 1}s")])

    r, cds_path, _ = start(ctx, doc(0), [to("other", "/other"), to("keep", "/")])
    conn = HttpConn(r.port())
    wait_for(lambda: stats(r, "health_check.success").get(
        "cluster.keep.health_check.success") == 2, 5 * slow_factor(), "first checks")
    # Eject k2 (two 5xx in a row from it), then k1 takes everything.
    hdr = {"x-upstream-status": "503", "x-upstream-only": "k2"}
    for _ in range(8):
        conn.request("GET", "/", headers=hdr)
        if stats(r, "ejections_active").get("cluster.keep.outlier_detection.ejections_active"):
            break
    assert stats(r, "ejections_active")["cluster.keep.outlier_detection.ejections_active"] == 1
    assert all(who(conn.request()) == "k1" for _ in range(5))
    k1_conns = k1.stats()["connections"]
    assert k1_conns == 2  # the pool's and the health checker's

    # Updates of "other" while requests flow on keep-alive connections.
    stop = threading.Event()
    failures, done = [], [0]

    def load():
        c = HttpConn(r.port())
        while not stop.is_set():
            resp = c.request("GET", "/other" if done[0] % 2 else "/")
            if resp.status != 200:
                failures.append(resp.status)
            done[0] += 1

    t = threading.Thread(target=load)
    t.start()
    try:
        for i in range(1, 6):
            write_doc(cds_path, doc(i))
            wait_cds(r, "update_success", i + 1)
            mark = done[0]
            wait_for(lambda: done[0] >= mark + 4, 5 * slow_factor(), "requests after the update")
    finally:
        stop.set()
        t.join()
    assert not failures, failures
    assert cm(r, "cluster_modified") == 5
    # keep is the same cluster: its ejection holds and its pool was not rebuilt (the first
    # client's connection still goes over the one upstream connection it had).
    assert stats(r, "ejections_active")["cluster.keep.outlier_detection.ejections_active"] == 1
    assert "keep::127.0.0.1:%d::health_flags::/failed_outlier_check" % k2.port in \
        r.admin("GET", "/clusters").text
    assert all(who(conn.request()) == "k1" for _ in range(3))
    # (the load thread's own connection may have opened a second one)
    assert k1.stats()["connections"] <= k1_conns + 1
    # and its health checker is the same: no endpoint was checked again
    assert stats(r, "health_check.attempt")["cluster.keep.health_check.attempt"] == 2

    # Control: changing keep itself starts it fresh (as Envoy): no ejection, a new pool.
    before = k1.stats()["connections"]
    write_doc(cds_path, cds_doc("v9", [cluster("keep", [k1.port, k2.port], outlier_detection=od,
                                               connect_timeout="9s")]))
    wait_cds(r, "update_success", 7)
    assert "/failed_outlier_check" not in r.admin("GET", "/clusters").text
    got = {who(conn.request()) for _ in range(6)}
    assert got == {"k1", "k2"}, got
    assert k1.stats()["connections"] >= before + 1  # a new pool (and a new checker)


def test_cds_config_dump_and_clusters(ctx):
    b = ctx.start_upstream("b")
    r, cds_path, _ = start(ctx, cds_doc("v7", [cluster("dyn", [b.port])]), [to("dyn")])
    assert who(HttpConn(r.port()).request()) == "b"
    dump = r.admin("GET", "/config_dump").json()
    cl = [c for c in dump["configs"]
          if c["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"][0]
    assert cl["version_info"] == "v7"
    assert [c["cluster"]["name"] for c in cl["static_clusters"]] == ["s"]
    dyn = cl["dynamic_active_clusters"]
    assert len(dyn) == 1 and dyn[0]["version_info"] == "v7", dyn
    assert dyn[0]["cluster"]["@type"] == CL_TYPE and dyn[0]["cluster"]["name"] == "dyn"
    assert dyn[0]["last_updated"].endswith("Z")
    text = r.admin("GET", "/clusters").text
    assert "dyn::added_via_api::true" in text and "s::added_via_api::false" in text
    assert f"dyn::127.0.0.1:{b.port}::rq_success::1" in text, text
    js = json.loads(r.admin("GET", "/clusters?format=json").text)
    names = {c["name"]: c.get("added_via_api", False) for c in js["cluster_statuses"]}
    assert names == {"s": False, "dyn": True}, names


def test_cds_startup_needs_a_valid_file(ctx):
    b = ctx.start_upstream("b")
    for i, text in enumerate([None, to_yaml(cds_doc("v1", [cluster("dyn", [b.port],
                                                                   bogus=1)]))]):
        d = ctx.tmp / f"s{i}"
        d.mkdir()
        cds_path = d / "cds.yaml"
        if text is not None:
            cds_path.write_text(text + "\n")
        rds_path = d / "rds.yaml"
        write_doc(rds_path, rds_doc("r1", [to("dyn")]))
        cfg = proxy_config({"s": [b.port]})
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]
        del hcm["route_config"]
        hcm["rds"] = rds_block(rds_path)
        cfg["dynamic_resources"] = {"cds_config": {"path": str(cds_path)}}
        cfg_path = ctx.tmp / f"boot{i}.yaml"
        cfg_path.write_text(to_yaml(cfg) + "\n")
        p = ctx.spawn("serve", [ctx.bin("remora"), "-c", cfg_path])
        assert p.wait() == 1
        want = "cannot read" if text is None else "resources[0].bogus: unknown field"
        assert "invalid configuration: dynamic_resources.cds_config: " in p.stderr, p.stderr
        assert want in p.stderr, p.stderr


def test_cds_churn_50_updates_memory_flat(ctx):
    b = ctx.start_upstream("b")
    c2 = ctx.start_upstream("c")
    eds_path = ctx.tmp / "eds.yaml"
    write_doc(eds_path, cla_doc("e0", "ed", [b.port]))
    r, cds_path, _ = start(ctx, cds_doc("v0", [cluster("dyn", [b.port]),
                                               eds_cluster("ed", eds_path)]),
                           [to("ed", "/ed"), to("dyn")], concurrency=2)
    conn = HttpConn(r.port())
    rss = []
    for i in range(1, 51):
        up = c2 if i % 2 else b
        write_doc(cds_path, cds_doc(f"v{i}", [cluster("dyn", [up.port]),
                                              cluster(f"extra{i % 3}", [up.port]),
                                              eds_cluster("ed", eds_path)]))
        wait_cds(r, "update_success", i + 1)
        assert who(conn.request()) == up.upstream_name
        write_doc(eds_path, cla_doc(f"e{i}", "ed", [up.port]))  # a new version of "ed" too
        wait_eds(r, "ed", "update_success", i + 1)
        assert who(conn.request("GET", "/ed")) == up.upstream_name
        if i in (10, 50):
            rss.append(proc_rss_kb(r.pid))
    # Every retired cluster was freed by the time remora exits (the workers tore their state
    # down; cds.c says so when one is still held).
    r.stop(10 * slow_factor())
    assert "not freed" not in r.stderr and "still referenced" not in r.stderr, r.stderr
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 2048, rss


# ---- EDS ----

CLA_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def eds_cluster(name, eds_path, service=None, **extra):
    c = {"@type": CL_TYPE, "name": name, "type": "EDS", "connect_timeout": "1s",
         "eds_cluster_config": {"eds_config": {"path_config_source": {"path": str(eds_path)},
                                               "resource_api_version": "V3"}}}
    if service is not None:
        c["eds_cluster_config"]["service_name"] = service
    c.update(extra)
    return c


def cla_doc(version, name, ports):
    return {"version_info": version, "resources": [{
        "@type": CLA_TYPE, "cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": p}}}}
            for p in ports]}]}]}


def eds_stat(r, cluster, name):
    return stats(r, f"cluster.{cluster}.").get(f"cluster.{cluster}.{name}", 0)


def wait_eds(r, cluster, name, want, timeout=5.0):
    wait_for(lambda: eds_stat(r, cluster, name) >= want, timeout * slow_factor(),
             f"cluster.{cluster}.{name} >= {want}")


def spread(conn, n=12):
    return {who(conn.request()) for _ in range(n)}


def test_eds_endpoints_follow_the_file_for_a_cds_cluster(ctx):
    e1, e2, e3 = (ctx.start_upstream(n) for n in ("e1", "e2", "e3"))
    eds_path = ctx.tmp / "eds.yaml"
    write_doc(eds_path, cla_doc("e1", "svc", [e1.port]))
    # the EDS cluster arrives by CDS; its endpoints come with it
    r, cds_path, _ = start(ctx, cds_doc("v1", []), [to("ed")])
    conn = HttpConn(r.port())
    assert conn.request().status == 503
    write_doc(cds_path, cds_doc("v2", [eds_cluster("ed", eds_path, service="svc")]))
    wait_cds(r, "update_success", 2)
    assert spread(conn) == {"e1"}
    assert eds_stat(r, "ed", "update_success") == 1
    assert eds_stat(r, "ed", "membership_total") == 1

    # hosts added: traffic follows
    write_doc(eds_path, cla_doc("e2", "svc", [e1.port, e2.port, e3.port]))
    wait_eds(r, "ed", "update_success", 2)
    assert spread(conn) == {"e1", "e2", "e3"}
    assert eds_stat(r, "ed", "membership_total") == 3
    assert eds_stat(r, "ed", "membership_change") == 2
    # hosts removed
    write_doc(eds_path, cla_doc("e3", "svc", [e3.port]))
    wait_eds(r, "ed", "update_success", 3)
    assert spread(conn) == {"e3"}
    # the same bytes again: no rebuild
    write_doc(eds_path, cla_doc("e3", "svc", [e3.port]))
    wait_eds(r, "ed", "update_no_rebuild", 1)
    # an empty response keeps the endpoints (Envoy's update_empty)
    write_doc(eds_path, {"version_info": "e4", "resources": []})
    wait_eds(r, "ed", "update_empty", 1)
    assert spread(conn, 4) == {"e3"}
    # cluster stats count on across versions
    assert eds_stat(r, "ed", "upstream_rq_2xx") >= 12 + 12 + 12 + 4
    assert eds_stat(r, "ed", "update_attempt") == 5 and eds_stat(r, "ed", "update_rejected") == 0
    assert cm(r, "cluster_modified") == 0  # EDS changes are not CDS modifications
    # A CDS change of the cluster on the same EDS source keeps its endpoints (no re-read).
    write_doc(cds_path, cds_doc("v3", [eds_cluster("ed", eds_path, service="svc",
                                                   connect_timeout="2s")]))
    wait_cds(r, "update_success", 3)
    assert cm(r, "cluster_modified") == 1
    assert spread(conn, 4) == {"e3"}
    assert eds_stat(r, "ed", "update_attempt") == 5


def test_eds_invalid_updates_rejected_with_field_path(ctx):
    e1 = ctx.start_upstream("e1")
    eds_path = ctx.tmp / "eds.yaml"
    write_doc(eds_path, cla_doc("e1", "ed", [e1.port]))
    r, _, _ = start(ctx, cds_doc("v1", [eds_cluster("ed", eds_path)]), [to("ed")])
    conn = HttpConn(r.port())
    assert spread(conn, 3) == {"e1"}
    two = cla_doc("x", "ed", [e1.port])
    two["resources"] *= 2
    bad = [
        (cla_doc("x1", "other", [e1.port]),
         "resources[0].cluster_name: unexpected EDS cluster (expecting 'ed'): 'other'"),
        (two, "resources: unexpected EDS resource length: 2 (expected 1)"),
        (cla_doc("x3", "ed", [0]), "resources[0].endpoints[0].lb_endpoints[0].endpoint.address"),
        ({"version_info": "x4", "resources": [{"@type": CLA_TYPE, "cluster_name": "ed",
                                               "bogus": 1}]},
         "resources[0].bogus: unknown field"),
    ]
    for i, (doc, want) in enumerate(bad, 1):
        write_doc(eds_path, doc)
        wait_eds(r, "ed", "update_rejected", i)
        r.wait_output(want)
        assert spread(conn, 3) == {"e1"}
    assert eds_stat(r, "ed", "update_success") == 1


def test_eds_update_keeps_health_check_and_outlier_state_of_endpoints_that_stay(ctx):
    e1, e2, e3 = (ctx.start_upstream(n) for n in ("e1", "e2", "e3"))
    eds_path = ctx.tmp / "eds.yaml"
    write_doc(eds_path, cla_doc("e1", "ed", [e1.port, e2.port]))
    # e2 fails its health checks; checks every 60 s, so a checker that started over would check
    # every endpoint again at once
    hc = [{"timeout": "1s", "interval": "60s", "no_traffic_interval": "60s",
           "unhealthy_threshold": 1, "healthy_threshold": 1,
           "http_health_check": {"path": "/hc", "request_headers_to_add": [
               {"header": {"key": "x-upstream-status", "value": "503"}},
               {"header": {"key": "x-upstream-only", "value": "e2"}}]}}]
    od = {"consecutive_5xx": 2, "interval": "60s", "base_ejection_time": "300s",
          "max_ejection_percent": 100}
    # (no panic routing: with one healthy host of three, Envoy's default would use them all)
    r, _, _ = start(ctx, cds_doc("v1", [eds_cluster(
        "ed", eds_path, health_checks=hc, outlier_detection=od,
        common_lb_config={"healthy_panic_threshold": {"value": 0}})]), [to("ed")])
    conn = HttpConn(r.port())
    wait_for(lambda: eds_stat(r, "ed", "health_check.attempt") == 2, 5 * slow_factor(),
             "first checks")
    wait_for(lambda: spread(conn, 4) == {"e1"}, 5 * slow_factor(), "e2 out")
    # e3 joins; then eject e1 by outlier detection (e3 takes over), and move the set again
    write_doc(eds_path, cla_doc("e2", "ed", [e1.port, e2.port, e3.port]))
    wait_eds(r, "ed", "update_success", 2)
    text = r.admin("GET", "/clusters").text
    assert f"ed::127.0.0.1:{e2.port}::health_flags::/failed_active_hc" in text, text
    wait_for(lambda: spread(conn, 6) == {"e1", "e3"}, 5 * slow_factor(), "e1 and e3 serve")
    # e3 had its first check; e1 and e2 were not checked again (a new checker checks all at once)
    assert eds_stat(r, "ed", "health_check.attempt") == 3
    hdr = {"x-upstream-status": "503", "x-upstream-only": "e1"}
    for _ in range(20):
        conn.request("GET", "/", headers=hdr)
        if eds_stat(r, "ed", "outlier_detection.ejections_active"):
            break
    assert eds_stat(r, "ed", "outlier_detection.ejections_active") == 1
    assert spread(conn, 6) == {"e3"}
    write_doc(eds_path, cla_doc("e3", "ed", [e3.port, e1.port, e2.port]))  # same hosts, reordered
    wait_eds(r, "ed", "update_success", 3)
    text = r.admin("GET", "/clusters").text
    assert f"ed::127.0.0.1:{e1.port}::health_flags::/failed_outlier_check" in text, text
    assert f"ed::127.0.0.1:{e2.port}::health_flags::/failed_active_hc" in text, text
    assert eds_stat(r, "ed", "outlier_detection.ejections_active") == 1
    assert spread(conn, 6) == {"e3"}
    assert eds_stat(r, "ed", "health_check.attempt") == 3


def test_cds_rds_validate_clusters(ctx):
    """An RDS table with validate_clusters: true sees the CDS clusters at startup; a CDS update
    that removes one of them is not rejected for it (Envoy validates when RDS delivers): NC."""
    b = ctx.start_upstream("b")
    d = ctx.tmp / "v"
    d.mkdir()
    cds_path, rds_path = d / "cds.yaml", d / "rds.yaml"
    write_doc(cds_path, cds_doc("v1", [cluster("dyn", [b.port])]))

    def boot(routes):
        write_doc(rds_path, rds_doc("r1", routes, rc_extra={"validate_clusters": True}))
        cfg = proxy_config({"s": [b.port]})
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
            "typed_config"]
        del hcm["route_config"]
        hcm["rds"] = rds_block(rds_path)
        cfg["dynamic_resources"] = {"cds_config": {"path": str(cds_path)}}
        return cfg

    cfg_path = ctx.tmp / "bad.yaml"
    cfg_path.write_text(to_yaml(boot([to("nope")])) + "\n")
    p = ctx.spawn("serve", [ctx.bin("remora"), "-c", cfg_path])
    assert p.wait() == 1
    assert "unknown cluster 'nope'" in p.stderr, p.stderr

    r = ctx.start_remora(boot([to("dyn")]))
    conn = HttpConn(r.port())
    assert who(conn.request()) == "b"
    write_doc(cds_path, cds_doc("v2", []))
    wait_cds(r, "update_success", 2)
    assert conn.request().status == 503
    assert cm(r, "cds.update_rejected") == 0
    # and an RDS update naming a cluster that is not there is rejected, as it asks
    write_doc(rds_path, rds_doc("r2", [to("dyn", "/x")], rc_extra={"validate_clusters": True}))
    wait_for(lambda: stats(r, "rds").get("http.ingress_http.rds.rc.update_rejected") == 1,
             5 * slow_factor(), "rds update_rejected")


def test_cds_startup_waits_for_first_health_checks(ctx):
    """A health-checked cluster from the CDS file at startup is initialized (its first
    health-check round done) before /ready answers 200, as Envoy's init manager waits for the
    clusters CDS brought: the first request after ready is routed, not 503 NC (warming). The
    check's answer is held 700 ms so that a startup that did not wait would be seen."""
    a = ctx.start_upstream("a")
    hc = [{"timeout": "5s", "interval": "60s", "no_traffic_interval": "60s",
           "unhealthy_threshold": 1, "healthy_threshold": 1,
           "http_health_check": {"path": "/hc", "request_headers_to_add": [
               {"header": {"key": "x-upstream-delay-ms", "value": "700"}}]}}]
    r, _, _ = start(ctx, cds_doc("v1", [cluster("hc", [a.port], health_checks=hc)]),
                    [to("hc", "/")])
    assert stats(r, "health_check").get("cluster.hc.health_check.success") == 1
    assert cm(r, "warming_clusters") == 0
    assert who(HttpConn(r.port()).request()) == "a"
    assert "startup waits for 1 warming cluster(s)" in r.stderr
