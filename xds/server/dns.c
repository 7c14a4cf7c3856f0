/* dns: remora-xds's name cache, resolved on a thread of its own (dns.h). */
#include "xds/server/dns.h"

#include <arpa/inet.h>
#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

/* One name for the resolver thread, and its answer on the way back. */
struct job {
    struct job *next;
    char *host;
    char addrs[TR_ADDRS_MAX][TR_ADDR_MAX];
    size_t n;
};

/* What the loop and the resolver thread share. The thread may sit in getaddrinfo long after
 * dns_free, so this is freed by whichever of the two lets go last (refs). */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t work;    /* todo is not empty, or stop */
    pthread_cond_t done_cv; /* a job was answered */
    struct job *todo, **todo_tail;
    struct job *done;
    bool stop;
    int refs;
    struct ev_loop *loop;
    ev_async *async; /* the loop's watcher, sent to while !stop */
    dns_lookup_fn lookup;
};

struct entry {
    struct entry *next;
    char *host;
    char addrs[TR_ADDRS_MAX][TR_ADDR_MAX];
    size_t n;
    bool pending; /* no answer yet: resolves to nothing */
    bool queued;  /* a job for it is on its way */
};

struct dns {
    struct ev_loop *loop;
    ev_timer refresh;
    ev_async async;
    double first_wait;   /* seconds */
    ev_tstamp wait_iter; /* the loop iteration (ev_now) that `wait_left` is for */
    double wait_left;
    dns_changed_cb changed;
    void *arg;
    struct entry *entries;
    size_t n_entries;
    struct shared *sh;
};

static size_t getaddrinfo_lookup(const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host, NULL, &hints, &res) != 0) {
        return 0;
    }
    size_t n = 0;
    for (struct addrinfo *ai = res; ai != NULL && n < max; ai = ai->ai_next) {
        char buf[TR_ADDR_MAX];
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            inet_ntop(ai->ai_family, a, buf, sizeof(buf)) == NULL) {
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < n; i++) {
            dup |= strcmp(out[i], buf) == 0;
        }
        if (!dup) {
            memcpy(out[n++], buf, sizeof(buf));
        }
    }
    freeaddrinfo(res);
    return n;
}

static void free_jobs(struct job *j)
{
    while (j != NULL) {
        struct job *next = j->next;
        free(j->host);
        free(j);
        j = next;
    }
}

/* Called with sh->mu held; unlocks it. */
static void release_locked(struct shared *sh)
{
    bool last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->mu);
    if (last) {
        free_jobs(sh->todo);
        free_jobs(sh->done);
        pthread_cond_destroy(&sh->work);
        pthread_cond_destroy(&sh->done_cv);
        pthread_mutex_destroy(&sh->mu);
        free(sh);
    }
}

static void *resolver_main(void *p)
{
    struct shared *sh = p;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        while (!sh->stop && sh->todo == NULL) {
            pthread_cond_wait(&sh->work, &sh->mu);
        }
        if (sh->stop) {
            break;
        }
        struct job *j = sh->todo;
        sh->todo = j->next;
        if (sh->todo == NULL) {
            sh->todo_tail = &sh->todo;
        }
        dns_lookup_fn lookup = sh->lookup;
        pthread_mutex_unlock(&sh->mu);
        j->n = lookup(j->host, j->addrs, TR_ADDRS_MAX);
        pthread_mutex_lock(&sh->mu);
        j->next = sh->done;
        sh->done = j;
        if (!sh->stop) {
            ev_async_send(sh->loop, sh->async);
        }
        pthread_cond_broadcast(&sh->done_cv);
    }
    release_locked(sh);
    return NULL;
}

static struct entry *find(struct dns *d, const char *host)
{
    for (struct entry *e = d->entries; e != NULL; e = e->next) {
        if (strcmp(e->host, host) == 0) {
            return e;
        }
    }
    return NULL;
}

static void enqueue(struct dns *d, struct entry *e)
{
    if (e->queued) {
        return;
    }
    struct job *j = xcalloc(1, sizeof(*j));
    j->host = xstrdup(e->host);
    struct shared *sh = d->sh;
    pthread_mutex_lock(&sh->mu);
    *sh->todo_tail = j;
    sh->todo_tail = &j->next;
    pthread_cond_signal(&sh->work);
    pthread_mutex_unlock(&sh->mu);
    e->queued = true;
}

/* Takes an answer into the cache; true when what the name resolves to changed. */
static bool apply(struct dns *d, struct job *j)
{
    struct entry *e = find(d, j->host);
    bool changed = false;
    if (e != NULL) { /* else the cache started over since */
        e->queued = false;
        changed = j->n != e->n || memcmp(j->addrs, e->addrs, j->n * sizeof(j->addrs[0])) != 0;
        if (changed && !e->pending) {
            LOG_I("xds: %s now resolves to %zu address(es)", e->host, j->n);
        } else if (e->pending && j->n == 0) {
            LOG_W("xds: %s does not resolve", e->host);
        }
        e->pending = false;
        memcpy(e->addrs, j->addrs, sizeof(e->addrs));
        e->n = j->n;
    }
    free(j->host);
    free(j);
    return changed;
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct dns *d = w->data;
    pthread_mutex_lock(&d->sh->mu);
    struct job *j = d->sh->done;
    d->sh->done = NULL;
    pthread_mutex_unlock(&d->sh->mu);
    bool changed = false;
    while (j != NULL) {
        struct job *next = j->next;
        changed |= apply(d, j);
        j = next;
    }
    if (changed) {
        d->changed(d->arg);
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
    ev_async_init(&d->async, async_cb);
    d->async.data = d;
    ev_async_start(loop, &d->async);

    struct shared *sh = xcalloc(1, sizeof(*sh));
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->work, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    sh->todo_tail = &sh->todo;
    sh->refs = 2;
    sh->loop = loop;
    sh->async = &d->async;
    sh->lookup = getaddrinfo_lookup;
    d->sh = sh;

    /* the thread takes no signals: the loop's handlers get them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int rc = pthread_create(&t, NULL, resolver_main, sh);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        LOG_E("xds: cannot start the DNS resolver thread: %s", strerror(rc));
        abort();
    }
    pthread_detach(t);
    return d;
}

void dns_free(struct dns *d)
{
    if (d == NULL) {
        return;
    }
    ev_timer_stop(d->loop, &d->refresh);
    ev_async_stop(d->loop, &d->async);
    pthread_mutex_lock(&d->sh->mu);
    d->sh->stop = true;
    pthread_cond_broadcast(&d->sh->work);
    release_locked(d->sh);
    clear_entries(d);
    free(d);
}

void dns_set_lookup(struct dns *d, dns_lookup_fn fn)
{
    pthread_mutex_lock(&d->sh->mu);
    d->sh->lookup = fn;
    pthread_mutex_unlock(&d->sh->mu);
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits (within this loop iteration's budget) for the first answer for `host`; true if it came
 * and was applied. */
static bool wait_first(struct dns *d, const char *host)
{
    if (ev_now(d->loop) != d->wait_iter) {
        d->wait_iter = ev_now(d->loop);
        d->wait_left = d->first_wait;
    }
    if (d->wait_left <= 0) {
        return false;
    }
    double t0 = mono_now();
    double deadline = t0 + d->wait_left;
    struct timespec until = {.tv_sec = (time_t)deadline,
                             .tv_nsec = (long)((deadline - (double)(time_t)deadline) * 1e9)};
    struct shared *sh = d->sh;
    struct job *got = NULL;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        for (struct job **pp = &sh->done; *pp != NULL; pp = &(*pp)->next) {
            if (strcmp((*pp)->host, host) == 0) {
                got = *pp;
                *pp = got->next;
                break;
            }
        }
        if (got != NULL || pthread_cond_timedwait(&sh->done_cv, &sh->mu, &until) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    d->wait_left -= mono_now() - t0;
    if (got == NULL) {
        return false;
    }
    apply(d, got); /* no `changed`: the translation asking uses it now */
    return true;
}

size_t dns_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    struct dns *d = arg;
    unsigned char bin[16];
    if (inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1) {
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
        e->host = xstrdup(host);
        e->pending = true;
        e->next = d->entries;
        d->entries = e;
        d->n_entries++;
        enqueue(d, e);
        wait_first(d, host);
    }
    size_t n = e->n < max ? e->n : max;
    memcpy(out, e->addrs, n * sizeof(out[0]));
    return n;
}
