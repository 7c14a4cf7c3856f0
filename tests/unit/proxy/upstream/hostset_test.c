/* Unit tests for hostset: Envoy's priority-load arithmetic (the tables of Envoy's docs,
 * arch_overview/upstream/load_balancing/priority.rst), panic routing, and picks that skip
 * unhealthy endpoints. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/hostset.h"
#include "proxy/upstream/shared.h"

/* Loads for priorities whose healthy share is given in percent (100 hosts each). The docs'
 * tables leave panic aside, so panic routing is disabled here (threshold 0); with the default
 * 50%, rows whose levels are all under half healthy and whose total health is under 100 (25/25,
 * 25/25/20) would be in total panic and spread by host counts instead: see the panic test. */
static void loads_for(uint32_t n, const uint64_t *healthy_pct, uint32_t *load, bool *panic)
{
    uint64_t total[8];
    uint32_t health[8];
    for (uint32_t i = 0; i < n; i++) {
        total[i] = 100;
    }
    hostset_compute(n, healthy_pct, total, 140, 0, health, load, panic);
}

static void test_hostset_priority_load_two_levels(void **state)
{
    (void)state;
    /* Envoy's first table: P=1 fully healthy. */
    static const struct {
        uint64_t p0;
        uint32_t l0, l1;
    } rows[] = {{100, 100, 0}, {72, 100, 0}, {71, 99, 1}, {50, 70, 30}, {25, 35, 65}, {0, 0, 100}};
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        uint64_t h[2] = {rows[r].p0, 100};
        uint32_t load[2];
        bool panic[2];
        loads_for(2, h, load, panic);
        assert_int_equal(load[0], rows[r].l0);
        assert_int_equal(load[1], rows[r].l1);
        assert_false(panic[0]); /* normalized total health is 100: no panic anywhere */
        assert_false(panic[1]);
    }
}

static void test_hostset_priority_load_normalized(void **state)
{
    (void)state;
    /* Envoy's second table: both levels degrade. */
    static const struct {
        uint64_t p0, p1;
        uint32_t l0, l1;
    } rows[] = {{100, 100, 100, 0}, {72, 72, 100, 0},  {71, 71, 99, 1},
                {50, 50, 70, 30},   {25, 100, 35, 65}, {25, 25, 50, 50}};
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        uint64_t h[2] = {rows[r].p0, rows[r].p1};
        uint32_t load[2];
        bool panic[2];
        loads_for(2, h, load, panic);
        assert_int_equal(load[0], rows[r].l0);
        assert_int_equal(load[1], rows[r].l1);
    }
}

static void test_hostset_priority_load_three_levels(void **state)
{
    (void)state;
    /* Envoy's third table. The last row reads 36/36/28 in the docs; Envoy's code (which this
     * follows) gives the two points of rounding left over to the first healthy priority:
     * 35 + 2, 35, 28. */
    static const struct {
        uint64_t p0, p1, p2;
        uint32_t l0, l1, l2;
    } rows[] = {
        {100, 100, 100, 100, 0, 0}, {72, 72, 100, 100, 0, 0},  {71, 71, 100, 99, 1, 0},
        {50, 50, 100, 70, 30, 0},   {25, 100, 100, 35, 65, 0}, {25, 25, 100, 35, 35, 30},
        {25, 25, 20, 37, 35, 28},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        uint64_t h[3] = {rows[r].p0, rows[r].p1, rows[r].p2};
        uint32_t load[3];
        bool panic[3];
        loads_for(3, h, load, panic);
        assert_int_equal(load[0], rows[r].l0);
        assert_int_equal(load[1], rows[r].l1);
        assert_int_equal(load[2], rows[r].l2);
        assert_int_equal(load[0] + load[1] + load[2], 100);
    }
}

static void test_hostset_overprovisioning_factor(void **state)
{
    (void)state;
    assert_int_equal(hostset_priority_health(80, 100, 140), 100); /* 112 capped */
    assert_int_equal(hostset_priority_health(50, 100, 140), 70);
    assert_int_equal(hostset_priority_health(50, 100, 100), 50);
    assert_int_equal(hostset_priority_health(1, 3, 140), 46); /* 140 / 3, truncated */
    assert_int_equal(hostset_priority_health(0, 0, 140), 0);
}

static void test_hostset_panic_threshold(void **state)
{
    (void)state;
    /* Below the threshold (strictly) a priority panics; exactly at it, it does not. */
    assert_true(hostset_priority_panic(49, 100, 50));
    assert_false(hostset_priority_panic(50, 100, 50));
    assert_true(hostset_priority_panic(1, 3, 50));
    assert_false(hostset_priority_panic(0, 4, 0)); /* 0 disables panic */
    assert_true(hostset_priority_panic(0, 0, 50)); /* an empty priority has 0% healthy */

    /* One priority, 1 of 4 healthy: health 35 < 100, 25% < 50% -> total panic, all of P0. */
    uint64_t healthy[2] = {1, 0}, total[2] = {4, 0};
    uint32_t health[2], load[2];
    bool panic[2];
    hostset_compute(1, healthy, total, 140, 50, health, load, panic);
    assert_true(panic[0]);
    assert_int_equal(load[0], 100);

    /* Envoy docs' last three-level row (25/25/20% healthy) with the default threshold: every
     * level is under 50% and total health is 98, so it is total panic, 34/33/33 by hosts. */
    uint64_t h5[3] = {25, 25, 20}, t5[3] = {100, 100, 100};
    uint32_t health3[3], load3[3];
    bool panic3[3];
    hostset_compute(3, h5, t5, 140, 50, health3, load3, panic3);
    assert_int_equal(load3[0], 34);
    assert_int_equal(load3[1], 33);
    assert_int_equal(load3[2], 33);

    /* Two priorities, 10% and 30% healthy: both panic, so load follows host counts (50/50)
     * instead of health (25/75). */
    uint64_t h2[2] = {1, 3}, t2[2] = {10, 10};
    hostset_compute(2, h2, t2, 140, 50, health, load, panic);
    assert_true(panic[0] && panic[1]);
    assert_int_equal(load[0], 50);
    assert_int_equal(load[1], 50);

    /* P0 dead, P1 60% healthy: P1 takes everything from its healthy hosts (no total panic). */
    uint64_t h3[2] = {0, 6}, t3[2] = {10, 10};
    hostset_compute(2, h3, t3, 140, 50, health, load, panic);
    assert_int_equal(load[0], 0);
    assert_int_equal(load[1], 100);
    assert_true(panic[0]);
    assert_false(panic[1]);

    /* Nothing healthy and panic disabled: P0 gets the picks, which find nobody. */
    uint64_t h4[2] = {0, 0}, t4[2] = {2, 2};
    hostset_compute(2, h4, t4, 140, 0, health, load, panic);
    assert_int_equal(load[0], 100);
    assert_int_equal(load[1], 0);
    assert_false(panic[0] || panic[1]);
}

/* ---- picks over a cluster with cluster-wide health ---- */

#define N_EPS 4

static struct endpoint_cfg eps[N_EPS];
static struct cluster_stats cs;
static struct host_stats hs[N_EPS];
static struct endpoint_shared ep_sh[N_EPS];
static struct cluster_shared sh;

static void make(struct cluster_rt *c, struct cluster_cfg *cfg, const uint32_t *prio,
                 uint32_t threshold)
{
    memset(cfg, 0, sizeof(*cfg));
    memset(&sh, 0, sizeof(sh));
    memset(ep_sh, 0, sizeof(ep_sh));
    memset(&cs, 0, sizeof(cs));
    uint32_t max = 0;
    for (int i = 0; i < N_EPS; i++) {
        memset(&eps[i], 0, sizeof(eps[i]));
        eps[i].weight = 1;
        eps[i].priority = prio[i];
        max = prio[i] > max ? prio[i] : max;
    }
    cfg->lb = LB_ROUND_ROBIN;
    cfg->endpoints = eps;
    cfg->n_endpoints = N_EPS;
    cfg->n_priorities = max + 1;
    cfg->overprovisioning_factor = 140;
    cfg->panic_threshold = threshold;
    sh.eps = ep_sh;
    sh.n_eps = N_EPS;
    cluster_rt_init(c, cfg, &cs, hs, &sh);
}

/* What main does: change the bits, then publish. */
static void set_health(uint32_t i, uint32_t bits)
{
    atomic_store(&ep_sh[i].health, bits);
    atomic_fetch_add_explicit(&sh.health_gen, 1, memory_order_release);
}

static void count_picks(struct cluster_rt *c, int n, int *count)
{
    memset(count, 0, sizeof(int) * N_EPS);
    for (int k = 0; k < n; k++) {
        int i = cluster_pick(c, (uint64_t)k * 7919);
        assert_true(i >= 0 && i < N_EPS);
        count[i]++;
    }
}

static void test_hostset_pick_skips_unhealthy(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t prio[N_EPS] = {0, 0, 0, 0};
    make(&c, &cfg, prio, 50);
    int count[N_EPS];
    count_picks(&c, 400, count);
    assert_int_equal(count[0], 100);
    set_health(1, HEALTH_F_FAILED_ACTIVE_HC);
    set_health(2, HEALTH_F_FAILED_OUTLIER_CHECK | HEALTH_F_PENDING_ACTIVE_HC);
    count_picks(&c, 400, count);
    assert_int_equal(count[1], 0);
    assert_int_equal(count[2], 0);
    assert_int_equal(count[0] + count[3], 400);
    assert_int_equal(stat_get(&cs.lb_healthy_panic), 0);
    /* Informational bits alone keep a host in rotation. */
    set_health(1, HEALTH_F_PENDING_ACTIVE_HC | HEALTH_F_ACTIVE_HC_TIMEOUT);
    count_picks(&c, 300, count);
    assert_true(count[1] > 0);
    cluster_rt_deinit(&c);
}

static void test_hostset_pick_panic(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t prio[N_EPS] = {0, 0, 0, 0};
    make(&c, &cfg, prio, 50);
    set_health(0, HEALTH_F_FAILED_ACTIVE_HC);
    set_health(1, HEALTH_F_FAILED_ACTIVE_HC);
    set_health(2, HEALTH_F_FAILED_ACTIVE_HC); /* 25% healthy < 50%: panic, all hosts */
    int count[N_EPS];
    count_picks(&c, 400, count);
    for (int i = 0; i < N_EPS; i++) {
        assert_int_equal(count[i], 100);
    }
    assert_int_equal(stat_get(&cs.lb_healthy_panic), 400);
    cluster_rt_deinit(&c);

    /* The same with panic routing disabled: only the healthy one. */
    make(&c, &cfg, prio, 0);
    set_health(0, HEALTH_F_FAILED_ACTIVE_HC);
    set_health(1, HEALTH_F_FAILED_ACTIVE_HC);
    set_health(2, HEALTH_F_FAILED_ACTIVE_HC);
    count_picks(&c, 100, count);
    assert_int_equal(count[3], 100);
    set_health(3, HEALTH_F_FAILED_ACTIVE_HC);
    assert_int_equal(cluster_pick(&c, 1), -1);
    cluster_rt_deinit(&c);
}

static void test_hostset_pick_priority_failover(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t prio[N_EPS] = {0, 0, 1, 1};
    make(&c, &cfg, prio, 50);
    int count[N_EPS];
    count_picks(&c, 400, count);
    assert_int_equal(count[0] + count[1], 400); /* P0 healthy: P1 idle */
    set_health(0, HEALTH_F_FAILED_ACTIVE_HC);   /* P0 at 50%: health 70 -> 70/30 */
    count_picks(&c, 1000, count);
    assert_int_equal(count[0], 0);
    assert_true(count[1] > 600 && count[1] < 800);
    assert_int_equal(count[1] + count[2] + count[3], 1000);
    set_health(1, HEALTH_F_FAILED_OUTLIER_CHECK); /* P0 down: everything to P1 */
    count_picks(&c, 400, count);
    assert_int_equal(count[2] + count[3], 400);
    assert_int_equal(stat_get(&cs.lb_healthy_panic), 0);
    set_health(0, 0);
    set_health(1, 0);
    count_picks(&c, 400, count);
    assert_int_equal(count[0] + count[1], 400);
    cluster_rt_deinit(&c);
}

/* Weighted picks keep their state (EDF heap, cumulative weights) per host set: a health change
 * rebuilds it for the new healthy set, so the picks follow the remaining weights exactly. */
static void make_weighted(struct cluster_rt *c, struct cluster_cfg *cfg, enum lb_policy lb,
                          const uint32_t *weights)
{
    const uint32_t prio[N_EPS] = {0, 0, 0, 0};
    make(c, cfg, prio, 50);
    cluster_rt_deinit(c);
    for (int i = 0; i < N_EPS; i++) {
        eps[i].weight = weights[i];
    }
    cfg->lb = lb;
    cfg->lr_active_request_bias = 1.0;
    cluster_rt_init(c, cfg, &cs, hs, &sh);
}

/* `cycles` cycles of `total` picks each give every endpoint exactly want[i] per cycle. */
static void expect_cycles(struct cluster_rt *c, uint32_t total, const int *want, int cycles)
{
    for (int cyc = 0; cyc < cycles; cyc++) {
        int count[N_EPS] = {0};
        for (uint32_t k = 0; k < total; k++) {
            int i = cluster_pick(c, k * 7919);
            assert_true(i >= 0 && i < N_EPS);
            count[i]++;
        }
        for (int i = 0; i < N_EPS; i++) {
            assert_int_equal(count[i], want[i]);
        }
    }
}

static uint64_t counting_next(void *ctx)
{
    uint64_t *n = ctx;
    return (*n)++;
}

static void test_hostset_weighted_state_rebuilt_on_health_change(void **state)
{
    (void)state;
    struct cluster_rt c;
    struct cluster_cfg cfg;
    const uint32_t w[N_EPS] = {4, 3, 2, 1};

    /* ROUND_ROBIN and LEAST_REQUEST (no requests in flight: weighted round robin) */
    for (int lr = 0; lr < 2; lr++) {
        make_weighted(&c, &cfg, lr ? LB_LEAST_REQUEST : LB_ROUND_ROBIN, w);
        const int all[N_EPS] = {4, 3, 2, 1};
        expect_cycles(&c, 10, all, 3);
        /* three picks into a cycle, endpoint 1 goes: the next cycles are over 4 + 2 + 1 */
        (void)cluster_pick(&c, 1);
        (void)cluster_pick(&c, 2);
        (void)cluster_pick(&c, 3);
        set_health(1, HEALTH_F_FAILED_OUTLIER_CHECK);
        const int without1[N_EPS] = {4, 0, 2, 1};
        expect_cycles(&c, 7, without1, 3);
        /* then endpoint 0 too (2 of 4 healthy with factor 140: no panic): 2 + 1 */
        set_health(0, HEALTH_F_FAILED_ACTIVE_HC);
        const int only23[N_EPS] = {0, 0, 2, 1};
        expect_cycles(&c, 3, only23, 3);
        /* back to all four */
        set_health(0, 0);
        set_health(1, 0);
        expect_cycles(&c, 10, all, 3);
        assert_int_equal(stat_get(&cs.lb_healthy_panic), 0);
        cluster_rt_deinit(&c);
    }

    /* RANDOM: consecutive draws 0..total-1 walk the healthy set's cumulative weights */
    make_weighted(&c, &cfg, LB_RANDOM, w);
    uint64_t n = 0;
    struct lb_rand r = {counting_next, &n, NULL, 0};
    const int want_all[10] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 3};
    for (int k = 0; k < 10; k++) {
        assert_int_equal(cluster_pick_with(&c, &r), want_all[k]);
    }
    set_health(2, HEALTH_F_FAILED_EDS_HEALTH);
    n = 0;
    const int want_no2[8] = {0, 0, 0, 0, 1, 1, 1, 3};
    for (int k = 0; k < 8; k++) {
        assert_int_equal(cluster_pick_with(&c, &r), want_no2[k]);
    }
    set_health(2, 0);
    n = 0;
    for (int k = 0; k < 10; k++) {
        assert_int_equal(cluster_pick_with(&c, &r), want_all[k]);
    }
    cluster_rt_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostset_priority_load_two_levels),
        cmocka_unit_test(test_hostset_priority_load_normalized),
        cmocka_unit_test(test_hostset_priority_load_three_levels),
        cmocka_unit_test(test_hostset_overprovisioning_factor),
        cmocka_unit_test(test_hostset_panic_threshold),
        cmocka_unit_test(test_hostset_pick_skips_unhealthy),
        cmocka_unit_test(test_hostset_weighted_state_rebuilt_on_health_change),
        cmocka_unit_test(test_hostset_pick_panic),
        cmocka_unit_test(test_hostset_pick_priority_failover),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
