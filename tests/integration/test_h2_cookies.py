"""Cookies across protocols (RFC 9113 8.2.3, issue 5): an HTTP/2 request's cookie crumbs reach
an HTTP/1.1 upstream as one `cookie` header joined with "; ", in order; an HTTP/1.1 request's
`cookie` reaches an HTTP/2 upstream as one field per crumb, while the block stays within
H2_COOKIE_SPLIT_MAX_FIELDS (proxy/upstream/h2_headers.h) fields; past that, as one field. The
crumbs of an HTTP/2 request count against the header limits on the way in (case 36,
test_h2_hostile.py). The upstreams echo what they received (x-upstream-echo)."""

import json

import h2raw as h
from h2raw import H2Raw
from lib import HttpConn, proc_rss_kb, wait_for
from proxyutil import start_proxy
from test_h2_upstream import h2_cluster

H2 = {"codec_type": "HTTP2"}


def _h2_echo(port, fields, sid=1):
    """An HTTP/2 GET with extra `fields` on a raw connection; returns the upstream's echo."""
    with H2Raw(port) as c:
        c.send(h.headers(sid, h.get_block(path="/ck", extra=[("x-upstream-echo", "1"),
                                                              *fields])))
        ev = c.read(5, until=lambda e: e.ended(sid) or sid in e.rsts or e.closed)
        assert ev.status(sid) == 200 and ev.ended(sid), ev
        return json.loads(b"".join(p for _, _, _, p in ev.on(sid, h.DATA)))


def _h1_echo(port, cookie_lines):
    hc = HttpConn(port)
    try:
        hc.sock.sendall(b"GET /ck HTTP/1.1\r\nHost: example.test\r\nX-Upstream-Echo: 1\r\n" +
                        b"".join(b"Cookie: " + v.encode() + b"\r\n" for v in cookie_lines) +
                        b"\r\n")
        resp = hc.read_response()
    finally:
        hc.sock.close()
    assert resp.status == 200, resp
    return resp.json()


def _cookies(j):
    return [v for k, v in j["headers"] if k.lower() == "cookie"]


def test_h2_client_cookie_crumbs_joined_for_h1_upstream(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    j = _h2_echo(r.port(), [("cookie", "a=1"), ("x-mid", "m"), ("cookie", "b=2"),
                            ("cookie", "c=3; d=4")])
    assert j["version"] == "1.1", j
    assert _cookies(j) == ["a=1; b=2; c=3; d=4"], j["headers"]
    names = [k.lower() for k, _ in j["headers"]]
    assert "x-mid" in names, names
    # one crumb: unchanged; none: no cookie header at all
    assert _cookies(_h2_echo(r.port(), [("cookie", "solo=1")])) == ["solo=1"]
    assert _cookies(_h2_echo(r.port(), [])) == []
    # 90 crumbs (within the header count limit): all of them, in order, in one header
    crumbs = [f"c{i}=v{i}" for i in range(90)]
    j = _h2_echo(r.port(), [("cookie", c) for c in crumbs])
    assert _cookies(j) == ["; ".join(crumbs)], _cookies(j)


def test_h1_client_cookie_split_into_crumbs_for_h2_upstream(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster())
    j = _h1_echo(r.port(), ["sid=abc; theme=dark; lang=en"])
    assert j["version"] == "2", j
    assert _cookies(j) == ["sid=abc", "theme=dark", "lang=en"], j["headers"]
    # two Cookie lines: each split, in order
    assert _cookies(_h1_echo(r.port(), ["a=1; b=2", "c=3"])) == ["a=1", "b=2", "c=3"]
    # no "; " separator: nothing to split
    assert _cookies(_h1_echo(r.port(), ["a=1;b=2"])) == ["a=1;b=2"]
    # many crumbs: split while the block stays within 100 fields, else one field; never lost
    few = [f"k{i}=v" for i in range(50)]
    assert _cookies(_h1_echo(r.port(), ["; ".join(few)])) == few
    many = [f"k{i}=v" for i in range(150)]
    assert _cookies(_h1_echo(r.port(), ["; ".join(many)])) == ["; ".join(many)]


def test_h2_client_cookies_through_h2_upstream(ctx):
    # joined on the way in (for the stream's HTTP/1-shaped head), split again on the way out
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2, cluster_extra=h2_cluster())
    j = _h2_echo(r.port(), [("cookie", "a=1"), ("cookie", "b=2; c=3")])
    assert _cookies(j) == ["a=1", "b=2", "c=3"], j["headers"]


def test_h2_many_large_crumbs_joined_with_bounded_memory(ctx):
    # 50 streams, each a request with 95 crumbs of 590 bytes (just within the 60 KiB / 100
    # header limits), held at the upstream: joining the crumbs one by one as they arrived
    # copied the growing value each time, ~2.6 MiB of stream arena per request (measured: +132
    # MiB for these 50); joined once, the whole burst costs a few MiB.
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=H2)
    base = proc_rss_kb(r.pid)
    crumbs = [("cookie", f"c{i:02d}=" + "v" * 586) for i in range(95)]
    n = 50
    with H2Raw(r.port()) as c:
        for i in range(n):
            blk = h.get_block(extra=[("x-upstream-delay-ms", "1000")] + crumbs)
            parts = [blk[k:k + 16000] for k in range(0, len(blk), 16000)]
            data = h.headers(2 * i + 1, parts[0], end_headers=False)
            for j, part in enumerate(parts[1:]):
                data += h.continuation(2 * i + 1, part, end_headers=j == len(parts) - 2)
            c.send(data)
        wait_for(lambda: u.stats()["requests"] >= n, 10, "the requests at the upstream")
        grown = proc_rss_kb(r.pid) - base
        ev = c.read(10, until=lambda e: all(e.ended(2 * i + 1) for i in range(n)) or e.closed)
        assert all(ev.status(2 * i + 1) == 200 for i in range(n)), ev
    assert grown < 40 * 1024, f"RSS grew {grown} kB"
