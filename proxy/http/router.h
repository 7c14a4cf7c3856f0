/* router: route matching over a compiled route table. Pure functions of the config and the
 * request: no allocation, no I/O, no lookups by name (except cluster_header's, in a hash table
 * built at config time). Virtual hosts are chosen as Envoy does
 * (exact domain, then the longest `*suffix`, then the longest `prefix*`, then `*`; the Host is
 * compared whole, port included, case-insensitively), then the vhost's routes are tried in
 * order and the first match wins. Thread: any. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct route_table;
struct vhost_cfg;
struct route_cfg;
struct header_matcher;
struct headers;
struct cluster_cfg;
struct weighted_cluster;
struct arena;

/* The request as the router sees it. Pseudo-headers (":method", ":path", ":authority",
 * ":scheme") in header matchers are answered from these fields. */
struct route_req {
    struct str method;
    struct str path;      /* :path, query string included */
    struct str authority; /* Host / :authority */
    struct str scheme;    /* "http" */
    const struct headers *headers;
    bool grpc;            /* content-type is gRPC's (the stream's header pass found it), for
                           * match.grpc */
    struct str source_ip; /* the downstream peer's address text ("10.0.0.1"), for hash_policy
                           * connection_properties; may be empty */
    struct arena *arena;  /* borrowed (the stream's): where a header matcher joins the values of
                           * a repeated header with ',' as Envoy matches them; NULL: the first
                           * value only */
};

/* Selects the virtual host for `authority`, or NULL. */
const struct vhost_cfg *router_select_vhost(const struct route_table *t, struct str authority);

/* Returns the first route of `vh` matching `r`, or NULL. */
const struct route_cfg *router_match_route(const struct vhost_cfg *vh, const struct route_req *r);

/* True when every one of the `n` matchers `m` matches `r` (a route's `headers` rule; also used
 * by HTTP filters that take HeaderMatchers, such as the fault filter). */
bool router_headers_match(const struct header_matcher *m, uint32_t n, const struct route_req *r);

/* The cluster a RA_CLUSTER route `rt` sends `r` to: its `cluster`; for cluster_header, the
 * cluster named by that request header (NULL when the header is absent or names no cluster:
 * answer rt->cluster_not_found_status with flag NC); for weighted_clusters, a choice in
 * proportion to the weights using `rnd` (a fresh random value, from worker_rand), with
 * `*wc_out` set to the chosen entry (its header edits apply). `*wc_out` is NULL otherwise. */
const struct cluster_cfg *router_pick_cluster(const struct route_cfg *rt, const struct route_req *r,
                                              uint64_t rnd, const struct weighted_cluster **wc_out);

/* The weighted_clusters entry for a draw of `x` in [0, total_weight): the first entry whose
 * cumulative weight is above `x` (binary search; entries of weight 0 are never chosen). */
const struct weighted_cluster *router_weighted_pick(const struct weighted_cluster *w, uint32_t n,
                                                    uint64_t x);

/* The request's key for RING_HASH/MAGLEV clusters from `rt`'s hash_policy list, as Envoy makes
 * it: each policy that yields a hash is combined with the ones before (rotate left by one,
 * xor), and a `terminal` policy that yielded one ends the list. Returns false, leaving `*out`
 * alone, when the route has no policies or none yielded a hash (the balancer then picks at
 * random). */
bool router_hash_key(const struct route_cfg *rt, const struct route_req *r, uint64_t *out);

/* `path` after `rt`'s regex_rewrite (rt->regex_rewrite must be set): every match in the path
 * without its query string is replaced (RE2::GlobalReplace), the query string is kept. Returns
 * `path` itself when nothing matched, else a new string in `a`. */
struct str router_regex_rewrite(const struct route_cfg *rt, struct str path, struct arena *a);

/* Both steps; `*vh_out` gets the vhost (or NULL). */
const struct route_cfg *router_route(const struct route_table *t, const struct route_req *r,
                                     const struct vhost_cfg **vh_out);
