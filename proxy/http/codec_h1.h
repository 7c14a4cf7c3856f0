/* codec_h1: the HTTP/1.1 parser for both sides of the proxy, on llhttp, plus the strict
 * framing guard that Debian's lenient llhttp 8.1.0 needs (../shared/reference/hostile-inputs.md
 * cases 1-22 and 31). It does no I/O: the owner feeds bytes and gets callbacks.
 *
 * One parser parses one message at a time. h1_parser_feed() returns as soon as a message
 * completes, so a connection with pipelined requests handles them one after another: the owner
 * feeds the rest of its input only when it is ready for the next message.
 *
 * Head strings (method, target, header names and values) are copied into a block the parser
 * owns, bounded by `max_head_bytes`, and stay valid until the next message's first byte is
 * fed. Body bytes are passed as views into the fed input, valid only during the callback.
 *
 * Thread: the owner's worker. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"
#include "proxy/http/headers.h"

enum h1_kind {
    H1_REQUEST,
    H1_RESPONSE,
};

/* A parsed message head. For a request the status is 0; for a response method and target are
 * empty. */
struct h1_msg {
    struct str method;      /* upper case, as sent ("GET") */
    struct str target;      /* request-target, as sent (origin or absolute form) */
    struct str host;        /* request: the Host header's value (required on 1.1; on 1.0
                             * without one, an absolute-form target's authority) */
    int status;             /* response: 100..999 */
    uint8_t version_minor;  /* 0 or 1 (HTTP/1.x only) */
    struct headers headers; /* names lower-cased, values OWS-trimmed, in the parser's block */
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked (validated: final coding) */
    bool keep_alive;        /* per version and Connection header */
    bool expect_continue;   /* request: Expect: 100-continue */
    bool upgrade;           /* Connection: upgrade + Upgrade header present */
    bool end_stream;        /* response: the head is the whole message (set by the HTTP/2
                             * upstream for HEADERS with END_STREAM, e.g. a gRPC
                             * Trailers-Only response; never by this parser) */
};

struct h1_parser_cbs {
    /* The head is complete and has passed the guard. Return 0 to go on, or a negative value to
     * stop: feed then returns -1 with err_status left 0 (the owner's own decision). */
    int (*on_head)(void *ud, struct h1_msg *msg);
    /* A piece of the (de-chunked) body. Same return convention. */
    int (*on_body)(void *ud, const uint8_t *p, size_t len);
    /* The message is complete (after its trailers, if any). */
    int (*on_done)(void *ud);
    /* Optional (NULL: trailers are parsed and dropped): one field of a chunked message's
     * trailer section, before on_done; `name` lower case, `value` OWS-trimmed, both valid only
     * during the call. Same return convention. */
    int (*on_trailer)(void *ud, struct str name, struct str value);
};

struct h1_parser; /* opaque; allocate with h1_parser_new */

/* Creates a parser. `max_head_bytes` bounds the request/status line plus headers (431 or 414
 * past it for requests, 502 for responses); `max_headers` bounds the header count (431). */
struct h1_parser *h1_parser_new(enum h1_kind kind, size_t max_head_bytes, uint32_t max_headers,
                                const struct h1_parser_cbs *cbs, void *ud);
void h1_parser_free(struct h1_parser *p);

/* Embedded storage (STYLE rule 5): h1_parser_sizeof() bytes at `mem`, aligned for any type, e.g.
 * placed right after the owner's struct in one slab object. h1_parser_init returns `mem` as a
 * parser; h1_parser_deinit frees what the parser holds but not `mem`. */
size_t h1_parser_sizeof(void);
struct h1_parser *h1_parser_init(void *mem, enum h1_kind kind, size_t max_head_bytes,
                                 uint32_t max_headers, const struct h1_parser_cbs *cbs, void *ud);
void h1_parser_deinit(struct h1_parser *p);

/* The sizes of the parser's memory blocks: its arena's (H1_PARSER_ARENA_BLOCK, plus the arena's
 * block header) and the head buffer's first (H1_PARSER_HEAD_BLOCK). */
#define H1_PARSER_ARENA_BLOCK 960
#define H1_PARSER_HEAD_BLOCK 1024

struct blk_cache;
/* Takes those blocks from (and gives them back to) a worker's caches (blkcache.h) instead of
 * malloc: a parser gives its memory back whenever its connection goes idle
 * (h1_parser_release), so a keep-alive connection would otherwise malloc and free them for every
 * message. `arena_blocks` holds arena_cache_block_size(H1_PARSER_ARENA_BLOCK) bytes a block,
 * `head_blocks` H1_PARSER_HEAD_BLOCK. Call right after h1_parser_init; the caches must outlive
 * the parser. */
void h1_parser_use_caches(struct h1_parser *p, struct blk_cache *arena_blocks,
                          struct blk_cache *head_blocks);

/* Feeds bytes. Returns how many were consumed (it stops right after a message completes), or
 * -1 on an error: then h1_parser_error() tells the status to answer and why. After an error the
 * connection must be closed; the parser accepts no more input. After a message with
 * keep_alive false (or a 101 response) there is no next message: feeding more bytes is an
 * error ("data after Connection: close"). */
ssize_t h1_parser_feed(struct h1_parser *p, const uint8_t *data, size_t len);

/* The peer closed its side. For a response delimited by EOF this completes the message
 * (on_done is called) and returns 0. Returns -1 when a message was in progress and is now
 * truncated (and 0 when no message had started). */
int h1_parser_eof(struct h1_parser *p);

/* Response parser only: the next response answers a HEAD request (or is otherwise bodiless),
 * so it has no body whatever its headers say. Call before feeding the response. */
void h1_parser_expect_no_body(struct h1_parser *p);

/* True between the first byte of a message and its completion. */
bool h1_parser_in_message(const struct h1_parser *p);

/* The owner is done with the last message's h1_msg (its views die here): frees the head block
 * and header arena so an idle keep-alive connection holds no head memory. A no-op inside a
 * message. Optional: the next message reuses (and shrinks) them anyway. */
void h1_parser_release(struct h1_parser *p);

/* After feed returned -1: the HTTP status to answer (400, 413, 414, 431, 501, 505 for
 * requests; 502 for responses), or 0 when a callback stopped the parse. `reason` is a static
 * string naming the fault ("bare CR in header", "duplicate Host", ...). */
int h1_parser_error(const struct h1_parser *p, const char **reason);

/* Encoders append the HTTP/1.1 wire form to `out`. Header names are written as stored (lower
 * case). */
struct buf;
void h1_encode_request_head(struct buf *out, struct str method, struct str target,
                            const struct headers *h);
void h1_encode_response_head(struct buf *out, int status, const struct headers *h);
/* A chunk of a chunked body; len 0 writes the last-chunk "0\r\n\r\n". */
void h1_encode_chunk(struct buf *out, const uint8_t *p, size_t len);
/* The last chunk with a trailer section: the fields of `trailers` (NULL or empty: none) that
 * h1_trailer_allowed() lets through, then the final CRLF. */
void h1_encode_last_chunk(struct buf *out, const struct headers *trailers);
/* False for fields that must not travel in a trailer section: pseudo-headers, framing
 * (content-length, transfer-encoding, trailer), host, te and connection-specific fields. */
bool h1_trailer_allowed(struct str name);
/* Standard reason phrase for a status ("OK", "Not Found", ...); "Unknown" otherwise. */
const char *h1_reason_phrase(int status);
