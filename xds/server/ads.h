/* ads: remora-xds's xDS server: the Aggregated Discovery Service, state of the world, over
 * gRPC (h2c with prior knowledge; an nghttp2 server session per connection) on the same libev
 * loop as the App Mesh API.
 *
 * One method is served, /envoy.service.discovery.v3.AggregatedDiscoveryService/
 * StreamAggregatedResources; any other path gets grpc-status 12 (UNIMPLEMENTED), a request
 * whose content-type is not application/grpc gets HTTP 415. Each stream's protocol state is
 * sotw.c's; its resources come from meshes.c's snapshot of the mesh its node names
 * (node.metadata.mesh, else a node.id of the form mesh/<m>/virtualNode/<vn> or its ARN, else
 * the only mesh when exactly one exists).
 *
 * Bounds: connections (closed at accept beyond `max_conns`), streams per connection
 * (SETTINGS_MAX_CONCURRENT_STREAMS, and refused beyond), message size (a longer one fails the
 * stream with RESOURCE_EXHAUSTED before it is buffered; partial messages of all streams
 * together are bounded too), names per request (INVALID_ARGUMENT), response bytes queued for
 * a peer that does not read (per stream and in all: the stream is reset), and a connection
 * with no stream for `idle_timeout_ms` is closed.
 *
 * Connection lifetime, as a gRPC server's keepalive and max-connection-age options:
 *   - keepalive (`keepalive_time_ms`, 0: off): a PING every keepalive_time_ms (counted from
 *     the previous PING's ACK; proxy/http/h2_keepalive.h, no jitter); no ACK within
 *     `keepalive_timeout_ms` (any frame received extends the wait) closes the connection, so a
 *     client behind a silently dropped path does not hold its slot and streams for ever;
 *   - max connection age (`max_age_ms`, 0: off; +-10% jitter so that clients connected together
 *     do not all reconnect together): GOAWAY(NO_ERROR), each stream ended after what is queued
 *     for it with grpc-status 14 (UNAVAILABLE, "max connection age": xDS clients reconnect and
 *     get the same resources), and the connection closed once its streams are done, or after
 *     `max_age_grace_ms` at the latest.
 *
 * TLS (a `tls` context from ads_tls.h): each connection runs the server handshake first, within
 * `handshake_timeout_ms`; a failed or late handshake closes that connection only (counted in
 * ads_tls_stats, logged at warning level at most once a second). */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct ads;
struct meshes;
struct tls_ctx;

struct ads_limits {
    size_t max_conns;
    uint32_t max_streams;        /* per connection */
    uint32_t max_msg;            /* bytes of one DiscoveryRequest */
    size_t max_names;            /* resource_names of one request */
    size_t max_queued;           /* response bytes waiting for one stream's peer */
    size_t max_queued_total;     /* the same, all streams */
    size_t max_held_total;       /* bytes of partial requests held, all streams */
    double idle_timeout_ms;      /* a connection without streams */
    double handshake_timeout_ms; /* TLS: from accept to the end of the handshake */
    double keepalive_time_ms;    /* PING interval; 0: no keepalive */
    double keepalive_timeout_ms; /* its ACK's deadline */
    double max_age_ms;           /* GOAWAY after this; 0: no limit */
    double max_age_grace_ms;     /* then closed after this at the latest */
};

/* TLS handshakes on the xDS port since startup (in the log line of each failure). */
struct ads_tls_stats {
    uint64_t handshakes; /* completed */
    uint64_t failed;     /* failed or timed out, all reasons (those below included) */
    uint64_t no_cert;    /* mTLS: the client sent no certificate */
    uint64_t verify;     /* mTLS: its certificate did not chain to the client CA */
    uint64_t timeouts;   /* not done within handshake_timeout_ms */
};

/* Starts serving the listening socket `lfd` (taken) on `loop` from `m` (borrowed), over TLS with
 * server context `tls` (borrowed, outliving the server; ads_tls.h), or h2c when it is NULL. */
struct ads *ads_new(struct ev_loop *loop, int lfd, const struct ads_limits *lim, struct meshes *m,
                    const struct tls_ctx *tls);

/* Node authorization (--xds-tls-authorize-nodes): each stream's node must be the one its client
 * certificate's SPIFFE ID names in trust domain `trust_domain` (copied): a sidecar's node id
 * (mesh/<m>/virtualNode/<vn>, or its ARN) needs spiffe://<td>/mesh/<m>/virtualNode/<vn>, a
 * gateway's .../virtualGateway/<g>, and any other node (a proxyless gRPC client) is served only
 * the mesh its certificate names. Otherwise, and when the first request carries no node, the
 * stream ends with grpc-status 7 (PERMISSION_DENIED) and the reason, logged at warning level.
 * Only meaningful over mTLS (the TLS context verifies the chain); call before serving. NULL
 * turns it off. */
void ads_authorize_nodes(struct ads *a, const char *trust_domain);

/* Streams denied by node authorization since startup. */
uint64_t ads_denied(const struct ads *a);

/* The configuration changed: recompute every stream's resources and push what changed. */
void ads_push(struct ads *a);

void ads_free(struct ads *a);
