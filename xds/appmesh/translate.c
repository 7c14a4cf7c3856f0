/* translate: App Mesh specs -> Envoy v3 resources for proxyless gRPC clients (translate.h).
 *
 * Each resource is built as a protobuf-c message tree in a per-resource arena (every node,
 * string and array of the tree comes from it), packed, and the arena dropped. Oneof cases are
 * set by hand, and an empty catch-all prefix points at a literal "" distinct from
 * protobuf_c_empty_string (xds-wire.md §8: otherwise protobuf-c does not emit it). */
#include "xds/appmesh/translate.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

#define TU "type.googleapis.com/"
const char *const xds_type_url[XDS_NTYPES] = {
    [XDS_CDS] = TU "envoy.config.cluster.v3.Cluster",
    [XDS_EDS] = TU "envoy.config.endpoint.v3.ClusterLoadAssignment",
    [XDS_LDS] = TU "envoy.config.listener.v3.Listener",
    [XDS_RDS] = TU "envoy.config.route.v3.RouteConfiguration",
    [XDS_SDS] = TU "envoy.extensions.transport_sockets.tls.v3.Secret",
};
#define HCM_URL                                                                                    \
    TU "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define ROUTER_URL TU "envoy.extensions.filters.http.router.v3.Router"

int xds_type_from_url(const char *url)
{
    for (int t = 0; t < XDS_NTYPES; t++) {
        if (strcmp(url, xds_type_url[t]) == 0) {
            return t;
        }
    }
    return -1;
}

/* Short names for the generated types. */
typedef Envoy__Config__Listener__V3__Listener Listener;
typedef Envoy__Config__Listener__V3__ApiListener ApiListener;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__Tracing
    HcmTracing;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds Rds;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter HttpFilter;
typedef Envoy__Extensions__Filters__Http__Router__V3__Router Router;
typedef Envoy__Config__Core__V3__ConfigSource ConfigSource;
typedef Envoy__Config__Core__V3__AggregatedConfigSource Ads;
typedef Google__Protobuf__Any Any;
typedef Google__Protobuf__Duration Duration;
typedef Google__Protobuf__UInt32Value U32;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Config__Route__V3__VirtualHost VirtualHost;
typedef Envoy__Config__Route__V3__Route Route;
typedef Envoy__Config__Route__V3__RouteMatch RouteMatch;
typedef Envoy__Config__Route__V3__HeaderMatcher HeaderMatcher;
typedef Envoy__Config__Route__V3__RouteAction RouteAction;
typedef Envoy__Config__Route__V3__RouteAction__MaxStreamDuration MaxStreamDuration;
typedef Envoy__Config__Route__V3__WeightedCluster WeightedCluster;
typedef Envoy__Config__Route__V3__WeightedCluster__ClusterWeight ClusterWeight;
typedef Envoy__Config__Route__V3__RetryPolicy RetryPolicy;
typedef Envoy__Type__Matcher__V3__RegexMatcher RegexMatcher;
typedef Envoy__Type__V3__Int64Range Int64Range;
typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig EdsClusterConfig;
typedef Envoy__Config__Cluster__V3__OutlierDetection OutlierDetection;
typedef Envoy__Config__Cluster__V3__CircuitBreakers CircuitBreakers;
typedef Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds Thresholds;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment Cla;
typedef Envoy__Config__Endpoint__V3__LocalityLbEndpoints LocalityLbEndpoints;
typedef Envoy__Config__Endpoint__V3__LbEndpoint LbEndpoint;
typedef Envoy__Config__Endpoint__V3__Endpoint Endpoint;
typedef Envoy__Config__Core__V3__Locality Locality;
typedef Envoy__Config__Core__V3__Address Address;
typedef Envoy__Config__Core__V3__SocketAddress SocketAddress;

/* ---- arena ----------------------------------------------------------------------------------- */

struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
};

struct arena {
    struct chunk *head;
};

static void *arena_alloc(struct arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (a->head == NULL || a->head->cap - a->head->used < size) {
        size_t cap = size > 8192 ? size : 8192;
        struct chunk *c = xmalloc(sizeof(*c) + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = a->head->mem + a->head->used;
    a->head->used += size;
    memset(p, 0, size);
    return p;
}

static void arena_free(struct arena *a)
{
    while (a->head) {
        struct chunk *c = a->head;
        a->head = c->next;
        free(c);
    }
}

static void *anew(struct arena *a, const void *init, size_t size)
{
    void *p = arena_alloc(a, size);
    memcpy(p, init, size);
    return p;
}
#define NEW(a, T, INIT) ((T *)anew((a), &(T)INIT, sizeof(T)))
#define ARR(a, T, n) ((T **)arena_alloc((a), sizeof(T *) * ((n) ? (n) : 1)))

__attribute__((format(printf, 2, 3))) static char *astr(struct arena *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

static Any *pack_any(struct arena *a, const char *type_url, const ProtobufCMessage *m)
{
    Any *any = NEW(a, Any, GOOGLE__PROTOBUF__ANY__INIT);
    any->type_url = (char *)type_url;
    any->value.len = protobuf_c_message_get_packed_size(m);
    any->value.data = arena_alloc(a, any->value.len);
    protobuf_c_message_pack(m, any->value.data);
    return any;
}

static U32 *u32(struct arena *a, uint32_t v)
{
    U32 *w = NEW(a, U32, GOOGLE__PROTOBUF__UINT32_VALUE__INIT);
    w->value = v;
    return w;
}

static ConfigSource *ads_source(struct arena *a)
{
    ConfigSource *cs = NEW(a, ConfigSource, ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__INIT);
    cs->config_source_specifier_case =
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS;
    cs->ads = NEW(a, Ads, ENVOY__CONFIG__CORE__V3__AGGREGATED_CONFIG_SOURCE__INIT);
    cs->resource_api_version = ENVOY__CONFIG__CORE__V3__API_VERSION__V3;
    return cs;
}

/* An App Mesh Duration {unit: s|ms, value} as a protobuf Duration, or NULL when absent. */
static Duration *duration(struct arena *a, json_t *d)
{
    if (!json_is_object(d)) {
        return NULL;
    }
    json_t *v = json_object_get(d, "value");
    const char *unit = json_string_value(json_object_get(d, "unit"));
    if (!json_is_integer(v) || unit == NULL) {
        return NULL;
    }
    int64_t n = json_integer_value(v);
    Duration *du = NEW(a, Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    if (strcmp(unit, "ms") == 0) {
        du->seconds = n / 1000;
        du->nanos = (int32_t)((n % 1000) * 1000000);
    } else {
        du->seconds = n;
    }
    return du;
}

/* ---- the snapshot being built ------------------------------------------------------------- */

struct out {
    struct xds_resource *v;
    size_t n, cap;
};

static void emit(struct out *o, const char *name, const ProtobufCMessage *m)
{
    if (o->n == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 16;
        o->v = xrealloc(o->v, o->cap * sizeof(*o->v));
    }
    struct xds_resource *r = &o->v[o->n++];
    r->name = xstrdup(name);
    r->len = protobuf_c_message_get_packed_size(m);
    r->data = xmalloc(r->len ? r->len : 1);
    protobuf_c_message_pack(m, r->data);
}

static int res_cmp(const void *x, const void *y)
{
    return strcmp(((const struct xds_resource *)x)->name, ((const struct xds_resource *)y)->name);
}

struct tr {
    const struct tr_mesh *m;
    tr_resolve_cb resolve;
    void *arg;
    bool sidecar;      /* flavour B: the resources of one virtual node's sidecar or gateway */
    const char *vnode; /* flavour B: the node (its identity names the certificate secret) */
    bool gateway;      /* flavour B for virtual gateway `vnode` (translate_gateway) */
    const struct tr_item *gw; /* the gateway */
    json_t *gw_pool; /* the gateway's connectionPool: its egress clusters' circuit breakers */
    struct out out[XDS_NTYPES];
    struct xds_secret_ref *secrets; /* the secrets the TLS contexts name over ADS */
    size_t n_secrets;
    json_t *logging; /* flavour B: the node's spec.logging (borrowed), or NULL */
};

static const char *spec_str(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static const struct tr_item *find_item(const struct tr_item *v, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].name, name) == 0) {
            return &v[i];
        }
    }
    return NULL;
}

void translate_cluster_name(char *buf, size_t cap, const char *mesh, const char *vnode,
                            const char *protocol, long port)
{
    snprintf(buf, cap, "cds_egress_%s_%s_%s_%ld", mesh, vnode, protocol, port);
}

/* The listener of virtual node `vn` on `port` (<= 0: its first), or NULL. */
static json_t *vn_listener(const struct tr_item *vn, long port)
{
    json_t *ls = json_object_get(vn->spec, "listeners");
    size_t i;
    json_t *l;
    json_array_foreach(ls, i, l)
    {
        json_t *pm = json_object_get(l, "portMapping");
        if (port <= 0 || json_integer_value(json_object_get(pm, "port")) == port) {
            return l;
        }
    }
    return NULL;
}

static char *listener_cluster(struct arena *a, const char *mesh, const struct tr_item *vn,
                              json_t *l)
{
    json_t *pm = json_object_get(l, "portMapping");
    char buf[1024];
    translate_cluster_name(buf, sizeof(buf), mesh, vn->name, spec_str(pm, "protocol"),
                           (long)json_integer_value(json_object_get(pm, "port")));
    return astr(a, "%s", buf);
}

/* ---- clusters and endpoints ------------------------------------------------------------------ */

static void unsupported(const struct tr *t, const char *kind, const char *name, const char *what)
{
    LOG_W("xds: mesh %s: %s %s: %s is not translated for %s", t->m->mesh, kind, name, what,
          t->gateway   ? "gateways"
          : t->sidecar ? "sidecars"
                       : "gRPC clients");
}

/* ---- TLS (App Mesh listener tls and client policy tls) ------------------------------------- */

static bool proto_h2(const char *protocol);

typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext CommonTls;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext__CombinedCertificateValidationContext
    CombinedValidation;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext Validation;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SdsSecretConfig SdsSecretConfig;
typedef Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate TlsCertificate;
typedef Envoy__Extensions__TransportSockets__Tls__V3__SubjectAltNameMatcher SanMatcher;
typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext DownstreamTls;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext UpstreamTls;
typedef Envoy__Config__Core__V3__TransportSocket TransportSocket;
typedef Envoy__Config__Core__V3__DataSource DataSource;
typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcher;

#define TLS_SOCKET "envoy.transport_sockets.tls"
#define DOWNSTREAM_TLS_URL TU "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
#define UPSTREAM_TLS_URL TU "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define TLS_INSPECTOR_URL TU "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

void translate_proxy_spiffe_id(char *buf, size_t cap, const char *td, const char *mesh,
                               enum tr_proxy kind, const char *name)
{
    snprintf(buf, cap, "spiffe://%s/mesh/%s/%s/%s", td, mesh,
             kind == TR_VIRTUAL_GATEWAY ? "virtualGateway" : "virtualNode", name);
}

void translate_spiffe_id(char *buf, size_t cap, const char *td, const char *mesh, const char *vnode)
{
    translate_proxy_spiffe_id(buf, cap, td, mesh, TR_VIRTUAL_NODE, vnode);
}

void translate_bundle_name(char *buf, size_t cap, const char *td)
{
    snprintf(buf, cap, "spiffe://%s", td);
}

static DataSource *file_source(struct arena *a, const char *path)
{
    DataSource *d = NEW(a, DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
    d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME;
    d->filename = astr(a, "%s", path);
    return d;
}

/* An SdsSecretConfig over ADS naming `name` (recorded for remora-xds to serve). */
static SdsSecretConfig *sds_ref(struct tr *t, struct arena *a, const char *name, bool ca)
{
    bool seen = false;
    for (size_t i = 0; i < t->n_secrets && !seen; i++) {
        seen = strcmp(t->secrets[i].name, name) == 0;
    }
    if (!seen) {
        t->secrets = xrealloc(t->secrets, (t->n_secrets + 1) * sizeof(*t->secrets));
        t->secrets[t->n_secrets++] = (struct xds_secret_ref){xstrdup(name), ca};
    }
    SdsSecretConfig *s = NEW(
        a, SdsSecretConfig, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SDS_SECRET_CONFIG__INIT);
    s->name = astr(a, "%s", name);
    s->sds_config = ads_source(a);
    return s;
}

/* The name of an `sds` certificate or trust source: its secretName, else the node's identity
 * or the mesh's bundle. NULL (with *why) without a CA: remora-xds is then no SDS server. */
static const char *sds_name(struct tr *t, struct arena *a, json_t *sds, bool ca, const char **why)
{
    if (t->m->trust_domain == NULL) {
        *why = "an sds source needs remora-xds --ca-dir (remora-xds is the sidecars' SDS server)";
        return NULL;
    }
    const char *n = spec_str(sds, "secretName");
    if (n != NULL && n[0] != '\0') {
        return astr(a, "%s", n);
    }
    char buf[1024];
    if (ca) {
        translate_bundle_name(buf, sizeof(buf), t->m->trust_domain);
    } else {
        translate_proxy_spiffe_id(buf, sizeof(buf), t->m->trust_domain, t->m->mesh,
                                  t->gateway ? TR_VIRTUAL_GATEWAY : TR_VIRTUAL_NODE, t->vnode);
    }
    return astr(a, "%s", buf);
}

/* App Mesh `certificate` / `validation` -> a CommonTlsContext; NULL with *why when a source is
 * not translatable (acm, or sds without a CA): the caller fails closed. */
static CommonTls *common_tls(struct tr *t, struct arena *a, json_t *cert, json_t *val,
                             const char **why)
{
    CommonTls *c =
        NEW(a, CommonTls, ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__INIT);
    if (cert != NULL) {
        json_t *f = json_object_get(cert, "file");
        json_t *sds = json_object_get(cert, "sds");
        if (f != NULL) {
            const char *chain = spec_str(f, "certificateChain");
            const char *key = spec_str(f, "privateKey");
            if (chain == NULL || key == NULL) {
                *why = "certificate.file needs certificateChain and privateKey";
                return NULL;
            }
            TlsCertificate *tc =
                NEW(a, TlsCertificate,
                    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT);
            tc->certificate_chain = file_source(a, chain);
            tc->private_key = file_source(a, key);
            c->n_tls_certificates = 1;
            c->tls_certificates = ARR(a, TlsCertificate, 1);
            c->tls_certificates[0] = tc;
        } else if (sds != NULL) {
            const char *n = sds_name(t, a, sds, false, why);
            if (n == NULL) {
                return NULL;
            }
            c->n_tls_certificate_sds_secret_configs = 1;
            c->tls_certificate_sds_secret_configs = ARR(a, SdsSecretConfig, 1);
            c->tls_certificate_sds_secret_configs[0] = sds_ref(t, a, n, false);
        } else {
            *why = "certificate.acm is not supported (remora-xds has no ACM)";
            return NULL;
        }
    }
    if (val == NULL) {
        return c;
    }
    json_t *trust = json_object_get(val, "trust");
    json_t *exact = json_object_get(
        json_object_get(json_object_get(val, "subjectAlternativeNames"), "match"), "exact");
    Validation *v =
        NEW(a, Validation,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT);
    size_t n_san = json_array_size(exact);
    if (n_san > 0) {
        v->n_match_typed_subject_alt_names = n_san;
        v->match_typed_subject_alt_names = ARR(a, SanMatcher, n_san);
        for (size_t i = 0; i < n_san; i++) {
            const char *s = json_string_value(json_array_get(exact, i));
            SanMatcher *m =
                NEW(a, SanMatcher,
                    ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__INIT);
            /* App Mesh matches any SAN type; SPIFFE IDs are URIs, the rest DNS names. */
            m->san_type =
                s != NULL && strncmp(s, "spiffe://", 9) == 0
                    ? ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI
                    : ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__DNS;
            m->matcher = NEW(a, StringMatcher, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
            m->matcher->match_pattern_case =
                ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
            m->matcher->exact = astr(a, "%s", s != NULL ? s : "");
            v->match_typed_subject_alt_names[i] = m;
        }
    }
    json_t *tf = json_object_get(trust, "file");
    json_t *ts = json_object_get(trust, "sds");
    if (tf != NULL) {
        const char *chain = spec_str(tf, "certificateChain");
        if (chain == NULL) {
            *why = "validation.trust.file needs certificateChain";
            return NULL;
        }
        v->trusted_ca = file_source(a, chain);
        c->validation_context_type_case =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT;
        c->validation_context = v;
    } else if (ts != NULL) {
        const char *n = sds_name(t, a, ts, true, why);
        if (n == NULL) {
            return NULL;
        }
        if (n_san == 0) {
            c->validation_context_type_case =
                ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_VALIDATION_CONTEXT_SDS_SECRET_CONFIG;
            c->validation_context_sds_secret_config = sds_ref(t, a, n, true);
            return c;
        }
        /* the trust bundle over SDS, the SAN matchers beside it (as App Mesh's Envoy config) */
        CombinedValidation *cv = NEW(
            a, CombinedValidation,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__COMBINED_CERTIFICATE_VALIDATION_CONTEXT__INIT);
        cv->default_validation_context = v;
        cv->validation_context_sds_secret_config = sds_ref(t, a, n, true);
        c->validation_context_type_case =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT;
        c->combined_validation_context = cv;
    } else {
        *why = "validation.trust.acm is not supported (remora-xds has no ACM)";
        return NULL;
    }
    return c;
}

static TransportSocket *tls_socket(struct arena *a, const char *url, const ProtobufCMessage *m)
{
    TransportSocket *s = NEW(a, TransportSocket, ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__INIT);
    s->name = (char *)TLS_SOCKET;
    s->config_type_case = ENVOY__CONFIG__CORE__V3__TRANSPORT_SOCKET__CONFIG_TYPE_TYPED_CONFIG;
    s->typed_config = pack_any(a, url, m);
    return s;
}

/* App Mesh's ALPN on its TLS contexts: h2 then http/1.1. */
static char *const alpn_h2_h1[] = {(char *)"h2", (char *)"http/1.1"};
static char *const alpn_h2[] = {(char *)"h2"};
static char *const alpn_h1[] = {(char *)"http/1.1"};

/* A listener's `tls` -> the ingress chain's DownstreamTlsContext; NULL with *why. An HTTP
 * listener (`proto` http, http2, grpc) offers ALPN h2 and http/1.1, as App Mesh's Envoy: a
 * client choosing h2 gets HTTP/2 (AUTO connection managers follow ALPN; an http2 or grpc
 * listener needs it), one choosing http/1.1 HTTP/1.1; a tcp listener none (it is not
 * HTTP). */
static TransportSocket *listener_tls(struct tr *t, struct arena *a, json_t *tls, const char *proto,
                                     const char **why)
{
    json_t *cert = json_object_get(tls, "certificate");
    if (cert == NULL) {
        *why = "no certificate";
        return NULL;
    }
    json_t *val = json_object_get(tls, "validation");
    CommonTls *c = common_tls(t, a, cert, val, why);
    if (c == NULL) {
        return NULL;
    }
    if (proto != NULL && strcmp(proto, "tcp") != 0) {
        c->n_alpn_protocols = 2;
        c->alpn_protocols = (char **)alpn_h2_h1;
    }
    DownstreamTls *d =
        NEW(a, DownstreamTls,
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__DOWNSTREAM_TLS_CONTEXT__INIT);
    d->common_tls_context = c;
    if (val != NULL) {
        /* App Mesh: a listener with validation requires client certificates (mutual TLS) */
        d->require_client_certificate =
            NEW(a, Google__Protobuf__BoolValue, GOOGLE__PROTOBUF__BOOL_VALUE__INIT);
        d->require_client_certificate->value = true;
    }
    return tls_socket(a, DOWNSTREAM_TLS_URL, &d->base);
}

/* A client policy's `tls` -> the egress clusters' UpstreamTlsContext; NULL (and *why NULL) when
 * it is not enforced, NULL with *why when it cannot be translated (fail closed). ALPN offers
 * the cluster's own protocol (`proto`): h2 for http2 and grpc, http/1.1 for http, none for tcp.
 * Not App Mesh's h2,http/1.1: an HTTP/1.1 cluster speaks HTTP/1.1 whatever ALPN chose, so
 * offering h2 to a server that prefers it (remora's or Envoy's AUTO listener with App Mesh's
 * ALPN) would start HTTP/2 there and break the connection. */
static TransportSocket *client_tls(struct tr *t, struct arena *a, json_t *tls, const char *proto,
                                   const char **why)
{
    *why = NULL;
    json_t *enforce = json_object_get(tls, "enforce");
    if (tls == NULL || (enforce != NULL && json_is_false(enforce))) {
        return NULL;
    }
    json_t *val = json_object_get(tls, "validation");
    if (val == NULL) {
        *why = "client policy tls needs validation";
        return NULL;
    }
    CommonTls *c = common_tls(t, a, json_object_get(tls, "certificate"), val, why);
    if (c == NULL) {
        return NULL;
    }
    if (proto_h2(proto)) {
        c->n_alpn_protocols = 1;
        c->alpn_protocols = (char **)alpn_h2;
    } else if (proto != NULL && strcmp(proto, "http") == 0) {
        c->n_alpn_protocols = 1;
        c->alpn_protocols = (char **)alpn_h1;
    }
    UpstreamTls *u = NEW(a, UpstreamTls,
                         ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__UPSTREAM_TLS_CONTEXT__INIT);
    u->common_tls_context = c;
    return tls_socket(a, UPSTREAM_TLS_URL, &u->base);
}

static OutlierDetection *outlier(struct arena *a, json_t *od)
{
    if (!json_is_object(od)) {
        return NULL;
    }
    OutlierDetection *o =
        NEW(a, OutlierDetection, ENVOY__CONFIG__CLUSTER__V3__OUTLIER_DETECTION__INIT);
    json_t *mse = json_object_get(od, "maxServerErrors");
    if (json_is_integer(mse)) {
        o->consecutive_5xx = u32(a, (uint32_t)json_integer_value(mse));
        o->enforcing_consecutive_5xx = u32(a, 100);
    }
    o->interval = duration(a, json_object_get(od, "interval"));
    o->base_ejection_time = duration(a, json_object_get(od, "baseEjectionDuration"));
    json_t *mep = json_object_get(od, "maxEjectionPercent");
    if (json_is_integer(mep)) {
        o->max_ejection_percent = u32(a, (uint32_t)json_integer_value(mep));
    }
    return o;
}

/* App Mesh's Envoy thresholds where no connectionPool sets one: 2147483647 each, "effectively
 * disabling" Envoy's circuit breakers (1024 connections, pending and requests, 3 retries), on
 * every cluster of every Envoy it configures (its user guide, "Envoy defaults set by App Mesh";
 * aws-app-mesh-roadmap#229). */
#define APPMESH_BREAKER_MAX 2147483647u

/* A connectionPool (`cp`) as circuit breakers: one DEFAULT threshold. Flavour A: only what the
 * pool sets (NULL without a pool). Flavour B: App Mesh's 2147483647 for each threshold, the
 * pool's values over them (never NULL). `owner` names the pool's node or gateway in logs. */
static CircuitBreakers *breakers(const struct tr *t, const char *owner, struct arena *a, json_t *cp)
{
    Thresholds *th =
        NEW(a, Thresholds, ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__THRESHOLDS__INIT);
    bool any = false;
    if (t->sidecar) {
        th->max_connections = u32(a, APPMESH_BREAKER_MAX);
        th->max_pending_requests = u32(a, APPMESH_BREAKER_MAX);
        th->max_requests = u32(a, APPMESH_BREAKER_MAX);
        th->max_retries = u32(a, APPMESH_BREAKER_MAX);
    }
    const char *kinds[] = {"grpc", "http2", "http", "tcp"};
    for (size_t k = 0; k < 4 && json_is_object(cp); k++) {
        json_t *c = json_object_get(cp, kinds[k]);
        if (!json_is_object(c)) {
            continue;
        }
        json_t *v;
        if ((v = json_object_get(c, "maxRequests")) != NULL && json_is_integer(v)) {
            th->max_requests = u32(a, (uint32_t)json_integer_value(v));
            any = true;
        }
        if ((v = json_object_get(c, "maxConnections")) != NULL && json_is_integer(v)) {
            th->max_connections = u32(a, (uint32_t)json_integer_value(v));
            any = true;
        }
        if ((v = json_object_get(c, "maxPendingRequests")) != NULL && json_is_integer(v)) {
            th->max_pending_requests = u32(a, (uint32_t)json_integer_value(v));
            any = true;
        }
    }
    if (json_is_object(cp) && !any) {
        unsupported(t, t->gateway ? "virtualGateway" : "virtualNode", owner,
                    "an empty connectionPool");
    }
    if (!any && !t->sidecar) {
        return NULL;
    }
    CircuitBreakers *cb =
        NEW(a, CircuitBreakers, ENVOY__CONFIG__CLUSTER__V3__CIRCUIT_BREAKERS__INIT);
    cb->n_thresholds = 1;
    cb->thresholds = ARR(a, Thresholds, 1);
    cb->thresholds[0] = th;
    return cb;
}

typedef Envoy__Config__Core__V3__HealthCheck HealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__HttpHealthCheck HttpHealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__TcpHealthCheck TcpHealthCheck;
typedef Envoy__Config__Core__V3__HealthCheck__GrpcHealthCheck GrpcHealthCheck;
typedef Envoy__Config__Endpoint__V3__Endpoint__HealthCheckConfig HealthCheckConfig;
typedef Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry ProtoOptsEntry;
typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions HttpProtocolOptions;
typedef Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig
    ExplicitHttpConfig;
typedef Envoy__Config__Core__V3__Http2ProtocolOptions Http2ProtocolOptions;
#define HPO_NAME "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

static bool proto_h2(const char *protocol)
{
    return protocol != NULL && (strcmp(protocol, "http2") == 0 || strcmp(protocol, "grpc") == 0);
}

/* Sidecar clusters of an http2 or grpc listener speak HTTP/2 upstream (Envoy's explicit
 * HttpProtocolOptions); gRPC clients need no such thing. */
static void cluster_h2(struct arena *a, Cluster *c)
{
    HttpProtocolOptions *hpo =
        NEW(a, HttpProtocolOptions,
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__INIT);
    hpo->upstream_protocol_options_case =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG;
    hpo->explicit_http_config = NEW(
        a, ExplicitHttpConfig,
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__INIT);
    hpo->explicit_http_config->protocol_config_case =
        ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS;
    hpo->explicit_http_config->http2_protocol_options =
        NEW(a, Http2ProtocolOptions, ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT);
    ProtoOptsEntry *e =
        NEW(a, ProtoOptsEntry,
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__TYPED_EXTENSION_PROTOCOL_OPTIONS_ENTRY__INIT);
    e->key = (char *)HPO_NAME;
    e->value = pack_any(a, TU HPO_NAME, &hpo->base);
    c->n_typed_extension_protocol_options = 1;
    c->typed_extension_protocol_options = ARR(a, ProtoOptsEntry, 1);
    c->typed_extension_protocol_options[0] = e;
}

static Duration *millis(struct arena *a, json_t *v)
{
    if (!json_is_integer(v)) {
        return NULL;
    }
    Duration *d = NEW(a, Duration, GOOGLE__PROTOBUF__DURATION__INIT);
    d->seconds = json_integer_value(v) / 1000;
    d->nanos = (int32_t)((json_integer_value(v) % 1000) * 1000000);
    return d;
}

/* A listener's healthCheck as an Envoy health check of the clusters that reach it (sidecar
 * flavour and the gateways' egress clusters), or NULL (logged) for a protocol App Mesh does not
 * define. http: an HTTP/1.1 GET of `path`; http2: the same over HTTP/2 (codec_client_type
 * HTTP2); grpc: the gRPC Health Checking Protocol (grpc_health_check, no service_name: the
 * server as a whole, as App Mesh's Envoy checks); tcp: connect-only. A `port` other than the
 * listener's goes in *hc_port (the endpoints' health_check_config.port_value, Envoy's way to
 * check another port than the traffic's); 0 otherwise. */
static HealthCheck *health_check(const struct tr *t, const struct tr_item *vn, struct arena *a,
                                 json_t *hc, long port, uint32_t *hc_port)
{
    *hc_port = 0;
    if (!json_is_object(hc)) {
        return NULL;
    }
    const char *proto = spec_str(hc, "protocol");
    if (proto == NULL || (strcmp(proto, "http") != 0 && strcmp(proto, "http2") != 0 &&
                          strcmp(proto, "grpc") != 0 && strcmp(proto, "tcp") != 0)) {
        unsupported(t, "virtualNode", vn->name,
                    "a healthCheck protocol other than http, http2, "
                    "grpc or tcp");
        return NULL;
    }
    json_t *hp = json_object_get(hc, "port");
    if (json_is_integer(hp) && json_integer_value(hp) != port) {
        json_int_t v = json_integer_value(hp);
        if (v < 1 || v > 65535) {
            unsupported(t, "virtualNode", vn->name, "a healthCheck.port out of 1-65535");
            return NULL;
        }
        *hc_port = (uint32_t)v;
    }
    HealthCheck *h = NEW(a, HealthCheck, ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__INIT);
    h->timeout = millis(a, json_object_get(hc, "timeoutMillis"));
    h->interval = millis(a, json_object_get(hc, "intervalMillis"));
    h->healthy_threshold =
        u32(a, (uint32_t)json_integer_value(json_object_get(hc, "healthyThreshold")));
    h->unhealthy_threshold =
        u32(a, (uint32_t)json_integer_value(json_object_get(hc, "unhealthyThreshold")));
    if (strcmp(proto, "http") == 0 || strcmp(proto, "http2") == 0) {
        const char *path = spec_str(hc, "path");
        h->health_checker_case =
            ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_HTTP_HEALTH_CHECK;
        h->http_health_check =
            NEW(a, HttpHealthCheck, ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HTTP_HEALTH_CHECK__INIT);
        h->http_health_check->path = astr(a, "%s", path != NULL ? path : "/");
        if (strcmp(proto, "http2") == 0) {
            h->http_health_check->codec_client_type = ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2;
        }
    } else if (strcmp(proto, "grpc") == 0) {
        h->health_checker_case =
            ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK;
        h->grpc_health_check =
            NEW(a, GrpcHealthCheck, ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__GRPC_HEALTH_CHECK__INIT);
    } else {
        h->health_checker_case =
            ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK;
        h->tcp_health_check =
            NEW(a, TcpHealthCheck, ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__TCP_HEALTH_CHECK__INIT);
    }
    if (h->timeout == NULL || h->interval == NULL) {
        unsupported(t, "virtualNode", vn->name,
                    "a healthCheck without timeoutMillis/intervalMillis");
        *hc_port = 0;
        return NULL;
    }
    return h;
}

/* App Mesh's ipPreference of virtual node `vn`: its service discovery's (dns or awsCloudMap),
 * else the mesh's serviceDiscovery.ipPreference, else NULL (none). */
static const char *ip_preference(const struct tr *t, const struct tr_item *vn)
{
    json_t *sd = json_object_get(vn->spec, "serviceDiscovery");
    const char *p = spec_str(json_object_get(sd, "dns"), "ipPreference");
    if (p == NULL) {
        p = spec_str(json_object_get(sd, "awsCloudMap"), "ipPreference");
    }
    if (p == NULL) {
        p = spec_str(json_object_get(t->m->mesh_spec, "serviceDiscovery"), "ipPreference");
    }
    return p;
}

/* Whether the node's Envoy sends to its local app over IPv6 (::1): App Mesh's IPv6_PREFERRED
 * and IPv6_ONLY; IPv4 (127.0.0.1) otherwise, and without a preference. */
static bool local_app_v6(const struct tr *t, const struct tr_item *vn)
{
    const char *p = ip_preference(t, vn);
    return p != NULL && strncmp(p, "IPv6_", 5) == 0;
}

/* `addrs` (n) filtered as Envoy's dns_lookup_family, which App Mesh sets from the node's
 * ipPreference: *_ONLY keeps that family; *_PREFERRED that family's addresses when there are
 * any, else the other's. Without a preference App Mesh's DNS resolver prefers IPv6 (its API:
 * "prefer using IPv6 and fall back to IPv4"). The order within a family is the resolver's. */
static size_t by_ip_preference(const char *pref, char addrs[][TR_ADDR_MAX], size_t n)
{
    bool only = pref != NULL && strstr(pref, "_ONLY") != NULL;
    bool v6 = pref == NULL || strncmp(pref, "IPv6_", 5) == 0;
    size_t n_want = 0;
    for (size_t i = 0; i < n; i++) {
        n_want += (strchr(addrs[i], ':') != NULL) == v6;
    }
    if (n_want == 0 && !only) {
        return n; /* the other family's (all there is) */
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if ((strchr(addrs[i], ':') != NULL) == v6) {
            memmove(addrs[w++], addrs[i], TR_ADDR_MAX);
        }
    }
    return w;
}

/* The addresses of virtual node `vn`'s endpoints (its DNS hostname's; none for Cloud Map):
 * filtered by its ipPreference; with responseType LOADBALANCER (App Mesh's default: the name
 * is a load balancer, which App Mesh's Envoy resolved as a LOGICAL_DNS cluster, one address
 * at a time) the first of them, with ENDPOINTS all of them. */
static size_t vnode_addrs(struct tr *t, const struct tr_item *vn, char addrs[][TR_ADDR_MAX])
{
    size_t n_addrs = 0;
    json_t *sd = json_object_get(vn->spec, "serviceDiscovery");
    json_t *dns = json_object_get(sd, "dns");
    if (json_is_object(dns)) {
        const char *host = spec_str(dns, "hostname");
        const char *pref = ip_preference(t, vn);
        if (host != NULL) {
            size_t found = t->resolve(t->arg, host, addrs, TR_ADDRS_MAX);
            n_addrs = by_ip_preference(pref, addrs, found);
            if (found == 0) {
                LOG_W("xds: mesh %s: virtualNode %s: %s does not resolve: no endpoints", t->m->mesh,
                      vn->name, host);
            } else if (n_addrs == 0) {
                LOG_W("xds: mesh %s: virtualNode %s: %s has no address of ipPreference %s: no "
                      "endpoints",
                      t->m->mesh, vn->name, host, pref);
            }
        }
        const char *rt = spec_str(dns, "responseType");
        if (n_addrs > 1 && (rt == NULL || strcmp(rt, "ENDPOINTS") != 0)) {
            n_addrs = 1;
        }
    } else if (json_object_get(sd, "awsCloudMap") != NULL) {
        unsupported(t, "virtualNode", vn->name,
                    "serviceDiscovery.awsCloudMap (no Cloud Map here): no endpoints");
    }
    return n_addrs;
}

/* A ClusterLoadAssignment of `name`: `addrs` on `port`, in one locality (App Mesh has none: an
 * empty one) of weight 1 (gRPC drops a locality without a weight, xds-wire.md §9). `hc_port`
 * (0: none) is every endpoint's health_check_config.port_value. */
static Cla *load_assignment(struct arena *a, const char *name, char addrs[][TR_ADDR_MAX],
                            size_t n_addrs, uint32_t port, uint32_t hc_port)
{
    Cla *cla = NEW(a, Cla, ENVOY__CONFIG__ENDPOINT__V3__CLUSTER_LOAD_ASSIGNMENT__INIT);
    cla->cluster_name = (char *)name;
    if (n_addrs == 0) {
        return cla;
    }
    LocalityLbEndpoints *lle =
        NEW(a, LocalityLbEndpoints, ENVOY__CONFIG__ENDPOINT__V3__LOCALITY_LB_ENDPOINTS__INIT);
    lle->locality = NEW(a, Locality, ENVOY__CONFIG__CORE__V3__LOCALITY__INIT);
    lle->load_balancing_weight = u32(a, 1);
    lle->n_lb_endpoints = n_addrs;
    lle->lb_endpoints = ARR(a, LbEndpoint, n_addrs);
    for (size_t i = 0; i < n_addrs; i++) {
        LbEndpoint *le = NEW(a, LbEndpoint, ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__INIT);
        le->host_identifier_case =
            ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT;
        le->endpoint = NEW(a, Endpoint, ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__INIT);
        Address *ad = NEW(a, Address, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
        ad->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
        SocketAddress *sa = NEW(a, SocketAddress, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT);
        sa->address = astr(a, "%s", addrs[i]);
        sa->port_specifier_case =
            ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
        sa->port_value = port;
        ad->socket_address = sa;
        le->endpoint->address = ad;
        if (hc_port != 0) {
            le->endpoint->health_check_config =
                NEW(a, HealthCheckConfig,
                    ENVOY__CONFIG__ENDPOINT__V3__ENDPOINT__HEALTH_CHECK_CONFIG__INIT);
            le->endpoint->health_check_config->port_value = hc_port;
        }
        lle->lb_endpoints[i] = le;
    }
    cla->n_endpoints = 1;
    cla->endpoints = ARR(a, LocalityLbEndpoints, 1);
    cla->endpoints[0] = lle;
    return cla;
}

/* The egress clusters of virtual node `vn` (one per listener, EDS over ADS) and their
 * endpoints. gRPC flavour: the listener's connectionPool as circuit breakers (the client is the
 * only place to apply it). Sidecar flavour: HTTP/2 upstream for http2/grpc listeners, the
 * listener's healthCheck as a health check, App Mesh's client-side circuit breakers; its
 * connectionPool belongs to the target's own sidecar (its ingress cluster), as in App Mesh. */
/* The clusters (and assignments) of virtual node `vn`'s listeners. `client_tls` (flavour B): the
 * client policy tls of the backend that reaches it (App Mesh: backend, else backendDefaults),
 * or NULL: its UpstreamTlsContext goes on every cluster; one that cannot be translated leaves
 * the clusters out (fail closed: no plaintext where the policy asks for TLS), except without a
 * CA, where remora-xds keeps its former behaviour (plaintext, logged). */
static void vnode_resources(struct tr *t, const struct tr_item *vn, json_t *ctls)
{
    const char *mesh = t->m->mesh;
    json_t *spec = vn->spec;
    struct arena ta = {0};
    const char *why = NULL;
    /* whether the policy translates (per cluster below, with the cluster's ALPN) */
    bool use_tls = ctls != NULL && client_tls(t, &ta, ctls, NULL, &why) != NULL;
    if (why != NULL && t->m->trust_domain == NULL) {
        LOG_W("xds: mesh %s: virtualNode %s: client policy tls to %s is not translated (%s): "
              "its clusters stay plaintext",
              mesh, t->vnode, vn->name, why);
        why = NULL;
    } else if (why != NULL) {
        LOG_E("xds: mesh %s: virtualNode %s: client policy tls to %s cannot be translated (%s): "
              "its clusters are left out rather than used in plaintext",
              mesh, t->vnode, vn->name, why);
        arena_free(&ta);
        return;
    }
    if (!t->sidecar) {
        static const char *const ignored[] = {"backends", "backendDefaults", "logging"};
        for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
            if (json_object_get(spec, ignored[i]) != NULL) {
                unsupported(t, "virtualNode", vn->name, ignored[i]);
            }
        }
    }
    char addrs[TR_ADDRS_MAX][TR_ADDR_MAX];
    size_t n_addrs = vnode_addrs(t, vn, addrs);

    json_t *ls = json_object_get(spec, "listeners");
    size_t li;
    json_t *l;
    json_array_foreach(ls, li, l)
    {
        struct arena a = {0};
        json_t *pm = json_object_get(l, "portMapping");
        uint32_t port = (uint32_t)json_integer_value(json_object_get(pm, "port"));
        char *name = listener_cluster(&a, mesh, vn, l);
        if (!t->sidecar) {
            static const char *const l_ignored[] = {"tls", "healthCheck", "timeout"};
            for (size_t i = 0; i < sizeof(l_ignored) / sizeof(l_ignored[0]); i++) {
                if (json_object_get(l, l_ignored[i]) != NULL) {
                    unsupported(t, "virtualNode", vn->name, l_ignored[i]);
                }
            }
        }

        uint32_t hc_port = 0;
        Cluster *c = NEW(&a, Cluster, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
        c->name = name;
        c->cluster_discovery_type_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
        c->eds_cluster_config = NEW(&a, EdsClusterConfig,
                                    ENVOY__CONFIG__CLUSTER__V3__CLUSTER__EDS_CLUSTER_CONFIG__INIT);
        c->eds_cluster_config->eds_config = ads_source(&a);
        c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN;
        c->outlier_detection = outlier(&a, json_object_get(l, "outlierDetection"));
        if (t->sidecar) {
            const char *why2 = NULL;
            c->transport_socket =
                use_tls ? client_tls(t, &a, ctls, spec_str(pm, "protocol"), &why2) : NULL;
            if (proto_h2(spec_str(pm, "protocol"))) {
                cluster_h2(&a, c);
            }
            /* App Mesh's thresholds; a gateway's connectionPool applies to what it sends
             * upstream, a node's to its own local app (its ingress cluster), not here. */
            c->circuit_breakers =
                breakers(t, t->gateway ? t->gw->name : NULL, &a, t->gateway ? t->gw_pool : NULL);
            HealthCheck *h =
                health_check(t, vn, &a, json_object_get(l, "healthCheck"), port, &hc_port);
            if (h != NULL) {
                c->n_health_checks = 1;
                c->health_checks = ARR(&a, HealthCheck, 1);
                c->health_checks[0] = h;
            }
        } else {
            c->circuit_breakers = breakers(t, vn->name, &a, json_object_get(l, "connectionPool"));
        }
        emit(&t->out[XDS_CDS], name, &c->base);
        Cla *cla = load_assignment(&a, name, addrs, n_addrs, port, hc_port);
        emit(&t->out[XDS_EDS], name, &cla->base);
        arena_free(&a);
    }
    arena_free(&ta);
}

/* ---- routes --------------------------------------------------------------------------------- */

/* A header (or gRPC metadata) matcher from App Mesh's {name, invert, match{...}}. */
static HeaderMatcher *header_matcher(struct arena *a, json_t *h)
{
    HeaderMatcher *hm = NEW(a, HeaderMatcher, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    hm->name = astr(a, "%s", spec_str(h, "name"));
    hm->invert_match = json_is_true(json_object_get(h, "invert"));
    json_t *m = json_object_get(h, "match");
    const char *s;
    json_t *range;
    if (!json_is_object(m)) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
        hm->present_match = true;
    } else if ((s = spec_str(m, "exact")) != NULL) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH;
        hm->exact_match = astr(a, "%s", s);
    } else if ((s = spec_str(m, "prefix")) != NULL) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH;
        hm->prefix_match = astr(a, "%s", s);
    } else if ((s = spec_str(m, "suffix")) != NULL) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH;
        hm->suffix_match = astr(a, "%s", s);
    } else if ((s = spec_str(m, "regex")) != NULL) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH;
        hm->safe_regex_match = NEW(a, RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
        hm->safe_regex_match->regex = astr(a, "%s", s);
    } else if ((range = json_object_get(m, "range")) != NULL) {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH;
        hm->range_match = NEW(a, Int64Range, ENVOY__TYPE__V3__INT64_RANGE__INIT);
        hm->range_match->start = json_integer_value(json_object_get(range, "start"));
        hm->range_match->end = json_integer_value(json_object_get(range, "end"));
    } else {
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH;
        hm->present_match = true;
    }
    return hm;
}

/* Retry events: gRPC's names as they are; HTTP's and TCP's as App Mesh's Envoy maps them
 * (gRPC clients drop the names they do not know, xds-wire.md §9). server-error is App Mesh's
 * list of codes, not Envoy's 5xx (which adds 509, 512-599, connect failures and refused
 * streams): retriable-status-codes with SERVER_ERROR_CODES, plus reset, which the API reference
 * says server-error and gateway-error include (aws-app-mesh-roadmap#284). */
static const uint32_t SERVER_ERROR_CODES[] = {500, 501, 502, 503, 504, 505,
                                              506, 507, 508, 510, 511};

static const char *http_event(const char *e)
{
    if (strcmp(e, "server-error") == 0) {
        return "retriable-status-codes,reset";
    }
    if (strcmp(e, "gateway-error") == 0) {
        return "gateway-error";
    }
    if (strcmp(e, "client-error") == 0) {
        return "retriable-4xx";
    }
    if (strcmp(e, "stream-error") == 0) {
        return "refused-stream";
    }
    return NULL;
}

static RetryPolicy *retry_policy(const struct tr *t, const char *route, struct arena *a, json_t *rp)
{
    if (!json_is_object(rp)) {
        return NULL;
    }
    json_int_t max = json_integer_value(json_object_get(rp, "maxRetries"));
    if (max <= 0) {
        /* gRPC NACKs num_retries 0: no policy is the same thing. */
        return NULL;
    }
    char on[512] = "";
    size_t len = 0;
    bool server_error = false;
    const char *lists[] = {"grpcRetryEvents", "httpRetryEvents", "tcpRetryEvents"};
    for (size_t k = 0; k < 3; k++) {
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(rp, lists[k]), i, e)
        {
            const char *s = json_string_value(e);
            const char *name = s;
            if (k == 1) {
                name = http_event(s);
                server_error |= s != NULL && strcmp(s, "server-error") == 0;
            } else if (k == 2) {
                name = strcmp(s, "connection-error") == 0 ? "connect-failure" : NULL;
            }
            if (name == NULL) {
                unsupported(t, "route", route, "a retry event");
                continue;
            }
            if (strstr(on, name) == NULL && len + strlen(name) + 2 < sizeof(on)) {
                len += (size_t)snprintf(on + len, sizeof(on) - len, "%s%s", len ? "," : "", name);
            }
        }
    }
    if (len == 0) {
        return NULL;
    }
    RetryPolicy *r = NEW(a, RetryPolicy, ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__INIT);
    r->retry_on = astr(a, "%s", on);
    r->num_retries = u32(a, (uint32_t)max);
    r->per_try_timeout = duration(a, json_object_get(rp, "perRetryTimeout"));
    if (server_error) {
        size_t n = sizeof(SERVER_ERROR_CODES) / sizeof(SERVER_ERROR_CODES[0]);
        r->n_retriable_status_codes = n;
        r->retriable_status_codes = arena_alloc(a, sizeof(*r->retriable_status_codes) * n);
        memcpy(r->retriable_status_codes, SERVER_ERROR_CODES, sizeof(SERVER_ERROR_CODES));
    }
    return r;
}

typedef Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate RetryHostPredicate;
typedef Envoy__Extensions__Retry__Host__PreviousHosts__V3__PreviousHostsPredicate PreviousHosts;
#define PREVIOUS_HOSTS_URL TU "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

/* App Mesh's default retry policy (flavour B), which its Envoy got on every route App Mesh
 * made (a route's, or a virtual node provider's) whose App Mesh route has no retryPolicy: 2
 * retries on gRPC UNAVAILABLE, connect failures, refused streams and 503, to another host
 * (previous_hosts, 5 host selection attempts), no per-try timeout (user guide "Envoy defaults set
 * by App Mesh"; the config in aws-app-mesh-roadmap#229). */
static RetryPolicy *default_retry_policy(struct arena *a)
{
    RetryPolicy *r = NEW(a, RetryPolicy, ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__INIT);
    r->retry_on = (char *)"unavailable,connect-failure,refused-stream,retriable-status-codes";
    r->num_retries = u32(a, 2);
    r->n_retriable_status_codes = 1;
    r->retriable_status_codes = arena_alloc(a, sizeof(*r->retriable_status_codes));
    r->retriable_status_codes[0] = 503;
    r->host_selection_retry_max_attempts = 5;
    RetryHostPredicate *hp = NEW(
        a, RetryHostPredicate, ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__INIT);
    hp->name = (char *)"envoy.retry_host_predicates.previous_hosts";
    hp->config_type_case =
        ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__CONFIG_TYPE_TYPED_CONFIG;
    PreviousHosts *ph =
        NEW(a, PreviousHosts,
            ENVOY__EXTENSIONS__RETRY__HOST__PREVIOUS_HOSTS__V3__PREVIOUS_HOSTS_PREDICATE__INIT);
    hp->typed_config = pack_any(a, PREVIOUS_HOSTS_URL, &ph->base);
    r->n_retry_host_predicate = 1;
    r->retry_host_predicate = ARR(a, RetryHostPredicate, 1);
    r->retry_host_predicate[0] = hp;
    return r;
}

struct route_in {
    const struct tr_item *item;
    const char *kind; /* httpRoute, http2Route, grpcRoute, tcpRoute */
    json_t *body;
    long priority;
};

static int route_cmp(const void *x, const void *y)
{
    const struct route_in *a = x, *b = y;
    if (a->priority != b->priority) {
        return a->priority < b->priority ? -1 : 1;
    }
    return strcmp(a->item->name, b->item->name);
}

typedef Envoy__Config__Route__V3__QueryParameterMatcher QueryParameterMatcher;
typedef Envoy__Type__Matcher__V3__StringMatcher StringMatcher;

/* Sidecar flavour: what Envoy can match and gRPC cannot. `method` -> a `:method` header
 * matcher (first), `queryParameters[]` {name, match.exact} -> query_parameters (string_match
 * exact; without a match: present). */
static void sidecar_match_extras(struct arena *a, RouteMatch *m, json_t *match, const char *method)
{
    if (method != NULL) {
        HeaderMatcher *hm = NEW(a, HeaderMatcher, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
        hm->name = (char *)":method";
        hm->header_match_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH;
        hm->exact_match = astr(a, "%s", method);
        m->headers = ARR(a, HeaderMatcher, 1);
        m->headers[0] = hm;
        m->n_headers = 1;
    }
    json_t *qps = json_object_get(match, "queryParameters");
    size_t nq = json_array_size(qps);
    if (nq == 0) {
        return;
    }
    m->n_query_parameters = nq;
    m->query_parameters = ARR(a, QueryParameterMatcher, nq);
    for (size_t i = 0; i < nq; i++) {
        json_t *q = json_array_get(qps, i);
        QueryParameterMatcher *qm =
            NEW(a, QueryParameterMatcher, ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__INIT);
        qm->name = astr(a, "%s", spec_str(q, "name"));
        const char *exact = spec_str(json_object_get(q, "match"), "exact");
        if (exact != NULL) {
            qm->query_parameter_match_specifier_case =
                ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH;
            qm->string_match =
                NEW(a, StringMatcher, ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__INIT);
            qm->string_match->match_pattern_case =
                ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT;
            qm->string_match->exact = astr(a, "%s", exact);
        } else {
            qm->query_parameter_match_specifier_case =
                ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_PRESENT_MATCH;
            qm->present_match = true;
        }
        m->query_parameters[i] = qm;
    }
}

/* Translates one App Mesh route (http, http2 or grpc) into an Envoy Route, or NULL (logged). */
static Route *route(struct tr *t, struct arena *a, const struct route_in *ri)
{
    const char *rname = ri->item->name;
    json_t *match = json_object_get(ri->body, "match");
    RouteMatch *m = NEW(a, RouteMatch, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    json_t *hdrs;
    if (strcmp(ri->kind, "grpcRoute") == 0) {
        const char *svc = spec_str(match, "serviceName");
        const char *meth = spec_str(match, "methodName");
        if (svc != NULL && meth != NULL) {
            m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH;
            m->path = astr(a, "/%s/%s", svc, meth);
        } else {
            m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
            m->prefix = svc != NULL ? astr(a, "/%s/", svc) : (char *)"";
        }
        hdrs = json_object_get(match, "metadata");
    } else {
        const char *prefix = spec_str(match, "prefix");
        json_t *path = json_object_get(match, "path");
        if (!t->sidecar && json_object_get(match, "queryParameters") != NULL) {
            /* A28: a route with query parameter matchers never matches for gRPC. */
            unsupported(t, "route", rname, "match.queryParameters (the route is left out)");
            return NULL;
        }
        const char *method = spec_str(match, "method");
        if (!t->sidecar && method != NULL && strcmp(method, "POST") != 0) {
            unsupported(t, "route", rname, "match.method other than POST (the route is left out)");
            return NULL;
        }
        if (t->sidecar) {
            sidecar_match_extras(a, m, match, method);
        }
        if (json_object_get(match, "scheme") != NULL) {
            unsupported(t, "route", rname, "match.scheme");
        }
        if (prefix != NULL) {
            m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
            /* App Mesh's "/" is everything: gRPC paths all start with '/'. */
            m->prefix = astr(a, "%s", prefix);
        } else if (spec_str(path, "exact") != NULL) {
            m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH;
            m->path = astr(a, "%s", spec_str(path, "exact"));
        } else if (spec_str(path, "regex") != NULL) {
            m->path_specifier_case =
                ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX;
            m->safe_regex = NEW(a, RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
            m->safe_regex->regex = astr(a, "%s", spec_str(path, "regex"));
        } else {
            m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
            m->prefix = (char *)"";
        }
        hdrs = json_object_get(match, "headers");
    }
    size_t nh = json_array_size(hdrs);
    if (nh > 0) {
        /* After a :method matcher the sidecar flavour may have put first. */
        HeaderMatcher **hv = ARR(a, HeaderMatcher, m->n_headers + nh);
        for (size_t i = 0; i < m->n_headers; i++) {
            hv[i] = m->headers[i];
        }
        for (size_t i = 0; i < nh; i++) {
            hv[m->n_headers + i] = header_matcher(a, json_array_get(hdrs, i));
        }
        m->headers = hv;
        m->n_headers += nh;
    }

    /* Action: the weighted targets with a weight above 0 (a weight of 0 gets no traffic, so
     * gRPC need not watch that cluster). */
    RouteAction *ra = NEW(a, RouteAction, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    json_t *targets = json_object_get(json_object_get(ri->body, "action"), "weightedTargets");
    size_t nt = json_array_size(targets), n = 0;
    ClusterWeight **cw = ARR(a, ClusterWeight, nt);
    uint32_t total = 0;
    for (size_t i = 0; i < nt; i++) {
        json_t *wt = json_array_get(targets, i);
        uint32_t w = (uint32_t)json_integer_value(json_object_get(wt, "weight"));
        const char *vname = spec_str(wt, "virtualNode");
        if (w == 0) {
            continue;
        }
        const struct tr_item *vn = find_item(t->m->vnodes, t->m->n_vnodes, vname);
        json_t *pj = json_object_get(wt, "port");
        json_t *l =
            vn ? vn_listener(vn, json_is_integer(pj) ? (long)json_integer_value(pj) : 0) : NULL;
        if (l == NULL) {
            LOG_W("xds: mesh %s: route %s: target %s has no such listener: left out", t->m->mesh,
                  rname, vname);
            continue;
        }
        cw[n] =
            NEW(a, ClusterWeight, ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
        cw[n]->name = listener_cluster(a, t->m->mesh, vn, l);
        cw[n]->weight = u32(a, w);
        total += w;
        n++;
    }
    if (n == 0) {
        LOG_W("xds: mesh %s: route %s: no target left: the route is left out", t->m->mesh, rname);
        return NULL;
    }
    if (n == 1) {
        ra->cluster_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
        ra->cluster = cw[0]->name;
    } else {
        ra->cluster_specifier_case =
            ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
        ra->weighted_clusters =
            NEW(a, WeightedCluster, ENVOY__CONFIG__ROUTE__V3__WEIGHTED_CLUSTER__INIT);
        ra->weighted_clusters->n_clusters = n;
        ra->weighted_clusters->clusters = cw;
        /* C-core assumes 100 when total_weight is unset (xds-wire.md §9); Envoy has it as
         * deprecated and sums the weights itself. */
        if (!t->sidecar) {
            ra->weighted_clusters->total_weight = u32(a, total);
        }
    }
    json_t *rp = json_object_get(ri->body, "retryPolicy");
    ra->retry_policy = retry_policy(t, rname, a, rp);
    if (t->sidecar && (rp == NULL || json_is_null(rp))) {
        ra->retry_policy = default_retry_policy(a);
    }
    json_t *to = json_object_get(ri->body, "timeout");
    Duration *per = duration(a, json_object_get(to, "perRequest"));
    if (per != NULL && t->sidecar) {
        ra->timeout = per;
    } else if (per != NULL) {
        /* gRPC ignores RouteAction.timeout and reads max_stream_duration; Envoy the former. */
        ra->timeout = per;
        ra->max_stream_duration =
            NEW(a, MaxStreamDuration,
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__MAX_STREAM_DURATION__INIT);
        ra->max_stream_duration->max_stream_duration = per;
    }
    ra->idle_timeout = duration(a, json_object_get(to, "idle"));

    Route *r = NEW(a, Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = astr(a, "%s", rname);
    r->match = m;
    r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    r->route = ra;
    return r;
}

/* The route of a virtual-node provider: everything to its listener's cluster (flavour B: with
 * App Mesh's default retry policy, the only one such a route can have). */
static Route *node_route(const struct tr *t, struct arena *a, const struct tr_item *vn, json_t *l)
{
    const char *mesh = t->m->mesh;
    RouteMatch *m = NEW(a, RouteMatch, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    m->prefix = (char *)"";
    RouteAction *ra = NEW(a, RouteAction, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    ra->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    ra->cluster = listener_cluster(a, mesh, vn, l);
    if (t->sidecar) {
        ra->retry_policy = default_retry_policy(a);
    }
    Route *r = NEW(a, Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = astr(a, "%s", vn->name);
    r->match = m;
    r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    r->route = ra;
    return r;
}

/* The routes of a virtual service on `port` (0: the bare name, whose routes are those with
 * no match.port or `only_port`): its node provider's one route, or its router's routes that
 * match the port (HTTP kinds only). */
static Route **service_routes(struct tr *t, struct arena *a, long port, long only_port,
                              const struct route_in *routes, size_t n_routes,
                              const struct tr_item *vn_provider, size_t *n_out)
{
    Route **rs = ARR(a, Route, n_routes + 1);
    size_t n = 0;
    if (vn_provider != NULL) {
        json_t *l = vn_listener(vn_provider, port > 0 ? port : 0);
        if (l != NULL) {
            rs[n++] = node_route(t, a, vn_provider, l);
        }
    } else {
        long want = port > 0 ? port : only_port;
        for (size_t i = 0; i < n_routes; i++) {
            json_t *mp = json_object_get(json_object_get(routes[i].body, "match"), "port");
            if (strcmp(routes[i].kind, "tcpRoute") == 0 ||
                (json_is_integer(mp) && json_integer_value(mp) != want)) {
                continue;
            }
            Route *r = route(t, a, &routes[i]);
            if (r != NULL) {
                rs[n++] = r;
            }
        }
    }
    *n_out = n;
    return rs;
}

/* An HTTP connection manager with RDS over ADS (`rds_name`) and the router filter. */
static Hcm *hcm_rds(struct arena *a, const char *stat_prefix, const char *rds_name)
{
    Router *router = NEW(a, Router, ENVOY__EXTENSIONS__FILTERS__HTTP__ROUTER__V3__ROUTER__INIT);
    HttpFilter *hf =
        NEW(a, HttpFilter,
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__INIT);
    hf->name = (char *)"envoy.filters.http.router";
    hf->config_type_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    hf->typed_config = pack_any(a, ROUTER_URL, &router->base);
    Rds *rds =
        NEW(a, Rds, ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__RDS__INIT);
    rds->config_source = ads_source(a);
    rds->route_config_name = (char *)rds_name;
    Hcm *hcm = NEW(
        a, Hcm,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__INIT);
    hcm->stat_prefix = (char *)stat_prefix;
    hcm->route_specifier_case =
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS;
    hcm->rds = rds;
    hcm->n_http_filters = 1;
    hcm->http_filters = ARR(a, HttpFilter, 1);
    hcm->http_filters[0] = hf;
    /* `tracing: {}` as App Mesh's control plane: the proxy's bootstrap-level tracer (the image's
     * ENABLE_ENVOY_XRAY_TRACING / ENABLE_ENVOY_JAEGER_TRACING) traces these; without one it is a
     * no-op. */
    hcm->tracing = NEW(
        a, HcmTracing,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__TRACING__INIT);
    return hcm;
}

static void emit_listener(struct tr *t, const char *lname, const char *rds_name)
{
    struct arena a = {0};
    Hcm *hcm = hcm_rds(&a, lname, rds_name);
    Listener *l = NEW(&a, Listener, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    l->name = (char *)lname;
    l->api_listener = NEW(&a, ApiListener, ENVOY__CONFIG__LISTENER__V3__API_LISTENER__INIT);
    l->api_listener->api_listener = pack_any(&a, HCM_URL, &hcm->base);
    emit(&t->out[XDS_LDS], lname, &l->base);
    arena_free(&a);
}

/* The routes of router `vr` in App Mesh's order (priority, 0 first, none last; then name).
 * `with_tcp`: tcpRoutes too (the sidecar's TCP chains); else they are logged as not
 * translated. Free the array. */
static struct route_in *router_routes(const struct tr *t, const struct tr_item *vr, bool with_tcp,
                                      size_t *n_out)
{
    struct route_in *rin = xcalloc(t->m->n_routes ? t->m->n_routes : 1, sizeof(*rin));
    size_t n_r = 0;
    for (size_t i = 0; i < t->m->n_routes; i++) {
        const struct tr_item *r = &t->m->routes[i];
        if (r->parent == NULL || strcmp(r->parent, vr->name) != 0) {
            continue;
        }
        const char *kinds[] = {"httpRoute", "http2Route", "grpcRoute", "tcpRoute"};
        json_t *body = NULL;
        const char *kind = NULL;
        for (size_t k = 0; k < 4 && body == NULL; k++) {
            body = json_object_get(r->spec, kinds[k]);
            kind = kinds[k];
        }
        if (body == NULL) {
            continue;
        }
        if (!with_tcp && strcmp(kind, "tcpRoute") == 0) {
            unsupported(t, "route", r->name, "tcpRoute (gRPC clients speak HTTP/2)");
            continue;
        }
        json_t *pr = json_object_get(r->spec, "priority");
        /* App Mesh: 0 is the highest priority; routes without one come after all. */
        rin[n_r++] = (struct route_in){
            .item = r,
            .kind = kind,
            .body = body,
            .priority = json_is_integer(pr) ? (long)json_integer_value(pr) : 1001};
    }
    if (n_r > 0) {
        qsort(rin, n_r, sizeof(*rin), route_cmp);
    }
    *n_out = n_r;
    return rin;
}

/* One listener (NAME or NAME:PORT) and its route configuration. `port` 0: the bare NAME. */
static void service_target(struct tr *t, const struct tr_item *vs, long port, long only_port,
                           const struct route_in *routes, size_t n_routes,
                           const struct tr_item *vn_provider)
{
    char lname[600], rname[1024];
    if (port > 0) {
        snprintf(lname, sizeof(lname), "%s:%ld", vs->name, port);
    } else {
        snprintf(lname, sizeof(lname), "%s", vs->name);
    }
    snprintf(rname, sizeof(rname), "rds_%s_%s", t->m->mesh, lname);
    emit_listener(t, lname, rname);

    struct arena a = {0};
    size_t n = 0;
    Route **rs = service_routes(t, &a, port, only_port, routes, n_routes, vn_provider, &n);
    VirtualHost *vh = NEW(&a, VirtualHost, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    vh->name = (char *)vs->name;
    vh->n_domains = 1;
    vh->domains = (char **)ARR(&a, char, 1);
    vh->domains[0] = lname;
    vh->n_routes = n;
    vh->routes = rs;
    RouteConfiguration *rc =
        NEW(&a, RouteConfiguration, ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT);
    rc->name = rname;
    rc->n_virtual_hosts = 1;
    rc->virtual_hosts = ARR(&a, VirtualHost, 1);
    rc->virtual_hosts[0] = vh;
    emit(&t->out[XDS_RDS], rname, &rc->base);
    arena_free(&a);
}

static void vservice_resources(struct tr *t, const struct tr_item *vs)
{
    json_t *prov = json_object_get(vs->spec, "provider");
    const char *vn_name = spec_str(json_object_get(prov, "virtualNode"), "virtualNodeName");
    const char *vr_name = spec_str(json_object_get(prov, "virtualRouter"), "virtualRouterName");
    const struct tr_item *vn = NULL, *vr = NULL;
    json_t *listeners = NULL;
    if (vn_name != NULL) {
        vn = find_item(t->m->vnodes, t->m->n_vnodes, vn_name);
        listeners = vn ? json_object_get(vn->spec, "listeners") : NULL;
    } else if (vr_name != NULL) {
        vr = find_item(t->m->vrouters, t->m->n_vrouters, vr_name);
        listeners = vr ? json_object_get(vr->spec, "listeners") : NULL;
    }
    if (vn == NULL && vr == NULL) {
        /* No provider: App Mesh's clients could not reach it either. */
        LOG_D("xds: mesh %s: virtualService %s has no provider: no listener", t->m->mesh, vs->name);
        return;
    }
    size_t n_r = 0;
    struct route_in *rin = vr != NULL ? router_routes(t, vr, false, &n_r) : NULL;
    size_t nl = json_array_size(listeners);
    long only = 0;
    if (nl == 1) {
        only = (long)json_integer_value(
            json_object_get(json_object_get(json_array_get(listeners, 0), "portMapping"), "port"));
    }
    service_target(t, vs, 0, only, rin, n_r, vn);
    for (size_t i = 0; i < nl; i++) {
        long port = (long)json_integer_value(
            json_object_get(json_object_get(json_array_get(listeners, i), "portMapping"), "port"));
        service_target(t, vs, port, port, rin, n_r, vn);
    }
    free(rin);
}

/* ==== flavour B: the sidecar of one virtual node ========================================= */

typedef Envoy__Config__Listener__V3__Filter NetFilter;
typedef Envoy__Config__Listener__V3__FilterChain FilterChain;
typedef Envoy__Config__Listener__V3__FilterChainMatch FilterChainMatch;
typedef Envoy__Config__Listener__V3__ListenerFilter ListenerFilter;
typedef Envoy__Extensions__Filters__Listener__OriginalDst__V3__OriginalDst OriginalDst;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy TcpProxy;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster TcpWeighted;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster__ClusterWeight
    TcpClusterWeight;
typedef Envoy__Config__Core__V3__CidrRange CidrRange;

#define TCP_PROXY_URL TU "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
#define ORIGINAL_DST_URL TU "envoy.extensions.filters.listener.original_dst.v3.OriginalDst"

static NetFilter *net_filter(struct arena *a, const char *name, Any *cfg)
{
    NetFilter *f = NEW(a, NetFilter, ENVOY__CONFIG__LISTENER__V3__FILTER__INIT);
    f->name = (char *)name;
    f->config_type_case = ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG;
    f->typed_config = cfg;
    return f;
}

typedef Envoy__Config__Accesslog__V3__AccessLog AccessLog;
typedef Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog FileAccessLog;
typedef Envoy__Config__Core__V3__SubstitutionFormatString FormatString;
typedef Google__Protobuf__Struct Struct;
typedef Google__Protobuf__Struct__FieldsEntry StructEntry;
typedef Google__Protobuf__Value Value;

#define FILE_LOG_URL TU "envoy.extensions.access_loggers.file.v3.FileAccessLog"

/* The node's (or gateway's) logging.accessLog.file as the access_log of its connection managers
 * and TCP proxies (ingress, egress, passthrough), as App Mesh gives its Envoy: Envoy's file logger
 * at `path`; format.text as the text format (a newline added when it has none: one line per
 * request), format.json[{key, value}] as a format dictionary (json_format, each value a format
 * string; a key given twice keeps its last value), no format: Envoy's default format. Sets *n
 * (0 when the node does not log). */
static AccessLog **sidecar_access_log(const struct tr *t, struct arena *a, size_t *n)
{
    json_t *file = json_object_get(json_object_get(t->logging, "accessLog"), "file");
    const char *path = spec_str(file, "path");
    *n = 0;
    if (path == NULL) {
        return NULL;
    }
    FileAccessLog *fl =
        NEW(a, FileAccessLog, ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__INIT);
    fl->path = (char *)path;
    json_t *fmt = json_object_get(file, "format");
    const char *text = spec_str(fmt, "text");
    json_t *js = json_object_get(fmt, "json");
    if (text != NULL || json_is_array(js)) {
        FormatString *sf =
            NEW(a, FormatString, ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__INIT);
        if (text != NULL) {
            DataSource *d = NEW(a, DataSource, ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT);
            d->specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
            size_t len = strlen(text);
            d->inline_string =
                len > 0 && text[len - 1] == '\n' ? astr(a, "%s", text) : astr(a, "%s\n", text);
            sf->format_case =
                ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE;
            sf->text_format_source = d;
        } else {
            size_t nj = json_array_size(js);
            Struct *st = NEW(a, Struct, GOOGLE__PROTOBUF__STRUCT__INIT);
            st->fields = ARR(a, StructEntry, nj);
            for (size_t i = 0; i < nj; i++) {
                json_t *kv = json_array_get(js, i);
                const char *key = spec_str(kv, "key");
                const char *value = spec_str(kv, "value");
                bool later = false;
                for (size_t j = i + 1; j < nj && key != NULL && !later; j++) {
                    const char *k2 = spec_str(json_array_get(js, j), "key");
                    later = k2 != NULL && strcmp(k2, key) == 0;
                }
                if (key == NULL || value == NULL || later) {
                    continue;
                }
                Value *v = NEW(a, Value, GOOGLE__PROTOBUF__VALUE__INIT);
                v->kind_case = GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE;
                v->string_value = (char *)value;
                StructEntry *e = NEW(a, StructEntry, GOOGLE__PROTOBUF__STRUCT__FIELDS_ENTRY__INIT);
                e->key = (char *)key;
                e->value = v;
                st->fields[st->n_fields++] = e;
            }
            sf->format_case =
                ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT;
            sf->json_format = st;
        }
        fl->access_log_format_case =
            ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT;
        fl->log_format = sf;
    }
    AccessLog *al = NEW(a, AccessLog, ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__INIT);
    al->name = (char *)"envoy.access_loggers.file";
    al->config_type_case = ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG;
    al->typed_config = pack_any(a, FILE_LOG_URL, &fl->base);
    AccessLog **v = ARR(a, AccessLog, 1);
    v[0] = al;
    *n = 1;
    return v;
}

/* The connection manager of a capture chain: RDS over ADS; HTTP/2 only for an http2 or grpc
 * ingress, AUTO otherwise (AUTO takes HTTP/1.1 and h2c with prior knowledge); the node's access
 * log. */
static NetFilter *hcm_filter(const struct tr *t, struct arena *a, const char *stat_prefix,
                             const char *rds, bool h2)
{
    Hcm *hcm = hcm_rds(a, stat_prefix, rds);
    hcm->access_log = sidecar_access_log(t, a, &hcm->n_access_log);
    if (h2) {
        hcm->codec_type =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2;
    }
    return net_filter(a, "envoy.filters.network.http_connection_manager",
                      pack_any(a, HCM_URL, &hcm->base));
}

/* A TCP proxy to `cw[n]` (one: `cluster`; several: `weighted_clusters`), with the node's access
 * log. */
static NetFilter *tcp_filter(const struct tr *t, struct arena *a, const char *stat_prefix,
                             TcpClusterWeight **cw, size_t n, Duration *idle)
{
    TcpProxy *tp =
        NEW(a, TcpProxy, ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__INIT);
    tp->stat_prefix = (char *)stat_prefix;
    tp->access_log = sidecar_access_log(t, a, &tp->n_access_log);
    tp->idle_timeout = idle;
    if (n == 1) {
        tp->cluster_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER;
        tp->cluster = cw[0]->name;
    } else {
        tp->cluster_specifier_case =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS;
        tp->weighted_clusters = NEW(
            a, TcpWeighted,
            ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__INIT);
        tp->weighted_clusters->n_clusters = n;
        tp->weighted_clusters->clusters = cw;
    }
    return net_filter(a, "envoy.filters.network.tcp_proxy", pack_any(a, TCP_PROXY_URL, &tp->base));
}

static TcpClusterWeight *tcp_weight(struct arena *a, const char *cluster, uint32_t w)
{
    TcpClusterWeight *c = NEW(
        a, TcpClusterWeight,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__WEIGHTED_CLUSTER__CLUSTER_WEIGHT__INIT);
    c->name = (char *)cluster;
    c->weight = w;
    return c;
}

/* A chain matched by destination port (and by `ips` as /32 or /128 prefix ranges, if any). */
static FilterChain *capture_chain(struct arena *a, const char *name, uint32_t port,
                                  char ips[][TR_ADDR_MAX], size_t n_ips, NetFilter *f)
{
    FilterChain *fc = NEW(a, FilterChain, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN__INIT);
    fc->name = astr(a, "%s", name);
    fc->n_filters = 1;
    fc->filters = ARR(a, NetFilter, 1);
    fc->filters[0] = f;
    if (port == 0) {
        return fc; /* the default chain */
    }
    FilterChainMatch *m =
        NEW(a, FilterChainMatch, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__INIT);
    m->destination_port = u32(a, port);
    if (n_ips > 0) {
        m->n_prefix_ranges = n_ips;
        m->prefix_ranges = ARR(a, CidrRange, n_ips);
        for (size_t i = 0; i < n_ips; i++) {
            CidrRange *r = NEW(a, CidrRange, ENVOY__CONFIG__CORE__V3__CIDR_RANGE__INIT);
            r->address_prefix = astr(a, "%s", ips[i]);
            r->prefix_len = u32(a, strchr(ips[i], ':') != NULL ? 128 : 32);
            m->prefix_ranges[i] = r;
        }
    }
    fc->filter_chain_match = m;
    return fc;
}

/* A listener `name` bound to 0.0.0.0:`port`, or with `dual` to [::]:`port` with ipv4_compat
 * (every IPv4 and IPv6 address). */
static Listener *bound_listener(struct arena *a, const char *name, uint32_t port, bool dual)
{
    Listener *l = NEW(a, Listener, ENVOY__CONFIG__LISTENER__V3__LISTENER__INIT);
    l->name = (char *)name;
    l->address = NEW(a, Address, ENVOY__CONFIG__CORE__V3__ADDRESS__INIT);
    l->address->address_case = ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS;
    SocketAddress *sa = NEW(a, SocketAddress, ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__INIT);
    sa->address = (char *)(dual ? "::" : "0.0.0.0");
    sa->ipv4_compat = dual;
    sa->port_specifier_case = ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE;
    sa->port_value = port;
    l->address->socket_address = sa;
    return l;
}

/* The tls_inspector listener filter (App Mesh's PERMISSIVE: TLS or plaintext on one port). */
static ListenerFilter *tls_inspector_filter(struct arena *a)
{
    ListenerFilter *ti = NEW(a, ListenerFilter, ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__INIT);
    ti->name = (char *)"envoy.filters.listener.tls_inspector";
    ti->config_type_case = ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector *tio =
        NEW(a, Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector,
            ENVOY__EXTENSIONS__FILTERS__LISTENER__TLS_INSPECTOR__V3__TLS_INSPECTOR__INIT);
    ti->typed_config = pack_any(a, TLS_INSPECTOR_URL, &tio->base);
    return ti;
}

/* Whether node `vn`'s Envoy listeners bind every IPv4 and IPv6 address ([::] with
 * ipv4_compat): App Mesh's with any ipPreference, the node's or the mesh's; without one they
 * bind IPv4 only, 0.0.0.0 (the howto-ipv6 walkthrough of aws-app-mesh-examples, "Envoy Listener
 * Configuration Binding Address"). */
static bool listeners_dual(const struct tr *t, const struct tr_item *vn)
{
    return ip_preference(t, vn) != NULL;
}

/* 0.0.0.0:`port` (or [::]:`port`, `dual`) with the original_dst listener filter (the iptables
 * REDIRECT's destination picks the chain). */
static void emit_capture_listener(struct tr *t, struct arena *a, const char *name, uint32_t port,
                                  bool dual, bool inbound, FilterChain **chains, size_t n,
                                  FilterChain *def, bool tls_inspector)
{
    Listener *l = bound_listener(a, name, port, dual);
    ListenerFilter *lf = NEW(a, ListenerFilter, ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__INIT);
    lf->name = (char *)"envoy.filters.listener.original_dst";
    lf->config_type_case = ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG;
    OriginalDst *od = NEW(
        a, OriginalDst, ENVOY__EXTENSIONS__FILTERS__LISTENER__ORIGINAL_DST__V3__ORIGINAL_DST__INIT);
    lf->typed_config = pack_any(a, ORIGINAL_DST_URL, &od->base);
    l->n_listener_filters = 1;
    l->listener_filters = ARR(a, ListenerFilter, 2);
    l->listener_filters[0] = lf;
    if (tls_inspector) {
        l->listener_filters[l->n_listener_filters++] = tls_inspector_filter(a);
    }
    l->traffic_direction = inbound ? ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND
                                   : ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND;
    l->n_filter_chains = n;
    l->filter_chains = chains;
    l->default_filter_chain = def;
    emit(&t->out[XDS_LDS], name, &l->base);
}

/* A route configuration of one or more virtual hosts. */
static void emit_routes(struct tr *t, const char *name, VirtualHost **vh, size_t n)
{
    RouteConfiguration rc = ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    rc.name = (char *)name;
    rc.n_virtual_hosts = n;
    rc.virtual_hosts = vh;
    emit(&t->out[XDS_RDS], name, &rc.base);
}

/* A virtual host whose one route (prefix "") goes to `cluster`, with `timeout` (which may hold
 * perRequest and idle). */
static VirtualHost *catch_all_vhost(struct arena *a, const char *name, const char *domain,
                                    const char *cluster, json_t *timeout)
{
    RouteMatch *m = NEW(a, RouteMatch, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    m->path_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX;
    m->prefix = (char *)"";
    RouteAction *ra = NEW(a, RouteAction, ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__INIT);
    ra->cluster_specifier_case = ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER;
    ra->cluster = (char *)cluster;
    ra->timeout = duration(a, json_object_get(timeout, "perRequest"));
    ra->idle_timeout = duration(a, json_object_get(timeout, "idle"));
    Route *r = NEW(a, Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
    r->name = (char *)name;
    r->match = m;
    r->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
    r->route = ra;
    VirtualHost *vh = NEW(a, VirtualHost, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    vh->name = (char *)name;
    vh->n_domains = 1;
    vh->domains = (char **)ARR(a, char, 1);
    vh->domains[0] = (char *)domain;
    vh->n_routes = 1;
    vh->routes = ARR(a, Route, 1);
    vh->routes[0] = r;
    return vh;
}

void translate_ingress_cluster_name(char *buf, size_t cap, const char *mesh, const char *vnode,
                                    const char *protocol, long port)
{
    snprintf(buf, cap, "cds_ingress_%s_%s_%s_%ld", mesh, vnode, protocol, port);
}

/* `chains` (n used) with room for `cap`: a copy in the arena. */
static FilterChain **grow_chains(struct arena *a, FilterChain **chains, size_t n, size_t cap)
{
    FilterChain **v = ARR(a, FilterChain, cap);
    memcpy(v, chains, n * sizeof(*v));
    return v;
}

/* A listener's `tls` (a sidecar's ingress or a gateway's listener) -> *ts, its
 * DownstreamTlsContext (NULL: plaintext); *permissive: PERMISSIVE with a context (a TLS and a
 * plaintext chain). false (logged): STRICT that cannot be translated; the caller leaves the
 * port out, failing closed rather than serving it in plaintext. */
static bool listener_tls_mode(struct tr *t, struct arena *a, json_t *l, const char *owner,
                              long port, TransportSocket **ts, bool *permissive)
{
    const char *proto = spec_str(json_object_get(l, "portMapping"), "protocol");
    const char *kind = t->gateway ? "virtualGateway" : "virtualNode";
    json_t *tls = json_object_get(l, "tls");
    const char *mode = spec_str(tls, "mode");
    bool strict = tls != NULL && mode != NULL && strcmp(mode, "STRICT") == 0;
    bool perm = tls != NULL && !strict && (mode == NULL || strcmp(mode, "DISABLED") != 0);
    const char *why = NULL;
    *ts = strict || perm ? listener_tls(t, a, tls, proto, &why) : NULL;
    *permissive = perm && *ts != NULL;
    if (strict && *ts == NULL) {
        /* Fail closed: serving a STRICT listener in plaintext would be a silent downgrade.
         * Without its chain, connections to the port are closed by the listener. */
        LOG_E("xds: mesh %s: %s %s: listener %ld has tls mode STRICT, which cannot be "
              "translated (%s): it is left out (connections to it are refused) rather than "
              "served in plaintext",
              t->m->mesh, kind, owner, port, why);
        return false;
    }
    if (perm && *ts == NULL) {
        LOG_W("xds: mesh %s: %s %s: listener %ld tls PERMISSIVE cannot be translated (%s): "
              "the listener takes plaintext only, which PERMISSIVE allows",
              t->m->mesh, kind, owner, port, why);
    }
    return true;
}

/* Ingress: 0.0.0.0:15000 ([::]:15000 with an ipPreference), a chain per listener of the node (its
 * port), to the local app at 127.0.0.1:<port> through cluster
 * cds_ingress_<mesh>_<vn>_<protocol>_<port>. */
static void sidecar_ingress(struct tr *t, const struct tr_item *vn)
{
    struct arena la = {0};
    json_t *ls = json_object_get(vn->spec, "listeners");
    size_t nl = json_array_size(ls), nc = 0, n_extra = 0;
    FilterChain **chains = ARR(&la, FilterChain, nl);
    bool inspect = false; /* a PERMISSIVE chain pair: the listener needs the tls_inspector */
    for (size_t i = 0; i < nl; i++) {
        json_t *l = json_array_get(ls, i);
        json_t *pm = json_object_get(l, "portMapping");
        const char *proto = spec_str(pm, "protocol");
        long port = (long)json_integer_value(json_object_get(pm, "port"));
        if (proto == NULL || port <= 0) {
            continue;
        }
        char buf[1024];
        translate_ingress_cluster_name(buf, sizeof(buf), t->m->mesh, vn->name, proto, port);
        char *cname = astr(&la, "%s", buf);
        TransportSocket *ts = NULL;
        bool permissive = false;
        if (!listener_tls_mode(t, &la, l, vn->name, port, &ts, &permissive)) {
            continue;
        }

        /* The local app's cluster: the listener's connectionPool as its circuit breakers (App
         * Mesh applies it on the receiving side). */
        struct arena a = {0};
        Cluster *c = NEW(&a, Cluster, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
        c->name = cname;
        c->cluster_discovery_type_case =
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
        c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC;
        char local[1][TR_ADDR_MAX] = {"127.0.0.1"};
        if (local_app_v6(t, vn)) {
            strcpy(local[0], "::1"); /* App Mesh's IPv6_* preferences */
        }
        c->load_assignment = load_assignment(&a, cname, local, 1, (uint32_t)port, 0);
        c->circuit_breakers = breakers(t, vn->name, &a, json_object_get(l, "connectionPool"));
        if (proto_h2(proto)) {
            cluster_h2(&a, c);
        }
        emit(&t->out[XDS_CDS], cname, &c->base);
        arena_free(&a);

        json_t *to = json_object_get(json_object_get(l, "timeout"), proto);
        char *chain_name = astr(&la, "ingress_%s_%ld", proto, port);
        NetFilter *f;
        char *rds = NULL;
        if (strcmp(proto, "tcp") == 0) {
            TcpClusterWeight **cw = ARR(&la, TcpClusterWeight, 1);
            cw[0] = tcp_weight(&la, cname, 1);
            f = tcp_filter(t, &la, "ingress", cw, 1, duration(&la, json_object_get(to, "idle")));
        } else {
            rds = astr(&la, "rds_ingress_http_%ld", port);
            f = hcm_filter(t, &la, "ingress", rds, proto_h2(proto));
        }
        FilterChain *fc = capture_chain(&la, chain_name, (uint32_t)port, NULL, 0, f);
        fc->transport_socket = ts;
        if (permissive) {
            /* App Mesh's PERMISSIVE: the tls_inspector tells TLS from plaintext on the port;
             * a chain for each (remora and Envoy match transport_protocol "tls"/"raw_buffer"). */
            fc->filter_chain_match->transport_protocol = (char *)"tls";
            FilterChain *raw = capture_chain(&la, astr(&la, "%s_plaintext", chain_name),
                                             (uint32_t)port, NULL, 0, f);
            raw->filter_chain_match->transport_protocol = (char *)"raw_buffer";
            chains = grow_chains(&la, chains, nc, nl + n_extra + 1);
            chains[nc++] = raw;
            n_extra++;
            inspect = true;
        }
        chains[nc++] = fc;
        if (rds == NULL) {
            continue;
        }
        VirtualHost **vh = ARR(&la, VirtualHost, 1);
        vh[0] = catch_all_vhost(&la, "ingress", "*", cname, to);
        emit_routes(t, rds, vh, 1);
    }
    if (nc > 0) {
        emit_capture_listener(t, &la, TR_INGRESS_LISTENER, 15000, listeners_dual(t, vn), true,
                              chains, nc, NULL, inspect);
    }
    arena_free(&la);
}

/* The egress routes of one destination port. */
struct eg_port {
    uint32_t port;
    VirtualHost **vh;
    size_t n, cap;
};

struct eg_ip {
    uint32_t port;
    char ip[TR_ADDR_MAX];
};

struct egress {
    struct arena a;
    struct eg_port *ports;
    size_t n_ports;
    FilterChain **tcp;
    size_t n_tcp;
    struct eg_ip *ips; /* (port, ip) taken by a TCP chain: chains may not overlap */
    size_t n_ips;
    const struct tr_item **reach; /* virtual nodes whose clusters the routes use */
    json_t **reach_tls;           /* [n_reach]: the client policy tls they are reached with */
    size_t n_reach;
    json_t *cur_tls; /* the client policy tls of the backend being translated, or NULL */
};

static void reach_add(struct egress *e, const struct tr_item *vn)
{
    for (size_t i = 0; i < e->n_reach; i++) {
        if (e->reach[i] == vn) {
            if (!json_equal(e->reach_tls[i], e->cur_tls) &&
                (e->reach_tls[i] != NULL || e->cur_tls != NULL)) {
                /* one cluster per node listener: the first backend's policy is used */
                LOG_W("xds: virtualNode %s is reached through backends with different client "
                      "policy tls: the first one's applies",
                      vn->name);
            }
            return;
        }
    }
    e->reach = xrealloc(e->reach, (e->n_reach + 1) * sizeof(*e->reach));
    e->reach_tls = xrealloc(e->reach_tls, (e->n_reach + 1) * sizeof(*e->reach_tls));
    e->reach_tls[e->n_reach] = e->cur_tls;
    e->reach[e->n_reach++] = vn;
}

static struct eg_port *eg_port(struct egress *e, uint32_t port)
{
    for (size_t i = 0; i < e->n_ports; i++) {
        if (e->ports[i].port == port) {
            return &e->ports[i];
        }
    }
    e->ports = xrealloc(e->ports, (e->n_ports + 1) * sizeof(*e->ports));
    e->ports[e->n_ports] = (struct eg_port){.port = port};
    return &e->ports[e->n_ports++];
}

static void vhost_add(struct eg_port *p, VirtualHost *vh)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 8;
        p->vh = xrealloc(p->vh, p->cap * sizeof(*p->vh));
    }
    p->vh[p->n++] = vh;
}

/* The weighted targets of a route as TCP cluster weights (targets with weight 0 left out). */
static size_t tcp_targets(struct tr *t, struct egress *e, const char *rname, json_t *body,
                          TcpClusterWeight ***out)
{
    json_t *targets = json_object_get(json_object_get(body, "action"), "weightedTargets");
    size_t nt = json_array_size(targets), n = 0;
    TcpClusterWeight **cw = ARR(&e->a, TcpClusterWeight, nt);
    for (size_t i = 0; i < nt; i++) {
        json_t *wt = json_array_get(targets, i);
        uint32_t w = (uint32_t)json_integer_value(json_object_get(wt, "weight"));
        const struct tr_item *tvn =
            find_item(t->m->vnodes, t->m->n_vnodes, spec_str(wt, "virtualNode"));
        json_t *pj = json_object_get(wt, "port");
        json_t *l =
            tvn ? vn_listener(tvn, json_is_integer(pj) ? (long)json_integer_value(pj) : 0) : NULL;
        if (w == 0) {
            continue;
        }
        if (l == NULL) {
            LOG_W("xds: mesh %s: route %s: target %s has no such listener: left out", t->m->mesh,
                  rname, spec_str(wt, "virtualNode"));
            continue;
        }
        reach_add(e, tvn);
        cw[n++] = tcp_weight(&e->a, listener_cluster(&e->a, t->m->mesh, tvn, l), w);
    }
    *out = cw;
    return n;
}

/* The nodes whose clusters a service's routes may name: its provider node, or its router's
 * routes' targets. */
static void reach_provider(const struct tr *t, struct egress *e, const struct tr_item *pvn,
                           const struct route_in *rin, size_t n_r)
{
    if (pvn != NULL) {
        reach_add(e, pvn);
        return;
    }
    for (size_t i = 0; i < n_r; i++) {
        json_t *targets =
            json_object_get(json_object_get(rin[i].body, "action"), "weightedTargets");
        size_t k;
        json_t *wt;
        json_array_foreach(targets, k, wt)
        {
            const struct tr_item *tvn =
                find_item(t->m->vnodes, t->m->n_vnodes, spec_str(wt, "virtualNode"));
            if (tvn != NULL) {
                reach_add(e, tvn);
            }
        }
    }
}

/* A TCP listener of backend `vs` on `port`: a chain matched by the port and the service name's
 * addresses (what the app connected to), to the provider node's cluster or the router's first
 * tcpRoute for that port. */
static void egress_tcp(struct tr *t, struct egress *e, const struct tr_item *vs, uint32_t port,
                       const struct tr_item *pvn, const struct route_in *routes, size_t n_routes)
{
    TcpClusterWeight **cw = NULL;
    size_t n = 0;
    Duration *idle = NULL;
    if (pvn != NULL) {
        json_t *l = vn_listener(pvn, port);
        if (l != NULL) {
            reach_add(e, pvn);
            cw = ARR(&e->a, TcpClusterWeight, 1);
            cw[n++] = tcp_weight(&e->a, listener_cluster(&e->a, t->m->mesh, pvn, l), 1);
        }
    } else {
        bool taken = false;
        for (size_t i = 0; i < n_routes; i++) {
            json_t *mp = json_object_get(json_object_get(routes[i].body, "match"), "port");
            if (strcmp(routes[i].kind, "tcpRoute") != 0 ||
                (json_is_integer(mp) && json_integer_value(mp) != port)) {
                continue;
            }
            if (taken) {
                unsupported(t, "route", routes[i].item->name,
                            "a second tcpRoute on one port (the first by priority is used)");
                continue;
            }
            taken = true;
            n = tcp_targets(t, e, routes[i].item->name, routes[i].body, &cw);
            idle = duration(&e->a,
                            json_object_get(json_object_get(routes[i].body, "timeout"), "idle"));
        }
    }
    if (n == 0) {
        LOG_W("xds: mesh %s: virtualService %s: no TCP target on port %u: no egress chain",
              t->m->mesh, vs->name, port);
        return;
    }
    char found[TR_ADDRS_MAX][TR_ADDR_MAX], ips[TR_ADDRS_MAX][TR_ADDR_MAX];
    size_t nf = t->resolve(t->arg, vs->name, found, TR_ADDRS_MAX), ni = 0;
    for (size_t i = 0; i < nf; i++) {
        bool dup = false;
        for (size_t k = 0; k < e->n_ips && !dup; k++) {
            dup = e->ips[k].port == port && strcmp(e->ips[k].ip, found[i]) == 0;
        }
        if (dup) {
            LOG_W("xds: mesh %s: virtualService %s: %s:%u is another TCP backend's already",
                  t->m->mesh, vs->name, found[i], port);
            continue;
        }
        memcpy(ips[ni++], found[i], TR_ADDR_MAX);
        e->ips = xrealloc(e->ips, (e->n_ips + 1) * sizeof(*e->ips));
        e->ips[e->n_ips].port = port;
        memcpy(e->ips[e->n_ips++].ip, found[i], TR_ADDR_MAX);
    }
    if (ni == 0) {
        LOG_W("xds: mesh %s: virtualService %s does not resolve: no egress chain for its TCP "
              "port %u (the app could not reach it by name either)",
              t->m->mesh, vs->name, port);
        return;
    }
    char *name = astr(&e->a, "egress_tcp_%s_%u", vs->name, port);
    e->tcp = xrealloc(e->tcp, (e->n_tcp + 1) * sizeof(*e->tcp));
    e->tcp[e->n_tcp++] =
        capture_chain(&e->a, name, port, ips, ni, tcp_filter(t, &e->a, "egress", cw, n, idle));
}

/* One backend virtual service: a virtual host per HTTP port of its provider, a chain per TCP
 * port, and the nodes its routes reach. */
static void egress_backend(struct tr *t, struct egress *e, const struct tr_item *vs)
{
    json_t *prov = json_object_get(vs->spec, "provider");
    const char *vn_name = spec_str(json_object_get(prov, "virtualNode"), "virtualNodeName");
    const char *vr_name = spec_str(json_object_get(prov, "virtualRouter"), "virtualRouterName");
    const struct tr_item *pvn = NULL, *vr = NULL;
    json_t *listeners = NULL;
    if (vn_name != NULL) {
        pvn = find_item(t->m->vnodes, t->m->n_vnodes, vn_name);
        listeners = pvn ? json_object_get(pvn->spec, "listeners") : NULL;
    } else if (vr_name != NULL) {
        vr = find_item(t->m->vrouters, t->m->n_vrouters, vr_name);
        listeners = vr ? json_object_get(vr->spec, "listeners") : NULL;
    }
    if (pvn == NULL && vr == NULL) {
        LOG_D("xds: mesh %s: virtualService %s has no provider: no egress", t->m->mesh, vs->name);
        return;
    }
    size_t n_r = 0;
    struct route_in *rin = vr != NULL ? router_routes(t, vr, true, &n_r) : NULL;
    size_t li;
    json_t *l;
    json_array_foreach(listeners, li, l)
    {
        json_t *pm = json_object_get(l, "portMapping");
        const char *proto = spec_str(pm, "protocol");
        uint32_t port = (uint32_t)json_integer_value(json_object_get(pm, "port"));
        if (proto == NULL || port == 0) {
            continue;
        }
        if (strcmp(proto, "tcp") == 0) {
            egress_tcp(t, e, vs, port, pvn, rin, n_r);
            continue;
        }
        size_t n = 0;
        Route **rs = service_routes(t, &e->a, port, port, rin, n_r, pvn, &n);
        reach_provider(t, e, pvn, rin, n_r);
        /* Domains are matched without case and may hold a wildcard only at an end: a name
         * that would make the route configuration invalid for everyone is left out. */
        struct eg_port *ep = eg_port(e, port);
        bool clash = strchr(vs->name, '*') != NULL;
        for (size_t i = 0; i < ep->n && !clash; i++) {
            clash = strcasecmp(ep->vh[i]->domains[0], vs->name) == 0;
        }
        if (clash) {
            LOG_W("xds: mesh %s: virtualService %s: a '*' in the name, or another service of "
                  "the same name but for case, on port %u: left out of the egress routes",
                  t->m->mesh, vs->name, port);
            continue;
        }
        VirtualHost *vh = NEW(&e->a, VirtualHost, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
        vh->name = astr(&e->a, "%s_%u", vs->name, port);
        vh->n_domains = 2;
        vh->domains = (char **)ARR(&e->a, char, 2);
        vh->domains[0] = (char *)vs->name;
        vh->domains[1] = astr(&e->a, "%s:%u", vs->name, port);
        vh->n_routes = n;
        vh->routes = rs;
        vhost_add(ep, vh);
    }
    free(rin);
}

static int vhost_cmp(const void *x, const void *y)
{
    return strcmp((*(VirtualHost *const *)x)->name, (*(VirtualHost *const *)y)->name);
}

/* The ORIGINAL_DST cluster of ALLOW_ALL's passthrough and DROP_ALL's AWS allowance: the
 * destination the app dialled (restored by original_dst), App Mesh's thresholds. */
static void emit_passthrough_cluster(struct tr *t, struct arena *a)
{
    Cluster *c = NEW(a, Cluster, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__INIT);
    c->name = (char *)TR_PASSTHROUGH_CLUSTER;
    c->cluster_discovery_type_case =
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE;
    c->type = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST;
    c->lb_policy = ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
    c->circuit_breakers = breakers(t, NULL, a, NULL);
    emit(&t->out[XDS_CDS], TR_PASSTHROUGH_CLUSTER, &c->base);
}

/* App Mesh's DROP_ALL lets the app reach AWS's APIs: *.amazonaws.com (its user guide, meshes). */
#define AWS_DOMAIN "*.amazonaws.com"

/* DROP_ALL's AWS allowance for TLS (HTTPS to AWS APIs on 443 is TLS, so no Host to route by):
 * a chain matched by the ClientHello's SNI (`*.amazonaws.com`, transport tls, any destination
 * port the mesh's chains do not take), a TCP proxy to the passthrough. The egress listener then
 * needs the tls_inspector. */
static FilterChain *aws_tls_chain(const struct tr *t, struct arena *a)
{
    TcpClusterWeight **cw = ARR(a, TcpClusterWeight, 1);
    cw[0] = tcp_weight(a, TR_PASSTHROUGH_CLUSTER, 1);
    FilterChain *fc = capture_chain(a, "egress_amazonaws_tls", 0, NULL, 0,
                                    tcp_filter(t, a, "egress_passthrough", cw, 1, NULL));
    FilterChainMatch *m =
        NEW(a, FilterChainMatch, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__INIT);
    m->n_server_names = 1;
    m->server_names = (char **)ARR(a, char, 1);
    m->server_names[0] = (char *)AWS_DOMAIN;
    m->transport_protocol = (char *)"tls";
    fc->filter_chain_match = m;
    return fc;
}

/* Egress: 0.0.0.0:15001 ([::]:15001 with an ipPreference) for the node's backends; ALLOW_ALL adds
 * the passthrough, DROP_ALL the AWS allowance. */
static void sidecar_egress(struct tr *t, const struct tr_item *vn, bool allow_all)
{
    struct egress e = {0};
    json_t *backends = json_object_get(vn->spec, "backends");
    json_t *def_tls = json_object_get(
        json_object_get(json_object_get(vn->spec, "backendDefaults"), "clientPolicy"), "tls");
    size_t bi;
    json_t *b;
    json_array_foreach(backends, bi, b)
    {
        json_t *bvs = json_object_get(b, "virtualService");
        const char *name = spec_str(bvs, "virtualServiceName");
        if (name == NULL) {
            continue;
        }
        json_t *cp = json_object_get(bvs, "clientPolicy");
        e.cur_tls = cp != NULL ? json_object_get(cp, "tls") : def_tls;
        if (json_object_get(e.cur_tls, "ports") != NULL) {
            unsupported(t, "virtualNode", vn->name,
                        "clientPolicy.tls.ports (the policy applies to every port)");
        }
        bool seen = false;
        for (size_t k = 0; k < bi && !seen; k++) {
            const char *other =
                spec_str(json_object_get(json_array_get(backends, k), "virtualService"),
                         "virtualServiceName");
            seen = other != NULL && strcmp(other, name) == 0;
        }
        const struct tr_item *vs = find_item(t->m->vservices, t->m->n_vservices, name);
        if (seen || vs == NULL) {
            if (vs == NULL) {
                LOG_D("xds: mesh %s: virtualNode %s: backend %s does not exist (yet)", t->m->mesh,
                      vn->name, name);
            }
            continue;
        }
        egress_backend(t, &e, vs);
    }

    /* DROP_ALL's allowance over TLS needs the tls_inspector, which waits for the client's
     * first bytes: with TCP backends (their protocol may be one where the server speaks first,
     * which would then wait for the inspector's timeout) it is left out. */
    bool aws_tls = !allow_all && e.n_tcp == 0;
    if (!allow_all && e.n_tcp > 0) {
        unsupported(t, "virtualNode", vn->name,
                    "egressFilter DROP_ALL's *.amazonaws.com over TLS with TCP backends (the "
                    "tls_inspector would hold server-speaks-first connections); plain HTTP to "
                    "*.amazonaws.com on the mesh's HTTP ports is");
    }
    size_t nc = e.n_ports + e.n_tcp + (aws_tls ? 1 : 0);
    FilterChain **chains = ARR(&e.a, FilterChain, nc);
    nc = 0;
    for (size_t i = 0; i < e.n_ports; i++) {
        struct eg_port *p = &e.ports[i];
        qsort(p->vh, p->n, sizeof(*p->vh), vhost_cmp);
        if (allow_all) {
            /* A name the mesh does not know goes where the app sent it. */
            vhost_add(p, catch_all_vhost(&e.a, "allow_all", "*", TR_PASSTHROUGH_CLUSTER, NULL));
        } else {
            /* DROP_ALL still lets the app reach AWS's APIs (with or without the port). */
            VirtualHost *vh =
                catch_all_vhost(&e.a, "amazonaws", AWS_DOMAIN, TR_PASSTHROUGH_CLUSTER, NULL);
            vh->n_domains = 2;
            vh->domains = (char **)ARR(&e.a, char, 2);
            vh->domains[0] = (char *)AWS_DOMAIN;
            vh->domains[1] = astr(&e.a, "%s:%u", AWS_DOMAIN, p->port);
            vhost_add(p, vh);
        }
        char *rds = astr(&e.a, "rds_egress_http_%u", p->port);
        emit_routes(t, rds, p->vh, p->n);
        chains[nc++] = capture_chain(&e.a, astr(&e.a, "egress_http_%u", p->port), p->port, NULL, 0,
                                     hcm_filter(t, &e.a, "egress", rds, false));
    }
    for (size_t i = 0; i < e.n_tcp; i++) {
        chains[nc++] = e.tcp[i];
    }
    if (aws_tls) {
        chains[nc++] = aws_tls_chain(t, &e.a);
    }
    FilterChain *def = NULL;
    if (allow_all) {
        TcpClusterWeight **cw = ARR(&e.a, TcpClusterWeight, 1);
        cw[0] = tcp_weight(&e.a, TR_PASSTHROUGH_CLUSTER, 1);
        def = capture_chain(&e.a, "egress_passthrough", 0, NULL, 0,
                            tcp_filter(t, &e.a, "egress_passthrough", cw, 1, NULL));
    }
    /* Both egress filters route something to the passthrough (DROP_ALL: AWS's names). */
    emit_passthrough_cluster(t, &e.a);
    emit_capture_listener(t, &e.a, TR_EGRESS_LISTENER, 15001, listeners_dual(t, vn), false, chains,
                          nc, def, aws_tls);
    for (size_t i = 0; i < e.n_reach; i++) {
        vnode_resources(t, e.reach[i], e.reach_tls[i]);
    }
    for (size_t i = 0; i < e.n_ports; i++) {
        free(e.ports[i].vh);
    }
    free(e.ports);
    free(e.tcp);
    free(e.ips);
    free(e.reach);
    free(e.reach_tls);
    arena_free(&e.a);
}

/* Sorts each type by name and drops a second resource of a name (logged). */
static struct xds_snapshot *finish(struct tr *t, const char *vnode)
{
    struct xds_snapshot *s = xcalloc(1, sizeof(*s));
    s->secrets = t->secrets; /* taken */
    s->n_secrets = t->n_secrets;
    t->secrets = NULL;
    t->n_secrets = 0;
    s->mesh = xstrdup(t->m->mesh);
    s->vnode = vnode != NULL ? xstrdup(vnode) : NULL;
    for (int ty = 0; ty < XDS_NTYPES; ty++) {
        struct out *o = &t->out[ty];
        if (o->n > 0) {
            qsort(o->v, o->n, sizeof(*o->v), res_cmp);
        }
        /* Names are unique by construction except when two spellings collide (a service
         * named "a:1" and service "a" on port 1): keep the first. */
        size_t w = 0;
        for (size_t i = 0; i < o->n; i++) {
            if (w > 0 && strcmp(o->v[w - 1].name, o->v[i].name) == 0) {
                LOG_W("xds: mesh %s: two resources named %s: the second is left out", t->m->mesh,
                      o->v[i].name);
                free(o->v[i].name);
                free(o->v[i].data);
                continue;
            }
            o->v[w++] = o->v[i];
        }
        s->res[ty] = o->v;
        s->n[ty] = w;
    }
    return s;
}

/* ==== flavour B: a virtual gateway ========================================================= */

typedef Envoy__Type__Matcher__V3__RegexMatchAndSubstitute RegexSubstitute;

/* A gateway route, sorted in App Mesh's order. */
struct groute_in {
    const struct tr_item *item;
    const char *kind; /* httpRoute, http2Route, grpcRoute */
    json_t *body;
    long priority;   /* none: after every priority */
    int path_rank;   /* exact path 0, regex 1, prefix 2 */
    size_t sort_len; /* a prefix's length: the longest first */
};

static int groute_cmp(const void *x, const void *y)
{
    const struct groute_in *a = x, *b = y;
    if (a->priority != b->priority) {
        return a->priority < b->priority ? -1 : 1;
    }
    if (a->path_rank != b->path_rank) {
        return a->path_rank < b->path_rank ? -1 : 1;
    }
    if (a->sort_len != b->sort_len) {
        return a->sort_len > b->sort_len ? -1 : 1;
    }
    return strcmp(a->item->name, b->item->name);
}

/* The gateway routes of gateway `vg` for a listener of `protocol` on `port`, sorted: App Mesh's
 * priority (0 first, none last), then its fallback (an exact path, a regex, then the longest
 * prefix first), then the name. Free the array. */
static struct groute_in *gateway_routes(const struct tr *t, const struct tr_item *vg,
                                        const char *protocol, long port, size_t n_listeners,
                                        size_t *n_out)
{
    struct groute_in *v = xcalloc(t->m->n_groutes ? t->m->n_groutes : 1, sizeof(*v));
    size_t n = 0;
    static const char *const kinds[] = {"httpRoute", "http2Route", "grpcRoute"};
    static const char *const protos[] = {"http", "http2", "grpc"};
    for (size_t i = 0; i < t->m->n_groutes; i++) {
        const struct tr_item *r = &t->m->groutes[i];
        if (r->parent == NULL || strcmp(r->parent, vg->name) != 0) {
            continue;
        }
        json_t *body = NULL;
        size_t k = 0;
        for (; k < 3 && body == NULL; k++) {
            body = json_object_get(r->spec, kinds[k]);
        }
        if (body == NULL || strcmp(protos[k - 1], protocol) != 0) {
            continue; /* a route's kind follows its listener's protocol */
        }
        json_t *match = json_object_get(body, "match");
        json_t *mp = json_object_get(match, "port");
        if (json_is_integer(mp) ? json_integer_value(mp) != port : n_listeners > 1) {
            if (!json_is_integer(mp)) {
                LOG_W("xds: mesh %s: gatewayRoute %s has no match.port and its gateway has "
                      "several listeners: left out",
                      t->m->mesh, r->name);
            }
            continue;
        }
        json_t *pr = json_object_get(r->spec, "priority");
        struct groute_in g = {.item = r,
                              .kind = kinds[k - 1],
                              .body = body,
                              .priority = json_is_integer(pr) ? (long)json_integer_value(pr) : 1001,
                              .path_rank = 2};
        json_t *path = json_object_get(match, "path");
        const char *prefix = spec_str(match, "prefix");
        if (spec_str(path, "exact") != NULL) {
            g.path_rank = 0;
        } else if (spec_str(path, "regex") != NULL) {
            g.path_rank = 1;
        } else if (prefix != NULL) {
            g.sort_len = strlen(prefix);
        } else if (spec_str(match, "serviceName") != NULL) {
            g.sort_len = strlen(spec_str(match, "serviceName")) + 2;
        }
        v[n++] = g;
    }
    if (n > 0) {
        qsort(v, n, sizeof(*v), groute_cmp);
    }
    *n_out = n;
    return v;
}

/* `s` with regex metacharacters escaped (RE2). */
static char *regex_quote(struct arena *a, const char *s)
{
    size_t len = strlen(s);
    char *o = arena_alloc(a, 2 * len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (strchr("\\.+*?()|[]{}^$", s[i]) != NULL) {
            o[k++] = '\\';
        }
        o[k++] = s[i];
    }
    o[k] = '\0';
    return o;
}

/* A gateway route's `hostname {exact|suffix}` as an `:authority` matcher (a virtual host per
 * name would match the host before the priorities: one host "*" keeps App Mesh's order).
 * Host names match without case and with or without a port, as Envoy's domains do. */
static HeaderMatcher *hostname_matcher(struct arena *a, json_t *hn)
{
    const char *exact = spec_str(hn, "exact"), *suffix = spec_str(hn, "suffix");
    if (exact == NULL && suffix == NULL) {
        return NULL;
    }
    HeaderMatcher *hm = NEW(a, HeaderMatcher, ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__INIT);
    hm->name = (char *)":authority";
    hm->header_match_specifier_case =
        ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH;
    hm->safe_regex_match = NEW(a, RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
    hm->safe_regex_match->regex = exact != NULL
                                      ? astr(a, "(?i)%s(:[0-9]+)?", regex_quote(a, exact))
                                      : astr(a, "(?i).*%s(:[0-9]+)?", regex_quote(a, suffix));
    return hm;
}

/* What a gateway route matches and rewrites, in Envoy's terms. */
struct gmatch {
    int kind;            /* PATH_SPECIFIER_PREFIX, _PATH or _SAFE_REGEX */
    const char *path;    /* the prefix, the exact path or the regex */
    const char *rewrite; /* the prefix rewrite (prefix), the path rewrite (exact, regex); NULL */
    HeaderMatcher **headers;
    size_t n_headers;
    RouteMatch *extras; /* query_parameters (http) */
};

#define PS_PREFIX ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX
#define PS_PATH ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH
#define PS_REGEX ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX

static bool starts_with(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* The path of a service route `r` (its match) composed with the gateway's: the request first
 * takes the gateway route (its match, its rewrite), then the service's route sees the rewritten
 * path. Sets the composed match on `out` and the rewrite on `ra`; false when no request can
 * take both (or it cannot be expressed: logged). */
static bool compose_path(struct tr *t, struct arena *a, const char *gname, const struct gmatch *g,
                         const RouteMatch *r, RouteMatch *out, RouteAction *ra)
{
    int rk = r->path_specifier_case;
    const char *rp = rk == PS_PREFIX ? r->prefix : rk == PS_PATH ? r->path : NULL;
    bool r_all = rk == PS_PREFIX && (rp[0] == '\0' || strcmp(rp, "/") == 0);
    out->path_specifier_case = g->kind;
    if (g->kind == PS_PREFIX && g->rewrite != NULL) {
        /* rewritten = rewrite + the rest after the gateway's prefix */
        out->prefix = (char *)g->path;
        ra->prefix_rewrite = (char *)g->rewrite;
        if (r_all) {
            return true;
        }
        if (rk == PS_PREFIX && starts_with(rp, g->rewrite)) {
            out->prefix = astr(a, "%s%s", g->path, rp + strlen(g->rewrite));
            ra->prefix_rewrite = (char *)rp;
            return true;
        }
        if (rk == PS_PREFIX && starts_with(g->rewrite, rp)) {
            return true;
        }
        if (rk == PS_PATH && starts_with(rp, g->rewrite)) {
            out->path_specifier_case = PS_PATH;
            out->path = astr(a, "%s%s", g->path, rp + strlen(g->rewrite));
            ra->prefix_rewrite = (char *)rp;
            return true;
        }
        if (rk == PS_REGEX) {
            unsupported(t, "gatewayRoute", gname, "a target route matching a path regex");
        }
        return false;
    }
    if (g->kind == PS_PREFIX) {
        /* no rewrite: the service's route sees the path as it came */
        out->prefix = (char *)g->path;
        if (r_all) {
            return true;
        }
        if (rk == PS_PREFIX && (starts_with(rp, g->path) || starts_with(g->path, rp))) {
            out->prefix = (char *)(strlen(rp) > strlen(g->path) ? rp : g->path);
            return true;
        }
        if (rk == PS_PATH && starts_with(rp, g->path)) {
            out->path_specifier_case = PS_PATH;
            out->path = (char *)rp;
            return true;
        }
        if (rk == PS_REGEX && strcmp(g->path, "/") == 0) {
            out->path_specifier_case = PS_REGEX;
            out->safe_regex = r->safe_regex;
            return true;
        }
        if (rk == PS_REGEX) {
            unsupported(t, "gatewayRoute", gname, "a target route matching a path regex");
        }
        return false;
    }
    /* an exact path or a regex: the path the service's route sees is the rewrite, a constant,
     * or the exact path itself */
    if (g->kind == PS_PATH) {
        out->path = (char *)g->path;
        ra->prefix_rewrite = (char *)g->rewrite; /* a path match's prefix is the whole path */
    } else {
        out->safe_regex = NEW(a, RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
        out->safe_regex->regex = (char *)g->path;
        if (g->rewrite != NULL) {
            ra->regex_rewrite =
                NEW(a, RegexSubstitute, ENVOY__TYPE__MATCHER__V3__REGEX_MATCH_AND_SUBSTITUTE__INIT);
            ra->regex_rewrite->pattern =
                NEW(a, RegexMatcher, ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__INIT);
            ra->regex_rewrite->pattern->regex = (char *)"^.*$";
            ra->regex_rewrite->substitution = (char *)g->rewrite;
        }
    }
    if (r_all) {
        return true;
    }
    const char *seen = g->rewrite != NULL ? g->rewrite : g->kind == PS_PATH ? g->path : NULL;
    if (seen == NULL || rk == PS_REGEX) {
        unsupported(t, "gatewayRoute", gname,
                    "a path regex match (or a target route's path regex) whose path the target "
                    "route cannot see before the request");
        return false;
    }
    return rk == PS_PREFIX ? starts_with(seen, rp) : strcmp(seen, rp) == 0;
}

/* A gateway route's match and rewrite (App Mesh's defaults: the matched prefix to "/"). */
static void gateway_match(struct tr *t, struct arena *a, const struct groute_in *gr,
                          struct gmatch *g)
{
    json_t *match = json_object_get(gr->body, "match");
    json_t *rw = json_object_get(json_object_get(gr->body, "action"), "rewrite");
    memset(g, 0, sizeof(*g));
    g->extras = NEW(a, RouteMatch, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
    json_t *hdrs;
    size_t extra = 0;
    if (strcmp(gr->kind, "grpcRoute") == 0) {
        const char *svc = spec_str(match, "serviceName");
        g->kind = PS_PREFIX;
        g->path = svc != NULL ? astr(a, "/%s/", svc) : "/";
        hdrs = json_object_get(match, "metadata");
    } else {
        sidecar_match_extras(a, g->extras, match, spec_str(match, "method"));
        extra = g->extras->n_headers;
        const char *prefix = spec_str(match, "prefix");
        json_t *path = json_object_get(match, "path");
        json_t *rp = json_object_get(rw, "prefix");
        const char *exact_rw = spec_str(json_object_get(rw, "path"), "exact");
        if (spec_str(path, "exact") != NULL) {
            g->kind = PS_PATH;
            g->path = astr(a, "%s", spec_str(path, "exact"));
            g->rewrite = exact_rw != NULL ? astr(a, "%s", exact_rw) : NULL;
        } else if (spec_str(path, "regex") != NULL) {
            g->kind = PS_REGEX;
            g->path = astr(a, "%s", spec_str(path, "regex"));
            g->rewrite = exact_rw != NULL ? astr(a, "%s", exact_rw) : NULL;
        } else {
            g->kind = PS_PREFIX;
            g->path = astr(a, "%s", prefix != NULL ? prefix : "/");
            const char *dp = spec_str(rp, "defaultPrefix");
            const char *value = spec_str(rp, "value");
            if (value != NULL) {
                g->rewrite = astr(a, "%s", value);
            } else if (dp == NULL || strcmp(dp, "DISABLED") != 0) {
                g->rewrite = "/";
            }
            if (g->rewrite != NULL && strcmp(g->rewrite, g->path) == 0) {
                g->rewrite = NULL; /* "/" to "/": nothing to do */
            }
        }
        hdrs = json_object_get(match, "headers");
    }
    HeaderMatcher *host = hostname_matcher(a, json_object_get(match, "hostname"));
    size_t nh = json_array_size(hdrs);
    g->headers = ARR(a, HeaderMatcher, extra + nh + 1);
    for (size_t i = 0; i < extra; i++) {
        g->headers[g->n_headers++] = g->extras->headers[i];
    }
    if (host != NULL) {
        g->headers[g->n_headers++] = host;
    }
    for (size_t i = 0; i < nh; i++) {
        g->headers[g->n_headers++] = header_matcher(a, json_array_get(hdrs, i));
    }
    (void)t;
}

/* Copies n pointers (none: `src` may be NULL). */
static void ptrs_copy(void *dst, const void *src, size_t n)
{
    if (n > 0) {
        memcpy(dst, src, n * sizeof(void *));
    }
}

/* The Envoy routes of one gateway route: for each route of its target service (the provider
 * node's one route, or the router's routes for the target port, in their order), a route
 * matching both (the gateway's match on the request as it came, the service's on the request
 * as rewritten), with the service route's action (targets, retries, timeouts) and the
 * gateway's rewrites. A prefix not ending in '/' gives two routes per service route, so that
 * "/chapter/1" becomes "/1" (App Mesh's example), not "//1": `<prefix>/` first, then
 * `<prefix>`. */
static void gateway_route_expand(struct tr *t, struct egress *e, const struct groute_in *gr,
                                 Route ***rs, size_t *n, size_t *cap)
{
    struct arena *a = &e->a;
    const char *gname = gr->item->name;
    json_t *target = json_object_get(json_object_get(gr->body, "action"), "target");
    const char *vs_name = spec_str(json_object_get(target, "virtualService"), "virtualServiceName");
    const struct tr_item *vs =
        vs_name != NULL ? find_item(t->m->vservices, t->m->n_vservices, vs_name) : NULL;
    if (vs == NULL) {
        LOG_W("xds: mesh %s: gatewayRoute %s: target %s does not exist (yet): left out", t->m->mesh,
              gname, vs_name ? vs_name : "(none)");
        return;
    }
    json_t *prov = json_object_get(vs->spec, "provider");
    const char *vn_name = spec_str(json_object_get(prov, "virtualNode"), "virtualNodeName");
    const char *vr_name = spec_str(json_object_get(prov, "virtualRouter"), "virtualRouterName");
    const struct tr_item *pvn =
        vn_name != NULL ? find_item(t->m->vnodes, t->m->n_vnodes, vn_name) : NULL;
    const struct tr_item *vr =
        vr_name != NULL ? find_item(t->m->vrouters, t->m->n_vrouters, vr_name) : NULL;
    if (pvn == NULL && vr == NULL) {
        LOG_W("xds: mesh %s: gatewayRoute %s: virtualService %s has no provider: left out",
              t->m->mesh, gname, vs->name);
        return;
    }
    json_t *listeners = json_object_get((pvn != NULL ? pvn : vr)->spec, "listeners");
    json_t *tp = json_object_get(target, "port");
    long port = json_is_integer(tp) ? (long)json_integer_value(tp) : 0;
    if (port == 0 && json_array_size(listeners) == 1) {
        port = (long)json_integer_value(
            json_object_get(json_object_get(json_array_get(listeners, 0), "portMapping"), "port"));
    }
    if (port == 0) {
        LOG_W("xds: mesh %s: gatewayRoute %s: the provider of %s has several listeners and the "
              "target has no port: left out",
              t->m->mesh, gname, vs->name);
        return;
    }
    size_t n_r = 0;
    struct route_in *rin = vr != NULL ? router_routes(t, vr, false, &n_r) : NULL;
    size_t nsr = 0;
    Route **sr = service_routes(t, a, port, port, rin, n_r, pvn, &nsr);
    reach_provider(t, e, pvn, rin, n_r);
    free(rin);

    struct gmatch g;
    gateway_match(t, a, gr, &g);
    json_t *rw = json_object_get(json_object_get(gr->body, "action"), "rewrite");
    const char *dth = spec_str(json_object_get(rw, "hostname"), "defaultTargetHostname");
    bool host_rw = dth == NULL || strcmp(dth, "DISABLED") != 0;
    /* the "<prefix>/" form first, then "<prefix>" itself */
    size_t forms = g.kind == PS_PREFIX && g.rewrite != NULL && g.path[0] != '\0' &&
                           g.path[strlen(g.path) - 1] != '/'
                       ? 2
                       : 1;
    for (size_t f = 0; f < forms; f++) {
        struct gmatch gf = g;
        if (forms == 2 && f == 0) {
            size_t rl = strlen(g.rewrite);
            gf.path = astr(a, "%s/", g.path);
            gf.rewrite = rl > 0 && g.rewrite[rl - 1] == '/' ? g.rewrite : astr(a, "%s/", g.rewrite);
        }
        for (size_t i = 0; i < nsr; i++) {
            const Route *r = sr[i];
            RouteMatch *m = NEW(a, RouteMatch, ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__INIT);
            RouteAction *ra = anew(a, r->route, sizeof(*ra));
            ra->prefix_rewrite = NULL;
            if (!compose_path(t, a, gname, &gf, r->match, m, ra)) {
                continue;
            }
            if (host_rw) {
                ra->host_rewrite_specifier_case =
                    ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL;
                ra->host_rewrite_literal = (char *)vs->name;
            }
            m->n_headers = gf.n_headers + r->match->n_headers;
            m->headers = ARR(a, HeaderMatcher, m->n_headers);
            ptrs_copy(m->headers, gf.headers, gf.n_headers);
            ptrs_copy(m->headers + gf.n_headers, r->match->headers, r->match->n_headers);
            size_t gq = gf.extras->n_query_parameters;
            m->n_query_parameters = gq + r->match->n_query_parameters;
            m->query_parameters = ARR(a, QueryParameterMatcher, m->n_query_parameters);
            ptrs_copy(m->query_parameters, gf.extras->query_parameters, gq);
            ptrs_copy(m->query_parameters + gq, r->match->query_parameters,
                      r->match->n_query_parameters);
            Route *nr = NEW(a, Route, ENVOY__CONFIG__ROUTE__V3__ROUTE__INIT);
            nr->name = pvn != NULL ? astr(a, "%s", gname) : astr(a, "%s/%s", gname, r->name);
            nr->match = m;
            nr->action_case = ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE;
            nr->route = ra;
            if (*n == *cap) {
                *cap = *cap ? *cap * 2 : 16;
                Route **v = ARR(a, Route, *cap);
                ptrs_copy(v, *rs, *n);
                *rs = v;
            }
            (*rs)[(*n)++] = nr;
        }
    }
}

/* One listener of the gateway: 0.0.0.0:<port> with an HCM (RDS rds_ingress_http_<port>) and
 * its route configuration. */
static void gateway_listener(struct tr *t, struct egress *e, const struct tr_item *vg, json_t *l,
                             size_t n_listeners)
{
    struct arena *a = &e->a;
    json_t *pm = json_object_get(l, "portMapping");
    const char *proto = spec_str(pm, "protocol");
    long port = (long)json_integer_value(json_object_get(pm, "port"));
    if (proto == NULL || port <= 0) {
        return;
    }
    if (json_object_get(l, "healthCheck") != NULL) {
        unsupported(t, "virtualGateway", vg->name,
                    "listener healthCheck (it checks the gateway itself, from outside)");
    }
    if (json_object_get(l, "connectionPool") != NULL && t->gw_pool == NULL) {
        t->gw_pool = json_object_get(json_object_get(l, "connectionPool"), proto) != NULL
                         ? json_object_get(l, "connectionPool")
                         : NULL;
    }
    TransportSocket *ts = NULL;
    bool permissive = false;
    if (!listener_tls_mode(t, a, l, vg->name, port, &ts, &permissive)) {
        return;
    }
    char *rds = astr(a, "rds_ingress_http_%ld", port);
    char *lname = astr(a, "lds_ingress_0.0.0.0_%ld", port);
    Hcm *hcm = hcm_rds(a, "ingress", rds);
    if (proto_h2(proto)) {
        hcm->codec_type =
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2;
    }
    /* App Mesh's gateway Envoy normalizes paths before routing: RFC 3986 normalization and
     * merged slashes (escaped slashes kept, Envoy's default). */
    hcm->normalize_path = NEW(a, Google__Protobuf__BoolValue, GOOGLE__PROTOBUF__BOOL_VALUE__INIT);
    hcm->normalize_path->value = true;
    hcm->merge_slashes = true;
    hcm->access_log = sidecar_access_log(t, a, &hcm->n_access_log);
    NetFilter *f = net_filter(a, "envoy.filters.network.http_connection_manager",
                              pack_any(a, HCM_URL, &hcm->base));
    Listener *lis = bound_listener(a, lname, (uint32_t)port, false);
    FilterChain *fc = capture_chain(a, astr(a, "ingress_%s_%ld", proto, port), 0, NULL, 0, f);
    fc->transport_socket = ts;
    lis->n_filter_chains = 1;
    lis->filter_chains = ARR(a, FilterChain, 2);
    lis->filter_chains[0] = fc;
    if (permissive) {
        /* as a sidecar's PERMISSIVE port: a TLS and a plaintext chain, told apart by the
         * tls_inspector */
        fc->filter_chain_match =
            NEW(a, FilterChainMatch, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__INIT);
        fc->filter_chain_match->transport_protocol = (char *)"tls";
        FilterChain *raw =
            capture_chain(a, astr(a, "ingress_%s_%ld_plaintext", proto, port), 0, NULL, 0, f);
        raw->filter_chain_match =
            NEW(a, FilterChainMatch, ENVOY__CONFIG__LISTENER__V3__FILTER_CHAIN_MATCH__INIT);
        raw->filter_chain_match->transport_protocol = (char *)"raw_buffer";
        lis->filter_chains[lis->n_filter_chains++] = raw;
        lis->n_listener_filters = 1;
        lis->listener_filters = ARR(a, ListenerFilter, 1);
        lis->listener_filters[0] = tls_inspector_filter(a);
    }
    lis->traffic_direction = ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND;
    emit(&t->out[XDS_LDS], lname, &lis->base);

    size_t n_gr = 0;
    struct groute_in *grs = gateway_routes(t, vg, proto, port, n_listeners, &n_gr);
    Route **rs = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < n_gr; i++) {
        json_t *tls_default = json_object_get(
            json_object_get(json_object_get(vg->spec, "backendDefaults"), "clientPolicy"), "tls");
        e->cur_tls = tls_default;
        gateway_route_expand(t, e, &grs[i], &rs, &n, &cap);
    }
    free(grs);
    /* One virtual host "*": a request no gateway route matches gets 404 (NR). */
    VirtualHost *vh = NEW(a, VirtualHost, ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__INIT);
    vh->name = astr(a, "%s_%ld", vg->name, port);
    vh->n_domains = 1;
    vh->domains = (char **)ARR(a, char, 1);
    vh->domains[0] = (char *)"*";
    vh->n_routes = n;
    vh->routes = rs;
    emit_routes(t, rds, &vh, 1);
}

struct xds_snapshot *translate_gateway(const struct tr_mesh *m, const char *vgateway,
                                       tr_resolve_cb resolve, void *arg)
{
    struct tr t = {.m = m,
                   .resolve = resolve,
                   .arg = arg,
                   .sidecar = true,
                   .gateway = true,
                   .vnode = vgateway};
    const struct tr_item *vg = find_item(m->vgateways, m->n_vgateways, vgateway);
    if (vg == NULL) {
        LOG_D("xds: mesh %s: no virtualGateway %s: an empty snapshot", m->mesh, vgateway);
        struct xds_snapshot *s = finish(&t, vgateway);
        s->gateway = true;
        return s;
    }
    t.gw = vg;
    t.logging = json_object_get(vg->spec, "logging"); /* its listeners' access logs */
    struct egress e = {0};
    json_t *ls = json_object_get(vg->spec, "listeners");
    json_t *tls_default = json_object_get(
        json_object_get(json_object_get(vg->spec, "backendDefaults"), "clientPolicy"), "tls");
    if (json_object_get(tls_default, "ports") != NULL) {
        unsupported(&t, "virtualGateway", vg->name,
                    "clientPolicy.tls.ports (the policy applies to every port)");
    }
    size_t li;
    json_t *l;
    json_array_foreach(ls, li, l)
    {
        gateway_listener(&t, &e, vg, l, json_array_size(ls));
    }
    for (size_t i = 0; i < e.n_reach; i++) {
        vnode_resources(&t, e.reach[i], e.reach_tls[i]);
    }
    free(e.reach);
    free(e.reach_tls);
    arena_free(&e.a);
    struct xds_snapshot *s = finish(&t, vgateway);
    s->gateway = true;
    return s;
}

struct xds_snapshot *translate_sidecar(const struct tr_mesh *m, const char *vnode,
                                       tr_resolve_cb resolve, void *arg)
{
    struct tr t = {.m = m, .resolve = resolve, .arg = arg, .sidecar = true, .vnode = vnode};
    const struct tr_item *vn = find_item(m->vnodes, m->n_vnodes, vnode);
    if (vn == NULL) {
        LOG_D("xds: mesh %s: no virtualNode %s: an empty snapshot", m->mesh, vnode);
        return finish(&t, vnode);
    }
    json_t *ef = json_object_get(m->mesh_spec, "egressFilter");
    const char *eft = spec_str(ef, "type");
    bool allow_all = eft != NULL && strcmp(eft, "ALLOW_ALL") == 0;
    t.logging = json_object_get(vn->spec, "logging"); /* the listeners' access logs */
    sidecar_ingress(&t, vn);
    sidecar_egress(&t, vn, allow_all);
    return finish(&t, vnode);
}

bool translate_proxy_id(const char *id, char **mesh, char **name, enum tr_proxy *kind)
{
    const char *p = id;
    if (strncmp(id, "arn:", 4) == 0) {
        /* arn:<partition>:appmesh:<region>:<account>:mesh/... */
        const char *q = id;
        for (int colons = 0; colons < 5; colons++) {
            q = strchr(q, ':');
            if (q == NULL) {
                return false;
            }
            q++;
        }
        if (strstr(id, ":appmesh:") == NULL) {
            return false;
        }
        p = q;
    }
    if (strncmp(p, "mesh/", 5) != 0) {
        return false;
    }
    p += 5;
    const char *slash = strchr(p, '/');
    if (slash == NULL || slash == p) {
        return false;
    }
    const char *vn;
    if (strncmp(slash, "/virtualNode/", 13) == 0) {
        vn = slash + 13;
        *kind = TR_VIRTUAL_NODE;
    } else if (strncmp(slash, "/virtualGateway/", 16) == 0) {
        vn = slash + 16;
        *kind = TR_VIRTUAL_GATEWAY;
    } else {
        return false;
    }
    if (vn[0] == '\0' || strchr(vn, '/') != NULL) {
        return false;
    }
    *mesh = xstrndup(p, (size_t)(slash - p));
    *name = xstrdup(vn);
    return true;
}

bool translate_node_id(const char *id, char **mesh, char **vnode)
{
    enum tr_proxy kind;
    char *m = NULL, *n = NULL;
    if (!translate_proxy_id(id, &m, &n, &kind)) {
        return false;
    }
    if (kind != TR_VIRTUAL_NODE) {
        free(m);
        free(n);
        return false;
    }
    *mesh = m;
    *vnode = n;
    return true;
}

struct xds_snapshot *translate_mesh(const struct tr_mesh *m, tr_resolve_cb resolve, void *arg)
{
    struct tr t = {.m = m, .resolve = resolve, .arg = arg};
    for (size_t i = 0; i < m->n_vnodes; i++) {
        vnode_resources(&t, &m->vnodes[i], NULL);
    }
    for (size_t i = 0; i < m->n_vservices; i++) {
        vservice_resources(&t, &m->vservices[i]);
    }
    return finish(&t, NULL);
}

void xds_snapshot_free(struct xds_snapshot *s)
{
    if (s == NULL) {
        return;
    }
    for (int ty = 0; ty < XDS_NTYPES; ty++) {
        for (size_t i = 0; i < s->n[ty]; i++) {
            free(s->res[ty][i].name);
            free(s->res[ty][i].data);
        }
        free(s->res[ty]);
    }
    for (size_t i = 0; i < s->n_secrets; i++) {
        free(s->secrets[i].name);
    }
    free(s->secrets);
    free(s->mesh);
    free(s->vnode);
    free(s);
}

const struct xds_resource *xds_snapshot_find(const struct xds_snapshot *s, enum xds_type t,
                                             const char *name)
{
    if (s == NULL || s->n[t] == 0) {
        return NULL;
    }
    struct xds_resource key = {.name = (char *)name};
    return bsearch(&key, s->res[t], s->n[t], sizeof(key), res_cmp);
}
