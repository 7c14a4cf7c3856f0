/* sotw: the state-of-the-world ADS protocol of one stream (sotw.h). */
#include "xds/server/sotw.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/xmalloc.h"

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]);
    }
    free(v);
}

/* A sorted, unique copy of `names` into *out. */
static size_t names_copy(char *const *names, size_t n, char ***out)
{
    char **v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = xstrdup(names[i]);
    }
    qsort(v, n, sizeof(*v), str_cmp);
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (w > 0 && strcmp(v[w - 1], v[i]) == 0) {
            free(v[i]);
            continue;
        }
        v[w++] = v[i];
    }
    *out = v;
    return w;
}

static bool names_equal(char **a, size_t na, char **b, size_t nb)
{
    if (na != nb) {
        return false;
    }
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i], b[i]) != 0) {
            return false;
        }
    }
    return true;
}

enum sotw_verdict sotw_request(struct sotw *s, enum xds_type t, const char *nonce,
                               char *const *names, size_t n_names, bool nack)
{
    struct sotw_type *ty = &s->t[t];
    /* A nonce we did not send last is stale; a stream that never answered this type takes any
     * request as a first one (a reconnecting client sends an empty nonce anyway). */
    if (nonce != NULL && nonce[0] != '\0' && ty->nonce[0] != '\0' &&
        strcmp(nonce, ty->nonce) != 0) {
        return SOTW_STALE;
    }
    bool first = !ty->requested;
    bool star = false;
    for (size_t i = 0; i < n_names; i++) {
        star |= strcmp(names[i], "*") == 0;
    }
    bool wildcard_type = t == XDS_LDS || t == XDS_CDS;
    bool wildcard;
    if (wildcard_type && (star || (n_names == 0 && (first || ty->wildcard)))) {
        /* Empty on the first request (or while wildcard) and "*" mean everything. */
        wildcard = true;
    } else {
        wildcard = false;
    }
    char **v = NULL;
    size_t n = wildcard ? 0 : names_copy(names, n_names, &v);
    bool changed = first || wildcard != ty->wildcard || !names_equal(v, n, ty->names, ty->n_names);
    names_free(ty->names, ty->n_names);
    ty->names = v;
    ty->n_names = n;
    ty->wildcard = wildcard;
    ty->requested = true;
    if (changed) {
        return SOTW_ANSWER;
    }
    return nack ? SOTW_NACK : SOTW_ACK;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

bool sotw_prepare(struct sotw *s, enum xds_type t, const struct xds_snapshot *snap, bool force,
                  struct sotw_resp *out)
{
    struct sotw_type *ty = &s->t[t];
    memset(out, 0, sizeof(*out));
    if (!ty->requested || (!ty->wildcard && ty->n_names == 0 && !ty->sent)) {
        return false;
    }
    size_t cap = ty->wildcard ? (snap ? snap->n[t] : 0) : ty->n_names;
    out->res = xcalloc(cap ? cap : 1, sizeof(*out->res));
    uint64_t h = 0xcbf29ce484222325ULL;
    if (ty->wildcard) {
        for (size_t i = 0; i < cap; i++) {
            out->res[out->n++] = &snap->res[t][i];
        }
    } else {
        for (size_t i = 0; i < ty->n_names; i++) {
            const struct xds_resource *r = xds_snapshot_find(snap, t, ty->names[i]);
            if (r != NULL) {
                out->res[out->n++] = r;
            }
        }
    }
    for (size_t i = 0; i < out->n; i++) {
        const struct xds_resource *r = out->res[i];
        uint64_t len = r->len;
        h = fnv(h, r->name, strlen(r->name) + 1);
        h = fnv(h, &len, sizeof(len));
        h = fnv(h, r->data, r->len);
    }
    out->hash = h;
    /* Removal: a name of the last response missing now (both lists are sorted). */
    size_t j = 0;
    for (size_t i = 0; i < ty->n_sent; i++) {
        while (j < out->n && strcmp(out->res[j]->name, ty->sent_names[i]) < 0) {
            j++;
        }
        if (j >= out->n || strcmp(out->res[j]->name, ty->sent_names[i]) != 0) {
            out->removes = true;
            break;
        }
    }
    if (!force && ty->sent && ty->sent_hash == h) {
        sotw_resp_clear(out);
        return false;
    }
    snprintf(out->version, sizeof(out->version), "%016" PRIx64, h);
    return true;
}

void sotw_commit(struct sotw *s, enum xds_type t, struct sotw_resp *r)
{
    struct sotw_type *ty = &s->t[t];
    s->nonces++;
    snprintf(r->nonce, sizeof(r->nonce), "%" PRIu64, s->nonces);
    memcpy(ty->nonce, r->nonce, sizeof(ty->nonce));
    ty->sent = true;
    ty->sent_hash = r->hash;
    names_free(ty->sent_names, ty->n_sent);
    ty->sent_names = xcalloc(r->n ? r->n : 1, sizeof(char *));
    for (size_t i = 0; i < r->n; i++) {
        ty->sent_names[i] = xstrdup(r->res[i]->name);
    }
    ty->n_sent = r->n;
}

void sotw_resp_clear(struct sotw_resp *r)
{
    free(r->res);
    r->res = NULL;
    r->n = 0;
}

void sotw_free(struct sotw *s)
{
    for (int t = 0; t < XDS_NTYPES; t++) {
        names_free(s->t[t].names, s->t[t].n_names);
        names_free(s->t[t].sent_names, s->t[t].n_sent);
    }
    memset(s, 0, sizeof(*s));
}
