/* libFuzzer target for SDS updates: hostile DiscoveryResponse documents into the path a changed
 * SDS file takes on the main thread (proxy/config/sds.h: sds_update): the text loader, the
 * proto3 JSON mapper, picking the Secret by name, the secret's rules and the PEM code of
 * build_tls.c, then the swap into a live TLS context. The bootstrap (fixed, made once) has a
 * listener whose certificate comes from secret "server" and whose trusted CA comes from secret
 * "ca" of one file; each input is written to that file and applied to both subscriptions.
 *
 * It aborts when a rejected update leaves no error message or an accepted one reports one, or
 * when an accepted update leaves the context without a certificate that matches its key.
 * Secrets may name files (DataSource filename): inputs only ever read them.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/sds_fuzz tests/fuzz/corpus/sds) */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/sds.h"
#include "proxy/core/log.h"
#include "proxy/net/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DOC (256 * 1024)

static char path[64];

/* A self-signed EC certificate and its key, as one JSON-escaped PEM string each. */
static void json_pem(BIO *b, char *out, size_t n)
{
    char *p;
    long len = BIO_get_mem_data(b, &p);
    size_t o = 0;
    for (long i = 0; i < len && o + 3 < n; i++) {
        if (p[i] == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
}

static void write_file(const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fputs(text, f);
    fclose(f);
}

static void remove_file(void)
{
    unlink(path);
}

static struct config *base_config(void)
{
    snprintf(path, sizeof(path), "/tmp/remora-sds-fuzz-%d.json", (int)getpid());
    atexit(remove_file);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, k);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"fuzz", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (k == NULL || X509_sign(x, k, EVP_sha256()) == 0) {
        abort();
    }
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, k, NULL, NULL, 0, NULL, NULL);
    static char cert[4096], key[4096], doc[16384];
    json_pem(cb, cert, sizeof(cert));
    json_pem(kb, key, sizeof(key));
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(k);
    snprintf(doc, sizeof(doc),
             "{\"version_info\": \"0\", \"resources\": [{\"@type\": \"" SDS_TYPE_URL
             "\", \"name\": \"server\", \"tls_certificate\": {\"certificate_chain\": "
             "{\"inline_string\": \"%s\"}, \"private_key\": {\"inline_string\": \"%s\"}}}, "
             "{\"@type\": \"" SDS_TYPE_URL "\", \"name\": \"ca\", \"validation_context\": "
             "{\"trusted_ca\": {\"inline_string\": \"%s\"}}}]}",
             cert, key, cert);
    write_file(doc);
    static char text[4096];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {\"clusters\": [{\"name\": \"a\"}],"
             " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{"
             "\"name\": \"tcp\", \"typed_config\": {\"@type\": \"type.googleapis.com/"
             "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", \"stat_prefix\": \"t\", "
             "\"cluster\": \"a\"}}], \"transport_socket\": {\"name\": "
             "\"envoy.transport_sockets.tls\", \"typed_config\": {\"@type\": "
             "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
             "DownstreamTlsContext\", \"common_tls_context\": {"
             "\"tls_certificate_sds_secret_configs\": [{\"name\": \"server\", \"sds_config\": "
             "{\"path\": \"%s\"}}], \"validation_context_sds_secret_config\": {\"name\": \"ca\", "
             "\"sds_config\": {\"path\": \"%s\"}}}}}}]}]}}",
             path, path);
    struct err err;
    err_clear(&err);
    struct config *c = config_load_text(text, strlen(text), &err);
    if (c == NULL || c->n_sds != 2) {
        fprintf(stderr, "sds_fuzz: bootstrap: %s\n", err.msg);
        abort();
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config *base;
    if (base == NULL) {
        log_set_level(LOG_OFF);
        base = base_config(); /* lives for the process */
    }
    if (size > MAX_DOC) {
        return 0;
    }
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fwrite(data, 1, size, f);
    fclose(f);
    for (uint32_t idx = 0; idx < base->n_sds; idx++) {
        struct err err;
        err_clear(&err);
        Envoy__Extensions__TransportSockets__Tls__V3__Secret *s = NULL;
        char *version = NULL;
        int rv = sds_update(base, idx, &s, &version, &err);
        if (rv != 0 && !err_is_set(&err)) {
            abort(); /* a rejection without a reason */
        }
        if (rv == 0) {
            if (err_is_set(&err) || s == NULL || version == NULL) {
                abort();
            }
            protobuf_c_message_free_unpacked(&s->base, NULL);
            free(version);
        }
    }
    const struct tls_ctx *tc = base->listeners[0].chains[0].tls;
    X509 *x = SSL_CTX_get0_certificate(tc->ssl_ctx);
    EVP_PKEY *k = SSL_CTX_get0_privatekey(tc->ssl_ctx);
    if (x == NULL || k == NULL || X509_check_private_key(x, k) != 1 || tc->live->store == NULL) {
        abort(); /* an update left the context without whole material */
    }
    return 0;
}
