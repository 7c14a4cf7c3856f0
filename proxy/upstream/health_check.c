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
 *          EOF on it then just close it, and the next check reconnects)
 *
 * HTTP/2 and gRPC checks: one nghttp2 client session per connection, created once it is
 * connected (after the TLS handshake, ALPN h2 offered), one stream per check. nghttp2 is fed
 * from the socket and drained into wbuf (mem_recv / mem_send, as upstream_h2.c); its callbacks
 * only record what they see in `reply` (hc_h2.h): the check is judged, and the connection
 * perhaps closed, after mem_recv returned, never from inside it. An idle HTTP/2 connection keeps
 * its session (PINGs and SETTINGS are answered); a GOAWAY, EOF or error on it closes it. */
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

#include <nghttp2/nghttp2.h>

#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/grpc_msg.h"
#include "proxy/http/headers.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/hc_h2.h"
#include "proxy/upstream/outlier.h"
#include "proxy/upstream/shared.h"

#define HC_MAX_HEAD 65536
#define HC_MAX_HEADERS 100
#define HC_READ_CHUNK 16384
/* A response body is read and dropped; past this the endpoint is not answering a health check
 * any more, and the check fails. */
#define HC_MAX_BODY (1024 * 1024)
/* A HealthCheckResponse is 2 bytes; a message announcing more than this is refused from its
 * prefix (grpc_msg.h), before anything is buffered. */
#define HC_GRPC_MAX_MSG 1024
/* Headers of an HTTP/2 check request: pseudo-headers, user-agent, content-type, te. */
#define HC_H2_FIXED_HEADERS 8

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
    HC_FAIL_PASSIVE,         /* x-envoy-immediate-health-check-fail on a routed response */
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
    bool svc_seen;            /* x-envoy-upstream-healthchecked-cluster was in the response */
    bool svc_ok;              /* ... and matched service_name_matcher */
    uint64_t body_bytes;
    bool first_check; /* no result yet */
    uint32_t num_healthy;
    uint32_t num_unhealthy;
    struct tls_conn *tls; /* owned: TLS (the cluster's transport socket), or NULL */
    /* HTTP/2 and gRPC */
    nghttp2_session *h2;         /* owned, with the connection; NULL before it is connected */
    int32_t stream_id;           /* the check's stream; 0 when none is open */
    bool h2_closed;              /* the check's stream closed: its reply is all there is */
    bool h2_abort;               /* the reply is judged already (a bad head or message) */
    bool goaway;                 /* the peer sent GOAWAY: close once the check is over */
    struct hc_h2_reply reply;    /* what the check's stream brought */
    struct grpc_msg_reader grpc; /* gRPC: the response message, bounded by HC_GRPC_MAX_MSG */
    struct buf req_body;         /* gRPC: the request message not yet given to nghttp2 */
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
    return rand_next(&hc->rng);
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
    buf_deinit(&s->wbuf); /* unsent bytes belong to this connection, never to the next */
    if (s->parser != NULL) {
        h1_parser_free(s->parser);
        s->parser = NULL;
    }
    if (s->h2 != NULL) {
        nghttp2_session_del(s->h2);
        s->h2 = NULL;
    }
    s->stream_id = 0;
    s->goaway = false;
    grpc_msg_reader_reset(&s->grpc);
    buf_deinit(&s->req_body);
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

/* A failure's effect on the host (Envoy's setUnhealthy): returns the transition. */
static enum hc_transition set_unhealthy(struct hc_session *s, enum hc_failure type, bool retriable)
{
    struct health_check *hc = s->hc;
    struct health_check_stats *st = &hc->sh->hc_stats;
    bool network = type == HC_FAIL_NETWORK || type == HC_FAIL_NETWORK_TIMEOUT;
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
                  : type == HC_FAIL_PASSIVE         ? "x-envoy-immediate-health-check-fail"
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
    return clear_pending(s, t);
}

static void handle_failure(struct hc_session *s, enum hc_failure type, bool retriable)
{
    struct health_check *hc = s->hc;
    struct health_check_stats *st = &hc->sh->hc_stats;
    enum hc_transition t = set_unhealthy(s, type, retriable);
    STAT_INC(st->failure);
    if (type != HC_FAIL_ACTIVE) {
        STAT_INC(st->network_failure);
    }
    if (t == HC_CHANGED) {
        publish(hc);
    }
    end_check(s, false, t);
    first_result(s);
}

/* ---- passive failures (x-envoy-immediate-health-check-fail) ---- */

void health_check_immediate_fail(struct cluster_shared *sh, struct endpoint_shared *es)
{
    if (!atomic_load_explicit(&sh->hc_armed, memory_order_acquire)) {
        return; /* no health checker (Envoy's null host monitor) */
    }
    atomic_fetch_add_explicit(&es->hc_passive, 1, memory_order_relaxed);
    atomic_store_explicit(&sh->hc_pending, 1, memory_order_release);
    ev_async_send(sh->hc_loop, &sh->hc_wake);
}

/* Main: the failures workers posted. Each counts (failure, passive_failure), as Envoy posts one
 * setUnhealthy(PASSIVE) per response; the host goes out at the first. The session's check
 * schedule is not touched (Envoy's neither). */
static void passive_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)revents;
    struct health_check *hc = a->data;
    struct health_check_stats *st = &hc->sh->hc_stats;
    if (!atomic_exchange_explicit(&hc->sh->hc_pending, 0, memory_order_acquire)) {
        return;
    }
    bool changed = false;
    for (uint32_t i = 0; i < hc->n; i++) {
        uint32_t k = atomic_exchange_explicit(&hc->sh->eps[i].hc_passive, 0, memory_order_relaxed);
        if (k == 0) {
            continue;
        }
        changed |= set_unhealthy(&hc->sessions[i], HC_FAIL_PASSIVE, false) == HC_CHANGED;
        stat_add(&st->failure, k);
        stat_add(&st->passive_failure, k);
    }
    if (changed) {
        publish(hc);
    }
}

/* ---- the HTTP exchange ---- */

/* x-envoy-upstream-healthchecked-cluster's value `v` of the response (service_name_matcher). */
static void saw_service_name(struct hc_session *s, struct str v)
{
    if (s->hc->hcc->service_name != NULL) {
        s->svc_seen = true;
        s->svc_ok = str_match_test(s->hc->hcc->service_name, v);
    }
}

/* Envoy's verify_cluster step, for a response whose status is expected: false when the
 * service name does not match (the check fails as an unexpected status does). */
static bool verify_cluster(struct hc_session *s)
{
    const struct str_match *m = s->hc->hcc->service_name;
    if (m == NULL) {
        return true;
    }
    STAT_INC(s->hc->sh->hc_stats.verify_cluster);
    return s->svc_seen ? s->svc_ok : str_match_test(m, STR_LIT(""));
}

static int on_head(void *ud, struct h1_msg *msg)
{
    struct hc_session *s = ud;
    s->status = msg->status;
    s->keep_alive = msg->keep_alive;
    if (s->hc->hcc->service_name != NULL) {
        const struct header *h =
            headers_get(&msg->headers, STR_LIT("x-envoy-upstream-healthchecked-cluster"));
        if (h != NULL) {
            saw_service_name(s, h->value);
        }
    }
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

/* Host or :authority: the endpoint's health_check_config.hostname, else the check's `host`
 * (gRPC: `authority`), else the cluster's name (Envoy's HealthCheckerImplBase getHostname). */
static struct str check_host(const struct hc_session *s)
{
    const struct health_check *hc = s->hc;
    const struct endpoint_cfg *ep = &hc->cfg->endpoints[s->index];
    if (ep->hc_host.len > 0) {
        return ep->hc_host;
    }
    return hc->hcc->host.len > 0 ? hc->hcc->host : hc->cfg->name;
}

/* The request's headers after Envoy's edits: Host (HTTP/1.1 only; HTTP/2 sends :authority),
 * user-agent, then request_headers_to_remove and request_headers_to_add (gRPC:
 * initial_metadata). In hc->arena until the caller resets it. */
static void check_headers(struct hc_session *s, struct headers *h, bool with_host)
{
    struct health_check *hc = s->hc;
    const struct health_check_cfg *c = hc->hcc;
    headers_init(h, &hc->arena, 4 + c->n_headers_add);
    if (with_host) {
        headers_add(h, STR_LIT("host"), check_host(s));
    }
    headers_add(h, STR_LIT("user-agent"), STR_LIT("Envoy/HC"));
    for (uint32_t i = 0; i < c->n_headers_remove; i++) {
        headers_remove(h, c->headers_remove[i]);
    }
    for (uint32_t i = 0; i < c->n_headers_add; i++) {
        const struct header_add *a = &c->headers_add[i];
        switch (a->action) {
        case HA_ADD_IF_ABSENT:
            if (headers_get(h, a->name) == NULL) {
                headers_add(h, a->name, a->value);
            }
            break;
        case HA_OVERWRITE_IF_EXISTS_OR_ADD:
            headers_remove(h, a->name);
            headers_add(h, a->name, a->value);
            break;
        case HA_APPEND_IF_EXISTS_OR_ADD:
        default:
            headers_add(h, a->name, a->value);
            break;
        }
    }
}

static void encode_request(struct hc_session *s)
{
    struct health_check *hc = s->hc;
    const struct health_check_cfg *c = hc->hcc;
    struct headers h;
    check_headers(s, &h, true);
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

/* ---- the HTTP/2 and gRPC exchange ---- */

static bool is_grpc_ct(const uint8_t *v, size_t n)
{
    static const char ct[] = "application/grpc";
    size_t l = sizeof(ct) - 1;
    return n >= l && memcmp(v, ct, l) == 0 && (n == l || v[l] == '+' || v[l] == ';');
}

static int h2_on_header(nghttp2_session *sess, const nghttp2_frame *frame, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    (void)sess;
    (void)flags;
    struct hc_session *s = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != s->stream_id) {
        return 0;
    }
    struct str n = {(const char *)name, namelen};
    if (str_eq_lit(n, ":status")) {
        /* nghttp2 checked it is 3 digits; a later (final) head replaces a 1xx one */
        s->reply.status =
            valuelen == 3 ? (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0') : 0;
    } else if (str_eq_lit(n, "content-type") && frame->headers.cat != NGHTTP2_HCAT_HEADERS) {
        s->reply.grpc_ct = is_grpc_ct(value, valuelen);
    } else if (str_eq_lit(n, "x-envoy-upstream-healthchecked-cluster") &&
               frame->headers.cat != NGHTTP2_HCAT_HEADERS) {
        saw_service_name(s, (struct str){(const char *)value, valuelen});
    } else if (str_eq_lit(n, "grpc-status")) {
        int v = hc_grpc_status_value(value, valuelen);
        s->reply.grpc_status = v >= 0 ? v : 2; /* not a number: UNKNOWN */
    }
    return 0;
}

static int on_grpc_msg(void *arg, const uint8_t *msg, size_t len)
{
    struct hc_session *s = arg;
    int status;
    /* grpc.health.v1.Health/Check is unary: a second message is a protocol error (Envoy) */
    if (s->reply.serving >= 0 || hc_grpc_decode_response(msg, len, &status) < 0) {
        s->reply.bad_message = true;
        return -1;
    }
    s->reply.serving = status;
    return 0;
}

static int h2_on_data(nghttp2_session *sess, uint8_t flags, int32_t stream_id, const uint8_t *p,
                      size_t len, void *ud)
{
    (void)sess;
    (void)flags;
    struct hc_session *s = ud;
    if (stream_id != s->stream_id || s->h2_abort) {
        return 0;
    }
    if (s->hc->hcc->kind == HC_GRPC) {
        if (grpc_msg_feed(&s->grpc, p, len, on_grpc_msg, s) != GRPC_MSG_OK) {
            s->reply.bad_message = true; /* too large, compressed, or undecodable */
            s->h2_abort = true;
        }
        return 0;
    }
    s->body_bytes += len;
    if (s->body_bytes > HC_MAX_BODY) {
        s->reply.body_too_large = true;
        s->h2_abort = true;
    }
    return 0;
}

static int h2_on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame, void *ud)
{
    (void)sess;
    struct hc_session *s = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        s->goaway = true;
        return 0;
    }
    if (frame->hd.stream_id == 0 || frame->hd.stream_id != s->stream_id) {
        return 0;
    }
    if (frame->hd.type == NGHTTP2_HEADERS && s->hc->hcc->kind == HC_GRPC &&
        frame->headers.cat == NGHTTP2_HCAT_RESPONSE && s->reply.status >= 200 &&
        (s->reply.status != 200 || !s->reply.grpc_ct)) {
        s->h2_abort = true; /* Envoy judges a gRPC check by a non-200 or non-gRPC head at once */
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        if (s->hc->hcc->kind == HC_GRPC && grpc_msg_partial(&s->grpc)) {
            s->reply.bad_message = true; /* the stream ended inside a message */
        }
        s->reply.ended = true;
    }
    return 0;
}

static int h2_on_stream_close(nghttp2_session *sess, int32_t stream_id, uint32_t error_code,
                              void *ud)
{
    (void)sess;
    (void)error_code; /* the reply ended (END_STREAM) or it did not: that is what counts */
    struct hc_session *s = ud;
    if (stream_id == s->stream_id) {
        s->h2_closed = true;
    }
    return 0;
}

static ssize_t h2_read_body(nghttp2_session *sess, int32_t stream_id, uint8_t *p, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)sess;
    (void)stream_id;
    (void)src;
    struct hc_session *s = ud;
    size_t n = buf_len(&s->req_body) < len ? buf_len(&s->req_body) : len;
    memcpy(p, buf_head(&s->req_body), n);
    buf_consume(&s->req_body, n);
    if (buf_len(&s->req_body) == 0) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

static void h2_session_new(struct hc_session *s)
{
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0) {
        abort(); /* allocation failures abort (STYLE 10) */
    }
    nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
    nghttp2_option *opt;
    if (nghttp2_option_new(&opt) != 0) {
        abort();
    }
    nghttp2_option_set_no_closed_streams(opt, 1);
    if (nghttp2_session_client_new2(&s->h2, cbs, s, opt) != 0) {
        abort();
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[1] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(s->h2, NGHTTP2_FLAG_NONE, iv, 1);
}

/* Moves what nghttp2 has to send into wbuf and writes it; -1 when the connection failed. */
static int h2_pump(struct hc_session *s)
{
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(s->h2, &data);
        if (n < 0) {
            LOG_D("health check %.*s: nghttp2: %s", STR_FMT(s->hc->cfg->name),
                  nghttp2_strerror((int)n));
            return -1;
        }
        if (n == 0) {
            break;
        }
        buf_append(&s->wbuf, data, (size_t)n);
    }
    return flush(s);
}

/* Connection-specific headers have no place in HTTP/2 (RFC 9113 8.2.2): Envoy's codec drops
 * them, and so does this. */
static bool h2_forbidden(struct str name, struct str value)
{
    return str_eq_lit(name, "connection") || str_eq_lit(name, "keep-alive") ||
           str_eq_lit(name, "proxy-connection") || str_eq_lit(name, "transfer-encoding") ||
           str_eq_lit(name, "upgrade") ||
           (str_eq_lit(name, "te") && !str_eq_lit(value, "trailers"));
}

static nghttp2_nv mknv(struct str name, struct str value)
{
    /* copied by nghttp2 (no NO_COPY flags): the arena is reset right after submitting */
    return (nghttp2_nv){(uint8_t *)name.p, (uint8_t *)value.p, name.len, value.len,
                        NGHTTP2_NV_FLAG_NONE};
}

/* Opens the check's stream: GET `path` (HTTP), or POST /grpc.health.v1.Health/Check with the
 * request message (gRPC, as Envoy's GrpcHealthCheckerImpl and grpc::Common::prepareHeaders). */
static int h2_submit(struct hc_session *s)
{
    struct health_check *hc = s->hc;
    const struct health_check_cfg *c = hc->hcc;
    bool grpc = c->kind == HC_GRPC;
    struct headers h;
    check_headers(s, &h, false);
    nghttp2_nv *nv = ARENA_NEW_N(&hc->arena, nghttp2_nv, h.n + HC_H2_FIXED_HEADERS);
    size_t n = 0;
    nv[n++] = mknv(STR_LIT(":method"), grpc ? STR_LIT("POST") : STR_LIT("GET"));
    nv[n++] = mknv(STR_LIT(":scheme"), hc->cfg->tls != NULL ? STR_LIT("https") : STR_LIT("http"));
    nv[n++] = mknv(STR_LIT(":authority"), check_host(s));
    nv[n++] = mknv(STR_LIT(":path"), c->path);
    if (grpc) {
        nv[n++] = mknv(STR_LIT("content-type"), STR_LIT("application/grpc"));
        nv[n++] = mknv(STR_LIT("te"), STR_LIT("trailers"));
    }
    for (uint32_t i = 0; i < h.n; i++) {
        if (!h2_forbidden(h.v[i].name, h.v[i].value) &&
            !(grpc && (str_eq_lit(h.v[i].name, "content-type") || str_eq_lit(h.v[i].name, "te")))) {
            nv[n++] = mknv(h.v[i].name, h.v[i].value);
        }
    }
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read_body};
    if (grpc) {
        buf_deinit(&s->req_body);
        hc_grpc_encode_request(&s->req_body, c->grpc_service);
    }
    int32_t id = nghttp2_submit_request(s->h2, NULL, nv, n, grpc ? &prd : NULL, NULL);
    arena_reset(&hc->arena);
    if (id < 0) {
        LOG_D("health check %.*s: submit_request: %s", STR_FMT(hc->cfg->name),
              nghttp2_strerror(id));
        return -1;
    }
    s->stream_id = id;
    return h2_pump(s);
}

/* The check's stream is over (or judged early): the verdict, and the connection's fate. */
static void h2_finish(struct hc_session *s)
{
    const struct health_check_cfg *c = s->hc->hcc;
    enum hc_verdict v = c->kind == HC_GRPC
                            ? hc_grpc_verdict(&s->reply)
                            : hc_h2_http_verdict(&s->reply, c->expected, c->n_expected,
                                                 c->retriable, c->n_retriable);
    if (v == HC_V_PASS && c->kind == HC_HTTP && !verify_cluster(s)) {
        v = HC_V_FAIL;
    }
    if (v != HC_V_PASS) {
        LOG_D("health check %.*s: %.*s: :status %d grpc-status %d serving %d%s%s",
              STR_FMT(s->hc->cfg->name), STR_FMT(s->hc->cfg->endpoints[s->index].addr.text),
              s->reply.status, s->reply.grpc_status, s->reply.serving,
              s->reply.ended ? "" : " (no END_STREAM)",
              s->reply.bad_message ? " (bad message)" : "");
    }
    /* A stream judged before its end is left open: the connection goes with it. */
    bool keep = c->reuse_connection && !s->goaway && !s->h2_abort && s->h2_closed &&
                nghttp2_session_want_read(s->h2);
    s->stream_id = 0;
    if (!keep || h2_pump(s) < 0) {
        close_conn(s);
    }
    switch (v) {
    case HC_V_PASS:
        handle_success(s);
        break;
    case HC_V_FAIL:
        handle_failure(s, HC_FAIL_ACTIVE, false);
        break;
    case HC_V_RETRIABLE:
        handle_failure(s, HC_FAIL_ACTIVE, true);
        break;
    case HC_V_NETWORK:
    default:
        handle_failure(s, HC_FAIL_NETWORK, false);
        break;
    }
}

/* `n` bytes (n <= 0: EOF or an error) from an HTTP/2 connection. */
static void h2_input(struct hc_session *s, const uint8_t *p, ssize_t n)
{
    bool sent = s->state == HC_SENT;
    ssize_t used = n > 0 ? nghttp2_session_mem_recv(s->h2, p, (size_t)n) : -1;
    if (used < 0) {
        if (n > 0) {
            LOG_D("health check %.*s: nghttp2: %s", STR_FMT(s->hc->cfg->name),
                  nghttp2_strerror((int)used));
        }
        close_conn(s);
        if (sent) {
            handle_failure(s, HC_FAIL_NETWORK, false);
        }
        return;
    }
    if (sent && (s->h2_closed || s->h2_abort)) {
        h2_finish(s);
        return;
    }
    if (!sent && s->goaway) {
        close_conn(s); /* idle: the next check opens a new connection */
        return;
    }
    if (h2_pump(s) < 0 ||
        (!nghttp2_session_want_read(s->h2) && !nghttp2_session_want_write(s->h2))) {
        close_conn(s);
        if (sent) {
            handle_failure(s, HC_FAIL_NETWORK, false);
        }
    }
}

static void send_request(struct hc_session *s)
{
    if (s->hc->hcc->http2) {
        s->state = HC_SENT;
        s->body_bytes = 0;
        s->h2_closed = false;
        s->h2_abort = false;
        s->svc_seen = false;
        hc_h2_reply_init(&s->reply);
        grpc_msg_reader_reset(&s->grpc);
        grpc_msg_reader_init(&s->grpc, HC_GRPC_MAX_MSG);
        if (s->h2 == NULL) {
            h2_session_new(s);
        }
        if (h2_submit(s) < 0) {
            close_conn(s);
            handle_failure(s, HC_FAIL_NETWORK, false);
        }
        return;
    }
    if (s->parser == NULL) {
        s->parser = h1_parser_new(H1_RESPONSE, HC_MAX_HEAD, HC_MAX_HEADERS, &hc_parser_cbs, s);
    }
    s->status = 0;
    s->keep_alive = false;
    s->done = false;
    s->svc_seen = false;
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
        if (verify_cluster(s)) {
            handle_success(s);
        } else {
            handle_failure(s, HC_FAIL_ACTIVE, false);
        }
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
    if (s->h2 != NULL) {
        h2_input(s, tmp, n);
        /* TLS may hold more records than one read took: the socket will not tell again */
        if (n == (ssize_t)sizeof(tmp) && s->tls != NULL && s->fd >= 0 && tls_conn_pending(s->tls)) {
            on_readable(s);
        }
        return;
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
            static const uint8_t h2[] = {2, 'h', '2'};
            bool want_h2 = s->hc->hcc->http2;
            int r = tls_connect_step(&s->tls, s->hc->cfg->tls, s->fd, want_h2 ? h2 : NULL,
                                     want_h2 ? sizeof(h2) : 0, NULL, &why);
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
    /* An idle HTTP/2 connection may have frames to send too (PING and SETTINGS acks). */
    if ((revents & EV_WRITE) && (s->state == HC_SENT || s->h2 != NULL)) {
        if (flush(s) < 0) {
            bool sent = s->state == HC_SENT;
            close_conn(s);
            if (sent) {
                handle_failure(s, HC_FAIL_NETWORK, false);
            }
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
    const struct endpoint_cfg *ep = &hc->cfg->endpoints[s->index];
    struct sock_addr to;
    to = *endpoint_connect_addr(ep, &to); /* LOGICAL_DNS: the host's current address */
    const struct sock_addr *a = &to;
    if (ep->hc_port != 0) {
        /* health_check_config.port_value: the checks go to that port (Envoy) */
        if (to.ss.ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)&to.ss)->sin6_port = htons(ep->hc_port);
        } else {
            ((struct sockaddr_in *)&to.ss)->sin_port = htons(ep->hc_port);
        }
    }
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
    if (hc->hcc->kind != HC_TCP && s->fd >= 0 && s->is_connected && hc->hcc->reuse_connection) {
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
        buf_init(&s->req_body);
        grpc_msg_reader_init(&s->grpc, HC_GRPC_MAX_MSG);
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
    sh->hc_loop = loop;
    ev_async_init(&sh->hc_wake, passive_cb);
    sh->hc_wake.data = hc;
    ev_async_start(loop, &sh->hc_wake);
    atomic_store_explicit(&sh->hc_armed, true, memory_order_release);
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
        buf_deinit(&s->req_body);
        ev_timer_stop(hc->loop, &s->interval);
        ev_timer_stop(hc->loop, &s->timeout);
    }
    ev_timer_stop(hc->loop, &hc->init_timer);
    /* a worker may still send: to a stopped watcher, which nothing runs */
    atomic_store_explicit(&hc->sh->hc_armed, false, memory_order_release);
    ev_async_stop(hc->loop, &hc->sh->hc_wake);
    arena_deinit(&hc->arena);
    free(hc->sessions);
    free(hc);
}
