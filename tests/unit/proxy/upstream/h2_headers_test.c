/* Unit tests for proxy/upstream/h2_headers: an HTTP/1.1-style request becomes an HTTP/2 header
 * block (pseudo-headers from the method, path and Host; connection-specific fields dropped; TE
 * only as "trailers"; names lower-cased), and trailer blocks keep only allowed fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/buf.h"
#include "proxy/http/codec_h1.h"
#include "proxy/upstream/h2_headers.h"

static struct str nv_name(const nghttp2_nv *nv)
{
    return (struct str){(const char *)nv->name, nv->namelen};
}

static struct str nv_value(const nghttp2_nv *nv)
{
    return (struct str){(const char *)nv->value, nv->valuelen};
}

/* The value of field `name` in the block, or NULL when it is absent (the first one). */
static const char *find(const nghttp2_nv *nv, size_t n, const char *name, char *out, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        if (str_eq(nv_name(&nv[i]), str_from_c(name))) {
            struct str v = nv_value(&nv[i]);
            snprintf(out, cap, "%.*s", (int)v.len, v.p);
            return out;
        }
    }
    return NULL;
}

static size_t count(const nghttp2_nv *nv, size_t n, const char *name)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        k += str_eq(nv_name(&nv[i]), str_from_c(name));
    }
    return k;
}

static void add(struct headers *h, const char *n, const char *v)
{
    headers_add(h, str_from_c(n), str_from_c(v));
}

static void test_h2_headers_request_pseudo_headers_first(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers h;
    headers_init(&h, &a, 8);
    add(&h, "host", "example.com:8080");
    add(&h, "accept", "*/*");
    add(&h, "cookie", "a=1; b=2");
    size_t n = 0;
    nghttp2_nv *nv =
        h2_headers_request(&a, STR_LIT("POST"), STR_LIT("http"), STR_LIT("/p?q=1"), &h, &n);
    assert_int_equal(n, 7); /* the cookie's two crumbs are two fields */
    assert_true(str_eq_lit(nv_name(&nv[0]), ":method") && str_eq_lit(nv_value(&nv[0]), "POST"));
    assert_true(str_eq_lit(nv_name(&nv[1]), ":scheme") && str_eq_lit(nv_value(&nv[1]), "http"));
    assert_true(str_eq_lit(nv_name(&nv[2]), ":authority") &&
                str_eq_lit(nv_value(&nv[2]), "example.com:8080"));
    assert_true(str_eq_lit(nv_name(&nv[3]), ":path") && str_eq_lit(nv_value(&nv[3]), "/p?q=1"));
    char buf[64];
    assert_null(find(nv, n, "host", buf, sizeof(buf))); /* :authority replaces it */
    assert_string_equal(find(nv, n, "accept", buf, sizeof(buf)), "*/*");
    assert_true(str_eq_lit(nv_name(&nv[5]), "cookie") && str_eq_lit(nv_value(&nv[5]), "a=1"));
    assert_true(str_eq_lit(nv_name(&nv[6]), "cookie") && str_eq_lit(nv_value(&nv[6]), "b=2"));
    arena_deinit(&a);
}

/* The cookie fields of a block, joined with "; " into `out`. */
static const char *joined_cookies(const nghttp2_nv *nv, size_t n, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (str_eq_lit(nv_name(&nv[i]), "cookie")) {
            struct str v = nv_value(&nv[i]);
            off +=
                (size_t)snprintf(out + off, cap - off, "%s%.*s", off ? "; " : "", (int)v.len, v.p);
        }
    }
    return out;
}

static void test_h2_headers_request_splits_cookie_crumbs(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers h;
    headers_init(&h, &a, 8);
    add(&h, "host", "h");
    add(&h, "Cookie", "sid=abc; theme=dark; lang=en");
    add(&h, "x-between", "1");
    add(&h, "cookie", "late=1; ; empty=; x=a;b"); /* an empty crumb, and ";" without a space */
    size_t n = 0;
    nghttp2_nv *nv = h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
    const char *want[] = {"sid=abc", "theme=dark", "lang=en", NULL, "late=1", "empty=", "x=a;b"};
    assert_int_equal(n, 4 + 7);
    for (size_t i = 0; i < 7; i++) {
        if (want[i] == NULL) {
            assert_true(str_eq_lit(nv_name(&nv[4 + i]), "x-between"));
            continue;
        }
        assert_true(str_eq_lit(nv_name(&nv[4 + i]), "cookie"));
        assert_true(str_eq(nv_value(&nv[4 + i]), str_from_c(want[i])));
    }
    char buf[128];
    assert_string_equal(joined_cookies(nv, n, buf, sizeof(buf)),
                        "sid=abc; theme=dark; lang=en; late=1; empty=; x=a;b");

    /* nothing to split: as it was (one crumb, only empty crumbs, no "; ") */
    const char *whole[] = {"a=1", "a=1; ", "; ", "a=1;b=2", ""};
    for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++) {
        headers_init(&h, &a, 2);
        add(&h, "cookie", whole[i]);
        nv = h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
        assert_int_equal(n, 3 + 1);
        assert_true(str_eq(nv_value(&nv[3]), str_from_c(whole[i])));
    }
    arena_deinit(&a);
}

static void test_h2_headers_request_cookie_split_bounded(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 4096);
    char value[1024];
    /* host + cookie with `crumbs` crumbs: 1 + 4 + crumbs - 1 fields once split */
    for (size_t crumbs = 95; crumbs <= 97; crumbs++) {
        size_t off = 0;
        for (size_t i = 0; i < crumbs; i++) {
            off += (size_t)snprintf(value + off, sizeof(value) - off, "%sc%zu=1", i ? "; " : "", i);
        }
        struct headers h;
        headers_init(&h, &a, 2);
        add(&h, "host", "h");
        add(&h, "cookie", value);
        size_t n = 0;
        nghttp2_nv *nv =
            h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
        if (1 + 4 + crumbs - 1 <= H2_COOKIE_SPLIT_MAX_FIELDS) {
            assert_int_equal(count(nv, n, "cookie"), crumbs);
            assert_int_equal(n, 4 + crumbs);
        } else {
            assert_int_equal(count(nv, n, "cookie"), 1); /* past the bound: one field */
            assert_int_equal(n, 5);
        }
        char buf[1024];
        assert_string_equal(joined_cookies(nv, n, buf, sizeof(buf)), value); /* nothing lost */
    }
    arena_deinit(&a);
}

static void test_h2_headers_request_drops_connection_specific(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers h;
    headers_init(&h, &a, 16);
    add(&h, "host", "h");
    add(&h, "connection", "keep-alive, X-Hop");
    add(&h, "x-hop", "1");
    add(&h, "keep-alive", "timeout=5");
    add(&h, "proxy-connection", "keep-alive");
    add(&h, "transfer-encoding", "chunked");
    add(&h, "upgrade", "websocket");
    add(&h, "http2-settings", "AAA");
    add(&h, "X-Mixed-Case", "v");
    add(&h, "x-keep", "yes");
    size_t n = 0;
    nghttp2_nv *nv = h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
    const char *gone[] = {"connection",       "x-hop",       "keep-alive",
                          "proxy-connection", "upgrade",     "transfer-encoding",
                          "http2-settings",   "X-Mixed-Case"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        assert_int_equal(count(nv, n, gone[i]), 0);
    }
    char buf[16];
    assert_string_equal(find(nv, n, "x-mixed-case", buf, sizeof(buf)), "v");
    assert_string_equal(find(nv, n, "x-keep", buf, sizeof(buf)), "yes");
    assert_int_equal(n, 4 + 2);
    arena_deinit(&a);
}

static void test_h2_headers_request_te_only_trailers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers h;
    headers_init(&h, &a, 4);
    add(&h, "te", "gzip, Trailers");
    size_t n = 0;
    nghttp2_nv *nv = h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
    char buf[16];
    assert_string_equal(find(nv, n, "te", buf, sizeof(buf)), "trailers");

    headers_init(&h, &a, 4);
    add(&h, "te", "gzip, deflate");
    nv = h2_headers_request(&a, STR_LIT("GET"), STR_LIT("http"), STR_LIT("/"), &h, &n);
    assert_int_equal(count(nv, n, "te"), 0);
    assert_int_equal(n, 3); /* no Host: no :authority */
    arena_deinit(&a);
}

static void test_h2_headers_trailers_keep_allowed_fields(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers t;
    headers_init(&t, &a, 8);
    add(&t, "grpc-status", "0");
    add(&t, "Grpc-Message", "ok");
    add(&t, "content-length", "5");
    add(&t, "transfer-encoding", "chunked");
    add(&t, "connection", "close");
    add(&t, "host", "x");
    size_t n = 0;
    nghttp2_nv *nv = h2_headers_trailers(&a, &t, &n);
    assert_int_equal(n, 2);
    char buf[16];
    assert_string_equal(find(nv, n, "grpc-status", buf, sizeof(buf)), "0");
    assert_string_equal(find(nv, n, "grpc-message", buf, sizeof(buf)), "ok");

    headers_init(&t, &a, 2);
    add(&t, "te", "trailers");
    nv = h2_headers_trailers(&a, &t, &n);
    assert_int_equal(n, 0);
    arena_deinit(&a);
}

static void test_h2_headers_last_chunk_encodes_trailers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 1024);
    struct headers t;
    headers_init(&t, &a, 4);
    add(&t, "x-checksum", "abc");
    add(&t, "content-length", "3");
    struct buf b;
    buf_init(&b);
    h1_encode_last_chunk(&b, &t);
    const char want[] = "0\r\nx-checksum: abc\r\n\r\n";
    assert_int_equal(buf_len(&b), sizeof(want) - 1);
    assert_memory_equal(buf_head(&b), want, sizeof(want) - 1);
    buf_consume(&b, buf_len(&b));
    h1_encode_last_chunk(&b, NULL);
    assert_int_equal(buf_len(&b), 5);
    assert_memory_equal(buf_head(&b), "0\r\n\r\n", 5);
    buf_deinit(&b);
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h2_headers_request_pseudo_headers_first),
        cmocka_unit_test(test_h2_headers_request_drops_connection_specific),
        cmocka_unit_test(test_h2_headers_request_te_only_trailers),
        cmocka_unit_test(test_h2_headers_request_splits_cookie_crumbs),
        cmocka_unit_test(test_h2_headers_request_cookie_split_bounded),
        cmocka_unit_test(test_h2_headers_trailers_keep_allowed_fields),
        cmocka_unit_test(test_h2_headers_last_chunk_encodes_trailers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
