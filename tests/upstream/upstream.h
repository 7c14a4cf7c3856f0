/* Internals of remora-test-upstream shared by its two protocol halves: upstream.c (listeners,
 * threads, HTTP/1.1, the control endpoints, the README) and upstream_h2.c (h2c with prior
 * knowledge, for connections that open with the HTTP/2 preface). Not part of remora. */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>
#include <llhttp.h>

#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/core/str.h"

#define READ_CHUNK 16384
#define IN_MAX (1024 * 1024)         /* unparsed input held while a response is in progress */
#define HEAD_BYTES_MAX (1024 * 1024) /* request line + headers + trailers of one request */
#define BODY_CHUNK 65536             /* generated body bytes per append (and per chunk) */
#define OUT_LOW 16384                /* refill the body when less than this is queued */
#define OUT_HIGH (256 * 1024)        /* stop parsing pipelined requests above this */
#define OUT_KEEP_CAP (128 * 1024)    /* larger output buffers are freed once drained */
#define LINGER_S 2.0                 /* after our FIN, wait this long for the peer's */
#define NAME_LEN_MAX 256
#define MANY_100_COUNT 10000
#define HUGE_HEADER_COUNT 100
#define HUGE_HEADER_VALUE_LEN 1000
#define ACCEPT_BATCH 64
#define PATTERN_PERIOD 26

struct h2conn;

struct stats {
    _Atomic uint64_t requests;
    _Atomic uint64_t connections;
    _Atomic uint64_t bytes_received;
    _Atomic uint64_t parse_errors;
    _Atomic uint64_t incomplete;
    _Atomic uint64_t active; /* a gauge: not zeroed by /__upstream/reset */
    _Atomic uint64_t h2_connections;
    _Atomic uint64_t h2_streams;
    _Atomic uint64_t max_streams_seen; /* most streams open at once on one h2 connection */
};

struct worker;

/* Built once in main() before any worker runs; read-only afterwards except the atomic stats. */
struct server {
    struct str name;    /* borrowed from argv */
    struct str name_nl; /* owned: name + "\n", the default body */
    int record_fd;      /* -1 without --record */
    struct stats stats;
    struct buf default_resp;    /* owned: the whole default response */
    llhttp_settings_t settings; /* shared by every parser; must outlive them */
    char pattern[BODY_CHUNK + PATTERN_PERIOD];
    struct worker *workers; /* owned array */
    int n_workers;
    uint32_t h2_max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS we advertise */
};

struct worker {
    struct server *srv;   /* borrowed, outlives the worker */
    struct ev_loop *loop; /* owned unless it is the default loop (worker 0) */
    int lfd;
    ev_io accept_io;
    ev_timer accept_pause; /* re-arms accept after EMFILE/ENFILE */
    ev_async stop;         /* workers 1..n-1: main thread asks the loop to end */
    struct list conns;     /* every open struct conn of this worker */
    pthread_t tid;
};

enum reset_at { RESET_NONE, RESET_BEFORE_HEADERS, RESET_AFTER_HEADERS, RESET_MID_BODY };

enum malformed {
    MAL_NONE,
    MAL_CL_TE,
    MAL_BARE_LF,
    MAL_BARE_CR,
    MAL_SHORT_BODY,
    MAL_EXTRA_RESPONSE,
    MAL_MANY_100,
    MAL_HUGE_HEADERS,
    /* HTTP/2 only (upstream_h2.c), from MAL_H2_FIRST on: */
    MAL_H2_UPPER_NAME,  /* a response field name with upper case */
    MAL_H2_NO_STATUS,   /* a response HEADERS without :status */
    MAL_H2_BAD_CL,      /* content-length: abc */
    MAL_H2_CL_MISMATCH, /* content-length: 100, then 6 body bytes and END_STREAM */
};
#define MAL_H2_FIRST MAL_H2_UPPER_NAME
#define MAL_COUNT (MAL_H2_CL_MISMATCH + 1)

/* What the control headers asked for; zeroed per request. */
struct plan {
    int status;
    bool has_body_size;
    uint64_t body_size;
    uint64_t delay_ms;
    uint64_t body_delay_ms;
    uint64_t drip_ms; /* the body one byte at a time, this far apart */
    bool chunked;
    bool echo;
    bool close_no_response;
    bool hang;
    bool conn_close;
    enum reset_at reset;
    enum malformed malformed;
    struct str only; /* x-upstream-only: names the fault controls apply to; empty: all */
    bool early;      /* answer when the head arrives, before the body, then close */
    /* HTTP/2 only (HTTP/1.1 answers 400 when one is given). */
    bool refuse;          /* RST_STREAM(REFUSED_STREAM) before any processing */
    bool has_goaway;      /* GOAWAY(last_stream_id = this stream, goaway_code) */
    uint32_t goaway_code; /* error code of that GOAWAY */
    uint32_t rst_code;    /* error code of a reset's RST_STREAM; 0 means INTERNAL_ERROR */
    bool has_rst_code;
    bool has_trailer;     /* x-upstream-trailer was given (the lines are read at send time) */
    bool has_max_streams; /* SETTINGS(MAX_CONCURRENT_STREAMS = max_streams) when the headers arrive
                           */
    uint32_t max_streams;
};

enum body_src { BODY_NAME, BODY_SCRATCH, BODY_PATTERN };

/*
 * One connection's life. Parsing stops at each complete request (llhttp is paused in
 * on_message_complete) until its response is queued, so pipelined responses stay in order.
 *
 *   PARSE --request--> [DELAY] --> HEAD --> [BODY_DELAY] --> BODY --> DONE --> PARSE
 *                                   |  \-> HANG (until the peer goes)   |
 *                                   |-> RESET (RST once out drains)     \-> CLOSE (FIN) -> LINGER
 *                                   \-> CLOSE (x-upstream-close, malformed, connection: close)
 */
enum conn_state {
    ST_PARSE,
    ST_DELAY,
    ST_HEAD,
    ST_BODY_DELAY,
    ST_BODY,
    ST_DONE,
    ST_RESET,
    ST_CLOSE,
    ST_HANG,
    ST_LINGER,
    ST_H2, /* an HTTP/2 connection: upstream_h2.c drives it (see h2_run) */
};

/* Connections are classified on their first bytes: control ones are invisible to counters. */
enum conn_class { CLASS_UNKNOWN, CLASS_ORDINARY, CLASS_CONTROL };

/* A header as offsets into conn.hb, which may move as it grows. */
struct hdr {
    uint32_t name_off, name_len;
    uint32_t val_off, val_len;
};

struct conn {
    struct list link; /* in worker.conns */
    struct worker *w; /* borrowed: the owning worker */
    int fd;
    ev_io rio;
    ev_io wio;
    ev_timer timer; /* delays and lingering close */
    llhttp_t parser;
    enum conn_state state;
    enum conn_class klass;
    struct buf in;      /* owned: read, not yet parsed */
    struct buf out;     /* owned: queued for send */
    struct buf hb;      /* owned: URL (at offset 0), header and trailer bytes of this request */
    struct buf scratch; /* owned: echo JSON */
    struct hdr *hdrs;   /* owned: headers then trailers of this request */
    size_t n_hdrs, cap_hdrs;
    size_t n_head_hdrs; /* hdrs[0, n_head_hdrs) are headers, the rest trailers */
    struct hdr cur;
    uint32_t url_len;
    bool in_field;
    bool head_too_big;
    bool headers_done;
    bool in_message;
    bool msg_ready;
    bool early; /* x-upstream-early: answered at the head, the body never read */
    bool peer_eof;
    bool keep_alive;
    bool close_after;
    bool is_active_counted;
    bool is_http10; /* an HTTP/1.0 request: keep-alive must be said explicitly */
    uint8_t method;
    uint64_t body_len; /* request body bytes */
    struct plan plan;
    enum body_src body_src;
    uint64_t body_total;
    uint64_t body_sent;
    struct h2conn *h2; /* owned: the HTTP/2 session, NULL for HTTP/1.1 */
};

/* ---- counters ------------------------------------------------------------------------------ */

static inline void stat_add(_Atomic uint64_t *v, uint64_t n)
{
    atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

/* Saturating: a reset may zero the counter between the increment and this decrement. */
static inline void stat_dec(_Atomic uint64_t *v)
{
    uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    while (cur > 0 && !atomic_compare_exchange_weak_explicit(v, &cur, cur - 1, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}

static inline uint64_t stat_get(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

/* Raises `*v` to `n` if it is lower. */
static inline void stat_max(_Atomic uint64_t *v, uint64_t n)
{
    uint64_t cur = atomic_load_explicit(v, memory_order_relaxed);
    while (cur < n && !atomic_compare_exchange_weak_explicit(v, &cur, n, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}

/* ---- upstream.c, used by upstream_h2.c ------------------------------------------------------ */

/* Appends `p` as a JSON string (bytes outside printable ASCII as \u00XX). */
void json_str(struct buf *b, const char *p, size_t len);

/* Appends the counters as the JSON object /__upstream/stats answers; `do_reset` zeroes them
 * first (all but the active_connections gauge). */
void stats_json(struct server *s, struct buf *b, bool do_reset);

/* Applies the controls in the query string of `url` to `pl`. Returns NULL or an error message
 * (with `*bad_key` set); `*any` becomes true when a control was found. */
const char *plan_apply_query(struct plan *pl, struct str url, bool *any, struct str *bad_key);

/* Applies one control `key` (the header name after "x-upstream-") with value `v`. Returns NULL
 * or a static error message; `*known` says whether `key` is a control at all. */
const char *apply_control(struct plan *pl, struct str key, struct str v, bool *known);

/* After every control is applied: drops the faults when x-upstream-only does not name `me`. */
void plan_apply_only(struct plan *pl, struct str me);

/* Generated body byte `off` onward: at least BODY_CHUNK bytes of the pattern. */
const char *pattern_at(const struct server *s, uint64_t off);

/* Sends queued output. Returns 0 when drained, 1 when the kernel is full (the write watcher is
 * armed), -1 on a fatal error (the caller destroys the connection). */
int conn_flush(struct conn *c);

/* Drives `c` until it waits for I/O or a timer. May destroy `c`. */
void conn_run(struct conn *c);

/* Closes and frees `c` (with a TCP RST when `rst`). */
void conn_destroy(struct conn *c, bool rst);

/* ---- upstream_h2.c ------------------------------------------------------------------------- */

/* Compares the first `n` bytes a connection sent with the HTTP/2 client preface: 1 when they
 * hold all of it, 0 when they are a proper prefix of it, -1 when they differ. */
int h2_preface_check(const uint8_t *p, size_t n);

/* Turns `c` (whose unparsed input starts with the preface) into an HTTP/2 connection:
 * c->state becomes ST_H2. Counts the connection in h2_connections. */
void h2_start(struct conn *c);

/* One step of an HTTP/2 connection: feeds c->in to the session, sends what it has, arms
 * reading. Returns 0 to wait for I/O or a timer, 1 when c->state moved on (ST_CLOSE), -1 when
 * the connection must be destroyed. */
int h2_run(struct conn *c);

/* Frees c->h2 (stream timers stopped, incomplete streams counted); c itself stays. */
void h2_free(struct conn *c);
