/* upstream: HTTP/1.1 connections to endpoints and their per-endpoint idle pool (see
 * upstream.h). The connection parses responses with codec_h1 and hands every event to its
 * bound stream. Writes go out as soon as the stream appends (one write per burst); EV_WRITE is
 * armed only when the socket would block, so a small exchange costs one write and one read. */
#include "proxy/upstream/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
#include "proxy/stats/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/cluster.h"

#define UPSTREAM_READ_CHUNK 16384
#define UPSTREAM_MAX_HEAD 65536
#define UPSTREAM_MAX_HEADERS 200

static int on_head(void *ud, struct h1_msg *msg)
{
    struct upstream *u = ud;
    if (u->s == NULL) {
        return -1;
    }
    stream_upstream_head(u->s, msg);
    return u->state == UPSTREAM_ACTIVE && u->s != NULL ? 0 : -1;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct upstream *u = ud;
    if (u->s == NULL) {
        return -1;
    }
    stream_upstream_body(u->s, p, len);
    return u->state == UPSTREAM_ACTIVE && u->s != NULL ? 0 : -1;
}

static int on_done(void *ud)
{
    struct upstream *u = ud;
    if (u->s == NULL) {
        return -1;
    }
    stream_upstream_end(u->s);
    return 0;
}

static const struct h1_parser_cbs parser_cbs = {on_head, on_body, on_done};

static void free_upstream(struct deferred *d)
{
    struct upstream *u = LIST_ENTRY(d, struct upstream, defer);
    buf_deinit(&u->rbuf);
    buf_deinit(&u->wbuf);
    h1_parser_deinit(u->parser);
    slab_free(&u->w->uc_slab, u);
}

/* The connection is no longer a pending request's: connected, or closed while connecting. */
static void release_pending(struct upstream *u)
{
    if (u->holds_pending) {
        u->holds_pending = false;
        breaker_release(u->cluster->shared, BREAKER_PENDING);
        STAT_DEC(u->cluster->stats->upstream_rq_pending_active);
    }
}

void upstream_close(struct upstream *u, const char *reason)
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
    close(u->fd);
    u->fd = -1;
    u->s = NULL;
    u->ep->n_conns--;
    release_pending(u);
    breaker_release(u->cluster->shared, BREAKER_CX);
    STAT_DEC(u->cluster->stats->upstream_cx_active);
    STAT_DEC(u->ep->stats->cx_active);
    STAT_INC(u->cluster->stats->upstream_cx_destroy);
    worker_defer(u->w, &u->defer, free_upstream);
}

/* The bound stream learns of a failure; the connection is closed first so the stream sees a
 * consistent state (u->s is cleared) and cannot reuse it. */
static void fail(struct upstream *u, uint32_t flag, const char *reason)
{
    struct stream *s = u->s;
    u->s = NULL;
    upstream_close(u, reason);
    if (s != NULL) {
        s->uc = NULL;
        stream_upstream_failed(s, flag, reason);
    }
}

static void arm_write(struct upstream *u, bool on)
{
    if (u->want_write == on) {
        return;
    }
    u->want_write = on;
    int ev = (u->read_paused ? 0 : EV_READ) | (on ? EV_WRITE : 0);
    ev_io_stop(u->w->loop, &u->io);
    ev_io_set(&u->io, u->fd, ev);
    if (ev != 0) {
        ev_io_start(u->w->loop, &u->io);
    }
}

void upstream_pause_read(struct upstream *u, bool pause)
{
    if (u->read_paused == pause || u->state == UPSTREAM_CLOSED) {
        return;
    }
    u->read_paused = pause;
    int ev = (pause ? 0 : EV_READ) | (u->want_write ? EV_WRITE : 0);
    ev_io_stop(u->w->loop, &u->io);
    ev_io_set(&u->io, u->fd, ev);
    if (ev != 0) {
        ev_io_start(u->w->loop, &u->io);
    }
}

void upstream_flush(struct upstream *u)
{
    if (u->state != UPSTREAM_ACTIVE) {
        return; /* connecting: flushed once connected */
    }
    while (buf_len(&u->wbuf) > 0) {
        ssize_t n = send(u->fd, buf_head(&u->wbuf), buf_len(&u->wbuf), MSG_NOSIGNAL);
        if (n > 0) {
            stat_add(&u->cluster->stats->upstream_cx_tx_bytes_total, (uint64_t)n);
            buf_consume(&u->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            arm_write(u, true);
            return;
        }
        fail(u, RF_UC, "write failed");
        return;
    }
    arm_write(u, false);
    buf_release(&u->wbuf);
    if (u->s != NULL) {
        stream_upstream_drained(u->s);
    }
}

static void on_connected(struct upstream *u)
{
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
        STAT_INC(u->cluster->stats->upstream_cx_connect_fail);
        STAT_INC(u->ep->stats->cx_connect_fail);
        fail(u, RF_UF, "connection failure");
        return;
    }
    ev_timer_stop(u->w->loop, &u->timer);
    release_pending(u);
    hist_record_ms(&u->cluster->stats->upstream_cx_connect_ms,
                   (ev_now(u->w->loop) - u->t_connect) * 1000.0);
    u->state = UPSTREAM_ACTIVE;
    if (u->s != NULL) {
        stream_upstream_connected(u->s);
    }
    if (u->state == UPSTREAM_ACTIVE) {
        upstream_flush(u);
    }
}

static void on_read(struct upstream *u)
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
    ssize_t n = recv(u->fd, p, room, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        if (u->state == UPSTREAM_IDLE) {
            upstream_close(u, "reset while idle");
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
            upstream_close(u, "closed while idle");
            return;
        }
        /* EOF completes a close-delimited response; on_done then ends the stream, which
         * releases (and, as peer_eof is set, closes) this connection. */
        if (u->s != NULL && h1_parser_in_message(u->parser) && h1_parser_eof(u->parser) == 0) {
            if (u->state != UPSTREAM_CLOSED) {
                upstream_close(u, "closed by upstream after the response");
            }
            return;
        }
        fail(u, u->response_started ? RF_UR : RF_UC, "connection closed by upstream");
        return;
    }
    if (u->state == UPSTREAM_IDLE) {
        /* Bytes on an idle connection: an unsolicited response. Never hand it to anyone. */
        upstream_close(u, "unsolicited bytes while idle");
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
    while (off < len && u->state == UPSTREAM_ACTIVE && u->s != NULL) {
        ssize_t used = h1_parser_feed(u->parser, in + off, len - off);
        if (used < 0) {
            if (u->state != UPSTREAM_ACTIVE || u->s == NULL) {
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
    struct stream *s = u->s;
    if (u->release_pending != 0) {
        bool reusable = u->release_pending == 1;
        u->release_pending = 0;
        upstream_release(u, reusable); /* closes it if bytes follow the response */
    } else if (s != NULL && u->state == UPSTREAM_ACTIVE) {
        downstream_flush(s->dc);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct upstream *u = io->data;
    if (u->state == UPSTREAM_CONNECTING) {
        on_connected(u);
        return;
    }
    if ((revents & EV_WRITE) && u->state == UPSTREAM_ACTIVE) {
        upstream_flush(u);
    }
    if ((revents & EV_READ) && u->state != UPSTREAM_CLOSED) {
        on_read(u);
    }
}

/* common_http_protocol_options.max_connection_duration: a connection that old is not reused
 * (Envoy drains it: the request in flight finishes, then it closes). */
static bool max_duration_reached(const struct upstream *u)
{
    uint64_t max_ms = u->cluster->cfg->max_connection_duration_ms;
    return max_ms > 0 && (ev_now(u->w->loop) - u->t_connect) * 1000.0 >= (double)max_ms - 0.5;
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct upstream *u = t->data;
    if (u->state == UPSTREAM_CONNECTING) {
        STAT_INC(u->cluster->stats->upstream_cx_connect_timeout);
        STAT_INC(u->cluster->stats->upstream_cx_connect_fail);
        STAT_INC(u->ep->stats->cx_connect_fail);
        fail(u, RF_UF, "connection timeout");
    } else if (u->state == UPSTREAM_IDLE) {
        if (max_duration_reached(u)) {
            STAT_INC(u->cluster->stats->upstream_cx_max_duration_reached);
            upstream_close(u, "max connection duration");
            return;
        }
        STAT_INC(u->cluster->stats->upstream_cx_idle_timeout);
        upstream_close(u, "idle timeout");
    }
}

static struct upstream *connect_new(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                    int *err)
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
    const struct sock_addr *a = &ep->cfg->addr;
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
    struct upstream *u = slab_alloc(&w->uc_slab); /* sized for the struct plus its parser */
    u->w = w;
    u->cluster = c;
    u->ep = ep;
    u->fd = fd;
    list_init(&u->link);
    buf_init(&u->rbuf);
    buf_init(&u->wbuf);
    u->parser = h1_parser_init((char *)u + WORKER_OBJ_ALIGN(sizeof(*u)), H1_RESPONSE,
                               UPSTREAM_MAX_HEAD, UPSTREAM_MAX_HEADERS, &parser_cbs, u);
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
    if (rc == 0 || errno == EINPROGRESS) {
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

struct upstream *upstream_acquire(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                  struct stream *s, int *err)
{
    struct upstream *u = NULL;
    while (!list_empty(&ep->idle)) {
        u = LIST_ENTRY(ep->idle.prev, struct upstream, link); /* most recently used: warm */
        list_remove(&u->link);
        ep->n_idle--;
        ev_timer_stop(w->loop, &u->timer);
        u->state = UPSTREAM_ACTIVE;
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
    u->s = s;
    u->response_started = false;
    return u;
}

void upstream_release(struct upstream *u, bool reusable)
{
    if (u->state == UPSTREAM_CLOSED) {
        return;
    }
    u->s = NULL;
    if (u->in_read) {
        /* Called from a parser callback: the bytes being parsed are still in rbuf. Decide
         * once the read handler has consumed them. */
        u->release_pending = reusable ? 1 : 2;
        return;
    }
    if (!reusable || u->state != UPSTREAM_ACTIVE || buf_len(&u->wbuf) > 0 ||
        buf_len(&u->rbuf) > 0 || h1_parser_in_message(u->parser) || u->peer_eof || u->w->draining) {
        STAT_INC(u->cluster->stats->upstream_cx_destroy_local);
        upstream_close(u, "not reusable");
        return;
    }
    if (max_duration_reached(u)) {
        STAT_INC(u->cluster->stats->upstream_cx_max_duration_reached);
        upstream_close(u, "max connection duration");
        return;
    }
    u->state = UPSTREAM_IDLE;
    if (u->read_paused) {
        upstream_pause_read(u, false);
    }
    buf_release(&u->rbuf);
    buf_release(&u->wbuf);
    h1_parser_release(u->parser);
    list_insert_tail(&u->ep->idle, &u->link);
    u->ep->n_idle++;
    /* One timer for both limits: the cluster's idle_timeout (default 1 h, 0: none) and what is
     * left of max_connection_duration; timer_cb tells them apart. */
    const struct cluster_cfg *cc = u->cluster->cfg;
    double after = cc->pool_idle_timeout_ms > 0 ? (double)cc->pool_idle_timeout_ms / 1000.0 : -1;
    if (cc->max_connection_duration_ms > 0) {
        double left =
            u->t_connect + (double)cc->max_connection_duration_ms / 1000.0 - ev_now(u->w->loop);
        if (after < 0 || left < after) {
            after = left > 0.001 ? left : 0.001;
        }
    }
    if (after > 0) {
        ev_timer_set(&u->timer, after, 0);
        ev_timer_start(u->w->loop, &u->timer);
    }
}
