"""Basic HTTP/1.1 proxying through remora: methods and bodies, keep-alive and pipelining,
100-continue, hop-by-hop headers, x-forwarded-*, x-request-id, HTTP/1.0 (catalogue cases 19-22
of /work/shared/reference/hostile-inputs.md)."""

import json

from lib import (HttpConn, build_request, curl, http_request, parse_responses, raw_exchange,
                 wait_closed)
from proxyutil import (UUID4, complete_response, echo, echo_headers, header_values, proxy_config,
                       start_proxy)

# An edge proxy's connection manager (Envoy's edge best practice): the proxy appends the peer to
# x-forwarded-for and treats requests that came with one as external. Without it (Envoy's
# default) x-forwarded-for passes through untouched: test_forwarded_headers.py.
EDGE = {"use_remote_address": True}


def test_curl_get_and_post_with_content_length(ctx):
    u = ctx.start_upstream(name="alpha")
    r = start_proxy(ctx, {"c": [u]})
    url = f"http://127.0.0.1:{r.port()}"
    p = curl(["-i", f"{url}/hello"])
    assert p.returncode == 0, p.stderr
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"\r\nx-upstream-name: alpha" in head and body == b"alpha\n"
    p = curl(["-H", "x-upstream-echo: 1", "--data-binary", "0123456789", f"{url}/post?q=1"])
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert (j["method"], j["path"], j["body_len"]) == ("POST", "/post?q=1", 10)
    assert header_values(j, "content-length") == ["10"]
    assert header_values(j, "transfer-encoding") == []
    # A bigger body with a raw socket, and a PUT.
    j = echo(r.port(), "PUT", "/put", body=b"x" * 100000)
    assert (j["method"], j["body_len"]) == ("PUT", 100000)
    assert u.stats()["requests"] == 3


def test_chunked_request_body_is_forwarded_chunked(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    j = echo(r.port(), "POST", "/chunked", body=["hello ", "chunked ", "world" * 1000])
    assert j["body_len"] == len("hello chunked ") + 5000
    assert [v.lower() for v in header_values(j, "transfer-encoding")] == ["chunked"]
    assert header_values(j, "content-length") == []
    # curl uploads a file chunked when asked to.
    f = ctx.tmp / "up.bin"
    f.write_bytes(b"q" * 300000)
    p = curl(["-H", "x-upstream-echo: 1", "-H", "Transfer-Encoding: chunked", "-T", f,
              f"http://127.0.0.1:{r.port()}/c"], timeout=10)
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout)
    assert j["method"] == "PUT" and j["body_len"] == 300000
    assert [v.lower() for v in header_values(j, "transfer-encoding")] == ["chunked"]


def test_keepalive_reuses_client_and_upstream_connections(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    with HttpConn(r.port()) as c:
        for i in range(5):
            resp = c.request(path=f"/ka/{i}", headers={"x-upstream-body-size": str(10 + i)})
            assert resp.status == 200 and len(resp.body) == 10 + i
            assert resp.header("connection") != "close"
        assert not c.closed(0.05)
    st = u.stats()
    assert st["requests"] == 5
    assert st["connections"] == 1, f"sequential requests used {st['connections']} upstream " \
                                   "connections: the pool did not reuse the first"
    # A second client connection reuses the same idle upstream connection.
    assert http_request(r.port()).status == 200
    assert u.stats()["connections"] == 1


def test_pipelined_requests_answered_in_order(ctx):
    """Case 22: several GETs in one write get in-order responses, nothing of one leaks into
    another, and the upstream sees them in order."""
    u = ctx.start_upstream(record=True)
    r = start_proxy(ctx, {"c": [u]})
    reqs = [build_request(path="/first", headers={"x-upstream-echo": "1",
                                                  "x-upstream-delay-ms": "150"}),
            build_request(path="/second", headers={"x-upstream-echo": "1"}),
            build_request(path="/third", headers={"x-upstream-echo": "1",
                                                  "x-upstream-body-size": "0"})]
    data = raw_exchange(r.port(), b"".join(reqs), timeout=5,
                        until=lambda d: len(_try_parse(d)) == 3)
    rs = parse_responses(bytes(data))
    assert [x.status for x in rs] == [200, 200, 200], rs
    paths = [x.json()["path"] for x in rs]
    assert paths == ["/first", "/second", "/third"], paths
    rec = u.recorded()
    order = [rec.find(p) for p in (b"GET /first ", b"GET /second ", b"GET /third ")]
    assert -1 not in order and order == sorted(order), order
    assert u.stats()["requests"] == 3


def _try_parse(d):
    try:
        return parse_responses(d)
    except (EOFError, ValueError):
        return []


def test_expect_100_continue(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    with HttpConn(r.port()) as c:
        c.send(b"POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
               b"x-upstream-echo: 1\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            d = c.sock.recv(1)
            assert d, f"closed after {interim!r}"
            interim += d
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        c.send(b"hello")
        resp = c.read_response("POST")
        assert resp.status == 200, resp
        assert resp.json()["body_len"] == 5
        # And the connection is still good for another request.
        assert c.request(path="/after").status == 200
    # curl waits for the 100 before it sends the body.
    f = ctx.tmp / "body.bin"
    f.write_bytes(b"e" * (2 * 1024 * 1024))
    p = curl(["-i", "-H", "x-upstream-echo: 1", "-H", "Expect: 100-continue", "--data-binary",
              f"@{f}", f"http://127.0.0.1:{r.port()}/curl"], timeout=10)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), p.stdout[:200]
    assert json.loads(p.stdout.split(b"\r\n\r\n", 2)[2])["body_len"] == 2 * 1024 * 1024


def test_hop_by_hop_headers_removed(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    j = echo(r.port(), path="/hop", headers=[
        ("Connection", "keep-alive, X-Named-Hop, x-other-hop"),
        ("Keep-Alive", "timeout=5"),
        ("TE", "deflate"),  # (TE is kept only as "te: trailers": test_h2_upstream.py)
        ("Upgrade", "websocket"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Named-Hop", "1"),
        ("X-Other-Hop", "2"),
        ("X-Kept", "3"),
    ])
    names = [k for k, _ in echo_headers(j)]
    for gone in ("connection", "keep-alive", "te", "upgrade", "proxy-connection",
                 "x-named-hop", "x-other-hop"):
        assert gone not in names, f"{gone} reached the upstream: {j['headers']}"
    assert header_values(j, "x-kept") == ["3"]


def test_upgrade_request_is_not_tunnelled(ctx):
    """Case 25: an Upgrade request the upstream answers with 200 stays HTTP: the upstream sees
    no Upgrade, and the next request on the connection is a normal request."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    with HttpConn(r.port()) as c:
        resp = c.request(path="/ws", headers=[("Connection", "Upgrade"),
                                              ("Upgrade", "websocket"),
                                              ("x-upstream-echo", "1")])
        assert resp.status == 200, resp
        names = [k for k, _ in echo_headers(resp.json())]
        assert "upgrade" not in names and "connection" not in names
        resp = c.request(path="/next", headers={"x-upstream-echo": "1"})
        assert resp.status == 200 and resp.json()["path"] == "/next"


def test_connection_header_cannot_remove_proxy_xff(ctx):
    """Case 20: `Connection: close, X-Forwarded-For` must not make the proxy drop its own
    x-forwarded-for (a client could hide its address that way); with use_remote_address."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=EDGE)
    with HttpConn(r.port()) as c:
        resp = c.request(path="/xff", headers=[("Connection", "close, X-Forwarded-For"),
                                               ("X-Forwarded-For", "1.2.3.4"),
                                               ("x-upstream-echo", "1")])
        assert resp.status == 200
        xff = header_values(resp.json(), "x-forwarded-for")
        assert len(xff) == 1 and xff[0].split(",")[-1].strip() == "127.0.0.1", xff
        assert resp.header("connection") == "close"
        wait_closed(c.sock)


def test_x_forwarded_for_and_proto(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=EDGE)
    j = echo(r.port(), headers={"X-Forwarded-For": "1.2.3.4"})
    assert header_values(j, "x-forwarded-for") == ["1.2.3.4, 127.0.0.1"]
    assert header_values(j, "x-forwarded-proto") == ["http"]
    j = echo(r.port())
    assert header_values(j, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(j, "x-forwarded-proto") == ["http"]


def test_underscore_xff_is_not_xff(ctx):
    """Case 19: `x_forwarded_for` is a different header (headers_with_underscores_action
    ALLOW, Envoy's default): it never becomes or replaces the proxy's x-forwarded-for."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=EDGE)
    j = echo(r.port(), headers={"x_forwarded_for": "1.2.3.4"})
    assert header_values(j, "x-forwarded-for") == ["127.0.0.1"]
    assert header_values(j, "x_forwarded_for") in ([], ["1.2.3.4"])


def test_untrusted_envoy_headers_stripped(ctx):
    """Case 21 (part): x-envoy-internal and x-forwarded-client-cert from a client are not
    passed on (Envoy strips x-envoy-* internal headers from untrusted clients, and
    forward_client_cert_details defaults to SANITIZE). With use_remote_address a request that
    came with x-forwarded-for is external, whatever address it names."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=EDGE)
    j = echo(r.port(), headers=[("x-envoy-internal", "true"),
                                ("x-forwarded-client-cert", "By=spiffe://evil;Hash=00"),
                                ("X-Forwarded-For", "127.0.0.1")])
    assert header_values(j, "x-envoy-internal") == []
    assert header_values(j, "x-forwarded-client-cert") == [], j["headers"]
    # The peer the proxy saw is always the last hop.
    assert header_values(j, "x-forwarded-for")[0].endswith(", 127.0.0.1")


def test_request_id_generated_and_kept(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    ids = set()
    for _ in range(3):
        (rid,) = header_values(echo(r.port()), "x-request-id")
        assert UUID4.match(rid), f"x-request-id {rid!r} is not a UUIDv4"
        ids.add(rid)
    assert len(ids) == 3, "generated request ids repeat"
    j = echo(r.port(), headers={"X-Request-Id": "client-chosen-id-42"})
    assert header_values(j, "x-request-id") == ["client-chosen-id-42"]


def test_router_suppress_envoy_headers(ctx):
    """The router's suppress_envoy_headers, as in Envoy: no x-envoy-expected-rq-timeout-ms and
    no x-envoy-original-path (after a prefix_rewrite) to the upstream, and no
    x-envoy-upstream-service-time to the client, where an upstream's own
    x-envoy-upstream-service-time then passes as it was sent, and no x-envoy-overloaded on a
    circuit breaker's 503. The connection manager's headers (server, date, x-request-id) stay.
    Without it, the router adds all four and replaces the upstream's service time."""
    u = ctx.start_upstream()
    hs = [("x-upstream-echo", "1"),
          ("x-upstream-response-header", "x-envoy-upstream-service-time: 777")]
    routes = [{"match": {"prefix": "/old/"}, "route": {"cluster": "c", "prefix_rewrite": "/new/"}},
              {"match": {"prefix": "/full"}, "route": {"cluster": "full"}}]
    for suppress in (False, True):
        cfg = proxy_config({"c": [u.port], "full": [u.port]}, routes=routes)
        full = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "full"][0]
        full["circuit_breakers"] = {"thresholds": [{"max_requests": 0}]}
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        router = hcm["typed_config"]["http_filters"][-1]
        assert router["name"] == "envoy.filters.http.router"
        if suppress:
            router["typed_config"]["suppress_envoy_headers"] = True
        r = ctx.start_remora(cfg)
        resp = http_request(r.port(), "GET", "/old/x", hs)
        assert resp.status == 200, resp
        sent = json.loads(resp.body)
        assert sent["path"] == "/new/x", sent["path"]
        ust = [v for k, v in resp.headers if k.lower() == "x-envoy-upstream-service-time"]
        expected = header_values(sent, "x-envoy-expected-rq-timeout-ms")
        original = header_values(sent, "x-envoy-original-path")
        if suppress:
            assert (ust, expected, original) == (["777"], [], []), (resp.headers, sent["headers"])
        else:
            assert len(ust) == 1 and ust[0].isdigit() and ust[0] != "777", resp.headers
            assert (expected, original) == (["15000"], ["/old/x"]), sent["headers"]
        assert resp.header("server") == "envoy" and resp.header("date"), resp.headers
        assert UUID4.match(header_values(sent, "x-request-id")[0]), sent["headers"]
        over = http_request(r.port(), "GET", "/full")
        assert over.status == 503, over
        assert over.header("x-envoy-overloaded") == (None if suppress else "true"), over.headers


def test_http10_gets_426(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    data = raw_exchange(r.port(), b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", timeout=3)
    resp = complete_response(data)
    assert resp is not None and resp.status == 426, data
    assert data.end in ("eof", "rst"), "HTTP/1.0 connection left open after the 426"
    assert u.stats()["requests"] == 0
    assert http_request(r.port()).status == 200


def test_head_request_has_no_body(ctx):
    """A HEAD response announces a length but has no body: the proxy must not wait for one
    (the next response on the connection would stall or be corrupted)."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, extra_args=["--drain-time-s", "1"])
    with HttpConn(r.port(), timeout=2) as c:
        resp = c.request("HEAD", "/h", headers={"x-upstream-body-size": "1000"})
        assert resp.status == 200 and resp.header("content-length") == "1000"
        # Any body bytes would be parsed as the start of the next response.
        resp = c.request("GET", "/g", headers={"x-upstream-body-size": "3"})
        assert resp.status == 200 and resp.body == b"abc"
