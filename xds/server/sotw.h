/* sotw: the state-of-the-world xDS protocol of one ADS stream, as pure code (no socket, no
 * loop): which requests to answer, what to answer them with, and when a configuration change
 * is to be pushed (xds-wire.md §7).
 *
 * Per type: the subscription (names, or the wildcard for LDS/CDS when the first request names
 * nothing), the nonce of the last response (a request carrying another nonce is stale and
 * ignored), and a hash of the last response's content. The version_info of a response is that
 * hash, so it changes when the content changes and only then; a NACK (error_detail set) is
 * answered by nothing until the content or the subscription changes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xds/appmesh/translate.h"

struct sotw_type {
    bool requested; /* a request of this type was taken */
    bool wildcard;
    char **names; /* sorted, unique */
    size_t n_names;
    char nonce[24]; /* of the last response, "" before the first */
    bool sent;
    uint64_t sent_hash;
    char **sent_names; /* the names of the last response, sorted */
    size_t n_sent;
};

struct sotw {
    struct sotw_type t[XDS_NTYPES];
    uint64_t nonces; /* responses sent on the stream */
};

enum sotw_verdict {
    SOTW_STALE,  /* ignored: its nonce is not the last one sent */
    SOTW_ACK,    /* nothing to answer */
    SOTW_NACK,   /* the client refused the last response: nothing to answer */
    SOTW_ANSWER, /* a first request or a subscription change: answer it */
};

/* One DiscoveryRequest of type `t`: `nonce` its response_nonce, `names` its resource_names,
 * `nack` whether error_detail is set. Updates the subscription unless stale. */
enum sotw_verdict sotw_request(struct sotw *s, enum xds_type t, const char *nonce,
                               char *const *names, size_t n_names, bool nack);

/* A response to be sent: the resources of `snap` (may be NULL: none) the subscription of type
 * `t` selects. */
struct sotw_resp {
    const struct xds_resource **res; /* owned by the struct (sotw_resp_clear) */
    size_t n;
    uint64_t hash;
    bool removes; /* names the last response had are gone (push such CDS last) */
    char version[17];
    char nonce[24];
};

/* Selects what type `t` should carry now. Returns true (and fills `out`) when a response is
 * due: `force` (answering a request) or the content differs from the last response's. Nothing
 * is due for a type never requested, or one whose subscription names nothing and was never
 * answered. */
bool sotw_prepare(struct sotw *s, enum xds_type t, const struct xds_snapshot *snap, bool force,
                  struct sotw_resp *out);

/* Records `r` as sent (fresh nonce, version = content hash, names). */
void sotw_commit(struct sotw *s, enum xds_type t, struct sotw_resp *r);

void sotw_resp_clear(struct sotw_resp *r);
void sotw_free(struct sotw *s);
