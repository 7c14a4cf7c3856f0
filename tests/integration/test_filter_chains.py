"""Several filter chains on one listener, chosen per connection by `filter_chain_match` (Envoy's
rules: level by level, the most specific value wins), `default_filter_chain`, the
`no_filter_chain_match` stat, shared stat prefixes, and the original_dst listener filter on a
connection that was not redirected. Everything stays on loopback: the source address tells the
chains apart (a client can bind any 127.0.0.0/8 address). The iptables REDIRECT cases, where
the original destination differs from the local address, are in test_capture.py."""

import socket

from lib import parse_responses, recv_until_closed, wait_for
from test_tcp_proxy import EchoServer, stat


def direct_chain(body, match=None, prefix="ingress", access_log=None):
    """A filter chain (YAML lines, indented for `filter_chains:`) whose connection manager
    answers every request with `body`."""
    out = []
    if match is not None:
        out += ["    - filter_chain_match: " + match, "      filters:"]
    else:
        out += ["    - filters:"]
    out += chain_filters(body, prefix, access_log, indent=6)
    return out


def chain_filters(body, prefix, access_log=None, indent=6):
    pad = " " * indent
    out = [pad + "- name: envoy.filters.network.http_connection_manager",
           pad + "  typed_config:",
           pad + '    "@type": type.googleapis.com/envoy.extensions.filters.network.'
                 'http_connection_manager.v3.HttpConnectionManager',
           pad + f"    stat_prefix: {prefix}",
           pad + "    route_config:",
           pad + "      virtual_hosts:",
           pad + "      - {name: all, domains: ['*'], routes: [{match: {prefix: /}, "
                 f"direct_response: {{status: 200, body: {{inline_string: {body}}}}}}}]}}",
           pad + "    http_filters:",
           pad + "    - name: envoy.filters.http.router",
           pad + "      typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http."
                 "router.v3.Router}"]
    if access_log is not None:
        out += [pad + "    access_log:",
                pad + "    - name: envoy.access_loggers.file",
                pad + "      typed_config:",
                pad + '        "@type": type.googleapis.com/envoy.extensions.access_loggers.file.'
                      'v3.FileAccessLog',
                pad + f"        path: {access_log}",
                pad + "        log_format: {text_format_source: {inline_string: "
                      "\"%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_PORT% "
                      "%DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%\\n\"}}"]
    return out


def config(chains, listener_extra=(), clusters=()):
    lines = ["admin:", "  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN}}}}",
             "static_resources:", "  listeners:", "  - name: multi",
             "    address: {socket_address: {address: 127.0.0.1, port_value: {{L}}}}"]
    lines += ["    " + x for x in listener_extra]
    lines += ["    filter_chains:"] + chains
    lines += ["  clusters:"] + list(clusters)
    if not clusters:
        lines[-1] = "  clusters: []"
    return "\n".join(lines) + "\n"


def get_from(port, src_ip, src_port=0, timeout=5.0):
    """One GET from `src_ip`:`src_port` (0: any port); returns (status, body), or None when the
    proxy closed the connection without answering."""
    s = socket.socket()
    s.settimeout(timeout)
    try:
        s.bind((src_ip, src_port))
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = recv_until_closed(s, timeout)
    finally:
        s.close()
    if not data:
        return None
    r = parse_responses(data)[0]
    return r.status, r.body


SRC_A = "127.0.0.2/32"


def test_most_specific_source_range_wins_and_the_rest_fall_to_a_catch_all(ctx):
    chains = (direct_chain("exact", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                                    "prefix_len: 32}]}")
              + direct_chain("wide", "{source_prefix_ranges: [{address_prefix: 127.0.0.0, "
                                     "prefix_len: 8}]}")
              + direct_chain("ten", "{source_prefix_ranges: [{address_prefix: 127.0.0.10, "
                                    "prefix_len: 31}]}")
              + direct_chain("any"))
    r = ctx.start_remora(config(chains))
    port = r.port("L")
    assert get_from(port, "127.0.0.2") == (200, b"exact")
    assert get_from(port, "127.0.0.3") == (200, b"wide")
    assert get_from(port, "127.0.0.11") == (200, b"ten")  # 127.0.0.10/31 covers .10 and .11
    assert get_from(port, "127.0.0.12") == (200, b"wide")
    # The first level decides before the source is looked at: a destination_port chain for
    # this listener's port takes every connection, whatever its source.
    r.stop(5)
    chains2 = chains + direct_chain("port", "{destination_port: {{L}}}")
    r2 = ctx.start_remora(config(chains2))
    assert get_from(r2.port("L"), "127.0.0.2") == (200, b"port")


def test_source_ports_and_source_type(ctx):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    fixed = s.getsockname()[1]
    s.close()  # a port that was free: the client binds it again below (SO_REUSEADDR not needed)
    chains = (direct_chain("by-port", f"{{source_ports: [{fixed}]}}")
              + direct_chain("local", "{source_type: SAME_IP_OR_LOOPBACK, "
                                      "source_prefix_ranges: [{address_prefix: 127.0.0.7, "
                                      "prefix_len: 32}]}")
              + direct_chain("external", "{source_type: EXTERNAL}"))
    r = ctx.start_remora(config(chains))
    port = r.port("L")
    # Loopback clients are SAME_IP_OR_LOOPBACK, more specific than ANY: the source_ports
    # chain (source type ANY) never sees them, and EXTERNAL never matches.
    assert get_from(port, "127.0.0.7") == (200, b"local")
    assert get_from(port, "127.0.0.1", fixed) is None
    assert stat(r, "listener.127.0.0.1_" + str(port) + ".no_filter_chain_match") == 1
    r.stop(5)
    r2 = ctx.start_remora(config(direct_chain("by-port", f"{{source_ports: [{fixed}]}}")
                                 + direct_chain("other")))
    assert get_from(r2.port("L"), "127.0.0.1", fixed) == (200, b"by-port")
    assert get_from(r2.port("L"), "127.0.0.1") == (200, b"other")


def test_no_chain_matches_closes_and_counts_then_the_default_chain_takes_it(ctx):
    chains = direct_chain("a", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                               "prefix_len: 32}]}")
    r = ctx.start_remora(config(chains))
    port = r.port("L")
    name = f"listener.127.0.0.1_{port}."
    assert get_from(port, "127.0.0.3") is None
    assert get_from(port, "127.0.0.4") is None
    assert stat(r, name + "no_filter_chain_match") == 2
    # Envoy closes such a connection before it counts as one.
    assert stat(r, name + "downstream_cx_total") == 0
    assert get_from(port, "127.0.0.2") == (200, b"a")
    assert stat(r, name + "downstream_cx_total") == 1
    r.stop(5)
    dflt = ["default_filter_chain:", "  filters:"] + [
        "  " + x for x in chain_filters("fallback", "dflt", indent=2)]
    r2 = ctx.start_remora(config(chains, listener_extra=dflt))
    port = r2.port("L")
    assert get_from(port, "127.0.0.3") == (200, b"fallback")
    assert get_from(port, "127.0.0.2") == (200, b"a")
    assert stat(r2, f"listener.127.0.0.1_{port}.no_filter_chain_match") == 0
    assert stat(r2, "http.dflt.downstream_rq_2xx") == 1
    assert stat(r2, "http.ingress.downstream_rq_2xx") == 1


def test_tcp_and_http_chains_on_one_listener_and_a_shared_stat_prefix(ctx):
    echo = EchoServer("e")
    try:
        tcp_chain = ["    - filter_chain_match: {source_prefix_ranges: [{address_prefix: 127.0.0.5, "
                     "prefix_len: 32}]}",
                     "      filters:",
                     "      - name: envoy.filters.network.tcp_proxy",
                     "        typed_config:",
                     '          "@type": type.googleapis.com/envoy.extensions.filters.network.'
                     'tcp_proxy.v3.TcpProxy',
                     "          stat_prefix: raw",
                     "          cluster: echo"]
        chains = (direct_chain("one", "{source_prefix_ranges: [{address_prefix: 127.0.0.2, "
                                      "prefix_len: 32}]}", prefix="shared")
                  + direct_chain("two", None, prefix="shared") + tcp_chain)
        clusters = ["  - name: echo", "    type: STATIC", "    connect_timeout: 1s",
                    "    load_assignment:", "      cluster_name: echo", "      endpoints:",
                    "      - lb_endpoints:",
                    f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
                    f"port_value: {echo.port}}}}}}}"]
        r = ctx.start_remora(config(chains, clusters=clusters))
        port = r.port("L")
        assert get_from(port, "127.0.0.2") == (200, b"one")
        assert get_from(port, "127.0.0.3") == (200, b"two")
        s = socket.socket()
        s.bind(("127.0.0.5", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"ping")
        s.shutdown(socket.SHUT_WR)
        assert recv_until_closed(s) == b"ping|e"
        s.close()
        assert stat(r, "tcp.raw.downstream_cx_total") == 1
        # Both connection managers say stat_prefix "shared": one set of stats, as in Envoy.
        assert stat(r, "http.shared.downstream_rq_2xx") == 2
        text = r.admin("GET", "/stats").body.decode()
        assert text.count("http.shared.downstream_rq_2xx:") == 1
        wait_for(lambda: stat(r, f"listener.127.0.0.1_{port}.downstream_cx_total") == 3)
    finally:
        echo.close()


def test_original_dst_without_a_redirect_keeps_the_local_address(ctx):
    log = ctx.tmp / "local.log"
    od = ["listener_filters:",
          "- name: envoy.filters.listener.original_dst",
          "  typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.listener."
          "original_dst.v3.OriginalDst}"]
    r = ctx.start_remora(config(direct_chain("x", None, access_log=log), listener_extra=od))
    port = r.port("L")
    assert get_from(port, "127.0.0.2") == (200, b"x")

    def logged():
        try:
            with open(log) as f:
                return f.read()
        except FileNotFoundError:
            return ""
    wait_for(lambda: logged().endswith("\n"), what="the access log line")
    assert logged() == f"127.0.0.1:{port} {port} 127.0.0.1\n"
