/* accepted: what a worker learned of a connection it accepted, before handing it to the
 * network filter of the chain chosen for it (downstream.c for the HTTP connection manager,
 * tcp_proxy.c), and the socket calls that learn it. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/str.h"

struct filter_chain_cfg;
struct worker_scope;

/* An IPv4 or IPv6 socket address, small enough to keep per connection. */
union sockaddr_ip {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
};

/* Copies `sa` (IPv4 or IPv6) into `out`; false (and AF_UNSPEC) for other families or NULL. */
bool sockaddr_ip_set(union sockaddr_ip *out, const struct sockaddr *sa);

struct accepted {
    int fd;
    const struct sockaddr *peer; /* the remote address (the PROXY header's source) */
    /* The socket's own peer when the proxy_protocol listener filter restored another remote
     * address (Envoy's direct remote address); NULL: `peer` is the socket's. */
    const struct sockaddr *direct;
    const struct filter_chain_cfg *chain;
    struct worker_scope *sc; /* the listener's scope (worker.h) */
    /* The connection's local address, or the original destination that the original_dst
     * listener filter restored; NULL when the listener did not need it. */
    const struct sockaddr *local;
    /* The SNI the tls_inspector found (lower-cased; empty: none, or no tls_inspector). Valid
     * only during the accept call: copy what is kept (e.g. for %REQUESTED_SERVER_NAME%). */
    struct str requested_server_name;
};

/* The local address of accepted socket `fd` into `out`; with `original_dst`, the destination
 * before an iptables REDIRECT or DNAT (SO_ORIGINAL_DST, IP6T_SO_ORIGINAL_DST for IPv6), when
 * the connection was redirected (otherwise the local address, as Envoy's filter). Returns false
 * when not even the local address can be read. */
bool accepted_local_addr(int fd, bool original_dst, struct sockaddr_storage *out);

/* An IPv4 or IPv6 address as text ("10.0.0.1", "::1") into `ip[48]`, and its port; "unknown"
 * and 0 for other families (and NULL). */
void accepted_addr_text(const struct sockaddr *sa, char ip[48], uint16_t *port);

/* The address and port as Envoy prints them ("10.0.0.1:80", "[::1]:80") into `out[56]`;
 * returns the length. */
#define SOCKADDR_TEXT_MAX 56
size_t sockaddr_text(const struct sockaddr *sa, char out[SOCKADDR_TEXT_MAX]);
