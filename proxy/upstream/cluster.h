/* cluster: a worker's run-time state for one configured cluster: its endpoints' load-balancer
 * state, idle upstream connections (the connection pool) and stats. The config (struct
 * cluster_cfg) is immutable and shared; this state is the worker's own (h2o's globalconf vs.
 * context split), so picks and pool operations take no lock. Thread: the owning worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/list.h"

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
    struct list idle;               /* struct upstream.link: idle keep-alive connections */
    uint32_t n_idle;
    uint32_t n_conns;   /* open connections, idle or busy */
    uint32_t active_rq; /* requests in flight (LEAST_REQUEST) */
    int64_t rr_current; /* smooth weighted round robin */
};

struct cluster_rt {
    const struct cluster_cfg *cfg; /* borrowed from the worker's snapshot */
    struct cluster_stats *stats;   /* borrowed from the worker's stats block */
    struct cluster_shared *shared; /* borrowed from main: circuit breakers, health */
    struct endpoint_rt *eps;       /* owned; [cfg->n_endpoints] */
    uint32_t n_eps;
    uint32_t rr_next; /* round robin over equal weights */
    bool equal_weights;
    int64_t total_weight;
};

/* Sets up `c` for `cfg` using stats from `cs` and `hs[cfg->n_endpoints]`, and the cluster-wide
 * state `sh` (may be NULL in unit tests). */
void cluster_rt_init(struct cluster_rt *c, const struct cluster_cfg *cfg, struct cluster_stats *cs,
                     struct host_stats *hs, struct cluster_shared *sh);

/* Closes idle connections and frees the endpoint array. Busy connections must be gone. */
void cluster_rt_deinit(struct cluster_rt *c);

/* Picks an endpoint with the cluster's policy. Returns its index, or -1 when the cluster has
 * no endpoints. `rnd` is a fresh random value (from worker_rand). */
int cluster_pick(struct cluster_rt *c, uint64_t rnd);

/* Picks with an explicit policy and random source; exposed for unit tests and benchmarks. */
struct lb_rand {
    uint64_t (*next)(void *ctx);
    void *ctx;
};
int cluster_pick_with(struct cluster_rt *c, const struct lb_rand *r);
