/* build_stats: the bootstrap's stats_sinks, stats_flush_interval and stats_config into
 * config.stats_* (proxy/config/config.h). Sinks: envoy.stat_sinks.statsd (StatsdSink:
 * `address`, `prefix`; `tcp_cluster_name` is rejected) and envoy.stat_sinks.dog_statsd
 * (DogStatsdSink: `address`, `prefix`, `max_bytes_per_datagram`), chosen by typed_config's type;
 * an address is an IP literal socket_address (UDP) or a `pipe` (a Unix datagram socket).
 * stats_flush_interval: 1 ms to under 300 s (Envoy's bounds), default 5 s. stats_config:
 * stats_tags (proxy/stats/tags.h checks their regexes) and use_all_default_tags (default
 * true). Called by build.c. Thread: main. */
#pragma once

#include "proxy/core/err.h"

struct config;
struct Envoy__Config__Bootstrap__V3__Bootstrap;

/* Returns 0, or -EINVAL with the field path in `err`. */
int build_stats_config(struct config *c, const struct Envoy__Config__Bootstrap__V3__Bootstrap *pb,
                       struct err *err);
