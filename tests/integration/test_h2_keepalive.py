"""HTTP/2 connection keepalive (Http2ProtocolOptions.connection_keepalive, as Envoy runs it;
proxy/http/h2_keepalive.c): a peer that stops answering PINGs is noticed.

- upstream: a cluster's connection to remora-test-upstream goes through a TCP relay that can
  freeze its connections (a silently dropped path: the kernel still ACKs, nothing is answered).
  remora closes the frozen connection after interval + timeout, counts
  cluster.<c>.http2.keepalive_timeout, and the request in flight on it is reset and retried on a
  new connection; a healthy connection answering the PINGs stays up; without keepalive the
  frozen connection is not noticed;
- the ADS client: the same relay between remora and the ADS server; the frozen stream is
  closed, counted in the ADS cluster's keepalive_timeout, and the client reconnects with its
  backoff while the routes it had keep serving;
- downstream: an HTTP/2 client that never ACKs the PINGs is closed (http2.keepalive_timeout);
- remora-xds: --xds-keepalive-time/--xds-keepalive-timeout close an ADS client that stops
  answering PINGs and keep one that answers; --xds-max-connection-age sends a client away with
  GOAWAY and grpc-status 14 on its stream."""

import socket
import threading

import h2raw
from adsutil import HPO_KEY, ads_bootstrap, route_config, start_ads_server, to
from lib import http_request, slow_factor, wait_for
from proxyutil import route, start_proxy, stats, wait_stat
from test_xds_serve import start_xds_server

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
ADS_PATH = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"


class FreezableRelay:
    """A TCP relay to 127.0.0.1:`target`. freeze() stops forwarding on every connection open
    at that moment, both ways (its bytes are left unread); later connections are relayed.
    pings_acked(): the PING ACK frames relayed from the target so far (all connections)."""

    def __init__(self, ctx, target):
        self.ctx = ctx
        self.target = target
        self.lst = socket.socket()
        self.lst.bind(("127.0.0.1", 0))
        self.lst.listen(16)
        self.port = self.lst.getsockname()[1]
        self.conns = []  # [(client, upstream, thawed Event)]
        self.lock = threading.Lock()
        self.acks = 0
        ctx.sockets.append(self.lst)
        threading.Thread(target=self._accept, daemon=True).start()

    def accepted(self):
        with self.lock:
            return len(self.conns)

    def pings_acked(self):
        with self.lock:
            return self.acks

    def freeze(self):
        with self.lock:
            for _, _, thawed in self.conns:
                thawed.clear()

    def _accept(self):
        while True:
            try:
                c, _ = self.lst.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            self.ctx.sockets += [c, u]
            thawed = threading.Event()
            thawed.set()
            with self.lock:
                self.conns.append((c, u, thawed))
            for src, dst in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(src, dst, thawed, src is u),
                                 daemon=True).start()

    def _count(self, buf, d):
        frames, buf = h2raw.split_frames(buf + d)
        n = sum(1 for t, fl, _, _ in frames if t == h2raw.PING and fl & h2raw.ACK)
        if n:
            with self.lock:
                self.acks += n
        return buf

    def _pump(self, src, dst, thawed, from_target):
        src.settimeout(0.1)
        buf = b""
        while True:
            if not thawed.is_set():
                return  # frozen for good: what arrives stays unread
            try:
                d = src.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not thawed.is_set():
                return
            if not d:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            if from_target:
                buf = self._count(buf, d)
            try:
                dst.sendall(d)
            except OSError:
                return


def _keepalive(interval="0.3s", timeout="0.5s", jitter=0):
    return {"interval": interval, "timeout": timeout, "interval_jitter": {"value": jitter}}


def _h2(ka=None):
    h2 = {} if ka is None else {"connection_keepalive": ka}
    return {"typed_extension_protocol_options": {HPO: {
        "@type": "type.googleapis.com/" + HPO,
        "explicit_http_config": {"http2_protocol_options": h2}}}}


def _bg(fn):
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", fn()), daemon=True)
    t.start()
    return t, box


# ---- upstream ----

def test_upstream_keepalive_closes_a_frozen_connection_and_retries_its_request(ctx):
    u = ctx.start_upstream()
    relay = FreezableRelay(ctx, u.port)
    policy = {"retry_on": "reset", "num_retries": 1}
    r = start_proxy(ctx, {"c": [relay.port]}, cluster_extra=_h2(_keepalive()),
                    routes=[route("/", "c", timeout="10s", retry_policy=policy)])
    assert http_request(r.port(), path="/first").status == 200
    assert relay.accepted() == 1
    # a request in flight (the upstream answers it after 3 s) when the path goes silent
    t, box = _bg(lambda: http_request(r.port(), path="/slow", timeout=15,
                                      headers={"x-upstream-delay-ms": str(int(3000 *
                                                                               slow_factor()))}))
    wait_for(lambda: u.stats()["h2_streams"] >= 2, 5, "the slow request at the upstream")
    relay.freeze()
    # interval 0.3 s + timeout 0.5 s: noticed well before the slow answer (3 s)
    st = wait_stat(r, "cluster.c.http2.keepalive_timeout", 1, timeout=2.5 * slow_factor())
    assert st["cluster.c.upstream_cx_destroy_local"] >= 1, st
    assert st["cluster.c.upstream_cx_destroy_with_active_rq"] == 1, st
    t.join(15 * slow_factor())
    resp = box["r"]
    assert resp.status == 200 and resp.body == b"upstream\n", resp  # retried on a new connection
    assert relay.accepted() == 2
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] == 1, st
    assert st["cluster.c.http2.keepalive_timeout"] == 1, st
    assert http_request(r.port(), path="/after").status == 200


def test_upstream_keepalive_keeps_a_live_connection(ctx):
    """PINGs answered: after many intervals the one connection is still up and reused."""
    u = ctx.start_upstream()
    relay = FreezableRelay(ctx, u.port)
    r = start_proxy(ctx, {"c": [relay.port]}, cluster_extra=_h2(_keepalive("0.1s", "0.3s", 15)))
    assert http_request(r.port()).status == 200
    # the upstream answers the PINGs (nghttp2 ACKs them): wait for several
    wait_for(lambda: relay.pings_acked() >= 5, 5, "five keepalive PINGs answered")
    assert http_request(r.port()).status == 200
    st = stats(r)
    assert st["cluster.c.http2.keepalive_timeout"] == 0, st
    assert st["cluster.c.upstream_cx_total"] == 1 and relay.accepted() == 1, st


def test_upstream_without_keepalive_does_not_notice(ctx):
    """The control: the same frozen path without connection_keepalive stays open (the request
    on it runs into the route timeout instead)."""
    u = ctx.start_upstream()
    relay = FreezableRelay(ctx, u.port)
    r = start_proxy(ctx, {"c": [relay.port]}, cluster_extra=_h2(),
                    routes=[route("/", "c", timeout="2s")])
    assert http_request(r.port(), path="/first").status == 200
    relay.freeze()
    resp = http_request(r.port(), path="/stuck", timeout=10)
    assert resp.status == 504, resp
    st = stats(r)
    assert st["cluster.c.http2.keepalive_timeout"] == 0, st
    assert st["cluster.c.upstream_cx_active"] == 1, st


# ---- the ADS client ----

def test_ads_keepalive_reconnects_and_keeps_serving(ctx):
    ads = start_ads_server(ctx)
    relay = FreezableRelay(ctx, ads.port)
    ads.set_routes("v1", [route_config("r1", [to("a")])])
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    cfg = ads_bootstrap({"a": [a.port], "b": [b.port]}, relay.port)
    xc = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "xds_cluster"][0]
    xc["typed_extension_protocol_options"][HPO_KEY]["explicit_http_config"][
        "http2_protocol_options"]["connection_keepalive"] = _keepalive()
    r = ctx.start_remora(cfg, log_level="debug")
    assert http_request(r.port()).header("x-upstream-name") == "a"
    assert relay.accepted() == 1
    relay.freeze()
    # noticed, counted in the ADS cluster's stat, and reconnected through the relay
    wait_stat(r, "cluster.xds_cluster.http2.keepalive_timeout", 1, timeout=3 * slow_factor())
    resp = http_request(r.port())  # meanwhile the routes received keep serving
    assert resp.status == 200 and resp.header("x-upstream-name") == "a", resp
    wait_for(lambda: relay.accepted() == 2, 5, "the ADS client's reconnect")
    wait_stat(r, "control_plane.connected_state", 1, timeout=5 * slow_factor())
    # the new stream is live: a push arrives over it
    ads.set_routes("v2", [route_config("r1", [to("b")])])
    wait_for(lambda: http_request(r.port()).header("x-upstream-name") == "b", 5,
             "v2 over the new stream")
    assert stats(r)["cluster.xds_cluster.http2.keepalive_timeout"] == 1


# ---- downstream ----

def test_downstream_keepalive_closes_a_client_that_never_acks(ctx):
    u = ctx.start_upstream()
    hcm = {"http2_protocol_options": {"connection_keepalive": _keepalive("0.2s", "0.4s")}}
    r = start_proxy(ctx, {"c": [u]}, hcm_extra=hcm)
    with h2raw.H2Raw(r.port()) as c:
        c.handshake()
        ev = c.read(5, until=lambda e: e.closed)
        assert ev.closed, ev
        pings = [p for fl, p in ev.pings if not fl & h2raw.ACK]
        assert len(pings) == 1, ev  # one PING, unanswered, then closed
    wait_stat(r, "http2.keepalive_timeout", 1)


# ---- remora-xds ----

def _ads_stream(c):
    """Opens an ADS stream (request HEADERS, no message yet) on H2Raw `c`."""
    blk = h2raw.get_block(path=ADS_PATH, method="POST",
                          extra=[("content-type", "application/grpc"), ("te", "trailers")])
    c.send(h2raw.headers(1, blk, end_stream=False))


def test_xds_server_closes_a_client_that_stops_answering_pings(ctx):
    x = start_xds_server(ctx, ["--xds-keepalive-time", "300ms", "--xds-keepalive-timeout",
                               "500ms"])
    with h2raw.H2Raw(x.xds_port) as silent, h2raw.H2Raw(x.xds_port) as live:
        silent.handshake()
        live.handshake()
        _ads_stream(silent)
        _ads_stream(live)
        acked = set()

        def answer():
            ev = live.read(0.05)
            for fl, p in ev.pings:
                if not fl & h2raw.ACK and p not in acked:
                    acked.add(p)
                    live.send(h2raw.ping(p, ack=True))
            return ev
        ev = silent.read(5, until=lambda e: e.closed or answer() is None)
        assert ev.closed, ev
        assert ev.status(1) == 200, ev  # the stream was accepted: it did not keep it open
        assert [p for fl, p in ev.pings if not fl & h2raw.ACK], ev
        # the client answering the PINGs stays, well past interval + timeout
        wait_for(lambda: answer() is not None and len(acked) >= 5, 5, "five answered PINGs")
        assert not live.read(0.1).closed
    x.wait_output("no PING ACK within 500 ms: closed")


def test_xds_server_max_connection_age_sends_clients_away(ctx):
    x = start_xds_server(ctx, ["--xds-max-connection-age", "500ms",
                               "--xds-max-connection-age-grace", "1s"])
    with h2raw.H2Raw(x.xds_port) as c:
        c.handshake()
        _ads_stream(c)
        ev = c.read(5, until=lambda e: e.goaways and e.ended(1))
        assert ev.goaways and ev.goaways[0] == (1, h2raw.NO_ERROR), ev
        trailers = [p for t, fl, sid, p in ev.frames
                    if t == h2raw.HEADERS and sid == 1 and fl & h2raw.END_STREAM]
        assert trailers, ev  # (HPACK-coded: the status is read from the server's log)
        x.wait_output("grpc-status 14: max connection age")
        # the client does not end its side: closed after the grace
        ev = c.read(4, until=lambda e: e.closed)
        assert ev.closed, ev
