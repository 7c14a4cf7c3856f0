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
#include "proxy/xds/ads_state.h"

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
    bool active;       /* the current version of its name in the set (serving, or warming) */
    bool serving;      /* published: the workers run it (an active one once warm, or the version a
                        * warming one replaces until then); neither: draining until no worker holds it */
    double warm_start; /* when it was added (its fetch timeouts count from there) */
    struct lds_listener *next;   /* lds.all */
    bool mark;                   /* lds_update's: in the new set */
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
    ev_async wake;       /* a worker let go of a version */
    ev_timer warm_timer; /* the next initial_fetch_timeout of a warming version */
    bool stopped;        /* /drain_listeners or the server's drain: no listener is started */
    struct lds_stats stats;
    struct lds_view *views; /* owned; rebuilt by lds_views */
    void (*route_hook)(void *ud, struct lds_listener *nv, struct lds_listener *old);
    void *route_ud;
    void (*warm_hook)(void *ud); /* lds_set_warm_hook */
    void *warm_ud;
    bool (*wait_hook)(void *ud, const struct config *c, double since, double now, double *next);
    void *wait_ud;
    /* lds_set_peer_conflict: the CDS clusters' secret roles */
    const char *(*peer_conflict)(void *ud, const struct config *c);
    void *peer_ud;
};

static void set_gauge(stat_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

#define BACKLOG 4096

/* A bound socket, listening or not (a warming listener's: connections are refused, not queued,
 * until it is warm). An IPv6 one is IPv6 only unless `ipv4_compat`, as Envoy binds them (not
 * the net.ipv6.bindv6only default). */
static int bind_socket(const struct sockaddr_storage *ss, socklen_t len, bool ipv4_compat,
                       bool do_listen)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (ss->ss_family == AF_INET6) {
        int v6only = !ipv4_compat;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (bind(fd, (const struct sockaddr *)ss, len) < 0 || (do_listen && listen(fd, BACKLOG) < 0)) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int lds_bind(const struct sockaddr_storage *ss, socklen_t len, bool ipv4_compat)
{
    return bind_socket(ss, len, ipv4_compat, true);
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
        if (!ll->active && !ll->serving &&
            atomic_load_explicit(&ll->refs, memory_order_acquire) == 1) {
            *pp = ll->next;
            LOG_D("lds: listener '%s' (version '%s') drained", ll->name, ll->version);
            version_free(ll);
            continue;
        }
        pp = &ll->next;
    }
    uint64_t active = 0, warming = 0, draining = 0;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->serving) {
            active++;
        } else if (ll->active) {
            warming++;
        } else {
            draining++;
        }
    }
    set_gauge(&l->stats.total_listeners_active, active);
    set_gauge(&l->stats.total_listeners_warming, warming);
    set_gauge(&l->stats.total_listeners_draining, draining);
}

static void on_wake(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    sweep(a->data);
}

static void warm_cb(struct ev_loop *loop, ev_timer *t, int revents);

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
    ev_timer_init(&l->warm_timer, warm_cb, 0, 0);
    l->warm_timer.data = l;
    return l;
}

void lds_free(struct lds *l)
{
    if (l == NULL) {
        return;
    }
    ev_ref(l->loop);
    ev_async_stop(l->loop, &l->wake);
    ev_timer_stop(l->loop, &l->warm_timer);
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
    c->has_cds = base->has_cds; /* a tcp_proxy may name a CDS cluster (found when connecting) */
    c->ads = base->ads;         /* an HCM's rds may use `ads: {}` (rds_build_initial) */
    c->tracer = base->tracer;   /* tracing.http applies to LDS connection managers too */
    c->node_id = base->node_id;
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
    char *key; /* owned: its name (decoded, else field 1 of its bytes), or NULL */
    bool bad;  /* skipped: the version of its name in force (if any) stays */
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
static int bind_version(struct lds *l, struct lds_listener *nv, const char *path, struct err *e)
{
    const struct listener_cfg *lc = &nv->c->listeners[0];
    /* A version of its name on the same address (the one in force, or one still warming): its
     * sockets are dup'ed. Its workers have not closed them: they close them only when they take a
     * set without it (published after this) or when listeners are stopped (l->stopped: then no
     * version is made, lds_update). An fd already taken by a worker is the worker's, but still
     * the same open socket. */
    const struct lds_listener *old = NULL;
    for (const struct lds_listener *o = l->all; o != NULL && old == NULL; o = o->next) {
        if ((o->active || o->serving) && strcmp(o->name, nv->name) == 0 &&
            o->c->listeners[0].ipv4_compat == lc->ipv4_compat &&
            same_addr(&o->c->listeners[0].addr.ss, o->c->listeners[0].addr.len, &lc->addr.ss,
                      lc->addr.len)) {
            old = o;
        }
    }
    for (uint32_t w = 0; w < l->n_workers; w++) {
        int fd;
        if (old != NULL) {
            fd = dup(old->fds[w] >= 0 ? old->fds[w] : old->fds[l->n_workers + w]);
            fd = fd < 0 ? -errno : fd;
        } else {
            /* listening once it is warm (make_serving) */
            fd = bind_socket(w == 0 ? &lc->addr.ss : &nv->bound, lc->addr.len, lc->ipv4_compat,
                             false);
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

/* Field 1 (the name) of a resource that did not decode, or NULL (cds.c has the same). */
static char *resource_name(const struct Google__Protobuf__Any *any)
{
    const uint8_t *p = NULL;
    size_t len = 0;
    if (ads_pb_field(any->value.data, any->value.len, 1, &p, &len) != 0 || len == 0 || len > 1024 ||
        memchr(p, 0, len) != NULL) {
        return NULL;
    }
    return xstrndup((const char *)p, len);
}

static int check_one(struct lds *l, const struct Google__Protobuf__Any *any, size_t i,
                     struct cand *cands, const char *where, struct err *e)
{
    char path[64];
    snprintf(path, sizeof(path), "resources[%zu]", i);
    ProtobufCMessage *m = NULL;
    if (pbjson_resource_unpack(any, &envoy__config__listener__v3__listener__descriptor,
                               pbtypes_find, path, &m, e) != 0) {
        cands[i].key = resource_name(any); /* what it would replace stays */
        return -EINVAL;
    }
    const char *pname = ((const PbListener *)m)->name;
    cands[i].key = pname != NULL && pname[0] != '\0' ? xstrdup(pname) : NULL;
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
        /* every earlier name counts, a rejected one's too (Envoy's LdsApiImpl records the name
         * before it applies the listener: the second of two is the duplicate) */
        if (cands[k].key != NULL && strcmp(cands[k].key, lc->name.p) == 0) {
            snprintf(npath, sizeof(npath), "%s.name", path);
            rv = err_set(e, npath, "duplicate listener name '%s'", lc->name.p);
            break;
        }
        if (cands[k].bad) {
            continue; /* its version in force (if any) is among the active ones: prepare() */
        }
        const struct listener_cfg *o =
            &(cands[k].nv != NULL ? cands[k].nv : cands[k].old)->c->listeners[0];
        if (ss_port(&lc->addr.ss) != 0 &&
            same_addr(&o->addr.ss, o->addr.len, &lc->addr.ss, lc->addr.len)) {
            snprintf(npath, sizeof(npath), "%s.address", path);
            rv = err_set(e, npath, "%s is already used by listener '%s'", lc->addr.text.p,
                         o->name.p);
        }
    }
    /* (a secret name over ADS keeps one role: check_roles, once every resource is checked) */
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
static int prepare_one(struct lds *l, struct cand *cands, size_t i, struct err *e)
{
    {
        struct lds_listener *nv = cands[i].nv;
        char path[64];
        snprintf(path, sizeof(path), "resources[%zu]", i);
        const struct listener_cfg *lc = &nv->c->listeners[0];
        /* another new listener on the address an old one frees in this update: the old
         * one's sockets are closed only after the swap, so binding would collide */
        for (struct lds_listener *o = l->all; o != NULL; o = o->next) {
            if ((o->active || o->serving) && strcmp(o->name, nv->name) != 0 &&
                ss_port(&lc->addr.ss) != 0 &&
                same_addr(&o->c->listeners[0].addr.ss, o->c->listeners[0].addr.len, &lc->addr.ss,
                          lc->addr.len)) {
                char apath[80];
                snprintf(apath, sizeof(apath), "%s.address", path);
                return err_set(e, apath, "%s is already used by listener '%s'", lc->addr.text.p,
                               o->name);
            }
        }
        if (bind_version(l, nv, path, e) != 0) {
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

/* ---- warming (Envoy's listener warming) ----
 *
 * A new version whose connection managers name RDS route configurations over ADS that have no
 * table yet (lds_set_route_hook gives it those its names already have), or that waits for
 * something else (lds_set_wait_hook: SDS secrets over ADS not received yet), is warming: it is not
 * published, its sockets are bound but not listening (a connection is refused, never answered
 * 404 NR), and the version it replaces keeps serving. It is warm when each such subscription
 * got its first response (accepted, empty or rejected: lds_route_answered) or its
 * initial_fetch_timeout (counted from when the version was added; 0: none) passed; then it
 * listens, is published and replaces its predecessor, which drains. */

/* Whether `ll` still waits; `*next` gets the earliest fetch deadline it waits for. */
static bool still_warming(const struct lds_listener *ll, double now, double *next)
{
    const struct config *c = ll->c;
    const struct lds *l = ll->owner;
    bool waits = l->wait_hook != NULL && l->wait_hook(l->wait_ud, c, ll->warm_start, now, next);
    for (uint32_t i = 0; i < c->n_rds; i++) {
        if (!c->rds[i].ads || ll->rsubs[i].cur != NULL || ll->rsubs[i].answered) {
            continue;
        }
        uint64_t t = c->rds[i].initial_fetch_timeout_ms;
        if (t > 0) {
            double at = ll->warm_start + (double)t / 1000.0;
            if (at <= now) {
                continue; /* timed out: it serves on its empty table (404 NR) */
            }
            *next = at < *next ? at : *next;
        }
        waits = true;
    }
    return waits;
}

/* `ll` takes traffic: it listens, and the other version of its name that served stops. */
static void make_serving(struct lds *l, struct lds_listener *ll, bool warmed)
{
    for (uint32_t w = 0; w < l->n_workers && !l->stopped; w++) {
        if (ll->fds[w] >= 0 && listen(ll->fds[w], BACKLOG) != 0) {
            LOG_E("lds: listener '%s': listen: %s", ll->name, strerror(errno));
        }
    }
    for (struct lds_listener *o = l->all; o != NULL; o = o->next) {
        if (o != ll && o->serving && strcmp(o->name, ll->name) == 0) {
            o->serving = false; /* drains once the workers take the new set */
        }
    }
    ll->serving = true;
    if (warmed) {
        LOG_I("lds: listener '%s' (version '%s') is warm: it takes connections", ll->name,
              ll->version);
    }
}

/* The serving versions as the workers' set (when it changed), published; gauges. */
static void republish(struct lds *l)
{
    uint32_t n = 0;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        n += ll->serving ? 1 : 0;
    }
    bool same = l->cur != NULL && l->cur->n == n;
    for (uint32_t i = 0; same && i < n; i++) {
        same = l->cur->v[i]->serving;
    }
    if (!same) {
        struct lds_pub *pub = xcalloc(1, sizeof(*pub));
        atomic_init(&pub->refs, 1);
        pub->v = xcalloc(n ? n : 1, sizeof(*pub->v));
        /* l->all has the newest first: the set in the order the versions came */
        for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
            if (ll->serving) {
                lds_listener_ref(ll); /* the set's */
                pub->v[n - 1 - pub->n++] = ll;
            }
        }
        lds_pub_unref(l->cur);
        l->cur = pub;
        publish(l);
    }
    sweep(l); /* gauges; versions no worker ever took go now */
}

/* Warming versions that are done start serving; the timer is set for the next deadline. */
static bool warm_step(struct lds *l)
{
    double now = ev_time(), next = 1e300;
    bool any = false;
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->active && !ll->serving && !still_warming(ll, now, &next)) {
            make_serving(l, ll, true);
            any = true;
        }
    }
    ev_timer_stop(l->loop, &l->warm_timer);
    if (next < 1e300) {
        ev_timer_set(&l->warm_timer, next - now + 0.001, 0);
        ev_timer_start(l->loop, &l->warm_timer);
    }
    return any;
}

void lds_warm_check(struct lds *l)
{
    if (warm_step(l)) {
        republish(l);
        if (l->warm_hook != NULL) {
            l->warm_hook(l->warm_ud); /* the versions that stopped serving: their names go */
        }
    }
}

void lds_set_wait_hook(struct lds *l,
                       bool (*fn)(void *ud, const struct config *c, double since, double now,
                                  double *next),
                       void *ud)
{
    l->wait_hook = fn;
    l->wait_ud = ud;
}

void lds_set_warm_hook(struct lds *l, void (*fn)(void *ud), void *ud)
{
    l->warm_hook = fn;
    l->warm_ud = ud;
}

static void warm_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    lds_warm_check(t->data);
}

void lds_route_answered(struct lds_listener *ll, uint32_t idx)
{
    ll->rsubs[idx].answered = true;
}

void lds_stop_listening(struct lds *l)
{
    l->stopped = true;
}

/* ---- updates ---- */

static void skip(struct cand *cd)
{
    if (cd->nv != NULL) {
        version_discard(cd->nv);
    }
    char *key = cd->key;
    *cd = (struct cand){.key = key, .bad = true};
}

/* What resource `j` puts in the set in force: its version (new, or kept as it is), or for a
 * skipped one the version of its name in force (it stays), or NULL. */
static const struct config *cand_config(const struct lds *l, const struct cand *cands, size_t j)
{
    const struct cand *c = &cands[j];
    if (c->bad) {
        struct lds_listener *o = c->key != NULL ? find_active(l, c->key) : NULL;
        return o != NULL ? o->c : NULL;
    }
    return (c->nv != NULL ? c->nv : c->old)->c;
}

/* A secret name over ADS keeps one role (sds_role_conflict) across the listeners the update
 * leaves in force (not the ones it replaces: two listeners may swap a name's role together),
 * the bootstrap and the CDS clusters in force (l->peer_conflict). A new or changed listener is
 * skipped (NACKed with its path) when it conflicts with the bootstrap, the clusters, an earlier
 * resource's listener or a later one's that stays as it is (unchanged or skipped); between two
 * new ones the later is skipped. A skip puts the old version back, which may conflict in turn:
 * repeated until nothing changes. Returns how many it skipped, their errors joined into `all`. */
static size_t check_roles(struct lds *l, struct cand *cands, size_t n, struct err *all)
{
    size_t n_bad = 0;
    bool again = true;
    while (again) {
        again = false;
        for (size_t i = 0; i < n; i++) {
            struct cand *c = &cands[i];
            if (c->bad || c->nv == NULL || c->nv->c->n_sds == 0) {
                continue;
            }
            const struct config *mine = c->nv->c;
            const char *conflict = sds_role_conflict(mine, l->boot);
            if (conflict == NULL && l->peer_conflict != NULL) {
                conflict = l->peer_conflict(l->peer_ud, mine);
            }
            for (size_t j = 0; j < n && conflict == NULL; j++) {
                if (j == i || (j > i && !cands[j].bad && cands[j].nv != NULL)) {
                    continue;
                }
                const struct config *o = cand_config(l, cands, j);
                conflict = o != NULL ? sds_role_conflict(mine, o) : NULL;
            }
            if (conflict == NULL) {
                continue;
            }
            struct err e;
            err_clear(&e);
            char npath[96];
            snprintf(npath, sizeof(npath), "resources[%zu].filter_chains", i);
            err_set(&e, npath,
                    "secret '%s' over ADS is used both as a certificate and as a validation "
                    "context",
                    conflict);
            err_join(all, &e);
            skip(c);
            n_bad++;
            again = true;
        }
    }
    return n_bad;
}

void lds_set_peer_conflict(struct lds *l, const char *(*fn)(void *ud, const struct config *c),
                           void *ud)
{
    l->peer_conflict = fn;
    l->peer_ud = ud;
}

int lds_update(struct lds *l, const char *version_info,
               struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
               struct err *err, bool *changed_out)
{
    const char *version = version_info != NULL ? version_info : "";
    struct cand *cands = xcalloc(n ? n : 1, sizeof(*cands));
    struct err all;
    err_clear(&all);
    size_t n_bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct err e;
        err_clear(&e);
        if (check_one(l, resources[i], i, cands, where, &e) != 0) {
            skip(&cands[i]);
            err_join(&all, &e);
            n_bad++;
        } else if (cands[i].nv != NULL && l->stopped) {
            /* Envoy: a listener is not added or updated once listeners are stopped */
            LOG_W("lds: listener '%s' not %s: listeners are stopped (drain)", cands[i].name,
                  cands[i].old != NULL ? "modified" : "added");
            skip(&cands[i]);
        }
    }
    n_bad += check_roles(l, cands, n, &all);
    /* sockets, sinks and stats blocks (after every resource validated: a bad resource further on
     * must not have bound anything) */
    for (size_t i = 0; i < n; i++) {
        struct err e;
        err_clear(&e);
        if (cands[i].nv != NULL && prepare_one(l, cands, i, &e) != 0) {
            STAT_INC(l->stats.listener_create_failure);
            skip(&cands[i]);
            err_join(&all, &e);
            n_bad++;
        }
    }
    /* What stays: valid resources' versions (kept or new), and the version in force of a skipped
     * resource's name (with the version it replaces while it warms). The rest is removed. */
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        ll->mark = false;
    }
    for (size_t i = 0; i < n; i++) {
        struct lds_listener *keep = cands[i].bad && cands[i].key != NULL
                                        ? find_active(l, cands[i].key)
                                        : (cands[i].nv == NULL ? cands[i].old : NULL);
        if (keep != NULL) {
            keep->mark = true;
        }
    }
    bool changed = false;
    uint32_t added = 0, modified = 0, removed = 0;
    /* the loop's time, as the ADS client's fetch timers count from it: a version's fetch
     * deadline is then never later than the init gate's for the same names */
    double now = ev_now(l->loop);
    for (size_t i = 0; i < n; i++) {
        struct cand *cd = &cands[i];
        if (cd->nv == NULL) {
            continue;
        }
        changed = true;
        cd->nv->version = xstrdup(version);
        cd->nv->updated = now;
        cd->nv->warm_start = now;
        cd->nv->active = true;
        cd->nv->mark = true;
        cd->nv->next = l->all;
        l->all = cd->nv; /* main's reference: the one version_new made */
        STAT_INC(l->stats.listener_create_success);
        if (l->route_hook != NULL) {
            /* before any worker has it: routes and secrets the names already have */
            l->route_hook(l->route_ud, cd->nv, cd->old);
        }
        if (cd->old != NULL) {
            cd->old->active = false; /* if it serves, it does until the new version is warm */
            modified++;
            LOG_I("lds: listener '%s' modified: new connections get version '%s' once it is warm",
                  cd->name, version);
        } else {
            added++;
            LOG_I("lds: listener '%s' added on %s", cd->name, cd->nv->c->listeners[0].addr.text.p);
        }
    }
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->active && !ll->mark) {
            ll->active = false;
            ll->serving = false;
            removed++;
            changed = true;
            LOG_I("lds: listener '%s' removed: its connections drain", ll->name);
        }
    }
    for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (ll->serving && !ll->active && find_active(l, ll->name) == NULL) {
            ll->serving = false; /* its name is gone, with the version that warmed for it */
        }
    }
    for (size_t i = 0; i < n; i++) {
        free(cands[i].key);
    }
    free(cands);
    if (n_bad == 0 || changed) {
        free(l->version);
        l->version = xstrdup(version); /* Envoy's system_version_info: something applied */
    }
    if (changed_out != NULL) {
        *changed_out = changed;
    }
    if (changed || l->cur == NULL) {
        stat_add(&l->stats.listener_added, added);
        stat_add(&l->stats.listener_modified, modified);
        stat_add(&l->stats.listener_removed, removed);
        /* new versions with nothing to wait for serve at once */
        double next = 1e300;
        for (struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
            if (ll->active && !ll->serving && ll->warm_start == now &&
                !still_warming(ll, now, &next)) {
                make_serving(l, ll, false);
            }
        }
        warm_step(l); /* the timer */
        republish(l); /* the first set is published even when empty */
    }
    if (n_bad > 0) {
        /* over ADS `where` is NULL and the paths start with the resources' own indexes */
        if (where != NULL && strncmp(where, "resources[", 10) != 0) {
            return err_set(err, where, "%s", all.msg);
        }
        *err = all;
        return -EINVAL;
    }
    return changed ? 1 : 0;
}

/* ---- RDS in LDS listeners ---- */

struct lds_listener *lds_active_next(struct lds *l, struct lds_listener *prev)
{
    struct lds_listener *ll = prev != NULL ? prev->next : l->all;
    while (ll != NULL && !ll->active && !ll->serving) {
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
                                          .active = ll->serving};
    }
    *v = l->views;
    return n;
}

static json_t *dump_state(const struct lds_listener *ll)
{
    json_t *st = json_object();
    json_object_set_new(st, "version_info", json_string(ll->version));
    json_object_set_new(st, "listener", config_dump_resource(ll->pb));
    char ts[32];
    access_log_time(ts, ll->updated);
    json_object_set_new(st, "last_updated", json_string(ts));
    return st;
}

void lds_dump(const struct lds *l, json_t *configs)
{
    if (configs == NULL || !l->boot->has_lds) {
        return;
    }
    json_t *dump = config_dump_section(configs, "ListenersConfigDump");
    json_object_set_new(dump, "version_info", json_string(l->version ? l->version : ""));
    json_t *list = json_array();
    /* one entry per name of the set: active_state (the version serving) and, while a new one
     * warms, warming_state (as Envoy's DynamicListener) */
    for (const struct lds_listener *ll = l->all; ll != NULL; ll = ll->next) {
        if (!ll->active) {
            continue;
        }
        const struct lds_listener *on = ll->serving ? ll : NULL;
        for (const struct lds_listener *o = l->all; o != NULL && on == NULL; o = o->next) {
            on = o->serving && strcmp(o->name, ll->name) == 0 ? o : NULL;
        }
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(ll->name));
        if (on != NULL) {
            json_object_set_new(e, "active_state", dump_state(on));
        }
        if (!ll->serving) {
            json_object_set_new(e, "warming_state", dump_state(ll));
        }
        json_array_insert_new(list, 0, e); /* l->all has the newest first */
    }
    json_object_set_new(dump, "dynamic_listeners", list);
}
