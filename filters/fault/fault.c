/* fault: envoy.filters.http.fault (envoy.extensions.filters.http.fault.v3.HTTPFault), Envoy's
 * fault injection. On the request head, when the `headers` rule matches and the fault budget
 * (max_active_faults) allows, it may delay the request (a timer, then stream_resume: response
 * flag DI, stat fault.delays_injected) and/or abort it with a local reply (flag FI, stat
 * fault.aborts_injected); a delay can be followed by an abort, as in Envoy. Each draw is a
 * FractionalPercent against the worker's random generator. Header-controlled faults
 * (x-envoy-fault-delay-request, x-envoy-fault-abort-request and their -percentage headers) apply
 * only when the config says header_delay / header_abort.
 *
 * State: the config (snapshot, read-only) plus one atomic in the snapshot arena, the number of
 * faults active across all workers, which max_active_faults is checked against (exactly: a CAS,
 * not Envoy's fuzzy read-then-add); a per-route config shares its chain entry's counter. Per
 * stream: the delay timer. The fault.active_faults gauge mirrors the counter per worker.
 * Not supported (rejected): grpc_status aborts, upstream_cluster, downstream_nodes,
 * response_rate_limit. */
#include <ev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "envoy/extensions/filters/common/fault/v3/fault.pb-c.h"
#include "envoy/extensions/filters/http/fault/v3/fault.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/headers.h"
#include "proxy/http/router.h"
#include "proxy/http/stream.h"
#include "proxy/worker.h"

#define PbHTTPFault Envoy__Extensions__Filters__Http__Fault__V3__HTTPFault
#define PbFaultAbort Envoy__Extensions__Filters__Http__Fault__V3__FaultAbort
#define PbFaultDelay Envoy__Extensions__Filters__Common__Fault__V3__FaultDelay

/* Shared by every worker; lives in the snapshot arena. */
struct fault_shared {
    _Atomic uint64_t active; /* faults active now, all workers */
};

struct fault_cfg {
    bool has_delay;
    bool delay_from_header; /* header_delay: the duration comes from x-envoy-fault-delay-request */
    uint64_t delay_ms;      /* fixed_delay */
    struct filter_percent delay_pct;
    bool has_abort;
    bool abort_from_header; /* header_abort: the status comes from x-envoy-fault-abort-request */
    uint32_t http_status;
    struct filter_percent abort_pct;
    const struct header_matcher *headers; /* all must match for any fault */
    uint32_t n_headers;
    bool has_max_active;
    uint32_t max_active;
    struct fault_shared *shared; /* mutable: atomics only (see the file comment) */
    uint32_t st_delays, st_aborts, st_active, st_overflow;
};

struct fault_state {
    struct filter *f; /* the stream's filter, for the timer */
    ev_timer delay;
    bool timer_on;
    bool active; /* counted in shared->active and the gauge */
};

/* ---- pure helpers (unit-tested) ---- */

/* Parses a non-negative decimal header value; false when absent or malformed. */
static bool header_u64(const struct headers *h, const char *name, unsigned long long *out)
{
    const struct header *hd = headers_get(h, str_from_c(name));
    return hd != NULL && str_to_u64(hd->value, out) == 0;
}

/* The percentage in effect: the configured one, or the -percentage header's numerator capped at
 * the configured numerator (over the configured denominator), as Envoy does. */
static struct filter_percent fault_percent(struct filter_percent cfg, const struct headers *h,
                                           bool from_header, const char *header)
{
    unsigned long long n;
    if (!from_header || !header_u64(h, header, &n)) {
        return cfg;
    }
    struct filter_percent p = cfg;
    p.numerator = n < cfg.numerator ? (uint32_t)n : cfg.numerator;
    return p;
}

/* The delay for this request in ms, or 0 for none. */
static uint64_t fault_delay_ms(const struct fault_cfg *c, const struct headers *h, uint64_t rnd)
{
    if (!c->has_delay) {
        return 0;
    }
    struct filter_percent p = fault_percent(c->delay_pct, h, c->delay_from_header,
                                            "x-envoy-fault-delay-request-percentage");
    if (!filter_percent_hit(p, rnd)) {
        return 0;
    }
    if (!c->delay_from_header) {
        return c->delay_ms;
    }
    unsigned long long ms;
    return header_u64(h, "x-envoy-fault-delay-request", &ms) ? (uint64_t)ms : 0;
}

/* The abort status for this request, or 0 for none. */
static int fault_abort_status(const struct fault_cfg *c, const struct headers *h, uint64_t rnd)
{
    if (!c->has_abort) {
        return 0;
    }
    int status = (int)c->http_status;
    if (c->abort_from_header) {
        unsigned long long v;
        if (!header_u64(h, "x-envoy-fault-abort-request", &v) || v < 200 || v >= 600) {
            return 0; /* no (valid) header: no abort */
        }
        status = (int)v;
    }
    struct filter_percent p = fault_percent(c->abort_pct, h, c->abort_from_header,
                                            "x-envoy-fault-abort-request-percentage");
    return filter_percent_hit(p, rnd) ? status : 0;
}

/* Counts this stream as an active fault unless max_active_faults is reached (then
 * faults_overflow). One stream counts once, whatever it injects. */
static bool try_activate(struct filter *f, const struct fault_cfg *c, struct fault_state *st)
{
    if (st->active) {
        return true;
    }
    uint64_t n = atomic_load_explicit(&c->shared->active, memory_order_relaxed);
    do {
        if (c->has_max_active && n >= c->max_active) {
            filter_stat_add(f, c->st_overflow, 1);
            return false;
        }
    } while (!atomic_compare_exchange_weak_explicit(&c->shared->active, &n, n + 1,
                                                    memory_order_relaxed, memory_order_relaxed));
    filter_stat_add(f, c->st_active, 1);
    st->active = true;
    return true;
}

static void do_abort(struct filter *f, const struct fault_cfg *c, int status)
{
    filter_stat_add(f, c->st_aborts, 1);
    filter_local_reply(f, status, "fault filter abort", RF_FI);
}

/* ---- callbacks ---- */

static void delay_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct fault_state *st = t->data;
    struct filter *f = st->f;
    const struct fault_cfg *c = f->cfg;
    st->timer_on = false;
    /* Delays can be followed by aborts (Envoy). */
    int status = fault_abort_status(c, &f->s->req, filter_rand(f));
    if (status != 0 && try_activate(f, c, st)) {
        do_abort(f, c, status);
        return;
    }
    stream_resume(f->s, f);
}

static enum filter_status fault_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct fault_cfg *c = f->cfg;
    struct fault_state *st = f->state;
    struct stream *s = f->s;
    if (c->n_headers > 0) {
        struct route_req rq = {.method = s->method,
                               .path = s->path,
                               .authority = s->authority,
                               .scheme = STR_LIT("http"),
                               .headers = h};
        if (!router_headers_match(c->headers, c->n_headers, &rq)) {
            return FILTER_CONTINUE;
        }
    }
    uint64_t ms = fault_delay_ms(c, h, filter_rand(f));
    if (ms > 0 && try_activate(f, c, st)) {
        st->f = f;
        ev_timer_init(&st->delay, delay_cb, (double)ms / 1000.0, 0);
        st->delay.data = st;
        ev_timer_start(s->w->loop, &st->delay);
        st->timer_on = true;
        filter_stat_add(f, c->st_delays, 1);
        s->flags |= RF_DI;
        return FILTER_STOP;
    }
    int status = fault_abort_status(c, h, filter_rand(f));
    if (status != 0 && try_activate(f, c, st)) {
        do_abort(f, c, status);
        return FILTER_STOP;
    }
    return FILTER_CONTINUE;
}

static void fault_done(struct filter *f)
{
    struct fault_state *st = f->state;
    const struct fault_cfg *c = f->cfg;
    if (st->timer_on) {
        ev_timer_stop(f->s->w->loop, &st->delay);
        st->timer_on = false;
    }
    if (st->active) {
        atomic_fetch_sub_explicit(&c->shared->active, 1, memory_order_relaxed);
        filter_stat_sub(f, c->st_active, 1);
        st->active = false;
    }
}

/* ---- config ---- */

static int delay_config(struct filter_build *fb, const PbFaultDelay *d, struct fault_cfg *c)
{
    size_t mark = filter_build_at(fb, ".delay");
    int rc = 0;
    switch (d->fault_delay_secifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_FIXED_DELAY:
        rc = filter_build_duration_ms(fb, "fixed_delay", d->fixed_delay, true, &c->delay_ms);
        break;
    case ENVOY__EXTENSIONS__FILTERS__COMMON__FAULT__V3__FAULT_DELAY__FAULT_DELAY_SECIFIER_HEADER_DELAY:
        c->delay_from_header = true;
        break;
    default:
        rc = filter_build_fail(fb, NULL, "one of fixed_delay, header_delay is required");
        break;
    }
    /* Envoy: an unset percentage is 0%, so the delay never fires. */
    struct filter_percent zero = {0, 100};
    if (rc == 0) {
        rc = filter_build_percent(fb, "percentage", d->percentage, zero, &c->delay_pct);
    }
    c->has_delay = rc == 0;
    filter_build_up(fb, mark);
    return rc;
}

static int abort_config(struct filter_build *fb, const PbFaultAbort *a, struct fault_cfg *c)
{
    size_t mark = filter_build_at(fb, ".abort");
    int rc = 0;
    switch (a->error_type_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HTTP_STATUS:
        if (a->http_status < 200 || a->http_status >= 600) {
            rc = filter_build_fail(fb, "http_status", "%u is out of range (200-599)",
                                   a->http_status);
        }
        c->http_status = a->http_status;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_GRPC_STATUS:
        rc = filter_build_unsupported(fb, "grpc_status");
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__FAULT__V3__FAULT_ABORT__ERROR_TYPE_HEADER_ABORT:
        c->abort_from_header = true;
        break;
    default:
        rc = filter_build_fail(fb, NULL,
                               "one of http_status, grpc_status, header_abort is "
                               "required");
        break;
    }
    struct filter_percent zero = {0, 100};
    if (rc == 0) {
        rc = filter_build_percent(fb, "percentage", a->percentage, zero, &c->abort_pct);
    }
    c->has_abort = rc == 0;
    filter_build_up(fb, mark);
    return rc;
}

static int fault_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbHTTPFault *m = (const PbHTTPFault *)pb;
    struct fault_cfg *c = ARENA_NEW(fb->a, struct fault_cfg);
    int rc = 0;
    if (m->upstream_cluster != NULL && m->upstream_cluster[0] != '\0') {
        return filter_build_unsupported(fb, "upstream_cluster");
    }
    if (m->n_downstream_nodes > 0) {
        return filter_build_unsupported(fb, "downstream_nodes");
    }
    if (m->delay != NULL && (rc = delay_config(fb, m->delay, c)) != 0) {
        return rc;
    }
    if (m->abort != NULL && (rc = abort_config(fb, m->abort, c)) != 0) {
        return rc;
    }
    if ((rc = filter_build_header_matchers(fb, "headers", m->headers, m->n_headers, &c->headers,
                                           &c->n_headers)) != 0) {
        return rc;
    }
    if (m->max_active_faults != NULL) {
        c->has_max_active = true;
        c->max_active = m->max_active_faults->value;
    }
    /* A per-route config counts its faults with its chain entry's (one budget per filter). */
    const struct fault_cfg *chain = fb->chain_cfg;
    c->shared = chain != NULL ? chain->shared : ARENA_NEW(fb->a, struct fault_shared);
    const char *tag = "envoy_http_conn_manager_prefix";
    c->st_delays =
        filter_build_stat(fb, "http", tag, fb->stat_prefix, "fault.delays_injected", false);
    c->st_aborts =
        filter_build_stat(fb, "http", tag, fb->stat_prefix, "fault.aborts_injected", false);
    c->st_active = filter_build_stat(fb, "http", tag, fb->stat_prefix, "fault.active_faults", true);
    c->st_overflow =
        filter_build_stat(fb, "http", tag, fb->stat_prefix, "fault.faults_overflow", false);
    *out = c;
    return 0;
}

const struct filter_ops fault_filter_ops = {
    .name = "envoy.filters.http.fault",
    .config_type = &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    .route_config_type = &envoy__extensions__filters__http__fault__v3__httpfault__descriptor,
    .state_size = sizeof(struct fault_state),
    .config_new = fault_config_new,
    .on_request_headers = fault_request_headers,
    .on_done = fault_done,
};
