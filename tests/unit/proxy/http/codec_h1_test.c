/* codec_h1 tests: request and response parsing, the strict framing guard against the hostile
 * inputs of hostile-inputs.md (b) 1-22 and 31, limits, split independence, and the encoders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proxy/core/buf.h"
#include "proxy/http/codec_h1.h"

#define MAX_HEAD (8 * 1024)
#define MAX_HEADERS 100

/* What the callbacks saw, serialised so messages can be compared after their views die. */
struct rec {
    char log[1 << 16];
    size_t log_len;
    int heads;
    int dones;
    int stop_in_head;   /* on_head returns -1 */
    struct h1_msg last; /* valid until the next message's first byte */
    char body[1 << 16];
    size_t body_len;
};

static void logf_(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct rec *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->log_len, sizeof(r->log) - r->log_len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        r->log_len += (size_t)n;
        if (r->log_len >= sizeof(r->log)) {
            r->log_len = sizeof(r->log) - 1;
        }
    }
}

static int on_head(void *ud, struct h1_msg *m)
{
    struct rec *r = ud;
    r->heads++;
    r->last = *m;
    logf_(r, "HEAD %.*s %.*s host=%.*s st=%d v=1.%d cl=%lld ch=%d ka=%d ex=%d up=%d n=%u\n",
          STR_FMT(m->method), STR_FMT(m->target), STR_FMT(m->host), m->status, m->version_minor,
          (long long)m->content_length, m->chunked, m->keep_alive, m->expect_continue, m->upgrade,
          m->headers.n);
    for (uint32_t i = 0; i < m->headers.n; i++) {
        logf_(r, "  [%.*s]=[%.*s]\n", STR_FMT(m->headers.v[i].name),
              STR_FMT(m->headers.v[i].value));
    }
    return r->stop_in_head ? -1 : 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct rec *r = ud;
    logf_(r, "BODY %.*s\n", (int)len, (const char *)p);
    if (r->body_len + len <= sizeof(r->body)) {
        memcpy(r->body + r->body_len, p, len);
        r->body_len += len;
    }
    return 0;
}

static int on_done(void *ud)
{
    struct rec *r = ud;
    r->dones++;
    logf_(r, "DONE\n");
    return 0;
}

static const struct h1_parser_cbs cbs = {on_head, on_body, on_done, NULL};

/* The outcome of feeding a whole input. */
struct outcome {
    int status; /* h1_parser_error() after -1, or -1 when all input was accepted */
    const char *reason;
    int messages;
    size_t consumed;
};

/* Feeds `in` in pieces of `step` bytes (0: all at once), going on after each message until the
 * input is used up or an error. Body bytes are concatenated into a single BODY line per call so
 * the log does not depend on the split. */
static struct outcome feed_all(struct h1_parser *p, struct rec *r, const char *in, size_t len,
                               size_t step)
{
    struct outcome o = {-1, NULL, 0, 0};
    size_t pos = 0;
    size_t avail_end = step ? (step < len ? step : len) : len;
    while (pos < len) {
        ssize_t n = h1_parser_feed(p, (const uint8_t *)in + pos, avail_end - pos);
        if (n < 0) {
            o.status = h1_parser_error(p, &o.reason);
            break;
        }
        pos += (size_t)n;
        if (pos == avail_end && avail_end < len) {
            avail_end = step ? (avail_end + step < len ? avail_end + step : len) : len;
        }
        if (n == 0 && pos < avail_end) {
            fail_msg("feed consumed nothing at %zu", pos);
        }
    }
    o.messages = r->dones;
    o.consumed = pos;
    return o;
}

/* A split-independent log: body pieces merged. */
static void normalise(const char *log, char *out, size_t cap)
{
    size_t o = 0;
    bool in_body = false;
    for (const char *l = log; *l != '\0';) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        bool body = n >= 5 && memcmp(l, "BODY ", 5) == 0;
        if (body) {
            if (!in_body) {
                o += (size_t)snprintf(out + o, cap - o, "BODY ");
            }
            o += (size_t)snprintf(out + o, cap - o, "%.*s", (int)(n - 5), l + 5);
        } else {
            if (in_body) {
                o += (size_t)snprintf(out + o, cap - o, "\n");
            }
            o += (size_t)snprintf(out + o, cap - o, "%.*s\n", (int)n, l);
        }
        in_body = body;
        l = e ? e + 1 : l + n;
    }
    if (in_body) {
        snprintf(out + o, cap - o, "\n");
    }
}

struct run {
    struct rec r;
    struct outcome o;
    char norm[1 << 16];
};

static void run_input(struct run *ru, enum h1_kind kind, const char *in, size_t len, size_t step,
                      size_t max_head, uint32_t max_headers)
{
    memset(&ru->r, 0, sizeof(ru->r));
    struct h1_parser *p = h1_parser_new(kind, max_head, max_headers, &cbs, &ru->r);
    ru->o = feed_all(p, &ru->r, in, len, step);
    normalise(ru->r.log, ru->norm, sizeof(ru->norm));
    h1_parser_free(p);
}

#define S(lit) lit, sizeof(lit) - 1

/* ---- requests ------------------------------------------------------------------------------- */

static void test_codec_h1_simple_get(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
                             "X-Mixed-CASE:   padded value \t \r\nAccept: */*\r\nEmpty:\r\n\r\n";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.dones, 1);
    struct h1_msg *m = &r.last;
    assert_true(str_eq_lit(m->method, "GET"));
    assert_true(str_eq_lit(m->target, "/index.html?q=1"));
    assert_true(str_eq_lit(m->host, "example.com"));
    assert_int_equal(m->version_minor, 1);
    assert_int_equal(m->status, 0);
    assert_int_equal(m->content_length, -1);
    assert_false(m->chunked);
    assert_true(m->keep_alive);
    assert_false(m->expect_continue);
    assert_false(m->upgrade);
    assert_int_equal(m->headers.n, 4);
    assert_true(str_eq_lit(m->headers.v[0].name, "host"));
    assert_true(str_eq_lit(m->headers.v[1].name, "x-mixed-case"));
    assert_true(str_eq_lit(m->headers.v[1].value, "padded value"));
    assert_true(str_eq_lit(m->headers.v[2].value, "*/*"));
    assert_true(str_eq_lit(m->headers.v[3].name, "empty"));
    assert_int_equal(m->headers.v[3].value.len, 0);
    assert_non_null(headers_get(&m->headers, STR_LIT("accept")));
    assert_false(h1_parser_in_message(p));
    assert_int_equal(h1_parser_eof(p), 0);
    h1_parser_free(p);
}

static void test_codec_h1_keep_alive_close_and_http10(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool ka;
        int minor;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true, 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false, 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n", false, 1},
        {"GET / HTTP/1.0\r\n\r\n", false, 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rec r = {0};
        struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
        size_t len = strlen(cases[i].in);
        assert_int_equal(h1_parser_feed(p, (const uint8_t *)cases[i].in, len), len);
        assert_int_equal(r.dones, 1);
        assert_int_equal(r.last.keep_alive, cases[i].ka);
        assert_int_equal(r.last.version_minor, cases[i].minor);
        /* After a closing message nothing more is parsed. */
        ssize_t n = h1_parser_feed(p, (const uint8_t *)cases[i].in, len);
        if (cases[i].ka) {
            assert_int_equal(n, len);
            assert_int_equal(r.dones, 2);
        } else {
            const char *why = NULL;
            assert_int_equal(n, -1);
            assert_int_equal(h1_parser_error(p, &why), 400);
            assert_string_equal(why, "data after Connection: close");
            assert_int_equal(r.dones, 1);
        }
        h1_parser_free(p);
    }
}

static void test_codec_h1_pipelined_one_at_a_time(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char a[] = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz";
    static const char b[] = "\r\nGET /b HTTP/1.1\r\nHost: b\r\n\r\n";
    char in[256];
    snprintf(in, sizeof(in), "%s%s", a, b);
    size_t len = strlen(in);

    ssize_t n = h1_parser_feed(p, (const uint8_t *)in, len);
    assert_int_equal(n, sizeof(a) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.dones, 1);
    assert_true(str_eq_lit(r.last.target, "/a"));
    assert_memory_equal(r.body, "xyz", 3);
    assert_int_equal(r.body_len, 3);
    /* The first message's views stay valid until the next message's first byte. */
    assert_true(str_eq_lit(r.last.host, "a"));

    ssize_t m = h1_parser_feed(p, (const uint8_t *)in + n, len - (size_t)n);
    assert_int_equal(m, sizeof(b) - 1);
    assert_int_equal(r.heads, 2);
    assert_int_equal(r.dones, 2);
    assert_true(str_eq_lit(r.last.target, "/b"));
    assert_true(str_eq_lit(r.last.host, "b"));
    assert_int_equal(r.body_len, 3); /* nothing of #2 leaked into #1's body */
    h1_parser_free(p);
}

static const struct {
    enum h1_kind kind;
    const char *in;
} split_inputs[] = {
    {H1_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\n"},
    {H1_REQUEST, "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6;name=val\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
                 "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"},
    {H1_REQUEST, "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n"
                 "0123456789\r\n\r\nDELETE /y HTTP/1.0\r\n\r\n"},
    {H1_RESPONSE, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"
                  "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                  "HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nuntil eof"},
    /* Errors must not depend on the split either. */
    {H1_REQUEST, "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n"},
    {H1_REQUEST, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX"},
    {H1_REQUEST, "get / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n"},
    {H1_RESPONSE, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"},
};

static void test_codec_h1_byte_by_byte_identical(void **state)
{
    (void)state;
    static struct run whole, split;
    for (size_t i = 0; i < sizeof(split_inputs) / sizeof(split_inputs[0]); i++) {
        const char *in = split_inputs[i].in;
        size_t len = strlen(in);
        run_input(&whole, split_inputs[i].kind, in, len, 0, MAX_HEAD, MAX_HEADERS);
        for (size_t step = 1; step <= 7; step += 2) {
            run_input(&split, split_inputs[i].kind, in, len, step, MAX_HEAD, MAX_HEADERS);
            assert_string_equal(whole.norm, split.norm);
            assert_int_equal(whole.o.status, split.o.status);
            if (whole.o.status < 0) {
                /* (after an error, what earlier feeds took depends on the split) */
                assert_int_equal(whole.o.consumed, split.o.consumed);
            }
            assert_int_equal(whole.o.messages, split.o.messages);
            if (whole.o.reason != NULL) {
                assert_string_equal(whole.o.reason, split.o.reason);
            }
        }
    }
    /* Sanity: the inputs above parse as intended. */
    run_input(&whole, H1_REQUEST, split_inputs[1].in, strlen(split_inputs[1].in), 1, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(whole.o.messages, 2);
    assert_non_null(strstr(whole.norm, "BODY hello world\n"));
    run_input(&whole, H1_RESPONSE, split_inputs[3].in, strlen(split_inputs[3].in), 1, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(whole.r.heads, 3);    /* the 100 is not reported */
    assert_int_equal(whole.o.messages, 2); /* the third ends at EOF */
}

static void test_codec_h1_chunked_body_dechunked(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n1A;ext=\"q\"\r\nabcdefghijklmnopqrstuvwxyz\r\n"
                             "0\r\nContent-Length: 50\r\nHost: evil\r\n\r\n";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(r.dones, 1);
    assert_true(r.last.chunked);
    assert_int_equal(r.last.content_length, -1);
    assert_int_equal(r.body_len, 31);
    assert_memory_equal(r.body, "helloabcdefghijklmnopqrstuvwxyz", 31);
    /* Trailers are parsed and dropped: never merged into the headers. */
    assert_int_equal(r.last.headers.n, 2);
    assert_true(str_eq_lit(r.last.host, "a"));
    assert_null(headers_get(&r.last.headers, STR_LIT("content-length")));
    h1_parser_free(p);
}

static void test_codec_h1_trailers_do_not_change_framing(void **state)
{
    (void)state;
    /* Framing fields in trailers are dropped: they neither end the connection nor change how
     * the next message is read (llhttp alone would let them flip its keep-alive verdict and
     * then swallow the next response). Found by the fuzzer. */
    static struct run ru;
    run_input(&ru, H1_RESPONSE,
              S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n0\r\n"
                "Transfer-Encoding: gzip\r\nConnection: close\r\nContent-Length: 9\r\n\r\n"
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 2);
    assert_int_equal(ru.r.body_len, 6);
    assert_memory_equal(ru.r.body, "Wikiok", 6);
    assert_null(strstr(ru.norm, "ka=0"));
}

static void test_codec_h1_content_length_body(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)head, sizeof(head) - 1), sizeof(head) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.last.content_length, 11);
    assert_true(h1_parser_in_message(p));
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)"hello", 5), 5);
    assert_int_equal(r.dones, 0);
    /* Only the rest of the body is consumed, not the next request's bytes. */
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)" worldGET", 9), 6);
    assert_int_equal(r.dones, 1);
    assert_memory_equal(r.body, "hello world", 11);
    assert_false(h1_parser_in_message(p));
    h1_parser_free(p);
}

static void test_codec_h1_expect_continue(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_REQUEST,
              S("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_non_null(strstr(ru.norm, "ex=1"));
    run_input(&ru, H1_REQUEST,
              S("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"), 0,
              MAX_HEAD, MAX_HEADERS);
    assert_non_null(strstr(ru.norm, "ex=0"));
    run_input(&ru, H1_REQUEST, S("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx"), 0,
              MAX_HEAD, MAX_HEADERS);
    assert_non_null(strstr(ru.norm, "ex=0"));
}

static void test_codec_h1_absolute_form_target(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_REQUEST,
              S("GET http://b.example:8080/p?q HTTP/1.1\r\nHost: B.example:8080\r\n\r\n"), 0,
              MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_non_null(strstr(ru.norm, "HEAD GET http://b.example:8080/p?q host=B.example:8080"));
    /* The target's authority overrides Host (RFC 9112 3.2.2): they must agree. */
    run_input(&ru, H1_REQUEST, S("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(ru.o.status, 400);
    assert_int_equal(ru.r.heads, 0);
    run_input(&ru, H1_REQUEST, S("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(ru.o.status, 400);
    /* HTTP/1.0 without Host: the target's authority is the host. */
    run_input(&ru, H1_REQUEST, S("GET http://c.example/ HTTP/1.0\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_non_null(strstr(ru.norm, "host=c.example "));
    run_input(&ru, H1_REQUEST, S("GET http://u@c/ HTTP/1.0\r\n\r\n"), 0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, 400);
    /* Asterisk and authority forms are passed as sent. */
    run_input(&ru, H1_REQUEST, S("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    run_input(&ru, H1_REQUEST, S("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_non_null(strstr(ru.norm, "HEAD CONNECT a:443 host=a:443"));
}

/* hostile-inputs.md (b): input -> status (-1: accepted). Each runs whole and byte by byte. */
static const struct hostile {
    const char *name;
    enum h1_kind kind;
    const char *in;
    size_t len;
    int status;
} hostile[] = {
/* clang-format off */
#define REQ(name, lit, st) {name, H1_REQUEST, lit, sizeof(lit) - 1, st}
#define RSP(name, lit, st) {name, H1_RESPONSE, lit, sizeof(lit) - 1, st}
    /* 1-3 CL+TE in any order or spelling */
    REQ("1 CL+TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    REQ("1 TE+CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n", 400),
    REQ("1 TE trailing SP", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n", 400),
    REQ("1 tab-folded TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\ttransfer-encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    REQ("2 CL.TE smuggle", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    REQ("3 TE.CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    /* 4 Transfer-Encoding values */
    REQ("4 xchunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n", 501),
    /* (llhttp itself refuses a coding after chunked: 400, which the catalogue allows) */
    REQ("4 chunked, identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n", 400),
    REQ("4 identity then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501),
    REQ("4 gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    REQ("4 chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400),
    REQ("4 empty TE", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", 400),
    REQ("4 space before colon", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    REQ("4 HTAB chunked ok", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", -1),
    REQ("4 chunked HTAB", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 400),
    REQ("4 chunked SP ok", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked \r\n\r\n0\r\n\r\n", -1),
    REQ("4 CHUNKED ok", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n", -1),
    /* 5 */
    REQ("5 TE on 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    /* 6-7 Content-Length */
    REQ("6 CL 4 + CL 5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", 400),
    REQ("6 identical CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", 400),
    REQ("6 empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", 400),
    REQ("7 CL +5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nabcde", 400),
    REQ("7 CL 5, 5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nabcde", 400),
    REQ("7 CL 0x5", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nabcde", 400),
    REQ("7 CL -1", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    REQ("7 CL overflow", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    /* 8-10 line endings and folding */
    REQ("8 bare CR", "POST / HTTP/1.1\r\nHost: a\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\n\r\n", 400),
    REQ("8 bare CR in request line", "GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("8 CR CR LF", "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", 400),
    REQ("9 obs-fold", "POST / HTTP/1.1\r\nHost: a\r\nX: y\r\n Content-Length: 5\r\n\r\nhello", 400),
    REQ("9 space before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
    REQ("10 bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400),
    REQ("10 bare LF ending head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400),
    REQ("10 bare LF before request", "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("10 bare LF in chunk line", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 400),
    REQ("10 bare LF after last chunk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n", 400),
    REQ("10 bare LF in trailers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n", 400),
    /* 11-12 chunk framing */
    REQ("11 chunk without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    REQ("11 chunk then LF only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n", 400),
    REQ("12 chunk size overflow", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFF1\r\n", 400),
    REQ("12 chunk size SP", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n", 400),
    REQ("12 chunk size 0x5", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    REQ("12 empty chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
    REQ("12 leading zeros ok", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n000000000000000000005\r\nhello\r\n0\r\n\r\n", -1),
    /* 13 trailers: dropped, never merged */
    REQ("13 trailers dropped", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 50\r\nHost: evil\r\n\r\n", -1),
    REQ("13 obs-fold in trailers", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n", 400),
    /* 14 control characters, empty name */
    REQ("14 NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400),
    REQ("14 NUL in request line", "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("14 0x01 in name", "GET / HTTP/1.1\r\nHost: a\r\nX\x01: a\r\n\r\n", 400),
    REQ("14 DEL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f\r\n\r\n", 400),
    REQ("14 empty name", "GET / HTTP/1.1\r\nHost: a\r\n:\r\n\r\n", 400),
    REQ("14 empty name with value", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
    REQ("14 no colon", "GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", 400),
    REQ("14 ESC in request line", "GET /\x1b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    /* 15 encoded CRLF stays encoded */
    REQ("15 %0d%0a target", "GET /%0d%0aSet-Cookie:x HTTP/1.1\r\nHost: a\r\n\r\n", -1),
    /* 16 Host */
    REQ("16 missing Host", "GET / HTTP/1.1\r\n\r\n", 400),
    REQ("16 duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400),
    REQ("16 Host a b", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    REQ("16 Host with slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
    REQ("16 absolute-form mismatch", "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("16 1.0 without Host ok", "GET / HTTP/1.0\r\n\r\n", -1),
    REQ("16 IPv6 Host ok", "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", -1),
    /* 17 request line */
    REQ("17 GE(T", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("17 HTTP/1.01", "GET / HTTP/1.01\r\nHost: a\r\n\r\n", 400),
    REQ("17 lowercase method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("17 space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    REQ("17 HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    REQ("17 HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
    REQ("17 HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400),
    REQ("17 no version", "GET /\r\nHost: a\r\n\r\n", 505),
    REQ("17 h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    REQ("17 HTTP/1.0 served", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", -1),
    /* 31 hostile upstream responses */
    RSP("31 CL+TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    RSP("31 TE+CL", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 502),
    RSP("31 bare CR", "HTTP/1.1 200 OK\r\nX: a\rSet-Cookie: y\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 bare LF", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", 502),
    RSP("31 obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 chunk without CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 502),
    RSP("31 duplicate CL", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 502),
    RSP("31 unknown TE", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", 502),
    RSP("31 TE on 1.0", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 502),
    RSP("31 HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 status 99", "HTTP/1.1 099 OK\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 control in reason", "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 NUL in header", "HTTP/1.1 200 OK\r\nX: a\0\r\nContent-Length: 0\r\n\r\n", 502),
    RSP("31 DEL in header", "HTTP/1.1 200 OK\r\nX: \x7f\r\nContent-Length: 0\r\n\r\n", 502),
    /* llhttp alone would read this body to EOF while the guard reads chunks (fuzzer) */
    RSP("31 chunked HTAB", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n", 502),
    RSP("31 chunked empty element", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n0\r\n\r\n", 502),
    RSP("31 ok", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", -1),
/* clang-format on */
#undef REQ
#undef RSP
};

static void test_codec_h1_hostile_catalogue(void **state)
{
    (void)state;
    static struct run whole, bytes;
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        const struct hostile *h = &hostile[i];
        run_input(&whole, h->kind, h->in, h->len, 0, MAX_HEAD, MAX_HEADERS);
        run_input(&bytes, h->kind, h->in, h->len, 1, MAX_HEAD, MAX_HEADERS);
        if (whole.o.status != h->status || bytes.o.status != h->status) {
            fail_msg("%s: expected %d, got %d (%s) whole, %d (%s) byte by byte", h->name, h->status,
                     whole.o.status, whole.o.reason ? whole.o.reason : "-", bytes.o.status,
                     bytes.o.reason ? bytes.o.reason : "-");
        }
        if (h->status > 0) {
            /* A rejected message never reaches the owner as complete. */
            assert_int_equal(whole.o.messages, 0);
            assert_non_null(whole.o.reason);
        } else {
            assert_int_equal(whole.o.messages, 1);
            assert_int_equal(whole.o.consumed, h->len);
        }
    }
}

static void test_codec_h1_control_bytes_at_every_offset(void **state)
{
    (void)state;
    /* The guard tests eight bytes at a time: a control byte must be found at any offset, in
     * the request line and in values, and no allowed byte (HTAB, obs-text, '~', DEL's
     * neighbours) may be mistaken for one. */
    static struct run ru;
    static char in[512];
    static const unsigned char bad[] = {0x00, 0x01, 0x08, 0x0b, 0x1f, 0x7f};
    for (size_t off = 0; off < 24; off++) {
        for (size_t k = 0; k < sizeof(bad); k++) {
            char v[32];
            memset(v, 'v', sizeof(v));
            v[off] = (char)bad[k];
            size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\nX: v");
            memcpy(in + o, v, 24);
            o += 24;
            o += (size_t)sprintf(in + o, "\r\n\r\n");
            run_input(&ru, H1_REQUEST, in, o, 0, MAX_HEAD, MAX_HEADERS);
            assert_int_equal(ru.o.status, 400);
            /* the same in the target */
            o = (size_t)sprintf(in, "GET /");
            memcpy(in + o, v, 24);
            o += 24;
            o += (size_t)sprintf(in + o, " HTTP/1.1\r\nHost: a\r\n\r\n");
            run_input(&ru, H1_REQUEST, in, o, 0, MAX_HEAD, MAX_HEADERS);
            assert_int_equal(ru.o.status, 400);
            /* and in a reason phrase, where llhttp itself accepts controls */
            o = (size_t)sprintf(in, "HTTP/1.1 200 ");
            memcpy(in + o, v, 24);
            o += 24;
            o += (size_t)sprintf(in + o, "\r\nContent-Length: 0\r\n\r\n");
            run_input(&ru, H1_RESPONSE, in, o, 0, MAX_HEAD, MAX_HEADERS);
            assert_int_equal(ru.o.status, 502);
        }
        /* HTAB is allowed in a value at any offset. */
        size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\nX: v");
        for (size_t i = 0; i < 24; i++) {
            in[o + i] = i == off ? '\t' : 'v';
        }
        o += 24;
        o += (size_t)sprintf(in + o, "v\r\n\r\n");
        run_input(&ru, H1_REQUEST, in, o, 0, MAX_HEAD, MAX_HEADERS);
        assert_int_equal(ru.o.status, -1);
    }
    /* Every byte from 0x20 to 0xff but DEL is allowed in a value. */
    size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\nX: v");
    for (int c = 0x20; c <= 0xff; c++) {
        if (c != 0x7f) {
            in[o++] = (char)c;
        }
    }
    o += (size_t)sprintf(in + o, "\r\n\r\n");
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, o), o);
    assert_int_equal(r.last.headers.v[1].value.len, 1 + 0xff - 0x20);
    h1_parser_free(p);
}

static void test_codec_h1_names_lowered_at_every_offset(void **state)
{
    (void)state;
    /* The guard scans names sixteen and eight bytes at a time and lower-cases them in place:
     * every length and offset, every upper-case letter and none of their neighbours ('@', '[',
     * '^', '_', '`', '|', '~'), whole and byte by byte, with the value left as sent. */
    static struct run whole, bytes;
    static char in[512];
    static const char tchars[] = "AZaz09^_`|~!#$%&'*+-.";
    for (size_t len = 1; len <= 40; len++) {
        char name[48], want[48];
        for (size_t i = 0; i < len; i++) {
            name[i] = i % 3 == 0 ? (char)('A' + (len + i) % 26) : tchars[(len * 7 + i) % 21];
            want[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] | 0x20 : name[i]);
        }
        size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\n");
        memcpy(in + o, name, len);
        o += len;
        o += (size_t)sprintf(in + o, ": Value WITH Caps\r\nX-After: ABC\r\n\r\n");
        run_input(&whole, H1_REQUEST, in, o, 0, MAX_HEAD, MAX_HEADERS);
        assert_int_equal(whole.o.status, -1);
        /* (the parser is gone: its views are checked through the log) */
        char fields[160];
        snprintf(fields, sizeof(fields),
                 " n=3\n  [host]=[a]\n  [%.*s]=[Value WITH Caps]\n"
                 "  [x-after]=[ABC]\nDONE\n",
                 (int)len, want);
        assert_non_null(strstr(whole.norm, fields));
        run_input(&bytes, H1_REQUEST, in, o, 1, MAX_HEAD, MAX_HEADERS);
        assert_string_equal(whole.norm, bytes.norm);
        /* A byte that may not be in a name, at every offset of it. */
        static const char bad[] = {' ', '\t', '\x01', '\x7f', '\r', '\n', '"', '@'};
        for (size_t off = 1; off < len; off++) {
            for (size_t k = 0; k < sizeof(bad); k++) {
                o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\n");
                memcpy(in + o, name, len);
                in[o + off] = bad[k];
                o += len;
                o += (size_t)sprintf(in + o, ": v\r\n\r\n");
                run_input(&whole, H1_REQUEST, in, o, 0, MAX_HEAD, MAX_HEADERS);
                assert_int_equal(whole.o.status, 400);
                run_input(&bytes, H1_REQUEST, in, o, 1, MAX_HEAD, MAX_HEADERS);
                assert_int_equal(bytes.o.status, 400);
                assert_string_equal(whole.o.reason, bytes.o.reason);
            }
        }
    }
}

static void test_codec_h1_reasons_are_precise(void **state)
{
    (void)state;
    static struct run ru;
    static const struct {
        const char *in;
        const char *reason;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\nX: \rx\r\n\r\n", "bare CR in header section"},
        {"GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF in header section"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", "obs-fold in header section"},
        {"GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", "whitespace before colon"},
        {"GET / HTTP/1.1\r\nHost: a\r\n: y\r\n\r\n", "empty header name"},
        {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate Host"},
        {"GET / HTTP/1.1\r\n\r\n", "missing Host"},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
         "duplicate Content-Length"},
        {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
         "Content-Length with Transfer-Encoding"},
        {"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
         "Content-Length with Transfer-Encoding"},
        {"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
         "chunk data not followed by CRLF"},
        {"GET / HTTP/2.0\r\nHost: a\r\n\r\n", "unsupported HTTP version"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_input(&ru, H1_REQUEST, cases[i].in, strlen(cases[i].in), 0, MAX_HEAD, MAX_HEADERS);
        assert_non_null(ru.o.reason);
        assert_string_equal(ru.o.reason, cases[i].reason);
    }
}

/* Builds a chunked request whose first chunk-size line carries `ext_len` bytes of `pattern`. */
static char *ext_request(const char *pattern, size_t ext_len, size_t *len)
{
    static const char head[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5";
    size_t pl = strlen(pattern);
    char *in = malloc(sizeof(head) + ext_len + 16);
    memcpy(in, head, sizeof(head) - 1);
    size_t o = sizeof(head) - 1;
    for (size_t i = 0; i < ext_len; i += pl) {
        memcpy(in + o + i, pattern, pl);
    }
    o += ext_len;
    memcpy(in + o, "\r\nhello\r\n0\r\n\r\n", 14);
    *len = o + 14;
    return in;
}

static void test_codec_h1_chunk_extensions_bounded(void **state)
{
    (void)state;
    static const struct {
        const char *pattern;
        const char *reason;
    } cases[] = {
        /* llhttp 8.1.0 refuses a second `;a=b` itself */
        {";a=b", "invalid chunk size"},
        /* one endless extension: the guard's line bound */
        {";aaaaaaaaaaaaaaa", "chunk line too long"},
        {";a=\"bbbbbbbbbbbb\"", "chunk line too long"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t len;
        char *in = ext_request(cases[i].pattern, 1024 * 1024, &len);
        for (size_t step = 0; step <= 1; step++) {
            struct rec r = {0};
            struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
            struct outcome o = feed_all(p, &r, in, len, step ? 4096 : 0);
            assert_int_equal(o.status, 400);
            assert_string_equal(o.reason, cases[i].reason);
            /* It stopped within a few KiB of the line, without scanning the rest. */
            assert_true(o.consumed < 8192);
            assert_int_equal(r.body_len, 0);
            h1_parser_free(p);
        }
        free(in);
    }
}

/* ---- limits --------------------------------------------------------------------------------- */

static char *many_headers(size_t n, size_t *len)
{
    char *in = malloc(64 + n * 16);
    size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = 0; i < n; i++) {
        o += (size_t)sprintf(in + o, "x-%zu: \r\n", i);
    }
    o += (size_t)sprintf(in + o, "\r\n");
    *len = o;
    return in;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_codec_h1_header_count_limit(void **state)
{
    (void)state;
    size_t len;
    char *in = many_headers(10000, &len);
    struct rec r = {0};

    /* Over the limit: 431, found at header 101 without looking further. */
    struct h1_parser *p = h1_parser_new(H1_REQUEST, 1 << 20, MAX_HEADERS, &cbs, &r);
    struct outcome o = feed_all(p, &r, in, len, 0);
    assert_int_equal(o.status, 431);
    assert_string_equal(o.reason, "too many headers");
    assert_true(o.consumed < 4096);
    assert_int_equal(r.heads, 0);
    h1_parser_free(p);

    /* Within a large limit the 10 000 headers parse in linear time (CVE-2019-15226). */
    memset(&r, 0, sizeof(r));
    p = h1_parser_new(H1_REQUEST, 1 << 20, 20000, &cbs, &r);
    double t0 = now_ms();
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, len), len);
    double dt = now_ms() - t0;
    assert_int_equal(r.last.headers.n, 10001);
    assert_true(str_eq_lit(r.last.headers.v[10000].name, "x-9999"));
    assert_true(dt < 200.0);
    h1_parser_free(p);

    /* Exactly at the limit is fine. */
    free(in);
    in = many_headers(MAX_HEADERS - 1, &len);
    memset(&r, 0, sizeof(r));
    p = h1_parser_new(H1_REQUEST, 1 << 20, MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, len), len);
    assert_int_equal(r.last.headers.n, MAX_HEADERS);
    h1_parser_free(p);
    free(in);
}

static void test_codec_h1_head_size_limit(void **state)
{
    (void)state;
    static struct run ru;
    static char in[4096];
    /* A head of exactly `max` bytes passes; one more byte is 431. */
    const size_t max = 200;
    int n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
                     (int)(max - 32), 7);
    assert_int_equal((size_t)n, max);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 0, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 1, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 0, max - 1, MAX_HEADERS);
    assert_int_equal(ru.o.status, 431);
    assert_string_equal(ru.o.reason, "header section too large");
    run_input(&ru, H1_REQUEST, in, (size_t)n, 1, max - 1, MAX_HEADERS);
    assert_int_equal(ru.o.status, 431);

    /* A request line alone over the limit: 414. */
    n = snprintf(in, sizeof(in), "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 300, 1);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 0, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, 414);
    assert_int_equal(ru.o.consumed, 0); /* stopped at the budget, not after reading it all */
    run_input(&ru, H1_REQUEST, in, (size_t)n, 1, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, 414);

    /* One large header: 431; for a response, 502. */
    n = snprintf(in, sizeof(in), "GET / HTTP/1.1\r\nHost: a\r\nBig: %0*d\r\n\r\n", 300, 1);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 0, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, 431);
    n = snprintf(in, sizeof(in), "HTTP/1.1 200 OK\r\nBig: %0*d\r\n\r\n", 300, 1);
    run_input(&ru, H1_RESPONSE, in, (size_t)n, 0, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, 502);

    /* Trailers are bounded the same way. */
    n = snprintf(
        in, sizeof(in),
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: %0*d\r\n\r\n", 300,
        1);
    run_input(&ru, H1_REQUEST, in, (size_t)n, 0, max, MAX_HEADERS);
    assert_int_equal(ru.o.status, 431);
    assert_string_equal(ru.o.reason, "trailer section too large");
}

static void test_codec_h1_head_block_growth_keeps_views(void **state)
{
    (void)state;
    /* Enough header bytes to grow the head block several times; every view must follow. */
    static char in[16384];
    size_t o = (size_t)sprintf(in, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 40; i++) {
        o += (size_t)sprintf(in + o, "H%d: %0200d\r\n", i, i);
    }
    o += (size_t)sprintf(in + o, "\r\n");
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, sizeof(in), MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, o), o);
    assert_int_equal(r.last.headers.n, 41);
    assert_true(str_eq_lit(r.last.host, "a"));
    assert_true(str_eq_lit(r.last.method, "GET"));
    for (int i = 0; i < 40; i++) {
        char name[16], value[256];
        snprintf(name, sizeof(name), "h%d", i);
        snprintf(value, sizeof(value), "%0200d", i);
        assert_true(str_eq(r.last.headers.v[i + 1].name, str_from_c(name)));
        assert_true(str_eq(r.last.headers.v[i + 1].value, str_from_c(value)));
    }
    /* The next message works after the block is shrunk back, and after a release. */
    static const char small[] = "GET /2 HTTP/1.1\r\nHost: b\r\n\r\n";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)small, sizeof(small) - 1),
                     sizeof(small) - 1);
    assert_true(str_eq_lit(r.last.host, "b"));
    h1_parser_release(p);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)small, sizeof(small) - 1),
                     sizeof(small) - 1);
    assert_true(str_eq_lit(r.last.target, "/2"));
    assert_int_equal(r.dones, 3);
    h1_parser_free(p);
}

/* ---- callbacks, EOF, upgrade ---------------------------------------------------------------- */

static void test_codec_h1_callback_stop(void **state)
{
    (void)state;
    struct rec r = {0};
    r.stop_in_head = 1;
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), -1);
    const char *why = NULL;
    assert_int_equal(h1_parser_error(p, &why), 0);
    assert_non_null(why);
    assert_int_equal(r.dones, 0);
    /* Sticky. */
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), -1);
    h1_parser_free(p);
}

static void test_codec_h1_request_eof(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_eof(p), 0); /* nothing started */
    h1_parser_free(p);

    p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)"GET / HT", 8), 8);
    assert_true(h1_parser_in_message(p));
    assert_int_equal(h1_parser_eof(p), -1);
    h1_parser_free(p);

    /* Content-Length: 100, 3 bytes, FIN: truncated, never complete (case 23). */
    memset(&r, 0, sizeof(r));
    p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nabc";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(h1_parser_eof(p), -1);
    assert_int_equal(r.dones, 0);
    h1_parser_free(p);
}

static void test_codec_h1_upgrade_and_connect(void **state)
{
    (void)state;
    static struct run ru;
    /* An upgrade the owner does not take: the next request still parses. */
    run_input(&ru, H1_REQUEST,
              S("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
                "GET /next HTTP/1.1\r\nHost: a\r\n\r\n"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 2);
    assert_non_null(strstr(ru.norm, "HEAD GET /ws host=a st=0 v=1.1 cl=-1 ch=0 ka=1 ex=0 up=1"));
    assert_non_null(strstr(ru.norm, "HEAD GET /next host=a st=0 v=1.1 cl=-1 ch=0 ka=1 ex=0 up=0"));
    /* Upgrade without Connection: upgrade is not an upgrade. */
    run_input(&ru, H1_REQUEST, S("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n"), 0, MAX_HEAD,
              MAX_HEADERS);
    assert_non_null(strstr(ru.norm, "up=0"));
    /* CONNECT has no body whatever it says; its message ends at the head. */
    run_input(&ru, H1_REQUEST,
              S("CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 3\r\n\r\n"
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.messages, 2);
    assert_null(strstr(ru.norm, "BODY"));
}

/* ---- responses ------------------------------------------------------------------------------ */

static void test_codec_h1_response_content_length(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_RESPONSE, S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 1);
    assert_int_equal(ru.r.last.status, 200);
    assert_int_equal(ru.r.last.content_length, 5);
    assert_true(ru.r.last.keep_alive);
    assert_int_equal(ru.r.last.method.len, 0);
    assert_int_equal(ru.r.body_len, 5);
}

static void test_codec_h1_response_chunked(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_RESPONSE,
              S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5\r\npedia\r\n"
                "0\r\nExpires: never\r\n\r\n"),
              1, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 1);
    assert_true(ru.r.last.chunked);
    assert_true(ru.r.last.keep_alive);
    assert_int_equal(ru.r.body_len, 9);
    assert_memory_equal(ru.r.body, "Wikipedia", 9);
}

static void test_codec_h1_response_eof_delimited(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\nsome body";
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)" more", 5), 5);
    assert_int_equal(r.heads, 1);
    assert_false(r.last.keep_alive);
    assert_int_equal(r.last.content_length, -1);
    assert_int_equal(r.dones, 0);
    assert_true(h1_parser_in_message(p));
    assert_int_equal(h1_parser_eof(p), 0);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.body_len, 14);
    assert_memory_equal(r.body, "some body more", 14);
    assert_false(h1_parser_in_message(p));
    h1_parser_free(p);
}

static void test_codec_h1_response_truncated(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        "HTTP/1.1 200 OK\r\nContent-Le",
        "HTTP/1.1 100 Continue\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct rec r = {0};
        struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
        size_t len = strlen(cases[i]);
        assert_int_equal(h1_parser_feed(p, (const uint8_t *)cases[i], len), len);
        assert_true(h1_parser_in_message(p));
        assert_int_equal(h1_parser_eof(p), -1);
        assert_int_equal(r.dones, 0);
        const char *why = NULL;
        assert_int_equal(h1_parser_error(p, &why), 502);
        assert_string_equal(why, "truncated message");
        h1_parser_free(p);
    }
}

static void test_codec_h1_response_head_no_body(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
                             "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
    h1_parser_expect_no_body(p);
    ssize_t n = h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1);
    assert_int_equal(n, 41);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.last.content_length, 1000); /* reported, not read */
    assert_true(r.last.keep_alive);
    assert_int_equal(r.body_len, 0);
    /* The flag applied to one response only. */
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in + n, sizeof(in) - 1 - (size_t)n),
                     sizeof(in) - 1 - (size_t)n);
    assert_int_equal(r.dones, 2);
    assert_int_equal(r.body_len, 3);
    h1_parser_free(p);
}

static void test_codec_h1_response_204_304_no_body(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_RESPONSE,
              S("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 3);
    assert_int_equal(ru.r.body_len, 2);
    assert_memory_equal(ru.r.body, "ok", 2);
}

static void test_codec_h1_response_1xx_skipped(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "HTTP/1.1 100 Continue\r\n\r\n"
                             "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                             "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    h1_parser_expect_no_body(p); /* survives the interim responses */
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1), sizeof(in) - 1);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.dones, 1);
    assert_int_equal(r.last.status, 201);
    assert_int_equal(r.last.headers.n, 1); /* the 103's Link is not there */
    h1_parser_free(p);
}

static void test_codec_h1_response_interim_flood(void **state)
{
    (void)state;
    static struct run ru;
    static char in[4096];
    size_t o = 0;
    for (int i = 0; i < 10; i++) {
        o += (size_t)sprintf(in + o, "HTTP/1.1 100 Continue\r\n\r\n");
    }
    size_t ten = o;
    o += (size_t)sprintf(in + o, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    /* Ten are tolerated. */
    run_input(&ru, H1_RESPONSE, in, o, 0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, -1);
    assert_int_equal(ru.o.messages, 1);
    assert_int_equal(ru.r.heads, 1);
    /* The eleventh is an error, before any head reaches the owner. */
    o = ten + (size_t)sprintf(in + ten, "HTTP/1.1 100 Continue\r\n\r\n");
    run_input(&ru, H1_RESPONSE, in, o, 0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, 502);
    assert_string_equal(ru.o.reason, "too many interim responses");
    assert_int_equal(ru.r.heads, 0);
    /* The count is per exchange: ten before each of two responses is fine. */
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    size_t first = ten + (size_t)sprintf(in + ten, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, first), first);
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in, first), first);
    assert_int_equal(r.dones, 2);
    h1_parser_free(p);
}

static void test_codec_h1_response_101_switching(void **state)
{
    (void)state;
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_RESPONSE, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    static const char in[] = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             "Upgrade: websocket\r\n\r\n\x81\x05hello";
    ssize_t n = h1_parser_feed(p, (const uint8_t *)in, sizeof(in) - 1);
    assert_int_equal(n, sizeof(in) - 1 - 7);
    assert_int_equal(r.heads, 1);
    assert_int_equal(r.last.status, 101);
    assert_true(r.last.upgrade);
    assert_int_equal(r.dones, 1);
    /* What follows is another protocol: never parsed as HTTP. */
    assert_int_equal(h1_parser_feed(p, (const uint8_t *)in + n, 7), -1);
    h1_parser_free(p);
}

static void test_codec_h1_response_cl_te_rejected(void **state)
{
    (void)state;
    static struct run ru;
    run_input(&ru, H1_RESPONSE,
              S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                "0\r\n\r\nHTTP/1.1 200 OK\r\n"),
              0, MAX_HEAD, MAX_HEADERS);
    assert_int_equal(ru.o.status, 502);
    assert_string_equal(ru.o.reason, "Content-Length with Transfer-Encoding");
    assert_int_equal(ru.r.heads, 0);
}

/* ---- encoders ------------------------------------------------------------------------------- */

static void test_codec_h1_encode_request_head(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 2);
    headers_add(&h, STR_LIT("host"), STR_LIT("example.com"));
    headers_add(&h, STR_LIT("x-empty"), STR_LIT(""));
    headers_add(&h, STR_LIT("accept"), STR_LIT("*/*"));
    struct buf b;
    buf_init(&b);
    buf_append(&b, "prefix|", 7);
    h1_encode_request_head(&b, STR_LIT("POST"), STR_LIT("/a?b=c"), &h);
    static const char want[] = "prefix|POST /a?b=c HTTP/1.1\r\nhost: example.com\r\nx-empty: \r\n"
                               "accept: */*\r\n\r\n";
    assert_int_equal(buf_len(&b), sizeof(want) - 1);
    assert_memory_equal(buf_head(&b), want, sizeof(want) - 1);
    buf_deinit(&b);

    /* No headers at all. */
    headers_init(&h, &a, 1);
    h1_encode_request_head(&b, STR_LIT("GET"), STR_LIT("/"), &h);
    assert_int_equal(buf_len(&b), 18);
    assert_memory_equal(buf_head(&b), "GET / HTTP/1.1\r\n\r\n", 18);
    buf_deinit(&b);
    arena_deinit(&a);
}

/* The encoder copies short names and values with overlapping word stores: every length from 0
 * to 40, at every alignment of source and destination, comes out byte for byte. */
static void test_codec_h1_encode_every_length(void **state)
{
    (void)state;
    char src[64 + 8];
    for (size_t i = 0; i < sizeof(src); i++) {
        src[i] = (char)('a' + i % 26);
    }
    for (size_t len = 0; len <= 40; len++) {
        for (size_t off = 0; off < 8; off++) {
            struct arena a;
            arena_init(&a, 0);
            struct headers h;
            headers_init(&h, &a, 2);
            headers_add(&h, (struct str){src + off, len ? len : 1}, (struct str){src + off, len});
            headers_add(&h, STR_LIT("x"), (struct str){src + 7 - off, len});
            struct buf b;
            buf_init(&b);
            buf_append(&b, "########", off); /* shifts the destination */
            h1_encode_request_head(&b, STR_LIT("GET"), (struct str){src + off, len}, &h);
            char want[256];
            int n = snprintf(want, sizeof(want),
                             "%.*sGET %.*s HTTP/1.1\r\n%.*s: %.*s\r\nx: %.*s\r\n\r\n", (int)off,
                             "########", (int)len, src + off, (int)(len ? len : 1), src + off,
                             (int)len, src + off, (int)len, src + 7 - off);
            assert_int_equal(buf_len(&b), (size_t)n);
            assert_memory_equal(buf_head(&b), want, (size_t)n);
            buf_deinit(&b);
            arena_deinit(&a);
        }
    }
}

static void test_codec_h1_encode_response_head(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 2);
    headers_add(&h, STR_LIT("content-length"), STR_LIT("0"));
    struct buf b;
    buf_init(&b);
    h1_encode_response_head(&b, 404, &h);
    static const char want[] = "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
    assert_int_equal(buf_len(&b), sizeof(want) - 1);
    assert_memory_equal(buf_head(&b), want, sizeof(want) - 1);
    buf_deinit(&b);

    headers_init(&h, &a, 1);
    h1_encode_response_head(&b, 599, &h);
    assert_int_equal(buf_len(&b), sizeof("HTTP/1.1 599 Unknown\r\n\r\n") - 1);
    assert_memory_equal(buf_head(&b), "HTTP/1.1 599 Unknown\r\n\r\n", buf_len(&b));
    buf_deinit(&b);
    arena_deinit(&a);
}

static void test_codec_h1_encode_chunk(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    h1_encode_chunk(&b, (const uint8_t *)"hello", 5);
    assert_int_equal(buf_len(&b), 10);
    assert_memory_equal(buf_head(&b), "5\r\nhello\r\n", 10);
    buf_consume(&b, buf_len(&b));

    static uint8_t big[0x1a2b];
    memset(big, 'z', sizeof(big));
    h1_encode_chunk(&b, big, sizeof(big));
    assert_int_equal(buf_len(&b), 4 + 2 + sizeof(big) + 2);
    assert_memory_equal(buf_head(&b), "1a2b\r\nzz", 8);
    assert_memory_equal(buf_head(&b) + buf_len(&b) - 3, "z\r\n", 3);
    buf_consume(&b, buf_len(&b));

    h1_encode_chunk(&b, NULL, 0);
    assert_int_equal(buf_len(&b), 5);
    assert_memory_equal(buf_head(&b), "0\r\n\r\n", 5);
    buf_deinit(&b);
}

static void test_codec_h1_encode_roundtrip(void **state)
{
    (void)state;
    /* What the encoders write, the parser reads back the same. */
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 4);
    headers_add(&h, STR_LIT("host"), STR_LIT("a"));
    headers_add(&h, STR_LIT("transfer-encoding"), STR_LIT("chunked"));
    struct buf b;
    buf_init(&b);
    h1_encode_request_head(&b, STR_LIT("PUT"), STR_LIT("/x"), &h);
    h1_encode_chunk(&b, (const uint8_t *)"abc", 3);
    h1_encode_chunk(&b, (const uint8_t *)"defgh", 5);
    h1_encode_chunk(&b, NULL, 0);
    struct rec r = {0};
    struct h1_parser *p = h1_parser_new(H1_REQUEST, MAX_HEAD, MAX_HEADERS, &cbs, &r);
    assert_int_equal(h1_parser_feed(p, buf_head(&b), buf_len(&b)), buf_len(&b));
    assert_int_equal(r.dones, 1);
    assert_true(r.last.chunked);
    assert_memory_equal(r.body, "abcdefgh", 8);
    h1_parser_free(p);
    buf_deinit(&b);
    arena_deinit(&a);
}

static void test_codec_h1_reason_phrase(void **state)
{
    (void)state;
    assert_string_equal(h1_reason_phrase(200), "OK");
    assert_string_equal(h1_reason_phrase(404), "Not Found");
    assert_string_equal(h1_reason_phrase(431), "Request Header Fields Too Large");
    assert_string_equal(h1_reason_phrase(502), "Bad Gateway");
    assert_string_equal(h1_reason_phrase(505), "HTTP Version Not Supported");
    assert_string_equal(h1_reason_phrase(299), "Unknown");
    assert_string_equal(h1_reason_phrase(-1), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_h1_simple_get),
        cmocka_unit_test(test_codec_h1_keep_alive_close_and_http10),
        cmocka_unit_test(test_codec_h1_pipelined_one_at_a_time),
        cmocka_unit_test(test_codec_h1_byte_by_byte_identical),
        cmocka_unit_test(test_codec_h1_chunked_body_dechunked),
        cmocka_unit_test(test_codec_h1_trailers_do_not_change_framing),
        cmocka_unit_test(test_codec_h1_content_length_body),
        cmocka_unit_test(test_codec_h1_expect_continue),
        cmocka_unit_test(test_codec_h1_absolute_form_target),
        cmocka_unit_test(test_codec_h1_hostile_catalogue),
        cmocka_unit_test(test_codec_h1_control_bytes_at_every_offset),
        cmocka_unit_test(test_codec_h1_names_lowered_at_every_offset),
        cmocka_unit_test(test_codec_h1_reasons_are_precise),
        cmocka_unit_test(test_codec_h1_chunk_extensions_bounded),
        cmocka_unit_test(test_codec_h1_header_count_limit),
        cmocka_unit_test(test_codec_h1_head_size_limit),
        cmocka_unit_test(test_codec_h1_head_block_growth_keeps_views),
        cmocka_unit_test(test_codec_h1_callback_stop),
        cmocka_unit_test(test_codec_h1_request_eof),
        cmocka_unit_test(test_codec_h1_upgrade_and_connect),
        cmocka_unit_test(test_codec_h1_response_content_length),
        cmocka_unit_test(test_codec_h1_response_chunked),
        cmocka_unit_test(test_codec_h1_response_eof_delimited),
        cmocka_unit_test(test_codec_h1_response_truncated),
        cmocka_unit_test(test_codec_h1_response_head_no_body),
        cmocka_unit_test(test_codec_h1_response_204_304_no_body),
        cmocka_unit_test(test_codec_h1_response_1xx_skipped),
        cmocka_unit_test(test_codec_h1_response_interim_flood),
        cmocka_unit_test(test_codec_h1_response_101_switching),
        cmocka_unit_test(test_codec_h1_response_cl_te_rejected),
        cmocka_unit_test(test_codec_h1_encode_request_head),
        cmocka_unit_test(test_codec_h1_encode_response_head),
        cmocka_unit_test(test_codec_h1_encode_chunk),
        cmocka_unit_test(test_codec_h1_encode_roundtrip),
        cmocka_unit_test(test_codec_h1_reason_phrase),
        cmocka_unit_test(test_codec_h1_encode_every_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
