/* admin: Envoy's admin interface on `admin.address`, served from the main thread's loop:
 * GET /server_info /ready /stats (?filter= ?format=json ?usedonly) /stats/prometheus /clusters
 * /config_dump /listeners (?format=json) /memory /runtime /help, POST /healthcheck/fail
 * /healthcheck/ok /drain_listeners /quitquitquit /logging?level= /reset_counters. POST-only
 * endpoints refuse GET with 405, as Envoy does. Each connection carries one request and is closed
 * after the response. Thread: main. */
#pragma once

#include <ev.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/err.h"

struct config;
struct stats_block;
struct cluster_shared;
struct rds_stats;
struct lds_view;
struct lds_stats;
struct sds_stats;
struct sds_stat_view;
struct ads_stats;
struct sock_addr;
struct cluster_view;
struct cm_stats;

enum server_state {
    SERVER_PRE_INITIALIZING, /* clusters warming (first health checks) */
    SERVER_INITIALIZING,     /* waiting for the first ADS resources (proxy/xds/ads.h) */
    SERVER_LIVE,
    SERVER_DRAINING,
};

/* /drain_listeners' query parameters (Envoy's admin). */
enum {
    ADMIN_DRAIN_GRACEFUL = 1u << 0,     /* drain for --drain-time-s, then stop the listeners */
    ADMIN_DRAIN_INBOUND_ONLY = 1u << 1, /* only listeners with traffic_direction INBOUND */
    ADMIN_DRAIN_SKIP_EXIT = 1u << 2,    /* with graceful: the listeners stay open after it */
};

/* What the admin reads and the actions it triggers; owned by main. */
struct admin_ctx {
    const struct config *cfg;            /* borrowed: the serving snapshot */
    struct stats_block *const *blocks;   /* borrowed: one per worker */
    const struct cluster_shared *shared; /* borrowed: [cfg->n_clusters], cluster-wide state
                                          * (circuit breakers, health); may be NULL */
    uint32_t n_blocks;
    const struct rds_stats *rds; /* borrowed: [cfg->n_rds], RDS stats (proxy/reload.h); or NULL */
    const struct sds_stats *sds; /* borrowed: [cfg->n_sds], SDS stats (proxy/reload.h); or NULL */
    const struct ads_stats *ads; /* borrowed: control_plane.* (proxy/xds/ads.h); or NULL */
    /* borrowed: [cfg->n_listeners], the address each listener is bound to (getsockname: the
     * kernel's port for a listener configured with port 0), for /listeners; or NULL (the
     * configured addresses are shown) */
    const struct sockaddr_storage *listener_addrs;
    /* The clusters added at run time (CDS) for /stats and /clusters, and cluster_manager.*
     * stats (proxy/cds.h); or NULL. What it hands out is valid until main's next update. */
    void (*dyn_clusters)(void *ud, const struct cluster_view **v, uint32_t *n,
                         const struct cm_stats **cm);
    /* The listeners added at run time (LDS; proxy/lds.h) for /stats and /listeners, and
     * listener_manager.* stats; or NULL. Valid until main's next update. */
    void (*dyn_listeners)(void *ud, const struct lds_view **v, uint32_t *n,
                          const struct lds_stats **lm);
    /* sds.<name>.* of the ADS secrets only LDS listeners and CDS clusters use (proxy/reload.h);
     * or NULL. Valid until main's next call. */
    void (*dyn_secrets)(void *ud, const struct sds_stat_view **v, uint32_t *n);
    /* Adds what changed at run time (RDS route configs) to /config_dump's "configs"; or NULL. */
    void (*dump_dynamic)(void *ud, json_t *configs);
    /* borrowed: asks the workers for their ORIGINAL_DST hosts (worker.h worker_od_*), listed
     * by /clusters; or NULL */
    struct od_reports *od;
    ev_tstamp start_time;
    enum server_state state;
    bool healthcheck_failed;
    const char *options_json; /* borrowed: command-line options as a JSON object */
    void (*quit)(void *ud);   /* POST /quitquitquit */
    /* POST /drain_listeners: ADMIN_DRAIN_* bits from its query (?graceful, ?inboundonly,
     * ?skip_exit) */
    void (*drain_listeners)(void *ud, unsigned flags);
    /* POST /healthcheck/fail and /healthcheck/ok, after healthcheck_failed changed; or NULL */
    void (*healthcheck_changed)(void *ud);
    void *ud;
};

struct admin;

/* Binds `addr` and starts serving on `loop`. Returns NULL with `err` set on failure. */
struct admin *admin_start(struct ev_loop *loop, const struct sock_addr *addr, struct admin_ctx *ctx,
                          struct err *err);

/* Opens the admin access log at `path` (the bootstrap's admin.access_log or access_log_path):
 * from then on each admin request gets one line in Envoy's default access-log format, written
 * when its answer is (Envoy's admin access log). Returns 0, or -EINVAL with
 * "admin.access_log: ..." in `err`. Thread: main. */
int admin_open_access_log(struct admin *a, const char *path, struct err *err);

/* The server-wide part of the stats as /stats shows it (server.*, CDS/LDS/RDS/SDS stats), for
 * the stats sinks (proxy/stats/sink.h). Borrowed pointers, valid until main's next update.
 * Thread: main. */
struct server_stats_view;
void admin_stats_view(struct admin_ctx *x, struct server_stats_view *v);

/* Stops listening and closes every admin connection. */
void admin_stop(struct admin *a);
