/* libFuzzer target for the config path: hostile bootstraps into the same decoder, validator and
 * compiler that the proxy runs (and that xDS resources will go through).
 *
 * Input: byte 0 picks the form, the rest is the document:
 *   even  binary protobuf of a Bootstrap: unpack, the unknown-field check, then the builder
 *         (what an xDS update will do);
 *   odd   YAML or JSON text: the text loader and proto3 JSON mapper, then the builder.
 * Every built snapshot is released again, so LeakSanitizer checks the builder's error paths
 * free what they allocated. Beyond the sanitizers, it aborts when a rejected document leaves no
 * error message, or a built snapshot reports one.
 *
 * Documents that would make the builder touch the outside world are skipped before building:
 * DNS clusters (getaddrinfo), DataSource `filename`s and file-based config sources (a path such
 * as /dev/stdin would block). The walk looks inside Any payloads too.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/config_fuzz tests/fuzz/corpus/config) */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DOC (256 * 1024)

static bool str_set(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *s = *(char *const *)((const char *)m + f->offset);
    return s != NULL && s[0] != '\0';
}

/* Does `m` (or anything inside it, Any payloads included) ask the builder for I/O? */
static bool touches_outside(const ProtobufCMessage *m, int depth)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    if (depth > 64) {
        return true;
    }
    if (md == &google__protobuf__any__descriptor) {
        ProtobufCMessage *inner = NULL;
        struct err e;
        if (pbjson_any_unpack((const Google__Protobuf__Any *)m, pbtypes_find, "", &inner, &e) !=
            0) {
            return false; /* the builder rejects it without I/O */
        }
        bool t = touches_outside(inner, depth + 1);
        protobuf_c_message_free_unpacked(inner, NULL);
        return t;
    }
    for (unsigned i = 0; i < md->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &md->fields[i];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id) {
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_STRING && f->label != PROTOBUF_C_LABEL_REPEATED) {
            bool io = (strcmp(f->name, "filename") == 0 && strstr(md->name, "DataSource")) ||
                      (strcmp(f->name, "path") == 0 && strstr(md->name, "ConfigSource")) ||
                      (strcmp(f->name, "path") == 0 && strstr(md->name, "PathConfigSource")) ||
                      strcmp(f->name, "watched_directory") == 0;
            if (io && str_set(m, f)) {
                return true;
            }
        }
        if (f->type == PROTOBUF_C_TYPE_ENUM && strcmp(f->name, "type") == 0 &&
            strcmp(md->name, "envoy.config.cluster.v3.Cluster") == 0) {
            int v = *(const int *)((const char *)m + f->offset);
            if (v == 1 || v == 2) { /* STRICT_DNS, LOGICAL_DNS */
                return true;
            }
        }
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            ProtobufCMessage *const *e = *(ProtobufCMessage *const **)((const char *)m + f->offset);
            for (size_t j = 0; j < n; j++) {
                if (touches_outside(e[j], depth + 1)) {
                    return true;
                }
            }
        } else {
            const ProtobufCMessage *sub = *(ProtobufCMessage *const *)((const char *)m + f->offset);
            if (sub != NULL && touches_outside(sub, depth + 1)) {
                return true;
            }
        }
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        log_set_level(LOG_OFF);
        quiet = true;
    }
    if (size < 1 || size > MAX_DOC) {
        return 0;
    }
    bool text = data[0] & 1;
    data++;
    size--;
    struct err err;
    err_clear(&err);
    ProtobufCMessage *m = NULL;
    if (text) {
        json_t *j = pbjson_load_text((const char *)data, size, &err);
        if (j == NULL) {
            if (!err_is_set(&err)) {
                abort(); /* a rejection without a reason */
            }
            return 0;
        }
        m = pbjson_decode(&envoy__config__bootstrap__v3__bootstrap__descriptor, j, pbtypes_find, "",
                          &err);
        json_decref(j);
    } else {
        m = protobuf_c_message_unpack(&envoy__config__bootstrap__v3__bootstrap__descriptor, NULL,
                                      size, data);
        if (m != NULL && pbjson_check_unknown(m, pbtypes_find, "", &err) != 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            m = NULL;
        } else if (m == NULL) {
            return 0; /* not a Bootstrap encoding at all */
        }
    }
    if (m == NULL) {
        if (!err_is_set(&err)) {
            abort();
        }
        return 0;
    }
    if (touches_outside(m, 0)) {
        protobuf_c_message_free_unpacked(m, NULL);
        return 0;
    }
    err_clear(&err);
    struct config *c = config_build_take((Envoy__Config__Bootstrap__V3__Bootstrap *)m, &err);
    if (c == NULL) {
        if (!err_is_set(&err)) {
            abort();
        }
        return 0;
    }
    if (err_is_set(&err)) {
        abort(); /* built, yet an error was reported */
    }
    config_unref(c);
    return 0;
}
