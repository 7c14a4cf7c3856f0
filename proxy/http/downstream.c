/* downstream: client connections speaking HTTP/1.1 (see downstream.h).
 *
 * Reading: one recv per readiness event (a short read means the socket is drained, so no extra
 * recv that returns EAGAIN), into the worker's scratch buffer when nothing is held over; then
 * the parser is fed until it needs more bytes or a request is complete. While a request's response
 * is pending, pipelined bytes wait in rbuf unparsed; when rbuf passes the buffer limit reading
 * stops, which bounds memory per connection.
 *
 * Writing: responses accumulate in wbuf during a callback and go out in one send at its end;
 * EV_WRITE is armed only when the socket would block.
 *
 * Timers: before the first byte of a request the idle timeout runs (HCM
 * common_http_protocol_options.idle_timeout); while a request head is being received,
 * request_headers_timeout (408) when set. */
#include "proxy/http/downstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "filters/rbac/rbac_network.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/slab.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/codec_h1.h"
#include "proxy/http/downstream_h2.h"
#include "proxy/http/filter_chain.h"
#include "proxy/http/stream.h"
#include "proxy/http/trust.h"
#include "proxy/net/accepted.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/upstream.h"

#define DOWNSTREAM_READ_CHUNK 16384

static void process(struct downstream *d);

static struct hcm_stats *hstats(struct downstream *d)
{
    return &d->sc->stats->hcm[d->chain->index];
}

static uint32_t buffer_limit(const struct downstream *d)
{
    return d->chain->listener->per_connection_buffer_limit
               ? d->chain->listener->per_connection_buffer_limit
               : 1024 * 1024;
}

/* ---- parser callbacks ---- */

static int on_head(void *ud, struct h1_msg *msg)
{
    struct downstream *d = ud;
    d->s = stream_new(d); /* the connection's timer may run on: timer_cb ignores it now */
    stream_request_head(d->s, msg);
    return d->closed ? -1 : 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct downstream *d = ud;
    if (d->s != NULL) {
        stream_request_body(d->s, p, len);
    }
    return d->closed ? -1 : 0;
}

static int on_done(void *ud)
{
    struct downstream *d = ud;
    if (d->s != NULL) {
        stream_request_end(d->s);
    }
    return d->closed ? -1 : 0;
}

/* A field of a chunked request's trailer section (copied: the parser's bytes live only during
 * the call). */
static int on_trailer(void *ud, struct str name, struct str value)
{
    struct downstream *d = ud;
    struct stream *s = d->s;
    if (s != NULL && !s->finished) {
        stream_request_trailer(s, name, value);
    }
    return d->closed ? -1 : 0;
}

static const struct h1_parser_cbs parser_cbs = {on_head, on_body, on_done, on_trailer};

/* ---- lifecycle ---- */

static void free_downstream(struct deferred *df)
{
    struct downstream *d = LIST_ENTRY(df, struct downstream, defer);
    buf_deinit(&d->rbuf);
    buf_deinit(&d->wbuf);
    h1_parser_deinit(d->parser);
    downstream_h2_free(d);
    filter_conn_free(d->filter_conn);
    tls_conn_destroy(d->tls);
    slab_free(&d->w->dc_slab, d);
}

static void set_events(struct downstream *d)
{
    int ev = (d->read_paused || d->closing ? 0 : EV_READ) | (d->want_write ? EV_WRITE : 0);
    if (ev == d->io.events && ev_is_active(&d->io)) {
        return;
    }
    ev_io_stop(d->w->loop, &d->io);
    ev_io_set(&d->io, d->fd, ev);
    if (ev != 0) {
        ev_io_start(d->w->loop, &d->io);
    }
}

void downstream_close(struct downstream *d, bool abort)
{
    if (d->closed) {
        return;
    }
    if (d->tls != NULL && !d->tls->handshake_done) {
        abort = false; /* nothing of ours went out: a plain close */
        buf_consume(&d->wbuf, buf_len(&d->wbuf));
    }
    if (!abort && buf_len(&d->wbuf) > 0) {
        d->closing = true; /* close once flushed */
        set_events(d);
        downstream_flush(d);
        return;
    }
    d->closed = true;
    struct worker *w = d->w;
    if (abort) {
        /* A reset tells the client the response is incomplete, whatever it has read. */
        struct linger lg = {1, 0};
        setsockopt(d->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (d->s != NULL) {
        struct stream *s = d->s;
        d->s = NULL;
        if (!s->finished) {
            stream_downstream_reset(s);
        }
        stream_free(s);
    }
    if (d->h2 != NULL) {
        downstream_h2_close_streams(d);
    }
    ev_io_stop(w->loop, &d->io);
    ev_timer_stop(w->loop, &d->timer);
    if (d->tls != NULL && !abort) {
        tls_conn_shutdown(d->tls);
    }
    close(d->fd);
    d->fd = -1;
    list_remove(&d->link);
    if (d->tls != NULL) {
        STAT_DEC(hstats(d)->downstream_cx_ssl_active);
    }
    struct listener_stats *ls = &d->sc->stats->listener[d->chain->listener->index];
    struct hcm_stats *hs = hstats(d);
    double len_ms = (ev_now(w->loop) - d->t_open) * 1000.0;
    STAT_DEC(ls->downstream_cx_active);
    STAT_INC(ls->downstream_cx_destroy);
    hist_record_ms(&ls->downstream_cx_length_ms, len_ms);
    STAT_DEC(hs->downstream_cx_active);
    if (d->h2 != NULL) {
        STAT_DEC(hs->downstream_cx_http2_active);
    } else {
        STAT_DEC(hs->downstream_cx_http1_active);
    }
    STAT_INC(hs->downstream_cx_destroy);
    if (d->peer_eof) {
        STAT_INC(hs->downstream_cx_destroy_remote);
    } else {
        STAT_INC(hs->downstream_cx_destroy_local);
    }
    hist_record_ms(&hs->downstream_cx_length_ms, len_ms);
    worker_defer(w, &d->defer, free_downstream);
    worker_conn_closed(w, d->sc);
}

/* The handshake completed (in a read or a write): count it, and let ALPN choose the codec of
 * an AUTO connection manager ("h2": HTTP/2, whatever the first bytes are, as Envoy; "http/1.1":
 * HTTP/1.1; none: the first bytes decide). */
static void tls_established(struct downstream *d)
{
    tls_count_handshake(d->tls, &d->sc->stats->listener[d->chain->listener->index].ssl);
    if (!d->sniff) {
        return;
    }
    struct str alpn = tls_conn_alpn(d->tls);
    if (str_eq(alpn, STR_LIT("h2"))) {
        d->sniff = false;
        downstream_h2_start(d);
        downstream_h2_flush(d); /* our SETTINGS */
    } else if (str_eq(alpn, STR_LIT("http/1.1"))) {
        d->sniff = false;
    }
}

/* A TLS handshake or record failed: count why and close (no close_notify). */
static void tls_broken(struct downstream *d)
{
    if (!d->tls->handshake_done) {
        tls_count_failure(d->tls, &d->sc->stats->listener[d->chain->listener->index].ssl);
        LOG_D("downstream %s: %s", d->peer_ip, tls_fail_reason(d->tls));
    }
    d->peer_eof = true;
    downstream_close(d, true);
}

/* One write of up to `n` bytes: TLS or plain. Returns the bytes taken, -EAGAIN, or another
 * negative errno (the connection is broken). */
static ssize_t io_send(struct downstream *d, const uint8_t *p, size_t n)
{
    ssize_t r = sock_send(d->fd, d->tls, p, n);
    if (d->tls != NULL && d->tls->just_done) {
        tls_established(d);
    }
    return r;
}

int downstream_send(struct downstream *d)
{
    while (buf_len(&d->wbuf) > 0) {
        ssize_t n = io_send(d, buf_head(&d->wbuf), buf_len(&d->wbuf));
        if (n > 0) {
            d->tx_bytes += (uint64_t)n;
            stat_add(&hstats(d)->downstream_cx_tx_bytes_total, (uint64_t)n);
            buf_consume(&d->wbuf, (size_t)n);
            continue;
        }
        if (n == -EAGAIN) {
            /* A TLS handshake waiting for the client's bytes waits on EV_READ, which is on. */
            bool ww = d->tls == NULL || d->tls->want_write;
            if (d->want_write != ww) {
                d->want_write = ww;
                set_events(d);
            }
            return -EAGAIN;
        }
        if (d->closed) {
            return -EPIPE;
        }
        if (n == -EPROTO) {
            tls_broken(d);
            return -EPIPE;
        }
        d->peer_eof = true;
        downstream_close(d, true);
        return -EPIPE;
    }
    buf_release(&d->wbuf);
    if (d->want_write) {
        d->want_write = false;
        set_events(d);
    }
    return 0;
}

void downstream_flush(struct downstream *d)
{
    if (d->closed) {
        return;
    }
    if (d->h2 != NULL) {
        downstream_h2_flush(d);
        return;
    }
    if (downstream_send(d) != 0) {
        return;
    }
    if (d->closing) {
        d->closing = false;
        downstream_close(d, false);
        return;
    }
    if (d->s != NULL) {
        stream_downstream_drained(d->s);
    }
}

void downstream_pause_read(struct downstream *d, bool pause)
{
    if (d->read_paused == pause || d->closed) {
        return;
    }
    d->read_paused = pause;
    set_events(d);
    if (!pause && buf_len(&d->rbuf) > 0) {
        /* Bytes read before the pause are still waiting: parse them from the loop, not from
         * inside the caller's callback. */
        ev_feed_event(d->w->loop, &d->io, EV_CUSTOM);
    } else if (!pause && d->tls != NULL && tls_conn_pending(d->tls)) {
        ev_feed_event(d->w->loop, &d->io, EV_READ); /* records TLS read ahead */
    }
}

/* The HTTP/1 connection timer covers, lazily (libev's documented pattern for timeouts that
 * keep moving), whichever applies while no stream is open: the connection manager's
 * idle_timeout while the connection is idle, and while a request head is arriving,
 * request_headers_timeout from its first byte and stream_idle_timeout from the last byte read
 * (Envoy's stream exists from the head's first byte, so its idle timeout covers a stalled
 * head). A new request does not stop the timer: when it fires it works out what is really due
 * (timer_cb) and starts again for the rest, so a busy keep-alive connection costs no timer
 * operation per request. This makes sure it fires no later than `due`. */
static void timer_arm_by(struct downstream *d, ev_tstamp due)
{
    ev_tstamp now = ev_now(d->w->loop);
    if (ev_is_active(&d->timer) && now + ev_timer_remaining(d->w->loop, &d->timer) <= due + 0.001) {
        return;
    }
    ev_timer_stop(d->w->loop, &d->timer);
    ev_timer_set(&d->timer, due - now > 0.001 ? due - now : 0.001, 0);
    ev_timer_start(d->w->loop, &d->timer);
}

/* When the arriving head times out (0: never); *header_timeout says which limit it is. */
static ev_tstamp head_due(const struct downstream *d, bool *header_timeout)
{
    const struct hcm_cfg *h = d->chain->hcm;
    ev_tstamp due = 0;
    *header_timeout = false;
    if (h->stream_idle_timeout_ms > 0) {
        due = d->t_rx + (double)h->stream_idle_timeout_ms / 1000.0;
    }
    if (h->request_headers_timeout_ms > 0) {
        ev_tstamp hd = d->t_head + (double)h->request_headers_timeout_ms / 1000.0;
        if (due == 0 || hd <= due) {
            due = hd;
            *header_timeout = true;
        }
    }
    return due;
}

static void start_idle_timer(struct downstream *d)
{
    const struct hcm_cfg *h = d->chain->hcm;
    ev_tstamp now = ev_now(d->w->loop);
    d->t_idle = d->t_head = d->t_rx = now; /* a pipelined head starts no earlier than now */
    if (h->idle_timeout_ms > 0) {
        timer_arm_by(d, now + (double)h->idle_timeout_ms / 1000.0);
    }
}

void downstream_stream_done(struct downstream *d)
{
    struct stream *s = d->s;
    bool close_after = s != NULL && s->close_after;
    if (s != NULL) {
        d->s = NULL;
        stream_free(s);
    }
    if (d->closed) {
        return;
    }
    if (close_after || d->draining) {
        downstream_close(d, false);
        return;
    }
    downstream_flush(d);
    if (d->closed) {
        return;
    }
    start_idle_timer(d);
    if (buf_len(&d->rbuf) > 0) {
        ev_feed_event(d->w->loop, &d->io, EV_CUSTOM); /* the next pipelined request */
    }
    /* An idle keep-alive connection holds no buffer or head memory. */
    buf_release(&d->rbuf);
    h1_parser_release(d->parser);
}

void downstream_drain_soft(struct downstream *d)
{
    d->draining = true; /* the next response says connection: close (stream.c) */
    if (d->h2 != NULL) {
        downstream_h2_drain(d);
    }
}

void downstream_drain(struct downstream *d)
{
    d->draining = true; /* the next response says connection: close (stream.c) */
    if (d->h2 != NULL) {
        downstream_h2_drain(d);
        return;
    }
    if (d->s == NULL && !h1_parser_in_message(d->parser)) {
        STAT_INC(hstats(d)->downstream_cx_drain_close);
        downstream_close(d, false);
    }
}

/* Answers `status` with `reason` and response flag `flag`, then closes: the request cannot go
 * on (its bytes are bad, or its head never arrived). */
static void reply_and_close(struct downstream *d, int status, const char *reason, uint32_t flag,
                            const char *details)
{
    if (d->s != NULL && !d->s->finished) {
        if (d->s->resp_started) {
            downstream_close(d, true);
            return;
        }
        if (details != NULL) {
            d->s->details = details;
        }
        d->s->flags |= flag;
        d->s->close_after = true;
        stream_local_reply(d->s, status, reason, flag);
        if (!d->closed) {
            downstream_close(d, false);
        }
        return;
    }
    /* No stream yet: answer directly (Envoy logs these too, but with no request fields). */
    struct stream *s = stream_new(d);
    d->s = s;
    s->close_after = true;
    s->req_done = true;
    s->details = details;
    stream_local_reply(s, status, reason, flag);
    if (!d->closed) {
        downstream_close(d, false);
    }
}

/* Answers a request the parser rejected, then closes. */
static void protocol_error(struct downstream *d, int status, const char *reason)
{
    STAT_INC(hstats(d)->downstream_cx_protocol_error);
    LOG_D("downstream %s: bad request (%d): %s", d->peer_ip, status, reason);
    /* Envoy's details for its header limits; the other parse errors are http1.codec_error */
    const char *details = status != 431 ? NULL
                          : str_has_prefix(str_from_c(reason), STR_LIT("too many "))
                              ? "http1.too_many_headers"
                              : "http1.headers_too_large";
    reply_and_close(d, status, reason, RF_DPE, details);
}

/* Feeds `p[0..len)` to the parser until it needs more bytes, a request waits for its
 * response (pipelining), or the connection ends. Returns how many bytes were consumed. */
static size_t feed(struct downstream *d, const uint8_t *p, size_t len)
{
    size_t off = 0;
    while (!d->closed && !d->closing && off < len) {
        if (d->s != NULL && d->s->req_done) {
            break; /* pipelined: wait for the current response */
        }
        ssize_t n = h1_parser_feed(d->parser, p + off, len - off);
        if (d->closed) {
            break;
        }
        if (n < 0) {
            const char *why = NULL;
            int status = h1_parser_error(d->parser, &why);
            protocol_error(d, status ? status : 400, why ? why : "bad request");
            break;
        }
        off += (size_t)n;
        if (n == 0) {
            break;
        }
    }
    return off;
}

/* After a batch of parsing: send what it produced, in one write per side. */
static void flush_both(struct downstream *d)
{
    if (d->closed) {
        return;
    }
    if (d->s != NULL && d->s->uc != NULL) {
        upstream_flush(d->s->uc);
    }
    if (!d->closed) {
        downstream_flush(d);
    }
}

static void process(struct downstream *d)
{
    size_t n = feed(d, buf_head(&d->rbuf), buf_len(&d->rbuf));
    if (!d->closed) {
        buf_consume(&d->rbuf, n);
    }
    flush_both(d);
}

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)

/* HTTP/2 input, and AUTO's choice of codec on the first bytes: HTTP/2 when they are the
 * connection preface. Returns true when the bytes were taken here (by HTTP/2, or kept as a
 * partial preface); false when they are HTTP/1's. `p` is in scratch, or in rbuf's tail (not
 * committed yet) when bytes were held over. */
static bool h2_input(struct downstream *d, const uint8_t *p, size_t n, bool scratch)
{
    if (!scratch) {
        buf_commit(&d->rbuf, n);
        p = buf_head(&d->rbuf);
        n = buf_len(&d->rbuf);
    }
    if (d->sniff) {
        size_t k = n < H2_PREFACE_LEN ? n : H2_PREFACE_LEN;
        if (memcmp(p, h2_preface, k) != 0) {
            d->sniff = false; /* HTTP/1 */
            if (!scratch) {
                process(d);
                return true;
            }
            return false;
        }
        if (k < H2_PREFACE_LEN) {
            if (scratch) {
                buf_append(&d->rbuf, p, n);
            }
            return true; /* wait for the rest of the preface */
        }
        d->sniff = false;
        downstream_h2_start(d);
    }
    ev_timer_stop(d->w->loop, &d->timer); /* no longer idle; the session re-arms it */
    downstream_h2_feed(d, p, n);
    if (!scratch && !d->closed) {
        buf_consume(&d->rbuf, n);
        buf_release(&d->rbuf);
    }
    return true;
}

/* The chain's network RBAC filters on the connection's first bytes (rbac_network.h): false
 * when denied, and the connection is closed (what it sent is dropped). */
static bool rbac_allows(struct downstream *d)
{
    struct rbac_net_conn conn = {.peer_ip = str_from_c(d->peer_ip),
                                 .direct_ip = str_from_c(d->direct_ip),
                                 .local = &d->local.sa,
                                 .tls = d->tls};
    if (rbac_network_allow(d->chain, d->sc->stats->ext, &conn)) {
        return true;
    }
    buf_consume(&d->wbuf, buf_len(&d->wbuf));
    downstream_close(d, false);
    return false;
}

static void on_readable(struct downstream *d)
{
    /* With nothing held over, read into the worker's scratch buffer and keep only what the
     * parser could not consume yet (a partial head, or pipelined requests): most requests are
     * parsed straight from the scratch buffer, so an idle or request-at-a-time connection
     * holds no read buffer at all. */
    bool scratch = buf_len(&d->rbuf) == 0;
    uint8_t *p;
    size_t room;
    if (scratch) {
        p = d->w->scratch;
        room = sizeof(d->w->scratch);
    } else {
        if (buf_len(&d->rbuf) >= buffer_limit(d)) {
            downstream_pause_read(d, true);
            return;
        }
        p = buf_reserve(&d->rbuf, DOWNSTREAM_READ_CHUNK);
        room = buf_tail_room(&d->rbuf);
    }
    ssize_t n = sock_recv(d->fd, d->tls, p, room);
    if (d->tls != NULL && d->tls->just_done) {
        tls_established(d);
        if (d->closed) {
            return;
        }
        if (buf_len(&d->wbuf) > 0) {
            downstream_flush(d); /* what waited for the handshake (HTTP/2's SETTINGS) */
            if (d->closed) {
                return;
            }
        }
    }
    if (n == -EAGAIN) {
        if (d->tls != NULL && d->tls->want_write && !d->want_write) {
            d->want_write = true; /* OpenSSL must write before it can read on */
            set_events(d);
        }
        return;
    }
    if (n == -EPROTO && d->tls != NULL) {
        tls_broken(d);
        return;
    }
    if (n < 0) {
        d->peer_eof = true;
        downstream_close(d, true);
        return;
    }
    if (n == 0) {
        /* The client closed. As in Envoy, HTTP/1 has no half-close: a request still waiting
         * for its response is cancelled (flag DC) and its upstream connection closed. */
        d->peer_eof = true;
        downstream_close(d, d->s != NULL);
        return;
    }
    if (d->rx_bytes == 0 && d->chain->n_rbac > 0 && !rbac_allows(d)) {
        return;
    }
    d->rx_bytes += (uint64_t)n;
    stat_add(&hstats(d)->downstream_cx_rx_bytes_total, (uint64_t)n);
    if ((d->h2 != NULL || d->sniff) && h2_input(d, p, (size_t)n, scratch)) {
        return;
    }
    if (d->s == NULL) {
        d->t_rx = ev_now(d->w->loop);
        if (!h1_parser_in_message(d->parser)) {
            d->t_head = d->t_rx; /* a new head starts */
        }
    }
    if (!scratch) {
        buf_commit(&d->rbuf, (size_t)n);
        process(d);
    } else {
        size_t used = feed(d, p, (size_t)n);
        if (!d->closed && used < (size_t)n) {
            buf_append(&d->rbuf, p + used, (size_t)n - used);
        }
        flush_both(d);
    }
    if (!d->closed && d->s == NULL && h1_parser_in_message(d->parser)) {
        bool header_timeout;
        ev_tstamp due = head_due(d, &header_timeout);
        if (due > 0) {
            timer_arm_by(d, due); /* a head is arriving */
        }
    }
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct downstream *d = io->data;
    if (d->closed) {
        return;
    }
    if (revents & EV_WRITE) {
        if (d->h2 != NULL) {
            downstream_h2_flush_now(d);
        } else {
            downstream_flush(d);
        }
        if (d->closed) {
            return;
        }
    }
    if (revents & EV_CUSTOM) {
        if (d->h2 != NULL) {
            downstream_h2_flush(d);
            return;
        }
        if (!d->read_paused) {
            process(d);
            if (d->tls != NULL && !d->closed && !d->read_paused && buf_len(&d->rbuf) == 0 &&
                tls_conn_pending(d->tls)) {
                ev_feed_event(loop, io, EV_READ);
            }
        }
        return;
    }
    if ((revents & EV_READ) && !d->read_paused && !d->closing) {
        on_readable(d);
        if (d->tls != NULL && !d->closed && !d->read_paused && !d->closing &&
            tls_conn_pending(d->tls)) {
            ev_feed_event(loop, io, EV_READ); /* records TLS read ahead: the socket is drained */
        }
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct downstream *d = t->data;
    if (d->tls != NULL && !d->tls->handshake_done && d->chain->handshake_timeout_ms > 0) {
        ev_tstamp due = d->t_open + (double)d->chain->handshake_timeout_ms / 1000.0;
        if (due - ev_now(loop) <= 0.001) {
            STAT_INC(d->sc->stats->listener[d->chain->listener->index]
                         .downstream_cx_transport_socket_connect_timeout);
            downstream_close(d, false);
            return;
        }
        timer_arm_by(d, due);
    }
    if (d->s != NULL) {
        return; /* the stream's own timers apply; started again when it is done */
    }
    if (d->h2 != NULL) {
        /* HTTP/2 stops the timer on every read and starts it when the last stream closes */
        STAT_INC(hstats(d)->downstream_cx_idle_timeout);
        downstream_close(d, false);
        return;
    }
    ev_tstamp now = ev_now(loop);
    if (h1_parser_in_message(d->parser)) {
        bool header_timeout;
        ev_tstamp due = head_due(d, &header_timeout);
        if (due == 0) {
            return;
        }
        if (due - now > 0.001) {
            timer_arm_by(d, due);
        } else if (header_timeout) {
            STAT_INC(hstats(d)->downstream_rq_header_timeout);
            protocol_error(d, 408, "request header timeout");
        } else {
            STAT_INC(hstats(d)->downstream_rq_idle_timeout);
            reply_and_close(d, 408, "stream timeout", RF_SI, NULL);
        }
        return;
    }
    const struct hcm_cfg *h = d->chain->hcm;
    if (h->idle_timeout_ms == 0) {
        return;
    }
    ev_tstamp due = d->t_idle + (double)h->idle_timeout_ms / 1000.0;
    if (due - now > 0.001) {
        timer_arm_by(d, due);
        return;
    }
    STAT_INC(hstats(d)->downstream_cx_idle_timeout);
    downstream_close(d, false);
}

void downstream_accept(struct worker *w, const struct accepted *a)
{
    struct downstream *d = slab_alloc(&w->dc_slab); /* sized for the struct plus its parser */
    d->w = w;
    d->chain = a->chain;
    d->sc = a->sc;
    d->draining = false;
    d->fd = a->fd;
    int fd = a->fd;
    d->t_open = ev_now(w->loop);
    d->id = worker_conn_id(w);
    buf_init(&d->rbuf);
    buf_init(&d->wbuf);
    accepted_addr_text(a->peer, d->peer_ip, &d->peer_port);
    accepted_addr_text(a->direct != NULL ? a->direct : a->peer, d->direct_ip, &d->direct_port);
    sockaddr_ip_set(&d->local, a->local);
    d->peer_internal = trust_text_is_internal(str_from_c(d->peer_ip));
    const struct hcm_cfg *h = a->chain->hcm;
    size_t max_head = (size_t)h->max_request_headers_kb * 1024;
    d->parser = h1_parser_init((char *)d + WORKER_OBJ_ALIGN(sizeof(*d)), H1_REQUEST, max_head,
                               h->max_request_headers_count, &parser_cbs, d);
    h1_parser_use_caches(d->parser, &w->h1_arena_cache, &w->h1_head_cache);
    ev_io_init(&d->io, io_cb, fd, EV_READ);
    d->io.data = d;
    ev_timer_init(&d->timer, timer_cb, 0, 0);
    d->timer.data = d;
    list_insert_tail(&w->downstreams, &d->link);
    ev_io_start(w->loop, &d->io);
    start_idle_timer(d);
    d->ops = &downstream_h1_ops;
    d->sniff = h->codec == CODEC_AUTO;

    struct listener_stats *ls = &a->sc->stats->listener[a->chain->listener->index];
    STAT_INC(ls->downstream_cx_total);
    STAT_INC(ls->downstream_cx_active);
    struct hcm_stats *hs = hstats(d);
    STAT_INC(hs->downstream_cx_total);
    STAT_INC(hs->downstream_cx_http1_total);
    STAT_INC(hs->downstream_cx_active);
    STAT_INC(hs->downstream_cx_http1_active);
    if (a->chain->tls != NULL) {
        d->tls = tls_conn_new(a->chain->tls, fd);
        if (d->tls == NULL) {
            downstream_close(d, true);
            return;
        }
        STAT_INC(hs->downstream_cx_ssl_total);
        STAT_INC(hs->downstream_cx_ssl_active);
        if (a->chain->handshake_timeout_ms > 0) {
            timer_arm_by(d, d->t_open + (double)a->chain->handshake_timeout_ms / 1000.0);
        }
    }
    if (h->codec == CODEC_HTTP2) {
        downstream_h2_start(d); /* nghttp2 checks the preface */
        downstream_h2_flush(d); /* our SETTINGS (after the handshake, over TLS) */
    }
}

/* ---- the HTTP/1 stream ops: HTTP/1.1 bytes into wbuf ---- */

static void h1_send_head(struct stream *s, int status, struct headers *h, bool end)
{
    (void)end;
    if (s->resp_chunked) {
        headers_remove(h, STR_LIT("content-length"));
        headers_add(h, STR_LIT("transfer-encoding"), STR_LIT("chunked"));
    }
    if (s->close_after) {
        headers_add(h, STR_LIT("connection"), STR_LIT("close"));
    }
    h1_encode_response_head(&s->dc->wbuf, status, h);
}

static void h1_send_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    if (len > 0) {
        if (s->resp_chunked) {
            h1_encode_chunk(&s->dc->wbuf, p, len);
        } else {
            buf_append(&s->dc->wbuf, p, len);
        }
    }
    if (end && s->resp_chunked) {
        h1_encode_chunk(&s->dc->wbuf, NULL, 0);
    }
}

/* Response trailers: with the HCM's http_protocol_options.enable_trailers they end a chunked
 * body as its trailer section (fields h1_trailer_allowed() lets through); a response framed by
 * content-length has no room for them. Without it (Envoy's default) the body just ends. As in
 * Envoy's HTTP/1 encoder. */
static void h1_send_trailers(struct stream *s, const struct headers *t)
{
    if (s->resp_chunked && s->hcm->h1_enable_trailers) {
        h1_encode_last_chunk(&s->dc->wbuf, t);
        return;
    }
    h1_send_body(s, NULL, 0, true);
}

static void h1_send_continue(struct stream *s)
{
    buf_append_str(&s->dc->wbuf, "HTTP/1.1 100 Continue\r\n\r\n");
}

static void h1_reset(struct stream *s)
{
    downstream_close(s->dc, true); /* finishes the stream (stream_downstream_reset) */
}

static size_t h1_buffered(const struct stream *s)
{
    return buf_len(&s->dc->wbuf);
}

static void h1_pause_read(struct stream *s, bool pause)
{
    downstream_pause_read(s->dc, pause);
}

static void h1_stream_done(struct stream *s)
{
    downstream_stream_done(s->dc);
}

const struct downstream_ops downstream_h1_ops = {
    .send_head = h1_send_head,
    .send_body = h1_send_body,
    .send_trailers = h1_send_trailers,
    .send_continue = h1_send_continue,
    .reset = h1_reset,
    .buffered = h1_buffered,
    .pause_read = h1_pause_read,
    .stream_done = h1_stream_done,
};
