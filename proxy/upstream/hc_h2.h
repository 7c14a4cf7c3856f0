/* hc_h2: the pure parts of the HTTP/2 and gRPC health checks (health_check.c runs them): the
 * gRPC Health Checking Protocol's request and reply messages (grpc/doc/health-checking.md,
 * grpc.health.v1.Health/Check), what a check remembers of its reply, and the verdict on it,
 * following Envoy's HttpHealthCheckerImpl and GrpcHealthCheckerImpl. No I/O, no state: any
 * thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct buf;
struct hc_range;

/* grpc.health.v1.HealthCheckResponse.ServingStatus values. */
enum hc_serving {
    HC_SERVING_UNKNOWN = 0,
    HC_SERVING_SERVING = 1,
    HC_SERVING_NOT_SERVING = 2,
    HC_SERVING_SERVICE_UNKNOWN = 3,
};

/* What a check saw of its reply on one HTTP/2 stream, filled in by nghttp2's callbacks. */
struct hc_h2_reply {
    int status;          /* :status of the final response head; 0: none (yet) */
    int grpc_status;     /* grpc-status (trailers, or a trailers-only head); -1: none */
    bool grpc_ct;        /* content-type is application/grpc (or application/grpc+...) */
    bool ended;          /* the peer's END_STREAM arrived (the reply is complete) */
    int serving;         /* the HealthCheckResponse's status; -1: no message */
    bool bad_message;    /* an undecodable, compressed, oversized or second message */
    bool body_too_large; /* HTTP: more than the body bound (the check fails as a network one) */
};

/* The outcome of one check, in the terms of health_check.c's failure types. */
enum hc_verdict {
    HC_V_PASS,
    HC_V_FAIL,      /* Envoy's ACTIVE failure: the host goes out at once */
    HC_V_RETRIABLE, /* HTTP: a status in retriable_statuses (counts to unhealthy_threshold) */
    HC_V_NETWORK,   /* reset, cut short, or over the body bound (counts to the threshold) */
};

/* Resets `r` for a new check. */
void hc_h2_reply_init(struct hc_h2_reply *r);

/* Appends one gRPC message (the 5-byte prefix, then a HealthCheckRequest{service}) to `out`.
 * An empty service is the empty message (proto3 leaves the default out), as Envoy sends it
 * without service_name. */
void hc_grpc_encode_request(struct buf *out, struct str service);

/* Decodes a HealthCheckResponse: *status is field 1 (0, UNKNOWN, when absent, as proto3
 * reads it); unknown fields are skipped. Returns 0, or -1 when the bytes are not a valid
 * protobuf message (a truncated varint or field, a bad wire type, field number 0). */
int hc_grpc_decode_response(const uint8_t *p, size_t n, int *status);

/* A grpc-status value: 0..2147483647 in decimal digits, or -1 when it is not one. */
int hc_grpc_status_value(const uint8_t *p, size_t n);

/* The verdict on a complete (or reset: !r->ended) HTTP check over HTTP/2: a status in
 * `expected` passes, one in `retriable` is retriable, any other fails. */
enum hc_verdict hc_h2_http_verdict(const struct hc_h2_reply *r, const struct hc_range *expected,
                                   uint32_t n_expected, const struct hc_range *retriable,
                                   uint32_t n_retriable);

/* The verdict on a gRPC check (Envoy's GrpcHealthCheckerImpl): it passes only on :status 200,
 * a gRPC content-type, grpc-status 0 and one response message whose status is SERVING. A reset
 * or a stream cut short is a network failure; everything else (NOT_SERVING, UNKNOWN, a missing
 * grpc-status, a non-200 :status, a bad message) fails. */
enum hc_verdict hc_grpc_verdict(const struct hc_h2_reply *r);
