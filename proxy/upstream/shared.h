/* shared: the little per-cluster state that must be cluster-wide rather than per worker:
 * circuit-breaker counts (Envoy's limits hold across all workers), endpoint health as decided
 * by active health checks and outlier detection, and the failure counts outlier detection
 * reads. It is created by main next to the config snapshot and outlives every worker that
 * points at it.
 *
 * Every field is an atomic. Workers touch them only where the feature needs it (a circuit
 * breaker check is one relaxed fetch_add on the request path; health is one relaxed load per
 * pick); main's timers (health checker, outlier sweep) write the health bits. These are the
 * only atomics on the request path besides stats, by design: a per-worker split of a limit
 * would not be the limit Envoy users configured. Thread: any. */
#pragma once

#include <stdatomic.h>
#include <stdint.h>

struct config;

/* Endpoint health bits (Envoy's health flags as /clusters shows them). */
enum {
    HEALTH_F_FAILED_ACTIVE_HC = 1u << 0,    /* /failed_active_hc */
    HEALTH_F_FAILED_OUTLIER_CHECK = 1u << 1, /* /failed_outlier_check */
    HEALTH_F_FAILED_EDS_HEALTH = 1u << 2,   /* /failed_eds_health */
    HEALTH_F_PENDING_ACTIVE_HC = 1u << 3,   /* /pending_active_hc: not yet checked */
};

struct endpoint_shared {
    _Atomic uint32_t health; /* HEALTH_F_* bits; 0 = healthy */
    /* Outlier detection inputs, written by workers as responses complete. */
    _Atomic uint32_t consecutive_5xx;
    _Atomic uint32_t consecutive_gateway_failure;
    _Atomic uint32_t consecutive_local_origin_failure;
    _Atomic uint64_t interval_rq;      /* requests completed in the current interval */
    _Atomic uint64_t interval_success; /* of which successful */
    /* Outlier detection state, main thread only. */
    uint32_t n_ejections;
    double ejected_until;
};

struct cluster_shared {
    /* circuit breakers (default priority) */
    _Atomic uint32_t cx_active;
    _Atomic uint32_t rq_pending;
    _Atomic uint32_t rq_active;
    _Atomic uint32_t rq_retry_active;
    struct endpoint_shared *eps; /* owned; [cluster_cfg.n_endpoints] */
    uint32_t n_eps;
};

/* Allocates one cluster_shared per cluster of `c`, zeroed (all healthy). Thread: main. */
struct cluster_shared *cluster_shared_new(const struct config *c);
void cluster_shared_free(struct cluster_shared *s, const struct config *c);
