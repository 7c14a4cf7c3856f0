/* resolver: a small fixed pool of threads running getaddrinfo for a loop (resolver.h). Queries
 * are jobs on a queue shared with the threads; answers come back through an ev_async. */
#include "proxy/net/resolver.h"

#include <arpa/inet.h>
#include <ev.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

/* One query: on the queue, with a thread, or answered and waiting for the loop. */
struct resolver_query {
    struct resolver_query *next; /* in the todo or done list (owned by it), or NULL */
    char *host;                  /* owned */
    enum resolver_family fam;
    struct resolver_answer answer; /* written by the thread, read by the loop once done */
    resolver_done_cb done;
    void *arg;      /* borrowed: the caller's, passed to done */
    bool cancelled; /* loop: freed without calling done when it comes back */
};

/* What the loop and the resolver threads share; freed by whichever lets go last (refs: the loop's
 * resolver and each thread). */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t work;    /* todo is not empty, or stop */
    pthread_cond_t done_cv; /* a query was answered */
    struct resolver_query *todo, **todo_tail;
    struct resolver_query *done, **done_tail;
    bool stop;
    int refs;
    struct ev_loop *loop; /* borrowed: the resolver's loop, used while !stop */
    ev_async *async;      /* borrowed: the loop's watcher, sent to while !stop */
    resolver_lookup_fn lookup;
};

struct resolver {
    struct ev_loop *loop; /* borrowed */
    ev_async async;
    struct shared *sh; /* shared with the threads: freed by the last to let go (refs) */
};

bool resolver_is_literal(const char *host)
{
    unsigned char bin[16];
    return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}

/* Adds the IPv4/IPv6 addresses of one getaddrinfo result to `out`, without duplicates. */
static void add_addrs(const struct addrinfo *res, struct resolver_answer *out)
{
    for (const struct addrinfo *ai = res; ai != NULL && out->n < RESOLVER_ADDRS_MAX;
         ai = ai->ai_next) {
        char buf[RESOLVER_ADDR_MAX];
        const void *a = ai->ai_family == AF_INET
                            ? (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr
                            : (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
        if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
            inet_ntop(ai->ai_family, a, buf, sizeof(buf)) == NULL) {
            continue;
        }
        bool dup = false;
        for (size_t i = 0; i < out->n && !dup; i++) {
            dup = strcmp(out->addrs[i], buf) == 0;
        }
        if (!dup) {
            memcpy(out->addrs[out->n++], buf, sizeof(buf));
        }
    }
}

void resolver_getaddrinfo(const char *host, enum resolver_family fam, struct resolver_answer *out)
{
    int families[2] = {AF_INET, AF_INET6};
    int n_fam = 2;
    switch (fam) {
    case RESOLVER_V4_ONLY:
        n_fam = 1;
        break;
    case RESOLVER_V6_ONLY:
        families[0] = AF_INET6;
        n_fam = 1;
        break;
    case RESOLVER_ALL:
        families[0] = AF_UNSPEC;
        n_fam = 1;
        break;
    case RESOLVER_V6_PREFERRED:
        families[0] = AF_INET6;
        families[1] = AF_INET;
        break;
    case RESOLVER_V4_PREFERRED:
        break;
    }
    out->n = 0;
    out->gai_err = 0;
    for (int f = 0; f < n_fam && out->n == 0; f++) {
        struct addrinfo hints = {.ai_family = families[f], .ai_socktype = SOCK_STREAM};
        struct addrinfo *res = NULL;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (rc != 0) {
            out->gai_err = rc;
            continue;
        }
        add_addrs(res, out);
        freeaddrinfo(res);
    }
    if (out->n > 0) {
        out->gai_err = 0;
    }
}

static void free_queries(struct resolver_query *q)
{
    while (q != NULL) {
        struct resolver_query *next = q->next;
        free(q->host);
        free(q);
        q = next;
    }
}

/* Called with sh->mu held; unlocks it. */
static void release_locked(struct shared *sh)
{
    bool last = --sh->refs == 0;
    pthread_mutex_unlock(&sh->mu);
    if (last) {
        free_queries(sh->todo);
        free_queries(sh->done);
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
        struct resolver_query *q = sh->todo;
        sh->todo = q->next;
        if (sh->todo == NULL) {
            sh->todo_tail = &sh->todo;
        }
        q->next = NULL;
        resolver_lookup_fn lookup = sh->lookup;
        pthread_mutex_unlock(&sh->mu);
        /* nobody else touches q's host, fam or answer while it is off the lists */
        memset(&q->answer, 0, sizeof(q->answer));
        lookup(q->host, q->fam, &q->answer);
        pthread_mutex_lock(&sh->mu);
        *sh->done_tail = q;
        sh->done_tail = &q->next;
        if (!sh->stop) {
            ev_async_send(sh->loop, sh->async);
        }
        pthread_cond_broadcast(&sh->done_cv);
    }
    release_locked(sh);
    return NULL;
}

/* Delivers (or drops, if cancelled) a query taken off the done list, and frees it. */
static void deliver(struct resolver_query *q)
{
    if (!q->cancelled) {
        q->done(q->arg, q->host, &q->answer);
    }
    free(q->host);
    free(q);
}

static void async_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    (void)loop;
    (void)revents;
    struct resolver *r = w->data;
    struct shared *sh = r->sh;
    pthread_mutex_lock(&sh->mu);
    struct resolver_query *q = sh->done;
    sh->done = NULL;
    sh->done_tail = &sh->done;
    pthread_mutex_unlock(&sh->mu);
    while (q != NULL) {
        struct resolver_query *next = q->next;
        deliver(q); /* a done callback may cancel a query further down this list: flagged */
        q = next;
    }
}

struct resolver *resolver_new(struct ev_loop *loop)
{
    struct resolver *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    ev_async_init(&r->async, async_cb);
    r->async.data = r;
    ev_async_start(loop, &r->async);
    ev_unref(loop);

    struct shared *sh = xcalloc(1, sizeof(*sh));
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->work, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&sh->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    sh->todo_tail = &sh->todo;
    sh->done_tail = &sh->done;
    sh->refs = 1 + RESOLVER_THREADS;
    sh->loop = loop;
    sh->async = &r->async;
    sh->lookup = resolver_getaddrinfo;
    r->sh = sh;

    /* the threads take no signals: the loop's handlers get them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < RESOLVER_THREADS; i++) {
        pthread_t t;
        int rc = pthread_create(&t, NULL, resolver_main, sh);
        if (rc != 0) {
            LOG_E("cannot start a DNS resolver thread: %s", strerror(rc));
            abort();
        }
        pthread_detach(t);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return r;
}

void resolver_free(struct resolver *r)
{
    if (r == NULL) {
        return;
    }
    ev_ref(r->loop);
    ev_async_stop(r->loop, &r->async);
    pthread_mutex_lock(&r->sh->mu);
    r->sh->stop = true;
    pthread_cond_broadcast(&r->sh->work);
    release_locked(r->sh);
    free(r);
}

void resolver_set_lookup(struct resolver *r, resolver_lookup_fn fn)
{
    pthread_mutex_lock(&r->sh->mu);
    r->sh->lookup = fn;
    pthread_mutex_unlock(&r->sh->mu);
}

struct resolver_query *resolver_query(struct resolver *r, const char *host,
                                      enum resolver_family fam, resolver_done_cb done, void *arg)
{
    struct resolver_query *q = xcalloc(1, sizeof(*q));
    q->host = xstrdup(host);
    q->fam = fam;
    q->done = done;
    q->arg = arg;
    struct shared *sh = r->sh;
    pthread_mutex_lock(&sh->mu);
    *sh->todo_tail = q;
    sh->todo_tail = &q->next;
    pthread_cond_signal(&sh->work);
    pthread_mutex_unlock(&sh->mu);
    return q;
}

/* Unlinks `q` from list `*head` (tail pointer `*tail`); true if it was there. */
static bool unlink_query(struct resolver_query **head, struct resolver_query ***tail,
                         struct resolver_query *q)
{
    for (struct resolver_query **pp = head; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == q) {
            *pp = q->next;
            if (*tail == &q->next) {
                *tail = pp;
            }
            return true;
        }
    }
    return false;
}

void resolver_cancel(struct resolver *r, struct resolver_query *q)
{
    if (q == NULL) {
        return;
    }
    struct shared *sh = r->sh;
    pthread_mutex_lock(&sh->mu);
    bool queued = unlink_query(&sh->todo, &sh->todo_tail, q);
    bool answered = !queued && unlink_query(&sh->done, &sh->done_tail, q);
    if (!queued && !answered) {
        q->cancelled = true; /* with a thread, or taken by async_cb: freed when it comes back */
    }
    pthread_mutex_unlock(&sh->mu);
    if (queued || answered) {
        free(q->host);
        free(q);
    }
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

bool resolver_wait(struct resolver *r, struct resolver_query *q, double seconds)
{
    if (seconds <= 0) {
        return false;
    }
    double deadline = mono_now() + seconds;
    struct timespec until = {.tv_sec = (time_t)deadline,
                             .tv_nsec = (long)((deadline - (double)(time_t)deadline) * 1e9)};
    struct shared *sh = r->sh;
    bool got = false;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        got = unlink_query(&sh->done, &sh->done_tail, q);
        if (got || pthread_cond_timedwait(&sh->done_cv, &sh->mu, &until) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&sh->mu);
    if (got) {
        deliver(q);
    }
    return got;
}
