/* Unit tests for proxy/http/retry: retry_on parsing, Envoy's decision table, and the jittered
 * exponential back-off (bounds, growth and cap). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/http/headers.h"
#include "proxy/http/retry.h"

static uint32_t parse_ok(const char *list, bool strict)
{
    uint32_t bits = 0;
    struct str bad = STR_NULL;
    assert_int_equal(retry_on_parse(str_from_c(list), strict, &bits, &bad), 0);
    return bits;
}

static void test_retry_on_parse_known(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("5xx", true), RETRY_ON_5XX);
    assert_int_equal(parse_ok("gateway-error,reset", true),
                     RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET);
    assert_int_equal(parse_ok(" connect-failure , retriable-4xx ,refused-stream", true),
                     RETRY_ON_CONNECT_FAILURE | RETRY_ON_RETRIABLE_4XX | RETRY_ON_REFUSED_STREAM);
    assert_int_equal(parse_ok("retriable-status-codes", true), RETRY_ON_RETRIABLE_STATUS_CODES);
    assert_int_equal(parse_ok("", true), 0);
    assert_int_equal(parse_ok(",,5xx,,", true), RETRY_ON_5XX);
    /* OR-ed into what is there (the header adds to the policy's conditions). */
    uint32_t bits = RETRY_ON_5XX;
    assert_int_equal(retry_on_parse(STR_LIT("reset"), false, &bits, NULL), 0);
    assert_int_equal(bits, RETRY_ON_5XX | RETRY_ON_RESET);
}

static void test_retry_on_parse_strict_rejects(void **state)
{
    (void)state;
    uint32_t bits = 0;
    struct str bad = STR_NULL;
    assert_int_equal(retry_on_parse(STR_LIT("5xx,envoy-ratelimited"), true, &bits, &bad), -ENOTSUP);
    assert_true(str_eq_lit(bad, "envoy-ratelimited"));
    assert_int_equal(retry_on_parse(STR_LIT("reset-before-request"), true, &bits, &bad), -ENOTSUP);
    assert_int_equal(retry_on_parse(STR_LIT("5xx, bogus"), true, &bits, &bad), -EINVAL);
    assert_true(str_eq_lit(bad, "bogus"));
    /* The header form skips what it does not know, as Envoy does. */
    assert_int_equal(parse_ok("bogus,5xx,cancelled", false),
                     RETRY_ON_5XX | RETRY_ON_GRPC_CANCELLED);
    /* Tokens are case-sensitive, as in Envoy. */
    assert_int_equal(retry_on_parse(STR_LIT("5XX"), true, &bits, &bad), -EINVAL);
}

static void test_retry_on_parse_grpc_conditions(void **state)
{
    (void)state;
    /* A RetryPolicy's retry_on takes the gRPC conditions next to the HTTP ones (Envoy). */
    assert_int_equal(
        parse_ok("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable", true),
        RETRY_ON_GRPC_ANY);
    assert_int_equal(parse_ok("5xx,unavailable", true), RETRY_ON_5XX | RETRY_ON_GRPC_UNAVAILABLE);
    /* x-envoy-retry-on takes only HTTP conditions, x-envoy-retry-grpc-on only gRPC ones. */
    uint32_t bits = 0;
    assert_int_equal(
        retry_on_parse_set(STR_LIT("5xx,unavailable"), RETRY_SET_HTTP, false, &bits, NULL), 0);
    assert_int_equal(bits, RETRY_ON_5XX);
    bits = 0;
    assert_int_equal(
        retry_on_parse_set(STR_LIT("5xx,unavailable"), RETRY_SET_GRPC, false, &bits, NULL), 0);
    assert_int_equal(bits, RETRY_ON_GRPC_UNAVAILABLE);
    struct str bad = STR_NULL;
    bits = 0;
    assert_int_equal(
        retry_on_parse_set(STR_LIT("cancelled,5xx"), RETRY_SET_GRPC, true, &bits, &bad), -EINVAL);
    assert_true(str_eq_lit(bad, "5xx"));
}

static void test_retry_decision_grpc_status(void **state)
{
    (void)state;
    static const struct {
        uint32_t on;
        uint32_t status;
        bool retried;
    } cases[] = {
        {RETRY_ON_GRPC_UNAVAILABLE, 14, true},
        {RETRY_ON_GRPC_UNAVAILABLE, 4, false},
        {RETRY_ON_GRPC_UNAVAILABLE, 0, false},
        {RETRY_ON_GRPC_CANCELLED, 1, true},
        {RETRY_ON_GRPC_DEADLINE_EXCEEDED, 4, true},
        {RETRY_ON_GRPC_RESOURCE_EXHAUSTED, 8, true},
        {RETRY_ON_GRPC_INTERNAL, 13, true},
        {RETRY_ON_GRPC_INTERNAL, 2, false},
        {RETRY_ON_GRPC_ANY, 2, false},  /* UNKNOWN is never retriable */
        {RETRY_ON_GRPC_ANY, 12, false}, /* UNIMPLEMENTED */
        {RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR, 14, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(retry_would_retry_grpc(cases[i].on, cases[i].status), cases[i].retried);
    }
}

static void test_retry_decision_grpc_headers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 512);
    struct headers h;
    headers_init(&h, &a, 4);
    headers_add(&h, STR_LIT("content-type"), STR_LIT("application/grpc"));
    /* no grpc-status in the headers (it will come in trailers): never retried */
    assert_false(retry_would_retry_grpc_headers(RETRY_ON_GRPC_ANY, &h));
    headers_add(&h, STR_LIT("grpc-status"), STR_LIT("14"));
    assert_true(retry_would_retry_grpc_headers(RETRY_ON_GRPC_UNAVAILABLE, &h));
    assert_false(retry_would_retry_grpc_headers(RETRY_ON_5XX, &h));
    headers_set_copy(&h, STR_LIT("grpc-status"), STR_LIT("14x"));
    assert_false(retry_would_retry_grpc_headers(RETRY_ON_GRPC_UNAVAILABLE, &h));
    headers_set_copy(&h, STR_LIT("grpc-status"), STR_LIT("99999999999999999999"));
    assert_false(retry_would_retry_grpc_headers(RETRY_ON_GRPC_UNAVAILABLE, &h));
    arena_deinit(&a);
}

static void test_retry_decision_failures(void **state)
{
    (void)state;
    static const struct {
        uint32_t on;
        bool connect, reset, timeout;
    } cases[] = {
        {RETRY_ON_5XX, true, true, true},
        {RETRY_ON_GATEWAY_ERROR, true, true, true},
        {RETRY_ON_RESET, true, true, true},
        {RETRY_ON_CONNECT_FAILURE, true, false, false},
        {RETRY_ON_RETRIABLE_4XX, false, false, false},
        {RETRY_ON_REFUSED_STREAM, false, false, false},
        {RETRY_ON_RETRIABLE_STATUS_CODES, false, false, false},
        {0, false, false, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(retry_would_retry_failure(cases[i].on, RETRY_FAIL_CONNECT),
                         cases[i].connect);
        assert_int_equal(retry_would_retry_failure(cases[i].on, RETRY_FAIL_RESET), cases[i].reset);
        assert_int_equal(retry_would_retry_failure(cases[i].on, RETRY_FAIL_TIMEOUT),
                         cases[i].timeout);
    }
}

static void test_retry_decision_status(void **state)
{
    (void)state;
    const uint32_t codes[] = {418, 503};
    const uint32_t extra[] = {429};
    static const int statuses[] = {200, 404, 409, 418, 429, 500, 501, 502, 503, 504, 505, 599};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        int st = statuses[i];
        assert_int_equal(retry_would_retry_status(RETRY_ON_5XX, st, codes, 2, NULL, 0), st >= 500);
        assert_int_equal(retry_would_retry_status(RETRY_ON_GATEWAY_ERROR, st, codes, 2, NULL, 0),
                         st >= 502 && st <= 504);
        assert_int_equal(retry_would_retry_status(RETRY_ON_RETRIABLE_4XX, st, codes, 2, NULL, 0),
                         st == 409);
        assert_false(retry_would_retry_status(RETRY_ON_RESET | RETRY_ON_CONNECT_FAILURE, st, codes,
                                              2, extra, 1));
        /* the lists count only with retriable-status-codes */
        assert_int_equal(
            retry_would_retry_status(RETRY_ON_RETRIABLE_STATUS_CODES, st, codes, 2, extra, 1),
            st == 418 || st == 503 || st == 429);
        assert_false(retry_would_retry_status(RETRY_ON_RETRIABLE_4XX, 418, codes, 2, NULL, 0));
    }
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Draws many back-offs for retry `k` (whose ceiling is below the cap) and checks they stay in
 * [0, ceiling) and spread over the whole range: full jitter, so the smallest draws are near 0,
 * the largest near the ceiling and the mean near half of it. */
static void check_spread(uint64_t base, uint64_t max, uint32_t k, uint64_t ceiling)
{
    uint64_t seed = 42 + k, lo = UINT64_MAX, hi = 0;
    double sum = 0;
    const int n = 20000;
    for (int i = 0; i < n; i++) {
        uint64_t d = retry_backoff_ms(base, max, k, splitmix(&seed));
        assert_true(d < ceiling);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
        sum += (double)d;
    }
    assert_true(lo <= ceiling / 50);
    assert_true(hi + 1 + ceiling / 50 >= ceiling);
    double mean = sum / n;
    assert_true(mean > (double)ceiling * 0.45 && mean < (double)ceiling * 0.55);
}

static void test_retry_backoff_full_jitter_bounds(void **state)
{
    (void)state;
    /* base 25 ms, max 250 ms (Envoy's default 10 x base): ceilings 25, 75, 175, then 375
     * clipped at 250. */
    check_spread(25, 250, 1, 25);
    check_spread(25, 250, 2, 75);
    check_spread(25, 250, 3, 175);
}

static void test_retry_backoff_cap(void **state)
{
    (void)state;
    uint64_t seed = 7;
    for (uint32_t k = 4; k < 70; k += 5) {
        uint32_t at_max = 0;
        const int n = 6000;
        for (int i = 0; i < n; i++) {
            uint64_t d = retry_backoff_ms(25, 250, k, splitmix(&seed));
            assert_true(d <= 250);
            at_max += d == 250;
        }
        /* Past the cap the ceiling stays at 375: a third of the draws are clipped to 250. */
        assert_true(at_max > n / 4 && at_max < n * 2 / 5);
    }
    /* Degenerate inputs stay sane: base 0 counts as 1, max below base counts as base. */
    assert_int_equal(retry_backoff_ms(0, 0, 1, 12345), 0);
    assert_true(retry_backoff_ms(100, 10, 3, 999) <= 100);
    /* Huge bases do not overflow. */
    assert_true(retry_backoff_ms(UINT64_MAX / 2, UINT64_MAX, 40, 77) <= UINT64_MAX);
}

static void test_retry_parse_count(void **state)
{
    (void)state;
    uint32_t n = 0;
    assert_int_equal(retry_parse_count(STR_LIT("3"), &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(retry_parse_count(STR_LIT(" 0 "), &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(retry_parse_count(STR_LIT("-1"), &n), -EINVAL);
    assert_int_equal(retry_parse_count(STR_LIT("x"), &n), -EINVAL);
    assert_int_equal(retry_parse_count(STR_LIT("4294967296"), &n), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_on_parse_known),
        cmocka_unit_test(test_retry_on_parse_strict_rejects),
        cmocka_unit_test(test_retry_decision_failures),
        cmocka_unit_test(test_retry_decision_status),
        cmocka_unit_test(test_retry_backoff_full_jitter_bounds),
        cmocka_unit_test(test_retry_backoff_cap),
        cmocka_unit_test(test_retry_parse_count),
        cmocka_unit_test(test_retry_on_parse_grpc_conditions),
        cmocka_unit_test(test_retry_decision_grpc_status),
        cmocka_unit_test(test_retry_decision_grpc_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
