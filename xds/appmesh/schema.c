/* schema: validation of App Mesh request bodies against the model's shapes (see schema.h).
 * A recursive walk over the JSON value and the shape table together, carrying the field path
 * in an fpath (the proxy's config builder's path type, so messages read the same). */
#include "xds/appmesh/schema.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>

#include "proxy/config/fpath.h"

const struct schema_shape *schema_find(const char *name)
{
    for (size_t i = 0; i < schema_n_shapes; i++) {
        if (strcmp(schema_shapes[i].name, name) == 0) {
            return &schema_shapes[i];
        }
    }
    return NULL;
}

static int fail(struct fpath *fp, struct err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct fpath *fp, struct err *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fpath_vfail(fp, err, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* Characters, not bytes: the model's lengths count characters (jansson has checked UTF-8). */
static size_t utf8_chars(const char *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        n += ((unsigned char)s[i] & 0xc0) != 0x80;
    }
    return n;
}

static const char *type_name(enum schema_type t)
{
    switch (t) {
    case SCHEMA_STRUCT:
        return "an object";
    case SCHEMA_LIST:
        return "an array";
    case SCHEMA_STRING:
        return "a string";
    case SCHEMA_INT:
    case SCHEMA_LONG:
        return "an integer";
    case SCHEMA_BOOL:
        return "a boolean";
    case SCHEMA_TIMESTAMP:
        return "a timestamp";
    }
    return "?";
}

static int check_range(struct fpath *fp, struct err *err, const struct schema_shape *sh, int64_t v,
                       const char *what)
{
    if (sh->has_min && sh->has_max && (v < sh->min || v > sh->max)) {
        return fail(fp, err, "%s %" PRId64 "-%" PRId64, what, sh->min, sh->max);
    }
    if (sh->has_min && v < sh->min) {
        return fail(fp, err, "%s at least %" PRId64, what, sh->min);
    }
    if (sh->has_max && v > sh->max) {
        return fail(fp, err, "%s at most %" PRId64, what, sh->max);
    }
    return 0;
}

static int walk(const struct schema_shape *sh, const json_t *v, struct fpath *fp, struct err *err,
                int depth);

static int walk_struct(const struct schema_shape *sh, const json_t *v, struct fpath *fp,
                       struct err *err, int depth)
{
    const char *key;
    json_t *mv;
    size_t n_set = 0;
    /* Unknown members first, in the body's order: the first one is named. */
    json_object_foreach((json_t *)v, key, mv)
    {
        size_t i = 0;
        while (i < sh->n_members && strcmp(sh->members[i].name, key) != 0) {
            i++;
        }
        size_t mark = fpath_push(fp, ".%s", key);
        if (i == sh->n_members) {
            return fail(fp, err, "unknown field");
        }
        if (!json_is_null(mv)) {
            n_set++;
            int rc = walk(&schema_shapes[sh->members[i].shape], mv, fp, err, depth + 1);
            if (rc < 0) {
                return rc;
            }
        }
        fpath_pop(fp, mark);
    }
    for (size_t i = 0; i < sh->n_members; i++) {
        const json_t *m = json_object_get(v, sh->members[i].name);
        if (sh->members[i].is_required && (m == NULL || json_is_null(m))) {
            size_t mark = fpath_push(fp, ".%s", sh->members[i].name);
            int rc = fail(fp, err, "required");
            fpath_pop(fp, mark);
            return rc;
        }
    }
    if (sh->is_union && n_set != 1) {
        char names[512];
        size_t off = 0;
        for (size_t i = 0; i < sh->n_members && off < sizeof(names); i++) {
            int n = snprintf(names + off, sizeof(names) - off, "%s%s", i ? ", " : "",
                             sh->members[i].name);
            off += n > 0 ? (size_t)n : 0;
        }
        return fail(fp, err, "exactly one of %s must be set (%zu are)", names, n_set);
    }
    return 0;
}

static int walk(const struct schema_shape *sh, const json_t *v, struct fpath *fp, struct err *err,
                int depth)
{
    /* The model's shapes are acyclic; the bound guards against a table that is not. */
    if (depth > 32) {
        return fail(fp, err, "nested too deeply");
    }
    switch (sh->type) {
    case SCHEMA_STRUCT:
        if (!json_is_object(v)) {
            return fail(fp, err, "must be an object");
        }
        return walk_struct(sh, v, fp, err, depth);
    case SCHEMA_LIST: {
        if (!json_is_array(v)) {
            return fail(fp, err, "must be an array");
        }
        size_t n = json_array_size(v);
        if (sh->has_min && (int64_t)n < sh->min) {
            return fail(fp, err, "must have at least %" PRId64 " entr%s", sh->min,
                        sh->min == 1 ? "y" : "ies");
        }
        if (sh->has_max && (int64_t)n > sh->max) {
            return fail(fp, err, "must have at most %" PRId64 " entr%s", sh->max,
                        sh->max == 1 ? "y" : "ies");
        }
        for (size_t i = 0; i < n; i++) {
            size_t mark = fpath_push(fp, "[%zu]", i);
            json_t *e = json_array_get(v, i);
            if (json_is_null(e)) {
                return fail(fp, err, "must not be null");
            }
            int rc = walk(&schema_shapes[sh->member_shape], e, fp, err, depth + 1);
            if (rc < 0) {
                return rc;
            }
            fpath_pop(fp, mark);
        }
        return 0;
    }
    case SCHEMA_STRING: {
        if (!json_is_string(v)) {
            return fail(fp, err, "must be a string");
        }
        const char *s = json_string_value(v);
        if (sh->enum_values != NULL) {
            char list[512];
            size_t off = 0;
            for (const char *const *e = sh->enum_values; *e != NULL; e++) {
                if (strcmp(*e, s) == 0) {
                    return 0;
                }
                int n = snprintf(list + off, sizeof(list) - off, "%s%s",
                                 e == sh->enum_values ? "" : "|", *e);
                off += n > 0 && (size_t)n < sizeof(list) - off ? (size_t)n : 0;
            }
            return fail(fp, err, "must be one of %s", list);
        }
        size_t chars = utf8_chars(s, json_string_length(v));
        if (sh->has_min && sh->has_max && ((int64_t)chars < sh->min || (int64_t)chars > sh->max)) {
            return fail(fp, err, "must be %" PRId64 "-%" PRId64 " characters long", sh->min,
                        sh->max);
        }
        if (sh->has_min && (int64_t)chars < sh->min) {
            return fail(fp, err, "must be at least %" PRId64 " characters long", sh->min);
        }
        if (sh->has_max && (int64_t)chars > sh->max) {
            return fail(fp, err, "must be at most %" PRId64 " characters long", sh->max);
        }
        return 0;
    }
    case SCHEMA_INT:
    case SCHEMA_LONG: {
        if (!json_is_integer(v)) {
            return fail(fp, err, "must be an integer");
        }
        json_int_t x = json_integer_value(v);
        if (sh->type == SCHEMA_INT && (x < INT32_MIN || x > INT32_MAX)) {
            return fail(fp, err, "must be a 32-bit integer");
        }
        return check_range(fp, err, sh, (int64_t)x, "must be");
    }
    case SCHEMA_BOOL:
        if (!json_is_boolean(v)) {
            return fail(fp, err, "must be a boolean");
        }
        return 0;
    case SCHEMA_TIMESTAMP:
        if (!json_is_number(v)) {
            return fail(fp, err, "must be %s", type_name(sh->type));
        }
        return 0;
    }
    return fail(fp, err, "unsupported shape");
}

int schema_validate(const struct schema_shape *shape, const json_t *v, const char *path,
                    struct err *err)
{
    struct fpath fp = {.len = 0};
    fp.p[0] = '\0';
    if (path != NULL && path[0] != '\0') {
        fpath_push(&fp, "%s", path);
    }
    return walk(shape, v, &fp, err, 0);
}
