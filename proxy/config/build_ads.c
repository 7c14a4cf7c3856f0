/* build_ads: dynamic_resources.ads_config -> struct ads_cfg (see build_ads.h). */
#include "proxy/config/build_ads.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/core/v3/grpc_service.pb-c.h"
#include "proxy/config/config.h"

#define UNSUPPORTED "not supported by remora yet"
#define ADS "dynamic_resources.ads_config"
#define SVC ADS ".grpc_services[0]"

int ads_build_config(struct config *c,
                     const struct Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr,
                     struct err *err)
{
    /* lds_config and cds_config are build.c's (listeners static, clusters from a file). */
    const Envoy__Config__Core__V3__ApiConfigSource *ac = dr->ads_config;
    if (ac == NULL) {
        return 0; /* an empty dynamic_resources: nothing dynamic */
    }
    switch (ac->api_type) {
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__GRPC:
        break;
    case ENVOY__CONFIG__CORE__V3__API_CONFIG_SOURCE__API_TYPE__DELTA_GRPC:
        return err_set(err, ADS ".api_type",
                       "DELTA_GRPC (incremental xDS) is " UNSUPPORTED " (use GRPC)");
    default:
        return err_set(err, ADS ".api_type", "must be GRPC (state of the world over gRPC)");
    }
    if (ac->transport_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        /* AUTO (unset) means V3, as in Envoy since 1.31 (envoyproxy/envoy#34401; older Envoys
         * refused it: "V2 (and AUTO) xDS transport protocol versions are deprecated"). */
        return err_set(err, ADS ".transport_api_version", "V2 is not supported (use V3)");
    }
    if (ac->n_cluster_names > 0) {
        return err_set(err, ADS ".cluster_names",
                       "is for REST sources; a gRPC source names its cluster in grpc_services");
    }
    if (ac->refresh_delay != NULL) {
        return err_set(err, ADS ".refresh_delay", "is for REST sources");
    }
    if (ac->request_timeout != NULL) {
        return err_set(err, ADS ".request_timeout", "is for REST sources");
    }
    if (ac->n_grpc_services != 1) {
        return err_set(err, ADS ".grpc_services",
                       ac->n_grpc_services == 0 ? "required (one entry)"
                                                : "more than one entry (failover) is " UNSUPPORTED);
    }
    const Envoy__Config__Core__V3__GrpcService *gs = ac->grpc_services[0];
    if (gs->target_specifier_case !=
            ENVOY__CONFIG__CORE__V3__GRPC_SERVICE__TARGET_SPECIFIER_ENVOY_GRPC ||
        gs->envoy_grpc == NULL) {
        return err_set(err, SVC, "envoy_grpc is required");
    }
    if (gs->envoy_grpc->cluster_name == NULL || gs->envoy_grpc->cluster_name[0] == '\0') {
        return err_set(err, SVC ".envoy_grpc.cluster_name", "required");
    }
    if (gs->timeout != NULL) {
        /* Envoy applies it to each request; a stream that lasts for ever has none. */
        return err_set(err, SVC ".timeout", UNSUPPORTED " on a streaming ADS call");
    }
    struct ads_cfg *ads = ARENA_NEW(&c->arena, struct ads_cfg);
    ads->cluster_name = arena_strdup(&c->arena, str_from_c(gs->envoy_grpc->cluster_name));
    const char *auth = gs->envoy_grpc->authority;
    ads->authority = arena_strdup(
        &c->arena, str_from_c(auth != NULL && auth[0] != '\0' ? auth : ads->cluster_name.p));
    for (const char *p = ads->authority.p; *p != '\0'; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            return err_set(err, SVC ".envoy_grpc.authority", "not a valid :authority");
        }
    }
    struct ads_header *hs = ARENA_NEW_N(&c->arena, struct ads_header,
                                        gs->n_initial_metadata > 0 ? gs->n_initial_metadata : 1);
    for (size_t i = 0; i < gs->n_initial_metadata; i++) {
        const Envoy__Config__Core__V3__HeaderValue *hv = gs->initial_metadata[i];
        char p[128];
        const char *k = hv->key != NULL ? hv->key : "";
        const char *v = hv->value != NULL ? hv->value : "";
        snprintf(p, sizeof(p), SVC ".initial_metadata[%zu].key", i);
        if (k[0] == '\0' || k[0] == ':') {
            return err_set(err, p, k[0] == '\0' ? "required" : "must not be a pseudo-header");
        }
        for (const char *q = k; *q != '\0'; q++) {
            if (!(isalnum((unsigned char)*q) || strchr("-_.", *q) != NULL)) {
                return err_set(err, p, "'%s' is not a valid header name", k);
            }
        }
        for (const char *q = v; *q != '\0'; q++) {
            if ((unsigned char)*q < ' ' && *q != '\t') {
                snprintf(p, sizeof(p), SVC ".initial_metadata[%zu].value", i);
                return err_set(err, p, "control characters are not allowed");
            }
        }
        struct str lk = arena_strdup(&c->arena, str_from_c(k));
        for (size_t j = 0; j < lk.len; j++) {
            ((char *)lk.p)[j] = (char)tolower((unsigned char)lk.p[j]);
        }
        hs[i].key = lk;
        hs[i].value = arena_strdup(&c->arena, str_from_c(v));
    }
    ads->headers = hs;
    ads->n_headers = (uint32_t)gs->n_initial_metadata;
    ads->set_node_on_first_message_only = ac->set_node_on_first_message_only;
    c->ads = ads;
    return 0;
}

int ads_build_resolve(struct config *c, struct err *err)
{
    struct ads_cfg *ads = (struct ads_cfg *)c->ads;
    const struct cluster_cfg *cc = config_find_cluster(c, ads->cluster_name);
    if (cc == NULL) {
        return err_set(err, SVC ".envoy_grpc.cluster_name",
                       "unknown cluster '%s' (the ADS cluster must be a static cluster)",
                       ads->cluster_name.p);
    }
    char p[160];
    snprintf(p, sizeof(p), "static_resources.clusters[%u]", cc->index);
    if (cc->protocol != UPSTREAM_PROTO_HTTP2) {
        return err_set(err, p,
                       "cluster '%s' carries the ADS stream (gRPC) and must speak HTTP/2: set "
                       "typed_extension_protocol_options' explicit_http_config."
                       "http2_protocol_options",
                       cc->name.p);
    }
    /* TLS to the control plane (an UpstreamTlsContext, compiled as any cluster's): its material
     * must be static (files, inline, or SDS from a file). A secret over ADS would have to come
     * over the stream it secures; Envoy refuses that too. */
    for (uint32_t i = 0; cc->tls != NULL && i < c->n_sds; i++) {
        const struct sds_cfg *sc = &c->sds[i];
        for (uint32_t j = 0; sc->ads && j < sc->n_users; j++) {
            if (sc->users[j] == cc->tls) {
                snprintf(p, sizeof(p), "static_resources.clusters[%u].transport_socket", cc->index);
                return err_set(err, p,
                               "secret '%s' over ADS (sds_config: {ads: {}}) cannot secure the "
                               "ADS cluster '%s': it would come over the stream it secures "
                               "(use files, inline PEM, or SDS from a file)",
                               sc->name.p, cc->name.p);
            }
        }
    }
    /* a STRICT_DNS or LOGICAL_DNS cluster is resolved again at every connection attempt
     * (ads.c), so one whose names did not resolve at startup is fine */
    bool dns = cc->type == CLUSTER_STRICT_DNS || cc->type == CLUSTER_LOGICAL_DNS;
    if (cc->type == CLUSTER_ORIGINAL_DST ||
        (cc->n_endpoints == 0 && (!dns || cc->n_dns_eps == 0))) {
        return err_set(err, p,
                       "the ADS cluster '%s' needs endpoints (STATIC, STRICT_DNS or LOGICAL_DNS)",
                       cc->name.p);
    }
    ads->cluster = cc;
    return 0;
}
