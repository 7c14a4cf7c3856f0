/* tls: a connection's TLS session over its non-blocking socket (see tls.h). OpenSSL reads and
 * writes the socket itself (a socket BIO), with read-ahead, so one readiness event costs one
 * recv however many records arrived; the records it read ahead and has not handed out yet are
 * tls_conn_pending()'s, which the owner must drain without waiting for the socket. */
#include "proxy/net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "proxy/core/buf.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/stats/stats.h"

int tls_no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

void tls_material_free(struct tls_material *m)
{
    X509_free(m->leaf);
    sk_X509_pop_free(m->chain, X509_free);
    EVP_PKEY_free(m->key);
    X509_STORE_free(m->store);
    sk_X509_NAME_pop_free(m->ca, X509_NAME_free);
    memset(m, 0, sizeof(*m));
}

struct tls_live *tls_live_new(void)
{
    struct tls_live *l = xcalloc(1, sizeof(*l));
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void tls_live_free(struct tls_live *l)
{
    if (l == NULL) {
        return;
    }
    pthread_mutex_destroy(&l->mu);
    X509_STORE_free(l->store);
    sk_X509_NAME_pop_free(l->ca_names, X509_NAME_free);
    free(l);
}

int tls_live_check_cert(const struct tls_ctx *tc, const struct tls_material *m, char *why,
                        size_t why_len)
{
    /* Main is the only writer, so reading the key in force needs no lock. */
    EVP_PKEY *old = SSL_CTX_get0_privatekey(tc->ssl_ctx);
    if (old != NULL && EVP_PKEY_get_base_id(old) != EVP_PKEY_get_base_id(m->key)) {
        snprintf(why, why_len,
                 "the new certificate's key type (%s) differs from the one in force (%s): "
                 "changing it needs a restart",
                 OBJ_nid2sn(EVP_PKEY_get_base_id(m->key)), OBJ_nid2sn(EVP_PKEY_get_base_id(old)));
        return -1;
    }
    return 0;
}

int tls_live_set_cert(const struct tls_ctx *tc, const struct tls_material *m, char *why,
                      size_t why_len)
{
    if (tls_live_check_cert(tc, m, why, why_len) != 0) {
        return -1;
    }
    pthread_mutex_lock(&tc->live->mu);
    int ok = SSL_CTX_use_cert_and_key(tc->ssl_ctx, m->leaf, m->key, m->chain, 1);
    if (ok == 1) {
        atomic_fetch_add(&tc->live->generation, 1);
    }
    pthread_mutex_unlock(&tc->live->mu);
    if (ok != 1) {
        unsigned long e = ERR_peek_last_error();
        snprintf(why, why_len, "OpenSSL refused the certificate (%s)",
                 e != 0 ? ERR_reason_error_string(e) : "unknown reason");
        ERR_clear_error();
        return -1;
    }
    return 0;
}

void tls_live_set_store(const struct tls_ctx *tc, const struct tls_material *m)
{
    struct tls_live *l = tc->live;
    X509_STORE_up_ref(m->store);
    STACK_OF(X509_NAME) *names = tc->server && m->ca != NULL ? SSL_dup_CA_list(m->ca) : NULL;
    pthread_mutex_lock(&l->mu);
    X509_STORE *old = l->store;
    STACK_OF(X509_NAME) *old_names = l->ca_names;
    l->store = m->store;
    l->ca_names = names;
    atomic_fetch_add(&l->generation, 1);
    pthread_mutex_unlock(&l->mu);
    X509_STORE_free(old);
    sk_X509_NAME_pop_free(old_names, X509_NAME_free);
}

void tls_live_sid(const struct tls_live *l, uint32_t gen, unsigned char *out)
{
    memcpy(out, l->sid, SSL_MAX_SID_CTX_LENGTH);
    for (size_t i = 0; i < 4; i++) {
        out[i] ^= (unsigned char)(gen >> (8 * i));
    }
}

SSL_TICKET_RETURN tls_live_ticket_cb(SSL *ssl, SSL_SESSION *ss, const unsigned char *keyname,
                                     size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
    (void)ssl;
    (void)keyname;
    (void)keyname_len;
    const struct tls_live *l = arg;
    if (status != SSL_TICKET_SUCCESS && status != SSL_TICKET_SUCCESS_RENEW) {
        return SSL_TICKET_RETURN_IGNORE_RENEW; /* (no ticket, or one that did not decrypt) */
    }
    unsigned char want[SSL_MAX_SID_CTX_LENGTH];
    tls_live_sid(l, atomic_load(&l->generation), want);
    unsigned int len = 0;
    const unsigned char *got = SSL_SESSION_get0_id_context(ss, &len);
    if (len != sizeof(want) || memcmp(got, want, len) != 0) {
        return SSL_TICKET_RETURN_IGNORE_RENEW; /* made before a rotation */
    }
    return status == SSL_TICKET_SUCCESS ? SSL_TICKET_RETURN_USE : SSL_TICKET_RETURN_USE_RENEW;
}

/* SSL_new, with the SDS material of `ctx` when it has any (see struct tls_live). */
static SSL *new_ssl(const struct tls_ctx *ctx)
{
    struct tls_live *l = ctx->live;
    if (l == NULL) {
        return SSL_new(ctx->ssl_ctx);
    }
    pthread_mutex_lock(&l->mu);
    SSL *ssl = SSL_new(ctx->ssl_ctx);
    uint32_t gen = atomic_load(&l->generation);
    X509_STORE *store = l->store;
    STACK_OF(X509_NAME) *names = NULL;
    if (ssl != NULL && store != NULL) {
        X509_STORE_up_ref(store); /* the SSL's own reference, given to it below */
        names = l->ca_names != NULL ? SSL_dup_CA_list(l->ca_names) : NULL;
    }
    pthread_mutex_unlock(&l->mu);
    if (ssl != NULL && store != NULL) {
        SSL_set0_verify_cert_store(ssl, store); /* takes the reference */
        if (names != NULL) {
            SSL_set_client_CA_list(ssl, names); /* takes the list */
        }
    }
    if (ssl != NULL && ctx->server) {
        unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
        tls_live_sid(l, gen, sid);
        SSL_set_session_id_context(ssl, sid, sizeof(sid));
    }
    return ssl;
}

int tls_conn_init(struct tls_conn *c, const struct tls_ctx *ctx, int fd)
{
    memset(c, 0, sizeof(*c));
    c->ctx = ctx;
    c->ssl = new_ssl(ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        ERR_clear_error();
        return -1;
    }
    SSL_set_app_data(c->ssl, c);
    /* Writes may return after a prefix (the caller keeps the rest in its buffer, which may move
     * between calls); idle connections give their record buffers back. */
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
    SSL_set_read_ahead(c->ssl, 1);
    if (ctx->server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        if (ctx->sni != NULL && SSL_set_tlsext_host_name(c->ssl, ctx->sni) != 1) {
            tls_conn_free(c);
            return -1;
        }
        if (ctx->alpn_len > 0 && SSL_set_alpn_protos(c->ssl, ctx->alpn, (unsigned)ctx->alpn_len)) {
            tls_conn_free(c);
            return -1;
        }
    }
    return 0;
}

void tls_conn_free(struct tls_conn *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
}

struct tls_conn *tls_conn_new(const struct tls_ctx *ctx, int fd)
{
    struct tls_conn *c = xcalloc(1, sizeof(*c));
    if (tls_conn_init(c, ctx, fd) != 0) {
        free(c);
        return NULL;
    }
    return c;
}

void tls_conn_destroy(struct tls_conn *c)
{
    if (c != NULL) {
        tls_conn_free(c);
        free(c);
    }
}

int tls_conn_wait_events(const struct tls_conn *c)
{
    int ev = (c->want_read ? EV_READ : 0) | (c->want_write ? EV_WRITE : 0);
    return ev != 0 ? ev : EV_READ;
}

int tls_connect_step(struct tls_conn **c, const struct tls_ctx *ctx, int fd, const uint8_t *alpn,
                     size_t alpn_len, struct ssl_stats *st, const char **reason)
{
    if (*c == NULL) {
        *c = tls_conn_new(ctx, fd);
        if (*c == NULL || (alpn_len > 0 && ctx->alpn_len == 0 &&
                           SSL_set_alpn_protos((*c)->ssl, alpn, (unsigned)alpn_len) != 0)) {
            *reason = "TLS error: out of memory";
            return -1;
        }
    }
    int r = tls_conn_handshake(*c);
    if (r < 0) {
        if (st != NULL) {
            tls_count_failure(*c, st);
        }
        *reason = tls_fail_reason(*c);
        return -1;
    }
    if (r == 1) {
        if (st != NULL) {
            tls_count_handshake(*c, st);
        }
        (*c)->just_done = false;
    }
    return r;
}

/* Maps a failed SSL call: -EAGAIN (and what it waits for), 0 on a clean close, -EPIPE on a
 * reset or EOF mid-record, -EPROTO on a protocol or verification failure. The error queue is
 * left empty: another connection's next call must not see this one's errors. */
static ssize_t failed(struct tls_conn *c, int ret)
{
    int e = SSL_get_error(c->ssl, ret);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        c->want_read = true;
        return -EAGAIN;
    case SSL_ERROR_WANT_WRITE:
        c->want_write = true;
        return -EAGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return 0; /* close_notify */
    case SSL_ERROR_SYSCALL: {
        int err = errno;
        ERR_clear_error();
        if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR) {
            c->want_read = true;
            return -EAGAIN;
        }
        if (!c->handshake_done && c->fail == TLS_FAIL_NONE) {
            c->fail = TLS_FAIL_CONNECTION;
        }
        if (err == 0 && c->handshake_done) {
            return 0; /* EOF without close_notify: see below */
        }
        return -EPIPE; /* reset */
    }
    default: {
        unsigned long code = ERR_peek_last_error();
        if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            /* The peer closed TCP without close_notify. Many peers do; as for plaintext, it is
             * the peer's end (HTTP's own framing still tells a truncated message). */
            ERR_clear_error();
            if (!c->handshake_done) {
                if (c->fail == TLS_FAIL_NONE) {
                    c->fail = TLS_FAIL_CONNECTION;
                }
                return -EPIPE;
            }
            return 0;
        }
        if (c->fail == TLS_FAIL_NONE) {
            c->fail = TLS_FAIL_CONNECTION;
        }
        if (code != 0) {
            char msg[160];
            ERR_error_string_n(code, msg, sizeof(msg));
            LOG_D("tls: %s", msg);
        }
        ERR_clear_error();
        return -EPROTO;
    }
    }
}

int tls_conn_handshake(struct tls_conn *c)
{
    if (c->handshake_done) {
        return 1;
    }
    c->want_read = c->want_write = false;
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->handshake_done = true;
        c->just_done = true;
        return 1;
    }
    ssize_t e = failed(c, r);
    if (e == -EAGAIN) {
        return 0;
    }
    if (c->fail == TLS_FAIL_NONE) {
        c->fail = TLS_FAIL_CONNECTION;
    }
    return e == 0 ? -EPIPE : (int)e;
}

ssize_t tls_conn_recv(struct tls_conn *c, void *p, size_t n)
{
    if (!c->handshake_done) {
        int h = tls_conn_handshake(c);
        if (h <= 0) {
            return h == 0 ? -EAGAIN : h;
        }
    }
    c->want_read = c->want_write = false;
    c->filled = false;
    /* Fill `p` from the records OpenSSL has read ahead (it hands out one per call), but do not
     * go back to the socket once they are used up: a recv there would only say EAGAIN, and
     * epoll tells when more comes. */
    size_t got = 0;
    while (got < n) {
        size_t k = 0;
        int r = SSL_read_ex(c->ssl, (uint8_t *)p + got, n - got, &k);
        if (r == 1) {
            got += k;
            if (SSL_has_pending(c->ssl) != 1) {
                break;
            }
            continue;
        }
        ssize_t e = failed(c, 0);
        if (got > 0) {
            /* Report the bytes now; an EOF or error shows again on the next call. */
            if (e != -EAGAIN) {
                c->want_read = false;
            }
            return (ssize_t)got;
        }
        return e;
    }
    c->filled = got == n; /* records may be left in OpenSSL's buffer: tls_conn_pending */
    return (ssize_t)got;
}

ssize_t tls_conn_send(struct tls_conn *c, const void *p, size_t n)
{
    if (!c->handshake_done) {
        int h = tls_conn_handshake(c);
        if (h <= 0) {
            return h == 0 ? -EAGAIN : h;
        }
    }
    c->want_read = c->want_write = false;
    size_t k = 0;
    if (n == 0) {
        return 0;
    }
    int r = SSL_write_ex(c->ssl, p, n, &k);
    if (r == 1) {
        return (ssize_t)k;
    }
    ssize_t e = failed(c, 0);
    return e == 0 ? -EPIPE : e;
}

bool tls_conn_pending(const struct tls_conn *c)
{
    /* Only after a read that filled its buffer: otherwise what OpenSSL holds is at most part of
     * a record, which needs the socket (and epoll will say when it is readable). */
    return c->filled && c->ssl != NULL && SSL_has_pending(c->ssl) == 1;
}

void tls_conn_shutdown(struct tls_conn *c)
{
    if (c->ssl != NULL && c->handshake_done) {
        (void)SSL_shutdown(c->ssl);
        ERR_clear_error();
    }
}

struct str tls_conn_alpn(const struct tls_conn *c)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    if (c->ssl != NULL) {
        SSL_get0_alpn_selected(c->ssl, &p, &len);
    }
    return (struct str){(const char *)p, len};
}

void tls_count_handshake(struct tls_conn *c, struct ssl_stats *st)
{
    c->just_done = false;
    STAT_INC(st->handshake);
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (peer == NULL) {
        STAT_INC(st->no_certificate);
    }
}

void tls_count_failure(const struct tls_conn *c, struct ssl_stats *st)
{
    switch (c->fail) {
    case TLS_FAIL_NO_CERT:
        STAT_INC(st->fail_verify_no_cert);
        break;
    case TLS_FAIL_VERIFY:
        STAT_INC(st->fail_verify_error);
        break;
    case TLS_FAIL_VERIFY_SAN:
        STAT_INC(st->fail_verify_san);
        break;
    default:
        STAT_INC(st->connection_error);
        break;
    }
}

const char *tls_fail_reason(const struct tls_conn *c)
{
    switch (c->fail) {
    case TLS_FAIL_NO_CERT:
        return "TLS error: peer did not return a certificate";
    case TLS_FAIL_VERIFY:
        return "TLS error: certificate verify failed";
    case TLS_FAIL_VERIFY_SAN:
        return "TLS error: no subject alternative name matched";
    default:
        return "TLS error: handshake failed";
    }
}

/* The URI SANs of `cert`, ","-joined; false when it has none. Bytes that are not printable
 * ASCII are written as '?', so a hostile certificate cannot break the log line. */
static bool put_uri_sans(X509 *cert, struct buf *out)
{
    GENERAL_NAMES *names =
        cert != NULL ? X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL) : NULL;
    bool any = false;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != GEN_URI) {
            continue;
        }
        const unsigned char *p = ASN1_STRING_get0_data(g->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(g->d.uniformResourceIdentifier);
        if (any) {
            buf_append(out, ",", 1);
        }
        any = true;
        for (int k = 0; k < len; k++) {
            char ch = p[k] >= 0x21 && p[k] < 0x7f && p[k] != '"' ? (char)p[k] : '?';
            buf_append(out, &ch, 1);
        }
    }
    GENERAL_NAMES_free(names);
    return any;
}

/* The subject of `x` (may be NULL) in RFC 2253 form; '"' and bytes outside printable ASCII
 * are written as '?'. Returns whether it wrote anything. */
static bool put_subject(X509 *x, struct buf *out)
{
    BIO *mem = x != NULL ? BIO_new(BIO_s_mem()) : NULL;
    long len = 0;
    if (mem != NULL && X509_NAME_print_ex(mem, X509_get_subject_name(x), 0, XN_FLAG_RFC2253) >= 0) {
        char *p = NULL;
        len = BIO_get_mem_data(mem, &p);
        for (long k = 0; k < len; k++) {
            char ch = p[k] >= 0x20 && p[k] < 0x7f && p[k] != '"' ? p[k] : '?';
            buf_append(out, &ch, 1);
        }
    }
    BIO_free(mem);
    return len > 0;
}

void tls_conn_put_field(const struct tls_conn *c, enum tls_field f, struct buf *out)
{
    SSL *ssl = c != NULL && c->handshake_done ? c->ssl : NULL;
    const char *text = NULL;
    if (ssl != NULL) {
        switch (f) {
        case TLS_FIELD_SNI:
            text = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
            break;
        case TLS_FIELD_VERSION:
            text = SSL_get_version(ssl);
            break;
        case TLS_FIELD_CIPHER:
            text = SSL_CIPHER_standard_name(SSL_get_current_cipher(ssl));
            break;
        case TLS_FIELD_PEER_URI_SAN:
            if (put_uri_sans(SSL_get0_peer_certificate(ssl), out)) {
                return;
            }
            break;
        case TLS_FIELD_LOCAL_URI_SAN:
            if (put_uri_sans(SSL_get_certificate(ssl), out)) {
                return;
            }
            break;
        case TLS_FIELD_PEER_SUBJECT:
            if (put_subject(SSL_get0_peer_certificate(ssl), out)) {
                return;
            }
            break;
        }
    }
    if (text != NULL && text[0] != '\0') {
        buf_append_str(out, text);
    } else {
        buf_append(out, "-", 1);
    }
}

bool tls_conn_peer_cert(const struct tls_conn *c)
{
    return c != NULL && c->handshake_done && SSL_get0_peer_certificate(c->ssl) != NULL;
}

/* Starts key `k` of an XFCC element that began at `start` in `out`: ';' between keys. */
static void xfcc_key(struct buf *out, size_t start, const char *k)
{
    if (buf_len(out) > start) {
        buf_append(out, ";", 1);
    }
    buf_append_str(out, k);
    buf_append(out, "=", 1);
}

/* Each SAN of `type` (GEN_URI, GEN_DNS) in `cert` as key `k`; returns how many. Bytes outside
 * printable ASCII, ',', ';' and '"' are written as '?': the header's own separators must not
 * come from a certificate. */
static int put_sans(X509 *cert, int type, const char *k, struct buf *out, size_t start)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int n = 0;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type != type) {
            continue;
        }
        const ASN1_STRING *a = type == GEN_URI ? g->d.uniformResourceIdentifier : g->d.dNSName;
        const unsigned char *p = ASN1_STRING_get0_data(a);
        int len = ASN1_STRING_length(a);
        xfcc_key(out, start, k);
        for (int j = 0; j < len; j++) {
            bool ok = p[j] > 0x20 && p[j] < 0x7f && p[j] != ',' && p[j] != ';' && p[j] != '"';
            char o = ok ? (char)p[j] : '?';
            buf_append(out, &o, 1);
        }
        n++;
    }
    GENERAL_NAMES_free(names);
    return n;
}

/* `x` as PEM, percent-encoded but for RFC 3986's unreserved characters. */
static void put_pem_urlencoded(X509 *x, struct buf *out)
{
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem == NULL || PEM_write_bio_X509(mem, x) != 1) {
        BIO_free(mem);
        return;
    }
    char *p = NULL;
    long len = BIO_get_mem_data(mem, &p);
    static const char hex[] = "0123456789ABCDEF";
    for (long k = 0; k < len; k++) {
        unsigned char ch = (unsigned char)p[k];
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf_append(out, &ch, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_append(out, e, 3);
        }
    }
    BIO_free(mem);
}

void tls_conn_xfcc(const struct tls_conn *c, unsigned details, struct buf *out)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    X509 *local = SSL_get_certificate(c->ssl);
    size_t start = buf_len(out);
    if (local != NULL) {
        put_sans(local, GEN_URI, "By", out, start);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (peer != NULL && X509_digest(peer, EVP_sha256(), md, &mdlen) == 1) {
        xfcc_key(out, start, "Hash");
        for (unsigned i = 0; i < mdlen; i++) {
            buf_printf(out, "%02x", md[i]);
        }
    }
    if (peer != NULL && (details & XFCC_CERT)) {
        xfcc_key(out, start, "Cert");
        buf_append(out, "\"", 1);
        put_pem_urlencoded(peer, out);
        buf_append(out, "\"", 1);
    }
    if (peer != NULL && (details & XFCC_CHAIN)) {
        /* the leaf, then what else the client sent (a server's peer chain may leave it out) */
        xfcc_key(out, start, "Chain");
        buf_append(out, "\"", 1);
        put_pem_urlencoded(peer, out);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c->ssl);
        for (int i = 0; chain != NULL && i < sk_X509_num(chain); i++) {
            X509 *x = sk_X509_value(chain, i);
            if (X509_cmp(x, peer) != 0) {
                put_pem_urlencoded(x, out);
            }
        }
        buf_append(out, "\"", 1);
    }
    if (details & XFCC_SUBJECT) {
        /* the key is there even when the subject is empty (Envoy) */
        xfcc_key(out, start, "Subject");
        buf_append(out, "\"", 1);
        put_subject(peer, out);
        buf_append(out, "\"", 1);
    }
    if ((details & XFCC_URI) && (peer == NULL || put_sans(peer, GEN_URI, "URI", out, start) == 0)) {
        xfcc_key(out, start, "URI"); /* there even when empty (Envoy) */
    }
    if ((details & XFCC_DNS) && peer != NULL) {
        put_sans(peer, GEN_DNS, "DNS", out, start);
    }
}

/* ---- /certs and the expiry gauge (main) ---- */

/* The trust store in force: SDS's, else the SSL_CTX's own. */
static X509_STORE *ctx_store(const struct tls_ctx *t)
{
    return t->live != NULL && t->live->store != NULL ? t->live->store
                                                     : SSL_CTX_get_cert_store(t->ssl_ctx);
}

/* Calls fn(x, arg) for the context's certificate and then each CA certificate. */
static void each_cert(const struct tls_ctx *t, void (*fn)(X509 *x, bool ca, void *arg), void *arg)
{
    X509 *own = SSL_CTX_get0_certificate(t->ssl_ctx);
    if (own != NULL) {
        fn(own, false, arg);
    }
    X509_STORE *st = ctx_store(t);
    STACK_OF(X509_OBJECT) *objs = st != NULL ? X509_STORE_get0_objects(st) : NULL;
    for (int i = 0; objs != NULL && i < sk_X509_OBJECT_num(objs); i++) {
        X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
        if (x != NULL) {
            fn(x, true, arg);
        }
    }
}

/* Whole days from `now` to `x`'s notAfter, 0 once it has passed. */
static int64_t days_left(X509 *x, time_t now)
{
    int days = 0, secs = 0;
    ASN1_TIME *from = ASN1_TIME_set(NULL, now);
    int ok = from != NULL && ASN1_TIME_diff(&days, &secs, from, X509_get0_notAfter(x));
    ASN1_TIME_free(from);
    if (!ok || days < 0 || (days == 0 && secs < 0)) {
        return 0;
    }
    return days;
}

static json_t *time_json(const ASN1_TIME *t)
{
    struct tm tm;
    char out[32];
    if (ASN1_TIME_to_tm(t, &tm) != 1 ||
        strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
        return json_null();
    }
    return json_string(out);
}

static json_t *cert_json(X509 *x, time_t now)
{
    json_t *j = json_object();
    const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
    BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    if (hex != NULL) {
        for (char *p = hex; *p != '\0'; p++) {
            *p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
        }
        json_object_set_new(j, "serial_number", json_string(hex));
    }
    OPENSSL_free(hex);
    BN_free(bn);
    json_t *sans = json_array();
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        const char *key = g->type == GEN_DNS     ? "dns"
                          : g->type == GEN_URI   ? "uri"
                          : g->type == GEN_IPADD ? "ip_address"
                                                 : NULL;
        if (key == NULL) {
            continue;
        }
        char ip[64];
        const ASN1_STRING *a = g->d.ia5;
        json_t *v;
        if (g->type == GEN_IPADD) {
            int len = ASN1_STRING_length(a);
            int af = len == 4 ? AF_INET : len == 16 ? AF_INET6 : 0;
            if (af == 0 || inet_ntop(af, ASN1_STRING_get0_data(a), ip, sizeof(ip)) == NULL) {
                continue;
            }
            v = json_string(ip);
        } else {
            /* json_stringn refuses bytes that are not UTF-8; a hostile SAN shows as null */
            v = json_stringn((const char *)ASN1_STRING_get0_data(a), (size_t)ASN1_STRING_length(a));
        }
        json_t *san = json_object();
        json_object_set_new(san, key, v != NULL ? v : json_null());
        json_array_append_new(sans, san);
    }
    GENERAL_NAMES_free(names);
    json_object_set_new(j, "subject_alt_names", sans);
    char days[24];
    snprintf(days, sizeof(days), "%lld", (long long)days_left(x, now)); /* a uint64: a string */
    json_object_set_new(j, "days_until_expiration", json_string(days));
    json_object_set_new(j, "valid_from", time_json(X509_get0_notBefore(x)));
    json_object_set_new(j, "expiration_time", time_json(X509_get0_notAfter(x)));
    return j;
}

struct certs_walk {
    json_t *ca, *chain;
    time_t now;
    int64_t min_days;
};

static void add_cert(X509 *x, bool ca, void *arg)
{
    struct certs_walk *w = arg;
    json_array_append_new(ca ? w->ca : w->chain, cert_json(x, w->now));
}

static void min_days(X509 *x, bool ca, void *arg)
{
    (void)ca;
    struct certs_walk *w = arg;
    int64_t d = days_left(x, w->now);
    if (w->min_days < 0 || d < w->min_days) {
        w->min_days = d;
    }
}

/* Each TLS context of `c`: listeners' chains, then clusters. */
static void each_ctx(const struct config *c, void (*fn)(const struct tls_ctx *t, void *arg),
                     void *arg)
{
    for (uint32_t i = 0; i < c->n_chains; i++) {
        if (c->chains[i].tls != NULL) {
            fn(c->chains[i].tls, arg);
        }
    }
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        if (c->clusters[i].tls != NULL) {
            fn(c->clusters[i].tls, arg);
        }
    }
}

struct certs_out {
    json_t *list; /* the "certificates" array */
    time_t now;
};

static void ctx_certs(const struct tls_ctx *t, void *arg)
{
    struct certs_out *o = arg;
    struct certs_walk w = {.ca = json_array(), .chain = json_array(), .now = o->now};
    each_cert(t, add_cert, &w);
    json_t *e = json_object();
    json_object_set_new(e, "ca_cert", w.ca);
    json_object_set_new(e, "cert_chain", w.chain);
    json_array_append_new(o->list, e);
}

json_t *tls_certs_json(const struct config *c, time_t now)
{
    struct certs_out o = {.list = json_array(), .now = now};
    each_ctx(c, ctx_certs, &o);
    json_t *root = json_object();
    json_object_set_new(root, "certificates", o.list);
    return root;
}

static void ctx_min_days(const struct tls_ctx *t, void *arg)
{
    each_cert(t, min_days, arg);
}

int64_t tls_days_until_first_cert_expiring(const struct config *c, time_t now)
{
    struct certs_walk w = {.now = now, .min_days = -1};
    each_ctx(c, ctx_min_days, &w);
    return w.min_days;
}
