"""Shared helpers for the health tests (test_health.py, test_outlier.py): an in-process upstream
whose answers a test can flip while it runs, config fragments for health_checks,
outlier_detection and priorities, and readers for /clusters.

Not a test file (run.py collects only test_*.py)."""

import collections
import http.server
import socket
import threading

from lib import http_request, wait_for
from proxyutil import proxy_config, stats


class FlipUpstream:
    """An HTTP/1.1 server on a thread of this process. Every request is answered with
    ``status`` (default 200; a test changes it at any time), header x-upstream-name and body
    NAME. ``seen`` counts requests by path. ``fail_next`` > 0: that many next requests get 503
    instead (one less each time). Use as a context manager (it must be shut down)."""

    def __init__(self, name):
        self.name = name
        self.status = 200
        self.fail_next = 0
        self.seen = collections.Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Head and body go out in two writes: without this, Nagle's algorithm and the
                # peer's delayed ACK add 40 ms to every response.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_GET(self):  # noqa: N802 - the stdlib's name
                with outer._lock:
                    outer.seen[self.path.split("?")[0]] += 1
                    status = outer.status
                    if outer.fail_next > 0:
                        outer.fail_next -= 1
                        status = 503
                body = (outer.name + "\n").encode()
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.send_header("x-upstream-name", outer.name)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def count(self, path):
        with self._lock:
            return self.seen[path]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def http_hc(path="/healthz", interval="0.1s", timeout="1s", unhealthy=2, healthy=2, **extra):
    """A health_checks entry: HTTP on ``path``, short intervals, no_traffic_interval as short
    as the interval (Envoy's default is 60 s until the cluster has traffic)."""
    hc = {"timeout": timeout, "interval": interval, "no_traffic_interval": interval,
          "unhealthy_threshold": unhealthy, "healthy_threshold": healthy,
          "http_health_check": {"path": path}}
    hc.update(extra)
    return hc


def tcp_hc(interval="0.1s", timeout="1s", unhealthy=1, healthy=1, **extra):
    hc = {"timeout": timeout, "interval": interval, "no_traffic_interval": interval,
          "unhealthy_threshold": unhealthy, "healthy_threshold": healthy,
          "tcp_health_check": {}}
    hc.update(extra)
    return hc


def config(clusters, cluster_extra=None, priorities=None, **kw):
    """proxy_config(...) with ``cluster_extra`` merged into every cluster and, when
    ``priorities`` ({name: [priority per endpoint]}) is given, one LocalityLbEndpoints per
    endpoint with that priority."""
    cl = {name: [e.port if hasattr(e, "port") else e for e in eps]
          for name, eps in clusters.items()}
    d = proxy_config(cl, cluster_extra=cluster_extra, **kw)
    for c in d["static_resources"]["clusters"]:
        prios = (priorities or {}).get(c["name"])
        if prios is None:
            continue
        lbes = c["load_assignment"]["endpoints"][0]["lb_endpoints"]
        c["load_assignment"]["endpoints"] = [
            {"priority": p, "lb_endpoints": [lbe]} for p, lbe in zip(prios, lbes)]
    return d


def host_lines(remora, cluster):
    """{"127.0.0.1:PORT": {field: value}} from /clusters text for ``cluster``."""
    r = remora.admin("GET", "/clusters")
    assert r.status == 200, r
    out = collections.defaultdict(dict)
    for line in r.text.splitlines():
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and ":" in parts[1]:
            out[parts[1]][parts[2]] = parts[3]
    return out


def flags(remora, cluster, port):
    return host_lines(remora, cluster)[f"127.0.0.1:{port}"]["health_flags"]


def wait_flags(remora, cluster, port, want, timeout=5.0):
    """Waits until the host's /clusters health_flags equal ``want``."""
    last = [None]

    def check():
        last[0] = flags(remora, cluster, port)
        return last[0] == want

    try:
        wait_for(check, timeout, f"{cluster} 127.0.0.1:{port} health_flags == {want}")
    except TimeoutError as e:
        raise AssertionError(f"{e}; it is {last[0]!r}") from None


def names(remora, n, path="/", headers=None):
    """Sends ``n`` requests and returns a Counter of (status, x-upstream-name)."""
    c = collections.Counter()
    for i in range(n):
        r = http_request(remora.port(), path=f"{path}?i={i}", headers=headers)
        c[(r.status, r.header("x-upstream-name"))] += 1
    return c


def stat(remora, name):
    return stats(remora).get(name)
