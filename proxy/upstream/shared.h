/* shared: the little per-cluster state that must be cluster-wide rather than per worker:
 * circuit-breaker counts (Envoy's limits hold across all workers), endpoint health as decided
 * by active health checks and outlier detection, and the failure counts outlier detection
 * reads. It is created by main next to the config snapshot and outlives every worker that
 * points at it.
 *
 * Every field shared across threads is an atomic (the fields marked "main thread only" are
 * not). Workers touch them only where the feature needs it (a circuit breaker check is one
 * relaxed fetch_add on the request path; health is one acquire load of `health_gen` per pick,
 * see hostset.h; outlier detection, when configured, a few relaxed operations per response,
 * see outlier.h); main's timers (health checker, outlier sweep) write the health bits. These are
 * the only atomics on the request path besides stats, by design: a per-worker split of a limit
 * would not be the limit Envoy users configured. Thread: any. */
#pragma once

#include <ev.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/stats/stats.h"

struct config;
struct outlier;

/* Endpoint health bits (Envoy's health flags as /clusters shows them). */
enum {
    HEALTH_F_FAILED_ACTIVE_HC = 1u << 0,     /* /failed_active_hc */
    HEALTH_F_FAILED_OUTLIER_CHECK = 1u << 1, /* /failed_outlier_check */
    HEALTH_F_FAILED_EDS_HEALTH = 1u << 2,    /* /failed_eds_health */
    HEALTH_F_PENDING_ACTIVE_HC = 1u << 3,    /* /pending_active_hc: not yet checked */
    HEALTH_F_ACTIVE_HC_TIMEOUT = 1u << 4,    /* /active_hc_timeout: failed by a check timeout */
};
/* The bits that take an endpoint out of the load balancer (Envoy's coarse "unhealthy"); the
 * others only inform /clusters. */
#define HEALTH_F_UNHEALTHY                                                                         \
    (HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_FAILED_OUTLIER_CHECK | HEALTH_F_FAILED_EDS_HEALTH)

/* Active health checking stats, cluster.<name>.health_check.* (Envoy's names). Written by the
 * main thread only (proxy/upstream/health_check.c). */
#define HEALTH_CHECK_STATS(X)                                                                      \
    X(COUNTER, attempt)                                                                            \
    X(COUNTER, success)                                                                            \
    X(COUNTER, failure)                                                                            \
    X(COUNTER, network_failure)                                                                    \
    X(COUNTER, passive_failure)                                                                    \
    X(COUNTER, verify_cluster)                                                                     \
    X(GAUGE, healthy)                                                                              \
    X(GAUGE, degraded)

/* Outlier detection stats, cluster.<name>.outlier_detection.* (Envoy's names, deprecated ones
 * included). Written by the main thread only (proxy/upstream/outlier.c). */
#define OUTLIER_STATS(X)                                                                           \
    X(GAUGE, ejections_active)                                                                     \
    X(COUNTER, ejections_total)                                                                    \
    X(COUNTER, ejections_overflow)                                                                 \
    X(COUNTER, ejections_consecutive_5xx)                                                          \
    X(COUNTER, ejections_success_rate)                                                             \
    X(COUNTER, ejections_enforced_total)                                                           \
    X(COUNTER, ejections_enforced_consecutive_5xx)                                                 \
    X(COUNTER, ejections_detected_consecutive_5xx)                                                 \
    X(COUNTER, ejections_enforced_consecutive_gateway_failure)                                     \
    X(COUNTER, ejections_detected_consecutive_gateway_failure)                                     \
    X(COUNTER, ejections_enforced_consecutive_local_origin_failure)                                \
    X(COUNTER, ejections_detected_consecutive_local_origin_failure)                                \
    X(COUNTER, ejections_enforced_success_rate)                                                    \
    X(COUNTER, ejections_detected_success_rate)                                                    \
    X(COUNTER, ejections_enforced_local_origin_success_rate)                                       \
    X(COUNTER, ejections_detected_local_origin_success_rate)                                       \
    X(COUNTER, ejections_enforced_failure_percentage)                                              \
    X(COUNTER, ejections_detected_failure_percentage)                                              \
    X(COUNTER, ejections_enforced_local_origin_failure_percentage)                                 \
    X(COUNTER, ejections_detected_local_origin_failure_percentage)

struct health_check_stats {
    HEALTH_CHECK_STATS(STAT_FIELD)
};

struct outlier_stats {
    OUTLIER_STATS(STAT_FIELD)
};

struct endpoint_shared {
    _Atomic uint32_t health; /* HEALTH_F_* bits; 0 = healthy */
    /* Outlier detection inputs, written by workers as responses complete. */
    _Atomic uint32_t consecutive_5xx;
    _Atomic uint32_t consecutive_gateway_failure;
    _Atomic uint32_t consecutive_local_origin_failure;
    /* Success-rate counts of the current outlier interval, packed so that one fetch_add counts
     * a request and its outcome together: (total << 32) | successes. Main swaps them out with
     * an exchange at each sweep (proxy/upstream/outlier.c). */
    _Atomic uint64_t sr_external; /* responses (and, unsplit, local failures as 5xx) */
    _Atomic uint64_t sr_local;    /* split_external_local_origin_errors: connection outcomes */
    _Atomic uint32_t od_pending;  /* OUTLIER_PENDING_* bits: ejections for main to decide */
    /* Responses with x-envoy-immediate-health-check-fail not yet taken by main's health checker
     * (health_check_immediate_fail). */
    _Atomic uint32_t hc_passive;
    /* Outlier detection state, main thread only. */
    uint32_t n_ejections;
    double success_rate;       /* of the last interval, for /clusters; -1 when not computed */
    double local_success_rate; /* likewise, local origin */
};

struct cluster_shared {
    /* circuit breakers (default priority) */
    _Atomic uint32_t cx_active;
    _Atomic uint32_t rq_pending;
    _Atomic uint32_t rq_active;
    _Atomic uint32_t rq_retry_active;
    struct endpoint_shared *eps; /* owned; [cluster_cfg.n_endpoints] */
    uint32_t n_eps;
    /* Health (proxy/upstream/hostset.h): main bumps health_gen (release) after it changed any
     * endpoint's health bits; a worker rebuilds its per-priority view when the value it sees
     * (acquire) differs from the one it built from. */
    _Atomic uint32_t health_gen;
    _Atomic uint32_t od_pending; /* some endpoint has od_pending bits (outlier.c) */
    struct outlier *od;          /* borrowed from main: the cluster's outlier detector, or NULL */
    /* Passive health-check failures from workers (health_check_immediate_fail): `hc_wake` runs
     * on main's loop `hc_loop` while `hc_armed` (the health checker is running; it starts and
     * stops the watcher, which lives here so that a worker's send never reaches freed memory);
     * `hc_pending`: some endpoint's hc_passive is set. */
    _Atomic bool hc_armed;
    _Atomic uint32_t hc_pending;
    struct ev_loop *hc_loop;
    ev_async hc_wake;
    /* Main thread only: health_check and outlier_detection stats, and the success-rate figures
     * /clusters prints (-1 when not computed in the last interval). */
    struct health_check_stats hc_stats;
    struct outlier_stats od_stats;
    double sr_average, sr_threshold;
    double local_sr_average, local_sr_threshold;
};

/* Allocates one cluster_shared per cluster of `c`, zeroed (all healthy). Thread: main. */
struct cluster_shared *cluster_shared_new(const struct config *c);
void cluster_shared_free(struct cluster_shared *s, const struct config *c);
