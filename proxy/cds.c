/* cds: dynamic clusters (see cds.h). Main builds and retires; workers set up and tear down
 * their own state when the route tables they hold start or stop naming a cluster. */
#include "proxy/cds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/build_tls.h"
#include "proxy/config/cluster_map.h"
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
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/outlier.h"
#include "proxy/upstream/shared.h"
#include "proxy/worker.h"
#include "proxy/xds/ads_state.h"

#define PbCluster Envoy__Config__Cluster__V3__Cluster
#define PbCla Envoy__Config__Endpoint__V3__ClusterLoadAssignment

/* A cluster's stats, shared by its successive versions (a CDS modification, an EDS update), as
 * Envoy keeps a cluster's stats by name: cluster.<name>.* count on, and go with the last
 * version when the cluster is removed. Main only (versions are made and freed there). */
struct name_stats {
    uint32_t refs;
    struct cluster_stats *cs; /* [n_workers]: each written by its worker */
    struct eds_stats eds;
};

struct cds_cluster {
    _Atomic uint32_t refs; /* the sets holding it, plus a worker's teardown in progress */
    struct cds *owner;
    struct config *c;              /* ref: the container that owns cfg and pb */
    struct cluster_cfg *cfg;       /* c->clusters[0] */
    const ProtobufCMessage *pb;    /* the Cluster resource (owned by c), for /config_dump */
    uint64_t hash;                 /* XXH64 of the resource's bytes: equal means unchanged */
    char *version;                 /* owned: version_info of the update that added it */
    double updated;                /* when (Unix seconds) */
    struct cluster_shared *shared; /* owned; [1] */
    struct name_stats *st;         /* ref: cluster.<name>.* */
    struct host_stats **hs;        /* owned; [n_workers][cfg->n_endpoints] */
    struct stats_block *shells;    /* owned; [n_workers]: cluster -> st->cs[w], host -> hs[w] */
    struct stats_block **blocks;   /* owned; [n_workers] -> shells, for readers of blocks */
    bool eds_loaded;               /* EDS: built with a ClusterLoadAssignment */
    uint64_t cla_hash;             /* ...of these bytes */
    const ProtobufCMessage *cla;   /* ...this one (owned by c) */
    struct cluster_rt *rt;         /* owned; [n_workers] (cfg->dyn_rt) */
    uint32_t *wusers;              /* [n_workers]: worker w's route pins that name it */
    bool *winit;                   /* [n_workers]: rt[w] is set up */
    _Atomic bool retired;          /* main: no longer in the current set */
    bool warm_pending;             /* a bootstrap cluster's version: its first health-check
                                    * round is startup's to wait for (cds_set_boot_warm) */
    struct health_check *hc;       /* main; NULL once retired */
    struct outlier *od;            /* main; freed with the cluster */
    struct cds_cluster *next;      /* main: in cds.retired */
    /* warming (Envoy's cluster warming; see "warming" below), main only */
    bool warming;       /* in cds.warm: added or updated, not yet in the routing set */
    bool hc_done;       /* no health checker, or its first round is done */
    bool eds_expired;   /* EDS over ADS: initial_fetch_timeout passed without an assignment */
    ev_timer fetch_tmr; /* ...its timer, while warming for it */
};

struct cds_set {
    _Atomic uint32_t refs; /* main's current + each RDS container compiled against it */
    struct cds *owner;
    struct cds_cluster **v; /* owned refs; [n] */
    uint32_t n;
    struct arena arena; /* the map */
    struct cluster_map map;
    struct rds_clusters rc;
};

struct cds {
    struct ev_loop *loop;
    const struct config *boot;
    uint32_t n_workers;
    struct cds_set *cur;         /* ref; NULL before the first update */
    struct cds_cluster *retired; /* waiting for their last reference */
    ev_async reap;               /* woken when a retired cluster's last reference goes */
    struct cm_stats stats;
    struct cluster_view *views; /* owned; [n_views] (set_views) */
    uint32_t n_views;
    char *version; /* owned: the current set's version_info */
    uint64_t seed;
    const struct config_dns *dns; /* borrowed: STRICT_DNS answers for the builder, or NULL */
    /* cds_set_peer_conflict: the LDS listeners' secret roles */
    const char *(*peer_conflict)(void *ud, const struct config *c);
    void *peer_ud;
    struct cds_cluster **warm; /* refs; [n_warm]: the warming versions (no worker sees them) */
    uint32_t n_warm;
    struct cds_warm_ops ops;
    struct cds_boot_dns *bdns; /* owned; [n_bdns]: the bootstrap's STRICT_DNS clusters */
    uint32_t n_bdns;
    void (*boot_warm)(void *ud); /* a bootstrap version's first health-check round is done */
    void *boot_warm_ud;
    /* cds_hold_init: startup waits for the warming list to empty, until init_deadline */
    void (*init_fn)(void *ud);
    void *init_ud;
    ev_tstamp init_deadline;
    ev_timer init_tmr;
};

/* A worker's hold on one version of a bootstrap STRICT_DNS cluster: the version it gives new
 * streams, and one per stream or TCP session that took it (users). */
struct cds_dns_pin {
    struct cds_cluster *l; /* ref (the worker's) */
    uint32_t users;
};

/* One bootstrap STRICT_DNS cluster resolved again and again (see cds.h). */
struct cds_boot_dns {
    struct cds *owner;
    const struct cluster_cfg *boot;  /* borrowed: the bootstrap's (its boot_dns is this) */
    const ProtobufCMessage *pb;      /* borrowed from the bootstrap: its Cluster */
    char path[64];                   /* "static_resources.clusters[i]" */
    struct cds_cluster *cur;         /* ref: the current version (outside any set) */
    struct boot_dns_worker *workers; /* [n_workers] */
};

struct boot_dns_worker {
    _Atomic(struct cds_cluster *) inbox; /* ref: posted by main, not taken yet */
    struct cds_dns_pin *cur;             /* the worker's: what new streams take */
};

/* ---- lifetimes ---- */

static void live_ref(struct cds_cluster *l)
{
    atomic_fetch_add_explicit(&l->refs, 1, memory_order_relaxed);
}

static void live_unref(struct cds_cluster *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1) {
        ev_async_send(l->owner->loop, &l->owner->reap); /* any thread */
    }
}

static void live_free(struct cds_cluster *l)
{
    struct cds *cd = l->owner;
    outlier_free(l->od);
    for (uint32_t w = 0; w < cd->n_workers; w++) {
        if (l->winit[w]) {
            /* cannot happen (a worker tears down before it lets go): keep its memory rather
             * than free what the worker's loop may reach */
            LOG_E("cds: cluster '%.*s' still set up on worker %u; not freed", STR_FMT(l->cfg->name),
                  w);
            return;
        }
        free(l->hs[w]);
    }
    free(l->hs);
    free(l->shells);
    free(l->blocks);
    if (--l->st->refs == 0) {
        free(l->st->cs);
        free(l->st);
    }
    cluster_shared_free(l->shared, l->c);
    free(l->rt);
    free(l->wusers);
    free(l->winit);
    free(l->version);
    config_unref(l->c);
    free(l);
}

static void reap(struct cds *cd)
{
    struct cds_cluster **pp = &cd->retired;
    while (*pp != NULL) {
        struct cds_cluster *l = *pp;
        if (atomic_load_explicit(&l->refs, memory_order_acquire) == 0) {
            *pp = l->next;
            LOG_D("cds: cluster '%.*s' freed", STR_FMT(l->cfg->name));
            live_free(l);
        } else {
            pp = &l->next;
        }
    }
}

static void reap_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    reap(a->data);
}

static void set_ref(const void *owner)
{
    struct cds_set *s = (struct cds_set *)owner;
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

static void set_unref(const void *owner)
{
    struct cds_set *s = (struct cds_set *)owner;
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        live_unref(s->v[i]);
    }
    free(s->v);
    struct arena a = s->arena;
    free(s);
    arena_deinit(&a);
}

/* Main: out of the current set. Workers tear their state down when they let go of their last
 * table naming it; the health checker stops now. */
static void retire(struct cds *cd, struct cds_cluster *l)
{
    atomic_store_explicit(&l->retired, true, memory_order_release);
    ev_timer_stop(cd->loop, &l->fetch_tmr);
    l->warming = false;
    health_check_free(l->hc);
    l->hc = NULL;
    l->next = cd->retired;
    cd->retired = l;
}

static void hc_ready(void *ud);
static void fetch_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents);

/* A new cluster (one reference, for the set that will hold it) from container `c`; `prev`: the
 * version it replaces (it shares its stats), or NULL. */
static struct cds_cluster *live_new(struct cds *cd, struct config *c, const ProtobufCMessage *pb,
                                    uint64_t hash, const char *version,
                                    const struct cds_cluster *prev)
{
    struct cds_cluster *l = xcalloc(1, sizeof(*l));
    atomic_init(&l->refs, 1);
    atomic_init(&l->retired, false);
    l->owner = cd;
    l->c = c;
    l->cfg = (struct cluster_cfg *)&c->clusters[0];
    l->pb = pb;
    l->hash = hash;
    l->version = xstrdup(version);
    l->updated = ev_time();
    l->shared = cluster_shared_new(c);
    uint32_t n = cd->n_workers;
    if (prev != NULL) {
        l->st = prev->st;
    } else {
        l->st = xcalloc(1, sizeof(*l->st));
        l->st->cs = xcalloc(n, sizeof(*l->st->cs));
    }
    l->st->refs++;
    l->hs = xcalloc(n, sizeof(*l->hs));
    l->shells = xcalloc(n, sizeof(*l->shells));
    l->blocks = xcalloc(n, sizeof(*l->blocks));
    for (uint32_t w = 0; w < n; w++) {
        l->hs[w] = xcalloc(l->cfg->n_endpoints ? l->cfg->n_endpoints : 1, sizeof(*l->hs[w]));
        l->shells[w].cluster = &l->st->cs[w];
        l->shells[w].host = &l->hs[w];
        l->blocks[w] = &l->shells[w];
    }
    l->rt = xcalloc(n, sizeof(*l->rt));
    l->wusers = xcalloc(n, sizeof(*l->wusers));
    l->winit = xcalloc(n, sizeof(*l->winit));
    l->cfg->dyn_rt = l->rt; /* before any worker can see cfg */
    l->hc_done = l->cfg->health_check == NULL;
    ev_timer_init(&l->fetch_tmr, fetch_timeout_cb, 0., 0.);
    l->fetch_tmr.data = l;
    cd->seed = cd->seed * 6364136223846793005ULL + 1442695040888963407ULL;
    if (l->cfg->outlier != NULL) {
        l->od = outlier_new(cd->loop, l->cfg, l->shared, cd->seed);
    }
    if (l->cfg->health_check != NULL) {
        l->hc =
            health_check_new(cd->loop, l->cfg, l->shared, l->blocks, n, cd->seed + 1, hc_ready, l);
    }
    return l;
}

/* ---- updates ---- */

static void free_pb(void *arg)
{
    protobuf_c_message_free_unpacked(arg, NULL);
}

static struct config *container_new(const struct cds *cd)
{
    struct arena a;
    arena_init(&a, 4096);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    c->ads = cd->boot->ads; /* (borrowed: the bootstrap outlives every cluster) SDS over ADS */
    c->dns = cd->dns;       /* STRICT_DNS: the last answers, not a lookup now */
    return c;
}

/* Whether a cluster of this type counts cluster.<name>.update_* (EDS, STRICT_DNS,
 * LOGICAL_DNS). */
static bool has_update_stats(const struct cluster_cfg *cc)
{
    return cc->type == CLUSTER_EDS || cc->type == CLUSTER_STRICT_DNS ||
           cc->type == CLUSTER_LOGICAL_DNS;
}

static bool is_dns(const struct cluster_cfg *cc)
{
    return cc->type == CLUSTER_STRICT_DNS || cc->type == CLUSTER_LOGICAL_DNS;
}

static struct cds_cluster *find(const struct cds_set *s, const char *name)
{
    for (uint32_t i = 0; s != NULL && i < s->n; i++) {
        if (strcmp(s->v[i]->cfg->name.p, name) == 0) {
            return s->v[i];
        }
    }
    return NULL;
}

static struct cds_cluster *find_warm(const struct cds *cd, const char *name)
{
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        if (strcmp(cd->warm[i]->cfg->name.p, name) == 0) {
            return cd->warm[i];
        }
    }
    return NULL;
}

/* The latest version of `name`: the warming one, else the active one, else NULL. */
static struct cds_cluster *find_latest(const struct cds *cd, const char *name)
{
    struct cds_cluster *l = find_warm(cd, name);
    return l != NULL ? l : find(cd->cur, name);
}

/* The latest version of each name: the warming ones, then the active ones no warming version
 * replaces. Returns how many; `*out` is the caller's to free. */
static uint32_t latest(const struct cds *cd, struct cds_cluster ***out)
{
    uint32_t n_cur = cd->cur != NULL ? cd->cur->n : 0;
    struct cds_cluster **v = xcalloc(cd->n_warm + n_cur + 1, sizeof(*v));
    uint32_t k = 0;
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        v[k++] = cd->warm[i];
    }
    for (uint32_t i = 0; i < n_cur; i++) {
        if (find_warm(cd, cd->cur->v[i]->cfg->name.p) == NULL) {
            v[k++] = cd->cur->v[i];
        }
    }
    *out = v;
    return k;
}

/* One resource of an update, checked. */
struct cand {
    char *key;                   /* owned: its name (decoded, else field 1 of its bytes), or NULL */
    bool bad;                    /* rejected: skipped (a cluster of its name in force stays) */
    const char *name;            /* borrowed from m, or from keep */
    uint64_t hash;               /* of the resource's bytes */
    struct cds_cluster *old;     /* the current cluster of that name, or NULL */
    bool same;                   /* old has the same bytes: kept as it is */
    struct config *c;            /* owned until taken: the compiled cluster (not `same`) */
    const ProtobufCMessage *pb;  /* the resource, owned by c */
    const ProtobufCMessage *cla; /* EDS: the assignment carried over from `old` (in c), or NULL */
};

static ProtobufCMessage *msg_copy(const ProtobufCMessage *m);

/* Whether the two Cluster resources subscribe to the same EDS source (file, service name). */
static bool same_eds_source(const PbCluster *a, const PbCluster *b)
{
    if (a->eds_cluster_config == NULL || b->eds_cluster_config == NULL) {
        return false;
    }
    const ProtobufCMessage *x = &a->eds_cluster_config->base, *y = &b->eds_cluster_config->base;
    size_t n = protobuf_c_message_get_packed_size(x);
    if (n != protobuf_c_message_get_packed_size(y)) {
        return false;
    }
    uint8_t *p = xmalloc(2 * n + 1);
    protobuf_c_message_pack(x, p);
    protobuf_c_message_pack(y, p + n);
    bool same = memcmp(p, p + n, n) == 0;
    free(p);
    return same;
}

/* Field 1 (the name, in a Cluster as in a Listener) of a resource that did not decode, or NULL:
 * the cluster of that name in force stays (lds.c has the same). */
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

static int check_one(struct cds *cd, const struct Google__Protobuf__Any *any, size_t i,
                     struct cand *cands, struct err *e)
{
    char path[64];
    snprintf(path, sizeof(path), "resources[%zu]", i);
    ProtobufCMessage *m = NULL;
    if (pbjson_resource_unpack(any, &envoy__config__cluster__v3__cluster__descriptor, pbtypes_find,
                               path, &m, e) != 0) {
        cands[i].key = resource_name(any); /* what it would replace stays */
        return -EINVAL;
    }
    const PbCluster *pc = (const PbCluster *)m;
    const char *name = pc->name != NULL ? pc->name : "";
    cands[i].key = name[0] != '\0' ? xstrdup(name) : NULL;
    char npath[80];
    snprintf(npath, sizeof(npath), "%s.name", path);
    int rv = 0;
    if (name[0] != '\0' && config_find_cluster(cd->boot, str_from_c(name)) != NULL) {
        /* Envoy: a static cluster cannot be updated or removed through the API */
        rv = err_set(e, npath, "'%s' is a static cluster (bootstrap): CDS cannot replace it", name);
    }
    /* every earlier resource's name counts, rejected ones too (Envoy's CdsApiHelper records
     * the name before it applies the cluster: the second of two is the duplicate) */
    for (size_t k = 0; k < i && rv == 0; k++) {
        if (cands[k].key != NULL && strcmp(cands[k].key, name) == 0) {
            rv = err_set(e, npath, "duplicate cluster name '%s'", name);
        }
    }
    if (rv != 0) {
        protobuf_c_message_free_unpacked(m, NULL);
        return rv;
    }
    struct cand *cd_ = &cands[i];
    cd_->hash = hash_xxh64(any->value.data, any->value.len, 0);
    cd_->old = name[0] != '\0' ? find_latest(cd, name) : NULL;
    if (cd_->old != NULL && cd_->old->hash == cd_->hash) {
        cd_->same = true;
        cd_->name = cd_->old->cfg->name.p;
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    struct config *c = container_new(cd);
    config_on_free(c, free_pb, m);
    /* A changed EDS cluster on the same EDS file keeps its assignment until the file is read
     * again (in the same update: reload.c), so no request meets it without endpoints. Over ADS
     * the new version warms instead until its assignment comes (see "warming"). */
    const PbCluster *build_pc = pc;
    if (cd_->old != NULL && cd_->old->cla != NULL &&
        pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS &&
        pc->load_assignment == NULL && same_eds_source((const PbCluster *)cd_->old->pb, pc) &&
        pc->eds_cluster_config->eds_config->config_source_specifier_case !=
            ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
        PbCluster *with = (PbCluster *)msg_copy(m);
        with->load_assignment =
            (Envoy__Config__Endpoint__V3__ClusterLoadAssignment *)msg_copy(cd_->old->cla);
        config_on_free(c, free_pb, with);
        cd_->cla = &with->load_assignment->base;
        build_pc = with;
    }
    if (build_cluster(c, path, build_pc, cd_->cla != NULL, e) != 0) {
        config_unref(c);
        return -EINVAL;
    }
    if (c->clusters[0].eds_ads && cd->boot->ads == NULL) {
        char apath[128];
        snprintf(apath, sizeof(apath), "%s.eds_cluster_config.eds_config.ads", path);
        config_unref(c);
        return err_set(e, apath, "needs dynamic_resources.ads_config");
    }
    /* (a secret name over ADS keeps one role: check_roles, once every resource is checked) */
    if (cd_->old != NULL && (cd_->old->cfg->type != c->clusters[0].type &&
                             (has_update_stats(cd_->old->cfg) || has_update_stats(c->clusters)))) {
        /* its stats would change shape (cluster.<name>.update_*): as a removal and an addition */
        cd_->old = NULL;
    }
    cd_->c = c;
    cd_->pb = m;
    cd_->name = c->clusters[0].name.p;
    return 0;
}

/* What resource `j` puts in the new set: its cluster (new or kept as it is), or for a rejected
 * one the cluster of its name in force that stays (the first resource of a name keeps it: a
 * later one of that name is a duplicate), or NULL. */
static const struct config *cand_config(const struct cds *cd, const struct cand *cands, size_t j)
{
    const struct cand *c = &cands[j];
    if (!c->bad) {
        return c->same ? c->old->c : c->c;
    }
    if (c->key == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < j; k++) {
        if (cands[k].key != NULL && strcmp(cands[k].key, c->key) == 0) {
            return NULL;
        }
    }
    struct cds_cluster *o = find_latest(cd, c->key); /* a warming version stays warming */
    return o != NULL ? o->c : NULL;
}

/* A secret name over ADS keeps one role (sds_role_conflict) across the set the update makes
 * (not the one it replaces: two clusters may swap a name's role together), the bootstrap and
 * the LDS listeners in force (cd->peer_conflict). A new or changed cluster is rejected
 * (NACKed with its path; the cluster of its name in force stays) when it conflicts with the
 * bootstrap, the listeners, an earlier resource's cluster, or a later resource's that stays
 * as it is (unchanged, or rejected: its version in force); between two new ones the later is
 * rejected, as for a duplicate name. A rejection puts the old version back, which may conflict
 * in turn: repeated until nothing changes. Returns how many it rejected, their errors joined
 * into `all`. */
static size_t check_roles(struct cds *cd, struct cand *cands, size_t n, struct err *all)
{
    size_t n_bad = 0;
    bool again = true;
    while (again) {
        again = false;
        for (size_t i = 0; i < n; i++) {
            struct cand *c = &cands[i];
            if (c->bad || c->same || c->c->n_sds == 0) {
                continue;
            }
            const char *conflict = sds_role_conflict(c->c, cd->boot);
            if (conflict == NULL && cd->peer_conflict != NULL) {
                conflict = cd->peer_conflict(cd->peer_ud, c->c);
            }
            for (size_t j = 0; j < n && conflict == NULL; j++) {
                if (j == i || (j > i && !cands[j].bad && !cands[j].same)) {
                    continue;
                }
                const struct config *o = cand_config(cd, cands, j);
                conflict = o != NULL ? sds_role_conflict(c->c, o) : NULL;
            }
            if (conflict == NULL) {
                continue;
            }
            struct err e;
            err_clear(&e);
            char tpath[96];
            snprintf(tpath, sizeof(tpath), "resources[%zu].transport_socket", i);
            err_set(&e, tpath,
                    "secret '%s' over ADS is used both as a certificate and as a validation "
                    "context",
                    conflict);
            err_join(all, &e);
            config_unref(c->c);
            char *key = c->key;
            *c = (struct cand){.key = key, .bad = true};
            n_bad++;
            again = true;
        }
    }
    return n_bad;
}

static struct cds_set *set_new(struct cds *cd, uint32_t n)
{
    struct cds_set *s = xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    s->owner = cd;
    s->n = n;
    s->v = xcalloc(n ? n : 1, sizeof(*s->v));
    arena_init(&s->arena, 1024);
    return s;
}

static void set_map(struct cds *cd, struct cds_set *s)
{
    uint32_t n_all = cd->boot->n_clusters + s->n;
    const struct cluster_cfg **all = xcalloc(n_all ? n_all : 1, sizeof(*all));
    for (uint32_t i = 0; i < cd->boot->n_clusters; i++) {
        all[i] = &cd->boot->clusters[i];
    }
    for (uint32_t i = 0; i < s->n; i++) {
        all[cd->boot->n_clusters + i] = s->v[i]->cfg;
    }
    cluster_map_init_ptrs(&s->map, &s->arena, all, n_all);
    free(all);
    s->rc = (struct rds_clusters){.map = &s->map, .owner = s, .ref = set_ref, .unref = set_unref};
}

/* The admin's views: the bootstrap's STRICT_DNS clusters' current versions (shown in place of
 * the bootstrap's entries), then the active dynamic clusters, and the warming ones of names with
 * no active version (their cluster.<name>.* exist while they warm, as Envoy's). Made again
 * whenever one of these changes. */
static void set_views(struct cds *cd)
{
    free(cd->views);
    uint32_t n_cur = cd->cur != NULL ? cd->cur->n : 0;
    cd->views = xcalloc(cd->n_bdns + n_cur + cd->n_warm + 1, sizeof(*cd->views));
    uint32_t k = 0;
    for (uint32_t i = 0; i < cd->n_bdns; i++) {
        const struct cds_cluster *l = cd->bdns[i].cur;
        cd->views[k++] = (struct cluster_view){l->cfg, l->blocks, l->shared, &l->st->eds, true};
    }
    for (uint32_t i = 0; i < n_cur + cd->n_warm; i++) {
        const struct cds_cluster *l = i < n_cur ? cd->cur->v[i] : cd->warm[i - n_cur];
        if (i >= n_cur && find(cd->cur, l->cfg->name.p) != NULL) {
            continue; /* the active version of its name stands for it */
        }
        cd->views[k++] = (struct cluster_view){
            l->cfg, l->blocks, l->shared, has_update_stats(l->cfg) ? &l->st->eds : NULL, false};
    }
    cd->n_views = k;
}

static void gauge_set(stat_t *g, uint64_t v)
{
    atomic_store_explicit(g, v, memory_order_relaxed);
}

/* ---- warming (Envoy's cluster warming) ----
 *
 * A version CDS adds or modifies that is not initialized yet is warming: it is in cd->warm, not
 * in the routing set, so no route table names it (a route to a new cluster answers as for an
 * unknown one) and the version it replaces keeps serving. Initialized: an EDS cluster over ADS
 * has its first ClusterLoadAssignment, or its initial_fetch_timeout passed (the owner's
 * fetch_timeout may apply an assignment it kept first: the ADS client's, Envoy's EDS cache); a
 * STRICT_DNS cluster's names all had a first lookup back, good or failed (config_dns.pending);
 * and a health-checked cluster had its first health-check round on those endpoints. A warming
 * version runs its health checker; an EDS update or a DNS answer for it makes a new warming
 * version (new_version). The views show a warming version only when its name has no active one. */

static bool dns_pending(const struct cds_cluster *l)
{
    const struct config_dns *dns = l->owner->dns;
    return l->cfg->type == CLUSTER_STRICT_DNS && dns != NULL && dns->pending != NULL &&
           dns->pending(dns->ud, l->cfg);
}

static bool warm_endpoints(const struct cds_cluster *l)
{
    return l->cfg->type != CLUSTER_EDS || !l->cfg->eds_ads || l->eds_loaded || l->eds_expired;
}

static bool warm_ready(const struct cds_cluster *l)
{
    return warm_endpoints(l) && !dns_pending(l) && l->hc_done;
}

/* The warming clusters startup's last hold waits for (cds_hold_init): those whose endpoints are
 * there and wait for their first health-check round only. Names still unanswered and
 * assignments not received had their own bounded waits before (main's DNS hold, the ADS
 * client's initial fetch). */
static uint32_t n_hc_warming(const struct cds *cd)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        const struct cds_cluster *l = cd->warm[i];
        n += warm_endpoints(l) && !dns_pending(l) && !l->hc_done;
    }
    return n;
}

static bool find_warm_in(struct cds_cluster *const *v, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(v[i]->cfg->name.p, name) == 0) {
            return true;
        }
    }
    return false;
}

static void set_gauges(struct cds *cd)
{
    gauge_set(&cd->stats.active_clusters, cd->boot->n_clusters + (cd->cur ? cd->cur->n : 0));
    gauge_set(&cd->stats.warming_clusters, cd->n_warm);
    if (cd->init_fn != NULL && n_hc_warming(cd) == 0) {
        /* startup's hold ends: on the next loop iteration, once the caller has compiled the
         * RDS tables with the clusters that became active */
        ev_timer_stop(cd->loop, &cd->init_tmr);
        ev_timer_set(&cd->init_tmr, 0., 0.);
        ev_timer_start(cd->loop, &cd->init_tmr);
    }
}

/* `l`, just put in cd->warm, starts warming: the EDS fetch timer runs while it waits for its
 * assignment. */
static void warm_arm(struct cds *cd, struct cds_cluster *l)
{
    l->warming = true;
    uint64_t ms = l->cfg->eds_initial_fetch_timeout_ms;
    bool eds = l->cfg->type == CLUSTER_EDS && l->cfg->eds_ads && !l->eds_loaded;
    LOG_I("cds: cluster '%.*s' warming (waiting for %s)", STR_FMT(l->cfg->name),
          eds              ? "its ClusterLoadAssignment"
          : dns_pending(l) ? "its names' first lookups"
                           : "its first health-check round");
    if (eds && ms > 0) {
        ev_timer_set(&l->fetch_tmr, (double)ms / 1000.0, 0.);
        ev_timer_start(cd->loop, &l->fetch_tmr);
    }
}

int cds_update(struct cds *cd, const char *version_info,
               struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
               struct err *err, bool *changed)
{
    const char *version = version_info != NULL ? version_info : "";
    struct cand *cands = xcalloc(n ? n : 1, sizeof(*cands));
    struct err all;
    err_clear(&all);
    size_t n_bad = 0;
    for (size_t i = 0; i < n; i++) {
        struct err e;
        err_clear(&e);
        if (check_one(cd, resources[i], i, cands, &e) != 0) {
            /* skipped, as Envoy's CdsApiImpl skips a cluster it cannot add or update: what
             * check_one set for it goes (its container, if any, is already released) */
            char *key = cands[i].key;
            cands[i] = (struct cand){.key = key, .bad = true};
            err_join(&all, &e);
            n_bad++;
        }
    }
    n_bad += check_roles(cd, cands, n, &all);
    if (changed != NULL) {
        *changed = false;
    }
    /* The new set, in the response's order: each valid resource's cluster (kept or new), and for
     * a rejected one the cluster of its name in force, if any (it stays as it was). Clusters the
     * response leaves out are removed. keep[i]: the cluster in force resource i keeps. */
    struct cds_cluster **keep = xcalloc(n ? n : 1, sizeof(*keep));
    uint32_t added = 0, modified = 0, removed = 0;
    for (size_t i = 0; i < n; i++) {
        struct cand *c = &cands[i];
        if (c->bad) {
            struct cds_cluster *k = c->key != NULL ? find_latest(cd, c->key) : NULL;
            for (size_t j = 0; j < i && k != NULL; j++) {
                /* a valid earlier one of that name (this one is its duplicate) */
                k = !cands[j].bad && cands[j].key != NULL && strcmp(cands[j].key, c->key) == 0
                        ? NULL
                        : k;
                k = keep[j] == k ? NULL : k;
            }
            keep[i] = k;
        } else if (c->same) {
            keep[i] = c->old;
        } else {
            *(c->old != NULL ? &modified : &added) += 1;
        }
    }
    struct cds_cluster **lv = NULL;
    uint32_t n_lv = latest(cd, &lv);
    for (uint32_t i = 0; i < n_lv; i++) {
        bool kept = false;
        for (size_t k = 0; k < n && !kept; k++) {
            kept = keep[k] == lv[i] || (!cands[k].bad && cands[k].old == lv[i]);
        }
        removed += kept ? 0 : 1;
    }
    free(lv);
    if (n_bad == 0 || added + modified + removed > 0) {
        /* Envoy's system_version_info: the version of the last update that applied anything */
        free(cd->version);
        cd->version = xstrdup(version);
    }
    if (added + modified + removed == 0 && (cd->cur != NULL || n_bad > 0)) {
        for (size_t i = 0; i < n; i++) {
            free(cands[i].key);
        }
        free(cands);
        free(keep);
        return n_bad > 0 ? err_set(err, where, "%s", all.msg) : 0;
    }
    /* The latest version of each name in the response's order: kept (active or warming) or
     * new. One that is initialized goes into the new routing set; one that is warming goes into
     * the new warming list, and the active version of its name (if any) stays in the set. */
    struct cds_set *s = set_new(cd, (uint32_t)n);
    s->n = 0;
    struct cds_cluster **nw = xcalloc(n ? n : 1, sizeof(*nw));
    uint32_t n_nw = 0;
    for (size_t i = 0; i < n; i++) {
        struct cand *c = &cands[i];
        struct cds_cluster *l = keep[i];
        bool fresh = false;
        if (l != NULL) {
            live_ref(l);
        } else if (!c->bad) {
            l = live_new(cd, c->c, c->pb, c->hash, version, c->old);
            if (c->cla != NULL) {
                l->eds_loaded = true;
                l->cla = c->cla;
                l->cla_hash = c->old->cla_hash;
            }
            fresh = true;
        } else {
            continue;
        }
        if (l->warming || (fresh && !warm_ready(l))) {
            nw[n_nw++] = l;
            struct cds_cluster *a = find(cd->cur, l->cfg->name.p);
            if (a != NULL) {
                live_ref(a);
                s->v[s->n++] = a;
            }
        } else {
            s->v[s->n++] = l;
        }
    }
    free(keep);
    set_map(cd, s);
    /* What leaves the set is retired before any table compiled against the new set is
     * published (reload.c does that next): a worker that lets go of its last table naming a
     * cluster then sees it retired. */
    for (uint32_t i = 0; cd->cur != NULL && i < cd->cur->n; i++) {
        struct cds_cluster *l = cd->cur->v[i];
        if (find(s, l->cfg->name.p) != l) {
            LOG_I("cds: cluster '%.*s' %s", STR_FMT(l->cfg->name),
                  find(s, l->cfg->name.p) != NULL ? "modified" : "removed");
            retire(cd, l);
        }
    }
    for (uint32_t i = 0; i < s->n; i++) {
        if (find(cd->cur, s->v[i]->cfg->name.p) == NULL) {
            LOG_I("cds: cluster '%.*s' added", STR_FMT(s->v[i]->cfg->name));
        }
    }
    /* Warming versions the response drops or replaces go (no worker ever saw them); the old
     * list's references go with it (the new list took its own). */
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        struct cds_cluster *w = cd->warm[i];
        bool stays = false;
        for (uint32_t k = 0; k < n_nw && !stays; k++) {
            stays = nw[k] == w;
        }
        if (!stays) {
            LOG_I("cds: warming cluster '%.*s' %s", STR_FMT(w->cfg->name),
                  find(s, w->cfg->name.p) != NULL || find_warm_in(nw, n_nw, w->cfg->name.p)
                      ? "replaced"
                      : "removed");
            retire(cd, w);
        }
        live_unref(w);
    }
    free(cd->warm);
    cd->warm = nw;
    cd->n_warm = n_nw;
    for (uint32_t i = 0; i < n_nw; i++) {
        if (!nw[i]->warming) {
            warm_arm(cd, nw[i]);
        }
    }
    struct cds_set *old = cd->cur;
    cd->cur = s;
    set_unref(old);
    set_views(cd);
    stat_add(&cd->stats.cluster_added, added);
    stat_add(&cd->stats.cluster_modified, modified);
    stat_add(&cd->stats.cluster_removed, removed);
    set_gauges(cd);
    for (size_t i = 0; i < n; i++) {
        free(cands[i].key);
    }
    free(cands);
    if (changed != NULL) {
        *changed = true;
    }
    return n_bad > 0 ? err_set(err, where, "%s", all.msg) : 1;
}

const struct rds_clusters *cds_rds_clusters(const struct cds *cd)
{
    return cd->cur != NULL ? &cd->cur->rc : NULL;
}

struct cm_stats *cds_stats(struct cds *cd)
{
    return &cd->stats;
}

void cds_views(const struct cds *cd, const struct cluster_view **v, uint32_t *n)
{
    *v = cd->views;
    *n = cd->n_views;
}

/* One cluster of /config_dump's ClustersConfigDump (active or warming). */
static json_t *dump_cluster(const struct cds_cluster *l)
{
    json_t *e = json_object();
    json_object_set_new(e, "version_info", json_string(l->version));
    json_object_set_new(e, "cluster", config_dump_resource(l->pb));
    char ts[32];
    access_log_time(ts, l->updated);
    json_object_set_new(e, "last_updated", json_string(ts));
    return e;
}

void cds_dump(const struct cds *cd, json_t *configs)
{
    if (configs == NULL || !cd->boot->has_cds) {
        return;
    }
    json_t *dump = config_dump_section(configs, "ClustersConfigDump");
    json_object_set_new(dump, "version_info", json_string(cd->version ? cd->version : ""));
    json_t *list = json_array();
    for (uint32_t k = 0; cd->cur != NULL && k < cd->cur->n; k++) {
        json_array_append_new(list, dump_cluster(cd->cur->v[k]));
    }
    json_object_set_new(dump, "dynamic_active_clusters", list);
    if (cd->n_warm > 0) { /* as Envoy's proto JSON: an empty list is left out */
        json_t *wl = json_array();
        for (uint32_t k = 0; k < cd->n_warm; k++) {
            json_array_append_new(wl, dump_cluster(cd->warm[k]));
        }
        json_object_set_new(dump, "dynamic_warming_clusters", wl);
    }
}

/* ---- EDS ---- */

static ProtobufCMessage *msg_copy(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *bytes = xmalloc(len ? len : 1);
    protobuf_c_message_pack(m, bytes);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, bytes);
    free(bytes);
    return c;
}

static bool same_addr(const struct endpoint_cfg *a, const struct endpoint_cfg *b)
{
    return a->addr.len == b->addr.len && memcmp(&a->addr.ss, &b->addr.ss, a->addr.len) == 0;
}

/* The state of `old`'s endpoints that `l` keeps (same address): active health and outlier
 * state; and the cluster-wide health-check and outlier counters. */
static void adopt(struct cds_cluster *l, const struct cds_cluster *old)
{
#define COPY_COUNTER(n) stat_add(&to->n, stat_get(&from->n));
#define COPY_GAUGE(n)
#define COPY(kind, n) COPY_##kind(n)
    {
        struct health_check_stats *to = &l->shared->hc_stats;
        const struct health_check_stats *from = &old->shared->hc_stats;
        HEALTH_CHECK_STATS(COPY)
    }
    {
        struct outlier_stats *to = &l->shared->od_stats;
        const struct outlier_stats *from = &old->shared->od_stats;
        OUTLIER_STATS(COPY)
    }
#undef COPY
#undef COPY_GAUGE
#undef COPY_COUNTER
    for (uint32_t i = 0; i < l->cfg->n_endpoints; i++) {
        for (uint32_t j = 0; j < old->cfg->n_endpoints; j++) {
            if (!same_addr(&l->cfg->endpoints[i], &old->cfg->endpoints[j])) {
                continue;
            }
            if (l->hc != NULL && old->hc != NULL) {
                health_check_adopt(l->hc, i, old->hc, j);
            }
            if (l->od != NULL && old->od != NULL) {
                outlier_adopt(l->od, i, old->od, j);
            }
            break;
        }
    }
}

/* Whether the two versions' endpoint addresses differ (as sets). */
static bool membership_changed(const struct cluster_cfg *a, const struct cluster_cfg *b)
{
    if (a->n_endpoints != b->n_endpoints) {
        return true;
    }
    for (uint32_t i = 0; i < a->n_endpoints; i++) {
        bool found = false;
        for (uint32_t j = 0; j < b->n_endpoints && !found; j++) {
            found = same_addr(&a->endpoints[i], &b->endpoints[j]);
        }
        if (!found) {
            return true;
        }
    }
    return false;
}

/* The current set with `old` replaced by `l` (which takes the set's reference). */
static void replace(struct cds *cd, struct cds_cluster *old, struct cds_cluster *l)
{
    struct cds_set *s = set_new(cd, cd->cur->n);
    for (uint32_t i = 0; i < s->n; i++) {
        if (cd->cur->v[i] == old) {
            s->v[i] = l;
        } else {
            live_ref(cd->cur->v[i]);
            s->v[i] = cd->cur->v[i];
        }
    }
    set_map(cd, s);
    retire(cd, old);
    struct cds_set *prev = cd->cur;
    cd->cur = s;
    set_unref(prev);
    set_views(cd);
}

/* Warming version `l` is initialized: it takes the place of the active version of its name in
 * the routing set (retired), or joins the set. The warming list's reference becomes the set's. */
static void promote(struct cds *cd, struct cds_cluster *l)
{
    uint32_t i = 0;
    while (i < cd->n_warm && cd->warm[i] != l) {
        i++;
    }
    memmove(&cd->warm[i], &cd->warm[i + 1], (cd->n_warm - i - 1) * sizeof(*cd->warm));
    cd->n_warm--;
    ev_timer_stop(cd->loop, &l->fetch_tmr);
    l->warming = false;
    struct cds_cluster *old = find(cd->cur, l->cfg->name.p);
    if (old != NULL) {
        replace(cd, old, l);
    } else {
        struct cds_set *s = set_new(cd, cd->cur->n + 1);
        for (uint32_t k = 0; k < cd->cur->n; k++) {
            live_ref(cd->cur->v[k]);
            s->v[k] = cd->cur->v[k];
        }
        s->v[cd->cur->n] = l;
        set_map(cd, s);
        struct cds_set *prev = cd->cur;
        cd->cur = s;
        set_unref(prev);
        set_views(cd);
    }
    set_gauges(cd);
    LOG_I("cds: cluster '%.*s' warmed up: active with %u endpoint(s)", STR_FMT(l->cfg->name),
          l->cfg->n_endpoints);
}

/* Promotes `l` when it is warming and initialized; returns whether it did. */
static bool warm_check(struct cds *cd, struct cds_cluster *l)
{
    if (!l->warming || !warm_ready(l)) {
        return false;
    }
    promote(cd, l);
    return true;
}

static void hc_ready(void *ud)
{
    struct cds_cluster *l = ud;
    l->hc_done = true;
    struct cds *cd = l->owner;
    if (l->warm_pending) {
        /* a bootstrap STRICT_DNS cluster's first version: startup waits for it, as for the
         * bootstrap's clusters (it is never in the warming list) */
        l->warm_pending = false;
        if (cd->boot_warm != NULL) {
            cd->boot_warm(cd->boot_warm_ud);
        }
        return;
    }
    if (warm_check(cd, l) && cd->ops.activated != NULL) {
        cd->ops.activated(cd->ops.ud);
    }
}

static void fetch_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct cds_cluster *l = t->data;
    struct cds *cd = l->owner;
    char *name = xstrdup(l->cfg->name.p);
    LOG_W("cds: cluster '%s': no ClusterLoadAssignment within its initial_fetch_timeout", name);
    if (cd->ops.fetch_timeout != NULL) {
        cd->ops.fetch_timeout(cd->ops.ud, name); /* may apply one (a new warming version) */
    }
    if (find_warm(cd, name) == l) { /* nothing came meanwhile: it goes on without endpoints */
        l->eds_expired = true;
        if (warm_check(cd, l) && cd->ops.activated != NULL) {
            cd->ops.activated(cd->ops.ud);
        }
    }
    free(name);
}

void cds_set_warm_ops(struct cds *cd, const struct cds_warm_ops *ops)
{
    cd->ops = *ops;
}

/* The new version of `old` compiled into `c` (its resource `pb`, owned by c) takes old's place
 * in the set (or, when old is warming, in the warming list: the caller then runs warm_check),
 * keeping old's stats and the health-check and outlier state of the endpoints that
 * stay (an EDS update, a STRICT_DNS answer); membership_change counts when the addresses
 * changed or `first` (the first endpoints a cluster gets). */
static struct cds_cluster *new_version(struct cds *cd, struct cds_cluster *old, struct config *c,
                                       const ProtobufCMessage *pb, bool first)
{
    struct cds_cluster *l = live_new(cd, c, pb, old->hash, old->version, old);
    adopt(l, old);
    if (first || membership_changed(l->cfg, old->cfg)) {
        STAT_INC(old->st->eds.membership_change);
    }
    if (old->warming) {
        for (uint32_t i = 0; i < cd->n_warm; i++) {
            if (cd->warm[i] == old) {
                cd->warm[i] = l; /* takes l's reference */
            }
        }
        l->warming = true; /* no fetch timer: it has its endpoints */
        l->eds_expired = old->eds_expired;
        retire(cd, old);
        set_views(cd); /* before old's memory can go */
        live_unref(old);
        return l;
    }
    replace(cd, old, l);
    return l;
}

static struct cds_cluster *find_eds(const struct cds *cd, const char *cluster)
{
    struct cds_cluster *l = find_latest(cd, cluster);
    return l != NULL && l->cfg->type == CLUSTER_EDS ? l : NULL;
}

struct eds_stats *cds_eds_stats(struct cds *cd, const char *cluster)
{
    struct cds_cluster *l = find_eds(cd, cluster);
    return l != NULL ? &l->st->eds : NULL;
}

int cds_update_endpoints(struct cds *cd, const char *cluster, const char *version_info,
                         struct Google__Protobuf__Any *const *resources, size_t n,
                         const char *where, struct err *err)
{
    struct cds_cluster *old = find_eds(cd, cluster);
    if (old == NULL) {
        return err_set(err, where, "no EDS cluster '%s'", cluster);
    }
    struct eds_stats *st = &old->st->eds;
    const char *version = version_info != NULL ? version_info : "";
    const char *svc = old->cfg->eds_service_name.p;
    if (n == 0) {
        /* Envoy's update_empty: the endpoints in force stay */
        STAT_INC(st->update_success);
        STAT_INC(st->update_empty);
        return 0;
    }
    int rv = 0;
    ProtobufCMessage *m = NULL;
    struct err e;
    err_clear(&e);
    if (n > 1) {
        rv = err_set(&e, "resources", "unexpected EDS resource length: %zu (expected 1)", n);
    } else if (pbjson_resource_unpack(
                   resources[0], &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
                   pbtypes_find, "resources[0]", &m, &e) != 0) {
        rv = -EINVAL;
    } else {
        const char *got = ((const PbCla *)m)->cluster_name;
        got = got != NULL ? got : "";
        if (strcmp(got, svc) != 0) {
            rv = err_set(&e, "resources[0].cluster_name",
                         "unexpected EDS cluster (expecting '%s'): '%s'", svc, got);
        }
    }
    if (rv != 0) {
        if (m != NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        STAT_INC(st->update_rejected);
        return err_set(err, where, "%s", e.msg);
    }
    uint64_t h = hash_xxh64(resources[0]->value.data, resources[0]->value.len, 0);
    if (old->eds_loaded && h == old->cla_hash) {
        protobuf_c_message_free_unpacked(m, NULL);
        STAT_INC(st->update_success);
        STAT_INC(st->update_no_rebuild);
        atomic_store_explicit(&st->version, hash_xxh64(version, strlen(version), 0),
                              memory_order_relaxed);
        return 0;
    }
    /* The cluster as CDS gave it, with the assignment in its load_assignment: the same
     * builder compiles the endpoints (field paths under resources[0]). */
    PbCluster *pc = (PbCluster *)msg_copy(old->pb);
    ProtobufCMessage *orig = msg_copy(old->pb);
    pc->load_assignment = (PbCla *)m;
    struct config *c = container_new(cd);
    config_on_free(c, free_pb, pc);
    config_on_free(c, free_pb, orig);
    if (build_cluster(c, "@", pc, true, &e) != 0) {
        config_unref(c);
        STAT_INC(st->update_rejected);
        /* "@.load_assignment.endpoints[0]..." is the resource's "resources[0].endpoints[0]" */
        const char *msg = e.msg;
        const char *tail = strncmp(msg, "@.load_assignment", 17) == 0 ? msg + 17
                           : msg[0] == '@'                            ? msg + 1
                                                                      : msg;
        return err_set(err, where, "resources[0]%s", tail);
    }
    struct cds_cluster *l = new_version(cd, old, c, orig, !old->eds_loaded);
    l->eds_loaded = true;
    l->cla_hash = h;
    l->cla = m;
    STAT_INC(st->update_success);
    atomic_store_explicit(&st->version, hash_xxh64(version, strlen(version), 0),
                          memory_order_relaxed);
    warm_check(cd, l);
    LOG_I("eds '%s': version '%s' is %s with %u endpoint(s)", cluster, version,
          l->warming ? "warming" : "live", l->cfg->n_endpoints);
    return 1;
}

uint32_t cds_eds_clusters(const struct cds *cd, struct cds_eds *out, uint32_t cap)
{
    uint32_t k = 0;
    struct cds_cluster **lv = NULL;
    uint32_t n_lv = latest(cd, &lv);
    for (uint32_t i = 0; i < n_lv; i++) {
        const struct cds_cluster *l = lv[i];
        if (l->cfg->type != CLUSTER_EDS) {
            continue;
        }
        if (k < cap) {
            out[k] = (struct cds_eds){.cluster = l->cfg->name.p,
                                      .path = l->cfg->eds_path.p,
                                      .watched_dir = l->cfg->eds_watched_dir.p,
                                      .loaded = l->eds_loaded,
                                      .ads = l->cfg->eds_ads,
                                      .service_name = l->cfg->eds_service_name.p,
                                      .fetch_timeout_ms = l->cfg->eds_initial_fetch_timeout_ms};
        }
        k++;
    }
    free(lv);
    return k;
}

/* ---- STRICT_DNS ---- */

void cds_set_peer_conflict(struct cds *cd, const char *(*fn)(void *ud, const struct config *c),
                           void *ud)
{
    cd->peer_conflict = fn;
    cd->peer_ud = ud;
}

void cds_set_dns(struct cds *cd, const struct config_dns *dns)
{
    cd->dns = dns;
}

static struct cds_boot_dns *find_boot(const struct cds *cd, const char *cluster)
{
    for (uint32_t i = 0; i < cd->n_bdns; i++) {
        if (strcmp(cd->bdns[i].boot->name.p, cluster) == 0) {
            return &cd->bdns[i];
        }
    }
    return NULL;
}

/* A current STRICT_DNS or LOGICAL_DNS cluster: a bootstrap STRICT_DNS one's current version,
 * or one of the set. */
static struct cds_cluster *find_dns(const struct cds *cd, const char *cluster)
{
    struct cds_boot_dns *b = find_boot(cd, cluster);
    if (b != NULL) {
        return b->cur;
    }
    struct cds_cluster *l = find_latest(cd, cluster);
    return l != NULL && is_dns(l->cfg) ? l : NULL;
}

const struct cluster_cfg *cds_dns_cluster(const struct cds *cd, const char *cluster)
{
    struct cds_cluster *l = find_dns(cd, cluster);
    return l != NULL ? l->cfg : NULL;
}

struct eds_stats *cds_dns_stats(struct cds *cd, const char *cluster)
{
    struct cds_cluster *l = find_dns(cd, cluster);
    return l != NULL ? &l->st->eds : NULL;
}

uint32_t cds_dns_clusters(const struct cds *cd, const struct cluster_cfg **out, uint32_t cap)
{
    uint32_t k = 0;
    struct cds_cluster **lv = NULL;
    uint32_t n_lv = latest(cd, &lv);
    for (uint32_t i = 0; i < n_lv; i++) {
        const struct cds_cluster *l = lv[i];
        if (is_dns(l->cfg)) {
            if (k < cap) {
                out[k] = l->cfg;
            }
            k++;
        }
    }
    free(lv);
    return k;
}

static void boot_post(struct cds *cd, struct cds_boot_dns *b, struct cds_cluster *l);

int cds_update_dns(struct cds *cd, const char *cluster)
{
    struct cds_cluster *old = find_dns(cd, cluster);
    if (old == NULL || old->cfg->type != CLUSTER_STRICT_DNS) {
        return 0; /* gone meanwhile (LOGICAL_DNS: its address changes in place) */
    }
    struct cds_boot_dns *boot = find_boot(cd, cluster);
    /* the same resource, compiled again: its names' addresses come from cd->dns */
    ProtobufCMessage *pb = msg_copy(old->pb);
    struct config *c = container_new(cd);
    config_on_free(c, free_pb, pb);
    struct err e;
    err_clear(&e);
    if (build_cluster(c, boot != NULL ? boot->path : "@", (const PbCluster *)pb, false, &e) != 0) {
        /* it compiled before and only its addresses differ: cannot happen */
        LOG_E("cluster '%s': cannot rebuild with its new addresses: %s", cluster, e.msg);
        config_unref(c);
        return -EINVAL;
    }
    if (boot != NULL && cd->ops.seed != NULL) {
        cd->ops.seed(cd->ops.ud, c); /* its TLS's secrets over ADS, before boot_post */
    }
    if (!membership_changed(&c->clusters[0], old->cfg)) {
        config_unref(c); /* the same addresses (from names that now overlap): nothing to do */
        return 0;
    }
    if (boot != NULL) {
        /* outside the set: the workers take it from their mailboxes (cds_boot_dns_acquire);
         * the route tables, which point at the bootstrap's cfg, stay as they are */
        struct cds_cluster *l = live_new(cd, c, pb, old->hash, old->version, old);
        adopt(l, old);
        STAT_INC(old->st->eds.membership_change);
        l->warm_pending = old->warm_pending; /* startup still waits for a first round */
        old->warm_pending = false;
        boot->cur = l;
        boot_post(cd, boot, l);
        retire(cd, old);
        live_unref(old);
        set_views(cd);
        LOG_I("cluster '%s': %u host(s) after DNS resolution", cluster, l->cfg->n_endpoints);
        return 0; /* no table to compile again */
    }
    struct cds_cluster *l = new_version(cd, old, c, pb, false);
    warm_check(cd, l);
    LOG_I("cluster '%s': %u host(s) after DNS resolution", cluster, l->cfg->n_endpoints);
    return 1;
}

int cds_dns_resolved(struct cds *cd, const char *cluster)
{
    struct cds_cluster *l = find_warm(cd, cluster);
    return l != NULL && warm_check(cd, l) ? 1 : 0;
}

const struct config *cds_cluster_config(const struct cds *cd, uint32_t i)
{
    uint32_t n_cur = cd->cur != NULL ? cd->cur->n : 0;
    if (i < n_cur) {
        return cd->cur->v[i]->c;
    }
    if (i - n_cur < cd->n_warm) {
        return cd->warm[i - n_cur]->c;
    }
    /* then the bootstrap STRICT_DNS clusters' current versions (their SDS subscriptions) */
    i -= n_cur + cd->n_warm;
    return i < cd->n_bdns ? cd->bdns[i].cur->c : NULL;
}

/* ---- workers ---- */

struct teardown {
    struct deferred d;
    struct cds_cluster *l;
    uint32_t w;
};

static void teardown_cb(struct deferred *d)
{
    struct teardown *t = (struct teardown *)d;
    if (t->l->cfg->type == CLUSTER_ORIGINAL_DST) {
        list_remove(&t->l->rt[t->w].od_link); /* no more sweeps */
    }
    cluster_rt_deinit(&t->l->rt[t->w]);
    live_unref(t->l);
    free(t);
}

static void pin_one(struct worker *w, struct cds_cluster *l)
{
    if (l->wusers[w->id]++ == 0 && !l->winit[w->id]) {
        cluster_rt_init(&l->rt[w->id], l->cfg, &l->blocks[w->id]->cluster[0],
                        l->blocks[w->id]->host[0], l->shared);
        if (l->cfg->type == CLUSTER_ORIGINAL_DST) {
            list_insert_head(&w->od_dyn, &l->rt[w->id].od_link); /* the tick sweeps it */
        }
        l->winit[w->id] = true;
    }
}

static void unpin_one(struct worker *w, struct cds_cluster *l)
{
    if (--l->wusers[w->id] == 0 && l->winit[w->id] &&
        atomic_load_explicit(&l->retired, memory_order_acquire)) {
        /* no stream of this worker can reach it any more: its pool and LB state go, after
         * the current callbacks (connections being released) have unwound */
        l->winit[w->id] = false;
        live_ref(l);
        struct teardown *t = xmalloc(sizeof(*t));
        t->l = l;
        t->w = w->id;
        worker_defer(w, &t->d, teardown_cb);
    }
}

void cds_worker_pin(struct worker *w, const void *dyn)
{
    const struct cds_set *s = dyn;
    for (uint32_t i = 0; s != NULL && i < s->n; i++) {
        pin_one(w, s->v[i]);
    }
}

void cds_worker_unpin(struct worker *w, const void *dyn)
{
    const struct cds_set *s = dyn;
    for (uint32_t i = 0; s != NULL && i < s->n; i++) {
        unpin_one(w, s->v[i]);
    }
}

/* ---- bootstrap STRICT_DNS clusters ---- */

/* Main: every worker's mailbox gets `l` (a reference each); a version not taken yet goes. */
static void boot_post(struct cds *cd, struct cds_boot_dns *b, struct cds_cluster *l)
{
    for (uint32_t w = 0; w < cd->n_workers; w++) {
        live_ref(l);
        struct cds_cluster *old =
            atomic_exchange_explicit(&b->workers[w].inbox, l, memory_order_acq_rel);
        if (old != NULL) {
            live_unref(old);
        }
    }
}

void cds_boot_dns_release(struct worker *w, struct cds_dns_pin *pin)
{
    if (pin != NULL && --pin->users == 0) {
        unpin_one(w, pin->l);
        live_unref(pin->l);
        free(pin);
    }
}

const struct cluster_cfg *cds_boot_dns_acquire(struct worker *w, const struct cluster_cfg *cc,
                                               struct cds_dns_pin **pin)
{
    struct boot_dns_worker *bw = &cc->boot_dns->workers[w->id];
    if (atomic_load_explicit(&bw->inbox, memory_order_relaxed) != NULL) {
        struct cds_cluster *l = atomic_exchange_explicit(&bw->inbox, NULL, memory_order_acquire);
        if (l != NULL) {
            struct cds_dns_pin *p = xmalloc(sizeof(*p));
            p->l = l; /* the reference main took for us */
            p->users = 1;
            pin_one(w, l);
            struct cds_dns_pin *old = bw->cur;
            bw->cur = p;
            cds_boot_dns_release(w, old);
        }
    }
    *pin = bw->cur;
    if (bw->cur == NULL) {
        return cc; /* cannot happen: main posts the first version before the workers start */
    }
    bw->cur->users++;
    return bw->cur->l->cfg;
}

bool cds_boot_dns_pinned(const struct cds_dns_pin *pin, const struct cluster_cfg *cc)
{
    return pin != NULL && cc->boot_dns != NULL && strcmp(pin->l->cfg->name.p, cc->name.p) == 0;
}

const struct cluster_cfg *cds_boot_dns_cfg(const struct cds_dns_pin *pin)
{
    return pin->l->cfg;
}

void cds_worker_boot_dns_free(struct worker *w, const struct config *boot)
{
    for (uint32_t i = 0; i < boot->n_clusters; i++) {
        struct cds_boot_dns *b = boot->clusters[i].boot_dns;
        if (b == NULL) {
            continue;
        }
        cds_boot_dns_release(w, b->workers[w->id].cur);
        b->workers[w->id].cur = NULL;
    }
}

void cds_set_boot_warm(struct cds *cd, void (*fn)(void *ud), void *ud)
{
    cd->boot_warm = fn;
    cd->boot_warm_ud = ud;
}

uint32_t cds_boot_dns_start(struct cds *cd)
{
    const struct config *boot = cd->boot;
    const Envoy__Config__Bootstrap__V3__Bootstrap *bp = boot->bootstrap_pb;
    uint32_t n = 0;
    for (uint32_t i = 0; i < boot->n_clusters; i++) {
        n += boot->clusters[i].type == CLUSTER_STRICT_DNS ? 1u : 0u;
    }
    cd->bdns = xcalloc(n ? n : 1, sizeof(*cd->bdns));
    uint32_t warming = 0;
    for (uint32_t i = 0; i < boot->n_clusters && bp != NULL && bp->static_resources != NULL; i++) {
        struct cluster_cfg *cc = (struct cluster_cfg *)&boot->clusters[i];
        if (cc->type != CLUSTER_STRICT_DNS || i >= bp->static_resources->n_clusters) {
            continue;
        }
        struct cds_boot_dns *b = &cd->bdns[cd->n_bdns];
        b->owner = cd;
        b->boot = cc;
        b->pb = &bp->static_resources->clusters[i]->base;
        snprintf(b->path, sizeof(b->path), "static_resources.clusters[%u]", i);
        /* its first version: the bootstrap's addresses (reload.c seeded the answers) */
        ProtobufCMessage *pb = msg_copy(b->pb);
        struct config *c = container_new(cd);
        config_on_free(c, free_pb, pb);
        struct err e;
        err_clear(&e);
        if (build_cluster(c, b->path, (const PbCluster *)pb, false, &e) != 0) {
            LOG_W("cluster '%.*s': resolved once, at startup, not again: %s", STR_FMT(cc->name),
                  e.msg);
            config_unref(c);
            continue;
        }
        if (cd->ops.seed != NULL) {
            cd->ops.seed(cd->ops.ud, c); /* the secrets over ADS accepted by now, if any */
        }
        b->workers = xcalloc(cd->n_workers, sizeof(*b->workers));
        b->cur = live_new(cd, c, pb, 0, "", NULL);
        b->cur->warm_pending = b->cur->hc != NULL;
        warming += b->cur->warm_pending ? 1u : 0u;
        cc->boot_dns = b; /* before any worker runs */
        boot_post(cd, b, b->cur);
        cd->n_bdns++;
    }
    set_views(cd);
    return warming;
}

/* ---- setup ---- */

static void init_tmr_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct cds *cd = t->data;
    if (cd->init_fn == NULL) {
        return;
    }
    uint32_t n = n_hc_warming(cd);
    if (n > 0 && ev_now(loop) < cd->init_deadline) {
        /* another cluster started its first round since none was left: wait for it too */
        ev_timer_set(t, cd->init_deadline - ev_now(loop), 0.);
        ev_timer_start(loop, t);
        return;
    }
    if (n > 0) {
        LOG_W("cds: startup goes on with %u cluster(s) still waiting for their first health "
              "checks",
              n);
    }
    void (*fn)(void *) = cd->init_fn;
    cd->init_fn = NULL;
    fn(cd->init_ud);
}

bool cds_hold_init(struct cds *cd, uint64_t bound_ms, void (*fn)(void *ud), void *ud)
{
    uint32_t n = n_hc_warming(cd);
    if (n == 0) {
        return false;
    }
    LOG_I("cds: startup waits for %u warming cluster(s)", n);
    cd->init_fn = fn;
    cd->init_ud = ud;
    cd->init_deadline = ev_now(cd->loop) + (double)bound_ms / 1000.0;
    ev_timer_set(&cd->init_tmr, (double)bound_ms / 1000.0, 0.);
    ev_timer_start(cd->loop, &cd->init_tmr);
    return true;
}

struct cds *cds_new(struct ev_loop *loop, const struct config *boot, uint32_t n_workers)
{
    struct cds *cd = xcalloc(1, sizeof(*cd));
    cd->loop = loop;
    cd->boot = boot;
    cd->n_workers = n_workers;
    cd->seed = (uint64_t)(ev_time() * 1e6);
    ev_async_init(&cd->reap, reap_cb);
    cd->reap.data = cd;
    ev_timer_init(&cd->init_tmr, init_tmr_cb, 0., 0.);
    cd->init_tmr.data = cd;
    ev_async_start(loop, &cd->reap);
    ev_unref(loop); /* it does not keep main's loop running */
    cd->stats.has_cds = boot->has_cds;
    stat_add(&cd->stats.cluster_added, boot->n_clusters);
    gauge_set(&cd->stats.active_clusters, boot->n_clusters);
    cd->views = xcalloc(1, sizeof(*cd->views));
    return cd;
}

void cds_retire_all(struct cds *cd)
{
    for (uint32_t i = 0; i < cd->n_bdns; i++) {
        if (!atomic_load_explicit(&cd->bdns[i].cur->retired, memory_order_relaxed)) {
            retire(cd, cd->bdns[i].cur);
        }
    }
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        if (!atomic_load_explicit(&cd->warm[i]->retired, memory_order_relaxed)) {
            retire(cd, cd->warm[i]);
        }
    }
    for (uint32_t i = 0; cd->cur != NULL && i < cd->cur->n; i++) {
        if (!atomic_load_explicit(&cd->cur->v[i]->retired, memory_order_relaxed)) {
            retire(cd, cd->cur->v[i]);
        }
    }
}

void cds_free(struct cds *cd)
{
    if (cd == NULL) {
        return;
    }
    ev_timer_stop(cd->loop, &cd->init_tmr);
    cd->init_fn = NULL;
    cds_retire_all(cd);
    for (uint32_t i = 0; i < cd->n_warm; i++) {
        live_unref(cd->warm[i]);
    }
    free(cd->warm);
    cd->warm = NULL;
    cd->n_warm = 0;
    set_unref(cd->cur);
    cd->cur = NULL;
    for (uint32_t i = 0; i < cd->n_bdns; i++) {
        struct cds_boot_dns *b = &cd->bdns[i];
        for (uint32_t w = 0; w < cd->n_workers; w++) {
            struct cds_cluster *l = atomic_exchange(&b->workers[w].inbox, NULL); /* never taken */
            if (l != NULL) {
                live_unref(l);
            }
        }
        live_unref(b->cur);
        free(b->workers);
        ((struct cluster_cfg *)b->boot)->boot_dns = NULL;
    }
    free(cd->bdns);
    cd->bdns = NULL;
    cd->n_bdns = 0;
    reap(cd);
    if (cd->retired != NULL) {
        LOG_W("cds: clusters still referenced at exit");
    }
    ev_ref(cd->loop);
    ev_async_stop(cd->loop, &cd->reap);
    free(cd->views);
    free(cd->version);
    free(cd);
}
