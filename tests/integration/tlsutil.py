"""A throwaway PKI made with the openssl CLI (hostile-inputs.md §d), and a TLS HTTP/1.1 server
on Python's ssl module to stand for a TLS upstream: it records the SNI it was asked for and
the client certificate it was shown."""

import http.server
import socket
import ssl
import subprocess
import threading
from pathlib import Path

SPIFFE = "spiffe://mesh.test/ns/default/sa/"


def _run(args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


class Pki:
    """Certificates under `dir`: a CA, leaves it signs (`leaf`), and a second, unrelated CA
    (`other_ca`) for "wrong CA" cases. Paths are str."""

    def __init__(self, dir):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca, self.ca_key = self._ca("ca")

    def _ca(self, name):
        cert, key = self.dir / f"{name}.pem", self.dir / f"{name}.key"
        _run(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", cert, "-days", "30", "-subj", f"/CN={name}",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign"], self.dir)
        return str(cert), str(key)

    def other_ca(self, name="other-ca"):
        return self._ca(name)

    def leaf(self, name, sans, usage="serverAuth,clientAuth", ca=None):
        """A leaf certificate for `name` with subjectAltName `sans` (e.g.
        "DNS:backend.test,URI:spiffe://..."), signed by `ca` ((cert, key); default: the CA).
        Returns (cert path, key path)."""
        ca_cert, ca_key = ca or (self.ca, self.ca_key)
        key, csr = self.dir / f"{name}.key", self.dir / f"{name}.csr"
        cert, ext = self.dir / f"{name}.pem", self.dir / f"{name}.ext"
        ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage={usage}\n")
        _run(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
              "-keyout", key, "-out", csr, "-subj", f"/CN={name}"], self.dir)
        _run(["x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
              "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", ext], self.dir)
        return str(cert), str(key)


class TlsHttpServer:
    """HTTP/1.1 over TLS on loopback, one thread per connection. Answers 200 with the body
    "NAME sni=<sni> peer=<client certificate URI SAN or ->\\n". With `ca`, client certificates
    are verified against it (`require`: a certificate is required). `host`, `port`: where it
    listens (default loopback, a free port)."""

    def __init__(self, name, cert, key, ca=None, require=False, host="127.0.0.1", port=0):
        self.name = name
        self.snis = []
        self.requests = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if ca is not None:
            ctx.load_verify_locations(ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL

        def sni_cb(sslobj, server_name, _ctx):
            self.snis.append(server_name)

        ctx.sni_callback = sni_cb
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body_in = self.rfile.read(n) if n else b""
                outer.requests += 1
                peer = self.connection.getpeercert() or {}
                uris = [v for k, v in peer.get("subjectAltName", ()) if k == "URI"]
                sni = outer.snis[-1] if outer.snis else None
                if self.headers.get("x-echo"):
                    body = body_in
                else:
                    body = (f"{outer.name} sni={sni or '-'} "
                            f"peer={uris[0] if uris else '-'}\n").encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self):
                sock, addr = self.socket.accept()
                return ctx.wrap_socket(sock, server_side=True), addr

            def handle_error(self, request, client_address):
                pass  # failed handshakes are part of the tests

        self.server = Server((host, port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def client_context(ca=None, cert=None, key=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        ctx.load_verify_locations(ca)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert, key)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, ctx, server_hostname="backend.test", timeout=5.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)
