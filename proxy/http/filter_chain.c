/* filter_chain: a stream's HTTP filters at run time (see filter_chain.h and filter.h). It sits
 * between the connection manager's part of stream.c (parsing, x-forwarded-*, routing) and the
 * router's part (forwarding), in both directions, and owns the per-stream `struct filter`s (in
 * the stream arena) and the bytes a stopped filter holds (heap buffers, freed at the end).
 *
 * Each direction is a little state machine over chain positions ("steps": the request runs
 * filters 0..n-1, the response n-1..0):
 *
 *   FLOWING --a callback returns STOP at step k--> STOPPED(k) --stream_resume(k)--> FLOWING
 *      ^                                             |  body arriving: passes steps 0..k,
 *      |                                             |  then is appended to `held`
 *      +---- held bytes delivered from k+1 on <------+
 *
 * Invariant while STOPPED(k): every byte in `held` has passed exactly steps 0..k. That is what
 * makes "each filter sees each byte once, in order" hold across stops during the head, stops
 * during the body, and a second stop while resuming (the held bytes first catch up to the new
 * stop point). */
#include "proxy/http/filter_chain.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/buf.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/downstream.h"
#include "proxy/http/filter.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/upstream.h"

#define DEFAULT_BUFFER_LIMIT (1024 * 1024)

struct fc_dir {
    bool is_resp;
    bool head_passed; /* the head went through every filter */
    bool head_end;    /* the head said "no body" */
    bool stopped;     /* STOPPED(stop_at) */
    bool strict;      /* stopped with FILTER_STOP_AND_BUFFER: overflow ends the stream */
    bool end_held;    /* the end of the body is in `held` (after its bytes) */
    bool paused_peer; /* this direction paused the sender's reads */
    uint32_t stop_at; /* the step that stopped, while `stopped` */
    uint32_t limit;   /* filter_set_buffer_limit(), 0: the listener's */
    struct buf held;  /* owned: body bytes that passed steps 0..stop_at */
};

struct filter_chain {
    struct stream *s; /* borrowed: the owner */
    struct filter *v; /* [n], in the stream arena */
    uint32_t n;
    uint32_t req_seen; /* filters [0, req_seen) had on_request_headers called */
    struct fc_dir req;
    struct fc_dir resp;
    bool replied;        /* a local reply went out: nothing more is forwarded */
    bool in_local_reply; /* running the local reply's head through the filters */
    bool done;
    const struct filter *busy;   /* the filter whose callback is running, or NULL */
    const struct filter *resume; /* stream_resume() called by `busy` before it returned */
};

struct filter_conn {
    struct filter_conn *next; /* owned */
    const void *key;
    max_align_t data[];
};

/* ---- helpers ---- */

static uint32_t limit_of(const struct stream *s, const struct fc_dir *d)
{
    if (d->limit != 0) {
        return d->limit;
    }
    uint32_t l = s->lcfg->per_connection_buffer_limit;
    return l ? l : DEFAULT_BUFFER_LIMIT;
}

static struct filter *at(struct filter_chain *fc, const struct fc_dir *d, uint32_t step)
{
    return &fc->v[d->is_resp ? fc->n - 1 - step : step];
}

/* The stream was answered or has ended: nothing more runs or is forwarded. */
static bool gone(const struct filter_chain *fc)
{
    return fc->replied || fc->done || fc->s->finished;
}

static bool has_body(const struct filter_chain *fc, const struct fc_dir *d)
{
    return d->is_resp ? !d->head_end : fc->s->req_has_body;
}

static enum filter_status call_head(struct filter_chain *fc, struct fc_dir *d, uint32_t step)
{
    struct filter *f = at(fc, d, step);
    enum filter_status (*cb)(struct filter *, struct headers *, bool) =
        d->is_resp ? f->ops->on_response_headers : f->ops->on_request_headers;
    if (!d->is_resp && f->index + 1 > fc->req_seen) {
        fc->req_seen = f->index + 1;
    }
    if (cb == NULL) {
        return FILTER_CONTINUE;
    }
    fc->busy = f;
    enum filter_status st = cb(f, d->is_resp ? &fc->s->resp : &fc->s->req, d->head_end);
    fc->busy = NULL;
    if (fc->resume == f) {
        fc->resume = NULL;
        st = FILTER_CONTINUE; /* it resumed itself before returning */
    }
    return st;
}

static enum filter_status call_data(struct filter_chain *fc, struct fc_dir *d, uint32_t step,
                                    const uint8_t *p, size_t len, bool end)
{
    struct filter *f = at(fc, d, step);
    enum filter_status (*cb)(struct filter *, const uint8_t *, size_t, bool) =
        d->is_resp ? f->ops->on_response_data : f->ops->on_request_data;
    if (cb == NULL) {
        return FILTER_CONTINUE;
    }
    fc->busy = f;
    enum filter_status st = cb(f, p, len, end);
    fc->busy = NULL;
    if (fc->resume == f) {
        fc->resume = NULL;
        st = FILTER_CONTINUE;
    }
    return st;
}

/* Body bytes through steps [from, to), statuses ignored (the direction is already stopped),
 * except that of step to-1: true when that filter has a data callback and it returned
 * FILTER_CONTINUE (a filter that stopped with FILTER_STOP_AND_BUFFER releases the direction this
 * way, as Envoy's decodeData returning Continue does). */
static bool pass(struct filter_chain *fc, struct fc_dir *d, uint32_t from, uint32_t to,
                 const uint8_t *p, size_t len, bool end)
{
    bool released = false;
    for (uint32_t k = from; k < to && !gone(fc); k++) {
        enum filter_status st = call_data(fc, d, k, p, len, end);
        if (k + 1 == to) {
            const struct filter *f = at(fc, d, k);
            released = (d->is_resp ? f->ops->on_response_data : f->ops->on_request_data) != NULL &&
                       st == FILTER_CONTINUE;
        }
    }
    return released;
}

/* The bytes of a held buffer, NULL when there are none (an empty buf has no memory). */
static const uint8_t *held_bytes(const struct buf *b)
{
    return buf_len(b) > 0 ? buf_head(b) : NULL;
}

static void stop(struct fc_dir *d, uint32_t step, enum filter_status st)
{
    d->stopped = true;
    d->stop_at = step;
    d->strict = st == FILTER_STOP_AND_BUFFER;
}

/* After bytes were held: past the buffer limit, pause the sender (backpressure), or end the
 * stream when the filter asked for strict buffering. */
static void check_held(struct filter_chain *fc, struct fc_dir *d)
{
    struct stream *s = fc->s;
    if (buf_len(&d->held) <= limit_of(s, d)) {
        return;
    }
    if (d->strict) {
        if (d->is_resp) {
            stream_set_details(s, "response_payload_too_large");
            stream_local_reply(s, 500, "Internal Server Error", 0);
        } else {
            STAT_INC(s->hstats->downstream_rq_too_large);
            stream_set_details(s, "request_payload_too_large");
            stream_local_reply(s, 413, "Payload Too Large", 0);
        }
        return;
    }
    if (d->paused_peer) {
        return;
    }
    if (!d->is_resp) {
        s->dc->ops->pause_read(s, true);
        d->paused_peer = true;
    } else if (s->uc != NULL) {
        upstream_pause_read(s->uc, true);
        d->paused_peer = true;
    }
}

static void hold(struct filter_chain *fc, struct fc_dir *d, const uint8_t *p, size_t len, bool end)
{
    if (len > 0) {
        buf_append(&d->held, p, len);
    }
    if (end) {
        d->end_held = true;
    }
    check_held(fc, d);
}

static void sink_head(struct filter_chain *fc, struct fc_dir *d)
{
    if (d->is_resp) {
        stream_send_response_head(fc->s);
    } else {
        stream_route_request(fc->s);
    }
}

static void sink_data(struct filter_chain *fc, struct fc_dir *d, const uint8_t *p, size_t len,
                      bool end)
{
    if (d->is_resp) {
        stream_send_response_body(fc->s, p, len, end);
    } else {
        stream_forward_request_body(fc->s, p, len, end);
    }
}

/* Resumed outside the sender's own read path (a timer, another connection's event, a filter
 * that let go while its bytes were held): nothing else will send what the filters and the
 * router produced. */
static void flush(struct stream *s)
{
    if (!s->finished) {
        if (s->uc != NULL) {
            upstream_flush(s->uc);
        }
        downstream_flush(s->dc);
    }
}

static void resume_dir(struct filter_chain *fc, struct fc_dir *d);

/* ---- the two directions ---- */

/* The head from step `from`. True when it passed every filter. */
static bool run_head(struct filter_chain *fc, struct fc_dir *d, uint32_t from)
{
    for (uint32_t k = from; k < fc->n; k++) {
        enum filter_status st = call_head(fc, d, k);
        if (gone(fc)) {
            return false;
        }
        if (st != FILTER_CONTINUE) {
            stop(d, k, st);
            return false;
        }
    }
    d->head_passed = true;
    return true;
}

/* Body bytes arriving from the sender. True: they passed every filter (the caller forwards). */
static bool run_data(struct filter_chain *fc, struct fc_dir *d, const uint8_t *p, size_t len,
                     bool end)
{
    if (gone(fc)) {
        return false;
    }
    if (!has_body(fc, d)) {
        /* The end of a bodiless message: no data callbacks, but it waits behind a stop. */
        if (d->stopped) {
            d->end_held = true;
            return false;
        }
        return true;
    }
    if (d->stopped) {
        bool released = pass(fc, d, 0, d->stop_at + 1, p, len, end);
        if (!gone(fc)) {
            hold(fc, d, p, len, end);
        }
        if (released && d->strict && !gone(fc)) {
            resume_dir(fc, d);
            flush(fc->s);
        }
        return false;
    }
    for (uint32_t k = 0; k < fc->n; k++) {
        enum filter_status st = call_data(fc, d, k, p, len, end);
        if (gone(fc)) {
            return false;
        }
        if (st != FILTER_CONTINUE) {
            stop(d, k, st);
            hold(fc, d, p, len, end);
            return false;
        }
    }
    return true;
}

/* Held bytes (which passed steps 0..from-1) through the rest, then to the next hop. */
static void deliver_held(struct filter_chain *fc, struct fc_dir *d, uint32_t from)
{
    if (buf_len(&d->held) == 0 && !d->end_held) {
        return;
    }
    bool end = d->end_held;
    if (has_body(fc, d)) {
        for (uint32_t k = from; k < fc->n; k++) {
            enum filter_status st =
                call_data(fc, d, k, held_bytes(&d->held), buf_len(&d->held), end);
            if (gone(fc)) {
                return;
            }
            if (st != FILTER_CONTINUE) {
                stop(d, k, st);
                check_held(fc, d);
                return;
            }
        }
    }
    /* Moved out first: the sink may end the stream, which frees what the chain holds. */
    struct buf out = d->held;
    buf_init(&d->held);
    d->end_held = false;
    sink_data(fc, d, held_bytes(&out), buf_len(&out), end);
    buf_deinit(&out);
}

static void resume_dir(struct filter_chain *fc, struct fc_dir *d)
{
    struct stream *s = fc->s;
    uint32_t k = d->stop_at;
    d->stopped = false;
    d->strict = false;
    if (d->paused_peer) {
        d->paused_peer = false;
        if (!d->is_resp) {
            s->dc->ops->pause_read(s, false);
        } else if (s->uc != NULL) {
            upstream_pause_read(s->uc, false);
        }
    }
    if (!d->head_passed) {
        for (uint32_t m = k + 1; m < fc->n; m++) {
            enum filter_status st = call_head(fc, d, m);
            if (gone(fc)) {
                return;
            }
            if (st != FILTER_CONTINUE) {
                /* Held bytes catch up to the new stop point. */
                bool released = false;
                if (buf_len(&d->held) > 0 || (d->end_held && has_body(fc, d))) {
                    released = pass(fc, d, k + 1, m + 1, held_bytes(&d->held), buf_len(&d->held),
                                    d->end_held);
                }
                if (!gone(fc)) {
                    stop(d, m, st);
                    check_held(fc, d);
                }
                if (released && d->strict && !gone(fc)) {
                    resume_dir(fc, d); /* the new stop point already let go */
                }
                return;
            }
        }
        d->head_passed = true;
        sink_head(fc, d);
        if (gone(fc)) {
            return;
        }
    }
    deliver_held(fc, d, k + 1);
}

/* ---- hooks (filter_chain.h) ---- */

static struct filter_chain *chain_new(struct stream *s)
{
    const struct hcm_cfg *h = s->hcm;
    struct filter_chain *fc = ARENA_NEW(&s->arena, struct filter_chain);
    fc->s = s;
    fc->n = h->n_filters;
    fc->v = ARENA_NEW_N(&s->arena, struct filter, fc->n);
    fc->resp.is_resp = true;
    buf_init(&fc->req.held);
    buf_init(&fc->resp.held);
    for (uint32_t i = 0; i < fc->n; i++) {
        const struct filter_cfg *c = &h->filters[i];
        struct filter *f = &fc->v[i];
        f->ops = c->ops;
        f->cfg = c->cfg;
        /* The most specific typed_per_filter_config wins (Envoy's rule). */
        if (s->vhost != NULL && s->vhost->filter_cfgs != NULL && s->vhost->filter_cfgs[i]) {
            f->cfg = s->vhost->filter_cfgs[i];
        }
        if (s->route != NULL && s->route->filter_cfgs != NULL && s->route->filter_cfgs[i]) {
            f->cfg = s->route->filter_cfgs[i];
        }
        f->state = c->ops->state_size ? arena_zalloc(&s->arena, c->ops->state_size) : NULL;
        f->wstate = s->dc->sc->filter_wstate != NULL ? s->dc->sc->filter_wstate[c->slot] : NULL;
        f->s = s;
        f->index = i;
    }
    return fc;
}

bool filter_chain_request_headers(struct stream *s)
{
    struct filter_chain *fc = chain_new(s);
    s->fc = fc;
    fc->req.head_end = !s->req_has_body;
    return run_head(fc, &fc->req, 0);
}

bool filter_chain_request_data(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    return run_data(s->fc, &s->fc->req, p, len, end);
}

bool filter_chain_response_headers(struct stream *s, bool end)
{
    struct filter_chain *fc = s->fc;
    fc->resp.head_end = end;
    if (gone(fc)) {
        return false;
    }
    return run_head(fc, &fc->resp, 0);
}

bool filter_chain_response_data(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    return run_data(s->fc, &s->fc->resp, p, len, end);
}

void filter_chain_local_reply(struct stream *s, struct headers *h)
{
    struct filter_chain *fc = s->fc;
    fc->replied = true;
    if (fc->in_local_reply || fc->done) {
        return;
    }
    fc->in_local_reply = true;
    for (uint32_t i = fc->req_seen; i-- > 0;) {
        struct filter *f = &fc->v[i];
        if (f->ops->on_response_headers != NULL) {
            (void)f->ops->on_response_headers(f, h, true);
        }
    }
    fc->in_local_reply = false;
}

void filter_chain_done(struct stream *s)
{
    struct filter_chain *fc = s->fc;
    if (fc->done) {
        return;
    }
    fc->done = true;
    for (uint32_t i = 0; i < fc->n; i++) {
        struct filter *f = &fc->v[i];
        if (f->ops->on_done != NULL) {
            f->ops->on_done(f);
        }
    }
    buf_deinit(&fc->req.held);
    buf_deinit(&fc->resp.held);
}

/* ---- the filter API (filter.h) ---- */

void stream_resume(struct stream *s, struct filter *f)
{
    struct filter_chain *fc = s->fc;
    if (fc == NULL || gone(fc)) {
        return;
    }
    if (fc->busy == f) {
        fc->resume = f; /* called before returning STOP: taken as CONTINUE */
        return;
    }
    struct fc_dir *d = NULL;
    if (fc->req.stopped && at(fc, &fc->req, fc->req.stop_at) == f) {
        d = &fc->req;
    } else if (fc->resp.stopped && at(fc, &fc->resp, fc->resp.stop_at) == f) {
        d = &fc->resp;
    }
    if (d == NULL) {
        return;
    }
    resume_dir(fc, d);
    flush(s);
}

void filter_local_reply(struct filter *f, int status, const char *body, uint32_t flag)
{
    struct filter_chain *fc = f->s->fc;
    if (fc->in_local_reply || gone(fc)) {
        LOG_D("filter %s: local reply %d ignored: the stream is already answered", f->ops->name,
              status);
        return;
    }
    stream_local_reply(f->s, status, body, flag);
}

void filter_set_buffer_limit(struct filter *f, uint32_t bytes)
{
    struct filter_chain *fc = f->s->fc;
    fc->req.limit = bytes;
    check_held(fc, &fc->req);
}

bool filter_set_request_content_length(struct filter *f, uint64_t len)
{
    struct stream *s = f->s;
    if (s->fc->req.head_passed || s->has_req_trailers) {
        return false;
    }
    headers_remove(&s->req, STR_LIT("transfer-encoding"));
    headers_set(&s->req, STR_LIT("content-length"), arena_printf(&s->arena, "%" PRIu64, len));
    s->req_chunked = false;
    return true;
}

uint64_t filter_rand(struct filter *f)
{
    return worker_rand(f->s->w);
}

void filter_stat_add(struct filter *f, uint32_t stat, uint64_t v)
{
    stat_add(&f->s->dc->sc->stats->ext[stat], v);
}

void filter_stat_sub(struct filter *f, uint32_t stat, uint64_t v)
{
    stat_sub(&f->s->dc->sc->stats->ext[stat], v);
}

void *filter_conn_state(struct filter *f, const void *key, size_t size)
{
    struct downstream *d = f->s->dc;
    for (struct filter_conn *c = d->filter_conn; c != NULL; c = c->next) {
        if (c->key == key) {
            return c->data;
        }
    }
    struct filter_conn *c = xcalloc(1, sizeof(*c) + size);
    c->key = key;
    c->next = d->filter_conn;
    d->filter_conn = c;
    return c->data;
}

void filter_conn_free(struct filter_conn *list)
{
    while (list != NULL) {
        struct filter_conn *next = list->next;
        free(list);
        list = next;
    }
}

/* ---- per-worker state ---- */

void **filter_chain_worker_new(const struct config *c, struct worker *w)
{
    void **v = xcalloc(c->n_filter_slots ? c->n_filter_slots : 1, sizeof(*v));
    for (uint32_t i = 0; i < c->n_chains; i++) {
        const struct hcm_cfg *h = c->chains[i].hcm;
        for (uint32_t k = 0; h != NULL && k < h->n_filters; k++) {
            const struct filter_cfg *fcfg = &h->filters[k];
            if (fcfg->ops->worker_new != NULL) {
                v[fcfg->slot] = fcfg->ops->worker_new(fcfg->cfg, w);
            }
        }
    }
    return v;
}

void filter_chain_worker_free(void **wstate, const struct config *c)
{
    if (wstate == NULL) {
        return;
    }
    for (uint32_t i = 0; i < c->n_chains; i++) {
        const struct hcm_cfg *h = c->chains[i].hcm;
        for (uint32_t k = 0; h != NULL && k < h->n_filters; k++) {
            const struct filter_cfg *fcfg = &h->filters[k];
            if (fcfg->ops->worker_free != NULL && wstate[fcfg->slot] != NULL) {
                fcfg->ops->worker_free(wstate[fcfg->slot]);
            }
        }
    }
    free(wstate);
}
