/* Unit tests for proxy/http/retry: an HTTP/2 stream the upstream refused (REFUSED_STREAM, or
 * above a GOAWAY's last stream id) is retried under refused-stream, and, as a reset before any
 * response byte, under reset, 5xx and gateway-error (Envoy's), but not under connect-failure
 * or the status-code conditions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/http/retry.h"

static void test_retry_refused_stream_conditions(void **state)
{
    (void)state;
    assert_true(retry_would_retry_failure(RETRY_ON_REFUSED_STREAM, RETRY_FAIL_REFUSED));
    assert_true(retry_would_retry_failure(RETRY_ON_RESET, RETRY_FAIL_REFUSED));
    assert_true(retry_would_retry_failure(RETRY_ON_5XX, RETRY_FAIL_REFUSED));
    assert_true(retry_would_retry_failure(RETRY_ON_GATEWAY_ERROR, RETRY_FAIL_REFUSED));
    assert_false(retry_would_retry_failure(RETRY_ON_CONNECT_FAILURE, RETRY_FAIL_REFUSED));
    assert_false(retry_would_retry_failure(RETRY_ON_RETRIABLE_4XX, RETRY_FAIL_REFUSED));
    assert_false(retry_would_retry_failure(0, RETRY_FAIL_REFUSED));
    /* refused-stream alone covers no other failure */
    assert_false(retry_would_retry_failure(RETRY_ON_REFUSED_STREAM, RETRY_FAIL_RESET));
    assert_false(retry_would_retry_failure(RETRY_ON_REFUSED_STREAM, RETRY_FAIL_CONNECT));
    uint32_t bits = 0;
    assert_int_equal(retry_on_parse(STR_LIT("refused-stream"), true, &bits, NULL), 0);
    assert_int_equal(bits, RETRY_ON_REFUSED_STREAM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_refused_stream_conditions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
