/* Unit-test helper for HTTP filters: a filter's typed_config from JSON, built the way the config
 * builder builds it. Include after cmocka.h and the filter's own source. */
#pragma once

#include <jansson.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/err.h"
#include "proxy/http/filter.h"

/* Decodes `json` as `desc` and runs `config_new` on it (field path "f", stat prefix
 * "ingress", allocating in c->arena, errors into *err). Returns the error text, "" on success;
 * *out (when not NULL) gets the filter's config. */
static const char *filter_config_from_json(
    const ProtobufCMessageDescriptor *desc,
    int (*config_new)(struct filter_build *fb, const ProtobufCMessage *pb, const void **cfg),
    const char *json, struct config *c, struct err *err, const void **out)
{
    err_clear(err);
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    ProtobufCMessage *m = pbjson_decode(desc, j, pbtypes_find, "f", err);
    json_decref(j);
    if (m == NULL) {
        return err->msg;
    }
    struct filter_build fb;
    memset(&fb, 0, sizeof(fb));
    fb.c = c;
    fb.a = &c->arena;
    fb.err = err;
    fb.stat_prefix = STR_LIT("ingress");
    strcpy(fb.path, "f");
    fb.plen = 1;
    const void *cfg = NULL;
    int rc = config_new(&fb, m, &cfg);
    protobuf_c_message_free_unpacked(m, NULL);
    if (out != NULL) {
        *out = cfg;
    }
    return rc == 0 ? "" : err->msg;
}
