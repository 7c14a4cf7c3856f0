/* ads_state: SotW protocol state, requests, ACK/NACK and back-off (see ads_state.h). */
#include "proxy/xds/ads_state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/core/xmalloc.h"

#define PbRequest Envoy__Service__Discovery__V3__DiscoveryRequest
#define PbResponse Envoy__Service__Discovery__V3__DiscoveryResponse

#define GRPC_INVALID_ARGUMENT 3

void ads_state_init(struct ads_state *st, const struct ads_type *types, uint32_t n,
                    const struct Envoy__Config__Core__V3__Node *node, bool node_once)
{
    memset(st, 0, sizeof(*st));
    st->n_types = n < ADS_MAX_TYPES ? n : ADS_MAX_TYPES;
    for (uint32_t i = 0; i < st->n_types; i++) {
        st->types[i].type = &types[i];
        st->types[i].version = xstrdup("");
        st->types[i].nonce = xstrdup("");
    }
    st->node = node;
    st->node_once = node_once;
}

static void free_names(struct ads_type_state *ts)
{
    for (size_t i = 0; i < ts->n_names; i++) {
        free(ts->names[i]);
    }
    free(ts->names);
    ts->names = NULL;
    ts->n_names = 0;
}

void ads_state_free(struct ads_state *st)
{
    for (uint32_t i = 0; i < st->n_types; i++) {
        struct ads_type_state *ts = &st->types[i];
        free_names(ts);
        free(ts->version);
        free(ts->nonce);
        free(ts->error);
    }
    memset(st, 0, sizeof(*st));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ads_state_subscribe(struct ads_state *st, uint32_t t, const char *const *names, size_t n)
{
    if (n > ADS_MAX_NAMES) {
        return -E2BIG;
    }
    struct ads_type_state *ts = &st->types[t];
    char **v = xcalloc(n > 0 ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = (char *)names[i];
    }
    qsort(v, n, sizeof(*v), cmp_str);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k == 0 || strcmp(v[k - 1], v[i]) != 0) {
            v[k++] = v[i];
        }
    }
    bool same = k == ts->n_names;
    for (size_t i = 0; same && i < k; i++) {
        same = strcmp(v[i], ts->names[i]) == 0;
    }
    if (same) {
        free(v);
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        v[i] = xstrdup(v[i]);
    }
    free_names(ts);
    ts->names = v;
    ts->n_names = k;
    ts->pending = true;
    return 0;
}

void ads_state_resubscribe(struct ads_state *st, uint32_t t)
{
    struct ads_type_state *ts = &st->types[t];
    ts->pending = ts->pending || ts->n_names > 0;
}

void ads_state_subscribe_wildcard(struct ads_state *st, uint32_t t)
{
    struct ads_type_state *ts = &st->types[t];
    free_names(ts);
    ts->wildcard = true;
    ts->pending = true;
}

static void set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = xstrdup(src != NULL ? src : "");
}

void ads_state_stream_start(struct ads_state *st)
{
    st->node_sent = false;
    for (uint32_t i = 0; i < st->n_types; i++) {
        struct ads_type_state *ts = &st->types[i];
        set_str(&ts->nonce, "");
        free(ts->error);
        ts->error = NULL;
        ts->pending = ts->n_names > 0 || ts->wildcard;
    }
}

uint32_t ads_state_pending(const struct ads_state *st)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->n_types; i++) {
        n += st->types[i].pending;
    }
    return n;
}

int ads_state_next_request(struct ads_state *st, uint8_t **out, size_t *len)
{
    for (uint32_t i = 0; i < st->n_types; i++) {
        struct ads_type_state *ts = &st->types[i];
        if (!ts->pending) {
            continue;
        }
        PbRequest rq = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_REQUEST__INIT;
        Google__Rpc__Status status = GOOGLE__RPC__STATUS__INIT;
        rq.version_info = ts->version;
        rq.type_url = (char *)ts->type->type_url;
        rq.response_nonce = ts->nonce;
        rq.resource_names = ts->names;
        rq.n_resource_names = ts->n_names;
        if (!st->node_once || !st->node_sent) {
            rq.node = (Envoy__Config__Core__V3__Node *)st->node;
        }
        if (ts->error != NULL) {
            status.code = GRPC_INVALID_ARGUMENT;
            status.message = ts->error;
            rq.error_detail = &status;
        }
        size_t n = protobuf_c_message_get_packed_size(&rq.base);
        uint8_t *p = xmalloc(n > 0 ? n : 1);
        protobuf_c_message_pack(&rq.base, p);
        *out = p;
        *len = n;
        ts->pending = false;
        ts->last_nack = ts->error != NULL;
        free(ts->error);
        ts->error = NULL;
        st->node_sent = true;
        return (int)i;
    }
    return -1;
}

/* Reads a varint at p[*i..n). Returns 0, or -1 when cut short or longer than 10 bytes. */
static int varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*i >= n) {
            return -1;
        }
        uint8_t c = p[(*i)++];
        *v |= (uint64_t)(c & 0x7f) << (shift < 64 ? shift : 63);
        if ((c & 0x80) == 0) {
            return 0;
        }
    }
    return -1;
}

/* The next top-level field at p[*i..n): its number, and for a length-delimited one its bytes.
 * Returns 0, 1 at the end, or -1 when the bytes do not parse. */
static int next_field(const uint8_t *p, size_t n, size_t *i, uint64_t *fn, const uint8_t **val,
                      size_t *val_len)
{
    if (*i >= n) {
        return 1;
    }
    uint64_t key, v;
    if (varint(p, n, i, &key) != 0) {
        return -1;
    }
    *fn = key >> 3;
    *val = NULL;
    *val_len = 0;
    switch (key & 7) {
    case 0: /* varint */
        return varint(p, n, i, &v);
    case 1: /* 64-bit */
        if (n - *i < 8) {
            return -1;
        }
        *i += 8;
        return 0;
    case 5: /* 32-bit */
        if (n - *i < 4) {
            return -1;
        }
        *i += 4;
        return 0;
    case 2: /* length-delimited */
        if (varint(p, n, i, &v) != 0 || v > n - *i) {
            return -1;
        }
        *val = p + *i;
        *val_len = (size_t)v;
        *i += (size_t)v;
        return 0;
    default: /* groups (3, 4): not used by these messages */
        return -1;
    }
}

int ads_pb_field(const uint8_t *p, size_t n, uint32_t field, const uint8_t **out, size_t *out_len)
{
    size_t i = 0;
    for (;;) {
        uint64_t fn;
        const uint8_t *v;
        size_t vl;
        int rv = next_field(p, n, &i, &fn, &v, &vl);
        if (rv != 0) {
            return rv;
        }
        if (fn == field && v != NULL) {
            *out = v;
            *out_len = vl;
            return 0;
        }
    }
}

/* How many top-level fields numbered `field` p[n] has (stopping past `max`), or -1. */
static long pb_count(const uint8_t *p, size_t n, uint32_t field, long max)
{
    size_t i = 0;
    long count = 0;
    for (;;) {
        uint64_t fn;
        const uint8_t *v;
        size_t vl;
        int rv = next_field(p, n, &i, &fn, &v, &vl);
        if (rv != 0) {
            return rv < 0 ? -1 : count;
        }
        if (fn == field && ++count > max) {
            return count;
        }
    }
}

static bool subscribed(const struct ads_type_state *ts, const char *name)
{
    const char *key = name;
    return ts->wildcard ||
           bsearch(&key, ts->names, ts->n_names, sizeof(*ts->names), cmp_str) != NULL;
}

static bool too_long(const char *s)
{
    return s != NULL && strnlen(s, ADS_MAX_STRING + 1) > ADS_MAX_STRING;
}

enum ads_resp ads_state_on_response(struct ads_state *st, const uint8_t *msg, size_t len, int *type,
                                    struct err *err)
{
    *type = -1;
    /* Counted before unpacking: a 16 MiB message of empty resources would otherwise cost a
     * few hundred MiB of unpacked Anys. */
    if (pb_count(msg, len, 2, ADS_MAX_RESOURCES) > ADS_MAX_RESOURCES) {
        err_set(err, "resources", "more than %u resources", ADS_MAX_RESOURCES);
        return ADS_RESP_BAD;
    }
    PbResponse *r = (PbResponse *)protobuf_c_message_unpack(
        &envoy__service__discovery__v3__discovery_response__descriptor, NULL, len, msg);
    if (r == NULL) {
        err_set(err, NULL, "a message that is not a DiscoveryResponse");
        return ADS_RESP_BAD;
    }
    enum ads_resp out = ADS_RESP_BAD;
    struct ads_resource *res = NULL;
    char **names = NULL;
    size_t n_res = 0;
    if (r->n_resources > ADS_MAX_RESOURCES) {
        err_set(err, "resources", "%zu resources (at most %u)", r->n_resources, ADS_MAX_RESOURCES);
        goto done;
    }
    if (too_long(r->version_info) || too_long(r->nonce) || too_long(r->type_url)) {
        err_set(err, NULL, "version_info, nonce or type_url longer than %u bytes", ADS_MAX_STRING);
        goto done;
    }
    const char *url = r->type_url != NULL ? r->type_url : "";
    struct ads_type_state *ts = NULL;
    for (uint32_t i = 0; i < st->n_types; i++) {
        if (strcmp(st->types[i].type->type_url, url) == 0) {
            ts = &st->types[i];
            *type = (int)i;
        }
    }
    if (ts == NULL) {
        err_set(err, "type_url", "'%s' is not a type this client subscribes to", url);
        out = ADS_RESP_IGNORED;
        goto done;
    }
    set_str(&ts->nonce, r->nonce);
    ts->pending = true; /* every response is answered, ACK or NACK */
    free(ts->error);
    ts->error = NULL;
    out = ADS_RESP_NACK;
    res = xcalloc(r->n_resources > 0 ? r->n_resources : 1, sizeof(*res));
    names = xcalloc(r->n_resources > 0 ? r->n_resources : 1, sizeof(*names));
    for (size_t i = 0; i < r->n_resources; i++) {
        const Google__Protobuf__Any *any = r->resources[i];
        char path[48];
        snprintf(path, sizeof(path), "resources[%zu]", i);
        if (any->type_url == NULL || strcmp(any->type_url, url) != 0) {
            /* Envoy: "... does not match the message-wide type URL ..." */
            err_set(err, path, "type '%s' does not match the response's type_url '%s'",
                    any->type_url != NULL ? any->type_url : "", url);
            goto nack;
        }
        const uint8_t *np = NULL;
        size_t nl = 0;
        int rv = ads_pb_field(any->value.data, any->value.len, 1, &np, &nl);
        if (rv < 0) {
            err_set(err, path, "does not decode as %s", url);
            goto nack;
        }
        if (rv > 0 || nl == 0 || nl > ADS_MAX_STRING || memchr(np, 0, nl) != NULL) {
            err_set(err, path, "%s", rv > 0 || nl == 0 ? "name: required" : "name: invalid");
            goto nack;
        }
        names[i] = xmalloc(nl + 1);
        memcpy(names[i], np, nl);
        names[i][nl] = '\0';
        if (!subscribed(ts, names[i])) {
            continue; /* not asked for: ignored, as clients do */
        }
        res[n_res].name = names[i];
        res[n_res].any = any;
        res[n_res].index = (uint32_t)i;
        n_res++;
    }
    if ((n_res > 0 || ts->wildcard) &&
        ts->type->apply(ts->type->ud, r->version_info != NULL ? r->version_info : "", res, n_res,
                        err) != 0) {
        goto nack;
    }
    set_str(&ts->version, r->version_info);
    ts->acks++;
    out = ADS_RESP_ACK;
    goto done;
nack:
    ts->nacks++;
    ts->error = xstrdup(err->msg);
done:
    for (size_t i = 0; names != NULL && i < r->n_resources; i++) {
        free(names[i]);
    }
    free(names);
    free(res);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return out;
}

void ads_backoff_init(struct ads_backoff *b, uint64_t base_ms, uint64_t max_ms)
{
    b->base_ms = base_ms > 0 ? base_ms : 1;
    b->max_ms = max_ms >= b->base_ms ? max_ms : b->base_ms;
    b->next_ms = b->base_ms;
}

void ads_backoff_reset(struct ads_backoff *b)
{
    b->next_ms = b->base_ms;
}

uint64_t ads_backoff_next(struct ads_backoff *b, uint64_t rnd)
{
    uint64_t cur = b->next_ms;
    b->next_ms = cur <= b->max_ms / 2 ? cur * 2 : b->max_ms;
    uint64_t d = rnd % cur;
    return d < b->max_ms ? d : b->max_ms;
}
