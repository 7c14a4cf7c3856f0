"""SDS over ADS: a listener's certificate and trusted CA named with sds_config `ads: {}` come as
Secrets over the ADS stream (tests/grpc/ads_server.js). Startup waits for them (the listener
does not serve, /ready is not 200, until the certificate arrives); a push rotates the
certificate for new connections while open ones keep theirs; a bad secret is NACKed with its
path and the old one keeps serving; /config_dump lists the secrets, keys redacted."""

import json

from adsutil import start_ads_server
from lib import http_request, wait_for
from proxyutil import stats
from test_sds import TlsConn, der, served
from test_tls import TLS_DOWN, config, curl
from tlsutil import SPIFFE, Pki

SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def read(path):
    with open(path) as f:
        return f.read()


def cert_secret(name, pair):
    return {"json": {"name": name, "tls_certificate": {
        "certificate_chain": {"inline_string": read(pair[0])},
        "private_key": {"inline_string": read(pair[1])}}}}


def ca_secret(name, ca_path):
    return {"json": {"name": name,
                     "validation_context": {"trusted_ca": {"inline_string": read(ca_path)}}}}


def ads_tls(ca=None, require=False, fetch_timeout=None, san=None):
    """A DownstreamTlsContext taking certificate 'server' (and CA `ca`) over ADS."""
    cs = "{ads: {}, resource_api_version: V3" + (
        f", initial_fetch_timeout: {fetch_timeout}" if fetch_timeout else "") + "}"
    lines = ["transport_socket:", "  name: envoy.transport_sockets.tls", "  typed_config:",
             f'    "@type": {TLS_DOWN}']
    if require:
        lines.append("    require_client_certificate: true")
    lines += ["    common_tls_context:", "      tls_certificate_sds_secret_configs:",
              f"      - {{name: server, sds_config: {cs}}}"]
    if ca and san:
        lines += ["      combined_validation_context:",
                  "        default_validation_context:",
                  "          match_typed_subject_alt_names:",
                  f"          - {{san_type: URI, matcher: {{exact: '{san}'}}}}",
                  "        validation_context_sds_secret_config:",
                  f"          {{name: {ca}, sds_config: {cs}}}"]
    elif ca:
        lines += ["      validation_context_sds_secret_config:",
                  f"        {{name: {ca}, sds_config: {cs}}}"]
    return lines


def bootstrap(ads_port, up_port, tls_lines):
    text = config(tls_lines, up_port)
    text += "\n".join([
        "  - name: xds_cluster",
        "    type: STATIC",
        "    connect_timeout: 0.5s",
        "    typed_extension_protocol_options:",
        "      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
        '        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.'
        "HttpProtocolOptions",
        "        explicit_http_config: {http2_protocol_options: {}}",
        "    load_assignment:",
        "      cluster_name: xds_cluster",
        "      endpoints:",
        "      - lb_endpoints:",
        "        - endpoint:",
        "            address:",
        f"              socket_address: {{address: 127.0.0.1, port_value: {ads_port}}}",
        "dynamic_resources:",
        "  ads_config:",
        "    api_type: GRPC",
        "    transport_api_version: V3",
        "    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]",
        "node: {id: mesh/m/virtualNode/back, cluster: back}",
    ]) + "\n"
    return text


def setup(ctx):
    p = Pki(ctx.tmp / "pki")
    p.a = p.leaf("cert-a", "DNS:backend.test")
    p.b = p.leaf("cert-b", "DNS:backend.test")
    return p


def sds_stat(r, name, stat):
    return stats(r).get(f"sds.{name}.{stat}", 0)


def secret_requests(ads):
    return [q for q in ads.requests() if q["type_url"] == SECRET]


def test_certificate_over_ads_waits_rotates_and_nacks(ctx):
    p = setup(ctx)
    ads = start_ads_server(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(bootstrap(ads.port, up.port, ads_tls()), wait_ready=False)
    # The proxy subscribes the secret by name; until it arrives startup waits: not ready, and
    # the TLS listener serves nothing.
    ads.wait_request(lambda q: q["type_url"] == SECRET and q["resource_names"] == ["server"],
                     what="a Secret request for 'server'")
    st = r.admin("GET", "/ready")
    assert st.status != 200, st.text
    port = r.port("L")
    rc, out = curl(port, "--cacert", p.ca)
    assert rc != 0, out

    ads.set(SECRET, "v1", [cert_secret("server", p.a)])
    wait_for(lambda: r.admin("GET", "/ready").status == 200, 10, "ready after the secret")
    assert served(port) == der(p.a[0])
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out
    old = TlsConn(port)
    assert old.request().status == 200

    # A push rotates it: new connections get the new certificate, the open one keeps its own.
    ads.set(SECRET, "v2", [cert_secret("server", p.b)])
    wait_for(lambda: sds_stat(r, "server", "update_success") >= 2, 5, "v2 applied")
    assert served(port) == der(p.b[0])
    assert old.request().status == 200
    assert old.peer() == der(p.a[0])
    old.close()

    # A bad secret (a key that is not the certificate's) is NACKed with its path; v2 serves on.
    bad = cert_secret("server", (p.a[0], p.b[1]))
    ads.set(SECRET, "v3", [bad])
    nack = ads.wait_request(lambda q: q["type_url"] == SECRET and q.get("error_detail"),
                            what="a NACK")
    msg = nack["error_detail"]["message"]
    assert "resources[0]" in msg and "tls_certificate" in msg, msg
    assert nack["version_info"] == "v2", nack
    assert sds_stat(r, "server", "update_rejected") == 1
    assert served(port) == der(p.b[0])
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out

    dump = r.admin("GET", "/config_dump").text
    [secrets] = [c for c in json.loads(dump)["configs"]
                 if c["@type"].endswith("SecretsConfigDump")]
    [s] = secrets["dynamic_active_secrets"]
    assert s["name"] == "server" and s["version_info"] == "v2", s
    assert "[redacted]" in json.dumps(s) and read(p.b[1]).strip() not in dump


def test_mtls_ca_and_san_over_ads(ctx):
    """The trusted CA over ADS in a combined_validation_context whose SAN matcher pins one
    SPIFFE ID: the pinned client passes, another client of the same CA is refused."""
    p = setup(ctx)
    good = p.leaf("good", f"URI:{SPIFFE}good")
    other = p.leaf("other", f"URI:{SPIFFE}other")
    ads = start_ads_server(ctx)
    ads.set(SECRET, "v1", [cert_secret("server", p.a), ca_secret("mesh-ca", p.ca)])
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(bootstrap(ads.port, up.port,
                                   ads_tls(ca="mesh-ca", require=True, san=f"{SPIFFE}good")))
    port = r.port("L")
    q = secret_requests(ads)[0]
    assert sorted(q["resource_names"]) == ["mesh-ca", "server"], q
    rc, out = curl(port, "--cacert", p.ca, "--cert", good[0], "--key", good[1])
    assert rc == 0 and out.endswith("200 1.1"), out
    rc, out = curl(port, "--cacert", p.ca, "--cert", other[0], "--key", other[1])
    assert rc != 0, out
    lp = f"listener.127.0.0.1_{port}.ssl"
    wait_for(lambda: stats(r).get(f"{lp}.fail_verify_san") == 1, 5, "SAN refusal counted")


def test_initial_fetch_timeout_starts_without_the_secret(ctx):
    """initial_fetch_timeout bounds the wait: remora starts, the listener fails closed (no
    certificate: every handshake fails) until the secret comes."""
    p = setup(ctx)
    ads = start_ads_server(ctx)
    up = ctx.start_upstream("plain")
    r = ctx.start_remora(bootstrap(ads.port, up.port, ads_tls(fetch_timeout="0.3s")))
    port = r.port("L")
    rc, out = curl(port, "--cacert", p.ca)
    assert rc != 0, out
    ads.set(SECRET, "v1", [cert_secret("server", p.a)])
    wait_for(lambda: sds_stat(r, "server", "update_success") == 1, 5, "the late secret")
    rc, out = curl(port, "--cacert", p.ca)
    assert rc == 0 and out.endswith("200 1.1"), out


def test_bootstrap_strict_dns_cluster_with_sds_secret_follows_its_name(ctx):
    """A bootstrap STRICT_DNS cluster whose upstream TLS takes its trusted CA over ADS is
    resolved again like any other: after its name moves, a new connection goes to the new
    address, and that version verifies the server with the CA from ADS (it was given the secret
    in force), so the request is served over TLS, not refused (503 UF)."""
    from test_dns_refresh import REFUSED_NS, mount_prefix, need_root, rewrite
    from test_tls import TLS_UP
    from tlsutil import TlsHttpServer
    need_root()
    p = setup(ctx)
    a = TlsHttpServer("a", *p.a, host="127.0.0.2")
    ctx.on_cleanup(a.close)
    b = TlsHttpServer("b", *p.b, host="127.0.0.3", port=a.port)
    ctx.on_cleanup(b.close)
    ads = start_ads_server(ctx)
    ads.set(SECRET, "v1", [ca_secret("mesh-ca", p.ca)])
    cluster_tls = ["transport_socket:", "  name: envoy.transport_sockets.tls",
                   "  typed_config:", f'    "@type": {TLS_UP}', "    sni: backend.test",
                   "    common_tls_context:", "      validation_context_sds_secret_config:",
                   "        {name: mesh-ca, sds_config: {ads: {}, resource_api_version: V3}}"]
    text = bootstrap(ads.port, a.port, [])
    text = text.replace(
        "    type: STATIC\n    load_assignment:\n      cluster_name: backend\n",
        "    type: STRICT_DNS\n    dns_refresh_rate: 0.5s\n    dns_lookup_family: V4_ONLY\n"
        "    load_assignment:\n      cluster_name: backend\n", 1)
    text = text.replace(f"address: 127.0.0.1, port_value: {a.port}",
                        f"address: backend.test, port_value: {a.port}", 1)
    text = text.replace("  - name: xds_cluster\n",
                        "\n".join("    " + x for x in cluster_tls) + "\n  - name: xds_cluster\n",
                        1)
    d = ctx.tmp / "dns"
    d.mkdir(exist_ok=True)
    hosts, resolv = d / "hosts", d / "resolv.conf"
    hosts.write_text("127.0.0.2 backend.test\n")
    resolv.write_text(f"nameserver {REFUSED_NS}\noptions timeout:1 attempts:1\n")
    for f in (hosts, resolv):
        f.chmod(0o644)
    r = ctx.start_remora(text, prefix=mount_prefix(hosts, resolv))
    assert "resolved once" not in r.stderr
    resp = http_request(r.port("L"))
    assert resp.status == 200 and resp.body.startswith(b"a sni=backend.test"), resp
    rewrite(hosts, "127.0.0.3 backend.test\n")
    wait_for(lambda: "'backend': 1 host(s) after DNS resolution" in r.stderr, 5,
             "the name moved")
    resp = http_request(r.port("L"))
    assert resp.status == 200 and resp.body.startswith(b"b sni=backend.test"), resp
    assert stats(r)["cluster.backend.ssl.handshake"] == 2
