#include "proxy/http/h2_mem.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/xmalloc.h"

#define MIN_SHIFT 6 /* 64 bytes */
#define BIG 0xff    /* header class of a block from malloc */

/* Precedes every block; keeps the payload aligned as malloc's. */
struct hdr {
    alignas(max_align_t) uint8_t cls;
};

/* The class whose blocks hold `size` bytes plus the header, or BIG. */
static uint8_t class_of(size_t size)
{
    size_t need = size + sizeof(struct hdr);
    for (uint8_t c = 0; c < H2_MEM_CLASSES; c++) {
        if (need <= (size_t)1 << (MIN_SHIFT + c)) {
            return c;
        }
    }
    return BIG;
}

static size_t payload_cap(uint8_t cls)
{
    return ((size_t)1 << (MIN_SHIFT + cls)) - sizeof(struct hdr);
}

static void *mem_malloc(size_t size, void *ud)
{
    struct h2_mem *m = ud;
    uint8_t c = class_of(size);
    struct hdr *h = c == BIG ? xmalloc(sizeof(struct hdr) + size) : blk_cache_get(&m->cls[c]);
    h->cls = c;
    return h + 1;
}

static void mem_free(void *ptr, void *ud)
{
    struct h2_mem *m = ud;
    if (ptr == NULL) {
        return;
    }
    struct hdr *h = (struct hdr *)ptr - 1;
    if (h->cls == BIG) {
        free(h);
    } else {
        blk_cache_put(&m->cls[h->cls], h);
    }
}

static void *mem_calloc(size_t n, size_t size, void *ud)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    void *p = mem_malloc(n * size, ud);
    memset(p, 0, n * size);
    return p;
}

static void *mem_realloc(void *ptr, size_t size, void *ud)
{
    if (ptr == NULL) {
        return mem_malloc(size, ud);
    }
    struct hdr *h = (struct hdr *)ptr - 1;
    if (h->cls == BIG) {
        struct hdr *n = realloc(h, sizeof(struct hdr) + size);
        if (n == NULL) {
            return NULL;
        }
        return n + 1;
    }
    size_t cap = payload_cap(h->cls);
    if (size <= cap) {
        return ptr;
    }
    void *n = mem_malloc(size, ud);
    memcpy(n, ptr, cap);
    mem_free(ptr, ud);
    return n;
}

void h2_mem_init(struct h2_mem *m)
{
    for (uint8_t c = 0; c < H2_MEM_CLASSES; c++) {
        size_t sz = (size_t)1 << (MIN_SHIFT + c);
        size_t n = H2_MEM_CLASS_BYTES / sz;
        blk_cache_init(&m->cls[c], sz, (uint32_t)(n < H2_MEM_CLASS_MAX ? n : H2_MEM_CLASS_MAX));
    }
    m->mem = (nghttp2_mem){
        .mem_user_data = m,
        .malloc = mem_malloc,
        .free = mem_free,
        .calloc = mem_calloc,
        .realloc = mem_realloc,
    };
}

void h2_mem_trim(struct h2_mem *m)
{
    for (uint8_t c = 0; c < H2_MEM_CLASSES; c++) {
        blk_cache_deinit(&m->cls[c]);
    }
}
