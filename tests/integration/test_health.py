"""Active health checking, panic routing and priorities through remora, as Envoy does them:
hosts start unhealthy until their first check, serving waits for that first round, a failing
host leaves the load balancer and comes back after healthy_threshold passes, a priority that
loses its hosts spills over to the next, and when too few hosts are healthy the load balancer
panics and uses them all."""

import json
import subprocess

from healthutil import (FlipUpstream, config, flags, host_lines, http_hc, names, stat, tcp_hc,
                        wait_flags)
from lib import REPO, free_port, http_request, wait_for
from proxyutil import wait_stat


def test_http_hc_startup_round_then_healthy(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = ctx.start_remora(config({"svc": [a, b]}, cluster_extra={"health_checks": [http_hc()]}))
    # /ready only answers 200 once the first round is in, so both are already healthy.
    assert flags(r, "svc", a.port) == "healthy"
    assert flags(r, "svc", b.port) == "healthy"
    st = stat(r, "cluster.svc.health_check.healthy")
    assert st == 2, st
    assert stat(r, "cluster.svc.membership_healthy") == 2
    assert stat(r, "cluster.svc.health_check.attempt") >= 2
    assert stat(r, "cluster.svc.health_check.success") >= 2
    assert stat(r, "cluster.svc.health_check.failure") == 0
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b"): 5}, got


def test_http_hc_failing_host_leaves_and_returns(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = ctx.start_remora(config({"svc": [a, b]},
                                cluster_extra={"health_checks": [http_hc(unhealthy=2,
                                                                         healthy=2)]}))
    assert names(r, 4) == {(200, "a"): 2, (200, "b"): 2}
    bport = b.port
    b.stop(5)
    wait_flags(r, "svc", bport, "/failed_active_hc")
    wait_stat(r, "cluster.svc.membership_healthy", 1)
    assert stat(r, "cluster.svc.health_check.network_failure") >= 2
    assert stat(r, "cluster.svc.health_check.healthy") == 1
    # Every request now goes to a: no 503 although b is down.
    got = names(r, 20)
    assert got == {(200, "a"): 20}, got
    b2 = ctx.start_upstream(name="b2", listen=f"127.0.0.1:{bport}")
    wait_flags(r, "svc", bport, "healthy")
    wait_stat(r, "cluster.svc.membership_healthy", 2)
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b2"): 5}, got
    assert b2.stats()["requests"] >= 5


def test_http_hc_unexpected_status_fails_at_once(ctx):
    # unhealthy_threshold 5 applies to network failures; a non-expected status takes the host
    # out on the spot (Envoy), and it needs healthy_threshold passes to come back.
    with FlipUpstream("flip") as f:
        a = ctx.start_upstream(name="a")
        hc = http_hc(unhealthy=5, healthy=3)
        r = ctx.start_remora(config({"svc": [a, f]}, cluster_extra={"health_checks": [hc]}))
        assert flags(r, "svc", f.port) == "healthy"
        before = f.count("/healthz")
        f.status = 503
        wait_flags(r, "svc", f.port, "/failed_active_hc")
        assert f.count("/healthz") - before <= 3, "one failed check is enough"
        got = names(r, 10)
        assert got == {(200, "a"): 10}, got
        f.status = 200
        n0 = f.count("/healthz")
        wait_flags(r, "svc", f.port, "healthy")
        assert f.count("/healthz") - n0 >= 3, "healthy_threshold passes are needed"
        assert stat(r, "cluster.svc.health_check.network_failure") == 0


def test_http_hc_expected_statuses_and_headers(ctx):
    # The check may ask the test upstream for a status by header: 503 is failing by default,
    # but passes when expected_statuses includes it.
    a = ctx.start_upstream(name="a", record=True)
    hc = http_hc(path="/hc", unhealthy=1, healthy=1)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-status", "value": "503"}}]
    hc["http_health_check"]["host"] = "hc.example"
    hc["http_health_check"]["expected_statuses"] = [{"start": 500, "end": 504}]
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "healthy"
    rec = a.recorded().decode("latin-1").lower()
    assert "get /hc http/1.1\r\n" in rec
    assert "host: hc.example\r\n" in rec
    assert "user-agent: envoy/hc\r\n" in rec
    assert "x-upstream-status: 503\r\n" in rec


def test_http_hc_503_with_default_expectation_and_panic(ctx):
    # The only host fails its checks: 0% healthy is below the panic threshold, so Envoy routes
    # to it anyway and counts lb_healthy_panic; /clusters shows why.
    a = ctx.start_upstream(name="a")
    hc = http_hc(unhealthy=1, healthy=1)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-status", "value": "503"}}]
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "/failed_active_hc"
    assert stat(r, "cluster.svc.membership_healthy") == 0
    assert stat(r, "cluster.svc.health_check.failure") >= 1
    got = names(r, 5)
    assert got == {(200, "a"): 5}, got
    assert stat(r, "cluster.svc.lb_healthy_panic") == 5
    j = r.admin("GET", "/clusters?format=json").json()
    host = j["cluster_statuses"][0]["host_statuses"][0]
    assert host["health_status"]["failed_active_health_check"] is True, host


def test_panic_disabled_answers_503_uh(ctx):
    a = ctx.start_upstream(name="a")
    hc = tcp_hc()
    r = ctx.start_remora(config({"svc": [a, free_port()]}, cluster_extra={
        "health_checks": [hc], "common_lb_config": {"healthy_panic_threshold": {"value": 0}}}))
    got = names(r, 6)
    assert got == {(200, "a"): 6}, got
    a.stop(5)
    wait_stat(r, "cluster.svc.membership_healthy", 0)
    resp = http_request(r.port(), path="/x")
    assert resp.status == 503 and resp.body == b"no healthy upstream", resp
    assert stat(r, "cluster.svc.lb_healthy_panic") == 0
    assert stat(r, "cluster.svc.upstream_cx_none_healthy") >= 1


def test_tcp_hc_on_stopped_upstream(ctx):
    a = ctx.start_upstream(name="a")
    dead = free_port()
    r = ctx.start_remora(config({"svc": [a, dead]}, cluster_extra={"health_checks": [tcp_hc()]}))
    # The first check already failed: serving started with the dead host out of rotation.
    assert flags(r, "svc", dead) == "/failed_active_hc"
    assert flags(r, "svc", a.port) == "healthy"
    assert stat(r, "cluster.svc.health_check.network_failure") >= 1
    got = names(r, 10)
    assert got == {(200, "a"): 10}, got
    assert stat(r, "cluster.svc.upstream_cx_connect_fail") == 0
    b = ctx.start_upstream(name="b", listen=f"127.0.0.1:{dead}")
    wait_flags(r, "svc", dead, "healthy")
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b"): 5}, got
    assert b.stats()["requests"] == 5, "TCP checks send no bytes"


def test_panic_routing_when_most_hosts_unhealthy(ctx):
    # 1 of 3 healthy (33% < 50%): panic, every host gets traffic, failures included.
    a = ctx.start_upstream(name="a")
    d1, d2 = free_port(), free_port()
    r = ctx.start_remora(config({"svc": [a, d1, d2]},
                                cluster_extra={"health_checks": [tcp_hc()]}))
    assert stat(r, "cluster.svc.membership_healthy") == 1
    got = names(r, 9)
    assert got[(200, "a")] == 3 and got[(503, None)] == 6, got
    assert stat(r, "cluster.svc.lb_healthy_panic") == 9
    assert stat(r, "cluster.svc.upstream_cx_connect_fail") == 6


def test_no_panic_with_most_hosts_healthy(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    d = free_port()
    r = ctx.start_remora(config({"svc": [a, b, d]}, cluster_extra={"health_checks": [tcp_hc()]}))
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b"): 5}, got
    assert stat(r, "cluster.svc.lb_healthy_panic") == 0


def test_priority_failover_and_spill(ctx):
    c = ctx.start_upstream(name="c")
    p0a, p0b = free_port(), free_port()
    cfg = config({"svc": [p0a, p0b, c]}, priorities={"svc": [0, 0, 1]},
                 cluster_extra={"health_checks": [tcp_hc()]})
    r = ctx.start_remora(cfg)
    lines = host_lines(r, "svc")
    assert lines[f"127.0.0.1:{c.port}"]["priority"] == "1"
    assert lines[f"127.0.0.1:{p0a}"]["priority"] == "0"
    # Priority 0 is down: everything fails over to priority 1, without panic.
    got = names(r, 10)
    assert got == {(200, "c"): 10}, got
    assert stat(r, "cluster.svc.lb_healthy_panic") == 0
    # Half of priority 0 back: health 50% * 1.4 = 70, so about 70% of picks go there.
    a = ctx.start_upstream(name="a", listen=f"127.0.0.1:{p0a}")
    wait_flags(r, "svc", p0a, "healthy")
    got = names(r, 200)
    assert got[(200, "a")] + got[(200, "c")] == 200, got
    assert 110 <= got[(200, "a")] <= 170, got
    # All of priority 0 healthy: priority 1 gets nothing.
    ctx.start_upstream(name="b", listen=f"127.0.0.1:{p0b}")
    wait_flags(r, "svc", p0b, "healthy")
    got = names(r, 10)
    assert got == {(200, "a"): 5, (200, "b"): 5}, got
    assert a.stats()["requests"] > 0


def test_overprovisioning_factor_policy(ctx):
    # With overprovisioning_factor 100, priority 0 at 50% health takes exactly 50% of picks
    # (at the default 140 it would take 70%).
    a = ctx.start_upstream(name="a")
    c = ctx.start_upstream(name="c")
    dead = free_port()
    cfg = config({"svc": [a, dead, c]}, priorities={"svc": [0, 0, 1]},
                 cluster_extra={"health_checks": [tcp_hc()]})
    cfg["static_resources"]["clusters"][0]["load_assignment"]["policy"] = {
        "overprovisioning_factor": 100}
    r = ctx.start_remora(cfg)
    got = names(r, 200)
    assert got[(200, "a")] + got[(200, "c")] == 200, got
    assert 70 <= got[(200, "a")] <= 130, got


def test_health_example_validates(ctx):
    exe = ctx.bin("remora")
    out = subprocess.run([str(exe), "--mode", "validate", "-c",
                          str(REPO / "examples" / "health.yaml")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "OK" in out.stdout


def test_health_config_rejections(ctx):
    exe = ctx.bin("remora")
    bad = config({"svc": [free_port()]}, cluster_extra={"health_checks": [
        dict(tcp_hc(), event_log_path="/tmp/hc.log")]})
    path = ctx.tmp / "bad.json"
    path.write_text(json.dumps(bad))
    out = subprocess.run([str(exe), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert ("static_resources.clusters[0].health_checks[0].event_log_path: not supported by "
            "remora yet") in out.stdout, out.stdout
    # a service_name_matcher is compiled as any StringMatcher: a bad regex names its path
    hc = http_hc()
    hc["http_health_check"]["service_name_matcher"] = {"safe_regex": {"regex": "("}}
    path.write_text(json.dumps(config({"svc": [free_port()]},
                                      cluster_extra={"health_checks": [hc]})))
    out = subprocess.run([str(exe), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert ("static_resources.clusters[0].health_checks[0].http_health_check."
            "service_name_matcher.safe_regex") in out.stdout, out.stdout


def test_startup_waits_for_first_round(ctx):
    # A check that takes a second (the upstream delays its answer) holds /ready at 503 and the
    # listener's connections in the backlog until it is done, as Envoy holds serving until its
    # clusters warm.
    a = ctx.start_upstream(name="a")
    hc = http_hc(interval="5s", timeout="4s", unhealthy=1, healthy=1)
    hc["http_health_check"]["request_headers_to_add"] = [
        {"header": {"key": "x-upstream-delay-ms", "value": "1000"}}]
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}),
                         wait_ready=False)

    def ready_status():
        try:
            return r.admin("GET", "/ready").status
        except OSError:
            return None

    first = wait_for(ready_status, 5, "admin answering")
    assert first == 503, first
    resp = http_request(r.port(), path="/early", timeout=10)  # waits in the backlog
    assert resp.status == 200 and resp.header("x-upstream-name") == "a", resp
    assert ready_status() == 200
    assert flags(r, "svc", a.port) == "healthy"


IHCF = "x-envoy-immediate-health-check-fail"


def test_immediate_health_check_fail_header_is_a_passive_failure(ctx):
    """Envoy's router: a response carrying x-envoy-immediate-health-check-fail marks its host
    /failed_active_hc at once when the cluster has health checks, counting
    health_check.failure and .passive_failure per such response (a host already out counts
    again); the response itself goes to the client as it is. Checks then bring the host back
    (healthy_threshold passes)."""
    a = ctx.start_upstream(name="a")
    hc = http_hc(interval="1s", unhealthy=5, healthy=2)
    r = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
    assert flags(r, "svc", a.port) == "healthy"
    fail = [("x-upstream-response-header", f"{IHCF}: true")]
    resp = http_request(r.port(), headers=fail)
    assert resp.status == 200 and resp.header(IHCF) == "true", resp
    wait_stat(r, "cluster.svc.health_check.passive_failure", 1)
    assert stat(r, "cluster.svc.health_check.failure") == 1
    assert stat(r, "cluster.svc.health_check.network_failure") == 0
    assert stat(r, "cluster.svc.health_check.healthy") == 0
    wait_flags(r, "svc", a.port, "/failed_active_hc", timeout=0.5)
    # all hosts out: panic routing still reaches it, and it counts again
    resp = http_request(r.port(), headers=fail)
    assert resp.status == 200, resp
    wait_stat(r, "cluster.svc.health_check.passive_failure", 2)
    assert stat(r, "cluster.svc.health_check.failure") == 2
    # the checks pass: it comes back after healthy_threshold of them
    wait_flags(r, "svc", a.port, "healthy", timeout=6)
    assert stat(r, "cluster.svc.health_check.healthy") == 1


def test_immediate_health_check_fail_header_without_health_checks(ctx):
    """Without health checks (Envoy's null host monitor) the header changes nothing."""
    a = ctx.start_upstream(name="a")
    r = ctx.start_remora(config({"svc": [a]}))
    resp = http_request(r.port(), headers=[("x-upstream-response-header", f"{IHCF}: true")])
    assert resp.status == 200 and resp.header(IHCF) == "true", resp
    assert flags(r, "svc", a.port) == "healthy"
    assert stat(r, "cluster.svc.health_check.passive_failure") in (None, 0)


def test_http_hc_service_name_matcher_verifies_cluster(ctx):
    """service_name_matcher (Envoy's verify_cluster): a response with an expected status passes
    only when its x-envoy-upstream-healthchecked-cluster matches (an absent one is ""), and each
    such response counts health_check.verify_cluster; over HTTP/1.1 and HTTP/2. The test
    upstream sends the header because the check asks it to (request_headers_to_add)."""
    for codec in ("HTTP1", "HTTP2"):
        a = ctx.start_upstream(name=f"a{codec}")
        b = ctx.start_upstream(name=f"b{codec}")
        hc = http_hc(unhealthy=3, healthy=1, interval="0.2s")
        hh = hc["http_health_check"]
        hh["codec_client_type"] = codec
        hh["service_name_matcher"] = {"prefix": "svc-"}
        hh["request_headers_to_add"] = [
            {"header": {"key": "x-upstream-response-header",
                        "value": "x-envoy-upstream-healthchecked-cluster: svc-a"}}]
        r = ctx.start_remora(config({"svc": [a, b]}, cluster_extra={"health_checks": [hc]}))
        assert flags(r, "svc", a.port) == "healthy", codec
        assert flags(r, "svc", b.port) == "healthy", codec
        assert stat(r, "cluster.svc.health_check.verify_cluster") >= 2
        assert stat(r, "cluster.svc.health_check.failure") == 0

        hh["service_name_matcher"] = {"exact": "other"}
        r2 = ctx.start_remora(config({"svc": [a]}, cluster_extra={"health_checks": [hc]}))
        assert flags(r2, "svc", a.port) == "/failed_active_hc", codec
        assert stat(r2, "cluster.svc.health_check.verify_cluster") >= 1
        assert stat(r2, "cluster.svc.health_check.failure") >= 1
        assert stat(r2, "cluster.svc.health_check.network_failure") == 0

        # no header at all: "" is matched (a prefix "svc-" does not match it)
        del hh["request_headers_to_add"]
        hh["service_name_matcher"] = {"prefix": "svc-"}
        r3 = ctx.start_remora(config({"svc": [b]}, cluster_extra={"health_checks": [hc]}))
        assert flags(r3, "svc", b.port) == "/failed_active_hc", codec
        assert stat(r3, "cluster.svc.health_check.verify_cluster") >= 1
