/* cors: envoy.filters.http.cors (envoy.extensions.filters.http.cors.v3.Cors), with its policy
 * from typed_per_filter_config (envoy.extensions.filters.http.cors.v3.CorsPolicy) on the route
 * and the virtual host, field by field: the route's value of a field wins, else the virtual
 * host's (Envoy's CorsFilter with getAllPerFilterConfig). When neither has one, the deprecated
 * `cors` of the route's action and of the virtual host are taken instead, the same way
 * (cors_route_policy_new, called by build.c). With no policy, or for a request without a route
 * or to a direct_response route, the filter does nothing.
 *
 *   request with a non-empty Origin, policy enabled (filter_enabled, default 100%) or in shadow
 *   mode (shadow_enabled): origin_valid / origin_invalid counted (an origin is allowed when
 *   one allow_origin_string_match matcher matches it or "*");
 *     shadow only: nothing else;
 *     OPTIONS with access-control-request-method (a preflight): answered here with 200 and
 *       access-control-allow-origin (an allowed origin), -allow-credentials, -allow-methods,
 *       -allow-headers ("*" echoes the request's), -max-age, -allow-private-network, and what
 *       an actual response gets (Envoy's answer passes its own encodeHeaders too); a
 *       preflight from an origin that is not allowed goes upstream instead while
 *       forward_not_matching_preflights is true (the default);
 *     any other request from an allowed origin: the response gets access-control-allow-origin,
 *       -allow-credentials and -expose-headers.
 * Stats http.<prefix>.cors.origin_valid / origin_invalid. Per-stream state: what the response
 * needs. runtime_key is accepted: remora has no runtime layer, so default_value applies. */
#include <string.h>

#include "filters/cors/cors.h"

#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/http/cors/v3/cors.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/filter_chain.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"
#include "proxy/net/tls_verify.h"

#define PbCorsPolicy Envoy__Extensions__Filters__Http__Cors__V3__CorsPolicy
#define PbRouteCorsPolicy Envoy__Config__Route__V3__CorsPolicy
#define PbRuntimeFractionalPercent Envoy__Config__Core__V3__RuntimeFractionalPercent

/* A tri-state BoolValue: unset lets a less specific policy decide. */
enum cors_flag {
    CORS_UNSET,
    CORS_FALSE,
    CORS_TRUE,
};

struct cors_policy {
    const struct str_match *origins; /* allow_origin_string_match */
    uint32_t n_origins;
    struct str allow_methods, allow_headers, expose_headers, max_age; /* empty: unset */
    enum cors_flag allow_credentials, allow_pna, forward_not_matching;
    bool has_enabled, has_shadow;
    struct filter_percent enabled, shadow;
};

/* The chain entry's config (the Cors message has no fields): the stats. */
struct cors_cfg {
    uint32_t st_valid, st_invalid;
};

struct cors_state {
    const struct cors_policy *p[2]; /* route's, then virtual host's; NULL-terminated */
    bool is_preflight;              /* the filter answers this request */
    bool is_cors;                   /* enforced (not shadow), with an Origin */
    struct str origin;              /* an allowed origin, else empty */
    struct str req_method;          /* access-control-request-method */
    struct str req_headers;         /* access-control-request-headers */
    bool req_pna;                   /* access-control-request-private-network: true */
};

/* ---- the policy's fields, most specific first (Envoy's CorsFilter accessors) ---- */

static const struct str *first_str(const struct cors_state *st, size_t off)
{
    for (int i = 0; i < 2 && st->p[i] != NULL; i++) {
        const struct str *v = (const struct str *)((const char *)st->p[i] + off);
        if (v->len > 0) {
            return v;
        }
    }
    return NULL;
}

static bool first_flag(const struct cors_state *st, size_t off, bool dflt)
{
    for (int i = 0; i < 2 && st->p[i] != NULL; i++) {
        enum cors_flag v = *(const enum cors_flag *)((const char *)st->p[i] + off);
        if (v != CORS_UNSET) {
            return v == CORS_TRUE;
        }
    }
    return dflt;
}

#define FIRST_STR(st, field) first_str(st, offsetof(struct cors_policy, field))
#define FIRST_FLAG(st, field, dflt) first_flag(st, offsetof(struct cors_policy, field), dflt)

static bool origin_allowed(const struct cors_state *st, struct str origin)
{
    for (int i = 0; i < 2 && st->p[i] != NULL; i++) {
        const struct cors_policy *p = st->p[i];
        if (p->n_origins == 0) {
            continue;
        }
        for (uint32_t k = 0; k < p->n_origins; k++) {
            if (str_match_test(&p->origins[k], STR_LIT("*")) ||
                str_match_test(&p->origins[k], origin)) {
                return true;
            }
        }
        return false; /* the most specific non-empty list decides */
    }
    return false;
}

static const struct cors_policy *policy_at(const void *const *cfgs, uint32_t i)
{
    return cfgs != NULL ? cfgs[i] : NULL;
}

static enum filter_status cors_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    struct stream *s = f->s;
    struct cors_state *st = f->state;
    if (s->route == NULL || s->route->action != RA_CLUSTER) {
        return FILTER_CONTINUE; /* no route, or a direct response: bypassed (Envoy) */
    }
    int n = 0;
    const struct cors_policy *rp = policy_at(s->route->filter_cfgs, f->index);
    const struct cors_policy *vp =
        s->vhost != NULL ? policy_at(s->vhost->filter_cfgs, f->index) : NULL;
    if (rp != NULL) {
        st->p[n++] = rp;
    }
    if (vp != NULL) {
        st->p[n++] = vp;
    }
    if (n == 0) {
        /* no typed policy: the deprecated route and virtual host `cors` fields */
        if (s->route->cors_policy != NULL) {
            st->p[n++] = s->route->cors_policy;
        }
        if (s->vhost != NULL && s->vhost->cors_policy != NULL) {
            st->p[n++] = s->vhost->cors_policy;
        }
        if (n == 0) {
            return FILTER_CONTINUE;
        }
    }
    const struct cors_policy *top = st->p[0];
    bool enabled = !top->has_enabled || filter_percent_hit(top->enabled, filter_rand(f));
    bool shadow = top->has_shadow && filter_percent_hit(top->shadow, filter_rand(f));
    if (!enabled && !shadow) {
        return FILTER_CONTINUE;
    }
    const struct header *oh = headers_get(h, STR_LIT("origin"));
    const struct str *origin = oh != NULL ? &oh->value : NULL;
    if (origin == NULL || origin->len == 0) {
        return FILTER_CONTINUE;
    }
    const struct cors_cfg *c = s->hcm->filters[f->index].cfg;
    bool allowed = origin_allowed(st, *origin);
    filter_stat_add(f, allowed ? c->st_valid : c->st_invalid, 1);
    if (allowed) {
        st->origin = arena_strdup(&s->arena, *origin);
    }
    if (!enabled) {
        return FILTER_CONTINUE; /* shadow mode: counted, not enforced */
    }
    st->is_cors = true;
    const struct header *mh = headers_get(h, STR_LIT("access-control-request-method"));
    if (!str_eq_lit(s->method, "OPTIONS") || mh == NULL || mh->value.len == 0) {
        return FILTER_CONTINUE;
    }
    if (!allowed && FIRST_FLAG(st, forward_not_matching, true)) {
        return FILTER_CONTINUE;
    }
    const struct header *rh = headers_get(h, STR_LIT("access-control-request-headers"));
    const struct header *pna = headers_get(h, STR_LIT("access-control-request-private-network"));
    st->req_method = arena_strdup(&s->arena, mh->value);
    st->req_headers = rh != NULL ? arena_strdup(&s->arena, rh->value) : STR_NULL;
    st->req_pna = pna != NULL && str_eq_lit(pna->value, "true");
    st->is_preflight = true;
    filter_local_reply(f, 200, "", 0);
    return FILTER_STOP;
}

static void set_nonempty(struct headers *h, struct str name, struct str v)
{
    if (v.len > 0) {
        headers_set(h, name, v);
    }
}

static enum filter_status cors_response_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct cors_state *st = f->state;
    if (!st->is_cors) {
        return FILTER_CONTINUE;
    }
    bool creds = FIRST_FLAG(st, allow_credentials, false);
    if (st->is_preflight) {
        set_nonempty(h, STR_LIT("access-control-allow-origin"), st->origin);
        if (creds) {
            headers_set(h, STR_LIT("access-control-allow-credentials"), STR_LIT("true"));
        }
        const struct str *m = FIRST_STR(st, allow_methods);
        if (m != NULL) {
            set_nonempty(h, STR_LIT("access-control-allow-methods"),
                         str_eq_lit(*m, "*") ? st->req_method : *m);
        }
        const struct str *ah = FIRST_STR(st, allow_headers);
        if (ah != NULL) {
            set_nonempty(h, STR_LIT("access-control-allow-headers"),
                         str_eq_lit(*ah, "*") ? st->req_headers : *ah);
        }
        const struct str *age = FIRST_STR(st, max_age);
        if (age != NULL) {
            headers_set(h, STR_LIT("access-control-max-age"), *age);
        }
        if (st->req_pna && FIRST_FLAG(st, allow_pna, false)) {
            headers_set(h, STR_LIT("access-control-allow-private-network"), STR_LIT("true"));
        }
        /* Envoy's preflight answer then passes every encoder filter, this one's included: it
         * gets what an actual response gets too (expose-headers) */
    }
    if (st->origin.len == 0) {
        return FILTER_CONTINUE; /* the origin is not allowed: the response is left as it is */
    }
    headers_set(h, STR_LIT("access-control-allow-origin"), st->origin);
    if (creds) {
        headers_set(h, STR_LIT("access-control-allow-credentials"), STR_LIT("true"));
    }
    const struct str *ex = FIRST_STR(st, expose_headers);
    if (ex != NULL) {
        headers_set(h, STR_LIT("access-control-expose-headers"), *ex);
    }
    return FILTER_CONTINUE;
}

/* ---- config ---- */

static int cors_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    (void)pb;
    struct cors_cfg *c = ARENA_NEW(fb->a, struct cors_cfg);
    const char *tag = "envoy_http_conn_manager_prefix";
    c->st_valid = filter_build_stat(fb, "http", tag, fb->stat_prefix, "cors.origin_valid", false);
    c->st_invalid =
        filter_build_stat(fb, "http", tag, fb->stat_prefix, "cors.origin_invalid", false);
    *out = c;
    return 0;
}

/* A header value from config: no control characters (it goes out as it is). */
static int value_field(struct filter_build *fb, const char *field, const char *v, struct str *out)
{
    *out = STR_NULL;
    if (v == NULL || v[0] == '\0') {
        return 0;
    }
    for (const char *q = v; *q != '\0'; q++) {
        unsigned char ch = (unsigned char)*q;
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
            return filter_build_fail(fb, field, "invalid header value (control character)");
        }
    }
    *out = arena_strdup(fb->a, str_from_c(v));
    return 0;
}

static enum cors_flag flag_of(const Google__Protobuf__BoolValue *b)
{
    return b == NULL ? CORS_UNSET : b->value ? CORS_TRUE : CORS_FALSE;
}

static int runtime_percent(struct filter_build *fb, const char *field,
                           const PbRuntimeFractionalPercent *rp, bool *has,
                           struct filter_percent *out)
{
    *has = rp != NULL;
    if (rp == NULL) {
        return 0;
    }
    size_t mark = filter_build_at(fb, ".%s", field);
    struct filter_percent zero = {0, 100};
    int rc = rp->default_value == NULL
                 ? filter_build_fail(fb, "default_value", "required")
                 : filter_build_percent(fb, "default_value", rp->default_value, zero, out);
    filter_build_up(fb, mark);
    return rc;
}

/* The fields both CorsPolicy messages share (same names, different numbers). */
struct cors_fields {
    Envoy__Type__Matcher__V3__StringMatcher *const *origins;
    size_t n_origins;
    const char *allow_methods, *allow_headers, *expose_headers, *max_age;
    const Google__Protobuf__BoolValue *allow_credentials, *allow_pna, *forward_not_matching;
    const PbRuntimeFractionalPercent *filter_enabled, *shadow_enabled;
};

static int policy_build(struct filter_build *fb, const struct cors_fields *m, const void **out)
{
    struct cors_policy *p = ARENA_NEW(fb->a, struct cors_policy);
    struct str_match *o = ARENA_NEW_N(fb->a, struct str_match, m->n_origins ? m->n_origins : 1);
    for (size_t i = 0; i < m->n_origins; i++) {
        size_t mark = filter_build_at(fb, ".allow_origin_string_match[%zu]", i);
        int rc = build_string_match(fb->c, fb->path, m->origins[i], &o[i], fb->err);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    p->origins = o;
    p->n_origins = (uint32_t)m->n_origins;
    int rc;
    if ((rc = value_field(fb, "allow_methods", m->allow_methods, &p->allow_methods)) != 0 ||
        (rc = value_field(fb, "allow_headers", m->allow_headers, &p->allow_headers)) != 0 ||
        (rc = value_field(fb, "expose_headers", m->expose_headers, &p->expose_headers)) != 0 ||
        (rc = value_field(fb, "max_age", m->max_age, &p->max_age)) != 0 ||
        (rc = runtime_percent(fb, "filter_enabled", m->filter_enabled, &p->has_enabled,
                              &p->enabled)) != 0 ||
        (rc = runtime_percent(fb, "shadow_enabled", m->shadow_enabled, &p->has_shadow,
                              &p->shadow)) != 0) {
        return rc;
    }
    p->allow_credentials = flag_of(m->allow_credentials);
    p->allow_pna = flag_of(m->allow_pna);
    p->forward_not_matching = flag_of(m->forward_not_matching);
    *out = p;
    return 0;
}

/* The fields the filter's CorsPolicy and the route's deprecated one share, by name (two
 * generated types). */
#define CORS_FIELDS_OF(m)                                                                          \
    {                                                                                              \
        .origins = (m)->allow_origin_string_match, .n_origins = (m)->n_allow_origin_string_match,  \
        .allow_methods = (m)->allow_methods, .allow_headers = (m)->allow_headers,                  \
        .expose_headers = (m)->expose_headers, .max_age = (m)->max_age,                            \
        .allow_credentials = (m)->allow_credentials,                                               \
        .allow_pna = (m)->allow_private_network_access,                                            \
        .forward_not_matching = (m)->forward_not_matching_preflights,                              \
        .filter_enabled = (m)->filter_enabled, .shadow_enabled = (m)->shadow_enabled,              \
    }

static int cors_policy_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbCorsPolicy *m = (const PbCorsPolicy *)pb;
    struct cors_fields f = CORS_FIELDS_OF(m);
    return policy_build(fb, &f, out);
}

int cors_route_policy_new(struct config *c, const char *path, const PbRouteCorsPolicy *m,
                          const void **out, struct err *err)
{
    struct filter_build fb;
    memset(&fb, 0, sizeof(fb));
    fb.c = c;
    fb.a = &c->arena;
    fb.err = err;
    fb.is_per_route = true;
    fb.plen = strlen(path);
    if (fb.plen >= sizeof(fb.path)) {
        fb.plen = sizeof(fb.path) - 1;
    }
    memcpy(fb.path, path, fb.plen);
    fb.path[fb.plen] = '\0';
    struct cors_fields f = CORS_FIELDS_OF(m);
    return policy_build(&fb, &f, out);
}

const struct filter_ops cors_filter_ops = {
    .name = "envoy.filters.http.cors",
    .config_type = &envoy__extensions__filters__http__cors__v3__cors__descriptor,
    .route_config_type = &envoy__extensions__filters__http__cors__v3__cors_policy__descriptor,
    .state_size = sizeof(struct cors_state),
    .config_new = cors_config_new,
    .route_config_new = cors_policy_new,
    .on_request_headers = cors_request_headers,
    .on_response_headers = cors_response_headers,
};
