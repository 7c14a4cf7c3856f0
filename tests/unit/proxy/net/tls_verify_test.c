/* Unit tests for proxy/net/tls_verify: Envoy's SAN matching over certificates made in the test,
 * and real in-memory handshakes (two SSLs over a BIO pair) between contexts compiled by
 * proxy/config/build_tls.c, checking what the verify and info callbacks record in
 * tls_conn.fail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/err.h"
#include "proxy/http/regex.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"
#include "tests/unit/proxy/net/tls_test_pki.h"

#define SPIFFE_FRONTEND "spiffe://mesh.test/ns/default/sa/frontend"

static X509 *cert_with(const struct pki_san *sans, size_t n)
{
    EVP_PKEY *k = pki_key();
    X509 *x = pki_cert(k, "leaf", NULL, NULL, false, sans, n);
    EVP_PKEY_free(k);
    return x;
}

static bool match1(X509 *x, enum tls_san_type type, enum str_match_kind kind, const char *value,
                   bool nocase)
{
    struct tls_san_matcher m = {
        .type = type, .m = {.kind = kind, .value = str_from_c(value), .ignore_case = nocase}};
    struct tls_san_matchers ms = {&m, 1};
    return tls_san_match(&ms, x);
}

static void test_dns_name_match(void **state)
{
    (void)state;
    /* exact, any case */
    assert_true(tls_dns_name_match(STR_LIT("api.example.com"), STR_LIT("api.example.com")));
    assert_true(tls_dns_name_match(STR_LIT("API.example.com"), STR_LIT("api.EXAMPLE.com")));
    /* a wildcard SAN covers exactly one label */
    assert_true(tls_dns_name_match(STR_LIT("foo.example.com"), STR_LIT("*.example.com")));
    assert_false(tls_dns_name_match(STR_LIT("a.b.example.com"), STR_LIT("*.example.com")));
    assert_false(tls_dns_name_match(STR_LIT("example.com"), STR_LIT("*.example.com")));
    assert_false(tls_dns_name_match(STR_LIT(".example.com"), STR_LIT("*.example.com")));
    assert_false(tls_dns_name_match(STR_LIT("foo.example.org"), STR_LIT("*.example.com")));
    /* the configured name is not a pattern */
    assert_false(tls_dns_name_match(STR_LIT("*.example.com"), STR_LIT("foo.example.com")));
    assert_false(tls_dns_name_match(STR_LIT("api.example.co"), STR_LIT("api.example.com")));
}

static void test_san_dns(void **state)
{
    (void)state;
    const struct pki_san sans[] = {{GEN_DNS, "*.example.com", 0}, {GEN_DNS, "api.test", 0}};
    X509 *x = cert_with(sans, 2);
    assert_true(match1(x, TLS_SAN_DNS, SM_EXACT, "foo.example.com", false));
    assert_true(match1(x, TLS_SAN_DNS, SM_EXACT, "API.test", false));
    assert_false(match1(x, TLS_SAN_DNS, SM_EXACT, "a.b.example.com", false));
    assert_true(match1(x, TLS_SAN_DNS, SM_SUFFIX, ".example.com", false));
    assert_true(match1(x, TLS_SAN_DNS, SM_PREFIX, "api.", false));
    assert_true(match1(x, TLS_SAN_DNS, SM_CONTAINS, "EXAMPLE", true));
    assert_false(match1(x, TLS_SAN_DNS, SM_CONTAINS, "EXAMPLE", false));
    /* a DNS SAN never satisfies a URI matcher, even with the same text */
    assert_false(match1(x, TLS_SAN_URI, SM_EXACT, "api.test", false));
    assert_false(match1(x, TLS_SAN_URI, SM_CONTAINS, "api", false));
    /* the deprecated match_subject_alt_names looks at every kind */
    assert_true(match1(x, TLS_SAN_ANY, SM_EXACT, "api.test", false));
    X509_free(x);
}

static void test_san_uri_ip_email(void **state)
{
    (void)state;
    const struct pki_san sans[] = {{GEN_URI, SPIFFE_FRONTEND, 0},
                                   {GEN_IPADD, "10.1.2.3", 0},
                                   {GEN_IPADD, "2001:db8::1", 0},
                                   {GEN_EMAIL, "ops@example.com", 0}};
    X509 *x = cert_with(sans, 4);
    assert_true(match1(x, TLS_SAN_URI, SM_EXACT, SPIFFE_FRONTEND, false));
    assert_true(match1(x, TLS_SAN_URI, SM_PREFIX, "spiffe://mesh.test/", false));
    assert_false(match1(x, TLS_SAN_URI, SM_EXACT, "spiffe://mesh.test/ns/default/sa/front", false));
    assert_false(match1(x, TLS_SAN_URI, SM_PREFIX, "spiffe://other.test/", false));
    assert_true(match1(x, TLS_SAN_IP, SM_EXACT, "10.1.2.3", false));
    assert_true(match1(x, TLS_SAN_IP, SM_EXACT, "2001:db8::1", false));
    assert_false(match1(x, TLS_SAN_IP, SM_EXACT, "10.1.2.4", false));
    assert_true(match1(x, TLS_SAN_IP, SM_PREFIX, "10.1.", false));
    assert_true(match1(x, TLS_SAN_EMAIL, SM_EXACT, "ops@example.com", false));
    assert_false(match1(x, TLS_SAN_EMAIL, SM_EXACT, SPIFFE_FRONTEND, false));
    assert_false(match1(x, TLS_SAN_DNS, SM_EXACT, "10.1.2.3", false));

    char err[128];
    struct regex *re =
        regex_new("spiffe://mesh\\.test/ns/[a-z]+/sa/frontend", REGEX_FULL, err, sizeof(err));
    assert_non_null(re);
    struct tls_san_matcher m = {.type = TLS_SAN_URI, .m = {.kind = SM_REGEX, .regex = re}};
    struct tls_san_matchers ms = {&m, 1};
    assert_true(tls_san_match(&ms, x));
    regex_free(re);
    X509_free(x);

    /* no SAN extension at all: nothing matches */
    X509 *bare = cert_with(NULL, 0);
    assert_false(match1(bare, TLS_SAN_ANY, SM_CONTAINS, "", false));
    X509_free(bare);
}

/* hostile-inputs.md case 50: a URI SAN with an embedded NUL must not match the prefix before
 * the NUL, with any matcher kind that compares the whole value. */
static void test_san_embedded_nul(void **state)
{
    (void)state;
    static const char evil[] = SPIFFE_FRONTEND "\0evil";
    const struct pki_san sans[] = {{GEN_URI, evil, sizeof(evil) - 1}};
    X509 *x = cert_with(sans, 1);
    assert_false(match1(x, TLS_SAN_URI, SM_EXACT, SPIFFE_FRONTEND, false));
    assert_false(match1(x, TLS_SAN_URI, SM_EXACT, SPIFFE_FRONTEND, true));
    assert_false(match1(x, TLS_SAN_URI, SM_SUFFIX, "/sa/frontend", false));
    assert_false(match1(x, TLS_SAN_ANY, SM_EXACT, SPIFFE_FRONTEND, false));
    /* the bytes after the NUL are really there */
    assert_true(match1(x, TLS_SAN_URI, SM_SUFFIX, "evil", false));
    struct tls_san_matcher m = {.type = TLS_SAN_URI,
                                .m = {.kind = SM_EXACT, .value = {evil, sizeof(evil) - 1}}};
    struct tls_san_matchers ms = {&m, 1};
    assert_true(tls_san_match(&ms, x));

    /* a DNS SAN with a NUL does not match its visible prefix either */
    static const char dns_evil[] = "api.example.com\0.evil.test";
    const struct pki_san dsans[] = {{GEN_DNS, dns_evil, sizeof(dns_evil) - 1}};
    X509 *y = cert_with(dsans, 1);
    assert_false(match1(y, TLS_SAN_DNS, SM_EXACT, "api.example.com", false));
    X509_free(y);
    X509_free(x);
}

/* ---- handshakes between compiled contexts ---- */

static const char *tmpdir;
static const char *const files[] = {"ca.pem",     "ca2.pem",    "server.pem", "server.key",
                                    "client.pem", "client.key", "rogue.pem",  "rogue.key",
                                    "other.pem",  "other.key",  NULL};

static int setup(void **state)
{
    (void)state;
    tmpdir = pki_enter_tmpdir();
    EVP_PKEY *cak = pki_key(), *ca2k = pki_key();
    X509 *ca = pki_cert(cak, "Test CA", NULL, NULL, true, NULL, 0);
    X509 *ca2 = pki_cert(ca2k, "Other CA", NULL, NULL, true, NULL, 0);
    pki_write_cert("ca.pem", ca);
    pki_write_cert("ca2.pem", ca2);
    struct {
        const char *name;
        X509 *ca;
        EVP_PKEY *cak;
        struct pki_san san;
    } leaves[] = {
        {"server", ca, cak, {GEN_DNS, "backend.mesh.test", 0}},
        {"client", ca, cak, {GEN_URI, SPIFFE_FRONTEND, 0}},
        {"other", ca, cak, {GEN_URI, "spiffe://mesh.test/ns/default/sa/intruder", 0}},
        {"rogue", ca2, ca2k, {GEN_URI, SPIFFE_FRONTEND, 0}},
    };
    for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
        char p[64];
        EVP_PKEY *k = pki_key();
        X509 *x =
            pki_cert(k, leaves[i].name, leaves[i].ca, leaves[i].cak, false, &leaves[i].san, 1);
        snprintf(p, sizeof(p), "%s.pem", leaves[i].name);
        pki_write_cert(p, x);
        snprintf(p, sizeof(p), "%s.key", leaves[i].name);
        pki_write_key(p, k);
        X509_free(x);
        EVP_PKEY_free(k);
    }
    X509_free(ca);
    X509_free(ca2);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(ca2k);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pki_leave_tmpdir(tmpdir, files);
    return 0;
}

/* The server side: server.pem, trusted_ca ca.pem, the SPIFFE URI matcher, client certificates
 * required; ALPN h2, http/1.1. */
#define MTLS_CHAIN                                                                                 \
    ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": "       \
    "{\"@type\": \"" PKI_DS_TYPE "\", \"require_client_certificate\": true, "                      \
    "\"common_tls_context\": {\"tls_certificates\": [{\"certificate_chain\": {\"filename\": "      \
    "\"server.pem\"}, \"private_key\": {\"filename\": \"server.key\"}}], "                         \
    "\"alpn_protocols\": [\"h2\", \"http/1.1\"], "                                                 \
    "\"validation_context\": {\"trusted_ca\": {\"filename\": \"ca.pem\"}, "                        \
    "\"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": {\"exact\": "        \
    "\"" SPIFFE_FRONTEND "\"}}]}}}}"

/* The client's tls_params (JSON members, each ending in ","): the failure tests run once with
 * Envoy's client default (TLS 1.2 at most, where the server verifies the client's certificate
 * inside the handshake) and once with TLS 1.3 (where it does so after the client finished). */
static const char *client_params = "";
static const char *const versions[] = {"", "\"tls_params\": {\"tls_minimum_protocol_version\": "
                                           "\"TLSv1_3\", \"tls_maximum_protocol_version\": "
                                           "\"TLSv1_3\"}, "};

/* A client side presenting `name`.pem (NULL: no certificate), trusting `ca`, expecting a DNS SAN
 * `dns` from the server, offering ALPN `alpn` (JSON list body). */
static struct config *load_pair(const char *name, const char *ca, const char *dns, const char *alpn,
                                struct err *e)
{
    char cert[256] = "";
    if (name != NULL) {
        snprintf(cert, sizeof(cert),
                 "\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"%s.pem\"}, "
                 "\"private_key\": {\"filename\": \"%s.key\"}}], ",
                 name, name);
    }
    char cluster[1024];
    snprintf(cluster, sizeof(cluster),
             ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", "
             "\"typed_config\": {\"@type\": \"" PKI_US_TYPE "\", \"sni\": \"backend.mesh.test\", "
             "\"common_tls_context\": {%s %s \"alpn_protocols\": [%s], "
             "\"validation_context\": {\"trusted_ca\": {\"filename\": \"%s\"}, "
             "\"match_typed_subject_alt_names\": [{\"san_type\": \"DNS\", \"matcher\": "
             "{\"exact\": \"%s\"}}]}}}}",
             client_params, cert, alpn, ca, dns);
    return pki_load(MTLS_CHAIN, cluster, e);
}

struct hs {
    struct tls_conn s, c;
    int s_rc, c_rc; /* 1 done, -1 failed */
};

/* Runs a handshake between the config's chain (server) and cluster (client) contexts. */
static void handshake(const struct config *cfg, struct hs *h)
{
    const struct tls_ctx *sctx = cfg->chains[0].tls, *cctx = cfg->clusters[0].tls;
    assert_non_null(sctx);
    assert_non_null(cctx);
    memset(h, 0, sizeof(*h));
    h->s.ssl = SSL_new(sctx->ssl_ctx);
    h->s.ctx = sctx;
    h->c.ssl = SSL_new(cctx->ssl_ctx);
    h->c.ctx = cctx;
    SSL_set_app_data(h->s.ssl, &h->s);
    SSL_set_app_data(h->c.ssl, &h->c);
    BIO *bs, *bc;
    assert_int_equal(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
    SSL_set_bio(h->s.ssl, bs, bs);
    SSL_set_bio(h->c.ssl, bc, bc);
    SSL_set_accept_state(h->s.ssl);
    SSL_set_connect_state(h->c.ssl);
    SSL_set_tlsext_host_name(h->c.ssl, cctx->sni);
    for (int i = 0; i < 50 && (h->s_rc == 0 || h->c_rc == 0); i++) {
        if (h->c_rc == 0) {
            int r = SSL_do_handshake(h->c.ssl);
            int e = SSL_get_error(h->c.ssl, r);
            h->c_rc = r == 1 ? 1 : (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
        }
        if (h->s_rc == 0) {
            int r = SSL_do_handshake(h->s.ssl);
            int e = SSL_get_error(h->s.ssl, r);
            h->s_rc = r == 1 ? 1 : (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) ? 0 : -1;
        }
    }
    if (h->c_rc == 1) {
        /* TLS 1.3: the server verifies the client's certificate after the client finished; the
         * client learns the verdict (an alert, or tickets) on its next read */
        char buf[16];
        int r = SSL_read(h->c.ssl, buf, sizeof(buf));
        if (r <= 0 && SSL_get_error(h->c.ssl, r) == SSL_ERROR_SSL) {
            h->c_rc = -1;
        }
    }
    ERR_clear_error();
}

static void hs_free(struct hs *h)
{
    SSL_free(h->s.ssl);
    SSL_free(h->c.ssl);
}

static void test_handshake_mtls_ok_one(void)
{
    struct err e;
    struct config *cfg =
        load_pair("client", "ca.pem", "backend.mesh.test", "\"http/1.1\", \"h2\"", &e);
    if (cfg == NULL) {
        fail_msg("%s", e.msg);
    }
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.s_rc, 1);
    assert_int_equal(h.c_rc, 1);
    assert_int_equal(h.s.fail, TLS_FAIL_NONE);
    assert_int_equal(h.c.fail, TLS_FAIL_NONE);
    /* the server's preference wins: h2 although the client listed http/1.1 first */
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(h.s.ssl, &p, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "h2", 2);
    X509 *peer = SSL_get1_peer_certificate(h.s.ssl);
    assert_non_null(peer);
    X509_free(peer);
    hs_free(&h);
    config_unref(cfg);
}

static void test_handshake_alpn_no_overlap(void **state)
{
    (void)state;
    struct err e;
    struct config *cfg = load_pair("client", "ca.pem", "backend.mesh.test", "\"spdy/3\"", &e);
    assert_non_null(cfg);
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.s_rc, 1); /* no ALPN in common: the handshake goes on without */
    assert_int_equal(h.c_rc, 1);
    const unsigned char *p;
    unsigned int n;
    SSL_get0_alpn_selected(h.c.ssl, &p, &n);
    assert_int_equal(n, 0);
    hs_free(&h);
    config_unref(cfg);
}

static void test_handshake_wrong_san_one(void)
{
    struct err e;
    struct config *cfg = load_pair("other", "ca.pem", "backend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.s_rc, -1);
    assert_int_equal(h.s.fail, TLS_FAIL_VERIFY_SAN);
    assert_int_equal(h.c_rc, -1); /* the client got an alert */
    hs_free(&h);
    config_unref(cfg);
}

static void test_handshake_untrusted_client_one(void)
{
    struct err e;
    struct config *cfg = load_pair("rogue", "ca.pem", "backend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.s_rc, -1);
    assert_int_equal(h.s.fail, TLS_FAIL_VERIFY); /* right SAN, wrong CA */
    assert_int_equal(h.c_rc, -1);
    hs_free(&h);
    config_unref(cfg);
}

static void test_handshake_no_client_cert_one(void)
{
    struct err e;
    struct config *cfg = load_pair(NULL, "ca.pem", "backend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.s_rc, -1);
    assert_int_equal(h.s.fail, TLS_FAIL_NO_CERT);
    assert_int_equal(h.c_rc, -1);
    hs_free(&h);
    config_unref(cfg);
}

static void test_handshake_client_verifies_server_one(void)
{
    struct err e;
    /* the server's certificate is not from ca2.pem */
    struct config *cfg = load_pair("client", "ca2.pem", "backend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    struct hs h;
    handshake(cfg, &h);
    assert_int_equal(h.c_rc, -1);
    assert_int_equal(h.c.fail, TLS_FAIL_VERIFY);
    hs_free(&h);
    config_unref(cfg);

    /* trusted, but not the DNS name the client expects */
    cfg = load_pair("client", "ca.pem", "frontend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    handshake(cfg, &h);
    assert_int_equal(h.c_rc, -1);
    assert_int_equal(h.c.fail, TLS_FAIL_VERIFY_SAN);
    assert_int_equal(h.s.fail, TLS_FAIL_NONE);
    hs_free(&h);
    config_unref(cfg);
}

/* The callbacks do not need a tls_conn (an SSL the socket owners did not make): the verdict is
 * the same, only nothing is recorded. */
static void test_handshake_mtls_ok(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        client_params = versions[v];
        test_handshake_mtls_ok_one();
    }
    client_params = "";
}

static void test_handshake_wrong_san(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        client_params = versions[v];
        test_handshake_wrong_san_one();
    }
    client_params = "";
}

static void test_handshake_untrusted_client(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        client_params = versions[v];
        test_handshake_untrusted_client_one();
    }
    client_params = "";
}

static void test_handshake_no_client_cert(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        client_params = versions[v];
        test_handshake_no_client_cert_one();
    }
    client_params = "";
}

static void test_handshake_client_verifies_server(void **state)
{
    (void)state;
    for (size_t v = 0; v < sizeof(versions) / sizeof(versions[0]); v++) {
        client_params = versions[v];
        test_handshake_client_verifies_server_one();
    }
    client_params = "";
}

static void test_handshake_without_tls_conn(void **state)
{
    (void)state;
    struct err e;
    struct config *cfg = load_pair("other", "ca.pem", "backend.mesh.test", "\"h2\"", &e);
    assert_non_null(cfg);
    SSL *s = SSL_new(cfg->chains[0].tls->ssl_ctx);
    SSL *c = SSL_new(cfg->clusters[0].tls->ssl_ctx);
    BIO *bs, *bc;
    assert_int_equal(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
    SSL_set_bio(s, bs, bs);
    SSL_set_bio(c, bc, bc);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int srv = 0;
    for (int i = 0; i < 50; i++) {
        SSL_do_handshake(c);
        int r = SSL_do_handshake(s);
        if (r == 1 || SSL_get_error(s, r) == SSL_ERROR_SSL) {
            srv = r;
            break;
        }
    }
    assert_int_not_equal(srv, 1);
    assert_int_equal(SSL_get_verify_result(s), X509_V_ERR_APPLICATION_VERIFICATION);
    ERR_clear_error();
    SSL_free(s);
    SSL_free(c);
    config_unref(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_name_match),
        cmocka_unit_test(test_san_dns),
        cmocka_unit_test(test_san_uri_ip_email),
        cmocka_unit_test(test_san_embedded_nul),
        cmocka_unit_test(test_handshake_mtls_ok),
        cmocka_unit_test(test_handshake_alpn_no_overlap),
        cmocka_unit_test(test_handshake_wrong_san),
        cmocka_unit_test(test_handshake_untrusted_client),
        cmocka_unit_test(test_handshake_no_client_cert),
        cmocka_unit_test(test_handshake_client_verifies_server),
        cmocka_unit_test(test_handshake_without_tls_conn),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
