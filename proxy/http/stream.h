/* stream: one HTTP request/response exchange, from the downstream request head to the last
 * response byte. It routes the request, picks an endpoint, forwards the request over an
 * upstream connection, relays the response, answers locally when it must (404 NR, 503 UF/UH,
 * 502 UPE, 504 UT, ...), and writes the access log line and stats when it ends.
 *
 * Data path:
 *   downstream (downstream_ops: HTTP/1.1 or HTTP/2) -> stream_request_*() -> router ->
 *   cluster pick -> upstream (upstream_ops: HTTP/1.1 or HTTP/2) -> stream_upstream_*() ->
 *   downstream_ops
 *
 * Backpressure: request body bytes go into the upstream's write buffer; past the listener's
 * per_connection_buffer_limit the downstream stops reading. Response body bytes go into the
 * downstream's write buffer; past the limit the upstream stops reading. Each side resumes the
 * other when its buffer drains.
 *
 * Lifetime: owned by its downstream connection; per-stream memory comes from `arena` and dies
 * with the stream. Thread: the owning worker. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/timer_list.h"
#include "proxy/http/headers.h"
#include "proxy/net/accepted.h"
#include "proxy/worker.h"

struct downstream;
struct downstream_h2_stream;
struct upstream;
struct h1_msg;
struct listener_cfg;
struct hcm_cfg;
struct route_cfg;
struct route_table;
struct route_pin;
struct vhost_cfg;
struct cluster_rt;
struct endpoint_rt;
struct hcm_stats;
struct weighted_cluster;
struct filter_chain;
struct span;

/* Envoy's response flags (%RESPONSE_FLAGS%). */
enum {
    RF_UH = 1u << 0,   /* no healthy upstream host */
    RF_UF = 1u << 1,   /* upstream connection failure */
    RF_UT = 1u << 2,   /* upstream request timeout */
    RF_UC = 1u << 3,   /* upstream connection termination */
    RF_NR = 1u << 4,   /* no route */
    RF_DC = 1u << 5,   /* downstream connection termination */
    RF_SI = 1u << 6,   /* stream idle timeout */
    RF_DPE = 1u << 7,  /* downstream protocol error */
    RF_UPE = 1u << 8,  /* upstream protocol error */
    RF_UR = 1u << 9,   /* upstream remote reset */
    RF_DT = 1u << 10,  /* downstream request timeout */
    RF_DI = 1u << 11,  /* delay injected (fault filter) */
    RF_FI = 1u << 12,  /* fault injected: abort (fault filter) */
    RF_RL = 1u << 13,  /* rate limited (local_ratelimit filter) */
    RF_UO = 1u << 14,  /* upstream overflow (circuit breaker) */
    RF_URX = 1u << 15, /* upstream retry limit exceeded */
    RF_NC = 1u << 16,  /* no cluster found (cluster_header naming no cluster) */
    RF_LH = 1u << 17,  /* failed local health check (health_check filter) */
};

struct stream {
    struct worker *w;                 /* borrowed */
    struct downstream *dc;            /* borrowed: the owner */
    struct downstream_h2_stream *h2s; /* HTTP/2: the codec's state, in `arena`; NULL on HTTP/1 */
    struct arena arena;               /* owned: everything per-request */
    const struct listener_cfg *lcfg;  /* borrowed from the worker's snapshot */
    const struct hcm_cfg *hcm;
    struct hcm_stats *hstats;
    /* reload: the route table this stream routes with, and the worker's hold on it (RDS; NULL
     * for the bootstrap's table), given back when the stream is freed (worker.h). */
    const struct route_table *routes;
    struct route_pin *routes_pin;
    const struct vhost_cfg *vhost; /* after routing */
    const struct route_cfg *route;
    struct cluster_rt *cluster;  /* after routing to a cluster */
    struct cds_dns_pin *dns_pin; /* a bootstrap STRICT_DNS cluster's: the version `cluster` is
                                  * of, held until the stream is freed (proxy/cds.h) */
    const struct weighted_cluster *wcluster; /* weighted_clusters: the chosen entry (its header
                                              * edits apply), else NULL; in the snapshot */
    bool has_hash;                           /* the route's hash_policy made a key: */
    uint64_t hash;                           /* it, for RING_HASH/MAGLEV picks (retries too) */
    struct endpoint_rt *ep;
    struct endpoint_rt
        *held_ep;        /* the last endpoint picked, held (refs) until the stream is freed */
    struct upstream *uc; /* borrowed: bound upstream connection, or NULL */
    /* in `arena`: the HTTP filters' per-stream state, or NULL (filter_chain.h) */
    struct filter_chain *fc;

    /* request as received */
    struct str method;
    struct str path; /* as received */
    struct str authority;
    struct headers req; /* edited in place for forwarding */
    bool req_chunked;
    bool req_has_body; /* chunked or a non-zero content-length */
    bool req_done;     /* the whole request was received */
    bool is_grpc;      /* content-type application/grpc[+;...] (grpc.h): local replies are
                        * gRPC Trailers-Only responses, grpc-timeout applies */
    bool req_sent;     /* the whole request was written upstream */
    uint64_t req_body_bytes;
    uint8_t version_minor;

    /* The trust model (stream.c: forward_headers). client_ip is the trusted client address
     * (Envoy's downstream remote address): an x-forwarded-for entry (client_from_xff: no port)
     * or the peer; empty until then. */
    struct str client_ip;
    bool client_from_xff;

    /* response */
    int status;          /* final status sent or being sent */
    bool resp_started;   /* head written to the downstream */
    bool resp_chunked;   /* encoding chunked towards the downstream */
    bool resp_head_ends; /* the upstream's head was the whole response (HTTP/2 END_STREAM): it
                          * goes downstream as such (one HEADERS frame with END_STREAM) */
    bool resp_done;
    bool is_head;
    bool is_health_check; /* the health_check filter matched it (Envoy's StreamInfo healthCheck) */
    bool resp_keep_alive; /* the upstream allows reusing its connection */
    struct headers resp;  /* response headers as sent downstream; the bytes are
                           * the upstream parser's, valid until the stream ends */
    bool close_after;     /* close the downstream when the response is out */
    uint64_t resp_body_bytes;
    uint64_t resp_bytes_sent;

    /* Trailers (HTTP/2 trailing HEADERS, or an HTTP/1 chunked trailer section). The has_*
     * flags are set when trailers were received; the entries live in `arena` (or borrow bytes
     * that live as long as the stream). gRPC's grpc-status rides in resp_trailers (or in
     * `resp` for a Trailers-Only response). */
    struct headers req_trailers;
    struct headers resp_trailers;
    bool has_req_trailers;
    bool has_resp_trailers;

    uint32_t flags; /* RF_* */
    /* %RESPONSE_CODE_DETAILS% (Envoy's details): a static string set where the answer was
     * decided, NULL until then; reset_reason (static) and transport_errno complete an
     * upstream reset's "upstream_reset_before_response_started{...}". */
    const char *details;
    const char *reset_reason;
    int transport_errno;      /* the failed upstream connect's errno, 0 when none */
    ev_tstamp t_req_done;     /* the request's last byte came (%REQUEST_DURATION%) */
    ev_tstamp t_req_sent;     /* the request's last byte went upstream (%REQUEST_TX_DURATION%) */
    struct str upstream_host; /* "ip:port" once an endpoint was picked */
    /* the last attempt's connection (%UPSTREAM_CONNECTION_ID%, %UPSTREAM_LOCAL_ADDRESS%):
     * copied from its upstream_conn_info when the attempt was bound; 0 / AF_UNSPEC: none */
    uint64_t up_conn_id;
    union sockaddr_ip up_local;
    ev_tstamp t_start;
    ev_tstamp t_upstream_start;
    ev_tstamp t_upstream_headers;
    struct tl_timer timeout;  /* request_timeout until the request is in (DT), then
                               * the route timeout (UT) */
    struct tl_timer idle;     /* stream_idle_timeout (SI) */
    ev_tstamp t_activity;     /* last byte either way, for `idle` */
    uint64_t idle_ms;         /* the idle limit: the route's idle_timeout, else the HCM's */
    struct tl_timer duration; /* HCM common_http_protocol_options.max_stream_duration (DT) */
    bool local_reset; /* we reset the downstream (a response that cannot complete): not DC */
    bool finished;
    struct deferred defer;
    /* the route timeout in effect (UT; 0: none): the route's `timeout`, or from grpc-timeout
     * (max_grpc_timeout), or 0 with the route's max_stream_duration (Envoy's "new" timeouts) */
    uint64_t route_timeout_ms;

    /* Upstream attempts and retries (the "attempts" section of stream.c; decisions in
     * proxy/http/retry.h, limits in proxy/upstream/breaker.h). An attempt is one upstream
     * request on one connection; a retry is a new attempt on a new connection, after a
     * back-off, replaying the request head and the body kept so far. */
    const struct retry_policy *retry; /* borrowed from the snapshot (or a static default) */
    uint32_t retry_on;                /* RETRY_ON_*: the policy's, plus x-envoy-retry-on */
    uint32_t retries_left;
    uint32_t attempts;         /* attempts started (x-envoy-attempt-count) */
    int attempt_status;        /* the current attempt's response status, 0 before its head */
    const uint32_t *hdr_codes; /* in `arena`: x-envoy-retriable-status-codes */
    uint32_t n_hdr_codes;
    uint32_t tried[16]; /* endpoint indices already tried (previous_hosts) */
    uint32_t n_tried;
    struct buf body;     /* owned: the request body so far, kept for a retry */
    uint32_t body_limit; /* keep at most this much; past it retries stop */
    bool body_kept;      /* `body` holds the whole body so far: retries possible */
    /* x-envoy-upstream-rq-timeout-alt-response: a timeout answers 204, not 504 */
    bool timeout_204;
    bool req_end_fwd;             /* the request's end went through the filters */
    bool attempt_open;            /* an attempt is under way or not yet accounted */
    bool holds_rq;                /* holds a BREAKER_RQ unit (the attempt) */
    bool holds_retry;             /* holds a BREAKER_RETRY unit (a retry scheduled or running) */
    bool in_backoff;              /* waiting on `backoff` for the next attempt */
    bool timeout_retry;           /* the retry under way follows a per-try timeout */
    struct tl_timer backoff;      /* the jittered back-off before a retry */
    struct tl_timer per_try;      /* per_try_timeout, from the request's end */
    uint64_t per_try_ms;          /* the per-try timeout in effect (0: none) */
    struct tl_timer per_try_idle; /* per_try_idle_timeout (lazy, like `idle`) */
    ev_tstamp t_try_activity;     /* last byte either way on the current attempt */
    struct span *span;            /* in `arena`: the trace span (proxy/tracing), or NULL */
};

/* Per-request memory (proxy/core/blkcache.h): each worker keeps up to STREAM_CACHE_CAP freed
 * streams and STREAM_ARENA_CACHE_CAP freed arena blocks of STREAM_ARENA_BLOCK bytes (an HTTP/2
 * request with its response fills about two) for the next requests. */
#define STREAM_ARENA_BLOCK 2016
#define STREAM_ARENA_CACHE_CAP 256
#define STREAM_CACHE_CAP 128

/* Creates the stream for a request head that passed the codec's checks. Returns NULL only when
 * it has already answered locally and closed nothing. Called by the downstream. */
struct stream *stream_new(struct downstream *dc);

/* The request head. The stream routes it and starts forwarding or answers locally. */
void stream_request_head(struct stream *s, struct h1_msg *msg);
/* A piece of the request body. */
void stream_request_body(struct stream *s, const uint8_t *p, size_t len);
/* One trailer field of the request, before stream_request_end: copied into req_trailers. */
void stream_request_trailer(struct stream *s, struct str name, struct str value);
/* The request is complete. */
void stream_request_end(struct stream *s);
/* The downstream went away before the stream finished (flag DC). */
void stream_downstream_reset(struct stream *s);
/* The downstream's write buffer drained below the low watermark. */
void stream_downstream_drained(struct stream *s);

/* Upstream events, called by the upstream connection. */
void stream_upstream_connected(struct stream *s);
void stream_upstream_head(struct stream *s, struct h1_msg *msg);
void stream_upstream_body(struct stream *s, const uint8_t *p, size_t len);
void stream_upstream_end(struct stream *s);
/* The upstream failed: connect failure (RF_UF), connect timeout (RF_UF), reset or close
 * (RF_UC), HTTP/2 stream reset (RF_UR), malformed response (RF_UPE). */
void stream_upstream_failed(struct stream *s, uint32_t flag, const char *reason);
/* The upstream refused the request before processing it (HTTP/2 RST_STREAM REFUSED_STREAM, or
 * a stream above a GOAWAY's last stream id): retried under refused-stream, and, as a reset
 * before any response byte, under reset, 5xx and gateway-error (Envoy's); else 503 UR. */
void stream_upstream_refused(struct stream *s, const char *reason);
/* The upstream's write buffer drained below the low watermark. */
void stream_upstream_drained(struct stream *s);
/* One trailer field of the response (HTTP/2 trailing HEADERS, or an HTTP/1 chunked trailer
 * section), before stream_upstream_end: copied into resp_trailers. */
void stream_upstream_trailer(struct stream *s, struct str name, struct str value);

/* The router's part of the request path, called when the HTTP filters have passed the request
 * head (by stream_request_head, or by the filter chain when a stopped filter resumes): no route
 * (404 NR), direct responses, 100-continue, the route's header edits, then forwarding. */
void stream_route_request(struct stream *s);
/* Request body bytes (`end`: the request is complete) after the filters: encoded towards the
 * upstream if one is bound, else dropped; the end starts the route timeout. */
void stream_forward_request_body(struct stream *s, const uint8_t *p, size_t len, bool end);
/* The response head in s->resp with s->status, after the filters: framing, then encoded
 * towards the client. */
void stream_send_response_head(struct stream *s);
/* Response body bytes after the filters (`end`: the response is complete). */
void stream_send_response_body(struct stream *s, const uint8_t *p, size_t len, bool end);

/* Answers locally with `status` and a text body, Envoy-style. When no site set the stream's
 * details, they follow `flag` (route_not_found for RF_NR, ...). */
void stream_local_reply(struct stream *s, int status, const char *body, uint32_t flag);

/* Sets the stream's %RESPONSE_CODE_DETAILS%: `details` is borrowed and must outlive the stream
 * (a static string, or one in the stream's arena). */
void stream_set_details(struct stream *s, const char *details);

/* Frees a finished stream (called by its downstream when it is done with it). */
void stream_free(struct stream *s);
