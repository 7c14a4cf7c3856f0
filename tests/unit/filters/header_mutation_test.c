/* Unit tests for the header_mutation filter: config validation with field paths, and the
 * mutations applied in order in both directions. The filter's .c is included for its
 * statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/header_mutation/header_mutation.c"
#include "tests/unit/filters/filter_config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"

static struct config cfg;
static struct err err;

/* Builds a HeaderMutation from JSON; returns the error text ("" on success). */
static const char *build(const char *json, const struct hm_cfg **out)
{
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
    arena_init(&cfg.arena, 0);
    const void *built = NULL;
    const char *e = filter_config_from_json(
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation__descriptor,
        hm_config_new, json, &cfg, &err, &built);
    if (out != NULL) {
        *out = built;
    }
    return e;
}

static void test_header_mutation_config_errors(void **state)
{
    (void)state;
    const struct hm_cfg *c;
    assert_string_equal(
        build("{\"mutations\": {\"request_mutations\": [{\"remove\": \"a b\"}]}}", &c),
        "f.mutations.request_mutations[0].remove: invalid header name 'a b'");
    assert_string_equal(build("{\"mutations\": {\"response_mutations\": [{}, {\"remove\": "
                              "\"Host\"}]}}",
                              &c),
                        "f.mutations.response_mutations[0]: one of remove, append is required");
    assert_string_equal(build("{\"mutations\": {\"request_mutations\": [{\"append\": {\"header\":"
                              " {\"key\": \":path\", \"value\": \"/x\"}}}]}}",
                              &c),
                        "f.mutations.request_mutations[0].append.header.key: ':path': "
                        "pseudo-headers and host may not be modified");
    assert_string_equal(build("{\"mutations\": {\"request_mutations\": [{\"remove_on_match\": "
                              "{}}]}}",
                              &c),
                        "f.mutations.request_mutations[0].remove_on_match: unknown field");
}

static void test_header_mutation_applies_in_order(void **state)
{
    (void)state;
    const struct hm_cfg *c;
    assert_string_equal(build("{\"mutations\": {"
                              "\"request_mutations\": [{\"append\": {\"header\": {\"key\": \"X-A\","
                              " \"value\": \"1\"}}}, {\"remove\": \"X-A\"}, {\"append\": "
                              "{\"header\": {\"key\": \"x-b\", \"value\": \"2\"}, "
                              "\"append_action\": \"ADD_IF_ABSENT\"}}],"
                              "\"response_mutations\": [{\"remove\": \"server\"}]}}",
                              &c),
                        "");
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 4);
    headers_add(&h, STR_LIT("x-b"), STR_LIT("old"));
    headers_add(&h, STR_LIT("server"), STR_LIT("envoy"));
    struct filter f = {.cfg = c};
    assert_int_equal(hm_request_headers(&f, &h, true), FILTER_CONTINUE);
    /* x-a added then removed; x-b kept (add only if absent) */
    assert_null(headers_get(&h, STR_LIT("x-a")));
    assert_int_equal(h.n, 2);
    assert_string_equal(headers_get(&h, STR_LIT("x-b"))->value.p, "old");
    assert_int_equal(hm_response_headers(&f, &h, true), FILTER_CONTINUE);
    assert_null(headers_get(&h, STR_LIT("server")));
    arena_deinit(&a);
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_mutation_config_errors),
        cmocka_unit_test(test_header_mutation_applies_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
