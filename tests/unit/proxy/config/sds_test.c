/* Unit tests for SDS from files (proxy/config/sds.h, the SDS half of build_tls.c, tls_live in
 * proxy/net/tls.c): SdsSecretConfig rules with their field paths, picking the secret out of a
 * DiscoveryResponse file, one subscription per (file, secret name), and updates: a certificate
 * or trust store replaced, a bad update rejected with the old material kept. Keys and
 * certificates are made in the test (tls_test_pki.h). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/rsa.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/sds.h"
#include "proxy/net/tls.h"
#include "tests/unit/proxy/net/tls_test_pki.h"

#define UNSUPPORTED "not supported by remora yet"
#define SECRET_TYPE "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
#define TS_TLS ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", "
/* A DownstreamTlsContext whose common_tls_context is exactly `common`. */
#define DS(common)                                                                                 \
    TS_TLS "\"typed_config\": {\"@type\": \"" PKI_DS_TYPE "\", \"common_tls_context\": {" common   \
           "}}}"
#define US(common)                                                                                 \
    TS_TLS "\"typed_config\": {\"@type\": \"" PKI_US_TYPE "\", \"common_tls_context\": {" common   \
           "}}}"
/* An SdsSecretConfig for secret `name` in file `file`. */
#define SDS(name, file)                                                                            \
    "{\"name\": \"" name "\", \"sds_config\": {\"path_config_source\": {\"path\": \"" file "\"}}}"
#define CERT_SDS(name, file) "\"tls_certificate_sds_secret_configs\": [" SDS(name, file) "]"
#define CA_SDS(name, file) "\"validation_context_sds_secret_config\": " SDS(name, file)

#define CC                                                                                         \
    "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config"                 \
    ".common_tls_context"
#define CERT0 CC ".tls_certificate_sds_secret_configs[0]"

static const char *tmpdir;
static char start_dir[1024]; /* main's working directory */
static const char *const files[] = {"ca.pem",   "ca2.pem",  "a.pem",      "a.key",
                                    "b.pem",    "b.key",    "rsa.pem",    "rsa.key",
                                    "sds.json", "sds.yaml", "other.json", NULL};
static X509 *cert_a, *cert_b, *ca1, *ca2;

static void write_file(const char *path, const char *text)
{
    pki_write(path, text);
}

/* A DiscoveryResponse (JSON) with version `version` and resources `resources` (JSON items). */
static void write_sds(const char *path, const char *version, const char *resources)
{
    char text[8192];
    snprintf(text, sizeof(text), "{\"version_info\": \"%s\", \"resources\": [%s]}", version,
             resources);
    write_file(path, text);
}

/* A tls_certificate Secret named `name` with files `pem` and `key`. */
static char *cert_secret(const char *name, const char *pem, const char *key)
{
    char *s = malloc(512);
    snprintf(s, 512,
             "{\"@type\": \"" SECRET_TYPE "\", \"name\": \"%s\", \"tls_certificate\": "
             "{\"certificate_chain\": {\"filename\": \"%s\"}, \"private_key\": {\"filename\": "
             "\"%s\"}}}",
             name, pem, key);
    return s;
}

static char *ca_secret(const char *name, const char *pem)
{
    char *s = malloc(512);
    snprintf(s, 512,
             "{\"@type\": \"" SECRET_TYPE "\", \"name\": \"%s\", \"validation_context\": "
             "{\"trusted_ca\": {\"filename\": \"%s\"}}}",
             name, pem);
    return s;
}

/* The usual file: "server" (cert A), "client" (cert B), "ca" (ca.pem). */
static void write_default(void)
{
    char *a = cert_secret("server", "a.pem", "a.key");
    char *b = cert_secret("client", "b.pem", "b.key");
    char *c = ca_secret("ca", "ca.pem");
    char res[2048];
    snprintf(res, sizeof(res), "%s, %s, %s", a, b, c);
    write_sds("sds.json", "v1", res);
    free(a);
    free(b);
    free(c);
}

static int setup(void **state)
{
    (void)state;
    tmpdir = pki_enter_tmpdir();
    EVP_PKEY *cak = pki_key(), *cak2 = pki_key(), *ka = pki_key(), *kb = pki_key();
    ca1 = pki_cert(cak, "CA one", NULL, NULL, true, NULL, 0);
    ca2 = pki_cert(cak2, "CA two", NULL, NULL, true, NULL, 0);
    const struct pki_san dns = {GEN_DNS, "server.mesh.test", 0};
    cert_a = pki_cert(ka, "cert A", ca1, cak, false, &dns, 1);
    cert_b = pki_cert(kb, "cert B", ca2, cak2, false, &dns, 1);
    pki_write_cert("ca.pem", ca1);
    pki_write_cert("ca2.pem", ca2);
    pki_write_cert("a.pem", cert_a);
    pki_write_key("a.key", ka);
    pki_write_cert("b.pem", cert_b);
    pki_write_key("b.key", kb);
    EVP_PKEY *rk = EVP_RSA_gen(2048);
    assert_non_null(rk);
    X509 *rc = pki_cert(rk, "cert RSA", ca1, cak, false, &dns, 1);
    pki_write_cert("rsa.pem", rc);
    pki_write_key("rsa.key", rk);
    X509_free(rc);
    EVP_PKEY_free(rk);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(cak2);
    EVP_PKEY_free(ka);
    EVP_PKEY_free(kb);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    X509_free(cert_a);
    X509_free(cert_b);
    X509_free(ca1);
    X509_free(ca2);
    pki_leave_tmpdir(tmpdir, files);
    return 0;
}

static const struct tls_ctx *chain_tls(const struct config *c)
{
    return c->listeners[0].chains[0].tls;
}

/* The certificate a new SSL of `tc` serves (made as tls_conn_init makes it). */
static bool serves(const struct tls_ctx *tc, X509 *want)
{
    struct tls_conn conn;
    assert_int_equal(tls_conn_init(&conn, tc, -1), 0);
    bool same = X509_cmp(SSL_get_certificate(conn.ssl), want) == 0;
    tls_conn_free(&conn);
    return same;
}

static void test_startup_from_sds(void **state)
{
    (void)state;
    write_default();
    struct config *c =
        pki_must_load(DS(CERT_SDS("server", "sds.json") ", " CA_SDS("ca", "sds.json")),
                      US(CERT_SDS("client", "sds.json")));
    /* clusters are built first */
    assert_int_equal(c->n_sds, 3);
    assert_string_equal(c->sds[0].name.p, "client");
    assert_string_equal(c->sds[1].name.p, "server");
    assert_string_equal(c->sds[1].path.p, "sds.json");
    assert_false(c->sds[1].validation);
    assert_int_equal(c->sds[1].resource_index, 0);
    assert_true(c->sds[2].validation);
    assert_string_equal(c->sds[2].version_info.p, "v1");
    assert_int_equal(c->sds[2].resource_index, 2);
    const struct tls_ctx *tc = chain_tls(c);
    assert_non_null(tc->live);
    assert_non_null(tc->live->store);
    assert_true(serves(tc, cert_a));
    /* the SDS trust store goes into each SSL; the SSL_CTX's own stays empty */
    struct tls_conn conn;
    assert_int_equal(tls_conn_init(&conn, tc, -1), 0);
    X509_STORE *st = NULL;
    SSL_get0_verify_cert_store(conn.ssl, &st);
    assert_ptr_equal(st, tc->live->store);
    assert_int_equal(sk_X509_NAME_num(SSL_get_client_CA_list(conn.ssl)), 1);
    tls_conn_free(&conn);
    assert_int_equal(SSL_CTX_get_verify_mode(tc->ssl_ctx), SSL_VERIFY_PEER);
    const struct tls_ctx *up = c->clusters[0].tls;
    assert_non_null(up->live);
    assert_null(up->live->store);
    assert_true(serves(up, cert_b));
    config_unref(c);

    /* YAML works too; no SDS: no live part, no lock */
    write_file("sds.yaml", "version_info: y1\n"
                           "resources:\n"
                           "- \"@type\": " SECRET_TYPE "\n"
                           "  name: server\n"
                           "  tls_certificate:\n"
                           "    certificate_chain: {filename: b.pem}\n"
                           "    private_key: {filename: b.key}\n");
    c = pki_must_load(DS(CERT_SDS("server", "sds.yaml")), "");
    assert_true(serves(chain_tls(c), cert_b));
    config_unref(c);
    c = pki_must_load(
        DS("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"a.pem\"}, "
           "\"private_key\": {\"filename\": \"a.key\"}}]"),
        "");
    assert_null(chain_tls(c)->live);
    assert_int_equal(c->n_sds, 0);
    config_unref(c);
}

static void test_one_subscription_per_file_and_name(void **state)
{
    (void)state;
    write_default();
    /* the listener serves "server" and the cluster presents it too: one subscription, two
     * users; the same name in another file is another subscription */
    write_file("other.json", "{\"resources\": []}");
    struct config *c =
        pki_must_load(DS(CERT_SDS("server", "sds.json")), US(CERT_SDS("server", "sds.json")));
    assert_int_equal(c->n_sds, 1);
    assert_int_equal(c->sds[0].n_users, 2);
    assert_ptr_equal(c->sds[0].users[0], c->clusters[0].tls);
    assert_ptr_equal(c->sds[0].users[1], chain_tls(c));
    config_unref(c);
    struct err e;
    c = pki_load(DS(CERT_SDS("server", "sds.json")), US(CERT_SDS("server", "other.json")), &e);
    assert_null(c);
    assert_string_equal(e.msg, "static_resources.clusters[0].transport_socket.typed_config"
                               ".common_tls_context.tls_certificate_sds_secret_configs[0]: "
                               "other.json: resources: no secret named 'server'");
}

static void test_update_replaces_and_rejects(void **state)
{
    (void)state;
    write_default();
    struct config *c = pki_must_load(DS(CERT_SDS("server", "sds.json")), "");
    const struct tls_ctx *tc = chain_tls(c);
    struct tls_conn before;
    assert_int_equal(tls_conn_init(&before, tc, -1), 0);

    /* cert B replaces cert A for new SSLs; an SSL made before keeps A */
    char *b = cert_secret("server", "b.pem", "b.key");
    write_sds("sds.json", "v2", b);
    free(b);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = NULL;
    char *version = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(sds_update(c, 0, &s, &version, &e), 0);
    assert_string_equal(version, "v2");
    assert_string_equal(s->name, "server");
    protobuf_c_message_free_unpacked(&s->base, NULL);
    free(version);
    assert_true(serves(tc, cert_b));
    assert_int_equal(X509_cmp(SSL_get_certificate(before.ssl), cert_a), 0);
    tls_conn_free(&before);
    assert_int_equal(tc->live->updates, 1);

    /* rejected: the key of another certificate; B keeps serving */
    b = cert_secret("server", "a.pem", "b.key");
    write_sds("sds.json", "v3", b);
    free(b);
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EINVAL);
    assert_string_equal(e.msg, "sds.json: resources[0].tls_certificate.private_key: does not "
                               "match the certificate in certificate_chain");
    assert_true(serves(tc, cert_b));

    /* rejected: broken PEM */
    write_file("bad.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
    b = cert_secret("server", "bad.pem", "b.key");
    write_sds("sds.json", "v4", b);
    free(b);
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EINVAL);
    assert_string_equal(e.msg, "sds.json: resources[0].tls_certificate.certificate_chain: no PEM "
                               "certificate in 'bad.pem'");
    unlink("bad.pem");

    /* rejected: another key type (OpenSSL would serve both) */
    b = cert_secret("server", "rsa.pem", "rsa.key");
    write_sds("sds.json", "v5", b);
    free(b);
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EINVAL);
    assert_string_equal(e.msg, "sds.json: resources[0]: tls_certificate: the new certificate's "
                               "key type (rsaEncryption) differs from the one in force "
                               "(id-ecPublicKey): changing it needs a restart");

    /* rejected: no such secret; a file that does not parse; unreadable: -EIO */
    write_sds("sds.json", "v6", "");
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EINVAL);
    assert_string_equal(e.msg, "sds.json: resources: no secret named 'server'");
    write_file("sds.json", "{\"resources\": [");
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EINVAL);
    unlink("sds.json");
    assert_int_equal(sds_update(c, 0, &s, &version, &e), -EIO);
    assert_true(serves(tc, cert_b));
    assert_int_equal(tc->live->updates, 1);
    config_unref(c);
}

static void test_update_trust_store(void **state)
{
    (void)state;
    write_default();
    struct config *c =
        pki_must_load(DS(CERT_SDS("server", "sds.json") ", " CA_SDS("ca", "sds.json")), "");
    const struct tls_ctx *tc = chain_tls(c);
    struct tls_conn before;
    assert_int_equal(tls_conn_init(&before, tc, -1), 0);
    X509_STORE *old = tc->live->store;
    /* the store verifies A (CA one) and not B (CA two) */
    X509_STORE_CTX *x = X509_STORE_CTX_new();
    X509_STORE_CTX_init(x, old, cert_b, NULL);
    assert_int_not_equal(X509_verify_cert(x), 1);
    X509_STORE_CTX_free(x);

    char *a = cert_secret("server", "a.pem", "a.key");
    char *ca = ca_secret("ca", "ca2.pem");
    char res[1024];
    snprintf(res, sizeof(res), "%s, %s", a, ca);
    write_sds("sds.json", "v2", res);
    free(a);
    free(ca);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = NULL;
    char *version = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(sds_update(c, 1, &s, &version, &e), 0);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    free(version);
    X509_STORE *now = tc->live->store;
    assert_ptr_not_equal(now, old);
    x = X509_STORE_CTX_new();
    X509_STORE_CTX_init(x, now, cert_b, NULL);
    assert_int_equal(X509_verify_cert(x), 1);
    X509_STORE_CTX_free(x);
    /* the SSL made before holds the old store (its own reference: no use after free) */
    X509_STORE *st = NULL;
    SSL_get0_verify_cert_store(before.ssl, &st);
    x = X509_STORE_CTX_new();
    X509_STORE_CTX_init(x, st, cert_a, NULL);
    assert_int_equal(X509_verify_cert(x), 1);
    X509_STORE_CTX_free(x);
    tls_conn_free(&before);

    /* a validation secret may hold only trusted_ca */
    write_sds("sds.json", "v3",
              "{\"@type\": \"" SECRET_TYPE "\", \"name\": \"ca\", \"validation_context\": "
              "{\"trusted_ca\": {\"filename\": \"ca.pem\"}, \"match_typed_subject_alt_names\": "
              "[{\"san_type\": \"DNS\", \"matcher\": {\"exact\": \"x\"}}]}}");
    assert_int_equal(sds_update(c, 1, &s, &version, &e), -EINVAL);
    assert_string_equal(e.msg, "sds.json: resources[0].validation_context."
                               "match_typed_subject_alt_names: " UNSUPPORTED
                               " in an SDS secret: remora takes only trusted_ca from a secret "
                               "(put SAN matchers beside an SDS trust store in "
                               "combined_validation_context.default_validation_context)");
    assert_ptr_equal(tc->live->store, now);
    config_unref(c);
}

/* Workers make SSLs while main swaps the certificate: every SSL gets a whole certificate (A or
 * B) with its key, and nothing is used after free (the ASan build checks that: without the
 * lock in tls_conn_init, SSL_new's copy races SSL_CTX_use_cert_and_key's frees). Bounded. */
struct churn {
    const struct tls_ctx *tc;
    _Atomic bool stop;
    _Atomic int bad;
    _Atomic int made;
};

static void *make_ssls(void *arg)
{
    struct churn *ch = arg;
    while (!atomic_load(&ch->stop)) {
        struct tls_conn conn;
        if (tls_conn_init(&conn, ch->tc, -1) != 0) {
            ch->bad++;
            continue;
        }
        X509 *x = SSL_get_certificate(conn.ssl);
        EVP_PKEY *k = SSL_get_privatekey(conn.ssl);
        if (x == NULL || k == NULL || X509_check_private_key(x, k) != 1 ||
            (X509_cmp(x, cert_a) != 0 && X509_cmp(x, cert_b) != 0)) {
            ch->bad++;
        }
        tls_conn_free(&conn);
        ch->made++;
    }
    return NULL;
}

static void test_swap_while_workers_make_ssls(void **state)
{
    (void)state;
    write_default();
    struct config *c = pki_must_load(DS(CERT_SDS("server", "sds.json")), "");
    struct churn ch = {.tc = chain_tls(c)};
    char *sa = cert_secret("server", "a.pem", "a.key");
    char *sb = cert_secret("server", "b.pem", "b.key");
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&t[i], NULL, make_ssls, &ch);
    }
    for (int i = 1; i <= 200; i++) {
        write_sds("sds.json", "v", i % 2 ? sb : sa);
        Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = NULL;
        char *version = NULL;
        struct err e;
        err_clear(&e);
        assert_int_equal(sds_update(c, 0, &s, &version, &e), 0);
        protobuf_c_message_free_unpacked(&s->base, NULL);
        free(version);
    }
    atomic_store(&ch.stop, true);
    for (int i = 0; i < 2; i++) {
        pthread_join(t[i], NULL);
    }
    free(sa);
    free(sb);
    assert_int_equal(ch.bad, 0);
    assert_true(ch.made > 0);
    assert_int_equal(chain_tls(c)->live->updates, 200);
    config_unref(c);
}

struct reject {
    const char *chain;
    const char *cluster;
    const char *want; /* the whole message, or its start when it ends in "..." */
};

#define SRC(spec) "{\"name\": \"server\", \"sds_config\": " spec "}"

static const struct reject rejects[] = {
    {DS("\"tls_certificate_sds_secret_configs\": [" SRC("{\"ads\": {}}") "]"), "",
     CERT0 ".sds_config.ads: needs dynamic_resources.ads_config"},
    {DS("\"tls_certificate_sds_secret_configs\": [" SRC(
         "{\"api_config_source\": {\"api_type\": \"GRPC\"}}") "]"),
     "", CERT0 ".sds_config.api_config_source: " UNSUPPORTED " (only a filesystem path is)"},
    {DS("\"tls_certificate_sds_secret_configs\": [" SRC("{\"path\": \"\"}") "]"), "",
     CERT0 ".sds_config.path: must not be empty"},
    {DS("\"tls_certificate_sds_secret_configs\": [" SRC(
         "{\"path_config_source\": {\"path\": \"sds.json\"}, \"initial_fetch_timeout\": "
         "\"1s\"}") "]"),
     "",
     CERT0 ".sds_config.initial_fetch_timeout: " UNSUPPORTED " with a filesystem config source"},
    {DS("\"tls_certificate_sds_secret_configs\": [{\"sds_config\": {\"path\": \"sds.json\"}}]"), "",
     CERT0 ".name: required"},
    {DS("\"tls_certificate_sds_secret_configs\": [" SDS("server", "sds.json") ", " SDS(
         "client", "sds.json") "]"),
     "",
     CC ".tls_certificate_sds_secret_configs[1]: more than one certificate is " UNSUPPORTED
        " (Envoy allows one per key type on a server, one on a client)"},
    /* the deprecated `path` works (and so does everything in the file) */
    {DS("\"tls_certificate_sds_secret_configs\": [" SRC("{\"path\": \"missing.json\"}") "]"), "",
     CERT0 ": missing.json: cannot read: No such file or directory"},
    {DS(CERT_SDS("nope", "sds.json")), "", CERT0 ": sds.json: resources: no secret named 'nope'"},
    {DS(CERT_SDS("ca", "sds.json")), "",
     CERT0 ": sds.json: resources[2].tls_certificate: required: secret 'ca' is used as a "
           "tls_certificate_sds_secret_configs entry"},
    {DS(CERT_SDS("server", "sds.json") ", " CA_SDS("server", "sds.json")), "",
     CC ".validation_context_sds_secret_config.name: secret 'server' in 'sds.json' is used both "
        "as a certificate and as a validation context"},
    {DS(CERT_SDS("server", "sds.json") ", " CA_SDS("client", "sds.json")), "",
     CC ".validation_context_sds_secret_config: sds.json: resources[1].validation_context: "
        "required: secret 'client' is used as a validation_context_sds_secret_config"},
    {DS(CERT_SDS("server", "sds.json") ", " CA_SDS("ca", "sds.json") ", \"validation_context\": "
                                                                     "{\"trusted_ca\": "
                                                                     "{\"filename\": "
                                                                     "\"ca.pem\"}}"),
     "", CC ".validation_context: conflicts with ..."},
    {DS(CERT_SDS("server", "sds.json") ", \"combined_validation_context\": {}"), "",
     CC ".combined_validation_context.validation_context_sds_secret_config: required"},
    {DS("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"a.pem\"}, "
        "\"private_key\": {\"filename\": \"a.key\"}}], " CERT_SDS("server", "sds.json")),
     "",
     CC ".tls_certificate_sds_secret_configs: cannot be used with tls_certificates: the "
        "certificate comes from one or the other"},
};

/* ---- over ADS ---- */

#define ADS_SDS(name, extra) "{\"name\": \"" name "\", \"sds_config\": {\"ads\": {}" extra "}}"

/* pki_load's bootstrap with an ADS cluster and dynamic_resources.ads_config. */
static struct config *ads_load(const char *chain, const char *cluster, struct err *e)
{
    static const char fmt[] =
        "{\"static_resources\": {"
        " \"clusters\": [{\"name\": \"backend\", \"connect_timeout\": \"1s\" %s,"
        "  \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{\"lb_endpoints\": "
        "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 8080}}}}]}]}},"
        " {\"name\": \"xds\", \"connect_timeout\": \"1s\", \"typed_extension_protocol_options\": "
        "{\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\", "
        "\"explicit_http_config\": {\"http2_protocol_options\": {}}}},"
        "  \"load_assignment\": {\"cluster_name\": \"xds\", \"endpoints\": [{\"lb_endpoints\": "
        "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 18000}}}}]}]}}],"
        " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 10000}},"
        "  \"filter_chains\": [{\"filters\": [{\"name\": \"tcp\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "
        "\"stat_prefix\": \"t\", \"cluster\": \"backend\"}}] %s}]}]},"
        " \"dynamic_resources\": {\"ads_config\": {\"api_type\": \"GRPC\", "
        "\"transport_api_version\": \"V3\", \"grpc_services\": [{\"envoy_grpc\": "
        "{\"cluster_name\": \"xds\"}}]}}}";
    size_t n = sizeof(fmt) + strlen(chain) + strlen(cluster);
    char *text = malloc(n);
    snprintf(text, n, fmt, cluster, chain);
    err_clear(e);
    struct config *c = config_load_text(text, strlen(text), e);
    free(text);
    return c;
}

/* Secrets over ADS: one subscription per name (a file's of the same name is another), nothing
 * loaded at startup (the server has no certificate, the client no trust store), and
 * sds_apply installs what the stream brings into every user, all or nothing. */
static void test_ads_subscriptions_and_apply(void **state)
{
    (void)state;
    write_default();
    struct err e;
    struct config *c = ads_load(
        DS("\"tls_certificate_sds_secret_configs\": [" ADS_SDS(
            "server", "") "], "
                          "\"combined_validation_context\": "
                          "{\"validation_context_sds_secret_config\": " ADS_SDS(
                              "mesh-ca",
                              "") ", \"default_validation_context\": "
                                  "{\"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", "
                                  "\"matcher\": {\"exact\": \"spiffe://td/x\"}}]}}"),
        US("\"tls_certificate_sds_secret_configs\": [" SDS(
            "client", "sds.json") "], "
                                  "\"validation_context_sds_secret_config\": " ADS_SDS(
                                      "mesh-ca", ", \"initial_fetch_timeout\": \"15s\"")),
        &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_int_equal(c->n_sds, 3);
    const struct sds_cfg *srv = NULL, *ca = NULL;
    for (uint32_t i = 0; i < c->n_sds; i++) {
        if (strcmp(c->sds[i].name.p, "server") == 0) {
            srv = &c->sds[i];
        } else if (strcmp(c->sds[i].name.p, "mesh-ca") == 0) {
            ca = &c->sds[i];
        } else {
            assert_false(c->sds[i].ads); /* the file one */
        }
    }
    assert_non_null(srv);
    assert_non_null(ca);
    assert_true(srv->ads && ca->ads && ca->validation && !srv->validation);
    assert_null(srv->pb);
    assert_int_equal(srv->initial_fetch_timeout_ms, 15000);
    assert_int_equal(ca->n_users, 2); /* the listener's and the cluster's */
    const struct tls_ctx *tc = chain_tls(c);
    assert_non_null(tc->live);
    assert_null(SSL_CTX_get0_certificate(tc->ssl_ctx)); /* fails closed until it arrives */
    assert_null(tc->live->store);

    uint32_t si = (uint32_t)(srv - c->sds), ci = (uint32_t)(ca - c->sds);
    struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = NULL, *k = NULL;
    size_t idx;
    char *v = NULL;
    assert_int_equal(sds_read_secret("sds.json", "server", &s, &idx, &v, &e), 0);
    free(v);
    assert_int_equal(sds_read_secret("sds.json", "ca", &k, &idx, &v, &e), 0);
    free(v);
    /* a secret of another name, or of the wrong kind, is refused with its path */
    assert_int_not_equal(sds_apply(c, ci, s, "resources[0]", &e), 0);
    assert_string_equal(e.msg, "resources[0]: name: 'server' is not secret 'mesh-ca'");
    assert_int_equal(sds_apply(c, si, s, "resources[0]", &e), 0);
    assert_true(serves(tc, cert_a));
    assert_int_equal(tc->live->updates, 1);
    free(k->name);
    k->name = strdup("mesh-ca");
    assert_int_equal(sds_apply(c, ci, k, "resources[1]", &e), 0);
    assert_non_null(tc->live->store);
    free(s->name);
    s->name = strdup("mesh-ca");
    assert_int_not_equal(sds_apply(c, ci, s, "resources[2]", &e), 0);
    assert_string_equal(e.msg, "resources[2].validation_context: required: secret 'mesh-ca' is "
                               "used as a validation_context_sds_secret_config");
    protobuf_c_message_free_unpacked(&s->base, NULL);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    config_unref(c);

    static const struct {
        const char *chain, *cluster, *want;
    } bad[] = {
        {DS("\"tls_certificate_sds_secret_configs\": [" ADS_SDS(
             "x", "") "], "
                      "\"validation_context_sds_secret_config\": " ADS_SDS("x", "")),
         "",
         CC ".validation_context_sds_secret_config.name: secret 'x' over ADS is used both as a "
            "certificate and as a validation context"},
        {DS("\"tls_certificate_sds_secret_configs\": [" ADS_SDS("x", "") "]"),
         US("\"tls_certificate_sds_secret_configs\": [" ADS_SDS(
             "x", ", \"initial_fetch_timeout\": \"1s\"") "]"),
         /* clusters are built first: the listener's is the second use */
         CERT0 ".sds_config.initial_fetch_timeout: differs from another use of secret 'x' over "
               "ADS"},
        {DS("\"tls_certificate_sds_secret_configs\": [" ADS_SDS(
             "x", ", \"initial_fetch_timeout\": \"-1s\"") "]"),
         "", CERT0 ".sds_config.initial_fetch_timeout: ..."},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct config *b = ads_load(bad[i].chain, bad[i].cluster, &e);
        if (b != NULL) {
            config_unref(b);
            fail_msg("case %zu: accepted, want: %s", i, bad[i].want);
        }
        size_t n = strlen(bad[i].want);
        bool prefix = n >= 3 && strcmp(bad[i].want + n - 3, "...") == 0;
        if (prefix ? strncmp(e.msg, bad[i].want, n - 3) != 0 : strcmp(e.msg, bad[i].want) != 0) {
            fail_msg("case %zu:\n got: %s\nwant: %s", i, e.msg, bad[i].want);
        }
    }
}

/* examples/sds_ads.yaml builds: a listener's certificate and CA over ADS. */
static void test_example_sds_ads_yaml(void **state)
{
    (void)state;
    char path[2048];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/sds_test.c");
    /* the tests run in a temporary directory: a relative __FILE__ is the start directory's */
    snprintf(path, sizeof(path), "%s%s%.*sexamples/sds_ads.yaml", f[0] == '/' ? "" : start_dir,
             f[0] == '/' ? "" : "/", cut ? (int)(cut - f) : 0, f);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_int_equal(c->n_sds, 2);
    assert_true(c->sds[0].ads && c->sds[1].ads);
    assert_int_equal(c->sds[0].initial_fetch_timeout_ms, 30000);
    config_unref(c);
}

static void test_rejections_name_their_path(void **state)
{
    (void)state;
    write_default();
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
        struct err e;
        struct config *c = pki_load(rejects[i].chain, rejects[i].cluster, &e);
        if (c != NULL) {
            config_unref(c);
            fail_msg("case %zu: accepted, want: %s", i, rejects[i].want);
        }
        size_t n = strlen(rejects[i].want);
        bool prefix = n >= 3 && strcmp(rejects[i].want + n - 3, "...") == 0;
        if (prefix ? strncmp(e.msg, rejects[i].want, n - 3) != 0
                   : strcmp(e.msg, rejects[i].want) != 0) {
            fail_msg("case %zu:\n got: %s\nwant: %s", i, e.msg, rejects[i].want);
        }
    }
}

/* Contents of the file: what a bad secret file says, at startup, with the field path. */
static void test_bad_files(void **state)
{
    (void)state;
    static const struct {
        const char *resources;
        const char *want;
    } cases[] = {
        {"{\"@type\": \"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\", "
         "\"name\": \"server\"}",
         CERT0
         ": sds.json: resources[0]: type "
         "'type.googleapis.com/envoy.config.route.v3.RouteConfiguration' is not " SDS_TYPE_URL},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\", \"session_ticket_keys\": "
         "{\"keys\": [{\"inline_string\": \"k\"}]}}",
         CERT0 ": sds.json: resources[0].session_ticket_keys: " UNSUPPORTED},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\", \"tls_certificate\": "
         "{\"certificate_chain\": {\"filename\": \"a.pem\"}, \"private_key\": {\"filename\": "
         "\"b.key\"}}}",
         CERT0 ": sds.json: resources[0].tls_certificate.private_key: does not match the "
               "certificate in certificate_chain"},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\", \"tls_certificate\": "
         "{\"certificate_chain\": {\"filename\": \"none.pem\"}, \"private_key\": {\"filename\": "
         "\"a.key\"}}}",
         CERT0 ": sds.json: resources[0].tls_certificate.certificate_chain.filename: cannot read "
               "'none.pem': No such file or directory"},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\", \"tls_certificate\": "
         "{\"certificate_chain\": {\"inline_string\": \"x\"}, \"private_key\": {\"filename\": "
         "\"a.key\"}}}",
         CERT0 ": sds.json: resources[0].tls_certificate.certificate_chain: no PEM certificate in "
               "the inline data"},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\", \"tls_certificate\": "
         "{\"certificate_chain\": {\"filename\": \"a.pem\"}}, \"bogus\": 1}",
         CERT0 ": sds.json: resources[0].bogus: ..."},
        {"{\"@type\": \"" SECRET_TYPE "\", \"name\": \"server\"}, {\"@type\": \"" SECRET_TYPE
         "\", \"name\": \"server\"}",
         CERT0 ": sds.json: resources[1].name: a second secret named 'server'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_sds("sds.json", "v", cases[i].resources);
        struct err e;
        struct config *c = pki_load(DS(CERT_SDS("server", "sds.json")), "", &e);
        if (c != NULL) {
            config_unref(c);
            fail_msg("case %zu: accepted, want: %s", i, cases[i].want);
        }
        size_t n = strlen(cases[i].want);
        bool prefix = n >= 3 && strcmp(cases[i].want + n - 3, "...") == 0;
        if (prefix ? strncmp(e.msg, cases[i].want, n - 3) != 0
                   : strcmp(e.msg, cases[i].want) != 0) {
            fail_msg("case %zu:\n got: %s\nwant: %s", i, e.msg, cases[i].want);
        }
    }
    write_sds("sds.json", "v", "");
}

int main(void)
{
    if (getcwd(start_dir, sizeof(start_dir)) == NULL) {
        start_dir[0] = '\0';
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_from_sds),
        cmocka_unit_test(test_one_subscription_per_file_and_name),
        cmocka_unit_test(test_update_replaces_and_rejects),
        cmocka_unit_test(test_update_trust_store),
        cmocka_unit_test(test_swap_while_workers_make_ssls),
        cmocka_unit_test(test_rejections_name_their_path),
        cmocka_unit_test(test_ads_subscriptions_and_apply),
        cmocka_unit_test(test_example_sds_ads_yaml),
        cmocka_unit_test(test_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
