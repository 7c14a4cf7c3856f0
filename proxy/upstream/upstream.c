/* upstream: HTTP/1.1 connections to endpoints and their per-endpoint idle pool, and the
 * protocol choice of upstream_acquire (see upstream.h; HTTP/2 is upstream_h2.c). The connection
 * parses responses with codec_h1 and hands every event to its bound stream. Writes go out as
 * soon as the stream appends (one write per burst); EV_WRITE is armed only when the socket
 * would block, so a small exchange costs one write and one read. */
#include "proxy/upstream/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/slab.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/stream.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/upstream_h2.h"

#define UPSTREAM_READ_CHUNK 16384
#define UPSTREAM_MAX_HEAD 65536
#define UPSTREAM_MAX_HEADERS 200

static void h1_release_conn(struct upstream_h1 *u, bool reusable);

static int on_head(void *ud, struct h1_msg *msg)
{
    struct upstream_h1 *u = ud;
    if (u->base.s == NULL) {
        return -1;
    }
    stream_upstream_head(u->base.s, msg);
    return u->state == UPSTREAM_ACTIVE && u->base.s != NULL ? 0 : -1;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct upstream_h1 *u = ud;
    if (u->base.s == NULL) {
        return -1;
    }
    stream_upstream_body(u->base.s, p, len);
    return u->state == UPSTREAM_ACTIVE && u->base.s != NULL ? 0 : -1;
}

static int on_done(void *ud)
{
    struct upstream_h1 *u = ud;
    if (u->base.s == NULL) {
        return -1;
    }
    stream_upstream_end(u->base.s);
    return 0;
}

/* A field of a chunked response's trailer section: kept for an HTTP/2 client (its bytes are
 * the parser's only during the call). */
static int on_trailer(void *ud, struct str name, struct str value)
{
    struct upstream_h1 *u = ud;
    if (u->base.s == NULL) {
        return -1;
    }
    stream_upstream_trailer(u->base.s, name, value);
    return 0;
}

static const struct h1_parser_cbs parser_cbs = {on_head, on_body, on_done, on_trailer};

static void free_upstream(struct deferred *d)
{
    struct upstream_h1 *u = LIST_ENTRY(d, struct upstream_h1, defer);
    buf_deinit(&u->rbuf);
    buf_deinit(&u->wbuf);
    h1_parser_deinit(u->parser);
    tls_conn_destroy(u->tls);
    slab_free(&u->w->uc_slab, u);
}

/* The connection is no longer a pending request's: connected, or closed while connecting. */
static void release_pending(struct upstream_h1 *u)
{
    if (u->holds_pending) {
        u->holds_pending = false;
        breaker_release(u->cluster->shared, BREAKER_PENDING);
        STAT_DEC(u->cluster->stats->upstream_rq_pending_active);
    }
}

static void h1_close_conn(struct upstream_h1 *u, const char *reason)
{
    if (u->state == UPSTREAM_CLOSED) {
        return;
    }
    if (reason != NULL) {
        LOG_D("upstream %.*s: closing: %s", STR_FMT(u->ep->cfg->addr.text), reason);
    }
    if (u->state == UPSTREAM_IDLE) {
        list_remove(&u->link);
        u->ep->n_idle--;
    }
    u->state = UPSTREAM_CLOSED;
    ev_io_stop(u->w->loop, &u->io);
    ev_timer_stop(u->w->loop, &u->timer);
    if (u->tls != NULL && !u->peer_eof) {
        tls_conn_shutdown(u->tls);
    }
    close(u->fd);
    u->fd = -1;
    u->base.s = NULL;
    u->ep->n_conns--;
    release_pending(u);
    breaker_release(u->cluster->shared, BREAKER_CX);
    STAT_DEC(u->cluster->stats->upstream_cx_active);
    STAT_DEC(u->ep->stats->cx_active);
    STAT_INC(u->cluster->stats->upstream_cx_destroy);
    worker_defer(u->w, &u->defer, free_upstream);
}

/* The bound stream learns of a failure; the connection is closed first so the stream sees a
 * consistent state (u->base.s is cleared) and cannot reuse it. */
static void fail(struct upstream_h1 *u, uint32_t flag, const char *reason)
{
    struct stream *s = u->base.s;
    u->base.s = NULL;
    h1_close_conn(u, reason);
    if (s != NULL) {
        s->uc = NULL;
        stream_upstream_failed(s, flag, reason);
    }
}

static void arm_write(struct upstream_h1 *u, bool on)
{
    if (u->want_write == on) {
        return;
    }
    u->want_write = on;
    int ev = (u->base.read_paused ? 0 : EV_READ) | (on ? EV_WRITE : 0);
    ev_io_stop(u->w->loop, &u->io);
    ev_io_set(&u->io, u->fd, ev);
    if (ev != 0) {
        ev_io_start(u->w->loop, &u->io);
    }
}

static void h1_pause(struct upstream_h1 *u, bool pause)
{
    if (u->base.read_paused == pause || u->state == UPSTREAM_CLOSED) {
        return;
    }
    u->base.read_paused = pause;
    int ev = (pause ? 0 : EV_READ) | (u->want_write ? EV_WRITE : 0);
    ev_io_stop(u->w->loop, &u->io);
    ev_io_set(&u->io, u->fd, ev);
    if (ev != 0) {
        ev_io_start(u->w->loop, &u->io);
    }
}

static void h1_flush_conn(struct upstream_h1 *u)
{
    if (u->state != UPSTREAM_ACTIVE) {
        return; /* connecting: flushed once connected */
    }
    while (buf_len(&u->wbuf) > 0) {
        ssize_t n = sock_send(u->fd, u->tls, buf_head(&u->wbuf), buf_len(&u->wbuf));
        if (n > 0) {
            stat_add(&u->cluster->stats->upstream_cx_tx_bytes_total, (uint64_t)n);
            buf_consume(&u->wbuf, (size_t)n);
            continue;
        }
        if (n == -EAGAIN) {
            /* TLS may wait for the peer's bytes (EV_READ is on unless paused) */
            arm_write(u, u->tls == NULL || u->tls->want_write);
            return;
        }
        fail(u, RF_UC, "write failed");
        return;
    }
    arm_write(u, false);
    buf_release(&u->wbuf);
    if (u->base.s != NULL) {
        stream_upstream_drained(u->base.s);
    }
}

static void established(struct upstream_h1 *u);

static void connect_failed(struct upstream_h1 *u, const char *reason)
{
    STAT_INC(u->cluster->stats->upstream_cx_connect_fail);
    STAT_INC(u->ep->stats->cx_connect_fail);
    fail(u, RF_UF, reason);
}

static void watch(struct upstream_h1 *u, int ev)
{
    ev_io_stop(u->w->loop, &u->io);
    ev_io_set(&u->io, u->fd, ev);
    ev_io_start(u->w->loop, &u->io);
}

/* Connecting: TCP, then for a TLS cluster the handshake, which is part of it (the connect
 * timeout covers both, and a failed handshake is a connect failure, flag UF, as Envoy's
 * transport failure). */
static void on_connected(struct upstream_h1 *u)
{
    if (u->tls == NULL) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
            if (u->base.s != NULL) {
                u->base.s->transport_errno = soerr != 0 ? soerr : errno; /* for the log */
            }
            connect_failed(u, "connection failure");
            return;
        }
    }
    const struct tls_ctx *tc = u->cluster->cfg->tls;
    if (tc != NULL) {
        const char *why = NULL;
        int r = tls_connect_step(&u->tls, tc, u->fd, NULL, 0, &u->cluster->stats->ssl, &why);
        if (r < 0) {
            connect_failed(u, why);
            return;
        }
        if (r == 0) {
            watch(u, tls_conn_wait_events(u->tls));
            return;
        }
        u->want_write = false; /* back to the usual: read, and write when it would block */
        watch(u, EV_READ);
    }
    established(u);
}

static void established(struct upstream_h1 *u)
{
    ev_timer_stop(u->w->loop, &u->timer);
    release_pending(u);
    hist_record_ms(&u->cluster->stats->upstream_cx_connect_ms,
                   (ev_now(u->w->loop) - u->t_connect) * 1000.0);
    u->state = UPSTREAM_ACTIVE;
    if (u->base.s != NULL) {
        stream_upstream_connected(u->base.s);
    }
    if (u->state == UPSTREAM_ACTIVE) {
        h1_flush_conn(u);
    }
}

static void on_read(struct upstream_h1 *u)
{
    /* Read into the worker's scratch buffer unless bytes are held over; keep only what the
     * parser did not consume (see downstream.c). */
    bool scratch = buf_len(&u->rbuf) == 0;
    uint8_t *p;
    size_t room;
    if (scratch) {
        p = u->w->scratch;
        room = sizeof(u->w->scratch);
    } else {
        p = buf_reserve(&u->rbuf, UPSTREAM_READ_CHUNK);
        room = buf_tail_room(&u->rbuf);
    }
    ssize_t n = sock_recv(u->fd, u->tls, p, room);
    if (n == -EAGAIN) {
        if (u->tls != NULL && u->tls->want_write) {
            arm_write(u, true); /* OpenSSL must write before it can read on */
        }
        return;
    }
    if (n < 0) {
        if (u->state == UPSTREAM_IDLE) {
            h1_close_conn(u, "reset while idle");
            return;
        }
        STAT_INC(u->cluster->stats->upstream_cx_destroy_remote);
        fail(u, u->response_started ? RF_UR : RF_UC, "connection reset");
        return;
    }
    if (n == 0) {
        STAT_INC(u->cluster->stats->upstream_cx_destroy_remote);
        u->peer_eof = true;
        if (u->state == UPSTREAM_IDLE) {
            h1_close_conn(u, "closed while idle");
            return;
        }
        /* EOF completes a close-delimited response; on_done then ends the stream, which
         * releases (and, as peer_eof is set, closes) this connection. */
        if (u->base.s != NULL && h1_parser_in_message(u->parser) && h1_parser_eof(u->parser) == 0) {
            if (u->state != UPSTREAM_CLOSED) {
                h1_close_conn(u, "closed by upstream after the response");
            }
            return;
        }
        fail(u, u->response_started ? RF_UR : RF_UC, "connection closed by upstream");
        return;
    }
    if (u->state == UPSTREAM_IDLE) {
        /* Bytes on an idle connection: an unsolicited response. Never hand it to anyone. */
        h1_close_conn(u, "unsolicited bytes while idle");
        return;
    }
    stat_add(&u->cluster->stats->upstream_cx_rx_bytes_total, (uint64_t)n);
    u->response_started = true;
    const uint8_t *in = p;
    size_t len = (size_t)n;
    if (!scratch) {
        buf_commit(&u->rbuf, (size_t)n);
        in = buf_head(&u->rbuf);
        len = buf_len(&u->rbuf);
    }
    size_t off = 0;
    u->in_read = true;
    while (off < len && u->state == UPSTREAM_ACTIVE && u->base.s != NULL) {
        ssize_t used = h1_parser_feed(u->parser, in + off, len - off);
        if (used < 0) {
            if (u->state != UPSTREAM_ACTIVE || u->base.s == NULL) {
                break; /* a callback released or closed us */
            }
            const char *why = NULL;
            h1_parser_error(u->parser, &why);
            STAT_INC(u->cluster->stats->upstream_cx_protocol_error);
            u->in_read = false;
            fail(u, RF_UPE, why ? why : "malformed response");
            return;
        }
        off += (size_t)used;
        if (used == 0) {
            break;
        }
    }
    u->in_read = false;
    if (u->state == UPSTREAM_CLOSED) {
        return;
    }
    if (scratch) {
        if (off < len) {
            buf_append(&u->rbuf, in + off, len - off);
        }
    } else {
        buf_consume(&u->rbuf, off);
    }
    struct stream *s = u->base.s;
    if (u->release_pending != 0) {
        bool reusable = u->release_pending == 1;
        u->release_pending = 0;
        h1_release_conn(u, reusable); /* closes it if bytes follow the response */
    } else if (s != NULL && u->state == UPSTREAM_ACTIVE) {
        downstream_flush(s->dc);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct upstream_h1 *u = io->data;
    if (u->state == UPSTREAM_CONNECTING) {
        on_connected(u);
        return;
    }
    if ((revents & EV_WRITE) && u->state == UPSTREAM_ACTIVE) {
        h1_flush_conn(u);
    }
    if ((revents & EV_READ) && u->state != UPSTREAM_CLOSED) {
        on_read(u);
        if (u->tls != NULL && u->state != UPSTREAM_CLOSED && !u->base.read_paused &&
            tls_conn_pending(u->tls)) {
            ev_feed_event(loop, io, EV_READ); /* records TLS read ahead: the socket is drained */
        }
    }
}

/* common_http_protocol_options.max_connection_duration: a connection that old is not reused
 * (Envoy drains it: the request in flight finishes, then it closes). */
static bool max_duration_reached(const struct upstream_h1 *u)
{
    uint64_t max_ms = u->cluster->cfg->max_connection_duration_ms;
    return max_ms > 0 && (ev_now(u->w->loop) - u->t_connect) * 1000.0 >= (double)max_ms - 0.5;
}

/* When a pooled connection must close: after the cluster's idle_timeout (default 1 h, 0: none)
 * since it went idle, or at the end of max_connection_duration, whichever comes first
 * (0: never). Sets *max_duration when the duration limit is the one due. */
static ev_tstamp pool_due(const struct upstream_h1 *u, bool *max_duration)
{
    const struct cluster_cfg *cc = u->cluster->cfg;
    ev_tstamp due = 0;
    *max_duration = false;
    if (cc->pool_idle_timeout_ms > 0) {
        due = u->t_idle + (double)cc->pool_idle_timeout_ms / 1000.0;
    }
    if (cc->max_connection_duration_ms > 0) {
        ev_tstamp end = u->t_connect + (double)cc->max_connection_duration_ms / 1000.0;
        if (due == 0 || end <= due) {
            due = end;
            *max_duration = true;
        }
    }
    return due;
}

/* The pool's timer is lazy (libev's documented pattern for timeouts that keep moving): taking
 * a connection from the pool leaves it running, and putting it back only starts it when it is
 * not running. When it fires, it checks what is really due and starts again for the rest, so a
 * busy keep-alive connection costs no timer operation per request. */
static void pool_timer_arm(struct upstream_h1 *u)
{
    bool max_duration;
    ev_tstamp due = pool_due(u, &max_duration);
    if (due == 0 || ev_is_active(&u->timer)) {
        return; /* none; or running, and it fires no later than `due` (see timer_cb) */
    }
    double after = due - ev_now(u->w->loop);
    ev_timer_set(&u->timer, after > 0.001 ? after : 0.001, 0);
    ev_timer_start(u->w->loop, &u->timer);
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct upstream_h1 *u = t->data;
    if (u->state == UPSTREAM_CONNECTING) {
        STAT_INC(u->cluster->stats->upstream_cx_connect_timeout);
        connect_failed(u, "connection timeout");
        return;
    }
    if (u->state != UPSTREAM_IDLE) {
        return; /* in use: started again when it goes back to the pool */
    }
    bool max_duration;
    ev_tstamp due = pool_due(u, &max_duration);
    if (due == 0) {
        return;
    }
    if (due - ev_now(loop) > 0.001) {
        /* Went idle again since this was started: the rest of the time. Every due time is
         * no earlier than the one this timer was started for (t_idle only moves forward), so
         * the timer never fires late. */
        ev_timer_set(t, due - ev_now(loop), 0);
        ev_timer_start(loop, t);
        return;
    }
    if (max_duration) {
        STAT_INC(u->cluster->stats->upstream_cx_max_duration_reached);
        h1_close_conn(u, "max connection duration");
        return;
    }
    STAT_INC(u->cluster->stats->upstream_cx_idle_timeout);
    h1_close_conn(u, "idle timeout");
}

/* ---- the seam (upstream.h): HTTP/1.1 ---- */

static struct upstream_h1 *h1(const struct upstream *u)
{
    return (struct upstream_h1 *)((char *)u - offsetof(struct upstream_h1, base));
}

static void op_send_head(struct upstream *up, struct str method, struct str path,
                         const struct headers *h, bool end)
{
    (void)end;
    struct upstream_h1 *u = h1(up);
    h1_encode_request_head(&u->wbuf, method, path, h);
    if (up->s != NULL && up->s->is_head) {
        h1_parser_expect_no_body(u->parser);
    }
}

static void op_send_body(struct upstream *up, const uint8_t *p, size_t len)
{
    struct upstream_h1 *u = h1(up);
    if (up->s != NULL && up->s->req_chunked) {
        h1_encode_chunk(&u->wbuf, p, len);
    } else {
        buf_append(&u->wbuf, p, len);
    }
}

static void op_send_end(struct upstream *up, const struct headers *trailers)
{
    if (up->s != NULL && up->s->req_chunked) {
        h1_encode_last_chunk(&h1(up)->wbuf, trailers); /* trailers go only in a chunked body */
    }
}

static void op_flush(struct upstream *up)
{
    h1_flush_conn(h1(up));
}

static void op_pause_read(struct upstream *up, bool pause)
{
    h1_pause(h1(up), pause);
}

static size_t op_buffered(const struct upstream *up)
{
    return buf_len(&h1(up)->wbuf);
}

static void op_release(struct upstream *up, bool reusable)
{
    h1_release_conn(h1(up), reusable);
}

static void op_close(struct upstream *up, const char *reason)
{
    h1_close_conn(h1(up), reason);
}

static const struct upstream_ops h1_ops = {
    .send_head = op_send_head,
    .send_body = op_send_body,
    .send_end = op_send_end,
    .flush = op_flush,
    .pause_read = op_pause_read,
    .buffered = op_buffered,
    .release = op_release,
    .close = op_close,
};

size_t upstream_h1_obj_size(void)
{
    return WORKER_OBJ_ALIGN(sizeof(struct upstream_h1)) + h1_parser_sizeof();
}

void upstream_conn_info_init(struct upstream_conn_info *ci, struct worker *w, int fd)
{
    ci->id = worker_conn_id(w);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        !sockaddr_ip_set(&ci->local, (const struct sockaddr *)&ss)) {
        ci->local.sa.sa_family = AF_UNSPEC;
    }
}

static struct upstream_h1 *connect_new(struct worker *w, struct cluster_rt *c,
                                       struct endpoint_rt *ep, int *err)
{
    const struct breaker_cfg *cb = &c->cfg->breakers[0];
    if (!breaker_acquire(c->shared, cb, BREAKER_CX)) {
        *err = -EUSERS;
        return NULL;
    }
    if (!breaker_acquire(c->shared, cb, BREAKER_PENDING)) {
        breaker_release(c->shared, BREAKER_CX);
        *err = -EBUSY;
        return NULL;
    }
    struct sock_addr la;
    const struct sock_addr *a = endpoint_connect_addr(ep->cfg, &la); /* LOGICAL_DNS: now's */
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        LOG_W("upstream socket(): %s", strerror(errno));
        breaker_release(c->shared, BREAKER_PENDING);
        breaker_release(c->shared, BREAKER_CX);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct upstream_h1 *u = slab_alloc(&w->uc_slab); /* sized for the struct plus its parser */
    u->base.ops = &h1_ops;
    u->base.read_paused = false;
    u->base.is_h2 = false;
    u->w = w;
    u->cluster = c;
    u->ep = ep;
    u->fd = fd;
    list_init(&u->link);
    buf_init(&u->rbuf);
    buf_init(&u->wbuf);
    u->parser = h1_parser_init((char *)u + WORKER_OBJ_ALIGN(sizeof(*u)), H1_RESPONSE,
                               UPSTREAM_MAX_HEAD, UPSTREAM_MAX_HEADERS, &parser_cbs, u);
    h1_parser_use_caches(u->parser, &w->h1_arena_cache, &w->h1_head_cache);
    ev_io_init(&u->io, io_cb, fd, EV_WRITE);
    u->io.data = u;
    ev_timer_init(&u->timer, timer_cb, (double)c->cfg->connect_timeout_ms / 1000.0, 0);
    u->timer.data = u;
    u->state = UPSTREAM_CONNECTING;
    u->t_connect = ev_now(w->loop);
    u->holds_pending = true;
    STAT_INC(c->stats->upstream_rq_pending_total);
    STAT_INC(c->stats->upstream_rq_pending_active);
    ep->n_conns++;
    STAT_INC(c->stats->upstream_cx_total);
    STAT_INC(c->stats->upstream_cx_http1_total);
    STAT_INC(c->stats->upstream_cx_active);
    STAT_INC(ep->stats->cx_total);
    STAT_INC(ep->stats->cx_active);

    int rc = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    int connect_errno = errno;
    upstream_conn_info_init(&u->info, w, fd);
    u->base.conn = &u->info;
    if (rc == 0 || connect_errno == EINPROGRESS) {
        u->want_write = true;
        ev_io_start(w->loop, &u->io);
        if (c->cfg->connect_timeout_ms > 0) {
            ev_timer_start(w->loop, &u->timer);
        }
        return u;
    }
    /* Immediate failure (e.g. ECONNREFUSED on loopback): report it from the loop, through the
     * normal path, so the stream is never called back from inside upstream_acquire. */
    u->want_write = true;
    ev_io_start(w->loop, &u->io);
    return u;
}

static struct upstream_h1 *h1_acquire(struct worker *w, struct cluster_rt *c,
                                      struct endpoint_rt *ep, struct stream *s, int *err)
{
    struct upstream_h1 *u = NULL;
    while (!list_empty(&ep->idle)) {
        u = LIST_ENTRY(ep->idle.prev, struct upstream_h1, link); /* most recently used: warm */
        list_remove(&u->link);
        ep->n_idle--;
        u->state = UPSTREAM_ACTIVE; /* the pool's timer keeps running (pool_timer_arm) */
        u->reused = true;
        break;
    }
    if (u == NULL) {
        u = connect_new(w, c, ep, err);
        if (u == NULL) {
            return NULL;
        }
    }
    ev_set_cb(&u->io, io_cb);
    u->base.s = s;
    u->response_started = false;
    u->n_requests++;
    return u;
}

struct upstream *upstream_acquire(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                  struct stream *s, int *err)
{
    enum upstream_protocol proto = c->cfg->protocol;
    if (proto == UPSTREAM_PROTO_DOWNSTREAM) {
        proto = s->h2s != NULL ? UPSTREAM_PROTO_HTTP2 : UPSTREAM_PROTO_HTTP1;
    }
    if (proto == UPSTREAM_PROTO_HTTP2) {
        return upstream_h2_acquire(w, c, ep, s, err);
    }
    struct upstream_h1 *u = h1_acquire(w, c, ep, s, err);
    return u != NULL ? &u->base : NULL;
}

void upstream_close_idle(struct endpoint_rt *ep)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &ep->idle)
    {
        h1_close_conn(LIST_ENTRY(it, struct upstream_h1, link), NULL);
    }
    upstream_h2_close_idle(ep);
}

static void h1_release_conn(struct upstream_h1 *u, bool reusable)
{
    if (u->state == UPSTREAM_CLOSED) {
        return;
    }
    u->base.s = NULL;
    if (u->in_read) {
        /* Called from a parser callback: the bytes being parsed are still in rbuf. Decide
         * once the read handler has consumed them. */
        u->release_pending = reusable ? 1 : 2;
        return;
    }
    if (!reusable || u->state != UPSTREAM_ACTIVE || buf_len(&u->wbuf) > 0 ||
        buf_len(&u->rbuf) > 0 || h1_parser_in_message(u->parser) || u->peer_eof || u->w->draining) {
        STAT_INC(u->cluster->stats->upstream_cx_destroy_local);
        h1_close_conn(u, "not reusable");
        return;
    }
    if (max_duration_reached(u)) {
        STAT_INC(u->cluster->stats->upstream_cx_max_duration_reached);
        h1_close_conn(u, "max connection duration");
        return;
    }
    uint32_t max_rq = u->cluster->cfg->max_requests_per_connection;
    if (max_rq > 0 && u->n_requests >= max_rq) {
        STAT_INC(u->cluster->stats->upstream_cx_max_requests);
        h1_close_conn(u, "max requests per connection");
        return;
    }
    u->state = UPSTREAM_IDLE;
    if (u->base.read_paused) {
        h1_pause(u, false);
    }
    buf_release(&u->rbuf);
    buf_release(&u->wbuf);
    h1_parser_release(u->parser);
    list_insert_tail(&u->ep->idle, &u->link);
    u->ep->n_idle++;
    u->t_idle = ev_now(u->w->loop);
    pool_timer_arm(u);
}
