/* buf: a contiguous byte buffer with a read offset, used for socket input and output. Bytes
 * live in data[start, end). Appending compacts or grows; consuming advances start. A buffer
 * that drains to empty can give its memory back (buf_release) so idle connections cost no
 * buffer memory. Memory use is bounded by the callers' watermarks, not here. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* A buffer's first block; blocks of this size come from the thread's block cache, if any. */
#define BUF_MIN_CAP 1024

struct blk_cache;

struct buf {
    uint8_t *data; /* owned; NULL until first use */
    size_t start;
    size_t end;
    size_t cap;
};

static inline size_t buf_len(const struct buf *b)
{
    return b->end - b->start;
}

static inline const uint8_t *buf_head(const struct buf *b)
{
    return b->data + b->start;
}

void buf_init(struct buf *b);
/* Frees the memory. */
void buf_deinit(struct buf *b);
/* Frees the memory if the buffer is empty (cheap when it holds none). */
static inline void buf_release(struct buf *b)
{
    if (b->data != NULL && b->start == b->end) {
        buf_deinit(b);
    }
}
/* Makes the calling thread's BUF_MIN_CAP blocks come from, and go back to, `c` (a worker's;
 * NULL: malloc). The caller empties the cache before the thread ends. */
void buf_use_block_cache(struct blk_cache *c);
/* Makes room for at least `len` more bytes at the end; returns a pointer to them. Commit
 * what was written with buf_commit. */
uint8_t *buf_reserve(struct buf *b, size_t len);
static inline void buf_commit(struct buf *b, size_t len)
{
    b->end += len;
}
/* Free space at the end without moving or growing. */
static inline size_t buf_tail_room(const struct buf *b)
{
    return b->cap - b->end;
}
void buf_append(struct buf *b, const void *p, size_t len);
void buf_append_str(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Drops `len` bytes from the front (len <= buf_len). */
void buf_consume(struct buf *b, size_t len);
