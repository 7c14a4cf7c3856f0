/* health_check: active health checking on the main thread's loop (see health_check.h). One
 * session per endpoint holds at most one connection and one check in flight; results move the
 * endpoint's HEALTH_F_* bits in cluster_shared, and every move bumps health_gen so workers
 * rebuild their load-balancer view. State transitions, thresholds, intervals and stats follow
 * Envoy's HealthCheckerImplBase (source/extensions/health_checkers/common/); the code is
 * remora's own.
 *
 * Session life:
 *
 *   IDLE --interval--> [CONNECTING --connected-->] SENT --response--> result -> IDLE
 *     ^                      |                       |                              |
 *     |                      +--failed / timeout-----+----> result (network) -------+
 *     +-- (HTTP, reuse_connection, keep-alive: the connection stays open while IDLE; bytes or
 *          EOF on it then just close it, and the next check reconnects) */
#include "proxy/upstream/health_check.h"

#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/headers.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/outlier.h"
#include "proxy/upstream/shared.h"

#define HC_MAX_HEAD 65536
#define HC_MAX_HEADERS 100
#define HC_READ_CHUNK 16384
/* A response body is read and dropped; past this the endpoint is not answering a health check
 * any more, and the check fails. */
#define HC_MAX_BODY (1024 * 1024)

enum hc_state {
    HC_IDLE,       /* between checks (an HTTP connection may stay open) */
    HC_CONNECTING, /* a check is waiting for its connection */
    HC_SENT,       /* an HTTP request is out, its response not complete yet */
};

/* Envoy's HealthCheckFailureType, as far as it matters here. */
enum hc_failure {
    HC_FAIL_ACTIVE,          /* an unexpected status */
    HC_FAIL_NETWORK,         /* connect failure, reset, malformed or truncated response */
    HC_FAIL_NETWORK_TIMEOUT, /* no result within `timeout` */
};

/* Envoy's HealthTransition: did this result change the host's health? */
enum hc_transition {
    HC_UNCHANGED,
    HC_CHANGED,
    HC_CHANGE_PENDING, /* moved towards the other state without reaching it */
};

struct hc_session {
    struct health_check *hc; /* borrowed: the owner */
    uint32_t index;          /* the endpoint's index in the cluster */
    enum hc_state state;
    int fd; /* owned; -1 when there is no connection */
    bool is_connected;
    ev_io io;
    ev_timer interval;        /* until the next check */
    ev_timer timeout;         /* the check in flight */
    struct buf wbuf;          /* owned: request bytes not yet written */
    struct h1_parser *parser; /* owned (HTTP), created on first use */
    int status;               /* the response's status, once its head arrived */
    bool keep_alive;          /* the response allows reusing the connection */
    bool done;                /* the response is complete */
    uint64_t body_bytes;
    bool first_check; /* no result yet */
    uint32_t num_healthy;
    uint32_t num_unhealthy;
    struct tls_conn *tls; /* owned: TLS (the cluster's transport socket), or NULL */
};

struct health_check {
    struct ev_loop *loop; /* borrowed: main's */
    const struct cluster_cfg *cfg;
    const struct health_check_cfg *hcc;
    struct cluster_shared *sh;
    struct stats_block *const *blocks; /* borrowed from main */
    uint32_t n_blocks;
    struct hc_session *sessions; /* owned; [cfg->n_endpoints] */
    uint32_t n;
    uint32_t pending_first; /* sessions still without a first result */
    ev_timer init_timer;    /* reports `initialized` for a cluster with no endpoints */
    void (*initialized)(void *ud);
    void *ud;
    uint64_t rng;
    struct arena arena; /* one request's headers at a time; reset after each encode */
};

bool hc_range_contains(const struct hc_range *r, uint32_t n, int status)
{
    for (uint32_t i = 0; i < n; i++) {
        if (status >= r[i].start && status < r[i].end) {
            return true;
        }
    }
    return false;
}

static uint64_t hc_rand(struct health_check *hc)
{
    uint64_t x = hc->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    hc->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static struct endpoint_shared *ep_shared(struct hc_session *s)
{
    return &s->hc->sh->eps[s->index];
}

static uint32_t bits_of(struct hc_session *s)
{
    return atomic_load_explicit(&ep_shared(s)->health, memory_order_relaxed);
}

static void set_bits(struct hc_session *s, uint32_t set, uint32_t clear)
{
    struct endpoint_shared *es = ep_shared(s);
    if (set) {
        atomic_fetch_or_explicit(&es->health, set, memory_order_relaxed);
    }
    if (clear) {
        atomic_fetch_and_explicit(&es->health, ~clear, memory_order_relaxed);
    }
}

static void publish(struct health_check *hc)
{
    atomic_fetch_add_explicit(&hc->sh->health_gen, 1, memory_order_release);
}

/* Envoy: the cluster "has had traffic" once any upstream connection or byte was counted. Until
 * then checks run at no_traffic_interval. */
static bool has_traffic(const struct health_check *hc)
{
    for (uint32_t w = 0; w < hc->n_blocks; w++) {
        const struct cluster_stats *cs = &hc->blocks[w]->cluster[hc->cfg->index];
        if (stat_get(&cs->upstream_cx_total) || stat_get(&cs->upstream_cx_tx_bytes_total) ||
            stat_get(&cs->upstream_cx_rx_bytes_total)) {
            return true;
        }
    }
    return false;
}

/* The wait before the next check after a result (Envoy's HealthCheckerImplBase::interval). */
static double next_interval_s(struct health_check *hc, bool healthy, enum hc_transition t)
{
    const struct health_check_cfg *c = hc->hcc;
    uint64_t ms;
    if (has_traffic(hc)) {
        if (!healthy) {
            ms = t == HC_CHANGE_PENDING ? c->unhealthy_edge_interval_ms : c->unhealthy_interval_ms;
        } else {
            ms = t == HC_CHANGE_PENDING ? c->healthy_edge_interval_ms : c->interval_ms;
        }
    } else {
        ms = healthy && t != HC_CHANGE_PENDING ? c->no_traffic_healthy_interval_ms
                                               : c->no_traffic_interval_ms;
    }
    uint64_t pct = (uint64_t)c->interval_jitter_percent * ms / 100;
    if (pct > 0) {
        ms += hc_rand(hc) % pct;
    }
    if (c->interval_jitter_ms > 0) {
        ms += hc_rand(hc) % c->interval_jitter_ms;
    }
    if (ms == 0) {
        ms = 1; /* never a busy loop */
    }
    return (double)ms / 1000.0;
}

static void close_conn(struct hc_session *s)
{
    if (s->fd < 0) {
        return;
    }
    ev_io_stop(s->hc->loop, &s->io);
    if (s->tls != NULL) {
        tls_conn_shutdown(s->tls);
        tls_conn_destroy(s->tls);
        s->tls = NULL;
    }
    close(s->fd);
    s->fd = -1;
    s->is_connected = false;
    buf_release(&s->wbuf);
    if (s->parser != NULL) {
        h1_parser_free(s->parser);
        s->parser = NULL;
    }
}

/* The first result of every session is in: the cluster is warm. */
static void first_result(struct hc_session *s)
{
    if (!s->first_check) {
        return;
    }
    s->first_check = false;
    struct health_check *hc = s->hc;
    if (hc->pending_first > 0 && --hc->pending_first == 0 && hc->initialized != NULL) {
        void (*cb)(void *) = hc->initialized;
        hc->initialized = NULL;
        cb(hc->ud);
    }
}

/* The check is over: the connection goes idle (or away), the next check is scheduled. */
static void end_check(struct hc_session *s, bool healthy, enum hc_transition t)
{
    struct health_check *hc = s->hc;
    ev_timer_stop(hc->loop, &s->timeout);
    s->state = HC_IDLE;
    if (s->fd >= 0) {
        /* An idle HTTP connection: watch it only for the peer closing it. */
        ev_io_stop(hc->loop, &s->io);
        ev_io_set(&s->io, s->fd, EV_READ);
        ev_io_start(hc->loop, &s->io);
    }
    ev_timer_set(&s->interval, next_interval_s(hc, healthy, t), 0);
    ev_timer_start(hc->loop, &s->interval);
}

/* A pending flag clears on the first result; that alone counts as a change (Envoy's
 * clearPendingFlag), so the load balancer's exclusions are refreshed. */
static enum hc_transition clear_pending(struct hc_session *s, enum hc_transition t)
{
    if (bits_of(s) & HEALTH_F_PENDING_ACTIVE_HC) {
        set_bits(s, 0, HEALTH_F_PENDING_ACTIVE_HC);
        return HC_CHANGED;
    }
    return t;
}

static void handle_success(struct hc_session *s)
{
    struct health_check *hc = s->hc;
    struct health_check_stats *st = &hc->sh->hc_stats;
    s->num_unhealthy = 0;
    enum hc_transition t = HC_UNCHANGED;
    if (bits_of(s) & HEALTH_F_FAILED_ACTIVE_HC) {
        /* The very first result decides at once: startup does not wait for healthy_threshold
         * passes (Envoy's rule). */
        if (s->first_check || ++s->num_healthy == hc->hcc->healthy_threshold) {
            set_bits(s, 0, HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_ACTIVE_HC_TIMEOUT);
            STAT_INC(st->healthy);
            t = HC_CHANGED;
            LOG(s->first_check ? LOG_DEBUG : LOG_INFO,
                "health check: cluster '%.*s': %.*s is healthy", STR_FMT(hc->cfg->name),
                STR_FMT(hc->cfg->endpoints[s->index].addr.text));
        } else {
            t = HC_CHANGE_PENDING;
        }
    }
    t = clear_pending(s, t);
    STAT_INC(st->success);
    if (t == HC_CHANGED) {
        publish(hc);
    }
    outlier_on_hc_success(hc->sh->od, s->index);
    end_check(s, true, t);
    first_result(s);
}

static void handle_failure(struct hc_session *s, enum hc_failure type, bool retriable)
{
    struct health_check *hc = s->hc;
    struct health_check_stats *st = &hc->sh->hc_stats;
    bool network = type != HC_FAIL_ACTIVE;
    s->num_healthy = 0;
    enum hc_transition t = HC_UNCHANGED;
    if (!(bits_of(s) & HEALTH_F_FAILED_ACTIVE_HC)) {
        /* An unexpected status takes the host out at once; network trouble and retriable
         * statuses need unhealthy_threshold in a row. */
        if ((!network && !retriable) || ++s->num_unhealthy == hc->hcc->unhealthy_threshold) {
            set_bits(s, HEALTH_F_FAILED_ACTIVE_HC, 0);
            STAT_DEC(st->healthy);
            t = HC_CHANGED;
            LOG_I("health check: cluster '%.*s': %.*s is unhealthy (%s)", STR_FMT(hc->cfg->name),
                  STR_FMT(hc->cfg->endpoints[s->index].addr.text),
                  type == HC_FAIL_ACTIVE            ? "unexpected status"
                  : type == HC_FAIL_NETWORK_TIMEOUT ? "timeout"
                                                    : "network failure");
        } else {
            t = HC_CHANGE_PENDING;
        }
    }
    /* /active_hc_timeout marks a host failed by timeouts, and clears on any other result. */
    if (type == HC_FAIL_NETWORK_TIMEOUT && (bits_of(s) & HEALTH_F_FAILED_ACTIVE_HC)) {
        set_bits(s, HEALTH_F_ACTIVE_HC_TIMEOUT, 0);
    } else {
        set_bits(s, 0, HEALTH_F_ACTIVE_HC_TIMEOUT);
    }
    t = clear_pending(s, t);
    STAT_INC(st->failure);
    if (network) {
        STAT_INC(st->network_failure);
    }
    if (t == HC_CHANGED) {
        publish(hc);
    }
    end_check(s, false, t);
    first_result(s);
}

/* ---- the HTTP exchange ---- */

static int on_head(void *ud, struct h1_msg *msg)
{
    struct hc_session *s = ud;
    s->status = msg->status;
    s->keep_alive = msg->keep_alive;
    return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    (void)p;
    struct hc_session *s = ud;
    s->body_bytes += len;
    return s->body_bytes > HC_MAX_BODY ? -1 : 0;
}

static int on_done(void *ud)
{
    struct hc_session *s = ud;
    s->done = true;
    return 0;
}

static const struct h1_parser_cbs hc_parser_cbs = {on_head, on_body, on_done, NULL};

static void encode_request(struct hc_session *s)
{
    struct health_check *hc = s->hc;
    const struct health_check_cfg *c = hc->hcc;
    struct headers h;
    headers_init(&h, &hc->arena, 4 + c->n_headers_add);
    headers_add(&h, STR_LIT("host"), c->host.len > 0 ? c->host : hc->cfg->name);
    headers_add(&h, STR_LIT("user-agent"), STR_LIT("Envoy/HC"));
    for (uint32_t i = 0; i < c->n_headers_remove; i++) {
        headers_remove(&h, c->headers_remove[i]);
    }
    for (uint32_t i = 0; i < c->n_headers_add; i++) {
        const struct header_add *a = &c->headers_add[i];
        switch (a->action) {
        case HA_ADD_IF_ABSENT:
            if (headers_get(&h, a->name) == NULL) {
                headers_add(&h, a->name, a->value);
            }
            break;
        case HA_OVERWRITE_IF_EXISTS_OR_ADD:
            headers_remove(&h, a->name);
            headers_add(&h, a->name, a->value);
            break;
        case HA_APPEND_IF_EXISTS_OR_ADD:
        default:
            headers_add(&h, a->name, a->value);
            break;
        }
    }
    if (!c->reuse_connection) {
        headers_add(&h, STR_LIT("connection"), STR_LIT("close"));
    }
    h1_encode_request_head(&s->wbuf, STR_LIT("GET"), c->path, &h);
    arena_reset(&hc->arena);
}

/* Writes what is queued; returns -1 when the connection failed. */
static int flush(struct hc_session *s)
{
    bool wait_write = false;
    while (buf_len(&s->wbuf) > 0) {
        ssize_t n = s->tls != NULL
                        ? tls_conn_send(s->tls, buf_head(&s->wbuf), buf_len(&s->wbuf))
                        : send(s->fd, buf_head(&s->wbuf), buf_len(&s->wbuf), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&s->wbuf, (size_t)n);
            continue;
        }
        if (s->tls != NULL) {
            if (n == -EAGAIN) {
                wait_write = s->tls->want_write;
                break;
            }
            return -1;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_write = true;
            break;
        }
        return -1;
    }
    int ev = EV_READ | (wait_write ? EV_WRITE : 0);
    ev_io_stop(s->hc->loop, &s->io);
    ev_io_set(&s->io, s->fd, ev);
    ev_io_start(s->hc->loop, &s->io);
    return 0;
}

static void send_request(struct hc_session *s)
{
    if (s->parser == NULL) {
        s->parser = h1_parser_new(H1_RESPONSE, HC_MAX_HEAD, HC_MAX_HEADERS, &hc_parser_cbs, s);
    }
    s->status = 0;
    s->keep_alive = false;
    s->done = false;
    s->body_bytes = 0;
    s->state = HC_SENT;
    encode_request(s);
    if (flush(s) < 0) {
        close_conn(s);
        handle_failure(s, HC_FAIL_NETWORK, false);
    }
}

/* The response is complete: judge it and decide the connection's fate. */
static void response_done(struct hc_session *s)
{
    const struct health_check_cfg *c = s->hc->hcc;
    if (!c->reuse_connection || !s->keep_alive) {
        close_conn(s);
    } else if (s->parser != NULL) {
        h1_parser_release(s->parser);
    }
    if (hc_range_contains(c->expected, c->n_expected, s->status)) {
        handle_success(s);
    } else {
        handle_failure(s, HC_FAIL_ACTIVE,
                       hc_range_contains(c->retriable, c->n_retriable, s->status));
    }
}

static void on_readable(struct hc_session *s)
{
    uint8_t tmp[HC_READ_CHUNK];
    ssize_t n;
    if (s->tls != NULL) {
        n = tls_conn_recv(s->tls, tmp, sizeof(tmp));
        if (n == -EAGAIN) {
            return; /* e.g. a session ticket: no response bytes */
        }
    } else {
        n = recv(s->fd, tmp, sizeof(tmp), 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            return;
        }
    }
    if (s->state != HC_SENT) {
        /* Idle: the peer closed (or sent stray bytes); reconnect at the next check. */
        close_conn(s);
        return;
    }
    if (n <= 0) {
        /* EOF may complete a close-delimited response. */
        if (n == 0 && h1_parser_in_message(s->parser) && h1_parser_eof(s->parser) == 0 && s->done) {
            s->keep_alive = false;
            response_done(s);
            return;
        }
        close_conn(s);
        handle_failure(s, HC_FAIL_NETWORK, false);
        return;
    }
    size_t off = 0;
    while (off < (size_t)n && !s->done) {
        ssize_t used = h1_parser_feed(s->parser, tmp + off, (size_t)n - off);
        if (used < 0) {
            close_conn(s);
            handle_failure(s, HC_FAIL_NETWORK, false);
            return;
        }
        if (used == 0) {
            break;
        }
        off += (size_t)used;
    }
    if (s->done) {
        if (off < (size_t)n) {
            s->keep_alive = false; /* bytes after the response: never reuse */
        }
        response_done(s);
    }
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct hc_session *s = io->data;
    if (s->state == HC_CONNECTING) {
        if (s->tls == NULL) {
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
                close_conn(s);
                handle_failure(s, HC_FAIL_NETWORK, false);
                return;
            }
        }
        if (s->hc->cfg->tls != NULL) {
            /* As Envoy, checks go over the cluster's transport socket: connected (also for
             * a TCP check) means the handshake completed. Main has no ssl.* stats block. */
            const char *why = NULL;
            int r = tls_connect_step(&s->tls, s->hc->cfg->tls, s->fd, NULL, 0, NULL, &why);
            if (r < 0) {
                LOG_D("health check %.*s: %s", STR_FMT(s->hc->cfg->name), why);
                close_conn(s);
                handle_failure(s, HC_FAIL_NETWORK, false);
                return;
            }
            if (r == 0) {
                ev_io_stop(s->hc->loop, &s->io);
                ev_io_set(&s->io, s->fd, tls_conn_wait_events(s->tls));
                ev_io_start(s->hc->loop, &s->io);
                return;
            }
        }
        s->is_connected = true;
        if (s->hc->hcc->kind == HC_TCP) {
            close_conn(s); /* connect-only: connected is the whole check */
            handle_success(s);
            return;
        }
        send_request(s);
        return;
    }
    if ((revents & EV_WRITE) && s->state == HC_SENT) {
        if (flush(s) < 0) {
            close_conn(s);
            handle_failure(s, HC_FAIL_NETWORK, false);
            return;
        }
    }
    if ((revents & EV_READ) && s->fd >= 0) {
        on_readable(s);
    }
}

static void start_connect(struct hc_session *s)
{
    struct health_check *hc = s->hc;
    const struct sock_addr *a = &hc->cfg->endpoints[s->index].addr;
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        LOG_W("health check: socket(): %s", strerror(errno));
        handle_failure(s, HC_FAIL_NETWORK, false);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    s->fd = fd;
    s->state = HC_CONNECTING;
    /* Success or failure is reported through writability, from the loop, also for an
     * immediate ECONNREFUSED on loopback. */
    (void)connect(fd, (const struct sockaddr *)&a->ss, a->len);
    ev_io_set(&s->io, fd, EV_WRITE);
    ev_io_start(hc->loop, &s->io);
}

static void interval_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct hc_session *s = t->data;
    struct health_check *hc = s->hc;
    STAT_INC(hc->sh->hc_stats.attempt);
    ev_timer_set(&s->timeout, (double)hc->hcc->timeout_ms / 1000.0, 0);
    ev_timer_start(loop, &s->timeout);
    if (hc->hcc->kind == HC_HTTP && s->fd >= 0 && s->is_connected && hc->hcc->reuse_connection) {
        send_request(s);
        return;
    }
    close_conn(s);
    start_connect(s);
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct hc_session *s = t->data;
    if (s->state == HC_IDLE) {
        return;
    }
    close_conn(s);
    handle_failure(s, HC_FAIL_NETWORK_TIMEOUT, false);
}

static void init_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct health_check *hc = t->data;
    if (hc->pending_first == 0 && hc->initialized != NULL) {
        void (*cb)(void *) = hc->initialized;
        hc->initialized = NULL;
        cb(hc->ud);
    }
}

struct health_check *health_check_new(struct ev_loop *loop, const struct cluster_cfg *cfg,
                                      struct cluster_shared *sh, struct stats_block *const *blocks,
                                      uint32_t n_blocks, uint64_t seed,
                                      void (*initialized)(void *ud), void *ud)
{
    struct health_check *hc = xcalloc(1, sizeof(*hc));
    hc->loop = loop;
    hc->cfg = cfg;
    hc->hcc = cfg->health_check;
    hc->sh = sh;
    hc->blocks = blocks;
    hc->n_blocks = n_blocks;
    hc->n = cfg->n_endpoints;
    hc->pending_first = hc->n;
    hc->initialized = initialized;
    hc->ud = ud;
    hc->rng = seed | 1;
    arena_init(&hc->arena, 1024);
    hc->sessions = xcalloc(hc->n ? hc->n : 1, sizeof(*hc->sessions));
    /* Envoy: a host under active health checking is out of rotation until it passes once. */
    for (uint32_t i = 0; i < hc->n; i++) {
        atomic_fetch_or_explicit(&sh->eps[i].health,
                                 HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_PENDING_ACTIVE_HC,
                                 memory_order_relaxed);
    }
    publish(hc);
    for (uint32_t i = 0; i < hc->n; i++) {
        struct hc_session *s = &hc->sessions[i];
        s->hc = hc;
        s->index = i;
        s->fd = -1;
        s->first_check = true;
        buf_init(&s->wbuf);
        ev_io_init(&s->io, io_cb, -1, 0);
        s->io.data = s;
        ev_timer_init(&s->timeout, timeout_cb, 0, 0);
        s->timeout.data = s;
        /* The first check right away (from the loop), or within initial_jitter. */
        double first = hc->hcc->initial_jitter_ms > 0
                           ? (double)(hc_rand(hc) % hc->hcc->initial_jitter_ms) / 1000.0
                           : 0;
        ev_timer_init(&s->interval, interval_cb, first, 0);
        s->interval.data = s;
        ev_timer_start(loop, &s->interval);
    }
    ev_timer_init(&hc->init_timer, init_timer_cb, 0, 0);
    hc->init_timer.data = hc;
    if (hc->n == 0) {
        ev_timer_start(loop, &hc->init_timer);
    }
    return hc;
}

void health_check_adopt(struct health_check *hc, uint32_t ep, const struct health_check *from,
                        uint32_t from_ep)
{
    struct hc_session *s = &hc->sessions[ep];
    const struct hc_session *o = &from->sessions[from_ep];
    if (s->first_check && !o->first_check && hc->pending_first > 0) {
        hc->pending_first--;
    }
    s->first_check = o->first_check;
    s->num_healthy = o->num_healthy;
    s->num_unhealthy = o->num_unhealthy;
    const uint32_t mine =
        HEALTH_F_FAILED_ACTIVE_HC | HEALTH_F_PENDING_ACTIVE_HC | HEALTH_F_ACTIVE_HC_TIMEOUT;
    uint32_t bits = atomic_load_explicit((_Atomic uint32_t *)&from->sh->eps[from_ep].health,
                                         memory_order_relaxed);
    atomic_fetch_and_explicit(&hc->sh->eps[ep].health, ~mine, memory_order_relaxed);
    atomic_fetch_or_explicit(&hc->sh->eps[ep].health, bits & mine, memory_order_relaxed);
    /* the next check when the old session would have made it, not at once */
    if (!o->first_check) {
        double next = ev_is_active(&o->interval)
                          ? ev_timer_remaining(from->loop, (ev_timer *)&o->interval)
                          : 0;
        ev_timer_stop(hc->loop, &s->interval);
        ev_timer_set(&s->interval, next, 0);
        ev_timer_start(hc->loop, &s->interval);
    }
    publish(hc);
}

void health_check_free(struct health_check *hc)
{
    if (hc == NULL) {
        return;
    }
    for (uint32_t i = 0; i < hc->n; i++) {
        struct hc_session *s = &hc->sessions[i];
        close_conn(s);
        buf_deinit(&s->wbuf);
        ev_timer_stop(hc->loop, &s->interval);
        ev_timer_stop(hc->loop, &s->timeout);
    }
    ev_timer_stop(hc->loop, &hc->init_timer);
    arena_deinit(&hc->arena);
    free(hc->sessions);
    free(hc);
}
