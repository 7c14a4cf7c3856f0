/* rbac: envoy.filters.http.rbac (envoy.extensions.filters.http.rbac.v3.RBAC). Judges each
 * request head with the compiled policies of rbac_policy.h: `shadow_rules` first (counted in
 * rbac.<shadow_rules_stat_prefix>shadow_allowed / shadow_denied, never enforced), then `rules`
 * (rbac.<rules_stat_prefix>allowed / denied); a denied request is answered 403 "RBAC: access
 * denied" (Envoy's response code details rbac_access_denied_matched_policy[<policy>|none] go to
 * the debug log: remora has no %RESPONSE_CODE_DETAILS% yet). Stats live under
 * http.<stat_prefix>.rbac. Without `rules` every request passes (Envoy's behaviour).
 *
 * typed_per_filter_config takes RBACPerRoute: its `rbac` replaces the filter's rules for the
 * route (counted in the filter's stats), and an RBACPerRoute without `rbac` turns the filter off
 * for the route, as Envoy.
 *
 * Per connection (filter_conn_state) the filter keeps the peer certificate's subject (computed
 * once, when a principal_name needs it) and the local address when the listener did not learn
 * it (destination_ip/destination_port rules). Evaluation itself never allocates. */
#include <stdio.h>
#include <string.h>

#include "envoy/extensions/filters/http/rbac/v3/rbac.pb-c.h"
#include "filters/rbac/rbac_policy.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/http/downstream.h"
#include "proxy/http/filter.h"
#include "proxy/http/router.h"
#include "proxy/http/stream.h"
#include "proxy/net/accepted.h"
#include "proxy/net/tls.h"

#define PbHttpRbac Envoy__Extensions__Filters__Http__Rbac__V3__RBAC
#define PbHttpRbacPerRoute Envoy__Extensions__Filters__Http__Rbac__V3__RBACPerRoute

struct rbac_cfg {
    const struct rbac_engine *rules;  /* NULL: no enforcement */
    const struct rbac_engine *shadow; /* NULL: none */
    bool disabled;                    /* an RBACPerRoute without rbac */
    uint32_t st_allowed, st_denied, st_shadow_allowed, st_shadow_denied;
};

/* Per connection. */
struct rbac_conn {
    struct rbac_subject subject;
    bool local_done;
    union sockaddr_ip local;
};

/* The connection-level inputs of `d`, filling the per-connection cache `cs` as needed. */
static void conn_input(const struct downstream *d, struct rbac_conn *cs, bool needs_local,
                       struct rbac_input *in)
{
    in->direct_ip = str_from_c(d->direct_ip);
    in->tls = d->tls != NULL && d->tls->handshake_done ? d->tls : NULL;
    in->subject = &cs->subject;
    if (in->tls != NULL) {
        const char *sni = SSL_get_servername(in->tls->ssl, TLSEXT_NAMETYPE_host_name);
        in->sni = sni != NULL ? str_from_c(sni) : (struct str){"", 0};
    }
    if (d->local.sa.sa_family != AF_UNSPEC) {
        in->local = &d->local.sa;
    } else if (needs_local) {
        if (!cs->local_done) {
            cs->local_done = true;
            struct sockaddr_storage ss;
            if (accepted_local_addr(d->fd, d->chain->listener->original_dst, &ss)) {
                sockaddr_ip_set(&cs->local, (const struct sockaddr *)&ss);
            }
        }
        in->local = cs->local.sa.sa_family != AF_UNSPEC ? &cs->local.sa : NULL;
    }
}

static enum filter_status rbac_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct rbac_cfg *c = f->cfg;
    if (c->disabled || (c->rules == NULL && c->shadow == NULL)) {
        return FILTER_CONTINUE;
    }
    struct stream *s = f->s;
    struct rbac_conn *cs = filter_conn_state(f, &rbac_filter_ops, sizeof(struct rbac_conn));
    struct route_req rq = {.method = s->method,
                           .path = s->path,
                           .authority = s->authority,
                           .scheme = STR_LIT("http"),
                           .headers = h,
                           .grpc = s->is_grpc,
                           .source_ip = s->client_ip,
                           .arena = &s->arena};
    struct rbac_input in = {.http = &rq, .remote_ip = s->client_ip};
    bool needs_local = (c->rules != NULL && c->rules->needs_local) ||
                       (c->shadow != NULL && c->shadow->needs_local);
    conn_input(s->dc, cs, needs_local, &in);
    struct str policy;
    if (c->shadow != NULL) {
        bool ok = rbac_policy_eval(c->shadow, &in, &policy);
        filter_stat_add(f, ok ? c->st_shadow_allowed : c->st_shadow_denied, 1);
    }
    if (c->rules == NULL) {
        return FILTER_CONTINUE;
    }
    if (rbac_policy_eval(c->rules, &in, &policy)) {
        filter_stat_add(f, c->st_allowed, 1);
        return FILTER_CONTINUE;
    }
    filter_stat_add(f, c->st_denied, 1);
    LOG_D("rbac: %.*s %.*s: rbac_access_denied_matched_policy[%.*s]", STR_FMT(s->method),
          STR_FMT(s->path), policy.len > 0 ? (int)policy.len : 4,
          policy.len > 0 ? policy.p : "none");
    /* Envoy's details; composed only on this (denied) path, in the stream's arena */
    struct buf d;
    buf_init(&d);
    buf_printf(&d, "rbac_access_denied_matched_policy[%.*s]", policy.len > 0 ? (int)policy.len : 4,
               policy.len > 0 ? policy.p : "none");
    struct str ds = arena_strdup(&s->arena, (struct str){(const char *)buf_head(&d), buf_len(&d)});
    buf_deinit(&d);
    stream_set_details(s, ds.p);
    filter_local_reply(f, 403, "RBAC: access denied", 0);
    return FILTER_STOP;
}

/* rules and shadow_rules of `m` into `c`. */
static int build_engines(struct filter_build *fb, const PbHttpRbac *m, struct rbac_cfg *c)
{
    if (m->rules != NULL) {
        size_t mark = filter_build_at(fb, ".rules");
        int rc = rbac_policy_build(fb, m->rules, false, &c->rules);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    if (m->shadow_rules != NULL) {
        size_t mark = filter_build_at(fb, ".shadow_rules");
        int rc = rbac_policy_build(fb, m->shadow_rules, false, &c->shadow);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static uint32_t rbac_stat(struct filter_build *fb, const char *prefix, const char *name)
{
    char full[256];
    snprintf(full, sizeof(full), "rbac.%s%s", prefix != NULL ? prefix : "", name);
    return filter_build_stat(fb, "http", "envoy_http_conn_manager_prefix", fb->stat_prefix, full,
                             false);
}

static int rbac_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbHttpRbac *m = (const PbHttpRbac *)pb;
    struct rbac_cfg *c = ARENA_NEW(fb->a, struct rbac_cfg);
    int rc = build_engines(fb, m, c);
    if (rc != 0) {
        return rc;
    }
    c->st_allowed = rbac_stat(fb, m->rules_stat_prefix, "allowed");
    c->st_denied = rbac_stat(fb, m->rules_stat_prefix, "denied");
    c->st_shadow_allowed = rbac_stat(fb, m->shadow_rules_stat_prefix, "shadow_allowed");
    c->st_shadow_denied = rbac_stat(fb, m->shadow_rules_stat_prefix, "shadow_denied");
    *out = c;
    return 0;
}

static int rbac_route_config_new(struct filter_build *fb, const ProtobufCMessage *pb,
                                 const void **out)
{
    const PbHttpRbacPerRoute *m = (const PbHttpRbacPerRoute *)pb;
    const struct rbac_cfg *chain = fb->chain_cfg;
    struct rbac_cfg *c = ARENA_NEW(fb->a, struct rbac_cfg);
    if (chain != NULL) {
        /* Envoy counts a route's decisions in the filter's own stats */
        c->st_allowed = chain->st_allowed;
        c->st_denied = chain->st_denied;
        c->st_shadow_allowed = chain->st_shadow_allowed;
        c->st_shadow_denied = chain->st_shadow_denied;
    }
    if (m->rbac == NULL) {
        c->disabled = true;
        *out = c;
        return 0;
    }
    size_t mark = filter_build_at(fb, ".rbac");
    int rc = 0;
    if (m->rbac->rules_stat_prefix != NULL && m->rbac->rules_stat_prefix[0] != '\0') {
        rc = filter_build_unsupported(fb, "rules_stat_prefix");
    } else if (m->rbac->shadow_rules_stat_prefix != NULL &&
               m->rbac->shadow_rules_stat_prefix[0] != '\0') {
        rc = filter_build_unsupported(fb, "shadow_rules_stat_prefix");
    } else {
        rc = build_engines(fb, m->rbac, c);
    }
    filter_build_up(fb, mark);
    if (rc != 0) {
        return rc;
    }
    *out = c;
    return 0;
}

const struct filter_ops rbac_filter_ops = {
    .name = "envoy.filters.http.rbac",
    .config_type = &envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
    .route_config_type = &envoy__extensions__filters__http__rbac__v3__rbacper_route__descriptor,
    .config_new = rbac_config_new,
    .route_config_new = rbac_route_config_new,
    .on_request_headers = rbac_request_headers,
};
