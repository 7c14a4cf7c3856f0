"""Large bodies through remora in both directions, and backpressure: a slow client reading a
huge download must not make the proxy buffer it (fault F22 / catalogue case 30)."""

from lib import HttpConn, curl, http_request, is_sanitized
from proxyutil import MB, slow_reader_growth_kb, start_proxy

LIMIT = 1 * MB  # per_connection_buffer_limit_bytes for the slow-reader test


def test_64mib_download_intact(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    n = 64 * MB
    p = curl(["-o", "/dev/null", "-w", "%{http_code} %{size_download}", "-H",
              f"x-upstream-body-size: {n}", f"http://127.0.0.1:{r.port()}/big"], timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"200 {n}".encode(), p.stdout
    # Chunked from the upstream: still every byte, and the pattern is intact at the end.
    with HttpConn(r.port(), timeout=30) as c:
        resp = c.request(path="/bigchunked", headers={"x-upstream-body-size": str(8 * MB + 7),
                                                       "x-upstream-chunked": "1"})
    assert resp.status == 200 and len(resp.body) == 8 * MB + 7
    period = bytes(range(ord("a"), ord("z") + 1))
    k = len(resp.body) - 1000
    assert resp.body[k:k + 26] == (period * 2)[k % 26:k % 26 + 26]


def test_64mib_upload_intact(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    n = 64 * MB
    with HttpConn(r.port(), timeout=30) as c:
        c.send(b"PUT /up HTTP/1.1\r\nHost: h\r\nx-upstream-echo: 1\r\n"
               b"Content-Length: %d\r\n\r\n" % n)
        block = b"z" * MB
        for _ in range(n // MB):
            c.send(block)
        resp = c.read_response("PUT")
    assert resp.status == 200, resp
    assert resp.json()["body_len"] == n
    # And chunked, with odd chunk sizes.
    with HttpConn(r.port(), timeout=30) as c:
        chunks = [b"y" * (MB + 13)] * 16
        resp = c.request("POST", "/upc", headers={"x-upstream-echo": "1"}, body=chunks)
    assert resp.json()["body_len"] == 16 * (MB + 13)


def test_slow_reader_bounded_memory(ctx):
    """A client that reads a 256 MiB download slowly: the proxy stops reading the upstream
    once about one buffer limit is queued, so its RSS stays flat."""
    u = ctx.start_upstream()
    if is_sanitized():
        # ASan's quarantine keeps freed buffers resident; make it small so RSS measures what
        # the proxy holds, not what it already freed.
        ctx.env["ASAN_OPTIONS"] = ctx.env.get("ASAN_OPTIONS", "") + \
            ":quarantine_size_mb=8:thread_local_quarantine_size_kb=256"
    r = start_proxy(ctx, {"c": [u]}, listener_extra={"per_connection_buffer_limit_bytes": LIMIT},
                    cluster_extra={"per_connection_buffer_limit_bytes": LIMIT})
    # Warm up (first connections, buffers, stats) before taking the baseline.
    for _ in range(3):
        assert http_request(r.port(), headers={"x-upstream-body-size": str(4 * MB)}).status == 200
    grown_kb, got, s = slow_reader_growth_kb(ctx, r, 256 * MB)
    # 3x the limit (the brief's bound) plus 512 KiB for allocator noise; measured on the plain
    # build: ~2.95x the limit at 256 KiB, 512 KiB, 1 MiB and 2 MiB limits.
    allowed_kb = 3 * LIMIT // 1024 + 512 + (16 * 1024 if is_sanitized() else 0)
    assert grown_kb < allowed_kb, \
        f"RSS grew {grown_kb} KiB while a slow client read {got} bytes; " \
        f"allowed {allowed_kb} KiB"
    s.close()
    # The proxy is still fine.
    assert http_request(r.port(), path="/after").status == 200
