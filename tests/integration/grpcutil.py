"""gRPC helpers for the integration tests: a real @grpc/grpc-js server and client under Node.js
(tests/grpc/server.js, client.js; see their headers for the controls).

    need_node()                          -> raises Skip when node is not installed
    start_grpc_server(ctx, name="grpc")  -> GrpcServer  .port .stats_port .stats() .reset_stats()
    grpc_call(port, kind="unary", metadata=None, deadline_ms=None, messages=None)
        -> {"code", "code_name", "details", "messages", "headers", "trailers", "elapsed_ms"}

tests/grpc/node_modules comes from `npm ci` (scripts/deps.sh runs it when it is missing).
"""

import json
import shutil
import subprocess

from lib import REPO, Proc, Skip, TestFailure, http_request, slow_factor, wait_for

GRPC_DIR = REPO / "tests" / "grpc"

# grpc status codes by name (the numbers are the protocol's).
OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND = 0, 1, 2, 3, 4, 5
PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED = 7, 8, 9, 10
UNIMPLEMENTED, INTERNAL, UNAVAILABLE, UNAUTHENTICATED = 12, 13, 14, 16


def need_node():
    """Skips the test when Node.js is absent; fails it (with the fix) when the npm packages
    are missing, since scripts/deps.sh installs them wherever node is."""
    node = shutil.which("node")
    if node is None:
        raise Skip("node is not installed (scripts/deps.sh installs nodejs and npm)")
    if not (GRPC_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        raise TestFailure("tests/grpc/node_modules is missing: run scripts/deps.sh "
                          "(or `npm ci` in tests/grpc)")
    return node


class GrpcServer(Proc):
    """A running tests/grpc/server.js."""

    port = None
    stats_port = None

    def stats(self):
        """{"calls": N, "by_method": {...}, "attempts": {key: N}, "last_metadata": {...}}."""
        r = http_request(self.stats_port, "GET", "/stats")
        if r.status != 200:
            raise TestFailure(f"{self.name}: stats answered {r.status}")
        return r.json()

    def reset_stats(self):
        r = http_request(self.stats_port, "POST", "/reset")
        if r.status != 200:
            raise TestFailure(f"{self.name}: reset answered {r.status}")
        return r.json()


def start_grpc_server(ctx, name="grpc", timeout=10.0):
    node = need_node()
    port_file = ctx.tmp / f"grpc-{name}.port"
    p = ctx.spawn(f"grpc-{name}", [node, GRPC_DIR / "server.js", "--name", name,
                                   "--port-file", port_file], managed=True, cls=GrpcServer)

    def ready():
        p._check_alive()
        text = port_file.read_text() if port_file.exists() else ""
        return text.endswith("\n") and json.loads(text)

    info = wait_for(ready, timeout, f"gRPC server {name} port file")
    p.port, p.stats_port = info["port"], info["stats_port"]
    return p


def grpc_call(port, kind="unary", metadata=None, deadline_ms=None, messages=None,
              host="127.0.0.1", authority=None, timeout=20.0):
    """One call through tests/grpc/client.js; returns its JSON result. ``metadata`` is a dict
    or a list of (key, value) pairs (repeat a key to send it twice); ``messages`` the request
    (unary, server) or the streamed request messages (client, bidi)."""
    node = need_node()
    argv = [node, str(GRPC_DIR / "client.js"), "--target", f"{host}:{port}", "--kind", kind]
    items = metadata.items() if isinstance(metadata, dict) else (metadata or [])
    for k, v in items:
        argv += ["--metadata", f"{k}={v}"]
    if deadline_ms is not None:
        argv += ["--deadline-ms", str(int(deadline_ms))]
    if authority is not None:
        argv += ["--authority", authority]
    for m in messages or []:
        argv += ["--message", json.dumps(m)]
    p = subprocess.run(argv, capture_output=True, timeout=timeout * slow_factor())
    lines = p.stdout.decode(errors="replace").strip().splitlines()
    if p.returncode != 0 or not lines:
        raise TestFailure(f"client.js exited {p.returncode}: {p.stderr.decode(errors='replace')}")
    return json.loads(lines[-1])
