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
 * messaging checks: pseudo-headers, connection-specific headers, content-length) plus ours:
 * header size and count limits (stream reset, header_overflow), and at most one consecutive
 * empty DATA frame (Envoy's max_consecutive_inbound_frames_with_empty_payload default),
 * beyond which the connection ends with GOAWAY. */
#include "proxy/http/downstream_h2.h"

#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/stream.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/upstream.h"

#define H2_WBUF_HIGH 65536          /* produce frames while wbuf is below this */
#define H2_MAX_EMPTY_DATA 1         /* consecutive empty DATA frames allowed (Envoy: 1) */
#define H2_DRAIN_GOAWAY_DELAY_S 1.0 /* between the drain notice and the final GOAWAY */

struct downstream_h2 {
    nghttp2_session *sess; /* owned */
    struct downstream *d;  /* borrowed: the owner */
    struct list streams;   /* downstream_h2_stream.link: streams nghttp2 has not closed */
    ev_timer goaway;       /* drain: sends the final GOAWAY */
    uint32_t empty_data;   /* consecutive empty DATA frames */
    bool in_cb;            /* inside mem_recv/mem_send: no nested session calls */
    bool want_flush;       /* a flush was asked for while in_cb */
    bool notice_sent;      /* drain phase 1 (GOAWAY 2^31-1) sent */
    bool final_goaway;     /* drain phase 2 sent (or never needed) */
    bool terminated;       /* we ended the session (flood): count it once */
};

struct downstream_h2_stream {
    struct list link; /* in downstream_h2.streams while nghttp2 has the stream */
    struct stream *s; /* borrowed: the stream this state belongs to (in its arena) */
    int32_t id;
    /* request head being received (in the stream's arena) */
    struct headers hdrs;
    struct str method, path, authority, cookie;
    size_t hdr_bytes;
    uint32_t n_hdrs;
    bool head_done;
    /* response body not yet taken by nghttp2 (owned) */
    struct buf out;
    bool out_end;   /* the response ends after `out` */
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

static void maybe_free(struct downstream_h2_stream *h)
{
    if (h->closed && h->done && !h->freed) {
        h->freed = true;
        buf_deinit(&h->out);
        stream_free(h->s);
    }
}

static void start_idle_timer(struct downstream *d)
{
    const struct hcm_cfg *hc = d->lcfg->hcm;
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

/* ---- nghttp2 callbacks (all inside mem_recv or mem_send) ---- */

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
    buf_init(&h->out);
    headers_init(&h->hdrs, &s->arena, 16);
    s->h2s = h;
    list_insert_tail(&d->h2->streams, &h->link);
    nghttp2_session_set_stream_user_data(ss, h->id, h);
    ev_timer_stop(d->w->loop, &d->timer); /* not idle */
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)flags;
    struct downstream *d = ud;
    struct downstream_h2_stream *h = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    if (h == NULL || h->head_done || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0; /* trailers: dropped (an HTTP/1 upstream request carries none) */
    }
    const struct hcm_cfg *hc = d->lcfg->hcm;
    h->hdr_bytes += namelen + valuelen;
    h->n_hdrs++;
    if (h->hdr_bytes > (size_t)hc->max_request_headers_kb * 1024 ||
        h->n_hdrs > hc->max_request_headers_count) {
        STAT_INC(h2stats(d)->header_overflow);
        h->s->local_reset = true;
        h->s->flags |= RF_DPE;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM for this stream only */
    }
    struct arena *a = &h->s->arena;
    struct str n = {(const char *)name, namelen};
    struct str v = arena_strdup(a, (struct str){(const char *)value, valuelen});
    if (namelen > 0 && name[0] == ':') {
        /* nghttp2 has checked the set (no duplicates, none unknown, before regular ones) */
        if (str_eq_lit(n, ":method")) {
            h->method = v;
        } else if (str_eq_lit(n, ":path")) {
            h->path = v;
        } else if (str_eq_lit(n, ":authority")) {
            h->authority = v;
        }
        return 0;
    }
    if (str_eq_lit(n, "cookie")) {
        /* RFC 9113 8.2.3: crumbs are joined with "; " for an HTTP/1 hop */
        h->cookie =
            h->cookie.len == 0 ? v : arena_printf(a, "%.*s; %.*s", STR_FMT(h->cookie), STR_FMT(v));
        return 0;
    }
    headers_add(&h->hdrs, arena_strdup(a, n), v);
    return 0;
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
    if (h->cookie.len > 0) {
        headers_add(&h->hdrs, STR_LIT("cookie"), h->cookie);
    }
    if (h->authority.len > 0) {
        headers_set_copy(&h->hdrs, STR_LIT("host"), h->authority);
    }
    struct header *host = headers_get(&h->hdrs, STR_LIT("host"));
    if (host == NULL || host->value.len == 0 || h->path.len == 0) {
        /* no authority (or CONNECT's missing :path): nothing to forward to HTTP/1 */
        STAT_INC(h2stats(d)->rx_messaging_error);
        reset_stream(d, h, NGHTTP2_PROTOCOL_ERROR);
        return;
    }
    m.host = host->value;
    struct header *cl = headers_get(&h->hdrs, STR_LIT("content-length"));
    unsigned long long v;
    if (cl != NULL && str_to_u64(cl->value, &v) == 0) {
        m.content_length = (int64_t)v; /* nghttp2 checks it against the DATA received */
    }
    m.chunked = !end_stream && m.content_length < 0;
    struct header *ex = headers_get(&h->hdrs, STR_LIT("expect"));
    m.expect_continue = ex != NULL && str_eq_nocase(ex->value, STR_LIT("100-continue"));
    m.headers = h->hdrs;
    stream_request_head(h->s, &m);
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    struct downstream *d = ud;
    struct downstream_h2 *h2 = d->h2;
    struct downstream_h2_stream *h = NULL;
    if (f->hd.stream_id != 0) {
        h = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
    }
    bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        h2->empty_data = 0;
        if (h == NULL) {
            return 0;
        }
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            deliver_head(d, h, end);
        }
        break;
    case NGHTTP2_DATA:
        if (f->hd.length == 0 && !end) {
            if (++h2->empty_data > H2_MAX_EMPTY_DATA && !h2->terminated) {
                h2->terminated = true;
                STAT_INC(h2stats(d)->inbound_empty_frames_flood);
                nghttp2_session_terminate_session(ss, NGHTTP2_ENHANCE_YOUR_CALM);
                return 0;
            }
        } else {
            h2->empty_data = 0;
        }
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
    struct downstream_h2_stream *h = nghttp2_session_get_stream_user_data(ss, id);
    if (h == NULL || h->done || !h->head_done || h->s->local_reset) {
        nghttp2_session_consume(ss, id, len); /* nobody wants these bytes */
        return 0;
    }
    (void)d;
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
    if (f->hd.type == NGHTTP2_RST_STREAM) {
        STAT_INC(h2stats(d)->tx_reset);
        return 0;
    }
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        struct downstream_h2_stream *h = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (h != NULL && h->done && !h->s->req_done) {
            /* The response is complete and the request is not: stop the client sending. */
            nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, h->id, NGHTTP2_NO_ERROR);
        }
    }
    return 0;
}

static int on_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
    (void)err;
    struct downstream *d = ud;
    STAT_INC(h2stats(d)->rx_messaging_error);
    if (f->hd.stream_id != 0) {
        struct downstream_h2_stream *h = nghttp2_session_get_stream_user_data(ss, f->hd.stream_id);
        if (h != NULL && !h->s->finished) {
            h->s->local_reset = true; /* nghttp2 resets it: a protocol error, not the client */
            h->s->flags |= RF_DPE;
        }
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
    list_remove(&h->link);
    h->closed = true;
    if (!h->s->finished) {
        stream_downstream_reset(h->s); /* finishes it: DC, or our own reset */
    }
    maybe_free(h);
    if (list_empty(&d->h2->streams)) {
        start_idle_timer(d);
    }
    return 0;
}

static ssize_t read_body(nghttp2_session *ss, int32_t id, uint8_t *dst, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)ss;
    (void)id;
    (void)ud;
    struct downstream_h2_stream *h = src->ptr;
    size_t n = buf_len(&h->out);
    if (n > len) {
        n = len;
    }
    if (n > 0) {
        memcpy(dst, buf_head(&h->out), n);
        buf_consume(&h->out, n);
    }
    if (buf_len(&h->out) == 0) {
        buf_release(&h->out);
        if (h->out_end) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else {
            if (h->s->uc != NULL) {
                stream_downstream_drained(h->s); /* resumes the upstream's reads */
            }
            if (n == 0) {
                h->deferred = true;
                return NGHTTP2_ERR_DEFERRED;
            }
        }
    }
    return (ssize_t)n;
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
    return str_eq_lit(n, "connection") || str_eq_lit(n, "keep-alive") ||
           str_eq_lit(n, "proxy-connection") || str_eq_lit(n, "transfer-encoding") ||
           str_eq_lit(n, "upgrade");
}

static void h2_send_head(struct stream *s, int status, struct headers *hd, bool end)
{
    struct downstream_h2_stream *h = hs(s);
    if (h->closed) {
        return;
    }
    nghttp2_nv *nv = arena_alloc(&s->arena, sizeof(*nv) * (hd->n + 1));
    struct str st = arena_u64(&s->arena, (uint64_t)status);
    size_t k = 0;
    nv[k++] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)st.p, 7, st.len, NGHTTP2_NV_FLAG_NONE};
    for (uint32_t i = 0; i < hd->n; i++) {
        struct str n = hd->v[i].name;
        if (skip_field(n)) {
            continue;
        }
        bool upper = false;
        for (size_t j = 0; j < n.len && !upper; j++) {
            upper = n.p[j] >= 'A' && n.p[j] <= 'Z';
        }
        if (upper) { /* a configured header edit may be mixed case */
            char *low = arena_alloc(&s->arena, n.len);
            for (size_t j = 0; j < n.len; j++) {
                low[j] = (char)(n.p[j] >= 'A' && n.p[j] <= 'Z' ? n.p[j] + 32 : n.p[j]);
            }
            n.p = low;
        }
        nv[k++] = (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)hd->v[i].value.p, n.len,
                               hd->v[i].value.len, NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source.ptr = h, .read_callback = read_body};
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
        buf_append(&h->out, p, len);
    }
    if (end) {
        h->out_end = true;
    }
    if (h->deferred) {
        h->deferred = false;
        nghttp2_session_resume_data(s->dc->h2->sess, h->id);
    }
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
    return buf_len(&hs(s)->out);
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
    h2->final_goaway = true;
    nghttp2_submit_goaway(h2->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(h2->sess), NGHTTP2_NO_ERROR, NULL,
                          0);
    downstream_h2_flush(d);
}

void downstream_h2_start(struct downstream *d)
{
    const struct hcm_cfg *hc = d->lcfg->hcm;
    struct downstream_h2 *h2 = xcalloc(1, sizeof(*h2));
    h2->d = d;
    h2->final_goaway = true;
    list_init(&h2->streams);
    ev_timer_init(&h2->goaway, goaway_cb, 0, 0);
    h2->goaway.data = d;
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, on_invalid_frame);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_server_new2(&h2->sess, cbs, d, opt) != 0) {
        LOG_E("nghttp2_session_server_new2 failed: out of memory");
        abort(); /* allocation failures abort (STYLE 10) */
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[4] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, hc->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, hc->h2_initial_stream_window},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, hc->max_request_headers_kb * 1024},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, hc->h2_hpack_table_size},
    };
    nghttp2_submit_settings(h2->sess, NGHTTP2_FLAG_NONE, iv, 4);
    nghttp2_session_set_local_window_size(h2->sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)hc->h2_initial_conn_window);
    d->h2 = h2;
    d->ops = &downstream_h2_ops;
    struct hcm_stats *hst = &d->w->stats->hcm[d->lidx];
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
            STAT_INC(h2stats(d)->outbound_flood);
        }
        STAT_INC(d->w->stats->hcm[d->lidx].downstream_cx_protocol_error);
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
    downstream_h2_flush(d);
}

void downstream_h2_flush(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
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
            return; /* would block (EV_WRITE armed), or closed */
        }
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
    STAT_INC(d->w->stats->hcm[d->lidx].downstream_cx_drain_close);
    if (list_empty(&h2->streams)) {
        /* idle: the real GOAWAY at once */
        nghttp2_submit_goaway(h2->sess, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h2->sess), NGHTTP2_NO_ERROR,
                              NULL, 0);
    } else {
        h2->final_goaway = false;
        nghttp2_submit_shutdown_notice(h2->sess);
        ev_timer_set(&h2->goaway, H2_DRAIN_GOAWAY_DELAY_S, 0);
        ev_timer_start(d->w->loop, &h2->goaway);
    }
    downstream_h2_flush(d);
}

void downstream_h2_close_streams(struct downstream *d)
{
    struct downstream_h2 *h2 = d->h2;
    ev_timer_stop(d->w->loop, &h2->goaway);
    while (!list_empty(&h2->streams)) {
        struct downstream_h2_stream *h =
            LIST_ENTRY(list_first(&h2->streams), struct downstream_h2_stream, link);
        list_remove(&h->link);
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
        nghttp2_session_del(d->h2->sess);
        free(d->h2);
        d->h2 = NULL;
    }
}
