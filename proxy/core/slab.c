/* slab: fixed-size object allocation in 64 KiB chunks with a free list (see slab.h). */
#include "proxy/core/slab.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/core/xmalloc.h"

#define SLAB_CHUNK_BYTES (64u * 1024u)

struct slab_chunk {
    struct slab_chunk *next;
    size_t pad; /* keeps objects 16-byte aligned after the header */
    unsigned char mem[];
};

void slab_init(struct slab *s, size_t obj_size)
{
    s->obj_size = (obj_size + 15) & ~(size_t)15;
    if (s->obj_size < sizeof(void *)) {
        s->obj_size = sizeof(void *);
    }
    s->free = NULL;
    s->chunks = NULL;
    s->n_live = 0;
}

void slab_deinit(struct slab *s)
{
    struct slab_chunk *c = s->chunks;
    while (c != NULL) {
        struct slab_chunk *next = c->next;
        free(c);
        c = next;
    }
    s->chunks = NULL;
    s->free = NULL;
    s->n_live = 0;
}

static void grow(struct slab *s)
{
    size_t n = (SLAB_CHUNK_BYTES - sizeof(struct slab_chunk)) / s->obj_size;
    if (n == 0) {
        n = 1;
    }
    struct slab_chunk *c = xmalloc(sizeof(*c) + n * s->obj_size);
    c->next = s->chunks;
    s->chunks = c;
    /* Thread the new objects onto the free list, first object first. */
    for (size_t i = n; i-- > 0;) {
        void *obj = c->mem + i * s->obj_size;
        *(void **)obj = s->free;
        s->free = obj;
    }
}

void *slab_alloc(struct slab *s)
{
    if (s->free == NULL) {
        grow(s);
    }
    void *p = s->free;
    s->free = *(void **)p;
    memset(p, 0, s->obj_size);
    s->n_live++;
    return p;
}

void slab_free(struct slab *s, void *p)
{
    *(void **)p = s->free;
    s->free = p;
    s->n_live--;
}
