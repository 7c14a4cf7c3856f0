/* tracing_report: the worker's reporters, off the request path (see tracing.h).
 *
 * X-Ray: each segment is one UDP datagram (the daemon's header line and the segment), sent with
 * a non-blocking send() on the worker's socket; EAGAIN or any error drops it (counted).
 *
 * Zipkin: spans are appended to the worker's buffer (a JSON array in the making, at most
 * ZIPKIN_MAX_PENDING spans: past it a span is dropped, counted in spans_dropped) and flushed
 * as one report when ZIPKIN_MIN_FLUSH spans wait or every ZIPKIN_FLUSH_MS (Envoy's defaults
 * for tracing.zipkin.min_flush_spans and flush_interval_ms). A report is one HTTP/1.1 POST on a
 * new connection to the collector cluster's first endpoint (Connection: close), one at a time
 * per worker, bounded by ZIPKIN_REPORT_TIMEOUT_MS: a 2xx answer counts reports_sent and
 * spans_sent, another status reports_dropped, a connection failure or timeout reports_failed. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#include "proxy/core/xmalloc.h"
#include "proxy/tracing/tracing.h"
#include "proxy/worker.h"

#define ZIPKIN_MIN_FLUSH 5
#define ZIPKIN_FLUSH_MS 5000
#define ZIPKIN_MAX_PENDING 1000
#define ZIPKIN_REPORT_TIMEOUT_MS 5000
#define MAX_SINKS 4

static _Atomic uint64_t c_spans_sent, c_reports_sent, c_reports_dropped, c_reports_failed,
    c_timer_flushed, c_spans_dropped, c_xray_sent, c_xray_dropped;
static _Atomic bool seen_zipkin, seen_xray;

static void bump(_Atomic uint64_t *c, uint64_t v)
{
    atomic_fetch_add_explicit(c, v, memory_order_relaxed);
}

struct zipkin_sink;

struct sink {
    enum tracer_kind kind;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    struct worker *w;
    int fd; /* xray: the UDP socket; zipkin: the report's connection, or -1 */
    /* zipkin */
    char *endpoint, *host;
    struct buf pending; /* span objects joined by ',' */
    uint32_t n_pending;
    struct buf out; /* the report being sent */
    uint32_t n_out;
    size_t out_off;
    char resp[64];
    size_t resp_len;
    ev_io io;
    ev_timer flush;   /* ZIPKIN_FLUSH_MS */
    ev_timer timeout; /* the report's deadline */
};

struct tracing_worker {
    struct sink sinks[MAX_SINKS];
    uint32_t n;
    struct xray_sampler xray;
};

static struct tracing_worker *tw_of(struct worker *w)
{
    if (w->tracing == NULL) {
        w->tracing = xcalloc(1, sizeof(*w->tracing));
    }
    return w->tracing;
}

struct xray_sampler *tracing_xray_sampler(struct worker *w)
{
    return &tw_of(w)->xray;
}

static void zipkin_flush(struct sink *k);

static void report_close(struct sink *k)
{
    ev_io_stop(k->w->loop, &k->io);
    ev_timer_stop(k->w->loop, &k->timeout);
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
    buf_deinit(&k->out);
    k->n_out = 0;
    if (k->n_pending >= ZIPKIN_MIN_FLUSH) {
        zipkin_flush(k);
    }
}

static void report_failed(struct sink *k)
{
    bump(&c_reports_failed, 1);
    report_close(k);
}

/* "HTTP/1.1 202 ..." */
static void report_answered(struct sink *k)
{
    int code = 0;
    if (k->resp_len >= 12 && memcmp(k->resp, "HTTP/1.", 7) == 0) {
        code = (k->resp[9] - '0') * 100 + (k->resp[10] - '0') * 10 + (k->resp[11] - '0');
    }
    if (code >= 200 && code < 300) {
        bump(&c_reports_sent, 1);
        bump(&c_spans_sent, k->n_out);
    } else {
        bump(&c_reports_dropped, 1);
    }
    report_close(k);
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct sink *k = io->data;
    if (revents & EV_WRITE) {
        if (k->out_off == 0) {
            int err = 0;
            socklen_t el = sizeof(err);
            if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
                report_failed(k);
                return;
            }
        }
        while (k->out_off < buf_len(&k->out)) {
            ssize_t n = send(k->fd, buf_head(&k->out) + k->out_off, buf_len(&k->out) - k->out_off,
                             MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                    return;
                }
                report_failed(k);
                return;
            }
            k->out_off += (size_t)n;
        }
        ev_io_stop(k->w->loop, &k->io);
        ev_io_set(&k->io, k->fd, EV_READ);
        ev_io_start(k->w->loop, &k->io);
        return;
    }
    for (;;) {
        char tmp[512];
        ssize_t n = recv(k->fd, tmp, sizeof(tmp), 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
                return;
            }
            report_failed(k);
            return;
        }
        if (n == 0) {
            if (k->resp_len == 0) {
                report_failed(k);
            } else {
                report_answered(k);
            }
            return;
        }
        size_t take =
            (size_t)n < sizeof(k->resp) - k->resp_len ? (size_t)n : sizeof(k->resp) - k->resp_len;
        memcpy(k->resp + k->resp_len, tmp, take);
        k->resp_len += take;
        if (k->resp_len >= 12) {
            report_answered(k); /* the status line is all a report needs */
            return;
        }
    }
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    report_failed(t->data);
}

static void zipkin_flush(struct sink *k)
{
    if (k->fd >= 0 || k->n_pending == 0) {
        return; /* one report at a time: the next flush takes what waits */
    }
    buf_init(&k->out);
    buf_printf(&k->out,
               "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\nConnection: close\r\n\r\n[",
               k->endpoint, k->host, buf_len(&k->pending) + 2);
    buf_append(&k->out, buf_head(&k->pending), buf_len(&k->pending));
    buf_append(&k->out, "]", 1);
    k->n_out = k->n_pending;
    k->n_pending = 0;
    buf_deinit(&k->pending);
    buf_init(&k->pending);
    k->out_off = 0;
    k->resp_len = 0;
    k->fd = socket(k->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (k->fd < 0) {
        report_failed(k);
        return;
    }
    if (connect(k->fd, (const struct sockaddr *)&k->addr, k->addr_len) != 0 &&
        errno != EINPROGRESS) {
        report_failed(k);
        return;
    }
    ev_io_init(&k->io, io_cb, k->fd, EV_WRITE);
    k->io.data = k;
    ev_io_start(k->w->loop, &k->io);
    ev_timer_init(&k->timeout, timeout_cb, ZIPKIN_REPORT_TIMEOUT_MS / 1000.0, 0);
    k->timeout.data = k;
    ev_timer_start(k->w->loop, &k->timeout);
}

static void flush_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct sink *k = t->data;
    if (k->n_pending > 0 && k->fd < 0) {
        bump(&c_timer_flushed, 1);
        zipkin_flush(k);
    }
}

static struct sink *sink_for(struct worker *w, const struct tracer_cfg *tc)
{
    struct tracing_worker *tw = tw_of(w);
    for (uint32_t i = 0; i < tw->n; i++) {
        struct sink *k = &tw->sinks[i];
        if (k->kind == tc->kind && k->addr_len == tc->addr_len &&
            memcmp(&k->addr, &tc->addr, tc->addr_len) == 0) {
            return k;
        }
    }
    if (tw->n == MAX_SINKS) {
        return NULL;
    }
    struct sink *k = &tw->sinks[tw->n++];
    memset(k, 0, sizeof(*k));
    k->kind = tc->kind;
    k->addr = tc->addr;
    k->addr_len = tc->addr_len;
    k->w = w;
    k->fd = -1;
    if (tc->kind == TRACER_XRAY) {
        k->fd = socket(tc->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (k->fd >= 0 && connect(k->fd, (const struct sockaddr *)&tc->addr, tc->addr_len) != 0) {
            close(k->fd);
            k->fd = -1;
        }
    } else {
        k->endpoint = xstrndup(tc->collector_endpoint.p, tc->collector_endpoint.len);
        k->host = xstrndup(tc->collector_hostname.p, tc->collector_hostname.len);
        buf_init(&k->pending);
        ev_timer_init(&k->flush, flush_cb, ZIPKIN_FLUSH_MS / 1000.0, ZIPKIN_FLUSH_MS / 1000.0);
        k->flush.data = k;
        ev_timer_start(w->loop, &k->flush);
        ev_unref(w->loop); /* the flush timer alone does not keep the loop running */
    }
    return k;
}

void tracing_report(struct worker *w, const struct tracer_cfg *tc, const char *p, size_t len)
{
    struct sink *k = sink_for(w, tc);
    if (tc->kind == TRACER_XRAY) {
        if (k == NULL || k->fd < 0 || send(k->fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            bump(&c_xray_dropped, 1);
        } else {
            bump(&c_xray_sent, 1);
        }
        return;
    }
    if (k == NULL || k->n_pending >= ZIPKIN_MAX_PENDING) {
        bump(&c_spans_dropped, 1);
        return;
    }
    if (k->n_pending > 0) {
        buf_append(&k->pending, ",", 1);
    }
    buf_append(&k->pending, p, len);
    k->n_pending++;
    if (k->n_pending >= ZIPKIN_MIN_FLUSH) {
        zipkin_flush(k);
    }
}

void tracing_worker_free(struct worker *w)
{
    struct tracing_worker *tw = w->tracing;
    if (tw == NULL) {
        return;
    }
    for (uint32_t i = 0; i < tw->n; i++) {
        struct sink *k = &tw->sinks[i];
        if (k->kind == TRACER_ZIPKIN) {
            ev_io_stop(w->loop, &k->io);
            ev_timer_stop(w->loop, &k->timeout);
            ev_ref(w->loop);
            ev_timer_stop(w->loop, &k->flush);
            buf_deinit(&k->pending);
            buf_deinit(&k->out);
            free(k->endpoint);
            free(k->host);
        }
        if (k->fd >= 0) {
            close(k->fd);
        }
    }
    free(tw);
    w->tracing = NULL;
}

void tracing_note_driver(enum tracer_kind k)
{
    atomic_store_explicit(k == TRACER_ZIPKIN ? &seen_zipkin : &seen_xray, true,
                          memory_order_relaxed);
}

void tracing_counters_get(struct tracing_counters *o)
{
    o->zipkin_spans_sent = atomic_load_explicit(&c_spans_sent, memory_order_relaxed);
    o->zipkin_reports_sent = atomic_load_explicit(&c_reports_sent, memory_order_relaxed);
    o->zipkin_reports_dropped = atomic_load_explicit(&c_reports_dropped, memory_order_relaxed);
    o->zipkin_reports_failed = atomic_load_explicit(&c_reports_failed, memory_order_relaxed);
    o->zipkin_timer_flushed = atomic_load_explicit(&c_timer_flushed, memory_order_relaxed);
    o->zipkin_spans_dropped = atomic_load_explicit(&c_spans_dropped, memory_order_relaxed);
    o->xray_segments_sent = atomic_load_explicit(&c_xray_sent, memory_order_relaxed);
    o->xray_segments_dropped = atomic_load_explicit(&c_xray_dropped, memory_order_relaxed);
    o->zipkin = atomic_load_explicit(&seen_zipkin, memory_order_relaxed);
    o->xray = atomic_load_explicit(&seen_xray, memory_order_relaxed);
}
