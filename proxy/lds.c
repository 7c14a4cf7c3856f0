/* lds: dynamic listeners (see lds.h). */
#include "proxy/lds.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/listener/v3/listener.pb-c.h"
#include "google/protobuf/any.pb-c.h"
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
#include "proxy/http/access_log.h"
#include "proxy/stats/stats.h"
#include "proxy/worker.h"

typedef Envoy__Config__Listener__V3__Listener PbListener;

struct lds_listener {
    _Atomic uint32_t refs; /* main's (while listed in lds.all) + each worker running it */
    struct lds *owner;
    struct config *c;     /* owned: the container; c->listeners[0] */
    const char *name;     /* in c's arena */
    uint64_t hash;        /* of the resource's bytes */
    char *version;        /* owned: the update's version_info */
    double updated;       /* Unix seconds */
    ProtobufCMessage *pb; /* owned by c (a cleanup): for /config_dump */
    int *fds;             /* owned; [n_workers]: taken by the workers (-1 once taken) */
    struct sockaddr_storage bound;
    struct access_log_sink **sinks; /* owned; one per access log, chain by chain */
    uint32_t n_sinks;
    struct stats_block **blocks; /* owned; [n_workers] */
    uint32_t n_workers;
    bool active;                 /* in the current set; else draining until no worker holds it */
    struct lds_listener *next;   /* lds.all */
    struct lds_route_sub *rsubs; /* owned; [c->n_rds] */
    struct rds_stats *rstats;    /* owned; [c->n_rds] */
    struct worker_rds *mail;     /* owned; [n_workers * c->n_rds]: worker-major */
};

struct lds_pub {
    _Atomic uint32_t refs;
    uint32_t n;
    struct lds_listener **v; /* a reference on each */
};

struct lds {
    struct ev_loop *loop;
    const struct config *boot;
    struct worker *const *workers;
    uint32_t n_workers;
    struct lds_listener *all; /* every version not yet freed: active ones, then draining */
    struct lds_pub *cur;      /* main's reference: the set in force */
    char *version;
    double drain_s;
    ev_async wake; /* a worker let go of a version */
    struct lds_stats stats;
    struct lds_view *views; /* owned; rebuilt by lds_views */
    void (*route_hook)(void *ud, struct lds_listener *nv, struct lds_listener *old);
    void *route_ud;
};

static void set_gauge(stat_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

int lds_bind(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* ---- versions ---- */

const struct config *lds_listener_cfg(const struct lds_listener *ll)
{
    return ll->c;
}

struct stats_block *lds_listener_block(const struct lds_listener *ll, uint32_t worker)
{
    return ll->blocks[worker];
}

struct access_log_sink *const *lds_listener_sinks(const struct lds_listener *ll)
{
    return ll->sinks;
}

int lds_listener_take_fd(struct lds_listener *ll, uint32_t worker)
{
    int fd = ll->fds[worker];
    ll->fds[worker] = -1;
    return fd;
}

double lds_listener_drain_s(const struct lds_listener *ll)
{
    return ll->owner->drain_s;
}

void lds_set_drain_time(struct lds *l, double seconds)
{
    l->drain_s = seconds;
}

void lds_listener_ref(struct lds_listener *ll)
{
    atomic_fetch_add_explicit(&ll->refs, 1, memory_order_relaxed);
}

void lds_listener_unref(struct lds_listener *ll)
{
    /* Main holds a reference while the version is listed, so this never reaches 0 on a
     * worker: main frees versions whose count is back to its own (sweep). */
    atomic_fetch_sub_explicit(&ll->refs, 1, memory_order_acq_rel);
    ev_async_send(ll->owner->loop, &ll->owner->wake);
}

static void version_free(struct lds_listener *ll)
{
    for (uint32_t w = 0; w < ll->n_workers; w++) {
        if (ll->fds[w] >= 0) {
            close(ll->fds[w]);
        }
        if (ll->blocks[w] != NULL) {
            stats_block_free(ll->blocks[w], ll->c);
        }
    }
    for (uint32_t i = 0; i < ll->n_sinks; i++) {
        access_log_sink_close(ll->sinks[i]);
    }
    /* the workers released their current tables (dl_free); mail never taken goes here */
    for (uint32_t i = 0; i < (uint32_t)ll->n_workers * ll->c->n_rds; i++) {
        rds_snap_unref(atomic_exchange_explicit(&ll->mail[i].inbox, NULL, memory_order_acquire));
    }
    for (uint32_t i = 0; i < ll->c->n_rds; i++) {
        rds_snap_unref(ll->rsubs[i].cur);
    }
    free(ll->mail);
    free(ll->rsubs);
    free(ll->rstats);
    free(ll->sinks);
    free(ll->fds);
    free(ll->blocks);
    free(ll->version);
    config_unref(ll->c);
    free(ll);
}

uint32_t lds_pub_count(const struct lds_pub *p)
{
    return p->n;
}

struct lds_listener *lds_pub_at(const struct lds_pub *p, uint32_t i)
{
    return p->v[i];
}

void lds_pub_ref(struct lds_pub *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void lds_pub_unref(struct lds_pub *p)
{
    if (p == NULL || atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (uint32_t i = 0; i < p->n; i++) {
        lds_listener_unref(p->v[i]);
    }
    free(p->v);
    free(p);
}

/* Frees the draining versions no worker holds any more (only main's reference is left). */
static void sweep(struct lds *l)
{
    struct lds_listener **pp = &l->all;
    while (*pp != NULL) {
        struct lds_listener *ll = *pp;
        if (!ll->active && atomic_load_explicit(&ll->refs, memory_order_acquire) == 1) {
            *pp = ll->next;
            LOG_D("lds: listener '%s' (version '%s') drained", ll->name, ll->version);
            version_free(ll);
            continue;
        }
        pp = &ll->next;
    }
    uint64_t active = 0, draining = 0;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->active) {
            active++;
        } else {
            draining++;
        }
    }
    set_gauge(&l->stats.total_listeners_active, active);
    set_gauge(&l->stats.total_listeners_draining, draining);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    sweep(a->data);
}

struct lds *lds_new(struct ev_loop *loop, const struct config *boot, struct worker *const *workers,
                    uint32_t n_workers)
{
    struct lds *l = xcalloc(1, sizeof(*l));
    l->loop = loop;
    l->boot = boot;
    l->workers = workers;
    l->n_workers = n_workers;
    l->stats.has_lds = boot->has_lds;
    l->drain_s = 600;
    ev_async_init(&l->wake, on_wake);
    l->wake.data = l;
    ev_async_start(loop, &l->wake);
    ev_unref(loop); /* it alone does not keep main's loop running */
    return l;
}

void lds_free(struct lds *l)
{
    if (l == NULL) {
        return;
    }
    ev_ref(l->loop);
    ev_async_stop(l->loop, &l->wake);
    lds_pub_unref(l->cur);
    while (l->all != NULL) {
        struct lds_listener *ll = l->all;
        l->all = ll->next;
        version_free(ll); /* the workers are gone: nothing else holds it */
    }
    free(l->views);
    free(l->version);
    free(l);
}

/* ---- updates ---- */

static void free_pb(void *p)
{
    protobuf_c_message_free_unpacked(p, NULL);
}

static void unref_base(void *p)
{
    config_unref(p);
}

/* An empty container whose clusters are the bootstrap's (routes point at them). */
static struct config *container_new(const struct config *base)
{
    struct arena a;
    arena_init(&a, 16 * 1024);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    config_ref(base);
    config_on_free(c, unref_base, (void *)base); /* registered first: runs last */
    c->clusters = base->clusters;
    c->n_clusters = base->n_clusters;
    c->cluster_map = base->cluster_map;
    c->ads = base->ads; /* an HCM's rds may use `ads: {}` (rds_build_initial) */
    return c;
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t alen,
                      const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static uint16_t ss_port(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* One resource of an update. */
struct cand {
    const char *name;
    struct lds_listener *old; /* the active version of that name, or NULL */
    struct lds_listener *nv;  /* the new version (NULL: same bytes as old) */
};

static struct lds_listener *find_active(const struct lds *l, const char *name)
{
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->active && strcmp(ll->name, name) == 0) {
            return ll;
        }
    }
    return NULL;
}

/* Binds the new version's sockets: the old version's (dup'ed) when the address is the same,
 * so the listener never refuses a connection across the change; else new ones. */
static int bind_version(struct lds *l, struct lds_listener *nv, const struct lds_listener *old,
                        const char *path, struct err *e)
{
    const struct listener_cfg *lc = &nv->c->listeners[0];
    bool reuse =
        old != NULL && same_addr(&old->c->listeners[0].addr.ss, old->c->listeners[0].addr.len,
                                 &lc->addr.ss, lc->addr.len);
    for (uint32_t w = 0; w < l->n_workers; w++) {
        int fd;
        if (reuse) {
            /* The old version is active: its workers have not closed these yet (they close
             * them only when they take a set without it, published after this). An fd already
             * taken by a worker is the worker's, but still the same open socket. */
            fd = dup(old->fds[w] >= 0 ? old->fds[w] : old->fds[l->n_workers + w]);
            fd = fd < 0 ? -errno : fd;
        } else {
            fd = lds_bind(w == 0 ? &lc->addr.ss : &nv->bound, lc->addr.len);
        }
        if (fd >= 0 && w == 0) {
            socklen_t blen = sizeof(nv->bound);
            if (getsockname(fd, (struct sockaddr *)&nv->bound, &blen) != 0) {
                int er = errno;
                close(fd);
                fd = -er;
            }
        }
        if (fd < 0) {
            return err_set(e, path, "address: cannot bind %s: %s", lc->addr.text.p, strerror(-fd));
        }
        nv->fds[w] = fd;
        nv->fds[l->n_workers + w] = fd; /* main's copy of the number, for a later dup */
    }
    return 0;
}

static struct lds_listener *version_new(struct lds *l, struct config *c, ProtobufCMessage *m,
                                        uint64_t hash)
{
    struct lds_listener *nv = xcalloc(1, sizeof(*nv));
    atomic_init(&nv->refs, 1);
    nv->owner = l;
    nv->c = c;
    nv->pb = m;
    nv->hash = hash;
    nv->name = c->listeners[0].name.p;
    nv->n_workers = l->n_workers;
    /* [0, n): the workers' to take; [n, 2n): the numbers, kept for a dup by the next version */
    nv->fds = xmalloc(2 * (size_t)(l->n_workers ? l->n_workers : 1) * sizeof(int));
    for (uint32_t w = 0; w < 2 * l->n_workers; w++) {
        nv->fds[w] = -1;
    }
    nv->blocks = xcalloc(l->n_workers ? l->n_workers : 1, sizeof(*nv->blocks));
    uint32_t nr = c->n_rds;
    nv->rsubs = xcalloc(nr ? nr : 1, sizeof(*nv->rsubs));
    nv->rstats = xcalloc(nr ? nr : 1, sizeof(*nv->rstats));
    for (uint32_t i = 0; i < nr; i++) {
        nv->rsubs[i].st = &nv->rstats[i];
    }
    size_t nm = (size_t)l->n_workers * nr;
    nv->mail = xcalloc(nm ? nm : 1, sizeof(*nv->mail));
    for (size_t i = 0; i < nm; i++) {
        atomic_init(&nv->mail[i].inbox, NULL);
    }
    return nv;
}

static void version_discard(struct lds_listener *nv)
{
    /* never published: its fds [0, n) are still its own */
    version_free(nv);
}

static int check_one(struct lds *l, const struct Google__Protobuf__Any *any, size_t i,
                     struct cand *cands, const char *where, struct err *e)
{
    char path[64];
    snprintf(path, sizeof(path), "resources[%zu]", i);
    ProtobufCMessage *m = NULL;
    if (pbjson_resource_unpack(any, &envoy__config__listener__v3__listener__descriptor,
                               pbtypes_find, path, &m, e) != 0) {
        return -EINVAL;
    }
    uint64_t h = hash_xxh64(any->value.data, any->value.len, 0);
    struct config *c = container_new(l->boot);
    config_on_free(c, free_pb, m);
    if (build_listener(c, path, (const PbListener *)m, e) != 0) {
        config_unref(c);
        return -EINVAL;
    }
    const struct listener_cfg *lc = &c->listeners[0];
    char npath[80];
    int rv = 0;
    for (uint32_t k = 0; k < l->boot->n_listeners && rv == 0; k++) {
        const struct listener_cfg *o = &l->boot->listeners[k];
        if (str_eq(o->name, lc->name)) {
            snprintf(npath, sizeof(npath), "%s.name", path);
            rv = err_set(e, npath, "'%s' is a static listener (bootstrap): LDS cannot replace it",
                         lc->name.p);
        } else if (ss_port(&lc->addr.ss) != 0 &&
                   same_addr(&o->addr.ss, o->addr.len, &lc->addr.ss, lc->addr.len)) {
            snprintf(npath, sizeof(npath), "%s.address", path);
            rv = err_set(e, npath, "%s is already used by listener '%s'", lc->addr.text.p,
                         o->name.p);
        }
    }
    for (size_t k = 0; k < i && rv == 0; k++) {
        const struct listener_cfg *o =
            &(cands[k].nv != NULL ? cands[k].nv : cands[k].old)->c->listeners[0];
        if (str_eq(o->name, lc->name)) {
            snprintf(npath, sizeof(npath), "%s.name", path);
            rv = err_set(e, npath, "duplicate listener name '%s'", lc->name.p);
        } else if (ss_port(&lc->addr.ss) != 0 &&
                   same_addr(&o->addr.ss, o->addr.len, &lc->addr.ss, lc->addr.len)) {
            snprintf(npath, sizeof(npath), "%s.address", path);
            rv = err_set(e, npath, "%s is already used by listener '%s'", lc->addr.text.p,
                         o->name.p);
        }
    }
    /* a secret name over ADS keeps one role: the bootstrap's, the other listeners' */
    const char *conflict = sds_role_conflict(c, l->boot);
    for (size_t k = 0; k < i && rv == 0 && conflict == NULL; k++) {
        conflict = sds_role_conflict(c, (cands[k].nv != NULL ? cands[k].nv : cands[k].old)->c);
    }
    for (struct lds_listener *o = l->all; rv == 0 && conflict == NULL && o != NULL; o = o->next) {
        /* (the version it replaces does not count) */
        bool other = o->active && strcmp(o->name, lc->name.p) != 0;
        conflict = other ? sds_role_conflict(c, o->c) : NULL;
    }
    if (rv == 0 && conflict != NULL) {
        snprintf(npath, sizeof(npath), "%s.filter_chains", path);
        rv = err_set(e, npath,
                     "secret '%s' over ADS is used both as a certificate and as a validation "
                     "context",
                     conflict);
    }
    if (rv != 0) {
        config_unref(c);
        return rv;
    }
    struct cand *cd = &cands[i];
    cd->old = find_active(l, lc->name.p);
    if (cd->old != NULL && cd->old->hash == h) {
        cd->name = cd->old->name;
        config_unref(c); /* same bytes: nothing changes */
        return 0;
    }
    cd->nv = version_new(l, c, m, h);
    cd->name = cd->nv->name;
    (void)where;
    return 0;
}

/* The sockets, sinks and stats blocks of the new versions (after every resource validated:
 * a bad resource further on must not have bound anything). */
static int prepare(struct lds *l, struct cand *cands, size_t n, struct err *e)
{
    for (size_t i = 0; i < n; i++) {
        struct lds_listener *nv = cands[i].nv;
        if (nv == NULL) {
            continue;
        }
        char path[64];
        snprintf(path, sizeof(path), "resources[%zu]", i);
        const struct listener_cfg *lc = &nv->c->listeners[0];
        /* another new listener on the address an old one frees in this update: the old
         * one's sockets are closed only after the swap, so binding would collide */
        for (struct lds_listener *o = l->all; o != NULL; o = o->next) {
            if (o->active && o != cands[i].old && ss_port(&lc->addr.ss) != 0 &&
                same_addr(&o->c->listeners[0].addr.ss, o->c->listeners[0].addr.len, &lc->addr.ss,
                          lc->addr.len)) {
                char apath[80];
                snprintf(apath, sizeof(apath), "%s.address", path);
                return err_set(e, apath, "%s is already used by listener '%s'", lc->addr.text.p,
                               o->name);
            }
        }
        if (bind_version(l, nv, cands[i].old, path, e) != 0) {
            return -EINVAL;
        }
        for (uint32_t k = 0; k < nv->c->n_chains; k++) {
            nv->n_sinks += chain_n_access_logs(&nv->c->chains[k]);
        }
        nv->sinks = xcalloc(nv->n_sinks ? nv->n_sinks : 1, sizeof(*nv->sinks));
        uint32_t s = 0;
        for (uint32_t k = 0; k < nv->c->n_chains; k++) {
            const struct filter_chain_cfg *fc = &nv->c->chains[k];
            const struct access_log_cfg *logs = chain_access_logs(fc);
            for (uint32_t j = 0; j < chain_n_access_logs(fc); j++) {
                struct err le;
                nv->sinks[s] = access_log_sink_open(logs[j].path.p, &le);
                if (nv->sinks[s] == NULL) {
                    nv->n_sinks = s;
                    return err_set(e, path, "%s", le.msg);
                }
                s++;
            }
        }
        for (uint32_t w = 0; w < l->n_workers; w++) {
            nv->blocks[w] = stats_block_new(nv->c);
        }
    }
    return 0;
}

static void publish(struct lds *l)
{
    for (uint32_t w = 0; w < l->n_workers; w++) {
        if (l->workers[w] != NULL) { /* NULL: at startup, before lds_publish_all */
            worker_lds_publish(l->workers[w], l->cur);
        }
    }
}

void lds_publish_all(struct lds *l)
{
    if (l->cur != NULL) {
        publish(l);
    }
}

int lds_update(struct lds *l, const char *version_info,
               struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
               struct err *err)
{
    const char *version = version_info != NULL ? version_info : "";
    struct cand *cands = xcalloc(n ? n : 1, sizeof(*cands));
    struct err e;
    err_clear(&e);
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i++) {
        rv = check_one(l, resources[i], i, cands, where, &e);
    }
    if (rv == 0) {
        rv = prepare(l, cands, n, &e);
        if (rv != 0) {
            STAT_INC(l->stats.listener_create_failure);
        }
    }
    if (rv != 0) {
        for (size_t i = 0; i < n; i++) {
            if (cands[i].nv != NULL) {
                version_discard(cands[i].nv);
            }
        }
        free(cands);
        /* over ADS `where` is NULL and the path starts with the resource's own index */
        if (where != NULL && strncmp(where, "resources[", 10) != 0) {
            return err_set(err, where, "%s", e.msg);
        }
        *err = e;
        return -EINVAL;
    }
    /* Commit. */
    bool changed = false;
    uint32_t added = 0, modified = 0, removed = 0;
    struct lds_pub *pub = xcalloc(1, sizeof(*pub));
    atomic_init(&pub->refs, 1);
    pub->n = (uint32_t)n;
    pub->v = xcalloc(n ? n : 1, sizeof(*pub->v));
    double now = ev_time();
    for (size_t i = 0; i < n; i++) {
        struct cand *cd = &cands[i];
        struct lds_listener *v = cd->nv != NULL ? cd->nv : cd->old;
        if (cd->nv != NULL) {
            changed = true;
            cd->nv->version = xstrdup(version);
            cd->nv->updated = now;
            cd->nv->active = true;
            cd->nv->next = l->all;
            l->all = cd->nv; /* main's reference: the one version_new made */
            STAT_INC(l->stats.listener_create_success);
            if (l->route_hook != NULL) {
                /* before any worker has it: routes and secrets the names already have */
                l->route_hook(l->route_ud, cd->nv, cd->old);
            }
            if (cd->old != NULL) {
                cd->old->active = false;
                modified++;
                LOG_I("lds: listener '%s' modified: new connections get version '%s'", cd->name,
                      version);
            } else {
                added++;
                LOG_I("lds: listener '%s' added on %s", cd->name,
                      cd->nv->c->listeners[0].addr.text.p);
            }
        }
        lds_listener_ref(v); /* the set's */
        pub->v[i] = v;
    }
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (!ll->active) {
            continue;
        }
        bool kept = false;
        for (uint32_t i = 0; i < pub->n && !kept; i++) {
            kept = pub->v[i] == ll;
        }
        if (!kept) {
            ll->active = false;
            removed++;
            changed = true;
            LOG_I("lds: listener '%s' removed: its connections drain", ll->name);
        }
    }
    free(cands);
    free(l->version);
    l->version = xstrdup(version);
    if (!changed && l->cur != NULL) {
        lds_pub_unref(pub);
        return 0;
    }
    stat_add(&l->stats.listener_added, added);
    stat_add(&l->stats.listener_modified, modified);
    stat_add(&l->stats.listener_removed, removed);
    lds_pub_unref(l->cur);
    l->cur = pub;
    publish(l);
    sweep(l); /* gauges; versions no worker ever took go now */
    return changed ? 1 : 0;
}

/* ---- RDS in LDS listeners ---- */

struct lds_listener *lds_active_next(struct lds *l, struct lds_listener *prev)
{
    struct lds_listener *ll = prev != NULL ? prev->next : l->all;
    while (ll != NULL && !ll->active) {
        ll = ll->next;
    }
    return ll;
}

uint32_t lds_listener_route_subs(struct lds_listener *ll, struct lds_route_sub **subs)
{
    *subs = ll->rsubs;
    return ll->c->n_rds;
}

void lds_route_set(struct lds *l, struct lds_listener *ll, uint32_t idx,
                   const struct route_snap *snap)
{
    uint32_t nr = ll->c->n_rds;
    for (uint32_t w = 0; w < l->n_workers; w++) {
        worker_routes_post(l->workers[w], &ll->mail[(size_t)w * nr + idx], snap);
    }
    rds_snap_unref(ll->rsubs[idx].cur);
    ll->rsubs[idx].cur = snap;
    ll->rsubs[idx].hash = snap->content_hash;
}

struct worker_rds *lds_listener_rds(struct lds_listener *ll, uint32_t worker)
{
    return &ll->mail[(size_t)worker * ll->c->n_rds];
}

void lds_set_route_hook(struct lds *l,
                        void (*fn)(void *ud, struct lds_listener *nv, struct lds_listener *old),
                        void *ud)
{
    l->route_hook = fn;
    l->route_ud = ud;
}

struct lds_stats *lds_get_stats(struct lds *l)
{
    return &l->stats;
}

uint32_t lds_views(struct lds *l, const struct lds_view **v)
{
    uint32_t n = 0;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        n++;
    }
    free(l->views);
    l->views = xcalloc(n ? n : 1, sizeof(*l->views));
    uint32_t k = 0;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        /* active ones first, in the order of the set */
        l->views[k++] = (struct lds_view){.cfg = ll->c,
                                          .rds = ll->rstats,
                                          .blocks = ll->blocks,
                                          .bound = &ll->bound,
                                          .active = ll->active};
    }
    *v = l->views;
    return n;
}

void lds_dump(const struct lds *l, json_t *configs)
{
    if (configs == NULL || !l->boot->has_lds) {
        return;
    }
    json_t *dump = config_dump_section(configs, "ListenersConfigDump");
    json_object_set_new(dump, "version_info", json_string(l->version ? l->version : ""));
    json_t *list = json_array();
    for (uint32_t k = 0; l->cur != NULL && k < l->cur->n; k++) {
        const struct lds_listener *ll = l->cur->v[k];
        json_t *st = json_object();
        json_object_set_new(st, "version_info", json_string(ll->version));
        json_object_set_new(st, "listener", config_dump_resource(ll->pb));
        char ts[32];
        access_log_time(ts, ll->updated);
        json_object_set_new(st, "last_updated", json_string(ts));
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(ll->name));
        json_object_set_new(e, "active_state", st);
        json_array_append_new(list, e);
    }
    json_object_set_new(dump, "dynamic_listeners", list);
}
