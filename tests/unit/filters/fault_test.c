/* Unit tests for the fault filter: fractional-percentage math with a fixed random source,
 * header-controlled faults, and config validation. The filter's .c is included for its
 * statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/fault/fault.c"
#include "tests/unit/filters/filter_config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"

static unsigned hits(struct filter_percent p, uint64_t n)
{
    unsigned k = 0;
    for (uint64_t r = 0; r < n; r++) {
        k += filter_percent_hit(p, r * 7919 + 13); /* any sequence covering every residue */
    }
    return k;
}

static void test_fault_percent_math(void **state)
{
    (void)state;
    assert_int_equal(hits((struct filter_percent){50, 100}, 100), 50);
    assert_int_equal(hits((struct filter_percent){0, 100}, 1000), 0);
    assert_int_equal(hits((struct filter_percent){100, 100}, 1000), 1000);
    assert_int_equal(hits((struct filter_percent){250, 100}, 1000), 1000); /* capped at 100% */
    assert_int_equal(hits((struct filter_percent){1, 10000}, 10000), 1);
    assert_int_equal(hits((struct filter_percent){2500, 10000}, 10000), 2500);
    assert_int_equal(hits((struct filter_percent){3, 1000000}, 1000000), 3);
    /* exactly Envoy's rule: random % denominator < numerator */
    assert_true(filter_percent_hit((struct filter_percent){5, 100}, 104));
    assert_false(filter_percent_hit((struct filter_percent){5, 100}, 105));
}

static struct headers *hdrs(struct arena *a, const char *name, const char *value, const char *name2,
                            const char *value2)
{
    struct headers *h = ARENA_NEW(a, struct headers);
    headers_init(h, a, 4);
    if (name != NULL) {
        headers_add(h, str_from_c(name), str_from_c(value));
    }
    if (name2 != NULL) {
        headers_add(h, str_from_c(name2), str_from_c(value2));
    }
    return h;
}

static void test_fault_header_percentage_is_capped(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct filter_percent cfg = {50, 10000};
    const char *hn = "x-envoy-fault-abort-request-percentage";
    struct filter_percent p = fault_percent(cfg, hdrs(&a, hn, "80", NULL, NULL), true, hn);
    assert_int_equal(p.numerator, 50);
    assert_int_equal(p.denominator, 10000);
    p = fault_percent(cfg, hdrs(&a, hn, "20", NULL, NULL), true, hn);
    assert_int_equal(p.numerator, 20);
    p = fault_percent(cfg, hdrs(&a, hn, "x1", NULL, NULL), true, hn);
    assert_int_equal(p.numerator, 50);
    /* headers are ignored unless the fault is header-controlled */
    p = fault_percent(cfg, hdrs(&a, hn, "20", NULL, NULL), false, hn);
    assert_int_equal(p.numerator, 50);
    arena_deinit(&a);
}

static void test_fault_abort_and_delay_from_headers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct fault_cfg c;
    memset(&c, 0, sizeof(c));
    c.has_abort = true;
    c.abort_from_header = true;
    c.abort_pct = (struct filter_percent){100, 100};
    const char *ah = "x-envoy-fault-abort-request";
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "503", NULL, NULL), 7), 503);
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "199", NULL, NULL), 7), 0);
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "600", NULL, NULL), 7), 0);
    assert_int_equal(fault_abort_status(&c, hdrs(&a, NULL, NULL, NULL, NULL), 7), 0);
    /* 30% by header: random 29 hits, 30 misses */
    const char *ap = "x-envoy-fault-abort-request-percentage";
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "502", ap, "30"), 29), 502);
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "502", ap, "30"), 30), 0);
    /* a fixed abort ignores the header */
    c.abort_from_header = false;
    c.http_status = 418;
    assert_int_equal(fault_abort_status(&c, hdrs(&a, ah, "503", NULL, NULL), 7), 418);

    c.has_delay = true;
    c.delay_from_header = true;
    c.delay_pct = (struct filter_percent){100, 100};
    const char *dh = "x-envoy-fault-delay-request";
    assert_int_equal(fault_delay_ms(&c, hdrs(&a, dh, "250", NULL, NULL), 1), 250);
    assert_int_equal(fault_delay_ms(&c, hdrs(&a, dh, "-1", NULL, NULL), 1), 0);
    assert_int_equal(fault_delay_ms(&c, hdrs(&a, NULL, NULL, NULL, NULL), 1), 0);
    c.delay_from_header = false;
    c.delay_ms = 40;
    c.delay_pct = (struct filter_percent){10, 100};
    assert_int_equal(fault_delay_ms(&c, hdrs(&a, dh, "250", NULL, NULL), 109), 40);
    assert_int_equal(fault_delay_ms(&c, hdrs(&a, dh, "250", NULL, NULL), 110), 0);
    arena_deinit(&a);
}

/* Builds an HTTPFault from JSON; returns the error text ("" on success). */
static const char *build(const char *json, const struct fault_cfg **out)
{
    static struct err err;
    static struct config c;
    arena_deinit(&c.arena);
    memset(&c, 0, sizeof(c));
    arena_init(&c.arena, 0);
    const void *cfg = NULL;
    const char *e =
        filter_config_from_json(&envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
                                fault_config_new, json, &c, &err, &cfg);
    if (out != NULL) {
        *out = cfg;
    }
    return e;
}

static void test_fault_config(void **state)
{
    (void)state;
    const struct fault_cfg *c = NULL;
    assert_string_equal(build("{\"abort\": {\"http_status\": 503, \"percentage\": "
                              "{\"numerator\": 25, \"denominator\": \"TEN_THOUSAND\"}},"
                              "\"delay\": {\"fixed_delay\": \"0.25s\"}, \"max_active_faults\": 3,"
                              "\"headers\": [{\"name\": \"x-fault\", \"exact_match\": \"yes\"}]}",
                              &c),
                        "");
    assert_true(c->has_abort);
    assert_int_equal(c->http_status, 503);
    assert_int_equal(c->abort_pct.numerator, 25);
    assert_int_equal(c->abort_pct.denominator, 10000);
    assert_int_equal(c->delay_ms, 250);
    assert_int_equal(c->delay_pct.numerator, 0); /* unset percentage: 0%, as Envoy */
    assert_true(c->has_max_active);
    assert_int_equal(c->max_active, 3);
    assert_int_equal(c->n_headers, 1);
    assert_string_equal(build("{\"abort\": {\"http_status\": 199}}", NULL),
                        "f.abort.http_status: 199 is out of range (200-599)");
    assert_string_equal(build("{\"abort\": {\"grpc_status\": 14}}", NULL),
                        "f.abort.grpc_status: not supported by remora yet");
    assert_string_equal(build("{\"abort\": {\"percentage\": {\"numerator\": 1}}}", NULL),
                        "f.abort: one of http_status, grpc_status, header_abort is required");
    assert_string_equal(build("{\"delay\": {\"fixed_delay\": \"0s\"}}", NULL),
                        "f.delay.fixed_delay: must be greater than 0");
    assert_string_equal(build("{\"upstream_cluster\": \"x\"}", NULL),
                        "f.upstream_cluster: not supported by remora yet");
    assert_string_equal(build("{\"headers\": [{\"name\": \"\"}]}", NULL),
                        "f.headers[0].name: required");
    assert_string_equal(build("{\"response_rate_limit\": {}}", NULL),
                        "f.response_rate_limit: unknown field");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_percent_math),
        cmocka_unit_test(test_fault_header_percentage_is_capped),
        cmocka_unit_test(test_fault_abort_and_delay_from_headers),
        cmocka_unit_test(test_fault_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
