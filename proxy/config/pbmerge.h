/* pbmerge: protobuf's MergeFrom for protobuf-c messages (Envoy merges --config-yaml into the
 * bootstrap from -c this way). Thread: any. */
#pragma once

#include <protobuf-c/protobuf-c.h>

/* Returns a new message (free it with protobuf_c_message_free_unpacked(m, NULL)): `a` merged
 * with `b`, both of the same type. Set scalars of `b` replace `a`'s, sub-messages merge field
 * by field, repeated fields are `a`'s followed by `b`'s, a oneof takes `b`'s member when `b`
 * sets one, map entries of `b` replace `a`'s of the same key. Returns NULL only when the merged
 * bytes do not parse back (out of memory). */
ProtobufCMessage *pbmerge(const ProtobufCMessage *a, const ProtobufCMessage *b);
