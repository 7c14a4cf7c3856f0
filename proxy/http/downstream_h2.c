/* downstream_h2: HTTP/2 client connections (see downstream_h2.h). The socket, its buffers and
 * timers stay in `struct downstream`; this file owns the nghttp2 session and the per-stream
 * codec state (`struct downstream_h2_stream`, in the stream's arena).
 *
 * Stream lifetime: a stream is created on the first HEADERS of a request and freed when both
 * (a) the stream machine finished it (stream_done, from stream.c's finish) and (b) nghttp2
 * closed it (on_stream_close: END_STREAM both ways, or a reset either way). A response that
 * finishes before the request ends is followed by RST_STREAM(NO_ERROR), as in Envoy.
 *
 * Protections: nghttp2's own (rapid-reset bucket, CONTINUATION cap, queued-ACK cap, HTTP
 * messaging checks: pseudo-headers, connection-specific headers, content-length; a field it
 * would silently drop, such as a value with CR/LF or a name with a space, is refused instead)
 * plus ours: header size and count limits (stream reset, header_overflow; cookie crumbs count),
 * `:path` and `host`/`:authority` checks, and h2_guard.h's flood accounting with Envoy's limits
 * (empty frames, PRIORITY, WINDOW_UPDATE, pending outbound frames, premature resets). An
 * invalid request ends the connection (GOAWAY PROTOCOL_ERROR) unless
 * stream_error_on_invalid_http_message is set, then only its stream, as in Envoy.
 *
 * Drain, in Envoy's two phases: GOAWAY(2^31-1) and a PING, then after the HCM's drain_timeout
 * the GOAWAY with the last stream processed; the connection closes once no stream is left.
 *
 * Keepalive (http2_protocol_options.connection_keepalive, h2_keepalive.h): PINGs to the client;
 * no ACK within the timeout closes the connection (http2.keepalive_timeout), as in Envoy. */
#include "proxy/http/downstream_h2.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/h2_guard.h"
#include "proxy/http/h2_keepalive.h"
#include "proxy/http/stream.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/upstream.h"

#define H2_WBUF_HIGH 65536 /* produce frames while wbuf is below this */
#define H2_HDR_SCRATCH 32  /* request fields listed in the connection's scratch array */
#define H2_SMALL_BODY 512  /* a first response piece up to this size waits in the arena */

struct downstream_h2 {
    nghttp2_session *sess;  /* owned */
    struct downstream *d;   /* borrowed: the owner */
    struct list streams;    /* downstream_h2_stream.link: streams nghttp2 has not closed */
    ev_timer goaway;        /* drain: sends the final GOAWAY */
    struct h2_guard guard;  /* flood accounting */
    struct h2_keepalive ka; /* connection_keepalive's PINGs */
    bool in_cb;             /* inside mem_recv/mem_send: no nested session calls */
    bool want_flush;        /* a flush was asked for while in_cb */
    bool notice_sent;       /* drain phase 1 (GOAWAY 2^31-1) sent */
    bool final_goaway;      /* drain phase 2 sent (or never needed) */
    bool terminated;        /* we ended the session (flood, invalid request): once */
    bool flush_queued;      /* on the worker's h2_flush list (flush_link) */
    struct list flush_link;
    /* the stream on_header saw last (a header block's fields come one by one: one lookup) */
    struct downstream_h2_stream *cur;
    /* The request field list being received. Header blocks are never interleaved (RFC 9113
     * 4.3: a block's frames are contiguous), and deliver_head hands the list to the stream,
     * which copies it: one array per connection serves every stream. A longer list grows
     * into the stream's arena. */
    struct header hdr_scratch[H2_HDR_SCRATCH];
};

struct downstream_h2_stream {
    struct list link; /* in downstream_h2.streams while nghttp2 has the stream */
    struct stream *s; /* borrowed: the stream this state belongs to (in its arena) */
    int32_t id;
    /* request head being received: the list in downstream_h2.hdr_scratch (valid until the
     * block ends), the bytes in nghttp2's buffers (held below) */
    struct headers hdrs;
    struct str method, path, authority;
    nghttp2_rcbuf **held; /* one reference each, given back after the arena's last reader */
    uint32_t n_held, cap_held;
    struct deferred release; /* release_held, queued just before the stream's free */
    size_t hdr_bytes;
    uint32_t n_hdrs;
    double t_open; /* ev_now at the first HEADERS (premature-reset accounting) */
    bool head_done;
    bool head_sent; /* a response head was submitted */
    /* response body not yet taken by nghttp2: `first` (the first piece, when small, in the
     * arena: no buffer allocated for a small response), then `out` (owned) */
    struct str first;
    bool first_used;
    struct buf out;
    bool out_end;                   /* the response ends after `out` */
    const struct headers *trailers; /* borrowed from the stream: sent after `out`, or NULL */
    bool deferred;  /* the data provider returned DEFERRED: resume it on new bytes */
    bool paused;    /* request body: do not acknowledge DATA (upstream backpressure) */
    size_t unacked; /* request bytes received and not yet consumed */
    bool done;      /* stream_done ran (the stream machine finished it) */
    bool closed;    /* nghttp2 closed it */
    bool freed;
};

static struct http2_stats *h2stats(struct downstream *d)
{
    return &d->w->stats->http2;
}

/* Ends the connection for a flood (once): inbound floods with GOAWAY ENHANCE_YOUR_CALM (sent,
 * then the connection closes), outbound ones at once (the peer is not reading). Safe inside
 * nghttp2 callbacks for the inbound kinds; the outbound ones come from outside them. */
static void flood(struct downstream *d, enum h2_flood kind)
{
    struct downstream_h2 *h2 = d->h2;
    if (h2->terminated) {
        return;
    }
    h2->terminated = true;
    h2->final_goaway = true;
    struct http2_stats *st = h2stats(d);
    switch (kind) {
    case H2_FLOOD_EMPTY_FRAMES:
        STAT_INC(st->inbound_empty_frames_flood);
        break;
    case H2_FLOOD_PRIORITY:
        STAT_INC(st->inbound_priority_frames_flood);
        break;
    case H2_FLOOD_WINDOW_UPDATE:
        STAT_INC(st->inbound_window_update_frames_flood);
        break;
    case H2_FLOOD_OUTBOUND:
        STAT_INC(st->outbound_flood);
        break;
    case H2_FLOOD_OUTBOUND_CONTROL:
        STAT_INC(st->outbound_control_flood);
        break;
    case H2_FLOOD_PREMATURE_RESET:
        STAT_INC(d->sc->stats->hcm[d->chain->index].downstream_rq_too_many_premature_resets);
        break;
    case H2_FLOOD_NONE:
        return;
    }
    LOG_D("h2 %s: flood (%d): closing", d->peer_ip, (int)kind);
    if (kind == H2_FLOOD_OUTBOUND || kind == H2_FLOOD_OUTBOUND_CONTROL) {
        downstream_close(d, true);
        return;
    }
    nghttp2_session_terminate_session(h2->sess, NGHTTP2_ENHANCE_YOUR_CALM);
}

/* Frames are waiting for the socket: past the outbound limits the connection ends. */
static void check_outbound(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
    enum h2_flood f =
        h2_guard_outbound(&h2->guard, nghttp2_session_get_outbound_queue_size(h2->sess));
    if (f != H2_FLOOD_NONE) {
        h2->terminated = false; /* an outbound flood closes even after a GOAWAY was queued */
        flood(d, f);
    }
}

/* Gives nghttp2's header buffers back (their free is the worker's h2_mem, which outlives the
 * session). Deferred like the stream's own free and queued before it, so it runs after the
 * last reader of the head (access log, retries, filters) and before the arena goes. */
static void release_held(struct deferred *dd)
{
    struct downstream_h2_stream *h = LIST_ENTRY(dd, struct downstream_h2_stream, release);
    for (uint32_t i = 0; i < h->n_held; i++) {
        nghttp2_rcbuf_decref(h->held[i]);
    }
}

static void maybe_free(struct downstream_h2_stream *h)
{
    if (h->closed && h->done && !h->freed) {
        h->freed = true;
        buf_deinit(&h->out);
        struct downstream_h2 *h2 = h->s->dc->h2;
        if (h2 != NULL && h2->cur == h) {
            h2->cur = NULL;
        }
        if (h->n_held > 0) {
            worker_defer(h->s->w, &h->release, release_held);
        }
        stream_free(h->s);
    }
}

static void start_idle_timer(struct downstream *d)
{
    const struct hcm_cfg *hc = d->chain->hcm;
    if (hc->idle_timeout_ms > 0 && !ev_is_active(&d->timer)) {
        ev_timer_set(&d->timer, (double)hc->idle_timeout_ms / 1000.0, 0);
        ev_timer_start(d->w->loop, &d->timer);
    }
}

/* Ends the stream on our side with RST_STREAM(`code`) before it finished: a codec-level
 * failure (header limits, a request we cannot forward). */
static void reset_stream(struct downstream *d, struct downstream_h2_stream *h, uint32_t code)
{
    h->s->local_reset = true;
    h->s->flags |= RF_DPE;
    nghttp2_submit_rst_stream(d->h2->sess, NGHTTP2_FLAG_NONE, h->id, code);
}

/* An invalid request (RFC 9113 8.1.1 "malformed"): the stream is reset when
 * stream_error_on_invalid_http_message is set, else the connection ends (Envoy's default). */
static void messaging_error(struct downstream *d, struct downstream_h2_stream *h)
{
    STAT_INC(h2stats(d)->rx_messaging_error);
    if (h != NULL && h->s->details == NULL) {
        h->s->details = "http2.violation.of.messaging.rule"; /* Envoy's */
    }
    if (d->chain->hcm->h2_stream_error_on_invalid) {
        if (h != NULL) {
            reset_stream(d, h, NGHTTP2_PROTOCOL_ERROR);
        }
        return;
    }
    if (h != NULL) {
        h->s->local_reset = true;
        h->s->flags |= RF_DPE;
    }
    if (!d->h2->terminated) {
        d->h2->terminated = true;
        d->h2->final_goaway = true;
        STAT_INC(d->sc->stats->hcm[d->chain->index].downstream_cx_protocol_error);
        nghttp2_session_terminate_session(d->h2->sess, NGHTTP2_PROTOCOL_ERROR);
    }
}

/* ---- nghttp2 callbacks (all inside mem_recv or mem_send) ---- */

/* The stream `id` (nghttp2's stream user data), or NULL. The last one found is remembered:
 * a header block's fields, then its frame, come one after another. `cur` is cleared where
 * the user data is (on_stream_close) and when the stream is freed. */
static struct downstream_h2_stream *find_stream(struct downstream *d, nghttp2_session *ss,
                                                int32_t id)
{
    struct downstream_h2_stream *h = d->h2->cur;
    if (h != NULL && h->id == id) {
        return h;
    }
    h = nghttp2_session_get_stream_user_data(ss, id);
    if (h != NULL) {
        d->h2->cur = h;
    }
    return h;
}

static int on_begin_frame(nghttp2_session *ss, const nghttp2_frame_hd *hd, void *ud)
{
    (void)ss;
    struct downstream *d = ud;
    enum h2_flood f = h2_guard_inbound(&d->h2->guard, hd);
    if (f != H2_FLOOD_NONE) {
        flood(d, f);
    }
    return 0;
}

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct downstream *d = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct stream *s = stream_new(d);
    struct downstream_h2_stream *h = arena_zalloc(&s->arena, sizeof(*h));
    h->s = s;
    h->id = f->hd.stream_id;
    h->t_open = ev_now(d->w->loop);
    buf_init(&h->out);
    h->hdrs = (struct headers){.v = d->h2->hdr_scratch, .cap = H2_HDR_SCRATCH, .arena = &s->arena};
    s->h2s = h;
    list_insert_tail(&d->h2->streams, &h->link);
    STAT_INC(h2stats(d)->streams_active);
    nghttp2_session_set_stream_user_data(ss, h->id, h);
    ev_timer_stop(d->w->loop, &d->timer); /* not idle */
    return 0;
}

/* A view of one of nghttp2's header buffers that lives as long as the stream: a reference is
 * taken (static-table strings live for ever and need none). The count is bounded by
 * max_request_headers_count (two per field), the bytes by max_request_headers_kb; a field
 * the HPACK table holds is shared, not copied. */
static void grow_held(struct downstream_h2_stream *h)
{
    uint32_t cap = h->cap_held ? h->cap_held * 2 : 8;
    nghttp2_rcbuf **v = arena_alloc(&h->s->arena, sizeof(*v) * cap);
    if (h->n_held > 0) {
        memcpy(v, h->held, sizeof(*v) * h->n_held);
    }
    h->held = v;
    h->cap_held = cap;
}

static inline struct str hold(struct downstream_h2_stream *h, nghttp2_rcbuf *rc)
{
    nghttp2_vec b = nghttp2_rcbuf_get_buf(rc);
    if (!nghttp2_rcbuf_is_static(rc)) {
        if (h->n_held == h->cap_held) {
            grow_held(h);
        }
        nghttp2_rcbuf_incref(rc);
        h->held[h->n_held++] = rc;
    }
    return (struct str){(const char *)b.base, b.len};
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, nghttp2_rcbuf *name,
                     nghttp2_rcbuf *value, uint8_t flags, void *ud)
{
    (void)flags;
    struct downstream *d = ud;
    struct downstream_h2_stream *h = find_stream(d, ss, f->hd.stream_id);
    if (h == NULL) {
        return 0;
    }
    bool trailer = h->head_done;
    if (trailer && (f->headers.cat != NGHTTP2_HCAT_HEADERS || h->done || h->s->local_reset)) {
        return 0;
    }
    if (!trailer && f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    nghttp2_vec nb = nghttp2_rcbuf_get_buf(name);
    struct str n = {(const char *)nb.base, nb.len};
    const struct hcm_cfg *hc = d->chain->hcm;
    h->hdr_bytes += n.len + nghttp2_rcbuf_get_buf(value).len;
    h->n_hdrs++;
    if (h->hdr_bytes > (size_t)hc->max_request_headers_kb * 1024 ||
        h->n_hdrs > hc->max_request_headers_count) {
        STAT_INC(h2stats(d)->header_overflow);
        h->s->details = "http2.too_many_headers"; /* Envoy's, for the count and the size */
        h->s->local_reset = true;
        h->s->flags |= RF_DPE;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM for this stream only */
    }
    if (trailer) {
        /* Request trailers (nghttp2 has rejected pseudo-headers in them): for the upstream,
         * which copies them. */
        nghttp2_vec vb = nghttp2_rcbuf_get_buf(value);
        stream_request_trailer(h->s, n, (struct str){(const char *)vb.base, vb.len});
        return 0;
    }
    if (n.len > 0 && n.p[0] == ':') {
        /* nghttp2 has checked the set (no duplicates, none unknown, before regular ones) */
        if (str_eq_lit(n, ":method")) {
            h->method = hold(h, value);
        } else if (str_eq_lit(n, ":path")) {
            h->path = hold(h, value);
        } else if (str_eq_lit(n, ":authority")) {
            h->authority = hold(h, value);
        }
        return 0;
    }
    /* cookie crumbs stay separate fields here; deliver_head joins them once */
    struct str v = hold(h, value);
    headers_add(&h->hdrs, hold(h, name), v);
    return 0;
}

/* A field nghttp2 would drop silently (a value with CR/LF/NUL or edge whitespace, a name
 * with a space or another non-token byte): the request is refused instead (messaging error). */
static int on_invalid_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                             void *ud)
{
    (void)ss;
    (void)f;
    (void)name;
    (void)namelen;
    (void)value;
    (void)valuelen;
    (void)flags;
    (void)ud;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* nghttp2: NGHTTP2_ERR_HTTP_HEADER */
}

/* The request head is complete: hand it to the stream as the HTTP/1 codec would. */
static void deliver_head(struct downstream *d, struct downstream_h2_stream *h, bool end_stream)
{
    h->head_done = true;
    struct h1_msg m;
    memset(&m, 0, sizeof(m));
    m.method = h->method;
    m.target = h->path;
    m.version_minor = 1;
    m.keep_alive = true;
    m.content_length = -1;
    if (h->path.len > 0 && !h2_check_path((const uint8_t *)h->method.p, h->method.len,
                                          (const uint8_t *)h->path.p, h->path.len)) {
        messaging_error(d, h);
        return;
    }
    /* One pass for the fields the head needs. RFC 9113 8.2.3: cookie crumbs become one field
     * joined with "; " for the HTTP/1 side (one copy, and only when there are several). */
    struct header *host = NULL, *cl = NULL, *ex = NULL;
    uint32_t n_host = 0;
    for (int pass = 0; pass < 2; pass++) {
        uint32_t n_cookie = 0;
        n_host = 0;
        for (uint32_t i = 0; i < h->hdrs.n; i++) {
            struct header *f = &h->hdrs.v[i];
            if (str_eq_lit(f->name, "host")) {
                host = host != NULL ? host : f;
                n_host++;
            } else if (str_eq_lit(f->name, "content-length")) {
                cl = cl != NULL ? cl : f;
            } else if (str_eq_lit(f->name, "expect")) {
                ex = ex != NULL ? ex : f;
            } else if (str_eq_lit(f->name, "cookie")) {
                n_cookie++;
            }
        }
        if (n_cookie < 2) {
            break;
        }
        headers_join(&h->hdrs, STR_LIT("cookie"), STR_LIT("; ")); /* moves fields: find again */
        host = cl = ex = NULL;
    }
    if (n_host > 1) {
        messaging_error(d, h); /* two Host fields: which one would HTTP/1 upstreams believe? */
        return;
    }
    if (h->authority.len > 0) {
        if (host != NULL &&
            !h2_same_authority(h->authority.p, h->authority.len, host->value.p, host->value.len)) {
            messaging_error(d, h); /* RFC 9113 8.3.1 */
            return;
        }
        if (host == NULL) {
            headers_add(&h->hdrs, STR_LIT("host"), h->authority);
            host = &h->hdrs.v[h->hdrs.n - 1];
        } else {
            host->value = h->authority; /* :authority wins (in the arena) */
        }
    }
    if (host == NULL || host->value.len == 0 || h->path.len == 0) {
        /* no authority (or CONNECT's missing :path): nothing to forward to HTTP/1 */
        STAT_INC(h2stats(d)->rx_messaging_error);
        h->s->details = "http2.violation.of.messaging.rule";
        reset_stream(d, h, NGHTTP2_PROTOCOL_ERROR);
        return;
    }
    m.host = host->value;
    unsigned long long v;
    if (cl != NULL && str_to_u64(cl->value, &v) == 0) {
        m.content_length = (int64_t)v; /* nghttp2 checks it against the DATA received */
    }
    m.chunked = !end_stream && m.content_length < 0;
    m.expect_continue = ex != NULL && str_eq_nocase(ex->value, STR_LIT("100-continue"));
    m.headers = h->hdrs;
    stream_request_head(h->s, &m);
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct downstream *d = ud;
    struct downstream_h2 *h2 = d->h2;
    struct downstream_h2_stream *h = NULL;
    h2_keepalive_on_frame(&h2->ka, f);
    if (f->hd.stream_id != 0) {
        h = find_stream(d, ss, f->hd.stream_id);
    }
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        if (h == NULL || h2->terminated) {
            return 0;
        }
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            deliver_head(d, h, end);
        } else if (f->headers.cat == NGHTTP2_HCAT_HEADERS && h->head_done) {
            STAT_INC(h2stats(d)->trailers); /* request trailers (on_header passed them on) */
        }
        break;
    case NGHTTP2_DATA:
        break;
    case NGHTTP2_RST_STREAM:
        STAT_INC(h2stats(d)->rx_reset);
        return 0;
    default:
        return 0;
    }
    if (end && h != NULL && h->head_done && !h->done && !h->s->req_done && !h->s->local_reset) {
        stream_request_end(h->s);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags;
    struct downstream *d = ud;
    struct downstream_h2_stream *h = find_stream(d, ss, id);
    if (h == NULL || h->done || !h->head_done || h->s->local_reset) {
        nghttp2_session_consume(ss, id, len); /* nobody wants these bytes */
        return 0;
    }
    stream_request_body(h->s, data, len);
    if (h->paused || h->done) {
        h->unacked += len; /* acknowledged when the upstream drains (pause_read false) */
    } else {
        nghttp2_session_consume(ss, id, len);
    }
    return 0;
}

static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct downstream *d = ud;
    h2_guard_sent(&d->h2->guard, f->hd.type);
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        STAT_INC(h2stats(d)->tx_reset);
        return 0;
    }
    if (f->hd.type == NGHTTP2_GOAWAY) {
        STAT_INC(h2stats(d)->goaway_sent);
        return 0;
    }
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct downstream_h2_stream *h = find_stream(d, ss, f->hd.stream_id);
        if (h != NULL && h->done && !h->s->req_done) {
            /* The response is complete and the request is not: stop the client sending. */
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
    struct downstream *d = ud;
    struct downstream_h2_stream *h = NULL;
    if (f->hd.stream_id != 0) {
        h = find_stream(d, ss, f->hd.stream_id);
        if (h != NULL && !h->s->finished) {
            h->s->local_reset = true; /* nghttp2 resets it: a protocol error, not the client */
            h->s->flags |= RF_DPE;
            /* Envoy's details for nghttp2's errors */
            h->s->details = err == NGHTTP2_ERR_HTTP_HEADER ? "http2.invalid.header.field"
                            : err == NGHTTP2_ERR_HTTP_MESSAGING
                                ? "http2.violation.of.messaging.rule"
                                : "http2.unknown.nghttp2.error";
        }
    }
    if (err == NGHTTP2_ERR_HTTP_HEADER || err == NGHTTP2_ERR_HTTP_MESSAGING) {
        /* nghttp2 has queued RST_STREAM(PROTOCOL_ERROR) for the stream */
        messaging_error(d, NULL);
    }
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t code, void *ud)
{
    (void)code;
    struct downstream *d = ud;
    struct downstream_h2_stream *h = nghttp2_session_get_stream_user_data(ss, id);
    if (h == NULL) {
        return 0;
    }
    nghttp2_session_set_stream_user_data(ss, id, NULL);
    if (d->h2->cur == h) {
        d->h2->cur = NULL;
    }
    list_remove(&h->link);
    STAT_DEC(h2stats(d)->streams_active);
    h->closed = true;
    bool premature = !h->head_sent && ev_now(d->w->loop) - h->t_open <= H2_PREMATURE_LIFETIME_S;
    if (!h->s->finished) {
        stream_downstream_reset(h->s); /* finishes it: DC, or our own reset */
    }
    maybe_free(h);
    enum h2_flood fl = h2_guard_stream_closed(&d->h2->guard, premature);
    if (fl != H2_FLOOD_NONE) {
        flood(d, fl);
    }
    if (list_empty(&d->h2->streams)) {
        start_idle_timer(d);
    }
    return 0;
}

/* Response trailers as HTTP/2 fields: lower-case names, no pseudo-header or connection-specific
 * field. Returns false when none is left to send (the DATA then carries END_STREAM). */
static bool submit_trailers(nghttp2_session *ss, struct downstream_h2_stream *h)
{
    const struct headers *t = h->trailers;
    struct stream *s = h->s;
    nghttp2_nv *nv = arena_alloc(&s->arena, sizeof(*nv) * (t->n + 1));
    size_t k = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        struct str n = t->v[i].name;
        if (!h1_trailer_allowed(n)) {
            continue;
        }
        nv[k++] = (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)t->v[i].value.p, n.len, t->v[i].value.len,
                               NGHTTP2_NV_FLAG_NONE};
    }
    if (k == 0) {
        return false;
    }
    int rc = nghttp2_submit_trailer(ss, h->id, nv, k);
    if (rc != 0) {
        LOG_D("h2: submit_trailer: %s", nghttp2_strerror(rc));
        return false;
    }
    return true;
}

/* The data provider. The bytes are not copied into nghttp2's frame buffer: the DATA frame is
 * written by send_data straight from `out` into the write buffer (NO_COPY), one copy less. */
static ssize_t read_body(nghttp2_session *ss, int32_t id, uint8_t *dst, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)id;
    (void)dst;
    (void)ud;
    struct downstream_h2_stream *h = src->ptr;
    size_t avail = h->first.len + buf_len(&h->out);
    size_t n = avail < len ? avail : len;
    if (n < avail) {
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)n;
    }
    if (h->out_end) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (h->trailers != NULL && submit_trailers(ss, h)) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM; /* the trailers end the stream */
        }
    } else if (n == 0) {
        buf_release(&h->out);
        if (h->s->uc != NULL) {
            stream_downstream_drained(h->s); /* resumes the upstream's reads */
        }
        h->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > 0) {
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    }
    return (ssize_t)n;
}

/* Writes the DATA frame read_body sized: its header, then `length` bytes taken from `out`
 * (nghttp2 never pads here: there is no select_padding callback). Inside mem_send, which
 * goes on to the next frame: past the write buffer's mark it is told to stop (PAUSE), as
 * downstream_h2_flush_now's loop would. */
static int send_data(nghttp2_session *ss, nghttp2_frame *f, const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *ud)
{
    (void)ss;
    struct downstream *d = ud;
    struct downstream_h2_stream *h = src->ptr;
    size_t pad = f->data.padlen; /* the Pad Length byte and the padding */
    uint8_t *o = buf_reserve(&d->wbuf, 9 + pad + length);
    memcpy(o, framehd, 9);
    if (pad > 0) {
        o[9] = (uint8_t)(pad - 1);
    }
    o += 9 + (pad > 0);
    size_t k = h->first.len < length ? h->first.len : length;
    if (k > 0) {
        memcpy(o, h->first.p, k);
        h->first = (struct str){h->first.p + k, h->first.len - k};
    }
    if (length > k) {
        memcpy(o + k, buf_head(&h->out), length - k);
        buf_consume(&h->out, length - k);
    }
    if (pad > 1) {
        memset(o + length, 0, pad - 1);
    }
    buf_commit(&d->wbuf, 9 + pad + length);
    if (h->first.len == 0 && buf_len(&h->out) == 0) {
        buf_release(&h->out);
        if (!h->out_end && h->s->uc != NULL) {
            stream_downstream_drained(h->s); /* resumes the upstream's reads */
        }
    }
    return buf_len(&d->wbuf) >= H2_WBUF_HIGH ? NGHTTP2_ERR_PAUSE : 0;
}

/* ---- the stream ops ---- */

static struct downstream_h2_stream *hs(const struct stream *s)
{
    return s->h2s;
}

/* HTTP/2 field names are lower case and connection-specific fields are not allowed
 * (RFC 9113 8.2.2): the HTTP/1 response's framing headers are dropped here. */
static bool skip_field(struct str n)
{
    switch (n.len) { /* most names have none of these lengths */
    case 7:
        return str_eq_lit(n, "upgrade");
    case 10:
        return str_eq_lit(n, "connection") || str_eq_lit(n, "keep-alive");
    case 16:
        return str_eq_lit(n, "proxy-connection");
    case 17:
        return str_eq_lit(n, "transfer-encoding");
    default:
        return false;
    }
}

static void h2_send_head(struct stream *s, int status, struct headers *hd, bool end)
{
    struct downstream_h2_stream *h = hs(s);
    if (h->closed) {
        return;
    }
    /* nghttp2 would copy the list and lower-case every name again. The names are lower case
     * already (headers.h: the parsers lower them, nghttp2 insists on it, configured header
     * edits are lowered when the config is built), so the bytes go once into the stream's
     * arena and nghttp2 takes them as they are (NO_COPY). The arena outlives the frame: the
     * stream is freed only after nghttp2 closed it, and nghttp2 packs a HEADERS frame only
     * while its stream is open. The values cannot stay where they are: an upstream's head
     * block is reused by the next response it parses, maybe before this frame goes out. */
    size_t bytes = 3; /* the status */
    for (uint32_t i = 0; i < hd->n; i++) {
        bytes += hd->v[i].name.len + hd->v[i].value.len;
    }
    nghttp2_nv *nv = arena_alloc(&s->arena, sizeof(*nv) * (hd->n + 1) + bytes);
    uint8_t *out = (uint8_t *)(nv + hd->n + 1);
    struct str st;
    if (status >= 100 && status <= 999) {
        out[0] = (uint8_t)('0' + status / 100);
        out[1] = (uint8_t)('0' + status / 10 % 10);
        out[2] = (uint8_t)('0' + status % 10);
        st = (struct str){(const char *)out, 3};
        out += 3;
    } else {
        st = arena_u64(&s->arena, (uint64_t)status); /* not from our parsers */
    }
    const uint8_t flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    size_t k = 0;
    nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st.p, 7, st.len, flags};
    for (uint32_t i = 0; i < hd->n; i++) {
        struct str n = hd->v[i].name;
        struct str v = hd->v[i].value;
        if (skip_field(n)) {
            continue;
        }
        nv[k++] = (nghttp2_nv){out, out + n.len, n.len, v.len, flags};
        out = mem_put(mem_put(out, n.p, n.len), v.p, v.len);
    }
    nghttp2_data_provider prd = {.source.ptr = h, .read_callback = read_body};
    h->head_sent = true;
    h2_guard_stream_opened(&s->dc->h2->guard);
    int rc = nghttp2_submit_response(s->dc->h2->sess, h->id, nv, k, end ? NULL : &prd);
    if (rc != 0) {
        LOG_D("h2: submit_response: %s", nghttp2_strerror(rc));
    }
}

static void h2_send_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    struct downstream_h2_stream *h = hs(s);
    if (h->closed) {
        return;
    }
    if (len > 0) {
        if (!h->first_used && len <= H2_SMALL_BODY && buf_len(&h->out) == 0) {
            h->first_used = true; /* once per stream: the arena holds at most this much */
            h->first = arena_strdup(&s->arena, (struct str){(const char *)p, len});
        } else {
            buf_append(&h->out, p, len);
        }
    }
    if (end) {
        h->out_end = true;
    }
    if (h->deferred) {
        h->deferred = false;
        nghttp2_session_resume_data(s->dc->h2->sess, h->id);
    }
}

static void h2_send_trailers(struct stream *s, const struct headers *t)
{
    struct downstream_h2_stream *h = hs(s);
    h->trailers = t != NULL && t->n > 0 ? t : NULL;
    h2_send_body(s, NULL, 0, true);
}

static void h2_send_continue(struct stream *s)
{
    struct downstream_h2_stream *h = hs(s);
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"100", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(s->dc->h2->sess, NGHTTP2_FLAG_NONE, h->id, NULL, &nv, 1, NULL);
}

/* The response cannot complete: reset this stream only. */
static void h2_reset(struct stream *s)
{
    struct downstream_h2_stream *h = hs(s);
    if (!h->closed) {
        nghttp2_submit_rst_stream(s->dc->h2->sess, NGHTTP2_FLAG_NONE, h->id,
                                  NGHTTP2_INTERNAL_ERROR);
    }
    stream_downstream_reset(s);
    downstream_h2_flush(s->dc);
}

static size_t h2_buffered(const struct stream *s)
{
    return hs(s)->first.len + buf_len(&hs(s)->out);
}

static void h2_pause_read(struct stream *s, bool pause)
{
    struct downstream_h2_stream *h = hs(s);
    h->paused = pause;
    if (!pause && h->unacked > 0 && !h->closed) {
        nghttp2_session_consume(s->dc->h2->sess, h->id, h->unacked);
        h->unacked = 0;
        downstream_h2_flush(s->dc); /* the WINDOW_UPDATE */
    }
}

static void h2_stream_done(struct stream *s)
{
    struct downstream_h2_stream *h = hs(s);
    h->done = true;
    if (h->unacked > 0 && !h->closed) {
        nghttp2_session_consume(s->dc->h2->sess, h->id, h->unacked);
        h->unacked = 0;
    }
    maybe_free(h);
    downstream_h2_flush(s->dc); /* the end of the response (a no-op inside callbacks) */
}

const struct downstream_ops downstream_h2_ops = {
    .send_head = h2_send_head,
    .send_body = h2_send_body,
    .send_trailers = h2_send_trailers,
    .send_continue = h2_send_continue,
    .reset = h2_reset,
    .buffered = h2_buffered,
    .pause_read = h2_pause_read,
    .stream_done = h2_stream_done,
};

/* ---- the connection ---- */

static void goaway_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct downstream *d = t->data;
    struct downstream_h2 *h2 = d->h2;
    if (h2->final_goaway) {
        return; /* a flood or protocol error has ended the session meanwhile */
    }
    h2->final_goaway = true;
    nghttp2_submit_goaway(h2->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h2->sess), NGHTTP2_NO_ERROR, NULL,
                          0);
    downstream_h2_flush(d);
}

static void ka_flush(void *ud)
{
    downstream_h2_flush(ud);
}

/* No PING ACK within connection_keepalive.timeout: the client is gone (Envoy closes without
 * flushing; its streams are reset). */
static void ka_timeout(void *ud)
{
    struct downstream *d = ud;
    STAT_INC(h2stats(d)->keepalive_timeout);
    LOG_D("h2 %s: keepalive timeout: closing", d->peer_ip);
    downstream_close(d, true);
}

static const struct h2_keepalive_ops ka_ops = {.flush = ka_flush, .timeout = ka_timeout};

void downstream_h2_start(struct downstream *d)
{
    const struct hcm_cfg *hc = d->chain->hcm;
    struct downstream_h2 *h2 = xcalloc(1, sizeof(*h2));
    h2->d = d;
    h2->final_goaway = true;
    list_init(&h2->streams);
    ev_timer_init(&h2->goaway, goaway_cb, 0, 0);
    h2->goaway.data = d;
    struct h2_limits lim;
    h2_limits_from_cfg(&lim, hc);
    h2_guard_init(&h2->guard, &lim);
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, on_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_send_data_callback(cbs, send_data);
    nghttp2_option *opt;
    if (h2_server_options(&opt, &lim) != 0 ||
        nghttp2_session_server_new3(&h2->sess, cbs, d, opt, &d->w->h2mem.mem) != 0) {
        LOG_E("nghttp2_session_server_new3 failed: out of memory");
        abort(); /* allocation failures abort (STYLE 10) */
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[4];
    size_t niv = h2_server_settings(iv, hc);
    nghttp2_submit_settings(h2->sess, NGHTTP2_FLAG_NONE, iv, niv);
    nghttp2_session_set_local_window_size(h2->sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)hc->h2_initial_conn_window);
    d->h2 = h2;
    d->ops = &downstream_h2_ops;
    h2_keepalive_init(&h2->ka, d->w->loop, &hc->h2_keepalive, &ka_ops, d,
                      (uint64_t)(uintptr_t)d ^ (uint64_t)(ev_now(d->w->loop) * 1e6));
    h2_keepalive_start(&h2->ka, h2->sess);
    struct hcm_stats *hst = &d->sc->stats->hcm[d->chain->index];
    STAT_DEC(hst->downstream_cx_http1_total);
    STAT_DEC(hst->downstream_cx_http1_active);
    STAT_INC(hst->downstream_cx_http2_total);
    STAT_INC(hst->downstream_cx_http2_active);
}

void downstream_h2_feed(struct downstream *d, const uint8_t *p, size_t len)
{
    struct downstream_h2 *h2 = d->h2;
    h2->in_cb = true;
    ssize_t n = nghttp2_session_mem_recv(h2->sess, p, len);
    h2->in_cb = false;
    if (d->closed) {
        return;
    }
    if (n < 0) {
        if (n == NGHTTP2_ERR_FLOODED) {
            /* nghttp2's cap on queued SETTINGS/PING ACKs (max_outbound_control_frames) */
            STAT_INC(h2stats(d)->outbound_control_flood);
        }
        STAT_INC(d->sc->stats->hcm[d->chain->index].downstream_cx_protocol_error);
        LOG_D("h2 %s: %s", d->peer_ip, nghttp2_strerror((int)n));
        if (n == NGHTTP2_ERR_BAD_CLIENT_MAGIC || n == NGHTTP2_ERR_FLOODED) {
            downstream_close(d, true);
            return;
        }
        /* nghttp2 queued a GOAWAY for the connection error: send it, then close */
        nghttp2_session_terminate_session(h2->sess, NGHTTP2_PROTOCOL_ERROR);
    }
    /* What the streams wrote towards their upstreams goes out now, one write per upstream
     * (the HTTP/1 side's flush_both). */
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &h2->streams)
    {
        struct downstream_h2_stream *h = LIST_ENTRY(it, struct downstream_h2_stream, link);
        if (h->s->uc != NULL && !h->s->finished) {
            upstream_flush(h->s->uc);
            if (d->closed) {
                return;
            }
        }
    }
    downstream_h2_flush_now(d);
}

static void unqueue_flush(struct downstream_h2 *h2)
{
    if (h2->flush_queued) {
        h2->flush_queued = false;
        list_remove(&h2->flush_link);
    }
}

void downstream_h2_flush(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
    if (d->closed) {
        return;
    }
    if (h2->in_cb) {
        h2->want_flush = true; /* the mem_send loop under way picks it up */
        return;
    }
    if (!h2->flush_queued) {
        h2->flush_queued = true;
        list_insert_tail(&d->w->h2_flush, &h2->flush_link);
    }
}

void downstream_h2_flush_queued(struct worker *w)
{
    while (!list_empty(&w->h2_flush)) {
        struct downstream_h2 *h2 =
            LIST_ENTRY(list_first(&w->h2_flush), struct downstream_h2, flush_link);
        downstream_h2_flush_now(h2->d); /* takes it off the list */
    }
}

void downstream_h2_flush_now(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
    unqueue_flush(h2);
    if (d->closed) {
        return;
    }
    if (h2->in_cb) {
        h2->want_flush = true;
        return;
    }
    for (;;) {
        h2->want_flush = false;
        while (!d->closing && buf_len(&d->wbuf) < H2_WBUF_HIGH) {
            const uint8_t *data;
            h2->in_cb = true;
            ssize_t n = nghttp2_session_mem_send(h2->sess, &data);
            h2->in_cb = false;
            if (d->closed) {
                return;
            }
            if (n < 0) {
                LOG_D("h2 %s: mem_send: %s", d->peer_ip, nghttp2_strerror((int)n));
                downstream_close(d, true);
                return;
            }
            if (n == 0) {
                break;
            }
            buf_append(&d->wbuf, data, (size_t)n);
        }
        if (buf_len(&d->wbuf) == 0) {
            if (h2->want_flush) {
                continue;
            }
            break;
        }
        if (downstream_send(d) != 0) {
            if (!d->closed) {
                check_outbound(d); /* would block (EV_WRITE armed): frames are waiting */
            }
            return;
        }
        h2_guard_drained(&h2->guard);
    }
    if (d->closing) {
        d->closing = false;
        downstream_close(d, false);
        return;
    }
    if (h2->final_goaway && !nghttp2_session_want_read(h2->sess) &&
        !nghttp2_session_want_write(h2->sess)) {
        downstream_close(d, false); /* GOAWAY sent (or received) and no stream left */
    }
}

void downstream_h2_drain(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
    if (h2->notice_sent || d->closed) {
        return;
    }
    h2->notice_sent = true;
    STAT_INC(d->sc->stats->hcm[d->chain->index].downstream_cx_drain_close);
    if (h2->terminated) {
        return; /* already ending (flood, protocol error) */
    }
    /* Phase 1: GOAWAY(2^31-1) and a PING (its ACK shows the client saw the notice); new streams
     * are still served. Phase 2, after drain_timeout: the GOAWAY with the last stream
     * processed; the connection closes once its streams are done. */
    h2->final_goaway = false;
    nghttp2_submit_shutdown_notice(h2->sess);
    nghttp2_submit_ping(h2->sess, NGHTTP2_FLAG_NONE, NULL);
    ev_timer_set(&h2->goaway, (double)d->chain->hcm->drain_timeout_ms / 1000.0, 0);
    ev_timer_start(d->w->loop, &h2->goaway);
    downstream_h2_flush(d);
}

void downstream_h2_close_streams(struct downstream *d)
{
    unqueue_flush(d->h2);
    struct downstream_h2 *h2 = d->h2;
    ev_timer_stop(d->w->loop, &h2->goaway);
    h2_keepalive_stop(&h2->ka);
    while (!list_empty(&h2->streams)) {
        struct downstream_h2_stream *h =
            LIST_ENTRY(list_first(&h2->streams), struct downstream_h2_stream, link);
        list_remove(&h->link);
        STAT_DEC(h2stats(d)->streams_active);
        h->closed = true;
        if (!h->s->finished) {
            stream_downstream_reset(h->s);
        }
        h->done = true; /* stream_done may not run once the connection is closed */
        maybe_free(h);
    }
}

void downstream_h2_free(struct downstream *d)
{
    if (d->h2 != NULL) {
        h2_keepalive_stop(&d->h2->ka);
        nghttp2_session_del(d->h2->sess);
        free(d->h2);
        d->h2 = NULL;
    }
}
