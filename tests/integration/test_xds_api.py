"""remora-xds, the App Mesh API (2019-01-25) over SQLite: driven by the real AWS CLI for the
main flows (what App Mesh users run today, pointed at --endpoint-url), and by raw HTTP for what
the CLI never sends (bad JSON, unknown fields, huge bodies, wrong paths and methods, slow
clients). The CLI tests skip when `aws` is not installed. They pass with aws-cli 1.45 (pip) and
with Debian 12's awscli 2.9.19, the one scripts/deps.sh installs when no `aws` is present;
REMORA_TEST_AWS=/usr/bin/aws picks a CLI other than the first `aws` on PATH."""

import json
import os
import re
import shutil
import signal
import subprocess

from lib import (REPO, HttpConn, Skip, TestFailure, build_request, parse_responses,
                 raw_exchange, slow_factor, wait_closed)

VN_SPEC = {"listeners": [{"portMapping": {"port": 8080, "protocol": "http"}}],
           "serviceDiscovery": {"dns": {"hostname": "vn.local"}}}


def aws(ctx, xds, *args, ok=True, creds=("test", "test"), region="us-west-2"):
    """Runs `aws appmesh ARGS` against ``xds``. With ``ok``, a failure raises and the parsed
    JSON output is returned; otherwise the CompletedProcess (text). ``creds``: the
    (access key id, secret) the CLI signs with; None: --no-sign-request."""
    exe = os.environ.get("REMORA_TEST_AWS") or shutil.which("aws")  # e.g. /usr/bin/aws to try Debian's
    if exe is None:
        raise Skip("the AWS CLI (aws) is not installed")
    akid, secret = creds or ("test", "test")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=akid, AWS_SECRET_ACCESS_KEY=secret, AWS_PAGER="",
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1",
               AWS_CONFIG_FILE=str(ctx.tmp / "aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(ctx.tmp / "aws-credentials"))
    argv = [exe, "appmesh", *[json.dumps(a) if isinstance(a, (dict, list)) else str(a)
                              for a in args],
            "--endpoint-url", f"http://127.0.0.1:{xds.port}", "--region", region,
            "--output", "json", *([] if creds else ["--no-sign-request"])]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60 * slow_factor())
    if not ok:
        return r
    if r.returncode != 0:
        raise TestFailure(f"{' '.join(argv)}: exit {r.returncode}\n{r.stderr}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def aws_error(ctx, xds, *args, **kw):
    """Runs a CLI command expected to fail; returns its stderr's error line, in aws-cli 1's
    words: aws-cli 2 (Debian 12's awscli 2.9) adds " (reached max retries: N)" after the
    operation's name, which says nothing about the server's answer. ``kw``: as aws()'s."""
    r = aws(ctx, xds, *args, ok=False, **kw)
    assert r.returncode != 0, r.stdout
    return re.sub(r" \(reached max retries: \d+\)", "", r.stderr.strip())


def api(port, method, path, body=None, headers=None):
    """One raw request; body dicts are sent as JSON. Returns the Response."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    hs = dict(headers or {})
    if body is not None and "Content-Type" not in hs:
        hs["Content-Type"] = "application/json"
    with HttpConn(port) as c:
        return c.request(method, path, hs, body)


def test_cli_mesh_and_virtual_node_flow(ctx):
    x = ctx.start_xds()
    m = aws(ctx, x, "create-mesh", "--mesh-name", "shop")["mesh"]
    assert m["meshName"] == "shop"
    assert m["metadata"]["arn"] == "arn:aws:appmesh:us-west-2:111122223333:mesh/shop"
    assert m["metadata"]["version"] == 1
    assert m["spec"] == {"egressFilter": {"type": "DROP_ALL"}}
    assert m["status"] == {"status": "ACTIVE"}
    err = aws_error(ctx, x, "create-mesh", "--mesh-name", "shop")
    assert err == ("An error occurred (ConflictException) when calling the CreateMesh operation: "
                   "mesh shop already exists"), err
    m = aws(ctx, x, "update-mesh", "--mesh-name", "shop",
            "--spec", {"egressFilter": {"type": "ALLOW_ALL"}})["mesh"]
    assert m["metadata"]["version"] == 2 and m["spec"]["egressFilter"]["type"] == "ALLOW_ALL"

    vn = aws(ctx, x, "create-virtual-node", "--mesh-name", "shop", "--virtual-node-name", "cart",
             "--spec", VN_SPEC, "--tags", "key=team,value=a")["virtualNode"]
    assert vn["virtualNodeName"] == "cart" and vn["meshName"] == "shop"
    assert vn["spec"] == VN_SPEC
    assert vn["metadata"]["arn"].endswith(":mesh/shop/virtualNode/cart")
    vn2 = dict(VN_SPEC, listeners=[{"portMapping": {"port": 9090, "protocol": "grpc"}}])
    got = aws(ctx, x, "update-virtual-node", "--mesh-name", "shop", "--virtual-node-name", "cart",
              "--spec", vn2)["virtualNode"]
    assert got["metadata"]["version"] == 2 and got["spec"] == vn2
    got = aws(ctx, x, "describe-virtual-node", "--mesh-name", "shop",
              "--virtual-node-name", "cart")["virtualNode"]
    assert got["spec"] == vn2 and got["metadata"]["uid"] == vn["metadata"]["uid"]
    lst = aws(ctx, x, "list-virtual-nodes", "--mesh-name", "shop")
    assert [v["virtualNodeName"] for v in lst["virtualNodes"]] == ["cart"]
    assert lst["virtualNodes"][0]["version"] == 2

    err = aws_error(ctx, x, "delete-mesh", "--mesh-name", "shop")
    assert err == ("An error occurred (ResourceInUseException) when calling the DeleteMesh "
                   "operation: mesh shop still has resources: virtual node cart"), err
    got = aws(ctx, x, "delete-virtual-node", "--mesh-name", "shop",
              "--virtual-node-name", "cart")["virtualNode"]
    assert got["status"]["status"] == "DELETED"
    aws(ctx, x, "delete-mesh", "--mesh-name", "shop")
    err = aws_error(ctx, x, "describe-mesh", "--mesh-name", "shop")
    assert err == ("An error occurred (NotFoundException) when calling the DescribeMesh "
                   "operation: mesh shop not found"), err


def test_cli_paging(ctx):
    x = ctx.start_xds()
    names = [f"mesh-{i:02d}" for i in range(7)]
    for n in reversed(names):
        assert api(x.port, "PUT", "/v20190125/meshes", {"meshName": n}).status == 200
    # The CLI follows nextToken through every page of 2.
    got = aws(ctx, x, "list-meshes", "--page-size", "2")
    assert [m["meshName"] for m in got["meshes"]] == names
    # --max-items stops after 3 and hands out a token; the rest follows from it.
    first = aws(ctx, x, "list-meshes", "--max-items", "3", "--page-size", "2")
    assert [m["meshName"] for m in first["meshes"]] == names[:3]
    rest = aws(ctx, x, "list-meshes", "--starting-token", first["NextToken"], "--page-size", "2")
    assert [m["meshName"] for m in rest["meshes"]] == names[3:]


def test_cli_services_routers_routes(ctx):
    x = ctx.start_xds()
    for body in ({"meshName": "m"},):
        assert api(x.port, "PUT", "/v20190125/meshes", body).status == 200
    assert api(x.port, "PUT", "/v20190125/meshes/m/virtualNodes",
               {"virtualNodeName": "v1", "spec": VN_SPEC}).status == 200
    vr = aws(ctx, x, "create-virtual-router", "--mesh-name", "m", "--virtual-router-name", "vr",
             "--spec", {"listeners": [{"portMapping": {"port": 80, "protocol": "http"}}]})
    assert vr["virtualRouter"]["virtualRouterName"] == "vr"
    vs = aws(ctx, x, "create-virtual-service", "--mesh-name", "m",
             "--virtual-service-name", "cart.shop.local",
             "--spec", {"provider": {"virtualRouter": {"virtualRouterName": "vr"}}})
    assert vs["virtualService"]["metadata"]["arn"].endswith(
        ":mesh/m/virtualService/cart.shop.local")
    route_spec = {"priority": 10, "httpRoute": {
        "match": {"prefix": "/"},
        "action": {"weightedTargets": [{"virtualNode": "v1", "weight": 100}]},
        "retryPolicy": {"maxRetries": 2, "perRetryTimeout": {"unit": "ms", "value": 500},
                        "httpRetryEvents": ["server-error"]}}}
    r = aws(ctx, x, "create-route", "--mesh-name", "m", "--virtual-router-name", "vr",
            "--route-name", "all", "--spec", route_spec)["route"]
    assert r["routeName"] == "all" and r["virtualRouterName"] == "vr" and r["spec"] == route_spec
    assert r["metadata"]["arn"].endswith(":mesh/m/virtualRouter/vr/route/all")
    lst = aws(ctx, x, "list-routes", "--mesh-name", "m", "--virtual-router-name", "vr")
    assert [(e["routeName"], e["virtualRouterName"]) for e in lst["routes"]] == [("all", "vr")]
    err = aws_error(ctx, x, "create-route", "--mesh-name", "m", "--virtual-router-name", "vr",
                    "--route-name", "bad", "--spec",
                    {"tcpRoute": {"action": {"weightedTargets": [
                        {"virtualNode": "ghost", "weight": 1}]}}})
    assert err == ("An error occurred (NotFoundException) when calling the CreateRoute "
                   "operation: spec.tcpRoute.action.weightedTargets[0].virtualNode: virtual node "
                   "ghost not found in mesh m"), err
    err = aws_error(ctx, x, "delete-virtual-router", "--mesh-name", "m",
                    "--virtual-router-name", "vr")
    assert "(ResourceInUseException)" in err and "route all" in err, err
    aws(ctx, x, "delete-route", "--mesh-name", "m", "--virtual-router-name", "vr",
        "--route-name", "all")
    err = aws_error(ctx, x, "delete-virtual-router", "--mesh-name", "m",
                    "--virtual-router-name", "vr")
    assert "in use by virtual service cart.shop.local" in err, err


def test_cli_gateways_and_tags(ctx):
    x = ctx.start_xds()
    assert api(x.port, "PUT", "/v20190125/meshes", {"meshName": "m"}).status == 200
    assert api(x.port, "PUT", "/v20190125/meshes/m/virtualServices",
               {"virtualServiceName": "s", "spec": {}}).status == 200
    gw = aws(ctx, x, "create-virtual-gateway", "--mesh-name", "m", "--virtual-gateway-name", "gw",
             "--spec", {"listeners": [{"portMapping": {"port": 8443, "protocol": "http"}}]})
    arn = gw["virtualGateway"]["metadata"]["arn"]
    assert arn == "arn:aws:appmesh:us-west-2:111122223333:mesh/m/virtualGateway/gw"
    gr = aws(ctx, x, "create-gateway-route", "--mesh-name", "m", "--virtual-gateway-name", "gw",
             "--gateway-route-name", "to-s", "--spec",
             {"httpRoute": {"match": {"prefix": "/s"}, "action": {
                 "target": {"virtualService": {"virtualServiceName": "s"}}}}})
    assert gr["gatewayRoute"]["virtualGatewayName"] == "gw"
    aws(ctx, x, "tag-resource", "--resource-arn", arn, "--tags", "key=env,value=dev")
    tags = aws(ctx, x, "list-tags-for-resource", "--resource-arn", arn)
    assert tags["tags"] == [{"key": "env", "value": "dev"}]


def test_restart_keeps_data(ctx):
    x = ctx.start_xds()
    r = api(x.port, "PUT", "/v20190125/meshes", {"meshName": "keep"})
    assert r.status == 200
    before = r.json()
    r = api(x.port, "PUT", "/v20190125/meshes/keep/virtualNodes",
            {"virtualNodeName": "vn", "spec": VN_SPEC, "clientToken": "t1"})
    assert r.status == 200
    r = api(x.port, "PUT", "/v20190125/meshes/keep/virtualNodes/vn", {"spec": VN_SPEC})
    vn_before = r.json()
    assert vn_before["metadata"]["version"] == 2
    x.signal(signal.SIGTERM)
    assert x.wait() == 0
    y = ctx.start_xds(db=x.db, name="xds-again")
    assert api(y.port, "GET", "/v20190125/meshes/keep").json() == before
    assert api(y.port, "GET", "/v20190125/meshes/keep/virtualNodes/vn").json() == vn_before
    # The schema version is in the file, for later migrations.
    out = subprocess.run(["sqlite3", str(x.db), "PRAGMA user_version; PRAGMA journal_mode;"],
                         capture_output=True, text=True) if shutil.which("sqlite3") else None
    if out is not None:
        assert out.stdout.split() == ["1", "wal"], out.stdout


def test_raw_errors_as_aws_sends_them(ctx):
    x = ctx.start_xds()
    p = x.port
    r = api(p, "PUT", "/v20190125/meshes", '{"meshName": ')
    assert r.status == 400 and r.header("x-amzn-ErrorType") == "SerializationException"
    assert r.header("content-type") == "application/json"
    assert r.json()["message"].startswith("body: invalid JSON"), r.json()
    r = api(p, "PUT", "/v20190125/meshes", {"meshName": "m", "spec": {"egresFilter": {}}})
    assert r.status == 400 and r.header("x-amzn-ErrorType") == "BadRequestException"
    assert r.json() == {"message": "spec.egresFilter: unknown field"}
    r = api(p, "PUT", "/v20190125/meshes", {"meshName": "m"})
    assert r.status == 200
    r = api(p, "PUT", "/v20190125/meshes/m/virtualNodes", {"virtualNodeName": "v", "spec": {
        "listeners": [{"portMapping": {"port": 70000, "protocol": "http"}}]}})
    assert r.status == 400
    assert r.json() == {"message": "spec.listeners[0].portMapping.port: must be 1-65535"}
    r = api(p, "GET", "/v20190125/nope")
    assert r.status == 404 and r.header("x-amzn-ErrorType") == "UnknownOperationException"
    r = api(p, "GET", "/")
    assert r.status == 404
    r = api(p, "POST", "/v20190125/meshes", {})
    assert r.status == 405 and r.header("allow") == "GET, PUT"
    with HttpConn(p) as c:  # answered, then closed (the close may follow the answer a moment)
        r = c.request("PUT", "/v20190125/meshes", {"Content-Type": "text/plain"}, "meshName=m")
        assert r.status == 415
        assert c.closed(5 * slow_factor())
    # The SigV4 header the CLI sends is accepted (and not checked).
    r = api(p, "GET", "/v20190125/meshes/m", headers={
        "Authorization": "AWS4-HMAC-SHA256 Credential=test/20261128/us-west-2/appmesh/aws4_request, "
                         "SignedHeaders=host, Signature=00"})
    assert r.status == 200


def test_raw_limits_and_keep_alive(ctx):
    x = ctx.start_xds(extra_args=["--request-timeout-ms", "400", "--idle-timeout-ms", "300"])
    p = x.port
    # An idle keep-alive connection is closed after --idle-timeout-ms, one in use is not.
    with HttpConn(p) as c:
        assert c.request("GET", "/v20190125/meshes").status == 200
        assert not c.closed()
        wait_closed(c.sock, timeout=3)
    # Keep-alive and pipelining: three requests in one write, three answers in order.
    reqs = b"".join(build_request("GET", f"/v20190125/meshes/{n}") for n in ("a", "b", "c"))
    data = raw_exchange(p, reqs, until=lambda d: d.count(b"HTTP/1.1 404") == 3)
    assert [r.status for r in parse_responses(data)] == [404, 404, 404]
    # A declared body over 1 MiB is refused before it is read, and the connection closed.
    data = raw_exchange(p, [b"PUT /v20190125/meshes HTTP/1.1\r\nHost: x\r\n"
                            b"Content-Length: 2000000\r\n\r\n{"], timeout=3)
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]
    assert data.end == "eof"
    # A chunked body that grows past the limit, too.
    big = [b"PUT /v20190125/meshes HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"]
    big += [b"%x\r\n%s\r\n" % (65536, b" " * 65536)] * 17
    data = raw_exchange(p, big, timeout=3)
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]
    # A head over 64 KiB.
    data = raw_exchange(p, b"GET /v20190125/meshes HTTP/1.1\r\nX-Big: " + b"a" * 70000 +
                        b"\r\n\r\n", timeout=3)
    assert data.startswith(b"HTTP/1.1 431 "), data[:100]
    # Malformed HTTP.
    data = raw_exchange(p, b"GET /v20190125/meshes HTTP/1.1\r\nHost x\r\n\r\n", timeout=3)
    assert data.startswith(b"HTTP/1.1 400 "), data[:100]
    # A request that stalls halfway gets 408 after --request-timeout-ms, then a close.
    data = raw_exchange(p, b"GET /v20190125/meshes HTTP/1.1\r\nHost: x\r\n", timeout=5)
    assert data.startswith(b"HTTP/1.1 408 ") and data.end == "eof", data
    # The server still serves.
    assert api(p, "GET", "/v20190125/meshes").json() == {"meshes": []}


def test_bad_flags_and_db(ctx):
    exe = ctx.bin("remora-xds")
    if not exe.exists():
        raise Skip("remora-xds is not built")
    r = subprocess.run([exe, "--listen", "127.0.0.1:0"], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([exe, "--db", ctx.tmp / "d", "--account-id", "12"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "12 digits" in r.stderr
    (ctx.tmp / "notadb").write_bytes(b"this is not a database" * 100)
    r = subprocess.run([exe, "--db", ctx.tmp / "notadb", "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "notadb" in r.stderr, r.stderr


def test_cli_examples(ctx):
    """examples/appmesh/ as its README runs it: --cli-input-json files, in order."""
    x = ctx.start_xds()
    ex = sorted((REPO / "examples" / "appmesh").glob("*.json"))
    cmds = {"mesh": "create-mesh", "virtual-node": "create-virtual-node",
            "virtual-router": "create-virtual-router", "route": "create-route",
            "virtual-service": "create-virtual-service"}
    assert len(ex) == 7  # 7-virtual-node-front: a sidecar node whose backend is the service
    for path in ex:
        kind = path.stem.split("-", 1)[1]
        kind = "virtual-node" if kind.startswith("virtual-node") else kind
        aws(ctx, x, cmds[kind], "--cli-input-json", f"file://{path}")
    vs = aws(ctx, x, "describe-virtual-service", "--mesh-name", "colorapp",
             "--virtual-service-name", "color.colorapp.local")["virtualService"]
    assert vs["spec"]["provider"]["virtualRouter"]["virtualRouterName"] == "color-router"
    front = aws(ctx, x, "describe-virtual-node", "--mesh-name", "colorapp",
                "--virtual-node-name", "front")["virtualNode"]
    assert front["spec"]["backends"][0]["virtualService"]["virtualServiceName"] == \
        "color.colorapp.local"
