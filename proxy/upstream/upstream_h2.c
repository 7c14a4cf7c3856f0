/* upstream_h2: HTTP/2 connections to endpoints (see upstream_h2.h). One nghttp2 client session
 * per connection, fed from the worker's scratch buffer with nghttp2_session_mem_recv; frames
 * are pulled with nghttp2_session_mem_send into the connection's write buffer while it is under
 * 64 KiB. Each request is a `struct h2_stream` (its `base` is what the stream holds).
 *
 * Stream object lifetime: allocated per attempt, freed once both the stream machine let go of
 * it (released, closed, or failed: `base.s` NULL) and nghttp2 is done with it (closed it, never
 * sent its HEADERS, or the connection went away). nghttp2 keeps a pointer to it as stream user
 * data until then, which is why it is not in the stream's arena.
 *
 * Nothing here calls a stream back from inside nghttp2_session_mem_send except
 * stream_upstream_drained; stream callbacks run from mem_recv (the peer's frames). The
 * connection is never closed inside a session callback: `want_close` defers it to the end of
 * the read or write that is running.
 *
 * Keepalive (the cluster's http2_protocol_options.connection_keepalive, h2_keepalive.h): PINGs
 * from the moment a connection is up; no ACK within the timeout closes it as a local close
 * (http2.keepalive_timeout): its streams fail as on any connection failure (UC, retriable
 * under retry_on reset). */
#include "proxy/upstream/upstream_h2.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/h2_keepalive.h"
#include "proxy/http/stream.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/h2_headers.h"
#include "proxy/upstream/upstream.h"

#define H2U_WBUF_HIGH 65536     /* produce frames while the write buffer is below this */
#define H2U_MAX_HEAD 65536      /* response header block bytes (as HTTP/1.1's UPSTREAM_MAX_HEAD) */
#define H2U_MAX_HEADERS 200     /* response header count */
#define H2U_MAX_TOUCHED 16      /* downstreams flushed after a read, before flushing at once */
#define H2U_ID_LIMIT 0x7ffffff0 /* stream ids left: drain the connection before they run out */

enum h2c_state {
    H2C_CONNECTING,
    H2C_OPEN,
    H2C_CLOSED,
};

struct h2_conn {
    struct worker *w;           /* borrowed: owner */
    struct cluster_rt *cluster; /* borrowed */
    struct endpoint_rt *ep;     /* borrowed */
    int fd;                     /* owned */
    int connect_errno;          /* a failed connect's, for its streams' access log */
    struct upstream_conn_info info;
    ev_io io;
    ev_timer timer;         /* connect timeout, then the idle timeout while no stream is bound */
    ev_timer life;          /* max_connection_duration */
    struct h2_keepalive ka; /* connection_keepalive's PINGs (off unless configured) */
    nghttp2_session *sess;  /* owned */
    struct buf wbuf;        /* owned: frames not yet written */
    struct list link;       /* in ep->h2_conns while it takes streams or has some */
    struct list streams;    /* h2_stream.link: every stream object not yet freed */
    uint32_t n_bound;       /* streams a stream machine still holds */
    uint32_t n_started;     /* streams ever started (max_requests_per_connection) */
    enum h2c_state state;
    bool draining;     /* takes no new stream; closes when the last bound one is released */
    bool want_write;   /* EV_WRITE armed */
    bool in_cb;        /* inside mem_recv or mem_send */
    bool want_flush;   /* a flush was asked for while in_cb */
    bool want_close;   /* a close was asked for while in_cb */
    bool fail_pending; /* a stream's HEADERS could not be submitted: fail it from the loop */
    ev_tstamp t_connect;
    struct tls_conn *tls; /* owned: the TLS session (cluster->cfg->tls), or NULL */
    struct downstream *touched[H2U_MAX_TOUCHED]; /* borrowed: to flush after this read */
    uint32_t n_touched;
    struct deferred defer;
};

struct h2_stream {
    struct upstream base; /* base.s: the stream machine's, NULL once let go */
    struct h2_conn *c;    /* borrowed: its connection, NULL once the connection is gone */
    struct list link;     /* in c->streams */
    int32_t id;           /* 0 before HEADERS was submitted */
    /* request */
    struct buf out;                 /* owned: body bytes nghttp2 has not taken yet */
    const struct headers *trailers; /* borrowed from the stream: sent after `out`, or NULL */
    bool out_end;                   /* the request ends after `out` */
    bool deferred;                  /* the data provider is deferred: resume on new bytes */
    bool end_sent;                  /* END_STREAM went out (or is queued) */
    bool holds_pending;             /* holds a BREAKER_PENDING unit (connection connecting) */
    bool submit_failed;             /* HEADERS could not be submitted */
    bool hdrs_sent;                 /* nghttp2 wrote its HEADERS (the peer may have seen it) */
    /* response */
    struct headers hdrs; /* head fields (copied into the stream's arena) */
    size_t hdr_bytes;
    uint32_t n_hdrs;
    int status;
    int64_t content_length;
    bool head_done;      /* the final response head went to the stream */
    bool resp_byte;      /* any response frame arrived */
    bool protocol_error; /* a malformed or oversized response (UPE) */
    bool ended;          /* END_STREAM arrived */
    size_t unacked;      /* DATA bytes received and not yet acknowledged (paused) */
    bool closed;         /* nghttp2 is done with it */
};

static const struct upstream_ops h2_ops;

static struct h2_stream *hs_of(const struct upstream *u)
{
    return (struct h2_stream *)((char *)u - offsetof(struct h2_stream, base));
}

static struct cluster_http2_stats *h2st(struct h2_conn *c)
{
    return &c->cluster->stats->http2;
}

static void conn_flush(struct h2_conn *c);
static void conn_close(struct h2_conn *c, const char *reason);
static uint32_t stream_limit(const struct h2_conn *c);
static void settings_changed(struct h2_conn *c);

/* ---- stream objects ---- */

static void stream_obj_free(struct h2_stream *h)
{
    list_remove(&h->link);
    buf_deinit(&h->out);
    free(h);
}

static void release_pending(struct h2_stream *h)
{
    if (h->holds_pending) {
        h->holds_pending = false;
        breaker_release(h->c->cluster->shared, BREAKER_PENDING);
        STAT_DEC(h->c->cluster->stats->upstream_rq_pending_active);
    }
}

/* A bound stream count went down: start the idle timer, or close a draining connection. */
static void after_unbind(struct h2_conn *c)
{
    if (c->n_bound > 0 || c->state == H2C_CLOSED) {
        return;
    }
    if (c->draining || c->w->draining) {
        conn_close(c, "drained");
        return;
    }
    uint64_t idle_ms = c->cluster->cfg->pool_idle_timeout_ms;
    if (c->state == H2C_OPEN && idle_ms > 0) {
        ev_timer_stop(c->w->loop, &c->timer);
        ev_timer_set(&c->timer, (double)idle_ms / 1000.0, 0);
        ev_timer_start(c->w->loop, &c->timer);
    }
}

/* The stream machine lets go of `h`: no more calls to it. An open HTTP/2 stream is reset
 * (CANCEL) when `cancel`; its unacknowledged DATA is given back to the connection window. */
static void unbind(struct h2_stream *h, bool cancel)
{
    struct h2_conn *c = h->c;
    if (h->base.s == NULL) {
        return;
    }
    h->base.s = NULL;
    if (c == NULL) {
        return;
    }
    release_pending(h);
    c->n_bound--;
    STAT_DEC(h2st(c)->streams_active);
    buf_deinit(&h->out);
    if (c->state != H2C_CLOSED && h->id > 0 && !h->closed) {
        if (h->unacked > 0) {
            nghttp2_session_consume(c->sess, h->id, h->unacked);
            h->unacked = 0;
        }
        if (cancel && !(h->ended && h->end_sent)) {
            /* (ended both ways, nghttp2 closes it once the current frame is processed) */
            nghttp2_submit_rst_stream(c->sess, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_CANCEL);
        }
    }
    if (h->closed || h->id == 0) {
        stream_obj_free(h);
    }
    after_unbind(c);
    conn_flush(c);
}

/* Remembers the downstream of `s` to flush once the current read is processed. */
static void touch(struct h2_conn *c, struct stream *s)
{
    struct downstream *d = s->dc;
    for (uint32_t i = 0; i < c->n_touched; i++) {
        if (c->touched[i] == d) {
            return;
        }
    }
    if (c->n_touched < H2U_MAX_TOUCHED) {
        c->touched[c->n_touched++] = d;
    } else {
        downstream_flush(d);
    }
}

/* ---- nghttp2 callbacks ---- */

static struct h2_stream *bound(nghttp2_session *ss, int32_t id)
{
    struct h2_stream *h = nghttp2_session_get_stream_user_data(ss, id);
    return h != NULL && h->base.s != NULL ? h : NULL;
}

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    (void)ud;
    struct h2_stream *h = bound(ss, f->hd.stream_id);
    if (h != NULL && !h->head_done) {
        /* a (final or interim) response head starts: the interim one's fields are dropped */
        headers_init(&h->hdrs, &h->base.s->arena, 16);
        h->hdr_bytes = 0;
        h->n_hdrs = 0;
        h->status = 0;
        h->content_length = -1;
    }
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    struct h2_conn *c = ud;
    struct h2_stream *h = bound(ss, f->hd.stream_id);
    if (h == NULL || f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    struct stream *s = h->base.s;
    h->resp_byte = true;
    h->hdr_bytes += namelen + valuelen;
    h->n_hdrs++;
    if (h->hdr_bytes > H2U_MAX_HEAD || h->n_hdrs > H2U_MAX_HEADERS) {
        STAT_INC(h2st(c)->header_overflow);
        h->protocol_error = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM for this stream */
    }
    struct str n = {(const char *)name, namelen};
    struct str v = {(const char *)value, valuelen};
    if (h->head_done) {
        stream_upstream_trailer(s, n, v); /* nghttp2 has rejected pseudo-headers here */
        return 0;
    }
    if (namelen > 0 && name[0] == ':') {
        if (str_eq_lit(n, ":status")) {
            unsigned long long st;
            h->status = str_to_u64(v, &st) == 0 && st >= 100 && st <= 999 ? (int)st : 0;
        }
        return 0;
    }
    if (str_eq_lit(n, "content-length")) {
        unsigned long long cl;
        if (str_to_u64(v, &cl) == 0 && cl <= INT64_MAX) {
            h->content_length = (int64_t)cl;
        }
    }
    headers_add(&h->hdrs, arena_strdup(&s->arena, n), arena_strdup(&s->arena, v));
    return 0;
}

/* The final response head: handed to the stream as the HTTP/1.1 parser would (`end`: the
 * HEADERS frame carried END_STREAM). */
static void deliver_head(struct h2_conn *c, struct h2_stream *h, bool end)
{
    struct stream *s = h->base.s;
    struct h1_msg m;
    memset(&m, 0, sizeof(m));
    m.status = h->status;
    m.version_minor = 1;
    m.keep_alive = true;
    m.content_length = h->content_length;
    m.headers = h->hdrs;
    m.end_stream = end;
    h->head_done = true;
    touch(c, s);
    stream_upstream_head(s, &m);
}

static void deliver_end(struct h2_conn *c, struct h2_stream *h)
{
    h->ended = true;
    if (h->base.s != NULL) {
        struct stream *s = h->base.s;
        touch(c, s);
        stream_upstream_end(s);
    }
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    h2_keepalive_on_frame(&c->ka, f);
    switch (f->hd.type) {
    case NGHTTP2_HEADERS: {
        struct h2_stream *h = bound(ss, f->hd.stream_id);
        if (h == NULL) {
            return 0;
        }
        if (!h->head_done) {
            if (h->status >= 100 && h->status < 200 && !end) {
                return 0; /* interim (100 Continue, 103): skipped */
            }
            if (h->status < 200) {
                STAT_INC(h2st(c)->rx_messaging_error);
                nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                          NGHTTP2_PROTOCOL_ERROR);
                h->protocol_error = true; /* reported as a protocol error when it closes */
                return 0;
            }
            deliver_head(c, h, end);
        }
        if (end && h->base.s != NULL) {
            deliver_end(c, h);
        }
        return 0;
    }
    case NGHTTP2_DATA:
        if (end) {
            struct h2_stream *h = bound(ss, f->hd.stream_id);
            if (h != NULL) {
                deliver_end(c, h);
            }
        }
        return 0;
    case NGHTTP2_RST_STREAM:
        STAT_INC(h2st(c)->rx_reset);
        return 0;
    case NGHTTP2_SETTINGS:
        if (!(f->hd.flags & NGHTTP2_FLAG_ACK)) {
            settings_changed(c);
        }
        return 0;
    case NGHTTP2_GOAWAY:
        /* Streams above last_stream_id are closed by nghttp2 as REFUSED_STREAM (retriable);
         * the others finish here, and new streams go to a new connection. */
        STAT_INC(c->cluster->stats->upstream_cx_close_notify);
        c->draining = true;
        return 0;
    default:
        return 0;
    }
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct h2_conn *c = ud;
    struct h2_stream *h = bound(ss, id);
    if (h == NULL) {
        nghttp2_session_consume(ss, id, len); /* nobody wants these bytes */
        return 0;
    }
    h->resp_byte = true;
    struct stream *s = h->base.s;
    touch(c, s);
    stream_upstream_body(s, data, len);
    if (h->base.s != NULL && h->base.read_paused) {
        h->unacked += len; /* acknowledged when the downstream drains (pause_read false) */
    } else {
        nghttp2_session_consume(ss, id, len);
    }
    return 0;
}

/* Fails the stream machine of `h` (already unbound from the connection's count). */
static void fail_stream(struct h2_conn *c, struct stream *s, uint32_t code, bool protocol_error,
                        bool resp_byte)
{
    (void)c;
    s->uc = NULL;
    if (protocol_error) {
        STAT_INC(s->cluster->stats->upstream_cx_protocol_error);
        stream_upstream_failed(s, RF_UPE, "invalid response head");
    } else if (code == NGHTTP2_REFUSED_STREAM) {
        stream_upstream_refused(s, "refused stream");
    } else if (code == NGHTTP2_NO_ERROR && !resp_byte) {
        stream_upstream_failed(s, RF_UC, "stream closed before a response");
    } else {
        stream_upstream_failed(s, RF_UR, "stream reset by the upstream");
    }
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t code, void *ud)
{
    struct h2_conn *c = ud;
    struct h2_stream *h = nghttp2_session_get_stream_user_data(ss, id);
    if (h == NULL) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(ss, id, NULL);
    h->closed = true;
    struct stream *s = h->base.s;
    if (s == NULL) {
        stream_obj_free(h);
        return 0;
    }
    /* Still bound: the response did not complete (a complete one released it). What went
     * to the client's buffer so far goes out before its stream is reset. */
    bool protocol_error = h->protocol_error, resp_byte = h->resp_byte;
    if (s->resp_started) {
        downstream_flush(s->dc);
    }
    touch(c, s);
    unbind(h, false); /* frees h (closed) */
    fail_stream(c, s, code, protocol_error, resp_byte);
    return 0;
}

/* Notes that a request's HEADERS left (see settings_changed), and that a stream we reset with
 * PROTOCOL_ERROR was reset for a malformed response: nghttp2 resets a response whose DATA
 * does not add up to its content-length without calling on_invalid_frame, and that is a
 * protocol error (502 / UPE), not a reset by the upstream (UR). */
static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        struct h2_stream *h = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (h != NULL) {
            h->hdrs_sent = true;
        }
    } else if (f->hd.type == NGHTTP2_RST_STREAM) {
        STAT_INC(h2st(c)->tx_reset);
        struct h2_stream *h = bound(ss, f->hd.stream_id);
        if (h != NULL && f->rst_stream.error_code == NGHTTP2_PROTOCOL_ERROR && !h->protocol_error) {
            STAT_INC(h2st(c)->rx_messaging_error);
            h->protocol_error = true;
        }
    }
    return 0;
}

/* The peer's SETTINGS_MAX_CONCURRENT_STREAMS may have changed. Lowered below the streams in
 * flight, the connection is full (pick_conn) and they all keep running: those already sent
 * finish, and nghttp2 sends the ones it still holds as slots free up. Lowered to 0, the
 * connection can never take a stream again: it drains as after a GOAWAY (as Envoy's pool
 * treats a limit of 0), and the requests nghttp2 still holds, which the peer never saw, are
 * cancelled and failed as refused (retried under refused-stream or reset). New requests go to
 * another connection, within max_connections. */
static void settings_changed(struct h2_conn *c)
{
    if (stream_limit(c) > 0 || c->draining) {
        return;
    }
    LOG_D("h2 upstream %.*s: peer allows no stream: draining", STR_FMT(c->ep->cfg->addr.text));
    c->draining = true;
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &c->streams)
    {
        struct h2_stream *h = LIST_ENTRY(it, struct h2_stream, link);
        struct stream *s = h->base.s;
        if (s == NULL || h->hdrs_sent || h->closed || h->id <= 0) {
            continue;
        }
        touch(c, s);
        unbind(h, true); /* RST_STREAM on a request still queued cancels its HEADERS */
        s->uc = NULL;
        stream_upstream_refused(s, "peer allows no stream");
    }
    after_unbind(c); /* closes it now when nothing is left in flight */
}

static struct h2_stream *find_stream(struct h2_conn *c, int32_t id)
{
    struct list *it;
    LIST_FOREACH(it, &c->streams)
    {
        struct h2_stream *h = LIST_ENTRY(it, struct h2_stream, link);
        if (h->id == id) {
            return h;
        }
    }
    return NULL;
}

/* A request's HEADERS was never sent (a GOAWAY came first, or it was cancelled): the peer never
 * saw the request, which is safe to retry as refused. */
static int on_frame_not_send(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
    (void)ss;
    struct h2_conn *c = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0; /* (trailers not sent: the stream is being reset anyway) */
    }
    struct h2_stream *h = find_stream(c, f->hd.stream_id);
    if (h == NULL || h->closed) {
        return 0;
    }
    h->closed = true;
    struct stream *s = h->base.s;
    if (s == NULL) {
        stream_obj_free(h);
        return 0;
    }
    LOG_D("h2 upstream: request HEADERS not sent: %s", nghttp2_strerror(err));
    touch(c, s);
    unbind(h, false);
    s->uc = NULL;
    stream_upstream_refused(s, "request not sent");
    return 0;
}

/* A malformed frame or message on a stream (forbidden or duplicate fields, a bad
 * content-length, ...): nghttp2 resets the stream; the stream machine sees a protocol error
 * (502 UPE), as Envoy reports it. */
static int on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
    (void)err;
    struct h2_conn *c = ud;
    STAT_INC(h2st(c)->rx_messaging_error);
    if (f->hd.stream_id != 0) {
        struct h2_stream *h = bound(ss, f->hd.stream_id);
        if (h != NULL) {
            h->protocol_error = true;
        }
    }
    return 0;
}

/* Queues the request trailers of `h`; false when none is left to send. */
static bool submit_trailers_of(nghttp2_session *ss, struct h2_stream *h)
{
    size_t n = 0;
    nghttp2_nv *nv = h2_headers_trailers(&h->base.s->arena, h->trailers, &n);
    if (n == 0) {
        return false;
    }
    int rc = nghttp2_submit_trailer(ss, h->id, nv, n);
    if (rc != 0) {
        LOG_D("h2 upstream: submit_trailer: %s", nghttp2_strerror(rc));
        return false;
    }
    return true;
}

/* The request body for nghttp2: what the stream queued, then EOF (with trailers as their own
 * HEADERS frame), or DEFERRED until more arrives. */
static ssize_t read_request(nghttp2_session *ss, int32_t id, uint8_t *dst, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)src;
    (void)ud;
    struct h2_stream *h = bound(ss, id);
    if (h == NULL) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* let go of: reset it */
    }
    size_t n = buf_len(&h->out);
    if (n > len) {
        n = len;
    }
    if (n > 0) {
        memcpy(dst, buf_head(&h->out), n);
        buf_consume(&h->out, n);
    }
    if (buf_len(&h->out) > 0) {
        return (ssize_t)n;
    }
    buf_release(&h->out);
    if (h->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        h->end_sent = true;
        if (h->trailers != NULL && submit_trailers_of(ss, h)) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
        }
        return (ssize_t)n;
    }
    if (n > 0) {
        stream_upstream_drained(h->base.s); /* resumes the downstream's reads if paused */
        return (ssize_t)n;
    }
    h->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

/* ---- the seam (upstream.h): HTTP/2 ---- */

static void op_send_head(struct upstream *u, struct str method, struct str path,
                         const struct headers *hd, bool end)
{
    struct h2_stream *h = hs_of(u);
    struct h2_conn *c = h->c;
    size_t n = 0;
    /* :scheme names the connection's security, "https" over TLS (RFC 9113 8.3.1); the cluster
     * says, as the session may still be connecting */
    struct str scheme = c->cluster->cfg->tls != NULL ? STR_LIT("https") : STR_LIT("http");
    nghttp2_nv *nv = h2_headers_request(&u->s->arena, method, scheme, path, hd, &n);
    nghttp2_data_provider prd = {.source.ptr = h, .read_callback = read_request};
    int32_t id = nghttp2_submit_request(c->sess, NULL, nv, n, end ? NULL : &prd, h);
    if (id < 0) {
        /* Out of stream ids or memory: fail it from the loop (never from inside the caller). */
        LOG_D("h2 upstream: submit_request: %s", nghttp2_strerror(id));
        h->submit_failed = true;
        c->fail_pending = true;
        c->draining = true;
        ev_feed_event(c->w->loop, &c->io, EV_CUSTOM);
        return;
    }
    h->id = id;
    h->end_sent = end;
    if (id >= H2U_ID_LIMIT) {
        c->draining = true; /* stream ids are running out: the next request opens another */
    }
}

static void op_send_body(struct upstream *u, const uint8_t *p, size_t len)
{
    struct h2_stream *h = hs_of(u);
    if (h->end_sent || h->out_end || len == 0) {
        return;
    }
    buf_append(&h->out, p, len);
    if (h->deferred && h->c != NULL && h->c->state != H2C_CLOSED) {
        h->deferred = false;
        nghttp2_session_resume_data(h->c->sess, h->id);
    }
}

static void op_send_end(struct upstream *u, const struct headers *trailers)
{
    struct h2_stream *h = hs_of(u);
    if (h->end_sent || h->out_end) {
        return;
    }
    h->out_end = true;
    h->trailers = trailers != NULL && trailers->n > 0 ? trailers : NULL;
    if (h->deferred && h->c != NULL && h->c->state != H2C_CLOSED) {
        h->deferred = false;
        nghttp2_session_resume_data(h->c->sess, h->id);
    }
}

static void op_flush(struct upstream *u)
{
    struct h2_stream *h = hs_of(u);
    if (h->c != NULL) {
        conn_flush(h->c);
    }
}

static void op_pause_read(struct upstream *u, bool pause)
{
    struct h2_stream *h = hs_of(u);
    u->read_paused = pause;
    struct h2_conn *c = h->c;
    if (!pause && h->unacked > 0 && c != NULL && c->state != H2C_CLOSED) {
        /* The WINDOW_UPDATE lets the peer send more (for a stream nghttp2 closed meanwhile, the
         * connection window still gets the bytes back). */
        nghttp2_session_consume(c->sess, h->id, h->unacked);
        h->unacked = 0;
        conn_flush(c);
    }
}

static size_t op_buffered(const struct upstream *u)
{
    return buf_len(&hs_of(u)->out);
}

static void op_release(struct upstream *u, bool reusable)
{
    (void)reusable; /* the connection's reuse does not depend on one stream */
    unbind(hs_of(u), true);
}

static void op_close(struct upstream *u, const char *reason)
{
    struct h2_stream *h = hs_of(u);
    if (reason != NULL && h->c != NULL) {
        LOG_D("h2 upstream %.*s: stream %d: reset: %s", STR_FMT(h->c->ep->cfg->addr.text), h->id,
              reason);
    }
    unbind(h, true);
}

static const struct upstream_ops h2_ops = {
    .send_head = op_send_head,
    .send_body = op_send_body,
    .send_end = op_send_end,
    .flush = op_flush,
    .pause_read = op_pause_read,
    .buffered = op_buffered,
    .release = op_release,
    .close = op_close,
};

/* ---- the connection ---- */

static void free_conn(struct deferred *d)
{
    struct h2_conn *c = LIST_ENTRY(d, struct h2_conn, defer);
    buf_deinit(&c->wbuf);
    tls_conn_destroy(c->tls);
    free(c);
}

/* Closes the connection: every stream still bound fails with `flag` (per stream: UR once it
 * saw a response byte when `flag` is UC, as HTTP/1.1 does). Deferred while inside a session
 * callback. */
static void conn_fail(struct h2_conn *c, uint32_t flag, const char *reason)
{
    if (c->state == H2C_CLOSED) {
        return;
    }
    if (c->in_cb) {
        c->want_close = true;
        return;
    }
    LOG_D("h2 upstream %.*s: closing: %s", STR_FMT(c->ep->cfg->addr.text),
          reason != NULL ? reason : "stopping");
    bool was_connecting = c->state == H2C_CONNECTING;
    c->state = H2C_CLOSED;
    list_remove(&c->link); /* a retry must not land here */
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_stop(c->w->loop, &c->life);
    h2_keepalive_stop(&c->ka);
    if (c->tls != NULL && c->tls->handshake_done && flag != RF_UC) {
        tls_conn_shutdown(c->tls);
    }
    close(c->fd);
    c->fd = -1;
    struct cluster_rt *cl = c->cluster;
    /* Take every stream off the connection first, then tell the stream machines: a retry may
     * start on another connection from inside their callbacks. */
    size_t n = 0;
    struct list *it, *tmp;
    LIST_FOREACH(it, &c->streams)
    {
        n++;
    }
    struct stream **failed = n > 0 ? xmalloc(n * sizeof(*failed)) : NULL;
    uint32_t *flags = n > 0 ? xmalloc(n * sizeof(*flags)) : NULL;
    size_t k = 0;
    LIST_FOREACH_SAFE(it, tmp, &c->streams)
    {
        struct h2_stream *h = LIST_ENTRY(it, struct h2_stream, link);
        struct stream *s = h->base.s;
        if (s != NULL) {
            release_pending(h);
            c->n_bound--;
            STAT_DEC(h2st(c)->streams_active);
            h->base.s = NULL;
            failed[k] = s;
            flags[k++] = flag == RF_UC && h->resp_byte ? RF_UR : flag;
        }
        stream_obj_free(h);
    }
    if (k > 0) {
        STAT_INC(cl->stats->upstream_cx_destroy_with_active_rq);
    }
    nghttp2_session_del(c->sess);
    c->sess = NULL;
    c->ep->n_conns--;
    breaker_release(cl->shared, BREAKER_CX);
    STAT_DEC(cl->stats->upstream_cx_active);
    STAT_DEC(c->ep->stats->cx_active);
    STAT_INC(cl->stats->upstream_cx_destroy);
    (void)was_connecting;
    worker_defer(c->w, &c->defer, free_conn);
    for (size_t i = 0; i < k; i++) {
        struct stream *s = failed[i];
        s->uc = NULL;
        if (flags[i] == RF_UF) {
            s->transport_errno = c->connect_errno; /* for the access log */
        }
        stream_upstream_failed(s, flags[i], reason != NULL ? reason : "stopping");
        downstream_flush(s->dc);
    }
    free(failed);
    free(flags);
}

static void conn_close(struct h2_conn *c, const char *reason)
{
    if (c->state != H2C_CLOSED && !c->in_cb) {
        STAT_INC(c->cluster->stats->upstream_cx_destroy_local);
    }
    conn_fail(c, RF_UC, reason);
}

static void arm_write(struct h2_conn *c, bool on)
{
    if (c->want_write == on || c->state == H2C_CLOSED) {
        return;
    }
    c->want_write = on;
    ev_io_stop(c->w->loop, &c->io);
    ev_io_set(&c->io, c->fd, EV_READ | (on ? EV_WRITE : 0));
    ev_io_start(c->w->loop, &c->io);
}

/* Pulls frames from the session and writes them. While connecting, frames wait in wbuf. */
static void conn_flush(struct h2_conn *c)
{
    if (c->state == H2C_CLOSED) {
        return;
    }
    if (c->in_cb) {
        c->want_flush = true;
        return;
    }
    for (;;) {
        c->want_flush = false;
        while (buf_len(&c->wbuf) < H2U_WBUF_HIGH && c->state != H2C_CLOSED) {
            const uint8_t *data;
            c->in_cb = true;
            ssize_t n = nghttp2_session_mem_send(c->sess, &data);
            c->in_cb = false;
            if (n < 0) {
                STAT_INC(c->cluster->stats->upstream_cx_protocol_error);
                conn_fail(c, RF_UPE, nghttp2_strerror((int)n));
                return;
            }
            if (n == 0) {
                break;
            }
            buf_append(&c->wbuf, data, (size_t)n);
        }
        if (c->want_close) {
            c->want_close = false;
            conn_close(c, "closed after a session callback");
            return;
        }
        if (c->state == H2C_CONNECTING) {
            return; /* written once connected */
        }
        if (buf_len(&c->wbuf) == 0 && !c->want_flush) {
            break; /* nothing left to produce (or only data waiting for a window) */
        }
        while (buf_len(&c->wbuf) > 0) {
            ssize_t n = sock_send(c->fd, c->tls, buf_head(&c->wbuf), buf_len(&c->wbuf));
            if (n > 0) {
                stat_add(&c->cluster->stats->upstream_cx_tx_bytes_total, (uint64_t)n);
                buf_consume(&c->wbuf, (size_t)n);
                continue;
            }
            if (n == -EAGAIN) {
                arm_write(c, c->tls == NULL || c->tls->want_write);
                return;
            }
            STAT_INC(c->cluster->stats->upstream_cx_destroy_remote);
            conn_fail(c, RF_UC, "write failed");
            return;
        }
        buf_release(&c->wbuf);
    }
    arm_write(c, false);
}

/* The peer's SETTINGS may lower the stream limit. */
static uint32_t stream_limit(const struct h2_conn *c)
{
    uint32_t ours = c->cluster->cfg->h2_max_concurrent_streams;
    uint32_t peer =
        nghttp2_session_get_remote_settings(c->sess, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    return peer < ours ? peer : ours;
}

static void flush_touched(struct h2_conn *c)
{
    uint32_t n = c->n_touched;
    c->n_touched = 0;
    for (uint32_t i = 0; i < n; i++) {
        downstream_flush(c->touched[i]);
    }
}

static void established(struct h2_conn *c);

static void connect_failed(struct h2_conn *c, const char *reason)
{
    STAT_INC(c->cluster->stats->upstream_cx_connect_fail);
    STAT_INC(c->ep->stats->cx_connect_fail);
    conn_fail(c, RF_UF, reason);
}

static void watch(struct h2_conn *c, int ev)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_io_set(&c->io, c->fd, ev);
    ev_io_start(c->w->loop, &c->io);
}

/* Connecting: TCP, then for a TLS cluster the handshake, as in upstream.c. A
 * use_downstream_protocol_config cluster has no ALPN list of its own: its HTTP/2 connections
 * offer "h2", as an HTTP/2 cluster's do (build_tls.c). */
static void on_connected(struct h2_conn *c)
{
    if (c->tls == NULL) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
            c->connect_errno = soerr != 0 ? soerr : errno;
            connect_failed(c, "connection failure");
            return;
        }
    }
    const struct tls_ctx *tc = c->cluster->cfg->tls;
    if (tc != NULL) {
        static const uint8_t h2[] = {2, 'h', '2'};
        const char *why = NULL;
        int r = tls_connect_step(&c->tls, tc, c->fd, h2, sizeof(h2), &c->cluster->stats->ssl, &why);
        if (r < 0) {
            connect_failed(c, why);
            return;
        }
        if (r == 0) {
            watch(c, tls_conn_wait_events(c->tls));
            return;
        }
        watch(c, EV_READ | EV_WRITE); /* established() expects EV_WRITE on */
    }
    established(c);
}

static void established(struct h2_conn *c)
{
    ev_timer_stop(c->w->loop, &c->timer);
    hist_record_ms(&c->cluster->stats->upstream_cx_connect_ms,
                   (ev_now(c->w->loop) - c->t_connect) * 1000.0);
    c->state = H2C_OPEN;
    h2_keepalive_start(&c->ka, c->sess);
    c->want_write = true; /* the watcher has EV_WRITE on: conn_flush turns it off */
    struct list *it;
    LIST_FOREACH(it, &c->streams)
    {
        release_pending(LIST_ENTRY(it, struct h2_stream, link));
    }
    conn_flush(c);
    if (c->state == H2C_OPEN && c->n_bound == 0) {
        after_unbind(c); /* every waiting stream went away while connecting */
    }
}

static void on_read(struct h2_conn *c)
{
    uint8_t *p = c->w->scratch;
    ssize_t n = sock_recv(c->fd, c->tls, p, sizeof(c->w->scratch));
    if (n == -EAGAIN) {
        if (c->tls != NULL && c->tls->want_write) {
            arm_write(c, true); /* OpenSSL must write before it can read on */
        }
        return;
    }
    if (n < 0) {
        STAT_INC(c->cluster->stats->upstream_cx_destroy_remote);
        conn_fail(c, RF_UC, "connection reset");
        return;
    }
    if (n == 0) {
        STAT_INC(c->cluster->stats->upstream_cx_destroy_remote);
        conn_fail(c, RF_UC, "connection closed by upstream");
        return;
    }
    stat_add(&c->cluster->stats->upstream_cx_rx_bytes_total, (uint64_t)n);
    c->in_cb = true;
    ssize_t used = nghttp2_session_mem_recv(c->sess, p, (size_t)n);
    c->in_cb = false;
    flush_touched(c);
    if (c->state == H2C_CLOSED) {
        return; /* a downstream's flush let go of the last stream of a draining connection */
    }
    if (used < 0) {
        LOG_D("h2 upstream %.*s: %s", STR_FMT(c->ep->cfg->addr.text), nghttp2_strerror((int)used));
        STAT_INC(c->cluster->stats->upstream_cx_protocol_error);
        /* send the GOAWAY nghttp2 queued, as far as the socket takes it, then close */
        conn_flush(c);
        conn_fail(c, RF_UPE, "protocol error");
        return;
    }
    if (c->want_close) {
        c->want_close = false;
        conn_close(c, "closed after a session callback");
        return;
    }
    conn_flush(c); /* SETTINGS ACK, WINDOW_UPDATE, PING ACK, RST_STREAM */
    if (c->state == H2C_OPEN && c->n_bound == 0 && !nghttp2_session_want_read(c->sess) &&
        !nghttp2_session_want_write(c->sess)) {
        conn_close(c, "session ended");
    }
}

/* Streams whose HEADERS could not be submitted fail here, from the loop. */
static void fail_unsubmitted(struct h2_conn *c)
{
    c->fail_pending = false;
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &c->streams)
    {
        struct h2_stream *h = LIST_ENTRY(it, struct h2_stream, link);
        if (h->submit_failed && h->base.s != NULL) {
            struct stream *s = h->base.s;
            unbind(h, false); /* id 0: frees it */
            s->uc = NULL;
            stream_upstream_refused(s, "stream not submitted");
            downstream_flush(s->dc);
            if (c->state == H2C_CLOSED) {
                return;
            }
        }
    }
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct h2_conn *c = io->data;
    if ((revents & EV_CUSTOM) && c->fail_pending) {
        fail_unsubmitted(c);
    }
    if (c->state == H2C_CONNECTING && (revents & (EV_READ | EV_WRITE))) {
        on_connected(c);
        return;
    }
    if ((revents & EV_WRITE) && c->state == H2C_OPEN) {
        conn_flush(c);
    }
    if ((revents & EV_READ) && c->state == H2C_OPEN) {
        on_read(c);
        if (c->tls != NULL && c->state == H2C_OPEN && tls_conn_pending(c->tls)) {
            ev_feed_event(loop, io, EV_READ); /* records TLS read ahead: the socket is drained */
        }
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2_conn *c = t->data;
    if (c->state == H2C_CONNECTING) {
        STAT_INC(c->cluster->stats->upstream_cx_connect_timeout);
        connect_failed(c, "connection timeout");
    } else if (c->n_bound == 0) {
        STAT_INC(c->cluster->stats->upstream_cx_idle_timeout);
        conn_close(c, "idle timeout");
    }
}

/* max_connection_duration: no new streams; closed once the last one ends. */
static void life_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2_conn *c = t->data;
    STAT_INC(c->cluster->stats->upstream_cx_max_duration_reached);
    c->draining = true;
    if (c->n_bound == 0) {
        conn_close(c, "max connection duration");
    }
}

static void ka_flush(void *ud)
{
    conn_flush(ud);
}

/* No PING ACK within connection_keepalive.timeout: the upstream (or the path to it) is dead. */
static void ka_timeout(void *ud)
{
    struct h2_conn *c = ud;
    STAT_INC(h2st(c)->keepalive_timeout);
    conn_close(c, "keepalive timeout");
}

static const struct h2_keepalive_ops ka_ops = {.flush = ka_flush, .timeout = ka_timeout};

static nghttp2_session_callbacks *session_callbacks(void)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        abort(); /* allocation failures abort (STYLE 10) */
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cbs, on_frame_not_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    return cbs;
}

/* The stream window advertised: the configured one, but at most the cluster's buffer limit
 * (at least 64 KiB - 1), so a stream whose client reads slowly holds at most about two limits
 * (what is buffered before reading pauses, plus one window). Envoy lets the window itself (256
 * MiB by default) be the bound; the issue asks for memory bounded by the buffer limit. */
static uint32_t stream_window(const struct cluster_cfg *cc)
{
    uint32_t limit =
        cc->per_connection_buffer_limit > 0 ? cc->per_connection_buffer_limit : 1024 * 1024;
    if (limit < 65535) {
        limit = 65535;
    }
    return cc->h2_initial_stream_window < limit ? cc->h2_initial_stream_window : limit;
}

static struct h2_conn *conn_new(struct worker *w, struct cluster_rt *cl, struct endpoint_rt *ep,
                                int *err)
{
    const struct cluster_cfg *cc = cl->cfg;
    if (!breaker_acquire(cl->shared, &cc->breakers[0], BREAKER_CX)) {
        *err = -EUSERS;
        return NULL;
    }
    struct sock_addr la;
    const struct sock_addr *a = endpoint_connect_addr(ep->cfg, &la); /* LOGICAL_DNS: now's */
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        LOG_W("upstream socket(): %s", strerror(errno));
        breaker_release(cl->shared, BREAKER_CX);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct h2_conn *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->cluster = cl;
    c->ep = ep;
    c->fd = fd;
    buf_init(&c->wbuf);
    list_init(&c->streams);
    ev_io_init(&c->io, io_cb, fd, EV_READ | EV_WRITE);
    c->io.data = c;
    ev_timer_init(&c->timer, timer_cb, (double)cc->connect_timeout_ms / 1000.0, 0);
    c->timer.data = c;
    ev_timer_init(&c->life, life_cb, 0, 0);
    c->life.data = c;
    h2_keepalive_init(&c->ka, w->loop, &cc->h2_keepalive, &ka_ops, c,
                      (uint64_t)(uintptr_t)c ^ (uint64_t)(ev_now(w->loop) * 1e6));
    c->state = H2C_CONNECTING;
    c->t_connect = ev_now(w->loop);

    nghttp2_session_callbacks *cbs = session_callbacks();
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        abort();
    }
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1); /* as Envoy, and as the server side */
    if (nghttp2_session_client_new3(&c->sess, cbs, c, opt, &w->h2mem.mem) != 0) {
        abort(); /* out of memory */
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[3] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window(cc)},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, cc->h2_hpack_table_size},
    };
    nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, 3);
    nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)cc->h2_initial_conn_window);

    list_insert_tail(&ep->h2_conns, &c->link);
    ep->n_conns++;
    STAT_INC(cl->stats->upstream_cx_total);
    STAT_INC(cl->stats->upstream_cx_http2_total);
    STAT_INC(cl->stats->upstream_cx_active);
    STAT_INC(ep->stats->cx_total);
    STAT_INC(ep->stats->cx_active);
    if (cc->max_connection_duration_ms > 0) {
        ev_timer_set(&c->life, (double)cc->max_connection_duration_ms / 1000.0, 0);
        ev_timer_start(w->loop, &c->life);
    }
    /* An immediate failure (ECONNREFUSED on loopback) is seen from the loop, like a late one. */
    (void)connect(fd, (const struct sockaddr *)&a->ss, a->len);
    upstream_conn_info_init(&c->info, w, fd);
    c->want_write = true;
    ev_io_start(w->loop, &c->io);
    if (cc->connect_timeout_ms > 0) {
        ev_timer_start(w->loop, &c->timer);
    }
    return c;
}

/* A connection that takes one more stream: open ones first, then one still connecting. */
static struct h2_conn *pick_conn(struct endpoint_rt *ep)
{
    struct h2_conn *connecting = NULL;
    struct list *it;
    LIST_FOREACH(it, &ep->h2_conns)
    {
        struct h2_conn *c = LIST_ENTRY(it, struct h2_conn, link);
        if (c->draining || c->state == H2C_CLOSED || c->n_bound >= stream_limit(c)) {
            continue;
        }
        if (c->state == H2C_OPEN) {
            return c;
        }
        if (connecting == NULL) {
            connecting = c;
        }
    }
    return connecting;
}

struct upstream *upstream_h2_acquire(struct worker *w, struct cluster_rt *cl,
                                     struct endpoint_rt *ep, struct stream *s, int *err)
{
    struct h2_conn *c = pick_conn(ep);
    bool fresh = false;
    if (c == NULL) {
        c = conn_new(w, cl, ep, err);
        if (c == NULL) {
            return NULL;
        }
        fresh = true;
    }
    bool pending = c->state == H2C_CONNECTING;
    if (pending && !breaker_acquire(cl->shared, &cl->cfg->breakers[0], BREAKER_PENDING)) {
        if (fresh) {
            conn_close(c, "pending request overflow");
        }
        *err = -EBUSY;
        return NULL;
    }
    struct h2_stream *h = xcalloc(1, sizeof(*h));
    h->base.ops = &h2_ops;
    h->base.conn = &c->info;
    h->base.s = s;
    h->base.is_h2 = true;
    h->c = c;
    h->content_length = -1;
    buf_init(&h->out);
    list_insert_tail(&c->streams, &h->link);
    if (pending) {
        h->holds_pending = true;
        STAT_INC(cl->stats->upstream_rq_pending_total);
        STAT_INC(cl->stats->upstream_rq_pending_active);
    }
    c->n_bound++;
    STAT_INC(cl->stats->http2.streams_active);
    if (c->state == H2C_OPEN) {
        ev_timer_stop(w->loop, &c->timer);  /* not idle */
        h2_keepalive_before_stream(&c->ka); /* connection_idle_interval: written with the
                                             * request's HEADERS, ahead of them */
    }
    uint32_t max_rq = cl->cfg->max_requests_per_connection;
    if (max_rq > 0 && ++c->n_started >= max_rq) {
        STAT_INC(cl->stats->upstream_cx_max_requests);
        c->draining = true;
    }
    return &h->base;
}

void upstream_h2_close_idle(struct endpoint_rt *ep)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &ep->h2_conns)
    {
        struct h2_conn *c = LIST_ENTRY(it, struct h2_conn, link);
        if (c->n_bound == 0) {
            conn_close(c, NULL);
        }
    }
}
