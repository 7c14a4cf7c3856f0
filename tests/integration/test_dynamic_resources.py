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
        (cds_doc("x3", [cluster("ok", [b.port]), cluster("", [b.port])]),
         "resources[1].name: required"),
        (cds_doc("x4", [cluster("dyn", [b.port]), cluster("dyn", [b.port])]),
         "resources[1].name: duplicate cluster name 'dyn'"),
        (cds_doc("x5", [cluster("s", [b.port])]),
         "resources[0].name: 's' is a static cluster (bootstrap): CDS cannot replace it"),
        (cds_doc("x6", [{"@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
                         "name": "rc"}]),
         "resources[0]: type 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration' "
         "is not type.googleapis.com/envoy.config.cluster.v3.Cluster"),
        (cds_doc("x7", [cluster("dyn", [b.port], type="ORIGINAL_DST",
                                lb_policy="CLUSTER_PROVIDED")]),
         "resources[0].type: ORIGINAL_DST from CDS is not supported by remora yet"),
    ]
    for i, (doc, want) in enumerate(bad, 1):
        write_doc(cds_path, doc)
        wait_cds(r, "update_rejected", i)
        r.wait_output(want)
        assert str(cds_path) in r.stderr
        assert who(conn.request()) == "b"  # the clusters in force still serve
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
    keep = cluster("keep", [k1.port, k2.port], outlier_detection=od)

    def doc(i):
        # "other" changes at every update (its connect timeout), "keep" never does
        return cds_doc(f"v{i}", [keep, cluster("other", [o1.port],
                                               connect_timeout=f"{i + 1}s")])

    r, cds_path, _ = start(ctx, doc(0), [to("other", "/other"), to("keep", "/")])
    conn = HttpConn(r.port())
    # Eject k2 (two 5xx in a row from it), then k1 takes everything.
    hdr = {"x-upstream-status": "503", "x-upstream-only": "k2"}
    for _ in range(8):
        conn.request("GET", "/", headers=hdr)
        if stats(r, "ejections_active").get("cluster.keep.outlier_detection.ejections_active"):
            break
    assert stats(r, "ejections_active")["cluster.keep.outlier_detection.ejections_active"] == 1
    assert all(who(conn.request()) == "k1" for _ in range(5))
    k1_conns = k1.stats()["connections"]
    assert k1_conns == 1

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

    # Control: changing keep itself starts it fresh (as Envoy): no ejection, a new pool.
    before = k1.stats()["connections"]
    write_doc(cds_path, cds_doc("v9", [cluster("keep", [k1.port, k2.port], outlier_detection=od,
                                               connect_timeout="9s")]))
    wait_cds(r, "update_success", 7)
    assert "/failed_outlier_check" not in r.admin("GET", "/clusters").text
    got = {who(conn.request()) for _ in range(6)}
    assert got == {"k1", "k2"}, got
    assert k1.stats()["connections"] == before + 1


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
    r, cds_path, _ = start(ctx, cds_doc("v0", [cluster("dyn", [b.port])]), [to("dyn")],
                           concurrency=2)
    conn = HttpConn(r.port())
    rss = []
    for i in range(1, 51):
        up = c2 if i % 2 else b
        write_doc(cds_path, cds_doc(f"v{i}", [cluster("dyn", [up.port]),
                                              cluster(f"extra{i % 3}", [up.port])]))
        wait_cds(r, "update_success", i + 1)
        assert who(conn.request()) == up.upstream_name
        if i in (10, 50):
            rss.append(proc_rss_kb(r.pid))
    # Every retired cluster was freed by the time remora exits (the workers tore their state
    # down; cds.c says so when one is still held).
    r.stop(10 * slow_factor())
    assert "not freed" not in r.stderr and "still referenced" not in r.stderr, r.stderr
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 2048, rss
