/* build_tls: TransportSocket -> struct tls_ctx (see build_tls.h). Envoy's rules, from
 * api/envoy/extensions/transport_sockets/tls/v3/{tls,common}.proto and
 * source/common/tls/{context_config_impl,server_context_config_impl,context_impl,
 * server_context_impl}.cc and cert_validator/default_validator.cc:
 *   - versions: minimum TLSv1_2 on both sides; maximum TLSv1_3 for servers and TLSv1_2 for
 *     clients (ClientContextConfigImpl::DEFAULT_MAX_VERSION);
 *   - TLS 1.2 ciphers: Envoy's default list for OpenSSL builds (its BoringSSL list with the
 *     [A|B] equal-preference groups flattened, in order, as Envoy's SSL_SELECT does); TLS 1.3
 *     suites are OpenSSL's defaults (Envoy cannot configure them either); groups X25519:P-256;
 *   - a server needs a certificate; a client at most one;
 *   - trusted_ca: the peer is verified (SSL_VERIFY_PEER), X509_V_FLAG_PARTIAL_CHAIN set (an
 *     intermediate in trusted_ca is a trust anchor), and a server sends the CA names in its
 *     CertificateRequest; SAN matchers also require a peer certificate (as Envoy: on a server
 *     that means SSL_VERIFY_FAIL_IF_NO_PEER_CERT even without require_client_certificate);
 *   - a client without a validation context accepts any server certificate;
 *   - server ALPN: the server's order wins (SSL_select_next_proto with the server list first),
 *     no overlap continues without ALPN.
 * Deliberate differences, each rejected with its path instead of being accepted: SAN matchers
 * without trusted_ca (Envoy then checks the SANs of an unverified certificate),
 * require_client_certificate without trusted_ca (Envoy then requests no certificate), both
 * match_typed_subject_alt_names and match_subject_alt_names (Envoy ignores the latter), CRLs
 * inside trusted_ca, and the BoringSSL-only [A|B] cipher syntax. */
#include "proxy/config/build_tls.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/type/matcher/v3/regex.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/fpath.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/config/sds.h"
#include "proxy/core/file.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/regex.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"

#define PbTransportSocket Envoy__Config__Core__V3__TransportSocket
#define PbDataSource Envoy__Config__Core__V3__DataSource
#define PbAny Google__Protobuf__Any
#define PbDownstream Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext
#define PbUpstream Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext
#define PbCommon Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext
#define PbTlsParams Envoy__Extensions__TransportSockets__Tls__V3__TlsParameters
#define PbTlsCert Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate
#define PbValidation Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext
#define PbSanMatcher Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher
#define PbStringMatcher Envoy__Type__Matcher__V3__StringMatcher
#define PbSecret Envoy__Extensions__TransportSockets__Tls__V3__Secret
#define PbSdsSecretConfig Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig
#define PbCombined                                                                                 \
    Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext

#define DOWNSTREAM_DESC                                                                            \
    envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor
#define UPSTREAM_DESC                                                                              \
    envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor
#define RAW_BUFFER_DESC envoy__extensions__transport_sockets__raw_buffer__v3__raw_buffer__descriptor
#define TLS_PROTOCOL_DESC                                                                          \
    envoy__extensions__transport_sockets__tls__v3__tls_parameters__tls_protocol__descriptor
#define SAN_TYPE_DESC                                                                              \
    envoy__extensions__transport_sockets__tls__v3__subject_alt_name_matcher__san_type__descriptor

/* CommonTlsContext.validation_context_type (a oneof: the members share their storage) */
#define VC_STATIC                                                                                  \
    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT
#define VC_SDS                                                                                     \
    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG
#define VC_COMBINED                                                                                \
    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT

#define TLS_NAME "envoy.transport_sockets.tls"
#define RAW_BUFFER_NAME "envoy.transport_sockets.raw_buffer"
#define UNSUPPORTED "not supported by remora yet"

/* The largest PEM file read (a CA bundle of a few hundred certificates fits). */
#define PEM_MAX (4 * 1024 * 1024)
#define MAX_VERIFY_DEPTH 100 /* CertificateValidationContext.max_verify_depth: lte 100 */
#define SNI_MAX 255

/* Envoy's defaults (see the file comment). */
#define DEFAULT_CIPHERS                                                                            \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"                                 \
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"                                     \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
#define DEFAULT_CURVES "X25519:P-256"
#define DEFAULT_MIN_VERSION TLS1_2_VERSION
#define DEFAULT_SERVER_MAX_VERSION TLS1_3_VERSION
#define DEFAULT_CLIENT_MAX_VERSION TLS1_2_VERSION

/* ---- build context and field paths (fpath.c) ---- */

struct tb {
    struct config *c;
    struct err *err;
    struct fpath fp;
    uint64_t hash;    /* FNV-1a of the settings and file contents */
    SSL_CTX *scratch; /* for trying cipher and curve names one by one; NULL until needed */
};

__attribute__((format(printf, 2, 3))) static size_t at(struct tb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = fpath_vpush(&b->fp, fmt, ap);
    va_end(ap);
    return old;
}

static void up(struct tb *b, size_t mark)
{
    fpath_pop(&b->fp, mark);
}

__attribute__((format(printf, 3, 4))) static int fail_at(struct tb *b, const char *field,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fpath_vfail(&b->fp, b->err, field, fmt, ap);
    va_end(ap);
    return rc;
}

static int unsupported(struct tb *b, const char *field)
{
    return fail_at(b, field, UNSUPPORTED);
}

/* Rejects the first field of `m` that is set and not in `supported`. */
static int only(struct tb *b, const ProtobufCMessage *m, const char *const *supported)
{
    const char *f = pbjson_first_set_field(m, supported);
    return f != NULL ? unsupported(b, f) : 0;
}

static void hash_add(struct tb *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        b->hash ^= s[i];
        b->hash *= 0x100000001b3ULL;
    }
}

static void hash_str(struct tb *b, const char *s)
{
    hash_add(b, s, strlen(s) + 1);
}

static void free_ssl_ctx(void *p)
{
    SSL_CTX_free(p);
}

/* ---- DataSource ---- */

/* Reads DataSource `ds` (field `field` of the current path) into a new heap buffer
 * (NUL-terminated, the NUL not counted). The caller frees it (OPENSSL_clear_free for keys). */
static int read_source(struct tb *b, const char *field, const PbDataSource *ds, char **out,
                       size_t *len)
{
    if (ds == NULL) {
        return fail_at(b, field, "required");
    }
    size_t mark = at(b, ".%s", field);
    int rc = 0;
    *out = NULL;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        *out = file_read(ds->filename, PEM_MAX, len);
        if (*out == NULL) {
            rc =
                errno == EFBIG
                    ? fail_at(b, "filename", "'%s' is larger than %d bytes", ds->filename, PEM_MAX)
                    : fail_at(b, "filename", "cannot read '%s': %s", ds->filename, strerror(errno));
        }
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        if (ds->inline_bytes.len > PEM_MAX) {
            rc = fail_at(b, "inline_bytes", "larger than %d bytes", PEM_MAX);
            break;
        }
        *len = ds->inline_bytes.len;
        *out = xmalloc(*len + 1);
        if (*len > 0) {
            memcpy(*out, ds->inline_bytes.data, *len);
        }
        (*out)[*len] = '\0';
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        *len = strlen(ds->inline_string);
        if (*len > PEM_MAX) {
            rc = fail_at(b, "inline_string", "larger than %d bytes", PEM_MAX);
            break;
        }
        *out = xmalloc(*len + 1);
        memcpy(*out, ds->inline_string, *len + 1);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        rc = unsupported(b, "environment_variable");
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET:
    default:
        rc = fail_at(b, NULL, "one of filename, inline_bytes, inline_string is required");
        break;
    }
    up(b, mark);
    return rc;
}

/* The description of a DataSource for messages: "'/etc/x.pem'" or "the inline PEM". */
static const char *source_name(const PbDataSource *ds, char *buf, size_t n)
{
    if (ds->specifier_case == ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME) {
        snprintf(buf, n, "'%s'", ds->filename);
    } else {
        snprintf(buf, n, "the inline data");
    }
    return buf;
}

/* ---- PEM: bytes to OpenSSL objects (startup and SDS updates alike) ---- */

/* A certificate chain: the leaf first, then intermediates. Returns NULL, or what is wrong. */
static const char *pem_chain(const char *pem, size_t len, X509 **leaf, STACK_OF(X509) * *chain)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    const char *bad = NULL;
    *leaf = PEM_read_bio_X509_AUX(bio, NULL, tls_no_password, NULL);
    *chain = sk_X509_new_null();
    if (*leaf == NULL) {
        bad = "no PEM certificate";
    }
    while (bad == NULL) {
        X509 *x = PEM_read_bio_X509(bio, NULL, tls_no_password, NULL);
        if (x == NULL) {
            break;
        }
        sk_X509_push(*chain, x);
    }
    /* The loop ends at "no start line" (the end of the data); anything else is a bad PEM. */
    unsigned long e = ERR_peek_last_error();
    if (bad == NULL && e != 0 &&
        !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        bad = "malformed PEM certificate after the first";
    }
    ERR_clear_error();
    BIO_free(bio);
    return bad;
}

/* A private key. Returns NULL, or what is wrong. */
static const char *pem_key(const char *pem, size_t len, EVP_PKEY **key)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    *key = PEM_read_bio_PrivateKey(bio, NULL, tls_no_password, NULL);
    BIO_free(bio);
    ERR_clear_error();
    return *key == NULL ? "no PEM private key" : NULL;
}

/* trusted_ca: every certificate becomes a trust anchor of a new store (X509_V_FLAG_PARTIAL_CHAIN:
 * an intermediate is an anchor too, as Envoy), and its subject joins `names` (a server's
 * CertificateRequest list). Returns NULL, or what is wrong. */
static const char *pem_cas(const char *pem, size_t len, X509_STORE **store,
                           STACK_OF(X509_NAME) * *names)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(bio, NULL, tls_no_password, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (infos == NULL) {
        return "malformed PEM";
    }
    const char *bad = NULL;
    *store = X509_STORE_new();
    *names = sk_X509_NAME_new_null();
    int n = 0;
    for (int i = 0; i < sk_X509_INFO_num(infos) && bad == NULL; i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);
        if (info->crl != NULL) {
            bad = "a CRL"; /* "a CRL in 'x': CRLs are not supported", below */
        } else if (info->x509 != NULL) {
            X509_STORE_add_cert(*store, info->x509);
            sk_X509_NAME_push(*names, X509_NAME_dup(X509_get_subject_name(info->x509)));
            n++;
        }
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    ERR_clear_error();
    if (bad == NULL && n == 0) {
        bad = "no PEM certificate";
    }
    X509_STORE_set_flags(*store, X509_V_FLAG_PARTIAL_CHAIN);
    return bad;
}

/* ---- certificates and trust ---- */

/* A TlsCertificate (tls_certificates[0], or an SDS secret's tls_certificate): the chain and its
 * key, read and checked to match, into m->leaf, m->chain, m->key. */
static int cert_material(struct tb *b, const PbTlsCert *tc, struct tls_material *m)
{
    static const char *const supported[] = {"certificate_chain", "private_key", NULL};
    int rc = only(b, &tc->base, supported);
    if (rc != 0) {
        return rc;
    }
    if (tc->certificate_chain == NULL) {
        return fail_at(b, "certificate_chain", "required");
    }
    if (tc->private_key == NULL) {
        return fail_at(b, "private_key", "required");
    }
    char *pem = NULL;
    char *key = NULL;
    size_t len = 0;
    size_t key_len = 0;
    char what[300];
    const char *bad;
    if ((rc = read_source(b, "certificate_chain", tc->certificate_chain, &pem, &len)) != 0) {
        return rc;
    }
    hash_add(b, pem, len);
    if ((bad = pem_chain(pem, len, &m->leaf, &m->chain)) != NULL) {
        rc = fail_at(b, "certificate_chain", "%s in %s", bad,
                     source_name(tc->certificate_chain, what, sizeof(what)));
        goto out;
    }
    if ((rc = read_source(b, "private_key", tc->private_key, &key, &key_len)) != 0) {
        goto out;
    }
    if ((bad = pem_key(key, key_len, &m->key)) != NULL) {
        rc = fail_at(b, "private_key",
                     "%s in %s (an encrypted key needs `password`, which is "
                     "not supported by remora yet)",
                     bad, source_name(tc->private_key, what, sizeof(what)));
        goto out;
    }
    if (X509_check_private_key(m->leaf, m->key) != 1) {
        rc = fail_at(b, "private_key", "does not match the certificate in certificate_chain");
    }
out:
    free(pem);
    if (key != NULL) {
        OPENSSL_clear_free(key, key_len);
    }
    ERR_clear_error();
    return rc;
}

/* tls_certificates[0] into the SSL_CTX. */
static int certificate(struct tb *b, SSL_CTX *ctx, const PbTlsCert *tc)
{
    struct tls_material m = {0};
    int rc = cert_material(b, tc, &m);
    if (rc == 0 && SSL_CTX_use_cert_and_key(ctx, m.leaf, m.key, m.chain, 1) != 1) {
        char what[300];
        rc = fail_at(b, "certificate_chain", "the certificate in %s cannot be used (%s)",
                     source_name(tc->certificate_chain, what, sizeof(what)),
                     ERR_reason_error_string(ERR_peek_last_error()));
    }
    tls_material_free(&m);
    ERR_clear_error();
    return rc;
}

/* A trusted_ca DataSource into m->store and m->ca. */
static int ca_material(struct tb *b, const PbDataSource *ds, struct tls_material *m)
{
    char *pem = NULL;
    size_t len = 0;
    char what[300];
    int rc = read_source(b, "trusted_ca", ds, &pem, &len);
    if (rc != 0) {
        return rc;
    }
    hash_add(b, pem, len);
    const char *bad = pem_cas(pem, len, &m->store, &m->ca);
    free(pem);
    if (bad != NULL) {
        return fail_at(b, "trusted_ca", "%s in %s%s", bad, source_name(ds, what, sizeof(what)),
                       strcmp(bad, "a CRL") == 0 ? ": CRLs are " UNSUPPORTED : "");
    }
    return 0;
}

/* validation_context.trusted_ca: the SSL_CTX's trust store. A server also names the CAs in its
 * CertificateRequest (Envoy's addClientValidationContext). */
static int trusted_ca(struct tb *b, SSL_CTX *ctx, const PbDataSource *ds, bool server)
{
    struct tls_material m = {0};
    int rc = ca_material(b, ds, &m);
    if (rc == 0) {
        SSL_CTX_set_cert_store(ctx, m.store); /* takes the store */
        m.store = NULL;
        if (server) {
            SSL_CTX_set_client_CA_list(ctx, m.ca); /* takes the list */
            m.ca = NULL;
        }
    }
    tls_material_free(&m);
    return rc;
}

/* ---- SAN matchers ---- */

static int san_string(struct tb *b, const PbStringMatcher *sm, struct tls_san_matcher *m)
{
    if (build_string_match(b->c, b->fp.p, sm, &m->m, b->err) != 0) {
        return -EINVAL;
    }
    hash_add(b, &m->m.kind, sizeof(m->m.kind));
    hash_add(b, &m->m.ignore_case, sizeof(m->m.ignore_case));
    hash_add(b, m->m.value.p, m->m.value.len + 1);
    return 0;
}

static int san_matchers(struct tb *b, const PbValidation *v, struct tls_ctx *tc)
{
    size_t n = v->n_match_typed_subject_alt_names + v->n_match_subject_alt_names;
    if (n == 0) {
        return 0;
    }
    if (v->n_match_typed_subject_alt_names > 0 && v->n_match_subject_alt_names > 0) {
        return fail_at(b, "match_subject_alt_names",
                       "cannot be used with match_typed_subject_alt_names (Envoy ignores it then)");
    }
    struct tls_san_matcher *ms = ARENA_NEW_N(&b->c->arena, struct tls_san_matcher, n);
    int rc = 0;
    for (size_t i = 0; i < v->n_match_typed_subject_alt_names && rc == 0; i++) {
        const PbSanMatcher *pm = v->match_typed_subject_alt_names[i];
        size_t mark = at(b, ".match_typed_subject_alt_names[%zu]", i);
        switch (pm->san_type) {
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS:
            ms[i].type = TLS_SAN_DNS;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI:
            ms[i].type = TLS_SAN_URI;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__EMAIL:
            ms[i].type = TLS_SAN_EMAIL;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__IP_ADDRESS:
            ms[i].type = TLS_SAN_IP;
            break;
        case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__SAN_TYPE_UNSPECIFIED:
            rc = fail_at(b, "san_type", "required: DNS, URI, EMAIL or IP_ADDRESS");
            break;
        default: {
            const ProtobufCEnumValue *ev =
                protobuf_c_enum_descriptor_get_value(&SAN_TYPE_DESC, (int)pm->san_type);
            rc = fail_at(b, "san_type", "%s is " UNSUPPORTED, ev != NULL ? ev->name : "?");
            break;
        }
        }
        if (rc == 0 && pm->oid != NULL && pm->oid[0] != '\0') {
            rc = unsupported(b, "oid");
        }
        if (rc == 0 && pm->matcher == NULL) {
            rc = fail_at(b, "matcher", "required");
        }
        if (rc == 0) {
            size_t m2 = at(b, ".matcher");
            rc = san_string(b, pm->matcher, &ms[i]);
            up(b, m2);
            hash_add(b, &ms[i].type, sizeof(ms[i].type));
        }
        up(b, mark);
    }
    for (size_t i = 0; i < v->n_match_subject_alt_names && rc == 0; i++) {
        size_t mark = at(b, ".match_subject_alt_names[%zu]", i);
        ms[i].type = TLS_SAN_ANY; /* Envoy: one matcher per DNS, URI, EMAIL, IP_ADDRESS */
        rc = san_string(b, v->match_subject_alt_names[i], &ms[i]);
        up(b, mark);
    }
    if (rc != 0) {
        return rc;
    }
    struct tls_san_matchers *sans = ARENA_NEW(&b->c->arena, struct tls_san_matchers);
    sans->v = ms;
    sans->n = (uint32_t)n;
    tc->sans = sans;
    return 0;
}

/* common_tls_context.validation_context. Sets *has_ca when trusted_ca was loaded. */
static int validation(struct tb *b, SSL_CTX *ctx, const PbValidation *v, struct tls_ctx *tc,
                      bool *has_ca)
{
    static const char *const supported[] = {"trusted_ca", "match_typed_subject_alt_names",
                                            "match_subject_alt_names", "max_verify_depth", NULL};
    int rc = only(b, &v->base, supported);
    if (rc == 0 && v->trusted_ca != NULL) {
        rc = trusted_ca(b, ctx, v->trusted_ca, tc->server);
        *has_ca = rc == 0;
    }
    if (rc == 0) {
        rc = san_matchers(b, v, tc);
    }
    if (rc == 0 && tc->sans != NULL && !*has_ca) {
        rc = fail_at(b,
                     v->n_match_typed_subject_alt_names > 0 ? "match_typed_subject_alt_names"
                                                            : "match_subject_alt_names",
                     "needs trusted_ca: the SANs of a certificate that is not verified prove "
                     "nothing (Envoy accepts this)");
    }
    if (rc == 0 && v->max_verify_depth != NULL) {
        if (v->max_verify_depth->value > MAX_VERIFY_DEPTH) {
            rc = fail_at(b, "max_verify_depth", "must be at most %d", MAX_VERIFY_DEPTH);
        } else {
            SSL_CTX_set_verify_depth(ctx, (int)v->max_verify_depth->value);
            hash_add(b, &v->max_verify_depth->value, sizeof(v->max_verify_depth->value));
        }
    }
    return rc;
}

/* ---- TLS parameters ---- */

static const char *version_name(int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(&TLS_PROTOCOL_DESC, v);
    return ev != NULL ? ev->name : "?";
}

/* A TlsProtocol value as an OpenSSL version; TLS_AUTO gives `dflt`; 0 for an unknown value,
 * -1 for TLSv1_0 and TLSv1_1: Envoy (BoringSSL) can speak them, but OpenSSL 3 refuses them at
 * its default security level, so accepting them would change nothing. */
static int tls_version(int v, int dflt)
{
    switch (v) {
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLS_AUTO:
        return dflt;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_0:
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_1:
        return -1;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_2:
        return TLS1_2_VERSION;
    case ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_PARAMETERS__TLS_PROTOCOL__TLSv1_3:
        return TLS1_3_VERSION;
    default:
        return 0;
    }
}

/* Checks a version field's value (see tls_version). */
static int check_version(struct tb *b, const char *field, int pb, int v)
{
    if (v == 0) {
        return fail_at(b, field, "unknown value %d", pb);
    }
    if (v < 0) {
        return fail_at(b, field, "%s is " UNSUPPORTED " (OpenSSL 3 refuses TLS below 1.2)",
                       version_name(pb));
    }
    return 0;
}

static SSL_CTX *scratch(struct tb *b)
{
    if (b->scratch == NULL) {
        b->scratch = SSL_CTX_new(TLS_method());
    }
    return b->scratch;
}

/* Joins a repeated string into "a:b:c" (each entry checked by `valid` on the scratch context;
 * `what` names an entry in messages). Returns a new heap string or NULL after an error. */
static char *name_list(struct tb *b, const char *field, char *const *v, size_t n, const char *what,
                       int (*valid)(SSL_CTX *, const char *))
{
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        total += strlen(v[i]) + 1;
    }
    char *list = xmalloc(total);
    list[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char idx[32];
        snprintf(idx, sizeof(idx), "%s[%zu]", field, i);
        if (v[i][0] == '\0') {
            fail_at(b, idx, "must not be empty");
            goto fail;
        }
        if (strpbrk(v[i], "[]|") != NULL) {
            fail_at(b, idx,
                    "'%s': the [A|B] equal-preference syntax is BoringSSL's and is " UNSUPPORTED
                    " (list the names one by one)",
                    v[i]);
            goto fail;
        }
        /* Envoy joins the entries with ':', so an entry may hold several names: each one must
         * be known on its own (OpenSSL would quietly skip the unknown ones of a list). */
        SSL_CTX *s = scratch(b);
        for (const char *p = v[i]; s != NULL;) {
            size_t l = strcspn(p, ":");
            char one[128];
            snprintf(one, sizeof(one), "%.*s", (int)l, p);
            if (l == 0 || l >= sizeof(one) || valid(s, one) != 1) {
                ERR_clear_error();
                fail_at(b, idx, "unknown %s '%.*s'", what, (int)l, p);
                goto fail;
            }
            if (p[l] == '\0') {
                break;
            }
            p += l + 1;
        }
        if (s == NULL) {
            fail_at(b, idx, "OpenSSL could not make a context");
            goto fail;
        }
        if (i > 0) {
            strcat(list, ":");
        }
        strcat(list, v[i]);
    }
    return list;
fail:
    free(list);
    return NULL;
}

static int valid_cipher(SSL_CTX *s, const char *name)
{
    return SSL_CTX_set_cipher_list(s, name);
}

static int valid_curve(SSL_CTX *s, const char *name)
{
    return SSL_CTX_set1_groups_list(s, name);
}

static int tls_params(struct tb *b, SSL_CTX *ctx, const PbTlsParams *p, bool server)
{
    int dmax = server ? DEFAULT_SERVER_MAX_VERSION : DEFAULT_CLIENT_MAX_VERSION;
    int vmin = DEFAULT_MIN_VERSION;
    int vmax = dmax;
    char *ciphers = NULL;
    char *curves = NULL;
    int rc = 0;
    if (p != NULL) {
        size_t mark = at(b, ".tls_params");
        static const char *const supported[] = {"tls_minimum_protocol_version",
                                                "tls_maximum_protocol_version", "cipher_suites",
                                                "ecdh_curves", NULL};
        rc = only(b, &p->base, supported);
        if (rc == 0) {
            vmin = tls_version((int)p->tls_minimum_protocol_version, DEFAULT_MIN_VERSION);
            vmax = tls_version((int)p->tls_maximum_protocol_version, dmax);
            if ((rc = check_version(b, "tls_minimum_protocol_version",
                                    (int)p->tls_minimum_protocol_version, vmin)) != 0 ||
                (rc = check_version(b, "tls_maximum_protocol_version",
                                    (int)p->tls_maximum_protocol_version, vmax)) != 0) {
                /* reported */
            } else if (vmin > vmax) {
                rc = fail_at(b, "tls_minimum_protocol_version",
                             "%s is above the maximum version (%s%s)",
                             version_name((int)p->tls_minimum_protocol_version),
                             p->tls_maximum_protocol_version != 0
                                 ? version_name((int)p->tls_maximum_protocol_version)
                                 : "TLS_AUTO: ",
                             p->tls_maximum_protocol_version != 0
                                 ? ""
                                 : (dmax == TLS1_3_VERSION ? "TLSv1_3" : "TLSv1_2"));
            }
        }
        if (rc == 0 && p->n_cipher_suites > 0) {
            ciphers = name_list(b, "cipher_suites", p->cipher_suites, p->n_cipher_suites,
                                "cipher suite", valid_cipher);
            rc = ciphers == NULL ? -EINVAL : 0;
        }
        if (rc == 0 && p->n_ecdh_curves > 0) {
            curves =
                name_list(b, "ecdh_curves", p->ecdh_curves, p->n_ecdh_curves, "curve", valid_curve);
            rc = curves == NULL ? -EINVAL : 0;
        }
        up(b, mark);
    }
    if (rc == 0) {
        const char *cl = ciphers != NULL ? ciphers : DEFAULT_CIPHERS;
        const char *gl = curves != NULL ? curves : DEFAULT_CURVES;
        hash_add(b, &vmin, sizeof(vmin));
        hash_add(b, &vmax, sizeof(vmax));
        hash_str(b, cl);
        hash_str(b, gl);
        if (SSL_CTX_set_min_proto_version(ctx, vmin) != 1 ||
            SSL_CTX_set_max_proto_version(ctx, vmax) != 1) {
            rc = fail_at(b, "tls_params", "OpenSSL refused the protocol versions");
        } else if (SSL_CTX_set_cipher_list(ctx, cl) != 1) {
            rc = fail_at(b, "tls_params.cipher_suites", "no usable cipher suite");
        } else if (SSL_CTX_set1_groups_list(ctx, gl) != 1) {
            rc = fail_at(b, "tls_params.ecdh_curves", "no usable curve");
        }
    }
    free(ciphers);
    free(curves);
    ERR_clear_error();
    return rc;
}

/* ---- ALPN ---- */

/* alpn_protocols as the wire list (length-prefixed). Like Envoy, which joins the entries with
 * ',' and splits them again, an entry may hold several protocols separated by ','. */
static int alpn_list(struct tb *b, char *const *v, size_t n, const uint8_t **out, size_t *out_len)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += strlen(v[i]) + 1;
    }
    uint8_t *wire = arena_alloc(&b->c->arena, total > 0 ? total : 1);
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i];
        char idx[40];
        snprintf(idx, sizeof(idx), "alpn_protocols[%zu]", i);
        for (;;) {
            const char *comma = strchr(s, ',');
            size_t l = comma != NULL ? (size_t)(comma - s) : strlen(s);
            if (l == 0) {
                return fail_at(b, idx, "empty protocol name");
            }
            if (l > 255) {
                return fail_at(b, idx, "a protocol name is longer than 255 bytes");
            }
            wire[len++] = (uint8_t)l;
            memcpy(wire + len, s, l);
            len += l;
            if (comma == NULL) {
                break;
            }
            s = comma + 1;
        }
    }
    hash_add(b, wire, len);
    *out = wire;
    *out_len = len;
    return 0;
}

/* Server ALPN (SSL_CTX_set_alpn_select_cb): the first of the server's protocols the client
 * offers; none in common: continue without ALPN (Envoy's alpnSelectCallback). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const struct tls_ctx *tc = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, tc->alpn, (unsigned int)tc->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* ---- SDS secrets (proxy/config/sds.h) ---- */

static void free_live(void *p)
{
    tls_live_free(p);
}

static void free_secret(void *p)
{
    protobuf_c_message_free_unpacked(p, NULL);
}

/* Secret `s` (at the current path) as a validation context or a certificate, into `m`. */
static int secret_material(struct tb *b, const PbSecret *s, bool validation, struct tls_material *m)
{
    static const char *const supported[] = {"name", "tls_certificate", "validation_context", NULL};
    int rc = only(b, &s->base, supported);
    if (rc == 0 && validation) {
        const PbValidation *v = s->validation_context;
        if (s->type_case !=
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT ||
            v == NULL) {
            return fail_at(
                b, "validation_context",
                "required: secret '%s' is used as a validation_context_sds_secret_config", s->name);
        }
        size_t mark = at(b, ".validation_context");
        static const char *const in_secret[] = {"trusted_ca", NULL};
        const char *f = pbjson_first_set_field(&v->base, in_secret);
        if (f != NULL) {
            /* SAN matchers and the other checks stay in the static config. */
            rc = fail_at(b, f,
                         UNSUPPORTED " in an SDS secret: remora takes only trusted_ca from a "
                                     "secret (put SAN matchers beside an SDS trust store in "
                                     "combined_validation_context.default_validation_context)");
        } else if (v->trusted_ca == NULL) {
            rc = fail_at(b, "trusted_ca", "required");
        } else {
            rc = ca_material(b, v->trusted_ca, m);
        }
        up(b, mark);
    } else if (rc == 0) {
        if (s->type_case !=
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE ||
            s->tls_certificate == NULL) {
            return fail_at(b, "tls_certificate",
                           "required: secret '%s' is used as a tls_certificate_sds_secret_configs "
                           "entry",
                           s->name);
        }
        size_t mark = at(b, ".tls_certificate");
        rc = cert_material(b, s->tls_certificate, m);
        up(b, mark);
    }
    if (rc != 0) {
        tls_material_free(m);
    }
    ERR_clear_error();
    return rc;
}

int build_tls_secret(const PbSecret *s, bool validation, const char *where, struct tls_material *m,
                     struct err *err)
{
    struct tb tb = {.c = NULL, .err = err, .hash = 0xcbf29ce484222325ULL};
    at(&tb, "%s", where);
    return secret_material(&tb, s, validation, m);
}

/* Adds `tc` to the users of `sc`. */
static void add_user(struct config *c, struct sds_cfg *sc, const struct tls_ctx *tc)
{
    const struct tls_ctx **users = ARENA_NEW_N(&c->arena, const struct tls_ctx *, sc->n_users + 1);
    if (sc->n_users > 0) {
        memcpy(users, sc->users, sc->n_users * sizeof(*users));
    }
    users[sc->n_users++] = tc;
    sc->users = users;
}

/* An SdsSecretConfig over ADS (`sc`: its subscription when another context named it, else
 * NULL): nothing is loaded now. The context gets a live part with no certificate (a server
 * handshake fails until the secret arrives) or no trust store (every peer certificate fails
 * verification, SAN matchers included: TLS fails closed), and the secret is applied by the ADS
 * client (proxy/xds/ads.c -> reload_sds_secret) to every user, as a file's. Startup waits for
 * it (initial_fetch_timeout, default 15 s), as Envoy's listener and cluster warming. */
static int sds_secret_ads(struct tb *b, struct tls_ctx *tc, const PbSdsSecretConfig *ssc,
                          struct sds_cfg *sc, bool validation, uint64_t fetch_ms, bool *has_ca)
{
    struct config *c = b->c;
    if (sc != NULL && sc->validation != validation) {
        return fail_at(b, "name",
                       "secret '%s' over ADS is used both as a certificate and as a validation "
                       "context",
                       ssc->name);
    }
    if (sc != NULL && sc->initial_fetch_timeout_ms != fetch_ms) {
        return fail_at(b, "sds_config.initial_fetch_timeout",
                       "differs from another use of secret '%s' over ADS", ssc->name);
    }
    if (sc == NULL) {
        struct sds_cfg *v = ARENA_NEW_N(&c->arena, struct sds_cfg, c->n_sds + 1);
        if (c->n_sds > 0) {
            memcpy(v, c->sds, c->n_sds * sizeof(*v));
        }
        sc = &v[c->n_sds];
        sc->name = arena_strdup(&c->arena, str_from_c(ssc->name));
        sc->path = arena_strdup(&c->arena, str_from_c(""));
        sc->watched_dir = sc->path;
        sc->version_info = sc->path;
        sc->validation = validation;
        sc->ads = true;
        sc->initial_fetch_timeout_ms = fetch_ms;
        c->sds = v;
        c->n_sds++;
    }
    if (tc->live == NULL) {
        tc->live = tls_live_new();
        config_on_free(c, free_live, tc->live);
    }
    if (validation) {
        *has_ca = true; /* verification needs the secret's trust store: none yet, none pass */
    }
    add_user(c, sc, tc);
    return 0;
}

/* An SdsSecretConfig (at the current path) of context `tc`: finds or makes its subscription
 * (config.sds), loads the secret once, and installs it in `tc`. */
static int sds_secret(struct tb *b, struct tls_ctx *tc, const PbSdsSecretConfig *ssc,
                      bool validation, bool *has_ca)
{
    static const char *const supported[] = {"name", "sds_config", NULL};
    int rc = only(b, &ssc->base, supported);
    if (rc != 0) {
        return rc;
    }
    if (ssc->name == NULL || ssc->name[0] == '\0') {
        return fail_at(b, "name", "required");
    }
    if (ssc->sds_config == NULL) {
        return fail_at(b, "sds_config",
                       "required: remora reads secrets from files (path_config_source) or ADS; "
                       "static_resources.secrets is " UNSUPPORTED);
    }
    struct config *c = b->c;
    struct str path = STR_NULL;
    struct str dir = STR_NULL;
    bool ads = ssc->sds_config->config_source_specifier_case ==
               ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    uint64_t fetch_ms = 0;
    size_t mark = at(b, ".sds_config");
    if (ads) {
        path = arena_strdup(&c->arena, str_from_c(""));
        dir = path;
        rc = config_source_ads(ssc->sds_config, b->fp.p, true, &fetch_ms, b->err);
        if (rc == 0 && c->ads == NULL) {
            rc = fail_at(b, "ads", "needs dynamic_resources.ads_config");
        }
    } else if (c->dynamic) {
        /* reload.c watches the bootstrap's SDS files only; a listener from LDS or a cluster from
         * CDS shares secrets by name over ADS (proxy/sds_set.h) */
        rc = fail_at(
            b, NULL,
            "an SDS secret from a file in a listener from LDS or a cluster from CDS is " UNSUPPORTED
            " (use sds_config: {ads: {}})");
    } else {
        rc = config_source_file(ssc->sds_config, b->fp.p, &path, &dir, &c->arena, b->err);
    }
    up(b, mark);
    if (rc != 0) {
        return rc;
    }
    hash_str(b, ads ? "ads" : path.p);
    hash_str(b, ssc->name);
    struct sds_cfg *sc = NULL;
    for (uint32_t i = 0; i < c->n_sds && sc == NULL; i++) {
        if (c->sds[i].ads == ads && str_eq(c->sds[i].path, path) &&
            strcmp(c->sds[i].name.p, ssc->name) == 0) {
            sc = (struct sds_cfg *)&c->sds[i]; /* the arena's, being built */
        }
    }
    if (ads) {
        return sds_secret_ads(b, tc, ssc, sc, validation, fetch_ms, has_ca);
    }
    if (sc != NULL && !str_eq(sc->watched_dir, dir)) {
        return fail_at(b, "sds_config.path_config_source.watched_directory",
                       "differs from another use of secret '%s' in '%s'", ssc->name, path.p);
    }
    if (sc != NULL && sc->validation != validation) {
        return fail_at(b, "name",
                       "secret '%s' in '%s' is used both as a certificate and as a validation "
                       "context",
                       ssc->name, path.p);
    }
    if (sc == NULL) {
        PbSecret *s = NULL;
        size_t idx = 0;
        char *version = NULL;
        struct err e;
        err_clear(&e);
        if (sds_read_secret(path.p, ssc->name, &s, &idx, &version, &e) != 0) {
            /* Envoy would start and wait for the secret; remora needs it now (sds.h). */
            return fail_at(b, NULL, "%s", e.msg);
        }
        config_on_free(c, free_secret, s);
        struct sds_cfg *v = ARENA_NEW_N(&c->arena, struct sds_cfg, c->n_sds + 1);
        if (c->n_sds > 0) {
            memcpy(v, c->sds, c->n_sds * sizeof(*v));
        }
        sc = &v[c->n_sds];
        sc->name = arena_strdup(&c->arena, str_from_c(ssc->name));
        sc->path = path;
        sc->watched_dir = dir;
        sc->validation = validation;
        sc->version_info = arena_strdup(&c->arena, str_from_c(version));
        sc->resource_index = (uint32_t)idx;
        sc->pb = s;
        free(version);
        c->sds = v;
        c->n_sds++;
    }
    struct tls_material m = {0};
    mark = at(b, ": %s: resources[%u]", sc->path.p, sc->resource_index);
    rc = secret_material(b, sc->pb, validation, &m);
    up(b, mark);
    if (rc != 0) {
        return rc;
    }
    if (tc->live == NULL) {
        tc->live = tls_live_new();
        config_on_free(c, free_live, tc->live);
    }
    if (validation) {
        tls_live_set_store(tc, &m);
        *has_ca = true;
    } else {
        char why[256];
        if (tls_live_set_cert(tc, &m, why, sizeof(why)) != 0) {
            rc = fail_at(b, NULL, "%s", why);
        }
    }
    tls_material_free(&m);
    if (rc != 0) {
        return rc;
    }
    add_user(c, sc, tc);
    return 0;
}

/* common_tls_context.combined_validation_context: the trusted CA from an SDS secret (rotated
 * with it) and the checks that stay put, such as the SAN matchers a mesh pins identities with,
 * from default_validation_context (how App Mesh and Istio configure Envoy for SPIFFE mTLS). The
 * secret brings only trusted_ca (secret_material), so the two never set the same field, except
 * a trusted_ca in the default: Envoy lets the secret's replace it; remora refuses it as one that
 * would never be used. */
static int combined_validation(struct tb *b, SSL_CTX *ctx, const PbCombined *cv, struct tls_ctx *tc,
                               bool *has_ca)
{
    static const char *const supported[] = {"default_validation_context",
                                            "validation_context_sds_secret_config", NULL};
    int rc = only(b, &cv->base, supported);
    if (rc == 0 && cv->validation_context_sds_secret_config == NULL) {
        rc = fail_at(b, "validation_context_sds_secret_config", "required");
    }
    if (rc == 0 && cv->default_validation_context != NULL &&
        cv->default_validation_context->trusted_ca != NULL) {
        rc = fail_at(b, "default_validation_context.trusted_ca",
                     "would never be used: the trusted CA comes from "
                     "validation_context_sds_secret_config");
    }
    if (rc == 0) { /* the CA first: the SAN matchers below need it */
        size_t mark = at(b, ".validation_context_sds_secret_config");
        rc = sds_secret(b, tc, cv->validation_context_sds_secret_config, true, has_ca);
        up(b, mark);
    }
    if (rc == 0 && cv->default_validation_context != NULL) {
        size_t mark = at(b, ".default_validation_context");
        rc = validation(b, ctx, cv->default_validation_context, tc, has_ca);
        up(b, mark);
    }
    return rc;
}

/* ---- the contexts ---- */

static int common(struct tb *b, SSL_CTX *ctx, const PbCommon *cm, struct tls_ctx *tc, bool *has_ca)
{
    static const char *const supported[] = {"tls_params",
                                            "tls_certificates",
                                            "tls_certificate_sds_secret_configs",
                                            "validation_context",
                                            "validation_context_sds_secret_config",
                                            "combined_validation_context",
                                            "alpn_protocols",
                                            NULL};
    int rc = only(b, &cm->base, supported);
    if (rc == 0) {
        rc = tls_params(b, ctx, cm->tls_params, tc->server);
    }
    if (rc == 0 && cm->n_tls_certificates > 0 && cm->n_tls_certificate_sds_secret_configs > 0) {
        rc = fail_at(b, "tls_certificate_sds_secret_configs",
                     "cannot be used with tls_certificates: the certificate comes from one or "
                     "the other");
    }
    if (rc == 0 && cm->n_tls_certificate_sds_secret_configs > 1) {
        rc = fail_at(b, "tls_certificate_sds_secret_configs[1]",
                     "more than one certificate is " UNSUPPORTED
                     " (Envoy allows one per key type on a server, one on a client)");
    }
    if (rc == 0 && cm->n_tls_certificate_sds_secret_configs == 1) {
        size_t mark = at(b, ".tls_certificate_sds_secret_configs[0]");
        rc = sds_secret(b, tc, cm->tls_certificate_sds_secret_configs[0], false, has_ca);
        up(b, mark);
    }
    if (rc == 0 && cm->validation_context_type_case == VC_SDS) {
        /* (validation_context and this one are a oneof: the decoder rejects both) */
        size_t mark = at(b, ".validation_context_sds_secret_config");
        rc = sds_secret(b, tc, cm->validation_context_sds_secret_config, true, has_ca);
        up(b, mark);
    }
    if (rc == 0 && cm->validation_context_type_case == VC_COMBINED) {
        size_t mark = at(b, ".combined_validation_context");
        rc = combined_validation(b, ctx, cm->combined_validation_context, tc, has_ca);
        up(b, mark);
    }
    if (rc == 0 && cm->n_tls_certificates > 1) {
        rc = fail_at(b, "tls_certificates[1]",
                     "more than one certificate is " UNSUPPORTED
                     " (Envoy allows one per key type on a server, one on a client)");
    }
    if (rc == 0 && cm->n_tls_certificates == 1) {
        size_t mark = at(b, ".tls_certificates[0]");
        rc = certificate(b, ctx, cm->tls_certificates[0]);
        up(b, mark);
    }
    if (rc == 0 && cm->validation_context_type_case == VC_STATIC) {
        size_t mark = at(b, ".validation_context");
        rc = validation(b, ctx, cm->validation_context, tc, has_ca);
        up(b, mark);
    }
    if (rc == 0 && cm->n_alpn_protocols > 0) {
        rc = alpn_list(b, cm->alpn_protocols, cm->n_alpn_protocols, &tc->alpn, &tc->alpn_len);
    }
    return rc;
}

/* A context id for session resumption: OpenSSL refuses to resume a session of a server that
 * verifies clients unless one is set. Sessions resume only under the same settings. A server
 * whose material comes from SDS resumes them only within one generation of it (struct
 * tls_live: the id of each SSL mixes the generation in, and tickets are checked). */
static void session_id_context(const struct tb *b, SSL_CTX *ctx, struct tls_ctx *tc)
{
    unsigned char id[SSL_MAX_SID_CTX_LENGTH];
    uint64_t h = b->hash;
    for (size_t i = 0; i < sizeof(id); i++) {
        id[i] = (unsigned char)(h >> (8 * (i % 8)));
        h = h * 0x100000001b3ULL + i;
    }
    SSL_CTX_set_session_id_context(ctx, id, sizeof(id));
    if (tc->live != NULL) {
        memcpy(tc->live->sid, id, sizeof(id));
        SSL_CTX_set_session_ticket_cb(ctx, NULL, tls_live_ticket_cb, tc->live);
    }
}

static int downstream(struct tb *b, const PbDownstream *d, SSL_CTX *ctx, struct tls_ctx *tc)
{
    static const char *const supported[] = {"common_tls_context", "require_client_certificate",
                                            NULL};
    int rc = d != NULL ? only(b, &d->base, supported) : 0;
    if (rc != 0) {
        return rc;
    }
    const PbCommon *cm = d != NULL ? d->common_tls_context : NULL;
    if (cm == NULL ||
        (cm->n_tls_certificates == 0 && cm->n_tls_certificate_sds_secret_configs == 0)) {
        /* Envoy: "No TLS certificates found for server context" */
        return fail_at(b, "common_tls_context.tls_certificates",
                       "a server (DownstreamTlsContext) needs a certificate");
    }
    bool has_ca = false;
    size_t mark = at(b, ".common_tls_context");
    rc = common(b, ctx, cm, tc, &has_ca);
    up(b, mark);
    if (rc != 0) {
        return rc;
    }
    bool require = d->require_client_certificate != NULL && d->require_client_certificate->value;
    if (require && !has_ca) {
        return fail_at(b, "require_client_certificate",
                       "needs common_tls_context.validation_context.trusted_ca to verify client "
                       "certificates against (Envoy accepts it and requests no certificate)");
    }
    int mode = SSL_VERIFY_NONE;
    if (has_ca) {
        mode = SSL_VERIFY_PEER;
        if (require || tc->sans != NULL) {
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        }
    }
    hash_add(b, &mode, sizeof(mode));
    SSL_CTX_set_verify(ctx, mode, mode != SSL_VERIFY_NONE ? tls_verify_cb : NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_info_callback(ctx, tls_verify_info_cb);
    if (tc->alpn_len > 0) {
        SSL_CTX_set_alpn_select_cb(ctx, alpn_select, tc);
    }
    session_id_context(b, ctx, tc);
    return 0;
}

static int upstream(struct tb *b, const PbUpstream *u, SSL_CTX *ctx, struct tls_ctx *tc,
                    enum upstream_protocol protocol)
{
    int rc = 0;
    bool has_ca = false;
    if (u != NULL) {
        static const char *const supported[] = {"common_tls_context", "sni", "max_session_keys",
                                                NULL};
        rc = only(b, &u->base, supported);
        if (rc == 0 && u->max_session_keys != NULL && u->max_session_keys->value != 0) {
            /* 0 (no resumption) is what remora does; Envoy's default 1 keeps one session */
            rc = fail_at(b, "max_session_keys",
                         "only 0 is supported: remora does not resume upstream sessions yet");
        }
        if (rc == 0 && u->sni != NULL && strlen(u->sni) > SNI_MAX) {
            rc = fail_at(b, "sni", "longer than %d bytes", SNI_MAX);
        }
        if (rc == 0 && u->sni != NULL && u->sni[0] != '\0') {
            tc->sni = arena_cstrdup(&b->c->arena, u->sni);
            hash_str(b, u->sni);
        }
        if (rc == 0 && u->common_tls_context != NULL) {
            size_t mark = at(b, ".common_tls_context");
            rc = common(b, ctx, u->common_tls_context, tc, &has_ca);
            up(b, mark);
        }
    }
    if (rc == 0 && (u == NULL || u->common_tls_context == NULL)) {
        rc = tls_params(b, ctx, NULL, false);
    }
    if (rc != 0) {
        return rc;
    }
    if (tc->alpn_len == 0 && protocol == UPSTREAM_PROTO_HTTP2) {
        /* remora's choice: an HTTP/2 cluster without alpn_protocols offers "h2", so a server
         * that selects by ALPN speaks HTTP/2 to it. (A use_downstream_protocol_config cluster
         * is left empty: the socket owner may offer per connection.) */
        static const uint8_t h2[] = {2, 'h', '2'};
        tc->alpn = h2;
        tc->alpn_len = sizeof(h2);
        hash_add(b, h2, sizeof(h2));
    }
    if (tc->alpn_len > 0 && SSL_CTX_set_alpn_protos(ctx, tc->alpn, (unsigned int)tc->alpn_len)) {
        return fail_at(b, "common_tls_context.alpn_protocols", "OpenSSL refused the list");
    }
    /* Without a trust store a client verifies nothing and accepts any server certificate, as
     * Envoy does. */
    int mode = has_ca ? SSL_VERIFY_PEER : SSL_VERIFY_NONE;
    hash_add(b, &mode, sizeof(mode));
    SSL_CTX_set_verify(ctx, mode, has_ca ? tls_verify_cb : NULL);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    return 0;
}

int build_tls_transport_socket(struct config *c, struct err *err, const char *path,
                               const PbTransportSocket *ts, enum build_tls_side side,
                               enum upstream_protocol protocol, const struct tls_ctx **out)
{
    *out = NULL;
    if (ts == NULL) {
        return 0;
    }
    struct tb tb = {.c = c, .err = err, .hash = 0xcbf29ce484222325ULL};
    struct tb *b = &tb;
    at(b, "%s", path);

    const PbAny *any =
        ts->config_type_case == ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG
            ? ts->typed_config
            : NULL;
    const char *name = ts->name != NULL ? ts->name : "";
    const ProtobufCMessageDescriptor *want =
        side == BUILD_TLS_DOWNSTREAM ? &DOWNSTREAM_DESC : &UPSTREAM_DESC;
    const ProtobufCMessageDescriptor *got = NULL;
    if (any != NULL) {
        size_t tlen;
        const char *type = pbjson_type_name(any->type_url != NULL ? any->type_url : "", &tlen);
        got = pbtypes_find(type, tlen);
        if (got == &RAW_BUFFER_DESC) {
            return 0;
        }
        if (got != &DOWNSTREAM_DESC && got != &UPSTREAM_DESC) {
            return fail_at(b, "typed_config", "transport socket '%s' (%.*s) is " UNSUPPORTED, name,
                           (int)tlen, type);
        }
        if (got != want) {
            return fail_at(b, "typed_config", "%s takes %s, not %s",
                           side == BUILD_TLS_DOWNSTREAM ? "a filter chain" : "a cluster",
                           want->name, got->name);
        }
    } else if (strcmp(name, RAW_BUFFER_NAME) == 0) {
        return 0;
    } else if (strcmp(name, TLS_NAME) != 0) {
        return fail_at(b, "name", "transport socket '%s' is " UNSUPPORTED, name);
    }

    ProtobufCMessage *m = NULL;
    if (any != NULL) {
        size_t mark = at(b, ".typed_config");
        int rc = pbjson_any_unpack(any, pbtypes_find, b->fp.p, &m, err);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    bool server = side == BUILD_TLS_DOWNSTREAM;
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (ctx == NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
        ERR_clear_error();
        return fail_at(b, NULL, "OpenSSL could not make a context");
    }
    config_on_free(c, free_ssl_ctx, ctx);
    struct tls_ctx *tc = ARENA_NEW(&c->arena, struct tls_ctx);
    tc->ssl_ctx = ctx;
    tc->server = server;
    SSL_CTX_set_app_data(ctx, tc);

    size_t mark = at(b, ".typed_config");
    int rc = server ? downstream(b, (const PbDownstream *)m, ctx, tc)
                    : upstream(b, (const PbUpstream *)m, ctx, tc, protocol);
    up(b, mark);
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    if (b->scratch != NULL) {
        SSL_CTX_free(b->scratch);
    }
    ERR_clear_error();
    if (rc != 0) {
        return rc;
    }
    *out = tc;
    return 0;
}

/* ---- /config_dump redaction ---- */

static void redact_all(json_t *j)
{
    if (json_is_string(j)) {
        json_string_set(j, "[redacted]");
    } else if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            redact_all(v);
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            redact_all(v);
        }
    }
}

void build_tls_redact(json_t *j)
{
    static const char *const sensitive[] = {
        "private_key", "password", "pkcs12", "secret", "secrets", "session_ticket_keys", NULL};
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            bool hit = false;
            for (size_t i = 0; sensitive[i] != NULL && !hit; i++) {
                hit = strcmp(k, sensitive[i]) == 0;
            }
            if (hit) {
                redact_all(v);
            } else {
                build_tls_redact(v);
            }
        }
    } else if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v)
        {
            build_tls_redact(v);
        }
    }
}
