/* cluster: a worker's run-time state for one configured cluster: its endpoints' load-balancer
 * state, idle upstream connections (the connection pool) and stats. The config (struct
 * cluster_cfg) is immutable and shared; this state is the worker's own (h2o's globalconf vs.
 * context split), so picks and pool operations take no lock. Thread: the owning worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/list.h"
#include "proxy/upstream/hostset.h"

struct cluster_cfg;
struct endpoint_cfg;
struct cluster_stats;
struct host_stats;
struct worker;
struct cluster_shared;
struct endpoint_shared;

struct endpoint_rt {
    const struct endpoint_cfg *cfg; /* borrowed from the worker's snapshot */
    struct host_stats *stats;       /* borrowed from the worker's stats block */
    struct endpoint_shared *shared; /* borrowed from main: cluster-wide health and counts */
    struct list idle;               /* struct upstream_h1.link: idle keep-alive connections */
    uint32_t n_idle;
    struct list h2_conns; /* upstream_h2.c's connections to this endpoint (busy or not) */
    uint32_t n_conns;     /* open connections, idle or busy */
    uint32_t active_rq;   /* requests in flight (LEAST_REQUEST) */
    uint32_t refs;        /* streams and TCP sessions that point at it (s->ep, t->ep): an
                           * ORIGINAL_DST host is not freed while any does */
};

struct cluster_rt {
    const struct cluster_cfg *cfg; /* borrowed from the worker's snapshot */
    struct cluster_stats *stats;   /* borrowed from the worker's stats block */
    struct cluster_shared *shared; /* borrowed from main: circuit breakers, health */
    struct endpoint_rt *eps;       /* owned; [cfg->n_endpoints] */
    uint32_t n_eps;
    uint32_t rr_next;     /* round robin over equal weights */
    struct hostset hosts; /* owned: endpoints by priority and health, with the state of
                           * weighted picks (lb_sched.h); picks choose from it */
    /* ORIGINAL_DST: the hosts made at run time (original_dst.h), most recently used first */
    struct list od_hosts;
    uint32_t n_od_hosts;
    double od_last_sweep;
    struct list od_link; /* a CDS ORIGINAL_DST cluster's: in worker.od_dyn while set up */
};

/* Points `*slot` (a stream's or TCP session's endpoint) at `ep`, moving the hold (refs) from
 * the endpoint it pointed at; NULL lets go. An ORIGINAL_DST host is not freed while held. */
static inline void endpoint_hold(struct endpoint_rt **slot, struct endpoint_rt *ep)
{
    if (*slot == ep) {
        return;
    }
    if (*slot != NULL) {
        (*slot)->refs--;
    }
    if (ep != NULL) {
        ep->refs++;
    }
    *slot = ep;
}

/* Sets up `c` for `cfg` using stats from `cs` and `hs[cfg->n_endpoints]`, and the cluster-wide
 * state `sh` (may be NULL in unit tests). */
void cluster_rt_init(struct cluster_rt *c, const struct cluster_cfg *cfg, struct cluster_stats *cs,
                     struct host_stats *hs, struct cluster_shared *sh);

/* Closes idle connections and frees the endpoint array. Busy connections must be gone. */
void cluster_rt_deinit(struct cluster_rt *c);

/* Picks an endpoint with the cluster's policy among the healthy endpoints of the priority
 * Envoy's priority load chooses (all of that priority's endpoints in panic; see hostset.h).
 * Returns its index, or -1 when there is no endpoint to pick (none, or none healthy with panic
 * routing disabled). `rnd` is a fresh random value (from worker_rand). */
int cluster_pick(struct cluster_rt *c, uint64_t rnd);

/* cluster_pick() for a request with a hash key (`hash`, from router_hash_key; NULL: none).
 * RING_HASH and MAGLEV clusters pick the key's endpoint (and, with several priorities, the
 * key's priority), so equal keys stick to one endpoint; without a key they pick as if from a
 * random key. Other policies ignore `hash`. */
int cluster_pick_hashed(struct cluster_rt *c, const uint64_t *hash, uint64_t rnd);

/* cluster_pick_hashed() for host selection retry number `attempt` (> 0: an earlier pick was
 * rejected, e.g. by previous_hosts): RING_HASH and MAGLEV then move off the key's endpoint as
 * Envoy does (lb_hash_pick_attempt); other policies just pick again. */
int cluster_pick_hashed_retry(struct cluster_rt *c, const uint64_t *hash, uint32_t attempt,
                              uint64_t rnd);

/* Picks with an explicit policy and random source; exposed for unit tests and benchmarks. */
struct lb_rand {
    uint64_t (*next)(void *ctx);
    void *ctx;
    const uint64_t *hash; /* RING_HASH, MAGLEV: the request's key, or NULL (a random one) */
    uint32_t attempt;     /* RING_HASH, MAGLEV: host selection retry number, 0 at first */
};
int cluster_pick_with(struct cluster_rt *c, const struct lb_rand *r);
