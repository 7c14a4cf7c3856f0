/* breaker: cluster-wide circuit-breaker counts against their configured limits (see
 * breaker.h). Each unit is a relaxed fetch_add/fetch_sub on an atomic in cluster_shared; this
 * file owns no state of its own. */
#include "proxy/upstream/breaker.h"

#include <stdatomic.h>
#include <stddef.h>

#include "proxy/config/config.h"
#include "proxy/upstream/shared.h"

static _Atomic uint32_t *counter(struct cluster_shared *sh, enum breaker_res res)
{
    switch (res) {
    case BREAKER_CX:
        return &sh->cx_active;
    case BREAKER_PENDING:
        return &sh->rq_pending;
    case BREAKER_RQ:
        return &sh->rq_active;
    case BREAKER_RETRY:
    default:
        return &sh->rq_retry_active;
    }
}

static uint32_t load(const _Atomic uint32_t *a)
{
    return atomic_load_explicit((_Atomic uint32_t *)a, memory_order_relaxed);
}

uint32_t breaker_retry_limit(const struct breaker_cfg *cb, uint32_t active, uint32_t pending)
{
    if (!cb->has_budget) {
        return cb->max_retries;
    }
    double budget = cb->budget_percent / 100.0 * ((double)active + (double)pending);
    uint32_t lim = budget >= (double)UINT32_MAX ? UINT32_MAX : (uint32_t)budget;
    return lim > cb->min_retry_concurrency ? lim : cb->min_retry_concurrency;
}

static uint32_t limit(const struct cluster_shared *sh, const struct breaker_cfg *cb,
                      enum breaker_res res)
{
    switch (res) {
    case BREAKER_CX:
        return cb->max_connections;
    case BREAKER_PENDING:
        return cb->max_pending_requests;
    case BREAKER_RQ:
        return cb->max_requests;
    case BREAKER_RETRY:
    default:
        return breaker_retry_limit(cb, load(&sh->rq_active), load(&sh->rq_pending));
    }
}

bool breaker_acquire(struct cluster_shared *sh, const struct breaker_cfg *cb, enum breaker_res res)
{
    if (sh == NULL) {
        return true;
    }
    uint32_t max = limit(sh, cb, res);
    _Atomic uint32_t *c = counter(sh, res);
    uint32_t before = atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    if (before >= max) {
        atomic_fetch_sub_explicit(c, 1, memory_order_relaxed);
        return false;
    }
    return true;
}

void breaker_release(struct cluster_shared *sh, enum breaker_res res)
{
    if (sh != NULL) {
        atomic_fetch_sub_explicit(counter(sh, res), 1, memory_order_relaxed);
    }
}

static uint32_t remaining(uint32_t max, uint32_t held)
{
    return held >= max ? 0 : max - held;
}

void breaker_view(const struct cluster_shared *sh, const struct breaker_cfg *cb,
                  struct breaker_view *out)
{
    *out = (struct breaker_view){0};
    if (sh != NULL) {
        out->cx = load(&sh->cx_active);
        out->pending = load(&sh->rq_pending);
        out->rq = load(&sh->rq_active);
        out->retries = load(&sh->rq_retry_active);
    }
    uint32_t max_retries = breaker_retry_limit(cb, out->rq, out->pending);
    out->cx_open = out->cx >= cb->max_connections;
    out->rq_pending_open = out->pending >= cb->max_pending_requests;
    out->rq_open = out->rq >= cb->max_requests;
    out->rq_retry_open = out->retries >= max_retries;
    out->remaining_cx = remaining(cb->max_connections, out->cx);
    out->remaining_pending = remaining(cb->max_pending_requests, out->pending);
    out->remaining_rq = remaining(cb->max_requests, out->rq);
    out->remaining_retries = cb->has_budget ? 0 : remaining(cb->max_retries, out->retries);
}
