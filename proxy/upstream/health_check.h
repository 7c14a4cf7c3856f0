/* health_check: Envoy's active health checking, run on the main thread's loop (as Envoy runs
 * it off the workers) and published as HEALTH_F_* bits in `cluster_shared` (workers read them
 * through hostset.h).
 *
 * One session per endpoint, one check in flight per session:
 *
 *   [initial_jitter] -> check -> result -> wait interval(state, transition) -> check -> ...
 *
 *   HTTP  GET `path` with Host `host` (default: the cluster name), user-agent Envoy/HC and
 *         request_headers_to_add/remove, over a non-blocking HTTP/1.1 connection kept open
 *         between checks (reuse_connection, default true). Parsed with codec_h1 (H1_RESPONSE).
 *         A status in expected_statuses (default [200, 201)) passes. Any other status fails at
 *         once (Envoy: "immediately unhealthy"), unless it is in retriable_statuses, which
 *         count towards unhealthy_threshold like network failures do. With
 *         service_name_matcher, x-envoy-upstream-healthchecked-cluster must match too.
 *         With codec_client_type HTTP2 the same GET goes over HTTP/2 (h2c, or h2 over the
 *         cluster's TLS, offering ALPN h2): :method, :path, :scheme, :authority (`host`, or the
 *         cluster name), one nghttp2 client session per connection, kept between checks as
 *         above; a reset stream is a network failure, a GOAWAY closes it after the check.
 *   gRPC  the gRPC Health Checking Protocol over HTTP/2 (same connection rules): POST
 *         /grpc.health.v1.Health/Check, :authority `authority` (or the cluster name),
 *         initial_metadata as headers, a HealthCheckRequest{service_name}. Passes on :status
 *         200, grpc-status 0 and a response whose status is SERVING; anything else fails at
 *         once (Envoy's rule), a reset or cut-short stream is a network failure (hc_h2.h).
 *   TCP   connect-only: connected passes (the connection is then closed).
 *   All   no answer within `timeout` is a network failure (plus /active_hc_timeout). An
 *         endpoint's health_check_config.port_value sends its checks to that port instead of
 *         the traffic port, and its hostname replaces `host`/`authority` (Envoy's rules).
 *
 * Host state, as Envoy: with health checking configured, endpoints start as
 * /failed_active_hc/pending_active_hc. The first result decides at once (one pass is enough to
 * become healthy); after that unhealthy_threshold consecutive failures (network or retriable)
 * take a healthy host out, and healthy_threshold consecutive passes bring it back.
 *
 * Intervals (Envoy's): `interval` while healthy, `unhealthy_interval` (default interval) while
 * unhealthy, `healthy_edge_interval`/`unhealthy_edge_interval` right after a result that moved
 * towards the other state without reaching it, and `no_traffic_interval` (default 60 s; for a
 * healthy host `no_traffic_healthy_interval`, default no_traffic_interval) until the cluster has
 * had upstream traffic (cluster.<name>.upstream_cx_total > 0). Each wait gets
 * interval_jitter_percent% of it and up to interval_jitter added at random.
 *
 * Startup: Envoy does not start serving until every host of every cluster had its first check
 * (cluster warming); health_check_new() reports that through `initialized`.
 *
 * Thread: main. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct ev_loop;
struct cluster_cfg;
struct cluster_shared;
struct header_add;
struct stats_block;
struct str_match;

enum hc_kind {
    HC_HTTP,
    HC_TCP,
    HC_GRPC,
};

/* An HTTP status range [start, end), as type.v3.Int64Range. */
struct hc_range {
    int64_t start;
    int64_t end;
};

/* HealthCheck, compiled. Durations in ms; defaults are Envoy's. */
struct health_check_cfg {
    enum hc_kind kind;
    uint64_t timeout_ms;  /* required, > 0 */
    uint64_t interval_ms; /* required, > 0 */
    uint64_t initial_jitter_ms;
    uint64_t interval_jitter_ms;
    uint32_t interval_jitter_percent;
    uint32_t unhealthy_threshold;            /* required */
    uint32_t healthy_threshold;              /* required */
    bool reuse_connection;                   /* default true */
    uint64_t no_traffic_interval_ms;         /* 60000 */
    uint64_t no_traffic_healthy_interval_ms; /* no_traffic_interval */
    uint64_t unhealthy_interval_ms;          /* interval */
    uint64_t unhealthy_edge_interval_ms;     /* unhealthy_interval */
    uint64_t healthy_edge_interval_ms;       /* interval */
    /* HTTP (and gRPC: host is `authority`, headers_add is initial_metadata) */
    bool http2;      /* HTTP: codec_client_type HTTP2; gRPC: always */
    struct str host; /* empty: the cluster name */
    struct str path;
    struct str grpc_service; /* gRPC: service_name (empty: the server as a whole) */
    const struct header_add *headers_add;
    uint32_t n_headers_add;
    const struct str *headers_remove; /* lower case */
    uint32_t n_headers_remove;
    const struct hc_range *expected; /* never empty: [200, 201) by default */
    uint32_t n_expected;
    const struct hc_range *retriable;
    uint32_t n_retriable;
    /* HTTP: service_name_matcher, or NULL. A response with an expected status passes only when
     * its x-envoy-upstream-healthchecked-cluster (empty when absent) matches; each such
     * response counts health_check.verify_cluster (Envoy's). */
    const struct str_match *service_name;
};

struct health_check;

/* Starts checking every endpoint of cluster `cfg` (cfg->health_check must be set): marks them
 * /failed_active_hc/pending_active_hc in `sh`, then runs the sessions on `loop`. `blocks[n]`
 * are the workers' stats blocks, read for the no-traffic rule. `initialized(ud)` is called once,
 * from the loop, when every endpoint had its first result (at once for a cluster with no
 * endpoints). Thread: main. */
struct health_check *health_check_new(struct ev_loop *loop, const struct cluster_cfg *cfg,
                                      struct cluster_shared *sh, struct stats_block *const *blocks,
                                      uint32_t n_blocks, uint64_t seed,
                                      void (*initialized)(void *ud), void *ud);

/* Carries endpoint `from_ep` of `from` (the previous version of the same cluster, whose
 * endpoints changed: proxy/cds.c) over to endpoint `ep` of `hc`: its health (the active-check
 * flags), its consecutive pass and failure counts, and when it is checked next. Thread: main. */
void health_check_adopt(struct health_check *hc, uint32_t ep, const struct health_check *from,
                        uint32_t from_ep);

/* A response from the endpoint whose shared state is `es` (in `sh->eps`) carried
 * x-envoy-immediate-health-check-fail (Envoy's router: the host is told it failed). When the
 * cluster's health checker runs, main marks the endpoint /failed_active_hc at once (as an
 * unexpected status would) and counts health_check.failure and .passive_failure, once per such
 * response; without one, nothing happens. One atomic add and an ev_async_send. Thread: any
 * (a worker). */
struct endpoint_shared;
void health_check_immediate_fail(struct cluster_shared *sh, struct endpoint_shared *es);

/* Closes every connection and timer and frees the checker. */
void health_check_free(struct health_check *hc);

/* Whether HTTP status `status` is in one of `r[n]`. */
bool hc_range_contains(const struct hc_range *r, uint32_t n, int status);
