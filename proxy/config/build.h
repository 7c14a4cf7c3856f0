/* build: turns an Envoy v3 Bootstrap (YAML or JSON text, or a decoded protobuf-c message) into
 * a validated, compiled `struct config` snapshot. All or nothing: on any error it returns NULL
 * with a field-path message in `err`, e.g.
 * "static_resources.clusters[1].lb_polcy: unknown field" or
 * "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.
 *  virtual_hosts[0].routes[2].route.cluster: unknown cluster 'foo'".
 * The returned snapshot has one reference. Thread: main. */
#pragma once

#include <stddef.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"

/* Reads a bootstrap file; YAML unless the name ends in .json (YAML is a superset anyway). */
struct config *config_load_file(const char *path, struct err *err);

/* Parses bootstrap text (YAML or JSON). */
struct config *config_load_text(const char *text, size_t len, struct err *err);
