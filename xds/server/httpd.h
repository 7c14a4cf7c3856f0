/* httpd: remora-xds's HTTP/1.1 server: one libev loop, requests parsed with llhttp, handled
 * one at a time per connection by a synchronous callback (the App Mesh API), keep-alive and
 * pipelining (the next request waits, unparsed, until the response is written).
 *
 * Limits, each answered and followed by a close: a head over `head_max` bytes (431), a body over
 * `body_max` (413, from Content-Length before the body is read, or as a chunked body grows),
 * a body that is not JSON by its Content-Type (415), malformed HTTP (400), a request not
 * complete `request_timeout_ms` after its first byte (408), a response not taken by the peer
 * within the same time (closed). An idle keep-alive connection is closed after
 * `idle_timeout_ms`; more than `max_conns` connections are closed at accept. */
#pragma once

#include <stddef.h>

#include "xds/appmesh/api.h"

struct ev_loop;
struct httpd;

struct httpd_limits {
    size_t head_max;           /* bytes of request line and fields */
    size_t body_max;           /* bytes of body */
    double request_timeout_ms; /* first byte of a request to its end; also a response's write */
    double idle_timeout_ms;    /* between requests on a keep-alive connection */
    size_t max_conns;
};

/* Handles one complete request; fills `out` (api.h's contract). */
typedef void (*httpd_handler_cb)(void *ctx, const struct api_request *rq, struct api_response *out);

/* Starts serving the listening socket `lfd` (taken: closed by httpd_free) on `loop`. */
struct httpd *httpd_new(struct ev_loop *loop, int lfd, const struct httpd_limits *limits,
                        httpd_handler_cb handler, void *ctx);

/* Closes the listener and every connection (responses in flight are dropped). */
void httpd_free(struct httpd *h);
