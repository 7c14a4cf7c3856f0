/* grpc_msg: message reassembly across arbitrary splits, the size bound and the compressed flag. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/grpc_msg.h"

struct got {
    int n;
    size_t lens[8];
    uint8_t bytes[8][64];
    int stop_after; /* return non-zero from this message on (0: never) */
};

static int on_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct got *g = arg;
    assert_true(g->n < 8 && len <= 64);
    g->lens[g->n] = len;
    memcpy(g->bytes[g->n], msg, len);
    g->n++;
    return g->stop_after != 0 && g->n >= g->stop_after;
}

/* Three messages (5 bytes, empty, 40 bytes) in one buffer. */
static size_t three(uint8_t *out)
{
    size_t o = 0;
    grpc_msg_prefix(out + o, 5);
    o += GRPC_MSG_PREFIX;
    memcpy(out + o, "hello", 5);
    o += 5;
    grpc_msg_prefix(out + o, 0);
    o += GRPC_MSG_PREFIX;
    grpc_msg_prefix(out + o, 40);
    o += GRPC_MSG_PREFIX;
    for (int i = 0; i < 40; i++)
        out[o++] = (uint8_t)i;
    return o;
}

static void check_three(const struct got *g)
{
    assert_int_equal(g->n, 3);
    assert_int_equal(g->lens[0], 5);
    assert_memory_equal(g->bytes[0], "hello", 5);
    assert_int_equal(g->lens[1], 0);
    assert_int_equal(g->lens[2], 40);
    for (int i = 0; i < 40; i++)
        assert_int_equal(g->bytes[2][i], i);
}

static void whole_and_every_split(void **state)
{
    (void)state;
    uint8_t in[128];
    size_t len = three(in);
    /* every piece size from 1 byte to the whole */
    for (size_t step = 1; step <= len; step++) {
        struct grpc_msg_reader r;
        struct got g = {0};
        grpc_msg_reader_init(&r, 64);
        for (size_t o = 0; o < len; o += step) {
            size_t n = len - o < step ? len - o : step;
            assert_int_equal(grpc_msg_feed(&r, in + o, n, on_msg, &g), GRPC_MSG_OK);
        }
        check_three(&g);
        assert_false(grpc_msg_partial(&r));
        grpc_msg_reader_reset(&r);
    }
}

static void a_cut_message_is_partial(void **state)
{
    (void)state;
    uint8_t in[128];
    size_t len = three(in);
    struct grpc_msg_reader r;
    struct got g = {0};
    grpc_msg_reader_init(&r, 64);
    assert_int_equal(grpc_msg_feed(&r, in, len - 1, on_msg, &g), GRPC_MSG_OK);
    assert_int_equal(g.n, 2);
    assert_true(grpc_msg_partial(&r));
    grpc_msg_reader_reset(&r); /* frees the held bytes (ASan checks) */
    assert_false(grpc_msg_partial(&r));
}

static void too_large_is_refused_from_its_prefix(void **state)
{
    (void)state;
    uint8_t p[GRPC_MSG_PREFIX];
    struct grpc_msg_reader r;
    struct got g = {0};
    grpc_msg_reader_init(&r, 64);
    grpc_msg_prefix(p, 65);
    assert_int_equal(grpc_msg_feed(&r, p, 4, on_msg, &g), GRPC_MSG_OK);
    assert_int_equal(grpc_msg_feed(&r, p + 4, 1, on_msg, &g), GRPC_MSG_TOO_LARGE);
    assert_null(r.buf);
    grpc_msg_prefix(p, 0xffffffffu);
    grpc_msg_reader_reset(&r);
    assert_int_equal(grpc_msg_feed(&r, p, sizeof(p), on_msg, &g), GRPC_MSG_TOO_LARGE);
    assert_int_equal(g.n, 0);
    grpc_msg_reader_reset(&r);
}

static void compressed_is_refused(void **state)
{
    (void)state;
    uint8_t in[] = {1, 0, 0, 0, 1, 'x'};
    struct grpc_msg_reader r;
    struct got g = {0};
    grpc_msg_reader_init(&r, 64);
    assert_int_equal(grpc_msg_feed(&r, in, sizeof(in), on_msg, &g), GRPC_MSG_COMPRESSED);
    assert_int_equal(g.n, 0);
    grpc_msg_reader_reset(&r);
}

static void a_callback_stops_feeding(void **state)
{
    (void)state;
    uint8_t in[128];
    size_t len = three(in);
    struct grpc_msg_reader r;
    struct got g = {.stop_after = 1};
    grpc_msg_reader_init(&r, 64);
    assert_int_equal(grpc_msg_feed(&r, in, len, on_msg, &g), GRPC_MSG_CALLBACK);
    assert_int_equal(g.n, 1);
    grpc_msg_reader_reset(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(whole_and_every_split),
        cmocka_unit_test(a_cut_message_is_partial),
        cmocka_unit_test(too_large_is_refused_from_its_prefix),
        cmocka_unit_test(compressed_is_refused),
        cmocka_unit_test(a_callback_stops_feeding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
