/* Unit tests for the buffer filter: Buffer and BufferPerRoute validation with field paths, and
 * the request-head decision (a bodiless request and a disabled route are not held). The
 * filter's .c is included for its statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/buffer/buffer.c"
#include "tests/unit/filters/filter_config.h"

static struct config cfg;
static struct err err;

static const char *build(const ProtobufCMessageDescriptor *d,
                         int (*fn)(struct filter_build *, const ProtobufCMessage *, const void **),
                         const char *json, const struct buffer_cfg **out)
{
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
    arena_init(&cfg.arena, 0);
    const void *built = NULL;
    const char *e = filter_config_from_json(d, fn, json, &cfg, &err, &built);
    if (out != NULL) {
        *out = built;
    }
    return e;
}

#define BUF &envoy__extensions__filters__http__buffer__v3__buffer__descriptor
#define PER_ROUTE &envoy__extensions__filters__http__buffer__v3__buffer_per_route__descriptor

static void test_buffer_config_errors(void **state)
{
    (void)state;
    const struct buffer_cfg *c;
    assert_string_equal(build(BUF, buffer_config_new, "{}", &c), "f.max_request_bytes: required");
    assert_string_equal(build(BUF, buffer_config_new, "{\"max_request_bytes\": 0}", &c),
                        "f.max_request_bytes: must be greater than 0");
    assert_string_equal(build(BUF, buffer_config_new, "{\"max_request_time\": \"1s\"}", &c),
                        "f.max_request_time: unknown field");
    assert_string_equal(build(BUF, buffer_config_new, "{\"max_request_bytes\": 4096}", &c), "");
    assert_int_equal(c->max_request_bytes, 4096);
    assert_false(c->is_disabled);

    assert_string_equal(build(PER_ROUTE, buffer_route_config_new, "{}", &c),
                        "f: one of disabled, buffer is required");
    assert_string_equal(build(PER_ROUTE, buffer_route_config_new, "{\"disabled\": false}", &c),
                        "f.disabled: must be true when set");
    assert_string_equal(build(PER_ROUTE, buffer_route_config_new, "{\"buffer\": {}}", &c),
                        "f.buffer.max_request_bytes: required");
    assert_string_equal(build(PER_ROUTE, buffer_route_config_new, "{\"disabled\": true}", &c), "");
    assert_true(c->is_disabled);
    assert_string_equal(
        build(PER_ROUTE, buffer_route_config_new, "{\"buffer\": {\"max_request_bytes\": 7}}", &c),
        "");
    assert_int_equal(c->max_request_bytes, 7);
}

static void test_buffer_holds_only_a_body(void **state)
{
    (void)state;
    struct buffer_cfg off = {.is_disabled = true};
    struct filter f = {.cfg = &off};
    assert_int_equal(buffer_request_headers(&f, NULL, false), FILTER_CONTINUE);
    assert_int_equal(buffer_request_data(&f, (const uint8_t *)"x", 1, false), FILTER_CONTINUE);
    struct buffer_cfg on = {.max_request_bytes = 10};
    f.cfg = &on;
    /* a request without a body goes on at once (no filter_set_buffer_limit call either) */
    assert_int_equal(buffer_request_headers(&f, NULL, true), FILTER_CONTINUE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buffer_config_errors),
        cmocka_unit_test(test_buffer_holds_only_a_body),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    arena_deinit(&cfg.arena);
    return rc;
}
