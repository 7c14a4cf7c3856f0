/* downstream: one accepted client connection speaking HTTP/1.1: socket I/O, the request
 * parser, keep-alive and pipelining (requests are parsed one at a time; the next pipelined
 * request waits in the read buffer until the current response is complete), idle and
 * request-header timeouts, and draining. Thread: the owning worker. */
#pragma once

#include <ev.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/worker.h"

struct filter_conn;
struct h1_parser;
struct stream;
struct listener_cfg;

struct downstream {
    struct worker *w;                /* borrowed */
    const struct listener_cfg *lcfg; /* borrowed from the worker's snapshot */
    uint32_t lidx;
    int fd; /* owned */
    ev_io io;
    ev_timer timer;           /* idle timeout / request headers timeout */
    struct buf rbuf;          /* owned: bytes read and not yet parsed */
    struct buf wbuf;          /* owned: response bytes not yet written */
    struct h1_parser *parser; /* owned */
    struct stream *s;         /* owned: the current stream */
    struct list link;         /* in w->downstreams */
    char peer_ip[48];         /* for x-forwarded-for and the access log */
    uint16_t peer_port;
    bool read_paused; /* upstream over its watermark, or waiting on a stream */
    bool want_write;
    bool closing; /* close once wbuf is flushed */
    bool closed;
    bool peer_eof;
    uint64_t rx_bytes;
    uint64_t tx_bytes;
    ev_tstamp t_open;
    struct deferred defer;
    /* owned: per-connection HTTP filter state (filter_conn_state() in filter.h) */
    struct filter_conn *filter_conn;
};

/* Takes an accepted socket. */
void downstream_accept(struct worker *w, uint32_t lidx, int fd, const struct sockaddr *peer);

/* Writes what is in wbuf now if possible. */
void downstream_flush(struct downstream *d);

/* Stops or resumes reading (upstream backpressure). */
void downstream_pause_read(struct downstream *d, bool pause);

/* The current stream is finished: go on with the next request, or close. */
void downstream_stream_done(struct downstream *d);

/* Closes the connection after wbuf is flushed (graceful) or at once (`abort`: the client sees
 * a reset, used when a response cannot be completed). */
void downstream_close(struct downstream *d, bool abort);

/* Drain: close if idle, else close after the current response. */
void downstream_drain(struct downstream *d);
