/* pbjson: proto3 JSON <-> protobuf-c messages over message descriptors (see pbjson.h). Runs on
 * the config path only: bootstrap loading, xDS resource checks and /config_dump.
 *
 * Decoding never builds message structs by hand: it walks the JSON tree alongside the
 * descriptors and writes protobuf wire bytes (a sub-message is encoded into a scratch buffer,
 * then copied in behind its length), and protobuf_c_message_unpack() builds the message. That
 * keeps allocation and freeing entirely protobuf-c's, and makes JSON and binary input produce
 * identical messages. Encoding reads the structs through the descriptors' offsets.
 *
 * Owns nothing beyond a call; no global state. */
#include "proxy/config/pbjson.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "proxy/core/buf.h"
#include "proxy/core/xmalloc.h"

#define PATH_CAP 768
/* Nesting limit for JSON input and for messages decoded from binary: Struct and Value recurse,
 * and each level costs C stack. */
#define DEPTH_MAX 64
/* proto3 JSON: Duration spans +-10000 years. */
#define DURATION_MAX_SECONDS 315576000000LL

enum wire {
    WIRE_VARINT = 0,
    WIRE_FIXED64 = 1,
    WIRE_LEN = 2,
    WIRE_FIXED32 = 5,
};

/* ---- field paths ("static_resources.clusters[1].lb_policy") ---- */

struct path {
    char buf[PATH_CAP];
    size_t len;
};

static void path_init(struct path *p, const char *prefix)
{
    p->len = 0;
    p->buf[0] = '\0';
    if (prefix != NULL) {
        int n = snprintf(p->buf, sizeof(p->buf), "%s", prefix);
        p->len = n < 0 ? 0 : (size_t)n < sizeof(p->buf) ? (size_t)n : sizeof(p->buf) - 1;
    }
}

/* Appends a segment; a leading '.' is dropped at the start of the path. Returns the old
 * length, for path_pop. A path too long for the buffer is cut, never overflowed. */
__attribute__((format(printf, 2, 3))) static size_t path_push(struct path *p, const char *fmt, ...)
{
    size_t old = p->len;
    if (p->len == 0 && fmt[0] == '.') {
        fmt++;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(p->buf + p->len, sizeof(p->buf) - p->len, fmt, ap);
    va_end(ap);
    if (n > 0) {
        p->len += (size_t)n;
        if (p->len >= sizeof(p->buf)) {
            p->len = sizeof(p->buf) - 1;
        }
    }
    return old;
}

static void path_pop(struct path *p, size_t old)
{
    p->len = old;
    p->buf[old] = '\0';
}

/* ---- descriptor helpers ---- */

enum wkt {
    WKT_NONE,
    WKT_ANY,
    WKT_DURATION,
    WKT_STRUCT,
    WKT_VALUE,
    WKT_LIST,
    WKT_WRAPPER,
};

/* The well-known types with a special JSON form, recognised by full name so that the mapper
 * stays generic over descriptors. */
static enum wkt wkt_of(const ProtobufCMessageDescriptor *md)
{
    static const char pfx[] = "google.protobuf.";
    if (strncmp(md->name, pfx, sizeof(pfx) - 1) != 0) {
        return WKT_NONE;
    }
    const char *n = md->name + sizeof(pfx) - 1;
    if (strcmp(n, "Any") == 0) {
        return WKT_ANY;
    }
    if (strcmp(n, "Duration") == 0) {
        return WKT_DURATION;
    }
    if (strcmp(n, "Struct") == 0) {
        return WKT_STRUCT;
    }
    if (strcmp(n, "Value") == 0) {
        return WKT_VALUE;
    }
    if (strcmp(n, "ListValue") == 0) {
        return WKT_LIST;
    }
    size_t l = strlen(n);
    if (l > 5 && strcmp(n + l - 5, "Value") == 0 && md->n_fields == 1 &&
        strcmp(md->fields[0].name, "value") == 0) {
        return WKT_WRAPPER;
    }
    return WKT_NONE;
}

/* protoc-c turns map<K, V> into a repeated nested "<Name>Entry" message {key = 1; value = 2}
 * and keeps no flag for it, so recognise the shape. */
bool pbjson_is_map_entry(const ProtobufCMessageDescriptor *md)
{
    size_t l = strlen(md->short_name);
    return md->n_fields == 2 && l > 5 && strcmp(md->short_name + l - 5, "Entry") == 0 &&
           md->fields[0].id == 1 && strcmp(md->fields[0].name, "key") == 0 &&
           md->fields[1].id == 2 && strcmp(md->fields[1].name, "value") == 0;
}

static bool is_map_field(const ProtobufCFieldDescriptor *f)
{
    return f->label == PROTOBUF_C_LABEL_REPEATED && f->type == PROTOBUF_C_TYPE_MESSAGE &&
           pbjson_is_map_entry(f->descriptor);
}

/* Does `key` equal the lowerCamelCase form of snake_case `name` (protoc's json_name rule: drop
 * each '_' and upper-case the character after it)? */
static bool camel_eq(const char *name, const char *key)
{
    bool up = false;
    for (; *name != '\0'; name++) {
        if (*name == '_') {
            up = true;
            continue;
        }
        char c = *name;
        if (up && c >= 'a' && c <= 'z') {
            c = (char)(c - 'a' + 'A');
        }
        up = false;
        if (*key++ != c) {
            return false;
        }
    }
    return *key == '\0';
}

static const ProtobufCFieldDescriptor *find_field(const ProtobufCMessageDescriptor *md,
                                                  const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(md, key);
    if (f != NULL) {
        return f;
    }
    for (unsigned i = 0; i < md->n_fields; i++) {
        if (camel_eq(md->fields[i].name, key)) {
            return &md->fields[i];
        }
    }
    return NULL;
}

const char *pbjson_type_name(const char *type_url, size_t *len)
{
    const char *slash = strrchr(type_url, '/');
    const char *name = slash != NULL ? slash + 1 : type_url;
    *len = strlen(name);
    return name;
}

/* ---- base64 (proto3 JSON bytes: standard alphabet, URL-safe accepted on input) ---- */

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+' || c == '-') {
        return 62;
    }
    if (c == '/' || c == '_') {
        return 63;
    }
    return -1;
}

static bool b64_decode(const char *s, size_t n, struct buf *out)
{
    while (n > 0 && s[n - 1] == '=') {
        n--;
    }
    if (n % 4 == 1) {
        return false;
    }
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            uint8_t byte = (uint8_t)(acc >> bits);
            buf_append(out, &byte, 1);
        }
    }
    return true;
}

static json_t *b64_encode(const uint8_t *p, size_t n)
{
    size_t olen = (n + 2) / 3 * 4;
    char *o = xmalloc(olen + 1);
    size_t j = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)p[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= p[i + 2];
        }
        o[j++] = b64_chars[(v >> 18) & 63];
        o[j++] = b64_chars[(v >> 12) & 63];
        o[j++] = i + 1 < n ? b64_chars[(v >> 6) & 63] : '=';
        o[j++] = i + 2 < n ? b64_chars[v & 63] : '=';
    }
    json_t *s = json_stringn(o, j);
    free(o);
    return s;
}

/* ---- JSON -> wire bytes ---- */

struct dec {
    pbjson_resolve_cb resolve;
    struct err *err;
    struct path path;
    unsigned depth;
};

__attribute__((format(printf, 2, 3))) static int dfail(struct dec *d, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(d->err, d->path.buf, "%s", msg);
}

/* A short description of a JSON value for error messages. */
static const char *jdesc(const json_t *v, char *b, size_t cap)
{
    switch (json_typeof(v)) {
    case JSON_STRING: {
        size_t n = json_string_length(v);
        snprintf(b, cap, "\"%.*s%s\"", n > 48 ? 48 : (int)n, json_string_value(v),
                 n > 48 ? "..." : "");
        return b;
    }
    case JSON_INTEGER:
        snprintf(b, cap, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return b;
    case JSON_REAL:
        snprintf(b, cap, "%g", json_real_value(v));
        return b;
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    case JSON_NULL:
        return "null";
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    }
    return "?";
}

static void put_varint(struct buf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    while (v >= 0x80) {
        tmp[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[n++] = (uint8_t)v;
    buf_append(b, tmp, n);
}

static void put_tag(struct buf *b, uint32_t id, enum wire wt)
{
    put_varint(b, ((uint64_t)id << 3) | (uint64_t)wt);
}

static void put_fixed32(struct buf *b, uint32_t v)
{
    uint8_t t[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_append(b, t, 4);
}

static void put_fixed64(struct buf *b, uint64_t v)
{
    put_fixed32(b, (uint32_t)v);
    put_fixed32(b, (uint32_t)(v >> 32));
}

static void put_bytes(struct buf *b, uint32_t id, const void *p, size_t len)
{
    put_tag(b, id, WIRE_LEN);
    put_varint(b, len);
    buf_append(b, p, len);
}

/* Appends field `id` holding the bytes accumulated in `sub`. */
static void put_sub(struct buf *b, uint32_t id, const struct buf *sub)
{
    size_t n = buf_len(sub);
    put_bytes(b, id, n > 0 ? (const void *)buf_head(sub) : "", n);
}

static bool all_digits(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

/* An integral JSON number, or a decimal string, within [min, max]. */
static int get_int(struct dec *d, const json_t *v, int64_t min, int64_t max, const char *tname,
                   int64_t *out)
{
    char tmp[80];
    int64_t x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        /* 9.2e18 keeps the cast below defined; larger values are out of range anyway. */
        if (r != floor(r) || r < -9.2e18 || r > 9.2e18) {
            return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
        }
        x = (int64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (!all_digits(s[0] == '-' ? s + 1 : s)) {
            return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
        }
        errno = 0;
        long long ll = strtoll(s, NULL, 10);
        if (errno == ERANGE) {
            return dfail(d, "value %s out of range for %s", s, tname);
        }
        x = ll;
    } else {
        return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
    }
    if (x < min || x > max) {
        return dfail(d, "value %" PRId64 " out of range for %s", x, tname);
    }
    *out = x;
    return 0;
}

static int get_uint(struct dec *d, const json_t *v, uint64_t max, const char *tname, uint64_t *out)
{
    char tmp[80];
    uint64_t x;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0) {
            return dfail(d, "value %" JSON_INTEGER_FORMAT " out of range for %s", i, tname);
        }
        x = (uint64_t)i;
    } else if (json_is_real(v)) {
        double r = json_real_value(v);
        if (r != floor(r) || r < 0 || r > 1.8e19) {
            return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
        }
        x = (uint64_t)r;
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (s[0] == '-' && all_digits(s + 1)) {
            return dfail(d, "value %s out of range for %s", s, tname);
        }
        if (!all_digits(s)) {
            return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
        }
        errno = 0;
        unsigned long long ull = strtoull(s, NULL, 10);
        if (errno == ERANGE) {
            return dfail(d, "value %s out of range for %s", s, tname);
        }
        x = ull;
    } else {
        return dfail(d, "expected an integer (%s), got %s", tname, jdesc(v, tmp, sizeof(tmp)));
    }
    if (x > max) {
        return dfail(d, "value %" PRIu64 " out of range for %s", x, tname);
    }
    *out = x;
    return 0;
}

static int get_double(struct dec *d, const json_t *v, double *out)
{
    char tmp[80];
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        if (strcmp(s, "NaN") == 0) {
            *out = NAN;
            return 0;
        }
        if (strcmp(s, "Infinity") == 0 || strcmp(s, "-Infinity") == 0) {
            *out = s[0] == '-' ? -INFINITY : INFINITY;
            return 0;
        }
        char *end;
        errno = 0;
        double x = strtod(s, &end);
        if (end != s && *end == '\0' && errno == 0 && isfinite(x)) {
            *out = x;
            return 0;
        }
    }
    return dfail(d, "expected a number, got %s", jdesc(v, tmp, sizeof(tmp)));
}

static int dec_enum(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v, int32_t *out)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    char tmp[80];
    const ProtobufCEnumValue *ev = NULL;
    if (json_is_string(v)) {
        ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(v));
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i >= INT32_MIN && i <= INT32_MAX) {
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)i);
        }
    } else {
        return dfail(d, "expected an enum name (%s), got %s", ed->name, jdesc(v, tmp, sizeof(tmp)));
    }
    if (ev == NULL) {
        char names[400];
        size_t off = 0;
        names[0] = '\0';
        for (unsigned i = 0; i < ed->n_values && off < sizeof(names); i++) {
            int n = snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "",
                             ed->values[i].name);
            off += n > 0 ? (size_t)n : 0;
        }
        return dfail(d, "unknown value %s for %s (expected one of %s)", jdesc(v, tmp, sizeof(tmp)),
                     ed->name, names);
    }
    *out = ev->value;
    return 0;
}

static int dec_msg(struct dec *d, const ProtobufCMessageDescriptor *md, const json_t *v,
                   struct buf *out);

/* Appends one value (not a list) of field `f`, tag included. */
static int dec_one(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                   struct buf *out)
{
    char tmp[80];
    int64_t i = 0;
    uint64_t u = 0;
    double x = 0;
    int rc = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
        if ((rc = get_int(d, v, INT32_MIN, INT32_MAX, "int32", &i)) == 0) {
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, (uint64_t)i);
        }
        return rc;
    case PROTOBUF_C_TYPE_SINT32:
        if ((rc = get_int(d, v, INT32_MIN, INT32_MAX, "sint32", &i)) == 0) {
            uint32_t z = ((uint32_t)i << 1) ^ (uint32_t)((int32_t)i >> 31);
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, z);
        }
        return rc;
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((rc = get_int(d, v, INT32_MIN, INT32_MAX, "sfixed32", &i)) == 0) {
            put_tag(out, f->id, WIRE_FIXED32);
            put_fixed32(out, (uint32_t)i);
        }
        return rc;
    case PROTOBUF_C_TYPE_INT64:
        if ((rc = get_int(d, v, INT64_MIN, INT64_MAX, "int64", &i)) == 0) {
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, (uint64_t)i);
        }
        return rc;
    case PROTOBUF_C_TYPE_SINT64:
        if ((rc = get_int(d, v, INT64_MIN, INT64_MAX, "sint64", &i)) == 0) {
            uint64_t z = ((uint64_t)i << 1) ^ (uint64_t)(i >> 63);
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, z);
        }
        return rc;
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((rc = get_int(d, v, INT64_MIN, INT64_MAX, "sfixed64", &i)) == 0) {
            put_tag(out, f->id, WIRE_FIXED64);
            put_fixed64(out, (uint64_t)i);
        }
        return rc;
    case PROTOBUF_C_TYPE_UINT32:
        if ((rc = get_uint(d, v, UINT32_MAX, "uint32", &u)) == 0) {
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, u);
        }
        return rc;
    case PROTOBUF_C_TYPE_FIXED32:
        if ((rc = get_uint(d, v, UINT32_MAX, "fixed32", &u)) == 0) {
            put_tag(out, f->id, WIRE_FIXED32);
            put_fixed32(out, (uint32_t)u);
        }
        return rc;
    case PROTOBUF_C_TYPE_UINT64:
        if ((rc = get_uint(d, v, UINT64_MAX, "uint64", &u)) == 0) {
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, u);
        }
        return rc;
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = get_uint(d, v, UINT64_MAX, "fixed64", &u)) == 0) {
            put_tag(out, f->id, WIRE_FIXED64);
            put_fixed64(out, u);
        }
        return rc;
    case PROTOBUF_C_TYPE_FLOAT: {
        if ((rc = get_double(d, v, &x)) != 0) {
            return rc;
        }
        if (isfinite(x) && fabs(x) > FLT_MAX) {
            return dfail(d, "value %g out of range for float", x);
        }
        float fl = (float)x;
        uint32_t bits;
        memcpy(&bits, &fl, sizeof(bits));
        put_tag(out, f->id, WIRE_FIXED32);
        put_fixed32(out, bits);
        return 0;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        if ((rc = get_double(d, v, &x)) != 0) {
            return rc;
        }
        uint64_t bits;
        memcpy(&bits, &x, sizeof(bits));
        put_tag(out, f->id, WIRE_FIXED64);
        put_fixed64(out, bits);
        return 0;
    }
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) {
            return dfail(d, "expected true or false, got %s", jdesc(v, tmp, sizeof(tmp)));
        }
        put_tag(out, f->id, WIRE_VARINT);
        put_varint(out, json_is_true(v) ? 1 : 0);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        int32_t e = 0;
        if ((rc = dec_enum(d, f, v, &e)) == 0) {
            put_tag(out, f->id, WIRE_VARINT);
            put_varint(out, (uint64_t)(int64_t)e);
        }
        return rc;
    }
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) {
            return dfail(d, "expected a string, got %s", jdesc(v, tmp, sizeof(tmp)));
        }
        /* protobuf-c hands strings out NUL-terminated: an embedded NUL would silently cut
         * the value short everywhere it is used. */
        if (memchr(json_string_value(v), '\0', json_string_length(v)) != NULL) {
            return dfail(d, "string contains a NUL character");
        }
        put_bytes(out, f->id, json_string_value(v), json_string_length(v));
        return 0;
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(v)) {
            return dfail(d, "expected a base64 string, got %s", jdesc(v, tmp, sizeof(tmp)));
        }
        struct buf raw;
        buf_init(&raw);
        if (!b64_decode(json_string_value(v), json_string_length(v), &raw)) {
            buf_deinit(&raw);
            return dfail(d, "invalid base64 %s", jdesc(v, tmp, sizeof(tmp)));
        }
        put_sub(out, f->id, &raw);
        buf_deinit(&raw);
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        struct buf sub;
        buf_init(&sub);
        rc = dec_msg(d, f->descriptor, v, &sub);
        if (rc == 0) {
            put_sub(out, f->id, &sub);
        }
        buf_deinit(&sub);
        return rc;
    }
    }
    return dfail(d, "unsupported field type %d", (int)f->type);
}

/* A JSON object into a map field: one entry message per key. Keys are strings (every map in
 * the Envoy API is map<string, V>). */
static int dec_map(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                   struct buf *out)
{
    char tmp[80];
    const ProtobufCMessageDescriptor *emd = f->descriptor;
    if (!json_is_object(v)) {
        return dfail(d, "expected an object (a map), got %s", jdesc(v, tmp, sizeof(tmp)));
    }
    if (emd->fields[0].type != PROTOBUF_C_TYPE_STRING) {
        return dfail(d, "maps with non-string keys are not supported");
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        size_t mark = path_push(&d->path, ".%s", key);
        struct buf entry;
        buf_init(&entry);
        put_bytes(&entry, 1, key, strlen(key));
        int rc = 0;
        bool is_value = emd->fields[1].type == PROTOBUF_C_TYPE_MESSAGE &&
                        wkt_of(emd->fields[1].descriptor) == WKT_VALUE;
        if (!json_is_null(val) || is_value) {
            rc = dec_one(d, &emd->fields[1], val, &entry);
        }
        if (rc == 0) {
            put_sub(out, f->id, &entry);
        }
        buf_deinit(&entry);
        if (rc != 0) {
            return rc;
        }
        path_pop(&d->path, mark);
    }
    return 0;
}

static int dec_repeated(struct dec *d, const ProtobufCFieldDescriptor *f, const json_t *v,
                        struct buf *out)
{
    char tmp[80];
    if (is_map_field(f)) {
        return dec_map(d, f, v, out);
    }
    if (!json_is_array(v)) {
        return dfail(d, "expected an array, got %s", jdesc(v, tmp, sizeof(tmp)));
    }
    for (size_t i = 0; i < json_array_size(v); i++) {
        size_t mark = path_push(&d->path, "[%zu]", i);
        const json_t *e = json_array_get(v, i);
        bool is_value = f->type == PROTOBUF_C_TYPE_MESSAGE && wkt_of(f->descriptor) == WKT_VALUE;
        if (json_is_null(e) && !is_value) {
            return dfail(d, "null is not allowed in a list");
        }
        int rc = dec_one(d, f, e, out);
        if (rc != 0) {
            return rc;
        }
        path_pop(&d->path, mark);
    }
    return 0;
}

/* The fields of a JSON object into message `md`, skipping key `skip` (Any's "@type"). */
static int dec_fields(struct dec *d, const ProtobufCMessageDescriptor *md, const json_t *obj,
                      const char *skip, struct buf *out)
{
    /* seen: the field appeared (under either name); set: it holds a value (non-null), which is
     * what counts for oneofs. */
    bool *seen = xcalloc(md->n_fields + 1, sizeof(bool));
    bool *set = xcalloc(md->n_fields + 1, sizeof(bool));
    int rc = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        if (skip != NULL && strcmp(key, skip) == 0) {
            continue;
        }
        size_t mark = path_push(&d->path, ".%s", key);
        const ProtobufCFieldDescriptor *f = find_field(md, key);
        if (f == NULL) {
            rc = dfail(d, "unknown field");
            goto out;
        }
        size_t idx = (size_t)(f - md->fields);
        if (seen[idx]) {
            rc = dfail(d, "field '%s' is set twice", f->name);
            goto out;
        }
        seen[idx] = true;
        bool is_value = f->label != PROTOBUF_C_LABEL_REPEATED &&
                        f->type == PROTOBUF_C_TYPE_MESSAGE && wkt_of(f->descriptor) == WKT_VALUE;
        if (json_is_null(val) && !is_value) {
            /* proto3 JSON: null is the field's default, i.e. not set. */
            path_pop(&d->path, mark);
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            for (unsigned j = 0; j < md->n_fields; j++) {
                const ProtobufCFieldDescriptor *g = &md->fields[j];
                if (set[j] && (g->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                    g->quantifier_offset == f->quantifier_offset) {
                    rc = dfail(d, "conflicts with '%s': only one of them may be set (oneof)",
                               g->name);
                    goto out;
                }
            }
        }
        set[idx] = true;
        rc = f->label == PROTOBUF_C_LABEL_REPEATED ? dec_repeated(d, f, val, out)
                                                   : dec_one(d, f, val, out);
        if (rc != 0) {
            goto out;
        }
        path_pop(&d->path, mark);
    }
out:
    free(seen);
    free(set);
    return rc;
}

/* "1.5s", "-0.000000001s", "300s": an optional '-', decimal seconds, up to nine fractional
 * digits, then 's'. */
static bool parse_duration(const char *s, int64_t *sec, int32_t *nanos)
{
    bool neg = false;
    if (*s == '-') {
        neg = true;
        s++;
    }
    if (*s < '0' || *s > '9') {
        return false;
    }
    int64_t secs = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        secs = secs * 10 + (*s - '0');
        if (secs > DURATION_MAX_SECONDS) {
            return false;
        }
    }
    int32_t ns = 0;
    if (*s == '.') {
        s++;
        int digits = 0;
        for (; *s >= '0' && *s <= '9'; s++) {
            if (++digits > 9) {
                return false;
            }
            ns = ns * 10 + (*s - '0');
        }
        if (digits == 0) {
            return false;
        }
        for (; digits < 9; digits++) {
            ns *= 10;
        }
    }
    if (s[0] != 's' || s[1] != '\0') {
        return false;
    }
    *sec = neg ? -secs : secs;
    *nanos = neg ? -ns : ns;
    return true;
}

static int dec_duration(struct dec *d, const ProtobufCMessageDescriptor *md, const json_t *v,
                        struct buf *out)
{
    char tmp[80];
    if (json_is_object(v)) {
        return dec_fields(d, md, v, NULL, out);
    }
    int64_t sec;
    int32_t ns;
    if (!json_is_string(v) || !parse_duration(json_string_value(v), &sec, &ns)) {
        return dfail(d, "invalid duration %s (expected e.g. \"1.5s\")", jdesc(v, tmp, sizeof(tmp)));
    }
    if (sec != 0) {
        put_tag(out, 1, WIRE_VARINT);
        put_varint(out, (uint64_t)sec);
    }
    if (ns != 0) {
        put_tag(out, 2, WIRE_VARINT);
        put_varint(out, (uint64_t)(int64_t)ns);
    }
    return 0;
}

/* google.protobuf.Value: any JSON value into its `kind` oneof. */
static int dec_value(struct dec *d, const ProtobufCMessageDescriptor *md, const json_t *v,
                     struct buf *out)
{
    uint64_t bits;
    double x;
    switch (json_typeof(v)) {
    case JSON_NULL:
        put_tag(out, 1, WIRE_VARINT);
        put_varint(out, 0);
        return 0;
    case JSON_INTEGER:
    case JSON_REAL:
        x = json_number_value(v);
        memcpy(&bits, &x, sizeof(bits));
        put_tag(out, 2, WIRE_FIXED64);
        put_fixed64(out, bits);
        return 0;
    case JSON_STRING:
        put_bytes(out, 3, json_string_value(v), json_string_length(v));
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        put_tag(out, 4, WIRE_VARINT);
        put_varint(out, json_is_true(v) ? 1 : 0);
        return 0;
    case JSON_OBJECT:
    case JSON_ARRAY: {
        unsigned id = json_is_object(v) ? 5 : 6;
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(md, id);
        return dec_one(d, f, v, out);
    }
    }
    return dfail(d, "unsupported JSON value");
}

static int dec_any(struct dec *d, const json_t *v, struct buf *out)
{
    char tmp[80];
    if (!json_is_object(v)) {
        return dfail(d, "expected an object with \"@type\", got %s", jdesc(v, tmp, sizeof(tmp)));
    }
    const json_t *t = json_object_get(v, "@type");
    if (t == NULL) {
        return dfail(d, "missing \"@type\"");
    }
    size_t mark = path_push(&d->path, ".@type");
    if (!json_is_string(t)) {
        return dfail(d, "expected a type URL string, got %s", jdesc(t, tmp, sizeof(tmp)));
    }
    const char *url = json_string_value(t);
    size_t nlen;
    const char *name = pbjson_type_name(url, &nlen);
    if (name == url || nlen == 0) {
        return dfail(d, "invalid type URL \"%s\" (expected \"type.googleapis.com/<message>\")",
                     url);
    }
    const ProtobufCMessageDescriptor *md = d->resolve ? d->resolve(name, nlen) : NULL;
    if (md == NULL) {
        return dfail(d, "unknown type \"%s\"", url);
    }
    path_pop(&d->path, mark);

    struct buf body;
    buf_init(&body);
    int rc;
    if (wkt_of(md) != WKT_NONE) {
        /* Well-known types inside an Any carry their JSON form under "value". */
        const char *key;
        json_t *val;
        rc = 0;
        json_object_foreach((json_t *)v, key, val)
        {
            if (strcmp(key, "@type") != 0 && strcmp(key, "value") != 0) {
                path_push(&d->path, ".%s", key);
                rc = dfail(d, "unknown field");
                break;
            }
        }
        const json_t *jv = json_object_get(v, "value");
        if (rc == 0 && jv == NULL) {
            rc = dfail(d, "missing \"value\" for %s", md->name);
        }
        if (rc == 0) {
            mark = path_push(&d->path, ".value");
            rc = dec_msg(d, md, jv, &body);
            if (rc == 0) {
                path_pop(&d->path, mark);
            }
        }
    } else {
        rc = dec_fields(d, md, v, "@type", &body);
    }
    if (rc == 0) {
        /* Repack through protobuf-c so that the payload bytes are canonical (field-number
         * order) whatever the JSON key order was: equal configs give equal Any bytes. */
        size_t n = buf_len(&body);
        ProtobufCMessage *inner =
            protobuf_c_message_unpack(md, NULL, n, n > 0 ? buf_head(&body) : (const uint8_t *)"");
        if (inner == NULL) {
            rc = dfail(d, "internal error: %s did not unpack", md->name);
        } else {
            size_t plen = protobuf_c_message_get_packed_size(inner);
            uint8_t *packed = xmalloc(plen + 1);
            protobuf_c_message_pack(inner, packed);
            put_bytes(out, 1, url, strlen(url));
            put_bytes(out, 2, packed, plen);
            free(packed);
            protobuf_c_message_free_unpacked(inner, NULL);
        }
    }
    buf_deinit(&body);
    return rc;
}

/* The body (fields, no tag) of one message of type `md` from JSON value `v`. */
static int dec_msg(struct dec *d, const ProtobufCMessageDescriptor *md, const json_t *v,
                   struct buf *out)
{
    char tmp[80];
    if (d->depth >= DEPTH_MAX) {
        return dfail(d, "nested deeper than %d levels", DEPTH_MAX);
    }
    d->depth++;
    int rc;
    switch (wkt_of(md)) {
    case WKT_DURATION:
        rc = dec_duration(d, md, v, out);
        break;
    case WKT_WRAPPER:
        rc = dec_one(d, &md->fields[0], v, out);
        break;
    case WKT_STRUCT:
        rc = dec_map(d, &md->fields[0], v, out);
        break;
    case WKT_VALUE:
        rc = dec_value(d, md, v, out);
        break;
    case WKT_LIST:
        rc = dec_repeated(d, &md->fields[0], v, out);
        break;
    case WKT_ANY:
        rc = dec_any(d, v, out);
        break;
    case WKT_NONE:
    default:
        rc = json_is_object(v) ? dec_fields(d, md, v, NULL, out)
                               : dfail(d, "expected an object, got %s", jdesc(v, tmp, sizeof(tmp)));
        break;
    }
    d->depth--;
    return rc;
}

ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, const json_t *json,
                                pbjson_resolve_cb resolve, const char *path, struct err *err)
{
    struct dec d = {.resolve = resolve, .err = err, .depth = 0};
    path_init(&d.path, path);
    struct buf body;
    buf_init(&body);
    ProtobufCMessage *m = NULL;
    if (dec_msg(&d, desc, json, &body) == 0) {
        size_t n = buf_len(&body);
        m = protobuf_c_message_unpack(desc, NULL, n, n > 0 ? buf_head(&body) : (const uint8_t *)"");
        if (m == NULL) {
            err_set(err, d.path.buf, "internal error: %s did not unpack", desc->name);
        }
    }
    buf_deinit(&body);
    return m;
}

/* ---- message -> JSON ---- */

struct enc {
    pbjson_resolve_cb resolve;
    unsigned depth;
};

static json_t *must(json_t *j)
{
    if (j == NULL) {
        fprintf(stderr, "remora: out of memory building JSON\n");
        abort();
    }
    return j;
}

/* jansson refuses invalid UTF-8, which a binary-decoded string may hold: replace such bytes
 * with '?' rather than drop the value. */
static json_t *jstr(const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j != NULL) {
        return j;
    }
    char *c = xstrndup(s, n);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)c[i] >= 0x80 || c[i] == '\0') {
            c[i] = '?';
        }
    }
    j = must(json_stringn(c, n));
    free(c);
    return j;
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* Is field `f` set in `m`, by proto3 rules: a repeated field with elements, the selected oneof
 * member, a present sub-message or optional, or a plain scalar that is not zero/empty. */
static bool field_present(const ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    const char *p = base + f->offset;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
        return *(const size_t *)(base + f->quantifier_offset) > 0;
    }
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        return *(const uint32_t *)(base + f->quantifier_offset) == f->id;
    }
    if (f->label == PROTOBUF_C_LABEL_REQUIRED) {
        return true;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        return *(ProtobufCMessage *const *)p != NULL;
    }
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        const char *s = *(char *const *)p;
        return s != NULL && s[0] != '\0';
    }
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL) {
        return *(const protobuf_c_boolean *)(base + f->quantifier_offset) != 0;
    }
    if (f->type == PROTOBUF_C_TYPE_BYTES) {
        return ((const ProtobufCBinaryData *)p)->len > 0;
    }
    static const uint8_t zero[8];
    return memcmp(p, zero, elem_size(f->type)) != 0;
}

static json_t *enc_msg(struct enc *e, const ProtobufCMessage *m);

static json_t *enc_double(double x)
{
    if (isnan(x)) {
        return must(json_string("NaN"));
    }
    if (isinf(x)) {
        return must(json_string(x > 0 ? "Infinity" : "-Infinity"));
    }
    return must(json_real(x));
}

/* One value (not a list) of field `f` stored at `p`. */
static json_t *enc_elem(struct enc *e, const ProtobufCFieldDescriptor *f, const void *p)
{
    char tmp[32];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return must(json_integer(*(const int32_t *)p));
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return must(json_integer(*(const uint32_t *)p));
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(tmp, sizeof(tmp), "%" PRId64, *(const int64_t *)p);
        return must(json_string(tmp));
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(tmp, sizeof(tmp), "%" PRIu64, *(const uint64_t *)p);
        return must(json_string(tmp));
    case PROTOBUF_C_TYPE_FLOAT:
        return enc_double(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return enc_double(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return must(json_boolean(*(const protobuf_c_boolean *)p));
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        return must(ev != NULL ? json_string(ev->name) : json_integer(v));
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s != NULL ? jstr(s, strlen(s)) : must(json_string(""));
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        return must(b64_encode(b->data, b->len));
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sm = *(ProtobufCMessage *const *)p;
        return sm != NULL ? enc_msg(e, sm) : must(json_null());
    }
    }
    return must(json_null());
}

static json_t *enc_field(struct enc *e, const ProtobufCMessage *m,
                         const ProtobufCFieldDescriptor *f)
{
    const char *base = (const char *)m;
    if (f->label != PROTOBUF_C_LABEL_REPEATED) {
        return enc_elem(e, f, base + f->offset);
    }
    size_t n = *(const size_t *)(base + f->quantifier_offset);
    const char *arr = *(char *const *)(base + f->offset);
    size_t sz = elem_size(f->type);
    if (is_map_field(f)) {
        json_t *o = must(json_object());
        for (size_t i = 0; i < n; i++) {
            const ProtobufCMessage *entry = *(ProtobufCMessage *const *)(arr + i * sz);
            const ProtobufCMessageDescriptor *emd = entry->descriptor;
            const char *key = *(char *const *)((const char *)entry + emd->fields[0].offset);
            json_object_set_new(
                o, key ? key : "",
                enc_elem(e, &emd->fields[1], (const char *)entry + emd->fields[1].offset));
        }
        return o;
    }
    json_t *a = must(json_array());
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, enc_elem(e, f, arr + i * sz));
    }
    return a;
}

static json_t *enc_duration(const Google__Protobuf__Duration *d)
{
    char tmp[64];
    int64_t s = d->seconds;
    int32_t ns = d->nanos;
    bool neg = s < 0 || ns < 0;
    uint64_t as = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    uint32_t an = ns < 0 ? (uint32_t)0 - (uint32_t)ns : (uint32_t)ns;
    if (an == 0) {
        snprintf(tmp, sizeof(tmp), "%s%" PRIu64 "s", neg ? "-" : "", as);
    } else if (an % 1000000 == 0) {
        snprintf(tmp, sizeof(tmp), "%s%" PRIu64 ".%03" PRIu32 "s", neg ? "-" : "", as,
                 an / 1000000);
    } else if (an % 1000 == 0) {
        snprintf(tmp, sizeof(tmp), "%s%" PRIu64 ".%06" PRIu32 "s", neg ? "-" : "", as, an / 1000);
    } else {
        snprintf(tmp, sizeof(tmp), "%s%" PRIu64 ".%09" PRIu32 "s", neg ? "-" : "", as, an);
    }
    return must(json_string(tmp));
}

/* A varint at *p (before `end`), advancing *p; false when truncated or too long. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end) {
            return false;
        }
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            return true;
        }
    }
    return false;
}

/* Whether the binary message `p[len]` of type `md` nests messages at most `left` levels deep,
 * found by walking the wire with the descriptors, without unpacking. protobuf-c unpacks
 * recursively with no limit of its own, and some types nest themselves (RBAC's Permission and
 * Principal, Struct's Value): a few hundred KiB of nested bytes would overflow the stack. This
 * walk recurses at most DEPTH_MAX levels. Malformed bytes pass (unpacking refuses them). */
static bool wire_depth_ok(const ProtobufCMessageDescriptor *md, const uint8_t *p, size_t len,
                          unsigned left)
{
    if (len == 0) {
        return true; /* an empty Any's data may be NULL */
    }
    const uint8_t *end = p + len;
    while (p < end) {
        uint64_t key, v;
        if (!wire_varint(&p, end, &key)) {
            return true;
        }
        switch ((enum wire)(key & 7)) {
        case WIRE_VARINT:
            if (!wire_varint(&p, end, &v)) {
                return true;
            }
            break;
        case WIRE_FIXED64:
            if (end - p < 8) {
                return true;
            }
            p += 8;
            break;
        case WIRE_FIXED32:
            if (end - p < 4) {
                return true;
            }
            p += 4;
            break;
        case WIRE_LEN: {
            if (!wire_varint(&p, end, &v) || v > (uint64_t)(end - p)) {
                return true;
            }
            const ProtobufCFieldDescriptor *f =
                key >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(md, (unsigned)(key >> 3))
                    : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                if (left == 0 || !wire_depth_ok(f->descriptor, p, (size_t)v, left - 1)) {
                    return false;
                }
            }
            p += v;
            break;
        }
        default:
            return true; /* groups: protobuf-c refuses them */
        }
    }
    return true;
}

static json_t *enc_any(struct enc *e, const Google__Protobuf__Any *any)
{
    const char *url = any->type_url != NULL ? any->type_url : "";
    json_t *o = must(json_object());
    json_object_set_new(o, "@type", jstr(url, strlen(url)));
    size_t nlen;
    const char *name = pbjson_type_name(url, &nlen);
    const ProtobufCMessageDescriptor *md = e->resolve ? e->resolve(name, nlen) : NULL;
    ProtobufCMessage *inner = NULL;
    if (md != NULL && wire_depth_ok(md, any->value.data, any->value.len, DEPTH_MAX)) {
        inner = protobuf_c_message_unpack(md, NULL, any->value.len,
                                          any->value.len ? any->value.data : (const uint8_t *)"");
    }
    if (inner == NULL) {
        json_object_set_new(o, "value", must(b64_encode(any->value.data, any->value.len)));
        return o;
    }
    json_t *j = enc_msg(e, inner);
    if (wkt_of(md) != WKT_NONE || !json_is_object(j)) {
        json_object_set_new(o, "value", j);
    } else {
        json_object_update(o, j);
        json_decref(j);
    }
    protobuf_c_message_free_unpacked(inner, NULL);
    return o;
}

static json_t *enc_value(struct enc *e, const Google__Protobuf__Value *v)
{
    switch (v->kind_case) {
    case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
        return enc_double(v->number_value);
    case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
        return jstr(v->string_value, strlen(v->string_value));
    case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
        return must(json_boolean(v->bool_value));
    case GOOGLE__PROTOBUF__VALUE__KIND_STRUCT_VALUE:
        return v->struct_value ? enc_msg(e, &v->struct_value->base) : must(json_object());
    case GOOGLE__PROTOBUF__VALUE__KIND_LIST_VALUE:
        return v->list_value ? enc_msg(e, &v->list_value->base) : must(json_array());
    case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
    case GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET:
    default:
        return must(json_null());
    }
}

static json_t *enc_msg(struct enc *e, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    if (e->depth >= DEPTH_MAX) {
        return must(json_null());
    }
    e->depth++;
    json_t *j;
    switch (wkt_of(md)) {
    case WKT_DURATION:
        j = enc_duration((const Google__Protobuf__Duration *)m);
        break;
    case WKT_WRAPPER:
        j = enc_elem(e, &md->fields[0], (const char *)m + md->fields[0].offset);
        break;
    case WKT_STRUCT:
    case WKT_LIST:
        j = enc_field(e, m, &md->fields[0]);
        break;
    case WKT_VALUE:
        j = enc_value(e, (const Google__Protobuf__Value *)m);
        break;
    case WKT_ANY:
        j = enc_any(e, (const Google__Protobuf__Any *)m);
        break;
    case WKT_NONE:
    default:
        j = must(json_object());
        for (unsigned i = 0; i < md->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &md->fields[i];
            if (field_present(m, f)) {
                json_object_set_new(j, f->name, enc_field(e, m, f));
            }
        }
        break;
    }
    e->depth--;
    return j;
}

json_t *pbjson_encode(const ProtobufCMessage *msg, pbjson_resolve_cb resolve)
{
    struct enc e = {.resolve = resolve, .depth = 0};
    return enc_msg(&e, msg);
}

/* ---- unknown binary fields ---- */

struct unk {
    pbjson_resolve_cb resolve;
    struct err *err;
    struct path path;
    unsigned depth;
};

static int unk_msg(struct unk *u, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    if (m->n_unknown_fields > 0) {
        return err_set(u->err, u->path.buf, "unknown field %u", m->unknown_fields[0].tag);
    }
    if (u->depth >= DEPTH_MAX) {
        return err_set(u->err, u->path.buf, "nested deeper than %d levels", DEPTH_MAX);
    }
    u->depth++;
    int rc = 0;
    if (wkt_of(md) == WKT_ANY) {
        ProtobufCMessage *inner;
        rc = pbjson_any_unpack((const Google__Protobuf__Any *)m, u->resolve, u->path.buf, &inner,
                               u->err);
        if (rc == 0) {
            rc = unk_msg(u, inner);
            protobuf_c_message_free_unpacked(inner, NULL);
        }
        u->depth--;
        return rc;
    }
    for (unsigned i = 0; i < md->n_fields && rc == 0; i++) {
        const ProtobufCFieldDescriptor *f = &md->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE || !field_present(m, f)) {
            continue;
        }
        const char *p = (const char *)m + f->offset;
        if (f->label != PROTOBUF_C_LABEL_REPEATED) {
            size_t mark = path_push(&u->path, ".%s", f->name);
            rc = unk_msg(u, *(ProtobufCMessage *const *)p);
            path_pop(&u->path, mark);
            continue;
        }
        size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
        ProtobufCMessage *const *arr = *(ProtobufCMessage *const *const *)p;
        for (size_t k = 0; k < n && rc == 0; k++) {
            size_t mark = path_push(&u->path, ".%s[%zu]", f->name, k);
            rc = unk_msg(u, arr[k]);
            path_pop(&u->path, mark);
        }
    }
    u->depth--;
    return rc;
}

int pbjson_check_unknown(const ProtobufCMessage *msg, pbjson_resolve_cb resolve, const char *path,
                         struct err *err)
{
    struct unk u = {.resolve = resolve, .err = err, .depth = 0};
    path_init(&u.path, path);
    return unk_msg(&u, msg);
}

int pbjson_any_unpack(const Google__Protobuf__Any *any, pbjson_resolve_cb resolve, const char *path,
                      ProtobufCMessage **out, struct err *err)
{
    const char *url = any->type_url != NULL ? any->type_url : "";
    size_t nlen;
    const char *name = pbjson_type_name(url, &nlen);
    const ProtobufCMessageDescriptor *md = resolve != NULL ? resolve(name, nlen) : NULL;
    *out = NULL;
    if (md == NULL) {
        return err_set(err, path, "unknown type \"%s\"", url);
    }
    if (!wire_depth_ok(md, any->value.data, any->value.len, DEPTH_MAX)) {
        return err_set(err, path, "%s nested deeper than %d levels", md->name, DEPTH_MAX);
    }
    *out = protobuf_c_message_unpack(md, NULL, any->value.len,
                                     any->value.len ? any->value.data : (const uint8_t *)"");
    if (*out == NULL) {
        return err_set(err, path, "malformed %s value", md->name);
    }
    return 0;
}

const char *pbjson_first_set_field(const ProtobufCMessage *m, const char *const *allowed)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    for (unsigned i = 0; i < md->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &md->fields[i];
        bool ok = false;
        for (size_t k = 0; allowed != NULL && allowed[k] != NULL && !ok; k++) {
            ok = strcmp(allowed[k], f->name) == 0;
        }
        if (!ok && field_present(m, f)) {
            return f->name;
        }
    }
    return NULL;
}

bool pbjson_any_is(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *md)
{
    size_t n;
    const char *name = pbjson_type_name(any->type_url != NULL ? any->type_url : "", &n);
    return strlen(md->name) == n && memcmp(md->name, name, n) == 0;
}

int pbjson_resource_unpack(const Google__Protobuf__Any *any, const ProtobufCMessageDescriptor *md,
                           pbjson_resolve_cb resolve, const char *path, ProtobufCMessage **out,
                           struct err *err)
{
    *out = NULL;
    if (!pbjson_any_is(any, md)) {
        return err_set(err, path, "type '%s' is not type.googleapis.com/%s",
                       any->type_url != NULL ? any->type_url : "", md->name);
    }
    ProtobufCMessage *m = NULL;
    if (pbjson_any_unpack(any, resolve, path, &m, err) != 0 ||
        pbjson_check_unknown(m, resolve, path, err) != 0) {
        if (m != NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
        }
        return -EINVAL;
    }
    *out = m;
    return 0;
}
