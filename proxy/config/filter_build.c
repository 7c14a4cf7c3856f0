/* filter_build: compiles HTTP filter configs into the snapshot (see filter_build.h) and
 * implements the config-time helpers of the filter contract (filter.h). It runs inside
 * build.c's connection-manager pass, on the main thread, and allocates only from the snapshot
 * arena (plus the decoded typed configs, freed before returning). Header matchers and header
 * additions go through build.c's own validation (build_header_matcher, build_header_add), so a
 * filter's `headers` rule means exactly what a route's does. */
#include "proxy/config/filter_build.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/type/v3/percent.pb-c.h"
#include "filters/registry.h"
#include "google/protobuf/duration.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/duration.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/http/filter.h"
#include "proxy/http/filter_chain.h"

#define PbHttpFilter Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter
#define HF_TYPED_CONFIG                                                                            \
    ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG
#define UNSUPPORTED "not supported by remora yet"

static void fb_init(struct filter_build *fb, struct config *c, const char *path, struct err *err,
                    struct str stat_prefix, bool per_route)
{
    memset(fb, 0, sizeof(*fb));
    fb->c = c;
    fb->a = &c->arena;
    fb->err = err;
    fb->stat_prefix = stat_prefix;
    fb->is_per_route = per_route;
    snprintf(fb->path, sizeof(fb->path), "%s", path);
    fb->plen = strlen(fb->path);
}

/* ---- helpers of the contract (filter.h) ---- */

size_t filter_build_at(struct filter_build *fb, const char *fmt, ...)
{
    size_t old = fb->plen;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(fb->path + fb->plen, sizeof(fb->path) - fb->plen, fmt, ap);
    va_end(ap);
    if (n > 0) {
        fb->plen += (size_t)n;
        if (fb->plen >= sizeof(fb->path)) {
            fb->plen = sizeof(fb->path) - 1;
        }
    }
    return old;
}

void filter_build_up(struct filter_build *fb, size_t mark)
{
    fb->plen = mark;
    fb->path[mark] = '\0';
}

int filter_build_fail(struct filter_build *fb, const char *field, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    size_t mark = fb->plen;
    if (field != NULL) {
        filter_build_at(fb, field[0] == '[' ? "%s" : ".%s", field);
    }
    int rc = err_set(fb->err, fb->path, "%s", msg);
    filter_build_up(fb, mark);
    return rc;
}

int filter_build_unsupported(struct filter_build *fb, const char *field)
{
    return filter_build_fail(fb, field, UNSUPPORTED);
}

int filter_build_duration_ms(struct filter_build *fb, const char *field,
                             const struct Google__Protobuf__Duration *d, bool positive,
                             uint64_t *out_ms)
{
    if (d == NULL) {
        if (positive) {
            return filter_build_fail(fb, field, "required");
        }
        *out_ms = 0;
        return 0;
    }
    const char *why = duration_ms(d, positive, out_ms);
    return why != NULL ? filter_build_fail(fb, field, "%s", why) : 0;
}

int filter_build_percent(struct filter_build *fb, const char *field,
                         const struct Envoy__Type__V3__FractionalPercent *p,
                         struct filter_percent dflt, struct filter_percent *out)
{
    if (p == NULL) {
        *out = dflt;
        return 0;
    }
    switch (p->denominator) {
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED:
        out->denominator = 100;
        break;
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND:
        out->denominator = 10000;
        break;
    case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__MILLION:
        out->denominator = 1000000;
        break;
    default: {
        size_t mark = filter_build_at(fb, ".%s", field);
        int rc =
            filter_build_fail(fb, "denominator", "unknown denominator %d", (int)p->denominator);
        filter_build_up(fb, mark);
        return rc;
    }
    }
    /* Envoy caps a numerator above the denominator at 100%. */
    out->numerator = p->numerator;
    return 0;
}

int filter_build_header_matchers(struct filter_build *fb, const char *field,
                                 struct Envoy__Config__Route__V3__HeaderMatcher *const *v, size_t n,
                                 const struct header_matcher **out, uint32_t *n_out)
{
    struct header_matcher *hms = ARENA_NEW_N(fb->a, struct header_matcher, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        size_t mark = filter_build_at(fb, ".%s[%zu]", field, i);
        int rc = build_header_matcher(fb->c, fb->path, v[i], &hms[i], fb->err);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = hms;
    *n_out = (uint32_t)n;
    return 0;
}

int filter_build_header_add(struct filter_build *fb,
                            const struct Envoy__Config__Core__V3__HeaderValueOption *o,
                            struct header_add *out)
{
    return build_header_add(&fb->c->arena, fb->path, o, out, fb->err);
}

int filter_build_header_adds(struct filter_build *fb, const char *field,
                             struct Envoy__Config__Core__V3__HeaderValueOption *const *v, size_t n,
                             const struct header_add **out, uint32_t *n_out)
{
    struct header_add *adds = ARENA_NEW_N(fb->a, struct header_add, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        size_t mark = filter_build_at(fb, ".%s[%zu]", field, i);
        int rc = filter_build_header_add(fb, v[i], &adds[i]);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = adds;
    *n_out = (uint32_t)n;
    return 0;
}

static bool same_cstr(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

uint32_t filter_build_stat(struct filter_build *fb, const char *scope, const char *tag_name,
                           struct str tag, const char *stat, bool is_gauge)
{
    struct config *c = fb->c;
    for (uint32_t i = 0; i < c->n_stat_defs; i++) {
        const struct stat_def *d = &c->stat_defs[i];
        if (strcmp(d->scope, scope) == 0 && str_eq(d->tag, tag) && strcmp(d->stat, stat) == 0) {
            return i;
        }
    }
    uint32_t n = c->n_stat_defs;
    struct stat_def *v = (struct stat_def *)c->stat_defs;
    /* The array's capacity is the next power of two: grow (into the arena) when full. */
    if ((n & (n - 1)) == 0) {
        v = ARENA_NEW_N(fb->a, struct stat_def, n ? n * 2 : 1);
        if (n > 0) {
            memcpy(v, c->stat_defs, n * sizeof(*v));
        }
    }
    struct stat_def *d = &v[n];
    d->scope = arena_cstrdup(fb->a, scope);
    d->tag_name =
        tag_name != NULL && !same_cstr(tag_name, "") ? arena_cstrdup(fb->a, tag_name) : NULL;
    d->tag = arena_strdup(fb->a, tag);
    d->stat = arena_cstrdup(fb->a, stat);
    d->is_gauge = is_gauge;
    c->stat_defs = v;
    c->n_stat_defs = n + 1;
    return n;
}

/* ---- http_filters and typed_per_filter_config ---- */

/* Runs `ops`'s config_new (or route_config_new) on the Any `any` (NULL: an empty message of
 * `type`), under fb->path. */
static int run_config(struct filter_build *fb, const struct filter_ops *ops,
                      const ProtobufCMessageDescriptor *type, const Google__Protobuf__Any *any,
                      const void **cfg)
{
    ProtobufCMessage *m = NULL;
    if (any != NULL) {
        if (pbjson_any_unpack(any, pbtypes_find, fb->path, &m, fb->err) != 0) {
            return -EINVAL;
        }
        if (m->descriptor != type) {
            /* pbjson resolved a type, but not the one this filter takes */
            int rc = filter_build_fail(fb, NULL, "%s takes %s, not %s", ops->name, type->name,
                                       m->descriptor->name);
            protobuf_c_message_free_unpacked(m, NULL);
            return rc;
        }
    } else {
        m = protobuf_c_message_unpack(type, NULL, 0, NULL);
        if (m == NULL) {
            return filter_build_fail(fb, NULL, "cannot make an empty %s", type->name);
        }
    }
    int (*fn)(struct filter_build *, const ProtobufCMessage *, const void **) =
        fb->is_per_route && ops->route_config_new != NULL ? ops->route_config_new : ops->config_new;
    int rc = fn(fb, m, cfg);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0 && !err_is_set(fb->err)) {
        rc = filter_build_fail(fb, NULL, "invalid %s config", ops->name);
    }
    return rc;
}

int filter_build_http_filter(struct config *c, const char *path, const PbHttpFilter *hf,
                             struct str stat_prefix, const struct filter_cfg *prev, uint32_t n_prev,
                             struct filter_cfg *out, struct err *err)
{
    struct filter_build fb;
    fb_init(&fb, c, path, err, stat_prefix, false);
    bool typed = hf->config_type_case == HF_TYPED_CONFIG && hf->typed_config != NULL;
    size_t tlen = 0;
    const char *type = typed ? pbjson_type_name(hf->typed_config->type_url, &tlen) : "";
    const struct filter_ops *ops = filter_registry_find(type, tlen, typed ? NULL : hf->name);
    if (ops == NULL) {
        /* Rejected even when is_optional: remora never drops configuration silently. */
        return filter_build_fail(&fb, NULL, "HTTP filter '%s'%s%.*s%s is " UNSUPPORTED,
                                 hf->name ? hf->name : "", tlen ? " (" : "", (int)tlen, type,
                                 tlen ? ")" : "");
    }
    if (hf->name == NULL || hf->name[0] == '\0') {
        return filter_build_fail(&fb, "name", "required");
    }
    for (uint32_t i = 0; i < n_prev; i++) {
        if (str_eq(prev[i].name, str_from_c(hf->name))) {
            return filter_build_fail(&fb, "name",
                                     "duplicate HTTP filter name '%s' (typed_per_filter_config "
                                     "finds filters by name)",
                                     hf->name);
        }
    }
    if (hf->disabled) {
        return filter_build_unsupported(&fb, "disabled");
    }
    const void *cfg = NULL;
    size_t mark = filter_build_at(&fb, ".typed_config");
    int rc = run_config(&fb, ops, ops->config_type, typed ? hf->typed_config : NULL, &cfg);
    filter_build_up(&fb, mark);
    if (rc != 0) {
        return rc;
    }
    out->ops = ops;
    out->cfg = cfg;
    out->name = arena_strdup(&c->arena, str_from_c(hf->name));
    out->slot = c->n_filter_slots++;
    return 0;
}

int filter_build_per_filter_configs(struct config *c, const char *path,
                                    ProtobufCMessage *const *entries, size_t n,
                                    const struct hcm_cfg *hcm, struct str stat_prefix,
                                    const void *const **out, struct err *err)
{
    *out = NULL;
    if (n == 0) {
        return 0;
    }
    struct filter_build fb;
    fb_init(&fb, c, path, err, stat_prefix, true);
    uint32_t n_filters = hcm != NULL ? hcm->n_filters : 0;
    const void **v = ARENA_NEW_N(&c->arena, const void *, n_filters ? n_filters : 1);
    for (size_t e = 0; e < n; e++) {
        const ProtobufCMessage *m = entries[e];
        const ProtobufCFieldDescriptor *kf =
            protobuf_c_message_descriptor_get_field(m->descriptor, 1);
        const ProtobufCFieldDescriptor *vf =
            protobuf_c_message_descriptor_get_field(m->descriptor, 2);
        const char *key = *(char *const *)((const char *)m + kf->offset);
        const Google__Protobuf__Any *any =
            *(Google__Protobuf__Any *const *)((const char *)m + vf->offset);
        size_t mark = filter_build_at(&fb, ".%s", key ? key : "");
        int rc = 0;
        uint32_t i = 0;
        while (i < n_filters && !str_eq(hcm->filters[i].name, str_from_c(key ? key : ""))) {
            i++;
        }
        if (i == n_filters) {
            rc = filter_build_fail(&fb, NULL,
                                   "no HTTP filter named '%s' in this connection manager's "
                                   "http_filters",
                                   key ? key : "");
        } else if (hcm->filters[i].ops->route_config_type == NULL) {
            rc = filter_build_fail(&fb, NULL, "typed_per_filter_config for %s is " UNSUPPORTED,
                                   hcm->filters[i].ops->name);
        } else if (any == NULL) {
            rc = filter_build_fail(&fb, NULL, "a typed config is required");
        } else {
            fb.chain_cfg = hcm->filters[i].cfg;
            rc = run_config(&fb, hcm->filters[i].ops, hcm->filters[i].ops->route_config_type, any,
                            &v[i]);
        }
        filter_build_up(&fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = v;
    return 0;
}
