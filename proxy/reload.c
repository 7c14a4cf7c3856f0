/* reload: run-time configuration changes on the main thread (see reload.h). Owns the inotify
 * descriptor, main's reference on each subscription's current route table, the last accepted
 * SDS secrets (for /config_dump), and the RDS and SDS stats. Builds happen here, synchronously
 * in the inotify callback; workers only ever receive a finished, validated table, and new
 * certificates reach them through their contexts' tls_live (proxy/net/tls.h). */
#include "proxy/reload.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/cds.h"
#include "proxy/lds.h"
#include "proxy/config/build.h"
#include "proxy/config/build_tls.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/config/sds.h"
#include "proxy/core/hash.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/dns_refresh.h"
#include "proxy/http/access_log.h"
#include "proxy/net/resolver.h"
#include "proxy/stats/stats.h"
#include "proxy/sds_set.h"
#include "proxy/worker.h"

#define REWATCH_S 0.5 /* how often a missing watched directory is looked for */

/* One watched file: subs[0..n_rds) are the RDS subscriptions (cfg->rds[i]), then
 * subs[n_rds + j] the SDS ones (cfg->sds[j]). */
struct sub {
    bool sds;                  /* an SDS subscription (cfg->sds[idx]), else RDS (cfg->rds[idx]) */
    bool cds;                  /* the CDS file (cfg->cds_path), the last fixed sub */
    bool lds;                  /* the LDS file (cfg->lds_path), after the CDS one */
    bool eds;                  /* an EDS cluster's file: subs[n_fixed..) (owned path, label) */
    bool eds_loaded;           /* EDS: its cluster had its endpoints when the subs were made */
    uint32_t idx;              /* in cfg->rds or cfg->sds */
    const char *path;          /* borrowed: the file */
    const char *label;         /* borrowed: route_config_name or the secret's name, for logs */
    const struct rds_cfg *cfg; /* RDS: borrowed from the snapshot */
    char *dir;                 /* owned: the watched directory */
    char *name;                /* owned: the file's name in `dir`; NULL: any move (watched_dir) */
    uint32_t mask;             /* the events `dir` is watched for */
    int wd;                    /* inotify watch, or -1 (lost: retried by the rewatch timer) */
    const struct route_snap *cur; /* ref: the table in force, or NULL for the startup one */
    uint64_t hash;                /* content hash of the table in force */
    bool dirty;                   /* an event arrived in this batch */
    /* SDS: the secret in force when it changed since startup (owned; NULL: the startup one),
     * its version_info (owned) and when it was applied (Unix seconds), for /config_dump */
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *secret;
    char *version;
    double updated;
};

struct reload {
    struct ev_loop *loop;
    const struct config *cfg;
    struct worker *const *workers;
    uint32_t n_workers;
    int ifd; /* owned: inotify, or -1 */
    ev_io io;
    ev_timer rewatch; /* runs while a watched directory is missing (REWATCH_S) */
    struct sub *subs; /* owned; [n_subs]: RDS, SDS, CDS (n_fixed), then one per EDS cluster */
    uint32_t n_subs;
    uint32_t n_fixed;
    struct rds_stats *stats;     /* owned; [cfg->n_rds] */
    struct sds_stats *sds_stats; /* owned; [cfg->n_sds] */
    struct cds *cds;             /* owned: the dynamic clusters (cds.h) */
    struct lds *lds;             /* owned: the dynamic listeners (lds.h) */
    void (*cds_hook)(void *ud);  /* reload_set_cds_hook: the ADS client's, or NULL */
    void (*lds_hook)(void *ud);  /* reload_set_lds_hook: the ADS client's, or NULL */
    void *lds_hook_ud;
    void *cds_hook_ud;
    bool in_hook; /* inside cds_hook: reload_endpoints leaves the route rebuild to the CDS */
    void (*eds_timeout)(void *ud, const char *cluster); /* reload_set_eds_timeout_hook */
    void *eds_timeout_ud;
    struct sds_set secrets;          /* the ADS secrets by name (bootstrap and dynamic users) */
    struct sds_stat_view *sds_views; /* owned: reload_sds_dyn_stats */
    void (*sds_hook)(void *ud);      /* reload_set_sds_hook: the ADS client's, or NULL */
    void *sds_hook_ud;
    struct dns_refresh *dns;    /* owned: STRICT_DNS and LOGICAL_DNS names resolved again */
    bool boot_dns_started;      /* cds_boot_dns_start ran */
    void (*dns_init)(void *ud); /* reload_dns_hold_init's callback */
    void *dns_init_ud;
};

static const char *sub_kind(const struct sub *sb)
{
    return sb->eds ? "eds" : sb->cds ? "cds" : sb->lds ? "lds" : sb->sds ? "sds" : "rds";
}

static void watch(struct reload *r, struct sub *sb, const struct str *watched_dir);

static void set_gauge(stat_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

/* Envoy's `version` gauge: a hash of version_info. */
static uint64_t version_hash(const char *v)
{
    return hash_xxh64(v, strlen(v), 0);
}

static void publish(struct reload *r, uint32_t idx, const struct route_snap *snap)
{
    for (uint32_t w = 0; w < r->n_workers; w++) {
        if (r->workers[w] != NULL) { /* NULL: at startup, before reload_publish_all */
            worker_routes_publish(r->workers[w], idx, snap);
        }
    }
}

/* The current CDS set to every worker, for tcp_proxy's clusters named by name only (the
 * bootstrap's, or an LDS listener's: any may name one). */
static void publish_cds(struct reload *r)
{
    bool wanted = r->cfg->tcp_cds || (r->cfg->has_lds && r->cfg->has_cds);
    for (uint32_t w = 0; wanted && w < r->n_workers; w++) {
        if (r->workers[w] != NULL) {
            worker_cds_publish(r->workers[w], cds_rds_clusters(r->cds));
        }
    }
}

void reload_publish_all(struct reload *r)
{
    publish_cds(r);
    for (uint32_t k = 0; k < r->cfg->n_rds; k++) {
        if (r->subs[k].cur != NULL) {
            publish(r, k, r->subs[k].cur);
        }
    }
    lds_publish_all(r->lds);
}

/* reload_routes without counting the attempt. */
static int apply(struct reload *r, uint32_t idx, const char *version_info,
                 struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                 struct err *err)
{
    struct sub *sb = &r->subs[idx];
    struct rds_stats *st = &r->stats[idx];
    const struct rds_cfg *rc = sb->cfg;
    const char *version = version_info != NULL ? version_info : "";
    const struct route_snap *snap = NULL;
    int rv = rds_snap_build_dyn(r->cfg, idx, version, resources, n, sb->hash, where,
                                cds_rds_clusters(r->cds), &snap, err);
    if (rv < 0) {
        STAT_INC(st->update_rejected);
        LOG_W("rds '%.*s' (http.%.*s): update rejected, keeping version '%s': %s",
              STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix),
              sb->cur != NULL ? sb->cur->version_info.p : rc->version_info.p, err->msg);
        return rv;
    }
    uint64_t now_ms = (uint64_t)(ev_time() * 1000.0);
    STAT_INC(st->update_success);
    set_gauge(&st->update_time, now_ms);
    if (rv == RDS_EMPTY) {
        STAT_INC(st->update_empty);
        LOG_W("rds '%.*s' (http.%.*s): %s has no resource; keeping the current routes",
              STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix),
              where != NULL ? where : "the update");
        return 0;
    }
    set_gauge(&st->version, version_hash(version));
    if (rv == RDS_UNCHANGED) {
        LOG_D("rds '%.*s': version '%s' is unchanged", STR_FMT(rc->route_config_name), version);
        return 0;
    }
    publish(r, idx, snap);
    rds_snap_unref(sb->cur);
    sb->cur = snap; /* main's reference, from rds_snap_build */
    sb->hash = snap->content_hash;
    STAT_INC(st->config_reload);
    set_gauge(&st->config_reload_time_ms, now_ms);
    LOG_I("rds '%.*s' (http.%.*s): version '%s' is live", STR_FMT(rc->route_config_name),
          STR_FMT(rc->hcm->stat_prefix), version);
    return 0;
}

int reload_routes(struct reload *r, uint32_t idx, const char *version_info,
                  struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                  struct err *err)
{
    STAT_INC(r->stats[idx].update_attempt);
    return apply(r, idx, version_info, resources, n, where, err);
}

int reload_rds_file(struct reload *r, uint32_t idx)
{
    struct sub *sb = &r->subs[idx];
    const struct rds_cfg *rc = sb->cfg;
    struct err err;
    err_clear(&err);
    STAT_INC(r->stats[idx].update_attempt);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    int rv = rds_read_file(rc->path.p, &resp, &err);
    if (rv == -EIO) {
        STAT_INC(r->stats[idx].update_failure);
        LOG_W("rds '%.*s' (http.%.*s): update failed, keeping the current routes: %s",
              STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix), err.msg);
        return rv;
    }
    if (rv != 0) {
        STAT_INC(r->stats[idx].update_rejected);
        LOG_W("rds '%.*s' (http.%.*s): update rejected, keeping the current routes: %s",
              STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix), err.msg);
        return rv;
    }
    rv = apply(r, idx, resp->version_info, resp->resources, resp->n_resources, rc->path.p, &err);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

/* ---- RDS in LDS listeners (lds.h: a version's own subscriptions) ---- */

/* reload_routes for subscription `idx` of LDS version `ll`: the same rules, stats and logs. */
static int apply_lds(struct reload *r, struct lds_listener *ll, uint32_t idx,
                     const char *version_info, struct Google__Protobuf__Any *const *resources,
                     size_t n, const char *where, struct err *err)
{
    const struct config *c = lds_listener_cfg(ll);
    const struct rds_cfg *rc = &c->rds[idx];
    struct lds_route_sub *subs = NULL;
    lds_listener_route_subs(ll, &subs);
    struct lds_route_sub *sb = &subs[idx];
    struct rds_stats *st = sb->st;
    STAT_INC(st->update_attempt);
    lds_route_answered(ll, idx); /* a warming version waits no longer (Envoy: ready either way) */
    const char *version = version_info != NULL ? version_info : "";
    const struct route_snap *snap = NULL;
    int rv = rds_snap_build_dyn(c, idx, version, resources, n, sb->hash, where,
                                cds_rds_clusters(r->cds), &snap, err);
    if (rv < 0) {
        STAT_INC(st->update_rejected);
        LOG_W("rds '%.*s' (http.%.*s, listener '%.*s'): update rejected: %s",
              STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix),
              STR_FMT(c->listeners[0].name), err->msg);
        return rv;
    }
    uint64_t now_ms = (uint64_t)(ev_time() * 1000.0);
    STAT_INC(st->update_success);
    set_gauge(&st->update_time, now_ms);
    if (rv == RDS_EMPTY) {
        STAT_INC(st->update_empty);
        return 0;
    }
    set_gauge(&st->version, version_hash(version));
    if (rv == RDS_UNCHANGED) {
        return 0;
    }
    lds_route_set(r->lds, ll, idx, snap); /* main's reference, from rds_snap_build */
    STAT_INC(st->config_reload);
    set_gauge(&st->config_reload_time_ms, now_ms);
    LOG_I("rds '%.*s' (http.%.*s, listener '%.*s'): version '%s' is live",
          STR_FMT(rc->route_config_name), STR_FMT(rc->hcm->stat_prefix),
          STR_FMT(c->listeners[0].name), version);
    return 0;
}

int reload_lds_routes(struct reload *r, const char *name, const char *version_info,
                      struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                      struct err *err)
{
    int rv = 0;
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL;
         ll = lds_active_next(r->lds, ll)) {
        const struct config *c = lds_listener_cfg(ll);
        for (uint32_t k = 0; k < c->n_rds; k++) {
            if (!c->rds[k].ads || strcmp(c->rds[k].route_config_name.p, name) != 0) {
                continue;
            }
            struct err e;
            err_clear(&e);
            if (apply_lds(r, ll, k, version_info, resources, n, where, &e) != 0 && rv == 0) {
                rv = -EINVAL;
                *err = e;
            }
        }
    }
    lds_warm_check(r->lds); /* listeners that waited for these routes take traffic now */
    return rv;
}

/* A new LDS version (before the workers have it): each subscription takes the table its name
 * has already (the replaced version's, else another active version's), compiled again for its
 * own connection manager: a server does not resend a route configuration whose name stays
 * subscribed. Without one it routes on its empty table until RDS brings one. */
/* The table in force of `ll`'s subscription to `name`, or NULL. */
static const struct route_snap *sub_table(struct lds_listener *ll, const char *name)
{
    const struct config *c = lds_listener_cfg(ll);
    struct lds_route_sub *subs = NULL;
    lds_listener_route_subs(ll, &subs);
    for (uint32_t j = 0; j < c->n_rds; j++) {
        if (c->rds[j].ads && subs[j].cur != NULL &&
            strcmp(c->rds[j].route_config_name.p, name) == 0) {
            return subs[j].cur;
        }
    }
    return NULL;
}

/* ---- SDS over ADS in dynamic listeners and clusters (proxy/sds_set.h) ---- */

/* Gives container `c`'s ADS subscriptions the secrets already accepted for their names (a new
 * LDS version or CDS cluster, before any worker sees it), so a listener or cluster that names a
 * secret in use serves with it at once; a name that has none yet leaves its contexts failing
 * closed until it arrives (reload_sds_secret). */
static void seed_container(struct reload *r, const struct config *c)
{
    for (uint32_t k = 0; k < c->n_sds; k++) {
        struct sds_cfg *sc = (struct sds_cfg *)&c->sds[k]; /* `seen`: main's, see config.h */
        const struct sds_entry *e = sc->ads ? sds_set_find(&r->secrets, sc->name.p) : NULL;
        if (e == NULL || !sds_set_needs_seed(e, sc->seen)) {
            continue;
        }
        struct err err;
        err_clear(&err);
        int rv = sc->validation
                     ? sds_apply_users(e->pb, NULL, 0, sc->users, sc->n_users, "secret", &err)
                     : sds_apply_users(e->pb, sc->users, sc->n_users, NULL, 0, "secret", &err);
        if (rv != 0) {
            LOG_W("sds '%s': the secret in force does not fit a new listener or cluster (its TLS "
                  "fails closed until the next update): %s",
                  sc->name.p, err.msg);
        }
        sc->seen = e->gen;
    }
}

/* cds_warm_ops.seed: a bootstrap STRICT_DNS cluster's new version (proxy/cds.h). */
static void warm_seed(void *ud, const struct config *c)
{
    seed_container(ud, c);
}

/* The dynamic containers in force: the active LDS versions', then the current CDS clusters'
 * (and the bootstrap STRICT_DNS clusters' current versions, cds_cluster_config).
 * `*lds` and `*i` carry the position (start with NULL and 0). */
static const struct config *next_container(struct reload *r, struct lds_listener **lds, uint32_t *i)
{
    if (*i == 0) {
        *lds = lds_active_next(r->lds, *lds);
        if (*lds != NULL) {
            return lds_listener_cfg(*lds);
        }
    }
    return cds_cluster_config(r->cds, (*i)++);
}

/* The names in use follow the listener and cluster sets: a name nobody uses goes (with its
 * secret), and the ADS client is told when the name set changed. */
static void sds_census(struct reload *r)
{
    sds_set_begin(&r->secrets);
    struct lds_listener *ll = NULL;
    uint32_t i = 0;
    for (const struct config *c = next_container(r, &ll, &i); c != NULL;
         c = next_container(r, &ll, &i)) {
        for (uint32_t k = 0; k < c->n_sds; k++) {
            if (c->sds[k].ads) {
                sds_set_use(&r->secrets, c->sds[k].name.p, c->sds[k].initial_fetch_timeout_ms);
            }
        }
    }
    if (sds_set_end(&r->secrets) && r->sds_hook != NULL) {
        r->sds_hook(r->sds_hook_ud);
    }
}

static void lds_seed(void *ud, struct lds_listener *nv, struct lds_listener *old)
{
    struct reload *r = ud;
    const struct config *c = lds_listener_cfg(nv);
    seed_container(r, c);
    for (uint32_t k = 0; k < c->n_rds; k++) {
        const char *name = c->rds[k].route_config_name.p;
        const struct route_snap *donor = old != NULL ? sub_table(old, name) : NULL;
        for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL && donor == NULL;
             ll = lds_active_next(r->lds, ll)) {
            donor = ll != nv ? sub_table(ll, name) : NULL;
        }
        if (donor == NULL) {
            continue;
        }
        const struct route_snap *snap = NULL;
        struct err e;
        err_clear(&e);
        if (rds_snap_rebuild(c, k, donor, cds_rds_clusters(r->cds), false, &snap, &e) != 0) {
            LOG_W("rds '%s' (listener '%.*s'): the routes in force do not compile for it; empty "
                  "until the next update: %s",
                  name, STR_FMT(c->listeners[0].name), e.msg);
            continue;
        }
        lds_route_set(r->lds, nv, k, snap);
    }
}

/* A warming LDS version (container `c`, added at `since`) waits for each of its SDS secrets over
 * ADS that has not arrived, until its initial_fetch_timeout (0: for ever), as Envoy's listener
 * warming waits for its SDS init targets. */
/* A secret name over ADS keeps one role across listeners and clusters (lds_set_peer_conflict,
 * cds_set_peer_conflict): listener container `c` against the CDS clusters in force. */
static const char *lds_role_vs_clusters(void *ud, const struct config *c)
{
    struct reload *r = ud;
    const struct config *o;
    for (uint32_t i = 0; (o = cds_cluster_config(r->cds, i)) != NULL; i++) {
        const char *conflict = sds_role_conflict(c, o);
        if (conflict != NULL) {
            return conflict;
        }
    }
    return NULL;
}

/* Cluster container `c` against the LDS listeners in force. */
static const char *cds_role_vs_listeners(void *ud, const struct config *c)
{
    struct reload *r = ud;
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL;
         ll = lds_active_next(r->lds, ll)) {
        const char *conflict = sds_role_conflict(c, lds_listener_cfg(ll));
        if (conflict != NULL) {
            return conflict;
        }
    }
    return NULL;
}

static bool lds_secret_wait(void *ud, const struct config *c, double since, double now,
                            double *next)
{
    struct reload *r = ud;
    bool waits = false;
    for (uint32_t k = 0; k < c->n_sds; k++) {
        const struct sds_cfg *sc = &c->sds[k];
        const struct sds_entry *e = sc->ads ? sds_set_find(&r->secrets, sc->name.p) : NULL;
        if (!sc->ads || (e != NULL && e->arrived)) {
            continue;
        }
        if (sc->initial_fetch_timeout_ms > 0) {
            double at = since + (double)sc->initial_fetch_timeout_ms / 1000.0;
            if (at <= now) {
                continue; /* timed out: it serves, failing closed until the secret comes */
            }
            *next = at < *next ? at : *next;
        }
        waits = true;
    }
    return waits;
}

/* Warming LDS versions started serving and the versions they replaced stopped: the route and
 * secret names in use follow (the ADS client unsubscribes what nobody uses any more). */
static void lds_warmed(void *ud)
{
    struct reload *r = ud;
    sds_census(r);
    if (r->lds_hook != NULL) {
        r->lds_hook(r->lds_hook_ud);
    }
}

/* The LDS versions' tables compiled again against the current CDS set (rebuild_routes). */
static void rebuild_lds_routes(struct reload *r)
{
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL;
         ll = lds_active_next(r->lds, ll)) {
        const struct config *c = lds_listener_cfg(ll);
        struct lds_route_sub *subs = NULL;
        lds_listener_route_subs(ll, &subs);
        for (uint32_t k = 0; k < c->n_rds; k++) {
            if (subs[k].cur == NULL) {
                continue;
            }
            const struct route_snap *snap = NULL;
            struct err e;
            err_clear(&e);
            if (rds_snap_rebuild(c, k, subs[k].cur, cds_rds_clusters(r->cds), false, &snap, &e) !=
                0) {
                LOG_E("rds '%.*s': cannot follow the CDS update, keeping its table: %s",
                      STR_FMT(c->rds[k].route_config_name), e.msg);
                continue;
            }
            lds_route_set(r->lds, ll, k, snap);
        }
    }
}

uint32_t reload_lds_route_names(struct reload *r, const char **names, uint64_t *timeouts,
                                uint32_t cap)
{
    uint32_t n = 0;
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL;
         ll = lds_active_next(r->lds, ll)) {
        const struct config *c = lds_listener_cfg(ll);
        for (uint32_t k = 0; k < c->n_rds; k++) {
            if (!c->rds[k].ads) {
                continue;
            }
            bool dup = false;
            for (uint32_t j = 0; j < n && j < cap && !dup; j++) {
                dup = strcmp(names[j], c->rds[k].route_config_name.p) == 0;
            }
            if (dup) {
                continue;
            }
            if (n < cap) {
                names[n] = c->rds[k].route_config_name.p;
                timeouts[n] = c->rds[k].initial_fetch_timeout_ms;
            }
            n++;
        }
    }
    return n;
}

void reload_set_lds_hook(struct reload *r, void (*fn)(void *ud), void *ud)
{
    r->lds_hook = fn;
    r->lds_hook_ud = ud;
}

/* ---- CDS ---- */

/* Every RDS table in force compiled again against the current CDS clusters, and published. */
static void rebuild_routes(struct reload *r)
{
    /* new cluster versions (CDS, EDS) get the secrets in force before any table names them */
    for (uint32_t i = 0; cds_cluster_config(r->cds, i) != NULL; i++) {
        seed_container(r, cds_cluster_config(r->cds, i));
    }
    sds_census(r);
    publish_cds(r);
    for (uint32_t k = 0; k < r->cfg->n_rds; k++) {
        struct sub *sb = &r->subs[k];
        const struct route_snap *snap = NULL;
        struct err e;
        err_clear(&e);
        if (sb->cur == NULL && sb->cfg->pb == NULL) {
            continue; /* over ADS, no routes yet: the empty table names no cluster */
        }
        if (rds_snap_rebuild(r->cfg, k, sb->cur, cds_rds_clusters(r->cds), false, &snap, &e) != 0) {
            LOG_E("rds '%s': cannot follow the CDS update, keeping its table: %s", sb->label,
                  e.msg);
            continue;
        }
        publish(r, k, snap);
        rds_snap_unref(sb->cur);
        sb->cur = snap;
    }
    rebuild_lds_routes(r);
}

/* ---- warming (cds.h) ---- */

static void warm_fetch_timeout(void *ud, const char *cluster)
{
    struct reload *r = ud;
    if (r->eds_timeout != NULL) {
        r->eds_timeout(r->eds_timeout_ud, cluster);
    }
}

/* A warming cluster became active (its first health checks, its fetch timeout): the tables
 * name it from now on. */
static void warm_activated(void *ud)
{
    rebuild_routes(ud);
}

void reload_set_eds_timeout_hook(struct reload *r, void (*fn)(void *ud, const char *cluster),
                                 void *ud)
{
    r->eds_timeout = fn;
    r->eds_timeout_ud = ud;
}

/* ---- STRICT_DNS (dns_refresh.h) ---- */

static struct eds_stats *dns_stats(void *ud, const char *cluster)
{
    struct reload *r = ud;
    return cds_dns_stats(r->cds, cluster);
}

/* A LOGICAL_DNS cluster's host moves to its name's latest first address: new connections go
 * there, open ones stay (as Envoy's logical host). */
static void logical_moved(struct reload *r, const struct cluster_cfg *cc)
{
    if (cc->n_endpoints != 1 || cc->endpoints[0].logical == NULL || cc->n_dns_eps != 1) {
        return;
    }
    const struct config_dns *dns = dns_refresh_dns(r->dns);
    const char *addr = NULL;
    const char *host = cc->dns_eps[0].host.p;
    if (dns->answer(dns->ud, cc->name.p, host, &addr, 1) == 1 &&
        logical_addr_set(cc->endpoints[0].logical, addr, cc->dns_eps[0].port)) {
        LOG_I("cluster '%.*s': new connections go to %s:%u ('%s')", STR_FMT(cc->name), addr,
              cc->dns_eps[0].port, host);
    }
}

/* An answer changed: the cluster's hosts as an EDS update changes them, then the tables (a
 * LOGICAL_DNS cluster's host moves in place). */
static void dns_changed(void *ud, const char *cluster)
{
    struct reload *r = ud;
    const struct cluster_cfg *cc = config_find_cluster(r->cfg, str_from_c(cluster));
    if (cc == NULL) {
        cc = cds_dns_cluster(r->cds, cluster);
    }
    if (cc != NULL && cc->type == CLUSTER_LOGICAL_DNS) {
        logical_moved(r, cc);
    } else if (cds_update_dns(r->cds, cluster) == 1) {
        rebuild_routes(r);
    }
}

/* A name's first lookup came back: a warming STRICT_DNS cluster may be initialized. */
static void dns_resolved(void *ud, const char *cluster)
{
    struct reload *r = ud;
    if (cds_dns_resolved(r->cds, cluster) == 1) {
        rebuild_routes(r);
    }
}

static void dns_init_done(void *ud)
{
    struct reload *r = ud;
    if (r->dns_init != NULL) {
        r->dns_init(r->dns_init_ud);
    }
}

/* Whether bootstrap cluster `cc` is resolved again: LOGICAL_DNS, and STRICT_DNS unless it is
 * left as it was built (cds_boot_dns_start: before it, every one). */
static bool boot_refreshed(const struct reload *r, const struct cluster_cfg *cc)
{
    return cc->type == CLUSTER_LOGICAL_DNS ||
           (cc->type == CLUSTER_STRICT_DNS && (!r->boot_dns_started || cc->boot_dns != NULL));
}

/* The refresher follows the bootstrap's DNS clusters and the current CDS STRICT_DNS and
 * LOGICAL_DNS clusters (after every CDS change). */
static void sync_dns(struct reload *r)
{
    if (r->dns == NULL) {
        return;
    }
    uint32_t nb = 0;
    for (uint32_t i = 0; i < r->cfg->n_clusters; i++) {
        nb += boot_refreshed(r, &r->cfg->clusters[i]) ? 1u : 0u;
    }
    uint32_t n = cds_dns_clusters(r->cds, NULL, 0);
    const struct cluster_cfg **v = xcalloc(nb + n ? nb + n : 1, sizeof(*v));
    nb = 0;
    for (uint32_t i = 0; i < r->cfg->n_clusters; i++) {
        if (boot_refreshed(r, &r->cfg->clusters[i])) {
            v[nb++] = &r->cfg->clusters[i];
        }
    }
    cds_dns_clusters(r->cds, v + nb, n);
    dns_refresh_sync(r->dns, v, nb + n);
    free(v);
}

/* The bootstrap's STRICT_DNS names start with the addresses it was built with (it resolved
 * them at build time): the clusters' first versions have them, and startup does not wait for
 * them again. */
static void seed_boot_dns(struct reload *r)
{
    struct resolver_answer *a = xmalloc(sizeof(*a));
    for (uint32_t i = 0; i < r->cfg->n_clusters; i++) {
        const struct cluster_cfg *cc = &r->cfg->clusters[i];
        for (uint32_t h = 0; cc->type == CLUSTER_STRICT_DNS && h < cc->n_dns_hosts; h++) {
            memset(a, 0, sizeof(*a));
            for (uint32_t e = 0; e < cc->n_endpoints && a->n < RESOLVER_ADDRS_MAX; e++) {
                const struct endpoint_cfg *ep = &cc->endpoints[e];
                if (!str_eq(ep->hostname, cc->dns_hosts[h])) {
                    continue;
                }
                const struct sockaddr_storage *ss = &ep->addr.ss;
                const void *ip = ss->ss_family == AF_INET6
                                     ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                     : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
                if (inet_ntop(ss->ss_family, ip, a->addrs[a->n], RESOLVER_ADDR_MAX) == NULL) {
                    continue;
                }
                bool dup = false;
                for (size_t k = 0; k < a->n && !dup; k++) {
                    dup = strcmp(a->addrs[k], a->addrs[a->n]) == 0;
                }
                a->n += dup ? 0 : 1;
            }
            dns_refresh_seed(r->dns, cc->name.p, cc->dns_hosts[h].p, a);
        }
    }
    free(a);
}

void reload_set_boot_warm(struct reload *r, void (*fn)(void *ud), void *ud)
{
    cds_set_boot_warm(r->cds, fn, ud);
}

bool reload_warm_hold_init(struct reload *r, uint64_t bound_ms, void (*fn)(void *ud), void *ud)
{
    return r->cds != NULL && cds_hold_init(r->cds, bound_ms, fn, ud);
}

bool reload_dns_hold_init(struct reload *r, uint64_t bound_ms, void (*fn)(void *ud), void *ud)
{
    r->dns_init = fn;
    r->dns_init_ud = ud;
    return r->dns != NULL && dns_refresh_hold_init(r->dns, bound_ms);
}

struct resolver *reload_resolver(struct reload *r)
{
    return r->dns != NULL ? dns_refresh_resolver(r->dns) : NULL;
}

/* ---- EDS ---- */

/* reload_endpoints without counting the attempt; `rebuild`: compile the RDS tables again when
 * the endpoints changed (the caller does it after several). Returns 1 (changed), 0 or -EINVAL. */
static int apply_endpoints(struct reload *r, const char *cluster, const char *version_info,
                           struct Google__Protobuf__Any *const *resources, size_t n,
                           const char *where, struct err *err, bool rebuild)
{
    int rv = cds_update_endpoints(r->cds, cluster, version_info, resources, n, where, err);
    if (rv < 0) {
        LOG_W("eds '%s': update rejected, keeping the current endpoints: %s", cluster, err->msg);
        return rv;
    }
    if (rv == 1 && rebuild) {
        rebuild_routes(r);
    }
    return rv;
}

int reload_endpoints(struct reload *r, const char *cluster, const char *version_info,
                     struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                     struct err *err)
{
    struct eds_stats *st = cds_eds_stats(r->cds, cluster);
    if (st != NULL) {
        STAT_INC(st->update_attempt);
    }
    int rv = apply_endpoints(r, cluster, version_info, resources, n, where, err, !r->in_hook);
    return rv < 0 ? rv : 0;
}

/* Reads EDS cluster `cluster`'s file `path` and applies it. */
static int eds_file(struct reload *r, const char *cluster, const char *path, bool rebuild)
{
    struct eds_stats *st = cds_eds_stats(r->cds, cluster);
    if (st == NULL) {
        return 0; /* gone meanwhile */
    }
    STAT_INC(st->update_attempt);
    struct err err;
    err_clear(&err);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    int rv = rds_read_file(path, &resp, &err); /* any DiscoveryResponse */
    if (rv != 0) {
        STAT_INC(*(rv == -EIO ? &st->update_failure : &st->update_rejected));
        LOG_W("eds '%s': update %s, keeping the current endpoints: %s", cluster,
              rv == -EIO ? "failed" : "rejected", err.msg);
        return rv;
    }
    rv = apply_endpoints(r, cluster, resp->version_info, resp->resources, resp->n_resources, path,
                         &err, rebuild);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

static void free_secret(void *pb)
{
    protobuf_c_message_free_unpacked(pb, NULL);
}

static void free_eds_sub(struct sub *sb)
{
    free((char *)sb->path);
    free((char *)sb->label);
    free(sb->dir);
    free(sb->name);
}

/* One subscription per current EDS cluster, subs[n_fixed..): made again after every CDS change
 * (an event that arrived for a file that stays is kept). */
static void sync_eds_subs(struct reload *r)
{
    uint32_t n = cds_eds_clusters(r->cds, NULL, 0);
    struct cds_eds *v = xcalloc(n ? n : 1, sizeof(*v));
    cds_eds_clusters(r->cds, v, n);
    struct sub *nu = xcalloc(n ? n : 1, sizeof(*nu));
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].ads) {
            continue; /* no file: the ADS client subscribes it (reload_set_cds_hook) */
        }
        struct sub *sb = &nu[k++];
        sb->eds = true;
        sb->eds_loaded = v[i].loaded;
        sb->label = xstrdup(v[i].cluster);
        sb->path = xstrdup(v[i].path);
        for (uint32_t j = r->n_fixed; j < r->n_subs; j++) {
            if (strcmp(r->subs[j].label, sb->label) == 0 &&
                strcmp(r->subs[j].path, sb->path) == 0) {
                sb->dirty = r->subs[j].dirty;
            }
        }
        struct str wd = str_from_c(v[i].watched_dir);
        watch(r, sb, &wd);
    }
    for (uint32_t j = r->n_fixed; j < r->n_subs; j++) {
        free_eds_sub(&r->subs[j]);
    }
    r->subs = xrealloc(r->subs, (r->n_fixed + k + 1) * sizeof(*r->subs));
    if (k > 0) {
        memcpy(&r->subs[r->n_fixed], nu, k * sizeof(*nu));
    }
    r->n_subs = r->n_fixed + k;
    free(nu);
    free(v);
}

/* Counts the outcome `rv` of a state-of-the-world update (CDS, LDS: < 0 rejected, 0 accepted
 * and unchanged, > 0 accepted and changed) on `st`, Envoy's update_rejected or update_success
 * with update_time and version, and logs a rejection or an unchanged version. `changed`: a
 * rejected update still applied its valid resources (Envoy's partial update: update_rejected,
 * the version gauge unchanged, as Envoy's subscription counts a NACKed response). Returns rv. */
static int count_sotw(struct cds_sub_stats *st, const char *label, const char *what,
                      const char *version, int rv, bool changed, const struct err *err)
{
    if (rv < 0) {
        STAT_INC(st->update_rejected);
        if (changed) {
            LOG_W("%s: update rejected in part: its valid %s are applied (version '%s'), the "
                  "others keep their current version: %s",
                  label, what, version, err->msg);
        } else {
            LOG_W("%s: update rejected, keeping the current %s: %s", label, what, err->msg);
        }
        return rv;
    }
    STAT_INC(st->update_success);
    set_gauge(&st->update_time, (uint64_t)(ev_time() * 1000.0));
    set_gauge(&st->version, version_hash(version));
    if (rv == 0) {
        LOG_D("%s: version '%s' is unchanged", label, version);
    }
    return rv;
}

/* reload_clusters without counting the attempt. */
static int apply_clusters(struct reload *r, const char *version_info,
                          struct Google__Protobuf__Any *const *resources, size_t n,
                          const char *where, struct err *err)
{
    const char *version = version_info != NULL ? version_info : "";
    bool changed = false;
    int rv = cds_update(r->cds, version, resources, n, where, err, &changed);
    rv = count_sotw(&cds_stats(r->cds)->cds, "cds", "clusters", version, rv, changed, err);
    if (rv == 0 || (rv < 0 && !changed)) {
        return rv;
    }
    /* New EDS clusters (and modified ones) get their endpoints before any table names them;
     * new STRICT_DNS names are looked up (their answers come later: dns_changed). */
    sync_eds_subs(r);
    sync_dns(r);
    for (uint32_t j = r->n_fixed; j < r->n_subs; j++) {
        if (!r->subs[j].eds_loaded) {
            r->subs[j].eds_loaded = true;
            eds_file(r, r->subs[j].label, r->subs[j].path, false);
        }
    }
    if (r->cds_hook != NULL) {
        /* the ADS client follows the EDS clusters (and applies assignments it already has) */
        r->in_hook = true;
        r->cds_hook(r->cds_hook_ud);
        r->in_hook = false;
    }
    rebuild_routes(r);
    if (rv > 0) {
        LOG_I("cds: version '%s' is live (%zu dynamic clusters)", version, n);
    }
    return rv < 0 ? rv : 0;
}

int reload_clusters(struct reload *r, const char *version_info,
                    struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                    struct err *err)
{
    STAT_INC(cds_stats(r->cds)->cds.update_attempt);
    return apply_clusters(r, version_info, resources, n, where, err);
}

/* A state-of-the-world file (CDS, LDS: any DiscoveryResponse) handed to `apply` (which counts
 * its attempt and outcome); a file that cannot be read or decoded is counted here, as an attempt
 * and an update_failure (unreadable) or update_rejected, and the resources in force stay. */
typedef int (*sotw_apply_fn)(struct reload *r, const char *version_info,
                             struct Google__Protobuf__Any *const *resources, size_t n,
                             const char *where, struct err *err);

static int sotw_file(struct reload *r, const char *path, struct cds_sub_stats *st,
                     const char *label, const char *what, sotw_apply_fn apply_fn, struct err *errp)
{
    struct err err;
    err_clear(&err);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    int rv = rds_read_file(path, &resp, &err); /* any DiscoveryResponse */
    if (rv != 0) {
        STAT_INC(st->update_attempt);
        STAT_INC(*(rv == -EIO ? &st->update_failure : &st->update_rejected));
        LOG_W("%s: update %s, keeping the current %s: %s", label,
              rv == -EIO ? "failed" : "rejected", what, err.msg);
        *errp = err;
        return rv;
    }
    rv = apply_fn(r, resp->version_info, resp->resources, resp->n_resources, path, &err);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    *errp = err;
    return rv;
}

/* reload_cds_file, with the error in `err`. */
static int cds_file(struct reload *r, struct err *errp)
{
    return sotw_file(r, r->cfg->cds_path.p, &cds_stats(r->cds)->cds, "cds", "clusters",
                     reload_clusters, errp);
}

int reload_cds_file(struct reload *r)
{
    struct err err;
    return cds_file(r, &err);
}

/* ---- listeners (LDS, lds.h) ---- */

int reload_listeners(struct reload *r, const char *version_info,
                     struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                     struct err *err)
{
    struct cds_sub_stats *st = &lds_get_stats(r->lds)->lds;
    STAT_INC(st->update_attempt);
    const char *version = version_info != NULL ? version_info : "";
    bool changed = false;
    int rv = lds_update(r->lds, version, resources, n, where, err, &changed);
    rv = count_sotw(st, "lds", "listeners", version, rv, changed, err);
    if (rv == 0 || (rv < 0 && !changed)) {
        return rv;
    }
    if (rv > 0) {
        LOG_I("lds: version '%s' is live (%zu dynamic listeners)", version, n);
    }
    sds_census(r);
    if (r->lds_hook != NULL) {
        r->lds_hook(r->lds_hook_ud); /* the ADS client: RDS names follow the listeners */
    }
    return rv < 0 ? rv : 0;
}

/* reload_lds_file, with the error in `err`. */
static int lds_file(struct reload *r, struct err *errp)
{
    return sotw_file(r, r->cfg->lds_path.p, &lds_get_stats(r->lds)->lds, "lds", "listeners",
                     reload_listeners, errp);
}

int reload_lds_file(struct reload *r)
{
    struct err err;
    return lds_file(r, &err);
}

void reload_set_drain_time(struct reload *r, double seconds)
{
    lds_set_drain_time(r->lds, seconds);
}

void reload_warm_check(struct reload *r)
{
    lds_warm_check(r->lds);
}

void reload_stop_listening(struct reload *r)
{
    lds_stop_listening(r->lds);
}

void reload_listener_views(const struct reload *r, const struct lds_view **v, uint32_t *n,
                           const struct lds_stats **lm)
{
    *n = lds_views(r->lds, v);
    *lm = lds_get_stats(r->lds);
}

void reload_set_cds_hook(struct reload *r, void (*fn)(void *ud), void *ud)
{
    r->cds_hook = fn;
    r->cds_hook_ud = ud;
}

uint32_t reload_eds_clusters(const struct reload *r, struct cds_eds *out, uint32_t cap)
{
    return cds_eds_clusters(r->cds, out, cap);
}

int reload_start(struct reload *r, struct err *err)
{
    if (r->cfg->has_lds && !r->cfg->lds_ads) {
        /* As for CDS: the file must be there and valid at startup; its sockets are bound
         * now, and the workers take them when they exist (reload_publish_all). */
        struct err e;
        err_clear(&e);
        if (lds_file(r, &e) != 0) {
            return err_set(err, "dynamic_resources.lds_config", "%s", e.msg);
        }
    }
    if (!r->cfg->has_cds || r->cfg->cds_ads) {
        return 0; /* over ADS: the clusters arrive after startup (ads.h: init waits for them) */
    }
    /* As for RDS: the file must be there and valid at startup. */
    struct err e;
    err_clear(&e);
    if (cds_file(r, &e) != 0) {
        return err_set(err, "dynamic_resources.cds_config", "%s", e.msg);
    }
    /* The route tables' clusters can be checked now (validate_clusters: true). */
    for (uint32_t k = 0; k < r->cfg->n_rds; k++) {
        struct sub *sb = &r->subs[k];
        const struct route_snap *snap = NULL;
        if (sb->cur == NULL && sb->cfg->pb == NULL) {
            continue; /* over ADS, no routes yet */
        }
        if (rds_snap_rebuild(r->cfg, k, sb->cur, cds_rds_clusters(r->cds), true, &snap, &e) != 0) {
            return err_set(err, "rds", "'%s': %s", sb->label, e.msg);
        }
        rds_snap_unref(sb->cur);
        sb->cur = snap; /* published with the others by reload_publish_all */
    }
    return 0;
}

void reload_cluster_views(const struct reload *r, const struct cluster_view **v, uint32_t *n,
                          const struct cm_stats **cm)
{
    cds_views(r->cds, v, n);
    *cm = cds_stats(r->cds);
}

int reload_sds_file(struct reload *r, uint32_t idx)
{
    struct sub *sb = &r->subs[r->cfg->n_rds + idx];
    struct sds_stats *st = &r->sds_stats[idx];
    struct err err;
    err_clear(&err);
    STAT_INC(st->update_attempt);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *secret = NULL;
    char *version = NULL;
    int rv = sds_update(r->cfg, idx, &secret, &version, &err);
    if (rv == -EIO) {
        STAT_INC(st->update_failure);
        LOG_W("sds '%s': update failed, keeping the current secret: %s", sb->label, err.msg);
        return rv;
    }
    if (rv != 0) {
        STAT_INC(st->update_rejected);
        LOG_W("sds '%s': update rejected, keeping the current secret: %s", sb->label, err.msg);
        return rv;
    }
    double now = ev_time();
    STAT_INC(st->update_success);
    set_gauge(&st->update_time, (uint64_t)(now * 1000.0));
    set_gauge(&st->version, version_hash(version));
    if (sb->secret != NULL) {
        protobuf_c_message_free_unpacked(&sb->secret->base, NULL);
    }
    free(sb->version);
    sb->secret = secret;
    sb->version = version;
    sb->updated = now;
    LOG_I("sds '%s': version '%s' from %s is live on %u TLS context(s)", sb->label, version,
          sb->path, r->cfg->sds[idx].n_users);
    return 0;
}

/* The contexts using one ADS secret name, by role (grown arrays, freed by the caller). */
struct users {
    const struct tls_ctx **cert, **val;
    uint32_t n_cert, n_val, cap_cert, cap_val;
};

static void push_user(const struct tls_ctx ***v, uint32_t *n, uint32_t *cap,
                      const struct tls_ctx *tc)
{
    if (*n == *cap) {
        *cap = *cap ? 2 * *cap : 8;
        *v = xrealloc(*v, *cap * sizeof(**v));
    }
    (*v)[(*n)++] = tc;
}

/* Adds subscription `sc`'s contexts to `u`, in its role. */
static void add_users(struct users *u, const struct sds_cfg *sc)
{
    for (uint32_t k = 0; k < sc->n_users; k++) {
        if (sc->validation) {
            push_user(&u->val, &u->n_val, &u->cap_val, sc->users[k]);
        } else {
            push_user(&u->cert, &u->n_cert, &u->cap_cert, sc->users[k]);
        }
    }
}

int reload_sds_secret(struct reload *r, const char *name, const char *version,
                      const Google__Protobuf__Any *any, const char *where, struct err *err)
{
    struct sds_entry *ent = sds_set_find(&r->secrets, name);
    if (ent == NULL || !ent->used) {
        return 0; /* no longer subscribed (a response that crossed an unsubscription) */
    }
    struct sds_stats *st = ent->stats;
    STAT_INC(st->update_attempt);
    Envoy__Extensions__TransportSockets__Tls__V3__Secret *secret = NULL;
    int rv = sds_unpack(any, where, &secret, err);
    if (rv == 0 && (secret->name == NULL || strcmp(secret->name, name) != 0)) {
        rv = err_set(err, where, "name: '%s' is not secret '%s'", secret->name ? secret->name : "",
                     name);
    }
    /* Every context using the name: the bootstrap's and the dynamic listeners' and clusters'
     * in force, all or none. */
    struct users u = {0};
    if (ent->boot >= 0) {
        add_users(&u, &r->cfg->sds[ent->boot]);
    }
    struct lds_listener *ll = NULL;
    uint32_t i = 0;
    for (const struct config *c = next_container(r, &ll, &i); rv == 0 && c != NULL;
         c = next_container(r, &ll, &i)) {
        for (uint32_t k = 0; k < c->n_sds; k++) {
            if (c->sds[k].ads && strcmp(c->sds[k].name.p, name) == 0) {
                add_users(&u, &c->sds[k]);
            }
        }
    }
    if (rv == 0) {
        rv = sds_apply_users(secret, u.cert, u.n_cert, u.val, u.n_val, where, err);
    }
    uint32_t n_users = u.n_cert + u.n_val;
    free(u.cert);
    free(u.val);
    if (rv != 0) {
        if (secret != NULL) {
            protobuf_c_message_free_unpacked(&secret->base, NULL);
        }
        STAT_INC(st->update_rejected);
        LOG_W("sds '%s': update rejected, keeping the current secret: %s", name, err->msg);
        return -EINVAL;
    }
    double now = ev_time();
    STAT_INC(st->update_success);
    set_gauge(&st->update_time, (uint64_t)(now * 1000.0));
    set_gauge(&st->version, version_hash(version));
    sds_set_accept(&r->secrets, ent, secret, version, now);
    ll = NULL;
    i = 0;
    for (const struct config *c = next_container(r, &ll, &i); c != NULL;
         c = next_container(r, &ll, &i)) {
        for (uint32_t k = 0; k < c->n_sds; k++) {
            if (c->sds[k].ads && strcmp(c->sds[k].name.p, name) == 0) {
                ((struct sds_cfg *)&c->sds[k])->seen = ent->gen;
            }
        }
    }
    LOG_I("sds '%s': version '%s' over ADS is live on %u TLS context(s)", name, version, n_users);
    lds_warm_check(r->lds); /* listeners that waited for it take traffic now */
    return 0;
}

struct sds_set *reload_secrets(struct reload *r)
{
    return &r->secrets;
}

void reload_set_sds_hook(struct reload *r, void (*fn)(void *ud), void *ud)
{
    r->sds_hook = fn;
    r->sds_hook_ud = ud;
}

uint32_t reload_sds_dyn_stats(struct reload *r, const struct sds_stat_view **v)
{
    free(r->sds_views);
    r->sds_views = xcalloc(r->secrets.n ? r->secrets.n : 1, sizeof(*r->sds_views));
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->secrets.n; i++) {
        const struct sds_entry *e = r->secrets.v[i];
        if (e->boot < 0) { /* the bootstrap's names are counted with its config.sds */
            r->sds_views[n++] = (struct sds_stat_view){str_from_c(e->name), e->stats};
        }
    }
    *v = r->sds_views;
    return n;
}

/* What a file event runs for subscription `i` (an index into subs). */
static void reload_file(struct reload *r, uint32_t i)
{
    if (r->subs[i].eds) {
        eds_file(r, r->subs[i].label, r->subs[i].path, true);
    } else if (r->subs[i].cds) {
        reload_cds_file(r);
    } else if (r->subs[i].lds) {
        reload_lds_file(r);
    } else if (r->subs[i].sds) {
        reload_sds_file(r, r->subs[i].idx);
    } else {
        reload_rds_file(r, r->subs[i].idx);
    }
}

/* Watches `sb->dir` again after its directory went away (removed, or renamed: the watch
 * would follow the old inode) and came back. The file may have changed meanwhile: it is
 * re-read when it exists (a missing one is picked up by its move or write event). Returns
 * whether the directory is watched. */
static bool rewatch_one(struct reload *r, uint32_t idx)
{
    struct sub *sb = &r->subs[idx];
    sb->wd = inotify_add_watch(r->ifd, sb->dir, sb->mask | IN_MASK_ADD | IN_ONLYDIR);
    if (sb->wd < 0) {
        return false;
    }
    LOG_I("%s '%s': watching %s again", sub_kind(sb), sb->label, sb->dir);
    struct stat stt;
    sb->dirty = stat(sb->path, &stt) == 0;
    return true;
}

static void rewatch_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct reload *r = t->data;
    bool missing = false;
    for (uint32_t i = 0; i < r->n_subs; i++) {
        struct sub *sb = &r->subs[i];
        if (sb->wd < 0 && sb->dir != NULL && !rewatch_one(r, i)) {
            missing = true;
        }
    }
    for (uint32_t i = 0; i < r->n_subs; i++) {
        if (r->subs[i].dirty) {
            r->subs[i].dirty = false;
            reload_file(r, i);
        }
    }
    if (!missing) {
        ev_ref(r->loop);
        ev_timer_stop(r->loop, &r->rewatch);
    }
}

/* The watch `wd` is gone or follows a renamed directory: every subscription on it is lost
 * until its path is a directory again (tried now, then by the rewatch timer). */
static void watch_lost(struct reload *r, int wd, bool remove)
{
    bool missing = false;
    for (uint32_t i = 0; i < r->n_subs; i++) {
        struct sub *sb = &r->subs[i];
        if (sb->wd != wd) {
            continue;
        }
        if (remove) {
            inotify_rm_watch(r->ifd, wd); /* (once per wd suffices; later calls fail) */
        }
        LOG_W("%s '%s': %s went away; watching for it to come back", sub_kind(sb), sb->label,
              sb->dir);
        sb->wd = -1;
        if (!rewatch_one(r, i)) {
            missing = true;
        }
    }
    if (missing && !ev_is_active(&r->rewatch)) {
        ev_timer_again(r->loop, &r->rewatch);
        ev_unref(r->loop); /* as the inotify watcher: it does not keep main's loop running */
    }
}

static void on_inotify(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct reload *r = io->data;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(r->ifd, buf, sizeof(buf));
        if (n <= 0) {
            if (n < 0 && errno == EINTR) {
                continue;
            }
            break; /* EAGAIN: drained */
        }
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
                /* IN_IGNORED also follows our own inotify_rm_watch: that wd is no sub's now */
                watch_lost(r, ev->wd, (ev->mask & IN_MOVE_SELF) != 0);
                continue;
            }
            for (uint32_t i = 0; i < r->n_subs; i++) {
                struct sub *sb = &r->subs[i];
                if (ev->mask & IN_Q_OVERFLOW) {
                    sb->dirty = sb->wd >= 0; /* events were lost: re-read everything */
                    continue;
                }
                if (sb->wd != ev->wd || ev->len == 0) {
                    continue;
                }
                if (sb->name == NULL) {
                    sb->dirty |= (ev->mask & IN_MOVED_TO) != 0;
                } else if (strcmp(ev->name, sb->name) == 0) {
                    sb->dirty |= (ev->mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) != 0;
                }
            }
        }
    }
    for (uint32_t i = 0; i < r->n_subs; i++) {
        if (r->subs[i].dirty) {
            r->subs[i].dirty = false;
            reload_file(r, i);
        }
    }
}

/* Splits `path` into its directory and file name (both owned by the caller). */
static void split_path(const char *path, char **dir, char **name)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        *dir = xstrdup(".");
        *name = xstrdup(path);
    } else if (slash == path) {
        *dir = xstrdup("/");
        *name = xstrdup(slash + 1);
    } else {
        size_t n = (size_t)(slash - path);
        *dir = xmalloc(n + 1);
        memcpy(*dir, path, n);
        (*dir)[n] = '\0';
        *name = xstrdup(slash + 1);
    }
}

/* Starts watching subscription `sb` (its path and watched_dir set). */
static void watch(struct reload *r, struct sub *sb, const struct str *watched_dir)
{
    sb->wd = -1;
    /* IN_DELETE_SELF, IN_MOVE_SELF: the directory itself went (rewatch_one) */
    if (watched_dir->len > 0) {
        sb->dir = xstrdup(watched_dir->p);
        sb->mask = IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF;
    } else {
        split_path(sb->path, &sb->dir, &sb->name);
        sb->mask = IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE_SELF | IN_MOVE_SELF;
    }
    if (r->ifd >= 0) {
        /* IN_MASK_ADD: several subscriptions may watch one directory. */
        sb->wd = inotify_add_watch(r->ifd, sb->dir, sb->mask | IN_MASK_ADD | IN_ONLYDIR);
        if (sb->wd < 0) {
            LOG_E("%s '%s': cannot watch %s: %s; %s will not be reloaded", sub_kind(sb), sb->label,
                  sb->dir, strerror(errno), sb->path);
        }
    }
}

struct reload *reload_new(struct ev_loop *loop, const struct config *cfg,
                          struct worker *const *workers, uint32_t n_workers)
{
    struct reload *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->cfg = cfg;
    r->workers = workers;
    r->n_workers = n_workers;
    r->ifd = -1;
    r->cds = cds_new(loop, cfg, n_workers);
    struct cds_warm_ops wops = {.fetch_timeout = warm_fetch_timeout,
                                .activated = warm_activated,
                                .seed = warm_seed,
                                .ud = r};
    cds_set_warm_ops(r->cds, &wops);
    bool boot_dns = false;
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        boot_dns = boot_dns || cfg->clusters[i].type == CLUSTER_LOGICAL_DNS ||
                   cfg->clusters[i].type == CLUSTER_STRICT_DNS;
    }
    if (cfg->has_cds || boot_dns ||
        (cfg->ads != NULL && (cfg->ads->cluster->type == CLUSTER_STRICT_DNS ||
                              cfg->ads->cluster->type == CLUSTER_LOGICAL_DNS))) {
        /* (the ADS client resolves its DNS cluster on the same threads: reload_resolver) */
        struct dns_refresh_ops ops = {.stats = dns_stats,
                                      .changed = dns_changed,
                                      .init_done = dns_init_done,
                                      .resolved = dns_resolved,
                                      .ud = r};
        r->dns = dns_refresh_new(loop, &ops);
        cds_set_dns(r->cds, dns_refresh_dns(r->dns));
        sync_dns(r); /* the bootstrap's DNS names: looked up now, then on their timers */
        seed_boot_dns(r);
        cds_boot_dns_start(r->cds);
        r->boot_dns_started = true;
        sync_dns(r); /* (targets stay; those of a cluster left as it was built go) */
    }
    r->lds = lds_new(loop, cfg, workers, n_workers);
    lds_set_route_hook(r->lds, lds_seed, r);
    lds_set_warm_hook(r->lds, lds_warmed, r);
    lds_set_wait_hook(r->lds, lds_secret_wait, r);
    lds_set_peer_conflict(r->lds, lds_role_vs_clusters, r);
    cds_set_peer_conflict(r->cds, cds_role_vs_listeners, r);
    bool cds_file = cfg->has_cds && !cfg->cds_ads;
    bool lds_file = cfg->has_lds && !cfg->lds_ads;
    r->n_subs = cfg->n_rds + cfg->n_sds + (cds_file ? 1u : 0u) + (lds_file ? 1u : 0u);
    r->n_fixed = r->n_subs;
    r->subs = xcalloc(r->n_subs ? r->n_subs : 1, sizeof(*r->subs));
    r->stats = xcalloc(cfg->n_rds ? cfg->n_rds : 1, sizeof(*r->stats));
    r->sds_stats = xcalloc(cfg->n_sds ? cfg->n_sds : 1, sizeof(*r->sds_stats));
    sds_set_init(&r->secrets, free_secret);
    for (uint32_t j = 0; j < cfg->n_sds; j++) {
        const struct sds_cfg *sc = &cfg->sds[j];
        if (sc->ads) {
            sds_set_add_boot(&r->secrets, sc->name.p, (int32_t)j, sc->initial_fetch_timeout_ms,
                             &r->sds_stats[j]);
        }
    }
    sds_set_end(&r->secrets); /* the bootstrap's names are the first set */
    if (r->n_subs == 0) {
        return r;
    }
    r->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (r->ifd < 0) {
        LOG_E("reload: inotify: %s; RDS, SDS and CDS files will not be reloaded", strerror(errno));
    }
    for (uint32_t i = 0; i < cfg->n_rds; i++) {
        const struct rds_cfg *rc = &cfg->rds[i];
        struct sub *sb = &r->subs[i];
        sb->idx = i;
        sb->cfg = rc;
        sb->path = rc->path.p;
        sb->label = rc->route_config_name.p;
        sb->hash = rc->content_hash;
        set_gauge(&r->stats[i].version, version_hash(rc->version_info.p));
        if (rc->ads) {
            sb->wd = -1; /* no file: the ADS client calls reload_routes (proxy/xds/ads.h) */
            continue;
        }
        watch(r, sb, &rc->watched_dir);
    }
    for (uint32_t j = 0; j < cfg->n_sds; j++) {
        const struct sds_cfg *sc = &cfg->sds[j];
        struct sub *sb = &r->subs[cfg->n_rds + j];
        sb->sds = true;
        sb->idx = j;
        sb->path = sc->path.p;
        sb->label = sc->name.p;
        sb->updated = ev_time();
        set_gauge(&r->sds_stats[j].version, version_hash(sc->version_info.p));
        if (sc->ads) {
            sb->wd = -1; /* no file: the ADS client calls reload_sds_secret */
            continue;
        }
        watch(r, sb, &sc->watched_dir);
    }
    if (cds_file) {
        struct sub *sb = &r->subs[cfg->n_rds + cfg->n_sds];
        sb->cds = true;
        sb->path = cfg->cds_path.p;
        sb->label = "cluster_manager";
        watch(r, sb, &cfg->cds_watched_dir);
    }
    if (lds_file) {
        struct sub *sb = &r->subs[r->n_fixed - 1];
        sb->lds = true;
        sb->path = cfg->lds_path.p;
        sb->label = "listener_manager";
        watch(r, sb, &cfg->lds_watched_dir);
    }
    ev_init(&r->rewatch, rewatch_cb);
    r->rewatch.repeat = REWATCH_S;
    r->rewatch.data = r;
    if (r->ifd >= 0) {
        ev_io_init(&r->io, on_inotify, r->ifd, EV_READ);
        r->io.data = r;
        ev_io_start(loop, &r->io);
        ev_unref(loop); /* watching alone does not keep main's loop running */
    }
    return r;
}

void reload_stop(struct reload *r)
{
    dns_refresh_free(r->dns); /* no more answers: the clusters are going */
    r->dns = NULL;
    cds_set_dns(r->cds, NULL);
    cds_retire_all(r->cds);
}

void reload_free(struct reload *r)
{
    if (r == NULL) {
        return;
    }
    if (r->ifd >= 0) {
        ev_ref(r->loop);
        ev_io_stop(r->loop, &r->io);
        if (ev_is_active(&r->rewatch)) {
            ev_ref(r->loop);
            ev_timer_stop(r->loop, &r->rewatch);
        }
        close(r->ifd);
    }
    for (uint32_t i = r->n_fixed; i < r->n_subs; i++) {
        free_eds_sub(&r->subs[i]);
    }
    for (uint32_t i = 0; i < r->n_fixed; i++) {
        struct sub *sb = &r->subs[i];
        rds_snap_unref(sb->cur);
        if (sb->secret != NULL) {
            protobuf_c_message_free_unpacked(&sb->secret->base, NULL);
        }
        free(sb->version);
        free(sb->dir);
        free(sb->name);
    }
    free(r->subs);
    free(r->stats);
    sds_set_deinit(&r->secrets);
    free(r->sds_views);
    free(r->sds_stats);
    /* after the workers: they have let go of every listener and table; the listeners first:
     * their route tables hold references on CDS sets */
    lds_free(r->lds);
    dns_refresh_free(r->dns);
    cds_free(r->cds);
    free(r);
}

const struct rds_stats *reload_rds_stats(const struct reload *r)
{
    return r->stats;
}

const struct sds_stats *reload_sds_stats(const struct reload *r)
{
    return r->sds_stats;
}

/* The SDS secrets as Envoy's SecretsConfigDump: "dynamic_active_secrets" [{name, version_info,
 * last_updated, secret}], private keys and other sensitive fields "[redacted]". */
static void dump_secrets(const struct reload *r, json_t *configs)
{
    json_t *dump = config_dump_section(configs, "SecretsConfigDump");
    json_t *list = json_array();
    for (uint32_t j = 0; j < r->cfg->n_sds; j++) {
        const struct sds_cfg *sc = &r->cfg->sds[j];
        const struct sub *sb = &r->subs[r->cfg->n_rds + j];
        const ProtobufCMessage *m = sb->secret != NULL ? &sb->secret->base : sc->pb;
        if (m == NULL) {
            continue; /* over ADS: below */
        }
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(sc->name.p));
        json_object_set_new(e, "version_info",
                            json_string(sb->version != NULL ? sb->version : sc->version_info.p));
        char ts[32];
        access_log_time(ts, sb->updated); /* Envoy's timestamp, as %START_TIME% prints it */
        json_object_set_new(e, "last_updated", json_string(ts));
        json_object_set_new(e, "secret", config_dump_resource(m));
        json_array_append_new(list, e);
    }
    /* over ADS: one per name in use that arrived (Envoy lists the others as warming) */
    for (uint32_t j = 0; j < r->secrets.n; j++) {
        const struct sds_entry *se = r->secrets.v[j];
        if (se->pb == NULL) {
            continue;
        }
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(se->name));
        json_object_set_new(e, "version_info", json_string(se->version));
        char ts[32];
        access_log_time(ts, se->updated);
        json_object_set_new(e, "last_updated", json_string(ts));
        json_object_set_new(e, "secret", config_dump_resource(se->pb));
        json_array_append_new(list, e);
    }
    json_object_set_new(dump, "dynamic_active_secrets", list);
}

void reload_dump(const struct reload *r, json_t *configs)
{
    if (r == NULL || configs == NULL) {
        return;
    }
    cds_dump(r->cds, configs);
    lds_dump(r->lds, configs);
    if (r->cfg->n_sds > 0 || r->secrets.n > 0) {
        dump_secrets(r, configs);
    }
    bool lds_rds = false;
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL && !lds_rds;
         ll = lds_active_next(r->lds, ll)) {
        lds_rds = lds_listener_cfg(ll)->n_rds > 0;
    }
    if (r->cfg->n_rds == 0 && !lds_rds) {
        return;
    }
    json_t *routes = config_dump_section(configs, "RoutesConfigDump");
    json_t *list = json_array();
    for (uint32_t k = 0; k < r->cfg->n_rds; k++) {
        const struct sub *sb = &r->subs[k];
        const ProtobufCMessage *m = sb->cur != NULL ? sb->cur->pb : sb->cfg->pb; /* messages */
        const char *ver = sb->cur != NULL ? sb->cur->version_info.p : sb->cfg->version_info.p;
        if (m == NULL) {
            continue; /* over ADS, nothing accepted yet */
        }
        json_t *e = json_object();
        json_object_set_new(e, "version_info", json_string(ver));
        json_object_set_new(e, "route_config", config_dump_resource(m));
        json_array_append_new(list, e);
    }
    /* LDS listeners' subscriptions: one entry per route name (Envoy shares one per name) */
    for (struct lds_listener *ll = lds_active_next(r->lds, NULL); ll != NULL;
         ll = lds_active_next(r->lds, ll)) {
        const struct config *c = lds_listener_cfg(ll);
        struct lds_route_sub *subs = NULL;
        lds_listener_route_subs(ll, &subs);
        for (uint32_t k = 0; k < c->n_rds; k++) {
            const char *name = c->rds[k].route_config_name.p;
            if (subs[k].cur == NULL) {
                continue;
            }
            bool seen = false;
            size_t j;
            json_t *x;
            json_array_foreach(list, j, x)
            {
                const char *nm =
                    json_string_value(json_object_get(json_object_get(x, "route_config"), "name"));
                seen = seen || (nm != NULL && strcmp(nm, name) == 0);
            }
            if (seen) {
                continue;
            }
            json_t *e = json_object();
            json_object_set_new(e, "version_info", json_string(subs[k].cur->version_info.p));
            json_object_set_new(e, "route_config", config_dump_resource(subs[k].cur->pb));
            json_array_append_new(list, e);
        }
    }
    json_object_set_new(routes, "dynamic_route_configs", list);
}
