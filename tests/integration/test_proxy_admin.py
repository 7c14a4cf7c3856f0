"""remora's admin endpoint, as Envoy's: /ready, /server_info, /stats (text, filter, JSON,
usedonly, Prometheus), /clusters, /config_dump, /listeners, /memory, /runtime,
/reset_counters, health check toggles, /logging and /quitquitquit."""

import copy
import json
import math
import re

from lib import free_port, http_request, is_sanitized, raw_exchange, to_yaml, wait_for
from proxyutil import parse_stats, proxy_config, start_proxy, stats, wait_stat


def _traffic(r, n=3):
    for i in range(n):
        assert http_request(r.port(), path=f"/t{i}").status == 200


def test_ready_and_server_info(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, extra_args=["--service-node", "node-xyz",
                                                   "--service-cluster", "cluster-abc"])
    resp = r.admin("GET", "/ready")
    assert resp.status == 200 and resp.text.strip() == "LIVE", resp
    resp = r.admin("GET", "/server_info")
    assert resp.status == 200
    assert re.search(r'^\s*"state": "LIVE",?$', resp.text, re.M), resp.text
    j = resp.json()
    assert j["state"] == "LIVE"
    assert isinstance(j["version"], str) and j["version"]
    opts = j["command_line_options"]
    assert opts["service_node"] == "node-xyz" and opts["concurrency"] == 1
    assert opts["service_cluster"] == "cluster-abc"
    assert j["node"]["id"] == "node-xyz" and j["node"]["cluster"] == "cluster-abc"


def test_stats_text_names_after_traffic(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"svc": [u]})
    _traffic(r, 3)
    st = stats(r)
    lport = r.port()
    want = {
        "http.ingress_http.downstream_rq_2xx": 3,
        "http.ingress_http.downstream_rq_total": 3,
        "cluster.svc.upstream_rq_200": 3,
        "cluster.svc.upstream_rq_2xx": 3,
        "cluster.svc.upstream_rq_total": 3,
        "cluster.svc.upstream_cx_total": 1,
        f"listener.127.0.0.1_{lport}.downstream_cx_total": 3,
        "http.ingress_http.downstream_cx_total": 3,
        "server.live": 1,
    }
    got = {k: st.get(k) for k in want}
    assert got == want, got
    text = r.admin("GET", "/stats").text
    # Histograms are there too, in Envoy's text form.
    assert re.search(r"^cluster\.svc\.upstream_rq_time: P0\(", text, re.M), text[-2000:]


def test_stats_filter_json_and_usedonly(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"svc": [u], "idle": [u]})
    _traffic(r, 2)
    resp = r.admin("GET", "/stats?filter=^cluster\\.svc\\.upstream_rq")
    assert resp.status == 200
    lines = [ln for ln in resp.text.splitlines() if ln]
    assert lines and all(ln.startswith("cluster.svc.upstream_rq") for ln in lines), lines
    assert "cluster.svc.upstream_rq_200: 2" in lines
    resp = r.admin("GET", "/stats?filter=rq_200")
    names = [ln.split(":")[0] for ln in resp.text.splitlines() if ln]
    assert "cluster.svc.upstream_rq_200" in names and all("rq_200" in n for n in names)

    resp = r.admin("GET", "/stats?format=json")
    assert resp.status == 200
    j = resp.json()
    flat = {s["name"]: s["value"] for s in j["stats"] if "name" in s and "value" in s}
    assert flat["cluster.svc.upstream_rq_total"] == 2
    assert flat["server.live"] == 1
    resp = r.admin("GET", "/stats?format=json&filter=svc")
    j = resp.json()
    assert all("svc" in s["name"] for s in j["stats"] if "name" in s)

    resp = r.admin("GET", "/stats?usedonly")
    used = parse_stats(resp.text)
    assert used.get("cluster.svc.upstream_rq_total") == 2
    assert "cluster.idle.upstream_rq_total" not in used, "an unused counter in ?usedonly"
    assert "cluster.svc.upstream_rq_timeout" not in used
    full = stats(r)
    assert "cluster.idle.upstream_rq_total" in full and len(used) < len(full)
    # A bad regex is an error, not a crash.
    resp = r.admin("GET", "/stats?filter=(")
    assert resp.status in (400, 200) and r.alive()


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(r"^(" + _NAME + r")(?:\{(.*)\})? (\S+)(?: -?\d+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"(,|$)')


def _parse_labels(s):
    out = {}
    pos = 0
    while pos < len(s):
        m = _LABEL.match(s, pos)
        assert m, f"bad label set {s!r} at {pos}"
        out[m.group(1)] = m.group(2)
        pos = m.end()
    return out


def parse_prometheus(text):
    """Parses the text exposition format strictly enough to catch what scrapers reject:
    every sample belongs to a family declared by a preceding # TYPE, families are contiguous
    and declared once, values are numbers, histograms have monotone buckets ending in +Inf
    that equals _count."""
    types = {}
    samples = []
    current = None
    seen_families = set()
    for ln, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] == "TYPE":
                fam, typ = parts[2], parts[3] if len(parts) > 3 else ""
                assert re.fullmatch(_NAME, fam), f"line {ln}: bad name {fam!r}"
                assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
                assert fam not in types, f"line {ln}: second # TYPE for {fam}"
                types[fam] = typ
                current = fam
                seen_families.add(fam)
            continue
        m = _SAMPLE.match(line)
        assert m, f"line {ln}: not a sample: {line!r}"
        name, labels, value = m.group(1), _parse_labels(m.group(2) or ""), m.group(3)
        fam = name
        if current and types.get(current) in ("histogram", "summary"):
            for suf in ("_bucket", "_sum", "_count"):
                if name == current + suf:
                    fam = current
        assert fam == current, f"line {ln}: sample {name} without its # TYPE just before " \
                               f"(current family {current})"
        v = float(value)  # raises on junk; NaN/+Inf parse too
        assert not math.isnan(v) or types[fam] == "gauge", line
        samples.append((fam, name, labels, v))
    # Histograms.
    for fam, typ in types.items():
        if typ != "histogram":
            continue
        series = {}
        for f, name, labels, v in samples:
            if f != fam:
                continue
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            s = series.setdefault(key, {"buckets": [], "count": None, "sum": None})
            if name.endswith("_bucket"):
                assert "le" in labels, f"{fam}: bucket without le"
                s["buckets"].append((float(labels["le"]), v))
            elif name.endswith("_count"):
                s["count"] = v
            elif name.endswith("_sum"):
                s["sum"] = v
        assert series, f"histogram {fam} has no samples"
        for key, s in series.items():
            les = [le for le, _ in s["buckets"]]
            vals = [v for _, v in s["buckets"]]
            assert les == sorted(les) and les and les[-1] == math.inf, (fam, key, les)
            assert vals == sorted(vals), f"{fam}{key}: buckets not monotone: {vals}"
            assert s["count"] is not None and s["sum"] is not None, (fam, key)
            assert vals[-1] == s["count"], (fam, key, vals[-1], s["count"])
    return types, samples


def test_stats_prometheus_is_valid_exposition_format(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"svc": [u]})
    _traffic(r, 4)
    resp = r.admin("GET", "/stats/prometheus")
    assert resp.status == 200
    ctype = resp.header("content-type", "")
    assert ctype.startswith("text/plain"), ctype
    types, samples = parse_prometheus(resp.text)

    def find(name, **labels):
        return [v for _, n, lb, v in samples
                if n == name and all(lb.get(k) == x for k, x in labels.items())]

    assert find("envoy_cluster_upstream_rq_total", envoy_cluster_name="svc") == [4]
    assert types.get("envoy_cluster_upstream_rq_total") == "counter"
    assert types.get("envoy_cluster_upstream_cx_active") == "gauge"
    assert find("envoy_http_downstream_rq_total",
                envoy_http_conn_manager_prefix="ingress_http") == [4]
    assert find("envoy_cluster_upstream_rq_time_count", envoy_cluster_name="svc") == [4]
    assert any(n.startswith("envoy_listener_") for _, n, _, _ in samples)
    # /stats?format=prometheus is the same thing.
    resp2 = r.admin("GET", "/stats?format=prometheus")
    assert resp2.status == 200
    parse_prometheus(resp2.text)


def test_clusters(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = start_proxy(ctx, {"svc": [a, b]})
    _traffic(r, 4)
    resp = r.admin("GET", "/clusters")
    assert resp.status == 200
    lines = resp.text.splitlines()
    for up in (a, b):
        host = f"svc::127.0.0.1:{up.port}::"
        assert f"{host}cx_total::1" in lines, (host, lines)
        assert f"{host}rq_total::2" in lines, (host, lines)
        assert f"{host}health_flags::healthy" in lines, (host, lines)


def test_config_dump(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"svc": [u]})
    resp = r.admin("GET", "/config_dump")
    assert resp.status == 200
    j = resp.json()
    text = json.dumps(j)
    assert "listener_0" in text and str(r.port()) in text
    assert "svc" in text and str(u.port) in text
    assert any("BootstrapConfigDump" in c.get("@type", "") for c in j["configs"]), \
        [c.get("@type") for c in j["configs"]]


def test_healthcheck_fail_and_ok(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    assert r.admin("POST", "/healthcheck/fail").status == 200
    resp = r.admin("GET", "/ready")
    assert resp.status == 503, resp
    # Traffic still flows: failing health checks only tells the load balancer in front.
    assert http_request(r.port()).status == 200
    assert r.admin("POST", "/healthcheck/ok").status == 200
    resp = r.admin("GET", "/ready")
    assert resp.status == 200 and resp.text.strip() == "LIVE"


def test_post_only_endpoints_refuse_get(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    for path in ("/quitquitquit", "/healthcheck/fail", "/logging?level=debug",
                 "/reset_counters"):
        resp = r.admin("GET", path)
        assert resp.status == 405, (path, resp)
        assert resp.body == b"Method GET not allowed, POST required.", resp.body  # Envoy's
    assert r.alive()
    assert r.admin("GET", "/ready").status == 200
    assert r.admin("GET", "/nonexistent").status == 404


def test_logging_level_changes(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    # At info, a rejected request logs nothing at debug level.
    raw_exchange(r.port(), b"GET / HTTP/1.1\nHost: a\n\n", timeout=2)
    assert "bad request" not in r.stderr
    resp = r.admin("POST", "/logging?level=debug")
    assert resp.status == 200 and "debug" in resp.text, resp
    raw_exchange(r.port(), b"GET / HTTP/1.1\nHost: a\n\n", timeout=2)
    wait_for(lambda: "[debug]" in r.stderr, 2, "a debug line after /logging?level=debug")
    resp = r.admin("POST", "/logging?level=nonsense")
    assert resp.status in (400, 404)
    resp = r.admin("POST", "/logging?level=info")
    assert resp.status == 200
    n = r.stderr.count("[debug]")
    raw_exchange(r.port(), b"GET / HTTP/1.1\nHost: a\n\n", timeout=2)
    assert http_request(r.port()).status == 200
    assert r.stderr.count("[debug]") == n


def test_quitquitquit_exits_zero(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    resp = r.admin("POST", "/quitquitquit")
    assert resp.status == 200
    assert r.wait(5) == 0


def _listening_sockets(port):
    """How many sockets listen on TCP ``port`` (IPv4, this network namespace)."""
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                n += 1
    return n


def test_listeners_text_and_json_show_the_bound_port(ctx):
    u = ctx.start_upstream()
    fixed = free_port()
    cfg = proxy_config({"svc": [u.port]}, listener_port=fixed, listener_name="ingress")
    second = copy.deepcopy(cfg["static_resources"]["listeners"][0])
    second["name"] = "anyport"
    second["address"]["socket_address"]["port_value"] = 0
    cfg["static_resources"]["listeners"].append(second)
    # Two workers: both must listen on the port the kernel gave the port-0 listener.
    r = ctx.start_remora(cfg, concurrency=2)
    resp = r.admin("GET", "/listeners")
    assert resp.status == 200, resp
    lines = resp.text.splitlines()
    assert len(lines) == 2 and lines[0] == f"ingress::127.0.0.1:{fixed}", lines
    m = re.fullmatch(r"anyport::127\.0\.0\.1:(\d+)", lines[1])
    assert m and int(m.group(1)) != 0, lines
    kport = int(m.group(1))
    assert http_request(kport).status == 200  # the port shown is the one serving
    assert _listening_sockets(kport) == 2, "a worker is not on the port-0 listener's port"

    resp = r.admin("GET", "/listeners?format=json")
    assert resp.status == 200 and resp.header("content-type", "").startswith("application/json")
    assert resp.json() == {"listener_statuses": [
        {"name": "ingress",
         "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": fixed}}},
        {"name": "anyport",
         "local_address": {"socket_address": {"address": "127.0.0.1", "port_value": kport}}},
    ]}, resp.text


def test_memory_has_envoys_keys_as_decimal_strings(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    resp = r.admin("GET", "/memory")
    assert resp.status == 200 and resp.header("content-type", "").startswith("application/json")
    j = resp.json()
    assert list(j) == ["allocated", "heap_size", "pageheap_unmapped", "pageheap_free",
                       "total_thread_cache", "total_physical_bytes"], j
    assert all(isinstance(v, str) and re.fullmatch(r"\d+", v) for v in j.values()), j
    assert int(j["heap_size"]) >= int(j["allocated"]), j
    # ASan's allocator replaces glibc's malloc, whose mallinfo2() then counts nothing.
    assert is_sanitized() or int(j["allocated"]) > 0, j
    # tcmalloc-only figures: glibc's malloc has none.
    assert [j[k] for k in ("pageheap_unmapped", "pageheap_free", "total_thread_cache",
                           "total_physical_bytes")] == ["0"] * 4, j


def test_runtime_has_no_layers(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    resp = r.admin("GET", "/runtime")
    assert resp.status == 200 and resp.header("content-type", "").startswith("application/json")
    assert resp.json() == {"layers": [], "entries": {}}, resp.text


def test_help_lists_the_new_endpoints(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]})
    text = r.admin("GET", "/help").text
    for ep in ("/listeners:", "/memory:", "/runtime:", "/reset_counters (POST):"):
        assert f"  {ep}" in text, (ep, text)


def _prometheus_counters(r):
    types, samples = parse_prometheus(r.admin("GET", "/stats/prometheus").text)
    return {(n, tuple(sorted(lb.items()))): v for f, n, lb, v in samples
            if types[f] == "counter"}


def test_reset_counters(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"svc": [u]})
    lport = r.port()
    lst = f"listener.127.0.0.1_{lport}"
    _traffic(r, 3)
    idle = ctx.connect(lport)  # holds the downstream_cx_active gauges at 1
    # Every earlier connection's close is counted before the reset (no count may land after),
    # and the idle connection is accepted: both at once, or the gauge's 1 could still be the
    # last request's connection.
    st = wait_for(lambda: (x := stats(r))[f"{lst}.downstream_cx_active"] == 1
                  and x[f"{lst}.downstream_cx_total"] == 4 and x, what="4 connections, 1 open")
    assert st["http.ingress_http.downstream_rq_total"] == 3
    assert st["cluster.svc.upstream_rq_200"] == 3 and st[f"{lst}.downstream_cx_total"] == 4
    assert st["http.ingress_http.downstream_cx_active"] == 1
    membership = st["cluster.svc.membership_total"]

    resp = r.admin("GET", "/reset_counters")
    assert resp.status == 405, resp
    assert stats(r)["http.ingress_http.downstream_rq_total"] == 3, "a GET reset the counters"

    resp = r.admin("POST", "/reset_counters")
    assert resp.status == 200 and resp.text == "OK\n", resp
    st = stats(r)
    for name in ("http.ingress_http.downstream_rq_total", "http.ingress_http.downstream_rq_2xx",
                 "cluster.svc.upstream_rq_200", "cluster.svc.upstream_rq_total",
                 "cluster.svc.upstream_cx_total", f"{lst}.downstream_cx_total"):
        assert st[name] == 0, (name, st[name])
    # Gauges are not counters.
    assert st[f"{lst}.downstream_cx_active"] == 1
    assert st["http.ingress_http.downstream_cx_active"] == 1
    assert st["cluster.svc.membership_total"] == membership and st["server.live"] == 1
    # Every counter, as Prometheus types them, reads 0; histograms keep their samples.
    counters = _prometheus_counters(r)
    assert counters and all(v == 0 for v in counters.values()), \
        {k: v for k, v in counters.items() if v}
    text = r.admin("GET", "/stats/prometheus").text
    assert re.search(r'^envoy_cluster_upstream_rq_time_count\{envoy_cluster_name="svc"\} 3$',
                     text, re.M), "histograms are not reset"
    j = r.admin("GET", "/stats?format=json").json()
    flat = {s["name"]: s["value"] for s in j["stats"] if "name" in s}
    assert flat["cluster.svc.upstream_rq_total"] == 0 and flat[f"{lst}.downstream_cx_active"] == 1
    # As in Envoy, a reset counter is still a used one.
    used = parse_stats(r.admin("GET", "/stats?usedonly").text)
    assert used.get("cluster.svc.upstream_rq_total") == 0, used

    # Counting goes on from 0.
    assert http_request(lport, path="/again").status == 200
    st = wait_for(lambda: (x := stats(r))[f"{lst}.downstream_cx_active"] == 1
                  and x[f"{lst}.downstream_cx_total"] == 1 and x, what="the new connection closed")
    for name in ("http.ingress_http.downstream_rq_total", "cluster.svc.upstream_rq_200",
                 "cluster.svc.upstream_rq_total", f"{lst}.downstream_cx_total"):
        assert st[name] == 1, (name, st[name])
    assert st["cluster.svc.upstream_cx_total"] == 0  # the pooled connection was reused
    counters = _prometheus_counters(r)
    assert counters[("envoy_cluster_upstream_rq_total",
                     (("envoy_cluster_name", "svc"),))] == 1, counters
    idle.close()


def test_admin_access_log(ctx):
    """admin.access_log_path (and admin.access_log's file logger): one line per admin request
    in Envoy's default format, written with its answer; a path that cannot be opened stops
    startup naming admin.access_log."""
    import subprocess
    u = ctx.start_upstream()
    log = ctx.tmp / "admin_access.log"
    cfg = proxy_config({"c": [u.port]})
    cfg["admin"]["access_log_path"] = str(log)
    r = ctx.start_remora(cfg)
    assert r.admin("GET", "/server_info", {"User-Agent": "ecs-check",
                                           "x-request-id": "rq-1"}).status == 200
    assert r.admin("POST", "/logging?level=info", body=b"abc").status == 200
    assert r.admin("GET", "/nothing").status == 404

    def lines():
        return log.read_text().splitlines() if log.exists() else []
    wait_for(lambda: len(lines()) >= 4, 5, "four admin access log lines")  # /ready's included
    text = "\n".join(lines())
    assert re.search(r'^\[\d{4}-\d\d-\d\dT[\d:.]+Z\] "GET /server_info HTTP/1.1" 200 - 0 \d+ \d+ - '
                     r'"-" "ecs-check" "rq-1" "127.0.0.1:\d+" "-"$', text, re.M), text
    assert re.search(r'"POST /logging\?level=info HTTP/1.1" 200 - 3 \d+ ', text), text
    assert '"GET /nothing HTTP/1.1" 404 ' in text, text
    # Envoy's file logger form, to a directory that does not exist: refused at startup.
    cfg["admin"].pop("access_log_path")
    cfg["admin"]["access_log"] = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(ctx.tmp / "no-such-dir" / "admin.log")}}]
    path = ctx.tmp / "bad-admin-log.yaml"
    r.stop(r.term_timeout)  # its listener and admin ports are in the config
    path.write_text(to_yaml(cfg))
    p = subprocess.run([str(ctx.bin("remora")), "-c", str(path)], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "remora: admin.access_log: " in p.stderr and "no-such-dir" in p.stderr, p.stderr
