/* Unit tests for proxy/upstream/breaker: limits, overflow without leaking a unit, the retry
 * budget's arithmetic, and the admin view (open and remaining gauges). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/shared.h"

static struct breaker_cfg limits(uint32_t cx, uint32_t pending, uint32_t rq, uint32_t retries)
{
    return (struct breaker_cfg){
        .max_connections = cx,
        .max_pending_requests = pending,
        .max_requests = rq,
        .max_retries = retries,
        .budget_percent = 20.0,
        .min_retry_concurrency = 3,
    };
}

static void test_breaker_limits_hold_and_recover(void **state)
{
    (void)state;
    struct cluster_shared sh = {0};
    struct breaker_cfg cb = limits(2, 1, 3, 1);
    assert_true(breaker_acquire(&sh, &cb, BREAKER_CX));
    assert_true(breaker_acquire(&sh, &cb, BREAKER_CX));
    assert_false(breaker_acquire(&sh, &cb, BREAKER_CX));
    assert_false(breaker_acquire(&sh, &cb, BREAKER_CX));
    /* an overflow takes nothing */
    assert_int_equal(atomic_load(&sh.cx_active), 2);
    breaker_release(&sh, BREAKER_CX);
    assert_true(breaker_acquire(&sh, &cb, BREAKER_CX));

    assert_true(breaker_acquire(&sh, &cb, BREAKER_PENDING));
    assert_false(breaker_acquire(&sh, &cb, BREAKER_PENDING));
    for (int i = 0; i < 3; i++) {
        assert_true(breaker_acquire(&sh, &cb, BREAKER_RQ));
    }
    assert_false(breaker_acquire(&sh, &cb, BREAKER_RQ));
    assert_true(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    assert_false(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    breaker_release(&sh, BREAKER_RETRY);
    assert_true(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    assert_int_equal(atomic_load(&sh.rq_retry_active), 1);

    /* A zero limit refuses everything; no shared state allows everything. */
    struct breaker_cfg zero = limits(0, 0, 0, 0);
    struct cluster_shared sh2 = {0};
    assert_false(breaker_acquire(&sh2, &zero, BREAKER_RQ));
    assert_int_equal(atomic_load(&sh2.rq_active), 0);
    assert_true(breaker_acquire(NULL, &zero, BREAKER_RQ));
    breaker_release(NULL, BREAKER_RQ);
}

static void test_breaker_retry_budget_math(void **state)
{
    (void)state;
    struct breaker_cfg cb = limits(1024, 1024, 1024, 3);
    /* Without a budget the limit is max_retries, whatever the load. */
    assert_int_equal(breaker_retry_limit(&cb, 1000, 1000), 3);
    cb.has_budget = true;
    /* 20% of active + pending, never below min_retry_concurrency (3). */
    assert_int_equal(breaker_retry_limit(&cb, 0, 0), 3);
    assert_int_equal(breaker_retry_limit(&cb, 10, 0), 3);
    assert_int_equal(breaker_retry_limit(&cb, 20, 0), 4);
    assert_int_equal(breaker_retry_limit(&cb, 50, 50), 20);
    assert_int_equal(breaker_retry_limit(&cb, 99, 0), 19); /* 19.8 rounds down */
    cb.budget_percent = 100.0;
    cb.min_retry_concurrency = 0;
    assert_int_equal(breaker_retry_limit(&cb, 7, 2), 9);
    cb.budget_percent = 0.0;
    assert_int_equal(breaker_retry_limit(&cb, 1000, 0), 0);
    /* No overflow with huge counts. */
    cb.budget_percent = 100.0;
    assert_int_equal(breaker_retry_limit(&cb, UINT32_MAX, UINT32_MAX), UINT32_MAX);

    /* The budget follows the cluster's live load. */
    struct cluster_shared sh = {0};
    cb = limits(1024, 1024, 1024, 3);
    cb.has_budget = true;
    atomic_store(&sh.rq_active, 40);
    for (int i = 0; i < 8; i++) {
        assert_true(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    }
    assert_false(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    atomic_store(&sh.rq_active, 45);
    assert_true(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    assert_false(breaker_acquire(&sh, &cb, BREAKER_RETRY));
}

static void test_breaker_view_gauges(void **state)
{
    (void)state;
    struct cluster_shared sh = {0};
    struct breaker_cfg cb = limits(2, 5, 4, 3);
    struct breaker_view v;
    breaker_view(&sh, &cb, &v);
    assert_false(v.cx_open || v.rq_pending_open || v.rq_open || v.rq_retry_open);
    assert_int_equal(v.remaining_cx, 2);
    assert_int_equal(v.remaining_pending, 5);
    assert_int_equal(v.remaining_rq, 4);
    assert_int_equal(v.remaining_retries, 3);
    assert_true(breaker_acquire(&sh, &cb, BREAKER_CX));
    assert_true(breaker_acquire(&sh, &cb, BREAKER_CX));
    assert_true(breaker_acquire(&sh, &cb, BREAKER_RQ));
    assert_true(breaker_acquire(&sh, &cb, BREAKER_RETRY));
    breaker_view(&sh, &cb, &v);
    assert_true(v.cx_open);
    assert_false(v.rq_open);
    assert_int_equal(v.cx, 2);
    assert_int_equal(v.remaining_cx, 0);
    assert_int_equal(v.remaining_rq, 3);
    assert_int_equal(v.remaining_retries, 2);
    /* With a budget, remaining_retries is not tracked (as in Envoy). */
    cb.has_budget = true;
    breaker_view(&sh, &cb, &v);
    assert_int_equal(v.remaining_retries, 0);
    assert_false(v.rq_retry_open); /* 1 retry < min_retry_concurrency 3 */
    /* No shared state: all zero, nothing open unless a limit is 0. */
    struct breaker_cfg zero = limits(0, 1, 1, 1);
    breaker_view(NULL, &zero, &v);
    assert_true(v.cx_open);
    assert_false(v.rq_open);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_limits_hold_and_recover),
        cmocka_unit_test(test_breaker_retry_budget_math),
        cmocka_unit_test(test_breaker_view_gauges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
