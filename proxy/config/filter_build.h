/* filter_build: the config side of HTTP filters. build.c hands it each non-router entry of an
 * HttpConnectionManager's http_filters and each typed_per_filter_config map of a Route or
 * VirtualHost; it finds the filter's ops in filters/registry.c, unpacks the typed config and
 * runs the filter's config_new with a `struct filter_build` (proxy/http/filter.h), whose helpers
 * (paths, durations, percentages, header matchers and additions, stat declarations) it also
 * implements. Everything it keeps goes into the snapshot arena. Thread: main. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "proxy/core/err.h"
#include "proxy/core/str.h"

struct config;
struct filter_cfg;
struct hcm_cfg;
struct Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter;

/* Compiles `hf` (an http_filters entry that is not the router; `path` is its field path, e.g.
 * "...http_filters[0]") into `out`, giving it the next worker-state slot of `c`. `stat_prefix`
 * is the connection manager's. The names of the entries before it, `prev[n_prev]`, are checked
 * for a duplicate. Returns 0 or -EINVAL with a field-path error in `err`: an unknown filter
 * ("HTTP filter 'x' (type) is not supported by remora yet"), a bad typed_config, or whatever
 * the filter's config_new rejects. */
int filter_build_http_filter(
    struct config *c, const char *path,
    const struct Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter *hf,
    struct str stat_prefix, const struct filter_cfg *prev, uint32_t n_prev, struct filter_cfg *out,
    struct err *err);

/* Compiles a typed_per_filter_config map (`entries[n]`: the map's entry messages, each with a
 * string `key` and an Any `value`; `path` is the map's field path) against the filter chain of
 * `hcm`: each key must name one of its http_filters, and the value must be that filter's
 * per-route config type. Sets *out to an array indexed by chain position (NULL where unset), or
 * NULL when `n` is 0. Returns 0 or -EINVAL with a field-path error in `err`. */
int filter_build_per_filter_configs(struct config *c, const char *path,
                                    ProtobufCMessage *const *entries, size_t n,
                                    const struct hcm_cfg *hcm, struct str stat_prefix,
                                    const void *const **out, struct err *err);
