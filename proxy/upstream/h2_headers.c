/* h2_headers: HTTP/1.1 field lists to HTTP/2 header blocks (see h2_headers.h). Used on the
 * upstream HTTP/2 request path for every request, so it makes one pass over the fields and one
 * arena allocation for the block. */
#include "proxy/upstream/h2_headers.h"

#include <string.h>

#include "proxy/http/codec_h1.h"

bool h2_headers_forbidden(struct str n)
{
    if (n.len == 0 || n.p[0] == ':') {
        return true;
    }
    return str_eq_lit(n, "connection") || str_eq_lit(n, "keep-alive") ||
           str_eq_lit(n, "proxy-connection") || str_eq_lit(n, "transfer-encoding") ||
           str_eq_lit(n, "upgrade") || str_eq_lit(n, "http2-settings");
}

static bool has_upper(struct str n)
{
    for (size_t i = 0; i < n.len; i++) {
        if (n.p[i] >= 'A' && n.p[i] <= 'Z') {
            return true;
        }
    }
    return false;
}

static struct str lower(struct arena *a, struct str n)
{
    if (!has_upper(n)) {
        return n;
    }
    char *d = arena_alloc(a, n.len);
    for (size_t i = 0; i < n.len; i++) {
        d[i] = (char)(n.p[i] >= 'A' && n.p[i] <= 'Z' ? n.p[i] + 32 : n.p[i]);
    }
    return (struct str){d, n.len};
}

/* Does the comma-separated list `v` hold `tok` (case-insensitive, OWS trimmed)? */
static bool list_has(struct str v, struct str tok)
{
    size_t start = 0;
    for (size_t k = 0; k <= v.len; k++) {
        if (k < v.len && v.p[k] != ',') {
            continue;
        }
        struct str t = str_trim_ows((struct str){v.p + start, k - start});
        /* a transfer-coding may carry parameters ("trailers;q=1" is not valid, but be lenient) */
        const char *semi = memchr(t.p, ';', t.len);
        if (semi != NULL) {
            t = str_trim_ows((struct str){t.p, (size_t)(semi - t.p)});
        }
        if (str_eq_nocase(t, tok)) {
            return true;
        }
        start = k + 1;
    }
    return false;
}

/* Is `name` listed by one of the request's Connection fields? */
static bool named_by_connection(const struct headers *h, struct str name)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (str_eq_lit(h->v[i].name, "connection") && list_has(h->v[i].value, name)) {
            return true;
        }
    }
    return false;
}

static nghttp2_nv nv_of(struct str n, struct str v)
{
    return (nghttp2_nv){(uint8_t *)n.p, (uint8_t *)v.p, n.len, v.len, NGHTTP2_NV_FLAG_NONE};
}

/* The next crumb of cookie value `v` from `*pos` ("; " separated; may be empty); advances
 * `*pos` past its separator. */
static struct str next_crumb(struct str v, size_t *pos)
{
    size_t start = *pos, k = start;
    while (k < v.len && !(v.p[k] == ';' && k + 1 < v.len && v.p[k + 1] == ' ')) {
        k++;
    }
    *pos = k < v.len ? k + 2 : v.len + 1;
    return (struct str){v.p + start, k - start};
}

/* How many non-empty crumbs `v` has. */
static size_t count_crumbs(struct str v)
{
    size_t n = 0, pos = 0;
    while (pos <= v.len) {
        n += next_crumb(v, &pos).len > 0;
    }
    return n;
}

nghttp2_nv *h2_headers_request(struct arena *a, struct str method, struct str scheme,
                               struct str path, const struct headers *h, size_t *n)
{
    bool has_conn = false;
    struct str authority = STR_NULL;
    size_t crumbs = 0; /* the fields splitting the cookies would add */
    for (uint32_t i = 0; i < h->n; i++) {
        struct str name = h->v[i].name;
        if (name.len == 4 && str_eq_nocase(name, STR_LIT("host")) && authority.p == NULL) {
            authority = h->v[i].value;
        } else if (name.len == 10 && str_eq_nocase(name, STR_LIT("connection"))) {
            has_conn = true;
        } else if (name.len == 6 && str_eq_nocase(name, STR_LIT("cookie"))) {
            size_t c = count_crumbs(h->v[i].value);
            crumbs += c > 1 ? c - 1 : 0;
        }
    }
    /* the block's size once split, when no field is dropped: Host becomes :authority, plus
     * :method, :scheme and :path */
    bool split = crumbs > 0 && h->n + 3 + crumbs <= H2_COOKIE_SPLIT_MAX_FIELDS;
    nghttp2_nv *nv = arena_alloc(a, sizeof(*nv) * (h->n + 4 + (split ? crumbs : 0)));
    size_t k = 0;
    nv[k++] = nv_of(STR_LIT(":method"), method);
    nv[k++] = nv_of(STR_LIT(":scheme"), scheme);
    if (authority.p != NULL) {
        nv[k++] = nv_of(STR_LIT(":authority"), authority);
    }
    nv[k++] = nv_of(STR_LIT(":path"), path);
    for (uint32_t i = 0; i < h->n; i++) {
        struct str name = lower(a, h->v[i].name);
        struct str value = h->v[i].value;
        if (h2_headers_forbidden(name) || str_eq_lit(name, "host")) {
            continue;
        }
        if (str_eq_lit(name, "te")) {
            if (!list_has(value, STR_LIT("trailers"))) {
                continue;
            }
            value = STR_LIT("trailers");
        } else if (has_conn && named_by_connection(h, name)) {
            continue;
        } else if (split && str_eq_lit(name, "cookie") && count_crumbs(value) > 1) {
            size_t pos = 0;
            while (pos <= value.len) {
                struct str c = next_crumb(value, &pos);
                if (c.len > 0) {
                    nv[k++] = nv_of(name, c);
                }
            }
            continue;
        }
        nv[k++] = nv_of(name, value);
    }
    *n = k;
    return nv;
}

nghttp2_nv *h2_headers_trailers(struct arena *a, const struct headers *t, size_t *n)
{
    nghttp2_nv *nv = arena_alloc(a, sizeof(*nv) * (t->n + 1));
    size_t k = 0;
    for (uint32_t i = 0; i < t->n; i++) {
        struct str name = lower(a, t->v[i].name);
        if (h2_headers_forbidden(name) || !h1_trailer_allowed(name)) {
            continue;
        }
        nv[k++] = nv_of(name, t->v[i].value);
    }
    *n = k;
    return nv;
}
