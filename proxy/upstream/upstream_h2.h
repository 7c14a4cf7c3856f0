/* upstream_h2: HTTP/2 upstream connections (h2c with prior knowledge), shared by many streams.
 *
 * Per worker and endpoint, `endpoint_rt.h2_conns` lists the connections. A new request goes to
 * a connection with a free stream slot (fewer streams than the smaller of the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS and the cluster's max_concurrent_streams), else to a new
 * connection (max_connections circuit breaker). A request that lands on a connection still
 * connecting waits on it, holding a max_pending_requests unit until it connects.
 *
 *   CONNECTING --connected--> OPEN --GOAWAY, max_connection_duration,
 *       |                       |     max_requests_per_connection--> DRAINING (no new streams;
 *       | connect failure or    |                                    closed when the last ends)
 *       | timeout: every        | no stream for idle_timeout
 *       v stream fails (UF)     v
 *     CLOSED <-------------- CLOSED
 *
 * Each request is a `struct upstream` (upstream.h) whose ops send HEADERS, DATA through a
 * deferred data provider, and trailers. Response DATA is acknowledged to the peer (WINDOW_UPDATE)
 * only while the downstream takes it: the stream's window is the backpressure. Thread: the
 * owning worker. */
#pragma once

struct cluster_rt;
struct endpoint_rt;
struct stream;
struct upstream;
struct worker;

/* Starts an HTTP/2 request for stream `s` to endpoint `ep` (see upstream_acquire in
 * upstream.h, which calls this for HTTP/2 clusters): a stream on a connection with a free slot,
 * else a new connection. Returns NULL with `*err` set: -EUSERS (max_connections), -EBUSY
 * (max_pending_requests), or the errno of socket(). The returned request belongs to `s` until
 * released or closed through its ops; it never calls the stream back before this returns. */
struct upstream *upstream_h2_acquire(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                     struct stream *s, int *err);

/* Closes the HTTP/2 connections of `ep` that carry no stream (the worker is stopping). */
void upstream_h2_close_idle(struct endpoint_rt *ep);
