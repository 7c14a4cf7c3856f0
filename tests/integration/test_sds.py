"""SDS from files: a listener's certificate, an mTLS listener's trusted CA and a cluster's client
certificate come from Secrets in a DiscoveryResponse file (tls_certificate_sds_secret_configs,
validation_context_sds_secret_config with a path_config_source) and are rotated while remora
serves by moving a new file onto the path. New handshakes use the new material; connections
already up keep theirs; bad updates are rejected, counted, and the old certificate keeps
serving; no request fails while certificates rotate under load."""

import os
import socket
import ssl
import subprocess
import threading
import time

from lib import (REPO, Skip, _read_response, _Reader, build_request, http_request,
                 slow_factor, wait_for)
from proxyutil import stats
from test_tls import TLS_DOWN, TLS_UP, config, curl
from tlsutil import SPIFFE, Pki, TlsHttpServer, client_context

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def write_sds(path, version, secrets):
    """Moves a DiscoveryResponse onto `path` (an atomic rename, as `mv` does). `secrets`: a
    list of (name, (cert, key)) for tls_certificate secrets or (name, ca_path) for
    validation_context ones."""
    lines = [f"version_info: '{version}'", "resources:"]
    for name, data in secrets:
        lines += [f'- "@type": {SECRET}', f"  name: {name}"]
        if isinstance(data, tuple):
            lines += ["  tls_certificate:",
                      f"    certificate_chain: {{filename: {data[0]}}}",
                      f"    private_key: {{filename: {data[1]}}}"]
        else:
            lines += ["  validation_context:", f"    trusted_ca: {{filename: {data}}}"]
    tmp = f"{path}.new"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.rename(tmp, path)


def sds_ref(name, path, watched=None):
    pcs = f"path: {path}" + (f", watched_directory: {{path: {watched}}}" if watched else "")
    return [f"- name: {name}", f"  sds_config: {{path_config_source: {{{pcs}}}}}"]


def sds_down(path, cert="server", ca=None, require=False, watched=None):
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_DOWN}']
    if require:
        lines.append("    require_client_certificate: true")
    lines += ["    common_tls_context:", "      tls_certificate_sds_secret_configs:"]
    lines += ["      " + x for x in sds_ref(cert, path, watched)]
    if ca:
        lines += ["      validation_context_sds_secret_config:",
                  f"        name: {ca}",
                  f"        sds_config: {{path_config_source: {{path: {path}}}}}"]
    return lines


def sds_up(path, ca, cert="client", ca_secret=None):
    """An UpstreamTlsContext with client certificate `cert` from SDS file `path`, verifying the
    server against `ca` (a file), or against secret `ca_secret` of `path`."""
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_UP}', "    sni: backend.test", "    common_tls_context:",
             "      tls_certificate_sds_secret_configs:"]
    lines += ["      " + x for x in sds_ref(cert, path)]
    if ca_secret:
        return lines + ["      validation_context_sds_secret_config:",
                        f"        name: {ca_secret}",
                        f"        sds_config: {{path_config_source: {{path: {path}}}}}"]
    return lines + ["      validation_context:", f"        trusted_ca: {{filename: {ca}}}"]


# A new upstream connection per request, so a rotated client certificate shows at once.
ONE_REQUEST_PER_CONNECTION = [
    "typed_extension_protocol_options:",
    "  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
    '    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
    "    common_http_protocol_options: {max_requests_per_connection: 1}",
    "    explicit_http_config: {http_protocol_options: {}}"]


def der(pem_path):
    with open(pem_path) as f:
        return ssl.PEM_cert_to_DER_cert(f.read())


class TlsConn:
    """A keep-alive HTTP/1.1 connection over TLS (no verification: the tests compare the
    certificate itself)."""

    def __init__(self, port, ctx=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor())
        self.sock = (ctx or client_context()).wrap_socket(raw, server_hostname="backend.test")
        self.reader = _Reader(self.sock, timeout=5 * slow_factor())
        self.port = port

    def peer(self):
        return self.sock.getpeercert(binary_form=True)

    def request(self, path="/", headers=None):
        self.sock.sendall(build_request("GET", path, headers, None, f"backend.test:{self.port}"))
        return _read_response(self.reader, "GET")

    def close(self):
        self.sock.close()


def served(port):
    """The certificate a new connection to `port` is shown (DER)."""
    c = TlsConn(port)
    try:
        return c.peer()
    finally:
        c.close()


def sds_stat(r, name, stat):
    return stats(r).get(f"sds.{name}.{stat}", 0)


def wait_sds(r, name, stat, want):
    wait_for(lambda: sds_stat(r, name, stat) >= want, 5, f"sds.{name}.{stat} >= {want}")


def setup(ctx, **kw):
    p = Pki(ctx.tmp / "pki")
    p.a = p.leaf("cert-a", "DNS:backend.test")
    p.b = p.leaf("cert-b", "DNS:backend.test")
    path = str(ctx.tmp / "sds.yaml")
    return p, path


def test_listener_certificate_rotates_for_new_connections(ctx):
    p, path = setup(ctx)
    write_sds(path, "v1", [("server", p.a)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path), up.port))
    port = r.port("L")
    assert served(port) == der(p.a[0])
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out
    old = TlsConn(port)
    assert old.request().status == 200

    write_sds(path, "v2", [("server", p.b)])
    wait_sds(r, "server", "update_success", 1)
    assert served(port) == der(p.b[0])
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out
    # The keep-alive connection opened before goes on, with its own session and certificate.
    assert old.request().status == 200
    assert old.peer() == der(p.a[0])
    old.close()
    st = stats(r)
    lp = f"listener.127.0.0.1_{port}"
    assert st[f"{lp}.server_ssl_socket_factory.ssl_context_update_by_sds"] == 1, st
    assert st["sds.server.update_attempt"] == 1 and st["sds.server.update_rejected"] == 0, st
    # /config_dump lists the secret in force, its key redacted.
    dump = r.admin("GET", "/config_dump").text
    assert "SecretsConfigDump" in dump and "dynamic_active_secrets" in dump, dump[:2000]
    assert "'v2'" in dump or '"v2"' in dump, dump[:2000]
    assert p.b[0] in dump and p.b[1] not in dump and "[redacted]" in dump
    import json
    import re
    [secrets] = [c for c in json.loads(dump)["configs"]
                 if c["@type"].endswith("SecretsConfigDump")]
    for s in secrets["dynamic_active_secrets"]:  # when each was applied, Envoy's timestamp form
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", s["last_updated"]), s


def test_mtls_trusted_ca_rotates(ctx):
    p, path = setup(ctx)
    newca = p.other_ca("newca")
    old_client = p.leaf("old-client", f"URI:{SPIFFE}old")
    new_client = p.leaf("new-client", f"URI:{SPIFFE}new", ca=newca)
    write_sds(path, "v1", [("server", p.a), ("ca", p.ca)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path, ca="ca", require=True), up.port))
    port = r.port("L")
    lp = f"listener.127.0.0.1_{port}.ssl"

    def try_client(cert):
        return curl(port, "--cacert", p.ca, "--cert", cert[0], "--key", cert[1])

    rc, out = try_client(old_client)
    assert rc == 0 and out.endswith("200 1.1"), out
    rc, out = try_client(new_client)
    assert rc != 0, out
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_error") == 1, 5, "refused before")

    write_sds(path, "v2", [("server", p.a), ("ca", newca[0])])
    wait_sds(r, "ca", "update_success", 1)
    rc, out = try_client(new_client)
    assert rc == 0 and out.endswith("200 1.1"), out
    rc, out = try_client(old_client)
    assert rc != 0, out
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_error") == 2, 5, "old CA refused after")
    # The CertificateRequest names the new CA.
    s = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                        "-servername", "backend.test"], input="", capture_output=True,
                       text=True, timeout=10)
    names = s.stdout.split("Acceptable client certificate CA names", 1)[-1].split("---", 1)[0]
    assert "newca" in names and "CN = ca" not in names, s.stdout
    # The certificate secret, in the same file, was re-applied too (same certificate).
    assert sds_stat(r, "server", "update_success") == 1


def test_bad_updates_are_rejected_and_the_certificate_keeps_serving(ctx):
    p, path = setup(ctx)
    write_sds(path, "v1", [("server", p.a)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path), up.port))
    port = r.port("L")
    broken = ctx.tmp / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                      "-----END CERTIFICATE-----\n")
    write_sds(path, "bad1", [("server", (str(broken), p.b[1]))])
    wait_sds(r, "server", "update_rejected", 1)
    write_sds(path, "bad2", [("server", (p.b[0], p.a[1]))])  # the key of another certificate
    wait_sds(r, "server", "update_rejected", 2)
    write_sds(path, "bad3", [("other", p.b)])  # no secret of that name
    wait_sds(r, "server", "update_rejected", 3)
    # A file that cannot be read (a dangling link moved onto the path) is a failure.
    link = ctx.tmp / "dangling"
    os.symlink(ctx.tmp / "nowhere.yaml", link)
    os.rename(link, path)
    wait_sds(r, "server", "update_failure", 1)
    assert served(port) == der(p.a[0])
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out
    st = stats(r)
    assert st["sds.server.update_success"] == 0 and st["sds.server.update_attempt"] == 4, st
    assert st[f"listener.127.0.0.1_{port}.server_ssl_socket_factory."
              "ssl_context_update_by_sds"] == 0, st
    err = r.stderr
    assert "does not match the certificate in certificate_chain" in err, err[-3000:]
    assert f"{path}: resources[0].tls_certificate.certificate_chain: no PEM certificate" in err
    # ...and a good one after the bad ones is taken.
    write_sds(path, "v2", [("server", p.b)])
    wait_sds(r, "server", "update_success", 1)
    assert served(port) == der(p.b[0])


def test_upstream_client_certificate_rotates(ctx):
    p, path = setup(ctx)
    p.server = p.leaf("server", "DNS:backend.test")
    one = p.leaf("one", f"URI:{SPIFFE}one")
    two = p.leaf("two", f"URI:{SPIFFE}two")
    write_sds(path, "v1", [("client", one)])
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    r = ctx.start_remora(config(cluster_port=backend.port, cluster_tls=sds_up(path, p.ca),
                                cluster_extra=ONE_REQUEST_PER_CONNECTION))
    resp = http_request(r.port("L"))
    assert resp.body == f"tlsb sni=backend.test peer={SPIFFE}one\n".encode(), resp.body
    write_sds(path, "v2", [("client", two)])
    wait_sds(r, "client", "update_success", 1)
    resp = http_request(r.port("L"))
    assert resp.body == f"tlsb sni=backend.test peer={SPIFFE}two\n".encode(), resp.body
    st = stats(r)
    assert st["cluster.backend.client_ssl_socket_factory.ssl_context_update_by_sds"] == 1, st


def test_upstream_trusted_ca_rotates(ctx):
    """A cluster that verifies its server against a CA from SDS: rotated to a CA that did not
    sign the server, the next connection fails (503, a connect failure); rotated back, it
    works again."""
    p, path = setup(ctx)
    p.server = p.leaf("server", "DNS:backend.test")
    one = p.leaf("one", f"URI:{SPIFFE}one")
    newca = p.other_ca("newca")
    write_sds(path, "v1", [("client", one), ("ca", p.ca)])
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    r = ctx.start_remora(config(cluster_port=backend.port,
                                cluster_tls=sds_up(path, None, ca_secret="ca"),
                                cluster_extra=ONE_REQUEST_PER_CONNECTION))
    assert http_request(r.port("L")).status == 200
    write_sds(path, "v2", [("client", one), ("ca", newca[0])])
    wait_sds(r, "ca", "update_success", 1)
    assert http_request(r.port("L")).status == 503
    wait_for(lambda: stats(r).get("cluster.backend.ssl.fail_verify_error", 0) >= 1, 5,
             "the server's certificate refused")
    write_sds(path, "v3", [("client", one), ("ca", p.ca)])
    wait_sds(r, "ca", "update_success", 2)
    assert http_request(r.port("L")).status == 200
    st = stats(r)
    # both secrets of the file were re-applied on each change
    assert st["cluster.backend.client_ssl_socket_factory.ssl_context_update_by_sds"] == 4, st


def test_rotation_under_load_fails_no_request(ctx):
    """hostile-inputs F13: new TLS connections in a loop (bounded in time) while the
    certificate rotates; every request succeeds, and both certificates were seen."""
    p, path = setup(ctx)
    write_sds(path, "v0", [("server", p.a)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path), up.port), concurrency=2)
    port = r.port("L")
    verify = client_context(ca=p.ca)
    stop = threading.Event()
    flow = {"n": 0, "errors": [], "seen": set()}

    def pump():
        deadline = time.monotonic() + 20 * slow_factor()
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                c = TlsConn(port, verify)
                flow["seen"].add(c.peer())
                resp = c.request()
                c.close()
                if resp.status != 200:
                    flow["errors"].append(resp.status)
                flow["n"] += 1
            except (OSError, EOFError, ssl.SSLError) as e:
                flow["errors"].append(repr(e))

    threads = [threading.Thread(target=pump) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        end = time.monotonic() + 2 * slow_factor()
        i = 0
        while time.monotonic() < end or i < 4:
            i += 1
            write_sds(path, f"v{i}", [("server", p.b if i % 2 else p.a)])
            wait_sds(r, "server", "update_success", i)
            n0 = flow["n"]
            wait_for(lambda: flow["n"] >= n0 + 5, 10, "traffic after a rotation")
            if i >= 20:
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert flow["errors"] == [], flow["errors"][:10]
    assert flow["seen"] == {der(p.a[0]), der(p.b[0])}
    assert flow["n"] > 20, flow["n"]


def test_startup_needs_the_secret(ctx):
    p, path = setup(ctx)
    write_sds(path, "v1", [("server", p.a)])
    up = ctx.start_upstream("plain")
    for name, file, want in [
            ("nope", path, f"{path}: resources: no secret named 'nope'"),
            ("server", str(ctx.tmp / "missing.yaml"), "missing.yaml: cannot read"),
    ]:
        cfg = ctx.tmp / f"boot-{name}.yaml"
        cfg.write_text(config(sds_down(file, cert=name), up.port).replace("{{ADMIN}}", "0")
                       .replace("{{L}}", "0"))
        proc = ctx.spawn("validate", [ctx.bin("remora"), "--mode", "validate", "-c", cfg])
        assert proc.wait() == 1, proc.stderr
        out = proc.stdout + proc.stderr
        assert "tls_certificate_sds_secret_configs[0]: " in out and want in out, out


def test_example_tls_sds_validates(ctx):
    """examples/tls_sds (its paths are relative to the repository root)."""
    exe = ctx.bin("remora")
    if not exe.exists():
        raise Skip("remora is not built")
    proc = subprocess.run([str(exe), "--mode", "validate", "-c", "examples/tls_sds/bootstrap.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=30 * slow_factor())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout, proc.stdout


def test_no_session_resumption_across_a_rotation(ctx):
    """A TLS session (a TLS 1.3 ticket, or TLS 1.2) made before the trusted CA rotated is not
    resumed after it: the client must do a full handshake, so a client whose CA was removed
    is refused instead of resuming its old session."""
    p, path = setup(ctx)
    newca = p.other_ca("newca")
    client = p.leaf("client", f"URI:{SPIFFE}client")
    write_sds(path, "v0", [("server", p.a), ("ca", p.ca)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path, ca="ca", require=True), up.port))
    port = r.port("L")
    updates = 0
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        cctx = client_context(ca=p.ca, cert=client[0], key=client[1])
        cctx.maximum_version = version
        first = TlsConn(port, cctx)
        assert first.request().status == 200  # (reads the TLS 1.3 tickets too)
        sess = first.sock.session
        first.close()
        # Resumption works while nothing changed...
        raw = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor())
        again = cctx.wrap_socket(raw, server_hostname="backend.test", session=sess)
        assert again.session_reused, version
        again.close()
        write_sds(path, f"v{updates + 1}", [("server", p.a), ("ca", newca[0])])
        wait_sds(r, "ca", "update_success", updates + 1)
        # ...and not after the CA rotated: the full handshake refuses the old CA's client.
        refused = False
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor())
            s = cctx.wrap_socket(raw, server_hostname="backend.test", session=sess)
            assert not s.session_reused, version
            s.sendall(build_request("GET", "/", None, None, f"backend.test:{port}"))
            _read_response(_Reader(s, timeout=5 * slow_factor()), "GET")
        except (OSError, EOFError, ssl.SSLError):
            refused = True
        assert refused, version
        write_sds(path, f"v{updates + 2}", [("server", p.a), ("ca", p.ca)])
        wait_sds(r, "ca", "update_success", updates + 2)
        updates += 2


def test_in_place_write_and_watched_directory(ctx):
    """A file written in place (closed after writing) is re-read; with watched_directory, a
    Kubernetes-style swap of the `..data` link in that directory is."""
    p, path = setup(ctx)
    write_sds(path, "v1", [("server", p.a)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path), up.port))
    port = r.port("L")
    text = open(path).read().replace("cert-a", "cert-b").replace("'v1'", "'v2'")
    with open(path, "w") as f:  # no rename: IN_CLOSE_WRITE
        f.write(text)
    wait_sds(r, "server", "update_success", 1)
    assert served(port) == der(p.b[0])

    d = ctx.tmp / "secrets"
    d.mkdir()
    (d / "..v1").mkdir()
    write_sds(str(d / "..v1" / "sds.yaml"), "k1", [("server", p.a)])
    os.symlink("..v1", d / "..data")
    os.symlink("..data/sds.yaml", d / "sds.yaml")
    r2 = ctx.start_remora(config(sds_down(str(d / "sds.yaml"), watched=str(d)), up.port),
                          name="remora-k8s")
    port2 = r2.port("L")
    assert served(port2) == der(p.a[0])
    (d / "..v2").mkdir()
    write_sds(str(d / "..v2" / "sds.yaml"), "k2", [("server", p.b)])
    os.symlink("..v2", d / "..data_tmp")
    os.rename(d / "..data_tmp", d / "..data")
    wait_sds(r2, "server", "update_success", 1)
    assert served(port2) == der(p.b[0])


def test_rotation_churn_memory_flat(ctx):
    """80 rotations (certificate and CA) with a handshake after each: memory does not grow
    with them (old certificates, keys and stores are freed once no connection holds them;
    keeping one of each per rotation would add some 10 KiB a rotation)."""
    from lib import is_sanitized, proc_rss_kb
    p, path = setup(ctx)
    write_sds(path, "v0", [("server", p.a), ("ca", p.ca)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(config(sds_down(path, ca="ca"), up.port))
    port = r.port("L")
    rss = []
    for i in range(1, 81):
        write_sds(path, f"v{i}", [("server", p.b if i % 2 else p.a), ("ca", p.ca)])
        wait_sds(r, "server", "update_success", i)
        assert served(port) == der((p.b if i % 2 else p.a)[0])
        if i in (10, 80):
            rss.append(proc_rss_kb(r.pid))
    if is_sanitized():
        return  # ASan's quarantine keeps freed memory resident; LSan checks leaks at exit
    assert rss[1] - rss[0] < 256, rss
