"""Cluster warming for clusters CDS adds or modifies at run time (proxy/cds.h: warming), over ADS
against tests/grpc/ads_server.js, as Envoy's cluster manager: an EDS cluster added without its
ClusterLoadAssignment is warming (cluster_manager.warming_clusters, /config_dump's
dynamic_warming_clusters) and its route answers as for an unknown cluster (503 NC) until the
assignment comes; a modified EDS cluster re-subscribes and the old version keeps serving its
endpoints (no 503) until the new assignment; initial_fetch_timeout ends warming; a warming
cluster can be removed; a health-checked cluster warms until its first health-check round; a
listener added over LDS whose routes name a warming cluster is not held back by it (Envoy's
listener warming waits for its routes only)."""

import socket
import time

from adsutil import (CL_TYPE, CLA_TYPE, LST_TYPE, ads_bootstrap, assignment, eds_cluster,
                     route_config, start_ads_server, static_cluster, to)
from healthutil import http_hc
from test_lds_rds import rds_listener
from lib import HttpConn, free_port, wait_for
from proxyutil import stats

CDS_ADS = {"ads": {}, "resource_api_version": "V3"}


def get(r, path="/"):
    return HttpConn(r.port()).request("GET", path)


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def cm(r, name):
    return stats(r, "cluster_manager").get("cluster_manager." + name, 0)


def acked(url, version, nonce):
    return lambda q: (q.get("type_url") == url and q.get("version_info") == version
                      and q.get("response_nonce") == nonce and not q.get("error_detail"))


def clusters_dump(r):
    dump = r.admin("GET", "/config_dump").json()
    for c in dump["configs"]:
        if c["@type"].endswith("ClustersConfigDump"):
            return c
    raise AssertionError("no ClustersConfigDump")


def names(entries):
    return sorted(e["cluster"]["name"] for e in entries)


def start(ctx, ads):
    """Upstreams a, b; clusters a (STATIC) and b (EDS svc-b -> b); routes /a, /d, / -> b."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads.set_clusters("c1", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b")])
    ads.set_endpoints("e1", [assignment("svc-b", [b.port])])
    ads.set_routes("r1", [route_config("r1", [to("a", "/a"), to("d", "/d"), to("b", "/")])])
    r = ctx.start_remora(ads_bootstrap({}, ads.port, cds=CDS_ADS), log_level="debug")
    assert who(get(r)) == "b"
    return a, b, r


def test_cds_warming_added_eds_cluster_unknown_until_its_assignment(ctx):
    ads = start_ads_server(ctx)
    a, b, r = start(ctx, ads)
    active = cm(r, "active_clusters")
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                  eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    assert cm(r, "warming_clusters") == 1
    assert cm(r, "active_clusters") == active
    assert cm(r, "cluster_added") >= 1
    dump = clusters_dump(r)
    assert names(dump.get("dynamic_warming_clusters", [])) == ["d"], dump
    assert "d" not in names(dump["dynamic_active_clusters"])
    # not visible to routing: answered as for an unknown cluster (no cluster.d.* yet)
    resp = get(r, "/d")
    assert resp.status == 503, resp
    assert stats(r, "no_cluster")["http.ingress_http.no_cluster"] >= 1
    assert stats(r, "cluster.d.").get("cluster.d.upstream_rq_total", 0) == 0
    assert who(get(r)) == "b"  # the others serve on

    ads.set_endpoints("e2", [assignment("svc-b", [b.port]), assignment("d", [a.port])])
    wait_for(lambda: cm(r, "warming_clusters") == 0, 5, "d active")
    assert who(get(r, "/d")) == "a"
    assert cm(r, "active_clusters") == active + 1
    dump = clusters_dump(r)
    assert "dynamic_warming_clusters" not in dump, dump
    assert "d" in names(dump["dynamic_active_clusters"])


def test_cds_warming_modified_eds_cluster_old_version_serves_until_assignment(ctx):
    ads = start_ads_server(ctx)
    a, b, r = start(ctx, ads)
    c = ctx.start_upstream("c")
    n_eds = len([q for q in ads.requests() if q.get("type_url") == CLA_TYPE])
    modified = dict(eds_cluster("b", "svc-b"), connect_timeout="2s")
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), modified])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    assert cm(r, "cluster_modified") == 1
    assert cm(r, "warming_clusters") == 1
    dump = clusters_dump(r)
    warming = dump.get("dynamic_warming_clusters", [])
    assert names(warming) == ["b"] and warming[0]["cluster"]["connect_timeout"] == "2s", dump
    active = [e for e in dump["dynamic_active_clusters"] if e["cluster"]["name"] == "b"]
    assert active[0]["cluster"]["connect_timeout"] == "1s", dump
    # Envoy re-subscribes the name of the new version (the same names: this server does not
    # answer an ACK), and the old version serves its endpoints meanwhile: never a 503.
    wait_for(lambda: len([q for q in ads.requests() if q.get("type_url") == CLA_TYPE]) > n_eds, 5,
             "the EDS re-subscription")
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        assert who(get(r)) == "b"
    assert cm(r, "warming_clusters") == 1

    ads.set_endpoints("e2", [assignment("svc-b", [c.port])])
    wait_for(lambda: cm(r, "warming_clusters") == 0, 5, "b's new version active")
    assert who(get(r)) == "c"
    dump = clusters_dump(r)
    active = [e for e in dump["dynamic_active_clusters"] if e["cluster"]["name"] == "b"]
    assert active[0]["cluster"]["connect_timeout"] == "2s", dump
    assert cm(r, "active_clusters") == 3  # xds_cluster, a, b
    assert stats(r, "no_cluster").get("http.ingress_http.no_cluster", 0) == 0


def test_cds_warming_initial_fetch_timeout_ends_warming(ctx):
    ads = start_ads_server(ctx)
    a, b, r = start(ctx, ads)
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                  eds_cluster("d", fetch_timeout="1s")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    assert cm(r, "warming_clusters") == 1
    t0 = time.monotonic()
    # no assignment for d ever: at its initial_fetch_timeout it goes on without endpoints
    wait_for(lambda: cm(r, "warming_clusters") == 0, 5, "the fetch timeout")
    assert time.monotonic() - t0 < 4
    assert "d" in names(clusters_dump(r)["dynamic_active_clusters"])
    resp = get(r, "/d")
    assert resp.status == 503, resp
    assert stats(r, "cluster.d.")["cluster.d.upstream_cx_none_healthy"] >= 1
    assert stats(r, "no_cluster").get("http.ingress_http.no_cluster", 0) == 0
    # its assignment still applies when it comes
    ads.set_endpoints("e2", [assignment("svc-b", [b.port]), assignment("d", [a.port])])
    wait_for(lambda: get(r, "/d").status == 200, 5, "d's endpoints")
    assert who(get(r, "/d")) == "a"


def test_cds_warming_removed_while_warming(ctx):
    ads = start_ads_server(ctx)
    a, b, r = start(ctx, ads)
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                  eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    assert cm(r, "warming_clusters") == 1
    removed = cm(r, "cluster_removed")
    n_req = len(ads.requests())
    res = ads.set_clusters("c3", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b")])
    ads.wait_request(acked(CL_TYPE, "c3", res["nonce"]), what="the ACK of c3")
    assert cm(r, "warming_clusters") == 0
    assert cm(r, "cluster_removed") == removed + 1
    assert "dynamic_warming_clusters" not in clusters_dump(r)
    wait_for(lambda: any(q.get("type_url") == CLA_TYPE and q.get("resource_names") == ["svc-b"]
                         for q in ads.requests()[n_req:]), 5, "EDS names without d")
    # an assignment for it now finds no cluster
    ads.set_endpoints("e2", [assignment("svc-b", [b.port]), assignment("d", [a.port])])
    assert get(r, "/d").status == 503
    assert who(get(r)) == "b"
    assert "d" not in names(clusters_dump(r)["dynamic_active_clusters"])


def test_cds_warming_health_checked_cluster_waits_for_first_round(ctx):
    ads = start_ads_server(ctx)
    a, b, r = start(ctx, ads)
    # A health-check target that accepts (the kernel's backlog) and never answers: the first
    # round ends at the check's timeout.
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    try:
        hc = static_cluster("d", [mute.getsockname()[1]])
        hc["health_checks"] = [http_hc(timeout="2s", interval="5s", unhealthy=1)]
        res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                      hc])
        ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
        t0 = time.monotonic()
        assert cm(r, "warming_clusters") == 1
        assert names(clusters_dump(r).get("dynamic_warming_clusters", [])) == ["d"]
        assert get(r, "/d").status == 503
        assert stats(r, "no_cluster")["http.ingress_http.no_cluster"] >= 1
        wait_for(lambda: cm(r, "warming_clusters") == 0, 6, "d's first health-check round")
        assert time.monotonic() - t0 > 1  # not before the check's timeout
        assert "d" in names(clusters_dump(r)["dynamic_active_clusters"])
    finally:
        mute.close()


def test_cds_warming_listener_naming_a_warming_cluster_is_not_held_back(ctx):
    ads = start_ads_server(ctx)
    a = ctx.start_upstream("a")
    ads.set_clusters("c1", [static_cluster("a", [a.port])])
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    ads.set_listeners("l1", [])
    cfg = ads_bootstrap({}, ads.port, cds=CDS_ADS)
    cfg["dynamic_resources"]["lds_config"] = {"ads": {}, "resource_api_version": "V3"}
    r = ctx.start_remora(cfg, log_level="debug")
    # together: cluster d (EDS, no assignment: warming), a listener whose routes name it, and
    # those routes
    p2 = free_port()
    ads.set_routes("r2", [route_config("r1", [to("a")]), route_config("rn", [to("d")])])
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    res = ads.set_listeners("l2", [rds_listener("two", p2, "rn")])
    ads.wait_request(acked(LST_TYPE, "l2", res["nonce"]), what="the ACK of l2")
    # the listener warms for its routes only: it serves while d warms (d unknown: 503 NC)
    wait_for(lambda: stats(r, "listener_manager").get(
        "listener_manager.total_listeners_warming", 1) == 0, 5, "listener two active")
    assert cm(r, "warming_clusters") == 1
    resp = HttpConn(p2).request("GET", "/")
    assert resp.status == 503, resp
    assert stats(r, "no_cluster")["http.dyn.no_cluster"] >= 1
    ads.set_endpoints("e1", [assignment("d", [a.port])])
    wait_for(lambda: cm(r, "warming_clusters") == 0, 5, "d active")
    assert who(HttpConn(p2).request("GET", "/")) == "a"
