/* Unit tests for lb_hash: RING_HASH and MAGLEV tables: stickiness, weight-proportional
 * distribution, minimal disruption when an endpoint is added, sizes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/hash.h"
#include "proxy/upstream/lb_hash.h"

#define MAX_EPS 8
#define N_KEYS 100000

static struct endpoint_cfg eps[MAX_EPS];
static char names[MAX_EPS][32];

static void make_eps(uint32_t n, const uint32_t *weights)
{
    for (uint32_t i = 0; i < n; i++) {
        memset(&eps[i], 0, sizeof(eps[i]));
        snprintf(names[i], sizeof(names[i]), "10.0.0.%u:8080", i + 1);
        eps[i].addr.text = str_from_c(names[i]);
        eps[i].weight = weights != NULL ? weights[i] : 1;
    }
}

/* Request keys as a hash policy makes them: XXH64 of a header value. */
static uint64_t key(uint32_t i)
{
    char v[32];
    int n = snprintf(v, sizeof(v), "user-%u", i);
    return hash_xxh64(v, (size_t)n, 0);
}

static const struct lb_hash *build(struct arena *a, enum lb_hash_kind kind, uint32_t n)
{
    return kind == LB_HASH_RING ? lb_hash_ring_build(a, eps, NULL, n, LB_HASH_RING_MIN_DEFAULT,
                                                     LB_HASH_RING_MAX_DEFAULT)
                                : lb_hash_maglev_build(a, eps, NULL, n, LB_HASH_MAGLEV_DEFAULT);
}

static void check_sticky_and_even(enum lb_hash_kind kind)
{
    struct arena a;
    arena_init(&a, 0);
    make_eps(4, NULL);
    const struct lb_hash *h = build(&a, kind, 4);
    /* a second build from the same endpoints is the same table (every worker agrees) */
    const struct lb_hash *h2 = build(&a, kind, 4);
    uint32_t count[4] = {0};
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint32_t e = lb_hash_pick(h, key(i));
        assert_true(e < 4);
        assert_int_equal(lb_hash_pick(h, key(i)), e);
        assert_int_equal(lb_hash_pick(h2, key(i)), e);
        count[e]++;
    }
    /* Equal weights: each gets a quarter, within what the ring's granularity allows (a 1024
     * point ring spreads within a few percent; Maglev within a fraction of one). */
    for (int e = 0; e < 4; e++) {
        assert_true(count[e] > N_KEYS / 4 * 0.85 && count[e] < N_KEYS / 4 * 1.15);
    }
    arena_deinit(&a);
}

static void test_lb_hash_ring_sticky_and_even(void **state)
{
    (void)state;
    check_sticky_and_even(LB_HASH_RING);
}

static void test_lb_hash_maglev_sticky_and_even(void **state)
{
    (void)state;
    check_sticky_and_even(LB_HASH_MAGLEV);
}

static void check_weights(enum lb_hash_kind kind)
{
    struct arena a;
    arena_init(&a, 0);
    const uint32_t w[3] = {3, 1, 1};
    make_eps(3, w);
    const struct lb_hash *h = build(&a, kind, 3);
    uint32_t count[3] = {0};
    for (uint32_t i = 0; i < N_KEYS; i++) {
        count[lb_hash_pick(h, key(i))]++;
    }
    /* 3:1:1 -> 60% / 20% / 20%, within 3 points */
    assert_true(count[0] > N_KEYS * 0.57 && count[0] < N_KEYS * 0.63);
    assert_true(count[1] > N_KEYS * 0.17 && count[1] < N_KEYS * 0.23);
    assert_true(count[2] > N_KEYS * 0.17 && count[2] < N_KEYS * 0.23);
    arena_deinit(&a);
}

static void test_lb_hash_ring_weighted(void **state)
{
    (void)state;
    check_weights(LB_HASH_RING);
}

static void test_lb_hash_maglev_weighted(void **state)
{
    (void)state;
    check_weights(LB_HASH_MAGLEV);
}

/* Going from 4 to 5 endpoints moves about 1/5 of the keys, all to the new endpoint (Maglev:
 * nearly all). For the ring this holds when every endpoint keeps its points, i.e. when the
 * ring grows with the endpoints (`ring_min` 1024 then 1280: 256 points each). With a fixed
 * minimum_ring_size, Envoy's ring gives each endpoint ring_size/N points, so the old endpoints
 * also lose their last points and the keys on those move too (about 30% in all for 4 -> 5);
 * remora builds the same ring, so it moves the same keys. */
static void check_minimal_disruption(enum lb_hash_kind kind, uint64_t ring_min_4,
                                     uint64_t ring_min_5, double max_moved, double max_elsewhere)
{
    struct arena a;
    arena_init(&a, 0);
    make_eps(5, NULL);
    const struct lb_hash *four, *five;
    if (kind == LB_HASH_RING) {
        four = lb_hash_ring_build(&a, eps, NULL, 4, ring_min_4, LB_HASH_RING_MAX_DEFAULT);
        five = lb_hash_ring_build(&a, eps, NULL, 5, ring_min_5, LB_HASH_RING_MAX_DEFAULT);
    } else {
        four = build(&a, kind, 4);
        five = build(&a, kind, 5);
    }
    uint32_t moved = 0, moved_elsewhere = 0;
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint32_t before = lb_hash_pick(four, key(i)), after = lb_hash_pick(five, key(i));
        if (before != after) {
            moved++;
            moved_elsewhere += after != 4;
        }
    }
    assert_true(moved > N_KEYS * 0.15 && moved < N_KEYS * max_moved);
    assert_true(moved_elsewhere <= N_KEYS * max_elsewhere);
    arena_deinit(&a);
}

static void test_lb_hash_ring_adding_an_endpoint_moves_one_nth(void **state)
{
    (void)state;
    check_minimal_disruption(LB_HASH_RING, 1024, 1280, 0.25, 0);
    check_minimal_disruption(LB_HASH_RING, 1024, 1024, 0.35, 0.12);
}

static void test_lb_hash_maglev_adding_an_endpoint_moves_one_nth(void **state)
{
    (void)state;
    check_minimal_disruption(LB_HASH_MAGLEV, 0, 0, 0.25, 0.01);
}

static void test_lb_hash_sizes(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    make_eps(3, NULL);
    /* Envoy's scaling: the lightest endpoint gets ceil(1024 / 3) = 342 points, so 1026. */
    const struct lb_hash *r = lb_hash_ring_build(&a, eps, NULL, 3, 1024, 8 * 1024 * 1024);
    assert_int_equal(r->size, 1026);
    assert_int_equal(r->min_per_ep, 342);
    assert_int_equal(r->max_per_ep, 342);
    /* capped by maximum_ring_size */
    r = lb_hash_ring_build(&a, eps, NULL, 3, 1024, 512);
    assert_int_equal(r->size, 512);
    /* weights 1 and 3: the light one gets 1024/4 = 256 points, the heavy 768 */
    const uint32_t w[2] = {1, 3};
    make_eps(2, w);
    r = lb_hash_ring_build(&a, eps, NULL, 2, 1024, 8 * 1024 * 1024);
    assert_int_equal(r->size, 1024);
    assert_int_equal(r->min_per_ep, 256);
    assert_int_equal(r->max_per_ep, 768);
    /* a subset: only endpoint 1, picks return its index in eps */
    const uint32_t only[1] = {1};
    r = lb_hash_ring_build(&a, eps, only, 1, 16, 16);
    const struct lb_hash *m = lb_hash_maglev_build(&a, eps, only, 1, 7);
    for (uint32_t i = 0; i < 100; i++) {
        assert_int_equal(lb_hash_pick(r, key(i)), 1);
        assert_int_equal(lb_hash_pick(m, key(i)), 1);
    }
    /* Maglev: every slot filled, shares by weight */
    m = lb_hash_maglev_build(&a, eps, NULL, 2, 65537);
    assert_int_equal(m->size, 65537);
    assert_int_equal(m->min_per_ep + m->max_per_ep, 65537);
    assert_true(m->max_per_ep >= 3 * m->min_per_ep - 3 && m->max_per_ep <= 3 * m->min_per_ep + 3);
    arena_deinit(&a);
}

/* With an endpoint excluded (unhealthy), its keys go elsewhere and every other key stays. */
static void check_pick_in(enum lb_hash_kind kind)
{
    struct arena a;
    arena_init(&a, 0);
    make_eps(4, NULL);
    const struct lb_hash *h = build(&a, kind, 4);
    const uint32_t healthy[3] = {0, 1, 3}; /* endpoint 2 is out */
    const uint32_t all[4] = {0, 1, 2, 3};
    uint32_t count[4] = {0};
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint32_t e = lb_hash_pick(h, key(i));
        uint32_t f = lb_hash_pick_in(h, key(i), 0, healthy, 3);
        assert_int_equal(lb_hash_pick_in(h, key(i), 0, all, 4), e);
        assert_int_not_equal(f, 2);
        if (e != 2) {
            assert_int_equal(f, e);
        }
        count[f]++;
    }
    /* endpoint 2's quarter is spread over the others */
    for (int e = 0; e < 4; e++) {
        if (e != 2) {
            assert_true(count[e] > N_KEYS / 3 * 0.8 && count[e] < N_KEYS / 3 * 1.2);
        }
    }
    /* only an endpoint the table does not have: falls back to set[key % n], still sticky */
    const uint32_t stranger[1] = {7};
    assert_int_equal(lb_hash_pick_in(h, key(1), 0, stranger, 1), 7);
    arena_deinit(&a);
}

static void test_lb_hash_pick_in_skips_excluded_endpoints(void **state)
{
    (void)state;
    check_pick_in(LB_HASH_RING);
    check_pick_in(LB_HASH_MAGLEV);
}

/* Host selection retries move off the key's endpoint (Envoy: the ring pick moves `attempt`
 * points on, the Maglev key is xored with -attempt); the same attempt is still deterministic. */
static void check_attempts(enum lb_hash_kind kind)
{
    struct arena a;
    arena_init(&a, 0);
    make_eps(3, NULL);
    const struct lb_hash *h = build(&a, kind, 3);
    uint32_t differ = 0;
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint32_t e0 = lb_hash_pick(h, key(i));
        assert_int_equal(lb_hash_pick_attempt(h, key(i), 0), e0);
        uint32_t e1 = lb_hash_pick_attempt(h, key(i), 1);
        assert_int_equal(lb_hash_pick_attempt(h, key(i), 1), e1);
        differ += e1 != e0;
    }
    /* ring: the next point belongs to another endpoint about 2/3 of the time; Maglev: a
     * fresh slot, another endpoint about 2/3 of the time */
    assert_true(differ > N_KEYS / 2 && differ < N_KEYS * 0.8);
    arena_deinit(&a);
}

static void test_lb_hash_retry_attempts_move_off_the_endpoint(void **state)
{
    (void)state;
    check_attempts(LB_HASH_RING);
    check_attempts(LB_HASH_MAGLEV);
}

/* The same endpoints listed in another order give the same choices. */
static void test_lb_hash_independent_of_endpoint_order(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    const uint32_t w[4] = {1, 2, 3, 1};
    make_eps(4, w);
    const uint32_t shuffled[4] = {2, 0, 3, 1};
    const struct lb_hash *r1 = lb_hash_ring_build(&a, eps, NULL, 4, 1000, 100000);
    const struct lb_hash *r2 = lb_hash_ring_build(&a, eps, shuffled, 4, 1000, 100000);
    const struct lb_hash *m1 = lb_hash_maglev_build(&a, eps, NULL, 4, 65537);
    const struct lb_hash *m2 = lb_hash_maglev_build(&a, eps, shuffled, 4, 65537);
    for (uint32_t i = 0; i < N_KEYS; i++) {
        assert_int_equal(lb_hash_pick(r1, key(i)), lb_hash_pick(r2, key(i)));
        assert_int_equal(lb_hash_pick(m1, key(i)), lb_hash_pick(m2, key(i)));
    }
    arena_deinit(&a);
}

static void test_lb_hash_is_prime(void **state)
{
    (void)state;
    assert_true(lb_hash_is_prime(2));
    assert_true(lb_hash_is_prime(7));
    assert_true(lb_hash_is_prime(65537));
    assert_true(lb_hash_is_prime(5000011));
    assert_false(lb_hash_is_prime(0));
    assert_false(lb_hash_is_prime(1));
    assert_false(lb_hash_is_prime(65536));
    assert_false(lb_hash_is_prime(65539 * 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lb_hash_ring_sticky_and_even),
        cmocka_unit_test(test_lb_hash_maglev_sticky_and_even),
        cmocka_unit_test(test_lb_hash_ring_weighted),
        cmocka_unit_test(test_lb_hash_maglev_weighted),
        cmocka_unit_test(test_lb_hash_ring_adding_an_endpoint_moves_one_nth),
        cmocka_unit_test(test_lb_hash_maglev_adding_an_endpoint_moves_one_nth),
        cmocka_unit_test(test_lb_hash_sizes),
        cmocka_unit_test(test_lb_hash_pick_in_skips_excluded_endpoints),
        cmocka_unit_test(test_lb_hash_retry_attempts_move_off_the_endpoint),
        cmocka_unit_test(test_lb_hash_independent_of_endpoint_order),
        cmocka_unit_test(test_lb_hash_is_prime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
