/* dump: a translated snapshot as JSON, in Envoy's proto3 JSON (the proxy's pbjson encoder, the
 * shape of Envoy's /config_dump), for remora-xds's `GET /debug/xds` and for tests.
 *
 *   xds_snapshot_json       {"mesh", "node", "listeners": [...], "clusters": [...],
 *                            "route_configs": [...], "endpoints": [...]}: each resource as
 *                            served, with "@type" first.
 *   xds_snapshot_bootstrap  one static bootstrap holding what a sidecar has once it took every
 *                           resource: {"static_resources": {"listeners", "clusters"}}, each
 *                           connection manager's `rds` replaced by its route configuration
 *                           inline (an empty one named as asked when the snapshot lacks it, as
 *                           an Envoy waiting for RDS serves 404s), and each EDS cluster made
 *                           STATIC with its ClusterLoadAssignment as `load_assignment`.
 *                           `remora -c` (or Envoy) loads it as it is; add an `admin` block to
 *                           taste.
 * Both return a new reference (never NULL). A resource that does not decode (it cannot: they
 * are our own) is left out with a warning. */
#pragma once

#include <jansson.h>

#include "xds/appmesh/translate.h"

json_t *xds_snapshot_json(const struct xds_snapshot *s);
json_t *xds_snapshot_bootstrap(const struct xds_snapshot *s);
