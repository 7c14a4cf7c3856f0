/* Unit tests for proxy/http/grpc: gRPC request detection, the grpc-timeout parser (hostile
 * values included: case 46 of the hostile-input catalogue) and encoder, the local-reply status
 * mapping and grpc-message percent-encoding. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"

static void test_grpc_is_content_type(void **state)
{
    (void)state;
    assert_true(grpc_is_content_type(STR_LIT("application/grpc")));
    assert_true(grpc_is_content_type(STR_LIT("application/grpc+proto")));
    assert_true(grpc_is_content_type(STR_LIT("application/grpc;charset=utf-8")));
    assert_false(grpc_is_content_type(STR_LIT("application/grpc-web")));
    assert_false(grpc_is_content_type(STR_LIT("application/grpcx")));
    assert_false(grpc_is_content_type(STR_LIT("application/json")));
    assert_false(grpc_is_content_type(STR_LIT("application/grp")));
    assert_false(grpc_is_content_type(STR_LIT("")));
    /* Envoy compares case-sensitively */
    assert_false(grpc_is_content_type(STR_LIT("Application/GRPC")));
}

static uint64_t timeout_ok(const char *v)
{
    uint64_t ms = 12345;
    assert_int_equal(grpc_timeout_parse(str_from_c(v), &ms), 0);
    return ms;
}

static void test_grpc_timeout_parse_units(void **state)
{
    (void)state;
    assert_int_equal(timeout_ok("1H"), 3600000);
    assert_int_equal(timeout_ok("2M"), 120000);
    assert_int_equal(timeout_ok("3S"), 3000);
    assert_int_equal(timeout_ok("250m"), 250);
    assert_int_equal(timeout_ok("0m"), 0);
    /* sub-millisecond units round up */
    assert_int_equal(timeout_ok("1u"), 1);
    assert_int_equal(timeout_ok("1000u"), 1);
    assert_int_equal(timeout_ok("1001u"), 2);
    assert_int_equal(timeout_ok("1n"), 1);
    assert_int_equal(timeout_ok("2000000n"), 2);
    assert_int_equal(timeout_ok("0n"), 0);
    /* 8 digits is the most, leading zeros count as digits */
    assert_int_equal(timeout_ok("99999999m"), 99999999);
    assert_int_equal(timeout_ok("00000001S"), 1000);
    assert_true(timeout_ok("99999999H") == 99999999ULL * 3600000ULL);
}

static void test_grpc_timeout_parse_rejects_hostile(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",    "H",   "1",   "10",   "1h",   "1s",           "1x",         "-1S", "+1S",
        " 1S", "1 S", "1S ", "1.5S", "0x1S", "99999999999H", "123456789m", "1HH", "S1",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint64_t ms = 777;
        assert_int_equal(grpc_timeout_parse(str_from_c(bad[i]), &ms), -EINVAL);
        assert_int_equal(ms, 777); /* untouched */
    }
    /* a NUL inside the value */
    uint64_t ms = 0;
    assert_int_equal(grpc_timeout_parse((struct str){"1\0S", 3}, &ms), -EINVAL);
}

static void test_grpc_timeout_encode(void **state)
{
    (void)state;
    char v[16];
    assert_int_equal(grpc_timeout_encode(0, v), 2);
    assert_string_equal(v, "0m");
    grpc_timeout_encode(1500, v);
    assert_string_equal(v, "1500m");
    grpc_timeout_encode(99999999, v);
    assert_string_equal(v, "99999999m");
    grpc_timeout_encode(100000000, v); /* 9 digits of ms: seconds */
    assert_string_equal(v, "100000S");
    grpc_timeout_encode(99999999ULL * 1000 + 999, v);
    assert_string_equal(v, "99999999S");
    grpc_timeout_encode(100000000ULL * 1000, v); /* minutes */
    assert_string_equal(v, "1666666M");
    grpc_timeout_encode(UINT64_MAX, v); /* clipped at 8 digits of hours */
    assert_string_equal(v, "99999999H");
    /* what the encoder writes, the parser reads back */
    uint64_t ms;
    grpc_timeout_encode(4321, v);
    assert_int_equal(grpc_timeout_parse(str_from_c(v), &ms), 0);
    assert_int_equal(ms, 4321);
}

static void test_grpc_status_mapping(void **state)
{
    (void)state;
    /* Envoy's httpToGrpcStatus */
    assert_int_equal(grpc_status_from_http(400), GRPC_INTERNAL);
    assert_int_equal(grpc_status_from_http(401), GRPC_UNAUTHENTICATED);
    assert_int_equal(grpc_status_from_http(403), GRPC_PERMISSION_DENIED);
    assert_int_equal(grpc_status_from_http(404), GRPC_UNIMPLEMENTED);
    assert_int_equal(grpc_status_from_http(429), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(502), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(503), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(504), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_from_http(200), GRPC_UNKNOWN);
    assert_int_equal(grpc_status_from_http(408), GRPC_UNKNOWN);
    assert_int_equal(grpc_status_from_http(500), GRPC_UNKNOWN);
    /* local replies: the mapping by flag */
    assert_int_equal(grpc_status_for_local_reply(503, RF_UH), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(503, RF_UF), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(503, RF_UC), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(503, RF_NC), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(504, RF_UT), GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(grpc_status_for_local_reply(408, RF_DT), GRPC_DEADLINE_EXCEEDED);
    assert_int_equal(grpc_status_for_local_reply(503, RF_UO), GRPC_RESOURCE_EXHAUSTED);
    assert_int_equal(grpc_status_for_local_reply(404, RF_NR), GRPC_UNIMPLEMENTED);
    assert_int_equal(grpc_status_for_local_reply(429, RF_RL), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(502, RF_UPE), GRPC_UNAVAILABLE);
    assert_int_equal(grpc_status_for_local_reply(408, RF_SI), GRPC_UNKNOWN);
    assert_int_equal(grpc_status_for_local_reply(500, RF_FI), GRPC_UNKNOWN);
}

static void test_grpc_status_parse(void **state)
{
    (void)state;
    uint32_t st = 99;
    assert_int_equal(grpc_status_parse(STR_LIT("0"), &st), 0);
    assert_int_equal(st, 0);
    assert_int_equal(grpc_status_parse(STR_LIT("14"), &st), 0);
    assert_int_equal(st, 14);
    assert_int_equal(grpc_status_parse(STR_LIT(""), &st), -EINVAL);
    assert_int_equal(grpc_status_parse(STR_LIT("-1"), &st), -EINVAL);
    assert_int_equal(grpc_status_parse(STR_LIT("1 4"), &st), -EINVAL);
    assert_int_equal(grpc_status_parse(STR_LIT("2147483648"), &st), -EINVAL);
    assert_int_equal(grpc_status_parse(STR_LIT("99999999999999999999999"), &st), -EINVAL);
}

static void test_grpc_percent_encode(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 256);
    struct str plain = STR_LIT("no healthy upstream");
    struct str out = grpc_percent_encode(&a, plain);
    assert_ptr_equal(out.p, plain.p); /* nothing to encode: no copy */
    out = grpc_percent_encode(&a, STR_LIT("100% done\r\n"));
    assert_true(str_eq_lit(out, "100%25 done%0D%0A"));
    out = grpc_percent_encode(&a, STR_LIT("caf\xc3\xa9~\x7f"));
    assert_true(str_eq_lit(out, "caf%C3%A9~%7F"));
    out = grpc_percent_encode(&a, (struct str){"a\0b", 3});
    assert_true(str_eq_lit(out, "a%00b"));
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grpc_is_content_type),
        cmocka_unit_test(test_grpc_timeout_parse_units),
        cmocka_unit_test(test_grpc_timeout_parse_rejects_hostile),
        cmocka_unit_test(test_grpc_timeout_encode),
        cmocka_unit_test(test_grpc_status_mapping),
        cmocka_unit_test(test_grpc_status_parse),
        cmocka_unit_test(test_grpc_percent_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
