/* router: virtual host selection and route matching (see router.h). */
#include "proxy/http/router.h"

#include "proxy/config/config.h"
#include "proxy/http/headers.h"

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

static bool header_matches(const struct header_matcher *m, const struct route_req *r)
{
    bool present;
    struct str v = header_value(r, m->name, &present);
    bool match;
    if (m->kind == HM_PRESENT) {
        match = present == m->present_value;
    } else if (!present) {
        /* An absent header never matches a value matcher, inverted or not (Envoy). */
        return false;
    } else {
        switch (m->kind) {
        case HM_EXACT:
            match = m->ignore_case ? str_eq_nocase(v, m->value) : str_eq(v, m->value);
            break;
        case HM_PREFIX:
            match =
                m->ignore_case ? str_has_prefix_nocase(v, m->value) : str_has_prefix(v, m->value);
            break;
        case HM_SUFFIX:
            match =
                m->ignore_case ? str_has_suffix_nocase(v, m->value) : str_has_suffix(v, m->value);
            break;
        case HM_CONTAINS:
            match = str_contains(v, m->value, m->ignore_case);
            break;
        default:
            match = false;
            break;
        }
    }
    return m->invert ? !match : match;
}

static bool path_matches(const struct route_cfg *rt, struct str path)
{
    if (rt->match_kind == RM_PREFIX) {
        return rt->case_sensitive ? str_has_prefix(path, rt->match)
                                  : str_has_prefix_nocase(path, rt->match);
    }
    /* exact path: the query string is not part of the comparison */
    const char *q = memchr(path.p, '?', path.len);
    struct str p = {path.p, q ? (size_t)(q - path.p) : path.len};
    return rt->case_sensitive ? str_eq(p, rt->match) : str_eq_nocase(p, rt->match);
}

const struct route_cfg *router_match_route(const struct vhost_cfg *vh, const struct route_req *r)
{
    for (uint32_t i = 0; i < vh->n_routes; i++) {
        const struct route_cfg *rt = &vh->routes[i];
        if (!path_matches(rt, r->path)) {
            continue;
        }
        bool ok = true;
        for (uint32_t k = 0; k < rt->n_headers && ok; k++) {
            ok = header_matches(&rt->headers[k], r);
        }
        if (ok) {
            return rt;
        }
    }
    return NULL;
}

const struct route_cfg *router_route(const struct route_table *t, const struct route_req *r,
                                     const struct vhost_cfg **vh_out)
{
    const struct vhost_cfg *vh = router_select_vhost(t, r->authority);
    *vh_out = vh;
    return vh ? router_match_route(vh, r) : NULL;
}
