/* downstream_h2: the HTTP/2 codec of a downstream connection (h2c with prior knowledge, or
 * HTTP/2 found by AUTO's preface check). One nghttp2 server session per connection; each
 * request stream is a `struct stream`, driven through the same stream_request_*() calls as
 * HTTP/1, and answered through `downstream_h2_ops` (downstream.h).
 *
 * Data path:
 *   socket -> worker scratch -> nghttp2_session_mem_recv -> callbacks -> stream_request_*()
 *   stream -> downstream_h2_ops (HEADERS submitted, body bytes kept per stream) ->
 *   data provider -> nghttp2_session_mem_send -> d->wbuf -> socket
 *
 * Backpressure: request DATA is acknowledged (WINDOW_UPDATE, nghttp2_session_consume) only
 * while the stream's upstream accepts bytes, so a slow upstream closes the client's window.
 * Response bytes wait in the stream's own buffer until nghttp2 pulls them (flow control and
 * the socket permitting); past the listener's buffer limit the upstream stops being read.
 * Frames are produced only while wbuf is under 64 KiB, so a client that does not read makes
 * nghttp2 queue (and cap: its outbound ACK limit) rather than us buffer.
 *
 * Thread: the owning worker. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct downstream;
struct downstream_ops;

/* The HTTP/2 stream ops (send_head, send_body, reset, ...). */
extern const struct downstream_ops downstream_h2_ops;

/* Switches `d` to HTTP/2: creates its session, queues the server SETTINGS, counts the
 * connection as HTTP/2. The client's preface is checked by nghttp2 on the first bytes fed. */
void downstream_h2_start(struct downstream *d);

/* Feeds bytes read from the socket (the preface included). May close `d`. */
void downstream_h2_feed(struct downstream *d, const uint8_t *p, size_t len);

/* Asks for `d`'s frames to be written: the connection joins its worker's flush list, which
 * downstream_h2_flush_queued() works through once the loop iteration's callbacks are done, so
 * the responses of one iteration share a write (and its syscall). */
void downstream_h2_flush(struct downstream *d);

/* Produces frames into wbuf and writes them while the socket takes them, now; closes the
 * connection once the session wants neither to read nor to write (after a GOAWAY). For events
 * of the connection itself (its reads, its socket turning writable). */
void downstream_h2_flush_now(struct downstream *d);

/* Flushes every connection on `w`'s flush list (the worker's ev_prepare). */
struct worker;
void downstream_h2_flush_queued(struct worker *w);

/* Drain (SIGTERM): a GOAWAY with last-stream-id 2^31-1 and a PING now, the real one after the
 * HCM's drain_timeout; the connection closes when its streams are done. */
void downstream_h2_drain(struct downstream *d);

/* The connection is closing: every stream still open ends (reset), and is freed. */
void downstream_h2_close_streams(struct downstream *d);

/* Frees the session. */
void downstream_h2_free(struct downstream *d);
