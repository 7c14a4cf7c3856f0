/* build_health: health_checks, outlier_detection, common_lb_config and
 * load_assignment.policy of a Cluster -> cluster_cfg (see build_health.h). Envoy's defaults
 * and validation rules (api/envoy/config/core/v3/health_check.proto,
 * api/envoy/config/cluster/v3/outlier_detection.proto, cluster.proto CommonLbConfig,
 * endpoint.proto Policy, and the checks Envoy's health checker and outlier detector constructors
 * make). */
#include "proxy/config/build_health.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/cluster/v3/outlier_detection.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/health_check.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/type/v3/http.pb-c.h"
#include "envoy/type/v3/percent.pb-c.h"
#include "envoy/type/v3/range.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/duration.h"
#include "proxy/config/fpath.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/outlier.h"

#define PbCluster Envoy__Config__Cluster__V3__Cluster
#define PbCommonLb Envoy__Config__Cluster__V3__Cluster__CommonLbConfig
#define PbHealthCheck Envoy__Config__Core__V3__HealthCheck
#define PbHttpHc Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck
#define PbTcpHc Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck
#define PbGrpcHc Envoy__Config__Core__V3__HealthCheck__GrpcHealthCheck
#define PbOutlier Envoy__Config__Cluster__V3__OutlierDetection
#define PbHeaderValueOption Envoy__Config__Core__V3__HeaderValueOption
#define PbRange Envoy__Type__V3__Int64Range
#define PbDuration Google__Protobuf__Duration
#define PbU32 Google__Protobuf__UInt32Value

#define UNSUPPORTED "not supported by remora yet"

/* Envoy's defaults. */
#define DEFAULT_OVERPROVISIONING 140
#define DEFAULT_PANIC_THRESHOLD 50
#define DEFAULT_NO_TRAFFIC_INTERVAL_MS 60000
#define MAX_PRIORITY 128

/* ---- field paths (fpath.c) ---- */

struct hb {
    struct config *c;
    struct arena *a;
    struct err *err;
    struct fpath fp;
};

__attribute__((format(printf, 2, 3))) static size_t at(struct hb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = fpath_vpush(&b->fp, fmt, ap);
    va_end(ap);
    return old;
}

static void up(struct hb *b, size_t mark)
{
    fpath_pop(&b->fp, mark);
}

/* Sets the error at the current path plus ".field" and returns -EINVAL. */
__attribute__((format(printf, 3, 4))) static int fail_at(struct hb *b, const char *field,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fpath_vfail(&b->fp, b->err, field, fmt, ap);
    va_end(ap);
    return rc;
}

#define REJECT_IF(cond, field)                                                                     \
    do {                                                                                           \
        if (cond) {                                                                                \
            return fail_at(b, (field), UNSUPPORTED);                                               \
        }                                                                                          \
    } while (0)

/* A Duration in ms, sub-millisecond remainders rounded up (as build.c). NULL gives `dflt`.
 * `positive` rejects zero. */
static int dur_ms(struct hb *b, const char *field, const PbDuration *d, uint64_t dflt,
                  bool positive, uint64_t *out)
{
    if (d == NULL) {
        *out = dflt;
        return 0;
    }
    const char *why = duration_ms(d, positive, out);
    return why != NULL ? fail_at(b, field, "%s", why) : 0;
}

static uint32_t u32_or(const PbU32 *w, uint32_t dflt)
{
    return w != NULL ? w->value : dflt;
}

/* A percentage field (uint32, lte 100). */
static int percent(struct hb *b, const char *field, const PbU32 *w, uint32_t dflt, uint32_t *out)
{
    *out = u32_or(w, dflt);
    if (*out > 100) {
        return fail_at(b, field, "must be at most 100");
    }
    return 0;
}

static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool valid_header_name(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!is_tchar((unsigned char)*s)) {
            return false;
        }
    }
    return true;
}

static bool valid_header_value(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

static struct str dup_lower(struct arena *a, const char *s)
{
    struct str r = arena_strdup(a, str_from_c(s));
    char *p = (char *)r.p;
    for (size_t i = 0; i < r.len; i++) {
        p[i] = (char)tolower((unsigned char)p[i]);
    }
    return r;
}

/* ---- health_checks ---- */

/* expected_statuses / retriable_statuses: half-open ranges within [100, 600) (Envoy's
 * HttpHealthCheckerImpl checks and messages). */
static int hc_ranges(struct hb *b, const char *field, PbRange *const *r, size_t n,
                     const struct hc_range **out, uint32_t *n_out)
{
    struct hc_range *v = ARENA_NEW_N(b->a, struct hc_range, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        size_t mark = at(b, ".%s[%zu]", field, i);
        int rc = 0;
        if (r[i]->start < 100) {
            rc = fail_at(b, NULL, "expecting start >= 100, but found start=%lld",
                         (long long)r[i]->start);
        } else if (r[i]->end > 600) {
            rc = fail_at(b, NULL, "expecting end <= 600, but found end=%lld", (long long)r[i]->end);
        } else if (r[i]->start >= r[i]->end) {
            rc = fail_at(b, NULL, "expecting start < end, but found start=%lld and end=%lld",
                         (long long)r[i]->start, (long long)r[i]->end);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        v[i].start = r[i]->start;
        v[i].end = r[i]->end;
    }
    *out = v;
    *n_out = (uint32_t)n;
    return 0;
}

/* request_headers_to_add (HTTP) or initial_metadata (gRPC). */
static int header_adds(struct hb *b, const char *field, PbHeaderValueOption *const *v, size_t n,
                       struct health_check_cfg *out)
{
    struct header_add *adds = ARENA_NEW_N(b->a, struct header_add, n);
    for (size_t i = 0; i < n; i++) {
        size_t mark = at(b, ".%s[%zu]", field, i);
        int rc = build_header_add(b->a, b->fp.p, v[i], &adds[i], b->err);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    out->headers_add = adds;
    out->n_headers_add = (uint32_t)n;
    return 0;
}

static int http_health_check(struct hb *b, const PbHttpHc *h, struct health_check_cfg *out)
{
    if (h->path == NULL || h->path[0] == '\0') {
        return fail_at(b, "path", "required");
    }
    if (!valid_header_value(h->path) || strchr(h->path, ' ') != NULL) {
        return fail_at(b, "path", "invalid request path");
    }
    if (h->host != NULL && !valid_header_value(h->host)) {
        return fail_at(b, "host", "contains CR or LF");
    }
    REJECT_IF(h->send != NULL, "send");
    REJECT_IF(h->receive != NULL, "receive");
    if (h->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP3) {
        return fail_at(b, "codec_client_type", "HTTP3 is " UNSUPPORTED);
    }
    out->kind = HC_HTTP;
    out->http2 = h->codec_client_type == ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2;
    out->path = arena_strdup(b->a, str_from_c(h->path));
    out->host = arena_strdup(b->a, str_from_c(h->host != NULL ? h->host : ""));
    int rc = header_adds(b, "request_headers_to_add", h->request_headers_to_add,
                         h->n_request_headers_to_add, out);
    if (rc != 0) {
        return rc;
    }
    struct str *rms = ARENA_NEW_N(b->a, struct str, h->n_request_headers_to_remove);
    for (size_t i = 0; i < h->n_request_headers_to_remove; i++) {
        const char *name = h->request_headers_to_remove[i];
        rms[i] = dup_lower(b->a, name);
        if (!valid_header_name(name) || str_eq_lit(rms[i], "host")) {
            size_t mark = at(b, ".request_headers_to_remove[%zu]", i);
            rc = fail_at(b, NULL, "'%s' may not be removed", name);
            up(b, mark);
            return rc;
        }
    }
    out->headers_remove = rms;
    out->n_headers_remove = (uint32_t)h->n_request_headers_to_remove;
    rc = hc_ranges(b, "expected_statuses", h->expected_statuses, h->n_expected_statuses,
                   &out->expected, &out->n_expected);
    if (rc == 0 && out->n_expected == 0) {
        /* Envoy's default: 200 only. */
        struct hc_range *d = ARENA_NEW(b->a, struct hc_range);
        d->start = 200;
        d->end = 201;
        out->expected = d;
        out->n_expected = 1;
    }
    if (rc == 0) {
        rc = hc_ranges(b, "retriable_statuses", h->retriable_statuses, h->n_retriable_statuses,
                       &out->retriable, &out->n_retriable);
    }
    if (rc == 0 && h->service_name_matcher != NULL) {
        struct str_match *m = ARENA_NEW(b->a, struct str_match);
        size_t mark = at(b, ".service_name_matcher");
        rc = build_string_match(b->c, b->fp.p, h->service_name_matcher, m, b->err);
        up(b, mark);
        out->service_name = m;
    }
    return rc;
}

/* The gRPC Health Checking Protocol, always over HTTP/2 (Envoy's GrpcHealthCheck). */
static int grpc_health_check(struct hb *b, const PbGrpcHc *g, struct health_check_cfg *out)
{
    if (g->authority != NULL && !valid_header_value(g->authority)) {
        return fail_at(b, "authority", "contains CR or LF");
    }
    out->kind = HC_GRPC;
    out->http2 = true;
    out->path = STR_LIT("/grpc.health.v1.Health/Check");
    out->host = arena_strdup(b->a, str_from_c(g->authority != NULL ? g->authority : ""));
    out->grpc_service =
        arena_strdup(b->a, str_from_c(g->service_name != NULL ? g->service_name : ""));
    return header_adds(b, "initial_metadata", g->initial_metadata, g->n_initial_metadata, out);
}

static int health_check(struct hb *b, const PbHealthCheck *h, struct health_check_cfg *out)
{
    if (h->timeout == NULL) {
        return fail_at(b, "timeout", "required");
    }
    if (h->interval == NULL) {
        return fail_at(b, "interval", "required");
    }
    if (h->unhealthy_threshold == NULL) {
        return fail_at(b, "unhealthy_threshold", "required");
    }
    if (h->healthy_threshold == NULL) {
        return fail_at(b, "healthy_threshold", "required");
    }
    REJECT_IF(h->alt_port != NULL, "alt_port");
    REJECT_IF(h->event_log_path != NULL && h->event_log_path[0] != '\0', "event_log_path");
    REJECT_IF(h->tls_options != NULL, "tls_options");
    REJECT_IF(h->transport_socket_match_criteria != NULL, "transport_socket_match_criteria");
    int rc = dur_ms(b, "timeout", h->timeout, 0, true, &out->timeout_ms);
    if (rc == 0) {
        rc = dur_ms(b, "interval", h->interval, 0, true, &out->interval_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "initial_jitter", h->initial_jitter, 0, false, &out->initial_jitter_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "interval_jitter", h->interval_jitter, 0, false, &out->interval_jitter_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "no_traffic_interval", h->no_traffic_interval,
                    DEFAULT_NO_TRAFFIC_INTERVAL_MS, true, &out->no_traffic_interval_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "no_traffic_healthy_interval", h->no_traffic_healthy_interval,
                    out->no_traffic_interval_ms, true, &out->no_traffic_healthy_interval_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "unhealthy_interval", h->unhealthy_interval, out->interval_ms, true,
                    &out->unhealthy_interval_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "unhealthy_edge_interval", h->unhealthy_edge_interval,
                    out->unhealthy_interval_ms, true, &out->unhealthy_edge_interval_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "healthy_edge_interval", h->healthy_edge_interval, out->interval_ms, true,
                    &out->healthy_edge_interval_ms);
    }
    if (rc != 0) {
        return rc;
    }
    out->interval_jitter_percent = h->interval_jitter_percent;
    out->unhealthy_threshold = h->unhealthy_threshold->value;
    out->healthy_threshold = h->healthy_threshold->value;
    out->reuse_connection = h->reuse_connection != NULL ? (bool)h->reuse_connection->value : true;
    size_t mark;
    switch (h->health_checker_case) {
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_HTTP_HEALTH_CHECK:
        mark = at(b, ".http_health_check");
        rc = http_health_check(b, h->http_health_check, out);
        up(b, mark);
        return rc;
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK: {
        const PbTcpHc *t = h->tcp_health_check;
        mark = at(b, ".tcp_health_check");
        rc = 0;
        if (t->send != NULL) {
            rc = fail_at(b, "send", "payloads are " UNSUPPORTED " (connect-only checks are)");
        } else if (t->n_receive > 0) {
            rc = fail_at(b, "receive", "payloads are " UNSUPPORTED " (connect-only checks are)");
        }
        up(b, mark);
        out->kind = HC_TCP;
        return rc;
    }
    case ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK:
        mark = at(b, ".grpc_health_check");
        rc = grpc_health_check(b, h->grpc_health_check, out);
        up(b, mark);
        return rc;
    default:
        return fail_at(b, NULL,
                       "one of http_health_check, tcp_health_check or grpc_health_check is "
                       "required");
    }
}

/* ---- outlier_detection ---- */

static int outlier(struct hb *b, const PbOutlier *o, struct outlier_cfg *out)
{
    out->consecutive_5xx = u32_or(o->consecutive_5xx, 5);
    out->consecutive_gateway_failure = u32_or(o->consecutive_gateway_failure, 5);
    out->consecutive_local_origin_failure = u32_or(o->consecutive_local_origin_failure, 5);
    out->success_rate_minimum_hosts = u32_or(o->success_rate_minimum_hosts, 5);
    out->success_rate_request_volume = u32_or(o->success_rate_request_volume, 100);
    out->success_rate_stdev_factor = u32_or(o->success_rate_stdev_factor, 1900);
    out->failure_percentage_minimum_hosts = u32_or(o->failure_percentage_minimum_hosts, 5);
    out->failure_percentage_request_volume = u32_or(o->failure_percentage_request_volume, 50);
    out->split_external_local_origin_errors = o->split_external_local_origin_errors;
    out->successful_active_health_check_uneject_host =
        o->successful_active_health_check_uneject_host != NULL
            ? (bool)o->successful_active_health_check_uneject_host->value
            : true;
    out->always_eject_one_host =
        o->always_eject_one_host != NULL ? (bool)o->always_eject_one_host->value : false;
    int rc = dur_ms(b, "interval", o->interval, 10000, true, &out->interval_ms);
    if (rc == 0) {
        rc = dur_ms(b, "base_ejection_time", o->base_ejection_time, 30000, true,
                    &out->base_ejection_time_ms);
    }
    if (rc == 0) {
        /* Default: 300 s or base_ejection_time, whichever is larger. */
        uint64_t dflt = out->base_ejection_time_ms > 300000 ? out->base_ejection_time_ms : 300000;
        rc = dur_ms(b, "max_ejection_time", o->max_ejection_time, dflt, true,
                    &out->max_ejection_time_ms);
    }
    if (rc == 0 && out->max_ejection_time_ms < out->base_ejection_time_ms) {
        rc = fail_at(b, "max_ejection_time", "cannot be smaller than base_ejection_time");
    }
    if (rc == 0) {
        rc = dur_ms(b, "max_ejection_time_jitter", o->max_ejection_time_jitter, 0, false,
                    &out->max_ejection_time_jitter_ms);
    }
    if (rc == 0) {
        rc = percent(b, "max_ejection_percent", o->max_ejection_percent, 10,
                     &out->max_ejection_percent);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_consecutive_5xx", o->enforcing_consecutive_5xx, 100,
                     &out->enforcing_consecutive_5xx);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_consecutive_gateway_failure",
                     o->enforcing_consecutive_gateway_failure, 0,
                     &out->enforcing_consecutive_gateway_failure);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_consecutive_local_origin_failure",
                     o->enforcing_consecutive_local_origin_failure, 100,
                     &out->enforcing_consecutive_local_origin_failure);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_success_rate", o->enforcing_success_rate, 100,
                     &out->enforcing_success_rate);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_local_origin_success_rate",
                     o->enforcing_local_origin_success_rate, 100,
                     &out->enforcing_local_origin_success_rate);
    }
    if (rc == 0) {
        rc = percent(b, "failure_percentage_threshold", o->failure_percentage_threshold, 85,
                     &out->failure_percentage_threshold);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_failure_percentage", o->enforcing_failure_percentage, 0,
                     &out->enforcing_failure_percentage);
    }
    if (rc == 0) {
        rc = percent(b, "enforcing_failure_percentage_local_origin",
                     o->enforcing_failure_percentage_local_origin, 0,
                     &out->enforcing_failure_percentage_local_origin);
    }
    return rc;
}

/* ---- common_lb_config, load_assignment.policy ---- */

static int common_lb(struct hb *b, const PbCommonLb *c, struct cluster_cfg *cc)
{
    cc->panic_threshold = DEFAULT_PANIC_THRESHOLD;
    if (c == NULL) {
        return 0;
    }
    REJECT_IF(
        c->locality_config_specifier_case !=
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__COMMON_LB_CONFIG__LOCALITY_CONFIG_SPECIFIER__NOT_SET,
        "locality_weighted_lb_config");
    /* remora applies health changes to the load balancer at once, which is what a merge window
     * of 0 asks for; a longer window is not implemented. */
    REJECT_IF(c->update_merge_window != NULL &&
                  (c->update_merge_window->seconds != 0 || c->update_merge_window->nanos != 0),
              "update_merge_window");
    REJECT_IF(c->ignore_new_hosts_until_first_hc, "ignore_new_hosts_until_first_hc");
    REJECT_IF(c->close_connections_on_host_set_change, "close_connections_on_host_set_change");
    REJECT_IF(c->consistent_hashing_lb_config != NULL, "consistent_hashing_lb_config");
    if (c->healthy_panic_threshold != NULL) {
        double v = c->healthy_panic_threshold->value;
        if (!(v >= 0.0 && v <= 100.0)) {
            return fail_at(b, "healthy_panic_threshold.value", "must be between 0 and 100");
        }
        cc->panic_threshold = (uint32_t)v; /* Envoy truncates to the nearest 1% */
    }
    return 0;
}

int build_health_cluster(struct config *c, struct arena *a, struct err *err, const char *path,
                         const PbCluster *pc, struct cluster_cfg *cc)
{
    struct hb hb = {.c = c, .a = a, .err = err};
    struct hb *b = &hb;
    at(b, "%s", path);

    uint32_t max_prio = 0;
    for (uint32_t i = 0; i < cc->n_endpoints; i++) {
        if (cc->endpoints[i].priority > max_prio) {
            max_prio = cc->endpoints[i].priority;
        }
    }
    cc->n_priorities = max_prio + 1;
    if (max_prio > MAX_PRIORITY) {
        return fail_at(b, "load_assignment", "priorities go up to %d", MAX_PRIORITY);
    }
    cc->overprovisioning_factor = DEFAULT_OVERPROVISIONING;
    if (pc->load_assignment != NULL && pc->load_assignment->policy != NULL) {
        const PbU32 *f = pc->load_assignment->policy->overprovisioning_factor;
        if (f != NULL && f->value == 0) {
            return fail_at(b, "load_assignment.policy.overprovisioning_factor",
                           "must be greater than 0");
        }
        cc->overprovisioning_factor = u32_or(f, DEFAULT_OVERPROVISIONING);
    }

    size_t mark = at(b, ".common_lb_config");
    int rc = common_lb(b, pc->common_lb_config, cc);
    up(b, mark);
    if (rc != 0) {
        return rc;
    }

    if (pc->n_health_checks > 1) {
        return fail_at(b, "health_checks",
                       "only one health check per cluster is supported "
                       "(as in Envoy)");
    }
    if (pc->n_health_checks == 1) {
        struct health_check_cfg *h = ARENA_NEW(a, struct health_check_cfg);
        mark = at(b, ".health_checks[0]");
        rc = health_check(b, pc->health_checks[0], h);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        cc->health_check = h;
    }

    if (pc->outlier_detection != NULL) {
        struct outlier_cfg *o = ARENA_NEW(a, struct outlier_cfg);
        mark = at(b, ".outlier_detection");
        rc = outlier(b, pc->outlier_detection, o);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        cc->outlier = o;
    }
    return 0;
}
