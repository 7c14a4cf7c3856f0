/* build: turns an Envoy v3 Bootstrap (YAML or JSON text, or a decoded protobuf-c message) into
 * a validated, compiled `struct config` snapshot. All or nothing: on any error it returns NULL
 * with a field-path message in `err`, e.g.
 * "static_resources.clusters[1].lb_polcy: unknown field" or
 * "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.
 *  virtual_hosts[0].routes[2].route.cluster: unknown cluster 'foo'".
 *
 * Three passes: decode (proxy/config/pbjson: text -> protobuf-c message, unknown fields and type
 * errors), validate (every field that is set but not supported yet is rejected with its path and
 * "not supported by remora yet", never ignored; Envoy's semantic rules), compile (defaults as
 * Envoy, lower-cased header names and domains, routes pointing straight at their cluster). This
 * file is the only one that knows both the protobuf-c types and the snapshot types.
 *
 * Deliberate differences from Envoy: a bootstrap's STRICT_DNS and LOGICAL_DNS endpoints are
 * first resolved at build time, with getaddrinfo (a name that does not resolve yields no
 * endpoints and a warning, like an Envoy cluster whose first resolution failed), then again
 * while remora runs (proxy/dns_refresh.h, proxy/cds.h).
 *
 * The returned snapshot has one reference. Thread: main. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"

struct Envoy__Config__Bootstrap__V3__Bootstrap;
struct Envoy__Config__Core__V3__HeaderValueOption;
struct Envoy__Config__Route__V3__HeaderMatcher;
struct header_add;
struct header_matcher;

/* Reads a bootstrap file: JSON when the name ends in ".json", else YAML or JSON (sniffed).
 * Returns a new snapshot, or NULL with "`path`: cannot read: <reason>" or a field-path error in
 * `err`. */
struct config *config_load_file(const char *path, struct err *err);

/* Parses bootstrap text (YAML or JSON, `len` bytes, need not be NUL-terminated) and builds a
 * snapshot from it. Returns a new snapshot (one reference) or NULL with a field-path error. */
struct config *config_load_text(const char *text, size_t len, struct err *err);

/* Envoy's `-c PATH --config-yaml TEXT`: the file's bootstrap merged with the text's (protobuf
 * MergeFrom: the text's scalars win, messages merge, lists append; see pbmerge.h), then built.
 * An error in the text is reported under "--config-yaml". */
struct config *config_load_merged(const char *path, const char *text, size_t len, struct err *err);

/* Builds a snapshot from an already decoded Bootstrap. Takes ownership of `pb` in every case:
 * on success it becomes the snapshot's `bootstrap_pb` (for /config_dump), on failure it is
 * freed. `pb` must come from protobuf-c's default allocator (pbjson_decode or
 * protobuf_c_message_unpack with a NULL allocator). Returns the snapshot or NULL. */
struct config *config_build_take(struct Envoy__Config__Bootstrap__V3__Bootstrap *pb,
                                 struct err *err);

/* Validates bootstrap text without keeping the result: what `--mode validate` runs. Returns 0
 * when a snapshot could be built from it, or -EINVAL with the first error in `err`. Note that
 * STRICT_DNS names are resolved, as when serving. */
int config_validate_text(const char *text, size_t len, struct err *err);

/* For HTTP filters' configs (proxy/config/filter_build.c) and health checks
 * (build_health.c): a route HeaderMatcher and a HeaderValueOption validated and compiled exactly
 * as build.c does for routes, into snapshot `c` (its arena, and its cleanup list for regexes) or
 * arena `a`, with errors under field path `path`.
 * Return 0 or -EINVAL with the error in `err`. */
int build_header_matcher(struct config *c, const char *path,
                         const struct Envoy__Config__Route__V3__HeaderMatcher *pb,
                         struct header_matcher *out, struct err *err);
/* A StringMatcher, validated and compiled as a header matcher's string_match is (build_tls.c's
 * SAN matchers), with errors under `path`. Returns 0 or -EINVAL with the error in `err`. */
struct Envoy__Type__Matcher__V3__StringMatcher;
struct str_match;
int build_string_match(struct config *c, const char *path,
                       const struct Envoy__Type__Matcher__V3__StringMatcher *pb,
                       struct str_match *out, struct err *err);
int build_header_add(struct arena *a, const char *path,
                     const struct Envoy__Config__Core__V3__HeaderValueOption *pb,
                     struct header_add *out, struct err *err);

/* For RDS (proxy/config/rds.c): validates and compiles a RouteConfiguration exactly as an
 * inline route_config, for connection manager `hcm`, into `c` (its arena and cleanup list;
 * clusters are looked up with config_find_cluster), with errors under field path `path`
 * ("resources[0]"). As in Envoy, validate_clusters defaults to false here: a route to a cluster
 * that does not exist compiles to no cluster (503 NC) unless validate_clusters is true.
 * `rebuild`: the table was accepted before and is compiled again after a CDS change; clusters
 * are not validated then (a route to a removed cluster answers NC, as in Envoy).
 * Returns 0 and sets *out, or -EINVAL with the error in `err`. Thread: main. */
struct Envoy__Config__Route__V3__RouteConfiguration;
int build_route_table(struct config *c, const struct hcm_cfg *hcm, const char *path,
                      const struct Envoy__Config__Route__V3__RouteConfiguration *prc, bool rebuild,
                      const struct route_table **out, struct err *err);

/* For CDS (proxy/cds.c): validates and compiles one Cluster resource exactly as a static
 * cluster, into `c` (an empty container: c->clusters[0] with index 0, and c->cluster_map), with
 * errors under field path `path` ("resources[0]"). SDS secrets are rejected there (not
 * supported from CDS yet); type EDS is accepted (only here), without a
 * load_assignment, unless `eds_endpoints`: then cds.c has put the ClusterLoadAssignment from
 * EDS there. Returns 0 or -EINVAL with the error in `err`. Thread: main. */
struct Envoy__Config__Cluster__V3__Cluster;
int build_cluster(struct config *c, const char *path,
                  const struct Envoy__Config__Cluster__V3__Cluster *pc, bool eds_endpoints,
                  struct err *err);

/* For LDS (proxy/lds.c): validates and compiles one Listener resource exactly as a static
 * listener, into `c` (a container whose clusters are the bootstrap's: c->listeners[0] with
 * index 0, its chains in c->chains), with errors under field path `path` ("resources[0]").
 * Not supported there yet (rejected with their paths): an HCM's `rds` (its routes must be
 * inline, route_config) and SDS secrets. Returns 0 or -EINVAL with the error in `err`.
 * Thread: main. */
struct Envoy__Config__Listener__V3__Listener;
int build_listener(struct config *c, const char *path,
                   const struct Envoy__Config__Listener__V3__Listener *pl, struct err *err);

/* Returns the /config_dump body for `c` in Envoy's shape:
 *   {"configs": [
 *     {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {...}},
 *     {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
 *      "static_clusters": [{"cluster": {"@type": ".../envoy.config.cluster.v3.Cluster", ...}}]},
 *     {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
 *      "static_listeners": [{"listener": {"@type": ".../envoy.config.listener.v3.Listener",...}}]},
 *     {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
 *      "static_route_configs": [{"route_config": {"@type": ".../RouteConfiguration", ...}}]}]}
 * with snake_case field names and Any payloads expanded. A snapshot built without a Bootstrap
 * message gives {"configs": []}. Returns a new reference (json_decref it); never NULL. Reads
 * only immutable snapshot data, so any thread holding a reference may call it. */
json_t *config_dump_json(const struct config *c);

/* For the dynamic parts of /config_dump (RDS, CDS, LDS: reload.c, cds.c, lds.c). The section
 * of `configs` whose "@type" is "type.googleapis.com/envoy.admin.v3.<type>" (such as
 * "ClustersConfigDump"), added at the end when there is none yet; borrowed from `configs`. */
json_t *config_dump_section(json_t *configs, const char *type);

/* A resource as /config_dump shows it: {"@type": "type.googleapis.com/<its full name>",
 * fields...}, with TLS private keys redacted. A new reference. */
struct ProtobufCMessage;
json_t *config_dump_resource(const struct ProtobufCMessage *m);
