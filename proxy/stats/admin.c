/* admin: the Envoy-compatible admin endpoint (see admin.h). Requests are parsed with the same
 * HTTP/1 codec as the data path; answers are built in a buffer and written with one send (the
 * socket buffer takes any admin answer of normal size; a larger one is written as the socket
 * drains). */
#include "proxy/stats/admin.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/buf.h"
#include "proxy/core/list.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/codec_h1.h"
#include "proxy/net/accepted.h"
#include "proxy/lds.h"
#include "proxy/net/tls.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/upstream/shared.h"
#include "proxy/worker.h"

#ifndef REMORA_VERSION
#define REMORA_VERSION "0.1.0"
#endif

struct admin {
    struct ev_loop *loop; /* borrowed: main's */
    int fd;               /* owned */
    ev_io io;
    struct admin_ctx *ctx; /* borrowed */
    struct list conns;
    struct stats_baseline *baseline; /* owned: counters at the last POST /reset_counters, or NULL */
    struct access_log_sink *log;     /* owned: the admin access log, or NULL */
    struct al_format log_fmt;        /* Envoy's default format, in log_arena */
    struct arena log_arena;
};

struct admin_conn {
    struct admin *a;
    int fd;
    ev_io io;
    ev_timer timer;
    struct buf rbuf;
    struct buf wbuf;
    struct h1_parser *parser;
    struct list link;
    struct str method; /* a literal: "GET" or "POST" */
    char path[2048];
    bool responded;
    ev_timer od_timer; /* /clusters waiting for the workers' ORIGINAL_DST hosts */
    uint64_t od_gen;
    ev_tstamp od_deadline;
    /* For the access log (a->log set): the request's head, copied into `arena` */
    struct arena arena;
    struct headers req;
    struct str host;
    bool has_req;
    double t_start;
    uint64_t bytes_in;
    char peer_ip[INET6_ADDRSTRLEN];
    uint16_t peer_port;
};

static void conn_write(struct admin_conn *c);

static void conn_close(struct admin_conn *c)
{
    ev_io_stop(c->a->loop, &c->io);
    ev_timer_stop(c->a->loop, &c->timer);
    ev_timer_stop(c->a->loop, &c->od_timer);
    close(c->fd);
    arena_deinit(&c->arena);
    list_remove(&c->link);
    buf_deinit(&c->rbuf);
    buf_deinit(&c->wbuf);
    h1_parser_free(c->parser);
    free(c);
}

/* One line for this request in the admin access log (Envoy's default format). */
static void log_request(struct admin_conn *c, int status, size_t bytes_sent)
{
    struct admin *a = c->a;
    double now = ev_now(a->loop);
    struct al_entry e = {
        .method = c->has_req ? c->method : (struct str){0},
        .path = c->has_req ? str_from_c(c->path) : (struct str){0},
        .authority = c->host,
        .protocol = STR_LIT("HTTP/1.1"),
        .status = status,
        .bytes_received = c->bytes_in,
        .bytes_sent = bytes_sent,
        .t_start = c->t_start > 0 ? c->t_start : now,
        .t_end = now,
        .peer_ip = c->peer_ip[0] != '\0' ? c->peer_ip : NULL,
        .peer_port = c->peer_port,
        .req = c->has_req ? &c->req : NULL,
    };
    struct buf b;
    buf_init(&b);
    access_log_render(&b, &a->log_fmt, &e);
    access_log_flush(a->log, &b);
    buf_deinit(&b);
}

static void respond(struct admin_conn *c, int status, const char *ctype, struct buf *body)
{
    if (c->a->log != NULL) {
        log_request(c, status, body ? buf_len(body) : 0);
    }
    buf_printf(&c->wbuf,
               "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
               "cache-control: no-cache, max-age=0\r\nx-content-type-options: nosniff\r\n"
               "server: envoy\r\nconnection: close\r\n\r\n",
               status, h1_reason_phrase(status), ctype, body ? buf_len(body) : 0);
    if (body != NULL && buf_len(body) > 0) {
        buf_append(&c->wbuf, buf_head(body), buf_len(body));
    }
    c->responded = true;
}

static void respond_text(struct admin_conn *c, int status, const char *text)
{
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, text);
    respond(c, status, "text/plain; charset=UTF-8", &b);
    buf_deinit(&b);
}

/* Returns the value of query parameter `name` (URL-decoded into `out`), or NULL. */
static const char *query_param(const char *path, const char *name, char *out, size_t cap)
{
    const char *q = strchr(path, '?');
    if (q == NULL) {
        return NULL;
    }
    size_t nlen = strlen(name);
    const char *p = q + 1;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len >= nlen && strncmp(p, name, nlen) == 0 && (len == nlen || p[nlen] == '=')) {
            const char *v = len == nlen ? p + len : p + nlen + 1;
            size_t vlen = (size_t)(p + len - v);
            size_t o = 0;
            for (size_t i = 0; i < vlen && o + 1 < cap; i++) {
                if (v[i] == '%' && i + 2 < vlen) {
                    char hex[3] = {v[i + 1], v[i + 2], 0};
                    char *end;
                    long ch = strtol(hex, &end, 16);
                    if (end == hex + 2) {
                        out[o++] = (char)ch;
                        i += 2;
                        continue;
                    }
                }
                out[o++] = v[i] == '+' ? ' ' : v[i];
            }
            out[o] = '\0';
            return out;
        }
        if (amp == NULL) {
            break;
        }
        p = amp + 1;
    }
    return NULL;
}

static bool path_is(const char *path, const char *want)
{
    size_t n = strlen(want);
    return strncmp(path, want, n) == 0 && (path[n] == '\0' || path[n] == '?');
}

/* glibc's figures for server.memory_allocated / memory_heap_size and /memory: bytes in use
 * (small blocks plus mmapped ones), and bytes the heap holds from the system. */
static void heap_figures(uint64_t *allocated, uint64_t *heap_size)
{
    struct mallinfo2 mi = mallinfo2();
    *allocated = mi.uordblks + mi.hblkhd;
    *heap_size = mi.arena + mi.hblkhd;
}

static void server_view(struct admin *a, struct server_stats_view *v)
{
    admin_stats_view(a->ctx, v);
}

void admin_stats_view(struct admin_ctx *x, struct server_stats_view *v)
{
    memset(v, 0, sizeof(*v));
    v->uptime_s = (uint64_t)(ev_time() - x->start_time);
    heap_figures(&v->memory_allocated, &v->memory_heap_size);
    v->concurrency = x->n_blocks;
    v->live = x->state == SERVER_LIVE && !x->healthcheck_failed;
    v->draining = x->state == SERVER_DRAINING || x->healthcheck_failed;
    v->shared = x->shared;
    if (x->dyn_clusters != NULL) {
        x->dyn_clusters(x->ud, &v->dyn, &v->n_dyn, &v->cm);
    }
    if (x->dyn_listeners != NULL) {
        x->dyn_listeners(x->ud, &v->dl, &v->n_dl, &v->lm);
    }
    if (x->dyn_secrets != NULL) {
        x->dyn_secrets(x->ud, &v->dsds, &v->n_dsds);
    }
    v->rds = x->rds;
    v->sds = x->sds;
    v->ads = x->ads;
    v->state = v->draining                       ? 1
               : x->state == SERVER_LIVE         ? 0
               : x->state == SERVER_INITIALIZING ? 3
                                                 : 2;
    int64_t days = tls_days_until_first_cert_expiring(x->cfg, time(NULL));
    v->has_certs = days >= 0;
    v->days_until_first_cert_expiring = days >= 0 ? (uint64_t)days : 0;
}

static const char *state_name(struct admin_ctx *x)
{
    if (x->state == SERVER_DRAINING || (x->state == SERVER_LIVE && x->healthcheck_failed)) {
        return "DRAINING";
    }
    return x->state == SERVER_LIVE           ? "LIVE"
           : x->state == SERVER_INITIALIZING ? "INITIALIZING"
                                             : "PRE_INITIALIZING";
}

static void handle_stats(struct admin_conn *c, enum stats_format fmt)
{
    struct admin_ctx *x = c->a->ctx;
    char val[512];
    pcre2_code *re = NULL;
    if (query_param(c->path, "filter", val, sizeof(val)) != NULL && val[0] != '\0') {
        int ec;
        PCRE2_SIZE eo;
        re = pcre2_compile((PCRE2_SPTR)val, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
        if (re == NULL) {
            char msg[256];
            PCRE2_UCHAR e[160];
            pcre2_get_error_message(ec, e, sizeof(e));
            snprintf(msg, sizeof(msg), "Invalid regex: %s\n", (const char *)e);
            respond_text(c, 400, msg);
            return;
        }
    }
    if (fmt == STATS_TEXT && query_param(c->path, "format", val, sizeof(val)) != NULL) {
        if (strcmp(val, "json") == 0) {
            fmt = STATS_JSON;
        } else if (strcmp(val, "prometheus") == 0) {
            fmt = STATS_PROMETHEUS;
        } else if (strcmp(val, "text") != 0) {
            pcre2_code_free(re);
            respond_text(c, 400, "usage: /stats?format=(json|prometheus|text)\n");
            return;
        }
    }
    int used_only = query_param(c->path, "usedonly", val, sizeof(val)) != NULL;
    struct server_stats_view v;
    server_view(c->a, &v);
    struct buf b;
    buf_init(&b);
    stats_render(&b, x->cfg, x->blocks, x->n_blocks, &v, fmt, (const void *)re, used_only,
                 c->a->baseline);
    pcre2_code_free(re);
    respond(c, 200,
            fmt == STATS_JSON         ? "application/json"
            : fmt == STATS_PROMETHEUS ? "text/plain; version=0.0.4"
                                      : "text/plain; charset=UTF-8",
            &b);
    buf_deinit(&b);
}

static void add_stat(json_t *arr, const char *name, uint64_t v)
{
    json_t *o = json_object();
    json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "value", json_integer((json_int_t)v));
    json_array_append_new(arr, o);
}

/* Envoy's /clusters?format=json "circuit_breakers": the configured limits per priority. */
static json_t *breakers_json(const struct cluster_cfg *cc)
{
    json_t *th = json_array();
    for (int p = 0; p < 2; p++) {
        const struct breaker_cfg *bc = &cc->breakers[p];
        json_t *t = json_object();
        if (p == 1) {
            json_object_set_new(t, "priority", json_string("HIGH"));
        }
        json_object_set_new(t, "max_connections", json_integer(bc->max_connections));
        json_object_set_new(t, "max_pending_requests", json_integer(bc->max_pending_requests));
        json_object_set_new(t, "max_requests", json_integer(bc->max_requests));
        json_object_set_new(t, "max_retries", json_integer(bc->max_retries));
        json_array_append_new(th, t);
    }
    json_t *o = json_object();
    json_object_set_new(o, "thresholds", th);
    return o;
}

/* An endpoint's health bits (0 without cluster-wide state). */
static uint32_t host_health(const struct cluster_shared *sh, uint32_t ep)
{
    if (sh == NULL || ep >= sh->n_eps) {
        return 0;
    }
    return atomic_load_explicit((_Atomic uint32_t *)&sh->eps[ep].health, memory_order_relaxed);
}

/* Envoy's health_flags text: "healthy", or "/flag" for each flag set, in Envoy's order. */
static void health_flags_text(struct buf *b, uint32_t bits)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } flags[] = {
        {HEALTH_F_FAILED_ACTIVE_HC, "/failed_active_hc"},
        {HEALTH_F_FAILED_OUTLIER_CHECK, "/failed_outlier_check"},
        {HEALTH_F_FAILED_EDS_HEALTH, "/failed_eds_health"},
        {HEALTH_F_PENDING_ACTIVE_HC, "/pending_active_hc"},
        {HEALTH_F_ACTIVE_HC_TIMEOUT, "/active_hc_timeout"},
    };
    if (bits == 0) {
        buf_append_str(b, "healthy");
        return;
    }
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
        if (bits & flags[i].bit) {
            buf_append_str(b, flags[i].name);
        }
    }
}

/* A host's outlier success rates (-1: not computed in the last interval, or no detector). */
static double host_sr(const struct cluster_cfg *cc, const struct cluster_shared *sh, uint32_t ep,
                      bool local)
{
    if (sh == NULL || cc->outlier == NULL || ep >= sh->n_eps) {
        return -1;
    }
    const struct endpoint_shared *es = &sh->eps[ep];
    return local ? es->local_success_rate : es->success_rate;
}

static void json_percent(json_t *o, const char *key, double v)
{
    if (v >= 0) {
        json_t *p = json_object();
        json_object_set_new(p, "value", json_real(v));
        json_object_set_new(o, key, p);
    }
}

/* One host as /clusters shows it: a configured endpoint, or an ORIGINAL_DST host. */
struct host_view {
    struct str addr;   /* "ip:port", "[ip6]:port" */
    char addr_buf[64]; /* a LOGICAL_DNS host's current address (addr points here) */
    struct host_stats hs;
    uint32_t health; /* HEALTH_F_* */
    double sr, local_sr;
    uint32_t priority, weight;
    struct str hostname;
};

static json_t *host_json(const struct host_view *v)
{
    json_t *h = json_object();
    json_t *addr = json_object();
    json_t *sa = json_object();
    char ip[64];
    int port = 0;
    const char *colon = memrchr(v->addr.p, ':', v->addr.len);
    size_t iplen = colon ? (size_t)(colon - v->addr.p) : v->addr.len;
    if (iplen >= 2 && v->addr.p[0] == '[' && v->addr.p[iplen - 1] == ']') {
        snprintf(ip, sizeof(ip), "%.*s", (int)(iplen - 2), v->addr.p + 1);
    } else {
        snprintf(ip, sizeof(ip), "%.*s", (int)iplen, v->addr.p);
    }
    if (colon) {
        port = atoi(colon + 1);
    }
    json_object_set_new(sa, "address", json_string(ip));
    json_object_set_new(sa, "port_value", json_integer(port));
    json_object_set_new(addr, "socket_address", sa);
    json_object_set_new(h, "address", addr);
    json_t *st = json_array();
#define HS(n) add_stat(st, #n, stat_get(&v->hs.n))
    HS(cx_total);
    HS(cx_active);
    HS(cx_connect_fail);
    HS(rq_total);
    HS(rq_active);
    HS(rq_success);
    HS(rq_error);
    HS(rq_timeout);
#undef HS
    json_object_set_new(h, "stats", st);
    json_t *hst = json_object();
    if (v->health & HEALTH_F_FAILED_ACTIVE_HC) {
        json_object_set_new(hst, "failed_active_health_check", json_true());
    }
    if (v->health & HEALTH_F_FAILED_OUTLIER_CHECK) {
        json_object_set_new(hst, "failed_outlier_check", json_true());
    }
    if (v->health & HEALTH_F_PENDING_ACTIVE_HC) {
        json_object_set_new(hst, "pending_active_hc", json_true());
    }
    if (v->health & HEALTH_F_ACTIVE_HC_TIMEOUT) {
        json_object_set_new(hst, "active_hc_timeout", json_true());
    }
    json_object_set_new(hst, "eds_health_status", json_string("HEALTHY"));
    json_object_set_new(h, "health_status", hst);
    json_percent(h, "success_rate", v->sr);
    json_percent(h, "local_origin_success_rate", v->local_sr);
    if (v->priority > 0) {
        json_object_set_new(h, "priority", json_integer(v->priority));
    }
    json_object_set_new(h, "weight", json_integer(v->weight));
    if (v->hostname.len) {
        json_object_set_new(h, "hostname", json_stringn(v->hostname.p, v->hostname.len));
    }
    return h;
}

static void host_text(struct buf *b, struct str name, const struct host_view *v)
{
    const char *n = name.p;
    int nl = (int)name.len;
    const struct str a = v->addr;
#define HL(field)                                                                                  \
    buf_printf(b, "%.*s::%.*s::" #field "::%llu\n", nl, n, STR_FMT(a),                             \
               (unsigned long long)stat_get(&v->hs.field))
    HL(cx_active);
    HL(cx_connect_fail);
    HL(cx_total);
    HL(rq_active);
    HL(rq_error);
    HL(rq_success);
    HL(rq_timeout);
    HL(rq_total);
#undef HL
    buf_printf(b, "%.*s::%.*s::hostname::%.*s\n", nl, n, STR_FMT(a), STR_FMT(v->hostname));
    buf_printf(b, "%.*s::%.*s::health_flags::", nl, n, STR_FMT(a));
    health_flags_text(b, v->health);
    buf_append_str(b, "\n");
    buf_printf(b, "%.*s::%.*s::weight::%u\n", nl, n, STR_FMT(a), v->weight);
    buf_printf(b, "%.*s::%.*s::region::\n", nl, n, STR_FMT(a));
    buf_printf(b, "%.*s::%.*s::zone::\n", nl, n, STR_FMT(a));
    buf_printf(b, "%.*s::%.*s::sub_zone::\n", nl, n, STR_FMT(a));
    buf_printf(b, "%.*s::%.*s::canary::false\n", nl, n, STR_FMT(a));
    buf_printf(b, "%.*s::%.*s::priority::%u\n", nl, n, STR_FMT(a), v->priority);
    buf_printf(b, "%.*s::%.*s::success_rate::%g\n", nl, n, STR_FMT(a), v->sr);
    buf_printf(b, "%.*s::%.*s::local_origin_success_rate::%g\n", nl, n, STR_FMT(a), v->local_sr);
}

/* The hosts of a cluster: its configured endpoints, or, for an ORIGINAL_DST cluster, the hosts
 * the workers reported (one per destination, their stats added up; in address order). */
struct cl {
    const struct cluster_cfg *cc;
    struct stats_block *const *blocks;
    uint32_t idx;
    const struct cluster_shared *sh;
    bool api;
};

static int od_host_cmp(const void *a, const void *b)
{
    const struct od_report_host *x = *(const struct od_report_host *const *)a;
    const struct od_report_host *y = *(const struct od_report_host *const *)b;
    return strcmp(x->addr, y->addr);
}

static uint32_t cluster_hosts(const struct cl *c, uint32_t n_blocks, struct od_report *const *reps,
                              uint32_t n_reps, struct host_view **out)
{
    const struct cluster_cfg *cc = c->cc;
    if (cc->type != CLUSTER_ORIGINAL_DST) {
        struct host_view *v = xcalloc(cc->n_endpoints ? cc->n_endpoints : 1, sizeof(*v));
        uint32_t n = 0;
        for (uint32_t e = 0; e < cc->n_endpoints; e++) {
            const struct endpoint_cfg *ep = &cc->endpoints[e];
            /* LOGICAL_DNS: the host's current address; none before its name resolved (Envoy
             * has no host until then) */
            v[n].addr = endpoint_addr_text(ep, v[n].addr_buf, sizeof(v[n].addr_buf));
            if (v[n].addr.len == 0) {
                continue;
            }
            stats_sum_host(c->blocks, n_blocks, c->idx, e, &v[n].hs);
            v[n].health = host_health(c->sh, e);
            v[n].sr = host_sr(cc, c->sh, e, false);
            v[n].local_sr = host_sr(cc, c->sh, e, true);
            v[n].priority = ep->priority;
            v[n].weight = ep->weight;
            v[n].hostname = ep->hostname;
            n++;
        }
        *out = v;
        return n;
    }
    size_t k = 0;
    for (uint32_t w = 0; w < n_reps; w++) {
        for (uint32_t i = 0; reps[w] != NULL && i < reps[w]->n; i++) {
            k += reps[w]->h[i].cluster == cc;
        }
    }
    const struct od_report_host **hs = xcalloc(k ? k : 1, sizeof(*hs));
    k = 0;
    for (uint32_t w = 0; w < n_reps; w++) {
        for (uint32_t i = 0; reps[w] != NULL && i < reps[w]->n; i++) {
            if (reps[w]->h[i].cluster == cc) {
                hs[k++] = &reps[w]->h[i];
            }
        }
    }
    qsort(hs, k, sizeof(*hs), od_host_cmp);
    struct host_view *v = xcalloc(k ? k : 1, sizeof(*v));
    uint32_t n = 0;
    for (size_t i = 0; i < k; i++) {
        if (n == 0 || strcmp(hs[i]->addr, v[n - 1].addr.p) != 0) {
            v[n++] = (struct host_view){
                .addr = str_from_c(hs[i]->addr), .sr = -1, .local_sr = -1, .weight = 1};
        }
        stats_add_host(&v[n - 1].hs, &hs[i]->st); /* the same destination on several workers */
    }
    free(hs);
    *out = v;
    return n;
}

static void render_clusters(struct admin_conn *c, struct od_report *const *reps, uint32_t n_reps)
{
    struct admin_ctx *x = c->a->ctx;
    const struct config *cfg = x->cfg;
    char val[16];
    bool json =
        query_param(c->path, "format", val, sizeof(val)) != NULL && strcmp(val, "json") == 0;
    /* the bootstrap's clusters, then those from CDS (added_via_api) */
    const struct cluster_view *dyn = NULL;
    uint32_t n_dyn = 0;
    const struct cm_stats *cm = NULL;
    if (x->dyn_clusters != NULL) {
        x->dyn_clusters(x->ud, &dyn, &n_dyn, &cm);
    }
    uint32_t n_all = cfg->n_clusters + n_dyn;
    struct cl *all = xcalloc(n_all ? n_all : 1, sizeof(*all));
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        all[i] = (struct cl){&cfg->clusters[i], x->blocks, i,
                             x->shared != NULL ? &x->shared[i] : NULL, false};
        /* a bootstrap STRICT_DNS cluster resolved again: its current version, in its place */
        for (uint32_t k = 0; cfg->clusters[i].boot_dns != NULL && k < n_dyn; k++) {
            if (dyn[k].boot && str_eq(dyn[k].cfg->name, cfg->clusters[i].name)) {
                all[i] = (struct cl){dyn[k].cfg, dyn[k].blocks, 0, dyn[k].shared, false};
            }
        }
    }
    n_all = cfg->n_clusters;
    for (uint32_t i = 0; i < n_dyn; i++) {
        if (!dyn[i].boot) {
            all[n_all++] = (struct cl){dyn[i].cfg, dyn[i].blocks, 0, dyn[i].shared, true};
        }
    }
    struct buf b;
    buf_init(&b);
    if (json) {
        json_t *root = json_object();
        json_t *arr = json_array();
        for (uint32_t i = 0; i < n_all; i++) {
            const struct cluster_cfg *cc = all[i].cc;
            const struct cluster_shared *sh = all[i].sh;
            json_t *jc = json_object();
            json_object_set_new(jc, "name", json_stringn(cc->name.p, cc->name.len));
            if (all[i].api) {
                json_object_set_new(jc, "added_via_api", json_true());
            }
            json_object_set_new(jc, "circuit_breakers", breakers_json(cc));
            json_t *hosts = json_array();
            struct host_view *v = NULL;
            uint32_t nh = cluster_hosts(&all[i], x->n_blocks, reps, n_reps, &v);
            for (uint32_t e = 0; e < nh; e++) {
                json_array_append_new(hosts, host_json(&v[e]));
            }
            free(v);
            json_object_set_new(jc, "host_statuses", hosts);
            if (cc->outlier != NULL && sh != NULL) {
                json_percent(jc, "success_rate_ejection_threshold", sh->sr_threshold);
                json_percent(jc, "local_origin_success_rate_ejection_threshold",
                             sh->local_sr_threshold);
            }
            json_array_append_new(arr, jc);
        }
        json_object_set_new(root, "cluster_statuses", arr);
        char *s = json_dumps(root, JSON_INDENT(2));
        buf_append_str(&b, s);
        buf_append_str(&b, "\n");
        free(s);
        json_decref(root);
        respond(c, 200, "application/json", &b);
        buf_deinit(&b);
        free(all);
        return;
    }
    for (uint32_t i = 0; i < n_all; i++) {
        const struct cluster_cfg *cc = all[i].cc;
        const struct cluster_shared *sh = all[i].sh;
        const char *prio[] = {"default_priority", "high_priority"};
        for (int p = 0; p < 2; p++) {
            /* The configured circuit-breaker limits (Envoy prints max_retries even when a
             * retry budget replaces it). */
            const struct breaker_cfg *bc = &cc->breakers[p];
            buf_printf(&b, "%.*s::%s::max_connections::%u\n", STR_FMT(cc->name), prio[p],
                       bc->max_connections);
            buf_printf(&b, "%.*s::%s::max_pending_requests::%u\n", STR_FMT(cc->name), prio[p],
                       bc->max_pending_requests);
            buf_printf(&b, "%.*s::%s::max_requests::%u\n", STR_FMT(cc->name), prio[p],
                       bc->max_requests);
            buf_printf(&b, "%.*s::%s::max_retries::%u\n", STR_FMT(cc->name), prio[p],
                       bc->max_retries);
        }
        if (cc->outlier != NULL && sh != NULL) {
            buf_printf(&b, "%.*s::outlier::success_rate_average::%g\n", STR_FMT(cc->name),
                       sh->sr_average);
            buf_printf(&b, "%.*s::outlier::success_rate_ejection_threshold::%g\n",
                       STR_FMT(cc->name), sh->sr_threshold);
            buf_printf(&b, "%.*s::outlier::local_origin_success_rate_average::%g\n",
                       STR_FMT(cc->name), sh->local_sr_average);
            buf_printf(&b, "%.*s::outlier::local_origin_success_rate_ejection_threshold::%g\n",
                       STR_FMT(cc->name), sh->local_sr_threshold);
        }
        buf_printf(&b, "%.*s::added_via_api::%s\n", STR_FMT(cc->name),
                   all[i].api ? "true" : "false");
        struct host_view *v = NULL;
        uint32_t nh = cluster_hosts(&all[i], x->n_blocks, reps, n_reps, &v);
        for (uint32_t e = 0; e < nh; e++) {
            host_text(&b, cc->name, &v[e]);
        }
        free(v);
    }
    respond(c, 200, "text/plain; charset=UTF-8", &b);
    buf_deinit(&b);
    free(all);
}

/* Waiting for the workers' ORIGINAL_DST reports: polled every 2 ms, for at most a second (a
 * busy worker answers late: its hosts are then those of its previous report, if any). */
#define OD_WAIT_S 1.0

static void od_wait_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct admin_conn *c = t->data;
    struct od_report *const *reps = NULL;
    uint32_t n = 0;
    bool ready = worker_od_collect(c->a->ctx->od, c->od_gen, &reps, &n);
    if (!ready && ev_now(loop) < c->od_deadline) {
        return;
    }
    ev_timer_stop(loop, t);
    render_clusters(c, reps, n);
    conn_write(c);
}

static void handle_clusters(struct admin_conn *c)
{
    struct admin_ctx *x = c->a->ctx;
    bool od = false;
    for (uint32_t i = 0; i < x->cfg->n_clusters && !od; i++) {
        od = x->cfg->clusters[i].type == CLUSTER_ORIGINAL_DST;
    }
    const struct cluster_view *dyn = NULL;
    uint32_t n_dyn = 0;
    const struct cm_stats *cm = NULL;
    if (x->dyn_clusters != NULL) {
        x->dyn_clusters(x->ud, &dyn, &n_dyn, &cm);
    }
    for (uint32_t i = 0; i < n_dyn && !od; i++) {
        od = dyn[i].cfg->type == CLUSTER_ORIGINAL_DST;
    }
    if (!od || x->od == NULL) {
        render_clusters(c, NULL, 0);
        return;
    }
    if (ev_is_active(&c->od_timer)) {
        return; /* a second request on the connection while the first waits: ignored */
    }
    /* The workers own their hosts: ask each for a copy, answer when all have (od_wait_cb). */
    c->od_gen = worker_od_request(x->od);
    c->od_deadline = ev_now(c->a->loop) + OD_WAIT_S;
    ev_timer_init(&c->od_timer, od_wait_cb, 0.002, 0.002);
    c->od_timer.data = c;
    ev_timer_start(c->a->loop, &c->od_timer);
}

static void handle_server_info(struct admin_conn *c)
{
    struct admin_ctx *x = c->a->ctx;
    json_t *root = json_object();
    json_object_set_new(root, "version", json_string("remora/" REMORA_VERSION "/RELEASE"));
    json_object_set_new(root, "state", json_string(state_name(x)));
    json_object_set_new(root, "hot_restart_version", json_string("disabled"));
    json_t *opts = x->options_json ? json_loads(x->options_json, 0, NULL) : NULL;
    json_object_set_new(root, "command_line_options", opts ? opts : json_object());
    json_t *node = json_object();
    json_object_set_new(node, "id", json_stringn(x->cfg->node_id.p, x->cfg->node_id.len));
    json_object_set_new(node, "cluster",
                        json_stringn(x->cfg->node_cluster.p, x->cfg->node_cluster.len));
    json_object_set_new(node, "user_agent_name", json_string("remora"));
    json_object_set_new(root, "node", node);
    char up[32];
    snprintf(up, sizeof(up), "%llus", (unsigned long long)(ev_time() - x->start_time));
    json_object_set_new(root, "uptime_current_epoch", json_string(up));
    json_object_set_new(root, "uptime_all_epochs", json_string(up));
    char *s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, s);
    buf_append_str(&b, "\n");
    free(s);
    respond(c, 200, "application/json", &b);
    buf_deinit(&b);
}

/* Writes `j` (taken) as the response: Envoy's admin prints its JSON-serialized protos pretty. */
static void respond_json(struct admin_conn *c, json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    struct buf b;
    buf_init(&b);
    buf_append_str(&b, s ? s : "{}");
    buf_append_str(&b, "\n");
    free(s);
    respond(c, 200, "application/json", &b);
    buf_deinit(&b);
}

static void handle_config_dump(struct admin_conn *c)
{
    json_t *j = config_dump_json(c->a->ctx->cfg);
    if (c->a->ctx->dump_dynamic != NULL) {
        c->a->ctx->dump_dynamic(c->a->ctx->ud, json_object_get(j, "configs"));
    }
    respond_json(c, j);
}

/* GET /listeners: Envoy's "NAME::ADDRESS" lines (the address as Envoy prints it, IPv6 in
 * brackets), or with ?format=json its admin.v3.Listeners. The address is the bound one, so a
 * listener configured with port 0 shows the port the kernel gave it. */
static void handle_listeners(struct admin_conn *c)
{
    struct admin_ctx *x = c->a->ctx;
    const struct config *cfg = x->cfg;
    char val[16];
    bool json =
        query_param(c->path, "format", val, sizeof(val)) != NULL && strcmp(val, "json") == 0;
    json_t *arr = json_array();
    struct buf b;
    buf_init(&b);
    const struct lds_view *dv = NULL;
    uint32_t n_dv = 0;
    const struct lds_stats *lm = NULL;
    if (x->dyn_listeners != NULL) {
        x->dyn_listeners(x->ud, &dv, &n_dv, &lm);
    }
    for (uint32_t i = 0; i < cfg->n_listeners + n_dv; i++) {
        bool dyn = i >= cfg->n_listeners;
        if (dyn && !dv[i - cfg->n_listeners].active) {
            continue; /* a draining version */
        }
        const struct listener_cfg *l =
            dyn ? &dv[i - cfg->n_listeners].cfg->listeners[0] : &cfg->listeners[i];
        const struct sockaddr_storage *ss =
            dyn ? dv[i - cfg->n_listeners].bound
            : x->listener_addrs != NULL && x->listener_addrs[i].ss_family != AF_UNSPEC
                ? &x->listener_addrs[i]
                : &l->addr.ss;
        char ip[48];
        uint16_t port;
        accepted_addr_text((const struct sockaddr *)ss, ip, &port);
        if (json) {
            json_t *sa = json_object();
            json_object_set_new(sa, "address", json_string(ip));
            json_object_set_new(sa, "port_value", json_integer(port));
            json_t *addr = json_object();
            json_object_set_new(addr, "socket_address", sa);
            json_t *st = json_object();
            json_object_set_new(st, "name", json_stringn(l->name.p, l->name.len));
            json_object_set_new(st, "local_address", addr);
            json_array_append_new(arr, st);
        } else {
            char text[SOCKADDR_TEXT_MAX];
            size_t n = sockaddr_text((const struct sockaddr *)ss, text);
            buf_printf(&b, "%.*s::%.*s\n", STR_FMT(l->name), (int)n, text);
        }
    }
    if (json) {
        buf_deinit(&b);
        json_t *root = json_object();
        /* proto3 JSON leaves an empty repeated field out: no listeners is "{}", as Envoy's. */
        if (json_array_size(arr) > 0) {
            json_object_set_new(root, "listener_statuses", arr);
        } else {
            json_decref(arr);
        }
        respond_json(c, root);
        return;
    }
    json_decref(arr);
    respond(c, 200, "text/plain; charset=UTF-8", &b);
    buf_deinit(&b);
}

/* GET /memory: Envoy's admin.v3.Memory, uint64 fields as decimal strings (proto3 JSON) and
 * zeros printed, as Envoy prints them. allocated and heap_size are glibc's (the same figures as
 * server.memory_allocated / server.memory_heap_size). The other four are tcmalloc's page heap,
 * thread caches and physical-bytes figures: glibc's malloc has none of them, so they are "0",
 * which is what Envoy answers when built without tcmalloc. */
static void handle_memory(struct admin_conn *c)
{
    uint64_t allocated, heap_size;
    heap_figures(&allocated, &heap_size);
    char a[24], h[24];
    snprintf(a, sizeof(a), "%llu", (unsigned long long)allocated);
    snprintf(h, sizeof(h), "%llu", (unsigned long long)heap_size);
    json_t *j = json_object();
    json_object_set_new(j, "allocated", json_string(a));
    json_object_set_new(j, "heap_size", json_string(h));
    json_object_set_new(j, "pageheap_unmapped", json_string("0"));
    json_object_set_new(j, "pageheap_free", json_string("0"));
    json_object_set_new(j, "total_thread_cache", json_string("0"));
    json_object_set_new(j, "total_physical_bytes", json_string("0"));
    respond_json(c, j);
}

/* GET /certs: Envoy's certificate listing (tls.h: tls_certs_json). */
static void handle_certs(struct admin_conn *c)
{
    respond_json(c, tls_certs_json(c->a->ctx->cfg, time(NULL)));
}

/* GET /runtime: remora has no runtime layers (layered_runtime), so Envoy's shape with none. */
static void handle_runtime(struct admin_conn *c)
{
    json_t *j = json_object();
    json_object_set_new(j, "layers", json_array());
    json_object_set_new(j, "entries", json_object());
    respond_json(c, j);
}

/* POST /reset_counters: the workers' blocks are theirs to write, so nothing is zeroed; the
 * admin keeps every counter's value at this moment and /stats subtracts it (stats.h). */
static void handle_reset_counters(struct admin_conn *c)
{
    struct admin_ctx *x = c->a->ctx;
    struct server_stats_view v;
    server_view(c->a, &v);
    stats_baseline_free(c->a->baseline);
    c->a->baseline = stats_baseline_take(x->cfg, x->blocks, x->n_blocks, &v);
    respond_text(c, 200, "OK\n");
}

static const struct {
    const char *path;
    bool post;
    const char *help;
} endpoints[] = {
    {"/clusters", false, "upstream cluster status"},
    {"/config_dump", false, "dump current Envoy configs"},
    {"/drain_listeners", true, "drain listeners (?graceful, ?inboundonly, ?skip_exit)"},
    {"/healthcheck/fail", true, "cause the server to fail health checks"},
    {"/healthcheck/ok", true, "cause the server to pass health checks"},
    {"/help", false, "print out list of admin commands"},
    {"/listeners", false, "print listener info (?format=json)"},
    {"/logging", true, "change logging levels (?level=)"},
    {"/certs", false, "print certs on machine"},
    {"/memory", false, "print current allocation/heap usage"},
    {"/quitquitquit", true, "exit the server"},
    {"/ready", false, "print server state, return 200 if LIVE, otherwise return 503"},
    {"/reset_counters", true, "reset all counters to zero"},
    {"/runtime", false, "print runtime values"},
    {"/server_info", false, "print server version/status information"},
    {"/stats", false, "print server stats (?filter=, ?format=json|prometheus, ?usedonly)"},
    {"/stats/prometheus", false, "print server stats in prometheus format"},
};

static void dispatch(struct admin_conn *c)
{
    struct admin_ctx *x = c->a->ctx;
    const char *p = c->path;
    bool is_post = str_eq_lit(c->method, "POST");
    for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
        if (path_is(p, endpoints[i].path) && endpoints[i].post && !is_post) {
            /* Envoy's words (admin.cc), with the method the client used */
            char body[96];
            snprintf(body, sizeof(body), "Method %.*s not allowed, POST required.",
                     (int)(c->method.len < 16 ? c->method.len : 16), c->method.p);
            respond_text(c, 405, body);
            return;
        }
    }
    if (path_is(p, "/ready")) {
        bool live = x->state == SERVER_LIVE && !x->healthcheck_failed;
        char body[32];
        snprintf(body, sizeof(body), "%s\n", state_name(x));
        respond_text(c, live ? 200 : 503, body);
    } else if (path_is(p, "/server_info")) {
        handle_server_info(c);
    } else if (path_is(p, "/stats/prometheus")) {
        handle_stats(c, STATS_PROMETHEUS);
    } else if (path_is(p, "/stats")) {
        handle_stats(c, STATS_TEXT);
    } else if (path_is(p, "/clusters")) {
        handle_clusters(c);
    } else if (path_is(p, "/config_dump")) {
        handle_config_dump(c);
    } else if (path_is(p, "/listeners")) {
        handle_listeners(c);
    } else if (path_is(p, "/certs")) {
        handle_certs(c);
    } else if (path_is(p, "/memory")) {
        handle_memory(c);
    } else if (path_is(p, "/runtime")) {
        handle_runtime(c);
    } else if (path_is(p, "/reset_counters")) {
        handle_reset_counters(c);
    } else if (path_is(p, "/healthcheck/fail") || path_is(p, "/healthcheck/ok")) {
        x->healthcheck_failed = path_is(p, "/healthcheck/fail");
        if (x->healthcheck_changed) {
            x->healthcheck_changed(x->ud);
        }
        respond_text(c, 200, "OK\n");
    } else if (path_is(p, "/drain_listeners")) {
        char v[8];
        unsigned flags =
            (query_param(p, "graceful", v, sizeof(v)) ? ADMIN_DRAIN_GRACEFUL : 0) |
            (query_param(p, "inboundonly", v, sizeof(v)) ? ADMIN_DRAIN_INBOUND_ONLY : 0) |
            (query_param(p, "skip_exit", v, sizeof(v)) ? ADMIN_DRAIN_SKIP_EXIT : 0);
        if ((flags & ADMIN_DRAIN_SKIP_EXIT) && !(flags & ADMIN_DRAIN_GRACEFUL)) {
            respond_text(c, 400, "skip_exit requires graceful\n"); /* Envoy's words */
            return;
        }
        if (x->drain_listeners) {
            x->drain_listeners(x->ud, flags);
        }
        respond_text(c, 200, "OK\n");
    } else if (path_is(p, "/quitquitquit")) {
        respond_text(c, 200, "OK\n");
        if (x->quit) {
            x->quit(x->ud);
        }
    } else if (path_is(p, "/logging")) {
        char lvl[32];
        if (query_param(p, "level", lvl, sizeof(lvl)) != NULL) {
            int l = log_level_parse(lvl);
            if (l < 0) {
                respond_text(c, 404, "error: unknown logger level\n");
                return;
            }
            log_set_level((enum log_level)l);
        }
        char body[64];
        snprintf(body, sizeof(body), "active loggers:\n  remora: %s\n",
                 log_level_name(log_get_level()));
        respond_text(c, 200, body);
    } else if (path_is(p, "/help") || path_is(p, "/")) {
        struct buf b;
        buf_init(&b);
        buf_append_str(&b, "admin commands are:\n");
        for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
            buf_printf(&b, "  %s%s: %s\n", endpoints[i].path, endpoints[i].post ? " (POST)" : "",
                       endpoints[i].help);
        }
        respond(c, 200, "text/plain; charset=UTF-8", &b);
        buf_deinit(&b);
    } else {
        respond_text(c, 404, "invalid path. admin commands are listed at /help\n");
    }
}

static int on_head(void *ud, struct h1_msg *msg)
{
    struct admin_conn *c = ud;
    c->method = str_eq_lit(msg->method, "POST") ? STR_LIT("POST") : STR_LIT("GET");
    snprintf(c->path, sizeof(c->path), "%.*s", STR_FMT(msg->target));
    if (c->a->log != NULL) {
        /* The head's bytes live in the parser until the message is done; the log line is
         * written from dispatch, so keep copies (bounded by the parser's 64 KiB head). */
        c->t_start = ev_now(c->a->loop);
        headers_init_copy(&c->req, &c->arena, NULL, 0, msg->headers.n);
        for (uint32_t i = 0; i < msg->headers.n; i++) {
            headers_add_copy(&c->req, msg->headers.v[i].name, msg->headers.v[i].value);
        }
        c->host = arena_strdup(&c->arena, msg->host);
        c->method = arena_strdup(&c->arena, msg->method);
        c->has_req = true;
    }
    return 0;
}

static int on_body(void *ud, const uint8_t *p, size_t len)
{
    struct admin_conn *c = ud;
    (void)p;
    c->bytes_in += len;
    return 0;
}

static int on_done(void *ud)
{
    dispatch(ud);
    return 0;
}

static const struct h1_parser_cbs admin_cbs = {on_head, on_body, on_done, NULL};

static void conn_write(struct admin_conn *c)
{
    while (buf_len(&c->wbuf) > 0) {
        ssize_t n = send(c->fd, buf_head(&c->wbuf), buf_len(&c->wbuf), MSG_NOSIGNAL);
        if (n > 0) {
            buf_consume(&c->wbuf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_stop(c->a->loop, &c->io);
            ev_io_set(&c->io, c->fd, EV_WRITE);
            ev_io_start(c->a->loop, &c->io);
            return;
        }
        break;
    }
    conn_close(c);
}

static void conn_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)loop;
    struct admin_conn *c = io->data;
    if (revents & EV_WRITE) {
        conn_write(c);
        return;
    }
    uint8_t *p = buf_reserve(&c->rbuf, 8192);
    ssize_t n = recv(c->fd, p, buf_tail_room(&c->rbuf), 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        return;
    }
    if (n <= 0) {
        conn_close(c);
        return;
    }
    buf_commit(&c->rbuf, (size_t)n);
    ssize_t used = h1_parser_feed(c->parser, buf_head(&c->rbuf), buf_len(&c->rbuf));
    if (used < 0) {
        const char *why = NULL;
        int st = h1_parser_error(c->parser, &why);
        char msg[160];
        snprintf(msg, sizeof(msg), "%s\n", why ? why : "bad request");
        respond_text(c, st ? st : 400, msg);
        conn_write(c);
        return;
    }
    buf_consume(&c->rbuf, (size_t)used);
    if (c->responded) {
        conn_write(c);
    } else if (buf_len(&c->rbuf) > 65536) {
        conn_close(c);
    }
}

static void conn_timeout(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    conn_close(t->data);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    (void)revents;
    struct admin *a = io->data;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    int fd = accept4(a->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        return;
    }
    struct admin_conn *c = xcalloc(1, sizeof(*c));
    c->a = a;
    c->fd = fd;
    arena_init(&c->arena, 1024); /* allocates nothing until used (the access log) */
    if (peer.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&peer;
        inet_ntop(AF_INET, &sin->sin_addr, c->peer_ip, sizeof(c->peer_ip));
        c->peer_port = ntohs(sin->sin_port);
    } else if (peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&peer;
        inet_ntop(AF_INET6, &sin6->sin6_addr, c->peer_ip, sizeof(c->peer_ip));
        c->peer_port = ntohs(sin6->sin6_port);
    }
    buf_init(&c->rbuf);
    buf_init(&c->wbuf);
    c->parser = h1_parser_new(H1_REQUEST, 64 * 1024, 100, &admin_cbs, c);
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    c->io.data = c;
    ev_io_start(loop, &c->io);
    ev_timer_init(&c->timer, conn_timeout, 30.0, 0);
    c->timer.data = c;
    ev_timer_start(loop, &c->timer);
    list_insert_tail(&a->conns, &c->link);
}

struct admin *admin_start(struct ev_loop *loop, const struct sock_addr *addr, struct admin_ctx *ctx,
                          struct err *err)
{
    int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        err_set(err, "admin.address", "socket: %s", strerror(errno));
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->ss, addr->len) < 0 || listen(fd, 128) < 0) {
        err_set(err, "admin.address", "cannot bind %.*s: %s", STR_FMT(addr->text), strerror(errno));
        close(fd);
        return NULL;
    }
    struct admin *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->fd = fd;
    a->ctx = ctx;
    list_init(&a->conns);
    ev_io_init(&a->io, accept_cb, fd, EV_READ);
    a->io.data = a;
    ev_io_start(loop, &a->io);
    return a;
}

int admin_open_access_log(struct admin *a, const char *path, struct err *err)
{
    struct err e;
    err_clear(&e);
    arena_init(&a->log_arena, 1024);
    if (access_log_format_compile(&a->log_fmt, STR_LIT(""), &a->log_arena, &e) != 0) {
        return err_set(err, "admin.access_log", "%s", e.msg);
    }
    a->log = access_log_sink_open(path, &e);
    if (a->log == NULL) {
        return err_set(err, "admin.access_log", "%s", e.msg);
    }
    return 0;
}

void admin_stop(struct admin *a)
{
    if (a == NULL) {
        return;
    }
    ev_io_stop(a->loop, &a->io);
    close(a->fd);
    while (!list_empty(&a->conns)) {
        conn_close(LIST_ENTRY(list_first(&a->conns), struct admin_conn, link));
    }
    stats_baseline_free(a->baseline);
    if (a->log != NULL) {
        access_log_sink_close(a->log);
    }
    arena_deinit(&a->log_arena);
    free(a);
}
