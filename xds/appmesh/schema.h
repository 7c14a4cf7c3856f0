/* schema: the App Mesh API's request-body shapes (API 2019-01-25) and the validator that checks
 * a JSON body against them. The table (schema_gen.c) is generated from the SDK model by
 * scripts/gen-appmesh-schema.py; the validator enforces what the model says: types, required
 * members, unknown members (rejected, as AWS's deserializer does), enums, string lengths,
 * number ranges, list sizes and unions (exactly one member set). Rules the model cannot express
 * (one route kind per route, weights, references) are api.c's. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

enum schema_type {
    SCHEMA_STRUCT,
    SCHEMA_LIST,
    SCHEMA_STRING,
    SCHEMA_INT,  /* 32-bit */
    SCHEMA_LONG, /* 64-bit */
    SCHEMA_BOOL,
    SCHEMA_TIMESTAMP,
};

struct schema_member {
    const char *name; /* the JSON key */
    uint16_t shape;   /* index into schema_shapes */
    bool is_required;
};

struct schema_shape {
    const char *name; /* the model's shape name, e.g. "VirtualNodeSpec" */
    enum schema_type type;
    bool is_union;         /* structure: exactly one member must be set */
    bool has_min, has_max; /* string: length in characters; list: entries; numbers: value */
    int64_t min, max;
    const char *const *enum_values;      /* string: NULL-terminated, or NULL for any */
    const struct schema_member *members; /* structure */
    size_t n_members;
    uint16_t member_shape; /* list: the entries' shape */
};

extern const struct schema_shape schema_shapes[];
extern const size_t schema_n_shapes;

/* The shape named `name` (e.g. "CreateMeshInput"), or NULL. */
const struct schema_shape *schema_find(const char *name);

/* Checks `v` against `shape`. `path` is the field path of `v` ("" for a request body, whose
 * members are then named without a leading dot). Returns 0, or -EINVAL with `err` set to
 * "<path>: <what is wrong>", e.g. "spec.listeners[0].portMapping.port: must be 1-65535".
 * A JSON null counts as an absent member (as AWS's deserializer reads it). */
int schema_validate(const struct schema_shape *shape, const json_t *v, const char *path,
                    struct err *err);
