/* Unit tests for proxy/config/build_tls: transport sockets on filter chains and clusters compile
 * into SSL_CTXs with Envoy's defaults and the configured settings, and everything else is
 * rejected with its field path. Keys and certificates are made in the test (tls_test_pki.h). */
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
#include "proxy/core/file.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"
#include "tests/unit/proxy/net/tls_test_pki.h"

#define UNSUPPORTED "not supported by remora yet"
#define TS_TLS ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", "
#define CERT                                                                                       \
    "\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "              \
    "\"private_key\": {\"filename\": \"server.key\"}}]"
/* A DownstreamTlsContext with server.pem, plus members `ctx` (", ...") and, in its
 * common_tls_context, `common` (", ..."). */
#define DS(ctx, common)                                                                            \
    TS_TLS "\"typed_config\": {\"@type\": \"" PKI_DS_TYPE                                          \
           "\", \"common_tls_context\": {" CERT common "}" ctx "}}"
/* A DownstreamTlsContext whose common_tls_context is exactly `common`. */
#define DS_RAW(common)                                                                             \
    TS_TLS "\"typed_config\": {\"@type\": \"" PKI_DS_TYPE "\", \"common_tls_context\": {" common   \
           "}}}"
/* An UpstreamTlsContext with members `ctx` and common_tls_context `common`. */
#define US(ctx, common)                                                                            \
    TS_TLS "\"typed_config\": {\"@type\": \"" PKI_US_TYPE "\", \"common_tls_context\": {" common   \
           "}" ctx "}}"
#define TWO_CERTS                                                                                  \
    "\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "              \
    "\"private_key\": {\"filename\": \"server.key\"}}, {\"certificate_chain\": {\"filename\": "    \
    "\"chain.pem\"}, \"private_key\": {\"filename\": \"chain.key\"}}]"
#define X64 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
#define CA ", \"validation_context\": {\"trusted_ca\": {\"filename\": \"ca.pem\"}"
#define URI_SAN                                                                                    \
    "\"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": {\"exact\": "        \
    "\"spiffe://mesh.test/ns/default/sa/frontend\"}}]"

/* Error paths. */
#define CH "static_resources.listeners[0].filter_chains[0].transport_socket"
#define CT CH ".typed_config"
#define CC CT ".common_tls_context"
#define CL "static_resources.clusters[0].transport_socket"
#define UT CL ".typed_config"
#define UC UT ".common_tls_context"

static const char *tmpdir;
static const char *const files[] = {"ca.pem",      "server.pem", "server.key", "other.key",
                                    "garbage.pem", "chain.pem",  "chain.key",  NULL};

static int setup(void **state)
{
    (void)state;
    tmpdir = pki_enter_tmpdir();
    EVP_PKEY *cak = pki_key(), *ik = pki_key(), *sk = pki_key(), *ok = pki_key(), *lk = pki_key();
    X509 *ca = pki_cert(cak, "Test CA", NULL, NULL, true, NULL, 0);
    X509 *inter = pki_cert(ik, "Intermediate", ca, cak, true, NULL, 0);
    const struct pki_san dns = {GEN_DNS, "backend.mesh.test", 0};
    X509 *srv = pki_cert(sk, "server", ca, cak, false, &dns, 1);
    X509 *leaf = pki_cert(lk, "leaf", inter, ik, false, &dns, 1);
    pki_write_cert("ca.pem", ca);
    pki_write_cert("server.pem", srv);
    pki_write_key("server.key", sk);
    pki_write_key("other.key", ok);
    pki_write("garbage.pem", "this is not PEM\n");
    char *a = pki_pem_cert(leaf), *b = pki_pem_cert(inter);
    size_t n = strlen(a) + strlen(b) + 1;
    char *both = malloc(n);
    snprintf(both, n, "%s%s", a, b);
    pki_write("chain.pem", both);
    pki_write_key("chain.key", lk);
    free(a);
    free(b);
    free(both);
    X509_free(ca);
    X509_free(inter);
    X509_free(srv);
    X509_free(leaf);
    EVP_PKEY_free(cak);
    EVP_PKEY_free(ik);
    EVP_PKEY_free(sk);
    EVP_PKEY_free(ok);
    EVP_PKEY_free(lk);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pki_leave_tmpdir(tmpdir, files);
    return 0;
}

/* The ALPN wire list of a context as text "h2,http/1.1". */
static void alpn_text(const struct tls_ctx *t, char *out, size_t n)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < t->alpn_len && o + 1 < n;) {
        size_t l = t->alpn[i++];
        o += (size_t)snprintf(out + o, n - o, "%s%.*s", o > 0 ? "," : "", (int)l,
                              (const char *)t->alpn + i);
        i += l;
    }
}

static bool has_cipher(SSL_CTX *ctx, const char *name)
{
    STACK_OF(SSL_CIPHER) *cs = SSL_CTX_get_ciphers(ctx);
    for (int i = 0; i < sk_SSL_CIPHER_num(cs); i++) {
        if (strcmp(SSL_CIPHER_get_name(sk_SSL_CIPHER_value(cs, i)), name) == 0) {
            return true;
        }
    }
    return false;
}

/* The group a handshake between server context `s` and a default OpenSSL client settles on. */
static int negotiated_group(SSL_CTX *s)
{
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    SSL *srv = SSL_new(s), *cli = SSL_new(cctx);
    BIO *bs, *bc;
    assert_int_equal(BIO_new_bio_pair(&bs, 0, &bc, 0), 1);
    SSL_set_bio(srv, bs, bs);
    SSL_set_bio(cli, bc, bc);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    int done = 0;
    for (int i = 0; i < 20 && done != 3; i++) {
        done |= SSL_do_handshake(cli) == 1 ? 1 : 0;
        done |= SSL_do_handshake(srv) == 1 ? 2 : 0;
    }
    assert_int_equal(done, 3);
    int g = SSL_get_negotiated_group(srv);
    SSL_free(srv);
    SSL_free(cli);
    SSL_CTX_free(cctx);
    return g;
}

static void test_downstream_defaults(void **state)
{
    (void)state;
    struct config *c = pki_must_load(DS("", ""), "");
    const struct tls_ctx *t = c->chains[0].tls;
    assert_non_null(t);
    assert_true(t->server);
    assert_null(t->sni);
    assert_null(t->sans);
    assert_int_equal(t->alpn_len, 0);
    SSL_CTX *ctx = t->ssl_ctx;
    assert_ptr_equal(SSL_CTX_get_app_data(ctx), t);
    assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
    /* Envoy's server defaults: TLS 1.2 to 1.3, its cipher list and X25519:P-256 */
    assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_max_proto_version(ctx), TLS1_3_VERSION);
    assert_true(has_cipher(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256"));
    assert_true(has_cipher(ctx, "ECDHE-RSA-CHACHA20-POLY1305"));
    assert_true(has_cipher(ctx, "ECDHE-RSA-AES256-GCM-SHA384"));
    assert_false(has_cipher(ctx, "AES128-SHA"));
    assert_false(has_cipher(ctx, "ECDHE-RSA-AES128-SHA256"));
    uint64_t o = SSL_CTX_get_options(ctx);
    assert_true(o & SSL_OP_NO_RENEGOTIATION);
    assert_true(o & SSL_OP_NO_COMPRESSION);
    assert_true(o & SSL_OP_CIPHER_SERVER_PREFERENCE);
    assert_non_null(SSL_CTX_get0_certificate(ctx));
    assert_int_equal(negotiated_group(ctx), NID_X25519);
    assert_int_equal(c->chains[0].handshake_timeout_ms, 0);
    assert_null(c->clusters[0].tls);
    config_unref(c);
}

static void test_downstream_mtls(void **state)
{
    (void)state;
    struct config *c =
        pki_must_load(DS(", \"require_client_certificate\": true",
                         ", \"alpn_protocols\": [\"h2\", \"http/1.1\"]" CA ", " URI_SAN "}"),
                      "");
    const struct tls_ctx *t = c->chains[0].tls;
    assert_int_equal(SSL_CTX_get_verify_mode(t->ssl_ctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    assert_non_null(SSL_CTX_get_verify_callback(t->ssl_ctx));
    char alpn[64];
    alpn_text(t, alpn, sizeof(alpn));
    assert_string_equal(alpn, "h2,http/1.1");
    assert_non_null(t->sans);
    assert_int_equal(t->sans->n, 1);
    assert_int_equal(t->sans->v[0].type, TLS_SAN_URI);
    assert_int_equal(t->sans->v[0].m.kind, SM_EXACT);
    assert_true(str_eq_lit(t->sans->v[0].m.value, "spiffe://mesh.test/ns/default/sa/frontend"));
    /* the CA is named in the CertificateRequest */
    assert_int_equal(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(t->ssl_ctx)), 1);
    config_unref(c);

    /* trusted_ca alone: a client certificate is asked for and verified, not required */
    c = pki_must_load(DS("", CA "}"), "");
    assert_int_equal(SSL_CTX_get_verify_mode(c->chains[0].tls->ssl_ctx), SSL_VERIFY_PEER);
    config_unref(c);
    /* SAN matchers require one (Envoy), as does require_client_certificate */
    c = pki_must_load(DS("", CA ", " URI_SAN "}"), "");
    assert_int_equal(SSL_CTX_get_verify_mode(c->chains[0].tls->ssl_ctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    config_unref(c);
    /* require_client_certificate: false is the default, spelled out */
    c = pki_must_load(DS(", \"require_client_certificate\": false", CA "}"), "");
    assert_int_equal(SSL_CTX_get_verify_mode(c->chains[0].tls->ssl_ctx), SSL_VERIFY_PEER);
    config_unref(c);
}

static void test_downstream_chain_and_inline(void **state)
{
    (void)state;
    /* leaf + intermediate: both are sent */
    struct config *c =
        pki_must_load(DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": "
                             "\"chain.pem\"}, \"private_key\": {\"filename\": \"chain.key\"}}]"),
                      "");
    STACK_OF(X509) *extra = NULL;
    SSL_CTX_get0_chain_certs(c->chains[0].tls->ssl_ctx, &extra);
    assert_int_equal(sk_X509_num(extra), 1);
    config_unref(c);

    /* inline PEM, and the private key never shows in /config_dump */
    char *cert = NULL, *key = NULL;
    size_t n;
    cert = file_read("server.pem", 1 << 20, &n);
    key = file_read("server.key", 1 << 20, &n);
    json_t *jc = json_string(cert), *jk = json_string(key);
    char *qc = json_dumps(jc, JSON_ENCODE_ANY), *qk = json_dumps(jk, JSON_ENCODE_ANY);
    size_t len = strlen(qc) + strlen(qk) + 512;
    char *frag = malloc(len);
    snprintf(frag, len,
             TS_TLS "\"typed_config\": {\"@type\": \"" PKI_DS_TYPE "\", \"common_tls_context\": "
                    "{\"tls_certificates\": [{\"certificate_chain\": {\"inline_string\": %s}, "
                    "\"private_key\": {\"inline_string\": %s}}]}}}",
             qc, qk);
    c = pki_must_load(frag, "");
    assert_non_null(c->chains[0].tls);
    json_t *dump = config_dump_json(c);
    char *text = json_dumps(dump, 0);
    assert_null(strstr(text, "PRIVATE KEY"));
    assert_non_null(strstr(text, "[redacted]"));
    assert_non_null(strstr(text, "BEGIN CERTIFICATE")); /* the certificate is not secret */
    free(text);
    json_decref(dump);
    config_unref(c);
    free(frag);
    free(qc);
    free(qk);
    json_decref(jc);
    json_decref(jk);
    free(cert);
    free(key);
}

static void test_upstream(void **state)
{
    (void)state;
    /* the name alone is an empty UpstreamTlsContext: TLS, no verification (Envoy) */
    struct config *c =
        pki_must_load("", ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\"}");
    const struct tls_ctx *t = c->clusters[0].tls;
    assert_non_null(t);
    assert_false(t->server);
    assert_null(t->sni);
    assert_int_equal(t->alpn_len, 0);
    assert_int_equal(SSL_CTX_get_verify_mode(t->ssl_ctx), SSL_VERIFY_NONE);
    /* Envoy's client defaults: TLS 1.2 only */
    assert_int_equal(SSL_CTX_get_min_proto_version(t->ssl_ctx), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_max_proto_version(t->ssl_ctx), TLS1_2_VERSION);
    assert_false(SSL_CTX_get_options(t->ssl_ctx) & SSL_OP_CIPHER_SERVER_PREFERENCE);
    assert_true(SSL_CTX_get_options(t->ssl_ctx) & SSL_OP_NO_RENEGOTIATION);
    config_unref(c);

    c = pki_must_load("", US(", \"sni\": \"backend.mesh.test\", \"max_session_keys\": 0",
                             CERT ", \"alpn_protocols\": [\"http/1.1\"]" CA "}"));
    t = c->clusters[0].tls;
    assert_string_equal(t->sni, "backend.mesh.test");
    assert_int_equal(SSL_CTX_get_verify_mode(t->ssl_ctx), SSL_VERIFY_PEER);
    assert_non_null(SSL_CTX_get0_certificate(t->ssl_ctx));
    char alpn[64];
    alpn_text(t, alpn, sizeof(alpn));
    assert_string_equal(alpn, "http/1.1");
    config_unref(c);

    /* an HTTP/2 cluster without alpn_protocols offers h2 (remora's choice) */
    c = pki_must_load("", ", \"http2_protocol_options\": {}" US("", ""));
    alpn_text(c->clusters[0].tls, alpn, sizeof(alpn));
    assert_string_equal(alpn, "h2");
    config_unref(c);
    /* ... and its own list when it has one */
    c = pki_must_load(
        "", ", \"http2_protocol_options\": {}" US("", "\"alpn_protocols\": [\"h2,http/1.1\"]"));
    alpn_text(c->clusters[0].tls, alpn, sizeof(alpn));
    assert_string_equal(alpn, "h2,http/1.1");
    config_unref(c);
}

static void test_tls_params(void **state)
{
    (void)state;
    struct config *c = pki_must_load(
        DS("", ", \"tls_params\": {\"tls_minimum_protocol_version\": \"TLSv1_3\", "
               "\"tls_maximum_protocol_version\": \"TLSv1_3\", \"cipher_suites\": "
               "[\"ECDHE-RSA-AES128-GCM-SHA256\"], \"ecdh_curves\": [\"P-384\", \"P-521\"]}"),
        US("", "\"tls_params\": {\"tls_minimum_protocol_version\": \"TLSv1_2\", "
               "\"tls_maximum_protocol_version\": \"TLSv1_3\"}"));
    SSL_CTX *s = c->chains[0].tls->ssl_ctx;
    assert_int_equal(SSL_CTX_get_min_proto_version(s), TLS1_3_VERSION);
    assert_int_equal(SSL_CTX_get_max_proto_version(s), TLS1_3_VERSION);
    assert_true(has_cipher(s, "ECDHE-RSA-AES128-GCM-SHA256"));
    assert_false(has_cipher(s, "ECDHE-ECDSA-AES128-GCM-SHA256"));
    /* the client's X25519 key share is refused: a retry with one of the server's groups */
    int g = negotiated_group(s);
    assert_true(g == NID_secp384r1 || g == NID_secp521r1);
    SSL_CTX *u = c->clusters[0].tls->ssl_ctx;
    assert_int_equal(SSL_CTX_get_min_proto_version(u), TLS1_2_VERSION);
    assert_int_equal(SSL_CTX_get_max_proto_version(u), TLS1_3_VERSION);
    config_unref(c);

    /* one entry may hold several names, as Envoy joins them with ':' */
    c = pki_must_load(DS("", ", \"tls_params\": {\"cipher_suites\": [\"ECDHE-RSA-AES128-GCM-SHA256:"
                             "ECDHE-RSA-AES256-GCM-SHA384\"]}"),
                      "");
    assert_true(has_cipher(c->chains[0].tls->ssl_ctx, "ECDHE-RSA-AES256-GCM-SHA384"));
    assert_false(has_cipher(c->chains[0].tls->ssl_ctx, "ECDHE-RSA-CHACHA20-POLY1305"));
    config_unref(c);
}

static void test_plaintext_and_timeout(void **state)
{
    (void)state;
    struct config *c = pki_must_load(
        ", \"transport_socket\": {\"name\": \"envoy.transport_sockets.raw_buffer\"}, "
        "\"transport_socket_connect_timeout\": \"2.5s\"",
        ", \"transport_socket\": {\"name\": \"anything\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer\"}}");
    assert_null(c->chains[0].tls);
    assert_null(c->clusters[0].tls);
    assert_int_equal(c->chains[0].handshake_timeout_ms, 2500);
    config_unref(c);
}

struct reject {
    const char *chain;
    const char *cluster;
    const char *want; /* the whole message, or its start when it ends in "..." */
};

static const struct reject rejects[] = {
    /* transport sockets */
    {", \"transport_socket\": {\"name\": \"envoy.transport_sockets.alts\"}", "",
     CH ".name: transport socket 'envoy.transport_sockets.alts' is " UNSUPPORTED},
    {", \"transport_socket\": {\"name\": \"x\", \"typed_config\": {\"@type\": "
     "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}",
     "",
     CH ".typed_config: transport socket 'x' (envoy.extensions.filters.http.router.v3.Router) "
        "is " UNSUPPORTED},
    {US("", ""), "",
     CH ".typed_config: a filter chain takes "
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, not "
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"},
    {"", DS("", ""),
     CL ".typed_config: a cluster takes "
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, not "
        "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"},
    {", \"transport_socket_connect_timeout\": \"-1s\"", "",
     "static_resources.listeners[0].filter_chains[0].transport_socket_connect_timeout: ..."},
    /* DownstreamTlsContext */
    {DS(", \"require_sni\": true", ""), "", CT ".require_sni: " UNSUPPORTED},
    {DS(", \"session_ticket_keys\": {\"keys\": [{\"inline_string\": \"k\"}]}", ""), "",
     CT ".session_ticket_keys: " UNSUPPORTED},
    {DS(", \"session_ticket_keys_sds_secret_config\": {\"name\": \"k\"}", ""), "",
     CT ".session_ticket_keys_sds_secret_config: " UNSUPPORTED},
    {DS(", \"disable_stateless_session_resumption\": true", ""), "",
     CT ".disable_stateless_session_resumption: " UNSUPPORTED},
    {DS(", \"disable_stateful_session_resumption\": true", ""), "",
     CT ".disable_stateful_session_resumption: " UNSUPPORTED},
    {DS(", \"session_timeout\": \"60s\"", ""), "", CT ".session_timeout: " UNSUPPORTED},
    {DS(", \"ocsp_staple_policy\": \"MUST_STAPLE\"", ""), "",
     CT ".ocsp_staple_policy: " UNSUPPORTED},
    {DS(", \"full_scan_certs_on_sni_mismatch\": true", ""), "",
     CT ".full_scan_certs_on_sni_mismatch: " UNSUPPORTED},
    {DS(", \"prefer_client_ciphers\": true", ""), "", CT ".prefer_client_ciphers: " UNSUPPORTED},
    {DS(", \"require_client_certificate\": true", ""), "",
     CT ".require_client_certificate: needs common_tls_context.validation_context.trusted_ca to "
        "verify client certificates against (Envoy accepts it and requests no certificate)"},
    {DS_RAW("\"alpn_protocols\": [\"h2\"]"), "",
     CT ".common_tls_context.tls_certificates: a server (DownstreamTlsContext) needs a "
        "certificate"},
    {", \"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\"}", "",
     CT ".common_tls_context.tls_certificates: a server (DownstreamTlsContext) needs a "
        "certificate"},
    /* UpstreamTlsContext */
    {"", US(", \"allow_renegotiation\": true", ""), UT ".allow_renegotiation: " UNSUPPORTED},
    {"", US(", \"auto_host_sni\": true", ""), UT ".auto_host_sni: " UNSUPPORTED},
    {"", US(", \"auto_sni_san_validation\": true", ""),
     UT ".auto_sni_san_validation: " UNSUPPORTED},
    {"", US(", \"enforce_rsa_key_usage\": true", ""), UT ".enforce_rsa_key_usage: " UNSUPPORTED},
    {"", US(", \"max_session_keys\": 1", ""),
     UT ".max_session_keys: only 0 is supported: remora does not resume upstream sessions yet"},
    {"", US(", \"sni\": \"" X64 X64 X64 X64 "a\"", ""), UT ".sni: longer than 255 bytes"},
    {"", US("", TWO_CERTS),
     UC ".tls_certificates[1]: more than one certificate is " UNSUPPORTED
        " (Envoy allows one per key type on a server, one on a client)"},
    /* CommonTlsContext */
    {DS("", ", \"tls_certificate_sds_secret_configs\": [{\"name\": \"c\"}]"), "",
     CC ".tls_certificate_sds_secret_configs: cannot be used with tls_certificates: the "
        "certificate comes from one or the other"},
    {DS("", ", \"validation_context_sds_secret_config\": {\"name\": \"v\"}"), "",
     CC ".validation_context_sds_secret_config.sds_config: required: remora reads secrets from "
        "files (path_config_source) or ADS; static_resources.secrets is " UNSUPPORTED},
    {DS("", ", \"combined_validation_context\": {\"default_validation_context\": {}, "
            "\"validation_context_sds_secret_config\": {\"name\": \"v\"}}"),
     "",
     CC ".combined_validation_context.validation_context_sds_secret_config.sds_config: required: "
        "remora reads secrets from files (path_config_source) or ADS; static_resources.secrets "
        "is " UNSUPPORTED},
    {DS("", ", \"combined_validation_context\": {\"default_validation_context\": {}}"), "",
     CC ".combined_validation_context.validation_context_sds_secret_config: required"},
    {DS("", ", \"combined_validation_context\": {\"default_validation_context\": {\"trusted_ca\": "
            "{\"filename\": \"x\"}}, \"validation_context_sds_secret_config\": {\"name\": \"v\", "
            "\"sds_config\": {\"path_config_source\": {\"path\": \"/nonexistent/sds.yaml\"}}}}"),
     "",
     CC ".combined_validation_context.default_validation_context.trusted_ca: would never be used: "
        "the trusted CA comes from validation_context_sds_secret_config"},
    {DS("", ", \"tls_certificate_provider_instance\": {\"instance_name\": \"i\"}"), "",
     CC ".tls_certificate_provider_instance: " UNSUPPORTED},
    {DS("", ", \"custom_tls_certificate_selector\": {\"name\": \"s\"}"), "",
     CC ".custom_tls_certificate_selector: " UNSUPPORTED},
    {DS("", ", \"custom_handshaker\": {\"name\": \"h\"}"), "",
     CC ".custom_handshaker: " UNSUPPORTED},
    {DS("", ", \"key_log\": {\"path\": \"/tmp/keys\"}"), "", CC ".key_log: " UNSUPPORTED},
    {DS("", ", \"read_ahead_buffer_size\": 16384"), "", CC ".read_ahead_buffer_size: " UNSUPPORTED},
    {DS_RAW(TWO_CERTS), "",
     CC ".tls_certificates[1]: more than one certificate is " UNSUPPORTED
        " (Envoy allows one per key type on a server, one on a client)"},
    {DS("", ", \"alpn_protocols\": [\"h2\", \"\"]"), "",
     CC ".alpn_protocols[1]: empty protocol name"},
    {DS("", ", \"alpn_protocols\": [\"h2,\"]"), "", CC ".alpn_protocols[0]: empty protocol name"},
    {DS("", ", \"alpn_protocols\": [\"" X64 X64 X64 X64 "x\"]"), "",
     CC ".alpn_protocols[0]: a protocol name is longer than 255 bytes"},
    /* TlsParameters */
    {DS("", ", \"tls_params\": {\"signature_algorithms\": [\"ecdsa_secp256r1_sha256\"]}"), "",
     CC ".tls_params.signature_algorithms: " UNSUPPORTED},
    {DS("", ", \"tls_params\": {\"tls_minimum_protocol_version\": \"TLSv1_3\", "
            "\"tls_maximum_protocol_version\": \"TLSv1_2\"}"),
     "",
     CC ".tls_params.tls_minimum_protocol_version: TLSv1_3 is above the maximum version (TLSv1_2)"},
    {"", US("", "\"tls_params\": {\"tls_minimum_protocol_version\": \"TLSv1_3\"}"),
     UC ".tls_params.tls_minimum_protocol_version: TLSv1_3 is above the maximum version "
        "(TLS_AUTO: TLSv1_2)"},
    {DS("", ", \"tls_params\": {\"tls_minimum_protocol_version\": \"TLSv1_0\"}"), "",
     CC ".tls_params.tls_minimum_protocol_version: TLSv1_0 is " UNSUPPORTED
        " (OpenSSL 3 refuses TLS below 1.2)"},
    {"", US("", "\"tls_params\": {\"tls_maximum_protocol_version\": \"TLSv1_1\"}"),
     UC ".tls_params.tls_maximum_protocol_version: TLSv1_1 is " UNSUPPORTED
        " (OpenSSL 3 refuses TLS below 1.2)"},
    {DS("", ", \"tls_params\": {\"cipher_suites\": [\"[ECDHE-ECDSA-AES128-GCM-SHA256|"
            "ECDHE-ECDSA-CHACHA20-POLY1305]\"]}"),
     "",
     CC ".tls_params.cipher_suites[0]: '[ECDHE-ECDSA-AES128-GCM-SHA256|"
        "ECDHE-ECDSA-CHACHA20-POLY1305]': the [A|B] equal-preference syntax is BoringSSL's and "
        "is " UNSUPPORTED " (list the names one by one)"},
    {DS("", ", \"tls_params\": {\"cipher_suites\": [\"ECDHE-RSA-AES128-GCM-SHA256\", "
            "\"NOT-A-CIPHER\"]}"),
     "", CC ".tls_params.cipher_suites[1]: unknown cipher suite 'NOT-A-CIPHER'"},
    {DS("", ", \"tls_params\": {\"cipher_suites\": [\"ECDHE-RSA-AES128-GCM-SHA256:BOGUS\"]}"), "",
     CC ".tls_params.cipher_suites[0]: unknown cipher suite 'BOGUS'"},
    {DS("", ", \"tls_params\": {\"cipher_suites\": [\"\"]}"), "",
     CC ".tls_params.cipher_suites[0]: must not be empty"},
    {DS("", ", \"tls_params\": {\"ecdh_curves\": [\"P-256\", \"P-999\"]}"), "",
     CC ".tls_params.ecdh_curves[1]: unknown curve 'P-999'"},
    /* TlsCertificate */
    {DS_RAW("\"tls_certificates\": [{\"private_key\": {\"filename\": \"server.key\"}}]"), "",
     CC ".tls_certificates[0].certificate_chain: required"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}}]"), "",
     CC ".tls_certificates[0].private_key: required"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"missing.pem\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}}]"),
     "",
     CC ".tls_certificates[0].certificate_chain.filename: cannot read 'missing.pem': No such "
        "file or directory"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"environment_variable\": \"C\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}}]"),
     "", CC ".tls_certificates[0].certificate_chain.environment_variable: " UNSUPPORTED},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"garbage.pem\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}}]"),
     "", CC ".tls_certificates[0].certificate_chain: no PEM certificate in 'garbage.pem'"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"inline_string\": \"nope\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}}]"),
     "", CC ".tls_certificates[0].certificate_chain: no PEM certificate in the inline data"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key\": {\"filename\": \"garbage.pem\"}}]"),
     "",
     CC ".tls_certificates[0].private_key: no PEM private key in 'garbage.pem' (an encrypted key "
        "needs `password`, which is " UNSUPPORTED ")"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key\": {\"filename\": \"other.key\"}}]"),
     "",
     CC ".tls_certificates[0].private_key: does not match the certificate in certificate_chain"},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}, \"password\": {\"inline_string\": "
            "\"p\"}}]"),
     "", CC ".tls_certificates[0].password: " UNSUPPORTED},
    {DS_RAW("\"tls_certificates\": [{\"pkcs12\": {\"filename\": \"x.p12\"}}]"), "",
     CC ".tls_certificates[0].pkcs12: " UNSUPPORTED},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key_provider\": {\"provider_name\": \"p\"}}]"),
     "", CC ".tls_certificates[0].private_key_provider: " UNSUPPORTED},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}, \"ocsp_staple\": {\"filename\": "
            "\"o\"}}]"),
     "", CC ".tls_certificates[0].ocsp_staple: " UNSUPPORTED},
    {DS_RAW("\"tls_certificates\": [{\"certificate_chain\": {\"filename\": \"server.pem\"}, "
            "\"private_key\": {\"filename\": \"server.key\"}, \"watched_directory\": {\"path\": "
            "\"/tmp\"}}]"),
     "", CC ".tls_certificates[0].watched_directory: " UNSUPPORTED},
    /* CertificateValidationContext */
    {DS("", ", \"validation_context\": {\"trusted_ca\": {\"filename\": \"garbage.pem\"}}"), "",
     CC ".validation_context.trusted_ca: no PEM certificate in 'garbage.pem'"},
    {DS("", ", \"validation_context\": {\"trusted_ca\": {\"filename\": \"server.key\"}}"), "",
     CC ".validation_context.trusted_ca: no PEM certificate in 'server.key'"},
    {DS("", ", \"validation_context\": {\"trusted_ca\": {\"filename\": \"nope.pem\"}}"), "",
     CC ".validation_context.trusted_ca.filename: cannot read 'nope.pem': No such file or "
        "directory"},
    {DS("", CA ", \"verify_certificate_spki\": "
               "[\"NvqYIYSbgK2vCJpQhObf77vv+bQWtc5ek5RIOwPiC9A=\"]}"),
     "", CC ".validation_context.verify_certificate_spki: " UNSUPPORTED},
    {DS("", CA ", \"verify_certificate_hash\": "
               "[\"df6ff72fe9116521268f6f2dd4966f51df479883fe7037b39f75916ac3049d1a\"]}"),
     "", CC ".validation_context.verify_certificate_hash: " UNSUPPORTED},
    {DS("", CA ", \"crl\": {\"filename\": \"ca.pem\"}}"), "",
     CC ".validation_context.crl: " UNSUPPORTED},
    {DS("", CA ", \"allow_expired_certificate\": true}"), "",
     CC ".validation_context.allow_expired_certificate: " UNSUPPORTED},
    {DS("", CA ", \"trust_chain_verification\": \"ACCEPT_UNTRUSTED\"}"), "",
     CC ".validation_context.trust_chain_verification: " UNSUPPORTED},
    {DS("", CA ", \"custom_validator_config\": {\"name\": \"v\"}}"), "",
     CC ".validation_context.custom_validator_config: " UNSUPPORTED},
    {DS("", CA ", \"only_verify_leaf_cert_crl\": true}"), "",
     CC ".validation_context.only_verify_leaf_cert_crl: " UNSUPPORTED},
    {DS("", CA ", \"require_signed_certificate_timestamp\": true}"), "",
     CC ".validation_context.require_signed_certificate_timestamp: " UNSUPPORTED},
    {DS("", CA ", \"watched_directory\": {\"path\": \"/tmp\"}}"), "",
     CC ".validation_context.watched_directory: " UNSUPPORTED},
    {DS("", ", \"validation_context\": {\"ca_certificate_provider_instance\": {}}"), "",
     CC ".validation_context.ca_certificate_provider_instance: " UNSUPPORTED},
    {DS("", CA ", \"max_verify_depth\": 101}"), "",
     CC ".validation_context.max_verify_depth: must be at most 100"},
    {DS("", ", \"validation_context\": {" URI_SAN "}"), "",
     CC ".validation_context.match_typed_subject_alt_names: needs trusted_ca: the SANs of a "
        "certificate that is not verified prove nothing (Envoy accepts this)"},
    {DS("", CA ", " URI_SAN ", \"match_subject_alt_names\": [{\"exact\": \"a\"}]}"), "",
     CC ".validation_context.match_subject_alt_names: cannot be used with "
        "match_typed_subject_alt_names (Envoy ignores it then)"},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"OTHER_NAME\", \"matcher\": "
               "{\"exact\": \"a\"}}]}"),
     "",
     CC
     ".validation_context.match_typed_subject_alt_names[0].san_type: OTHER_NAME is " UNSUPPORTED},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"matcher\": {\"exact\": \"a\"}}]}"), "",
     CC ".validation_context.match_typed_subject_alt_names[0].san_type: required: DNS, URI, "
        "EMAIL or IP_ADDRESS"},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"DNS\"}]}"), "",
     CC ".validation_context.match_typed_subject_alt_names[0].matcher: required"},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": "
               "{\"prefix\": \"\"}}]}"),
     "",
     CC ".validation_context.match_typed_subject_alt_names[0].matcher.prefix: must not be empty"},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": "
               "{\"safe_regex\": {\"regex\": \"(\"}}}]}"),
     "", CC ".validation_context.match_typed_subject_alt_names[0].matcher.safe_regex.regex: ..."},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": "
               "{\"safe_regex\": {\"regex\": \"a\"}, \"ignore_case\": true}}]}"),
     "",
     CC ".validation_context.match_typed_subject_alt_names[0].matcher.ignore_case: has no effect "
        "for safe_regex"},
    {DS("", CA ", \"match_typed_subject_alt_names\": [{\"san_type\": \"URI\", \"matcher\": "
               "{\"ignore_case\": true}}]}"),
     "",
     CC ".validation_context.match_typed_subject_alt_names[0].matcher: one of exact, prefix, "
        "suffix, safe_regex, contains is required"},
    {DS("", CA ", \"match_subject_alt_names\": [{\"suffix\": \"\"}]}"), "",
     CC ".validation_context.match_subject_alt_names[0].suffix: must not be empty"},
};

static void test_rejections_name_their_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rejects) / sizeof(rejects[0]); i++) {
        struct err e;
        struct config *c = pki_load(rejects[i].chain, rejects[i].cluster, &e);
        if (c != NULL) {
            config_unref(c);
            fail_msg("case %zu: accepted, want: %s", i, rejects[i].want);
        }
        size_t n = strlen(rejects[i].want);
        bool prefix = n > 3 && strcmp(rejects[i].want + n - 3, "...") == 0;
        if (prefix ? strncmp(e.msg, rejects[i].want, n - 3) != 0
                   : strcmp(e.msg, rejects[i].want) != 0) {
            fail_msg("case %zu:\n got: %s\nwant: %s", i, e.msg, rejects[i].want);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_downstream_defaults),
        cmocka_unit_test(test_downstream_mtls),
        cmocka_unit_test(test_downstream_chain_and_inline),
        cmocka_unit_test(test_upstream),
        cmocka_unit_test(test_tls_params),
        cmocka_unit_test(test_plaintext_and_timeout),
        cmocka_unit_test(test_rejections_name_their_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
