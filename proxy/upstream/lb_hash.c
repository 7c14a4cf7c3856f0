/* lb_hash: ring and Maglev table construction and lookup (see lb_hash.h). Config-time code
 * except lb_hash_pick(), which is the request path: a binary search or an array index. */
#include "proxy/upstream/lb_hash.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/hash.h"
#include "proxy/core/xmalloc.h"

static int cmp_point(const void *a, const void *b)
{
    const struct lb_ring_point *x = a, *y = b;
    if (x->hash != y->hash) {
        return x->hash < y->hash ? -1 : 1;
    }
    return x->ep < y->ep ? -1 : (x->ep > y->ep ? 1 : 0);
}

struct by_addr {
    struct str addr;
    uint32_t ep;
};

static int cmp_addr(const void *a, const void *b)
{
    const struct by_addr *x = a, *y = b;
    size_t n = x->addr.len < y->addr.len ? x->addr.len : y->addr.len;
    int c = n ? memcmp(x->addr.p, y->addr.p, n) : 0;
    if (c != 0) {
        return c;
    }
    return x->addr.len != y->addr.len ? (x->addr.len < y->addr.len ? -1 : 1)
                                      : (x->ep < y->ep ? -1 : x->ep > y->ep);
}

/* The endpoints `eps[idx[0..n-1]]` (idx NULL: eps[0..n-1]) in the order of their address
 * text: the running sums of the ring and the fill order of the Maglev table then do not
 * depend on the order the endpoints were configured in. Caller frees. */
static uint32_t *sorted_order(const struct endpoint_cfg *eps, const uint32_t *idx, uint32_t n)
{
    struct by_addr *v = xcalloc(n, sizeof(*v));
    for (uint32_t k = 0; k < n; k++) {
        v[k].ep = idx != NULL ? idx[k] : k;
        v[k].addr = eps[v[k].ep].addr.text;
    }
    qsort(v, n, sizeof(*v), cmp_addr);
    uint32_t *order = xcalloc(n, sizeof(*order));
    for (uint32_t k = 0; k < n; k++) {
        order[k] = v[k].ep;
    }
    free(v);
    return order;
}

/* The endpoint at position `k` of the set being built. */
#define EP_AT(k) (order[k])

const struct lb_hash *lb_hash_ring_build(struct arena *a, const struct endpoint_cfg *eps,
                                         const uint32_t *idx, uint32_t n, uint64_t min_size,
                                         uint64_t max_size)
{
    uint32_t *order = sorted_order(eps, idx, n);
    double total = 0, min_w = 0;
    for (uint32_t i = 0; i < n; i++) {
        total += eps[EP_AT(i)].weight;
    }
    for (uint32_t i = 0; i < n; i++) {
        double w = eps[EP_AT(i)].weight / total;
        min_w = i == 0 || w < min_w ? w : min_w;
    }
    /* Scale so that the lightest endpoint gets a whole number of points, then cap. */
    double scale = fmin(ceil(min_w * (double)min_size) / min_w, (double)max_size);
    uint64_t cap = (uint64_t)ceil(scale) + n; /* running sums may round one point up */
    struct lb_ring_point *ring = ARENA_NEW_N(a, struct lb_ring_point, cap);
    uint64_t used = 0, min_per = UINT64_MAX, max_per = 0;
    double current = 0, target = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct endpoint_cfg *ep = &eps[EP_AT(i)];
        const struct str key = ep->addr.text;
        char buf[128];
        target += scale * (ep->weight / total);
        uint64_t k = 0;
        while (current < target && used < cap) {
            int len =
                snprintf(buf, sizeof(buf), "%.*s_%llu", (int)key.len, key.p, (unsigned long long)k);
            if (len < 0 || (size_t)len >= sizeof(buf)) {
                len = (int)sizeof(buf) - 1;
            }
            ring[used].hash = hash_xxh64(buf, (size_t)len, 0);
            ring[used].ep = EP_AT(i);
            used++;
            k++;
            current += 1;
        }
        min_per = k < min_per ? k : min_per;
        max_per = k > max_per ? k : max_per;
    }
    qsort(ring, used, sizeof(*ring), cmp_point);
    free(order);
    struct lb_hash *h = ARENA_NEW(a, struct lb_hash);
    h->kind = LB_HASH_RING;
    h->ring = ring;
    h->size = used;
    h->min_per_ep = min_per;
    h->max_per_ep = max_per;
    return h;
}

struct maglev_build {
    uint64_t offset;
    uint64_t skip;
    uint64_t next;   /* position in this endpoint's permutation */
    uint64_t target; /* weight turns owed, in units of the heaviest weight */
    uint64_t count;  /* slots taken */
};

const struct lb_hash *lb_hash_maglev_build(struct arena *a, const struct endpoint_cfg *eps,
                                           const uint32_t *idx, uint32_t n, uint64_t m)
{
    uint32_t *order = sorted_order(eps, idx, n);
    struct maglev_build *b = xcalloc(n, sizeof(*b));
    uint64_t max_w = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct endpoint_cfg *ep = &eps[EP_AT(i)];
        const struct str key = ep->addr.text;
        b[i].offset = hash_xxh64(key.p, key.len, 0) % m;
        b[i].skip = hash_xxh64(key.p, key.len, 1) % (m - 1) + 1;
        max_w = ep->weight > max_w ? ep->weight : max_w;
    }
    uint32_t *table = ARENA_NEW_N(a, uint32_t, m);
    /* Slots are marked free with UINT32_MAX while filling. */
    for (uint64_t s = 0; s < m; s++) {
        table[s] = UINT32_MAX;
    }
    uint64_t filled = 0;
    /* Each round every endpoint whose weight has earned a turn takes the next free slot of its
     * permutation. The heaviest endpoints take one every round, an endpoint of half that
     * weight every other round: slots end up in proportion to weight (Envoy's integer-exact
     * form of its normalized-weight loop). The heaviest endpoint fills a slot every round, so
     * at most m rounds run. */
    for (uint64_t round = 1; filled < m; round++) {
        for (uint32_t i = 0; i < n && filled < m; i++) {
            struct maglev_build *e = &b[i];
            if (round * eps[EP_AT(i)].weight < e->target) {
                continue;
            }
            e->target += max_w;
            uint64_t slot = (e->offset + e->skip * e->next) % m;
            while (table[slot] != UINT32_MAX) {
                e->next++;
                slot = (e->offset + e->skip * e->next) % m;
            }
            table[slot] = EP_AT(i);
            e->next++;
            e->count++;
            filled++;
        }
    }
    struct lb_hash *h = ARENA_NEW(a, struct lb_hash);
    h->kind = LB_HASH_MAGLEV;
    h->table = table;
    h->size = m;
    h->min_per_ep = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        h->min_per_ep = b[i].count < h->min_per_ep ? b[i].count : h->min_per_ep;
        h->max_per_ep = b[i].count > h->max_per_ep ? b[i].count : h->max_per_ep;
    }
    free(b);
    free(order);
    return h;
}

/* The ring position of `key`: the first point at or after it; past the last point, the first. */
static uint64_t ring_pos(const struct lb_hash *h, uint64_t key)
{
    uint64_t lo = 0, hi = h->size;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (h->ring[mid].hash < key) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo == h->size ? 0 : lo;
}

/* Where the search for `key` starts: a table slot or a ring point. */
static uint64_t start_pos(const struct lb_hash *h, uint64_t key, uint32_t attempt)
{
    if (h->kind == LB_HASH_MAGLEV) {
        return (attempt > 0 ? key ^ (0 - (uint64_t)attempt) : key) % h->size;
    }
    return (ring_pos(h, key) + attempt) % h->size;
}

uint32_t lb_hash_pick(const struct lb_hash *h, uint64_t key)
{
    return lb_hash_pick_attempt(h, key, 0);
}

uint32_t lb_hash_pick_attempt(const struct lb_hash *h, uint64_t key, uint32_t attempt)
{
    uint64_t pos = start_pos(h, key, attempt);
    return h->kind == LB_HASH_MAGLEV ? h->table[pos] : h->ring[pos].ep;
}

static bool in_set(uint32_t ep, const uint32_t *set, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++) {
        if (set[k] == ep) {
            return true;
        }
    }
    return false;
}

uint32_t lb_hash_pick_in(const struct lb_hash *h, uint64_t key, uint32_t attempt,
                         const uint32_t *set, uint32_t n)
{
    uint64_t pos = start_pos(h, key, attempt);
    for (uint32_t probe = 0; probe < LB_HASH_MAX_PROBES && probe < h->size; probe++) {
        uint32_t ep = h->kind == LB_HASH_MAGLEV ? h->table[pos] : h->ring[pos].ep;
        if (in_set(ep, set, n)) {
            return ep;
        }
        pos = pos + 1 == h->size ? 0 : pos + 1;
    }
    return set[key % n];
}

bool lb_hash_is_prime(uint64_t n)
{
    if (n < 2) {
        return false;
    }
    if (n % 2 == 0) {
        return n == 2;
    }
    for (uint64_t d = 3; d * d <= n; d += 2) {
        if (n % d == 0) {
            return false;
        }
    }
    return true;
}
