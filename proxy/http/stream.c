/* stream: one request/response exchange (see stream.h). This is the router filter and the
 * HTTP/1 upstream codec glue: routing, request header processing (hop-by-hop removal,
 * x-forwarded-*, x-request-id, rewrites, header edits), endpoint choice, framing in both
 * directions, local replies with Envoy's flags, timeouts, access log and stats.
 *
 * Writes are not flushed here: the downstream flushes the upstream after it has fed a read's
 * worth of bytes through the parser, and the upstream flushes the downstream likewise, so a
 * request head and its body go out in one write. */
#include "proxy/http/stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/router.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/upstream.h"

#define STREAM_ARENA_BLOCK 4096

static void finish(struct stream *s);
static void forward(struct stream *s);

static uint32_t buffer_limit(const struct stream *s)
{
    return s->lcfg->per_connection_buffer_limit ? s->lcfg->per_connection_buffer_limit
                                                : 1024 * 1024;
}

/* Ends the stream for a timeout: a local reply if nothing was sent yet, else a reset. */
static void time_out(struct stream *s, int status, const char *body, uint32_t flag)
{
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, body);
    }
    if (s->resp_started) {
        s->flags |= flag;
        STAT_INC(s->hstats->downstream_rq_tx_reset);
        downstream_close(s->dc, true);
        return;
    }
    stream_local_reply(s, status, body, flag);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = t->data;
    if (!s->req_done) {
        /* request_timeout: the whole request did not arrive in time */
        STAT_INC(s->hstats->downstream_rq_timeout);
        time_out(s, 408, "request timeout", RF_DT);
        return;
    }
    if (s->cluster != NULL) {
        STAT_INC(s->cluster->stats->upstream_rq_timeout);
    }
    if (s->ep != NULL) {
        STAT_INC(s->ep->stats->rq_timeout);
    }
    time_out(s, 504, "upstream request timeout", RF_UT);
}

/* stream_idle_timeout: no bytes either way for that long. The timer is not restarted on every
 * byte (a heap operation each time); it fires, checks the last activity and re-arms for the
 * remainder (libev's documented lazy pattern). */
static void idle_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct stream *s = t->data;
    double limit = (double)s->hcm->stream_idle_timeout_ms / 1000.0;
    double due = s->t_activity + limit - ev_now(loop);
    if (due > 0.001) {
        ev_timer_set(t, due, 0);
        ev_timer_start(loop, t);
        return;
    }
    STAT_INC(s->hstats->downstream_rq_idle_timeout);
    time_out(s, 408, "stream timeout", RF_SI);
}

static inline void touch(struct stream *s)
{
    s->t_activity = ev_now(s->w->loop);
}

struct stream *stream_new(struct downstream *dc)
{
    struct worker *w = dc->w;
    struct stream *s = xcalloc(1, sizeof(*s));
    s->w = w;
    s->dc = dc;
    arena_init(&s->arena, STREAM_ARENA_BLOCK);
    s->lcfg = dc->lcfg;
    s->hcm = dc->lcfg->hcm;
    s->hstats = &w->stats->hcm[dc->lidx];
    s->t_start = ev_now(w->loop);
    s->t_activity = s->t_start;
    ev_timer_init(&s->timeout, timeout_cb, 0, 0);
    s->timeout.data = s;
    ev_timer_init(&s->idle, idle_cb, 0, 0);
    s->idle.data = s;
    const struct hcm_cfg *h = s->hcm;
    if (h->request_timeout_ms > 0) {
        ev_timer_set(&s->timeout, (double)h->request_timeout_ms / 1000.0, 0);
        ev_timer_start(w->loop, &s->timeout);
    }
    if (h->stream_idle_timeout_ms > 0) {
        ev_timer_set(&s->idle, (double)h->stream_idle_timeout_ms / 1000.0, 0);
        ev_timer_start(w->loop, &s->idle);
    }
    STAT_INC(s->hstats->downstream_rq_total);
    STAT_INC(s->hstats->downstream_rq_http1_total);
    STAT_INC(s->hstats->downstream_rq_active);
    return s;
}

/* ---- header processing ---- */

static bool is_hop_by_hop(struct str name)
{
    static const struct str hop[] = {
        STR_LIT("connection"),
        STR_LIT("keep-alive"),
        STR_LIT("proxy-connection"),
        STR_LIT("transfer-encoding"),
        STR_LIT("upgrade"),
        STR_LIT("http2-settings"),
        STR_LIT("te"),
        STR_LIT("trailer"),
    };
    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++) {
        if (str_eq(name, hop[i])) {
            return true;
        }
    }
    return false;
}

/* Removes hop-by-hop headers and every header the Connection header names. */
static void strip_hop_by_hop(struct headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (!str_eq_lit(h->v[i].name, "connection")) {
            continue;
        }
        struct str v = h->v[i].value;
        size_t start = 0;
        for (size_t k = 0; k <= v.len; k++) {
            if (k == v.len || v.p[k] == ',') {
                struct str tok = str_trim_ows((struct str){v.p + start, k - start});
                start = k + 1;
                if (tok.len == 0 || tok.len > 64) {
                    continue;
                }
                char low[64];
                for (size_t j = 0; j < tok.len; j++) {
                    low[j] = (char)(tok.p[j] >= 'A' && tok.p[j] <= 'Z' ? tok.p[j] + 32 : tok.p[j]);
                }
                struct str name = {low, tok.len};
                /* The proxy's own forwarding headers are never removed this way (case 20). */
                if (str_eq_lit(name, "x-forwarded-for") || str_eq_lit(name, "x-forwarded-proto") ||
                    str_eq_lit(name, "x-request-id") || str_eq_lit(name, "host")) {
                    continue;
                }
                headers_remove(h, name);
            }
        }
    }
    uint32_t wr = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!is_hop_by_hop(h->v[i].name)) {
            h->v[wr++] = h->v[i];
        }
    }
    h->n = wr;
}

static void apply_edits(struct headers *h, const struct header_edits *e)
{
    for (uint32_t i = 0; i < e->n_remove; i++) {
        headers_remove(h, e->remove[i]);
    }
    for (uint32_t i = 0; i < e->n_add; i++) {
        const struct header_add *a = &e->add[i];
        switch (a->action) {
        case HA_ADD_IF_ABSENT:
            if (headers_get(h, a->name) == NULL) {
                headers_add(h, a->name, a->value);
            }
            break;
        case HA_OVERWRITE_IF_EXISTS_OR_ADD:
            headers_remove(h, a->name);
            headers_add(h, a->name, a->value);
            break;
        case HA_APPEND_IF_EXISTS_OR_ADD:
        default:
            headers_add(h, a->name, a->value);
            break;
        }
    }
}

static void gen_request_id(struct stream *s, char out[37])
{
    uint64_t a = worker_rand(s->w), b = worker_rand(s->w);
    uint8_t r[16];
    memcpy(r, &a, 8);
    memcpy(r + 8, &b, 8);
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80); /* variant 10 */
    static const char hex[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) {
            out[o++] = '-';
        }
        out[o++] = hex[r[i] >> 4];
        out[o++] = hex[r[i] & 15];
    }
    out[o] = '\0';
}

/* Headers a client may not set (Envoy strips these from requests it does not trust). */
static void strip_untrusted(struct headers *h)
{
    headers_remove(h, STR_LIT("x-envoy-internal"));
    headers_remove(h, STR_LIT("x-envoy-original-path"));
    headers_remove(h, STR_LIT("x-envoy-expected-rq-timeout-ms"));
    headers_remove(h, STR_LIT("x-envoy-upstream-service-time"));
    /* forward_client_cert_details defaults to SANITIZE: a client's XFCC is never passed on */
    headers_remove(h, STR_LIT("x-forwarded-client-cert"));
}

/* ---- local replies ---- */

void stream_local_reply(struct stream *s, int status, const char *body, uint32_t flag)
{
    s->flags |= flag;
    if (s->finished) {
        return;
    }
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "local reply");
    }
    if (s->resp_started) {
        /* Too late for a clean answer: never let a truncated response look complete. */
        STAT_INC(s->hstats->downstream_rq_tx_reset);
        downstream_close(s->dc, true);
        return;
    }
    if ((!s->req_done && s->req_has_body) || s->w->draining) {
        /* The rest of the request body would be read as a new request: close after
         * answering. A bodiless request's end follows at once, and the stream finishes then. */
        s->close_after = true;
    }
    s->status = status;
    size_t blen = body ? strlen(body) : 0;
    struct headers h;
    headers_init(&h, &s->arena, 6);
    char len[24];
    snprintf(len, sizeof(len), "%zu", blen);
    if (blen > 0) {
        headers_add(&h, STR_LIT("content-type"), STR_LIT("text/plain"));
    }
    headers_add(&h, STR_LIT("content-length"), arena_strdup(&s->arena, str_from_c(len)));
    headers_add(&h, STR_LIT("date"), arena_strdup(&s->arena, worker_http_date(s->w)));
    headers_add(&h, STR_LIT("server"), STR_LIT("envoy"));
    if (s->route != NULL) {
        apply_edits(&h, &s->route->response_edits);
    }
    if (s->vhost != NULL) {
        apply_edits(&h, &s->vhost->response_edits);
    }
    if (s->close_after) {
        headers_add(&h, STR_LIT("connection"), STR_LIT("close"));
    }
    h1_encode_response_head(&s->dc->wbuf, status, &h);
    if (blen > 0 && !s->is_head) {
        buf_append(&s->dc->wbuf, body, blen);
        s->resp_body_bytes = blen;
    }
    s->resp_started = true;
    s->resp_done = true;
    finish(s);
}

/* ---- request path ---- */

void stream_request_head(struct stream *s, struct h1_msg *msg)
{
    s->method = arena_strdup(&s->arena, msg->method);
    s->path = arena_strdup(&s->arena, msg->target);
    s->version_minor = msg->version_minor;
    s->req_chunked = msg->chunked;
    s->req_has_body = msg->chunked || msg->content_length > 0;
    s->is_head = str_eq_lit(s->method, "HEAD");
    if (!msg->keep_alive) {
        s->close_after = true;
    }
    /* Copy the header array (not the bytes: they stay in the parser's block, which lives
     * until the next request starts, after this stream ends). */
    headers_init(&s->req, &s->arena, msg->headers.n + 8);
    for (uint32_t i = 0; i < msg->headers.n; i++) {
        headers_add(&s->req, msg->headers.v[i].name, msg->headers.v[i].value);
    }
    s->authority = msg->host;
    if (s->path.len > 0 && s->path.p[0] != '/' && s->path.p[0] != '*') {
        /* absolute-form: route by its authority (RFC 9112 3.2.2) and forward origin-form */
        const char *p = memchr(s->path.p, ':', s->path.len);
        if (p && (size_t)(p - s->path.p) + 3 <= s->path.len && p[1] == '/' && p[2] == '/') {
            const char *auth = p + 3;
            const char *end = s->path.p + s->path.len;
            const char *slash = memchr(auth, '/', (size_t)(end - auth));
            s->authority = (struct str){auth, (size_t)((slash ? slash : end) - auth)};
            s->path = slash ? (struct str){slash, (size_t)(end - slash)} : STR_LIT("/");
            headers_set_copy(&s->req, STR_LIT("host"), s->authority);
        }
    }

    if (s->version_minor == 0) {
        stream_local_reply(s, 426, "", 0);
        return;
    }
    if (str_eq_lit(s->method, "CONNECT")) {
        s->close_after = true;
        stream_local_reply(s, 403, "", 0);
        return;
    }

    /* Connection-manager header processing, before routing (Envoy's order): a local reply
     * carries the request id too. */
    strip_hop_by_hop(&s->req);
    strip_untrusted(&s->req);
    if (msg->expect_continue) {
        headers_remove(&s->req, STR_LIT("expect"));
        buf_append_str(&s->dc->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
    }

    /* x-forwarded-for: append the peer; x-forwarded-proto: this listener's scheme. */
    struct header *xff = headers_get(&s->req, STR_LIT("x-forwarded-for"));
    if (xff != NULL) {
        xff->value = arena_printf(&s->arena, "%.*s, %s", STR_FMT(xff->value), s->dc->peer_ip);
    } else {
        headers_add(&s->req, STR_LIT("x-forwarded-for"),
                    arena_strdup(&s->arena, str_from_c(s->dc->peer_ip)));
    }
    headers_set_copy(&s->req, STR_LIT("x-forwarded-proto"), STR_LIT("http"));
    if (headers_get(&s->req, STR_LIT("x-request-id")) == NULL) {
        char id[37];
        gen_request_id(s, id);
        headers_add(&s->req, STR_LIT("x-request-id"), arena_strdup(&s->arena, str_from_c(id)));
    }
    struct route_req rq = {s->method, s->path, s->authority, STR_LIT("http"), &s->req};
    s->route = router_route(s->hcm->routes, &rq, &s->vhost);
    if (s->route == NULL) {
        STAT_INC(s->hstats->no_route);
        stream_local_reply(s, 404, "", RF_NR);
        return;
    }
    if (s->route->action == RA_DIRECT_RESPONSE) {
        const char *body = s->route->direct_body.len ? s->route->direct_body.p : "";
        stream_local_reply(s, (int)s->route->direct_status, body, 0);
        return;
    }

    s->cluster = &s->w->clusters[s->route->cluster->index];
    if (s->route->timeout_ms > 0) {
        char v[24];
        snprintf(v, sizeof(v), "%" PRIu64, s->route->timeout_ms);
        headers_add(&s->req, STR_LIT("x-envoy-expected-rq-timeout-ms"),
                    arena_strdup(&s->arena, str_from_c(v)));
    }

    /* Edits: route, then virtual host, then route configuration (Envoy's order). */
    apply_edits(&s->req, &s->route->request_edits);
    apply_edits(&s->req, &s->vhost->request_edits);
    apply_edits(&s->req, &s->hcm->routes->request_edits);
    forward(s);
}

/* Rewrites the path and host for the upstream and encodes the request head. */
static void encode_request_head(struct stream *s)
{
    struct str path = s->path;
    const struct route_cfg *rt = s->route;
    if (rt->has_prefix_rewrite) {
        size_t cut = rt->match_kind == RM_PREFIX ? rt->match.len : path.len;
        if (rt->match_kind == RM_PATH) {
            const char *q = memchr(path.p, '?', path.len);
            cut = q ? (size_t)(q - path.p) : path.len;
        }
        if (cut > path.len) {
            cut = path.len;
        }
        path = arena_printf(&s->arena, "%.*s%.*s", STR_FMT(rt->prefix_rewrite),
                            (int)(path.len - cut), path.p + cut);
        if (headers_get(&s->req, STR_LIT("x-envoy-original-path")) == NULL) {
            headers_add(&s->req, STR_LIT("x-envoy-original-path"), s->path);
        }
    }
    if (rt->host_rewrite.len > 0) {
        headers_set_copy(&s->req, STR_LIT("host"), rt->host_rewrite);
    }
    /* Framing towards the upstream mirrors the downstream's. */
    if (s->req_chunked) {
        headers_remove(&s->req, STR_LIT("content-length"));
        headers_add(&s->req, STR_LIT("transfer-encoding"), STR_LIT("chunked"));
    }
    h1_encode_request_head(&s->uc->wbuf, s->method, path, &s->req);
    if (s->is_head) {
        h1_parser_expect_no_body(s->uc->parser);
    }
}

static void forward(struct stream *s)
{
    struct cluster_rt *c = s->cluster;
    int idx = cluster_pick(c, worker_rand(s->w));
    if (idx < 0) {
        STAT_INC(c->stats->upstream_cx_none_healthy);
        stream_local_reply(s, 503, "no healthy upstream", RF_UH);
        return;
    }
    s->ep = &c->eps[idx];
    s->upstream_host = s->ep->cfg->addr.text;
    s->uc = upstream_acquire(s->w, c, s->ep, s);
    if (s->uc == NULL) {
        stream_local_reply(s, 503,
                           "upstream connect error or disconnect/reset before headers. reset "
                           "reason: connection failure",
                           RF_UF);
        return;
    }
    s->t_upstream_start = ev_now(s->w->loop);
    s->ep->active_rq++;
    STAT_INC(c->stats->upstream_rq_total);
    STAT_INC(c->stats->upstream_rq_active);
    STAT_INC(s->ep->stats->rq_total);
    STAT_INC(s->ep->stats->rq_active);
    encode_request_head(s);
}

void stream_request_body(struct stream *s, const uint8_t *p, size_t len)
{
    touch(s);
    s->req_body_bytes += len;
    if (s->uc == NULL) {
        return; /* answered locally: the body is read and dropped until the connection closes */
    }
    if (s->req_chunked) {
        h1_encode_chunk(&s->uc->wbuf, p, len);
    } else {
        buf_append(&s->uc->wbuf, p, len);
    }
    if (upstream_buffered(s->uc) > buffer_limit(s)) {
        downstream_pause_read(s->dc, true);
    }
}

void stream_request_end(struct stream *s)
{
    s->req_done = true;
    ev_timer_stop(s->w->loop, &s->timeout); /* request_timeout is over */
    if (s->uc != NULL && s->req_chunked) {
        h1_encode_chunk(&s->uc->wbuf, NULL, 0);
    }
    if (s->route != NULL && s->route->timeout_ms > 0 && !s->resp_done && s->uc != NULL) {
        ev_timer_set(&s->timeout, (double)s->route->timeout_ms / 1000.0, 0);
        ev_timer_start(s->w->loop, &s->timeout);
    }
    if (s->resp_done && !s->finished) {
        finish(s);
    }
}

void stream_downstream_reset(struct stream *s)
{
    if (s->finished) {
        return;
    }
    s->flags |= RF_DC;
    STAT_INC(s->hstats->downstream_rq_rx_reset);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        if (s->cluster != NULL) {
            STAT_INC(s->cluster->stats->upstream_rq_tx_reset);
        }
        upstream_close(u, "downstream reset");
    }
    finish(s);
}

void stream_downstream_drained(struct stream *s)
{
    if (s->uc != NULL && s->uc->read_paused) {
        upstream_pause_read(s->uc, false);
    }
}

/* ---- response path ---- */

void stream_upstream_connected(struct stream *s)
{
    (void)s;
}

void stream_upstream_head(struct stream *s, struct h1_msg *msg)
{
    touch(s);
    s->t_upstream_headers = ev_now(s->w->loop);
    if (msg->status == 101) {
        /* We stripped Upgrade, so a 101 is a protocol violation (case 25). The local reply
         * closes the upstream connection, which stops its parser. */
        STAT_INC(s->cluster->stats->upstream_cx_protocol_error);
        stream_local_reply(s, 502,
                           "upstream connect error or disconnect/reset before headers. reset "
                           "reason: protocol error",
                           RF_UPE);
        return;
    }
    s->status = msg->status;
    struct headers h;
    headers_init(&h, &s->arena, msg->headers.n + 6);
    for (uint32_t i = 0; i < msg->headers.n; i++) {
        headers_add(&h, msg->headers.v[i].name, msg->headers.v[i].value);
    }
    strip_hop_by_hop(&h);
    headers_remove(&h, STR_LIT("x-envoy-upstream-service-time"));
    char ust[24];
    snprintf(ust, sizeof(ust), "%.0f", (s->t_upstream_headers - s->t_upstream_start) * 1000.0);
    headers_add(&h, STR_LIT("x-envoy-upstream-service-time"),
                arena_strdup(&s->arena, str_from_c(ust)));
    headers_set_copy(&h, STR_LIT("server"), STR_LIT("envoy"));
    if (headers_get(&h, STR_LIT("date")) == NULL) {
        headers_add(&h, STR_LIT("date"), arena_strdup(&s->arena, worker_http_date(s->w)));
    }
    apply_edits(&h, &s->route->response_edits);
    apply_edits(&h, &s->vhost->response_edits);
    apply_edits(&h, &s->hcm->routes->response_edits);

    bool bodiless = s->is_head || msg->status == 204 || msg->status == 304;
    if (!bodiless && msg->content_length < 0) {
        /* chunked or close-delimited upstream body: chunked towards the client */
        headers_remove(&h, STR_LIT("content-length"));
        headers_add(&h, STR_LIT("transfer-encoding"), STR_LIT("chunked"));
        s->resp_chunked = true;
    }
    if (s->w->draining) {
        s->close_after = true;
        STAT_INC(s->hstats->downstream_cx_drain_close);
    }
    if (s->close_after) {
        headers_add(&h, STR_LIT("connection"), STR_LIT("close"));
    }
    h1_encode_response_head(&s->dc->wbuf, msg->status, &h);
    s->resp = h;
    s->resp_keep_alive = msg->keep_alive;
    s->resp_started = true;
}

void stream_upstream_body(struct stream *s, const uint8_t *p, size_t len)
{
    touch(s);
    s->resp_body_bytes += len;
    if (s->resp_chunked) {
        h1_encode_chunk(&s->dc->wbuf, p, len);
    } else {
        buf_append(&s->dc->wbuf, p, len);
    }
    if (buf_len(&s->dc->wbuf) > buffer_limit(s) && s->uc != NULL) {
        upstream_pause_read(s->uc, true);
    }
}

void stream_upstream_end(struct stream *s)
{
    if (s->resp_chunked) {
        h1_encode_chunk(&s->dc->wbuf, NULL, 0);
    }
    s->resp_done = true;
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        /* Reusable only if the whole request went out: an early response (say a 413 before
         * the body was sent) leaves the connection in an unknown state. */
        upstream_release(u, s->req_done && upstream_buffered(u) == 0 && s->resp_keep_alive);
    }
    if (!s->req_done) {
        s->close_after = true;
    }
    finish(s);
}

void stream_upstream_failed(struct stream *s, uint32_t flag, const char *reason)
{
    if (s->finished) {
        return;
    }
    s->uc = NULL;
    if (s->cluster != NULL && flag != RF_UF) {
        STAT_INC(s->cluster->stats->upstream_rq_rx_reset);
    }
    if (s->resp_started) {
        s->flags |= flag;
        STAT_INC(s->hstats->downstream_rq_tx_reset);
        downstream_close(s->dc, true);
        return;
    }
    const char *what = flag == RF_UF    ? "connection failure"
                       : flag == RF_UPE ? "protocol error"
                                        : "connection termination";
    char body[200];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s", what);
    LOG_D("stream: upstream failed: %s", reason);
    stream_local_reply(s, flag == RF_UPE ? 502 : 503, body, flag);
}

void stream_upstream_drained(struct stream *s)
{
    if (s->dc->read_paused && upstream_buffered(s->uc) == 0) {
        downstream_pause_read(s->dc, false);
    }
}

/* ---- the end ---- */

static void record_stats(struct stream *s)
{
    struct hcm_stats *hs = s->hstats;
    STAT_DEC(hs->downstream_rq_active);
    int st = s->status;
    if (st > 0) {
        STAT_INC(hs->downstream_rq_completed);
        switch (st / 100) {
        case 1:
            STAT_INC(hs->downstream_rq_1xx);
            break;
        case 2:
            STAT_INC(hs->downstream_rq_2xx);
            break;
        case 3:
            STAT_INC(hs->downstream_rq_3xx);
            break;
        case 4:
            STAT_INC(hs->downstream_rq_4xx);
            break;
        default:
            STAT_INC(hs->downstream_rq_5xx);
            break;
        }
    }
    ev_tstamp now = ev_now(s->w->loop);
    hist_record_ms(&hs->downstream_rq_time, (now - s->t_start) * 1000.0);
    if (s->ep == NULL) {
        return;
    }
    struct cluster_stats *cs = s->cluster->stats;
    STAT_DEC(cs->upstream_rq_active);
    STAT_DEC(s->ep->stats->rq_active);
    s->ep->active_rq--;
    if (s->t_upstream_headers > 0 && !(s->flags & (RF_UT | RF_UPE))) {
        int code = s->status;
        STAT_INC(cs->upstream_rq_completed);
        if (code >= 100 && code < 600) {
            STAT_INC(cs->upstream_rq_code[code]);
        }
        switch (code / 100) {
        case 1:
            STAT_INC(cs->upstream_rq_1xx);
            break;
        case 2:
            STAT_INC(cs->upstream_rq_2xx);
            break;
        case 3:
            STAT_INC(cs->upstream_rq_3xx);
            break;
        case 4:
            STAT_INC(cs->upstream_rq_4xx);
            break;
        default:
            STAT_INC(cs->upstream_rq_5xx);
            break;
        }
        if (code >= 500) {
            STAT_INC(s->ep->stats->rq_error);
        } else {
            STAT_INC(s->ep->stats->rq_success);
        }
        hist_record_ms(&cs->upstream_rq_time, (now - s->t_upstream_start) * 1000.0);
    } else {
        STAT_INC(s->ep->stats->rq_error);
    }
}

static void write_access_logs(struct stream *s)
{
    struct worker *w = s->w;
    for (uint32_t i = w->log_first[s->dc->lidx]; i < w->log_first[s->dc->lidx + 1]; i++) {
        struct worker_log *l = &w->logs[i];
        access_log_render(&l->buf, &l->fmt, s);
        if (buf_len(&l->buf) > 65536) {
            access_log_flush(l->sink, &l->buf);
        }
    }
}

static void finish(struct stream *s)
{
    if (s->finished) {
        return;
    }
    if (!s->resp_done && !(s->flags & RF_DC)) {
        return; /* still waiting for the response */
    }
    if (!s->req_done && !s->close_after && !(s->flags & RF_DC)) {
        return; /* response done early; the request still arrives and is forwarded */
    }
    s->finished = true;
    ev_timer_stop(s->w->loop, &s->timeout);
    ev_timer_stop(s->w->loop, &s->idle);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_release(u, false);
    }
    s->resp_bytes_sent = s->resp_body_bytes;
    record_stats(s);
    write_access_logs(s);
    downstream_stream_done(s->dc);
}

static void free_stream(struct deferred *d)
{
    struct stream *s = LIST_ENTRY(d, struct stream, defer);
    arena_deinit(&s->arena);
    free(s);
}

void stream_free(struct stream *s)
{
    ev_timer_stop(s->w->loop, &s->timeout);
    ev_timer_stop(s->w->loop, &s->idle);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "stream freed");
    }
    worker_defer(s->w, &s->defer, free_stream);
}
