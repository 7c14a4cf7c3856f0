/* outlier: Envoy's outlier detection (passive health checking) for one cluster.
 *
 * Two halves on two kinds of thread:
 *
 *   workers   outlier_put() after each upstream request: consecutive-failure counters and the
 *             interval's success-rate counts, all atomics in `endpoint_shared`. A success stores
 *             0 into a counter only when it is not 0 already (no write, no cache-line bounce,
 *             in the common case); a failure is one fetch_add. The worker whose increment makes
 *             the Nth consecutive failure sets a pending bit and wakes main (ev_async): it does
 *             not eject by itself.
 *   main      the detector: decides ejections (max_ejection_percent, enforcing_* draws), owns
 *             the stats and the ejection times, and at each `interval` un-ejects hosts whose
 *             time is up and runs the success-rate and failure-percentage detectors.
 *
 * Why post to main rather than CAS the ejection bit on the worker: the max_ejection_percent
 * check needs the count of ejected hosts, the enforcing_* draws and the ejection time must be
 * decided once, and the stats have one writer. Envoy does the same (the worker that sees the
 * Nth failure posts to the main dispatcher). The cost is one ev_async_send per ejection and a
 * few microseconds during which more requests may reach the host, as in Envoy.
 *
 * Ejection means HEALTH_F_FAILED_OUTLIER_CHECK in the endpoint's health bits: the load
 * balancer skips the host unless its priority is in panic (hostset.h). Time ejected:
 * min(base_ejection_time * backoff, max_ejection_time) + jitter, where backoff grows by one per
 * ejection (while base * backoff < max + base) and shrinks by one per interval the host stays
 * in service after being returned (Envoy 1.2x's backoff; "multiplied by the number of times
 * ejected" until it decays). Un-ejection happens at a sweep, so a host is out for at least its
 * ejection time and at most that plus one `interval`. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct ev_loop;
struct cluster_cfg;
struct cluster_shared;
struct cluster_rt;
struct endpoint_rt;

/* OutlierDetection, compiled (defaults are Envoy's). */
struct outlier_cfg {
    uint32_t consecutive_5xx;                            /* 5 */
    uint32_t consecutive_gateway_failure;                /* 5 */
    uint32_t consecutive_local_origin_failure;           /* 5 (split only) */
    uint64_t interval_ms;                                /* 10000 */
    uint64_t base_ejection_time_ms;                      /* 30000 */
    uint64_t max_ejection_time_ms;                       /* max(300000, base) */
    uint64_t max_ejection_time_jitter_ms;                /* 0 */
    uint32_t max_ejection_percent;                       /* 10 */
    uint32_t enforcing_consecutive_5xx;                  /* 100 */
    uint32_t enforcing_consecutive_gateway_failure;      /* 0 */
    uint32_t enforcing_consecutive_local_origin_failure; /* 100 */
    uint32_t enforcing_success_rate;                     /* 100 */
    uint32_t enforcing_local_origin_success_rate;        /* 100 */
    uint32_t success_rate_minimum_hosts;                 /* 5 */
    uint32_t success_rate_request_volume;                /* 100 */
    uint32_t success_rate_stdev_factor;                  /* 1900 (= 1.9) */
    uint32_t failure_percentage_threshold;               /* 85 */
    uint32_t enforcing_failure_percentage;               /* 0 */
    uint32_t enforcing_failure_percentage_local_origin;  /* 0 */
    uint32_t failure_percentage_minimum_hosts;           /* 5 */
    uint32_t failure_percentage_request_volume;          /* 50 */
    bool split_external_local_origin_errors;             /* false */
    bool successful_active_health_check_uneject_host;    /* true */
    bool always_eject_one_host;                          /* false */
};

/* What one upstream request taught us (Envoy's Outlier::Result). */
enum outlier_result {
    OUTLIER_RESPONSE,              /* the endpoint answered with status `code` */
    OUTLIER_LOCAL_CONNECT_SUCCESS, /* connected (split: resets the local-origin counter) */
    OUTLIER_LOCAL_CONNECT_FAILED,  /* connect failure, reset, protocol error (unsplit: 503) */
    OUTLIER_LOCAL_TIMEOUT,         /* the request timed out (unsplit: 504) */
};

/* Records one result for endpoint `ep` of cluster `c` (no-op without outlier_detection).
 * `code` is the status for OUTLIER_RESPONSE. Thread: the worker owning `c`. */
void outlier_put(struct cluster_rt *c, struct endpoint_rt *ep, enum outlier_result r, int code);

/* ---- main thread: the detector ---- */

struct outlier;

/* Creates cluster `cfg`'s detector (cfg->outlier must be set) on main's `loop`, publishes it as
 * `sh->od` and starts its interval timer. `seed` seeds the enforcing/jitter draws. Must be called
 * before the workers start (they read `sh->od`). Thread: main. */
struct outlier *outlier_new(struct ev_loop *loop, const struct cluster_cfg *cfg,
                            struct cluster_shared *sh, uint64_t seed);

/* Stops the timers and frees the detector (after the workers are gone). */
void outlier_free(struct outlier *od);

/* Carries endpoint `from_ep` of `from` (the previous version of the same cluster, whose
 * endpoints changed: proxy/cds.c) over to endpoint `ep` of `od`: an ejection in force with its
 * time and back-off, the ejection count, the consecutive failure counts and success rates.
 * Thread: main. */
void outlier_adopt(struct outlier *od, uint32_t ep, const struct outlier *from, uint32_t from_ep);

/* Active health checking just found endpoint `ep` healthy: un-eject it if it was ejected and
 * successful_active_health_check_uneject_host allows (Envoy's rule). Thread: main. */
void outlier_on_hc_success(struct outlier *od, uint32_t ep);

/* ---- Envoy's arithmetic, pure (exposed for unit tests) ---- */

/* How long an ejection with `backoff` lasts: min(base * backoff, max) + jitter, in ms. */
uint64_t outlier_ejection_ms(const struct outlier_cfg *c, uint32_t backoff, uint64_t jitter_ms);

/* The backoff multiplier after one more ejection. */
uint32_t outlier_backoff_next(const struct outlier_cfg *c, uint32_t backoff);

/* Whether one more host may be ejected when `active` of `n_hosts` are: Envoy 1.31+:
 * 100 * (active + 1) / n_hosts <= max_percent, or none is ejected yet and always_eject_one_host. */
bool outlier_may_eject(const struct outlier_cfg *c, uint32_t active, uint32_t n_hosts);

/* Success-rate outlier threshold over `rates[n]` (percent): *mean, and
 * *threshold = mean - stdev_factor/1000 * stdev (population standard deviation). */
void outlier_success_rate_threshold(const double *rates, uint32_t n, uint32_t stdev_factor,
                                    double *mean, double *threshold);
