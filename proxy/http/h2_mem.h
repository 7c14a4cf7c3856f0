/* h2_mem: the memory nghttp2 sessions of one worker allocate, from size classes kept in bounded
 * per-worker caches (blkcache.h) instead of straight from malloc.
 *
 * nghttp2 allocates a few small objects per stream (the stream, queued frames, the copied
 * response header list, received header buffers) and frees them when the stream closes. With
 * hundreds of streams in flight glibc's thread cache runs dry and each of them takes malloc's
 * slow path; here they are recycled. Each class keeps at most H2_MEM_CLASS_BYTES (and
 * H2_MEM_CLASS_MAX blocks) of freed memory, so a burst leaves a bounded amount behind (under
 * 0.8 MiB per worker), and a worker that served nothing for a second gives it all back
 * (h2_mem_trim). Blocks carry a 16-byte header naming their
 * class; larger requests go to malloc. Thread: the owning worker (every session using it must
 * be created and freed on that worker). */
#pragma once

#include <nghttp2/nghttp2.h>

#include "proxy/core/blkcache.h"

#define H2_MEM_CLASSES 7                /* 64 B .. 4 KiB, powers of two */
#define H2_MEM_CLASS_BYTES (128 * 1024) /* freed bytes kept per class, at most */
#define H2_MEM_CLASS_MAX 512            /* and at most this many blocks */

struct h2_mem {
    struct blk_cache cls[H2_MEM_CLASSES];
    nghttp2_mem mem; /* what nghttp2_session_*_new3 takes; mem_user_data = this */
};

void h2_mem_init(struct h2_mem *m);

/* Frees the cached blocks (blocks in use stay valid and come back to the cache later). The
 * cached blocks are all an h2_mem owns, so this is also its deinit. */
void h2_mem_trim(struct h2_mem *m);
