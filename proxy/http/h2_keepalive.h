/* h2_keepalive: HTTP/2 connection keepalive as Envoy's codec runs it
 * (Http2ProtocolOptions.connection_keepalive), so a peer behind a silently dropped path is
 * noticed instead of holding a connection (and its streams) for ever.
 *
 *   - every `interval` (plus a random jitter of up to `jitter_percent` of it) a PING goes out,
 *     unless one is already awaiting its ACK;
 *   - when its ACK does not come within `timeout`, the owner's `timeout` callback closes the
 *     connection; any frame received meanwhile restarts that wait (Envoy: head-of-line blocking
 *     must not look like a dead peer);
 *   - with `idle_interval` (connection_idle_interval), a client also sends a PING ahead of a new
 *     stream on a connection that received nothing for that long (h2_keepalive_before_stream);
 *   - the ACK of our PING schedules the next one (interval + jitter from then).
 *
 * The owner keeps its nghttp2 session and its I/O: this module submits the PING into the
 * session and asks the owner to flush; the owner tells it about received frames. Used by the
 * upstream HTTP/2 pool (proxy/upstream/upstream_h2.c), the ADS client (proxy/xds/ads.c), the
 * downstream HTTP/2 codec (proxy/http/downstream_h2.c) and remora-xds's ADS server
 * (xds/server/ads.c, with interval = its --xds-keepalive-time). One thread: the owner's loop. */
#pragma once

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>

/* connection_keepalive, compiled (proxy/config/build.c). `timeout_ms` 0 means keepalive is off
 * (the field was not set); `interval_ms` 0: no periodic PING (only idle_interval's, if set). */
struct h2_keepalive_cfg {
    uint64_t interval_ms;
    uint64_t timeout_ms;
    double jitter_percent; /* interval_jitter, 0..100; Envoy's default 15 */
    uint64_t idle_interval_ms;
};

/* Owner callbacks; both run from the loop (a timer), never from inside nghttp2. */
struct h2_keepalive_ops {
    void (*flush)(void *ud);   /* a PING was submitted: write it */
    void (*timeout)(void *ud); /* no ACK within timeout: close the connection (any stream on it
                                * fails as on any connection failure) */
};

struct h2_keepalive {
    struct ev_loop *loop;               /* borrowed */
    const struct h2_keepalive_cfg *cfg; /* borrowed, valid while the connection lives; NULL: off */
    const struct h2_keepalive_ops *ops; /* borrowed (static) */
    void *ud;
    nghttp2_session *sess; /* borrowed: set by h2_keepalive_start, NULL before */
    ev_timer send;         /* the next interval PING */
    ev_timer wait;         /* a PING awaits its ACK */
    ev_tstamp last_rx;     /* when a frame was last received (connection_idle_interval) */
    uint64_t rng;          /* jitter */
    uint64_t opaque;       /* the payload of the PING awaiting its ACK */
    uint64_t n_sent;       /* PINGs sent (for the log and tests) */
};

/* True when `cfg` turns keepalive on. */
static inline bool h2_keepalive_enabled(const struct h2_keepalive_cfg *cfg)
{
    return cfg != NULL && cfg->timeout_ms > 0;
}

/* Sets `k` up, idle (no timer runs): `cfg` NULL or disabled makes every other call a no-op.
 * `seed` varies the jitter between connections. */
void h2_keepalive_init(struct h2_keepalive *k, struct ev_loop *loop,
                       const struct h2_keepalive_cfg *cfg, const struct h2_keepalive_ops *ops,
                       void *ud, uint64_t seed);

/* The connection is up over `sess`: the first interval starts now. */
void h2_keepalive_start(struct h2_keepalive *k, nghttp2_session *sess);

/* Call from the session's on_frame_recv for every frame: a PING ACK ends the wait and
 * schedules the next PING (any ACK, as Envoy: there is one PING outstanding at most); any
 * other frame restarts a running wait. */
void h2_keepalive_on_frame(struct h2_keepalive *k, const nghttp2_frame *f);

/* A client is about to open a stream: with idle_interval, a connection that received nothing
 * for that long gets a PING first (unless one is outstanding). The owner flushes after. */
void h2_keepalive_before_stream(struct h2_keepalive *k);

/* Stops both timers (the connection is closing, or its session is going away). */
void h2_keepalive_stop(struct h2_keepalive *k);
