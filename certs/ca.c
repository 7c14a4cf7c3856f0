/* ca: the mesh CA (see ca.h), on OpenSSL 3's EVP and X509 interfaces. */
#include "certs/ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "proxy/core/file.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/tls.h"

#define CA_FILE_MAX (64 * 1024)
#define SKEW_S 60 /* notBefore this far in the past: clocks of the mesh's nodes differ */

struct mesh_ca {
    EVP_PKEY *key;
    X509 *cert;
    char *cert_pem;
    char td[TRUST_DOMAIN_MAX + 1];
};

/* Appends OpenSSL's last error, if any, to a message. */
static int fail(struct err *err, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof(buf));
    }
    ERR_clear_error();
    return err_set(err, NULL, "%s%s%s", what, e != 0 ? ": " : "", buf);
}

static bool td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int spiffe_check_trust_domain(const char *td, struct err *err)
{
    size_t n = strlen(td);
    if (n == 0 || n > TRUST_DOMAIN_MAX) {
        return err_set(err, NULL, "a trust domain has 1 to %d characters", TRUST_DOMAIN_MAX);
    }
    for (size_t i = 0; i < n; i++) {
        if (!td_char((unsigned char)td[i])) {
            return err_set(err, NULL,
                           "trust domain \"%s\": character %zu is not a lower-case letter, digit, "
                           "'.', '-' or '_'",
                           td, i + 1);
        }
    }
    return 0;
}

int spiffe_check_id(const char *id, const char *td, struct err *err)
{
    static const char scheme[] = "spiffe://";
    size_t n = strlen(id);
    if (n > SPIFFE_ID_MAX) {
        return err_set(err, NULL, "a SPIFFE ID has at most %d bytes", SPIFFE_ID_MAX);
    }
    if (strncmp(id, scheme, sizeof(scheme) - 1) != 0) {
        return err_set(err, NULL, "SPIFFE ID \"%s\" does not start with spiffe://", id);
    }
    const char *host = id + sizeof(scheme) - 1;
    const char *slash = strchr(host, '/');
    size_t hl = slash != NULL ? (size_t)(slash - host) : strlen(host);
    char tdb[TRUST_DOMAIN_MAX + 1];
    if (hl == 0 || hl > TRUST_DOMAIN_MAX) {
        return err_set(err, NULL, "SPIFFE ID \"%s\": the trust domain has 1 to %d characters", id,
                       TRUST_DOMAIN_MAX);
    }
    memcpy(tdb, host, hl);
    tdb[hl] = '\0';
    struct err e2;
    err_clear(&e2);
    if (spiffe_check_trust_domain(tdb, &e2) != 0) {
        return err_set(err, NULL, "SPIFFE ID \"%s\": %s (no port, user info or upper case)", id,
                       e2.msg);
    }
    if (td != NULL && strcmp(tdb, td) != 0) {
        return err_set(err, NULL, "SPIFFE ID \"%s\" is not in trust domain \"%s\"", id, td);
    }
    if (slash == NULL || slash[1] == '\0') {
        return err_set(
            err, NULL,
            "SPIFFE ID \"%s\" has no path: a workload's ID names it under the trust domain", id);
    }
    for (const char *p = slash; *p != '\0';) {
        const char *seg = ++p; /* past the '/' */
        while (*p != '\0' && *p != '/') {
            if (!path_char((unsigned char)*p)) {
                return err_set(err, NULL,
                               "SPIFFE ID \"%s\": character '%c' in the path (letters, digits, "
                               "'.', '-', '_' and "
                               "'/' only)",
                               id, *p);
            }
            p++;
        }
        size_t sl = (size_t)(p - seg);
        if (sl == 0 || (sl == 1 && seg[0] == '.') || (sl == 2 && seg[0] == '.' && seg[1] == '.')) {
            return err_set(err, NULL, "SPIFFE ID \"%s\": empty, '.' or '..' path segment", id);
        }
    }
    return 0;
}

static char *bio_string(BIO *b)
{
    char *data = NULL;
    long n = BIO_get_mem_data(b, &data);
    char *s = xmalloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

static char *cert_pem(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL || PEM_write_bio_X509(b, x) != 1) {
        BIO_free(b);
        return NULL;
    }
    char *s = bio_string(b);
    BIO_free(b);
    return s;
}

static char *key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL || PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1) {
        BIO_free(b);
        return NULL;
    }
    char *s = bio_string(b);
    BIO_free(b);
    return s;
}

/* Adds an extension written in OpenSSL's config syntax (constant strings only). */
static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (ext == NULL) {
        return false;
    }
    bool ok = X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok;
}

/* Adds a GENERAL_NAME of `type` holding `len` bytes of `data` (an IA5String for GEN_URI and
 * GEN_DNS, an OCTET STRING for GEN_IPADD) to `gns`. */
static bool push_name(GENERAL_NAMES *gns, int type, const void *data, size_t len)
{
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_STRING *v = type == GEN_IPADD ? ASN1_OCTET_STRING_new() : ASN1_IA5STRING_new();
    bool ok = gn != NULL && v != NULL && ASN1_STRING_set(v, data, (int)len) == 1;
    if (ok) {
        GENERAL_NAME_set0_value(gn, type, v);
        v = NULL;
        ok = sk_GENERAL_NAME_push(gns, gn) > 0;
        if (ok) {
            gn = NULL;
        }
    }
    ASN1_STRING_free(v);
    GENERAL_NAME_free(gn);
    return ok;
}

/* Adds a subjectAltName of one URI, then `n_hosts` DNS names or IP addresses (an IP literal is
 * an iPAddress, anything else a dNSName; checked by the caller), built as GENERAL_NAMEs (never
 * parsed from a config string, so no byte of a name can be taken for syntax). */
static bool add_sans(X509 *x, const char *uri, const char *const *hosts, size_t n_hosts)
{
    GENERAL_NAMES *gns = sk_GENERAL_NAME_new_null();
    bool ok = gns != NULL && push_name(gns, GEN_URI, uri, strlen(uri));
    for (size_t i = 0; ok && i < n_hosts; i++) {
        unsigned char ip[16];
        if (inet_pton(AF_INET, hosts[i], ip) == 1) {
            ok = push_name(gns, GEN_IPADD, ip, 4);
        } else if (inet_pton(AF_INET6, hosts[i], ip) == 1) {
            ok = push_name(gns, GEN_IPADD, ip, 16);
        } else {
            ok = push_name(gns, GEN_DNS, hosts[i], strlen(hosts[i]));
        }
    }
    ok = ok && X509_add1_ext_i2d(x, NID_subject_alt_name, gns, 0, X509V3_ADD_DEFAULT) == 1;
    GENERAL_NAMES_free(gns);
    return ok;
}

static bool add_uri_san(X509 *x, const char *uri)
{
    return add_sans(x, uri, NULL, 0);
}

/* A random positive serial of 127 bits (RFC 5280: at most 20 octets, positive). */
static bool set_serial(X509 *x, char hex[41])
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1) {
        return false;
    }
    b[0] &= 0x7f;
    b[0] |= 0x01; /* never a leading zero octet: always 16 bytes */
    BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    bool ok = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    if (ok && hex != NULL) {
        char *h = BN_bn2hex(bn);
        ok = h != NULL && strlen(h) < 41;
        if (ok) {
            strcpy(hex, h);
        }
        OPENSSL_free(h);
    }
    BN_free(bn);
    return ok;
}

static bool set_name(X509_NAME *n, const char *cn)
{
    return X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"remora", -1, -1,
                                      0) == 1 &&
           X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
                                      0) == 1;
}

struct mesh_ca *mesh_ca_create(const char *td, unsigned days, struct err *err)
{
    if (spiffe_check_trust_domain(td, err) != 0) {
        return NULL;
    }
    if (days == 0 || days > 36500) {
        err_set(err, NULL, "a CA is valid for 1 to 36500 days");
        return NULL;
    }
    struct mesh_ca *ca = xcalloc(1, sizeof(*ca));
    snprintf(ca->td, sizeof(ca->td), "%s", td);
    char uri[sizeof("spiffe://") + TRUST_DOMAIN_MAX];
    snprintf(uri, sizeof(uri), "spiffe://%s", td);
    char cn[TRUST_DOMAIN_MAX + 32];
    snprintf(cn, sizeof(cn), "remora mesh CA %s", td);
    time_t now = time(NULL);

    ca->key = EVP_EC_gen("P-256");
    ca->cert = X509_new();
    X509V3_CTX ctx;
    bool ok = ca->key != NULL && ca->cert != NULL &&
              X509_set_version(ca->cert, X509_VERSION_3) == 1 && set_serial(ca->cert, NULL) &&
              ASN1_TIME_set(X509_getm_notBefore(ca->cert), now - SKEW_S) != NULL &&
              ASN1_TIME_set(X509_getm_notAfter(ca->cert), now + (time_t)days * 86400) != NULL &&
              set_name(X509_get_subject_name(ca->cert), cn) &&
              X509_set_issuer_name(ca->cert, X509_get_subject_name(ca->cert)) == 1 &&
              X509_set_pubkey(ca->cert, ca->key) == 1;
    if (ok) {
        X509V3_set_ctx(&ctx, ca->cert, ca->cert, NULL, NULL, 0);
        ok = add_ext(ca->cert, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") &&
             add_ext(ca->cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign") &&
             add_ext(ca->cert, &ctx, NID_subject_key_identifier, "hash") &&
             add_ext(ca->cert, &ctx, NID_authority_key_identifier, "keyid:always") &&
             add_uri_san(ca->cert, uri) && X509_sign(ca->cert, ca->key, EVP_sha256()) > 0;
    }
    if (ok) {
        ca->cert_pem = cert_pem(ca->cert);
        ok = ca->cert_pem != NULL;
    }
    if (!ok) {
        fail(err, "making the CA certificate");
        mesh_ca_free(ca);
        return NULL;
    }
    return ca;
}

void mesh_ca_free(struct mesh_ca *ca)
{
    if (ca == NULL) {
        return;
    }
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    free(ca->cert_pem);
    free(ca);
}

const char *mesh_ca_trust_domain(const struct mesh_ca *ca)
{
    return ca->td;
}

const char *mesh_ca_cert_pem(const struct mesh_ca *ca)
{
    return ca->cert_pem;
}

static int write_file(const char *dir, const char *name, const char *data, unsigned mode,
                      struct err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path)) {
        return err_set(err, NULL, "%s/%s: path too long", dir, name);
    }
    int rc = file_write_atomic_mode(path, data, strlen(data), mode);
    if (rc != 0) {
        return err_set(err, NULL, "%s: %s", path, strerror(-rc));
    }
    return 0;
}

int mesh_ca_save(const struct mesh_ca *ca, const char *dir, struct err *err)
{
    char *k = key_pem(ca->key);
    if (k == NULL) {
        return fail(err, "writing the CA key");
    }
    int rc = write_file(dir, "ca.key", k, 0600, err);
    OPENSSL_cleanse(k, strlen(k));
    free(k);
    if (rc == 0) {
        rc = write_file(dir, "ca.pem", ca->cert_pem, 0644, err);
    }
    return rc;
}

/* The trust domain of a CA certificate: its URI SAN "spiffe://<td>", copied into `td`. */
static bool ca_trust_domain(X509 *x, char td[TRUST_DOMAIN_MAX + 1])
{
    GENERAL_NAMES *gns = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; gns != NULL && i < sk_GENERAL_NAME_num(gns) && !found; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, i);
        if (gn->type != GEN_URI) {
            continue;
        }
        const unsigned char *d = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        static const char scheme[] = "spiffe://";
        size_t sl = sizeof(scheme) - 1;
        if (n > (int)sl && n - (int)sl <= TRUST_DOMAIN_MAX && memcmp(d, scheme, sl) == 0 &&
            memchr(d, '\0', (size_t)n) == NULL) {
            memcpy(td, d + sl, (size_t)n - sl);
            td[n - (int)sl] = '\0';
            struct err e;
            err_clear(&e);
            found = spiffe_check_trust_domain(td, &e) == 0;
        }
    }
    GENERAL_NAMES_free(gns);
    return found;
}

struct mesh_ca *mesh_ca_load(const char *dir, struct err *err)
{
    char path[PATH_MAX];
    size_t len;
    struct mesh_ca *ca = xcalloc(1, sizeof(*ca));
    snprintf(path, sizeof(path), "%s/ca.pem", dir);
    ca->cert_pem = file_read(path, CA_FILE_MAX, &len);
    if (ca->cert_pem == NULL) {
        err_set(err, NULL, "%s: %s", path, strerror(errno));
        mesh_ca_free(ca);
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(ca->cert_pem, (int)len);
    ca->cert = b != NULL ? PEM_read_bio_X509(b, NULL, tls_no_password, NULL) : NULL;
    BIO_free(b);
    if (ca->cert == NULL) {
        fail(err, "ca.pem holds no PEM certificate");
        mesh_ca_free(ca);
        return NULL;
    }
    snprintf(path, sizeof(path), "%s/ca.key", dir);
    char *k = file_read(path, CA_FILE_MAX, &len);
    if (k == NULL) {
        err_set(err, NULL, "%s: %s", path, strerror(errno));
        mesh_ca_free(ca);
        return NULL;
    }
    b = BIO_new_mem_buf(k, (int)len);
    ca->key = b != NULL ? PEM_read_bio_PrivateKey(b, NULL, tls_no_password, NULL) : NULL;
    BIO_free(b);
    OPENSSL_cleanse(k, len);
    free(k);
    if (ca->key == NULL) {
        fail(err, "ca.key holds no PEM private key");
        mesh_ca_free(ca);
        return NULL;
    }
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        fail(err, "ca.key is not the key of ca.pem");
        mesh_ca_free(ca);
        return NULL;
    }
    if (X509_check_ca(ca->cert) == 0 || !ca_trust_domain(ca->cert, ca->td)) {
        ERR_clear_error();
        err_set(err, NULL,
                "%s/ca.pem is not a mesh CA (a CA certificate with a spiffe://<trust domain> SAN)",
                dir);
        mesh_ca_free(ca);
        return NULL;
    }
    return ca;
}

/* Issues a certificate (see mesh_ca_issue) whose SANs are the URI `uri` and `hosts`, with
 * extendedKeyUsage `eku` ("serverAuth,clientAuth", or "serverAuth"), common name `cn`. */
static int issue(const struct mesh_ca *ca, const char *uri, const char *const *hosts,
                 size_t n_hosts, const char *eku, const char *cn, uint64_t lifetime_s, time_t now,
                 struct svid *out, struct err *err)
{
    if (lifetime_s == 0 || lifetime_s > 36500ull * 86400) {
        return err_set(err, NULL, "a certificate's lifetime is 1 s to 36500 days");
    }
    time_t ca_end;
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(ca->cert), &tm) != 1) {
        return fail(err, "reading the CA's notAfter");
    }
    ca_end = timegm(&tm);
    time_t nb = now - SKEW_S;
    time_t na = now + (time_t)lifetime_s;
    if (na > ca_end) {
        na = ca_end; /* a certificate never outlives its issuer */
    }
    if (na <= now) {
        return err_set(err, NULL, "the CA has expired: issue a new CA");
    }
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    X509V3_CTX ctx;
    bool ok = key != NULL && x != NULL && X509_set_version(x, X509_VERSION_3) == 1 &&
              set_serial(x, out->serial_hex) && ASN1_TIME_set(X509_getm_notBefore(x), nb) != NULL &&
              ASN1_TIME_set(X509_getm_notAfter(x), na) != NULL &&
              set_name(X509_get_subject_name(x), cn) &&
              X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) == 1 &&
              X509_set_pubkey(x, key) == 1;
    if (ok) {
        X509V3_set_ctx(&ctx, ca->cert, x, NULL, NULL, 0);
        ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE") &&
             add_ext(x, &ctx, NID_key_usage, "critical,digitalSignature") &&
             add_ext(x, &ctx, NID_ext_key_usage, eku) &&
             add_ext(x, &ctx, NID_subject_key_identifier, "hash") &&
             add_ext(x, &ctx, NID_authority_key_identifier, "keyid:always") &&
             add_sans(x, uri, hosts, n_hosts) && X509_sign(x, ca->key, EVP_sha256()) > 0;
    }
    if (ok) {
        out->cert_pem = cert_pem(x);
        out->key_pem = key_pem(key);
        ok = out->cert_pem != NULL && out->key_pem != NULL;
    }
    X509_free(x);
    EVP_PKEY_free(key);
    if (!ok) {
        svid_free(out);
        return fail(err, "issuing the certificate");
    }
    out->not_before = nb;
    out->not_after = na;
    return 0;
}

int mesh_ca_issue(const struct mesh_ca *ca, const char *spiffe_id, uint64_t lifetime_s, time_t now,
                  struct svid *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    if (spiffe_check_id(spiffe_id, ca->td, err) != 0) {
        return -EINVAL;
    }
    /* The subject names the workload for people reading it; peers check the SAN. */
    char cn[65];
    const char *last = strrchr(spiffe_id, '/');
    snprintf(cn, sizeof(cn), "%s", last != NULL ? last + 1 : spiffe_id);
    return issue(ca, spiffe_id, NULL, 0, "serverAuth,clientAuth", cn, lifetime_s, now, out, err);
}

int mesh_ca_check_host(const char *host, struct err *err)
{
    unsigned char ip[16];
    if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
        return 0;
    }
    size_t n = strlen(host);
    if (n == 0 || n > 253) {
        return err_set(err, NULL, "\"%s\": a DNS name is 1-253 bytes", host);
    }
    size_t label = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = host[i];
        if (c == '.' || c == '\0') {
            if (label == 0 || label > 63 || host[i - 1] == '-') {
                return err_set(err, NULL, "\"%s\" is not a DNS name or an IP address", host);
            }
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c == '-' && label > 0);
        if (!ok) {
            return err_set(err, NULL, "\"%s\" is not a DNS name or an IP address", host);
        }
        label++;
    }
    return 0;
}

int mesh_ca_issue_server(const struct mesh_ca *ca, const char *const *hosts, size_t n_hosts,
                         uint64_t lifetime_s, time_t now, struct svid *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    if (n_hosts == 0) {
        return err_set(err, NULL, "a server certificate needs a DNS name or an IP address");
    }
    for (size_t i = 0; i < n_hosts; i++) {
        if (mesh_ca_check_host(hosts[i], err) != 0) {
            return -EINVAL;
        }
    }
    char uri[TRUST_DOMAIN_MAX + 40];
    snprintf(uri, sizeof(uri), "spiffe://%s/" MESH_CA_SERVER_PATH, ca->td);
    char cn[65];
    snprintf(cn, sizeof(cn), "%s", hosts[0]);
    return issue(ca, uri, hosts, n_hosts, "serverAuth", cn, lifetime_s, now, out, err);
}

void svid_free(struct svid *s)
{
    if (s->key_pem != NULL) {
        OPENSSL_cleanse(s->key_pem, strlen(s->key_pem));
    }
    free(s->key_pem);
    free(s->cert_pem);
    s->key_pem = s->cert_pem = NULL;
}

bool mesh_ca_signed(const struct mesh_ca *ca, const char *pem, const char *spiffe_id)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, tls_no_password, NULL) : NULL;
    BIO_free(b);
    bool ok = x != NULL && X509_verify(x, X509_get0_pubkey(ca->cert)) == 1;
    GENERAL_NAMES *gns = ok ? X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL) : NULL;
    int uris = 0;
    bool match = false;
    for (int i = 0; gns != NULL && i < sk_GENERAL_NAME_num(gns); i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, i);
        if (gn->type == GEN_URI) {
            uris++;
            size_t n = (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            match =
                n == strlen(spiffe_id) &&
                memcmp(ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier), spiffe_id, n) == 0;
        }
    }
    GENERAL_NAMES_free(gns);
    X509_free(x);
    ERR_clear_error();
    return ok && uris == 1 && match;
}

int pem_cert_validity(const char *pem, time_t *not_before, time_t *not_after)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = b != NULL ? PEM_read_bio_X509(b, NULL, tls_no_password, NULL) : NULL;
    BIO_free(b);
    struct tm t1, t2;
    int rc = x != NULL && ASN1_TIME_to_tm(X509_get0_notBefore(x), &t1) == 1 &&
                     ASN1_TIME_to_tm(X509_get0_notAfter(x), &t2) == 1
                 ? 0
                 : -1;
    X509_free(x);
    ERR_clear_error();
    if (rc == 0) {
        *not_before = timegm(&t1);
        *not_after = timegm(&t2);
    }
    return rc;
}

static json_t *secret(const char *name)
{
    return json_pack("{s:s, s:s}", "@type",
                     "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name",
                     name);
}

char *sds_secret_json(const struct svid *s, const char *ca_pem, const char *cert_name,
                      const char *ca_name, const char *version)
{
    json_t *cert = secret(cert_name);
    json_object_set_new(cert, "tls_certificate",
                        json_pack("{s:{s:s}, s:{s:s}}", "certificate_chain", "inline_string",
                                  s->cert_pem, "private_key", "inline_string", s->key_pem));
    json_t *ca = secret(ca_name);
    json_object_set_new(ca, "validation_context",
                        json_pack("{s:{s:s}}", "trusted_ca", "inline_string", ca_pem));
    json_t *doc = json_pack("{s:s, s:[o, o]}", "version_info", version, "resources", cert, ca);
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (text == NULL) {
        abort(); /* jansson fails only when out of memory */
    }
    return text;
}
