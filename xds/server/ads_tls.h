/* ads_tls: the TLS server context of remora-xds's xDS port (--xds-tls): what ads.c's
 * connections make their sessions from (proxy/net/tls.h's struct tls_conn, the proxy's own TLS
 * code, driven by ads.c).
 *
 * The certificate is read from files (--xds-tls-cert, --xds-tls-key: a PEM chain, leaf first,
 * and its key; read once, at startup), or, without them and with the mesh CA (--ca-dir),
 * issued by that CA for the names given (--xds-tls-name: DNS names or IP literals, default
 * 127.0.0.1) with mesh_ca_issue_server (certs/ca.h), so a sidecar needs only the CA bundle
 * (ca.pem) as its trusted_ca. An issued certificate is re-issued at half its lifetime
 * (--cert-lifetime); new handshakes get the new one, open connections keep theirs.
 *
 * TLS 1.2 and 1.3; ALPN: "h2" is chosen when the client offers it, a client offering only other
 * protocols is refused (no_application_protocol), a client offering none is served (h2 with
 * prior knowledge, as on the plaintext port). With a client CA (--xds-tls-client-ca) the
 * client must present a certificate chaining to it (mTLS); failures are classified as the
 * proxy's (struct tls_conn.fail: no certificate, chain not verified).
 *
 * Thread: remora-xds's loop. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

struct ev_loop;
struct mesh_ca;
struct tls_ctx;
struct ads_tls;

#define ADS_TLS_MAX_NAMES 16

struct ads_tls_opts {
    const char *cert_file;      /* PEM chain, leaf first; with key_file; NULL: issue from `ca` */
    const char *key_file;       /* its private key (unencrypted PEM) */
    const char *client_ca_file; /* PEM CA certificates clients must chain to; NULL: no mTLS */
    const struct mesh_ca *ca;   /* borrowed, outliving the context; used without cert_file */
    const char *const *names;   /* [n_names]: the issued certificate's names */
    size_t n_names;
    uint64_t lifetime_s; /* of an issued certificate (>= 120) */
};

/* Builds the context. Returns it, or NULL with what is wrong in `err` (a file that cannot be
 * read, no certificate, a key that does not match, a bad name, ...). */
struct ads_tls *ads_tls_new(struct ev_loop *loop, const struct ads_tls_opts *o, struct err *err);

/* The context new connections use (valid while `t` lives). */
const struct tls_ctx *ads_tls_ctx(const struct ads_tls *t);

/* For the startup log: "from FILE", or "issued by the mesh CA for NAMES". */
const char *ads_tls_describe(const struct ads_tls *t);

/* Frees the context (sessions made from it hold their own references). NULL is fine. */
void ads_tls_free(struct ads_tls *t);
