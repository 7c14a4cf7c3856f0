#include "proxy/core/blkcache.h"

#include <stdlib.h>

#include "proxy/core/xmalloc.h"

void blk_cache_init(struct blk_cache *c, size_t size, uint32_t cap)
{
    c->free = NULL;
    c->n = 0;
    c->cap = cap;
    c->size = size < sizeof(void *) ? sizeof(void *) : size;
}

void blk_cache_deinit(struct blk_cache *c)
{
    while (c->free != NULL) {
        void *next = *(void **)c->free;
        free(c->free);
        c->free = next;
    }
    c->n = 0;
}

void *blk_cache_get(struct blk_cache *c)
{
    void *p = c->free;
    if (p == NULL) {
        return xmalloc(c->size);
    }
    c->free = *(void **)p;
    c->n--;
    return p;
}

void blk_cache_put(struct blk_cache *c, void *p)
{
    if (c->n >= c->cap) {
        free(p);
        return;
    }
    *(void **)p = c->free;
    c->free = p;
    c->n++;
}
