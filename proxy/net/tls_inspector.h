/* tls_inspector: the envoy.filters.listener.tls_inspector listener filter. After accept (and
 * after original_dst), a connection of a listener with this filter waits, on its own ev_io and
 * timer on the worker's loop, until its first bytes show a TLS ClientHello or show that it is
 * not TLS. The bytes are only peeked (recv MSG_PEEK into the worker's scratch space), so the
 * chain's network filter (or TLS termination) later reads all of them:
 *
 *   accept --> waiting --ClientHello--> "tls", its SNI and ALPN list --> chain_select, hand over
 *                 |  \--not a TLS handshake record--> "raw_buffer" ----^
 *                 |--ClientHello over 64 KiB: closed (tls_inspector.client_hello_too_large)
 *                 |--peer closed or reset while waiting: closed
 *                 \--listener_filters_timeout: closed, or with continue_on_listener_filters_
 *                    timeout handed over as "raw_buffer" (listener.<a>.downstream_pre_cx_timeout)
 *
 * The ClientHello is parsed by OpenSSL: a throw-away SSL on a memory BIO over the peeked bytes,
 * whose client_hello_cb copies the server_name and ALPN extensions and stops the handshake.
 * Framing is read by hand only to know how many bytes to wait for: the socket's SO_RCVLOWAT is
 * set to that count, so the kernel wakes the worker when the record is complete rather than at
 * every segment, and a waiting connection holds no buffer of its own (about 200 bytes).
 * Thread: the owning worker, except tls_hello_parse(), which is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct accepted;
struct chain_tls;
struct worker;

/* Envoy's limit on a ClientHello (TLS_MAX_CLIENT_HELLO), records included. */
#define TLS_HELLO_MAX 65536
/* The most ALPN protocols kept (a client's further ones are ignored), and their total size. */
#define TLS_HELLO_ALPN_MAX 16
#define TLS_HELLO_ALPN_BYTES 512

enum tls_hello_rc {
    TLS_HELLO_MORE,      /* a ClientHello so far: wait for `need` bytes in all */
    TLS_HELLO_FOUND,     /* a ClientHello: sni and alpn are set */
    TLS_HELLO_NOT_TLS,   /* not a TLS handshake (or not one OpenSSL could read): raw_buffer */
    TLS_HELLO_TOO_LARGE, /* a ClientHello over TLS_HELLO_MAX */
};

/* What a ClientHello asked for. */
struct tls_hello {
    size_t need;   /* TLS_HELLO_MORE: bytes (from the start) worth waiting for */
    char sni[256]; /* server_name host_name, lower-cased, NUL-terminated; "" none */
    size_t sni_len;
    bool alpn_found; /* the ALPN extension was present and well-formed */
    uint32_t n_alpn;
    struct str alpn[TLS_HELLO_ALPN_MAX]; /* point into alpn_buf */
    char alpn_buf[TLS_HELLO_ALPN_BYTES];
};

/* Reads the first `len` bytes a client sent. Never blocks or keeps state: call it again with
 * more bytes after TLS_HELLO_MORE. */
enum tls_hello_rc tls_hello_parse(const uint8_t *p, size_t len, struct tls_hello *out);

/* `h` as chain_select() takes it (`out` points into `h`). */
void tls_hello_view(const struct tls_hello *h, bool tls, struct chain_tls *out);

/* Takes accepted socket a->fd of listener `wl` (a->peer and a->local are copied) and waits
 * for its first bytes; then hands it to worker_accept_chain(), or closes it. */
struct worker_listener;
void tls_inspect_start(struct worker *w, const struct worker_listener *wl,
                       const struct accepted *a);

/* Closes the sockets listener `wl` has waiting (an LDS listener going away). */
void tls_inspect_close_listener(struct worker *w, const struct worker_listener *wl);

/* Closes every connection still waiting (a drain or a stop: none became a connection yet). */
void tls_inspect_close_all(struct worker *w);
