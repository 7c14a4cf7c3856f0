"""Circuit breakers (cluster circuit_breakers.thresholds, Envoy's semantics): max_connections,
max_pending_requests, max_requests and max_retries each overflow with an immediate 503 UO and
recover; the retry budget; the circuit_breakers.* gauges and /clusters; and the retry-storm
bound: with an upstream answering 503 to everything, retries add at most about 20% to what the
upstream sees (fault scenarios F7, F9)."""

import json
import threading
import time

from lib import HttpConn, build_request, http_request, slow_factor, wait_for
from proxyutil import blackhole_port, file_access_log, log_fields, route, start_proxy, stats, wait_log, wait_stat

OVERFLOW_BODY = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"


def _cb(**threshold):
    return {"circuit_breakers": {"thresholds": [threshold]}}


def _logged(log, path):
    return log_fields(wait_log(log, lambda ln: f" {path} " in ln, what=f"log line for {path}"))


def _hold(port, path, delay_ms=1500):
    """A request the upstream answers after `delay_ms`, sent and left in flight."""
    c = HttpConn(port, timeout=10)
    c.send(build_request("GET", path, {"x-upstream-delay-ms": str(delay_ms)}))
    return c


def _fast_503(port, path):
    t0 = time.monotonic()
    resp = http_request(port, path=path)
    took = time.monotonic() - t0
    assert resp.status == 503, resp
    assert resp.body == OVERFLOW_BODY, resp
    assert resp.header("x-envoy-overloaded") == "true", resp.headers  # Envoy's router
    assert took < 0.5 * slow_factor(), f"an overflow must be answered at once, took {took:.2f}s"
    return resp


def test_max_requests_overflows_then_recovers(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, cluster_extra=_cb(max_requests=1, track_remaining=True),
                    access_log=[file_access_log(log)], concurrency=2)
    held = _hold(r.port(), "/held")
    st = wait_stat(r, "cluster.c.upstream_rq_active", 1)
    assert st["cluster.c.circuit_breakers.default.rq_open"] == 1
    assert st["cluster.c.circuit_breakers.default.remaining_rq"] == 0
    _fast_503(r.port(), "/over")
    f = _logged(log, "/over")
    assert (f["code"], f["flags"]) == ("503", "UO"), f
    st = stats(r)
    assert st["cluster.c.upstream_rq_pending_overflow"] == 1
    assert a.stats()["requests"] == 1
    # recovery: once the held request is done, requests flow again
    assert held.read_response().status == 200
    held.close()
    st = wait_stat(r, "cluster.c.circuit_breakers.default.rq_open", 0)
    assert st["cluster.c.circuit_breakers.default.remaining_rq"] == 1
    assert http_request(r.port(), path="/after").status == 200


def test_max_connections_overflows_then_recovers(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, cluster_extra=_cb(max_connections=1),
                    access_log=[file_access_log(log)])
    held = _hold(r.port(), "/held")
    wait_stat(r, "cluster.c.upstream_rq_active", 1)
    assert stats(r)["cluster.c.circuit_breakers.default.cx_open"] == 1
    _fast_503(r.port(), "/over")
    f = _logged(log, "/over")
    assert (f["code"], f["flags"]) == ("503", "UO"), f
    assert stats(r)["cluster.c.upstream_cx_overflow"] == 1
    assert held.read_response().status == 200
    held.close()
    # the one connection is idle in the pool now: the next request reuses it
    assert http_request(r.port(), path="/after").status == 200
    assert a.stats()["connections"] == 1


def test_max_pending_requests_overflows_then_recovers(ctx):
    # Pending = waiting for a connection being set up: connects to a blackhole stay pending
    # until connect_timeout.
    port = blackhole_port(ctx)
    r = start_proxy(ctx, {"c": [port]}, connect_timeout="1s",
                    cluster_extra=_cb(max_pending_requests=1, track_remaining=True))
    held = HttpConn(r.port(), timeout=10)
    held.send(build_request("GET", "/pending"))
    st = wait_stat(r, "cluster.c.upstream_rq_pending_active", 1)
    assert st["cluster.c.circuit_breakers.default.rq_pending_open"] == 1
    assert st["cluster.c.circuit_breakers.default.remaining_pending"] == 0
    _fast_503(r.port(), "/over")
    assert stats(r)["cluster.c.upstream_rq_pending_overflow"] == 1
    # the pending one fails at connect_timeout (503 UF), and the limit frees up
    assert held.read_response().status == 503
    held.close()
    st = wait_stat(r, "cluster.c.circuit_breakers.default.rq_pending_open", 0)
    assert st["cluster.c.circuit_breakers.default.remaining_pending"] == 1
    assert st["cluster.c.upstream_rq_pending_total"] == 1


def test_max_retries_overflow(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 3}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                    cluster_extra=_cb(max_retries=0), access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/noretry", headers={"x-upstream-status": "503"})
    assert resp.status == 503
    assert resp.header("x-upstream-name") == "a"  # the upstream's answer, passed on
    assert a.stats()["requests"] == 1
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry_overflow"] == 1
    assert st.get("cluster.c.upstream_rq_retry", 0) == 0
    f = _logged(log, "/noretry")
    assert (f["code"], f["flags"]) == ("503", "UO"), f


def test_max_retries_limits_concurrent_retries(ctx):
    # max_retries 1: of several requests failing together, one at a time may be retrying.
    a = ctx.start_upstream("a")
    policy = {"retry_on": "5xx", "num_retries": 2,
              "retry_back_off": {"base_interval": "0.05s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                    cluster_extra=_cb(max_retries=1), concurrency=2)
    conns = [HttpConn(r.port(), timeout=10) for _ in range(6)]
    for i, c in enumerate(conns):
        c.send(build_request("GET", f"/p{i}", {"x-upstream-status": "503",
                                                "x-upstream-delay-ms": "200"}))
    for c in conns:
        assert c.read_response().status == 503
        c.close()
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry_overflow"] >= 3, st
    assert a.stats()["requests"] == 6 + st["cluster.c.upstream_rq_retry"]
    assert st["cluster.c.circuit_breakers.default.rq_retry_open"] == 0


def test_retry_budget(ctx):
    a = ctx.start_upstream("a")
    policy = {"retry_on": "5xx", "num_retries": 1}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                    cluster_extra=_cb(retry_budget={"budget_percent": {"value": 0.0},
                                                    "min_retry_concurrency": 0}))
    assert http_request(r.port(), headers={"x-upstream-status": "503"}).status == 503
    assert a.stats()["requests"] == 1
    assert stats(r)["cluster.c.upstream_rq_retry_overflow"] == 1
    # the budget replaces max_retries: 0 there does not stop retries within the budget
    a.reset_stats()
    r2 = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                     cluster_extra=_cb(max_retries=0, retry_budget={}))
    assert http_request(r2.port(), headers={"x-upstream-status": "503"}).status == 503
    assert a.stats()["requests"] == 2


def _storm(ctx, cluster_extra, clients=32, per_client=12):
    a = ctx.start_upstream("a", threads=2)
    policy = {"retry_on": "5xx", "num_retries": 3,
              "retry_back_off": {"base_interval": "0.005s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                    cluster_extra=cluster_extra, concurrency=2)
    errors = []

    def client():
        try:
            with HttpConn(r.port(), timeout=20) as c:
                for _ in range(per_client):
                    resp = c.request(headers={"x-upstream-status": "503",
                                              "x-upstream-delay-ms": "10"})
                    assert resp.status == 503, resp
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60 * slow_factor())
    assert not errors, errors[:3]
    sent = clients * per_client
    seen = a.stats()["requests"]
    return sent, seen, wait_stat(r, "cluster.c.upstream_rq_active", 0)


def test_retry_storm_bounded_by_default_breaker(ctx):
    # Envoy's default max_retries (3 concurrent retries per cluster) with 32 clients hammering
    # an upstream that answers 503 to everything, each request allowed 3 retries.
    sent, seen, st = _storm(ctx, _cb(track_remaining=True))
    assert seen <= 1.3 * sent, f"upstream saw {seen} requests for {sent} sent"
    assert st["cluster.c.upstream_rq_retry_overflow"] > 0
    assert seen == sent + st["cluster.c.upstream_rq_retry"]
    # every unit taken was given back
    assert st["cluster.c.circuit_breakers.default.remaining_rq"] == 1024
    assert st["cluster.c.circuit_breakers.default.remaining_retries"] == 3
    assert st["cluster.c.circuit_breakers.default.remaining_pending"] == 1024
    assert st["cluster.c.circuit_breakers.default.remaining_cx"] == \
        1024 - st["cluster.c.upstream_cx_active"]


def test_retry_storm_bounded_by_retry_budget(ctx):
    sent, seen, st = _storm(ctx, _cb(max_retries=1000, retry_budget={
        "budget_percent": {"value": 20.0}, "min_retry_concurrency": 1}))
    assert seen <= 1.3 * sent, f"upstream saw {seen} requests for {sent} sent"
    assert st["cluster.c.upstream_rq_retry_overflow"] > 0
    assert st["cluster.c.upstream_rq_retry"] > 0


def test_clusters_and_stats_show_the_configured_limits(ctx):
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, cluster_extra={"circuit_breakers": {"thresholds": [
        {"max_connections": 7, "max_pending_requests": 8, "max_requests": 9, "max_retries": 2,
         "track_remaining": True},
        {"priority": "HIGH", "max_connections": 70}]}})
    text = r.admin("GET", "/clusters").text
    for line in ("c::default_priority::max_connections::7",
                 "c::default_priority::max_pending_requests::8",
                 "c::default_priority::max_requests::9", "c::default_priority::max_retries::2",
                 "c::high_priority::max_connections::70",
                 "c::high_priority::max_pending_requests::1024",
                 "c::high_priority::max_retries::3"):
        assert line in text.splitlines(), (line, text)
    j = json.loads(r.admin("GET", "/clusters?format=json").text)
    th = j["cluster_statuses"][0]["circuit_breakers"]["thresholds"]
    assert th[0]["max_connections"] == 7 and th[1]["priority"] == "HIGH"
    st = stats(r)
    assert st["cluster.c.circuit_breakers.default.remaining_cx"] == 7
    assert st["cluster.c.circuit_breakers.default.remaining_retries"] == 2
    assert st["cluster.c.circuit_breakers.default.cx_open"] == 0
    assert "cluster.c.circuit_breakers.high.remaining_cx" not in st  # no track_remaining there
    prom = r.admin("GET", "/stats/prometheus").text
    assert 'envoy_cluster_circuit_breakers_default_rq_open{envoy_cluster_name="c"} 0' in prom
