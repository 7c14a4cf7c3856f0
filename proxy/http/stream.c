/* stream: one request/response exchange (see stream.h). This is the router filter and the glue
 * between the downstream and upstream codecs (downstream_ops, upstream_ops): routing, request
 * header processing (hop-by-hop removal, x-forwarded-*, x-request-id, rewrites, header edits),
 * endpoint choice, upstream attempts and retries (with the cluster's circuit breakers), framing
 * in both directions, trailers, local replies with Envoy's flags, timeouts, access log and
 * stats.
 *
 * Writes are not flushed here: the downstream flushes the upstream after it has fed a read's
 * worth of bytes through the parser, and the upstream flushes the downstream likewise, so a
 * request head and its body go out in one write. A retry, started from its back-off timer,
 * flushes its own connection. */
#include "proxy/http/stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/cds.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/filter_chain.h"
#include "proxy/http/grpc.h"
#include "proxy/http/header_edit.h"
#include "proxy/http/path_norm.h"
#include "proxy/http/retry.h"
#include "proxy/http/router.h"
#include "proxy/http/trust.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/tracing/tracing.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/outlier.h"
#include "proxy/upstream/upstream.h"
#include "proxy/worker.h"

static void finish(struct stream *s);
static void forward(struct stream *s);
static void end_attempt(struct stream *s, uint32_t flags);
static void release_retry_state(struct stream *s);

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
        s->local_reset = true;
        s->dc->ops->reset(s);
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
        s->details = "request_overall_timeout";
        time_out(s, 408, "request timeout", RF_DT);
        return;
    }
    if (s->cluster != NULL) {
        STAT_INC(s->cluster->stats->upstream_rq_timeout);
    }
    if (s->ep != NULL) {
        STAT_INC(s->ep->stats->rq_timeout);
    }
    s->details = "upstream_response_timeout";
    time_out(s, s->timeout_204 ? 204 : 504, "upstream request timeout", RF_UT);
}

/* stream_idle_timeout: no bytes either way for that long. The timer is not restarted on every
 * byte (a heap operation each time); it fires, checks the last activity and re-arms for the
 * remainder (libev's documented lazy pattern). */
static void idle_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct stream *s = t->data;
    double limit = (double)s->idle_ms / 1000.0;
    double due = s->t_activity + limit - ev_now(loop);
    if (due > 0.001) {
        timer_list_start_heap(&s->w->timers, &s->idle, due); /* a one-off remainder */
        return;
    }
    STAT_INC(s->hstats->downstream_rq_idle_timeout);
    s->details = "stream_idle_timeout";
    time_out(s, 408, "stream timeout", RF_SI);
}

/* max_stream_duration: the stream's whole life, however busy (Envoy's 408 "downstream duration
 * timeout" with flag DT, or a reset once the response started). */
static void duration_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = t->data;
    STAT_INC(s->hstats->downstream_rq_max_duration_reached);
    s->details = "max_duration_timeout";
    time_out(s, 408, "downstream duration timeout", RF_DT);
}

static inline void touch(struct stream *s)
{
    s->t_activity = ev_now(s->w->loop);
}

static bool retry_maybe(struct stream *s, uint32_t end_flags);

/* The back-off before a retry is over: start the next attempt. */
static void backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = t->data;
    s->in_backoff = false;
    forward(s);
}

/* The current attempt ran out of time (per_try_timeout or per_try_idle_timeout): its connection
 * is closed; the request is retried when the policy says so (Envoy retries a per-try timeout
 * under 5xx, gateway-error and reset), else it ends with 504 UT. */
static void per_try_expired(struct stream *s)
{
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "per-try timeout");
    }
    if (s->ep != NULL) {
        STAT_INC(s->ep->stats->rq_timeout);
    }
    if (s->attempt_status == 0 && retry_would_retry_failure(s->retry_on, RETRY_FAIL_TIMEOUT) &&
        retry_maybe(s, RF_UT)) {
        return;
    }
    s->details = "upstream_per_try_timeout";
    time_out(s, s->timeout_204 ? 204 : 504, "upstream request timeout", RF_UT);
}

/* per_try_timeout: runs from the request's end to the response head; once a response head
 * arrived it no longer applies (as in Envoy). */
static void per_try_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct stream *s = t->data;
    if (!s->attempt_open || s->attempt_status != 0) {
        return;
    }
    STAT_INC(s->cluster->stats->upstream_rq_per_try_timeout);
    per_try_expired(s);
}

/* per_try_idle_timeout: no byte either way on the current attempt for that long (lazy, as
 * idle_cb). It also applies after the response head: then it resets the stream. */
static void per_try_idle_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct stream *s = t->data;
    if (!s->attempt_open) {
        return;
    }
    double limit = (double)s->retry->per_try_idle_timeout_ms / 1000.0;
    double due = s->t_try_activity + limit - ev_now(loop);
    if (due > 0.001) {
        timer_list_start_heap(&s->w->timers, &s->per_try_idle, due); /* a one-off remainder */
        return;
    }
    STAT_INC(s->cluster->stats->upstream_rq_per_try_idle_timeout);
    per_try_expired(s);
}

struct stream *stream_new(struct downstream *dc)
{
    struct worker *w = dc->w;
    /* The stream and its arena blocks come from the worker's block caches (blkcache.h): one
     * of each per request, recycled without malloc's slow path. */
    struct stream *s = blk_cache_get(&w->stream_cache);
    w->n_streams++;
    if (++w->n_live > w->live_peak) {
        w->live_peak = w->n_live;
    }
    memset(s, 0, sizeof(*s));
    s->w = w;
    s->dc = dc;
    arena_init_cached(&s->arena, &w->stream_arena_cache);
    s->lcfg = dc->chain->listener;
    s->hcm = dc->chain->hcm;
    s->hstats = &dc->sc->stats->hcm[dc->chain->index];
    s->t_start = ev_now(w->loop);
    s->t_activity = s->t_start;
    tl_timer_init(&s->timeout, timeout_cb, s);
    tl_timer_init(&s->idle, idle_cb, s);
    tl_timer_init(&s->backoff, backoff_cb, s);
    tl_timer_init(&s->per_try, per_try_cb, s);
    tl_timer_init(&s->per_try_idle, per_try_idle_cb, s);
    buf_init(&s->body);
    tl_timer_init(&s->duration, duration_cb, s);
    const struct hcm_cfg *h = s->hcm;
    s->idle_ms = h->stream_idle_timeout_ms;
    if (h->max_stream_duration_ms > 0) {
        timer_list_start(&w->timers, &s->duration, h->max_stream_duration_ms);
    }
    if (h->request_timeout_ms > 0) {
        timer_list_start(&w->timers, &s->timeout, h->request_timeout_ms);
    }
    if (h->stream_idle_timeout_ms > 0) {
        timer_list_start(&w->timers, &s->idle, h->stream_idle_timeout_ms);
    }
    STAT_INC(s->hstats->downstream_rq_total);
    if (dc->h2 != NULL) {
        STAT_INC(s->hstats->downstream_rq_http2_total);
    } else {
        STAT_INC(s->hstats->downstream_rq_http1_total);
    }
    STAT_INC(s->hstats->downstream_rq_active);
    return s;
}

/* ---- header processing ---- */

/* Header names dropped when a message crosses the proxy, by the side it came from. Matched by
 * length first, so most headers cost one switch and no string compare. */
enum {
    DROP_HOP = 1,       /* hop-by-hop: never forwarded either way */
    DROP_UNTRUSTED = 2, /* set only by the proxy (Envoy strips them from untrusted requests) */
};

/* Does a TE value list the "trailers" token? */
static bool te_lists_trailers(struct str v)
{
    size_t start = 0;
    for (size_t k = 0; k <= v.len; k++) {
        if (k < v.len && v.p[k] != ',') {
            continue;
        }
        if (str_eq_nocase(str_trim_ows((struct str){v.p + start, k - start}),
                          STR_LIT("trailers"))) {
            return true;
        }
        start = k + 1;
    }
    return false;
}

static unsigned drop_class(struct str n)
{
#define IS(lit) (memcmp(n.p, lit, sizeof(lit) - 1) == 0)
    switch (n.len) {
    case 2:
        return IS("te") ? DROP_HOP : 0;
    case 7:
        return IS("upgrade") || IS("trailer") ? DROP_HOP : 0;
    case 10:
        return IS("connection") || IS("keep-alive") ? DROP_HOP : 0;
    case 14:
        return IS("http2-settings") ? DROP_HOP : 0;
    case 16:
        if (IS("proxy-connection")) {
            return DROP_HOP;
        }
        return IS("x-envoy-internal") ? DROP_UNTRUSTED : 0;
    case 17:
        return IS("transfer-encoding") ? DROP_HOP : 0;
    case 21:
        return IS("x-envoy-original-path") ? DROP_UNTRUSTED : 0;
    case 23:
        /* dropped unless forward_client_cert_details keeps it (keep_client_xfcc) */
        return IS("x-forwarded-client-cert") ? DROP_UNTRUSTED : 0;
    case 29:
        return IS("x-envoy-upstream-service-time") ? DROP_UNTRUSTED : 0;
    case 30:
        return IS("x-envoy-expected-rq-timeout-ms") ? DROP_UNTRUSTED : 0;
    default:
        return 0;
    }
#undef IS
}

/* Removes every header named in a Connection header value (except the proxy's own forwarding
 * headers, which a client may not remove that way: case 20 of the hostile-input catalogue; and
 * TE, which strip_headers keeps only as "te: trailers"). */
static void remove_connection_tokens(struct headers *h, struct str v)
{
    size_t start = 0;
    for (size_t k = 0; k <= v.len; k++) {
        if (k < v.len && v.p[k] != ',') {
            continue;
        }
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
        if (str_eq_lit(name, "x-forwarded-for") || str_eq_lit(name, "x-forwarded-proto") ||
            str_eq_lit(name, "x-request-id") || str_eq_lit(name, "host") ||
            str_eq_lit(name, "connection") || str_eq_lit(name, "te")) {
            continue;
        }
        headers_remove(h, name);
    }
}

/* The request's connection-manager pass, in one walk over the head: removes the hop-by-hop
 * headers (and every header the Connection header names), those only the proxy sets
 * (DROP_UNTRUSTED) and x-forwarded-proto (set again by the caller) unless `keep_xfp`; keeps TE
 * as "te: trailers" when it lists trailers; with `drop_expect`, Expect too (the caller answers
 * it with a 100). Notes where the headers forward_headers reads or replaces are, and whether
 * the first content-type is gRPC's. */
enum {
    SEEN_DUP_XFF = 1,        /* a second x-forwarded-for */
    SEEN_DUP_REQUEST_ID = 2, /* a second x-request-id */
    SEEN_DUP_EXT_ADDR = 4,   /* a second x-envoy-external-address */
    SEEN_DUP_XFCC = 8,       /* a second x-forwarded-client-cert (kept) */
};

struct req_seen {
    int xff;        /* the first x-forwarded-for's index, -1: none */
    int request_id; /* the first x-request-id's, -1: none */
    int ext_addr;   /* the first x-envoy-external-address's, -1: none */
    int xfcc;       /* the first x-forwarded-client-cert's when kept, -1: none */
    unsigned dups;  /* SEEN_DUP_* (rare) */
    bool xfp;       /* a client x-forwarded-proto was kept */
    bool envoy;     /* some other x-envoy-* header (forward_headers may remove it) */
    bool grpc;
};

static void seen_at(int *first, unsigned *dups, unsigned dup, uint32_t wr)
{
    if (*first < 0) {
        *first = (int)wr;
    } else {
        *dups |= dup;
    }
}

static void strip_request_headers(struct headers *h, bool drop_expect, bool keep_xfp,
                                  bool keep_xfcc, struct req_seen *seen)
{
    /* Rare: names listed in Connection are hop-by-hop as well. */
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq_lit(h->v[i].name, "connection")) {
            remove_connection_tokens(h, h->v[i].value);
        }
    }
    bool ct_seen = false;
    *seen = (struct req_seen){-1, -1, -1, -1, 0, false, false, false};
    uint32_t wr = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        struct str n = h->v[i].name;
        if (!(drop_class(n) & (DROP_HOP | DROP_UNTRUSTED))) {
            if (n.len == 15 && str_eq_lit(n, "x-forwarded-for")) {
                seen_at(&seen->xff, &seen->dups, SEEN_DUP_XFF, wr);
            } else if (n.len == 17 && str_eq_lit(n, "x-forwarded-proto")) {
                if (!keep_xfp) {
                    continue;
                }
                seen->xfp = true;
            } else if (drop_expect && n.len == 6 && str_eq_lit(n, "expect")) {
                continue;
            } else if (n.len == 12 && str_eq_lit(n, "x-request-id")) {
                seen_at(&seen->request_id, &seen->dups, SEEN_DUP_REQUEST_ID, wr);
            } else if (n.len == 12 && !ct_seen && str_eq_lit(n, "content-type")) {
                ct_seen = true;
                seen->grpc = grpc_is_content_type(h->v[i].value);
            } else if (n.len == 24 && str_eq_lit(n, "x-envoy-external-address")) {
                seen_at(&seen->ext_addr, &seen->dups, SEEN_DUP_EXT_ADDR, wr);
            } else if (n.len > 8 && memcmp(n.p, "x-envoy-", 8) == 0) {
                seen->envoy = true;
            }
            h->v[wr++] = h->v[i];
        } else if (str_eq_lit(n, "te") && te_lists_trailers(h->v[i].value)) {
            h->v[wr] = h->v[i];
            h->v[wr++].value = STR_LIT("trailers");
        } else if (keep_xfcc && n.len == 23 && str_eq_lit(n, "x-forwarded-client-cert")) {
            seen_at(&seen->xfcc, &seen->dups, SEEN_DUP_XFCC, wr);
            h->v[wr++] = h->v[i];
        }
    }
    h->n = wr;
}

/* A byte's two lower-case hex digits, for gen_request_id. */
/* clang-format off */
#define HEX_DIGIT(n) ((char)((n) < 10 ? '0' + (n) : 'a' - 10 + (n)))
#define HEX_PAIR(x) {HEX_DIGIT((x) >> 4), HEX_DIGIT((x) & 15)}
#define HEX_PAIRS4(x) HEX_PAIR(x), HEX_PAIR(x + 1), HEX_PAIR(x + 2), HEX_PAIR(x + 3)
#define HEX_PAIRS16(x) HEX_PAIRS4(x), HEX_PAIRS4(x + 4), HEX_PAIRS4(x + 8), HEX_PAIRS4(x + 12)
#define HEX_PAIRS64(x) HEX_PAIRS16(x), HEX_PAIRS16(x + 16), HEX_PAIRS16(x + 32), HEX_PAIRS16(x + 48)
static const char hex_pairs[256][2] = {
    HEX_PAIRS64(0), HEX_PAIRS64(64), HEX_PAIRS64(128), HEX_PAIRS64(192),
};
/* clang-format on */

/* A random (version 4) UUID in its 36-character text form, not terminated. */
static void gen_request_id(struct stream *s, char out[36])
{
    uint64_t a = worker_rand(s->w), b = worker_rand(s->w);
    uint8_t r[16];
    memcpy(r, &a, 8);
    memcpy(r + 8, &b, 8);
    r[6] = (uint8_t)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (uint8_t)((r[8] & 0x3f) | 0x80); /* variant 10 */
    /* Each byte's two digits in one load and one store, at its place in 8-4-4-4-12. */
    static const uint8_t at[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};
    for (int i = 0; i < 16; i++) {
        memcpy(out + at[i], hex_pairs[r[i]], 2);
    }
    out[8] = out[13] = out[18] = out[23] = '-';
}

/* Index of the first header named `name`, -1: none (the rare paths of forward_headers). */
static int header_index(const struct headers *h, struct str name)
{
    const struct header *x = headers_get(h, name);
    return x != NULL ? (int)(x - h->v) : -1;
}

/* Sets the header at `at` (-1: none yet; `dup`: more than one) to `value`. */
static void header_put(struct headers *h, int at, bool dup, struct str name, struct str value)
{
    if (dup) {
        headers_set(h, name, value); /* rare: removes them all, adds one */
    } else if (at >= 0) {
        h->v[at].value = value;
    } else {
        headers_add(h, name, value);
    }
}

/* The x-envoy-* request headers Envoy's connection manager removes from a request that is not
 * internal, before the filters and routing (those strip_request_headers drops from every request
 * aside). The first RETRY_CONTROLS are the retry and timeout controls retry_setup consumes, in
 * this order; the last EDGE_ONLY go only from an edge request. */
static const struct str external_only[] = {
    STR_LIT("x-envoy-retry-on"),
    STR_LIT("x-envoy-retry-grpc-on"),
    STR_LIT("x-envoy-max-retries"),
    STR_LIT("x-envoy-retriable-status-codes"),
    STR_LIT("x-envoy-upstream-rq-timeout-ms"),
    STR_LIT("x-envoy-upstream-rq-per-try-timeout-ms"),
    STR_LIT("x-envoy-upstream-rq-timeout-alt-response"),
    STR_LIT("x-envoy-upstream-alt-stat-name"),
    STR_LIT("x-envoy-force-trace"),
    STR_LIT("x-envoy-ip-tags"),
    STR_LIT("x-envoy-decorator-operation"),
    STR_LIT("x-envoy-downstream-service-cluster"),
    STR_LIT("x-envoy-downstream-service-node"),
};
#define N_EXTERNAL_ONLY (sizeof(external_only) / sizeof(external_only[0]))
enum { RETRY_CONTROLS = 7, EDGE_ONLY = 3 };

/* The connection manager's trust model (Envoy's ConnectionManagerUtility::mutateRequestHeaders),
 * after strip_request_headers:
 * - the trusted client address (s->client_ip): with use_remote_address the peer, or the
 *   xff_num_trusted_hops-th x-forwarded-for entry from the right when that is an address; without
 *   it, the (xff_num_trusted_hops + 1)-th entry from the right when that is an address (none
 *   when there is no x-forwarded-for);
 * - x-forwarded-for: with use_remote_address the peer's IP is appended unless skip_xff_append
 *   (Envoy appends its own address instead when the peer is loopback); else it passes through;
 * - x-forwarded-proto: this listener's scheme, unless xff_num_trusted_hops > 0 and the client
 *   sent one;
 * - internal (x-envoy-internal: true, and the x-envoy-* retry and timeout headers count): the
 *   request had a single address (no x-forwarded-for before the append with
 *   use_remote_address, exactly one entry without) and it is internal (trust.h);
 * - not internal: the headers of external_only are removed (its last three on edge requests);
 * - edge (not internal, use_remote_address): x-envoy-external-address is the client address,
 *   and with generate_request_id a client's x-request-id is replaced by a new one.
 * Several x-forwarded-for headers count as one, joined with "," (Envoy's codecs join them). */
/* Whether a client's x-forwarded-client-cert goes on (forward_client_cert_details): always
 * with ALWAYS_FORWARD_ONLY; with FORWARD_ONLY and APPEND_FORWARD when the client proved its
 * identity (mutual TLS); never otherwise (SANITIZE_SET replaces it, SANITIZE removes it). */
static bool keep_client_xfcc(const struct stream *s)
{
    enum xfcc_mode m = s->hcm->xfcc;
    return m == XFCC_ALWAYS_FORWARD_ONLY ||
           ((m == XFCC_FORWARD_ONLY || m == XFCC_APPEND_FORWARD) && tls_conn_peer_cert(s->dc->tls));
}

/* The request's scheme, as Envoy sets it for a request without a trusted one: "https" when
 * the client's connection is TLS. */
static struct str stream_scheme(const struct stream *s)
{
    return s->dc->tls != NULL ? STR_LIT("https") : STR_LIT("http");
}

/* forward_client_cert_details APPEND_FORWARD or SANITIZE_SET over mutual TLS: this hop's
 * x-forwarded-client-cert element (tls.h: tls_conn_xfcc) after the ones that came, ','-joined
 * as Envoy does, or alone. */
static void set_xfcc(struct stream *s, const struct req_seen *seen)
{
    struct headers *h = &s->req;
    const struct str name = STR_LIT("x-forwarded-client-cert");
    int at = -1; /* looked up again: forward_headers may have moved headers since the strip */
    if (s->hcm->xfcc == XFCC_APPEND_FORWARD && seen->xfcc >= 0) {
        if (seen->dups & SEEN_DUP_XFCC) {
            headers_join(h, name, STR_LIT(","));
        }
        at = header_index(h, name);
    }
    struct buf b;
    buf_init(&b);
    if (at >= 0) {
        buf_append(&b, h->v[at].value.p, h->v[at].value.len);
        buf_append(&b, ",", 1);
    }
    tls_conn_xfcc(s->dc->tls, s->hcm->xfcc_details, &b);
    struct str v = arena_strdup(&s->arena, (struct str){(const char *)buf_head(&b), buf_len(&b)});
    buf_deinit(&b);
    if (at >= 0) {
        h->v[at].value = v;
    } else {
        headers_add(h, name, v);
    }
}

static void forward_headers(struct stream *s, struct req_seen *seen)
{
    const struct hcm_cfg *hc = s->hcm;
    struct headers *h = &s->req;
    if (seen->dups & SEEN_DUP_XFF) { /* rare: the join moves the headers after the first */
        headers_join(h, STR_LIT("x-forwarded-for"), STR_LIT(","));
        seen->xff = header_index(h, STR_LIT("x-forwarded-for"));
        seen->request_id = header_index(h, STR_LIT("x-request-id"));
        seen->ext_addr = header_index(h, STR_LIT("x-envoy-external-address"));
    }
    struct str xff = seen->xff >= 0 ? h->v[seen->xff].value : STR_NULL;
    struct str peer = str_from_c(s->dc->peer_ip);
    uint32_t hops = hc->xff_num_trusted_hops;
    bool internal = false, only = false;
    s->client_from_xff = false;
    if (hc->use_remote_address) {
        if (hops > 0 && seen->xff >= 0 && trust_xff_entry(xff, hops - 1, &s->client_ip, &only)) {
            s->client_from_xff = true; /* x-forwarded-for was there: not a single address */
        } else {
            s->client_ip = peer;
            internal = seen->xff < 0 && s->dc->peer_internal;
        }
        if (hc->skip_xff_append) {
            /* x-forwarded-for stays as it came */
        } else if (seen->xff >= 0) {
            h->v[seen->xff].value =
                arena_printf(&s->arena, "%.*s, %s", STR_FMT(xff), s->dc->peer_ip);
        } else {
            headers_add(h, STR_LIT("x-forwarded-for"), arena_strdup(&s->arena, peer));
        }
    } else if (seen->xff >= 0 && trust_xff_entry(xff, hops, &s->client_ip, &only)) {
        s->client_from_xff = true;
        internal = only && trust_text_is_internal(s->client_ip);
    } else {
        s->client_ip = peer; /* Envoy's downstream remote address stays the peer */
    }
    if (!seen->xfp) {
        headers_add(h, STR_LIT("x-forwarded-proto"), stream_scheme(s));
    }
    if (internal) {
        headers_add(h, STR_LIT("x-envoy-internal"), STR_LIT("true"));
    }
    bool edge = !internal && hc->use_remote_address;
    if (!internal && seen->envoy) { /* rare: a client sent x-envoy-* headers */
        size_t n = edge ? N_EXTERNAL_ONLY : N_EXTERNAL_ONLY - EDGE_ONLY;
        for (size_t i = 0; i < n; i++) {
            headers_remove(h, external_only[i]);
        }
        seen->request_id = header_index(h, STR_LIT("x-request-id"));
        seen->ext_addr = header_index(h, STR_LIT("x-envoy-external-address"));
    }
    if (edge) {
        header_put(h, seen->ext_addr, seen->dups & SEEN_DUP_EXT_ADDR,
                   STR_LIT("x-envoy-external-address"), s->client_ip);
    }
    if (hc->generate_request_id && (edge || seen->request_id < 0)) {
        char *id = arena_alloc(&s->arena, 36);
        gen_request_id(s, id);
        header_put(h, seen->request_id, seen->dups & SEEN_DUP_REQUEST_ID, STR_LIT("x-request-id"),
                   (struct str){id, 36});
    }
    if ((hc->xfcc == XFCC_APPEND_FORWARD || hc->xfcc == XFCC_SANITIZE_SET) &&
        tls_conn_peer_cert(s->dc->tls)) {
        set_xfcc(s, seen);
    }
}

/* ---- local replies ---- */

/* The whole-server graceful drain (proxy/drain.h), as Envoy's connection manager asks its drain
 * manager before each response head: when the answer is to close, an HTTP/1.1 connection says
 * connection: close on this response and closes after it, an HTTP/2 one starts its GOAWAY
 * sequence. One branch when no drain runs. */
static inline void drain_check(struct stream *s)
{
    if (s->w->drain_on && !s->dc->draining && worker_drain_close(s->w, s->dc->chain->listener)) {
        downstream_drain_soft(s->dc);
    }
}

/* What every local reply carries after its own fields: date, server, x-envoy-overloaded on a
 * circuit breaker's (FLAG has RF_UO), the route's and virtual host's response header edits,
 * then the filters' decorations. */
static void local_reply_common_headers(struct stream *s, struct headers *h, uint32_t flag)
{
    headers_add(h, STR_LIT("date"), arena_strdup(&s->arena, worker_http_date(s->w)));
    headers_add(h, STR_LIT("server"), STR_LIT("envoy"));
    if ((flag & RF_UO) && !s->hcm->suppress_envoy_headers) {
        /* Envoy's router on a request dropped by a circuit breaker */
        headers_add(h, STR_LIT("x-envoy-overloaded"), STR_LIT("true"));
    }
    if (s->route != NULL) {
        header_edits_apply(h, &s->route->response_edits);
    }
    if (s->vhost != NULL) {
        header_edits_apply(h, &s->vhost->response_edits);
    }
    if (s->fc != NULL) {
        filter_chain_local_reply(s, h);
    }
}

/* A local reply to a gRPC request: a Trailers-Only response, one header block that ends the
 * stream: status 200, content-type application/grpc, grpc-status (grpc.h's mapping of the HTTP
 * status and `flag`) and the body as a percent-encoded grpc-message (Envoy's
 * Http::Utility::sendLocalReply). HTTP/1.1 gets a 200 with content-length 0. The access log and
 * the stats see 200, as Envoy logs it (envoyproxy/envoy#29052); the flag says why. */
static void grpc_local_reply(struct stream *s, int http_status, const char *body, uint32_t flag)
{
    int gs = grpc_status_for_local_reply(http_status, flag);
    s->status = 200;
    struct headers h;
    headers_init(&h, &s->arena, 8);
    headers_add(&h, STR_LIT("content-type"), STR_LIT("application/grpc"));
    headers_add(&h, STR_LIT("grpc-status"), arena_u64(&s->arena, (uint64_t)gs));
    if (body != NULL && body[0] != '\0') {
        headers_add(&h, STR_LIT("grpc-message"), grpc_percent_encode(&s->arena, str_from_c(body)));
    }
    if (s->h2s == NULL) {
        headers_add(&h, STR_LIT("content-length"), STR_LIT("0"));
    }
    local_reply_common_headers(s, &h, flag);
    s->resp_chunked = false;
    s->resp = h; /* for the access log's %RESP(grpc-status)% */
    s->dc->ops->send_head(s, 200, &h, true);
    s->resp_started = true;
    s->resp_done = true;
    finish(s);
}

/* A local reply; `extra`, when not NULL, is one more header (the path normalization's
 * redirect's location). */
static void local_reply(struct stream *s, int status, const char *body, uint32_t flag,
                        const struct header *extra);

void stream_local_reply(struct stream *s, int status, const char *body, uint32_t flag)
{
    local_reply(s, status, body, flag, NULL);
}

void stream_set_details(struct stream *s, const char *details)
{
    s->details = details;
}

/* Envoy's response code details for a local reply with `flag` whose site set none. */
static const char *details_for_flag(uint32_t flag)
{
    switch (flag) {
    case RF_NR:
        return "route_not_found";
    case RF_NC:
        return "cluster_not_found";
    case RF_UH:
        return "no_healthy_upstream";
    case RF_FI:
        return "fault_filter_abort";
    case RF_RL:
        return "local_rate_limited";
    case RF_DPE:
        return "http1.codec_error"; /* the one DPE local reply: HTTP/1 parse errors */
    default:
        return NULL;
    }
}

static void local_reply(struct stream *s, int status, const char *body, uint32_t flag,
                        const struct header *extra)
{
    s->flags |= flag;
    if (s->finished) {
        return;
    }
    if (s->details == NULL) {
        s->details = details_for_flag(flag);
    }
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "local reply");
    }
    if (s->resp_started) {
        /* Too late for a clean answer: never let a truncated response look complete. */
        STAT_INC(s->hstats->downstream_rq_tx_reset);
        s->local_reset = true;
        s->dc->ops->reset(s);
        return;
    }
    drain_check(s);
    if ((!s->req_done && s->req_has_body) || s->dc->draining) {
        /* The rest of the request body would be read as a new request: close after
         * answering. A bodiless request's end follows at once, and the stream finishes then. */
        s->close_after = true;
    }
    if (s->is_grpc) {
        grpc_local_reply(s, status, body, flag);
        return;
    }
    s->status = status;
    bool no_content = status == 204; /* no body, and no content-length (RFC 9110 8.6) */
    size_t blen = body && !no_content ? strlen(body) : 0;
    struct headers h;
    headers_init(&h, &s->arena, 6);
    char len[24];
    snprintf(len, sizeof(len), "%zu", blen);
    if (blen > 0) {
        headers_add(&h, STR_LIT("content-type"), STR_LIT("text/plain"));
    }
    if (!no_content) {
        headers_add(&h, STR_LIT("content-length"), arena_strdup(&s->arena, str_from_c(len)));
    }
    if (extra != NULL) {
        headers_add(&h, extra->name, extra->value);
    }
    local_reply_common_headers(s, &h, flag);
    s->resp_chunked = false; /* a local reply has a content-length */
    bool bodiless = blen == 0 || s->is_head;
    s->dc->ops->send_head(s, status, &h, bodiless);
    if (!bodiless) {
        s->dc->ops->send_body(s, (const uint8_t *)body, blen, true);
        s->resp_body_bytes = blen;
    }
    s->resp_started = true;
    s->resp_done = true;
    finish(s);
}

/* ---- request path ---- */

/* normalize_path, merge_slashes and path_with_escaped_slashes_action (path_norm.h), as Envoy's
 * connection manager applies them: before the filters and routing, so the routes match and the
 * upstream receives the result (in the stream's arena). An asterisk-form target is left as it
 * is. Returns false when the stream was answered: 400 (a path that cannot be normalized, an
 * escaped slash with REJECT_REQUEST, a gRPC request that would be redirected) or a 307 to the
 * unescaped path (UNESCAPE_AND_REDIRECT), with Envoy's counters. */
static bool normalize_path(struct stream *s)
{
    const struct path_norm_opts *o = &s->hcm->path_norm;
    if (s->path.len == 0 || s->path.p[0] != '/') {
        return true;
    }
    char *buf = arena_alloc(&s->arena, path_norm_bound(o, s->path));
    size_t n = 0;
    enum path_norm_result r = path_normalize(o, s->path, buf, &n);
    if (r == PATH_NORM_REJECT || (r == PATH_NORM_REDIRECT && s->is_grpc)) {
        STAT_INC(s->hstats->downstream_rq_failed_path_normalization);
        s->details = "path_normalization_failed";
        stream_local_reply(s, 400, "", 0);
        return false;
    }
    s->path = (struct str){buf, n};
    if (r == PATH_NORM_REDIRECT) {
        STAT_INC(s->hstats->downstream_rq_redirected_with_normalized_path);
        struct header loc = {STR_LIT("location"), s->path};
        s->details = "path_normalization_failed"; /* Envoy's redirect says so too */
        local_reply(s, 307, "", 0, &loc);
        return false;
    }
    return true;
}

/* Tracing (proxy/tracing/tracing.h): the sampling decision (x-request-id may get its trace
 * reason), the incoming context, and the outgoing one injected into the request. */
static void start_span(struct stream *s)
{
    s->span = tracing_start(s->hcm->tracing, s->w, &s->arena, &s->req, ev_now(s->w->loop),
                            s->dc->sc->stats->ext);
}

static void finish_span(struct stream *s)
{
    const struct header *rid = headers_get(&s->req, STR_LIT("x-request-id"));
    const struct header *ua = headers_get(&s->req, STR_LIT("user-agent"));
    struct span_fields f = {
        .method = s->method,
        .authority = s->authority,
        .path = s->path,
        .protocol = s->h2s != NULL ? STR_LIT("HTTP/2") : STR_LIT("HTTP/1.1"),
        .status = s->status,
        .flags = s->flags,
        .cluster = s->cluster != NULL ? s->cluster->cfg->name : STR_NULL,
        .request_id = rid != NULL ? rid->value : STR_NULL,
        .peer_ip = str_from_c(s->dc->peer_ip),
        .upstream_host = s->upstream_host,
        .user_agent = ua != NULL ? ua->value : STR_NULL,
        .req = &s->req,
        .t_end = ev_now(s->w->loop),
    };
    tracing_finish(s->span, s->w, &f);
}

void stream_request_head(struct stream *s, struct h1_msg *msg)
{
    /* Views, like the header list below: the bytes stay in the parser's block (HTTP/1) or
     * the stream's arena (HTTP/2), which live until this stream ends. */
    s->method = msg->method;
    s->path = msg->target;
    s->version_minor = msg->version_minor;
    s->req_chunked = msg->chunked;
    s->req_has_body = msg->chunked || msg->content_length > 0;
    s->is_head = str_eq_lit(s->method, "HEAD");
    if (!msg->keep_alive) {
        s->close_after = true;
    }
    /* Copy the header array (not the bytes: they stay in the parser's block, which lives
     * until the next request starts, after this stream ends). */
    headers_init_copy(&s->req, &s->arena, msg->headers.v, msg->headers.n, 8);
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

    /* Connection-manager header processing, before routing (Envoy's order) and before any
     * local reply, which carries the request id too and answers gRPC requests in gRPC. */
    struct req_seen seen; /* the list changes no more before forward_headers */
    strip_request_headers(&s->req, msg->expect_continue, s->hcm->xff_num_trusted_hops > 0,
                          keep_client_xfcc(s), &seen);
    s->is_grpc = seen.grpc;

    if (s->version_minor == 0) {
        s->details = "low_version";
        stream_local_reply(s, 426, "", 0);
        return;
    }
    if (str_eq_lit(s->method, "CONNECT")) {
        s->close_after = true;
        s->details = "upgrade_failed"; /* Envoy's 403 for an upgrade its route refuses */
        stream_local_reply(s, 403, "", 0);
        return;
    }
    if (s->path.len > 0 && memchr(s->path.p, '#', s->path.len) != NULL) {
        /* Envoy's default (runtime envoy.reloadable_features.http_reject_path_with_fragment):
         * a fragment is not part of a request target; 400, counted as its path normalization
         * failures are, whatever the normalization options */
        STAT_INC(s->hstats->downstream_rq_failed_path_normalization);
        s->details = "path_normalization_failed"; /* Envoy's: its path normalization rejects it */
        stream_local_reply(s, 400, "", 0);
        return;
    }
    if (s->hcm->path_norm.any && !normalize_path(s)) {
        return;
    }

    if (msg->expect_continue) {
        s->dc->ops->send_continue(s);
    }

    forward_headers(s, &seen);
    if (s->hcm->tracing != NULL) {
        start_span(s);
    }
    struct route_req rq = {.method = s->method,
                           .path = s->path,
                           .authority = s->authority,
                           .scheme = stream_scheme(s),
                           .headers = &s->req,
                           .grpc = s->is_grpc,
                           .source_ip = s->client_ip,
                           .arena = &s->arena};
    /* reload: the newest route table, held until the stream is freed */
    s->routes = worker_routes_acquire_in(s->w, s->dc->sc->rds, s->hcm, &s->routes_pin);
    s->route = router_route(s->routes, &rq, &s->vhost);
    if (s->hcm->n_filters > 0 && !filter_chain_request_headers(s)) {
        return; /* stopped (the chain calls stream_route_request on resume) or answered */
    }
    stream_route_request(s);
}

/* route.idle_timeout replaces the connection manager's stream_idle_timeout for this stream;
 * 0 turns the idle timeout off. */
static void route_idle_timeout(struct stream *s)
{
    if (!s->route->has_idle_timeout) {
        return;
    }
    s->idle_ms = s->route->idle_timeout_ms;
    timer_list_stop(&s->w->timers, &s->idle);
    if (s->idle_ms > 0) {
        touch(s);
        timer_list_start(&s->w->timers, &s->idle, s->idle_ms);
    }
}

/* grpc-timeout towards the upstream: `ms` in the header's format (grpc.h). */
static void set_grpc_timeout(struct stream *s, uint64_t ms)
{
    char v[16];
    size_t n = grpc_timeout_encode(ms, v);
    headers_set_copy(&s->req, STR_LIT("grpc-timeout"), (struct str){v, n});
}

/* The route's max_stream_duration (Envoy's ActiveStream::refreshDurationTimeout): the stream's
 * duration limit, counted from its start, replacing the connection manager's. For a gRPC request
 * with a grpc-timeout header and grpc_timeout_header_max set, the header (capped by the max
 * unless it is 0, then minus grpc_timeout_header_offset; an offset as large as the timeout ends
 * the stream at once) is the limit; else max_stream_duration.max_stream_duration (0: none),
 * else the connection manager's. A gRPC request's grpc-timeout towards the upstream becomes the
 * limit when that is shorter than what the client sent (or it sent none), and is removed when
 * the limit is turned off. Unlike Envoy, a grpc-timeout header on a request that is not gRPC
 * is not read (the reading: "a gRPC request's grpc-timeout"). */
static void route_stream_duration(struct stream *s, bool has_hdr, uint64_t hdr_ms)
{
    const struct route_cfg *rt = s->route;
    uint64_t t = 0;
    bool off = false;
    if (!has_hdr || !rt->has_grpc_header_max) {
        if (rt->has_msd_duration) {
            t = rt->msd_duration_ms;
            off = t == 0;
        } else if (s->hcm->max_stream_duration_ms > 0) {
            t = s->hcm->max_stream_duration_ms;
        } else {
            off = true;
        }
    } else {
        t = hdr_ms;
        if (rt->grpc_header_max_ms != 0 && t > rt->grpc_header_max_ms) {
            t = rt->grpc_header_max_ms;
        }
        if (t != 0 && rt->grpc_header_offset_ms > 0) {
            t = rt->grpc_header_offset_ms < t ? t - rt->grpc_header_offset_ms : 0;
        }
    }
    if (off) {
        if (tl_timer_active(&s->duration)) {
            timer_list_stop(&s->w->timers, &s->duration);
            if (s->is_grpc) {
                headers_remove(&s->req, STR_LIT("grpc-timeout"));
            }
        }
        return;
    }
    if (s->is_grpc && (!has_hdr || t < hdr_ms)) {
        set_grpc_timeout(s, t);
    }
    double used = ev_now(s->w->loop) - s->t_start;
    double left = (double)t / 1000.0 - used;
    timer_list_start_heap(&s->w->timers, &s->duration, left > 0 ? left : 0); /* the rest */
}

/* The route's timeouts for this stream: its `timeout`; for a gRPC request on a route with the
 * deprecated max_grpc_timeout, the request's grpc-timeout (absent: none) minus
 * grpc_timeout_offset when the offset is smaller, capped by max_grpc_timeout unless that is 0
 * (Envoy's FilterUtility::finalTimeout); with max_stream_duration on the route, no route
 * timeout and the stream duration limit above. A grpc-timeout header Envoy would not parse (9
 * or more digits, a bad unit) is ignored. */
static void route_timeouts(struct stream *s)
{
    const struct route_cfg *rt = s->route;
    uint64_t hdr_ms = 0;
    bool has_hdr = false;
    if (s->is_grpc) {
        const struct header *gt = headers_get(&s->req, STR_LIT("grpc-timeout"));
        has_hdr = gt != NULL && grpc_timeout_parse(gt->value, &hdr_ms) == 0;
    }
    s->route_timeout_ms = rt->timeout_ms;
    if (rt->has_max_stream_duration) {
        s->route_timeout_ms = 0;
        route_stream_duration(s, has_hdr, hdr_ms);
        return;
    }
    if (s->is_grpc && rt->has_max_grpc_timeout) {
        uint64_t t = has_hdr ? hdr_ms : 0;
        if (rt->grpc_timeout_offset_ms > 0 && rt->grpc_timeout_offset_ms < t) {
            t -= rt->grpc_timeout_offset_ms;
        }
        if (rt->max_grpc_timeout_ms != 0 && (t == 0 || t > rt->max_grpc_timeout_ms)) {
            t = rt->max_grpc_timeout_ms;
        }
        s->route_timeout_ms = t;
    }
}

/* Retries with only x-envoy-retry-on (no policy on the route or its virtual host): Envoy's
 * defaults. */
static const struct retry_policy header_only_policy = {
    .num_retries = 1,
    .backoff_base_ms = 25,
    .backoff_max_ms = 250,
    .host_selection_max_attempts = 1,
};

/* x-envoy-retriable-status-codes: a comma-separated list; bad entries are skipped. */
static void parse_status_codes(struct stream *s, struct str v)
{
    uint32_t n = 1;
    for (size_t i = 0; i < v.len; i++) {
        n += v.p[i] == ',';
    }
    uint32_t *codes = ARENA_NEW_N(&s->arena, uint32_t, n);
    uint32_t k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= v.len; i++) {
        if (i < v.len && v.p[i] != ',') {
            continue;
        }
        uint32_t c;
        if (retry_parse_count((struct str){v.p + start, i - start}, &c) == 0 && c >= 100 &&
            c <= 599) {
            codes[k++] = c;
        }
        start = i + 1;
    }
    s->hdr_codes = codes;
    s->n_hdr_codes = k;
}

/* The stream's retry state once its route is known: the route's policy, else its virtual
 * host's (Envoy: the route's wins entirely), then the x-envoy-* retry and timeout headers, which
 * also replace the route timeout and the per-try timeout (Envoy's FilterUtility::finalTimeout:
 * a value that is not a number is ignored; 0 turns the route timeout off). With retries
 * possible the request body is kept for a replay, up to the route's (else the virtual host's)
 * per_request_buffer_limit_bytes, at most the listener's buffer limit. */
static void retry_setup(struct stream *s)
{
    const struct retry_policy *p = s->route->retry != NULL ? s->route->retry : s->vhost->retry;
    s->retry = p != NULL ? p : &header_only_policy;
    s->retry_on = p != NULL ? p->retry_on : 0;
    s->retries_left = s->retry->num_retries;
    /* One pass takes the x-envoy retry and timeout controls out of the request (the first of
     * each name counts). They count wherever they came from, as in Envoy's router: the client's
     * were removed by forward_headers, before the filters, unless the request is internal, and a
     * filter may have added some since. */
    struct str v[RETRY_CONTROLS];
    bool has[RETRY_CONTROLS] = {false};
    struct headers *rq = &s->req;
    uint32_t wr = 0;
    for (uint32_t i = 0; i < rq->n; i++) {
        struct str n = rq->v[i].name;
        int k = -1;
        if (n.len >= 16 && memcmp(n.p, "x-envoy-", 8) == 0) {
            for (int j = 0; j < RETRY_CONTROLS && k < 0; j++) {
                k = str_eq(n, external_only[j]) ? j : -1;
            }
        }
        if (k < 0) {
            rq->v[wr++] = rq->v[i];
        } else if (!has[k]) {
            has[k] = true;
            v[k] = rq->v[i].value;
        }
    }
    rq->n = wr;
    if (has[0]) {
        retry_on_parse_set(v[0], RETRY_SET_HTTP, false, &s->retry_on, NULL);
    }
    if (has[1]) {
        retry_on_parse_set(v[1], RETRY_SET_GRPC, false, &s->retry_on, NULL);
    }
    uint32_t n;
    if (has[2] && s->retry_on != 0 && retry_parse_count(v[2], &n) == 0) {
        s->retries_left = n;
    }
    if (has[3]) {
        parse_status_codes(s, v[3]);
    }
    unsigned long long ms;
    if (has[4] && str_to_u64(str_trim_ows(v[4]), &ms) == 0) {
        s->route_timeout_ms = ms;
    }
    s->per_try_ms = s->retry->per_try_timeout_ms;
    if (has[5] && str_to_u64(str_trim_ows(v[5]), &ms) == 0) {
        s->per_try_ms = ms;
    }
    s->timeout_204 = has[6]; /* its value does not matter (Envoy) */
    if (s->route_timeout_ms != 0 && s->per_try_ms >= s->route_timeout_ms) {
        s->per_try_ms = 0; /* the route timeout comes first anyway */
    }
    if (s->retry_on == 0) {
        return;
    }
    uint32_t limit = s->route->per_request_buffer_limit != UINT32_MAX
                         ? s->route->per_request_buffer_limit
                         : s->vhost->per_request_buffer_limit;
    s->body_limit = limit < buffer_limit(s) ? limit : buffer_limit(s);
    s->body_kept = true;
}

void stream_route_request(struct stream *s)
{
    if (s->route == NULL) {
        STAT_INC(s->hstats->no_route);
        stream_local_reply(s, 404, "", RF_NR);
        return;
    }
    if (s->route->action == RA_DIRECT_RESPONSE) {
        const char *body = s->route->direct_body.len ? s->route->direct_body.p : "";
        s->details = "direct_response";
        stream_local_reply(s, (int)s->route->direct_status, body, 0);
        return;
    }

    /* The cluster (cluster_header, weighted_clusters) and the hash key see the headers as the
     * filters left them, before the route's edits (Envoy's order). */
    struct route_req rq = {.method = s->method,
                           .path = s->path,
                           .authority = s->authority,
                           .scheme = stream_scheme(s),
                           .headers = &s->req,
                           .source_ip = s->client_ip,
                           .arena = &s->arena};
    const struct cluster_cfg *cc =
        router_pick_cluster(s->route, &rq, worker_rand(s->w), &s->wcluster);
    if (cc == NULL) {
        STAT_INC(s->hstats->no_cluster);
        stream_local_reply(s, (int)s->route->cluster_not_found_status, "", RF_NC);
        return;
    }
    if (cc->boot_dns != NULL) {
        /* a bootstrap STRICT_DNS cluster: its current version (proxy/cds.h), held by the
         * stream (routed once: nothing was picked from a version held before) */
        if (cds_boot_dns_pinned(s->dns_pin, cc)) {
            cc = cds_boot_dns_cfg(s->dns_pin);
        } else {
            struct cds_dns_pin *old = s->dns_pin;
            cc = cds_boot_dns_acquire(s->w, cc, &s->dns_pin);
            cds_boot_dns_release(s->w, old);
        }
    }
    /* a CDS cluster keeps its workers' state itself (proxy/cds.h) */
    s->cluster = cc->dyn_rt == NULL ? &s->w->clusters[cc->index] : &cc->dyn_rt[s->w->id];
    s->has_hash = router_hash_key(s->route, &rq, &s->hash);
    route_idle_timeout(s);
    route_timeouts(s);
    retry_setup(s);
    /* Envoy's expected timeout: the per-try timeout when there is one (it is the shorter). */
    uint64_t expect_ms = s->per_try_ms > 0 ? s->per_try_ms : s->route_timeout_ms;
    if (expect_ms > 0) {
        if (!s->hcm->suppress_envoy_headers) {
            headers_add(&s->req, STR_LIT("x-envoy-expected-rq-timeout-ms"),
                        expect_ms == s->route->timeout_ms ? s->route->timeout_text
                                                          : arena_u64(&s->arena, expect_ms));
        }
        if (s->is_grpc && s->route->has_max_grpc_timeout && !s->route->has_max_stream_duration) {
            /* Envoy tells the upstream gRPC server the deadline it will enforce */
            set_grpc_timeout(s, expect_ms);
        }
    }

    /* Edits: weighted cluster, route, virtual host, route configuration (Envoy's order). */
    if (s->wcluster != NULL) {
        header_edits_apply(&s->req, &s->wcluster->request_edits);
    }
    header_edits_apply(&s->req, &s->route->request_edits);
    header_edits_apply(&s->req, &s->vhost->request_edits);
    header_edits_apply(&s->req, &s->routes->request_edits);
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
    }
    if (rt->regex_rewrite != NULL) {
        path = router_regex_rewrite(rt, path, &s->arena);
    }
    if ((rt->has_prefix_rewrite || rt->regex_rewrite != NULL) && !s->hcm->suppress_envoy_headers &&
        headers_get(&s->req, STR_LIT("x-envoy-original-path")) == NULL) {
        headers_add(&s->req, STR_LIT("x-envoy-original-path"), s->path);
    }
    if (rt->host_rewrite.len > 0) {
        headers_set_copy(&s->req, STR_LIT("host"), rt->host_rewrite);
    }
    /* Framing towards the upstream mirrors the downstream's (set, not added: a retry encodes
     * the head again). */
    if (s->req_chunked) {
        headers_remove(&s->req, STR_LIT("content-length"));
        headers_set(&s->req, STR_LIT("transfer-encoding"), STR_LIT("chunked"));
    }
    if (s->vhost->include_request_attempt_count) {
        char n[16];
        snprintf(n, sizeof(n), "%u", s->attempts);
        headers_set_copy(&s->req, STR_LIT("x-envoy-attempt-count"), str_from_c(n));
    }
    /* On retries only, as Envoy: the first attempt passes a client's header as it is. */
    if (s->vhost->include_is_timeout_retry_header && s->attempts > 1) {
        headers_set(&s->req, STR_LIT("x-envoy-is-timeout-retry"),
                    s->timeout_retry ? STR_LIT("true") : STR_LIT("false"));
    }
    s->uc->ops->send_head(s->uc, s->method, path, &s->req, !s->req_has_body);
}

/* The request's trailers for the upstream, or NULL. */
static const struct headers *req_trailers(const struct stream *s)
{
    return s->has_req_trailers ? &s->req_trailers : NULL;
}

/* ---- attempts and retries ----
 *
 *   route -> forward() --------------------------------------------+
 *              | endpoint (previous_hosts), BREAKER_RQ, connection     |
 *              v                                                      |
 *           ATTEMPT --response head, not retriable--> response path   |
 *              | 5xx/409/codes, reset, connect failure, per-try       |
 *              | timeout, retriable under retry_on                    |
 *              v                                                      |
 *         retry_maybe(): retries left? body still kept? BREAKER_RETRY |
 *              | yes: close the connection, end_attempt(), back-off   |
 *              v                                                      |
 *           BACKOFF --timer--> forward() (new connection, head and  --+
 *                              kept body replayed)
 *         no: the response goes downstream (URX when out of retries, UO on overflow), or the
 *             local reply for the failure
 *
 * An attempt is counted once (end_attempt): its stats, outlier result and breaker units. A
 * retry never reuses the connection that failed: it is closed, and a retry takes whatever
 * connection the pool gives, on the endpoint picked for it. */

static const char overflow_body[] =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

static bool was_tried(const struct stream *s, uint32_t idx)
{
    for (uint32_t i = 0; i < s->n_tried; i++) {
        if (s->tried[i] == idx) {
            return true;
        }
    }
    return false;
}

/* The load balancer's pick; with previous_hosts, re-picked up to host_selection_retry_max_attempts
 * times while it lands on a host an earlier attempt used (then the last pick stands). */
static int pick_endpoint(struct stream *s)
{
    struct cluster_rt *c = s->cluster;
    int idx = cluster_pick_hashed(c, s->has_hash ? &s->hash : NULL, worker_rand(s->w));
    if (idx < 0 || !s->retry->previous_hosts || s->n_tried == 0 || s->n_tried >= c->n_eps) {
        return idx;
    }
    for (uint32_t k = 0; k < s->retry->host_selection_max_attempts && was_tried(s, (uint32_t)idx);
         k++) {
        int again =
            cluster_pick_hashed_retry(c, s->has_hash ? &s->hash : NULL, k + 1, worker_rand(s->w));
        if (again < 0) {
            break;
        }
        idx = again;
    }
    return idx;
}

static void note_tried(struct stream *s, uint32_t idx)
{
    if (!was_tried(s, idx) && s->n_tried < sizeof(s->tried) / sizeof(s->tried[0])) {
        s->tried[s->n_tried++] = idx;
    }
}

/* Frees the kept body: no retry can follow (`abandoned`: because it outgrew the limit, which
 * ends the stream's retries as Envoy ends them; else because none are left). */
static void drop_body(struct stream *s, bool abandoned)
{
    if (abandoned && s->body_kept) {
        STAT_INC(s->cluster->stats->retry_or_shadow_abandoned);
        s->body_kept = false;
    }
    buf_deinit(&s->body);
    buf_init(&s->body);
}

/* Keeps request body bytes for a replay. Past the limit the request still flows, but it can no
 * longer be retried (Envoy's retry_or_shadow_abandoned) - except during a back-off, when the
 * bytes have nowhere else to go: then reading pauses instead (stream_forward_request_body). */
static void keep_body(struct stream *s, const uint8_t *p, size_t len)
{
    if (!s->body_kept || s->retries_left == 0 || len == 0) {
        return;
    }
    if (!s->in_backoff && buf_len(&s->body) + len > s->body_limit) {
        drop_body(s, true);
        return;
    }
    buf_append(&s->body, p, len);
}

/* Replays the kept body on a retry's new connection; frees it once no retry can follow. */
static void replay_body(struct stream *s)
{
    size_t n = buf_len(&s->body);
    if (n > 0) {
        s->uc->ops->send_body(s->uc, buf_head(&s->body), n);
    }
    if (s->req_end_fwd) {
        s->uc->ops->send_end(s->uc, req_trailers(s));
    }
    if (n > s->body_limit) {
        drop_body(s, true);
    } else if (s->retries_left == 0) {
        drop_body(s, false);
    }
}

static void start_per_try(struct stream *s)
{
    if (s->per_try_ms == 0 || !s->attempt_open) {
        return;
    }
    timer_list_start(&s->w->timers, &s->per_try, s->per_try_ms);
}

static void start_route_timeout(struct stream *s)
{
    if (s->route != NULL && s->route_timeout_ms > 0 && !s->resp_done) {
        timer_list_start(&s->w->timers, &s->timeout, s->route_timeout_ms);
    }
}

/* The host of an ORIGINAL_DST cluster for this request, as Envoy picks it: the address in the
 * cluster's header when it has one (an address that does not parse: none), else the address
 * the connection had before it was redirected, which only the original_dst listener filter
 * restores. NULL: no host (503 UH). */
static struct endpoint_rt *original_dst_pick(struct stream *s)
{
    const struct cluster_cfg *cc = s->cluster->cfg;
    if (cc->od_header.len > 0) {
        const struct header *h = headers_get(&s->req, cc->od_header);
        if (h != NULL) {
            struct sockaddr_storage dst;
            return original_dst_parse(h->value, &dst)
                       ? original_dst_host(s->cluster, (const struct sockaddr *)&dst)
                       : NULL;
        }
    }
    if (!s->lcfg->original_dst) {
        return NULL;
    }
    return original_dst_host(s->cluster, &s->dc->local.sa);
}

/* Starts an upstream attempt: picks an endpoint, takes the cluster's max_requests unit, gets a
 * connection (max_connections and max_pending_requests are taken there), and writes the
 * request head and, on a retry, the body kept so far. Overflowing a circuit breaker answers
 * 503 UO at once. */
static void forward(struct stream *s)
{
    struct cluster_rt *c = s->cluster;
    s->in_backoff = false;
    s->transport_errno = 0; /* the log shows the last attempt's */
    s->up_conn_id = 0;
    s->up_local.sa.sa_family = AF_UNSPEC;
    int idx = -1;
    struct endpoint_rt *ep;
    if (c->cfg->type == CLUSTER_ORIGINAL_DST) {
        ep = original_dst_pick(s);
    } else {
        idx = pick_endpoint(s);
        ep = idx >= 0 ? &c->eps[idx] : NULL;
    }
    if (ep != NULL && ep->cfg->logical != NULL && !endpoint_resolved(ep->cfg)) {
        ep = NULL; /* LOGICAL_DNS before its name resolved: Envoy has no host yet */
    }
    if (ep == NULL) {
        STAT_INC(c->stats->upstream_cx_none_healthy);
        stream_local_reply(s, 503, "no healthy upstream", RF_UH);
        return;
    }
    endpoint_hold(&s->held_ep, ep); /* s->upstream_host is its text */
    s->upstream_host = ep->cfg->addr.text;
    int err = -EBUSY;
    struct upstream *u = NULL;
    if (breaker_acquire(c->shared, &c->cfg->breakers[0], BREAKER_RQ)) {
        u = upstream_acquire(s->w, c, ep, s, &err);
        if (u == NULL) {
            breaker_release(c->shared, BREAKER_RQ);
        }
    }
    if (u == NULL) {
        if (err == -EUSERS || err == -EBUSY) {
            STAT_INC(*(err == -EUSERS ? &c->stats->upstream_cx_overflow
                                      : &c->stats->upstream_rq_pending_overflow));
            s->details = "upstream_reset_before_response_started";
            s->reset_reason = "overflow";
            stream_local_reply(s, 503, overflow_body, RF_UO);
            return;
        }
        s->details = "upstream_reset_before_response_started";
        s->reset_reason = "remote_connection_failure";
        stream_local_reply(s, 503,
                           "upstream connect error or disconnect/reset before headers. reset "
                           "reason: connection failure",
                           RF_UF);
        return;
    }
    s->ep = ep;
    s->uc = u;
    s->up_conn_id = u->conn->id;
    s->up_local = u->conn->local;
    s->attempt_open = true;
    s->holds_rq = true;
    s->attempts++;
    s->attempt_status = 0;
    s->t_upstream_headers = 0;
    s->t_upstream_start = ev_now(s->w->loop);
    s->t_try_activity = s->t_upstream_start;
    if (idx >= 0) {
        note_tried(s, (uint32_t)idx);
    }
    ep->active_rq++;
    STAT_INC(c->stats->upstream_rq_total);
    STAT_INC(c->stats->upstream_rq_active);
    STAT_INC(ep->stats->rq_total);
    STAT_INC(ep->stats->rq_active);
    encode_request_head(s);
    if (s->attempts > 1) {
        replay_body(s);
    }
    if (s->req_end_fwd) {
        start_per_try(s);
    }
    if (s->retry != NULL && s->retry->per_try_idle_timeout_ms > 0) {
        timer_list_start(&s->w->timers, &s->per_try_idle, s->retry->per_try_idle_timeout_ms);
    }
    if (s->attempts > 1) {
        upstream_flush(u); /* a retry starts from a timer: nothing else flushes; may fail it */
    }
}

/* Schedules a retry of the current attempt if the stream may: it has retries left, its body is
 * still kept whole, nothing went downstream, and the cluster's retry circuit breaker (or
 * budget) allows one more. The caller checked the outcome is retriable under retry_on.
 * `end_flags` describes how the attempt ended, for its stats. Returns false (with flag URX or
 * UO when that is why) when the stream must go on with the outcome it has. */
static bool retry_maybe(struct stream *s, uint32_t end_flags)
{
    if (s->finished || s->resp_started || s->cluster == NULL || !s->body_kept) {
        return false;
    }
    struct cluster_rt *c = s->cluster;
    if (s->retries_left == 0) {
        STAT_INC(c->stats->upstream_rq_retry_limit_exceeded);
        s->flags |= RF_URX;
        return false;
    }
    if (!breaker_acquire(c->shared, &c->cfg->breakers[0], BREAKER_RETRY)) {
        STAT_INC(c->stats->upstream_rq_retry_overflow);
        s->flags |= RF_UO;
        return false;
    }
    s->retries_left--;
    s->timeout_retry = (end_flags & RF_UT) != 0; /* per_try_expired's; x-envoy-is-timeout-retry */
    STAT_INC(c->stats->upstream_rq_retry);
    STAT_INC(c->stats->upstream_rq_retry_backoff_exponential);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "retrying the request elsewhere");
    }
    end_attempt(s, end_flags);
    s->holds_retry = true; /* taken above, kept until the retry's attempt ends */
    uint64_t ms = retry_backoff_ms(s->retry->backoff_base_ms, s->retry->backoff_max_ms, s->attempts,
                                   worker_rand(s->w));
    LOG_D("stream: retry %u in %" PRIu64 " ms", s->attempts, ms);
    s->in_backoff = true;
    timer_list_start_heap(&s->w->timers, &s->backoff, (double)ms / 1000.0); /* jittered */
    return true;
}

void stream_request_body(struct stream *s, const uint8_t *p, size_t len)
{
    touch(s);
    s->req_body_bytes += len;
    if (s->fc != NULL && !filter_chain_request_data(s, p, len, false)) {
        return; /* held by a filter */
    }
    stream_forward_request_body(s, p, len, false);
}

void stream_forward_request_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    keep_body(s, p, len);
    if (end) {
        s->req_end_fwd = true;
    }
    if (s->uc == NULL) {
        if (!s->in_backoff) {
            return; /* answered locally: the body is read and dropped until the connection
                     * closes */
        }
        /* Between attempts: the body waits in the kept copy; past the limit, stop reading
         * until the next attempt drains it. */
        if (buf_len(&s->body) > s->body_limit) {
            s->dc->ops->pause_read(s, true);
        }
        if (end) {
            start_route_timeout(s);
        }
        return;
    }
    s->t_try_activity = ev_now(s->w->loop);
    if (len > 0) {
        s->uc->ops->send_body(s->uc, p, len);
        if (upstream_buffered(s->uc) > buffer_limit(s)) {
            s->dc->ops->pause_read(s, true);
        }
    }
    if (!end) {
        return;
    }
    s->uc->ops->send_end(s->uc, req_trailers(s));
    s->t_req_sent = ev_now(s->w->loop); /* handed to the upstream's buffer, as Envoy's codec */
    start_route_timeout(s);
    start_per_try(s);
}

void stream_request_end(struct stream *s)
{
    s->req_done = true;
    s->t_req_done = ev_now(s->w->loop);
    timer_list_stop(&s->w->timers, &s->timeout); /* request_timeout is over */
    if (s->fc == NULL || filter_chain_request_data(s, NULL, 0, true)) {
        stream_forward_request_body(s, NULL, 0, true);
    }
    if (s->resp_done && !s->finished) {
        finish(s);
    }
}

/* Copies a trailer field into `t` (set up on the first one). */
static void add_trailer(struct stream *s, struct headers *t, bool *has, struct str name,
                        struct str value)
{
    if (!*has) {
        headers_init(t, &s->arena, 4);
        *has = true;
    }
    headers_add_copy(t, name, value);
}

void stream_request_trailer(struct stream *s, struct str name, struct str value)
{
    add_trailer(s, &s->req_trailers, &s->has_req_trailers, name, value);
}

void stream_upstream_trailer(struct stream *s, struct str name, struct str value)
{
    add_trailer(s, &s->resp_trailers, &s->has_resp_trailers, name, value);
}

void stream_downstream_reset(struct stream *s)
{
    if (s->finished) {
        return;
    }
    if (!s->local_reset) {
        /* the client went away (not our own reset of a response we could not finish) */
        s->details = "downstream_remote_disconnect";
        s->flags |= RF_DC;
        STAT_INC(s->hstats->downstream_rq_rx_reset);
    }
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
        s->details = "upstream_reset_before_response_started";
        s->reset_reason = "protocol_error";
        stream_local_reply(s, 502,
                           "upstream connect error or disconnect/reset before headers. reset "
                           "reason: protocol error",
                           RF_UPE);
        return;
    }
    if (s->cluster->cfg->health_check != NULL && s->ep != NULL && s->ep->shared != NULL &&
        s->cluster->shared != NULL &&
        headers_get(&msg->headers, STR_LIT("x-envoy-immediate-health-check-fail")) != NULL) {
        /* Envoy's router: the host failed active health checking, whatever the response */
        health_check_immediate_fail(s->cluster->shared, s->ep->shared);
    }
    s->attempt_status = msg->status;
    s->t_try_activity = s->t_upstream_headers;
    timer_list_stop(&s->w->timers, &s->per_try); /* no longer applies once a head arrived */
    if (s->retry_on != 0) {
        bool retriable = retry_would_retry_status(
            s->retry_on, msg->status, s->retry->retriable_status_codes,
            s->retry->n_retriable_status_codes, s->hdr_codes, s->n_hdr_codes);
        retriable = retriable || retry_would_retry_grpc_headers(s->retry_on, &msg->headers);
        if (retriable && retry_maybe(s, 0)) {
            return; /* the connection is closed, which stops its parser */
        }
        if (!retriable && s->attempts > 1) {
            STAT_INC(s->cluster->stats->upstream_rq_retry_success);
        }
    }
    s->status = msg->status;
    s->details = "via_upstream";
    /* One pass copies the head without its hop-by-hop fields (strip_headers' DROP_HOP), the
     * upstream's server and x-envoy-upstream-service-time (both replaced below; the latter
     * passes as the upstream sent it when the router suppresses Envoy's headers, as in Envoy),
     * and notes whether there is a date. */
    bool own_ust = !s->hcm->suppress_envoy_headers;
    struct headers h;
    headers_init(&h, &s->arena, msg->headers.n + 6);
    bool has_date = false, conn_tokens = false;
    for (uint32_t i = 0; i < msg->headers.n; i++) {
        struct str n = msg->headers.v[i].name;
        if (drop_class(n) & DROP_HOP) {
            /* "connection: keep-alive" or "close" names nothing else to remove */
            struct str v = msg->headers.v[i].value;
            conn_tokens = conn_tokens || (str_eq_lit(n, "connection") &&
                                          !str_eq_nocase(v, STR_LIT("keep-alive")) &&
                                          !str_eq_nocase(v, STR_LIT("close")));
            continue;
        }
        if ((own_ust && str_eq_lit(n, "x-envoy-upstream-service-time")) ||
            str_eq_lit(n, "server")) {
            continue;
        }
        has_date = has_date || str_eq_lit(n, "date");
        headers_add(&h, n, msg->headers.v[i].value);
    }
    if (conn_tokens) {
        for (uint32_t i = 0; i < msg->headers.n; i++) {
            if (str_eq_lit(msg->headers.v[i].name, "connection")) {
                remove_connection_tokens(&h, msg->headers.v[i].value);
            }
        }
        has_date = headers_get(&h, STR_LIT("date")) != NULL; /* Connection may name it */
    }
    if (own_ust) {
        double ust_ms = (s->t_upstream_headers - s->t_upstream_start) * 1000.0;
        headers_add(&h, STR_LIT("x-envoy-upstream-service-time"),
                    arena_u64(&s->arena, (uint64_t)(ust_ms + 0.5)));
    }
    headers_add(&h, STR_LIT("server"), STR_LIT("envoy"));
    if (!has_date) {
        headers_add(&h, STR_LIT("date"), arena_strdup(&s->arena, worker_http_date(s->w)));
    }
    if (s->wcluster != NULL) {
        header_edits_apply(&h, &s->wcluster->response_edits);
    }
    header_edits_apply(&h, &s->route->response_edits);
    header_edits_apply(&h, &s->vhost->response_edits);
    header_edits_apply(&h, &s->routes->response_edits);
    if (s->vhost->include_attempt_count_in_response) {
        char n[16];
        snprintf(n, sizeof(n), "%u", s->attempts);
        headers_set_copy(&h, STR_LIT("x-envoy-attempt-count"), str_from_c(n));
    }

    bool bodiless = s->is_head || msg->status == 204 || msg->status == 304;
    s->resp_head_ends = msg->end_stream;
    if (s->resp_head_ends && !bodiless && msg->content_length < 0 && s->h2s == NULL) {
        /* an HTTP/2 response without a body: "content-length: 0" for HTTP/1.1 (Envoy's) */
        headers_set(&h, STR_LIT("content-length"), STR_LIT("0"));
        bodiless = true;
    }
    /* chunked or close-delimited upstream body: chunked towards the client */
    s->resp_chunked = !bodiless && !s->resp_head_ends && msg->content_length < 0;
    s->resp = h;
    s->resp_keep_alive = msg->keep_alive;
    if (s->fc != NULL && !filter_chain_response_headers(s, bodiless || s->resp_head_ends)) {
        return; /* held by a filter (sent when it resumes), or answered */
    }
    stream_send_response_head(s);
}

void stream_send_response_head(struct stream *s)
{
    drain_check(s);
    if (s->dc->draining && s->h2s == NULL) {
        s->close_after = true;
        STAT_INC(s->hstats->downstream_cx_drain_close);
    }
    /* framing (HTTP/1: chunked, connection: close) is the codec's */
    s->dc->ops->send_head(s, s->status, &s->resp, s->resp_head_ends);
    s->resp_started = true;
}

void stream_upstream_body(struct stream *s, const uint8_t *p, size_t len)
{
    touch(s);
    s->t_try_activity = s->t_activity;
    s->resp_body_bytes += len;
    if (s->fc != NULL && !filter_chain_response_data(s, p, len, false)) {
        return; /* held by a filter */
    }
    stream_send_response_body(s, p, len, false);
}

void stream_send_response_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    if (end && s->has_resp_trailers) {
        if (len > 0) {
            s->dc->ops->send_body(s, p, len, false);
        }
        s->dc->ops->send_trailers(s, &s->resp_trailers);
    } else if (len > 0 || end) {
        s->dc->ops->send_body(s, p, len, end);
    }
    if (len > 0 && s->uc != NULL && s->dc->ops->buffered(s) > buffer_limit(s)) {
        upstream_pause_read(s->uc, true);
    }
    if (!end) {
        return;
    }
    s->resp_done = true;
    if (!s->req_done) {
        s->close_after = true;
    }
    finish(s);
}

void stream_upstream_end(struct stream *s)
{
    timer_list_stop(&s->w->timers, &s->per_try);
    timer_list_stop(&s->w->timers, &s->per_try_idle);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        /* Reusable only if the whole request went out: an early response (say a 413 before
         * the body was sent) leaves the connection in an unknown state. */
        upstream_release(u, s->req_done && upstream_buffered(u) == 0 && s->resp_keep_alive);
    }
    if (s->fc != NULL && !filter_chain_response_data(s, NULL, 0, true)) {
        return; /* held by a filter: the response ends when it resumes */
    }
    stream_send_response_body(s, NULL, 0, true);
}

static void upstream_failed(struct stream *s, uint32_t flag, enum retry_failure why,
                            const char *what, const char *reason);

void stream_upstream_failed(struct stream *s, uint32_t flag, const char *reason)
{
    const char *what = flag == RF_UF    ? "connection failure"
                       : flag == RF_UPE ? "protocol error"
                       : flag == RF_UR  ? "remote reset"
                                        : "connection termination";
    if (flag == RF_UF) { /* never connected: Envoy logs no upstream connection */
        s->up_conn_id = 0;
        s->up_local.sa.sa_family = AF_UNSPEC;
    }
    upstream_failed(s, flag, flag == RF_UF ? RETRY_FAIL_CONNECT : RETRY_FAIL_RESET, what, reason);
}

void stream_upstream_refused(struct stream *s, const char *reason)
{
    upstream_failed(s, RF_UR, RETRY_FAIL_REFUSED, "remote refused stream reset", reason);
}

static void upstream_failed(struct stream *s, uint32_t flag, enum retry_failure why,
                            const char *what, const char *reason)
{
    if (s->finished) {
        return;
    }
    s->uc = NULL;
    if (s->cluster != NULL && flag != RF_UF) {
        STAT_INC(s->cluster->stats->upstream_rq_rx_reset);
    }
    if (s->attempt_status == 0 && retry_would_retry_failure(s->retry_on, why) &&
        retry_maybe(s, flag)) {
        LOG_D("stream: upstream failed (%s), retrying", reason);
        return;
    }
    s->reset_reason = why == RETRY_FAIL_REFUSED ? "remote_refused_stream_reset"
                      : flag == RF_UF           ? "remote_connection_failure"
                      : flag == RF_UPE          ? "protocol_error"
                      : flag == RF_UR           ? "remote_reset"
                                                : "connection_termination";
    if (s->resp_started) {
        s->details = "upstream_reset_after_response_started";
        s->flags |= flag;
        STAT_INC(s->hstats->downstream_rq_tx_reset);
        s->local_reset = true;
        s->dc->ops->reset(s);
        return;
    }
    s->details = "upstream_reset_before_response_started";
    char body[200];
    snprintf(body, sizeof(body),
             "upstream connect error or disconnect/reset before headers. reset reason: %s", what);
    LOG_D("stream: upstream failed: %s", reason);
    stream_local_reply(s, flag == RF_UPE ? 502 : 503, body, flag);
}

void stream_upstream_drained(struct stream *s)
{
    if (upstream_buffered(s->uc) == 0) {
        s->dc->ops->pause_read(s, false); /* a no-op unless paused */
    }
}

/* ---- the end ---- */

/* Outlier detection (proxy/upstream/outlier.h): what this upstream request says about its
 * endpoint, as Envoy's router reports it: the response code, or the local-origin failure; a
 * connection that was established also counts as a connect success (split mode only). */
static void report_outlier(struct stream *s, uint32_t flags, int code)
{
    struct cluster_rt *c = s->cluster;
    if (c->cfg->outlier == NULL) {
        return;
    }
    bool answered = s->t_upstream_headers > 0 && !(flags & (RF_UT | RF_UPE));
    if (s->t_upstream_headers > 0 || (flags & (RF_UC | RF_UR | RF_UPE))) {
        outlier_put(c, s->ep, OUTLIER_LOCAL_CONNECT_SUCCESS, 0);
    }
    if (answered) {
        outlier_put(c, s->ep, OUTLIER_RESPONSE, code);
    } else if (flags & RF_UT) {
        outlier_put(c, s->ep, OUTLIER_LOCAL_TIMEOUT, 0);
    } else if (flags & (RF_UF | RF_UC | RF_UR | RF_UPE)) {
        outlier_put(c, s->ep, OUTLIER_LOCAL_CONNECT_FAILED, 0);
    }
}

/* Counts `code` in its class counter: by_class[0] for 1xx ... by_class[4] for 5xx (and
 * anything above). */
static void count_class(stat_t *const by_class[5], int code)
{
    int k = code / 100 - 1;
    STAT_INC(*by_class[k < 0 ? 0 : k > 4 ? 4 : k]);
}

static void record_stats(struct stream *s)
{
    struct hcm_stats *hs = s->hstats;
    STAT_DEC(hs->downstream_rq_active);
    int st = s->status;
    if (st > 0) {
        STAT_INC(hs->downstream_rq_completed);
        stat_t *by_class[5] = {&hs->downstream_rq_1xx, &hs->downstream_rq_2xx,
                               &hs->downstream_rq_3xx, &hs->downstream_rq_4xx,
                               &hs->downstream_rq_5xx};
        count_class(by_class, st);
    }
    ev_tstamp now = ev_now(s->w->loop);
    hist_record_ms(&hs->downstream_rq_time, (now - s->t_start) * 1000.0);
    end_attempt(s, s->flags);
}

/* Accounts for the current attempt once: its circuit-breaker units, the active gauges, its
 * response code or failure in the cluster and host stats, and its outlier result. `flags` says
 * how it ended (RF_UT, RF_UPE: a head that came is not counted as a response). */
static void end_attempt(struct stream *s, uint32_t flags)
{
    if (!s->attempt_open) {
        return;
    }
    s->attempt_open = false;
    timer_list_stop(&s->w->timers, &s->per_try);
    timer_list_stop(&s->w->timers, &s->per_try_idle);
    if (s->holds_rq) {
        s->holds_rq = false;
        breaker_release(s->cluster->shared, BREAKER_RQ);
    }
    if (s->holds_retry) {
        s->holds_retry = false;
        breaker_release(s->cluster->shared, BREAKER_RETRY);
    }
    struct cluster_stats *cs = s->cluster->stats;
    STAT_DEC(cs->upstream_rq_active);
    STAT_DEC(s->ep->stats->rq_active);
    s->ep->active_rq--;
    if (s->t_upstream_headers > 0 && !(flags & (RF_UT | RF_UPE))) {
        int code = s->attempt_status;
        STAT_INC(cs->upstream_rq_completed);
        if (code >= 100 && code < 600) {
            STAT_INC(cs->upstream_rq_code[code]);
        }
        stat_t *by_class[5] = {&cs->upstream_rq_1xx, &cs->upstream_rq_2xx, &cs->upstream_rq_3xx,
                               &cs->upstream_rq_4xx, &cs->upstream_rq_5xx};
        count_class(by_class, code);
        if (code >= 500) {
            STAT_INC(s->ep->stats->rq_error);
        } else {
            STAT_INC(s->ep->stats->rq_success);
        }
        hist_record_ms(&cs->upstream_rq_time, (ev_now(s->w->loop) - s->t_upstream_start) * 1000.0);
    } else {
        STAT_INC(s->ep->stats->rq_error);
    }
    report_outlier(s, flags, s->attempt_status);
}

/* Whatever retry state outlives the last attempt: the back-off timer, a retry unit taken for
 * an attempt that never started, the kept body. Idempotent. */
static void release_retry_state(struct stream *s)
{
    timer_list_stop(&s->w->timers, &s->backoff);
    timer_list_stop(&s->w->timers, &s->per_try);
    timer_list_stop(&s->w->timers, &s->per_try_idle);
    s->in_backoff = false;
    if (s->attempt_open) {
        /* not accounted (the stream is freed without finishing): give the units back */
        s->attempt_open = false;
        s->ep->active_rq--;
        STAT_DEC(s->cluster->stats->upstream_rq_active);
        STAT_DEC(s->ep->stats->rq_active);
        if (s->holds_rq) {
            s->holds_rq = false;
            breaker_release(s->cluster->shared, BREAKER_RQ);
        }
    }
    if (s->holds_retry) {
        s->holds_retry = false;
        breaker_release(s->cluster->shared, BREAKER_RETRY);
    }
    buf_deinit(&s->body);
    s->body_kept = false;
}

static void write_access_logs(struct stream *s)
{
    struct worker *w = s->w;
    const struct worker_scope *sc = s->dc->sc;
    uint32_t first = sc->log_first[s->dc->chain->index];
    uint32_t end = sc->log_first[s->dc->chain->index + 1];
    if (first == end) {
        return;
    }
    struct al_entry e = {
        .method = s->method,
        .path = s->path,
        .authority = s->authority,
        .protocol = s->h2s != NULL          ? STR_LIT("HTTP/2")
                    : s->version_minor == 0 ? STR_LIT("HTTP/1.0")
                                            : STR_LIT("HTTP/1.1"),
        .status = s->status,
        .flags = s->flags,
        .bytes_received = s->req_body_bytes,
        .bytes_sent = s->resp_body_bytes,
        .t_start = s->t_start,
        .t_end = ev_now(w->loop),
        .t_upstream_start = s->t_upstream_start,
        .t_upstream_headers = s->t_upstream_headers,
        .upstream_host = s->upstream_host,
        .cluster = s->cluster != NULL ? s->cluster->cfg->name : STR_NULL,
        .route_name = s->route != NULL ? s->route->name : STR_NULL,
        .peer_ip = s->dc->peer_ip,
        .peer_port = s->dc->peer_port,
        .direct_ip = s->dc->direct_ip,
        .direct_port = s->dc->direct_port,
        .local = &s->dc->local.sa,
        .tls = s->dc->tls,
        .remote_ip = s->client_ip,
        .remote_port = s->client_from_xff ? 0 : s->dc->peer_port,
        .req = s->req.v != NULL ? &s->req : NULL,
        .resp = s->resp.v != NULL ? &s->resp : NULL,
        .resp_trailers = s->has_resp_trailers ? &s->resp_trailers : NULL,
        .details = s->details,
        .reset_reason = s->details != NULL && s->reset_reason != NULL &&
                                str_has_prefix(str_from_c(s->details), STR_LIT("upstream_reset_"))
                            ? s->reset_reason
                            : NULL,
        .transport_errno = s->transport_errno,
        .t_req_done = s->t_req_done,
        .t_req_sent = s->t_req_sent,
        .attempts = s->attempts,
        .conn_id = s->dc->id,
        .upstream_conn_id = s->up_conn_id,
        .upstream_local = &s->up_local.sa,
        .is_grpc = s->is_grpc,
        .traceable = s->span != NULL && s->span->sampled,
        .is_health_check = s->is_health_check,
    };
    for (uint32_t i = first; i < end; i++) {
        struct worker_log *l = &sc->logs[i];
        if (l->filter != NULL && !access_log_filter_eval(l->filter, &e, worker_rand(w))) {
            continue;
        }
        access_log_render(&l->buf, &l->fmt, &e);
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
    bool reset = (s->flags & RF_DC) || s->local_reset;
    if (!s->resp_done && !reset) {
        return; /* still waiting for the response */
    }
    if (!s->req_done && !s->close_after && !reset) {
        return; /* response done early; the request still arrives and is forwarded */
    }
    s->finished = true;
    timer_list_stop(&s->w->timers, &s->timeout);
    timer_list_stop(&s->w->timers, &s->idle);
    timer_list_stop(&s->w->timers, &s->duration);
    if (s->fc != NULL) {
        filter_chain_done(s);
    }
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_release(u, false);
    }
    s->resp_bytes_sent = s->resp_body_bytes;
    record_stats(s);
    release_retry_state(s);
    write_access_logs(s);
    if (s->span != NULL) {
        finish_span(s);
    }
    s->dc->ops->stream_done(s);
}

static void free_stream(struct deferred *d)
{
    struct stream *s = LIST_ENTRY(d, struct stream, defer);
    endpoint_hold(&s->held_ep, NULL);
    cds_boot_dns_release(s->w, s->dns_pin);     /* after the endpoint: it may tear its state down */
    worker_routes_release(s->w, s->routes_pin); /* reload: last, after the access log */
    arena_deinit(&s->arena);
    struct worker *w = s->w;
    blk_cache_put(&w->stream_cache, s);
    worker_stream_freed(w);
}

void stream_free(struct stream *s)
{
    if (s->fc != NULL) {
        filter_chain_done(s); /* a no-op when finish() ran it */
    }
    timer_list_stop(&s->w->timers, &s->timeout);
    timer_list_stop(&s->w->timers, &s->idle);
    timer_list_stop(&s->w->timers, &s->duration);
    if (s->uc != NULL) {
        struct upstream *u = s->uc;
        s->uc = NULL;
        upstream_close(u, "stream freed");
    }
    release_retry_state(s);
    worker_defer(s->w, &s->defer, free_stream);
}
