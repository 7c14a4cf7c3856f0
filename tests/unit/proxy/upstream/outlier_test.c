/* Unit tests for outlier detection: Envoy's ejection-time and max_ejection_percent arithmetic,
 * the success-rate threshold, and the worker -> main ejection path on a real libev loop. The
 * test includes outlier.c to drive the sweep directly (STYLE: tests may include the .c). */
#include "proxy/upstream/outlier.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

static struct outlier_cfg defaults(void)
{
    return (struct outlier_cfg){
        .consecutive_5xx = 5,
        .consecutive_gateway_failure = 5,
        .consecutive_local_origin_failure = 5,
        .interval_ms = 10000,
        .base_ejection_time_ms = 30000,
        .max_ejection_time_ms = 300000,
        .max_ejection_percent = 10,
        .enforcing_consecutive_5xx = 100,
        .enforcing_consecutive_gateway_failure = 0,
        .enforcing_consecutive_local_origin_failure = 100,
        .enforcing_success_rate = 100,
        .enforcing_local_origin_success_rate = 100,
        .success_rate_minimum_hosts = 5,
        .success_rate_request_volume = 100,
        .success_rate_stdev_factor = 1900,
        .failure_percentage_threshold = 85,
        .failure_percentage_minimum_hosts = 5,
        .failure_percentage_request_volume = 50,
        .successful_active_health_check_uneject_host = true,
    };
}

static void test_outlier_ejection_time(void **state)
{
    (void)state;
    struct outlier_cfg c = defaults();
    /* base * backoff, capped by max, plus jitter */
    assert_int_equal(outlier_ejection_ms(&c, 1, 0), 30000);
    assert_int_equal(outlier_ejection_ms(&c, 3, 0), 90000);
    assert_int_equal(outlier_ejection_ms(&c, 10, 0), 300000);
    assert_int_equal(outlier_ejection_ms(&c, 50, 7), 300007);
    /* backoff grows per ejection while base * backoff < max + base: up to 11 with 30s/300s */
    uint32_t b = 0;
    for (int i = 0; i < 20; i++) {
        b = outlier_backoff_next(&c, b);
    }
    assert_int_equal(b, 11);
    c.base_ejection_time_ms = 500;
    c.max_ejection_time_ms = 1000;
    assert_int_equal(outlier_backoff_next(&c, 0), 1);
    assert_int_equal(outlier_backoff_next(&c, 2), 3);
    assert_int_equal(outlier_backoff_next(&c, 3), 3);
    assert_int_equal(outlier_ejection_ms(&c, 3, 0), 1000);
}

static void test_outlier_max_ejection_percent(void **state)
{
    (void)state;
    struct outlier_cfg c = defaults();
    /* 10% of 3 hosts: even one ejection would be 33% (Envoy 1.31+ enforces the percentage) */
    assert_false(outlier_may_eject(&c, 0, 3));
    assert_true(outlier_may_eject(&c, 0, 10));
    assert_false(outlier_may_eject(&c, 1, 10));
    c.always_eject_one_host = true;
    assert_true(outlier_may_eject(&c, 0, 3));
    assert_false(outlier_may_eject(&c, 1, 3));
    c.always_eject_one_host = false;
    c.max_ejection_percent = 50;
    assert_true(outlier_may_eject(&c, 0, 4));
    assert_true(outlier_may_eject(&c, 1, 4));  /* 2 of 4 = 50% <= 50% */
    assert_false(outlier_may_eject(&c, 2, 4)); /* 75% */
    c.max_ejection_percent = 100;
    assert_true(outlier_may_eject(&c, 3, 4));
    assert_false(outlier_may_eject(&c, 0, 0));
}

static void test_outlier_success_rate_stdev(void **state)
{
    (void)state;
    /* Envoy's worked example (outlier_detection_impl.cc): {50, 100, 100, 100, 100} has mean 90,
     * variance 400, stdev 20; with factor 1.9 the threshold is 90 - 38 = 52. */
    const double rates[5] = {50, 100, 100, 100, 100};
    double mean, thr;
    outlier_success_rate_threshold(rates, 5, 1900, &mean, &thr);
    assert_float_equal(mean, 90.0, 1e-9);
    assert_float_equal(thr, 52.0, 1e-9);
    outlier_success_rate_threshold(rates, 5, 1000, &mean, &thr);
    assert_float_equal(thr, 70.0, 1e-9);
    const double same[3] = {80, 80, 80};
    outlier_success_rate_threshold(same, 3, 1900, &mean, &thr);
    assert_float_equal(thr, 80.0, 1e-9);
}

/* ---- worker -> main ---- */

#define N 10

static struct endpoint_cfg eps[N];
static struct endpoint_shared ep_sh[N];
static struct cluster_shared sh;
static struct cluster_cfg cfg;
static struct outlier_cfg ocfg;
static struct cluster_rt crt;
static struct cluster_stats cs;
static struct host_stats hs[N];

static struct outlier *setup(struct ev_loop *loop)
{
    memset(eps, 0, sizeof(eps));
    memset(ep_sh, 0, sizeof(ep_sh));
    memset(&sh, 0, sizeof(sh));
    memset(&cfg, 0, sizeof(cfg));
    for (int i = 0; i < N; i++) {
        eps[i].weight = 1;
    }
    cfg.endpoints = eps;
    cfg.n_endpoints = N;
    cfg.n_priorities = 1;
    cfg.overprovisioning_factor = 140;
    cfg.panic_threshold = 50;
    cfg.outlier = &ocfg;
    sh.eps = ep_sh;
    sh.n_eps = N;
    struct outlier *od = outlier_new(loop, &cfg, &sh, 42);
    cluster_rt_init(&crt, &cfg, &cs, hs, &sh);
    return od;
}

static void teardown(struct outlier *od)
{
    cluster_rt_deinit(&crt);
    outlier_free(od);
}

static bool ejected(int i)
{
    return (atomic_load(&ep_sh[i].health) & HEALTH_F_FAILED_OUTLIER_CHECK) != 0;
}

static void test_outlier_consecutive_5xx_ejects(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ocfg = defaults();
    struct outlier *od = setup(loop);
    uint32_t gen0 = atomic_load(&sh.health_gen);
    for (int k = 0; k < 4; k++) {
        outlier_put(&crt, &crt.eps[2], OUTLIER_RESPONSE, 500);
    }
    outlier_put(&crt, &crt.eps[2], OUTLIER_RESPONSE, 200); /* a success breaks the run */
    for (int k = 0; k < 4; k++) {
        outlier_put(&crt, &crt.eps[2], OUTLIER_RESPONSE, 503);
    }
    ev_run(loop, EVRUN_NOWAIT);
    assert_false(ejected(2));
    outlier_put(&crt, &crt.eps[2], OUTLIER_LOCAL_CONNECT_FAILED, 0); /* the 5th: 503 */
    ev_run(loop, EVRUN_NOWAIT);
    assert_true(ejected(2));
    assert_true(atomic_load(&sh.health_gen) != gen0);
    assert_int_equal(stat_get(&sh.od_stats.ejections_active), 1);
    assert_int_equal(stat_get(&sh.od_stats.ejections_enforced_consecutive_5xx), 1);
    assert_int_equal(stat_get(&sh.od_stats.ejections_detected_consecutive_5xx), 1);
    /* the gateway run reached 5 too, but enforcing_consecutive_gateway_failure is 0 */
    assert_int_equal(stat_get(&sh.od_stats.ejections_detected_consecutive_gateway_failure), 0);
    assert_int_equal(atomic_load(&ep_sh[2].consecutive_5xx), 0);

    /* A second host: 10% of 10 hosts is one host, so this one overflows. */
    for (int k = 0; k < 5; k++) {
        outlier_put(&crt, &crt.eps[5], OUTLIER_RESPONSE, 500);
    }
    ev_run(loop, EVRUN_NOWAIT);
    assert_false(ejected(5));
    assert_int_equal(stat_get(&sh.od_stats.ejections_overflow), 1);

    /* The sweep returns host 2 once its time is up (backoff 1: base_ejection_time). */
    od->hosts[2].last_ejection = ev_now(loop) - 29.0;
    sweep_cb(loop, &od->sweep, 0);
    assert_true(ejected(2));
    od->hosts[2].last_ejection = ev_now(loop) - 30.0;
    sweep_cb(loop, &od->sweep, 0);
    assert_false(ejected(2));
    assert_int_equal(stat_get(&sh.od_stats.ejections_active), 0);
    teardown(od);
    ev_loop_destroy(loop);
}

static void test_outlier_split_local_origin(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ocfg = defaults();
    ocfg.split_external_local_origin_errors = true;
    ocfg.max_ejection_percent = 100;
    struct outlier *od = setup(loop);
    /* Local-origin failures count apart from 5xx; a connect success resets them. */
    for (int k = 0; k < 4; k++) {
        outlier_put(&crt, &crt.eps[1], OUTLIER_LOCAL_CONNECT_FAILED, 0);
    }
    outlier_put(&crt, &crt.eps[1], OUTLIER_LOCAL_CONNECT_SUCCESS, 0);
    for (int k = 0; k < 4; k++) {
        outlier_put(&crt, &crt.eps[1], OUTLIER_LOCAL_TIMEOUT, 0);
    }
    ev_run(loop, EVRUN_NOWAIT);
    assert_false(ejected(1));
    assert_int_equal(atomic_load(&ep_sh[1].consecutive_5xx), 0);
    outlier_put(&crt, &crt.eps[1], OUTLIER_LOCAL_CONNECT_FAILED, 0);
    ev_run(loop, EVRUN_NOWAIT);
    assert_true(ejected(1));
    assert_int_equal(stat_get(&sh.od_stats.ejections_enforced_consecutive_local_origin_failure), 1);
    /* Active health checking passing brings it back (successful_active_health_check_uneject_host).
     */
    outlier_on_hc_success(od, 1);
    assert_false(ejected(1));
    teardown(od);
    ev_loop_destroy(loop);
}

static void test_outlier_success_rate_sweep(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    ocfg = defaults();
    ocfg.max_ejection_percent = 100;
    struct outlier *od = setup(loop);
    /* 9 hosts at 100% and one at 50%, 200 requests each. */
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 200; k++) {
            int code = (i == 7 && k % 2) ? 500 : 200;
            /* never 5 in a row: only the success-rate detector can catch host 7 */
            outlier_put(&crt, &crt.eps[i], OUTLIER_RESPONSE, code);
        }
    }
    sweep_cb(loop, &od->sweep, 0);
    assert_true(ejected(7));
    for (int i = 0; i < N; i++) {
        if (i != 7) {
            assert_false(ejected(i));
        }
    }
    assert_int_equal(stat_get(&sh.od_stats.ejections_enforced_success_rate), 1);
    assert_float_equal(ep_sh[0].success_rate, 100.0, 1e-9);
    assert_float_equal(ep_sh[7].success_rate, 50.0, 1e-9);
    assert_float_equal(sh.sr_average, 95.0, 1e-9);
    assert_true(sh.sr_threshold > 50.0 && sh.sr_threshold < 95.0);
    /* The next interval had no traffic: no rates, nothing new. */
    sweep_cb(loop, &od->sweep, 0);
    assert_float_equal(ep_sh[0].success_rate, -1.0, 1e-9);
    assert_float_equal(sh.sr_average, -1.0, 1e-9);
    teardown(od);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outlier_ejection_time),
        cmocka_unit_test(test_outlier_max_ejection_percent),
        cmocka_unit_test(test_outlier_success_rate_stdev),
        cmocka_unit_test(test_outlier_consecutive_5xx_ejects),
        cmocka_unit_test(test_outlier_split_local_origin),
        cmocka_unit_test(test_outlier_success_rate_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
