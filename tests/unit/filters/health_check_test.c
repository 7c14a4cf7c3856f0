/* Unit tests for the health_check filter: HealthCheck validation with field paths (required
 * pass_through_mode, cache_time only with pass-through, percentages in [0, 100], header
 * matchers through the router's validation). The filter's .c is included for its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/health_check/health_check.c"
#include "tests/unit/filters/filter_config.h"

static struct config cfg;
static struct err err;

static const char *build(const char *json, const struct hc_cfg **out)
{
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
    arena_init(&cfg.arena, 0);
    const void *built = NULL;
    const char *e = filter_config_from_json(
        &envoy__extensions__filters__http__health_check__v3__health_check__descriptor,
        hc_config_new, json, &cfg, &err, &built);
    if (out != NULL) {
        *out = built;
    }
    return e;
}

static void test_health_check_config_errors(void **state)
{
    (void)state;
    const struct hc_cfg *c;
    assert_string_equal(build("{}", &c), "f.pass_through_mode: required");
    assert_string_equal(build("{\"pass_through_mode\": false, \"cache_time\": \"5s\"}", &c),
                        "f.cache_time: only allowed with pass_through_mode true");
    assert_string_equal(build("{\"pass_through_mode\": true, \"cache_time\": \"0s\"}", &c),
                        "f.cache_time: must be greater than 0");
    assert_string_equal(build("{\"pass_through_mode\": false, \"cluster_min_healthy_percentages\":"
                              " {\"svc\": {\"value\": 120}}}",
                              &c),
                        "f.cluster_min_healthy_percentages.svc.value: must be between 0 and "
                        "100, not 120");
    const char *e = build("{\"pass_through_mode\": false, \"headers\": [{\"name\": \":path\","
                          " \"string_match\": {\"safe_regex\": {\"regex\": \"(\"}}}]}",
                          &c);
    assert_true(strncmp(e, "f.headers[0].string_match.safe_regex", 36) == 0);
    assert_string_equal(build("{\"endpoint\": \"/hc\"}", &c), "f.endpoint: unknown field");
}

static void test_health_check_config_values(void **state)
{
    (void)state;
    const struct hc_cfg *c;
    assert_string_equal(build("{\"pass_through_mode\": true, \"cache_time\": \"2.5s\", "
                              "\"headers\": [{\"name\": \":path\", \"string_match\": "
                              "{\"exact\": \"/hc\"}}]}",
                              &c),
                        "");
    assert_true(c->pass_through);
    assert_int_equal(c->cache_ms, 2500);
    assert_non_null(c->cache);
    assert_int_equal(c->n_headers, 1);
    assert_string_equal(build("{\"pass_through_mode\": false, \"cluster_min_healthy_percentages\":"
                              " {\"a\": {\"value\": 50.5}, \"b\": {}}}",
                              &c),
                        "");
    assert_false(c->pass_through);
    assert_null(c->cache);
    assert_int_equal(c->n_min_healthy, 2);
    /* map order is not kept by every encoder: find both */
    for (uint32_t i = 0; i < 2; i++) {
        const struct hc_min_healthy *m = &c->min_healthy[i];
        if (str_eq_lit(m->cluster, "a")) {
            assert_true(m->percent == 50.5);
        } else {
            assert_true(str_eq_lit(m->cluster, "b") && m->percent == 0.0);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_check_config_errors),
        cmocka_unit_test(test_health_check_config_values),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    arena_deinit(&cfg.arena);
    return rc;
}
