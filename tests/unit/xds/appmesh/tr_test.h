/* Helpers the translate tests share (translate_test.c, translate_sidecar_test.c,
 * translate_gateway_test.c): specs from JSON text, resources of a snapshot decoded by name,
 * a snapshot's resource names in order. Include after <cmocka.h>. */
#pragma once

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "xds/appmesh/translate.h"

/* A spec from JSON text; a test's own typo fails the test, not the translation. */
static inline json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (j == NULL) {
        fail_msg("bad test JSON: %s: %s", e.text, text);
    }
    return j;
}

/* Resource `name` of type `t` of `s`, decoded as `d` (free with
 * protobuf_c_message_free_unpacked). */
static inline void *unpack(const struct xds_snapshot *s, enum xds_type t, const char *name,
                           const ProtobufCMessageDescriptor *d)
{
    const struct xds_resource *r = xds_snapshot_find(s, t, name);
    if (r == NULL) {
        fail_msg("no resource %s of type %d", name, (int)t);
    }
    void *m = protobuf_c_message_unpack(d, NULL, r->len, r->data);
    assert_non_null(m);
    return m;
}

/* The names of `s`'s resources of type `t` are `want[0..n)`, in that order. */
static inline void names_are(const struct xds_snapshot *s, enum xds_type t, const char *const *want,
                             size_t n)
{
    for (size_t i = 0; i < s->n[t] && i < n; i++) {
        assert_string_equal(s->res[t][i].name, want[i]);
    }
    assert_int_equal(s->n[t], n);
}
