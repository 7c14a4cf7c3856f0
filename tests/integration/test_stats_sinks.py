"""Push stats sinks: envoy.stat_sinks.statsd and envoy.stat_sinks.dog_statsd over UDP (IPv4,
IPv6) and a Unix datagram socket, flushed every stats_flush_interval by main: counters as
deltas, gauges, DogStatsD tags (Envoy's default extractors and stats_config's fixed tags);
datagrams up to max_bytes_per_datagram; a dead sink costs nothing; /stats/prometheus with
stats_config's tags; and App Mesh's variables (ENABLE_ENVOY_DOG_STATSD, STATSD_*,
ENABLE_ENVOY_STATS_TAGS, ENVOY_STATS_FLUSH_INTERVAL) producing DogStatsD lines with appmesh.*
tags."""

import re
import socket
import threading

from lib import HttpConn, free_port, wait_for
from proxyutil import proxy_config, stats
from test_appmesh_env import env_remora

DOG = "type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink"
STATSD = "type.googleapis.com/envoy.config.metrics.v3.StatsdSink"
LINE = re.compile(r"^([^:|\n]+):(\d+)\|([cg])(?:\|#([^|\n]*))?$")


class Listener:
    """A statsd agent: a datagram socket collecting what arrives (IPv4, IPv6 or Unix)."""

    def __init__(self, ctx, family=socket.AF_INET, host="127.0.0.1", path=None):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        if family == socket.AF_UNIX:
            self.sock.bind(str(path))
            self.addr = {"pipe": {"path": str(path)}}
        else:
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
            self.addr = {"socket_address": {"address": host, "port_value": self.port}}
        self.sock.settimeout(0.1)
        self.dgrams = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        ctx.on_cleanup(self.close)

    def _run(self):
        while not self.stop.is_set():
            try:
                d = self.sock.recv(65536)
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.dgrams.append(d.decode())

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()

    def lines(self):
        """[(name, value, type, tags dict)] of every line so far; each line well formed."""
        with self.lock:
            dgrams = list(self.dgrams)
        out = []
        for d in dgrams:
            for line in d.split("\n"):
                m = LINE.match(line)
                assert m, f"malformed statsd line {line!r} in {d!r}"
                tags = dict(t.split(":", 1) for t in m.group(4).split(",")) if m.group(4) else {}
                out.append((m.group(1), int(m.group(2)), m.group(3), tags))
        return out

    def total(self, name, want_tags=None):
        """The sum of a counter's deltas (lines of ``name`` whose tags include ``want_tags``)."""
        return sum(v for n, v, t, tags in self.lines() if n == name and t == "c" and
                   all(tags.get(k) == w for k, w in (want_tags or {}).items()))


def sink(kind, listener, **extra):
    return {"name": "envoy.stat_sinks." + ("dog_statsd" if kind == DOG else "statsd"),
            "typed_config": {"@type": kind, "address": listener.addr, **extra}}


def flood(port, n):
    with HttpConn(port) as c:
        for i in range(n):
            assert c.request(path=f"/{i}").status == 200


def test_statsd_and_dogstatsd_counter_deltas(ctx):
    u = ctx.start_upstream()
    dog = Listener(ctx)
    plain = Listener(ctx, socket.AF_INET6, "::1")
    cfg = proxy_config({"c": [u.port]})
    cfg["stats_flush_interval"] = "0.2s"
    cfg["stats_sinks"] = [sink(DOG, dog, max_bytes_per_datagram=512),
                          sink(STATSD, plain, prefix="pfx")]
    cfg["stats_config"] = {"stats_tags": [{"tag_name": "team", "fixed_value": "payments"}]}
    r = ctx.start_remora(cfg, concurrency=2)
    flood(r.port(), 10)
    want_dog = {"envoy.cluster_name": "c", "team": "payments"}
    wait_for(lambda: plain.total("pfx.cluster.c.upstream_rq_total") == 10 and
             dog.total("envoy.cluster.upstream_rq_total", want_dog) == 10, 5,
             "10 requests at both sinks")
    # The deltas keep adding up after more traffic, never counted twice.
    flood(r.port(), 5)
    wait_for(lambda: plain.total("pfx.cluster.c.upstream_rq_total") == 15 and
             dog.total("envoy.cluster.upstream_rq_total", want_dog) == 15, 5,
             "15 requests at both sinks")
    # Unchanged counters keep coming with 0 (used counters, as Envoy), several flushes later.
    n = len(plain.lines())
    wait_for(lambda: len(plain.lines()) > 2 * n, 5, "more flushes")
    assert plain.total("pfx.cluster.c.upstream_rq_total") == 15
    assert stats(r)["cluster.c.upstream_rq_total"] == 15
    # Response codes, classes and the HCM prefix as DogStatsD tags; statsd keeps full names.
    assert dog.total("envoy.cluster.upstream_rq", {"envoy.response_code": "200"}) == 15
    assert dog.total("envoy.http.downstream_rq_xx",
                     {"envoy.response_code_class": "2",
                      "envoy.http_conn_manager_prefix": "ingress_http"}) == 15
    assert plain.total("pfx.http.ingress_http.downstream_rq_2xx") == 15
    gauges = {n: v for n, v, t, _ in plain.lines() if t == "g"}
    assert gauges["pfx.server.live"] == 1 and gauges["pfx.server.concurrency"] == 2, gauges
    # statsd: one line per datagram; DogStatsD: packed, up to 512 bytes, lines whole.
    with plain.lock, dog.lock:
        assert all("\n" not in d for d in plain.dgrams)
        assert all(len(d.encode()) <= 512 for d in dog.dgrams)
        assert any("\n" in d for d in dog.dgrams)
        assert all(not d.startswith("envoy.") or "|#" in d for d in dog.dgrams)
    # Histograms are not sent (remora keeps no per-sample values); unused counters are not.
    assert not any(n.endswith("upstream_rq_time") for n, _, _, _ in plain.lines())
    assert not any(n == "pfx.cluster.c.upstream_rq_timeout" for n, _, _, _ in plain.lines())


def test_statsd_dead_sinks_do_not_hurt(ctx):
    """A UDP sink with nobody listening (the kernel refuses the datagrams) and a Unix socket
    that does not exist: requests, /stats and the flushes go on; the drops are logged once."""
    u = ctx.start_upstream()
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    cfg = proxy_config({"c": [u.port]})
    cfg["stats_flush_interval"] = "0.05s"
    cfg["stats_sinks"] = [
        {"name": "envoy.stat_sinks.statsd", "typed_config": {
            "@type": STATSD,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": dead_port}}}},
        # packed: one line per datagram would overflow a Unix socket's short queue
        # (net.unix.max_dgram_qlen) while the agent reads, and lose lines
        {"name": "envoy.stat_sinks.dog_statsd", "typed_config": {
            "@type": DOG, "address": {"pipe": {"path": str(ctx.tmp / "no-agent.sock")}},
            "max_bytes_per_datagram": 8192}},
    ]
    r = ctx.start_remora(cfg)
    wait_for(lambda: r.stderr.count("datagram dropped") >= 2, 5, "both sinks' drops logged")
    flood(r.port(), 50)
    assert stats(r)["cluster.c.upstream_rq_total"] == 50
    assert r.stderr.count("datagram dropped") == 2, r.tail()
    # The agent comes up: the Unix sink connects at the next flush. What was flushed while it
    # was away is lost (as Envoy's fire-and-forget datagrams); what comes after arrives whole.
    agent = Listener(ctx, socket.AF_UNIX, path=ctx.tmp / "no-agent.sock")
    tags = {"envoy.cluster_name": "c"}
    wait_for(lambda: any(n == "envoy.cluster.upstream_rq_total" for n, _, _, _ in agent.lines()),
             5, "the late agent's first lines")
    t0 = agent.total("envoy.cluster.upstream_rq_total", tags)
    assert t0 <= 50, t0
    flood(r.port(), 7)
    wait_for(lambda: agent.total("envoy.cluster.upstream_rq_total", tags) == t0 + 7, 5,
             "7 more requests at the agent")
    assert stats(r)["cluster.c.upstream_rq_total"] == 57
    assert r.alive()


def prom_samples(text, metric):
    """[(labels dict, value)] of ``metric`` in Prometheus text."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z0-9_]+)\{(.*)\} (\S+)$", line)
        if m and m.group(1) == metric:
            labels = dict(re.findall(r'([a-zA-Z0-9_]+)="((?:[^"\\]|\\.)*)"', m.group(2)))
            out.append((labels, float(m.group(3))))
    return out


def test_prometheus_with_stats_tags(ctx):
    u = ctx.start_upstream()
    cfg = proxy_config({"c": [u.port]})
    cfg["stats_config"] = {"stats_tags": [{"tag_name": "appmesh.mesh", "fixed_value": "shop"}]}
    r = ctx.start_remora(cfg)
    flood(r.port(), 3)
    text = r.admin("GET", "/stats/prometheus").text
    # Envoy's names and default tags as before, the fixed tag on every sample.
    assert ({"appmesh_mesh": "shop", "envoy_cluster_name": "c", "envoy_response_code": "200"},
            3.0) in prom_samples(text, "envoy_cluster_upstream_rq"), text
    assert prom_samples(text, "envoy_server_live") == [({"appmesh_mesh": "shop"}, 1.0)]
    # /stats and its JSON are untouched (Envoy shows no tags there).
    assert "appmesh" not in r.admin("GET", "/stats?format=json").text

    # A regex tag: the producer names every metric (group 1 removed, group 2 the value).
    cfg = proxy_config({"c": [u.port]})
    cfg["stats_config"] = {"stats_tags": [
        {"tag_name": "appmesh.mesh", "fixed_value": "shop"},
        {"tag_name": "port", "regex": r"^listener\.127\.0\.0\.1_((\d+)\.)"}],
        "use_all_default_tags": True}
    r2 = ctx.start_remora(cfg, name="remora-re")
    text = r2.admin("GET", "/stats/prometheus").text
    got = prom_samples(text, "envoy_listener_downstream_cx_total")
    # (the default listener_address extractor matched the full name too: both tags, as Envoy)
    assert got == [({"appmesh_mesh": "shop", "port": str(r2.port()),
                     "envoy_listener_address": f"127.0.0.1_{r2.port()}"}, 0.0)], got
    assert ({"appmesh_mesh": "shop", "envoy_cluster_name": "c", "envoy_response_code_class": "2"},
            0.0) in prom_samples(text, "envoy_cluster_upstream_rq_xx"), text
    # use_all_default_tags: false: full names, the fixed tag only
    cfg = proxy_config({"c": [u.port]})
    cfg["stats_config"] = {"stats_tags": [{"tag_name": "appmesh.mesh", "fixed_value": "shop"}],
                           "use_all_default_tags": False}
    r3 = ctx.start_remora(cfg, name="remora-nodefault")
    text = r3.admin("GET", "/stats/prometheus").text
    assert prom_samples(text, "envoy_cluster_c_upstream_rq_total") == \
        [({"appmesh_mesh": "shop"}, 0.0)], text


def test_appmesh_env_dogstatsd_with_tags(ctx):
    """The image's variables: remora still waiting for its xDS server (INITIALIZING) flushes
    server.* and control_plane.* to the DogStatsD agent with the appmesh.* tags."""
    dog = Listener(ctx)
    arn = "arn:aws:appmesh:us-west-2:111122223333:mesh/shop/virtualNode/front"
    r = env_remora(ctx, {
        "APPMESH_RESOURCE_ARN": arn,
        "APPMESH_XDS_ENDPOINT": f"127.0.0.1:{free_port()}",
        "ENVOY_ADMIN_ACCESS_PORT": free_port(),
        "ENABLE_ENVOY_DOG_STATSD": "1",
        "STATSD_PORT": dog.port,
        "ENABLE_ENVOY_STATS_TAGS": "1",
        "ENVOY_STATS_FLUSH_INTERVAL": "200ms",
    })
    tags = {"appmesh.mesh": "shop", "appmesh.virtual_node": "front"}
    wait_for(lambda: r._check_alive() or any(
        n == "envoy.server.state" and v == 3 and t == "g" and tags == tg
        for n, v, t, tg in dog.lines()), 5, "server.state with the appmesh tags")
    assert all(tg.get("appmesh.mesh") == "shop" for _, _, _, tg in dog.lines())

    # STATSD_SOCKET_PATH: the agent's Unix socket instead
    uds = Listener(ctx, socket.AF_UNIX, path=ctx.tmp / "dsd.socket")
    r2 = env_remora(ctx, {
        "APPMESH_RESOURCE_NAME": "mesh/shop/virtualGateway/edge",
        "APPMESH_XDS_ENDPOINT": f"127.0.0.1:{free_port()}",
        "ENVOY_ADMIN_ACCESS_PORT": free_port(),
        "ENABLE_ENVOY_DOG_STATSD": "true",
        "STATSD_SOCKET_PATH": ctx.tmp / "dsd.socket",
        "ENABLE_ENVOY_STATS_TAGS": "1",
        "ENVOY_STATS_FLUSH_INTERVAL": "200ms",
    }, name="remora-uds")
    # (one line per datagram, the image's default: the first lines of each flush get through
    # the socket's short queue, the rest may not while the agent reads)
    wait_for(lambda: r2._check_alive() or any(
        tg.get("appmesh.mesh") == "shop" and tg.get("appmesh.virtual_gateway") == "edge"
        for _, _, _, tg in uds.lines()), 5, "lines on the Unix socket")
    assert all(tg.get("appmesh.virtual_gateway") == "edge" for _, _, _, tg in uds.lines())
