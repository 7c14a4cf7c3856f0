/* The h2c half of remora-test-upstream. A connection whose first bytes are the HTTP/2 client
 * preface (prior knowledge; no Upgrade, no TLS) gets one nghttp2 server session, fed from
 * conn.in with nghttp2_session_mem_recv and written into conn.out with nghttp2_session_mem_send,
 * so upstream.c's socket code, flush and lingering close serve both protocols. Each request
 * stream is answered as its x-upstream-* controls ask (the README is at the top of upstream.c),
 * once the request is complete (END_STREAM). Owns the session and one struct h2stream per open
 * stream; memory per stream is bounded by H2_HEAD_BYTES_MAX and body bytes are generated as
 * the peer's flow-control window allows, never buffered. */
#include "tests/upstream/upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>

#include "proxy/core/xmalloc.h"

#define H2_HEAD_BYTES_MAX (128 * 1024) /* header + trailer bytes kept per stream; more: 431 */
#define H2_HDRS_MAX 4096               /* header + trailer fields kept per stream; more: 431 */
/* Frames are made while conn.out holds less than this; sent before more are made. Small enough
 * that conn.out stays under OUT_KEEP_CAP and is reused rather than freed and allocated again. */
#define H2_OUT_HIGH (64 * 1024)

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/*
 * One request stream:
 *
 *   RECV --END_STREAM--> [DELAY] --> respond: HEADERS --> [BODY_DELAY] --> BODY --> DONE
 *     |                                  |-> RST_STREAM (reset before/after headers) -> DONE
 *     \-> refused (RST_STREAM REFUSED_STREAM when the headers arrive)   \-> HANG (no answer)
 *
 * BODY is the data provider's state: nghttp2 pulls bytes as the window allows.
 */
enum h2s_state { H2S_RECV, H2S_DELAY, H2S_BODY_DELAY, H2S_BODY, H2S_DONE, H2S_HANG };

struct h2stream {
    struct list link; /* in h2conn.streams */
    struct conn *c;   /* borrowed: the connection, outlives the stream */
    int32_t id;
    enum h2s_state state;
    ev_timer timer;     /* delay-ms and body-delay-ms */
    struct buf hb;      /* owned: names and values of the headers and trailers */
    struct buf scratch; /* owned: the body when it is not generated (echo, stats, errors) */
    struct hdr *hdrs;   /* owned: offsets into hb; hdrs[0, n_head_hdrs) are the headers */
    size_t n_hdrs, cap_hdrs, n_head_hdrs;
    bool headers_done;
    bool too_big;      /* more header bytes than H2_HEAD_BYTES_MAX: answered 431 */
    bool has_error;    /* a bad control: answered 400 with the message in scratch */
    bool is_control;   /* GET /__upstream/stats or POST /__upstream/reset */
    bool is_head;      /* :method HEAD */
    bool ended;        /* the request's END_STREAM arrived */
    bool refused;      /* we reset it with REFUSED_STREAM */
    bool rst_pending;  /* reset after-headers/mid-body: RST_STREAM once the frame is sent */
    uint64_t body_len; /* request body bytes */
    struct plan plan;  /* plan.only points into hb: valid only until trailers arrive */
    enum body_src src;
    uint64_t body_total; /* bytes the data provider sends */
    uint64_t body_sent;
};

struct h2conn {
    nghttp2_session *session; /* owned */
    struct list streams;      /* every struct h2stream of this session */
    uint64_t n_open;          /* streams whose headers began and that are not closed */
    bool close_now;           /* x-upstream-close: FIN without answering anything more */
    bool is_broken;           /* nghttp2 gave a fatal error: send what is queued, then close */
};

int h2_preface_check(const uint8_t *p, size_t n)
{
    size_t plen = sizeof(PREFACE) - 1;
    size_t m = n < plen ? n : plen;
    if (memcmp(p, PREFACE, m) != 0) {
        return -1;
    }
    return n >= plen ? 1 : 0;
}

static struct str st_str(const struct h2stream *st, uint32_t off, uint32_t len)
{
    return (struct str){(const char *)buf_head(&st->hb) + off, len};
}

static struct str st_name(const struct h2stream *st, size_t i)
{
    return st_str(st, st->hdrs[i].name_off, st->hdrs[i].name_len);
}

static struct str st_value(const struct h2stream *st, size_t i)
{
    return st_str(st, st->hdrs[i].val_off, st->hdrs[i].val_len);
}

/* The value of request header `name` (a pseudo-header such as ":path" included). */
static struct str st_header(const struct h2stream *st, const char *name)
{
    for (size_t i = 0; i < st->n_head_hdrs; i++) {
        if (str_eq_lit(st_name(st, i), name)) {
            return st_value(st, i);
        }
    }
    return STR_NULL;
}

static void stream_free(struct h2stream *st)
{
    ev_timer_stop(st->c->w->loop, &st->timer);
    list_remove(&st->link);
    buf_deinit(&st->hb);
    buf_deinit(&st->scratch);
    free(st->hdrs);
    free(st);
}

static void start_stream_timer(struct h2stream *st, uint64_t ms)
{
    struct ev_loop *loop = st->c->w->loop;
    ev_now_update(loop);
    ev_timer_set(&st->timer, (double)ms / 1000., 0.);
    ev_timer_start(loop, &st->timer);
}

static uint32_t rst_code(const struct h2stream *st)
{
    return st->plan.has_rst_code ? st->plan.rst_code : NGHTTP2_INTERNAL_ERROR;
}

/* ---- header checks and response header lists ---------------------------------------------- */

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* Splits "NAME: VALUE" (x-upstream-response-header, x-upstream-trailer). Returns false when
 * NAME is not a token or VALUE holds CR, LF or NUL. */
static bool split_field(struct str line, struct str *name, struct str *value)
{
    const char *colon = memchr(line.p, ':', line.len);
    if (colon == NULL || colon == line.p) {
        return false;
    }
    *name = (struct str){line.p, (size_t)(colon - line.p)};
    *value = str_trim_ows((struct str){colon + 1, line.len - name->len - 1});
    for (size_t i = 0; i < name->len; i++) {
        if (!is_tchar((unsigned char)name->p[i])) {
            return false;
        }
    }
    for (size_t i = 0; i < value->len; i++) {
        if (value->p[i] == '\r' || value->p[i] == '\n' || value->p[i] == '\0') {
            return false;
        }
    }
    return true;
}

/* Header fields being built: names and values are appended to `bytes` (which may move), so
 * the nghttp2_nv array is made only at the end (nvs_finish). nghttp2 copies what it is given. */
struct nvs {
    struct buf bytes;
    struct hdr *fields; /* owned: offsets into bytes */
    size_t n, cap;
    nghttp2_nv *nv; /* owned: made by nvs_finish */
};

static void nvs_add(struct nvs *v, struct str name, struct str value, bool lower)
{
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 16;
        v->fields = xrealloc(v->fields, v->cap * sizeof(*v->fields));
    }
    struct hdr *f = &v->fields[v->n++];
    f->name_off = (uint32_t)buf_len(&v->bytes);
    f->name_len = (uint32_t)name.len;
    buf_append(&v->bytes, name.p, name.len);
    if (lower) {
        uint8_t *p = (uint8_t *)buf_head(&v->bytes) + f->name_off;
        for (size_t i = 0; i < name.len; i++) {
            if (p[i] >= 'A' && p[i] <= 'Z') {
                p[i] = (uint8_t)(p[i] - 'A' + 'a');
            }
        }
    }
    f->val_off = (uint32_t)buf_len(&v->bytes);
    f->val_len = (uint32_t)value.len;
    buf_append(&v->bytes, value.p, value.len);
}

/* Adds every "x-upstream-<ctl>: NAME: VALUE" request header as a field NAME: VALUE. */
static void nvs_add_lines(struct nvs *v, const struct h2stream *st, const char *ctl)
{
    for (size_t i = 0; i < st->n_head_hdrs; i++) {
        struct str n = st_name(st, i), name, value;
        if (str_has_prefix_nocase(n, STR_LIT("x-upstream-")) && n.len > 11 &&
            str_eq_nocase((struct str){n.p + 11, n.len - 11}, str_from_c(ctl)) &&
            split_field(str_trim_ows(st_value(st, i)), &name, &value)) {
            nvs_add(v, name, value, true);
        }
    }
}

static nghttp2_nv *nvs_finish(struct nvs *v)
{
    v->nv = xcalloc(v->n ? v->n : 1, sizeof(*v->nv));
    uint8_t *base = (uint8_t *)buf_head(&v->bytes);
    for (size_t i = 0; i < v->n; i++) {
        v->nv[i] = (nghttp2_nv){base + v->fields[i].name_off, base + v->fields[i].val_off,
                                v->fields[i].name_len, v->fields[i].val_len, NGHTTP2_NV_FLAG_NONE};
    }
    return v->nv;
}

static void nvs_deinit(struct nvs *v)
{
    buf_deinit(&v->bytes);
    free(v->fields);
    free(v->nv);
}

/* ---- requests ------------------------------------------------------------------------------ */

/* A bad control: the answer becomes 400 with a message naming it. */
static void set_error(struct h2stream *st, struct str key, const char *msg)
{
    st->has_error = true;
    buf_consume(&st->scratch, buf_len(&st->scratch));
    buf_printf(&st->scratch, "remora-test-upstream: %.*s: %s\n",
               (int)(key.len > 200 ? 200 : key.len), key.p, msg);
}

/* The request's headers are complete: build its plan, refuse it or send a GOAWAY if asked. */
static void on_request_head(struct h2stream *st)
{
    struct conn *c = st->c;
    struct server *s = c->w->srv;
    struct h2conn *h = c->h2;
    struct str method = st_header(st, ":method"), path = st_header(st, ":path");
    st->is_head = str_eq_lit(method, "HEAD");
    struct str bare = path;
    const char *q = bare.len ? memchr(bare.p, '?', bare.len) : NULL;
    if (q != NULL) {
        bare.len = (size_t)(q - bare.p);
    }
    st->is_control = (str_eq_lit(method, "GET") && str_eq_lit(bare, "/__upstream/stats")) ||
                     (str_eq_lit(method, "POST") && str_eq_lit(bare, "/__upstream/reset"));
    if (st->is_control) {
        return;
    }
    stat_add(&s->stats.h2_streams, 1);
    if (st->too_big) {
        return;
    }
    struct plan *pl = &st->plan;
    memset(pl, 0, sizeof(*pl));
    pl->status = 200;
    bool any = false, known;
    struct str bad = STR_NULL;
    const char *e = path.len ? plan_apply_query(pl, path, &any, &bad) : NULL;
    if (e != NULL) {
        set_error(st, bad, e);
        return;
    }
    for (size_t i = 0; i < st->n_head_hdrs; i++) {
        struct str name = st_name(st, i), value = str_trim_ows(st_value(st, i)), f1, f2;
        if (name.len < 11 || !str_has_prefix_nocase(name, STR_LIT("x-upstream-"))) {
            continue;
        }
        struct str key = {name.p + 11, name.len - 11};
        e = apply_control(pl, key, value, &known);
        if (e == NULL && !known) {
            e = "unknown control header";
        }
        if (e == NULL && (str_eq_lit(key, "response-header") || str_eq_lit(key, "trailer")) &&
            !split_field(value, &f1, &f2)) {
            e = "expected NAME: VALUE (a token, then a value without CR, LF or NUL)";
        }
        if (e != NULL) {
            set_error(st, name, e);
            return;
        }
    }
    if (pl->status < 200) {
        set_error(st, STR_LIT("x-upstream-status"), "1xx is not a final status in HTTP/2");
        return;
    }
    if (pl->malformed != MAL_NONE && pl->malformed < MAL_H2_FIRST) {
        set_error(st, STR_LIT("x-upstream-malformed"), "HTTP/1.1 only");
        return;
    }
    if (pl->early) {
        set_error(st, STR_LIT("x-upstream-early"), "HTTP/1.1 only");
        return;
    }
    if (pl->drip_ms > 0) {
        set_error(st, STR_LIT("x-upstream-drip-ms"), "HTTP/1.1 only");
        return;
    }
    plan_apply_only(pl, s->name);
    if (pl->has_max_streams) {
        nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, pl->max_streams};
        nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, &iv, 1);
    }
    if (pl->refuse) {
        st->refused = true;
        nghttp2_submit_rst_stream(h->session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_REFUSED_STREAM);
        return;
    }
    if (pl->has_goaway || pl->conn_close) {
        nghttp2_submit_goaway(h->session, NGHTTP2_FLAG_NONE, st->id,
                              pl->has_goaway ? pl->goaway_code : NGHTTP2_NO_ERROR, NULL, 0);
    }
}

static void build_echo(struct h2stream *st)
{
    struct buf *b = &st->scratch;
    struct server *s = st->c->w->srv;
    struct str method = st_header(st, ":method"), path = st_header(st, ":path");
    buf_consume(b, buf_len(b));
    buf_append_str(b, "{\"name\": ");
    json_str(b, s->name.p, s->name.len);
    buf_append_str(b, ", \"method\": ");
    json_str(b, method.p, method.len);
    buf_append_str(b, ", \"path\": ");
    json_str(b, path.p, path.len);
    buf_append_str(b, ", \"version\": \"2\", \"headers\": [");
    for (size_t i = 0; i < st->n_hdrs; i++) {
        if (i == st->n_head_hdrs) {
            buf_append_str(b, "], \"trailers\": [");
        } else if (i != 0) {
            buf_append_str(b, ", ");
        }
        struct str name = st_name(st, i), value = st_value(st, i);
        buf_append_str(b, "[");
        json_str(b, name.p, name.len);
        buf_append_str(b, ", ");
        json_str(b, value.p, value.len);
        buf_append_str(b, "]");
    }
    if (st->n_head_hdrs == st->n_hdrs) {
        buf_append_str(b, "], \"trailers\": [");
    }
    buf_printf(b, "], \"body_len\": %llu}\n", (unsigned long long)st->body_len);
}

static ssize_t body_read_cb(nghttp2_session *session, int32_t id, uint8_t *out, size_t length,
                            uint32_t *flags, nghttp2_data_source *source, void *user_data)
{
    (void)user_data;
    struct h2stream *st = source->ptr;
    if (st->state == H2S_BODY_DELAY) {
        return NGHTTP2_ERR_DEFERRED;
    }
    bool mid = st->plan.reset == RESET_MID_BODY;
    uint64_t limit = mid ? st->body_total / 2 : st->body_total;
    if (st->body_sent >= limit && mid) {
        return NGHTTP2_ERR_DEFERRED; /* the RST follows the last DATA frame (on_frame_send) */
    }
    uint64_t left = limit - st->body_sent;
    size_t n = left < length ? (size_t)left : length;
    const char *src;
    switch (st->src) {
    case BODY_NAME:
        src = st->c->w->srv->name_nl.p + st->body_sent;
        break;
    case BODY_SCRATCH:
        src = (const char *)buf_head(&st->scratch) + st->body_sent;
        break;
    default:
        src = pattern_at(st->c->w->srv, st->body_sent);
        break;
    }
    memcpy(out, src, n);
    st->body_sent += n;
    if (st->body_sent == limit && mid) {
        st->rst_pending = true; /* sent once this DATA frame is (on_frame_send) */
    } else if (st->body_sent == st->body_total) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->state = H2S_DONE;
        if (st->plan.has_trailer) {
            struct nvs v = {0};
            nvs_add_lines(&v, st, "trailer");
            nghttp2_nv *nv = nvs_finish(&v);
            if (nghttp2_submit_trailer(session, id, nv, v.n) == 0) {
                *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            }
            nvs_deinit(&v);
        }
    }
    return (ssize_t)n;
}

/* Sends the response head (and arms the body) as the plan says. `status` overrides the plan's
 * (400/431 for bad requests, 200 for the control endpoints). */
static void submit_head(struct h2stream *st, int status, const char *ctype, bool with_lines)
{
    struct conn *c = st->c;
    struct server *s = c->w->srv;
    struct h2conn *h = c->h2;
    bool bodiless = status == 204 || status == 304;
    bool send_body = !bodiless && !st->is_head && st->body_total > 0;
    uint64_t clen = st->body_total;
    if (!send_body) {
        st->body_total = 0;
    }
    char status_s[8], clen_s[24];
    snprintf(status_s, sizeof(status_s), "%d", status);
    snprintf(clen_s, sizeof(clen_s), "%llu", (unsigned long long)clen);
    struct nvs v = {0};
    nvs_add(&v, STR_LIT(":status"), str_from_c(status_s), false);
    nvs_add(&v, STR_LIT("content-type"), str_from_c(ctype), false);
    nvs_add(&v, STR_LIT("x-upstream-name"), s->name, false);
    if (!bodiless && !(with_lines && st->plan.chunked)) {
        nvs_add(&v, STR_LIT("content-length"), str_from_c(clen_s), false);
    }
    if (with_lines) {
        nvs_add_lines(&v, st, "response-header");
    }
    nghttp2_nv *nv = nvs_finish(&v);
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read_cb};
    bool empty_half = st->plan.reset == RESET_MID_BODY && (!send_body || st->body_total < 2);
    if (with_lines && (st->plan.reset == RESET_AFTER_HEADERS || empty_half)) {
        /* A RST submitted now would cancel the HEADERS still queued: on_frame_send sends it. */
        nghttp2_submit_headers(h->session, NGHTTP2_FLAG_NONE, st->id, NULL, nv, v.n, NULL);
        st->rst_pending = true;
        st->state = H2S_DONE;
    } else if (send_body || (with_lines && st->plan.has_trailer)) {
        st->body_sent = 0;
        st->state = H2S_BODY;
        if (with_lines && send_body && st->plan.body_delay_ms > 0) {
            st->state = H2S_BODY_DELAY;
            start_stream_timer(st, st->plan.body_delay_ms);
        }
        nghttp2_submit_response(h->session, st->id, nv, v.n, &prd);
    } else {
        nghttp2_submit_response(h->session, st->id, nv, v.n, NULL);
        st->state = H2S_DONE;
    }
    nvs_deinit(&v);
}

/* x-upstream-malformed over HTTP/2: a response a conforming client must treat as malformed
 * (RFC 9113 8.1.1, 8.2.1, 8.3.2). nghttp2 checks what it receives, not what it is asked to
 * send, so these go out as written. */
static void submit_malformed(struct h2stream *st)
{
    struct h2conn *h = st->c->h2;
    struct nvs v = {0};
    enum malformed m = st->plan.malformed;
    if (m != MAL_H2_NO_STATUS) {
        nvs_add(&v, STR_LIT(":status"), STR_LIT("200"), false);
    }
    nvs_add(&v, STR_LIT("content-type"), STR_LIT("text/plain"), false);
    if (m == MAL_H2_UPPER_NAME) {
        nvs_add(&v, STR_LIT("X-Upper-Case"), STR_LIT("1"), false);
    } else if (m == MAL_H2_BAD_CL) {
        nvs_add(&v, STR_LIT("content-length"), STR_LIT("abc"), false);
    } else if (m == MAL_H2_CL_MISMATCH) {
        nvs_add(&v, STR_LIT("content-length"), STR_LIT("100"), false);
    }
    nghttp2_nv *nv = nvs_finish(&v);
    if (m == MAL_H2_UPPER_NAME) {
        /* nghttp2 lower-cases the names it copies: this one is not copied (a static string) */
        static uint8_t upper[] = "X-Upper-Case";
        nv[v.n - 1].name = upper;
        nv[v.n - 1].flags |= NGHTTP2_NV_FLAG_NO_COPY_NAME;
    }
    if (m == MAL_H2_CL_MISMATCH) {
        buf_consume(&st->scratch, buf_len(&st->scratch));
        buf_append_str(&st->scratch, "short\n");
        st->src = BODY_SCRATCH;
        st->body_total = buf_len(&st->scratch);
        st->body_sent = 0;
        st->state = H2S_BODY;
        nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_read_cb};
        nghttp2_submit_response(h->session, st->id, nv, v.n, &prd);
    } else {
        nghttp2_submit_response(h->session, st->id, nv, v.n, NULL);
        st->state = H2S_DONE;
    }
    nvs_deinit(&v);
}

/* Answers a complete request as planned, once any delay-ms has passed. */
static void respond(struct h2stream *st)
{
    struct conn *c = st->c;
    struct plan *pl = &st->plan;
    if (pl->malformed >= MAL_H2_FIRST) {
        submit_malformed(st);
        return;
    }
    if (pl->close_no_response) {
        c->h2->close_now = true;
        st->state = H2S_DONE;
        return;
    }
    if (pl->reset == RESET_BEFORE_HEADERS) {
        nghttp2_submit_rst_stream(c->h2->session, NGHTTP2_FLAG_NONE, st->id, rst_code(st));
        st->state = H2S_DONE;
        return;
    }
    if (pl->hang) {
        st->state = H2S_HANG;
        return;
    }
    if (pl->echo) {
        build_echo(st);
        st->src = BODY_SCRATCH;
        st->body_total = buf_len(&st->scratch);
    } else if (pl->has_body_size) {
        st->src = BODY_PATTERN;
        st->body_total = pl->body_size;
    } else {
        st->src = BODY_NAME;
        st->body_total = c->w->srv->name_nl.len;
    }
    submit_head(st, pl->status, pl->echo ? "application/json" : "text/plain", true);
}

/* The request's END_STREAM arrived. */
static void on_request_end(struct h2stream *st)
{
    struct server *s = st->c->w->srv;
    st->ended = true;
    if (st->refused || st->state != H2S_RECV) {
        return;
    }
    if (st->is_control) {
        buf_consume(&st->scratch, buf_len(&st->scratch));
        stats_json(s, &st->scratch, str_eq_lit(st_header(st, ":method"), "POST"));
        st->src = BODY_SCRATCH;
        st->body_total = buf_len(&st->scratch);
        submit_head(st, 200, "application/json", false);
        return;
    }
    stat_add(&s->stats.requests, 1);
    if (st->too_big || st->has_error) {
        if (st->too_big) {
            buf_consume(&st->scratch, buf_len(&st->scratch));
            buf_append_str(&st->scratch, "remora-test-upstream: request head over 128 KiB\n");
        }
        st->src = BODY_SCRATCH;
        st->body_total = buf_len(&st->scratch);
        submit_head(st, st->too_big ? 431 : 400, "text/plain", false);
        return;
    }
    if (st->plan.delay_ms > 0) {
        st->state = H2S_DELAY;
        start_stream_timer(st, st->plan.delay_ms);
        return;
    }
    respond(st);
}

static void stream_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2stream *st = t->data;
    struct conn *c = st->c;
    if (c->state != ST_H2) {
        return;
    }
    if (st->state == H2S_DELAY) {
        respond(st);
    } else if (st->state == H2S_BODY_DELAY) {
        st->state = H2S_BODY;
        nghttp2_session_resume_data(c->h2->session, st->id);
    }
    conn_run(c);
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    struct h2conn *h = c->h2;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    struct h2stream *st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->id = frame->hd.stream_id;
    st->state = H2S_RECV;
    buf_init(&st->hb);
    buf_init(&st->scratch);
    ev_timer_init(&st->timer, stream_timer_cb, 0., 0.);
    st->timer.data = st;
    list_insert_tail(&h->streams, &st->link);
    nghttp2_session_set_stream_user_data(session, st->id, st);
    h->n_open++;
    stat_max(&c->w->srv->stats.max_streams_seen, h->n_open);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    (void)flags;
    (void)user_data;
    struct h2stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL || st->too_big) {
        return 0;
    }
    if (buf_len(&st->hb) + namelen + valuelen > H2_HEAD_BYTES_MAX || st->n_hdrs >= H2_HDRS_MAX) {
        st->too_big = true;
        return 0;
    }
    if (st->n_hdrs == st->cap_hdrs) {
        st->cap_hdrs = st->cap_hdrs ? st->cap_hdrs * 2 : 16;
        st->hdrs = xrealloc(st->hdrs, st->cap_hdrs * sizeof(*st->hdrs));
    }
    struct hdr *hd = &st->hdrs[st->n_hdrs++];
    hd->name_off = (uint32_t)buf_len(&st->hb);
    hd->name_len = (uint32_t)namelen;
    buf_append(&st->hb, name, namelen);
    hd->val_off = (uint32_t)buf_len(&st->hb);
    hd->val_len = (uint32_t)valuelen;
    buf_append(&st->hb, value, valuelen);
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    struct h2stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && !st->headers_done) {
        st->headers_done = true;
        st->n_head_hdrs = st->n_hdrs;
        on_request_head(st);
    }
    if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) && !st->ended) {
        on_request_end(st);
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *session, uint8_t flags, int32_t id,
                              const uint8_t *data, size_t len, void *user_data)
{
    (void)flags;
    (void)data;
    (void)user_data;
    struct h2stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (st != NULL) {
        st->body_len += len;
    }
    return 0;
}

/* A reset after the head or mid-body is submitted only once the HEADERS (or the DATA frame
 * ending the half body) has gone, so that it cannot cancel them. */
static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    (void)user_data;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        return 0;
    }
    struct h2stream *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st != NULL && st->rst_pending) {
        st->rst_pending = false;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, rst_code(st));
    }
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t id, uint32_t error_code,
                           void *user_data)
{
    (void)error_code;
    struct conn *c = user_data;
    struct h2stream *st = nghttp2_session_get_stream_user_data(session, id);
    if (st == NULL) {
        return 0;
    }
    if (!st->ended && !st->refused && !st->is_control) {
        stat_add(&c->w->srv->stats.incomplete, 1);
    }
    c->h2->n_open--;
    nghttp2_session_set_stream_user_data(session, id, NULL);
    stream_free(st);
    return 0;
}

/* ---- the connection ------------------------------------------------------------------------ */

void h2_start(struct conn *c)
{
    struct server *s = c->w->srv;
    struct h2conn *h = xcalloc(1, sizeof(*h));
    list_init(&h->streams);
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        fputs("remora-test-upstream: out of memory\n", stderr);
        abort();
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
    int rv = nghttp2_session_server_new(&h->session, cbs, c);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        fputs("remora-test-upstream: out of memory\n", stderr);
        abort();
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->h2_max_streams},
    };
    nghttp2_submit_settings(h->session, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    c->h2 = h;
    c->state = ST_H2;
    stat_add(&s->stats.h2_connections, 1);
}

void h2_free(struct conn *c)
{
    struct h2conn *h = c->h2;
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &h->streams)
    {
        struct h2stream *st = LIST_ENTRY(it, struct h2stream, link);
        if (!st->ended && !st->refused && !st->is_control) {
            stat_add(&c->w->srv->stats.incomplete, 1);
        }
        stream_free(st);
    }
    nghttp2_session_del(h->session);
    free(h);
    c->h2 = NULL;
}

/* Moves frames from the session to c->out while it is under H2_OUT_HIGH. Returns 0 when the
 * session has nothing more to send, 1 when c->out is full, -1 on a fatal nghttp2 error. */
static int pump(struct conn *c)
{
    while (buf_len(&c->out) < H2_OUT_HIGH) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2->session, &data);
        if (n < 0) {
            return -1;
        }
        if (n == 0) {
            return 0;
        }
        buf_append(&c->out, data, (size_t)n);
    }
    return 1;
}

int h2_run(struct conn *c)
{
    struct h2conn *h = c->h2;
    struct server *s = c->w->srv;
    if (buf_len(&c->in) > 0 && !h->close_now && !h->is_broken) {
        ssize_t rv = nghttp2_session_mem_recv(h->session, buf_head(&c->in), buf_len(&c->in));
        buf_consume(&c->in, buf_len(&c->in));
        if (rv < 0) {
            /* A bad preface, a flood, ...: nghttp2 may have queued a GOAWAY; send it, close. */
            stat_add(&s->stats.parse_errors, 1);
            h->is_broken = true;
        }
    }
    if (h->close_now) {
        c->state = ST_CLOSE;
        return 1;
    }
    /* Until the socket or the session has no more room: a big body goes out in H2_OUT_HIGH
     * pieces, each sent before the next is made. */
    for (;;) {
        int p = pump(c);
        if (p < 0) {
            h->is_broken = true;
        }
        int r = conn_flush(c);
        if (r < 0) {
            return -1;
        }
        if (p != 1 || r != 0) {
            break;
        }
    }
    bool done = !nghttp2_session_want_read(h->session) && !nghttp2_session_want_write(h->session) &&
                buf_len(&c->out) == 0;
    if (h->is_broken || c->peer_eof || done) {
        c->state = ST_CLOSE;
        return 1;
    }
    if (buf_len(&c->out) >= H2_OUT_HIGH) {
        /* The peer does not read: stop reading too, so queued control frames stay bounded. */
        ev_io_stop(c->w->loop, &c->rio);
    } else if (!ev_is_active(&c->rio)) {
        ev_io_start(c->w->loop, &c->rio);
    }
    return 0;
}
