/* str: length-delimited string views. Not NUL-terminated unless a comment says so; they
 * borrow their bytes from whoever owns the buffer (a parser's header block, a stream arena or a
 * config snapshot arena). NUL-terminated strings appear only at libc and OpenSSL boundaries. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

struct str {
    const char *p; /* borrowed */
    size_t len;
};

#define STR_LIT(s) ((struct str){(s), sizeof(s) - 1})
#define STR_NULL ((struct str){NULL, 0})
/* printf("%.*s", STR_FMT(s)) */
#define STR_FMT(s) (int)(s).len, (s).p

static inline struct str str_from_c(const char *s)
{
    return (struct str){s, s ? strlen(s) : 0};
}

static inline bool str_eq(struct str a, struct str b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/* Whether a[0, n) and b[0, n) are equal with ASCII letters compared without case. A NUL is an
 * ordinary byte (strncasecmp would stop at it: "a\0x" would equal "a\0y"); no locale. */
static inline bool str_mem_eq_nocase(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i], d = (unsigned char)b[i];
        if (c != d && ((c | 0x20) != (d | 0x20) || (unsigned char)((c | 0x20) - 'a') > 'z' - 'a')) {
            return false;
        }
    }
    return true;
}

static inline bool str_eq_nocase(struct str a, struct str b)
{
    return a.len == b.len && str_mem_eq_nocase(a.p, b.p, a.len);
}

static inline bool str_eq_lit(struct str a, const char *lit)
{
    return str_eq(a, str_from_c(lit));
}

static inline bool str_has_prefix(struct str s, struct str prefix)
{
    return s.len >= prefix.len && memcmp(s.p, prefix.p, prefix.len) == 0;
}

static inline bool str_has_prefix_nocase(struct str s, struct str prefix)
{
    return s.len >= prefix.len && str_mem_eq_nocase(s.p, prefix.p, prefix.len);
}

static inline bool str_has_suffix(struct str s, struct str suffix)
{
    return s.len >= suffix.len && memcmp(s.p + s.len - suffix.len, suffix.p, suffix.len) == 0;
}

static inline bool str_has_suffix_nocase(struct str s, struct str suffix)
{
    return s.len >= suffix.len && str_mem_eq_nocase(s.p + s.len - suffix.len, suffix.p, suffix.len);
}

/* Returns true when `needle` occurs in `s` (case-sensitive, or not when `nocase`: ASCII letters,
 * as str_mem_eq_nocase). */
bool str_contains(struct str s, struct str needle, bool nocase);

/* Trims optional whitespace (SP and HTAB) from both ends. */
struct str str_trim_ows(struct str s);

/* The value of hex digit `c` (either case), or -1. */
static inline int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = (unsigned char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decodes p[0, len) into a new NUL-terminated string (free() it); with `plus_is_space`
 * a '+' becomes a space (HTML form encoding, for query strings). NULL when an escape is bad
 * (not two hex digits) or encodes a NUL (which a C string could not carry). */
char *str_pct_decode(const char *p, size_t len, bool plus_is_space);

/* Parses a non-negative decimal integer that fills all of `s`; no sign, no whitespace.
 * Returns 0 and sets *out, or -EINVAL (empty, junk) or -ERANGE (over UINT64_MAX). */
int str_to_u64(struct str s, unsigned long long *out);

/* Copies s[0, n) to d and returns d + n. Up to 16 bytes are two overlapping loads and stores
 * instead of a call into memcpy: header names and values are mostly that short (the HTTP/1
 * encoder, h2 response fields). */
static inline void *mem_put(void *d, const void *s, size_t n)
{
    unsigned char *o = d;
    const unsigned char *i = s;
    if (n > 16) {
        memcpy(o, i, n);
    } else if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, i, 8);
        memcpy(&b, i + n - 8, 8);
        memcpy(o, &a, 8);
        memcpy(o + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, i, 4);
        memcpy(&b, i + n - 4, 4);
        memcpy(o, &a, 4);
        memcpy(o + n - 4, &b, 4);
    } else if (n > 0) {
        o[0] = i[0];
        o[n / 2] = i[n / 2];
        o[n - 1] = i[n - 1];
    }
    return o + n;
}
