/* downstream: one accepted client connection: socket I/O, and the codec (`ops`): HTTP/2 in
 * downstream_h2.c (prior knowledge, or AUTO seeing the preface), else HTTP/1.1 here: the request
 * parser, keep-alive and pipelining (requests are parsed one at a time; the next pipelined
 * request waits in the read buffer until the current response is complete), idle and
 * request-header timeouts, and draining. Thread: the owning worker. */
#pragma once

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/net/accepted.h"
#include "proxy/worker.h"

struct downstream_h2;
struct filter_chain_cfg;
struct filter_conn;
struct h1_parser;
struct headers;
struct stream;
struct listener_cfg;
struct tls_conn;

/* How a stream's response goes back to its client: the downstream codec, chosen per
 * connection (HTTP/1 here, HTTP/2 in downstream_h2.c). stream.c calls only these, so a stream
 * does not know which protocol it answers. Thread: the owning worker. */
struct downstream_ops {
    /* The response head (`h`: final, after filters); `end`: no body follows. */
    void (*send_head)(struct stream *s, int status, struct headers *h, bool end);
    /* Response body bytes (copied); `end`: the response is complete after them. */
    void (*send_body)(struct stream *s, const uint8_t *p, size_t len, bool end);
    /* Ends the response with trailers `t` (after any body sent with send_body, `end` false):
     * HTTP/2 sends them as a HEADERS frame with END_STREAM once the body is out; HTTP/1.1 ends
     * a chunked body with them as its trailer section when the HCM enables trailers, else ends
     * the body and drops them (Envoy's default). `t` is borrowed until the stream ends. */
    void (*send_trailers)(struct stream *s, const struct headers *t);
    /* An interim 100 Continue. */
    void (*send_continue)(struct stream *s);
    /* The response cannot complete (it started, or it timed out): HTTP/1 resets the
     * connection, HTTP/2 this stream only. `s->local_reset` is set by the caller. The stream is
     * finished on return. */
    void (*reset)(struct stream *s);
    /* Response bytes buffered for `s` and not yet written (backpressure on the upstream). */
    size_t (*buffered)(const struct stream *s);
    /* Stops or resumes reading `s`'s request body (upstream backpressure). */
    void (*pause_read)(struct stream *s, bool pause);
    /* `s` finished (access log written): the codec may free it. */
    void (*stream_done)(struct stream *s);
};

struct downstream {
    struct worker *w; /* borrowed */
    /* borrowed from the worker's snapshot: the chain that took it (its connection manager), and
     * through chain->listener its listener */
    const struct filter_chain_cfg *chain;
    struct worker_scope *sc; /* borrowed: its listener's stats, logs, filter state (worker.h) */
    int fd;                  /* owned */
    ev_io io;
    ev_timer timer;                   /* idle timeout / request headers timeout */
    struct buf rbuf;                  /* owned: bytes read and not yet parsed */
    struct buf wbuf;                  /* owned: response bytes not yet written */
    struct h1_parser *parser;         /* owned */
    const struct downstream_ops *ops; /* the codec: downstream_h1_ops or downstream_h2_ops */
    struct downstream_h2 *h2;         /* owned: the HTTP/2 session, or NULL (HTTP/1) */
    bool sniff;                       /* AUTO: still looking for the HTTP/2 preface */
    struct stream *s;                 /* owned: the current stream */
    struct list link;                 /* in w->downstreams */
    struct tls_conn *tls;             /* owned: the TLS session (chain->tls), or NULL */
    char peer_ip[48];                 /* for x-forwarded-for and the access log */
    uint16_t peer_port;
    /* The socket's own peer (Envoy's direct remote address): peer_ip unless the proxy_protocol
     * listener filter restored the client's address */
    char direct_ip[48];
    uint16_t direct_port;
    /* The local or original destination address (accepted.h), AF_UNSPEC when the listener did
     * not need it: %DOWNSTREAM_LOCAL_ADDRESS%, ORIGINAL_DST clusters. */
    union sockaddr_ip local;
    bool read_paused; /* upstream over its watermark, or waiting on a stream */
    bool want_write;
    bool closing; /* close once wbuf is flushed */
    bool closed;
    bool peer_eof;
    bool draining; /* downstream_drain ran: answer with connection: close, then close */
    /* peer_ip is in Envoy's internal ranges (trust.h) */
    bool peer_internal;
    uint64_t rx_bytes;
    uint64_t tx_bytes;
    ev_tstamp t_open;
    uint64_t id; /* %CONNECTION_ID% (worker_conn_id) */
    /* HTTP/1 timing, read by the lazy connection timer (downstream.c: timer_cb) */
    ev_tstamp t_idle; /* the connection last went idle (no stream, no head arriving) */
    ev_tstamp t_head; /* the head now arriving started */
    ev_tstamp t_rx;   /* last bytes read while no stream is open */
    struct deferred defer;
    /* owned: per-connection HTTP filter state (filter_conn_state() in filter.h) */
    struct filter_conn *filter_conn;
};

/* Takes a socket accepted for chain a->chain, an HTTP connection manager. */
void downstream_accept(struct worker *w, const struct accepted *a);

/* Writes what is in wbuf now if possible. */
void downstream_flush(struct downstream *d);

/* Writes wbuf to the socket: 0 once it is empty, -EAGAIN when the socket would block (EV_WRITE
 * is armed), -EPIPE when the connection was closed (reset by the peer). For the codecs. */
int downstream_send(struct downstream *d);

/* The HTTP/1 stream ops. */
extern const struct downstream_ops downstream_h1_ops;

/* Stops or resumes reading (upstream backpressure). */
void downstream_pause_read(struct downstream *d, bool pause);

/* The current stream is finished: go on with the next request, or close. */
void downstream_stream_done(struct downstream *d);

/* Closes the connection after wbuf is flushed (graceful) or at once (`abort`: the client sees
 * a reset, used when a response cannot be completed). */
void downstream_close(struct downstream *d, bool abort);

/* Drain: close if idle, else close after the current response. */
void downstream_drain(struct downstream *d);
/* An LDS listener's drain (proxy/lds.h): HTTP/2 as downstream_drain; an HTTP/1 connection,
 * idle or not, stays open and answers its next response with connection: close (its owner
 * closes what is left at the drain deadline). */
void downstream_drain_soft(struct downstream *d);
