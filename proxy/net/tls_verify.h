/* tls_verify: peer certificate checks beyond OpenSSL's chain verification, with Envoy's
 * semantics (CertificateValidationContext.match_typed_subject_alt_names, and the deprecated
 * match_subject_alt_names), and the classification of handshake failures into
 * tls_conn.fail (proxy/net/tls.h).
 *
 * The matchers are compiled at config time (proxy/config/build_tls.c) into the snapshot and
 * reached from an SSL through its SSL_CTX's app data (the struct tls_ctx), so the callbacks work
 * for any SSL made from that SSL_CTX, with or without a struct tls_conn as its app data.
 *
 * Thread: the matchers are immutable; the callbacks run on the thread driving the SSL. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "proxy/config/config.h"
#include "proxy/core/str.h"

struct regex;
struct tls_ctx;

/* Which GeneralName a matcher looks at (SubjectAltNameMatcher.san_type). */
enum tls_san_type {
    TLS_SAN_DNS,
    TLS_SAN_URI,
    TLS_SAN_EMAIL,
    TLS_SAN_IP,  /* compared in its textual form: "10.0.0.1", "2001:db8::1" (inet_ntop) */
    TLS_SAN_ANY, /* the deprecated match_subject_alt_names: DNS, URI, EMAIL or IP */
};

/* A SAN matcher: a StringMatcher (config.h) on the SANs of one type. For DNS an exact matcher
 * follows Envoy's dnsNameMatch (a "*.example.com" SAN matches "foo.example.com";
 * case-insensitive). Values may hold any byte: compared by length and bytes. */
struct tls_san_matcher {
    enum tls_san_type type;
    struct str_match m;
};

/* A context's matchers: the peer certificate passes when any one matches any of its SANs. */
struct tls_san_matchers {
    const struct tls_san_matcher *v;
    uint32_t n;
};

/* Does GeneralName `gn` satisfy matcher `m`? */
bool tls_san_match_one(const struct tls_san_matcher *m, const GENERAL_NAME *gn);

/* Does certificate `cert` have a SAN that one of `ms` matches? (false without SANs) */
bool tls_san_match(const struct tls_san_matchers *ms, X509 *cert);

/* Does `s` match StringMatcher `m` (exact, prefix, suffix, contains, safe_regex; ignore_case)?
 * Bytes as they are, NULs included: SAN matching here and RBAC's principals and paths. */
bool str_match_test(const struct str_match *m, struct str s);
/* Envoy's dnsNameMatch: `name` (configured) equals `san` (from the certificate), ignoring
 * case, or `san` is "*.<rest>" and `name` is one label followed by ".<rest>". */
bool tls_dns_name_match(struct str name, struct str san);

/* The SSL_CTX_set_verify callback build_tls.c installs when the context verifies its peer: a
 * chain error sets tls_conn.fail = TLS_FAIL_VERIFY; at depth 0, once the chain verified, the
 * SAN matchers of the SSL_CTX's tls_ctx (SSL_CTX_get_app_data) run, and none matching sets
 * TLS_FAIL_VERIFY_SAN and fails the handshake with X509_V_ERR_APPLICATION_VERIFICATION (the
 * peer gets an alert). Works without a tls_conn (then only the result is returned). */
int tls_verify_cb(int preverify_ok, X509_STORE_CTX *x);

/* The SSL_CTX_set_info_callback build_tls.c installs on server contexts: when the handshake
 * fails because the client sent no certificate and one is required (OpenSSL fails it without
 * calling the verify callback), sets tls_conn.fail = TLS_FAIL_NO_CERT. An owner that installs
 * its own info callback on an SSL must call this one from it. */
void tls_verify_info_cb(const SSL *ssl, int where, int ret);
