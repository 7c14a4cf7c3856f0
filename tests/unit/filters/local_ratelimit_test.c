/* Unit tests for the local rate limit filter's token bucket: refill arithmetic at fill-interval
 * boundaries, the cap, a stale clock read from another worker, the reset time, and the shared
 * bucket's lock-free CAS under contention (threads racing for a fixed number of tokens). The
 * filter's .c is included for its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <pthread.h>

#include "filters/local_ratelimit/local_ratelimit.c"

static const struct bucket_params params = {
    .max_tokens = 3, .tokens_per_fill = 2, .fill_interval_ms = 100, .base_ms = 1000};

static void test_local_ratelimit_bucket_refill(void **state)
{
    (void)state;
    struct token_bucket b;
    bucket_init(&b, &params, 1000);
    /* starts full */
    struct bucket_take t = bucket_take(&b, &params, 1010);
    assert_true(t.ok);
    assert_int_equal(t.remaining, 2);
    assert_int_equal(t.next_fill_ms, 90);
    assert_true(bucket_take(&b, &params, 1020).ok);
    assert_true(bucket_take(&b, &params, 1099).ok);
    t = bucket_take(&b, &params, 1099);
    assert_false(t.ok);
    assert_int_equal(t.remaining, 0);
    assert_int_equal(t.next_fill_ms, 1);
    /* the boundary at 1100 adds tokens_per_fill (2) */
    t = bucket_take(&b, &params, 1100);
    assert_true(t.ok);
    assert_int_equal(t.remaining, 1);
    assert_int_equal(t.next_fill_ms, 100);
    assert_true(bucket_take(&b, &params, 1150).ok);
    assert_false(bucket_take(&b, &params, 1199).ok);
    /* five intervals later: capped at max_tokens */
    t = bucket_take(&b, &params, 1750);
    assert_true(t.ok);
    assert_int_equal(t.remaining, 2);
}

static void test_local_ratelimit_stale_clock_adds_nothing(void **state)
{
    (void)state;
    struct token_bucket b;
    bucket_init(&b, &params, 1000);
    for (int i = 0; i < 3; i++) {
        assert_true(bucket_take(&b, &params, 1300).ok); /* epoch 3 stored */
    }
    assert_false(bucket_take(&b, &params, 1300).ok);
    /* another worker's clock read a little earlier (epoch 2): no refill, epoch kept */
    assert_false(bucket_take(&b, &params, 1290).ok);
    uint64_t w = atomic_load(&b.word);
    assert_int_equal(w >> 32, 3);
    assert_true(bucket_take(&b, &params, 1400).ok);
}

static void test_local_ratelimit_no_refill_before_first_boundary(void **state)
{
    (void)state;
    struct bucket_params p = {
        .max_tokens = 1, .tokens_per_fill = 1, .fill_interval_ms = 1000, .base_ms = 0};
    struct token_bucket b;
    bucket_init(&b, &p, 5500); /* created mid-interval: epoch 5 */
    assert_true(bucket_take(&b, &p, 5600).ok);
    struct bucket_take t = bucket_take(&b, &p, 5999);
    assert_false(t.ok);
    assert_int_equal(t.next_fill_ms, 1);
    assert_true(bucket_take(&b, &p, 6000).ok);
}

/* ---- the shared bucket under contention ---- */

#define N_THREADS 8
#define TRIES 20000

struct racer {
    struct token_bucket *b;
    const struct bucket_params *p;
    uint64_t now_ms;
    unsigned got;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < TRIES; i++) {
        r->got += bucket_take(r->b, r->p, r->now_ms).ok;
    }
    return NULL;
}

static void test_local_ratelimit_shared_bucket_cas(void **state)
{
    (void)state;
    struct bucket_params p = {
        .max_tokens = 50000, .tokens_per_fill = 1, .fill_interval_ms = 1000, .base_ms = 0};
    struct token_bucket b;
    bucket_init(&b, &p, 0);
    pthread_t th[N_THREADS];
    struct racer rs[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        rs[i] = (struct racer){&b, &p, 10, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    unsigned total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += rs[i].got;
    }
    /* 160000 attempts on 50000 tokens: exactly 50000 succeed, none twice, none lost */
    assert_int_equal(total, 50000);
    assert_int_equal((uint32_t)atomic_load(&b.word), 0);

    /* and with a refill racing: every thread at the next interval; one refill of 1 token */
    for (int i = 0; i < N_THREADS; i++) {
        rs[i] = (struct racer){&b, &p, 1000, 0};
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    total = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        total += rs[i].got;
    }
    assert_int_equal(total, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_ratelimit_bucket_refill),
        cmocka_unit_test(test_local_ratelimit_stale_clock_adds_nothing),
        cmocka_unit_test(test_local_ratelimit_no_refill_before_first_boundary),
        cmocka_unit_test(test_local_ratelimit_shared_bucket_cas),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
