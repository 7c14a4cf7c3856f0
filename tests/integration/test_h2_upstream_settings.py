"""HTTP/2 upstreams whose SETTINGS_MAX_CONCURRENT_STREAMS leaves no room: a peer advertising 0
(at connect, or lowering it later) gets its connection drained as after a GOAWAY (Envoy's pool
treats a limit of 0 so), new requests go to another connection within max_connections (503 UO
past it: remora does not queue), streams already in flight above a lowered limit finish, and
nothing stays wedged; a request nghttp2 still held unsent is refused (and retried). The test
upstream's --h2-max-streams and x-upstream-max-streams control what it advertises
(tests/upstream/upstream.c); a raw h2c server stalls a connection for the held-request case."""

import socket
import threading

import h2raw
from lib import http_request, slow_factor, wait_for
from proxyutil import (direct, file_access_log, log_fields, route, start_proxy, stats, wait_log,
                       wait_stat)

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _h2(max_connections=None):
    o = {"@type": "type.googleapis.com/" + HPO,
         "explicit_http_config": {"http2_protocol_options": {}}}
    extra = {"typed_extension_protocol_options": {HPO: o}}
    if max_connections is not None:
        extra["circuit_breakers"] = {"thresholds": [{"max_connections": max_connections}]}
    return extra


def _routes():
    # /probe never leaves the worker: answering it means the worker ran a loop iteration after
    # whatever the upstream had already written to it.
    return [direct("/probe", 200, "probe\n"), route("/", "c")]


def _in_background(fn):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn()))
    t.start()
    return t, box


def _lower_while_in_flight(ctx, r, u, delay_ms, n_slow=1):
    """Starts n_slow slow requests; the first makes the upstream advertise 0 streams on their
    connection. Returns the threads once the proxy has read that SETTINGS."""
    slow = []
    for i in range(n_slow):
        hs = {"x-upstream-delay-ms": str(delay_ms)}
        if i == 0:
            hs["x-upstream-max-streams"] = "0"
        slow.append(_in_background(lambda i=i, hs=hs: http_request(r.port(), path=f"/slow{i}",
                                                                     headers=hs, timeout=10)))
        # one at a time, so that the first one's SETTINGS comes after all of them were sent
        wait_for(lambda i=i: u.stats()["h2_streams"] == i + 1, 5, f"stream {i} at the upstream")
    assert http_request(r.port(), path="/probe").status == 200
    return slow


def test_h2_upstream_peer_advertising_no_streams_is_drained(ctx):
    """--h2-max-streams 0: every request is refused (it was sent before the SETTINGS arrived),
    and each connection closes at once: with max_connections 1 the next request gets a new
    connection, not 503 UO for a connection kept open that can never take a stream."""
    u = ctx.start_upstream(extra_args=["--h2-max-streams", "0"])
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=_h2(max_connections=1), routes=_routes(),
                    access_log=[file_access_log(log)])
    for i in range(3):
        resp = http_request(r.port(), path=f"/zero{i}")
        assert resp.status == 503, resp
        assert b"reset reason: remote refused stream reset" in resp.body, resp
        wait_stat(r, "cluster.c.upstream_cx_active", 0)
    for i in range(3):
        f = log_fields(wait_log(log, lambda ln, i=i: f" /zero{i} " in ln))
        assert (f["code"], f["flags"]) == ("503", "UR"), f
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 3, st
    assert st["cluster.c.upstream_cx_overflow"] == 0, st
    assert st["cluster.c.http2.streams_active"] == 0, st
    wait_for(lambda: u.stats()["active_connections"] == 0, 3, "upstream connections closed")


def test_h2_upstream_settings_zero_mid_flight(ctx):
    """A peer lowering its limit to 0 while a stream is in flight: that stream finishes, a new
    request goes to a second connection meanwhile, and the first connection closes once its
    stream is done; later requests reuse the second one."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=_h2(), routes=_routes())
    delay = int(1500 * slow_factor())
    (t, box), = _lower_while_in_flight(ctx, r, u, delay)
    resp = http_request(r.port(), path="/meanwhile")
    assert resp.status == 200, resp
    assert t.is_alive(), "the slow request should still be in flight"
    assert u.stats()["h2_connections"] == 2
    t.join(10 * slow_factor())
    assert box["r"].status == 200 and box["r"].body == b"upstream\n", box
    st = wait_stat(r, "cluster.c.upstream_cx_active", 1)
    assert st["cluster.c.upstream_cx_destroy"] == 1, st
    assert st["cluster.c.upstream_rq_200"] == 2, st
    assert http_request(r.port(), path="/after").status == 200
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 2, st
    assert u.stats()["h2_connections"] == 2


def test_h2_upstream_settings_zero_at_max_connections(ctx):
    """Same, with max_connections 1: the request arriving meanwhile overflows (503 UO, as any
    request finding the breaker full; remora does not queue), and once the slow stream is done
    the drained connection is gone and the next request gets a new one."""
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=_h2(max_connections=1), routes=_routes(),
                    access_log=[file_access_log(log)])
    delay = int(1500 * slow_factor())
    (t, box), = _lower_while_in_flight(ctx, r, u, delay)
    resp = http_request(r.port(), path="/meanwhile")
    assert resp.status == 503, resp
    f = log_fields(wait_log(log, lambda ln: " /meanwhile " in ln))
    assert (f["code"], f["flags"]) == ("503", "UO"), f
    assert stats(r)["cluster.c.upstream_cx_overflow"] == 1
    t.join(10 * slow_factor())
    assert box["r"].status == 200, box
    wait_stat(r, "cluster.c.upstream_cx_active", 0)
    resp = http_request(r.port(), path="/after")
    assert resp.status == 200, resp
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 2, st
    assert st["cluster.c.upstream_cx_overflow"] == 1, st


def test_h2_upstream_settings_lowered_below_in_flight(ctx):
    """Lowered to 1 with three streams in flight: all three finish on that connection, and a
    request arriving meanwhile opens a second connection instead of waiting behind them."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=_h2(), routes=_routes())
    delay = int(1500 * slow_factor())
    slow = []
    for i in range(3):
        hs = {"x-upstream-delay-ms": str(delay)}
        if i == 2:
            hs["x-upstream-max-streams"] = "1"
        slow.append(_in_background(lambda i=i, hs=hs: http_request(r.port(), path=f"/s{i}",
                                                                     headers=hs, timeout=10)))
        wait_for(lambda i=i: u.stats()["h2_streams"] == i + 1, 5, f"stream {i} at the upstream")
    assert http_request(r.port(), path="/probe").status == 200
    resp = http_request(r.port(), path="/meanwhile")
    assert resp.status == 200, resp
    assert any(t.is_alive() for t, _ in slow), "the slow requests should still be in flight"
    for t, box in slow:
        t.join(10 * slow_factor())
        assert box["r"].status == 200, box
    us = u.stats()
    assert us["h2_connections"] == 2 and us["max_concurrent_streams_seen"] == 3, us
    st = stats(r)
    assert st["cluster.c.upstream_rq_200"] == 4, st
    assert st["cluster.c.http2.streams_active"] == 0, st


class _StallingH2Server:
    """A raw h2c upstream. Its first connection grants a 2 GiB window and then reads nothing,
    so the proxy's writes to it back up (its write buffer stays full); `lower()` then sends
    SETTINGS_MAX_CONCURRENT_STREAMS 0 on it. Every later connection answers each request
    HEADERS with ":status 200" and END_STREAM."""

    def __init__(self, ctx):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.ctx = ctx
        self.first = None
        self.answered = 0
        ctx.sockets.append(self.sock)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.ctx.sockets.append(c)
            if self.first is None:
                self.first = c
                c.sendall(h2raw.settings((h2raw.S_MAX_CONCURRENT_STREAMS, 100),
                                         (h2raw.S_INITIAL_WINDOW_SIZE, 2**31 - 1)) +
                          h2raw.settings(ack=True) +
                          h2raw.window_update(0, 2**31 - 1 - 65535))
            else:
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def lower(self):
        self.first.sendall(h2raw.settings((h2raw.S_MAX_CONCURRENT_STREAMS, 0)))

    def ping(self):
        self.first.sendall(h2raw.ping())

    def _serve(self, c):
        c.settimeout(10 * slow_factor())
        buf = b""
        try:
            c.sendall(h2raw.settings() + h2raw.settings(ack=True))
            while True:
                d = c.recv(65536)
                if not d:
                    return
                buf += d
                if buf.startswith(h2raw.PREFACE):
                    buf = buf[len(h2raw.PREFACE):]
                frames, buf = h2raw.split_frames(buf)
                for ftype, flags, sid, _ in frames:
                    if ftype == h2raw.HEADERS and sid % 2 == 1 and flags & h2raw.END_HEADERS:
                        c.sendall(h2raw.frame(h2raw.HEADERS,
                                              h2raw.END_STREAM | h2raw.END_HEADERS, sid, b"\x88"))
                        self.answered += 1
        except OSError:
            return


def test_h2_upstream_settings_zero_refuses_requests_still_queued(ctx):
    """A request whose HEADERS nghttp2 still holds (the connection's write buffer is full) when
    the peer's limit drops to 0 could never be sent there: it is cancelled and refused, and
    with retry_on refused-stream it is answered on a new connection (without the guard it
    waited until the route timeout: 504)."""
    srv = _StallingH2Server(ctx)
    policy = {"retry_on": "refused-stream", "num_retries": 1}
    r = start_proxy(ctx, {"c": [srv.port]}, cluster_extra=_h2(), log_level="debug",
                    listener_extra={"per_connection_buffer_limit_bytes": 65536},
                    routes=[route("/", "c", timeout="5s", retry_policy=policy)])
    # A: an upload the upstream never reads, until the proxy stops reading it
    up = ctx.connect(r.port())
    up.sendall(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000000\r\n\r\n")

    def upload():
        try:
            while True:
                up.sendall(b"u" * 65536)
        except OSError:
            return
    threading.Thread(target=upload, daemon=True).start()
    last = [-1, 0]

    def stalled():
        # bytes written upstream stop growing: the proxy's buffers towards it are full. The
        # kernel may still take more (the send buffer grows without waking the writer), so a
        # quiet spell ends with a PING from the server: the proxy's flush for its ACK writes
        # whatever the socket takes now. Stalled: five polls 200 ms apart with no growth, the
        # last after a PING. (Without the PINGs, B's HEADERS went out in such a late flush and,
        # never read, waited for the route timeout: 504.)
        n = stats(r)["cluster.c.upstream_cx_tx_bytes_total"]
        last[1] = last[1] + 1 if n == last[0] and n > 65536 else 0
        last[0] = n
        if last[1] == 4:
            srv.ping()
        return last[1] >= 5
    wait_for(stalled, 20, "the upload to stall", interval=0.2)
    # B: submitted on the same connection, held by nghttp2 behind the full buffer
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", http_request(r.port(), path="/b",
                                                                          timeout=15)))
    t.start()
    wait_stat(r, "cluster.c.upstream_rq_total", 2)
    srv.lower()
    t.join(15 * slow_factor())
    assert box["r"].status == 200, box
    r.wait_output("upstream failed (peer allows no stream), retrying")
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] == 1, st
    assert st["cluster.c.upstream_cx_total"] == 2, st
    assert srv.answered == 1
