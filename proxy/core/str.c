/* str: helpers over length-delimited string views (see str.h). */
#include "proxy/core/str.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

#include "proxy/core/xmalloc.h"

bool str_contains(struct str s, struct str needle, bool nocase)
{
    if (needle.len == 0) {
        return true;
    }
    for (size_t i = 0; i + needle.len <= s.len; i++) {
        if (nocase ? str_mem_eq_nocase(s.p + i, needle.p, needle.len)
                   : memcmp(s.p + i, needle.p, needle.len) == 0) {
            return true;
        }
    }
    return false;
}

char *str_pct_decode(const char *p, size_t len, bool plus_is_space)
{
    char *s = xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '%') {
            int hi = i + 1 < len ? hex_val((unsigned char)p[i + 1]) : -1;
            int lo = i + 2 < len ? hex_val((unsigned char)p[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(s);
                return NULL;
            }
            s[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            s[o++] = plus_is_space && p[i] == '+' ? ' ' : p[i];
        }
    }
    s[o] = '\0';
    return s;
}

struct str str_trim_ows(struct str s)
{
    while (s.len > 0 && (s.p[0] == ' ' || s.p[0] == '\t')) {
        s.p++;
        s.len--;
    }
    while (s.len > 0 && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t')) {
        s.len--;
    }
    return s;
}

int str_to_u64(struct str s, unsigned long long *out)
{
    unsigned long long v = 0;
    if (s.len == 0) {
        return -EINVAL;
    }
    for (size_t i = 0; i < s.len; i++) {
        unsigned d = (unsigned char)s.p[i] - '0';
        if (d > 9) {
            return -EINVAL;
        }
        if (v > (ULLONG_MAX - d) / 10) {
            return -ERANGE;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
