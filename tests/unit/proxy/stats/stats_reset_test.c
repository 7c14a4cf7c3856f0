/* Unit tests for POST /reset_counters' baseline (proxy/stats/stats.c): counters rendered since
 * the baseline read 0 and count on; gauges and histograms are untouched; a counter that first
 * appears after the reset (upstream_rq_<code>) sorts into the middle of the record list without
 * shifting what the others subtract; the subtraction never wraps. Two worker blocks, written
 * here directly (as their workers would), so sums over workers are covered too. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/buf.h"
#include "proxy/stats/stats.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

struct fixture {
    struct config *cfg;
    struct stats_block *blocks[2];
    struct server_stats_view srv;
};

static int setup(void **state)
{
    static const char text[] =
        "{\"static_resources\": {\"clusters\": [{\"name\": \"svc\", \"load_assignment\": "
        "{\"cluster_name\": \"svc\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": "
        "{\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": "
        "8080}}}}]}]}}],"
        " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{"
        "\"name\": \"hcm\", \"typed_config\": {\"@type\": \"" HCM_TYPE "\", "
        "\"stat_prefix\": \"in\", \"route_config\": {\"virtual_hosts\": [{\"name\": \"vh\", "
        "\"domains\": [\"*\"], \"routes\": [{\"match\": {\"prefix\": \"/\"}, \"route\": "
        "{\"cluster\": \"svc\"}}]}]}, "
        "\"http_filters\": [{\"name\": \"envoy.filters.http.router\"}]}}]}]}]}}";
    struct fixture *f = calloc(1, sizeof(*f));
    struct err e;
    err_clear(&e);
    f->cfg = config_load_text(text, strlen(text), &e);
    if (f->cfg == NULL) {
        fail_msg("%s", e.msg);
    }
    for (int w = 0; w < 2; w++) {
        f->blocks[w] = stats_block_new(f->cfg);
    }
    f->srv.concurrency = 2;
    f->srv.live = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int w = 0; w < 2; w++) {
        stats_block_free(f->blocks[w], f->cfg);
    }
    config_unref(f->cfg);
    free(f);
    return 0;
}

/* The value of stat `name` in /stats text form, or -1 when it is not shown. */
static long long stat_value(struct fixture *f, const struct stats_baseline *bl, int used_only,
                            const char *name)
{
    struct buf b;
    buf_init(&b);
    buf_append(&b, "\n", 1); /* so that every line, the first too, follows a newline */
    stats_render(&b, f->cfg, f->blocks, 2, &f->srv, STATS_TEXT, NULL, used_only, bl);
    buf_append(&b, "", 1);
    char want[256];
    snprintf(want, sizeof(want), "\n%s: ", name);
    const char *p = strstr((const char *)buf_head(&b), want);
    long long v = p ? strtoll(p + strlen(want), NULL, 10) : -1;
    buf_deinit(&b);
    return v;
}

/* Whether histogram `name` shows samples in /stats text form. */
static bool hist_has_samples(struct fixture *f, const struct stats_baseline *bl, const char *name)
{
    struct buf b;
    buf_init(&b);
    stats_render(&b, f->cfg, f->blocks, 2, &f->srv, STATS_TEXT, NULL, 0, bl);
    buf_append(&b, "", 1);
    char want[256];
    snprintf(want, sizeof(want), "\n%s: P0(", name);
    bool yes = strstr((const char *)buf_head(&b), want) != NULL;
    buf_deinit(&b);
    return yes;
}

static void test_since_without_baseline_is_the_value(void **state)
{
    (void)state;
    size_t cursor = 0;
    assert_int_equal(stats_baseline_since(NULL, &cursor, "a", 7), 7);
}

static void test_counters_read_zero_then_count_on(void **state)
{
    struct fixture *f = *state;
    for (int w = 0; w < 2; w++) {
        struct stats_block *b = f->blocks[w];
        stat_add(&b->hcm[0].downstream_rq_total, 3);
        stat_add(&b->cluster[0].upstream_rq_total, 3);
        stat_add(&b->cluster[0].upstream_rq_code[200], 3);
        stat_add(&b->cluster[0].upstream_rq_completed, 3);
        stat_add(&b->cluster[0].upstream_cx_active, 1); /* a gauge */
        hist_record_ms(&b->cluster[0].upstream_rq_time, 4);
    }
    assert_int_equal(stat_value(f, NULL, 0, "cluster.svc.upstream_rq_total"), 6);

    struct stats_baseline *bl = stats_baseline_take(f->cfg, f->blocks, 2, &f->srv);
    assert_int_equal(stat_value(f, bl, 0, "http.in.downstream_rq_total"), 0);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_total"), 0);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_200"), 0);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_cx_active"), 2);
    assert_true(hist_has_samples(f, bl, "cluster.svc.upstream_rq_time"));
    /* Without the baseline the blocks still hold everything: nothing was written into them. */
    assert_int_equal(stat_value(f, NULL, 0, "cluster.svc.upstream_rq_total"), 6);

    /* upstream_rq_503 is new: it sorts between upstream_rq_4xx and upstream_rq_5xx, ahead of
     * upstream_rq_completed and upstream_rq_total, and must not shift their baselines. */
    STAT_INC(f->blocks[1]->cluster[0].upstream_rq_code[503]);
    STAT_INC(f->blocks[1]->cluster[0].upstream_rq_total);
    STAT_INC(f->blocks[0]->cluster[0].upstream_rq_completed);
    STAT_INC(f->blocks[0]->hcm[0].downstream_rq_total);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_503"), 1);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_total"), 1);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_completed"), 1);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_200"), 0);
    assert_int_equal(stat_value(f, bl, 0, "http.in.downstream_rq_total"), 1);

    /* A second reset replaces the first. */
    stats_baseline_free(bl);
    bl = stats_baseline_take(f->cfg, f->blocks, 2, &f->srv);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_503"), 0);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_total"), 0);
    stats_baseline_free(bl);
}

static void test_reset_counters_stay_used(void **state)
{
    struct fixture *f = *state;
    STAT_INC(f->blocks[0]->cluster[0].upstream_rq_total);
    struct stats_baseline *bl = stats_baseline_take(f->cfg, f->blocks, 2, &f->srv);
    /* ?usedonly: a counter incremented before the reset is still shown (at 0), as in Envoy; one
     * never incremented is not. */
    assert_int_equal(stat_value(f, bl, 1, "cluster.svc.upstream_rq_total"), 0);
    assert_int_equal(stat_value(f, bl, 1, "cluster.svc.upstream_rq_timeout"), -1);
    stats_baseline_free(bl);
}

static void test_never_below_zero(void **state)
{
    struct fixture *f = *state;
    stat_add(&f->blocks[0]->cluster[0].upstream_rq_total, 5);
    struct stats_baseline *bl = stats_baseline_take(f->cfg, f->blocks, 2, &f->srv);
    /* Counters never go down; if one did, it reads 0 rather than wrapping to 2^64 - n. */
    stat_sub(&f->blocks[0]->cluster[0].upstream_rq_total, 2);
    assert_int_equal(stat_value(f, bl, 0, "cluster.svc.upstream_rq_total"), 0);
    size_t cursor = 0;
    assert_int_equal(stats_baseline_since(bl, &cursor, "cluster.svc.upstream_rq_total", 3), 0);
    stats_baseline_free(bl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_since_without_baseline_is_the_value),
        cmocka_unit_test_setup_teardown(test_counters_read_zero_then_count_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_counters_stay_used, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_below_zero, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
