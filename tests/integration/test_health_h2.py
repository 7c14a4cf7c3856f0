"""Active health checks over HTTP/2 and gRPC, and an endpoint's health_check_config, as Envoy
runs them: an HTTP check with codec_client_type HTTP2 against the h2c test upstream, the gRPC
Health Checking Protocol against @grpc/grpc-js (tests/grpc/server.js's grpc.health.v1.Health,
switched between SERVING and NOT_SERVING while remora runs), and checks sent to
health_check_config.port_value instead of the traffic port."""

import json
import subprocess

from grpcutil import start_grpc_server
from healthutil import FlipUpstream, config, flags, http_hc, names, stat, tcp_hc, wait_flags
from lib import free_port, http_request, wait_for
from proxyutil import wait_stat


def h2_hc(path="/healthz", **kw):
    hc = http_hc(path=path, **kw)
    hc["http_health_check"]["codec_client_type"] = "HTTP2"
    return hc


def grpc_hc(service=None, interval="0.1s", timeout="1s", unhealthy=2, healthy=2, **extra):
    g = {}
    if service is not None:
        g["service_name"] = service
    hc = {"timeout": timeout, "interval": interval, "no_traffic_interval": interval,
          "unhealthy_threshold": unhealthy, "healthy_threshold": healthy,
          "grpc_health_check": g}
    hc.update(extra)
    return hc


def set_health(server, status, service=""):
    r = http_request(server.stats_port, "POST", f"/health?service={service}&status={status}")
    assert r.status == 200, r


def test_h2_hc_over_h2c_status_and_reuse(ctx):
    # b fails its checks by status (the check asks the upstream for 503, which only b applies):
    # it leaves at once; a passes. The checks are HTTP/2 streams on one kept connection.
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    hc = h2_hc(unhealthy=3, healthy=1)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-status", "value": "503"}},
        {"header": {"key": "x-upstream-only", "value": "b"}}]
    r = ctx.start_remora(config({"svc": [a, b]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "healthy"
    assert flags(r, "svc", b.port) == "/failed_active_hc"
    assert stat(r, "cluster.svc.health_check.network_failure") == 0
    assert names(r, 6) == {(200, "a"): 6}
    wait_for(lambda: a.stats()["h2_streams"] >= 4, 5, "four checks on a")
    st = a.stats()
    assert st["h2_connections"] == 1, st  # reuse_connection (default): one connection
    assert stat(r, "cluster.svc.health_check.healthy") == 1
    assert stat(r, "cluster.svc.health_check.failure") >= 1


def test_h2_hc_upstream_down_and_back(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = ctx.start_remora(config({"svc": [a, b]},
                                cluster_extra={"health_checks": [h2_hc(unhealthy=2,
                                                                       healthy=2)]}))
    assert flags(r, "svc", b.port) == "healthy"
    bport = b.port
    b.stop(5)
    wait_flags(r, "svc", bport, "/failed_active_hc")
    wait_stat(r, "cluster.svc.membership_healthy", 1)
    assert stat(r, "cluster.svc.health_check.network_failure") >= 2
    assert names(r, 6) == {(200, "a"): 6}
    b2 = ctx.start_upstream(name="b2", listen=f"127.0.0.1:{bport}")
    wait_flags(r, "svc", bport, "healthy")
    assert b2.stats()["h2_connections"] >= 1
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b2"): 5}, got


def test_h2_hc_reset_stream_and_no_reuse(ctx):
    # A stream reset by the upstream is a network failure (it counts towards the threshold);
    # with reuse_connection false every check opens its own connection.
    a = ctx.start_upstream(name="a")
    hc = h2_hc(unhealthy=2, healthy=1, reuse_connection=False)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-reset", "value": "before-headers"}}]
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "/failed_active_hc"
    wait_for(lambda: stat(r, "cluster.svc.health_check.network_failure") >= 3, 5,
             "three network failures")
    st = a.stats()
    assert st["h2_connections"] >= 3, st


def test_grpc_hc_serving_switch(ctx):
    g = start_grpc_server(ctx, name="g1")
    g2 = start_grpc_server(ctx, name="g2")
    hc = grpc_hc(unhealthy=3, healthy=2)
    r = ctx.start_remora(config({"svc": [g, g2]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", g.port) == "healthy"
    assert flags(r, "svc", g2.port) == "healthy"
    assert stat(r, "cluster.svc.health_check.healthy") == 2
    # NOT_SERVING is an active failure: out at once (not after 3)
    set_health(g, "NOT_SERVING")
    wait_flags(r, "svc", g.port, "/failed_active_hc")
    wait_stat(r, "cluster.svc.membership_healthy", 1)
    assert stat(r, "cluster.svc.health_check.network_failure") == 0
    assert flags(r, "svc", g2.port) == "healthy"
    set_health(g, "UNKNOWN")
    before = g.stats()["by_method"].get("Check", 0)
    wait_for(lambda: g.stats()["by_method"].get("Check", 0) >= before + 3, 5, "3 more checks")
    assert flags(r, "svc", g.port) == "/failed_active_hc"
    set_health(g, "SERVING")
    wait_flags(r, "svc", g.port, "healthy")
    wait_stat(r, "cluster.svc.membership_healthy", 2)
    assert stat(r, "cluster.svc.health_check.healthy") == 2
    assert stat(r, "cluster.svc.health_check.attempt") >= stat(r, "cluster.svc.health_check.success")
    md = g.stats()["last_metadata"]
    assert md.get("user-agent", "").startswith("Envoy/HC"), md


def test_grpc_hc_service_name_metadata_and_failures(ctx):
    # service_name goes in the request; an unknown service is NOT_FOUND: a failure. A gRPC
    # error status, or an answer slower than the timeout, fail too.
    g = start_grpc_server(ctx, name="g")
    hc = grpc_hc(service="svc.A", unhealthy=1, healthy=1, timeout="0.5s")
    hc["grpc_health_check"]["authority"] = "health.example"
    hc["grpc_health_check"]["initial_metadata"] = [
        {"header": {"key": "x-hc-token", "value": "t1"}}]
    r = ctx.start_remora(config({"svc": [g]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", g.port) == "/failed_active_hc"
    st = g.stats()
    assert "svc.A" in st["health_services"], st
    assert st["last_metadata"].get("x-hc-token") == "t1", st
    set_health(g, "SERVING", service="svc.A")
    wait_flags(r, "svc", g.port, "healthy")
    set_health(g, "NOT_SERVING", service="svc.A")
    wait_flags(r, "svc", g.port, "/failed_active_hc")
    assert stat(r, "cluster.svc.health_check.network_failure") == 0


def test_grpc_hc_timeout_and_error_status(ctx):
    g = start_grpc_server(ctx, name="g")
    hc = grpc_hc(unhealthy=1, healthy=1, timeout="0.3s")
    hc["grpc_health_check"]["initial_metadata"] = [
        {"header": {"key": "x-delay-ms", "value": "2000"}}]
    r = ctx.start_remora(config({"svc": [g]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", g.port) == "/failed_active_hc/active_hc_timeout"
    assert stat(r, "cluster.svc.health_check.network_failure") >= 1

    g2 = start_grpc_server(ctx, name="g2")
    hc2 = grpc_hc(unhealthy=1, healthy=1)
    hc2["grpc_health_check"]["initial_metadata"] = [
        {"header": {"key": "x-fail-code", "value": "14"}}]
    r2 = ctx.start_remora(config({"svc": [g2]}, cluster_extra={"health_checks": [hc2]}))
    assert flags(r2, "svc", g2.port) == "/failed_active_hc"
    assert stat(r2, "cluster.svc.health_check.failure") >= 1
    assert stat(r2, "cluster.svc.health_check.network_failure") == 0


def test_grpc_hc_against_http2_non_grpc_fails(ctx):
    # The h2c test upstream answers 200 text/plain: not a gRPC reply, so the check fails.
    a = ctx.start_upstream(name="a")
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={
        "health_checks": [grpc_hc(unhealthy=1, healthy=1)]}))
    assert flags(r, "svc", a.port) == "/failed_active_hc"
    assert stat(r, "cluster.svc.health_check.network_failure") == 0
    assert a.stats()["h2_streams"] >= 1


def with_hc_port(d, cluster, ports):
    """Sets health_check_config.port_value of ``cluster``'s endpoints (in order; None: none)."""
    for c in d["static_resources"]["clusters"]:
        if c["name"] != cluster:
            continue
        lbes = [lbe for lle in c["load_assignment"]["endpoints"] for lbe in lle["lb_endpoints"]]
        for lbe, p in zip(lbes, ports):
            if p is not None:
                lbe["endpoint"]["health_check_config"] = {"port_value": p}
    return d


def test_hc_port_value_http(ctx):
    # a serves traffic; its checks go to f (another port), whose answer decides a's health.
    with FlipUpstream("f") as f:
        a = ctx.start_upstream(name="a")
        b = ctx.start_upstream(name="b")
        d = with_hc_port(config({"svc": [a, b]},
                                cluster_extra={"health_checks": [http_hc(unhealthy=1,
                                                                         healthy=1)]}),
                         "svc", [f.port, None])
        r = ctx.start_remora(d)
        assert flags(r, "svc", a.port) == "healthy"
        assert f.count("/healthz") >= 1
        f.status = 503
        wait_flags(r, "svc", a.port, "/failed_active_hc")
        assert names(r, 6) == {(200, "b"): 6}
        f.status = 200
        wait_flags(r, "svc", a.port, "healthy")
        # a never saw a check: only the 6 + 10 requests below are its
        got = names(r, 10)
        assert got == {(200, "a"): 5, (200, "b"): 5}, got
        assert a.stats()["requests"] == 5, a.stats()


def test_hc_port_value_grpc_and_tcp(ctx):
    # gRPC: the traffic port is a plain upstream (which would fail a gRPC check); the check
    # port is the gRPC server, so the endpoint is healthy. TCP: a closed check port fails.
    a = ctx.start_upstream(name="a")
    g = start_grpc_server(ctx, name="g")
    d = with_hc_port(config({"svc": [a]}, cluster_extra={
        "health_checks": [grpc_hc(unhealthy=1, healthy=1)]}), "svc", [g.port])
    r = ctx.start_remora(d)
    assert flags(r, "svc", a.port) == "healthy"
    assert names(r, 2) == {(200, "a"): 2}
    set_health(g, "NOT_SERVING")
    wait_flags(r, "svc", a.port, "/failed_active_hc")

    b = ctx.start_upstream(name="b")
    d2 = with_hc_port(config({"svc": [b]}, cluster_extra={"health_checks": [tcp_hc()]}), "svc",
                      [free_port()])
    r2 = ctx.start_remora(d2)
    assert flags(r2, "svc", b.port) == "/failed_active_hc"


def test_h2_hc_config_rejections(ctx):
    exe = ctx.bin("remora")
    cases = [
        (dict(h2_hc()), "http3", "codec_client_type: HTTP3 is not supported by remora yet"),
        (http_hc(), "port", "health_check_config.port_value: port 70000 out of range"),
    ]
    for hc, kind, want in cases:
        if kind == "http3":
            hc["http_health_check"]["codec_client_type"] = "HTTP3"
        d = config({"svc": [free_port()]}, cluster_extra={"health_checks": [hc]})
        if kind == "port":
            with_hc_port(d, "svc", [70000])
        path = ctx.tmp / f"bad-{kind}.json"
        path.write_text(json.dumps(d))
        out = subprocess.run([str(exe), "--mode", "validate", "-c", str(path)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 1, out.stdout
        assert want in out.stdout, out.stdout


def test_h2_hc_over_tls_alpn_h2(ctx):
    # nghttpd speaks HTTP/2 over TLS only: the check offers ALPN h2 on the cluster's TLS and
    # sends :scheme https and :authority from `host`. A path nghttpd lacks (404) fails.
    import shutil
    import socket

    from lib import Skip
    from test_tls import config as tls_config
    from test_tls import pki, upstream_tls
    if shutil.which("nghttpd") is None:
        raise Skip("nghttpd is not installed")
    p = pki(ctx)
    docroot = ctx.tmp / "www"
    docroot.mkdir()
    (docroot / "healthz").write_text("ok\n")
    port = free_port()
    nghttpd = ctx.spawn("nghttpd", ["nghttpd", "-v", "-a", "127.0.0.1", "-d", str(docroot),
                                    str(port), p.server[1], p.server[0]])

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 5, "nghttpd listening")
    hc = ["health_checks:", "- timeout: 1s", "  interval: 0.2s", "  no_traffic_interval: 0.2s",
          "  unhealthy_threshold: 1", "  healthy_threshold: 1",
          "  http_health_check: {path: /healthz, host: hc.example, codec_client_type: HTTP2}"]
    tls = upstream_tls(ca=p.ca, sni="backend.test")
    r = ctx.start_remora(tls_config(cluster_port=port, cluster_tls=tls, http2_upstream=True,
                                    cluster_extra=hc))
    assert flags(r, "backend", port) == "healthy"
    wait_for(lambda: ":scheme: https" in nghttpd.stdout and ":path: /healthz" in nghttpd.stdout,
             5, "nghttpd logged a check")
    assert ":authority: hc.example" in nghttpd.stdout, nghttpd.stdout[-2000:]
    assert "user-agent: Envoy/HC" in nghttpd.stdout
    assert stat(r, "cluster.backend.health_check.success") >= 1

    hc[-1] = "  http_health_check: {path: /missing, codec_client_type: HTTP2}"
    r2 = ctx.start_remora(tls_config(cluster_port=port, cluster_tls=tls, cluster_extra=hc),
                          name="r2")
    assert flags(r2, "backend", port) == "/failed_active_hc"
    assert stat(r2, "cluster.backend.health_check.network_failure") == 0


def test_h2_hc_goaway_closes_after_the_check(ctx):
    # The upstream answers each check and sends GOAWAY(NO_ERROR) with it: the check passes,
    # and the next one opens a new connection instead of reusing the one going away.
    a = ctx.start_upstream(name="a")
    hc = h2_hc(unhealthy=1, healthy=1)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-goaway", "value": "0"}}]
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "healthy"
    wait_for(lambda: a.stats()["h2_connections"] >= 3, 5, "three connections")
    assert flags(r, "svc", a.port) == "healthy"
    assert stat(r, "cluster.svc.health_check.failure") == 0


def test_grpc_hc_request_as_nghttpd_sees_it(ctx):
    # nghttpd (h2c) prints the request heads it receives: the gRPC check's is Envoy's
    # (POST /grpc.health.v1.Health/Check, :authority from `authority`, application/grpc, te:
    # trailers, user-agent Envoy/HC, initial_metadata). nghttpd answers 404: the check fails.
    import shutil
    import socket

    from lib import Skip
    if shutil.which("nghttpd") is None:
        raise Skip("nghttpd is not installed")
    docroot = ctx.tmp / "www"
    docroot.mkdir()
    port = free_port()
    nghttpd = ctx.spawn("nghttpd", ["nghttpd", "-v", "--no-tls", "-a", "127.0.0.1", "-d",
                                    str(docroot), str(port)])

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 5, "nghttpd listening")
    hc = grpc_hc(service="svc.A", unhealthy=1, healthy=1)
    hc["grpc_health_check"]["authority"] = "health.example"
    hc["grpc_health_check"]["initial_metadata"] = [
        {"header": {"key": "x-hc-token", "value": "t1"}}]
    r = ctx.start_remora(config({"svc": [port]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", port) == "/failed_active_hc"
    wait_for(lambda: ":path: /grpc.health.v1.Health/Check" in nghttpd.stdout, 5,
             "nghttpd logged a check")
    out = nghttpd.stdout
    for want in (":method: POST", ":scheme: http", ":authority: health.example",
                 "content-type: application/grpc", "te: trailers", "user-agent: Envoy/HC",
                 "x-hc-token: t1"):
        assert want in out, (want, out[-3000:])
    # the request message: 5-byte prefix + field 1 "svc.A" = 12 bytes of DATA, END_STREAM
    assert "recv DATA frame <length=12, flags=0x01" in out, out[-3000:]
    assert stat(r, "cluster.svc.health_check.network_failure") == 0
