/* rbac_network: envoy.filters.network.rbac (envoy.extensions.filters.network.rbac.v3.RBAC), a
 * network filter placed before the http_connection_manager or tcp_proxy of a filter chain. Its
 * rules (rbac_policy.h; no header or url_path rules, as Envoy) judge a connection once, on its
 * first bytes from the client (enforcement_type ONE_TIME_ON_FIRST_BYTE, Envoy's default; after
 * the TLS handshake when the chain terminates TLS); a denied connection is closed before those
 * bytes go anywhere. Stats: <stat_prefix>.rbac.allowed, denied, and
 * <stat_prefix>.rbac.<shadow_rules_stat_prefix>shadow_allowed / shadow_denied (Envoy's
 * statPrefixJoin: no second '.' after a stat_prefix ending in one). CONTINUOUS enforcement and
 * delay_deny are not supported (rejected with their paths).
 *
 * Thread: build on main (build.c calls rbac_network_build for each such filter of a chain);
 * rbac_network_allow on the connection's worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"
#include "proxy/core/str.h"
#include "proxy/stats/stats.h"

struct Google__Protobuf__Any;
struct tls_conn;
struct rbac_engine;

struct rbac_net_cfg {
    const struct rbac_engine *rules;  /* NULL: nothing enforced */
    const struct rbac_engine *shadow; /* NULL: none */
    uint32_t st_allowed, st_denied, st_shadow_allowed, st_shadow_denied; /* config.stat_defs */
};

/* Whether a network filter's typed_config is a network RBAC config. */
bool rbac_network_is(const struct Google__Protobuf__Any *any);

/* Compiles the typed_config `any` (field path `path`) into snapshot `c`. Sets *needs_local when
 * a rule looks at the destination address or port (the listener must learn it). Returns 0 and
 * *out, or -EINVAL with a field-path error in `err`. */
int rbac_network_build(struct config *c, const char *path, const struct Google__Protobuf__Any *any,
                       const struct rbac_net_cfg **out, bool *needs_local, struct err *err);

/* A connection, as the network filter sees it. */
struct rbac_net_conn {
    struct str peer_ip;           /* text: the remote address (remote_ip) */
    struct str direct_ip;         /* text: the socket's peer (direct_remote_ip); empty: peer_ip */
    const struct sockaddr *local; /* NULL or AF_UNSPEC: unknown */
    const struct tls_conn *tls;   /* NULL: plaintext */
    struct str sni;               /* the tls_inspector's, used when `tls` has none */
};

/* Runs chain `fc`'s network RBAC filters on `conn` in order, counting in `ext` (the worker's
 * stats_block.ext). Returns false when one of them denies the connection (the caller closes it).
 * Thread: the connection's worker. */
bool rbac_network_allow(const struct filter_chain_cfg *fc, stat_t *ext,
                        const struct rbac_net_conn *conn);
