/* router: route matching over a compiled route table. Pure functions of the config and the
 * request: no allocation, no I/O, no lookups by name. Virtual hosts are chosen as Envoy does
 * (exact domain, then the longest `*suffix`, then the longest `prefix*`, then `*`; the Host is
 * compared whole, port included, case-insensitively), then the vhost's routes are tried in
 * order and the first match wins. Thread: any. */
#pragma once

#include <stdbool.h>

#include "proxy/core/str.h"

struct route_table;
struct vhost_cfg;
struct route_cfg;
struct headers;

/* The request as the router sees it. Pseudo-headers (":method", ":path", ":authority",
 * ":scheme") in header matchers are answered from these fields. */
struct route_req {
    struct str method;
    struct str path;      /* :path, query string included */
    struct str authority; /* Host / :authority */
    struct str scheme;    /* "http" */
    const struct headers *headers;
};

/* Selects the virtual host for `authority`, or NULL. */
const struct vhost_cfg *router_select_vhost(const struct route_table *t, struct str authority);

/* Returns the first route of `vh` matching `r`, or NULL. */
const struct route_cfg *router_match_route(const struct vhost_cfg *vh, const struct route_req *r);

/* Both steps; `*vh_out` gets the vhost (or NULL). */
const struct route_cfg *router_route(const struct route_table *t, const struct route_req *r,
                                     const struct vhost_cfg **vh_out);
