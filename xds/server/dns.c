/* dns: remora-xds's name cache (dns.h), over the resolver threads of proxy/net/resolver.h. */
#include "xds/server/dns.h"

#include <ev.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

struct entry {
    struct entry *next; /* in dns.entries, which owns it */
    struct dns *d;      /* borrowed: the cache */
    char *host;
    char addrs[TR_ADDRS_MAX][TR_ADDR_MAX];
    size_t n;
    bool pending;                 /* no answer yet: resolves to nothing */
    struct resolver_query *query; /* owned by the resolver: the lookup on its way, or NULL */
};

struct dns {
    struct ev_loop *loop;
    ev_timer refresh;
    struct resolver *res; /* owned */
    double first_wait;    /* seconds */
    ev_tstamp wait_iter;  /* the loop iteration (ev_now) that `wait_left` is for */
    double wait_left;
    dns_changed_cb changed;
    void *arg;
    bool in_wait;  /* inside wait_first: an answer is for the caller, not `changed` */
    bool answered; /* wait_first: the answer changed something */
    struct entry *entries;
    size_t n_entries;
};

_Static_assert(TR_ADDR_MAX == RESOLVER_ADDR_MAX, "translate.h and resolver.h address sizes");

static struct entry *find(struct dns *d, const char *host)
{
    for (struct entry *e = d->entries; e != NULL; e = e->next) {
        if (strcmp(e->host, host) == 0) {
            return e;
        }
    }
    return NULL;
}

/* Takes an answer into the cache; true when what the name resolves to changed. */
static bool apply(struct entry *e, const struct resolver_answer *a)
{
    size_t n = a->n < TR_ADDRS_MAX ? a->n : TR_ADDRS_MAX;
    bool changed = n != e->n || memcmp(a->addrs, e->addrs, n * sizeof(e->addrs[0])) != 0;
    if (changed && !e->pending) {
        LOG_I("xds: %s now resolves to %zu address(es)", e->host, n);
    } else if (e->pending && n == 0) {
        LOG_W("xds: %s does not resolve", e->host);
    }
    e->pending = false;
    memset(e->addrs, 0, sizeof(e->addrs));
    memcpy(e->addrs, a->addrs, n * sizeof(e->addrs[0]));
    e->n = n;
    return changed;
}

static void on_answer(void *arg, const char *host, const struct resolver_answer *a)
{
    (void)host;
    struct entry *e = arg;
    struct dns *d = e->d;
    e->query = NULL;
    bool changed = apply(e, a);
    if (d->in_wait) {
        return; /* no `changed`: the translation asking uses it now */
    }
    if (changed) {
        d->changed(d->arg);
    }
}

static void enqueue(struct dns *d, struct entry *e)
{
    if (e->query == NULL) {
        e->query = resolver_query(d->res, e->host, RESOLVER_ALL, on_answer, e);
    }
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dns *d = w->data;
    for (struct entry *e = d->entries; e != NULL; e = e->next) {
        enqueue(d, e);
    }
}

static void clear_entries(struct dns *d)
{
    while (d->entries != NULL) {
        struct entry *e = d->entries;
        d->entries = e->next;
        resolver_cancel(d->res, e->query);
        free(e->host);
        free(e);
    }
    d->n_entries = 0;
}

struct dns *dns_new(struct ev_loop *loop, double refresh_ms, double first_wait_ms,
                    dns_changed_cb changed, void *arg)
{
    struct dns *d = xcalloc(1, sizeof(*d));
    d->loop = loop;
    d->first_wait = first_wait_ms / 1000.0;
    d->wait_iter = -1;
    d->changed = changed;
    d->arg = arg;
    ev_timer_init(&d->refresh, refresh_cb, refresh_ms / 1000.0, refresh_ms / 1000.0);
    d->refresh.data = d;
    ev_timer_start(loop, &d->refresh);
    d->res = resolver_new(loop);
    return d;
}

void dns_free(struct dns *d)
{
    if (d == NULL) {
        return;
    }
    ev_timer_stop(d->loop, &d->refresh);
    clear_entries(d);
    resolver_free(d->res);
    free(d);
}

void dns_set_lookup(struct dns *d, resolver_lookup_fn fn)
{
    resolver_set_lookup(d->res, fn);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits (within this loop iteration's budget) for the first answer of `e`. */
static void wait_first(struct dns *d, struct entry *e)
{
    if (ev_now(d->loop) != d->wait_iter) {
        d->wait_iter = ev_now(d->loop);
        d->wait_left = d->first_wait;
    }
    if (d->wait_left <= 0) {
        return;
    }
    double t0 = mono_now();
    d->in_wait = true;
    resolver_wait(d->res, e->query, d->wait_left);
    d->in_wait = false;
    d->wait_left -= mono_now() - t0;
}

size_t dns_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    struct dns *d = arg;
    if (resolver_is_literal(host)) {
        if (max == 0 || strlen(host) >= TR_ADDR_MAX) {
            return 0;
        }
        strcpy(out[0], host);
        return 1;
    }
    struct entry *e = find(d, host);
    if (e == NULL) {
        if (d->n_entries >= DNS_CACHE_MAX) {
            LOG_W("xds: %d names cached: the DNS cache starts over", DNS_CACHE_MAX);
            clear_entries(d);
        }
        e = xcalloc(1, sizeof(*e));
        e->d = d;
        e->host = xstrdup(host);
        e->pending = true;
        e->next = d->entries;
        d->entries = e;
        d->n_entries++;
        enqueue(d, e);
        wait_first(d, e);
    }
    size_t n = e->n < max ? e->n : max;
    memcpy(out, e->addrs, n * sizeof(out[0]));
    return n;
}
