/* Unit tests for h2_guard: Envoy's flood formulas, the outbound limits, the premature-reset
 * rule and the request checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/h2_guard.h"

static const struct h2_limits lim = {
    .max_outbound_frames = 10000,
    .max_outbound_control_frames = 1000,
    .max_empty_frames = 1,
    .max_priority_per_stream = 100,
    .max_wu_per_data_sent = 10,
};

static enum h2_flood in(struct h2_guard *g, uint8_t type, uint8_t flags, size_t len)
{
    nghttp2_frame_hd hd = {.length = len, .stream_id = 1, .type = type, .flags = flags};
    return h2_guard_inbound(g, &hd);
}

static void test_empty_frames(void **state)
{
    (void)state;
    struct h2_guard g;
    h2_guard_init(&g, &lim);
    assert_int_equal(in(&g, NGHTTP2_DATA, 0, 0), H2_FLOOD_NONE);
    assert_int_equal(in(&g, NGHTTP2_DATA, 0, 5), H2_FLOOD_NONE); /* resets the run */
    assert_int_equal(in(&g, NGHTTP2_HEADERS, 0, 0), H2_FLOOD_NONE);
    assert_int_equal(in(&g, NGHTTP2_PING, 0, 8), H2_FLOOD_NONE); /* other types: no effect */
    assert_int_equal(in(&g, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 0), H2_FLOOD_NONE);
    assert_int_equal(in(&g, NGHTTP2_CONTINUATION, 0, 0), H2_FLOOD_NONE);
    assert_int_equal(in(&g, NGHTTP2_DATA, 0, 0), H2_FLOOD_EMPTY_FRAMES);
    struct h2_limits zero = lim;
    zero.max_empty_frames = 0; /* Envoy: 0 ends the connection on the first one */
    h2_guard_init(&g, &zero);
    assert_int_equal(in(&g, NGHTTP2_DATA, 0, 0), H2_FLOOD_EMPTY_FRAMES);
}

static void test_priority_and_window_update(void **state)
{
    (void)state;
    struct h2_guard g;
    h2_guard_init(&g, &lim);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(in(&g, NGHTTP2_PRIORITY, 0, 5), H2_FLOOD_NONE);
    }
    h2_guard_stream_opened(&g); /* 100 x (1 + 1) */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(in(&g, NGHTTP2_PRIORITY, 0, 5), H2_FLOOD_NONE);
    }
    assert_int_equal(in(&g, NGHTTP2_PRIORITY, 0, 5), H2_FLOOD_PRIORITY);

    h2_guard_init(&g, &lim);
    /* 5 + 2 x (opened + 10 x data sent) */
    for (int i = 0; i < 5; i++) {
        assert_int_equal(in(&g, NGHTTP2_WINDOW_UPDATE, 0, 4), H2_FLOOD_NONE);
    }
    assert_int_equal(in(&g, NGHTTP2_WINDOW_UPDATE, 0, 4), H2_FLOOD_WINDOW_UPDATE);
    h2_guard_init(&g, &lim);
    h2_guard_stream_opened(&g);
    h2_guard_sent(&g, NGHTTP2_DATA);
    for (int i = 0; i < 5 + 2 * (1 + 10); i++) {
        assert_int_equal(in(&g, NGHTTP2_WINDOW_UPDATE, 0, 4), H2_FLOOD_NONE);
    }
    assert_int_equal(in(&g, NGHTTP2_WINDOW_UPDATE, 0, 4), H2_FLOOD_WINDOW_UPDATE);
}

static void test_outbound(void **state)
{
    (void)state;
    struct h2_guard g;
    h2_guard_init(&g, &lim);
    for (int i = 0; i < 1000; i++) {
        h2_guard_sent(&g, NGHTTP2_PING);
    }
    assert_int_equal(h2_guard_outbound(&g, 0), H2_FLOOD_NONE);
    h2_guard_sent(&g, NGHTTP2_RST_STREAM);
    assert_int_equal(h2_guard_outbound(&g, 0), H2_FLOOD_OUTBOUND_CONTROL);
    h2_guard_drained(&g);
    assert_int_equal(h2_guard_outbound(&g, 0), H2_FLOOD_NONE);
    for (int i = 0; i < 9000; i++) {
        h2_guard_sent(&g, NGHTTP2_DATA);
    }
    assert_int_equal(h2_guard_outbound(&g, 1000), H2_FLOOD_NONE);
    assert_int_equal(h2_guard_outbound(&g, 1001), H2_FLOOD_OUTBOUND);
}

static void test_premature_resets(void **state)
{
    (void)state;
    struct h2_guard g;
    h2_guard_init(&g, &lim);
    /* all reset, but fewer than 500: no decision yet */
    for (int i = 0; i < H2_PREMATURE_MIN_STREAMS - 1; i++) {
        assert_int_equal(h2_guard_stream_closed(&g, true), H2_FLOOD_NONE);
    }
    assert_int_equal(h2_guard_stream_closed(&g, true), H2_FLOOD_PREMATURE_RESET);
    h2_guard_init(&g, &lim);
    for (int i = 0; i < 2000; i++) { /* one in three reset: fine */
        assert_int_equal(h2_guard_stream_closed(&g, i % 3 == 0), H2_FLOOD_NONE);
    }
}

static bool path_ok(const char *m, const char *p)
{
    return h2_check_path((const uint8_t *)m, strlen(m), (const uint8_t *)p, strlen(p));
}

static void test_request_checks(void **state)
{
    (void)state;
    assert_true(path_ok("GET", "/"));
    assert_true(path_ok("GET", "/a?b=c%20d"));
    assert_true(path_ok("OPTIONS", "*"));
    assert_false(path_ok("GET", "*"));
    assert_false(path_ok("GET", ""));
    assert_false(path_ok("GET", "a/b"));
    assert_false(path_ok("GET", "/a b"));
    assert_false(path_ok("GET", "/ HTTP/1.1\r\nHost: x"));
    assert_false(path_ok("GET", "/a\x7f"));
    assert_true(h2_same_authority("Example.com:80", 14, "example.COM:80", 14));
    assert_false(h2_same_authority("a", 1, "b", 1));
    assert_false(h2_same_authority("a", 1, "a:80", 4));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_frames),   cmocka_unit_test(test_priority_and_window_update),
        cmocka_unit_test(test_outbound),       cmocka_unit_test(test_premature_resets),
        cmocka_unit_test(test_request_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
