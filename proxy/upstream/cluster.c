/* cluster: per-worker cluster state and load balancing (see cluster.h).
 *
 * With equal weights, ROUND_ROBIN is a plain rotation, LEAST_REQUEST Envoy's power of two
 * choices (pick `choice_count` at random, keep the one with the fewest active requests) and
 * RANDOM one draw. With unequal weights, each pick is O(log n) on state the host set builds when
 * it changes (lb_sched.h): ROUND_ROBIN and LEAST_REQUEST are Envoy's EDF scheduler (for
 * LEAST_REQUEST the picked endpoint goes back in with the effective weight
 * weight / (active + 1)^active_request_bias), RANDOM a binary search over cumulative weights.
 * RING_HASH and MAGLEV look the request's hash key up in the ring or table built at config time
 * (lb_hash.h). */
#include "proxy/upstream/cluster.h"

#include <math.h>
#include <stdlib.h>

#include "proxy/config/config.h"
#include "proxy/core/cumsum.h"
#include "proxy/core/xmalloc.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/lb_hash.h"
#include "proxy/upstream/lb_sched.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/shared.h"
#include "proxy/upstream/upstream.h"

void cluster_rt_init(struct cluster_rt *c, const struct cluster_cfg *cfg, struct cluster_stats *cs,
                     struct host_stats *hs, struct cluster_shared *sh)
{
    c->shared = sh;
    c->cfg = cfg;
    c->stats = cs;
    c->n_eps = cfg->n_endpoints;
    c->eps = xcalloc(c->n_eps ? c->n_eps : 1, sizeof(*c->eps));
    c->rr_next = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct endpoint_rt *e = &c->eps[i];
        e->cfg = &cfg->endpoints[i];
        e->stats = &hs[i];
        e->shared = sh != NULL ? &sh->eps[i] : NULL;
        list_init(&e->idle);
        list_init(&e->h2_conns);
    }
    hostset_init(&c->hosts, cfg, sh);
    list_init(&c->od_hosts);
    c->n_od_hosts = 0;
    c->od_last_sweep = 0;
}

void cluster_rt_deinit(struct cluster_rt *c)
{
    for (uint32_t i = 0; i < c->n_eps; i++) {
        upstream_close_idle(&c->eps[i]);
    }
    original_dst_free_all(c);
    free(c->eps);
    c->eps = NULL;
    c->n_eps = 0;
    hostset_deinit(&c->hosts);
}

static uint32_t rand_below(const struct lb_rand *r, uint64_t n)
{
    return (uint32_t)(r->next(r->ctx) % n);
}

/* The pick functions choose among `set` (hostset.h: the healthy endpoints of one priority, or
 * all of them in panic), which holds at least two endpoints. */
static uint32_t weighted_random(const struct lb_set *set, const struct lb_rand *r)
{
    if (set->equal_weights || set->cum == NULL) {
        return set->idx[rand_below(r, set->n)];
    }
    uint64_t x = r->next(r->ctx) % set->total_weight;
    return set->idx[cumsum_pick(set->cum, sizeof(set->cum[0]), set->n, x)];
}

static uint32_t pick_round_robin(struct cluster_rt *c, struct lb_set *set)
{
    if (set->equal_weights || set->edf == NULL) {
        if (c->rr_next >= set->n) {
            c->rr_next = 0;
        }
        return set->idx[c->rr_next++];
    }
    return lb_edf_pick_rr(set->edf, set->n);
}

/* LEAST_REQUEST with unequal weights: Envoy's EDF, where the picked endpoint goes back in with
 * the effective weight weight / (active_rq + 1)^active_request_bias of that moment, i.e. a step
 * of (LB_EDF_SCALE / weight) * (active_rq + 1)^bias. Bias 0 is weighted round robin, bias 1
 * (the default) multiplies by active + 1 (no pow). */
static uint32_t pick_least_request_weighted(struct cluster_rt *c, struct lb_set *set)
{
    struct lb_edf_entry *e = &set->edf[0];
    uint32_t ep = e->ep;
    double bias = c->cfg->lr_active_request_bias;
    double step = e->u.step;
    if (bias == 1.0) {
        step *= (double)c->eps[ep].active_rq + 1.0;
    } else if (bias != 0.0) {
        step *= pow((double)c->eps[ep].active_rq + 1.0, bias);
    }
    /* Also catches NaN (a NaN compares false). */
    uint64_t k =
        step >= 1.0 ? (step < (double)LB_EDF_MAX_STEP ? (uint64_t)step : LB_EDF_MAX_STEP) : 1;
    e->key += k;
    lb_edf_sift_down(set->edf, set->n);
    return ep;
}

/* RING_HASH, MAGLEV: the key's endpoint in the table of the set's priority; when the set is
 * not the whole priority (some endpoints are unhealthy), the first endpoint of the set along
 * the key's path (lb_hash_pick_in). */
static uint32_t pick_hash(struct cluster_rt *c, const struct lb_set *set, uint64_t key,
                          uint32_t attempt)
{
    uint32_t prio = c->eps[set->idx[0]].cfg->priority;
    const struct lb_hash *t = c->cfg->hash_lb != NULL ? c->cfg->hash_lb[prio] : NULL;
    if (t == NULL) {
        return set->idx[key % set->n]; /* not built (unit tests): still sticky */
    }
    if (prio < c->hosts.n_prio && set->n == c->hosts.prio[prio].all.n) {
        return lb_hash_pick_attempt(t, key, attempt);
    }
    return lb_hash_pick_in(t, key, attempt, set->idx, set->n);
}

static uint32_t pick_least_request(struct cluster_rt *c, struct lb_set *set,
                                   const struct lb_rand *r)
{
    if (!set->equal_weights && set->edf != NULL) {
        return pick_least_request_weighted(c, set);
    }
    uint32_t choices = c->cfg->lr_choice_count ? c->cfg->lr_choice_count : 2;
    uint32_t best = weighted_random(set, r);
    for (uint32_t k = 1; k < choices; k++) {
        uint32_t i = weighted_random(set, r);
        /* Compare active/weight without division: a/wa < b/wb  <=>  a*wb < b*wa. */
        uint64_t lhs = (uint64_t)c->eps[i].active_rq * c->eps[best].cfg->weight;
        uint64_t rhs = (uint64_t)c->eps[best].active_rq * c->eps[i].cfg->weight;
        if (lhs < rhs) {
            best = i;
        }
    }
    return best;
}

int cluster_pick_with(struct cluster_rt *c, const struct lb_rand *r)
{
    if (c->n_eps == 0) {
        return -1;
    }
    hostset_refresh(&c->hosts, c->cfg, c->shared);
    /* A draw for the priority only when there is a choice to make, so a healthy single-priority
     * cluster costs what it did before health existed. */
    bool hashed = c->cfg->lb == LB_RING_HASH || c->cfg->lb == LB_MAGLEV;
    /* Hashing balancers choose the priority by the key too (Envoy), so a key sticks. */
    uint64_t key = hashed ? (r->hash != NULL ? *r->hash : r->next(r->ctx)) : 0;
    uint64_t draw = c->hosts.n_prio > 1 && !c->hosts.trivial ? (hashed ? key : r->next(r->ctx)) : 0;
    bool panic;
    struct lb_set *set = hostset_choose(&c->hosts, draw, &panic);
    if (panic && c->stats != NULL) {
        STAT_INC(c->stats->lb_healthy_panic);
    }
    if (set->n == 0) {
        return -1;
    }
    if (set->n == 1) {
        return (int)set->idx[0];
    }
    switch (c->cfg->lb) {
    case LB_LEAST_REQUEST:
        return (int)pick_least_request(c, set, r);
    case LB_RANDOM:
        return (int)weighted_random(set, r);
    case LB_RING_HASH:
    case LB_MAGLEV:
        return (int)pick_hash(c, set, key, r->attempt);
    case LB_ROUND_ROBIN:
    default:
        return (int)pick_round_robin(c, set);
    }
}

static uint64_t fixed_next(void *ctx)
{
    /* splitmix64 over the caller's seed: picks needing several draws get distinct values */
    uint64_t *s = ctx;
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int cluster_pick(struct cluster_rt *c, uint64_t rnd)
{
    struct lb_rand r = {fixed_next, &rnd, NULL, 0};
    return cluster_pick_with(c, &r);
}

int cluster_pick_hashed(struct cluster_rt *c, const uint64_t *hash, uint64_t rnd)
{
    struct lb_rand r = {fixed_next, &rnd, hash, 0};
    return cluster_pick_with(c, &r);
}

int cluster_pick_hashed_retry(struct cluster_rt *c, const uint64_t *hash, uint32_t attempt,
                              uint64_t rnd)
{
    struct lb_rand r = {fixed_next, &rnd, hash, attempt};
    return cluster_pick_with(c, &r);
}
