/* Unit tests for hc_h2: the gRPC HealthCheckRequest encoding (prefix, field 1, varint length),
 * the HealthCheckResponse decoder (unknown fields skipped, malformed bytes refused), grpc-status
 * parsing, and the verdicts Envoy gives an HTTP/2 or gRPC health-check reply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/buf.h"
#include "proxy/upstream/hc_h2.h"
#include "proxy/upstream/health_check.h"

static void expect_bytes(struct buf *b, const uint8_t *want, size_t n)
{
    assert_int_equal(buf_len(b), n);
    assert_memory_equal(buf_head(b), want, n);
}

static void test_hc_grpc_encode_request(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    /* no service: the empty message */
    hc_grpc_encode_request(&b, STR_LIT(""));
    static const uint8_t empty[] = {0, 0, 0, 0, 0};
    expect_bytes(&b, empty, sizeof(empty));
    buf_deinit(&b);

    hc_grpc_encode_request(&b, STR_LIT("svc.A"));
    static const uint8_t svc[] = {0, 0, 0, 0, 7, 0x0a, 5, 's', 'v', 'c', '.', 'A'};
    expect_bytes(&b, svc, sizeof(svc));
    buf_deinit(&b);

    /* 200 bytes: a two-byte length varint (0xc8 0x01) */
    char name[200];
    memset(name, 'x', sizeof(name));
    hc_grpc_encode_request(&b, (struct str){name, sizeof(name)});
    assert_int_equal(buf_len(&b), 5 + 3 + 200);
    static const uint8_t head[] = {0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01, 'x'};
    assert_memory_equal(buf_head(&b), head, sizeof(head));
    buf_deinit(&b);
}

static int decode(const uint8_t *p, size_t n, int *status)
{
    return hc_grpc_decode_response(p, n, status);
}

static void test_hc_grpc_decode_response(void **state)
{
    (void)state;
    int st = -7;
    assert_int_equal(decode(NULL, 0, &st), 0);
    assert_int_equal(st, HC_SERVING_UNKNOWN); /* proto3: absent is 0 */
    static const uint8_t serving[] = {0x08, 0x01};
    assert_int_equal(decode(serving, sizeof(serving), &st), 0);
    assert_int_equal(st, HC_SERVING_SERVING);
    static const uint8_t not_serving[] = {0x08, 0x02};
    assert_int_equal(decode(not_serving, sizeof(not_serving), &st), 0);
    assert_int_equal(st, HC_SERVING_NOT_SERVING);
    /* unknown fields of every wire type around it are skipped; the last field 1 wins */
    static const uint8_t mixed[] = {0x10, 0x05,                           /* 2: varint */
                                    0x1a, 0x02, 'a',  'b',                /* 3: bytes */
                                    0x25, 1,    2,    3,   4,             /* 4: fixed32 */
                                    0x29, 1,    2,    3,   4, 5, 6, 7, 8, /* 5: fixed64 */
                                    0x08, 0x02, 0x08, 0x01};
    assert_int_equal(decode(mixed, sizeof(mixed), &st), 0);
    assert_int_equal(st, HC_SERVING_SERVING);
    /* a multi-byte varint value */
    static const uint8_t big[] = {0x08, 0x81, 0x01};
    assert_int_equal(decode(big, sizeof(big), &st), 0);
    assert_int_equal(st, 129);

    static const uint8_t bad[][11] = {
        {0x08},                   /* value missing */
        {0x08, 0x80},             /* varint cut short */
        {0x00, 0x01},             /* field number 0 */
        {0x0b, 0x01},             /* wire type 3 (group) */
        {0x0e, 0x01},             /* wire type 6 */
        {0x0a, 0x05, 'a'},        /* length past the end */
        {0x25, 1, 2},             /* fixed32 cut short */
        {0x29, 1, 2, 3, 4, 5, 6}, /* fixed64 cut short */
        {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* 11-byte varint */
    };
    static const size_t bad_len[] = {1, 2, 2, 2, 2, 3, 3, 7, 11};
    for (size_t i = 0; i < sizeof(bad_len) / sizeof(bad_len[0]); i++) {
        if (decode(bad[i], bad_len[i], &st) != -1) {
            fail_msg("case %zu decoded", i);
        }
    }
}

static void test_hc_grpc_status_value(void **state)
{
    (void)state;
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"0", 1), 0);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"14", 2), 14);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"2147483647", 10), 2147483647);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"2147483648", 10), -1);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"", 0), -1);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"1a", 2), -1);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"-1", 2), -1);
    assert_int_equal(hc_grpc_status_value((const uint8_t *)"00000000000", 11), -1);
}

/* A complete, passing gRPC reply; each case below spoils one thing. */
static struct hc_h2_reply grpc_ok(void)
{
    struct hc_h2_reply r;
    hc_h2_reply_init(&r);
    r.status = 200;
    r.grpc_ct = true;
    r.grpc_status = 0;
    r.serving = HC_SERVING_SERVING;
    r.ended = true;
    return r;
}

static void test_hc_grpc_verdict(void **state)
{
    (void)state;
    struct hc_h2_reply r = grpc_ok();
    assert_int_equal(hc_grpc_verdict(&r), HC_V_PASS);
    r.serving = HC_SERVING_NOT_SERVING;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r.serving = HC_SERVING_UNKNOWN;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r.serving = HC_SERVING_SERVICE_UNKNOWN;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.serving = -1; /* no message */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.grpc_status = 5; /* NOT_FOUND: the service is not known */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.grpc_status = -1; /* no trailers */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.status = 503;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r.ended = false; /* judged by its head, before the end */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.grpc_ct = false;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.bad_message = true;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r.ended = false;
    assert_int_equal(hc_grpc_verdict(&r), HC_V_FAIL);
    r = grpc_ok();
    r.ended = false; /* reset or cut short */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_NETWORK);
    hc_h2_reply_init(&r); /* reset before any head */
    assert_int_equal(hc_grpc_verdict(&r), HC_V_NETWORK);
}

static void test_hc_h2_http_verdict(void **state)
{
    (void)state;
    static const struct hc_range expected[] = {{200, 300}};
    static const struct hc_range retriable[] = {{503, 504}};
    struct hc_h2_reply r;
    hc_h2_reply_init(&r);
    r.status = 204;
    r.ended = true;
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, retriable, 1), HC_V_PASS);
    r.status = 500;
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, retriable, 1), HC_V_FAIL);
    r.status = 503;
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, retriable, 1), HC_V_RETRIABLE);
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, NULL, 0), HC_V_FAIL);
    r.status = 200;
    r.ended = false;
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, retriable, 1), HC_V_NETWORK);
    r.ended = true;
    r.body_too_large = true;
    assert_int_equal(hc_h2_http_verdict(&r, expected, 1, retriable, 1), HC_V_NETWORK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hc_grpc_encode_request),
        cmocka_unit_test(test_hc_grpc_decode_response),
        cmocka_unit_test(test_hc_grpc_status_value),
        cmocka_unit_test(test_hc_grpc_verdict),
        cmocka_unit_test(test_hc_h2_http_verdict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
