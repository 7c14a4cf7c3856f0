"""Upstream faults through remora (fault scenarios F1-F3, F5, F21 and catalogue case 31): refused
connections, no endpoints, route timeouts, resets before and during the response, malformed
responses, bytes the upstream was not asked for, and an answer that comes before the request's
body was read."""

import selectors
import socket
import struct
import time

from lib import (HttpConn, build_request, free_port, http_request, raw_exchange,
                 recv_until_closed, slow_factor, wait_for)
from proxyutil import (blackhole_port, complete_response, file_access_log, log_fields, route, start_proxy,
                       stats, wait_log)


def _logged(log, path):
    return log_fields(wait_log(log, lambda ln: f" {path} " in ln, what=f"log line for {path}"))


def test_connect_refused_is_503_uf(ctx):
    dead = free_port()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"dead": [dead]}, access_log=[file_access_log(log)])
    t0 = time.monotonic()
    resp = http_request(r.port(), path="/refused")
    assert resp.status == 503, resp
    assert time.monotonic() - t0 < 1.0 * slow_factor(), "a refused connect must fail fast"
    f = _logged(log, "/refused")
    assert (f["code"], f["flags"]) == ("503", "UF"), f
    assert f["upstream"] == f"127.0.0.1:{dead}"
    st = stats(r)
    assert st["cluster.dead.upstream_cx_connect_fail"] == 1
    assert st.get("cluster.dead.upstream_rq_200", 0) == 0
    assert st["http.ingress_http.downstream_rq_5xx"] == 1
    # Keep-alive survives a local 503 for a complete request.
    with HttpConn(r.port()) as c:
        assert c.request(path="/a").status == 503
        assert c.request(path="/b").status == 503
    assert stats(r)["cluster.dead.upstream_cx_connect_fail"] == 3


def test_connect_timeout_is_503_uf(ctx):
    port = blackhole_port(ctx)
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"bh": [port]}, connect_timeout="0.25s",
                    access_log=[file_access_log(log)])
    t0 = time.monotonic()
    resp = http_request(r.port(), path="/blackhole")
    took = time.monotonic() - t0
    assert resp.status == 503, resp
    assert 0.2 <= took < 1.0 * slow_factor(), f"503 after {took:.2f}s with connect_timeout 0.25s"
    f = _logged(log, "/blackhole")
    assert (f["code"], f["flags"]) == ("503", "UF"), f
    st = stats(r)
    assert st["cluster.bh.upstream_cx_connect_timeout"] == 1
    assert st["cluster.bh.upstream_cx_connect_fail"] == 1
    assert st["cluster.bh.upstream_cx_active"] == 0


def test_no_endpoints_is_503_uh(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u], "empty": []},
                    routes=[route("/empty", "empty"), route("/", "c")],
                    access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/empty/x")
    assert resp.status == 503, resp
    f = _logged(log, "/empty/x")
    assert (f["code"], f["flags"], f["upstream"]) == ("503", "UH", "-"), f
    assert http_request(r.port(), path="/ok").status == 200
    assert stats(r)["cluster.empty.upstream_cx_none_healthy"] == 1


def test_route_timeout_is_504_ut(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/", "c", timeout="0.5s")],
                    access_log=[file_access_log(log)])
    t0 = time.monotonic()
    resp = http_request(r.port(), path="/slow", headers={"x-upstream-delay-ms": "3000"})
    took = time.monotonic() - t0
    assert resp.status == 504, resp
    assert 0.45 <= took < 1.5 * slow_factor(), f"504 after {took:.2f}s, route timeout is 0.5s"
    f = _logged(log, "/slow")
    assert (f["code"], f["flags"]) == ("504", "UT"), f
    st = stats(r)
    assert st["cluster.c.upstream_rq_timeout"] == 1
    # The timed-out upstream connection is not reused: the next request gets a fresh answer.
    assert http_request(r.port(), path="/fast").status == 200
    assert u.stats()["connections"] == 2


def test_upstream_reset_before_headers_is_503_uc(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/rst", headers={"x-upstream-reset": "before-headers"})
    assert resp.status == 503, resp
    resp = http_request(r.port(), path="/fin", headers={"x-upstream-close": "1"})
    assert resp.status == 503, resp
    for path in ("/rst", "/fin"):
        f = _logged(log, path)
        assert (f["code"], f["flags"]) == ("503", "UC"), f
    assert http_request(r.port(), path="/after").status == 200


def _assert_incomplete(reply, n, what):
    """The client must not see a complete-looking response: either no response, or one whose
    body is short, ended by a reset or close."""
    resp = complete_response(reply)
    assert resp is None, f"{what}: a complete response reached the client: {resp!r}"
    assert reply.end in ("rst", "eof"), f"{what}: connection left open ({reply.end})"
    if reply.startswith(b"HTTP/1.1 200"):
        body = bytes(reply).split(b"\r\n\r\n", 1)[1]
        assert len(body) < n, what


def test_upstream_reset_mid_body_resets_client(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    n = 200000
    reply = raw_exchange(r.port(), build_request(path="/midbody", headers={
        "x-upstream-reset": "mid-body", "x-upstream-body-size": str(n)}), timeout=3)
    _assert_incomplete(reply, n, "reset mid-body")
    assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
    f = _logged(log, "/midbody")
    assert f["flags"] != "-", f
    assert http_request(r.port(), path="/after").status == 200


def test_upstream_short_body_never_looks_complete(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    reply = raw_exchange(r.port(), build_request(path="/short", headers={
        "x-upstream-malformed": "short-body"}), timeout=3)
    _assert_incomplete(reply, 100, "short body")
    # Same with keep-alive: the next request on the connection must not be answered by a
    # connection the client thinks is in sync.
    with HttpConn(r.port()) as c:
        c.send(build_request(path="/short2", headers={"x-upstream-malformed": "short-body"}))
        data = recv_until_closed(c.sock, 3)
        assert complete_response(data) is None, data
    assert http_request(r.port(), path="/after").status == 200


MALFORMED = ["cl-te", "bare-lf", "bare-cr", "many-100", "huge-headers"]


def test_malformed_upstream_responses_are_502_upe(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    failures = []
    for mode in MALFORMED:
        reply = raw_exchange(r.port(), build_request(path=f"/bad/{mode}", headers={
            "x-upstream-malformed": mode}), timeout=3, until=lambda d: complete_response(d))
        resp = complete_response(reply)
        if resp is None or resp.status != 502:
            failures.append(f"{mode}: {bytes(reply)[:200]!r} end={reply.end}")
            continue
        if resp.interim:
            failures.append(f"{mode}: {len(resp.interim)} interim responses forwarded")
        if resp.header("set-cookie") is not None:
            failures.append(f"{mode}: set-cookie leaked")
    assert not failures, "\n".join(failures)
    for mode in MALFORMED:
        f = _logged(log, f"/bad/{mode}")
        assert (f["code"], f["flags"]) == ("502", "UPE"), (mode, f)
    assert stats(r)["cluster.c.upstream_cx_protocol_error"] == len(MALFORMED)
    assert http_request(r.port(), path="/after").status == 200


def test_extra_response_never_reaches_next_client(ctx):
    """Case 31: bytes after a complete response (an unsolicited second response) close that
    upstream connection; neither this client nor the next one ever sees them."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    with HttpConn(r.port()) as c:
        resp = c.request(path="/x1", headers={"x-upstream-malformed": "extra-response"})
        assert resp.status == 200 and resp.body == b"upstream\n"
        for i in range(3):
            resp = c.request(path=f"/unique-{i}", headers={"x-upstream-echo": "1"})
            assert resp.status == 200, resp
            assert resp.header("x-upstream-extra") is None, resp
            assert resp.json()["path"] == f"/unique-{i}"
    # Other clients too.
    for i in range(3):
        resp = http_request(r.port(), path=f"/other-{i}", headers={"x-upstream-echo": "1"})
        assert resp.header("x-upstream-extra") is None and resp.json()["path"] == f"/other-{i}"
    assert u.stats()["connections"] == 2, "the upstream connection that sent extra bytes " \
                                          "was reused"


def test_unsolicited_bytes_on_idle_pooled_connection(ctx):
    """Unsolicited bytes after a response, whether they arrive with it or later on the idle
    pooled connection, close that connection: with a new client connection for every
    request, no later request is ever answered with them."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    for i in range(5):
        resp = http_request(r.port(), path=f"/p{i}",
                            headers={"x-upstream-malformed": "extra-response"})
        assert resp.status == 200 and resp.header("x-upstream-extra") is None, resp
        assert resp.body == b"upstream\n"
    for i in range(5):
        resp = http_request(r.port(), path=f"/q{i}", headers={"x-upstream-echo": "1"})
        assert resp.json()["path"] == f"/q{i}"
    assert stats(r)["cluster.c.upstream_rq_200"] == 10


def test_upstream_connection_close_is_honoured(ctx):
    """`connection: close` from the upstream closes that upstream connection; the client's
    connection stays open and the next request uses a new upstream connection."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    with HttpConn(r.port()) as c:
        resp = c.request(path="/cc", headers={"x-upstream-connection-close": "1"})
        assert resp.status == 200 and resp.header("connection") != "close"
        # Several rounds: a pooled connection the upstream is closing would fail some of them
        # with 503 (the FIN races the reuse).
        for i in range(20):
            resp = c.request(path=f"/next{i}", headers={"x-upstream-connection-close": "1"})
            assert resp.status == 200, (i, resp)
    assert u.stats()["connections"] == 21


def test_upstream_101_is_502_and_closes_that_connection(ctx):
    """Case 25: the proxy strips Upgrade, so a 101 from the upstream is a protocol error: 502,
    and that upstream connection (now in an unknown state) is closed, not kept open forever
    outside the pool."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    resp = http_request(r.port(), path="/ws", headers={"x-upstream-status": "101"})
    assert resp.status == 502, resp
    wait_for(lambda: u.stats()["active_connections"] == 0, 2,
             "the proxy to close the upstream connection that answered 101")
    assert stats(r)["cluster.c.upstream_cx_active"] == 0


def test_upstream_101_then_close_does_not_touch_finished_stream(ctx):
    """An upstream that answers 101 and then closes: the 502 has finished the stream, so the
    close must not reach it (under ASan this was a heap-use-after-free in upstream.c fail())."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    for i in range(3):
        resp = http_request(r.port(), path=f"/ws{i}", headers={
            "x-upstream-status": "101", "x-upstream-connection-close": "1"})
        assert resp.status == 502, resp
    wait_for(lambda: u.stats()["active_connections"] == 0, 2, "the upstream to close")
    wait_for(lambda: stats(r)["cluster.c.upstream_cx_active"] == 0, 2,
             "the proxy to see the upstream close")
    assert r.alive()
    assert http_request(r.port(), path="/after").status == 200


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_client_reset_cancels_upstream_request(ctx):
    """F20: a client that resets its connection while its request waits at the upstream (or
    halfway through sending its body) cancels the upstream request: that upstream connection
    is closed, never reused, and the access log says DC."""
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    s = socket.create_connection(("127.0.0.1", r.port()))
    s.sendall(build_request(path="/abandoned", headers={"x-upstream-hang": "1"}))
    wait_for(lambda: u.stats()["active_connections"] == 1 and u.stats()["requests"] == 1, 2,
             "the request to reach the upstream")
    _reset(s)
    wait_for(lambda: u.stats()["active_connections"] == 0, 2,
             "the proxy to close the upstream connection of the reset client")
    f = _logged(log, "/abandoned")
    assert "DC" in f["flags"], f
    # Halfway through an upload.
    s = socket.create_connection(("127.0.0.1", r.port()))
    s.sendall(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n" +
              b"u" * 100000)
    wait_for(lambda: u.stats()["active_connections"] == 1, 2, "the upload to reach upstream")
    _reset(s)
    wait_for(lambda: u.stats()["active_connections"] == 0, 2, "the upload to be cancelled")
    st = u.stats()
    assert st["requests"] == 1 and st["incomplete_requests"] == 1, st
    assert http_request(r.port(), path="/after").status == 200
    assert u.stats()["connections"] == 3
    st = stats(r)
    assert st["cluster.c.upstream_rq_active"] == 0
    assert st["http.ingress_http.downstream_rq_rx_reset"] == 2


def _send_body_until_answered(port, head, body_len, method="POST", deadline_s=10.0):
    """Sends ``head`` then up to ``body_len`` body bytes in 64 KiB pieces, reading as it goes,
    and stops sending once a complete response arrived. Returns (response, bytes sent, the
    socket)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    pending, sent, data = head, 0, b""
    piece = b"x" * 65536
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.monotonic() + deadline_s * slow_factor()
    resp = None
    while resp is None and time.monotonic() < deadline:
        for _, ev in sel.select(0.1):
            if ev & selectors.EVENT_READ:
                try:
                    d = s.recv(65536)
                except ConnectionResetError:
                    d = b""
                if not d:
                    resp = complete_response(data, method)
                    sel.close()
                    return resp, sent, s
                data += d
                resp = complete_response(data, method)
            if ev & selectors.EVENT_WRITE and resp is None:
                if not pending and sent < body_len:
                    pending = piece[:min(len(piece), body_len - sent)]
                    sent += len(pending)
                if pending:
                    try:
                        n = s.send(pending)
                        pending = pending[n:]
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        pass
                else:
                    sel.modify(s, selectors.EVENT_READ)
    sel.close()
    return resp, sent, s


def test_early_upstream_413_is_relayed_and_the_body_stops(ctx):
    """F21: the upstream answers 413 as soon as the head arrives, without reading the body,
    and closes. remora relays the 413 whole, stops sending the body upstream, closes the
    client's connection (its request can never finish now), and goes on serving."""
    a = ctx.start_upstream("a")
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [a]}, access_log=[file_access_log(log)])
    big = 64 * 1024 * 1024
    head = (f"POST /early HTTP/1.1\r\nhost: x\r\ncontent-length: {big}\r\n"
            "x-upstream-early: 1\r\nx-upstream-status: 413\r\n\r\n").encode()
    resp, sent, s = _send_body_until_answered(r.port(), head, big)
    try:
        assert resp is not None, "no complete response to the early 413"
        assert resp.status == 413 and resp.body == b"a\n", resp
        assert sent < big, "the client sent the whole body before the 413 came back"
        # The request cannot complete on this connection any more: remora closes it.
        s.setblocking(True)
        recv_until_closed(s, timeout=5)
    finally:
        s.close()
    f = _logged(log, "/early")
    assert f["code"] == "413", f
    st = a.stats()
    assert st["requests"] == 1, st
    assert st["bytes_received"] < big // 2, st
    wait_for(lambda: a.stats()["active_connections"] == 0, what="the upstream connection closed")
    assert http_request(r.port(), path="/after").status == 200
