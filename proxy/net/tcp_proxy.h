/* tcp_proxy: envoy.filters.network.tcp_proxy. A TCP listener's accepted connection is paired
 * with one upstream connection to an endpoint of the configured cluster (or of a weighted pick
 * among clusters), and bytes flow both ways until both sides have closed:
 *
 *   CONNECTING --connected--> PROXYING --both directions shut--> closed
 *        | connect failure: another pick, up to max_connect_attempts
 *        v
 *     closed (flag UF; the client sees its connection closed)
 *
 * Each direction has a buffer bounded by the listener's per_connection_buffer_limit_bytes:
 * reading from one side stops while the other side's buffer is over it. A FIN is passed on as
 * shutdown(SHUT_WR) once that direction's buffer is flushed (half-close); a reset closes both
 * sides at once. `idle_timeout` (default 1 h) closes a session with no bytes either way. One
 * access log line per session. Thread: the owning worker. */
#pragma once

#include <sys/socket.h>
#include <stdint.h>

struct accepted;
struct worker;

/* Takes a socket accepted for chain a->chain, a TCP proxy. */
void tcp_proxy_accept(struct worker *w, const struct accepted *a);

/* Closes the sessions of `w` accepted through listener scope `sc` (the drain deadline of a
 * listener LDS removed or replaced). */
struct worker_scope;
void tcp_proxy_close_scope(struct worker *w, const struct worker_scope *sc);

/* Closes every session of `w` (a stop, or the end of a drain). */
void tcp_proxy_close_all(struct worker *w);
