/* Unit tests for access log format compilation and rendering. */
#include <setjmp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

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

/* The operators added for Envoy configs: details, durations, upstream parts, gRPC status,
 * trailers, header sizes, long flags, START_TIME(fmt). */
static void test_access_log_more_operators(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers req, resp, tr;
    headers_init(&req, &a, 2);
    headers_add(&req, STR_LIT("ab"), STR_LIT("cde")); /* 5 bytes */
    headers_init(&resp, &a, 2);
    headers_add(&resp, STR_LIT("content-type"), STR_LIT("application/grpc")); /* 28 */
    headers_init(&tr, &a, 2);
    headers_add(&tr, STR_LIT("grpc-status"), STR_LIT("14")); /* 13 */
    struct al_entry e = {
        .method = STR_LIT("GET"),
        .path = STR_LIT("/x"),
        .authority = STR_LIT("h"),
        .status = 503,
        .flags = RF_UF | RF_URX,
        .t_start = 1700000000.5,
        .t_end = 1700000000.75,
        .t_req_done = 1700000000.51,
        .t_req_sent = 1700000000.52,
        .t_upstream_headers = 1700000000.6,
        .upstream_host = STR_LIT("[::1]:8080"),
        .details = "upstream_reset_before_response_started",
        .reset_reason = "remote_connection_failure",
        .transport_errno = 111,
        .attempts = 3,
        .conn_id = 513,
        .is_grpc = true,
        .req = &req,
        .resp = &resp,
        .resp_trailers = &tr,
    };
    char out[1024];
    render("%RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% "
           "%CONNECTION_TERMINATION_DETAILS%",
           &e, out, sizeof(out));
    assert_string_equal(out, "upstream_reset_before_response_started{remote_connection_failure,"
                             "delayed_connect_error:_111} delayed_connect_error:_111 -");
    render("%REQUEST_DURATION% %REQUEST_TX_DURATION% %RESPONSE_DURATION% %RESPONSE_TX_DURATION%",
           &e, out, sizeof(out));
    assert_string_equal(out, "10 20 100 150");
    render("%UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% "
           "%UPSTREAM_REMOTE_PORT% %UPSTREAM_REQUEST_ATTEMPT_COUNT% %CONNECTION_ID% "
           "%VIRTUAL_CLUSTER_NAME%",
           &e, out, sizeof(out));
    assert_string_equal(out, "[::1]:8080 ::1 8080 3 513 -");
    /* the upstream connection: none yet, then an IPv6 one */
    render("%UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% "
           "%UPSTREAM_CONNECTION_ID%",
           &e, out, sizeof(out));
    assert_string_equal(out, "- - - -");
    struct sockaddr_in6 ul = {.sin6_family = AF_INET6, .sin6_port = htons(40001)};
    ul.sin6_addr.s6_addr[15] = 1;
    e.upstream_local = (const struct sockaddr *)&ul;
    e.upstream_conn_id = 770;
    render("%UPSTREAM_LOCAL_ADDRESS% %UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT% %UPSTREAM_LOCAL_PORT% "
           "%UPSTREAM_CONNECTION_ID%",
           &e, out, sizeof(out));
    assert_string_equal(out, "[::1]:40001 ::1 40001 770");
    render("%GRPC_STATUS% %GRPC_STATUS_NUMBER% %GRPC_STATUS(NUMBER)% %TRAILER(GRPC-STATUS)% "
           "%TRAILER(x?grpc-status)% %TRAILER(nope)%",
           &e, out, sizeof(out));
    assert_string_equal(out, "Unavailable 14 14 14 14 -");
    e.peer_ip = "10.0.0.9";
    e.peer_port = 4242;
    render("%DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_DIRECT_REMOTE_PORT%", &e, out, sizeof(out));
    assert_string_equal(out, "4242 4242");
    e.remote_ip = STR_LIT("1.2.3.4"); /* from x-forwarded-for: no port */
    render("%DOWNSTREAM_REMOTE_PORT% %DOWNSTREAM_DIRECT_REMOTE_PORT%", &e, out, sizeof(out));
    assert_string_equal(out, "0 4242");
    render("%RESPONSE_FLAGS% %RESPONSE_FLAGS_LONG%", &e, out, sizeof(out));
    assert_string_equal(out, "UF,URX UpstreamConnectionFailure,UpstreamRetryLimitExceeded");
    /* :method GET (10) :path /x (7) :authority h (11) :scheme http (11) + ab: cde (5) */
    render("%REQUEST_HEADERS_BYTES% %RESPONSE_HEADERS_BYTES% %RESPONSE_TRAILERS_BYTES%", &e, out,
           sizeof(out));
    assert_string_equal(out, "44 38 13");
    render("%START_TIME(%Y/%m/%dT%H:%M:%S %s.%3f|%6f|%f|%%)% %START_TIME(%s)%:5", &e, out,
           sizeof(out));
    assert_string_equal(out, "2023/11/14T22:13:20 1700000000.500|500000|500000000|% 1700000000:5");

    /* the gRPC status: from the headers (Trailers-Only), else inferred from the HTTP status;
     * "-" for a request that is not gRPC */
    e.resp_trailers = NULL;
    render("%GRPC_STATUS%", &e, out, sizeof(out));
    assert_string_equal(out, "Unavailable"); /* 503 */
    e.status = 404;
    render("%GRPC_STATUS% %GRPC_STATUS_NUMBER%", &e, out, sizeof(out));
    assert_string_equal(out, "Unimplemented 12");
    e.is_grpc = false;
    render("%GRPC_STATUS%", &e, out, sizeof(out));
    assert_string_equal(out, "-");

    /* details without a reset reason; nothing known */
    e.details = "route_not_found";
    e.reset_reason = NULL;
    e.transport_errno = 0;
    e.t_req_sent = 0;
    e.t_upstream_headers = 0;
    e.upstream_host = STR_NULL;
    render("%RESPONSE_CODE_DETAILS% %UPSTREAM_TRANSPORT_FAILURE_REASON% %REQUEST_TX_DURATION% "
           "%RESPONSE_TX_DURATION% %UPSTREAM_REMOTE_ADDRESS% %UPSTREAM_REMOTE_PORT%",
           &e, out, sizeof(out));
    assert_string_equal(out, "route_not_found - - - - -");
    e.details = NULL;
    render("%RESPONSE_CODE_DETAILS%", &e, out, sizeof(out));
    assert_string_equal(out, "-");

    /* HOSTNAME is the machine's */
    char host[256] = "";
    gethostname(host, sizeof(host));
    render("%HOSTNAME%", &e, out, sizeof(out));
    assert_string_equal(out, host[0] ? host : "-");

    /* typed JSON: the new numeric operators are numbers */
    const struct al_json_in in[] = {
        {.key = STR_LIT("a"), .format = STR_LIT("%UPSTREAM_REQUEST_ATTEMPT_COUNT%")},
        {.key = STR_LIT("d"), .format = STR_LIT("%REQUEST_DURATION%")},
        {.key = STR_LIT("p"), .format = STR_LIT("%UPSTREAM_LOCAL_PORT%")},
        {.key = STR_LIT("r"), .format = STR_LIT("%RESPONSE_CODE_DETAILS%")},
        {.key = STR_LIT("u"), .format = STR_LIT("%UPSTREAM_CONNECTION_ID%")},
    };
    render_json(in, 5, true, &e, out, sizeof(out));
    assert_string_equal(out, "{\"a\":3,\"d\":10,\"p\":40001,\"r\":null,\"u\":770}\n");
    arena_deinit(&a);
}

/* Envoy operators remora cannot honour are "not supported by remora yet"; names Envoy does not
 * have are not operators at all. */
static void test_access_log_rejected_operators(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct al_format f;
    struct err err;
    const char *unsupported[] = {"%DYNAMIC_METADATA(envoy.lb:key)%",
                                 "%FILTER_STATE(k:PLAIN)%",
                                 "%UPSTREAM_TLS_VERSION%",
                                 "%UPSTREAM_PEER_URI_SAN%",
                                 "%GRPC_STATUS(SNAKE_STRING)%",
                                 "%QUERY_PARAM(x)%",
                                 "%ROUNDTRIP_DURATION%"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        assert_int_not_equal(access_log_format_compile(&f, str_from_c(unsupported[i]), &a, &err),
                             0);
        assert_non_null(strstr(err.msg, "supported by remora yet"));
    }
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%NOPE%"), &a, &err), 0);
    assert_string_equal(err.msg,
                        "access log format: command %NOPE% is not an Envoy command operator");
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%NOPE(x)%"), &a, &err), 0);
    assert_non_null(strstr(err.msg, "is not an Envoy command operator"));
    assert_int_not_equal(access_log_format_compile(&f, STR_LIT("%START_TIME(%s"), &a, &err), 0);
    assert_non_null(strstr(err.msg, "unterminated"));
    arena_deinit(&a);
}

/* Filter trees, evaluated before formatting. */
static void test_access_log_filter_eval(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers req;
    headers_init(&req, &a, 2);
    headers_add(&req, STR_LIT("x-request-id"), STR_LIT("0000002a-0000-4000-8000-000000000000"));
    struct al_entry e = {
        .status = 503, .flags = RF_UF, .t_start = 10.0, .t_end = 10.25, .req = &req};
    struct al_filter st = {.kind = ALF_STATUS_CODE, .op = AL_CMP_GE, .value = 500};
    assert_true(access_log_filter_eval(&st, &e, 0));
    e.status = 404;
    assert_false(access_log_filter_eval(&st, &e, 0));
    st.op = AL_CMP_LE;
    st.value = 404;
    assert_true(access_log_filter_eval(&st, &e, 0));
    st.op = AL_CMP_EQ;
    st.value = 0;
    e.status = 0; /* no response: compared as 0, as Envoy does */
    assert_true(access_log_filter_eval(&st, &e, 0));

    struct al_filter du = {.kind = ALF_DURATION, .op = AL_CMP_GE, .value = 250};
    assert_true(access_log_filter_eval(&du, &e, 0));
    du.value = 251;
    assert_false(access_log_filter_eval(&du, &e, 0));

    struct al_filter rf = {.kind = ALF_RESPONSE_FLAG}; /* empty list: any flag */
    assert_true(access_log_filter_eval(&rf, &e, 0));
    rf.mask = RF_NR | RF_UH;
    assert_false(access_log_filter_eval(&rf, &e, 0));
    rf.mask |= RF_UF;
    assert_true(access_log_filter_eval(&rf, &e, 0));
    e.flags = 0;
    rf.mask = 0;
    assert_false(access_log_filter_eval(&rf, &e, 0));

    /* runtime: x-request-id's leading 8 hex digits (0x2a = 42) mod the denominator, unless
     * independent */
    struct al_filter rt = {.kind = ALF_RUNTIME, .value = 43, .denom = 100};
    assert_true(access_log_filter_eval(&rt, &e, 99));
    rt.value = 42;
    assert_false(access_log_filter_eval(&rt, &e, 0));
    rt.independent = true;
    assert_true(access_log_filter_eval(&rt, &e, 141)); /* 41 < 42 */
    assert_false(access_log_filter_eval(&rt, &e, 142));

    /* grpc_status_filter: inferred from the HTTP status when there is no grpc-status */
    e.status = 503;
    struct al_filter gs = {.kind = ALF_GRPC_STATUS, .mask = 1u << 14};
    assert_true(access_log_filter_eval(&gs, &e, 0));
    gs.exclude = true;
    assert_false(access_log_filter_eval(&gs, &e, 0));
    e.status = 0; /* nothing at all: UNKNOWN */
    gs.exclude = false;
    gs.mask = 1u << 2;
    assert_true(access_log_filter_eval(&gs, &e, 0));

    /* header_filter through the route matcher */
    struct header_matcher hm = {
        .name = STR_LIT("x-request-id"), .kind = HM_PREFIX, .value = STR_LIT("0000002a")};
    struct al_filter hf = {.kind = ALF_HEADER, .header = &hm};
    assert_true(access_log_filter_eval(&hf, &e, 0));
    hm.invert = true;
    assert_false(access_log_filter_eval(&hf, &e, 0));
    hm.invert = false;

    /* and / or, with traceable and not_health_check */
    e.status = 503;
    st = (struct al_filter){.kind = ALF_STATUS_CODE, .op = AL_CMP_GE, .value = 500};
    struct al_filter tr = {.kind = ALF_TRACEABLE};
    struct al_filter both[] = {st, tr};
    struct al_filter and = {.kind = ALF_AND, .sub = both, .n_sub = 2};
    struct al_filter or = {.kind = ALF_OR, .sub = both, .n_sub = 2};
    assert_false(access_log_filter_eval(&and, &e, 0));
    assert_true(access_log_filter_eval(& or, &e, 0));
    e.traceable = true;
    assert_true(access_log_filter_eval(&and, &e, 0));
    e.status = 200;
    e.traceable = false;
    assert_false(access_log_filter_eval(& or, &e, 0));
    struct al_filter nhc = {.kind = ALF_NOT_HEALTH_CHECK};
    assert_true(access_log_filter_eval(&nhc, &e, 0));
    e.is_health_check = true; /* the health_check filter took it */
    assert_false(access_log_filter_eval(&nhc, &e, 0));
    e.is_health_check = false;

    /* flag names: Envoy's that remora never sets are 0, unknown ones -1 */
    assert_int_equal(access_log_flag_bit(STR_LIT("NR")), RF_NR);
    assert_int_equal(access_log_flag_bit(STR_LIT("LH")), RF_LH);
    assert_int_equal(access_log_flag_bit(STR_LIT("LR")), 0);
    assert_int_equal(access_log_flag_bit(STR_LIT("XX")), -1);
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
        cmocka_unit_test(test_access_log_more_operators),
        cmocka_unit_test(test_access_log_rejected_operators),
        cmocka_unit_test(test_access_log_filter_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
