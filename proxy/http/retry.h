/* retry: the router's retry decisions, as pure functions over Envoy's RetryPolicy semantics. The
 * stream (proxy/http/stream.c) owns the retry state of a request and asks these functions
 * three questions: which conditions are enabled (retry_on_parse), would this outcome of an
 * attempt be retried under them (retry_would_retry_*), and how long to wait before the next
 * attempt (retry_backoff_ms). Whether a retry is *allowed* (num_retries left, the body still
 * buffered, the cluster's retry circuit breaker or budget) is decided by the stream and
 * proxy/upstream/breaker.h.
 *
 * Envoy's conditions (config_http_filters_router_x-envoy-retry-on):
 *
 *   condition               status codes retried       resets, per-try timeouts  connect failures
 *   5xx                     500-599                    yes                       yes
 *   gateway-error           502, 503, 504              yes                       yes
 *   reset                   -                          yes                       yes
 *   connect-failure         -                          -                         yes
 *   retriable-4xx           409                        -                         -
 *   retriable-status-codes  the policy's list + header -                         -
 *   refused-stream          -                          HTTP/2 REFUSED_STREAM (never on HTTP/1)
 *
 * and the gRPC ones (retry_on in config, or x-envoy-retry-grpc-on from a trusted caller), read
 * from the grpc-status in a response's *headers* (a Trailers-Only response; a status in
 * trailers comes after the head went downstream, too late to retry, as in Envoy):
 *
 *   cancelled 1, deadline-exceeded 4, resource-exhausted 8, internal 13, unavailable 14
 *
 * Nothing here allocates or touches the loop; every function is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/str.h"

/* Why an attempt ended without a usable response. */
enum retry_failure {
    RETRY_FAIL_CONNECT, /* connect refused or timed out (flag UF) */
    RETRY_FAIL_RESET,   /* the connection was reset or closed before a response (UC, UPE) */
    RETRY_FAIL_TIMEOUT, /* per_try_timeout or per_try_idle_timeout (Envoy: a local reset) */
    RETRY_FAIL_REFUSED, /* HTTP/2 REFUSED_STREAM, or a stream a GOAWAY left unprocessed (UR) */
};

/* Parses a retry_on list ("5xx,connect-failure", spaces around commas allowed) into RETRY_ON_*
 * bits (proxy/config/config.h), OR-ed into `*bits`. With `strict` (configuration), a token remora
 * does not support, or does not know, fails: returns -ENOTSUP (Envoy condition not supported by
 * remora yet) or -EINVAL (unknown), with the token in `*bad`. Without `strict` (the
 * x-envoy-retry-on header), such tokens are skipped, as Envoy skips them. Returns 0. */
int retry_on_parse(struct str list, bool strict, uint32_t *bits, struct str *bad);

/* The condition sets of retry_on_parse_set(): Envoy's x-envoy-retry-on takes only the HTTP
 * conditions and x-envoy-retry-grpc-on only the gRPC ones; a RetryPolicy's retry_on takes both
 * (retry_on_parse). */
enum {
    RETRY_SET_HTTP = 1u << 0,
    RETRY_SET_GRPC = 1u << 1,
};

/* retry_on_parse() accepting only the conditions of `sets` (RETRY_SET_*): a condition of another
 * set counts as unknown. */
int retry_on_parse_set(struct str list, unsigned sets, bool strict, uint32_t *bits,
                       struct str *bad);

/* Would a response whose headers carry grpc-status `grpc_status` be retried under `retry_on`? */
bool retry_would_retry_grpc(uint32_t retry_on, uint32_t grpc_status);

struct headers;
/* The same for response headers `h`: false without a valid grpc-status header. */
bool retry_would_retry_grpc_headers(uint32_t retry_on, const struct headers *h);

/* Would an attempt that ended with `why` be retried under `retry_on`? */
bool retry_would_retry_failure(uint32_t retry_on, enum retry_failure why);

/* Would a response with `status` be retried under `retry_on`? `codes[n_codes]` is the policy's
 * retriable_status_codes and `extra[n_extra]` those of x-envoy-retriable-status-codes (either may
 * be empty); they count only with RETRY_ON_RETRIABLE_STATUS_CODES. */
bool retry_would_retry_status(uint32_t retry_on, int status, const uint32_t *codes,
                              uint32_t n_codes, const uint32_t *extra, uint32_t n_extra);

/* Envoy's full-jitter exponential back-off before retry number `retry` (1 for the first retry),
 * from the random value `rnd`: a uniform draw from [0, (2^k - 1) * base_ms), clipped at `max_ms`,
 * where k is `retry` or, once the ceiling has passed `max_ms`, the first k at which it did (so
 * retry 1 waits [0, base), retry 2 [0, 3 base), ...; with the default max of 10 x base, from the
 * fourth retry on about a third of the draws are exactly max). A `base_ms` of 0 counts as 1. */
uint64_t retry_backoff_ms(uint64_t base_ms, uint64_t max_ms, uint32_t retry, uint64_t rnd);

/* Parses a decimal count (x-envoy-max-retries). Returns 0, or -EINVAL when `v` is not a number
 * below 2^32. */
int retry_parse_count(struct str v, uint32_t *out);
