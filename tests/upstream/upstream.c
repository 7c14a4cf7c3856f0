/* remora-test-upstream: the HTTP/1.1 and HTTP/2 (h2c) server behind remora in integration tests,
 * the demo and the benchmark. It parses HTTP/1.1 requests with llhttp (keep-alive, pipelining,
 * chunked request bodies) and serves connections that open with the HTTP/2 preface with nghttp2
 * (upstream_h2.c), answers each request as its control headers ask, and counts what it saw so a
 * test can assert "the upstream got exactly N requests". Of the proxy it uses only core/ (buf,
 * str, list, file).
 *
 * README
 * ------
 *   remora-test-upstream [--listen ADDR:PORT] [--name NAME] [--port-file PATH] [--record PATH]
 *                        [--threads N] [--h2-max-streams N] [--help]
 *
 *   --listen ADDR:PORT  address to bind (default 127.0.0.1:0; port 0 picks a free port;
 *                       IPv6 as [::1]:PORT)
 *   --name NAME         name used in responses (default "upstream")
 *   --port-file PATH    write the bound port and "\n" to PATH once listening (written to a
 *                       temporary file, then renamed, so a reader never sees half of it)
 *   --record PATH       append every raw byte received to PATH (control connections excepted,
 *                       see below), for smuggling tests
 *   --threads N         N event loops, each with its own SO_REUSEPORT listener (default 1)
 *   --h2-max-streams N  SETTINGS_MAX_CONCURRENT_STREAMS advertised on HTTP/2 connections
 *                       (default 100; 0-2147483647)
 *   Once listening it prints "listening on ADDR:PORT" to stdout. SIGTERM/SIGINT exit with 0.
 *
 * Default response to any request:
 *   200, content-type: text/plain, x-upstream-name: NAME, content-length, body "NAME\n".
 *   Written with one send per batch of pipelined requests, no allocation per request.
 *
 * Per-request control, by request header (or the same in the query string: ?status=503&
 * delay_ms=100&body_size=10&chunked=1&body_delay_ms=5&reset=mid-body&close=1&hang=1&
 * malformed=cl-te&echo=1&connection_close=1; '_' and '-' are interchangeable there). An unknown
 * x-upstream-* header or a bad value gets a 400 that says which.
 *   x-upstream-status: N           status N (100-999; 1xx, 204, 304 and HEAD get no body)
 *   x-upstream-body-size: N        body of N pattern bytes, byte i = 'a' + i % 26; streamed with
 *                                  backpressure, memory stays flat for any N
 *   x-upstream-chunked: 1          transfer-encoding: chunked (chunks of up to 64 KiB)
 *   x-upstream-delay-ms: N         wait N ms after the request before the response head
 *   x-upstream-body-delay-ms: N    wait N ms between the head and the body
 *   x-upstream-drip-ms: N          send the body one byte at a time (one-byte chunks when
 *                                  chunked), N ms apart (HTTP/1.1 only)
 *   x-upstream-reset: before-headers | after-headers | mid-body
 *                                  close with SO_LINGER{1,0} (TCP RST) at that point; mid-body
 *                                  sends the head (announcing the full length) and half the body
 *   x-upstream-close: 1            read the request, close without any response (FIN)
 *   x-upstream-hang: 1             never answer; keep the connection open (input is still read,
 *                                  recorded and dropped)
 *   x-upstream-early: 1            answer as soon as the request head arrives, before reading
 *                                  the body (a server refusing it, as with 413), with
 *                                  "connection: close"; then FIN, and read and drop the rest
 *                                  until the peer closes (HTTP/1.1 only)
 *   x-upstream-malformed: MODE     a broken response, then (except where noted) FIN:
 *       cl-te           content-length and transfer-encoding: chunked together
 *       bare-lf         every line ends in a bare LF
 *       bare-cr         a header line "X: a\rSet-Cookie: y"
 *       short-body      content-length: 100, then 3 bytes, then FIN
 *       extra-response  a normal response followed by a second, unsolicited one (header
 *                       x-upstream-extra: 1, body "extra-response\n"); the connection stays open
 *       many-100        10 000 "HTTP/1.1 100 Continue" interim responses, then a normal one;
 *                       the connection stays open
 *       huge-headers    a normal response with ~100 KB of x-huge-NNN headers; stays open
 *   x-upstream-echo: 1             body is JSON: {"name":..., "method":..., "path":...,
 *                                  "version":"1.1", "headers":[[name, value], ...] (in order, names
 *                                  as received), "trailers":[[name, value], ...], "body_len":N,
 *                                  "peer_port":N (the TCP port the connection came from)}.
 *                                  Bytes outside printable ASCII are written as \u00XX, so
 *                                  value.encode("latin-1") gives back the raw bytes.
 *   x-upstream-connection-close: 1 send "connection: close" and close after the response
 *   x-upstream-response-header: H: V   add the line "H: V" to the response head (repeatable)
 *   x-upstream-only: NAME[,NAME]   the faults asked for (status, delay-ms, body-delay-ms,
 *                                  drip-ms, reset, close, hang, early, malformed,
 *                                  connection-close) apply only on the upstreams with these
 *                                  --name values; the others answer normally (echo, body-size,
 *                                  chunked, response-header still apply). For clusters whose
 *                                  endpoints should differ.
 * A request with "connection: close" (or HTTP/1.0 without keep-alive) is answered with
 * "connection: close" and the connection is closed after it. "expect: 100-continue" on a request
 * with a body gets "HTTP/1.1 100 Continue" first. A request llhttp rejects gets 400 (431 for
 * more than 1 MiB of request head) and the connection is closed.
 *
 * HTTP/2 (h2c with prior knowledge, on the same listener): a connection whose first bytes are
 * the client preface "PRI * HTTP/2.0..." is served by an nghttp2 server session; its requests
 * are streams, answered once the request is complete (END_STREAM), independently of each other.
 * The controls above mean the same, except:
 *   x-upstream-status: 1xx, x-upstream-malformed (the modes above)   400 (no such thing in
 *                                  HTTP/2)
 *   x-upstream-chunked: 1          no content-length (the body is just DATA frames)
 *   x-upstream-reset: ...          RST_STREAM (code INTERNAL_ERROR, or x-upstream-rst-code) on
 *                                  that stream, at the same points; the connection goes on
 *   x-upstream-hang: 1             that stream is never answered; the others are
 *   x-upstream-close: 1            the whole TCP connection gets a FIN (no GOAWAY), every
 *                                  stream on it unanswered
 *   x-upstream-connection-close: 1 same as x-upstream-goaway: 0
 *   x-upstream-echo: 1             also "version": "2"; "headers" lists the pseudo-headers first,
 *                                  as received; "trailers" the request's trailing HEADERS
 *   x-upstream-response-header: H: V   H is sent lower-cased; a bad H or V is a 400
 * and these exist only over HTTP/2 (HTTP/1.1 answers them with 400):
 *   x-upstream-refuse: 1           RST_STREAM(REFUSED_STREAM) as soon as the headers arrive; the
 *                                  request is not processed and not counted in "requests"
 *   x-upstream-goaway: CODE        when the headers arrive, GOAWAY(last_stream_id = this stream,
 *                                  error CODE; 0 = NO_ERROR). This stream and lower ones are
 *                                  still answered; higher ones are not processed (nghttp2
 *                                  ignores them); the connection closes once streams finish
 *   x-upstream-trailer: NAME: VALUE    response trailers after the body (repeatable; NAME
 *                                  lower-cased); with no body, HEADERS then trailing HEADERS
 *   x-upstream-rst-code: N         error code of x-upstream-reset's RST_STREAM
 *   x-upstream-max-streams: N      when the headers arrive, a SETTINGS frame advertising
 *                                  MAX_CONCURRENT_STREAMS N on this connection (0 included);
 *                                  the request itself is answered as usual
 *   x-upstream-malformed: MODE     a malformed response (the stream and connection go on):
 *       upper-name      a header field named X-Upper-Case (RFC 9113 8.2.1), END_STREAM
 *       no-status       a response HEADERS without :status, END_STREAM
 *       bad-cl          content-length: abc, END_STREAM
 *       cl-mismatch     content-length: 100, then the 6 bytes "short\n" and END_STREAM
 * Per stream at most 128 KiB of header and trailer bytes (and 4096 fields) are kept: past that
 * the answer is 431. Body bytes are generated as the peer's flow-control window allows, so a big
 * body holds no memory; nghttp2's own limits (max concurrent streams, flood and reset-rate
 * checks) bound the rest. A protocol error makes nghttp2 send GOAWAY and the connection close.
 * The control endpoints below answer over HTTP/2 too; those streams count nowhere.
 *
 * Counters:
 *   GET /__upstream/stats   {"requests":N, "connections":N, "bytes_received":N,
 *                            "parse_errors":N, "incomplete_requests":N, "active_connections":N,
 *                            "h2_connections":N, "h2_streams":N,
 *                            "max_concurrent_streams_seen":N}
 *   POST /__upstream/reset  zeroes every counter but active_connections; answers the stats.
 * A connection whose first bytes are "GET /__upstream/" or "POST /__upstream/" is a control
 * connection: it is invisible to every counter and to --record. The counters see everything else:
 * requests are complete requests, incomplete_requests are connections that ended mid-request,
 * parse_errors are requests llhttp rejected. HTTP/2 connections count in connections (and
 * h2_connections), their complete requests in requests, streams whose headers arrived in
 * h2_streams (refused ones included), streams that closed before their END_STREAM in
 * incomplete_requests, and a session nghttp2 gave up on (bad preface, flood) in parse_errors.
 * max_concurrent_streams_seen is the most streams open at once on one HTTP/2 connection.
 */
#include "tests/upstream/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <llhttp.h>

#include "proxy/core/buf.h"
#include "proxy/core/file.h"
#include "proxy/core/list.h"
#include "proxy/core/str.h"
#include "proxy/core/xmalloc.h"

/* ---- small helpers ---------------------------------------------------------------------- */

static const char *reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Status";
    }
}

/* Appends `p` as a JSON string. Bytes outside printable ASCII become \u00XX (a Latin-1
 * reading), so the output is always ASCII and the raw bytes can be recovered. */
void json_str(struct buf *b, const char *p, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    size_t plain = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            continue;
        }
        buf_append(b, p + plain, i - plain);
        plain = i + 1;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            buf_append(b, e, sizeof(e));
        } else {
            char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            buf_append(b, e, sizeof(e));
        }
    }
    buf_append(b, p + plain, len - plain);
    buf_append(b, "\"", 1);
}

static struct str hb_str(const struct conn *c, uint32_t off, uint32_t len)
{
    return (struct str){(const char *)c->hb.data + c->hb.start + off, len};
}

static struct str hdr_name(const struct conn *c, const struct hdr *h)
{
    return hb_str(c, h->name_off, h->name_len);
}

static struct str hdr_value(const struct conn *c, const struct hdr *h)
{
    return hb_str(c, h->val_off, h->val_len);
}

static struct str url_str(const struct conn *c)
{
    return hb_str(c, 0, c->url_len);
}

/* ---- response heads ------------------------------------------------------------------------ */

/* Status line, content-type and x-upstream-name. */
static void head_start(struct buf *b, const struct server *s, int status, const char *ctype)
{
    buf_printf(b, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\nx-upstream-name: %.*s\r\n", status,
               reason(status), ctype, STR_FMT(s->name));
}

/* Framing, connection and the blank line. `clen` < 0 means chunked; `has_framing` false
 * writes neither (1xx, 204, 304). `keep_alive_10` says "connection: keep-alive" (HTTP/1.0). */
static void head_end(struct buf *b, bool has_framing, int64_t clen, bool close, bool keep_alive_10)
{
    if (has_framing && clen < 0) {
        buf_append_str(b, "transfer-encoding: chunked\r\n");
    } else if (has_framing) {
        buf_printf(b, "content-length: %lld\r\n", (long long)clen);
    }
    if (close) {
        buf_append_str(b, "connection: close\r\n");
    } else if (keep_alive_10) {
        buf_append_str(b, "connection: keep-alive\r\n");
    }
    buf_append_str(b, "\r\n");
}

/* A complete response with a literal body, honouring c->close_after. */
static void queue_simple(struct conn *c, int status, const char *ctype, const char *body,
                         size_t len)
{
    head_start(&c->out, c->w->srv, status, ctype);
    head_end(&c->out, true, (int64_t)len, c->close_after, c->is_http10);
    buf_append(&c->out, body, len);
}

/* ---- connection teardown and output -------------------------------------------------------- */

void conn_destroy(struct conn *c, bool rst)
{
    struct server *s = c->w->srv;
    ev_io_stop(c->w->loop, &c->rio);
    ev_io_stop(c->w->loop, &c->wio);
    ev_timer_stop(c->w->loop, &c->timer);
    if (rst) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        (void)setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(c->fd);
    if (c->is_active_counted) {
        stat_dec(&s->stats.active);
    }
    if (c->h2 != NULL) {
        h2_free(c);
    } else if (c->klass == CLASS_ORDINARY && c->state != ST_HANG && c->state != ST_LINGER &&
               (c->in_message || buf_len(&c->in) > 0)) {
        stat_add(&s->stats.incomplete, 1);
    }
    list_remove(&c->link);
    buf_deinit(&c->in);
    buf_deinit(&c->out);
    buf_deinit(&c->hb);
    buf_deinit(&c->scratch);
    free(c->hdrs);
    free(c);
}

/* Sends queued output. Returns 0 when drained, 1 when the kernel is full (the write watcher
 * is armed), -1 on a fatal error (the caller destroys the connection). */
int conn_flush(struct conn *c)
{
    while (buf_len(&c->out) > 0) {
        ssize_t n = send(c->fd, buf_head(&c->out), buf_len(&c->out), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!ev_is_active(&c->wio)) {
                ev_io_start(c->w->loop, &c->wio);
            }
            return 1;
        }
        return -1;
    }
    if (ev_is_active(&c->wio)) {
        ev_io_stop(c->w->loop, &c->wio);
    }
    if (c->out.cap > OUT_KEEP_CAP) {
        buf_deinit(&c->out);
    }
    return 0;
}

static void want_read(struct conn *c)
{
    if (!c->peer_eof && buf_len(&c->in) < IN_MAX && !ev_is_active(&c->rio)) {
        ev_io_start(c->w->loop, &c->rio);
    }
}

static void start_timer(struct conn *c, double seconds)
{
    ev_now_update(c->w->loop);
    ev_timer_stop(c->w->loop, &c->timer);
    ev_timer_set(&c->timer, seconds, 0.);
    ev_timer_start(c->w->loop, &c->timer);
}

/* ---- llhttp callbacks ------------------------------------------------------------------------ */

static int hb_append(struct conn *c, const char *at, size_t len)
{
    if (buf_len(&c->hb) + len > HEAD_BYTES_MAX) {
        c->head_too_big = true;
        llhttp_set_error_reason(&c->parser, "request head over 1 MiB");
        return HPE_USER;
    }
    buf_append(&c->hb, at, len);
    return 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = p->data;
    c->in_message = true;
    buf_consume(&c->hb, buf_len(&c->hb));
    c->n_hdrs = 0;
    c->n_head_hdrs = 0;
    c->url_len = 0;
    c->in_field = false;
    c->headers_done = false;
    c->early = false;
    c->body_len = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->url_len += (uint32_t)len;
    return hb_append(c, at, len);
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (!c->in_field) {
        c->in_field = true;
        c->cur.name_off = (uint32_t)buf_len(&c->hb);
        c->cur.name_len = 0;
    }
    c->cur.name_len += (uint32_t)len;
    return hb_append(c, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (!c->in_field) {
        c->cur.name_off = (uint32_t)buf_len(&c->hb);
        c->cur.name_len = 0;
    }
    c->in_field = false;
    c->cur.val_off = (uint32_t)buf_len(&c->hb);
    c->cur.val_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    c->cur.val_len += (uint32_t)len;
    return hb_append(c, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (c->n_hdrs == c->cap_hdrs) {
        c->cap_hdrs = c->cap_hdrs ? c->cap_hdrs * 2 : 32;
        c->hdrs = xrealloc(c->hdrs, c->cap_hdrs * sizeof(*c->hdrs));
    }
    c->hdrs[c->n_hdrs++] = c->cur;
    return 0;
}

static const char *plan_build(struct conn *c, bool *is_default, struct str *bad_key);

static bool has_body(const llhttp_t *p)
{
    return (p->flags & F_CHUNKED) || ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0);
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->headers_done = true;
    c->n_head_hdrs = c->n_hdrs;
    c->method = llhttp_get_method(p);
    c->keep_alive = llhttp_should_keep_alive(p);
    c->is_http10 = p->http_major == 1 && p->http_minor == 0;
    if (has_body(p) && c->klass == CLASS_ORDINARY) {
        /* x-upstream-early: the request is answered now, its body never read. */
        bool is_default;
        struct str bad_key;
        if (plan_build(c, &is_default, &bad_key) == NULL && c->plan.early) {
            c->early = true;
            c->msg_ready = true;
            return HPE_PAUSED;
        }
    }
    if (has_body(p)) {
        for (size_t i = 0; i < c->n_hdrs; i++) {
            if (str_eq_nocase(hdr_name(c, &c->hdrs[i]), STR_LIT("expect")) &&
                str_eq_nocase(str_trim_ows(hdr_value(c, &c->hdrs[i])), STR_LIT("100-continue"))) {
                buf_append_str(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
                break;
            }
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    (void)at;
    struct conn *c = p->data;
    c->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->msg_ready = true;
    return HPE_PAUSED;
}

/* ---- control headers --------------------------------------------------------------------- */

/* Case-insensitive, with '_' and '-' equal, so query keys can use either. */
static bool key_is(struct str key, const char *name)
{
    size_t n = strlen(name);
    if (key.len != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char a = key.p[i] == '_' ? '-' : key.p[i];
        if (a >= 'A' && a <= 'Z') {
            a = (char)(a - 'A' + 'a');
        }
        if (a != name[i]) {
            return false;
        }
    }
    return true;
}

static const char *parse_bool(struct str v, bool *out)
{
    if (str_eq_lit(v, "1") || str_eq_nocase(v, STR_LIT("true"))) {
        *out = true;
        return NULL;
    }
    if (str_eq_lit(v, "0") || str_eq_nocase(v, STR_LIT("false"))) {
        *out = false;
        return NULL;
    }
    return "expected 1 or 0";
}

static const char *parse_u64(struct str v, uint64_t max, uint64_t *out)
{
    unsigned long long n;
    if (str_to_u64(v, &n) != 0 || n > max) {
        return "expected a decimal number in range";
    }
    *out = n;
    return NULL;
}

/* Applies one control `key` (the part after "x-upstream-") with value `v`. Returns NULL or a
 * static error message. `*known` says whether `key` is a control at all. */
const char *apply_control(struct plan *pl, struct str key, struct str v, bool *known)
{
    static const char malformed_names[MAL_COUNT][16] = {
        [MAL_CL_TE] = "cl-te",
        [MAL_BARE_LF] = "bare-lf",
        [MAL_BARE_CR] = "bare-cr",
        [MAL_SHORT_BODY] = "short-body",
        [MAL_EXTRA_RESPONSE] = "extra-response",
        [MAL_MANY_100] = "many-100",
        [MAL_HUGE_HEADERS] = "huge-headers",
        [MAL_H2_UPPER_NAME] = "upper-name",
        [MAL_H2_NO_STATUS] = "no-status",
        [MAL_H2_BAD_CL] = "bad-cl",
        [MAL_H2_CL_MISMATCH] = "cl-mismatch",
    };
    uint64_t n;
    const char *e;
    *known = true;
    if (key_is(key, "status")) {
        if ((e = parse_u64(v, 999, &n)) != NULL || n < 100) {
            return "status: expected 100-999";
        }
        pl->status = (int)n;
    } else if (key_is(key, "body-size")) {
        if ((e = parse_u64(v, UINT64_MAX / 2, &pl->body_size)) != NULL) {
            return e;
        }
        pl->has_body_size = true;
    } else if (key_is(key, "delay-ms")) {
        return parse_u64(v, 3600 * 1000, &pl->delay_ms);
    } else if (key_is(key, "body-delay-ms")) {
        return parse_u64(v, 3600 * 1000, &pl->body_delay_ms);
    } else if (key_is(key, "drip-ms")) {
        return parse_u64(v, 3600 * 1000, &pl->drip_ms);
    } else if (key_is(key, "chunked")) {
        return parse_bool(v, &pl->chunked);
    } else if (key_is(key, "echo")) {
        return parse_bool(v, &pl->echo);
    } else if (key_is(key, "close")) {
        return parse_bool(v, &pl->close_no_response);
    } else if (key_is(key, "hang")) {
        return parse_bool(v, &pl->hang);
    } else if (key_is(key, "early")) {
        return parse_bool(v, &pl->early);
    } else if (key_is(key, "connection-close")) {
        return parse_bool(v, &pl->conn_close);
    } else if (key_is(key, "reset")) {
        if (key_is(v, "before-headers")) {
            pl->reset = RESET_BEFORE_HEADERS;
        } else if (key_is(v, "after-headers")) {
            pl->reset = RESET_AFTER_HEADERS;
        } else if (key_is(v, "mid-body")) {
            pl->reset = RESET_MID_BODY;
        } else {
            return "reset: expected before-headers, after-headers or mid-body";
        }
    } else if (key_is(key, "malformed")) {
        for (size_t i = 1; i < sizeof(malformed_names) / sizeof(malformed_names[0]); i++) {
            if (key_is(v, malformed_names[i])) {
                pl->malformed = (enum malformed)i;
                return NULL;
            }
        }
        return "malformed: unknown mode";
    } else if (key_is(key, "response-header")) {
        /* Applied when the head is written (see queue_head). */
    } else if (key_is(key, "only")) {
        if (v.len == 0) {
            return "only: expected a comma-separated list of upstream names";
        }
        pl->only = v;
    } else if (key_is(key, "refuse")) {
        return parse_bool(v, &pl->refuse);
    } else if (key_is(key, "goaway")) {
        if ((e = parse_u64(v, UINT32_MAX, &n)) != NULL) {
            return "goaway: expected an HTTP/2 error code (0 = NO_ERROR)";
        }
        pl->has_goaway = true;
        pl->goaway_code = (uint32_t)n;
    } else if (key_is(key, "rst-code")) {
        if ((e = parse_u64(v, UINT32_MAX, &n)) != NULL) {
            return "rst-code: expected an HTTP/2 error code";
        }
        pl->has_rst_code = true;
        pl->rst_code = (uint32_t)n;
    } else if (key_is(key, "trailer")) {
        /* Parsed when the trailers are sent (upstream_h2.c); here only marked. */
        pl->has_trailer = true;
    } else if (key_is(key, "max-streams")) {
        if ((e = parse_u64(v, INT32_MAX, &n)) != NULL) {
            return "max-streams: expected 0-2147483647";
        }
        pl->has_max_streams = true;
        pl->max_streams = (uint32_t)n;
    } else {
        *known = false;
    }
    return NULL;
}

/* Does the comma-separated list `names` hold `me`? */
static bool names_me(struct str names, struct str me)
{
    size_t start = 0;
    for (size_t i = 0; i <= names.len; i++) {
        if (i == names.len || names.p[i] == ',') {
            if (str_eq(str_trim_ows((struct str){names.p + start, i - start}), me)) {
                return true;
            }
            start = i + 1;
        }
    }
    return false;
}

const char *plan_apply_query(struct plan *pl, struct str url, bool *any, struct str *bad_key)
{
    bool known;
    const char *q = memchr(url.p, '?', url.len);
    if (q == NULL) {
        return NULL;
    }
    const char *end = url.p + url.len;
    for (const char *p = q + 1; p < end;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (eq != NULL) {
            struct str k = {p, (size_t)(eq - p)};
            struct str v = {eq + 1, (size_t)(stop - eq - 1)};
            if (!key_is(k, "response-header") && !key_is(k, "trailer")) {
                const char *e = apply_control(pl, k, v, &known);
                if (e != NULL) {
                    *bad_key = k;
                    return e;
                }
                *any |= known;
            }
        }
        p = stop + 1;
    }
    return NULL;
}

void plan_apply_only(struct plan *pl, struct str me)
{
    if (pl->only.len > 0 && !names_me(pl->only, me)) {
        /* Not for this upstream: drop the faults, keep how the answer is shaped. */
        pl->status = 200;
        pl->delay_ms = 0;
        pl->body_delay_ms = 0;
        pl->drip_ms = 0;
        pl->close_no_response = false;
        pl->hang = false;
        pl->early = false;
        pl->conn_close = false;
        pl->reset = RESET_NONE;
        pl->malformed = MAL_NONE;
        pl->refuse = false;
        pl->has_goaway = false;
    }
}

/* Fills c->plan from the query string, then the x-upstream-* headers (which win). Sets
 * `*is_default` when nothing asked for anything. Returns NULL or an error message. */
static const char *plan_build(struct conn *c, bool *is_default, struct str *bad_key)
{
    struct plan *pl = &c->plan;
    memset(pl, 0, sizeof(*pl));
    pl->status = 200;
    bool any = false, known;
    const char *e = plan_apply_query(pl, url_str(c), &any, bad_key);
    if (e != NULL) {
        return e;
    }
    for (size_t i = 0; i < c->n_head_hdrs; i++) {
        struct str name = hdr_name(c, &c->hdrs[i]);
        /* Cheap reject first: this runs for every header of every benchmark request. */
        if (name.len < 11 || (name.p[0] | 0x20) != 'x' ||
            !str_has_prefix_nocase(name, STR_LIT("x-upstream-"))) {
            continue;
        }
        struct str key = {name.p + 11, name.len - 11};
        e = apply_control(pl, key, str_trim_ows(hdr_value(c, &c->hdrs[i])), &known);
        if (e == NULL && !known) {
            e = "unknown control header";
        }
        if (e == NULL &&
            (key_is(key, "refuse") || key_is(key, "goaway") || key_is(key, "rst-code") ||
             key_is(key, "trailer") || key_is(key, "max-streams"))) {
            e = "an HTTP/2-only control";
        }
        if (e != NULL) {
            *bad_key = name;
            return e;
        }
        any = true;
    }
    if (pl->refuse || pl->has_goaway || pl->has_rst_code || pl->has_max_streams) {
        *bad_key = STR_LIT("query");
        return "refuse, goaway, rst-code and max-streams are HTTP/2-only controls";
    }
    if (pl->malformed >= MAL_H2_FIRST) {
        *bad_key = STR_LIT("x-upstream-malformed");
        return "an HTTP/2-only mode";
    }
    plan_apply_only(pl, c->w->srv->name);
    *is_default = !any;
    return NULL;
}

/* ---- responses ------------------------------------------------------------------------------ */

void stats_json(struct server *srv, struct buf *b, bool do_reset)
{
    struct stats *st = &srv->stats;
    if (do_reset) {
        atomic_store_explicit(&st->requests, 0, memory_order_relaxed);
        atomic_store_explicit(&st->connections, 0, memory_order_relaxed);
        atomic_store_explicit(&st->bytes_received, 0, memory_order_relaxed);
        atomic_store_explicit(&st->parse_errors, 0, memory_order_relaxed);
        atomic_store_explicit(&st->incomplete, 0, memory_order_relaxed);
        atomic_store_explicit(&st->h2_connections, 0, memory_order_relaxed);
        atomic_store_explicit(&st->h2_streams, 0, memory_order_relaxed);
        atomic_store_explicit(&st->max_streams_seen, 0, memory_order_relaxed);
    }
    buf_printf(
        b,
        "{\"requests\": %llu, \"connections\": %llu, \"bytes_received\": %llu, "
        "\"parse_errors\": %llu, \"incomplete_requests\": %llu, "
        "\"active_connections\": %llu, \"h2_connections\": %llu, \"h2_streams\": %llu, "
        "\"max_concurrent_streams_seen\": %llu}\n",
        (unsigned long long)stat_get(&st->requests), (unsigned long long)stat_get(&st->connections),
        (unsigned long long)stat_get(&st->bytes_received),
        (unsigned long long)stat_get(&st->parse_errors),
        (unsigned long long)stat_get(&st->incomplete), (unsigned long long)stat_get(&st->active),
        (unsigned long long)stat_get(&st->h2_connections),
        (unsigned long long)stat_get(&st->h2_streams),
        (unsigned long long)stat_get(&st->max_streams_seen));
}

static void queue_stats(struct conn *c, bool do_reset)
{
    struct buf *b = &c->scratch;
    buf_consume(b, buf_len(b));
    stats_json(c->w->srv, b, do_reset);
    queue_simple(c, 200, "application/json", (const char *)buf_head(b), buf_len(b));
}

static void build_echo(struct conn *c)
{
    struct buf *b = &c->scratch;
    buf_consume(b, buf_len(b));
    buf_append_str(b, "{\"name\": ");
    json_str(b, c->w->srv->name.p, c->w->srv->name.len);
    buf_append_str(b, ", \"method\": ");
    json_str(b, llhttp_method_name((llhttp_method_t)c->method),
             strlen(llhttp_method_name((llhttp_method_t)c->method)));
    buf_append_str(b, ", \"path\": ");
    json_str(b, url_str(c).p, url_str(c).len);
    buf_printf(b, ", \"version\": \"%d.%d\", \"headers\": [", llhttp_get_http_major(&c->parser),
               llhttp_get_http_minor(&c->parser));
    for (size_t i = 0; i < c->n_hdrs; i++) {
        if (i == c->n_head_hdrs) {
            buf_append_str(b, "], \"trailers\": [");
        }
        if (i != 0 && i != c->n_head_hdrs) {
            buf_append_str(b, ", ");
        }
        struct str name = hdr_name(c, &c->hdrs[i]), value = hdr_value(c, &c->hdrs[i]);
        buf_append_str(b, "[");
        json_str(b, name.p, name.len);
        buf_append_str(b, ", ");
        json_str(b, value.p, value.len);
        buf_append_str(b, "]");
    }
    if (c->n_head_hdrs == c->n_hdrs) {
        buf_append_str(b, "], \"trailers\": [");
    }
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    unsigned port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&peer, &plen) == 0) {
        port = ntohs(peer.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&peer)->sin6_port
                                                : ((struct sockaddr_in *)&peer)->sin_port);
    }
    buf_printf(b, "], \"body_len\": %llu, \"peer_port\": %u}\n", (unsigned long long)c->body_len,
               port);
}

/* The head of a normal response, with any x-upstream-response-header lines. */
static void queue_head(struct conn *c, bool has_framing)
{
    struct buf *o = &c->out;
    head_start(o, c->w->srv, c->plan.status, c->plan.echo ? "application/json" : "text/plain");
    for (size_t i = 0; i < c->n_head_hdrs; i++) {
        if (str_eq_nocase(hdr_name(c, &c->hdrs[i]), STR_LIT("x-upstream-response-header"))) {
            struct str v = str_trim_ows(hdr_value(c, &c->hdrs[i]));
            buf_append(o, v.p, v.len);
            buf_append_str(o, "\r\n");
        }
    }
    head_end(o, has_framing, c->plan.chunked ? -1 : (int64_t)c->body_total, c->close_after,
             c->is_http10);
}

static void queue_malformed(struct conn *c)
{
    struct server *s = c->w->srv;
    struct buf *o = &c->out;
    struct str nm = s->name_nl;
    int st = c->plan.status;
    const char *rs = reason(st);
    c->close_after = true;
    switch (c->plan.malformed) {
    case MAL_CL_TE:
        buf_printf(o,
                   "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\nx-upstream-name: %.*s\r\n"
                   "content-length: %zu\r\ntransfer-encoding: chunked\r\n\r\n%zx\r\n",
                   st, rs, STR_FMT(s->name), nm.len, nm.len);
        buf_append(o, nm.p, nm.len);
        buf_append_str(o, "\r\n0\r\n\r\n");
        break;
    case MAL_BARE_LF:
        buf_printf(o,
                   "HTTP/1.1 %d %s\ncontent-type: text/plain\nx-upstream-name: %.*s\n"
                   "content-length: %zu\n\n",
                   st, rs, STR_FMT(s->name), nm.len);
        buf_append(o, nm.p, nm.len);
        break;
    case MAL_BARE_CR:
        buf_printf(o,
                   "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\nx-upstream-name: %.*s\r\n"
                   "X: a\rSet-Cookie: y\r\ncontent-length: %zu\r\n\r\n",
                   st, rs, STR_FMT(s->name), nm.len);
        buf_append(o, nm.p, nm.len);
        break;
    case MAL_SHORT_BODY:
        buf_printf(o,
                   "HTTP/1.1 %d %s\r\ncontent-type: text/plain\r\nx-upstream-name: %.*s\r\n"
                   "content-length: 100\r\n\r\nabc",
                   st, rs, STR_FMT(s->name));
        break;
    case MAL_EXTRA_RESPONSE:
        c->close_after = !c->keep_alive;
        queue_simple(c, st, "text/plain", nm.p, nm.len);
        buf_printf(o,
                   "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-upstream-name: %.*s\r\n"
                   "x-upstream-extra: 1\r\ncontent-length: 15\r\n\r\nextra-response\n",
                   STR_FMT(s->name));
        break;
    case MAL_MANY_100:
        c->close_after = !c->keep_alive;
        for (int i = 0; i < MANY_100_COUNT; i++) {
            buf_append_str(o, "HTTP/1.1 100 Continue\r\n\r\n");
        }
        queue_simple(c, st, "text/plain", nm.p, nm.len);
        break;
    case MAL_HUGE_HEADERS: {
        c->close_after = !c->keep_alive;
        char value[HUGE_HEADER_VALUE_LEN];
        memset(value, 'h', sizeof(value));
        head_start(o, s, st, "text/plain");
        for (int i = 0; i < HUGE_HEADER_COUNT; i++) {
            buf_printf(o, "x-huge-%03d: ", i);
            buf_append(o, value, sizeof(value));
            buf_append_str(o, "\r\n");
        }
        head_end(o, true, (int64_t)nm.len, c->close_after, c->is_http10);
        buf_append(o, nm.p, nm.len);
        break;
    }
    case MAL_NONE:
    case MAL_H2_UPPER_NAME: /* HTTP/2-only modes: refused by plan_build */
    case MAL_H2_NO_STATUS:
    case MAL_H2_BAD_CL:
    case MAL_H2_CL_MISMATCH:
        break;
    }
    c->state = ST_DONE;
}

const char *pattern_at(const struct server *s, uint64_t off)
{
    return s->pattern + off % PATTERN_PERIOD;
}

/* Where body bytes [off, off + len) come from; `len` is at most BODY_CHUNK. */
static const char *body_bytes(const struct conn *c, uint64_t off)
{
    switch (c->body_src) {
    case BODY_NAME:
        return c->w->srv->name_nl.p + off;
    case BODY_SCRATCH:
        return (const char *)buf_head(&c->scratch) + off;
    case BODY_PATTERN:
        break;
    }
    return pattern_at(c->w->srv, off);
}

/* Queues body bytes until the body (or half of it, for a mid-body reset) is queued, sending
 * as it goes so that only about OUT_LOW + BODY_CHUNK bytes are ever buffered.
 * Returns 0 when done (state moved on), 1 when waiting for the socket, -1 on error. */
static int stream_body(struct conn *c)
{
    uint64_t limit = c->plan.reset == RESET_MID_BODY ? c->body_total / 2 : c->body_total;
    while (c->body_sent < limit) {
        if (buf_len(&c->out) >= OUT_LOW) {
            int r = conn_flush(c);
            if (r < 0) {
                return -1;
            }
            if (buf_len(&c->out) >= OUT_LOW) {
                return 1;
            }
        }
        uint64_t left = limit - c->body_sent;
        size_t n = left < BODY_CHUNK ? (size_t)left : BODY_CHUNK;
        if (c->plan.drip_ms > 0) {
            n = 1;
        }
        if (c->plan.chunked) {
            buf_printf(&c->out, "%zx\r\n", n);
        }
        buf_append(&c->out, body_bytes(c, c->body_sent), n);
        if (c->plan.chunked) {
            buf_append_str(&c->out, "\r\n");
        }
        c->body_sent += n;
        if (c->plan.drip_ms > 0 && c->body_sent < limit) {
            if (conn_flush(c) < 0) {
                return -1;
            }
            c->state = ST_BODY_DELAY; /* the timer brings it back to ST_BODY */
            start_timer(c, (double)c->plan.drip_ms / 1000.);
            return 0;
        }
    }
    if (c->plan.reset == RESET_MID_BODY) {
        c->state = ST_RESET;
        return 0;
    }
    if (c->plan.chunked) {
        buf_append_str(&c->out, "0\r\n\r\n");
    }
    c->state = ST_DONE;
    return 0;
}

/* Acts on the plan once any delay has passed. Returns -1 on a send error. */
static int start_response(struct conn *c)
{
    struct plan *pl = &c->plan;
    if (pl->close_no_response) {
        c->state = ST_CLOSE;
        return 0;
    }
    if (pl->reset == RESET_BEFORE_HEADERS) {
        c->state = ST_RESET;
        return 0;
    }
    if (pl->hang) {
        c->state = ST_HANG;
        return 0;
    }
    if (pl->malformed != MAL_NONE) {
        queue_malformed(c);
        return 0;
    }
    if (pl->echo) {
        build_echo(c);
        c->body_src = BODY_SCRATCH;
        c->body_total = buf_len(&c->scratch);
    } else if (pl->has_body_size) {
        c->body_src = BODY_PATTERN;
        c->body_total = pl->body_size;
    } else {
        c->body_src = BODY_NAME;
        c->body_total = c->w->srv->name_nl.len;
    }
    c->body_sent = 0;
    bool bodiless_status = pl->status < 200 || pl->status == 204 || pl->status == 304;
    queue_head(c, !bodiless_status);
    if (pl->reset == RESET_AFTER_HEADERS) {
        c->state = ST_RESET;
        return 0;
    }
    if (bodiless_status || c->method == HTTP_HEAD) {
        c->state = ST_DONE;
        return 0;
    }
    if (pl->body_delay_ms > 0) {
        if (conn_flush(c) < 0) {
            return -1;
        }
        c->state = ST_BODY_DELAY;
        start_timer(c, (double)pl->body_delay_ms / 1000.);
        return 0;
    }
    c->state = ST_BODY;
    return 0;
}

static bool url_path_is(const struct conn *c, const char *path)
{
    struct str url = url_str(c);
    const char *q = memchr(url.p, '?', url.len);
    if (q != NULL) {
        url.len = (size_t)(q - url.p);
    }
    return str_eq_lit(url, path);
}

/* A request is complete (the parser is paused after it): decide what to answer. */
static void on_request(struct conn *c)
{
    struct server *s = c->w->srv;
    bool ordinary = c->klass == CLASS_ORDINARY;
    c->in_message = false;
    c->close_after = !c->keep_alive;
    if ((c->method == HTTP_GET && url_path_is(c, "/__upstream/stats")) ||
        (c->method == HTTP_POST && url_path_is(c, "/__upstream/reset"))) {
        if (ordinary) {
            stat_add(&s->stats.requests, 1);
        }
        queue_stats(c, c->method == HTTP_POST);
        c->state = ST_DONE;
        return;
    }
    if (ordinary) {
        stat_add(&s->stats.requests, 1);
    }
    bool is_default = false;
    struct str bad_key = STR_NULL;
    const char *e = plan_build(c, &is_default, &bad_key);
    if (e != NULL) {
        char msg[512];
        int n = snprintf(msg, sizeof(msg), "remora-test-upstream: %.*s: %s\n",
                         (int)(bad_key.len > 200 ? 200 : bad_key.len), bad_key.p, e);
        queue_simple(c, 400, "text/plain", msg, (size_t)n);
        c->state = ST_DONE;
        return;
    }
    if (is_default && c->keep_alive && !c->is_http10 && c->method != HTTP_HEAD) {
        buf_append(&c->out, buf_head(&s->default_resp), buf_len(&s->default_resp));
        c->state = ST_DONE;
        return;
    }
    c->close_after |= c->plan.conn_close || c->early;
    if (c->plan.delay_ms > 0) {
        c->state = ST_DELAY;
        start_timer(c, (double)c->plan.delay_ms / 1000.);
        return;
    }
    c->state = ST_HEAD;
}

/* llhttp rejected the input: answer 400 (431 for an oversized head) and close. */
static void on_parse_error(struct conn *c)
{
    struct server *s = c->w->srv;
    if (c->klass == CLASS_ORDINARY) {
        stat_add(&s->stats.parse_errors, 1);
    }
    c->in_message = false;
    c->close_after = true;
    char msg[512];
    int n =
        snprintf(msg, sizeof(msg), "remora-test-upstream: bad request: %s: %s\n",
                 llhttp_errno_name(llhttp_get_errno(&c->parser)),
                 llhttp_get_error_reason(&c->parser) ? llhttp_get_error_reason(&c->parser) : "");
    queue_simple(c, c->head_too_big ? 431 : 400, "text/plain", msg, (size_t)n);
    buf_consume(&c->in, buf_len(&c->in));
    c->state = ST_CLOSE;
}

/* Feeds buffered input to llhttp. Returns true when a request completed or parsing failed
 * (c->state has moved on), false when all input was consumed and more is needed. */
static bool parse_input(struct conn *c)
{
    while (buf_len(&c->in) > 0) {
        const char *p = (const char *)buf_head(&c->in);
        size_t len = buf_len(&c->in);
        llhttp_errno_t e = llhttp_execute(&c->parser, p, len);
        size_t used = len;
        if (e == HPE_PAUSED || e == HPE_PAUSED_UPGRADE) {
            used = (size_t)(llhttp_get_error_pos(&c->parser) - p);
        } else if (e != HPE_OK) {
            on_parse_error(c);
            return true;
        }
        buf_consume(&c->in, used);
        if (e == HPE_PAUSED_UPGRADE) {
            /* Upgrade and CONNECT are answered like any request and parsing goes on as HTTP:
             * the test upstream never switches protocols. */
            llhttp_resume_after_upgrade(&c->parser);
        } else if (e == HPE_PAUSED) {
            llhttp_resume(&c->parser);
        }
        if (c->msg_ready) {
            c->msg_ready = false;
            on_request(c);
            return true;
        }
    }
    return false;
}

/* Drives the connection until it has to wait for I/O or a timer. May destroy `c`: callers
 * must not touch it afterwards. */
void conn_run(struct conn *c)
{
    for (;;) {
        switch (c->state) {
        case ST_PARSE:
            if (buf_len(&c->out) >= OUT_HIGH) {
                /* The client pipelines faster than it reads: wait for it. */
                if (conn_flush(c) < 0) {
                    goto dead;
                }
                if (buf_len(&c->out) >= OUT_HIGH) {
                    return;
                }
            }
            if (c->klass != CLASS_UNKNOWN && parse_input(c)) {
                continue;
            }
            if (c->peer_eof) {
                c->state = ST_CLOSE;
                continue;
            }
            if (conn_flush(c) < 0) {
                goto dead;
            }
            want_read(c);
            return;
        case ST_DELAY:
        case ST_BODY_DELAY:
            return;
        case ST_HEAD:
            if (start_response(c) < 0) {
                goto dead;
            }
            continue;
        case ST_BODY: {
            int r = stream_body(c);
            if (r < 0) {
                goto dead;
            }
            if (r > 0) {
                return;
            }
            continue;
        }
        case ST_DONE:
            if (c->close_after) {
                c->state = ST_CLOSE;
                continue;
            }
            c->state = ST_PARSE;
            continue;
        case ST_RESET: {
            int r = conn_flush(c);
            if (r < 0) {
                goto dead;
            }
            if (r > 0) {
                return;
            }
            conn_destroy(c, true);
            return;
        }
        case ST_CLOSE: {
            int r = conn_flush(c);
            if (r < 0) {
                goto dead;
            }
            if (r > 0) {
                return;
            }
            if (c->peer_eof) {
                goto dead;
            }
            /* FIN now, then read until the peer's FIN so that unread input cannot turn our
             * close into a RST that destroys the response in flight. */
            shutdown(c->fd, SHUT_WR);
            buf_consume(&c->in, buf_len(&c->in));
            c->state = ST_LINGER;
            start_timer(c, LINGER_S);
            want_read(c);
            return;
        }
        case ST_H2: {
            int r = h2_run(c);
            if (r < 0) {
                goto dead;
            }
            if (r > 0) {
                continue;
            }
            return;
        }
        case ST_HANG:
        case ST_LINGER:
            buf_consume(&c->in, buf_len(&c->in));
            if (c->peer_eof) {
                goto dead;
            }
            want_read(c);
            return;
        }
    }
dead:
    conn_destroy(c, false);
}

/* ---- event callbacks ----------------------------------------------------------------------- */

/* Counts and records bytes of an ordinary connection. */
static void account(struct conn *c, const uint8_t *p, size_t n)
{
    struct server *s = c->w->srv;
    stat_add(&s->stats.bytes_received, n);
    if (s->record_fd < 0) {
        return;
    }
    while (n > 0) {
        ssize_t w = write(s->record_fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            fprintf(stderr, "remora-test-upstream: --record write: %s\n", strerror(errno));
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

/* Decides from the first bytes (all still in c->in) whether this is a control connection, and
 * whether it speaks HTTP/2 (the client preface). */
static void classify(struct conn *c)
{
    static const char prefixes[][20] = {"GET /__upstream/", "POST /__upstream/"};
    struct server *s = c->w->srv;
    size_t n = buf_len(&c->in);
    const uint8_t *p = buf_head(&c->in);
    bool maybe = false;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        size_t plen = strlen(prefixes[i]);
        size_t m = n < plen ? n : plen;
        if (memcmp(p, prefixes[i], m) != 0) {
            continue;
        }
        if (n >= plen) {
            c->klass = CLASS_CONTROL;
            stat_dec(&s->stats.connections);
            stat_dec(&s->stats.active);
            c->is_active_counted = false;
            return;
        }
        maybe = true;
    }
    int h2 = h2_preface_check(p, n);
    if ((maybe || h2 == 0) && !c->peer_eof) {
        return;
    }
    c->klass = CLASS_ORDINARY;
    account(c, p, n);
    if (h2 == 1) {
        h2_start(c);
    }
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    uint8_t *dst = buf_reserve(&c->in, READ_CHUNK);
    ssize_t n = read(c->fd, dst, buf_tail_room(&c->in));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            return;
        }
        conn_destroy(c, false);
        return;
    }
    if (n == 0) {
        c->peer_eof = true;
        ev_io_stop(c->w->loop, &c->rio);
    } else {
        buf_commit(&c->in, (size_t)n);
        if (c->klass == CLASS_ORDINARY) {
            account(c, dst, (size_t)n);
        }
    }
    if (c->klass == CLASS_UNKNOWN) {
        classify(c);
    }
    if (buf_len(&c->in) >= IN_MAX) {
        ev_io_stop(c->w->loop, &c->rio);
    }
    conn_run(c);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    int r = conn_flush(c);
    if (r < 0) {
        conn_destroy(c, false);
        return;
    }
    if (r == 0) {
        conn_run(c);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct conn *c = w->data;
    switch (c->state) {
    case ST_DELAY:
        c->state = ST_HEAD;
        break;
    case ST_BODY_DELAY:
        c->state = ST_BODY;
        break;
    case ST_LINGER:
        conn_destroy(c, false);
        return;
    default:
        return;
    }
    conn_run(c);
}

static void conn_new(struct worker *w, int fd)
{
    struct server *s = w->srv;
    struct conn *c = xcalloc(1, sizeof(*c));
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->w = w;
    c->fd = fd;
    c->state = ST_PARSE;
    c->klass = CLASS_UNKNOWN;
    buf_init(&c->in);
    buf_init(&c->out);
    buf_init(&c->hb);
    buf_init(&c->scratch);
    llhttp_init(&c->parser, HTTP_REQUEST, &s->settings);
    c->parser.data = c;
    ev_io_init(&c->rio, read_cb, fd, EV_READ);
    ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
    ev_timer_init(&c->timer, timer_cb, 0., 0.);
    c->rio.data = c;
    c->wio.data = c;
    c->timer.data = c;
    list_insert_tail(&w->conns, &c->link);
    stat_add(&s->stats.connections, 1);
    stat_add(&s->stats.active, 1);
    c->is_active_counted = true;
    ev_io_start(w->loop, &c->rio);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct worker *w = io->data;
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_new(w, fd);
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED) {
            continue;
        }
        if (errno == EMFILE || errno == ENFILE) {
            /* A level-triggered accept watcher would spin: pause it for a moment. */
            ev_io_stop(loop, &w->accept_io);
            ev_timer_start(loop, &w->accept_pause);
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            fprintf(stderr, "remora-test-upstream: accept: %s\n", strerror(errno));
        }
        return;
    }
}

static void accept_pause_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = t->data;
    ev_io_start(loop, &w->accept_io);
}

static void stop_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)a;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static void signal_cb(struct ev_loop *loop, ev_signal *sig, int revents)
{
    (void)revents;
    struct server *s = sig->data;
    for (int i = 1; i < s->n_workers; i++) {
        ev_async_send(s->workers[i].loop, &s->workers[i].stop);
    }
    ev_break(loop, EVBREAK_ALL);
}

/* ---- setup ----------------------------------------------------------------------------------- */

static void worker_start_watchers(struct worker *w)
{
    list_init(&w->conns);
    ev_io_init(&w->accept_io, accept_cb, w->lfd, EV_READ);
    w->accept_io.data = w;
    ev_timer_init(&w->accept_pause, accept_pause_cb, 0.1, 0.);
    w->accept_pause.data = w;
    ev_io_start(w->loop, &w->accept_io);
}

static void worker_deinit(struct worker *w)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->conns)
    {
        conn_destroy(LIST_ENTRY(it, struct conn, link), false);
    }
    ev_io_stop(w->loop, &w->accept_io);
    ev_timer_stop(w->loop, &w->accept_pause);
    close(w->lfd);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    ev_run(w->loop, 0);
    worker_deinit(w);
    ev_async_stop(w->loop, &w->stop);
    return NULL;
}

/* Splits "ADDR:PORT" (ADDR may be "[v6]") and resolves it. Returns 0 or -EINVAL. */
static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || (size_t)(colon - spec) >= sizeof(host)) {
        return -EINVAL;
    }
    size_t hlen = (size_t)(colon - spec);
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res) != 0 || res == NULL) {
        return -EINVAL;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int listen_on(struct sockaddr_storage *ss, socklen_t len, bool reuseport)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, SOMAXCONN) != 0) {
        goto fail;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    return -e;
}

static int write_port_file(const char *path, int port)
{
    char text[16];
    int n = snprintf(text, sizeof(text), "%d\n", port);
    return file_write_atomic(path, text, (size_t)n);
}

static void server_init(struct server *s, const char *name)
{
    s->name = str_from_c(name);
    char *nl = xmalloc(s->name.len + 1);
    memcpy(nl, name, s->name.len);
    nl[s->name.len] = '\n';
    s->name_nl = (struct str){nl, s->name.len + 1};
    for (size_t i = 0; i < sizeof(s->pattern); i++) {
        s->pattern[i] = (char)('a' + i % PATTERN_PERIOD);
    }
    buf_init(&s->default_resp);
    head_start(&s->default_resp, s, 200, "text/plain");
    head_end(&s->default_resp, true, (int64_t)s->name_nl.len, false, false);
    buf_append(&s->default_resp, s->name_nl.p, s->name_nl.len);

    llhttp_settings_init(&s->settings);
    s->settings.on_message_begin = on_message_begin;
    s->settings.on_url = on_url;
    s->settings.on_header_field = on_header_field;
    s->settings.on_header_field_complete = on_header_field_complete;
    s->settings.on_header_value = on_header_value;
    s->settings.on_header_value_complete = on_header_value_complete;
    s->settings.on_headers_complete = on_headers_complete;
    s->settings.on_body = on_body;
    s->settings.on_message_complete = on_message_complete;
    s->record_fd = -1;
}

static void usage(FILE *f)
{
    fputs(
        "usage: remora-test-upstream [--listen ADDR:PORT] [--name NAME] [--port-file PATH]\n"
        "                            [--record PATH] [--threads N] [--h2-max-streams N] [--help]\n"
        "Test HTTP/1.1 and h2c (prior knowledge) upstream. Default answer: 200 text/plain,\n"
        "body \"NAME\\n\".\n"
        "Request headers (or ?query keys with '_'): x-upstream-status, -body-size, -chunked,\n"
        "-delay-ms, -body-delay-ms, -reset (before-headers|after-headers|mid-body), -close,\n"
        "-hang, -malformed (cl-te|bare-lf|bare-cr|short-body|extra-response|many-100|\n"
        "huge-headers), -echo, -connection-close, -response-header, -only (NAME,...).\n"
        "HTTP/2 only: x-upstream-refuse, -goaway (CODE), -trailer (NAME: VALUE), -rst-code,\n"
        "-max-streams (N), -malformed upper-name|no-status|bad-cl|cl-mismatch.\n"
        "GET /__upstream/stats, POST /__upstream/reset. See the top of upstream.c.\n",
        f);
}

int main(int argc, char **argv)
{
    const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"name", required_argument, NULL, 'n'},
        {"port-file", required_argument, NULL, 'p'},
        {"record", required_argument, NULL, 'r'},
        {"threads", required_argument, NULL, 't'},
        {"h2-max-streams", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen_spec = "127.0.0.1:0", *name = "upstream", *port_file = NULL;
    const char *record = NULL;
    int n_threads = 1, opt;
    long long h2_max_streams = 100;
    while ((opt = getopt_long(argc, argv, "l:n:p:r:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_spec = optarg;
            break;
        case 'n':
            name = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'r':
            record = optarg;
            break;
        case 't':
            n_threads = atoi(optarg);
            break;
        case 'm': {
            char *end = NULL;
            h2_max_streams = strtoll(optarg, &end, 10);
            if (end == optarg || *end != '\0') {
                h2_max_streams = -1;
            }
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || n_threads < 1 || n_threads > 256 || h2_max_streams < 0 ||
        h2_max_streams > INT32_MAX) {
        usage(stderr);
        return 2;
    }
    size_t name_len = strlen(name);
    for (size_t i = 0; i < name_len; i++) {
        if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e) {
            name_len = 0;
        }
    }
    if (name_len == 0 || name_len > NAME_LEN_MAX) {
        fprintf(stderr, "remora-test-upstream: --name must be 1-%d printable characters\n",
                NAME_LEN_MAX);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct server *s = xcalloc(1, sizeof(*s));
    server_init(s, name);
    s->h2_max_streams = (uint32_t)h2_max_streams;
    int rc = 1;
    if (record != NULL) {
        s->record_fd = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (s->record_fd < 0) {
            fprintf(stderr, "remora-test-upstream: %s: %s\n", record, strerror(errno));
            goto out;
        }
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(listen_spec, &ss, &sslen) != 0) {
        fprintf(stderr, "remora-test-upstream: bad --listen %s\n", listen_spec);
        goto out;
    }
    s->n_workers = n_threads;
    s->workers = xcalloc((size_t)n_threads, sizeof(*s->workers));
    for (int i = 0; i < n_threads; i++) {
        s->workers[i].lfd = -1;
    }
    int port = 0;
    for (int i = 0; i < n_threads; i++) {
        int fd = listen_on(&ss, sslen, n_threads > 1);
        if (fd < 0) {
            fprintf(stderr, "remora-test-upstream: listen %s: %s\n", listen_spec, strerror(-fd));
            goto out;
        }
        s->workers[i].lfd = fd;
        s->workers[i].srv = s;
        if (i == 0) {
            /* The others must bind the port the kernel picked for port 0. */
            socklen_t l = sizeof(ss);
            getsockname(fd, (struct sockaddr *)&ss, &l);
            sslen = l;
            port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                  : ((struct sockaddr_in *)&ss)->sin_port);
        }
    }
    char addr[INET6_ADDRSTRLEN];
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, addr, sizeof(addr));
        printf("listening on [%s]:%d\n", addr, port);
    } else {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, addr, sizeof(addr));
        printf("listening on %s:%d\n", addr, port);
    }
    fflush(stdout);

    /* Workers 1..n-1 get their own loops and threads, with SIGTERM/SIGINT blocked so that
     * the default loop in the main thread receives them. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    struct ev_loop *main_loop = ev_default_loop(0);
    s->workers[0].loop = main_loop;
    worker_start_watchers(&s->workers[0]);
    for (int i = 1; i < n_threads; i++) {
        struct worker *w = &s->workers[i];
        w->loop = ev_loop_new(EVFLAG_AUTO);
        worker_start_watchers(w);
        ev_async_init(&w->stop, stop_cb);
        ev_async_start(w->loop, &w->stop);
        pthread_create(&w->tid, NULL, worker_main, w);
    }
    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    sigterm.data = s;
    sigint.data = s;
    ev_signal_start(main_loop, &sigterm);
    ev_signal_start(main_loop, &sigint);
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    if (port_file != NULL) {
        int e = write_port_file(port_file, port);
        if (e < 0) {
            fprintf(stderr, "remora-test-upstream: %s: %s\n", port_file, strerror(-e));
            for (int i = 1; i < n_threads; i++) {
                ev_async_send(s->workers[i].loop, &s->workers[i].stop);
            }
            goto join;
        }
    }
    ev_run(main_loop, 0);
    rc = 0;
join:
    for (int i = 1; i < s->n_workers; i++) {
        pthread_join(s->workers[i].tid, NULL);
        ev_loop_destroy(s->workers[i].loop);
        s->workers[i].loop = NULL;
        s->workers[i].lfd = -1;
    }
    worker_deinit(&s->workers[0]);
    s->workers[0].lfd = -1;
    ev_signal_stop(main_loop, &sigterm);
    ev_signal_stop(main_loop, &sigint);
    ev_loop_destroy(main_loop);
out:
    if (s->workers != NULL) {
        for (int i = 0; i < s->n_workers; i++) {
            if (s->workers[i].lfd >= 0) {
                close(s->workers[i].lfd);
            }
        }
    }
    free(s->workers);
    if (s->record_fd >= 0) {
        close(s->record_fd);
    }
    buf_deinit(&s->default_resp);
    free((char *)s->name_nl.p);
    free(s);
    return rc;
}
