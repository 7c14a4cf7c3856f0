/* sink: statsd and DogStatsD sinks (see sink.h). */
#include "proxy/stats/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/stats/admin.h"
#include "proxy/stats/tags.h"

/* ---- lines and datagrams ---- */

static void append_clean(struct buf *out, const char *s, const char *bad)
{
    for (const char *p = s; *p != '\0'; p++) {
        char ch = strchr(bad, *p) != NULL ? '_' : *p;
        buf_append(out, &ch, 1);
    }
}

void statsd_line(struct buf *out, const char *prefix, const char *name, uint64_t value, char type,
                 const char *tags)
{
    append_clean(out, prefix, ":|\n\r");
    buf_append_str(out, ".");
    append_clean(out, name, ":|\n\r");
    buf_printf(out, ":%llu|%c", (unsigned long long)value, type);
    if (tags != NULL) {
        buf_append_str(out, tags);
    }
}

void packer_init(struct dgram_packer *pk, size_t max,
                 void (*send)(void *arg, const char *p, size_t n), void *arg)
{
    buf_init(&pk->b);
    pk->max = max;
    pk->send = send;
    pk->arg = arg;
}

void packer_flush(struct dgram_packer *pk)
{
    if (buf_len(&pk->b) > 0) {
        pk->send(pk->arg, (const char *)buf_head(&pk->b), buf_len(&pk->b));
        buf_consume(&pk->b, buf_len(&pk->b));
    }
}

void packer_add(struct dgram_packer *pk, const char *line, size_t n)
{
    size_t have = buf_len(&pk->b);
    if (have > 0 && (pk->max == 0 || have + 1 + n > pk->max)) {
        packer_flush(pk);
        have = 0;
    }
    if (have > 0) {
        buf_append(&pk->b, "\n", 1);
    }
    buf_append(&pk->b, line, n);
    if (pk->max == 0 || buf_len(&pk->b) >= pk->max) {
        packer_flush(pk);
    }
}

void packer_deinit(struct dgram_packer *pk)
{
    buf_deinit(&pk->b);
}

/* ---- the cache and a flush ---- */

struct entry {
    char *name;     /* owned: full name */
    char *tag_name; /* owned: tag-extracted name */
    char *tags;     /* owned: "|#k:v,..." or "" */
    uint64_t last;  /* a counter's value at the last flush */
    bool used;
};

struct sink_state {
    const struct config *c;
    struct tag_producer *tp;
    struct dgram_packer *pk; /* [c->n_stats_sinks] */
    struct send_arg {
        struct sink_state *st;
        uint32_t sink;
    } * args;
    void (*send)(void *arg, uint32_t sink, const char *p, size_t n);
    void *arg;
    struct entry *old, *cur; /* the last flush's entries, and this one's */
    size_t n_old, n_cur, cap_cur, cursor;
    struct buf line;
};

static void state_send(void *arg, const char *p, size_t n)
{
    struct send_arg *a = arg;
    a->st->send(a->st->arg, a->sink, p, n);
}

struct sink_state *sink_state_new(const struct config *c,
                                  void (*send)(void *arg, uint32_t sink, const char *p, size_t n),
                                  void *arg, struct err *err)
{
    struct tag_producer *tp =
        tag_producer_new(c->stats_tags, c->n_stats_tags, c->use_all_default_tags, err);
    if (tp == NULL) {
        return NULL;
    }
    struct sink_state *st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->tp = tp;
    st->send = send;
    st->arg = arg;
    uint32_t n = c->n_stats_sinks;
    st->pk = xcalloc(n ? n : 1, sizeof(*st->pk));
    st->args = xcalloc(n ? n : 1, sizeof(*st->args));
    for (uint32_t i = 0; i < n; i++) {
        st->args[i] = (struct send_arg){st, i};
        const struct stats_sink_cfg *sc = &c->stats_sinks[i];
        packer_init(&st->pk[i], sc->kind == STATS_SINK_DOG_STATSD ? sc->max_bytes_per_datagram : 0,
                    state_send, &st->args[i]);
    }
    buf_init(&st->line);
    return st;
}

static void entry_free(struct entry *e)
{
    free(e->name);
    free(e->tag_name);
    free(e->tags);
}

static void entries_free(struct entry *v, size_t from, size_t n)
{
    for (size_t i = from; i < n; i++) {
        entry_free(&v[i]);
    }
    free(v);
}

void sink_state_free(struct sink_state *st)
{
    if (st == NULL) {
        return;
    }
    entries_free(st->old, 0, st->n_old);
    entries_free(st->cur, 0, st->n_cur);
    for (uint32_t i = 0; i < st->c->n_stats_sinks; i++) {
        packer_deinit(&st->pk[i]);
    }
    free(st->pk);
    free(st->args);
    buf_deinit(&st->line);
    tag_producer_free(st->tp);
    free(st);
}

void sink_state_begin(struct sink_state *st)
{
    st->cur = NULL;
    st->n_cur = st->cap_cur = 0;
    st->cursor = 0;
}

static void entry_new(struct sink_state *st, struct entry *e, const char *name)
{
    memset(e, 0, sizeof(*e));
    e->name = xstrdup(name);
    struct stat_tags t;
    tags_produce(st->tp, name, &t);
    e->tag_name = t.name;
    t.name = NULL;
    struct buf b;
    buf_init(&b);
    for (uint32_t i = 0; i < t.n; i++) {
        buf_append_str(&b, i == 0 ? "|#" : ",");
        append_clean(&b, t.v[i].name, ":|,\n\r");
        buf_append_str(&b, ":");
        append_clean(&b, t.v[i].value, "|,\n\r");
    }
    buf_append(&b, "", 1); /* NUL-terminated (an empty buf has no storage yet) */
    e->tags = xmalloc(buf_len(&b));
    memcpy(e->tags, buf_head(&b), buf_len(&b));
    buf_deinit(&b);
    stat_tags_free(&t);
}

void sink_state_stat(struct sink_state *st, const char *name, enum stat_kind kind, uint64_t value)
{
    /* both sides in ascending order: entries before `name` are stats that are gone */
    while (st->cursor < st->n_old && strcmp(st->old[st->cursor].name, name) < 0) {
        entry_free(&st->old[st->cursor++]);
    }
    if (st->n_cur == st->cap_cur) {
        st->cap_cur = st->cap_cur ? st->cap_cur * 2 : 256;
        st->cur = xrealloc(st->cur, st->cap_cur * sizeof(*st->cur));
    }
    struct entry *e = &st->cur[st->n_cur++];
    if (st->cursor < st->n_old && strcmp(st->old[st->cursor].name, name) == 0) {
        *e = st->old[st->cursor++]; /* moved: the old slot is not freed */
    } else {
        entry_new(st, e, name);
    }
    uint64_t v = value;
    if (kind == STAT_KIND_COUNTER) {
        /* a counter that went back (a cluster of the same name made again) counts from 0 */
        v = value >= e->last ? value - e->last : value;
        e->last = value;
    }
    e->used = e->used || value > 0;
    if (!e->used) {
        return;
    }
    char type = kind == STAT_KIND_COUNTER ? 'c' : 'g';
    for (uint32_t i = 0; i < st->c->n_stats_sinks; i++) {
        const struct stats_sink_cfg *sc = &st->c->stats_sinks[i];
        buf_consume(&st->line, buf_len(&st->line));
        if (sc->kind == STATS_SINK_DOG_STATSD) {
            statsd_line(&st->line, sc->prefix.p, e->tag_name, v, type, e->tags);
        } else {
            statsd_line(&st->line, sc->prefix.p, e->name, v, type, NULL);
        }
        packer_add(&st->pk[i], (const char *)buf_head(&st->line), buf_len(&st->line));
    }
}

void sink_state_end(struct sink_state *st)
{
    for (uint32_t i = 0; i < st->c->n_stats_sinks; i++) {
        packer_flush(&st->pk[i]);
    }
    while (st->cursor < st->n_old) {
        entry_free(&st->old[st->cursor++]);
    }
    free(st->old);
    st->old = st->cur;
    st->n_old = st->n_cur;
    st->cur = NULL;
    st->n_cur = st->cap_cur = 0;
}

/* ---- sockets and the timer ---- */

struct sink_sock {
    const struct stats_sink_cfg *cfg;
    int fd; /* -1: not connected (a pipe whose peer was not there) */
    uint64_t sent, dropped;
    bool warned;
};

struct stats_flusher {
    struct ev_loop *loop;
    ev_timer timer;
    const struct config *c;
    struct admin_ctx *ctx;
    struct sink_state *st;
    struct sink_sock *socks; /* [c->n_stats_sinks] */
};

static int sock_open(struct sink_sock *s, struct err *err)
{
    const struct stats_sink_cfg *sc = s->cfg;
    int family = sc->is_pipe ? AF_UNIX : sc->addr.ss.ss_family;
    int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return err_set(err, NULL, "stats sink: socket: %s", strerror(errno));
    }
    int rc;
    if (sc->is_pipe) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        memcpy(un.sun_path, sc->pipe_path.p, sc->pipe_path.len); /* length checked at build */
        rc = connect(fd, (struct sockaddr *)&un, sizeof(un));
    } else {
        rc = connect(fd, (const struct sockaddr *)&sc->addr.ss, sc->addr.len);
    }
    if (rc != 0) {
        int e = errno;
        close(fd);
        return err_set(err, NULL, "stats sink %.*s: connect: %s",
                       STR_FMT(sc->is_pipe ? sc->pipe_path : sc->addr.text), strerror(e));
    }
    s->fd = fd;
    return 0;
}

static void sock_drop(struct sink_sock *s, const char *why)
{
    s->dropped++;
    const struct stats_sink_cfg *sc = s->cfg;
    struct str to = sc->is_pipe ? sc->pipe_path : sc->addr.text;
    if (!s->warned) {
        s->warned = true;
        LOG_W("stats sink %.*s: datagram dropped (%s); further drops are logged at debug level",
              STR_FMT(to), why);
    } else {
        LOG_D("stats sink %.*s: datagram dropped (%s; %llu so far)", STR_FMT(to), why,
              (unsigned long long)s->dropped);
    }
}

static void flusher_send(void *arg, uint32_t sink, const char *p, size_t n)
{
    struct stats_flusher *f = arg;
    struct sink_sock *s = &f->socks[sink];
    if (s->fd < 0) {
        struct err err;
        if (sock_open(s, &err) != 0) {
            sock_drop(s, err.msg);
            return;
        }
    }
    ssize_t w = send(s->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (w == (ssize_t)n) {
        s->sent++;
        return;
    }
    int e = w < 0 ? errno : EMSGSIZE;
    sock_drop(s, strerror(e));
    if (s->cfg->is_pipe && (e == ECONNREFUSED || e == ENOTCONN || e == ENOENT)) {
        close(s->fd); /* the agent went away: connect again next time */
        s->fd = -1;
    }
}

static void each_stat(void *arg, const char *name, enum stat_kind kind, uint64_t value)
{
    sink_state_stat(arg, name, kind, value);
}

void stats_flusher_flush(struct stats_flusher *f)
{
    struct server_stats_view v;
    admin_stats_view(f->ctx, &v);
    sink_state_begin(f->st);
    stats_each(f->ctx->cfg, f->ctx->blocks, f->ctx->n_blocks, &v, each_stat, f->st);
    sink_state_end(f->st);
}

static void on_flush(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    stats_flusher_flush(t->data);
}

struct stats_flusher *stats_flusher_start(struct ev_loop *loop, const struct config *c,
                                          struct admin_ctx *ctx, struct err *err)
{
    struct stats_flusher *f = xcalloc(1, sizeof(*f));
    f->loop = loop;
    f->c = c;
    f->ctx = ctx;
    f->socks = xcalloc(c->n_stats_sinks ? c->n_stats_sinks : 1, sizeof(*f->socks));
    for (uint32_t i = 0; i < c->n_stats_sinks; i++) {
        f->socks[i].cfg = &c->stats_sinks[i];
        f->socks[i].fd = -1;
    }
    f->st = sink_state_new(c, flusher_send, f, err);
    if (f->st == NULL) {
        stats_flusher_stop(f);
        return NULL;
    }
    for (uint32_t i = 0; i < c->n_stats_sinks; i++) {
        /* A UDP socket connects at once; a pipe whose agent is not up yet connects later. */
        if (sock_open(&f->socks[i], err) != 0 && !c->stats_sinks[i].is_pipe) {
            stats_flusher_stop(f);
            return NULL;
        }
    }
    double s = (double)c->stats_flush_interval_ms / 1000.0;
    ev_timer_init(&f->timer, on_flush, s, s);
    f->timer.data = f;
    ev_timer_start(loop, &f->timer);
    return f;
}

void stats_flusher_stop(struct stats_flusher *f)
{
    if (f == NULL) {
        return;
    }
    if (ev_is_active(&f->timer)) {
        ev_timer_stop(f->loop, &f->timer);
    }
    for (uint32_t i = 0; i < f->c->n_stats_sinks; i++) {
        if (f->socks[i].fd >= 0) {
            close(f->socks[i].fd);
        }
    }
    sink_state_free(f->st);
    free(f->socks);
    free(f);
}
