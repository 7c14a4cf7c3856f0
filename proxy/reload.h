/* reload: configuration that changes while the proxy runs, on the main thread. Today that is
 * RDS and SDS from files:
 *   - RDS: for each HttpConnectionManager with `rds`, main watches the DiscoveryResponse file
 *     (inotify), and on a change re-reads it, builds a new route table (proxy/config/rds.h: the
 *     bootstrap's builder and field-path errors) and publishes it to every worker
 *     (worker_routes_publish);
 *   - SDS: for each (file, secret name) that TLS contexts name (config.sds), main watches the
 *     file the same way and, on a change, re-reads the secret and applies it to every context
 *     using it (proxy/config/sds.h: sds_update; the swap is under the context's tls_live lock,
 *     proxy/net/tls.h). Files named inside the secret are re-read then, not watched.
 * A rejected update is logged with its field path and counted, and the last good table or
 * certificate keeps serving.
 *
 * reload_routes() is the single entry point for "a new set of resources arrived", whatever
 * their source (the file watcher, or the ADS client: proxy/xds/ads.h). Subscriptions whose
 * rds uses `ads` (rds_cfg.ads) have no file and are not watched.
 *
 * Which file events reload (Envoy's PathConfigSource, plus in-place writes):
 *   - without watched_directory: the file's directory is watched; a file moved onto the path
 *     (IN_MOVED_TO: `mv new.yaml rds.yaml`, how editors and tools replace files atomically)
 *     or the path closed after writing (IN_CLOSE_WRITE: `cp`, `>`, which Envoy ignores; a
 *     half-written file is rejected and the next close reloads it);
 *   - with watched_directory: any entry moved into that directory (a Kubernetes ConfigMap
 *     swaps its `..data` symlink so), and the path itself is not watched.
 *
 * Stats (Envoy's): http.<stat_prefix>.rds.<route_config_name>.update_attempt (each reload),
 * update_success (accepted, changed or not), update_rejected (invalid content: parse, decode
 * or validation errors), update_failure (the file could not be read), update_empty (no
 * resource: the current routes stay; also a success, as in Envoy, where the subscription
 * accepts it), config_reload (a different table went live), config_reload_time_ms and
 * update_time (Unix ms of the last reload and of the last success), version
 * (XXH64 of version_info). Envoy counts a file that does not parse as update_failure; remora
 * counts it as rejected, as remora issue 4 asks ("unparseable YAML -> update_rejected").
 *
 * The watched directory itself may go away: removed (IN_DELETE_SELF) or renamed (IN_MOVE_SELF:
 * the watch would follow the old directory, so it is dropped). Its path is watched again at
 * once if a directory is there, else every 0.5 s until one is; then the file is re-read if it
 * exists (it may have changed meanwhile). The routes in force stay while it is missing.
 *
 * Unlike Envoy, two connection managers naming the same file and route_config_name have a
 * subscription each (each reads the file, counts its own stats under its own stat_prefix and
 * has its own /config_dump entry): a route table is compiled against its connection manager's
 * filter chain (typed_per_filter_config by chain position), so one table cannot serve both.
 *
 * Thread: main only. */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

struct config;
struct worker;
struct rds_stats;
struct sds_stats;
struct Google__Protobuf__Any;

struct reload;

/* Starts watching the RDS files of `cfg` (borrowed; must outlive the reload) on `loop` and
 * publishing to `workers[n_workers]` (borrowed; slots may still be NULL: see reload_start). Returns
 * the reload (never NULL). A file whose directory cannot be watched is logged and keeps its startup
 * table. */
struct reload *reload_new(struct ev_loop *loop, const struct config *cfg,
                          struct worker *const *workers, uint32_t n_workers);

/* Re-reads SDS subscription `idx`'s file (cfg->sds[idx]) and applies the secret: stats
 * sds.<name>.update_attempt, then update_success, update_rejected (a bad secret, no such
 * secret, a key that does not match, ...) or update_failure (the file cannot be read). Every
 * accepted update is applied (there is no "unchanged": files named in the secret may have
 * changed). Returns 0, -EIO or -EINVAL. */
int reload_sds_file(struct reload *r, uint32_t idx);

/* Applies a Secret that came over ADS (`any`, resource `where` of a response with version_info
 * `version`) to every TLS context using secret `name` over ADS: the bootstrap's (config.sds) and
 * those of the LDS listeners and CDS clusters in force, all or none (proxy/sds_set.h: one
 * subscription per name). The same stats (sds.<name>.*), compile and swap as a file's;
 * /config_dump shows it; a listener or cluster that comes later is given it before the
 * workers see it. A name nobody uses is ignored (returns 0). Returns 0 or -EINVAL (the error,
 * with `where`, in `err`; the old material keeps serving). */
int reload_sds_secret(struct reload *r, const char *name, const char *version,
                      const struct Google__Protobuf__Any *any, const char *where, struct err *err);

/* The ADS secrets by name (proxy/sds_set.h): the ADS client subscribes their names and keeps
 * its startup waits there. */
struct sds_set;
struct sds_set *reload_secrets(struct reload *r);

/* `fn(ud)` runs after the set of ADS secret names changed (listeners or clusters that name
 * secrets came or went): the ADS client sends the new name list. NULL clears. */
void reload_set_sds_hook(struct reload *r, void (*fn)(void *ud), void *ud);

/* sds.<name>.* of the ADS secrets only dynamic listeners and clusters use, for the admin
 * endpoint: *v valid until the next call. Returns how many. */
struct sds_stat_view;
uint32_t reload_sds_dyn_stats(struct reload *r, const struct sds_stat_view **v);

/* The SDS stats, [cfg->n_sds], for the admin endpoint. */
const struct sds_stats *reload_sds_stats(const struct reload *r);

/* At shutdown, before worker_free: the CDS clusters are retired, so each worker tears its
 * state for them down as it lets go of its tables. */
void reload_stop(struct reload *r);

/* Stops watching and drops main's references. Call after worker_free: the CDS clusters the
 * workers held are freed here. NULL ok. */
void reload_free(struct reload *r);

/* The RDS stats, [cfg->n_rds], for the admin endpoint. */
const struct rds_stats *reload_rds_stats(const struct reload *r);

/* A new state-of-the-world set of RouteConfiguration resources for subscription `idx`
 * (cfg->rds[idx]) with `version_info`. `where` names the source for error paths (the file).
 * Counts the attempt and its outcome, and publishes an accepted, changed table to every worker.
 * Returns 0 (accepted, or empty, or unchanged) or -EINVAL with the error (also logged) in
 * `err`. */
int reload_routes(struct reload *r, uint32_t idx, const char *version_info,
                  struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                  struct err *err);

/* Re-reads subscription `idx`'s file and hands it to reload_routes (what a file event runs).
 * Returns 0, -EIO (unreadable: update_failure) or -EINVAL. */
int reload_rds_file(struct reload *r, uint32_t idx);

/* ---- clusters (CDS, proxy/cds.h) ----
 *
 * reload_clusters() is the entry point for a state-of-the-world set of Cluster resources,
 * whatever its source (the dynamic_resources.cds_config file, or the ADS client): each resource on
 * its own (cds_update: a bad one is skipped, the cluster of its name in force stays, the others
 * apply; the error lists every failure with its field path, and the update counts as rejected);
 * clusters with the same name and bytes keep their state; every RDS table is compiled again
 * against the new set and published, so routes to clusters that came or went follow (a route
 * to a cluster that is not there answers 503 NC). Stats (Envoy's): cluster_manager.cds.
 * update_attempt, update_success (changed or not), update_rejected, update_failure (file
 * unreadable), update_time, version; cluster_manager.cluster_added/modified/removed,
 * active_clusters. Returns 0 or -EINVAL with the error (also logged) in `err`. */
int reload_clusters(struct reload *r, const char *version_info,
                    struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                    struct err *err);

/* The entry point for EDS cluster `cluster`'s ClusterLoadAssignment set (its file, or the ADS
 * client): Envoy's EDS rules (exactly one, named as its service_name; none keeps the endpoints:
 * update_empty). The cluster's endpoints change; endpoints that stay keep their health-check
 * and outlier state (cds.h). Stats: cluster.<name>.update_attempt, update_success,
 * update_rejected, update_failure (file unreadable), update_empty, update_no_rebuild,
 * membership_change, version. Returns 0 or -EINVAL with the error (also logged) in `err`. A CDS
 * change reads the files of the EDS clusters it adds or modifies itself. */
int reload_endpoints(struct reload *r, const char *cluster, const char *version_info,
                     struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                     struct err *err);

/* ---- listeners (LDS, proxy/lds.h) ----
 *
 * reload_listeners() is the entry point for a state-of-the-world set of Listener resources,
 * whatever its source (the dynamic_resources.lds_config file, or the ADS client): each resource on
 * its own (lds_update: a bad one or a socket that cannot be bound is skipped with its field path,
 * the listener of its name in force stays, the others apply; counted as rejected). Stats (Envoy's):
 * listener_manager.lds.update_attempt, update_success, update_rejected, update_failure (file
 * unreadable), update_time, version;
 * listener_manager.listener_added/modified/removed/create_success/create_failure,
 * total_listeners_active/draining. Returns 0 or -EINVAL with the error (also logged). */
int reload_listeners(struct reload *r, const char *version_info,
                     struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                     struct err *err);

/* RDS in LDS listeners (their connection managers' `rds` with `ads: {}`; proxy/lds.h): the
 * route configuration `name` arrived (a state-of-the-world set, as reload_routes) and goes to
 * every subscription of an active LDS version naming it, compiled for each one's connection
 * manager, with its own http.<prefix>.rds.<name>.* stats. Returns 0 or -EINVAL (the first
 * error). A new version takes the table its names already have (from the version it replaces,
 * else another active one) before the workers see it. */
int reload_lds_routes(struct reload *r, const char *name, const char *version_info,
                      struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                      struct err *err);

/* The distinct route names of the active LDS versions' ADS subscriptions with their
 * initial_fetch_timeout; returns how many there are (only `cap` are written). */
uint32_t reload_lds_route_names(struct reload *r, const char **names, uint64_t *timeouts,
                                uint32_t cap);

/* `fn(ud)` runs after every change of the LDS set (the ADS client's: its RDS names follow). */
void reload_set_lds_hook(struct reload *r, void (*fn)(void *ud), void *ud);

/* Re-reads the LDS file and hands it to reload_listeners. Returns 0, -EIO or -EINVAL. */
int reload_lds_file(struct reload *r);

/* --drain-time-s, for the connections of listeners LDS removes or replaces. */
void reload_set_drain_time(struct reload *r, double seconds);

/* The workers are told to stop listening (/drain_listeners, the server's drain): LDS adds or
 * modifies no listener from now on (lds_stop_listening). Call before telling them. */
/* LDS versions warming for routes or secrets whose fetch ended start serving now (lds_warm_check):
 * the ADS client calls it before startup's wait ends, so LIVE means they serve. */
void reload_warm_check(struct reload *r);
void reload_stop_listening(struct reload *r);

/* The LDS listeners and listener_manager.* stats, for the admin (admin_ctx.dyn_listeners). */
struct lds_view;
struct lds_stats;
void reload_listener_views(const struct reload *r, const struct lds_view **v, uint32_t *n,
                           const struct lds_stats **lm);

/* `fn(ud)` runs after every change of the CDS set (the ADS client's: it follows the EDS
 * clusters whose eds_config is `ads: {}`), before the route tables are compiled again against
 * the new set; reload_endpoints called from it does not compile them itself. */
void reload_set_cds_hook(struct reload *r, void (*fn)(void *ud), void *ud);

/* `fn(ud, cluster)` runs when warming EDS cluster `cluster` (over ADS) had no assignment within
 * its initial_fetch_timeout (cds.h: warming): the ADS client applies the last one it accepted
 * for that name, if any (reload_endpoints; Envoy's EDS cache). NULL clears. */
void reload_set_eds_timeout_hook(struct reload *r, void (*fn)(void *ud, const char *cluster),
                                 void *ud);

/* The current EDS clusters (cds_eds_clusters, proxy/cds.h). */
struct cds_eds;
uint32_t reload_eds_clusters(const struct reload *r, struct cds_eds *out, uint32_t cap);

/* Startup: `fn(ud)` when a bootstrap STRICT_DNS cluster's first version (proxy/cds.h) finishes
 * its first health-check round (main counts it among the warming clusters, and creates no
 * health checker of its own for a cluster with cfg->boot_dns). */
void reload_set_boot_warm(struct reload *r, void (*fn)(void *ud), void *ud);

/* Startup: whether to wait for the first answers of the STRICT_DNS and LOGICAL_DNS clusters'
 * names (Envoy's init manager waits for a DNS cluster's first resolution; a bootstrap STRICT_DNS
 * cluster's names have theirs from the build): true when some are pending; then `fn(ud)` is
 * called once they all came (good or failed) or after `bound_ms`. False with nothing pending
 * (fn is not called). */
bool reload_dns_hold_init(struct reload *r, uint64_t bound_ms, void (*fn)(void *ud), void *ud);

/* Startup, after the DNS hold: whether to wait for the CDS clusters still warming (their first
 * health-check round, as Envoy's cluster manager initializes the clusters CDS brought during
 * init); then `fn(ud)` once none is, or after `bound_ms` (cds_hold_init). False: none. */
bool reload_warm_hold_init(struct reload *r, uint64_t bound_ms, void (*fn)(void *ud), void *ud);

/* The resolver (its thread pool) of the DNS clusters, also the ADS client's when its cluster is
 * STRICT_DNS or LOGICAL_DNS; NULL when none needs one. */
struct resolver;
struct resolver *reload_resolver(struct reload *r);

/* Re-reads the CDS file and hands it to reload_clusters (what a file event runs). Returns 0,
 * -EIO (unreadable: update_failure) or -EINVAL. */
int reload_cds_file(struct reload *r);

/* At startup, before the workers are created (their slots in `workers` still NULL): loads the
 * CDS file (with a cds_config), which must exist and be valid, as an RDS file must. Returns 0
 * or -EINVAL with the error in `err`. */
int reload_start(struct reload *r, struct err *err);

/* Once the workers exist: hands them the route tables in force (compiled at reload_start). */
void reload_publish_all(struct reload *r);

/* The CDS clusters and cluster_manager.* stats, for the admin (admin_ctx.dyn_clusters). */
struct cluster_view;
struct cm_stats;
void reload_cluster_views(const struct reload *r, const struct cluster_view **v, uint32_t *n,
                          const struct cm_stats **cm);

/* Appends the RDS route configurations to a /config_dump "configs" array: the
 * RoutesConfigDump entry gets "dynamic_route_configs" [{version_info, route_config}]; and the
 * SDS secrets as a SecretsConfigDump with "dynamic_active_secrets" (private keys redacted). */
void reload_dump(const struct reload *r, json_t *configs);
