/* chain_match: which of a listener's filter chains takes a new connection, as Envoy's filter
 * chain manager decides it from `filter_chain_match`.
 *
 * The criteria are taken level by level, in Envoy's order: destination port, destination IP,
 * transport protocol, direct source IP, source type, source IP, source port. At each level the
 * chains still in the running are scored against the connection: a chain that leaves the level
 * empty matches anything with the lowest score, a chain whose value matches scores by how
 * specific that value is (a longer prefix wins), and a chain whose values all miss drops out.
 * Only the best score goes on to the next level. With no two chains matching the same
 * connections (chain_match_overlap() is false for every pair, which the config builder checks),
 * at most one chain is left at the end; none means the listener's default chain, if any.
 *
 * The destination is the connection's local address, or the one the original_dst listener
 * filter restored (SO_ORIGINAL_DST). Nothing here allocates; safe on any thread. */
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

/* One chain's `filter_chain_match`; empty lists and zeros match anything at their level. */
struct chain_match {
    uint32_t dst_port; /* destination_port; 0: any */
    const struct cidr *dst;
    uint32_t n_dst;  /* prefix_ranges */
    bool raw_buffer; /* transport_protocol "raw_buffer" (every connection without TLS) */
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

/* The index (0..n-1) of the chain in `m[n]` that takes a connection from `peer` to `local`
 * (either may be NULL when unknown: criteria on it then miss), or -1 when none matches. */
int chain_select(const struct chain_match *m, uint32_t n, const struct sockaddr *local,
                 const struct sockaddr *peer);
