/* tags: Envoy's tag extraction (stats_config.stats_tags, use_all_default_tags), which turns a
 * full stat name into a tag-extracted name and tags:
 *   cluster.backend.upstream_rq_200 -> cluster.upstream_rq
 *                                      envoy.cluster_name=backend, envoy.response_code=200
 *
 * As Envoy's TagProducerImpl: fixed_value tags come first and go on every stat; then each
 * regex extractor (the custom ones in stats_tags order, then the defaults whose names no
 * custom entry took) is matched against the full name: its first capture group is the part
 * removed from the name, its second (the first when there is no second) the tag's value. The
 * removals of all the extractors that matched are applied together to the full name.
 *
 * Default extractors (a subset of Envoy's well-known ones, with Envoy's names): envoy.cluster_name,
 * envoy.http_conn_manager_prefix, envoy.listener_address, envoy.response_code,
 * envoy.response_code_class, envoy.rds_route_config, envoy.tcp_prefix, envoy.ssl_cipher,
 * envoy.ssl_cipher_suite. Envoy's others (user agents, virtual hosts and clusters, gRPC bridge,
 * Dynamo, Mongo, Redis, ratelimit, fault, worker ids, ...) name stats remora does not have.
 *
 * Built once (main, from the bootstrap) and used on main only. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

struct config;
struct stats_tag_cfg;

struct stat_tag {
    char *name;  /* owned */
    char *value; /* owned */
};

/* A stat's tag-extracted name and its tags, in the order produced. */
struct stat_tags {
    char *name; /* owned */
    uint32_t n;
    struct stat_tag *v; /* owned; [n] */
};

struct tag_producer;

/* Compiles the extractors of `tags` [n] (custom) and, with `use_defaults`, the defaults. Returns
 * NULL with "stats_config.stats_tags[i]..." in `err` for a bad regex, a repeated tag name or an
 * entry with neither a value nor a default of its name. */
struct tag_producer *tag_producer_new(const struct stats_tag_cfg *tags, uint32_t n,
                                      bool use_defaults, struct err *err);
void tag_producer_free(struct tag_producer *tp);

/* Fills `out` (free with stat_tags_free) for the full name `name`. */
void tags_produce(const struct tag_producer *tp, const char *name, struct stat_tags *out);
void stat_tags_free(struct stat_tags *t);

/* The regex Envoy's default extractor `name` uses here, or NULL when there is none. */
const char *tags_default_regex(const char *name);
