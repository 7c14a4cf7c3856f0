/* arena: bump allocation in linked blocks (see arena.h). */
#include "proxy/core/arena.h"

#include <stdalign.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/blkcache.h"
#include "proxy/core/xmalloc.h"

void arena_init(struct arena *a, size_t block_size)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 4096;
    a->used = 0;
    a->cache = NULL;
}

size_t arena_cache_block_size(size_t block_size)
{
    return sizeof(struct arena_block) + block_size;
}

void arena_init_cached(struct arena *a, struct blk_cache *cache)
{
    arena_init(a, cache->size - sizeof(struct arena_block));
    a->cache = cache;
}

/* Frees block `b`: a normal one back to the arena's cache, if it has one. */
static void free_block(struct arena *a, struct arena_block *b)
{
    if (a->cache != NULL && b->cap == a->block_size) {
        blk_cache_put(a->cache, b);
    } else {
        free(b);
    }
}

void arena_deinit(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free_block(a, b);
        b = next;
    }
    a->head = NULL;
    a->used = 0;
}

void arena_reset(struct arena *a)
{
    struct arena_block *b = a->head;
    if (b == NULL) {
        return;
    }
    /* Keep the oldest block when it is a normal-sized one: it is the warm one. */
    struct arena_block *keep = NULL;
    while (b != NULL) {
        struct arena_block *next = b->next;
        if (next == NULL && b->cap == a->block_size) {
            keep = b;
        } else {
            free_block(a, b);
        }
        b = next;
    }
    if (keep != NULL) {
        keep->off = 0;
        keep->next = NULL;
    }
    a->head = keep;
    a->used = 0;
}

void *arena_alloc_slow(struct arena *a, size_t len)
{
    struct arena_block *b = a->head;
    size_t cap = len > a->block_size / 2 ? len : a->block_size;
    struct arena_block *nb = a->cache != NULL && cap == a->block_size ? blk_cache_get(a->cache)
                                                                      : xmalloc(sizeof(*nb) + cap);
    nb->cap = cap;
    nb->off = len;
    a->used += len;
    if (b != NULL && cap != a->block_size) {
        /* A big one-off block goes behind the current block so the current block's free space
         * is not wasted. */
        nb->next = b->next;
        b->next = nb;
    } else {
        nb->next = b;
        a->head = nb;
    }
    return nb->data;
}

void *arena_zalloc(struct arena *a, size_t len)
{
    void *p = arena_alloc(a, len);
    memset(p, 0, len);
    return p;
}

struct str arena_strdup(struct arena *a, struct str s)
{
    char *p = arena_alloc(a, s.len + 1);
    if (s.len > 0) {
        memcpy(p, s.p, s.len);
    }
    p[s.len] = '\0';
    return (struct str){p, s.len};
}

const char *arena_cstrdup(struct arena *a, const char *s)
{
    return arena_strdup(a, str_from_c(s)).p;
}

struct str arena_printf(struct arena *a, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
        tmp[0] = '\0';
    }
    char *p = arena_alloc(a, (size_t)n + 1);
    if ((size_t)n < sizeof(tmp)) {
        memcpy(p, tmp, (size_t)n + 1);
    } else {
        va_start(ap, fmt);
        vsnprintf(p, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return (struct str){p, (size_t)n};
}

struct str arena_u64(struct arena *a, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    char *p = arena_alloc(a, n + 1);
    memcpy(p, tmp + sizeof(tmp) - n, n);
    p[n] = '\0';
    return (struct str){p, n};
}
