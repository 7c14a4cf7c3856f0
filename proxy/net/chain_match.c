/* chain_match: choosing a listener's filter chain (see chain_match.h). */
#include "proxy/net/chain_match.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "proxy/http/trust.h"

bool cidr_parse(struct str addr, uint32_t len, struct cidr *out)
{
    memset(out, 0, sizeof(*out));
    struct trust_ip ip;
    if (!trust_ip_parse(addr, &ip)) {
        return false;
    }
    memcpy(out->b, ip.b, sizeof(out->b));
    out->v6 = ip.v6;
    uint32_t bits = ip.v6 ? 128 : 32;
    if (len > bits) {
        return false;
    }
    out->len = (uint8_t)len;
    for (uint32_t i = len; i < bits; i++) {
        out->b[i / 8] &= (uint8_t) ~(0x80u >> (i % 8));
    }
    return true;
}

/* An IP out of a socket address; IPv4-mapped IPv6 addresses count as IPv4. */
struct ip {
    uint8_t b[16];
    bool v6;
    bool ok;
    uint16_t port;
};

static struct ip ip_of(const struct sockaddr *sa)
{
    struct ip ip = {0};
    if (sa == NULL) {
        return ip;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        memcpy(ip.b, &in->sin_addr, 4);
        ip.port = ntohs(in->sin_port);
        ip.ok = true;
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            memcpy(ip.b, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            memcpy(ip.b, &in6->sin6_addr, 16);
            ip.v6 = true;
        }
        ip.port = ntohs(in6->sin6_port);
        ip.ok = true;
    }
    return ip;
}

static bool cidr_contains(const struct cidr *c, const struct ip *ip)
{
    if (!ip->ok || c->v6 != ip->v6) {
        return false;
    }
    uint32_t full = c->len / 8, rest = c->len % 8;
    if (memcmp(c->b, ip->b, full) != 0) {
        return false;
    }
    return rest == 0 || ((c->b[full] ^ ip->b[full]) & (uint8_t)(0xff00u >> rest)) == 0;
}

static bool ip_is_loopback(const struct ip *ip)
{
    static const uint8_t v6_loopback[16] = {[15] = 1};
    return ip->v6 ? memcmp(ip->b, v6_loopback, 16) == 0 : ip->b[0] == 127;
}

/* A level's score: -1 no match, 0 the level is empty (any), > 0 the more specific the higher. */
static int score_ranges(const struct cidr *r, uint32_t n, const struct ip *ip)
{
    if (n == 0) {
        return 0;
    }
    int best = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (cidr_contains(&r[i], ip) && r[i].len + 1 > best) {
            best = r[i].len + 1;
        }
    }
    return best;
}

/* A server name's score: 0 the level is empty, then a wildcard by the length of its suffix
 * (".example.com" of "*.example.com": Envoy tries the longest suffix first), then an exact
 * name above any wildcard (a name is at most 255 bytes: wildcards score at most 256). */
#define SNI_EXACT 1024

static int score_server_name(const struct chain_match *m, struct str sni)
{
    if (m->n_server_names == 0) {
        return 0;
    }
    int best = -1;
    for (uint32_t i = 0; i < m->n_server_names; i++) {
        struct str want = m->server_names[i];
        if (want.len > 2 && want.p[0] == '*') {
            /* "*.example.com" matches a name ending in ".example.com" with at least one byte
             * before it (not "example.com" itself), as Envoy's lookup of ".example.com" */
            struct str key = {want.p + 1, want.len - 1};
            if (sni.len > key.len && memcmp(sni.p + sni.len - key.len, key.p, key.len) == 0 &&
                (int)key.len + 1 > best) {
                best = (int)key.len + 1;
            }
        } else if (sni.len > 0 && str_eq(want, sni)) {
            return SNI_EXACT;
        }
    }
    return best;
}

/* Envoy takes the client's ALPN protocols in order: the first one some chain lists wins. */
static int score_alpn(const struct chain_match *m, const struct chain_tls *t)
{
    if (m->n_alpn == 0) {
        return 0;
    }
    for (uint32_t i = 0; t != NULL && i < t->n_alpn; i++) {
        for (uint32_t j = 0; j < m->n_alpn; j++) {
            if (str_eq(m->alpn[j], t->alpn[i])) {
                return (int)(t->n_alpn - i);
            }
        }
    }
    return -1;
}

enum level {
    LV_DST_PORT,
    LV_DST_IP,
    LV_SERVER_NAME,
    LV_TRANSPORT,
    LV_APP_PROTO,
    LV_DIRECT_SRC_IP,
    LV_SRC_TYPE,
    LV_SRC_IP,
    LV_SRC_PORT,
    LV_COUNT
};

struct conn {
    struct ip local, peer, direct;
    bool same_or_loopback;
    const struct chain_tls *tls; /* NULL: raw_buffer */
};

static int score(const struct chain_match *m, enum level lv, const struct conn *c)
{
    switch (lv) {
    case LV_DST_PORT:
        if (m->dst_port == 0) {
            return 0;
        }
        return c->local.ok && c->local.port == m->dst_port ? 1 : -1;
    case LV_DST_IP:
        return score_ranges(m->dst, m->n_dst, &c->local);
    case LV_SERVER_NAME:
        return score_server_name(m, c->tls != NULL ? c->tls->sni : STR_NULL);
    case LV_TRANSPORT:
        if (m->transport == CHAIN_TRANSPORT_ANY) {
            return 0;
        }
        return (m->transport == CHAIN_TRANSPORT_TLS) == (c->tls != NULL && c->tls->tls) ? 1 : -1;
    case LV_APP_PROTO:
        return score_alpn(m, c->tls);
    case LV_DIRECT_SRC_IP:
        return score_ranges(m->direct_src, m->n_direct_src, &c->direct);
    case LV_SRC_TYPE:
        if (m->src_type == CHAIN_SRC_ANY) {
            return 0;
        }
        return (m->src_type == CHAIN_SRC_LOCAL) == c->same_or_loopback ? 1 : -1;
    case LV_SRC_IP:
        return score_ranges(m->src, m->n_src, &c->peer);
    case LV_SRC_PORT:
        if (m->n_src_ports == 0) {
            return 0;
        }
        for (uint32_t i = 0; i < m->n_src_ports; i++) {
            if (c->peer.ok && m->src_ports[i] == c->peer.port) {
                return 1;
            }
        }
        return -1;
    case LV_COUNT:
        break;
    }
    return -1;
}

int chain_select(const struct chain_match *m, uint32_t n, const struct sockaddr *local,
                 const struct sockaddr *peer, const struct chain_tls *tls)
{
    return chain_select_direct(m, n, local, peer, NULL, tls);
}

int chain_select_direct(const struct chain_match *m, uint32_t n, const struct sockaddr *local,
                        const struct sockaddr *peer, const struct sockaddr *direct,
                        const struct chain_tls *tls)
{
    if (n == 0 || n > CHAIN_MATCH_MAX) {
        return -1;
    }
    struct conn c = {.local = ip_of(local),
                     .peer = ip_of(peer),
                     .direct = ip_of(direct != NULL ? direct : peer),
                     .tls = tls};
    c.same_or_loopback =
        c.peer.ok && (ip_is_loopback(&c.peer) || (c.local.ok && c.local.v6 == c.peer.v6 &&
                                                  memcmp(c.local.b, c.peer.b, 16) == 0));
    uint16_t alive[CHAIN_MATCH_MAX];
    uint32_t n_alive = n;
    for (uint32_t i = 0; i < n; i++) {
        alive[i] = (uint16_t)i;
    }
    for (int lv = 0; lv < LV_COUNT && n_alive > 0; lv++) {
        int best = -1;
        for (uint32_t i = 0; i < n_alive; i++) {
            int s = score(&m[alive[i]], (enum level)lv, &c);
            if (s > best) {
                best = s;
            }
        }
        uint32_t kept = 0;
        for (uint32_t i = 0; best >= 0 && i < n_alive; i++) {
            if (score(&m[alive[i]], (enum level)lv, &c) == best) {
                alive[kept++] = alive[i];
            }
        }
        n_alive = kept;
    }
    return n_alive > 0 ? alive[0] : -1;
}

/* Whether two range lists share a range (both empty: both are the wildcard). */
static bool ranges_overlap(const struct cidr *a, uint32_t na, const struct cidr *b, uint32_t nb)
{
    if (na == 0 || nb == 0) {
        return na == nb;
    }
    for (uint32_t i = 0; i < na; i++) {
        for (uint32_t j = 0; j < nb; j++) {
            if (a[i].v6 == b[j].v6 && a[i].len == b[j].len &&
                memcmp(a[i].b, b[j].b, sizeof(a[i].b)) == 0) {
                return true;
            }
        }
    }
    return false;
}

/* Whether two string lists share a value (both empty: both are the wildcard). */
static bool strs_overlap(const struct str *a, uint32_t na, const struct str *b, uint32_t nb)
{
    if (na == 0 || nb == 0) {
        return na == nb;
    }
    for (uint32_t i = 0; i < na; i++) {
        for (uint32_t j = 0; j < nb; j++) {
            if (str_eq(a[i], b[j])) {
                return true;
            }
        }
    }
    return false;
}

static bool ports_overlap(const uint16_t *a, uint32_t na, const uint16_t *b, uint32_t nb)
{
    if (na == 0 || nb == 0) {
        return na == nb;
    }
    for (uint32_t i = 0; i < na; i++) {
        for (uint32_t j = 0; j < nb; j++) {
            if (a[i] == b[j]) {
                return true;
            }
        }
    }
    return false;
}

bool chain_match_overlap(const struct chain_match *a, const struct chain_match *b)
{
    return a->dst_port == b->dst_port && ranges_overlap(a->dst, a->n_dst, b->dst, b->n_dst) &&
           strs_overlap(a->server_names, a->n_server_names, b->server_names, b->n_server_names) &&
           a->transport == b->transport && strs_overlap(a->alpn, a->n_alpn, b->alpn, b->n_alpn) &&
           ranges_overlap(a->direct_src, a->n_direct_src, b->direct_src, b->n_direct_src) &&
           a->src_type == b->src_type && ranges_overlap(a->src, a->n_src, b->src, b->n_src) &&
           ports_overlap(a->src_ports, a->n_src_ports, b->src_ports, b->n_src_ports);
}

bool chain_server_name_valid(struct str name)
{
    if (name.len == 0) {
        return false;
    }
    for (size_t i = 0; i < name.len; i++) {
        if (name.p[i] == '*' && !(i == 0 && name.len > 2 && name.p[1] == '.')) {
            return false;
        }
    }
    return true;
}
