/* httpd: the HTTP/1.1 server of remora-xds (see httpd.h). Each connection owns a read buffer
 * (bytes not yet parsed), the request being assembled (method, target, body) and the response
 * being written. llhttp parses in place; on_message_complete pauses it, so exactly one request
 * is handled, answered and written before the parser sees the next byte.
 *
 *   IDLE --first byte--> READING --message complete--> WRITING --written--> IDLE (keep-alive)
 *                            \--limit, bad HTTP, timeout--> WRITING error --> closed
 */
#include "xds/server/httpd.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <jansson.h>
#include <llhttp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

#define READ_CHUNK 16384

enum hc_state { HC_IDLE, HC_READING, HC_WRITING };

struct hconn {
    struct httpd *h;
    int fd;
    ev_io io;
    ev_timer timer;
    enum hc_state state;
    llhttp_t parser;
    char *in; /* owned; bytes read and not yet parsed */
    size_t in_len, in_cap;
    /* The request being assembled (reset at each message's first byte). */
    char *target; /* owned, NUL-terminated */
    size_t target_len;
    char *body; /* owned */
    size_t body_len;
    size_t head_bytes;
    char hdr_name[16]; /* the current field name, when it is short enough to matter */
    size_t hdr_name_len;
    bool hdr_is_ct, hdr_is_expect;
    char ct[128];
    size_t ct_len;
    bool expect_continue;
    /* Every header of the request, for SigV4 (bounded by head_max): names and values as
     * offsets into hbuf (which moves as it grows). */
    char *hbuf; /* owned */
    size_t hbuf_len, hbuf_cap;
    struct hspan {
        size_t name_off, name_len, val_off, val_len;
    } * hdrs; /* owned */
    size_t n_hdrs, hdrs_cap;
    bool hdr_open;     /* hdrs[n_hdrs] is being filled */
    int reject_status; /* a limit broken inside a callback: answer this, then close */
    const char *reject_type;
    const char *reject_msg;
    /* The response being written. */
    char *out; /* owned */
    size_t out_len, out_off;
    bool close_after;
    struct hconn *prev, *next;
};

struct httpd {
    struct ev_loop *loop;
    int lfd;
    ev_io accept_io;
    struct httpd_limits lim;
    httpd_handler_cb handler;
    void *ctx;
    struct hconn *conns;
    size_t n_conns;
};

static void conn_close(struct hconn *c)
{
    struct httpd *h = c->h;
    ev_io_stop(h->loop, &c->io);
    ev_timer_stop(h->loop, &c->timer);
    close(c->fd);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        h->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    h->n_conns--;
    free(c->in);
    free(c->target);
    free(c->body);
    free(c->out);
    free(c->hbuf);
    free(c->hdrs);
    free(c);
}

static void set_timer(struct hconn *c, double ms)
{
    ev_timer_stop(c->h->loop, &c->timer);
    ev_timer_set(&c->timer, ms / 1000.0, 0.);
    ev_timer_start(c->h->loop, &c->timer);
}

static void set_io(struct hconn *c, int events)
{
    if (c->io.events == events && ev_is_active(&c->io)) {
        return;
    }
    ev_io_stop(c->h->loop, &c->io);
    ev_io_set(&c->io, c->fd, events);
    if (events != 0) {
        ev_io_start(c->h->loop, &c->io);
    }
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    default:
        return "Unknown";
    }
}

/* Queues a response (head + body) and starts writing it. */
static void respond(struct hconn *c, const struct api_response *r, bool head_only)
{
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
        memset(rnd, 0, sizeof(rnd));
    }
    char head[1024];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %zu\r\n"
                     "x-amzn-requestid: %02x%02x%02x%02x-%02x%02x-%02x%02x\r\n"
                     "%s%s%s%s%s%s%s\r\n",
                     r->status, reason(r->status), r->body_len, rnd[0], rnd[1], rnd[2], rnd[3],
                     rnd[4], rnd[5], rnd[6], rnd[7], r->error_type ? "x-amzn-errortype: " : "",
                     r->error_type ? r->error_type : "", r->error_type ? "\r\n" : "",
                     r->allow ? "allow: " : "", r->allow ? r->allow : "", r->allow ? "\r\n" : "",
                     c->close_after ? "connection: close\r\n" : "");
    size_t hl = n > 0 && (size_t)n < sizeof(head) ? (size_t)n : 0;
    size_t bl = head_only ? 0 : r->body_len;
    free(c->out);
    c->out = xmalloc(hl + bl);
    memcpy(c->out, head, hl);
    if (bl > 0) {
        memcpy(c->out + hl, r->body, bl);
    }
    c->out_len = hl + bl;
    c->out_off = 0;
    c->state = HC_WRITING;
    set_timer(c, c->h->lim.request_timeout_ms);
    set_io(c, EV_WRITE);
}

/* An error httpd answers itself (before or instead of the API), then closes. */
static void respond_error(struct hconn *c, int status, const char *type, const char *msg)
{
    char body[512];
    json_t *j = json_pack("{s:s}", "message", msg);
    char *t = json_dumps(j, JSON_COMPACT);
    snprintf(body, sizeof(body), "%s", t != NULL ? t : "{}");
    free(t);
    json_decref(j);
    struct api_response r = {
        .status = status, .error_type = type, .body = body, .body_len = strlen(body)};
    c->close_after = true;
    respond(c, &r, false);
}

static struct hconn *conn_of(llhttp_t *p)
{
    return p->data;
}

static int reject(struct hconn *c, int status, const char *type, const char *msg)
{
    c->reject_status = status;
    c->reject_type = type;
    c->reject_msg = msg;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    free(c->target);
    free(c->body);
    c->target = NULL;
    c->target_len = 0;
    c->body = NULL;
    c->body_len = 0;
    c->head_bytes = 0;
    c->ct_len = 0;
    c->expect_continue = false;
    c->hbuf_len = 0;
    c->n_hdrs = 0;
    c->hdr_open = false;
    if (c->state == HC_IDLE) {
        c->state = HC_READING;
        set_timer(c, c->h->lim.request_timeout_ms);
    }
    return 0;
}

static int count_head(struct hconn *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > c->h->lim.head_max) {
        return reject(c, 431, "RequestHeaderFieldsTooLargeException",
                      "the request line and headers are too large");
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (count_head(c, len) != 0) {
        return HPE_USER;
    }
    c->target = xrealloc(c->target, c->target_len + len + 1);
    memcpy(c->target + c->target_len, at, len);
    c->target_len += len;
    c->target[c->target_len] = '\0';
    return 0;
}

static void hbuf_add(struct hconn *c, const char *at, size_t len)
{
    if (c->hbuf_len + len > c->hbuf_cap) {
        c->hbuf_cap = (c->hbuf_len + len) * 2;
        c->hbuf = xrealloc(c->hbuf, c->hbuf_cap);
    }
    memcpy(c->hbuf + c->hbuf_len, at, len);
    c->hbuf_len += len;
}

/* Two field names matter to httpd itself (Content-Type, Expect); a name may arrive in pieces, so
 * it is collected and looked at when complete. Every field is also kept whole (hbuf, hdrs) for
 * the handler. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (count_head(c, len + 4) != 0) { /* ": " and CRLF count too */
        return HPE_USER;
    }
    if (!c->hdr_open) {
        if (c->n_hdrs == c->hdrs_cap) {
            c->hdrs_cap = c->hdrs_cap ? 2 * c->hdrs_cap : 16;
            c->hdrs = xrealloc(c->hdrs, c->hdrs_cap * sizeof(*c->hdrs));
        }
        c->hdrs[c->n_hdrs] = (struct hspan){.name_off = c->hbuf_len, .val_off = c->hbuf_len};
        c->hdr_open = true;
    }
    hbuf_add(c, at, len);
    c->hdrs[c->n_hdrs].name_len += len;
    c->hdrs[c->n_hdrs].val_off = c->hbuf_len;
    if (c->hdr_name_len + len <= sizeof(c->hdr_name)) {
        memcpy(c->hdr_name + c->hdr_name_len, at, len);
    }
    c->hdr_name_len += len;
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    c->hdr_is_ct = c->hdr_name_len == 12 && strncasecmp(c->hdr_name, "content-type", 12) == 0;
    c->hdr_is_expect = c->hdr_name_len == 6 && strncasecmp(c->hdr_name, "expect", 6) == 0;
    c->hdr_name_len = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (count_head(c, len) != 0) {
        return HPE_USER;
    }
    if (c->hdr_is_ct && c->ct_len + len < sizeof(c->ct)) {
        memcpy(c->ct + c->ct_len, at, len);
        c->ct_len += len;
    }
    if (c->hdr_is_expect && len >= 12 && strncasecmp(at, "100-continue", 12) == 0) {
        c->expect_continue = true;
    }
    if (c->hdr_open) {
        hbuf_add(c, at, len);
        c->hdrs[c->n_hdrs].val_len += len;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    if (c->hdr_open) {
        c->n_hdrs++;
        c->hdr_open = false;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct hconn *c = conn_of(p);
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > c->h->lim.body_max) {
        return reject(c, 413, "RequestEntityTooLargeException", "the request body is too large");
    }
    if (c->ct_len > 0) {
        c->ct[c->ct_len] = '\0';
        size_t mt = strcspn(c->ct, "; \t");
        bool json = (mt == 16 && strncasecmp(c->ct, "application/json", 16) == 0) ||
                    strncasecmp(c->ct, "application/x-amz-json-", 23) == 0;
        bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
        if (has_body && !json) {
            return reject(c, 415, "UnsupportedMediaTypeException",
                          "the request body must be application/json");
        }
    }
    if (c->expect_continue) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        /* Best effort: the client sends the body after a short wait anyway. */
        ssize_t w = send(c->fd, cont, sizeof(cont) - 1, MSG_NOSIGNAL);
        (void)w;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct hconn *c = conn_of(p);
    if (c->body_len + len > c->h->lim.body_max) {
        return reject(c, 413, "RequestEntityTooLargeException", "the request body is too large");
    }
    c->body = xrealloc(c->body, c->body_len + len);
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    (void)p;
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void handle_request(struct hconn *c)
{
    const char *method = llhttp_method_name((llhttp_method_t)c->parser.method);
    const char *target = c->target != NULL ? c->target : "";
    const char *q = strchr(target, '?');
    size_t path_len = q != NULL ? (size_t)(q - target) : strlen(target);
    struct api_header *hs = xcalloc(c->n_hdrs ? c->n_hdrs : 1, sizeof(*hs));
    for (size_t i = 0; i < c->n_hdrs; i++) {
        hs[i] = (struct api_header){.name = c->hbuf + c->hdrs[i].name_off,
                                    .name_len = c->hdrs[i].name_len,
                                    .value = c->hbuf + c->hdrs[i].val_off,
                                    .value_len = c->hdrs[i].val_len};
    }
    struct api_request rq = {
        .method = method,
        .path = target,
        .path_len = path_len,
        .query = q != NULL ? q + 1 : NULL,
        .query_len = q != NULL ? strlen(q + 1) : 0,
        .body = c->body,
        .body_len = c->body_len,
        .headers = hs,
        .n_headers = c->n_hdrs,
    };
    struct api_response r;
    c->h->handler(c->h->ctx, &rq, &r);
    free(hs);
    c->close_after = !llhttp_should_keep_alive(&c->parser);
    LOG_I("%s %.*s -> %d%s%s", method, (int)(path_len > 200 ? 200 : path_len), target, r.status,
          r.error_type ? " " : "", r.error_type ? r.error_type : "");
    respond(c, &r, strcmp(method, "HEAD") == 0);
    free(r.body);
}

/* Parses what is buffered until a request is complete (then answers it) or the bytes run out. */
static void process(struct hconn *c)
{
    if (c->state == HC_WRITING || c->in_len == 0) {
        return;
    }
    enum llhttp_errno e = llhttp_execute(&c->parser, c->in, c->in_len);
    size_t used = c->in_len;
    if (e == HPE_PAUSED) {
        used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
        llhttp_resume(&c->parser);
    }
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    if (e == HPE_PAUSED) {
        handle_request(c);
    } else if (c->reject_status != 0) {
        /* A callback refused (on_headers_complete's refusal surfaces as
         * HPE_CB_HEADERS_COMPLETE, the others' as HPE_USER). */
        respond_error(c, c->reject_status, c->reject_type, c->reject_msg);
    } else if (e != HPE_OK) {
        char msg[256];
        snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
                 llhttp_get_error_reason(&c->parser));
        respond_error(c, 400, "BadRequestException", msg);
    }
}

static void on_writable(struct hconn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                return;
            }
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->close_after) {
        shutdown(c->fd, SHUT_WR);
        conn_close(c);
        return;
    }
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = 0;
    c->state = HC_IDLE;
    set_timer(c, c->h->lim.idle_timeout_ms);
    set_io(c, EV_READ);
    process(c); /* a pipelined request may be waiting */
}

static void on_readable(struct hconn *c)
{
    if (c->in_cap - c->in_len < READ_CHUNK) {
        c->in_cap = c->in_len + READ_CHUNK;
        c->in = xrealloc(c->in, c->in_cap);
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) {
            conn_close(c);
        }
        return;
    }
    if (n == 0) {
        conn_close(c); /* the peer is done; a half-sent request has no one to answer */
        return;
    }
    c->in_len += (size_t)n;
    process(c);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct hconn *c = w->data;
    if (revents & EV_WRITE) {
        on_writable(c);
    } else if (revents & EV_READ) {
        on_readable(c);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct hconn *c = w->data;
    if (c->state == HC_READING) {
        respond_error(c, 408, "RequestTimeoutException", "the request did not arrive in time");
        return;
    }
    conn_close(c); /* idle, or the peer did not take its response */
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct httpd *h = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(h->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                LOG_W("accept: %s", strerror(errno));
            }
            return;
        }
        if (h->n_conns >= h->lim.max_conns) {
            close(fd);
            continue;
        }
        struct hconn *c = xcalloc(1, sizeof(*c));
        c->h = h;
        c->fd = fd;
        llhttp_init(&c->parser, HTTP_REQUEST, &settings);
        c->parser.data = c;
        ev_io_init(&c->io, io_cb, fd, EV_READ);
        c->io.data = c;
        ev_timer_init(&c->timer, timer_cb, 0., 0.);
        c->timer.data = c;
        ev_io_start(loop, &c->io);
        set_timer(c, h->lim.idle_timeout_ms);
        c->next = h->conns;
        if (h->conns) {
            h->conns->prev = c;
        }
        h->conns = c;
        h->n_conns++;
    }
}

struct httpd *httpd_new(struct ev_loop *loop, int lfd, const struct httpd_limits *limits,
                        httpd_handler_cb handler, void *ctx)
{
    struct httpd *h = xcalloc(1, sizeof(*h));
    h->loop = loop;
    h->lfd = lfd;
    h->lim = *limits;
    h->handler = handler;
    h->ctx = ctx;
    ev_io_init(&h->accept_io, accept_cb, lfd, EV_READ);
    h->accept_io.data = h;
    ev_io_start(loop, &h->accept_io);
    return h;
}

void httpd_free(struct httpd *h)
{
    if (h == NULL) {
        return;
    }
    ev_io_stop(h->loop, &h->accept_io);
    close(h->lfd);
    while (h->conns) {
        conn_close(h->conns);
    }
    free(h);
}
