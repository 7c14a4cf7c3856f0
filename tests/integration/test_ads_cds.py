"""Clusters and endpoints over ADS (proxy/xds/ads.c: CDS as a wildcard subscription, EDS names
following the CDS clusters whose eds_config is `ads: {}`), against tests/grpc/ads_server.js.
Clusters and endpoints arrive and RDS-over-ADS routes reach them; pushed endpoints move
traffic; a cluster added without an assignment warms (test_cds_warming.py) and answers as an
unknown cluster (503 NC) until EDS brings one; a removed
cluster answers 503 NC; an invalid Cluster is NACKed with its field path while the old clusters
serve (test_xds_partial.py: the valid ones of such a response are applied); the EDS subscription follows the CDS set (the DiscoveryRequests the server records);
startup waits for CDS, then EDS; a restarted server gets all three subscriptions again with
their last versions; /config_dump and /clusters show the clusters."""

from adsutil import (CL_TYPE, CLA_TYPE, RC_TYPE, ads_bootstrap, assignment, eds_cluster,
                     route_config, start_ads_server, static_cluster, to)
from lib import HttpConn, free_port, wait_for
from proxyutil import stats

CDS_ADS = {"ads": {}, "resource_api_version": "V3"}


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def get(r, path="/"):
    return HttpConn(r.port()).request("GET", path)


def start(ctx, ads_port, wait_ready=True, cds=None, **kw):
    cfg = ads_bootstrap({}, ads_port, cds=cds or CDS_ADS, **kw)
    return ctx.start_remora(cfg, wait_ready=wait_ready, log_level="debug")


def of_type(ads, url):
    return [q for q in ads.requests() if q.get("type_url") == url]


def acked(url, version, nonce):
    return lambda q: (q.get("type_url") == url and q.get("version_info") == version
                      and q.get("response_nonce") == nonce and not q.get("error_detail"))


def eds_names(names):
    return lambda q: (q.get("type_url") == CLA_TYPE
                      and sorted(q.get("resource_names") or []) == sorted(names))


def cm(r, name):
    return stats(r, "cluster_manager").get("cluster_manager." + name, 0)


def serve_basic(ctx, ads):
    """Upstreams a, b; clusters a (STATIC) and b (EDS, service svc-b); routes /a -> a, / -> b."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads.set_clusters("c1", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b")])
    ads.set_endpoints("e1", [assignment("svc-b", [b.port])])
    ads.set_routes("r1", [route_config("r1", [to("a", "/a"), to("b", "/")])])
    return a, b


def test_ads_cds_eds_arrive_and_routes_reach_them(ctx):
    ads = start_ads_server(ctx)
    serve_basic(ctx, ads)
    r = start(ctx, ads.port)
    assert who(get(r, "/a")) == "a"
    assert who(get(r, "/")) == "b"

    reqs = ads.requests()
    types = [q["type_url"] for q in reqs]
    # Envoy's order: CDS is asked for first (a wildcard: no names), EDS once the clusters are
    # known, with the EDS cluster's service_name.
    assert types[0] == CL_TYPE, types
    assert not reqs[0].get("resource_names"), reqs[0]
    first_eds = next(i for i, t in enumerate(types) if t == CLA_TYPE)
    assert first_eds > 0
    assert reqs[first_eds]["resource_names"] == ["svc-b"], reqs[first_eds]
    ads.wait_request(acked(CL_TYPE, "c1", "1"), what="the CDS ACK")
    ads.wait_request(lambda q: q.get("type_url") == CLA_TYPE and q.get("version_info") == "e1"
                     and not q.get("error_detail"), what="the EDS ACK")

    assert cm(r, "cds.update_success") == 1 and cm(r, "active_clusters") >= 2
    s = stats(r, "cluster.b.")
    assert s["cluster.b.update_success"] == 1 and s["cluster.b.membership_change"] == 1, s
    clusters = r.admin("GET", "/clusters").text
    assert "a::added_via_api::true" in clusters and "b::added_via_api::true" in clusters, \
        clusters
    dump = r.admin("GET", "/config_dump").json()
    cd = [c for c in dump["configs"] if c["@type"].endswith("ClustersConfigDump")][0]
    names = sorted(e["cluster"]["name"] for e in cd["dynamic_active_clusters"])
    assert names == ["a", "b"], cd
    assert cd["version_info"] == "c1", cd


def test_ads_eds_follows_cds_endpoints_move_traffic_removed_cluster_nc(ctx):
    ads = start_ads_server(ctx)
    a, b = serve_basic(ctx, ads)
    c = ctx.start_upstream("c")
    ads.set_routes("r1", [route_config("r1", [to("a", "/a"), to("d", "/d"), to("b", "/")])])
    r = start(ctx, ads.port)
    assert who(get(r, "/")) == "b"

    # Pushed endpoints move traffic.
    res = ads.set_endpoints("e2", [assignment("svc-b", [c.port])])
    ads.wait_request(acked(CLA_TYPE, "e2", res["nonce"]), what="the ACK of e2")
    wait_for(lambda: who(get(r)) == "c", 5, "traffic on the new endpoint")

    # A cluster added with no assignment yet: subscribed (a new request with every name), and
    # warming until EDS: its route answers as for an unknown cluster (503 NC).
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                  eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    ads.wait_request(eds_names(["svc-b", "d"]), what="EDS names with d")
    resp = get(r, "/d")
    assert resp.status == 503, resp
    assert stats(r, "no_cluster")["http.ingress_http.no_cluster"] >= 1
    assert cm(r, "warming_clusters") == 1
    ads.set_endpoints("e3", [assignment("svc-b", [c.port]), assignment("d", [a.port])])
    wait_for(lambda: get(r, "/d").status == 200, 5, "d's endpoints")
    assert who(get(r, "/d")) == "a"

    # b removed: its name leaves the EDS subscription, and its route answers 503 NC.
    res = ads.set_clusters("c3", [static_cluster("a", [a.port]), eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c3", res["nonce"]), what="the ACK of c3")
    ads.wait_request(eds_names(["d"]), what="EDS names without svc-b")
    wait_for(lambda: get(r).status == 503, 5, "503 for the removed cluster")
    assert stats(r, "no_cluster")["http.ingress_http.no_cluster"] >= 2
    assert cm(r, "cluster_removed") >= 1
    assert who(get(r, "/d")) == "a"

    # b comes back under the same service name: the names change, the server sends it again.
    res = ads.set_clusters("c4", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"),
                                  eds_cluster("d")])
    ads.wait_request(acked(CL_TYPE, "c4", res["nonce"]), what="the ACK of c4")
    wait_for(lambda: get(r).status == 200, 5, "b back")
    assert who(get(r)) == "c"


def test_ads_eds_source_change_under_same_name_keeps_serving(ctx):
    # b's eds_config changes (another initial_fetch_timeout) but its service name does not: the
    # new version of b warms and re-subscribes (the same names again: this server sends nothing
    # new) while the old one serves; at its initial_fetch_timeout the client applies the
    # assignment it holds for svc-b (Envoy's EDS cache) and the new version serves it.
    ads = start_ads_server(ctx)
    a, b = serve_basic(ctx, ads)
    r = start(ctx, ads.port)
    assert who(get(r)) == "b"
    n_eds = len(of_type(ads, CLA_TYPE))
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]),
                                  eds_cluster("b", "svc-b", fetch_timeout="1s")])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the ACK of c2")
    assert cm(r, "cluster_modified") == 1
    assert who(get(r)) == "b"
    wait_for(lambda: len(of_type(ads, CLA_TYPE)) > n_eds, 5, "the EDS re-subscription")
    assert sorted(of_type(ads, CLA_TYPE)[-1]["resource_names"]) == ["svc-b"]
    wait_for(lambda: cm(r, "warming_clusters") == 0, 5, "the fetch timeout")
    assert who(get(r)) == "b"


def test_ads_cds_invalid_cluster_nacked_with_path_old_clusters_serve(ctx):
    ads = start_ads_server(ctx)
    a, b = serve_basic(ctx, ads)
    r = start(ctx, ads.port)
    ads.wait_request(acked(CL_TYPE, "c1", "1"), what="the CDS ACK")
    bad = {"name": "x", "type": "EDS", "connect_timeout": "1s"}
    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), eds_cluster("b", "svc-b"), bad])
    nack = ads.wait_request(lambda q: q.get("type_url") == CL_TYPE and q.get("error_detail")
                            and q.get("response_nonce") == res["nonce"], what="the NACK")
    assert nack["version_info"] == "c1", nack
    assert nack["error_detail"]["code"] == 3, nack
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[2].eds_cluster_config: required"), msg
    # The others are unchanged: "a" and "b" serve as they did.
    assert who(get(r, "/a")) == "a"
    assert who(get(r, "/")) == "b"
    assert cm(r, "cds.update_rejected") == 1
    # An EDS assignment that does not build: NACKed with the resource's own path.
    res = ads.set(CLA_TYPE, "e2", [{"json": assignment("other", [1])},
                                   {"json": {"cluster_name": "svc-b", "endpoints": [
                                       {"lb_endpoints": [{"endpoint": {"address": {
                                           "socket_address": {"address": "not an ip",
                                                              "port_value": 1}}}}]}]}}])
    nack = ads.wait_request(lambda q: q.get("type_url") == CLA_TYPE and q.get("error_detail")
                            and q.get("response_nonce") == res["nonce"], what="the EDS NACK")
    assert nack["error_detail"]["message"].startswith("resources[1].endpoints[0]"), nack
    assert nack["version_info"] == "e1", nack
    assert who(get(r, "/")) == "b"


def test_ads_cds_startup_waits_for_clusters_then_endpoints(ctx):
    ads = start_ads_server(ctx)
    b = ctx.start_upstream("b")
    ads.set_routes("r1", [route_config("r1", [to("b")])])
    cds = dict(CDS_ADS, initial_fetch_timeout="60s")
    r = start(ctx, ads.port, wait_ready=False, cds=cds)
    ads.wait_request(lambda q: q.get("type_url") == CL_TYPE, what="the CDS subscription")
    wait_for(lambda: r.admin("GET", "/ready").status == 503, 5, "admin up")
    # Routes arrived, clusters did not: not LIVE.
    ads.wait_request(acked(RC_TYPE, "r1", "1"), what="the RDS ACK")
    assert r.admin("GET", "/ready").text.strip() == "INITIALIZING"
    # Clusters arrive; their endpoints have not: still not LIVE.
    res = ads.set_clusters("c1", [eds_cluster("b", "svc-b", fetch_timeout="60s")])
    ads.wait_request(acked(CL_TYPE, "c1", res["nonce"]), what="the CDS ACK")
    ads.wait_request(eds_names(["svc-b"]), what="the EDS subscription")
    assert r.admin("GET", "/ready").text.strip() == "INITIALIZING"
    assert stats(r)["server.state"] == 3
    ads.set_endpoints("e1", [assignment("svc-b", [b.port])])
    wait_for(lambda: r.admin("GET", "/ready").status == 200, 10, "LIVE after EDS")
    assert who(get(r)) == "b"


def test_ads_cds_server_restart_resubscribes_all_types_with_last_versions(ctx):
    port = free_port()
    ads = start_ads_server(ctx, port=port)
    serve_basic(ctx, ads)
    r = start(ctx, port)
    ads.wait_request(acked(CL_TYPE, "c1", "1"), what="the CDS ACK")
    ads.wait_request(lambda q: q.get("type_url") == CLA_TYPE and q.get("version_info") == "e1",
                     what="the EDS ACK")
    ads.wait_request(lambda q: q.get("type_url") == RC_TYPE and q.get("version_info") == "r1",
                     what="the RDS ACK")
    ads.stop(5)
    wait_for(lambda: stats(r)["control_plane.connected_state"] == 0, 5, "stream down")
    assert who(get(r, "/")) == "b"  # what was accepted keeps serving
    ads2 = start_ads_server(ctx, port=port, name="ads2")
    want = {CL_TYPE: ("c1", []), CLA_TYPE: ("e1", ["svc-b"]), RC_TYPE: ("r1", ["r1"])}
    for url, (version, names) in want.items():
        q = ads2.wait_request(lambda q, u=url: q.get("type_url") == u, 15, f"{url} again")
        assert q.get("version_info") == version, q
        assert q.get("response_nonce", "") == "", q
        assert sorted(q.get("resource_names") or []) == names, q
    assert [q["type_url"] for q in ads2.requests()][0] == CL_TYPE
    assert who(get(r, "/a")) == "a"
