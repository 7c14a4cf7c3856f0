/* arena: a bump allocator for memory that dies all at once. Used for the three lifetimes of
 * STYLE.md: a config snapshot (freed with its last reference), a stream (reset when the stream
 * ends) and a parsed message. Nothing is freed piece by piece. Allocation aborts on OOM. Not
 * thread-safe: an arena belongs to one thread at a time. */
#pragma once

#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct blk_cache;

struct arena_block {
    struct arena_block *next; /* owned: the previous (older) block */
    size_t cap;
    size_t off;
    alignas(max_align_t) unsigned char data[];
};

#define ARENA_ALIGN_UP(n) (((n) + alignof(max_align_t) - 1) & ~(alignof(max_align_t) - 1))

struct arena {
    struct arena_block *head; /* owned: the block being filled, linked to older ones */
    size_t block_size;        /* size of a normal block; larger requests get their own */
    size_t used;              /* total bytes handed out since init/reset (for stats) */
    struct blk_cache *cache;  /* borrowed, or NULL: where normal blocks come from and go */
};

/* Prepares `a`; `block_size` of 0 means 4 KiB. Allocates nothing until first use. */
void arena_init(struct arena *a, size_t block_size);

/* arena_init() whose normal blocks come from (and go back to) `cache`, a worker's per-request
 * block cache (blkcache.h): the block size is what fits in the cache's blocks. */
void arena_init_cached(struct arena *a, struct blk_cache *cache);

/* The cache block size that gives arena_init_cached() normal blocks of `block_size` bytes. */
size_t arena_cache_block_size(size_t block_size);

/* Frees every block. `a` may be initialised again. */
void arena_deinit(struct arena *a);

/* Frees all blocks but the first and rewinds it, so a reused arena keeps one warm block. */
void arena_reset(struct arena *a);

/* arena_alloc's path when the current block is full or missing; `len` is already aligned. */
void *arena_alloc_slow(struct arena *a, size_t len);

/* Returns `len` bytes aligned for any type; never NULL. Inline: a request makes a handful. */
static inline void *arena_alloc(struct arena *a, size_t len)
{
    len = ARENA_ALIGN_UP(len ? len : 1);
    struct arena_block *b = a->head;
    if (b == NULL || b->cap - b->off < len) {
        return arena_alloc_slow(a, len);
    }
    void *p = b->data + b->off;
    b->off += len;
    a->used += len;
    return p;
}

/* Like arena_alloc, zeroed. */
void *arena_zalloc(struct arena *a, size_t len);

/* Copies `s` into the arena and NUL-terminates the copy (the NUL is not counted in len). */
struct str arena_strdup(struct arena *a, struct str s);

/* Copies a C string into the arena. */
const char *arena_cstrdup(struct arena *a, const char *s);

/* printf into the arena; the result is NUL-terminated. */
struct str arena_printf(struct arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The decimal form of `v` in the arena (no printf: this runs for headers on every request). */
struct str arena_u64(struct arena *a, uint64_t v);

#define ARENA_NEW(a, type) ((type *)arena_zalloc((a), sizeof(type)))
#define ARENA_NEW_N(a, type, n) ((type *)arena_zalloc((a), sizeof(type) * (n)))
