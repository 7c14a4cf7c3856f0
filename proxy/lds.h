/* lds: listeners that come, change and go while the proxy runs (Envoy's LDS), on the main
 * thread, beside the bootstrap's listeners (which stay for the life of the process).
 * Source-agnostic: reload.c feeds it the Listener resources of the lds_config file
 * (reload_listeners), the ADS client those of its wildcard Listener subscription.
 *
 * A `struct lds_listener` is one version of one dynamic listener: its compiled listener_cfg (in
 * its own container config, built by build_listener(): the bootstrap's validation and field
 * paths, its routes pointing at the bootstrap's clusters), its bound sockets (one
 * SO_REUSEPORT socket per worker, as the bootstrap's), its access-log sinks and one stats block
 * per worker (listener.<addr>.*, http.<prefix>.*, tcp.<prefix>.* and its filters' stats).
 * Workers run it through a `struct worker_scope` (worker.h): a connection keeps a pointer to
 * its listener's scope, so the request path costs what it did (one load).
 *
 * An update (state of the world, each resource on its own as the CDS one): a resource with the
 * same name and bytes keeps its version (sockets and connections untouched); a changed one gets a
 * new version, which takes over the old one's sockets when its address is the same (no moment where
 * connections are refused) or binds new ones; a listener that is gone, and the old version of a
 * changed one, stop accepting (their sockets closed on every worker) and their connections drain:
 * HTTP/1 answers its next response with connection: close, HTTP/2 sends GOAWAY (downstream_drain).
 * A version is freed, on main, once no worker holds it any more (a worker lets go when its last
 * connection on it closes).
 *
 * Thread: main, except lds_listener_* and lds_pub_* accessors and refs (any thread). */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/err.h"

struct config;
struct worker;
struct stats_block;
struct access_log_sink;
struct lds_stats;
struct Google__Protobuf__Any;

#define LDS_TYPE_URL "type.googleapis.com/envoy.config.listener.v3.Listener"

struct lds;
struct lds_listener;
struct lds_pub;

/* The dynamic listeners of bootstrap `boot` (borrowed), published to `workers[n_workers]`
 * (borrowed; slots may be NULL until the workers exist: lds_publish_all). Never NULL. */
struct lds *lds_new(struct ev_loop *loop, const struct config *boot, struct worker *const *workers,
                    uint32_t n_workers);

/* --drain-time-s: how long the connections of a removed or replaced listener may take to
 * finish before they are closed (default 600 s, Envoy's). */
void lds_set_drain_time(struct lds *l, double seconds);

/* Frees everything. The workers must be gone (worker_free let go of every version). */
void lds_free(struct lds *l);

/* A state-of-the-world set of Listener resources with `version_info` (`where` prefixes error
 * paths: the file; or "resources[i]..." alone over ADS). Each resource on its own, as Envoy's
 * LdsApiImpl: a valid new or changed listener is applied; one that does not decode or validate,
 * a duplicate name (the second of two), a bootstrap listener's name, an address another listener
 * uses, or a socket that cannot be bound is skipped, and the listener of that name in force (if
 * any) stays as it was; listeners the response leaves out are removed. A new version that waits
 * for its RDS routes over ADS warms first (see "warming" in lds.c): the version it replaces
 * serves meanwhile. After lds_stop_listening no listener is added or modified (logged, as
 * Envoy's stopped listeners). Counts listener_manager.* (but lds.update_*: the caller's).
 * Returns 1 when the set changed (published to the workers), 0 when nothing changed, or -EINVAL
 * when a resource was skipped, with every failure's field path in `err` ("; " between them) and
 * `*changed` (NULL ok) telling whether the rest changed the set. */
int lds_update(struct lds *l, const char *version_info,
               struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
               struct err *err, bool *changed);

/* Warming versions whose routes arrived (lds_route_answered) start serving: reload.c calls it
 * after RDS responses (their fetch timeouts run on a timer of the lds). */
void lds_warm_check(struct lds *l);

/* `fn(ud, c, since, now, next)` says whether a warming version (container `c`, added at `since`)
 * still waits for something besides its routes (reload.c: its SDS secrets over ADS), lowering
 * `*next` to the earliest fetch deadline it waits for. */
void lds_set_wait_hook(struct lds *l,
                       bool (*fn)(void *ud, const struct config *c, double since, double now,
                                  double *next),
                       void *ud);

/* `fn(ud)` runs after warming versions started serving outside lds_update (lds_warm_check, the
 * fetch timer): the versions they replaced stopped serving, so the names in use may change. */
void lds_set_warm_hook(struct lds *l, void (*fn)(void *ud), void *ud);

/* /drain_listeners or the server's drain stopped the workers' listeners (main thread, before
 * the workers are told): no version is added or modified from now on (their sockets would be
 * dup'ed from descriptors the workers close). */
void lds_stop_listening(struct lds *l);

/* Once the workers exist: hands them the set in force. */
void lds_publish_all(struct lds *l);

/* listener_manager.* (main-written). */
struct lds_stats *lds_get_stats(struct lds *l);

/* The dynamic listeners for the admin (/stats: active and draining versions; /listeners: the
 * active ones). Valid until the next update or free. */
struct rds_stats;
struct lds_view {
    const struct config *cfg;             /* the container: cfg->listeners[0] */
    const struct rds_stats *rds;          /* [cfg->n_rds]: http.<prefix>.rds.<name>.* */
    struct stats_block *const *blocks;    /* [n_workers] */
    const struct sockaddr_storage *bound; /* the address its sockets got */
    bool active;                          /* else draining */
};
uint32_t lds_views(struct lds *l, const struct lds_view **v);

/* Adds "dynamic_listeners" [{name, active_state {version_info, listener, last_updated}}] and
 * "version_info" to the ListenersConfigDump entry of /config_dump's `configs`. */
void lds_dump(const struct lds *l, json_t *configs);

/* ---- RDS in LDS listeners (HttpConnectionManager.rds with `ads: {}`) ----
 *
 * A version's connection managers with `rds` are subscriptions of its own container
 * (cfg->rds[idx], hcm_cfg.rds_index). The version owns, per subscription, main's state (the
 * table in force, its content hash, its http.<prefix>.rds.<name>.* stats) and, per worker, the
 * mailbox its workers route with (lds_listener_rds). reload.c compiles and publishes; the ADS
 * client subscribes the route names of the active versions (they follow the listener set). */
struct route_snap;
struct worker_rds;
struct lds_route_sub {
    const struct route_snap *cur; /* main's reference on the table in force, or NULL: none yet
                                   * (the connection manager's empty table: 404 NR) */
    uint64_t hash;                /* cur's content hash (0: none) */
    bool answered;                /* a response for its name arrived (accepted or not): it no
                                   * longer keeps the version warming */
    struct rds_stats *st;         /* owned by the version */
};

/* The secret roles outside the listeners: `fn(ud, c)` returns a secret name over ADS that
 * listener container `c` uses in the other role (certificate or validation context) than some
 * CDS cluster in force does (sds_role_conflict), or NULL; such a listener is skipped with its
 * path, as against the bootstrap and the other listeners. NULL: none. */
void lds_set_peer_conflict(struct lds *l, const char *(*fn)(void *ud, const struct config *c),
                           void *ud);

/* The versions in force: the current one of each name (serving or warming) and the one a warming
 * version replaces (it serves until then). NULL starts, NULL ends. Valid until the next update. */
struct lds_listener *lds_active_next(struct lds *l, struct lds_listener *prev);
/* `*subs` receives the version's route subscriptions, [return value] = cfg->n_rds. */
uint32_t lds_listener_route_subs(struct lds_listener *ll, struct lds_route_sub **subs);
/* Makes `snap` subscription `idx`'s table in force (takes main's reference from the caller) and
 * posts it to every worker's mailbox (those not made yet find it when they start the version). */
void lds_route_set(struct lds *l, struct lds_listener *ll, uint32_t idx,
                   const struct route_snap *snap);
/* `fn(ud, nv, old)` runs for each new version of an update (`old`: the version it replaces, or
 * NULL) before the set is published: reload.c gives it the routes its names already have and
 * the SDS secrets already received (proxy/sds_set.h). */
void lds_set_route_hook(struct lds *l,
                        void (*fn)(void *ud, struct lds_listener *nv, struct lds_listener *old),
                        void *ud);
const struct config *lds_listener_cfg(const struct lds_listener *ll);
/* A response for subscription `idx`'s name reached the version (lds_warm_check follows). */
void lds_route_answered(struct lds_listener *ll, uint32_t idx);

/* ---- for the workers (worker.c) ---- */
/* Worker `worker`'s RDS mailboxes for the version's subscriptions ([cfg->n_rds]). */
struct worker_rds *lds_listener_rds(struct lds_listener *ll, uint32_t worker);
const struct config *lds_listener_cfg(const struct lds_listener *ll);
struct stats_block *lds_listener_block(const struct lds_listener *ll, uint32_t worker);
struct access_log_sink *const *lds_listener_sinks(const struct lds_listener *ll);
/* Worker `worker`'s socket (its to close). Called once per worker. */
int lds_listener_take_fd(struct lds_listener *ll, uint32_t worker);
/* How long a removed version's connections may drain (--drain-time-s: lds_set_drain_time). */
double lds_listener_drain_s(const struct lds_listener *ll);
void lds_listener_ref(struct lds_listener *ll);
void lds_listener_unref(struct lds_listener *ll); /* wakes main, which frees unused versions */

uint32_t lds_pub_count(const struct lds_pub *p);
struct lds_listener *lds_pub_at(const struct lds_pub *p, uint32_t i);
void lds_pub_ref(struct lds_pub *p);
void lds_pub_unref(struct lds_pub *p); /* NULL ok */

/* Binds and listens on `ss` (`len` bytes) with SO_REUSEADDR and SO_REUSEPORT, non-blocking; an
 * IPv6 address IPv6 only unless `ipv4_compat` (IPV6_V6ONLY, as Envoy). Returns the socket or
 * -errno. (main.c binds the bootstrap's listeners with it.) */
int lds_bind(const struct sockaddr_storage *ss, socklen_t len, bool ipv4_compat);
