/* ads: the ADS client's I/O on main's loop: socket, nghttp2 client session, one gRPC stream,
 * reconnects, and the initial-fetch bookkeeping (see ads.h). The protocol decisions are
 * ads_state.c's; what a resource does is its type's apply callback (RDS: reload_routes). */
#include "proxy/xds/ads.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/config.h"
#include "proxy/cds.h"
#include "proxy/lds.h"
#include "proxy/config/rds.h"
#include "proxy/config/sds.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/grpc_msg.h"
#include "proxy/http/h2_keepalive.h"
#include "proxy/net/accepted.h"
#include "proxy/net/resolver.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "proxy/reload.h"
#include "proxy/sds_set.h"
#include "proxy/xds/ads_state.h"

#ifndef REMORA_VERSION
#define REMORA_VERSION "0.1.0"
#endif

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define BACKOFF_BASE_MS 500  /* Envoy's RETRY_INITIAL_DELAY_MS */
#define BACKOFF_MAX_MS 30000 /* Envoy's RETRY_MAX_DELAY_MS */
#define OUT_MAX (1u << 20)   /* bytes pulled from nghttp2 before the socket takes them */
#define WINDOW (1u << 20)    /* the stream and connection receive windows */
#define READ_CHUNK 16384
#define NO_TYPE UINT32_MAX

/* One thing startup waits for (Envoy's init target): an ADS route subscription, the first CDS
 * response, or, during startup, an EDS cluster's first assignment. */
struct waiter {
    ev_timer timer; /* initial_fetch_timeout */
    struct ads *a;
    char *what;    /* owned, for the log: "rds 'r1' (http.ingress_http): no RouteConfiguration" */
    char *cluster; /* owned: EDS waiters' cluster, else NULL */
    uint64_t timeout_ms;
    bool done;
};

/* The last accepted ClusterLoadAssignment of a subscribed name (Envoy's EDS cache), for an EDS
 * cluster that comes (or is modified, or changes its source) after it arrived and warms: if the
 * server does not send it again within the cluster's initial_fetch_timeout (a state-of-the-world
 * server may not when the subscribed names stay the same), it is applied then (eds_timeout). */
struct eds_cached {
    char *name;
    char *version;
    Google__Protobuf__Any any; /* owned type_url and value */
};

enum phase {
    PH_IDLE,
    PH_RESOLVING,  /* a DNS cluster's name, on the resolver threads */
    PH_CONNECTING, /* TCP connect, then the TLS handshake when the cluster has TLS */
    PH_STREAMING,
    PH_BACKOFF,
};

struct ads {
    struct ev_loop *loop;
    const struct config *cfg;
    struct reload *reload;
    void (*on_init)(void *ud);
    void *ud;

    struct ads_type types[ADS_MAX_TYPES]; /* the table: one entry per type spoken */
    uint32_t n_types;
    uint32_t t_cds; /* Cluster's index in types, or NO_TYPE */
    uint32_t t_eds; /* ClusterLoadAssignment's, or NO_TYPE */
    uint32_t t_rds; /* RouteConfiguration's index in types */
    uint32_t t_lds; /* Listener's, or NO_TYPE */
    uint32_t t_sds; /* Secret's, or NO_TYPE */
    struct ads_state st;
    Envoy__Config__Core__V3__Node node; /* strings and sub-messages borrowed from cfg */

    enum phase phase;
    int fd;
    struct tls_conn *tls; /* owned: the session over fd when the cluster has TLS, else NULL */
    ev_io io;
    ev_timer timer; /* RESOLVING, CONNECTING: the connect timeout; BACKOFF: the retry */
    uint32_t next_ep;
    struct resolver_query *query; /* RESOLVING: the lookup (reload_resolver's thread) */
    struct sock_addr peer;        /* the address connected to */
    char peer_text[SOCKADDR_TEXT_MAX];
    struct ads_backoff backoff;
    uint64_t rng;

    nghttp2_session *h2;
    struct h2_keepalive ka; /* the ADS cluster's connection_keepalive, while streaming */
    int32_t sid;
    bool in_h2;  /* inside nghttp2_session_mem_recv */
    bool failed; /* the connection is to be torn down (deferred while in_h2) */
    char why[256];
    int http_status;
    bool grpc_ct;
    int grpc_status; /* -1 until seen */
    char grpc_message[128];
    struct grpc_msg_reader rd;
    uint8_t *req; /* the request being written (prefix + message), or NULL */
    size_t req_len, req_off;
    struct buf out;

    /* initialisation */
    struct waiter **rds_wait;  /* [n_rds]: the ADS route subscriptions' (else NULL) */
    struct waiter *cds_wait;   /* the first CDS response's, or NULL */
    struct waiter *lds_wait;   /* the first LDS response's, or NULL */
    struct waiter **sds_wait;  /* [n_sds]: the ADS secrets' (else NULL) */
    struct waiter **dsds_wait; /* [n_dsds_wait]: secrets of LDS listeners and CDS clusters, at
                                * startup (cluster: the secret's name) */
    uint32_t n_dsds_wait;
    struct waiter **lrds_wait; /* [n_lrds_wait]: LDS listeners' route names, at startup */
    uint32_t n_lrds_wait;
    struct waiter **eds_wait; /* [n_eds_wait]: EDS clusters known at the first CDS response */
    uint32_t n_eds_wait;
    uint32_t n_waiting;

    struct eds_cached *eds_cache; /* [n_eds_cache] */
    size_t n_eds_cache;

    struct ads_stats stats;
};

static void set_gauge(stat_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

static uint64_t next_rand(struct ads *a)
{
    return rand_next(&a->rng);
}

static void update_pending(struct ads *a)
{
    set_gauge(&a->stats.pending_requests, ads_state_pending(&a->st) + (a->req != NULL ? 1 : 0));
}

/* ---- initialisation ---- */

static void on_fetch_timeout(struct ev_loop *loop, ev_timer *t, int revents);

/* A new thing to wait for, bounded by `timeout_ms` (0: for ever). */
static struct waiter *waiter_new(struct ads *a, uint64_t timeout_ms, const char *cluster,
                                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static struct waiter *waiter_new(struct ads *a, uint64_t timeout_ms, const char *cluster,
                                 const char *fmt, ...)
{
    struct waiter *w = xcalloc(1, sizeof(*w));
    char what[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    w->what = xstrdup(what);
    w->cluster = cluster != NULL ? xstrdup(cluster) : NULL;
    w->a = a;
    w->timeout_ms = timeout_ms;
    ev_init(&w->timer, on_fetch_timeout);
    w->timer.data = w;
    a->n_waiting++;
    if (timeout_ms > 0) {
        ev_timer_set(&w->timer, (double)timeout_ms / 1000.0, 0);
        ev_timer_start(a->loop, &w->timer);
    }
    return w;
}

static void waiter_done(struct ads *a, struct waiter *w)
{
    if (w == NULL || w->done) {
        return;
    }
    w->done = true;
    ev_timer_stop(a->loop, &w->timer);
    if (--a->n_waiting == 0) {
        LOG_I("ads: initial fetch done");
        reload_warm_check(a->reload); /* listeners whose fetches timed out with these serve */
        a->on_init(a->ud);
    }
}

static void waiter_free(struct ads *a, struct waiter *w)
{
    if (w != NULL) {
        ev_timer_stop(a->loop, &w->timer);
        free(w->what);
        free(w->cluster);
        free(w);
    }
}

static void on_fetch_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct waiter *w = t->data;
    LOG_W("%s within initial_fetch_timeout (%llu ms); going on without it", w->what,
          (unsigned long long)w->timeout_ms);
    waiter_done(w->a, w);
}

/* ---- the RouteConfiguration type ---- */

/* The subscribed RouteConfigurations of one response, each to every connection manager that
 * subscribed its name, through reload_routes (same builder and stats as RDS from files). Two
 * resources of one name are one set (rejected by RDS's rules). An error NACKs the response;
 * subscriptions applied before it keep their new table (as Envoy's watches). */
static int rds_apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                     struct err *err)
{
    struct ads *a = ud;
    int rv = 0;
    Google__Protobuf__Any **group = xcalloc(n, sizeof(*group));
    bool *done = xcalloc(n, sizeof(*done));
    for (size_t i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            if (!done[j] && strcmp(res[j].name, res[i].name) == 0) {
                group[k++] = (Google__Protobuf__Any *)res[j].any;
                done[j] = true;
            }
        }
        char where[32];
        snprintf(where, sizeof(where), "resources[%u]", res[i].index);
        for (uint32_t idx = 0; idx < a->cfg->n_rds; idx++) {
            const struct rds_cfg *rc = &a->cfg->rds[idx];
            if (!rc->ads || strcmp(rc->route_config_name.p, res[i].name) != 0) {
                continue;
            }
            struct err e;
            err_clear(&e);
            if (reload_routes(a->reload, idx, version, group, k, where, &e) != 0 && rv == 0) {
                rv = -EINVAL;
                *err = e;
            }
            /* a rejected first config ends the wait too, as in Envoy */
            waiter_done(a, a->rds_wait[idx]);
        }
        /* the LDS listeners' connection managers subscribing it (reload_lds_routes) */
        struct err e;
        err_clear(&e);
        if (reload_lds_routes(a->reload, res[i].name, version, group, k, where, &e) != 0 &&
            rv == 0) {
            rv = -EINVAL;
            *err = e;
        }
        for (uint32_t w = 0; w < a->n_lrds_wait; w++) {
            if (strcmp(a->lrds_wait[w]->cluster, res[i].name) == 0) {
                waiter_done(a, a->lrds_wait[w]);
            }
        }
    }
    free(group);
    free(done);
    return rv;
}

/* ---- the Secret type (SDS) ---- */

static void kick(struct ads *a);

/* The subscribed Secrets of one response, each to the subscription of its name through
 * reload_sds_secret (the file path's compile, swap and stats: new handshakes get the new
 * material, open connections keep theirs). A bad secret NACKs the response with its own path
 * and leaves the old material serving; the others in the response still apply (as Envoy's
 * watches). A secret the response leaves out keeps serving. */
static int sds_apply_cb(void *ud, const char *version, const struct ads_resource *res, size_t n,
                        struct err *err)
{
    struct ads *a = ud;
    int rv = 0;
    for (size_t i = 0; i < n; i++) {
        char where[32];
        snprintf(where, sizeof(where), "resources[%u]", res[i].index);
        struct err e;
        err_clear(&e);
        /* every user of the name: the bootstrap's and the dynamic listeners' and clusters' */
        if (reload_sds_secret(a->reload, res[i].name, version, res[i].any, where, &e) != 0 &&
            rv == 0) {
            rv = -EINVAL;
            *err = e;
        }
        /* accepted or not, as Envoy's init target */
        for (uint32_t idx = 0; idx < a->cfg->n_sds; idx++) {
            const struct sds_cfg *sc = &a->cfg->sds[idx];
            if (sc->ads && strcmp(sc->name.p, res[i].name) == 0) {
                waiter_done(a, a->sds_wait[idx]);
            }
        }
        for (uint32_t w = 0; w < a->n_dsds_wait; w++) {
            if (strcmp(a->dsds_wait[w]->cluster, res[i].name) == 0) {
                waiter_done(a, a->dsds_wait[w]);
            }
        }
    }
    return rv;
}

/* What the Secret subscription follows: the names in use (reload's sds_set: the bootstrap's and
 * those of the LDS listeners and CDS clusters in force; reload_set_sds_hook after each change of
 * that set): a changed list is a new DiscoveryRequest with the complete list. While the init
 * gate is closed (`starting`: the first LDS and CDS responses are being applied, or other
 * things are still awaited), a name not yet received is one more wait (Envoy's listener and
 * cluster warming, bounded by its initial_fetch_timeout); a name nobody uses any more ends its
 * wait. After startup a listener or cluster whose secret has not arrived fails closed. */
static void sds_sync_at(struct ads *a, bool starting)
{
    struct sds_set *set = reload_secrets(a->reload);
    uint32_t n = sds_set_names(set, NULL, 0);
    const char **names = xcalloc(n ? n : 1, sizeof(*names));
    sds_set_names(set, names, n);
    if (a->t_sds != NO_TYPE && ads_state_subscribe(&a->st, a->t_sds, names, n) != 0) {
        LOG_E("ads: more than %u secret names; the subscription is not changed", ADS_MAX_NAMES);
    }
    free(names);
    for (uint32_t w = 0; w < a->n_dsds_wait; w++) {
        if (sds_set_find(set, a->dsds_wait[w]->cluster) == NULL) {
            waiter_done(a, a->dsds_wait[w]);
        }
    }
    for (uint32_t i = 0; i < set->n; i++) {
        struct sds_entry *e = set->v[i];
        if (!sds_set_should_wait(e, starting)) {
            continue;
        }
        e->wait_started = true;
        a->dsds_wait = xrealloc(a->dsds_wait, (a->n_dsds_wait + 1) * sizeof(*a->dsds_wait));
        a->dsds_wait[a->n_dsds_wait++] =
            waiter_new(a, e->fetch_timeout_ms, e->name,
                       "sds '%s': no Secret for LDS listeners or CDS clusters", e->name);
    }
    if (!a->in_h2) {
        kick(a); /* inside nghttp2's callbacks the reader kicks once it returns */
    }
}

static void sds_sync(void *ud)
{
    struct ads *a = ud;
    sds_sync_at(a, a->n_waiting > 0);
}

/* ---- the Cluster type (CDS) ---- */

static void kick(struct ads *a);

/* The ADS EDS clusters now (copied: reload_endpoints changes the set the strings live in). */
struct eds_now {
    char *cluster;
    char *service;
    uint64_t timeout_ms;
    bool loaded;
};

static uint32_t eds_now(const struct ads *a, struct eds_now **out)
{
    uint32_t n = reload_eds_clusters(a->reload, NULL, 0);
    struct cds_eds *v = xcalloc(n ? n : 1, sizeof(*v));
    reload_eds_clusters(a->reload, v, n);
    struct eds_now *e = xcalloc(n ? n : 1, sizeof(*e));
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].ads) {
            e[k++] = (struct eds_now){xstrdup(v[i].cluster), xstrdup(v[i].service_name),
                                      v[i].fetch_timeout_ms, v[i].loaded};
        }
    }
    free(v);
    *out = e;
    return k;
}

static void eds_now_free(struct eds_now *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(e[i].cluster);
        free(e[i].service);
    }
    free(e);
}

static struct eds_cached *cache_find(struct ads *a, const char *name)
{
    for (size_t i = 0; i < a->n_eds_cache; i++) {
        if (strcmp(a->eds_cache[i].name, name) == 0) {
            return &a->eds_cache[i];
        }
    }
    return NULL;
}

static void cache_clear(struct eds_cached *c)
{
    free(c->name);
    free(c->version);
    free(c->any.type_url);
    free(c->any.value.data);
}

static void cache_put(struct ads *a, const char *name, const char *version,
                      const Google__Protobuf__Any *any)
{
    struct eds_cached *c = cache_find(a, name);
    if (c == NULL) {
        a->eds_cache = xrealloc(a->eds_cache, (a->n_eds_cache + 1) * sizeof(*a->eds_cache));
        c = &a->eds_cache[a->n_eds_cache++];
    } else {
        cache_clear(c);
    }
    Google__Protobuf__Any init = GOOGLE__PROTOBUF__ANY__INIT;
    c->any = init;
    c->name = xstrdup(name);
    c->version = xstrdup(version);
    c->any.type_url = xstrdup(any->type_url != NULL ? any->type_url : "");
    c->any.value.len = any->value.len;
    c->any.value.data = xmalloc(any->value.len ? any->value.len : 1);
    if (any->value.len > 0) {
        memcpy(c->any.value.data, any->value.data, any->value.len);
    }
}

/* What the EDS subscription follows: the set of ADS EDS clusters changed (a CDS update, from
 * the ADS stream or a CDS file; reload_set_cds_hook). Subscribes their service names (a new
 * DiscoveryRequest when the set changed, or when a cluster waits for its assignment: Envoy
 * re-subscribes for a modified cluster, which warms until the server answers; proxy/cds.h),
 * forgets assignments nobody subscribes, and ends the startup wait of EDS clusters that went or
 * were served. */
static void eds_sync(void *ud)
{
    struct ads *a = ud;
    struct eds_now *e = NULL;
    uint32_t n = eds_now(a, &e);
    const char **names = xcalloc(n ? n : 1, sizeof(*names));
    bool unloaded = false;
    for (uint32_t i = 0; i < n; i++) {
        names[i] = e[i].service;
        unloaded = unloaded || !e[i].loaded;
    }
    if (a->t_eds != NO_TYPE && ads_state_subscribe(&a->st, a->t_eds, names, n) != 0) {
        LOG_E("ads: more than %u EDS names; the subscription is not changed", ADS_MAX_NAMES);
    }
    if (a->t_eds != NO_TYPE && unloaded) {
        ads_state_resubscribe(&a->st, a->t_eds);
    }
    for (size_t i = 0; i < a->n_eds_cache;) {
        bool used = false;
        for (uint32_t j = 0; j < n && !used; j++) {
            used = strcmp(names[j], a->eds_cache[i].name) == 0;
        }
        if (used) {
            i++;
            continue;
        }
        cache_clear(&a->eds_cache[i]);
        a->eds_cache[i] = a->eds_cache[--a->n_eds_cache];
    }
    for (uint32_t k = 0; k < a->n_eds_wait; k++) {
        struct waiter *w = a->eds_wait[k];
        bool waiting = false;
        for (uint32_t i = 0; i < n && !waiting; i++) {
            waiting = !e[i].loaded && strcmp(e[i].cluster, w->cluster) == 0;
        }
        if (!waiting) {
            waiter_done(a, w);
        }
    }
    free(names);
    eds_now_free(e, n);
    if (!a->in_h2) {
        kick(a); /* inside nghttp2's callbacks the reader kicks once it returns */
    }
}

/* reload_set_eds_timeout_hook: warming cluster `cluster` had no assignment within its
 * initial_fetch_timeout: the last one accepted for its service name, if any, is applied. */
static void eds_timeout(void *ud, const char *cluster)
{
    struct ads *a = ud;
    struct eds_now *e = NULL;
    uint32_t n = eds_now(a, &e);
    for (uint32_t i = 0; i < n; i++) {
        struct eds_cached *c =
            strcmp(e[i].cluster, cluster) == 0 && !e[i].loaded ? cache_find(a, e[i].service) : NULL;
        if (c != NULL) {
            Google__Protobuf__Any *one = &c->any;
            struct err err;
            err_clear(&err);
            LOG_I("eds '%s': applying the last ClusterLoadAssignment '%s' received (version '%s')",
                  cluster, e[i].service, c->version);
            reload_endpoints(a->reload, cluster, c->version, &one, 1, NULL, &err);
        }
    }
    eds_now_free(e, n);
}

/* Startup waits for the first assignment of each ADS EDS cluster known now (Envoy's secondary
 * cluster initialisation, after CDS). */
static void eds_start_waits(struct ads *a)
{
    struct eds_now *e = NULL;
    uint32_t n = eds_now(a, &e);
    a->eds_wait = xcalloc(n ? n : 1, sizeof(*a->eds_wait));
    for (uint32_t i = 0; i < n; i++) {
        if (!e[i].loaded) {
            a->eds_wait[a->n_eds_wait++] =
                waiter_new(a, e[i].timeout_ms, e[i].cluster,
                           "eds '%s': no ClusterLoadAssignment '%s'", e[i].cluster, e[i].service);
        }
    }
    eds_now_free(e, n);
}

/* A state-of-the-world set of Clusters (the wildcard subscription: every resource) through
 * reload_clusters: each resource on its own (the valid ones applied), every bad one's own path
 * ("resources[2]...") in the NACK's error. */
/* A wildcard type's whole response (res[i].index == i) through `whole` (reload_clusters,
 * reload_listeners). */
static int apply_whole(struct ads *a, const char *version, const struct ads_resource *res, size_t n,
                       int (*whole)(struct reload *, const char *, Google__Protobuf__Any *const *,
                                    size_t, const char *, struct err *),
                       struct err *err)
{
    Google__Protobuf__Any **v = xcalloc(n ? n : 1, sizeof(*v));
    for (size_t i = 0; i < n; i++) {
        v[i] = (Google__Protobuf__Any *)res[i].any;
    }
    struct err e;
    err_clear(&e);
    int rv = whole(a->reload, version, v, n, NULL, &e);
    free(v);
    if (rv != 0) {
        *err = e;
    }
    return rv;
}

static int cds_apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                     struct err *err)
{
    struct ads *a = ud;
    int rv = apply_whole(a, version, res, n, reload_clusters, err);
    if (a->cds_wait != NULL && !a->cds_wait->done) {
        /* the first CDS response (accepted or not, as Envoy): the EDS of the clusters it brought
         * is waited for next, then startup goes on */
        eds_start_waits(a);
        waiter_done(a, a->cds_wait);
    }
    return rv != 0 ? -EINVAL : 0;
}

/* ---- the Listener type (LDS) ---- */

/* A state-of-the-world set of Listeners (a wildcard subscription) through reload_listeners:
 * each resource on its own, the bad ones' own paths in the NACK (a socket that cannot be bound
 * too). */
/* What the RDS subscription follows: the bootstrap's ADS connection managers' route names
 * plus those of the active LDS listeners (reload_set_lds_hook, after every change of the
 * listener set): a changed list is a new DiscoveryRequest with the complete list. While the
 * first Listener response is being applied (startup), each LDS route name is one more wait of
 * the init gate (Envoy's listener warming), ended by its resource or its
 * initial_fetch_timeout; a name no listener subscribes any more ends its wait. At run time a
 * listener added or modified warms until its routes arrive (lds.c: not listening meanwhile). */
static void lds_sync(void *ud)
{
    struct ads *a = ud;
    uint32_t n_l = reload_lds_route_names(a->reload, NULL, NULL, 0);
    size_t cap = (size_t)a->cfg->n_rds + n_l;
    const char **names = xcalloc(cap ? cap : 1, sizeof(*names));
    uint64_t *tmo = xcalloc(n_l ? n_l : 1, sizeof(*tmo));
    size_t n = 0;
    for (uint32_t i = 0; i < a->cfg->n_rds; i++) {
        if (a->cfg->rds[i].ads) {
            names[n++] = a->cfg->rds[i].route_config_name.p;
        }
    }
    const char **lnames = names + n;
    n_l = reload_lds_route_names(a->reload, lnames, tmo, n_l);
    if (ads_state_subscribe(&a->st, a->t_rds, names, n + n_l) != 0) {
        LOG_E("ads: more than %u RDS names; the subscription is not changed", ADS_MAX_NAMES);
    }
    bool starting = a->phase == PH_IDLE || (a->lds_wait != NULL && !a->lds_wait->done);
    for (uint32_t w = 0; w < a->n_lrds_wait; w++) {
        bool used = false;
        for (uint32_t i = 0; i < n_l && !used; i++) {
            used = strcmp(lnames[i], a->lrds_wait[w]->cluster) == 0;
        }
        if (!used) {
            waiter_done(a, a->lrds_wait[w]);
        }
    }
    for (uint32_t i = 0; starting && i < n_l; i++) {
        bool have = false;
        for (uint32_t w = 0; w < a->n_lrds_wait && !have; w++) {
            have = strcmp(lnames[i], a->lrds_wait[w]->cluster) == 0;
        }
        if (!have) {
            a->lrds_wait = xrealloc(a->lrds_wait, (a->n_lrds_wait + 1) * sizeof(*a->lrds_wait));
            a->lrds_wait[a->n_lrds_wait++] = waiter_new(
                a, tmo[i], lnames[i], "rds '%s' (LDS listeners): no RouteConfiguration", lnames[i]);
        }
    }
    free(names);
    free(tmo);
    if (!a->in_h2) {
        kick(a); /* inside nghttp2's callbacks the reader kicks once it returns */
    }
}

static int lds_apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                     struct err *err)
{
    struct ads *a = ud;
    int rv = apply_whole(a, version, res, n, reload_listeners, err);
    if (a->lds_wait != NULL && !a->lds_wait->done) {
        waiter_done(a, a->lds_wait); /* the first response, accepted or not (Envoy's) */
    }
    return rv != 0 ? -EINVAL : 0;
}

/* ---- the ClusterLoadAssignment type (EDS) ---- */

/* The subscribed assignments of one response, each to every ADS EDS cluster whose service name
 * it carries, through reload_endpoints (Envoy's EDS rules, same stats as EDS from files). An
 * error NACKs the response with the resource's own path; clusters applied before it keep their
 * new endpoints (as Envoy's watches). */
static int eds_apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                     struct err *err)
{
    struct ads *a = ud;
    int rv = 0;
    struct eds_now *e = NULL;
    uint32_t n_e = eds_now(a, &e);
    Google__Protobuf__Any **group = xcalloc(n, sizeof(*group));
    bool *done = xcalloc(n, sizeof(*done));
    for (size_t i = 0; i < n; i++) {
        if (done[i]) {
            continue;
        }
        size_t k = 0;
        for (size_t j = i; j < n; j++) {
            if (!done[j] && strcmp(res[j].name, res[i].name) == 0) {
                group[k++] = (Google__Protobuf__Any *)res[j].any;
                done[j] = true;
            }
        }
        bool accepted = false;
        for (uint32_t c = 0; c < n_e; c++) {
            if (strcmp(e[c].service, res[i].name) != 0) {
                continue;
            }
            struct err ce;
            err_clear(&ce);
            if (reload_endpoints(a->reload, e[c].cluster, version, group, k, NULL, &ce) == 0) {
                accepted = true;
            } else if (rv == 0) {
                rv = -EINVAL;
                /* reload_endpoints speaks of "resources[0]": this response's is resources[i] */
                const char *tail = strncmp(ce.msg, "resources[0]", 12) == 0 ? ce.msg + 12 : NULL;
                if (tail != NULL) {
                    char path[40];
                    snprintf(path, sizeof(path), "resources[%u]", res[i].index);
                    err_set(err, NULL, "%s%s", path, tail);
                } else {
                    *err = ce;
                }
            }
            for (uint32_t w = 0; w < a->n_eds_wait; w++) {
                if (strcmp(a->eds_wait[w]->cluster, e[c].cluster) == 0) {
                    waiter_done(a, a->eds_wait[w]); /* accepted or not, as Envoy */
                }
            }
        }
        if (accepted && k == 1) {
            cache_put(a, res[i].name, version, group[0]);
        }
    }
    free(group);
    free(done);
    eds_now_free(e, n_e);
    return rv;
}

/* ---- the connection ---- */

static void connect_next(struct ads *a);
static void teardown(struct ads *a);

__attribute__((format(printf, 2, 3))) static void fail(struct ads *a, const char *fmt, ...)
{
    if (a->failed) {
        return;
    }
    a->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->why, sizeof(a->why), fmt, ap);
    va_end(ap);
    if (!a->in_h2) {
        teardown(a);
    }
}

static void close_socket(struct ads *a)
{
    if (a->tls != NULL) {
        tls_conn_shutdown(a->tls);
        tls_conn_destroy(a->tls);
        a->tls = NULL;
    }
    if (a->fd >= 0) {
        ev_io_stop(a->loop, &a->io);
        close(a->fd);
        a->fd = -1;
    }
}

static void teardown(struct ads *a)
{
    resolver_cancel(reload_resolver(a->reload), a->query);
    a->query = NULL;
    close_socket(a);
    h2_keepalive_stop(&a->ka);
    if (a->h2 != NULL) {
        nghttp2_session_del(a->h2);
        a->h2 = NULL;
    }
    grpc_msg_reader_reset(&a->rd);
    free(a->req);
    a->req = NULL;
    buf_deinit(&a->out);
    buf_init(&a->out);
    set_gauge(&a->stats.connected_state, 0);
    ev_timer_stop(a->loop, &a->timer);
    uint64_t ms = ads_backoff_next(&a->backoff, next_rand(a));
    LOG_W("ads: %s; reconnecting in %llu ms", a->why, (unsigned long long)ms);
    a->phase = PH_BACKOFF;
    a->failed = false;
    ev_timer_set(&a->timer, (double)ms / 1000.0, 0);
    ev_timer_start(a->loop, &a->timer);
    update_pending(a);
}

static void watch(struct ads *a, int ev)
{
    if ((a->io.events & (EV_READ | EV_WRITE)) != ev) {
        ev_io_stop(a->loop, &a->io);
        ev_io_set(&a->io, a->fd, ev);
        ev_io_start(a->loop, &a->io);
    }
}

/* Frames from nghttp2 into `out`, then `out` into the socket; watches for writability while
 * bytes wait. */
static void flush(struct ads *a)
{
    if (a->h2 == NULL || a->failed) {
        return;
    }
    while (buf_len(&a->out) < OUT_MAX) {
        const uint8_t *d = NULL;
        ssize_t n = nghttp2_session_mem_send(a->h2, &d);
        if (n < 0) {
            fail(a, "HTTP/2: %s", nghttp2_strerror((int)n));
            return;
        }
        if (n == 0) {
            break;
        }
        buf_append(&a->out, d, (size_t)n);
    }
    while (buf_len(&a->out) > 0) {
        ssize_t w = sock_send(a->fd, a->tls, buf_head(&a->out), buf_len(&a->out));
        if (w == -EAGAIN) {
            break;
        }
        if (w < 0) {
            fail(a, "write: %s", w == -EPROTO ? "TLS error" : strerror((int)-w));
            return;
        }
        buf_consume(&a->out, (size_t)w);
    }
    if (!nghttp2_session_want_read(a->h2) && !nghttp2_session_want_write(a->h2) &&
        buf_len(&a->out) == 0) {
        fail(a, "the HTTP/2 session ended");
        return;
    }
    int ev =
        EV_READ | (buf_len(&a->out) > 0 || (a->tls != NULL && a->tls->want_write) ? EV_WRITE : 0);
    watch(a, ev);
    update_pending(a);
}

/* A request became due: wake the deferred data provider. */
static void kick(struct ads *a)
{
    if (a->phase == PH_STREAMING && a->h2 != NULL && !a->failed && ads_state_pending(&a->st) > 0) {
        nghttp2_session_resume_data(a->h2, a->sid); /* not deferred: nothing to do */
    }
    flush(a);
}

static ssize_t read_cb(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)sid;
    (void)flags;
    (void)src;
    struct ads *a = ud;
    if (a->req == NULL) {
        uint8_t *m = NULL;
        size_t len = 0;
        int t = ads_state_next_request(&a->st, &m, &len);
        if (t < 0) {
            return NGHTTP2_ERR_DEFERRED;
        }
        const struct ads_type_state *ts = &a->st.types[t];
        LOG_D("ads: %s request: version '%s', nonce '%s', %zu name(s)%s", ts->type->label,
              ts->version, ts->nonce, ts->n_names, ts->last_nack ? ", NACK" : "");
        a->req = xmalloc(len + GRPC_MSG_PREFIX);
        grpc_msg_prefix(a->req, (uint32_t)len);
        memcpy(a->req + GRPC_MSG_PREFIX, m, len);
        free(m);
        a->req_len = len + GRPC_MSG_PREFIX;
        a->req_off = 0;
    }
    size_t n = a->req_len - a->req_off < length ? a->req_len - a->req_off : length;
    memcpy(buf, a->req + a->req_off, n);
    a->req_off += n;
    if (a->req_off == a->req_len) {
        free(a->req);
        a->req = NULL;
    }
    return (ssize_t)n;
}

static int on_message(void *ud, const uint8_t *msg, size_t len)
{
    struct ads *a = ud;
    ads_backoff_reset(&a->backoff); /* as Envoy: a response proves the stream works */
    struct err err;
    err_clear(&err);
    int t = -1;
    enum ads_resp r = ads_state_on_response(&a->st, msg, len, &t, &err);
    const char *label = t >= 0 ? a->types[t].label : "?";
    switch (r) {
    case ADS_RESP_ACK:
        LOG_D("ads: %s version '%s' accepted", label, a->st.types[t].version);
        break;
    case ADS_RESP_NACK:
        LOG_W("ads: %s response rejected (NACK), keeping version '%s': %s", label,
              a->st.types[t].version, err.msg);
        break;
    case ADS_RESP_IGNORED:
        LOG_W("ads: ignoring a response: %s", err.msg);
        break;
    case ADS_RESP_BAD:
        fail(a, "bad response: %s", err.msg);
        return -1;
    }
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    struct ads *a = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->hd.stream_id != a->sid) {
        return 0;
    }
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":status")) {
        a->http_status = 0;
        for (size_t i = 0; i < valuelen && i < 3 && value[i] >= '0' && value[i] <= '9'; i++) {
            a->http_status = a->http_status * 10 + (value[i] - '0');
        }
    } else if (IS("content-type")) {
        a->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0;
    } else if (IS("grpc-status")) {
        a->grpc_status = 0;
        for (size_t i = 0; i < valuelen && i < 4 && value[i] >= '0' && value[i] <= '9'; i++) {
            a->grpc_status = a->grpc_status * 10 + (value[i] - '0');
        }
    } else if (IS("grpc-message")) {
        size_t n = valuelen < sizeof(a->grpc_message) - 1 ? valuelen : sizeof(a->grpc_message) - 1;
        for (size_t i = 0; i < n; i++) {
            a->grpc_message[i] = value[i] >= ' ' && value[i] < 0x7f ? (char)value[i] : '?';
        }
        a->grpc_message[n] = '\0';
    }
#undef IS
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    struct ads *a = ud;
    h2_keepalive_on_frame(&a->ka, f);
    if (f->hd.type == NGHTTP2_GOAWAY) {
        fail(a, "the server sent GOAWAY (error code %u)", f->goaway.error_code);
        return 0;
    }
    if (f->hd.stream_id != a->sid) {
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_RESPONSE &&
        (a->http_status != 200 || !a->grpc_ct) && a->grpc_status < 0) {
        fail(a, "the server answered :status %d%s", a->http_status,
             a->grpc_ct ? "" : " without content-type application/grpc");
        return 0;
    }
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
        fail(a, "the stream ended: grpc-status %d%s%s", a->grpc_status,
             a->grpc_message[0] != '\0' ? ": " : "", a->grpc_message);
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)s;
    (void)flags;
    struct ads *a = ud;
    if (sid != a->sid || a->failed) {
        return 0;
    }
    enum grpc_msg_err e = grpc_msg_feed(&a->rd, data, len, on_message, a);
    if (e == GRPC_MSG_TOO_LARGE) {
        fail(a, "a message over %u bytes", ADS_MAX_MESSAGE);
    } else if (e == GRPC_MSG_COMPRESSED) {
        fail(a, "a compressed message (no grpc-encoding was offered)");
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)s;
    struct ads *a = ud;
    if (sid == a->sid) {
        fail(a, "the stream was closed (HTTP/2 error code %u)", code);
    }
    return 0;
}

static void ka_flush(void *ud)
{
    flush(ud);
}

/* No PING ACK within the ADS cluster's connection_keepalive.timeout: the control plane, or the
 * path to it, is gone. The connection is closed and reconnected with the usual backoff; the
 * config received so far keeps serving. */
static void ka_timeout(void *ud)
{
    struct ads *a = ud;
    STAT_INC(a->stats.keepalive_timeout);
    fail(a, "no PING ACK within %llu ms (keepalive timeout)",
         (unsigned long long)a->cfg->ads->cluster->h2_keepalive.timeout_ms);
}

static const struct h2_keepalive_ops ka_ops = {.flush = ka_flush, .timeout = ka_timeout};

static void start_stream(struct ads *a)
{
    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_closed_streams(opt, 1);
    int rv = nghttp2_session_client_new2(&a->h2, cbs, a, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        a->h2 = NULL;
        fail(a, "HTTP/2: %s", nghttp2_strerror(rv));
        return;
    }
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, WINDOW},
    };
    nghttp2_submit_settings(a->h2, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(a->h2, NGHTTP2_FLAG_NONE, 0, (int32_t)WINDOW);

    const struct ads_cfg *ac = a->cfg->ads;
    nghttp2_nv *nv = xcalloc(7 + ac->n_headers, sizeof(*nv));
    size_t n = 0;
#define NV(k, v, vl)                                                                               \
    nv[n++] = (nghttp2_nv){(uint8_t *)(k), (uint8_t *)(v), strlen(k), (vl), NGHTTP2_NV_FLAG_NONE}
    NV(":method", "POST", 4);
    NV(":scheme", a->tls != NULL ? "https" : "http", a->tls != NULL ? 5 : 4);
    NV(":path", ADS_PATH, strlen(ADS_PATH));
    NV(":authority", ac->authority.p, ac->authority.len);
    NV("content-type", "application/grpc", 16);
    NV("te", "trailers", 8);
    NV("user-agent", "remora/" REMORA_VERSION, strlen("remora/" REMORA_VERSION));
#undef NV
    for (uint32_t i = 0; i < ac->n_headers; i++) {
        nv[n++] =
            (nghttp2_nv){(uint8_t *)ac->headers[i].key.p, (uint8_t *)ac->headers[i].value.p,
                         ac->headers[i].key.len, ac->headers[i].value.len, NGHTTP2_NV_FLAG_NONE};
    }
    nghttp2_data_provider prd = {.source = {.ptr = a}, .read_callback = read_cb};
    a->http_status = 0;
    a->grpc_ct = false;
    a->grpc_status = -1;
    a->grpc_message[0] = '\0';
    grpc_msg_reader_init(&a->rd, ADS_MAX_MESSAGE);
    a->sid = nghttp2_submit_request(a->h2, NULL, nv, n, &prd, a);
    free(nv);
    if (a->sid < 0) {
        fail(a, "HTTP/2: %s", nghttp2_strerror(a->sid));
        return;
    }
    ads_state_stream_start(&a->st);
    h2_keepalive_init(&a->ka, a->loop, &ac->cluster->h2_keepalive, &ka_ops, a, next_rand(a));
    h2_keepalive_start(&a->ka, a->h2);
    a->phase = PH_STREAMING;
    set_gauge(&a->stats.connected_state, 1);
    ev_timer_stop(a->loop, &a->timer);
    LOG_I("ads: stream open to %s (cluster '%.*s'%s%s)", a->peer_text, STR_FMT(ac->cluster->name),
          a->tls != NULL ? ", " : "", a->tls != NULL ? SSL_get_version(a->tls->ssl) : "");
    flush(a);
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct ads *a = w->data;
    if (a->phase == PH_CONNECTING) {
        int e = 0;
        socklen_t el = sizeof(e);
        if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0) {
            e = errno;
        }
        if (e != 0) {
            fail(a, "connect: %s", strerror(e));
            return;
        }
        const struct tls_ctx *tc = a->cfg->ads->cluster->tls;
        if (tc != NULL) {
            /* TLS to the control plane: the cluster's UpstreamTlsContext, offering h2 (a gRPC
             * server needs it); the connect timeout covers the handshake too. */
            static const uint8_t h2[] = {2, 'h', '2'};
            const char *why = NULL;
            int r = tls_connect_step(&a->tls, tc, a->fd, h2, sizeof(h2), NULL, &why);
            if (r < 0) {
                fail(a, "%s", why);
                return;
            }
            if (r == 0) {
                watch(a, tls_conn_wait_events(a->tls));
                return;
            }
            struct str alpn = tls_conn_alpn(a->tls);
            if (alpn.len > 0 && !str_eq(alpn, STR_LIT("h2"))) {
                fail(a, "the server chose ALPN '%.*s', not h2", STR_FMT(alpn));
                return;
            }
        }
        start_stream(a);
        return;
    }
    /* Over TLS, records OpenSSL read ahead are drained here: the socket may not wake us for
     * them again (tls_conn_pending). */
    while (revents & EV_READ) {
        uint8_t buf[READ_CHUNK];
        ssize_t n = sock_recv(a->fd, a->tls, buf, sizeof(buf));
        if (n == 0) {
            fail(a, "the server closed the connection");
            return;
        }
        if (n == -EAGAIN) {
            break;
        }
        if (n < 0) {
            fail(a, "read: %s", n == -EPROTO ? "TLS error" : strerror((int)-n));
            return;
        }
        a->in_h2 = true;
        ssize_t used = nghttp2_session_mem_recv(a->h2, buf, (size_t)n);
        a->in_h2 = false;
        if (used < 0) {
            fail(a, "HTTP/2: %s", nghttp2_strerror((int)used));
        }
        if (a->failed) {
            teardown(a);
            return;
        }
        if (a->tls == NULL || !tls_conn_pending(a->tls)) {
            break;
        }
    }
    kick(a);
}

static void on_timer(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct ads *a = t->data;
    if (a->phase == PH_RESOLVING) {
        fail(a, "resolving the ADS cluster's name: timed out");
    } else if (a->phase == PH_CONNECTING) {
        fail(a, "connect: timed out");
    } else if (a->phase == PH_BACKOFF) {
        connect_next(a);
    }
}

static double connect_timeout_s(const struct ads *a)
{
    const struct cluster_cfg *cc = a->cfg->ads->cluster;
    return (double)(cc->connect_timeout_ms > 0 ? cc->connect_timeout_ms : 5000) / 1000.0;
}

/* Connects to a->peer. */
static void connect_peer(struct ads *a)
{
    a->phase = PH_CONNECTING;
    sockaddr_text((const struct sockaddr *)&a->peer.ss, a->peer_text);
    a->fd = socket(a->peer.ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->fd < 0) {
        fail(a, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(a->fd, (const struct sockaddr *)&a->peer.ss, a->peer.len) != 0 &&
        errno != EINPROGRESS) {
        fail(a, "connect to %s: %s", a->peer_text, strerror(errno));
        return;
    }
    ev_io_init(&a->io, on_io, a->fd, EV_WRITE);
    a->io.data = a;
    ev_io_start(a->loop, &a->io);
    ev_timer_stop(a->loop, &a->timer);
    ev_timer_set(&a->timer, connect_timeout_s(a), 0);
    ev_timer_start(a->loop, &a->timer);
}

/* The answer for a STRICT_DNS ADS cluster's name: its first address (as Envoy's gRPC stream
 * takes a host of the cluster's current set), with the endpoint's port. */
static void on_resolved(void *arg, const char *host, const struct resolver_answer *ans)
{
    struct ads *a = arg;
    a->query = NULL;
    uint16_t port =
        a->cfg->ads->cluster->dns_eps[(a->next_ep - 1) % a->cfg->ads->cluster->n_dns_eps].port;
    struct sockaddr_in *in = (struct sockaddr_in *)&a->peer.ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a->peer.ss;
    memset(&a->peer, 0, sizeof(a->peer));
    if (ans->n > 0 && inet_pton(AF_INET, ans->addrs[0], &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        a->peer.len = sizeof(*in);
    } else if (ans->n > 0 && inet_pton(AF_INET6, ans->addrs[0], &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        a->peer.len = sizeof(*in6);
    } else {
        fail(a, "cannot resolve '%s'%s%s", host, ans->gai_err ? ": " : "",
             ans->gai_err ? gai_strerror(ans->gai_err) : "");
        return;
    }
    connect_peer(a);
}

static void connect_next(struct ads *a)
{
    const struct cluster_cfg *cc = a->cfg->ads->cluster;
    struct resolver *res = reload_resolver(a->reload);
    if ((cc->type == CLUSTER_STRICT_DNS || cc->type == CLUSTER_LOGICAL_DNS) && cc->n_dns_eps > 0 &&
        res != NULL) {
        /* a STRICT_DNS or LOGICAL_DNS cluster's name is resolved again at every attempt, off the
         * loop, so a moved control plane is found on the next reconnect */
        const struct cluster_dns_ep *de = &cc->dns_eps[a->next_ep % cc->n_dns_eps];
        a->next_ep++;
        a->phase = PH_RESOLVING;
        ev_timer_stop(a->loop, &a->timer);
        ev_timer_set(&a->timer, connect_timeout_s(a), 0);
        ev_timer_start(a->loop, &a->timer);
        a->query =
            resolver_query(res, de->host.p, (enum resolver_family)cc->dns_family, on_resolved, a);
        return;
    }
    const struct endpoint_cfg *ep = &cc->endpoints[a->next_ep % cc->n_endpoints];
    a->next_ep++;
    a->peer = ep->addr;
    connect_peer(a);
}

/* ---- life ---- */

struct ads *ads_new(struct ev_loop *loop, const struct config *cfg, struct reload *reload,
                    void (*on_init)(void *ud), void *ud)
{
    struct ads *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->cfg = cfg;
    a->reload = reload;
    a->on_init = on_init;
    a->ud = ud;
    a->fd = -1;
    a->rng = ((uint64_t)(ev_time() * 1e6) ^ ((uint64_t)getpid() << 32)) | 1;
    buf_init(&a->out);
    ads_backoff_init(&a->backoff, BACKOFF_BASE_MS, BACKOFF_MAX_MS);
    ev_init(&a->timer, on_timer);
    a->timer.data = a;

    /* The type table. A new type: an entry here, its apply, and its subscription below. In
     * Envoy's order (CDS, EDS, LDS, RDS): requests due together are written in table order, so
     * CDS is asked for first, and EDS names once the clusters are known. */
    a->t_cds = a->t_eds = NO_TYPE;
    if (cfg->cds_ads) {
        a->t_cds = a->n_types;
        a->types[a->n_types++] = (struct ads_type){CDS_TYPE_URL, "cds", cds_apply, a};
    }
    if (cfg->has_cds) {
        /* CDS clusters (over ADS or from a file) may take their endpoints over ADS */
        a->t_eds = a->n_types;
        a->types[a->n_types++] = (struct ads_type){CDS_EDS_TYPE_URL, "eds", eds_apply, a};
    }
    a->t_lds = NO_TYPE;
    if (cfg->lds_ads) {
        a->t_lds = a->n_types;
        a->types[a->n_types++] = (struct ads_type){LDS_TYPE_URL, "lds", lds_apply, a};
    }
    a->t_rds = a->n_types;
    a->types[a->n_types++] = (struct ads_type){RDS_TYPE_URL, "rds", rds_apply, a};
    a->t_sds = NO_TYPE;
    bool sds = cfg->has_lds || cfg->has_cds; /* their listeners and clusters may name secrets */
    for (uint32_t i = 0; i < cfg->n_sds && !sds; i++) {
        sds = cfg->sds[i].ads;
    }
    if (sds) {
        a->t_sds = a->n_types;
        a->types[a->n_types++] = (struct ads_type){SDS_TYPE_URL, "sds", sds_apply_cb, a};
    }

    /* The Node: the bootstrap's (metadata, locality), id and cluster as overridden by
     * --service-node / --service-cluster; the user agent is remora's (Envoy's is "envoy"). */
    Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    const Envoy__Config__Bootstrap__V3__Bootstrap *bp = cfg->bootstrap_pb;
    const Envoy__Config__Core__V3__Node *bn = bp != NULL ? bp->node : NULL;
    node.id = (char *)(cfg->node_id.p != NULL ? cfg->node_id.p : "");
    node.cluster = (char *)(cfg->node_cluster.p != NULL ? cfg->node_cluster.p : "");
    if (bn != NULL) {
        node.metadata = bn->metadata;
        node.locality = bn->locality;
    }
    node.user_agent_name = "remora";
    node.user_agent_version_type_case =
        ENVOY__CONFIG__CORE__V3__NODE__USER_AGENT_VERSION_TYPE_USER_AGENT_VERSION;
    node.user_agent_version = REMORA_VERSION;
    a->node = node;
    ads_state_init(&a->st, a->types, a->n_types, &a->node,
                   cfg->ads->set_node_on_first_message_only);

    /* Subscriptions and the initial fetch. */
    if (a->t_cds != NO_TYPE) {
        ads_state_subscribe_wildcard(&a->st, a->t_cds);
        a->cds_wait = waiter_new(a, cfg->cds_initial_fetch_timeout_ms, NULL, "cds: no Clusters");
    }
    if (a->t_lds != NO_TYPE) {
        /* Envoy's listener warming: serving waits for the first Listener response */
        ads_state_subscribe_wildcard(&a->st, a->t_lds);
        a->lds_wait = waiter_new(a, cfg->lds_initial_fetch_timeout_ms, NULL, "lds: no Listeners");
    }
    if (a->t_eds != NO_TYPE) {
        reload_set_cds_hook(reload, eds_sync, a);
        reload_set_eds_timeout_hook(reload, eds_timeout, a);
        eds_sync(a); /* clusters of a CDS file: loaded already */
        if (a->t_cds == NO_TYPE) {
            eds_start_waits(a);
        }
    }
    a->rds_wait = xcalloc(cfg->n_rds ? cfg->n_rds : 1, sizeof(*a->rds_wait));
    const char **names = xcalloc(cfg->n_rds ? cfg->n_rds : 1, sizeof(*names));
    size_t n_names = 0;
    for (uint32_t i = 0; i < cfg->n_rds; i++) {
        const struct rds_cfg *rc = &cfg->rds[i];
        if (!rc->ads) {
            continue;
        }
        names[n_names++] = rc->route_config_name.p;
        a->rds_wait[i] = waiter_new(a, rc->initial_fetch_timeout_ms, NULL,
                                    "rds '%s' (http.%.*s): no RouteConfiguration",
                                    rc->route_config_name.p, STR_FMT(rc->hcm->stat_prefix));
    }
    ads_state_subscribe(&a->st, a->t_rds, names, n_names); /* n_rds < ADS_MAX_NAMES */
    free(names);
    /* Secrets: every name a TLS context takes over ADS (one subscription per name, shared by
     * the bootstrap's and the dynamic listeners' and clusters' contexts: sds_sync). */
    a->sds_wait = xcalloc(cfg->n_sds ? cfg->n_sds : 1, sizeof(*a->sds_wait));
    for (uint32_t i = 0; i < cfg->n_sds; i++) {
        const struct sds_cfg *sc = &cfg->sds[i];
        if (!sc->ads) {
            continue;
        }
        a->sds_wait[i] =
            waiter_new(a, sc->initial_fetch_timeout_ms, NULL,
                       "sds '%s': no Secret for %u TLS context(s)", sc->name.p, sc->n_users);
    }
    reload_set_sds_hook(reload, sds_sync, a);
    sds_sync_at(a, true); /* the bootstrap's names, and those of LDS/CDS files loaded already */
    reload_set_lds_hook(reload, lds_sync, a);
    if (cfg->has_lds) {
        lds_sync(a); /* listeners of an LDS file: loaded already */
    }
    connect_next(a);
    return a;
}

bool ads_initializing(const struct ads *a)
{
    return a != NULL && a->n_waiting > 0;
}

const struct ads_stats *ads_get_stats(const struct ads *a)
{
    return a != NULL ? &a->stats : NULL;
}

void ads_free(struct ads *a)
{
    if (a == NULL) {
        return;
    }
    a->failed = true; /* nothing below may start a reconnect */
    resolver_cancel(reload_resolver(a->reload), a->query);
    close_socket(a);
    h2_keepalive_stop(&a->ka);
    if (a->h2 != NULL) {
        nghttp2_session_del(a->h2);
    }
    ev_timer_stop(a->loop, &a->timer);
    if (a->t_eds != NO_TYPE) {
        reload_set_cds_hook(a->reload, NULL, NULL);
        reload_set_eds_timeout_hook(a->reload, NULL, NULL);
    }
    reload_set_lds_hook(a->reload, NULL, NULL);
    reload_set_sds_hook(a->reload, NULL, NULL);
    for (uint32_t i = 0; i < a->n_dsds_wait; i++) {
        waiter_free(a, a->dsds_wait[i]);
    }
    free(a->dsds_wait);
    for (uint32_t i = 0; i < a->cfg->n_rds; i++) {
        waiter_free(a, a->rds_wait[i]);
    }
    for (uint32_t i = 0; i < a->n_lrds_wait; i++) {
        waiter_free(a, a->lrds_wait[i]);
    }
    free(a->lrds_wait);
    free(a->rds_wait);
    for (uint32_t i = 0; i < a->cfg->n_sds; i++) {
        waiter_free(a, a->sds_wait[i]);
    }
    free(a->sds_wait);
    waiter_free(a, a->cds_wait);
    waiter_free(a, a->lds_wait);
    for (uint32_t i = 0; i < a->n_eds_wait; i++) {
        waiter_free(a, a->eds_wait[i]);
    }
    free(a->eds_wait);
    for (size_t i = 0; i < a->n_eds_cache; i++) {
        cache_clear(&a->eds_cache[i]);
    }
    free(a->eds_cache);
    grpc_msg_reader_reset(&a->rd);
    free(a->req);
    buf_deinit(&a->out);
    ads_state_free(&a->st);
    free(a);
}
