"""Downstream HTTP/2 against hostile clients (hostile-inputs.md §(b) cases 32-45), with raw
frames from h2raw.py. Every test also checks that the proxy survived (same pid) and that a
second connection, opened before the attack, is still served."""

import signal
import time

import h2raw as h
from h2raw import H2Raw
from lib import slow_factor, wait_for
from proxyutil import start_proxy, stats, wait_stat

STREAM_ERRORS = {"override_stream_error_on_invalid_http_message": True}


def _proxy(ctx, h2opts=None, record=False, **hcm):
    u = ctx.start_upstream(record=record)
    extra = dict({"codec_type": "HTTP2"}, **hcm)
    if h2opts is not None:
        extra["http2_protocol_options"] = h2opts
    return u, start_proxy(ctx, {"c": [u]}, hcm_extra=extra)


def _served(conn, sid):
    """A GET on `conn`'s stream `sid` gets a complete 200."""
    assert conn.send(h.headers(sid, h.get_block())), "the good connection was closed"
    ev = conn.read(5, until=lambda e: e.ended(sid) or e.closed)
    assert ev.status(sid) == 200 and ev.ended(sid), ev
    assert not ev.goaways, ev


def _survived(r, pid, bystander):
    assert r.pid == pid and r.alive()
    _served(bystander, 1)
    bystander.close()  # an open client would hold the proxy's drain for drain_timeout
    with H2Raw(r.port()) as c:
        _served(c, 1)


def _closed_with_goaway(ev, code):
    assert ev.closed, f"still open: {ev}"
    assert any(g[1] == code for g in ev.goaways), f"no GOAWAY {code}: {ev}"


# ---- 32/33: rapid reset, and malformed HEADERS that draw resets ----

def test_h2_rapid_reset_premature_resets_close(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(b"".join(h.headers(2 * i + 1, h.get_block()) + h.rst(2 * i + 1)
                        for i in range(2000)))
        ev = c.read(5, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)
    # Envoy's rule (500 streams, at least half reset within 1 s) fires before nghttp2's bucket
    wait_stat(r, "http.ingress_http.downstream_rq_too_many_premature_resets", 1)
    assert u.stats()["requests"] < 2000
    _survived(r, pid, bystander)


def test_h2_malformed_headers_stream_errors_counted_like_resets(ctx):
    u, r = _proxy(ctx, h2opts=STREAM_ERRORS)
    pid = r.pid
    bystander = H2Raw(r.port())
    no_path = h.block([(":method", "GET"), (":scheme", "http"), (":authority", "a")])
    with H2Raw(r.port()) as c:
        c.send(b"".join(h.headers(2 * i + 1, no_path) for i in range(2000)))
        ev = c.read(5, until=lambda e: e.closed)
        assert ev.rsts.get(1) == h.PROTOCOL_ERROR, ev
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)
        assert len(ev.rsts) < 2000, len(ev.rsts)
    wait_stat(r, "http.ingress_http.downstream_rq_too_many_premature_resets", 1)
    assert u.stats()["requests"] == 0
    assert stats(r)["http2.rx_messaging_error"] >= 500
    _survived(r, pid, bystander)


def test_h2_malformed_headers_connection_error_by_default(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    no_path = h.block([(":method", "GET"), (":scheme", "http"), (":authority", "a")])
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, no_path) + h.headers(3, h.get_block()))
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.PROTOCOL_ERROR)
        assert ev.status(3) is None, ev  # nothing after the error is served
    assert u.stats()["requests"] == 0
    wait_stat(r, "http2.rx_messaging_error", 1)
    _survived(r, pid, bystander)


# ---- 34/35/36: CONTINUATION flood, HPACK bomb, cookie crumbs ----

def test_h2_continuation_flood_closes(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.get_block(), end_headers=False) +
               h.frame(h.CONTINUATION, 0, 1, h.lit("x", "a")) * 2000)
        ev = c.read(3, until=lambda e: e.closed)
        assert ev.closed and ev.goaways, ev
    assert u.stats()["requests"] == 0
    _survived(r, pid, bystander)


def test_h2_empty_continuation_frames_flood(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.get_block(), end_headers=False) +
               h.frame(h.CONTINUATION, 0, 1) * 5)
        ev = c.read(3, until=lambda e: e.closed)
        assert ev.closed and ev.goaways, ev
    assert u.stats()["requests"] == 0
    _survived(r, pid, bystander)


def test_h2_hpack_bomb_resets_stream(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    # one 4000-byte value entered into the dynamic table (index 62), then referenced 12000 times
    bomb = h.get_block() + h.lit("x", "v" * 4000, indexing=True) + b"\xbe" * 12000
    chunks = [bomb[i:i + 16384] for i in range(0, len(bomb), 16384)]
    data = h.frame(h.HEADERS, h.END_STREAM, 1, chunks[0])
    for i, ch in enumerate(chunks[1:]):
        data += h.frame(h.CONTINUATION, h.END_HEADERS if i == len(chunks) - 2 else 0, 1, ch)
    with H2Raw(r.port()) as c:
        c.send(data)
        ev = c.read(3, until=lambda e: 1 in e.rsts or e.closed)
        assert 1 in ev.rsts or ev.goaways, ev
        assert ev.status(1) is None, ev
    assert u.stats()["requests"] == 0
    wait_stat(r, "http2.header_overflow", 1)
    _survived(r, pid, bystander)


def test_h2_cookie_crumbs_count_against_header_limits(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        crumbs = [("cookie", f"c{i}=1") for i in range(200)]
        c.send(h.headers(1, h.get_block(extra=crumbs)))
        ev = c.read(3, until=lambda e: 1 in e.rsts or e.closed)
        assert 1 in ev.rsts and ev.status(1) is None, ev
        # 90 crumbs are fine, and reach the upstream joined into one field
        c.send(h.headers(3, h.get_block(extra=[("cookie", f"c{i}=1") for i in range(90)])))
        ev = c.read(3, until=lambda e: e.ended(3) or e.closed)
        assert ev.status(3) == 200, ev
    assert u.stats()["requests"] == 1
    wait_stat(r, "http2.header_overflow", 1)
    _survived(r, pid, bystander)


# ---- 37: SETTINGS/PING floods from a client that does not read ----

def _flood_without_reading(ctx, unit):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    c = H2Raw(r.port(), rcvbuf=4096)
    sent = 0
    limit = 2000000  # the ACKs of fewer may all fit in the kernel's socket buffers
    deadline = time.monotonic() + 20 * slow_factor()
    while sent < limit and time.monotonic() < deadline:
        if not c.send(unit * 5000):
            break
        sent += 5000
    assert sent < limit, "the proxy took every frame from a client that reads nothing"
    wait_stat(r, "http2.outbound_control_flood", 1)
    c.close()
    _survived(r, pid, bystander)


def test_h2_response_flood_to_a_client_that_does_not_read_closes(ctx):
    """Envoy's max_outbound_frames: a client that opens many streams with wide windows and then
    reads nothing makes frames pile up; past the limit the connection ends (http2.outbound_flood)
    instead of the proxy buffering them."""
    u, r = _proxy(ctx, h2opts={"max_outbound_frames": 100, "max_concurrent_streams": 1000})
    pid = r.pid
    bystander = H2Raw(r.port())
    c = H2Raw(r.port(), rcvbuf=4096)
    big = 1 << 30
    c.send(h.settings((4, big)) + h.window_update(0, big))  # INITIAL_WINDOW_SIZE, connection
    blk = h.get_block(path="/?body_size=65536")
    c.send(b"".join(h.headers(2 * i + 1, blk) for i in range(400)))
    wait_stat(r, "http2.outbound_flood", 1, timeout=10 * slow_factor())
    c.close()
    _survived(r, pid, bystander)


def test_h2_ping_flood_without_reading_closes(ctx):
    _flood_without_reading(ctx, h.ping())


def test_h2_settings_flood_without_reading_closes(ctx):
    _flood_without_reading(ctx, h.settings((h.S_MAX_CONCURRENT_STREAMS, 100)))


def test_h2_reading_client_gets_its_ping_acks(ctx):
    u, r = _proxy(ctx)
    with H2Raw(r.port()) as c:
        c.send(h.ping() * 500)
        ev = c.read(3, until=lambda e: len(e.pings) >= 500)
        assert len(ev.pings) == 500 and not ev.closed, ev


# ---- 38: empty frames (DATA and HEADERS) ----

def test_h2_empty_headers_frames_flood(ctx):
    # (stream errors, so that the first empty HEADERS is not already a connection error)
    u, r = _proxy(ctx, h2opts=STREAM_ERRORS)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(b"".join(h.frame(h.HEADERS, h.END_HEADERS, 2 * i + 1) for i in range(10)))
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)
    wait_stat(r, "http2.inbound_empty_frames_flood", 1)
    _survived(r, pid, bystander)


def test_h2_empty_frames_limit_is_configurable(ctx):
    u, r = _proxy(ctx, h2opts={"max_consecutive_inbound_frames_with_empty_payload": 5})
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.get_block(), end_stream=False) + h.frame(h.DATA, 0, 1) * 5 +
               h.frame(h.DATA, h.END_STREAM, 1))
        ev = c.read(3, until=lambda e: e.ended(1) or e.closed)
        assert ev.status(1) == 200 and not ev.closed, ev
        c.send(h.headers(3, h.get_block(), end_stream=False) + h.frame(h.DATA, 0, 3) * 6)
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)


# ---- 39: zero window and a large response ----

def test_h2_zero_window_large_response_bounded_and_reset_at_idle_timeout(ctx):
    u, r = _proxy(ctx, stream_idle_timeout="1s")
    pid = r.pid
    bystander = H2Raw(r.port())
    c = H2Raw(r.port(), first=h.settings((h.S_INITIAL_WINDOW_SIZE, 0)))
    size = 10 << 20
    t0 = time.monotonic()
    c.send(h.headers(1, h.get_block(path="/big", extra=[("x-upstream-body-size", str(size))])))
    ev = c.read(6, until=lambda e: 1 in e.rsts or e.closed)
    took = time.monotonic() - t0
    assert 1 in ev.rsts and not ev.closed, ev
    assert 0.8 <= took <= 4 * slow_factor(), took
    assert not ev.on(1, h.DATA), ev  # the window never opened
    st = stats(r)
    assert st["http.ingress_http.downstream_rq_idle_timeout"] == 1, st
    # The upstream was paused: the proxy read at most ~2 buffer limits (1 MiB each) of the body.
    assert st["cluster.c.upstream_cx_rx_bytes_total"] < 3 * (1 << 20), st
    c.close()
    _survived(r, pid, bystander)


# ---- 40: WINDOW_UPDATE overflow and flood ----

def test_h2_window_update_overflow(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(h.window_update(0, 0x7fffffff) * 2)
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.FLOW_CONTROL_ERROR)
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.get_block(extra=[("x-upstream-delay-ms", "300")])) +
               h.window_update(1, 0x7fffffff) * 2)
        ev = c.read(3, until=lambda e: 1 in e.rsts or e.closed)
        assert ev.rsts.get(1) == h.FLOW_CONTROL_ERROR and not ev.goaways, ev
    _survived(r, pid, bystander)


def test_h2_window_update_flood(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(h.window_update(0, 1) * 50)
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)
    wait_stat(r, "http2.inbound_window_update_frames_flood", 1)
    _survived(r, pid, bystander)


# ---- 41: stream limits, bad ids, oversized frames, PRIORITY ----

def test_h2_streams_over_max_concurrent_are_refused(ctx):
    u, r = _proxy(ctx, h2opts={"max_concurrent_streams": 2})
    with H2Raw(r.port()) as c:
        slow = h.get_block(extra=[("x-upstream-delay-ms", "500")])
        c.send(b"".join(h.headers(sid, slow) for sid in (1, 3, 5, 7)))
        ev = c.read(5, until=lambda e: e.ended(1) and e.ended(3))
        assert ev.rsts.get(5) == h.REFUSED_STREAM and ev.rsts.get(7) == h.REFUSED_STREAM, ev
        assert ev.status(1) == 200 and ev.status(3) == 200, ev
    assert u.stats()["requests"] == 2


def test_h2_bad_stream_ids_and_oversized_frames(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:  # even (server-initiated) stream id
        c.send(h.headers(2, h.get_block()))
        _closed_with_goaway(c.read(3, until=lambda e: e.closed), h.PROTOCOL_ERROR)
    with H2Raw(r.port()) as c:
        # a decreasing stream id: nghttp2 cannot tell it from a stream it has forgotten, and
        # ignores it (never served, never forwarded)
        c.send(h.headers(5, h.get_block()) + h.headers(3, h.get_block()))
        c.read(3, until=lambda e: e.ended(5) or e.closed)
        ev = c.read(0.3)  # a bounded window for anything on stream 3 to show up
        assert ev.status(5) == 200 and not ev.on(3) and not ev.closed, ev
    with H2Raw(r.port()) as c:  # DATA over SETTINGS_MAX_FRAME_SIZE (16384)
        c.send(h.headers(1, h.get_block(), end_stream=False) +
               h.frame(h.DATA, h.END_STREAM, 1, b"x" * 20000))
        _closed_with_goaway(c.read(3, until=lambda e: e.closed), h.FRAME_SIZE_ERROR)
    assert u.stats()["requests"] <= 2
    _survived(r, pid, bystander)


def test_h2_self_dependent_priority_and_priority_flood(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        c.send(h.priority(1, 1))
        ev = c.read(2, until=lambda e: 1 in e.rsts or e.closed)
        assert ev.rsts.get(1) == h.PROTOCOL_ERROR or \
            any(g[1] == h.PROTOCOL_ERROR for g in ev.goaways), ev
    with H2Raw(r.port()) as c:
        # 100 PRIORITY frames per opened stream (+1): 101 with no stream open is a flood
        c.send(b"".join(h.priority(2 * i + 1, 0) for i in range(101)))
        ev = c.read(3, until=lambda e: e.closed)
        _closed_with_goaway(ev, h.ENHANCE_YOUR_CALM)
    wait_stat(r, "http2.inbound_priority_frames_flood", 1)
    with H2Raw(r.port()) as c:  # 100 are fine
        c.send(b"".join(h.priority(2 * i + 1, 0) for i in range(100)))
        _served(c, 301)
    _survived(r, pid, bystander)


# ---- 42/44: invalid fields and pseudo-headers never reach the upstream ----

BASE = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
INVALID_REQUESTS = {
    "crlf_in_value": BASE + [("foo", "bar\r\nTransfer-Encoding: chunked")],
    "lf_in_value": BASE + [("foo", "bar\nx: y")],
    "nul_in_value": BASE + [("foo", "a\x00b")],
    "upper_case_name": BASE + [("Foo", "bar")],
    "space_in_name": BASE + [("foo bar", "x")],
    "colon_in_name": BASE + [("foo:bar", "x")],
    "connection": BASE + [("connection", "close")],
    "transfer_encoding": BASE + [("transfer-encoding", "chunked")],
    "keep_alive": BASE + [("keep-alive", "timeout=5")],
    "te_gzip": BASE + [("te", "gzip")],
    "upgrade": BASE + [("upgrade", "websocket")],
    "empty_path": [(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "a")],
    "asterisk_on_get": [(":method", "GET"), (":scheme", "http"), (":path", "*"),
                        (":authority", "a")],
    "path_with_space": [(":method", "GET"), (":scheme", "http"), (":path", "/a b"),
                        (":authority", "a")],
    "path_with_crlf": [(":method", "GET"), (":scheme", "http"),
                       (":path", "/ HTTP/1.1\r\nHost: x"), (":authority", "a")],
    "path_not_absolute": [(":method", "GET"), (":scheme", "http"), (":path", "a/b"),
                          (":authority", "a")],
    "duplicate_path": BASE + [(":path", "/x")],
    "late_pseudo_header": [(":method", "GET"), (":scheme", "http"), ("x", "1"), (":path", "/"),
                           (":authority", "a")],
    "unknown_pseudo_header": BASE + [(":foo", "bar")],
    "authority_host_mismatch": BASE + [("host", "b")],
    "two_hosts": BASE + [("host", "a"), ("host", "a")],
    "two_hosts_no_authority": [(":method", "GET"), (":scheme", "http"), (":path", "/"),
                               ("host", "a"), ("host", "b")],
    "missing_method": [(":scheme", "http"), (":path", "/"), (":authority", "a")],
    "content_length_not_a_number": BASE + [("content-length", "abc")],
}


def test_h2_invalid_requests_connection_error_and_upstream_never_sees_them(ctx):
    u, r = _proxy(ctx, record=True)
    pid = r.pid
    bystander = H2Raw(r.port())
    for name, fields in INVALID_REQUESTS.items():
        with H2Raw(r.port()) as c:
            c.send(h.headers(1, h.block(fields)))
            ev = c.read(3, until=lambda e: e.closed)
            assert ev.closed and any(g[1] == h.PROTOCOL_ERROR for g in ev.goaways), (name, ev)
            assert ev.status(1) is None, (name, ev)
    assert u.stats()["requests"] == 0
    assert u.recorded() == b""
    _survived(r, pid, bystander)


def test_h2_invalid_requests_stream_error_when_configured(ctx):
    u, r = _proxy(ctx, h2opts=STREAM_ERRORS, record=True)
    pid = r.pid
    bystander = H2Raw(r.port())
    with H2Raw(r.port()) as c:
        sid = 1
        for name, fields in INVALID_REQUESTS.items():
            c.send(h.headers(sid, h.block(fields)))
            ev = c.read(3, until=lambda e, s=sid: s in e.rsts or e.closed)
            assert ev.rsts.get(sid) == h.PROTOCOL_ERROR, (name, ev)
            assert ev.status(sid) is None and not ev.closed, (name, ev)
            sid += 2
        _served(c, sid)  # the connection is still fine
    assert u.stats()["requests"] == 1
    assert b"Transfer-Encoding" not in u.recorded() and b"HTTP/1.1\r\nHost: x" not in u.recorded()
    st = stats(r)
    assert st["http2.rx_messaging_error"] >= len(INVALID_REQUESTS), st
    _survived(r, pid, bystander)


def test_h2_hcm_stream_error_on_invalid_http_message(ctx):
    # the HCM-level switch, used when the options do not override it
    u, r = _proxy(ctx, stream_error_on_invalid_http_message=True)
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.block(INVALID_REQUESTS["connection"])))
        ev = c.read(3, until=lambda e: 1 in e.rsts or e.closed)
        assert ev.rsts.get(1) == h.PROTOCOL_ERROR and not ev.closed, ev
    u2, r2 = _proxy(ctx, h2opts={"override_stream_error_on_invalid_http_message": False},
                    stream_error_on_invalid_http_message=True)
    with H2Raw(r2.port()) as c:
        c.send(h.headers(1, h.block(INVALID_REQUESTS["connection"])))
        _closed_with_goaway(c.read(3, until=lambda e: e.closed), h.PROTOCOL_ERROR)


def test_h2_valid_edge_requests_are_served(ctx):
    u, r = _proxy(ctx, record=True)
    with H2Raw(r.port()) as c:
        ok = [
            BASE + [("host", "A")],  # same authority, other case
            BASE + [("te", "trailers")],
        ]
        for i, fields in enumerate(ok):
            sid = 2 * i + 1
            c.send(h.headers(sid, h.block(fields)))
            ev = c.read(3, until=lambda e, s=sid: e.ended(s) or s in e.rsts or e.closed)
            assert ev.status(sid) == 200, (fields, ev)
        # OPTIONS * is a valid request (no route matches it here: 404, not a protocol error)
        c.send(h.headers(7, h.block([(":method", "OPTIONS"), (":scheme", "http"), (":path", "*"),
                                     (":authority", "a")])))
        ev = c.read(3, until=lambda e: e.ended(7) or 7 in e.rsts or e.closed)
        assert ev.on(7, h.HEADERS) and 7 not in ev.rsts and not ev.closed, ev
    assert u.stats()["requests"] == 2


# ---- 43: content-length against DATA ----

def test_h2_content_length_mismatch_resets_and_upstream_gets_no_extra_bytes(ctx):
    u, r = _proxy(ctx, h2opts=STREAM_ERRORS, record=True)
    pid = r.pid
    bystander = H2Raw(r.port())
    smuggled = b"GET /smuggle HTTP/1.1\r\nHost: a\r\n\r\n"
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.block(BASE + [("content-length", "0")]), end_stream=False) +
               h.frame(h.DATA, h.END_STREAM, 1, smuggled))
        ev = c.read(3, until=lambda e: 1 in e.rsts or e.closed)
        assert ev.rsts.get(1) == h.PROTOCOL_ERROR, ev
        c.send(h.headers(3, h.block(BASE + [("content-length", "10")]), end_stream=False) +
               h.frame(h.DATA, h.END_STREAM, 3, b"12345"))
        ev = c.read(3, until=lambda e: 3 in e.rsts or e.closed)
        assert ev.rsts.get(3) == h.PROTOCOL_ERROR, ev
    rec = u.recorded()
    assert b"/smuggle" not in rec, rec
    # stream 3's 5 bytes may have gone upstream under its content-length: 10, never completed
    assert u.stats()["requests"] <= 1, u.stats()
    _survived(r, pid, bystander)


# ---- 45: bad preface ----

def test_h2_bad_preface_and_http1_close_fast(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    bystander = H2Raw(r.port())
    for first in (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
                  b"\x16\x03\x01\x00\x05hello"):
        c = H2Raw(r.port(), preface=False)
        c.send(first)
        t0 = time.monotonic()
        ev = c.read(3, until=lambda e: e.closed)
        assert ev.closed and time.monotonic() - t0 < 1.0 * slow_factor(), (first, ev)
        c.close()
    _survived(r, pid, bystander)


# ---- drain: two-phase GOAWAY with the HCM's drain_timeout ----

def test_h2_drain_two_phase_goaway_honours_drain_timeout(ctx):
    u, r = _proxy(ctx, drain_timeout="1s")
    c = H2Raw(r.port())
    c.send(h.headers(1, h.get_block(extra=[("x-upstream-delay-ms", "1500")])))
    wait_for(lambda: u.stats()["requests"] >= 1, 3, "the upstream to get stream 1")
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    ev = c.read(3, until=lambda e: len(e.goaways) >= 1)
    assert ev.goaways and ev.goaways[0][0] == 0x7fffffff, ev
    assert any(not fl & h.ACK for fl, _ in ev.pings), ev  # the drain PING
    # between the notice and the final GOAWAY new streams are still served
    c.send(h.headers(3, h.get_block()))
    ev = c.read(3, until=lambda e: e.ended(3))
    assert ev.status(3) == 200, ev
    ev = c.read(4, until=lambda e: len(e.goaways) >= 2)
    t_final = time.monotonic() - t0
    assert len(ev.goaways) == 2 and ev.goaways[1] == (3, h.NO_ERROR), ev
    assert 0.8 <= t_final <= 2.5 * slow_factor(), t_final
    # after the final GOAWAY a new stream is not processed
    c.send(h.headers(5, h.get_block()))
    ev = c.read(4, until=lambda e: e.closed)
    assert ev.ended(1) and ev.status(1) == 200, ev  # the in-flight stream finished
    assert ev.status(5) is None, ev
    assert ev.closed, ev
    assert u.stats()["requests"] == 2
    c.close()
    assert r.wait(5) == 0


def test_h2_drain_idle_connection_closes_after_drain_timeout(ctx):
    u, r = _proxy(ctx, drain_timeout="0.3s")
    c = H2Raw(r.port())
    _served(c, 1)
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    ev = c.read(4, until=lambda e: e.closed)
    took = time.monotonic() - t0
    assert [g[0] for g in ev.goaways] == [0x7fffffff, 1], ev
    assert ev.closed and 0.2 <= took <= 2 * slow_factor(), (took, ev)
    assert r.wait(5) == 0


# ---- http2_protocol_options: Envoy's fields, ranges and unsupported ones ----

def test_h2_protocol_options_validation(ctx):
    from proxyutil import proxy_config
    from test_proxy_lifecycle import _validate
    good = {"max_outbound_frames": 5000, "max_outbound_control_frames": 100,
            "max_consecutive_inbound_frames_with_empty_payload": 0,
            "max_inbound_priority_frames_per_stream": 10,
            "max_inbound_window_update_frames_per_data_frame_sent": 2,
            "stream_error_on_invalid_http_messaging": True,
            "override_stream_error_on_invalid_http_message": False, "hpack_table_size": 0}
    cfg = proxy_config({"c": [9]}, hcm_extra={"codec_type": "HTTP2", "drain_timeout": "0.5s",
                                              "stream_error_on_invalid_http_message": True,
                                              "http2_protocol_options": good})
    p = _validate(ctx, cfg)
    assert p.returncode == 0, p
    bad = [({"max_outbound_frames": 0}, "http2_protocol_options.max_outbound_frames"),
           ({"max_outbound_control_frames": 0},
            "http2_protocol_options.max_outbound_control_frames"),
           ({"max_inbound_window_update_frames_per_data_frame_sent": 0},
            "http2_protocol_options.max_inbound_window_update_frames_per_data_frame_sent"),
           ({"allow_metadata": True}, "http2_protocol_options.allow_metadata"),
           ({"use_oghttp2_codec": True}, "http2_protocol_options.use_oghttp2_codec"),
           ({"custom_settings_parameters": []},
            "http2_protocol_options.custom_settings_parameters"),
           ({"connection_keepalive": {}}, "http2_protocol_options.connection_keepalive")]
    for i, (opts, path) in enumerate(bad):
        cfg = proxy_config({"c": [9]}, hcm_extra={"http2_protocol_options": opts})
        p = _validate(ctx, cfg, f"bad{i}.yaml")
        assert p.returncode == 1 and path in p.stdout + p.stderr, (opts, p)
    cfg = proxy_config({"c": [9]}, hcm_extra={"drain_timeout": "-1s"})
    p = _validate(ctx, cfg, "drain.yaml")
    assert p.returncode == 1 and "drain_timeout" in p.stdout + p.stderr, p


def test_h2_hardened_example_validates(ctx):
    import subprocess
    from lib import REPO, build_dir
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c",
                        str(REPO / "examples" / "h2_hardened.yaml")],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    assert p.returncode == 0, p
