"""Tests of remora-test-upstream itself: every control does what its README says, so the
proxy tests can rely on it (and the harness gets exercised before remora exists)."""

import json
import re
import shutil
import signal
import socket
import struct
import subprocess
import time

from h2raw import split_frames
from lib import (HttpConn, Skip, build_dir, build_request, curl, http_request, is_closed,
                 parse_responses, proc_hwm_kb, raw_exchange, recv_until_closed, slow_factor,
                 wait_closed, wait_for)

MB = 1 << 20


def pattern(n, off=0):
    """The upstream's generated body: byte i is 'a' + i % 26."""
    period = bytes(range(ord("a"), ord("z") + 1))
    reps = (off % 26 + n) // 26 + 1
    return (period * reps)[off % 26:off % 26 + n]


def ends_response(data):
    """`until` for raw_exchange: one whole response with a content-length body arrived."""
    try:
        return len(parse_responses(data)) >= 1
    except (EOFError, ValueError):
        return False


def test_default_response(ctx):
    u = ctx.start_upstream(name="alpha")
    assert f"listening on 127.0.0.1:{u.port}" in u.stdout
    r = http_request(u.port)
    assert r.status == 200
    assert r.header("content-type") == "text/plain"
    assert r.header("x-upstream-name") == "alpha"
    assert r.header("content-length") == "6"
    assert r.body == b"alpha\n"
    assert not r.chunked and not r.eof


def test_status_header_query_and_bodiless(ctx):
    u = ctx.start_upstream()
    r = http_request(u.port, headers={"x-upstream-status": "503"})
    assert (r.status, r.body) == (503, b"upstream\n")
    r = http_request(u.port, path="/p?status=404&body_size=4")
    assert (r.status, r.body) == (404, b"abcd")
    # A header beats the query string.
    r = http_request(u.port, path="/?status=404", headers={"X-Upstream-Status": "201"})
    assert r.status == 201
    r = raw_exchange(u.port, build_request(headers={"x-upstream-status": "204"}),
                     until=lambda d: d.endswith(b"\r\n\r\n"), timeout=2)
    assert r.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in r.lower() and r.endswith(b"\r\n\r\n")
    r = http_request(u.port, method="HEAD", headers={"x-upstream-body-size": "1000"})
    assert r.status == 200 and r.header("content-length") == "1000" and r.body == b""
    # The connection is still usable after a HEAD: no stray body bytes were sent.
    with HttpConn(u.port) as c:
        c.request("HEAD", "/")
        assert c.request("GET", "/").body == b"upstream\n"


def test_bad_control_is_400(ctx):
    u = ctx.start_upstream()
    r = http_request(u.port, headers={"x-upstream-stauts": "503"})
    assert r.status == 400 and b"x-upstream-stauts" in r.body
    r = http_request(u.port, headers={"x-upstream-status": "abc"})
    assert r.status == 400 and b"status" in r.body
    r = http_request(u.port, headers={"x-upstream-reset": "sometimes"})
    assert r.status == 400
    r = http_request(u.port, headers={"x-upstream-malformed": "nope"})
    assert r.status == 400
    assert http_request(u.port).status == 200


def test_body_size_10mb_streamed(ctx):
    u = ctx.start_upstream()
    n = 10 * MB
    http_request(u.port, headers={"x-upstream-body-size": "100000"})  # warm up buffers
    hwm0 = proc_hwm_kb(u.pid)
    r = http_request(u.port, headers={"x-upstream-body-size": str(n)})
    assert r.status == 200 and r.header("content-length") == str(n)
    assert len(r.body) == n
    assert r.body == pattern(n)
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 4096, f"peak RSS grew {grown} KiB for a 10 MiB body: not streamed"


def test_body_512mb_flat_memory_with_slow_reader(ctx):
    """A big body is written with backpressure: the client reads slowly at first, so the
    upstream must wait for the socket rather than buffer."""
    u = ctx.start_upstream()
    n = 512 * MB
    hwm0 = proc_hwm_kb(u.pid)
    s = ctx.connect(u.port)
    s.sendall(build_request(headers={"x-upstream-body-size": str(n)}))
    s.settimeout(10 * slow_factor())
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    time.sleep(0.2)  # not synchronisation: lets the upstream fill the socket while we stall
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(4096)
    got = len(head) - head.index(b"\r\n\r\n") - 4
    buf = bytearray(1 << 20)
    while got < n:
        k = s.recv_into(buf)
        assert k > 0, f"EOF after {got} of {n} bytes"
        got += k
    assert got == n
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 8192, f"peak RSS grew {grown} KiB while sending 512 MiB"
    assert http_request(u.port).status == 200


def test_chunked_response(ctx):
    u = ctx.start_upstream(name="ch")
    r = raw_exchange(u.port, build_request(headers={"x-upstream-chunked": "1"}),
                     until=lambda d: d.endswith(b"0\r\n\r\n"))
    assert b"transfer-encoding: chunked\r\n" in r and b"content-length" not in r
    assert r.endswith(b"\r\n\r\n3\r\nch\n\r\n0\r\n\r\n")
    n = 300000
    r = http_request(u.port, headers={"x-upstream-chunked": "1", "x-upstream-body-size": str(n)})
    assert r.chunked and r.body == pattern(n)
    # 64 KiB chunks: 300000 bytes take five.
    raw = raw_exchange(u.port, build_request(path=f"/?chunked=1&body_size={n}"),
                       until=lambda d: d.endswith(b"\r\n0\r\n\r\n"), timeout=5)
    assert raw.count(b"\r\n10000\r\n") == 4 and b"\r\n93e0\r\n" in raw


def test_delays(ctx):
    u = ctx.start_upstream()
    t0 = time.monotonic()
    r = http_request(u.port, headers={"x-upstream-delay-ms": "300"})
    assert r.status == 200 and time.monotonic() - t0 >= 0.3
    # body-delay: the head comes first, the body at least the delay later.
    with HttpConn(u.port) as c:
        t0 = time.monotonic()
        c.send(build_request(headers={"x-upstream-body-delay-ms": "400",
                                      "x-upstream-body-size": "5"}))
        head = b""
        while b"\r\n\r\n" not in head:
            head += c.sock.recv(4096)
        t_head = time.monotonic()
        body = head.split(b"\r\n\r\n", 1)[1]
        while len(body) < 5:
            body += c.sock.recv(4096)
        t_body = time.monotonic()
        assert head.startswith(b"HTTP/1.1 200") and body == b"abcde"
        assert t_head - t0 < 0.4, "the head waited for the body delay"
        assert t_body - t_head >= 0.35
    # drip: the body a byte at a time, the gaps apart
    t0 = time.monotonic()
    r = http_request(u.port, headers={"x-upstream-drip-ms": "50", "x-upstream-body-size": "5"})
    assert r.status == 200 and r.body == b"abcde" and time.monotonic() - t0 >= 0.2
    # early: answered at the head, with connection: close, the announced body never sent
    with HttpConn(u.port) as c:
        c.send(b"POST /e HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n"
               b"x-upstream-early: 1\r\nx-upstream-status: 413\r\n\r\n")
        got = recv_until_closed(c.sock)
        assert got.startswith(b"HTTP/1.1 413") and b"\r\nconnection: close\r\n" in got, got
    # A delay holds back only its own response: pipelined responses stay in order.
    r = raw_exchange(u.port, build_request(headers={"x-upstream-delay-ms": "200",
                                                    "x-upstream-status": "201"})
                     + build_request(headers={"x-upstream-status": "202"}),
                     until=lambda d: d.count(b"upstream\n") == 2)
    assert [x.status for x in parse_responses(r)] == [201, 202]


def test_reset_before_headers(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-reset": "before-headers"}))
    assert r == b"" and r.end == "rst"
    assert u.stats()["requests"] == 1


def test_reset_after_headers(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-reset": "after-headers",
                                                    "x-upstream-body-size": "100"}))
    assert r.end == "rst"
    assert r.startswith(b"HTTP/1.1 200 OK\r\n") and r.endswith(b"content-length: 100\r\n\r\n")


def test_reset_mid_body(ctx):
    u = ctx.start_upstream()
    n = 1000
    r = raw_exchange(u.port, build_request(headers={"x-upstream-reset": "mid-body",
                                                    "x-upstream-body-size": str(n)}))
    assert r.end == "rst"
    head, body = bytes(r).split(b"\r\n\r\n", 1)
    assert b"content-length: 1000" in head
    assert body == pattern(n // 2)


def test_close_gives_eof_without_response(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-close": "1"}))
    assert r == b"" and r.end == "eof"
    st = u.stats()
    assert st["requests"] == 1 and st["incomplete_requests"] == 0


def test_hang(ctx):
    u = ctx.start_upstream()
    s = ctx.connect(u.port)
    s.sendall(build_request(headers={"x-upstream-hang": "1"}))
    wait_for(lambda: u.stats()["requests"] == 1, what="the hung request to be counted")
    s.settimeout(0.3)
    try:
        data = s.recv(100)
        raise AssertionError(f"hang answered {data!r}")
    except socket.timeout:
        pass
    assert u.stats()["active_connections"] == 1
    # Input after a hang is still read (and counted), the connection still open.
    s.sendall(b"more bytes")
    wait_for(lambda: u.stats()["bytes_received"] == len(build_request(
        headers={"x-upstream-hang": "1"})) + 10, what="bytes after hang counted")
    s.close()
    wait_for(lambda: u.stats()["active_connections"] == 0, what="hung connection freed")


def test_echo(ctx):
    u = ctx.start_upstream(name="echoer")
    r = http_request(u.port, "POST", "/a/b?x=1&y", headers=[
        ("x-upstream-echo", "1"), ("X-Mixed-Case", "v1"), ("dup", "1"), ("Dup", "2"),
        ("x-latin", "caf\xe9")], body=["hello ", "world"])
    assert r.status == 200 and r.header("content-type") == "application/json"
    j = r.json()
    assert j["name"] == "echoer" and j["method"] == "POST" and j["path"] == "/a/b?x=1&y"
    assert j["body_len"] == 11 and j["trailers"] == []
    names = [h[0] for h in j["headers"]]
    assert names == ["Host", "x-upstream-echo", "X-Mixed-Case", "dup", "Dup", "x-latin",
                     "Transfer-Encoding"]
    assert dict((k, v) for k, v in j["headers"])["x-latin"].encode("latin-1") == b"caf\xe9"
    # Trailers are kept apart from the headers.
    r = raw_exchange(u.port, b"POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                     b"x-upstream-echo: 1\r\n\r\n3\r\nabc\r\n0\r\nX-Trailer: t1\r\n\r\n",
                     until=ends_response)
    j = parse_responses(r)[0].json()
    assert j["trailers"] == [["X-Trailer", "t1"]] and j["body_len"] == 3
    assert ["X-Trailer", "t1"] not in j["headers"]


def test_connection_close(ctx):
    u = ctx.start_upstream()
    with HttpConn(u.port) as c:
        r = c.request(headers={"x-upstream-connection-close": "1"})
        assert r.status == 200 and r.header("connection") == "close"
        wait_closed(c.sock)
    with HttpConn(u.port) as c:
        r = c.request(headers={"Connection": "close"})
        assert r.header("connection") == "close"
        wait_closed(c.sock)
    with HttpConn(u.port) as c:
        r = c.request()
        assert r.header("connection") is None
        assert not is_closed(c.sock, 0.1)
    # HTTP/1.0: close by default, keep-alive only when asked (and then said explicitly).
    r = raw_exchange(u.port, b"GET / HTTP/1.0\r\n\r\n")
    assert b"\r\nconnection: close\r\n" in r and r.end == "eof"
    with HttpConn(u.port) as c:
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.header("connection") == "keep-alive" and r.body == b"upstream\n"
        assert not is_closed(c.sock, 0.1)


def test_upgrade_and_connect_stay_http(ctx):
    """The upstream never switches protocols: an Upgrade or CONNECT request gets a normal
    response and the bytes after it are parsed as the next request."""
    u = ctx.start_upstream()
    for first in (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                  b"CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n"):
        r = raw_exchange(u.port, first + build_request(headers={"x-upstream-status": "404"}),
                         until=lambda d: d.count(b"upstream\n") == 2)
        assert [x.status for x in parse_responses(r)] == [200, 404]


def test_cli(ctx):
    exe = str(build_dir() / "remora-test-upstream")
    p = subprocess.run([exe, "--help"], capture_output=True, timeout=10)
    assert p.returncode == 0 and b"x-upstream-status" in p.stdout
    for bad in (["--bogus"], ["--threads", "0"], ["--name", "a b"], ["extra"],
                ["--h2-max-streams", "-1"], ["--h2-max-streams", "x"],
                ["--h2-max-streams", "2147483648"]):
        p = subprocess.run([exe, *bad], capture_output=True, timeout=10)
        assert p.returncode == 2, (bad, p)
    p = subprocess.run([exe, "--listen", "nonsense"], capture_output=True, timeout=10)
    assert p.returncode == 1 and b"--listen" in p.stderr
    # Explicit port and IPv6 form of --listen.
    u = ctx.start_upstream(name="v6", listen="[::1]:0")
    assert f"listening on [::1]:{u.port}" in u.stdout
    with socket.create_connection(("::1", u.port), timeout=5) as s:
        s.sendall(build_request(host="h"))
        assert s.recv(4096).endswith(b"v6\n")


def test_keepalive_and_pipelining(ctx):
    u = ctx.start_upstream()
    with HttpConn(u.port) as c:
        for i in range(5):
            assert c.request(path=f"/{i}").status == 200
    reqs = [build_request(headers={"x-upstream-status": str(400 + i)}) for i in range(20)]
    # One write holding 20 requests, and the same split at awkward places.
    r = raw_exchange(u.port, b"".join(reqs), until=lambda d: d.count(b"upstream\n") == 20)
    assert [x.status for x in parse_responses(r)] == list(range(400, 420))
    blob = b"".join(reqs)
    pieces = [blob[i:i + 7] for i in range(0, len(blob), 7)]
    r = raw_exchange(u.port, pieces, until=lambda d: d.count(b"upstream\n") == 20)
    assert [x.status for x in parse_responses(r)] == list(range(400, 420))
    st = u.stats()
    assert st["requests"] == 45 and st["connections"] == 3


def test_stats_count_and_reset(ctx):
    u = ctx.start_upstream()
    assert u.stats() == {"requests": 0, "connections": 0, "bytes_received": 0,
                         "parse_errors": 0, "incomplete_requests": 0,
                         "active_connections": 0, "h2_connections": 0, "h2_streams": 0,
                         "max_concurrent_streams_seen": 0}
    sent = 0
    with HttpConn(u.port) as c:
        for _ in range(2):
            req = build_request(body="xyz", host="h")
            c.send(req)
            c.read_response()
            sent += len(req)
    req = build_request(host="h")
    http_request(u.port)  # adds its own Host
    sent += len(build_request(host=f"127.0.0.1:{u.port}"))
    st = u.stats()
    assert st["requests"] == 3 and st["connections"] == 2 and st["bytes_received"] == sent
    # Asking for stats is invisible, however often.
    assert u.stats() == st
    assert u.reset_stats()["requests"] == 0
    st = u.stats()
    assert (st["requests"], st["connections"], st["bytes_received"]) == (0, 0, 0)
    raw_exchange(u.port, req, until=ends_response)
    st = u.stats()
    assert (st["requests"], st["connections"], st["bytes_received"]) == (1, 1, len(req))


def test_record_file(ctx):
    u = ctx.start_upstream(record=True)
    a = build_request("POST", "/one", {"x-a": "1"}, body=b"body\x00\xff", host="h")
    b = b"GET /two HTTP/1.1\r\nHost: h\r\n\r\n"
    raw_exchange(u.port, a, until=ends_response)
    u.stats()  # control connections are not recorded
    raw_exchange(u.port, [b[:5], b[5:]], until=ends_response)
    garbage = b"\x16\x03\x01 not http at all\r\n\r\n"
    raw_exchange(u.port, garbage)
    wait_for(lambda: u.recorded() == a + b + garbage, what="record file contents")


def test_incomplete_request(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc",
                     timeout=0.3)
    assert r == b""
    st = wait_for(lambda: (s := u.stats())["incomplete_requests"] == 1 and s,
                  what="incomplete request counted")
    assert st["requests"] == 0 and st["active_connections"] == 0


def test_parse_error_is_400_and_close(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 400 ") and b"connection: close" in r and r.end == "eof"
    r = raw_exchange(u.port, b"GET / HTTP/1.1\nHost: h\n\n")  # bare LF
    assert r.startswith(b"HTTP/1.1 400 ") and r.end == "eof"
    st = u.stats()
    assert st["parse_errors"] == 2 and st["requests"] == 0


def test_oversized_request_head_is_431(ctx):
    u = ctx.start_upstream()
    big = build_request(headers=[(f"x-h{i}", "v" * 1000) for i in range(1100)])
    r = raw_exchange(u.port, big, timeout=5)
    assert r.startswith(b"HTTP/1.1 431 ") and r.end == "eof"


def test_malformed_cl_te(ctx):
    u = ctx.start_upstream(name="m")
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "cl-te"}))
    head = r.split(b"\r\n\r\n")[0].lower()
    assert b"content-length: 2" in head and b"transfer-encoding: chunked" in head
    assert r.end == "eof"


def test_malformed_bare_lf_and_bare_cr(ctx):
    u = ctx.start_upstream(name="m")
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "bare-lf"}))
    assert r.startswith(b"HTTP/1.1 200 OK\n") and b"\r" not in r and r.end == "eof"
    assert r.endswith(b"\n\nm\n")
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "bare-cr"}))
    assert b"\r\nX: a\rSet-Cookie: y\r\n" in r and r.end == "eof"


def test_malformed_short_body(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "short-body"}))
    assert b"content-length: 100\r\n\r\nabc" in r and r.endswith(b"abc") and r.end == "eof"


def test_malformed_extra_response(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "extra-response"}),
                     until=lambda d: d.endswith(b"extra-response\n"))
    first, second = parse_responses(r)
    assert first.body == b"upstream\n" and first.header("x-upstream-extra") is None
    assert second.header("x-upstream-extra") == "1" and second.body == b"extra-response\n"


def test_malformed_many_100(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "many-100"}),
                     until=lambda d: d.endswith(b"upstream\n"), timeout=5)
    assert r.count(b"HTTP/1.1 100 Continue\r\n\r\n") == 10000
    (final,) = parse_responses(r)
    assert final.status == 200 and len(final.interim) == 10000


def test_malformed_huge_headers(ctx):
    u = ctx.start_upstream()
    r = raw_exchange(u.port, build_request(headers={"x-upstream-malformed": "huge-headers"}),
                     until=lambda d: d.endswith(b"upstream\n"), timeout=5)
    head = r.split(b"\r\n\r\n")[0]
    assert len(head) >= 100_000
    assert parse_responses(r)[0].body == b"upstream\n"


def test_expect_100_continue(ctx):
    u = ctx.start_upstream()
    with HttpConn(u.port) as c:
        c.send(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n"
               b"x-upstream-echo: 1\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += c.sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        c.send(b"hello")
        r = c.read_response()
        assert r.status == 200 and r.json()["body_len"] == 5


def test_response_header(ctx):
    u = ctx.start_upstream()
    r = http_request(u.port, headers=[("x-upstream-response-header", "Set-Cookie: a=b"),
                                      ("x-upstream-response-header", "X-Two: 2")])
    assert r.header("set-cookie") == "a=b" and r.header("x-two") == "2"


def test_large_upload(ctx):
    u = ctx.start_upstream()
    n = 64 * MB
    hwm0 = proc_hwm_kb(u.pid)
    with HttpConn(u.port, timeout=30) as c:
        c.send(b"PUT /up HTTP/1.1\r\nHost: h\r\nx-upstream-echo: 1\r\n"
               b"Content-Length: %d\r\n\r\n" % n)
        block = b"z" * MB
        for _ in range(n // MB):
            c.send(block)
        assert c.read_response().json()["body_len"] == n
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 4096, f"peak RSS grew {grown} KiB for a 64 MiB upload"


def test_threads(ctx):
    u = ctx.start_upstream(threads=4)
    conns = [HttpConn(u.port) for _ in range(32)]
    try:
        for c in conns:
            assert c.request().body == b"upstream\n"
        for c in conns:
            assert c.request(headers={"x-upstream-status": "202"}).status == 202
    finally:
        for c in conns:
            c.close()
    st = u.stats()
    assert st["requests"] == 64 and st["connections"] == 32
    wait_for(lambda: u.stats()["active_connections"] == 0, what="connections closed")


def test_sigterm_exits_cleanly_with_open_connections(ctx):
    u = ctx.start_upstream(threads=2)
    hung = ctx.connect(u.port)
    hung.sendall(build_request(headers={"x-upstream-hang": "1"}))
    streaming = ctx.connect(u.port)
    streaming.sendall(build_request(headers={"x-upstream-body-size": str(1 << 30)}))
    streaming.recv(1000)
    delayed = ctx.connect(u.port)
    delayed.sendall(build_request(headers={"x-upstream-delay-ms": "60000"}))
    # HTTP/2: a hung stream, a delayed one and one streaming a big body on one connection.
    h2 = ctx.connect(u.port)
    h2.sendall(H2_PREFACE + h2frame(4, 0, 0) + h2headers(1, "/?hang=1") +
               h2headers(3, "/?delay_ms=60000") + h2headers(5, f"/?body_size={1 << 30}"))
    h2.recv(1000)
    wait_for(lambda: u.stats()["active_connections"] == 4, what="four connections")
    u.signal(signal.SIGTERM)
    assert u.wait(5) == 0
    assert is_closed(hung, 1.0)


def test_curl(ctx):
    u = ctx.start_upstream(name="curly")
    p = curl(["-i", "-H", "x-upstream-status: 418", u.url("/x")])
    assert p.returncode == 0
    assert p.stdout.startswith(b"HTTP/1.1 418 ") and p.stdout.endswith(b"\r\n\r\ncurly\n")
    p = curl(["-H", "x-upstream-echo: 1", "--data-binary", "abc", u.url("/e")])
    j = json.loads(p.stdout)
    assert j["method"] == "POST" and j["body_len"] == 3
    p = curl(["-o", "/dev/null", "-w", "%{size_download}", u.url("/?body_size=123456")])
    assert p.stdout == b"123456"


# ---- HTTP/2 (h2c with prior knowledge) ---------------------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _need(tool):
    if shutil.which(tool) is None:
        raise Skip(f"{tool} is not installed")


def h2curl(url, *args, timeout=20):
    """curl over h2c: (exit code, status, http version, headers dict, body)."""
    _need("curl")
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", *args, url],
                       capture_output=True, timeout=timeout * slow_factor())
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status, ver = 0, ""
    if lines and lines[0].startswith("HTTP/"):
        ver, _, rest = lines[0].partition(" ")
        status = int(rest.split()[0])
    hdrs = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return p.returncode, status, ver, hdrs, body


def nghttp(urls, *args, timeout=20):
    """nghttp -v over h2c: the frames it printed, as [(direction, type, stream_id, detail)],
    where detail holds the (name, value) pairs of HEADERS and the error_code/last_stream_id
    lines of RST_STREAM/GOAWAY; and the raw output."""
    _need("nghttp")
    if isinstance(urls, str):
        urls = [urls]
    p = subprocess.run(["nghttp", "-v", "--no-dep", *args, *urls], capture_output=True,
                       timeout=timeout * slow_factor())
    out = p.stdout.decode("latin-1")
    frames, pending = [], []
    frame_re = re.compile(r"\[\s*([\d.]+)\] (send|recv) (\w+) frame <length=(\d+), flags=0x(\w+), "
                          r"stream_id=(\d+)>")
    hdr_re = re.compile(r"\[\s*[\d.]+\] recv \(stream_id=(\d+)\) (\S+): (.*)")
    for line in out.splitlines():
        m = hdr_re.search(line)
        if m:
            pending.append((m.group(2), m.group(3)))
            continue
        m = frame_re.search(line)
        if m:
            t, d, typ, _, flags, sid = m.groups()
            detail = {"t": float(t), "flags": int(flags, 16), "headers": []}
            if typ == "HEADERS" and d == "recv":
                detail["headers"], pending = pending, []
            frames.append([d, typ, int(sid), detail])
            continue
        m = re.search(r"\((?:last_stream_id=(\d+), )?error_code=(\w+)\(0x([0-9a-f]+)\)", line)
        if m and frames:
            if m.group(1) is not None:
                frames[-1][3]["last_stream_id"] = int(m.group(1))
            frames[-1][3]["error_code"] = int(m.group(3), 16)
    return frames, p


def recv_frames(frames, typ, sid=None):
    return [f for f in frames if f[0] == "recv" and f[1] == typ and (sid is None or f[2] == sid)]


def h2frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def _hpack_int(n, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if n < limit:
        return bytes([first | n])
    out = bytearray([first | limit])
    n -= limit
    while n >= 128:
        out.append((n & 127) | 128)
        n >>= 7
    out.append(n)
    return bytes(out)


def hpack(headers):
    """Literal header fields without indexing, no Huffman: simple and always valid."""
    out = b""
    for k, v in headers:
        k, v = k.encode("latin-1"), v.encode("latin-1")
        out += b"\x00" + _hpack_int(len(k), 7) + k + _hpack_int(len(v), 7) + v
    return out


def h2headers(sid, path="/", extra=(), end_stream=True, method="GET"):
    block = hpack([(":method", method), (":scheme", "http"), (":path", path),
                   (":authority", "u")] + list(extra))
    return h2frame(1, 0x4 | (0x1 if end_stream else 0), sid, block)


def read_h2(sock, until, timeout=3.0):
    """Frames [(type, flags, sid, payload)] until ``until(frames)`` is true, EOF (then None is
    appended) or the timeout."""
    sock.settimeout(0.2)
    deadline = time.monotonic() + timeout * slow_factor()
    data, frames = b"", []
    while time.monotonic() < deadline and not until(frames):
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            frames.append(None)
            break
        if not chunk:
            frames.append(None)
            break
        data += chunk
        got, data = split_frames(data)
        frames += got
    return frames


def h2_open(ctx, port, settings=b""):
    s = ctx.connect(port)
    s.sendall(H2_PREFACE + h2frame(4, 0, 0, settings))
    return s


def test_h2_default_response_and_stats(ctx):
    u = ctx.start_upstream(name="alpha")
    rc, status, ver, hdrs, body = h2curl(u.url("/"))
    assert (rc, status, ver) == (0, 200, "HTTP/2")
    assert hdrs["content-type"] == "text/plain" and hdrs["x-upstream-name"] == "alpha"
    assert hdrs["content-length"] == "6" and body == b"alpha\n"
    # The same listener still speaks HTTP/1.1.
    assert http_request(u.port).body == b"alpha\n"
    st = u.stats()
    assert (st["requests"], st["connections"], st["h2_connections"], st["h2_streams"]) == (2, 2, 1, 1)
    assert st["max_concurrent_streams_seen"] == 1 and st["incomplete_requests"] == 0
    assert st["bytes_received"] > len(H2_PREFACE)
    wait_for(lambda: u.stats()["active_connections"] == 0, what="connections closed")
    assert u.reset_stats()["h2_connections"] == 0
    assert u.stats()["max_concurrent_streams_seen"] == 0


def test_h2_controls(ctx):
    u = ctx.start_upstream(name="ctl")
    _, status, _, _, body = h2curl(u.url("/p?status=404&body_size=30"))
    assert status == 404 and body == pattern(30)
    _, status, _, hdrs, body = h2curl(u.url("/"), "-H", "x-upstream-status: 503",
                                      "-H", "x-upstream-response-header: X-Two: 2",
                                      "-H", "x-upstream-response-header: set-cookie: a=b")
    assert status == 503 and hdrs["x-two"] == "2" and hdrs["set-cookie"] == "a=b"
    _, status, _, hdrs, body = h2curl(u.url("/?chunked=1&body_size=100000"))
    assert status == 200 and "content-length" not in hdrs and body == pattern(100000)
    _, status, _, hdrs, body = h2curl(u.url("/"), "-H", "x-upstream-status: 204")
    assert status == 204 and body == b"" and "content-length" not in hdrs
    _, status, _, hdrs, body = h2curl(u.url("/"), "-I", "-o", "/dev/null",
                                      "-H", "x-upstream-body-size: 1000")
    assert status == 200 and hdrs["content-length"] == "1000" and body == b""
    for bad, word in ((("x-upstream-stauts", "1"), b"unknown control"),
                      (("x-upstream-status", "100"), b"1xx"),
                      (("x-upstream-malformed", "cl-te"), b"HTTP/1.1 only"),
                      (("x-upstream-early", "1"), b"HTTP/1.1 only"),
                      (("x-upstream-drip-ms", "10"), b"HTTP/1.1 only"),
                      (("x-upstream-response-header", "no colon"), b"NAME: VALUE"),
                      (("x-upstream-goaway", "x"), b"goaway")):
        _, status, _, _, body = h2curl(u.url("/"), "-H", f"{bad[0]}: {bad[1]}")
        assert status == 400 and word in body, (bad, body)
    # HTTP/1.1 rejects the HTTP/2-only controls.
    for h in ("x-upstream-refuse", "x-upstream-goaway", "x-upstream-rst-code"):
        r = http_request(u.port, headers={h: "1"})
        assert r.status == 400 and b"HTTP/2-only" in r.body, h
    r = http_request(u.port, headers={"x-upstream-trailer": "a: b"})
    assert r.status == 400
    r = http_request(u.port, path="/?refuse=1")
    assert r.status == 400


def test_h2_echo_pseudo_headers_and_trailers(ctx):
    u = ctx.start_upstream(name="echoer")
    _, status, _, hdrs, body = h2curl(u.url("/a/b?x=1"), "-H", "x-upstream-echo: 1",
                                      "-H", "X-Mixed: v1", "--data-binary", "hello")
    assert status == 200 and hdrs["content-type"] == "application/json"
    j = json.loads(body)
    assert j["version"] == "2" and j["method"] == "POST" and j["path"] == "/a/b?x=1"
    assert j["name"] == "echoer" and j["body_len"] == 5 and j["trailers"] == []
    names = [h[0] for h in j["headers"]]
    assert names[:4] == [":method", ":path", ":scheme", ":authority"]
    assert ["x-mixed", "v1"] in j["headers"]
    # Request trailers (nghttp sends them after the body).
    data = ctx.tmp / "body"
    data.write_bytes(b"z" * 70000)
    frames, p = nghttp(u.url("/t"), "-H", "x-upstream-echo: 1", "-d", str(data),
                       "--trailer", "x-trailer: t1")
    assert p.returncode == 0, p.stderr
    j = json.loads(p.stdout[p.stdout.index(b'{"name"'):].split(b"\n")[0])
    assert j["trailers"] == [["x-trailer", "t1"]] and j["body_len"] == 70000
    assert ["x-trailer", "t1"] not in j["headers"]


def test_h2_response_trailers(ctx):
    u = ctx.start_upstream()
    frames, p = nghttp(u.url("/"), "-H", "x-upstream-trailer: grpc-status: 0",
                       "-H", "x-upstream-trailer: Grpc-Message: fine")
    heads = recv_frames(frames, "HEADERS", 1)
    assert len(heads) == 2
    assert (":status", "200") in heads[0][3]["headers"]
    assert heads[1][3]["headers"] == [("grpc-status", "0"), ("grpc-message", "fine")]
    assert heads[1][3]["flags"] & 0x1  # END_STREAM on the trailers
    data = recv_frames(frames, "DATA", 1)
    assert data and not any(f[3]["flags"] & 0x1 for f in data)
    # No body (204): the head, then the trailers.
    frames, _ = nghttp(u.url("/?status=204"), "-H", "x-upstream-trailer: a: b")
    heads = recv_frames(frames, "HEADERS", 1)
    assert len(heads) == 2 and heads[1][3]["headers"] == [("a", "b")]
    assert not recv_frames(frames, "DATA", 1)


def test_h2_resets(ctx):
    u = ctx.start_upstream()
    frames, _ = nghttp(u.url("/?reset=before-headers"))
    assert not recv_frames(frames, "HEADERS", 1)
    (rst,) = recv_frames(frames, "RST_STREAM", 1)
    assert rst[3]["error_code"] == 2  # INTERNAL_ERROR
    frames, _ = nghttp(u.url("/?reset=after-headers&body_size=100"))
    assert len(recv_frames(frames, "HEADERS", 1)) == 1 and not recv_frames(frames, "DATA", 1)
    assert recv_frames(frames, "RST_STREAM", 1)[0][3]["error_code"] == 2
    frames, p = nghttp(u.url("/?reset=mid-body&body_size=1000"), "-H", "x-upstream-rst-code: 8")
    head = recv_frames(frames, "HEADERS", 1)[0]
    assert ("content-length", "1000") in head[3]["headers"]
    got = sum(int(re.search(rb"length=(\d+)", x).group(1)) for x in
              re.findall(rb"recv DATA frame <length=\d+", p.stdout))
    assert got == 500
    assert recv_frames(frames, "RST_STREAM", 1)[0][3]["error_code"] == 8
    # A reset ends the stream, not the connection: one connection for all of them.
    st = u.stats()
    assert st["requests"] == 3 and st["h2_connections"] == 3 and st["incomplete_requests"] == 0


def test_h2_refuse(ctx):
    u = ctx.start_upstream()
    frames, _ = nghttp(u.url("/?refuse=1"))
    (rst,) = recv_frames(frames, "RST_STREAM", 1)
    assert rst[3]["error_code"] == 7 and not recv_frames(frames, "HEADERS", 1)
    _, status, _, _, _ = h2curl(u.url("/"), "-H", "x-upstream-refuse: 0")
    assert status == 200
    st = u.stats()
    assert (st["requests"], st["h2_streams"], st["incomplete_requests"]) == (1, 2, 0)
    # x-upstream-only: refusing on one upstream only.
    _, status, _, _, _ = h2curl(u.url("/"), "-H", "x-upstream-refuse: 1",
                                "-H", "x-upstream-only: other")
    assert status == 200


def test_h2_goaway(ctx):
    u = ctx.start_upstream()
    s = h2_open(ctx, u.port)
    s.sendall(h2headers(1, "/first") + h2headers(3, "/?goaway=0&delay_ms=200"))
    frames = read_h2(s, lambda fs: None in fs, timeout=5)
    goaway = [f for f in frames if f and f[0] == 7]
    assert len(goaway) == 1
    last_id, code = struct.unpack(">II", goaway[0][3][:8])
    assert (last_id, code) == (3, 0)
    # Both streams answered (HEADERS then DATA with END_STREAM), then the connection closed.
    ends = {f[2] for f in frames if f and f[0] == 0 and f[1] & 1}
    assert ends == {1, 3} and frames[-1] is None
    # A GOAWAY with an error code; a stream opened after the GOAWAY's stream is not processed.
    u.reset_stats()
    s = h2_open(ctx, u.port)
    s.sendall(h2headers(1, "/?goaway=11&delay_ms=100"))
    frames = read_h2(s, lambda fs: any(f and f[0] == 7 for f in fs))
    s.sendall(h2headers(5, "/late"))
    frames += read_h2(s, lambda fs: None in fs, timeout=5)
    goaway = [f for f in frames if f and f[0] == 7]
    assert struct.unpack(">II", goaway[0][3][:8]) == (1, 11)
    assert {f[2] for f in frames if f and f[0] == 1} == {1}
    assert u.stats()["requests"] == 1
    # connection-close is GOAWAY(NO_ERROR) after this stream.
    frames, _ = nghttp(u.url("/"), "-H", "x-upstream-connection-close: 1")
    (g,) = recv_frames(frames, "GOAWAY")
    assert g[3]["last_stream_id"] == 1 and g[3]["error_code"] == 0
    assert len(recv_frames(frames, "HEADERS", 1)) == 1


def test_h2_streams_are_independent(ctx):
    """A delayed or hung stream holds back only itself; body-delay splits head and body."""
    u = ctx.start_upstream(extra_args=["--h2-max-streams", "7"])
    s = h2_open(ctx, u.port)
    settings = read_h2(s, lambda fs: any(f and f[0] == 4 and not f[1] & 1 for f in fs))
    payload = [f for f in settings if f and f[0] == 4][0][3]
    entries = dict(struct.unpack(">HI", payload[i:i + 6]) for i in range(0, len(payload), 6))
    assert entries[3] == 7  # SETTINGS_MAX_CONCURRENT_STREAMS
    s.sendall(h2frame(4, 1, 0) + h2headers(1, "/?hang=1") + h2headers(3, "/?delay_ms=300") +
              h2headers(5, "/?body_delay_ms=300&body_size=10") + h2headers(7, "/fast"))
    t0 = time.monotonic()
    seen = {}

    def done(fs):
        for f in fs:
            if f and f[2] not in seen.get(f[0], {}):
                seen.setdefault(f[0], {})[f[2]] = time.monotonic() - t0
        # both delayed bodies: stream 3's and stream 5's come due at about the same time
        return 3 in seen.get(0, {}) and 5 in seen.get(0, {})

    frames = read_h2(s, done, timeout=5)
    heads, data = seen.get(1, {}), seen.get(0, {})
    assert 1 not in heads and 1 not in data, "the hung stream was answered"
    # The fast stream and stream 5's head were not held back by the delays before them.
    assert heads[7] < heads[3] and heads[5] < data[5]
    assert data[5] >= 0.28 and heads[3] >= 0.28
    st = u.stats()
    assert st["max_concurrent_streams_seen"] == 4 and st["h2_streams"] == 4
    assert st["requests"] == 4 and st["active_connections"] == 1
    s.close()
    wait_for(lambda: u.stats()["active_connections"] == 0, what="connection closed")
    # The hung stream never ended its request? It did (END_STREAM), so it is not incomplete.
    assert u.stats()["incomplete_requests"] == 0


def test_h2_max_streams_enforced_and_incomplete(ctx):
    u = ctx.start_upstream(extra_args=["--h2-max-streams", "2"])
    s = h2_open(ctx, u.port)
    read_h2(s, lambda fs: any(f and f[0] == 4 and not f[1] & 1 for f in fs))
    s.sendall(h2frame(4, 1, 0))
    read_h2(s, lambda fs: any(f and f[0] == 4 and f[1] & 1 for f in fs))
    # Three open streams (no END_STREAM) once the limit is acknowledged: a connection error.
    s.sendall(b"".join(h2headers(i, "/", end_stream=False) for i in (1, 3, 5)))
    frames = read_h2(s, lambda fs: None in fs, timeout=5)
    goaway = [f for f in frames if f and f[0] == 7]
    assert goaway and struct.unpack(">II", goaway[0][3][:8]) == (3, 1)  # PROTOCOL_ERROR
    assert u.stats()["max_concurrent_streams_seen"] == 2
    st = wait_for(lambda: (x := u.stats())["active_connections"] == 0 and x,
                  what="connection closed")
    assert st["incomplete_requests"] == 2 and st["requests"] == 0


def test_h2_close_hang_and_body_size_flat_memory(ctx):
    u = ctx.start_upstream()
    s = h2_open(ctx, u.port)
    s.sendall(h2headers(1, "/?close=1"))
    frames = read_h2(s, lambda fs: None in fs, timeout=5)
    assert frames[-1] is None and not [f for f in frames if f and f[0] in (0, 1, 7)]
    n = 64 * MB
    h2curl(u.url("/?body_size=100000"), "-o", "/dev/null")
    hwm0 = proc_hwm_kb(u.pid)
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-w",
                        "%{size_download} %{http_code}", u.url(f"/?body_size={n}")],
                       capture_output=True, timeout=60 * slow_factor())
    assert p.stdout == f"{n} 200".encode()
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 4096, f"peak RSS grew {grown} KiB for a 64 MiB h2 body"
    # And a 32 MiB upload is read and counted, not kept.
    data = ctx.tmp / "up"
    data.write_bytes(b"u" * (32 * MB))
    hwm0 = proc_hwm_kb(u.pid)
    _, status, _, _, body = h2curl(u.url("/?echo=1"), "--data-binary", f"@{data}", timeout=60)
    assert status == 200 and json.loads(body)["body_len"] == 32 * MB
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 4096, f"peak RSS grew {grown} KiB for a 32 MiB h2 upload"


def test_h2_control_endpoints_over_h2(ctx):
    u = ctx.start_upstream()
    h2curl(u.url("/"))
    _, status, _, hdrs, body = h2curl(u.url("/__upstream/stats"))
    assert status == 200 and hdrs["content-type"] == "application/json"
    j = json.loads(body)
    assert j["requests"] == 1 and j["h2_streams"] == 1
    _, status, _, _, body = h2curl(u.url("/__upstream/reset"), "-X", "POST")
    assert status == 200 and json.loads(body)["requests"] == 0
    # Control streams count nowhere (their connection does).
    st = u.stats()
    assert (st["requests"], st["h2_streams"]) == (0, 0)


def test_h2_hostile_clients(ctx):
    """Broken preface, garbage frames, oversized headers, a HEADERS flood with resets and a
    client that never reads: the upstream answers each as HTTP/2 says, and lives on."""
    u = ctx.start_upstream()
    # A bad first frame after the preface (DATA on stream 0): GOAWAY PROTOCOL_ERROR, close.
    s = ctx.connect(u.port)
    s.sendall(H2_PREFACE + h2frame(0, 0, 0, b"xx"))
    frames = read_h2(s, lambda fs: None in fs, timeout=5)
    goaway = [f for f in frames if f and f[0] == 7]
    assert goaway and struct.unpack(">I", goaway[0][3][4:8])[0] == 1 and frames[-1] is None
    # A preface cut short, then garbage: HTTP/1.1 400 (not a preface, so not HTTP/2).
    r = raw_exchange(u.port, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n")
    assert r.startswith(b"HTTP/1.1 400")
    # Headers past 128 KiB (one 4000-byte HPACK table entry referenced 40 times): 431 for
    # that stream only; the next stream on the connection is answered.
    s = h2_open(ctx, u.port)
    block = hpack([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "u")])
    block += b"\x40" + _hpack_int(5, 7) + b"x-big" + _hpack_int(4000, 7) + b"v" * 4000
    block += bytes([0x80 | 62]) * 40
    s.sendall(h2frame(1, 0x5, 1, block) + h2headers(3, "/?status=201"))
    frames = read_h2(s, lambda fs: sum(1 for f in fs if f and f[0] == 0 and f[1] & 1) == 2)
    data = {f[2]: f[3] for f in frames if f and f[0] == 0}
    assert b"over 128 KiB" in data[1] and data[3] == b"upstream\n"
    # Too many CONTINUATION frames: nghttp2 gives up on the session; it is closed.
    u.reset_stats()
    s = h2_open(ctx, u.port)
    s.sendall(h2frame(1, 0x1, 1, hpack([(":method", "GET")])) +
              b"".join(h2frame(9, 0, 1, hpack([("x-a", "b")])) for _ in range(20)))
    frames = read_h2(s, lambda fs: None in fs, timeout=5)
    assert frames[-1] is None
    assert u.stats()["parse_errors"] == 1, (u.stats(), frames)
    # Rapid reset: HEADERS + RST_STREAM pairs; nghttp2's rate limit ends the connection.
    s = h2_open(ctx, u.port)
    burst = b"".join(h2headers(i, "/?delay_ms=1000") + h2frame(3, 0, i, struct.pack(">I", 8))
                     for i in range(1, 4001, 2))
    try:
        s.sendall(burst)
    except OSError:
        pass
    frames = read_h2(s, lambda fs: None in fs, timeout=10)
    assert frames[-1] is None
    # A client that sends requests for big bodies and never reads: memory stays bounded.
    u.reset_stats()
    hwm0 = proc_hwm_kb(u.pid)
    s = h2_open(ctx, u.port)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.sendall(h2frame(8, 0, 0, struct.pack(">I", 1 << 30)) +
              b"".join(h2headers(i, f"/?body_size={1 << 30}") for i in range(1, 40, 2)) +
              b"".join(h2frame(6, 0, 0, b"12345678") for _ in range(2000)))
    # Once all 20 requests are in, the upstream has made all the output it would ever buffer.
    wait_for(lambda: u.stats()["requests"] == 20, what="the 20 requests")
    grown = proc_hwm_kb(u.pid) - hwm0
    assert grown < 8192, f"peak RSS grew {grown} KiB for a client that does not read"
    s.close()
    assert u.alive()
    _, status, _, _, body = h2curl(u.url("/"))
    assert status == 200 and body == b"upstream\n"
    for sock in ctx.sockets:
        sock.close()
    wait_for(lambda: u.stats()["active_connections"] == 0, timeout=10, what="connections closed")
