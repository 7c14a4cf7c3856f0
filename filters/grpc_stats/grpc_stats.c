/* grpc_stats: envoy.filters.http.grpc_stats
 * (envoy.extensions.filters.http.grpc_stats.v3.FilterConfig). Counts the gRPC calls routed to
 * each cluster, by outcome: `cluster.<cluster>.grpc.<service>.<method>.{success,failure,total}`
 * for the methods of `individual_method_stats_allowlist`, and
 * `cluster.<cluster>.grpc.{success,failure,total}` for every other call (all calls when
 * `stats_for_all_methods` is false or, as Envoy defaults it, unset). Success is grpc-status 0,
 * read from the response trailers or, for a Trailers-Only response (a local reply included),
 * the response headers; a call whose response carries no grpc-status is not counted (Envoy's
 * Grpc::Context::chargeStat). Only requests with a gRPC content-type routed to a cluster count.
 *
 * Bounded stats: every name is declared at config time (config.stat_defs), one triple per
 * cluster of the snapshot for "grpc" and per allowlisted method, and the request path indexes
 * a table of stat indices by (cluster, method); a call names no new stat. So
 * `stats_for_all_methods: true`, whose names would come from the requests (unbounded, which is
 * why Envoy warns it is only safe with trusted clients), is rejected as not supported yet.
 * Also rejected when set: emit_filter_state (no filter state), enable_upstream_stats (filter
 * stats have no histograms yet), replace_dots_in_grpc_service_name. Message counting
 * (request_message_count, response_message_count) is not done: bodies pass through unparsed. */
#include <string.h>

#include "envoy/extensions/filters/http/grpc_stats/v3/config.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"
#include "proxy/upstream/cluster.h"

#define PbGrpcStatsCfg Envoy__Extensions__Filters__Http__GrpcStats__V3__FilterConfig
#define PbMethodList Envoy__Config__Core__V3__GrpcMethodList

/* an allowlisted service/method pair */
struct gs_method {
    struct str service;
    struct str method;
};

enum { GS_SUCCESS, GS_FAILURE, GS_TOTAL, GS_N };

struct gs_cfg {
    const struct gs_method *methods; /* [n_methods] */
    uint32_t n_methods;
    uint32_t n_clusters;
    /* stat indices: [cluster][method slot][GS_*], method slot 0 being the plain "grpc" prefix
     * and slot 1 + i the i-th allowlisted method */
    const uint32_t *stat;
};

struct gs_state {
    bool track;      /* a gRPC request */
    uint32_t slot;   /* its method slot (0: not allowlisted) */
    bool has_status; /* grpc-status seen in the response headers */
    uint32_t status; /* that status */
    bool bad_status; /* a grpc-status that does not parse: a failure */
};

/* Envoy's Grpc::Common::resolveServiceAndMethod: the path is "/<service>/<method>", exactly
 * two non-empty segments (a query string is not expected on gRPC paths and makes no match). */
static bool service_and_method(struct str path, struct str *svc, struct str *method)
{
    if (path.len < 4 || path.p[0] != '/') {
        return false;
    }
    const char *p = path.p + 1, *end = path.p + path.len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL || slash == p || slash + 1 == end ||
        memchr(slash + 1, '/', (size_t)(end - slash - 1)) != NULL) {
        return false;
    }
    *svc = (struct str){p, (size_t)(slash - p)};
    *method = (struct str){slash + 1, (size_t)(end - slash - 1)};
    return true;
}

static enum filter_status gs_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct gs_cfg *c = f->cfg;
    struct gs_state *st = f->state;
    if (!f->s->is_grpc) {
        return FILTER_CONTINUE;
    }
    (void)h;
    st->track = true;
    struct str svc, method;
    if (c->n_methods == 0 || !service_and_method(f->s->path, &svc, &method)) {
        return FILTER_CONTINUE;
    }
    for (uint32_t i = 0; i < c->n_methods; i++) {
        if (str_eq(c->methods[i].service, svc) && str_eq(c->methods[i].method, method)) {
            st->slot = i + 1;
            break;
        }
    }
    return FILTER_CONTINUE;
}

static void note_status(struct gs_state *st, const struct headers *h)
{
    const struct header *gs = headers_get(h, STR_LIT("grpc-status"));
    if (gs == NULL) {
        return;
    }
    st->has_status = true;
    st->bad_status = grpc_status_parse(gs->value, &st->status) != 0;
}

static enum filter_status gs_response_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    struct gs_state *st = f->state;
    if (st->track) {
        note_status(st, h);
    }
    return FILTER_CONTINUE;
}

static void gs_done(struct filter *f)
{
    const struct gs_cfg *c = f->cfg;
    struct gs_state *st = f->state;
    struct stream *s = f->s;
    if (!st->track || s->cluster == NULL) {
        return;
    }
    /* trailers carry the status of a response that had a body; a Trailers-Only response's is
     * in its headers */
    if (s->has_resp_trailers) {
        note_status(st, &s->resp_trailers);
    }
    if (!st->has_status) {
        return;
    }
    uint32_t ci = s->cluster->cfg->index;
    if (ci >= c->n_clusters || s->cluster->cfg->dyn_rt != NULL) {
        /* declared for the bootstrap's clusters only: a CDS cluster's calls are not counted */
        return;
    }
    const uint32_t *idx = &c->stat[((size_t)ci * (c->n_methods + 1) + st->slot) * GS_N];
    bool ok = !st->bad_status && st->status == GRPC_OK;
    filter_stat_add(f, idx[ok ? GS_SUCCESS : GS_FAILURE], 1);
    filter_stat_add(f, idx[GS_TOTAL], 1);
}

/* A name segment of a stat: no '.' (it would split the name) and printable ASCII. */
static bool valid_segment(const char *v)
{
    if (*v == '\0') {
        return false;
    }
    for (; *v != '\0'; v++) {
        unsigned char ch = (unsigned char)*v;
        if (ch <= 0x20 || ch >= 0x7f || ch == '/') {
            return false;
        }
    }
    return true;
}

static int allowlist(struct filter_build *fb, const PbMethodList *ml, struct gs_cfg *c)
{
    size_t mark = filter_build_at(fb, ".individual_method_stats_allowlist");
    size_t n = 0;
    for (size_t i = 0; i < ml->n_services; i++) {
        n += ml->services[i]->n_method_names;
    }
    struct gs_method *v = ARENA_NEW_N(fb->a, struct gs_method, n ? n : 1);
    uint32_t k = 0;
    int rc = 0;
    for (size_t i = 0; i < ml->n_services && rc == 0; i++) {
        const Envoy__Config__Core__V3__GrpcMethodList__Service *sv = ml->services[i];
        size_t m2 = filter_build_at(fb, ".services[%zu]", i);
        if (!valid_segment(sv->name)) {
            rc = filter_build_fail(fb, "name",
                                   "must be a non-empty service name without "
                                   "spaces, '/' or control characters");
        } else if (sv->n_method_names == 0) {
            rc = filter_build_fail(fb, "method_names", "must not be empty");
        }
        for (size_t j = 0; j < sv->n_method_names && rc == 0; j++) {
            if (!valid_segment(sv->method_names[j]) || strchr(sv->method_names[j], '.')) {
                size_t m3 = filter_build_at(fb, ".method_names[%zu]", j);
                rc = filter_build_fail(fb, NULL,
                                       "must be a method name without '.', spaces, "
                                       "'/' or control characters");
                filter_build_up(fb, m3);
                break;
            }
            v[k].service = arena_strdup(fb->a, str_from_c(sv->name));
            v[k].method = arena_strdup(fb->a, str_from_c(sv->method_names[j]));
            k++;
        }
        filter_build_up(fb, m2);
    }
    filter_build_up(fb, mark);
    c->methods = v;
    c->n_methods = k;
    return rc;
}

static int gs_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbGrpcStatsCfg *m = (const PbGrpcStatsCfg *)pb;
    struct gs_cfg *c = ARENA_NEW(fb->a, struct gs_cfg);
    int rc = 0;
    if (m->emit_filter_state) {
        return filter_build_unsupported(fb, "emit_filter_state");
    }
    if (m->enable_upstream_stats) {
        return filter_build_unsupported(fb, "enable_upstream_stats");
    }
    if (m->replace_dots_in_grpc_service_name) {
        return filter_build_unsupported(fb, "replace_dots_in_grpc_service_name");
    }
    switch (m->per_method_stat_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__GRPC_STATS__V3__FILTER_CONFIG__PER_METHOD_STAT_SPECIFIER_STATS_FOR_ALL_METHODS:
        if (m->stats_for_all_methods != NULL && m->stats_for_all_methods->value) {
            /* names from the requests: unbounded (see the top of this file) */
            return filter_build_unsupported(fb, "stats_for_all_methods");
        }
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__GRPC_STATS__V3__FILTER_CONFIG__PER_METHOD_STAT_SPECIFIER_INDIVIDUAL_METHOD_STATS_ALLOWLIST:
        rc = allowlist(fb, m->individual_method_stats_allowlist, c);
        break;
    default:
        break;
    }
    if (rc != 0) {
        return rc;
    }
    /* One triple per cluster and method slot; a name declared twice (two chain entries, or a
     * service listed twice) shares its counter. */
    static const char *const what[GS_N] = {"success", "failure", "total"};
    const struct config *cfg = fb->c;
    c->n_clusters = cfg->n_clusters;
    size_t per = (size_t)(c->n_methods + 1) * GS_N;
    uint32_t *idx = ARENA_NEW_N(fb->a, uint32_t, cfg->n_clusters * per + 1);
    for (uint32_t ci = 0; ci < cfg->n_clusters; ci++) {
        struct str cname = cfg->clusters[ci].name;
        for (uint32_t slot = 0; slot <= c->n_methods; slot++) {
            for (int k = 0; k < GS_N; k++) {
                struct str name = slot == 0
                                      ? arena_printf(fb->a, "grpc.%s", what[k])
                                      : arena_printf(fb->a, "grpc.%.*s.%.*s.%s",
                                                     STR_FMT(c->methods[slot - 1].service),
                                                     STR_FMT(c->methods[slot - 1].method), what[k]);
                idx[(ci * (c->n_methods + 1) + slot) * GS_N + (uint32_t)k] =
                    filter_build_stat(fb, "cluster", "envoy_cluster_name", cname, name.p, false);
            }
        }
    }
    c->stat = idx;
    *out = c;
    return 0;
}

const struct filter_ops grpc_stats_filter_ops = {
    .name = "envoy.filters.http.grpc_stats",
    .config_type = &envoy__extensions__filters__http__grpc_stats__v3__filter_config__descriptor,
    .route_config_type = NULL,
    .state_size = sizeof(struct gs_state),
    .config_new = gs_config_new,
    .on_request_headers = gs_request_headers,
    .on_response_headers = gs_response_headers,
    .on_done = gs_done,
};
