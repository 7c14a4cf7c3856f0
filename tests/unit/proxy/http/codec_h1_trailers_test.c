/* Unit tests for codec_h1's trailer callback: each field of a chunked message's trailer section
 * reaches on_trailer (name lower case, value trimmed), whatever the split of the input, while
 * the head's views stay valid (trailer bytes never grow the head block); without the callback
 * trailers are dropped as before. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/codec_h1.h"

struct rec {
    struct h1_msg head;
    char trailers[512];
    size_t tlen;
    int dones;
    char head_value_at_done[64];
};

static int on_head(void *ud, struct h1_msg *m)
{
    struct rec *r = ud;
    r->head = *m;
    return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    (void)ud;
    (void)p;
    (void)len;
    return 0;
}

static int on_done(void *ud)
{
    struct rec *r = ud;
    r->dones++;
    struct header *h = headers_get(&r->head.headers, STR_LIT("x-head"));
    snprintf(r->head_value_at_done, sizeof(r->head_value_at_done), "%.*s",
             h ? (int)h->value.len : 0, h ? h->value.p : "");
    return 0;
}

static int on_trailer(void *ud, struct str name, struct str value)
{
    struct rec *r = ud;
    int n = snprintf(r->trailers + r->tlen, sizeof(r->trailers) - r->tlen, "[%.*s=%.*s]",
                     STR_FMT(name), STR_FMT(value));
    r->tlen += (size_t)n;
    return 0;
}

static const struct h1_parser_cbs with_trailers = {on_head, on_body, on_done, on_trailer};
static const struct h1_parser_cbs without_trailers = {on_head, on_body, on_done, NULL};

static const char request[] = "POST /t HTTP/1.1\r\nHost: h\r\nX-Head: head-value\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n"
                              "3\r\nabc\r\n0\r\nX-Checksum:  sum-1 \r\nGRPC-Status: 0\r\n\r\n";

static void feed(const struct h1_parser_cbs *cbs, struct rec *r, size_t step)
{
    struct h1_parser *p = h1_parser_new(H1_REQUEST, 65536, 100, cbs, r);
    size_t len = sizeof(request) - 1, pos = 0;
    while (pos < len) {
        size_t n = step == 0 || len - pos < step ? len - pos : step;
        size_t off = 0;
        while (off < n) {
            ssize_t used = h1_parser_feed(p, (const uint8_t *)request + pos + off, n - off);
            assert_true(used >= 0);
            if (used == 0) {
                break;
            }
            off += (size_t)used;
        }
        pos += n;
    }
    h1_parser_free(p);
}

static void test_codec_h1_trailers_reach_the_callback(void **state)
{
    (void)state;
    size_t steps[] = {0, 1, 2, 7};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct rec r;
        memset(&r, 0, sizeof(r));
        feed(&with_trailers, &r, steps[i]);
        assert_int_equal(r.dones, 1);
        assert_string_equal(r.trailers, "[x-checksum=sum-1][grpc-status=0]");
        assert_string_equal(r.head_value_at_done, "head-value");
    }
}

static void test_codec_h1_trailers_dropped_without_callback(void **state)
{
    (void)state;
    struct rec r;
    memset(&r, 0, sizeof(r));
    feed(&without_trailers, &r, 0);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.tlen, 0);
    assert_string_equal(r.head_value_at_done, "head-value");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_h1_trailers_reach_the_callback),
        cmocka_unit_test(test_codec_h1_trailers_dropped_without_callback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
