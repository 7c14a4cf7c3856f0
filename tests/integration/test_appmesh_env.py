"""remora started the way App Mesh's Envoy image is: `remora --bootstrap-from-env` with only
the image's environment variables (APPMESH_RESOURCE_ARN, APPMESH_XDS_ENDPOINT,
ENVOY_ADMIN_ACCESS_PORT, ...; no -c), against remora-xds, plaintext and TLS (REMORA_XDS_CA_FILE,
mTLS with REMORA_XDS_CERT_FILE/KEY). The node is a virtual gateway (its listener binds a free
port on 0.0.0.0, so no iptables rig is needed): remora takes the gateway's listener, routes,
clusters and endpoints from remora-xds and answers through the mesh. ECS's container health
check (`curl -s http://localhost:9901/server_info | grep state | grep -q LIVE`) fails while
remora waits for its first configuration and while it drains, and passes once it serves;
LISTENER_DRAIN_WAIT_TIME_S bounds the drain; ENVOY_INITIAL_FETCH_TIMEOUT bounds the wait; an
unsupported or invalid variable stops startup with its name."""

import json
import signal
import socket
import subprocess
import threading
import time

from lib import REPO, HttpConn, Remora, Skip, free_port, slow_factor, wait_for
from proxyutil import stats
from test_xds_e2e import MESH, P, make_mesh, put
from test_xds_serve import start_xds_server
from test_xds_tls import init_ca
from tlsutil import Pki

GW = "gw"
GW_ARN = f"arn:aws:appmesh:us-west-2:111122223333:mesh/{MESH}/virtualGateway/{GW}"
HEALTH = "curl -s http://localhost:{port}/server_info | grep state | grep -q LIVE"


def ecs_health(port, prefix=()):
    """ECS's health check command for the App Mesh Envoy container (run after ``prefix``, e.g.
    `ip netns exec TASK`): True when it passes."""
    p = subprocess.run([*prefix, "sh", "-c", HEALTH.format(port=port)], capture_output=True,
                       timeout=10 * slow_factor())
    return p.returncode == 0


class AppMeshRemora(Remora):
    """remora --bootstrap-from-env, stopped at a test's cleanup with SIGINT: its SIGTERM, as the
    image's agent does, keeps serving through LISTENER_DRAIN_WAIT_TIME_S (20 s by default)."""

    def stop(self, timeout):
        if self.alive():
            self.expected_signals.add(signal.SIGINT)
            self.popen.send_signal(signal.SIGINT)
        return super().stop(timeout)


def env_remora(ctx, variables, name="remora-env", args=(), prefix=()):
    """`remora --bootstrap-from-env` with ``variables`` added to the test environment; nothing
    else configures it. ``prefix``: words exec'ing it (a namespace, a uid). Not waited for."""
    exe = ctx.bin("remora")
    if not exe.exists():
        raise Skip(f"{exe} is not built")
    env = dict(ctx.env)
    # The image's default admin log, /tmp/envoy_admin_access.log, is shared between tests
    env["ENVOY_ADMIN_ACCESS_LOG_FILE"] = str(ctx.tmp / f"{name}-admin.log")
    env.update({k: str(v) for k, v in variables.items()})
    p = AppMeshRemora(ctx, ctx._unique(name), [*prefix, exe, "--bootstrap-from-env", *args],
                      env=env, managed=True)
    p.term_timeout = 5.0 * slow_factor()
    ctx.procs.append(p)
    p.admin_port = int(variables.get("ENVOY_ADMIN_ACCESS_PORT", 9901))
    return p


def run_env(ctx, variables, args=()):
    """`remora --bootstrap-from-env ARGS` run to completion: (exit code, stdout, stderr)."""
    env = dict(ctx.env)
    env.update(variables)
    p = subprocess.run([str(ctx.bin("remora")), "--bootstrap-from-env", *args], env=env,
                       capture_output=True, text=True, timeout=20 * slow_factor(),
                       cwd=str(ctx.tmp))
    return p.returncode, p.stdout, p.stderr


def make_gateway_mesh(x, a_port, b_port, gw_port):
    """test_xds_e2e's mesh (router r: 1:1 over a and b, behind svc.m1.local) and virtual gateway
    gw with an http listener on ``gw_port`` whose one route sends everything to that service."""
    make_mesh(x, a_port, b_port, free_port())
    put(x, f"{P}/{MESH}/virtualGateways", {
        "virtualGatewayName": GW,
        "spec": {"listeners": [{"portMapping": {"port": gw_port, "protocol": "http"}}]}})
    put(x, f"{P}/{MESH}/virtualGateway/{GW}/gatewayRoutes", {
        "gatewayRouteName": "all",
        "spec": {"httpRoute": {"match": {"prefix": "/"}, "action": {
            "target": {"virtualService": {"virtualServiceName": "svc.m1.local"}}}}}})


def spread(port, n):
    """Who answered n requests through the gateway listener ({upstream: count})."""
    got = {}
    with HttpConn(port) as c:
        for _ in range(n):
            resp = c.request("GET", "/", {"Host": "gateway.example"})
            k = resp.header("x-upstream-name") if resp.status == 200 else f"<{resp.status}>"
            got[k] = got.get(k, 0) + 1
    return got


def state(r):
    return json.loads(r.admin("GET", "/server_info").text)["state"]


def test_appmesh_env_gateway_plaintext_health_check_and_drain(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    gw_port = free_port()
    # The mesh is made in a first remora-xds, whose store a second one serves later on the
    # xDS port remora was given: until then remora waits for its first configuration.
    x1 = start_xds_server(ctx)
    make_gateway_mesh(x1, a.port, b.port, gw_port)
    assert x1.stop(x1.term_timeout) == 0
    xds_port, admin = free_port(), free_port()
    r = env_remora(ctx, {
        "APPMESH_RESOURCE_ARN": GW_ARN,
        "APPMESH_XDS_ENDPOINT": f"127.0.0.1:{xds_port}",
        "ENVOY_ADMIN_ACCESS_PORT": admin,
        "ENVOY_ADMIN_ACCESS_LOG_FILE": ctx.tmp / "admin_access.log",
        "ENVOY_LOG_LEVEL": "debug",
        "ENVOY_CONCURRENCY": "2",
        "LISTENER_DRAIN_WAIT_TIME_S": "5",
        "AWS_REGION": "us-west-2",
        "APPMESH_PREVIEW": "0",
    })
    wait_for(lambda: r._check_alive() or r.admin("GET", "/ready").status == 503, 5,
             "the admin port, not ready")
    # Not ready: ECS's check fails; Envoy's state names; no xDS stream yet.
    assert state(r) in ("PRE_INITIALIZING", "INITIALIZING"), state(r)
    assert not ecs_health(admin)
    assert stats(r)["control_plane.connected_state"] == 0
    assert "in plaintext (h2c): set REMORA_XDS_CA_FILE" in r.stderr, r.tail()

    ctx.start_xds(db=x1.db, extra_args=["--xds-listen", f"127.0.0.1:{xds_port}", "-l", "debug"],
                  name="xds2")
    wait_for(lambda: ecs_health(admin), 30, "the ECS health check to pass")
    assert state(r) == "LIVE"
    s = stats(r)
    assert s["control_plane.connected_state"] == 1, s
    assert s["listener_manager.lds.update_rejected"] == 0, s
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    assert f"lds_ingress_0.0.0.0_{gw_port}::0.0.0.0:{gw_port}" in \
        r.admin("GET", "/listeners").text

    # Through the mesh: the gateway's route to the service, the router's 1:1 targets.
    got = spread(gw_port, 40)
    assert set(got) == {"a", "b"}, got

    # /server_info: the node from the environment, the image's process variables as flags.
    info = json.loads(r.admin("GET", "/server_info").text)
    assert info["node"] == {"id": GW_ARN, "cluster": GW_ARN, "user_agent_name": "remora"}, info
    opts = info["command_line_options"]
    assert (opts["drain_time"], opts["concurrency"], opts["log_level"]) == ("5s", 2, "debug"), \
        opts
    # ENVOY_ADMIN_ACCESS_LOG_FILE: the health checks' requests, in Envoy's default format.
    log = (ctx.tmp / "admin_access.log").read_text()
    assert '"GET /server_info HTTP/1.1" 200 - 0 ' in log and '"curl/' in log, log
    # The generated bootstrap, as /config_dump shows it.
    boot = json.loads(r.admin("GET", "/config_dump").text)["configs"][0]["bootstrap"]
    assert boot["node"]["metadata"] == {"mesh": MESH}, boot["node"]
    assert boot["admin"]["address"]["socket_address"] == {"address": "0.0.0.0",
                                                          "port_value": admin}, boot["admin"]

    # LISTENER_DRAIN_WAIT_TIME_S=5: a request the upstream holds for a minute does not keep
    # remora past it; while draining, ECS's check fails.
    sock = socket.create_connection(("127.0.0.1", gw_port), timeout=30)
    ctx.sockets.append(sock)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: gateway.example\r\n"
                 b"x-upstream-delay-ms: 60000\r\n\r\n")
    wait_for(lambda: stats(r).get("http.ingress.downstream_rq_active", 0) == 1, 5,
             "the held request")
    t0 = time.monotonic()
    r.signal(15)
    wait_for(lambda: not r.alive() or not ecs_health(admin), 5, "draining")
    exited = threading.Event()
    threading.Thread(target=lambda: (r.popen.wait(), exited.set()), daemon=True).start()
    assert exited.wait(20 * slow_factor()), "remora still running 20 s after SIGTERM"
    took = time.monotonic() - t0
    assert 4.5 <= took < 5 + 3 * slow_factor(), f"drain took {took:.2f}s, want 5s"
    assert r.returncode == 0, r.tail()


def test_appmesh_env_sigterm_serves_through_the_drain_wait(ctx):
    """SIGTERM under --bootstrap-from-env does what the image's agent does on it: a graceful
    drain (/drain_listeners?graceful) for LISTENER_DRAIN_WAIT_TIME_S, then stop. Meanwhile new
    connections are accepted and served (a client making them one after another is answered
    until the end), a keep-alive client is told to close sooner or later (gradual), /ready is
    503 DRAINING (ECS's check fails); the exit comes after the wait, not before. (The bootstrap
    comes from ENVOY_CONFIG_FILE: no control plane needed.)"""
    from lib import http_request, to_yaml
    from proxyutil import proxy_config
    u = ctx.start_upstream()
    port, admin = free_port(), free_port()
    boot = ctx.tmp / "boot.yaml"
    boot.write_text(to_yaml(proxy_config({"c": [u.port]}, listener_port=port,
                                         admin_port=admin)) + "\n")
    r = env_remora(ctx, {"ENVOY_CONFIG_FILE": boot, "ENVOY_ADMIN_ACCESS_PORT": admin,
                         "LISTENER_DRAIN_WAIT_TIME_S": "5"})
    wait_for(lambda: r._check_alive() or ecs_health(admin), 10, "LIVE")
    keep = HttpConn(port)
    assert keep.request().header("connection") != "close"
    t0 = time.monotonic()
    r.signal(15)
    wait_for(lambda: r.admin("GET", "/ready").status == 503, 2, "/ready 503")
    assert r.admin("GET", "/ready").text == "DRAINING\n"
    assert not ecs_health(admin)
    told_close = None
    last_ok = None
    while r.alive() and time.monotonic() - t0 < 5 + 3 * slow_factor():
        try:
            resp = http_request(port, path="/during", timeout=2)
        except OSError:
            break  # the listener closed: the end
        assert resp.status == 200, resp
        last_ok = time.monotonic() - t0
        if told_close is None:
            got = keep.request(path="/keep")
            assert got.status == 200, got
            if got.header("connection") == "close":
                told_close = time.monotonic() - t0
        time.sleep(0.02)  # pacing, not synchronisation: about 250 connections in all
    assert told_close is not None, "the keep-alive client was never told to close"
    assert last_ok is not None and last_ok >= 4.0, f"new connections refused after {last_ok}s"
    exited = threading.Event()
    threading.Thread(target=lambda: (r.popen.wait(), exited.set()), daemon=True).start()
    assert exited.wait(5 * slow_factor()), "remora still running after the drain wait"
    took = time.monotonic() - t0
    assert 4.5 <= took < 5 + 3 * slow_factor(), f"exited {took:.2f}s after SIGTERM, want 5s"
    assert r.returncode == 0, r.tail()
    assert "SIGTERM: graceful drain for 5s" in r.stderr, r.tail()


def test_appmesh_env_tls_to_remora_xds(ctx):
    """--xds-tls with --ca-dir: the CA bundle from REMORA_XDS_CA_FILE (remora-xds's SPIFFE ID
    pinned by default); mTLS (--xds-tls-client-ca) with REMORA_XDS_CERT_FILE/KEY_FILE. A sidecar
    trusting another CA, and one without its client certificate, never go LIVE."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ca_dir = init_ca(ctx)
    pki = Pki(ctx.tmp / "pki")
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--xds-tls", "--xds-tls-client-ca",
                               pki.ca])
    gw_port = free_port()
    make_gateway_mesh(x, a.port, b.port, gw_port)
    cert, key = pki.leaf("gw", "URI:spiffe://mesh.test/gw", usage="clientAuth")
    base = {"APPMESH_RESOURCE_ARN": GW_ARN, "APPMESH_XDS_ENDPOINT": f"127.0.0.1:{x.xds_port}",
            "REMORA_XDS_CA_FILE": ca_dir / "ca.pem"}

    admin = free_port()
    r = env_remora(ctx, {**base, "ENVOY_ADMIN_ACCESS_PORT": admin, "REMORA_XDS_CERT_FILE": cert,
                         "REMORA_XDS_KEY_FILE": key, "ENVOY_LOG_LEVEL": "debug"})
    wait_for(lambda: r._check_alive() or ecs_health(admin), 20, "the ECS health check to pass")
    assert "over TLS (REMORA_XDS_CA_FILE)" in r.stderr and "TLSv1." in r.stderr, r.tail()
    assert set(spread(gw_port, 20)) == {"a", "b"}

    def refused(variables, says, name):
        port = free_port()
        bad = env_remora(ctx, {**base, "ENVOY_ADMIN_ACCESS_PORT": port, **variables}, name=name)
        wait_for(lambda: bad._check_alive() or says in bad.stderr, 10, f"{name}: {says!r}")
        assert bad.admin("GET", "/ready").status == 503
        assert not ecs_health(port)
        bad.stop(bad.term_timeout)

    other, _ = pki.other_ca()
    refused({"REMORA_XDS_CA_FILE": other, "REMORA_XDS_CERT_FILE": cert,
             "REMORA_XDS_KEY_FILE": key}, "certificate verify failed", "wrong-ca")
    refused({}, "ads: TLS error", "no-client-cert")
    assert r.alive() and ecs_health(admin)


def test_appmesh_env_initial_fetch_timeout(ctx):
    """Nothing answers on APPMESH_XDS_ENDPOINT: with ENVOY_INITIAL_FETCH_TIMEOUT=1 remora goes
    LIVE (without configuration) after a second; without it (the image's default, 0) it keeps
    waiting, though it started first. (The second one's admin is on [::], as
    ENVOY_ADMIN_ACCESS_ENABLE_IPV6 asks: IPv4 and IPv6 clients reach it.)"""
    dead = f"127.0.0.1:{free_port()}"
    wait_port, timeout_port = free_port(), free_port()
    waiting = env_remora(ctx, {"APPMESH_RESOURCE_ARN": GW_ARN, "APPMESH_XDS_ENDPOINT": dead,
                               "ENVOY_ADMIN_ACCESS_PORT": wait_port}, name="waits")
    wait_for(lambda: waiting._check_alive() or waiting.admin("GET", "/ready").status == 503, 5,
             "the first one's admin")
    t0 = time.monotonic()
    timed = env_remora(ctx, {"APPMESH_RESOURCE_ARN": GW_ARN, "APPMESH_XDS_ENDPOINT": dead,
                             "ENVOY_ADMIN_ACCESS_PORT": timeout_port,
                             "ENVOY_INITIAL_FETCH_TIMEOUT": "1",
                             "ENVOY_ADMIN_ACCESS_ENABLE_IPV6": "true"}, name="times-out")
    wait_for(lambda: timed._check_alive() or ecs_health(timeout_port), 10, "LIVE after 1 s")
    assert time.monotonic() - t0 >= 0.9
    for host in ("127.0.0.1", "[::1]"):
        p = subprocess.run(["curl", "-s", f"http://{host}:{timeout_port}/ready"],
                           capture_output=True, text=True, timeout=10)
        assert p.stdout == "LIVE\n", (host, p.stdout, p.stderr)
    assert not ecs_health(wait_port)
    assert state(waiting) in ("PRE_INITIALIZING", "INITIALIZING")


def test_appmesh_env_refused_at_startup(ctx):
    """Each unsupported or invalid variable: exit 1, its name in the message. And what the
    flags refuse."""
    if not ctx.bin("remora").exists():
        raise Skip("remora is not built")
    ok = {"APPMESH_RESOURCE_ARN": GW_ARN, "APPMESH_XDS_ENDPOINT": "127.0.0.1:18000"}
    cases = [
        ({"ENABLE_ENVOY_DATADOG_TRACING": "1"},
         "ENABLE_ENVOY_DATADOG_TRACING: '1' is not supported"),
        ({"ENABLE_ENVOY_XRAY_TRACING": "1", "XRAY_SAMPLING_RATE": "2"},
         "XRAY_SAMPLING_RATE: '2' is not a rate from 0 to 1"),
        ({"ENABLE_ENVOY_STATS_TAGS": "on"}, "ENABLE_ENVOY_STATS_TAGS: 'on' is not a boolean"),
        ({"ENABLE_ENVOY_DOG_STATSD": "1", "STATSD_ADDRESS": "datadog-agent"},
         "STATSD_ADDRESS: 'datadog-agent' is not an IP address"),
        ({"APPMESH_SDS_SOCKET_PATH": "/run/spire.sock"}, "APPMESH_SDS_SOCKET_PATH: '/run/spire"),
        ({"ENVOY_ADMIN_MODE": "uds"}, "ENVOY_ADMIN_MODE: 'uds' is not supported"),
        ({"APPMESH_RESOURCE_ARN": "arn:aws:appmesh:us-west-2:1:mesh/m/virtualNode/n"},
         "APPMESH_RESOURCE_ARN: 'arn:aws:appmesh:us-west-2:1:mesh/m/virtualNode/n': the ARN's "
         "account is not 12 digits"),
        ({"APPMESH_XDS_ENDPOINT": "xds.local"}, "APPMESH_XDS_ENDPOINT: 'xds.local' is not "
         "host:port"),
        ({"ENVOY_ADMIN_ACCESS_PORT": "99999"}, "ENVOY_ADMIN_ACCESS_PORT: '99999' is not an "
         "integer in 1..65535"),
        ({"LISTENER_DRAIN_WAIT_TIME_S": "600"}, "LISTENER_DRAIN_WAIT_TIME_S: '600' is not an "
         "integer in 5..110"),
        ({"REMORA_XDS_CA_FILE": "/nonexistent/ca.pem"}, "REMORA_XDS_CA_FILE: cannot read "
         "'/nonexistent/ca.pem'"),
    ]
    for extra, want in cases:
        rc, out, err = run_env(ctx, {**ok, **extra})
        assert rc == 1, (extra, rc, err)
        assert f"remora: invalid environment: {want}" in err, (extra, err)
    env = {k: v for k, v in ok.items() if k != "APPMESH_RESOURCE_ARN"}
    rc, _, err = run_env(ctx, env)
    assert rc == 1 and "APPMESH_RESOURCE_ARN: required" in err, err

    # --print-bootstrap: the bootstrap as JSON on stdout, checked; exit 0.
    rc, out, err = run_env(ctx, {**ok, "ENVOY_INITIAL_FETCH_TIMEOUT": "7"},
                           ["--print-bootstrap"])
    assert rc == 0, err
    boot = json.loads(out)
    assert boot["node"]["id"] == GW_ARN, boot
    assert boot["dynamic_resources"]["cds_config"]["initial_fetch_timeout"] == "7s", boot
    # The same through --mode validate, as a file would be.
    rc, out, err = run_env(ctx, ok, ["--mode", "validate"])
    assert (rc, out) == (0, "configuration '--bootstrap-from-env' OK\n"), (rc, out, err)
    # Not with -c, and --print-bootstrap only with it.
    p = subprocess.run([str(ctx.bin("remora")), "--bootstrap-from-env", "-c", "x.yaml"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "not with -c" in p.stderr, p.stderr
    p = subprocess.run([str(ctx.bin("remora")), "--print-bootstrap", "-c", "x.yaml"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "goes with --bootstrap-from-env" in p.stderr, p.stderr


def test_appmesh_env_example_file(ctx):
    """examples/appmesh_task.env, as docker's --env-file reads it (NAME=value lines, # comments):
    it builds."""
    env = {}
    for line in (REPO / "examples" / "appmesh_task.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    assert env["APPMESH_XDS_ENDPOINT"] and env["APPMESH_RESOURCE_ARN"], env
    # The task's CA path and xDS name are not this machine's (remora resolves a STRICT_DNS
    # name when it builds): ours stand in for them.
    env["REMORA_XDS_CA_FILE"] = str(init_ca(ctx) / "ca.pem")
    env["APPMESH_XDS_ENDPOINT"] = "127.0.0.1:18000"
    rc, out, err = run_env(ctx, env, ["--mode", "validate"])
    assert rc == 0, err


def test_appmesh_env_sidecar_in_ecs_task(ctx):
    """A virtual node's sidecar from the environment alone, as in an App Mesh ECS task:
    remora (uid 1337) in the task namespace behind the `aws-appmesh` CNI plugin's nat rules,
    remora-xds on the service host (test_xds_e2e's rig). Its listeners (15000, 15001 with
    original_dst), clusters, endpoints and routes come over ADS; ECS's health check, run in
    the task, passes; the app's call to the virtual service follows the router's weights."""
    from lib import build_request, raw_exchange
    from netnsutil import PROXY_UID
    from test_xds_e2e import VS, ecs_full_sidecar
    node_arn = f"arn:aws:appmesh:us-west-2:111122223333:mesh/{MESH}/virtualNode/front"

    def start(pair, xds_port):
        r = env_remora(ctx, {"APPMESH_RESOURCE_ARN": node_arn,
                             "APPMESH_XDS_ENDPOINT": f"{pair.svc_ip}:{xds_port}",
                             "ENVOY_ADMIN_ACCESS_LOG_FILE": "/dev/null",  # uid 1337
                             "ENVOY_LOG_LEVEL": "debug"},
                       prefix=pair.exec_prefix(pair.task, uid=PROXY_UID))
        in_task = pair.exec_prefix(pair.task)
        wait_for(lambda: r._check_alive() or ecs_health(9901, in_task), 20,
                 "the ECS health check in the task")
        return r

    pair, xa, r, in_svc = ecs_full_sidecar(ctx, start=start)
    s = pair.call(pair.task, stats, r)
    assert s["listener_manager.total_listeners_active"] == 2, s
    assert s["listener_manager.lds.update_rejected"] == 0, s
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    got = {}
    for _ in range(40):
        reply = bytes(pair.call(pair.task, raw_exchange, 8080,
                                build_request("GET", "/", host=VS), timeout=3.0,
                                host=pair.svc_ip,
                                until=lambda b: b"\r\n\r\n" in b and b.endswith(b"\n")))
        text = reply.decode("latin-1").lower()
        k = text.split("x-upstream-name: ", 1)[1].split("\r\n", 1)[0] \
            if text.startswith("http/1.1 200") else f"<{text[:12]}>"
        got[k] = got.get(k, 0) + 1
    assert set(got) == {"a", "b"}, got
