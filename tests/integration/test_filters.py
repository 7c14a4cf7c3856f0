"""HTTP filters through the real proxy: fault injection (abort, delay, header control,
max_active_faults, header matchers), local rate limiting (429, x-ratelimit-* headers, refill,
the bucket shared across workers or per connection), header mutation in both directions,
typed_per_filter_config on routes and virtual hosts, filter order, config errors, and
examples/filters.yaml."""

import subprocess
import time

from lib import REPO, HttpConn, build_dir, http_request, slow_factor, to_yaml, wait_for
from proxyutil import (echo, file_access_log, header_values, log_fields, proxy_config, route,
                       start_proxy, stats, wait_log, wait_stat)

T = "type.googleapis.com/envoy.extensions.filters.http."
FAULT_TYPE = T + "fault.v3.HTTPFault"
LRL_TYPE = T + "local_ratelimit.v3.LocalRateLimit"
HM_TYPE = T + "header_mutation.v3.HeaderMutation"


def pct(n, d="HUNDRED"):
    return {"numerator": n, "denominator": d}


def fault(name="envoy.filters.http.fault", **cfg):
    return {"name": name, "typed_config": dict({"@type": FAULT_TYPE}, **cfg)}


def fault_cfg(**cfg):
    return dict({"@type": FAULT_TYPE}, **cfg)


def lrl_cfg(max_tokens, fill="60s", per_fill=None, stat_prefix="rl", **extra):
    tb = {"max_tokens": max_tokens, "fill_interval": fill}
    if per_fill is not None:
        tb["tokens_per_fill"] = per_fill
    cfg = {"@type": LRL_TYPE, "stat_prefix": stat_prefix, "token_bucket": tb,
           "filter_enabled": {"runtime_key": "rl_enabled", "default_value": pct(100)},
           "filter_enforced": {"runtime_key": "rl_enforced", "default_value": pct(100)}}
    cfg.update(extra)
    return cfg


def lrl(max_tokens, name="envoy.filters.http.local_ratelimit", **kw):
    return {"name": name, "typed_config": lrl_cfg(max_tokens, **kw)}


def append(key, value, action=None):
    hv = {"header": {"key": key, "value": value}}
    if action:
        hv["append_action"] = action
    return {"append": hv}


def hm(name="envoy.filters.http.header_mutation", req=(), resp=()):
    return {"name": name, "typed_config": {
        "@type": HM_TYPE,
        "mutations": {"request_mutations": list(req), "response_mutations": list(resp)}}}


def _log(ctx):
    path = ctx.tmp / "access.log"
    return path, [file_access_log(path)]


def _validate(ctx, cfg):
    path = ctx.tmp / "v.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    return p.returncode, p.stdout + p.stderr


# ---- fault ------------------------------------------------------------------------------------


def test_fault_abort_all_requests(ctx):
    u = ctx.start_upstream()
    path, al = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, access_log=al, http_filters=[
        fault(abort={"http_status": 503, "percentage": pct(100)})])
    for _ in range(5):
        resp = http_request(r.port(), "GET", "/x")
        assert resp.status == 503, resp
        assert resp.body == b"fault filter abort", resp.body
    assert u.stats()["requests"] == 0
    line = wait_log(path, lambda ln: "/x" in ln)
    assert log_fields(line)["flags"] == "FI", line
    assert log_fields(line)["code"] == "503", line
    s = wait_stat(r, "http.ingress_http.fault.aborts_injected", 5)
    assert s["http.ingress_http.fault.delays_injected"] == 0, s
    assert s["http.ingress_http.fault.active_faults"] == 0, s


def test_fault_abort_half_of_400_requests(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, concurrency=2, http_filters=[
        fault(abort={"http_status": 418, "percentage": pct(5000, "TEN_THOUSAND")})])
    codes = {}
    conns = [HttpConn(r.port()) for _ in range(4)]
    for i in range(400):
        st = conns[i % 4].request("GET", "/").status
        codes[st] = codes.get(st, 0) + 1
    assert set(codes) <= {200, 418}, codes
    # binomial(400, 0.5): sd 10; the band is +-6 sd
    assert 140 <= codes.get(418, 0) <= 260, codes
    assert u.stats()["requests"] == codes[200], (codes, u.stats())
    wait_stat(r, "http.ingress_http.fault.aborts_injected", codes[418])


def test_fault_fixed_delay(ctx):
    u = ctx.start_upstream()
    path, al = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, access_log=al, http_filters=[
        fault(delay={"fixed_delay": "0.3s", "percentage": pct(100)})])
    t0 = time.monotonic()
    # a body sent while the request is held arrives whole after the delay
    j = echo(r.port(), "POST", "/delayed", body=b"x" * 100000)
    took = time.monotonic() - t0
    assert j["body_len"] == 100000, j
    assert took >= 0.28, took
    line = wait_log(path, lambda ln: "/delayed" in ln)
    assert log_fields(line)["flags"] == "DI", line
    assert log_fields(line)["code"] == "200", line
    wait_stat(r, "http.ingress_http.fault.delays_injected", 1)
    wait_stat(r, "http.ingress_http.fault.active_faults", 0)


def test_fault_delay_then_abort(ctx):
    u = ctx.start_upstream()
    path, al = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, access_log=al, http_filters=[
        fault(delay={"fixed_delay": "0.1s", "percentage": pct(100)},
              abort={"http_status": 502, "percentage": pct(100)})])
    t0 = time.monotonic()
    assert http_request(r.port(), "GET", "/da").status == 502
    assert time.monotonic() - t0 >= 0.09
    line = wait_log(path, lambda ln: "/da" in ln)
    assert log_fields(line)["flags"] == "DI,FI", line
    assert u.stats()["requests"] == 0


def test_fault_header_control_only_when_configured(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        fault(abort={"header_abort": {}, "percentage": pct(100)},
              delay={"header_delay": {}, "percentage": pct(100)})])
    p = r.port()
    assert http_request(p, "GET", "/").status == 200
    assert http_request(p, "GET", "/", [("x-envoy-fault-abort-request", "418")]).status == 418
    assert http_request(p, "GET", "/", [("x-envoy-fault-abort-request", "99")]).status == 200
    # the percentage header can lower the configured 100% to 0
    assert http_request(p, "GET", "/", [("x-envoy-fault-abort-request", "418"),
                                        ("x-envoy-fault-abort-request-percentage", "0")]
                        ).status == 200
    t0 = time.monotonic()
    assert http_request(p, "GET", "/", [("x-envoy-fault-delay-request", "250")]).status == 200
    assert time.monotonic() - t0 >= 0.23

    # A fixed fault ignores the headers; so does a filter without header_* settings.
    r2 = start_proxy(ctx, {"c": [u]}, http_filters=[
        fault(abort={"http_status": 503, "percentage": pct(0)})])
    t0 = time.monotonic()
    resp = http_request(r2.port(), "GET", "/", [("x-envoy-fault-abort-request", "418"),
                                                ("x-envoy-fault-delay-request", "2000")])
    assert resp.status == 200, resp
    assert time.monotonic() - t0 < 1.5


def test_fault_headers_matcher(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        fault(abort={"http_status": 503, "percentage": pct(100)},
              headers=[{"name": "x-chaos", "exact_match": "on"}])])
    assert http_request(r.port(), "GET", "/").status == 200
    assert http_request(r.port(), "GET", "/", [("x-chaos", "off")]).status == 200
    assert http_request(r.port(), "GET", "/", [("x-chaos", "on")]).status == 503
    # the router's matcher types all work here, safe_regex included
    r2 = start_proxy(ctx, {"c": [u]}, http_filters=[
        fault(abort={"http_status": 503, "percentage": pct(100)},
              headers=[{"name": "x-chaos", "safe_regex_match": {"regex": "o[nf]+"}},
                       {"name": ":method", "exact_match": "GET"}])])
    assert http_request(r2.port(), "GET", "/", [("x-chaos", "onn")]).status == 503
    assert http_request(r2.port(), "GET", "/", [("x-chaos", "no")]).status == 200
    assert http_request(r2.port(), "POST", "/", [("x-chaos", "on")], body=b"").status == 200


def test_fault_max_active_faults(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, concurrency=2, http_filters=[
        fault(delay={"fixed_delay": "3s", "percentage": pct(100)}, max_active_faults=1)])
    held = HttpConn(r.port(), timeout=10)
    held.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_stat(r, "http.ingress_http.fault.active_faults", 1)
    # the budget is spent (across both workers): these pass undelayed
    for _ in range(4):
        t0 = time.monotonic()
        assert http_request(r.port(), "GET", "/free").status == 200
        assert time.monotonic() - t0 < 2
    s = stats(r)
    assert s["http.ingress_http.fault.faults_overflow"] == 4, s
    assert s["http.ingress_http.fault.delays_injected"] == 1, s
    assert held.read_response().status == 200
    wait_stat(r, "http.ingress_http.fault.active_faults", 0, timeout=5)


def test_fault_client_gone_during_delay(ctx):
    """A client that leaves while its request is delayed: the timer is cancelled, the fault is
    no longer active, nothing reaches the upstream."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        fault(delay={"fixed_delay": "1s", "percentage": pct(100)})])
    c = HttpConn(r.port())
    c.send(b"GET /gone HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_stat(r, "http.ingress_http.fault.active_faults", 1)
    c.close()
    wait_stat(r, "http.ingress_http.fault.active_faults", 0)
    assert http_request(r.port(), "GET", "/after").status == 200
    assert u.stats()["requests"] == 1


# ---- local rate limit -------------------------------------------------------------------------


def _until_429(port, limit, headers_of=None):
    """New connection per request until a 429; returns (responses before it, the 429)."""
    before = []
    for _ in range(limit):
        resp = http_request(port, "GET", "/rl")
        if resp.status == 429:
            return before, resp
        assert resp.status == 200, resp
        before.append(resp)
    raise AssertionError(f"no 429 in {limit} requests")


def test_local_ratelimit_429_headers_and_refill(ctx):
    u = ctx.start_upstream()
    path, al = _log(ctx)
    r = start_proxy(ctx, {"c": [u]}, concurrency=2, access_log=al, http_filters=[
        lrl(3, fill="2s", per_fill=3, enable_x_ratelimit_headers="DRAFT_VERSION_03",
            response_headers_to_add=[{"header": {"key": "x-rl", "value": "hit"}}])])
    before, limited = _until_429(r.port(), 8)
    # one bucket for both workers: three tokens in all (more only if a refill came between)
    assert len(before) >= 3, before
    last = before[-1]
    assert last.header("x-ratelimit-limit") == "3", last.headers
    assert last.header("x-ratelimit-remaining") == "0", last.headers
    assert last.header("x-rl") is None
    assert 0 <= int(last.header("x-ratelimit-reset")) <= 2
    assert limited.body == b"local_rate_limited", limited.body
    assert limited.header("x-envoy-ratelimited") == "true", limited.headers
    assert limited.header("x-rl") == "hit", limited.headers
    assert limited.header("x-ratelimit-remaining") == "0", limited.headers
    line = wait_log(path, lambda ln: " 429 " in ln)
    assert log_fields(line)["flags"] == "RL", line
    # the bucket refills at the next 2 s boundary
    wait_for(lambda: http_request(r.port(), "GET", "/rl").status == 200, 4, "a refill")
    s = stats(r)
    assert s["rl.http_local_rate_limit.rate_limited"] >= 1, s
    assert s["rl.http_local_rate_limit.enforced"] == s["rl.http_local_rate_limit.rate_limited"]
    assert s["rl.http_local_rate_limit.enabled"] == (s["rl.http_local_rate_limit.ok"] +
                                                     s["rl.http_local_rate_limit.rate_limited"])


def test_local_ratelimit_not_enforced_passes(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        lrl(1, filter_enforced={"default_value": pct(0)},
            request_headers_to_add_when_not_enforced=[
                {"header": {"key": "x-would-limit", "value": "1"}}])])
    assert http_request(r.port(), "GET", "/").status == 200
    j = echo(r.port())
    assert header_values(j, "x-would-limit") == ["1"], j
    s = stats(r)
    assert s["rl.http_local_rate_limit.rate_limited"] == 1, s
    assert s["rl.http_local_rate_limit.enforced"] == 0, s


def test_local_ratelimit_per_connection(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[
        lrl(2, local_rate_limit_per_downstream_connection=True)])
    a, b = HttpConn(r.port()), HttpConn(r.port())
    assert [a.request("GET", "/").status for _ in range(3)] == [200, 200, 429]
    assert [b.request("GET", "/").status for _ in range(3)] == [200, 200, 429]
    # a 429 keeps the connection usable
    assert a.request("GET", "/").status == 429


def test_local_ratelimit_per_route_override(ctx):
    u = ctx.start_upstream()
    limited = route("/limited", "c")
    limited["typed_per_filter_config"] = {
        "envoy.filters.http.local_ratelimit": lrl_cfg(1, stat_prefix="route_rl")}
    r = start_proxy(ctx, {"c": [u]}, routes=[limited, route("/", "c")],
                    http_filters=[lrl(1000)])
    p = r.port()
    assert http_request(p, "GET", "/limited").status == 200
    assert http_request(p, "GET", "/limited").status == 429
    for _ in range(5):
        assert http_request(p, "GET", "/free").status == 200
    s = stats(r)
    assert s["route_rl.http_local_rate_limit.rate_limited"] == 1, s
    assert s["rl.http_local_rate_limit.ok"] == 5, s


# ---- per-route fault, header mutation, order ---------------------------------------------------


def test_fault_per_route_and_virtual_host_override(ctx):
    u = ctx.start_upstream()
    ok = route("/ok", "c")
    ok["typed_per_filter_config"] = {
        "envoy.filters.http.fault": fault_cfg(abort={"http_status": 503, "percentage": pct(0)})}
    vh = {"name": "v", "domains": ["*"], "routes": [ok, route("/", "c")],
          "typed_per_filter_config": {
              "envoy.filters.http.fault": fault_cfg(abort={"http_status": 418,
                                                           "percentage": pct(100)})}}
    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=[vh], http_filters=[fault()])
    assert http_request(r.port(), "GET", "/ok").status == 200   # the route's config wins
    assert http_request(r.port(), "GET", "/other").status == 418  # then the virtual host's


def test_header_mutation_both_directions(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, http_filters=[hm(
        req=[{"remove": "x-drop"}, append("x-added", "1"),
             append("x-over", "new", "OVERWRITE_IF_EXISTS_OR_ADD")],
        resp=[{"remove": "x-upstream-name"}, append("x-resp", "yes")])])
    resp = http_request(r.port(), "GET", "/", [("x-upstream-echo", "1"), ("x-drop", "a"),
                                                ("x-over", "old")])
    assert resp.status == 200
    j = resp.json()
    assert header_values(j, "x-drop") == [], j
    assert header_values(j, "x-added") == ["1"], j
    assert header_values(j, "x-over") == ["new"], j
    assert resp.header("x-resp") == "yes", resp.headers
    assert resp.header("x-upstream-name") is None, resp.headers
    # local replies get the response mutations too
    r2 = start_proxy(ctx, {"c": [u]}, routes=[route("/only", "c")],
                     http_filters=[hm(resp=[append("x-resp", "yes")])])
    resp = http_request(r2.port(), "GET", "/nowhere")
    assert resp.status == 404 and resp.header("x-resp") == "yes", resp.headers


def test_timeout_header_added_by_a_filter_counts(ctx):
    """As in Envoy's router, the x-envoy retry and timeout headers count wherever they came
    from. The connection manager removes a client's from a request that is not internal, before
    the filters run; a filter that adds one afterwards is obeyed."""
    u = ctx.start_upstream()
    slow = [("x-upstream-delay-ms", str(int(3000 * slow_factor())))]
    r = start_proxy(ctx, {"c": [u]},
                    http_filters=[hm(req=[append("x-envoy-upstream-rq-timeout-ms", "200")])])
    t0 = time.monotonic()
    resp = http_request(r.port(), "GET", "/", slow, timeout=10 * slow_factor())
    took = time.monotonic() - t0
    assert resp.status == 504, resp
    assert took < 2 * slow_factor(), f"the filter's 200 ms timeout did not apply: {took:.2f}s"
    # The same header from the client of this external request is removed and does not count.
    r2 = start_proxy(ctx, {"c": [u]})
    quick = [("x-upstream-delay-ms", "300"), ("x-envoy-upstream-rq-timeout-ms", "50")]
    assert http_request(r2.port(), "GET", "/", quick).status == 200


def test_filter_order(ctx):
    """Requests run through the filters in order, responses in reverse."""
    u = ctx.start_upstream()
    mark = hm(name="mark", req=[append("x-chaos", "on")])
    chaos = fault(abort={"http_status": 503, "percentage": pct(100)},
                  headers=[{"name": "x-chaos", "exact_match": "on"}])
    before = start_proxy(ctx, {"c": [u]}, http_filters=[mark, chaos])
    after = start_proxy(ctx, {"c": [u]}, http_filters=[chaos, mark])
    assert http_request(before.port(), "GET", "/").status == 503
    assert http_request(after.port(), "GET", "/").status == 200

    first = hm(name="first", resp=[append("x-order", "first")])
    second = hm(name="second", resp=[append("x-order", "second")])
    r = start_proxy(ctx, {"c": [u]}, http_filters=[first, second])
    resp = http_request(r.port(), "GET", "/")
    assert resp.header_all("x-order") == ["second", "first"], resp.headers


# ---- config -----------------------------------------------------------------------------------

HCM = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config")


def test_filter_config_errors_name_their_path(ctx):
    cases = [
        ([{"name": "envoy.filters.http.nope"}],
         HCM + ".http_filters[0]: HTTP filter 'envoy.filters.http.nope' is not supported by "
               "remora yet"),
        ([fault(abort={"http_status": 700})],
         HCM + ".http_filters[0].typed_config.abort.http_status: 700 is out of range"),
        ([{"name": "x", "typed_config": {"@type": LRL_TYPE}}],
         HCM + ".http_filters[0].typed_config.stat_prefix: required"),
        ([lrl(1, fill="0.01s")],
         HCM + ".http_filters[0].typed_config.token_bucket.fill_interval: must be at least 50ms"),
        ([fault(), fault()],
         HCM + ".http_filters[1].name: duplicate HTTP filter name"),
    ]
    for filters, want in cases:
        code, out = _validate(ctx, proxy_config({"c": [9]}, http_filters=filters))
        assert code == 1 and want in out, (filters, out)

    # the router must be last
    cfg = proxy_config({"c": [9]}, http_filters=[fault()])
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    hf = hcm["typed_config"]["http_filters"]
    hf.reverse()
    code, out = _validate(ctx, cfg)
    assert code == 1 and (HCM + ".http_filters[0]: envoy.filters.http.router must be the last "
                                "filter") in out, out

    # typed_per_filter_config names a filter that is not in the chain
    bad = route("/", "c")
    bad["typed_per_filter_config"] = {"envoy.filters.http.fault": fault_cfg()}
    code, out = _validate(ctx, proxy_config({"c": [9]}, routes=[bad]))
    assert code == 1 and ("virtual_hosts[0].routes[0].typed_per_filter_config."
                          "envoy.filters.http.fault: no HTTP filter named") in out, out
    # ... or one that takes no per-route config
    bad["typed_per_filter_config"] = {"envoy.filters.http.header_mutation": {
        "@type": T + "header_mutation.v3.HeaderMutationPerRoute"}}
    code, out = _validate(ctx, proxy_config({"c": [9]}, routes=[bad], http_filters=[hm()]))
    assert code == 1 and "typed_per_filter_config for envoy.filters.http.header_mutation is " \
                         "not supported" in out, out


def test_filters_example_validates(ctx):
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c",
                        str(REPO / "examples" / "filters.yaml")],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK" in p.stdout
