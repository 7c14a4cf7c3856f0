/* tls_inspector: peeking at a connection's ClientHello before its chain is chosen (see
 * tls_inspector.h). */
#include "proxy/net/tls_inspector.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/accepted.h"
#include "proxy/net/chain_match.h"
#include "proxy/stats/stats.h"
#include "proxy/worker.h"

/* ---- the ClientHello ---- */

#define REC_HANDSHAKE 0x16
#define HS_CLIENT_HELLO 0x01
#define REC_HEADER 5
/* The largest TLS record body a peer may send (2^14 plus the ciphertext expansion): a header
 * announcing more is left to OpenSSL, which refuses it (not TLS). */
#define REC_MAX_BODY (16384 + 2048)

static SSL_CTX *hello_ctx;
static pthread_once_t hello_once = PTHREAD_ONCE_INIT;

struct hello_parse {
    struct tls_hello *out;
    bool found;
};

static int hello_idx = -1;

static uint32_t be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

/* The server_name extension: a u16-prefixed list of (u8 type, u16-prefixed name); the first
 * host_name (type 0) is taken. A malformed list, or a name with a control byte, space or NUL,
 * or longer than 255 bytes, counts as no name. */
static void take_sni(const uint8_t *p, size_t len, struct tls_hello *out)
{
    if (len < 2 || be16(p) != len - 2) {
        return;
    }
    size_t off = 2;
    while (off + 3 <= len) {
        uint8_t type = p[off];
        size_t nlen = be16(p + off + 1);
        off += 3;
        if (nlen > len - off) {
            return;
        }
        if (type == 0) {
            if (nlen == 0 || nlen >= sizeof(out->sni)) {
                return;
            }
            for (size_t i = 0; i < nlen; i++) {
                uint8_t c = p[off + i];
                if (c <= 0x20 || c >= 0x7f) {
                    out->sni[0] = '\0'; /* no name: nothing half-copied stays behind */
                    return;
                }
                out->sni[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
            }
            out->sni[nlen] = '\0';
            out->sni_len = nlen;
            return;
        }
        off += nlen;
    }
}

/* The ALPN extension: a u16-prefixed list of u8-prefixed, non-empty protocol names. As Envoy,
 * a malformed list counts as no ALPN (the TLS stack that terminates will refuse it). */
static void take_alpn(const uint8_t *p, size_t len, struct tls_hello *out)
{
    if (len < 3 || be16(p) != len - 2) {
        return;
    }
    /* check the whole list first, then keep what fits */
    for (size_t off = 2; off < len;) {
        size_t n = p[off];
        if (n == 0 || n > len - off - 1) {
            return;
        }
        off += 1 + n;
    }
    size_t used = 0;
    for (size_t off = 2; off < len && out->n_alpn < TLS_HELLO_ALPN_MAX;) {
        size_t n = p[off];
        if (n > sizeof(out->alpn_buf) - used) {
            break;
        }
        memcpy(out->alpn_buf + used, p + off + 1, n);
        out->alpn[out->n_alpn++] = (struct str){out->alpn_buf + used, n};
        used += n;
        off += 1 + n;
    }
    out->alpn_found = true;
}

/* OpenSSL calls this once it has the whole ClientHello, before any negotiation. */
static int hello_cb(SSL *ssl, int *alert, void *arg)
{
    (void)arg;
    struct hello_parse *hp = SSL_get_ex_data(ssl, hello_idx);
    const unsigned char *ext;
    size_t len;
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &len) == 1) {
        take_sni(ext, len, hp->out);
    }
    if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation, &ext,
                                  &len) == 1) {
        take_alpn(ext, len, hp->out);
    }
    hp->found = true;
    *alert = SSL_AD_USER_CANCELLED;
    return SSL_CLIENT_HELLO_ERROR; /* all we wanted: stop the handshake */
}

static void hello_init(void)
{
    hello_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    hello_ctx = SSL_CTX_new(TLS_server_method());
    if (hello_ctx == NULL) {
        return;
    }
    /* Every version OpenSSL can read a ClientHello of: the callback runs before negotiation. */
    SSL_CTX_set_min_proto_version(hello_ctx, 0);
    SSL_CTX_set_options(hello_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(hello_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_client_hello_cb(hello_ctx, hello_cb, NULL);
}

/* Runs OpenSSL's server handshake over `p[len]` as far as the ClientHello. */
static enum tls_hello_rc hello_openssl(const uint8_t *p, size_t len, struct tls_hello *out)
{
    pthread_once(&hello_once, hello_init);
    if (hello_ctx == NULL || hello_idx < 0 || len > (size_t)INT32_MAX) {
        return TLS_HELLO_NOT_TLS;
    }
    enum tls_hello_rc rc = TLS_HELLO_NOT_TLS;
    SSL *ssl = SSL_new(hello_ctx);
    BIO *rb = BIO_new_mem_buf(p, (int)len);
    BIO *wb = BIO_new(BIO_s_null()); /* the alert OpenSSL sends goes nowhere */
    if (ssl == NULL || rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        ERR_clear_error();
        return rc;
    }
    BIO_set_mem_eof_return(rb, -1); /* the end of the bytes is "more may come", not EOF */
    SSL_set_bio(ssl, rb, wb);
    struct hello_parse hp = {.out = out};
    SSL_set_ex_data(ssl, hello_idx, &hp);
    SSL_set_accept_state(ssl);
    int r = SSL_do_handshake(ssl);
    if (hp.found) {
        rc = TLS_HELLO_FOUND;
    } else if (r <= 0 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ) {
        rc = TLS_HELLO_MORE;
        out->need = len + 1;
    }
    SSL_free(ssl);
    /* OpenSSL's error queue is the thread's: leave nothing for the worker's TLS connections */
    ERR_clear_error();
    return rc;
}

enum tls_hello_rc tls_hello_parse(const uint8_t *p, size_t len, struct tls_hello *out)
{
    memset(out, 0, offsetof(struct tls_hello, alpn_buf));
    if (len == 0) {
        out->need = 1;
        return TLS_HELLO_MORE;
    }
    /* Not a handshake record (TLS 1.0-1.3 all start 0x16 0x03): not TLS, at once. */
    if (p[0] != REC_HANDSHAKE || (len >= 2 && p[1] != 0x03)) {
        return TLS_HELLO_NOT_TLS;
    }
    /* Walk the complete handshake records to learn how many bytes the ClientHello needs; any
     * oddity (another record type, a bad length, not a ClientHello) is OpenSSL's to judge. */
    size_t off = 0, hs_have = 0, need = 0;
    uint8_t hs_head[4];
    bool run = false;
    while (!run) {
        if (len - off < REC_HEADER) {
            need = off + REC_HEADER;
            break;
        }
        size_t body = be16(p + off + 3);
        if (p[off] != REC_HANDSHAKE || body == 0 || body > REC_MAX_BODY) {
            run = true;
            break;
        }
        if (len - off - REC_HEADER < body) {
            need = off + REC_HEADER + body;
            break;
        }
        for (size_t i = 0; i < body && hs_have + i < 4; i++) {
            hs_head[hs_have + i] = p[off + REC_HEADER + i];
        }
        hs_have += body;
        off += REC_HEADER + body;
        if (hs_have >= 4) {
            size_t hs_len = (size_t)hs_head[1] << 16 | (size_t)hs_head[2] << 8 | hs_head[3];
            if (hs_head[0] != HS_CLIENT_HELLO || hs_have >= 4 + hs_len) {
                run = true;
            } else if (off + (4 + hs_len - hs_have) > TLS_HELLO_MAX) {
                return TLS_HELLO_TOO_LARGE; /* its records alone are over the limit */
            }
        }
    }
    if (!run) {
        if (need > TLS_HELLO_MAX) {
            return TLS_HELLO_TOO_LARGE;
        }
        out->need = need;
        return TLS_HELLO_MORE;
    }
    enum tls_hello_rc rc = hello_openssl(p, len, out);
    if (rc == TLS_HELLO_MORE && len >= TLS_HELLO_MAX) {
        return TLS_HELLO_TOO_LARGE;
    }
    return rc;
}

void tls_hello_view(const struct tls_hello *h, bool tls, struct chain_tls *out)
{
    out->tls = tls;
    out->sni = tls ? (struct str){h->sni, h->sni_len} : STR_NULL;
    out->alpn = h->alpn;
    out->n_alpn = tls ? h->n_alpn : 0;
}

/* ---- a connection waiting for its first bytes ---- */

/* Wakeups one connection may take without a decision: each needs new bytes (SO_RCVLOWAT), and
 * a ClientHello takes about three (some bytes, the record header, the record), one more per
 * further record. Past it the socket is closed (downstream_listener_filter_error); Envoy has
 * no such bound, only the timeout. */
#define MAX_ROUNDS 64

struct pending {
    struct list link; /* worker.inspecting */
    struct deferred deferred;
    struct worker *w;
    int fd;
    const struct worker_listener *wl; /* borrowed: the listener that accepted it */
    uint32_t seen;                    /* bytes the last peek saw */
    uint16_t rounds;                  /* wakeups without a decision (bounded: MAX_ROUNDS) */
    bool lowat;                       /* SO_RCVLOWAT was raised */
    bool has_local;
    bool has_direct; /* the proxy_protocol filter restored `peer`: `direct` is the socket's */
    ev_io io;
    ev_timer timer;
    union sockaddr_ip peer, local, direct;
};

static void pending_free(struct deferred *d)
{
    free(LIST_ENTRY(d, struct pending, deferred));
}

static struct listener_stats *lstats(struct pending *c)
{
    return &c->wl->sc->stats->listener[c->wl->index];
}

/* Stops waiting: the socket is closed (`fd_close`) or was handed over. */
static void pending_end(struct pending *c, bool fd_close)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    list_remove(&c->link);
    STAT_DEC(lstats(c)->downstream_pre_cx_active);
    if (fd_close) {
        close(c->fd);
    }
    worker_defer(c->w, &c->deferred, pending_free);
}

static void hand_over(struct pending *c, const struct chain_tls *t)
{
    if (c->lowat) {
        int one = 1; /* the network filter reads as soon as anything arrives */
        setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    }
    struct accepted a = {.fd = c->fd,
                         .peer = &c->peer.sa,
                         .direct = c->has_direct ? &c->direct.sa : NULL,
                         .local = c->has_local ? &c->local.sa : NULL,
                         .requested_server_name = t != NULL ? t->sni : STR_NULL};
    struct worker *w = c->w;
    const struct worker_listener *wl = c->wl;
    pending_end(c, false);
    worker_accept_chain(w, wl, &a, t);
}

/* Whether the peer has not shut its side yet (TCP_INFO's state is still ESTABLISHED). */
static bool still_open(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
           ti.tcpi_state == TCP_ESTABLISHED;
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct pending *c = io->data;
    struct worker *w = c->w;
    struct tls_inspector_stats *ts = &w->stats->tls_inspector;
    ssize_t n = recv(c->fd, w->scratch, sizeof(w->scratch), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n < 0) {
        STAT_INC(lstats(c)->downstream_listener_filter_error);
        pending_end(c, true);
        return;
    }
    /* Nothing new although the socket is readable (past SO_RCVLOWAT): the peer shut its side
     * with a partial ClientHello, or sent nothing at all (n == 0). A connection still open
     * (a wakeup below the low mark) costs a round. */
    if (n > 0 && (size_t)n <= c->seen && still_open(c->fd)) {
        if (++c->rounds >= MAX_ROUNDS) {
            STAT_INC(lstats(c)->downstream_listener_filter_error);
            pending_end(c, true);
        }
        return;
    }
    if (n == 0 || (size_t)n <= c->seen) {
        STAT_INC(lstats(c)->downstream_listener_filter_remote_close);
        pending_end(c, true);
        return;
    }
    c->seen = (uint32_t)n;
    struct tls_hello h;
    switch (tls_hello_parse(w->scratch, (size_t)n, &h)) {
    case TLS_HELLO_FOUND: {
        STAT_INC(ts->tls_found);
        STAT_INC(*(h.sni_len > 0 ? &ts->sni_found : &ts->sni_not_found));
        STAT_INC(*(h.alpn_found ? &ts->alpn_found : &ts->alpn_not_found));
        struct chain_tls t;
        tls_hello_view(&h, true, &t);
        hand_over(c, &t);
        return;
    }
    case TLS_HELLO_NOT_TLS:
        STAT_INC(ts->tls_not_found);
        hand_over(c, NULL);
        return;
    case TLS_HELLO_TOO_LARGE:
        STAT_INC(ts->client_hello_too_large);
        pending_end(c, true);
        return;
    case TLS_HELLO_MORE:
        break;
    }
    if (++c->rounds >= MAX_ROUNDS) {
        LOG_D("tls_inspector: %u peeks without a whole ClientHello: closed", c->rounds);
        STAT_INC(lstats(c)->downstream_listener_filter_error);
        pending_end(c, true);
        return;
    }
    /* Wake when the bytes the ClientHello needs are there, not at every segment. */
    int lowat = (int)h.need;
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0) {
        c->lowat = true;
    }
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct pending *c = t->data;
    STAT_INC(lstats(c)->downstream_pre_cx_timeout);
    if (c->wl->l->continue_on_filters_timeout) {
        hand_over(c, NULL); /* what is known: no ClientHello, so "raw_buffer" (Envoy's default) */
    } else {
        pending_end(c, true);
    }
}

void tls_inspect_start(struct worker *w, const struct worker_listener *wl, const struct accepted *a)
{
    struct pending *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->fd = a->fd;
    c->wl = wl;
    sockaddr_ip_set(&c->peer, a->peer);
    c->has_local = sockaddr_ip_set(&c->local, a->local);
    c->has_direct = sockaddr_ip_set(&c->direct, a->direct);
    list_insert_tail(&w->inspecting, &c->link);
    STAT_INC(lstats(c)->downstream_pre_cx_active);
    ev_io_init(&c->io, io_cb, c->fd, EV_READ);
    c->io.data = c;
    ev_io_start(w->loop, &c->io);
    uint64_t ms = wl->l->filters_timeout_ms;
    ev_timer_init(&c->timer, timeout_cb, (double)ms / 1000.0, 0);
    c->timer.data = c;
    if (ms > 0) {
        ev_timer_start(w->loop, &c->timer);
    }
}

void tls_inspect_close_all(struct worker *w)
{
    while (!list_empty(&w->inspecting)) {
        pending_end(LIST_ENTRY(list_first(&w->inspecting), struct pending, link), true);
    }
}

void tls_inspect_close_listener(struct worker *w, const struct worker_listener *wl)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->inspecting)
    {
        struct pending *c = LIST_ENTRY(it, struct pending, link);
        if (c->wl == wl) {
            pending_end(c, true);
        }
    }
}
