/* Unit tests for active health checking: Envoy's state transitions (first result decides,
 * thresholds, immediate failure on an unexpected status, retriable statuses, timeouts), the
 * intervals (edge, unhealthy, no-traffic, jitter) and the warm-up callback. The test includes
 * health_check.c to drive results without sockets (STYLE: tests may include the .c); the loop
 * is never run, so no check actually starts. */
#include "proxy/upstream/health_check.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define N 2

static struct endpoint_cfg eps[N];
static struct endpoint_shared ep_sh[N];
static struct cluster_shared sh;
static struct cluster_cfg cfg;
static struct health_check_cfg hcc;
static struct stats_block block;
static struct cluster_stats cstats;
static struct stats_block *blocks[1] = {&block};
static int warm_calls;

static void on_warm(void *ud)
{
    (void)ud;
    warm_calls++;
}

static struct health_check *setup(struct ev_loop *loop, uint32_t unhealthy, uint32_t healthy)
{
    memset(eps, 0, sizeof(eps));
    memset(ep_sh, 0, sizeof(ep_sh));
    memset(&sh, 0, sizeof(sh));
    memset(&cfg, 0, sizeof(cfg));
    memset(&cstats, 0, sizeof(cstats));
    block.cluster = &cstats;
    hcc = (struct health_check_cfg){
        .kind = HC_TCP,
        .timeout_ms = 1000,
        .interval_ms = 1000,
        .unhealthy_threshold = unhealthy,
        .healthy_threshold = healthy,
        .reuse_connection = true,
        .no_traffic_interval_ms = 60000,
        .no_traffic_healthy_interval_ms = 60000,
        .unhealthy_interval_ms = 1000,
        .unhealthy_edge_interval_ms = 1000,
        .healthy_edge_interval_ms = 1000,
    };
    for (int i = 0; i < N; i++) {
        eps[i].weight = 1;
        eps[i].addr.ss.ss_family = AF_INET;
        eps[i].addr.len = sizeof(struct sockaddr_in);
    }
    cfg.name = STR_LIT("c");
    cfg.endpoints = eps;
    cfg.n_endpoints = N;
    cfg.health_check = &hcc;
    sh.eps = ep_sh;
    sh.n_eps = N;
    warm_calls = 0;
    return health_check_new(loop, &cfg, &sh, blocks, 1, 7, on_warm, NULL);
}

static uint32_t bits(int i)
{
    return atomic_load(&ep_sh[i].health);
}

static void test_hc_hosts_start_failed_and_pending(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct health_check *hc = setup(loop, 2, 2);
    assert_int_equal(bits(0), HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_PENDING_ACTIVE_HC);
    assert_int_equal(bits(1), HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_PENDING_ACTIVE_HC);
    assert_int_equal(stat_get(&sh.hc_stats.healthy), 0);
    /* The first result decides at once, whatever healthy_threshold says. */
    handle_success(&hc->sessions[0]);
    assert_int_equal(bits(0), 0);
    assert_int_equal(stat_get(&sh.hc_stats.healthy), 1);
    assert_int_equal(warm_calls, 0);
    /* A failing first check clears pending and leaves the host out. */
    handle_failure(&hc->sessions[1], HC_FAIL_NETWORK, false);
    assert_int_equal(bits(1), HEALTH_F_FAILED_ACTIVE_HC);
    assert_int_equal(warm_calls, 1); /* every endpoint has a first result: warm */
    assert_int_equal(stat_get(&sh.hc_stats.success), 1);
    assert_int_equal(stat_get(&sh.hc_stats.failure), 1);
    assert_int_equal(stat_get(&sh.hc_stats.network_failure), 1);
    /* Back to healthy takes healthy_threshold passes in a row. */
    handle_success(&hc->sessions[1]);
    assert_int_equal(bits(1), HEALTH_F_FAILED_ACTIVE_HC);
    handle_failure(&hc->sessions[1], HC_FAIL_NETWORK, false); /* breaks the run */
    handle_success(&hc->sessions[1]);
    assert_int_equal(bits(1), HEALTH_F_FAILED_ACTIVE_HC);
    handle_success(&hc->sessions[1]);
    assert_int_equal(bits(1), 0);
    assert_int_equal(stat_get(&sh.hc_stats.healthy), 2);
    assert_int_equal(warm_calls, 1);
    health_check_free(hc);
    ev_loop_destroy(loop);
}

static void test_hc_unhealthy_threshold_and_immediate_failure(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct health_check *hc = setup(loop, 3, 1);
    struct hc_session *s = &hc->sessions[0];
    handle_success(s);
    uint32_t gen = atomic_load(&sh.health_gen);
    /* Network failures: unhealthy_threshold in a row. */
    handle_failure(s, HC_FAIL_NETWORK, false);
    handle_failure(s, HC_FAIL_NETWORK_TIMEOUT, false);
    assert_int_equal(bits(0), 0);
    assert_int_equal(atomic_load(&sh.health_gen), gen); /* no change, nothing published */
    handle_failure(s, HC_FAIL_NETWORK_TIMEOUT, false);
    assert_int_equal(bits(0), HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_ACTIVE_HC_TIMEOUT);
    assert_true(atomic_load(&sh.health_gen) != gen);
    handle_success(s);
    assert_int_equal(bits(0), 0); /* the timeout flag goes with the failure */
    /* Retriable statuses count like network failures... */
    handle_failure(s, HC_FAIL_ACTIVE, true);
    handle_failure(s, HC_FAIL_ACTIVE, true);
    assert_int_equal(bits(0), 0);
    handle_success(s);
    /* ...while any other unexpected status fails at once. */
    handle_failure(s, HC_FAIL_ACTIVE, false);
    assert_int_equal(bits(0), HEALTH_F_FAILED_ACTIVE_HC);
    assert_int_equal(stat_get(&sh.hc_stats.network_failure), 3);
    health_check_free(hc);
    ev_loop_destroy(loop);
}

static void test_hc_intervals(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct health_check *hc = setup(loop, 2, 2);
    hcc.interval_ms = 1000;
    hcc.unhealthy_interval_ms = 2000;
    hcc.unhealthy_edge_interval_ms = 3000;
    hcc.healthy_edge_interval_ms = 4000;
    hcc.no_traffic_interval_ms = 5000;
    hcc.no_traffic_healthy_interval_ms = 6000;
    /* No upstream traffic yet: the no-traffic intervals. */
    assert_float_equal(next_interval_s(hc, true, HC_UNCHANGED), 6.0, 1e-9);
    assert_float_equal(next_interval_s(hc, true, HC_CHANGE_PENDING), 5.0, 1e-9);
    assert_float_equal(next_interval_s(hc, false, HC_CHANGED), 5.0, 1e-9);
    /* Once the cluster had a connection: Envoy's edge and unhealthy intervals. */
    STAT_INC(cstats.upstream_cx_total);
    assert_float_equal(next_interval_s(hc, true, HC_UNCHANGED), 1.0, 1e-9);
    assert_float_equal(next_interval_s(hc, true, HC_CHANGED), 1.0, 1e-9);
    assert_float_equal(next_interval_s(hc, true, HC_CHANGE_PENDING), 4.0, 1e-9);
    assert_float_equal(next_interval_s(hc, false, HC_UNCHANGED), 2.0, 1e-9);
    assert_float_equal(next_interval_s(hc, false, HC_CHANGE_PENDING), 3.0, 1e-9);
    /* Jitter: up to interval_jitter_percent of the interval plus up to interval_jitter. */
    hcc.interval_jitter_percent = 10;
    hcc.interval_jitter_ms = 50;
    double lo = 1e9, hi = 0;
    for (int i = 0; i < 2000; i++) {
        double v = next_interval_s(hc, true, HC_UNCHANGED);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    assert_true(lo >= 1.0 && hi < 1.0 + 0.1 + 0.05);
    assert_true(hi > 1.1); /* both jitters are used */
    health_check_free(hc);
    ev_loop_destroy(loop);
}

/* Host / :authority: the endpoint's health_check_config.hostname, else the check's host (or
 * gRPC authority), else the cluster name; HTTP/2 drops connection-specific headers. */
static void test_hc_check_host_and_h2_headers(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct health_check *hc = setup(loop, 1, 1);
    assert_true(str_eq_lit(check_host(&hc->sessions[0]), "c"));
    hcc.host = STR_LIT("hc.example");
    assert_true(str_eq_lit(check_host(&hc->sessions[0]), "hc.example"));
    eps[1].hc_host = STR_LIT("ep1.example");
    assert_true(str_eq_lit(check_host(&hc->sessions[0]), "hc.example"));
    assert_true(str_eq_lit(check_host(&hc->sessions[1]), "ep1.example"));
    /* the edits: user-agent first, a remove, then the adds by their actions */
    static const struct header_add adds[] = {
        {STR_LIT("x-a"), STR_LIT("1"), HA_APPEND_IF_EXISTS_OR_ADD},
        {STR_LIT("user-agent"), STR_LIT("mine"), HA_OVERWRITE_IF_EXISTS_OR_ADD},
        {STR_LIT("x-a"), STR_LIT("2"), HA_ADD_IF_ABSENT},
    };
    hcc.headers_add = adds;
    hcc.n_headers_add = 3;
    struct headers h;
    check_headers(&hc->sessions[1], &h, false);
    assert_int_equal(h.n, 2);
    assert_true(str_eq_lit(h.v[0].name, "x-a") && str_eq_lit(h.v[0].value, "1"));
    assert_true(str_eq_lit(h.v[1].name, "user-agent") && str_eq_lit(h.v[1].value, "mine"));
    arena_reset(&hc->arena);
    check_headers(&hc->sessions[1], &h, true);
    assert_true(str_eq_lit(h.v[0].name, "host") && str_eq_lit(h.v[0].value, "ep1.example"));
    arena_reset(&hc->arena);
    assert_true(h2_forbidden(STR_LIT("connection"), STR_LIT("close")));
    assert_true(h2_forbidden(STR_LIT("te"), STR_LIT("gzip")));
    assert_false(h2_forbidden(STR_LIT("te"), STR_LIT("trailers")));
    assert_false(h2_forbidden(STR_LIT("x-a"), STR_LIT("1")));
    hcc.host = STR_LIT("");
    hcc.headers_add = NULL;
    hcc.n_headers_add = 0;
    health_check_free(hc);
    ev_loop_destroy(loop);
}

static void test_hc_ranges(void **state)
{
    (void)state;
    const struct hc_range r[2] = {{200, 201}, {300, 400}};
    assert_true(hc_range_contains(r, 2, 200));
    assert_false(hc_range_contains(r, 2, 201));
    assert_true(hc_range_contains(r, 2, 399));
    assert_false(hc_range_contains(r, 2, 400));
    assert_false(hc_range_contains(r, 0, 200));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hc_hosts_start_failed_and_pending),
        cmocka_unit_test(test_hc_unhealthy_threshold_and_immediate_failure),
        cmocka_unit_test(test_hc_intervals),
        cmocka_unit_test(test_hc_ranges),
        cmocka_unit_test(test_hc_check_host_and_h2_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
