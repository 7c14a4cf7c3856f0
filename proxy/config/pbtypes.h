/* pbtypes: the registry of protobuf message types compiled into remora (the trimmed Envoy v3
 * subset under xds/proto/ plus the well-known types), used to resolve google.protobuf.Any type
 * URLs. It is one explicit const table in pbtypes.c (nginx's ngx_modules[] style): a .proto added
 * under xds/proto/ whose messages may travel inside an Any must be listed there too.
 * No state; thread: any. */
#pragma once

#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* Returns the descriptor of the message whose full name is `full_name` ("envoy.config.cluster.v3
 * .Cluster", `len` bytes, no type URL prefix, need not be NUL-terminated), or NULL if that type
 * is not compiled in. Has the pbjson_resolve_cb signature. */
const ProtobufCMessageDescriptor *pbtypes_find(const char *full_name, size_t len);

/* The number of registered types and the `i`-th one (0 <= i < pbtypes_count()), for tests and
 * diagnostics. */
size_t pbtypes_count(void);
const ProtobufCMessageDescriptor *pbtypes_at(size_t i);
