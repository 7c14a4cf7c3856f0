"""Envoy's bootstrap flags: `-c FILE --config-yaml TEXT` merges the text into the file's
bootstrap with protobuf's MergeFrom (scalars of the text win, messages merge, lists append)."""

import json
import subprocess

from lib import build_dir, http_request
from proxyutil import proxy_config


def _validate(ctx, path, override):
    p = subprocess.run([str(build_dir() / "remora"), "--mode", "validate", "-c", str(path),
                        "--config-yaml", override], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_config_yaml_merges_into_file(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    # The file routes /b to cluster "b", which only the override defines: the file alone does
    # not validate, the merge does. The override also replaces node.id (a scalar) and keeps
    # node.cluster (not set in the override).
    cfg = proxy_config({"a": [a.port]}, routes=[("/b", "b"), ("/", "a")])
    cfg["node"] = {"id": "from-file", "cluster": "file-cluster"}
    override = json.dumps({
        "node": {"id": "from-flag"},
        "static_resources": {"clusters": [{
            "name": "b", "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": "b", "endpoints": [{"lb_endpoints": [{
                "endpoint": {"address": {"socket_address": {
                    "address": "127.0.0.1", "port_value": b.port}}}}]}]}}]},
    })
    r = ctx.start_remora(cfg, extra_args=["--config-yaml", override])
    ra = http_request(r.port(), path="/x")
    rb = http_request(r.port(), path="/b/x")
    assert ra.status == 200 and ra.header("x-upstream-name") == "a", ra
    assert rb.status == 200 and rb.header("x-upstream-name") == "b", rb
    info = r.admin("GET", "/server_info").json()
    assert info["node"]["id"] == "from-flag", info["node"]
    assert info["node"]["cluster"] == "file-cluster", info["node"]
    dump = r.admin("GET", "/config_dump").text
    assert '"name": "a"' in dump and '"name": "b"' in dump

    # Without the override's cluster, the file alone is rejected.
    code, out = _validate(ctx, r.config_path, "{}")
    assert code != 0 and "unknown cluster 'b'" in out, out
    code, out = _validate(ctx, r.config_path, override)
    assert code == 0, out
    code, out = _validate(ctx, r.config_path, "static_resources: {clusterz: []}")
    assert code != 0 and "--config-yaml: static_resources.clusterz: unknown field" in out, out
    # A merge that leaves the file's route without its cluster fails on the merged bootstrap.
    cfg2 = proxy_config({"a": [a.port]}, routes=[("/", "missing")])
    path2 = ctx.tmp / "merge-missing.yaml"
    path2.write_text(json.dumps(cfg2))
    code, out = _validate(ctx, path2, "node: {id: x}")
    assert code != 0 and "missing" in out, out
