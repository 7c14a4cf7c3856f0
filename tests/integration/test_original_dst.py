"""ORIGINAL_DST clusters (lb_policy CLUSTER_PROVIDED) on loopback, chosen by the
original_dst_lb_config header (x-envoy-original-dst-host): a host per destination with its own
pool, upstream_port_override, no host (503 UH) for a bad or missing destination, and the
cleanup of unused hosts after cleanup_interval. The case where the destination is the one an
iptables REDIRECT hid (the original_dst listener filter) is in test_capture.py."""

from lib import http_request, wait_for
from proxyutil import stats


def od_config(lb_config="{use_http_header: true}", cleanup="5s", listener_extra=()):
    lines = ["admin:", "  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN}}}}",
             "static_resources:", "  listeners:", "  - name: l",
             "    address: {socket_address: {address: 127.0.0.1, port_value: {{L}}}}"]
    lines += ["    " + x for x in listener_extra]
    lines += [
        "    filter_chains:",
        "    - filters:",
        "      - name: envoy.filters.network.http_connection_manager",
        "        typed_config:",
        '          "@type": type.googleapis.com/envoy.extensions.filters.network.'
        'http_connection_manager.v3.HttpConnectionManager',
        "          stat_prefix: od",
        "          route_config:",
        "            virtual_hosts:",
        "            - {name: all, domains: ['*'], routes: [{match: {prefix: /}, "
        "route: {cluster: passthrough}}]}",
        "          http_filters:",
        "          - name: envoy.filters.http.router",
        "            typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http."
        "router.v3.Router}",
        "  clusters:",
        "  - name: passthrough",
        "    type: ORIGINAL_DST",
        "    lb_policy: CLUSTER_PROVIDED",
        "    connect_timeout: 1s",
        f"    cleanup_interval: {cleanup}",
        f"    original_dst_lb_config: {lb_config}"]
    return "\n".join(lines) + "\n"


def test_header_picks_a_host_per_destination_each_with_its_own_pool(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    r = ctx.start_remora(od_config())
    port = r.port("L")
    for _ in range(3):
        for up in (a, b):
            resp = http_request(port, headers={"x-envoy-original-dst-host": f"127.0.0.1:{up.port}"})
            assert resp.status == 200, resp
            assert resp.header("x-upstream-name") == up.upstream_name
    st = stats(r)
    assert st["cluster.passthrough.upstream_rq_2xx"] == 6
    # one pooled connection per destination, reused for the later requests
    assert st["cluster.passthrough.upstream_cx_total"] == 2
    # IPv6 and a port in brackets parse too; a name or a missing port does not (no host: 503)
    for bad in ("localhost:80", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", "[::1]", "::1:80",
                "127.0.0.1:80x", ""):
        resp = http_request(port, headers={"x-envoy-original-dst-host": bad})
        assert resp.status == 503, (bad, resp)
        assert resp.body == b"no healthy upstream"
    assert stats(r)["cluster.passthrough.upstream_cx_none_healthy"] == 8
    # Without the header, only the original_dst listener filter could give a destination.
    resp = http_request(port)
    assert resp.status == 503 and resp.body == b"no healthy upstream"


def test_upstream_port_override(ctx):
    a = ctx.start_upstream("a")
    r = ctx.start_remora(od_config(
        "{use_http_header: true, http_header_name: X-Dest, upstream_port_override: %d}" % a.port))
    resp = http_request(r.port("L"), headers={"x-dest": "127.0.0.1:9"})
    assert resp.status == 200, resp
    assert resp.header("x-upstream-name") == "a"
    # the default header name is not looked at when another is configured
    resp = http_request(r.port("L"), headers={"x-envoy-original-dst-host": "127.0.0.1:9"})
    assert resp.status == 503


def test_unused_hosts_are_cleaned_up_and_made_again(ctx):
    a = ctx.start_upstream("a")
    r = ctx.start_remora(od_config(cleanup="0.2s"))
    port = r.port("L")
    hdr = {"x-envoy-original-dst-host": f"127.0.0.1:{a.port}"}
    assert http_request(port, headers=hdr).status == 200
    assert stats(r)["cluster.passthrough.upstream_cx_active"] == 1
    # Not picked for a whole interval (the sweep runs on the worker's one-second tick): its
    # pooled connection is closed and the host goes.
    wait_for(lambda: stats(r)["cluster.passthrough.upstream_cx_active"] == 0, timeout=5.0,
             what="the unused host's pooled connection to close")
    assert stats(r)["cluster.passthrough.upstream_cx_destroy"] == 1
    # A later request makes the host again, with a new connection.
    assert http_request(port, headers=hdr).status == 200
    st = stats(r)
    assert st["cluster.passthrough.upstream_cx_total"] == 2
    assert st["cluster.passthrough.upstream_rq_2xx"] == 2


def test_a_host_in_use_is_not_cleaned_up(ctx):
    a = ctx.start_upstream("a")
    r = ctx.start_remora(od_config(cleanup="0.2s"))
    port = r.port("L")
    hdr = {"x-envoy-original-dst-host": f"127.0.0.1:{a.port}",
           "x-upstream-delay-ms": "2500"}
    # A request that takes longer than several sweeps keeps its host and connection.
    resp = http_request(port, headers=hdr, timeout=10)
    assert resp.status == 200, resp
    st = stats(r)
    assert st["cluster.passthrough.upstream_cx_total"] == 1
    assert st["cluster.passthrough.upstream_rq_2xx"] == 1



def test_clusters_lists_the_hosts_of_every_worker(ctx):
    """/clusters lists the hosts the workers made (each worker has its own: a destination used
    on both is one host there, its stats added up), and not the ones swept away."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    r = ctx.start_remora(od_config(cleanup="0.2s"), concurrency=2)
    port = r.port("L")
    for _ in range(10):  # new connections: the kernel spreads them over both workers
        for up in (a, b):
            resp = http_request(port, headers={"x-envoy-original-dst-host": f"127.0.0.1:{up.port}"})
            assert resp.status == 200, resp
    text = r.admin("GET", "/clusters").text
    for up in (a, b):
        line = f"passthrough::127.0.0.1:{up.port}::rq_total::10\n"
        assert text.count(line) == 1, text
        assert f"passthrough::127.0.0.1:{up.port}::weight::1\n" in text, text
    js = r.admin("GET", "/clusters?format=json").json()
    pt = [c for c in js["cluster_statuses"] if c["name"] == "passthrough"][0]
    assert sorted(h["address"]["socket_address"]["port_value"] for h in pt["host_statuses"]) \
        == sorted([a.port, b.port]), pt
    # swept: listed no more
    wait_for(lambda: f"127.0.0.1:{a.port}" not in r.admin("GET", "/clusters").text, timeout=5.0,
             what="the swept hosts gone from /clusters")
