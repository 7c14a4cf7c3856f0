/* cumsum: weighted picks over running sums. The sums are uint64 fields of an array of structs
 * (or a plain uint64_t array: stride 8), growing with the index; a draw x below the total picks
 * the first entry whose running sum is above it. Used by weighted_clusters (HTTP and TCP) and
 * by weighted RANDOM endpoint picks. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The running sum of entry `k` of the array at `base` with `stride` bytes per entry. */
static inline uint64_t cumsum_at(const void *base, size_t stride, uint32_t k)
{
    uint64_t v;
    memcpy(&v, (const char *)base + (size_t)k * stride, sizeof(v));
    return v;
}

/* The first k in [0, n) (n >= 1) whose running sum is above `x`; n - 1 when none is. Up to 8
 * entries are counted without branches (the draw is random, so each branch would mispredict
 * half the time); more are a binary search. */
static inline uint32_t cumsum_pick(const void *base, size_t stride, uint32_t n, uint64_t x)
{
    uint32_t lo = 0;
    if (n <= 8) {
        for (uint32_t k = 0; k + 1 < n; k++) {
            lo += cumsum_at(base, stride, k) <= x;
        }
        return lo;
    }
    uint32_t hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cumsum_at(base, stride, mid) > x) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}
