/* build_tracing: HttpConnectionManager.tracing and the bootstrap's tracing.http (see
 * build_tracing.h). */
#include "proxy/config/build_tracing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "envoy/config/trace/v3/http_tracer.pb-c.h"
#include "envoy/config/trace/v3/xray.pb-c.h"
#include "envoy/config/trace/v3/zipkin.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/type/tracing/v3/custom_tag.pb-c.h"
#include "proxy/config/filter_build.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/file.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/filter.h"

typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__Tracing
    PbHcmTracing;
typedef Envoy__Config__Trace__V3__Tracing__Http PbTracingHttp;
typedef Envoy__Config__Trace__V3__ZipkinConfig PbZipkin;
typedef Envoy__Config__Trace__V3__XRayConfig PbXRay;
typedef Envoy__Type__Tracing__V3__CustomTag PbCustomTag;

#define UNSUPPORTED "not supported by remora yet"

static struct str dup_c(struct arena *a, const char *s)
{
    return arena_strdup(a, str_from_c(s != NULL ? s : ""));
}

/* `path`.`field` into out[cap], cut to fit. */
static void sub(char *out, size_t cap, const char *path, const char *field)
{
    size_t a = strlen(path), b = strlen(field);
    if (a > cap - 2) {
        a = cap - 2;
    }
    memcpy(out, path, a);
    out[a] = '.';
    if (b > cap - a - 2) {
        b = cap - a - 2;
    }
    memcpy(out + a + 1, field, b);
    out[a + 1 + b] = '\0';
}

static void tag_path(char *out, size_t cap, const char *path, size_t i, const char *rest)
{
    char f[96];
    snprintf(f, sizeof(f), "custom_tags[%zu]%.60s", i, rest);
    sub(out, cap, path, f);
}

static bool set(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static int zipkin(struct config *c, struct err *err, const char *path, const PbZipkin *z,
                  struct tracer_cfg *tc)
{
    char p[512];
    tc->kind = TRACER_ZIPKIN;
    if (!set(z->collector_cluster)) {
        sub(p, sizeof(p), path, "collector_cluster");
        return err_set(err, p, "required");
    }
    if (!set(z->collector_endpoint) || z->collector_endpoint[0] != '/') {
        sub(p, sizeof(p), path, "collector_endpoint");
        return err_set(err, p, "required: a path starting with '/'");
    }
    if (strpbrk(z->collector_endpoint, " \r\n\t") != NULL) {
        sub(p, sizeof(p), path, "collector_endpoint");
        return err_set(err, p, "must not hold spaces or line breaks");
    }
    if (z->collector_endpoint_version !=
        ENVOY__CONFIG__TRACE__V3__ZIPKIN_CONFIG__COLLECTOR_ENDPOINT_VERSION__HTTP_JSON) {
        sub(p, sizeof(p), path, "collector_endpoint_version");
        return err_set(err, p, "only HTTP_JSON is supported by remora");
    }
    if (z->split_spans_for_request) {
        sub(p, sizeof(p), path, "split_spans_for_request");
        return err_set(err, p, UNSUPPORTED);
    }
    if (set(z->collector_hostname) && strpbrk(z->collector_hostname, " \r\n\t") != NULL) {
        sub(p, sizeof(p), path, "collector_hostname");
        return err_set(err, p, "must not hold spaces or line breaks");
    }
    tc->collector_cluster = dup_c(&c->arena, z->collector_cluster);
    tc->collector_endpoint = dup_c(&c->arena, z->collector_endpoint);
    tc->collector_hostname =
        dup_c(&c->arena, set(z->collector_hostname) ? z->collector_hostname : z->collector_cluster);
    tc->trace_id_128bit = z->trace_id_128bit;
    tc->shared_span_context = z->shared_span_context == NULL || z->shared_span_context->value;
    return 0;
}

/* sampling_rule_manifest: X-Ray's local rules file, of which remora takes the default rule
 * only ({"version": 1 or 2, "default": {"fixed_target": N, "rate": R}}); custom rules are
 * rejected. */
static int sampling_manifest(struct err *err, const char *p,
                             const Envoy__Config__Core__V3__DataSource *ds, struct tracer_cfg *tc)
{
    char *text = NULL;
    size_t len = 0;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        text = xstrdup(ds->inline_string != NULL ? ds->inline_string : "");
        len = strlen(text);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        text = xstrndup((const char *)ds->inline_bytes.data, ds->inline_bytes.len);
        len = ds->inline_bytes.len;
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME:
        text = file_read(ds->filename != NULL ? ds->filename : "", 1u << 20, &len);
        if (text == NULL) {
            return err_set(err, p, "cannot read '%s'", ds->filename != NULL ? ds->filename : "");
        }
        break;
    default:
        return err_set(err, p, "filename, inline_string or inline_bytes required");
    }
    json_error_t je;
    json_t *j = json_loadb(text, len, 0, &je);
    free(text);
    if (j == NULL) {
        return err_set(err, p, "not JSON: %s", je.text);
    }
    int rc = 0;
    json_t *v = json_object_get(j, "version"), *d = json_object_get(j, "default");
    json_t *rules = json_object_get(j, "rules");
    json_t *ft = json_object_get(d, "fixed_target"), *rate = json_object_get(d, "rate");
    if (!json_is_integer(v) || (json_integer_value(v) != 1 && json_integer_value(v) != 2)) {
        rc = err_set(err, p, "version must be 1 or 2");
    } else if (rules != NULL && !(json_is_array(rules) && json_array_size(rules) == 0)) {
        rc = err_set(err, p, "custom rules are " UNSUPPORTED " (only the default rule)");
    } else if (!json_is_object(d) || !json_is_integer(ft) || json_integer_value(ft) < 0 ||
               json_integer_value(ft) > 1000000 || !json_is_number(rate) ||
               !(json_number_value(rate) >= 0.0 && json_number_value(rate) <= 1.0)) {
        rc = err_set(err, p, "default needs fixed_target (0-1000000) and rate (0-1)");
    } else {
        tc->reservoir_per_s = (uint32_t)json_integer_value(ft);
        tc->rate_bp = (uint32_t)(json_number_value(rate) * 10000.0 + 0.5);
    }
    json_decref(j);
    return rc;
}

static int xray(struct config *c, struct err *err, const char *path, const PbXRay *x,
                struct tracer_cfg *tc)
{
    char p[512];
    tc->kind = TRACER_XRAY;
    tc->reservoir_per_s = 1;
    tc->rate_bp = 500;
    if (!set(x->segment_name)) {
        sub(p, sizeof(p), path, "segment_name");
        return err_set(err, p, "required");
    }
    if (x->sampling_rule_manifest != NULL) {
        sub(p, sizeof(p), path, "sampling_rule_manifest");
        if (sampling_manifest(err, p, x->sampling_rule_manifest, tc) != 0) {
            return -EINVAL;
        }
    }
    if (x->segment_fields != NULL) {
        sub(p, sizeof(p), path, "segment_fields");
        return err_set(err, p, UNSUPPORTED);
    }
    tc->segment_name = dup_c(&c->arena, x->segment_name);
    const char *ip = "127.0.0.1";
    uint32_t port = 2000;
    const Envoy__Config__Core__V3__SocketAddress *sa = x->daemon_endpoint;
    if (sa != NULL) {
        sub(p, sizeof(p), path, "daemon_endpoint");
        if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__UDP) {
            return err_set(err, p, "protocol must be UDP");
        }
        if (sa->port_specifier_case !=
                ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE ||
            sa->port_value == 0 || sa->port_value > 65535) {
            return err_set(err, p, "port_value must be 1-65535");
        }
        ip = sa->address != NULL ? sa->address : "";
        port = sa->port_value;
    }
    struct sockaddr_in *v4 = (struct sockaddr_in *)&tc->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&tc->addr;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        tc->addr_len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        tc->addr_len = sizeof(*v6);
    } else {
        sub(p, sizeof(p), path, "daemon_endpoint.address");
        return err_set(err, p, "'%s' is not an IP address", ip);
    }
    return 0;
}

int build_tracing_provider(struct config *c, struct err *err, const char *path,
                           const PbTracingHttp *pb, const struct tracer_cfg **out)
{
    char p[512];
    sub(p, sizeof(p), path, "typed_config");
    if (pb->config_type_case != ENVOY__CONFIG__TRACE__V3__TRACING__HTTP__CONFIG_TYPE_TYPED_CONFIG ||
        pb->typed_config == NULL) {
        return err_set(err, p, "required");
    }
    ProtobufCMessage *m = NULL;
    if (pbjson_any_unpack(pb->typed_config, pbtypes_find, p, &m, err) != 0) {
        return -EINVAL;
    }
    struct tracer_cfg *tc = ARENA_NEW(&c->arena, struct tracer_cfg);
    int rc;
    if (m->descriptor == &envoy__config__trace__v3__zipkin_config__descriptor) {
        rc = zipkin(c, err, p, (const PbZipkin *)m, tc);
    } else if (m->descriptor == &envoy__config__trace__v3__xray_config__descriptor) {
        rc = xray(c, err, p, (const PbXRay *)m, tc);
    } else {
        rc = err_set(err, p, "tracer %s is " UNSUPPORTED " (zipkin and xray are)",
                     m->descriptor->name);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc == 0) {
        tracing_note_driver(tc->kind);
        *out = tc;
    }
    return rc;
}

int build_tracing_resolve(const struct config *c, struct err *err, const char *path,
                          struct tracer_cfg *tc)
{
    if (tc->kind != TRACER_ZIPKIN) {
        return 0;
    }
    const struct cluster_cfg *cc = config_find_cluster(c, tc->collector_cluster);
    char p[512];
    sub(p, sizeof(p), path, "typed_config.collector_cluster");
    if (cc == NULL) {
        return err_set(err, p, "no cluster named '%.*s' (a static cluster)",
                       STR_FMT(tc->collector_cluster));
    }
    if (cc->n_endpoints == 0) {
        return err_set(err, p,
                       "cluster '%.*s' has no endpoint (remora reports to a static "
                       "cluster's first endpoint)",
                       STR_FMT(tc->collector_cluster));
    }
    tc->addr = cc->endpoints[0].addr.ss;
    tc->addr_len = cc->endpoints[0].addr.len;
    return 0;
}

static int percent(struct err *err, const char *path, const char *field,
                   const Envoy__Type__V3__Percent *pc, uint32_t *bp)
{
    *bp = 10000;
    if (pc == NULL) {
        return 0;
    }
    if (!(pc->value >= 0.0 && pc->value <= 100.0)) {
        char p[512];
        char f[64];
        snprintf(f, sizeof(f), "%s.value", field);
        sub(p, sizeof(p), path, f);
        return err_set(err, p, "must be 0-100");
    }
    *bp = (uint32_t)(pc->value * 100.0 + 0.5);
    return 0;
}

static int tags(struct config *c, struct err *err, const char *path, const PbHcmTracing *pb,
                struct hcm_tracing *t)
{
    struct trace_tag *v = ARENA_NEW_N(&c->arena, struct trace_tag, pb->n_custom_tags + 1);
    char p[512];
    for (size_t i = 0; i < pb->n_custom_tags; i++) {
        const PbCustomTag *ct = pb->custom_tags[i];
        struct trace_tag *g = &v[i];
        if (!set(ct->tag)) {
            tag_path(p, sizeof(p), path, i, ".tag");
            return err_set(err, p, "required");
        }
        g->tag = dup_c(&c->arena, ct->tag);
        switch (ct->type_case) {
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_LITERAL:
            g->value = dup_c(&c->arena, ct->literal->value);
            break;
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_REQUEST_HEADER: {
            const char *n = ct->request_header->name;
            if (!set(n)) {
                tag_path(p, sizeof(p), path, i, ".request_header.name");
                return err_set(err, p, "required");
            }
            struct str s = dup_c(&c->arena, n);
            for (size_t k = 0; k < s.len; k++) {
                char ch = s.p[k];
                ((char *)s.p)[k] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
            }
            g->header = true;
            g->value = s;
            g->default_value = dup_c(&c->arena, ct->request_header->default_value);
            break;
        }
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_ENVIRONMENT:
            tag_path(p, sizeof(p), path, i, ".environment");
            return err_set(err, p, UNSUPPORTED);
        case ENVOY__TYPE__TRACING__V3__CUSTOM_TAG__TYPE_METADATA:
            tag_path(p, sizeof(p), path, i, ".metadata");
            return err_set(err, p, UNSUPPORTED);
        default:
            tag_path(p, sizeof(p), path, i, "");
            return err_set(err, p, "a tag needs a type (literal or request_header)");
        }
    }
    t->tags = v;
    t->n_tags = (uint32_t)pb->n_custom_tags;
    return 0;
}

int build_tracing_hcm(struct config *c, struct err *err, const char *path, const PbHcmTracing *pb,
                      struct str stat_prefix, bool egress, const struct tracer_cfg *boot,
                      const struct hcm_tracing **out)
{
    struct hcm_tracing *t = ARENA_NEW(&c->arena, struct hcm_tracing);
    char p[512];
    int rc;
    if ((rc = percent(err, path, "client_sampling", pb->client_sampling, &t->client_bp)) != 0 ||
        (rc = percent(err, path, "random_sampling", pb->random_sampling, &t->random_bp)) != 0 ||
        (rc = percent(err, path, "overall_sampling", pb->overall_sampling, &t->overall_bp)) != 0) {
        return rc;
    }
    if (pb->verbose) {
        sub(p, sizeof(p), path, "verbose");
        return err_set(err, p, UNSUPPORTED);
    }
    if (pb->spawn_upstream_span != NULL && pb->spawn_upstream_span->value) {
        sub(p, sizeof(p), path, "spawn_upstream_span");
        return err_set(err, p, UNSUPPORTED);
    }
    t->max_path_tag_length = pb->max_path_tag_length != NULL ? pb->max_path_tag_length->value : 256;
    if ((rc = tags(c, err, path, pb, t)) != 0) {
        return rc;
    }
    t->tracer = boot;
    if (pb->provider != NULL) {
        struct tracer_cfg *tc = NULL;
        sub(p, sizeof(p), path, "provider");
        if ((rc = build_tracing_provider(c, err, p, pb->provider,
                                         (const struct tracer_cfg **)&tc)) != 0 ||
            (rc = build_tracing_resolve(c, err, p, tc)) != 0) {
            return rc;
        }
        t->tracer = tc;
    }
    if (t->tracer == NULL) {
        *out = NULL; /* Envoy's null tracer: nothing to do per request, not even a branch more */
        return 0;
    }
    t->egress = egress;
    t->node_id = c->node_id;
    struct filter_build fb = {.c = c, .a = &c->arena, .err = err, .stat_prefix = stat_prefix};
    const char *tn = "envoy_http_conn_manager_prefix";
    t->st_random =
        filter_build_stat(&fb, "http", tn, stat_prefix, "tracing.random_sampling", false);
    t->st_forced = filter_build_stat(&fb, "http", tn, stat_prefix, "tracing.service_forced", false);
    t->st_client = filter_build_stat(&fb, "http", tn, stat_prefix, "tracing.client_enabled", false);
    t->st_not_traceable =
        filter_build_stat(&fb, "http", tn, stat_prefix, "tracing.not_traceable", false);
    t->st_health_check =
        filter_build_stat(&fb, "http", tn, stat_prefix, "tracing.health_check", false);
    *out = t;
    return 0;
}
