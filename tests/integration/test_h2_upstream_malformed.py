"""Malformed HTTP/2 responses from an upstream (RFC 9113 8.1.1, 8.2.1, 8.3.2): an upper-case
field name, a missing :status, a content-length that is not a number, and DATA that does not
add up to the content-length. Each is a protocol error on that stream only (nghttp2 resets it
with PROTOCOL_ERROR): before a response head the client gets Envoy's 502 "reset reason:
protocol error" (a gRPC client: UNAVAILABLE), after it the client's stream is reset; the
access log shows UPE and http2.rx_messaging_error counts it, while the connection's other
streams and later requests go on. The test upstream sends these with x-upstream-malformed
(tests/upstream/upstream_h2.c)."""

import shutil
import subprocess
import threading

from lib import Skip, build_request, http_request, recv_until_closed, slow_factor, wait_for
from proxyutil import file_access_log, log_fields, start_proxy, stats, wait_log

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
H2 = {"typed_extension_protocol_options": {HPO: {
    "@type": "type.googleapis.com/" + HPO,
    "explicit_http_config": {"http2_protocol_options": {}}}}}
BEFORE_HEAD = ("upper-name", "no-status", "bad-cl")


def _start(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=H2, access_log=[file_access_log(log)])
    return u, r, log


def test_h2_upstream_malformed_response_is_502_upe(ctx):
    u, r, log = _start(ctx)
    # a slow stream on the same upstream connection, in flight through all of it
    box = {}
    slow = threading.Thread(target=lambda: box.setdefault("r", http_request(
        r.port(), path="/slow", headers={"x-upstream-delay-ms": str(int(1500 * slow_factor()))},
        timeout=10)))
    slow.start()
    wait_for(lambda: u.stats()["h2_streams"] == 1, 5, "the slow stream at the upstream")
    for mode in BEFORE_HEAD:
        resp = http_request(r.port(), path=f"/m/{mode}", headers={"x-upstream-malformed": mode})
        assert resp.status == 502, (mode, resp)
        assert resp.body == (b"upstream connect error or disconnect/reset before headers. "
                             b"reset reason: protocol error"), (mode, resp)
    # a gRPC request gets the Trailers-Only equivalent: UNAVAILABLE
    resp = http_request(r.port(), "POST", "/pkg.Svc/M", body=b"",
                        headers={"content-type": "application/grpc",
                                 "x-upstream-malformed": "no-status"})
    assert (resp.status, resp.header("grpc-status")) == (200, "14"), resp
    assert "protocol error" in resp.header("grpc-message", ""), resp.headers
    # the other stream and later requests are unaffected; it all stayed on one connection
    assert slow.is_alive(), "the slow stream should still be in flight"
    assert http_request(r.port(), path="/after").status == 200
    slow.join(10 * slow_factor())
    assert box["r"].status == 200 and box["r"].body == b"upstream\n", box
    for mode in BEFORE_HEAD:
        f = log_fields(wait_log(log, lambda ln, m=mode: f" /m/{m} " in ln))
        assert (f["code"], f["flags"]) == ("502", "UPE"), (mode, f)
    f = log_fields(wait_log(log, lambda ln: " /pkg.Svc/M " in ln))
    assert (f["code"], f["flags"]) == ("200", "UPE"), f
    st = stats(r)
    assert st["cluster.c.http2.rx_messaging_error"] == 4, st
    assert st["cluster.c.http2.tx_reset"] == 4, st
    assert st["cluster.c.upstream_cx_protocol_error"] == 4, st
    assert st["cluster.c.upstream_cx_total"] == 1, st
    assert st["cluster.c.upstream_rq_200"] == 2, st
    assert st["cluster.c.http2.streams_active"] == 0, st
    assert u.stats()["h2_connections"] == 1


def test_h2_upstream_content_length_mismatch_resets_the_client(ctx):
    """content-length: 100 and 6 body bytes: the head went downstream already, so the HTTP/1.1
    client's connection is reset (never a response that looks complete), flag UPE."""
    u, r, log = _start(ctx)
    s = ctx.connect(r.port())
    s.sendall(build_request(path="/mismatch", headers={"x-upstream-malformed": "cl-mismatch"}))
    data = recv_until_closed(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert data == b"" or head.startswith(b"HTTP/1.1 200"), data
    assert len(body) < 100, data
    f = log_fields(wait_log(log, lambda ln: " /mismatch " in ln))
    assert f["code"] == "200" and f["flags"] == "UPE", f
    st = stats(r)
    assert st["cluster.c.http2.rx_messaging_error"] == 1, st
    assert st["cluster.c.http2.rx_reset"] == 0, st  # our reset, not the upstream's
    assert http_request(r.port(), path="/after").status == 200
    assert stats(r)["cluster.c.upstream_cx_total"] == 1


def test_h2_upstream_malformed_response_to_h2_client(ctx):
    if shutil.which("curl") is None:
        raise Skip("curl is not installed")
    u, r, log = _start(ctx)
    p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "-", "-w",
                        "\n%{http_code}", "-H", "x-upstream-malformed: upper-name",
                        f"http://127.0.0.1:{r.port()}/h2c"],
                       capture_output=True, timeout=20 * slow_factor())
    assert p.returncode == 0 and p.stdout.endswith(b"\n502"), p
    assert b"reset reason: protocol error" in p.stdout, p
    f = log_fields(wait_log(log, lambda ln: " /h2c " in ln))
    assert (f["code"], f["flags"]) == ("502", "UPE"), f


def test_test_upstream_malformed_modes(ctx):
    """The HTTP/2-only modes are refused over HTTP/1.1, and the HTTP/1.1-only ones over
    HTTP/2 (each answer names the control)."""
    u = ctx.start_upstream()
    resp = http_request(u.port, path="/", headers={"x-upstream-malformed": "upper-name"})
    assert resp.status == 400 and b"HTTP/2-only" in resp.body, resp
    resp = http_request(u.port, path="/", headers={"x-upstream-max-streams": "1"})
    assert resp.status == 400 and b"HTTP/2-only" in resp.body, resp
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=H2)
    resp = http_request(r.port(), path="/", headers={"x-upstream-malformed": "cl-te"})
    assert resp.status == 400 and b"HTTP/1.1 only" in resp.body, resp
    resp = http_request(r.port(), path="/", headers={"x-upstream-max-streams": "x"})
    assert resp.status == 400 and b"max-streams" in resp.body, resp
