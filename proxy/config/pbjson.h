/* pbjson: one generic mapper between proto3 JSON (a jansson tree) and protobuf-c messages,
 * driven only by protobuf-c's message descriptors. YAML text is read into the same jansson tree,
 * so a bootstrap file, /config_dump, xDS resources and admin API bodies share one parser, one
 * error-path format and one set of rules:
 *
 *   - field names in snake_case ("lb_policy") or lowerCamelCase ("lbPolicy"), not both at once;
 *   - enums by name ("ROUND_ROBIN") or by number;
 *   - 64-bit integers as numbers or decimal strings; every integer type as a decimal string;
 *   - google.protobuf.Duration as "1.5s" (or an object {seconds, nanos});
 *   - wrappers (UInt32Value, BoolValue, ...) as bare values;
 *   - Struct / Value / ListValue as arbitrary JSON;
 *   - Any as {"@type": "type.googleapis.com/<full.name>", <fields of that message>} (or
 *     {"@type": ..., "value": ...} for the well-known types), resolved through a registry;
 *   - map<string, V> fields as JSON objects;
 *   - null means "not set"; two members of one oneof is an error.
 *
 * Every error carries the field path in `struct err`, e.g.
 * "static_resources.clusters[1].lb_polcy: unknown field" or
 * "static_resources.clusters[0].connect_timeout: invalid duration \"5x\"".
 *
 * Decoding goes JSON -> protobuf wire bytes -> protobuf_c_message_unpack(), so every decoded
 * message is allocated by protobuf-c's default allocator and is freed, whole, with
 * protobuf_c_message_free_unpacked(msg, NULL).
 *
 * No global state; every function is reentrant. Thread: any (config work runs on main). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "google/protobuf/any.pb-c.h"
#include "proxy/core/err.h"

/* Resolves a message's full name ("envoy.config.cluster.v3.Cluster", no "type.googleapis.com/"
 * prefix, `len` bytes, not NUL-terminated) to its compiled descriptor, or NULL when the type is
 * not compiled in. Used for Any. pbtypes_find (proxy/config/pbtypes.h) is the project's
 * registry; a NULL callback makes every Any an error. */
typedef const ProtobufCMessageDescriptor *(*pbjson_resolve_cb)(const char *full_name, size_t len);

/* ---- text -> JSON tree ---- */

/* Parses JSON text (`len` bytes, need not be NUL-terminated) into a new tree. Duplicate object
 * keys are errors. Returns a new reference, or NULL with "JSON: line L column C: reason" in
 * `err`. */
json_t *pbjson_load_json(const char *text, size_t len, struct err *err);

/* Parses one YAML document into a new JSON tree. Quoted scalars are always strings; unquoted
 * true/false, null/~/empty and decimal numbers become JSON booleans, null and numbers, every
 * other scalar a string (integers beyond 64 bits stay strings). Duplicate keys, aliases,
 * non-scalar keys, unknown tags and multi-document streams are errors ("YAML: line L column C:
 * reason"). Returns a new reference or NULL. */
json_t *pbjson_load_yaml(const char *text, size_t len, struct err *err);

/* Parses bootstrap text in either format: JSON when the first non-blank character is '{' or '['
 * and the text parses as JSON, YAML otherwise (YAML flow style also starts with '{'). Returns a
 * new reference, or NULL with the error (the JSON one when both parsers fail on '{' text). */
json_t *pbjson_load_text(const char *text, size_t len, struct err *err);

/* ---- JSON tree <-> message ---- */

/* Decodes `json` (an object) into a new message of type `desc`. `path` prefixes every error
 * path ("" or NULL for none; e.g. "resources[2]" for an xDS resource). `resolve` resolves Any
 * types (may be NULL). Returns the message, owned by the caller (free it with
 * protobuf_c_message_free_unpacked(msg, NULL)), or NULL with a field-path error in `err`. */
ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                pbjson_resolve_cb resolve, const char *path, struct err *err);

/* Encodes `msg` as proto3 JSON with Envoy /config_dump conventions: snake_case field names
 * (preserving proto names), fields at their default value left out (oneof members and
 * wrappers are written whenever set), enums by name, 64-bit integers as strings, Duration as
 * "1.5s", wrappers as bare values, Any expanded with "@type" first. An Any whose type `resolve`
 * does not know is written as {"@type": url, "value": "<base64>"}. Returns a new reference;
 * never NULL (allocation failure aborts). */
json_t *pbjson_encode(const ProtobufCMessage *msg, pbjson_resolve_cb resolve);

/* Walks a message decoded from binary protobuf (xDS) and reports the first field this build
 * does not know: protobuf-c keeps such fields in `n_unknown_fields` and would otherwise drop
 * them silently. Any payloads are unpacked through `resolve` and walked too; an Any whose type
 * is unknown or whose bytes do not parse is reported as well. `path` prefixes the error path.
 * Returns 0 when everything is known, or -EINVAL with e.g.
 * "resources[0].virtual_hosts[1].routes[0]: unknown field 42" in `err`. */
int pbjson_check_unknown(const ProtobufCMessage *msg, pbjson_resolve_cb resolve, const char *path,
                         struct err *err);

/* Returns the name of the first field of `m` that is set (proto3 rules: a repeated field with
 * elements, the chosen oneof member, a present message or wrapper, a non-zero scalar, a
 * non-empty string) and is not named in `allowed` (NULL-terminated; may be NULL), or NULL. For
 * "every other field is unsupported" checks that stay right when fields are added to a proto. */
const char *pbjson_first_set_field(const ProtobufCMessage *m, const char *const *allowed);

/* protoc-c turns map<K, V> into a repeated nested "<Name>Entry" message {key = 1; value = 2}
 * and keeps no flag for it: is `md` such an entry? */
bool pbjson_is_map_entry(const ProtobufCMessageDescriptor *md);

/* ---- Any helpers ---- */

/* Returns the message name part of a type URL (what follows the last '/'), as a view into
 * `type_url`; `*len` receives its length. */
const char *pbjson_type_name(const char *type_url, size_t *len);

/* Unpacks `any` into a new message of the type its URL names, found through `resolve`. `path`
 * is the Any's own field path, used for errors. Returns 0 and sets `*out` (owned by the caller;
 * free with protobuf_c_message_free_unpacked(*out, NULL)), or -EINVAL with "unknown type" or
 * "malformed value" in `err`. */
int pbjson_any_unpack(const Google__Protobuf__Any *any, pbjson_resolve_cb resolve, const char *path,
                      ProtobufCMessage **out, struct err *err);

/* True when `any`'s type URL names message type `md`. */
bool pbjson_any_is(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *md);

/* An xDS resource (an entry of DiscoveryResponse.resources) at `path`: its type URL must name
 * `md` ("`path`: type 'U' is not type.googleapis.com/<md>" otherwise), and it is unpacked and
 * checked for unknown fields, as pbjson_any_unpack and pbjson_check_unknown. Returns 0 and
 * `*out` (owned by the caller), or -EINVAL with the error in `err` and nothing to free. */
int pbjson_resource_unpack(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *md,
                           pbjson_resolve_cb resolve, const char *path, ProtobufCMessage **out,
                           struct err *err);
