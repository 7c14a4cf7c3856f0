"""Downstream HTTP/2 (h2c with prior knowledge, and AUTO's preface detection): real clients
(curl, nghttp, h2load), local replies, resets, drain, access log, a response that ends before
its request (F21), and raw-frame attacks (rapid reset, bad preface, empty DATA flood) sent by the
tiny frame writer below."""

import shutil
import signal
import socket
import struct
import subprocess
import time

import h2raw as h
from h2raw import H2Raw, split_frames
from lib import Skip, http_request, slow_factor, wait_for
from proxyutil import file_access_log, log_fields, start_proxy, stats, wait_log, wait_stat

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2 = {"codec_type": "HTTP2"}


def _need(tool):
    if shutil.which(tool) is None:
        raise Skip(f"{tool} is not installed")


def _curl(port, path="/", *args, timeout=20):
    _need("curl")
    argv = ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}",
            *args, f"http://127.0.0.1:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, timeout=timeout * slow_factor())
    body, _, tail = p.stdout.rpartition(b"\n")
    code, _, ver = tail.decode().partition(" ")
    return p.returncode, int(code or 0), ver, body


# ---- a tiny raw HTTP/2 frame writer/reader ----

def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def settings():
    return frame(4, 0, 0)


def headers_get(sid, end_stream=True):
    # HPACK, all from the static table: :method GET (0x82), :scheme http (0x86), :path / (0x84),
    # :authority literal without indexing (0x01 = index 1 name) "a"
    block = b"\x82\x86\x84\x01\x01a"
    return frame(1, 0x4 | (0x1 if end_stream else 0), sid, block)


def rst(sid, code=8):
    return frame(3, 0, sid, struct.pack(">I", code))


def read_frames(sock, timeout=3.0):
    """Frames until EOF or the timeout: [(type, flags, sid, payload)]; EOF is reported as None
    at the end."""
    sock.settimeout(timeout)
    data = b""
    out = []
    deadline = time.monotonic() + timeout * slow_factor()
    eof = False
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            eof = True
            break
        if not chunk:
            eof = True
            break
        data += chunk
    out, _ = split_frames(data)
    if eof:
        out.append(None)
    return out


def _conn(port, big_windows=False):
    """A connection after the preface and our SETTINGS (with ``big_windows``: 1 GiB stream and
    connection windows, so responses are not held by flow control)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    if big_windows:
        s.sendall(PREFACE + frame(4, 0, 0, struct.pack(">HI", 4, 1 << 30)) +
                  frame(8, 0, 0, struct.pack(">I", 1 << 30)))
    else:
        s.sendall(PREFACE + settings())
    return s


def _alive_and_serving(r, pid):
    assert r.pid == pid and r.alive()
    rc, code, ver, body = _curl(r.port(), "/")
    assert rc == 0 and code == 200 and ver == "2", (rc, code, ver, body)


# ---- tests ----

def test_h2_curl_get_post_and_large_download(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    rc, code, ver, body = _curl(r.port(), "/hello")
    assert (rc, code, ver) == (0, 200, "2"), (rc, code, ver, body)
    assert body == b"upstream\n", body

    rc, code, ver, body = _curl(r.port(), "/post", "-H", "x-upstream-echo: 1",
                                "--data-binary", "hello-h2-body", "-H", "cookie: a=1",
                                "-H", "cookie: b=2")
    assert (rc, code) == (0, 200), (rc, code, body)
    import json
    j = json.loads(body)
    assert j["method"] == "POST" and j["path"] == "/post", j
    assert j["body_len"] == len("hello-h2-body"), j
    hs = [(k.lower(), v) for k, v in j["headers"]]
    assert ("host", f"127.0.0.1:{r.port()}") in hs, hs
    assert ("cookie", "a=1; b=2") in hs, hs

    size = 10 << 20
    rc, code, ver, body = _curl(r.port(), "/big", "-H", f"x-upstream-body-size: {size}")
    assert (rc, code) == (0, 200) and len(body) == size, (rc, code, len(body))
    expect = bytes(ord("a") + i % 26 for i in range(26)) * (size // 26 + 1)
    assert body == expect[:size]
    st = stats(r)
    assert st["http.ingress_http.downstream_cx_http2_total"] == 3, st
    assert st["http.ingress_http.downstream_rq_http2_total"] == 3, st


def test_h2_configured_mixed_case_response_header_goes_out_lower_case(ctx):
    """HTTP/2 forbids upper-case field names (a client treats one as a malformed response):
    a header edit written "X-Route-Added" in the config reaches an h2 client lower-cased (the
    builder lowers configured names; nothing lowers them per response)."""
    u = ctx.start_upstream()
    route = {"match": {"prefix": "/"}, "route": {"cluster": "c"},
             "response_headers_to_add": [{"header": {"key": "X-Route-Added", "value": "v"}}]}
    r = start_proxy(ctx, {"c": [u]}, routes=[route], hcm_extra=H2)
    _need("curl")
    argv = ["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null", "-D", "-",
            f"http://127.0.0.1:{r.port()}/"]
    p = subprocess.run(argv, capture_output=True, timeout=20 * slow_factor())
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(b"HTTP/2 200"), p.stdout
    assert b"\nx-route-added: v\r\n" in p.stdout, p.stdout


def test_h2_large_upload_with_backpressure(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2,
                    listener_extra={"per_connection_buffer_limit_bytes": 65536})
    data = ctx.tmp / "up.bin"
    data.write_bytes(b"x" * (8 << 20))
    rc, code, ver, body = _curl(r.port(), "/up", "-H", "x-upstream-echo: 1",
                                "--data-binary", f"@{data}")
    assert (rc, code) == (0, 200), (rc, code, body[:200])
    import json
    assert json.loads(body)["body_len"] == 8 << 20


def test_h2_nghttp_concurrent_streams(ctx):
    _need("nghttp")
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    base = f"http://127.0.0.1:{r.port()}"
    p = subprocess.run(["nghttp", "-nv", "-H", "x-upstream-delay-ms: 200", f"{base}/a",
                        f"{base}/b", f"{base}/c", f"{base}/d"],
                       capture_output=True, text=True, timeout=20 * slow_factor())
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr
    assert p.stdout.count(":status: 200") == 4, p.stdout[-3000:]
    st = stats(r)
    assert st["http.ingress_http.downstream_cx_http2_total"] == 1
    assert st["http.ingress_http.downstream_rq_http2_total"] == 4


def test_h2load_bounded_run(ctx):
    _need("h2load")
    u = ctx.start_upstream(threads=2)
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    p = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "10",
                        f"http://127.0.0.1:{r.port()}/"],
                       capture_output=True, text=True, timeout=60 * slow_factor())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "2000 succeeded, 0 failed, 0 errored" in p.stdout, p.stdout
    assert "status codes: 2000 2xx" in p.stdout, p.stdout


def test_h2_auto_serves_http1_and_h2c(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra={"codec_type": "AUTO"})
    resp = http_request(r.port(), "GET", "/h1")
    assert resp.status == 200, resp
    rc, code, ver, body = _curl(r.port(), "/h2")
    assert (rc, code, ver) == (0, 200, "2"), (rc, code, ver)
    _need("curl")
    p = subprocess.run(["curl", "-sS", "--http1.1", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        f"http://127.0.0.1:{r.port()}/"], capture_output=True, text=True, timeout=10)
    assert p.stdout == "200 1.1", p
    st = stats(r)
    assert st["http.ingress_http.downstream_cx_http2_total"] == 1, st
    assert st["http.ingress_http.downstream_cx_http1_total"] == 2, st


def test_h2_local_reply_and_access_log(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2, routes=[("/ok", "c")],
                    access_log=[file_access_log(log)])
    rc, code, ver, body = _curl(r.port(), "/nope")
    assert (rc, code, ver) == (0, 404, "2"), (rc, code, ver, body)
    rc, code, ver, body = _curl(r.port(), "/ok")
    assert code == 200
    line = wait_log(log, lambda l: '"GET /nope HTTP/2"' in l)
    f = log_fields(line)
    assert f["code"] == "404" and f["flags"] == "NR", f
    line = wait_log(log, lambda l: '"GET /ok HTTP/2"' in l)
    assert log_fields(line)["code"] == "200"


def test_h2_upstream_reset_mid_body_resets_only_that_stream(ctx):
    _need("nghttp")
    u = ctx.start_upstream(threads=2)
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    base = f"http://127.0.0.1:{r.port()}"
    # one stream whose upstream resets mid-body, next to a slower good one on one connection
    p = subprocess.run(["nghttp", "-nv", "-H", "x-upstream-body-size: 200000",
                        "-H", "x-upstream-body-delay-ms: 100", "-H", "x-upstream-reset: mid-body",
                        f"{base}/bad"], capture_output=True, text=True, timeout=20)
    assert "RST_STREAM" in p.stdout, p.stdout[-2000:]
    s = _conn(r.port(), big_windows=True)
    # stream 1 resets mid-body; stream 3 is fine
    blk_reset = b"\x82\x86\x84\x01\x01a" + _lit("x-upstream-body-size", "200000") + \
        _lit("x-upstream-body-delay-ms", "100") + _lit("x-upstream-reset", "mid-body")
    s.sendall(frame(1, 0x5, 1, blk_reset) + frame(1, 0x5, 3, b"\x82\x86\x84\x01\x01a" +
                                                   _lit("x-upstream-delay-ms", "300")))
    fr = read_frames(s, timeout=2.0)
    types = [(f[0], f[2]) for f in fr if f is not None]
    assert (3, 1) in types, types  # RST_STREAM on stream 1
    hdr3 = [f for f in fr if f is not None and f[0] == 1 and f[2] == 3]
    assert hdr3, types
    end3 = [f for f in fr if f is not None and f[2] == 3 and f[1] & 1]
    assert end3, types  # stream 3 completed
    assert (7, 0) not in types, types  # no GOAWAY
    s.close()


def _lit(name, value):
    """HPACK literal header field without indexing, new name."""
    n, v = name.encode(), value.encode()
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def test_h2_sigterm_drain_goaway_and_in_flight_finishes(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=dict(H2, drain_timeout="1s"))
    s = _conn(r.port())
    s.sendall(frame(1, 0x5, 1, b"\x82\x86\x84\x01\x01a" + _lit("x-upstream-delay-ms", "700")))
    wait_for(lambda: u.stats()["requests"] >= 1, 3, "the upstream to get the request")
    r.signal(signal.SIGTERM)
    fr = read_frames(s, timeout=4.0)
    goaways = [f for f in fr if f is not None and f[0] == 7]
    assert len(goaways) >= 1, fr
    first_last = int.from_bytes(goaways[0][3][:4], "big")
    assert first_last == 0x7fffffff, goaways
    assert any(f is not None and f[0] == 1 and f[2] == 1 for f in fr), fr  # response head
    assert any(f is not None and f[2] == 1 and f[1] & 1 for f in fr), fr  # stream 1 ended
    if len(goaways) > 1:
        assert int.from_bytes(goaways[-1][3][:4], "big") == 1
    assert r.wait(5) == 0


def test_h2_rapid_reset_closes_connection(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    pid = r.pid
    s = _conn(r.port())
    out = b""
    for i in range(2000):
        sid = 2 * i + 1
        out += headers_get(sid) + rst(sid)
    try:
        s.sendall(out)
    except (BrokenPipeError, ConnectionResetError):
        pass
    fr = read_frames(s, timeout=3.0)
    assert fr and fr[-1] is None, "the connection stayed open"
    assert any(f is not None and f[0] == 7 for f in fr), "no GOAWAY"
    assert u.stats()["requests"] < 2000
    _alive_and_serving(r, pid)


def test_h2_bad_preface_closes(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    pid = r.pid
    s = socket.create_connection(("127.0.0.1", r.port()), timeout=3)
    s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    fr = read_frames(s, timeout=2.0)
    assert fr and fr[-1] is None, fr
    _alive_and_serving(r, pid)


def test_h2_empty_data_flood_closes(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    pid = r.pid
    s = _conn(r.port())
    s.sendall(headers_get(1, end_stream=False) + frame(0, 0, 1) * 2000)
    fr = read_frames(s, timeout=3.0)
    assert fr and fr[-1] is None, "still open"
    assert any(f is not None and f[0] == 7 and int.from_bytes(f[3][4:8], "big") == 0xb
               for f in fr), fr
    wait_stat(r, "http2.inbound_empty_frames_flood", 1)
    _alive_and_serving(r, pid)


def test_h2_header_overflow_resets_stream(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=dict(H2, max_request_headers_kb=1))
    pid = r.pid
    s = _conn(r.port())
    s.sendall(frame(1, 0x5, 1, b"\x82\x86\x84\x01\x01a" + _lit("x-big", "v" * 120) * 10))
    fr = read_frames(s, timeout=1.5)
    assert any(f is not None and f[0] == 3 and f[2] == 1 for f in fr), fr
    assert u.stats()["requests"] == 0
    wait_stat(r, "http2.header_overflow", 1)
    s.close()
    _alive_and_serving(r, pid)


def test_h2_config_validation(ctx):
    from test_proxy_lifecycle import _validate
    from proxyutil import proxy_config
    cfg = proxy_config({"c": [9]}, hcm_extra={"codec_type": "HTTP2", "http2_protocol_options": {
        "max_concurrent_streams": 100, "initial_stream_window_size": 65536,
        "initial_connection_window_size": 1048576}})
    p = _validate(ctx, cfg)
    assert p.returncode == 0, p
    cfg = proxy_config({"c": [9]}, hcm_extra={"http2_protocol_options": {"allow_connect": True}})
    p = _validate(ctx, cfg, "v2.yaml")
    assert p.returncode == 1 and "http2_protocol_options.allow_connect" in p.stdout + p.stderr, p
    cfg = proxy_config({"c": [9]}, hcm_extra={"http2_protocol_options": {
        "initial_stream_window_size": 100}})
    p = _validate(ctx, cfg, "v3.yaml")
    assert p.returncode == 1 and "initial_stream_window_size" in p.stdout + p.stderr, p


def test_h2_early_upstream_answer_ends_the_stream_with_no_error(ctx):
    """F21 over HTTP/2: the upstream answers 404 as soon as the head arrives, body unread.
    The client gets the whole response, then RST_STREAM(NO_ERROR) to stop its upload (RFC 9113
    8.1, as Envoy does); the connection goes on. (curl 7.88 reports such a stream as error 92,
    nghttp and browsers take the response.)"""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    with H2Raw(r.port()) as c:
        c.handshake()
        blk = h.get_block(path="/early", method="POST",
                          extra=[("x-upstream-early", "1"), ("x-upstream-status", "404")])
        c.send(h.headers(1, blk, end_stream=False) + h.data(1, b"x" * 8192, end_stream=False))
        ev = c.read(5, until=lambda e: 1 in e.rsts or e.closed)
        assert ev.status(1) == 404 and ev.ended(1), ev
        assert ev.rsts.get(1) == h.NO_ERROR, ev
        ends = [i for i, f in enumerate(ev.frames) if f[2] == 1 and f[0] in (h.HEADERS, h.DATA)
                and f[1] & h.END_STREAM]
        rst = [i for i, f in enumerate(ev.frames) if f[2] == 1 and f[0] == h.RST_STREAM]
        assert ends[0] < rst[0], ev  # the reset follows the complete response
        assert not ev.goaways and not ev.closed, ev
        # More body on the reset stream is ignored; the connection still serves.
        c.send(h.data(1, b"y" * 1024, end_stream=True) + h.headers(3, h.get_block()))
        ev = c.read(5, until=lambda e: e.ended(3) or e.closed)
        assert ev.status(3) == 200 and ev.ended(3) and not ev.goaways, ev
    assert u.stats()["requests"] == 2
