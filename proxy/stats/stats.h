/* stats: Envoy-named counters, gauges and histograms, kept per worker without locks and
 * summed when read (by the admin endpoint on the main thread).
 *
 * Each worker owns one `struct stats_block` sized from the config snapshot: a set per listener
 * (`listener.<addr>.*`), per HTTP connection manager (`http.<stat_prefix>.*`), per cluster
 * (`cluster.<name>.*`) and per endpoint (for /clusters). Only the owning worker writes its block,
 * with a relaxed load and store (a plain `mov` on x86-64, no lock prefix); readers use relaxed
 * loads, so a sum may be a few increments stale but never torn. Gauges are kept as per-worker
 * up/down counts whose sum is the gauge.
 *
 * Stat lists are X-macros (Envoy's habit), so one list gives the struct fields, the names and
 * the kinds. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/buf.h"
#include "proxy/core/str.h"

struct config;
struct cluster_shared;
struct lds_view;

typedef _Atomic uint64_t stat_t;

static inline void stat_add(stat_t *s, uint64_t v)
{
    atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + v,
                          memory_order_relaxed);
}
static inline void stat_sub(stat_t *s, uint64_t v)
{
    atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) - v,
                          memory_order_relaxed);
}
static inline uint64_t stat_get(const stat_t *s)
{
    return atomic_load_explicit((stat_t *)s, memory_order_relaxed);
}
#define STAT_INC(s) stat_add(&(s), 1)
#define STAT_DEC(s) stat_sub(&(s), 1)

/* Envoy's default histogram bucket bounds, in milliseconds. */
#define HIST_N_BOUNDS 19
extern const double hist_bounds[HIST_N_BOUNDS];

struct hist {
    stat_t buckets[HIST_N_BOUNDS + 1]; /* counts per bucket; the last is +Inf */
    stat_t count;
    stat_t sum_us; /* sum of samples in microseconds */
};

void hist_record_ms(struct hist *h, double ms);

/* X(kind, name): kind is COUNTER, GAUGE or HIST. */
#define LISTENER_STATS(X)                                                                          \
    X(COUNTER, downstream_cx_total)                                                                \
    X(GAUGE, downstream_cx_active)                                                                 \
    X(COUNTER, downstream_cx_destroy)                                                              \
    X(COUNTER, downstream_cx_overflow)                                                             \
    X(COUNTER, no_filter_chain_match)                                                              \
    X(COUNTER, downstream_cx_transport_socket_connect_timeout)                                     \
    X(COUNTER, downstream_pre_cx_timeout)                                                          \
    X(GAUGE, downstream_pre_cx_active)                                                             \
    X(COUNTER, downstream_listener_filter_remote_close)                                            \
    X(COUNTER, downstream_listener_filter_error)                                                   \
    X(HIST, downstream_cx_length_ms)

#define HCM_STATS(X)                                                                               \
    X(COUNTER, downstream_cx_total)                                                                \
    X(COUNTER, downstream_cx_http1_total)                                                          \
    X(COUNTER, downstream_cx_http2_total)                                                          \
    X(GAUGE, downstream_cx_active)                                                                 \
    X(GAUGE, downstream_cx_http1_active)                                                           \
    X(GAUGE, downstream_cx_http2_active)                                                           \
    X(COUNTER, downstream_cx_ssl_total)                                                            \
    X(GAUGE, downstream_cx_ssl_active)                                                             \
    X(COUNTER, downstream_cx_destroy)                                                              \
    X(COUNTER, downstream_cx_destroy_remote)                                                       \
    X(COUNTER, downstream_cx_destroy_local)                                                        \
    X(COUNTER, downstream_cx_protocol_error)                                                       \
    X(COUNTER, downstream_cx_idle_timeout)                                                         \
    X(COUNTER, downstream_cx_drain_close)                                                          \
    X(COUNTER, downstream_cx_rx_bytes_total)                                                       \
    X(COUNTER, downstream_cx_tx_bytes_total)                                                       \
    X(COUNTER, downstream_rq_total)                                                                \
    X(COUNTER, downstream_rq_http1_total)                                                          \
    X(COUNTER, downstream_rq_http2_total)                                                          \
    X(GAUGE, downstream_rq_active)                                                                 \
    X(COUNTER, downstream_rq_completed)                                                            \
    X(COUNTER, downstream_rq_1xx)                                                                  \
    X(COUNTER, downstream_rq_2xx)                                                                  \
    X(COUNTER, downstream_rq_3xx)                                                                  \
    X(COUNTER, downstream_rq_4xx)                                                                  \
    X(COUNTER, downstream_rq_5xx)                                                                  \
    X(COUNTER, downstream_rq_rx_reset)                                                             \
    X(COUNTER, downstream_rq_tx_reset)                                                             \
    X(COUNTER, downstream_rq_timeout)                                                              \
    X(COUNTER, downstream_rq_idle_timeout)                                                         \
    X(COUNTER, downstream_rq_header_timeout)                                                       \
    X(COUNTER, downstream_rq_too_large)                                                            \
    X(COUNTER, downstream_rq_max_duration_reached)                                                 \
    X(COUNTER, downstream_rq_too_many_premature_resets)                                            \
    X(COUNTER, downstream_rq_failed_path_normalization)                                            \
    X(COUNTER, downstream_rq_redirected_with_normalized_path)                                      \
    X(COUNTER, no_route)                                                                           \
    X(COUNTER, no_cluster)                                                                         \
    X(HIST, downstream_rq_time)                                                                    \
    X(HIST, downstream_cx_length_ms)

/* tcp.<stat_prefix>.* (envoy.filters.network.tcp_proxy) */
#define TCP_STATS(X)                                                                               \
    X(COUNTER, downstream_cx_total)                                                                \
    X(COUNTER, downstream_cx_no_route)                                                             \
    X(COUNTER, downstream_cx_rx_bytes_total)                                                       \
    X(GAUGE, downstream_cx_rx_bytes_buffered)                                                      \
    X(COUNTER, downstream_cx_tx_bytes_total)                                                       \
    X(GAUGE, downstream_cx_tx_bytes_buffered)                                                      \
    X(COUNTER, downstream_flow_control_paused_reading_total)                                       \
    X(COUNTER, downstream_flow_control_resumed_reading_total)                                      \
    X(COUNTER, idle_timeout)                                                                       \
    X(COUNTER, upstream_flush_total)                                                               \
    X(GAUGE, upstream_flush_active)

#define CLUSTER_STATS(X)                                                                           \
    X(COUNTER, upstream_cx_total)                                                                  \
    X(COUNTER, upstream_cx_http1_total)                                                            \
    X(COUNTER, upstream_cx_http2_total)                                                            \
    X(COUNTER, upstream_cx_max_requests)                                                           \
    X(COUNTER, upstream_cx_close_notify)                                                           \
    X(GAUGE, upstream_cx_active)                                                                   \
    X(COUNTER, upstream_cx_connect_fail)                                                           \
    X(COUNTER, upstream_cx_connect_timeout)                                                        \
    X(COUNTER, upstream_cx_destroy)                                                                \
    X(COUNTER, upstream_cx_destroy_local)                                                          \
    X(COUNTER, upstream_cx_destroy_remote)                                                         \
    X(COUNTER, upstream_cx_destroy_with_active_rq)                                                 \
    X(COUNTER, upstream_cx_idle_timeout)                                                           \
    X(COUNTER, upstream_cx_protocol_error)                                                         \
    X(COUNTER, upstream_cx_rx_bytes_total)                                                         \
    X(COUNTER, upstream_cx_tx_bytes_total)                                                         \
    X(COUNTER, upstream_cx_none_healthy)                                                           \
    X(COUNTER, upstream_cx_overflow)                                                               \
    X(COUNTER, upstream_cx_max_duration_reached)                                                   \
    X(COUNTER, lb_healthy_panic)                                                                   \
    X(COUNTER, upstream_rq_total)                                                                  \
    X(GAUGE, upstream_rq_active)                                                                   \
    X(COUNTER, upstream_rq_completed)                                                              \
    X(COUNTER, upstream_rq_timeout)                                                                \
    X(COUNTER, upstream_rq_rx_reset)                                                               \
    X(COUNTER, upstream_rq_tx_reset)                                                               \
    X(COUNTER, upstream_rq_1xx)                                                                    \
    X(COUNTER, upstream_rq_2xx)                                                                    \
    X(COUNTER, upstream_rq_3xx)                                                                    \
    X(COUNTER, upstream_rq_4xx)                                                                    \
    X(COUNTER, upstream_rq_5xx)                                                                    \
    X(COUNTER, upstream_rq_pending_total)                                                          \
    X(GAUGE, upstream_rq_pending_active)                                                           \
    X(COUNTER, upstream_rq_pending_overflow)                                                       \
    X(COUNTER, upstream_rq_per_try_timeout)                                                        \
    X(COUNTER, upstream_rq_per_try_idle_timeout)                                                   \
    X(COUNTER, upstream_rq_retry)                                                                  \
    X(COUNTER, upstream_rq_retry_success)                                                          \
    X(COUNTER, upstream_rq_retry_overflow)                                                         \
    X(COUNTER, upstream_rq_retry_limit_exceeded)                                                   \
    X(COUNTER, upstream_rq_retry_backoff_exponential)                                              \
    X(COUNTER, retry_or_shadow_abandoned)                                                          \
    X(HIST, upstream_rq_time)                                                                      \
    X(HIST, upstream_cx_connect_ms)

/* Envoy's http2.* codec counters (downstream HTTP/2), one set per worker, shown unprefixed. */
#define HTTP2_STATS(X)                                                                             \
    X(COUNTER, rx_reset)                                                                           \
    X(COUNTER, tx_reset)                                                                           \
    X(COUNTER, header_overflow)                                                                    \
    X(COUNTER, outbound_flood)                                                                     \
    X(COUNTER, outbound_control_flood)                                                             \
    X(COUNTER, inbound_empty_frames_flood)                                                         \
    X(COUNTER, inbound_priority_frames_flood)                                                      \
    X(COUNTER, inbound_window_update_frames_flood)                                                 \
    X(COUNTER, rx_messaging_error)                                                                 \
    X(COUNTER, trailers)                                                                           \
    X(COUNTER, goaway_sent)                                                                        \
    X(COUNTER, keepalive_timeout)                                                                  \
    X(GAUGE, streams_active)

/* Envoy's tls_inspector.* counters (the listener filter), one set per worker, shown unprefixed
 * when some listener has the filter. */
#define TLS_INSPECTOR_STATS(X)                                                                     \
    X(COUNTER, client_hello_too_large)                                                             \
    X(COUNTER, tls_found)                                                                          \
    X(COUNTER, tls_not_found)                                                                      \
    X(COUNTER, alpn_found)                                                                         \
    X(COUNTER, alpn_not_found)                                                                     \
    X(COUNTER, sni_found)                                                                          \
    X(COUNTER, sni_not_found)

/* Envoy's proxy_proto.* counters (the listener filter; no stat_prefix), shown as
 * proxy_proto.not_found_*, proxy_proto.versions.v<N>.{found,disallowed,error}, and the legacy
 * unprefixed downstream_cx_proxy_proto_error, when some listener has the filter. */
#define PROXY_PROTO_STATS(X)                                                                       \
    X(COUNTER, not_found_disallowed)                                                               \
    X(COUNTER, not_found_allowed)                                                                  \
    X(COUNTER, v1_found)                                                                           \
    X(COUNTER, v1_disallowed)                                                                      \
    X(COUNTER, v1_error)                                                                           \
    X(COUNTER, v2_found)                                                                           \
    X(COUNTER, v2_disallowed)                                                                      \
    X(COUNTER, v2_error)                                                                           \
    X(COUNTER, downstream_cx_proxy_proto_error)

#define STAT_FIELD_COUNTER(n) stat_t n;
#define STAT_FIELD_GAUGE(n) stat_t n;
#define STAT_FIELD_HIST(n) struct hist n;
#define STAT_FIELD(kind, n) STAT_FIELD_##kind(n)

/* Envoy's <scope>.ssl.* counters of a TLS listener (listener.<addr>.ssl.*) or cluster
 * (cluster.<name>.ssl.*), shown only where TLS is configured. handshake: completed; the
 * fail_verify_*: the peer's certificate was missing where required, did not verify, or matched
 * no SAN matcher (proxy/net/tls.h: enum tls_fail); connection_error: any other handshake or
 * record failure; no_certificate: a handshake completed without a peer certificate. */
#define SSL_STATS(X)                                                                               \
    X(COUNTER, handshake)                                                                          \
    X(COUNTER, connection_error)                                                                   \
    X(COUNTER, fail_verify_no_cert)                                                                \
    X(COUNTER, fail_verify_error)                                                                  \
    X(COUNTER, fail_verify_san)                                                                    \
    X(COUNTER, no_certificate)

struct ssl_stats {
    SSL_STATS(STAT_FIELD)
};

struct listener_stats {
    LISTENER_STATS(STAT_FIELD)
    struct ssl_stats ssl;
};

struct hcm_stats {
    HCM_STATS(STAT_FIELD)
};

struct http2_stats {
    HTTP2_STATS(STAT_FIELD)
};

struct tcp_stats {
    TCP_STATS(STAT_FIELD)
};

struct tls_inspector_stats {
    TLS_INSPECTOR_STATS(STAT_FIELD)
};

struct proxy_proto_stats {
    PROXY_PROTO_STATS(STAT_FIELD)
};

/* Envoy's cluster.<name>.http2.* counters: the upstream HTTP/2 codec (upstream_h2.c). */
#define CLUSTER_HTTP2_STATS(X)                                                                     \
    X(COUNTER, rx_reset)                                                                           \
    X(COUNTER, tx_reset)                                                                           \
    X(COUNTER, header_overflow)                                                                    \
    X(COUNTER, rx_messaging_error)                                                                 \
    X(COUNTER, keepalive_timeout)                                                                  \
    X(GAUGE, streams_active)

struct cluster_http2_stats {
    CLUSTER_HTTP2_STATS(STAT_FIELD)
};

struct cluster_stats {
    CLUSTER_STATS(STAT_FIELD)
    struct cluster_http2_stats http2;
    struct ssl_stats ssl;
    stat_t upstream_rq_code[600]; /* upstream_rq_<code>, shown when non-zero */
};

/* Per-endpoint counters, for /clusters (Envoy's per-host stats). */
struct host_stats {
    stat_t cx_total;
    stat_t cx_active;
    stat_t cx_connect_fail;
    stat_t rq_total;
    stat_t rq_active;
    stat_t rq_success;
    stat_t rq_error;
    stat_t rq_timeout;
};

/* One RDS subscription's http.<stat_prefix>.rds.<route_config_name>.* stats (Envoy's names).
 * Written by main only (proxy/reload.c), not per worker. `version` is Envoy's: XXH64 of the
 * last accepted version_info; config_reload_time_ms and update_time are Unix times in ms of the
 * last reload and the last successful update. */
#define RDS_STATS(X)                                                                               \
    X(COUNTER, update_attempt)                                                                     \
    X(COUNTER, update_success)                                                                     \
    X(COUNTER, update_rejected)                                                                    \
    X(COUNTER, update_failure)                                                                     \
    X(COUNTER, update_empty)                                                                       \
    X(COUNTER, config_reload)                                                                      \
    X(GAUGE, config_reload_time_ms)                                                                \
    X(GAUGE, update_time)                                                                          \
    X(GAUGE, version)

struct rds_stats {
    RDS_STATS(STAT_FIELD)
};

/* One SDS subscription's sds.<secret name>.* stats (Envoy's subscription stats under its SDS
 * scope). Written by main only (proxy/reload.c). update_time: Unix ms of the last accepted
 * update; version: XXH64 of its version_info. */
#define SDS_STATS(X)                                                                               \
    X(COUNTER, update_attempt)                                                                     \
    X(COUNTER, update_success)                                                                     \
    X(COUNTER, update_rejected)                                                                    \
    X(COUNTER, update_failure)                                                                     \
    X(GAUGE, update_time)                                                                          \
    X(GAUGE, version)

struct sds_stats {
    SDS_STATS(STAT_FIELD)
};

/* sds.<name>.* of a secret over ADS that only LDS listeners and CDS clusters use (the
 * bootstrap's names are listed with config.sds); borrowed from proxy/reload.c. */
struct sds_stat_view {
    struct str name;
    const struct sds_stats *st;
};

/* control_plane.*: the ADS client's (proxy/xds/ads.h), main-written. connected_state: 1 while
 * its stream is up; rate_limit_enforced: always 0 (no rate limit is configured or supported);
 * pending_requests: requests due, not yet written. */
#define CONTROL_PLANE_STATS(X)                                                                     \
    X(GAUGE, connected_state)                                                                      \
    X(COUNTER, rate_limit_enforced)                                                                \
    X(GAUGE, pending_requests)

struct ads_stats {
    CONTROL_PLANE_STATS(STAT_FIELD)
    /* The ADS connection's PINGs went unanswered (connection_keepalive of the ADS cluster):
     * shown added into cluster.<ads cluster>.http2.keepalive_timeout, as Envoy counts it. */
    stat_t keepalive_timeout;
};

/* cluster_manager.* (Envoy's names): clusters added (the bootstrap's count at startup, as in
 * Envoy), modified and removed by CDS, and the active ones; and, with a cds_config,
 * cluster_manager.cds.* (the subscription's, as RDS_STATS). Written by main only
 * (proxy/cds.c). warming_clusters: CDS clusters added or modified that wait for their first
 * ClusterLoadAssignment over ADS or first health-check round (cds.h: warming); the version a
 * warming one replaces counts as active. */
#define CM_STATS(X)                                                                                \
    X(COUNTER, cluster_added)                                                                      \
    X(COUNTER, cluster_modified)                                                                   \
    X(COUNTER, cluster_removed)                                                                    \
    X(GAUGE, active_clusters)                                                                      \
    X(GAUGE, warming_clusters)

#define CDS_STATS(X)                                                                               \
    X(COUNTER, update_attempt)                                                                     \
    X(COUNTER, update_success)                                                                     \
    X(COUNTER, update_rejected)                                                                    \
    X(COUNTER, update_failure)                                                                     \
    X(GAUGE, update_time)                                                                          \
    X(GAUGE, version)

struct cds_sub_stats {
    CDS_STATS(STAT_FIELD)
};

struct cm_stats {
    CM_STATS(STAT_FIELD)
    bool has_cds; /* show cds.* */
    struct cds_sub_stats cds;
};

/* listener_manager.* (Envoy's names; main-written, proxy/lds.c and reload.c): the LDS
 * subscription's lds.* (as cds.*), and the listeners added, modified and removed through it.
 * total_listeners_active counts the dynamic listeners in force, total_listeners_draining the
 * versions still draining connections (the bootstrap's listeners are not counted: remora
 * differs there from Envoy, whose gauges count them too). total_listeners_warming counts
 * the versions waiting for their RDS routes or SDS secrets over ADS (lds.c: warming; a
 * warming version's predecessor counts as active). */
#define LM_STATS(X)                                                                                \
    X(COUNTER, listener_added)                                                                     \
    X(COUNTER, listener_modified)                                                                  \
    X(COUNTER, listener_removed)                                                                   \
    X(COUNTER, listener_create_success)                                                            \
    X(COUNTER, listener_create_failure)                                                            \
    X(GAUGE, total_listeners_warming)                                                              \
    X(GAUGE, total_listeners_active)                                                               \
    X(GAUGE, total_listeners_draining)

struct lds_stats {
    LM_STATS(STAT_FIELD)
    bool has_lds;             /* show lds.* */
    struct cds_sub_stats lds; /* same names as cds.* */
};

/* An EDS cluster's subscription stats, cluster.<name>.* (Envoy's names): update_no_rebuild
 * counts accepted updates that changed nothing, membership_change those that changed the set of
 * endpoints; version is XXH64 of the last accepted version_info. Written by main only
 * (proxy/cds.c, proxy/reload.c). */
#define EDS_STATS(X)                                                                               \
    X(COUNTER, update_attempt)                                                                     \
    X(COUNTER, update_success)                                                                     \
    X(COUNTER, update_failure)                                                                     \
    X(COUNTER, update_rejected)                                                                    \
    X(COUNTER, update_empty)                                                                       \
    X(COUNTER, update_no_rebuild)                                                                  \
    X(COUNTER, membership_change)                                                                  \
    X(GAUGE, version)

struct eds_stats {
    EDS_STATS(STAT_FIELD)
};

/* A cluster that is not in the snapshot's `clusters` (a CDS cluster, or a bootstrap STRICT_DNS
 * cluster's current version: proxy/cds.h), as the admin
 * shows it: its config, per-worker stats blocks of its own (blocks[w]->cluster[0], ->host[0]),
 * cluster-wide state, and for EDS its subscription stats (else NULL). All borrowed from main,
 * valid until the next run-time update. */
struct cluster_view {
    const struct cluster_cfg *cfg;
    struct stats_block *const *blocks; /* [n_blocks] */
    const struct cluster_shared *shared;
    const struct eds_stats *eds;
    bool boot; /* a bootstrap STRICT_DNS cluster's current version (added_via_api false): shown
                * in place of the bootstrap's own entry (cluster_cfg.boot_dns) */
};

struct stats_block {
    struct listener_stats *listener; /* owned; [config.n_listeners] */
    struct hcm_stats *hcm;           /* owned; [config.n_listeners] (one HCM per listener) */
    struct tcp_stats *tcp;           /* owned; [config.n_listeners] (TCP listeners use theirs) */
    struct cluster_stats *cluster;   /* owned; [config.n_clusters] */
    struct host_stats **host;        /* owned; [n_clusters][cluster.n_endpoints] */
    stat_t *ext; /* owned; [config.n_stat_defs]: counters and gauges HTTP filters declared */
    struct http2_stats http2; /* downstream HTTP/2 codec counters (http2.*) */
    /* tls_inspector.* (the listener filter) */
    struct tls_inspector_stats tls_inspector;
    /* proxy_proto.* and downstream_cx_proxy_proto_error (the listener filter) */
    struct proxy_proto_stats proxy_proto;
};

/* Allocates a zeroed block sized for `c`. Thread: main, before the worker starts. */
struct stats_block *stats_block_new(const struct config *c);
void stats_block_free(struct stats_block *b, const struct config *c);

/* Server-wide values the admin adds to the output (server.*). */
struct server_stats_view {
    uint64_t uptime_s;
    uint64_t memory_allocated;
    uint64_t memory_heap_size;
    uint32_t concurrency;
    int live; /* 1 when serving */
    int draining;
    /* borrowed from main, [config.n_clusters], or NULL: cluster-wide state for the
     * circuit_breakers.* gauges */
    const struct cluster_shared *shared;
    /* borrowed from main, [config.n_rds], or NULL: RDS subscriptions' stats */
    const struct rds_stats *rds;
    /* borrowed from main, [config.n_sds], or NULL: SDS subscriptions' stats */
    const struct sds_stats *sds;
    /* borrowed from main, or NULL without ads_config: control_plane.* */
    const struct ads_stats *ads;
    uint32_t state; /* server.state, Envoy's numbers: 0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING,
                     * 3 INITIALIZING */
    /* borrowed from main, or NULL: CDS clusters (shown after the bootstrap's) and
     * cluster_manager.* */
    const struct cluster_view *dyn;
    uint32_t n_dyn;
    const struct cm_stats *cm;
    /* borrowed from main, or NULL: LDS listeners (active and draining versions) and
     * listener_manager.* */
    const struct lds_view *dl;
    uint32_t n_dl;
    const struct lds_stats *lm;
    /* borrowed from main, or NULL: sds.<name>.* of the ADS secrets only dynamic listeners and
     * clusters use */
    const struct sds_stat_view *dsds;
    uint32_t n_dsds;
    /* server.days_until_first_cert_expiring (tls.h), shown only with has_certs */
    bool has_certs;
    uint64_t days_until_first_cert_expiring;
};

enum stats_format {
    STATS_TEXT,
    STATS_JSON,
    STATS_PROMETHEUS,
};

struct pcre2_real_code_8;

/* POST /reset_counters: every counter's summed value at the reset, by full stat name, sorted
 * as the renderer sorts its records. Workers keep writing their blocks untouched; rendering
 * subtracts the baseline instead, so counters read 0 after a reset and count on from there.
 * Gauges and histograms are not in it (Envoy resets counters only). Its size is the number of
 * counters shown at the reset. Owned by main (the admin). */
struct stats_baseline;

/* Takes a baseline of every counter that stats_render() would show now. Thread: main. */
struct stats_baseline *stats_baseline_take(const struct config *c,
                                           struct stats_block *const *blocks, uint32_t n_blocks,
                                           const struct server_stats_view *srv);
void stats_baseline_free(struct stats_baseline *bl);

/* A counter's value since the baseline: `now` minus what the baseline holds for `name` (0 when
 * it holds nothing for it, as for a counter that appeared after the reset), never below 0.
 * `*cursor` (start at 0) walks the baseline forward: call with names in ascending strcmp order.
 * `bl` may be NULL (no reset yet). */
uint64_t stats_baseline_since(const struct stats_baseline *bl, size_t *cursor, const char *name,
                              uint64_t now);

/* Renders the sum over `blocks` in the given format into `out`. `filter` (may be NULL) is a
 * compiled PCRE2 regex matched against each stat name; `used_only` skips counters never
 * incremented (a reset does not make a counter unused, as in Envoy), zero gauges and histograms
 * without samples. Counters are shown since `since` (NULL: since start). Thread: main
 * (admin). */
void stats_render(struct buf *out, const struct config *c, struct stats_block *const *blocks,
                  uint32_t n_blocks, const struct server_stats_view *srv, enum stats_format fmt,
                  const struct pcre2_real_code_8 *filter, int used_only,
                  const struct stats_baseline *since);

/* Every counter and gauge stats_render() would show, summed over `blocks`, in ascending name
 * order (histograms are left out: the sinks have no per-sample values to send). `value` is
 * since start (a /reset_counters baseline does not apply); `used` is Envoy's: a counter
 * incremented at least once, a gauge that is not 0. Thread: main (the stats sinks). */
enum stat_kind {
    STAT_KIND_COUNTER,
    STAT_KIND_GAUGE,
};
void stats_each(const struct config *c, struct stats_block *const *blocks, uint32_t n_blocks,
                const struct server_stats_view *srv,
                void (*fn)(void *arg, const char *name, enum stat_kind kind, uint64_t value),
                void *arg);

/* Adds `h` into `out` (relaxed loads, for a copy another thread reads). */
void stats_add_host(struct host_stats *out, const struct host_stats *h);

/* Sums one endpoint's host stats over all blocks (for /clusters). */
void stats_sum_host(struct stats_block *const *blocks, uint32_t n_blocks, uint32_t cluster,
                    uint32_t endpoint, struct host_stats *out_plain);
