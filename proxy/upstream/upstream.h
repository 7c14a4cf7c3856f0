/* upstream: one HTTP/1.1 connection from a worker to an endpoint, and the per-endpoint pool it
 * returns to between requests.
 *
 *   upstream_acquire()  -> idle connection from the pool, or a new non-blocking connect
 *        |                 (connect_timeout armed)
 *        v
 *   CONNECTING --connected--> ACTIVE (bound to one stream: request out, response in)
 *                                |  response complete and request fully written
 *                                v
 *                              IDLE (in the endpoint's idle list; a read means the peer closed;
 *                                    closed after the cluster's idle_timeout, or once the
 *                                    connection is max_connection_duration old)
 *
 * A connection is reused only after its response was read completely and its request written
 * completely; anything else closes it. The stream owns the exchange; the connection reports to
 * it through stream_upstream_*() calls. Thread: the owning worker. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/worker.h"

struct cluster_rt;
struct endpoint_rt;
struct h1_parser;
struct stream;

enum upstream_state {
    UPSTREAM_CONNECTING,
    UPSTREAM_ACTIVE,
    UPSTREAM_IDLE,
    UPSTREAM_CLOSED,
};

struct upstream {
    struct worker *w;           /* borrowed: owner */
    struct cluster_rt *cluster; /* borrowed: the worker's cluster state */
    struct endpoint_rt *ep;     /* borrowed: the endpoint's state in `cluster` */
    int fd;                     /* owned */
    ev_io io;
    ev_timer timer;           /* connect timeout, then idle timeout while pooled */
    struct buf rbuf;          /* owned: bytes read, not yet parsed */
    struct buf wbuf;          /* owned: request bytes not yet written */
    struct h1_parser *parser; /* owned */
    struct stream *s;         /* borrowed: the bound stream, NULL when idle */
    struct list link;         /* in ep->idle while idle */
    enum upstream_state state;
    bool reused;             /* served a request before this one */
    bool read_paused;        /* downstream is over its watermark */
    bool want_write;         /* EV_WRITE armed */
    bool response_started;   /* any response byte seen for the current request */
    bool peer_eof;           /* the endpoint closed its side */
    bool in_read;            /* inside the read handler's parse loop */
    uint8_t release_pending; /* released during the parse loop: 1 reusable, 2 close */
    ev_tstamp t_connect;     /* when connect() was called */
    bool holds_pending;      /* holds a BREAKER_PENDING unit (connecting for its stream) */
    struct deferred defer;
};

/* Gets a connection to endpoint `ep` of cluster `c` for stream `s`: an idle one if any, else a
 * new one (connecting). A new connection takes a unit of the cluster's max_connections circuit
 * breaker for its life and one of max_pending_requests while it connects (breaker.h). Returns
 * NULL with `*err` set when no connection could be started, and the caller answers 503:
 * -EUSERS when max_connections is reached (Envoy's upstream_cx_overflow), -EBUSY when
 * max_pending_requests is (upstream_rq_pending_overflow), another negative errno when socket()
 * failed. */
struct upstream *upstream_acquire(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                  struct stream *s, int *err);

/* Writes what is in wbuf now if possible (called after the stream appended request bytes). */
void upstream_flush(struct upstream *u);

/* Stops or resumes reading the response (downstream backpressure). */
void upstream_pause_read(struct upstream *u, bool pause);

/* The stream is done with the connection. With `reusable`, a connection whose exchange
 * completed cleanly goes back to the pool; otherwise it is closed. */
void upstream_release(struct upstream *u, bool reusable);

/* Closes the connection now; `reason` is for the debug log (may be NULL). The memory is freed
 * after the current callbacks unwind. */
void upstream_close(struct upstream *u, const char *reason);

/* Bytes queued towards the endpoint. */
static inline size_t upstream_buffered(const struct upstream *u)
{
    return buf_len(&u->wbuf);
}
