"""STRICT_DNS clusters from CDS, and LOGICAL_DNS clusters, resolved again while remora runs
(proxy/dns_refresh.h), with no
DNS server: remora runs in a mount namespace of its own (unshare -m) where /etc/hosts and
/etc/resolv.conf are bind mounts of files this test rewrites in place (getaddrinfo reads
/etc/hosts on every call). The nameserver is an address where nothing answers at once (a
failed lookup is quick), or a UDP socket of this test that reads and never answers (a lookup
that hangs).

Shown: startup waits for the first answer (the first request after /ready is served), but at
most 15 s for a lookup that hangs; traffic
moves to a name's new address within two dns_refresh_rate periods; a name that stops resolving
keeps its last hosts (update_failure counts); health-check state of an address that stays is
kept (it is not checked again at once); a lookup that hangs does not hold requests to other
clusters; a cluster CDS adds warms until its names' first lookups (good or failed); bad DNS
settings are rejected with their field path; the ADS client resolves its
STRICT_DNS cluster's name at every connection attempt (a control plane that moved is found on
the next reconnect). LOGICAL_DNS (the bootstrap's and CDS's): new connections go to the name's
new address while a keep-alive connection to the old one stays in use; before its name first
resolves it has no host (503 UH, none in /clusters), and /clusters shows its current address; a
LOGICAL_DNS cluster with more than one endpoint is refused naming the field."""

import os
import socket
import subprocess
import threading
import time

from lib import (HttpConn, Skip, http_request, is_sanitized, proc_rss_kb, slow_factor, to_yaml,
                 wait_for)
from proxyutil import proxy_config, stats
from test_reload import rds_block, rds_doc, to, write_doc

CL_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
REFUSED_NS = "127.0.0.98"  # nothing listens on its port 53: lookups fail at once
HANG_NS = "127.0.0.99"     # a test's socket: reads, never answers
HANG_NS2 = "127.0.0.97"    # another test's (the tests may run at once)
HANG_NS3 = "127.0.0.96"    # and a third's


def dns_cluster(name, host, port, refresh="0.5s", **extra):
    c = {"@type": CL_TYPE, "name": name, "type": "STRICT_DNS", "connect_timeout": "1s",
         "dns_refresh_rate": refresh, "dns_lookup_family": "V4_ONLY",
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": host,
                                                          "port_value": port}}}}]}]}}
    c.update(extra)
    return c


def rewrite(path, text):
    """Rewrites ``path`` in place (same inode: the bind mount shows the new bytes)."""
    with open(path, "r+") as f:
        f.seek(0)
        f.truncate()
        f.write(text)


def mount_prefix(hosts, resolv):
    """argv words that run a program in a mount namespace of its own where /etc/hosts and
    /etc/resolv.conf are ``hosts`` and ``resolv``."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && '
            'shift 2 && exec "$@"', "sh", str(hosts), str(resolv)]


class DnsEnv:
    """remora in its own mount namespace with /etc/hosts and /etc/resolv.conf of this test,
    clusters from a CDS file and routes from an RDS file."""

    def __init__(self, ctx, hosts, clusters, routes, nameserver=REFUSED_NS, static=None,
                 ns_options="timeout:1 attempts:1", wait_ready=True):
        self.ctx = ctx
        d = ctx.tmp / "dns"
        d.mkdir(exist_ok=True)
        self.hosts = d / "hosts"
        self.hosts.write_text(hosts)
        self.resolv = d / "resolv.conf"
        self.resolv.write_text(f"nameserver {nameserver}\noptions {ns_options}\n")
        for p in (self.hosts, self.resolv):
            p.chmod(0o644)
        self.cds_path, rds_path = d / "cds.yaml", d / "rds.yaml"
        write_doc(self.cds_path, {"version_info": "v1", "resources": clusters})
        write_doc(rds_path, rds_doc("r1", routes))
        cfg = proxy_config(static or {"s": [1]})
        hcm = (cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
               ["typed_config"])
        del hcm["route_config"]
        hcm["rds"] = rds_block(rds_path)
        cfg["dynamic_resources"] = {"cds_config": {
            "path_config_source": {"path": str(self.cds_path)}, "resource_api_version": "V3"}}
        self.r = ctx.start_remora(cfg, prefix=mount_prefix(self.hosts, self.resolv),
                                  wait_ready=wait_ready)

    def stat(self, name):
        return stats(self.r).get(name, 0)

    def wait_stat(self, name, want, timeout=5.0):
        wait_for(lambda: self.stat(name) >= want, timeout * slow_factor(), f"{name} >= {want}")

    def who(self, path="/"):
        resp = http_request(self.r.port(), path=path)
        return resp.status, resp.header("x-upstream-name")


def need_root():
    if os.geteuid() != 0:
        raise Skip("the mount namespace needs root")


def test_dns_refresh_follows_a_moving_name_and_keeps_hosts_when_it_fails(ctx):
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port)], [to("dyn")])
    # startup waited for the first answer: the first request is served
    assert env.who() == (200, "a")
    assert env.stat("cluster.dyn.update_success") >= 1
    assert env.stat("cluster.dyn.membership_total") == 1

    changes = env.stat("cluster.dyn.membership_change")
    rewrite(env.hosts, "127.0.0.3 backend.test\n")
    t0 = time.monotonic()
    wait_for(lambda: env.who() == (200, "b"), 3.0 * slow_factor(), "traffic on b")
    moved = time.monotonic() - t0
    assert moved < 2 * 0.55 * slow_factor() + 0.2, f"moved after {moved:.2f} s"
    assert env.stat("cluster.dyn.membership_change") == changes + 1
    assert env.stat("cluster.dyn.membership_total") == 1
    wait_for(lambda: env.stat("cluster.dyn.update_no_rebuild") >= 1, 3.0 * slow_factor(),
             "an unchanged answer")

    # the name stops resolving: the last hosts stay
    fails = env.stat("cluster.dyn.update_failure")
    rewrite(env.hosts, "127.0.0.2 other.test\n")
    env.wait_stat("cluster.dyn.update_failure", fails + 2)
    for _ in range(5):
        assert env.who() == (200, "b")
    assert env.stat("cluster.dyn.membership_total") == 1
    assert "cannot resolve 'backend.test'" in env.r.stderr

    # it comes back with two addresses
    rewrite(env.hosts, "127.0.0.2 backend.test\n127.0.0.3 backend.test\n")
    wait_for(lambda: env.stat("cluster.dyn.membership_total") == 2, 3.0 * slow_factor(),
             "two hosts")
    seen = {env.who()[1] for _ in range(8)}
    assert seen == {"a", "b"}, seen
    attempts = env.stat("cluster.dyn.update_attempt")
    assert attempts >= env.stat("cluster.dyn.update_success") + env.stat(
        "cluster.dyn.update_failure") - 1


def test_dns_refresh_keeps_health_state_of_an_address_that_stays(ctx):
    need_root()
    from healthutil import FlipUpstream, http_hc
    with FlipUpstream("a") as a:
        b = ctx.start_upstream("b", listen=f"127.0.0.2:{a.port}")
        # checks every 30 s: a host is checked when it first appears, then not for a while
        hc = http_hc(interval="30s", unhealthy=1, healthy=1)
        env = DnsEnv(ctx, "127.0.0.1 backend.test\n",
                     [dns_cluster("dyn", "backend.test", a.port, health_checks=[hc])],
                     [to("dyn")])
        wait_for(lambda: a.count("/healthz") >= 1, 5.0 * slow_factor(), "a's first check")
        assert env.who() == (200, "a")
        checks = a.count("/healthz")
        a.status = 503  # from now on a fails any check
        changes = env.stat("cluster.dyn.membership_change")
        rewrite(env.hosts, "127.0.0.1 backend.test\n127.0.0.2 backend.test\n")
        wait_for(lambda: env.stat("cluster.dyn.membership_total") == 2, 3.0 * slow_factor(),
                 "two hosts")
        assert env.stat("cluster.dyn.membership_change") == changes + 1
        # b is new: checked now; a stays: its state (healthy, next check in 30 s) is kept, so it
        # is not checked again (a fresh host would be, and would fail)
        wait_for(lambda: env.stat("cluster.dyn.health_check.success") >= 2, 3.0 * slow_factor(),
                 "b's first check")
        assert a.count("/healthz") == checks
        assert env.stat("cluster.dyn.health_check.failure") == 0
        lines = env.r.admin("GET", "/clusters").text
        assert f"dyn::127.0.0.1:{a.port}::health_flags::healthy" in lines, lines
        assert b.alive()


def test_dns_refresh_hanging_lookup_does_not_hold_other_clusters(ctx):
    need_root()
    got = silent_nameserver(ctx, HANG_NS)
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    f = ctx.start_upstream("f")
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port)],
                 [to("fast", "/fast"), to("slow", "/slow"), to("dyn")],
                 nameserver=HANG_NS, static={"fast": [f.port]},
                 ns_options="timeout:30 attempts:1")
    assert env.who() == (200, "a")
    # a cluster whose name only the silent nameserver could answer
    write_doc(env.cds_path, {"version_info": "v2", "resources": [
        dns_cluster("dyn", "backend.test", a.port),
        dns_cluster("slow", "hang.test", a.port)]})
    wait_for(lambda: len(got) >= 1, 5.0 * slow_factor(), "the query at the silent nameserver")
    # while that lookup hangs, main and the workers go on
    t0 = time.monotonic()
    for _ in range(20):
        s0 = time.monotonic()
        assert env.who("/fast") == (200, "f")
        assert env.who("/slow")[0] == 503  # no hosts yet
        assert time.monotonic() - s0 < 0.5 * slow_factor()
    assert time.monotonic() - t0 < 3.0 * slow_factor()
    assert env.stat("cluster.slow.update_attempt") == 1
    assert env.stat("cluster.slow.update_success") == 0
    assert env.r.admin("GET", "/ready").status == 200
    assert env.who() == (200, "a")
    # nor does it hold the lookups of other names (a pool of resolver threads): a name that
    # moves meanwhile is followed as usual (one thread would wait 30 s behind hang.test)
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    rewrite(env.hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: env.who() == (200, "b"), 3.0 * slow_factor(), "traffic on b")
    assert env.stat("cluster.slow.update_success") == 0  # still hanging


def test_dns_refresh_cluster_added_warms_until_its_first_lookup(ctx):
    """A STRICT_DNS cluster CDS adds is warming (Envoy's cluster warming, proxy/cds.h) until each
    of its names had its first lookup back, good or failed: meanwhile its route answers as for an
    unknown cluster and cluster_manager.warming_clusters counts it; a lookup that fails ends
    warming too (the cluster is active with no hosts)."""
    need_root()
    got = silent_nameserver(ctx, HANG_NS3)
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port)],
                 [to("slow", "/slow"), to("dyn")], nameserver=HANG_NS3,
                 ns_options="timeout:2 attempts:1")
    assert env.who() == (200, "a")
    ok = env.stat("cluster_manager.cds.update_success")
    write_doc(env.cds_path, {"version_info": "v2", "resources": [
        dns_cluster("dyn", "backend.test", a.port),
        dns_cluster("slow", "hang.test", a.port)]})
    env.wait_stat("cluster_manager.cds.update_success", ok + 1)
    wait_for(lambda: len(got) >= 1, 5.0 * slow_factor(), "the query at the silent nameserver")
    assert env.stat("cluster_manager.warming_clusters") == 1
    assert env.who("/slow")[0] == 503
    assert env.stat("http.ingress_http.no_cluster") >= 1
    assert env.who() == (200, "a")
    # the lookup times out (2 s): the first answer, failed; slow is active without hosts
    wait_for(lambda: env.stat("cluster_manager.warming_clusters") == 0, 6.0 * slow_factor(),
             "the end of slow's warming")
    assert env.stat("cluster.slow.update_failure") >= 1
    assert env.who("/slow")[0] == 503
    assert env.stat("cluster.slow.upstream_cx_none_healthy") >= 1


def silent_nameserver(ctx, addr):
    """A UDP socket on ADDR:53 that reads queries and never answers; returns the list the
    queries are appended to. Raises Skip when the address cannot be bound."""
    ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ns.bind((addr, 53))
    except OSError as e:
        ns.close()
        raise Skip(f"cannot bind {addr}:53: {e}")
    ctx.on_cleanup(ns.close)
    got = []

    def swallow():
        ns.settimeout(0.2)
        while ns.fileno() >= 0:
            try:
                got.append(ns.recv(512))
            except socket.timeout:
                continue
            except OSError:
                return

    threading.Thread(target=swallow, daemon=True).start()
    return got


def test_dns_refresh_startup_bounded_when_a_name_hangs(ctx):
    """Startup waits for the first answers, but not for a lookup that hangs: at most 15 s (the
    lookup here would take 60 s); meanwhile the admin answers /ready with 503."""
    need_root()
    got = silent_nameserver(ctx, HANG_NS2)
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    t0 = time.monotonic()
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port),
                  dns_cluster("slow", "hang.test", a.port)],
                 [to("slow", "/slow"), to("dyn")], nameserver=HANG_NS2,
                 ns_options="timeout:30 attempts:2", wait_ready=False)
    wait_for(lambda: len(got) >= 1, 5.0 * slow_factor(), "the query at the silent nameserver")
    assert env.r.admin("GET", "/ready").status == 503
    env.r.wait_ready(25.0 * slow_factor())
    took = time.monotonic() - t0
    assert 14.0 < took < 16.0 * slow_factor() + 2.0, f"ready after {took:.1f} s"
    assert "unanswered after the startup bound" in env.r.stderr
    assert env.who() == (200, "a")
    assert env.who("/slow")[0] == 503


def test_dns_refresh_bad_settings_rejected_with_field_path(ctx):
    need_root()
    a = ctx.start_upstream("a")
    env = DnsEnv(ctx, "127.0.0.1 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port)], [to("dyn")])
    bad = [
        (dns_cluster("dyn", "backend.test", a.port, respect_dns_ttl=True),
         "resources[0].respect_dns_ttl: not supported"),
        (dns_cluster("dyn", "backend.test", a.port, refresh="0.001s"),
         "resources[0].dns_refresh_rate: must be greater than 1ms"),
        (dns_cluster("dyn", "backend.test", a.port,
                     dns_failure_refresh_rate={"max_interval": "1s"}),
         "resources[0].dns_failure_refresh_rate.base_interval: required"),
        (dns_cluster("dyn", "backend.test", a.port,
                     dns_failure_refresh_rate={"base_interval": "2s", "max_interval": "1s"}),
         "resources[0].dns_failure_refresh_rate.max_interval: must be at least base_interval"),
        (dns_cluster("dyn", "backend.test", a.port, type="LOGICAL_DNS",
                     load_assignment={"cluster_name": "dyn", "endpoints": [{"lb_endpoints": [
                         {"endpoint": {"address": {"socket_address": {
                             "address": h, "port_value": a.port}}}}
                         for h in ("backend.test", "other.test")]}]}),
         "resources[0].load_assignment.endpoints[0].lb_endpoints: LOGICAL_DNS clusters must "
         "have a single locality_lb_endpoint and a single lb_endpoint"),
    ]
    for i, (c, msg) in enumerate(bad, 1):
        write_doc(env.cds_path, {"version_info": f"x{i}", "resources": [c]})
        env.wait_stat("cluster_manager.cds.update_rejected", i)
        assert msg in env.r.stderr, (msg, env.r.stderr[-2000:])
    assert env.who() == (200, "a")


def test_dns_static_strict_dns_follows_a_moving_name(ctx):
    """A bootstrap STRICT_DNS cluster (static_resources, routed by the bootstrap's own inline
    route table) is resolved again every dns_refresh_rate: traffic, /clusters and the stats
    follow the name, a keep-alive client connection opened before goes on, and the cluster's
    counters go on counting across its versions."""
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    cfg = proxy_config({"s": [a.port]})
    as_dns(cfg["static_resources"]["clusters"][0], "backend.test", a.port, "STRICT_DNS")
    r, hosts = boot_dns(ctx, "127.0.0.2 backend.test\n", cfg)
    conn = HttpConn(r.port())

    def who(c=None):
        resp = (c or HttpConn(r.port())).request()
        return resp.status, resp.header("x-upstream-name")

    assert who(conn) == (200, "a")
    wait_for(lambda: stats(r).get("cluster.s.update_no_rebuild", 0) >= 1, 3.0 * slow_factor(),
             "an unchanged answer (the build's addresses were its first)")
    st = stats(r)
    assert st["cluster.s.membership_total"] == 1
    assert st.get("cluster.s.membership_change", 0) == 0
    rewrite(hosts, "127.0.0.3 backend.test\n")
    t0 = time.monotonic()
    wait_for(lambda: who() == (200, "b"), 3.0 * slow_factor(), "traffic on b")
    moved = time.monotonic() - t0
    assert moved < 2 * 0.55 * slow_factor() + 0.2, f"moved after {moved:.2f} s"
    assert who(conn) == (200, "b")  # the client's keep-alive connection goes on
    st = stats(r)
    assert st["cluster.s.membership_change"] == 1
    assert st["cluster.s.membership_total"] == 1
    assert st["cluster.s.upstream_rq_200"] >= 3  # counted on across versions
    text = r.admin("GET", "/clusters").text
    assert f"s::127.0.0.3:{a.port}::cx_total" in text, text
    assert f"s::127.0.0.2:{a.port}" not in text, text
    assert "s::added_via_api::false" in text, text
    # it comes back with two addresses
    rewrite(hosts, "127.0.0.2 backend.test\n127.0.0.3 backend.test\n")
    wait_for(lambda: stats(r)["cluster.s.membership_total"] == 2, 3.0 * slow_factor(),
             "two hosts")
    seen = {who(conn)[1] for _ in range(8)}
    assert seen == {"a", "b"}, seen
    r.stop(10 * slow_factor())
    assert "not freed" not in r.stderr and "still referenced" not in r.stderr


def test_dns_static_strict_dns_keeps_health_state_of_an_address_that_stays(ctx):
    need_root()
    from healthutil import FlipUpstream, http_hc
    with FlipUpstream("a") as a:
        b = ctx.start_upstream("b", listen=f"127.0.0.2:{a.port}")
        cfg = proxy_config({"s": [a.port]})
        c = as_dns(cfg["static_resources"]["clusters"][0], "backend.test", a.port, "STRICT_DNS")
        c["health_checks"] = [http_hc(interval="30s", unhealthy=1, healthy=1)]
        r, hosts = boot_dns(ctx, "127.0.0.1 backend.test\n", cfg)
        # startup waited for the first round of checks (warming), of the first version
        assert a.count("/healthz") >= 1
        checks = a.count("/healthz")
        a.status = 503  # from now on a fails any check
        rewrite(hosts, "127.0.0.1 backend.test\n127.0.0.2 backend.test\n")
        wait_for(lambda: stats(r)["cluster.s.membership_total"] == 2, 3.0 * slow_factor(),
                 "two hosts")
        wait_for(lambda: stats(r).get("cluster.s.health_check.success", 0) >= 2,
                 3.0 * slow_factor(), "b's first check")
        assert a.count("/healthz") == checks  # a's state (healthy, next check in 30 s) kept
        assert stats(r).get("cluster.s.health_check.failure", 0) == 0
        lines = r.admin("GET", "/clusters").text
        assert f"s::127.0.0.1:{a.port}::health_flags::healthy" in lines, lines
        assert b.alive()


def test_dns_refresh_ads_cluster_name_resolved_at_each_connection(ctx):
    need_root()
    from adsutil import RC_TYPE, ads_bootstrap, route_config, start_ads_server
    from adsutil import to as ads_to
    up = ctx.start_upstream("up")
    first = start_ads_server(ctx, name="ads1", host="127.0.0.2")
    try:
        second = start_ads_server(ctx, name="ads2", host="127.0.0.3", port=first.port)
    except Exception as e:  # the port may be taken on 127.0.0.3
        raise Skip(f"second ADS server on port {first.port}: {e}")
    for s in (first, second):
        s.set_routes("v1", [route_config("r1", [ads_to("c")])])
    cfg = ads_bootstrap({"c": [up.port]}, first.port)
    xc = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "xds_cluster"][0]
    xc["type"] = "STRICT_DNS"
    xc["dns_lookup_family"] = "V4_ONLY"
    sa = xc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    sa["socket_address"]["address"] = "xds.test"
    d = ctx.tmp / "dns"
    d.mkdir(exist_ok=True)
    hosts, resolv = d / "hosts", d / "resolv.conf"
    # the name does not resolve at startup: remora waits for its control plane (it used to
    # refuse the bootstrap: "the ADS cluster needs endpoints")
    hosts.write_text("127.0.0.9 other.test\n")
    resolv.write_text(f"nameserver {REFUSED_NS}\noptions timeout:1 attempts:1\n")
    r = ctx.start_remora(cfg, prefix=mount_prefix(hosts, resolv), wait_ready=False)
    # the ADS client's own failed lookup: it starts after the admin listens (the config
    # build's earlier "cannot resolve" line comes before it, and /ready was refused once)
    wait_for(lambda: "ads: cannot resolve 'xds.test'" in r.stderr, 5.0 * slow_factor(),
             "a failed lookup of xds.test by the ADS client")
    assert r.admin("GET", "/ready").status == 503
    rewrite(hosts, "127.0.0.2 xds.test\n")
    r.wait_ready(10.0 * slow_factor())
    first.wait_request(lambda q: q["type_url"] == RC_TYPE, 5.0 * slow_factor())
    assert http_request(r.port()).status == 200
    assert not [q for q in second.requests() if q["type_url"] == RC_TYPE]
    # the control plane moves: the next connection goes to the name's new address
    rewrite(hosts, "127.0.0.3 xds.test\n")
    first.drop()
    second.wait_request(lambda q: q["type_url"] == RC_TYPE, 10.0 * slow_factor(),
                        "a route request at the moved control plane")
    assert "ads: stream open to 127.0.0.3:" in r.stderr
    assert http_request(r.port()).status == 200


def test_dns_refresh_cds_over_ads_startup_waits_for_first_answer(ctx):
    need_root()
    from adsutil import ads_bootstrap, route_config, start_ads_server
    from adsutil import to as ads_to
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    ads = start_ads_server(ctx)
    dyn = dns_cluster("dyn", "backend.test", a.port)
    del dyn["@type"]
    ads.set_clusters("c1", [dyn])
    ads.set_routes("r1", [route_config("r1", [ads_to("dyn")])])
    cfg = ads_bootstrap({}, ads.port, cds={"ads": {}, "resource_api_version": "V3"})
    d = ctx.tmp / "dns"
    d.mkdir(exist_ok=True)
    hosts, resolv = d / "hosts", d / "resolv.conf"
    hosts.write_text("127.0.0.2 backend.test\n")
    resolv.write_text(f"nameserver {REFUSED_NS}\noptions timeout:1 attempts:1\n")
    r = ctx.start_remora(cfg, prefix=mount_prefix(hosts, resolv))
    # ready only once the cluster CDS brought has its first answer: served at once
    resp = http_request(r.port())
    assert (resp.status, resp.header("x-upstream-name")) == (200, "a")
    rewrite(hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: http_request(r.port()).header("x-upstream-name") == "b",
             3.0 * slow_factor(), "traffic on b")
    assert b.alive()


def test_dns_refresh_flapping_name_memory_flat(ctx):
    """40 address changes: each a new version of the cluster; the old ones are freed (none left
    at exit, LSan under ASan) and RSS stays flat."""
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port, refresh="0.05s")], [to("dyn")])
    conn = HttpConn(env.r.port())
    rss = []
    for i in range(1, 41):
        up = b if i % 2 else a
        rewrite(env.hosts, f"127.0.0.{3 if i % 2 else 2} backend.test\n")
        env.wait_stat("cluster.dyn.membership_change", i + 1)
        resp = conn.request()
        assert (resp.status, resp.header("x-upstream-name")) == (200, up.upstream_name)
        if i in (10, 40):
            rss.append(proc_rss_kb(env.r.pid))
    env.r.stop(10 * slow_factor())
    assert "not freed" not in env.r.stderr and "still referenced" not in env.r.stderr
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 2048, rss


def boot_dns(ctx, hosts_text, cfg, **kw):
    """remora with bootstrap ``cfg`` in a mount namespace whose /etc/hosts is ``hosts_text``
    (rewritten by the test); returns (remora, hosts path)."""
    d = ctx.tmp / "dns"
    d.mkdir(exist_ok=True)
    hosts, resolv = d / "hosts", d / "resolv.conf"
    hosts.write_text(hosts_text)
    resolv.write_text(f"nameserver {REFUSED_NS}\noptions timeout:1 attempts:1\n")
    for p in (hosts, resolv):
        p.chmod(0o644)
    return ctx.start_remora(cfg, prefix=mount_prefix(hosts, resolv), **kw), hosts


def as_dns(c, host, port, kind, refresh="0.5s"):
    """Bootstrap cluster dict ``c`` made a ``kind`` (STRICT_DNS, LOGICAL_DNS) cluster of one
    endpoint ``host``:``port``."""
    c["type"] = kind
    c["dns_refresh_rate"] = refresh
    c["dns_lookup_family"] = "V4_ONLY"
    c["load_assignment"] = {"cluster_name": c["name"], "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}]}
    return c


def test_dns_logical_new_connections_follow_the_name_existing_one_stays(ctx):
    """A bootstrap LOGICAL_DNS cluster: one host, the first address of the latest answer. After
    the name moves, the keep-alive connection to the old address still carries requests (Envoy
    never drains a logical host's connections); a new connection goes to the new address."""
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    cfg = proxy_config({"logical": [a.port]})
    as_dns(cfg["static_resources"]["clusters"][0], "backend.test", a.port, "LOGICAL_DNS")
    r, hosts = boot_dns(ctx, "127.0.0.2 backend.test\n127.0.0.3 backend.test\n", cfg)

    def who(headers=None):
        resp = http_request(r.port(), headers=headers)
        return resp.status, resp.header("x-upstream-name")

    assert who() == (200, "a")  # the first address of the answer
    assert stats(r)["cluster.logical.upstream_cx_total"] == 1
    assert stats(r)["cluster.logical.membership_total"] == 1
    rewrite(hosts, "127.0.0.3 backend.test\n127.0.0.2 backend.test\n")
    wait_for(lambda: "new connections go to 127.0.0.3:" in r.stderr, 3.0 * slow_factor(),
             "the logical host moved")
    # the idle keep-alive connection to a stays and is used (then closed by a)
    assert who({"x-upstream-connection-close": "1"}) == (200, "a")
    assert stats(r)["cluster.logical.upstream_cx_total"] == 1
    # a new connection: to the new address
    wait_for(lambda: stats(r).get("cluster.logical.upstream_cx_active", 1) == 0,
             3.0 * slow_factor(), "a's connection closed")
    assert who() == (200, "b")
    assert stats(r)["cluster.logical.upstream_cx_total"] == 2
    assert stats(r)["cluster.logical.membership_total"] == 1
    # the order of the same addresses matters (only the first one counts)
    rewrite(hosts, "127.0.0.2 backend.test\n127.0.0.3 backend.test\n")
    wait_for(lambda: r.stderr.count("new connections go to 127.0.0.2:") >= 2,
             3.0 * slow_factor(), "the logical host moved back")
    assert who({"x-upstream-connection-close": "1"}) == (200, "b")
    wait_for(lambda: stats(r).get("cluster.logical.upstream_cx_active", 1) == 0,
             3.0 * slow_factor(), "b's connection closed")
    assert who() == (200, "a")


def test_dns_logical_before_first_answer_has_no_host_and_clusters_shows_current(ctx):
    """A LOGICAL_DNS cluster whose name does not resolve yet has no host (as Envoy's): a request
    gets 503 "no healthy upstream" (UH, upstream_cx_none_healthy), not a connect failure, and
    /clusters lists no host for it; once the name resolves and then moves, /clusters shows the
    host's current address, not the one of build time."""
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    cfg = proxy_config({"logical": [a.port]})
    as_dns(cfg["static_resources"]["clusters"][0], "backend.test", a.port, "LOGICAL_DNS")
    r, hosts = boot_dns(ctx, "127.0.0.9 other.test\n", cfg)

    def hosts_shown():
        return [ln.split("::")[1] for ln in r.admin("GET", "/clusters").text.splitlines()
                if ln.startswith("logical::") and "::cx_total::" in ln]

    resp = http_request(r.port())
    assert resp.status == 503 and resp.body == b"no healthy upstream", (resp.status, resp.body)
    st = stats(r)
    assert st["cluster.logical.upstream_cx_none_healthy"] == 1
    assert st.get("cluster.logical.upstream_cx_connect_fail", 0) == 0
    assert hosts_shown() == []
    rewrite(hosts, "127.0.0.2 backend.test\n")
    wait_for(lambda: "new connections go to 127.0.0.2:" in r.stderr, 3.0 * slow_factor(),
             "the name resolved")
    assert http_request(r.port()).header("x-upstream-name") == "a"
    assert hosts_shown() == [f"127.0.0.2:{a.port}"]
    rewrite(hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: "new connections go to 127.0.0.3:" in r.stderr, 3.0 * slow_factor(),
             "the logical host moved")
    assert hosts_shown() == [f"127.0.0.3:{a.port}"]
    js = r.admin("GET", "/clusters?format=json").json()
    cl = [c for c in js["cluster_statuses"] if c["name"] == "logical"][0]
    assert [h["address"]["socket_address"] for h in cl["host_statuses"]] == [
        {"address": "127.0.0.3", "port_value": a.port}]


def test_dns_logical_from_cds_follows_the_name(ctx):
    need_root()
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    env = DnsEnv(ctx, "127.0.0.2 backend.test\n",
                 [dns_cluster("dyn", "backend.test", a.port, type="LOGICAL_DNS")], [to("dyn")])
    assert env.who() == (200, "a")  # startup waited for the first answer
    assert env.stat("cluster.dyn.update_success") >= 1
    rewrite(env.hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: "new connections go to 127.0.0.3:" in env.r.stderr, 3.0 * slow_factor(),
             "the logical host moved")
    assert env.who(path="/?connection_close=1") == (200, "a")  # its open connection stays
    wait_for(lambda: env.stat("cluster.dyn.upstream_cx_active") == 0, 3.0 * slow_factor(),
             "a's connection closed")
    assert env.who() == (200, "b")
    assert env.stat("cluster.dyn.membership_total") == 1
    assert env.stat("cluster.dyn.membership_change") == 0  # in place: no new version


def test_dns_logical_with_two_endpoints_is_refused(ctx):
    cfg = proxy_config({"s": [1]})
    c = as_dns(cfg["static_resources"]["clusters"][0], "backend.test", 1, "LOGICAL_DNS")
    c["load_assignment"]["endpoints"].append(c["load_assignment"]["endpoints"][0])
    path = ctx.tmp / "boot.yaml"
    path.write_text(to_yaml(cfg))
    p = subprocess.run([str(ctx.bin("remora")), "-c", str(path), "--mode", "validate"],
                       capture_output=True, text=True, timeout=10 * slow_factor())
    assert p.returncode == 1
    assert ("static_resources.clusters[0].load_assignment.endpoints: LOGICAL_DNS clusters must "
            "have a single locality_lb_endpoint and a single lb_endpoint") in p.stdout, (
        p.stdout + p.stderr)


def test_dns_static_strict_dns_under_tcp_proxy(ctx):
    """tcp_proxy to a bootstrap STRICT_DNS cluster: a session connects to the cluster's current
    version, so new sessions follow the name."""
    need_root()
    from test_tcp_proxy import tcp_config
    a = ctx.start_upstream("a", listen="127.0.0.2:0")
    b = ctx.start_upstream("b", listen=f"127.0.0.3:{a.port}")
    text = tcp_config({"c": [a.port]}, ["cluster: c"])
    text = text.replace("    type: STATIC", "    type: STRICT_DNS\n    dns_refresh_rate: 0.5s\n"
                        "    dns_lookup_family: V4_ONLY")
    text = text.replace("address: 127.0.0.1, port_value: " + str(a.port),
                        "address: backend.test, port_value: " + str(a.port))
    r, hosts = boot_dns(ctx, "127.0.0.2 backend.test\n", text)

    def who():
        s = socket.create_connection(("127.0.0.1", r.port("TCP")), timeout=5)
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
        s.close()
        head = got.decode("latin-1").lower()
        return "a" if "x-upstream-name: a" in head else "b" if "x-upstream-name: b" in head else head

    assert who() == "a"
    rewrite(hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: who() == "b", 3.0 * slow_factor(), "sessions to b")
    assert stats(r)["cluster.c.upstream_cx_total"] >= 2  # counted on across versions
    r.stop(10 * slow_factor())
    assert "not freed" not in r.stderr and "still referenced" not in r.stderr
