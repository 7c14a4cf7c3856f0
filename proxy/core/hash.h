/* hash: non-cryptographic 64-bit hashing. XXH64 (xxHash, 64-bit variant) is the hash Envoy uses
 * for consistent hashing: route hash policies (header, cookie, source IP, query parameter) and
 * the placement of endpoints on a RING_HASH ring or in a MAGLEV table. Using the same function
 * keeps remora's choices for a given key and endpoint address the same as Envoy's.
 *
 * Implemented from the published XXH64 specification (xxhash_spec.md, "XXH64 algorithm"); no
 * allocation, no state. Thread: any. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* XXH64 of the `len` bytes at `p` with `seed`. `p` may be NULL when `len` is 0. The result is
 * the same on every platform (input read little-endian). */
uint64_t hash_xxh64(const void *p, size_t len, uint64_t seed);
