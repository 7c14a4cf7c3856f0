/* Unit tests for access log format compilation and rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/stream.h"

static void render(const char *fmt, const struct al_entry *e, char *out, size_t cap)
{
    struct arena a;
    arena_init(&a, 0);
    struct al_format f;
    struct err err;
    assert_int_equal(access_log_format_compile(&f, str_from_c(fmt), &a, &err), 0);
    struct buf b;
    buf_init(&b);
    access_log_render(&b, &f, e);
    snprintf(out, cap, "%.*s", (int)buf_len(&b), (const char *)buf_head(&b));
    buf_deinit(&b);
    arena_deinit(&a);
}

static void test_access_log_fields(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers req, resp;
    headers_init(&req, &a, 4);
    headers_add(&req, STR_LIT("user-agent"), STR_LIT("curl/8"));
    headers_add(&req, STR_LIT("x-long"), STR_LIT("abcdefgh"));
    headers_init(&resp, &a, 2);
    headers_add(&resp, STR_LIT("x-upstream-name"), STR_LIT("blue"));
    struct al_entry e = {
        .method = STR_LIT("POST"),
        .path = STR_LIT("/p?q=1"),
        .authority = STR_LIT("svc.local"),
        .protocol = STR_LIT("HTTP/1.1"),
        .status = 503,
        .flags = RF_UF | RF_UH,
        .bytes_received = 12,
        .bytes_sent = 34,
        .t_start = 1000.0,
        .t_end = 1000.25,
        .upstream_host = STR_LIT("127.0.0.1:8080"),
        .cluster = STR_LIT("backend"),
        .peer_ip = "10.1.2.3",
        .peer_port = 5555,
        .req = &req,
        .resp = &resp,
    };
    char out[512];
    render("%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% "
           "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %REQ(USER-AGENT)% %REQ(X-NONE)% "
           "%REQ(X-LONG):3% %REQ(X-NONE?USER-AGENT)% %RESP(X-UPSTREAM-NAME)% "
           "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %DURATION% "
           "%UPSTREAM_CLUSTER% 100%%\n",
           &e, out, sizeof(out));
    assert_string_equal(out, "POST /p?q=1 HTTP/1.1 503 UH,UF 12 34 127.0.0.1:8080 curl/8 - abc "
                             "curl/8 blue 10.1.2.3:5555 10.1.2.3 250 backend 100%\n");
    /* the trusted client address (from x-forwarded-for: port 0, as in Envoy) and the peer */
    e.remote_ip = STR_LIT("2001:db8::7");
    e.remote_port = 0;
    render("%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
           "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT%",
           &e, out, sizeof(out));
    assert_string_equal(out, "[2001:db8::7]:0 2001:db8::7 10.1.2.3:5555 10.1.2.3");
    e.remote_ip = STR_NULL;
    /* the default format renders and ends with a newline */
    render("", &e, out, sizeof(out));
    assert_true(strstr(out, "\"POST /p?q=1 HTTP/1.1\" 503 UH,UF 12 34 ") != NULL);
    assert_true(strstr(out, "\"svc.local\" \"127.0.0.1:8080\"\n") != NULL);
    /* a TCP entry: no request fields, no protocol */
    struct al_entry t = {.t_start = 1.0,
                         .t_end = 1.0,
                         .peer_ip = "127.0.0.1",
                         .upstream_host = STR_LIT("127.0.0.1:9"),
                         .bytes_sent = 5};
    render("", &t, out, sizeof(out));
    assert_true(strstr(out, "\"- - -\" 0 - 0 5 0 - \"-\" \"-\" \"-\" \"-\" \"127.0.0.1:9\"\n") !=
                NULL);
    arena_deinit(&a);
}

static void test_access_log_bad_formats(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct al_format f;
    struct err err;
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%START_TIME"), &a, &err), 0);
    assert_non_null(strstr(err.msg, "unterminated"));
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%NOPE%"), &a, &err), 0);
    assert_non_null(strstr(err.msg, "NOPE"));
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%REQ(X%"), &a, &err), 0);
    arena_deinit(&a);
}

static void render_json(const struct al_json_in *in, uint32_t n, bool typed,
                        const struct al_entry *e, char *out, size_t cap)
{
    struct arena a;
    arena_init(&a, 0);
    struct al_format f;
    struct err err;
    assert_int_equal(access_log_format_compile_json(&f, in, n, typed, &a, &err), 0);
    struct buf b;
    buf_init(&b);
    access_log_render(&b, &f, e);
    snprintf(out, cap, "%.*s", (int)buf_len(&b), (const char *)buf_head(&b));
    buf_deinit(&b);
    arena_deinit(&a);
}

/* Format dictionaries: one JSON object per line, keys sorted, values escaped; typed ones give
 * numbers for numeric operators and null for absent values; literals pass as they are. */
static void test_access_log_json(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers req;
    headers_init(&req, &a, 2);
    headers_add(&req, STR_LIT("user-agent"), STR_LIT("say \"hi\"\\\x01"));
    struct al_entry e = {
        .method = STR_LIT("GET"),
        .path = STR_LIT("/x"),
        .protocol = STR_LIT("HTTP/1.1"),
        .status = 200,
        .bytes_sent = 7,
        .t_start = 1000.0,
        .t_end = 1000.0,
        .peer_ip = "10.1.2.3",
        .peer_port = 5555,
        .req = &req,
    };
    const struct al_json_in in[] = {
        {.key = STR_LIT("path"), .format = STR_LIT("%REQ(:METHOD)% %REQ(:PATH)%")},
        {.key = STR_LIT("code"), .format = STR_LIT("%RESPONSE_CODE%")},
        {.key = STR_LIT("ua"), .format = STR_LIT("%REQ(USER-AGENT)%")},
        {.key = STR_LIT("host"), .format = STR_LIT("%UPSTREAM_HOST%")},
        {.key = STR_LIT("n"), .raw = STR_LIT("1.5")},
        {.key = STR_LIT("k\"q"), .format = STR_LIT("lit")},
    };
    char out[512];
    render_json(in, 6, true, &e, out, sizeof(out));
    assert_string_equal(out, "{\"code\":200,\"host\":null,\"k\\\"q\":\"lit\",\"n\":1.5,"
                             "\"path\":\"GET /x\",\"ua\":\"say \\\"hi\\\"\\\\\\u0001\"}\n");
    render_json(in, 6, false, &e, out, sizeof(out));
    assert_string_equal(out, "{\"code\":\"200\",\"host\":\"-\",\"k\\\"q\":\"lit\",\"n\":1.5,"
                             "\"path\":\"GET /x\",\"ua\":\"say \\\"hi\\\"\\\\\\u0001\"}\n");
    render_json(in, 0, true, &e, out, sizeof(out));
    assert_string_equal(out, "{}\n");
    struct al_format f;
    struct err err;
    const struct al_json_in bad[] = {{.key = STR_LIT("x"), .format = STR_LIT("%NOPE%")}};
    assert_int_not_equal(access_log_format_compile_json(&f, bad, 1, true, &a, &err), 0);
    assert_non_null(strstr(err.msg, "key 'x': access log format: command %NOPE%"));
    arena_deinit(&a);
}

static void test_access_log_time_format(void **state)
{
    (void)state;
    char t[32];
    access_log_time(t, 1700000000.123);
    assert_string_equal(t, "2023-11-14T22:13:20.123Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_access_log_fields),
        cmocka_unit_test(test_access_log_bad_formats),
        cmocka_unit_test(test_access_log_json),
        cmocka_unit_test(test_access_log_time_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
