/* rbac_policy: Envoy's RBAC engine (envoy.config.rbac.v3.RBAC), shared by the HTTP filter
 * (rbac.c) and the network filter (rbac_network.c). A RBAC message is compiled once, at config
 * time, into a small tree of nodes in the snapshot arena (rbac_policy_build); a request or a
 * connection is then judged by walking that tree (rbac_policy_eval), without allocating.
 *
 * Semantics, as Envoy's RoleBasedAccessControlEngineImpl:
 *   - a policy matches when any of its permissions and any of its principals match;
 *   - ALLOW: allowed when some policy matches; DENY: allowed when none does; LOG: always
 *     allowed;
 *   - the "effective policy" is the first matching policy in name order (Envoy keeps the
 *     policies in a sorted map), used for rbac_access_denied_matched_policy[...].
 * Nesting of and/or/not rules is bounded (RBAC_MAX_DEPTH) at build time, so a hostile config
 * cannot make the evaluator recurse deeply.
 *
 * Thread: build on main; the compiled engine is immutable and evaluated on any worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/config/config.h"
#include "proxy/core/str.h"
#include "proxy/net/chain_match.h"

struct filter_build;
struct route_req;
struct tls_conn;
struct Envoy__Config__Rbac__V3__RBAC;

/* The deepest nesting of and_rules/or_rules/not_rule (and_ids/or_ids/not_id) accepted. */
#define RBAC_MAX_DEPTH 32

enum rbac_action {
    RBAC_ALLOW,
    RBAC_DENY,
    RBAC_LOG,
};

enum rbac_node_kind {
    RN_ANY,
    RN_AND,
    RN_OR,
    RN_NOT,
    RN_HEADER,        /* header (a route HeaderMatcher) */
    RN_PATH,          /* url_path: the path without query and fragment */
    RN_DST_IP,        /* destination_ip */
    RN_DST_PORT,      /* destination_port, destination_port_range: [lo, hi) */
    RN_SNI,           /* requested_server_name */
    RN_AUTHENTICATED, /* authenticated (principal_name optional) */
    RN_DIRECT_REMOTE, /* direct_remote_ip, source_ip: the peer of the connection */
    RN_REMOTE,        /* remote_ip: the trusted client address (x-forwarded-for aware) */
};

struct rbac_node {
    enum rbac_node_kind kind;
    bool has_sm;                  /* RN_AUTHENTICATED: principal_name is set */
    uint32_t n;                   /* RN_AND, RN_OR: children; RN_NOT: 1 */
    const struct rbac_node *kids; /* [n] */
    struct header_matcher hm;     /* RN_HEADER */
    struct str_match sm;          /* RN_PATH, RN_SNI, RN_AUTHENTICATED */
    struct cidr cidr;             /* RN_DST_IP, RN_DIRECT_REMOTE, RN_REMOTE */
    uint32_t port_lo, port_hi;    /* RN_DST_PORT */
};

struct rbac_policy {
    struct str name;
    const struct rbac_node *perms; /* any of them */
    uint32_t n_perms;
    const struct rbac_node *ids; /* any of them */
    uint32_t n_ids;
};

struct rbac_engine {
    enum rbac_action action;
    bool needs_local;                   /* some rule looks at the destination address or port */
    const struct rbac_policy *policies; /* sorted by name */
    uint32_t n_policies;
};

/* The subject of the peer certificate (RFC 2253), computed once per connection when an
 * authenticated principal_name needs it. Zero it before first use. A subject longer than the
 * buffer is matched as empty. */
#define RBAC_SUBJECT_MAX 512
struct rbac_subject {
    bool done;
    uint16_t len;
    char buf[RBAC_SUBJECT_MAX];
};

/* What the engine looks at. Any pointer may be NULL (unknown: rules on it do not match). */
struct rbac_input {
    const struct route_req *http; /* the request (headers, path); NULL: a connection */
    struct str direct_ip;         /* the connection's peer address as text */
    struct str remote_ip;         /* the trusted client address as text; empty: the
                                   * direct peer */
    const struct sockaddr *local; /* the local (or original destination) address */
    struct str sni;               /* requested server name; may be empty */
    const struct tls_conn *tls;   /* the TLS session; NULL: plaintext */
    struct rbac_subject *subject; /* cache for the peer's subject (may be NULL) */
};

/* Compiles `pb` under fb's current path (errors name the field). `network`: the network
 * filter's rules, where header and url_path are rejected as Envoy does. Returns 0 and sets
 * *out (in fb->a), or -EINVAL. */
int rbac_policy_build(struct filter_build *fb, const struct Envoy__Config__Rbac__V3__RBAC *pb,
                      bool network, const struct rbac_engine **out);

/* Judges `in`: true when allowed. `*policy` gets the effective policy's name (the first matching
 * policy in name order), or an empty string when none matched. */
bool rbac_policy_eval(const struct rbac_engine *e, const struct rbac_input *in, struct str *policy);

/* Whether node `n` matches `in` (for tests). */
bool rbac_policy_node_match(const struct rbac_node *n, const struct rbac_input *in);
