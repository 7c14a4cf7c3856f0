/* config: the immutable runtime snapshot the workers run on, compiled from an Envoy v3
 * Bootstrap (static file) or, later, from xDS resources. Everything reachable from a
 * `struct config` lives in its arena and is freed with the last reference. Workers see it as
 * `const`: they never change it, and a new config is a new snapshot (STYLE.md, "Config snapshot
 * and atomic swap").
 *
 * Routes point straight at their cluster (`const struct cluster_cfg *`), so the request path
 * never looks anything up by name. Names are kept for stats, logs and /config_dump.
 *
 * Thread: built on the main thread; read by every worker. Only `refs` is ever written after
 * publication. */
#pragma once

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"
#include "proxy/http/h2_keepalive.h"
#include "proxy/http/path_norm.h"

struct chain_match; /* proxy/net/chain_match.h */
struct tls_ctx;     /* proxy/net/tls.h: a compiled Downstream/UpstreamTlsContext */

struct regex;       /* proxy/http/regex.h: a compiled safe_regex */
struct lb_hash;     /* proxy/upstream/lb_hash.h: a RING_HASH ring or MAGLEV table */
struct cluster_map; /* proxy/config/cluster_map.h: clusters by name */
struct hcm_tracing;
struct tracer_cfg;
struct filter_cfg;
struct rbac_net_cfg; /* filters/rbac/rbac_network.h */
struct health_check_cfg;
struct cds_boot_dns; /* proxy/cds.c: a bootstrap STRICT_DNS cluster's current version */
struct outlier_cfg;

/* ---- addresses ---- */
struct sock_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    struct str text; /* "127.0.0.1:8080" or "[::1]:8080", for logs and stats */
};

/* ---- header matching and mutation (RouteMatch.headers, *_headers_to_add) ---- */
/* A StringMatcher (Envoy's envoy.type.matcher.v3): the string kinds of a header matcher's
 * string_match, and a SAN matcher's (proxy/net/tls_verify.h). Compiled by
 * build_string_match (build.h). */
enum str_match_kind {
    SM_EXACT,
    SM_PREFIX,
    SM_SUFFIX,
    SM_CONTAINS,
    SM_REGEX, /* safe_regex, a full match */
};

struct str_match {
    enum str_match_kind kind;
    struct str value; /* the string; for SM_REGEX the pattern's text */
    bool ignore_case;
    const struct regex *regex; /* SM_REGEX: owned by the snapshot (freed by its cleanups) */
};

enum header_match_kind {
    HM_EXACT,    /* string_match.exact or exact_match */
    HM_PREFIX,   /* string_match.prefix or prefix_match */
    HM_SUFFIX,   /* string_match.suffix or suffix_match */
    HM_CONTAINS, /* string_match.contains or contains_match */
    HM_PRESENT,  /* present_match: true means "present", false means "absent" */
    HM_REGEX,    /* string_match.safe_regex or safe_regex_match: a full match */
    HM_RANGE,    /* range_match: the value as an int64 in [range_start, range_end) */
};

struct header_matcher {
    struct str name; /* lower case */
    enum header_match_kind kind;
    struct str value;          /* for the string kinds */
    bool ignore_case;          /* string_match.ignore_case */
    bool present_value;        /* for HM_PRESENT */
    const struct regex *regex; /* HM_REGEX: owned by the snapshot (freed by its cleanups) */
    int64_t range_start;       /* HM_RANGE, inclusive */
    int64_t range_end;         /* HM_RANGE, exclusive */
    bool invert;               /* invert_match */
};

enum header_append {
    HA_APPEND_IF_EXISTS_OR_ADD, /* Envoy's default (append = true) */
    HA_ADD_IF_ABSENT,
    HA_OVERWRITE_IF_EXISTS_OR_ADD,
};

struct header_add {
    struct str name; /* lower case */
    struct str value;
    enum header_append action;
};

/* A set of header edits at one level (route config, virtual host or route). */
struct header_edits {
    const struct header_add *add;
    uint32_t n_add;
    const struct str *remove; /* lower case */
    uint32_t n_remove;
};

/* ---- clusters ---- */
enum cluster_type {
    CLUSTER_STATIC,
    CLUSTER_STRICT_DNS,
    CLUSTER_ORIGINAL_DST, /* hosts made per destination at run time (upstream/original_dst.h) */
    CLUSTER_EDS,          /* endpoints from EDS (CDS clusters only: proxy/cds.h) */
    CLUSTER_LOGICAL_DNS,  /* one host whose address follows its name (struct logical_addr) */
};

enum lb_policy {
    LB_ROUND_ROBIN,
    LB_LEAST_REQUEST,
    LB_RANDOM,
    LB_RING_HASH, /* by the route's hash_policy key on cluster_cfg.hash_lb (lb_hash.h) */
    LB_MAGLEV,
    LB_CLUSTER_PROVIDED, /* ORIGINAL_DST: the cluster picks (the request's original destination) */
};

/* LOGICAL_DNS: the address of a cluster's one host, the first of its name's latest answer,
 * rewritten in place by main (proxy/reload.c, from proxy/dns_refresh.h's answers) and read by
 * whoever opens a new connection to it (endpoint_connect_addr): connections already open stay
 * where they are, as Envoy's logical host keeps them. A mutex, not atomics: it is taken once per
 * new connection (never per request), and the address is bigger than a word. */
struct logical_addr {
    pthread_mutex_t mu;
    struct sock_addr addr; /* len 0 (family AF_UNSPEC): the name has not resolved yet */
    char text[64];         /* addr.text's bytes */
};

struct endpoint_cfg {
    struct sock_addr addr;        /* LOGICAL_DNS: the address at build time (see `logical`) */
    struct logical_addr *logical; /* LOGICAL_DNS: the current address; else NULL */
    uint32_t weight;              /* load_balancing_weight, default 1 */
    struct str hostname;          /* STRICT_DNS: the name it was resolved from, else empty */
    uint32_t priority;            /* LocalityLbEndpoints.priority, 0 (highest) .. 128 */
    /* health_check_config: active checks go to hc_port (0: the traffic port) with hc_host as
     * Host/:authority (empty: the health check's own) */
    uint16_t hc_port;
    struct str hc_host;
};

/* circuit_breakers.thresholds[] for one priority (Envoy's defaults: 1024/1024/1024/3). The
 * limits hold cluster-wide, across all workers (proxy/upstream/breaker.h). */
struct breaker_cfg {
    uint32_t max_connections;
    uint32_t max_pending_requests;
    uint32_t max_requests;
    uint32_t max_retries;           /* ignored when has_budget */
    bool has_budget;                /* retry_budget set: it replaces max_retries */
    double budget_percent;          /* retry_budget.budget_percent, default 20.0 */
    uint32_t min_retry_concurrency; /* retry_budget.min_retry_concurrency, default 3 */
    bool track_remaining;           /* publish circuit_breakers.<prio>.remaining_* gauges */
};

/* What a cluster speaks to its endpoints. */
enum upstream_protocol {
    UPSTREAM_PROTO_HTTP1,      /* HTTP/1.1 (the default) */
    UPSTREAM_PROTO_HTTP2,      /* HTTP/2 with prior knowledge (h2c) */
    UPSTREAM_PROTO_DOWNSTREAM, /* use_downstream_protocol_config: HTTP/2 iff the request came
                                * over HTTP/2 */
};

struct cluster_cfg {
    struct str name;
    uint32_t index; /* position in config.clusters: workers keep per-cluster state by index */
    enum cluster_type type;
    enum lb_policy lb;
    uint64_t connect_timeout_ms;          /* default 5000 */
    uint32_t per_connection_buffer_limit; /* bytes, default 1 MiB */
    uint32_t lr_choice_count;             /* least_request_lb_config.choice_count, default 2 */
    double lr_active_request_bias; /* least_request_lb_config.active_request_bias, default 1.0:
                                    * with unequal weights, an endpoint's effective weight is
                                    * weight / (active_rq + 1)^bias */
    uint64_t hash_lb_size;         /* RING_HASH: minimum_ring_size (default 1024); MAGLEV:
                                    * table_size (default 65537) */
    uint64_t hash_lb_max_size;     /* RING_HASH: maximum_ring_size (default 8M) */
    /* RING_HASH, MAGLEV: the ring or table of each priority, [n_priorities], built at config
     * time in the snapshot arena (NULL for a priority without endpoints); NULL otherwise. */
    const struct lb_hash *const *hash_lb;
    struct breaker_cfg breakers[2]; /* circuit_breakers by priority: [0] DEFAULT, [1] HIGH (HIGH
                                     * is shown by /clusters; no route is HIGH priority yet) */
    uint64_t pool_idle_timeout_ms;  /* common_http_protocol_options.idle_timeout of the cluster's
                                     * HttpProtocolOptions: idle pooled connections close after
                                     * this; default 3600000 (1 h), 0 disables */
    uint64_t max_connection_duration_ms;  /* ..max_connection_duration; 0 (default): none */
    uint32_t max_requests_per_connection; /* ..max_requests_per_connection; 0 (default): none */
    /* The upstream protocol (HttpProtocolOptions' upstream_protocol_options, or the deprecated
     * cluster http2_protocol_options / protocol_selection) and HTTP/2's settings. */
    enum upstream_protocol protocol;
    uint32_t h2_max_concurrent_streams;   /* default 2147483647 */
    uint32_t h2_initial_stream_window;    /* default 268435456 (see upstream_h2.c: what is
                                           * advertised is at most the buffer limit) */
    uint32_t h2_initial_conn_window;      /* default 268435456 */
    uint32_t h2_hpack_table_size;         /* default 4096 */
    struct h2_keepalive_cfg h2_keepalive; /* http2_protocol_options.connection_keepalive (timeout
                                           * 0: off); the ADS client uses it too */
    const struct endpoint_cfg *endpoints;
    uint32_t n_endpoints;
    /* Health and priorities (proxy/upstream/hostset.h, health_check.h, outlier.h). */
    uint32_t n_priorities;            /* 1 + the highest endpoint priority (1 when empty) */
    uint32_t overprovisioning_factor; /* load_assignment.policy, percent, default 140 */
    uint32_t panic_threshold;         /* common_lb_config.healthy_panic_threshold, percent
                                       * (truncated), default 50; 0 disables panic routing */
    const struct health_check_cfg *health_check; /* health_checks[0], or NULL */
    const struct outlier_cfg *outlier;           /* outlier_detection, or NULL */
    /* ORIGINAL_DST: cleanup_interval (default 5000 ms), original_dst_lb_config's header
     * (lower-case; empty unless use_http_header) and upstream_port_override (0: none). */
    uint64_t od_cleanup_ms;
    struct str od_header;
    uint32_t od_port_override;
    /* transport_socket: an UpstreamTlsContext (proxy/config/build_tls.c), or NULL for
     * plaintext (none, or raw_buffer); owned by the snapshot. */
    const struct tls_ctx *tls;
    /* A cluster from CDS (proxy/cds.h): its workers' state, [n_workers], owned by its
     * cds_cluster; a stream finds it here instead of at worker.clusters[index]. NULL for the
     * bootstrap's clusters. */
    struct cluster_rt *dyn_rt;
    /* A bootstrap STRICT_DNS cluster resolved again while remora runs (proxy/cds.h, "bootstrap
     * STRICT_DNS"): its hosts and workers' state are those of its current version, which a
     * stream reaches through this (cds_boot_dns_acquire) instead of worker.clusters[index].
     * Set by main before the workers start; NULL otherwise. */
    struct cds_boot_dns *boot_dns;
    /* EDS: eds_cluster_config's file (eds_config.path_config_source, or .path) and watched
     * directory (or empty), and service_name (default: the cluster's name). The endpoints above
     * are those of the ClusterLoadAssignment this version was built with (proxy/cds.h). */
    struct str eds_path;
    struct str eds_watched_dir;
    struct str eds_service_name;
    /* EDS over ADS (eds_config `ads: {}`; no file): its assignment comes from the ADS client
     * (proxy/xds/ads.h), which subscribes eds_service_name; initial_fetch_timeout bounds how
     * long startup waits for it (0: for ever). */
    bool eds_ads;
    uint64_t eds_initial_fetch_timeout_ms;
    /* STRICT_DNS, LOGICAL_DNS: the distinct hostnames of its endpoints (as written: a name or
     * an IP literal), the lookup family (enum resolver_family, proxy/net/resolver.h, from
     * dns_lookup_family), dns_refresh_rate (default 5000 ms) and dns_failure_refresh_rate
     * (base and max; 0: failures refresh at dns_refresh_rate). The cluster is re-resolved with
     * these (proxy/dns_refresh.h); a bootstrap's is first resolved at build time. */
    const struct str *dns_hosts;
    uint32_t n_dns_hosts;
    /* ...and each lb_endpoint's name and port, in order (the ADS client resolves its cluster's
     * at every connection attempt: proxy/xds/ads.c) */
    const struct cluster_dns_ep *dns_eps;
    uint32_t n_dns_eps;
    uint32_t dns_family;
    uint64_t dns_refresh_ms;
    uint64_t dns_fail_base_ms;
    uint64_t dns_fail_max_ms;
};

/* A STRICT_DNS lb_endpoint as configured: a name (or IP literal) and a port. */
struct cluster_dns_ep {
    struct str host;
    uint16_t port;
};

/* Where a CDS STRICT_DNS cluster's build takes its addresses from (proxy/dns_refresh.h) instead
 * of resolving at build time: the last good answer for `host` of cluster `cluster`, as IP
 * literals, pointed at from out[] (up to `max`; borrowed, valid until the next answer arrives);
 * returns how many (0: none yet, or the name never resolved). Thread: main. */
struct cluster_cfg;
struct config_dns {
    size_t (*answer)(void *ud, const char *cluster, const char *host, const char **out, size_t max);
    /* whether a name of `cc` (its dns_hosts) has had no first lookup back yet (good or failed):
     * a new or modified CDS cluster warms until then (proxy/cds.h). NULL: never. */
    bool (*pending)(void *ud, const struct cluster_cfg *cc);
    void *ud;
};

/* ---- retries (RetryPolicy on a route or virtual host; decisions in proxy/http/retry.h) ---- */
enum {
    RETRY_ON_5XX = 1u << 0,                    /* "5xx": any 5xx, a reset, a connect failure */
    RETRY_ON_GATEWAY_ERROR = 1u << 1,          /* "gateway-error": 502/503/504, resets */
    RETRY_ON_RESET = 1u << 2,                  /* "reset": no response at all */
    RETRY_ON_CONNECT_FAILURE = 1u << 3,        /* "connect-failure" */
    RETRY_ON_RETRIABLE_4XX = 1u << 4,          /* "retriable-4xx": 409 */
    RETRY_ON_REFUSED_STREAM = 1u << 5,         /* "refused-stream": HTTP/2 only, never on H1 */
    RETRY_ON_RETRIABLE_STATUS_CODES = 1u << 6, /* "retriable-status-codes" */
    /* gRPC: the grpc-status in a response's headers (a Trailers-Only response) */
    RETRY_ON_GRPC_CANCELLED = 1u << 7,          /* "cancelled" (1) */
    RETRY_ON_GRPC_DEADLINE_EXCEEDED = 1u << 8,  /* "deadline-exceeded" (4) */
    RETRY_ON_GRPC_RESOURCE_EXHAUSTED = 1u << 9, /* "resource-exhausted" (8) */
    RETRY_ON_GRPC_INTERNAL = 1u << 10,          /* "internal" (13) */
    RETRY_ON_GRPC_UNAVAILABLE = 1u << 11,       /* "unavailable" (14) */
};
#define RETRY_ON_GRPC_ANY                                                                          \
    (RETRY_ON_GRPC_CANCELLED | RETRY_ON_GRPC_DEADLINE_EXCEEDED |                                   \
     RETRY_ON_GRPC_RESOURCE_EXHAUSTED | RETRY_ON_GRPC_INTERNAL | RETRY_ON_GRPC_UNAVAILABLE)

struct retry_policy {
    uint32_t retry_on;                /* RETRY_ON_* */
    uint32_t num_retries;             /* default 1 */
    uint64_t per_try_timeout_ms;      /* 0: none (the route timeout bounds every try) */
    uint64_t per_try_idle_timeout_ms; /* 0: none */
    const uint32_t *retriable_status_codes;
    uint32_t n_retriable_status_codes;
    uint64_t backoff_base_ms;             /* retry_back_off.base_interval, default 25 */
    uint64_t backoff_max_ms;              /* retry_back_off.max_interval, default 10 x base */
    bool previous_hosts;                  /* retry_host_predicate previous_hosts */
    uint32_t host_selection_max_attempts; /* host_selection_retry_max_attempts, default 1 */
};

/* ---- routes ---- */
enum route_match_kind {
    RM_PREFIX,
    RM_PATH,
    RM_REGEX, /* safe_regex: a full match of the path without its query string */
};

/* How a RA_CLUSTER route names its cluster (RouteAction.cluster_specifier). */
enum route_cluster_kind {
    RCK_CLUSTER,  /* cluster: route_cfg.cluster */
    RCK_HEADER,   /* cluster_header: the cluster named by a request header */
    RCK_WEIGHTED, /* weighted_clusters: a weighted random choice */
};

/* One entry of weighted_clusters.clusters. */
struct weighted_cluster {
    const struct cluster_cfg *cluster; /* borrowed from the same snapshot */
    uint32_t weight;                   /* may be 0: never chosen */
    uint64_t cum_weight;               /* sum of the weights up to and including this one */
    struct header_edits request_edits; /* applied before the route's (Envoy's order) */
    struct header_edits response_edits;
};

/* RouteAction.hash_policy entries: how a request's key for RING_HASH/MAGLEV is made. */
enum hash_policy_kind {
    HP_HEADER,    /* header.header_name: XXH64 of the header's values (sorted, chained) */
    HP_COOKIE,    /* cookie.name: XXH64 of the cookie's value */
    HP_SOURCE_IP, /* connection_properties.source_ip: XXH64 of the peer IP text */
    HP_QUERY,     /* query_parameter.name: XXH64 of the parameter's first value */
};

struct hash_policy {
    enum hash_policy_kind kind;
    struct str name; /* header (lower case), cookie or query parameter name */
    bool terminal;   /* stop at this policy when a key has been made */
};

enum route_action_kind {
    RA_CLUSTER,
    RA_DIRECT_RESPONSE,
};

struct route_cfg {
    struct str name;
    enum route_match_kind match_kind;
    struct str match;    /* the prefix or path */
    bool case_sensitive; /* default true */
    const struct header_matcher *headers;
    uint32_t n_headers;
    const struct regex *path_regex; /* RM_REGEX: owned by the snapshot (freed by its cleanups) */
    /* query_parameters: name is the parameter (case-sensitive); kind HM_EXACT..HM_REGEX from
     * string_match, or HM_PRESENT (present_match, or no specifier: "present"). */
    const struct header_matcher *query;
    uint32_t n_query;
    bool match_grpc; /* match.grpc: only gRPC requests (content-type application/grpc...) */

    enum route_action_kind action;
    enum route_cluster_kind cluster_kind;    /* RA_CLUSTER */
    const struct cluster_cfg *cluster;       /* RCK_CLUSTER: borrowed from the same snapshot */
    struct str cluster_header;               /* RCK_HEADER: the header's name, lower case */
    const struct cluster_map *clusters;      /* RCK_HEADER: the snapshot's clusters by name */
    const struct weighted_cluster *weighted; /* RCK_WEIGHTED: [n_weighted], in the arena */
    uint32_t n_weighted;
    uint64_t total_weight;             /* RCK_WEIGHTED: sum of the weights, > 0 */
    uint32_t cluster_not_found_status; /* 503 (default) or 404: RCK_HEADER with no such cluster */
    const struct hash_policy *hash_policies; /* [n_hash_policies], in order */
    uint32_t n_hash_policies;
    const struct regex *regex_rewrite; /* regex_rewrite.pattern, or NULL; owned by the snapshot */
    struct str regex_substitution;     /* regex_rewrite.substitution (RE2 \N references) */
    uint32_t direct_status;            /* RA_DIRECT_RESPONSE */
    struct str direct_body;            /* RA_DIRECT_RESPONSE; may be empty */
    bool has_prefix_rewrite;
    struct str prefix_rewrite;
    struct str host_rewrite;           /* host_rewrite_literal; empty when unset */
    uint64_t timeout_ms;               /* route.timeout, default 15000; 0 disables */
    struct str timeout_text;           /* timeout_ms in decimal (x-envoy-expected-rq-timeout-ms) */
    bool has_idle_timeout;             /* route.idle_timeout set: it replaces stream_idle_timeout */
    uint64_t idle_timeout_ms;          /* 0 disables the stream idle timeout for this route */
    const struct retry_policy *retry;  /* route.retry_policy, or NULL (then the vhost's) */
    uint32_t per_request_buffer_limit; /* per_request_buffer_limit_bytes; UINT32_MAX: unset.
                                        * Retries buffer min(this or the vhost's, listener's
                                        * per_connection_buffer_limit_bytes) request bytes */
    struct header_edits request_edits;
    struct header_edits response_edits;
    /* typed_per_filter_config, by position in the connection manager's filter chain
     * ([hcm->n_filters], NULL entries where not set), or NULL when none is set (filter.h). */
    const void *const *filter_cfgs;
    const void *cors_policy; /* the deprecated `cors` (filters/cors/cors.h), or NULL */
    /* route.max_stream_duration (Envoy's "new" timeouts): when set, the route `timeout` does
     * not apply; the stream's duration limit is max_stream_duration (0: none; unset: the
     * HCM's), or for a gRPC request with a grpc-timeout header and grpc_timeout_header_max set,
     * that header (capped by the max unless it is 0) minus grpc_timeout_header_offset. */
    bool has_max_stream_duration;
    bool has_msd_duration;       /* max_stream_duration.max_stream_duration set */
    uint64_t msd_duration_ms;    /* 0: no limit */
    bool has_grpc_header_max;    /* max_stream_duration.grpc_timeout_header_max set */
    uint64_t grpc_header_max_ms; /* 0: the header as is */
    uint64_t grpc_header_offset_ms;
    /* Deprecated max_grpc_timeout / grpc_timeout_offset (without max_stream_duration): a gRPC
     * request's route timeout is its grpc-timeout (absent: infinite) minus the offset (when
     * the offset is smaller), capped by max_grpc_timeout unless that is 0. */
    bool has_max_grpc_timeout;
    uint64_t max_grpc_timeout_ms;
    uint64_t grpc_timeout_offset_ms; /* 0: none */
};

struct vhost_cfg {
    struct str name;
    /* domains, split by form; all lower case */
    const struct str *exact;
    uint32_t n_exact;
    const struct str *suffixes; /* "*.foo.com" stored as ".foo.com"; "*foo" as "foo" */
    uint32_t n_suffixes;
    const struct str *prefixes; /* "foo.*" stored as "foo." */
    uint32_t n_prefixes;
    bool is_wildcard; /* has "*" */
    const struct route_cfg *routes;
    uint32_t n_routes;
    struct header_edits request_edits;
    struct header_edits response_edits;
    /* typed_per_filter_config, as in route_cfg */
    const void *const *filter_cfgs;
    const void *cors_policy;            /* the deprecated `cors` (filters/cors/cors.h), or NULL */
    const struct retry_policy *retry;   /* retry_policy for routes without their own, or NULL */
    uint32_t per_request_buffer_limit;  /* per_request_buffer_limit_bytes; UINT32_MAX: unset */
    bool include_request_attempt_count; /* x-envoy-attempt-count upstream */
    bool include_attempt_count_in_response; /* x-envoy-attempt-count downstream */
    bool include_is_timeout_retry_header;   /* x-envoy-is-timeout-retry on retries */
};

struct route_table {
    struct str name;
    const struct vhost_cfg *vhosts;
    uint32_t n_vhosts;
    struct header_edits request_edits;
    struct header_edits response_edits;
};

/* ---- listeners ---- */
enum codec_type {
    CODEC_AUTO, /* HTTP/2 when the connection starts with its preface, else HTTP/1 */
    CODEC_HTTP1,
    CODEC_HTTP2, /* h2c with prior knowledge (no TLS/ALPN yet) */
};

struct al_json_in;
struct al_filter;

struct access_log_cfg {
    struct str path;   /* "/dev/stdout" for stdout sinks */
    struct str format; /* empty: Envoy's default format (when json is NULL) */
    /* json_format (a format dictionary, proxy/http/access_log.h): [n_json] in the arena, or
     * NULL for a text format; json_typed for SubstitutionFormatString's (Envoy's value types) */
    const struct al_json_in *json;
    uint32_t n_json;
    bool json_typed;
    const struct al_filter *filter; /* in the arena: the AccessLog's filter, or NULL (all) */
};

/* forward_client_cert_details: what becomes of x-forwarded-client-cert (Envoy's modes). */
enum xfcc_mode {
    XFCC_SANITIZE,            /* removed (the default) */
    XFCC_FORWARD_ONLY,        /* kept as it came over mTLS, else removed */
    XFCC_APPEND_FORWARD,      /* over mTLS: kept, and this hop's element appended */
    XFCC_SANITIZE_SET,        /* over mTLS: replaced by this hop's element */
    XFCC_ALWAYS_FORWARD_ONLY, /* kept as it came, whatever the connection */
};

/* set_current_client_cert_details: the optional keys of the element (By and Hash always). */
enum {
    XFCC_CERT = 1u << 0,
    XFCC_CHAIN = 1u << 1,
    XFCC_SUBJECT = 1u << 2,
    XFCC_URI = 1u << 3,
    XFCC_DNS = 1u << 4,
};

struct hcm_cfg {
    struct str stat_prefix;
    /* `tracing` (proxy/tracing/tracing.h), or NULL: not traced (one branch per request) */
    const struct hcm_tracing *tracing;
    enum codec_type codec;
    /* route_config, or with `rds` the table loaded at startup. With `rds` a worker may route on a
     * newer table (worker_routes_acquire(), proxy/worker.h): never read this one directly. */
    const struct route_table *routes;
    bool has_rds;                     /* routes come from RDS (config.rds[rds_index]) */
    uint32_t rds_index;               /* with has_rds */
    const struct filter_cfg *filters; /* http_filters before the router, in order (filter.h) */
    uint32_t n_filters;
    const struct access_log_cfg *access_logs;
    uint32_t n_access_logs;
    uint32_t max_request_headers_kb;     /* default 60 */
    uint32_t max_request_headers_count;  /* common_http_protocol_options.max_headers_count, 100 */
    uint64_t idle_timeout_ms;            /* connection idle, default 3600000; 0 disables */
    uint64_t stream_idle_timeout_ms;     /* default 300000; 0 disables */
    uint64_t request_timeout_ms;         /* default 0 (disabled) */
    uint64_t request_headers_timeout_ms; /* default 0 (disabled) */
    uint64_t max_stream_duration_ms;     /* common_http_protocol_options.max_stream_duration;
                                          * default 0 (none) */
    bool use_remote_address;             /* default false (stream.c: forward_headers) */
    bool generate_request_id;            /* default true: add x-request-id when absent */
    uint32_t xff_num_trusted_hops;       /* default 0 */
    bool skip_xff_append;                /* default false */
    /* forward_client_cert_details (x-forwarded-client-cert, stream.c: forward_headers) and
     * set_current_client_cert_details (XFCC_* bits: what an appended element carries) */
    enum xfcc_mode xfcc;
    unsigned xfcc_details;
    bool h1_enable_trailers; /* http_protocol_options.enable_trailers: response trailers to
                              * HTTP/1.1 clients in a chunked body (default false: dropped) */
    /* the router's, default false: none of x-envoy-expected-rq-timeout-ms and
     * x-envoy-original-path upstream, x-envoy-upstream-service-time and x-envoy-overloaded
     * downstream */
    bool suppress_envoy_headers;
    /* normalize_path (default false: Envoy's runtime key http_connection_manager.normalize_path,
     * false by default, decides when unset; remora has no runtime, so unset is false),
     * merge_slashes and path_with_escaped_slashes_action (IMPLEMENTATION_SPECIFIC_DEFAULT is
     * KEEP_UNCHANGED): proxy/http/path_norm.h, applied in stream_request_head */
    struct path_norm_opts path_norm;
    /* http2_protocol_options (downstream HTTP/2), Envoy's current defaults */
    uint32_t h2_max_concurrent_streams; /* default 1024 */
    uint32_t h2_initial_stream_window;  /* default 16 MiB */
    uint32_t h2_initial_conn_window;    /* default 24 MiB */
    uint32_t h2_hpack_table_size;       /* default 4096 */
    /* flood limits (Envoy's names, without the prefix; see proxy/http/h2_guard.h) */
    uint32_t h2_max_outbound_frames;         /* default 10000 */
    uint32_t h2_max_outbound_control_frames; /* default 1000 (PING, SETTINGS, RST_STREAM) */
    uint32_t h2_max_empty_frames;        /* max_consecutive_inbound_frames_with_empty_payload, 1 */
    uint32_t h2_max_priority_per_stream; /* max_inbound_priority_frames_per_stream, 100 */
    uint32_t h2_max_wu_per_data_sent; /* max_inbound_window_update_frames_per_data_frame_sent, 10 */
    bool h2_stream_error_on_invalid;  /* default false: an invalid HEADERS ends the connection */
    struct h2_keepalive_cfg h2_keepalive; /* connection_keepalive (timeout 0: off) */
    uint64_t drain_timeout_ms;            /* HTTP/2 drain: notice to final GOAWAY, default 5000 */
};

/* envoy.filters.network.tcp_proxy: bytes both ways to a cluster (or a weighted choice). */
struct tcp_cluster_weight {
    const struct cluster_cfg *cluster; /* borrowed from the same snapshot; NULL: a CDS cluster */
    struct str name;     /* with a cds_config, a name the bootstrap does not hold is looked up in
                          * the current CDS clusters at connection time (worker_cds_find) */
    uint64_t cum_weight; /* running sum up to and including this entry */
};

struct tcp_proxy_cfg {
    struct str stat_prefix;
    const struct tcp_cluster_weight *clusters; /* one entry for `cluster`, else weighted */
    uint32_t n_clusters;
    uint64_t total_weight;
    uint64_t idle_timeout_ms;      /* default 3600000; 0 disables */
    uint32_t max_connect_attempts; /* default 1 */
    const struct access_log_cfg *access_logs;
    uint32_t n_access_logs;
};

/* One filter chain of a listener: its network filter and the connections it takes. */
struct filter_chain_cfg {
    struct str name;                     /* FilterChain.name, or "" */
    uint32_t index;                      /* position in config.chains: a worker's stats
                                          * (hcm[], tcp[]) and access logs are by chain */
    const struct listener_cfg *listener; /* its listener, in the same snapshot */
    const struct hcm_cfg *hcm;           /* HTTP, or NULL */
    const struct tcp_proxy_cfg *tcp;     /* TCP (exactly one of hcm and tcp is set) */
    /* envoy.filters.network.rbac filters before hcm/tcp, in order (filters/rbac/rbac_network.h):
     * checked on the connection's first bytes */
    const struct rbac_net_cfg *const *rbac;
    uint32_t n_rbac;
    bool wants_local; /* an access log uses %DOWNSTREAM_LOCAL_*% */
    /* transport_socket: a DownstreamTlsContext (proxy/config/build_tls.c), or NULL for
     * plaintext (none, or raw_buffer); owned by the snapshot. */
    const struct tls_ctx *tls;
    /* transport_socket_connect_timeout: the TLS handshake must finish within it; 0 (the
     * default, as Envoy): no limit. */
    uint64_t handshake_timeout_ms;
};

struct listener_cfg {
    struct str name;
    uint32_t index;
    struct sock_addr addr;
    /* socket_address.ipv4_compat: an IPv6 address's socket takes IPv4 connections too (Envoy's
     * IPV6_V6ONLY off); without it an IPv6 listener is IPv6 only, as Envoy's */
    bool ipv4_compat;
    struct str stat_name;                 /* "127.0.0.1_10000": Envoy's listener.<addr>. prefix */
    uint32_t per_connection_buffer_limit; /* default 1 MiB */
    /* filter_chains then, last, default_filter_chain (if any): consecutive in config.chains */
    const struct filter_chain_cfg *chains;
    uint32_t n_chains;                 /* filter_chains, default chain not counted */
    bool has_default;                  /* chains[n_chains] is the default_filter_chain */
    const struct chain_match *matches; /* [n_chains]: each chain's filter_chain_match */
    bool select;       /* a chain must be chosen per connection (more than one chain,
                        * or criteria that could miss) */
    bool original_dst; /* the envoy.filters.listener.original_dst listener filter */
    bool wants_local;  /* accept must learn the local (or original) address: for
                        * the selection or some chain's access log */
    /* the envoy.filters.listener.tls_inspector listener filter; listener_filters_timeout
     * (default 15 s, 0: none) and continue_on_listener_filters_timeout */
    bool tls_inspector;
    bool continue_on_filters_timeout;
    uint64_t filters_timeout_ms;
    /* the envoy.filters.listener.proxy_protocol listener filter (proxy_protocol.h): its
     * allow_requests_without_proxy_protocol, and the versions not in disallowed_versions */
    bool proxy_protocol;
    bool pp_allow_without;
    uint8_t pp_versions; /* PP_V1 | PP_V2 */
    /* drain_type MODIFY_ONLY: not drained while the server fails health checks (Envoy's
     * DrainManagerImpl::drainClose); graceful drains and LDS changes drain it as DEFAULT */
    bool drain_modify_only;
    /* traffic_direction INBOUND: /drain_listeners?inboundonly drains and stops only these */
    bool inbound;
};

/* The access logs of filter chain `fc`, whichever kind it is. */
static inline uint32_t chain_n_access_logs(const struct filter_chain_cfg *fc)
{
    return fc->hcm != NULL ? fc->hcm->n_access_logs : fc->tcp->n_access_logs;
}

static inline const struct access_log_cfg *chain_access_logs(const struct filter_chain_cfg *fc)
{
    return fc->hcm != NULL ? fc->hcm->access_logs : fc->tcp->access_logs;
}

/* ---- stats declared by HTTP filters ---- */

/* One counter or gauge a filter declared while its config was built (filter_build_stat()).
 * Workers keep their values in stats_block.ext, indexed like config.stat_defs; its full name is
 * "<scope>.<tag>.<stat>" ("http.ingress.fault.aborts_injected"), or "<scope>.<stat>" when
 * `tag` is empty ("rl.http_local_rate_limit.ok"). Two filters declaring the same name share it,
 * as Envoy's stats scopes do. All strings live in the snapshot arena. */
struct stat_def {
    const char *scope;    /* "http", or a filter's own stat_prefix */
    const char *tag_name; /* Prometheus label for `tag` ("envoy_http_conn_manager_prefix"), or
                           * NULL */
    struct str tag;       /* may be empty */
    const char *stat;     /* "fault.aborts_injected" */
    bool is_gauge;
};

/* ---- RDS from a file (HttpConnectionManager.rds with a filesystem config source) ---- */

/* One RDS subscription: a connection manager's `rds`. Main watches `path` (proxy/reload.h) and
 * publishes each accepted RouteConfiguration to the workers. All strings in the snapshot arena. */
struct rds_cfg {
    struct str route_config_name;
    /* config_source.ads: the routes come over ADS (proxy/xds/ads.h; config.ads is set), and
     * until the first one arrives the connection manager routes on an empty table (404 NR).
     * initial_fetch_timeout (default 15 s; 0: wait for ever) bounds how long startup waits. */
    bool ads;
    uint64_t initial_fetch_timeout_ms;
    struct str path;           /* config_source.path_config_source.path (or config_source.path) */
    struct str watched_dir;    /* path_config_source.watched_directory.path, or empty */
    const struct hcm_cfg *hcm; /* borrowed from the same snapshot: the subscriber */
    struct str version_info;   /* of the file as loaded at startup */
    uint64_t content_hash;     /* XXH64 of the RouteConfiguration loaded at startup (packed) */
    const void *pb;            /* that RouteConfiguration message (owned), for /config_dump */
};

/* ---- the ADS client (dynamic_resources.ads_config; proxy/xds/ads.h) ---- */

/* One gRPC initial_metadata entry: sent as a header on the ADS stream. */
struct ads_header {
    struct str key; /* lower case */
    struct str value;
};

struct ads_cfg {
    struct str cluster_name;           /* grpc_services[0].envoy_grpc.cluster_name */
    const struct cluster_cfg *cluster; /* that static cluster (HTTP/2; cluster->tls: TLS) */
    struct str authority;              /* envoy_grpc.authority, default the cluster's name */
    const struct ads_header *headers;  /* grpc_services[0].initial_metadata */
    uint32_t n_headers;
    bool set_node_on_first_message_only;
};

/* ---- SDS from a file (SdsSecretConfig with a filesystem sds_config) ---- */

/* One SDS subscription: a (file, secret name) pair, shared by every TLS context that names it
 * (proxy/config/sds.h). Main watches `path` (proxy/reload.h) and applies each accepted secret
 * to every user. All strings in the snapshot arena. */
struct sds_cfg {
    struct str name;        /* SdsSecretConfig.name: the Secret picked out of the file */
    struct str path;        /* sds_config.path_config_source.path (or sds_config.path) */
    struct str watched_dir; /* path_config_source.watched_directory.path, or empty */
    bool validation;        /* used as validation_context_sds_secret_config (else a certificate) */
    const struct tls_ctx **users; /* [n_users]: the contexts to update */
    uint32_t n_users;
    struct str version_info; /* of the file as loaded at startup */
    uint32_t resource_index; /* the Secret's position in the file's resources, at startup */
    const void *pb;          /* the Secret loaded at startup (owned), for /config_dump */
    /* sds_config `ads: {}`: the secret comes from the ADS client (proxy/xds/ads.h), one
     * subscription per name (path, watched_dir and version_info empty, pb NULL: nothing is
     * loaded at startup); startup waits for it up to initial_fetch_timeout (0: for ever). */
    bool ads;
    uint64_t initial_fetch_timeout_ms;
    /* ADS, in a dynamic container (config.dynamic): the generation of the name's shared secret
     * (proxy/sds_set.h) its users were given; main-only, written by proxy/reload.c */
    uint64_t seen;
};

/* ---- the snapshot ---- */

/* Something a snapshot owns outside its arena (a compiled regex: PCRE2 allocates its code and
 * JIT memory itself). The node lives in the arena; the last config_unref runs `fn(arg)`,
 * newest first, before freeing the arena. */
struct config_cleanup {
    void (*fn)(void *arg);
    void *arg; /* owned by the snapshot until fn runs */
    struct config_cleanup *next;
};

/* ---- stats sinks and tags (the bootstrap's stats_sinks, stats_flush_interval, stats_config;
 * built by proxy/config/build_stats.c, used by proxy/stats/sink.h and tags.h) ---- */
enum stats_sink_kind {
    STATS_SINK_STATSD,     /* envoy.stat_sinks.statsd: full names, no tags */
    STATS_SINK_DOG_STATSD, /* envoy.stat_sinks.dog_statsd: tag-extracted names, |#tags */
};

struct stats_sink_cfg {
    enum stats_sink_kind kind;
    bool is_pipe;          /* address.pipe: a Unix datagram socket at pipe_path */
    struct sock_addr addr; /* address.socket_address: an IP literal (UDP) */
    struct str pipe_path;
    struct str prefix;               /* default "envoy" */
    uint64_t max_bytes_per_datagram; /* 0: one line per datagram (Envoy's default) */
};

/* A stats_config.stats_tags entry: fixed_value (a tag on every stat) or a regex (PCRE2;
 * compiled again by proxy/stats/tags.c, checked here). An entry naming a default tag without
 * either gets that default's regex. */
struct stats_tag_cfg {
    struct str name;
    bool is_fixed; /* fixed_value set (it may be empty) */
    struct str fixed_value;
    struct str regex;
};

struct config {
    _Atomic uint32_t refs;
    uint64_t version;
    struct arena arena; /* owns every byte reachable from here */

    struct str node_id;
    struct str node_cluster;
    bool has_admin;
    struct sock_addr admin_addr;
    struct str admin_access_log_path;

    const struct listener_cfg *listeners;
    uint32_t n_listeners;
    const struct filter_chain_cfg *chains; /* every listener's chains, listener by listener */
    uint32_t n_chains;
    const struct cluster_cfg *clusters;
    uint32_t n_clusters;
    const struct cluster_map *cluster_map; /* clusters by name, for cluster_header routes */
    const struct rds_cfg *rds;             /* [n_rds]: RDS subscriptions, by hcm_cfg.rds_index */
    uint32_t n_rds;
    const struct sds_cfg *sds; /* [n_sds]: SDS subscriptions (file, secret name) */
    uint32_t n_sds;
    const struct ads_cfg *ads; /* dynamic_resources.ads_config, or NULL */
    /* dynamic_resources.cds_config: the file of Cluster resources (proxy/cds.h), and its
     * path_config_source.watched_directory (or empty) */
    bool has_cds;
    bool tcp_cds; /* a tcp_proxy names a cluster by name only (tcp_cluster_weight.name):
                   * main publishes the CDS set to the workers (worker_cds_publish) */
    struct str cds_path;
    struct str cds_watched_dir;
    /* cds_config `ads: {}`: clusters from the ADS client (wildcard subscription; no file), and
     * its initial_fetch_timeout (default 15 s; 0: wait for ever) */
    bool cds_ads;
    uint64_t cds_initial_fetch_timeout_ms;
    /* dynamic_resources.lds_config (proxy/lds.h): a file of Listener resources, or `ads: {}`
     * (a wildcard subscription on the ADS stream) with its initial_fetch_timeout */
    bool has_lds;
    bool lds_ads;
    struct str lds_path;
    struct str lds_watched_dir;
    uint64_t lds_initial_fetch_timeout_ms;
    /* the container of one LDS listener or one CDS cluster (proxy/lds.h, proxy/cds.h), not a
     * bootstrap: its SDS secrets come over ADS only, shared by name (proxy/sds_set.h) */
    bool dynamic;
    /* A CDS container (build_cluster): STRICT_DNS addresses come from here instead of a lookup
     * (borrowed from the cds; NULL: resolve now, as the bootstrap does) */
    const struct config_dns *dns;
    struct config_cleanup *cleanups; /* run by the last config_unref */

    /* stats_sinks (flushed every stats_flush_interval_ms, default 5000, by main) and
     * stats_config (use_all_default_tags defaults to true) */
    const struct stats_sink_cfg *stats_sinks;
    uint32_t n_stats_sinks;
    uint64_t stats_flush_interval_ms;
    const struct stats_tag_cfg *stats_tags;
    uint32_t n_stats_tags;
    bool use_all_default_tags;

    /* HTTP filters: stats they declared, and the number of chain entries in all connection
     * managers (each has a `slot` for its per-worker state; filter.h). */
    const struct stat_def *stat_defs;
    uint32_t n_stat_defs;
    uint32_t n_filter_slots;

    /* tracing.http: the provider of connection managers whose `tracing` names none (Envoy
     * v3's bootstrap-level tracer), or NULL; an LDS container borrows its bootstrap's */
    const struct tracer_cfg *tracer;

    /* The Bootstrap as parsed (a protobuf-c message, owned, in its own allocation), kept for
     * /config_dump. NULL for configs built without one (unit tests). */
    void *bootstrap_pb;
};

/* The address a new connection to `ep` goes to: ep->addr, or for a LOGICAL_DNS host a copy of
 * its current address in `tmp` (family AF_UNSPEC before its name first resolved: socket()
 * fails, a connect failure). Thread-safe. */
const struct sock_addr *endpoint_connect_addr(const struct endpoint_cfg *ep, struct sock_addr *tmp);

/* Whether `ep` has an address: always, but for a LOGICAL_DNS host whose name has not resolved
 * yet (Envoy has no host then: a pick of it is "no healthy upstream", 503 UH). Thread-safe. */
bool endpoint_resolved(const struct endpoint_cfg *ep);

/* The address `ep` shows (/clusters): ep->addr.text, or for a LOGICAL_DNS host its current
 * address copied into buf[cap] (empty before its name first resolved). Thread-safe. */
struct str endpoint_addr_text(const struct endpoint_cfg *ep, char *buf, size_t cap);

/* Main: a LOGICAL_DNS host's address becomes `ip` (an IPv4 or IPv6 literal) and `port`. False
 * when `ip` is not a literal (nothing changes). */
bool logical_addr_set(struct logical_addr *la, const char *ip, uint16_t port);

/* Takes a reference. Thread-safe. */
void config_ref(const struct config *c);

/* Drops a reference; the last one frees the snapshot. Thread-safe. */
void config_unref(const struct config *c);

/* Finds a cluster by name (config time and admin only; never on the request path): in
 * c->cluster_map once built, which for an RDS container includes CDS clusters. */
const struct cluster_cfg *config_find_cluster(const struct config *c, struct str name);

/* Registers `fn(arg)` to run when `c` is freed (see struct config_cleanup). Config build time
 * only, on the thread building `c`. */
void config_on_free(struct config *c, void (*fn)(void *arg), void *arg);
