"""remora-xds serving xDS (ADS, state of the world) translated from the App Mesh resources it
stores. The mesh is written with the real AWS CLI (as test_xds_api.py does) and read by a real
proxyless gRPC client, @grpc/grpc-js-xds (tests/grpc/xds_client.js: one channel to
xds:///<virtual service> for the whole test), which calls two grpc-js test servers; the
protocol corners by tests/grpc/ads_probe.js (real HTTP/2 and gRPC framing, requests a good
client never sends), and hostile bytes by raw sockets."""

import json
import select
import socket
import subprocess
import time

from grpcutil import GRPC_DIR, need_node, start_grpc_server
from lib import HttpConn, Skip, TestFailure, slow_factor, wait_for
from test_xds_api import aws

MESH = "shop"
SERVICE = "echo.shop.local"


def start_xds_server(ctx, extra_args=(), prefix=()):
    """remora-xds with both listeners; the Proc gets ``port`` (API) and ``xds_port``.
    ``prefix``: as ctx.start_xds's."""
    port_file = ctx.tmp / "xds-ads.port"
    x = ctx.start_xds(extra_args=["--xds-listen", "127.0.0.1:0", "--xds-port-file", port_file,
                                  "-l", "debug", *extra_args], prefix=prefix)

    def ready():
        text = port_file.read_text() if port_file.exists() else ""
        return text.endswith("\n") and int(text)

    x.xds_port = wait_for(ready, 5.0, "xds port file")
    return x


class XdsClient:
    """tests/grpc/xds_client.js: one xDS channel kept across calls(), which sends it a command
    and returns its answer {"by": {server or "error:<code>": n}, "details": [...]}."""

    def __init__(self, ctx, xds_port, target, mesh=None, name="xds-client"):
        node = need_node()
        argv = [node, str(GRPC_DIR / "xds_client.js"), "--xds", f"127.0.0.1:{xds_port}",
                "--target", target, "--node-id", name]
        if mesh is not None:
            argv += ["--mesh", mesh]
        self.stderr_path = ctx.tmp / f"{name}.stderr"
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(self.stderr_path, "wb"), cwd=str(ctx.tmp),
                                  text=True, env=ctx.env)
        ctx.on_cleanup(self.close)

    def calls(self, n, timeout=30.0, **cmd):
        self.p.stdin.write(json.dumps(dict(calls=n, **cmd)) + "\n")
        self.p.stdin.flush()
        ready, _, _ = select.select([self.p.stdout], [], [], timeout * slow_factor())
        line = self.p.stdout.readline() if ready else ""
        if not line:
            raise TestFailure(f"xds_client.js gave no answer (exit {self.p.poll()}): "
                              f"{self.stderr_path.read_text()[-2000:]}")
        return json.loads(line)

    def until(self, pred, n, what, timeout=20.0, **cmd):
        """Repeats calls(n) until pred(answer); returns the answer that satisfied it."""
        last = {}

        def check():
            last["r"] = self.calls(n, **cmd)
            return pred(last["r"]) and last["r"]

        try:
            return wait_for(check, timeout, what, interval=0.05)
        except TimeoutError as e:
            raise TestFailure(f"{e}; last answer {last.get('r')}") from None

    def close(self):
        if self.p.poll() is None:
            try:
                self.p.stdin.close()
                self.p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.p.kill()
                self.p.wait()


def vn_spec(port):
    return {"listeners": [{"portMapping": {"port": port, "protocol": "grpc"}}],
            "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}}


def route_spec(wa, wb, retry=False):
    spec = {"grpcRoute": {"match": {"serviceName": "test.Echo"},
                          "action": {"weightedTargets": [{"virtualNode": "a", "weight": wa},
                                                         {"virtualNode": "b", "weight": wb}]}}}
    if retry:
        spec["grpcRoute"]["retryPolicy"] = {"maxRetries": 2, "grpcRetryEvents": ["unavailable"],
                                            "perRetryTimeout": {"unit": "s", "value": 5}}
    return spec


def make_mesh(ctx, x, a, b):
    """Mesh shop: nodes a and b (127.0.0.1, the two servers' ports), router r with route rt
    (100/0), virtual service echo.shop.local provided by r: all through the AWS CLI."""
    aws(ctx, x, "create-mesh", "--mesh-name", MESH)
    aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", "a",
        "--spec", vn_spec(a.port))
    aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", "b",
        "--spec", vn_spec(b.port))
    aws(ctx, x, "create-virtual-router", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--spec", {"listeners": [{"portMapping": {"port": 8080, "protocol": "grpc"}}]})
    aws(ctx, x, "create-route", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--route-name", "rt", "--spec", route_spec(100, 0))
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name",
        SERVICE, "--spec", {"provider": {"virtualRouter": {"virtualRouterName": "r"}}})


def update_route(ctx, x, spec):
    aws(ctx, x, "update-route", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--route-name", "rt", "--spec", spec)


def test_grpc_xds_client_follows_the_mesh(ctx):
    x = start_xds_server(ctx)
    a = start_grpc_server(ctx, "A")
    b = start_grpc_server(ctx, "B")
    make_mesh(ctx, x, a, b)
    c = XdsClient(ctx, x.xds_port, SERVICE)

    # 100/0: every call reaches A.
    r = c.calls(20)
    assert r["by"] == {"A": 20}, r

    # 0/100 through the CLI: the same channel follows the push.
    update_route(ctx, x, route_spec(0, 100))
    c.until(lambda r: r["by"] == {"B": 10}, 10, "all calls on B after 0/100")

    # 50/50: both serve (P(one side gets none of 60) = 2 * 2^-60).
    update_route(ctx, x, route_spec(50, 50))
    r = c.until(lambda r: r["by"].get("A", 0) > 0 and r["by"].get("B", 0) > 0, 60,
                "both A and B after 50/50")
    assert set(r["by"]) == {"A", "B"}, r

    # Retry policy: every call's first attempt fails UNAVAILABLE (x-fail-first 1 with a key
    # per call: server.js), the second succeeds. Without a policy every call fails; with
    # grpcRetryEvents [unavailable] every call succeeds.
    update_route(ctx, x, route_spec(100, 0))
    c.until(lambda r: r["by"] == {"A": 10}, 10, "back on A")
    flaky = {"metadata": {"x-fail-first": "1"}}
    r = c.calls(10, attempt_key="noretry", **flaky)
    assert r["by"] == {"error:14": 10}, r
    update_route(ctx, x, route_spec(100, 0, retry=True))
    keys = iter(range(1000))  # a fresh key per poll, so every first attempt fails
    deadline = time.monotonic() + 20 * slow_factor()
    while True:
        k = next(keys)
        r = c.calls(10, attempt_key=f"retry{k}", **flaky)
        if r["by"] == {"A": 10}:
            break
        if time.monotonic() > deadline:
            raise TestFailure(f"calls never all succeeded with the retry policy: {r}")
    attempts = a.stats()["attempts"]
    assert all(attempts[f"retry{k}-{i}"] == 2 for i in range(10)), attempts  # failed, retried

    # Deleting the virtual service deletes the Listener (the next LDS response lacks it):
    # grpc-js (without ignore_resource_deletion) drops the channel's config and fails the
    # calls UNAVAILABLE; its message, observed with 1.14, is "No connection established. Last
    # error: null. Resolution note: " (it does not name the missing listener).
    aws(ctx, x, "delete-virtual-service", "--mesh-name", MESH, "--virtual-service-name", SERVICE)
    c.until(lambda r: r["by"] == {"error:14": 3}, 3, "calls fail once the service is gone")

    # Created again (provided by node b now): pushed, and a new channel uses it. (The old
    # channel does not recover with grpc-js 1.14.1: the Listener comes back byte-identical,
    # and grpc-js compares it with the copy it cached before the deletion, which the deletion
    # did not clear, so it never tells its resolver. Its trace shows the push ACKed.)
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name",
        SERVICE, "--spec", {"provider": {"virtualNode": {"virtualNodeName": "b"}}})
    c2 = XdsClient(ctx, x.xds_port, SERVICE, name="xds-client-2")
    assert c2.calls(5)["by"] == {"B": 5}


def test_node_metadata_picks_the_mesh(ctx):
    x = start_xds_server(ctx)
    a = start_grpc_server(ctx, "A")
    b = start_grpc_server(ctx, "B")
    make_mesh(ctx, x, a, b)
    # A second mesh with the same service name, provided by a node on B.
    aws(ctx, x, "create-mesh", "--mesh-name", "other")
    aws(ctx, x, "create-virtual-node", "--mesh-name", "other", "--virtual-node-name", "nb",
        "--spec", vn_spec(b.port))
    aws(ctx, x, "create-virtual-service", "--mesh-name", "other", "--virtual-service-name",
        SERVICE, "--spec", {"provider": {"virtualNode": {"virtualNodeName": "nb"}}})
    c1 = XdsClient(ctx, x.xds_port, SERVICE, mesh=MESH, name="client-shop")
    c2 = XdsClient(ctx, x.xds_port, SERVICE, mesh="other", name="client-other")
    assert c1.calls(5)["by"] == {"A": 5}
    assert c2.calls(5)["by"] == {"B": 5}
    # No metadata and two meshes: no mesh, so the LDS answer is empty. grpc-js does not take
    # a listener it never had as deleted (only one it had and lost); the call waits for name
    # resolution until its deadline (observed with 1.14).
    c3 = XdsClient(ctx, x.xds_port, SERVICE, name="client-none")
    r = c3.calls(1, deadline_ms=2000)
    assert r["by"] == {"error:4": 1} and "name resolution" in r["details"][0], r


def probe(ctx, x, scenario, name=None, mesh=None, timeout=30.0, extra=()):
    node = need_node()
    argv = [node, str(GRPC_DIR / "ads_probe.js"), "--xds", f"127.0.0.1:{x.xds_port}",
            "--scenario", scenario, *extra]
    if name:
        argv += ["--name", name]
    if mesh:
        argv += ["--mesh", mesh]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=str(ctx.tmp))


def read_steps(p, timeout=30.0):
    """The probe's steps by name, once it has exited (it bounds its own waits)."""
    try:
        text, _ = p.communicate(timeout=timeout * slow_factor())
    except subprocess.TimeoutExpired:
        p.kill()
        raise TestFailure("ads_probe.js did not finish") from None
    return {s["step"]: s for s in map(json.loads, text.splitlines())}


def test_sotw_ack_nack_stale_and_push(ctx):
    need_node()
    x = start_xds_server(ctx)
    aws(ctx, x, "create-mesh", "--mesh-name", MESH)
    aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", "a",
        "--spec", vn_spec(5001))
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name",
        SERVICE, "--spec", {"provider": {"virtualNode": {"virtualNodeName": "a"}}})
    p = probe(ctx, x, "sotw", name=SERVICE)
    steps = {}
    try:
        for line in iter(p.stdout.readline, ""):
            step = json.loads(line)
            steps[step["step"]] = step
            if step["step"] == "ready":
                # Content changes (a's port): only CDS is subscribed to what changed.
                aws(ctx, x, "update-virtual-node", "--mesh-name", MESH,
                    "--virtual-node-name", "a", "--spec", vn_spec(5002))
        p.wait(30 * slow_factor())
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, (p.returncode, p.stderr.read())
    lds = steps["lds"]["resp"]
    assert lds["type"] == "lds" and lds["names"] == [SERVICE] and lds["any_types_ok"], lds
    assert lds["nonce"] and len(lds["version"]) == 16, lds
    # The ACK, the stale request and the NACK got no answer: the next one is the CDS one.
    nxt = steps["after_nack"]["resp"]
    assert nxt["type"] == "cds", nxt
    assert nxt["names"] == ["cds_egress_shop_a_grpc_5001"], nxt  # wildcard: every cluster
    assert nxt["nonce"] != lds["nonce"]
    # The change is pushed (CDS, new version, new name), and the NACKed LDS is not resent
    # (its content did not change): the push is the CDS one.
    push = steps["push"]["resp"]
    assert push is not None and push["type"] == "cds", push
    assert push["names"] == ["cds_egress_shop_a_grpc_5002"], push
    assert push["version"] != nxt["version"], push
    log = x.stderr_path.read_text() + x.stdout_path.read_text()
    assert "NACK of type.googleapis.com/envoy.config.listener.v3.Listener" in log, log[-2000:]
    assert "probe says no" in log


def test_raw_grpc_errors(ctx):
    need_node()
    x = start_xds_server(ctx)
    p = probe(ctx, x, "raw")
    steps = read_steps(p)
    assert p.returncode == 0, p.returncode
    res = {k: v["res"] for k, v in steps.items()}
    assert res["unknown_method"]["status"] == 200 and res["unknown_method"]["grpc_status"] == 12
    assert "unknown method" in res["unknown_method"]["grpc_message"], res
    assert res["content_type"]["status"] == 415, res
    assert res["oversize"]["grpc_status"] == 8, res  # RESOURCE_EXHAUSTED, before buffering
    assert res["undecodable"]["grpc_status"] == 3, res
    assert res["too_many_names"]["grpc_status"] == 3, res
    assert "resource_names" in res["too_many_names"]["grpc_message"], res
    assert res["cut_short"]["grpc_status"] == 13, res
    flood = res["partial_flood"]
    assert flood["failed"] == 4, flood
    assert all("partial requests" in m for m in flood["messages"]), flood


def test_hostile_bytes_leave_the_server_up(ctx):
    x = start_xds_server(ctx)
    garbage = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # not HTTP/2
        b"\x00" * 100000,  # not a preface
        # A preface, SETTINGS, then HEADERS for a stream 1 whose header block is junk.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x10\x01\x05\x00\x00\x00\x01" + b"\xff" * 16,
        # A preface and a DATA frame on a stream never opened.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        + b"\x00\x00\x05\x00\x00\x00\x00\x00\x07" + b"\x00\xff\xff\xff\xff",
    ]
    for g in garbage:
        s = socket.create_connection(("127.0.0.1", x.xds_port), timeout=5 * slow_factor())
        try:
            s.sendall(g)
            # The server closes (possibly after a GOAWAY): read until EOF, bounded.
            total = 0
            while total < 1 << 20:
                d = s.recv(65536)
                if not d:
                    break
                total += len(d)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
    # Idle connections are fine too (remora-xds bounds them at 1024; here 50).
    idle = [socket.create_connection(("127.0.0.1", x.xds_port)) for _ in range(50)]
    # The API still answers, and so does xDS.
    with HttpConn(x.port) as h:
        r = h.request("GET", "/v20190125/meshes")
        assert r.status == 200, r.status
    for s in idle:
        s.close()
    try:
        need_node()
    except Skip:
        return
    p = probe(ctx, x, "raw")
    steps = read_steps(p)
    assert steps["unknown_method"]["res"]["grpc_status"] == 12, steps


def test_sidecar_node_served_and_pushed(ctx):
    """A node whose id names a virtual node is its sidecar (App Mesh's Envoy shape): LDS and
    CDS by wildcard, then RDS and EDS by name, and pushes after API writes (EDS again after
    CDS)."""
    need_node()
    x = start_xds_server(ctx)
    aws(ctx, x, "create-mesh", "--mesh-name", MESH, "--spec",
        {"egressFilter": {"type": "ALLOW_ALL"}})
    for vn, port in (("a", 8080), ("b", 8080)):
        aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", vn,
            "--spec", {"listeners": [{"portMapping": {"port": port, "protocol": "http"}}],
                       "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}})
    aws(ctx, x, "create-virtual-router", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--spec", {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}]})

    def web(wa, wb):
        return {"httpRoute": {"match": {"prefix": "/"},
                              "action": {"weightedTargets": [{"virtualNode": "a", "weight": wa},
                                                             {"virtualNode": "b", "weight": wb}]}}}

    aws(ctx, x, "create-route", "--mesh-name", MESH, "--virtual-router-name", "r",
        "--route-name", "web", "--spec", web(100, 0))
    aws(ctx, x, "create-virtual-service", "--mesh-name", MESH, "--virtual-service-name",
        "svc.shop.local", "--spec", {"provider": {"virtualRouter": {"virtualRouterName": "r"}}})
    aws(ctx, x, "create-virtual-node", "--mesh-name", MESH, "--virtual-node-name", "front",
        "--spec", {"listeners": [{"portMapping": {"port": 9080, "protocol": "http"}}],
                   "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}},
                   "backends": [{"virtualService": {"virtualServiceName": "svc.shop.local"}}]})

    eds = "cds_egress_shop_a_http_8080,cds_egress_shop_b_http_8080"
    p = probe(ctx, x, "sidecar", extra=["--node-id", f"mesh/{MESH}/virtualNode/front",
                                        "--rds", "rds_egress_http_8080,rds_ingress_http_9080",
                                        "--eds", eds, "--pushes", "5"])
    steps, pushes = {}, []
    try:
        for line in iter(p.stdout.readline, ""):
            step = json.loads(line)
            if step["step"] == "push":
                pushes.append(step["resp"])
                if len(pushes) == 1:
                    # Egress filter DROP_ALL: the default chain and the "*" host go (LDS,
                    # RDS); the passthrough cluster stays for *.amazonaws.com (no CDS push).
                    aws(ctx, x, "update-mesh", "--mesh-name", MESH, "--spec",
                        {"egressFilter": {"type": "DROP_ALL"}})
                elif len(pushes) == 3:
                    # A target's outlier detection: its egress cluster changes (CDS)
                    aws(ctx, x, "update-virtual-node", "--mesh-name", MESH,
                        "--virtual-node-name", "a", "--spec",
                        {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"},
                                        "outlierDetection": {
                                            "maxServerErrors": 5,
                                            "interval": {"unit": "s", "value": 10},
                                            "baseEjectionDuration": {"unit": "s", "value": 30},
                                            "maxEjectionPercent": 50}}],
                         "serviceDiscovery": {"dns": {"hostname": "127.0.0.1"}}})
                continue
            steps[step["step"]] = step.get("resp")
            if step["step"] == "ready":
                # The route's weights: only the egress routes change.
                aws(ctx, x, "update-route", "--mesh-name", MESH, "--virtual-router-name", "r",
                    "--route-name", "web", "--spec", web(50, 50))
        p.wait(30 * slow_factor())
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, (p.returncode, p.stderr.read())
    assert steps["lds"]["names"] == ["lds_egress_0.0.0.0_15001", "lds_ingress_0.0.0.0_15000"]
    assert steps["cds"]["names"] == ["cds_egress_passthrough", "cds_egress_shop_a_http_8080",
                                     "cds_egress_shop_b_http_8080",
                                     "cds_ingress_shop_front_http_9080"], steps["cds"]
    assert steps["rds"]["names"] == ["rds_egress_http_8080", "rds_ingress_http_9080"]
    assert steps["eds"]["names"] == eds.split(","), steps["eds"]
    assert all(steps[t]["any_types_ok"] for t in ("lds", "cds", "rds", "eds"))
    # DROP_ALL: RDS, LDS; the route's weights: RDS; a target's outlier detection: CDS, then EDS
    # unchanged (a proxy warms the clusters CDS modified until their assignments come)
    assert [q and q["type"] for q in pushes] == ["rds", "lds", "rds", "cds", "eds"], pushes
    assert pushes[3]["names"] == steps["cds"]["names"], pushes[3]
    assert pushes[4]["names"] == eds.split(","), pushes[4]
    assert pushes[4]["version"] == steps["eds"]["version"], pushes[4]
    assert pushes[0]["names"] == ["rds_egress_http_8080", "rds_ingress_http_9080"]
    assert pushes[0]["version"] != steps["rds"]["version"]
    assert pushes[1]["names"] == steps["lds"]["names"]  # the egress listener lost its default
    log = x.stderr_path.read_text() + x.stdout_path.read_text()
    assert "sidecar of front" in log, log[-2000:]
