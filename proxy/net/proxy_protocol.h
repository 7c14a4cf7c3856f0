/* proxy_protocol: the envoy.filters.listener.proxy_protocol listener filter (HAProxy's PROXY
 * protocol, v1 text and v2 binary). After accept (and after original_dst), a connection of a
 * listener with this filter waits, on its own ev_io and timer on the worker's loop, for its
 * PROXY header; the header is then read off the socket (exactly its bytes: what follows stays
 * for the chain), and its source and destination become the connection's remote and local
 * addresses. The socket's own peer stays the direct remote address (RBAC's direct_remote_ip,
 * %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%, direct_source_prefix_ranges), as in Envoy:
 *
 *   accept --> waiting --header--> addresses restored --> tls_inspector or chain_select
 *                 |--v2 LOCAL, v1 UNKNOWN, v2 AF_UNSPEC: the socket's addresses, handed over
 *                 |--no PROXY signature: closed (proxy_proto.not_found_disallowed), or with
 *                 |  allow_requests_without_proxy_protocol handed over as it is
 *                 |  (proxy_proto.not_found_allowed)
 *                 |--malformed, or a version in disallowed_versions: closed
 *                 |  (proxy_proto.versions.<v>.error / .disallowed)
 *                 |--peer closed or reset while waiting: closed
 *                 \--listener_filters_timeout: closed, or with continue_on_listener_filters_
 *                    timeout handed over as it is (listener.<a>.downstream_pre_cx_timeout)
 *
 * Bytes are peeked (MSG_PEEK into the worker's scratch space) until the header is whole; the
 * socket's SO_RCVLOWAT is set to the count still needed, so a waiting connection holds no
 * buffer of its own. A v1 line is at most 107 bytes; a v2 header at most PP_V2_MAX (TLVs are
 * skipped). Thread: the owning worker, except pp_parse(), which is safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/net/accepted.h"

/* The longest v1 line, "\r\n" included (the spec's 107). */
#define PP_V1_MAX 107
/* The longest v2 header remora reads (16 bytes and addresses and TLVs); Envoy allows the
 * 16-bit length's 65535 bytes of addresses and TLVs, senders (HAProxy, AWS NLB) send far less. */
#define PP_V2_MAX (16 + 4096)

enum pp_rc {
    PP_MORE,   /* a PROXY header so far: wait for `need` bytes in all */
    PP_DONE,   /* a whole header of `len` bytes: version, and addresses when has_addrs */
    PP_NOT_PP, /* no PROXY signature (of a version in the mask) */
    PP_ERROR,  /* a signature but a malformed header (`version` says which) */
};

/* Version bits for pp_parse()'s mask. */
#define PP_V1 1u
#define PP_V2 2u

struct pp_header {
    size_t need;      /* PP_MORE */
    size_t len;       /* PP_DONE: the header's bytes */
    unsigned version; /* PP_DONE, PP_ERROR: 1 or 2 */
    bool has_addrs;   /* PP_DONE: src and dst are set (false: v1 UNKNOWN, v2 LOCAL or AF_UNSPEC) */
    union sockaddr_ip src, dst;
};

/* Reads the first `len` bytes a client sent, looking for the signatures of the versions in
 * `versions` (PP_V1 | PP_V2). Never reads past p[len - 1], never blocks, keeps no state: call
 * it again with more bytes after PP_MORE. */
enum pp_rc pp_parse(const uint8_t *p, size_t len, unsigned versions, struct pp_header *out);

struct worker;
struct worker_listener;

/* Takes accepted socket a->fd of listener `wl` (a->peer and a->local are copied) and waits for
 * its PROXY header; then hands it to the tls_inspector or worker_accept_chain(), or closes it. */
void pp_start(struct worker *w, const struct worker_listener *wl, const struct accepted *a);

/* Closes the sockets listener `wl` has waiting (an LDS listener going away). */
void pp_close_listener(struct worker *w, const struct worker_listener *wl);

/* Closes every connection still waiting (a drain or a stop). */
void pp_close_all(struct worker *w);
