/* parse_bench: HTTP/1 parsing through codec_h1 (llhttp plus the strict framing guard, head
 * copied into the parser's block, header list built) on one keep-alive parser, as a connection
 * uses it: every operation is one whole message fed to a parser that has already parsed the
 * previous one. A bare llhttp run over the browser GET, with no guard and no copying, gives
 * the baseline the guard and head building are measured against. */
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "bench/micro/harness.h"
#include "proxy/http/codec_h1.h"

/* Envoy's defaults: max_request_headers_kb 60, max_headers_count 100. */
#define MAX_HEAD (60 * 1024)
#define MAX_HEADERS 100
/* Bodies are fed in pieces of a buffer chunk's size, as a connection reads them. */
#define FEED_SEG (16 * 1024)
#define BODY_LEN (64 * 1024)
#define CHUNK_LEN 4096
#define SMALL_CHUNK_LEN 256

static const char browser_get[] =
    "GET /search?q=remora+proxy&lang=en HTTP/1.1\r\n"
    "Host: www.example.com\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    "Accept-Language: en-US,en;q=0.5\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\n"
    "Connection: keep-alive\r\n"
    "Cookie: session=3f2a9c81d4e0b7a6; theme=dark\r\n"
    "Upgrade-Insecure-Requests: 1\r\n"
    "Sec-Fetch-Dest: document\r\n"
    "Sec-Fetch-Mode: navigate\r\n"
    "\r\n";

static const char small_get[] = "GET / HTTP/1.1\r\n"
                                "Host: example.com\r\n"
                                "\r\n";

static const char response_head[] = "HTTP/1.1 200 OK\r\n"
                                    "Date: Sat, 28 Nov 2026 10:00:00 GMT\r\n"
                                    "Server: backend\r\n"
                                    "Content-Type: text/html; charset=utf-8\r\n"
                                    "Content-Length: 0\r\n"
                                    "Cache-Control: private, max-age=0\r\n"
                                    "ETag: \"5f3a-1b2c\"\r\n"
                                    "Vary: Accept-Encoding\r\n"
                                    "Connection: keep-alive\r\n"
                                    "\r\n";

struct parse_ctx {
    struct h1_parser *p;
    const uint8_t *msg; /* one whole message */
    size_t len;
    uint64_t acc; /* folded by the callbacks */
    uint64_t done;
};

static int on_head(void *ud, struct h1_msg *m)
{
    struct parse_ctx *c = ud;
    c->acc += m->headers.n + m->target.len + (uint64_t)m->status;
    return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct parse_ctx *c = ud;
    c->acc += len + p[0];
    return 0;
}

static int on_done(void *ud)
{
    struct parse_ctx *c = ud;
    c->done++;
    return 0;
}

static const struct h1_parser_cbs cbs = {on_head, on_body, on_done, NULL};

static uint64_t run_parse(void *ctx, uint64_t iters)
{
    struct parse_ctx *c = ctx;
    for (uint64_t i = 0; i < iters; i++) {
        const uint8_t *p = c->msg;
        size_t left = c->len;
        while (left > 0) {
            ssize_t n = h1_parser_feed(c->p, p, left < FEED_SEG ? left : FEED_SEG);
            if (n <= 0) {
                const char *why = "no progress";
                h1_parser_error(c->p, &why);
                fprintf(stderr, "bench: parse failed: %s\n", why);
                exit(1);
            }
            p += n;
            left -= (size_t)n;
        }
    }
    return c->acc + c->done;
}

static void parse_case(struct bench *b, const char *name, enum h1_kind kind, const void *msg,
                       size_t len, size_t bytes_per_op)
{
    struct parse_ctx c = {.msg = msg, .len = len};
    c.p = h1_parser_new(kind, MAX_HEAD, MAX_HEADERS, &cbs, &c);
    bench_run(b, name, run_parse, &c, bytes_per_op);
    h1_parser_free(c.p);
}

/* ---- bare llhttp ---- */

struct ll_ctx {
    llhttp_t ll;
    const char *msg;
    size_t len;
    uint64_t acc;
};

static int ll_span(llhttp_t *ll, const char *at, size_t len)
{
    (void)at;
    ((struct ll_ctx *)ll->data)->acc += len;
    return 0;
}

static uint64_t run_llhttp(void *ctx, uint64_t iters)
{
    struct ll_ctx *c = ctx;
    for (uint64_t i = 0; i < iters; i++) {
        if (llhttp_execute(&c->ll, c->msg, c->len) != HPE_OK) {
            fprintf(stderr, "bench: llhttp failed: %s\n", llhttp_get_error_reason(&c->ll));
            exit(1);
        }
    }
    return c->acc;
}

/* A response with a `body_len` body, chunked in `chunk_len` chunks or with a Content-Length.
 * Returns malloc'ed bytes. */
static uint8_t *make_response(bool chunked, size_t body_len, size_t chunk_len, size_t *len_out)
{
    size_t cap = body_len + (chunked ? body_len / chunk_len * 16 : 0) + 256;
    char *m = malloc(cap);
    size_t n;
    if (chunked) {
        n = (size_t)snprintf(m, cap,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             "Transfer-Encoding: chunked\r\n\r\n");
        for (size_t off = 0; off < body_len; off += chunk_len) {
            n += (size_t)snprintf(m + n, cap - n, "%zx\r\n", chunk_len);
            memset(m + n, 'a' + (int)(off / chunk_len % 26), chunk_len);
            n += chunk_len;
            memcpy(m + n, "\r\n", 2);
            n += 2;
        }
        memcpy(m + n, "0\r\n\r\n", 5);
        n += 5;
    } else {
        n = (size_t)snprintf(m, cap,
                             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                             "Content-Length: %zu\r\n\r\n",
                             body_len);
        memset(m + n, 'b', body_len);
        n += body_len;
    }
    *len_out = n;
    return (uint8_t *)m;
}

/* llhttp alone over `msg`, span callbacks only: what codec_h1 adds is the difference. */
static void llhttp_case(struct bench *b, const char *name, llhttp_type_t type, const char *msg,
                        size_t len)
{
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_url = ll_span;
    settings.on_status = ll_span;
    settings.on_header_field = ll_span;
    settings.on_header_value = ll_span;
    struct ll_ctx lc = {.msg = msg, .len = len};
    llhttp_init(&lc.ll, type, &settings);
    lc.ll.data = &lc;
    bench_run(b, name, run_llhttp, &lc, 0);
}

void bench_parse(struct bench *b)
{
    char name[96];
    bench_group(b, "h1 parse");

    snprintf(name, sizeof(name), "browser GET (%zu B, 10 headers)", sizeof(browser_get) - 1);
    parse_case(b, name, H1_REQUEST, browser_get, sizeof(browser_get) - 1, 0);
    llhttp_case(b, "browser GET, bare llhttp (baseline)", HTTP_REQUEST, browser_get,
                sizeof(browser_get) - 1);
    snprintf(name, sizeof(name), "small GET (%zu B, 1 header)", sizeof(small_get) - 1);
    parse_case(b, name, H1_REQUEST, small_get, sizeof(small_get) - 1, 0);
    llhttp_case(b, "small GET, bare llhttp (baseline)", HTTP_REQUEST, small_get,
                sizeof(small_get) - 1);
    snprintf(name, sizeof(name), "response head (%zu B, 8 headers)", sizeof(response_head) - 1);
    parse_case(b, name, H1_RESPONSE, response_head, sizeof(response_head) - 1, 0);
    llhttp_case(b, "response head, bare llhttp (baseline)", HTTP_RESPONSE, response_head,
                sizeof(response_head) - 1);

    size_t len;
    uint8_t *m = make_response(true, BODY_LEN, CHUNK_LEN, &len);
    snprintf(name, sizeof(name), "chunked response, %d KiB body in %d B chunks", BODY_LEN / 1024,
             CHUNK_LEN);
    parse_case(b, name, H1_RESPONSE, m, len, BODY_LEN);
    free(m);
    m = make_response(true, BODY_LEN, SMALL_CHUNK_LEN, &len);
    snprintf(name, sizeof(name), "chunked response, %d KiB body in %d B chunks", BODY_LEN / 1024,
             SMALL_CHUNK_LEN);
    parse_case(b, name, H1_RESPONSE, m, len, BODY_LEN);
    free(m);
    m = make_response(false, BODY_LEN, 0, &len);
    snprintf(name, sizeof(name), "content-length response, %d KiB body", BODY_LEN / 1024);
    parse_case(b, name, H1_RESPONSE, m, len, BODY_LEN);
    free(m);
}
