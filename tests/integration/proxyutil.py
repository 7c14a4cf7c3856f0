"""Shared helpers for the proxy tests (test_proxy_*.py): starting remora in front of test
upstreams, reading its stats and access logs, and the upstream's echo.

Not a test file (run.py collects only test_*.py); the test modules import it by name, as
run.py puts tests/integration on sys.path."""

import os
import re
import socket
import time

from lib import (bootstrap_dict, build_request, http_request, parse_responses, proc_rss_kb,
                 slow_factor, wait_for)

MB = 1 << 20

FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STDOUT_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# Envoy's default access log format, as a regex:
# [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
# %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
# "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
# "%UPSTREAM_HOST%"
DEFAULT_LOG_LINE = re.compile(
    r'^\[(?P<start>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\] '
    r'"(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" '
    r'(?P<code>\d+) (?P<flags>\S+) (?P<rx>\d+) (?P<tx>\d+) (?P<duration>\d+) '
    r'(?P<ust>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<rid>[^"]*)" '
    r'"(?P<authority>[^"]*)" "(?P<upstream>[^"]*)"$')


def file_access_log(path, fmt=None, legacy_format=False):
    """An HCM access_log entry writing to ``path``; ``fmt`` as log_format.text_format_source
    (or as the older ``format`` field with legacy_format)."""
    tc = {"@type": FILE_LOG_TYPE, "path": str(path)}
    if fmt is not None:
        if legacy_format:
            tc["format"] = fmt
        else:
            tc["log_format"] = {"text_format_source": {"inline_string": fmt}}
    return {"name": "envoy.access_loggers.file", "typed_config": tc}


def stdout_access_log():
    return {"name": "envoy.access_loggers.stdout", "typed_config": {"@type": STDOUT_LOG_TYPE}}


def route(prefix=None, cluster=None, path=None, **action):
    """A route dict: match by prefix (or exact path) to ``cluster``; extra route-action fields
    (timeout, prefix_rewrite, ...) as keyword arguments."""
    m = {"path": path} if path is not None else {"prefix": prefix}
    act = {"cluster": cluster}
    act.update(action)
    return {"match": m, "route": act}


def direct(prefix, status, body=None, **match):
    m = {"prefix": prefix}
    m.update(match)
    dr = {"status": status}
    if body is not None:
        dr["body"] = {"inline_string": body}
    return {"match": m, "direct_response": dr}


def proxy_config(clusters, routes=None, access_log=None, listener_extra=None, hcm_extra=None,
                 cluster_extra=None, virtual_hosts=None, **kw):
    """bootstrap_dict(...) plus the knobs the proxy tests need: access logs, listener fields
    (per_connection_buffer_limit_bytes, ...), and a full virtual_hosts list."""
    hx = dict(hcm_extra or {})
    if access_log:
        hx["access_log"] = list(access_log)
    d = bootstrap_dict(clusters=clusters, routes=routes, hcm_extra=hx,
                       cluster_extra=cluster_extra, **kw)
    lst = d["static_resources"]["listeners"][0]
    if listener_extra:
        lst.update(listener_extra)
    if virtual_hosts is not None:
        hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"] = virtual_hosts
    return d


def start_proxy(ctx, clusters, routes=None, concurrency=1, extra_args=(), log_level="info",
                **kw):
    """Starts remora in front of ``clusters`` ({name: [port or Upstream, ...]})."""
    cl = {name: [e.port if hasattr(e, "port") else e for e in eps]
          for name, eps in clusters.items()}
    cfg = proxy_config(cl, routes=routes, **kw)
    return ctx.start_remora(cfg, extra_args=extra_args, concurrency=concurrency,
                            log_level=log_level)


def parse_stats(text):
    """{name: int} from /stats text (counters and gauges; histogram lines are skipped)."""
    out = {}
    for line in text.splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and re.fullmatch(r"-?\d+", value.strip()):
            out[name] = int(value)
    return out


def stats(remora, filt=None):
    path = "/stats" if filt is None else f"/stats?filter={filt}"
    r = remora.admin("GET", path)
    assert r.status == 200, r
    return parse_stats(r.text)


def wait_stat(remora, name, want, timeout=3.0):
    """Waits until stat ``name`` equals ``want``; returns the last stats dict."""
    last = {}

    def check():
        nonlocal last
        last = stats(remora)
        return last.get(name) == want and last

    try:
        return wait_for(check, timeout, f"{name} == {want}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; it is {last.get(name)!r}") from None


def echo_headers(j):
    """[(lower-case name, value)] of the echo's request headers."""
    return [(k.lower(), v) for k, v in j["headers"]]


def header_values(j, name):
    return [v for k, v in echo_headers(j) if k == name.lower()]


def echo(port, method="GET", path="/", headers=None, body=None, host=None):
    """One request through ``port`` asking the upstream to echo it (``host``: the Host header,
    default 127.0.0.1:port); returns the echo JSON."""
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    if host is not None:
        hs.insert(0, ("Host", host))
    hs.append(("x-upstream-echo", "1"))
    r = http_request(port, method, path, hs, body)
    assert r.status == 200, r
    return r.json()


def read_log_lines(path):
    try:
        return path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return []


def wait_log(path_or_fn, pred, timeout=2.0, what="access log line"):
    """Waits (about a second: the proxy flushes access logs at least once a second) for a log
    line matching ``pred`` and returns it. ``path_or_fn`` is a Path or a function returning the
    text so far (e.g. lambda: remora.stdout)."""
    def lines():
        if callable(path_or_fn):
            return path_or_fn().splitlines()
        return read_log_lines(path_or_fn)

    def find():
        for line in lines():
            if pred(line):
                return line
        return None

    try:
        return wait_for(find, timeout, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}; log so far:\n" + "\n".join(lines()[-20:])) from None


def log_fields(line):
    m = DEFAULT_LOG_LINE.match(line)
    assert m, f"not Envoy's default access log format: {line!r}"
    return m.groupdict()


def complete_response(data, method="GET"):
    """The first response in ``data`` if it is complete (head and whole body), else None."""
    try:
        rs = parse_responses(bytes(data), method)
    except (EOFError, ValueError):
        return None
    return rs[0] if rs and not rs[0].eof else None


def refused(port):
    """True when a TCP connect to ``port`` is refused (nothing listening)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def proc_cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def blackhole_port(ctx):
    """A loopback port whose connects hang: a listener that never accepts, its accept queue
    (backlog 0) already full, so the kernel drops further SYNs."""
    lst = socket.socket()
    ctx.sockets.append(lst)
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    for _ in range(3):
        s = socket.socket()
        ctx.sockets.append(s)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))

    def hangs():
        probe = socket.socket()
        probe.settimeout(0.2)
        try:
            probe.connect(("127.0.0.1", port))
            return False
        except socket.timeout:
            return True
        finally:
            probe.close()

    wait_for(hangs, 2, "connects to the full listener to hang")
    return port


def slow_reader_growth_kb(ctx, remora, size, seconds=3.0):
    """Asks `remora` for a `size`-byte response and reads it slowly (64 KiB receive buffer,
    16 KiB every 10 ms) for `seconds`; returns (peak RSS growth in KiB over the start, bytes
    read, the still open socket: the caller closes it, or cleanup does). Asserts the proxy neither closed the reader nor let it read a
    quarter of the body (then it was not slow)."""
    base = proc_rss_kb(remora.pid)
    s = socket.socket()
    ctx.sockets.append(s)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect(("127.0.0.1", remora.port()))
    s.sendall(build_request(path="/huge", headers={"x-upstream-body-size": str(size)}))
    s.settimeout(5 * slow_factor())
    got, peak = 0, base
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d = s.recv(16384)
        assert d, f"proxy closed the slow reader after {got} bytes"
        got += len(d)
        peak = max(peak, proc_rss_kb(remora.pid))
        time.sleep(0.01)  # the slow reader: ~1.6 MB/s at most (pacing, not synchronisation)
    assert got < size // 4, "the reader was not slow"
    return peak - base, got, s
