/* upstream: the stream's side of an upstream request, and the HTTP/1.1 connection pool.
 *
 * `struct upstream` is what a stream holds while an attempt runs: one request in flight on an
 * upstream connection, behind `struct upstream_ops` so that stream.c does not know the
 * protocol. On HTTP/1.1 it is the connection itself (one request at a time, `struct
 * upstream_h1` here); on HTTP/2 it is one stream of a shared connection (upstream_h2.c). The
 * protocol is the cluster's (config.h: cluster_cfg.protocol), or, with
 * use_downstream_protocol_config, the downstream request's.
 *
 * HTTP/1.1 connections:
 *
 *   upstream_acquire()  -> idle connection from the pool, or a new non-blocking connect
 *        |                 (connect_timeout armed)
 *        v
 *   CONNECTING --connected--> ACTIVE (bound to one stream: request out, response in)
 *                                |  response complete and request fully written
 *                                v
 *                              IDLE (in the endpoint's idle list; a read means the peer closed;
 *                                    closed after the cluster's idle_timeout, or once the
 *                                    connection is max_connection_duration old, or has served
 *                                    max_requests_per_connection requests)
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
#include "proxy/core/str.h"
#include "proxy/net/accepted.h"
#include "proxy/worker.h"

struct cluster_rt;
struct endpoint_rt;
struct h1_parser;
struct stream;

struct headers;
struct upstream;

/* One upstream request, as the stream drives it (the upstream codec seam). Thread: the owning
 * worker. Request bytes are queued by send_*; the caller flushes (`flush`) after a batch. */
struct upstream_ops {
    /* The request head: `method`, `path` (origin-form, after rewrites) and the headers as they
     * go upstream (`h`: HTTP/1.1 field list with Host; the HTTP/2 codec builds the pseudo-header
     * fields and drops connection-specific ones). `end`: no body follows. */
    void (*send_head)(struct upstream *u, struct str method, struct str path,
                      const struct headers *h, bool end);
    /* Request body bytes (copied). */
    void (*send_body)(struct upstream *u, const uint8_t *p, size_t len);
    /* The request is complete. `trailers` (NULL: none) are sent where the protocol carries them
     * (HTTP/2: a HEADERS frame with END_STREAM; HTTP/1.1: the chunked trailer section, when the
     * request is chunked), else dropped. Borrowed: valid until the stream ends. */
    void (*send_end)(struct upstream *u, const struct headers *trailers);
    /* Writes what is queued now if possible. */
    void (*flush)(struct upstream *u);
    /* Stops or resumes reading the response (downstream backpressure): HTTP/1.1 stops reading
     * the socket, HTTP/2 stops acknowledging this stream's DATA (its flow-control window). */
    void (*pause_read)(struct upstream *u, bool pause);
    /* Request bytes queued and not yet written. */
    size_t (*buffered)(const struct upstream *u);
    /* The stream is done with the request. With `reusable`, an HTTP/1.1 connection whose
     * exchange completed cleanly goes back to the pool; otherwise it is closed. An HTTP/2
     * stream that is still open is reset (CANCEL); its connection stays. */
    void (*release)(struct upstream *u, bool reusable);
    /* Abandons the request now (timeout, retry, downstream reset, local reply): HTTP/1.1 closes
     * the connection, HTTP/2 resets the stream. `reason` is for the debug log (may be NULL). */
    void (*close)(struct upstream *u, const char *reason);
};

/* What the access log keeps of an upstream connection (%UPSTREAM_CONNECTION_ID%,
 * %UPSTREAM_LOCAL_ADDRESS%): set once per connection, copied into the stream an attempt binds to
 * it (no syscall per request). */
struct upstream_conn_info {
    uint64_t id;             /* worker_conn_id(), as the downstream ones; 0: none */
    union sockaddr_ip local; /* AF_UNSPEC: unknown */
};

/* Fills `ci` for a new connection on `fd` of worker `w`, after connect() was called: Linux has
 * bound the socket's local address and port by then, even while the handshake is in progress
 * (one getsockname per connection). */
void upstream_conn_info_init(struct upstream_conn_info *ci, struct worker *w, int fd);

/* The part every upstream request shares; the codec's own state follows it. */
struct upstream {
    const struct upstream_ops *ops;
    const struct upstream_conn_info *conn; /* borrowed: its connection's */
    struct stream *s; /* borrowed: the bound stream, NULL when idle or released */
    bool read_paused; /* the downstream is over its watermark */
    bool is_h2;       /* an HTTP/2 stream (upstream_h2.c) */
};

enum upstream_state {
    UPSTREAM_CONNECTING,
    UPSTREAM_ACTIVE,
    UPSTREAM_IDLE,
    UPSTREAM_CLOSED,
};

/* An HTTP/1.1 connection. */
struct tls_conn;

struct upstream_h1 {
    struct upstream base;       /* ops = the HTTP/1.1 ops; base.s: the bound stream */
    struct worker *w;           /* borrowed: owner */
    struct cluster_rt *cluster; /* borrowed: the worker's cluster state */
    struct endpoint_rt *ep;     /* borrowed: the endpoint's state in `cluster` */
    int fd;                     /* owned */
    ev_io io;
    ev_timer timer;           /* connect timeout, then the pool's limits (lazy: see pool_due) */
    struct buf rbuf;          /* owned: bytes read, not yet parsed */
    struct buf wbuf;          /* owned: request bytes not yet written */
    struct h1_parser *parser; /* owned */
    struct list link;         /* in ep->idle while idle */
    enum upstream_state state;
    bool reused;             /* served a request before this one */
    bool want_write;         /* EV_WRITE armed */
    bool response_started;   /* any response byte seen for the current request */
    bool peer_eof;           /* the endpoint closed its side */
    bool in_read;            /* inside the read handler's parse loop */
    uint8_t release_pending; /* released during the parse loop: 1 reusable, 2 close */
    ev_tstamp t_connect;     /* when connect() was called */
    ev_tstamp t_idle;        /* when it last went back to the pool */
    uint32_t n_requests;     /* requests started on this connection */
    bool holds_pending;      /* holds a BREAKER_PENDING unit (connecting for its stream) */
    struct tls_conn *tls;    /* owned: the TLS session (cluster->cfg->tls), or NULL */
    struct upstream_conn_info info;
    struct deferred defer;
};

/* The worker's slab object size for an HTTP/1.1 connection (with its response parser). */
size_t upstream_h1_obj_size(void);

/* Starts a request to endpoint `ep` of cluster `c` for stream `s`, in the protocol the cluster
 * (and, with use_downstream_protocol_config, the downstream) asks for. HTTP/1.1: an idle
 * connection if any, else a new one (connecting). HTTP/2: a stream on a connection with a free
 * stream slot, else on a new connection (upstream_h2.h). A new connection takes a unit of the
 * cluster's max_connections circuit breaker for its life, and a request waiting for a
 * connection to connect one of max_pending_requests (breaker.h). The caller sends the head
 * next (ops->send_head); nothing calls the stream back from inside this function. Returns
 * NULL with `*err` set when no connection could be started, and the caller answers 503:
 * -EUSERS when max_connections is reached (Envoy's upstream_cx_overflow), -EBUSY when
 * max_pending_requests is (upstream_rq_pending_overflow), another negative errno when socket()
 * failed. */
struct upstream *upstream_acquire(struct worker *w, struct cluster_rt *c, struct endpoint_rt *ep,
                                  struct stream *s, int *err);

/* Closes the idle connections of endpoint `ep` (HTTP/1.1 pool and HTTP/2 connections
 * without streams): the worker is stopping or the cluster goes away. */
void upstream_close_idle(struct endpoint_rt *ep);

/* The seam, for stream.c and the downstream codecs. */
static inline void upstream_flush(struct upstream *u)
{
    u->ops->flush(u);
}

static inline void upstream_pause_read(struct upstream *u, bool pause)
{
    u->ops->pause_read(u, pause);
}

static inline void upstream_release(struct upstream *u, bool reusable)
{
    u->ops->release(u, reusable);
}

static inline void upstream_close(struct upstream *u, const char *reason)
{
    u->ops->close(u, reason);
}

static inline size_t upstream_buffered(const struct upstream *u)
{
    return u->ops->buffered(u);
}
