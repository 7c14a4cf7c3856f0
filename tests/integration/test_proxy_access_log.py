"""Access logs: Envoy's default format to a file and to stdout, response flags, and custom
formats (log_format.text_format_source and the older `format` field). Lines are flushed at
least once a second, so every check waits for its line with a deadline."""

import json
import re
import time

import h2raw as h2
from h2raw import H2Raw
from lib import HttpConn, free_port, http_request, slow_factor, wait_for
from proxyutil import (direct, file_access_log, log_fields, read_log_lines, route, start_proxy,
                       stdout_access_log, wait_log)


def test_default_format_to_file(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    t0 = time.monotonic()
    resp = http_request(r.port(), "POST", "/logged/path?q=1", headers=[
        ("User-Agent", "ua-test/1.0"), ("X-Request-Id", "rid-12345"),
        ("X-Forwarded-For", "10.1.2.3"), ("x-upstream-body-size", "10")], body=b"hello")
    assert resp.status == 200 and resp.body == b"abcdefghij"
    line = wait_log(log, lambda ln: "/logged/path" in ln)
    assert time.monotonic() - t0 < 2.5 * slow_factor(), "access log not flushed within ~1 s"
    f = log_fields(line)
    assert f["method"] == "POST" and f["path"] == "/logged/path?q=1", f
    assert f["protocol"] == "HTTP/1.1" and f["code"] == "200" and f["flags"] == "-", f
    assert (f["rx"], f["tx"]) == ("5", "10"), f
    assert int(f["duration"]) < 1000 and f["ust"].isdigit(), f
    assert f["xff"] == "10.1.2.3", f  # use_remote_address false: passed through untouched
    assert f["ua"] == "ua-test/1.0" and f["rid"] == "rid-12345", f
    assert f["authority"] == f"127.0.0.1:{r.port()}", f
    assert f["upstream"] == f"127.0.0.1:{u.port}", f


def test_generated_request_id_is_logged(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/rid", headers={"x-upstream-echo": "1"})
    (rid,) = [v for k, v in resp.json()["headers"] if k.lower() == "x-request-id"]
    f = log_fields(wait_log(log, lambda ln: " /rid " in ln))
    assert f["rid"] == rid, (f, rid)


def test_default_format_to_stdout(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, access_log=[stdout_access_log()])
    assert http_request(r.port(), path="/to-stdout").status == 200
    line = wait_log(lambda: r.stdout, lambda ln: "/to-stdout" in ln)
    f = log_fields(line)
    assert (f["method"], f["code"], f["flags"]) == ("GET", "200", "-"), f
    assert f["upstream"] == f"127.0.0.1:{u.port}"


def test_response_flags(ctx):
    u = ctx.start_upstream()
    dead = free_port()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u], "dead": [dead], "empty": []}, routes=[
        route("/uf", "dead"), route("/uh", "empty"), route("/ut", "c", timeout="0.3s"),
        route("/ok", "c")], access_log=[file_access_log(log)])
    want = {
        "/ok": ("200", "-", f"127.0.0.1:{u.port}"),
        "/nr": ("404", "NR", "-"),
        "/uf": ("503", "UF", f"127.0.0.1:{dead}"),
        "/uh": ("503", "UH", "-"),
        "/ut": ("504", "UT", f"127.0.0.1:{u.port}"),
    }
    for path in want:
        http_request(r.port(), path=path, headers={"x-upstream-delay-ms": "2000"}
                     if path == "/ut" else None)
    got = {}
    for path in want:
        f = log_fields(wait_log(log, lambda ln, p=path: f" {p} " in ln))
        got[path] = (f["code"], f["flags"], f["upstream"])
    assert got == want, got


def test_custom_text_format_source(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "custom.log"
    fmt = ("custom %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %UPSTREAM_CLUSTER% "
           "%REQ(X-CUSTOM)% %RESP(X-UPSTREAM-NAME)% %BYTES_SENT% 100%%\n")
    r = start_proxy(ctx, {"svc": [u]}, access_log=[file_access_log(log, fmt)])
    http_request(r.port(), path="/cf", headers={"x-custom": "hello"})
    line = wait_log(log, lambda ln: ln.startswith("custom GET /cf "))
    assert line == "custom GET /cf 200 svc hello upstream 9 100%", line
    # A missing header renders as "-".
    http_request(r.port(), path="/cf2")
    line = wait_log(log, lambda ln: ln.startswith("custom GET /cf2 "))
    assert line == "custom GET /cf2 200 svc - upstream 9 100%", line


def test_legacy_format_field_and_two_logs(ctx):
    u = ctx.start_upstream()
    a = ctx.tmp / "a.log"
    b = ctx.tmp / "b.log"
    r = start_proxy(ctx, {"svc": [u]}, access_log=[
        file_access_log(a, "A %REQ(:PATH)% %RESPONSE_CODE%\n", legacy_format=True),
        file_access_log(b)])
    with HttpConn(r.port()) as c:
        for i in range(3):
            assert c.request(path=f"/two/{i}").status == 200
    for i in range(3):
        wait_log(a, lambda ln, i=i: ln == f"A /two/{i} 200")
        log_fields(wait_log(b, lambda ln, i=i: f" /two/{i} " in ln))
    assert len(a.read_text().splitlines()) == 3


def test_response_code_details(ctx):
    """%RESPONSE_CODE_DETAILS% as Envoy prints it, with the connect error of a refused
    upstream (Envoy: upstream_reset_before_response_started{remote_connection_failure,
    delayed_connect_error:_111})."""
    u = ctx.start_upstream()
    dead = free_port()
    log = ctx.tmp / "details.log"
    fmt = ("D %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% "
           "%UPSTREAM_TRANSPORT_FAILURE_REASON% %UPSTREAM_REQUEST_ATTEMPT_COUNT% "
           "%UPSTREAM_CONNECTION_ID% %UPSTREAM_LOCAL_PORT%\n")
    r = start_proxy(ctx, {"c": [u], "dead": [dead], "empty": []}, routes=[
        route("/uf", "dead"), route("/uh", "empty"), route("/ut", "c", timeout="0.3s"),
        direct("/direct", 200, "hi"), route("/ok", "c")], access_log=[file_access_log(log, fmt)])
    want = {
        "/ok": "200 - via_upstream - 1",
        "/nr": "404 NR route_not_found - 0",
        "/uf": "503 UF upstream_reset_before_response_started{remote_connection_failure,"
               "delayed_connect_error:_111} delayed_connect_error:_111 1",
        "/uh": "503 UH no_healthy_upstream - 0",
        "/ut": "504 UT upstream_response_timeout - 1",
        "/direct": "200 - direct_response - 0",
    }
    for path in want:
        http_request(r.port(), path=path, headers={"x-upstream-delay-ms": "2000"}
                     if path == "/ut" else None)
    got = {}
    for path in want:
        line = wait_log(log, lambda ln, p=path: ln.startswith(f"D {p} "))
        got[path] = line[len(f"D {path} "):]
    # the upstream connection: "-" where none was bound or it never connected (UF)
    for p in want:
        conn = got[p].rsplit(" ", 2)[1:]
        assert (conn == ["-", "-"]) == (p not in ("/ok", "/ut")), (p, conn)
        got[p] = got[p].rsplit(" ", 2)[0]
    assert got == want, got


def test_local_reply_details(ctx):
    """Envoy's details for the codec's and the connection manager's own answers: a #fragment
    (path_normalization_failed), CONNECT (upgrade_failed), the normalization redirect (307,
    path_normalization_failed), HTTP/1.1 header limits (431 http1.headers_too_large,
    http1.too_many_headers) and HTTP/2 stream resets (http2.too_many_headers,
    http2.invalid.header.field)."""
    u = ctx.start_upstream()
    log = ctx.tmp / "local.log"
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/", "c")],
                    hcm_extra={"path_with_escaped_slashes_action": "UNESCAPE_AND_REDIRECT"},
                    access_log=[file_access_log(log, "L %RESPONSE_CODE% %RESPONSE_CODE_DETAILS%\n")])
    want = []

    def check(status, details):
        want.append(f"L {status} {details}")
        wait_for(lambda: len(read_log_lines(log)) >= len(want), timeout=5,
                 what=f"log line {want[-1]}")
        assert read_log_lines(log) == want, read_log_lines(log)

    assert http_request(r.port(), path="/f#frag").status == 400
    check(400, "path_normalization_failed")
    assert http_request(r.port(), "CONNECT", "a.example:443").status == 403
    check(403, "upgrade_failed")
    resp = http_request(r.port(), path="/a%2Fb")
    assert resp.status == 307 and resp.header("location") == "/a/b", resp
    check(307, "path_normalization_failed")
    assert http_request(r.port(), headers={"x-big": "v" * 70000}).status == 431
    check(431, "http1.headers_too_large")
    assert http_request(r.port(), headers=[(f"x-h{i}", "v") for i in range(120)]).status == 431
    check(431, "http1.too_many_headers")
    with H2Raw(r.port()) as c:
        c.handshake()
        c.send(h2.headers(1, h2.get_block(extra=[(f"x-h{i}", "v") for i in range(120)])))
        c.read(until=lambda ev: ev.ended(1))
        check(0, "http2.too_many_headers")
        c.send(h2.headers(3, h2.get_block(extra=[("X-Upper", "v")])))
        c.read(until=lambda ev: ev.ended(3) or ev.closed)
        check(0, "http2.invalid.header.field")


def test_filter_logs_only_5xx_or_marked(ctx):
    """AccessLog.filter: or(status >= 500, header x-log present). An unfiltered log written
    after it (in the same flush) says when every line is in."""
    u = ctx.start_upstream()
    filtered = ctx.tmp / "filtered.log"
    every = ctx.tmp / "every.log"
    fl = file_access_log(filtered, "F %REQ(:PATH)% %RESPONSE_CODE%\n")
    fl["filter"] = {"or_filter": {"filters": [
        {"status_code_filter": {"comparison": {"op": "GE", "value": {
            "default_value": 500, "runtime_key": "access_log.min_status"}}}},
        {"header_filter": {"header": {"name": "x-log", "present_match": True}}}]}}
    r = start_proxy(ctx, {"c": [u], "empty": []}, routes=[route("/uh", "empty"),
                                                          route("/ok", "c")],
                    access_log=[fl, file_access_log(every, "E %REQ(:PATH)%\n")])
    paths = ["/ok", "/ok/marked", "/nr", "/uh"]
    for p in paths:
        http_request(r.port(), path=p, headers={"x-log": "1"} if p == "/ok/marked" else None)
    for p in paths:
        wait_log(every, lambda ln, p=p: ln == f"E {p}")
    lines = sorted(filtered.read_text().splitlines())
    assert lines == ["F /ok/marked 200", "F /uh 503"], lines


def test_start_time_custom_format_and_durations(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "time.log"
    fmt = ("T %REQ(:PATH)% %START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)% %START_TIME(%s.%6f)% "
           "%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION% "
           "%CONNECTION_ID% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %UPSTREAM_REMOTE_PORT% "
           "%RESPONSE_FLAGS_LONG% %VIRTUAL_CLUSTER_NAME%\n")
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/", "c")],
                    access_log=[file_access_log(log, fmt)])
    t0 = time.time()
    with HttpConn(r.port()) as c:
        assert c.request(path="/t1").status == 200
        assert c.request(path="/t2").status == 200
    f1 = wait_log(log, lambda ln: ln.startswith("T /t1 ")).split(" ")
    f2 = wait_log(log, lambda ln: ln.startswith("T /t2 ")).split(" ")
    iso, epoch = f1[2], f1[3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", iso), iso
    assert re.fullmatch(r"\d+\.\d{6}", epoch), epoch
    assert abs(float(epoch) - t0) < 5, (epoch, t0)
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(float(epoch)))) == iso[:19]
    assert iso[20:23] == epoch.split(".")[1][:3], (iso, epoch)
    assert all(v.isdigit() for v in f1[4:9]), f1
    assert f1[8] == f2[8], (f1, f2)  # one connection, one id
    assert f1[9:] == ["127.0.0.1", str(u.port), "-", "-"], f1


def test_upstream_local_address_and_connection_id(ctx):
    """%UPSTREAM_LOCAL_ADDRESS% and its parts are the address the upstream saw the connection
    come from; two requests on one keep-alive upstream connection share an
    %UPSTREAM_CONNECTION_ID%, a new connection gets another; a request with no upstream logs
    "-"."""
    u = ctx.start_upstream()
    log = ctx.tmp / "uplocal.log"
    fmt = ("U %REQ(:PATH)% %UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% "
           "%UPSTREAM_LOCAL_PORT% %UPSTREAM_CONNECTION_ID% %CONNECTION_ID%\n")
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/u", "c")],
                    access_log=[file_access_log(log, fmt)])
    seen = {}
    with HttpConn(r.port()) as c:
        for path in ("/u1?echo=1", "/u2?echo=1&connection_close=1", "/u3?echo=1"):
            resp = c.request(path=path)
            assert resp.status == 200, resp.status
            seen[path[:3]] = json.loads(resp.body)["peer_port"]
        assert c.request(path="/nr").status == 404
    f = {p: wait_log(log, lambda ln, p=p: ln.startswith(f"U {p}")).split(" ")[2:]
         for p in ("/u1", "/u2", "/u3", "/nr")}
    for p in ("/u1", "/u2", "/u3"):
        addr, ip, port, up_id, down_id = f[p]
        assert (addr, ip, port) == (f"127.0.0.1:{seen[p]}", "127.0.0.1", str(seen[p])), (p, f)
        assert up_id.isdigit() and up_id != down_id, (p, f)
    assert seen["/u1"] == seen["/u2"] != seen["/u3"], seen
    assert f["/u1"][3] == f["/u2"][3] != f["/u3"][3], f
    assert f["/nr"][:4] == ["-", "-", "-", "-"], f


def test_unknown_and_unsupported_operators_rejected(ctx):
    """Envoy operators remora cannot honour and names that are no operator at all are config
    errors naming the field, at validation time."""
    import subprocess

    from lib import to_yaml
    from proxyutil import proxy_config
    for fmt, want in [("%NOT_AN_OPERATOR%\n", "is not an Envoy command operator"),
                      ("%DYNAMIC_METADATA(envoy.lb:x)%\n", "not supported by remora yet")]:
        cfg = proxy_config({"c": [free_port()]},
                           access_log=[file_access_log(ctx.tmp / "x.log", fmt)])
        text = re.sub(r"\{\{[A-Za-z0-9_]+\}\}", lambda m: str(free_port()), to_yaml(cfg))
        path = ctx.tmp / "bad.yaml"
        path.write_text(text)
        p = subprocess.run([ctx.bin("remora"), "-c", str(path), "--mode", "validate"],
                           capture_output=True, text=True, timeout=20)
        out = p.stdout + p.stderr
        assert p.returncode != 0 and want in out, (fmt, p.returncode, out)
        assert "access_log[0].typed_config.log_format.text_format_source" in out, out


def test_rbac_denial_details(ctx):
    """The RBAC filter's denial: Envoy's rbac_access_denied_matched_policy[<policy>]."""
    u = ctx.start_upstream()
    log = ctx.tmp / "rbac.log"
    rbac = {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"action": "DENY", "policies": {"no-post": {
                "permissions": [{"header": {"name": ":method", "string_match": {"exact": "POST"}}}],
                "principals": [{"any": True}]}}}}
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/", "c")],
                    http_filters=[{"name": "envoy.filters.http.rbac", "typed_config": rbac}],
                    access_log=[file_access_log(log, "R %REQ(:METHOD)% %RESPONSE_CODE% "
                                                     "%RESPONSE_CODE_DETAILS%\n")])
    assert http_request(r.port(), "POST", "/p", body=b"x").status == 403
    assert http_request(r.port(), "GET", "/g").status == 200
    wait_log(log, lambda ln: ln == "R POST 403 rbac_access_denied_matched_policy[no-post]")
    wait_log(log, lambda ln: ln == "R GET 200 via_upstream")
