/* cluster_map: clusters by name, for the one name lookup the request path cannot avoid
 * (RouteAction.cluster_header: the cluster is named by a request header). Built once per
 * snapshot after its clusters, in the snapshot arena: an open-addressing table keyed by XXH64 of
 * the name, at most half full, so a lookup is one hash and about one probe. Read-only after the
 * build; thread: build on main, find from any. */
#pragma once

#include <stdint.h>

#include "proxy/core/str.h"

struct arena;
struct cluster_cfg;

struct cluster_map {
    const struct cluster_cfg **slots; /* [mask + 1] in the snapshot arena; NULL: empty slot.
                                       * The clusters are borrowed from the same snapshot. */
    uint64_t *hashes;                 /* [mask + 1]: XXH64 of each slot's name */
    uint32_t mask;
};

/* Fills `m` with the `n` clusters `cs` (names unique), allocating in `a`. */
void cluster_map_init(struct cluster_map *m, struct arena *a, const struct cluster_cfg *cs,
                      uint32_t n);

/* The same from `n` cluster pointers (CDS: the bootstrap's clusters and the dynamic ones,
 * which live in separate arenas). */
void cluster_map_init_ptrs(struct cluster_map *m, struct arena *a,
                           const struct cluster_cfg *const *cs, uint32_t n);

/* The cluster named `name` (compared exactly, case-sensitively, as Envoy does), or NULL. */
const struct cluster_cfg *cluster_map_find(const struct cluster_map *m, struct str name);
