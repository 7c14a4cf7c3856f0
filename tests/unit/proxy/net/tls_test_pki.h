/* A throwaway PKI for the TLS unit tests (build_tls_test.c, tls_verify_test.c): EC P-256 keys
 * and X.509 certificates made with the OpenSSL API at test time (valid from an hour ago for a
 * day, so nothing on disk ever expires), written as PEM into a fresh temporary directory that
 * becomes the working directory, and a bootstrap builder with one TLS filter chain and one
 * TLS cluster. Test code only. */
#pragma once

#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"

/* One subjectAltName entry: GEN_DNS, GEN_URI, GEN_EMAIL (value, `len` bytes: may hold a NUL)
 * or GEN_IPADD (value is the address text). */
struct pki_san {
    int type;
    const char *value;
    size_t len; /* 0: strlen(value) */
};

static inline EVP_PKEY *pki_key(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL) {
        abort();
    }
    return k;
}

static inline void pki_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (e == NULL || X509_add_ext(x, e, -1) != 1) {
        abort();
    }
    X509_EXTENSION_free(e);
}

/* A certificate for `key` named `cn`, signed by `issuer`/`issuer_key` (NULL: self-signed), a CA
 * when `ca`, with SANs `sans[0..n)`. */
static inline X509 *pki_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key,
                             bool ca, const struct pki_san *sans, size_t n)
{
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    unsigned char serial[8];
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    BN_free(bn);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    pki_ext(x, issuer, NID_basic_constraints, ca ? "critical,CA:TRUE" : "critical,CA:FALSE");
    pki_ext(x, issuer, NID_key_usage,
            ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature");
    pki_ext(x, issuer, NID_subject_key_identifier, "hash");
    if (n > 0) {
        GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();
        for (size_t i = 0; i < n; i++) {
            GENERAL_NAME *gn = GENERAL_NAME_new();
            ASN1_STRING *s;
            if (sans[i].type == GEN_IPADD) {
                unsigned char ip[16];
                int len = 4;
                if (inet_pton(AF_INET, sans[i].value, ip) != 1) {
                    len = 16;
                    if (inet_pton(AF_INET6, sans[i].value, ip) != 1) {
                        abort();
                    }
                }
                s = ASN1_OCTET_STRING_new();
                ASN1_STRING_set(s, ip, len);
            } else {
                s = ASN1_IA5STRING_new();
                size_t len = sans[i].len != 0 ? sans[i].len : strlen(sans[i].value);
                ASN1_STRING_set(s, sans[i].value, (int)len); /* explicit length: NULs kept */
            }
            GENERAL_NAME_set0_value(gn, sans[i].type, s);
            sk_GENERAL_NAME_push(gns, gn);
        }
        X509_add1_ext_i2d(x, NID_subject_alt_name, gns, 0, X509V3_ADD_DEFAULT);
        GENERAL_NAMES_free(gns);
    }
    if (X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256()) == 0) {
        abort();
    }
    return x;
}

static inline void pki_write(const char *path, const char *data)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(data, f) < 0 || fclose(f) != 0) {
        abort();
    }
}

/* PEM text of a certificate or key, as a new heap string. */
static inline char *pki_pem_cert(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

static inline char *pki_pem_key(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = strndup(p, (size_t)n);
    BIO_free(b);
    return s;
}

static inline void pki_write_cert(const char *path, X509 *x)
{
    char *s = pki_pem_cert(x);
    pki_write(path, s);
    free(s);
}

static inline void pki_write_key(const char *path, EVP_PKEY *k)
{
    char *s = pki_pem_key(k);
    pki_write(path, s);
    free(s);
}

/* Makes a temporary directory and enters it; returns its path (static). */
static inline const char *pki_enter_tmpdir(void)
{
    static char dir[64];
    snprintf(dir, sizeof(dir), "/tmp/remora-tls-test-XXXXXX");
    if (mkdtemp(dir) == NULL || chdir(dir) != 0) {
        abort();
    }
    return dir;
}

/* Leaves and removes the directory pki_enter_tmpdir made (its files are plain files). */
static inline void pki_leave_tmpdir(const char *dir, const char *const *files)
{
    for (size_t i = 0; files[i] != NULL; i++) {
        unlink(files[i]);
    }
    if (chdir("/") == 0) {
        rmdir(dir);
    }
}

#define PKI_DS_TYPE                                                                                \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define PKI_US_TYPE                                                                                \
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"

/* A bootstrap (JSON) with one listener whose one filter chain is a TCP proxy to cluster
 * "backend", plus `chain` (appended to the chain object: ", \"transport_socket\": {...}"),
 * and that cluster, plus `cluster` (appended to the cluster object). Returns the snapshot or
 * NULL with the error in `e`. */
static inline struct config *pki_load(const char *chain, const char *cluster, struct err *e)
{
    static const char fmt[] =
        "{\"static_resources\": {"
        " \"clusters\": [{\"name\": \"backend\", \"connect_timeout\": \"1s\" %s,"
        "  \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{\"lb_endpoints\": "
        "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 8080}}}}]}]}}],"
        " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 10000}},"
        "  \"filter_chains\": [{\"filters\": [{\"name\": \"tcp\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "
        "\"stat_prefix\": \"t\", \"cluster\": \"backend\"}}] %s}]}]}}";
    size_t n = sizeof(fmt) + strlen(chain) + strlen(cluster);
    char *text = malloc(n);
    snprintf(text, n, fmt, cluster, chain);
    err_clear(e);
    struct config *c = config_load_text(text, strlen(text), e);
    free(text);
    return c;
}

/* pki_load, failing the test with the error when the config does not load. */
static inline struct config *pki_must_load(const char *chain, const char *cluster)
{
    struct err e;
    struct config *c = pki_load(chain, cluster, &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    return c;
}
