/* trust: IP address parsing, internal ranges and x-forwarded-for entries (trust.h). */
#include "proxy/http/trust.h"

#include <arpa/inet.h>
#include <string.h>

bool trust_ip_parse(struct str s, struct trust_ip *out)
{
    char z[INET6_ADDRSTRLEN];
    if (s.len == 0 || s.len >= sizeof(z)) {
        return false;
    }
    memcpy(z, s.p, s.len);
    z[s.len] = '\0';
    out->v6 = memchr(s.p, ':', s.len) != NULL;
    if (!out->v6) {
        memset(out->b + 4, 0, 12);
    }
    return inet_pton(out->v6 ? AF_INET6 : AF_INET, z, out->b) == 1;
}

static bool v4_internal(const uint8_t *b)
{
    return b[0] == 10 || b[0] == 127 || (b[0] == 172 && (b[1] & 0xf0) == 16) ||
           (b[0] == 192 && b[1] == 168);
}

bool trust_ip_is_internal(const struct trust_ip *a)
{
    if (!a->v6) {
        return v4_internal(a->b);
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t loopback[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (memcmp(a->b, mapped, 12) == 0) {
        return v4_internal(a->b + 12);
    }
    return a->b[0] == 0xfd || memcmp(a->b, loopback, 16) == 0;
}

bool trust_text_is_internal(struct str s)
{
    struct trust_ip ip;
    return trust_ip_parse(s, &ip) && trust_ip_is_internal(&ip);
}

bool trust_xff_entry(struct str xff, uint32_t skip, struct str *entry, bool *only)
{
    size_t end = xff.len; /* the entry is [start, end) */
    for (uint32_t i = 0;; i++) {
        size_t start = end;
        while (start > 0 && xff.p[start - 1] != ',') {
            start--;
        }
        if (i == skip) {
            *entry = str_trim_ows((struct str){xff.p + start, end - start});
            *only = skip == 0 && start == 0;
            struct trust_ip ip;
            return trust_ip_parse(*entry, &ip);
        }
        if (start == 0) {
            return false; /* fewer entries than skip + 1 */
        }
        end = start - 1;
    }
}
