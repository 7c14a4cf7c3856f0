/* hostset: per-worker priority/health view of a cluster and Envoy's priority-load and panic
 * arithmetic (see hostset.h). Rebuilt only when main moved cluster_shared.health_gen; the
 * per-priority `all` lists never change and are laid out once at init. Each set carries the
 * state of weighted picks (lb_sched.h), built with it. */
#include "proxy/upstream/hostset.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/upstream/lb_sched.h"
#include "proxy/upstream/shared.h"

/* Priorities are capped at 128 by config validation; this bounds the stack arrays below. */
#define HOSTSET_MAX_PRIO 129

uint32_t hostset_priority_health(uint64_t healthy, uint64_t total, uint32_t overprovisioning)
{
    if (total == 0) {
        return 0;
    }
    uint64_t h = (uint64_t)overprovisioning * healthy / total;
    return h > 100 ? 100 : (uint32_t)h;
}

bool hostset_priority_panic(uint64_t healthy, uint64_t total, uint32_t threshold)
{
    /* Envoy: 100.0 * healthy / total < threshold, with 0% for an empty priority. Compared
     * exactly in integers. */
    if (total == 0) {
        return threshold > 0;
    }
    return 100 * healthy < (uint64_t)threshold * total;
}

void hostset_compute(uint32_t n, const uint64_t *healthy, const uint64_t *total,
                     uint32_t overprovisioning, uint32_t threshold, uint32_t *health,
                     uint32_t *load, bool *panic)
{
    uint32_t sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        health[i] = hostset_priority_health(healthy[i], total[i], overprovisioning);
        sum += health[i];
        load[i] = 0;
        panic[i] = false;
    }
    uint32_t normalized = sum > 100 ? 100 : sum;
    if (normalized > 0) {
        uint32_t left = 100;
        int first = -1;
        for (uint32_t i = 0; i < n; i++) {
            if (health[i] > 0 && first < 0) {
                first = (int)i;
            }
            uint32_t l = health[i] * 100 / normalized;
            load[i] = l < left ? l : left;
            left -= load[i];
        }
        if (left > 0 && first >= 0) {
            load[first] += left; /* rounding leftovers go to the first available priority */
        }
    }
    if (n == 0) {
        return;
    }
    if (threshold == 0 && normalized == 0) {
        load[0] = 100; /* nothing healthy and panic disabled: P0 gets the (failing) picks */
        return;
    }
    bool total_panic = true;
    for (uint32_t i = 0; i < n; i++) {
        /* A fully available system never panics, whatever one priority looks like. */
        panic[i] = normalized < 100 && hostset_priority_panic(healthy[i], total[i], threshold);
        total_panic = total_panic && panic[i];
    }
    if (!total_panic) {
        return;
    }
    /* Total panic: spread by host counts, ignoring health. */
    uint64_t all = 0;
    for (uint32_t i = 0; i < n; i++) {
        all += total[i];
    }
    for (uint32_t i = 0; i < n; i++) {
        load[i] = 0;
    }
    if (all == 0) {
        load[0] = 100;
        return;
    }
    uint32_t left = 100;
    int first = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (first < 0 && total[i] > 0) {
            first = (int)i;
        }
        load[i] = (uint32_t)(100 * total[i] / all);
        left -= load[i];
    }
    load[first] += left;
}

static void set_weights(struct lb_set *s, const struct cluster_cfg *cfg)
{
    s->total_weight = 0;
    s->equal_weights = true;
    for (uint32_t k = 0; k < s->n; k++) {
        uint32_t w = cfg->endpoints[s->idx[k]].weight;
        s->total_weight += w;
        if (w != cfg->endpoints[s->idx[0]].weight) {
            s->equal_weights = false;
        }
    }
    lb_sched_build(s, cfg);
}

/* Whether the endpoints' weights differ (else no set needs weighted pick state). */
static bool weights_differ(const struct cluster_cfg *cfg)
{
    for (uint32_t i = 1; i < cfg->n_endpoints; i++) {
        if (cfg->endpoints[i].weight != cfg->endpoints[0].weight) {
            return true;
        }
    }
    return false;
}

static uint32_t prio_of(const struct hostset *h, const struct endpoint_cfg *ep)
{
    return ep->priority < h->n_prio ? ep->priority : h->n_prio - 1;
}

void hostset_init(struct hostset *h, const struct cluster_cfg *cfg, const struct cluster_shared *sh)
{
    memset(h, 0, sizeof(*h));
    uint32_t n = cfg->n_endpoints;
    h->n_prio = cfg->n_priorities > 0 ? cfg->n_priorities : 1;
    if (h->n_prio > HOSTSET_MAX_PRIO) {
        h->n_prio = HOSTSET_MAX_PRIO;
    }
    h->prio = xcalloc(h->n_prio, sizeof(*h->prio));
    h->buf = xcalloc(2 * (size_t)(n ? n : 1), sizeof(*h->buf));
    if (weights_differ(cfg)) {
        if (cfg->lb == LB_RANDOM) {
            h->cum_buf = xcalloc(2 * (size_t)n, sizeof(*h->cum_buf));
        } else if (cfg->lb == LB_ROUND_ROBIN || cfg->lb == LB_LEAST_REQUEST) {
            h->edf_buf = xcalloc(2 * (size_t)n, sizeof(*h->edf_buf));
        }
    }
    /* Lay out each priority's `all` list in buf[0..n) and reserve as much for its `healthy`
     * list in buf[n..2n). */
    uint32_t *count = xcalloc(h->n_prio, sizeof(*count));
    for (uint32_t i = 0; i < n; i++) {
        count[prio_of(h, &cfg->endpoints[i])]++;
    }
    uint32_t off = 0;
    for (uint32_t p = 0; p < h->n_prio; p++) {
        h->prio[p].all.idx = h->buf + off;
        h->prio[p].healthy.idx = h->buf + n + off;
        if (h->cum_buf != NULL) {
            h->prio[p].all.cum = h->cum_buf + off;
            h->prio[p].healthy.cum = h->cum_buf + n + off;
        }
        if (h->edf_buf != NULL) {
            h->prio[p].all.edf = h->edf_buf + off;
            h->prio[p].healthy.edf = h->edf_buf + n + off;
        }
        off += count[p];
    }
    free(count);
    for (uint32_t i = 0; i < n; i++) {
        struct lb_set *all = &h->prio[prio_of(h, &cfg->endpoints[i])].all;
        ((uint32_t *)all->idx)[all->n++] = i;
    }
    for (uint32_t p = 0; p < h->n_prio; p++) {
        set_weights(&h->prio[p].all, cfg);
    }
    /* Force the first build. */
    h->gen = sh != NULL ? atomic_load_explicit(&sh->health_gen, memory_order_acquire) + 1 : 1;
    hostset_refresh(h, cfg, sh);
}

void hostset_deinit(struct hostset *h)
{
    free(h->prio);
    free(h->buf);
    free(h->cum_buf);
    free(h->edf_buf);
    h->prio = NULL;
    h->buf = NULL;
    h->cum_buf = NULL;
    h->edf_buf = NULL;
    h->n_prio = 0;
}

void hostset_refresh(struct hostset *h, const struct cluster_cfg *cfg,
                     const struct cluster_shared *sh)
{
    /* The acquire pairs with main's release increment: every bit main wrote before bumping
     * the counter is visible to the relaxed loads below. */
    uint32_t gen =
        sh != NULL ? atomic_load_explicit((_Atomic uint32_t *)&sh->health_gen, memory_order_acquire)
                   : 0;
    if (gen == h->gen) {
        return;
    }
    h->gen = gen;
    uint64_t healthy[HOSTSET_MAX_PRIO] = {0}, total[HOSTSET_MAX_PRIO] = {0};
    uint32_t health[HOSTSET_MAX_PRIO], load[HOSTSET_MAX_PRIO];
    bool panic[HOSTSET_MAX_PRIO];
    bool all_healthy = true;
    for (uint32_t p = 0; p < h->n_prio; p++) {
        struct hostset_prio *hp = &h->prio[p];
        uint32_t *out = (uint32_t *)hp->healthy.idx;
        hp->healthy.n = 0;
        for (uint32_t k = 0; k < hp->all.n; k++) {
            uint32_t i = hp->all.idx[k];
            uint32_t bits = 0;
            if (sh != NULL && i < sh->n_eps) {
                bits = atomic_load_explicit((_Atomic uint32_t *)&sh->eps[i].health,
                                            memory_order_relaxed);
            }
            if ((bits & HEALTH_F_UNHEALTHY) == 0) {
                out[hp->healthy.n++] = i;
            }
        }
        set_weights(&hp->healthy, cfg);
        healthy[p] = hp->healthy.n;
        total[p] = hp->all.n;
        all_healthy = all_healthy && hp->healthy.n == hp->all.n;
    }
    hostset_compute(h->n_prio, healthy, total, cfg->overprovisioning_factor, cfg->panic_threshold,
                    health, load, panic);
    for (uint32_t p = 0; p < h->n_prio; p++) {
        h->prio[p].health = health[p];
        h->prio[p].load = load[p];
        h->prio[p].panic = panic[p];
    }
    h->trivial = h->n_prio == 1 && all_healthy;
}

struct lb_set *hostset_choose(struct hostset *h, uint64_t rnd, bool *panic)
{
    *panic = false;
    if (h->trivial) {
        return &h->prio[0].all;
    }
    uint32_t p = 0;
    if (h->n_prio > 1) {
        uint32_t r = (uint32_t)(rnd % 100) + 1;
        uint32_t acc = 0;
        for (uint32_t i = 0; i < h->n_prio; i++) {
            acc += h->prio[i].load;
            if (r <= acc) {
                p = i;
                break;
            }
        }
    }
    struct hostset_prio *hp = &h->prio[p];
    if (hp->panic) {
        *panic = true;
        return &hp->all;
    }
    return &hp->healthy;
}
