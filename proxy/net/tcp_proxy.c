/* tcp_proxy: a downstream TCP connection paired with an upstream one (see tcp_proxy.h).
 *
 * Both sockets share the session's two buffers: `up` holds bytes read from the client for the
 * endpoint, `down` the reverse. Reads go straight into the destination buffer (no scratch copy:
 * these bytes are never parsed). A side is read only while the other direction's buffer is under
 * the limit; a write that drains a buffer below it re-arms the read. */
#include "proxy/net/tcp_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "filters/rbac/rbac_network.h"
#include "proxy/cds.h"
#include "proxy/config/cluster_map.h"
#include "proxy/config/config.h"
#include "proxy/config/rds.h"
#include "proxy/core/buf.h"
#include "proxy/core/cumsum.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/stream.h"
#include "proxy/net/accepted.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/breaker.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/upstream.h"
#include "proxy/worker.h"

#define TCP_READ_CHUNK 16384

/* One side of the session. */
struct side {
    int fd; /* owned; -1 once closed */
    ev_io io;
    bool eof;  /* read a FIN from this side */
    bool shut; /* we sent it a FIN (shutdown SHUT_WR) */
    bool want_write;
    bool read_paused;
    struct tls_conn *tls; /* owned: TLS on this side (the chain's or the cluster's), or NULL */
};

struct tcp_session {
    struct worker *w;                     /* borrowed */
    const struct filter_chain_cfg *chain; /* the chain that took it (chain->listener: its
                                           * listener), borrowed from the worker's snapshot */
    struct worker_scope *sc;              /* borrowed: its listener's scope (worker.h) */
    const struct tcp_proxy_cfg *cfg;
    struct tcp_stats *stats;
    struct side d;              /* the client */
    struct side u;              /* the endpoint */
    struct buf to_up;           /* owned: client bytes not yet written upstream */
    struct buf to_down;         /* owned: endpoint bytes not yet written to the client */
    ev_timer timer;             /* connect timeout, then idle timeout */
    ev_timer hs_timer;          /* the client's TLS handshake (transport_socket_connect_timeout) */
    struct cluster_rt *cluster; /* the picked cluster */
    struct cds_pin *cds;        /* a CDS cluster's: the set it was found in (worker.h) */
    struct cds_dns_pin **dns_pins; /* owned; [n_dns_pins]: the versions of bootstrap STRICT_DNS
                                    * clusters the attempts used (proxy/cds.h) */
    uint32_t n_dns_pins;
    struct endpoint_rt *ep;
    bool connected;
    bool holds_cx; /* holds a BREAKER_CX unit */
    bool closed;
    uint32_t attempts;
    uint32_t flags;    /* RF_* for the access log */
    int connect_errno; /* the last failed connect's (%UPSTREAM_TRANSPORT_FAILURE_REASON%) */
    uint64_t conn_id;  /* %CONNECTION_ID% */
    struct upstream_conn_info up; /* the last upstream connection's (%UPSTREAM_LOCAL_ADDRESS%) */
    uint64_t rx, tx;              /* bytes from / to the client */
    ev_tstamp t_start, t_activity;
    char peer_ip[48]; /* the remote address (the PROXY header's source) */
    uint16_t peer_port;
    char direct_ip[48]; /* the socket's own peer (Envoy's direct remote address) */
    uint16_t direct_port;
    union sockaddr_ip local; /* AF_UNSPEC unless the listener needed it (accepted.h) */
    char *sni;               /* owned: the tls_inspector's SNI (passthrough), or NULL */
    struct list link;        /* in w->tcp_sessions */
    struct deferred defer;
};

static void try_connect(struct tcp_session *t);

static uint32_t limit(const struct tcp_session *t)
{
    return t->chain->listener->per_connection_buffer_limit
               ? t->chain->listener->per_connection_buffer_limit
               : 1024 * 1024;
}

static void set_events(struct tcp_session *t, struct side *s)
{
    if (s->fd < 0) {
        return;
    }
    int ev = (s->eof || s->read_paused ? 0 : EV_READ) | (s->want_write ? EV_WRITE : 0);
    if (ev == s->io.events && ev_is_active(&s->io)) {
        return;
    }
    ev_io_stop(t->w->loop, &s->io);
    ev_io_set(&s->io, s->fd, ev);
    if (ev != 0) {
        ev_io_start(t->w->loop, &s->io);
    }
}

static void side_tls_free(struct side *s)
{
    tls_conn_destroy(s->tls);
    s->tls = NULL;
}

static void free_session(struct deferred *d)
{
    struct tcp_session *t = LIST_ENTRY(d, struct tcp_session, defer);
    endpoint_hold(&t->ep, NULL);
    for (uint32_t i = 0; i < t->n_dns_pins; i++) { /* after the endpoint, likewise */
        cds_boot_dns_release(t->w, t->dns_pins[i]);
    }
    free(t->dns_pins);
    worker_cds_release(t->w, t->cds); /* after the endpoint: it may tear its cluster down */
    side_tls_free(&t->d);
    free(t->sni);
    buf_deinit(&t->to_up);
    buf_deinit(&t->to_down);
    free(t);
}

static void write_log(struct tcp_session *t)
{
    struct worker *w = t->w;
    const struct worker_scope *sc = t->sc;
    uint32_t first = sc->log_first[t->chain->index], end = sc->log_first[t->chain->index + 1];
    if (first == end) {
        return;
    }
    struct al_entry e = {
        .flags = t->flags,
        .bytes_received = t->rx,
        .bytes_sent = t->tx,
        .t_start = t->t_start,
        .t_end = ev_now(w->loop),
        .upstream_host = t->ep != NULL ? t->ep->cfg->addr.text : STR_NULL,
        .cluster = t->cluster != NULL ? t->cluster->cfg->name : STR_NULL,
        .peer_ip = t->peer_ip,
        .peer_port = t->peer_port,
        .direct_ip = t->direct_ip,
        .direct_port = t->direct_port,
        .local = &t->local.sa,
        .tls = t->d.tls,
        .sni = t->sni != NULL ? str_from_c(t->sni) : STR_NULL,
        .transport_errno = t->connect_errno,
        .attempts = t->attempts,
        .conn_id = t->conn_id,
        .upstream_conn_id = t->up.id,
        .upstream_local = &t->up.local.sa,
    };
    for (uint32_t i = first; i < end; i++) {
        const struct worker_log *l = &sc->logs[i];
        if (l->filter != NULL && !access_log_filter_eval(l->filter, &e, worker_rand(w))) {
            continue;
        }
        access_log_render(&sc->logs[i].buf, &l->fmt, &e);
    }
}

static void close_side(struct tcp_session *t, struct side *s, bool abort)
{
    if (s->fd < 0) {
        return;
    }
    if (abort) {
        struct linger lg = {1, 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    ev_io_stop(t->w->loop, &s->io);
    if (s->tls != NULL && !abort && !s->shut) {
        tls_conn_shutdown(s->tls);
    }
    if (s == &t->u) {
        side_tls_free(s); /* a new attempt may connect again; the client's is kept for the log */
    }
    close(s->fd);
    s->fd = -1;
}

/* Ends the session: both sockets closed (reset when `abort`), stats, the log line. */
static void session_close(struct tcp_session *t, bool abort)
{
    if (t->closed) {
        return;
    }
    t->closed = true;
    ev_timer_stop(t->w->loop, &t->timer);
    ev_timer_stop(t->w->loop, &t->hs_timer);
    close_side(t, &t->d, abort);
    bool had_upstream = t->u.fd >= 0;
    close_side(t, &t->u, abort);
    if (had_upstream && t->cluster != NULL) {
        STAT_DEC(t->cluster->stats->upstream_cx_active);
        STAT_INC(t->cluster->stats->upstream_cx_destroy);
        STAT_DEC(t->ep->stats->cx_active);
        t->ep->n_conns--;
    }
    if (t->holds_cx) {
        t->holds_cx = false;
        breaker_release(t->cluster->shared, BREAKER_CX);
    }
    struct listener_stats *ls = &t->sc->stats->listener[t->chain->listener->index];
    STAT_DEC(ls->downstream_cx_active);
    STAT_INC(ls->downstream_cx_destroy);
    hist_record_ms(&ls->downstream_cx_length_ms, (ev_now(t->w->loop) - t->t_start) * 1000.0);
    stat_sub(&t->stats->downstream_cx_rx_bytes_buffered, buf_len(&t->to_up));
    stat_sub(&t->stats->downstream_cx_tx_bytes_buffered, buf_len(&t->to_down));
    write_log(t);
    list_remove(&t->link);
    worker_defer(t->w, &t->defer, free_session);
    worker_conn_closed(t->w, t->sc);
}

/* Both directions are done when each side's FIN has been passed on and nothing is left. */
static void maybe_done(struct tcp_session *t)
{
    bool up_done = t->d.eof && buf_len(&t->to_up) == 0 && t->u.shut;
    bool down_done = t->u.eof && buf_len(&t->to_down) == 0 && t->d.shut;
    if (up_done && down_done) {
        session_close(t, false);
    }
}

/* The TLS stats of side `s`: the listener's for the client, the cluster's for the endpoint. */
static struct ssl_stats *side_ssl_stats(struct tcp_session *t, const struct side *s)
{
    return s == &t->d ? &t->sc->stats->listener[t->chain->listener->index].ssl
                      : &t->cluster->stats->ssl;
}

/* After a TLS call on `s`: count a handshake it completed; when it would block on
 * writability, arm EV_WRITE. */
static void side_tls_after(struct tcp_session *t, struct side *s, ssize_t r)
{
    if (s->tls->just_done) {
        tls_count_handshake(s->tls, side_ssl_stats(t, s));
        if (s == &t->d) {
            ev_timer_stop(t->w->loop, &t->hs_timer);
        }
    }
    if (r == -EAGAIN && s->tls->want_write && !s->want_write) {
        s->want_write = true;
        set_events(t, s);
    }
    if (r == -EPROTO && !s->tls->handshake_done) {
        tls_count_failure(s->tls, side_ssl_stats(t, s));
    }
}

/* One write to side `s` (sockio.h), counting what a TLS handshake did. */
static ssize_t side_send(struct tcp_session *t, struct side *s, const uint8_t *p, size_t n)
{
    ssize_t r = sock_send(s->fd, s->tls, p, n);
    if (s->tls != NULL) {
        side_tls_after(t, s, r);
    }
    return r;
}

/* One read from side `s` (sockio.h), counting what a TLS handshake did. */
static ssize_t side_recv(struct tcp_session *t, struct side *s, uint8_t *p, size_t n)
{
    ssize_t r = sock_recv(s->fd, s->tls, p, n);
    if (s->tls != NULL) {
        side_tls_after(t, s, r);
    }
    return r;
}

/* Writes `b` to side `s`; passes a FIN on once `b` is empty and the source side ended.
 * Returns false when the session was closed. */
static bool flush(struct tcp_session *t, struct side *s, struct buf *b, bool src_eof)
{
    while (buf_len(b) > 0) {
        ssize_t n = side_send(t, s, buf_head(b), buf_len(b));
        if (n > 0) {
            buf_consume(b, (size_t)n);
            if (s == &t->d) {
                t->tx += (uint64_t)n;
                stat_add(&t->stats->downstream_cx_tx_bytes_total, (uint64_t)n);
                stat_sub(&t->stats->downstream_cx_tx_bytes_buffered, (uint64_t)n);
            } else {
                stat_add(&t->cluster->stats->upstream_cx_tx_bytes_total, (uint64_t)n);
                stat_sub(&t->stats->downstream_cx_rx_bytes_buffered, (uint64_t)n);
            }
            continue;
        }
        if (n == -EAGAIN) {
            /* TLS may wait for the peer's handshake bytes instead (side_tls_after) */
            if (s->tls == NULL) {
                s->want_write = true;
                set_events(t, s);
            }
            return true;
        }
        t->flags |= s == &t->d ? RF_DC : RF_UC;
        session_close(t, true);
        return false;
    }
    buf_release(b);
    s->want_write = false;
    if (src_eof && !s->shut) {
        if (s->tls != NULL) {
            tls_conn_shutdown(s->tls); /* close_notify, then the FIN */
        }
        shutdown(s->fd, SHUT_WR);
        s->shut = true;
    }
    set_events(t, s);
    /* The buffer drained: the side that fills it may read again. */
    struct side *src = s == &t->d ? &t->u : &t->d;
    if (src->read_paused) {
        src->read_paused = false;
        if (src == &t->d) {
            STAT_INC(t->stats->downstream_flow_control_resumed_reading_total);
        }
        set_events(t, src);
    }
    maybe_done(t);
    return !t->closed;
}

/* The chain's network RBAC filters on the client's first bytes (rbac_network.h): false when
 * denied, and the session is closed (those bytes never reach the endpoint). */
static bool rbac_allows(struct tcp_session *t)
{
    struct rbac_net_conn conn = {.peer_ip = str_from_c(t->peer_ip),
                                 .direct_ip = str_from_c(t->direct_ip),
                                 .local = &t->local.sa,
                                 .tls = t->d.tls,
                                 .sni = t->sni != NULL ? str_from_c(t->sni) : (struct str){"", 0}};
    if (rbac_network_allow(t->chain, t->sc->stats->ext, &conn)) {
        return true;
    }
    session_close(t, false);
    return false;
}

/* Reads from `s` into `b` (bound for the other side `dst`). */
static void on_readable(struct tcp_session *t, struct side *s, struct buf *b, struct side *dst)
{
    uint8_t *p = buf_reserve(b, TCP_READ_CHUNK);
    bool was_handshaking = s->tls != NULL && !s->tls->handshake_done;
    ssize_t n = side_recv(t, s, p, buf_tail_room(b));
    struct buf *back = b == &t->to_up ? &t->to_down : &t->to_up;
    if (was_handshaking && s->tls->handshake_done && buf_len(back) > 0 &&
        !flush(t, s, back, dst->eof)) {
        return; /* bytes for this side waited for its handshake */
    }
    if (n < 0) {
        if (n == -EAGAIN) {
            return;
        }
        LOG_D("tcp_proxy: read from the %s failed: %zd", s == &t->d ? "client" : "endpoint", n);
        t->flags |= s == &t->d ? RF_DC : RF_UR;
        session_close(t, true);
        return;
    }
    t->t_activity = ev_now(t->w->loop);
    if (n == 0) {
        s->eof = true;
        set_events(t, s);
        if (dst->fd >= 0 && (s == &t->u || t->connected)) {
            flush(t, dst, b, true);
        }
        /* A client's FIN before the upstream connected is a half-close, not a goodbye: it may
         * still read the answer (a request, then shutdown(SHUT_WR)). As Envoy's TcpProxy, keep
         * it: once connected, up_cb passes what it sent and then the FIN on. A client that
         * really went away shows when the answer is written to it; the connect timeout bounds
         * the wait meanwhile. */
        return;
    }
    if (s == &t->d && t->rx == 0 && t->chain->n_rbac > 0 && !rbac_allows(t)) {
        return;
    }
    buf_commit(b, (size_t)n);
    if (s == &t->d) {
        t->rx += (uint64_t)n;
        stat_add(&t->stats->downstream_cx_rx_bytes_total, (uint64_t)n);
        stat_add(&t->stats->downstream_cx_rx_bytes_buffered, (uint64_t)n);
    } else {
        stat_add(&t->cluster->stats->upstream_cx_rx_bytes_total, (uint64_t)n);
        stat_add(&t->stats->downstream_cx_tx_bytes_buffered, (uint64_t)n);
    }
    if (buf_len(b) > limit(t)) {
        s->read_paused = true;
        if (s == &t->d) {
            STAT_INC(t->stats->downstream_flow_control_paused_reading_total);
        }
        set_events(t, s);
    }
    if (s == &t->d && !t->connected) {
        return; /* held until the upstream connects */
    }
    flush(t, dst, b, false);
}

static void down_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tcp_session *t = io->data;
    if ((revents & EV_WRITE) && !flush(t, &t->d, &t->to_down, t->u.eof)) {
        return;
    }
    if ((revents & EV_READ) && !t->closed && t->d.fd >= 0) {
        on_readable(t, &t->d, &t->to_up, &t->u);
        if (!t->closed && t->d.tls != NULL && !t->d.read_paused && tls_conn_pending(t->d.tls)) {
            ev_feed_event(loop, io, EV_READ); /* records TLS read ahead */
        }
    }
}

static void connect_failed(struct tcp_session *t, const char *why)
{
    LOG_D("tcp_proxy: %.*s: %s", STR_FMT(t->ep->cfg->addr.text), why);
    STAT_INC(t->cluster->stats->upstream_cx_connect_fail);
    STAT_INC(t->ep->stats->cx_connect_fail);
    STAT_DEC(t->cluster->stats->upstream_cx_active);
    STAT_INC(t->cluster->stats->upstream_cx_destroy);
    STAT_DEC(t->ep->stats->cx_active);
    t->ep->n_conns--;
    close_side(t, &t->u, false);
    t->up.id = 0; /* never connected: Envoy logs no upstream connection */
    t->up.local.sa.sa_family = AF_UNSPEC;
    if (t->holds_cx) {
        t->holds_cx = false;
        breaker_release(t->cluster->shared, BREAKER_CX);
    }
    if (t->attempts < t->cfg->max_connect_attempts) {
        try_connect(t); /* another pick, as Envoy does */
        return;
    }
    t->flags |= RF_UF;
    session_close(t, false);
}

static void up_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    struct tcp_session *t = io->data;
    if (!t->connected) {
        if (t->u.tls == NULL) {
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (getsockopt(t->u.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
                t->connect_errno = soerr != 0 ? soerr : errno;
                connect_failed(t, "connection failure");
                return;
            }
        }
        const struct tls_ctx *tc = t->cluster->cfg->tls;
        if (tc != NULL) {
            /* the handshake is part of connecting (the connect timeout covers it) */
            const char *why = NULL;
            int r =
                tls_connect_step(&t->u.tls, tc, t->u.fd, NULL, 0, &t->cluster->stats->ssl, &why);
            if (r < 0) {
                connect_failed(t, why);
                return;
            }
            if (r == 0) {
                int ev = tls_conn_wait_events(t->u.tls);
                t->u.want_write = (ev & EV_WRITE) != 0;
                ev_io_stop(loop, &t->u.io);
                ev_io_set(&t->u.io, t->u.fd, ev);
                ev_io_start(loop, &t->u.io);
                return;
            }
        }
        t->connected = true;
        hist_record_ms(&t->cluster->stats->upstream_cx_connect_ms,
                       (ev_now(t->w->loop) - t->t_activity) * 1000.0);
        t->t_activity = ev_now(t->w->loop);
        ev_timer_stop(t->w->loop, &t->timer);
        if (t->cfg->idle_timeout_ms > 0) {
            ev_timer_set(&t->timer, (double)t->cfg->idle_timeout_ms / 1000.0, 0);
            ev_timer_start(t->w->loop, &t->timer);
        }
        t->u.want_write = false;
        set_events(t, &t->u);
        /* what the client sent while we connected */
        if (flush(t, &t->u, &t->to_up, t->d.eof)) {
            set_events(t, &t->d);
        }
        return;
    }
    if ((revents & EV_WRITE) && !flush(t, &t->u, &t->to_up, t->d.eof)) {
        return;
    }
    if ((revents & EV_READ) && !t->closed && t->u.fd >= 0) {
        on_readable(t, &t->u, &t->to_down, &t->d);
        if (!t->closed && t->u.fd >= 0 && t->u.tls != NULL && !t->u.read_paused &&
            tls_conn_pending(t->u.tls)) {
            ev_feed_event(loop, io, EV_READ); /* records TLS read ahead */
        }
    }
}

/* transport_socket_connect_timeout: the client did not finish its handshake in time. */
static void hs_timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop;
    (void)revents;
    struct tcp_session *t = tm->data;
    STAT_INC(t->sc->stats->listener[t->chain->listener->index]
                 .downstream_cx_transport_socket_connect_timeout);
    session_close(t, false);
}

static void timer_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)revents;
    struct tcp_session *t = tm->data;
    if (!t->connected) {
        STAT_INC(t->cluster->stats->upstream_cx_connect_timeout);
        connect_failed(t, "connection timeout");
        return;
    }
    /* idle: re-arm for the rest of the interval if there was activity meanwhile */
    double limit_s = (double)t->cfg->idle_timeout_ms / 1000.0;
    double due = t->t_activity + limit_s - ev_now(loop);
    if (due > 0.001) {
        ev_timer_set(tm, due, 0);
        ev_timer_start(loop, tm);
        return;
    }
    STAT_INC(t->stats->idle_timeout);
    session_close(t, false);
}

/* The current version of bootstrap STRICT_DNS cluster `cc` (proxy/cds.h): the one an earlier
 * attempt took, else the worker's current one, held until the session is freed (attempts are
 * bounded, and so are the holds). */
static const struct cluster_cfg *boot_version(struct tcp_session *t, const struct cluster_cfg *cc)
{
    for (uint32_t i = 0; i < t->n_dns_pins; i++) {
        if (cds_boot_dns_pinned(t->dns_pins[i], cc)) {
            return cds_boot_dns_cfg(t->dns_pins[i]);
        }
    }
    t->dns_pins = xrealloc(t->dns_pins, (t->n_dns_pins + 1) * sizeof(*t->dns_pins));
    return cds_boot_dns_acquire(t->w, cc, &t->dns_pins[t->n_dns_pins++]);
}

/* Picks a cluster (weighted) and an endpoint, and starts connecting. */
static void try_connect(struct tcp_session *t)
{
    t->attempts++;
    t->connect_errno = 0; /* the log shows the last attempt's */
    const struct tcp_proxy_cfg *c = t->cfg;
    uint32_t k = 0;
    if (c->n_clusters > 1) {
        uint64_t x = worker_rand(t->w) % c->total_weight;
        k = cumsum_pick(&c->clusters[0].cum_weight, sizeof(c->clusters[0]), c->n_clusters, x);
    }
    const struct cluster_cfg *cc = c->clusters[k].cluster;
    if (cc == NULL) {
        /* a CDS cluster, by name: in the newest set, or, on a later attempt, in the set the
         * first found its cluster in (held until the session is freed) */
        struct str name = c->clusters[k].name;
        cc = t->cds == NULL ? worker_cds_find(t->w, name, &t->cds)
                            : cluster_map_find(t->cds->set->map, name);
        if (cc == NULL) {
            /* as Envoy: no such cluster, the connection is closed */
            LOG_D("tcp_proxy: no cluster '%.*s'", STR_FMT(name));
            STAT_INC(t->stats->downstream_cx_no_route);
            t->flags |= RF_NC;
            session_close(t, false);
            return;
        }
    }
    if (cc->boot_dns != NULL) {
        cc = boot_version(t, cc);
    }
    t->cluster = cc->dyn_rt != NULL ? &cc->dyn_rt[t->w->id] : &t->w->clusters[cc->index];
    struct endpoint_rt *ep = NULL;
    if (t->cluster->cfg->type == CLUSTER_ORIGINAL_DST) {
        /* the address before the redirect, which only the original_dst filter restores */
        ep = t->chain->listener->original_dst ? original_dst_host(t->cluster, &t->local.sa) : NULL;
    } else {
        int idx = cluster_pick(t->cluster, worker_rand(t->w));
        ep = idx >= 0 ? &t->cluster->eps[idx] : NULL;
    }
    if (ep != NULL && ep->cfg->logical != NULL && !endpoint_resolved(ep->cfg)) {
        ep = NULL; /* LOGICAL_DNS before its name resolved: Envoy has no host yet */
    }
    if (ep == NULL) {
        STAT_INC(t->cluster->stats->upstream_cx_none_healthy);
        t->flags |= RF_UH;
        session_close(t, false);
        return;
    }
    endpoint_hold(&t->ep, ep); /* until the session is freed */
    if (!breaker_acquire(t->cluster->shared, &t->cluster->cfg->breakers[0], BREAKER_CX)) {
        STAT_INC(t->cluster->stats->upstream_cx_overflow);
        t->flags |= RF_UO;
        session_close(t, false);
        return;
    }
    t->holds_cx = true;
    struct sock_addr la;
    const struct sock_addr *a = endpoint_connect_addr(t->ep->cfg, &la); /* LOGICAL_DNS: now's */
    int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        t->flags |= RF_UF;
        session_close(t, false);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    t->u.fd = fd;
    t->u.eof = t->u.shut = t->u.read_paused = false;
    t->u.want_write = true;
    t->connected = false;
    t->ep->n_conns++;
    STAT_INC(t->cluster->stats->upstream_cx_total);
    STAT_INC(t->cluster->stats->upstream_cx_active);
    STAT_INC(t->ep->stats->cx_total);
    STAT_INC(t->ep->stats->cx_active);
    t->t_activity = ev_now(t->w->loop);
    /* A refused connect on loopback fails at once; either way the result arrives as
     * writability, through up_cb, never from inside this function. */
    (void)connect(fd, (const struct sockaddr *)&a->ss, a->len);
    upstream_conn_info_init(&t->up, t->w, fd);
    ev_io_init(&t->u.io, up_cb, fd, EV_WRITE);
    t->u.io.data = t;
    ev_io_start(t->w->loop, &t->u.io);
    ev_timer_stop(t->w->loop, &t->timer);
    if (t->cluster->cfg->connect_timeout_ms > 0) {
        ev_timer_set(&t->timer, (double)t->cluster->cfg->connect_timeout_ms / 1000.0, 0);
        ev_timer_start(t->w->loop, &t->timer);
    }
}

void tcp_proxy_accept(struct worker *w, const struct accepted *a)
{
    struct tcp_session *t = xcalloc(1, sizeof(*t));
    t->w = w;
    t->chain = a->chain;
    t->sc = a->sc;
    t->cfg = a->chain->tcp;
    t->stats = &a->sc->stats->tcp[a->chain->index];
    t->t_start = t->t_activity = ev_now(w->loop);
    t->conn_id = worker_conn_id(w);
    buf_init(&t->to_up);
    buf_init(&t->to_down);
    t->u.fd = -1;
    t->d.fd = a->fd;
    int fd = a->fd;
    accepted_addr_text(a->peer, t->peer_ip, &t->peer_port);
    accepted_addr_text(a->direct != NULL ? a->direct : a->peer, t->direct_ip, &t->direct_port);
    sockaddr_ip_set(&t->local, a->local);
    if (a->requested_server_name.len > 0) {
        t->sni = xstrndup(a->requested_server_name.p, a->requested_server_name.len);
    }
    list_insert_tail(&w->tcp_sessions, &t->link);
    struct listener_stats *ls = &a->sc->stats->listener[a->chain->listener->index];
    STAT_INC(ls->downstream_cx_total);
    STAT_INC(ls->downstream_cx_active);
    STAT_INC(t->stats->downstream_cx_total);
    if (a->chain->tls != NULL) {
        t->d.tls = tls_conn_new(a->chain->tls, fd);
    }
    ev_io_init(&t->d.io, down_cb, fd, EV_READ);
    t->d.io.data = t;
    ev_io_start(w->loop, &t->d.io);
    if (a->chain->tls != NULL && t->d.tls == NULL) {
        session_close(t, true); /* OpenSSL is out of memory */
        return;
    }
    ev_timer_init(&t->timer, timer_cb, 0, 0);
    t->timer.data = t;
    ev_timer_init(&t->hs_timer, hs_timer_cb, (double)a->chain->handshake_timeout_ms / 1000.0, 0);
    t->hs_timer.data = t;
    if (t->d.tls != NULL && a->chain->handshake_timeout_ms > 0) {
        ev_timer_start(w->loop, &t->hs_timer);
    }
    try_connect(t);
}

void tcp_proxy_close_scope(struct worker *w, const struct worker_scope *sc)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->tcp_sessions)
    {
        struct tcp_session *t = LIST_ENTRY(it, struct tcp_session, link);
        if (t->sc == sc) {
            session_close(t, false);
        }
    }
}

void tcp_proxy_close_all(struct worker *w)
{
    while (!list_empty(&w->tcp_sessions)) {
        struct tcp_session *t = LIST_ENTRY(list_first(&w->tcp_sessions), struct tcp_session, link);
        session_close(t, false);
    }
}
