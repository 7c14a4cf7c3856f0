/* Unit tests for proxy/tracing: B3 (multi-header and single) and X-Ray context parsing,
 * including hostile values; the trace reason in x-request-id and Envoy's sampling decision;
 * X-Ray's default sampling rule; the Zipkin and X-Ray JSON records (valid JSON, the right
 * fields, escaping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "proxy/http/headers.h"
#include "proxy/http/stream.h"
#include "proxy/tracing/tracing.h"

#define TRACE "463ac35c9f6413ad48485a3953bb6124"
#define SPAN "a2fb4a1d1a96d312"

static bool single(const char *v, struct trace_ctx *c)
{
    return trace_b3_single_parse(str_from_c(v), c);
}

static void test_b3_single(void **state)
{
    (void)state;
    struct trace_ctx c;
    assert_true(single(TRACE "-" SPAN "-1-0020000000000001", &c));
    assert_true(c.has_trace);
    assert_int_equal(c.trace_hi, 0x463ac35c9f6413adULL);
    assert_int_equal(c.trace_lo, 0x48485a3953bb6124ULL);
    assert_int_equal(c.span_id, 0xa2fb4a1d1a96d312ULL);
    assert_int_equal(c.parent_id, 1 + (2ULL << 52));
    assert_int_equal(c.sampled, 1);
    assert_true(single("48485a3953bb6124-" SPAN, &c));
    assert_int_equal(c.trace_hi, 0);
    assert_int_equal(c.sampled, -1);
    assert_true(single("48485a3953bb6124-" SPAN "-d", &c));
    assert_true(c.debug);
    assert_int_equal(c.sampled, 1);
    /* a lone sampling state */
    assert_false(single("0", &c));
    assert_int_equal(c.sampled, 0);
    assert_false(c.has_trace);
    /* hostile */
    const char *bad[] = {
        "",
        "-",
        "--",
        "zz",
        TRACE,
        TRACE "-",
        TRACE "-" SPAN "-x",
        TRACE "-" SPAN "-1-" SPAN "-1",
        TRACE "-" SPAN "-1-xyz",
        "00000000000000000000000000000000-" SPAN,
        TRACE "-0000000000000000",
        "463ac35c9f6413ad48485a3953bb61241-" SPAN,
        TRACE "-a2fb4a1d1a96d3121",
        TRACE "0-" SPAN,
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(single(bad[i], &c));
        assert_false(c.has_trace);
    }
    char big[5000];
    memset(big, '-', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_false(single(big, &c));
    memset(big, 'a', sizeof(big) - 1);
    assert_false(single(big, &c));
}

static void test_b3_multi(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 4096);
    struct headers h;
    headers_init(&h, &a, 8);
    struct trace_ctx c;
    assert_false(trace_b3_parse(&h, &c));
    assert_int_equal(c.sampled, -1);
    headers_add(&h, STR_LIT("x-b3-sampled"), STR_LIT("0"));
    assert_false(trace_b3_parse(&h, &c));
    assert_int_equal(c.sampled, 0);
    headers_add(&h, STR_LIT("x-b3-traceid"), STR_LIT(TRACE));
    headers_add(&h, STR_LIT("x-b3-spanid"), STR_LIT(SPAN));
    assert_true(trace_b3_parse(&h, &c));
    assert_int_equal(c.span_id, 0xa2fb4a1d1a96d312ULL);
    assert_int_equal(c.parent_id, 0);
    assert_int_equal(c.sampled, 0);
    headers_add(&h, STR_LIT("x-b3-flags"), STR_LIT("1"));
    assert_true(trace_b3_parse(&h, &c));
    assert_int_equal(c.sampled, 1);
    assert_true(c.debug);
    /* a malformed parent: the whole context is dropped */
    headers_add(&h, STR_LIT("x-b3-parentspanid"), STR_LIT("nothex!!nothex!!"));
    assert_false(trace_b3_parse(&h, &c));
    assert_false(c.has_trace);
    /* `b3` wins over the x-b3-* headers */
    headers_add(&h, STR_LIT("b3"), STR_LIT("48485a3953bb6124-0000000000000002-1"));
    assert_true(trace_b3_parse(&h, &c));
    assert_int_equal(c.span_id, 2);
    arena_deinit(&a);
}

static bool xray(const char *v, struct trace_ctx *c)
{
    return trace_xray_parse(str_from_c(v), c);
}

static void test_xray_parse(void **state)
{
    (void)state;
    struct trace_ctx c;
    assert_true(
        xray("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1", &c));
    assert_int_equal(c.trace_hi, 0x5759e988bd862e3fULL);
    assert_int_equal(c.trace_lo, 0xe1be46a994272793ULL);
    assert_int_equal(c.span_id, 0x53995c3f42cd8ad8ULL);
    assert_int_equal(c.sampled, 1);
    assert_true(xray(" sampled=0 ; root=1-5759e988-bd862e3fe1be46a994272793 ;Self=x;", &c));
    assert_int_equal(c.sampled, 0);
    assert_int_equal(c.span_id, 0);
    assert_true(xray("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=?", &c));
    assert_int_equal(c.sampled, -1);
    assert_false(xray("Sampled=1", &c));
    assert_int_equal(c.sampled, 1);
    const char *bad[] = {
        "",
        ";;;;",
        "Root=",
        "Root=2-5759e988-bd862e3fe1be46a994272793",
        "Root=1-5759e988-bd862e3fe1be46a99427279",
        "Root=1-5759e988-bd862e3fe1be46a9942727933",
        "Root=1-5759e98g-bd862e3fe1be46a994272793",
        "Root=1-5759e988_bd862e3fe1be46a994272793",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=xyz",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=0000000000000000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_false(xray(bad[i], &c));
        assert_false(c.has_trace);
    }
    char big[8192];
    for (size_t i = 0; i + 1 < sizeof(big); i++) {
        big[i] = "Root=;"[i % 6];
    }
    big[sizeof(big) - 1] = '\0';
    assert_false(xray(big, &c));
}

static void test_reason_and_decision(void **state)
{
    (void)state;
    char rid[] = "8f2b6c1e-1c2d-4e3f-9a0b-1c2d3e4f5a6b";
    struct str s = {rid, 36};
    assert_int_equal(trace_reason_of(s), TRACE_NONE);
    trace_reason_set(rid, TRACE_FORCED);
    assert_int_equal(rid[14], 'a');
    assert_int_equal(trace_reason_of(s), TRACE_FORCED);
    trace_reason_set(rid, TRACE_SAMPLED);
    assert_int_equal(trace_reason_of(s), TRACE_SAMPLED);
    trace_reason_set(rid, TRACE_CLIENT);
    assert_int_equal(trace_reason_of(s), TRACE_CLIENT);
    assert_int_equal(trace_reason_of(STR_LIT("not-a-uuid")), TRACE_NOT_A_UUID);
    assert_int_equal(trace_reason_of(STR_LIT("8f2b6c1e-1c2d-4e3f-9a0b-1c2d3e4f5a6")),
                     TRACE_NOT_A_UUID);
    assert_int_equal(trace_reason_of(STR_NULL), TRACE_NOT_A_UUID);
    uint64_t n = 0;
    assert_true(trace_rid_integer(s, &n));
    assert_int_equal(n, 0x3e4f5a6bULL);
    assert_false(trace_rid_integer(STR_LIT("8f2b6c1e-1c2d-4e3f-9a0b-1c2d3e4f5a6g"), &n));
    assert_false(trace_rid_integer(STR_LIT("12"), &n));

    struct hcm_tracing t = {.client_bp = 10000, .random_bp = 10000, .overall_bp = 10000};
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, false, 5), TRACE_SAMPLED);
    assert_int_equal(trace_decide(&t, TRACE_NONE, true, false, 5), TRACE_CLIENT);
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, true, 5), TRACE_FORCED);
    assert_int_equal(trace_decide(&t, TRACE_NOT_A_UUID, true, true, 5), TRACE_NOT_A_UUID);
    t.random_bp = 0;
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, false, 5), TRACE_NONE);
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, true, 5), TRACE_FORCED);
    /* an incoming reason is kept */
    assert_int_equal(trace_decide(&t, TRACE_SAMPLED, false, false, 5), TRACE_SAMPLED);
    /* random 25 %: by x-request-id's integer mod 10000 */
    t.random_bp = 2500;
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, false, 12499), TRACE_SAMPLED);
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, false, 12500), TRACE_NONE);
    /* overall_sampling caps everything, forced too */
    t.overall_bp = 100;
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, true, 100), TRACE_NONE);
    assert_int_equal(trace_decide(&t, TRACE_FORCED, false, false, 100), TRACE_NONE);
    assert_int_equal(trace_decide(&t, TRACE_NONE, false, true, 99), TRACE_FORCED);
}

static void test_xray_sampler(void **state)
{
    (void)state;
    struct tracer_cfg tc = {.kind = TRACER_XRAY, .reservoir_per_s = 1, .rate_bp = 500};
    struct xray_sampler st = {0};
    assert_true(trace_xray_sample(&tc, &st, 100, 9999)); /* the reservoir */
    assert_false(trace_xray_sample(&tc, &st, 100, 9999));
    assert_true(trace_xray_sample(&tc, &st, 100, 499)); /* 5 % */
    assert_false(trace_xray_sample(&tc, &st, 100, 500));
    assert_true(trace_xray_sample(&tc, &st, 101, 9999)); /* a new second */
    int n = 0;
    for (uint64_t r = 0; r < 10000; r++) {
        n += trace_xray_sample(&tc, &st, 101, r * 7919);
    }
    assert_int_equal(n, 500);
}

static json_t *parse(struct buf *b, size_t skip)
{
    json_error_t e;
    json_t *j = json_loadb((const char *)buf_head(b) + skip, buf_len(b) - skip, 0, &e);
    if (j == NULL) {
        fprintf(stderr, "bad JSON (%s): %.*s\n", e.text, (int)buf_len(b), buf_head(b));
    }
    assert_non_null(j);
    return j;
}

static const char *sget(json_t *o, const char *k)
{
    const char *v = json_string_value(json_object_get(o, k));
    assert_non_null(v);
    return v;
}

static void test_json_records(void **state)
{
    (void)state;
    struct tracer_cfg tz = {.kind = TRACER_ZIPKIN, .shared_span_context = true};
    struct trace_tag tags[] = {
        {.tag = STR_LIT("lit"), .value = STR_LIT("v\"1")},
        {.tag = STR_LIT("h"),
         .header = true,
         .value = STR_LIT("x-h"),
         .default_value = STR_LIT("dflt")},
    };
    struct hcm_tracing t = {.tracer = &tz,
                            .max_path_tag_length = 8,
                            .tags = tags,
                            .n_tags = 2,
                            .node_id = STR_LIT("node\x01")};
    struct span sp = {.cfg = &t,
                      .trace_hi = 1,
                      .trace_lo = 2,
                      .id = 3,
                      .parent_id = 4,
                      .sampled = true,
                      .t_start = 1700000000.25};
    struct arena a;
    arena_init(&a, 4096);
    struct headers h;
    headers_init(&h, &a, 4);
    struct span_fields f = {.method = STR_LIT("GET"),
                            .authority = STR_LIT("host"),
                            .path = STR_LIT("/very/long/path\xff"),
                            .protocol = STR_LIT("HTTP/1.1"),
                            .status = 503,
                            .flags = RF_UF | RF_URX,
                            .cluster = STR_LIT("c"),
                            .request_id = STR_LIT("rid"),
                            .peer_ip = STR_LIT("127.0.0.1"),
                            .req = &h,
                            .t_end = 1700000000.5};
    struct buf b;
    buf_init(&b);
    trace_zipkin_json(&b, &sp, &f);
    json_t *j = parse(&b, 0);
    assert_string_equal(sget(j, "traceId"), "00000000000000010000000000000002");
    assert_string_equal(sget(j, "id"), "0000000000000003");
    assert_string_equal(sget(j, "parentId"), "0000000000000004");
    assert_string_equal(sget(j, "kind"), "SERVER");
    assert_int_equal(json_integer_value(json_object_get(j, "timestamp")), 1700000000250000LL);
    assert_int_equal(json_integer_value(json_object_get(j, "duration")), 250000);
    json_t *tg = json_object_get(j, "tags");
    assert_string_equal(sget(tg, "http.url"), "http://host/very/lo"); /* max_path_tag_length */
    assert_string_equal(sget(tg, "http.status_code"), "503");
    assert_string_equal(sget(tg, "response_flags"), "UF,URX");
    assert_string_equal(sget(tg, "error"), "true");
    assert_string_equal(sget(tg, "lit"), "v\"1");
    assert_string_equal(sget(tg, "h"), "dflt");
    assert_string_equal(sget(tg, "node_id"), "node\x01");
    json_decref(j);

    struct tracer_cfg tx = {.kind = TRACER_XRAY, .segment_name = STR_LIT("seg")};
    t.tracer = &tx;
    sp.trace_hi = 0x5759e988bd862e3fULL;
    sp.trace_lo = 0xe1be46a994272793ULL;
    f.status = 404;
    headers_add(&h, STR_LIT("x-h"), STR_LIT("from-header"));
    buf_deinit(&b);
    buf_init(&b);
    trace_xray_json(&b, &sp, &f);
    const char *hdr = "{\"format\":\"json\",\"version\":1}\n";
    assert_memory_equal(buf_head(&b), hdr, strlen(hdr));
    j = parse(&b, strlen(hdr));
    assert_string_equal(sget(j, "trace_id"), "1-5759e988-bd862e3fe1be46a994272793");
    assert_string_equal(sget(j, "id"), "0000000000000003");
    assert_string_equal(sget(j, "parent_id"), "0000000000000004");
    assert_string_equal(sget(j, "name"), "seg");
    assert_true(json_is_true(json_object_get(j, "error")));
    assert_null(json_object_get(j, "fault"));
    json_t *http = json_object_get(j, "http");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(http, "response"), "status")), 404);
    assert_string_equal(sget(json_object_get(j, "annotations"), "h"), "from-header");
    json_decref(j);
    buf_deinit(&b);
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b3_single),    cmocka_unit_test(test_b3_multi),
        cmocka_unit_test(test_xray_parse),   cmocka_unit_test(test_reason_and_decision),
        cmocka_unit_test(test_xray_sampler), cmocka_unit_test(test_json_records),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
