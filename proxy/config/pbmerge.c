/* pbmerge: protobuf's MergeFrom for protobuf-c messages, which has none.
 *
 * Field by field, as protobuf defines it: a set scalar of the source replaces the target's
 * (proto3 scalars without presence count as set when not zero/empty), sub-messages merge
 * recursively, repeated fields append, a oneof takes the source's member (merging when both
 * hold the same one), and map entries of the source replace the target's of the same key.
 * (Parsing the concatenated encodings would do most of this, but protobuf-c 1.4's unpacker
 * fails to merge a repeated sub-message holding a oneof, and keeps duplicate map keys.)
 *
 * Memory: messages come from protobuf-c's default allocator (malloc), so the source's strings,
 * bytes, sub-messages and list elements are moved into the target, not copied. */
#include "proxy/config/pbmerge.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/pbjson.h"
#include "proxy/core/xmalloc.h"

/* Equal map keys: key fields are strings or integers (protobuf allows no other key types). */
static bool keys_equal(const ProtobufCFieldDescriptor *kf, const ProtobufCMessage *x,
                       const ProtobufCMessage *y)
{
    const char *px = (const char *)x + kf->offset;
    const char *py = (const char *)y + kf->offset;
    switch (kf->type) {
    case PROTOBUF_C_TYPE_STRING:
        return strcmp(*(char *const *)px, *(char *const *)py) == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return memcmp(px, py, sizeof(uint64_t)) == 0;
    case PROTOBUF_C_TYPE_BOOL:
        return *(const protobuf_c_boolean *)px == *(const protobuf_c_boolean *)py;
    default: /* the 32-bit integer types */
        return memcmp(px, py, sizeof(uint32_t)) == 0;
    }
}

/* Keeps the last entry of each key in map field `f` of `m`, in the order the kept entries had. */
static void dedupe_map(ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    size_t *n = (size_t *)((char *)m + f->quantifier_offset);
    ProtobufCMessage **e = *(ProtobufCMessage ***)((char *)m + f->offset);
    const ProtobufCFieldDescriptor *kf =
        &((const ProtobufCMessageDescriptor *)f->descriptor)->fields[0];
    size_t out = 0;
    for (size_t i = 0; i < *n; i++) {
        bool later = false;
        for (size_t j = i + 1; j < *n && !later; j++) {
            later = keys_equal(kf, e[i], e[j]);
        }
        if (later) {
            protobuf_c_message_free_unpacked(e[i], NULL);
        } else {
            e[out++] = e[i];
        }
    }
    *n = out;
}

/* Bytes one value of type `t` takes in a message or a list. */
static size_t value_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default: /* 32-bit integers, enums, float */
        return 4;
    }
}

/* Frees the value of singular field `f` at `p` (a string, bytes or a sub-message) and clears
 * it; numbers need nothing. */
static void free_value(const ProtobufCFieldDescriptor *f, void *p)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char **sp = p;
        if (*sp != NULL && *sp != (char *)f->default_value && *sp != protobuf_c_empty_string) {
            free(*sp);
        }
        *sp = NULL;
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        ProtobufCBinaryData *bd = p;
        const ProtobufCBinaryData *def = f->default_value;
        if (bd->data != NULL && (def == NULL || bd->data != def->data)) {
            free(bd->data);
        }
        bd->data = NULL;
        bd->len = 0;
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage **mp = p;
        if (*mp != NULL) {
            protobuf_c_message_free_unpacked(*mp, NULL);
        }
        *mp = NULL;
    }
}

/* Is the proto3 scalar at `p` set, i.e. not its zero value? */
static bool scalar_set(const ProtobufCFieldDescriptor *f, const void *p)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *sv = *(char *const *)p;
        return sv != NULL && sv[0] != '\0';
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) {
        return ((const ProtobufCBinaryData *)p)->len > 0;
    }
    static const uint8_t zero[8];
    return memcmp(p, zero, value_size(f->type)) != 0;
}

static void merge_into(ProtobufCMessage *dst, ProtobufCMessage *src);

/* Moves the value of singular field `f` from `sp` (in the source) to `dp` (in the target),
 * merging sub-messages the target already has. */
static void move_value(const ProtobufCFieldDescriptor *f, void *dp, void *sp)
{
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        ProtobufCMessage **d = dp, **s = sp;
        if (*d == NULL) {
            *d = *s;
            *s = NULL;
        } else if (*s != NULL) {
            merge_into(*d, *s);
        }
        return;
    }
    free_value(f, dp);
    memcpy(dp, sp, value_size(f->type));
    memset(sp, 0, value_size(f->type)); /* the source no longer owns a string or bytes */
}

static void merge_field(ProtobufCMessage *dst, ProtobufCMessage *src,
                        const ProtobufCFieldDescriptor *f)
{
    const ProtobufCMessageDescriptor *md = dst->descriptor;
    char *dp = (char *)dst + f->offset, *sp = (char *)src + f->offset;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        uint32_t *dcase = (uint32_t *)((char *)dst + f->quantifier_offset);
        uint32_t scase = *(const uint32_t *)((const char *)src + f->quantifier_offset);
        if (scase != f->id) {
            return;
        }
        if (*dcase != f->id && *dcase != 0) { /* the target holds another member: drop it */
            const ProtobufCFieldDescriptor *g = protobuf_c_message_descriptor_get_field(md, *dcase);
            if (g != NULL) {
                free_value(g, (char *)dst + g->offset);
                memset((char *)dst + g->offset, 0, value_size(g->type));
            }
        }
        if (*dcase != f->id) {
            memset(dp, 0, value_size(f->type));
            *dcase = f->id;
        }
        move_value(f, dp, sp);
        return;
    }
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        size_t *dn = (size_t *)((char *)dst + f->quantifier_offset);
        size_t *sn = (size_t *)((char *)src + f->quantifier_offset);
        if (*sn == 0) {
            return;
        }
        size_t es = value_size(f->type);
        void **darr = (void **)dp, **sarr = (void **)sp;
        char *arr = realloc(*darr, (*dn + *sn) * es);
        if (arr == NULL) {
            abort();
        }
        memcpy(arr + *dn * es, *sarr, *sn * es);
        *darr = arr;
        *dn += *sn;
        *sn = 0; /* the elements are the target's now; the source frees only its array */
        if (f->type == PROTOBUF_C_TYPE_MESSAGE && pbjson_is_map_entry(f->descriptor)) {
            dedupe_map(dst, f);
        }
        return;
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
        f->type != PROTOBUF_C_TYPE_STRING) {
        /* explicit presence: a has_ flag */
        protobuf_c_boolean *dh = (protobuf_c_boolean *)((char *)dst + f->quantifier_offset);
        const protobuf_c_boolean *sh =
            (const protobuf_c_boolean *)((const char *)src + f->quantifier_offset);
        if (*sh) {
            move_value(f, dp, sp);
            *dh = 1;
        }
        return;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE || scalar_set(f, sp)) {
        move_value(f, dp, sp);
    }
}

/* Merges `src` into `dst` (same type), moving what it takes out of `src`; `src` stays valid to
 * free. */
static void merge_into(ProtobufCMessage *dst, ProtobufCMessage *src)
{
    const ProtobufCMessageDescriptor *md = dst->descriptor;
    for (unsigned i = 0; i < md->n_fields; i++) {
        merge_field(dst, src, &md->fields[i]);
    }
}

/* A deep copy through the encoding. */
static ProtobufCMessage *clone(const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *wire = xmalloc(len + 1);
    protobuf_c_message_pack(m, wire);
    ProtobufCMessage *c = protobuf_c_message_unpack(m->descriptor, NULL, len, wire);
    free(wire);
    return c;
}

ProtobufCMessage *pbmerge(const ProtobufCMessage *a, const ProtobufCMessage *b)
{
    ProtobufCMessage *m = clone(a);
    ProtobufCMessage *o = clone(b);
    if (m == NULL || o == NULL) {
        if (m != NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        if (o != NULL) {
            protobuf_c_message_free_unpacked(o, NULL);
        }
        return NULL;
    }
    merge_into(m, o);
    protobuf_c_message_free_unpacked(o, NULL);
    return m;
}
