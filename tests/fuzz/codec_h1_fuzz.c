/* libFuzzer target for codec_h1: arbitrary bytes into a request parser and a response parser,
 * once in one piece and once split at random points, then EOF.
 *
 * Input: byte 0 seeds the split points, byte 1 holds flags (bit 0: the response answers a HEAD
 * request), the rest is the byte stream. Beyond the sanitizers, it aborts when:
 *   - the guard and llhttp disagree on where a message ends ("framing mismatch");
 *   - the outcome (status, reason, heads, bodies, completions) depends on the split;
 *   - a reported head breaks the parser's promises (names lower-case tokens, values trimmed and
 *     free of controls, status and version in range, chunked excludes a length);
 *   - an error status is outside the documented set.
 *
 * Build (the Makefile's `fuzz` target does the same):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -I/usr/share/include/llhttp \
 *     tests/fuzz/codec_h1_fuzz.c proxy/http/codec_h1.c proxy/http/headers.c proxy/core/arena.c \
 *     proxy/core/buf.c proxy/core/str.c proxy/core/xmalloc.c /usr/share/llhttp/{api,http,llhttp}.c
 * \ -o codec_h1_fuzz
 *   ./codec_h1_fuzz -dict=tests/fuzz/codec_h1.dict tests/fuzz/corpus/codec_h1 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http/codec_h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_HEAD 1024
#define FUZZ_MAX_HEADERS 16

struct summary {
    enum h1_kind kind;
    uint64_t hash; /* FNV-1a over heads, body bytes and completions, in order */
    int heads;
    int dones;
    int status; /* -1: no error */
    const char *reason;
    int eof_rc;
};

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "codec_h1_fuzz: check failed: %s (line %d)\n", #cond, __LINE__);       \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void hash_bytes(struct summary *s, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++) {
        s->hash = (s->hash ^ b[i]) * 0x100000001b3ull;
    }
}

static void hash_str(struct summary *s, struct str v)
{
    hash_bytes(s, &v.len, sizeof(v.len));
    hash_bytes(s, v.p, v.len);
}

static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int on_head(void *ud, struct h1_msg *m)
{
    struct summary *s = ud;
    s->heads++;
    CHECK(m->version_minor <= 1);
    if (s->kind == H1_REQUEST) {
        CHECK(m->method.len > 0 && m->status == 0);
        for (size_t i = 0; i < m->host.len; i++) {
            CHECK(m->host.p[i] != ' ' && m->host.p[i] != '\r' && m->host.p[i] != '\n');
        }
    } else {
        CHECK(m->status >= 100 && m->status <= 999);
        CHECK(m->status >= 200 || m->status == 101); /* interim responses are skipped */
    }
    CHECK(!(m->chunked && m->content_length >= 0));
    for (uint32_t i = 0; i < m->headers.n; i++) {
        struct str n = m->headers.v[i].name;
        struct str v = m->headers.v[i].value;
        CHECK(n.len > 0);
        for (size_t j = 0; j < n.len; j++) {
            CHECK(is_tchar((unsigned char)n.p[j]));
        }
        for (size_t j = 0; j < v.len; j++) {
            unsigned char c = (unsigned char)v.p[j];
            CHECK(c == '\t' || (c >= 0x20 && c != 0x7f));
        }
        if (v.len > 0) {
            CHECK(v.p[0] != ' ' && v.p[0] != '\t');
            CHECK(v.p[v.len - 1] != ' ' && v.p[v.len - 1] != '\t');
        }
        hash_str(s, n);
        hash_str(s, v);
    }
    hash_str(s, m->method);
    hash_str(s, m->target);
    hash_str(s, m->host);
    int64_t fields[] = {m->status,     m->version_minor,   m->content_length, m->chunked,
                        m->keep_alive, m->expect_continue, m->upgrade};
    hash_bytes(s, fields, sizeof(fields));
    return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct summary *s = ud;
    CHECK(len > 0);
    hash_bytes(s, p, len);
    return 0;
}

static int on_done(void *ud)
{
    struct summary *s = ud;
    s->dones++;
    hash_bytes(s, "\0DONE", 5);
    return 0;
}

static const struct h1_parser_cbs cbs = {on_head, on_body, on_done, NULL};

static uint32_t xorshift(uint32_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 17;
    *x ^= *x << 5;
    return *x;
}

/* Feeds all of `in`, in pieces when `seed` is non-zero, going on after each message. */
static void run(struct summary *s, enum h1_kind kind, bool no_body, const uint8_t *in, size_t len,
                uint32_t seed)
{
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->hash = 0xcbf29ce484222325ull;
    s->status = -1;
    struct h1_parser *p = h1_parser_new(kind, FUZZ_MAX_HEAD, FUZZ_MAX_HEADERS, &cbs, s);
    size_t pos = 0;
    size_t end = len;
    uint32_t x = seed | 1;
    if (seed != 0) {
        end = 1 + xorshift(&x) % (len ? len : 1);
    }
    while (pos < len) {
        if (no_body && !h1_parser_in_message(p)) {
            h1_parser_expect_no_body(p);
        }
        ssize_t n = h1_parser_feed(p, in + pos, end - pos);
        if (n < 0) {
            s->status = h1_parser_error(p, &s->reason);
            break;
        }
        CHECK(n > 0 && (size_t)n <= end - pos);
        pos += (size_t)n;
        if (pos == end && end < len) {
            end += 1 + xorshift(&x) % 64;
            end = end < len ? end : len;
        }
        if (s->dones > 0 && pos < len && (s->dones & 7) == 0) {
            h1_parser_release(p); /* between messages: must not disturb what follows */
        }
    }
    s->eof_rc = h1_parser_eof(p);
    if (s->status < 0 && s->eof_rc < 0) {
        s->status = h1_parser_error(p, &s->reason);
    }
    h1_parser_free(p);

    if (s->status >= 0) {
        CHECK(s->reason != NULL);
        CHECK(strcmp(s->reason, "framing mismatch") != 0);
        if (kind == H1_RESPONSE) {
            CHECK(s->status == 502);
        } else {
            CHECK(s->status == 400 || s->status == 414 || s->status == 431 || s->status == 501 ||
                  s->status == 505);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) {
        return 0;
    }
    uint32_t seed = (uint32_t)data[0] * 2654435761u + 1;
    bool no_body = data[1] & 1;
    const uint8_t *in = data + 2;
    size_t len = size - 2;

    static const enum h1_kind kinds[] = {H1_REQUEST, H1_RESPONSE};
    for (size_t k = 0; k < 2; k++) {
        struct summary whole, split;
        run(&whole, kinds[k], no_body, in, len, 0);
        run(&split, kinds[k], no_body, in, len, seed);
        CHECK(whole.status == split.status);
        CHECK(whole.heads == split.heads);
        CHECK(whole.dones == split.dones);
        CHECK(whole.hash == split.hash);
        CHECK(whole.eof_rc == split.eof_rc);
        CHECK(whole.reason == split.reason || strcmp(whole.reason, split.reason) == 0);
    }
    return 0;
}
