"""gRPC semantics in the proxy, without a gRPC server: requests with content-type
application/grpc over h2c (nghttp, which shows the frames) and HTTP/1.1 against the HTTP/1 test
upstream. Local replies to gRPC requests are Trailers-Only responses (one HEADERS frame with
END_STREAM: :status 200, grpc-status, grpc-message); timeouts give DEADLINE_EXCEEDED (4),
circuit-breaker overflow RESOURCE_EXHAUSTED (8), no healthy upstream UNAVAILABLE (14);
grpc-timeout, max_stream_duration and max_grpc_timeout; RouteMatch.grpc; retry_on "unavailable";
the grpc_stats filter; and hostile grpc-timeout values (case 46)."""

import json
import re
import shutil
import subprocess
import time

from lib import REPO, HttpConn, Skip, build_dir, build_request, http_request, slow_factor
from proxyutil import (file_access_log, log_fields, proxy_config, route, start_proxy, stats,
                       wait_log, wait_stat)

H2 = {"codec_type": "HTTP2"}
GRPC = {"content-type": "application/grpc", "te": "trailers"}
GS_TYPE = "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"


class H2Reply:
    """What nghttp -v showed for the request's stream: the response header fields in order
    (nghttp prints them before the HEADERS frame line), whether that first HEADERS frame ended
    the stream, and how many DATA frames came."""

    def __init__(self, out):
        self.out = out
        self.fields = []
        self.headers_end_stream = None
        self.data_frames = 0
        m = re.search(r"send HEADERS frame <length=\d+, flags=0x[0-9a-f]+, stream_id=(\d+)>\n"
                      r"\s+; END_STREAM", out) or \
            re.search(r"send HEADERS frame <length=\d+, flags=0x[0-9a-f]+, stream_id=(\d+)>", out)
        sid = m.group(1) if m else "1"
        for line in out.splitlines():
            m = re.search(r"recv HEADERS frame <length=\d+, flags=0x([0-9a-f]+), stream_id=%s>" % sid,
                          line)
            if m and self.headers_end_stream is None:
                self.headers_end_stream = bool(int(m.group(1), 16) & 0x1)
                continue
            if re.search(r"recv DATA frame <length=\d+, flags=0x[0-9a-f]+, stream_id=%s>" % sid, line):
                self.data_frames += 1
            m = re.search(r"recv \(stream_id=%s\) (:?[^:\s]+): (.*)$" % sid, line)
            if m and self.headers_end_stream is None:
                self.fields.append((m.group(1), m.group(2)))

    def get(self, name):
        for n, v in self.fields:
            if n == name:
                return v
        return None


def _nghttp(port, path="/", headers=None, timeout=10):
    if shutil.which("nghttp") is None:
        raise Skip("nghttp is not installed")
    argv = ["nghttp", "-nv", f"--timeout={int(timeout)}"]
    for k, v in (headers or {}).items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    p = subprocess.run(argv, capture_output=True, timeout=(timeout + 5) * slow_factor(), text=True)
    return H2Reply(p.stdout + p.stderr)


def _assert_trailers_only(rep, grpc_status, message=None):
    assert rep.headers_end_stream is True, rep.out
    assert rep.data_frames == 0, rep.out
    assert rep.get(":status") == "200", rep.fields
    assert rep.get("content-type") == "application/grpc", rep.fields
    assert rep.get("grpc-status") == str(grpc_status), rep.fields
    assert rep.get("content-length") is None, rep.fields
    if message is not None:
        assert rep.get("grpc-message") == message, rep.fields


def _log(ctx):
    return ctx.tmp / "access.log"


def _logged(log, path):
    return log_fields(wait_log(log, lambda ln: f" {path} " in ln, what=f"log line for {path}"))


def test_grpc_no_healthy_upstream_is_unavailable_trailers_only(ctx):
    log = _log(ctx)
    r = start_proxy(ctx, {"c": []}, hcm_extra=H2, access_log=[file_access_log(log)])
    rep = _nghttp(r.port(), "/pkg.Svc/Get", GRPC)
    _assert_trailers_only(rep, 14, "no healthy upstream")
    f = _logged(log, "/pkg.Svc/Get")
    # Envoy logs the 200 it sent; the flag says why
    assert (f["code"], f["flags"]) == ("200", "UH"), f
    # a request that is not gRPC gets the plain local reply
    rep = _nghttp(r.port(), "/plain", {"content-type": "application/json"})
    assert rep.get(":status") == "503" and rep.get("grpc-status") is None, rep.fields
    assert rep.data_frames >= 1, rep.out
    f = _logged(log, "/plain")
    assert (f["code"], f["flags"]) == ("503", "UH"), f


def test_grpc_local_reply_over_http1(ctx):
    r = start_proxy(ctx, {"c": []})
    resp = http_request(r.port(), "POST", "/pkg.Svc/Get", headers=GRPC, body=b"")
    assert resp.status == 200, resp
    assert resp.header("content-type") == "application/grpc", resp.headers
    assert resp.header("grpc-status") == "14", resp.headers
    assert resp.header("grpc-message") == "no healthy upstream", resp.headers
    assert resp.header("content-length") == "0" and resp.body == b"", resp
    # application/grpc+proto and ;params count as gRPC; grpc-web does not
    resp = http_request(r.port(), "GET", "/x", headers={"content-type": "application/grpc+proto"})
    assert (resp.status, resp.header("grpc-status")) == (200, "14"), resp
    resp = http_request(r.port(), "GET", "/x", headers={"content-type": "application/grpc-web"})
    assert resp.status == 503 and resp.header("grpc-status") is None, resp
    # no route: 404 -> UNIMPLEMENTED, without a grpc-message (empty body)
    r2 = start_proxy(ctx, {"c": []}, routes=[("/only", "c")])
    resp = http_request(r2.port(), "GET", "/nope", headers=GRPC)
    assert (resp.status, resp.header("grpc-status")) == (200, "12"), resp
    assert resp.header("grpc-message") is None, resp.headers


def test_grpc_upstream_connect_failure_is_unavailable_and_message_percent_encoded(ctx):
    dead = ctx.start_upstream()
    port = dead.port
    dead.stop(5)
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [port]}, hcm_extra=H2, access_log=[file_access_log(log)])
    rep = _nghttp(r.port(), "/pkg.Svc/Get", GRPC)
    _assert_trailers_only(rep, 14)
    assert rep.get("grpc-message").startswith("upstream connect error"), rep.fields
    f = _logged(log, "/pkg.Svc/Get")
    assert (f["code"], f["flags"]) == ("200", "UF"), f
    # a direct_response body with bytes outside 0x20..0x7e and '%' is percent-encoded
    r2 = start_proxy(ctx, {"c": []}, hcm_extra=H2, routes=[
        {"match": {"prefix": "/"},
         "direct_response": {"status": 503, "body": {"inline_string": "50% d\u00e9j\u00e0\n"}}}])
    rep = _nghttp(r2.port(), "/pkg.Svc/Get", GRPC)
    _assert_trailers_only(rep, 14, "50%25 d%C3%A9j%C3%A0%0A")


def test_grpc_route_timeout_is_deadline_exceeded(ctx):
    u = ctx.start_upstream()
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2, access_log=[file_access_log(log)],
                    routes=[route("/", "c", timeout="0.3s")])
    t0 = time.monotonic()
    rep = _nghttp(r.port(), "/pkg.Svc/Slow", dict(GRPC, **{"x-upstream-delay-ms": "3000"}))
    took = time.monotonic() - t0
    _assert_trailers_only(rep, 4, "upstream request timeout")
    assert took < 2.5 * slow_factor(), took
    f = _logged(log, "/pkg.Svc/Slow")
    assert (f["code"], f["flags"]) == ("200", "UT"), f


def test_grpc_timeout_header_shorter_than_route_wins(ctx):
    u = ctx.start_upstream()
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2, access_log=[file_access_log(log)], routes=[
        route("/", "c", timeout="10s", max_stream_duration={"grpc_timeout_header_max": "0s"})])
    t0 = time.monotonic()
    rep = _nghttp(r.port(), "/pkg.Svc/Slow",
                  dict(GRPC, **{"grpc-timeout": "300m", "x-upstream-delay-ms": "5000"}))
    took = time.monotonic() - t0
    _assert_trailers_only(rep, 4, "downstream duration timeout")
    assert took < 3 * slow_factor(), took
    f = _logged(log, "/pkg.Svc/Slow")
    assert (f["code"], f["flags"]) == ("200", "DT"), f
    assert stats(r)["http.ingress_http.downstream_rq_max_duration_reached"] == 1


def _echoed(resp):
    j = resp.json()
    return {k.lower(): v for k, v in j["headers"]} if isinstance(j["headers"], list) \
        else {k.lower(): v for k, v in j["headers"].items()}


def test_grpc_timeout_rewritten_towards_upstream(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[
        route("/msd", "c", max_stream_duration={"grpc_timeout_header_max": "2s",
                                                "grpc_timeout_header_offset": "0.1s"}),
        route("/old", "c", max_grpc_timeout="0s", grpc_timeout_offset="0.05s"),
        route("/plain", "c")])
    echo = {"x-upstream-echo": "1"}
    # max_stream_duration: min(5S, max 2s) - 100 ms offset = 1900 ms, shorter: rewritten
    resp = http_request(r.port(), "GET", "/msd", headers=dict(GRPC, **echo, **{"grpc-timeout": "5S"}))
    assert resp.status == 200, resp
    assert _echoed(resp).get("grpc-timeout") == "1900m", resp.body
    # no header: the stream has no limit (no max_stream_duration, no HCM one): none added
    resp = http_request(r.port(), "GET", "/msd", headers=dict(GRPC, **echo))
    assert "grpc-timeout" not in _echoed(resp), resp.body
    # max_grpc_timeout (deprecated): 800m - 50 ms = 750 ms, the route timeout; grpc-timeout and
    # x-envoy-expected-rq-timeout-ms say so
    resp = http_request(r.port(), "GET", "/old", headers=dict(GRPC, **echo, **{"grpc-timeout": "800m"}))
    h = _echoed(resp)
    assert h.get("grpc-timeout") == "750m", resp.body
    assert h.get("x-envoy-expected-rq-timeout-ms") == "750", resp.body
    # a route without gRPC timeouts passes the header unchanged
    resp = http_request(r.port(), "GET", "/plain", headers=dict(GRPC, **echo, **{"grpc-timeout": "7S"}))
    assert _echoed(resp).get("grpc-timeout") == "7S", resp.body


def test_grpc_timeout_hostile_values_are_ignored(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[
        route("/msd", "c", max_stream_duration={"grpc_timeout_header_max": "0s"}),
        route("/old", "c", max_grpc_timeout="0.5s")])
    echo = {"x-upstream-echo": "1"}
    for bad in ("99999999999H", "123456789m", "-1S", "1h", "", "1.5S", "S"):
        resp = http_request(r.port(), "GET", "/msd", headers=dict(GRPC, **echo, **{"grpc-timeout": bad}))
        assert resp.status == 200, (bad, resp)
        # an unparseable header is not a limit: passed on untouched
        assert _echoed(resp).get("grpc-timeout", "") == bad, (bad, resp.body)
        # with max_grpc_timeout it counts as absent: the cap (500 ms) applies and is sent on
        resp = http_request(r.port(), "GET", "/old", headers=dict(GRPC, **echo, **{"grpc-timeout": bad}))
        assert _echoed(resp).get("grpc-timeout") == "500m", (bad, resp.body)
    # the biggest valid value does not overflow: 99999999H is just "very long"
    resp = http_request(r.port(), "GET", "/msd", headers=dict(GRPC, **echo, **{"grpc-timeout": "99999999H"}))
    assert resp.status == 200 and _echoed(resp).get("grpc-timeout") == "99999999H", resp
    assert r.alive()


def test_grpc_circuit_breaker_overflow_is_resource_exhausted(ctx):
    u = ctx.start_upstream()
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)],
                    cluster_extra={"circuit_breakers": {"thresholds": [{"max_requests": 1}]}})
    held = HttpConn(r.port(), timeout=10)
    held.send(build_request("GET", "/held", {"x-upstream-delay-ms": "1500"}))
    wait_stat(r, "cluster.c.upstream_rq_active", 1)
    resp = http_request(r.port(), "GET", "/pkg.Svc/Over", headers=GRPC)
    assert (resp.status, resp.header("grpc-status")) == (200, "8"), resp
    f = _logged(log, "/pkg.Svc/Over")
    assert (f["code"], f["flags"]) == ("200", "UO"), f
    assert held.read_response().status == 200
    held.close()


def test_grpc_fault_abort_and_rate_limit_are_grpc_errors(ctx):
    u = ctx.start_upstream()
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2, access_log=[file_access_log(log)], http_filters=[
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": FAULT_TYPE, "abort": {"http_status": 503, "percentage": {"numerator": 100}},
            "headers": [{"name": "x-fault", "present_match": True}]}},
        {"name": "envoy.filters.http.local_ratelimit", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "rl",
            "token_bucket": {"max_tokens": 1, "tokens_per_fill": 1, "fill_interval": "60s"},
            "filter_enabled": {"default_value": {"numerator": 100}},
            "filter_enforced": {"default_value": {"numerator": 100}}}}])
    rep = _nghttp(r.port(), "/pkg.Svc/Fault", dict(GRPC, **{"x-fault": "1"}))
    _assert_trailers_only(rep, 14, "fault filter abort")
    f = _logged(log, "/pkg.Svc/Fault")
    assert (f["code"], f["flags"]) == ("200", "FI"), f
    rep = _nghttp(r.port(), "/pkg.Svc/Ok", GRPC)  # takes the one token
    assert rep.get(":status") == "200" and rep.get("grpc-status") is None, rep.fields
    rep = _nghttp(r.port(), "/pkg.Svc/Limited", GRPC)
    _assert_trailers_only(rep, 14)  # 429 -> UNAVAILABLE
    assert rep.get("x-envoy-ratelimited") == "true", rep.fields
    f = _logged(log, "/pkg.Svc/Limited")
    assert (f["code"], f["flags"]) == ("200", "RL"), f


def test_grpc_route_match_and_service_paths(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    r = start_proxy(ctx, {"a": [a], "b": [b]}, routes=[
        {"match": {"prefix": "/pkg.Svc/", "grpc": {}}, "route": {"cluster": "a"}},
        {"match": {"path": "/pkg.Other/Exact", "grpc": {}}, "route": {"cluster": "a"}},
        route("/", "b")])
    resp = http_request(r.port(), "POST", "/pkg.Svc/Get", headers=GRPC, body=b"")
    assert resp.header("x-upstream-name") == "a", resp
    resp = http_request(r.port(), "POST", "/pkg.Other/Exact", headers=GRPC, body=b"")
    assert resp.header("x-upstream-name") == "a", resp
    resp = http_request(r.port(), "POST", "/pkg.Other/Other", headers=GRPC, body=b"")
    assert resp.header("x-upstream-name") == "b", resp
    # the same path without a gRPC content-type does not match the grpc routes
    resp = http_request(r.port(), "POST", "/pkg.Svc/Get", headers={"content-type": "application/json"},
                        body=b"")
    assert resp.header("x-upstream-name") == "b", resp


def test_grpc_retry_on_unavailable(ctx):
    u = ctx.start_upstream()
    # use_remote_address: the loopback test client is internal, so x-envoy-retry-grpc-on counts
    r = start_proxy(ctx, {"c": [u]}, routes=[
        route("/pol", "c", retry_policy={"retry_on": "unavailable", "num_retries": 2,
                                         "retry_back_off": {"base_interval": "0.001s"}}),
        route("/", "c")], hcm_extra={"use_remote_address": True})
    unavailable = {"x-upstream-response-header": "grpc-status: 14"}
    resp = http_request(r.port(), "POST", "/pol", headers=dict(GRPC, **unavailable), body=b"")
    # retried twice, then the last answer passes on
    assert (resp.status, resp.header("grpc-status")) == (200, "14"), resp
    st = wait_stat(r, "cluster.c.upstream_rq_retry", 2)
    assert st["cluster.c.upstream_rq_retry_limit_exceeded"] == 1, st
    assert u.stats()["requests"] == 3
    # a status not in retry_on is not retried
    resp = http_request(r.port(), "POST", "/pol",
                        headers=dict(GRPC, **{"x-upstream-response-header": "grpc-status: 2"}), body=b"")
    assert resp.header("grpc-status") == "2", resp
    assert stats(r)["cluster.c.upstream_rq_retry"] == 2
    # x-envoy-retry-grpc-on from an internal caller, on a route without a policy
    resp = http_request(r.port(), "POST", "/hdr",
                        headers=dict(GRPC, **unavailable, **{"x-envoy-retry-grpc-on": "unavailable"}),
                        body=b"")
    assert resp.header("grpc-status") == "14", resp
    wait_stat(r, "cluster.c.upstream_rq_retry", 3)
    # x-envoy-retry-on does not take gRPC conditions (Envoy)
    resp = http_request(r.port(), "POST", "/hdr2",
                        headers=dict(GRPC, **unavailable, **{"x-envoy-retry-on": "unavailable"}),
                        body=b"")
    assert stats(r)["cluster.c.upstream_rq_retry"] == 3


def _gs(**cfg):
    tc = {"@type": GS_TYPE}
    tc.update(cfg)
    return {"name": "envoy.filters.http.grpc_stats", "typed_config": tc}


def test_grpc_stats_filter_counts_by_method(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u], "empty": []}, routes=[route("/none/", "empty"), route("/", "c")],
                    http_filters=[_gs(individual_method_stats_allowlist={
                        "services": [{"name": "pkg.Svc", "method_names": ["Get", "Put"]}]})])
    ok = {"x-upstream-response-header": "grpc-status: 0"}
    bad = {"x-upstream-response-header": "grpc-status: 5"}
    http_request(r.port(), "POST", "/pkg.Svc/Get", headers=dict(GRPC, **ok), body=b"")
    http_request(r.port(), "POST", "/pkg.Svc/Get", headers=dict(GRPC, **bad), body=b"")
    http_request(r.port(), "POST", "/pkg.Svc/Other", headers=dict(GRPC, **ok), body=b"")
    http_request(r.port(), "POST", "/pkg.Svc/Put", headers={"content-type": "text/plain"}, body=b"")
    # a local reply (no healthy upstream) is a failure of the cluster it was routed to
    http_request(r.port(), "POST", "/none/x", headers=GRPC, body=b"")
    st = wait_stat(r, "cluster.c.grpc.pkg.Svc.Get.total", 2)
    assert st["cluster.c.grpc.pkg.Svc.Get.success"] == 1, st
    assert st["cluster.c.grpc.pkg.Svc.Get.failure"] == 1, st
    assert st["cluster.c.grpc.pkg.Svc.Put.total"] == 0, st  # not gRPC: not counted
    assert (st["cluster.c.grpc.success"], st["cluster.c.grpc.total"]) == (1, 1), st
    st = wait_stat(r, "cluster.empty.grpc.failure", 1)
    assert st["cluster.empty.grpc.total"] == 1, st
    prom = r.admin("GET", "/stats/prometheus").text
    assert 'envoy_cluster_grpc_pkg_Svc_Get_total{envoy_cluster_name="c"} 2' in prom, prom[:2000]


def test_grpc_config_validation(ctx):
    def check(cfg, want):
        path = ctx.tmp / "v.yaml"
        path.write_text(json.dumps(cfg))
        p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=10 * slow_factor())
        assert p.returncode != 0 and want in p.stdout + p.stderr, (want, p.stdout, p.stderr)

    base = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config"
    check(proxy_config({"c": []}, http_filters=[_gs(stats_for_all_methods=True)]),
          base + ".stats_for_all_methods: not supported by remora yet")
    check(proxy_config({"c": []}, http_filters=[_gs(enable_upstream_stats=True)]),
          base + ".enable_upstream_stats: not supported by remora yet")
    check(proxy_config({"c": []}, http_filters=[_gs(individual_method_stats_allowlist={
        "services": [{"name": "pkg.Svc", "method_names": []}]})]),
          base + ".individual_method_stats_allowlist.services[0].method_names: must not be empty")
    check(proxy_config({"c": []}, routes=[route("/", "c", max_stream_duration={
        "grpc_timeout_header_max": "-1s"})]), "max_stream_duration.grpc_timeout_header_max")


def test_grpc_example_validates(ctx):
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c",
                        str(REPO / "examples" / "grpc.yaml")],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    assert p.returncode == 0, p.stdout + p.stderr


def test_route_max_stream_duration_without_grpc(ctx):
    u = ctx.start_upstream()
    log = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)],
                    hcm_extra={"common_http_protocol_options": {"max_stream_duration": "0.3s"}},
                    routes=[route("/short", "c", max_stream_duration={"max_stream_duration": "0.2s"}),
                            route("/off", "c", max_stream_duration={"max_stream_duration": "0s"}),
                            route("/", "c")])
    slow = {"x-upstream-delay-ms": "800"}
    resp = http_request(r.port(), "GET", "/short", headers=slow)
    assert resp.status == 408 and resp.body == b"downstream duration timeout", resp
    assert _logged(log, "/short")["flags"] == "DT"
    # 0 turns the connection manager's limit off for this route; the route timeout does not
    # apply either (Envoy's "new" timeouts)
    resp = http_request(r.port(), "GET", "/off", headers=slow)
    assert resp.status == 200, resp
    resp = http_request(r.port(), "GET", "/other", headers=slow)
    assert resp.status == 408, resp


def test_grpc_huge_declared_message_length_passes_through(ctx):
    # case 46: a gRPC frame header declaring 0xFFFFFFFF bytes is just bytes to the proxy
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    body = b"\x00\xff\xff\xff\xff" + b"x" * 100
    resp = http_request(r.port(), "POST", "/pkg.Svc/Up", headers=dict(GRPC, **{"x-upstream-echo": "1"}),
                        body=body)
    assert resp.status == 200, resp
    assert resp.json()["body_len"] == len(body), resp.body
    assert r.alive()
