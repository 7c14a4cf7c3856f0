"""The tls_inspector listener filter and filter chains chosen by `server_names`,
`transport_protocol` and `application_protocols`: SNI routing of TLS passthrough (tcp_proxy
chains to TLS backends, whose certificates the clients verify) and App Mesh's PERMISSIVE mode
(TLS and plaintext on one port). Real processes on loopback: remora, python3 `ssl` backends
with a test CA made by the openssl CLI, python3 `ssl` clients, and curl."""

import shutil
import socket
import ssl
import subprocess
import threading
import time

from lib import Skip, is_closed, recv_until_closed, wait_closed, wait_for
from test_filter_chains import chain_filters, config, get_from
from test_tcp_proxy import stat
from tlsutil import Pki


def make_pki(d):
    """A CA and two leaves: "a.test" and "*.b.test" (the recipe of hostile-inputs.md §d)."""
    if shutil.which("openssl") is None:
        raise Skip("openssl CLI not installed")
    pki = Pki(d)
    pki.leaf("a", "DNS:a.test", usage="serverAuth")
    pki.leaf("b", "DNS:*.b.test", usage="serverAuth")
    return d


class TlsBackend:
    """A TLS server: after the handshake it reads one line, answers
    "<name> sni=<the SNI it saw> alpn=<the protocol it chose>" and closes."""

    def __init__(self, name, cert, key):
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.ctx.set_alpn_protocols(["h2", "http/1.1"])
        self.sni = {}
        self.ctx.sni_callback = lambda sock, name, c: self.sni.__setitem__(id(sock), name)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            with self.ctx.wrap_socket(c, server_side=True) as t:
                line = b""
                while not line.endswith(b"\n"):
                    d = t.recv(1024)
                    if not d:
                        break
                    line += d
                sni = self.sni.pop(id(t), None)
                t.sendall(f"{self.name} sni={sni} alpn={t.selected_alpn_protocol()}\n".encode())
        except (OSError, ssl.SSLError):
            c.close()

    def close(self):
        self.sock.close()


def client_ctx(ca, sni, alpn):
    ctx = ssl.create_default_context(cafile=str(ca))
    if sni is None:
        ctx.check_hostname = False  # still verified against the test CA
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_get(port, ca, sni, alpn=None, timeout=5.0):
    """A TLS client through the proxy that verifies the backend's certificate (for `sni`);
    returns the backend's answer, or None when the proxy closed the connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        with client_ctx(ca, sni, alpn).wrap_socket(s, server_hostname=sni) as t:
            t.sendall(b"hello\n")
            return recv_until_closed(t, timeout).decode()
    except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
        return None
    finally:
        s.close()


def tcp_chain(match, cluster, prefix):
    return [f"    - filter_chain_match: {match}",
            "      filters:"] + tcp_filter(cluster, prefix, indent=6)


def tcp_filter(cluster, prefix, indent):
    pad = " " * indent
    return [pad + "- name: envoy.filters.network.tcp_proxy",
            pad + "  typed_config:",
            pad + '    "@type": type.googleapis.com/envoy.extensions.filters.network.'
                  'tcp_proxy.v3.TcpProxy',
            pad + f"    stat_prefix: {prefix}",
            pad + f"    cluster: {cluster}"]


def cluster(name, port):
    return [f"  - name: {name}", "    type: STATIC", "    connect_timeout: 1s",
            "    load_assignment:", f"      cluster_name: {name}", "      endpoints:",
            "      - lb_endpoints:",
            f"        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, "
            f"port_value: {port}}}}}}}"]


INSPECTOR = ["listener_filters:",
             "- name: tls_inspector",
             "  typed_config:",
             '    "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.'
             'v3.TlsInspector']


def sni_config(a, b, extra=(), default=False):
    """Chains: a.test -> A, *.b.test -> B, TLS without a name by ALPN (h2 -> A, http/1.1 ->
    B), plaintext -> an HTTP chain answering "plain"; the listener filters time out in 0.5 s."""
    chains = (tcp_chain("{server_names: [a.test]}", "A", "a")
              + tcp_chain("{server_names: ['*.b.test']}", "B", "b")
              + tcp_chain("{transport_protocol: tls, application_protocols: [h2]}", "A", "h2")
              + tcp_chain("{transport_protocol: tls, application_protocols: [http/1.1]}", "B",
                          "h1")
              + ["    - filter_chain_match: {transport_protocol: raw_buffer}", "      filters:"]
              + chain_filters("plain", "plain", indent=6))
    listener_extra = INSPECTOR + ["listener_filters_timeout: 0.5s"] + list(extra)
    if default:
        listener_extra += ["default_filter_chain:", "  filters:"] + tcp_filter("A", "dflt", 2)
    return config(chains, listener_extra=listener_extra,
                  clusters=cluster("A", a.port) + cluster("B", b.port))


class Setup:
    def __init__(self, ctx, **kw):
        self.pki = make_pki(ctx.tmp)
        self.ca = self.pki / "ca.pem"
        self.a = TlsBackend("A", self.pki / "a.pem", self.pki / "a.key")
        self.b = TlsBackend("B", self.pki / "b.pem", self.pki / "b.key")
        self.r = ctx.start_remora(sni_config(self.a, self.b, **kw))
        self.port = self.r.port("L")
        self.lname = f"listener.127.0.0.1_{self.port}."

    def stat(self, name):
        return stat(self.r, name) or 0

    def close(self):
        self.a.close()
        self.b.close()


def test_sni_passthrough_alpn_and_plaintext_on_one_port(ctx):
    s = Setup(ctx)
    try:
        # An exact name and a wildcard: each client verifies its backend's own certificate,
        # and the backend sees the client's SNI and negotiates ALPN itself (passthrough).
        assert tls_get(s.port, s.ca, "a.test", ["h2"]) == "A sni=a.test alpn=h2\n"
        assert tls_get(s.port, s.ca, "x.b.test") == "B sni=x.b.test alpn=None\n"
        # Without a name, ALPN chooses, the client's first protocol a chain lists winning.
        assert tls_get(s.port, s.ca, None, ["h2"]) == "A sni=None alpn=h2\n"
        # (the backend then picks by its own preference, h2)
        assert tls_get(s.port, s.ca, None, ["http/1.1", "h2"]) == "B sni=None alpn=h2\n"
        # Plaintext on the same port goes to the raw_buffer chain (PERMISSIVE).
        assert get_from(s.port, "127.0.0.1") == (200, b"plain")
        # "b.test" is not "*.b.test"; no name and no ALPN: no chain, closed and counted.
        assert tls_get(s.port, s.ca, "b.test") is None
        assert tls_get(s.port, s.ca, None) is None
        assert s.stat(s.lname + "no_filter_chain_match") == 2
        assert s.stat("tls_inspector.tls_found") == 6
        assert s.stat("tls_inspector.tls_not_found") == 1
        assert s.stat("tls_inspector.sni_found") == 3
        assert s.stat("tls_inspector.sni_not_found") == 3
        assert s.stat("tls_inspector.alpn_found") == 3
        assert s.stat("tls_inspector.alpn_not_found") == 3
        assert s.stat("tcp.a.downstream_cx_total") == 1
        assert s.stat("tcp.b.downstream_cx_total") == 1
        assert s.stat("tcp.h2.downstream_cx_total") == 1
        assert s.stat("tcp.h1.downstream_cx_total") == 1
    finally:
        s.close()


def test_client_hello_one_byte_per_segment(ctx):
    """A ClientHello trickled byte by byte (TCP_NODELAY, one send each) is read once whole,
    and every byte still reaches the backend, which completes the handshake."""
    s = Setup(ctx)
    try:
        inb, outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = client_ctx(s.ca, "a.test", None).wrap_bio(inb, outb, server_hostname="a.test")
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        hello = outb.read()
        assert len(hello) > 100
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(hello)):
            c.sendall(hello[i:i + 1])
            time.sleep(0.0005)  # pacing, so that the bytes travel as separate segments
        deadline = time.monotonic() + 5
        while True:  # the rest of the handshake over the same socket
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                if outb.pending:
                    c.sendall(outb.read())
                assert time.monotonic() < deadline
                d = c.recv(65536)
                assert d, "closed during the handshake"
                inb.write(d)
        if outb.pending:
            c.sendall(outb.read())
        obj.write(b"hello\n")
        c.sendall(outb.read())
        got = b""
        while not got.endswith(b"\n"):
            try:
                got += obj.read(1024)
            except ssl.SSLWantReadError:
                d = c.recv(65536)
                assert d
                inb.write(d)
        assert got == b"A sni=a.test alpn=None\n"
        c.close()
        assert s.stat("tls_inspector.tls_found") == 1
        assert s.stat("tcp.a.downstream_cx_total") == 1
    finally:
        s.close()


def test_waiting_clients_time_out_close_or_are_too_large(ctx):
    s = Setup(ctx)
    try:
        # Nothing sent: closed after listener_filters_timeout (0.5 s), counted.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        wait_closed(c, 5)
        c.close()
        assert s.stat(s.lname + "downstream_pre_cx_timeout") == 1
        # Part of a ClientHello, then the client closes: closed at once, counted.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01")
        c.shutdown(socket.SHUT_WR)
        wait_closed(c, 2)
        c.close()
        wait_for(lambda: s.stat(s.lname + "downstream_listener_filter_remote_close") == 1, 2)
        # A ClientHello announced at 70000 bytes: too large, closed without waiting for it.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        c.sendall(b"\x16\x03\x01\x40\x00\x01\x01\x11\x70" + b"\0" * 16380)
        wait_closed(c, 2)
        c.close()
        assert s.stat("tls_inspector.client_hello_too_large") == 1
        assert s.stat(s.lname + "downstream_pre_cx_timeout") == 1
        assert s.stat(s.lname + "downstream_pre_cx_active") == 0
        assert s.stat(s.lname + "downstream_cx_total") == 0  # none became a connection
    finally:
        s.close()


def test_continue_on_timeout_and_the_default_chain(ctx):
    s = Setup(ctx, extra=["continue_on_listener_filters_timeout: true"], default=True)
    try:
        # A client that waits for the server to speak first: after the timeout it is handed on
        # as raw_buffer, to the plaintext chain.
        c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
        wait_for(lambda: s.stat(s.lname + "downstream_pre_cx_timeout") == 1, 5)
        assert not is_closed(c)
        c.sendall(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        assert recv_until_closed(c).endswith(b"plain")
        c.close()
        # TLS without a name or ALPN: the default chain (to A) instead of a close.
        assert tls_get(s.port, s.ca, None) == "A sni=None alpn=None\n"
        assert s.stat("tcp.dflt.downstream_cx_total") == 1
        assert s.stat(s.lname + "no_filter_chain_match") == 0
    finally:
        s.close()


def test_curl_through_sni_passthrough(ctx):
    """curl (OpenSSL underneath) with --resolve: the certificate it checks is the backend's."""
    if shutil.which("curl") is None:
        raise Skip("curl not installed")
    s = Setup(ctx)
    try:
        # The backend is no HTTP server; curl sends its request and prints the backend's line.
        p = subprocess.run(["curl", "-sS", "--max-time", "5", "--http1.1", "--cacert",
                            str(s.ca), "--resolve", f"x.b.test:{s.port}:127.0.0.1",
                            f"https://x.b.test:{s.port}/", "-o", "/dev/null",
                            "-w", "%{ssl_verify_result}"],
                           capture_output=True, timeout=30)
        # The handshake with B (certificate *.b.test verified: result 0) went through.
        assert p.stdout == b"0", (p.stdout, p.stderr)
        assert s.stat("tcp.b.downstream_cx_total") == 1
    finally:
        s.close()
