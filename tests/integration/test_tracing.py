"""HTTP tracing (proxy/tracing): the connection manager's `tracing` with Zipkin (B3 headers, v2
JSON spans POSTed to a collector cluster) and AWS X-Ray (x-amzn-trace-id, segments as UDP
datagrams to the daemon). The Zipkin collector is a Python HTTP server recording POSTs; the
X-Ray daemon is a UDP socket. The test upstream echoes the request headers, so each test reads
the context remora propagated."""

import json
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from lib import build_dir, curl, slow_factor, to_yaml, wait_for
from proxyutil import echo, header_values, proxy_config, stats, wait_stat

TRACE = "463ac35c9f6413ad48485a3953bb6124"
SPAN = "a2fb4a1d1a96d312"
PARENT = "0020000000000001"


class Collector:
    """A Zipkin collector: records the JSON arrays POSTed to /api/v2/spans."""

    def __init__(self, status=202):
        self.reports = []
        self.status = status
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                outer.reports.append((self.path, self.headers.get("content-type"),
                                      json.loads(body)))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def spans(self):
        return [s for _, _, arr in list(self.reports) for s in arr]

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def zipkin_provider(**extra):
    cfg = {"@type": "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig",
           "collector_cluster": "zipkin", "collector_endpoint": "/api/v2/spans",
           "collector_endpoint_version": "HTTP_JSON"}
    cfg.update(extra)
    return {"name": "envoy.tracers.zipkin", "typed_config": cfg}


def xray_provider(port, **extra):
    cfg = {"@type": "type.googleapis.com/envoy.config.trace.v3.XRayConfig",
           "segment_name": "my-service",
           "daemon_endpoint": {"protocol": "UDP", "address": "127.0.0.1", "port_value": port}}
    cfg.update(extra)
    return {"name": "envoy.tracers.xray", "typed_config": cfg}


def start(ctx, tracing, boot_tracing=None, collector_port=None, expect_fail=False, **kw):
    u = ctx.start_upstream()
    clusters = {"c": [u.port]}
    if collector_port is not None:
        clusters["zipkin"] = [collector_port]
    hx = {"tracing": tracing}
    hx.update(kw.pop("hcm_extra", {}))
    cfg = proxy_config(clusters, routes=[("/", "c")], hcm_extra=hx, **kw)
    cfg["node"] = {"id": "node-1", "cluster": "svc"}
    if boot_tracing is not None:
        cfg["tracing"] = {"http": boot_tracing}
    return ctx.start_remora(cfg)


def test_zipkin_one_span_with_ids_parent_and_tags(ctx):
    """An incoming B3 context: the upstream sees the same trace, a new span whose parent is the
    caller's span (shared_span_context false), sampled; the collector gets one span with those
    ids and Envoy's tags."""
    col = Collector()
    try:
        r = start(ctx, {"provider": zipkin_provider(shared_span_context=False),
                        "custom_tags": [{"tag": "lit", "literal": {"value": "v1"}},
                                        {"tag": "hdr", "request_header": {"name": "X-Who"}}]},
                  collector_port=col.port)
        j = echo(r.port(), path="/a/b?x=1",
                 headers={"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1",
                          "x-who": "me"})
        assert header_values(j, "x-b3-traceid") == [TRACE]
        assert header_values(j, "x-b3-parentspanid") == [SPAN]
        assert header_values(j, "x-b3-sampled") == ["1"]
        (sid,) = header_values(j, "x-b3-spanid")
        assert len(sid) == 16 and sid != SPAN
        (rid,) = header_values(j, "x-request-id")
        # remora flushes after 5 spans or 5 s (Envoy's defaults): send four more untraced? No:
        # they are traced too (100 % random sampling): five spans, one report.
        for _ in range(4):
            echo(r.port(), path="/other")
        wait_for(lambda: len(col.spans()) >= 5, 10, "5 spans at the collector")
        path, ctype, _ = col.reports[0]
        assert path == "/api/v2/spans" and ctype == "application/json"
        (sp,) = [s for s in col.spans() if s["id"] == sid]
        assert sp["traceId"] == TRACE and sp["parentId"] == SPAN
        assert sp["kind"] == "SERVER"
        assert sp["duration"] >= 1 and sp["timestamp"] > 1.6e15
        t = sp["tags"]
        assert t["http.method"] == "GET"
        assert t["http.url"].endswith("/a/b?x=1")
        assert t["http.status_code"] == "200"
        assert t["upstream_cluster"] == "c"
        assert t["node_id"] == "node-1"
        assert t["guid:x-request-id"] == rid
        assert t["peer.address"] == "127.0.0.1"
        assert t["response_flags"] == "-"
        assert t["lit"] == "v1" and t["hdr"] == "me"
        s = wait_stat(r, "tracing.zipkin.spans_sent", 5)
        assert s["tracing.zipkin.reports_sent"] == 1
        assert s["http.ingress_http.tracing.random_sampling"] == 5
    finally:
        col.close()


def test_zipkin_b3_single_header_and_new_trace(ctx):
    """The `b3` single header is read; without any context a new trace starts (128-bit ids with
    trace_id_128bit) and x-request-id carries Envoy's sampled reason ('9')."""
    col = Collector()
    try:
        r = start(ctx, {"provider": zipkin_provider(trace_id_128bit=True)},
                  collector_port=col.port)
        j = echo(r.port(), headers={"b3": f"{TRACE}-{SPAN}-1-{PARENT}"})
        assert header_values(j, "x-b3-traceid") == [TRACE]
        # shared_span_context (default true): this server span is the caller's span
        assert header_values(j, "x-b3-spanid") == [SPAN]
        assert header_values(j, "x-b3-parentspanid") == [PARENT]
        assert header_values(j, "b3") == []
        j = echo(r.port())
        (tid,) = header_values(j, "x-b3-traceid")
        assert len(tid) == 32
        assert header_values(j, "x-b3-parentspanid") == []
        (rid,) = header_values(j, "x-request-id")
        assert rid[14] == "9"
    finally:
        col.close()


def test_outbound_listener_makes_client_spans(ctx):
    """traffic_direction OUTBOUND: the span kind is CLIENT and never shares the caller's span id
    (shared_span_context applies to SERVER spans)."""
    col = Collector()
    try:
        r = start(ctx, {"provider": zipkin_provider()}, collector_port=col.port,
                  listener_extra={"traffic_direction": "OUTBOUND"})
        for _ in range(5):
            j = echo(r.port(), headers={"x-b3-traceid": TRACE, "x-b3-spanid": SPAN})
            assert header_values(j, "x-b3-parentspanid") == [SPAN]
            assert header_values(j, "x-b3-spanid") != [SPAN]
        wait_for(lambda: len(col.spans()) >= 5, 10, "5 spans")
        assert {s["kind"] for s in col.spans()} == {"CLIENT"}
        assert all("shared" not in s for s in col.spans())
    finally:
        col.close()


def test_sampling_zero_sends_nothing_but_force_trace_on_internal_does(ctx):
    """random_sampling 0: no span is reported and x-b3-sampled is 0; x-envoy-force-trace on an
    internal request (use_remote_address and a loopback peer) forces one (service_forced); on
    an external one (an x-forwarded-for from outside) it is stripped and does not."""
    col = Collector()
    try:
        r = start(ctx, {"provider": zipkin_provider(), "random_sampling": {"value": 0}},
                  collector_port=col.port, hcm_extra={"use_remote_address": True})
        for _ in range(6):
            j = echo(r.port())
            assert header_values(j, "x-b3-sampled") == ["0"]
        s = stats(r)
        assert s["http.ingress_http.tracing.not_traceable"] == 6
        assert s["http.ingress_http.tracing.random_sampling"] == 0
        for _ in range(5):
            j = echo(r.port(), headers={"x-envoy-force-trace": "true"})
            assert header_values(j, "x-b3-sampled") == ["1"]
            (rid,) = header_values(j, "x-request-id")
            assert rid[14] == "a"
        j = echo(r.port(), headers={"x-envoy-force-trace": "true",
                                    "x-forwarded-for": "203.0.113.9"})
        assert header_values(j, "x-b3-sampled") == ["0"]
        wait_for(lambda: len(col.spans()) >= 5, 10, "forced spans")
        assert len(col.spans()) == 5
        assert stats(r)["http.ingress_http.tracing.service_forced"] == 5
    finally:
        col.close()


def test_collector_down_does_not_hurt_requests(ctx):
    """A collector that refuses connections: every request still succeeds; the reports fail
    (reports_failed); a collector answering 503 counts reports_dropped."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = s.getsockname()[1]
    s.close()
    r = start(ctx, {"provider": zipkin_provider()}, collector_port=dead)
    for _ in range(10):
        j = echo(r.port())
        assert header_values(j, "x-b3-sampled") == ["1"]
    wait_for(lambda: stats(r).get("tracing.zipkin.reports_failed", 0) >= 1, 10, "reports_failed")
    assert stats(r)["tracing.zipkin.reports_sent"] == 0
    col = Collector(status=503)
    try:
        r2 = start(ctx, {"provider": zipkin_provider()}, collector_port=col.port)
        for _ in range(5):
            echo(r2.port())
        wait_stat(r2, "tracing.zipkin.reports_dropped", 1, timeout=10)
    finally:
        col.close()


def test_bootstrap_provider_applies_to_hcm_tracing(ctx):
    """`tracing: {}` on the connection manager takes the bootstrap's tracing.http (Envoy v3);
    without the HCM's `tracing` nothing is traced."""
    col = Collector()
    try:
        r = start(ctx, {}, boot_tracing=zipkin_provider(), collector_port=col.port)
        j = echo(r.port())
        assert len(header_values(j, "x-b3-traceid")) == 1
        u = ctx.start_upstream()
        cfg = proxy_config({"c": [u.port], "zipkin": [col.port]}, routes=[("/", "c")])
        cfg["tracing"] = {"http": zipkin_provider()}
        r2 = ctx.start_remora(cfg)
        j = echo(r2.port())
        assert header_values(j, "x-b3-traceid") == []
    finally:
        col.close()


def udp_daemon():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(10)
    return s


def read_segment(s):
    data, _ = s.recvfrom(65536)
    head, _, body = data.partition(b"\n")
    assert json.loads(head) == {"format": "json", "version": 1}
    return json.loads(body)


def test_xray_segment_and_propagation(ctx):
    """x-amzn-trace-id Root/Parent/Sampled=1: the upstream gets the same root, this segment as
    Parent; the daemon gets one segment with the ids, the http block and annotations."""
    d = udp_daemon()
    try:
        r = start(ctx, {"provider": xray_provider(d.getsockname()[1])})
        root = "1-5759e988-bd862e3fe1be46a994272793"
        j = echo(r.port(), path="/x",
                 headers={"X-Amzn-Trace-Id": f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"})
        (h,) = header_values(j, "x-amzn-trace-id")
        parts = dict(p.split("=", 1) for p in h.split(";"))
        assert parts["Root"] == root and parts["Sampled"] == "1"
        seg = read_segment(d)
        assert seg["trace_id"] == root
        assert seg["parent_id"] == "53995c3f42cd8ad8"
        assert seg["id"] == parts["Parent"]
        assert seg["name"] == "my-service"
        assert seg["http"]["request"]["method"] == "GET"
        assert seg["http"]["request"]["url"].endswith("/x")
        assert seg["http"]["response"]["status"] == 200
        assert seg["end_time"] >= seg["start_time"]
        assert seg["annotations"]["upstream_cluster"] == "c"
        # Sampled=0 from the caller: propagated, nothing sent
        j = echo(r.port(), headers={"X-Amzn-Trace-Id": f"Root={root};Sampled=0"})
        assert header_values(j, "x-amzn-trace-id")[0].endswith("Sampled=0")
        # a new trace: the default rule's reservoir takes the first request of a second
        j = echo(r.port())
        (h,) = header_values(j, "x-amzn-trace-id")
        assert h.startswith("Root=1-")
        n = 2 if h.endswith("Sampled=1") else 1
        wait_stat(r, "tracing.xray.segments_sent", n)
        # HTTP/2 (h2c prior knowledge) goes through the same path
        p = curl(["--http2-prior-knowledge", "-H", "x-upstream-echo: 1", "-H",
                  f"X-Amzn-Trace-Id: Root={root};Sampled=1", f"http://127.0.0.1:{r.port()}/h2"],
                 check=True)
        j = json.loads(p.stdout)
        (h,) = header_values(j, "x-amzn-trace-id")
        assert h.startswith(f"Root={root};Parent=") and h.endswith("Sampled=1"), h
        seg = read_segment(d) if n == 1 else (read_segment(d), read_segment(d))[1]
        assert seg["trace_id"] == root and seg["http"]["request"]["url"].endswith("/h2")
    finally:
        d.close()


def test_hostile_trace_headers_are_bounded(ctx):
    """Malformed or huge contexts start a new trace; remora neither crashes nor echoes them."""
    col = Collector()
    try:
        r = start(ctx, {"provider": zipkin_provider()}, collector_port=col.port)
        for hv in ["zz", "-" * 3000, TRACE + "-", f"{TRACE}-{SPAN}-x", f"{TRACE}-{SPAN}-1-{SPAN}-1",
                   "0" * 32 + "-" + SPAN]:
            j = echo(r.port(), headers={"b3": hv, "x-b3-traceid": "\u00ff" * 10})
            (tid,) = header_values(j, "x-b3-traceid")
            assert tid != hv and len(tid) == 16
        j = echo(r.port(), headers={"x-b3-traceid": "g" * 16, "x-b3-spanid": SPAN})
        assert header_values(j, "x-b3-traceid") != ["g" * 16]
    finally:
        col.close()


def _validate(ctx, cfg):
    path = ctx.tmp / "v.yaml"
    path.write_text(to_yaml(cfg) + "\n")
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path)],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    return p.returncode, p.stdout + p.stderr


def test_config_rejections_name_the_field(ctx):
    """What remora does not do is rejected with its field path; a valid config validates."""
    bad = [
        ({"provider": zipkin_provider(), "spawn_upstream_span": True}, "spawn_upstream_span"),
        ({"provider": zipkin_provider(collector_endpoint_version="GRPC")},
         "provider.typed_config.collector_endpoint_version"),
        ({"provider": zipkin_provider(collector_cluster="nope")},
         "provider.typed_config.collector_cluster"),
        ({"custom_tags": [{"tag": "e", "environment": {"name": "HOME"}}]},
         "tracing.custom_tags[0].environment"),
        ({"custom_tags": [{"tag": "m", "metadata": {}}]}, "tracing.custom_tags[0].metadata"),
        ({"random_sampling": {"value": 101}}, "tracing.random_sampling.value"),
        ({"verbose": True}, "tracing.verbose"),
        ({"provider": xray_provider(2000, sampling_rule_manifest={"inline_string": "{}"})},
         "sampling_rule_manifest"),
        ({"provider": {"name": "x", "typed_config": {
            "@type": "type.googleapis.com/google.protobuf.Struct"}}}, "tracing.provider"),
    ]
    for tracing, want in bad:
        cfg = proxy_config({"c": [1234], "zipkin": [1235]}, routes=[("/", "c")],
                           hcm_extra={"tracing": tracing})
        code, out = _validate(ctx, cfg)
        assert code != 0 and want in out, (tracing, out)
    cfg = proxy_config({"c": [1234], "zipkin": [1235]}, routes=[("/", "c")],
                       hcm_extra={"tracing": {"provider": zipkin_provider()}})
    code, out = _validate(ctx, cfg)
    assert code == 0, out


def _gateway_env(ctx, tracing_vars):
    """remora --bootstrap-from-env as App Mesh gateway GW of test_appmesh_env's mesh, with
    ``tracing_vars``; returns (remora, the gateway's port) once ready."""
    from lib import free_port
    from test_appmesh_env import GW_ARN, env_remora, make_gateway_mesh
    from test_xds_serve import start_xds_server

    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    gw_port = free_port()
    x = start_xds_server(ctx)
    make_gateway_mesh(x, a.port, b.port, gw_port)
    env = {"APPMESH_RESOURCE_ARN": GW_ARN, "APPMESH_XDS_ENDPOINT": f"127.0.0.1:{x.xds_port}",
           "ENVOY_ADMIN_ACCESS_PORT": free_port()}
    env.update(tracing_vars)
    r = env_remora(ctx, env)
    wait_for(lambda: r._check_alive() or r.admin("GET", "/ready").status == 200, 30,
             "remora ready")
    return r, gw_port


def _through(port, headers):
    from lib import HttpConn

    def once():
        with HttpConn(port) as c:
            h = {"Host": "gateway.example", "x-upstream-echo": "1"}
            h.update(headers)
            resp = c.request("GET", "/traced", h)
            return resp.status == 200 and resp

    return json.loads(wait_for(once, 10, "a 200 through the gateway").body)


def test_appmesh_env_jaeger_spans_reach_the_collector(ctx):
    """ENABLE_ENVOY_JAEGER_TRACING=1 with JAEGER_TRACER_PORT: Zipkin JSON spans of the
    gateway's requests reach the collector at /api/v2/spans; B3 goes upstream."""
    from test_appmesh_env import GW_ARN

    col = Collector()
    try:
        r, gw = _gateway_env(ctx, {"ENABLE_ENVOY_JAEGER_TRACING": "1",
                                   "JAEGER_TRACER_PORT": col.port})
        for _ in range(5):
            j = _through(gw, {"x-b3-traceid": TRACE, "x-b3-spanid": SPAN, "x-b3-sampled": "1"})
            assert header_values(j, "x-b3-traceid") == [TRACE]
            assert header_values(j, "x-b3-parentspanid") == [SPAN]
        wait_for(lambda: len(col.spans()) >= 5, 10, "5 spans at the collector")
        assert col.reports[0][0] == "/api/v2/spans"
        sp = col.spans()[0]
        assert sp["traceId"] == TRACE and sp["parentId"] == SPAN
        assert sp["tags"]["node_id"] == GW_ARN
        wait_for(lambda: stats(r).get("tracing.zipkin.reports_sent", 0) >= 1, 10, "reports_sent")
    finally:
        col.close()


def test_appmesh_env_xray_traces_the_gateway(ctx):
    """App Mesh mode: `remora --bootstrap-from-env` with ENABLE_ENVOY_XRAY_TRACING=1 and the
    daemon's address; remora-xds's gateway listener (an LDS connection manager with
    `tracing: {}`) takes the bootstrap's X-Ray tracer: a request through the gateway sends a
    segment named mesh/gateway to the daemon, and the upstream sees x-amzn-trace-id."""
    from test_appmesh_env import GW, GW_ARN
    from test_xds_e2e import MESH

    d = udp_daemon()
    try:
        r, gw = _gateway_env(ctx, {"ENABLE_ENVOY_XRAY_TRACING": "1",
                                   "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{d.getsockname()[1]}"})
        root = "1-5759e988-bd862e3fe1be46a994272793"
        j = _through(gw, {"X-Amzn-Trace-Id": f"Root={root};Parent=53995c3f42cd8ad8;Sampled=1"})
        (h,) = header_values(j, "x-amzn-trace-id")
        assert h.startswith(f"Root={root};Parent=") and h.endswith("Sampled=1"), h
        seg = read_segment(d)
        assert seg["name"] == f"{MESH}/{GW}"
        assert seg["trace_id"] == root and seg["parent_id"] == "53995c3f42cd8ad8"
        assert seg["http"]["response"]["status"] == 200
        assert seg["annotations"]["node_id"] == GW_ARN
        assert stats(r)["tracing.xray.segments_sent"] == 1
    finally:
        d.close()
