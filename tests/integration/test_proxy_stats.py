"""Stats correctness: counters equal what happened, gauges come back to where they were, and
with two workers the admin endpoint sums their blocks."""

from lib import HttpConn, build_request, http_request, wait_for
from proxyutil import route, start_proxy, stats, wait_stat


def test_request_counters_exact(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/ok", "c")])
    n, n404, n503 = 25, 4, 3
    with HttpConn(r.port()) as c:
        for i in range(n):
            assert c.request(path=f"/ok/{i}").status == 200
        for i in range(n503):
            assert c.request(path=f"/ok/e{i}",
                             headers={"x-upstream-status": "503"}).status == 503
    for i in range(n404):
        assert http_request(r.port(), path=f"/missing/{i}").status == 404
    st = wait_stat(r, "http.ingress_http.downstream_cx_active", 0)
    total = n + n404 + n503
    want = {
        "http.ingress_http.downstream_rq_total": total,
        "http.ingress_http.downstream_rq_2xx": n,
        "http.ingress_http.downstream_rq_4xx": n404,
        "http.ingress_http.downstream_rq_5xx": n503,
        "http.ingress_http.downstream_rq_completed": total,
        "http.ingress_http.downstream_rq_active": 0,
        "http.ingress_http.downstream_cx_total": 1 + n404,
        "http.ingress_http.no_route": n404,
        "cluster.c.upstream_rq_total": n + n503,
        "cluster.c.upstream_rq_200": n,
        "cluster.c.upstream_rq_503": n503,
        "cluster.c.upstream_rq_2xx": n,
        "cluster.c.upstream_rq_5xx": n503,
        "cluster.c.upstream_rq_active": 0,
        "cluster.c.upstream_cx_total": 1,
        f"listener.127.0.0.1_{r.port()}.downstream_cx_total": 1 + n404,
        f"listener.127.0.0.1_{r.port()}.downstream_cx_active": 0,
    }
    got = {k: st.get(k) for k in want}
    assert got == want, {k: (got[k], want[k]) for k in want if got[k] != want[k]}
    assert u.stats()["requests"] == n + n503


def test_gauges_return_to_idle(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    conns = [HttpConn(r.port()) for _ in range(3)]
    for c in conns:
        c.send(build_request(path="/slow", headers={"x-upstream-delay-ms": "400"}))
    wait_for(lambda: u.stats()["requests"] == 3, 3, "three requests at the upstream")
    st = stats(r)
    assert st["http.ingress_http.downstream_cx_active"] == 3
    assert st["http.ingress_http.downstream_rq_active"] == 3
    assert st["cluster.c.upstream_rq_active"] == 3
    assert st["cluster.c.upstream_cx_active"] == 3
    for c in conns:
        assert c.read_response().status == 200
    st = wait_stat(r, "cluster.c.upstream_rq_active", 0)
    assert st["http.ingress_http.downstream_rq_active"] == 0
    # The client connections are still open; the upstream ones sit idle in the pool.
    assert st["http.ingress_http.downstream_cx_active"] == 3
    assert st["cluster.c.upstream_cx_active"] == 3
    for c in conns:
        c.close()
    wait_stat(r, "http.ingress_http.downstream_cx_active", 0)
    wait_stat(r, f"listener.127.0.0.1_{r.port()}.downstream_cx_active", 0)
    # The upstream goes away: its idle pooled connections close, and the gauge follows.
    assert u.stop(5) == 0
    st = wait_stat(r, "cluster.c.upstream_cx_active", 0)
    assert st["cluster.c.upstream_cx_destroy"] == st["cluster.c.upstream_cx_total"]


def test_gauges_after_failures(ctx):
    """Failed requests (timeouts, resets, malformed responses, client aborts) leave no active
    request or connection counted."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/", "c", timeout="0.3s")])
    for hs in ({"x-upstream-delay-ms": "1000"}, {"x-upstream-reset": "before-headers"},
               {"x-upstream-malformed": "cl-te"},
               {"x-upstream-reset": "mid-body", "x-upstream-body-size": "100000"}):
        try:
            http_request(r.port(), headers=hs)
        except (EOFError, ConnectionResetError):
            pass
    # A client that goes away while its request waits at the upstream.
    s = ctx.connect(r.port())
    s.sendall(build_request(headers={"x-upstream-delay-ms": "200"}))
    wait_for(lambda: u.stats()["requests"] == 5, 3, "the aborted request at the upstream")
    s.close()
    st = wait_stat(r, "http.ingress_http.downstream_rq_active", 0)
    wait_stat(r, "http.ingress_http.downstream_cx_active", 0)
    st = wait_stat(r, "cluster.c.upstream_rq_active", 0)
    assert st["http.ingress_http.downstream_rq_total"] == 5
    assert st["cluster.c.upstream_rq_total"] == 5


def test_two_workers_sum(ctx):
    u = ctx.start_upstream(threads=2)
    r = start_proxy(ctx, {"c": [u]}, concurrency=2)
    n = 40
    for i in range(n):
        assert http_request(r.port(), path=f"/w{i}").status == 200
    st = wait_stat(r, "http.ingress_http.downstream_cx_active", 0)
    assert st["http.ingress_http.downstream_rq_total"] == n
    assert st["cluster.c.upstream_rq_200"] == n
    assert st[f"listener.127.0.0.1_{r.port()}.downstream_cx_total"] == n
    assert st["server.concurrency"] == 2
    # Each worker has its own pool: at most one upstream connection per worker.
    assert 1 <= st["cluster.c.upstream_cx_total"] <= 2
    # Both workers took connections (SO_REUSEPORT spreads them; 40 all on one is ~1e-12).
    assert u.stats()["connections"] == 2, u.stats()
