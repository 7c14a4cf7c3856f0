/* health_check: envoy.filters.http.health_check
 * (envoy.extensions.filters.http.health_check.v3.HealthCheck). A request whose head matches
 * `headers` (HeaderMatchers, usually ":path" exact) is a health check: the stream is marked
 * (s->is_health_check, Envoy's StreamInfo healthCheck), its span is not reported, and:
 *   - pass_through_mode false: the filter answers it: 503 while the server fails health checks
 *     (POST /healthcheck/fail: the worker's drain.hc_failed), 503 when a cluster of
 *     cluster_min_healthy_percentages has fewer healthy hosts than its percentage (or does not
 *     exist, or is empty with a percentage above 0), else 200; flag LH on a failure;
 *   - pass_through_mode true: 503 while the server fails health checks; with cache_time, the
 *     status (and x-envoy-degraded) of the last upstream answer, for cache_time after it;
 *     otherwise the request goes upstream and its answer goes back.
 * Responses to health checks carry x-envoy-upstream-healthchecked-cluster (the node's cluster,
 * when set), and while the server fails health checks every response through this filter carries
 * x-envoy-immediate-health-check-fail: true, so that a downstream Envoy's (or remora's) router
 * marks this host failed at once. Stats http.<prefix>.health_check.* (Envoy's names). The answer
 * cache is shared by the workers (snapshot memory, atomics only). */
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "envoy/extensions/filters/http/health_check/v3/health_check.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/headers.h"
#include "proxy/http/router.h"
#include "proxy/http/stream.h"
#include "proxy/tracing/tracing.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/shared.h"
#include "proxy/worker.h"

#define PbHealthCheck Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck
#define PbMinHealthy                                                                               \
    Envoy__Extensions__Filters__Http__HealthCheck__V3__HealthCheck__ClusterMinHealthyPercentagesEntry

struct hc_min_healthy {
    struct str cluster;
    double percent; /* 0..100 */
};

/* The last upstream answer in pass-through mode: (expiry ms << 11) | degraded << 10 | status.
 * 0: nothing cached. */
struct hc_cache {
    _Atomic uint64_t word; /* mutable: atomics only */
};

struct hc_cfg {
    bool pass_through;
    uint64_t cache_ms; /* 0: no cache */
    const struct header_matcher *headers;
    uint32_t n_headers;
    const struct hc_min_healthy *min_healthy;
    uint32_t n_min_healthy;
    struct str node_cluster; /* x-envoy-upstream-healthchecked-cluster */
    struct hc_cache *cache;  /* snapshot memory, shared by the workers; NULL without cache_ms */
    uint32_t st_request_total, st_failed, st_ok, st_cached, st_not_found, st_empty, st_unhealthy;
};

struct hc_state {
    bool is_hc;     /* this request is a health check */
    bool answered;  /* the filter answered it (its reply passes on_response_headers too) */
    bool is_cached; /* ... from the cache */
    bool degraded;  /* ... with x-envoy-degraded */
};

#define HC_STATUS_BITS 10u

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static bool server_failing(const struct filter *f)
{
    return f->s->w->drain.hc_failed;
}

/* The cluster named `name` on this worker (the bootstrap's, else a CDS one): healthy and total
 * host counts. False when there is no such cluster. Health checks only: a lookup by name. */
static bool cluster_health(struct worker *w, struct str name, uint64_t *healthy, uint64_t *total)
{
    const struct cluster_cfg *cc = config_find_cluster(w->cfg, name);
    struct cds_pin *pin = NULL;
    if (cc == NULL || cc->dyn_rt != NULL) {
        cc = worker_cds_find(w, name, &pin);
        if (cc == NULL) {
            return false;
        }
    }
    const struct cluster_rt *rt = cc->dyn_rt != NULL ? &cc->dyn_rt[w->id] : &w->clusters[cc->index];
    const struct cluster_shared *sh = rt->shared;
    *total = rt->cfg->n_endpoints;
    *healthy = *total;
    if (sh != NULL) {
        *healthy = 0;
        for (uint32_t e = 0; e < sh->n_eps && e < *total; e++) {
            uint32_t bits = atomic_load_explicit(&sh->eps[e].health, memory_order_relaxed);
            *healthy += (bits & HEALTH_F_UNHEALTHY) == 0;
        }
    }
    worker_cds_release(w, pin);
    return true;
}

/* Envoy's onComplete without a cache: 503 when a listed cluster is missing, empty (with a
 * percentage above 0) or below its percentage of healthy hosts. */
static int clusters_status(struct filter *f, const struct hc_cfg *c)
{
    for (uint32_t i = 0; i < c->n_min_healthy; i++) {
        const struct hc_min_healthy *m = &c->min_healthy[i];
        uint64_t healthy, total;
        if (!cluster_health(f->s->w, m->cluster, &healthy, &total)) {
            filter_stat_add(f, c->st_not_found, 1);
            return 503;
        }
        if (total == 0) {
            if (m->percent == 0.0) {
                continue;
            }
            filter_stat_add(f, c->st_empty, 1);
            return 503;
        }
        if ((double)healthy * 100.0 < (double)total * m->percent) {
            filter_stat_add(f, c->st_unhealthy, 1);
            return 503;
        }
    }
    return 200;
}

static enum filter_status hc_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct hc_cfg *c = f->cfg;
    struct hc_state *st = f->state;
    struct stream *s = f->s;
    struct route_req rq = {.method = s->method,
                           .path = s->path,
                           .authority = s->authority,
                           .scheme = STR_LIT("http"),
                           .headers = h,
                           .arena = &s->arena};
    if (!router_headers_match(c->headers, c->n_headers, &rq)) {
        return FILTER_CONTINUE;
    }
    st->is_hc = true;
    s->is_health_check = true;
    if (s->span != NULL) {
        s->span->sampled = false; /* Envoy: health checks are not reported to the tracer */
    }
    filter_stat_add(f, c->st_request_total, 1);
    int status = 0;
    if (server_failing(f)) {
        status = 503;
    } else if (c->cache != NULL) {
        uint64_t w = atomic_load_explicit(&c->cache->word, memory_order_relaxed);
        if (w != 0 && (w >> (HC_STATUS_BITS + 1)) > now_ms()) {
            status = (int)(w & ((1u << HC_STATUS_BITS) - 1));
            st->degraded = (w >> HC_STATUS_BITS) & 1u;
            st->is_cached = true;
            filter_stat_add(f, c->st_cached, 1);
        }
    }
    if (status == 0 && !c->pass_through) {
        status = clusters_status(f, c);
    }
    if (status == 0) {
        return FILTER_CONTINUE; /* pass through: the upstream answers */
    }
    st->answered = true;
    filter_local_reply(f, status, "", status / 100 == 2 ? 0 : RF_LH);
    return FILTER_STOP;
}

static enum filter_status hc_response_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct hc_cfg *c = f->cfg;
    struct hc_state *st = f->state;
    struct stream *s = f->s;
    if (st->is_hc) {
        filter_stat_add(f, s->status / 100 == 2 ? c->st_ok : c->st_failed, 1);
        if (c->cache != NULL && !st->answered && s->status > 0 &&
            s->status < (1 << HC_STATUS_BITS)) {
            bool degraded = headers_get(h, STR_LIT("x-envoy-degraded")) != NULL;
            uint64_t w = ((now_ms() + c->cache_ms) << (HC_STATUS_BITS + 1)) |
                         ((uint64_t)degraded << HC_STATUS_BITS) | (uint64_t)s->status;
            atomic_store_explicit(&c->cache->word, w, memory_order_relaxed);
        }
        if (st->is_cached && st->degraded) {
            headers_set(h, STR_LIT("x-envoy-degraded"), STR_LIT(""));
        }
        if (c->node_cluster.len > 0) {
            headers_set(h, STR_LIT("x-envoy-upstream-healthchecked-cluster"), c->node_cluster);
        }
    }
    if (server_failing(f)) {
        headers_set(h, STR_LIT("x-envoy-immediate-health-check-fail"), STR_LIT("true"));
    }
    return FILTER_CONTINUE;
}

/* ---- config ---- */

static int min_healthy(struct filter_build *fb, PbMinHealthy *const *v, size_t n, struct hc_cfg *c)
{
    struct hc_min_healthy *out = ARENA_NEW_N(fb->a, struct hc_min_healthy, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        const char *name = v[i]->key ? v[i]->key : "";
        size_t mark = filter_build_at(fb, ".cluster_min_healthy_percentages.%s", name);
        int rc = 0;
        double pct = v[i]->value != NULL ? v[i]->value->value : 0.0;
        if (name[0] == '\0') {
            rc = filter_build_fail(fb, NULL, "a cluster name is required");
        } else if (!isfinite(pct) || pct < 0.0 || pct > 100.0) {
            rc = filter_build_fail(fb, "value", "must be between 0 and 100, not %g", pct);
        }
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
        out[i].cluster = arena_strdup(fb->a, str_from_c(name));
        out[i].percent = pct;
    }
    c->min_healthy = out;
    c->n_min_healthy = (uint32_t)n;
    return 0;
}

static int hc_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbHealthCheck *m = (const PbHealthCheck *)pb;
    struct hc_cfg *c = ARENA_NEW(fb->a, struct hc_cfg);
    if (m->pass_through_mode == NULL) {
        return filter_build_fail(fb, "pass_through_mode", "required");
    }
    c->pass_through = m->pass_through_mode->value;
    int rc = 0;
    if (m->cache_time != NULL) {
        if (!c->pass_through) {
            /* Envoy: "cache_time_ms must not be set when path_through_mode is disabled" */
            return filter_build_fail(fb, "cache_time", "only allowed with pass_through_mode true");
        }
        if ((rc = filter_build_duration_ms(fb, "cache_time", m->cache_time, true, &c->cache_ms)) !=
            0) {
            return rc;
        }
        if (c->cache_ms > (UINT64_C(1) << 40)) {
            return filter_build_fail(fb, "cache_time", "too long");
        }
        c->cache = ARENA_NEW(fb->a, struct hc_cache);
    }
    if ((rc = filter_build_header_matchers(fb, "headers", m->headers, m->n_headers, &c->headers,
                                           &c->n_headers)) != 0) {
        return rc;
    }
    if ((rc = min_healthy(fb, m->cluster_min_healthy_percentages,
                          m->n_cluster_min_healthy_percentages, c)) != 0) {
        return rc;
    }
    c->node_cluster = fb->c->node_cluster;
    const char *tag = "envoy_http_conn_manager_prefix";
    struct str p = fb->stat_prefix;
    c->st_request_total =
        filter_build_stat(fb, "http", tag, p, "health_check.request_total", false);
    c->st_failed = filter_build_stat(fb, "http", tag, p, "health_check.failed", false);
    c->st_ok = filter_build_stat(fb, "http", tag, p, "health_check.ok", false);
    c->st_cached = filter_build_stat(fb, "http", tag, p, "health_check.cached_response", false);
    c->st_not_found =
        filter_build_stat(fb, "http", tag, p, "health_check.failed_cluster_not_found", false);
    c->st_empty = filter_build_stat(fb, "http", tag, p, "health_check.failed_cluster_empty", false);
    c->st_unhealthy =
        filter_build_stat(fb, "http", tag, p, "health_check.failed_cluster_unhealthy", false);
    *out = c;
    return 0;
}

const struct filter_ops health_check_filter_ops = {
    .name = "envoy.filters.http.health_check",
    .config_type = &envoy__extensions__filters__http__health_check__v3__health_check__descriptor,
    .state_size = sizeof(struct hc_state),
    .config_new = hc_config_new,
    .on_request_headers = hc_request_headers,
    .on_response_headers = hc_response_headers,
};
