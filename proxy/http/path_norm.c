/* path_norm: request path normalization (path_norm.h). Written from Envoy's documented
 * behaviour and its tests (path_utility_test.cc's cases); the character classes are those of
 * the Chromium path canonicalizer Envoy uses. */
#include "proxy/http/path_norm.h"

#include <string.h>

enum {
    C_PASS = 0, /* copied */
    C_UNRES,    /* unreserved: decoded when percent-escaped */
    C_ESC,      /* percent-escaped when raw */
    C_NUL,      /* fails normalization, raw or escaped */
};

static inline int char_class(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
        return C_UNRES;
    }
    if (c == 0) {
        return C_NUL;
    }
    if (c <= 0x20 || c >= 0x7f) {
        return C_ESC;
    }
    switch (c) {
    case '"':
    case '#':
    case '<':
    case '>':
    case '?':
    case '^':
    case '`':
    case '{':
    case '|':
    case '}':
        return C_ESC;
    default:
        return C_PASS;
    }
}

static inline bool is_hex(unsigned char c)
{
    return hex_val(c) >= 0;
}

/* A valid escape at p[i] ("%XX"): its value, else -1. */
static inline int escape_at(const char *p, size_t i, size_t n)
{
    if (p[i] != '%' || i + 2 >= n) {
        return -1;
    }
    int hi = hex_val((unsigned char)p[i + 1]), lo = hex_val((unsigned char)p[i + 2]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* A dot at p[i]: "." (1) or "%2e"/"%2E" (3); 0 otherwise. */
static inline size_t dot_len(const char *p, size_t i, size_t n)
{
    if (p[i] == '.') {
        return 1;
    }
    if (p[i] == '%' && i + 2 < n && p[i + 1] == '2' && (p[i + 2] == 'e' || p[i + 2] == 'E')) {
        return 3;
    }
    return 0;
}

static inline bool is_slash(char c)
{
    return c == '/' || c == '\\';
}

static size_t path_part_len(struct str in)
{
    const char *q = memchr(in.p, '?', in.len);
    return q != NULL ? (size_t)(q - in.p) : in.len;
}

size_t path_norm_bound(const struct path_norm_opts *o, struct str in)
{
    size_t plen = path_part_len(in);
    size_t grow = 0;
    for (size_t i = 0; i < plen; i++) {
        unsigned char c = (unsigned char)in.p[i];
        int k = char_class(c);
        grow += (k == C_ESC || k == C_NUL || c == '%') ? 2 : 0;
    }
    return in.len + grow + 1 + (o->escaped_slashes != PATH_SLASHES_KEEP ? plen : 0);
}

/* Step 1: %2F/%2f -> '/', %5C/%5c -> '\' from src[0, n) into dst. Returns the new length; *found
 * tells whether there was one. */
static size_t unescape_slashes(const char *src, size_t n, char *dst, bool *found)
{
    size_t w = 0;
    *found = false;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '%' && i + 2 < n) {
            char a = src[i + 1], b = (char)(src[i + 2] | 0x20);
            if ((a == '2' && b == 'f') || (a == '5' && b == 'c')) {
                dst[w++] = a == '2' ? '/' : '\\';
                i += 2;
                *found = true;
                continue;
            }
        }
        dst[w++] = src[i];
    }
    return w;
}

/* The output byte the input at p[j] turns into when it is no dot and no slash, for the nested
 * escape check: a decoded unreserved escape or a literal byte; *used gets the input length. */
static inline unsigned char next_out(const char *p, size_t j, size_t n, size_t *used)
{
    int v = escape_at(p, j, n);
    if (v >= 0 && char_class((unsigned char)v) == C_UNRES) {
        *used = 3;
        return (unsigned char)v;
    }
    *used = 1;
    return (unsigned char)p[j];
}

/* A '%' at p[i] that starts no valid escape would start one in the output when the next two
 * output bytes are hex digits made by decoding ("%%30%30" -> "%00"): it is written "%25". */
static bool nested_escape(const char *p, size_t i, size_t n)
{
    size_t j = i + 1, used;
    if (j >= n || !is_hex(next_out(p, j, n, &used))) {
        return false;
    }
    j += used;
    return j < n && is_hex(next_out(p, j, n, &used));
}

/* Removes the last segment of out[0, w), which ends with '/': back to the previous '/', never
 * before the first byte (the root). */
static size_t back_up(const char *out, size_t w)
{
    size_t i = w - 1;
    if (i == 0) {
        return w;
    }
    i--;
    while (out[i] != '/' && i > 0) {
        i--;
    }
    return i + 1;
}

/* Step 2: normalize_path on src[0, n) into out. Returns false when the path has a NUL. */
static bool canonicalize(const char *src, size_t n, char *out, size_t *out_len)
{
    static const char hexd[] = "0123456789ABCDEF";
    bool ok = true;
    size_t w = 0;
    if (n == 0 || !is_slash(src[0])) {
        out[w++] = '/';
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        size_t dl = (c == '.' || c == '%') ? dot_len(src, i, n) : 0;
        if (dl > 0) {
            if (out[w - 1] == '/') {
                size_t a = i + dl;
                if (a == n) { /* "." at the end */
                    i = a - 1;
                    continue;
                }
                if (is_slash(src[a])) { /* "./" */
                    i = a;
                    continue;
                }
                size_t dl2 = dot_len(src, a, n);
                if (dl2 > 0 && (a + dl2 == n || is_slash(src[a + dl2]))) { /* ".." */
                    w = back_up(out, w);
                    i = a + dl2 == n ? n - 1 : a + dl2;
                    continue;
                }
            }
            out[w++] = '.'; /* part of a name */
            i += dl - 1;
            continue;
        }
        if (c == '\\') {
            out[w++] = '/';
        } else if (c == '%') {
            int v = escape_at(src, i, n);
            if (v < 0) {
                if (nested_escape(src, i, n)) {
                    memcpy(out + w, "%25", 3);
                    w += 3;
                } else {
                    out[w++] = '%';
                }
            } else if (char_class((unsigned char)v) == C_UNRES) {
                out[w++] = (char)v;
                i += 2;
            } else {
                ok &= v != 0;
                memcpy(out + w, src + i, 3); /* kept with its hex case */
                w += 3;
                i += 2;
            }
        } else {
            int k = char_class(c);
            if (k == C_ESC || k == C_NUL) {
                ok &= k != C_NUL;
                out[w++] = '%';
                out[w++] = hexd[c >> 4];
                out[w++] = hexd[c & 15];
            } else {
                out[w++] = (char)c;
            }
        }
    }
    *out_len = w;
    return ok;
}

/* Step 3: collapses runs of '/' in p[0, n) in place; returns the new length. A path of slashes
 * only ("//", "///") becomes "//", as Envoy's merge (a leading '/', the non-empty segments joined
 * by '/', a trailing '/') gives it; a single "/" stays. */
static size_t merge_slashes(char *p, size_t n)
{
    size_t w = 0;
    if (n >= 2 && p[0] == '/' && p[1] == '/') {
        size_t k = 2;
        while (k < n && p[k] == '/') {
            k++;
        }
        if (k == n) {
            return 2;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '/' && w > 0 && p[w - 1] == '/') {
            continue;
        }
        p[w++] = p[i];
    }
    return w;
}

enum path_norm_result path_normalize(const struct path_norm_opts *o, struct str in, char *out,
                                     size_t *out_len)
{
    size_t plen = path_part_len(in);
    const char *src = in.p;
    size_t n = plen;
    bool found = false;
    if (o->escaped_slashes != PATH_SLASHES_KEEP && memchr(in.p, '%', plen) != NULL) {
        /* step 1's copy goes to the end of `out`, past what step 2 can write */
        char *tmp = out + (path_norm_bound(o, in) - plen);
        n = unescape_slashes(in.p, plen, tmp, &found);
        src = tmp;
        if (found && o->escaped_slashes == PATH_SLASHES_REJECT) {
            *out_len = 0;
            return PATH_NORM_REJECT;
        }
    }
    size_t w;
    if (o->normalize) {
        if (!canonicalize(src, n, out, &w)) {
            *out_len = w;
            return PATH_NORM_REJECT;
        }
    } else {
        memmove(out, src, n);
        w = n;
    }
    if (o->merge_slashes) {
        w = merge_slashes(out, w);
    }
    memcpy(out + w, in.p + plen, in.len - plen); /* the query, as received */
    *out_len = w + in.len - plen;
    return found && o->escaped_slashes == PATH_SLASHES_UNESCAPE_REDIRECT ? PATH_NORM_REDIRECT
                                                                         : PATH_NORM_CONTINUE;
}
