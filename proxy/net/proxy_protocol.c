/* proxy_protocol: reading a connection's PROXY header before its chain is chosen (see
 * proxy_protocol.h). */
#include "proxy/net/proxy_protocol.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/tls_inspector.h"
#include "proxy/stats/stats.h"
#include "proxy/worker.h"

/* ---- the header ---- */

static const uint8_t V1_SIG[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t V2_SIG[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
#define V2_HEAD 16

/* Whether p[len] is `sig`, or (shorter) its start. */
static bool sig_prefix(const uint8_t *p, size_t len, const uint8_t *sig, size_t sig_len)
{
    return memcmp(p, sig, len < sig_len ? len : sig_len) == 0;
}

/* The next space-separated token of line[*off..end), at most `max` bytes, into `out`
 * (NUL-terminated); false when empty or too long. */
static bool v1_token(const uint8_t *line, size_t end, size_t *off, char *out, size_t max)
{
    size_t i = *off, n = 0;
    while (i < end && line[i] != ' ') {
        if (n + 1 >= max) {
            return false;
        }
        out[n++] = (char)line[i++];
    }
    if (n == 0) {
        return false;
    }
    out[n] = '\0';
    *off = i < end ? i + 1 : i; /* past the single space */
    return true;
}

/* A v1 port: 1 to 5 decimal digits, at most 65535. */
static bool v1_port(const char *s, uint16_t *out)
{
    uint32_t v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 5) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) {
        return false;
    }
    *out = (uint16_t)v;
    return true;
}

static bool v1_addr(int af, const char *ip, uint16_t port, union sockaddr_ip *out)
{
    memset(out, 0, sizeof(*out));
    if (af == AF_INET) {
        out->in.sin_family = AF_INET;
        out->in.sin_port = htons(port);
        return inet_pton(AF_INET, ip, &out->in.sin_addr) == 1;
    }
    out->in6.sin6_family = AF_INET6;
    out->in6.sin6_port = htons(port);
    return inet_pton(AF_INET6, ip, &out->in6.sin6_addr) == 1;
}

/* "PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n" or "PROXY UNKNOWN[ anything]\r\n". */
static enum pp_rc v1_parse(const uint8_t *p, size_t len, struct pp_header *out)
{
    out->version = 1;
    size_t scan = len < PP_V1_MAX ? len : PP_V1_MAX;
    const uint8_t *nl = memchr(p, '\n', scan);
    if (nl == NULL) {
        if (len >= PP_V1_MAX) {
            return PP_ERROR;
        }
        out->need = len + 1;
        return PP_MORE;
    }
    size_t end = (size_t)(nl - p); /* index of '\n' */
    if (end < sizeof(V1_SIG) + 1 || p[end - 1] != '\r') {
        return PP_ERROR;
    }
    end--; /* the line without "\r\n" */
    out->len = end + 2;
    size_t off = sizeof(V1_SIG);
    char proto[8], src[48], dst[48], sport[8], dport[8];
    if (!v1_token(p, end, &off, proto, sizeof(proto))) {
        return PP_ERROR;
    }
    if (strcmp(proto, "UNKNOWN") == 0) {
        out->has_addrs = false; /* the rest of the line is to be ignored */
        return PP_DONE;
    }
    int af = strcmp(proto, "TCP4") == 0 ? AF_INET : strcmp(proto, "TCP6") == 0 ? AF_INET6 : 0;
    uint16_t sp, dp;
    if (af == 0 || !v1_token(p, end, &off, src, sizeof(src)) ||
        !v1_token(p, end, &off, dst, sizeof(dst)) ||
        !v1_token(p, end, &off, sport, sizeof(sport)) ||
        !v1_token(p, end, &off, dport, sizeof(dport)) || off != end || p[end - 1] == ' ' ||
        !v1_port(sport, &sp) || !v1_port(dport, &dp) || !v1_addr(af, src, sp, &out->src) ||
        !v1_addr(af, dst, dp, &out->dst)) {
        return PP_ERROR;
    }
    out->has_addrs = true;
    return PP_DONE;
}

static enum pp_rc v2_parse(const uint8_t *p, size_t len, struct pp_header *out)
{
    out->version = 2;
    if (len < V2_HEAD) {
        out->need = V2_HEAD;
        return PP_MORE;
    }
    uint8_t ver = p[12] >> 4, cmd = p[12] & 0x0f, fam = p[13] >> 4, proto = p[13] & 0x0f;
    size_t body = (size_t)p[14] << 8 | p[15];
    if (ver != 2 || cmd > 1 || V2_HEAD + body > PP_V2_MAX) {
        return PP_ERROR;
    }
    if (len < V2_HEAD + body) {
        out->need = V2_HEAD + body;
        return PP_MORE;
    }
    out->len = V2_HEAD + body;
    const uint8_t *a = p + V2_HEAD;
    if (cmd == 0 || fam == 0) {
        /* LOCAL (the sender's own connection, e.g. a health check), or PROXY with AF_UNSPEC:
         * the socket's addresses stay; whatever follows is skipped */
        out->has_addrs = false;
        return PP_DONE;
    }
    if (proto != 1) {
        return PP_ERROR; /* only STREAM (TCP): DGRAM and UNSPEC are not TCP connections */
    }
    if (fam == 1 && body >= 12) {
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        out->src.in.sin_family = out->dst.in.sin_family = AF_INET;
        memcpy(&out->src.in.sin_addr, a, 4);
        memcpy(&out->dst.in.sin_addr, a + 4, 4);
        memcpy(&out->src.in.sin_port, a + 8, 2);
        memcpy(&out->dst.in.sin_port, a + 10, 2);
    } else if (fam == 2 && body >= 36) {
        memset(&out->src, 0, sizeof(out->src));
        memset(&out->dst, 0, sizeof(out->dst));
        out->src.in6.sin6_family = out->dst.in6.sin6_family = AF_INET6;
        memcpy(&out->src.in6.sin6_addr, a, 16);
        memcpy(&out->dst.in6.sin6_addr, a + 16, 16);
        memcpy(&out->src.in6.sin6_port, a + 32, 2);
        memcpy(&out->dst.in6.sin6_port, a + 34, 2);
    } else {
        return PP_ERROR; /* AF_UNIX (Envoy closes it too), another family, or too short */
    }
    out->has_addrs = true;
    return PP_DONE;
}

enum pp_rc pp_parse(const uint8_t *p, size_t len, unsigned versions, struct pp_header *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0) {
        out->need = 1;
        return PP_MORE;
    }
    bool v1 = (versions & PP_V1) && sig_prefix(p, len, V1_SIG, sizeof(V1_SIG));
    bool v2 = (versions & PP_V2) && sig_prefix(p, len, V2_SIG, sizeof(V2_SIG));
    if (!v1 && !v2) {
        return PP_NOT_PP;
    }
    if (v1 && len >= sizeof(V1_SIG)) {
        return v1_parse(p, len, out);
    }
    if (v2 && len >= sizeof(V2_SIG)) {
        return v2_parse(p, len, out);
    }
    out->need = len + 1; /* a signature's start: one more byte tells */
    return PP_MORE;
}

/* ---- a connection waiting for its header ---- */

/* Wakeups one connection may take without a whole header (each needs new bytes: SO_RCVLOWAT);
 * past it the socket is closed (downstream_listener_filter_error). Envoy has only the timeout. */
#define MAX_ROUNDS 64

struct pp_wait {
    struct list link; /* worker.pp_waiting */
    struct deferred deferred;
    struct worker *w;
    int fd;
    const struct worker_listener *wl; /* borrowed: the listener that accepted it */
    uint32_t seen;
    uint16_t rounds;
    bool lowat;
    bool has_local;
    ev_io io;
    ev_timer timer;
    union sockaddr_ip peer, local;
};

static void wait_free(struct deferred *d)
{
    free(LIST_ENTRY(d, struct pp_wait, deferred));
}

static struct listener_stats *lstats(struct pp_wait *c)
{
    return &c->wl->sc->stats->listener[c->wl->index];
}

static void wait_end(struct pp_wait *c, bool fd_close)
{
    ev_io_stop(c->w->loop, &c->io);
    ev_timer_stop(c->w->loop, &c->timer);
    list_remove(&c->link);
    STAT_DEC(lstats(c)->downstream_pre_cx_active);
    if (fd_close) {
        close(c->fd);
    }
    worker_defer(c->w, &c->deferred, wait_free);
}

/* Hands the socket on with `h`'s addresses (NULL, or without addresses: the socket's). */
static void hand_over(struct pp_wait *c, const struct pp_header *h)
{
    if (c->lowat) {
        int one = 1;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
    }
    bool restored = h != NULL && h->has_addrs;
    struct accepted a = {.fd = c->fd,
                         .peer = restored ? &h->src.sa : &c->peer.sa,
                         .direct = restored ? &c->peer.sa : NULL,
                         .local = restored       ? &h->dst.sa
                                  : c->has_local ? &c->local.sa
                                                 : NULL};
    struct worker *w = c->w;
    const struct worker_listener *wl = c->wl;
    /* `c` is freed only after the callbacks unwind (worker_defer): `a` may point into it */
    wait_end(c, false);
    if (wl->l->tls_inspector) {
        tls_inspect_start(w, wl, &a);
    } else {
        worker_accept_chain(w, wl, &a, NULL);
    }
}

static void fail(struct pp_wait *c, stat_t *st)
{
    STAT_INC(*st);
    STAT_INC(c->w->stats->proxy_proto.downstream_cx_proxy_proto_error);
    wait_end(c, true);
}

static bool still_open(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
           ti.tcpi_state == TCP_ESTABLISHED;
}

static void io_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    (void)revents;
    struct pp_wait *c = io->data;
    struct worker *w = c->w;
    struct proxy_proto_stats *ps = &w->stats->proxy_proto;
    const struct listener_cfg *l = c->wl->l;
    ssize_t n = recv(c->fd, w->scratch, sizeof(w->scratch), MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        return;
    }
    if (n < 0) {
        STAT_INC(lstats(c)->downstream_listener_filter_error);
        wait_end(c, true);
        return;
    }
    if (n > 0 && (size_t)n <= c->seen && still_open(c->fd)) {
        if (++c->rounds >= MAX_ROUNDS) {
            STAT_INC(lstats(c)->downstream_listener_filter_error);
            wait_end(c, true);
        }
        return;
    }
    if (n == 0 || (size_t)n <= c->seen) {
        STAT_INC(lstats(c)->downstream_listener_filter_remote_close);
        wait_end(c, true);
        return;
    }
    c->seen = (uint32_t)n;
    /* With allow_requests_without_proxy_protocol, a disallowed version's signature is no
     * PROXY header at all (Envoy's disallowed_versions note); without it, every version is
     * read and a disallowed one refused. */
    unsigned mask = l->pp_allow_without ? l->pp_versions : (PP_V1 | PP_V2);
    struct pp_header h;
    switch (pp_parse(w->scratch, (size_t)n, mask, &h)) {
    case PP_NOT_PP:
        if (l->pp_allow_without) {
            STAT_INC(ps->not_found_allowed);
            hand_over(c, NULL);
        } else {
            fail(c, &ps->not_found_disallowed);
        }
        return;
    case PP_ERROR:
        LOG_D("proxy_protocol: malformed v%u header: closed", h.version);
        fail(c, h.version == 1 ? &ps->v1_error : &ps->v2_error);
        return;
    case PP_DONE: {
        if (!(l->pp_versions & (h.version == 1 ? PP_V1 : PP_V2))) {
            STAT_INC(*(h.version == 1 ? &ps->v1_disallowed : &ps->v2_disallowed));
            wait_end(c, true);
            return;
        }
        /* the header's bytes are in the socket already: read exactly them */
        ssize_t r = recv(c->fd, w->scratch, h.len, 0);
        if (r != (ssize_t)h.len) {
            STAT_INC(lstats(c)->downstream_listener_filter_error);
            wait_end(c, true);
            return;
        }
        STAT_INC(*(h.version == 1 ? &ps->v1_found : &ps->v2_found));
        hand_over(c, &h);
        return;
    }
    case PP_MORE:
        break;
    }
    if (++c->rounds >= MAX_ROUNDS) {
        STAT_INC(lstats(c)->downstream_listener_filter_error);
        wait_end(c, true);
        return;
    }
    int lowat = (int)h.need;
    if (setsockopt(c->fd, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) == 0) {
        c->lowat = true;
    }
}

static void timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct pp_wait *c = t->data;
    STAT_INC(lstats(c)->downstream_pre_cx_timeout);
    if (c->wl->l->continue_on_filters_timeout) {
        hand_over(c, NULL);
    } else {
        wait_end(c, true);
    }
}

void pp_start(struct worker *w, const struct worker_listener *wl, const struct accepted *a)
{
    struct pp_wait *c = xcalloc(1, sizeof(*c));
    c->w = w;
    c->fd = a->fd;
    c->wl = wl;
    sockaddr_ip_set(&c->peer, a->peer);
    c->has_local = sockaddr_ip_set(&c->local, a->local);
    list_insert_tail(&w->pp_waiting, &c->link);
    STAT_INC(lstats(c)->downstream_pre_cx_active);
    ev_io_init(&c->io, io_cb, c->fd, EV_READ);
    c->io.data = c;
    ev_io_start(w->loop, &c->io);
    uint64_t ms = wl->l->filters_timeout_ms;
    ev_timer_init(&c->timer, timeout_cb, (double)ms / 1000.0, 0);
    c->timer.data = c;
    if (ms > 0) {
        ev_timer_start(w->loop, &c->timer);
    }
}

void pp_close_all(struct worker *w)
{
    while (!list_empty(&w->pp_waiting)) {
        wait_end(LIST_ENTRY(list_first(&w->pp_waiting), struct pp_wait, link), true);
    }
}

void pp_close_listener(struct worker *w, const struct worker_listener *wl)
{
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &w->pp_waiting)
    {
        struct pp_wait *c = LIST_ENTRY(it, struct pp_wait, link);
        if (c->wl == wl) {
            wait_end(c, true);
        }
    }
}
