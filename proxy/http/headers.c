/* headers: ordered header list (see headers.h). */
#include "proxy/http/headers.h"

#include <ctype.h>
#include <string.h>

void headers_init(struct headers *h, struct arena *a, uint32_t cap_hint)
{
    h->arena = a;
    h->n = 0;
    h->cap = cap_hint ? cap_hint : 16;
    /* Not zeroed: only v[0, n) is ever read. */
    h->v = arena_alloc(a, sizeof(struct header) * h->cap);
}

void headers_grow(struct headers *h)
{
    uint32_t cap = h->cap * 2;
    struct header *v = arena_alloc(h->arena, sizeof(struct header) * cap);
    memcpy(v, h->v, sizeof(*v) * h->n);
    h->v = v;
    h->cap = cap;
}

void headers_init_copy(struct headers *h, struct arena *a, const struct header *src, uint32_t n,
                       uint32_t extra)
{
    headers_init(h, a, n + extra);
    if (n > 0) {
        memcpy(h->v, src, sizeof(*src) * n);
    }
    h->n = n;
}

void headers_add_copy(struct headers *h, struct str name, struct str value)
{
    struct str n = arena_strdup(h->arena, name);
    char *p = (char *)n.p;
    for (size_t i = 0; i < n.len; i++) {
        p[i] = (char)tolower((unsigned char)p[i]);
    }
    headers_add(h, n, arena_strdup(h->arena, value));
}

struct header *headers_get(const struct headers *h, struct str name)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq(h->v[i].name, name)) {
            return &h->v[i];
        }
    }
    return NULL;
}

uint32_t headers_remove(struct headers *h, struct str name)
{
    /* Most removes miss: read until the first match, and move entries only after it. */
    uint32_t w = 0;
    while (w < h->n && !str_eq(h->v[w].name, name)) {
        w++;
    }
    for (uint32_t i = w; i < h->n; i++) {
        if (!str_eq(h->v[i].name, name)) {
            h->v[w++] = h->v[i];
        }
    }
    uint32_t removed = h->n - w;
    h->n = w;
    return removed;
}

void headers_set(struct headers *h, struct str name, struct str value)
{
    headers_remove(h, name);
    headers_add(h, name, value);
}

void headers_set_copy(struct headers *h, struct str name, struct str value)
{
    headers_remove(h, name);
    headers_add_copy(h, name, value);
}

uint32_t headers_join(struct headers *h, struct str name, struct str sep)
{
    uint32_t n = 0, first = 0;
    size_t len = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq(h->v[i].name, name)) {
            first = n == 0 ? i : first;
            len += (n > 0 ? sep.len : 0) + h->v[i].value.len;
            n++;
        }
    }
    if (n < 2) {
        return n;
    }
    char *out = arena_alloc(h->arena, len);
    size_t off = 0;
    uint32_t w = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (!str_eq(h->v[i].name, name)) {
            h->v[w++] = h->v[i];
            continue;
        }
        if (off > 0) {
            memcpy(out + off, sep.p, sep.len);
            off += sep.len;
        }
        memcpy(out + off, h->v[i].value.p, h->v[i].value.len);
        off += h->v[i].value.len;
        if (i == first) {
            h->v[w++] = h->v[i]; /* the joined field keeps the first one's place */
        }
    }
    h->v[first].value = (struct str){out, len};
    h->n = w;
    return n;
}

size_t headers_bytes(const struct headers *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        n += h->v[i].name.len + h->v[i].value.len;
    }
    return n;
}
