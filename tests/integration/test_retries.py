"""Retries (route and virtual-host retry_policy, Envoy's semantics): each retry_on condition
firing and not firing, num_retries, the back-off, previous_hosts sending the retry to another
endpoint, per-try timeouts, the request body replayed on the new connection, no retry once a
response went downstream or once the body outgrew the buffer limit, the trusted x-envoy-*
request headers, x-envoy-attempt-count, x-envoy-is-timeout-retry, and the URX access-log flag (fault scenarios F2, F3, F5).

Two test upstreams "a" and "b" stand behind one cluster; a request's x-upstream-only: a makes
only "a" misbehave, so the echo's name shows which endpoint finally answered."""

import socket
import time

from lib import HttpConn, Skip, free_port, http_request, raw_exchange, slow_factor
from proxyutil import (complete_response, file_access_log, log_fields, route, start_proxy,
                       stats, wait_log)

PREVIOUS_HOSTS = [{"name": "envoy.retry_host_predicates.previous_hosts",
                   "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                             "previous_hosts.v3.PreviousHostsPredicate"}}]


def _ab(ctx):
    return ctx.start_upstream("a"), ctx.start_upstream("b")


def _fail_a(**faults):
    """Request headers: the given x-upstream-* faults, on endpoint "a" only; echo from all."""
    h = {"x-upstream-only": "a", "x-upstream-echo": "1"}
    for k, v in faults.items():
        h["x-upstream-" + k.replace("_", "-")] = str(v)
    return h


def _logged(log, path):
    return log_fields(wait_log(log, lambda ln: f" {path} " in ln, what=f"log line for {path}"))


def test_5xx_retried_on_the_other_endpoint(ctx):
    a, b = _ab(ctx)
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 2, "retry_host_predicate": PREVIOUS_HOSTS}
    r = start_proxy(ctx, {"c": [a, b]}, routes=[route("/", "c", retry_policy=policy)],
                    access_log=[file_access_log(log)])
    # Round robin sends every other first attempt to "a"; each of those is retried on "b".
    for i in range(4):
        resp = http_request(r.port(), path=f"/r{i}", headers=_fail_a(status=503))
        assert resp.status == 200, resp
        assert resp.json()["name"] == "b"
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] >= 2, st
    assert st["cluster.c.upstream_rq_retry_success"] == st["cluster.c.upstream_rq_retry"]
    assert st["cluster.c.upstream_rq_503"] == st["cluster.c.upstream_rq_retry"]
    assert st["cluster.c.upstream_rq_200"] == 4
    assert a.stats()["requests"] == st["cluster.c.upstream_rq_retry"]
    assert b.stats()["requests"] == 4
    f = _logged(log, "/r0")
    assert (f["code"], f["flags"]) == ("200", "-"), f


def test_previous_hosts_avoids_the_failed_endpoint(ctx):
    # RANDOM balancing would pick "a" again for half the retries; previous_hosts (with enough
    # re-picks) sends every retry to "b".
    a, b = _ab(ctx)
    policy = {"retry_on": "5xx", "num_retries": 1, "retry_host_predicate": PREVIOUS_HOSTS,
              "host_selection_retry_max_attempts": 20}
    r = start_proxy(ctx, {"c": [a, b]}, routes=[route("/", "c", retry_policy=policy)],
                    lb_policy="RANDOM")
    with HttpConn(r.port()) as c:
        for _ in range(24):
            resp = c.request(headers=_fail_a(status=503))
            assert resp.status == 200, resp
            assert resp.json()["name"] == "b"
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] == a.stats()["requests"] > 0
    assert st.get("cluster.c.upstream_rq_retry_limit_exceeded", 0) == 0


# (retry_on, extra policy fields, faults on "a", whether it is retried)
CONDITIONS = [
    ("5xx", {}, {"status": 503}, True),
    ("5xx", {}, {"status": 500}, True),
    ("5xx", {}, {"reset": "before-headers"}, True),
    ("5xx", {}, {"status": 409}, False),
    ("gateway-error", {}, {"status": 502}, True),
    ("gateway-error", {}, {"status": 504}, True),
    ("gateway-error", {}, {"close": 1}, True),
    ("gateway-error", {}, {"status": 500}, False),
    ("reset", {}, {"reset": "before-headers"}, True),
    ("reset", {}, {"close": 1}, True),
    ("reset", {}, {"status": 503}, False),
    ("connect-failure", {}, {"reset": "before-headers"}, False),
    ("connect-failure", {}, {"status": 503}, False),
    ("retriable-4xx", {}, {"status": 409}, True),
    ("retriable-4xx", {}, {"status": 503}, False),
    ("retriable-status-codes", {"retriable_status_codes": [418, 429]}, {"status": 429}, True),
    ("retriable-status-codes", {"retriable_status_codes": [418]}, {"status": 503}, False),
    ("refused-stream", {}, {"status": 503}, False),
    ("refused-stream", {}, {"reset": "before-headers"}, False),
]


def test_each_retry_on_condition_fires_or_not(ctx):
    # One endpoint per cluster, one cluster per case: a retried request reaches "a" twice
    # (num_retries 1), a request that is not retried once.
    a = ctx.start_upstream("a")
    clusters, routes = {}, []
    for i, (cond, extra, _, _) in enumerate(CONDITIONS):
        clusters[f"c{i}"] = [a]
        policy = {"retry_on": cond, "num_retries": 1, "retry_back_off": {"base_interval": "0.001s"}}
        policy.update(extra)
        routes.append(route(f"/case{i}/", f"c{i}", retry_policy=policy))
    r = start_proxy(ctx, clusters, routes=routes)
    for i, (cond, _, faults, retried) in enumerate(CONDITIONS):
        a.reset_stats()
        resp_or_none = None
        try:
            resp_or_none = http_request(r.port(), path=f"/case{i}/x", headers=_fail_a(**faults))
        except (ConnectionError, EOFError):
            pass
        got = a.stats()["requests"] + a.stats()["incomplete_requests"]
        want = 2 if retried else 1
        assert got == want, f"{cond} with {faults}: upstream saw {got} requests, want {want}"
        st = stats(r)
        assert st.get(f"cluster.c{i}.upstream_rq_retry", 0) == (1 if retried else 0), (cond, st)
        if retried:
            # out of retries: the last answer (or failure) goes to the client, flagged URX
            assert st[f"cluster.c{i}.upstream_rq_retry_limit_exceeded"] == 1
        assert resp_or_none is None or resp_or_none.status >= 400


def test_connect_failure_retried_on_the_live_endpoint(ctx):
    dead = free_port()
    b = ctx.start_upstream("b")
    log = ctx.tmp / "access.log"
    conds = ("connect-failure", "5xx", "gateway-error", "reset")
    routes = [route(f"/{cond}/", f"c-{cond}",
                    retry_policy={"retry_on": cond, "retry_host_predicate": PREVIOUS_HOSTS})
              for cond in conds]
    routes.append(route("/none/", "c-none", retry_policy={"retry_on": "retriable-4xx"}))
    clusters = {f"c-{n}": [dead, b] for n in conds + ("none",)}
    r = start_proxy(ctx, clusters, routes=routes, access_log=[file_access_log(log)])
    for cond in conds:
        # round robin: the first request of each cluster goes to the dead endpoint first
        resp = http_request(r.port(), path=f"/{cond}/x", headers={"x-upstream-echo": "1"})
        assert resp.status == 200, (cond, resp)
        assert resp.json()["name"] == "b"
        st = stats(r)
        assert st[f"cluster.c-{cond}.upstream_cx_connect_fail"] == 1, (cond, st)
        assert st[f"cluster.c-{cond}.upstream_rq_retry"] == 1
    resp = http_request(r.port(), path="/none/x")
    assert resp.status == 503, resp
    f = _logged(log, "/none/x")
    assert (f["code"], f["flags"]) == ("503", "UF"), f


def test_num_retries_honoured_and_urx_logged(ctx):
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 3, "retry_back_off": {"base_interval": "0.002s"}}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)],
                    access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/always503", headers={"x-upstream-status": "503"})
    assert resp.status == 503, resp
    assert resp.header("x-upstream-name") == "a"  # the upstream's own last answer
    assert a.stats()["requests"] == 4
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] == 3
    assert st["cluster.c.upstream_rq_retry_limit_exceeded"] == 1
    assert st["cluster.c.upstream_rq_503"] == 4
    assert st.get("cluster.c.upstream_rq_retry_success", 0) == 0
    f = _logged(log, "/always503")
    assert (f["code"], f["flags"]) == ("503", "URX"), f

    # num_retries 0 turns retries off; the default (unset) is 1.
    a.reset_stats()
    r2 = start_proxy(ctx, {"c": [a]}, routes=[
        route("/zero", "c", retry_policy={"retry_on": "5xx", "num_retries": 0}),
        route("/default", "c", retry_policy={"retry_on": "5xx"})])
    assert http_request(r2.port(), path="/zero", headers={"x-upstream-status": "503"}).status \
        == 503
    assert a.stats()["requests"] == 1
    assert http_request(r2.port(), path="/default", headers={"x-upstream-status": "503"}).status \
        == 503
    assert a.stats()["requests"] == 3


def test_backoff_spacing(ctx):
    # Envoy's full-jitter back-off: retry k waits a uniform draw below (2^k - 1) x base, capped
    # at max_interval. With base 100 ms and 3 retries the waits are below 100, 300 and 700 ms:
    # a request takes under 1.1 s plus the exchanges, and on average about 0.55 s.
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, routes=[
        route("/jitter", "c", retry_policy={"retry_on": "5xx", "num_retries": 3,
                                            "retry_back_off": {"base_interval": "0.1s",
                                                               "max_interval": "1s"}}),
        route("/capped", "c", retry_policy={"retry_on": "5xx", "num_retries": 3,
                                            "retry_back_off": {"base_interval": "0.1s",
                                                               "max_interval": "0.1s"}}),
    ])
    sf = slow_factor()
    took = []
    with HttpConn(r.port()) as c:
        for _ in range(6):
            t0 = time.monotonic()
            assert c.request(path="/jitter", headers={"x-upstream-status": "503"}).status == 503
            took.append(time.monotonic() - t0)
    assert max(took) < 1.1 + 0.3 * sf, took
    mean = sum(took) / len(took)
    assert 0.15 < mean < 1.0 + 0.2 * sf, took
    capped = []
    with HttpConn(r.port()) as c:
        for _ in range(6):
            t0 = time.monotonic()
            assert c.request(path="/capped", headers={"x-upstream-status": "503"}).status == 503
            capped.append(time.monotonic() - t0)
    # each of the three waits is at most max_interval (100 ms)
    assert max(capped) < 0.3 + 0.3 * sf, capped
    assert a.stats()["requests"] == 12 * 4
    assert stats(r)["cluster.c.upstream_rq_retry_backoff_exponential"] == 36


def test_per_try_timeout_retried_on_another_endpoint(ctx):
    a, b = _ab(ctx)
    log = ctx.tmp / "access.log"
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s",
              "retry_host_predicate": PREVIOUS_HOSTS}
    r = start_proxy(ctx, {"c": [a, b]},
                    routes=[route("/", "c", timeout="5s", retry_policy=policy)],
                    access_log=[file_access_log(log)])
    for i in range(2):
        t0 = time.monotonic()
        resp = http_request(r.port(), path=f"/pt{i}", headers=_fail_a(hang=1))
        took = time.monotonic() - t0
        assert resp.status == 200, resp
        assert resp.json()["name"] == "b"
        assert took < 1.5 * slow_factor(), took
    st = stats(r)
    n = st["cluster.c.upstream_rq_per_try_timeout"]
    assert n >= 1 and st["cluster.c.upstream_rq_retry"] == n, st
    assert st.get("cluster.c.upstream_rq_timeout", 0) == 0
    # the hung connections to "a" were closed, never reused
    assert a.stats()["active_connections"] == 0


def test_body_replayed_on_the_new_connection(ctx):
    a, b = _ab(ctx)
    policy = {"retry_on": "reset", "num_retries": 1, "retry_host_predicate": PREVIOUS_HOSTS}
    r = start_proxy(ctx, {"c": [a, b]}, routes=[route("/", "c", retry_policy=policy)])
    body = bytes((i * 7) % 251 for i in range(200_000))
    for i in range(2):
        resp = http_request(r.port(), "POST", f"/cl{i}", headers=_fail_a(reset="before-headers"),
                            body=body)
        assert resp.status == 200, resp
        j = resp.json()
        assert (j["name"], j["body_len"]) == ("b", len(body)), j
    # a chunked request body is replayed too (re-framed as one chunk)
    for i in range(2):
        resp = http_request(r.port(), "POST", f"/ch{i}", headers=_fail_a(reset="before-headers"),
                            body=[b"x" * 1000, b"y" * 30000, b"z"])
        assert resp.status == 200, resp
        j = resp.json()
        assert (j["name"], j["body_len"]) == ("b", 31001), j
        assert ["transfer-encoding", "chunked"] in [[k.lower(), v] for k, v in j["headers"]]
    assert stats(r)["cluster.c.upstream_rq_retry"] >= 2


def test_no_retry_after_response_headers_went_downstream(ctx):
    a = ctx.start_upstream("a")
    policy = {"retry_on": "5xx,reset,gateway-error", "num_retries": 3}
    r = start_proxy(ctx, {"c": [a]}, routes=[route("/", "c", retry_policy=policy)])
    for mode in ("mid-body", "after-headers"):
        a.reset_stats()
        req = (f"GET /{mode} HTTP/1.1\r\nHost: x\r\nx-upstream-reset: {mode}\r\n"
               "x-upstream-body-size: 100000\r\n\r\n").encode()
        got = raw_exchange(r.port(), req, timeout=3)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        assert complete_response(got) is None, "a truncated response must not look complete"
        assert got.end in ("rst", "eof")
        assert a.stats()["requests"] == 1
    assert stats(r).get("cluster.c.upstream_rq_retry", 0) == 0


def test_body_over_the_buffer_limit_is_not_retried(ctx):
    a = ctx.start_upstream("a")
    policy = {"retry_on": "reset", "num_retries": 2, "retry_back_off": {"base_interval": "0.001s"}}
    routes = [{"match": {"prefix": "/"}, "route": {"cluster": "c", "retry_policy": policy},
               "per_request_buffer_limit_bytes": 4096}]
    r = start_proxy(ctx, {"c": [a]}, routes=routes)
    resp = http_request(r.port(), "POST", "/big", headers={"x-upstream-reset": "before-headers"},
                        body=b"b" * 10000)
    assert resp.status == 503, resp
    assert a.stats()["requests"] == 1
    st = stats(r)
    assert st["cluster.c.retry_or_shadow_abandoned"] == 1
    assert st.get("cluster.c.upstream_rq_retry", 0) == 0
    # under the limit the same request is retried
    a.reset_stats()
    resp = http_request(r.port(), "POST", "/small", headers={"x-upstream-reset": "before-headers"},
                        body=b"s" * 4000)
    assert resp.status == 503, resp
    assert a.stats()["requests"] == 3
    assert stats(r)["cluster.c.upstream_rq_retry"] == 2


def test_virtual_host_policy_and_route_override(ctx):
    a = ctx.start_upstream("a")
    vhost = {"name": "v", "domains": ["*"],
             "retry_policy": {"retry_on": "5xx", "num_retries": 2,
                              "retry_back_off": {"base_interval": "0.001s"}},
             "routes": [route("/own", "c", retry_policy={"retry_on": "retriable-4xx"}),
                        route("/", "c")]}
    r = start_proxy(ctx, {"c": [a]}, virtual_hosts=[vhost])
    assert http_request(r.port(), path="/inherit", headers={"x-upstream-status": "503"}).status \
        == 503
    assert a.stats()["requests"] == 3
    a.reset_stats()
    # the route's own policy replaces the virtual host's entirely: 503 is not retriable there
    assert http_request(r.port(), path="/own", headers={"x-upstream-status": "503"}).status \
        == 503
    assert a.stats()["requests"] == 1


def test_trusted_retry_headers(ctx):
    # With use_remote_address the test client, a loopback peer sending no x-forwarded-for, is
    # internal (Envoy's rule), so x-envoy-retry-on and x-envoy-max-retries count; they are
    # consumed, never forwarded.
    a = ctx.start_upstream("a")
    r = start_proxy(ctx, {"c": [a]}, hcm_extra={"use_remote_address": True})
    resp = http_request(r.port(), path="/h", headers={
        "x-envoy-retry-on": "5xx", "x-envoy-max-retries": "2", "x-upstream-status": "503"})
    assert resp.status == 503
    assert a.stats()["requests"] == 3
    a.reset_stats()
    resp = http_request(r.port(), path="/codes", headers={
        "x-envoy-retry-on": "retriable-status-codes", "x-envoy-retriable-status-codes": "418",
        "x-upstream-status": "418"})
    assert resp.status == 418
    assert a.stats()["requests"] == 2
    j = http_request(r.port(), path="/e", headers={
        "x-envoy-retry-on": "5xx", "x-envoy-max-retries": "1", "x-upstream-echo": "1"}).json()
    names = [k.lower() for k, _ in j["headers"]]
    assert "x-envoy-retry-on" not in names and "x-envoy-max-retries" not in names
    # without x-envoy-retry-on, x-envoy-max-retries alone does nothing
    a.reset_stats()
    http_request(r.port(), path="/m", headers={"x-envoy-max-retries": "3",
                                               "x-upstream-status": "503"})
    assert a.stats()["requests"] == 1


def test_attempt_count_headers(ctx):
    a, b = _ab(ctx)
    vhost = {"name": "v", "domains": ["*"], "include_request_attempt_count": True,
             "include_attempt_count_in_response": True,
             "routes": [route("/", "c", retry_policy={"retry_on": "5xx",
                                                      "retry_host_predicate": PREVIOUS_HOSTS})]}
    r = start_proxy(ctx, {"c": [a, b]}, virtual_hosts=[vhost])
    seen = set()
    # round robin: of two faulty requests in a row one goes to "a" first and is retried
    for faults in ({}, {"status": 503}, {"status": 503}):
        resp = http_request(r.port(), headers=_fail_a(**faults))
        assert resp.status == 200
        j = resp.json()
        sent = [v for k, v in j["headers"] if k.lower() == "x-envoy-attempt-count"]
        assert sent == [resp.header("x-envoy-attempt-count")], (sent, resp.headers)
        seen.add(sent[0])
    assert seen == {"1", "2"}, seen



def _sent(resp, name):
    return [v for k, v in resp.json()["headers"] if k.lower() == name]


def test_is_timeout_retry_header(ctx):
    """include_is_timeout_retry_header: a retry carries x-envoy-is-timeout-retry, "true" after
    a per-try timeout and "false" after anything else (set over a client's own); the first
    attempt does not get it. Without the option no retry carries it."""
    a, b = _ab(ctx)
    policy = {"retry_on": "5xx", "num_retries": 1, "per_try_timeout": "0.3s",
              "retry_host_predicate": PREVIOUS_HOSTS}
    vhost = {"name": "v", "domains": ["*"], "include_is_timeout_retry_header": True,
             "routes": [route("/", "c", timeout="5s", retry_policy=policy)]}
    r = start_proxy(ctx, {"c": [a, b]}, virtual_hosts=[vhost])
    retries = 0
    for faults, want in (({"hang": 1}, "true"), ({"status": 503}, "false")):
        seen = []
        for _ in range(2):
            h = _fail_a(**faults)
            h["x-envoy-is-timeout-retry"] = "client"
            resp = http_request(r.port(), headers=h)
            assert resp.status == 200, resp
            assert resp.json()["name"] == "b"
            seen.append(_sent(resp, "x-envoy-is-timeout-retry"))
        # a request that went to "b" first had one attempt and passed the client's value
        assert all(v in (["client"], [want]) for v in seen), (faults, seen)
        assert [want] in seen, (faults, seen)
        retries += seen.count([want])
    assert stats(r)["cluster.c.upstream_rq_retry"] == retries
    resp = http_request(r.port(), headers={"x-upstream-echo": "1"})
    assert resp.status == 200 and _sent(resp, "x-envoy-is-timeout-retry") == []

    vhost.pop("include_is_timeout_retry_header")
    r2 = start_proxy(ctx, {"c": [a, b]}, virtual_hosts=[vhost])
    for _ in range(2):
        resp = http_request(r2.port(), headers=_fail_a(hang=1))
        assert resp.status == 200 and resp.json()["name"] == "b", resp
        assert _sent(resp, "x-envoy-is-timeout-retry") == []
    assert stats(r2)["cluster.c.upstream_rq_retry"] >= 1

def _own_non_loopback_ipv4():
    """This host's own non-loopback IPv4 address (no packet leaves the host), or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("10.255.255.255", 9))  # a UDP "connect" sends nothing; it picks the source
        ip = s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()
    return None if ip.startswith("127.") else ip


def test_retry_headers_ignored_from_untrusted_peers(ctx):
    """With use_remote_address false (the default) and no x-forwarded-for a request is never
    internal, whatever its peer, so the x-envoy-* retry and timeout headers are ignored (and
    not forwarded). test_forwarded_headers.py covers the other external cases."""
    ip = _own_non_loopback_ipv4()
    if ip is None:
        raise Skip("no non-loopback IPv4 address on this host")
    a = ctx.start_upstream("a")
    port = free_port(ip)
    r = start_proxy(ctx, {"c": [a]}, listener_extra={
        "address": {"socket_address": {"address": ip, "port_value": port}}})
    with HttpConn(port, host=ip) as c:
        resp = c.request(path="/h", headers={"x-envoy-retry-on": "5xx",
                                             "x-envoy-max-retries": "3",
                                             "x-upstream-status": "503"})
        assert resp.status == 503
        assert a.stats()["requests"] == 1, "an external request cannot ask for retries"
        j = c.request(path="/e", headers={"x-envoy-retry-on": "5xx", "x-upstream-echo": "1",
                                          "x-envoy-upstream-rq-timeout-ms": "1",
                                          "x-envoy-upstream-rq-per-try-timeout-ms": "1"}).json()
        names = [k.lower() for k, _ in j["headers"]]
        assert "x-envoy-retry-on" not in names
        assert "x-envoy-upstream-rq-timeout-ms" not in names
        assert "x-envoy-upstream-rq-per-try-timeout-ms" not in names
        # the route's own timeout (the default 15 s) is the one in force
        assert [v for k, v in j["headers"] if k.lower() == "x-envoy-expected-rq-timeout-ms"] == \
            ["15000"]
    assert stats(r).get("cluster.c.upstream_rq_retry", 0) == 0
