"""Timeouts, each firing at its time with Envoy's status and flag, and freeing the stream: the
route timeout across retries, per_try_timeout on the last try (504 UT), per_try_idle_timeout
(before and after the response head), the route's idle_timeout and the connection manager's
stream_idle_timeout (408 SI, or a reset once the head went out), request_timeout (408), and the
upstream connection pool's idle_timeout and max_connection_duration (fault scenario F5), and an
upstream dripping its body a byte at a time (F6)."""

import time

from lib import HttpConn, build_request, http_request, raw_exchange, slow_factor, wait_for
from proxyutil import (complete_response, echo, file_access_log, header_values, log_fields, route,
                       start_proxy,
                       stats, wait_log, wait_stat)

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _logged(log, path):
    return log_fields(wait_log(log, lambda ln: f" {path} " in ln, what=f"log line for {path}"))


def _timed(fn):
    t0 = time.monotonic()
    out = fn()
    return out, time.monotonic() - t0


def _idle_after(ctx, r):
    """Every stream is gone: no request left active anywhere."""
    wait_stat(r, "http.ingress_http.downstream_rq_active", 0)
    st = wait_stat(r, "cluster.c.upstream_rq_active", 0)
    return st


def test_expected_rq_timeout_header_says_the_timeout_in_force(ctx):
    """x-envoy-expected-rq-timeout-ms towards the upstream: the route's timeout (the default 15 s,
    or its own), the per-try timeout when it is shorter, and no header when the route timeout is
    off."""
    a = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [a]}, routes=[
        route("/default", "c"),
        route("/own", "c", timeout="2.5s"),
        route("/try", "c", timeout="3s", retry_policy={"per_try_timeout": "0.4s"}),
        route("/off", "c", timeout="0s"),
    ])

    def expected(path, headers=None):
        return header_values(echo(r.port(), path=path, headers=headers),
                             "x-envoy-expected-rq-timeout-ms")

    assert expected("/default") == ["15000"]
    assert expected("/own") == ["2500"]
    assert expected("/try") == ["400"]
    assert expected("/off") == []


def test_timeout_headers_from_the_local_app_replace_the_routes(ctx):
    """x-envoy-upstream-rq-timeout-ms and x-envoy-upstream-rq-per-try-timeout-ms from an internal
    caller (use_remote_address, a loopback peer without x-forwarded-for: the sidecar's own
    application) replace the route's timeouts, as in Envoy, and are not forwarded; 0 turns the
    route timeout off, a value that is not a number is ignored."""
    a = ctx.start_upstream("a")
    policy = {"retry_on": "5xx", "num_retries": 1, "retry_back_off": {"base_interval": "0.001s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", timeout="5s", retry_policy=policy)],
                    hcm_extra={"use_remote_address": True})

    def sent(headers):
        j = echo(r.port(), headers=headers)
        names = [k.lower() for k, _ in j["headers"]]
        assert "x-envoy-upstream-rq-timeout-ms" not in names, j["headers"]
        assert "x-envoy-upstream-rq-per-try-timeout-ms" not in names, j["headers"]
        return header_values(j, "x-envoy-expected-rq-timeout-ms")

    assert sent({"x-envoy-upstream-rq-timeout-ms": "1234"}) == ["1234"]
    assert sent({"x-envoy-upstream-rq-timeout-ms": "12s"}) == ["5000"]  # not a number
    assert sent({"x-envoy-upstream-rq-timeout-ms": "0"}) == []
    assert sent({"x-envoy-upstream-rq-per-try-timeout-ms": "300"}) == ["300"]
    # a per-try timeout no shorter than the route timeout is dropped
    assert sent({"x-envoy-upstream-rq-timeout-ms": "800",
                 "x-envoy-upstream-rq-per-try-timeout-ms": "900"}) == ["800"]

    # The header's timeout is the one that fires: 504 UT after 0.3 s, not the route's 5 s.
    resp, took = _timed(lambda: http_request(r.port(), path="/hang", headers={
        "x-upstream-hang": "1", "x-envoy-upstream-rq-timeout-ms": "300"}))
    assert resp.status == 504, resp
    assert 0.3 <= took < 2.0 * slow_factor(), took
    # The per-try header's timeout fires on each of the two tries.
    resp, took = _timed(lambda: http_request(r.port(), path="/hang", headers={
        "x-upstream-hang": "1", "x-envoy-upstream-rq-per-try-timeout-ms": "200"}))
    assert resp.status == 504, resp
    assert 0.4 <= took < 2.0 * slow_factor(), took
    st = _idle_after(ctx, r)
    assert st["cluster.c.upstream_rq_per_try_timeout"] == 2
    assert st["cluster.c.upstream_rq_timeout"] == 1


def test_timeout_alt_response_header_answers_204_for_internal_callers(ctx):
    """x-envoy-upstream-rq-timeout-alt-response (any value) from an internal caller makes a
    route or per-try timeout answer 204 with no body and no content-length instead of 504, as
    in Envoy; it is not forwarded. From a caller that is not internal (an external
    x-forwarded-for) it is removed and the timeout stays 504."""
    a = ctx.start_upstream("a")
    policy = {"per_try_timeout": "0.2s"}
    r = start_proxy(ctx, {"c": [a]},
                    routes=[route("/try", "c", timeout="5s", retry_policy=policy),
                            route("/", "c", timeout="0.2s")],
                    hcm_extra={"use_remote_address": True})
    alt = {"x-envoy-upstream-rq-timeout-alt-response": "whatever"}
    j = echo(r.port(), headers=alt)
    assert "x-envoy-upstream-rq-timeout-alt-response" not in [k.lower() for k, _ in j["headers"]]
    for path in ("/hang", "/try/hang"):
        resp = http_request(r.port(), path=path, headers={"x-upstream-hang": "1", **alt})
        assert resp.status == 204, (path, resp)
        assert resp.body == b"", resp.body
        assert resp.header("content-length") is None, resp.headers
    resp = http_request(r.port(), path="/hang", headers={
        "x-upstream-hang": "1", "X-Forwarded-For": "1.2.3.4", **alt})
    assert resp.status == 504, resp
    st = _idle_after(ctx, r)
    assert st["cluster.c.upstream_rq_timeout"] == 2
    assert st["cluster.c.upstream_rq_per_try_timeout"] == 1


def test_per_try_timeout_on_the_last_try_is_504_ut(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.25s",
              "retry_back_off": {"base_interval": "0.001s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", timeout="5s", retry_policy=policy)],
                    access_log=[file_access_log(log)])
    resp, took = _timed(lambda: http_request(r.port(), path="/hang",
                                             headers={"x-upstream-hang": "1"}))
    assert resp.status == 504, resp
    assert resp.body == b"upstream request timeout"
    assert 0.45 <= took < 1.5 * slow_factor(), took  # two tries of 0.25 s
    f = _logged(log, "/hang")
    # the last try's timeout was retriable but no retry was left: UT and URX
    assert (f["code"], f["flags"]) == ("504", "UT,URX"), f
    st = _idle_after(ctx, r)
    assert st["cluster.c.upstream_rq_per_try_timeout"] == 2
    assert st["cluster.c.upstream_rq_retry"] == 1
    assert st.get("cluster.c.upstream_rq_timeout", 0) == 0
    wait_for(lambda: a.stats()["active_connections"] == 0, 2, "hung connections closed")


def test_route_timeout_spans_all_retries(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 10, "per_try_timeout": "0.2s",
              "retry_back_off": {"base_interval": "0.001s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", timeout="0.7s", retry_policy=policy)],
                    access_log=[file_access_log(log)])
    resp, took = _timed(lambda: http_request(r.port(), path="/slow",
                                             headers={"x-upstream-hang": "1"}))
    assert resp.status == 504, resp
    assert 0.65 <= took < 1.4 * slow_factor(), took
    f = _logged(log, "/slow")
    assert (f["code"], f["flags"]) == ("504", "UT"), f
    st = _idle_after(ctx, r)
    assert st["cluster.c.upstream_rq_timeout"] == 1
    assert 2 <= st["cluster.c.upstream_rq_per_try_timeout"] <= 4


def test_per_try_idle_timeout(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, routes=[
        route("/", "c", retry_policy={"per_try_idle_timeout": "0.3s"})],
        access_log=[file_access_log(log)])
    # nothing from the upstream: 504 UT
    resp, took = _timed(lambda: http_request(r.port(), path="/quiet",
                                             headers={"x-upstream-delay-ms": "3000"}))
    assert resp.status == 504, resp
    assert 0.25 <= took < 1.2 * slow_factor(), took
    f = _logged(log, "/quiet")
    assert (f["code"], f["flags"]) == ("504", "UT"), f
    # activity keeps it alive: a body trickling in under the limit completes
    resp = http_request(r.port(), path="/ok", headers={"x-upstream-delay-ms": "150",
                                                      "x-upstream-body-delay-ms": "150"})
    assert resp.status == 200, resp
    # the head went out, then silence: the client sees a reset, never a complete response
    req = build_request("GET", "/stalled", {"x-upstream-body-delay-ms": "3000",
                                            "x-upstream-body-size": "1000"})
    got = raw_exchange(r.port(), req, timeout=3)
    assert got.startswith(b"HTTP/1.1 200"), got[:80]
    assert complete_response(got) is None
    assert got.end in ("rst", "eof")
    st = _idle_after(ctx, r)
    assert st["cluster.c.upstream_rq_per_try_idle_timeout"] == 2


def test_route_idle_timeout_is_408_si(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, routes=[
        route("/idle", "c", idle_timeout="0.3s"),
        route("/off", "c", idle_timeout="0s"),
        route("/", "c")],
        hcm_extra={"stream_idle_timeout": "0.6s"}, access_log=[file_access_log(log)])
    resp, took = _timed(lambda: http_request(r.port(), path="/idle",
                                             headers={"x-upstream-delay-ms": "3000"}))
    assert resp.status == 408, resp
    assert resp.body == b"stream timeout"
    assert 0.25 <= took < 0.55 * slow_factor() + 0.2, took
    f = _logged(log, "/idle")
    assert (f["code"], f["flags"]) == ("408", "SI"), f
    # 0 turns the idle timeout off for the route, even with the HCM's set
    resp, took = _timed(lambda: http_request(r.port(), path="/off",
                                             headers={"x-upstream-delay-ms": "900"}))
    assert resp.status == 200 and took >= 0.85, (resp, took)
    # other routes keep the HCM's stream_idle_timeout
    resp, took = _timed(lambda: http_request(r.port(), path="/hcm",
                                             headers={"x-upstream-delay-ms": "3000"}))
    assert resp.status == 408 and 0.55 <= took < 1.2 * slow_factor(), (resp, took)
    st = _idle_after(ctx, r)
    assert st["http.ingress_http.downstream_rq_idle_timeout"] == 2


def test_stream_idle_timeout_after_the_head_resets(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, hcm_extra={"stream_idle_timeout": "0.3s"},
                    access_log=[file_access_log(log)])
    req = build_request("GET", "/stall", {"x-upstream-body-delay-ms": "3000",
                                          "x-upstream-body-size": "100"})
    got, took = _timed(lambda: raw_exchange(r.port(), req, timeout=3))
    assert got.startswith(b"HTTP/1.1 200"), got[:80]
    assert complete_response(got) is None
    assert got.end in ("rst", "eof") and took < 1.5 * slow_factor()
    f = _logged(log, "/stall")
    assert f["flags"] == "SI", f
    _idle_after(ctx, r)


def test_request_timeout_is_408(ctx):
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, hcm_extra={"request_timeout": "0.3s"})
    with HttpConn(r.port()) as c:
        # a body that never finishes arriving
        c.send(b"POST /partial HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        resp, took = _timed(c.read_response)
    assert resp.status == 408, resp
    assert 0.25 <= took < 1.0 * slow_factor(), took
    assert stats(r)["http.ingress_http.downstream_rq_timeout"] == 1
    # a complete request is unaffected by request_timeout while the upstream works
    resp = http_request(r.port(), path="/slow-upstream", headers={"x-upstream-delay-ms": "500"})
    assert resp.status == 200
    _idle_after(ctx, r)


def _pool_options(**common):
    return {"typed_extension_protocol_options": {HTTP_OPTIONS: {
        "@type": "type.googleapis.com/" + HTTP_OPTIONS,
        "explicit_http_config": {"http_protocol_options": {}},
        "common_http_protocol_options": common}}}


def test_upstream_pool_idle_timeout(ctx):
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, cluster_extra=_pool_options(idle_timeout="0.3s"))
    t0 = time.monotonic()
    assert http_request(r.port(), path="/one").status == 200
    wait_stat(r, "cluster.c.upstream_cx_idle_timeout", 1)
    assert time.monotonic() - t0 >= 0.25
    wait_for(lambda: a.stats()["active_connections"] == 0, 2, "the pooled connection closed")
    assert stats(r)["cluster.c.upstream_cx_active"] == 0
    # The pool's timer is lazy (it keeps running while the connection is in use): a connection
    # used every 0.1 s for 0.8 s is never idle for 0.3 s, so it stays the same one.
    conns = a.stats()["connections"]
    with HttpConn(r.port()) as c:
        for i in range(8):
            assert c.request(path=f"/busy{i}").status == 200
            time.sleep(0.1)  # pacing the load, not synchronisation
        assert a.stats()["connections"] == conns + 1
        assert stats(r)["cluster.c.upstream_cx_idle_timeout"] == 1
    t0 = time.monotonic()
    wait_stat(r, "cluster.c.upstream_cx_idle_timeout", 2)
    assert time.monotonic() - t0 >= 0.15
    # the deprecated cluster-level field works too
    b = ctx.start_upstream("b")
    r2 = start_proxy(ctx, {"c": [b]},
                     cluster_extra={"common_http_protocol_options": {"idle_timeout": "0.2s"}})
    assert http_request(r2.port(), path="/two").status == 200
    wait_stat(r2, "cluster.c.upstream_cx_idle_timeout", 1)


def test_upstream_max_connection_duration(ctx):
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, cluster_extra=_pool_options(max_connection_duration="0.4s"))
    with HttpConn(r.port()) as c:
        assert c.request(path="/1").status == 200
        assert c.request(path="/2").status == 200
        assert a.stats()["connections"] == 1  # reused while young
        wait_stat(r, "cluster.c.upstream_cx_max_duration_reached", 1)
        assert c.request(path="/3").status == 200
    assert a.stats()["connections"] == 2
    # a connection busy when its time is up finishes its request, then closes
    assert http_request(r.port(), path="/long", headers={"x-upstream-delay-ms": "600"}).status \
        == 200
    wait_stat(r, "cluster.c.upstream_cx_max_duration_reached", 2)


def test_max_stream_duration_is_408_dt(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, access_log=[file_access_log(log)],
                    hcm_extra={"common_http_protocol_options": {"max_stream_duration": "0.4s"}})
    # however busy, the stream's whole life is bounded: after the head, a reset
    req = build_request("GET", "/long", {"x-upstream-body-delay-ms": "3000",
                                         "x-upstream-body-size": "10"})
    got, took = _timed(lambda: raw_exchange(r.port(), req, timeout=3))
    assert got.startswith(b"HTTP/1.1 200") and complete_response(got) is None, got
    assert 0.35 <= took < 1.2 * slow_factor(), took
    resp, took = _timed(lambda: http_request(r.port(), path="/quiet",
                                             headers={"x-upstream-delay-ms": "3000"}))
    assert resp.status == 408, resp
    assert resp.body == b"downstream duration timeout"
    f = _logged(log, "/quiet")
    assert (f["code"], f["flags"]) == ("408", "DT"), f
    st = _idle_after(ctx, r)
    assert st["http.ingress_http.downstream_rq_max_duration_reached"] == 2
    assert http_request(r.port(), path="/fast").status == 200


def test_dripping_body_keeps_idle_timers_alive_and_the_route_timeout_bounds_it(ctx):
    """F6, an upstream that drips its body one byte every 50 ms: each byte is activity, so
    the connection manager's stream_idle_timeout, the route's idle_timeout and the retry
    policy's per_try_idle_timeout (all 0.3 s, six gaps) never fire over 1.15 s of dripping;
    the route timeout, which runs until the response is complete, bounds it (a reset once the
    head went out, flag UT)."""
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, routes=[
        route("/bounded", "c", timeout="0.6s"),
        route("/", "c", idle_timeout="0.3s", timeout="10s",
              retry_policy={"per_try_idle_timeout": "0.3s"})],
        hcm_extra={"stream_idle_timeout": "0.3s"}, access_log=[file_access_log(log)])
    drip = {"x-upstream-drip-ms": "50", "x-upstream-body-size": "24"}
    body = b"abcdefghijklmnopqrstuvwx"
    resp, took = _timed(lambda: http_request(r.port(), path="/drip", headers=drip, timeout=10))
    assert resp.status == 200 and resp.body == body, resp
    assert took >= 1.1, took  # 23 gaps of 50 ms: the drip really dripped
    with HttpConn(r.port()) as c:  # chunked, one-byte chunks
        resp = c.request(path="/drip-chunked", headers=dict(drip, **{"x-upstream-chunked": "1"}))
        assert resp.status == 200 and resp.body == body, resp
    req = build_request("GET", "/bounded", {"x-upstream-drip-ms": "100",
                                            "x-upstream-body-size": "30"})
    got, took = _timed(lambda: raw_exchange(r.port(), req, timeout=5))
    assert got.startswith(b"HTTP/1.1 200") and complete_response(got) is None, got
    assert 0.55 <= took < 1.5 * slow_factor(), took
    f = _logged(log, "/bounded")
    assert f["flags"] == "UT", f
    st = _idle_after(ctx, r)
    assert st["http.ingress_http.downstream_rq_idle_timeout"] == 0, st
    assert st["cluster.c.upstream_rq_per_try_idle_timeout"] == 0, st
    assert st["cluster.c.upstream_rq_timeout"] == 1, st
