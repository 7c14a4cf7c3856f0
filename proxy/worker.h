/* worker: one thread, one libev loop, and everything that runs on it: its SO_REUSEPORT
 * listening sockets, downstream connections, streams, per-cluster load-balancer state and
 * upstream connection pools, and its stats block. Nothing here is shared with other workers,
 * so the request path takes no lock and no atomic read-modify-write.
 *
 * The main thread talks to a worker only through `worker_command()` (an atomic bit set plus
 * ev_async_send) and reads its stats block. Thread: each worker's own, unless a function says
 * otherwise. */
#pragma once

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/blkcache.h"
#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/core/slab.h"
#include "proxy/core/timer_list.h"
#include "proxy/drain.h"
#include "proxy/http/h2_mem.h"
#include "proxy/http/access_log.h"

struct config;
struct stats_block;
struct cluster_rt;
struct tracing_worker;
struct cluster_shared;
struct access_log_sink;
struct od_report;

/* Commands from the main thread, as bits in worker.cmd. */
enum {
    WORKER_CMD_DRAIN = 1u << 0,          /* stop accepting; close connections when idle */
    WORKER_CMD_STOP = 1u << 1,           /* close everything and exit now */
    WORKER_CMD_STOP_LISTENING = 1u << 2, /* close listeners only (/drain_listeners) */
    WORKER_CMD_ROUTES = 1u << 3,         /* a route table was published (worker_routes_publish) */
    WORKER_CMD_OD_HOSTS = 1u << 4,       /* report ORIGINAL_DST hosts (worker_od_request) */
    WORKER_CMD_LISTENERS = 1u << 5,      /* a listener set was published (worker_lds_publish) */
    WORKER_CMD_DRAIN_STATE = 1u << 6,    /* a new graceful drain state (worker_drain_post) */
    WORKER_CMD_STOP_INBOUND = 1u << 7,   /* close the INBOUND listeners only (?inboundonly) */
};

struct route_snap;
struct route_table;
struct hcm_cfg;

/* A worker's hold on one route table received over RDS (proxy/config/rds.h), shared by the
 * streams that routed with it. Plain counts: only the owning worker touches it. */
struct route_pin {
    const struct route_snap *snap; /* ref on its container */
    uint32_t users;                /* streams routed with it, +1 while it is the current one */
};

/* One RDS subscription (config.rds[i]) as seen by a worker. */
struct worker_rds {
    /* Main's mailbox: the newest published table, with one reference for this worker, or
     * NULL. Main swaps a newer one in (dropping the unread one); the worker swaps it out. */
    _Atomic(const struct route_snap *) inbox;
    struct route_pin *cur; /* owned (by its count); NULL: the bootstrap's hcm->routes */
};

/* A worker's hold on one CDS cluster set (proxy/cds.h, as rds_clusters), for tcp_proxy's
 * clusters named by name only: shared by the TCP sessions that found their cluster in it. */
struct rds_clusters;
struct cds_pin {
    const struct rds_clusters *set; /* ref on set->owner */
    uint32_t users;                 /* sessions, +1 while it is the current one */
};

/* One access log of one listener, as this worker writes it. */
struct worker_log {
    struct access_log_sink *sink;   /* borrowed from main, shared by all workers */
    struct al_format fmt;           /* compiled into worker.arena */
    const struct al_filter *filter; /* borrowed from the snapshot: log only what passes; NULL */
    struct buf buf;                 /* owned: lines not yet written */
};

struct worker_scope;

struct worker_listener {
    struct worker *w;             /* borrowed: the owner */
    uint32_t index;               /* into its config's listeners (0 for an LDS listener) */
    const struct listener_cfg *l; /* borrowed: its config */
    struct worker_scope *sc;      /* borrowed: whose stats, logs and filter state it uses */
    int fd;                       /* owned; -1 once closed */
    ev_io io;
    ev_timer resume; /* restarts accepting after EMFILE/ENFILE */
};

/* A deferred free: embed this in an object and call worker_defer() instead of freeing it
 * inside one of its own callbacks (STYLE rule 16). */
struct deferred {
    struct list link;
    void (*free_fn)(struct deferred *d);
};

struct worker_dl;

/* What a connection's listener indexes by its config's listener, chain and filter-stat numbers:
 * the worker's own blocks for the bootstrap's listeners (worker.boot), or, for a listener from
 * LDS (proxy/lds.h), that listener version's own. Connections keep a pointer to theirs (set at
 * accept), so the request path pays one load where it read the worker's field before. */
struct worker_scope {
    struct stats_block *stats; /* listener[], hcm[], tcp[] and ext[] by the config's indices */
    struct worker_log *logs;
    uint32_t *log_first;  /* [n_chains + 1] */
    void **filter_wstate; /* [n_filter_slots] */
    struct worker_dl *dl; /* the LDS listener on this worker, or NULL (the bootstrap's) */
    /* RDS mailboxes by the config's rds_index: worker.rds (the bootstrap's), or the LDS
     * version's for this worker (lds_listener_rds: main posts there, the worker takes) */
    struct worker_rds *rds;
};

/* One LDS listener version on one worker (worker.c): its socket, its scope, its connections. */
struct lds_listener;
struct worker_dl {
    struct list link;        /* worker.dls */
    struct lds_listener *ll; /* a reference (proxy/lds.h) */
    struct worker_scope sc;  /* stats: ll's block for this worker; logs and filter state: owned */
    struct worker_listener wl;
    uint32_t n_logs;
    struct arena arena; /* compiled log formats */
    uint64_t n_conns;   /* connections accepted on it and still open */
    struct deferred deferred;
    ev_timer drain_deadline; /* once removed: closes what is left after the drain time */
    bool removed;            /* no longer in the published set: socket closed, connections drain */
};

struct lds_pub;

struct worker {
    uint32_t id;
    uint64_t n_conn_ids;  /* downstream connections accepted: worker_conn_id() */
    struct ev_loop *loop; /* owned */
    pthread_t thread;
    ev_async wake;             /* main -> worker commands */
    _Atomic uint32_t cmd;      /* WORKER_CMD_* bits set by main, cleared by the worker */
    _Atomic bool exited;       /* set by the worker when its loop ends */
    bool thread_started;       /* main: worker_start succeeded */
    ev_async *main_wake;       /* borrowed: main's watcher, poked when the worker exits */
    struct ev_loop *main_loop; /* borrowed: main's loop, for main_wake */

    const struct config *cfg;          /* ref */
    struct stats_block *stats;         /* owned */
    struct worker_listener *listeners; /* owned; [cfg->n_listeners] */
    struct cluster_rt *clusters;       /* owned; [cfg->n_clusters] */
    struct worker_log *logs;           /* owned; [n_logs], listener-major */
    struct worker_rds *rds;            /* owned; [cfg->n_rds] */
    /* cfg->tcp_cds: main's mailbox for the newest CDS set (a ref), and the current one */
    _Atomic(const struct rds_clusters *) cds_inbox;
    struct cds_pin *cds_cur;
    /* /clusters' ORIGINAL_DST hosts: the request main wants answered, and the answer */
    _Atomic uint64_t od_want;
    _Atomic(struct od_report *) od_out;
    /* owned; [cfg->n_filter_slots]: HTTP filters' per-worker state (filter_chain.h) */
    void **filter_wstate;
    uint32_t n_logs;
    uint32_t *log_first;      /* owned; [cfg->n_chains + 1]: filter chain i's logs are
                               * logs[log_first[i] .. log_first[i+1]) */
    ev_timer log_timer;       /* flushes log buffers once a second */
    struct arena arena;       /* worker-lifetime allocations (compiled log formats) */
    struct worker_scope boot; /* stats, logs, log_first, filter_wstate above, as a scope */
    /* LDS (proxy/lds.h): main's mailbox (the newest published set, a reference, or NULL),
     * the set in force and the listeners this worker runs (removed ones while they drain) */
    _Atomic(struct lds_pub *) lds_inbox;
    struct lds_pub *lds_cur;
    struct list dls; /* struct worker_dl.link */

    struct list downstreams;  /* struct downstream.link: open downstream connections */
    struct list tcp_sessions; /* struct tcp_session.link: open TCP proxy sessions */
    struct list inspecting;   /* accepted sockets waiting in the tls_inspector */
    struct list pp_waiting;   /* accepted sockets waiting for their PROXY header */
    struct list deferred;     /* objects freed after the current callbacks unwind */
    struct list od_dyn;       /* cluster_rt.od_link: CDS ORIGINAL_DST clusters set up here
                               * (cds_worker_pin), swept with the bootstrap's each second */
    /* HTTP/2 connections with frames to send (downstream_h2.c): flushed together once this
     * loop iteration's callbacks are done, so the responses that completed in one iteration
     * leave a connection in one write. */
    struct list h2_flush;
    ev_prepare prepare; /* before each poll: h2_flush, deferred, the trim after a burst */
    bool draining;
    bool listening;
    /* a graceful drain runs or the server fails health checks (drain below): the only thing a
     * response reads when neither is the case */
    bool drain_on;
    uint64_t rng;                   /* xorshift state, for LB picks and request ids */
    struct tracing_worker *tracing; /* owned, or NULL: proxy/tracing/tracing.h reporters */
    uint64_t n_conns;               /* downstream connections open */
    char date[40];                  /* IMF-fixdate of date_sec, for Date headers */
    /* Socket reads land here first; a connection copies out only the bytes its parser could
     * not consume yet. Valid only within one read callback (parsing never reads a socket, so
     * no read's bytes are overwritten while being parsed). */
    uint8_t scratch[65536];
    struct slab dc_slab; /* struct downstream + its request parser */
    struct slab uc_slab; /* struct upstream + its response parser */
    /* freed streams and stream arena blocks kept for the next requests (bounded) */
    struct blk_cache stream_cache;
    struct blk_cache stream_arena_cache;
    struct blk_cache h1_arena_cache; /* HTTP/1 parsers' blocks (h1_parser_use_caches) */
    struct blk_cache h1_head_cache;
    struct blk_cache buf_cache; /* connections' first buffer blocks (buf_use_block_cache) */
    struct h2_mem h2mem;        /* what this worker's nghttp2 sessions allocate from */
    struct timer_lists timers;  /* streams' timeouts of repeated durations (timer_list.h) */
    uint64_t n_streams;         /* streams created (the caches above are emptied after a */
    uint64_t n_streams_at_tick; /* second without a new one: log_timer_cb) */
    uint32_t n_live;            /* streams not yet freed */
    uint32_t live_peak;         /* the most at once since the last trim after a burst */
    bool burst_ended;           /* n_live fell to 0 after a burst: trim before the next poll */
    double burst_trim_at;       /* when the last trim after a burst ran (ev_now) */
    int64_t date_sec;

    /* The whole-server graceful drain (proxy/drain.h): main's word (worker_drain_post) and this
     * worker's copy (drain_on, with the fields a response reads, is up with them). */
    _Atomic uint64_t drain_word;
    struct drain_state drain; /* unpacked from drain_word */
    double drain_started;     /* ev_now when this worker learnt of the drain */
};

/* Size of a connection object's own struct, rounded so its parser can follow it. */
#define WORKER_OBJ_ALIGN(n) (((n) + 15) & ~(size_t)15)

void worker_defer(struct worker *w, struct deferred *d, void (*free_fn)(struct deferred *d));

/* Creates a worker for `cfg` (takes a reference) with already-bound listening sockets
 * `fds[cfg->n_listeners]` (takes them). Thread: main. */
/* `sinks` holds one sink per access log, listener-major (listener 0's logs first), and
 * `shared` one cluster_shared per cluster; the worker borrows both. */
struct worker *worker_new(uint32_t id, const struct config *cfg, const int *fds,
                          struct access_log_sink *const *sinks, struct cluster_shared *shared,
                          struct ev_loop *main_loop, ev_async *main_wake);

/* Starts the worker's thread. Returns 0 or -errno. Thread: main. */
int worker_start(struct worker *w);

/* Posts a command (WORKER_CMD_*). Thread-safe. */
void worker_command(struct worker *w, uint32_t cmd);

/* Joins the thread and frees the worker. Thread: main, after worker.exited is set. */
void worker_free(struct worker *w);

/* A pseudo-random 64-bit value from the worker's own generator. */
uint64_t worker_rand(struct worker *w);

/* A new downstream connection's id (%CONNECTION_ID%), unique in the process without atomics:
 * this worker's count of them times 256 plus its id. Thread: `w`'s. */
static inline uint64_t worker_conn_id(struct worker *w)
{
    return ++w->n_conn_ids * 256 + (w->id & 0xff);
}

/* The current time as an HTTP Date value, rendered at most once a second. */
struct str worker_http_date(struct worker *w);

/* Hands worker `w` graceful drain state `word` (drain_word_pack) and wakes it: from then on
 * each response asks worker_drain_close whether its connection is told to close. Thread: main. */
void worker_drain_post(struct worker *w, uint64_t word);

struct listener_cfg;

/* Whether a response on a connection of listener `l` closes it (HTTP/1.1: connection: close;
 * HTTP/2: GOAWAY), by Envoy's drain manager rules (drain.h); call only when w->drain_on. */
bool worker_drain_close(struct worker *w, const struct listener_cfg *l);

/* Starts or stops accepting on all listeners. */
void worker_set_listening(struct worker *w, bool on);

/* Called when a stream is freed (stream.c). When the last of a burst goes (WORKER_BURST_STREAMS
 * or more at once), the worker gives the burst's memory back before it next waits for events:
 * its caches to malloc, and free heap pages to the system (malloc_trim); at most once a
 * second. */
#define WORKER_BURST_STREAMS 256
static inline void worker_stream_freed(struct worker *w)
{
    if (--w->n_live == 0 && w->live_peak >= WORKER_BURST_STREAMS) {
        w->burst_ended = true;
    }
}

struct accepted;
struct chain_tls;

/* Chooses the filter chain of listener `lidx` for accepted socket `a` (`tls`: what the
 * tls_inspector found, or NULL) and hands it to the chain's network filter; closes it when no
 * chain takes it (listener.<a>.no_filter_chain_match). */
void worker_accept_chain(struct worker *w, const struct worker_listener *wl, struct accepted *a,
                         const struct chain_tls *tls);

/* Called when a downstream connection accepted through scope `sc` closes: a draining worker
 * exits when none are left, and a removed LDS listener goes with its last connection. */
void worker_conn_closed(struct worker *w, struct worker_scope *sc);

/* Hands LDS set `pub` to worker `w` (takes a new reference for it; an unread older one is
 * dropped) and wakes it: it starts accepting on the listeners that are new to it, closes the
 * sockets of those that are gone and drains their connections (proxy/lds.h). Thread: main. */
void worker_lds_publish(struct worker *w, struct lds_pub *pub);

/* ---- route tables that change at run time (RDS; docs/architecture.md "Config updates") ----
 *
 *   main: worker_routes_publish(w, i, snap)  -> w->rds[i].inbox (a ref), WORKER_CMD_ROUTES
 *   worker, on that command or at the next request, whichever comes first:
 *         inbox -> a new route_pin, which becomes w->rds[i].cur (the old one loses its +1)
 *   stream: worker_routes_acquire() at routing (users++) ... worker_routes_release() when the
 *         stream is freed (users--); the last user drops the table's reference.
 * So a request routes on the newest table the worker has, including the next request of a
 * keep-alive or HTTP/2 connection, and a stream keeps the table it routed with to its end. */

/* Hands route table `snap` of RDS subscription `idx` to worker `w` (takes a new reference for
 * it; a table published earlier and not yet taken is dropped). Thread: main. */
void worker_routes_publish(struct worker *w, uint32_t idx, const struct route_snap *snap);

/* The same for a mailbox that is not the bootstrap's (an LDS listener version's subscription,
 * lds_listener_rds): takes a reference for the worker and swaps it into `box`; `w` (NULL while
 * the workers are being made) is woken with WORKER_CMD_ROUTES. Thread: main. */
void worker_routes_post(struct worker *w, struct worker_rds *box, const struct route_snap *snap);

/* The route table a new request on connection manager `hcm` routes with. For an RDS connection
 * manager, *pin receives the hold to give back with worker_routes_release() once the stream is
 * done with every pointer into the table (NULL when the bootstrap's own table is used, which
 * the worker's snapshot reference keeps alive). Costs one relaxed load when nothing changed. */
const struct route_table *worker_routes_acquire(struct worker *w, const struct hcm_cfg *hcm,
                                                struct route_pin **pin);
/* worker_routes_acquire with the mailboxes of the connection's scope (worker_scope.rds): an
 * LDS listener's connection managers number their subscriptions in their own config. */
const struct route_table *worker_routes_acquire_in(struct worker *w, struct worker_rds *rds,
                                                   const struct hcm_cfg *hcm,
                                                   struct route_pin **pin);

/* Gives back a hold from worker_routes_acquire (NULL is fine). */
void worker_routes_release(struct worker *w, struct route_pin *pin);

/* ---- CDS clusters for tcp_proxy (config.tcp_cds): the same mailbox scheme for the set ---- */

/* Hands CDS set `set` to worker `w` (a new reference for it; NULL: none). Thread: main. */
void worker_cds_publish(struct worker *w, const struct rds_clusters *set);

/* The cluster named `name` in the newest CDS set the worker has (the bootstrap's clusters are
 * in its map too), or NULL; when found, *pin receives the hold (worker_cds_release) that keeps
 * the cluster and its worker state alive. One relaxed load, one hash lookup. */
struct cluster_cfg;
const struct cluster_cfg *worker_cds_find(struct worker *w, struct str name, struct cds_pin **pin);
void worker_cds_release(struct worker *w, struct cds_pin *pin);

/* ---- ORIGINAL_DST hosts for /clusters (upstream/original_dst.h): main asks, each worker
 * answers with a copy of its hosts (no lock: the copy is handed over by an atomic exchange) ---- */

/* Main's side: the last report taken from each worker. Thread: main. */
struct od_reports;
struct od_reports *worker_od_reports_new(struct worker *const *workers, uint32_t n);
void worker_od_reports_free(struct od_reports *r);

/* Asks every worker for a report; returns the request's generation. */
uint64_t worker_od_request(struct od_reports *r);

/* Takes the reports the workers have made; true when every running worker has answered
 * generation `gen` (a worker not started or gone is not waited for). `*out` holds the last
 * report of each worker ([*n]; NULL: none yet), valid until the next call. */
bool worker_od_collect(struct od_reports *r, uint64_t gen, struct od_report *const **out,
                       uint32_t *n);
