"""remora's life: --mode validate, SIGTERM drain, second SIGTERM, --drain-time-s, SIGINT,
downstream timeouts (idle, request headers, a stalled head), header size limit, and running out of file
descriptors (fault F14)."""

import signal
import socket
import subprocess
import time

from lib import (HttpConn, build_dir, build_request, http_request, is_closed, raw_exchange,
                 recv_until_closed, slow_factor, to_yaml, wait_closed, wait_for)
from proxyutil import (complete_response, file_access_log, proc_cpu_seconds, proxy_config, refused,
                       start_proxy, stats, wait_log)


def _validate(ctx, cfg, name="v.yaml"):
    path = ctx.tmp / name
    path.write_text(cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n")
    return subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                          capture_output=True, text=True, timeout=10 * slow_factor())


def test_validate_ok_and_field_path_errors(ctx):
    cfg = proxy_config({"c": [9]})
    p = _validate(ctx, cfg)
    assert p.returncode == 0, p
    assert "OK" in p.stdout, p.stdout

    cfg["static_resources"]["clusters"][0]["lb_polcy"] = cfg["static_resources"]["clusters"][0] \
        .pop("lb_policy")
    p = _validate(ctx, cfg)
    out = p.stdout + p.stderr
    assert p.returncode == 1, p
    assert "static_resources.clusters[0].lb_polcy" in out and "unknown field" in out, out
    assert "OK" not in p.stdout

    # A semantic error names its path too: a route to a cluster that does not exist.
    cfg = proxy_config({"c": [9]}, routes=[{"match": {"prefix": "/"},
                                            "route": {"cluster": "nope"}}])
    p = _validate(ctx, cfg)
    out = p.stdout + p.stderr
    assert p.returncode == 1 and "nope" in out, out
    assert "routes[0]" in out, out

    # Not YAML at all.
    p = _validate(ctx, "static_resources: [unclosed\n")
    assert p.returncode == 1 and "OK" not in p.stdout


def _in_flight(ctx, r, u, headers):
    """Starts a request with ``headers`` and waits until the upstream has it."""
    c = HttpConn(r.port(), timeout=10)
    n0 = u.stats()["requests"]
    c.send(build_request(path="/inflight", headers=headers))
    wait_for(lambda: u.stats()["requests"] > n0, 3, "the upstream to get the request")
    return c


def test_sigterm_drains_in_flight_request(ctx):
    """Two workers: both stop listening, close their idle connections, and finish their
    in-flight requests with `connection: close`."""
    u = ctx.start_upstream(threads=2)
    r = start_proxy(ctx, {"c": [u]}, concurrency=2)
    port = r.port()
    idles = [HttpConn(port) for _ in range(4)]  # likely on both workers
    for idle in idles:
        assert idle.request(path="/idle").status == 200
    c = _in_flight(ctx, r, u, {"x-upstream-delay-ms": "1500"})
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    # No new connections during the drain; the idle keep-alive connection is closed.
    wait_for(lambda: refused(port), 1.0, "the listener to close")
    for idle in idles:
        wait_closed(idle.sock, 1.0)
    resp = c.read_response()
    assert resp.status == 200, resp
    assert resp.header("connection") == "close", resp.headers
    assert time.monotonic() - t0 >= 1.0, "the in-flight request was cut short"
    wait_closed(c.sock, 1.0)
    assert r.wait(3) == 0
    assert time.monotonic() - t0 < 3.0 * slow_factor()


def test_ready_is_503_while_draining(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    c = _in_flight(ctx, r, u, {"x-upstream-delay-ms": "1000"})
    r.signal(signal.SIGTERM)
    resp = wait_for(lambda: (x := r.admin("GET", "/ready")).status != 200 and x, 1.0,
                    "/ready to stop saying LIVE")
    assert resp.status == 503 and "DRAINING" in resp.text, resp
    assert c.read_response().status == 200
    assert r.wait(3) == 0


def test_second_sigterm_exits_at_once(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    c = _in_flight(ctx, r, u, {"x-upstream-hang": "1"})
    r.signal(signal.SIGTERM)
    wait_for(lambda: refused(r.port()), 1.0, "the drain to start")
    assert r.alive(), "exited on the first SIGTERM with a request in flight"
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(2) == 0
    assert time.monotonic() - t0 < 1.0 * slow_factor()
    wait_closed(c.sock, 1.0)


def test_drain_time_bounds_a_hanging_request(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, extra_args=["--drain-time-s", "1"])
    c = _in_flight(ctx, r, u, {"x-upstream-hang": "1"})
    t0 = time.monotonic()
    r.signal(signal.SIGTERM)
    assert r.wait(4) == 0
    took = time.monotonic() - t0
    assert 0.9 <= took < 2.5 * slow_factor(), f"drain took {took:.2f}s with --drain-time-s 1"
    wait_closed(c.sock, 1.0)
    # The client never got something that looks like a complete response.
    c.sock.settimeout(0.1)
    try:
        rest = c.sock.recv(65536)
    except (ConnectionResetError, socket.timeout):
        rest = b""
    assert complete_response(rest) is None


def test_sigint_exits_at_once(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    c = _in_flight(ctx, r, u, {"x-upstream-hang": "1"})
    t0 = time.monotonic()
    r.signal(signal.SIGINT)
    assert r.wait(2) == 0
    assert time.monotonic() - t0 < 1.0 * slow_factor()
    wait_closed(c.sock, 1.0)


def test_idle_timeout_closes_idle_client_connection(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]},
                    hcm_extra={"common_http_protocol_options": {"idle_timeout": "0.5s"}})
    c = HttpConn(r.port())
    assert c.request().status == 200
    t0 = time.monotonic()
    wait_closed(c.sock, 3.0)
    took = time.monotonic() - t0
    assert 0.4 <= took < 1.5 * slow_factor(), f"idle connection closed after {took:.2f}s"
    # A busy connection is not idle: requests every 0.2 s for 1 s keep it open.
    c = HttpConn(r.port())
    for _ in range(5):
        assert c.request().status == 200
        assert not is_closed(c.sock, 0.2)
    c.close()


def test_request_headers_timeout_is_408(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra={"request_headers_timeout": "0.5s"})
    t0 = time.monotonic()
    reply = raw_exchange(r.port(), b"GET / HTTP/1.1\r\nHost: a\r\nX-Partial: ", timeout=3)
    took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert reply.end in ("eof", "rst")
    assert 0.4 <= took < 1.5 * slow_factor(), took
    assert u.stats()["requests"] == 0
    # A connection that has sent nothing yet is not timed out by request_headers_timeout.
    s = ctx.connect(r.port())
    assert not is_closed(s, 0.8)
    s.sendall(build_request())
    s.settimeout(2)
    assert s.recv(100).startswith(b"HTTP/1.1 200")


def test_stream_idle_timeout_covers_a_stalled_head(ctx):
    """Envoy's stream exists from a request's first byte, so stream_idle_timeout (default 5 min)
    also ends a head that stops arriving: 408 "stream timeout", flag SI, counted as
    downstream_rq_idle_timeout. Each byte that arrives restarts it."""
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, hcm_extra={"stream_idle_timeout": "0.5s"},
                    access_log=[file_access_log(log)])
    t0 = time.monotonic()
    reply = raw_exchange(r.port(), b"GET /stalled HTTP/1.1\r\nHost: a\r\nX-Partial: ", timeout=3)
    took = time.monotonic() - t0
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert reply.endswith(b"stream timeout") and reply.end in ("eof", "rst"), reply
    assert 0.4 <= took < 1.5 * slow_factor(), took
    assert stats(r)["http.ingress_http.downstream_rq_idle_timeout"] == 1
    line = wait_log(log, lambda ln: " 408 " in ln)
    assert " SI " in line, line
    # A head that keeps trickling in is not idle: a byte every 0.2 s for 1.2 s, then it ends.
    s = ctx.connect(r.port())
    for b in b"GET / H":
        s.sendall(bytes([b]))
        assert not is_closed(s, 0.2)
    s.sendall(b"TTP/1.1\r\nHost: a\r\n\r\n")
    s.settimeout(2)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    # request_headers_timeout, when it comes first, is the one that fires
    r2 = start_proxy(ctx, {"c": [u]}, hcm_extra={"stream_idle_timeout": "0.5s",
                                                 "request_headers_timeout": "0.7s"})
    s = ctx.connect(r2.port())
    s.sendall(b"GET / HTTP/1.1\r\n")
    for _ in range(4):
        assert not is_closed(s, 0.15)
        s.sendall(b"X-A: b\r\n")
    reply = recv_until_closed(s, 2)
    assert reply.startswith(b"HTTP/1.1 408") and reply.endswith(b"request header timeout"), reply
    st = stats(r2)
    assert st["http.ingress_http.downstream_rq_header_timeout"] == 1, st
    assert st["http.ingress_http.downstream_rq_idle_timeout"] == 0, st


def test_max_request_headers_kb(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra={"max_request_headers_kb": 1})
    reply = raw_exchange(r.port(), build_request(headers={"x-big": "b" * 2048}), timeout=2)
    assert reply.startswith(b"HTTP/1.1 431"), reply
    assert reply.end in ("eof", "rst")
    assert http_request(r.port(), headers={"x-small": "s" * 100}).status == 200
    assert u.stats()["requests"] == 1


def test_emfile_does_not_spin(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    assert http_request(r.port()).status == 200
    p = subprocess.run(["prlimit", "--pid", str(r.pid), "--nofile=64:64"], capture_output=True,
                       text=True, timeout=5)
    assert p.returncode == 0, p.stderr
    socks = []
    try:
        for _ in range(100):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", r.port()))
            socks.append(s)
        # Let the proxy hit EMFILE, then measure its CPU over one second.
        wait_for(lambda: "Too many open files" in r.stderr or "EMFILE" in r.stderr, 3,
                 "the proxy to run out of descriptors")
        c0, t0 = proc_cpu_seconds(r.pid), time.monotonic()
        time.sleep(1.0)  # the measurement window, not synchronisation
        cpu = (proc_cpu_seconds(r.pid) - c0) / (time.monotonic() - t0)
        assert cpu < 0.5, f"proxy used {cpu:.0%} CPU while out of descriptors"
        assert r.alive()
    finally:
        for s in socks:
            s.close()

    def works():
        try:
            return http_request(r.port(), path="/recovered", timeout=1).status == 200
        except OSError:
            return False

    wait_for(works, 5, "a request to work after the connections closed")
