/* hostset: a worker's view of one cluster's endpoints by priority and health, and Envoy's
 * choice of where a pick goes: which priority (the "priority load"), and within it the healthy
 * endpoints or, in panic, all of them.
 *
 * Health itself lives in `cluster_shared` (main writes the bits: active health checks,
 * outlier ejections). Reading every endpoint's bits on every pick would cost one load per
 * endpoint, so the view is cached: main bumps `cluster_shared.health_gen` after changing bits,
 * and a pick compares that counter (one acquire load, a plain `mov` on x86-64) with the value
 * the view was built from; only when it moved does the worker rebuild (O(endpoints)). The pick
 * stays lock-free and never writes shared memory.
 *
 * Envoy's rules (source/extensions/load_balancing_policies/common/load_balancer_impl.cc and
 * docs arch_overview/upstream/load_balancing/{priority,panic_threshold}.rst):
 *   health(P)   = min(100, overprovisioning_factor * healthy(P) / total(P))    (integers)
 *   normalized  = min(100, sum of health)
 *   load(P)     = min(100 - loads above, health(P) * 100 / normalized); what rounding leaves
 *                 goes to the first priority with health > 0
 *   panic(P)    = normalized < 100 and 100 * healthy(P) / total(P) < panic_threshold
 *   all priorities in panic ("total panic"): load(P) = 100 * total(P) / all hosts, the rest to
 *                 the first non-empty priority; a panicking priority picks from all its hosts
 *   normalized == 0 with panic_threshold 0: load(0) = 100 and nothing is healthy (503 UH).
 * A pick draws r = rnd % 100 + 1 and takes the first priority whose cumulative load >= r.
 *
 * Thread: the owning worker, except the pure functions (any thread). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct cluster_cfg;
struct cluster_shared;

struct lb_edf_entry;

/* The endpoints a pick may choose from: indices into the cluster's endpoints, and the state of
 * weighted picks over them (lb_sched.h), rebuilt with the set. */
struct lb_set {
    const uint32_t *idx; /* borrowed from the hostset; valid until its next refresh */
    uint32_t n;
    uint64_t total_weight;
    bool equal_weights;
    /* Only for a cluster whose weights differ, laid out like idx (NULL otherwise), and built
     * only while this set's weights differ: */
    uint64_t *cum;            /* RANDOM: cum[k] = the weights of idx[0..k] added up */
    struct lb_edf_entry *edf; /* ROUND_ROBIN, LEAST_REQUEST: the EDF min-heap, [n] */
};

struct hostset_prio {
    struct lb_set all;     /* every endpoint of this priority */
    struct lb_set healthy; /* those without HEALTH_F_UNHEALTHY bits */
    uint32_t health;       /* 0..100, overprovisioned */
    uint32_t load;         /* percent of picks */
    bool panic;
};

struct hostset {
    uint32_t gen; /* cluster_shared.health_gen this view was built from */
    uint32_t n_prio;
    struct hostset_prio *prio;    /* owned; [n_prio] */
    uint32_t *buf;                /* owned: backing store of every idx array */
    uint64_t *cum_buf;            /* owned: backing store of every cum array, or NULL */
    struct lb_edf_entry *edf_buf; /* owned: backing store of every edf heap, or NULL */
    bool trivial; /* one priority, all healthy: picks use prio[0].all without a draw */
};

/* Builds the view of `cfg`'s endpoints; `sh` (may be NULL: all healthy) gives the health. */
void hostset_init(struct hostset *h, const struct cluster_cfg *cfg,
                  const struct cluster_shared *sh);
void hostset_deinit(struct hostset *h);

/* Rebuilds the view if main changed health since it was built, with the weighted pick state of
 * its healthy sets (the `all` sets never change, so theirs lives on). Cheap when nothing
 * changed. */
void hostset_refresh(struct hostset *h, const struct cluster_cfg *cfg,
                     const struct cluster_shared *sh);

/* Chooses the endpoints a pick should use (Envoy's chooseHostSet + panic), drawing on `rnd`
 * when there is more than one priority to choose from. Sets *panic when the chosen priority is
 * in panic (the caller counts lb_healthy_panic). The set may be empty (nothing healthy and panic
 * disabled): answer 503 UH. Call hostset_refresh first. */
struct lb_set *hostset_choose(struct hostset *h, uint64_t rnd, bool *panic);

/* ---- Envoy's arithmetic, pure (exposed for unit tests) ---- */

/* A priority's health, 0..100: min(100, factor * healthy / total); 0 when total is 0. */
uint32_t hostset_priority_health(uint64_t healthy, uint64_t total, uint32_t overprovisioning);

/* Whether a priority is in panic: 100 * healthy / total < threshold (an empty one always is,
 * unless the threshold is 0). */
bool hostset_priority_panic(uint64_t healthy, uint64_t total, uint32_t threshold);

/* Fills load[n] from health[n] and panic[n] (computed here from healthy[n]/total[n] and
 * `threshold`), as described above. */
void hostset_compute(uint32_t n, const uint64_t *healthy, const uint64_t *total,
                     uint32_t overprovisioning, uint32_t threshold, uint32_t *health,
                     uint32_t *load, bool *panic);
