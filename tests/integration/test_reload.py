"""Route configuration that changes while remora runs (RDS from a file, remora issue 4): a
weighted 90/10 split becomes 50/50 for the next request, on connections already open (HTTP/1.1
keep-alive and h2c), while requests in flight finish on the routes they started with; invalid
updates are rejected with their field path and change nothing; startup needs a valid file; old
tables are freed (RSS stays flat over 50 updates, and the ASan run checks leaks at exit)."""

import os
import subprocess
import threading
import time

from lib import (REPO, HttpConn, Skip, is_sanitized, proc_rss_kb, slow_factor, to_yaml,
                 wait_for)
from proxyutil import proxy_config, stats
from test_h2 import _conn, frame, headers_get, read_frames

RC_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
PREFIX = "http.ingress_http.rds.rc."


def rds_doc(version, routes, name="rc", vh_extra=None, rc_extra=None):
    vh = {"name": "vh", "domains": ["*"], "routes": routes}
    vh.update(vh_extra or {})
    rc = {"@type": RC_TYPE, "name": name, "virtual_hosts": [vh]}
    rc.update(rc_extra or {})
    return {"version_info": version, "resources": [rc]}


def to(cluster, prefix="/"):
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster}}


def weighted(wa, wb, prefix="/"):
    return {"match": {"prefix": prefix},
            "route": {"weighted_clusters": {"clusters": [{"name": "a", "weight": wa},
                                                         {"name": "b", "weight": wb}]}}}


def move_into_place(path, text):
    """Writes ``text`` next to ``path`` and renames it over ``path`` (an atomic replace)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.rename(tmp, path)


def write_doc(path, doc):
    move_into_place(path, to_yaml(doc) + "\n")


def rds_block(path, watched_dir=None, legacy=False):
    if legacy:
        cs = {"path": str(path)}
    else:
        pcs = {"path": str(path)}
        if watched_dir is not None:
            pcs["watched_directory"] = {"path": str(watched_dir)}
        cs = {"path_config_source": pcs}
    cs["resource_api_version"] = "V3"
    return {"route_config_name": "rc", "config_source": cs}


def rds_config(ctx, a, b, path, **kw):
    cfg = proxy_config({"a": [a.port], "b": [b.port]})
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["route_config"]
    hcm["rds"] = rds_block(path, **kw)
    return cfg


def start(ctx, doc, concurrency=2, **kw):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    d = ctx.tmp / "rds"
    d.mkdir(exist_ok=True)
    path = d / "rds.yaml"
    if doc is not None:
        write_doc(path, doc)
    r = ctx.start_remora(rds_config(ctx, a, b, path, **kw), concurrency=concurrency)
    return r, path


def st(r, name):
    return stats(r, "rds").get(PREFIX + name, 0)


def wait_rds(r, name, want, timeout=5.0):
    wait_for(lambda: st(r, name) >= want, timeout * slow_factor(), f"{PREFIX}{name} >= {want}")


def who(resp):
    assert resp.status == 200, (resp.status, resp.body)
    return resp.header("x-upstream-name")


def split(conns, n):
    """Sends ``n`` GETs round-robin over keep-alive ``conns``; returns the share sent to a."""
    got_a = 0
    for i in range(n):
        got_a += who(conns[i % len(conns)].request("GET", "/")) == "a"
    return got_a / n


# ---- the scenario ----

def test_reload_weighted_90_10_to_50_50_without_dropping_in_flight(ctx):
    doc1 = rds_doc("v1", [to("a", "/slow"), weighted(90, 10)])
    r, path = start(ctx, doc1)
    conns = [HttpConn(r.port()) for _ in range(4)]
    before = split(conns, 600)
    assert 0.85 <= before <= 0.95, before

    # Long requests in flight across the change: /slow goes to a under v1 and does not exist
    # under v2, so a 200 from a proves each finished on the table it started with.
    slow = []
    for _ in range(3):
        c = HttpConn(r.port(), timeout=10)
        c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-upstream-delay-ms: 1500\r\n\r\n")
        slow.append(c)

    # Requests flowing continuously through the change, on their own keep-alive connections.
    stop = threading.Event()
    flow = {"n": 0, "errors": []}

    def pump():
        c = HttpConn(r.port())
        deadline = time.monotonic() + 30 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                resp = c.request("GET", "/")
                if resp.status != 200:
                    flow["errors"].append(resp.status)
                flow["n"] += 1
            except (OSError, EOFError) as e:
                flow["errors"].append(repr(e))
                c = HttpConn(r.port())
        c.close()

    t = threading.Thread(target=pump)
    t.start()
    try:
        wait_for(lambda: flow["n"] >= 50, 10 * slow_factor(), "traffic flowing")
        write_doc(path, rds_doc("v2", [weighted(50, 50)]))
        wait_rds(r, "update_success", 1)
        n0 = flow["n"]
        wait_for(lambda: flow["n"] >= n0 + 50, 10 * slow_factor(), "traffic after the change")
    finally:
        stop.set()
        t.join()
    assert flow["errors"] == [], flow["errors"][:10]

    # The next requests, on the connections opened before the change, split 50/50.
    after = split(conns, 2000)
    assert 0.45 <= after <= 0.55, after
    for c in slow:
        resp = c.read_response()
        assert resp.status == 200 and resp.header("x-upstream-name") == "a", resp
    # ...and /slow is gone for new requests (v2 has no such route).
    assert who(conns[0].request("GET", "/slow")) in ("a", "b")  # "/" catches it now
    s = stats(r, "rds")
    assert s[PREFIX + "update_attempt"] == 1 and s[PREFIX + "config_reload"] == 1, s
    assert s[PREFIX + "update_rejected"] == 0, s


def test_reload_applies_on_open_keepalive_connection(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]))
    c = HttpConn(r.port())
    assert who(c.request()) == "a"
    write_doc(path, rds_doc("v2", [to("b")]))
    wait_rds(r, "update_success", 1)
    # The very next request on the same connection routes on v2 (no sleeping, no retry).
    assert who(c.request()) == "b"
    assert who(c.request()) == "b"


def test_reload_h2c_stream_on_open_connection_gets_new_routes(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]))
    s = _conn(r.port())

    def body_of(sid):
        s.sendall(headers_get(sid))
        got = b""
        deadline = time.monotonic() + 5 * slow_factor()
        while time.monotonic() < deadline:
            for f in read_frames(s, 0.2):
                assert f is not None, "connection closed"
                if f[0] == 0 and f[2] == sid:
                    got += f[3]
                    if f[1] & 1:
                        return got
                if f[0] == 3 and f[2] == sid:
                    raise AssertionError(f"stream {sid} reset")
        raise AssertionError(f"no response on stream {sid}")

    assert body_of(1) == b"a\n"
    write_doc(path, rds_doc("v2", [to("b")]))
    wait_rds(r, "update_success", 1)
    assert body_of(3) == b"b\n"
    s.sendall(frame(7, 0, 0, bytes(8)))  # GOAWAY
    s.close()


# ---- rejected and empty updates ----

def test_reload_invalid_updates_rejected_with_field_path(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]))
    c = HttpConn(r.port())
    bad = [
        (to_yaml(rds_doc("bad1", [{"match": {"prefix": "/"},
                                   "route": {"cluster": "a", "bogus": 1}}])),
         "resources[0].virtual_hosts[0].routes[0].route.bogus: unknown field"),
        (to_yaml(rds_doc("bad2", [to("nope")], rc_extra={"validate_clusters": True})),
         "resources[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'nope'"),
        ("version_info: bad3\nresources: [ {\n", "YAML"),
        (to_yaml(rds_doc("bad4", [to("b")], name="other")),
         "resources[0].name: unexpected RDS configuration (expecting 'rc'): 'other'"),
        (to_yaml({"version_info": "bad5", "resources": [
            {"@type": RC_TYPE, "name": "rc"}, {"@type": RC_TYPE, "name": "rc"}]}),
         "unexpected RDS resource length: 2"),
    ]
    for i, (text, want) in enumerate(bad, 1):
        move_into_place(path, text + "\n")
        wait_rds(r, "update_rejected", i)
        r.wait_output(want)
        assert str(path) in r.stderr
        assert who(c.request()) == "a"  # the last good table still serves
    s = stats(r, "rds")
    assert s[PREFIX + "update_success"] == 0 and s[PREFIX + "config_reload"] == 0, s
    assert s[PREFIX + "update_attempt"] == len(bad), s

    # An empty response keeps the routes too (Envoy's update_empty).
    write_doc(path, {"version_info": "empty", "resources": []})
    wait_rds(r, "update_empty", 1)
    assert who(c.request()) == "a"
    # Then a good one goes live.
    write_doc(path, rds_doc("v2", [to("b")]))
    wait_for(lambda: st(r, "config_reload") == 1, 5 * slow_factor(), "config_reload")
    assert who(c.request()) == "b"


def test_reload_unchanged_content_is_no_reload_and_version_gauge(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]))
    v1 = st(r, "version")
    assert v1 != 0
    # The same content again: accepted, but no new table goes live.
    write_doc(path, rds_doc("v1", [to("a")]))
    wait_rds(r, "update_success", 1)
    assert st(r, "config_reload") == 0 and st(r, "version") == v1
    # Same routes under a new version_info: still no reload, but the version gauge moves.
    write_doc(path, rds_doc("v1b", [to("a")]))
    wait_rds(r, "update_success", 2)
    v1b = st(r, "version")
    assert st(r, "config_reload") == 0 and v1b not in (0, v1)
    write_doc(path, rds_doc("v2", [to("b")]))
    wait_rds(r, "update_success", 3)
    assert st(r, "config_reload") == 1 and st(r, "version") not in (0, v1, v1b)
    now_ms = time.time() * 1000
    for g in ("config_reload_time_ms", "update_time"):
        assert abs(st(r, g) - now_ms) < 60000, (g, st(r, g), now_ms)
    # Prometheus and JSON show them with Envoy's names and tags.
    prom = r.admin("GET", "/stats/prometheus").text
    assert ('envoy_http_rds_update_success{envoy_http_conn_manager_prefix="ingress_http",'
            'envoy_rds_route_config="rc"} 3') in prom, prom
    js = r.admin("GET", "/stats?format=json").json()
    names = {e.get("name"): e.get("value") for e in js["stats"] if "name" in e}
    assert names.get(PREFIX + "config_reload") == 1, names
    # /config_dump shows the live route config and its version.
    dump = r.admin("GET", "/config_dump").json()
    rcd = [c for c in dump["configs"] if c["@type"].endswith("RoutesConfigDump")]
    dyn = rcd[0]["dynamic_route_configs"]
    assert dyn[0]["version_info"] == "v2" and dyn[0]["route_config"]["name"] == "rc", dyn


def test_reload_in_place_write_and_legacy_path(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]), legacy=True)
    c = HttpConn(r.port())
    assert who(c.request()) == "a"
    path.write_text(to_yaml(rds_doc("v2", [to("b")])) + "\n")  # in place: IN_CLOSE_WRITE
    wait_rds(r, "config_reload", 1)
    assert who(c.request()) == "b"


def test_reload_watched_directory_configmap_swap(ctx):
    """Kubernetes' ConfigMap layout: rds.yaml -> ..data/rds.yaml, ..data -> ..v1; an update
    makes ..v2 and renames a new ..data symlink over the old one."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    d = ctx.tmp / "cm"
    (d / "..v1").mkdir(parents=True)
    (d / "..v1" / "rds.yaml").write_text(to_yaml(rds_doc("v1", [to("a")])) + "\n")
    os.symlink("..v1", d / "..data")
    os.symlink("..data/rds.yaml", d / "rds.yaml")
    r = ctx.start_remora(rds_config(ctx, a, b, d / "rds.yaml", watched_dir=d), concurrency=1)
    c = HttpConn(r.port())
    assert who(c.request()) == "a"
    (d / "..v2").mkdir()
    (d / "..v2" / "rds.yaml").write_text(to_yaml(rds_doc("v2", [to("b")])) + "\n")
    os.symlink("..v2", d / "..data_tmp")
    os.rename(d / "..data_tmp", d / "..data")
    wait_rds(r, "config_reload", 1)
    assert who(c.request()) == "b"


def test_reload_watched_directory_removed_and_recreated(ctx):
    """The watched directory itself is deleted and made again (a ConfigMap volume remounted,
    a tool that rebuilds the directory): the watch comes back with it, the file found there is
    loaded, and later swaps in the new directory reload too. The routes in force stay while
    it is missing."""
    import shutil
    d = ctx.tmp / "rds"
    r, path = start(ctx, rds_doc("v1", [to("a")]), concurrency=1, watched_dir=d)
    c = HttpConn(r.port())
    assert who(c.request()) == "a"
    shutil.rmtree(d)
    r.wait_output("went away")
    assert who(c.request()) == "a"
    d.mkdir()
    write_doc(path, rds_doc("v2", [to("b")]))
    wait_rds(r, "config_reload", 1)
    assert who(c.request()) == "b"
    write_doc(path, rds_doc("v3", [to("a")]))
    wait_rds(r, "config_reload", 2)
    assert who(c.request()) == "a"
    assert st(r, "update_failure") == 0 and st(r, "update_rejected") == 0


def test_reload_directory_renamed_away_and_replaced(ctx):
    """The file's directory (no watched_directory) is renamed away and a new one takes its
    place: the watch must not follow the old directory, and updates in the new one reload."""
    r, path = start(ctx, rds_doc("v1", [to("a")]), concurrency=1)
    c = HttpConn(r.port())
    assert who(c.request()) == "a"
    d = path.parent
    os.rename(d, d.with_name("rds.old"))
    new = d.with_name("rds.next")
    new.mkdir()
    write_doc(new / "rds.yaml", rds_doc("v2", [to("b")]))
    os.rename(new, d)
    wait_rds(r, "config_reload", 1)
    assert who(c.request()) == "b"
    path.write_text(to_yaml(rds_doc("v3", [to("a")])) + "\n")  # in place, in the new directory
    wait_rds(r, "config_reload", 2)
    assert who(c.request()) == "a"


def test_reload_unreadable_file_is_failure_and_keeps_routes(ctx):
    r, path = start(ctx, rds_doc("v1", [to("a")]))
    c = HttpConn(r.port())
    # A directory moved onto the path: reading it fails (EISDIR), it is not content.
    other = path.with_name("dir.new")
    other.mkdir()
    os.rename(path, path.with_name("old.yaml"))
    os.rename(other, path)
    wait_rds(r, "update_failure", 1)
    r.wait_output("cannot read")
    assert who(c.request()) == "a"


# ---- startup ----

def test_reload_startup_needs_a_valid_rds_file(ctx):
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    cases = [
        (None, "typed_config.rds: "),  # missing file
        (rds_doc("v1", [to("nope")], rc_extra={"validate_clusters": True}),
         "resources[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'nope'"),
        ({"version_info": "v1", "resources": []}, "no RouteConfiguration 'rc'"),
    ]
    for i, (doc, want) in enumerate(cases):
        path = ctx.tmp / f"start{i}.yaml"
        if doc is not None:
            write_doc(path, doc)
        cfg_path = ctx.tmp / f"boot{i}.yaml"
        cfg_path.write_text(to_yaml(rds_config(ctx, a, b, path)) + "\n")
        p = ctx.spawn("validate", [ctx.bin("remora"), "--mode", "validate", "-c", cfg_path])
        assert p.wait() == 1, p.stderr
        out = p.stdout + p.stderr
        assert want in out and str(path) in out, out
        if doc is None:
            assert "cannot read" in out, out
    # ADS needs dynamic_resources.ads_config (test_ads.py); without it, the path says so.
    cfg = rds_config(ctx, a, b, ctx.tmp / "x.yaml")
    hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["rds"]["config_source"] = {"ads": {}, "resource_api_version": "V3"}
    cfg_path = ctx.tmp / "boot-ads.yaml"
    cfg_path.write_text(to_yaml(cfg) + "\n")
    p = ctx.spawn("validate", [ctx.bin("remora"), "--mode", "validate", "-c", cfg_path])
    assert p.wait() == 1
    assert "typed_config.rds.config_source.ads: needs dynamic_resources.ads_config" in p.stdout, \
        p.stdout
    # LDS over a gRPC api_config_source is not supported: rejected with the field that asks for
    # it (LDS from a file or ADS is: test_lds.py).
    cfg = rds_config(ctx, a, b, ctx.tmp / "x.yaml")
    cfg["dynamic_resources"] = {"lds_config": {"api_config_source": {},
                                               "resource_api_version": "V3"}}
    cfg_path = ctx.tmp / "boot-lds.yaml"
    cfg_path.write_text(to_yaml(cfg) + "\n")
    p = ctx.spawn("validate", [ctx.bin("remora"), "--mode", "validate", "-c", cfg_path])
    assert p.wait() == 1
    assert "dynamic_resources.lds_config.api_config_source: not supported by remora yet" in \
        p.stdout, p.stdout
    # Serving with a missing file fails at startup too (nothing listens).
    cfg_path = ctx.tmp / "boot-missing.yaml"
    cfg_path.write_text(to_yaml(rds_config(ctx, a, b, ctx.tmp / "missing.yaml")) + "\n")
    p = ctx.spawn("serve", [ctx.bin("remora"), "-c", cfg_path])
    assert p.wait() == 1
    assert "invalid configuration" in p.stderr and "missing.yaml: cannot read" in p.stderr


# ---- memory ----

def test_reload_churn_50_updates_memory_flat(ctx):
    r, path = start(ctx, rds_doc("v0", [to("a")]))
    c = HttpConn(r.port())
    rss = []
    for i in range(1, 51):
        write_doc(path, rds_doc(f"v{i}", [to("b" if i % 2 else "a")],
                                vh_extra={"request_headers_to_add": [
                                    {"header": {"key": "x-v", "value": "x" * 2048}}]}))
        wait_rds(r, "config_reload", i)
        assert who(c.request()) == ("b" if i % 2 else "a")
        if i in (10, 50):
            rss.append(proc_rss_kb(r.pid))
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    # Each table holds a few KiB; 40 leaked ones plus their requests would show. Allow noise.
    assert rss[1] - rss[0] < 2048, rss


def test_reload_example_rds_file_validates(ctx):
    """examples/rds_file (its RDS path is relative to the repository root)."""
    exe = ctx.bin("remora")
    if not exe.exists():
        raise Skip("remora is not built")
    p = subprocess.run([str(exe), "--mode", "validate", "-c", "examples/rds_file/bootstrap.yaml"],
                       cwd=REPO, capture_output=True, text=True, timeout=30 * slow_factor())
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK" in p.stdout, p.stdout
