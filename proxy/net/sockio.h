/* sockio: one send or recv on a connection's socket, plain or through its TLS session, with one
 * result convention for every socket owner (downstream.c, upstream.c, upstream_h2.c,
 * tcp_proxy.c): bytes (for a recv, 0 is the peer's end), -EAGAIN when it would block (with TLS,
 * the session's want_read / want_write say on what), or another negative errno when the
 * connection is broken (-EPROTO: a TLS failure, tls_conn.fail says why). Inline: the plaintext
 * path costs what the bare call does. Thread: the connection's owner. */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "proxy/net/tls.h"

static inline ssize_t sock_send(int fd, struct tls_conn *tls, const void *p, size_t n)
{
    if (tls != NULL) {
        return tls_conn_send(tls, p, n);
    }
    for (;;) {
        ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
        if (r >= 0) {
            return r;
        }
        if (errno != EINTR) {
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
    }
}

static inline ssize_t sock_recv(int fd, struct tls_conn *tls, void *p, size_t n)
{
    if (tls != NULL) {
        return tls_conn_recv(tls, p, n);
    }
    for (;;) {
        ssize_t r = recv(fd, p, n, 0);
        if (r >= 0) {
            return r;
        }
        if (errno != EINTR) {
            return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        }
    }
}
