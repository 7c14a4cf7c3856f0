/* tracing: context extraction and injection (B3, X-Ray), the sampling decision, the span's
 * JSON records, and the request-path entry points (see tracing.h). */
#include "proxy/tracing/tracing.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "proxy/http/headers.h"
#include "proxy/http/stream.h"
#include "proxy/worker.h"

/* ---- hex ---- */

/* `len` (1..16) hex digits into *out; false on any other byte. */
static bool hex64(const char *p, size_t len, uint64_t *out)
{
    if (len == 0 || len > 16) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        int d = hex_val((unsigned char)p[i]);
        if (d < 0) {
            return false;
        }
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return true;
}

/* A trace id of 16 or 32 hex digits (B3). */
static bool trace_id128(struct str v, uint64_t *hi, uint64_t *lo)
{
    if (v.len == 32) {
        return hex64(v.p, 16, hi) && hex64(v.p + 16, 16, lo) && (*hi | *lo) != 0;
    }
    *hi = 0;
    return v.len == 16 && hex64(v.p, 16, lo) && *lo != 0;
}

static bool span_id64(struct str v, uint64_t *out)
{
    return v.len == 16 && hex64(v.p, 16, out) && *out != 0;
}

static int b3_sampled(struct str v, bool *debug)
{
    if (str_eq_lit(v, "1") || str_eq_nocase(v, STR_LIT("true"))) {
        return 1;
    }
    if (str_eq_lit(v, "d")) {
        *debug = true;
        return 1;
    }
    if (str_eq_lit(v, "0") || str_eq_nocase(v, STR_LIT("false"))) {
        return 0;
    }
    return -1;
}

static void ctx_clear(struct trace_ctx *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->sampled = -1;
}

/* b3: {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]], or a lone sampling state. */
bool trace_b3_single_parse(struct str v, struct trace_ctx *ctx)
{
    ctx_clear(ctx);
    if (v.len <= 1) {
        ctx->sampled = b3_sampled(v, &ctx->debug);
        return false;
    }
    struct str part[4];
    size_t n = 0, start = 0;
    for (size_t i = 0; i <= v.len; i++) {
        if (i == v.len || v.p[i] == '-') {
            if (n == 4) {
                return false;
            }
            part[n++] = (struct str){v.p + start, i - start};
            start = i + 1;
        }
    }
    struct trace_ctx c;
    ctx_clear(&c);
    if (n < 2 || !trace_id128(part[0], &c.trace_hi, &c.trace_lo) ||
        !span_id64(part[1], &c.span_id)) {
        return false;
    }
    if (n >= 3 && (c.sampled = b3_sampled(part[2], &c.debug)) < 0) {
        return false;
    }
    if (n == 4 && !span_id64(part[3], &c.parent_id)) {
        return false;
    }
    c.has_trace = true;
    *ctx = c;
    return true;
}

/* The headers tracing reads, found in one pass (the first of each name). */
struct prop_in {
    struct str b3, traceid, spanid, parent, sampled, flags, xray, client;
    int rid; /* x-request-id's index, -1: none */
    bool forced;
    bool any; /* a propagation header (b3, x-b3-*, x-amzn-trace-id) is there */
};

static void keep(struct str *slot, struct str v)
{
    if (slot->p == NULL) {
        *slot = v;
    }
}

static void gather(const struct headers *h, struct prop_in *in)
{
    memset(in, 0, sizeof(*in));
    in->rid = -1;
    for (uint32_t i = 0; i < h->n; i++) {
        struct str n = h->v[i].name, v = h->v[i].value;
        if (n.len == 2 && n.p[0] == 'b' && n.p[1] == '3') {
            keep(&in->b3, v);
            in->any = true;
            continue;
        }
        if (n.len < 10 || n.p[0] != 'x' || n.p[1] != '-') {
            continue;
        }
        if (n.len >= 10 && memcmp(n.p, "x-b3-", 5) == 0) {
            struct str r = {n.p + 5, n.len - 5};
            in->any = true;
            if (str_eq_lit(r, "traceid")) {
                keep(&in->traceid, v);
            } else if (str_eq_lit(r, "spanid")) {
                keep(&in->spanid, v);
            } else if (str_eq_lit(r, "parentspanid")) {
                keep(&in->parent, v);
            } else if (str_eq_lit(r, "sampled")) {
                keep(&in->sampled, v);
            } else if (str_eq_lit(r, "flags")) {
                keep(&in->flags, v);
            }
        } else if (str_eq_lit(n, "x-request-id")) {
            if (in->rid < 0) {
                in->rid = (int)i;
            }
        } else if (str_eq_lit(n, "x-amzn-trace-id")) {
            keep(&in->xray, v);
            in->any = true;
        } else if (str_eq_lit(n, "x-client-trace-id")) {
            keep(&in->client, v);
        } else if (str_eq_lit(n, "x-envoy-force-trace")) {
            in->forced = true;
        }
    }
}

static bool b3_from(const struct prop_in *in, struct trace_ctx *ctx)
{
    if (in->b3.p != NULL) {
        return trace_b3_single_parse(in->b3, ctx);
    }
    ctx_clear(ctx);
    if (in->sampled.p != NULL) {
        ctx->sampled = b3_sampled(in->sampled, &ctx->debug);
    }
    if (str_eq_lit(in->flags, "1")) {
        ctx->debug = true;
        ctx->sampled = 1;
    }
    if (in->traceid.p == NULL && in->spanid.p == NULL) {
        return false;
    }
    struct trace_ctx c = *ctx;
    if (!trace_id128(in->traceid, &c.trace_hi, &c.trace_lo) || !span_id64(in->spanid, &c.span_id) ||
        (in->parent.p != NULL && !span_id64(in->parent, &c.parent_id))) {
        return false; /* Envoy: a malformed context starts a new trace */
    }
    c.has_trace = true;
    *ctx = c;
    return true;
}

bool trace_b3_parse(const struct headers *h, struct trace_ctx *ctx)
{
    struct prop_in in;
    gather(h, &in);
    return b3_from(&in, ctx);
}

/* Root=1-{8 hex}-{24 hex};Parent={16 hex};Sampled={0,1,?} in any order, case-insensitive keys,
 * optional spaces; other keys ignored. */
bool trace_xray_parse(struct str v, struct trace_ctx *ctx)
{
    ctx_clear(ctx);
    struct trace_ctx c;
    ctx_clear(&c);
    bool root = false;
    size_t i = 0;
    while (i < v.len) {
        size_t j = i;
        while (j < v.len && v.p[j] != ';') {
            j++;
        }
        struct str kv = str_trim_ows((struct str){v.p + i, j - i});
        i = j + 1;
        const char *eq = memchr(kv.p, '=', kv.len);
        if (kv.len == 0 || eq == NULL) {
            continue;
        }
        struct str k = str_trim_ows((struct str){kv.p, (size_t)(eq - kv.p)});
        struct str val = str_trim_ows((struct str){eq + 1, kv.len - (size_t)(eq - kv.p) - 1});
        if (str_eq_nocase(k, STR_LIT("root"))) {
            uint64_t ep, a, b;
            if (val.len != 35 || val.p[0] != '1' || val.p[1] != '-' || val.p[10] != '-' ||
                !hex64(val.p + 2, 8, &ep) || !hex64(val.p + 11, 8, &a) ||
                !hex64(val.p + 19, 16, &b)) {
                return false;
            }
            c.trace_hi = (ep << 32) | a;
            c.trace_lo = b;
            root = true;
        } else if (str_eq_nocase(k, STR_LIT("parent"))) {
            if (!span_id64(val, &c.span_id)) {
                return false;
            }
        } else if (str_eq_nocase(k, STR_LIT("sampled"))) {
            c.sampled = str_eq_lit(val, "1") ? 1 : str_eq_lit(val, "0") ? 0 : -1;
        }
    }
    if (!root) {
        ctx->sampled = c.sampled;
        return false;
    }
    c.has_trace = true;
    *ctx = c;
    return true;
}

/* ---- x-request-id and sampling ---- */

/* As Envoy's UUID request id extension: a 36-character id carries a reason in its 15th
 * character (only the length is checked, as Envoy does). */
enum trace_reason trace_reason_of(struct str rid)
{
    if (rid.len != 36) {
        return TRACE_NOT_A_UUID;
    }
    switch (rid.p[14]) {
    case '9':
        return TRACE_SAMPLED;
    case 'b':
        return TRACE_CLIENT;
    case 'a':
        return TRACE_FORCED;
    default:
        return TRACE_NONE;
    }
}

void trace_reason_set(char *rid, enum trace_reason r)
{
    static const char c[] = {'4', '9', 'b', 'a'};
    if (r <= TRACE_FORCED) {
        rid[14] = c[r];
    }
}

bool trace_rid_integer(struct str rid, uint64_t *out)
{
    return rid.len >= 36 && hex64(rid.p + 28, 8, out);
}

enum trace_reason trace_decide(const struct hcm_tracing *t, enum trace_reason in, bool client_id,
                               bool forced, uint64_t rid_int)
{
    if (in == TRACE_NOT_A_UUID) {
        return in;
    }
    uint64_t r = rid_int % 10000;
    enum trace_reason out = in;
    if (in == TRACE_NONE) {
        /* client_sampling applies by a random draw in Envoy (featureEnabled with no value):
         * remora uses the same x-request-id integer; 100 % (the default) is the same. */
        if (client_id && r < t->client_bp) {
            out = TRACE_CLIENT;
        } else if (forced) {
            out = TRACE_FORCED;
        } else if (r < t->random_bp) {
            out = TRACE_SAMPLED;
        }
    }
    if (r >= t->overall_bp) {
        out = TRACE_NONE;
    }
    return out;
}

bool trace_xray_sample(const struct tracer_cfg *tc, struct xray_sampler *st, uint64_t now_s,
                       uint64_t rnd)
{
    if (st->second != now_s) {
        st->second = now_s;
        st->used = 0;
    }
    if (st->used < tc->reservoir_per_s) {
        st->used++;
        return true;
    }
    return rnd % 10000 < tc->rate_bp;
}

/* ---- JSON ---- */

/* %RESPONSE_FLAGS% of `flags` ("-": none), as the access log writes them. */
static void flags_text(struct buf *b, uint32_t flags)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {RF_UH, "UH"},   {RF_UF, "UF"}, {RF_UT, "UT"},   {RF_UC, "UC"},   {RF_NR, "NR"},
        {RF_DC, "DC"},   {RF_SI, "SI"}, {RF_DPE, "DPE"}, {RF_UPE, "UPE"}, {RF_UR, "UR"},
        {RF_DT, "DT"},   {RF_DI, "DI"}, {RF_FI, "FI"},   {RF_RL, "RL"},   {RF_UO, "UO"},
        {RF_URX, "URX"}, {RF_NC, "NC"}, {RF_LH, "LH"},
    };
    bool any = false;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (flags & names[i].bit) {
            buf_printf(b, "%s%s", any ? "," : "", names[i].name);
            any = true;
        }
    }
    if (!any) {
        buf_append(b, "-", 1);
    }
}

/* A JSON string's contents: escapes quotes, backslashes and control bytes; bytes >= 0x80 pass
 * (the values come from header bytes the codecs accepted). At most `max` input bytes. */
static void json_esc(struct buf *b, struct str s, size_t max)
{
    size_t n = s.len < max ? s.len : max;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c == '"' || c == '\\') {
            uint8_t e[2] = {'\\', c};
            buf_append(b, e, 2);
        } else if (c < 0x20 || c == 0x7f) {
            buf_printf(b, "\\u%04x", c);
        } else if (c >= 0x80) {
            buf_printf(b, "\\u%04x", c); /* keeps the output valid UTF-8 whatever came in */
        } else {
            buf_append(b, &s.p[i], 1);
        }
    }
}

static void json_kv(struct buf *b, bool *first, const char *k, struct str v, size_t max)
{
    buf_printf(b, "%s\"%s\":\"", *first ? "" : ",", k);
    *first = false;
    json_esc(b, v, max);
    buf_append(b, "\"", 1);
}

static void json_tag(struct buf *b, bool *first, struct str k, struct str v)
{
    buf_append_str(b, *first ? "\"" : ",\"");
    *first = false;
    json_esc(b, k, 256);
    buf_append_str(b, "\":\"");
    json_esc(b, v, 1024);
    buf_append(b, "\"", 1);
}

static void custom_tags(struct buf *b, bool *first, const struct hcm_tracing *t,
                        const struct headers *req)
{
    for (uint32_t i = 0; i < t->n_tags; i++) {
        const struct trace_tag *g = &t->tags[i];
        struct str v = g->value;
        if (g->header) {
            const struct header *x = req != NULL ? headers_get(req, g->value) : NULL;
            v = x != NULL ? x->value : g->default_value;
            if (x == NULL && g->default_value.len == 0) {
                continue;
            }
        }
        json_tag(b, first, g->tag, v);
    }
}

void trace_zipkin_json(struct buf *out, const struct span *sp, const struct span_fields *f)
{
    const struct hcm_tracing *t = sp->cfg;
    if (sp->trace_hi != 0) {
        buf_printf(out, "{\"traceId\":\"%016llx%016llx\"", (unsigned long long)sp->trace_hi,
                   (unsigned long long)sp->trace_lo);
    } else {
        buf_printf(out, "{\"traceId\":\"%016llx\"", (unsigned long long)sp->trace_lo);
    }
    buf_printf(out, ",\"id\":\"%016llx\"", (unsigned long long)sp->id);
    if (sp->parent_id != 0) {
        buf_printf(out, ",\"parentId\":\"%016llx\"", (unsigned long long)sp->parent_id);
    }
    buf_printf(out, ",\"kind\":\"%s\",\"name\":\"", t->egress ? "CLIENT" : "SERVER");
    /* Envoy's operation name: the host and path (decorator-less routes) */
    json_esc(out, f->authority, 256);
    json_esc(out, f->path, t->max_path_tag_length);
    uint64_t ts = (uint64_t)(sp->t_start * 1e6);
    uint64_t dur = f->t_end > sp->t_start ? (uint64_t)((f->t_end - sp->t_start) * 1e6) : 0;
    buf_printf(out, "\",\"timestamp\":%llu,\"duration\":%llu", (unsigned long long)ts,
               (unsigned long long)(dur > 0 ? dur : 1));
    buf_append_str(out, ",\"localEndpoint\":{\"serviceName\":\"");
    json_esc(out, t->node_id, 256);
    buf_append_str(out, "\"}");
    if (sp->in.has_trace && t->tracer->shared_span_context && !t->egress &&
        sp->id == sp->in.span_id) {
        buf_append_str(out, ",\"shared\":true");
    }
    buf_append_str(out, ",\"tags\":{");
    bool first = true;
    json_kv(out, &first, "node_id", t->node_id, 256);
    json_kv(out, &first, "guid:x-request-id", f->request_id, 64);
    json_kv(out, &first, "http.method", f->method, 32);
    buf_append_str(out, ",\"http.url\":\"http://");
    json_esc(out, f->authority, 256);
    json_esc(out, f->path, t->max_path_tag_length);
    buf_append_str(out, "\"");
    json_kv(out, &first, "http.protocol", f->protocol, 16);
    json_kv(out, &first, "downstream_cluster", STR_LIT("-"), 1);
    json_kv(out, &first, "user_agent", f->user_agent.p ? f->user_agent : STR_LIT("-"), 256);
    char code[16];
    snprintf(code, sizeof(code), "%d", f->status);
    json_kv(out, &first, "http.status_code", str_from_c(code), 16);
    buf_append_str(out, ",\"response_flags\":\"");
    flags_text(out, f->flags);
    buf_append_str(out, "\"");
    json_kv(out, &first, "component", STR_LIT("proxy"), 16);
    json_kv(out, &first, "peer.address", f->peer_ip, 64);
    if (f->cluster.len > 0) {
        json_kv(out, &first, "upstream_cluster", f->cluster, 256);
    }
    if (f->upstream_host.len > 0) {
        json_kv(out, &first, "upstream_address", f->upstream_host, 64);
    }
    if (f->status >= 500 || f->status == 0 || f->flags != 0) {
        json_kv(out, &first, "error", STR_LIT("true"), 4); /* Envoy: 5xx or a response flag */
    }
    custom_tags(out, &first, t, f->req);
    buf_append_str(out, "}}");
}

void trace_xray_json(struct buf *out, const struct span *sp, const struct span_fields *f)
{
    const struct hcm_tracing *t = sp->cfg;
    buf_append_str(out, "{\"format\":\"json\",\"version\":1}\n{\"name\":\"");
    json_esc(out, t->tracer->segment_name, 200);
    buf_printf(out, "\",\"id\":\"%016llx\",\"trace_id\":\"1-%08llx-%08llx%016llx\"",
               (unsigned long long)sp->id, (unsigned long long)(sp->trace_hi >> 32),
               (unsigned long long)(sp->trace_hi & 0xffffffffu), (unsigned long long)sp->trace_lo);
    if (sp->parent_id != 0) {
        buf_printf(out, ",\"parent_id\":\"%016llx\"", (unsigned long long)sp->parent_id);
    }
    buf_printf(out, ",\"start_time\":%.6f,\"end_time\":%.6f", sp->t_start,
               f->t_end > sp->t_start ? f->t_end : sp->t_start);
    if (f->status >= 500 || f->status == 0) {
        buf_append_str(out, ",\"fault\":true");
    } else if (f->status >= 400) {
        buf_append_str(out, ",\"error\":true");
        if (f->status == 429) {
            buf_append_str(out, ",\"throttle\":true");
        }
    }
    buf_append_str(out, ",\"http\":{\"request\":{");
    bool first = true;
    json_kv(out, &first, "method", f->method, 32);
    buf_append_str(out, ",\"url\":\"http://");
    json_esc(out, f->authority, 256);
    json_esc(out, f->path, t->max_path_tag_length);
    buf_append_str(out, "\"");
    json_kv(out, &first, "client_ip", f->peer_ip, 64);
    if (f->user_agent.p != NULL) {
        json_kv(out, &first, "user_agent", f->user_agent, 256);
    }
    buf_printf(out, "},\"response\":{\"status\":%d}}", f->status);
    buf_append_str(out, ",\"annotations\":{");
    first = true;
    json_kv(out, &first, "node_id", t->node_id, 256);
    json_kv(out, &first, "guid:x-request-id", f->request_id, 64);
    buf_append_str(out, ",\"response_flags\":\"");
    flags_text(out, f->flags);
    buf_append_str(out, "\"");
    if (f->cluster.len > 0) {
        json_kv(out, &first, "upstream_cluster", f->cluster, 256);
    }
    custom_tags(out, &first, t, f->req);
    buf_append_str(out, "}}");
}

/* ---- request path ---- */

/* `digits` (8 or 16) lower-case hex digits of v, two at a time. */
static char *hex_put(char *p, uint64_t v, int digits)
{
    static const char d[] = "0123456789abcdef";
    for (int i = digits - 2; i >= 0; i -= 2) {
        p[i] = d[(v >> 4) & 15];
        p[i + 1] = d[v & 15];
        v >>= 8;
    }
    return p + digits;
}

static struct str hex16(struct arena *a, uint64_t v)
{
    char *p = arena_alloc(a, 16);
    hex_put(p, v, 16);
    return (struct str){p, 16};
}

/* Removes the propagation headers the request came with (one pass; only when there were). */
static void strip_context(struct headers *h)
{
    uint32_t w = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        struct str n = h->v[i].name;
        bool drop = (n.len == 2 && n.p[0] == 'b' && n.p[1] == '3') ||
                    (n.len > 5 && memcmp(n.p, "x-b3-", 5) == 0) || str_eq_lit(n, "x-amzn-trace-id");
        if (!drop) {
            h->v[w++] = h->v[i];
        }
    }
    h->n = w;
}

static void inject_b3(struct arena *a, struct headers *req, const struct span *sp)
{
    if (sp->trace_hi != 0) {
        char *p = arena_alloc(a, 32);
        hex_put(hex_put(p, sp->trace_hi, 16), sp->trace_lo, 16);
        headers_add(req, STR_LIT("x-b3-traceid"), (struct str){p, 32});
    } else {
        headers_add(req, STR_LIT("x-b3-traceid"), hex16(a, sp->trace_lo));
    }
    headers_add(req, STR_LIT("x-b3-spanid"), hex16(a, sp->id));
    if (sp->parent_id != 0) {
        headers_add(req, STR_LIT("x-b3-parentspanid"), hex16(a, sp->parent_id));
    }
    headers_add(req, STR_LIT("x-b3-sampled"), sp->sampled ? STR_LIT("1") : STR_LIT("0"));
}

/* Root=1-xxxxxxxx-xxxxxxxxxxxxxxxxxxxxxxxx;Parent=xxxxxxxxxxxxxxxx;Sampled=N */
static void inject_xray(struct arena *a, struct headers *req, const struct span *sp)
{
    enum { LEN = 7 + 8 + 1 + 24 + 8 + 16 + 9 + 1 };
    char *p = arena_alloc(a, LEN), *q = p;
    q = mem_put(q, "Root=1-", 7);
    q = hex_put(q, sp->trace_hi >> 32, 8);
    *q++ = '-';
    q = hex_put(q, sp->trace_hi & 0xffffffffu, 8);
    q = hex_put(q, sp->trace_lo, 16);
    q = mem_put(q, ";Parent=", 8);
    q = hex_put(q, sp->id, 16);
    q = mem_put(q, ";Sampled=", 9);
    *q++ = sp->sampled ? '1' : '0';
    headers_add(req, STR_LIT("x-amzn-trace-id"), (struct str){p, (size_t)(q - p)});
}

static uint64_t nonzero_rand(struct worker *w)
{
    uint64_t v;
    do {
        v = worker_rand(w);
    } while (v == 0);
    return v;
}

/* Envoy's decision, written back into x-request-id when it changed. */
static enum trace_reason decide(const struct hcm_tracing *t, struct arena *a, struct headers *req,
                                const struct prop_in *in)
{
    struct str rid = in->rid >= 0 ? req->v[in->rid].value : STR_NULL;
    uint64_t n = 0;
    enum trace_reason r0 = trace_rid_integer(rid, &n) ? trace_reason_of(rid) : TRACE_NOT_A_UUID;
    enum trace_reason r =
        trace_decide(t, r0, r0 == TRACE_NONE && in->client.p != NULL, in->forced, n);
    if (r != r0 && r != TRACE_NOT_A_UUID) {
        char *copy = arena_alloc(a, 36);
        memcpy(copy, rid.p, 36);
        trace_reason_set(copy, r);
        req->v[in->rid].value = (struct str){copy, 36};
    }
    return r;
}

struct span *tracing_start(const struct hcm_tracing *t, struct worker *w, struct arena *a,
                           struct headers *req, double now, stat_t *ext)
{
    struct prop_in in;
    gather(req, &in);
    enum trace_reason r = decide(t, a, req, &in);
    switch (r) {
    case TRACE_SAMPLED:
        STAT_INC(ext[t->st_random]);
        break;
    case TRACE_FORCED:
        STAT_INC(ext[t->st_forced]);
        break;
    case TRACE_CLIENT:
        STAT_INC(ext[t->st_client]);
        break;
    default:
        STAT_INC(ext[t->st_not_traceable]);
        break;
    }
    struct span *sp = arena_zalloc(a, sizeof(*sp));
    sp->cfg = t;
    sp->t_start = now;
    const struct tracer_cfg *tc = t->tracer;
    bool traced = r == TRACE_SAMPLED || r == TRACE_FORCED || r == TRACE_CLIENT;
    if (tc->kind == TRACER_ZIPKIN) {
        b3_from(&in, &sp->in);
    } else if (in.xray.p != NULL) {
        trace_xray_parse(in.xray, &sp->in);
    } else {
        ctx_clear(&sp->in);
    }
    if (sp->in.has_trace) {
        sp->trace_hi = sp->in.trace_hi;
        sp->trace_lo = sp->in.trace_lo;
    } else if (tc->kind == TRACER_XRAY) {
        sp->trace_hi = ((uint64_t)(uint32_t)now << 32) | (worker_rand(w) & 0xffffffffu);
        sp->trace_lo = worker_rand(w);
    } else {
        sp->trace_hi = tc->trace_id_128bit ? nonzero_rand(w) : 0;
        sp->trace_lo = nonzero_rand(w);
    }
    if (in.any) {
        strip_context(req);
    }
    if (tc->kind == TRACER_ZIPKIN) {
        /* The caller's sampled flag wins (Envoy's Zipkin driver); else the decision */
        sp->sampled = sp->in.sampled >= 0 ? sp->in.sampled == 1 : traced;
        if (r == TRACE_FORCED) {
            sp->sampled = true;
        }
        if (sp->in.has_trace && tc->shared_span_context && !t->egress) {
            sp->id = sp->in.span_id; /* one span shared by the caller's client and this server */
            sp->parent_id = sp->in.parent_id;
        } else {
            sp->id = nonzero_rand(w);
            sp->parent_id = sp->in.has_trace ? sp->in.span_id : 0;
        }
        inject_b3(a, req, sp);
    } else {
        if (r == TRACE_FORCED) {
            sp->sampled = true;
        } else if (sp->in.sampled >= 0) {
            sp->sampled = sp->in.sampled == 1;
        } else {
            sp->sampled = traced && trace_xray_sample(tc, tracing_xray_sampler(w), (uint64_t)now,
                                                      worker_rand(w));
        }
        sp->id = nonzero_rand(w);
        sp->parent_id = sp->in.has_trace ? sp->in.span_id : 0;
        inject_xray(a, req, sp);
    }
    return sp;
}

void tracing_finish(struct span *sp, struct worker *w, const struct span_fields *f)
{
    if (!sp->sampled) {
        return;
    }
    struct buf b;
    buf_init(&b);
    if (sp->cfg->tracer->kind == TRACER_ZIPKIN) {
        trace_zipkin_json(&b, sp, f);
    } else {
        trace_xray_json(&b, sp, f);
    }
    tracing_report(w, sp->cfg->tracer, (const char *)buf_head(&b), buf_len(&b));
    buf_deinit(&b);
}
