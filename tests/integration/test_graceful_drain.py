"""The graceful drain, as Envoy's drain manager does it: POST /drain_listeners?graceful keeps the
listeners accepting for --drain-time-s while responses tell their connections to close
(HTTP/1.1 `connection: close`, HTTP/2 GOAWAY), all at once with --drain-strategy immediate or a
share growing over the drain time with gradual (the default), then the listeners stop
accepting; ?inboundonly drains and stops only the INBOUND listeners; /healthcheck/fail makes
every response close its connection; TCP proxy sessions are left to end. (SIGTERM under --bootstrap-from-env runs the same drain:
test_appmesh_env.py.)"""

import socket
import subprocess
import time

import h2raw as h
from h2raw import H2Raw
from lib import (HttpConn, build_dir, free_port, http_request, slow_factor, socket_address,
                 to_yaml, wait_for)
from proxyutil import proxy_config, refused, start_proxy, stats


def _ka(resp):
    """The response left its keep-alive connection open."""
    return resp.status == 200 and resp.header("connection") != "close"


def _closing(resp):
    return resp.status == 200 and resp.header("connection") == "close"


def test_graceful_drain_immediate_keeps_accepting_then_stops(ctx):
    """immediate: the next response on every connection says close; new connections are
    accepted and served through the drain time, then the listener stops; the server stays
    LIVE (Envoy's state changes only with /healthcheck/fail) and does not exit."""
    u = ctx.start_upstream(threads=2)
    r = start_proxy(ctx, {"c": [u]}, concurrency=2,
                    extra_args=["--drain-time-s", "2", "--drain-strategy", "immediate"])
    port = r.port()
    conns = [HttpConn(port) for _ in range(4)]  # likely on both workers
    for c in conns:
        assert _ka(c.request(path="/before"))
    assert _ka(conns[0].request(path="/before"))  # not draining: keep-alive stays
    t0 = time.monotonic()
    resp = r.admin("POST", "/drain_listeners?graceful")
    assert resp.status == 200 and resp.text == "OK\n", resp
    for c in conns:
        got = c.request(path="/during")
        assert _closing(got), got.headers
        wait_for(lambda c=c: c.closed(), 2, "the drained connection to close")
    # New connections are still accepted and served, each told to close.
    for _ in range(4):
        assert _closing(http_request(port, path="/new"))
    assert r.admin("GET", "/ready").status == 200
    assert stats(r)["server.state"] == 0
    opts = r.admin("GET", "/server_info").json()["command_line_options"]
    assert opts["drain_strategy"] == "Immediate" and opts["drain_time"] == "2s", opts
    assert r.admin("POST", "/drain_listeners?graceful").status == 200  # a second one: ignored
    wait_for(lambda: refused(port), 3 * slow_factor(), "the listener to stop after the drain")
    took = time.monotonic() - t0
    assert took >= 1.8, f"the listener stopped {took:.2f}s into a 2 s drain"
    s = stats(r)
    assert s["http.ingress_http.downstream_cx_drain_close"] >= 8, s
    assert r.alive() and r.admin("GET", "/ready").status == 200


def test_graceful_drain_gradual_share_grows(ctx):
    """gradual over 4 s: one new connection after another, each response noted as closing or
    not with its time. Envoy's arithmetic: 1 in 4 close during the first second, every one
    during the last; the share grows in between."""
    u = ctx.start_upstream()
    drain = 4
    r = start_proxy(ctx, {"c": [u]}, extra_args=["--drain-time-s", str(drain)])
    port = r.port()
    assert _ka(HttpConn(port).request())  # no drain: no close
    t0 = time.monotonic()
    assert r.admin("POST", "/drain_listeners?graceful").status == 200
    samples = []  # (seconds since the drain started, closing)
    while time.monotonic() - t0 < drain - 0.25:
        t = time.monotonic() - t0
        resp = http_request(port, path="/g")
        assert resp.status == 200, resp
        samples.append((t, resp.header("connection") == "close"))
        time.sleep(0.005)  # pacing (at most ~800 connections), not synchronisation
    by_second = [[closing for t, closing in samples if k <= t < k + 1] for k in range(drain)]
    share = [sum(b) / len(b) if b else None for b in by_second]
    assert all(len(b) >= 10 for b in by_second), [len(b) for b in by_second]
    print(f"gradual drain: share closing by second {share}, samples {len(samples)}")
    assert share[0] < 0.75, share  # 1 in 4 expected
    # The last second (its first 0.2 s left out for the admin request's delay): all close.
    last = [closing for t, closing in samples if t >= drain - 1 + 0.2]
    assert last and all(last), share
    assert share[0] < share[2] <= share[3], share
    wait_for(lambda: refused(port), 2 * slow_factor(), "the listener to stop")


def test_graceful_drain_h2_goaway_and_in_flight_stream_finishes(ctx):
    """HTTP/2: the response on a drained connection starts Envoy's GOAWAY sequence (notice
    with 2^31-1, the final one after drain_timeout); a stream in flight finishes; the
    connection closes once it has."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra={"codec_type": "HTTP2", "drain_timeout": "0.5s"},
                    extra_args=["--drain-time-s", "5", "--drain-strategy", "immediate"])
    with H2Raw(r.port()) as c:
        c.handshake()
        c.send(h.headers(1, h.get_block(path="/slow",
                                        extra=[("x-upstream-delay-ms", "1500")])))
        wait_for(lambda: u.stats()["requests"] >= 1, 3, "the upstream to get stream 1")
        assert r.admin("POST", "/drain_listeners?graceful").status == 200
        c.send(h.headers(3, h.get_block(path="/quick")))
        ev = c.read(5, until=lambda e: e.ended(3) and e.goaways)
        assert ev.status(3) == 200 and ev.ended(3), ev
        assert ev.goaways and ev.goaways[0][0] == 0x7fffffff, ev
        ev = c.read(5, until=lambda e: e.closed)
        assert ev.status(1) == 200 and ev.ended(1), ev  # the in-flight stream finished
        assert ev.goaways[-1] == (3, h.NO_ERROR), ev  # the final GOAWAY: stream 3 processed
        assert ev.closed, ev
    # New HTTP/2 connections are still served during the drain.
    with H2Raw(r.port()) as c:
        c.handshake()
        c.send(h.headers(1, h.get_block(path="/new")))
        ev = c.read(5, until=lambda e: e.ended(1))
        assert ev.status(1) == 200 and ev.goaways, ev


def test_healthcheck_fail_closes_connections_and_ok_restores(ctx):
    """Envoy: while health checks fail, every response closes its connection (listener
    drain_type DEFAULT), /ready is 503 DRAINING and server.state 1; listeners keep accepting.
    /healthcheck/ok undoes all of it."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    port = r.port()
    c = HttpConn(port)
    assert _ka(c.request())
    assert r.admin("POST", "/healthcheck/fail").status == 200
    resp = r.admin("GET", "/ready")
    assert resp.status == 503 and resp.text == "DRAINING\n", resp
    assert stats(r)["server.state"] == 1
    assert r.admin("GET", "/server_info").json()["state"] == "DRAINING"
    assert _closing(c.request())
    assert _closing(http_request(port))  # still accepting
    assert r.admin("POST", "/healthcheck/ok").status == 200
    assert r.admin("GET", "/ready").status == 200
    assert stats(r)["server.state"] == 0
    with HttpConn(port) as c2:
        assert _ka(c2.request()) and _ka(c2.request())


def _two_listeners(u):
    """Listener 0 INBOUND, listener 1 OUTBOUND (App Mesh's egress listener)."""
    cfg = proxy_config({"c": [u.port]}, listener_extra={"traffic_direction": "INBOUND"})
    out = dict(cfg["static_resources"]["listeners"][0], name="egress",
               address=socket_address(free_port()), traffic_direction="OUTBOUND")
    cfg["static_resources"]["listeners"].append(out)
    return cfg


def test_drain_listeners_inboundonly(ctx):
    """?graceful&inboundonly: only the inbound listener's responses close and only it stops at
    the end; the outbound one keeps accepting and keeping connections alive. Without graceful,
    ?inboundonly stops the inbound listener at once, and a bare /drain_listeners every one.
    skip_exit needs graceful (400, Envoy's words)."""
    u = ctx.start_upstream()
    r = ctx.start_remora(_two_listeners(u),
                         extra_args=["--drain-time-s", "1", "--drain-strategy", "immediate"])
    inb, outb = r.port(0), r.port("egress")
    ci, co = HttpConn(inb), HttpConn(outb)
    assert _ka(ci.request()) and _ka(co.request())
    resp = r.admin("POST", "/drain_listeners?skip_exit")
    assert resp.status == 400 and resp.text == "skip_exit requires graceful\n", resp
    t0 = time.monotonic()
    assert r.admin("POST", "/drain_listeners?graceful&inboundonly").status == 200
    assert _closing(ci.request())
    assert _ka(co.request()) and _ka(co.request())
    assert _closing(http_request(inb))
    wait_for(lambda: refused(inb), 3 * slow_factor(), "the inbound listener to stop")
    assert time.monotonic() - t0 >= 0.8
    assert _ka(co.request())
    with HttpConn(outb) as c:
        assert _ka(c.request())

    r2 = ctx.start_remora(_two_listeners(u), name="r2")
    inb, outb = r2.port(0), r2.port("egress")
    co = HttpConn(outb)
    assert _ka(co.request())
    assert r2.admin("POST", "/drain_listeners?inboundonly").status == 200
    wait_for(lambda: refused(inb), 2, "the inbound listener to stop at once")
    assert _ka(http_request(outb)) and _ka(co.request())
    assert r2.admin("POST", "/drain_listeners").status == 200
    wait_for(lambda: refused(outb), 2, "every listener to stop")
    assert _ka(co.request())  # connections go on: only accepting stopped
    assert r2.alive()


def test_graceful_drain_skip_exit_keeps_listeners(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, extra_args=["--drain-time-s", "1"])
    assert r.admin("POST", "/drain_listeners?graceful&skip_exit").status == 200
    # Past the drain time the listener still accepts; by then every response closes.
    r.wait_output("listeners stay open (skip_exit)", 4)
    assert not refused(r.port())
    assert _closing(http_request(r.port()))


def test_drain_strategy_flag_values(ctx):
    path = ctx.tmp / "v.yaml"
    path.write_text(to_yaml(proxy_config({"c": [9]})) + "\n")
    for value, rc in (("gradual", 0), ("immediate", 0), ("Gradual", 1), ("linear", 1)):
        p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path),
                            "--drain-strategy", value], capture_output=True, text=True,
                           timeout=10 * slow_factor())
        assert p.returncode == rc, (value, p)
        if rc:
            assert "--drain-strategy must be gradual or immediate" in p.stderr, p.stderr


def test_graceful_drain_leaves_tcp_proxy_sessions(ctx):
    """Envoy's tcp_proxy does not drain: a session open through a graceful drain goes on
    after the drain time stopped its listener (only a removed listener, or the exit, ends
    it)."""
    from test_tcp_proxy import EchoServer, tcp_config
    e = EchoServer("e1")
    ctx.on_cleanup(e.close)
    r = ctx.start_remora(tcp_config({"c": [e.port]}, ["cluster: c"]),
                         extra_args=["--drain-time-s", "1", "--drain-strategy", "immediate"])
    port = r.port("TCP")
    s = ctx.connect(port)

    def echo(data):
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            d = s.recv(64)
            assert d, f"the session closed after {got!r}"
            got += d
        return got

    assert echo(b"one") == b"one"
    assert r.admin("POST", "/drain_listeners?graceful").status == 200
    assert echo(b"two") == b"two"
    wait_for(lambda: refused(port), 3 * slow_factor(), "the listener to stop")
    assert echo(b"three") == b"three"  # still open after the drain
    s.shutdown(socket.SHUT_WR)
    assert s.recv(16) == b"|e1"


def test_modify_only_listener_not_drained_by_healthcheck_fail(ctx):
    """drain_type MODIFY_ONLY (Envoy's DrainManagerImpl::drainClose): while health checks fail,
    a DEFAULT listener's responses close their connections but a MODIFY_ONLY listener's keep
    them alive; a graceful drain drains both."""
    u = ctx.start_upstream()
    cfg = _two_listeners(u)
    cfg["static_resources"]["listeners"][1]["drain_type"] = "MODIFY_ONLY"
    r = ctx.start_remora(cfg, extra_args=["--drain-time-s", "5", "--drain-strategy",
                                          "immediate"])
    dflt, mod = HttpConn(r.port(0)), HttpConn(r.port(1))
    assert _ka(dflt.request()) and _ka(mod.request())
    assert r.admin("POST", "/healthcheck/fail").status == 200
    assert _closing(dflt.request())
    assert _ka(mod.request()) and _ka(mod.request())
    assert r.admin("POST", "/healthcheck/ok").status == 200
    assert r.admin("POST", "/drain_listeners?graceful").status == 200
    assert _closing(mod.request())
