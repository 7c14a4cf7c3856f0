/* blkcache: a bounded LIFO of free memory blocks of one size, per worker, in front of malloc.
 *
 * Request-lifetime memory (a stream, its arena blocks) is allocated and freed once per request;
 * with many requests in flight glibc's thread cache (7 chunks per size) runs dry and every
 * allocation takes malloc's slow path. A worker keeps up to `cap` freed blocks for the next
 * requests instead. Past the cap, blocks go back to malloc, so what a burst leaves behind is
 * bounded (cap * size) and the rest can be trimmed. Not thread-safe: one worker's. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct blk_cache {
    void *free;   /* free blocks, linked through their first word */
    uint32_t n;   /* blocks on `free` */
    uint32_t cap; /* keep at most this many */
    size_t size;  /* every block's size */
};

/* Prepares a cache of blocks of `size` bytes (at least a pointer), keeping at most `cap`. */
void blk_cache_init(struct blk_cache *c, size_t size, uint32_t cap);

/* Frees the cached blocks; the cache stays usable (a trim). */
void blk_cache_deinit(struct blk_cache *c);

/* A block of c->size bytes (contents undefined): a cached one, else from malloc. Never NULL. */
void *blk_cache_get(struct blk_cache *c);

/* Gives back a block from blk_cache_get(c): kept while under the cap, else freed. */
void blk_cache_put(struct blk_cache *c, void *p);
