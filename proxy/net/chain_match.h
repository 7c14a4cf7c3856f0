/* chain_match: which of a listener's filter chains takes a new connection, as Envoy's filter
 * chain manager decides it from `filter_chain_match`.
 *
 * The criteria are taken level by level, in Envoy's order: destination port, destination IP,
 * server name, transport protocol, application protocols, direct source IP, source type, source
 * IP, source port. At each level the chains still in the running are scored against the
 * connection: a chain that leaves the level empty matches anything with the lowest score, a
 * chain whose value matches scores by how specific that value is (a longer prefix, an exact
 * server name over a wildcard and a longer wildcard suffix over a shorter one, the client's
 * earlier ALPN protocol), and a chain whose values all miss drops out. Only the best score goes
 * on to the next level. With no two chains matching the same connections (chain_match_overlap()
 * is false for every pair, which the config builder checks), at most one chain is left at the
 * end; none means the listener's default chain, if any.
 *
 * The destination is the connection's local address, or the one the original_dst listener
 * filter restored (SO_ORIGINAL_DST). The server name, transport protocol and ALPN list come
 * from the tls_inspector listener filter (proxy/net/tls_inspector.h); without it (or for a
 * plaintext connection) the transport protocol is "raw_buffer" and the other two are empty, as
 * in Envoy. Nothing here allocates; safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/str.h"

/* An address range: IPv4 in the first 4 bytes, bits past `len` zero. */
struct cidr {
    uint8_t b[16];
    uint8_t len; /* prefix length in bits: 0..32 (IPv4) or 0..128 (IPv6) */
    bool v6;
};

enum chain_source_type {
    CHAIN_SRC_ANY = 0,
    CHAIN_SRC_LOCAL = 1,    /* SAME_IP_OR_LOOPBACK */
    CHAIN_SRC_EXTERNAL = 2, /* EXTERNAL */
};

enum chain_transport {
    CHAIN_TRANSPORT_ANY = 0,
    CHAIN_TRANSPORT_RAW_BUFFER, /* "raw_buffer": every connection not found to be TLS */
    CHAIN_TRANSPORT_TLS,        /* "tls": the tls_inspector saw a ClientHello */
};

/* One chain's `filter_chain_match`; empty lists and zeros match anything at their level. */
struct chain_match {
    uint32_t dst_port; /* destination_port; 0: any */
    const struct cidr *dst;
    uint32_t n_dst; /* prefix_ranges */
    /* server_names, lower-cased: "a.example.com", or "*.example.com" (any name ending in
     * ".example.com", not "example.com" itself) */
    const struct str *server_names;
    uint32_t n_server_names;
    enum chain_transport transport; /* transport_protocol */
    const struct str *alpn;         /* application_protocols */
    uint32_t n_alpn;
    const struct cidr *direct_src;
    uint32_t n_direct_src; /* direct_source_prefix_ranges */
    enum chain_source_type src_type;
    const struct cidr *src;
    uint32_t n_src; /* source_prefix_ranges */
    const uint16_t *src_ports;
    uint32_t n_src_ports; /* source_ports */
};

/* The most chains one listener may have (the selection keeps its candidates on the stack). */
#define CHAIN_MATCH_MAX 1024

/* Parses `addr` ("10.0.0.0", "fd00::") with prefix length `len` into `out`, clearing the bits
 * past the prefix as Envoy does ("10.1.2.3/8" is 10.0.0.0/8). Returns false when `addr` is not
 * an IP address or `len` is longer than its family allows. */
bool cidr_parse(struct str addr, uint32_t len, struct cidr *out);

/* Whether two chains would both match some connection at every level: Envoy's "multiple filter
 * chains with the same matching rules". An empty list is a value of its own here (the
 * wildcard), so a chain with `destination_port: 80` and one without do not overlap. */
bool chain_match_overlap(const struct chain_match *a, const struct chain_match *b);

/* What the tls_inspector learned of a connection. */
struct chain_tls {
    bool tls;               /* a TLS ClientHello ("tls"; otherwise "raw_buffer") */
    struct str sni;         /* the requested server name, lower-cased; empty: none */
    const struct str *alpn; /* the client's ALPN protocols, in its order */
    uint32_t n_alpn;
};

/* The index (0..n-1) of the chain in `m[n]` that takes a connection from `peer` to `local`
 * (either may be NULL when unknown: criteria on it then miss), with `tls` (NULL: a
 * "raw_buffer" connection without server name or ALPN), or -1 when none matches. */
int chain_select(const struct chain_match *m, uint32_t n, const struct sockaddr *local,
                 const struct sockaddr *peer, const struct chain_tls *tls);

/* chain_select() where the socket's own peer `direct` (direct_source_prefix_ranges) is not the
 * remote address `peer` (the proxy_protocol listener filter restored it); NULL: `peer`. */
int chain_select_direct(const struct chain_match *m, uint32_t n, const struct sockaddr *local,
                        const struct sockaddr *peer, const struct sockaddr *direct,
                        const struct chain_tls *tls);

/* Whether `name` is a valid server_names entry: no '*' but a leading "*." followed by more. */
bool chain_server_name_valid(struct str name);
