/* cds: clusters that come, change and go while the proxy runs (Envoy's CDS), on the main
 * thread, beside the bootstrap snapshot (which keeps its own clusters for the life of the
 * process). Source-agnostic: reload.c feeds it the Cluster resources of a file today
 * (reload_clusters), the ADS client later.
 *
 * A `struct cds_cluster` is one version of one dynamic cluster: its compiled cluster_cfg (in
 * its own container config, built by build_cluster(): the bootstrap's validation and field
 * paths), and everything that runs for it: the workers' state (cluster_rt: pools, LB state;
 * cfg->dyn_rt, indexed by worker id), per-worker stats blocks of its own (blocks[w]->cluster[0]
 * and ->host[0]: cluster.<name>.* exists exactly as long as the cluster), the cluster-wide
 * state (cluster_shared: breakers, health bits) and main's health checker and outlier detector.
 *
 * A `struct cds_set` is the state of the world: the current dynamic clusters plus a map of the
 * bootstrap's and the dynamic clusters by name. RDS tables are compiled against the current set
 * (rds_snap_build_dyn; their container holds a reference on it), so a route points straight at
 * a cds_cluster's cfg, and a stream finds the worker's state at cfg->dyn_rt[worker id]. An
 * update builds a new set: a resource with the same name and the same bytes keeps its
 * cds_cluster (pools, LB state, breaker counts, health and outlier state, stats all carried
 * over); a changed one gets a new cds_cluster (fresh state, as Envoy); one that is gone is
 * retired. reload.c then compiles every RDS table again against the new set and publishes it.
 *
 * Lifetimes, without a lock or a per-request atomic:
 *   - a worker sets up its cluster_rt the first time it takes a route table whose set holds
 *     the cluster (cds_worker_pin, from worker.c's take_routes), and counts the tables it holds
 *     that name it (wusers); when the last goes (cds_worker_unpin) and main has retired the
 *     cluster, the worker tears its state down (deferred: idle connections closed);
 *   - a cds_cluster's memory is referenced by the sets holding it, and while a worker tears
 *     down; at zero main frees it (its loop is woken for that: outlier detectors live on it).
 * Thread: main, except cds_worker_pin/unpin (the worker's own). */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

struct config;
struct worker;
struct cluster_view;
struct cm_stats;
struct rds_clusters;
struct Google__Protobuf__Any;

#define CDS_TYPE_URL "type.googleapis.com/envoy.config.cluster.v3.Cluster"
#define CDS_EDS_TYPE_URL "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

struct cds;

/* The dynamic clusters of bootstrap `boot` (borrowed, outlives the cds) for `n_workers`
 * workers, with health checks and outlier detection on `loop`. Never NULL; without a
 * cds_config it only keeps cluster_manager.* stats. */
struct cds *cds_new(struct ev_loop *loop, const struct config *boot, uint32_t n_workers);

/* Shutdown, before the workers are freed: every cluster counts as retired, so a worker tears
 * its state down when worker_free lets go of its tables. */
void cds_retire_all(struct cds *c);

/* Frees everything. Workers must be gone (worker_free: they have let go of every table). */
void cds_free(struct cds *c);

/* A state-of-the-world set of Cluster resources with `version_info` (`where` prefixes error
 * paths: the file). Each resource on its own, as Envoy's CdsApiImpl: a valid new or changed
 * cluster is applied; one that does not decode or validate, a duplicate name (the second of two)
 * or the name of a bootstrap cluster is skipped, and the cluster of that name in force (if any)
 * stays as it was; clusters the response leaves out are removed. Counts cluster_manager.* stats;
 * the caller counts cds.update_*. Returns 1 when the set changed (the caller compiles its RDS
 * tables again against cds_rds_clusters()), 0 when nothing changed, or -EINVAL when a resource
 * was skipped, with every failure's field path in `err` ("; " between them) and `*changed`
 * (NULL ok) telling whether the rest changed the set. */
int cds_update(struct cds *c, const char *version_info,
               struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
               struct err *err, bool *changed);

/* The secret roles outside the clusters: `fn(ud, c)` returns a secret name over ADS that
 * cluster container `c` uses in the other role (certificate or validation context) than some
 * LDS listener in force does (sds_role_conflict), or NULL; such a cluster is rejected with
 * its path, as against the bootstrap and the other clusters. NULL: none. */
void cds_set_peer_conflict(struct cds *c, const char *(*fn)(void *ud, const struct config *c),
                           void *ud);
/* ---- warming (Envoy's cluster warming) ----
 *
 * A cluster CDS adds or modifies is warming until it is initialized: an EDS cluster over ADS
 * until its first ClusterLoadAssignment (or its eds_config.initial_fetch_timeout: then the
 * owner's fetch_timeout may apply an assignment it kept, and otherwise it goes on without
 * endpoints, as Envoy), a health-checked cluster until its first health-check round. Until then
 * the routing set (cds_rds_clusters, cds_views) holds the version it replaces, or no cluster of
 * that name (a route to it answers as for an unknown cluster); the subscriptions (cds_eds_clusters,
 * cds_dns_clusters, cds_cluster_config) follow the warming version. A STRICT_DNS cluster warms
 * until each of its names had its first lookup back (good or failed). Stats: cluster_manager.
 * warming_clusters, active_clusters; /config_dump's dynamic_warming_clusters. Not warming: EDS
 * from a file (read in the same CDS update), SDS secrets (a cluster whose secret has not come
 * fails its handshakes closed). */
struct cds_warm_ops {
    /* warming EDS cluster `cluster` had no assignment within its initial_fetch_timeout: the
     * owner may apply one it kept (cds_update_endpoints) before the cluster goes on without */
    void (*fetch_timeout)(void *ud, const char *cluster);
    /* a warming cluster became active outside a call that returns 1 (its first health-check
     * round, its fetch timeout): compile the RDS tables again */
    void (*activated)(void *ud);
    /* a bootstrap STRICT_DNS cluster's new version (container `c`), before any worker can take
     * it: give its SDS subscriptions over ADS the secrets in force. NULL: none */
    void (*seed)(void *ud, const struct config *c);
    void *ud;
};
void cds_set_warm_ops(struct cds *c, const struct cds_warm_ops *ops);

/* Startup (Envoy's init manager waits for the clusters CDS brought during init to initialize,
 * their first health-check round included): true when some warming clusters wait for their
 * first health-check round only (names unanswered and assignments not received had their own
 * bounded waits); then `fn(ud)` is called once, on a later loop iteration, when none does (one
 * that starts its round meanwhile is waited for too) or after `bound_ms`. False with none (fn
 * not called). */
bool cds_hold_init(struct cds *c, uint64_t bound_ms, void (*fn)(void *ud), void *ud);

/* The current set for compiling RDS tables against, or NULL before the first update. */
const struct rds_clusters *cds_rds_clusters(const struct cds *c);

/* cluster_manager.* and, with a cds_config, cluster_manager.cds.* (main-written). */
struct cm_stats *cds_stats(struct cds *c);

/* The current dynamic clusters for the admin (/stats, /clusters): valid until the next
 * cds_update. */
void cds_views(const struct cds *c, const struct cluster_view **v, uint32_t *n);

/* Adds "dynamic_active_clusters" [{version_info, cluster, last_updated}], while some warm
 * "dynamic_warming_clusters" (the same shape), and "version_info" to the ClustersConfigDump
 * entry of /config_dump's `configs`. */
void cds_dump(const struct cds *c, json_t *configs);

/* ---- EDS: clusters of type EDS (CDS clusters only; their eds_config a file or `ads: {}`) ----
 *
 * An EDS update makes a new version of the cluster (its endpoints compiled by build_cluster
 * from the cluster's own resource with the assignment as its load_assignment), which keeps
 * what it can of the version it replaces: its stats (cluster.<name>.*), and per endpoint that
 * stays (same address) its active health-check state (flags, consecutive counts, next check)
 * and outlier state (an ejection in force, counts). Connections to endpoints that stay are not
 * carried over: the old version's pools close as its last requests end. Like a CDS change, the
 * caller then compiles the RDS tables again (cds_rds_clusters). An update of a warming version
 * makes a new warming version, active at once unless it waits for its first health checks. A
 * CDS modification of an EDS cluster over ADS warms until its assignment comes again (Envoy
 * re-subscribes; the old version serves meanwhile); one over a file that keeps its source keeps
 * its assignment until the file is read again (its health and outlier state start over, as for
 * any modification). */

/* Cluster `cluster`'s assignment: a state-of-the-world set (Envoy's EDS rules: exactly one
 * ClusterLoadAssignment, named as the cluster's service_name; none: update_empty, the endpoints
 * stay). Counts cluster.<name>.update_* (but update_attempt and update_failure: the caller's,
 * see cds_eds_stats). Returns 1 when the endpoints changed (a new version is in the set), 0
 * when nothing changed, or -EINVAL with a field-path error (`where` prefixes it). */
int cds_update_endpoints(struct cds *c, const char *cluster, const char *version_info,
                         struct Google__Protobuf__Any *const *resources, size_t n,
                         const char *where, struct err *err);

/* cluster.<name>.update_* of EDS cluster `cluster` (main-written), or NULL when there is none. */
struct eds_stats;
struct eds_stats *cds_eds_stats(struct cds *c, const char *cluster);

/* The current EDS clusters, for their subscriptions: up to `cap` into out[]; returns how many
 * there are. The strings are valid until the next update. */
struct cds_eds {
    const char *cluster;
    const char *path;          /* eds_config's file */
    const char *watched_dir;   /* or "" */
    bool loaded;               /* endpoints applied at least once to this version */
    bool ads;                  /* eds_config is `ads: {}` (path is "": the ADS client's) */
    const char *service_name;  /* the ClusterLoadAssignment's name */
    uint64_t fetch_timeout_ms; /* eds_config.initial_fetch_timeout (ADS) */
};
uint32_t cds_eds_clusters(const struct cds *c, struct cds_eds *out, uint32_t cap);

/* ---- STRICT_DNS: clusters whose names are resolved again and again (proxy/dns_refresh.h) ----
 *
 * A STRICT_DNS cluster is compiled with the last good answers of its names (cds_set_dns; a name
 * without one yet gives no endpoints: a new cluster, or one with a new name, warms until each of
 * its names had its first lookup back, good or failed, as Envoy's). When
 * an answer changes, cds_update_dns compiles the cluster again from its own resource and, when
 * its addresses changed, puts the new version in the set as an EDS update does (same stats,
 * health-check and outlier state kept for the addresses that stay, membership_change); the
 * caller then compiles the RDS tables again. */

/* Where STRICT_DNS clusters' builds take their addresses from (borrowed, outlives `c`; before
 * the first cds_update). */
struct config_dns;
void cds_set_dns(struct cds *c, const struct config_dns *dns);

/* STRICT_DNS cluster `cluster` compiled again with the current answers. Returns 1 when its
 * addresses changed (a new version is in the set), 0 when not (or it is gone, or it is a
 * bootstrap cluster: its new version is posted to the workers, no table changes), -EINVAL when
 * it no longer compiles (logged; cannot happen: only addresses differ). */
int cds_update_dns(struct cds *c, const char *cluster);

/* A name of STRICT_DNS cluster `cluster` had its first lookup back (dns_refresh's `resolved`):
 * a warming version whose names all did (config_dns.pending) becomes active. Returns 1 when it
 * did (the caller compiles the RDS tables again), else 0. */
int cds_dns_resolved(struct cds *c, const char *cluster);

/* cluster.<name>.update_* of STRICT_DNS cluster `cluster` (main-written), or NULL. */
struct eds_stats *cds_dns_stats(struct cds *c, const char *cluster);

/* The config of the current STRICT_DNS or LOGICAL_DNS cluster `cluster`, or NULL. Valid until
 * the next update. */
struct cluster_cfg;
const struct cluster_cfg *cds_dns_cluster(const struct cds *c, const char *cluster);

/* The current STRICT_DNS and LOGICAL_DNS clusters' configs: up to `cap` into out[]; returns how
 * many there are. Valid until the next update. */
uint32_t cds_dns_clusters(const struct cds *c, const struct cluster_cfg **out, uint32_t cap);

/* ---- bootstrap STRICT_DNS clusters, resolved again and again too ----
 *
 * The bootstrap's route tables and tcp_proxy configs point at its STRICT_DNS cluster's cfg for
 * the life of the process, so a changed host set cannot be a new cfg in their place. Instead
 * the cluster's hosts, workers' state, stats, health checks and outlier detection are those of
 * its current *version*, a cds_cluster compiled from the bootstrap's own Cluster (outside the
 * CDS set, with the same field paths), which the bootstrap cfg reaches through boot_dns. A
 * changed answer makes a new version exactly as for a CDS cluster (cds_update_dns: stats
 * shared, health-check and outlier state of the addresses that stay adopted), which main posts
 * to each worker's mailbox; a worker takes it when a stream next routes to the cluster, and
 * each stream or TCP session holds the version it took (a cds_dns_pin) until it is freed, so
 * the old version's state goes when its last user does (as a retired CDS cluster's). The first
 * version has the addresses the bootstrap was built with; its first health-check round is one
 * of startup's warming items (cds_set_boot_warm). A version whose TLS takes SDS secrets over
 * ADS gets those in force before any worker can take it (cds_warm_ops.seed), and later ones
 * as every CDS cluster does (cds_cluster_config lists it). */

/* Main, before the workers start, after cds_set_dns (whose answers must already hold the
 * bootstrap's addresses): the first version of every bootstrap STRICT_DNS cluster; sets their
 * cfg->boot_dns. Returns how many of them have health checks (startup warming items). */
uint32_t cds_boot_dns_start(struct cds *c);

/* Main: `fn(ud)` when a bootstrap STRICT_DNS cluster's first version finishes its first
 * health-check round. */
void cds_set_boot_warm(struct cds *c, void (*fn)(void *ud), void *ud);

/* Worker `w`: the current version of bootstrap cluster `cc` (cc->boot_dns set), held through
 * `*pin` until cds_boot_dns_release. Thread: that worker. */
struct cds_dns_pin;
const struct cluster_cfg *cds_boot_dns_acquire(struct worker *w, const struct cluster_cfg *cc,
                                               struct cds_dns_pin **pin);
void cds_boot_dns_release(struct worker *w, struct cds_dns_pin *pin);

/* Whether `pin` holds a version of bootstrap cluster `cc`, and that version's cfg. */
bool cds_boot_dns_pinned(const struct cds_dns_pin *pin, const struct cluster_cfg *cc);
const struct cluster_cfg *cds_boot_dns_cfg(const struct cds_dns_pin *pin);

/* worker_free: `w` lets go of the versions it gives new streams (every stream is gone). */
void cds_worker_boot_dns_free(struct worker *w, const struct config *boot);

/* The container (its clusters[0]) of the `i`th cluster of the current set, then of the warming
 * ones, then of the bootstrap STRICT_DNS clusters' current versions, or NULL past the end: for
 * the SDS secrets the current clusters name (reload.c). Valid until the next update. */
const struct config *cds_cluster_config(const struct cds *c, uint32_t i);

/* Worker `w` starts holding a route table compiled against set `dyn` (route_snap.dyn; NULL is
 * fine), or stops. Thread: that worker. */
void cds_worker_pin(struct worker *w, const void *dyn);
void cds_worker_unpin(struct worker *w, const void *dyn);
