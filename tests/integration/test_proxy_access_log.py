"""Access logs: Envoy's default format to a file and to stdout, response flags, and custom
formats (log_format.text_format_source and the older `format` field). Lines are flushed at
least once a second, so every check waits for its line with a deadline."""

import time

from lib import HttpConn, free_port, http_request, slow_factor
from proxyutil import (file_access_log, log_fields, route, start_proxy, stdout_access_log,
                       wait_log)


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
