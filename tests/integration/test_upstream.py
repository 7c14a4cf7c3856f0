"""Tests of remora-test-upstream itself: every control does what its README says, so the
proxy tests can rely on it (and the harness gets exercised before remora exists)."""

import json
import signal
import socket
import subprocess
import time

from lib import (HttpConn, build_dir, build_request, curl, http_request, is_closed,
                 parse_responses, proc_hwm_kb, raw_exchange, slow_factor, wait_closed, wait_for)

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
    for bad in (["--bogus"], ["--threads", "0"], ["--name", "a b"], ["extra"]):
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
                         "active_connections": 0}
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
    wait_for(lambda: u.stats()["active_connections"] == 3, what="three connections")
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
