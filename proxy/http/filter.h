/* filter: the HTTP filter contract. An HTTP filter is a `const struct filter_ops` (a table of
 * optional callbacks, HAProxy's flt_ops / Envoy's StreamFilter in C) listed in
 * filters/registry.c and configured by an HttpConnectionManager's `http_filters`. The router is
 * not one of them: it is compiled into proxy/http/stream.c and is always the last filter (see
 * filters/README.md, which is the guide for filter authors).
 *
 * Life of a filter:
 *   config time (main thread)   config_new(): the decoded typed_config (a protobuf-c message)
 *                               -> an immutable config in the snapshot arena, field-path errors
 *                               into fb->err; route_config_new() the same for
 *                               typed_per_filter_config on a Route or VirtualHost.
 *   worker start                worker_new(): optional per-worker state for one chain entry.
 *   each request                `state_size` zeroed bytes from the stream arena, then
 *                               on_request_headers, on_request_data... in chain order,
 *                               on_response_headers, on_response_data... in reverse order,
 *                               on_done once at the end (always, whatever happened).
 *
 *   request:  filters[0] -> filters[1] -> ... -> filters[n-1] -> router -> upstream
 *   response: filters[0] <- filters[1] <- ... <- filters[n-1] <- router <- upstream
 *
 * A NULL callback means "continue". A callback returns:
 *   FILTER_CONTINUE          hand on to the next filter now;
 *   FILTER_STOP              stop this direction here; the filter calls stream_resume() later
 *                            (from a timer, say). Body bytes arriving meanwhile are held, and
 *                            past the listener's buffer limit the sender stops being read
 *                            (backpressure), so memory stays bounded;
 *   FILTER_STOP_AND_BUFFER   the same, but going over the buffer limit ends the stream (413 on
 *                            the request path, 500 on the response path) instead of pausing;
 *                            and the stopping filter's own data callback decides when to go on:
 *                            FILTER_CONTINUE from it (say at the end of the body) resumes the
 *                            direction once those bytes are held, as Envoy's decodeData returning
 *                            Continue does (stream_resume() works too).
 * A filter answers a request itself with filter_local_reply() and then returns FILTER_STOP; the
 * chain never resumes a stream that has been answered.
 *
 * Body bytes pass every filter exactly once and in order. While a direction is stopped at
 * filter k, arriving bytes still pass filters 0..k (their status is ignored then: they cannot
 * stop a direction that is already stopped) and are held; stream_resume() hands the held bytes
 * to filters k+1.. and on. Body callbacks see the bytes; they cannot rewrite them (yet).
 *
 * Thread: a filter's per-stream callbacks run on the stream's worker; config callbacks on main.
 * A filter's config is shared, read-only, by every worker: anything a filter must change at run
 * time and share across workers (a token bucket, a count of active faults) lives in memory it
 * allocates from the snapshot arena at config time and changes only with atomics; the comment
 * beside such a field says so. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "proxy/core/arena.h"
#include "proxy/core/err.h"
#include "proxy/core/str.h"

struct config;
struct header_add;
struct header_matcher;
struct headers;
struct stream;
struct worker;
struct Envoy__Config__Core__V3__HeaderValueOption;
struct Envoy__Config__Route__V3__HeaderMatcher;
struct Envoy__Type__V3__FractionalPercent;
struct Google__Protobuf__Duration;

enum filter_status {
    FILTER_CONTINUE,
    FILTER_STOP,
    FILTER_STOP_AND_BUFFER,
};

/* One filter of one stream: what every callback gets. Allocated from the stream arena. */
struct filter {
    const struct filter_ops *ops;
    const void *cfg;  /* the config in effect for this stream: the route's typed_per_filter_config,
                       * else the virtual host's, else the chain's; borrowed from the snapshot */
    void *state;      /* ops->state_size zeroed bytes from the stream arena, or NULL */
    void *wstate;     /* this chain entry's per-worker state (ops->worker_new), or NULL */
    struct stream *s; /* borrowed: the stream, valid until on_done returns */
    uint32_t index;   /* position in the chain */
};

/* Config-time context for config_new/route_config_new: where to allocate, where errors go and
 * the field path they carry. Use the filter_build_* helpers below; they keep the path. */
#define FILTER_BUILD_PATH_CAP 768
struct filter_build {
    struct config *c;       /* the snapshot being built */
    struct arena *a;        /* its arena: every byte a config keeps comes from here */
    struct err *err;        /* where an error goes */
    struct str stat_prefix; /* the connection manager's stat_prefix */
    bool is_per_route;      /* building a typed_per_filter_config */
    const void *chain_cfg;  /* per-route builds: the chain entry's own config (to share its
                             * run-time state, say); NULL otherwise */
    size_t plen;            /* length of `path` */
    /* the field being built ("...http_filters[0].typed_config") */
    char path[FILTER_BUILD_PATH_CAP];
};

struct filter_ops {
    const char *name; /* the HttpFilter name Envoy registers ("envoy.filters.http.fault") */
    /* typed_config's message type; an HttpFilter is matched to its ops by this type, or by
     * `name` when it has no typed_config (Envoy's order). */
    const ProtobufCMessageDescriptor *config_type;
    /* typed_per_filter_config's message type, or NULL when the filter takes none. */
    const ProtobufCMessageDescriptor *route_config_type;
    size_t state_size; /* per-stream state, zeroed, from the stream arena */

    /* Validates `pb` (of config_type) and compiles it into *cfg in fb->a. Returns 0, or a
     * negative errno with the error in fb->err (filter_build_fail()). Required. */
    int (*config_new)(struct filter_build *fb, const ProtobufCMessage *pb, const void **cfg);
    /* The same for typed_per_filter_config (of route_config_type). NULL: config_new. */
    int (*route_config_new)(struct filter_build *fb, const ProtobufCMessage *pb, const void **cfg);
    /* Per-worker state for one chain entry (its chain config `cfg`), made when a worker starts
     * and freed when it ends; optional. Thread: main, before the worker runs. */
    void *(*worker_new)(const void *cfg, struct worker *w);
    void (*worker_free)(void *wstate);

    /* `end`: nothing follows (a request or response without a body). */
    enum filter_status (*on_request_headers)(struct filter *f, struct headers *h, bool end);
    /* A piece of the body (`len` may be 0 when `end`). */
    enum filter_status (*on_request_data)(struct filter *f, const uint8_t *p, size_t len, bool end);
    /* The response head; the status is f->s->status. Also called for local replies (the
     * proxy's own, or a filter's), on the filters that saw the request head; a local reply
     * cannot be stopped, so the status is ignored then. */
    enum filter_status (*on_response_headers)(struct filter *f, struct headers *h, bool end);
    enum filter_status (*on_response_data)(struct filter *f, const uint8_t *p, size_t len,
                                           bool end);
    /* The stream ends (answered, reset or timed out): release what the filter holds (timers,
     * counts). Called once for every filter whose state exists. */
    void (*on_done)(struct filter *f);
};

/* ---- for callbacks (thread: the stream's worker) ---- */

/* Continues the direction `f` stopped (FILTER_STOP or FILTER_STOP_AND_BUFFER): the next filters
 * run, then the router or the client gets the head and the held body. Does nothing if `f` did
 * not stop the stream, or the stream was answered or has ended. May answer the stream before
 * returning (a later filter's local reply, the router's 503). */
void stream_resume(struct stream *s, struct filter *f);

/* Answers the request with `status` and a text/plain `body` (may be ""), adding Envoy response
 * flag `flag` (RF_* in stream.h, or 0). The answer passes the response-header callbacks of the
 * filters that saw the request head (so they can add headers), then the stream ends once the
 * request is read. After calling it, return FILTER_STOP. Ignored when the stream was already
 * answered; when a response head has already gone out, the stream is reset instead (as for the
 * proxy's own late errors). */
void filter_local_reply(struct filter *f, int status, const char *body, uint32_t flag);

/* Sets the request direction's buffer limit (Envoy's setDecoderBufferLimit) to `bytes` (0: the
 * listener's per_connection_buffer_limit_bytes again): past it, bytes held by a
 * FILTER_STOP_AND_BUFFER stop end the stream with 413. Takes effect at once. */
void filter_set_buffer_limit(struct filter *f, uint32_t bytes);

/* Frames the request towards the upstream with "content-length: `len`" instead of chunked
 * (the buffer filter, once it holds the whole body). Only while the request head has not passed
 * the chain (a filter holds it) and the request has no trailers; returns false otherwise. */
bool filter_set_request_content_length(struct filter *f, uint64_t len);

/* A pseudo-random value from the worker's generator. */
uint64_t filter_rand(struct filter *f);

/* Adds to / subtracts from a stat declared with filter_build_stat(), in this worker's block. */
void filter_stat_add(struct filter *f, uint32_t stat, uint64_t v);
void filter_stat_sub(struct filter *f, uint32_t stat, uint64_t v);

/* Returns `size` zeroed bytes that live as long as the stream's downstream connection, one
 * block per `key` (a filter uses its config pointer): per-connection state such as
 * local_ratelimit's per-connection token bucket. `size` must not change for a key. */
void *filter_conn_state(struct filter *f, const void *key, size_t size);

/* ---- fractional percentages (type.v3.FractionalPercent) ---- */

struct filter_percent {
    uint32_t numerator;
    uint32_t denominator; /* 100, 10000 or 1000000 */
};

/* True for a `numerator` in `denominator` share of random values: Envoy's
 * evaluateFractionalPercent (random % denominator < numerator; 100% when numerator >=
 * denominator, never when it is 0). */
static inline bool filter_percent_hit(struct filter_percent p, uint64_t random)
{
    if (p.numerator >= p.denominator) {
        return true;
    }
    return random % p.denominator < p.numerator;
}

/* ---- for config_new (thread: main) ---- */

/* Appends ".name" or "[i]" (a printf format) to fb->path; returns the previous length for
 * filter_build_up(). */
size_t filter_build_at(struct filter_build *fb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void filter_build_up(struct filter_build *fb, size_t mark);

/* Sets "`path`.`field`: message" (field may be NULL: the current path) and returns -EINVAL. */
int filter_build_fail(struct filter_build *fb, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "`path`.`field`: not supported by remora yet"; returns -EINVAL. */
int filter_build_unsupported(struct filter_build *fb, const char *field);

/* A Duration in milliseconds (sub-millisecond remainders rounded up). Required and greater
 * than zero when `positive`. Errors under `field`. */
int filter_build_duration_ms(struct filter_build *fb, const char *field,
                             const struct Google__Protobuf__Duration *d, bool positive,
                             uint64_t *out_ms);

/* A FractionalPercent (NULL: `dflt`). */
int filter_build_percent(struct filter_build *fb, const char *field,
                         const struct Envoy__Type__V3__FractionalPercent *p,
                         struct filter_percent dflt, struct filter_percent *out);

/* Route HeaderMatchers (the router's own validation and type: match them with
 * router_headers_match()). `field` names the repeated field. */
int filter_build_header_matchers(struct filter_build *fb, const char *field,
                                 struct Envoy__Config__Route__V3__HeaderMatcher *const *v, size_t n,
                                 const struct header_matcher **out, uint32_t *n_out);

/* One HeaderValueOption, validated as the route's *_headers_to_add are; errors under the
 * current path. Apply it with header_add_apply() (header_edit.h). */
int filter_build_header_add(struct filter_build *fb,
                            const struct Envoy__Config__Core__V3__HeaderValueOption *o,
                            struct header_add *out);

/* A list of HeaderValueOptions under `field`. */
int filter_build_header_adds(struct filter_build *fb, const char *field,
                             struct Envoy__Config__Core__V3__HeaderValueOption *const *v, size_t n,
                             const struct header_add **out, uint32_t *n_out);

/* Declares a counter (or gauge) named "<scope>.<tag>.<stat>" ("<scope>.<stat>" when `tag` is
 * empty); `tag_name` is its Prometheus label (or NULL). Returns its index for
 * filter_stat_add(). Declaring a name twice returns the same index (the two share it). The
 * strings are copied into the snapshot. */
uint32_t filter_build_stat(struct filter_build *fb, const char *scope, const char *tag_name,
                           struct str tag, const char *stat, bool is_gauge);
