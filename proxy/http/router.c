/* router: virtual host selection, route matching (path, headers, query parameters), and the
 * route's choice of cluster (cluster, cluster_header, weighted_clusters) and hash key (see
 * router.h). */
#include "proxy/http/router.h"

#include <stdlib.h>

#include "proxy/config/cluster_map.h"
#include "proxy/config/config.h"
#include "proxy/core/cumsum.h"
#include "proxy/core/hash.h"
#include "proxy/http/headers.h"
#include "proxy/http/regex.h"
#include "proxy/net/tls_verify.h"

const struct vhost_cfg *router_select_vhost(const struct route_table *t, struct str authority)
{
    const struct vhost_cfg *best_suffix = NULL, *best_prefix = NULL, *wildcard = NULL;
    size_t best_suffix_len = 0, best_prefix_len = 0;
    for (uint32_t i = 0; i < t->n_vhosts; i++) {
        const struct vhost_cfg *vh = &t->vhosts[i];
        for (uint32_t k = 0; k < vh->n_exact; k++) {
            if (str_eq_nocase(vh->exact[k], authority)) {
                return vh;
            }
        }
        for (uint32_t k = 0; k < vh->n_suffixes; k++) {
            struct str sfx = vh->suffixes[k];
            /* "*.foo.com" needs at least one character before the suffix */
            if (sfx.len > best_suffix_len && authority.len > sfx.len &&
                str_has_suffix_nocase(authority, sfx)) {
                best_suffix = vh;
                best_suffix_len = sfx.len;
            }
        }
        for (uint32_t k = 0; k < vh->n_prefixes; k++) {
            struct str pfx = vh->prefixes[k];
            if (pfx.len > best_prefix_len && authority.len > pfx.len &&
                str_has_prefix_nocase(authority, pfx)) {
                best_prefix = vh;
                best_prefix_len = pfx.len;
            }
        }
        if (vh->is_wildcard && wildcard == NULL) {
            wildcard = vh;
        }
    }
    if (best_suffix != NULL) {
        return best_suffix;
    }
    if (best_prefix != NULL) {
        return best_prefix;
    }
    return wildcard;
}

static struct str header_value(const struct route_req *r, struct str name, bool *present)
{
    *present = true;
    if (name.len > 0 && name.p[0] == ':') {
        if (str_eq_lit(name, ":method")) {
            return r->method;
        }
        if (str_eq_lit(name, ":path")) {
            return r->path;
        }
        if (str_eq_lit(name, ":authority") || str_eq_lit(name, "host")) {
            return r->authority;
        }
        if (str_eq_lit(name, ":scheme")) {
            return r->scheme;
        }
        *present = false;
        return STR_NULL;
    }
    if (str_eq_lit(name, "host")) {
        return r->authority;
    }
    const struct header *h = r->headers ? headers_get(r->headers, name) : NULL;
    if (h == NULL) {
        *present = false;
        return STR_NULL;
    }
    return h->value;
}

/* A decimal int64 filling all of `v`, with an optional sign (absl::SimpleAtoi, which Envoy's
 * range_match uses; the surrounding whitespace it also skips is already trimmed from header
 * values). Overflow is no number. */
static bool parse_i64(struct str v, int64_t *out)
{
    size_t i = 0;
    bool neg = false;
    if (i < v.len && (v.p[i] == '+' || v.p[i] == '-')) {
        neg = v.p[i] == '-';
        i++;
    }
    if (i == v.len) {
        return false;
    }
    /* accumulate negatively: INT64_MIN has no positive counterpart */
    int64_t acc = 0;
    for (; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return false;
        }
        int d = v.p[i] - '0';
        if (acc < (INT64_MIN + d) / 10) {
            return false;
        }
        acc = acc * 10 - d;
    }
    if (!neg && acc == INT64_MIN) {
        return false;
    }
    *out = neg ? acc : -acc;
    return true;
}

/* A StringMatcher (exact, prefix, suffix, contains, safe_regex) on `v`. */
/* A header or query parameter matcher's string kinds, tested by str_match_test as every other
 * StringMatcher is (a str_match on the stack: no allocation); present and range match nothing
 * here. */
static bool string_matches(const struct header_matcher *m, struct str v)
{
    struct str_match sm = {.value = m->value, .ignore_case = m->ignore_case, .regex = m->regex};
    switch (m->kind) {
    case HM_EXACT:
        sm.kind = SM_EXACT;
        break;
    case HM_PREFIX:
        sm.kind = SM_PREFIX;
        break;
    case HM_SUFFIX:
        sm.kind = SM_SUFFIX;
        break;
    case HM_CONTAINS:
        sm.kind = SM_CONTAINS;
        break;
    case HM_REGEX:
        sm.kind = SM_REGEX;
        break;
    default:
        return false;
    }
    return str_match_test(&sm, v);
}

/* The value a header matcher sees: a header that appears more than once is matched as its
 * values joined with ',' (Envoy's getAllOfHeaderAsString). */
static struct str matcher_value(const struct route_req *r, struct str name, bool *present)
{
    struct str v = header_value(r, name, present);
    if (!*present || r->arena == NULL || r->headers == NULL || name.len == 0 || name.p[0] == ':' ||
        str_eq_lit(name, "host")) {
        return v;
    }
    const struct headers *h = r->headers;
    uint32_t n = 0;
    size_t len = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq(h->v[i].name, name)) {
            n++;
            len += h->v[i].value.len + 1;
        }
    }
    if (n < 2) {
        return v;
    }
    char *p = arena_alloc(r->arena, len);
    size_t o = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq(h->v[i].name, name)) {
            if (o > 0) {
                p[o++] = ',';
            }
            memcpy(p + o, h->v[i].value.p, h->v[i].value.len);
            o += h->v[i].value.len;
        }
    }
    return (struct str){p, o};
}

static bool header_matches(const struct header_matcher *m, const struct route_req *r)
{
    bool present;
    struct str v = matcher_value(r, m->name, &present);
    bool match;
    if (m->kind == HM_PRESENT) {
        match = present == m->present_value;
    } else if (!present) {
        /* An absent header never matches a value matcher, inverted or not (Envoy). */
        return false;
    } else if (m->kind == HM_RANGE) {
        int64_t n;
        match = parse_i64(v, &n) && n >= m->range_start && n < m->range_end;
    } else {
        match = string_matches(m, v);
    }
    return m->invert ? !match : match;
}

/* ---- query strings ---- */

/* The query string of `path` (after the first '?'), or empty. */
static struct str query_of(struct str path)
{
    const char *q = memchr(path.p, '?', path.len);
    if (q == NULL) {
        return STR_NULL;
    }
    return (struct str){q + 1, path.len - (size_t)(q + 1 - path.p)};
}

/* The first value of parameter `name` in `query` ("a=1&b&c=3": b's value is empty), as Envoy's
 * parseQueryString reads it: split on '&', then on the first '=', no percent-decoding. */
static bool query_value(struct str query, struct str name, struct str *value)
{
    size_t start = 0;
    while (start < query.len) {
        const char *amp = memchr(query.p + start, '&', query.len - start);
        size_t end = amp ? (size_t)(amp - query.p) : query.len;
        struct str param = {query.p + start, end - start};
        const char *eq = memchr(param.p, '=', param.len);
        struct str key = {param.p, eq ? (size_t)(eq - param.p) : param.len};
        if (str_eq(key, name)) {
            *value = eq ? (struct str){eq + 1, param.len - key.len - 1} : STR_LIT("");
            return true;
        }
        start = end + 1;
    }
    return false;
}

static bool query_matches(const struct header_matcher *m, struct str query)
{
    struct str v;
    bool present = query_value(query, m->name, &v);
    if (m->kind == HM_PRESENT) {
        return present == m->present_value;
    }
    return present && string_matches(m, v);
}

bool router_headers_match(const struct header_matcher *m, uint32_t n, const struct route_req *r)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!header_matches(&m[i], r)) {
            return false;
        }
    }
    return true;
}

/* `*bare_len` caches the length of `path` without its query and fragment for the routes of one
 * request (SIZE_MAX: not yet computed), so a table of regex or exact routes scans for them once
 * rather than once per route. */
static bool path_matches(const struct route_cfg *rt, struct str path, size_t *bare_len)
{
    if (rt->match_kind == RM_PREFIX) {
        return rt->case_sensitive ? str_has_prefix(path, rt->match)
                                  : str_has_prefix_nocase(path, rt->match);
    }
    /* exact path and regex: the query string (and a fragment) are not part of the comparison
     * (Envoy's removeQueryAndFragment); a regex must match all of the rest */
    if (*bare_len == SIZE_MAX) {
        size_t n = 0;
        while (n < path.len && path.p[n] != '?' && path.p[n] != '#') {
            n++;
        }
        *bare_len = n;
    }
    struct str p = {path.p, *bare_len};
    if (rt->match_kind == RM_REGEX) {
        return regex_match(rt->path_regex, p);
    }
    return rt->case_sensitive ? str_eq(p, rt->match) : str_eq_nocase(p, rt->match);
}

const struct route_cfg *router_match_route(const struct vhost_cfg *vh, const struct route_req *r)
{
    size_t bare_len = SIZE_MAX;
    for (uint32_t i = 0; i < vh->n_routes; i++) {
        const struct route_cfg *rt = &vh->routes[i];
        if (!path_matches(rt, r->path, &bare_len)) {
            continue;
        }
        /* match.grpc: Envoy's isGrpcRequestHeaders (the content-type) */
        bool ok = !rt->match_grpc || r->grpc;
        for (uint32_t k = 0; k < rt->n_headers && ok; k++) {
            ok = header_matches(&rt->headers[k], r);
        }
        struct str query = rt->n_query > 0 ? query_of(r->path) : STR_NULL;
        for (uint32_t k = 0; k < rt->n_query && ok; k++) {
            ok = query_matches(&rt->query[k], query);
        }
        if (ok) {
            return rt;
        }
    }
    return NULL;
}

struct str router_regex_rewrite(const struct route_cfg *rt, struct str path, struct arena *a)
{
    size_t n = 0;
    while (n < path.len && path.p[n] != '?' && path.p[n] != '#') {
        n++;
    }
    struct str out;
    if (regex_replace_all(rt->regex_rewrite, (struct str){path.p, n}, rt->regex_substitution, a,
                          &out) == 0) {
        return path;
    }
    if (n == path.len) {
        return out;
    }
    return arena_printf(a, "%.*s%.*s", STR_FMT(out), (int)(path.len - n), path.p + n);
}

/* ---- the route's cluster ---- */

const struct weighted_cluster *router_weighted_pick(const struct weighted_cluster *w, uint32_t n,
                                                    uint64_t x)
{
    return &w[cumsum_pick(&w[0].cum_weight, sizeof(*w), n, x)];
}

const struct cluster_cfg *router_pick_cluster(const struct route_cfg *rt, const struct route_req *r,
                                              uint64_t rnd, const struct weighted_cluster **wc_out)
{
    *wc_out = NULL;
    switch (rt->cluster_kind) {
    case RCK_HEADER: {
        bool present;
        struct str name = header_value(r, rt->cluster_header, &present);
        return present ? cluster_map_find(rt->clusters, name) : NULL;
    }
    case RCK_WEIGHTED: {
        const struct weighted_cluster *wc =
            router_weighted_pick(rt->weighted, rt->n_weighted, rnd % rt->total_weight);
        *wc_out = wc;
        return wc->cluster;
    }
    case RCK_CLUSTER:
    default:
        return rt->cluster;
    }
}

/* ---- hash keys (hash_policy) ---- */

/* Most values of one header that are hashed together; more are ignored. */
#define HASH_MAX_VALUES 16

static int cmp_str(const void *a, const void *b)
{
    const struct str *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    return c != 0 ? c : (x->len < y->len ? -1 : x->len > y->len);
}

/* Envoy's header policy: XXH64 of the value; several values of the header are sorted (so their
 * order does not matter) and hashed in a chain, each seeded with the hash so far. */
static bool hash_header(const struct route_req *r, struct str name, uint64_t *out)
{
    bool present;
    struct str v = header_value(r, name, &present);
    if (!present) {
        return false;
    }
    struct str vals[HASH_MAX_VALUES];
    uint32_t n = 0;
    if (name.len > 0 && name.p[0] != ':' && !str_eq_lit(name, "host") && r->headers != NULL) {
        for (uint32_t i = 0; i < r->headers->n && n < HASH_MAX_VALUES; i++) {
            if (str_eq(r->headers->v[i].name, name)) {
                vals[n++] = r->headers->v[i].value;
            }
        }
    }
    if (n <= 1) {
        *out = hash_xxh64(v.p, v.len, 0);
        return true;
    }
    qsort(vals, n, sizeof(vals[0]), cmp_str);
    uint64_t h = 0;
    for (uint32_t i = 0; i < n; i++) {
        h = hash_xxh64(vals[i].p, vals[i].len, h);
    }
    *out = h;
    return true;
}

/* The value of cookie `name` in the request's Cookie headers (Envoy's parseCookieValue: pairs
 * split on ';', leading whitespace skipped, surrounding double quotes removed). */
static bool cookie_value(const struct route_req *r, struct str name, struct str *out)
{
    if (r->headers == NULL) {
        return false;
    }
    for (uint32_t i = 0; i < r->headers->n; i++) {
        if (!str_eq_lit(r->headers->v[i].name, "cookie")) {
            continue;
        }
        struct str c = r->headers->v[i].value;
        size_t start = 0;
        while (start < c.len) {
            const char *semi = memchr(c.p + start, ';', c.len - start);
            size_t end = semi ? (size_t)(semi - c.p) : c.len;
            struct str pair = {c.p + start, end - start};
            while (pair.len > 0 && (pair.p[0] == ' ' || pair.p[0] == '\t')) {
                pair.p++;
                pair.len--;
            }
            const char *eq = memchr(pair.p, '=', pair.len);
            if (eq != NULL && str_eq((struct str){pair.p, (size_t)(eq - pair.p)}, name)) {
                struct str v = {eq + 1, pair.len - (size_t)(eq + 1 - pair.p)};
                if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
                    v.p++;
                    v.len -= 2;
                }
                *out = v;
                return true;
            }
            start = end + 1;
        }
    }
    return false;
}

bool router_hash_key(const struct route_cfg *rt, const struct route_req *r, uint64_t *out)
{
    bool have = false;
    uint64_t h = 0;
    for (uint32_t i = 0; i < rt->n_hash_policies; i++) {
        const struct hash_policy *p = &rt->hash_policies[i];
        uint64_t k = 0;
        bool got = false;
        struct str v;
        switch (p->kind) {
        case HP_HEADER:
            got = hash_header(r, p->name, &k);
            break;
        case HP_COOKIE:
            if ((got = cookie_value(r, p->name, &v))) {
                k = hash_xxh64(v.p, v.len, 0);
            }
            break;
        case HP_SOURCE_IP:
            if ((got = r->source_ip.len > 0)) {
                k = hash_xxh64(r->source_ip.p, r->source_ip.len, 0);
            }
            break;
        case HP_QUERY:
            if ((got = query_value(query_of(r->path), p->name, &v))) {
                k = hash_xxh64(v.p, v.len, 0);
            }
            break;
        }
        if (got) {
            /* rotating the key so far keeps two equal policies from cancelling out */
            h = (have ? (h << 1) | (h >> 63) : 0) ^ k;
            have = true;
        }
        if (have && p->terminal) {
            break;
        }
    }
    if (have) {
        *out = h;
    }
    return have;
}

const struct route_cfg *router_route(const struct route_table *t, const struct route_req *r,
                                     const struct vhost_cfg **vh_out)
{
    const struct vhost_cfg *vh = router_select_vhost(t, r->authority);
    *vh_out = vh;
    return vh ? router_match_route(vh, r) : NULL;
}
