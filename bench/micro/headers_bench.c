/* headers_bench: header list operations (proxy/http/headers.h) on a 20-header request, the
 * size of a browser request after the proxy added its own headers. The list lives in a stream-
 * like arena; "add" cases reset the arena each time, as a new stream would start. */
#include <stdlib.h>
#include <string.h>

#include "bench/micro/harness.h"
#include "proxy/core/arena.h"
#include "proxy/http/headers.h"

#define N_HDRS 20

static const char *const names[N_HDRS] = {
    "host",
    "user-agent",
    "accept",
    "accept-language",
    "accept-encoding",
    "referer",
    "cookie",
    "connection",
    "upgrade-insecure-requests",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
    "sec-fetch-user",
    "cache-control",
    "pragma",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-request-id",
    "x-envoy-expected-rq-timeout-ms",
    "traceparent",
};

static const char *const values[N_HDRS] = {
    "www.example.com",
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "en-US,en;q=0.5",
    "gzip, deflate, br, zstd",
    "https://www.example.com/",
    "session=3f2a9c81d4e0b7a6; theme=dark",
    "keep-alive",
    "1",
    "document",
    "navigate",
    "same-origin",
    "?1",
    "no-cache",
    "no-cache",
    "10.1.2.3",
    "http",
    "6b0a1d2e-4f3c-4b5a-9c8d-7e6f5a4b3c2d",
    "15000",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
};

struct hdr_ctx {
    struct arena a;
    struct headers h;
    struct str name[N_HDRS];
    struct str value[N_HDRS];
    struct str upper[N_HDRS]; /* names as a peer might send them, for headers_add_copy */
    char upper_buf[N_HDRS][40];
    struct str key; /* the name a get/remove looks for (its own copy: compared, not aliased) */
    char key_buf[40];
};

static uint64_t run_add(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        arena_reset(&c->a);
        headers_init(&c->h, &c->a, 0);
        for (int k = 0; k < N_HDRS; k++) {
            headers_add(&c->h, c->name[k], c->value[k]);
        }
        acc += c->h.n + (uintptr_t)c->h.v;
    }
    return acc;
}

static uint64_t run_add_copy(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        arena_reset(&c->a);
        headers_init(&c->h, &c->a, 0);
        for (int k = 0; k < N_HDRS; k++) {
            headers_add_copy(&c->h, c->upper[k], c->value[k]);
        }
        acc += c->h.n + (uintptr_t)c->h.v;
    }
    return acc;
}

static uint64_t run_get(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        acc += (uintptr_t)headers_get(&c->h, c->key);
    }
    return acc;
}

/* Removes the key's header, then appends it again so the list stays at 20. */
static uint64_t run_remove_readd(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        acc += headers_remove(&c->h, c->key);
        headers_add(&c->h, c->key, STR_LIT("v"));
    }
    return acc;
}

static uint64_t run_remove(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        acc += headers_remove(&c->h, c->key);
    }
    return acc;
}

static uint64_t run_bytes(void *ctx, uint64_t iters)
{
    struct hdr_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        acc += headers_bytes(&c->h);
    }
    return acc;
}

static void fill(struct hdr_ctx *c)
{
    arena_reset(&c->a);
    headers_init(&c->h, &c->a, 0);
    for (int k = 0; k < N_HDRS; k++) {
        headers_add(&c->h, c->name[k], c->value[k]);
    }
}

static void set_key(struct hdr_ctx *c, const char *name)
{
    snprintf(c->key_buf, sizeof(c->key_buf), "%s", name);
    c->key = str_from_c(c->key_buf);
}

void bench_headers(struct bench *b)
{
    bench_group(b, "headers");
    struct hdr_ctx *c = calloc(1, sizeof(*c));
    arena_init(&c->a, 0);
    for (int k = 0; k < N_HDRS; k++) {
        c->name[k] = str_from_c(names[k]);
        c->value[k] = str_from_c(values[k]);
        size_t n = strlen(names[k]);
        for (size_t i = 0; i < n; i++) {
            /* Title-Case, as HTTP/1 peers send them */
            char ch = names[k][i];
            bool start = i == 0 || names[k][i - 1] == '-';
            c->upper_buf[k][i] = start && ch >= 'a' && ch <= 'z' ? (char)(ch - 'a' + 'A') : ch;
        }
        c->upper[k] = (struct str){c->upper_buf[k], n};
    }

    bench_run(b, "add 20 (headers_init + 20 headers_add)", run_add, c, 0);
    bench_run(b, "add 20 copying (headers_init + 20 headers_add_copy)", run_add_copy, c, 0);

    fill(c);
    set_key(c, names[N_HDRS / 2]);
    bench_run(b, "get, hit (11th of 20)", run_get, c, 0);
    set_key(c, "x-b3-traceid");
    bench_run(b, "get, miss (20 headers)", run_get, c, 0);
    bench_run(b, "remove, miss (20 headers)", run_remove, c, 0);
    set_key(c, names[N_HDRS / 2]);
    bench_run(b, "remove 1 of 20, then add it back", run_remove_readd, c, 0);
    fill(c);
    bench_run(b, "headers_bytes (20 headers)", run_bytes, c, 0);

    arena_deinit(&c->a);
    free(c);
}
