/* Unit tests for access log format compilation and rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/downstream.h"
#include "proxy/http/stream.h"

static void render(const char *fmt, struct stream *s, char *out, size_t cap)
{
    struct arena a;
    arena_init(&a, 0);
    struct al_format f;
    struct err err;
    assert_int_equal(access_log_format_compile(&f, str_from_c(fmt), &a, &err), 0);
    struct buf b;
    buf_init(&b);
    access_log_render(&b, &f, s);
    snprintf(out, cap, "%.*s", (int)buf_len(&b), (const char *)buf_head(&b));
    buf_deinit(&b);
    arena_deinit(&a);
}

static void test_access_log_fields(void **state)
{
    (void)state;
    struct worker w;
    memset(&w, 0, sizeof(w));
    w.loop = ev_loop_new(0);
    struct downstream d;
    memset(&d, 0, sizeof(d));
    strcpy(d.peer_ip, "10.1.2.3");
    d.peer_port = 5555;
    struct stream s;
    memset(&s, 0, sizeof(s));
    s.w = &w;
    s.dc = &d;
    arena_init(&s.arena, 0);
    s.method = STR_LIT("POST");
    s.path = STR_LIT("/p?q=1");
    s.authority = STR_LIT("svc.local");
    s.version_minor = 1;
    s.status = 503;
    s.flags = RF_UF | RF_UH;
    s.req_body_bytes = 12;
    s.resp_body_bytes = 34;
    s.upstream_host = STR_LIT("127.0.0.1:8080");
    headers_init(&s.req, &s.arena, 4);
    headers_add(&s.req, STR_LIT("user-agent"), STR_LIT("curl/8"));
    headers_add(&s.req, STR_LIT("x-long"), STR_LIT("abcdefgh"));
    headers_init(&s.resp, &s.arena, 2);
    headers_add(&s.resp, STR_LIT("x-upstream-name"), STR_LIT("blue"));
    s.t_start = ev_now(w.loop);
    char out[512];
    render("%REQ(:METHOD)% %REQ(:PATH)% %PROTOCOL% %RESPONSE_CODE% %RESPONSE_FLAGS% "
           "%BYTES_RECEIVED% %BYTES_SENT% %UPSTREAM_HOST% %REQ(USER-AGENT)% %REQ(X-NONE)% "
           "%REQ(X-LONG):3% %REQ(X-NONE?USER-AGENT)% %RESP(X-UPSTREAM-NAME)% "
           "%DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%%\n",
           &s, out, sizeof(out));
    assert_string_equal(out, "POST /p?q=1 HTTP/1.1 503 UH,UF 12 34 127.0.0.1:8080 curl/8 - abc "
                             "curl/8 blue 10.1.2.3:5555 10.1.2.3 100%\n");
    /* the default format renders and ends with a newline */
    render("", &s, out, sizeof(out));
    assert_true(strstr(out, "\"POST /p?q=1 HTTP/1.1\" 503 UH,UF 12 34 ") != NULL);
    assert_true(strstr(out, "\"svc.local\" \"127.0.0.1:8080\"\n") != NULL);
    arena_deinit(&s.arena);
    ev_loop_destroy(w.loop);
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
        cmocka_unit_test(test_access_log_time_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
