/* build_ads: the bootstrap's dynamic_resources, for the proxy's ADS client (proxy/xds/ads.h).
 * Only `ads_config` is supported: a state-of-the-world gRPC stream (api_type GRPC, transport V3)
 * to exactly one static cluster that speaks HTTP/2, in plaintext (h2c) or over TLS (its
 * UpstreamTlsContext, with static material: SDS over ADS is refused there). Called by build.c: the
 * first function before static_resources (so an HCM's `rds` with `config_source.ads` can check that
 * ADS is configured), the second after them (to find the cluster). Thread: main. */
#pragma once

#include "proxy/core/err.h"

struct config;
struct Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources;

/* Validates `dr` (at "dynamic_resources") and sets c->ads (cluster not resolved yet). Returns 0
 * or -EINVAL with a field-path error. */
int ads_build_config(struct config *c,
                     const struct Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr,
                     struct err *err);

/* With c->ads set: finds its cluster among c->clusters and checks that it can carry the
 * stream (HTTP/2, endpoints, no TLS secret over ADS). Returns 0 or -EINVAL. */
int ads_build_resolve(struct config *c, struct err *err);
