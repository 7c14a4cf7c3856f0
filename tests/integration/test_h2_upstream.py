"""HTTP/2 upstreams (h2c, prior knowledge): HTTP/1.1 and HTTP/2 clients through an HTTP/2
cluster, many streams sharing one upstream connection, max_concurrent_streams opening another,
GOAWAY in the middle of a burst, REFUSED_STREAM retried, upstream resets, trailers both ways
(HTTP/2 and HTTP/1.1 chunked), the translation rules for connection-specific headers, large
bodies with a slow reader, use_downstream_protocol_config, max_requests_per_connection, and the
config errors. The upstream is remora-test-upstream, which speaks h2c when it sees the preface
(its x-upstream-* controls are in tests/upstream/upstream.c)."""

import json
import shutil
import socket
import subprocess
import threading

from lib import (HttpConn, Skip, build_request, free_port, http_request, is_sanitized,
                 recv_until_closed, slow_factor, wait_for)
from proxyutil import (echo, file_access_log, log_fields, proxy_config, route, slow_reader_growth_kb,
                       start_proxy, stats, wait_log, wait_stat)

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
MB = 1 << 20


def h2_cluster(h2=None, common=None, downstream=False):
    """cluster_extra for an HTTP/2 cluster (``downstream``: use_downstream_protocol_config)."""
    o = {"@type": "type.googleapis.com/" + HPO}
    key = "use_downstream_protocol_config" if downstream else "explicit_http_config"
    o[key] = {"http2_protocol_options": dict(h2 or {})}
    if common:
        o["common_http_protocol_options"] = common
    return {"typed_extension_protocol_options": {HPO: o}}


def _need(tool):
    if shutil.which(tool) is None:
        raise Skip(f"{tool} is not installed")


def _curl_h2(port, path="/", *args, timeout=20):
    _need("curl")
    argv = ["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w",
            "\n%{http_code} %{http_version}", *args, f"http://127.0.0.1:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, timeout=timeout * slow_factor())
    body, _, tail = p.stdout.rpartition(b"\n")
    code, _, ver = tail.decode().partition(" ")
    return p.returncode, int(code or 0), ver, body


def _nghttp(port, path, *args, timeout=20):
    """nghttp -v (h2c prior knowledge): (returncode, verbose output with the body)."""
    _need("nghttp")
    p = subprocess.run(["nghttp", "-v", *args, f"http://127.0.0.1:{port}{path}"],
                       capture_output=True, text=True, timeout=timeout * slow_factor())
    return p.returncode, p.stdout + p.stderr


def _recv_fields(out):
    """The header fields nghttp received, in order: [(name, value)]."""
    got = []
    for line in out.splitlines():
        if "] recv (stream_id=" in line:
            nv = line.split(") ", 1)[1]
            name, _, value = nv.partition(": ")
            got.append((name, value))
    return got


def _parallel(n, fn):
    """Runs fn(i) for i in range(n) on n threads; returns the results in order."""
    out = [None] * n
    errs = []

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30 * slow_factor())
    assert not errs, errs
    return out


# ---- basics ----

def test_h2_upstream_h1_and_h2_clients(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster())
    j = echo(r.port(), "POST", "/p?q=1", body=b"hello-upstream")
    assert j["version"] == "2" and j["method"] == "POST" and j["path"] == "/p?q=1", j
    assert j["body_len"] == len("hello-upstream"), j
    hs = dict((k, v) for k, v in j["headers"])
    assert hs[":authority"] == f"127.0.0.1:{r.port()}" and hs[":scheme"] == "http", hs
    assert "host" not in hs, hs

    rc, code, ver, body = _curl_h2(r.port(), "/h2")
    assert (rc, code, ver, body) == (0, 200, "2", b"upstream\n")

    size = 10 * MB
    expect = (bytes(range(ord("a"), ord("a") + 26)) * (size // 26 + 1))[:size]
    resp = http_request(r.port(), path="/big", headers={"x-upstream-body-size": str(size)})
    assert resp.status == 200 and resp.body == expect
    rc, code, ver, body = _curl_h2(r.port(), "/big", "-H", f"x-upstream-body-size: {size}")
    assert (rc, code) == (0, 200) and body == expect

    st = stats(r)
    assert st["cluster.c.upstream_cx_http2_total"] == 1, st
    assert st["cluster.c.upstream_cx_http1_total"] == 0, st
    assert st["cluster.c.upstream_rq_200"] == 4, st
    us = u.stats()
    assert us["h2_connections"] == 1 and us["connections"] == 1, us


def test_h2_upstream_translation_rules(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster())
    # HTTP/1.1 -> HTTP/2: connection-specific fields go, te only as "te: trailers", a chunked
    # body loses its transfer-encoding.
    hc = HttpConn(r.port())
    ctx.sockets.append(hc.sock)
    hc.sock.sendall(
        b"POST /t HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n"
        b"TE: trailers\r\nUpgrade: foo\r\nX-Upstream-Echo: 1\r\nX-Keep: yes\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    resp = hc.read_response()
    assert resp.status == 200, resp
    j = resp.json()
    names = [k.lower() for k, _ in j["headers"]]
    for gone in ("connection", "x-hop", "keep-alive", "proxy-connection", "upgrade",
                 "transfer-encoding", "host"):
        assert gone not in names, (gone, j["headers"])
    hs = dict((k.lower(), v) for k, v in j["headers"])
    assert hs["te"] == "trailers" and hs["x-keep"] == "yes", hs
    assert hs[":authority"] == "example.test" and hs[":path"] == "/t", hs
    assert j["body_len"] == 5, j
    # te other than trailers is dropped
    j = echo(r.port(), headers={"te": "gzip"})
    assert "te" not in [k for k, _ in j["headers"]], j
    # Envoy's TE sanitizing applies towards HTTP/1.1 upstreams too
    r1 = start_proxy(ctx, {"c": [u]})
    j = echo(r1.port(), headers={"te": "deflate, trailers"})
    assert [v for k, v in j["headers"] if k == "te"] == ["trailers"], j
    # HTTP/2 -> HTTP/2: two cookie fields arrive as two (joined downstream, split again
    # upstream: RFC 9113 8.2.3; test_h2_cookies.py has the rest)
    rc, code, _, body = _curl_h2(r.port(), "/c", "-H", "x-upstream-echo: 1", "-H", "cookie: a=1",
                                 "-H", "cookie: b=2")
    assert (rc, code) == (0, 200), (rc, code, body)
    cookies = [v for k, v in json.loads(body)["headers"] if k == "cookie"]
    assert cookies == ["a=1", "b=2"], cookies
    # HTTP/2 response -> HTTP/1.1: content-length when the upstream sent one
    resp = http_request(r.port(), headers={"x-upstream-body-size": "1000"})
    assert resp.status == 200 and resp.header("content-length") == "1000", resp
    assert resp.header("transfer-encoding") is None, resp


def test_h2_upstream_streams_share_one_connection(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster())
    n = 40

    def one(i):
        return http_request(r.port(), path=f"/s{i}", headers={"x-upstream-delay-ms": "300"})

    resps = _parallel(n, one)
    assert all(x.status == 200 and x.body == b"upstream\n" for x in resps), resps
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 1, st
    assert st["cluster.c.upstream_rq_200"] == n, st
    us = u.stats()
    assert us["h2_connections"] == 1 and us["requests"] == n, us
    assert st["cluster.c.http2.streams_active"] == 0, st


def test_h2_upstream_max_concurrent_streams_opens_another_connection(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster({"max_concurrent_streams": 2}))
    resps = _parallel(5, lambda i: http_request(r.port(), path=f"/m{i}",
                                                headers={"x-upstream-delay-ms": "300"}))
    assert all(x.status == 200 for x in resps), resps
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 3, st  # 2 + 2 + 1 streams
    assert u.stats()["h2_connections"] == 3
    # idle again: the next request reuses an open connection
    assert http_request(r.port(), path="/again").status == 200
    assert stats(r)["cluster.c.upstream_cx_total"] == 3


def test_h2_upstream_goaway_mid_load(ctx):
    """A GOAWAY while a burst is in flight: the streams at or below its last_stream_id finish
    on the old connection, those above it are refused and retried on a new one; none is
    lost, and later requests use the new connection."""
    _need("nghttp")
    u = ctx.start_upstream()
    policy = {"retry_on": "refused-stream", "num_retries": 3}
    # max_retries: Envoy's default of 3 concurrent retries would turn most of the burst's
    # refused streams into 503 UO
    breakers = {"thresholds": [{"max_retries": 100}]}
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=dict(h2_cluster(), circuit_breakers=breakers),
                    routes=[route("/", "c", retry_policy=policy)])
    # One HTTP/2 client connection, ten streams sent together (nghttp multiplexes its URIs in
    # order): the first asks the upstream to answer GOAWAY(last_stream_id = its own stream),
    # so the nine after it, already sent on the same upstream connection, are refused.
    urls = [f"http://127.0.0.1:{r.port()}/g?goaway=0&delay_ms=300"]
    urls += [f"http://127.0.0.1:{r.port()}/r{i}?delay_ms=300" for i in range(9)]
    p = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, text=True,
                       timeout=30 * slow_factor())
    rows = [ln.split() for ln in p.stdout.splitlines() if ln.strip()[:1].isdigit()]
    codes = sorted(row[4] for row in rows)
    assert p.returncode == 0 and codes == ["200"] * 10, (p.returncode, p.stdout, p.stderr)
    st = stats(r)
    assert st["http.ingress_http.downstream_cx_total"] == 1, st
    assert st["cluster.c.upstream_cx_close_notify"] == 1, st
    assert st["cluster.c.upstream_cx_total"] == 2, st
    assert st["cluster.c.upstream_rq_retry"] == 9, st
    assert st["cluster.c.upstream_rq_200"] == 10, st
    assert u.stats()["h2_connections"] == 2
    assert http_request(r.port(), path="/after").status == 200
    assert stats(r)["cluster.c.upstream_cx_total"] == 2


def test_h2_upstream_refused_stream(ctx):
    a, b = ctx.start_upstream("a"), ctx.start_upstream("b")
    log = ctx.tmp / "access.log"
    prev = [{"name": "envoy.retry_host_predicates.previous_hosts",
             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                       "previous_hosts.v3.PreviousHostsPredicate"}}]
    routes = [route("/retry", "c", retry_policy={"retry_on": "refused-stream", "num_retries": 1,
                                                  "retry_host_predicate": prev}),
              route("/reset", "c", retry_policy={"retry_on": "reset", "num_retries": 1,
                                                  "retry_host_predicate": prev}),
              route("/", "c")]
    r = start_proxy(ctx, {"c": [a, b]}, cluster_extra=h2_cluster(), routes=routes,
                    access_log=[file_access_log(log)])
    refuse_a = {"x-upstream-only": "a", "x-upstream-refuse": "1", "x-upstream-echo": "1"}
    for i in range(4):
        # the body is replayed on the retry's new stream
        resp = http_request(r.port(), "POST", f"/retry/{i}", headers=refuse_a,
                            body=b"x" * (1000 + i))
        assert resp.status == 200 and resp.json()["name"] == "b", resp
        assert resp.json()["body_len"] == 1000 + i, resp.json()
    # "reset" covers a refused stream too (a reset before any response byte), as in Envoy
    for i in range(2):
        resp = http_request(r.port(), path=f"/reset/{i}", headers=refuse_a)
        assert resp.status == 200 and resp.json()["name"] == "b", resp
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] >= 2, st
    assert st["cluster.c.upstream_rq_retry"] == st["cluster.c.http2.rx_reset"], st
    # without a retry policy: 503 UR with Envoy's reset reason
    refuse_all = {"x-upstream-refuse": "1"}
    resp = http_request(r.port(), path="/plain", headers=refuse_all)
    assert resp.status == 503, resp
    assert b"reset reason: remote refused stream reset" in resp.body, resp
    f = log_fields(wait_log(log, lambda ln: " /plain " in ln))
    assert (f["code"], f["flags"]) == ("503", "UR"), f


def test_h2_upstream_reset_flags(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(),
                    access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/before", headers={"x-upstream-reset": "before-headers"})
    assert resp.status == 503 and b"reset reason: remote reset" in resp.body, resp
    f = log_fields(wait_log(log, lambda ln: " /before " in ln))
    assert (f["code"], f["flags"]) == ("503", "UR"), f
    # after the head went downstream: the client connection is reset, flag UR
    s = ctx.connect(r.port())
    s.sendall(build_request(path="/mid", headers={"x-upstream-reset": "mid-body",
                                                  "x-upstream-body-size": "100000"}))
    data = recv_until_closed(s)
    # what reached the client (if anything before the reset) is an incomplete response
    assert data == b"" or data.startswith(b"HTTP/1.1 200"), data[:100]
    assert len(data.partition(b"\r\n\r\n")[2]) < 100000
    f = log_fields(wait_log(log, lambda ln: " /mid " in ln))
    assert "UR" in f["flags"], f
    st = stats(r)
    assert st["cluster.c.http2.rx_reset"] == 2, st
    assert st["cluster.c.upstream_rq_rx_reset"] == 2, st
    # the connection survives stream resets
    assert http_request(r.port(), path="/ok").status == 200
    assert stats(r)["cluster.c.upstream_cx_total"] == 1


def test_h2_upstream_local_resets_cancel_only_their_stream(ctx):
    """A per-try timeout and a client that goes away reset their upstream stream (RST_STREAM
    CANCEL); the shared connection and its other streams go on."""
    u = ctx.start_upstream()
    policy = {"retry_on": "reset", "num_retries": 1, "per_try_timeout": "0.2s"}
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(),
                    routes=[route("/slow", "c", retry_policy=policy), route("/", "c")])
    slow = threading.Thread(target=lambda: http_request(r.port(), path="/long",
                                                        headers={"x-upstream-delay-ms": "800"}))
    slow.start()
    resp = http_request(r.port(), path="/slow", headers={"x-upstream-delay-ms": "2000"})
    assert resp.status == 504, resp
    wait_stat(r, "cluster.c.upstream_rq_per_try_timeout", 2)
    # a client that closes while its request waits
    s = ctx.connect(r.port())
    s.sendall(build_request(path="/gone", headers={"x-upstream-delay-ms": "2000"}))
    wait_stat(r, "cluster.c.http2.streams_active", 2)
    s.close()
    wait_stat(r, "cluster.c.http2.tx_reset", 3)
    slow.join(10 * slow_factor())
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 1, st
    assert st["cluster.c.upstream_rq_200"] == 1, st  # /long finished on the shared connection
    assert st["cluster.c.upstream_rq_tx_reset"] == 1, st
    assert http_request(r.port(), path="/after").status == 200


# ---- trailers ----

def test_h2_upstream_trailers_both_ways(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster())
    body = ctx.tmp / "body.txt"
    body.write_bytes(b"hello")
    rc, out = _nghttp(r.port(), "/t", "-d", str(body), "--trailer", "x-req-trailer: rt",
                      "-H", "x-upstream-echo: 1", "-H", "x-upstream-trailer: grpc-status: 0",
                      "-H", "x-upstream-trailer: grpc-message: fine")
    assert rc == 0, out
    fields = _recv_fields(out)
    assert (":status", "200") in fields, out
    assert fields[-2:] == [("grpc-status", "0"), ("grpc-message", "fine")], fields
    j = json.loads(out[out.index("{\"name\""):].split("\n", 1)[0])
    assert j["trailers"] == [["x-req-trailer", "rt"]], j
    assert j["body_len"] == 5, j

    # a head that ends the stream upstream (gRPC's Trailers-Only) stays one HEADERS frame
    # with END_STREAM, with no empty DATA after it
    rc, out = _nghttp(r.port(), "/only", "-H", "x-upstream-status: 204")
    frames = [ln for ln in out.splitlines() if "] recv " in ln and " frame <" in ln]
    resp = [ln for ln in frames if "HEADERS" in ln or "DATA" in ln]
    assert rc == 0 and len(resp) == 1 and "flags=0x05" in resp[0], out

    # HTTP/1.1 chunked request trailers reach the HTTP/2 upstream
    hc = HttpConn(r.port())
    ctx.sockets.append(hc.sock)
    hc.sock.sendall(b"POST /h1t HTTP/1.1\r\nHost: h\r\nX-Upstream-Echo: 1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
                    b"X-Checksum: c1\r\nContent-Length: 99\r\n\r\n")
    resp = hc.read_response()
    assert resp.status == 200, resp
    assert resp.json()["trailers"] == [["x-checksum", "c1"]], resp.json()

    # HTTP/1.1 clients get no trailers (Envoy without enable_trailers), and a whole body
    s = ctx.connect(r.port())
    s.sendall(build_request(path="/nt", headers={"x-upstream-trailer": "grpc-status: 0",
                                                 "x-upstream-body-size": "10"}))
    data = b""
    s.settimeout(5 * slow_factor())
    while not data.endswith(b"abcdefghij") and b"0\r\n\r\n" not in data:
        d = s.recv(65536)
        if not d:
            break
        data += d
    assert data.startswith(b"HTTP/1.1 200") and b"grpc-status" not in data, data
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 1, st


class _ChunkedTrailerServer:
    """A one-response-per-connection HTTP/1.1 upstream answering with a chunked body and a
    trailer section, recording the requests it read (for request trailers)."""

    def __init__(self, ctx):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.requests = []
        ctx.sockets.append(self.sock)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                data = b""
                try:
                    while b"\r\n0\r\n" not in data or not data.endswith(b"\r\n\r\n"):
                        d = c.recv(65536)
                        if not d:
                            break
                        data += d
                        if b"\r\n\r\n" in data and b"chunked" not in data.lower():
                            break
                except OSError:
                    continue
                self.requests.append(data)
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n4\r\nbody\r\n0\r\n"
                          b"X-Up-Trailer: yes\r\nGrpc-Status: 0\r\n\r\n")


def test_h1_upstream_trailers_reach_h2_clients(ctx):
    """An HTTP/1.1 upstream's chunked trailers go to an HTTP/2 client; an HTTP/2 client's
    request trailers go to an HTTP/1.1 upstream as a chunked trailer section."""
    srv = _ChunkedTrailerServer(ctx)
    r = start_proxy(ctx, {"c": [srv.port]})
    rc, out = _nghttp(r.port(), "/tr")
    assert rc == 0, out
    fields = _recv_fields(out)
    assert fields[-2:] == [("x-up-trailer", "yes"), ("grpc-status", "0")], fields
    assert "body" in out, out
    # a chunked HTTP/1.1 request keeps its trailers (framing and hop-by-hop fields dropped)
    hc = HttpConn(r.port())
    ctx.sockets.append(hc.sock)
    hc.sock.sendall(b"POST /h1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n0\r\nX-Req-Trailer: rt\r\nContent-Length: 9\r\n\r\n")
    resp = hc.read_response()
    assert resp.status == 200, resp
    wait_for(lambda: len(srv.requests) == 2, 5, "second request")
    req = srv.requests[-1]
    assert b"transfer-encoding: chunked" in req.lower(), req
    assert req.endswith(b"\r\n3\r\nabc\r\n0\r\nx-req-trailer: rt\r\n\r\n"), req
    # an HTTP/2 request with a content-length goes out with it: its trailers are dropped
    body = ctx.tmp / "body.txt"
    body.write_bytes(b"abc")
    rc, out = _nghttp(r.port(), "/cl", "-d", str(body), "--trailer", "x-dropped: 1")
    assert rc == 0, out
    wait_for(lambda: len(srv.requests) == 3, 5, "third request")
    req = srv.requests[-1]
    assert b"content-length: 3" in req.lower() and b"x-dropped" not in req, req


# ---- flow control and memory ----

def test_h2_upstream_large_bodies_slow_reader(ctx):
    u = ctx.start_upstream()
    if is_sanitized():
        ctx.env["ASAN_OPTIONS"] = ctx.env.get("ASAN_OPTIONS", "") + \
            ":quarantine_size_mb=8:thread_local_quarantine_size_kb=256"
    limit = MB
    r = start_proxy(ctx, {"c": [u]},
                    cluster_extra=dict(h2_cluster(), per_connection_buffer_limit_bytes=limit),
                    listener_extra={"per_connection_buffer_limit_bytes": limit})
    # upload: 32 MiB through an HTTP/1.1 client, counted by the upstream
    up = 32 * MB
    j = echo(r.port(), "POST", "/up", body=b"u" * up)
    assert j["body_len"] == up, j
    for _ in range(2):
        assert http_request(r.port(), headers={"x-upstream-body-size": str(4 * MB)}).status == 200
    grown_kb, got, s = slow_reader_growth_kb(ctx, r, 256 * MB)
    # the downstream buffer limit plus one stream window (the limit) plus allocator noise
    allowed_kb = 3 * limit // 1024 + 512 + (16 * 1024 if is_sanitized() else 0)
    assert grown_kb < allowed_kb, (grown_kb, got)
    s.close()
    # the other streams of the shared connection were never blocked by the slow one
    assert http_request(r.port(), path="/after").status == 200
    assert stats(r)["cluster.c.upstream_cx_total"] == 1


# ---- protocol choice and connection limits ----

def test_h2_upstream_use_downstream_protocol(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(downstream=True))
    assert echo(r.port())["version"] == "1.1"
    rc, code, _, body = _curl_h2(r.port(), "/", "-H", "x-upstream-echo: 1")
    assert (rc, code) == (0, 200) and json.loads(body)["version"] == "2", body
    st = stats(r)
    assert st["cluster.c.upstream_cx_http1_total"] == 1, st
    assert st["cluster.c.upstream_cx_http2_total"] == 1, st


def test_max_requests_per_connection_h1_and_h2(ctx):
    u = ctx.start_upstream()
    common = {"max_requests_per_connection": 2}
    cfg = proxy_config({"h1": [u.port], "h2": [u.port]}, routes=[("/h2", "h2"), ("/", "h1")])
    cls = cfg["static_resources"]["clusters"]
    cls[0].update({"typed_extension_protocol_options": {HPO: {
        "@type": "type.googleapis.com/" + HPO,
        "explicit_http_config": {"http_protocol_options": {}},
        "common_http_protocol_options": common}}})
    cls[1].update(h2_cluster(common=common))
    r = ctx.start_remora(cfg)
    for i in range(4):
        assert http_request(r.port(), path=f"/x{i}").status == 200
        assert http_request(r.port(), path=f"/h2/{i}").status == 200
    st = stats(r)
    assert st["cluster.h1.upstream_cx_total"] == 2, st
    assert st["cluster.h2.upstream_cx_total"] == 2, st
    assert st["cluster.h1.upstream_cx_max_requests"] == 2, st
    assert st["cluster.h2.upstream_cx_max_requests"] == 2, st


def test_h2_upstream_connect_failure_and_idle_timeout(ctx):
    r = start_proxy(ctx, {"c": [free_port()]}, cluster_extra=h2_cluster())
    resp = http_request(r.port())
    assert resp.status == 503 and b"connection failure" in resp.body, resp
    u = ctx.start_upstream()
    r2 = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(common={"idle_timeout": "0.3s"}))
    assert http_request(r2.port()).status == 200
    wait_stat(r2, "cluster.c.upstream_cx_idle_timeout", 1, timeout=5 * slow_factor())
    assert stats(r2)["cluster.c.upstream_cx_active"] == 0
    assert http_request(r2.port()).status == 200
    assert stats(r2)["cluster.c.upstream_cx_total"] == 2


def test_h2_upstream_config_validation(ctx):
    from test_proxy_lifecycle import _validate

    def check(extra, want, name):
        cfg = proxy_config({"c": [9]}, cluster_extra=extra)
        p = _validate(ctx, cfg, name)
        out = p.stdout + p.stderr
        if want is None:
            assert p.returncode == 0, out
        else:
            assert p.returncode == 1 and want in out, out

    base = f"static_resources.clusters[0].typed_extension_protocol_options[\"{HPO}\"]"
    check(h2_cluster({"max_concurrent_streams": 100, "initial_stream_window_size": 65535,
                      "initial_connection_window_size": 1 << 20, "hpack_table_size": 0}),
          None, "ok.yaml")
    check(h2_cluster(downstream=True), None, "ok2.yaml")
    check({"http2_protocol_options": {}}, None, "ok3.yaml")
    auto = {"typed_extension_protocol_options": {HPO: {
        "@type": "type.googleapis.com/" + HPO, "auto_config": {}}}}
    check(auto, base + ".auto_config: not supported by remora yet", "auto.yaml")
    check(h2_cluster({"allow_connect": True}),
          base + ".explicit_http_config.http2_protocol_options.allow_connect: not supported",
          "connect.yaml")
    check(h2_cluster({"max_concurrent_streams": 0}),
          "http2_protocol_options.max_concurrent_streams: 0 is out of range", "streams.yaml")
    check(h2_cluster({"initial_stream_window_size": 100}),
          "initial_stream_window_size: 100 is out of range", "window.yaml")
    both = dict(h2_cluster(), http2_protocol_options={})
    check(both, "static_resources.clusters[0].http2_protocol_options: cannot be set together",
          "both.yaml")


def test_h2_upstream_example_serves(ctx):
    """examples/h2_upstream.yaml validates, and (its ports swapped for free ones) serves HTTP/1.1
    and HTTP/2 clients through its HTTP/2 cluster."""
    from lib import REPO
    text = (REPO / "examples" / "h2_upstream.yaml").read_text()
    p = subprocess.run([str(ctx.bin("remora")), "--mode", "validate", "-c",
                        str(REPO / "examples" / "h2_upstream.yaml")],
                       capture_output=True, text=True, timeout=30 * slow_factor())
    assert p.returncode == 0, p
    a, b = ctx.start_upstream("a"), ctx.start_upstream("b")
    text = text.replace("port_value: 9901", "port_value: {{ADMIN}}")
    text = text.replace("port_value: 10000", "port_value: {{LISTEN}}")
    text = text.replace("port_value: 18080", f"port_value: {a.port}")
    text = text.replace("port_value: 18081", f"port_value: {b.port}")
    r = ctx.start_remora(text)
    names = {echo(r.port(), path=f"/x{i}")["name"] for i in range(4)}
    assert names == {"a", "b"}, names
    assert echo(r.port(), path="/mirror")["version"] == "1.1"
    st = stats(r)
    assert st["cluster.grpc_backend.upstream_cx_http2_total"] == 2, st
    assert st["cluster.mirror_backend.upstream_cx_http1_total"] == 1, st


def test_h2_upstream_streams_wait_for_the_connection_as_pending(ctx):
    """Streams that arrive while their connection is still connecting wait on it, each holding
    a max_pending_requests unit: past the limit they get 503 UO at once."""
    _need("nghttp")
    u = ctx.start_upstream()
    breakers = {"thresholds": [{"max_pending_requests": 2}]}
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=dict(h2_cluster(), circuit_breakers=breakers))
    # nghttp sends its four requests together: they reach the cluster before the connect
    # completes
    urls = [f"http://127.0.0.1:{r.port()}/p{i}" for i in range(4)]
    p = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, text=True,
                       timeout=30 * slow_factor())
    rows = [ln.split() for ln in p.stdout.splitlines() if ln.strip()[:1].isdigit()]
    codes = sorted(row[4] for row in rows)
    assert p.returncode == 0 and codes == ["200", "200", "503", "503"], p.stdout
    st = stats(r)
    assert st["cluster.c.upstream_rq_pending_overflow"] == 2, st
    assert st["cluster.c.upstream_rq_pending_total"] == 2, st
    assert st["cluster.c.upstream_rq_pending_active"] == 0, st
    # connected now: no pending unit is needed
    p = subprocess.run(["nghttp", "-n", "-s", *urls], capture_output=True, text=True,
                       timeout=30 * slow_factor())
    codes = sorted(ln.split()[4] for ln in p.stdout.splitlines() if ln.strip()[:1].isdigit())
    assert codes == ["200"] * 4, p.stdout


def test_h2_upstream_max_connection_duration_drains(ctx):
    """max_connection_duration: the connection takes no new stream once that old, its streams
    in flight finish, and it closes when the last one ends."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]},
                    cluster_extra=h2_cluster(common={"max_connection_duration": "0.3s"}))
    slow = _parallel(1, lambda i: http_request(r.port(), path="/slow",
                                               headers={"x-upstream-delay-ms": "600"}))
    assert slow[0].status == 200, slow  # in flight when the duration passed: finished
    wait_stat(r, "cluster.c.upstream_cx_max_duration_reached", 1)
    wait_stat(r, "cluster.c.upstream_cx_active", 0)
    assert http_request(r.port(), path="/next").status == 200
    st = stats(r)
    assert st["cluster.c.upstream_cx_total"] == 2, st
