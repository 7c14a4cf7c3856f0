/* build_tracing: the part of config building (build.c) that compiles tracing: the bootstrap's
 * `tracing.http` and an HttpConnectionManager's `tracing` (proxy/tracing/tracing.h). Drivers:
 * envoy.tracers.zipkin (HTTP_JSON to a collector cluster) and envoy.tracers.xray; any other
 * provider, and any field remora does not do, is rejected with its field path.
 *
 * Thread: main (config time only). */
#pragma once

#include <stdbool.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"
#include "proxy/tracing/tracing.h"

struct Envoy__Config__Trace__V3__Tracing__Http;
struct
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__Tracing;

/* A provider (`path`: its field path) into *out (snapshot arena). Zipkin's collector_cluster
 * is looked up later (build_tracing_resolve), once the clusters exist. Returns 0 or -EINVAL. */
int build_tracing_provider(struct config *c, struct err *err, const char *path,
                           const struct Envoy__Config__Trace__V3__Tracing__Http *pb,
                           const struct tracer_cfg **out);

/* Finds a Zipkin provider's collector_cluster in `c` (a static cluster with an endpoint): its
 * first endpoint becomes the collector's address. */
int build_tracing_resolve(const struct config *c, struct err *err, const char *path,
                          struct tracer_cfg *tc);

/* An HCM's `tracing` into *out: its provider, or else `boot` (the bootstrap's tracing.http,
 * NULL: none). `egress`: the listener's traffic_direction is OUTBOUND. */
int build_tracing_hcm(
    struct config *c, struct err *err, const char *path,
    const struct
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__Tracing
        *pb,
    struct str stat_prefix, bool egress, const struct tracer_cfg *boot,
    const struct hcm_tracing **out);
