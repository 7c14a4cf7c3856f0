/* grpc: gRPC header helpers (see grpc.h): request detection, grpc-timeout, status mapping and
 * grpc-message encoding. Pure functions over header values; called on the request path by the
 * stream and the router and at config time by nobody. Owns nothing. */
#include "proxy/http/grpc.h"

#include <errno.h>

#include "proxy/http/headers.h"
#include "proxy/http/stream.h"

bool grpc_is_content_type(struct str ct)
{
    static const struct str base = STR_LIT("application/grpc");
    if (!str_has_prefix(ct, base)) {
        return false;
    }
    return ct.len == base.len || ct.p[base.len] == '+' || ct.p[base.len] == ';';
}

int grpc_timeout_parse(struct str v, uint64_t *out_ms)
{
    /* TimeoutValue: 1 to 8 digits (so at most 99999999), then one unit byte. */
    if (v.len < 2 || v.len > 9) {
        return -EINVAL;
    }
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9') {
            return -EINVAL;
        }
        n = n * 10 + (uint64_t)(v.p[i] - '0');
    }
    switch (v.p[v.len - 1]) {
    case 'H':
        *out_ms = n * 3600000ULL;
        break;
    case 'M':
        *out_ms = n * 60000ULL;
        break;
    case 'S':
        *out_ms = n * 1000ULL;
        break;
    case 'm':
        *out_ms = n;
        break;
    case 'u':
        *out_ms = (n + 999ULL) / 1000ULL;
        break;
    case 'n':
        *out_ms = (n + 999999ULL) / 1000000ULL;
        break;
    default:
        return -EINVAL;
    }
    return 0;
}

size_t grpc_timeout_encode(uint64_t ms, char out[16])
{
    static const char units[] = "mSMH";
    uint64_t t = ms;
    size_t u = 0;
    if (t > GRPC_TIMEOUT_MAX_VALUE) {
        t /= 1000; /* seconds */
        u++;
    }
    while (t > GRPC_TIMEOUT_MAX_VALUE) {
        if (units[u] == 'H') {
            t = GRPC_TIMEOUT_MAX_VALUE; /* no larger unit: clip */
        } else {
            t /= 60; /* minutes, then hours */
            u++;
        }
    }
    char digits[20];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + t % 10);
        t /= 10;
    } while (t > 0);
    size_t len = 0;
    while (nd > 0) {
        out[len++] = digits[--nd];
    }
    out[len++] = units[u];
    out[len] = '\0';
    return len;
}

int grpc_status_from_http(int http_status)
{
    switch (http_status) {
    case 400:
        return GRPC_INTERNAL;
    case 401:
        return GRPC_UNAUTHENTICATED;
    case 403:
        return GRPC_PERMISSION_DENIED;
    case 404:
        return GRPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return GRPC_UNAVAILABLE;
    default:
        return GRPC_UNKNOWN;
    }
}

int grpc_status_for_local_reply(int http_status, uint32_t flags)
{
    if (flags & (RF_UT | RF_DT)) {
        return GRPC_DEADLINE_EXCEEDED;
    }
    if (flags & RF_UO) {
        return GRPC_RESOURCE_EXHAUSTED;
    }
    return grpc_status_from_http(http_status);
}

int grpc_status_parse(struct str v, uint32_t *out)
{
    unsigned long long n;
    if (str_to_u64(v, &n) != 0 || n > INT32_MAX) {
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}

static bool needs_escape(unsigned char c)
{
    return c < 0x20 || c > 0x7e || c == '%';
}

struct str grpc_percent_encode(struct arena *a, struct str msg)
{
    size_t extra = 0;
    for (size_t i = 0; i < msg.len; i++) {
        extra += needs_escape((unsigned char)msg.p[i]) ? 2 : 0;
    }
    if (extra == 0) {
        return msg;
    }
    static const char hex[] = "0123456789ABCDEF";
    char *o = arena_alloc(a, msg.len + extra);
    size_t k = 0;
    for (size_t i = 0; i < msg.len; i++) {
        unsigned char c = (unsigned char)msg.p[i];
        if (needs_escape(c)) {
            o[k++] = '%';
            o[k++] = hex[c >> 4];
            o[k++] = hex[c & 15];
        } else {
            o[k++] = (char)c;
        }
    }
    return (struct str){o, k};
}
