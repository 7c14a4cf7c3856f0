/* dns_refresh: CDS STRICT_DNS clusters' names resolved on a timer, off the loop (see
 * dns_refresh.h). Owns the resolver thread, one target (name, timer, last good answer,
 * back-off) per name of each current STRICT_DNS cluster; the clusters themselves are cds.c's. */
#include "proxy/dns_refresh.h"

#include <ev.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/resolver.h"
#include "proxy/stats/stats.h"
#include "proxy/xds/ads_state.h"

struct dcluster;

/* One name of one cluster. */
struct target {
    struct dcluster *c;
    char *host;                 /* owned */
    ev_timer timer;             /* the next lookup */
    struct resolver_query *q;   /* the lookup on its way, or NULL */
    bool answered;              /* `last` holds a good answer */
    bool first_done;            /* a first lookup came back, good or not */
    struct ads_backoff backoff; /* dns_failure_refresh_rate */
    struct resolver_answer last;
};

struct dcluster {
    struct dcluster *next; /* in dns_refresh.clusters, which owns it */
    struct dns_refresh *d; /* borrowed: the refresher */
    char *name;            /* owned */
    bool logical;          /* LOGICAL_DNS: only an answer's first address counts */
    enum resolver_family fam;
    uint64_t refresh_ms;
    uint64_t fail_base_ms; /* 0: failures refresh at refresh_ms */
    uint64_t fail_max_ms;
    struct target **t; /* owned; [n] */
    uint32_t n;
};

struct dns_refresh {
    struct ev_loop *loop;
    struct dns_refresh_ops ops;
    struct resolver *res;      /* owned */
    struct config_dns dns;     /* the builder's view (ud: this) */
    struct dcluster *clusters; /* owned list */
    uint64_t rng;
    bool holding; /* dns_refresh_hold_init: init_done not called yet */
    ev_timer init_timer;
};

/* ---- pure parts ---- */

static int cmp_addr(const void *a, const void *b)
{
    return strcmp(a, b);
}

bool dns_refresh_same_addrs(const struct resolver_answer *a, const struct resolver_answer *b)
{
    if (a->n != b->n) {
        return false;
    }
    char(*x)[RESOLVER_ADDR_MAX] = xmalloc(2 * RESOLVER_ADDRS_MAX * RESOLVER_ADDR_MAX);
    char(*y)[RESOLVER_ADDR_MAX] = x + RESOLVER_ADDRS_MAX;
    memcpy(x, a->addrs, a->n * RESOLVER_ADDR_MAX);
    memcpy(y, b->addrs, b->n * RESOLVER_ADDR_MAX);
    qsort(x, a->n, RESOLVER_ADDR_MAX, cmp_addr);
    qsort(y, b->n, RESOLVER_ADDR_MAX, cmp_addr);
    bool same = true;
    for (size_t i = 0; i < a->n && same; i++) {
        same = strcmp(x[i], y[i]) == 0;
    }
    free(x);
    return same;
}

uint64_t dns_refresh_next_ms(uint64_t refresh_ms, uint64_t rnd)
{
    uint64_t jitter = refresh_ms / 10;
    uint64_t ms = refresh_ms + (jitter > 0 ? rnd % jitter : 0);
    return ms > 0 ? ms : 1;
}

/* ---- targets ---- */

static uint64_t next_rand(struct dns_refresh *d)
{
    return rand_next(&d->rng);
}

static void check_init(struct dns_refresh *d)
{
    if (!d->holding) {
        return;
    }
    for (struct dcluster *c = d->clusters; c != NULL; c = c->next) {
        for (uint32_t i = 0; i < c->n; i++) {
            if (!c->t[i]->first_done) {
                return;
            }
        }
    }
    d->holding = false;
    ev_timer_stop(d->loop, &d->init_timer);
    LOG_I("dns: STRICT_DNS clusters resolved");
    d->ops.init_done(d->ops.ud);
}

static void on_answer(void *arg, const char *host, const struct resolver_answer *a)
{
    struct target *t = arg;
    struct dcluster *c = t->c;
    struct dns_refresh *d = c->d;
    t->q = NULL;
    struct eds_stats *st = d->ops.stats(d->ops.ud, c->name);
    bool changed = false;
    bool first = !t->first_done;
    uint64_t next_ms;
    if (a->n == 0) {
        if (st != NULL) {
            STAT_INC(st->update_failure);
        }
        LOG_W("cluster '%s': cannot resolve '%s'%s%s; keeping its %zu address(es)", c->name, host,
              a->gai_err ? ": " : "", a->gai_err ? gai_strerror(a->gai_err) : "",
              t->answered ? t->last.n : 0);
        next_ms = c->fail_base_ms > 0 ? ads_backoff_next(&t->backoff, next_rand(d))
                                      : dns_refresh_next_ms(c->refresh_ms, next_rand(d));
        next_ms = next_ms > 0 ? next_ms : 1;
    } else {
        if (st != NULL) {
            STAT_INC(st->update_success);
        }
        ads_backoff_reset(&t->backoff);
        bool same = t->answered && (c->logical ? strcmp(t->last.addrs[0], a->addrs[0]) == 0
                                               : dns_refresh_same_addrs(&t->last, a));
        if (same) {
            if (st != NULL) {
                STAT_INC(st->update_no_rebuild);
            }
        } else {
            LOG_I("cluster '%s': '%s' resolves to %zu address(es)%s%s", c->name, host, a->n,
                  a->n > 0 ? ", the first " : "", a->n > 0 ? a->addrs[0] : "");
            t->last = *a;
            t->answered = true;
            changed = true;
        }
        next_ms = dns_refresh_next_ms(c->refresh_ms, next_rand(d));
    }
    t->first_done = true;
    ev_timer_set(&t->timer, (double)next_ms / 1000.0, 0);
    ev_timer_start(d->loop, &t->timer);
    if (changed) {
        d->ops.changed(d->ops.ud, c->name); /* does not sync: t stays */
    }
    if (first && d->ops.resolved != NULL) {
        d->ops.resolved(d->ops.ud, c->name); /* neither */
    }
    check_init(d);
}

static void lookup(struct target *t)
{
    struct dcluster *c = t->c;
    struct dns_refresh *d = c->d;
    if (t->q != NULL) {
        return; /* still on its way (a hanging nameserver): no second lookup of the name */
    }
    struct eds_stats *st = d->ops.stats(d->ops.ud, c->name);
    if (st != NULL) {
        STAT_INC(st->update_attempt);
    }
    t->q = resolver_query(d->res, t->host, c->fam, on_answer, t);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    lookup(w->data);
}

static struct target *target_new(struct dcluster *c, const char *host)
{
    struct target *t = xcalloc(1, sizeof(*t));
    t->c = c;
    t->host = xstrdup(host);
    ev_init(&t->timer, timer_cb);
    t->timer.data = t;
    uint64_t base = c->fail_base_ms > 0 ? c->fail_base_ms : c->refresh_ms;
    ads_backoff_init(&t->backoff, base, c->fail_base_ms > 0 ? c->fail_max_ms : base);
    return t;
}

static void target_free(struct target *t)
{
    struct dns_refresh *d = t->c->d;
    ev_timer_stop(d->loop, &t->timer);
    resolver_cancel(d->res, t->q);
    free(t->host);
    free(t);
}

static void cluster_free(struct dcluster *c)
{
    for (uint32_t i = 0; i < c->n; i++) {
        target_free(c->t[i]);
    }
    free(c->t);
    free(c->name);
    free(c);
}

static struct dcluster *find_cluster(struct dns_refresh *d, const char *name)
{
    for (struct dcluster *c = d->clusters; c != NULL; c = c->next) {
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }
    return NULL;
}

/* Brings `c`'s settings and targets to `cfg`'s; new targets are looked up now. */
static void cluster_sync(struct dcluster *c, const struct cluster_cfg *cfg)
{
    enum resolver_family fam = (enum resolver_family)cfg->dns_family;
    bool rates = c->refresh_ms != cfg->dns_refresh_ms || c->fail_base_ms != cfg->dns_fail_base_ms ||
                 c->fail_max_ms != cfg->dns_fail_max_ms;
    if (c->fam != fam) {
        for (uint32_t i = 0; i < c->n; i++) { /* the answers are for another family */
            target_free(c->t[i]);
        }
        c->n = 0;
    }
    c->fam = fam;
    c->logical = cfg->type == CLUSTER_LOGICAL_DNS;
    c->refresh_ms = cfg->dns_refresh_ms;
    c->fail_base_ms = cfg->dns_fail_base_ms;
    c->fail_max_ms = cfg->dns_fail_max_ms;
    struct target **nt = xcalloc(cfg->n_dns_hosts ? cfg->n_dns_hosts : 1, sizeof(*nt));
    uint32_t n = 0;
    bool *kept = xcalloc(c->n ? c->n : 1, sizeof(*kept));
    for (uint32_t h = 0; h < cfg->n_dns_hosts; h++) {
        const char *host = cfg->dns_hosts[h].p;
        if (resolver_is_literal(host)) {
            continue; /* answered by the builder itself */
        }
        struct target *t = NULL;
        for (uint32_t i = 0; i < c->n && t == NULL; i++) {
            if (!kept[i] && strcmp(c->t[i]->host, host) == 0) {
                kept[i] = true;
                t = c->t[i];
            }
        }
        if (t != NULL && rates) {
            uint64_t base = c->fail_base_ms > 0 ? c->fail_base_ms : c->refresh_ms;
            ads_backoff_init(&t->backoff, base, c->fail_base_ms > 0 ? c->fail_max_ms : base);
        }
        if (t == NULL) {
            t = target_new(c, host);
            nt[n++] = t;
            lookup(t);
        } else {
            nt[n++] = t;
        }
    }
    for (uint32_t i = 0; i < c->n; i++) {
        if (!kept[i]) {
            target_free(c->t[i]);
        }
    }
    free(kept);
    free(c->t);
    c->t = nt;
    c->n = n;
}

void dns_refresh_sync(struct dns_refresh *d, const struct cluster_cfg *const *cfgs, uint32_t n)
{
    struct dcluster **pp = &d->clusters;
    while (*pp != NULL) {
        struct dcluster *c = *pp;
        bool stays = false;
        for (uint32_t i = 0; i < n && !stays; i++) {
            stays = strcmp(cfgs[i]->name.p, c->name) == 0;
        }
        if (stays) {
            pp = &c->next;
        } else {
            *pp = c->next;
            cluster_free(c);
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        struct dcluster *c = find_cluster(d, cfgs[i]->name.p);
        if (c == NULL) {
            c = xcalloc(1, sizeof(*c));
            c->d = d;
            c->name = xstrdup(cfgs[i]->name.p);
            c->fam = (enum resolver_family)cfgs[i]->dns_family;
            c->next = d->clusters;
            d->clusters = c;
        }
        cluster_sync(c, cfgs[i]);
    }
    check_init(d);
}

/* config_dns.pending */
static bool pending(void *ud, const struct cluster_cfg *cc)
{
    struct dns_refresh *d = ud;
    struct dcluster *c = find_cluster(d, cc->name.p);
    for (uint32_t h = 0; h < cc->n_dns_hosts; h++) {
        const char *host = cc->dns_hosts[h].p;
        if (resolver_is_literal(host)) {
            continue;
        }
        if (c == NULL || c->fam != (enum resolver_family)cc->dns_family) {
            return true; /* not synced yet: its lookups start after the CDS update */
        }
        bool done = false;
        for (uint32_t i = 0; i < c->n && !done; i++) {
            done = strcmp(c->t[i]->host, host) == 0 && c->t[i]->first_done;
        }
        if (!done) {
            return true;
        }
    }
    return false;
}

/* config_dns.answer */
static size_t answer(void *ud, const char *cluster, const char *host, const char **out, size_t max)
{
    struct dns_refresh *d = ud;
    if (resolver_is_literal(host)) {
        if (max == 0) {
            return 0;
        }
        out[0] = host;
        return 1;
    }
    struct dcluster *c = find_cluster(d, cluster);
    for (uint32_t i = 0; c != NULL && i < c->n; i++) {
        struct target *t = c->t[i];
        if (strcmp(t->host, host) != 0) {
            continue;
        }
        size_t n = t->answered ? t->last.n : 0;
        n = n < max ? n : max;
        for (size_t k = 0; k < n; k++) {
            out[k] = t->last.addrs[k];
        }
        return n;
    }
    return 0;
}

static void init_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dns_refresh *d = w->data;
    if (d->holding) {
        d->holding = false;
        LOG_W("dns: STRICT_DNS names still unanswered after the startup bound: starting without "
              "them");
        d->ops.init_done(d->ops.ud);
    }
}

bool dns_refresh_hold_init(struct dns_refresh *d, uint64_t bound_ms)
{
    bool pending = false;
    for (struct dcluster *c = d->clusters; c != NULL && !pending; c = c->next) {
        for (uint32_t i = 0; i < c->n && !pending; i++) {
            pending = !c->t[i]->first_done;
        }
    }
    if (!pending) {
        return false;
    }
    d->holding = true;
    ev_timer_set(&d->init_timer, (double)bound_ms / 1000.0, 0);
    ev_timer_start(d->loop, &d->init_timer);
    return true;
}

struct dns_refresh *dns_refresh_new(struct ev_loop *loop, const struct dns_refresh_ops *ops)
{
    struct dns_refresh *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->ops = *ops;
    d->res = resolver_new(loop);
    d->dns = (struct config_dns){.answer = answer, .pending = pending, .ud = d};
    d->rng = ((uint64_t)(ev_time() * 1e6) << 1) | 1;
    ev_init(&d->init_timer, init_timeout_cb);
    d->init_timer.data = d;
    return d;
}

void dns_refresh_free(struct dns_refresh *d)
{
    if (d == NULL) {
        return;
    }
    while (d->clusters != NULL) {
        struct dcluster *c = d->clusters;
        d->clusters = c->next;
        cluster_free(c);
    }
    ev_timer_stop(d->loop, &d->init_timer);
    resolver_free(d->res);
    free(d);
}

void dns_refresh_seed(struct dns_refresh *d, const char *cluster, const char *host,
                      const struct resolver_answer *a)
{
    struct dcluster *c = find_cluster(d, cluster);
    for (uint32_t i = 0; c != NULL && a->n > 0 && i < c->n; i++) {
        struct target *t = c->t[i];
        if (strcmp(t->host, host) == 0 && !t->answered) {
            t->last = *a;
            t->answered = true;
            t->first_done = true;
        }
    }
}

const struct config_dns *dns_refresh_dns(struct dns_refresh *d)
{
    return &d->dns;
}

struct resolver *dns_refresh_resolver(struct dns_refresh *d)
{
    return d->res;
}
