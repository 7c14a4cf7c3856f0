"""Transparent capture as in an ECS task with proxyConfiguration APPMESH: the iptables nat
rules of the aws-appmesh CNI plugin (netnsutil.install_ecs_rules) in a task namespace, remora
in it as uid 1337, a "service" host in a second namespace behind a veth pair.

Egress: the app (root in the task namespace) connects to svc:PORT; OUTPUT REDIRECTs it to
15001, except remora's own connections (uid 1337), EgressIgnoredPorts and EgressIgnoredIPs.
Ingress: the service host connects to task:APP_PORT; PREROUTING REDIRECTs it to 15000.
The listener filter envoy.filters.listener.original_dst restores the original destination
(SO_ORIGINAL_DST) as the connection's local address, which filter_chain_match and
%DOWNSTREAM_LOCAL_ADDRESS% then see. Fixed ports (15000, 15001, 8080, ...) are safe here:
only the test's own namespaces bind them."""

import os
import socket

import lib
from lib import build_request, http_request, raw_exchange, to_yaml, wait_for
from netnsutil import (PROXY_UID, install_ecs_rules, netns_pair, start_remora_in_task,
                       start_upstream_in)
from proxyutil import FILE_LOG_TYPE, stats, wait_stat

EGRESS, INGRESS, ADMIN = 15001, 15000, 9901
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
ORIGINAL_DST = {
    "name": "envoy.filters.listener.original_dst",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                              "original_dst.v3.OriginalDst"},
}
NO_MATCH = f"listener.0.0.0.0_{EGRESS}.no_filter_chain_match"
SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h, level SOL_IP


# ---- config --------------------------------------------------------------------------------


def cluster(name, host, port):
    return {"name": name, "type": "STATIC", "connect_timeout": "1s",
            "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": lib.socket_address(port, host)}}]}]}}


def hcm(stat_prefix, cluster_name, chain_header, access_log=None):
    """An HCM filter whose one route goes to ``cluster_name`` and adds the response header
    x-remora-chain: ``chain_header`` (so an answer shows which chain served it)."""
    tc = {
        "@type": lib.HCM_TYPE,
        "stat_prefix": stat_prefix,
        "route_config": {"name": stat_prefix, "virtual_hosts": [{
            "name": "all", "domains": ["*"],
            "routes": [{
                "match": {"prefix": "/"},
                "route": {"cluster": cluster_name},
                "response_headers_to_add": [
                    {"header": {"key": "x-remora-chain", "value": chain_header}}],
            }]}]},
        "http_filters": [{"name": "envoy.filters.http.router",
                          "typed_config": {"@type": lib.ROUTER_TYPE}}],
    }
    if access_log is not None:
        tc["access_log"] = [access_log]
    return {"name": "envoy.filters.network.http_connection_manager", "typed_config": tc}


def tcp_proxy(stat_prefix, cluster_name):
    return {"name": "envoy.filters.network.tcp_proxy",
            "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix,
                             "cluster": cluster_name}}


def chain(filt, destination_port=None):
    c = {"filters": [filt]}
    if destination_port is not None:
        c["filter_chain_match"] = {"destination_port": destination_port}
    return c


def listener(name, port, chains, original_dst=True, default_chain=None):
    lst = {"name": name, "address": lib.socket_address(port, "0.0.0.0")}
    if original_dst:
        lst["listener_filters"] = [ORIGINAL_DST]
    lst["filter_chains"] = chains
    if default_chain is not None:
        lst["default_filter_chain"] = default_chain
    return lst


def config(listeners, clusters):
    return to_yaml({"admin": {"address": lib.socket_address(ADMIN)},
                    "static_resources": {"listeners": listeners, "clusters": clusters}}) + "\n"


def file_log(path, fmt):
    return {"name": "envoy.access_loggers.file",
            "typed_config": {"@type": FILE_LOG_TYPE, "path": str(path),
                             "log_format": {"text_format_source": {"inline_string": fmt}}}}


# ---- in the namespaces ---------------------------------------------------------------------


def app_get(pair, host, port, path="/"):
    """A request from the app in the task namespace (root, so its connection is captured)."""
    return pair.call(pair.task, http_request, port, "GET", path, host=host)


def app_raw(pair, host, port):
    """A request sent raw from the app; returns lib.RawReply (bytes and how it ended)."""
    return pair.call(pair.task, raw_exchange, port, build_request("GET", "/", host=host),
                     timeout=3.0, host=host)


def rstats(pair, r):
    return pair.call(pair.task, stats, r)


def rwait(pair, r, name, want):
    return pair.call(pair.task, wait_stat, r, name, want)


def up_requests(pair, ns, up):
    return pair.call(ns, up.stats)["requests"]


def served_by(resp, upstream, chain_header):
    """Asserts a 200 from ``upstream`` whose x-remora-chain header is ``chain_header`` (None:
    no such header, the answer did not come through an HCM of ours)."""
    assert resp.status == 200, resp
    assert resp.header("x-upstream-name") == upstream, resp
    assert resp.body == upstream.encode() + b"\n", resp
    assert resp.header("x-remora-chain") == chain_header, resp


def assert_closed_unanswered(reply):
    """remora accepted the captured connection (else connect() would have been refused: no
    server listens there) and closed it without a byte."""
    assert bytes(reply) == b"", reply
    assert reply.end in ("eof", "rst"), reply


def stop(r):
    assert r.stop(r.term_timeout) == 0, r.tail()


def proc_uids(pid):
    """Real, effective, saved and filesystem uids of ``pid``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def original_dst(sock):
    """getsockopt(SOL_IP, SO_ORIGINAL_DST) as "ip:port" (what the listener filter reads)."""
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    return f"{socket.inet_ntoa(raw[4:8])}:{int.from_bytes(raw[2:4], 'big')}"


def listen_in(ctx, pair, ns, port):
    """A listening socket on 0.0.0.0:port in ``ns`` (closed at cleanup)."""
    def make():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(8)
        return s

    s = pair.call(ns, make)
    ctx.sockets.append(s)
    s.settimeout(5.0 * lib.slow_factor())
    return s


def connect_in(ctx, pair, ns, host, port):
    c = pair.call(ns, socket.create_connection, (host, port), 5.0 * lib.slow_factor())
    ctx.sockets.append(c)
    return c


def accept(ls):
    a, peer = ls.accept()
    return a, f"{peer[0]}:{peer[1]}", "%s:%d" % a.getsockname()


# ---- tests ---------------------------------------------------------------------------------


def test_capture_harness_egress_single_chain(ctx):
    """Today's features only: one HCM chain on 15001, no listener filter. The app's request to
    svc:8080 is REDIRECTed to remora, which proxies it to the STATIC cluster svc:8080; remora's
    own connection there (uid 1337) is not captured again. EgressIgnoredPorts and the ignored
    169.254.170.2 go direct."""
    pair = netns_pair(ctx)
    rules = install_ecs_rules(pair, egress_ignored_ports=[8443])
    assert "--uid-owner 1337 -j RETURN" in rules and "REDIRECT --to-ports 15001" in rules, rules
    pair.add_svc_address("169.254.170.2")
    svc = start_upstream_in(ctx, pair, pair.svc, "svc8080", "0.0.0.0:8080")
    ignored = start_upstream_in(ctx, pair, pair.svc, "direct8443", "0.0.0.0:8443")
    r = start_remora_in_task(ctx, pair, config(
        [listener("egress", EGRESS, [chain(hcm("egress_http", "svc", "egress"))],
                  original_dst=False)],
        [cluster("svc", pair.svc_ip, 8080)]))
    # ip netns exec and setpriv exec'd remora: the pid is remora's, running as the proxy uid.
    assert os.readlink(f"/proc/{r.pid}/exe") == str(ctx.bin("remora").resolve())
    assert proc_uids(r.pid) == [PROXY_UID] * 4

    # The app: real curl, as root in the task namespace, to the service's address.
    p = pair.curl(pair.task, ["-D", "-", f"http://{pair.svc_ip}:8080/"])
    assert p.returncode == 0, p.stderr
    (resp,) = lib.parse_responses(p.stdout)
    served_by(resp, "svc8080", "egress")
    st = rwait(pair, r, "http.egress_http.downstream_rq_2xx", 1)
    # One request in, one out: remora's upstream connection was not sent back to 15001
    # (without the uid RETURN it would loop until it failed).
    assert st["http.egress_http.downstream_rq_total"] == 1, st
    assert st["http.egress_http.downstream_cx_total"] == 1, st
    assert st["cluster.svc.upstream_cx_total"] == 1, st
    assert st["cluster.svc.upstream_rq_total"] == 1, st
    assert up_requests(pair, pair.svc, svc) == 1

    # EgressIgnoredPorts: straight to the service, remora sees nothing.
    served_by(app_get(pair, pair.svc_ip, 8443), "direct8443", None)
    assert up_requests(pair, pair.svc, ignored) == 1
    # EgressIgnoredIPs (169.254.170.2, added by the ECS agent): direct as well.
    served_by(app_get(pair, "169.254.170.2", 8080), "svc8080", None)
    assert up_requests(pair, pair.svc, svc) == 2
    # And a second captured request (this time lib's client) goes through remora again.
    served_by(app_get(pair, pair.svc_ip, 8080, "/again"), "svc8080", "egress")
    st = rwait(pair, r, "http.egress_http.downstream_rq_2xx", 2)
    assert st["http.egress_http.downstream_cx_total"] == 2, st
    assert up_requests(pair, pair.svc, svc) == 3


def test_capture_harness_so_original_dst(ctx):
    """What the rules give a listener, seen with plain sockets (no remora): the addresses the
    original_dst tests below expect. Egress: local 127.0.0.1:15001, SO_ORIGINAL_DST svc:8080.
    Ingress: local task:15000, SO_ORIGINAL_DST task:8081. A connection not redirected: its
    own address. uid 1337's connections are not captured."""
    pair = netns_pair(ctx)
    install_ecs_rules(pair, proxy_ingress_port=INGRESS, app_ports=[8080, 8081])
    eg = listen_in(ctx, pair, pair.task, EGRESS)
    ing = listen_in(ctx, pair, pair.task, INGRESS)

    c = connect_in(ctx, pair, pair.task, pair.svc_ip, 8080)
    a, peer, local = accept(eg)
    ctx.sockets.append(a)
    assert local == f"127.0.0.1:{EGRESS}", local
    assert original_dst(a) == f"{pair.svc_ip}:8080", original_dst(a)
    assert peer == "%s:%d" % c.getsockname() and peer.startswith(pair.task_ip + ":"), peer

    c = connect_in(ctx, pair, pair.svc, pair.task_ip, 8081)
    a, peer, local = accept(ing)
    ctx.sockets.append(a)
    assert local == f"{pair.task_ip}:{INGRESS}", local
    assert original_dst(a) == f"{pair.task_ip}:8081", original_dst(a)
    assert peer == "%s:%d" % c.getsockname() and peer.startswith(pair.svc_ip + ":"), peer

    connect_in(ctx, pair, pair.task, "127.0.0.1", EGRESS)  # local: not redirected
    a, peer, local = accept(eg)
    ctx.sockets.append(a)
    assert local == f"127.0.0.1:{EGRESS}" and original_dst(a) == local, original_dst(a)

    # The proxy's uid goes straight out: refused by the service host (nothing on 8080 there),
    # and nothing arrives at 15001.
    p = pair.run(pair.task, ["setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_UID}",
                             "--clear-groups", "--", "curl", "-sS", "-m", "5", "-o", "/dev/null",
                             f"http://{pair.svc_ip}:8080/"], check=False)
    assert p.returncode == 7, (p.returncode, p.stderr)  # 7: could not connect
    eg.setblocking(False)
    try:
        eg.accept()
    except BlockingIOError:
        pass
    else:
        raise AssertionError("uid 1337's connection was captured")


def test_capture_egress_original_dst_two_chains(ctx):
    """original_dst + destination_port chains on 15001: svc:8080 reaches the HCM chain (its
    header, its access log showing the original destination), svc:9090 the tcp_proxy chain."""
    pair = netns_pair(ctx)
    install_ecs_rules(pair)
    svc = start_upstream_in(ctx, pair, pair.svc, "svc8080", "0.0.0.0:8080")
    raw = start_upstream_in(ctx, pair, pair.svc, "svc9090", "0.0.0.0:9090")
    log = pair.rundir / "egress.log"
    r = start_remora_in_task(ctx, pair, config(
        [listener("egress", EGRESS, [
            chain(hcm("egress_http", "svc8080", "http8080",
                      file_log(log, "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_PORT%\n")),
                  destination_port=8080),
            chain(tcp_proxy("egress_tcp", "svc9090"), destination_port=9090),
        ])],
        [cluster("svc8080", pair.svc_ip, 8080), cluster("svc9090", pair.svc_ip, 9090)]))

    served_by(app_get(pair, pair.svc_ip, 8080), "svc8080", "http8080")
    line = wait_for(lambda: log.exists() and log.read_text().splitlines()[:1], 5.0,
                    "the access log line")[0]
    assert line == f"{pair.svc_ip}:8080 8080", line

    # Through tcp_proxy the bytes pass untouched: no header of ours.
    served_by(app_get(pair, pair.svc_ip, 9090), "svc9090", None)
    st = rwait(pair, r, "tcp.egress_tcp.downstream_cx_total", 1)
    assert st["http.egress_http.downstream_rq_total"] == 1, st
    assert st["cluster.svc9090.upstream_cx_total"] == 1, st
    assert st.get(NO_MATCH, 0) == 0, st
    assert up_requests(pair, pair.svc, svc) == 1
    assert up_requests(pair, pair.svc, raw) == 1
    assert log.read_text().count("\n") == 1  # the tcp_proxy chain's connection is not in it


def test_capture_ingress_app_ports(ctx):
    """The service host connects to task:8080 and task:8081 (AppPorts); PREROUTING sends both
    to 15000, where original_dst + destination_port picks each port's own chain and cluster
    (the app on 127.0.0.1:PORT). A port outside AppPorts is not captured."""
    pair = netns_pair(ctx)
    rules = install_ecs_rules(pair, proxy_ingress_port=INGRESS, app_ports=[8080, 8081])
    assert "--dports 8080,8081 -j REDIRECT --to-ports 15000" in rules, rules
    apps = {port: start_upstream_in(ctx, pair, pair.task, f"app{port}", f"127.0.0.1:{port}")
            for port in (8080, 8081)}
    r = start_remora_in_task(ctx, pair, config(
        [listener("ingress", INGRESS, [
            chain(hcm(f"ingress_{port}", f"app{port}", f"in{port}"), destination_port=port)
            for port in (8080, 8081)])],
        [cluster(f"app{port}", "127.0.0.1", port) for port in (8080, 8081)]))

    for port in (8080, 8081, 8080):
        resp = pair.call(pair.svc, http_request, port, host=pair.task_ip)
        served_by(resp, f"app{port}", f"in{port}")
    st = rwait(pair, r, "http.ingress_8081.downstream_rq_2xx", 1)
    st = rwait(pair, r, "http.ingress_8080.downstream_rq_2xx", 2)
    assert st["cluster.app8080.upstream_rq_total"] == 2, st
    assert st["cluster.app8081.upstream_rq_total"] == 1, st
    assert up_requests(pair, pair.task, apps[8080]) == 2
    assert up_requests(pair, pair.task, apps[8081]) == 1
    # Not an AppPort: no REDIRECT, and nothing listens on the task's address there.
    try:
        pair.call(pair.svc, http_request, 8082, host=pair.task_ip)
    except ConnectionRefusedError:
        pass
    else:
        raise AssertionError("task:8082 answered; only AppPorts should reach remora")


def test_capture_no_chain_match_and_default_chain(ctx):
    """Only a destination_port 8080 chain: a captured connection to svc:7070 is closed at once
    and counted as no_filter_chain_match. With a default_filter_chain it is served there."""
    pair = netns_pair(ctx)
    install_ecs_rules(pair)
    svc = start_upstream_in(ctx, pair, pair.svc, "svc8080", "0.0.0.0:8080")
    chains = [chain(hcm("egress_http", "svc8080", "http8080"), destination_port=8080)]
    clusters = [cluster("svc8080", pair.svc_ip, 8080)]
    r = start_remora_in_task(ctx, pair, config([listener("egress", EGRESS, chains)], clusters))

    assert_closed_unanswered(app_raw(pair, pair.svc_ip, 7070))
    st = rwait(pair, r, NO_MATCH, 1)
    assert st.get("http.egress_http.downstream_cx_total", 0) == 0, st
    assert up_requests(pair, pair.svc, svc) == 0
    served_by(app_get(pair, pair.svc_ip, 8080), "svc8080", "http8080")  # the chain works
    assert rstats(pair, r)[NO_MATCH] == 1
    stop(r)

    r = start_remora_in_task(ctx, pair, config(
        [listener("egress", EGRESS, chains,
                  default_chain={"filters": [hcm("egress_default", "svc8080", "default")]})],
        clusters))
    served_by(app_get(pair, pair.svc_ip, 7070), "svc8080", "default")
    served_by(app_get(pair, pair.svc_ip, 8080), "svc8080", "http8080")
    st = rwait(pair, r, "http.egress_default.downstream_rq_2xx", 1)
    st = rwait(pair, r, "http.egress_http.downstream_rq_2xx", 1)
    assert st.get(NO_MATCH, 0) == 0, st
    assert up_requests(pair, pair.svc, svc) == 3


def test_capture_without_original_dst_sees_proxy_port(ctx):
    """Without the listener filter a captured connection's local address is the REDIRECT's
    (port 15001), so a destination_port 8080 chain does not match it: closed and counted. The
    same config with the filter added serves it."""
    pair = netns_pair(ctx)
    install_ecs_rules(pair)
    svc = start_upstream_in(ctx, pair, pair.svc, "svc8080", "0.0.0.0:8080")
    chains = [chain(hcm("egress_http", "svc8080", "http8080"), destination_port=8080)]
    clusters = [cluster("svc8080", pair.svc_ip, 8080)]
    r = start_remora_in_task(ctx, pair, config(
        [listener("egress", EGRESS, chains, original_dst=False)], clusters))

    assert_closed_unanswered(app_raw(pair, pair.svc_ip, 8080))
    st = rwait(pair, r, NO_MATCH, 1)
    assert st.get("http.egress_http.downstream_cx_total", 0) == 0, st
    assert up_requests(pair, pair.svc, svc) == 0
    stop(r)

    r = start_remora_in_task(ctx, pair, config([listener("egress", EGRESS, chains)], clusters))
    served_by(app_get(pair, pair.svc_ip, 8080), "svc8080", "http8080")
    st = rwait(pair, r, "http.egress_http.downstream_rq_2xx", 1)
    assert st.get(NO_MATCH, 0) == 0, st
    assert up_requests(pair, pair.svc, svc) == 1


def od_cluster(name):
    return {"name": name, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
            "connect_timeout": "1s"}


def test_capture_egress_passthrough_to_the_original_destination(ctx):
    """App Mesh's egress ALLOW_ALL: destinations the mesh does not know pass through to where
    the app was connecting, over an ORIGINAL_DST cluster. HTTP on 8080 through an HCM chain
    (its header on the answer), any other port through a tcp_proxy default chain; one host per
    destination, so two services on two ports reach their own upstream."""
    pair = netns_pair(ctx)
    install_ecs_rules(pair)
    web = start_upstream_in(ctx, pair, pair.svc, "web", "0.0.0.0:8080")
    other = start_upstream_in(ctx, pair, pair.svc, "other", "0.0.0.0:7070")
    third = start_upstream_in(ctx, pair, pair.svc, "third", "0.0.0.0:7071")
    r = start_remora_in_task(ctx, pair, config(
        [listener("egress", EGRESS,
                  [chain(hcm("egress_http", "passthrough", "http"), destination_port=8080)],
                  default_chain={"filters": [tcp_proxy("egress_tcp", "passthrough")]})],
        [od_cluster("passthrough")]))

    served_by(app_get(pair, pair.svc_ip, 8080), "web", "http")
    served_by(app_get(pair, pair.svc_ip, 7070), "other", None)
    served_by(app_get(pair, pair.svc_ip, 7071), "third", None)
    served_by(app_get(pair, pair.svc_ip, 8080), "web", "http")
    st = rwait(pair, r, "tcp.egress_tcp.downstream_cx_total", 2)
    assert st["http.egress_http.downstream_rq_2xx"] == 2, st
    # three destinations, three hosts: the HTTP one's pooled connection served both requests,
    # each TCP session had its own connection
    assert st["cluster.passthrough.upstream_cx_total"] == 3, st
    assert st["cluster.passthrough.upstream_rq_total"] == 2, st
    assert st.get("cluster.passthrough.upstream_cx_none_healthy", 0) == 0, st
    for up in (other, third):
        assert up_requests(pair, pair.svc, up) == 1
    assert up_requests(pair, pair.svc, web) == 2
    # A destination where nothing listens: the upstream connect fails, the app's connection is
    # closed (tcp_proxy) without an answer.
    assert_closed_unanswered(app_raw(pair, pair.svc_ip, 7072))
    rwait(pair, r, "cluster.passthrough.upstream_cx_connect_fail", 1)


def test_capture_egress_passthrough_from_cds(ctx):
    """The same TCP passthrough with the ORIGINAL_DST cluster from CDS (a file, as remora-xds
    serves cds_egress_passthrough over ADS): the static tcp_proxy names a cluster the bootstrap
    does not hold, found by name at connection time. Before the cluster arrives a connection is
    closed unanswered (tcp.<prefix>.downstream_cx_no_route); then each destination gets its own
    host; after its removal, closed again."""
    import test_dynamic_resources as dyn
    from test_reload import write_doc

    pair = netns_pair(ctx)
    install_ecs_rules(pair)
    other = start_upstream_in(ctx, pair, pair.svc, "other", "0.0.0.0:7070")
    third = start_upstream_in(ctx, pair, pair.svc, "third", "0.0.0.0:7071")
    d = ctx.tmp / "cds"
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o755)
    cds_path = d / "cds.yaml"
    write_doc(cds_path, dyn.cds_doc("v1", []))
    os.chmod(cds_path, 0o644)
    text = config([listener("egress", EGRESS, [chain(tcp_proxy("egress_tcp", "pt"))])],
                  [cluster("unused", "127.0.0.1", 1)])
    text += to_yaml({"dynamic_resources": {"cds_config": {
        "path_config_source": {"path": str(cds_path)}, "resource_api_version": "V3"}}}) + "\n"
    r = start_remora_in_task(ctx, pair, text)

    assert_closed_unanswered(app_raw(pair, pair.svc_ip, 7070))
    rwait(pair, r, "tcp.egress_tcp.downstream_cx_no_route", 1)

    pt = dyn.cluster("pt", [], type="ORIGINAL_DST", lb_policy="CLUSTER_PROVIDED")
    write_doc(cds_path, dyn.cds_doc("v2", [pt]))
    os.chmod(cds_path, 0o644)
    rwait(pair, r, "cluster_manager.cds.update_success", 2)
    served_by(app_get(pair, pair.svc_ip, 7070), "other", None)
    served_by(app_get(pair, pair.svc_ip, 7071), "third", None)
    st = rwait(pair, r, "cluster.pt.upstream_cx_total", 2)
    assert st["tcp.egress_tcp.downstream_cx_no_route"] == 1, st
    assert st.get("cluster.pt.upstream_cx_none_healthy", 0) == 0, st
    for up in (other, third):
        assert up_requests(pair, pair.svc, up) == 1

    write_doc(cds_path, dyn.cds_doc("v3", []))
    os.chmod(cds_path, 0o644)
    rwait(pair, r, "cluster_manager.cds.update_success", 3)
    assert_closed_unanswered(app_raw(pair, pair.svc_ip, 7070))
    rwait(pair, r, "tcp.egress_tcp.downstream_cx_no_route", 2)
