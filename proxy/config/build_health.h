/* build_health: the part of config building (build.c) that compiles a Cluster's health and
 * priority settings into its `cluster_cfg`: `health_checks` (proxy/upstream/health_check.h),
 * `outlier_detection` (proxy/upstream/outlier.h), `common_lb_config` (healthy_panic_threshold)
 * and `load_assignment.policy` (overprovisioning_factor), plus `n_priorities` from the
 * endpoints' priorities. Same rules as build.c: Envoy's defaults and validation, field-path
 * errors, and anything set but not supported is rejected with "not supported by remora yet".
 * Kept apart from build.c so that health work does not churn the builder's other sections.
 *
 * Thread: main (config time only). */
#pragma once

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/err.h"

struct Envoy__Config__Cluster__V3__Cluster;

/* Compiles `pc`'s health settings into `cc`, whose endpoints must already be set. `path` is the
 * cluster's field path ("static_resources.clusters[2]"); errors go to `err` under it. Memory
 * comes from `a` (the snapshot arena); a service_name_matcher's regex is registered with
 * snapshot `c` (whose arena `a` is). Returns 0 or -EINVAL. */
struct config;
int build_health_cluster(struct config *c, struct arena *a, struct err *err, const char *path,
                         const struct Envoy__Config__Cluster__V3__Cluster *pc,
                         struct cluster_cfg *cc);
