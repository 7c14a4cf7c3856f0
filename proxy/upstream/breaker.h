/* breaker: Envoy's cluster circuit breakers (circuit_breakers.thresholds[], priority DEFAULT):
 * limits on a cluster's open connections, pending requests (waiting for a connection that is
 * being set up), active requests and concurrent retries, plus the retry budget that can replace
 * the retry limit. The counts live in the cluster-wide `struct cluster_shared` (shared.h), so a
 * limit holds across all workers, as an Envoy user configured it.
 *
 * Cost on the request path: taking a unit is one relaxed atomic fetch_add (and a fetch_sub
 * when the limit was already reached); giving it back is one fetch_sub. No lock, no ordering:
 * the counts guard nothing but themselves. Two workers racing at the limit may both see it
 * reached for an instant (each backs out its increment), never both pass it: the limit is never
 * exceeded, and a request can at worst be refused one unit early under contention, which is
 * within Envoy's own precision (its check and increment are two steps).
 *
 * Who holds what:
 *   BREAKER_CX       an upstream connection, from connect() to close (upstream.c)
 *   BREAKER_PENDING  a connection being set up for a request, until connected or closed
 *                    (upstream.c: with HTTP/1 one connecting connection = one pending request)
 *   BREAKER_RQ       an upstream attempt, from its start to its end (stream.c)
 *   BREAKER_RETRY    a retry, from the decision to retry to the end of the retry's attempt
 *                    (stream.c)
 * Thread: any; each call is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct breaker_cfg;
struct cluster_shared;

enum breaker_res {
    BREAKER_CX,
    BREAKER_PENDING,
    BREAKER_RQ,
    BREAKER_RETRY,
};

/* Takes one unit of `res` in `sh` if its limit in `cb` allows. Returns true when taken (give it
 * back with breaker_release), false on overflow (nothing taken). A NULL `sh` (unit tests, no
 * shared state) always allows. The retry limit is cb->max_retries, or the retry budget when
 * cb->has_budget. */
bool breaker_acquire(struct cluster_shared *sh, const struct breaker_cfg *cb, enum breaker_res res);

/* Gives back one unit of `res` taken by breaker_acquire. NULL `sh`: nothing. */
void breaker_release(struct cluster_shared *sh, enum breaker_res res);

/* The concurrent-retry limit: cb->max_retries, or with a retry budget
 * max(budget_percent% of (`active` + `pending`), min_retry_concurrency) (Envoy's formula:
 * active and pending requests of the cluster, retries included). */
uint32_t breaker_retry_limit(const struct breaker_cfg *cb, uint32_t active, uint32_t pending);

/* What the admin shows for one priority: Envoy's circuit_breakers.<priority>.* gauges. */
struct breaker_view {
    uint32_t cx, pending, rq, retries;                     /* units held now */
    bool cx_open, rq_pending_open, rq_open, rq_retry_open; /* at or over the limit */
    /* limit - held, floored at 0 (the remaining_* gauges, with track_remaining); with a retry
     * budget, remaining_retries is not tracked (0), as in Envoy */
    uint32_t remaining_cx, remaining_pending, remaining_rq, remaining_retries;
};

/* Fills `out` from the counts in `sh` (NULL: all zero) against `cb`. Relaxed loads: a view, not
 * a snapshot. Thread: any (the admin, on main). */
void breaker_view(const struct cluster_shared *sh, const struct breaker_cfg *cb,
                  struct breaker_view *out);
