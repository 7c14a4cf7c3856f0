/* grpc: the gRPC-over-HTTP facts the proxy needs, as pure functions: is a request gRPC, the
 * grpc-timeout header (parse and encode, Envoy's Grpc::Common), the HTTP-to-gRPC status mapping
 * of a local reply, grpc-status parsing and grpc-message percent-encoding (the gRPC spec,
 * PROTOCOL-HTTP2.md). The proxy never parses gRPC messages: bodies are bytes passed through.
 *
 * Used by proxy/http/stream.c (local replies, timeouts), proxy/http/router.c (RouteMatch.grpc),
 * proxy/http/retry.c (retry_on gRPC conditions) and filters/grpc_stats. Nothing here allocates
 * except grpc_percent_encode (from the caller's arena); every function is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"

struct headers;

/* The well-known gRPC status codes (grpc/include/grpcpp/impl/codegen/status_code_enum.h). */
enum {
    GRPC_OK = 0,
    GRPC_CANCELLED = 1,
    GRPC_UNKNOWN = 2,
    GRPC_INVALID_ARGUMENT = 3,
    GRPC_DEADLINE_EXCEEDED = 4,
    GRPC_NOT_FOUND = 5,
    GRPC_ALREADY_EXISTS = 6,
    GRPC_PERMISSION_DENIED = 7,
    GRPC_RESOURCE_EXHAUSTED = 8,
    GRPC_FAILED_PRECONDITION = 9,
    GRPC_ABORTED = 10,
    GRPC_OUT_OF_RANGE = 11,
    GRPC_UNIMPLEMENTED = 12,
    GRPC_INTERNAL = 13,
    GRPC_UNAVAILABLE = 14,
    GRPC_DATA_LOSS = 15,
    GRPC_UNAUTHENTICATED = 16,
};

/* The largest TimeoutValue of a grpc-timeout header: at most 8 digits. */
#define GRPC_TIMEOUT_MAX_VALUE 99999999ULL

/* True when `content_type` makes a request gRPC: "application/grpc", or starting with
 * "application/grpc+" or "application/grpc;" (Envoy's Grpc::Common::isGrpcRequestHeaders;
 * case-sensitive, as Envoy compares it). */
bool grpc_is_content_type(struct str content_type);

/* Parses a grpc-timeout value: 1 to 8 ASCII digits and a unit H, M, S, m, u or n (the gRPC
 * spec). Returns 0 with the timeout in milliseconds in *out_ms (u and n round up to the next
 * millisecond, as Envoy does), or -EINVAL for anything else (empty, a sign, spaces, 9 or more
 * digits such as "99999999999H", an unknown unit): then the header is ignored. Never
 * overflows: the largest value, 99999999H, is about 3.6e14 ms. */
int grpc_timeout_parse(struct str v, uint64_t *out_ms);

/* Encodes `ms` as a grpc-timeout value into `out` (at least 10 bytes) and returns its length:
 * milliseconds while they fit in 8 digits, else seconds, minutes, hours, clipped at 99999999H
 * (Envoy's Grpc::Common::toGrpcTimeout). */
size_t grpc_timeout_encode(uint64_t ms, char out[16]);

/* Envoy's Grpc::Utility::httpToGrpcStatus: 400 INTERNAL, 401 UNAUTHENTICATED, 403
 * PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN. */
int grpc_status_from_http(int http_status);

/* The grpc-status of a local reply to a gRPC request with HTTP status `http_status` and Envoy
 * response flags `flags` (RF_* in stream.h). The mapping, which differs from Envoy's
 * where noted: a timeout (UT, DT) is DEADLINE_EXCEEDED (Envoy: only the max_stream_duration
 * timeout is; its UT 504 maps to UNAVAILABLE and its request_timeout 408 to UNKNOWN); a
 * circuit-breaker overflow (UO) is RESOURCE_EXHAUSTED (Envoy: UNAVAILABLE, from its 503);
 * everything else grpc_status_from_http(). */
int grpc_status_for_local_reply(int http_status, uint32_t flags);

/* Parses a grpc-status value (decimal, 0 to 2^31-1). Returns 0 and *out, or -EINVAL. */
int grpc_status_parse(struct str v, uint32_t *out);

/* Percent-encodes a grpc-message value (the gRPC spec: bytes outside 0x20..0x7E, and '%', as
 * %XX with upper-case hex). Returns `msg` itself when nothing needs encoding, else a copy in
 * `a`. */
struct str grpc_percent_encode(struct arena *a, struct str msg);
