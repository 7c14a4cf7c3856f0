/* Unit tests for the grpc_stats filter: service/method resolution from the path, config
 * validation (field paths, unsupported fields), and the bounded stat table: one
 * success/failure/total triple per cluster for "grpc" and per allowlisted method. The filter's
 * .c is included for its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/grpc_stats/grpc_stats.c"
#include "tests/unit/filters/filter_config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"

static void test_grpc_stats_service_and_method(void **state)
{
    (void)state;
    struct str svc, m;
    assert_true(service_and_method(STR_LIT("/pkg.Svc/Get"), &svc, &m));
    assert_true(str_eq_lit(svc, "pkg.Svc") && str_eq_lit(m, "Get"));
    assert_true(service_and_method(STR_LIT("/a/b"), &svc, &m));
    assert_true(str_eq_lit(svc, "a") && str_eq_lit(m, "b"));
    static const char *const bad[] = {"", "/", "//", "/a", "/a/", "//b", "/a/b/c", "a/b", "/a//b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(service_and_method(str_from_c(bad[i]), &svc, &m));
    }
}

static struct config c;
static struct err err;

static const char *build(const char *json, const struct gs_cfg **out)
{
    arena_deinit(&c.arena);
    memset(&c, 0, sizeof(c));
    arena_init(&c.arena, 0);
    static struct cluster_cfg clusters[2];
    memset(clusters, 0, sizeof(clusters));
    clusters[0].name = STR_LIT("a");
    clusters[1].name = STR_LIT("b");
    clusters[1].index = 1;
    c.clusters = clusters;
    c.n_clusters = 2;
    const void *cfg = NULL;
    const char *e = filter_config_from_json(
        &envoy__extensions__filters__http__grpc_stats__v3__filter_config__descriptor, gs_config_new,
        json, &c, &err, &cfg);
    if (out != NULL) {
        *out = cfg;
    }
    return e;
}

static const char *stat_name(uint32_t idx, char *buf, size_t cap)
{
    const struct stat_def *d = &c.stat_defs[idx];
    snprintf(buf, cap, "%s.%.*s.%s", d->scope, STR_FMT(d->tag), d->stat);
    return buf;
}

static void test_grpc_stats_config_default_is_aggregate(void **state)
{
    (void)state;
    const struct gs_cfg *g = NULL;
    assert_string_equal(build("{}", &g), "");
    assert_int_equal(g->n_methods, 0);
    assert_int_equal(c.n_stat_defs, 2 * GS_N); /* two clusters, grpc.{success,failure,total} */
    char b[128];
    assert_string_equal(stat_name(g->stat[GS_SUCCESS], b, sizeof(b)), "cluster.a.grpc.success");
    assert_string_equal(stat_name(g->stat[GS_N + GS_TOTAL], b, sizeof(b)), "cluster.b.grpc.total");
    assert_string_equal(c.stat_defs[0].tag_name, "envoy_cluster_name");
    assert_string_equal(build("{\"stats_for_all_methods\": false}", &g), "");
    assert_int_equal(g->n_methods, 0);
}

static void test_grpc_stats_config_allowlist(void **state)
{
    (void)state;
    const struct gs_cfg *g = NULL;
    assert_string_equal(build("{\"individual_method_stats_allowlist\": {\"services\": ["
                              "{\"name\": \"pkg.Svc\", \"method_names\": [\"Get\", \"Put\"]},"
                              "{\"name\": \"other.S\", \"method_names\": [\"Do\"]}]}}",
                              &g),
                        "");
    assert_int_equal(g->n_methods, 3);
    /* (1 aggregate + 3 methods) x 3 stats x 2 clusters, all declared at config time */
    assert_int_equal(c.n_stat_defs, 4 * GS_N * 2);
    char b[128];
    const uint32_t *slot = &g->stat[(1 * 4 + 2) * GS_N]; /* cluster b, method Put */
    assert_string_equal(stat_name(slot[GS_FAILURE], b, sizeof(b)),
                        "cluster.b.grpc.pkg.Svc.Put.failure");
    slot = &g->stat[(0 * 4 + 3) * GS_N]; /* cluster a, other.S/Do */
    assert_string_equal(stat_name(slot[GS_TOTAL], b, sizeof(b)), "cluster.a.grpc.other.S.Do.total");
}

static void test_grpc_stats_config_errors(void **state)
{
    (void)state;
    assert_string_equal(build("{\"stats_for_all_methods\": true}", NULL),
                        "f.stats_for_all_methods: not supported by remora yet");
    assert_string_equal(build("{\"emit_filter_state\": true}", NULL),
                        "f.emit_filter_state: not supported by remora yet");
    assert_string_equal(build("{\"enable_upstream_stats\": true}", NULL),
                        "f.enable_upstream_stats: not supported by remora yet");
    assert_string_equal(build("{\"replace_dots_in_grpc_service_name\": true}", NULL),
                        "f.replace_dots_in_grpc_service_name: not supported by remora yet");
    assert_string_equal(
        build("{\"individual_method_stats_allowlist\": {\"services\": [{\"name\": \"s\"}]}}", NULL),
        "f.individual_method_stats_allowlist.services[0].method_names: must not be empty");
    const char *msg = build("{\"individual_method_stats_allowlist\": {\"services\": ["
                            "{\"name\": \"s\", \"method_names\": [\"ok\", \"a.b\"]}]}}",
                            NULL);
    assert_non_null(
        strstr(msg, "f.individual_method_stats_allowlist.services[0].method_names[1]: "));
    msg = build("{\"individual_method_stats_allowlist\": {\"services\": ["
                "{\"name\": \"a b\", \"method_names\": [\"x\"]}]}}",
                NULL);
    assert_non_null(strstr(msg, "f.individual_method_stats_allowlist.services[0].name: "));
    /* both of the oneof: pbjson refuses */
    msg = build("{\"stats_for_all_methods\": false, \"individual_method_stats_allowlist\": {}}",
                NULL);
    assert_string_not_equal(msg, "");
    msg = build("{\"bogus\": 1}", NULL);
    assert_non_null(strstr(msg, "bogus"));
}

static int teardown(void **state)
{
    (void)state;
    arena_deinit(&c.arena);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_stats_service_and_method),
        cmocka_unit_test(test_grpc_stats_config_default_is_aggregate),
        cmocka_unit_test(test_grpc_stats_config_allowlist),
        cmocka_unit_test(test_grpc_stats_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
