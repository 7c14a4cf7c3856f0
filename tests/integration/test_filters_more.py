"""HTTP filters through the real proxy, part two: envoy.filters.http.health_check (answered
locally, 503 and x-envoy-immediate-health-check-fail after /healthcheck/fail, pass-through with
its answer cache, cluster_min_healthy_percentages), envoy.filters.http.buffer (the whole body
before the upstream, content-length for a chunked request, 413 past max_request_bytes,
BufferPerRoute) and envoy.filters.http.cors (a preflight answered by the proxy, an actual
request's response headers, an origin that is not allowed, shadow mode, per-route policies)."""

import subprocess

from healthutil import config, tcp_hc, wait_flags
from lib import HttpConn, Skip, build_dir, free_port, http_request, slow_factor, to_yaml, wait_for
from proxyutil import (echo, file_access_log, header_values, log_fields, proxy_config, route,
                       start_proxy, stats, wait_log, wait_stat)

T = "type.googleapis.com/envoy.extensions.filters.http."
HC_TYPE = T + "health_check.v3.HealthCheck"
BUF_TYPE = T + "buffer.v3.Buffer"
BUF_ROUTE_TYPE = T + "buffer.v3.BufferPerRoute"
CORS_TYPE = T + "cors.v3.Cors"
CORS_POLICY_TYPE = T + "cors.v3.CorsPolicy"


def hc(pass_through=False, path="/healthz", **extra):
    cfg = {"@type": HC_TYPE, "pass_through_mode": pass_through,
           "headers": [{"name": ":path", "string_match": {"exact": path}}]}
    cfg.update(extra)
    return {"name": "envoy.filters.http.health_check", "typed_config": cfg}


def buffer(max_bytes):
    return {"name": "envoy.filters.http.buffer",
            "typed_config": {"@type": BUF_TYPE, "max_request_bytes": max_bytes}}


def cors():
    return {"name": "envoy.filters.http.cors", "typed_config": {"@type": CORS_TYPE}}


def cors_policy(**kw):
    return {"envoy.filters.http.cors": dict({"@type": CORS_POLICY_TYPE}, **kw)}



# ---- health_check ------------------------------------------------------------------------------


def test_health_check_answered_locally_then_failing(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, http_filters=[hc()], access_log=[file_access_log(log)],
                    concurrency=2)
    p = r.port()
    resp = http_request(p, "GET", "/healthz")
    assert resp.status == 200, resp
    assert resp.header("x-envoy-immediate-health-check-fail") is None, resp
    assert u.stats()["requests"] == 0  # never forwarded
    assert http_request(p, "GET", "/other").status == 200
    assert u.stats()["requests"] == 1
    assert r.admin("POST", "/healthcheck/fail").status == 200

    def failing():
        x = http_request(p, "GET", "/healthz")
        return x.status == 503 and x

    resp = wait_for(failing, 5, "503 from the health check")
    assert resp.header("x-envoy-immediate-health-check-fail") == "true", resp
    # every response carries the header while failing, not only health checks
    other = http_request(p, "GET", "/other")
    assert other.status == 200 and other.header("x-envoy-immediate-health-check-fail") == "true"
    line = wait_log(log, lambda ln: "/healthz" in ln and " 503 " in ln)
    assert log_fields(line)["flags"] == "LH", line
    assert r.admin("POST", "/healthcheck/ok").status == 200
    wait_for(lambda: http_request(p, "GET", "/healthz").status == 200, 5, "200 again")
    s = stats(r)
    assert s["http.ingress_http.health_check.failed"] >= 1, s
    assert s["http.ingress_http.health_check.ok"] >= 2, s
    assert s["http.ingress_http.health_check.request_total"] == \
        s["http.ingress_http.health_check.ok"] + s["http.ingress_http.health_check.failed"], s


def test_health_check_requests_left_out_by_not_health_check_filter(ctx):
    """An access log with not_health_check_filter writes the other requests only."""
    u = ctx.start_upstream()
    log, all_log = ctx.tmp / "access.log", ctx.tmp / "all.log"
    quiet = file_access_log(log, "%REQ(:PATH)% %RESPONSE_CODE%\n")
    quiet["filter"] = {"not_health_check_filter": {}}
    r = start_proxy(ctx, {"c": [u]}, http_filters=[hc()],
                    access_log=[quiet, file_access_log(all_log, "%REQ(:PATH)%\n")])
    p = r.port()
    assert http_request(p, "GET", "/healthz").status == 200
    assert http_request(p, "GET", "/other").status == 200
    wait_log(all_log, lambda ln: "/other" in ln)
    wait_log(log, lambda ln: "/other" in ln)
    assert "/healthz" in all_log.read_text()
    assert log.read_text().splitlines() == ["/other 200"], log.read_text()


def test_health_check_pass_through_and_cache(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[hc(pass_through=True, path="/hc")])
    p = r.port()
    resp = http_request(p, "GET", "/hc", headers={"x-upstream-status": "500"})
    assert resp.status == 500, resp  # the upstream's answer
    assert u.stats()["requests"] == 1
    assert http_request(p, "GET", "/hc").status == 200
    assert u.stats()["requests"] == 2
    assert r.admin("POST", "/healthcheck/fail").status == 200
    wait_for(lambda: http_request(p, "GET", "/hc").status == 503, 5, "503 while failing")
    assert u.stats()["requests"] == 2  # answered locally while failing
    r.stop(5)

    # with cache_time, the upstream's answer is reused without asking it again
    u2 = ctx.start_upstream()
    r2 = start_proxy(ctx, {"c": [u2]},
                     http_filters=[hc(pass_through=True, path="/hc", cache_time="60s")])
    p2 = r2.port()
    assert http_request(p2, "GET", "/hc", headers={"x-upstream-status": "503"}).status == 503
    for _ in range(3):
        assert http_request(p2, "GET", "/hc").status == 503
    assert u2.stats()["requests"] == 1
    s = wait_stat(r2, "http.ingress_http.health_check.cached_response", 3)
    assert s["http.ingress_http.health_check.request_total"] == 4, s


def test_health_check_cluster_min_healthy_percentages(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        hc(cluster_min_healthy_percentages={"c": {"value": 100.0}})])
    assert http_request(r.port(), "GET", "/healthz").status == 200
    r.stop(5)
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        hc(cluster_min_healthy_percentages={"nosuch": {"value": 10.0}})])
    assert http_request(r.port(), "GET", "/healthz").status == 503
    assert stats(r)["http.ingress_http.health_check.failed_cluster_not_found"] == 1
    r.stop(5)
    # one host of two fails its active health check: 50% healthy
    dead = free_port()
    for want, pct in ((200, 50.0), (503, 60.0)):
        r = ctx.start_remora(config({"c": [u, dead]}, cluster_extra={"health_checks": [tcp_hc()]},
                                    http_filters=[hc(cluster_min_healthy_percentages={
                                        "c": {"value": pct}})]))
        wait_flags(r, "c", dead, "/failed_active_hc")
        assert http_request(r.port(), "GET", "/healthz").status == want, (want, pct)
        unhealthy = stats(r)["http.ingress_http.health_check.failed_cluster_unhealthy"]
        assert unhealthy == (want == 503), unhealthy
        r.stop(5)


# ---- buffer ------------------------------------------------------------------------------------


def test_buffer_whole_body_and_content_length(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[buffer(100000)])
    p = r.port()
    with HttpConn(p) as c:
        resp = c.request("POST", "/up", headers={"x-upstream-echo": "1"},
                         body=[b"a" * 1000, b"b" * 2345, b"c" * 7])
    assert resp.status == 200, resp
    j = resp.json()
    assert j["body_len"] == 3352, j
    # the chunked request went upstream with its length
    assert header_values(j, "content-length") == ["3352"], j
    assert header_values(j, "transfer-encoding") == [], j
    # a content-length request is unchanged
    j = echo(p, "POST", "/cl", body=b"x" * 5000)
    assert j["body_len"] == 5000 and header_values(j, "content-length") == ["5000"], j
    # a bodiless request is not held
    assert echo(p, "GET", "/get")["body_len"] == 0


def test_buffer_http2_body_without_length(ctx):
    """curl over h2c uploading stdin: no content-length on the HTTP/2 request; the upstream
    (HTTP/1.1) gets the whole body with its length instead of chunked framing."""
    import json
    import shutil
    if shutil.which("curl") is None:
        raise Skip("curl is not installed")
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[buffer(1 << 20)],
                    hcm_extra={"codec_type": "AUTO"})
    body = b"z" * 70000
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-T", "-", "-H",
                        "x-upstream-echo: 1", f"http://127.0.0.1:{r.port()}/h2up"],
                       input=body, capture_output=True, timeout=20 * slow_factor())
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["body_len"] == 70000, j
    assert header_values(j, "content-length") == ["70000"], j
    assert header_values(j, "transfer-encoding") == [], j


def test_buffer_413_past_max_request_bytes(ctx):
    u = ctx.start_upstream()
    big = route("/big", "c")
    big["typed_per_filter_config"] = {"envoy.filters.http.buffer": {
        "@type": BUF_ROUTE_TYPE, "buffer": {"max_request_bytes": 100000}}}
    off = route("/off", "c")
    off["typed_per_filter_config"] = {"envoy.filters.http.buffer": {
        "@type": BUF_ROUTE_TYPE, "disabled": True}}
    r = start_proxy(ctx, {"c": [u]}, routes=[big, off, route("/", "c")],
                    http_filters=[buffer(1024)])
    p = r.port()
    resp = http_request(p, "POST", "/small", body=b"x" * 2000)
    assert resp.status == 413, resp
    with HttpConn(p) as c:
        resp = c.request("POST", "/small", body=[b"x" * 600, b"y" * 600])
    assert resp.status == 413, resp
    assert u.stats()["requests"] == 0
    assert http_request(p, "POST", "/small", body=b"x" * 1024).status == 200  # at the limit
    assert echo(p, "POST", "/big", body=b"x" * 50000)["body_len"] == 50000
    assert echo(p, "POST", "/off", body=b"x" * 500000)["body_len"] == 500000
    wait_stat(r, "http.ingress_http.downstream_rq_too_large", 2)


# ---- cors --------------------------------------------------------------------------------------


def _cors_proxy(ctx, u, **policy):
    vh = {"name": "v", "domains": ["*"], "routes": [route("/", "c")],
          "typed_per_filter_config": cors_policy(**policy)}
    return start_proxy(ctx, {"c": [u]}, virtual_hosts=[vh], http_filters=[cors()])


POLICY = dict(allow_origin_string_match=[{"exact": "https://good.example"}],
              allow_methods="GET, POST", allow_headers="x-a, x-b", expose_headers="x-c",
              max_age="600", allow_credentials=True)


def test_cors_preflight_answered_by_the_proxy(ctx):
    u = ctx.start_upstream()
    r = _cors_proxy(ctx, u, **POLICY)
    resp = http_request(r.port(), "OPTIONS", "/x", headers={
        "Origin": "https://good.example", "Access-Control-Request-Method": "POST"})
    assert resp.status == 200, resp
    assert resp.header("access-control-allow-origin") == "https://good.example", resp
    assert resp.header("access-control-allow-methods") == "GET, POST", resp
    assert resp.header("access-control-allow-headers") == "x-a, x-b", resp
    assert resp.header("access-control-max-age") == "600", resp
    assert resp.header("access-control-allow-credentials") == "true", resp
    # Envoy's preflight answer passes the filter's own encodeHeaders too
    assert resp.header("access-control-expose-headers") == "x-c", resp
    assert u.stats()["requests"] == 0
    # an OPTIONS without access-control-request-method is not a preflight
    assert http_request(r.port(), "OPTIONS", "/x",
                        headers={"Origin": "https://good.example"}).status == 200
    assert u.stats()["requests"] == 1
    assert stats(r)["http.ingress_http.cors.origin_valid"] == 2


def test_cors_actual_request_and_invalid_origin(ctx):
    u = ctx.start_upstream()
    r = _cors_proxy(ctx, u, **POLICY)
    p = r.port()
    resp = http_request(p, "GET", "/x", headers={"Origin": "https://good.example"})
    assert resp.status == 200, resp
    assert resp.header("access-control-allow-origin") == "https://good.example", resp
    assert resp.header("access-control-expose-headers") == "x-c", resp
    assert resp.header("access-control-allow-credentials") == "true", resp
    assert resp.header("access-control-allow-methods") is None, resp
    bad = http_request(p, "GET", "/x", headers={"Origin": "https://evil.example"})
    assert bad.status == 200 and bad.header("access-control-allow-origin") is None, bad
    # a preflight from a foreign origin goes upstream (forward_not_matching_preflights)
    pre = http_request(p, "OPTIONS", "/x", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert pre.header("access-control-allow-origin") is None, pre
    assert u.stats()["requests"] == 3
    # no Origin: not counted
    assert http_request(p, "GET", "/x").header("access-control-allow-origin") is None
    s = stats(r)
    assert s["http.ingress_http.cors.origin_valid"] == 1, s
    assert s["http.ingress_http.cors.origin_invalid"] == 2, s


def test_cors_route_policy_over_virtual_host_and_shadow(ctx):
    u = ctx.start_upstream()
    shadow = route("/shadow", "c")
    shadow["typed_per_filter_config"] = cors_policy(
        filter_enabled={"default_value": {"numerator": 0}},
        shadow_enabled={"default_value": {"numerator": 100}})
    star = route("/star", "c")
    star["typed_per_filter_config"] = cors_policy(allow_methods="*", allow_headers="*")
    vh = {"name": "v", "domains": ["*"], "routes": [shadow, star, route("/", "c")],
          "typed_per_filter_config": cors_policy(**POLICY)}
    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=[vh], http_filters=[cors()])
    p = r.port()
    # shadow: counted, not enforced
    resp = http_request(p, "GET", "/shadow", headers={"Origin": "https://good.example"})
    assert resp.header("access-control-allow-origin") is None, resp
    # the route's "*" fields echo the request; the rest comes from the virtual host
    resp = http_request(p, "OPTIONS", "/star", headers={
        "Origin": "https://good.example", "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "x-z"})
    assert resp.status == 200, resp
    assert resp.header("access-control-allow-methods") == "PATCH", resp
    assert resp.header("access-control-allow-headers") == "x-z", resp
    assert resp.header("access-control-max-age") == "600", resp
    assert u.stats()["requests"] == 1
    assert stats(r)["http.ingress_http.cors.origin_valid"] == 2


def test_cors_deprecated_route_and_virtual_host_fields(ctx):
    """The deprecated `cors` of a RouteAction and a VirtualHost, merged the same way; a typed
    policy on the route replaces both."""
    u = ctx.start_upstream()
    a = route("/a", "c")
    a["route"]["cors"] = {"allow_methods": "DELETE"}
    typed = route("/typed", "c")
    typed["typed_per_filter_config"] = cors_policy(
        allow_origin_string_match=[{"exact": "https://other.example"}])
    vh = {"name": "v", "domains": ["*"], "routes": [a, typed, route("/", "c")],
          "cors": {"allow_origin_string_match": [{"exact": "https://good.example"}],
                   "allow_methods": "GET", "max_age": "5"}}
    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=[vh], http_filters=[cors()])
    p = r.port()
    pre = {"Origin": "https://good.example", "Access-Control-Request-Method": "GET"}
    resp = http_request(p, "OPTIONS", "/a", headers=pre)
    assert resp.status == 200, resp
    assert resp.header("access-control-allow-methods") == "DELETE", resp
    assert resp.header("access-control-max-age") == "5", resp
    assert resp.header("access-control-allow-origin") == "https://good.example", resp
    resp = http_request(p, "OPTIONS", "/b", headers=pre)
    assert resp.header("access-control-allow-methods") == "GET", resp
    assert u.stats()["requests"] == 0
    # the typed policy wins over the deprecated fields: this origin is foreign there
    resp = http_request(p, "GET", "/typed", headers={"Origin": "https://good.example"})
    assert resp.header("access-control-allow-origin") is None, resp
    s = stats(r)
    assert s["http.ingress_http.cors.origin_valid"] == 2, s
    assert s["http.ingress_http.cors.origin_invalid"] == 1, s


# ---- config errors -----------------------------------------------------------------------------


def _validate(ctx, cfg):
    path = ctx.tmp / "v.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    return p.returncode, p.stdout + p.stderr


HCM = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config")


def test_filters_more_config_errors_name_their_path(ctx):
    cases = [
        ([hc(cache_time="1s")], ".http_filters[0].typed_config.cache_time: only allowed with "
                                "pass_through_mode true"),
        ([{"name": "b", "typed_config": {"@type": BUF_TYPE}}],
         ".http_filters[0].typed_config.max_request_bytes: required"),
        ([{"name": "h", "typed_config": {"@type": HC_TYPE}}],
         ".http_filters[0].typed_config.pass_through_mode: required"),
    ]
    for filters, want in cases:
        code, out = _validate(ctx, proxy_config({"c": [9]}, http_filters=filters))
        assert code == 1 and HCM + want in out, (filters, out)
    vh = {"name": "v", "domains": ["*"], "routes": [route("/", "c")],
          "cors": {"allow_origin_string_match": [{"exact": "a"}, {"prefix": "b", "bogus": 1}]}}
    code, out = _validate(ctx, proxy_config({"c": [9]}, virtual_hosts=[vh],
                                            http_filters=[cors()]))
    assert code == 1 and ".virtual_hosts[0].cors.allow_origin_string_match[1].bogus: unknown " \
        "field" in out, out
    r = route("/", "c")
    r["typed_per_filter_config"] = {"envoy.filters.http.buffer": {"@type": BUF_ROUTE_TYPE}}
    vh = {"name": "v", "domains": ["*"], "routes": [r]}
    code, out = _validate(ctx, proxy_config({"c": [9]}, virtual_hosts=[vh],
                                            http_filters=[buffer(10)]))
    assert code == 1 and ("virtual_hosts[0].routes[0].typed_per_filter_config."
                          "envoy.filters.http.buffer: one of disabled, buffer is required") in out, out


def test_health_check_not_traced_and_names_the_cluster(ctx):
    """Health checks get x-envoy-upstream-healthchecked-cluster (the node's cluster) and their
    spans are not reported; the other requests' are."""
    from test_tracing import Collector, start as start_traced, zipkin_provider
    col = Collector()
    try:
        r = start_traced(ctx, {"provider": zipkin_provider()}, collector_port=col.port,
                         http_filters=[hc()])
        for _ in range(3):
            resp = http_request(r.port(), "GET", "/healthz")
            assert resp.status == 200, resp
            assert resp.header("x-envoy-upstream-healthchecked-cluster") == "svc", resp
        for _ in range(5):
            assert http_request(r.port(), "GET", "/traced").status == 200
        wait_for(lambda: len(col.spans()) >= 5, 10, "5 spans at the collector")
        urls = [s["tags"]["http.url"] for s in col.spans()]
        assert len(urls) == 5 and all(u.endswith("/traced") for u in urls), urls
    finally:
        col.close()
