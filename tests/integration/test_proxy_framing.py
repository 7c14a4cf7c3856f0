"""Strict HTTP/1.1 framing through remora: the hostile requests of
/work/shared/reference/hostile-inputs.md section (b), cases 1-18 and 26 (cases 19-22 are
in test_proxy_basic.py). Each is sent on its own connection with raw bytes. A rejected request
must get the expected status, the connection must close, the recording upstream must see
nothing of it, and a clean request on a new connection must then get 200 from the same
proxy process."""

import time

from lib import build_request, http_request, raw_exchange, slow_factor
from proxyutil import complete_response, echo, header_values, start_proxy, stats

H = b"Host: a\r\n"


def _post(headers, body=b""):
    return b"POST / HTTP/1.1\r\n" + H + headers + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked\r\n"

# (name, raw request, accepted statuses). Every one must be refused without reaching the
# upstream.
REJECTED = [
    # 1. CL + TE in any order or spelling
    ("cl_te", _post(b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n"), {400}),
    ("te_cl", _post(CHUNKED + b"Content-Length: 4\r\n", b"0\r\n\r\n"), {400}),
    ("cl_te_trailing_sp", _post(b"Content-Length: 4\r\nTransfer-Encoding: chunked \r\n",
                                b"0\r\n\r\n"), {400}),
    ("cl_te_tab_folded", _post(b"Content-Length: 4\r\n\ttransfer-encoding: chunked\r\n",
                               b"0\r\n\r\n"), {400}),
    # 2. CL.TE smuggling
    ("cl_te_smuggle", _post(b"Content-Length: 6\r\n" + CHUNKED, b"0\r\n\r\nG"), {400}),
    # 3. TE.CL smuggling
    ("te_cl_smuggle", _post(b"Content-Length: 3\r\n" + CHUNKED,
                            b"8\r\nSMUGGLED\r\n0\r\n\r\n"), {400}),
    # 4. bad transfer codings
    ("te_xchunked", _post(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n"), {400, 501}),
    ("te_chunked_identity", _post(b"Transfer-Encoding: chunked, identity\r\n", b"0\r\n\r\n"),
     {400, 501}),
    ("te_identity_then_chunked", _post(b"Transfer-Encoding: identity\r\n" + CHUNKED,
                                       b"0\r\n\r\n"), {501}),
    ("te_space_before_colon", _post(b"Transfer-Encoding : chunked\r\n", b"0\r\n\r\n"), {400}),
    # 5. TE on HTTP/1.0
    ("http10_te", b"POST / HTTP/1.0\r\n" + H + CHUNKED + b"\r\n5\r\nhello\r\n0\r\n\r\n",
     {400, 426}),
    # 6. conflicting or empty Content-Length
    ("cl_4_and_5", _post(b"Content-Length: 4\r\nContent-Length: 5\r\n", b"hello"), {400}),
    ("cl_empty", _post(b"Content-Length:\r\n"), {400}),
    # 7. malformed Content-Length values
    ("cl_plus", _post(b"Content-Length: +5\r\n", b"hello"), {400}),
    ("cl_list", _post(b"Content-Length: 5, 5\r\n", b"hello"), {400}),
    ("cl_hex", _post(b"Content-Length: 0x5\r\n", b"hello"), {400}),
    ("cl_negative", _post(b"Content-Length: -1\r\n", b"hello"), {400}),
    ("cl_overflow", _post(b"Content-Length: 99999999999999999999\r\n", b"hello"), {400}),
    # 8. bare CR inside a header line (llhttp 8.1.0 would see a TE header)
    ("bare_cr", _post(b"X-Abc: \rxTransfer-Encoding: chunked\r\n", b"1\r\nA\r\n0\r\n\r\n"),
     {400}),
    # 9. obs-fold
    ("obs_fold", _post(b"X: y\r\n Content-Length: 5\r\n", b"hello"), {400}),
    # 10. bare LF
    ("bare_lf_head", b"GET / HTTP/1.1\nHost: a\n\n", {400}),
    ("bare_lf_chunk", _post(CHUNKED, b"5\nhello\r\n0\r\n\r\n"), {400}),
    # 11. chunk data not followed by CRLF
    ("chunk_no_crlf", _post(CHUNKED, b"5\r\nhelloXX0\r\n\r\n"), {400}),
    # 12. bad chunk sizes and huge chunk extensions
    ("chunk_size_overflow", _post(CHUNKED, b"FFFFFFFFFFFFFFFFF1\r\nx\r\n0\r\n\r\n"), {400}),
    ("chunk_size_trailing_sp", _post(CHUNKED, b"5 \r\nhello\r\n0\r\n\r\n"), {400}),
    ("chunk_size_0x", _post(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"), {400}),
    ("chunk_ext_1mib", _post(CHUNKED, b"5" + b";a=b" * (256 * 1024) + b"\r\nhello\r\n0\r\n\r\n"),
     {400, 413, 431}),
    # 14. control characters and an empty header name
    ("nul_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x00b\r\n\r\n", {400}),
    ("ctl_in_name", b"GET / HTTP/1.1\r\n" + H + b"X\x01: a\r\n\r\n", {400}),
    ("del_in_value", b"GET / HTTP/1.1\r\n" + H + b"X: a\x7f\r\n\r\n", {400}),
    ("empty_name", b"GET / HTTP/1.1\r\n" + H + b":\r\n\r\n", {400}),
    # 16. Host
    ("host_missing", b"GET / HTTP/1.1\r\n\r\n", {400}),
    ("host_twice", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {400}),
    ("host_with_space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", {400}),
    # 17. malformed request lines
    ("bad_method_char", b"GE(T / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("version_1_01", b"GET / HTTP/1.01\r\n" + H + b"\r\n", {400, 505}),
    ("lowercase_method", b"get / HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("space_in_target", b"GET /a b HTTP/1.1\r\n" + H + b"\r\n", {400}),
    ("http_2_0", b"GET / HTTP/2.0\r\n" + H + b"\r\n", {400, 505}),
    # 26. CONNECT is not enabled: refused, and the bytes after it never tunnelled
    ("connect", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\nSSH-2.0-x\r\n",
     {403, 405}),
    # 18. size limits (Envoy's defaults: 60 KiB of headers, 100 headers)
    ("request_line_70kb", b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + H + b"\r\n", {414, 431}),
    ("header_70kb", b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 70000 + b"\r\n\r\n", {431}),
    ("headers_10000", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"x-%d: \r\n" % i for i in range(10000)) + b"\r\n", {431}),
    ("headers_101", b"GET / HTTP/1.1\r\n" + H +
     b"".join(b"x-%d: v\r\n" % i for i in range(100)) + b"\r\n", {431}),
]

# Bytes that must never reach the upstream, whatever happens.
POISON = (b"SMUGGLED", b"hello", b"xTransfer", b"X-Big", b"x-9999", b"POST ", b"GET / ",
          b"GE(T", b"get /", b"HTTP/2.0", b"HTTP/1.0", b"SSH-2.0", b"CONNECT")


def _status(data):
    resp = complete_response(data)
    return resp.status if resp is not None else None


def test_hostile_requests_rejected_without_reaching_upstream(ctx):
    u = ctx.start_upstream(record=True)
    r = start_proxy(ctx, {"c": [u]})
    pid = r.pid
    failures = []
    clean = 0
    slow = []
    for name, data, want in REJECTED:
        before = u.stats()["requests"]
        t0 = time.monotonic()
        reply = raw_exchange(r.port(), data, timeout=2)
        took = time.monotonic() - t0
        status = _status(reply)
        if status not in want:
            failures.append(f"{name}: status {status} (want {sorted(want)}): {bytes(reply)[:120]!r}"
                            f" end={reply.end}")
        elif reply.end not in ("eof", "rst"):
            failures.append(f"{name}: {status} but the connection stayed open")
        if took > 1.0:
            slow.append(f"{name}: {took:.2f}s")
        after = u.stats()["requests"]
        if after != before:
            failures.append(f"{name}: the upstream received {after - before} request(s)")
        if not r.alive() or r.pid != pid:
            failures.append(f"{name}: the proxy died")
            break
        ok = http_request(r.port(), path=f"/clean/{name}")
        clean += 1
        if ok.status != 200:
            failures.append(f"{name}: the clean request after it got {ok.status}")
    st = u.stats()
    rec = u.recorded()
    leaked = [p for p in POISON if p in rec]
    assert not failures, "\n".join(failures)
    assert not slow, f"rejections took longer than 1 s: {slow}"
    assert st["requests"] == clean and st["parse_errors"] == 0, st
    assert not leaked, f"hostile bytes reached the upstream: {leaked}"
    assert rec.count(b"GET /clean/") == clean
    # The proxy counted them as protocol errors.
    assert stats(r)["http.ingress_http.downstream_cx_protocol_error"] >= len(REJECTED) - 2


def test_10000_headers_rejected_quickly(ctx):
    """Case 18 / CVE-2019-15226: the header-count check is linear; 10 000 tiny headers cost
    little more than a normal request."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    data = b"GET / HTTP/1.1\r\n" + H + b"".join(b"x-%d: \r\n" % i for i in range(10000)) + \
        b"\r\n"
    best = None
    for _ in range(3):
        t0 = time.monotonic()
        reply = raw_exchange(r.port(), data, timeout=3)
        took = time.monotonic() - t0
        assert _status(reply) == 431, reply[:100]
        best = took if best is None else min(best, took)
    assert best < 0.1 * slow_factor(), f"431 took {best:.3f}s"


def test_valid_transfer_encoding_spellings_are_chunked(ctx):
    """Case 4: `\\tchunked` (OWS) and `CHUNKED` are the chunked coding, forwarded as such;
    never fall back to Content-Length."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    for te in (b"\tchunked", b"CHUNKED", b"chunked"):
        req = (b"POST /te HTTP/1.1\r\nHost: a\r\nx-upstream-echo: 1\r\nTransfer-Encoding:" + te +
               b"\r\n\r\n5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n")
        reply = raw_exchange(r.port(), req, timeout=2, until=lambda d: complete_response(d))
        resp = complete_response(reply)
        assert resp is not None and resp.status == 200, (te, reply)
        assert resp.json()["body_len"] == 8, (te, resp.json())


def test_trailers_never_merged_into_headers(ctx):
    """Case 13: trailers saying Content-Length and Host are dropped (or the request refused);
    they never become request headers at the upstream."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    req = (b"POST /tr HTTP/1.1\r\nHost: a\r\nx-upstream-echo: 1\r\n" + CHUNKED +
           b"\r\n3\r\nabc\r\n0\r\nContent-Length: 50\r\nHost: evil\r\n\r\n")
    reply = raw_exchange(r.port(), req, timeout=2, until=lambda d: complete_response(d))
    resp = complete_response(reply)
    assert resp is not None and resp.status in (200, 400), reply
    if resp.status == 200:
        j = resp.json()
        assert j["body_len"] == 3
        assert header_values(j, "host") == ["a"], j["headers"]
        assert header_values(j, "content-length") == [], j["headers"]
        assert "evil" not in str(j["headers"])


def test_encoded_crlf_in_path_stays_encoded(ctx):
    """Case 15: `%0d%0a` in the path is forwarded still encoded (or refused), never decoded
    into a header."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    reply = raw_exchange(r.port(), b"GET /%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: a\r\n"
                         b"x-upstream-echo: 1\r\n\r\n", timeout=2,
                         until=lambda d: complete_response(d))
    resp = complete_response(reply)
    assert resp is not None and resp.status in (200, 400), reply
    assert resp.header("set-cookie") is None
    if resp.status == 200:
        j = resp.json()
        assert j["path"] == "/%0d%0aSet-Cookie:x"
        assert header_values(j, "set-cookie") == []


def test_absolute_form_routes_by_its_authority(ctx):
    """Case 16: `GET http://b/ HTTP/1.1` with `Host: a` routes by b (RFC 9112 3.2.2) or is
    refused; it is never routed by a."""
    u = ctx.start_upstream(name="ub")
    vhosts = [
        {"name": "a", "domains": ["a"], "routes": [
            {"match": {"prefix": "/"}, "direct_response": {
                "status": 200, "body": {"inline_string": "vhost-a"}}}]},
        {"name": "b", "domains": ["b"], "routes": [
            {"match": {"prefix": "/"}, "route": {"cluster": "c"}}]},
    ]
    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=vhosts)
    reply = raw_exchange(r.port(), b"GET http://b/abs?q=1 HTTP/1.1\r\nHost: a\r\n"
                         b"x-upstream-echo: 1\r\n\r\n", timeout=2,
                         until=lambda d: complete_response(d))
    resp = complete_response(reply)
    assert resp is not None and resp.status in (200, 400), reply
    assert resp.body != b"vhost-a"
    if resp.status == 200:
        j = resp.json()
        assert j["path"] == "/abs?q=1", j
        assert header_values(j, "host") == ["b"], j["headers"]


def test_head_at_the_size_limit_is_accepted(ctx):
    """Case 18: the limit is Envoy's 60 KiB, so a 50 KB header passes and a 70 KB one does
    not; 100 headers pass and 101 do not (see the table)."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    j = echo(r.port(), headers={"x-big": "v" * 50000})
    assert len(header_values(j, "x-big")[0]) == 50000
    hs = [(f"x-{i}", "v") for i in range(90)]
    j = echo(r.port(), headers=hs)
    assert header_values(j, "x-89") == ["v"]


def test_content_length_short_then_fin(ctx):
    """Case 23: Content-Length 100, 3 bytes, FIN: the upstream never gets a complete
    request, and its connection is not reused for the next one."""
    u = ctx.start_upstream(record=True)
    r = start_proxy(ctx, {"c": [u]})
    reply = raw_exchange(r.port(), b"POST /short HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n"
                         b"\r\nabc", timeout=2, shut_wr=True)
    assert not reply.startswith(b"HTTP/1.1 200"), reply
    assert u.stats()["requests"] == 0
    assert http_request(r.port(), path="/after").status == 200
    st = u.stats()
    assert st["requests"] == 1
    assert st["incomplete_requests"] == 1 and st["connections"] == 2, st


def test_expect_100_with_bad_framing_gets_no_100(ctx):
    """A rejected head gets its error, never a 100 Continue first."""
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    reply = raw_exchange(r.port(), _post(b"Expect: 100-continue\r\nContent-Length: 4\r\n"
                                         + CHUNKED), timeout=2)
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert b"100 Continue" not in reply
    assert u.stats()["requests"] == 0


def test_pipelined_request_after_bad_one_is_not_served(ctx):
    """A framing error closes the connection: a request pipelined after it is not served."""
    u = ctx.start_upstream(record=True)
    r = start_proxy(ctx, {"c": [u]})
    reply = raw_exchange(r.port(), _post(b"Content-Length: 4\r\n" + CHUNKED, b"0\r\n\r\n") +
                         build_request(path="/second"), timeout=2)
    assert reply.startswith(b"HTTP/1.1 400") and reply.count(b"HTTP/1.1 ") == 1, reply
    assert reply.end in ("eof", "rst")
    assert b"/second" not in u.recorded()
