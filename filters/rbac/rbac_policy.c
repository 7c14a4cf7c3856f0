/* rbac_policy: compiling and evaluating Envoy's RBAC rules (see rbac_policy.h). */
#include "filters/rbac/rbac_policy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "envoy/config/rbac/v3/rbac.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/net/tls_verify.h"
#include "proxy/http/filter.h"
#include "proxy/http/regex.h"
#include "proxy/http/router.h"
#include "proxy/net/tls.h"

#define PbRbac Envoy__Config__Rbac__V3__RBAC
#define PbPolicy Envoy__Config__Rbac__V3__Policy
#define PbPermission Envoy__Config__Rbac__V3__Permission
#define PbPrincipal Envoy__Config__Rbac__V3__Principal
#define PbCidr Envoy__Config__Core__V3__CidrRange
#define PbPathMatcher Envoy__Type__Matcher__V3__PathMatcher
#define PbStringMatcher Envoy__Type__Matcher__V3__StringMatcher

/* ---- build ---- */

static int build_sm(struct filter_build *fb, const char *field, const PbStringMatcher *pb,
                    struct str_match *out)
{
    size_t mark = filter_build_at(fb, ".%s", field);
    int rc = build_string_match(fb->c, fb->path, pb, out, fb->err);
    filter_build_up(fb, mark);
    return rc;
}

static int build_path(struct filter_build *fb, const PbPathMatcher *pm, struct rbac_node *n)
{
    n->kind = RN_PATH;
    if (pm->rule_case != ENVOY__TYPE__MATCHER__V3__PATH_MATCHER__RULE_PATH || pm->path == NULL) {
        return filter_build_fail(fb, "url_path", "one of path is required");
    }
    size_t mark = filter_build_at(fb, ".url_path");
    int rc = build_sm(fb, "path", pm->path, &n->sm);
    filter_build_up(fb, mark);
    return rc;
}

static int build_cidr(struct filter_build *fb, const char *field, const PbCidr *r,
                      enum rbac_node_kind kind, struct rbac_node *n)
{
    n->kind = kind;
    uint32_t len = r->prefix_len != NULL ? r->prefix_len->value : 0;
    if (!cidr_parse(str_from_c(r->address_prefix), len, &n->cidr)) {
        return filter_build_fail(fb, field, "'%s/%u' is not an IP address range",
                                 r->address_prefix ? r->address_prefix : "", len);
    }
    return 0;
}

static int build_header(struct filter_build *fb, const Envoy__Config__Route__V3__HeaderMatcher *h,
                        struct rbac_node *n)
{
    n->kind = RN_HEADER;
    size_t mark = filter_build_at(fb, ".header");
    int rc = build_header_matcher(fb->c, fb->path, h, &n->hm, fb->err);
    filter_build_up(fb, mark);
    return rc;
}

static int build_permission(struct filter_build *fb, const PbPermission *p, bool network,
                            unsigned depth, struct rbac_node *n);
static int build_principal(struct filter_build *fb, const PbPrincipal *p, bool network,
                           unsigned depth, struct rbac_node *n);

/* A list of permissions (`is_perm`) or principals under `field`, into n->kids. */
static int build_list(struct filter_build *fb, const char *field, void *const *v, size_t count,
                      bool is_perm, bool network, unsigned depth, struct rbac_node *kids)
{
    for (size_t i = 0; i < count; i++) {
        size_t mark = filter_build_at(fb, ".%s[%zu]", field, i);
        int rc = is_perm ? build_permission(fb, v[i], network, depth, &kids[i])
                         : build_principal(fb, v[i], network, depth, &kids[i]);
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int build_set(struct filter_build *fb, const char *field, const char *list, void *const *v,
                     size_t count, bool is_perm, bool network, unsigned depth,
                     enum rbac_node_kind kind, struct rbac_node *n)
{
    n->kind = kind;
    if (count == 0) {
        /* Envoy: rules/ids of a Set must have at least one item */
        return filter_build_fail(fb, field, "%s must not be empty", list);
    }
    struct rbac_node *kids = ARENA_NEW_N(fb->a, struct rbac_node, count);
    n->kids = kids;
    n->n = (uint32_t)count;
    size_t mark = filter_build_at(fb, ".%s", field);
    int rc = build_list(fb, list, v, count, is_perm, network, depth + 1, kids);
    filter_build_up(fb, mark);
    return rc;
}

static int too_deep(struct filter_build *fb)
{
    return filter_build_fail(fb, NULL, "rules nested deeper than %d levels", RBAC_MAX_DEPTH);
}

static int build_permission(struct filter_build *fb, const PbPermission *p, bool network,
                            unsigned depth, struct rbac_node *n)
{
    if (depth > RBAC_MAX_DEPTH) {
        return too_deep(fb);
    }
    switch (p->rule_case) {
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_AND_RULES:
        return build_set(fb, "and_rules", "rules", (void *const *)p->and_rules->rules,
                         p->and_rules->n_rules, true, network, depth, RN_AND, n);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_OR_RULES:
        return build_set(fb, "or_rules", "rules", (void *const *)p->or_rules->rules,
                         p->or_rules->n_rules, true, network, depth, RN_OR, n);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY:
        if (!p->any) {
            return filter_build_fail(fb, "any", "must be true");
        }
        n->kind = RN_ANY;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_HEADER:
        if (network) {
            return filter_build_fail(fb, "header",
                                     "header rules are not supported by the network filter");
        }
        return build_header(fb, p->header, n);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_URL_PATH:
        if (network) {
            return filter_build_fail(fb, "url_path",
                                     "url_path rules are not supported by the network filter");
        }
        return build_path(fb, p->url_path, n);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_IP:
        return build_cidr(fb, "destination_ip", p->destination_ip, RN_DST_IP, n);
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT:
        if (p->destination_port > 65535) {
            return filter_build_fail(fb, "destination_port", "must be at most 65535");
        }
        n->kind = RN_DST_PORT;
        n->port_lo = p->destination_port;
        n->port_hi = p->destination_port + 1;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_DESTINATION_PORT_RANGE: {
        const Envoy__Type__V3__Int32Range *r = p->destination_port_range;
        if (r->start < 0 || r->end < r->start || r->end > 65536) {
            return filter_build_fail(fb, "destination_port_range", "[%d, %d) is not a port range",
                                     r->start, r->end);
        }
        n->kind = RN_DST_PORT;
        n->port_lo = (uint32_t)r->start;
        n->port_hi = (uint32_t)r->end;
        return 0;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_NOT_RULE: {
        n->kind = RN_NOT;
        struct rbac_node *kid = ARENA_NEW(fb->a, struct rbac_node);
        n->kids = kid;
        n->n = 1;
        size_t mark = filter_build_at(fb, ".not_rule");
        int rc = build_permission(fb, p->not_rule, network, depth + 1, kid);
        filter_build_up(fb, mark);
        return rc;
    }
    case ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_REQUESTED_SERVER_NAME:
        n->kind = RN_SNI;
        return build_sm(fb, "requested_server_name", p->requested_server_name, &n->sm);
    default:
        return filter_build_fail(fb, NULL,
                                 "one of and_rules, or_rules, any, header, url_path, "
                                 "destination_ip, destination_port, "
                                 "destination_port_range, not_rule, "
                                 "requested_server_name is required");
    }
}

static int build_principal(struct filter_build *fb, const PbPrincipal *p, bool network,
                           unsigned depth, struct rbac_node *n)
{
    if (depth > RBAC_MAX_DEPTH) {
        return too_deep(fb);
    }
    switch (p->identifier_case) {
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AND_IDS:
        return build_set(fb, "and_ids", "ids", (void *const *)p->and_ids->ids, p->and_ids->n_ids,
                         false, network, depth, RN_AND, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_OR_IDS:
        return build_set(fb, "or_ids", "ids", (void *const *)p->or_ids->ids, p->or_ids->n_ids,
                         false, network, depth, RN_OR, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY:
        if (!p->any) {
            return filter_build_fail(fb, "any", "must be true");
        }
        n->kind = RN_ANY;
        return 0;
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_AUTHENTICATED: {
        n->kind = RN_AUTHENTICATED;
        if (p->authenticated->principal_name == NULL) {
            return 0;
        }
        n->has_sm = true;
        size_t mark = filter_build_at(fb, ".authenticated");
        int rc = build_sm(fb, "principal_name", p->authenticated->principal_name, &n->sm);
        filter_build_up(fb, mark);
        return rc;
    }
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_SOURCE_IP:
        /* deprecated in Envoy; it means direct_remote_ip */
        return build_cidr(fb, "source_ip", p->source_ip, RN_DIRECT_REMOTE, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_DIRECT_REMOTE_IP:
        return build_cidr(fb, "direct_remote_ip", p->direct_remote_ip, RN_DIRECT_REMOTE, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_REMOTE_IP:
        return build_cidr(fb, "remote_ip", p->remote_ip, RN_REMOTE, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_HEADER:
        if (network) {
            return filter_build_fail(fb, "header",
                                     "header rules are not supported by the network filter");
        }
        return build_header(fb, p->header, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_URL_PATH:
        if (network) {
            return filter_build_fail(fb, "url_path",
                                     "url_path rules are not supported by the network filter");
        }
        return build_path(fb, p->url_path, n);
    case ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_NOT_ID: {
        n->kind = RN_NOT;
        struct rbac_node *kid = ARENA_NEW(fb->a, struct rbac_node);
        n->kids = kid;
        n->n = 1;
        size_t mark = filter_build_at(fb, ".not_id");
        int rc = build_principal(fb, p->not_id, network, depth + 1, kid);
        filter_build_up(fb, mark);
        return rc;
    }
    default:
        return filter_build_fail(fb, NULL,
                                 "one of and_ids, or_ids, any, authenticated, "
                                 "source_ip, direct_remote_ip, remote_ip, header, "
                                 "url_path, not_id is required");
    }
}

static bool needs_local(const struct rbac_node *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (v[i].kind == RN_DST_IP || v[i].kind == RN_DST_PORT ||
            needs_local(v[i].kids, v[i].kids != NULL ? v[i].n : 0)) {
            return true;
        }
    }
    return false;
}

static int policy_cmp(const void *a, const void *b)
{
    const struct rbac_policy *x = a, *y = b;
    size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
    int c = memcmp(x->name.p, y->name.p, n);
    if (c != 0) {
        return c;
    }
    return x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
}

int rbac_policy_build(struct filter_build *fb, const PbRbac *pb, bool network,
                      const struct rbac_engine **out)
{
    struct rbac_engine *e = ARENA_NEW(fb->a, struct rbac_engine);
    switch (pb->action) {
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__ALLOW:
        e->action = RBAC_ALLOW;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__DENY:
        e->action = RBAC_DENY;
        break;
    case ENVOY__CONFIG__RBAC__V3__RBAC__ACTION__LOG:
        e->action = RBAC_LOG;
        break;
    default:
        return filter_build_fail(fb, "action", "unknown value %d", (int)pb->action);
    }
    struct rbac_policy *ps =
        ARENA_NEW_N(fb->a, struct rbac_policy, pb->n_policies ? pb->n_policies : 1);
    for (size_t i = 0; i < pb->n_policies; i++) {
        const Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *en = pb->policies[i];
        const char *key = en->key != NULL ? en->key : "";
        size_t mark = filter_build_at(fb, ".policies.%s", key);
        const PbPolicy *pol = en->value;
        int rc = 0;
        ps[i].name = arena_strdup(fb->a, str_from_c(key));
        if (pol == NULL || pol->n_permissions == 0) {
            rc = filter_build_fail(fb, "permissions", "must not be empty");
        } else if (pol->n_principals == 0) {
            rc = filter_build_fail(fb, "principals", "must not be empty");
        }
        if (rc == 0) {
            struct rbac_node *perms = ARENA_NEW_N(fb->a, struct rbac_node, pol->n_permissions);
            struct rbac_node *ids = ARENA_NEW_N(fb->a, struct rbac_node, pol->n_principals);
            rc = build_list(fb, "permissions", (void *const *)pol->permissions, pol->n_permissions,
                            true, network, 1, perms);
            if (rc == 0) {
                rc = build_list(fb, "principals", (void *const *)pol->principals, pol->n_principals,
                                false, network, 1, ids);
            }
            ps[i].perms = perms;
            ps[i].n_perms = (uint32_t)pol->n_permissions;
            ps[i].ids = ids;
            ps[i].n_ids = (uint32_t)pol->n_principals;
        }
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    /* sorted, duplicates are neighbours (a binary map may repeat a key; JSON cannot) */
    qsort(ps, pb->n_policies, sizeof(*ps), policy_cmp);
    for (size_t i = 1; i < pb->n_policies; i++) {
        if (policy_cmp(&ps[i - 1], &ps[i]) == 0) {
            size_t mark = filter_build_at(fb, ".policies.%s", ps[i].name.p);
            int rc = filter_build_fail(fb, NULL, "duplicate policy name");
            filter_build_up(fb, mark);
            return rc;
        }
    }
    for (size_t i = 0; i < pb->n_policies; i++) {
        e->needs_local |= needs_local(ps[i].perms, ps[i].n_perms);
    }
    e->policies = ps;
    e->n_policies = (uint32_t)pb->n_policies;
    *out = e;
    return 0;
}

/* ---- evaluation ---- */

/* An address's bytes (IPv4 in the first 4) and family; false for others. */
static bool addr_bytes(const struct sockaddr *sa, uint8_t b[16], bool *v6)
{
    if (sa == NULL) {
        return false;
    }
    if (sa->sa_family == AF_INET) {
        memcpy(b, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *v6 = false;
        return true;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
        if (IN6_IS_ADDR_V4MAPPED(a)) {
            memcpy(b, a->s6_addr + 12, 4);
            *v6 = false;
        } else {
            memcpy(b, a->s6_addr, 16);
            *v6 = true;
        }
        return true;
    }
    return false;
}

static bool text_bytes(struct str t, uint8_t b[16], bool *v6)
{
    char buf[INET6_ADDRSTRLEN];
    if (t.len == 0 || t.len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, t.p, t.len);
    buf[t.len] = '\0';
    if (inet_pton(AF_INET, buf, b) == 1) {
        *v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, buf, b) == 1) {
        *v6 = !IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)(const void *)b);
        if (!*v6) {
            memmove(b, b + 12, 4);
        }
        return true;
    }
    return false;
}

static bool cidr_has(const struct cidr *c, const uint8_t b[16], bool v6)
{
    if (c->v6 != v6) {
        return false;
    }
    unsigned full = c->len / 8, rest = c->len % 8;
    if (memcmp(c->b, b, full) != 0) {
        return false;
    }
    if (rest == 0) {
        return true;
    }
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (b[full] & mask) == (c->b[full] & mask);
}

static uint32_t addr_port(const struct sockaddr *sa)
{
    if (sa == NULL) {
        return 0;
    }
    if (sa->sa_family == AF_INET) {
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    }
    if (sa->sa_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    }
    return 0;
}

/* Reads one DER element at *p: its tag, value and length; advances *p past it. */
static bool der_next(const uint8_t **p, const uint8_t *end, uint8_t *tag, const uint8_t **val,
                     size_t *len)
{
    const uint8_t *q = *p;
    if (end - q < 2) {
        return false;
    }
    *tag = q[0];
    size_t l = q[1];
    q += 2;
    if (l & 0x80) {
        size_t nb = l & 0x7f;
        if (nb == 0 || nb > 3 || (size_t)(end - q) < nb) {
            return false;
        }
        l = 0;
        for (size_t i = 0; i < nb; i++) {
            l = (l << 8) | q[i];
        }
        q += nb;
    }
    if ((size_t)(end - q) < l) {
        return false;
    }
    *val = q;
    *len = l;
    *p = q + l;
    return true;
}

/* Does `m` match one of cert's SANs of context tag `want` ([6] URI, [2] dNSName)? Walks the
 * extension's DER in place: no allocation. */
static bool san_match(X509 *cert, uint8_t want, const struct str_match *m)
{
    int idx = X509_get_ext_by_NID(cert, NID_subject_alt_name, -1);
    X509_EXTENSION *ext = idx >= 0 ? X509_get_ext(cert, idx) : NULL;
    const ASN1_OCTET_STRING *data = ext != NULL ? X509_EXTENSION_get_data(ext) : NULL;
    if (data == NULL) {
        return false;
    }
    const uint8_t *p = ASN1_STRING_get0_data(data);
    const uint8_t *end = p + ASN1_STRING_length(data);
    uint8_t tag;
    const uint8_t *seq;
    size_t seq_len;
    if (!der_next(&p, end, &tag, &seq, &seq_len) || tag != 0x30) {
        return false;
    }
    const uint8_t *q = seq, *qend = seq + seq_len;
    const uint8_t *v;
    size_t len;
    while (der_next(&q, qend, &tag, &v, &len)) {
        if (tag == (0x80 | want) && str_match_test(m, (struct str){(const char *)v, len})) {
            return true;
        }
    }
    return false;
}

/* The subject of `cert` (NULL: none) in RFC 2253 form, computed once into `c`. */
static struct str peer_subject(X509 *cert, struct rbac_subject *c)
{
    if (!c->done) {
        c->done = true;
        c->len = 0;
        BIO *mem = cert != NULL ? BIO_new(BIO_s_mem()) : NULL;
        if (mem != NULL &&
            X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
            char *p = NULL;
            long n = BIO_get_mem_data(mem, &p);
            if (n > 0 && (size_t)n <= sizeof(c->buf)) {
                memcpy(c->buf, p, (size_t)n);
                c->len = (uint16_t)n;
            }
        }
        BIO_free(mem);
    }
    return (struct str){c->buf, c->len};
}

/* Envoy's AuthenticatedMatcher: a TLS connection; with principal_name, a URI SAN, else a DNS
 * SAN, else the subject of the peer certificate matches it. */
static bool authenticated(const struct rbac_node *n, const struct rbac_input *in)
{
    if (in->tls == NULL || !in->tls->handshake_done) {
        return false;
    }
    if (!n->has_sm) {
        return true;
    }
    X509 *cert = SSL_get0_peer_certificate(in->tls->ssl);
    if (cert != NULL && (san_match(cert, 6, &n->sm) || san_match(cert, 2, &n->sm))) {
        return true;
    }
    if (in->subject == NULL) {
        struct rbac_subject tmp;
        tmp.done = false;
        return str_match_test(&n->sm, peer_subject(cert, &tmp));
    }
    return str_match_test(&n->sm, peer_subject(cert, in->subject));
}

static struct str path_only(struct str p)
{
    for (size_t i = 0; i < p.len; i++) {
        if (p.p[i] == '?' || p.p[i] == '#') {
            return (struct str){p.p, i};
        }
    }
    return p;
}

bool rbac_policy_node_match(const struct rbac_node *n, const struct rbac_input *in)
{
    uint8_t b[16];
    bool v6;
    switch (n->kind) {
    case RN_ANY:
        return true;
    case RN_AND:
        for (uint32_t i = 0; i < n->n; i++) {
            if (!rbac_policy_node_match(&n->kids[i], in)) {
                return false;
            }
        }
        return true;
    case RN_OR:
        for (uint32_t i = 0; i < n->n; i++) {
            if (rbac_policy_node_match(&n->kids[i], in)) {
                return true;
            }
        }
        return false;
    case RN_NOT:
        return !rbac_policy_node_match(&n->kids[0], in);
    case RN_HEADER:
        return in->http != NULL && router_headers_match(&n->hm, 1, in->http);
    case RN_PATH:
        return in->http != NULL && str_match_test(&n->sm, path_only(in->http->path));
    case RN_DST_IP:
        return addr_bytes(in->local, b, &v6) && cidr_has(&n->cidr, b, v6);
    case RN_DST_PORT: {
        uint32_t port = addr_port(in->local);
        return in->local != NULL && port >= n->port_lo && port < n->port_hi;
    }
    case RN_SNI:
        return str_match_test(&n->sm, in->sni);
    case RN_AUTHENTICATED:
        return authenticated(n, in);
    case RN_DIRECT_REMOTE:
        return text_bytes(in->direct_ip, b, &v6) && cidr_has(&n->cidr, b, v6);
    case RN_REMOTE:
        return text_bytes(in->remote_ip.len > 0 ? in->remote_ip : in->direct_ip, b, &v6) &&
               cidr_has(&n->cidr, b, v6);
    }
    return false;
}

static bool any_match(const struct rbac_node *v, uint32_t n, const struct rbac_input *in)
{
    for (uint32_t i = 0; i < n; i++) {
        if (rbac_policy_node_match(&v[i], in)) {
            return true;
        }
    }
    return false;
}

bool rbac_policy_eval(const struct rbac_engine *e, const struct rbac_input *in, struct str *policy)
{
    *policy = (struct str){"", 0};
    bool matched = false;
    for (uint32_t i = 0; i < e->n_policies; i++) {
        const struct rbac_policy *p = &e->policies[i];
        if (any_match(p->perms, p->n_perms, in) && any_match(p->ids, p->n_ids, in)) {
            *policy = p->name;
            matched = true;
            break;
        }
    }
    switch (e->action) {
    case RBAC_ALLOW:
        return matched;
    case RBAC_DENY:
        return !matched;
    case RBAC_LOG:
        return true;
    }
    return false;
}
