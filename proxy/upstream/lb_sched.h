/* lb_sched: the per-set state that makes weighted picks O(log n): an EDF (earliest deadline
 * first) scheduler for weighted ROUND_ROBIN and LEAST_REQUEST, and cumulative weights for
 * weighted RANDOM. It is built when a set of endpoints is laid out or changes (hostset.c: at
 * init and when health changes), never per pick.
 *
 * EDF (as Envoy's EdfScheduler): every endpoint has a virtual deadline; a pick takes the
 * endpoint with the earliest one (the root of a binary min-heap) and moves its deadline on by
 * LB_EDF_SCALE / weight, so over time each endpoint is picked in proportion to its weight.
 *   ROUND_ROBIN: the deadline of an endpoint's P-th pick (P from 0) is exactly
 *     floor((P * LB_EDF_SCALE + phase) / weight), kept in integers (quotient and remainder), so
 *     a cycle of total_weight picks gives every endpoint exactly its weight. `phase` spreads the
 *     endpoints' first deadlines over the first period ((k + 1) / (n + 1) of it for the k-th of n),
 *     which keeps picks interleaved: with weights 5:1:1 the cycle is a a a b a c a, and in any
 *     window of picks an endpoint gets at most about one more than its share.
 *   LEAST_REQUEST: the step is LB_EDF_SCALE / weight * (active_rq + 1)^active_request_bias,
 *     computed when the picked endpoint goes back in (Envoy's effective weight
 *     weight / (active + 1)^bias at re-insertion); the others keep their deadlines until picked.
 * Deadlines are uint64 and may wrap: every deadline in a heap lies within one step of the
 * current time (a step is at most LB_EDF_MAX_STEP), so comparing by the sign of the difference
 * is exact. Ties go to the lower endpoint index.
 *
 * Thread: the owning worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct cluster_cfg;
struct lb_set;

/* One period of virtual time: an endpoint of weight w is due every LB_EDF_SCALE / w. */
#define LB_EDF_SCALE (1ULL << 31)
/* The largest LEAST_REQUEST step (an endpoint with a huge effective slowdown). */
#define LB_EDF_MAX_STEP (1ULL << 60)

struct lb_edf_entry {
    uint64_t key;    /* the virtual deadline (wrapping) */
    uint32_t ep;     /* index into the cluster's endpoints */
    uint32_t weight; /* the configured weight, >= 1 */
    union {
        struct {
            uint32_t q;   /* LB_EDF_SCALE / weight */
            uint32_t r;   /* LB_EDF_SCALE % weight */
            uint32_t rem; /* (P * LB_EDF_SCALE + phase) % weight: key's remainder */
        } rr;
        double step; /* LEAST_REQUEST: LB_EDF_SCALE / weight */
    } u;
};

/* Whether `a` is due before `b`. */
static inline bool lb_edf_before(const struct lb_edf_entry *a, const struct lb_edf_entry *b)
{
    int64_t d = (int64_t)(a->key - b->key);
    return d < 0 || (d == 0 && a->ep < b->ep);
}

/* Moves h[at] down until the heap order of h[0..n) holds below it. */
static inline void lb_edf_sift_down_at(struct lb_edf_entry *h, uint32_t n, uint32_t at)
{
    struct lb_edf_entry x = h[at];
    uint32_t i = at;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && lb_edf_before(&h[c + 1], &h[c])) {
            c++;
        }
        if (!lb_edf_before(&h[c], &x)) {
            break;
        }
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

/* Restores the heap order of h[0..n) after the root's key grew. */
static inline void lb_edf_sift_down(struct lb_edf_entry *h, uint32_t n)
{
    lb_edf_sift_down_at(h, n, 0);
}

/* Weighted ROUND_ROBIN: picks the root of h[0..n) (n >= 1) and schedules its next turn. */
static inline uint32_t lb_edf_pick_rr(struct lb_edf_entry *h, uint32_t n)
{
    struct lb_edf_entry *e = &h[0];
    uint32_t ep = e->ep;
    uint64_t rem = (uint64_t)e->u.rr.rem + e->u.rr.r;
    e->key += e->u.rr.q;
    if (rem >= e->weight) {
        rem -= e->weight;
        e->key++;
    }
    e->u.rr.rem = (uint32_t)rem;
    lb_edf_sift_down(h, n);
    return ep;
}

/* Builds the pick state of `s` (its idx, n, total_weight and equal_weights are set) for
 * `cfg`'s policy: the EDF heap (s->edf) or the cumulative weights (s->cum), where `s` has
 * storage for them. Nothing to do for equal weights. O(n). */
void lb_sched_build(struct lb_set *s, const struct cluster_cfg *cfg);
