/* lb_hash: the consistent-hashing load balancers, RING_HASH (a Ketama ring) and MAGLEV (a
 * Maglev lookup table), as Envoy builds them. A route's hash_policy gives a request a 64-bit key
 * (router_hash_key); the same key lands on the same endpoint, and adding or removing one of N
 * endpoints moves only about 1/N of the keys.
 *
 * Both tables are built once per cluster at config time (proxy/config/build.c), from the
 * endpoints' weights and addresses, into the snapshot arena: immutable, shared by every worker,
 * no per-worker state. A pick is a binary search over the ring or one table lookup.
 *
 * Placement follows Envoy so that an endpoint's share matches its weight: an endpoint is
 * identified by its address text ("10.0.0.1:8080", "[::1]:8080"), hashed with XXH64, and
 * endpoints are placed in the order of that text, so the same endpoints give the same table
 * whatever order they are configured in (and on every remora with that config).
 *   ring:   each endpoint gets about ring_size * weight / total_weight points, point i of
 *           endpoint "A" at XXH64("A_i"); ring_size is scaled up from minimum_ring_size until
 *           the lightest endpoint gets a whole point, capped by maximum_ring_size. A key goes
 *           to the first point at or after it, wrapping around.
 *   maglev: each endpoint walks its own permutation of the M slots (offset XXH64(A, 0) mod M,
 *           skip XXH64(A, 1) mod (M - 1) + 1), taking turns in proportion to its weight,
 *           until every slot is filled; a key goes to slot key mod M. M must be prime.
 *
 * Thread: build on the main thread; pick from any. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct arena;
struct endpoint_cfg;

/* Envoy's defaults and limits (Cluster.RingHashLbConfig, Cluster.MaglevLbConfig). */
#define LB_HASH_RING_MIN_DEFAULT 1024
#define LB_HASH_RING_MAX_DEFAULT (8 * 1024 * 1024)
#define LB_HASH_RING_LIMIT (8 * 1024 * 1024)
#define LB_HASH_MAGLEV_DEFAULT 65537
/* Envoy's maglev extension caps table_size at this prime; it bounds the table at 20 MB. */
#define LB_HASH_MAGLEV_LIMIT 5000011

enum lb_hash_kind {
    LB_HASH_RING,
    LB_HASH_MAGLEV,
};

struct lb_ring_point {
    uint64_t hash;
    uint32_t ep; /* index into the cluster's endpoints */
};

struct lb_hash {
    enum lb_hash_kind kind;
    const struct lb_ring_point *ring; /* LB_HASH_RING: sorted by hash; [size]; in the arena */
    const uint32_t *table;            /* LB_HASH_MAGLEV: endpoint per slot; [size]; in the arena */
    uint64_t size;                    /* ring points or table slots */
    uint64_t min_per_ep;              /* fewest points or slots any endpoint got */
    uint64_t max_per_ep;              /* most points or slots any endpoint got */
};

/* Builds the ring over the `n` endpoints `eps[idx[0..n-1]]` (`idx` NULL: eps[0..n-1]; n >= 1,
 * weights >= 1) with `min_size` <= `max_size` <= LB_HASH_RING_LIMIT, in `a`. Picks return
 * indices into `eps`. Never fails (allocation aborts on OOM). */
const struct lb_hash *lb_hash_ring_build(struct arena *a, const struct endpoint_cfg *eps,
                                         const uint32_t *idx, uint32_t n, uint64_t min_size,
                                         uint64_t max_size);

/* Builds the Maglev table of `table_size` slots (a prime, at most LB_HASH_MAGLEV_LIMIT; with
 * fewer slots than endpoints some endpoints get none) over `eps[idx[0..n-1]]` as above, in
 * `a`. */
const struct lb_hash *lb_hash_maglev_build(struct arena *a, const struct endpoint_cfg *eps,
                                           const uint32_t *idx, uint32_t n, uint64_t table_size);

/* The endpoint index for `key` (from the built table's endpoints). */
uint32_t lb_hash_pick(const struct lb_hash *h, uint64_t key);

/* lb_hash_pick() for host selection retry number `attempt` (0: the first pick), as Envoy does
 * when a retry host predicate rejected the earlier picks: the ring pick moves `attempt` points
 * on, the Maglev key is xored with -attempt (most bits change). Not guaranteed to differ. */
uint32_t lb_hash_pick_attempt(const struct lb_hash *h, uint64_t key, uint32_t attempt);

/* Most ring points or table slots lb_hash_pick_in() looks at before falling back. */
#define LB_HASH_MAX_PROBES 64

/* Like lb_hash_pick_attempt(), but only endpoints listed in `set[n]` (n >= 1) may be chosen (the
 * healthy ones): from the key's place, the ring is walked forward point by point (the keys of
 * an excluded endpoint go to the next endpoint on the ring, as they would on a ring built
 * without it), the Maglev table slot by slot. After LB_HASH_MAX_PROBES places without a listed
 * endpoint, `set[key % n]`: still the same answer for the same key. */
uint32_t lb_hash_pick_in(const struct lb_hash *h, uint64_t key, uint32_t attempt,
                         const uint32_t *set, uint32_t n);

/* Is `n` prime? (For validating maglev_lb_config.table_size.) */
bool lb_hash_is_prime(uint64_t n);
