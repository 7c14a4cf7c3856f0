/* Unit tests for cluster load balancing: distribution over many picks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/lb_hash.h"

#define N_EPS 3

static struct endpoint_cfg eps[N_EPS];
static struct cluster_stats cs;
static struct host_stats hs[N_EPS];

static void make(struct cluster_rt *c, struct cluster_cfg *cfg, enum lb_policy lb,
                 const uint32_t *weights)
{
    memset(cfg, 0, sizeof(*cfg));
    for (int i = 0; i < N_EPS; i++) {
        memset(&eps[i], 0, sizeof(eps[i]));
        eps[i].weight = weights[i];
    }
    cfg->lb = lb;
    cfg->endpoints = eps;
    cfg->n_endpoints = N_EPS;
    cfg->lr_choice_count = 2;
    cluster_rt_init(c, cfg, &cs, hs, NULL);
}

static void test_cluster_round_robin_equal(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {1, 1, 1};
    make(&c, &cfg, LB_ROUND_ROBIN, w);
    int seq[6];
    for (int i = 0; i < 6; i++) {
        seq[i] = cluster_pick(&c, (uint64_t)i);
    }
    assert_int_equal(seq[0], 0);
    assert_int_equal(seq[1], 1);
    assert_int_equal(seq[2], 2);
    assert_int_equal(seq[3], 0);
    cluster_rt_deinit(&c);
}

static void test_cluster_round_robin_weighted_smooth(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {5, 1, 1};
    make(&c, &cfg, LB_ROUND_ROBIN, w);
    /* The EDF schedule (lb_sched.h) for 5:1:1: a's turns fall at 0.05, 0.25, 0.45, 0.65 and 0.85
     * of the cycle, b's at 0.5 and c's at 0.75, so a a a b a c a (nginx's smooth weighted round
     * robin, used before, gave a a b a c a a: as smooth, with the same longest run). */
    const int want[7] = {0, 0, 0, 1, 0, 2, 0};
    for (int i = 0; i < 7; i++) {
        assert_int_equal(cluster_pick(&c, 0), want[i]);
    }
    int count[N_EPS] = {0};
    int run = 0, max_run = 0, last = -1;
    for (int i = 0; i < 7000; i++) {
        int k = cluster_pick(&c, 0);
        count[k]++;
        run = k == last ? run + 1 : 1;
        last = k;
        if (run > max_run) {
            max_run = run;
        }
    }
    assert_int_equal(count[0], 5000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    /* smooth: the heavy endpoint never gets all 5 of its turns in a row; across cycle
     * boundaries (..a | a a a..) the longest run is 4 */
    assert_true(max_run <= 4);
    cluster_rt_deinit(&c);
}

static void test_cluster_random_weighted_distribution(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {90, 10, 0 + 1};
    make(&c, &cfg, LB_RANDOM, w);
    int count[N_EPS] = {0};
    for (uint64_t i = 0; i < 100000; i++) {
        count[cluster_pick(&c, i * 7919)]++;
    }
    /* 90/10/1 of 101: within 1 percentage point */
    assert_true(count[0] > 88100 && count[0] < 90100);
    assert_true(count[1] > 8900 && count[1] < 10900);
    assert_true(count[2] > 500 && count[2] < 1500);
    cluster_rt_deinit(&c);
}

static void test_cluster_least_request_prefers_idle(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {1, 1, 1};
    make(&c, &cfg, LB_LEAST_REQUEST, w);
    c.eps[0].active_rq = 10;
    c.eps[1].active_rq = 10;
    c.eps[2].active_rq = 0;
    int count[N_EPS] = {0};
    for (uint64_t i = 0; i < 3000; i++) {
        count[cluster_pick(&c, i)]++;
    }
    /* P2C: the idle endpoint wins whenever drawn (5 of 9 draws include it), the busy ones
     * only when both draws hit busy endpoints. */
    assert_true(count[2] > 1400);
    assert_true(count[0] < 900 && count[1] < 900);
    cluster_rt_deinit(&c);
}

/* LEAST_REQUEST with unequal weights: the effective weight is weight / (active + 1)^bias. */
static void test_cluster_least_request_active_request_bias(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {4, 2, 2};
    int count[N_EPS];

    /* bias 1.0 (Envoy's default): 4/(3+1) = 1 against 2/(0+1) = 2 and 2/(1+1) = 1 */
    make(&c, &cfg, LB_LEAST_REQUEST, w);
    cfg.lr_active_request_bias = 1.0;
    c.eps[0].active_rq = 3;
    c.eps[1].active_rq = 0;
    c.eps[2].active_rq = 1;
    memset(count, 0, sizeof(count));
    for (uint64_t i = 0; i < 4000; i++) {
        count[cluster_pick(&c, i)]++;
    }
    assert_int_equal(count[0], 1000);
    assert_int_equal(count[1], 2000);
    assert_int_equal(count[2], 1000);
    cluster_rt_deinit(&c);

    /* bias 0: active requests are ignored, plain weighted round robin (4:2:2) */
    make(&c, &cfg, LB_LEAST_REQUEST, w);
    cfg.lr_active_request_bias = 0.0;
    c.eps[0].active_rq = 50;
    memset(count, 0, sizeof(count));
    for (uint64_t i = 0; i < 4000; i++) {
        count[cluster_pick(&c, i)]++;
    }
    assert_int_equal(count[0], 2000);
    assert_int_equal(count[1], 1000);
    assert_int_equal(count[2], 1000);
    cluster_rt_deinit(&c);

    /* bias 2: 4/(1+1)^2 = 1 against 2/1 = 2 each */
    make(&c, &cfg, LB_LEAST_REQUEST, w);
    cfg.lr_active_request_bias = 2.0;
    c.eps[0].active_rq = 1;
    memset(count, 0, sizeof(count));
    for (uint64_t i = 0; i < 5000; i++) {
        count[cluster_pick(&c, i)]++;
    }
    assert_int_equal(count[0], 1000);
    assert_int_equal(count[1], 2000);
    assert_int_equal(count[2], 2000);
    cluster_rt_deinit(&c);
}

/* RING_HASH and MAGLEV through cluster_pick_hashed: a key sticks to one endpoint; without a
 * key the pick is random over all of them. */
static void test_cluster_hash_policies_pick_by_key(void **state)
{
    (void)state;
    static const char *names[N_EPS] = {"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"};
    const uint32_t w[N_EPS] = {1, 1, 1};
    for (int kind = 0; kind < 2; kind++) {
        struct cluster_rt c;
        struct cluster_cfg cfg;
        struct arena a;
        arena_init(&a, 0);
        make(&c, &cfg, kind == 0 ? LB_RING_HASH : LB_MAGLEV, w);
        for (int i = 0; i < N_EPS; i++) {
            eps[i].addr.text = str_from_c(names[i]);
        }
        const struct lb_hash *t = kind == 0 ? lb_hash_ring_build(&a, eps, NULL, N_EPS, 1024, 1024)
                                            : lb_hash_maglev_build(&a, eps, NULL, N_EPS, 65537);
        cfg.hash_lb = &t;
        int seen[N_EPS] = {0};
        for (uint64_t key = 0; key < 3000; key++) {
            uint64_t k = key * 0x9e3779b97f4a7c15ULL;
            int first = cluster_pick_hashed(&c, &k, key);
            assert_int_equal(first, (int)lb_hash_pick(t, k));
            /* the same key, with any random value, picks the same endpoint */
            assert_int_equal(cluster_pick_hashed(&c, &k, key + 12345), first);
            /* a host selection retry moves as lb_hash says */
            assert_int_equal(cluster_pick_hashed_retry(&c, &k, 1, key),
                             (int)lb_hash_pick_attempt(t, k, 1));
            seen[first]++;
        }
        for (int i = 0; i < N_EPS; i++) {
            assert_true(seen[i] > 700 && seen[i] < 1300);
        }
        /* no key: random, every endpoint gets some */
        int rnd_seen[N_EPS] = {0};
        for (uint64_t i = 0; i < 3000; i++) {
            rnd_seen[cluster_pick_hashed(&c, NULL, i)]++;
        }
        for (int i = 0; i < N_EPS; i++) {
            assert_true(rnd_seen[i] > 700 && rnd_seen[i] < 1300);
        }
        cluster_rt_deinit(&c);
        arena_deinit(&a);
    }
}

/* ---- weighted picks on larger clusters (the O(log n) pickers of lb_sched.h) ---- */

#define N_BIG 100

static struct endpoint_cfg big_eps[N_BIG];
static struct host_stats big_hs[N_BIG];

static void make_big(struct cluster_rt *c, struct cluster_cfg *cfg, enum lb_policy lb, uint32_t n,
                     const uint32_t *weights)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(big_eps, 0, sizeof(big_eps));
    for (uint32_t i = 0; i < n; i++) {
        big_eps[i].weight = weights[i];
    }
    cfg->lb = lb;
    cfg->endpoints = big_eps;
    cfg->n_endpoints = n;
    cfg->lr_choice_count = 2;
    cfg->lr_active_request_bias = 1.0;
    cluster_rt_init(c, cfg, &cs, big_hs, NULL);
}

/* Checks `n_picks` picks of `c` (endpoints of `weights[n]`): every full cycle (total weight
 * picks, from the first) gives each endpoint exactly its weight, and in every window of up to a
 * cycle's length an endpoint gets at most one more than its share rounded up. */
static void check_weighted_cycles(struct cluster_rt *c, uint32_t n, const uint32_t *weights,
                                  uint32_t cycles)
{
    uint32_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        total += weights[i];
    }
    uint32_t n_picks = total * cycles;
    int *seq = test_malloc(sizeof(int) * n_picks);
    for (uint32_t k = 0; k < n_picks; k++) {
        seq[k] = cluster_pick(c, k);
        assert_true(seq[k] >= 0 && seq[k] < (int)n);
    }
    uint32_t count[N_BIG];
    for (uint32_t cyc = 0; cyc < cycles; cyc++) {
        memset(count, 0, sizeof(count));
        for (uint32_t k = cyc * total; k < (cyc + 1) * total; k++) {
            count[seq[k]]++;
        }
        for (uint32_t i = 0; i < n; i++) {
            assert_int_equal(count[i], weights[i]);
        }
    }
    /* Sliding windows of every length up to a cycle. */
    for (uint32_t len = 1; len <= total; len++) {
        memset(count, 0, sizeof(count));
        for (uint32_t k = 0; k < len; k++) {
            count[seq[k]]++;
        }
        for (uint32_t start = 0;; start++) {
            for (uint32_t i = 0; i < n; i++) {
                uint64_t share = ((uint64_t)len * weights[i] + total - 1) / total;
                if (count[i] > share + 1) {
                    fail_msg("endpoint %u: %u picks in the %u picks from %u (share %llu)", i,
                             count[i], len, start, (unsigned long long)share);
                }
            }
            if (start + len >= n_picks) {
                break;
            }
            count[seq[start]]--;
            count[seq[start + len]]++;
        }
    }
    test_free(seq);
}

static void test_cluster_round_robin_weighted_exact_cycles(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    uint32_t w[N_BIG];
    /* weights 1..10 over 20 endpoints (a cycle of 110 picks) */
    for (uint32_t i = 0; i < 20; i++) {
        w[i] = 1 + i % 10;
    }
    make_big(&c, &cfg, LB_ROUND_ROBIN, 20, w);
    check_weighted_cycles(&c, 20, w, 4);
    cluster_rt_deinit(&c);
    /* one heavy endpoint among light ones, and unrelated weights */
    const uint32_t heavy[6] = {20, 1, 1, 1, 1, 1};
    make_big(&c, &cfg, LB_ROUND_ROBIN, 6, heavy);
    check_weighted_cycles(&c, 6, heavy, 3);
    cluster_rt_deinit(&c);
    const uint32_t odd[7] = {7, 3, 11, 2, 5, 13, 1};
    make_big(&c, &cfg, LB_ROUND_ROBIN, 7, odd);
    check_weighted_cycles(&c, 7, odd, 3);
    cluster_rt_deinit(&c);
    /* 100 endpoints, weights 1..10 (the benchmark's cluster): exact cycles of 550 picks */
    for (uint32_t i = 0; i < N_BIG; i++) {
        w[i] = 1 + i % 10;
    }
    make_big(&c, &cfg, LB_ROUND_ROBIN, N_BIG, w);
    check_weighted_cycles(&c, N_BIG, w, 2);
    cluster_rt_deinit(&c);
    /* very large weights: still exact (the deadlines are integer arithmetic) */
    const uint32_t large[3] = {4000000000u, 1000000000u, 3};
    make_big(&c, &cfg, LB_ROUND_ROBIN, 3, large);
    uint32_t cnt[3] = {0};
    for (uint32_t k = 0; k < 5000; k++) {
        cnt[cluster_pick(&c, k)]++;
    }
    assert_int_equal(cnt[0], 4000);
    assert_int_equal(cnt[1], 1000);
    assert_int_equal(cnt[2], 0);
    cluster_rt_deinit(&c);
}

/* A random source that counts up: draws 0, 1, 2, ... */
static uint64_t counting_next(void *ctx)
{
    uint64_t *n = ctx;
    return (*n)++;
}

static void test_cluster_random_weighted_binary_search(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    uint32_t w[N_BIG];
    uint32_t total = 0;
    for (uint32_t i = 0; i < N_BIG; i++) {
        w[i] = 1 + (i * 7) % 13;
        total += w[i];
    }
    make_big(&c, &cfg, LB_RANDOM, N_BIG, w);
    /* Every draw in [0, total) lands on the endpoint whose share of the weights holds it: in
     * order, each endpoint exactly its weight. */
    uint64_t n = 0;
    struct lb_rand r = {counting_next, &n, NULL, 0};
    for (uint32_t i = 0; i < N_BIG; i++) {
        for (uint32_t k = 0; k < w[i]; k++) {
            assert_int_equal(cluster_pick_with(&c, &r), (int)i);
        }
    }
    assert_int_equal(n, total);
    cluster_rt_deinit(&c);
}

/* LEAST_REQUEST with unequal weights over many endpoints: the one with requests in flight is
 * picked less, in proportion to its effective weight. */
static void test_cluster_least_request_weighted_many(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    uint32_t w[N_BIG];
    for (uint32_t i = 0; i < 10; i++) {
        w[i] = i < 5 ? 2 : 1;
    }
    make_big(&c, &cfg, LB_LEAST_REQUEST, 10, w);
    /* endpoint 0: weight 2 with 3 in flight -> 2/4 = 0.5; the other heavy ones 2, light 1 */
    c.eps[0].active_rq = 3;
    uint32_t cnt[10] = {0};
    for (uint32_t k = 0; k < 27000; k++) {
        cnt[cluster_pick(&c, k)]++;
    }
    /* effective weights 0.5, 2, 2, 2, 2, 1, 1, 1, 1, 1: 13.5 in all, so 2000 picks per unit
     * (give or take the first round, scheduled from the configured weights) */
    assert_true(cnt[0] >= 1000 - 2 && cnt[0] <= 1000 + 2);
    for (uint32_t i = 1; i < 5; i++) {
        assert_true(cnt[i] >= 4000 - 2 && cnt[i] <= 4000 + 2);
    }
    for (uint32_t i = 5; i < 10; i++) {
        assert_true(cnt[i] >= 2000 - 2 && cnt[i] <= 2000 + 2);
    }
    cluster_rt_deinit(&c);
}

static void test_cluster_no_endpoints(void **state)
{
    (void)state;
    struct cluster_cfg cfg = {.lb = LB_ROUND_ROBIN};
    struct cluster_rt c;
    cluster_rt_init(&c, &cfg, &cs, hs, NULL);
    assert_int_equal(cluster_pick(&c, 1), -1);
    cluster_rt_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cluster_round_robin_equal),
        cmocka_unit_test(test_cluster_round_robin_weighted_smooth),
        cmocka_unit_test(test_cluster_random_weighted_distribution),
        cmocka_unit_test(test_cluster_least_request_prefers_idle),
        cmocka_unit_test(test_cluster_least_request_active_request_bias),
        cmocka_unit_test(test_cluster_hash_policies_pick_by_key),
        cmocka_unit_test(test_cluster_round_robin_weighted_exact_cycles),
        cmocka_unit_test(test_cluster_random_weighted_binary_search),
        cmocka_unit_test(test_cluster_least_request_weighted_many),
        cmocka_unit_test(test_cluster_no_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
