/* outlier: Envoy's outlier detection (see outlier.h). The worker half counts results in the
 * endpoint's atomics and asks main to eject when a consecutive-failure threshold is reached;
 * the main half (one `struct outlier` per cluster) decides, ejects, returns hosts to service
 * and runs the periodic success-rate and failure-percentage detectors. Semantics follow
 * Envoy's source/common/upstream/outlier_detection_impl.cc; the code is remora's own. */
#include "proxy/upstream/outlier.h"

#include <ev.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/shared.h"

/* Ejection types (Envoy's OutlierEjectionType); also the od_pending bits for the consecutive
 * ones. */
enum od_type {
    OD_CONSECUTIVE_5XX,
    OD_CONSECUTIVE_GATEWAY_FAILURE,
    OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE,
    OD_SUCCESS_RATE,
    OD_SUCCESS_RATE_LOCAL_ORIGIN,
    OD_FAILURE_PERCENTAGE,
    OD_FAILURE_PERCENTAGE_LOCAL_ORIGIN,
};

#define SR_ONE_REQUEST (1ULL << 32)

/* Main-thread state of one host. */
struct od_host {
    ev_tstamp last_ejection;
    ev_tstamp last_unejection; /* 0: never returned to service */
    uint64_t jitter_ms;
    uint32_t backoff; /* the ejection-time multiplier */
};

struct outlier {
    struct ev_loop *loop; /* borrowed: main's; immutable after outlier_new (workers read it) */
    const struct cluster_cfg *cfg;
    const struct outlier_cfg *o;
    struct cluster_shared *sh;
    ev_async wake;         /* workers: "some od_pending bit is set" */
    ev_timer sweep;        /* every `interval` */
    struct od_host *hosts; /* owned; [cfg->n_endpoints] */
    uint64_t rng;
};

/* ---- pure arithmetic ---- */

uint64_t outlier_ejection_ms(const struct outlier_cfg *c, uint32_t backoff, uint64_t jitter_ms)
{
    uint64_t t = c->base_ejection_time_ms * backoff;
    if (t > c->max_ejection_time_ms) {
        t = c->max_ejection_time_ms;
    }
    return t + jitter_ms;
}

uint32_t outlier_backoff_next(const struct outlier_cfg *c, uint32_t backoff)
{
    /* Grows while base * backoff < max + base, i.e. until one step past the cap. */
    if ((uint64_t)backoff * c->base_ejection_time_ms <
        c->max_ejection_time_ms + c->base_ejection_time_ms) {
        return backoff + 1;
    }
    return backoff;
}

bool outlier_may_eject(const struct outlier_cfg *c, uint32_t active, uint32_t n_hosts)
{
    if (n_hosts == 0) {
        return false;
    }
    if (c->always_eject_one_host && active == 0) {
        return true;
    }
    /* 100 * (active + 1) / n_hosts <= max_percent, exactly */
    return 100ULL * (active + 1) <= (uint64_t)c->max_ejection_percent * n_hosts;
}

void outlier_success_rate_threshold(const double *rates, uint32_t n, uint32_t stdev_factor,
                                    double *mean, double *threshold)
{
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        sum += rates[i];
    }
    *mean = n ? sum / n : 0;
    double var = 0;
    for (uint32_t i = 0; i < n; i++) {
        var += (rates[i] - *mean) * (rates[i] - *mean);
    }
    var = n ? var / n : 0;
    *threshold = *mean - (stdev_factor / 1000.0) * sqrt(var);
}

/* ---- worker half ---- */

/* A counter back to 0 on success, written only when it is not 0 already: in the common case
 * (a healthy host) a success costs one load and no store. */
static inline void reset_counter(_Atomic uint32_t *c)
{
    if (atomic_load_explicit(c, memory_order_relaxed) != 0) {
        atomic_store_explicit(c, 0, memory_order_relaxed);
    }
}

/* One more failure; true when this one is the threshold-th in a row (exactly: the run is
 * reported once; main resets the counter). A threshold of 0 never fires. */
static inline bool count_failure(_Atomic uint32_t *c, uint32_t threshold)
{
    return atomic_fetch_add_explicit(c, 1, memory_order_relaxed) + 1 == threshold;
}

static void request_ejection(struct cluster_shared *sh, struct endpoint_shared *es,
                             enum od_type type)
{
    atomic_fetch_or_explicit(&es->od_pending, 1u << type, memory_order_relaxed);
    atomic_store_explicit(&sh->od_pending, 1, memory_order_release);
    ev_async_send(sh->od->loop, &sh->od->wake);
}

static void put_code(struct cluster_shared *sh, struct endpoint_shared *es,
                     const struct outlier_cfg *o, int code)
{
    bool is_5xx = code >= 500 && code < 600;
    atomic_fetch_add_explicit(&es->sr_external, SR_ONE_REQUEST | (is_5xx ? 0 : 1),
                              memory_order_relaxed);
    if (!is_5xx) {
        reset_counter(&es->consecutive_5xx);
        reset_counter(&es->consecutive_gateway_failure);
        return;
    }
    if (code == 502 || code == 503 || code == 504) {
        if (count_failure(&es->consecutive_gateway_failure, o->consecutive_gateway_failure)) {
            request_ejection(sh, es, OD_CONSECUTIVE_GATEWAY_FAILURE);
        }
    } else {
        reset_counter(&es->consecutive_gateway_failure);
    }
    if (count_failure(&es->consecutive_5xx, o->consecutive_5xx)) {
        request_ejection(sh, es, OD_CONSECUTIVE_5XX);
    }
}

void outlier_put(struct cluster_rt *c, struct endpoint_rt *ep, enum outlier_result r, int code)
{
    const struct outlier_cfg *o = c->cfg->outlier;
    struct cluster_shared *sh = c->shared;
    if (o == NULL || sh == NULL || sh->od == NULL || ep->shared == NULL) {
        return;
    }
    struct endpoint_shared *es = ep->shared;
    if (!o->split_external_local_origin_errors) {
        /* Everything is one stream of HTTP codes; local failures count as the code Envoy maps
         * them to, and a bare "connected" is not a result. */
        switch (r) {
        case OUTLIER_RESPONSE:
            put_code(sh, es, o, code);
            break;
        case OUTLIER_LOCAL_CONNECT_FAILED:
            put_code(sh, es, o, 503);
            break;
        case OUTLIER_LOCAL_TIMEOUT:
            put_code(sh, es, o, 504);
            break;
        case OUTLIER_LOCAL_CONNECT_SUCCESS:
            break;
        }
        return;
    }
    switch (r) {
    case OUTLIER_RESPONSE:
        put_code(sh, es, o, code);
        break;
    case OUTLIER_LOCAL_CONNECT_SUCCESS:
        atomic_fetch_add_explicit(&es->sr_local, SR_ONE_REQUEST | 1, memory_order_relaxed);
        reset_counter(&es->consecutive_local_origin_failure);
        break;
    case OUTLIER_LOCAL_CONNECT_FAILED:
    case OUTLIER_LOCAL_TIMEOUT:
        atomic_fetch_add_explicit(&es->sr_local, SR_ONE_REQUEST, memory_order_relaxed);
        if (count_failure(&es->consecutive_local_origin_failure,
                          o->consecutive_local_origin_failure)) {
            request_ejection(sh, es, OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE);
        }
        break;
    }
}

/* ---- main half ---- */

static uint64_t od_rand(struct outlier *od)
{
    return rand_next(&od->rng);
}

static uint32_t health_bits(const struct outlier *od, uint32_t i)
{
    return atomic_load_explicit(&od->sh->eps[i].health, memory_order_relaxed);
}

static void health_changed(struct outlier *od)
{
    atomic_fetch_add_explicit(&od->sh->health_gen, 1, memory_order_release);
}

static uint32_t enforcing(const struct outlier_cfg *o, enum od_type t)
{
    switch (t) {
    case OD_CONSECUTIVE_5XX:
        return o->enforcing_consecutive_5xx;
    case OD_CONSECUTIVE_GATEWAY_FAILURE:
        return o->enforcing_consecutive_gateway_failure;
    case OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        return o->enforcing_consecutive_local_origin_failure;
    case OD_SUCCESS_RATE:
        return o->enforcing_success_rate;
    case OD_SUCCESS_RATE_LOCAL_ORIGIN:
        return o->enforcing_local_origin_success_rate;
    case OD_FAILURE_PERCENTAGE:
        return o->enforcing_failure_percentage;
    case OD_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        return o->enforcing_failure_percentage_local_origin;
    }
    return 0;
}

static void count_detected(struct outlier_stats *st, enum od_type t)
{
    switch (t) {
    case OD_CONSECUTIVE_5XX:
        STAT_INC(st->ejections_detected_consecutive_5xx);
        break;
    case OD_CONSECUTIVE_GATEWAY_FAILURE:
        STAT_INC(st->ejections_detected_consecutive_gateway_failure);
        break;
    case OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        STAT_INC(st->ejections_detected_consecutive_local_origin_failure);
        break;
    case OD_SUCCESS_RATE:
        STAT_INC(st->ejections_detected_success_rate);
        break;
    case OD_SUCCESS_RATE_LOCAL_ORIGIN:
        STAT_INC(st->ejections_detected_local_origin_success_rate);
        break;
    case OD_FAILURE_PERCENTAGE:
        STAT_INC(st->ejections_detected_failure_percentage);
        break;
    case OD_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        STAT_INC(st->ejections_detected_local_origin_failure_percentage);
        break;
    }
}

static void count_enforced(struct outlier_stats *st, enum od_type t)
{
    STAT_INC(st->ejections_enforced_total);
    switch (t) {
    case OD_CONSECUTIVE_5XX:
        STAT_INC(st->ejections_enforced_consecutive_5xx);
        break;
    case OD_CONSECUTIVE_GATEWAY_FAILURE:
        STAT_INC(st->ejections_enforced_consecutive_gateway_failure);
        break;
    case OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        STAT_INC(st->ejections_enforced_consecutive_local_origin_failure);
        break;
    case OD_SUCCESS_RATE:
        STAT_INC(st->ejections_enforced_success_rate);
        break;
    case OD_SUCCESS_RATE_LOCAL_ORIGIN:
        STAT_INC(st->ejections_enforced_local_origin_success_rate);
        break;
    case OD_FAILURE_PERCENTAGE:
        STAT_INC(st->ejections_enforced_failure_percentage);
        break;
    case OD_FAILURE_PERCENTAGE_LOCAL_ORIGIN:
        STAT_INC(st->ejections_enforced_local_origin_failure_percentage);
        break;
    }
}

static const char *type_name(enum od_type t)
{
    static const char *const names[] = {
        "consecutive_5xx",
        "consecutive_gateway_failure",
        "consecutive_local_origin_failure",
        "success_rate",
        "local_origin_success_rate",
        "failure_percentage",
        "local_origin_failure_percentage",
    };
    return names[t];
}

/* Envoy's ejectHost: the max_ejection_percent check, then the enforcing_* draw. */
static void eject(struct outlier *od, uint32_t i, enum od_type t)
{
    struct outlier_stats *st = &od->sh->od_stats;
    uint32_t active = (uint32_t)stat_get(&st->ejections_active);
    if (!outlier_may_eject(od->o, active, od->cfg->n_endpoints)) {
        STAT_INC(st->ejections_overflow);
        return;
    }
    if (t == OD_CONSECUTIVE_5XX || t == OD_SUCCESS_RATE) {
        STAT_INC(st->ejections_total); /* deprecated, kept as Envoy keeps it */
    }
    if (od_rand(od) % 100 >= enforcing(od->o, t)) {
        return; /* detected, not enforced */
    }
    struct od_host *h = &od->hosts[i];
    struct endpoint_shared *es = &od->sh->eps[i];
    STAT_INC(st->ejections_active);
    count_enforced(st, t);
    es->n_ejections++;
    h->last_ejection = ev_now(od->loop);
    h->jitter_ms = od_rand(od) % (od->o->max_ejection_time_jitter_ms + 1);
    h->backoff = outlier_backoff_next(od->o, h->backoff);
    atomic_fetch_or_explicit(&es->health, HEALTH_F_FAILED_OUTLIER_CHECK, memory_order_relaxed);
    health_changed(od);
    LOG_I("outlier detection: cluster '%.*s': ejected %.*s (%s) for %llu ms",
          STR_FMT(od->cfg->name), STR_FMT(od->cfg->endpoints[i].addr.text), type_name(t),
          (unsigned long long)outlier_ejection_ms(od->o, h->backoff, h->jitter_ms));
}

static void uneject(struct outlier *od, uint32_t i)
{
    struct endpoint_shared *es = &od->sh->eps[i];
    STAT_DEC(od->sh->od_stats.ejections_active);
    /* Fresh counters, so that a few new errors do not eject again at once. */
    atomic_store_explicit(&es->consecutive_5xx, 0, memory_order_relaxed);
    atomic_store_explicit(&es->consecutive_gateway_failure, 0, memory_order_relaxed);
    atomic_store_explicit(&es->consecutive_local_origin_failure, 0, memory_order_relaxed);
    od->hosts[i].last_unejection = ev_now(od->loop);
    atomic_fetch_and_explicit(&es->health, ~(uint32_t)HEALTH_F_FAILED_OUTLIER_CHECK,
                              memory_order_relaxed);
    health_changed(od);
    LOG_I("outlier detection: cluster '%.*s': %.*s back in service", STR_FMT(od->cfg->name),
          STR_FMT(od->cfg->endpoints[i].addr.text));
}

/* A worker saw the threshold-th consecutive failure of type `t` (Envoy's
 * onConsecutiveErrorWorker). */
static void on_consecutive(struct outlier *od, uint32_t i, enum od_type t)
{
    if (health_bits(od, i) & HEALTH_F_FAILED_OUTLIER_CHECK) {
        return;
    }
    count_detected(&od->sh->od_stats, t);
    eject(od, i, t);
    struct endpoint_shared *es = &od->sh->eps[i];
    switch (t) {
    case OD_CONSECUTIVE_5XX:
        STAT_INC(od->sh->od_stats.ejections_consecutive_5xx); /* deprecated */
        atomic_store_explicit(&es->consecutive_5xx, 0, memory_order_relaxed);
        break;
    case OD_CONSECUTIVE_GATEWAY_FAILURE:
        atomic_store_explicit(&es->consecutive_gateway_failure, 0, memory_order_relaxed);
        break;
    case OD_CONSECUTIVE_LOCAL_ORIGIN_FAILURE:
        atomic_store_explicit(&es->consecutive_local_origin_failure, 0, memory_order_relaxed);
        break;
    default:
        break;
    }
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct outlier *od = a->data;
    if (!atomic_exchange_explicit(&od->sh->od_pending, 0, memory_order_acquire)) {
        return;
    }
    for (uint32_t i = 0; i < od->cfg->n_endpoints; i++) {
        uint32_t bits =
            atomic_exchange_explicit(&od->sh->eps[i].od_pending, 0, memory_order_relaxed);
        for (uint32_t t = 0; bits != 0; t++) {
            if (bits & (1u << t)) {
                bits &= ~(1u << t);
                on_consecutive(od, i, (enum od_type)t);
            }
        }
    }
}

/* The success-rate and failure-percentage detectors over one interval's counts (Envoy's
 * processSuccessRateEjections). `local` selects the local-origin monitor. */
static void success_rate_sweep(struct outlier *od, const uint64_t *counts, bool local)
{
    const struct outlier_cfg *o = od->o;
    struct cluster_shared *sh = od->sh;
    uint32_t n = od->cfg->n_endpoints;
    double *avg = local ? &sh->local_sr_average : &sh->sr_average;
    double *thr = local ? &sh->local_sr_threshold : &sh->sr_threshold;
    *avg = -1;
    *thr = -1;
    if (n < o->success_rate_minimum_hosts && n < o->failure_percentage_minimum_hosts) {
        return;
    }
    uint32_t min_volume = o->success_rate_request_volume < o->failure_percentage_request_volume
                              ? o->success_rate_request_volume
                              : o->failure_percentage_request_volume;
    double *rates = xcalloc(n ? n : 1, sizeof(*rates));
    uint32_t *sr_idx = xcalloc(n ? n : 1, sizeof(*sr_idx));
    uint32_t *fp_idx = xcalloc(n ? n : 1, sizeof(*fp_idx));
    double *sr_rates = xcalloc(n ? n : 1, sizeof(*sr_rates));
    uint32_t n_sr = 0, n_fp = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (health_bits(od, i) & HEALTH_F_FAILED_OUTLIER_CHECK) {
            continue;
        }
        uint64_t total = counts[i] >> 32;
        uint64_t ok = counts[i] & 0xffffffffu;
        if (total == 0) {
            continue;
        }
        rates[i] = (double)(ok > total ? total : ok) * 100.0 / (double)total;
        if (total >= min_volume) {
            if (local) {
                sh->eps[i].local_success_rate = rates[i];
            } else {
                sh->eps[i].success_rate = rates[i];
            }
        }
        if (total >= o->success_rate_request_volume) {
            sr_rates[n_sr] = rates[i];
            sr_idx[n_sr++] = i;
        }
        if (total >= o->failure_percentage_request_volume) {
            fp_idx[n_fp++] = i;
        }
    }
    if (n_sr > 0 && n_sr >= o->success_rate_minimum_hosts) {
        outlier_success_rate_threshold(sr_rates, n_sr, o->success_rate_stdev_factor, avg, thr);
        for (uint32_t k = 0; k < n_sr; k++) {
            if (sr_rates[k] < *thr) {
                enum od_type t = local ? OD_SUCCESS_RATE_LOCAL_ORIGIN : OD_SUCCESS_RATE;
                STAT_INC(sh->od_stats.ejections_success_rate); /* deprecated */
                count_detected(&sh->od_stats, t);
                eject(od, sr_idx[k], t);
            }
        }
    }
    if (n_fp > 0 && n_fp >= o->failure_percentage_minimum_hosts) {
        for (uint32_t k = 0; k < n_fp; k++) {
            uint32_t i = fp_idx[k];
            if (100.0 - rates[i] >= o->failure_percentage_threshold &&
                !(health_bits(od, i) & HEALTH_F_FAILED_OUTLIER_CHECK)) {
                enum od_type t = local ? OD_FAILURE_PERCENTAGE_LOCAL_ORIGIN : OD_FAILURE_PERCENTAGE;
                count_detected(&sh->od_stats, t);
                eject(od, i, t);
            }
        }
    }
    free(rates);
    free(sr_idx);
    free(fp_idx);
    free(sr_rates);
}

/* Every `interval`: return hosts whose time is up, run the rate detectors on the interval that
 * just ended, and let the backoff of hosts that stayed in service decay (Envoy's
 * onIntervalTimer). */
static void sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct outlier *od = t->data;
    uint32_t n = od->cfg->n_endpoints;
    ev_tstamp now = ev_now(loop);
    uint64_t *ext = xcalloc(n ? n : 1, sizeof(*ext));
    uint64_t *loc = xcalloc(n ? n : 1, sizeof(*loc));
    for (uint32_t i = 0; i < n; i++) {
        struct od_host *h = &od->hosts[i];
        struct endpoint_shared *es = &od->sh->eps[i];
        if (health_bits(od, i) & HEALTH_F_FAILED_OUTLIER_CHECK) {
            double out_ms = (double)outlier_ejection_ms(od->o, h->backoff, h->jitter_ms);
            if ((now - h->last_ejection) * 1000.0 >= out_ms) {
                uneject(od, i);
            }
        }
        ext[i] = atomic_exchange_explicit(&es->sr_external, 0, memory_order_relaxed);
        loc[i] = atomic_exchange_explicit(&es->sr_local, 0, memory_order_relaxed);
        es->success_rate = -1;
        es->local_success_rate = -1;
    }
    success_rate_sweep(od, ext, false);
    success_rate_sweep(od, loc, true);
    for (uint32_t i = 0; i < n; i++) {
        struct od_host *h = &od->hosts[i];
        if (!(health_bits(od, i) & HEALTH_F_FAILED_OUTLIER_CHECK) && h->last_unejection > 0 &&
            (now - h->last_unejection) * 1000.0 >= (double)od->o->interval_ms && h->backoff > 0) {
            h->backoff--;
        }
    }
    free(ext);
    free(loc);
}

struct outlier *outlier_new(struct ev_loop *loop, const struct cluster_cfg *cfg,
                            struct cluster_shared *sh, uint64_t seed)
{
    struct outlier *od = xcalloc(1, sizeof(*od));
    od->loop = loop;
    od->cfg = cfg;
    od->o = cfg->outlier;
    od->sh = sh;
    od->rng = seed | 1;
    od->hosts = xcalloc(cfg->n_endpoints ? cfg->n_endpoints : 1, sizeof(*od->hosts));
    sh->sr_average = sh->sr_threshold = -1;
    sh->local_sr_average = sh->local_sr_threshold = -1;
    for (uint32_t i = 0; i < sh->n_eps; i++) {
        sh->eps[i].success_rate = -1;
        sh->eps[i].local_success_rate = -1;
    }
    ev_async_init(&od->wake, wake_cb);
    od->wake.data = od;
    ev_async_start(loop, &od->wake);
    double every = (double)od->o->interval_ms / 1000.0;
    ev_timer_init(&od->sweep, sweep_cb, every, every);
    od->sweep.data = od;
    ev_timer_start(loop, &od->sweep);
    sh->od = od;
    return od;
}

void outlier_free(struct outlier *od)
{
    if (od == NULL) {
        return;
    }
    ev_async_stop(od->loop, &od->wake);
    ev_timer_stop(od->loop, &od->sweep);
    od->sh->od = NULL;
    free(od->hosts);
    free(od);
}

void outlier_adopt(struct outlier *od, uint32_t ep, const struct outlier *from, uint32_t from_ep)
{
    od->hosts[ep] = from->hosts[from_ep];
    struct endpoint_shared *e = &od->sh->eps[ep];
    const struct endpoint_shared *f = &from->sh->eps[from_ep];
    e->n_ejections = f->n_ejections;
    e->success_rate = f->success_rate;
    e->local_success_rate = f->local_success_rate;
#define COPY_ATOMIC(field)                                                                         \
    atomic_store_explicit(                                                                         \
        &e->field, atomic_load_explicit((_Atomic uint32_t *)&f->field, memory_order_relaxed),      \
        memory_order_relaxed)
    COPY_ATOMIC(consecutive_5xx);
    COPY_ATOMIC(consecutive_gateway_failure);
    COPY_ATOMIC(consecutive_local_origin_failure);
#undef COPY_ATOMIC
    uint32_t bits = atomic_load_explicit((_Atomic uint32_t *)&f->health, memory_order_relaxed);
    if (bits & HEALTH_F_FAILED_OUTLIER_CHECK) {
        /* still ejected: the sweep returns it when its time is up, as it would have */
        atomic_fetch_or_explicit(&e->health, HEALTH_F_FAILED_OUTLIER_CHECK, memory_order_relaxed);
        STAT_INC(od->sh->od_stats.ejections_active);
        atomic_fetch_add_explicit(&od->sh->health_gen, 1, memory_order_release);
    }
}

void outlier_on_hc_success(struct outlier *od, uint32_t ep)
{
    if (od == NULL || !od->o->successful_active_health_check_uneject_host ||
        ep >= od->cfg->n_endpoints) {
        return;
    }
    uint32_t bits = health_bits(od, ep);
    if ((bits & HEALTH_F_FAILED_OUTLIER_CHECK) && !(bits & HEALTH_F_FAILED_ACTIVE_HC)) {
        uneject(od, ep);
    }
}
