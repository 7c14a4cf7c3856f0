/* Unit tests for the cors filter: CorsPolicy validation with field paths, the origin check
 * (the most specific non-empty allow_origin_string_match list decides; a matcher of "*" allows
 * any origin) and the field-by-field merge of the route's and the virtual host's policies. The
 * filter's .c is included for its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/cors/cors.c"
#include "tests/unit/filters/filter_config.h"

static struct config cfg;
static struct err err;

static void reset(void)
{
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
    arena_init(&cfg.arena, 0);
}

/* Builds a CorsPolicy into `cfg` (not reset: several policies may live side by side). */
static const char *policy(const char *json, const struct cors_policy **out)
{
    const void *built = NULL;
    const char *e = filter_config_from_json(
        &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor, cors_policy_new, json,
        &cfg, &err, &built);
    if (out != NULL) {
        *out = built;
    }
    return e;
}

static void test_cors_config_errors(void **state)
{
    (void)state;
    reset();
    const struct cors_policy *p;
    assert_string_equal(policy("{\"allow_origin_string_match\": [{\"exact\": \"a\"}, {}]}", &p),
                        "f.allow_origin_string_match[1]: one of exact, prefix, suffix, safe_regex, "
                        "contains is required");
    assert_string_equal(policy("{\"allow_methods\": \"GET\\r\\nx: y\"}", &p),
                        "f.allow_methods: invalid header value (control character)");
    assert_string_equal(policy("{\"filter_enabled\": {\"runtime_key\": \"k\"}}", &p),
                        "f.filter_enabled.default_value: required");
    assert_string_equal(policy("{\"enabled\": true}", &p), "f.enabled: unknown field");
    assert_string_equal(policy("{\"allow_origin_string_match\": [{\"prefix\": \"https://\"}], "
                               "\"max_age\": \"60\", \"shadow_enabled\": {\"default_value\": "
                               "{\"numerator\": 50}}}",
                               &p),
                        "");
    assert_int_equal(p->n_origins, 1);
    assert_true(str_eq_lit(p->max_age, "60"));
    assert_true(p->has_shadow && p->shadow.numerator == 50);
    assert_false(p->has_enabled);
    assert_int_equal(p->allow_credentials, CORS_UNSET);
}

static void test_cors_origin_and_merge(void **state)
{
    (void)state;
    reset();
    const struct cors_policy *route, *vhost, *any;
    assert_string_equal(
        policy("{\"allow_methods\": \"PUT\", \"allow_credentials\": false}", &route), "");
    assert_string_equal(policy("{\"allow_origin_string_match\": [{\"exact\": \"https://a\"}, "
                               "{\"suffix\": \".b.example\"}], \"allow_methods\": \"GET\", "
                               "\"expose_headers\": \"x-e\", \"allow_credentials\": true}",
                               &vhost),
                        "");
    assert_string_equal(policy("{\"allow_origin_string_match\": [{\"exact\": \"*\"}]}", &any), "");
    struct cors_state st = {.p = {route, vhost}};
    /* the route has no origins: the virtual host's list decides */
    assert_true(origin_allowed(&st, STR_LIT("https://a")));
    assert_true(origin_allowed(&st, STR_LIT("https://x.b.example")));
    assert_false(origin_allowed(&st, STR_LIT("https://c")));
    /* the route's value of a field wins, else the virtual host's */
    assert_true(str_eq_lit(*FIRST_STR(&st, allow_methods), "PUT"));
    assert_true(str_eq_lit(*FIRST_STR(&st, expose_headers), "x-e"));
    assert_null(FIRST_STR(&st, max_age));
    assert_false(FIRST_FLAG(&st, allow_credentials, false));  /* set false on the route */
    assert_true(FIRST_FLAG(&st, forward_not_matching, true)); /* unset anywhere: default */
    struct cors_state only_vhost = {.p = {vhost, NULL}};
    assert_true(FIRST_FLAG(&only_vhost, allow_credentials, false));
    /* a matcher that matches "*" allows every origin */
    struct cors_state star = {.p = {any, vhost}};
    assert_true(origin_allowed(&star, STR_LIT("https://anything")));
    struct cors_state none = {.p = {route, NULL}};
    assert_false(origin_allowed(&none, STR_LIT("https://a")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cors_config_errors),
        cmocka_unit_test(test_cors_origin_and_merge),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    arena_deinit(&cfg.arena);
    return rc;
}
