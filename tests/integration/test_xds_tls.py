"""TLS on remora-xds's xDS port, both ends: remora-xds serves ADS over TLS (--xds-tls: a
certificate its mesh CA issues for 127.0.0.1, or --xds-tls-cert/--xds-tls-key files; mTLS with
--xds-tls-client-ca), and a remora sidecar reaches it with an UpstreamTlsContext on its ADS
cluster (trusted_ca, SAN matchers, client certificate, sni; h2 by ALPN) and takes its clusters,
endpoints and routes over that stream (the mesh of test_xds_e2e.py). Clients that do not speak
TLS, do not trust the server, or (under mTLS) show no certificate or one of another CA are
refused; remora-xds counts and logs each failed handshake and goes on serving the others."""

import re
import socket
import ssl
import subprocess
import time

from adsutil import ads_bootstrap
from lib import free_port, raw_exchange, slow_factor, wait_for
from proxyutil import stats
from test_xds_e2e import MESH, NODE, ROUTER_PORT, make_mesh, spread
from test_xds_serve import start_xds_server
from tlsutil import Pki

TD = "mesh.test"
TLS_UP = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def init_ca(ctx):
    ca_dir = ctx.tmp / "ca"
    ca_dir.mkdir(exist_ok=True)
    subprocess.run([str(ctx.bin("remora-certs")), "init-ca", "--dir", str(ca_dir),
                    "--trust-domain", TD], check=True, capture_output=True)
    return ca_dir


def sidecar_config(xds_port, tls=None, fetch_timeout=None):
    """The e2e sidecar's bootstrap (front: CDS, EDS and RDS over ADS); ``tls``: the
    UpstreamTlsContext body of its ADS cluster (None: h2c)."""
    cfg = ads_bootstrap({}, xds_port, route_config_name=f"rds_egress_http_{ROUTER_PORT}",
                        cds={"ads": {}, "resource_api_version": "V3"},
                        node={"id": NODE, "cluster": "front"},
                        initial_fetch_timeout=fetch_timeout)
    if fetch_timeout is not None:
        cfg["dynamic_resources"]["cds_config"]["initial_fetch_timeout"] = fetch_timeout
    if tls is not None:
        [xc] = [c for c in cfg["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
        xc["transport_socket"] = {"name": "envoy.transport_sockets.tls",
                                  "typed_config": {"@type": TLS_UP, **tls}}
    return cfg


def trust(ca_pem, sans=None, cert=None):
    """common_tls_context: the CA, SAN matchers [(type, exact)], a client (cert, key)."""
    vc = {"trusted_ca": {"filename": str(ca_pem)}}
    if sans:
        vc["match_typed_subject_alt_names"] = [{"san_type": t, "matcher": {"exact": v}}
                                               for t, v in sans]
    common = {"validation_context": vc}
    if cert is not None:
        common["tls_certificates"] = [{"certificate_chain": {"filename": cert[0]},
                                       "private_key": {"filename": cert[1]}}]
    return {"common_tls_context": common}


def served(r):
    """The sidecar took its config over the TLS stream: both targets answer."""
    s = stats(r)
    assert s["cluster_manager.cds.update_success"] >= 1, s
    assert s["cluster_manager.cds.update_rejected"] == 0, s
    got = spread(r, 40)
    assert set(got) == {"a", "b"}, got


def refused(ctx, x, cfg, remora_says, name):
    """A sidecar with ``cfg`` never gets its config: not ready, its log says ``remora_says``
    and remora-xds logged a failed handshake."""
    def failures():
        return len(re.findall(r"TLS handshake with \S+ failed: ", x.stderr))
    before = failures()
    r = ctx.start_remora(cfg, wait_ready=False, name=name)
    wait_for(lambda: remora_says in r.stderr, 5, f"{name}: {remora_says!r}")
    wait_for(lambda: failures() > before, 5, "remora-xds logs the failed handshake")
    assert r.admin("GET", "/ready").status == 503
    assert stats(r).get("cluster_manager.cds.update_success", 0) == 0
    r.stop(r.term_timeout)


def test_xds_tls_issued_certificate(ctx):
    """--ca-dir and --xds-tls: remora-xds serves with a certificate of its mesh CA (IP SAN
    127.0.0.1, URI spiffe://<td>/remora-xds); a sidecar trusting only ca.pem, pinning that
    SPIFFE ID, takes its config; one trusting another CA, a plaintext sidecar and a raw h2c
    client are refused, and a client that never finishes its handshake is cut off."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ca_dir = init_ca(ctx)
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--xds-tls", "--cert-lifetime", "1h",
                               "--request-timeout-ms", "1000"])
    wait_for(lambda: "xDS (ADS) over TLS on 127.0.0.1:" in x.stderr, 5, "the startup log")
    assert "travel unencrypted" not in x.stderr, x.tail()
    make_mesh(x, a.port, b.port, free_port())

    # What a TLS client sees: TLS 1.3, h2, a certificate of the mesh CA for 127.0.0.1.
    sc = ssl.create_default_context(cafile=str(ca_dir / "ca.pem"))
    sc.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", x.xds_port), timeout=5) as raw:
        with sc.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            sans = tls.getpeercert()["subjectAltName"]
            assert ("IP Address", "127.0.0.1") in sans, sans
            assert ("URI", f"spiffe://{TD}/remora-xds") in sans, sans

    r = ctx.start_remora(sidecar_config(x.xds_port, trust(
        ca_dir / "ca.pem", [("URI", f"spiffe://{TD}/remora-xds"), ("IP_ADDRESS", "127.0.0.1")])),
        log_level="debug")
    served(r)
    assert "ads: stream open to 127.0.0.1:" in r.stderr and "TLSv1." in r.stderr, r.tail()

    # A sidecar that trusts another CA: its handshake fails, remora-xds logs it.
    pki = Pki(ctx.tmp / "pki")
    refused(ctx, x, sidecar_config(x.xds_port, trust(pki.ca), "30s"),
            "TLS error: certificate verify failed", "wrong-ca")
    # The right CA but a SAN the server does not have.
    refused(ctx, x, sidecar_config(x.xds_port, trust(ca_dir / "ca.pem",
                                                     [("DNS", "xds.other.test")]), "30s"),
            "TLS error: no subject alternative name matched", "wrong-san")
    # A plaintext (h2c) sidecar on the TLS port: no HTTP/2 from the server, never configured.
    refused(ctx, x, sidecar_config(x.xds_port, None, "30s"),
            "ads: the server closed the connection", "plaintext")

    # A raw h2c client: the connection is closed without an HTTP/2 SETTINGS frame.
    t0 = time.monotonic()
    got = raw_exchange(x.xds_port, H2_PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00",
                       timeout=5.0)
    assert time.monotonic() - t0 < 4.0 * slow_factor(), "the server kept the connection"
    assert not (len(got) >= 9 and got[3] == 4), got  # no SETTINGS
    # A client that connects and sends nothing: closed after the handshake timeout (1 s).
    with socket.create_connection(("127.0.0.1", x.xds_port), timeout=10) as s:
        t0 = time.monotonic()
        assert s.recv(100) == b""
        took = time.monotonic() - t0
        assert 0.5 < took < 5.0 * slow_factor(), took
    wait_for(lambda: "failed: timed out" in x.stderr, 5, "the timeout logged")

    # Through all of it the good sidecar kept its stream: an API change still reaches it.
    from test_xds_e2e import update_route
    update_route(x, [("a", 0), ("b", 1)])
    wait_for(lambda: spread(r, 10) == {"b": 10}, 10, "traffic on b only")
    assert x.alive() and r.alive()


def test_xds_tls_mtls_with_files(ctx):
    """--xds-tls-cert/--xds-tls-key (a DNS name, chosen by SNI-less clients through the SAN
    matcher) and --xds-tls-client-ca: a sidecar with a client certificate of that CA takes its
    config (alongside --ca-dir's identities); one without a certificate, and one with a
    certificate of another CA, are refused."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ca_dir = init_ca(ctx)
    pki = Pki(ctx.tmp / "pki")
    srv = pki.leaf("xds", "DNS:xds.mesh.test", usage="serverAuth")
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--xds-tls-cert", srv[0],
                               "--xds-tls-key", srv[1], "--xds-tls-client-ca", pki.ca])
    wait_for(lambda: "clients verified against" in x.stderr, 5, "the startup log")
    make_mesh(x, a.port, b.port, free_port())

    client = pki.leaf("front", f"URI:spiffe://{TD}/front", usage="clientAuth")
    good = trust(pki.ca, [("DNS", "xds.mesh.test")], cert=client)
    good["sni"] = "xds.mesh.test"
    r = ctx.start_remora(sidecar_config(x.xds_port, good), log_level="debug")
    served(r)

    refused(ctx, x, sidecar_config(x.xds_port, trust(pki.ca, [("DNS", "xds.mesh.test")]), "30s"),
            "ads: TLS error: handshake failed", "no-cert")
    assert "peer did not return a certificate" in x.stderr, x.tail()
    other = pki.other_ca()
    stranger = pki.leaf("stranger", f"URI:spiffe://{TD}/front", usage="clientAuth", ca=other)
    refused(ctx, x, sidecar_config(x.xds_port, trust(pki.ca, [("DNS", "xds.mesh.test")],
                                                     cert=stranger), "30s"),
            "ads: TLS error: handshake failed", "other-ca")
    assert "certificate verify failed" in x.stderr, x.tail()
    assert r.alive() and spread(r, 4).keys() <= {"a", "b"}


def test_xds_tls_flags(ctx):
    """Flag combinations that cannot work are refused at startup with what is missing."""
    exe = str(ctx.bin("remora-xds"))
    base = [exe, "--db", str(ctx.tmp / "f.db"), "--listen", "127.0.0.1:0"]
    cases = [
        (["--xds-tls"], "--xds-tls needs --xds-listen"),
        (["--xds-listen", "127.0.0.1:0", "--xds-tls"], "--ca-dir to issue its own"),
        (["--xds-listen", "127.0.0.1:0", "--xds-tls-cert", "/nonexistent"], "go together"),
        (["--xds-listen", "127.0.0.1:0", "--xds-tls-name", "bad name"], "--xds-tls-name"),
    ]
    for args, want in cases:
        p = subprocess.run(base + args, capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert want in p.stderr, (args, p.stderr)
    p = subprocess.run(base + ["--xds-listen", "127.0.0.1:0", "--xds-tls-cert", "/nonexistent",
                               "--xds-tls-key", "/nonexistent"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 1 and "--xds-tls-cert: no usable PEM certificate chain in " \
        "'/nonexistent'" in p.stderr, p.stderr


def test_xds_tls_plaintext_with_ca_dir_warns(ctx):
    """--ca-dir without --xds-tls keeps serving h2c (a choice), with a warning that the
    identities' keys travel unencrypted."""
    ca_dir = init_ca(ctx)
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir)])
    wait_for(lambda: "over h2c (plaintext)" in x.stderr, 5, "the startup log")
    assert "[warning] remora-xds: the xDS port serves plaintext (h2c)" in x.stderr, x.tail()


def test_xds_tls_example(ctx):
    """examples/ads_sidecar_tls.yaml with its commands as written (the CA, remora-xds with
    --xds-tls for 127.0.0.1, remora from the directory holding ca/), on free ports: it
    validates, and remora takes its listeners (none: the node has no mesh yet) and clusters
    over the TLS stream."""
    from lib import REPO
    text = (REPO / "examples" / "ads_sidecar_tls.yaml").read_text()
    ca_dir = ctx.tmp / "ca"
    ca_dir.mkdir()
    subprocess.run([str(ctx.bin("remora-certs")), "init-ca", "--dir", str(ca_dir),
                    "--trust-domain", "mesh.local"], check=True, capture_output=True)
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--xds-tls", "--xds-tls-name",
                               "127.0.0.1"])
    assert "port_value: 18000" in text and "port_value: 9901" in text
    text = text.replace("port_value: 18000", f"port_value: {x.xds_port}")
    text = text.replace("port_value: 9901", "port_value: {{ADMIN}}")
    p = subprocess.run([str(ctx.bin("remora")), "--config-yaml",
                        text.replace("{{ADMIN}}", "0"), "--mode", "validate"],
                       cwd=str(ctx.tmp), capture_output=True, text=True, timeout=20)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "filename: ca/ca.pem" in text
    r = ctx.start_remora(text.replace("filename: ca/ca.pem",
                                      f"filename: {ca_dir / 'ca.pem'}"))
    s = stats(r)
    assert s["listener_manager.lds.update_success"] >= 1, s
    assert s["cluster_manager.cds.update_success"] >= 1, s
    assert s["control_plane.connected_state"] == 1, s


def test_xds_tls_authorize_nodes(ctx):
    """--xds-tls-authorize-nodes: mTLS against the mesh CA, and a stream gets only the node its
    client certificate's SPIFFE ID names (SDS over ADS carries that node's private key). The
    sidecar of front with front's certificate takes its config; with b's certificate, one of
    another trust domain, or one without a URI SAN, its stream ends with grpc-status 7
    (PERMISSION_DENIED) and the reason, and remora-xds logs it; a node that is no virtual node
    (a proxyless client) gets its certificate's mesh and no other; a client without a
    certificate does not finish the handshake."""
    a = ctx.start_upstream("a")
    b = ctx.start_upstream("b")
    ca_dir = init_ca(ctx)
    x = start_xds_server(ctx, ["--ca-dir", str(ca_dir), "--xds-tls-authorize-nodes"])
    wait_for(lambda: "xDS node authorization: a stream gets only the node" in x.stderr, 5,
             "the startup log")
    assert f"clients verified against {ca_dir}/ca.pem (mTLS)" in x.stderr, x.tail()
    make_mesh(x, a.port, b.port, free_port())
    pki = Pki(ctx.tmp / "pki")
    mesh_ca = (str(ca_dir / "ca.pem"), str(ca_dir / "ca.key"))

    def cert(name, sans):
        return pki.leaf(name, sans, usage="clientAuth", ca=mesh_ca)

    def cfg(client, node=None):
        c = sidecar_config(x.xds_port, trust(ca_dir / "ca.pem",
                                             [("URI", f"spiffe://{TD}/remora-xds")],
                                             cert=client), "30s")
        if node is not None:
            c["node"] = node
        return c

    def denied(client, why, name, node=None):
        before = x.stderr.count("PERMISSION_DENIED")
        r = ctx.start_remora(cfg(client, node), wait_ready=False, name=name)
        wait_for(lambda: "the stream ended: grpc-status 7" in r.stderr, 10,
                 f"{name}: PERMISSION_DENIED")
        # The grpc-message reaches the client (remora keeps its first 127 characters).
        assert why[:100] in r.stderr, r.tail()
        wait_for(lambda: x.stderr.count("PERMISSION_DENIED") > before, 5, "logged")
        assert why in x.stderr, x.tail()
        assert r.admin("GET", "/ready").status == 503
        assert stats(r).get("cluster_manager.cds.update_success", 0) == 0
        r.stop(r.term_timeout)

    front = cert("front", f"URI:spiffe://{TD}/mesh/{MESH}/virtualNode/front")
    r = ctx.start_remora(cfg(front), log_level="debug")
    served(r)

    denied(cert("b", f"URI:spiffe://{TD}/mesh/{MESH}/virtualNode/b"),
           f"node {NODE}: the client certificate is spiffe://{TD}/mesh/{MESH}/virtualNode/b "
           f"(want spiffe://{TD}/mesh/{MESH}/virtualNode/front)", "as-b")
    denied(cert("other-td", f"URI:spiffe://other.test/mesh/{MESH}/virtualNode/front"),
           "the client certificate has a URI SAN that is no SPIFFE ID of the mesh's trust domain",
           "other-td")
    denied(cert("dns-only", "DNS:front.mesh.test"),
           "the client certificate has no URI SAN (SPIFFE ID)", "no-uri")
    denied(front, f"node web-1: mesh other, but the client certificate is spiffe://{TD}/mesh/"
           f"{MESH}/virtualNode/front", "proxyless-other-mesh",
           node={"id": "web-1", "cluster": "front", "metadata": {"mesh": "other"}})

    # A proxyless client's node in its certificate's mesh is served (that mesh's clusters).
    n = x.stderr.count("PERMISSION_DENIED")
    p = ctx.start_remora(cfg(front, {"id": "web-1", "cluster": "front",
                                     "metadata": {"mesh": MESH}}),
                         wait_ready=False, name="proxyless")
    wait_for(lambda: stats(p).get("cluster_manager.cds.update_success", 0) >= 1, 10,
             "the proxyless node's CDS")
    assert x.stderr.count("PERMISSION_DENIED") == n, x.tail()
    p.stop(p.term_timeout)

    refused(ctx, x, sidecar_config(x.xds_port, trust(ca_dir / "ca.pem"), "30s"),
            "ads: TLS error: handshake failed", "no-cert")
    assert "peer did not return a certificate" in x.stderr, x.tail()
    # Through all of it the good sidecar kept its stream.
    from test_xds_e2e import update_route
    update_route(x, [("a", 0), ("b", 1)])
    wait_for(lambda: spread(r, 10) == {"b": 10}, 10, "traffic on b only")
    assert x.alive() and r.alive()


def test_xds_tls_authorize_nodes_needs_the_mesh_ca(ctx):
    exe = str(ctx.bin("remora-xds"))
    p = subprocess.run([exe, "--db", str(ctx.tmp / "f.db"), "--listen", "127.0.0.1:0",
                        "--xds-listen", "127.0.0.1:0", "--xds-tls-authorize-nodes"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2 and "--xds-tls-authorize-nodes needs --ca-dir" in p.stderr, p.stderr
