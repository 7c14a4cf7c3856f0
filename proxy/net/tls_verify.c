/* tls_verify: SAN matching and handshake failure classification (see tls_verify.h). Envoy's
 * source/common/tls/cert_validator/{default_validator,san_matcher}.cc semantics: any matcher
 * matching any SAN of the leaf passes; a DNS SAN under an exact matcher uses dnsNameMatch.
 *
 * Certificate strings are ASN1 data with a length: they are compared by length and bytes,
 * never as C strings, so a SAN with an embedded NUL ("spiffe://a/b\0evil") never equals a
 * configured "spiffe://a/b" (hostile-inputs.md case 50): str.h's comparisons, which treat NUL as
 * an ordinary byte. */
#include "proxy/net/tls_verify.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "proxy/http/regex.h"
#include "proxy/net/tls.h"

bool tls_dns_name_match(struct str name, struct str san)
{
    if (str_eq_nocase(name, san)) {
        return true;
    }
    /* "*.example.com" matches exactly one label in front of ".example.com" */
    if (san.len > 1 && san.p[0] == '*' && san.p[1] == '.' && name.len > san.len - 1) {
        size_t off = name.len - (san.len - 1);
        return memchr(name.p, '.', off) == NULL &&
               str_mem_eq_nocase(name.p + off, san.p + 1, san.len - 1);
    }
    return false;
}

static bool string_match(const struct str_match *m, struct str s, bool dns)
{
    if (dns && m->kind == SM_EXACT) {
        return tls_dns_name_match(m->value, s);
    }
    return str_match_test(m, s);
}

bool str_match_test(const struct str_match *m, struct str s)
{
    switch (m->kind) {
    case SM_EXACT:
        return m->ignore_case ? str_eq_nocase(s, m->value) : str_eq(s, m->value);
    case SM_PREFIX:
        return m->ignore_case ? str_has_prefix_nocase(s, m->value) : str_has_prefix(s, m->value);
    case SM_SUFFIX:
        return m->ignore_case ? str_has_suffix_nocase(s, m->value) : str_has_suffix(s, m->value);
    case SM_CONTAINS:
        return str_contains(s, m->value, m->ignore_case);
    case SM_REGEX:
        return m->regex != NULL && regex_match(m->regex, s);
    }
    return false;
}

static struct str asn1_str(const ASN1_STRING *a)
{
    int n = ASN1_STRING_length(a);
    return (struct str){(const char *)ASN1_STRING_get0_data(a), n > 0 ? (size_t)n : 0};
}

bool tls_san_match_one(const struct tls_san_matcher *m, const GENERAL_NAME *gn)
{
    char ip[INET6_ADDRSTRLEN];
    struct str s;
    bool dns = false;
    switch (gn->type) {
    case GEN_DNS:
        if (m->type != TLS_SAN_DNS && m->type != TLS_SAN_ANY) {
            return false;
        }
        s = asn1_str(gn->d.dNSName);
        dns = true;
        break;
    case GEN_URI:
        if (m->type != TLS_SAN_URI && m->type != TLS_SAN_ANY) {
            return false;
        }
        s = asn1_str(gn->d.uniformResourceIdentifier);
        break;
    case GEN_EMAIL:
        if (m->type != TLS_SAN_EMAIL && m->type != TLS_SAN_ANY) {
            return false;
        }
        s = asn1_str(gn->d.rfc822Name);
        break;
    case GEN_IPADD: {
        if (m->type != TLS_SAN_IP && m->type != TLS_SAN_ANY) {
            return false;
        }
        struct str raw = asn1_str(gn->d.iPAddress);
        int af = raw.len == 4 ? AF_INET : raw.len == 16 ? AF_INET6 : 0;
        if (af == 0 || inet_ntop(af, raw.p, ip, sizeof(ip)) == NULL) {
            return false;
        }
        s = str_from_c(ip);
        break;
    }
    default:
        return false;
    }
    return string_match(&m->m, s, dns);
}

bool tls_san_match(const struct tls_san_matchers *ms, X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    if (names == NULL) {
        return false;
    }
    bool ok = false;
    int n = sk_GENERAL_NAME_num(names);
    for (uint32_t i = 0; i < ms->n && !ok; i++) {
        for (int j = 0; j < n && !ok; j++) {
            ok = tls_san_match_one(&ms->v[i], sk_GENERAL_NAME_value(names, j));
        }
    }
    GENERAL_NAMES_free(names);
    return ok;
}

static void set_fail(const SSL *ssl, enum tls_fail why)
{
    struct tls_conn *c = ssl != NULL ? tls_conn_of(ssl) : NULL;
    if (c != NULL && c->fail == TLS_FAIL_NONE) {
        c->fail = why;
    }
}

int tls_verify_cb(int preverify_ok, X509_STORE_CTX *x)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (ssl == NULL) {
        return preverify_ok;
    }
    if (SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE) {
        /* a client that verifies nothing: OpenSSL still walks the chain; its result is unused */
        return 1;
    }
    if (!preverify_ok) {
        set_fail(ssl, TLS_FAIL_VERIFY);
        return 0;
    }
    if (X509_STORE_CTX_get_error_depth(x) != 0) {
        return 1;
    }
    const struct tls_ctx *tc = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (tc == NULL || tc->sans == NULL || tc->sans->n == 0) {
        return 1;
    }
    X509 *leaf = X509_STORE_CTX_get_current_cert(x);
    if (leaf != NULL && tls_san_match(tc->sans, leaf)) {
        return 1;
    }
    set_fail(ssl, TLS_FAIL_VERIFY_SAN);
    X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
    return 0;
}

void tls_verify_info_cb(const SSL *ssl, int where, int ret)
{
    (void)ret;
    if (!(where & SSL_CB_WRITE_ALERT) || !SSL_is_server(ssl)) {
        return;
    }
    /* OpenSSL raised the error just before it sent the alert. */
    unsigned long e = ERR_peek_last_error();
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        set_fail(ssl, TLS_FAIL_NO_CERT);
    }
}
