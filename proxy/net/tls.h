/* tls: TLS on a connection (OpenSSL 3). Two halves:
 *   - struct tls_ctx: what a filter chain's DownstreamTlsContext or a cluster's
 *     UpstreamTlsContext (transport_socket `envoy.transport_sockets.tls`) compiles to, built by
 *     proxy/config/build_tls.c at config time and owned by the snapshot (freed by its
 *     cleanups). Read-only once built, except the certificate and trust store of a context that
 *     takes them from SDS (struct tls_live: changed by main under its lock); every worker makes
 *     its SSLs from the same SSL_CTX (OpenSSL allows that across threads). The SSL_CTX
 *     carries the certificates, the trust store, the verify mode and callback (chain, then the
 *     SAN matchers: tls_verify.c), the protocol versions, ciphers and groups, and the ALPN
 *     select callback (server).
 *   - struct tls_conn: one connection's session, made by the owner of the socket (downstream.c,
 *     upstream.c, upstream_h2.c, tcp_proxy.c) and driven from its libev callbacks with
 *     tls_conn_recv / tls_conn_send (tls.c). The handshake runs inside them: until it is done
 *     they move no application bytes.
 * Thread: a tls_ctx is built on main and read by all; a tls_conn belongs to one worker. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <openssl/ssl.h>
#include <time.h>
#include <openssl/x509.h>

#include "proxy/core/str.h"

/* Why a handshake failed, as Envoy counts it (<scope>.ssl.<name>); set by the verify callback
 * (tls_verify.c) or by tls.c. */
enum tls_fail {
    TLS_FAIL_NONE = 0,
    TLS_FAIL_NO_CERT,    /* ssl.fail_verify_no_cert: the peer sent none and one is required */
    TLS_FAIL_VERIFY,     /* ssl.fail_verify_error: the chain did not verify */
    TLS_FAIL_VERIFY_SAN, /* ssl.fail_verify_san: no SAN matched match_typed_subject_alt_names */
    TLS_FAIL_CONNECTION, /* ssl.connection_error: any other handshake or record failure */
};

/* The part of a tls_ctx that SDS (proxy/config/sds.h) changes while workers make SSLs from it.
 * `mu` orders main's changes against the workers' SSL_new: SSL_new copies the SSL_CTX's
 * certificate, key and chain into the new SSL (ssl_cert_dup takes its own references) and the
 * handshake never reads the SSL_CTX's certificates again, so a change is safe once no SSL_new
 * runs concurrently with it. Connections already made keep their copy; new ones get the new
 * material. Owned by the snapshot (freed by its cleanups). */
struct tls_live {
    pthread_mutex_t mu;
    /* Under mu. The trust store from SDS (validation_context_sds_secret_config): one reference,
     * main's; each SSL takes its own (SSL_set1_verify_cert_store). NULL when the trust store is
     * static (then it is the SSL_CTX's own, immutable). */
    X509_STORE *store;
    /* Under mu. Server with an SDS trust store: the CA names its CertificateRequest sends (a copy
     * goes into each SSL: the SSL_CTX's list is read by handshakes and cannot change safely). */
    STACK_OF(X509_NAME) * ca_names;
    /* ssl_context_update_by_sds: accepted SDS updates applied to this context (main writes). */
    _Atomic uint64_t updates;
    /* Server: sessions resume only within one generation of the material. Bumped (under mu)
     * by every change; a new SSL's session id context is `sid` with the generation mixed in
     * (TLS 1.2 sessions of another generation do not match it), and tickets are checked by
     * tls_live_ticket_cb (TLS 1.3 resumption does not compare the id context). So a client
     * verified by a CA that was rotated out, or shown a replaced certificate, does a full
     * handshake. Envoy gets the same by building a new SSL_CTX per update. */
    _Atomic uint32_t generation;
    unsigned char sid[SSL_MAX_SID_CTX_LENGTH]; /* the context's configured id (build_tls) */
};

/* A compiled DownstreamTlsContext (server) or UpstreamTlsContext (client). */
struct tls_ctx {
    SSL_CTX *ssl_ctx; /* owned by the snapshot; its certificates change only under live->mu */
    /* Non-NULL when a certificate or the trust store comes from SDS: tls_conn_init then takes
     * live->mu around SSL_new. NULL: nothing changes, no lock. */
    struct tls_live *live;
    bool server;
    /* client: the SNI to send (UpstreamTlsContext.sni), NUL-terminated; NULL: none */
    const char *sni;
    /* server: ALPN was configured (alpn_protocols): the select callback chose a protocol, or
     * none; client: the wire-format list offered (may be empty). */
    const uint8_t *alpn;
    size_t alpn_len;
    /* Opaque to tls.c: the verify callback's matchers (tls_verify.c). */
    const struct tls_san_matchers *sans;
};

/* A connection's TLS session. */
struct tls_conn {
    SSL *ssl; /* owned; SSL_get_app_data(ssl) is this struct */
    const struct tls_ctx *ctx;
    bool handshake_done;
    /* The last call could not progress until the socket is writable (the handshake, or a
     * record OpenSSL must flush before it can read): the owner arms EV_WRITE and calls again. */
    bool want_write;
    /* The last call could not progress until the socket is readable. */
    bool want_read;
    /* Set once: why the handshake failed (the verify callback fills it in first). */
    enum tls_fail fail;
    /* The handshake just completed in the last call: the owner counts it (ssl.handshake) and
     * looks at the ALPN result; cleared by the owner. */
    bool just_done;
    /* The last tls_conn_recv filled the caller's buffer (see tls_conn_pending). */
    bool filled;
};

/* The tls_conn that owns `ssl` (for callbacks). */
static inline struct tls_conn *tls_conn_of(const SSL *ssl)
{
    return (struct tls_conn *)SSL_get_app_data(ssl);
}

/* Certificate or trust material compiled from PEM (build_tls.c), for a startup context or an SDS
 * update. Each member is one reference (or NULL) owned by the holder: tls_material_free. */
struct tls_material {
    X509 *leaf;               /* tls_certificate: the certificate */
    STACK_OF(X509) * chain;   /* its intermediates (may be empty) */
    EVP_PKEY *key;            /* its private key (checked to match) */
    X509_STORE *store;        /* validation_context: trusted_ca as a store (PARTIAL_CHAIN set) */
    STACK_OF(X509_NAME) * ca; /* the subject names of trusted_ca, for a server's CA list */
};

void tls_material_free(struct tls_material *m);

/* An OpenSSL pem_password_cb that never prompts and gives no pass phrase (OpenSSL's default
 * reads the terminal): an encrypted PEM key fails to load instead. Pass it to PEM_read_bio_*
 * and SSL_CTX_set_default_passwd_cb. Returns -1. Thread: any. */
int tls_no_password(char *buf, int size, int rwflag, void *u);

/* A new tls_live (no store). Never NULL. */
struct tls_live *tls_live_new(void);
void tls_live_free(struct tls_live *l);

/* Whether m->key can replace the certificate of `tc`: its key type (EC, RSA, ...) must be the
 * one in force, if any (OpenSSL keeps one certificate per key type, so another type would be
 * served alongside the old one). Returns 0, or -1 with a reason in `why`. */
int tls_live_check_cert(const struct tls_ctx *tc, const struct tls_material *m, char *why,
                        size_t why_len);

/* Main: installs m->leaf, m->key, m->chain as the certificate of `tc` (which has a live part),
 * under live->mu, after tls_live_check_cert. Returns 0, or -1 with a reason in `why` (nothing
 * changed). */
int tls_live_set_cert(const struct tls_ctx *tc, const struct tls_material *m, char *why,
                      size_t why_len);

/* Main: makes m->store (and m->ca for a server) the trust store of new connections of `tc`,
 * under live->mu; the old store is released (SSLs made from it keep their references). */
void tls_live_set_store(const struct tls_ctx *tc, const struct tls_material *m);

/* The session id context of generation `gen` of `l` (SSL_MAX_SID_CTX_LENGTH bytes). */
void tls_live_sid(const struct tls_live *l, uint32_t gen, unsigned char *out);

/* SSL_CTX_set_session_ticket_cb's decrypt callback for a server context with a live part (arg:
 * the tls_live): a ticket of an older generation is not resumed (a full handshake, a new
 * ticket). */
SSL_TICKET_RETURN tls_live_ticket_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname,
                                     size_t keyname_len, SSL_TICKET_STATUS status, void *arg);

/* Starts a session on connected socket `fd`: server side for a server ctx, else client side
 * with ctx->sni and ctx->alpn. Returns 0, or -1 (out of memory in OpenSSL). */
int tls_conn_init(struct tls_conn *c, const struct tls_ctx *ctx, int fd);

/* Frees the session (no close_notify: tls_conn_shutdown sends one). */
void tls_conn_free(struct tls_conn *c);

/* tls_conn_init on the heap, as the socket owners keep it (a pointer, NULL for plaintext):
 * NULL when OpenSSL is out of memory. */
struct tls_conn *tls_conn_new(const struct tls_ctx *ctx, int fd);

/* Frees what tls_conn_new made (NULL ok). */
void tls_conn_destroy(struct tls_conn *c);

/* The libev events (EV_READ, EV_WRITE) a handshake in progress waits for. */
int tls_conn_wait_events(const struct tls_conn *c);

struct ssl_stats;

/* The client side of connecting over TLS, for upstream connections: call it once the TCP
 * connect completed, with *c NULL (it makes the session, offering `alpn` when the context
 * offers none; NULL: nothing more), then on each readiness until it is done. Returns 1 when
 * the handshake is done, 0 while it goes on ((*c)->want_read / want_write say on what), -1
 * when it failed, with a reason for the log and the stream in *reason. Counts the outcome in
 * `st` (ssl.handshake, or why it failed; NULL: not counted). On -1 the caller still frees *c
 * with the connection. */
int tls_connect_step(struct tls_conn **c, const struct tls_ctx *ctx, int fd, const uint8_t *alpn,
                     size_t alpn_len, struct ssl_stats *st, const char **reason);

/* Reads application bytes into p[0..n): > 0 bytes; 0 at the peer's close_notify or EOF;
 * -EAGAIN when it would block (want_read / want_write say on what; also while the handshake
 * is still going); -EPROTO when the handshake or a record failed (c->fail says why); -EPIPE
 * when the connection was reset. Runs the handshake first if it is not done. */
ssize_t tls_conn_recv(struct tls_conn *c, void *p, size_t n);

/* Writes application bytes: > 0 bytes taken (all of them, or a prefix); -EAGAIN, -EPROTO,
 * -EPIPE as tls_conn_recv. Runs the handshake first if it is not done. */
ssize_t tls_conn_send(struct tls_conn *c, const void *p, size_t n);

/* Runs the handshake only: 1 done, 0 in progress (want_read / want_write), -EPROTO failed,
 * -EPIPE reset. */
int tls_conn_handshake(struct tls_conn *c);

/* The last tls_conn_recv filled its buffer and OpenSSL holds more (records read ahead): the
 * socket may not become readable again for them, so the owner reads again without waiting for
 * it. False when all that is held is part of a record (epoll will report the rest). */
bool tls_conn_pending(const struct tls_conn *c);

/* Sends close_notify, best effort (never blocks). */
void tls_conn_shutdown(struct tls_conn *c);

/* The negotiated ALPN protocol (empty when none). */
struct str tls_conn_alpn(const struct tls_conn *c);

struct buf;

/* What the access log can print of a connection's TLS session (Envoy's operators). */
enum tls_field {
    TLS_FIELD_SNI,           /* %REQUESTED_SERVER_NAME% */
    TLS_FIELD_VERSION,       /* %DOWNSTREAM_TLS_VERSION%: "TLSv1.3" */
    TLS_FIELD_CIPHER,        /* %DOWNSTREAM_TLS_CIPHER%: the IANA name */
    TLS_FIELD_PEER_URI_SAN,  /* %DOWNSTREAM_PEER_URI_SAN%: the peer's URI SANs, ","-joined */
    TLS_FIELD_LOCAL_URI_SAN, /* %DOWNSTREAM_LOCAL_URI_SAN% */
    TLS_FIELD_PEER_SUBJECT,  /* %DOWNSTREAM_PEER_SUBJECT%: RFC 2253 */
};

/* Appends field `f` of `c` (NULL: a plaintext connection) to `out`, or "-" when there is
 * none. */
void tls_conn_put_field(const struct tls_conn *c, enum tls_field f, struct buf *out);

/* Whether the client presented a certificate (the connection is mutual TLS). */
bool tls_conn_peer_cert(const struct tls_conn *c);

/* Appends this hop's x-forwarded-client-cert element for `c`'s peer to `out`, as Envoy writes
 * it: By=<each URI SAN of our certificate>;Hash=<SHA-256 of the peer's certificate, hex>, then
 * per `details` (config.h XFCC_* bits) Cert="<URL-encoded PEM>", Chain="...", Subject="<RFC
 * 2253>", URI=<each peer URI SAN, or empty>, DNS=<each peer DNS SAN>. */
void tls_conn_xfcc(const struct tls_conn *c, unsigned details, struct buf *out);

/* Counts a completed handshake (ssl.handshake, and ssl.no_certificate when the peer sent
 * none) and clears c->just_done. */
void tls_count_handshake(struct tls_conn *c, struct ssl_stats *st);

/* Counts a failed handshake or connection by c->fail (ssl.fail_verify_*, else
 * ssl.connection_error). */
void tls_count_failure(const struct tls_conn *c, struct ssl_stats *st);

/* A short reason for a failed handshake, for logs and Envoy's transport failure reason. */
const char *tls_fail_reason(const struct tls_conn *c);

struct config;

/* GET /certs (Envoy's admin): the certificates of every TLS context in `c`, listeners' chains
 * first, then clusters, as {"certificates": [{"ca_cert": [...], "cert_chain": [...]}]}, each
 * certificate {serial_number, subject_alt_names, days_until_expiration, valid_from,
 * expiration_time}. Differs from Envoy: no "path" (the snapshot does not keep where a
 * certificate was read from). Thread: main (SDS rotations happen there too). */
json_t *tls_certs_json(const struct config *c, time_t now);

/* server.days_until_first_cert_expiring: the fewest whole days until any certificate of `c`
 * (own or CA) expires, 0 for one expired; -1 when `c` has none. Thread: main. */
int64_t tls_days_until_first_cert_expiring(const struct config *c, time_t now);
