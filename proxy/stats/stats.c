/* stats: per-worker stat blocks and their rendering for the admin endpoint (see stats.h).
 *
 * Rendering sums the workers' blocks into a flat list of records with Envoy's full names
 * ("cluster.backend.upstream_rq_total"), sorts them as Envoy does, then prints them as Envoy's
 * text format, JSON or Prometheus. Prometheus output applies Envoy's default tag extraction
 * (envoy_cluster_name, envoy_http_conn_manager_prefix, envoy_listener_address,
 * envoy_response_code, envoy_response_code_class) so existing dashboards keep working, plus
 * stats_config's fixed tags; a regex stats_tags entry or use_all_default_tags: false hands the
 * names and labels to the tag producer (tags.h), as Envoy. */
#include "proxy/stats/stats.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <math.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/lds.h"
#include "proxy/net/tls.h"
#include "proxy/stats/tags.h"
#include "proxy/tracing/tracing.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/shared.h"

const double hist_bounds[HIST_N_BOUNDS] = {0.5,   1,      5,      10,      25,     50,    100,
                                           250,   500,    1000,   2500,    5000,   10000, 30000,
                                           60000, 300000, 600000, 1800000, 3600000};

void hist_record_ms(struct hist *h, double ms)
{
    uint32_t i = 0;
    while (i < HIST_N_BOUNDS && ms > hist_bounds[i]) {
        i++;
    }
    STAT_INC(h->buckets[i]);
    STAT_INC(h->count);
    stat_add(&h->sum_us, (uint64_t)(ms * 1000.0));
}

struct stats_block *stats_block_new(const struct config *c)
{
    struct stats_block *b = xcalloc(1, sizeof(*b));
    b->listener = xcalloc(c->n_listeners ? c->n_listeners : 1, sizeof(*b->listener));
    b->hcm = xcalloc(c->n_chains ? c->n_chains : 1, sizeof(*b->hcm));
    b->tcp = xcalloc(c->n_chains ? c->n_chains : 1, sizeof(*b->tcp));
    b->cluster = xcalloc(c->n_clusters ? c->n_clusters : 1, sizeof(*b->cluster));
    b->host = xcalloc(c->n_clusters ? c->n_clusters : 1, sizeof(*b->host));
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        uint32_t n = c->clusters[i].n_endpoints;
        b->host[i] = xcalloc(n ? n : 1, sizeof(**b->host));
    }
    b->ext = xcalloc(c->n_stat_defs ? c->n_stat_defs : 1, sizeof(*b->ext));
    return b;
}

void stats_block_free(struct stats_block *b, const struct config *c)
{
    if (b == NULL) {
        return;
    }
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        free(b->host[i]);
    }
    free(b->host);
    free(b->ext);
    free(b->cluster);
    free(b->hcm);
    free(b->tcp);
    free(b->listener);
    free(b);
}

void stats_sum_host(struct stats_block *const *blocks, uint32_t n_blocks, uint32_t cluster,
                    uint32_t endpoint, struct host_stats *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t w = 0; w < n_blocks; w++) {
        stats_add_host(out, &blocks[w]->host[cluster][endpoint]);
    }
}

void stats_add_host(struct host_stats *out, const struct host_stats *h)
{
    stat_add(&out->cx_total, stat_get(&h->cx_total));
    stat_add(&out->cx_active, stat_get(&h->cx_active));
    stat_add(&out->cx_connect_fail, stat_get(&h->cx_connect_fail));
    stat_add(&out->rq_total, stat_get(&h->rq_total));
    stat_add(&out->rq_active, stat_get(&h->rq_active));
    stat_add(&out->rq_success, stat_get(&h->rq_success));
    stat_add(&out->rq_error, stat_get(&h->rq_error));
    stat_add(&out->rq_timeout, stat_get(&h->rq_timeout));
}

/* ---- the flat record list ---- */

enum rec_kind {
    REC_COUNTER,
    REC_GAUGE,
    REC_HIST,
};

struct hist_sum {
    uint64_t buckets[HIST_N_BOUNDS + 1];
    uint64_t count;
    uint64_t sum_us;
};

struct rec {
    char *name; /* owned: full Envoy name */
    enum rec_kind kind;
    uint64_t value;
    bool counted; /* a counter incremented at least once (before any reset) */
    struct hist_sum h;
    /* Prometheus view */
    const char *prom_scope; /* "cluster", "http", "listener", "server" */
    const char *tag_name;   /* "envoy_cluster_name", ... or NULL */
    struct str tag_value;
    const char *tag2_name; /* a second label ("envoy_rds_route_config"), or NULL */
    struct str tag2_value;
    const char *stat; /* the stat's own name ("upstream_rq_total") */
    int code;         /* response code tag, or 0 */
    int code_class;   /* response code class tag, or 0 */
};

struct recs {
    struct rec *v;
    size_t n, cap;
};

static struct rec *recs_push(struct recs *r)
{
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 256;
        r->v = xrealloc(r->v, r->cap * sizeof(*r->v));
    }
    struct rec *x = &r->v[r->n++];
    memset(x, 0, sizeof(*x));
    return x;
}

static void rec_name(struct rec *x, const char *scope, struct str tag, const char *stat)
{
    size_t len = strlen(scope) + tag.len + strlen(stat) + 3;
    x->name = xmalloc(len);
    if (tag.len > 0) {
        snprintf(x->name, len, "%s.%.*s.%s", scope, STR_FMT(tag), stat);
    } else {
        snprintf(x->name, len, "%s.%s", scope, stat);
    }
    x->prom_scope = scope;
    x->stat = stat;
    x->tag_value = tag;
}

/* Splits "downstream_rq_2xx" style names into their Prometheus base and code class. */
static void rec_code_class(struct rec *x)
{
    size_t n = strlen(x->stat);
    if (n > 4 && x->stat[n - 2] == 'x' && x->stat[n - 1] == 'x' && x->stat[n - 3] >= '1' &&
        x->stat[n - 3] <= '5' && x->stat[n - 4] == '_') {
        x->code_class = x->stat[n - 3] - '0';
    }
}

struct walk {
    struct recs *r;
    struct stats_block *const *blocks;
    uint32_t n_blocks;
    const char *scope;
    const char *tag_name;
    struct str tag;
};

static uint64_t sum_at(struct stats_block *const *blocks, uint32_t n, size_t field_off, int which,
                       uint32_t idx, size_t elem_size)
{
    uint64_t v = 0;
    for (uint32_t w = 0; w < n; w++) {
        const char *base = NULL;
        switch (which) {
        case 0:
            base = (const char *)blocks[w]->listener;
            break;
        case 1:
            base = (const char *)blocks[w]->hcm;
            break;
        case 3:
            base = (const char *)blocks[w]->tcp;
            break;
        default:
            base = (const char *)blocks[w]->cluster;
            break;
        }
        v += stat_get((const stat_t *)(base + elem_size * idx + field_off));
    }
    return v;
}

static void sum_hist(struct stats_block *const *blocks, uint32_t n, int which, uint32_t idx,
                     size_t elem_size, size_t field_off, struct hist_sum *out)
{
    memset(out, 0, sizeof(*out));
    for (uint32_t w = 0; w < n; w++) {
        const char *base = which == 0   ? (const char *)blocks[w]->listener
                           : which == 1 ? (const char *)blocks[w]->hcm
                           : which == 3 ? (const char *)blocks[w]->tcp
                                        : (const char *)blocks[w]->cluster;
        const struct hist *h = (const struct hist *)(base + elem_size * idx + field_off);
        for (int i = 0; i <= HIST_N_BOUNDS; i++) {
            out->buckets[i] += stat_get(&h->buckets[i]);
        }
        out->count += stat_get(&h->count);
        out->sum_us += stat_get(&h->sum_us);
    }
}

#define WALK_COUNTER(type, which, n)                                                               \
    {                                                                                              \
        struct rec *x = recs_push(wk->r);                                                          \
        rec_name(x, wk->scope, wk->tag, #n);                                                       \
        x->tag_name = wk->tag_name;                                                                \
        x->kind = REC_COUNTER;                                                                     \
        x->value = sum_at(wk->blocks, wk->n_blocks, offsetof(type, n), which, idx, sizeof(type));  \
        rec_code_class(x);                                                                         \
    }
#define WALK_GAUGE(type, which, n)                                                                 \
    {                                                                                              \
        struct rec *x = recs_push(wk->r);                                                          \
        rec_name(x, wk->scope, wk->tag, #n);                                                       \
        x->tag_name = wk->tag_name;                                                                \
        x->kind = REC_GAUGE;                                                                       \
        x->value = sum_at(wk->blocks, wk->n_blocks, offsetof(type, n), which, idx, sizeof(type));  \
    }
#define WALK_HIST(type, which, n)                                                                  \
    {                                                                                              \
        struct rec *x = recs_push(wk->r);                                                          \
        rec_name(x, wk->scope, wk->tag, #n);                                                       \
        x->tag_name = wk->tag_name;                                                                \
        x->kind = REC_HIST;                                                                        \
        sum_hist(wk->blocks, wk->n_blocks, which, idx, sizeof(type), offsetof(type, n), &x->h);    \
    }

#define WALK_L(kind, n) WALK_##kind(struct listener_stats, 0, n)
#define WALK_H(kind, n) WALK_##kind(struct hcm_stats, 1, n)
#define WALK_T(kind, n) WALK_##kind(struct tcp_stats, 3, n)
#define WALK_C(kind, n) WALK_##kind(struct cluster_stats, 2, n)

#define WALK_LSSL(kind, n) WALK_##kind(struct listener_stats, 0, ssl.n)
#define WALK_CSSL(kind, n) WALK_##kind(struct cluster_stats, 2, ssl.n)

static void walk_listener(struct walk *wk, uint32_t idx, bool tls)
{
    LISTENER_STATS(WALK_L)
    if (tls) {
        SSL_STATS(WALK_LSSL)
    }
}

static void walk_tcp(struct walk *wk, uint32_t idx)
{
    TCP_STATS(WALK_T)
}

static void walk_hcm(struct walk *wk, uint32_t idx)
{
    HCM_STATS(WALK_H)
}

#define WALK_CH2(kind, n) WALK_##kind(struct cluster_stats, 2, http2.n)

static void walk_cluster(struct walk *wk, uint32_t idx, bool tls)
{
    CLUSTER_STATS(WALK_C)
    CLUSTER_HTTP2_STATS(WALK_CH2)
    if (tls) {
        SSL_STATS(WALK_CSSL)
    }
    for (int code = 100; code < 600; code++) {
        uint64_t v = 0;
        for (uint32_t w = 0; w < wk->n_blocks; w++) {
            v += stat_get(&wk->blocks[w]->cluster[idx].upstream_rq_code[code]);
        }
        if (v == 0) {
            continue; /* Envoy creates upstream_rq_<code> only once seen */
        }
        struct rec *x = recs_push(wk->r);
        char stat[32];
        snprintf(stat, sizeof(stat), "upstream_rq_%d", code);
        size_t len = wk->tag.len + strlen(stat) + 16;
        x->name = xmalloc(len);
        snprintf(x->name, len, "cluster.%.*s.%s", STR_FMT(wk->tag), stat);
        x->prom_scope = "cluster";
        x->stat = "upstream_rq";
        x->tag_name = wk->tag_name;
        x->tag_value = wk->tag;
        x->kind = REC_COUNTER;
        x->value = v;
        x->code = code;
    }
}

/* A stat an HTTP filter declared (config.stat_defs[idx]). */
static void walk_ext(struct recs *r, const struct stat_def *d, struct stats_block *const *blocks,
                     uint32_t n_blocks, uint32_t idx)
{
    struct rec *x = recs_push(r);
    rec_name(x, d->scope, d->tag, d->stat);
    x->tag_name = d->tag_name;
    x->kind = d->is_gauge ? REC_GAUGE : REC_COUNTER;
    for (uint32_t w = 0; w < n_blocks; w++) {
        x->value += stat_get(&blocks[w]->ext[idx]);
    }
}

/* cluster.<name>.circuit_breakers.{default,high}.*: Envoy's open gauges (1 while the limit is
 * reached) and, with track_remaining, the remaining_* gauges. Computed from the cluster-wide
 * counts when rendered, which gives what Envoy's gauges hold (it updates them on each change).
 * Nothing runs HIGH priority yet, so its counts are 0. */
static void add_breaker_gauges(struct recs *r, const struct cluster_cfg *cc,
                               const struct cluster_shared *sh)
{
    static const char *const names[2][9] = {
        {"circuit_breakers.default.cx_open", "circuit_breakers.default.cx_pool_open",
         "circuit_breakers.default.rq_pending_open", "circuit_breakers.default.rq_open",
         "circuit_breakers.default.rq_retry_open", "circuit_breakers.default.remaining_cx",
         "circuit_breakers.default.remaining_pending", "circuit_breakers.default.remaining_rq",
         "circuit_breakers.default.remaining_retries"},
        {"circuit_breakers.high.cx_open", "circuit_breakers.high.cx_pool_open",
         "circuit_breakers.high.rq_pending_open", "circuit_breakers.high.rq_open",
         "circuit_breakers.high.rq_retry_open", "circuit_breakers.high.remaining_cx",
         "circuit_breakers.high.remaining_pending", "circuit_breakers.high.remaining_rq",
         "circuit_breakers.high.remaining_retries"},
    };
    for (int p = 0; p < 2; p++) {
        struct breaker_view v;
        breaker_view(p == 0 ? sh : NULL, &cc->breakers[p], &v);
        const uint64_t vals[9] = {v.cx_open,           0,
                                  v.rq_pending_open,   v.rq_open,
                                  v.rq_retry_open,     v.remaining_cx,
                                  v.remaining_pending, v.remaining_rq,
                                  v.remaining_retries};
        int n = cc->breakers[p].track_remaining ? 9 : 5;
        for (int i = 0; i < n; i++) {
            struct rec *x = recs_push(r);
            rec_name(x, "cluster", cc->name, names[p][i]);
            x->tag_name = "envoy_cluster_name";
            x->kind = REC_GAUGE;
            x->value = vals[i];
        }
    }
}

/* Health from the cluster-wide state (written by main): membership_healthy, and the
 * health_check.* and outlier_detection.* stats, which Envoy creates only for clusters that
 * configure them. */
static void add_health(struct recs *r, const struct cluster_cfg *cc,
                       const struct cluster_shared *sh)
{
    uint64_t healthy = cc->n_endpoints;
    if (sh != NULL) {
        healthy = 0;
        for (uint32_t e = 0; e < sh->n_eps; e++) {
            uint32_t bits =
                atomic_load_explicit((_Atomic uint32_t *)&sh->eps[e].health, memory_order_relaxed);
            healthy += (bits & HEALTH_F_UNHEALTHY) == 0;
        }
    }
    struct rec *x = recs_push(r);
    rec_name(x, "cluster", cc->name, "membership_healthy");
    x->tag_name = "envoy_cluster_name";
    x->kind = REC_GAUGE;
    x->value = healthy;
    if (sh == NULL) {
        return;
    }
#define HEALTH_REC(k, n, group, field)                                                             \
    x = recs_push(r);                                                                              \
    rec_name(x, "cluster", cc->name, group #n);                                                    \
    x->tag_name = "envoy_cluster_name";                                                            \
    x->kind = REC_##k;                                                                             \
    x->value = stat_get(&sh->field.n);
#define HC_REC(k, n) HEALTH_REC(k, n, "health_check.", hc_stats)
#define OD_REC(k, n) HEALTH_REC(k, n, "outlier_detection.", od_stats)
    if (cc->health_check != NULL) {
        HEALTH_CHECK_STATS(HC_REC)
    }
    if (cc->outlier != NULL) {
        OUTLIER_STATS(OD_REC)
    }
#undef OD_REC
#undef HC_REC
#undef HEALTH_REC
}

/* http.<stat_prefix>.rds.<route_config_name>.*: main-written, one set per subscription. The
 * Prometheus view is Envoy's tag extraction: envoy_http_rds_<stat> with the connection
 * manager's prefix and the route config name as labels. */
static void add_rds(struct recs *r, const struct rds_cfg *rc, const struct rds_stats *st)
{
#define RDS_REC(k, n)                                                                              \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "http", rc->hcm->stat_prefix, "rds." #n);                                      \
        free(x->name);                                                                             \
        size_t len = rc->hcm->stat_prefix.len + rc->route_config_name.len + sizeof(#n) + 12;       \
        x->name = xmalloc(len);                                                                    \
        snprintf(x->name, len, "http.%.*s.rds.%.*s.%s", STR_FMT(rc->hcm->stat_prefix),             \
                 STR_FMT(rc->route_config_name), #n);                                              \
        x->tag_name = "envoy_http_conn_manager_prefix";                                            \
        x->tag2_name = "envoy_rds_route_config";                                                   \
        x->tag2_value = rc->route_config_name;                                                     \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&st->n);                                                               \
    }
    RDS_STATS(RDS_REC)
#undef RDS_REC
}

/* sds.<secret name>.*: main-written, one set per subscription (two files holding secrets of
 * the same name add up, as they share Envoy's scope). */
static void add_sds(struct recs *r, struct str name, const struct sds_stats *st)
{
#define SDS_REC(k, n)                                                                              \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "sds", name, #n);                                                              \
        x->tag_name = "envoy_sds_secret";                                                          \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&st->n);                                                               \
    }
    SDS_STATS(SDS_REC)
#undef SDS_REC
}

/* <scope>.<tag>.{server,client}_ssl_socket_factory.ssl_context_update_by_sds: SDS updates
 * applied to the TLS contexts of a listener's chains or of a cluster (main-written, in their
 * tls_live), added to *v; *any tells whether a context takes something from SDS (the stat is
 * shown only then). */
static void sds_updates(const struct tls_ctx *t, bool *any, uint64_t *v)
{
    if (t != NULL && t->live != NULL) {
        *any = true;
        *v += atomic_load_explicit(&t->live->updates, memory_order_relaxed);
    }
}

static void add_counter(struct recs *r, const char *scope, const char *tag_name, struct str tag,
                        const char *stat, uint64_t v)
{
    struct rec *x = recs_push(r);
    rec_name(x, scope, tag, stat);
    x->tag_name = tag_name;
    x->kind = REC_COUNTER;
    x->value = v;
}

static void add_server(struct recs *r, const char *stat, enum rec_kind kind, uint64_t v)
{
    struct rec *x = recs_push(r);
    rec_name(x, "server", STR_NULL, stat);
    x->kind = kind;
    x->value = v;
}

/* tracing.zipkin.* and tracing.xray.* (proxy/tracing/tracing.h), once such a driver was
 * configured. */
static void add_tracing(struct recs *r)
{
    struct tracing_counters t;
    tracing_counters_get(&t);
    if (t.zipkin) {
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "spans_sent", t.zipkin_spans_sent);
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "reports_sent", t.zipkin_reports_sent);
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "reports_dropped",
                    t.zipkin_reports_dropped);
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "reports_failed",
                    t.zipkin_reports_failed);
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "timer_flushed", t.zipkin_timer_flushed);
        add_counter(r, "tracing", NULL, STR_LIT("zipkin"), "spans_dropped", t.zipkin_spans_dropped);
    }
    if (t.xray) {
        add_counter(r, "tracing", NULL, STR_LIT("xray"), "segments_sent", t.xray_segments_sent);
        add_counter(r, "tracing", NULL, STR_LIT("xray"), "segments_dropped",
                    t.xray_segments_dropped);
    }
}

static int rec_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rec *)a)->name, ((const struct rec *)b)->name);
}

/* Adds up the sorted records that share a name (stat scopes that several listeners or chains
 * share) into the first of them. */
static void collect_merge(struct recs *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++) {
        struct rec *x = &r->v[i];
        if (k > 0 && strcmp(r->v[k - 1].name, x->name) == 0) {
            struct rec *into = &r->v[k - 1];
            into->value += x->value;
            for (int j = 0; j <= HIST_N_BOUNDS; j++) {
                into->h.buckets[j] += x->h.buckets[j];
            }
            into->h.count += x->h.count;
            into->h.sum_us += x->h.sum_us;
            free(x->name);
            continue;
        }
        r->v[k++] = *x;
    }
    r->n = k;
}

/* cluster.<name>.*: cluster `idx` of wk->blocks, `sh` its cluster-wide state (or NULL). */
static void collect_cluster(struct recs *r, struct walk *wk, const struct cluster_cfg *cc,
                            uint32_t idx, const struct cluster_shared *sh)
{
    wk->scope = "cluster";
    wk->tag_name = "envoy_cluster_name";
    wk->tag = cc->name;
    walk_cluster(wk, idx, cc->tls != NULL);
    bool sds = false;
    uint64_t updates = 0;
    sds_updates(cc->tls, &sds, &updates);
    if (sds) {
        add_counter(r, "cluster", "envoy_cluster_name", cc->name,
                    "client_ssl_socket_factory.ssl_context_update_by_sds", updates);
    }
    struct rec *x = recs_push(r);
    rec_name(x, "cluster", cc->name, "membership_total");
    x->tag_name = "envoy_cluster_name";
    x->kind = REC_GAUGE;
    x->value = cc->n_endpoints;
    add_health(r, cc, sh);
    add_breaker_gauges(r, cc, sh);
}

/* cluster.<name>.update_* of an EDS cluster: main-written (proxy/cds.c). */
static void add_eds(struct recs *r, const struct cluster_cfg *cc, const struct eds_stats *st)
{
#define EDS_REC(k, n)                                                                              \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "cluster", cc->name, #n);                                                      \
        x->tag_name = "envoy_cluster_name";                                                        \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&st->n);                                                               \
    }
    EDS_STATS(EDS_REC)
#undef EDS_REC
}

/* cluster_manager.* and cluster_manager.cds.*: main-written (proxy/cds.c). */
static void add_cm(struct recs *r, const struct cm_stats *cm)
{
#define CM_REC(k, n)                                                                               \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "cluster_manager", STR_NULL, #n);                                              \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&cm->n);                                                               \
    }
    CM_STATS(CM_REC)
#undef CM_REC
#define CDS_REC(k, n)                                                                              \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "cluster_manager", STR_NULL, "cds." #n);                                       \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&cm->cds.n);                                                           \
    }
    if (cm->has_cds) {
        CDS_STATS(CDS_REC)
    }
#undef CDS_REC
}

/* listener_manager.*: main-written (proxy/lds.c). */
static void add_lm(struct recs *r, const struct lds_stats *lm)
{
#define LM_REC(k, n)                                                                               \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "listener_manager", STR_NULL, #n);                                             \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&lm->n);                                                               \
    }
    LM_STATS(LM_REC)
#undef LM_REC
#define LDS_REC(k, n)                                                                              \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "listener_manager", STR_NULL, "lds." #n);                                      \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&lm->lds.n);                                                           \
    }
    CDS_STATS(LDS_REC)
#undef LDS_REC
}

/* listener.*, http.* and tcp.* of `c`'s listeners and chains, from `blocks`. */
static void collect_listeners(struct recs *r, const struct config *c,
                              struct stats_block *const *blocks, uint32_t n_blocks)
{
    struct walk wk = {.r = r, .blocks = blocks, .n_blocks = n_blocks};
    for (uint32_t i = 0; i < c->n_listeners; i++) {
        const struct listener_cfg *l = &c->listeners[i];
        wk.scope = "listener";
        wk.tag_name = "envoy_listener_address";
        wk.tag = l->stat_name;
        bool tls = false;
        for (uint32_t k = 0; k < l->n_chains + (l->has_default ? 1u : 0u); k++) {
            tls = tls || l->chains[k].tls != NULL;
        }
        walk_listener(&wk, i, tls);
        bool sds = false;
        uint64_t updates = 0;
        for (uint32_t k = 0; k < l->n_chains + (l->has_default ? 1u : 0u); k++) {
            sds_updates(l->chains[k].tls, &sds, &updates);
        }
        if (sds) {
            add_counter(r, "listener", "envoy_listener_address", l->stat_name,
                        "server_ssl_socket_factory.ssl_context_update_by_sds", updates);
        }
    }
    /* Chains whose connection managers (or TCP proxies) share a stat_prefix share their stats,
     * as in Envoy: collect_merge() adds up records of the same name. */
    for (uint32_t i = 0; i < c->n_chains; i++) {
        const struct filter_chain_cfg *fc = &c->chains[i];
        if (fc->hcm != NULL) {
            wk.scope = "http";
            wk.tag_name = "envoy_http_conn_manager_prefix";
            wk.tag = fc->hcm->stat_prefix;
            walk_hcm(&wk, i);
        }
        if (fc->tcp != NULL) {
            wk.scope = "tcp";
            wk.tag_name = "envoy_tcp_prefix";
            wk.tag = fc->tcp->stat_prefix;
            walk_tcp(&wk, i);
        }
    }
}

static bool has_proxy_proto(const struct config *c)
{
    for (uint32_t i = 0; c != NULL && i < c->n_listeners; i++) {
        if (c->listeners[i].proxy_protocol) {
            return true;
        }
    }
    return false;
}

/* Envoy's proxy_protocol listener filter counters (global: the filter's scope is the server's),
 * when a bootstrap or LDS listener has the filter. */
static void add_proxy_proto(struct recs *r, const struct config *c,
                            const struct server_stats_view *srv, struct stats_block *const *blocks,
                            uint32_t n_blocks)
{
    bool any = has_proxy_proto(c);
    for (uint32_t i = 0; !any && i < srv->n_dl; i++) {
        any = has_proxy_proto(srv->dl[i].cfg);
    }
    if (!any) {
        return;
    }
    static const struct {
        size_t off;
        const char *name;
    } names[] = {
        {offsetof(struct proxy_proto_stats, not_found_disallowed), "not_found_disallowed"},
        {offsetof(struct proxy_proto_stats, not_found_allowed), "not_found_allowed"},
        {offsetof(struct proxy_proto_stats, v1_found), "versions.v1.found"},
        {offsetof(struct proxy_proto_stats, v1_disallowed), "versions.v1.disallowed"},
        {offsetof(struct proxy_proto_stats, v1_error), "versions.v1.error"},
        {offsetof(struct proxy_proto_stats, v2_found), "versions.v2.found"},
        {offsetof(struct proxy_proto_stats, v2_disallowed), "versions.v2.disallowed"},
        {offsetof(struct proxy_proto_stats, v2_error), "versions.v2.error"},
        {offsetof(struct proxy_proto_stats, downstream_cx_proxy_proto_error), NULL},
    };
    for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
        struct rec *x = recs_push(r);
        if (names[k].name != NULL) {
            rec_name(x, "proxy_proto", STR_NULL, names[k].name);
        } else {
            /* the legacy name, unprefixed (Prometheus: envoy_downstream_cx_proxy_proto_error) */
            x->name = xmalloc(sizeof("downstream_cx_proxy_proto_error"));
            memcpy(x->name, "downstream_cx_proxy_proto_error",
                   sizeof("downstream_cx_proxy_proto_error"));
            x->prom_scope = "downstream";
            x->stat = "cx_proxy_proto_error";
        }
        x->kind = REC_COUNTER;
        for (uint32_t w = 0; w < n_blocks; w++) {
            x->value +=
                stat_get((const stat_t *)((const char *)&blocks[w]->proxy_proto + names[k].off));
        }
    }
}

static void collect(struct recs *r, const struct config *c, struct stats_block *const *blocks,
                    uint32_t n_blocks, const struct server_stats_view *srv)
{
    struct walk wk = {.r = r, .blocks = blocks, .n_blocks = n_blocks};
    collect_listeners(r, c, blocks, n_blocks);
    for (uint32_t i = 0; i < srv->n_dl; i++) {
        const struct lds_view *lv = &srv->dl[i];
        collect_listeners(r, lv->cfg, lv->blocks, n_blocks);
        for (uint32_t k = 0; k < lv->cfg->n_stat_defs; k++) {
            walk_ext(r, &lv->cfg->stat_defs[k], lv->blocks, n_blocks, k);
        }
        for (uint32_t k = 0; lv->active && lv->rds != NULL && k < lv->cfg->n_rds; k++) {
            add_rds(r, &lv->cfg->rds[k], &lv->rds[k]); /* RDS in an LDS listener */
        }
    }
    if (srv->lm != NULL && srv->lm->has_lds) {
        add_lm(r, srv->lm);
    }
#define WALK_HTTP2(kd, n)                                                                          \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "http2", STR_NULL, #n);                                                        \
        x->kind = REC_##kd;                                                                        \
        for (uint32_t w = 0; w < n_blocks; w++) {                                                  \
            x->value += stat_get(&blocks[w]->http2.n);                                             \
        }                                                                                          \
    }
    HTTP2_STATS(WALK_HTTP2)
#undef WALK_HTTP2
    bool tls_inspector = false;
    for (uint32_t i = 0; i < c->n_listeners; i++) {
        tls_inspector = tls_inspector || c->listeners[i].tls_inspector;
    }
#define WALK_TLSI(kd, n)                                                                           \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "tls_inspector", STR_NULL, #n);                                                \
        x->kind = REC_##kd;                                                                        \
        for (uint32_t w = 0; w < n_blocks; w++) {                                                  \
            x->value += stat_get(&blocks[w]->tls_inspector.n);                                     \
        }                                                                                          \
    }
    if (tls_inspector) {
        TLS_INSPECTOR_STATS(WALK_TLSI)
    }
#undef WALK_TLSI
    add_proxy_proto(r, c, srv, blocks, n_blocks);
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        if (c->clusters[i].boot_dns != NULL) {
            continue; /* its current version's stats are among srv->dyn (proxy/cds.h) */
        }
        collect_cluster(r, &wk, &c->clusters[i], i, srv->shared != NULL ? &srv->shared[i] : NULL);
    }
    for (uint32_t i = 0; i < srv->n_dyn; i++) {
        const struct cluster_view *cv = &srv->dyn[i];
        struct walk dw = {.r = r, .blocks = cv->blocks, .n_blocks = n_blocks};
        collect_cluster(r, &dw, cv->cfg, 0, cv->shared);
        if (cv->eds != NULL) {
            add_eds(r, cv->cfg, cv->eds);
        }
    }
    if (srv->cm != NULL) {
        add_cm(r, srv->cm);
    }
    for (uint32_t i = 0; i < c->n_stat_defs; i++) {
        walk_ext(r, &c->stat_defs[i], blocks, n_blocks, i);
    }
    for (uint32_t i = 0; srv->rds != NULL && i < c->n_rds; i++) {
        add_rds(r, &c->rds[i], &srv->rds[i]);
    }
    for (uint32_t i = 0; srv->sds != NULL && i < c->n_sds; i++) {
        add_sds(r, c->sds[i].name, &srv->sds[i]);
    }
    for (uint32_t i = 0; srv->dsds != NULL && i < srv->n_dsds; i++) {
        add_sds(r, srv->dsds[i].name, srv->dsds[i].st);
    }
    add_tracing(r);
    add_server(r, "live", REC_GAUGE, (uint64_t)srv->live);
    add_server(r, "uptime", REC_GAUGE, srv->uptime_s);
    add_server(r, "memory_allocated", REC_GAUGE, srv->memory_allocated);
    add_server(r, "memory_heap_size", REC_GAUGE, srv->memory_heap_size);
    add_server(r, "concurrency", REC_GAUGE, srv->concurrency);
    add_server(r, "state", REC_GAUGE, srv->state);
    if (srv->ads != NULL) {
#define CP_REC(k, n)                                                                               \
    {                                                                                              \
        struct rec *x = recs_push(r);                                                              \
        rec_name(x, "control_plane", STR_NULL, #n);                                                \
        x->kind = REC_##k;                                                                         \
        x->value = stat_get(&srv->ads->n);                                                         \
    }
        CONTROL_PLANE_STATS(CP_REC)
#undef CP_REC
        if (c->ads != NULL && c->ads->cluster != NULL) {
            /* merged with the workers' count of the same cluster (collect_merge) */
            struct rec *x = recs_push(r);
            rec_name(x, "cluster", c->ads->cluster->name, "http2.keepalive_timeout");
            x->tag_name = "envoy_cluster_name";
            x->kind = REC_COUNTER;
            x->value = stat_get(&srv->ads->keepalive_timeout);
        }
    }
    if (srv->has_certs) {
        add_server(r, "days_until_first_cert_expiring", REC_GAUGE,
                   srv->days_until_first_cert_expiring);
    }
    add_server(r, "total_connections", REC_GAUGE, 0);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].name, "server.total_connections") == 0) {
            uint64_t tot = 0;
            for (size_t j = 0; j < r->n; j++) {
                if (r->v[j].prom_scope != NULL && strcmp(r->v[j].prom_scope, "listener") == 0 &&
                    strcmp(r->v[j].stat, "downstream_cx_active") == 0) {
                    tot += r->v[j].value;
                }
            }
            r->v[i].value = tot;
        }
    }
    qsort(r->v, r->n, sizeof(*r->v), rec_cmp);
    collect_merge(r);
}

static void recs_free(struct recs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].name);
    }
    free(r->v);
}

/* Estimates quantile q (0..1) from bucket counts by linear interpolation within a bucket. */
static double hist_quantile(const struct hist_sum *h, double q)
{
    if (h->count == 0) {
        return NAN;
    }
    double target = q * (double)h->count;
    uint64_t cum = 0;
    for (int i = 0; i <= HIST_N_BOUNDS; i++) {
        uint64_t prev = cum;
        cum += h->buckets[i];
        if ((double)cum >= target && h->buckets[i] > 0) {
            double lo = i == 0 ? 0 : hist_bounds[i - 1];
            double hi = i < HIST_N_BOUNDS ? hist_bounds[i] : hist_bounds[HIST_N_BOUNDS - 1] * 2;
            double frac = (target - (double)prev) / (double)h->buckets[i];
            return lo + (hi - lo) * frac;
        }
    }
    return hist_bounds[HIST_N_BOUNDS - 1];
}

static bool rec_used(const struct rec *x)
{
    switch (x->kind) {
    case REC_COUNTER:
        return x->counted;
    case REC_GAUGE:
        return x->value > 0;
    case REC_HIST:
        break;
    }
    return x->h.count > 0;
}

static bool rec_visible(const struct rec *x, const pcre2_code *filter, int used_only)
{
    if (used_only && !rec_used(x)) {
        return false;
    }
    if (filter != NULL) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(filter, NULL);
        int rc = pcre2_match(filter, (PCRE2_SPTR)x->name, strlen(x->name), 0, 0, md, NULL);
        pcre2_match_data_free(md);
        if (rc < 0) {
            return false;
        }
    }
    return true;
}

static const double quantiles[] = {0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1};
static const char *const quantile_names[] = {"P0",  "P25", "P50",   "P75",   "P90",
                                             "P95", "P99", "P99.5", "P99.9", "P100"};
#define N_QUANTILES (sizeof(quantiles) / sizeof(quantiles[0]))

static void render_text(struct buf *out, const struct recs *r, const pcre2_code *filter,
                        int used_only)
{
    /* Envoy prints counters and gauges first, then histograms. */
    for (size_t i = 0; i < r->n; i++) {
        const struct rec *x = &r->v[i];
        if (x->kind != REC_HIST && rec_visible(x, filter, used_only)) {
            buf_printf(out, "%s: %llu\n", x->name, (unsigned long long)x->value);
        }
    }
    for (size_t i = 0; i < r->n; i++) {
        const struct rec *x = &r->v[i];
        if (x->kind != REC_HIST || !rec_visible(x, filter, used_only)) {
            continue;
        }
        if (x->h.count == 0) {
            buf_printf(out, "%s: No recorded values\n", x->name);
            continue;
        }
        buf_printf(out, "%s:", x->name);
        for (size_t q = 0; q < N_QUANTILES; q++) {
            double v = hist_quantile(&x->h, quantiles[q]);
            buf_printf(out, " %s(%g,%g)", quantile_names[q], v, v);
        }
        buf_append_str(out, "\n");
    }
}

static void render_json(struct buf *out, const struct recs *r, const pcre2_code *filter,
                        int used_only)
{
    buf_append_str(out, "{\"stats\":[");
    bool first = true;
    for (size_t i = 0; i < r->n; i++) {
        const struct rec *x = &r->v[i];
        if (x->kind == REC_HIST || !rec_visible(x, filter, used_only)) {
            continue;
        }
        buf_printf(out, "%s{\"name\":\"%s\",\"value\":%llu}", first ? "" : ",", x->name,
                   (unsigned long long)x->value);
        first = false;
    }
    /* Histograms as Envoy's "histograms" entry with computed quantiles. */
    buf_printf(out, "%s{\"histograms\":{\"supported_quantiles\":[", first ? "" : ",");
    for (size_t q = 0; q < N_QUANTILES; q++) {
        buf_printf(out, "%s%g", q ? "," : "", quantiles[q] * 100);
    }
    buf_append_str(out, "],\"computed_quantiles\":[");
    bool hfirst = true;
    for (size_t i = 0; i < r->n; i++) {
        const struct rec *x = &r->v[i];
        if (x->kind != REC_HIST || !rec_visible(x, filter, used_only)) {
            continue;
        }
        buf_printf(out, "%s{\"name\":\"%s\",\"values\":[", hfirst ? "" : ",", x->name);
        for (size_t q = 0; q < N_QUANTILES; q++) {
            double v = hist_quantile(&x->h, quantiles[q]);
            if (isnan(v)) {
                buf_printf(out, "%s{\"interval\":null,\"cumulative\":null}", q ? "," : "");
            } else {
                buf_printf(out, "%s{\"interval\":%g,\"cumulative\":%g}", q ? "," : "", v, v);
            }
        }
        buf_append_str(out, "]}");
        hfirst = false;
    }
    buf_append_str(out, "]}}]}\n");
}

/* Prometheus metric name: envoy_<scope>_<stat> with non [a-zA-Z0-9_] mapped to '_'. */
static void prom_name(char *dst, size_t cap, const struct rec *x)
{
    const char *stat = x->stat;
    char base[128];
    if (x->code_class) {
        size_t n = strlen(stat);
        snprintf(base, sizeof(base), "%.*s_xx", (int)(n - 4), stat);
        stat = base;
    }
    snprintf(dst, cap, "envoy_%s_%s", x->prom_scope, stat);
    for (char *p = dst; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            *p = '_';
        }
    }
}

/* name="value" with the exposition format's escapes, after a comma when `comma`. */
static void prom_label(struct buf *out, bool comma, const char *name, struct str value)
{
    buf_printf(out, "%s%s=\"", comma ? "," : "", name);
    for (size_t i = 0; i < value.len; i++) {
        char ch = value.p[i];
        if (ch == '"' || ch == '\\') {
            buf_append(out, "\\", 1);
        }
        if (ch == '\n') {
            buf_append_str(out, "\\n");
            continue;
        }
        buf_append(out, &ch, 1);
    }
    buf_append_str(out, "\"");
}

/* A tag name as a label name: characters other than [a-zA-Z0-9_] become '_' (Envoy's
 * envoy.cluster_name -> envoy_cluster_name, appmesh.mesh -> appmesh_mesh). */
static void prom_label_name(struct buf *out, const char *name)
{
    for (const char *p = name; *p != '\0'; p++) {
        char ch = *p;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))) {
            ch = '_';
        }
        buf_append(out, &ch, 1);
    }
}

/* The labels of a record when stats_config asks for more than the default extraction (a regex
 * stats_tags entry, or use_all_default_tags: false): Envoy's tag producer (tags.h) on the full
 * name, its tag-extracted name as the metric's. */
struct prom_tagged {
    char name[160];
    struct buf labels; /* without braces */
};

static void prom_tagged_make(struct prom_tagged *t, const struct tag_producer *tp, const char *full)
{
    struct stat_tags st;
    tags_produce(tp, full, &st);
    snprintf(t->name, sizeof(t->name), "envoy_%s", st.name);
    for (char *p = t->name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9'))) {
            *p = '_';
        }
    }
    buf_init(&t->labels);
    for (uint32_t i = 0; i < st.n; i++) {
        if (i > 0) {
            buf_append_str(&t->labels, ",");
        }
        prom_label_name(&t->labels, st.v[i].name);
        struct buf tmp;
        buf_init(&tmp);
        prom_label(&tmp, false, "", (struct str){st.v[i].value, strlen(st.v[i].value)});
        buf_append(&t->labels, buf_head(&tmp), buf_len(&tmp));
        buf_deinit(&tmp);
    }
    stat_tags_free(&st);
}

/* fixed_value tags (stats_config.stats_tags) as labels, "" when none: added to every sample of
 * the default extraction, as Envoy does. */
static void prom_fixed_labels(struct buf *out, const struct config *c)
{
    bool any = false;
    for (uint32_t i = 0; i < c->n_stats_tags; i++) {
        const struct stats_tag_cfg *t = &c->stats_tags[i];
        if (!t->is_fixed) {
            continue;
        }
        if (any) {
            buf_append_str(out, ",");
        }
        char name[256];
        snprintf(name, sizeof(name), "%.*s", STR_FMT(t->name));
        prom_label_name(out, name);
        struct buf tmp;
        buf_init(&tmp);
        prom_label(&tmp, false, "", t->fixed_value);
        buf_append(out, buf_head(&tmp), buf_len(&tmp));
        buf_deinit(&tmp);
        any = true;
    }
    buf_append(out, "", 1); /* NUL-terminated */
}

static void prom_labels(struct buf *out, const struct rec *x, const char *extra, const char *fixed)
{
    bool any = false;
    buf_append_str(out, "{");
    if (fixed != NULL && fixed[0] != '\0') {
        buf_append_str(out, fixed);
        any = true;
    }
    if (x->code) {
        buf_printf(out, "envoy_response_code=\"%d\"", x->code);
        any = true;
    }
    if (x->code_class) {
        buf_printf(out, "%senvoy_response_code_class=\"%d\"", any ? "," : "", x->code_class);
        any = true;
    }
    if (x->tag_name != NULL) {
        prom_label(out, any, x->tag_name, x->tag_value);
        any = true;
    }
    if (x->tag2_name != NULL) {
        prom_label(out, any, x->tag2_name, x->tag2_value);
        any = true;
    }
    if (extra != NULL) {
        buf_printf(out, "%s%s", any ? "," : "", extra);
        any = true;
    }
    buf_append_str(out, "}");
}

static void prom_tagged_labels(struct buf *out, const struct prom_tagged *t, const char *extra)
{
    buf_append_str(out, "{");
    buf_append(out, buf_head(&t->labels), buf_len(&t->labels));
    if (extra != NULL) {
        buf_printf(out, "%s%s", buf_len(&t->labels) > 0 ? "," : "", extra);
    }
    buf_append_str(out, "}");
}

static void render_prometheus(struct buf *out, struct recs *r, const pcre2_code *filter,
                              int used_only, const struct config *c)
{
    struct buf fixed_b;
    buf_init(&fixed_b);
    prom_fixed_labels(&fixed_b, c);
    const char *fixed = (const char *)buf_head(&fixed_b);
    /* stats_config beyond fixed tags: the tag producer names and labels every record */
    bool custom = !c->use_all_default_tags;
    for (uint32_t i = 0; i < c->n_stats_tags; i++) {
        custom = custom || !c->stats_tags[i].is_fixed;
    }
    struct tag_producer *tp = NULL;
    struct prom_tagged *tagged = NULL;
    if (custom) {
        struct err err;
        tp = tag_producer_new(c->stats_tags, c->n_stats_tags, c->use_all_default_tags, &err);
    }
    /* Group by metric name: the exposition format wants one TYPE line per family, followed by
     * all its samples. Sort a copy of the indices by (family, name). */
    size_t n = r->n;
    char(*names)[160] = xmalloc(n ? n * sizeof(*names) : 1);
    size_t *order = xmalloc(n ? n * sizeof(*order) : 1);
    if (tp != NULL) {
        tagged = xcalloc(n ? n : 1, sizeof(*tagged));
    }
    for (size_t i = 0; i < n; i++) {
        if (tp != NULL) {
            prom_tagged_make(&tagged[i], tp, r->v[i].name);
            snprintf(names[i], sizeof(names[i]), "%s", tagged[i].name);
        } else {
            prom_name(names[i], sizeof(names[i]), &r->v[i]);
        }
        order[i] = i;
    }
    /* insertion sort by family name; stable so the Envoy order holds within a family */
    for (size_t i = 1; i < n; i++) {
        size_t k = order[i];
        size_t j = i;
        while (j > 0 && strcmp(names[order[j - 1]], names[k]) > 0) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = k;
    }
#define LABELS(extra)                                                                              \
    (tp != NULL ? prom_tagged_labels(out, &tagged[i], extra) : prom_labels(out, x, extra, fixed))
    const char *last = "";
    for (size_t oi = 0; oi < n; oi++) {
        size_t i = order[oi];
        const struct rec *x = &r->v[i];
        if (!rec_visible(x, filter, used_only)) {
            continue;
        }
        if (strcmp(last, names[i]) != 0) {
            const char *type = x->kind == REC_COUNTER ? "counter"
                               : x->kind == REC_GAUGE ? "gauge"
                                                      : "histogram";
            buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", names[i],
                       tp != NULL ? names[i] + 6 : x->stat, names[i], type);
            last = names[i];
        }
        if (x->kind != REC_HIST) {
            buf_append_str(out, names[i]);
            LABELS(NULL);
            buf_printf(out, " %llu\n", (unsigned long long)x->value);
            continue;
        }
        uint64_t cum = 0;
        for (int b = 0; b <= HIST_N_BOUNDS; b++) {
            cum += x->h.buckets[b];
            char le[48];
            if (b < HIST_N_BOUNDS) {
                snprintf(le, sizeof(le), "le=\"%g\"", hist_bounds[b]);
            } else {
                snprintf(le, sizeof(le), "le=\"+Inf\"");
            }
            buf_printf(out, "%s_bucket", names[i]);
            LABELS(le);
            buf_printf(out, " %llu\n", (unsigned long long)cum);
        }
        buf_printf(out, "%s_sum", names[i]);
        LABELS(NULL);
        buf_printf(out, " %g\n", (double)x->h.sum_us / 1000.0);
        buf_printf(out, "%s_count", names[i]);
        LABELS(NULL);
        buf_printf(out, " %llu\n", (unsigned long long)x->h.count);
    }
#undef LABELS
    for (size_t i = 0; tagged != NULL && i < n; i++) {
        buf_deinit(&tagged[i].labels);
    }
    free(tagged);
    tag_producer_free(tp);
    buf_deinit(&fixed_b);
    free(order);
    free(names);
}

/* ---- /reset_counters ---- */

struct stats_baseline {
    size_t n;
    char **names;     /* owned; [n], in collect()'s order (ascending strcmp) */
    uint64_t *values; /* owned; [n] */
};

struct stats_baseline *stats_baseline_take(const struct config *c,
                                           struct stats_block *const *blocks, uint32_t n_blocks,
                                           const struct server_stats_view *srv)
{
    struct recs r = {0};
    collect(&r, c, blocks, n_blocks, srv);
    size_t n = 0;
    for (size_t i = 0; i < r.n; i++) {
        n += r.v[i].kind == REC_COUNTER;
    }
    struct stats_baseline *bl = xcalloc(1, sizeof(*bl));
    bl->names = xcalloc(n ? n : 1, sizeof(*bl->names));
    bl->values = xcalloc(n ? n : 1, sizeof(*bl->values));
    for (size_t i = 0; i < r.n; i++) {
        struct rec *x = &r.v[i];
        if (x->kind == REC_COUNTER) {
            bl->names[bl->n] = x->name; /* taken over: recs_free() skips it */
            bl->values[bl->n] = x->value;
            bl->n++;
            x->name = NULL;
        }
    }
    recs_free(&r);
    return bl;
}

void stats_baseline_free(struct stats_baseline *bl)
{
    if (bl == NULL) {
        return;
    }
    for (size_t i = 0; i < bl->n; i++) {
        free(bl->names[i]);
    }
    free(bl->names);
    free(bl->values);
    free(bl);
}

uint64_t stats_baseline_since(const struct stats_baseline *bl, size_t *cursor, const char *name,
                              uint64_t now)
{
    if (bl == NULL) {
        return now;
    }
    /* Both sides are sorted: a merge walk. A name the baseline lacks (upstream_rq_<code> first
     * seen after the reset) counts from 0; one it has that is gone now is stepped over. */
    while (*cursor < bl->n && strcmp(bl->names[*cursor], name) < 0) {
        (*cursor)++;
    }
    if (*cursor < bl->n && strcmp(bl->names[*cursor], name) == 0) {
        uint64_t base = bl->values[(*cursor)++];
        /* Counters only grow, and a later sum of the workers' blocks is never below an earlier
         * one; clamp anyway rather than wrap. */
        return now > base ? now - base : 0;
    }
    return now;
}

void stats_each(const struct config *c, struct stats_block *const *blocks, uint32_t n_blocks,
                const struct server_stats_view *srv,
                void (*fn)(void *arg, const char *name, enum stat_kind kind, uint64_t value),
                void *arg)
{
    struct recs r = {0};
    collect(&r, c, blocks, n_blocks, srv);
    for (size_t i = 0; i < r.n; i++) {
        const struct rec *x = &r.v[i];
        if (x->kind != REC_HIST) {
            fn(arg, x->name, x->kind == REC_COUNTER ? STAT_KIND_COUNTER : STAT_KIND_GAUGE,
               x->value);
        }
    }
    recs_free(&r);
}

void stats_render(struct buf *out, const struct config *c, struct stats_block *const *blocks,
                  uint32_t n_blocks, const struct server_stats_view *srv, enum stats_format fmt,
                  const struct pcre2_real_code_8 *filter, int used_only,
                  const struct stats_baseline *since)
{
    struct recs r = {0};
    collect(&r, c, blocks, n_blocks, srv);
    size_t cursor = 0;
    for (size_t i = 0; i < r.n; i++) {
        struct rec *x = &r.v[i];
        if (x->kind == REC_COUNTER) {
            x->counted = x->value > 0;
            x->value = stats_baseline_since(since, &cursor, x->name, x->value);
        }
    }
    const pcre2_code *re = (const pcre2_code *)filter;
    switch (fmt) {
    case STATS_TEXT:
        render_text(out, &r, re, used_only);
        break;
    case STATS_JSON:
        render_json(out, &r, re, used_only);
        break;
    case STATS_PROMETHEUS:
        render_prometheus(out, &r, re, used_only, c);
        break;
    }
    recs_free(&r);
}
