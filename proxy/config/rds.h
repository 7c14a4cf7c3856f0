/* rds: route configurations that arrive while the proxy runs (Envoy's RDS), from a file
 * (HttpConnectionManager.rds with a filesystem config source) or over ADS (proxy/xds/ads.h). This
 * module is the config side only: it validates an `rds` block, reads a DiscoveryResponse file,
 * picks the RouteConfiguration out of a set of resources by Envoy's RDS rules, and compiles it with
 * the same builder as an inline route_config (build_route_table(), same field-path errors) into
 * a `struct route_snap`. Watching the file and handing snapshots to the workers is
 * proxy/reload.c; how a stream borrows one is proxy/worker.h (worker_routes_acquire).
 *
 * Startup: the file named by the bootstrap must load and be valid, or the bootstrap is
 * rejected with the field path (Envoy's PathConfigSource says "the path to the source must
 * exist at config load time"; where Envoy would go on warming with no routes, remora refuses
 * to start, so a typo never serves 404s).
 *
 * Memory: a route_snap lives in its own `struct config` "container" (an arena, a cleanup list
 * and a refcount, reusing config_ref/config_unref) which borrows the clusters, cluster map and
 * HTTP filter chain of the bootstrap snapshot `base` and holds a reference on it. Holders
 * reference the container: `config_ref(snap->c)`. Thread: main, except the ref/unref. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"

struct Google__Protobuf__Any;
struct Envoy__Service__Discovery__V3__DiscoveryResponse;
struct Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds;

#define RDS_TYPE_URL "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

/* One accepted route configuration of one subscription, compiled. Immutable. */
struct route_snap {
    const struct config *c;          /* the container: owns this struct and all below */
    const struct route_table *table; /* routes point at clusters of the base snapshot */
    struct str version_info;         /* the DiscoveryResponse's */
    uint64_t content_hash;           /* XXH64 of the resource's bytes: equal means unchanged */
    const void *pb;                  /* the RouteConfiguration message, for /config_dump */
    const void *dyn; /* the CDS cluster set its routes may point into (rds_clusters.owner), or
                      * NULL: workers hold its clusters' state while they hold the table */
};

/* The CDS clusters a table is compiled against (proxy/cds.h): `map` holds the bootstrap's and
 * the dynamic clusters by name; the table's container holds a reference on `owner` (ref/unref)
 * for as long as it lives. */
struct rds_clusters {
    const struct cluster_map *map;
    const void *owner;
    void (*ref)(const void *owner);
    void (*unref)(const void *owner);
};

/* For the bootstrap builder (build.c), at an HCM's `rds` field (`path` is that field's path):
 * validates `rds` (route_config_name, a filesystem config_source, or `ads` when c->ads is set;
 * api_config_source and self are rejected as not supported yet), reads the file and compiles
 * its RouteConfiguration into `c` as hc->routes (with `ads`: an empty table until the ADS
 * client delivers one), and appends the subscription to c->rds (hc->has_rds, hc->rds_index).
 * Returns 0, or -EINVAL with "<path>.<field>: ..." or "<path>: <file>: <field path in the
 * file>: ..." in `err`. */
int rds_build_initial(
    struct config *c, struct hcm_cfg *hc, const char *path,
    const struct Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds *rds,
    struct err *err);

/* Reads and decodes a DiscoveryResponse file (JSON when the name ends in ".json", else YAML or
 * JSON). Returns 0 and *out (free with protobuf_c_message_free_unpacked(*out, NULL)); -EIO when
 * the file cannot be read ("<file>: cannot read: <reason>"), -EINVAL when it does not parse or
 * decode ("<file>: resources[0].virtual_hosts[0].foo: unknown field"). */
int rds_read_file(const char *file, struct Envoy__Service__Discovery__V3__DiscoveryResponse **out,
                  struct err *err);

struct Envoy__Config__Core__V3__ConfigSource;

/* A filesystem ConfigSource (`path_config_source {path, watched_directory}` or the deprecated
 * `path`) at field path `path` (the ConfigSource's own, e.g. "....rds.config_source"): sets
 * *file and *dir (empty without watched_directory), copied into `a`. Every other source (ads,
 * api_config_source, self) and initial_fetch_timeout are rejected with their path. Shared by
 * RDS and SDS (proxy/config/sds.c). Returns 0 or -EINVAL. */
int config_source_file(const struct Envoy__Config__Core__V3__ConfigSource *cs, const char *path,
                       struct str *file, struct str *dir, struct arena *a, struct err *err);

/* An `ads: {}` ConfigSource at field path `path` (CDS's cds_config, an EDS cluster's
 * eds_config): needs dynamic_resources.ads_config (`have_ads`), V3 resources; sets
 * *timeout_ms to its initial_fetch_timeout (Envoy's default 15 s; 0: wait for ever). Returns 0
 * or -EINVAL with the path. */
int config_source_ads(const struct Envoy__Config__Core__V3__ConfigSource *cs, const char *path,
                      bool have_ads, uint64_t *timeout_ms, struct err *err);

/* Outcomes of rds_snap_build besides 0 (a new snapshot) and -EINVAL (rejected). */
#define RDS_EMPTY 1     /* no resource: keep the current routes (Envoy's update_empty) */
#define RDS_UNCHANGED 2 /* the resource is byte-identical to `current_hash`: nothing to do */

/* Compiles the RouteConfiguration for subscription `base->rds[idx]` out of `resources[n]` (a
 * state-of-the-world set, as in a DiscoveryResponse), by Envoy's RDS rules: exactly one
 * resource, of type RouteConfiguration, named route_config_name. `where` prefixes error paths
 * (the file name; may be NULL), or, when it starts with "resources[" (an xDS response's own
 * path of the resource), replaces the "resources[0]" of the paths. Returns 0 with a new
 * snapshot in *out (one reference on its
 * container), RDS_EMPTY, RDS_UNCHANGED, or -EINVAL with a field-path error in `err` (a route to
 * an unknown cluster, an unsupported field, a wrong name...). */
int rds_snap_build(const struct config *base, uint32_t idx, const char *version_info,
                   struct Google__Protobuf__Any *const *resources, size_t n, uint64_t current_hash,
                   const char *where, const struct route_snap **out, struct err *err);

/* rds_snap_build against the bootstrap's clusters plus the CDS clusters `dyn` (NULL: none). */
int rds_snap_build_dyn(const struct config *base, uint32_t idx, const char *version_info,
                       struct Google__Protobuf__Any *const *resources, size_t n,
                       uint64_t current_hash, const char *where, const struct rds_clusters *dyn,
                       const struct route_snap **out, struct err *err);

/* The table in force for subscription `idx` (`cur`, or the bootstrap's when NULL) compiled
 * again against the clusters `dyn`: after a CDS change, routes to clusters that came or went
 * point at them or at nothing, whatever validate_clusters says (Envoy validates when RDS
 * delivers, not when CDS changes); with `validate`, validate_clusters holds (at startup, once
 * the CDS file is loaded: the bootstrap's table could not see its clusters). Same version and
 * content hash. Returns 0 or -EINVAL. */
int rds_snap_rebuild(const struct config *base, uint32_t idx, const struct route_snap *cur,
                     const struct rds_clusters *dyn, bool validate, const struct route_snap **out,
                     struct err *err);

/* Drops a reference on `snap`'s container (NULL is fine). Thread-safe. */
void rds_snap_unref(const struct route_snap *snap);
