"""SDS over ADS inside listeners from LDS and clusters from CDS (tests/grpc/ads_server.js): one
Secret subscription per name, following the listener and cluster sets; startup waits for the
secrets of the first LDS/CDS sets; a push rotates a dynamic listener's certificate for new
handshakes; a bad secret is NACKed with its path and the old one keeps serving; a listener or
cluster added at run time whose secret has not arrived fails closed (handshakes fail) until it
does, a listener warms (not accepting) until it does; a CDS cluster does upstream mTLS with its client certificate and trust over SDS."""

import json
import socket
import ssl

from adsutil import (CL_TYPE, LST_TYPE, ads_bootstrap, route_config, start_ads_server,
                     static_cluster, to)
from lib import free_port, http_request, slow_factor, wait_for
from proxyutil import stats
from test_lds import ads_listener, lm, refused, who
from test_sds import TlsConn, der, served
from test_sds_ads import SECRET, ca_secret, cert_secret, sds_stat
from test_tls import TLS_DOWN, TLS_UP, pki
from tlsutil import SPIFFE, Pki, TlsHttpServer


def ads_src(fetch=None):
    cs = {"ads": {}, "resource_api_version": "V3"}
    if fetch is not None:
        cs["initial_fetch_timeout"] = fetch
    return cs


def down_tls(cert, fetch=None):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS_DOWN, "common_tls_context": {"tls_certificate_sds_secret_configs": [
            {"name": cert, "sds_config": ads_src(fetch)}]}}}


def tls_listener(name, port, cluster, cert, fetch=None, prefix=None):
    lst = ads_listener(name, port, cluster, prefix=prefix or name)
    lst["filter_chains"][0]["transport_socket"] = down_tls(cert, fetch)
    return lst


def up_tls(cert, ca):
    return {"name": "envoy.transport_sockets.tls", "typed_config": {
        "@type": TLS_UP, "sni": "backend.test", "common_tls_context": {
            "tls_certificate_sds_secret_configs": [{"name": cert, "sds_config": ads_src()}],
            "validation_context_sds_secret_config": {"name": ca, "sds_config": ads_src()}}}}


def secret_names(ads):
    """The resource names of the last Secret request."""
    qs = [q for q in ads.requests() if q["type_url"] == SECRET]
    return sorted(qs[-1].get("resource_names", [])) if qs else None


def wait_names(ads, want, what):
    wait_for(lambda: secret_names(ads) == sorted(want), 5 * slow_factor(), what)


def handshake_fails(port):
    try:
        served(port)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return True
    return False


def plaintext_refused(port):
    """A plaintext HTTP request to `port` gets no HTTP answer (the TLS layer drops it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor()) as s:
        s.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    return not got.startswith(b"HTTP/")


def test_lds_listener_certificate_over_sds(ctx):
    p = Pki(ctx.tmp / "pki")
    p.a = p.leaf("cert-a", "DNS:backend.test")
    p.b = p.leaf("cert-b", "DNS:backend.test")
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1, p2 = free_port(), free_port()
    ads.set_listeners("l1", [tls_listener("one", p1, "a", "server")])
    d = ads_bootstrap({"a": [a.port]}, ads.port)
    d["dynamic_resources"]["lds_config"] = ads_src()
    r = ctx.start_remora(d, wait_ready=False)

    # The first listener set names 'server': the proxy subscribes it, and startup waits for it.
    wait_names(ads, ["server"], "a Secret request for the LDS listener's 'server'")
    wait_for(lambda: lm(r, "lds.update_success") == 1, 5 * slow_factor(), "the listener set")
    assert r.admin("GET", "/ready").status == 503
    ads.set(SECRET, "v1", [cert_secret("server", p.a)])
    r.wait_ready(10 * slow_factor())
    assert served(p1) == der(p.a[0])
    old = TlsConn(p1)
    assert who(old.request()) == "a"

    # Rotation: new handshakes get the new certificate, the open connection keeps its own.
    ads.set(SECRET, "v2", [cert_secret("server", p.b)])
    ads.wait_request(lambda q: q["type_url"] == SECRET and q.get("version_info") == "v2"
                     and not q.get("error_detail"), what="v2 ACKed")
    assert served(p1) == der(p.b[0])
    assert who(old.request()) == "a" and old.peer() == der(p.a[0])
    old.close()
    st = stats(r)
    assert st[f"listener.127.0.0.1_{p1}.server_ssl_socket_factory."
              "ssl_context_update_by_sds"] == 2, st
    assert st[f"listener.127.0.0.1_{p1}.ssl.handshake"] >= 3, st

    # A bad secret (a key that is not the certificate's) is NACKed with its path; v2 serves on.
    ads.set(SECRET, "v3", [cert_secret("server", (p.a[0], p.b[1]))])
    nack = ads.wait_request(lambda q: q["type_url"] == SECRET and q.get("error_detail"),
                            what="the Secret NACK")
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[0].tls_certificate"), msg
    assert nack["version_info"] == "v2", nack
    assert served(p1) == der(p.b[0])

    # A listener added at run time naming a secret nobody has sent: the name joins the
    # subscription, and the listener warms (Envoy's listener warming: not accepting, counted in
    # total_listeners_warming) until the secret comes or its initial_fetch_timeout passes.
    ads.set_listeners("l2", [tls_listener("one", p1, "a", "server"),
                             tls_listener("two", p2, "a", "late")])
    wait_names(ads, ["late", "server"], "'late' subscribed")
    wait_for(lambda: lm(r, "total_listeners_warming") == 1, 5 * slow_factor(), "two warming")
    assert lm(r, "total_listeners_active") == 1
    assert refused(p2)
    assert served(p1) == der(p.b[0])  # the other listener is untouched
    ads.set(SECRET, "v4", [cert_secret("server", p.b), cert_secret("late", p.a)])
    wait_for(lambda: sds_stat(r, "late", "update_success") == 1, 5, "'late' applied")
    wait_for(lambda: not refused(p2), 5 * slow_factor(), "two warm")
    assert lm(r, "total_listeners_warming") == 0 and lm(r, "total_listeners_active") == 2
    assert served(p2) == der(p.a[0])
    assert who(TlsConn(p2).request()) == "a"

    # The listener modified (another stat_prefix, same secrets): its new version is given the
    # secrets in force before it serves, so no handshake fails across the change.
    ads.set_listeners("l3", [tls_listener("one", p1, "a", "server"),
                             tls_listener("two", p2, "a", "late", prefix="two_b")])
    wait_for(lambda: lm(r, "listener_modified") == 1, 5 * slow_factor(), "listener two modified")
    assert served(p2) == der(p.a[0])
    assert who(TlsConn(p2).request()) == "a"

    # The listener naming 'late' goes: so does the name.
    ads.set_listeners("l4", [tls_listener("one", p1, "a", "server")])
    wait_names(ads, ["server"], "'late' unsubscribed")
    dump = json.loads(r.admin("GET", "/config_dump").text)
    [secrets] = [c for c in dump["configs"] if c["@type"].endswith("SecretsConfigDump")]
    names = [s["name"] for s in secrets["dynamic_active_secrets"]]
    assert names == ["server"], names
    assert "[redacted]" in json.dumps(secrets)


def test_cds_cluster_upstream_mtls_over_sds(ctx):
    p = pki(ctx)
    p.frontend2 = p.leaf("frontend2", f"URI:{SPIFFE}frontend2")
    backend = TlsHttpServer("tlsb", *p.server, ca=p.ca, require=True)
    ctx.on_cleanup(backend.close)
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("tb")])])
    tb = static_cluster("tb", [backend.port])
    tb["max_requests_per_connection"] = 1  # a handshake per request
    tb["transport_socket"] = up_tls("client", "ca")
    ads.set_clusters("c1", [tb])
    r = ctx.start_remora(ads_bootstrap({}, ads.port, cds=ads_src()), wait_ready=False)

    # Startup waits for the secrets of the first cluster set.
    wait_names(ads, ["ca", "client"], "the cluster's secrets subscribed")
    assert r.admin("GET", "/ready").status == 503
    ads.set(SECRET, "v1", [cert_secret("client", p.frontend), ca_secret("ca", p.ca)])
    r.wait_ready(10 * slow_factor())
    resp = http_request(r.port())
    assert resp.status == 200, resp
    assert resp.body == f"tlsb sni=backend.test peer={SPIFFE}frontend\n".encode(), resp.body
    st = stats(r)
    assert st["cluster.tb.ssl.handshake"] >= 1, st
    assert st["cluster.tb.client_ssl_socket_factory.ssl_context_update_by_sds"] == 2, st

    # The cluster modified to name a client certificate not sent yet: it fails closed (no
    # client certificate: the backend refuses the handshake; a connect failure, 503) until
    # the secret arrives. No cluster warming is counted.
    tb2 = dict(tb, transport_socket=up_tls("client2", "ca"))
    ads.set_clusters("c2", [tb2])
    wait_names(ads, ["ca", "client2"], "'client2' subscribed, 'client' gone")
    assert stats(r, "cluster_manager")["cluster_manager.warming_clusters"] == 0
    resp = http_request(r.port())
    assert resp.status == 503, resp
    ads.set(SECRET, "v2", [cert_secret("client2", p.frontend2), ca_secret("ca", p.ca)])
    wait_for(lambda: sds_stat(r, "client2", "update_success") == 1, 5, "'client2' applied")
    resp = http_request(r.port())
    assert resp.status == 200, resp
    assert resp.body == f"tlsb sni=backend.test peer={SPIFFE}frontend2\n".encode(), resp.body

    # Verification over the SDS trust: a CA that did not sign the backend fails it.
    other = p.other_ca()
    ads.set(SECRET, "v3", [cert_secret("client2", p.frontend2), ca_secret("ca", other[0])])
    ads.wait_request(lambda q: q["type_url"] == SECRET and q.get("version_info") == "v3"
                     and not q.get("error_detail"), what="the other CA ACKed")
    resp = http_request(r.port())
    assert resp.status == 503, resp


def test_cds_cluster_file_sds_and_role_conflict_nacked_with_paths(ctx):
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [])])
    ads.set_clusters("c0", [])
    r = ctx.start_remora(ads_bootstrap({}, ads.port, cds=ads_src()))
    bad = static_cluster("tb", [free_port()])
    bad["transport_socket"] = up_tls("client", "ca")
    ctc = bad["transport_socket"]["typed_config"]["common_tls_context"]
    ctc["validation_context_sds_secret_config"]["sds_config"] = {"path": "/nonexistent"}
    ads.set_clusters("c1", [bad])
    nack = ads.wait_request(lambda q: q["type_url"] == CL_TYPE and q.get("error_detail"),
                            what="the CDS NACK")
    msg = nack["error_detail"]["message"]
    assert msg.startswith("resources[0].transport_socket.typed_config.common_tls_context."
                          "validation_context_sds_secret_config.sds_config: an SDS secret from "
                          "a file"), msg
    assert r.admin("GET", "/ready").status == 200

    # One secret name keeps one role: 'ca' as a trust store in one cluster and a client
    # certificate in another is NACKed with the second cluster's path.
    one = static_cluster("one", [free_port()])
    one["transport_socket"] = up_tls("client", "ca")
    two = static_cluster("two", [free_port()])
    two["transport_socket"] = up_tls("ca", "other-ca")
    ads.set_clusters("c2", [one, two])
    nack = ads.wait_request(lambda q: q["type_url"] == CL_TYPE and q.get("version_info") == "c0"
                            and "c2" not in str(q.get("version_info"))
                            and "resources[1]" in str(q.get("error_detail")),
                            what="the role conflict's NACK")
    msg = nack["error_detail"]["message"]
    assert msg == ("resources[1].transport_socket: secret 'ca' over ADS is used both as a "
                   "certificate and as a validation context"), msg


def test_secret_roles_span_listeners_and_clusters_and_may_swap(ctx):
    """One secret name over ADS keeps one role across the CDS clusters and the LDS listeners
    (a listener's certificate is no cluster's trust store, and the other way round), and the
    check is against the set an update makes: two clusters that swap two names' roles together
    are accepted (the old set would have made each clash with the other's old version)."""
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [])])
    ads.set_clusters("c0", [])
    ads.set_listeners("l0", [])
    d = ads_bootstrap({"a": [free_port()]}, ads.port, cds=ads_src())
    d["dynamic_resources"]["lds_config"] = ads_src()
    r = ctx.start_remora(d)
    assert r.admin("GET", "/ready").status == 200

    def acked(type_url, version):
        ads.wait_request(lambda q: q["type_url"] == type_url and q.get("version_info") == version
                         and not q.get("error_detail"), what=f"{version} ACKed")

    def nacked(type_url, kept, path):
        q = ads.wait_request(lambda q: q["type_url"] == type_url and q.get("version_info") == kept
                             and path in str(q.get("error_detail")), what=f"NACK at {path}")
        return q["error_detail"]["message"]

    def clusters(cert, ca, names=("one", "two")):
        out = []
        for n in names:
            c = static_cluster(n, [free_port()])
            c["transport_socket"] = up_tls(cert, ca)
            out.append(c)
        return out

    ads.set_clusters("c1", clusters("a1", "b1"))
    acked(CL_TYPE, "c1")
    # both clusters swap the roles of a1 and b1 in one update
    ads.set_clusters("c2", clusters("b1", "a1"))
    acked(CL_TYPE, "c2")
    # a listener with b1 as its certificate: b1 is the clusters' certificate too
    lp = free_port()
    ads.set_listeners("l1", [tls_listener("lone", lp, "a", "b1")])
    acked(LST_TYPE, "l1")
    # a1 is the clusters' trust store: not a listener's certificate
    ads.set_listeners("l2", [tls_listener("lone", lp, "a", "a1")])
    msg = nacked(LST_TYPE, "l1", "resources[0].filter_chains")
    assert msg == ("resources[0].filter_chains: secret 'a1' over ADS is used both as a "
                   "certificate and as a validation context"), msg
    # nor b1, the listener's certificate, a cluster's trust store
    ads.set_clusters("c3", clusters("x1", "b1", names=("three",)))
    msg = nacked(CL_TYPE, "c2", "resources[0].transport_socket")
    assert msg == ("resources[0].transport_socket: secret 'b1' over ADS is used both as a "
                   "certificate and as a validation context"), msg
    # within one update, a new cluster clashing with one kept as it is: the new one goes
    ads.set_clusters("c4", clusters("b1", "a1", names=("one",)) + clusters("a1", "x1",
                                                                           names=("four",)))
    msg = nacked(CL_TYPE, "c2", "resources[1].transport_socket")
    assert msg.startswith("resources[1].transport_socket: secret 'a1' over ADS"), msg


def test_lds_listener_secret_initial_fetch_timeout(ctx):
    """The secret of a listener of the first LDS set never comes: startup waits for it only
    up to its initial_fetch_timeout, then the server goes live with that listener failing
    closed (handshakes fail, plaintext gets no answer) until the secret arrives."""
    p = Pki(ctx.tmp / "pki")
    p.a = p.leaf("cert-a", "DNS:backend.test")
    a = ctx.start_upstream("a")
    ads = start_ads_server(ctx)
    ads.set_routes("r1", [route_config("r1", [to("a")])])
    p1 = free_port()
    # (the Duration as protobufjs takes it inside an Any: the server encodes the listener)
    ads.set_listeners("l1", [tls_listener("one", p1, "a", "slow",
                                          fetch={"nanos": 300000000})])
    d = ads_bootstrap({"a": [a.port]}, ads.port)
    d["dynamic_resources"]["lds_config"] = ads_src()
    r = ctx.start_remora(d, wait_ready=False)
    wait_names(ads, ["slow"], "'slow' subscribed")
    r.wait_ready(10 * slow_factor())  # after the 0.3 s fetch timeout, without the secret
    assert sds_stat(r, "slow", "update_attempt") == 0
    assert "sds 'slow': no Secret for LDS listeners or CDS clusters within " \
        "initial_fetch_timeout (300 ms)" in r.stderr, r.tail()
    assert handshake_fails(p1)
    assert plaintext_refused(p1)
    ads.set(SECRET, "v1", [cert_secret("slow", p.a)])
    wait_for(lambda: sds_stat(r, "slow", "update_success") == 1, 5, "'slow' applied")
    assert served(p1) == der(p.a[0])
    assert who(TlsConn(p1).request()) == "a"
