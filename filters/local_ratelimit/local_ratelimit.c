/* local_ratelimit: envoy.filters.http.local_ratelimit
 * (envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit), Envoy's local token-bucket
 * rate limiter. Each request the filter is enabled for (filter_enabled) takes one token; with
 * none left it is rate limited, and if enforced (filter_enforced) answered 429 (or `status`) with
 * `x-envoy-ratelimited: true`, response_headers_to_add and response flag RL. Stats
 * <stat_prefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok};
 * enable_x_ratelimit_headers DRAFT_VERSION_03 adds x-ratelimit-limit/-remaining/-reset.
 *
 * The bucket. By default it is shared by every worker (Envoy's bucket is per filter config,
 * process-wide), so it lives in the snapshot arena and is changed only with atomics, lock-free:
 * one 64-bit word holds the token count (low 32 bits) and the number of the last fill interval
 * applied (high 32 bits, counted from the config's build time on CLOCK_MONOTONIC). Taking a
 * token is a CAS loop:
 *
 *   load word -> (tokens, epoch); now_epoch = (now - base) / fill_interval
 *   if now_epoch is after epoch: tokens = min(max, tokens + (now_epoch - epoch) * per_fill)
 *   word' = (tokens - 1 if tokens > 0 else tokens, max(epoch, now_epoch)); CAS(word, word')
 *
 * A worker whose clock read is a little older than the stored epoch (another worker stored a
 * later one) adds nothing and keeps the later epoch, so refills are never counted twice. Fills
 * are discrete, whole `tokens_per_fill` at each interval boundary (Envoy's timer-based bucket).
 * The epoch difference is read as signed 32 bits: a bucket left untouched for 2^31 intervals
 * (over three years at the 50 ms minimum) would need one more request to refill.
 * local_rate_limit_per_downstream_connection keeps the same kind of bucket per connection
 * instead (filter_conn_state). A typed_per_filter_config has its own bucket (Envoy: "the bucket
 * becomes unique to that route").
 *
 * Not supported (unknown fields): descriptors, local_cluster_rate_limit, rate_limits; rejected:
 * stage, vh_rate_limits, always_consume_default_token_bucket,
 * rate_limited_as_resource_exhausted. runtime_key is accepted: with no runtime layer the
 * default_value applies, as in Envoy when the key is unset. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/header_edit.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"

#define PbLocalRateLimit Envoy__Extensions__Filters__Http__LocalRatelimit__V3__LocalRateLimit
#define PbRuntimeFractionalPercent Envoy__Config__Core__V3__RuntimeFractionalPercent

#define MIN_FILL_INTERVAL_MS 50

struct token_bucket {
    _Atomic uint64_t word; /* tokens (low 32 bits) | fill epoch (high 32 bits) */
};

struct bucket_params {
    uint32_t max_tokens;
    uint32_t tokens_per_fill;
    uint64_t fill_interval_ms;
    uint64_t base_ms; /* CLOCK_MONOTONIC ms at epoch 0 */
};

/* The outcome of one take. */
struct bucket_take {
    bool ok;
    uint32_t remaining;    /* tokens left after it */
    uint64_t next_fill_ms; /* ms until the next fill adds tokens */
};

struct lrl_cfg {
    bool has_bucket;
    bool per_connection;
    struct bucket_params bp;
    struct token_bucket *shared; /* mutable, shared by all workers: atomics only (file comment) */
    struct filter_percent enabled;
    struct filter_percent enforced;
    int status;
    const struct header_add *resp_adds; /* response_headers_to_add, for limited responses */
    uint32_t n_resp_adds;
    const struct header_add *req_adds; /* request_headers_to_add_when_not_enforced */
    uint32_t n_req_adds;
    bool x_ratelimit_headers;
    uint32_t st_enabled, st_enforced, st_rate_limited, st_ok;
};

struct lrl_state {
    bool took;    /* a token was asked of the bucket: x-ratelimit-* apply */
    bool limited; /* this stream got the local reply */
    struct bucket_take t;
};

/* The per-connection bucket, in filter_conn_state(). */
struct conn_bucket {
    bool init;
    struct token_bucket b;
};

/* ---- the bucket (unit-tested) ---- */

static uint64_t pack(uint32_t tokens, uint32_t epoch)
{
    return (uint64_t)epoch << 32 | tokens;
}

static void bucket_init(struct token_bucket *b, const struct bucket_params *p, uint64_t now_ms)
{
    uint64_t e = now_ms > p->base_ms ? (now_ms - p->base_ms) / p->fill_interval_ms : 0;
    atomic_init(&b->word, pack(p->max_tokens, (uint32_t)e));
}

/* Takes one token at `now_ms` (CLOCK_MONOTONIC). Thread-safe, lock-free. */
static struct bucket_take bucket_take(struct token_bucket *b, const struct bucket_params *p,
                                      uint64_t now_ms)
{
    uint64_t since = now_ms > p->base_ms ? now_ms - p->base_ms : 0;
    uint32_t now_epoch = (uint32_t)(since / p->fill_interval_ms);
    uint64_t old = atomic_load_explicit(&b->word, memory_order_relaxed);
    uint32_t tokens, epoch;
    bool ok;
    for (;;) {
        tokens = (uint32_t)old;
        epoch = (uint32_t)(old >> 32);
        int32_t elapsed = (int32_t)(now_epoch - epoch);
        if (elapsed > 0) {
            uint64_t t = (uint64_t)tokens + (uint64_t)elapsed * p->tokens_per_fill;
            tokens = t > p->max_tokens ? p->max_tokens : (uint32_t)t;
            epoch = now_epoch;
        }
        ok = tokens > 0;
        if (ok) {
            tokens--;
        }
        uint64_t word = pack(tokens, epoch);
        if (word == old || atomic_compare_exchange_weak_explicit(
                               &b->word, &old, word, memory_order_relaxed, memory_order_relaxed)) {
            break;
        }
    }
    uint64_t next = ((uint64_t)epoch + 1) * p->fill_interval_ms;
    struct bucket_take r = {ok, tokens, next > since ? next - since : 0};
    return r;
}

static uint64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- callbacks ---- */

static struct token_bucket *bucket_of(struct filter *f, const struct lrl_cfg *c)
{
    if (!c->per_connection) {
        return c->shared;
    }
    struct conn_bucket *cb = filter_conn_state(f, c, sizeof(*cb));
    if (!cb->init) {
        bucket_init(&cb->b, &c->bp, monotonic_ms());
        cb->init = true;
    }
    return &cb->b;
}

static enum filter_status lrl_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct lrl_cfg *c = f->cfg;
    struct lrl_state *st = f->state;
    if (!filter_percent_hit(c->enabled, filter_rand(f))) {
        return FILTER_CONTINUE;
    }
    filter_stat_add(f, c->st_enabled, 1);
    if (c->has_bucket) {
        st->t = bucket_take(bucket_of(f, c), &c->bp, monotonic_ms());
        st->took = true;
        if (!st->t.ok) {
            goto limited;
        }
    }
    filter_stat_add(f, c->st_ok, 1);
    return FILTER_CONTINUE;
limited:
    filter_stat_add(f, c->st_rate_limited, 1);
    if (!filter_percent_hit(c->enforced, filter_rand(f))) {
        for (uint32_t i = 0; i < c->n_req_adds; i++) {
            header_add_apply(h, &c->req_adds[i]);
        }
        return FILTER_CONTINUE;
    }
    filter_stat_add(f, c->st_enforced, 1);
    st->limited = true;
    filter_local_reply(f, c->status, "local_rate_limited", RF_RL);
    return FILTER_STOP;
}

static enum filter_status lrl_response_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct lrl_cfg *c = f->cfg;
    struct lrl_state *st = f->state;
    struct arena *a = &f->s->arena;
    if (st->limited) {
        headers_set_copy(h, STR_LIT("x-envoy-ratelimited"), STR_LIT("true"));
        for (uint32_t i = 0; i < c->n_resp_adds; i++) {
            header_add_apply(h, &c->resp_adds[i]);
        }
    }
    if (st->took && c->x_ratelimit_headers) {
        headers_add(h, STR_LIT("x-ratelimit-limit"), arena_printf(a, "%u", c->bp.max_tokens));
        headers_add(h, STR_LIT("x-ratelimit-remaining"), arena_printf(a, "%u", st->t.remaining));
        /* whole seconds until the next fill, rounded up */
        headers_add(h, STR_LIT("x-ratelimit-reset"),
                    arena_printf(a, "%llu", (unsigned long long)(st->t.next_fill_ms + 999) / 1000));
    }
    return FILTER_CONTINUE;
}

/* ---- config ---- */

static int runtime_percent(struct filter_build *fb, const char *field,
                           const PbRuntimeFractionalPercent *rp, struct filter_percent *out)
{
    struct filter_percent zero = {0, 100}; /* Envoy: 0% when unset, for safety */
    if (rp == NULL) {
        *out = zero;
        return 0;
    }
    size_t mark = filter_build_at(fb, ".%s", field);
    int rc = rp->default_value == NULL
                 ? filter_build_fail(fb, "default_value", "required")
                 : filter_build_percent(fb, "default_value", rp->default_value, zero, out);
    filter_build_up(fb, mark);
    return rc;
}

static int bucket_config(struct filter_build *fb, const Envoy__Type__V3__TokenBucket *tb,
                         struct lrl_cfg *c)
{
    size_t mark = filter_build_at(fb, ".token_bucket");
    int rc = 0;
    if (tb->max_tokens == 0) {
        rc = filter_build_fail(fb, "max_tokens", "must be greater than 0");
    } else if (tb->tokens_per_fill != NULL && tb->tokens_per_fill->value == 0) {
        rc = filter_build_fail(fb, "tokens_per_fill", "must be greater than 0");
    } else if ((rc = filter_build_duration_ms(fb, "fill_interval", tb->fill_interval, true,
                                              &c->bp.fill_interval_ms)) == 0 &&
               c->bp.fill_interval_ms < MIN_FILL_INTERVAL_MS) {
        rc = filter_build_fail(fb, "fill_interval", "must be at least 50ms");
    }
    filter_build_up(fb, mark);
    if (rc != 0) {
        return rc;
    }
    c->has_bucket = true;
    c->bp.max_tokens = tb->max_tokens;
    c->bp.tokens_per_fill = tb->tokens_per_fill != NULL ? tb->tokens_per_fill->value : 1;
    c->bp.base_ms = monotonic_ms();
    return 0;
}

static int lrl_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbLocalRateLimit *m = (const PbLocalRateLimit *)pb;
    struct lrl_cfg *c = ARENA_NEW(fb->a, struct lrl_cfg);
    int rc;
    if (m->stat_prefix == NULL || m->stat_prefix[0] == '\0') {
        return filter_build_fail(fb, "stat_prefix", "required");
    }
    if (m->stage != 0) {
        return filter_build_unsupported(fb, "stage");
    }
    if (m->vh_rate_limits !=
        ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__VH_RATE_LIMITS_OPTIONS__OVERRIDE) {
        return filter_build_unsupported(fb, "vh_rate_limits");
    }
    if (m->always_consume_default_token_bucket != NULL) {
        return filter_build_unsupported(fb, "always_consume_default_token_bucket");
    }
    if (m->rate_limited_as_resource_exhausted) {
        return filter_build_unsupported(fb, "rate_limited_as_resource_exhausted");
    }
    if (m->token_bucket != NULL) {
        if ((rc = bucket_config(fb, m->token_bucket, c)) != 0) {
            return rc;
        }
    } else if (fb->is_per_route) {
        /* Envoy: a per-route config must have its own bucket. */
        return filter_build_fail(fb, "token_bucket", "required in a per-route config");
    }
    if ((rc = runtime_percent(fb, "filter_enabled", m->filter_enabled, &c->enabled)) != 0 ||
        (rc = runtime_percent(fb, "filter_enforced", m->filter_enforced, &c->enforced)) != 0) {
        return rc;
    }
    if (m->n_response_headers_to_add > 10 || m->n_request_headers_to_add_when_not_enforced > 10) {
        return filter_build_fail(fb,
                                 m->n_response_headers_to_add > 10
                                     ? "response_headers_to_add"
                                     : "request_headers_to_add_when_not_enforced",
                                 "at most 10 headers");
    }
    if ((rc = filter_build_header_adds(fb, "response_headers_to_add", m->response_headers_to_add,
                                       m->n_response_headers_to_add, &c->resp_adds,
                                       &c->n_resp_adds)) != 0 ||
        (rc = filter_build_header_adds(fb, "request_headers_to_add_when_not_enforced",
                                       m->request_headers_to_add_when_not_enforced,
                                       m->n_request_headers_to_add_when_not_enforced, &c->req_adds,
                                       &c->n_req_adds)) != 0) {
        return rc;
    }
    c->status = 429;
    if (m->status != NULL && (int)m->status->code >= 400) {
        c->status = (int)m->status->code; /* Envoy: below 400 means 429 */
    }
    c->x_ratelimit_headers =
        m->enable_x_ratelimit_headers ==
        ENVOY__EXTENSIONS__COMMON__RATELIMIT__V3__XRATE_LIMIT_HEADERS_RFCVERSION__DRAFT_VERSION_03;
    c->per_connection = m->local_rate_limit_per_downstream_connection;
    if (c->has_bucket && !c->per_connection) {
        c->shared = ARENA_NEW(fb->a, struct token_bucket);
        bucket_init(c->shared, &c->bp, c->bp.base_ms);
    }
    struct str none = STR_NULL;
    char name[64];
    const char *stats[] = {"enabled", "enforced", "rate_limited", "ok"};
    uint32_t *idx[] = {&c->st_enabled, &c->st_enforced, &c->st_rate_limited, &c->st_ok};
    for (size_t i = 0; i < 4; i++) {
        snprintf(name, sizeof(name), "http_local_rate_limit.%s", stats[i]);
        *idx[i] = filter_build_stat(fb, m->stat_prefix, NULL, none, name, false);
    }
    *out = c;
    return 0;
}

const struct filter_ops local_ratelimit_filter_ops = {
    .name = "envoy.filters.http.local_ratelimit",
    .config_type =
        &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
    .route_config_type =
        &envoy__extensions__filters__http__local_ratelimit__v3__local_rate_limit__descriptor,
    .state_size = sizeof(struct lrl_state),
    .config_new = lrl_config_new,
    .on_request_headers = lrl_request_headers,
    .on_response_headers = lrl_response_headers,
};
