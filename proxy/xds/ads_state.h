/* ads_state: the pure half of the proxy's ADS client (proxy/xds/ads.h): the state-of-the-world
 * protocol state per resource type, the DiscoveryRequests it makes, the ACK/NACK decision on each
 * DiscoveryResponse, and the reconnect back-off. No I/O, no clock, no libev: the client feeds it
 * whole gRPC messages and sends what it builds, and the unit tests drive it directly.
 *
 * Per type (xds-wire.md §7; Envoy's GrpcMuxImpl): the subscribed names, the last accepted
 * version_info, the last response's nonce, and a pending error_detail. Every response is
 * answered: an ACK carries the response's version and nonce; a NACK the previous accepted
 * version, the nonce, and error_detail {code 3 INVALID_ARGUMENT, message: the builder's
 * field-path error}. A request is built when it is sent, from the type's state at that moment,
 * so a burst of responses queued behind a slow socket collapses into one request per type (the
 * server ignores stale nonces anyway). A new stream (ads_state_stream_start) forgets the nonces
 * and re-sends every subscription with the last accepted version and an empty nonce.
 *
 * Adding a type is one entry in the caller's table (struct ads_type: its type URL and an apply
 * callback) plus its subscription (ads_state_subscribe).
 *
 * Bounds: a response with more than ADS_MAX_RESOURCES resources, a name or version longer than
 * ADS_MAX_STRING bytes, or that does not decode, fails the stream (ADS_RESP_BAD); the client
 * reconnects. Thread: the caller's (main). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

struct Google__Protobuf__Any;
struct Envoy__Config__Core__V3__Node;

#define ADS_MAX_TYPES 8
#define ADS_MAX_RESOURCES 10000
#define ADS_MAX_STRING 4096 /* a resource name, version_info or nonce */
#define ADS_MAX_NAMES 10000 /* subscribed names per type */

#define ADS_TYPE_PREFIX "type.googleapis.com/"

/* One resource of a response that the type subscribed to. */
struct ads_resource {
    const char *name;                        /* its name (field 1 of the resource) */
    const struct Google__Protobuf__Any *any; /* the packed resource; type checked */
    uint32_t index;                          /* its position in the response's resources */
};

/* A resource type the client speaks. `apply` gets the subscribed resources of one response
 * (possibly none: then it is not called, but for a wildcard type) and returns 0, or -EINVAL with a
 * field-path error in `err` ("resources[2].virtual_hosts[0]...: ..."): the response is then NACKed
 * with it. */
struct ads_type {
    const char *type_url;
    const char *label; /* for logs: "rds" */
    int (*apply)(void *ud, const char *version, const struct ads_resource *res, size_t n,
                 struct err *err);
    void *ud;
};

struct ads_type_state {
    const struct ads_type *type;
    char **names; /* owned, sorted, unique; [n_names] */
    size_t n_names;
    char *version;  /* owned: the last accepted version_info ("" at first) */
    char *nonce;    /* owned: the last response's nonce on this stream ("" at first) */
    char *error;    /* owned: a NACK's message waiting to be sent, or NULL */
    bool wildcard;  /* every resource of the type (CDS): empty resource_names, all applied */
    bool pending;   /* a request for this type is due */
    bool last_nack; /* the last request built was a NACK (for logs) */
    uint64_t acks;  /* responses accepted */
    uint64_t nacks; /* responses rejected */
};

struct ads_state {
    struct ads_type_state types[ADS_MAX_TYPES];
    uint32_t n_types;
    const struct Envoy__Config__Core__V3__Node *node; /* borrowed */
    bool node_once;                                   /* set_node_on_first_message_only */
    bool node_sent;                                   /* on this stream */
};

/* Sets up `st` for the types `types[n]` (borrowed; n <= ADS_MAX_TYPES) and the Node sent on the
 * first request of each stream (every request unless `node_once`). */
void ads_state_init(struct ads_state *st, const struct ads_type *types, uint32_t n,
                    const struct Envoy__Config__Core__V3__Node *node, bool node_once);

void ads_state_free(struct ads_state *st);

/* Replaces type `t`'s subscription with `names[n]` (copied; duplicates dropped). A change makes a
 * request due. Returns 0 or -E2BIG past ADS_MAX_NAMES. */
int ads_state_subscribe(struct ads_state *st, uint32_t t, const char *const *names, size_t n);

/* Makes a request for type `t` due with its names unchanged (Envoy re-subscribes a resource a
 * new watch wants, e.g. the EDS name of a cluster CDS modified); nothing without names. */
void ads_state_resubscribe(struct ads_state *st, uint32_t t);

/* Makes type `t` a wildcard subscription (Envoy's CDS and LDS: resource_names empty on the
 * stream's first request, which a server reads as "*"): every resource of a response is
 * subscribed, and `apply` is called even with none (state of the world: none means "remove
 * all"). A request becomes due. */
void ads_state_subscribe_wildcard(struct ads_state *st, uint32_t t);

/* A new stream: nonces and pending errors are forgotten, the node is due again, and every type
 * with names (or a wildcard) has a request due (its last accepted version, an empty nonce). */
void ads_state_stream_start(struct ads_state *st);

/* The number of types with a request due. */
uint32_t ads_state_pending(const struct ads_state *st);

/* Builds the next due request (types in table order) as a packed DiscoveryRequest in *out
 * (malloc'd, *len bytes) and clears its due flag and pending error. Returns the type's index, or
 * -1 when nothing is due. */
int ads_state_next_request(struct ads_state *st, uint8_t **out, size_t *len);

enum ads_resp {
    ADS_RESP_ACK,     /* applied: an ACK is due */
    ADS_RESP_NACK,    /* rejected (err says why): a NACK is due */
    ADS_RESP_IGNORED, /* a type this client does not speak: no answer (as Envoy) */
    ADS_RESP_BAD,     /* not a DiscoveryResponse within the bounds: fail the stream */
};

/* Handles one DiscoveryResponse message (`len` bytes). Resources whose Any type is not the
 * response's NACK it; resources not subscribed are ignored; the rest go to the type's `apply`.
 * `*type` receives the type's index (for ACK/NACK). `err` says why for NACK and BAD. */
enum ads_resp ads_state_on_response(struct ads_state *st, const uint8_t *msg, size_t len, int *type,
                                    struct err *err);

/* The top-level length-delimited field `field` of the protobuf message `p[n]` (the first one),
 * e.g. a resource's name (field 1 of Listener, RouteConfiguration, Cluster, Secret and
 * ClusterLoadAssignment). Returns 0 with *out and *out_len (borrowed), 1 when absent, or -1 when
 * the bytes do not parse. */
int ads_pb_field(const uint8_t *p, size_t n, uint32_t field, const uint8_t **out, size_t *out_len);

/* Envoy's jittered exponential back-off for the stream (JitteredExponentialBackOffStrategy, base
 * 500 ms, max 30 s): each retry draws uniformly below the current interval, which doubles up to
 * the max; reset when a response arrives. */
struct ads_backoff {
    uint64_t base_ms;
    uint64_t max_ms;
    uint64_t next_ms; /* the interval of the next draw */
};

void ads_backoff_init(struct ads_backoff *b, uint64_t base_ms, uint64_t max_ms);
void ads_backoff_reset(struct ads_backoff *b);
/* The next delay from the random value `rnd`, in [0, interval) and at most max_ms. */
uint64_t ads_backoff_next(struct ads_backoff *b, uint64_t rnd);
