/* retry: retry_on parsing, Envoy's retry decision table and its jittered exponential back-off
 * (see retry.h). Called by the stream on the request path and by config/build.c at config
 * time; it owns nothing. */
#include "proxy/http/retry.h"

#include <errno.h>
#include <stddef.h>

#include "proxy/config/config.h"
#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"

static const struct {
    const char *name;
    uint32_t bit;
} conditions[] = {
    {"5xx", RETRY_ON_5XX},
    {"gateway-error", RETRY_ON_GATEWAY_ERROR},
    {"reset", RETRY_ON_RESET},
    {"connect-failure", RETRY_ON_CONNECT_FAILURE},
    {"retriable-4xx", RETRY_ON_RETRIABLE_4XX},
    {"refused-stream", RETRY_ON_REFUSED_STREAM},
    {"retriable-status-codes", RETRY_ON_RETRIABLE_STATUS_CODES},
    /* gRPC (Envoy's x-envoy-retry-grpc-on set) */
    {"cancelled", RETRY_ON_GRPC_CANCELLED},
    {"deadline-exceeded", RETRY_ON_GRPC_DEADLINE_EXCEEDED},
    {"resource-exhausted", RETRY_ON_GRPC_RESOURCE_EXHAUSTED},
    {"internal", RETRY_ON_GRPC_INTERNAL},
    {"unavailable", RETRY_ON_GRPC_UNAVAILABLE},
};

/* Envoy conditions remora knows but does not implement: a config naming one is rejected with
 * "not supported" rather than "unknown". */
static const char *const unsupported_conditions[] = {
    "envoy-ratelimited",
    "retriable-headers",
    "reset-before-request",
    "http3-post-connect-failure",
};

int retry_on_parse(struct str list, bool strict, uint32_t *bits, struct str *bad)
{
    return retry_on_parse_set(list, RETRY_SET_HTTP | RETRY_SET_GRPC, strict, bits, bad);
}

int retry_on_parse_set(struct str list, unsigned sets, bool strict, uint32_t *bits, struct str *bad)
{
    size_t start = 0;
    for (size_t i = 0; i <= list.len; i++) {
        if (i < list.len && list.p[i] != ',') {
            continue;
        }
        struct str tok = str_trim_ows((struct str){list.p + start, i - start});
        start = i + 1;
        if (tok.len == 0) {
            continue;
        }
        bool found = false;
        for (size_t k = 0; k < sizeof(conditions) / sizeof(conditions[0]) && !found; k++) {
            if (str_eq_lit(tok, conditions[k].name)) {
                unsigned set =
                    (conditions[k].bit & RETRY_ON_GRPC_ANY) ? RETRY_SET_GRPC : RETRY_SET_HTTP;
                if (set & sets) {
                    *bits |= conditions[k].bit;
                    found = true;
                }
            }
        }
        if (found || !strict) {
            continue;
        }
        if (bad != NULL) {
            *bad = tok;
        }
        for (size_t k = 0; k < sizeof(unsupported_conditions) / sizeof(unsupported_conditions[0]);
             k++) {
            if (str_eq_lit(tok, unsupported_conditions[k])) {
                return -ENOTSUP;
            }
        }
        return -EINVAL;
    }
    return 0;
}

bool retry_would_retry_failure(uint32_t retry_on, enum retry_failure why)
{
    /* Envoy retries every reset (a per-try timeout is a local reset) under 5xx, gateway-error
     * and reset; a connect failure is a reset too, and also has its own condition. */
    if (retry_on & (RETRY_ON_5XX | RETRY_ON_GATEWAY_ERROR | RETRY_ON_RESET)) {
        return true;
    }
    if (why == RETRY_FAIL_REFUSED) {
        return (retry_on & RETRY_ON_REFUSED_STREAM) != 0;
    }
    return why == RETRY_FAIL_CONNECT && (retry_on & RETRY_ON_CONNECT_FAILURE) != 0;
}

static bool in_list(int status, const uint32_t *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if ((int)v[i] == status) {
            return true;
        }
    }
    return false;
}

bool retry_would_retry_status(uint32_t retry_on, int status, const uint32_t *codes,
                              uint32_t n_codes, const uint32_t *extra, uint32_t n_extra)
{
    if ((retry_on & RETRY_ON_5XX) && status >= 500 && status <= 599) {
        return true;
    }
    if ((retry_on & RETRY_ON_GATEWAY_ERROR) && status >= 502 && status <= 504) {
        return true;
    }
    if ((retry_on & RETRY_ON_RETRIABLE_4XX) && status == 409) {
        return true;
    }
    if (retry_on & RETRY_ON_RETRIABLE_STATUS_CODES) {
        return in_list(status, codes, n_codes) || in_list(status, extra, n_extra);
    }
    return false;
}

bool retry_would_retry_grpc(uint32_t retry_on, uint32_t grpc_status)
{
    switch (grpc_status) {
    case GRPC_CANCELLED:
        return (retry_on & RETRY_ON_GRPC_CANCELLED) != 0;
    case GRPC_DEADLINE_EXCEEDED:
        return (retry_on & RETRY_ON_GRPC_DEADLINE_EXCEEDED) != 0;
    case GRPC_RESOURCE_EXHAUSTED:
        return (retry_on & RETRY_ON_GRPC_RESOURCE_EXHAUSTED) != 0;
    case GRPC_INTERNAL:
        return (retry_on & RETRY_ON_GRPC_INTERNAL) != 0;
    case GRPC_UNAVAILABLE:
        return (retry_on & RETRY_ON_GRPC_UNAVAILABLE) != 0;
    default:
        return false;
    }
}

bool retry_would_retry_grpc_headers(uint32_t retry_on, const struct headers *h)
{
    if (!(retry_on & RETRY_ON_GRPC_ANY)) {
        return false;
    }
    const struct header *gs = headers_get(h, STR_LIT("grpc-status"));
    uint32_t st;
    return gs != NULL && grpc_status_parse(gs->value, &st) == 0 &&
           retry_would_retry_grpc(retry_on, st);
}

uint64_t retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, uint32_t retry, uint64_t rnd)
{
    if (base_ms == 0) {
        base_ms = 1;
    }
    if (max_ms < base_ms) {
        max_ms = base_ms;
    }
    /* Envoy's JitteredExponentialBackOffStrategy: the ceiling (2^k - 1) * base grows with each
     * retry k until it first passes max_ms, then stays there; the draw is clipped at max_ms. */
    uint64_t ceiling = base_ms;
    for (uint32_t k = 1; k <= (retry == 0 ? 1 : retry) && k < 63; k++) {
        uint64_t mult = (1ULL << k) - 1;
        ceiling = mult > UINT64_MAX / base_ms ? UINT64_MAX : mult * base_ms;
        if (ceiling > max_ms) {
            break;
        }
    }
    uint64_t d = rnd % ceiling;
    return d < max_ms ? d : max_ms;
}

int retry_parse_count(struct str v, uint32_t *out)
{
    unsigned long long n;
    if (str_to_u64(str_trim_ows(v), &n) != 0 || n > UINT32_MAX) {
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}
