"""The connection manager's path normalization (normalize_path, merge_slashes,
path_with_escaped_slashes_action), over HTTP/1.1 (raw requests: the path goes out byte for byte)
and h2c (curl --path-as-is): the routes match the normalized path and the upstream receives it
(the test upstream echoes the path it got); 400s and Envoy's counters
http.<stat_prefix>.downstream_rq_failed_path_normalization and
downstream_rq_redirected_with_normalized_path; the escaped-slash actions.

The routes stand for a path-based deny (catalogue case 27 of
/work/shared/reference/hostile-inputs.md): /admin answers 403 directly, everything else goes to
the upstream."""

import json

from lib import curl, http_request
from proxyutil import direct, route, start_proxy, stats, wait_stat

PREFIX = "http.ingress_http."
FAILED = PREFIX + "downstream_rq_failed_path_normalization"
REDIRECTED = PREFIX + "downstream_rq_redirected_with_normalized_path"
EDGE = {"normalize_path": True, "merge_slashes": True}


def _proxy(ctx, **hcm):
    u = ctx.start_upstream()
    routes = [direct("/admin", 403, "denied\n"), route("/", "c")]
    return start_proxy(ctx, {"c": [u]}, routes=routes, hcm_extra=hcm)


def _h1(r, path, headers=()):
    return http_request(r.port(), "GET", path, [("x-upstream-echo", "1"), *headers])


def _upstream_path(r, path):
    """The path the upstream received for a request for ``path`` (HTTP/1.1)."""
    resp = _h1(r, path)
    assert resp.status == 200, (path, resp)
    return resp.json()["path"]


def _h2(r, path):
    """(status, body) of a GET for ``path`` over h2c, the path sent as is."""
    p = curl(["--http2-prior-knowledge", "--path-as-is", "-H", "x-upstream-echo: 1",
              "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{r.port()}{path}"])
    assert p.returncode == 0, p.stderr
    body, _, code = p.stdout.rpartition(b"\n")
    return int(code), body


def test_without_normalization_the_raw_path_is_routed(ctx):
    """The hole the options close: by default (Envoy's too: normalize_path follows a runtime
    flag that is false) /public/../admin is not /admin to the routes, and the upstream gets the
    dot segments; no counter moves."""
    r = _proxy(ctx)
    assert _upstream_path(r, "/public/../admin") == "/public/../admin"
    assert _upstream_path(r, "//admin") == "//admin"
    assert _h1(r, "/admin").status == 403
    s = stats(r)
    assert s[FAILED] == 0 and s[REDIRECTED] == 0


def test_normalized_path_is_routed_and_forwarded_http1(ctx):
    r = _proxy(ctx, **EDGE)
    for p in ("/public/../admin", "/public/%2e%2e/admin", "/public/%2E./admin", "//admin",
              "/x/..//admin", "/%61dmin", "/./admin/", "/../../admin"):
        resp = _h1(r, p)
        assert resp.status == 403 and resp.body == b"denied\n", (p, resp)
    assert _upstream_path(r, "/a/./b/../c?x=/../y%41") == "/a/c?x=/../y%41"
    assert _upstream_path(r, "/%7euser/%41%42c") == "/~user/ABc"
    assert _upstream_path(r, "//a///b//") == "/a/b/"
    # merge_slashes after normalize_path (Envoy's order): the ".." takes the empty segment
    assert _upstream_path(r, "/x/.//..//admin") == "/x/admin"
    # escaped slashes stay one segment by default (KEEP_UNCHANGED), hex case as received
    assert _upstream_path(r, "/public%2F..%2fadmin") == "/public%2F..%2fadmin"
    assert _upstream_path(r, "/public/..%5Cadmin") == "/public/..%5Cadmin"
    # bytes a path cannot carry are escaped; a nested escape cannot turn into a dot segment
    assert _upstream_path(r, "/caf\xc3\xa9") == "/caf%C3%A9"
    assert _upstream_path(r, "/%%32%65%%32%65/admin") == "/%252e%252e/admin"
    # normalization sets no x-envoy-original-path (only a route rewrite does, in Envoy)
    j = _h1(r, "/a/../b").json()
    assert j["path"] == "/b"
    assert not [v for k, v in j["headers"] if k.lower() == "x-envoy-original-path"]
    assert stats(r)[FAILED] == 0


def test_unnormalizable_path_gets_400(ctx):
    r = _proxy(ctx, **EDGE)
    for i, p in enumerate(("/admin%00", "/a/%00/b"), 1):
        resp = _h1(r, p)
        assert resp.status == 400, (p, resp)
        wait_stat(r, FAILED, i)
    # a '%' that starts no escape is kept, as in Envoy
    assert _upstream_path(r, "/a%zz/b%") == "/a%zz/b%"
    assert stats(r)[FAILED] == 2


def test_normalized_path_is_routed_and_forwarded_h2c(ctx):
    r = _proxy(ctx, **EDGE)
    for p in ("/public/../admin", "/public/%2e%2e/admin", "//admin"):
        code, body = _h2(r, p)
        assert (code, body) == (403, b"denied\n"), p
    code, body = _h2(r, "/a/./b/../c//d?q=/../x")
    assert code == 200
    assert json.loads(body)["path"] == "/a/c/d?q=/../x"
    code, _ = _h2(r, "/admin%00")
    assert code == 400
    wait_stat(r, FAILED, 1)


def test_escaped_slashes_reject_request(ctx):
    r = _proxy(ctx, path_with_escaped_slashes_action="REJECT_REQUEST")
    for i, p in enumerate(("/public%2F..%2Fadmin", "/a%2fb", "/a%5Cb", "/a%5cb"), 1):
        assert _h1(r, p).status == 400, p
        wait_stat(r, FAILED, i)
    assert _upstream_path(r, "/a/b?x=%2F") == "/a/b?x=%2F"  # the query does not count
    code, _ = _h2(r, "/a%2Fb")
    assert code == 400
    wait_stat(r, FAILED, 5)


def test_escaped_slashes_unescape_and_redirect(ctx):
    r = _proxy(ctx, path_with_escaped_slashes_action="UNESCAPE_AND_REDIRECT", **EDGE)
    resp = _h1(r, "/public%2F..%2Fadmin?q=%2F")
    assert resp.status == 307, resp
    assert resp.header("location") == "/admin?q=%2F"
    resp = _h1(r, "/a%2F%2Fb")
    assert resp.status == 307 and resp.header("location") == "/a/b", resp
    wait_stat(r, REDIRECTED, 2)
    assert _upstream_path(r, "/a/b") == "/a/b"  # nothing to unescape: forwarded
    # gRPC clients do not follow redirects: Envoy answers 400 (grpc-status 13, INTERNAL)
    resp = _h1(r, "/pkg.Svc%2FMethod", [("content-type", "application/grpc")])
    assert resp.status == 200 and resp.header("grpc-status") == "13", resp
    wait_stat(r, FAILED, 1)
    assert stats(r)[REDIRECTED] == 2


def test_escaped_slashes_unescape_and_forward(ctx):
    r = _proxy(ctx, path_with_escaped_slashes_action="UNESCAPE_AND_FORWARD", **EDGE)
    resp = _h1(r, "/public%2F..%2Fadmin")
    assert resp.status == 403, resp
    assert _h1(r, "/public/..%5cadmin").status == 403
    assert _upstream_path(r, "/a%2Fb%2f%2fc") == "/a/b/c"
    code, body = _h2(r, "/x%2Fy")
    assert code == 200 and json.loads(body)["path"] == "/x/y"
    s = stats(r)
    assert s[FAILED] == 0 and s[REDIRECTED] == 0


def test_config_dump_shows_the_fields(ctx):
    r = _proxy(ctx, path_with_escaped_slashes_action="REJECT_REQUEST", **EDGE)
    resp = r.admin("GET", "/config_dump")
    assert resp.status == 200
    text = resp.text
    assert '"normalize_path": true' in text and '"merge_slashes": true' in text, text[:2000]
    assert '"path_with_escaped_slashes_action": "REJECT_REQUEST"' in text


def test_path_with_fragment_gets_400(ctx):
    """Envoy's default (runtime envoy.reloadable_features.http_reject_path_with_fragment, true):
    a request path with a '#fragment' is a 400 counted as a failed path normalization, with or
    without the normalization options (a fragment is not part of a request target: RFC 3986
    3.5, RFC 9112 3.2, RFC 9113 8.3.1). Over HTTP/1.1 and h2c (raw frames: clients strip it)."""
    import h2raw as h
    from h2raw import H2Raw

    for i, hcm in enumerate(({}, EDGE), 1):
        r = _proxy(ctx, codec_type="AUTO", **hcm)
        for j, p in enumerate(("/a#frag", "/admin#x", "/a?q=1#f"), 1):
            resp = _h1(r, p)
            assert resp.status == 400, (hcm, p, resp)
            wait_stat(r, FAILED, j)
        with H2Raw(r.port()) as conn:
            conn.handshake()
            conn.send(h.headers(1, h.get_block(path="/public#frag")))
            ev = conn.read(5, until=lambda e: e.ended(1) or e.closed)
            assert ev.status(1) == 400, ev
        wait_stat(r, FAILED, 4)
        # without one, as before
        assert _upstream_path(r, "/a?q=%23") == "/a?q=%23"
        assert stats(r)[FAILED] == 4
