/* worker: a thread with its own libev loop (see worker.h). It accepts on its own
 * SO_REUSEPORT sockets (the kernel spreads connections across workers), runs every connection
 * it accepted to the end, and frees objects only after callbacks unwind (the deferred list, run
 * from its ev_prepare watcher, before the loop next polls). */
#include "proxy/worker.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxy/cds.h"
#include "proxy/config/cluster_map.h"
#include "proxy/config/config.h"
#include "proxy/config/rds.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream.h"
#include "proxy/http/downstream_h2.h"
#include "proxy/http/filter_chain.h"
#include "proxy/http/stream.h"
#include "proxy/lds.h"
#include "proxy/net/accepted.h"
#include "proxy/net/chain_match.h"
#include "proxy/net/tcp_proxy.h"
#include "proxy/net/proxy_protocol.h"
#include "proxy/net/tls_inspector.h"
#include "proxy/stats/stats.h"
#include "proxy/tracing/tracing.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/shared.h"
#include "proxy/upstream/upstream.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_S 0.1

void worker_defer(struct worker *w, struct deferred *d, void (*free_fn)(struct deferred *d))
{
    d->free_fn = free_fn;
    list_insert_tail(&w->deferred, &d->link);
}

static void run_deferred(struct worker *w)
{
    while (!list_empty(&w->deferred)) {
        struct list *n = list_first(&w->deferred);
        list_remove(n);
        struct deferred *d = LIST_ENTRY(n, struct deferred, link);
        d->free_fn(d);
    }
}

/* Freed HTTP/1 parser blocks kept per worker: a keep-alive connection's parser gives its blocks
 * back after every message (h1_parser_release), and takes them again for the next one. */
#define H1_CACHE_CAP 256
#define BUF_CACHE_CAP 256 /* 256 KiB of buffer blocks at most */

/* The per-request caches (bounded LIFOs in front of malloc) go back to malloc. */
static void trim_caches(struct worker *w)
{
    blk_cache_deinit(&w->stream_cache);
    blk_cache_deinit(&w->stream_arena_cache);
    h2_mem_trim(&w->h2mem);
    blk_cache_deinit(&w->h1_arena_cache);
    blk_cache_deinit(&w->h1_head_cache);
    blk_cache_deinit(&w->buf_cache);
}

/* Before the loop waits for events, once the iteration's callbacks have unwound: the HTTP/2
 * connections with frames queued in this iteration are written; the objects deferred by those
 * callbacks are freed (worker_defer: not later, at the next wakeup, which an idle worker may not
 * have for a second); and after a burst (worker_stream_freed) its memory is given back at once,
 * rather than at the next quiet tick and main's malloc_trim, up to 5 s later. */
static void prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    (void)revents;
    struct worker *w = p->data;
    downstream_h2_flush_queued(w);
    run_deferred(w);
    if (w->burst_ended) {
        w->burst_ended = false;
        /* at most once a second: a trim after 300 streams took 0.44 ms here, and bursts that
         * come back faster are left to the quiet tick and main's timer */
        if (w->n_live == 0 && ev_now(loop) - w->burst_trim_at >= 1.0) {
            w->burst_trim_at = ev_now(loop);
            LOG_D("worker %u: a burst of %u streams ended: memory given back", w->id, w->live_peak);
            w->live_peak = 0;
            trim_caches(w);
            malloc_trim(0);
        }
    }
}

uint64_t worker_rand(struct worker *w)
{
    return rand_next(&w->rng);
}

struct str worker_http_date(struct worker *w)
{
    int64_t now = (int64_t)ev_now(w->loop);
    if (now != w->date_sec || w->date[0] == '\0') {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(w->date, sizeof(w->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = now;
    }
    return str_from_c(w->date);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct worker_listener *wl = io->data;
    struct worker *w = wl->w;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(wl->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED) {
                return;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* Out of descriptors: stop accepting for a moment instead of spinning on a
                 * level-triggered watcher (fault F14). Pending clients wait in the backlog. */
                LOG_W("accept: %s; pausing accepts for %.0f ms", strerror(errno),
                      ACCEPT_PAUSE_S * 1000);
                STAT_INC(wl->sc->stats->listener[wl->index].downstream_cx_overflow);
                ev_io_stop(loop, &wl->io);
                ev_timer_set(&wl->resume, ACCEPT_PAUSE_S, 0);
                ev_timer_start(loop, &wl->resume);
                return;
            }
            LOG_W("accept: %s", strerror(errno));
            return;
        }
        const struct listener_cfg *l = wl->l;
        struct sockaddr_storage local;
        struct accepted a = {.fd = fd, .peer = (struct sockaddr *)&ss, .sc = wl->sc};
        /* listener filters in Envoy's order: original_dst (at once), then proxy_protocol (waits
         * for the PROXY header), then the tls_inspector (waits for the first bytes, then comes
         * back to worker_accept_chain) */
        if (l->wants_local && accepted_local_addr(fd, l->original_dst, &local)) {
            a.local = (struct sockaddr *)&local;
        }
        if (l->proxy_protocol) {
            pp_start(w, wl, &a);
        } else if (l->tls_inspector) {
            tls_inspect_start(w, wl, &a);
        } else {
            worker_accept_chain(w, wl, &a, NULL);
        }
    }
}

void worker_accept_chain(struct worker *w, const struct worker_listener *wl, struct accepted *a,
                         const struct chain_tls *tls)
{
    const struct listener_cfg *l = wl->l;
    a->sc = wl->sc;
    a->chain = &l->chains[0];
    if (l->select) {
        int ci = chain_select_direct(l->matches, l->n_chains, a->local, a->peer, a->direct, tls);
        if (ci < 0 && !l->has_default) {
            /* Envoy closes a connection no chain takes, before it counts as one. */
            STAT_INC(wl->sc->stats->listener[wl->index].no_filter_chain_match);
            close(a->fd);
            return;
        }
        a->chain = &l->chains[ci >= 0 ? (uint32_t)ci : l->n_chains];
    }
    int one = 1;
    setsockopt(a->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    w->n_conns++;
    if (wl->sc->dl != NULL) {
        wl->sc->dl->n_conns++;
    }
    if (a->chain->tcp != NULL) {
        tcp_proxy_accept(w, a);
    } else {
        downstream_accept(w, a);
    }
}

static void resume_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker_listener *wl = t->data;
    if (wl->fd >= 0 && wl->w->listening) {
        ev_io_start(loop, &wl->io);
    }
}

static void listener_set(struct worker *w, struct worker_listener *wl, bool on)
{
    if (wl->fd < 0) {
        return;
    }
    if (on) {
        ev_io_start(w->loop, &wl->io);
    } else {
        ev_io_stop(w->loop, &wl->io);
        ev_timer_stop(w->loop, &wl->resume);
    }
}

void worker_set_listening(struct worker *w, bool on)
{
    w->listening = on;
    for (uint32_t i = 0; i < w->cfg->n_listeners; i++) {
        listener_set(w, &w->listeners[i], on);
    }
    struct list *it;
    LIST_FOREACH(it, &w->dls)
    {
        listener_set(w, &LIST_ENTRY(it, struct worker_dl, link)->wl, on);
    }
}

static void listener_close(struct worker *w, struct worker_listener *wl)
{
    listener_set(w, wl, false);
    if (wl->fd >= 0) {
        close(wl->fd);
        wl->fd = -1;
    }
}

/* The listeners stop accepting; their connections go on. `inbound_only`
 * (/drain_listeners?inboundonly): only those whose traffic_direction is INBOUND. */
static void close_listeners(struct worker *w, bool inbound_only)
{
    if (!inbound_only) {
        worker_set_listening(w, false);
    }
    for (uint32_t i = 0; i < w->cfg->n_listeners; i++) {
        if (!inbound_only || w->listeners[i].l->inbound) {
            listener_close(w, &w->listeners[i]);
        }
    }
    struct list *it;
    LIST_FOREACH(it, &w->dls)
    {
        struct worker_dl *dl = LIST_ENTRY(it, struct worker_dl, link);
        if (!inbound_only || dl->wl.l->inbound) {
            listener_close(w, &dl->wl);
        }
    }
}

static void dl_flush_logs(struct worker_dl *dl);

static void flush_logs(struct worker *w)
{
    for (uint32_t i = 0; i < w->n_logs; i++) {
        if (buf_len(&w->logs[i].buf) > 0) {
            access_log_flush(w->logs[i].sink, &w->logs[i].buf);
        }
    }
    struct list *it;
    LIST_FOREACH(it, &w->dls)
    {
        dl_flush_logs(LIST_ENTRY(it, struct worker_dl, link));
    }
}

static void log_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = t->data;
    flush_logs(w);
    for (uint32_t i = 0; i < w->cfg->n_clusters; i++) {
        if (w->cfg->clusters[i].type == CLUSTER_ORIGINAL_DST) {
            original_dst_sweep(w, &w->clusters[i], ev_now(w->loop));
        }
    }
    struct list *it;
    LIST_FOREACH(it, &w->od_dyn)
    {
        original_dst_sweep(w, LIST_ENTRY(it, struct cluster_rt, od_link), ev_now(w->loop));
    }
    /* A second without a new request: the per-request caches go back to malloc (and from
     * there, through main's malloc_trim, to the system). */
    if (w->n_streams == w->n_streams_at_tick) {
        trim_caches(w);
    }
    w->n_streams_at_tick = w->n_streams;
}

static void close_all(struct worker *w, bool graceful)
{
    /* Sockets still in the tls_inspector are no connections yet: they go at once. */
    tls_inspect_close_all(w);
    pp_close_all(w);
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->downstreams)
    {
        struct downstream *d = LIST_ENTRY(it, struct downstream, link);
        if (graceful) {
            downstream_drain(d);
        } else {
            downstream_close(d, false);
        }
    }
    /* TCP sessions have no request boundary to drain at: they run until they end or the
     * drain time is up (Envoy's behaviour), and only a stop closes them. */
    if (!graceful) {
        tcp_proxy_close_all(w);
    }
}

static bool no_connections(const struct worker *w)
{
    return list_empty(&w->downstreams) && list_empty(&w->tcp_sessions);
}

static void maybe_exit(struct worker *w)
{
    if (w->draining && no_connections(w)) {
        ev_break(w->loop, EVBREAK_ALL);
    }
}

static void dl_free_deferred(struct deferred *d);

void worker_conn_closed(struct worker *w, struct worker_scope *sc)
{
    w->n_conns--;
    struct worker_dl *dl = sc->dl;
    if (dl != NULL && --dl->n_conns == 0 && dl->removed) {
        /* the last connection of a removed LDS listener: its state goes after this
         * iteration's callbacks, behind the connection's own deferred free */
        worker_defer(w, &dl->deferred, dl_free_deferred);
    }
    if (w->draining && no_connections(w)) {
        ev_break(w->loop, EVBREAK_ALL);
    }
}

/* ---- RDS route tables (see worker.h) ---- */

void worker_routes_release(struct worker *w, struct route_pin *pin)
{
    if (pin != NULL && --pin->users == 0) {
        cds_worker_unpin(w, pin->snap->dyn); /* CDS clusters it named (cds.h) */
        rds_snap_unref(pin->snap);
        free(pin);
    }
}

/* Takes the table published in mailbox `r`, if any, as the current one. */
static void take_routes(struct worker *w, struct worker_rds *r)
{
    const struct route_snap *snap = atomic_exchange_explicit(&r->inbox, NULL, memory_order_acquire);
    if (snap == NULL) {
        return;
    }
    struct route_pin *pin = xmalloc(sizeof(*pin));
    pin->snap = snap; /* the reference main took for us */
    pin->users = 1;
    cds_worker_pin(w, snap->dyn);
    struct route_pin *old = r->cur;
    r->cur = pin;
    worker_routes_release(w, old);
}

static void take_all_routes(struct worker *w)
{
    for (uint32_t i = 0; i < w->cfg->n_rds; i++) {
        take_routes(w, &w->rds[i]);
    }
    struct list *it;
    LIST_FOREACH(it, &w->dls)
    {
        struct worker_dl *dl = LIST_ENTRY(it, struct worker_dl, link);
        uint32_t n = lds_listener_cfg(dl->ll)->n_rds;
        for (uint32_t i = 0; i < n; i++) {
            take_routes(w, &dl->sc.rds[i]);
        }
    }
}

void worker_routes_post(struct worker *w, struct worker_rds *box, const struct route_snap *snap)
{
    config_ref(snap->c);
    const struct route_snap *old =
        atomic_exchange_explicit(&box->inbox, snap, memory_order_acq_rel);
    rds_snap_unref(old); /* never taken: the worker had not come round to it */
    if (w != NULL) {
        worker_command(w, WORKER_CMD_ROUTES);
    }
}

void worker_routes_publish(struct worker *w, uint32_t idx, const struct route_snap *snap)
{
    worker_routes_post(w, &w->rds[idx], snap);
}

const struct route_table *worker_routes_acquire_in(struct worker *w, struct worker_rds *rds,
                                                   const struct hcm_cfg *hcm,
                                                   struct route_pin **pin)
{
    *pin = NULL;
    if (!hcm->has_rds) {
        return hcm->routes;
    }
    struct worker_rds *r = &rds[hcm->rds_index];
    if (atomic_load_explicit(&r->inbox, memory_order_relaxed) != NULL) {
        take_routes(w, r);
    }
    if (r->cur == NULL) {
        return hcm->routes;
    }
    r->cur->users++;
    *pin = r->cur;
    return r->cur->snap->table;
}

const struct route_table *worker_routes_acquire(struct worker *w, const struct hcm_cfg *hcm,
                                                struct route_pin **pin)
{
    return worker_routes_acquire_in(w, w->rds, hcm, pin);
}

/* ---- CDS sets for tcp_proxy (see worker.h) ---- */

void worker_cds_release(struct worker *w, struct cds_pin *pin)
{
    if (pin != NULL && --pin->users == 0) {
        cds_worker_unpin(w, pin->set->owner);
        pin->set->unref(pin->set->owner);
        free(pin);
    }
}

static void take_cds(struct worker *w)
{
    const struct rds_clusters *set =
        atomic_exchange_explicit(&w->cds_inbox, NULL, memory_order_acquire);
    if (set == NULL) {
        return;
    }
    struct cds_pin *pin = xmalloc(sizeof(*pin));
    pin->set = set; /* the reference main took for us */
    pin->users = 1;
    cds_worker_pin(w, set->owner);
    struct cds_pin *old = w->cds_cur;
    w->cds_cur = pin;
    worker_cds_release(w, old);
}

void worker_cds_publish(struct worker *w, const struct rds_clusters *set)
{
    if (set == NULL) {
        return;
    }
    set->ref(set->owner);
    const struct rds_clusters *old =
        atomic_exchange_explicit(&w->cds_inbox, set, memory_order_acq_rel);
    if (old != NULL) {
        old->unref(old->owner); /* never taken */
    }
    worker_command(w, WORKER_CMD_ROUTES);
}

const struct cluster_cfg *worker_cds_find(struct worker *w, struct str name, struct cds_pin **pin)
{
    *pin = NULL;
    if (atomic_load_explicit(&w->cds_inbox, memory_order_relaxed) != NULL) {
        take_cds(w);
    }
    if (w->cds_cur == NULL) {
        return NULL;
    }
    const struct cluster_cfg *cc = cluster_map_find(w->cds_cur->set->map, name);
    if (cc != NULL) {
        w->cds_cur->users++;
        *pin = w->cds_cur;
    }
    return cc;
}

/* ---- ORIGINAL_DST reports (see worker.h) ---- */

struct od_reports {
    struct worker *const *workers; /* borrowed: main's */
    uint32_t n;
    uint64_t gen;
    struct od_report **have; /* owned; [n] */
};

struct od_reports *worker_od_reports_new(struct worker *const *workers, uint32_t n)
{
    struct od_reports *r = xcalloc(1, sizeof(*r));
    r->workers = workers;
    r->n = n;
    r->have = xcalloc(n ? n : 1, sizeof(*r->have));
    return r;
}

void worker_od_reports_free(struct od_reports *r)
{
    if (r == NULL) {
        return;
    }
    for (uint32_t i = 0; i < r->n; i++) {
        original_dst_report_free(r->have[i]);
    }
    free(r->have);
    free(r);
}

uint64_t worker_od_request(struct od_reports *r)
{
    r->gen++;
    for (uint32_t i = 0; i < r->n; i++) {
        atomic_store_explicit(&r->workers[i]->od_want, r->gen, memory_order_release);
        worker_command(r->workers[i], WORKER_CMD_OD_HOSTS);
    }
    return r->gen;
}

bool worker_od_collect(struct od_reports *r, uint64_t gen, struct od_report *const **out,
                       uint32_t *n)
{
    bool ready = true;
    for (uint32_t i = 0; i < r->n; i++) {
        struct worker *w = r->workers[i];
        struct od_report *got = atomic_exchange_explicit(&w->od_out, NULL, memory_order_acq_rel);
        if (got != NULL) {
            original_dst_report_free(r->have[i]);
            r->have[i] = got;
        }
        bool running = w->thread_started && !atomic_load_explicit(&w->exited, memory_order_acquire);
        if (running && (r->have[i] == NULL || r->have[i]->gen < gen)) {
            ready = false;
        }
    }
    *out = r->have;
    *n = r->n;
    return ready;
}

/* Access logs of `cfg`'s chains (config.chains), chain by chain, with `sinks` (one per log,
 * in that order, borrowed): *logs and *log_first (owned), formats compiled into `a`. Returns
 * how many logs there are. */
static uint32_t logs_init(const struct config *cfg, struct access_log_sink *const *sinks,
                          struct arena *a, struct worker_log **logs_out, uint32_t **first_out)
{
    uint32_t *first = xcalloc(cfg->n_chains + 1, sizeof(*first));
    uint32_t n_logs = 0;
    for (uint32_t i = 0; i < cfg->n_chains; i++) {
        first[i] = n_logs;
        n_logs += chain_n_access_logs(&cfg->chains[i]);
    }
    first[cfg->n_chains] = n_logs;
    struct worker_log *wlogs = xcalloc(n_logs ? n_logs : 1, sizeof(*wlogs));
    uint32_t k = 0;
    for (uint32_t i = 0; i < cfg->n_chains; i++) {
        const struct filter_chain_cfg *fc = &cfg->chains[i];
        const struct access_log_cfg *logs = chain_access_logs(fc);
        for (uint32_t j = 0; j < chain_n_access_logs(fc); j++, k++) {
            struct err err;
            wlogs[k].sink = sinks[k];
            wlogs[k].filter = logs[j].filter;
            buf_init(&wlogs[k].buf);
            int rc =
                logs[j].json != NULL
                    ? access_log_format_compile_json(&wlogs[k].fmt, logs[j].json, logs[j].n_json,
                                                     logs[j].json_typed, a, &err)
                    : access_log_format_compile(&wlogs[k].fmt, logs[j].format, a, &err);
            if (rc != 0) {
                /* validated at config build time; fall back to the default */
                access_log_format_compile(&wlogs[k].fmt, STR_NULL, a, &err);
            }
        }
    }
    *logs_out = wlogs;
    *first_out = first;
    return n_logs;
}

/* ---- LDS listeners (proxy/lds.h) ----
 *
 * main: worker_lds_publish(w, pub) -> w->lds_inbox (a ref), WORKER_CMD_LISTENERS
 * worker: take_listeners(): a listener version of the new set that it does not run yet starts
 *   accepting on its socket for this worker (lds_listener_take_fd); one it runs that is not in
 *   the set is removed: socket closed, sockets in the tls_inspector closed, connections
 *   drained (downstream_drain: connection: close on HTTP/1's next response, GOAWAY on HTTP/2);
 *   its state goes with its last connection (worker_conn_closed). */

static void dl_flush_logs(struct worker_dl *dl)
{
    for (uint32_t i = 0; i < dl->n_logs; i++) {
        if (buf_len(&dl->sc.logs[i].buf) > 0) {
            access_log_flush(dl->sc.logs[i].sink, &dl->sc.logs[i].buf);
        }
    }
}

static void dl_free(struct worker *w, struct worker_dl *dl)
{
    ev_timer_stop(w->loop, &dl->drain_deadline);
    listener_close(w, &dl->wl);
    list_remove(&dl->link);
    dl_flush_logs(dl);
    const struct config *c = lds_listener_cfg(dl->ll);
    for (uint32_t i = 0; i < dl->n_logs; i++) {
        buf_deinit(&dl->sc.logs[i].buf);
    }
    free(dl->sc.logs);
    free(dl->sc.log_first);
    filter_chain_worker_free(dl->sc.filter_wstate, c);
    /* the current route tables of its RDS subscriptions (no stream uses them any more);
     * unread mail is main's to drop when it frees the version */
    for (uint32_t i = 0; i < c->n_rds; i++) {
        worker_routes_release(w, dl->sc.rds[i].cur);
        dl->sc.rds[i].cur = NULL;
    }
    arena_deinit(&dl->arena);
    lds_listener_unref(dl->ll); /* main frees it once no worker holds it */
    free(dl);
}

static void dl_free_deferred(struct deferred *d)
{
    struct worker_dl *dl = LIST_ENTRY(d, struct worker_dl, deferred);
    dl_free(dl->wl.w, dl);
}

static void drain_deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct worker_dl *dl = t->data;
    struct worker *w = dl->wl.w;
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->downstreams)
    {
        struct downstream *d = LIST_ENTRY(it, struct downstream, link);
        if (d->sc == &dl->sc) {
            downstream_close(d, false); /* the last one schedules dl's free */
        }
    }
    /* TCP proxy sessions too (Envoy closes the listener's connections at the drain's end) */
    tcp_proxy_close_scope(w, &dl->sc);
}

static void dl_start(struct worker *w, struct lds_listener *ll)
{
    struct worker_dl *dl = xcalloc(1, sizeof(*dl));
    const struct config *c = lds_listener_cfg(ll);
    lds_listener_ref(ll);
    dl->ll = ll;
    arena_init(&dl->arena, 1024);
    dl->sc.stats = lds_listener_block(ll, w->id);
    dl->n_logs = logs_init(c, lds_listener_sinks(ll), &dl->arena, &dl->sc.logs, &dl->sc.log_first);
    dl->sc.filter_wstate = filter_chain_worker_new(c, w);
    dl->sc.dl = dl;
    dl->sc.rds = lds_listener_rds(ll, w->id);
    struct worker_listener *wl = &dl->wl;
    wl->w = w;
    wl->index = 0;
    wl->l = &c->listeners[0];
    wl->sc = &dl->sc;
    wl->fd = lds_listener_take_fd(ll, w->id);
    ev_io_init(&wl->io, accept_cb, wl->fd, EV_READ);
    wl->io.data = wl;
    ev_timer_init(&wl->resume, resume_cb, ACCEPT_PAUSE_S, 0);
    wl->resume.data = wl;
    ev_timer_init(&dl->drain_deadline, drain_deadline_cb, 0, 0);
    dl->drain_deadline.data = dl;
    list_insert_tail(&w->dls, &dl->link);
    if (w->listening && !w->draining) {
        listener_set(w, wl, true);
    }
}

static void dl_remove(struct worker *w, struct worker_dl *dl)
{
    listener_close(w, &dl->wl);
    tls_inspect_close_listener(w, &dl->wl);
    pp_close_listener(w, &dl->wl);
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->downstreams)
    {
        struct downstream *d = LIST_ENTRY(it, struct downstream, link);
        if (d->sc == &dl->sc) {
            /* HTTP/2: GOAWAY now; HTTP/1: connection: close on its next response (an idle
             * keep-alive connection may still send one, as with Envoy's gradual drain) */
            downstream_drain_soft(d);
        }
    }
    /* What is still open when the drain time is up is closed (Envoy's --drain-time-s). */
    ev_timer_set(&dl->drain_deadline, lds_listener_drain_s(dl->ll), 0);
    ev_timer_start(w->loop, &dl->drain_deadline);
    /* TCP proxy sessions have no request boundary: they run until they end or the deadline
     * closes them. Marked removed only now: connections that closed in the loop above did not
     * schedule the free themselves. */
    dl->removed = true;
    if (dl->n_conns == 0) {
        worker_defer(w, &dl->deferred, dl_free_deferred);
    }
}

static bool pub_has(const struct lds_pub *pub, const struct lds_listener *ll)
{
    uint32_t n = lds_pub_count(pub);
    for (uint32_t i = 0; i < n; i++) {
        if (lds_pub_at(pub, i) == ll) {
            return true;
        }
    }
    return false;
}

static void take_listeners(struct worker *w)
{
    struct lds_pub *pub = atomic_exchange_explicit(&w->lds_inbox, NULL, memory_order_acquire);
    if (pub == NULL) {
        return;
    }
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->dls)
    {
        struct worker_dl *dl = LIST_ENTRY(it, struct worker_dl, link);
        if (!dl->removed && !pub_has(pub, dl->ll)) {
            dl_remove(w, dl);
        }
    }
    uint32_t n = lds_pub_count(pub);
    for (uint32_t i = 0; i < n; i++) {
        struct lds_listener *ll = lds_pub_at(pub, i);
        bool have = false;
        LIST_FOREACH(it, &w->dls)
        {
            struct worker_dl *dl = LIST_ENTRY(it, struct worker_dl, link);
            have = have || (!dl->removed && dl->ll == ll);
        }
        if (!have && !w->draining) {
            dl_start(w, ll);
        }
    }
    lds_pub_unref(w->lds_cur);
    w->lds_cur = pub;
}

/* ---- the whole-server graceful drain (proxy/drain.h) ---- */

void worker_drain_post(struct worker *w, uint64_t word)
{
    atomic_store_explicit(&w->drain_word, word, memory_order_release);
    worker_command(w, WORKER_CMD_DRAIN_STATE);
}

static void take_drain_state(struct worker *w)
{
    bool was_active = w->drain.active;
    drain_word_unpack(atomic_load_explicit(&w->drain_word, memory_order_acquire), &w->drain);
    if (w->drain.active && !was_active) {
        ev_now_update(w->loop);
        w->drain_started = ev_now(w->loop);
    }
    w->drain_on = w->drain.active || w->drain.hc_failed;
}

bool worker_drain_close(struct worker *w, const struct listener_cfg *l)
{
    if (w->drain.hc_failed && !l->drain_modify_only) {
        return true; /* Envoy: a listener of drain_type DEFAULT while health checks fail */
    }
    if (!w->drain.active || (w->drain.inbound_only && !l->inbound)) {
        return false;
    }
    return drain_close_decide(ev_now(w->loop) - w->drain_started, w->drain.drain_time_s,
                              w->drain.strategy, worker_rand(w));
}

void worker_lds_publish(struct worker *w, struct lds_pub *pub)
{
    lds_pub_ref(pub);
    lds_pub_unref(atomic_exchange_explicit(&w->lds_inbox, pub, memory_order_acq_rel));
    worker_command(w, WORKER_CMD_LISTENERS);
}

static void wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct worker *w = a->data;
    uint32_t cmd = atomic_exchange_explicit(&w->cmd, 0, memory_order_acq_rel);
    if (cmd & WORKER_CMD_STOP) {
        close_listeners(w, false);
        w->draining = true;
        close_all(w, false);
        ev_break(w->loop, EVBREAK_ALL);
        return;
    }
    if (cmd & WORKER_CMD_STOP_LISTENING) {
        close_listeners(w, false);
    }
    if (cmd & WORKER_CMD_STOP_INBOUND) {
        close_listeners(w, true);
    }
    if (cmd & WORKER_CMD_DRAIN_STATE) {
        take_drain_state(w);
    }
    if (cmd & WORKER_CMD_ROUTES) {
        take_all_routes(w);
        take_cds(w);
    }
    if (cmd & WORKER_CMD_OD_HOSTS) {
        struct od_report *r =
            original_dst_report(w, atomic_load_explicit(&w->od_want, memory_order_acquire));
        original_dst_report_free(atomic_exchange_explicit(&w->od_out, r, memory_order_acq_rel));
    }
    if (cmd & WORKER_CMD_LISTENERS) {
        take_listeners(w);
    }
    if (cmd & WORKER_CMD_DRAIN) {
        close_listeners(w, false);
        w->draining = true;
        close_all(w, true);
        maybe_exit(w);
    }
}

void worker_command(struct worker *w, uint32_t cmd)
{
    atomic_fetch_or_explicit(&w->cmd, cmd, memory_order_acq_rel);
    ev_async_send(w->loop, &w->wake);
}

struct worker *worker_new(uint32_t id, const struct config *cfg, const int *fds,
                          struct access_log_sink *const *sinks, struct cluster_shared *shared,
                          struct ev_loop *main_loop, ev_async *main_wake)
{
    struct worker *w = xcalloc(1, sizeof(*w));
    w->id = id;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (w->loop == NULL) {
        free(w);
        return NULL;
    }
    w->main_loop = main_loop;
    w->main_wake = main_wake;
    config_ref(cfg);
    w->cfg = cfg;
    arena_init(&w->arena, 4096);
    list_init(&w->downstreams);
    list_init(&w->tcp_sessions);
    list_init(&w->inspecting);
    list_init(&w->pp_waiting);
    slab_init(&w->dc_slab, WORKER_OBJ_ALIGN(sizeof(struct downstream)) + h1_parser_sizeof());
    slab_init(&w->uc_slab, upstream_h1_obj_size());
    blk_cache_init(&w->stream_cache, sizeof(struct stream), STREAM_CACHE_CAP);
    h2_mem_init(&w->h2mem);
    timer_lists_init(&w->timers, w->loop);
    blk_cache_init(&w->h1_arena_cache, arena_cache_block_size(H1_PARSER_ARENA_BLOCK), H1_CACHE_CAP);
    blk_cache_init(&w->h1_head_cache, H1_PARSER_HEAD_BLOCK, H1_CACHE_CAP);
    blk_cache_init(&w->buf_cache, BUF_MIN_CAP, BUF_CACHE_CAP);
    blk_cache_init(&w->stream_arena_cache, arena_cache_block_size(STREAM_ARENA_BLOCK),
                   STREAM_ARENA_CACHE_CAP);
    list_init(&w->deferred);
    list_init(&w->od_dyn);
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != sizeof(seed)) {
        seed = (uint64_t)(uintptr_t)w ^ ((uint64_t)id << 32);
    }
    w->rng = seed | 1;
    w->stats = stats_block_new(cfg);

    w->listeners = xcalloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*w->listeners));
    for (uint32_t i = 0; i < cfg->n_listeners; i++) {
        struct worker_listener *wl = &w->listeners[i];
        wl->w = w;
        wl->index = i;
        wl->l = &cfg->listeners[i];
        wl->sc = &w->boot;
        wl->fd = fds[i];
        ev_io_init(&wl->io, accept_cb, wl->fd, EV_READ);
        wl->io.data = wl;
        ev_timer_init(&wl->resume, resume_cb, ACCEPT_PAUSE_S, 0);
        wl->resume.data = wl;
    }
    w->clusters = xcalloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*w->clusters));
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        cluster_rt_init(&w->clusters[i], &cfg->clusters[i], &w->stats->cluster[i],
                        w->stats->host[i], &shared[i]);
    }

    w->filter_wstate = filter_chain_worker_new(cfg, w);
    w->rds = xcalloc(cfg->n_rds ? cfg->n_rds : 1, sizeof(*w->rds));
    for (uint32_t i = 0; i < cfg->n_rds; i++) {
        atomic_init(&w->rds[i].inbox, NULL);
    }
    atomic_init(&w->cds_inbox, NULL);

    w->n_logs = logs_init(cfg, sinks, &w->arena, &w->logs, &w->log_first);
    w->boot = (struct worker_scope){.stats = w->stats,
                                    .logs = w->logs,
                                    .log_first = w->log_first,
                                    .filter_wstate = w->filter_wstate,
                                    .rds = w->rds};
    list_init(&w->dls);
    atomic_init(&w->lds_inbox, NULL);

    ev_async_init(&w->wake, wake_cb);
    w->wake.data = w;
    ev_async_start(w->loop, &w->wake);
    list_init(&w->h2_flush);
    ev_prepare_init(&w->prepare, prepare_cb);
    w->prepare.data = w;
    ev_prepare_start(w->loop, &w->prepare);
    ev_timer_init(&w->log_timer, log_timer_cb, 1.0, 1.0);
    w->log_timer.data = w;
    ev_timer_start(w->loop, &w->log_timer);
    ev_unref(w->loop); /* the log timer alone does not keep the loop alive */
    return w;
}

static void *thread_main(void *arg)
{
    struct worker *w = arg;
    buf_use_block_cache(&w->buf_cache);
    worker_set_listening(w, true);
    ev_run(w->loop, 0);
    /* Closing: whatever is left goes now. */
    close_listeners(w, false);
    w->draining = true;
    close_all(w, false);
    run_deferred(w);
    flush_logs(w);
    buf_use_block_cache(NULL);
    atomic_store_explicit(&w->exited, true, memory_order_release);
    ev_async_send(w->main_loop, w->main_wake);
    return NULL;
}

int worker_start(struct worker *w)
{
    int rc = pthread_create(&w->thread, NULL, thread_main, w);
    w->thread_started = rc == 0;
    return rc == 0 ? 0 : -rc;
}

void worker_free(struct worker *w)
{
    pthread_join(w->thread, NULL);
    run_deferred(w); /* streams and sessions let go of their endpoints (refs) first */
    for (uint32_t i = 0; i < w->cfg->n_clusters; i++) {
        cluster_rt_deinit(&w->clusters[i]);
    }
    run_deferred(w);
    /* Every stream is gone: only the current tables and unread mail hold references. */
    for (uint32_t i = 0; i < w->cfg->n_rds; i++) {
        worker_routes_release(w, w->rds[i].cur);
        rds_snap_unref(atomic_exchange_explicit(&w->rds[i].inbox, NULL, memory_order_acquire));
    }
    worker_cds_release(w, w->cds_cur);
    cds_worker_boot_dns_free(w, w->cfg); /* bootstrap STRICT_DNS clusters' versions */
    const struct rds_clusters *unread = atomic_exchange(&w->cds_inbox, NULL);
    if (unread != NULL) {
        unread->unref(unread->owner);
    }
    original_dst_report_free(atomic_exchange(&w->od_out, NULL));
    run_deferred(w); /* CDS clusters' state torn down (cds_worker_unpin) */
    while (!list_empty(&w->dls)) {
        dl_free(w, LIST_ENTRY(list_first(&w->dls), struct worker_dl, link));
    }
    run_deferred(w); /* CDS clusters named by LDS listeners' route tables (cds_worker_unpin) */
    lds_pub_unref(w->lds_cur);
    lds_pub_unref(atomic_exchange_explicit(&w->lds_inbox, NULL, memory_order_acquire));
    tracing_worker_free(w);
    free(w->rds);
    slab_deinit(&w->dc_slab);
    slab_deinit(&w->uc_slab);
    trim_caches(w); /* every cached block goes */
    free(w->clusters);
    filter_chain_worker_free(w->filter_wstate, w->cfg);
    for (uint32_t i = 0; i < w->n_logs; i++) {
        buf_deinit(&w->logs[i].buf);
    }
    free(w->logs);
    free(w->log_first);
    free(w->listeners);
    arena_deinit(&w->arena);
    timer_lists_deinit(&w->timers);
    ev_loop_destroy(w->loop);
    /* The stats block outlives nothing that reads it: main stops reading before freeing. */
    stats_block_free(w->stats, w->cfg);
    config_unref(w->cfg);
    free(w);
}
