/* cors: the parts of the envoy.filters.http.cors filter (cors.c) that the route builder uses:
 * the deprecated `cors` field of a VirtualHost or RouteAction (envoy.config.route.v3.CorsPolicy),
 * compiled into the same policy as a typed_per_filter_config CorsPolicy. The filter takes these
 * only when no typed_per_filter_config policy applies to the request (Envoy's rule), and only when
 * the connection manager has the filter (otherwise, as in Envoy, the field has no effect).
 * Thread: main (config build). */
#pragma once

struct config;
struct err;
struct Envoy__Config__Route__V3__CorsPolicy;

/* Validates `pb` and compiles it into `c`'s arena (*out, an opaque policy for
 * route_cfg/vhost_cfg.cors_policy), errors under field path `path` ("...virtual_hosts[0].cors").
 * Returns 0 or -EINVAL with the error in `err`. */
int cors_route_policy_new(struct config *c, const char *path,
                          const struct Envoy__Config__Route__V3__CorsPolicy *pb, const void **out,
                          struct err *err);
