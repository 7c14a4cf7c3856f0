/* debug: remora-xds's `GET /debug/xds` on the API port: what a node is served, as Envoy JSON
 * (App Mesh users debug with Envoy's /config_dump; this is the server's side of it).
 *
 *   /debug/xds?node=<node id>[&format=bootstrap]   a sidecar (the id names a virtual node:
 *                                                  mesh/<m>/virtualNode/<vn> or its ARN)
 *   /debug/xds?mesh=<m>[&format=bootstrap]         a mesh's resources for gRPC clients
 *
 * format=resources (the default): dump.h's xds_snapshot_json; format=bootstrap: one static
 * bootstrap that `remora -c` or Envoy loads as it is (xds_snapshot_bootstrap). Errors: 400
 * BadRequestException (a missing or unknown parameter, an id that names no virtual node), 404
 * NotFoundException (no such mesh), 404 UnknownOperationException without --xds-listen. */
#pragma once

#include <stdbool.h>

#include "xds/appmesh/api.h"

struct meshes;

/* Handles `rq` when its path is /debug/xds (then returns true and fills `out`); `m` may be
 * NULL (xDS not served). */
bool debug_handle(struct meshes *m, const struct api_request *rq, struct api_response *out);
