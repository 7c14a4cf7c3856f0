/* pbjson_yaml: the text half of pbjson (see pbjson.h): YAML and JSON text into one jansson
 * tree that the descriptor-driven mapper then decodes. libyaml's event parser feeds a small
 * recursive builder. Plain (unquoted) scalars are typed with the YAML 1.2 core schema, limited
 * to what proto3 JSON can carry: null, booleans, decimal integers and floats; everything else,
 * and every quoted scalar, is a string. Owns nothing beyond a call. */
#include "proxy/config/pbjson.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "proxy/core/xmalloc.h"

/* YAML nesting limit: the builder recurses once per level. */
#define YAML_DEPTH_MAX 128

struct yb {
    yaml_parser_t parser;
    yaml_event_t ev; /* owned when has_ev: the current event */
    bool has_ev;
    struct err *err;
    unsigned depth;
};

/* Replaces the current event with the next one. */
static int yb_next(struct yb *y)
{
    if (y->has_ev) {
        yaml_event_delete(&y->ev);
        y->has_ev = false;
    }
    if (!yaml_parser_parse(&y->parser, &y->ev)) {
        const yaml_parser_t *p = &y->parser;
        return err_set(y->err, NULL, "YAML: line %zu column %zu: %s%s%s", p->problem_mark.line + 1,
                       p->problem_mark.column + 1, p->problem ? p->problem : "syntax error",
                       p->context ? " " : "", p->context ? p->context : "");
    }
    y->has_ev = true;
    return 0;
}

/* An error about the current event, at its position. */
__attribute__((format(printf, 2, 3))) static int yb_fail(struct yb *y, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return err_set(y->err, NULL, "YAML: line %zu column %zu: %s", y->ev.start_mark.line + 1,
                   y->ev.start_mark.column + 1, msg);
}

/* Word lists are 2-D char arrays, not pointer arrays, so that they need no relocation and
 * stay in .rodata. */
#define WORD_MAX 6

static bool is_one_of(const char *s, const char (*words)[WORD_MAX], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s, words[i]) == 0) {
            return true;
        }
    }
    return false;
}

static const char *skip_digits(const char *s)
{
    while (*s >= '0' && *s <= '9') {
        s++;
    }
    return s;
}

/* [-+]?[0-9]+ */
static bool is_int(const char *s)
{
    if (*s == '-' || *s == '+') {
        s++;
    }
    const char *e = skip_digits(s);
    return e != s && *e == '\0';
}

/* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? with a '.' or an exponent. */
static bool is_float(const char *s)
{
    if (*s == '-' || *s == '+') {
        s++;
    }
    const char *e = skip_digits(s);
    bool digits = e != s;
    bool frac = false;
    if (*e == '.') {
        const char *f = skip_digits(e + 1);
        digits = digits || f != e + 1;
        frac = true;
        e = f;
    }
    if (!digits) {
        return false;
    }
    if (*e == 'e' || *e == 'E') {
        e++;
        if (*e == '-' || *e == '+') {
            e++;
        }
        const char *x = skip_digits(e);
        if (x == e) {
            return false;
        }
        e = x;
        frac = true;
    }
    return frac && *e == '\0';
}

static json_t *yb_string(struct yb *y, const char *s, size_t n)
{
    json_t *j = json_stringn(s, n);
    if (j == NULL) {
        yb_fail(y, "invalid UTF-8 in scalar");
    }
    return j;
}

static json_t *yb_plain(struct yb *y, const char *s, size_t n)
{
    static const char nulls[][WORD_MAX] = {"", "~", "null", "Null", "NULL"};
    static const char trues[][WORD_MAX] = {"true", "True", "TRUE"};
    static const char falses[][WORD_MAX] = {"false", "False", "FALSE"};
    /* libyaml NUL-terminates scalar values; an embedded NUL makes it a string. */
    if (strlen(s) != n) {
        return yb_string(y, s, n);
    }
    if (is_one_of(s, nulls, sizeof(nulls) / sizeof(nulls[0]))) {
        return json_null();
    }
    if (is_one_of(s, trues, sizeof(trues) / sizeof(trues[0]))) {
        return json_true();
    }
    if (is_one_of(s, falses, sizeof(falses) / sizeof(falses[0]))) {
        return json_false();
    }
    if (is_int(s)) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        /* Beyond 64 bits: keep the digits; the mapper reads integer strings. */
        return errno == ERANGE ? yb_string(y, s, n) : json_integer(v);
    }
    if (is_float(s)) {
        double v = strtod(s, NULL);
        return isfinite(v) ? json_real(v) : yb_string(y, s, n);
    }
    return yb_string(y, s, n);
}

static json_t *yb_scalar(struct yb *y)
{
    const char *s = (const char *)y->ev.data.scalar.value;
    size_t n = y->ev.data.scalar.length;
    const char *tag = (const char *)y->ev.data.scalar.tag;
    if (tag != NULL) {
        if (strcmp(tag, "tag:yaml.org,2002:str") == 0 || strcmp(tag, "!") == 0) {
            return yb_string(y, s, n);
        }
        yb_fail(y, "YAML tag %s is not supported", tag);
        return NULL;
    }
    if (y->ev.data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
        return yb_string(y, s, n);
    }
    return yb_plain(y, s, n);
}

static json_t *yb_node(struct yb *y);

static json_t *yb_sequence(struct yb *y)
{
    json_t *a = json_array();
    for (;;) {
        if (yb_next(y) != 0) {
            goto fail;
        }
        if (y->ev.type == YAML_SEQUENCE_END_EVENT) {
            return a;
        }
        json_t *c = yb_node(y);
        if (c == NULL) {
            goto fail;
        }
        json_array_append_new(a, c);
    }
fail:
    json_decref(a);
    return NULL;
}

static json_t *yb_mapping(struct yb *y)
{
    json_t *o = json_object();
    char *key = NULL;
    for (;;) {
        if (yb_next(y) != 0) {
            goto fail;
        }
        if (y->ev.type == YAML_MAPPING_END_EVENT) {
            return o;
        }
        if (y->ev.type != YAML_SCALAR_EVENT) {
            yb_fail(y, "mapping keys must be scalars");
            goto fail;
        }
        size_t klen = y->ev.data.scalar.length;
        key = xstrndup((const char *)y->ev.data.scalar.value, klen);
        if (strlen(key) != klen) {
            yb_fail(y, "mapping key contains a NUL byte");
            goto fail;
        }
        if (json_object_get(o, key) != NULL) {
            yb_fail(y, "duplicate key \"%s\"", key);
            goto fail;
        }
        if (yb_next(y) != 0) {
            goto fail;
        }
        json_t *v = yb_node(y);
        if (v == NULL) {
            goto fail;
        }
        if (json_object_set_new(o, key, v) != 0) {
            yb_fail(y, "invalid UTF-8 in key");
            goto fail;
        }
        free(key);
        key = NULL;
    }
fail:
    free(key);
    json_decref(o);
    return NULL;
}

/* Builds the node that starts at the current event, consuming up to its last event. */
static json_t *yb_node(struct yb *y)
{
    if (y->depth >= YAML_DEPTH_MAX) {
        yb_fail(y, "nested deeper than %d levels", YAML_DEPTH_MAX);
        return NULL;
    }
    y->depth++;
    json_t *j = NULL;
    switch (y->ev.type) {
    case YAML_SCALAR_EVENT:
        j = yb_scalar(y);
        break;
    case YAML_SEQUENCE_START_EVENT:
        j = yb_sequence(y);
        break;
    case YAML_MAPPING_START_EVENT:
        j = yb_mapping(y);
        break;
    case YAML_ALIAS_EVENT:
        yb_fail(y, "YAML aliases (*%s) are not supported", (const char *)y->ev.data.alias.anchor);
        break;
    default:
        yb_fail(y, "unexpected YAML event");
        break;
    }
    y->depth--;
    return j;
}

json_t *pbjson_load_yaml(const char *text, size_t len, struct err *err)
{
    struct yb y;
    memset(&y, 0, sizeof(y));
    y.err = err;
    if (!yaml_parser_initialize(&y.parser)) {
        err_set(err, NULL, "YAML: cannot initialise the parser");
        return NULL;
    }
    yaml_parser_set_input_string(&y.parser, (const unsigned char *)text, len);
    json_t *root = NULL;
    if (yb_next(&y) != 0 || yb_next(&y) != 0) { /* STREAM-START, then DOCUMENT-START */
        goto out;
    }
    if (y.ev.type == YAML_STREAM_END_EVENT) {
        err_set(err, NULL, "YAML: empty document");
        goto out;
    }
    if (yb_next(&y) != 0) {
        goto out;
    }
    root = yb_node(&y);
    if (root == NULL) {
        goto out;
    }
    if (yb_next(&y) != 0 || yb_next(&y) != 0) { /* DOCUMENT-END, then STREAM-END */
        goto fail;
    }
    if (y.ev.type != YAML_STREAM_END_EVENT) {
        yb_fail(&y, "more than one YAML document; remora reads only one");
        goto fail;
    }
    goto out;
fail:
    json_decref(root);
    root = NULL;
out:
    if (y.has_ev) {
        yaml_event_delete(&y.ev);
    }
    yaml_parser_delete(&y.parser);
    return root;
}

json_t *pbjson_load_json(const char *text, size_t len, struct err *err)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (j == NULL) {
        err_set(err, NULL, "JSON: line %d column %d: %s", je.line, je.column, je.text);
    }
    return j;
}

json_t *pbjson_load_text(const char *text, size_t len, struct err *err)
{
    size_t i = 0;
    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
        i = 3;
    }
    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) {
        i++;
    }
    if (i < len && (text[i] == '{' || text[i] == '[')) {
        json_t *j = pbjson_load_json(text + i, len - i, err);
        if (j != NULL) {
            return j;
        }
        /* YAML flow style starts with '{' too: try it, but report the JSON error if it also
         * fails, as JSON is what the text most likely meant to be. */
        struct err yerr;
        err_clear(&yerr);
        j = pbjson_load_yaml(text, len, &yerr);
        if (j != NULL) {
            err_clear(err);
        }
        return j;
    }
    return pbjson_load_yaml(text, len, err);
}
