/* rand: xorshift64* (Vigna), the one small generator behind load balancing picks, jitters and
 * request ids. Fast and good enough for spreading load; never for anything secret. Each user
 * keeps its own state (one thread each), seeded non-zero. */
#pragma once

#include <stdint.h>

static inline uint64_t rand_next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}
