/* hc_h2: gRPC health-check messages and the verdicts on HTTP/2 replies (see hc_h2.h).
 *
 * The two messages have one field each, so they are encoded and decoded here by hand rather
 * than through generated protobuf-c code (grpc/src/proto/grpc/health/v1/health.proto):
 *
 *   message HealthCheckRequest  { string service = 1; }        -> tag 0x0a, varint length, bytes
 *   message HealthCheckResponse { ServingStatus status = 1; }  -> tag 0x08, varint value
 *
 * The decoder still walks every field of every wire type, so a server that adds fields (as a
 * newer health.proto could) is understood. */
#include "proxy/upstream/hc_h2.h"

#include "proxy/core/buf.h"
#include "proxy/http/grpc_msg.h"
#include "proxy/upstream/health_check.h"

void hc_h2_reply_init(struct hc_h2_reply *r)
{
    *r = (struct hc_h2_reply){.grpc_status = -1, .serving = -1};
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

void hc_grpc_encode_request(struct buf *out, struct str service)
{
    uint8_t head[1 + 10];
    size_t hn = 0;
    if (service.len > 0) {
        head[hn++] = 0x0a; /* field 1, wire type 2 (length-delimited) */
        hn += put_varint(head + hn, service.len);
    }
    uint8_t prefix[GRPC_MSG_PREFIX];
    grpc_msg_prefix(prefix, (uint32_t)(hn + service.len));
    buf_append(out, prefix, sizeof(prefix));
    buf_append(out, head, hn);
    if (service.len > 0) {
        buf_append(out, service.p, service.len);
    }
}

/* Reads a varint at p[*off..n); -1 when it is cut short or longer than 10 bytes. */
static int get_varint(const uint8_t *p, size_t n, size_t *off, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        if (*off >= n) {
            return -1;
        }
        uint8_t b = p[(*off)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

int hc_grpc_decode_response(const uint8_t *p, size_t n, int *status)
{
    *status = HC_SERVING_UNKNOWN;
    size_t off = 0;
    while (off < n) {
        uint64_t key, v;
        if (get_varint(p, n, &off, &key) < 0 || (key >> 3) == 0) {
            return -1;
        }
        switch (key & 7) {
        case 0: /* varint */
            if (get_varint(p, n, &off, &v) < 0) {
                return -1;
            }
            if ((key >> 3) == 1) {
                /* an enum is an int32 on the wire; a value out of range is just not SERVING */
                *status = v <= 0x7fffffff ? (int)v : -1;
            }
            break;
        case 1: /* 64-bit */
            if (n - off < 8) {
                return -1;
            }
            off += 8;
            break;
        case 2: /* length-delimited */
            if (get_varint(p, n, &off, &v) < 0 || v > n - off) {
                return -1;
            }
            off += (size_t)v;
            break;
        case 5: /* 32-bit */
            if (n - off < 4) {
                return -1;
            }
            off += 4;
            break;
        default: /* groups (3, 4) are not proto3, 6 and 7 do not exist */
            return -1;
        }
    }
    return 0;
}

int hc_grpc_status_value(const uint8_t *p, size_t n)
{
    if (n == 0 || n > 10) {
        return -1;
    }
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -1;
        }
        v = v * 10 + (p[i] - '0');
    }
    return v <= 0x7fffffff ? (int)v : -1;
}

enum hc_verdict hc_h2_http_verdict(const struct hc_h2_reply *r, const struct hc_range *expected,
                                   uint32_t n_expected, const struct hc_range *retriable,
                                   uint32_t n_retriable)
{
    if (!r->ended || r->body_too_large || r->status == 0) {
        return HC_V_NETWORK;
    }
    if (hc_range_contains(expected, n_expected, r->status)) {
        return HC_V_PASS;
    }
    return hc_range_contains(retriable, n_retriable, r->status) ? HC_V_RETRIABLE : HC_V_FAIL;
}

enum hc_verdict hc_grpc_verdict(const struct hc_h2_reply *r)
{
    /* A bad message, or a head that is not a gRPC 200, decides before the stream's end. */
    if (r->bad_message || (r->status != 0 && (r->status != 200 || !r->grpc_ct))) {
        return HC_V_FAIL;
    }
    if (!r->ended) {
        return HC_V_NETWORK;
    }
    if (r->status != 200 || r->grpc_status != 0) {
        return HC_V_FAIL;
    }
    return r->serving == HC_SERVING_SERVING ? HC_V_PASS : HC_V_FAIL;
}
