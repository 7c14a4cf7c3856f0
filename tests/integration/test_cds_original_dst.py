"""ORIGINAL_DST clusters from CDS (a file here; over ADS in test_ads_cds.py and test_xds_e2e.py):
the passthrough App Mesh's ALLOW_ALL serves as `cds_egress_passthrough`. A route to it sends each
request to its destination (original_dst_lb_config's header on loopback; the iptables case is in
test_capture.py), a host and a pool per destination, per worker; an update with the same bytes
keeps the hosts and their pools, a changed one starts fresh; idle hosts are swept after
cleanup_interval; a removed cluster answers 503 NC; /clusters lists the hosts."""

from lib import HttpConn, wait_for
from proxyutil import stats
from test_dynamic_resources import cds_doc, cluster, cm, start, wait_cds
from test_reload import to, write_doc

HDR = "x-envoy-original-dst-host"


def od(name="pt", **extra):
    c = cluster(name, [], type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED",
                original_dst_lb_config={"use_http_header": True})
    c.update(extra)
    return c


def get(conn, up):
    resp = conn.request("GET", "/", {HDR: f"127.0.0.1:{up.port}"})
    assert resp.status == 200, resp
    assert resp.header("x-upstream-name") == up.upstream_name
    return resp


def pt(r, name):
    return stats(r, "cluster.pt.").get("cluster.pt." + name, 0)


def test_cds_original_dst_serves_keeps_its_hosts_and_goes(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    r, cds_path, _ = start(ctx, cds_doc("v1", [od()]), [to("pt")])
    assert cm(r, "cds.update_success") == 1 and cm(r, "cds.update_rejected") == 0
    conn = HttpConn(r.port())
    for _ in range(2):
        get(conn, a)
        get(conn, b)
    assert pt(r, "upstream_rq_2xx") == 4
    assert pt(r, "upstream_cx_total") == 2  # a host and a pooled connection per destination
    # /clusters lists the hosts the workers made, with their stats (Envoy lists its hosts).
    text = r.admin("GET", "/clusters").text
    for up in (a, b):
        assert f"pt::127.0.0.1:{up.port}::rq_total::2\n" in text, text
        assert f"pt::127.0.0.1:{up.port}::cx_total::1\n" in text, text
        assert f"pt::127.0.0.1:{up.port}::health_flags::healthy\n" in text, text
    js = r.admin("GET", "/clusters?format=json").json()
    st = [c for c in js["cluster_statuses"] if c["name"] == "pt"][0]
    assert st["added_via_api"] is True
    got = sorted((h["address"]["socket_address"]["port_value"],
                  {s["name"]: s.get("value", 0) for s in h["stats"]}["rq_success"])
                 for h in st["host_statuses"])
    assert got == sorted([(a.port, 2), (b.port, 2)]), st

    # The same bytes under a new version: the same cluster, its hosts and pools kept.
    write_doc(cds_path, cds_doc("v2", [od()]))
    wait_cds(r, "update_success", 2)
    get(conn, a)
    get(conn, b)
    assert pt(r, "upstream_cx_total") == 2
    assert cm(r, "cluster_modified") == 0

    # Changed bytes: a fresh cluster (new hosts, new connections), stats counting on.
    write_doc(cds_path, cds_doc("v3", [od(cleanup_interval="0.2s")]))
    wait_cds(r, "update_success", 3)
    get(conn, a)
    assert pt(r, "upstream_cx_total") == 3
    assert cm(r, "cluster_modified") == 1
    text = r.admin("GET", "/clusters").text  # the fresh version's one host
    assert f"pt::127.0.0.1:{a.port}::rq_total::1\n" in text, text
    assert f"pt::127.0.0.1:{b.port}::" not in text, text
    # The new version's hosts are swept: an idle host's connection closes after cleanup_interval.
    wait_for(lambda: pt(r, "upstream_cx_active") == 0, timeout=5.0,
             what="the idle ORIGINAL_DST host swept (cx_active 0)")
    assert f"pt::127.0.0.1:{a.port}::" not in r.admin("GET", "/clusters").text
    get(conn, a)
    assert pt(r, "upstream_cx_total") == 4  # made again

    # Removed: no cluster (503 NC), as any CDS cluster.
    write_doc(cds_path, cds_doc("v4", []))
    wait_cds(r, "update_success", 4)
    resp = conn.request("GET", "/", {HDR: f"127.0.0.1:{a.port}"})
    assert resp.status == 503, resp
    assert cm(r, "cluster_removed") == 1


def test_ads_original_dst_accepted_serves_and_goes(ctx):
    """Over ADS: the update with the ORIGINAL_DST cluster is ACKed (it was NACKed whole before),
    its route reaches each destination, the same bytes again keep its hosts, and its removal
    answers 503 NC."""
    from adsutil import CL_TYPE, route_config, start_ads_server, static_cluster
    from adsutil import to as ads_to
    from test_ads_cds import acked, start as ads_start

    def od_ads():
        return {k: v for k, v in od().items() if k != "@type"}

    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ads = start_ads_server(ctx)
    ads.set_clusters("c1", [static_cluster("a", [a.port]), od_ads()])
    ads.set_routes("r1", [route_config("r1", [ads_to("a", "/a"), ads_to("pt", "/")])])
    r = ads_start(ctx, ads.port)
    ads.wait_request(acked(CL_TYPE, "c1", "1"), what="the CDS ACK of c1")
    conn = HttpConn(r.port())
    get(conn, a)
    get(conn, b)
    assert pt(r, "upstream_cx_total") == 2

    res = ads.set_clusters("c2", [static_cluster("a", [a.port]), od_ads()])
    ads.wait_request(acked(CL_TYPE, "c2", res["nonce"]), what="the CDS ACK of c2")
    get(conn, a)
    get(conn, b)
    assert pt(r, "upstream_cx_total") == 2  # unchanged bytes: hosts and pools kept
    assert cm(r, "cluster_modified") == 0

    res = ads.set_clusters("c3", [static_cluster("a", [a.port])])
    ads.wait_request(acked(CL_TYPE, "c3", res["nonce"]), what="the CDS ACK of c3")
    resp = conn.request("GET", "/", {HDR: f"127.0.0.1:{a.port}"})
    assert resp.status == 503, resp
    assert cm(r, "cluster_removed") == 1


def test_tcp_proxy_finds_cds_clusters_by_name(ctx):
    """A static tcp_proxy naming a cluster only CDS has (no ORIGINAL_DST needed on loopback):
    closed with downstream_cx_no_route while there is none, served once it arrives, and a
    session open across the cluster's removal keeps working to its end (it holds the set it
    found the cluster in), while new connections are closed again."""
    import socket

    from test_tcp_proxy import EchoServer, exchange, stat, tcp_config

    def closed(port):
        """remora closes the connection without a byte (reset: our bytes were unread)."""
        try:
            return exchange(port, b"x") == b""
        except ConnectionResetError:
            return True

    e = EchoServer("e1")
    try:
        d = ctx.tmp / "dyn"
        d.mkdir(exist_ok=True)
        cds_path = d / "cds.yaml"
        write_doc(cds_path, cds_doc("v1", []))
        cfg = tcp_config({"s": [1]}, ["cluster: dyn"])
        cfg += ("dynamic_resources:\n  cds_config:\n    path_config_source: {path: "
                f"'{cds_path}'}}\n    resource_api_version: V3\n")
        r = ctx.start_remora(cfg)
        port = r.port("TCP")
        assert closed(port)
        wait_for(lambda: stat(r, "tcp.tcpin.downstream_cx_no_route") == 1, what="no_route")

        write_doc(cds_path, cds_doc("v2", [cluster("dyn", [e.port])]))
        wait_cds(r, "update_success", 2)
        assert exchange(port, b"hello") == b"hello|e1"
        assert stat(r, "cluster.dyn.upstream_cx_total") == 1

        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"ab")
        assert s.recv(2) == b"ab"  # connected: the session holds its cluster
        write_doc(cds_path, cds_doc("v3", []))
        wait_cds(r, "update_success", 3)
        assert closed(port)
        wait_for(lambda: stat(r, "tcp.tcpin.downstream_cx_no_route") == 2, what="no_route 2")
        s.sendall(b"cd")
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        s.close()
        assert got == b"cd|e1", got
    finally:
        e.close()
