"""The connection manager's trust model, as Envoy's ConnectionManagerUtility::mutateRequestHeaders:
use_remote_address, xff_num_trusted_hops and skip_xff_append; x-forwarded-for/-proto, internal
requests (x-envoy-internal, the x-envoy-* retry headers), edge requests (x-envoy-external-address,
x-request-id) and the access log's %DOWNSTREAM_REMOTE_ADDRESS% (catalogue cases 20-21 of
/work/shared/reference/hostile-inputs.md). Every check reads what the upstream received (the
test upstream echoes the request headers). The test client is a loopback peer: internal by
Envoy's default ranges."""

import json

from lib import curl, http_request
from proxyutil import (UUID4, echo, file_access_log, header_values, start_proxy, wait_log)

EDGE = {"use_remote_address": True}


def _proxy(ctx, **hcm):
    u = ctx.start_upstream()
    return u, start_proxy(ctx, {"c": [u]}, hcm_extra=hcm)


def test_default_passes_xff_through_and_trusts_it(ctx):
    """use_remote_address false (the default): x-forwarded-for is not touched (none added);
    x-forwarded-proto is this listener's scheme whatever the client said."""
    _, r = _proxy(ctx)
    j = echo(r.port(), headers={"X-Forwarded-For": "1.2.3.4, 5.6.7.8",
                                "X-Forwarded-Proto": "https"})
    assert header_values(j, "x-forwarded-for") == ["1.2.3.4, 5.6.7.8"]
    assert header_values(j, "x-forwarded-proto") == ["http"]
    j = echo(r.port())
    assert header_values(j, "x-forwarded-for") == []
    assert header_values(j, "x-forwarded-proto") == ["http"]


def test_use_remote_address_appends_the_peer(ctx):
    _, r = _proxy(ctx, **EDGE)
    j = echo(r.port(), headers={"X-Forwarded-For": "1.2.3.4"})
    assert header_values(j, "x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    j = echo(r.port())
    assert header_values(j, "x-forwarded-for") == ["127.0.0.1"]


def test_skip_xff_append(ctx):
    """skip_xff_append: nothing appended, yet the peer is still the trusted address (a loopback
    peer without x-forwarded-for is internal)."""
    _, r = _proxy(ctx, use_remote_address=True, skip_xff_append=True)
    j = echo(r.port(), headers={"X-Forwarded-For": "1.2.3.4"})
    assert header_values(j, "x-forwarded-for") == ["1.2.3.4"]
    assert header_values(j, "x-envoy-internal") == []
    j = echo(r.port())
    assert header_values(j, "x-forwarded-for") == []
    assert header_values(j, "x-envoy-internal") == ["true"]


def test_several_xff_headers_count_as_one(ctx):
    """Two x-forwarded-for headers are one list (Envoy's codecs join them): the last address is
    the second header's, so `10.0.0.1` then `1.2.3.4` is neither a single address nor
    internal."""
    _, r = _proxy(ctx)
    j = echo(r.port(), headers=[("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-For", "1.2.3.4")])
    assert header_values(j, "x-forwarded-for") == ["10.0.0.1,1.2.3.4"]
    assert header_values(j, "x-envoy-internal") == []
    _, r = _proxy(ctx, **EDGE)
    j = echo(r.port(), headers=[("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "2.2.2.2")])
    assert header_values(j, "x-forwarded-for") == ["1.1.1.1,2.2.2.2, 127.0.0.1"]


def test_trusted_hops_keep_the_clients_xfp(ctx):
    """x-forwarded-proto from the client counts only with xff_num_trusted_hops > 0."""
    _, r = _proxy(ctx, xff_num_trusted_hops=1)
    j = echo(r.port(), headers={"X-Forwarded-Proto": "https"})
    assert header_values(j, "x-forwarded-proto") == ["https"]
    j = echo(r.port())
    assert header_values(j, "x-forwarded-proto") == ["http"]
    _, r = _proxy(ctx, use_remote_address=True, xff_num_trusted_hops=0)
    j = echo(r.port(), headers={"X-Forwarded-Proto": "https"})
    assert header_values(j, "x-forwarded-proto") == ["http"]


def test_internal_only_for_a_single_internal_address(ctx):
    """use_remote_address false: the last x-forwarded-for address, when it is the only one and
    internal, makes the request internal (x-envoy-internal: true); a client's x-envoy-internal
    is always removed first."""
    _, r = _proxy(ctx)

    def internal(xff):
        hs = [("x-envoy-internal", "forged")]
        if xff is not None:
            hs.append(("X-Forwarded-For", xff))
        return header_values(echo(r.port(), headers=hs), "x-envoy-internal")

    assert internal("10.0.0.1") == ["true"]
    assert internal(" 192.168.7.7 ") == ["true"]
    assert internal("fd00::5") == ["true"]
    assert internal("1.2.3.4") == []
    assert internal("1.2.3.4, 10.0.0.1") == []  # not a single address
    assert internal("not-an-ip") == []
    assert internal("10.0.0.1:80") == []
    assert internal(None) == []  # no x-forwarded-for: no trusted address, even from loopback


def test_trusted_hops_pick_the_entry(ctx):
    """The trusted client address is the (hops + 1)th entry from the right without
    use_remote_address, the hops-th with it (the peer when hops is 0); access-logged as
    %DOWNSTREAM_REMOTE_ADDRESS% (port 0 when from x-forwarded-for, as in Envoy) beside the TCP
    peer in %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%. Past a trusted hop a request is never internal
    (its x-forwarded-for had more than one address)."""
    fmt = ("%REQ(:PATH)% remote=%DOWNSTREAM_REMOTE_ADDRESS% "
           "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
           "directip=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%\n")
    xff = "9.9.9.9, 10.0.0.2, 10.0.0.3"
    cases = [  # (hcm fields, the trusted address, from x-forwarded-for)
        ({}, "10.0.0.3", True),
        ({"xff_num_trusted_hops": 1}, "10.0.0.2", True),
        ({"xff_num_trusted_hops": 2}, "9.9.9.9", True),
        ({"xff_num_trusted_hops": 3}, "127.0.0.1", False),  # too few entries: the peer
        ({"use_remote_address": True}, "127.0.0.1", False),
        ({"use_remote_address": True, "xff_num_trusted_hops": 1}, "10.0.0.3", True),
        ({"use_remote_address": True, "xff_num_trusted_hops": 3}, "9.9.9.9", True),
    ]
    for i, (hcm, want, from_xff) in enumerate(cases):
        u = ctx.start_upstream()
        log = ctx.tmp / f"access{i}.log"
        r = start_proxy(ctx, {"c": [u]}, hcm_extra=hcm,
                        access_log=[file_access_log(log, fmt)])
        resp = http_request(r.port(), path=f"/case{i}", headers={
            "X-Forwarded-For": xff, "x-upstream-echo": "1"})
        assert resp.status == 200
        j = resp.json()
        assert header_values(j, "x-envoy-internal") == [], (hcm, j["headers"])
        if hcm.get("use_remote_address"):
            assert header_values(j, "x-envoy-external-address") == [want], (hcm, j["headers"])
        line = wait_log(log, lambda ln, i=i: ln.startswith(f"/case{i} "))
        fields = dict(f.split("=", 1) for f in line.split()[1:])
        assert fields["ip"] == want, (hcm, line)
        if from_xff:
            assert fields["remote"] == f"{want}:0", (hcm, line)
        else:
            assert fields["remote"] == fields["direct"], (hcm, line)
        assert fields["directip"] == "127.0.0.1", line
        assert fields["direct"].startswith("127.0.0.1:") and fields["direct"] != "127.0.0.1:0"


def test_retry_headers_only_for_internal_requests(ctx):
    """x-envoy-retry-on / x-envoy-max-retries count only on internal requests, and are never
    forwarded."""
    retry = {"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "2", "x-upstream-status": "503"}

    def attempts(u, r, xff):
        u.reset_stats()
        hs = dict(retry, **({"X-Forwarded-For": xff} if xff else {}))
        assert http_request(r.port(), path="/r", headers=hs).status == 503
        return u.stats()["requests"]

    u, r = _proxy(ctx, **EDGE)
    assert attempts(u, r, None) == 3  # loopback peer, no x-forwarded-for: internal
    assert attempts(u, r, "10.0.0.1") == 1  # came with x-forwarded-for: external
    u, r = _proxy(ctx)
    assert attempts(u, r, "10.0.0.1") == 3  # one internal address in x-forwarded-for
    assert attempts(u, r, "8.8.8.8") == 1
    assert attempts(u, r, None) == 1  # no trusted address at all
    j = echo(r.port(), headers={"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "2",
                                "X-Forwarded-For": "10.0.0.1"})  # internal, yet consumed
    names = [k.lower() for k, _ in j["headers"]]
    assert "x-envoy-retry-on" not in names and "x-envoy-max-retries" not in names


def test_edge_request_external_address_and_request_id(ctx):
    """Case 21: an edge request (use_remote_address, not internal) gets
    x-envoy-external-address (the trusted client address) and a new x-request-id, whatever the
    client sent; an internal one keeps the client's x-request-id and gets no
    x-envoy-external-address."""
    _, r = _proxy(ctx, **EDGE)
    forged = [("X-Forwarded-For", "127.0.0.1"), ("x-envoy-internal", "true"),
              ("X-Request-Id", "client-id-1"), ("x-envoy-external-address", "6.6.6.6")]
    j = echo(r.port(), headers=forged)
    assert header_values(j, "x-envoy-external-address") == ["127.0.0.1"]
    (rid,) = header_values(j, "x-request-id")
    assert UUID4.match(rid) and rid != "client-id-1", rid
    assert header_values(j, "x-envoy-internal") == []
    assert header_values(j, "x-forwarded-for") == ["127.0.0.1, 127.0.0.1"]
    j = echo(r.port(), headers=[("X-Request-Id", "a"), ("X-Request-Id", "b")])  # internal
    assert header_values(j, "x-request-id") == ["a", "b"]
    assert header_values(j, "x-envoy-external-address") == []
    assert header_values(j, "x-envoy-internal") == ["true"]
    # an edge request with two ids: one new id replaces both
    j = echo(r.port(), headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "a"),
                                ("X-Request-Id", "b")])
    (rid,) = header_values(j, "x-request-id")
    assert UUID4.match(rid), rid
    # not an edge: use_remote_address false keeps the client's id, adds no external address
    _, r = _proxy(ctx)
    j = echo(r.port(), headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "client-id-2")])
    assert header_values(j, "x-request-id") == ["client-id-2"]
    assert header_values(j, "x-envoy-external-address") == []
    # generate_request_id false: the id is left alone, even on an edge request
    _, r = _proxy(ctx, use_remote_address=True, generate_request_id=False)
    j = echo(r.port(), headers=[("X-Forwarded-For", "1.2.3.4"), ("X-Request-Id", "client-id-3")])
    assert header_values(j, "x-request-id") == ["client-id-3"]
    assert header_values(echo(r.port(), headers=[("X-Forwarded-For", "1.2.3.4")]),
                         "x-request-id") == []


def test_http2_requests_follow_the_same_rules(ctx):
    _, r = _proxy(ctx, **EDGE)
    p = curl(["--http2-prior-knowledge", "-H", "x-upstream-echo: 1", "-H",
              "x-forwarded-for: 1.2.3.4", "-H", "x-envoy-internal: true",
              f"http://127.0.0.1:{r.port()}/h2"])
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert header_values(j, "x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    assert header_values(j, "x-envoy-internal") == []
    assert header_values(j, "x-envoy-external-address") == ["127.0.0.1"]
    p = curl(["--http2-prior-knowledge", "-H", "x-upstream-echo: 1",
              f"http://127.0.0.1:{r.port()}/h2"])
    assert p.returncode == 0, p.stderr
    assert header_values(json.loads(p.stdout), "x-envoy-internal") == ["true"]


def test_external_requests_lose_envoys_internal_only_headers(ctx):
    """Envoy removes x-envoy-upstream-alt-stat-name, -upstream-rq-timeout-alt-response,
    -force-trace and -ip-tags from every request that is not internal, and also
    x-envoy-decorator-operation and -downstream-service-cluster/-node from edge requests; an
    internal request keeps them all but -upstream-rq-timeout-alt-response, which the router
    consumes (test_timeouts)."""
    sent = [("x-envoy-upstream-alt-stat-name", "a"),
            ("x-envoy-upstream-rq-timeout-alt-response", "1"),
            ("x-envoy-force-trace", "1"), ("x-envoy-ip-tags", "t"),
            ("x-envoy-decorator-operation", "op"),
            ("x-envoy-downstream-service-cluster", "c"),
            ("x-envoy-downstream-service-node", "n"), ("x-envoy-custom", "kept"),
            ("X-Request-Id", "client-id")]
    names = [n for n, _ in sent[:7]]
    edge_only = names[4:]
    _, r = _proxy(ctx, **EDGE)
    j = echo(r.port(), headers=sent + [("X-Forwarded-For", "1.2.3.4")])  # edge
    assert [n for n in names if header_values(j, n)] == []
    assert header_values(j, "x-envoy-custom") == ["kept"]
    (rid,) = header_values(j, "x-request-id")
    assert rid != "client-id"
    assert header_values(j, "x-envoy-external-address") == ["127.0.0.1"]  # the peer
    j = echo(r.port(), headers=sent)  # the loopback peer, no XFF: internal
    assert [n for n in names if header_values(j, n)] == [names[0]] + names[2:]
    assert header_values(j, "x-request-id") == ["client-id"]
    # not internal, not edge (use_remote_address false, an external XFF): the first four go
    _, r = _proxy(ctx)
    j = echo(r.port(), headers=sent + [("X-Forwarded-For", "1.2.3.4")])
    assert [n for n in names if header_values(j, n)] == edge_only
    assert header_values(j, "x-request-id") == ["client-id"]


def test_retry_headers_from_external_callers_are_gone_before_routing(ctx):
    """Envoy removes the x-envoy retry and timeout headers of a request that is not internal
    before it routes, so a route matching on one does not see an external caller's."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    routes = [{"match": {"prefix": "/", "headers": [{"name": "x-envoy-retry-on",
                                                      "present_match": True}]},
               "route": {"cluster": "b"}},
              {"match": {"prefix": "/"}, "route": {"cluster": "a"}}]
    r = start_proxy(ctx, {"a": [a], "b": [b]}, routes=routes, hcm_extra=EDGE)
    hs = {"x-envoy-retry-on": "5xx"}
    internal = http_request(r.port(), headers=hs)
    assert internal.header("x-upstream-name") == "b", internal.headers
    external = http_request(r.port(), headers={**hs, "X-Forwarded-For": "1.2.3.4"})
    assert external.header("x-upstream-name") == "a", external.headers
