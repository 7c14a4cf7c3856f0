"""TLS and mTLS (transport_socket envoy.transport_sockets.tls) with real clients and servers:
curl and Python's ssl in front, Python's ssl and nghttpd behind. Downstream termination with
ALPN choosing HTTP/2 or HTTP/1.1; client certificates required and checked against a CA and a
SPIFFE URI SAN; upstream TLS with SNI, server verification and a client certificate, over
HTTP/1.1 and HTTP/2; the TCP proxy with TLS on both sides; health checks over TLS; the
handshake timeout; the ssl.* stats that say why a handshake failed."""

import shutil
import socket
import ssl
import subprocess
import threading

from lib import Skip, http_request, wait_for
from proxyutil import stats
from tlsutil import SPIFFE, Pki, TlsHttpServer, client_context, tls_connect

TLS_DOWN = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HCM = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
       "HttpConnectionManager")
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
TCP = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"


def pki(ctx):
    p = Pki(ctx.tmp / "pki")
    p.server = p.leaf("server", f"DNS:backend.test,URI:{SPIFFE}backend")
    p.frontend = p.leaf("frontend", f"URI:{SPIFFE}frontend")
    p.evil = p.leaf("evil", f"URI:{SPIFFE}evil")
    return p


def downstream_tls(p, require_client=False, sans=None, alpn=None, validate=False):
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_DOWN}']
    if require_client:
        lines.append("    require_client_certificate: true")
    lines += ["    common_tls_context:",
              "      tls_certificates:",
              f"      - certificate_chain: {{filename: {p.server[0]}}}",
              f"        private_key: {{filename: {p.server[1]}}}"]
    if alpn:
        lines.append(f"      alpn_protocols: [{', '.join(alpn)}]")
    if require_client or validate or sans:
        lines += ["      validation_context:", f"        trusted_ca: {{filename: {p.ca}}}"]
        if sans:
            lines.append("        match_typed_subject_alt_names:")
            for kind, value in sans:
                lines.append(f"        - {{san_type: {kind}, matcher: {{exact: '{value}'}}}}")
    return lines


def upstream_tls(ca=None, sni=None, cert=None, sans=None, alpn=None):
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_UP}']
    if sni:
        lines.append(f"    sni: {sni}")
    lines.append("    common_tls_context:")
    body = []
    if cert:
        body += ["      tls_certificates:",
                 f"      - certificate_chain: {{filename: {cert[0]}}}",
                 f"        private_key: {{filename: {cert[1]}}}"]
    if alpn:
        body.append(f"      alpn_protocols: [{', '.join(alpn)}]")
    if ca:
        body += ["      validation_context:", f"        trusted_ca: {{filename: {ca}}}"]
        if sans:
            body.append("        match_typed_subject_alt_names:")
            for kind, value in sans:
                body.append(f"        - {{san_type: {kind}, matcher: {{exact: '{value}'}}}}")
    return lines + (body or ["      {}"])


def indent(lines, n):
    return ["" if not x else " " * n + x for x in lines]


def access_log(path, fmt, indent):
    pad = " " * indent
    return [pad + "access_log:",
            pad + "- name: envoy.access_loggers.file",
            pad + "  typed_config:",
            pad + '    "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.'
                  'FileAccessLog',
            pad + f"    path: {path}",
            pad + f'    log_format: {{text_format_source: {{inline_string: "{fmt}\\n"}}}}']


def config(chain_tls=(), cluster_port=None, cluster_tls=(), tcp=False, chain_extra=(),
           cluster_extra=(), http2_upstream=False, log=None, listener_extra=(), hcm_extra=()):
    lines = ["admin:", "  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN}}}}",
             "static_resources:", "  listeners:", "  - name: tls",
             "    address: {socket_address: {address: 127.0.0.1, port_value: {{L}}}}"]
    lines += indent(list(listener_extra), 4)
    lines += ["    filter_chains:", "    - filters:"]
    if tcp:
        lines += ["      - name: envoy.filters.network.tcp_proxy", "        typed_config:",
                  f'          "@type": {TCP}', "          stat_prefix: tcp",
                  "          cluster: backend"]
        if log:
            lines += access_log(*log, indent=10)
    else:
        lines += [
            "      - name: envoy.filters.network.http_connection_manager",
            "        typed_config:",
            f'          "@type": {HCM}',
            "          stat_prefix: tls",
            "          route_config:",
            "            virtual_hosts:",
            "            - {name: all, domains: ['*'], routes: [{match: {prefix: /}, "
            "route: {cluster: backend}}]}",
            "          http_filters:",
            f"          - {{name: envoy.filters.http.router, typed_config: {{'@type': {ROUTER}}}}}"]
        if log:
            lines += access_log(*log, indent=10)
        lines += indent(list(hcm_extra), 10)
    lines += indent(list(chain_tls) + list(chain_extra), 6)
    lines += ["  clusters:", "  - name: backend", "    connect_timeout: 2s", "    type: STATIC",
              "    load_assignment:", "      cluster_name: backend", "      endpoints:",
              "      - lb_endpoints:",
              f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
              f"port_value: {cluster_port}}}}}}}"]
    if http2_upstream:
        lines += ["    typed_extension_protocol_options:",
                  "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
                  '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.'
                  'HttpProtocolOptions',
                  "        explicit_http_config: {http2_protocol_options: {}}"]
    lines += indent(list(cluster_tls) + list(cluster_extra), 4)
    return "\n".join(lines) + "\n"


def curl(port, *args, path="/", host="backend.test", timeout=10):
    """curl to https://HOST:PORT/PATH resolved to loopback; returns (exit code, stdout)."""
    argv = ["curl", "-sS", "--max-time", "5", "--resolve", f"{host}:{port}:127.0.0.1",
            "-o", "-", "-w", "\n%{http_code} %{http_version}", *args,
            f"https://{host}:{port}{path}"]
    p = subprocess.run(argv, capture_output=True, timeout=timeout, text=True)
    return p.returncode, p.stdout + p.stderr


def test_downstream_tls_with_alpn_choosing_the_codec(ctx):
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, alpn=["h2", "http/1.1"]), up.port))
    port = r.port("L")
    rc, out = curl(port, "--cacert", p.ca, "--http1.1")
    assert rc == 0 and out.endswith("200 1.1") and out.startswith("plain"), out
    rc, out = curl(port, "--cacert", p.ca, "--http2")
    assert rc == 0 and out.endswith("200 2"), out  # ALPN h2: HTTP/2 over TLS
    # the request went over TLS: x-forwarded-proto says https (Envoy's rule without a trusted
    # one from the client)
    rc, out = curl(port, "--cacert", p.ca, "--http1.1", "-H", "x-upstream-echo: 1")
    assert rc == 0, out
    import json
    headers = json.loads(out.rsplit("\n", 1)[0])["headers"]
    assert ["x-forwarded-proto", "https"] in headers, headers
    # the server's certificate is checked by the client: a wrong name fails on the client
    # (curl checks the name once the handshake is done: remora counts a handshake)
    rc, out = curl(port, "--cacert", p.ca, host="other.test")
    assert rc != 0 and "other.test" in out, out
    # plaintext on the TLS port: no HTTP answer, the connection ends
    s = ctx.connect(port)
    s.sendall(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    s.settimeout(5)
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    assert b"HTTP/1.1" not in data, data
    lp = f"listener.127.0.0.1_{port}.ssl"
    st = wait_for(lambda: (lambda s: s if s.get(f"{lp}.connection_error") == 1 else None)(
        stats(r)), 5, "the plaintext connection counted")
    assert st[f"{lp}.handshake"] == 4, st
    assert st[f"{lp}.no_certificate"] == 4
    assert st["http.tls.downstream_cx_ssl_total"] == 5
    assert st["http.tls.downstream_rq_http2_total"] == 1
    assert st["http.tls.downstream_rq_http1_total"] == 2


def test_alpn_h2_then_http1_bytes_is_refused(ctx):
    """ALPN said h2: HTTP/1.1 bytes are not a preface (hostile-inputs case 54)."""
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, alpn=["h2", "http/1.1"]), up.port))
    s = tls_connect(r.port("L"), client_context(p.ca, alpn=["h2"]))
    assert s.selected_alpn_protocol() == "h2"
    s.sendall(b"GET / HTTP/1.1\r\nhost: backend.test\r\n\r\n")
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except (ConnectionResetError, ssl.SSLError):
        pass
    assert b"HTTP/1.1 200" not in data, data
    assert up.stats()["requests"] == 0


def test_mutual_tls_requires_a_certificate_from_the_ca_with_the_right_san(ctx):
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, require_client=True,
                                               sans=[("URI", SPIFFE + "frontend")]), up.port))
    port = r.port("L")
    lp = f"listener.127.0.0.1_{port}.ssl"
    rc, out = curl(port, "--cacert", p.ca, "--cert", p.frontend[0], "--key", p.frontend[1])
    assert rc == 0 and out.endswith("200 1.1"), out
    rc, out = curl(port, "--cacert", p.ca)
    assert rc != 0, out
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_no_cert") == 1, 5, "no cert counted")
    rc, out = curl(port, "--cacert", p.ca, "--cert", p.evil[0], "--key", p.evil[1])
    assert rc != 0, out
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_san") == 1, 5, "wrong SAN counted")
    other = p.other_ca()
    stranger = p.leaf("stranger", f"URI:{SPIFFE}frontend", ca=other)
    rc, out = curl(port, "--cacert", p.ca, "--cert", stranger[0], "--key", stranger[1])
    assert rc != 0, out
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_error") == 1, 5, "wrong CA counted")
    st = stats(r)
    assert st[f"{lp}.handshake"] == 1, st
    assert up.stats()["requests"] == 1


def test_upstream_tls_sends_sni_and_client_cert_and_verifies_the_server(ctx):
    p = pki(ctx)
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    good = upstream_tls(ca=p.ca, sni="backend.test", cert=p.frontend,
                        sans=[("DNS", "backend.test")])
    r = ctx.start_remora(config(cluster_port=backend.port, cluster_tls=good))
    for _ in range(3):
        resp = http_request(r.port("L"))
        assert resp.status == 200, resp
        assert resp.body == f"tlsb sni=backend.test peer={SPIFFE}frontend\n".encode(), resp.body
    st = stats(r)
    assert st["cluster.backend.ssl.handshake"] == 1, st  # one pooled connection, reused
    assert st["cluster.backend.upstream_cx_total"] == 1
    # a POST body larger than a TLS record both ways
    body = bytes(range(256)) * 4096
    resp = http_request(r.port("L"), method="POST", body=body, headers={"x-echo": "1"})
    assert resp.status == 200 and resp.body == body


def test_upstream_tls_failures_are_connect_failures(ctx):
    p = pki(ctx)
    backend = TlsHttpServer("tlsb", *p.server)
    ctx.on_cleanup(backend.close)
    other = p.other_ca()
    cases = [
        ("wrong_san", upstream_tls(ca=p.ca, sans=[("DNS", "elsewhere.test")]), "fail_verify_san"),
        ("wrong_ca", upstream_tls(ca=other[0]), "fail_verify_error"),
    ]
    for name, tls, stat in cases:
        r = ctx.start_remora(config(cluster_port=backend.port, cluster_tls=tls), name=name)
        resp = http_request(r.port("L"))
        assert resp.status == 503, (name, resp)
        st = stats(r)
        assert st[f"cluster.backend.ssl.{stat}"] == 1, (name, st)
        assert st["cluster.backend.upstream_cx_connect_fail"] == 1, (name, st)
        assert st["cluster.backend.ssl.handshake"] == 0
    # without a validation context any server certificate is taken (Envoy's default)
    r = ctx.start_remora(config(cluster_port=backend.port, cluster_tls=upstream_tls()),
                         name="noverify")
    resp = http_request(r.port("L"))
    assert resp.status == 200 and resp.body.startswith(b"tlsb sni=- peer=-"), resp
    # a plaintext server behind a TLS cluster: a connect failure, never a plaintext request
    plain = ctx.start_upstream("plain", record=True)
    r = ctx.start_remora(config(cluster_port=plain.port, cluster_tls=upstream_tls()),
                         name="plain")
    resp = http_request(r.port("L"))
    assert resp.status == 503, resp
    assert b"GET" not in open(plain.record_path, "rb").read()


def test_http2_upstream_over_tls(ctx):
    if shutil.which("nghttpd") is None:
        raise Skip("nghttpd is not installed")
    p = pki(ctx)
    docroot = ctx.tmp / "www"
    docroot.mkdir()
    (docroot / "hello").write_text("hello over h2\n")
    port_holder = socket.socket()
    port_holder.bind(("127.0.0.1", 0))
    port = port_holder.getsockname()[1]
    port_holder.close()
    nghttpd = ctx.spawn("nghttpd", ["nghttpd", "-v", "-a", "127.0.0.1", "-d", str(docroot),
                                    str(port), p.server[1], p.server[0]])

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(listening, 5, "nghttpd listening")
    tls = upstream_tls(ca=p.ca, sni="backend.test")
    r = ctx.start_remora(config(cluster_port=port, cluster_tls=tls, http2_upstream=True))
    for _ in range(2):
        resp = http_request(r.port("L"), path="/hello")
        assert resp.status == 200 and resp.body == b"hello over h2\n", resp
    st = stats(r)
    assert st["cluster.backend.upstream_cx_http2_total"] == 1, st
    assert st["cluster.backend.ssl.handshake"] == 1
    # over TLS the request's :scheme is https (nghttpd -v prints the headers it received)
    wait_for(lambda: ":scheme: https" in nghttpd.stdout, 5, "nghttpd logged the request")
    assert ":scheme: http\n" not in nghttpd.stdout


def test_tcp_proxy_with_tls_on_both_sides(ctx):
    p = pki(ctx)
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    r = ctx.start_remora(config(downstream_tls(p), backend.port,
                                upstream_tls(ca=p.ca, sni="backend.test", cert=p.frontend),
                                tcp=True))
    s = tls_connect(r.port("L"), client_context(p.ca))
    body = b"x" * 200000
    s.sendall(b"POST / HTTP/1.1\r\nhost: backend.test\r\nx-echo: 1\r\nconnection: close\r\n"
              b"content-length: %d\r\n\r\n" % len(body) + body)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ssl.SSLError:
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:200]
    assert data.endswith(body)
    st = stats(r)
    assert st[f"listener.127.0.0.1_{r.port('L')}.ssl.handshake"] == 1, st
    assert st["cluster.backend.ssl.handshake"] == 1


def test_handshake_timeout_closes_a_silent_client(ctx):
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p), up.port,
                                chain_extra=["transport_socket_connect_timeout: 0.3s"]))
    s = ctx.connect(r.port("L"))
    s.settimeout(5)
    assert s.recv(100) == b""  # closed by remora, well before the 5 s
    st = stats(r)
    assert st[f"listener.127.0.0.1_{r.port('L')}.downstream_cx_transport_socket_connect_timeout"] \
        == 1, st
    # a client that completes its handshake in time is served
    rc, out = curl(r.port("L"), "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out


def test_handshake_timeout_on_a_tcp_proxy_chain(ctx):
    """transport_socket_connect_timeout bounds the client's handshake on a TCP proxy chain too;
    a client that finishes it in time is proxied."""
    from test_tcp_proxy import EchoServer
    p = pki(ctx)
    echo = EchoServer("echo")
    r = ctx.start_remora(config(downstream_tls(p), echo.port, tcp=True,
                                chain_extra=["transport_socket_connect_timeout: 0.3s"]))
    s = ctx.connect(r.port("L"))
    s.settimeout(5)
    assert s.recv(100) == b""  # closed by remora, well before the 5 s
    stat = f"listener.127.0.0.1_{r.port('L')}.downstream_cx_transport_socket_connect_timeout"
    assert stats(r)[stat] == 1
    t = tls_connect(r.port("L"), client_context(p.ca))
    t.sendall(b"ping")
    assert t.recv(4) == b"ping"
    t.close()
    assert stats(r)[stat] == 1


def test_health_checks_go_over_tls(ctx):
    p = pki(ctx)
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    hc = ["health_checks:", "- timeout: 1s", "  interval: 0.2s", "  no_traffic_interval: 0.2s",
          "  unhealthy_threshold: 1",
          "  healthy_threshold: 1", "  http_health_check: {path: /healthz}"]
    r = ctx.start_remora(config(cluster_port=backend.port,
                                cluster_tls=upstream_tls(ca=p.ca, cert=p.frontend),
                                cluster_extra=hc))
    wait_for(lambda: backend.requests >= 2, 5, "health checks reached the TLS server")
    resp = http_request(r.port("L"))
    assert resp.status == 200, resp
    assert stats(r)["cluster.backend.health_check.success"] >= 2


LOG_FMT = ("%REQUESTED_SERVER_NAME% %DOWNSTREAM_TLS_VERSION% %DOWNSTREAM_PEER_URI_SAN% "
           "%DOWNSTREAM_LOCAL_URI_SAN% %DOWNSTREAM_PEER_SUBJECT% %DOWNSTREAM_TLS_CIPHER%")


def log_lines(path, n):
    def ready():
        try:
            lines = open(path).read().splitlines()
        except FileNotFoundError:
            return None
        return lines if len(lines) >= n else None
    return wait_for(ready, 5, f"{n} access log lines")


def test_access_log_tls_operators(ctx):
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    path = ctx.tmp / "access.log"
    r = ctx.start_remora(config(downstream_tls(p, require_client=True), up.port,
                                log=(path, LOG_FMT)))
    rc, out = curl(r.port("L"), "--cacert", p.ca, "--cert", p.frontend[0], "--key",
                   p.frontend[1], "--tlsv1.3")
    assert rc == 0, out
    # plaintext connections print "-" for each
    r2 = ctx.start_remora(config(cluster_port=up.port, log=(ctx.tmp / "plain.log", LOG_FMT)),
                          name="plain")
    assert http_request(r2.port("L")).status == 200
    [line] = log_lines(path, 1)
    sni, version, peer, local, subject, cipher = line.split(" ")
    assert (sni, version, peer, local, subject) == (
        "backend.test", "TLSv1.3", SPIFFE + "frontend", SPIFFE + "backend", "CN=frontend"), line
    assert cipher.startswith("TLS_"), line
    assert log_lines(ctx.tmp / "plain.log", 1) == ["- - - - - -"]


def test_tls_passthrough_logs_the_sni_the_inspector_saw(ctx):
    """tls_inspector + tcp_proxy: remora does not terminate, the client sees the backend's
    certificate, and %REQUESTED_SERVER_NAME% is the SNI of the ClientHello."""
    p = pki(ctx)
    backend = TlsHttpServer("tlsb", *p.server)
    ctx.on_cleanup(backend.close)
    path = ctx.tmp / "access.log"
    inspector = ["listener_filters:", "- name: envoy.filters.listener.tls_inspector",
                 "  typed_config: {'@type': type.googleapis.com/envoy.extensions.filters."
                 "listener.tls_inspector.v3.TlsInspector}"]
    r = ctx.start_remora(config(cluster_port=backend.port, tcp=True, log=(path, LOG_FMT),
                                listener_extra=inspector))
    rc, out = curl(r.port("L"), "--cacert", p.ca)
    assert rc == 0 and out.startswith("tlsb sni=backend.test"), out
    [line] = log_lines(path, 1)
    assert line == "backend.test - - - - -", line


def test_renegotiation_is_refused(ctx):
    """TLS 1.2 renegotiation (s_client's "R") is refused and the connection ends
    (hostile-inputs case 54); the listener goes on serving."""
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p), up.port))
    port = r.port("L")
    # stdin stays open (its EOF would end s_client) until s_client has exited
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2", "-CAfile", p.ca,
         "-servername", "backend.test"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("R\n")
        proc.stdin.flush()
        proc.wait(timeout=15)  # s_client exits when remora refuses and closes
        out, err = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    assert "RENEGOTIATING" in out + err, out[-400:]
    assert "no renegotiation" in err, err[-400:]
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out
    assert up.stats()["requests"] == 1


class Dribbler:
    """A TCP relay that passes the client's bytes on one byte per segment (TCP_NODELAY, one
    send each), so every TLS record, the ClientHello first, reaches remora in pieces."""

    def __init__(self, target_port):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.target))
            u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(c, u, 1), daemon=True).start()
            threading.Thread(target=self._pump, args=(u, c, 65536), daemon=True).start()

    @staticmethod
    def _pump(src, dst, step):
        try:
            while data := src.recv(65536):
                for i in range(0, len(data), step):
                    dst.sendall(data[i:i + step])
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.sock.close()


def test_records_in_one_byte_segments(ctx):
    """The ClientHello and every later record arrive a byte at a time (hostile-inputs case
    53): the handshake and the request still complete."""
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, require_client=True), up.port))
    d = Dribbler(r.port("L"))
    ctx.on_cleanup(d.close)
    rc, out = curl(d.port, "--cacert", p.ca, "--cert", p.frontend[0], "--key", p.frontend[1],
                   "-d", "x" * 3000)
    assert rc == 0 and out.endswith("200 1.1"), out
    st = stats(r)
    assert st[f"listener.127.0.0.1_{r.port('L')}.ssl.handshake"] == 1, st


def test_large_bodies_both_ways_over_downstream_tls(ctx):
    """4 MiB up, then 4 MiB down, over HTTP/1.1 and HTTP/2 through a TLS listener: reads that
    fill their buffer leave records in OpenSSL's read-ahead buffer, which remora must drain
    without waiting for the socket."""
    import json
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, alpn=["h2", "http/1.1"]), up.port))
    size = 4 << 20
    body = ctx.tmp / "body"
    body.write_bytes(bytes(range(256)) * (size // 256))
    want = bytes(97 + i % 26 for i in range(26)) * (size // 26 + 1)
    for proto in ("--http1.1", "--http2"):
        out = ctx.tmp / f"out{proto}"
        base = ["curl", "-sS", "--max-time", "20", "--resolve",
                f"backend.test:{r.port('L')}:127.0.0.1", "--cacert", p.ca, proto,
                "-o", str(out), "-w", "%{http_code}"]
        url = f"https://backend.test:{r.port('L')}/"
        res = subprocess.run(base + ["-H", "x-upstream-echo: 1", "--data-binary", f"@{body}",
                                     url], capture_output=True, text=True, timeout=30)
        assert res.stdout == "200", (proto, res.stdout, res.stderr)
        assert json.loads(out.read_bytes())["body_len"] == size, proto
        res = subprocess.run(base + ["-H", f"x-upstream-body-size: {size}", url],
                             capture_output=True, text=True, timeout=30)
        assert res.stdout == "200", (proto, res.stdout, res.stderr)
        assert out.read_bytes() == want[:size], proto


def test_records_left_in_openssls_buffer_are_not_stranded(ctx):
    """A 10000-byte record and an 8000-byte one arrive together at a TCP proxy's TLS side: a
    read of 16 KiB takes the first and part of the second, and OpenSSL holds the rest, which no
    socket event will announce. remora must pass it on at once (the echo comes back whole)."""
    from test_tcp_proxy import EchoServer
    p = pki(ctx)
    echo = EchoServer("echo")
    r = ctx.start_remora(config(downstream_tls(p), echo.port, tcp=True))
    s = tls_connect(r.port("L"), client_context(p.ca))
    s.settimeout(5)
    for i in range(30):
        a, b = bytes([65 + i % 26]) * 10000, bytes([97 + i % 26]) * 8000
        s.send(a)  # one TLS record per send
        s.send(b)
        got = b""
        while len(got) < len(a) + len(b):
            chunk = s.recv(65536)
            assert chunk, "closed"
            got += chunk
        assert got == a + b, i
    s.close()



def echoed_headers(out):
    import json
    return json.loads(out.rsplit("\n", 1)[0])["headers"]


def xfcc_of(headers):
    return [v for n, v in headers if n == "x-forwarded-client-cert"]


def cert_sha256(path):
    import hashlib
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(path).read())).hexdigest()


def test_forward_client_cert_details(ctx):
    """x-forwarded-client-cert as Envoy's forward_client_cert_details says: removed by default,
    this hop's element appended or set over mutual TLS (By, Hash, then Cert, Subject, URI, DNS
    as configured), passed on as it came with FORWARD_ONLY (mTLS only) or ALWAYS_FORWARD_ONLY."""
    from urllib.parse import unquote
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    client = ["--cert", p.frontend[0], "--key", p.frontend[1]]
    sent = ["-H", "x-forwarded-client-cert: By=spiffe://elsewhere;Hash=00", "-H",
            "x-upstream-echo: 1", "--http1.1"]
    h = cert_sha256(p.frontend[0])
    me = f"By={SPIFFE}backend;Hash={h}"

    def run(mode, details=None, mtls=True, name="r"):
        extra = [f"forward_client_cert_details: {mode}"] if mode else []
        if details:
            extra.append(f"set_current_client_cert_details: {details}")
        tls = downstream_tls(p, require_client=mtls) if mtls else downstream_tls(p)
        r = ctx.start_remora(config(tls, up.port, hcm_extra=extra), name=name)
        rc, out = curl(r.port("L"), "--cacert", p.ca, *(client if mtls else []), *sent)
        assert rc == 0, out
        return xfcc_of(echoed_headers(out))

    assert run(None) == []  # SANITIZE, the default
    assert run("SANITIZE", name="s") == []
    assert run("APPEND_FORWARD", "{subject: true, uri: true, dns: true}", name="a") == [
        f'By=spiffe://elsewhere;Hash=00,{me};Subject="CN=frontend";URI={SPIFFE}frontend']
    assert run("SANITIZE_SET", "{uri: true}", name="ss") == [f"{me};URI={SPIFFE}frontend"]
    [full] = run("SANITIZE_SET", "{cert: true, chain: true}", name="cert")
    cert_pem = unquote(full.split('Cert="')[1].split('"')[0])
    assert cert_pem == open(p.frontend[0]).read(), cert_pem
    assert 'Chain="' in full
    assert run("FORWARD_ONLY", name="f") == ["By=spiffe://elsewhere;Hash=00"]
    # without a client certificate only ALWAYS_FORWARD_ONLY passes a client's header on
    assert run("FORWARD_ONLY", mtls=False, name="f2") == []
    assert run("APPEND_FORWARD", mtls=False, name="a2") == []
    assert run("ALWAYS_FORWARD_ONLY", mtls=False, name="af") == ["By=spiffe://elsewhere;Hash=00"]


def test_certificate_chosen_by_sni(ctx):
    """One port, two TLS-terminating chains chosen by server_names (the tls_inspector reads
    the SNI): each client is served the certificate for the name it asked, which it verifies;
    a name no chain takes is closed before any handshake."""
    p = pki(ctx)
    a_cert = p.leaf("a", "DNS:a.test")
    b_cert = p.leaf("b", "DNS:*.b.test")
    up = ctx.start_upstream("plain")
    hcm = ["- name: envoy.filters.network.http_connection_manager",
           "  typed_config:",
           f'    "@type": {HCM}',
           "    stat_prefix: sni",
           "    route_config:",
           "      virtual_hosts:",
           "      - {name: all, domains: ['*'], routes: [{match: {prefix: /}, "
           "route: {cluster: backend}}]}",
           f"    http_filters: [{{name: envoy.filters.http.router, typed_config: "
           f"{{'@type': {ROUTER}}}}}]"]

    def chain(names, cert):
        tls = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
               f'    "@type": {TLS_DOWN}', "    common_tls_context:",
               "      tls_certificates:",
               f"      - certificate_chain: {{filename: {cert[0]}}}",
               f"        private_key: {{filename: {cert[1]}}}"]
        return ([f"- filter_chain_match: {{server_names: {names}}}", "  filters:"] +
                indent(hcm, 2) + indent(tls, 2))

    lines = ["admin:", "  address: {socket_address: {address: 127.0.0.1, port_value: {{ADMIN}}}}",
             "static_resources:", "  listeners:", "  - name: sni",
             "    address: {socket_address: {address: 127.0.0.1, port_value: {{L}}}}",
             "    listener_filters:", "    - name: envoy.filters.listener.tls_inspector",
             "      typed_config: {'@type': type.googleapis.com/envoy.extensions.filters."
             "listener.tls_inspector.v3.TlsInspector}",
             "    filter_chains:"]
    lines += indent(chain("[a.test]", a_cert) + chain("['*.b.test']", b_cert), 4)
    lines += ["  clusters:", "  - name: backend", "    connect_timeout: 2s", "    type: STATIC",
              "    load_assignment:", "      cluster_name: backend", "      endpoints:",
              "      - lb_endpoints:",
              f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
              f"port_value: {up.port}}}}}}}"]
    r = ctx.start_remora("\n".join(lines) + "\n")
    port = r.port("L")
    for host in ("a.test", "x.b.test"):
        rc, out = curl(port, "--cacert", p.ca, host=host)
        assert rc == 0 and out.endswith("200 1.1"), (host, out)
    rc, out = curl(port, "--cacert", p.ca, host="c.test")
    assert rc != 0, out
    st = stats(r)
    assert st[f"listener.127.0.0.1_{port}.ssl.handshake"] == 2, st
    assert st[f"listener.127.0.0.1_{port}.no_filter_chain_match"] == 1, st


def test_admin_certs_and_days_until_first_cert_expiring(ctx):
    """GET /certs lists each TLS context's certificate and CAs as Envoy does (serial, SANs,
    days until expiration, validity), and server.days_until_first_cert_expiring is the soonest
    of them; a config without TLS has neither."""
    p = pki(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(downstream_tls(p, require_client=True), up.port))
    certs = r.admin("GET", "/certs").json()["certificates"]
    assert len(certs) == 1, certs
    [leaf] = certs[0]["cert_chain"]
    serial = subprocess.run(["openssl", "x509", "-in", p.server[0], "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout
    assert leaf["serial_number"] == serial.strip().split("=")[1].lower(), leaf
    assert {"dns": "backend.test"} in leaf["subject_alt_names"], leaf
    assert {"uri": SPIFFE + "backend"} in leaf["subject_alt_names"], leaf
    assert leaf["days_until_expiration"] in ("29", "30"), leaf  # made for 30 days
    assert leaf["expiration_time"].endswith("Z") and leaf["valid_from"] < leaf["expiration_time"]
    [ca] = certs[0]["ca_cert"]
    assert ca["subject_alt_names"] == [] and ca["days_until_expiration"] in ("29", "30"), ca
    assert stats(r)["server.days_until_first_cert_expiring"] in (29, 30)
    plain = ctx.start_remora(config(cluster_port=up.port), name="plain")
    assert plain.admin("GET", "/certs").json() == {"certificates": []}
    assert "server.days_until_first_cert_expiring" not in stats(plain)
