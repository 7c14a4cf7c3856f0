"""Outlier detection (passive health checking) through remora, as Envoy does it: the 5th
consecutive 5xx ejects a host at once, it comes back after base_ejection_time (at the next
sweep), max_ejection_percent is enforced, gateway-failure ejection is detected but not enforced
by default, local-origin failures count as 5xx unless split, and /clusters shows it all."""

import time

from healthutil import FlipUpstream, config, flags, host_lines, names, stat, wait_flags
from lib import free_port, http_request, slow_factor
from proxyutil import wait_stat

FAST = {"interval": "0.1s", "base_ejection_time": "0.5s"}


def od(**kw):
    d = dict(FAST)
    d.update(kw)
    return {"outlier_detection": d}


def _until_ejected(r, cluster, port, limit=40):
    """Sends requests (round robin over two hosts) until ``port`` is ejected; bounded."""
    for i in range(limit):
        http_request(r.port(), path=f"/load{i}")
        if flags(r, cluster, port) == "/failed_outlier_check":
            return i + 1
    raise AssertionError(f"127.0.0.1:{port} not ejected after {limit} requests")


def test_consecutive_5xx_ejects_and_returns(ctx):
    a = ctx.start_upstream(name="a")
    with FlipUpstream("bad") as bad:
        r = ctx.start_remora(config({"svc": [a, bad]},
                                    cluster_extra=od(max_ejection_percent=50,
                                                     base_ejection_time="1s")))
        bad.status = 500
        got = names(r, 8)  # round robin: 4 each, so 4 consecutive 500s from "bad"
        assert got == {(200, "a"): 4, (500, "bad"): 4}, got
        assert flags(r, "svc", bad.port) == "healthy"
        resp = [http_request(r.port(), path=f"/n{i}").status for i in range(2)]
        assert sorted(resp) == [200, 500], resp  # the 5th 500: ejected at once
        wait_flags(r, "svc", bad.port, "/failed_outlier_check")
        st = {k: stat(r, f"cluster.svc.outlier_detection.{k}") for k in (
            "ejections_active", "ejections_enforced_total", "ejections_enforced_consecutive_5xx",
            "ejections_detected_consecutive_5xx", "ejections_total")}
        assert st == {"ejections_active": 1, "ejections_enforced_total": 1,
                      "ejections_enforced_consecutive_5xx": 1,
                      "ejections_detected_consecutive_5xx": 1, "ejections_total": 1}, st
        assert stat(r, "cluster.svc.membership_healthy") == 1
        got = names(r, 20)
        assert got == {(200, "a"): 20}, got  # nothing reaches it while ejected
        # Back after base_ejection_time (1 s) at the next sweep; counters start afresh.
        bad.status = 200
        wait_flags(r, "svc", bad.port, "healthy", timeout=3)
        wait_stat(r, "cluster.svc.outlier_detection.ejections_active", 0)
        got = names(r, 10)
        assert got == {(200, "a"): 5, (200, "bad"): 5}, got


def test_max_ejection_percent_default_blocks_small_clusters(ctx):
    # Envoy 1.31+: 10% of 2 hosts allows no ejection at all; the ejection is counted as an
    # overflow instead.
    a = ctx.start_upstream(name="a")
    with FlipUpstream("bad") as bad:
        bad.status = 503
        r = ctx.start_remora(config({"svc": [a, bad]}, cluster_extra=od()))
        got = names(r, 12)
        assert got == {(200, "a"): 6, (503, "bad"): 6}, got
        assert stat(r, "cluster.svc.outlier_detection.ejections_overflow") >= 1
        assert stat(r, "cluster.svc.outlier_detection.ejections_active") == 0
        assert flags(r, "svc", bad.port) == "healthy"


def test_always_eject_one_host_and_percent_cap(ctx):
    # Both hosts fail; always_eject_one_host lets one go (10% would allow none), the other
    # stays in: max_ejection_percent still caps the second.
    with FlipUpstream("x") as x, FlipUpstream("y") as y:
        x.status = y.status = 500
        r = ctx.start_remora(config({"svc": [x, y]},
                                    cluster_extra=od(always_eject_one_host=True,
                                                     base_ejection_time="30s")))
        names(r, 20)
        assert stat(r, "cluster.svc.outlier_detection.ejections_active") == 1
        assert stat(r, "cluster.svc.outlier_detection.ejections_overflow") >= 1
        fl = sorted([flags(r, "svc", x.port), flags(r, "svc", y.port)])
        assert fl == ["/failed_outlier_check", "healthy"], fl


def test_gateway_failure_detected_not_enforced_by_default(ctx):
    a = ctx.start_upstream(name="a")
    with FlipUpstream("gw") as gw:
        gw.status = 502
        extra = od(consecutive_5xx=1000, consecutive_gateway_failure=3, max_ejection_percent=50)
        r = ctx.start_remora(config({"svc": [a, gw]}, cluster_extra=extra))
        names(r, 8)
        assert stat(r, "cluster.svc.outlier_detection.ejections_detected_consecutive_gateway_failure") >= 1
        assert stat(r, "cluster.svc.outlier_detection.ejections_enforced_consecutive_gateway_failure") == 0
        assert flags(r, "svc", gw.port) == "healthy"
    with FlipUpstream("gw2") as gw2:
        gw2.status = 504
        extra = od(consecutive_5xx=1000, consecutive_gateway_failure=3, max_ejection_percent=50,
                   enforcing_consecutive_gateway_failure=100)
        r2 = ctx.start_remora(config({"svc": [a, gw2]}, cluster_extra=extra), name="remora2")
        _until_ejected(r2, "svc", gw2.port, limit=10)
        assert stat(r2, "cluster.svc.outlier_detection.ejections_enforced_consecutive_gateway_failure") == 1


def test_connect_failures_count_as_5xx(ctx):
    # Unsplit (the default), a refused connection is reported as a 503: five in a row eject.
    a = ctx.start_upstream(name="a")
    dead = free_port()
    r = ctx.start_remora(config({"svc": [a, dead]},
                                cluster_extra=od(max_ejection_percent=50,
                                                 base_ejection_time="30s")))
    n = _until_ejected(r, "svc", dead, limit=12)
    assert n <= 10, n
    assert stat(r, "cluster.svc.upstream_cx_connect_fail") == 5
    got = names(r, 10)
    assert got == {(200, "a"): 10}, got


def test_split_local_origin_errors(ctx):
    # Split: connect failures count as local-origin failures, ejected by
    # consecutive_local_origin_failure; a 5xx response does not touch that counter.
    a = ctx.start_upstream(name="a")
    dead = free_port()
    extra = od(max_ejection_percent=50, base_ejection_time="30s",
               split_external_local_origin_errors=True, consecutive_local_origin_failure=3,
               consecutive_5xx=1000)
    r = ctx.start_remora(config({"svc": [a, dead]}, cluster_extra=extra))
    _until_ejected(r, "svc", dead, limit=10)
    assert stat(r, "cluster.svc.outlier_detection."
                   "ejections_enforced_consecutive_local_origin_failure") == 1
    assert stat(r, "cluster.svc.outlier_detection.ejections_enforced_consecutive_5xx") == 0


def test_clusters_outlier_fields(ctx):
    a = ctx.start_upstream(name="a")
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra=od()))
    lines = host_lines(r, "svc")[f"127.0.0.1:{a.port}"]
    assert lines["success_rate"] == "-1" and lines["local_origin_success_rate"] == "-1", lines
    text = r.admin("GET", "/clusters").text
    assert "svc::outlier::success_rate_average::-1\n" in text, text
    assert "svc::outlier::success_rate_ejection_threshold::-1\n" in text, text
    # The outlier stats exist once outlier detection is configured (Envoy creates them then).
    assert stat(r, "cluster.svc.outlier_detection.ejections_active") == 0
    assert stat(r, "cluster.svc.health_check.attempt") is None


def test_success_rate_ejection(ctx):
    # Five hosts; one answers every other request with 500 (never five in a row, so only the
    # success-rate detector can catch it). Rounds of traffic go on until a sweep has seen
    # enough volume (success_rate_request_volume per host) and ejected it.
    ups = [ctx.start_upstream(name=f"u{i}") for i in range(4)]
    with FlipUpstream("half") as half:
        extra = od(interval="1s", success_rate_request_volume=10, consecutive_5xx=1000,
                   success_rate_stdev_factor=1000, max_ejection_percent=50,
                   base_ejection_time="30s")
        r = ctx.start_remora(config({"svc": ups + [half]}, cluster_extra=extra))
        ejected = False
        deadline = time.monotonic() + 10 * slow_factor()
        k = 0
        while not ejected and time.monotonic() < deadline:
            for i in range(5):  # round robin: the 5th request of a round goes to "half"
                if i == 4:
                    half.status = 500 if k % 2 else 200
                    k += 1
                http_request(r.port(), path=f"/sr{k}-{i}")
            ejected = stat(r, "cluster.svc.outlier_detection.ejections_enforced_success_rate")
        assert ejected == 1, ejected
        assert flags(r, "svc", half.port) == "/failed_outlier_check"
        for u in ups:
            assert flags(r, "svc", u.port) == "healthy"
