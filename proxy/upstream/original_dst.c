/* original_dst: the run-time hosts of ORIGINAL_DST clusters (see original_dst.h). */
#include "proxy/upstream/original_dst.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/accepted.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/upstream.h"
#include "proxy/worker.h"

struct od_host {
    struct endpoint_rt ep; /* first: the pools and streams see only this */
    struct endpoint_cfg cfg;
    struct host_stats stats;
    struct list link; /* in cluster_rt.od_hosts */
    bool used;        /* picked since the last sweep */
    struct deferred defer;
    char text[SOCKADDR_TEXT_MAX]; /* cfg.addr.text: "10.0.0.1:80", "[::1]:80" */
};

static bool same_dst(const struct sock_addr *a, const struct sockaddr_storage *b)
{
    if (a->ss.ss_family != b->ss_family) {
        return false;
    }
    if (b->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)&a->ss;
        const struct sockaddr_in *y = (const struct sockaddr_in *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)&a->ss;
    const struct sockaddr_in6 *y = (const struct sockaddr_in6 *)b;
    return x->sin6_port == y->sin6_port &&
           memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/* `sa` in a clean sockaddr_storage (only family, address and port set: the key compares them),
 * with the cluster's port override; false for what is not an IP address. */
static bool dst_key(const struct cluster_rt *c, const struct sockaddr *sa,
                    struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    uint16_t port;
    if (sa != NULL && sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        struct sockaddr_in *o = (struct sockaddr_in *)out;
        o->sin_family = AF_INET;
        o->sin_addr = in->sin_addr;
        port = ntohs(in->sin_port);
        o->sin_port = htons(c->cfg->od_port_override ? (uint16_t)c->cfg->od_port_override : port);
        return true;
    }
    if (sa != NULL && sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        struct sockaddr_in6 *o = (struct sockaddr_in6 *)out;
        o->sin6_family = AF_INET6;
        o->sin6_addr = in6->sin6_addr;
        port = ntohs(in6->sin6_port);
        o->sin6_port = htons(c->cfg->od_port_override ? (uint16_t)c->cfg->od_port_override : port);
        return true;
    }
    return false;
}

struct endpoint_rt *original_dst_host(struct cluster_rt *c, const struct sockaddr *dst)
{
    struct sockaddr_storage key;
    if (!dst_key(c, dst, &key)) {
        return NULL;
    }
    struct list *it;
    LIST_FOREACH(it, &c->od_hosts)
    {
        struct od_host *h = LIST_ENTRY(it, struct od_host, link);
        if (same_dst(&h->cfg.addr, &key)) {
            h->used = true;
            if (it != list_first(&c->od_hosts)) { /* most recently used first */
                list_remove(it);
                list_insert_head(&c->od_hosts, it);
            }
            return &h->ep;
        }
    }
    if (c->n_od_hosts >= OD_MAX_HOSTS) {
        return NULL;
    }
    struct od_host *h = xcalloc(1, sizeof(*h));
    h->cfg.addr.ss = key;
    h->cfg.addr.len =
        key.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    h->cfg.weight = 1;
    size_t n = sockaddr_text((const struct sockaddr *)&key, h->text);
    h->cfg.addr.text = (struct str){h->text, n};
    h->ep.cfg = &h->cfg;
    h->ep.stats = &h->stats;
    h->ep.shared = NULL; /* no health checks, no outlier detection on these */
    list_init(&h->ep.idle);
    list_init(&h->ep.h2_conns);
    h->used = true;
    list_insert_head(&c->od_hosts, &h->link);
    c->n_od_hosts++;
    return &h->ep;
}

bool original_dst_parse(struct str s, struct sockaddr_storage *out)
{
    char buf[INET6_ADDRSTRLEN + 16];
    if (s.len == 0 || s.len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    char *ip = buf, *colon;
    if (buf[0] == '[') {
        char *end = strchr(buf, ']');
        if (end == NULL || end[1] != ':') {
            return false;
        }
        *end = '\0';
        ip = buf + 1;
        colon = end + 1;
    } else {
        colon = strrchr(buf, ':');
        if (colon == NULL || memchr(buf, ':', (size_t)(colon - buf)) != NULL) {
            return false; /* no port, or an IPv6 address without brackets */
        }
        *colon = '\0';
    }
    const char *p = colon + 1;
    unsigned long port = 0;
    if (*p == '\0' || strlen(p) > 5) {
        return false;
    }
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port == 0 || port > 65535) {
        return false;
    }
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *in = (struct sockaddr_in *)out;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
    if (ip == buf && inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        return true;
    }
    if (ip != buf && inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return true;
    }
    return false;
}

static void free_host(struct deferred *d)
{
    free(LIST_ENTRY(d, struct od_host, defer));
}

void original_dst_sweep(struct worker *w, struct cluster_rt *c, double now)
{
    if ((now - c->od_last_sweep) * 1000.0 < (double)c->cfg->od_cleanup_ms) {
        return;
    }
    c->od_last_sweep = now;
    struct list *it, *tmp;
    LIST_FOREACH_SAFE(it, tmp, &c->od_hosts)
    {
        struct od_host *h = LIST_ENTRY(it, struct od_host, link);
        if (h->used) {
            h->used = false;
            continue;
        }
        if (h->ep.refs > 0 || h->ep.active_rq > 0) {
            continue;
        }
        upstream_close_idle(&h->ep);
        if (h->ep.n_conns > 0) {
            continue; /* a connection still busy (an HTTP/2 one draining): next time */
        }
        list_remove(&h->link);
        c->n_od_hosts--;
        /* after the connections just closed, whose deferred frees still read their host */
        worker_defer(w, &h->defer, free_host);
    }
}

void original_dst_free_all(struct cluster_rt *c)
{
    while (!list_empty(&c->od_hosts)) {
        struct od_host *h = LIST_ENTRY(list_first(&c->od_hosts), struct od_host, link);
        list_remove(&h->link);
        upstream_close_idle(&h->ep);
        free(h);
    }
    c->n_od_hosts = 0;
}

static void report_cluster(struct od_report *r, uint32_t *cap, const struct cluster_rt *c)
{
    struct list *it;
    LIST_FOREACH(it, &c->od_hosts)
    {
        const struct od_host *h = LIST_ENTRY(it, struct od_host, link);
        if (r->n == *cap) {
            *cap = *cap ? *cap * 2 : 16;
            r->h = xrealloc(r->h, *cap * sizeof(*r->h));
        }
        struct od_report_host *o = &r->h[r->n++];
        memset(o, 0, sizeof(*o));
        o->cluster = c->cfg;
        snprintf(o->addr, sizeof(o->addr), "%.*s", STR_FMT(h->cfg.addr.text));
        stats_add_host(&o->st, &h->stats);
    }
}

struct od_report *original_dst_report(struct worker *w, uint64_t gen)
{
    struct od_report *r = xcalloc(1, sizeof(*r));
    r->gen = gen;
    uint32_t cap = 0;
    for (uint32_t i = 0; i < w->cfg->n_clusters; i++) {
        if (w->cfg->clusters[i].type == CLUSTER_ORIGINAL_DST) {
            report_cluster(r, &cap, &w->clusters[i]);
        }
    }
    struct list *it;
    LIST_FOREACH(it, &w->od_dyn)
    {
        report_cluster(r, &cap, LIST_ENTRY(it, struct cluster_rt, od_link));
    }
    return r;
}

void original_dst_report_free(struct od_report *r)
{
    if (r != NULL) {
        free(r->h);
        free(r);
    }
}
