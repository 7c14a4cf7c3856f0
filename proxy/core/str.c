/* str: helpers over length-delimited string views (see str.h). */
#include "proxy/core/str.h"

#include <errno.h>
#include <limits.h>

bool str_contains(struct str s, struct str needle, bool nocase)
{
    if (needle.len == 0) {
        return true;
    }
    for (size_t i = 0; i + needle.len <= s.len; i++) {
        if (nocase ? strncasecmp(s.p + i, needle.p, needle.len) == 0
                   : memcmp(s.p + i, needle.p, needle.len) == 0) {
            return true;
        }
    }
    return false;
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
