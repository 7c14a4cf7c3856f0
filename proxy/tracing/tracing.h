/* tracing: Envoy's HTTP tracing for the connection manager, with two drivers, Zipkin
 * (envoy.tracers.zipkin: B3 headers, v2 JSON spans POSTed to a collector) and AWS X-Ray
 * (envoy.tracers.xray: x-amzn-trace-id, segments as UDP datagrams to the X-Ray daemon).
 *
 * Config (tracing_build.c) gives each connection manager with `tracing` a `struct hcm_tracing`
 * (NULL without: the request path pays one branch). Per request, stream.c calls
 * tracing_start() once the request headers are final: it decides sampling as Envoy does (the
 * trace reason in x-request-id's UUID, then the driver's own sampled flag), reads the incoming
 * context, picks this hop's span id and injects the outgoing context into the request; then
 * tracing_finish() when the stream ends renders the span (when sampled) and hands it to the
 * worker's reporter (tracing_report.c), which sends it off the request path.
 *
 * Memory: a span lives in the stream's arena; the rendered JSON is copied into the worker's
 * bounded report buffer. Thread: the owning worker (config: main). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/str.h"
#include "proxy/stats/stats.h"

struct headers;
struct worker;

enum tracer_kind {
    TRACER_ZIPKIN = 1,
    TRACER_XRAY = 2,
};

/* One driver (tracing.http / HCM tracing.provider), in the snapshot arena. */
struct tracer_cfg {
    enum tracer_kind kind;
    /* zipkin: POST collector_endpoint to the first endpoint of collector_cluster */
    struct str collector_cluster;
    struct str collector_endpoint;
    struct str collector_hostname; /* Host header; default: the cluster's name */
    struct sockaddr_storage addr;  /* zipkin: the collector; xray: the daemon (UDP) */
    socklen_t addr_len;
    bool trace_id_128bit;
    bool shared_span_context; /* default true */
    /* xray */
    struct str segment_name;
    uint32_t reservoir_per_s; /* the default rule: 1 request per second ... */
    uint32_t rate_bp;         /* ... then rate_bp / 10000 of the rest (500: 5 %) */
};

/* A custom_tags entry: literal (value) or request_header (name, default_value). */
struct trace_tag {
    struct str tag;
    bool header;
    struct str value; /* literal value, or the header's name (lower case) */
    struct str default_value;
};

/* HttpConnectionManager.tracing, in the snapshot arena. */
struct hcm_tracing {
    const struct tracer_cfg *tracer;           /* the provider, or the bootstrap's; NULL: none */
    uint32_t client_bp, random_bp, overall_bp; /* sampling percents in 1/10000 */
    bool egress;                               /* span kind CLIENT (OUTBOUND listener) */
    uint32_t max_path_tag_length;              /* default 256 */
    const struct trace_tag *tags;
    uint32_t n_tags;
    struct str node_id;
    /* http.<stat_prefix>.tracing.* (stats_block.ext indices) */
    uint32_t st_random, st_forced, st_client, st_not_traceable, st_health_check;
};

/* Trace context: ids as numbers (X-Ray's root is 32 bits of epoch seconds + 96 random bits,
 * held in trace_hi's upper 32 bits and the rest). */
struct trace_ctx {
    uint64_t trace_hi, trace_lo;
    uint64_t span_id;   /* the caller's span (B3 x-b3-spanid, X-Ray Parent), 0: none */
    uint64_t parent_id; /* the caller's parent (B3 only), 0: none */
    int sampled;        /* -1: not said, 0, 1 */
    bool debug;         /* B3 flags 1 / b3 "d" */
    bool has_trace;     /* trace_hi/lo were given */
};

/* Envoy's trace reasons, as x-request-id's 15th character (the UUID version nibble). */
enum trace_reason {
    TRACE_NONE = 0,   /* '4' */
    TRACE_SAMPLED,    /* '9' */
    TRACE_CLIENT,     /* 'b' */
    TRACE_FORCED,     /* 'a' */
    TRACE_NOT_A_UUID, /* x-request-id missing or not 36 characters: not traceable */
};

/* The per-request span (stream arena). */
struct span {
    const struct hcm_tracing *cfg;
    struct trace_ctx in;
    uint64_t trace_hi, trace_lo;
    uint64_t id, parent_id;
    bool sampled;
    double t_start; /* epoch seconds */
};

/* ---- pure functions (unit-tested) ---- */

/* Parses B3: the x-b3-* headers, or the single `b3` header (preferred when present). Malformed
 * values leave ctx without a trace (has_trace false); returns false then. */
bool trace_b3_parse(const struct headers *h, struct trace_ctx *ctx);
bool trace_b3_single_parse(struct str v, struct trace_ctx *ctx);
/* Parses "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1". */
bool trace_xray_parse(struct str v, struct trace_ctx *ctx);

/* The trace reason of x-request-id `rid` (36-character UUID), and `rid` with reason `r` set
 * (writes rid.p[14]; rid must be writable). */
enum trace_reason trace_reason_of(struct str rid);
void trace_reason_set(char *rid, enum trace_reason r);
/* x-request-id's last 8 hex digits (characters 28-35) as a number, as Envoy's UUID extension
 * (getInteger; % 10000 for sampling). False (not traceable) when they are not there or not hex. */
bool trace_rid_integer(struct str rid, uint64_t *out);

/* The sampling decision (Envoy's mutateTracingRequestHeader + the tracer's reason): given the
 * incoming reason, whether x-client-trace-id is there, x-envoy-force-trace is there (internal
 * requests only: stream.c strips it from others) and x-request-id's integer. */
enum trace_reason trace_decide(const struct hcm_tracing *t, enum trace_reason in, bool client_id,
                               bool forced, uint64_t rid_int);

/* X-Ray's default rule: a reservoir of reservoir_per_s requests each second, then rate_bp.
 * `now_s` whole seconds, `state` the per-worker (second, used) pair; `rnd` uniform. */
struct xray_sampler {
    uint64_t second;
    uint32_t used;
};
bool trace_xray_sample(const struct tracer_cfg *tc, struct xray_sampler *st, uint64_t now_s,
                       uint64_t rnd);

/* The span's record. Zipkin: one v2 JSON span object (no brackets). X-Ray: the daemon's
 * header line and the segment. `f` holds what the stream knows at its end. */
struct span_fields {
    struct str method, authority, path, protocol;
    int status;
    uint32_t flags; /* RF_* (stream.h) */
    struct str cluster;
    struct str request_id;
    struct str peer_ip; /* downstream peer address (no port) */
    struct str upstream_host;
    struct str user_agent;
    const struct headers *req; /* for request_header tags */
    double t_end;              /* epoch seconds */
};
void trace_zipkin_json(struct buf *out, const struct span *sp, const struct span_fields *f);
void trace_xray_json(struct buf *out, const struct span *sp, const struct span_fields *f);

/* ---- request path (stream.c) ---- */

/* Starts the span of a request whose headers are final: decides sampling (x-request-id's trace
 * reason, rewritten in the header when it changes; x-envoy-force-trace, which stream.c strips
 * from requests that are not internal), reads the incoming context from `req` and injects the
 * outgoing one, in one pass over the headers and one more only when the request carried a
 * context to replace. Returns the span (in `a`). `ext` is the stream's stats block ext array. */
struct span *tracing_start(const struct hcm_tracing *t, struct worker *w, struct arena *a,
                           struct headers *req, double now, stat_t *ext);

/* Ends the span: when sampled, renders it and queues it on the worker's reporter. */
void tracing_finish(struct span *sp, struct worker *w, const struct span_fields *f);

/* ---- reporting (tracing_report.c) ---- */

/* Queues one rendered record (a Zipkin span object, or an X-Ray datagram) for `tc`. */
void tracing_report(struct worker *w, const struct tracer_cfg *tc, const char *p, size_t len);
/* The worker's X-Ray sampler state. */
struct xray_sampler *tracing_xray_sampler(struct worker *w);
/* Frees the worker's reporter state (worker_free). */
void tracing_worker_free(struct worker *w);

/* Process-wide counters (tracing.zipkin.*, tracing.xray.*), summed over the workers. */
struct tracing_counters {
    uint64_t zipkin_spans_sent, zipkin_reports_sent, zipkin_reports_dropped, zipkin_reports_failed,
        zipkin_timer_flushed, zipkin_spans_dropped;
    uint64_t xray_segments_sent, xray_segments_dropped;
    bool zipkin, xray; /* a driver of that kind was configured */
};
void tracing_counters_get(struct tracing_counters *out);
void tracing_note_driver(enum tracer_kind k);
