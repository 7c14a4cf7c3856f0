/* slab: a per-worker allocator for objects of one size that live as long as a connection
 * (struct downstream, struct upstream with their parsers). Objects are carved from 64 KiB
 * chunks and recycled through a free list, so long-lived connection objects sit together on
 * their own pages instead of being scattered among short-lived request memory, where they would
 * pin half-empty pages after a burst (STYLE rule 15). Chunks are kept until the slab is
 * deinitialised. Not thread-safe: a slab belongs to one worker; never free an object on
 * another worker. Allocation aborts on OOM. */
#pragma once

#include <stddef.h>

struct slab_chunk;

struct slab {
    size_t obj_size;           /* rounded up to 16 bytes */
    void *free;                /* free list threaded through the free objects */
    struct slab_chunk *chunks; /* owned */
    size_t n_live;             /* objects handed out and not yet freed */
};

/* Prepares `s` for objects of `obj_size` bytes. Allocates nothing until first use. */
void slab_init(struct slab *s, size_t obj_size);

/* Frees every chunk; all objects must have been freed (or are abandoned with the slab). */
void slab_deinit(struct slab *s);

/* Returns a zeroed object; never NULL. */
void *slab_alloc(struct slab *s);

/* Returns `p` (from this slab) to the free list. */
void slab_free(struct slab *s, void *p);
