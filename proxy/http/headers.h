/* headers: an ordered HTTP header list. Names are lower case (the codecs lower-case them on
 * input, as HTTP/2 requires and as Envoy does for HTTP/1). Entries borrow their bytes: from a
 * parser's head block, a stream arena or a config snapshot; the array itself grows in `arena`.
 * Lookups are linear: requests have tens of headers, and a linear scan over a small array
 * beats hashing at that size. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"

struct header {
    struct str name;  /* lower case */
    struct str value; /* OWS-trimmed */
};

struct headers {
    struct header *v; /* in `arena` */
    uint32_t n;
    uint32_t cap;
    struct arena *arena; /* borrowed: where the array grows; valid while the headers are */
};

void headers_init(struct headers *h, struct arena *a, uint32_t cap_hint);

/* Doubles the array (headers_add's slow path). */
void headers_grow(struct headers *h);

/* Appends a header without copying its bytes: they must outlive `h`. Inline: a proxied request
 * appends a few dozen. */
static inline void headers_add(struct headers *h, struct str name, struct str value)
{
    if (h->n == h->cap) {
        headers_grow(h);
    }
    h->v[h->n].name = name;
    h->v[h->n].value = value;
    h->n++;
}

/* Initialises `h` in `a` as a copy of the list src[0, n), with room for `extra` more entries
 * before it grows. The bytes are not copied. */
void headers_init_copy(struct headers *h, struct arena *a, const struct header *src, uint32_t n,
                       uint32_t extra);

/* Appends a header, copying name (lower-cased) and value into h->arena. */
void headers_add_copy(struct headers *h, struct str name, struct str value);

/* Returns the first header named `name` (lower case) or NULL. */
struct header *headers_get(const struct headers *h, struct str name);

/* Removes every header named `name`; returns how many were removed. */
uint32_t headers_remove(struct headers *h, struct str name);

/* Replaces all headers named `name` by one with `value` (copied into the arena). */
void headers_set_copy(struct headers *h, struct str name, struct str value);

/* headers_set_copy() without the copy, for a name and value that outlive `h` (literals, the
 * snapshot's strings, bytes already in the arena). */
void headers_set(struct headers *h, struct str name, struct str value);

/* Joins every header named `name` into the first of them, values in order separated by `sep`
 * (one copy into the arena, whatever their number); the others are removed. Returns how many
 * there were. For HTTP/2 cookie crumbs towards HTTP/1 (RFC 9113 8.2.3). */
uint32_t headers_join(struct headers *h, struct str name, struct str sep);

/* Sums name and value lengths, for size limits. */
size_t headers_bytes(const struct headers *h);
