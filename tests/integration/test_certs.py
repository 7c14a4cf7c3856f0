"""The mesh CA (build/remora-certs): a CA per trust domain, SPIFFE identities issued into SDS
files, and mTLS between two remoras that pin each other's SPIFFE ID
(combined_validation_context: the CA from the SDS secret, the SAN matcher beside it), as App
Mesh's and Istio's Envoys are configured. `rotate` renews an identity before it expires and
the proxies take the new certificate without failing a request."""

import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time

from lib import TestFailure, slow_factor, wait_for
from proxyutil import stats
from test_tls import TLS_DOWN, TLS_UP, config
from tlsutil import client_context

TD = "mesh.test"
WEB = f"spiffe://{TD}/ns/shop/sa/web"
API = f"spiffe://{TD}/ns/shop/sa/api"


def certs(ctx, *args, ok=True):
    p = subprocess.run([str(ctx.bin("remora-certs")), *map(str, args)], capture_output=True, text=True,
                       timeout=30 * slow_factor(), env=ctx.env)
    if ok and p.returncode != 0:
        raise TestFailure(f"remora-certs {' '.join(map(str, args))}: exit {p.returncode}\n{p.stderr}")
    return p


def identity(ctx, ca_dir, spiffe_id, name, lifetime="1h"):
    path = ctx.tmp / f"{name}.json"
    certs(ctx, "issue", "--ca-dir", ca_dir, "--spiffe-id", spiffe_id, "--sds", path, "--lifetime", lifetime)
    return path


def pem_files(ctx, sds_path, name):
    """The certificate and key of an SDS file, as PEM files (for Python's ssl)."""
    doc = json.loads(open(sds_path).read())
    tls = doc["resources"][0]["tls_certificate"]
    cert, key = ctx.tmp / f"{name}.crt", ctx.tmp / f"{name}.key"
    cert.write_text(tls["certificate_chain"]["inline_string"])
    key.write_text(tls["private_key"]["inline_string"])
    return str(cert), str(key)


def mesh_tls(kind, sds_path, peer_id, require=False):
    """A Downstream or UpstreamTlsContext: certificate "default" and CA "ROOTCA" from the SDS
    file, the peer pinned by its SPIFFE ID."""
    src = f"{{resource_api_version: V3, path_config_source: {{path: {sds_path}}}}}"
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_DOWN if kind == "down" else TLS_UP}']
    if require:
        lines.append("    require_client_certificate: true")
    return lines + [
        "    common_tls_context:",
        "      tls_certificate_sds_secret_configs:",
        f"      - {{name: default, sds_config: {src}}}",
        "      combined_validation_context:",
        "        default_validation_context:",
        f"          match_typed_subject_alt_names: [{{san_type: URI, matcher: {{exact: '{peer_id}'}}}}]",
        f"        validation_context_sds_secret_config: {{name: ROOTCA, sds_config: {src}}}"]


def new_ca(ctx, name="ca"):
    ca = ctx.tmp / name
    certs(ctx, "init-ca", "--dir", ca, "--trust-domain", TD, "--days", "2")
    return ca


def mesh(ctx, ca, api_sds=None, web_sds=None):
    """Two sidecars: `api`'s (mTLS listener, only WEB may call it) in front of a plain upstream,
    and `web`'s (plain listener, mTLS to api's, which must be API)."""
    api_sds = api_sds or identity(ctx, ca, API, "api")
    web_sds = web_sds or identity(ctx, ca, WEB, "web")
    up = ctx.start_upstream("plain")
    api = ctx.start_remora(config(mesh_tls("down", api_sds, WEB, require=True), up.port))
    web = ctx.start_remora(config((), api.port("L"), mesh_tls("up", web_sds, API)))
    return api, web


def get(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor())
    try:
        s.sendall(b"GET / HTTP/1.1\r\nhost: api\r\nconnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                return data
            data += b
    finally:
        s.close()


def served_cert(port, cert, key, ca):
    """The certificate (DER) api's listener shows a client with identity (cert, key)."""
    c = client_context(ca=ca, cert=cert, key=key)
    c.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor()) as raw:
        with c.wrap_socket(raw) as s:
            return s.getpeercert(binary_form=True)


def test_identities_from_the_mesh_ca_carry_mtls_between_two_proxies(ctx):
    ca = new_ca(ctx)
    api, web = mesh(ctx, ca)
    r = get(web.port("L"))
    assert r.startswith(b"HTTP/1.1 200") and r.endswith(b"plain\n"), r[-200:]
    api_lp = f"listener.127.0.0.1_{api.port('L')}.ssl"
    wait_for(lambda: stats(api).get(f"{api_lp}.handshake", 0) >= 1, 5, "api's handshake")
    assert stats(web)["cluster.backend.ssl.handshake"] >= 1

    # Another workload of the same mesh: a good certificate, the wrong identity.
    other = identity(ctx, ca, f"spiffe://{TD}/ns/shop/sa/intruder", "intruder")
    cert, key = pem_files(ctx, other, "intruder")
    rootca = json.loads(open(other).read())["resources"][1]  # the SDS file carries the CA
    assert rootca["name"] == "ROOTCA"
    assert rootca["validation_context"]["trusted_ca"]["inline_string"] == (ca / "ca.pem").read_text()
    # TLS 1.3: the server's verdict on the client comes after the client's handshake ends, so
    # the client may or may not see the alert here; the server's stats say what it decided.
    try:
        served_cert(api.port("L"), cert, key, str(ca / "ca.pem"))
    except (ssl.SSLError, OSError):
        pass
    wait_for(lambda: stats(api).get(f"{api_lp}.fail_verify_san", 0) >= 1, 5, "fail_verify_san")

    # A workload of another CA with the right ID is refused too (its chain does not verify).
    ca2 = new_ca(ctx, "ca2")
    forged = identity(ctx, ca2, WEB, "forged")
    cert, key = pem_files(ctx, forged, "forged")
    try:
        served_cert(api.port("L"), cert, key, str(ca / "ca.pem"))
    except (ssl.SSLError, OSError):
        pass
    wait_for(lambda: stats(api).get(f"{api_lp}.fail_verify_error", 0) >= 1, 5, "fail_verify_error")
    # and the real caller still gets through
    r = get(web.port("L"))
    assert r.startswith(b"HTTP/1.1 200"), r[:200]


def test_rotate_renews_identities_under_load(ctx):
    """`rotate` renews api's certificate halfway through its (short) lifetime and at SIGHUP;
    api's listener serves each new one for new handshakes, and no request through web fails."""
    ca = new_ca(ctx)
    api_sds = ctx.tmp / "api.json"
    life = int(8 * slow_factor())
    rot = ctx.spawn("rotate", [ctx.bin("remora-certs"), "rotate", "--ca-dir", ca, "--spiffe-id", API,
                               "--sds", api_sds, "--lifetime", f"{life}s", "--renew-at", "0.5"], managed=True)
    wait_for(lambda: api_sds.exists(), 10, "the first identity")
    assert stat.S_IMODE(os.stat(api_sds).st_mode) & 0o077 == 0  # it holds a private key
    api, web = mesh(ctx, ca, api_sds=api_sds)
    web_sds = ctx.tmp / "web.json"
    cert, key = pem_files(ctx, web_sds, "web-client")
    port = api.port("L")
    first = served_cert(port, cert, key, str(ca / "ca.pem"))

    stop = threading.Event()
    flow = {"n": 0, "errors": []}

    def pump():
        deadline = time.monotonic() + 60 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                r = get(web.port("L"))
                if not r.startswith(b"HTTP/1.1 200"):
                    flow["errors"].append(r[:120])
                flow["n"] += 1
            except OSError as e:
                flow["errors"].append(repr(e))

    t = threading.Thread(target=pump)
    t.start()
    try:
        # renewal by time: halfway through the lifetime
        second = wait_for(lambda: (c := served_cert(port, cert, key, str(ca / "ca.pem"))) != first and c,
                          life * 2, "a renewed certificate")
        # renewal at SIGHUP, long before the next renewal point
        n_updates = stats(api).get("sds.default.update_success", 0)
        os.kill(rot.popen.pid, signal.SIGHUP)
        wait_for(lambda: stats(api).get("sds.default.update_success", 0) > n_updates, 5, "SIGHUP renewal")
        third = served_cert(port, cert, key, str(ca / "ca.pem"))
        assert third not in (first, second)
        n0 = flow["n"]
        wait_for(lambda: flow["n"] >= n0 + 5, 10, "traffic after the renewals")
    finally:
        stop.set()
        t.join()
    assert flow["errors"] == [], flow["errors"][:5]
    assert flow["n"] > 5
    assert stats(api).get("sds.default.update_rejected", 0) == 0


def test_cli_refuses_bad_input(ctx):
    ca = ctx.tmp / "ca"
    p = certs(ctx, "init-ca", "--dir", ca, "--trust-domain", "Mesh.Test", ok=False)
    assert p.returncode == 1 and "trust domain" in p.stderr, p.stderr
    certs(ctx, "init-ca", "--dir", ca, "--trust-domain", TD)
    assert stat.S_IMODE(os.stat(ca / "ca.key").st_mode) == 0o600
    p = certs(ctx, "init-ca", "--dir", ca, "--trust-domain", TD, ok=False)
    assert p.returncode == 1 and "--force" in p.stderr, p.stderr  # a CA is not replaced by accident
    out = ctx.tmp / "x.json"
    for bad, why in [(f"spiffe://{TD}", "no path"), (f"spiffe://{TD}/a/../b", "'..'"),
                     (f"spiffe://{TD}/a?b", "character '?'"), ("spiffe://other.test/a", "not in trust domain"),
                     ("https://mesh.test/a", "spiffe://")]:
        p = certs(ctx, "issue", "--ca-dir", ca, "--spiffe-id", bad, "--sds", out, ok=False)
        assert p.returncode == 1 and why in p.stderr, (bad, p.stderr)
        assert not out.exists()
    p = certs(ctx, "issue", "--ca-dir", ca, "--spiffe-id", WEB, "--sds", out, "--lifetime", "10x", ok=False)
    assert p.returncode == 2 and "--lifetime" in p.stderr, p.stderr
    p = certs(ctx, "issue", "--ca-dir", ctx.tmp / "nowhere", "--spiffe-id", WEB, "--sds", out, ok=False)
    assert p.returncode == 1 and "ca.pem" in p.stderr, p.stderr
    p = certs(ctx, "rotate", "--ca-dir", ca, "--spiffe-id", WEB, "--sds", out, "--renew-at", "1", ok=False)
    assert p.returncode == 2 and "--renew-at" in p.stderr, p.stderr
