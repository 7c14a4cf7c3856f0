/* cluster_map: open-addressing table of clusters by name (see cluster_map.h). Linear probing;
 * the stored hash is compared before the name so a probe rarely touches the cluster. */
#include "proxy/config/cluster_map.h"

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/hash.h"

static void map_alloc(struct cluster_map *m, struct arena *a, uint32_t n)
{
    uint32_t cap = 4;
    while (cap < 2 * n) {
        cap *= 2;
    }
    m->mask = cap - 1;
    m->slots = ARENA_NEW_N(a, const struct cluster_cfg *, cap);
    m->hashes = ARENA_NEW_N(a, uint64_t, cap);
}

static void map_put(struct cluster_map *m, const struct cluster_cfg *cc)
{
    uint64_t h = hash_xxh64(cc->name.p, cc->name.len, 0);
    uint32_t s = (uint32_t)h & m->mask;
    while (m->slots[s] != NULL) {
        s = (s + 1) & m->mask;
    }
    m->slots[s] = cc;
    m->hashes[s] = h;
}

void cluster_map_init(struct cluster_map *m, struct arena *a, const struct cluster_cfg *cs,
                      uint32_t n)
{
    map_alloc(m, a, n);
    for (uint32_t i = 0; i < n; i++) {
        map_put(m, &cs[i]);
    }
}

void cluster_map_init_ptrs(struct cluster_map *m, struct arena *a,
                           const struct cluster_cfg *const *cs, uint32_t n)
{
    map_alloc(m, a, n);
    for (uint32_t i = 0; i < n; i++) {
        map_put(m, cs[i]);
    }
}

const struct cluster_cfg *cluster_map_find(const struct cluster_map *m, struct str name)
{
    if (m->slots == NULL) {
        return NULL;
    }
    uint64_t h = hash_xxh64(name.p, name.len, 0);
    for (uint32_t s = (uint32_t)h & m->mask; m->slots[s] != NULL; s = (s + 1) & m->mask) {
        if (m->hashes[s] == h && str_eq(m->slots[s]->name, name)) {
            return m->slots[s];
        }
    }
    return NULL;
}
