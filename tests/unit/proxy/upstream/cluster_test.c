/* Unit tests for cluster load balancing: distribution over many picks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"

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
    /* nginx's smooth sequence for 5:1:1 is a a b a c a a */
    const int want[7] = {0, 0, 1, 0, 2, 0, 0};
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
    /* smooth: the heavy endpoint never gets all 5 of its turns in a row within a cycle; across
     * cycle boundaries (..a a | a a..) the longest run is 4 */
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
        cmocka_unit_test(test_cluster_no_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
