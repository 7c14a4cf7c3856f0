/* buf: contiguous growable byte buffer (see buf.h). */
#include "proxy/core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/blkcache.h"
#include "proxy/core/xmalloc.h"

/* The calling thread's cache of BUF_MIN_CAP blocks (a worker's), or NULL: plain malloc. A
 * connection's buffers are taken for each request and given back when they drain, so a worker
 * would otherwise malloc and free two of them per proxied request. */
static __thread struct blk_cache *block_cache;

void buf_use_block_cache(struct blk_cache *c)
{
    block_cache = c;
}

static uint8_t *block_get(size_t cap)
{
    return cap == BUF_MIN_CAP && block_cache != NULL ? blk_cache_get(block_cache) : xmalloc(cap);
}

static void block_put(uint8_t *p, size_t cap)
{
    if (cap == BUF_MIN_CAP && block_cache != NULL) {
        blk_cache_put(block_cache, p);
    } else {
        free(p);
    }
}

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->start = b->end = b->cap = 0;
}

void buf_deinit(struct buf *b)
{
    if (b->data != NULL) {
        block_put(b->data, b->cap);
    }
    buf_init(b);
}

uint8_t *buf_reserve(struct buf *b, size_t len)
{
    if (b->start == b->end) {
        b->start = b->end = 0;
    }
    if (b->cap - b->end >= len) {
        return b->data + b->end;
    }
    size_t used = b->end - b->start;
    if (b->start > 0 && b->cap - used >= len) {
        memmove(b->data, b->data + b->start, used);
        b->start = 0;
        b->end = used;
        return b->data + b->end;
    }
    size_t cap = b->cap ? b->cap : BUF_MIN_CAP;
    while (cap - used < len) {
        cap *= 2;
    }
    uint8_t *nd = block_get(cap);
    if (used > 0) {
        memcpy(nd, b->data + b->start, used);
    }
    if (b->data != NULL) {
        block_put(b->data, b->cap);
    }
    b->data = nd;
    b->start = 0;
    b->end = used;
    b->cap = cap;
    return b->data + b->end;
}

void buf_append(struct buf *b, const void *p, size_t len)
{
    if (len == 0) {
        return;
    }
    memcpy(buf_reserve(b, len), p, len);
    b->end += len;
}

void buf_append_str(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        return;
    }
    if ((size_t)n < sizeof(tmp)) {
        buf_append(b, tmp, (size_t)n);
        return;
    }
    uint8_t *p = buf_reserve(b, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf((char *)p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->end += (size_t)n;
}

void buf_consume(struct buf *b, size_t len)
{
    b->start += len;
    if (b->start >= b->end) {
        b->start = b->end = 0;
    }
}
