/* grpc_msg: gRPC's length-prefixed messages on an HTTP/2 stream (PROTOCOL-HTTP2.md): each message
 * is a 1-byte compressed flag, a 4-byte big-endian length and that many bytes, and DATA frame
 * boundaries have nothing to do with message boundaries. The proxy itself passes gRPC bodies
 * through as bytes; this is for the two places that speak gRPC as an endpoint: the proxy's xDS
 * client and remora-xds's xDS server.
 *
 * A reader reassembles messages from the bytes of one stream, in pieces of any size, and gives
 * each whole message to its caller. It holds at most one message, bounded by `max`: a longer
 * one is refused from its prefix, before any of its bytes are buffered. Compressed messages are
 * refused too (neither end here offers a grpc-encoding). No thread of its own; any thread. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define GRPC_MSG_PREFIX 5

struct grpc_msg_reader {
    uint32_t max; /* largest message accepted, in bytes */
    uint8_t hdr[GRPC_MSG_PREFIX];
    uint32_t hdr_len; /* prefix bytes held */
    uint32_t len;     /* the current message's length, once the prefix is whole */
    uint32_t have;    /* its bytes held in buf */
    uint8_t *buf;     /* malloc'd, `len` bytes; NULL between messages */
};

enum grpc_msg_err {
    GRPC_MSG_OK = 0,
    GRPC_MSG_TOO_LARGE = -1,  /* a prefix announced more than `max` bytes */
    GRPC_MSG_COMPRESSED = -2, /* the compressed flag was set (or not 0/1) */
    GRPC_MSG_CALLBACK = -3,   /* the callback returned non-zero: feeding stopped there */
};

/* Called once per whole message. The bytes are valid only during the call. A non-zero return
 * stops grpc_msg_feed, which then returns GRPC_MSG_CALLBACK. */
typedef int (*grpc_msg_cb)(void *arg, const uint8_t *msg, size_t len);

void grpc_msg_reader_init(struct grpc_msg_reader *r, uint32_t max);

/* Frees what the reader holds; it may be fed again after grpc_msg_reader_init. */
void grpc_msg_reader_reset(struct grpc_msg_reader *r);

/* Feeds `n` bytes. Returns GRPC_MSG_OK, or an error after which the stream is to be failed
 * (the reader keeps nothing worth feeding more to; reset it). */
enum grpc_msg_err grpc_msg_feed(struct grpc_msg_reader *r, const uint8_t *p, size_t n,
                                grpc_msg_cb cb, void *arg);

/* True when the reader holds part of a message: a stream that ends then was cut short. */
int grpc_msg_partial(const struct grpc_msg_reader *r);

/* Writes the 5-byte prefix of an uncompressed message of `len` bytes into `out`. */
void grpc_msg_prefix(uint8_t out[GRPC_MSG_PREFIX], uint32_t len);
