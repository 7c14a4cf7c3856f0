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
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"

struct regex; /* later: PCRE2 */

/* ---- addresses ---- */
struct sock_addr {
    struct sockaddr_storage ss;
    socklen_t len;
    struct str text; /* "127.0.0.1:8080" or "[::1]:8080", for logs and stats */
};

/* ---- header matching and mutation (RouteMatch.headers, *_headers_to_add) ---- */
enum header_match_kind {
    HM_EXACT,    /* string_match.exact or exact_match */
    HM_PREFIX,   /* string_match.prefix or prefix_match */
    HM_SUFFIX,   /* string_match.suffix or suffix_match */
    HM_CONTAINS, /* string_match.contains or contains_match */
    HM_PRESENT,  /* present_match: true means "present", false means "absent" */
};

struct header_matcher {
    struct str name; /* lower case */
    enum header_match_kind kind;
    struct str value;   /* for the string kinds */
    bool ignore_case;   /* string_match.ignore_case */
    bool present_value; /* for HM_PRESENT */
    bool invert;        /* invert_match */
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
};

enum lb_policy {
    LB_ROUND_ROBIN,
    LB_LEAST_REQUEST,
    LB_RANDOM,
};

struct endpoint_cfg {
    struct sock_addr addr;
    uint32_t weight;     /* load_balancing_weight, default 1 */
    struct str hostname; /* STRICT_DNS: the name it was resolved from, else empty */
};

struct cluster_cfg {
    struct str name;
    uint32_t index; /* position in config.clusters: workers keep per-cluster state by index */
    enum cluster_type type;
    enum lb_policy lb;
    uint64_t connect_timeout_ms;          /* default 5000 */
    uint32_t per_connection_buffer_limit; /* bytes, default 1 MiB */
    uint32_t lr_choice_count;             /* least_request_lb_config.choice_count, default 2 */
    const struct endpoint_cfg *endpoints;
    uint32_t n_endpoints;
    uint64_t hash; /* of everything above: an unchanged cluster keeps its pools on a swap */
};

/* ---- routes ---- */
enum route_match_kind {
    RM_PREFIX,
    RM_PATH,
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

    enum route_action_kind action;
    const struct cluster_cfg *cluster; /* RA_CLUSTER: borrowed from the same snapshot */
    uint32_t direct_status;            /* RA_DIRECT_RESPONSE */
    struct str direct_body;            /* RA_DIRECT_RESPONSE; may be empty */
    bool has_prefix_rewrite;
    struct str prefix_rewrite;
    struct str host_rewrite; /* host_rewrite_literal; empty when unset */
    uint64_t timeout_ms;     /* route.timeout, default 15000; 0 disables */
    struct header_edits request_edits;
    struct header_edits response_edits;
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
    CODEC_AUTO,
    CODEC_HTTP1,
};

struct access_log_cfg {
    struct str path;   /* "/dev/stdout" for stdout sinks */
    struct str format; /* empty: Envoy's default format */
};

struct hcm_cfg {
    struct str stat_prefix;
    enum codec_type codec;
    const struct route_table *routes;
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
    bool use_remote_address;             /* default false: trust x-forwarded-for */
    bool generate_request_id;            /* default true: add x-request-id when absent */
    uint32_t xff_num_trusted_hops;       /* default 0 */
};

struct listener_cfg {
    struct str name;
    uint32_t index;
    struct sock_addr addr;
    struct str stat_name;                 /* "127.0.0.1_10000": Envoy's listener.<addr>. prefix */
    uint32_t per_connection_buffer_limit; /* default 1 MiB */
    const struct hcm_cfg *hcm;
};

/* ---- the snapshot ---- */
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
    const struct cluster_cfg *clusters;
    uint32_t n_clusters;

    /* The Bootstrap as parsed (a protobuf-c message, owned, in its own allocation), kept for
     * /config_dump. NULL for configs built without one (unit tests). */
    void *bootstrap_pb;
};

/* Takes a reference. Thread-safe. */
void config_ref(const struct config *c);

/* Drops a reference; the last one frees the snapshot. Thread-safe. */
void config_unref(const struct config *c);

/* Finds a cluster by name (config time and admin only; never on the request path). */
const struct cluster_cfg *config_find_cluster(const struct config *c, struct str name);
