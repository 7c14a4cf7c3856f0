/* rbac_network: the network RBAC filter (see rbac_network.h). */
#include "filters/rbac/rbac_network.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "filters/rbac/rbac_policy.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/log.h"
#include "proxy/http/filter.h"
#include "proxy/net/tls.h"

#define PbNetRbac Envoy__Extensions__Filters__Network__Rbac__V3__RBAC
#define NET_RBAC_DESC envoy__extensions__filters__network__rbac__v3__rbac__descriptor

bool rbac_network_is(const Google__Protobuf__Any *any)
{
    return any != NULL && pbjson_any_is(any, &NET_RBAC_DESC);
}

/* "<stat_prefix>.rbac.<extra><name>", the prefix joined as Envoy's statPrefixJoin. */
static uint32_t net_stat(struct filter_build *fb, const char *prefix, const char *extra,
                         const char *name)
{
    char scope[256];
    snprintf(scope, sizeof(scope), "%s", prefix);
    size_t n = strlen(scope);
    if (n > 0 && scope[n - 1] == '.') {
        scope[n - 1] = '\0';
    }
    char stat[256];
    snprintf(stat, sizeof(stat), "rbac.%s%s", extra != NULL ? extra : "", name);
    return filter_build_stat(fb, scope, NULL, (struct str){"", 0}, stat, false);
}

static int build(struct filter_build *fb, const PbNetRbac *m, struct rbac_net_cfg *c)
{
    if (m->stat_prefix == NULL || m->stat_prefix[0] == '\0') {
        return filter_build_fail(fb, "stat_prefix", "required");
    }
    if (m->enforcement_type !=
        ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__ONE_TIME_ON_FIRST_BYTE) {
        return m->enforcement_type ==
                       ENVOY__EXTENSIONS__FILTERS__NETWORK__RBAC__V3__RBAC__ENFORCEMENT_TYPE__CONTINUOUS
                   ? filter_build_fail(fb, "enforcement_type",
                                       "CONTINUOUS is not supported by "
                                       "remora yet")
                   : filter_build_fail(fb, "enforcement_type", "unknown value %d",
                                       (int)m->enforcement_type);
    }
    if (m->rules != NULL) {
        size_t mark = filter_build_at(fb, ".rules");
        int rc = rbac_policy_build(fb, m->rules, true, &c->rules);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    if (m->shadow_rules != NULL) {
        size_t mark = filter_build_at(fb, ".shadow_rules");
        int rc = rbac_policy_build(fb, m->shadow_rules, true, &c->shadow);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    c->st_allowed = net_stat(fb, m->stat_prefix, NULL, "allowed");
    c->st_denied = net_stat(fb, m->stat_prefix, NULL, "denied");
    c->st_shadow_allowed =
        net_stat(fb, m->stat_prefix, m->shadow_rules_stat_prefix, "shadow_allowed");
    c->st_shadow_denied =
        net_stat(fb, m->stat_prefix, m->shadow_rules_stat_prefix, "shadow_denied");
    return 0;
}

int rbac_network_build(struct config *c, const char *path, const Google__Protobuf__Any *any,
                       const struct rbac_net_cfg **out, bool *needs_local, struct err *err)
{
    struct filter_build fb;
    memset(&fb, 0, sizeof(fb));
    fb.c = c;
    fb.a = &c->arena;
    fb.err = err;
    snprintf(fb.path, sizeof(fb.path), "%s", path);
    fb.plen = strlen(fb.path);
    ProtobufCMessage *m = NULL;
    if (pbjson_any_unpack(any, pbtypes_find, fb.path, &m, err) != 0) {
        return -EINVAL;
    }
    struct rbac_net_cfg *cfg = ARENA_NEW(&c->arena, struct rbac_net_cfg);
    int rc = build(&fb, (const PbNetRbac *)m, cfg);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0) {
        return rc;
    }
    *needs_local = (cfg->rules != NULL && cfg->rules->needs_local) ||
                   (cfg->shadow != NULL && cfg->shadow->needs_local);
    *out = cfg;
    return 0;
}

bool rbac_network_allow(const struct filter_chain_cfg *fc, stat_t *ext,
                        const struct rbac_net_conn *conn)
{
    struct rbac_subject subject;
    subject.done = false;
    struct rbac_input in = {.direct_ip = conn->direct_ip.len > 0 ? conn->direct_ip : conn->peer_ip,
                            .remote_ip = conn->peer_ip,
                            .sni = conn->sni,
                            .subject = &subject};
    if (conn->local != NULL && conn->local->sa_family != AF_UNSPEC) {
        in.local = conn->local;
    }
    if (conn->tls != NULL && conn->tls->handshake_done) {
        in.tls = conn->tls;
        const char *sni = SSL_get_servername(conn->tls->ssl, TLSEXT_NAMETYPE_host_name);
        if (sni != NULL) {
            in.sni = str_from_c(sni);
        }
    }
    for (uint32_t i = 0; i < fc->n_rbac; i++) {
        const struct rbac_net_cfg *c = fc->rbac[i];
        struct str policy;
        if (c->shadow != NULL) {
            bool ok = rbac_policy_eval(c->shadow, &in, &policy);
            stat_add(&ext[ok ? c->st_shadow_allowed : c->st_shadow_denied], 1);
        }
        if (c->rules == NULL) {
            continue;
        }
        if (!rbac_policy_eval(c->rules, &in, &policy)) {
            stat_add(&ext[c->st_denied], 1);
            LOG_D("rbac: connection from %.*s closed: rbac_access_denied_matched_policy[%.*s]",
                  STR_FMT(conn->peer_ip), policy.len > 0 ? (int)policy.len : 4,
                  policy.len > 0 ? policy.p : "none");
            return false;
        }
        stat_add(&ext[c->st_allowed], 1);
    }
    return true;
}
