/* cluster: per-worker cluster state and load balancing (see cluster.h).
 *
 * ROUND_ROBIN is nginx's smooth weighted round robin (each pick adds every endpoint's weight to
 * its current value, takes the largest and subtracts the total from it), with a plain rotation
 * when all weights are equal. LEAST_REQUEST is Envoy's: with equal weights, the power of two
 * choices (pick `choice_count` at random, keep the one with the fewest active requests); with
 * unequal weights, the same over a weighted random draw comparing active/weight. RANDOM is a
 * weighted random draw. */
#include "proxy/upstream/cluster.h"

#include <stdlib.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/stats/stats.h"
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
    c->equal_weights = true;
    c->total_weight = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct endpoint_rt *e = &c->eps[i];
        e->cfg = &cfg->endpoints[i];
        e->stats = &hs[i];
        e->shared = sh != NULL ? &sh->eps[i] : NULL;
        list_init(&e->idle);
        c->total_weight += e->cfg->weight;
        if (e->cfg->weight != cfg->endpoints[0].weight) {
            c->equal_weights = false;
        }
    }
}

void cluster_rt_deinit(struct cluster_rt *c)
{
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct list *it, *tmp;
        LIST_FOREACH_SAFE(it, tmp, &c->eps[i].idle)
        {
            upstream_close(LIST_ENTRY(it, struct upstream, link), NULL);
        }
    }
    free(c->eps);
    c->eps = NULL;
    c->n_eps = 0;
}

static uint32_t rand_below(const struct lb_rand *r, uint64_t n)
{
    return (uint32_t)(r->next(r->ctx) % n);
}

static uint32_t weighted_random(struct cluster_rt *c, const struct lb_rand *r)
{
    if (c->equal_weights) {
        return rand_below(r, c->n_eps);
    }
    uint64_t x = r->next(r->ctx) % (uint64_t)c->total_weight;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        uint64_t wt = c->eps[i].cfg->weight;
        if (x < wt) {
            return i;
        }
        x -= wt;
    }
    return c->n_eps - 1;
}

static uint32_t pick_round_robin(struct cluster_rt *c)
{
    if (c->equal_weights) {
        uint32_t i = c->rr_next++;
        if (c->rr_next >= c->n_eps) {
            c->rr_next = 0;
        }
        return i;
    }
    uint32_t best = 0;
    for (uint32_t i = 0; i < c->n_eps; i++) {
        struct endpoint_rt *e = &c->eps[i];
        e->rr_current += e->cfg->weight;
        if (e->rr_current > c->eps[best].rr_current) {
            best = i;
        }
    }
    c->eps[best].rr_current -= c->total_weight;
    return best;
}

static uint32_t pick_least_request(struct cluster_rt *c, const struct lb_rand *r)
{
    uint32_t choices = c->cfg->lr_choice_count ? c->cfg->lr_choice_count : 2;
    uint32_t best = weighted_random(c, r);
    for (uint32_t k = 1; k < choices; k++) {
        uint32_t i = weighted_random(c, r);
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
    if (c->n_eps == 1) {
        return 0;
    }
    switch (c->cfg->lb) {
    case LB_LEAST_REQUEST:
        return (int)pick_least_request(c, r);
    case LB_RANDOM:
        return (int)weighted_random(c, r);
    case LB_ROUND_ROBIN:
    default:
        return (int)pick_round_robin(c);
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
    struct lb_rand r = {fixed_next, &rnd};
    return cluster_pick_with(c, &r);
}
