/* Unit tests for the sidecar flavour of translate (translate_sidecar): a representative mesh
 * (a front node with http and tcp listeners and backends behind a router with weighted http,
 * grpc and method/query routes, a retry policy and timeouts; a tcp backend by node and one by
 * router; ALLOW_ALL and DROP_ALL) checked by decoding what it packed: listener and chain names,
 * matches and filters, clusters (STATIC ingress with circuit breakers, EDS egress with outlier
 * detection, health checks and HTTP/2), routes, endpoints; node ids.
 *
 * The acceptance test: every snapshot, made into a static bootstrap (xds_snapshot_bootstrap:
 * RDS inline, EDS as load_assignment), is built by remora's own config builder
 * (config_load_text) with no error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "proxy/config/config.h"
#include "proxy/config/build.h"
#include "proxy/core/log.h"
#include "xds/appmesh/dump.h"
#include "xds/appmesh/translate.h"
#include "tests/unit/xds/appmesh/tr_test.h"

typedef Envoy__Config__Listener__V3__Listener Listener;
typedef Envoy__Config__Listener__V3__FilterChain FilterChain;
typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Config__Route__V3__Route Route;
typedef Envoy__Config__Endpoint__V3__ClusterLoadAssignment Cla;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;
typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy TcpProxy;

/* App Mesh's circuit breakers: one DEFAULT threshold, each of the four at 2147483647 unless
 * the pool set it (`conns`, `pending`, `reqs`: 0 = App Mesh's). */
static void appmesh_breakers(const Cluster *c, uint32_t conns, uint32_t pending, uint32_t reqs)
{
    assert_non_null(c->circuit_breakers);
    assert_int_equal(c->circuit_breakers->n_thresholds, 1);
    const Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds *th =
        c->circuit_breakers->thresholds[0];
    assert_int_equal(th->priority, ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT);
    assert_int_equal(th->max_connections->value, conns ? conns : 2147483647u);
    assert_int_equal(th->max_pending_requests->value, pending ? pending : 2147483647u);
    assert_int_equal(th->max_requests->value, reqs ? reqs : 2147483647u);
    assert_int_equal(th->max_retries->value, 2147483647u);
}

/* App Mesh's default retry policy (aws-app-mesh-roadmap#229). */
static void default_retry(const Envoy__Config__Route__V3__RetryPolicy *rp)
{
    assert_non_null(rp);
    assert_string_equal(rp->retry_on,
                        "unavailable,connect-failure,refused-stream,retriable-status-codes");
    assert_int_equal(rp->num_retries->value, 2);
    assert_int_equal(rp->n_retriable_status_codes, 1);
    assert_int_equal(rp->retriable_status_codes[0], 503);
    assert_int_equal(rp->host_selection_retry_max_attempts, 5);
    assert_int_equal(rp->n_retry_host_predicate, 1);
    assert_string_equal(rp->retry_host_predicate[0]->name,
                        "envoy.retry_host_predicates.previous_hosts");
    assert_string_equal(
        rp->retry_host_predicate[0]->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate");
    assert_null(rp->per_try_timeout);
}

static size_t fake_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    (void)arg;
    assert_true(max >= 2);
    static const struct {
        const char *host, *a, *b;
    } tab[] = {
        {"a.local", "10.0.0.1", "10.0.0.2"},    {"front.local", "10.0.9.1", NULL},
        {"db.local", "10.0.1.1", NULL},         {"tcp-r.local", "10.0.2.1", "fd00::21"},
        {"svc.local", "10.0.3.1", NULL},        {"127.0.0.1", "127.0.0.1", NULL},
        {"dual.local", "fd00::51", "10.0.5.1"}, {"v6.local", "fd00::61", "fd00::62"},
        {"v4.local", "10.0.7.1", "10.0.7.2"},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (strcmp(host, tab[i].host) == 0) {
            strcpy(out[0], tab[i].a);
            if (tab[i].b == NULL) {
                return 1;
            }
            strcpy(out[1], tab[i].b);
            return 2;
        }
    }
    return 0;
}

struct fixture {
    struct tr_item vn[4], vs[4], vr[2], rt[4];
    struct tr_mesh m;
};

static struct fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.vn[0] = (struct tr_item){
        "front", NULL,
        J("{\"listeners\":["
          "{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"},"
          "\"timeout\":{\"http\":{\"perRequest\":{\"unit\":\"s\",\"value\":5},"
          "\"idle\":{\"unit\":\"s\",\"value\":60}}},"
          "\"connectionPool\":{\"http\":{\"maxConnections\":10,\"maxPendingRequests\":5}}},"
          "{\"portMapping\":{\"port\":9000,\"protocol\":\"tcp\"},"
          "\"timeout\":{\"tcp\":{\"idle\":{\"unit\":\"s\",\"value\":30}}}},"
          "{\"portMapping\":{\"port\":7000,\"protocol\":\"grpc\"}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"front.local\"}},"
          "\"logging\":{\"accessLog\":{\"file\":{\"path\":\"/dev/stdout\",\"format\":{\"json\":["
          "{\"key\":\"code\",\"value\":\"%RESPONSE_CODE%\"},{\"key\":\"path\",\"value\":\"%REQ(:"
          "PATH)%\"},"
          "{\"key\":\"code\",\"value\":\"%RESPONSE_CODE%!\"}]}}}},"
          "\"backends\":[{\"virtualService\":{\"virtualServiceName\":\"svc.local\"}},"
          "{\"virtualService\":{\"virtualServiceName\":\"db.local\"}},"
          "{\"virtualService\":{\"virtualServiceName\":\"tcp-r.local\"}},"
          "{\"virtualService\":{\"virtualServiceName\":\"not-yet.local\"}},"
          "{\"virtualService\":{\"virtualServiceName\":\"svc.local\"}}]}")};
    fx.vn[1] = (struct tr_item){
        "a", NULL,
        J("{\"listeners\":["
          "{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"},"
          "\"outlierDetection\":{\"maxServerErrors\":5,\"interval\":{\"unit\":\"s\",\"value\":10},"
          "\"baseEjectionDuration\":{\"unit\":\"s\",\"value\":30},\"maxEjectionPercent\":50},"
          "\"healthCheck\":{\"protocol\":\"http\",\"path\":\"/health\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":3,\"intervalMillis\":5000,\"timeoutMillis\":2000}},"
          "{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"},"
          "\"healthCheck\":{\"protocol\":\"grpc\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":3,\"intervalMillis\":5000,\"timeoutMillis\":2000},"
          "\"connectionPool\":{\"grpc\":{\"maxRequests\":7}}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"a.local\","
          "\"responseType\":\"ENDPOINTS\"}}}")};
    fx.vn[2] = (struct tr_item){
        "b", NULL,
        J("{\"listeners\":["
          "{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"},"
          "\"healthCheck\":{\"protocol\":\"tcp\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":2,\"intervalMillis\":6000,\"timeoutMillis\":2500}},"
          "{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"},"
          "\"healthCheck\":{\"protocol\":\"http2\",\"path\":\"/hz\",\"port\":9000,"
          "\"healthyThreshold\":2,\"unhealthyThreshold\":2,\"intervalMillis\":5000,"
          "\"timeoutMillis\":2000}}],"
          "\"logging\":{\"accessLog\":{\"file\":{\"path\":\"/dev/stderr\",\"format\":{"
          "\"text\":\"%START_TIME% %RESPONSE_CODE%\"}}}},"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"127.0.0.1\"}}}")};
    fx.vn[3] = (struct tr_item){
        "db", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":5432,\"protocol\":\"tcp\"},"
          "\"healthCheck\":{\"protocol\":\"tcp\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":2,\"intervalMillis\":5000,\"timeoutMillis\":2000,"
          "\"port\":5433}}],"
          "\"logging\":{\"accessLog\":{\"file\":{\"path\":\"/dev/stdout\"}}},"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"db.local\"}}}")};
    fx.vr[0] = (struct tr_item){
        "r", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"}},"
          "{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"}}]}")};
    fx.vr[1] = (struct tr_item){
        "tr", NULL, J("{\"listeners\":[{\"portMapping\":{\"port\":6000,\"protocol\":\"tcp\"}}]}")};
    fx.vs[0] = (struct tr_item){
        "svc.local", NULL, J("{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"r\"}}}")};
    fx.vs[1] = (struct tr_item){"db.local", NULL,
                                J("{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"db\"}}}")};
    fx.vs[2] =
        (struct tr_item){"tcp-r.local", NULL,
                         J("{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"tr\"}}}")};
    fx.vs[3] = (struct tr_item){
        "front.local", NULL, J("{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"front\"}}}")};
    /* http on 8080: 80/20 with retries and a timeout. */
    fx.rt[0] = (struct tr_item){
        "web", "r",
        J("{\"priority\":5,\"httpRoute\":{\"match\":{\"prefix\":\"/\",\"port\":8080},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":80,\"port\":8080},"
          "{\"virtualNode\":\"b\",\"weight\":20,\"port\":8080}]},"
          "\"retryPolicy\":{\"maxRetries\":2,\"perRetryTimeout\":{\"unit\":\"ms\",\"value\":1500},"
          "\"httpRetryEvents\":[\"server-error\",\"gateway-error\"],"
          "\"tcpRetryEvents\":[\"connection-error\"]},"
          "\"timeout\":{\"perRequest\":{\"unit\":\"s\",\"value\":3},"
          "\"idle\":{\"unit\":\"s\",\"value\":20}}}}")};
    /* http on 8080, first: GET with ?v=2 to b (gRPC clients cannot match these). */
    fx.rt[1] = (struct tr_item){
        "q", "r",
        J("{\"priority\":0,\"httpRoute\":{\"match\":{\"prefix\":\"/x\",\"method\":\"GET\","
          "\"queryParameters\":[{\"name\":\"v\",\"match\":{\"exact\":\"2\"}}],"
          "\"headers\":[{\"name\":\"x-h\",\"match\":{\"exact\":\"1\"}}],\"port\":8080},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"b\",\"weight\":1,"
          "\"port\":8080}]}}}")};
    fx.rt[2] = (struct tr_item){
        "rpc", "r",
        J("{\"grpcRoute\":{\"match\":{\"serviceName\":\"pkg.Svc\",\"port\":50051},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":1,"
          "\"port\":50051}]},"
          "\"retryPolicy\":{\"maxRetries\":1,\"perRetryTimeout\":{\"unit\":\"s\",\"value\":1},"
          "\"grpcRetryEvents\":[\"unavailable\"]}}}")};
    fx.rt[3] = (struct tr_item){
        "t", "tr",
        J("{\"tcpRoute\":{\"action\":{\"weightedTargets\":[{\"virtualNode\":\"db\",\"weight\":1}]},"
          "\"timeout\":{\"idle\":{\"unit\":\"s\",\"value\":10}}}}")};
    fx.m = (struct tr_mesh){.mesh = "m",
                            .mesh_spec = J("{\"egressFilter\":{\"type\":\"ALLOW_ALL\"}}"),
                            .vnodes = fx.vn,
                            .n_vnodes = 4,
                            .vservices = fx.vs,
                            .n_vservices = 4,
                            .vrouters = fx.vr,
                            .n_vrouters = 2,
                            .routes = fx.rt,
                            .n_routes = 4};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    struct tr_item *all[] = {fx.vn, fx.vs, fx.vr, fx.rt};
    size_t ns[] = {4, 4, 2, 4};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < ns[k]; i++) {
            json_decref(all[k][i].spec);
        }
    }
    json_decref(fx.m.mesh_spec);
    return 0;
}

static void drop_all(void)
{
    json_decref(fx.m.mesh_spec);
    fx.m.mesh_spec = J("{\"egressFilter\":{\"type\":\"DROP_ALL\"}}");
}

static Hcm *chain_hcm(const FilterChain *fc)
{
    assert_int_equal(fc->n_filters, 1);
    assert_string_equal(fc->filters[0]->name, "envoy.filters.network.http_connection_manager");
    Google__Protobuf__Any *a = fc->filters[0]->typed_config;
    assert_string_equal(a->type_url, "type.googleapis.com/envoy.extensions.filters.network."
                                     "http_connection_manager.v3.HttpConnectionManager");
    Hcm *h = (Hcm *)protobuf_c_message_unpack(
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor,
        NULL, a->value.len, a->value.data);
    assert_non_null(h);
    return h;
}

static TcpProxy *chain_tcp(const FilterChain *fc)
{
    assert_int_equal(fc->n_filters, 1);
    assert_string_equal(fc->filters[0]->name, "envoy.filters.network.tcp_proxy");
    Google__Protobuf__Any *a = fc->filters[0]->typed_config;
    TcpProxy *t = (TcpProxy *)protobuf_c_message_unpack(
        &envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor, NULL,
        a->value.len, a->value.data);
    assert_non_null(t);
    return t;
}

typedef Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog FileAccessLog;

/* The file logger of an access_log list (one entry). */
static FileAccessLog *file_log(Envoy__Config__Accesslog__V3__AccessLog *const *v, size_t n)
{
    assert_int_equal(n, 1);
    assert_string_equal(v[0]->name, "envoy.access_loggers.file");
    assert_string_equal(
        v[0]->typed_config->type_url,
        "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog");
    FileAccessLog *f = (FileAccessLog *)protobuf_c_message_unpack(
        &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor, NULL,
        v[0]->typed_config->value.len, v[0]->typed_config->value.data);
    assert_non_null(f);
    return f;
}

/* logging.accessLog.file: every connection manager and TCP proxy of the sidecar logs there;
 * json -> log_format.json_format (a repeated key keeps its last value), text ->
 * text_format_source with a newline added, no format -> Envoy's default; no logging: none. */
static void test_access_logs(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
                         &envoy__config__listener__v3__listener__descriptor);
    Hcm *h = chain_hcm(l->filter_chains[0]);
    FileAccessLog *f = file_log(h->access_log, h->n_access_log);
    assert_string_equal(f->path, "/dev/stdout");
    assert_int_equal(
        f->access_log_format_case,
        ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT);
    Google__Protobuf__Struct *st = f->log_format->json_format;
    assert_non_null(st);
    assert_int_equal(st->n_fields, 2);
    assert_string_equal(st->fields[0]->key, "path");
    assert_string_equal(st->fields[0]->value->string_value, "%REQ(:PATH)%");
    assert_string_equal(st->fields[1]->key, "code");
    assert_string_equal(st->fields[1]->value->string_value, "%RESPONSE_CODE%!");
    protobuf_c_message_free_unpacked(&f->base, NULL);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    TcpProxy *tp = chain_tcp(l->filter_chains[1]);
    f = file_log(tp->access_log, tp->n_access_log);
    assert_string_equal(f->path, "/dev/stdout");
    protobuf_c_message_free_unpacked(&f->base, NULL);
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    l = unpack(s, XDS_LDS, "lds_egress_0.0.0.0_15001",
               &envoy__config__listener__v3__listener__descriptor);
    for (size_t i = 0; i < l->n_filter_chains; i++) {
        const char *name = l->filter_chains[i]->filters[0]->name;
        size_t n = 0;
        if (strcmp(name, "envoy.filters.network.tcp_proxy") == 0) {
            tp = chain_tcp(l->filter_chains[i]);
            n = tp->n_access_log;
            protobuf_c_message_free_unpacked(&tp->base, NULL);
        } else {
            h = chain_hcm(l->filter_chains[i]);
            n = h->n_access_log;
            protobuf_c_message_free_unpacked(&h->base, NULL);
        }
        assert_int_equal(n, 1);
    }
    protobuf_c_message_free_unpacked(&l->base, NULL);
    xds_snapshot_free(s);

    s = translate_sidecar(&fx.m, "b", fake_resolve, NULL);
    l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
               &envoy__config__listener__v3__listener__descriptor);
    h = chain_hcm(l->filter_chains[0]);
    f = file_log(h->access_log, h->n_access_log);
    assert_string_equal(f->path, "/dev/stderr");
    assert_string_equal(f->log_format->text_format_source->inline_string,
                        "%START_TIME% %RESPONSE_CODE%\n");
    protobuf_c_message_free_unpacked(&f->base, NULL);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    xds_snapshot_free(s);

    s = translate_sidecar(&fx.m, "db", fake_resolve, NULL);
    l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
               &envoy__config__listener__v3__listener__descriptor);
    tp = chain_tcp(l->filter_chains[0]);
    f = file_log(tp->access_log, tp->n_access_log);
    assert_int_equal(
        f->access_log_format_case,
        ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT__NOT_SET);
    protobuf_c_message_free_unpacked(&f->base, NULL);
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    xds_snapshot_free(s);

    s = translate_sidecar(&fx.m, "a", fake_resolve, NULL); /* no logging */
    l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
               &envoy__config__listener__v3__listener__descriptor);
    h = chain_hcm(l->filter_chains[0]);
    assert_int_equal(h->n_access_log, 0);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    xds_snapshot_free(s);
}

static void test_names(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    assert_string_equal(s->vnode, "front");
    names_are(s, XDS_LDS, (const char *[]){"lds_egress_0.0.0.0_15001", "lds_ingress_0.0.0.0_15000"},
              2);
    names_are(s, XDS_CDS,
              (const char *[]){"cds_egress_m_a_grpc_50051", "cds_egress_m_a_http_8080",
                               "cds_egress_m_b_grpc_50051", "cds_egress_m_b_http_8080",
                               "cds_egress_m_db_tcp_5432", "cds_egress_passthrough",
                               "cds_ingress_m_front_grpc_7000", "cds_ingress_m_front_http_8080",
                               "cds_ingress_m_front_tcp_9000"},
              9);
    names_are(s, XDS_RDS,
              (const char *[]){"rds_egress_http_50051", "rds_egress_http_8080",
                               "rds_ingress_http_7000", "rds_ingress_http_8080"},
              4);
    names_are(s, XDS_EDS,
              (const char *[]){"cds_egress_m_a_grpc_50051", "cds_egress_m_a_http_8080",
                               "cds_egress_m_b_grpc_50051", "cds_egress_m_b_http_8080",
                               "cds_egress_m_db_tcp_5432"},
              5);
    xds_snapshot_free(s);

    /* No such node: nothing. A node without listeners or backends in a DROP_ALL mesh: only
     * the egress listener with DROP_ALL's AWS allowance (TLS by SNI) and its passthrough. */
    s = translate_sidecar(&fx.m, "nope", fake_resolve, NULL);
    for (int t = 0; t < XDS_NTYPES; t++) {
        assert_int_equal(s->n[t], 0);
    }
    xds_snapshot_free(s);
    drop_all();
    json_t *saved = fx.vn[2].spec;
    fx.vn[2].spec = J("{}");
    s = translate_sidecar(&fx.m, "b", fake_resolve, NULL);
    names_are(s, XDS_LDS, (const char *[]){"lds_egress_0.0.0.0_15001"}, 1);
    names_are(s, XDS_CDS, (const char *[]){"cds_egress_passthrough"}, 1);
    assert_int_equal(s->n[XDS_RDS], 0);
    assert_int_equal(s->n[XDS_EDS], 0);
    xds_snapshot_free(s);
    json_decref(fx.vn[2].spec);
    fx.vn[2].spec = saved;
}

static void test_ingress(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_string_equal(l->address->socket_address->address, "0.0.0.0");
    assert_int_equal(l->address->socket_address->port_value, 15000);
    assert_int_equal(l->n_listener_filters, 1);
    assert_string_equal(l->listener_filters[0]->name, "envoy.filters.listener.original_dst");
    assert_int_equal(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND);
    assert_null(l->default_filter_chain);
    assert_int_equal(l->n_filter_chains, 3);
    /* http 8080: AUTO, RDS over ADS. */
    FilterChain *fc = l->filter_chains[0];
    assert_int_equal(fc->filter_chain_match->destination_port->value, 8080);
    assert_int_equal(fc->filter_chain_match->n_prefix_ranges, 0);
    Hcm *h = chain_hcm(fc);
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO);
    assert_string_equal(h->stat_prefix, "ingress");
    assert_string_equal(h->rds->route_config_name, "rds_ingress_http_8080");
    assert_non_null(h->rds->config_source->ads);
    assert_string_equal(h->http_filters[h->n_http_filters - 1]->name, "envoy.filters.http.router");
    protobuf_c_message_free_unpacked(&h->base, NULL);
    /* tcp 9000: tcp_proxy to the local app, idle timeout. */
    fc = l->filter_chains[1];
    assert_int_equal(fc->filter_chain_match->destination_port->value, 9000);
    TcpProxy *tp = chain_tcp(fc);
    assert_string_equal(tp->cluster, "cds_ingress_m_front_tcp_9000");
    assert_int_equal(tp->idle_timeout->seconds, 30);
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    /* grpc 7000: HTTP/2 only. */
    fc = l->filter_chains[2];
    assert_int_equal(fc->filter_chain_match->destination_port->value, 7000);
    h = chain_hcm(fc);
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* The local cluster: STATIC 127.0.0.1:8080 with the connection pool as breakers. */
    Cluster *c = unpack(s, XDS_CDS, "cds_ingress_m_front_http_8080",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC);
    assert_null(c->eds_cluster_config);
    assert_string_equal(c->load_assignment->endpoints[0]
                            ->lb_endpoints[0]
                            ->endpoint->address->socket_address->address,
                        "127.0.0.1");
    assert_int_equal(c->load_assignment->endpoints[0]
                         ->lb_endpoints[0]
                         ->endpoint->address->socket_address->port_value,
                     8080);
    /* the pool's two values, App Mesh's 2147483647 for max_requests and max_retries */
    appmesh_breakers(c, 10, 5, 0);
    assert_int_equal(c->n_typed_extension_protocol_options, 0);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = unpack(s, XDS_CDS, "cds_ingress_m_front_grpc_7000",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_typed_extension_protocol_options, 1);
    assert_string_equal(c->typed_extension_protocol_options[0]->key,
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    appmesh_breakers(c, 0, 0, 0); /* no pool: App Mesh's thresholds */
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* Its routes: everything to the local cluster, the listener's timeouts. */
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_ingress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 1);
    assert_string_equal(rc->virtual_hosts[0]->domains[0], "*");
    Route *r = rc->virtual_hosts[0]->routes[0];
    assert_string_equal(r->match->prefix, "");
    assert_string_equal(r->route->cluster, "cds_ingress_m_front_http_8080");
    assert_int_equal(r->route->timeout->seconds, 5);
    assert_int_equal(r->route->idle_timeout->seconds, 60);
    assert_null(r->route->max_stream_duration);
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    xds_snapshot_free(s);
}

/* A listener with tls STRICT is not served in plaintext: its chain and local cluster are left
 * out (the ingress then refuses that port), and the other listeners stay. PERMISSIVE (which
 * accepts plaintext) is served. */
static void test_strict_tls_listener_left_out(void **state)
{
    (void)state;
    json_t *ls = json_object_get(fx.vn[0].spec, "listeners");
    json_t *saved = json_deep_copy(ls);
    json_object_set_new(json_array_get(ls, 0), "tls", J("{\"mode\":\"STRICT\"}"));
    json_object_set_new(json_array_get(ls, 1), "tls", J("{\"mode\":\"PERMISSIVE\"}"));
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_int_equal(l->n_filter_chains, 2);
    for (size_t i = 0; i < l->n_filter_chains; i++) {
        assert_int_not_equal(l->filter_chains[i]->filter_chain_match->destination_port->value,
                             8080);
    }
    assert_int_equal(l->filter_chains[0]->filter_chain_match->destination_port->value, 9000);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    assert_null(xds_snapshot_find(s, XDS_CDS, "cds_ingress_m_front_http_8080"));
    assert_non_null(xds_snapshot_find(s, XDS_CDS, "cds_ingress_m_front_tcp_9000"));
    xds_snapshot_free(s);
    json_object_set_new(fx.vn[0].spec, "listeners", saved);
}

static void test_egress_listener(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_egress_0.0.0.0_15001",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_int_equal(l->address->socket_address->port_value, 15001);
    assert_string_equal(l->listener_filters[0]->name, "envoy.filters.listener.original_dst");
    assert_int_equal(l->traffic_direction, ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND);
    /* HTTP ports of svc.local (8080, 50051), then db.local's and tcp-r.local's TCP chains. */
    assert_int_equal(l->n_filter_chains, 4);
    Hcm *h = chain_hcm(l->filter_chains[0]);
    assert_int_equal(l->filter_chains[0]->filter_chain_match->destination_port->value, 8080);
    assert_string_equal(h->rds->route_config_name, "rds_egress_http_8080");
    assert_string_equal(h->stat_prefix, "egress");
    protobuf_c_message_free_unpacked(&h->base, NULL);
    h = chain_hcm(l->filter_chains[1]);
    assert_int_equal(l->filter_chains[1]->filter_chain_match->destination_port->value, 50051);
    assert_string_equal(h->rds->route_config_name, "rds_egress_http_50051");
    /* AUTO: the app may speak h2c to an http2/grpc port. */
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO);
    protobuf_c_message_free_unpacked(&h->base, NULL);

    FilterChain *fc = l->filter_chains[2];
    assert_int_equal(fc->filter_chain_match->destination_port->value, 5432);
    assert_int_equal(fc->filter_chain_match->n_prefix_ranges, 1);
    assert_string_equal(fc->filter_chain_match->prefix_ranges[0]->address_prefix, "10.0.1.1");
    assert_int_equal(fc->filter_chain_match->prefix_ranges[0]->prefix_len->value, 32);
    TcpProxy *tp = chain_tcp(fc);
    assert_string_equal(tp->cluster, "cds_egress_m_db_tcp_5432");
    assert_null(tp->idle_timeout);
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    fc = l->filter_chains[3];
    assert_int_equal(fc->filter_chain_match->destination_port->value, 6000);
    assert_int_equal(fc->filter_chain_match->n_prefix_ranges, 2);
    assert_string_equal(fc->filter_chain_match->prefix_ranges[1]->address_prefix, "fd00::21");
    assert_int_equal(fc->filter_chain_match->prefix_ranges[1]->prefix_len->value, 128);
    tp = chain_tcp(fc);
    assert_string_equal(tp->cluster, "cds_egress_m_db_tcp_5432");
    assert_int_equal(tp->idle_timeout->seconds, 10);
    protobuf_c_message_free_unpacked(&tp->base, NULL);

    /* ALLOW_ALL: the default chain passes through. */
    assert_non_null(l->default_filter_chain);
    assert_null(l->default_filter_chain->filter_chain_match);
    tp = chain_tcp(l->default_filter_chain);
    assert_string_equal(tp->cluster, "cds_egress_passthrough");
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    Cluster *c = unpack(s, XDS_CDS, "cds_egress_passthrough",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST);
    assert_int_equal(c->lb_policy,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED);
    appmesh_breakers(c, 0, 0, 0);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    xds_snapshot_free(s);

    /* DROP_ALL: no default chain. front has TCP backends: no TLS chain for AWS (the
     * tls_inspector would hold server-speaks-first connections), but the passthrough cluster
     * for the *.amazonaws.com virtual hosts. */
    drop_all();
    s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    l = unpack(s, XDS_LDS, "lds_egress_0.0.0.0_15001",
               &envoy__config__listener__v3__listener__descriptor);
    assert_null(l->default_filter_chain);
    assert_int_equal(l->n_filter_chains, 4);
    assert_int_equal(l->n_listener_filters, 1);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    assert_non_null(xds_snapshot_find(s, XDS_CDS, "cds_egress_passthrough"));
    xds_snapshot_free(s);
}

static void builds_in_remora(struct xds_snapshot *s, uint32_t want_listeners);

/* DROP_ALL lets the app reach *.amazonaws.com, as App Mesh's: HTTP by a virtual host on each
 * egress port, TLS (HTTPS on 443) by the ClientHello's SNI, both to the passthrough. */
static void test_drop_all_allows_amazonaws(void **state)
{
    (void)state;
    drop_all();
    json_t *saved = fx.vn[2].spec;
    fx.vn[2].spec = J("{\"backends\":[{\"virtualService\":{\"virtualServiceName\":"
                      "\"svc.local\"}}]}");
    struct xds_snapshot *s = translate_sidecar(&fx.m, "b", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_egress_0.0.0.0_15001",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_null(l->default_filter_chain);
    assert_int_equal(l->n_listener_filters, 2);
    assert_string_equal(l->listener_filters[0]->name, "envoy.filters.listener.original_dst");
    assert_string_equal(l->listener_filters[1]->name, "envoy.filters.listener.tls_inspector");
    assert_int_equal(l->n_filter_chains, 3); /* http 50051, http 8080, AWS over TLS */
    FilterChain *fc = l->filter_chains[2];
    assert_string_equal(fc->name, "egress_amazonaws_tls");
    assert_null(fc->filter_chain_match->destination_port);
    assert_int_equal(fc->filter_chain_match->n_server_names, 1);
    assert_string_equal(fc->filter_chain_match->server_names[0], "*.amazonaws.com");
    assert_string_equal(fc->filter_chain_match->transport_protocol, "tls");
    TcpProxy *tp = chain_tcp(fc);
    assert_string_equal(tp->cluster, "cds_egress_passthrough");
    protobuf_c_message_free_unpacked(&tp->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_egress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 2);
    Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[1];
    assert_int_equal(vh->n_domains, 2);
    assert_string_equal(vh->domains[0], "*.amazonaws.com");
    assert_string_equal(vh->domains[1], "*.amazonaws.com:8080");
    assert_string_equal(vh->routes[0]->route->cluster, "cds_egress_passthrough");
    assert_null(vh->routes[0]->route->retry_policy); /* not an App Mesh route */
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    Cluster *c = unpack(s, XDS_CDS, "cds_egress_passthrough",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    builds_in_remora(s, 1);
    xds_snapshot_free(s);
    json_decref(fx.vn[2].spec);
    fx.vn[2].spec = saved;
}

static void test_egress_routes(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_egress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 2);
    Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[0];
    assert_int_equal(vh->n_domains, 2);
    assert_string_equal(vh->domains[0], "svc.local");
    assert_string_equal(vh->domains[1], "svc.local:8080");
    assert_int_equal(vh->n_routes, 2);
    /* q (priority 0): :method and the query parameter, then the header. */
    Route *r = vh->routes[0];
    assert_string_equal(r->name, "q");
    assert_string_equal(r->match->prefix, "/x");
    assert_int_equal(r->match->n_headers, 2);
    assert_string_equal(r->match->headers[0]->name, ":method");
    assert_string_equal(r->match->headers[0]->exact_match, "GET");
    assert_string_equal(r->match->headers[1]->name, "x-h");
    assert_int_equal(r->match->n_query_parameters, 1);
    assert_string_equal(r->match->query_parameters[0]->name, "v");
    assert_string_equal(r->match->query_parameters[0]->string_match->exact, "2");
    assert_string_equal(r->route->cluster, "cds_egress_m_b_http_8080");
    /* q has no retryPolicy: App Mesh's default one, as its Envoy had it */
    default_retry(r->route->retry_policy);
    /* web: 80/20, Envoy's retry names, timeouts; no total_weight, no max_stream_duration. */
    r = vh->routes[1];
    assert_string_equal(r->name, "web");
    Envoy__Config__Route__V3__WeightedCluster *wc = r->route->weighted_clusters;
    assert_non_null(wc);
    assert_int_equal(wc->n_clusters, 2);
    assert_string_equal(wc->clusters[0]->name, "cds_egress_m_a_http_8080");
    assert_int_equal(wc->clusters[0]->weight->value, 80);
    assert_string_equal(wc->clusters[1]->name, "cds_egress_m_b_http_8080");
    assert_int_equal(wc->clusters[1]->weight->value, 20);
    assert_null(wc->total_weight);
    assert_string_equal(r->route->retry_policy->retry_on,
                        "retriable-status-codes,reset,gateway-error,connect-failure");
    assert_int_equal(r->route->retry_policy->num_retries->value, 2);
    /* a route's own policy replaces the default whole: server-error's codes, not 503 alone */
    assert_int_equal(r->route->retry_policy->n_retriable_status_codes, 11);
    assert_int_equal(r->route->retry_policy->n_retry_host_predicate, 0);
    assert_int_equal(r->route->retry_policy->per_try_timeout->nanos, 500000000);
    assert_int_equal(r->route->timeout->seconds, 3);
    assert_int_equal(r->route->idle_timeout->seconds, 20);
    assert_null(r->route->max_stream_duration);
    /* ALLOW_ALL: other names pass through. */
    vh = rc->virtual_hosts[1];
    assert_string_equal(vh->domains[0], "*");
    assert_string_equal(vh->routes[0]->route->cluster, "cds_egress_passthrough");
    protobuf_c_message_free_unpacked(&rc->base, NULL);

    rc = unpack(s, XDS_RDS, "rds_egress_http_50051",
                &envoy__config__route__v3__route_configuration__descriptor);
    vh = rc->virtual_hosts[0];
    assert_string_equal(vh->domains[1], "svc.local:50051");
    assert_int_equal(vh->n_routes, 1);
    assert_string_equal(vh->routes[0]->match->prefix, "/pkg.Svc/");
    assert_string_equal(vh->routes[0]->route->cluster, "cds_egress_m_a_grpc_50051");
    assert_string_equal(vh->routes[0]->route->retry_policy->retry_on, "unavailable");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    xds_snapshot_free(s);

    drop_all();
    s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    rc = unpack(s, XDS_RDS, "rds_egress_http_8080",
                &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 2); /* no "*": svc.local, then *.amazonaws.com */
    assert_string_equal(rc->virtual_hosts[1]->domains[0], "*.amazonaws.com");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    xds_snapshot_free(s);
}

static void test_egress_clusters(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Cluster *c = unpack(s, XDS_CDS, "cds_egress_m_a_http_8080",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(c->eds_cluster_config->eds_config->ads);
    assert_int_equal(c->outlier_detection->consecutive_5xx->value, 5);
    assert_int_equal(c->outlier_detection->base_ejection_time->seconds, 30);
    assert_int_equal(c->n_health_checks, 1);
    Envoy__Config__Core__V3__HealthCheck *hc = c->health_checks[0];
    assert_string_equal(hc->http_health_check->path, "/health");
    assert_int_equal(hc->interval->seconds, 5);
    assert_int_equal(hc->timeout->seconds, 2);
    assert_int_equal(hc->healthy_threshold->value, 2);
    assert_int_equal(hc->unhealthy_threshold->value, 3);
    /* The target's connection pool is its own sidecar's business: App Mesh's client-side
     * thresholds (2147483647), never Envoy's 1024 defaults. */
    appmesh_breakers(c, 0, 0, 0);
    assert_int_equal(c->n_typed_extension_protocol_options, 0);
    assert_int_equal(hc->http_health_check->codec_client_type,
                     ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP1);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* grpc: HTTP/2 upstream and a gRPC health check (the gRPC health protocol, no service:
     * the server as a whole). */
    c = unpack(s, XDS_CDS, "cds_egress_m_a_grpc_50051",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_typed_extension_protocol_options, 1);
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->health_checker_case,
                     ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK);
    assert_true(c->health_checks[0]->grpc_health_check->service_name == NULL ||
                c->health_checks[0]->grpc_health_check->service_name[0] == '\0');
    assert_int_equal(c->health_checks[0]->interval->seconds, 5);
    /* a's pool (grpc maxRequests 7) is for a's own sidecar: not on the client's cluster */
    appmesh_breakers(c, 0, 0, 0);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* http2 on port 9000, not the listener's: an HTTP/2 check, and the endpoints carry the
     * port in health_check_config */
    c = unpack(s, XDS_CDS, "cds_egress_m_b_grpc_50051",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->http_health_check->codec_client_type,
                     ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2);
    assert_string_equal(c->health_checks[0]->http_health_check->path, "/hz");
    protobuf_c_message_free_unpacked(&c->base, NULL);
    Cla *bcla = unpack(s, XDS_EDS, "cds_egress_m_b_grpc_50051",
                       &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_int_equal(
        bcla->endpoints[0]->lb_endpoints[0]->endpoint->address->socket_address->port_value, 50051);
    assert_int_equal(bcla->endpoints[0]->lb_endpoints[0]->endpoint->health_check_config->port_value,
                     9000);
    protobuf_c_message_free_unpacked(&bcla->base, NULL);
    c = unpack(s, XDS_CDS, "cds_egress_m_b_http_8080",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->health_checker_case,
                     ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK);
    assert_int_equal(c->health_checks[0]->timeout->nanos, 500000000);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* A check on another port: the endpoints' health_check_config.port_value. */
    c = unpack(s, XDS_CDS, "cds_egress_m_db_tcp_5432",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->health_checker_case,
                     ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_TCP_HEALTH_CHECK);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    Cla *dbcla = unpack(s, XDS_EDS, "cds_egress_m_db_tcp_5432",
                        &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    for (size_t i = 0; i < dbcla->endpoints[0]->n_lb_endpoints; i++) {
        assert_int_equal(
            dbcla->endpoints[0]->lb_endpoints[i]->endpoint->health_check_config->port_value, 5433);
    }
    protobuf_c_message_free_unpacked(&dbcla->base, NULL);

    Cla *cla = unpack(s, XDS_EDS, "cds_egress_m_a_http_8080",
                      &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_int_equal(cla->endpoints[0]->n_lb_endpoints, 2);
    assert_string_equal(
        cla->endpoints[0]->lb_endpoints[1]->endpoint->address->socket_address->address, "10.0.0.2");
    assert_int_equal(
        cla->endpoints[0]->lb_endpoints[1]->endpoint->address->socket_address->port_value, 8080);
    assert_null(cla->endpoints[0]->lb_endpoints[1]->endpoint->health_check_config);
    protobuf_c_message_free_unpacked(&cla->base, NULL);
    xds_snapshot_free(s);

    /* Flavour A keeps its shape for the same mesh: breakers on the client's cluster, no
     * health checks, no HTTP/2 options. */
    s = translate_mesh(&fx.m, fake_resolve, NULL);
    c = unpack(s, XDS_CDS, "cds_egress_m_a_grpc_50051",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_requests->value, 7);
    assert_int_equal(c->n_typed_extension_protocol_options, 0);
    assert_int_equal(c->n_health_checks, 0);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    assert_null(xds_snapshot_find(s, XDS_LDS, "lds_ingress_0.0.0.0_15000"));
    xds_snapshot_free(s);
}

/* db's endpoints (front reaches db) with db's serviceDiscovery.dns `dns` and the mesh's spec
 * `mesh`: their addresses into out, their number returned. */
static size_t db_endpoints(const char *dns, const char *mesh, char out[][TR_ADDR_MAX])
{
    json_t *sd = json_object_get(fx.vn[3].spec, "serviceDiscovery");
    json_object_set_new(sd, "dns", J(dns));
    json_decref(fx.m.mesh_spec);
    fx.m.mesh_spec = J(mesh);
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Cla *cla = unpack(s, XDS_EDS, "cds_egress_m_db_tcp_5432",
                      &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    size_t n = cla->n_endpoints > 0 ? cla->endpoints[0]->n_lb_endpoints : 0;
    for (size_t i = 0; i < n; i++) {
        strcpy(out[i],
               cla->endpoints[0]->lb_endpoints[i]->endpoint->address->socket_address->address);
    }
    protobuf_c_message_free_unpacked(&cla->base, NULL);
    xds_snapshot_free(s);
    return n;
}

/* DNS responseType and ipPreference (the node's, else the mesh's), as App Mesh's Envoy
 * resolved them: LOADBALANCER (default) one address, ENDPOINTS all; a preferred family's
 * addresses when it has any, else the other's; *_ONLY that family only; no preference: IPv6
 * first. */
static void test_dns_response_type_and_ip_preference(void **state)
{
    (void)state;
    char a[TR_ADDRS_MAX][TR_ADDR_MAX];
    const char *none = "{\"egressFilter\":{\"type\":\"DROP_ALL\"}}";
    /* LOADBALANCER by default: one address; no preference: IPv6 preferred */
    assert_int_equal(db_endpoints("{\"hostname\":\"v4.local\"}", none, a), 1);
    assert_string_equal(a[0], "10.0.7.1");
    assert_int_equal(db_endpoints("{\"hostname\":\"dual.local\"}", none, a), 1);
    assert_string_equal(a[0], "fd00::51");
    assert_int_equal(
        db_endpoints("{\"hostname\":\"v4.local\",\"responseType\":\"LOADBALANCER\"}", none, a), 1);
    /* ENDPOINTS: all of the preferred family */
    assert_int_equal(
        db_endpoints("{\"hostname\":\"v4.local\",\"responseType\":\"ENDPOINTS\"}", none, a), 2);
    assert_string_equal(a[1], "10.0.7.2");
    assert_int_equal(
        db_endpoints("{\"hostname\":\"dual.local\",\"responseType\":\"ENDPOINTS\"}", none, a), 1);
    assert_string_equal(a[0], "fd00::51");
    assert_int_equal(db_endpoints("{\"hostname\":\"dual.local\",\"responseType\":\"ENDPOINTS\","
                                  "\"ipPreference\":\"IPv4_PREFERRED\"}",
                                  none, a),
                     1);
    assert_string_equal(a[0], "10.0.5.1");
    /* preferred family absent: the other's */
    assert_int_equal(db_endpoints("{\"hostname\":\"v6.local\",\"responseType\":\"ENDPOINTS\","
                                  "\"ipPreference\":\"IPv4_PREFERRED\"}",
                                  none, a),
                     2);
    assert_string_equal(a[0], "fd00::61");
    /* _ONLY: nothing of the other family */
    assert_int_equal(
        db_endpoints("{\"hostname\":\"v6.local\",\"ipPreference\":\"IPv4_ONLY\"}", none, a), 0);
    assert_int_equal(
        db_endpoints("{\"hostname\":\"dual.local\",\"ipPreference\":\"IPv4_ONLY\"}", none, a), 1);
    assert_string_equal(a[0], "10.0.5.1");
    assert_int_equal(
        db_endpoints("{\"hostname\":\"v4.local\",\"ipPreference\":\"IPv6_ONLY\"}", none, a), 0);
    /* the mesh's preference applies to a node without one; the node's wins */
    const char *mesh4 = "{\"serviceDiscovery\":{\"ipPreference\":\"IPv4_ONLY\"}}";
    assert_int_equal(db_endpoints("{\"hostname\":\"dual.local\"}", mesh4, a), 1);
    assert_string_equal(a[0], "10.0.5.1");
    assert_int_equal(
        db_endpoints("{\"hostname\":\"dual.local\",\"ipPreference\":\"IPv6_PREFERRED\"}", mesh4, a),
        1);
    assert_string_equal(a[0], "fd00::51");

    /* IPv6_*: the sidecar sends to its local app over IPv6 (::1), as App Mesh's */
    json_decref(fx.m.mesh_spec);
    fx.m.mesh_spec = J(none); /* no preference */
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Cluster *c = unpack(s, XDS_CDS, "cds_ingress_m_front_http_8080",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_string_equal(c->load_assignment->endpoints[0]
                            ->lb_endpoints[0]
                            ->endpoint->address->socket_address->address,
                        "127.0.0.1");
    protobuf_c_message_free_unpacked(&c->base, NULL);
    /* no preference: the listeners bind IPv4 only */
    const char *lnames[] = {"lds_ingress_0.0.0.0_15000", "lds_egress_0.0.0.0_15001"};
    for (size_t i = 0; i < 2; i++) {
        Listener *l =
            unpack(s, XDS_LDS, lnames[i], &envoy__config__listener__v3__listener__descriptor);
        assert_string_equal(l->address->socket_address->address, "0.0.0.0");
        assert_false(l->address->socket_address->ipv4_compat);
        protobuf_c_message_free_unpacked(&l->base, NULL);
    }
    xds_snapshot_free(s);
    /* any preference (IPv4_ONLY too): every IPv4 and IPv6 address, [::] with ipv4_compat, as
     * App Mesh's; the local app stays 127.0.0.1 but for IPv6_* */
    const char *prefs[] = {"IPv4_ONLY", "IPv6_PREFERRED"};
    for (size_t p = 0; p < 2; p++) {
        json_decref(fx.m.mesh_spec);
        char ms[96];
        snprintf(ms, sizeof(ms), "{\"serviceDiscovery\":{\"ipPreference\":\"%s\"}}", prefs[p]);
        fx.m.mesh_spec = J(ms);
        s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
        for (size_t i = 0; i < 2; i++) {
            Listener *l =
                unpack(s, XDS_LDS, lnames[i], &envoy__config__listener__v3__listener__descriptor);
            assert_string_equal(l->address->socket_address->address, "::");
            assert_true(l->address->socket_address->ipv4_compat);
            protobuf_c_message_free_unpacked(&l->base, NULL);
        }
        builds_in_remora(s, 2);
        xds_snapshot_free(s);
    }
    json_decref(fx.m.mesh_spec);
    fx.m.mesh_spec = J("{\"serviceDiscovery\":{\"ipPreference\":\"IPv6_PREFERRED\"}}");
    s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    c = unpack(s, XDS_CDS, "cds_ingress_m_front_http_8080",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_string_equal(c->load_assignment->endpoints[0]
                            ->lb_endpoints[0]
                            ->endpoint->address->socket_address->address,
                        "::1");
    protobuf_c_message_free_unpacked(&c->base, NULL);
    builds_in_remora(s, 2);
    xds_snapshot_free(s);
}

static void test_node_id(void **state)
{
    (void)state;
    char *m = NULL, *vn = NULL;
    assert_true(translate_node_id("mesh/shop/virtualNode/cart", &m, &vn));
    assert_string_equal(m, "shop");
    assert_string_equal(vn, "cart");
    free(m);
    free(vn);
    assert_true(translate_node_id(
        "arn:aws:appmesh:us-west-2:111122223333:mesh/shop/virtualNode/cart-v2", &m, &vn));
    assert_string_equal(m, "shop");
    assert_string_equal(vn, "cart-v2");
    free(m);
    free(vn);
    static const char *const bad[] = {
        "",
        "web-1",
        "mesh/shop",
        "mesh/shop/virtualNode/",
        "mesh//virtualNode/x",
        "mesh/shop/virtualGateway/gw",
        "mesh/shop/virtualNode/a/b",
        "xmesh/shop/virtualNode/a",
        "arn:aws:s3:us-west-2:111122223333:mesh/shop/virtualNode/a",
        "arn:aws:appmesh:us-west-2:mesh/shop/virtualNode/a",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = vn = NULL;
        if (translate_node_id(bad[i], &m, &vn)) {
            fail_msg("%s parsed as a node id", bad[i]);
        }
    }
}

/* The acceptance test: remora's own builder takes every resource of the snapshot. */
static void builds_in_remora(struct xds_snapshot *s, uint32_t want_listeners)
{
    json_t *b = xds_snapshot_bootstrap(s);
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    struct err err = {0};
    struct config *c = config_load_text(text, strlen(text), &err);
    if (c == NULL) {
        fail_msg("remora refuses node %s's resources: %s\nbootstrap: %s", s->vnode, err.msg, text);
    }
    assert_int_equal(c->n_listeners, want_listeners);
    assert_int_equal(c->n_clusters, s->n[XDS_CDS]);
    config_unref(c);
    free(text);
}

static void test_remora_accepts(void **state)
{
    (void)state;
    static const char *const nodes[] = {"front", "a", "b", "db"};
    static const uint32_t listeners_allow[] = {2, 2, 2, 2}, listeners_drop[] = {2, 2, 2, 2};
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < 4; i++) {
            struct xds_snapshot *s = translate_sidecar(&fx.m, nodes[i], fake_resolve, NULL);
            builds_in_remora(s, pass == 0 ? listeners_allow[i] : listeners_drop[i]);
            xds_snapshot_free(s);
        }
        drop_all();
    }
}

/* And the harness can fail: a route to a cluster the snapshot lacks is refused. */
static void test_remora_refuses_broken(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    json_t *b = xds_snapshot_bootstrap(s);
    json_t *clusters = json_object_get(json_object_get(b, "static_resources"), "clusters");
    size_t i;
    json_t *c;
    json_array_foreach(clusters, i, c)
    {
        if (strcmp(json_string_value(json_object_get(c, "name")), "cds_egress_m_a_http_8080") ==
            0) {
            json_array_remove(clusters, i);
            break;
        }
    }
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    struct err err = {0};
    struct config *cfg = config_load_text(text, strlen(text), &err);
    assert_null(cfg);
    assert_non_null(strstr(err.msg, "cds_egress_m_a_http_8080"));
    free(text);
    xds_snapshot_free(s);
}

/* ---- TLS ---- */

typedef Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext DownstreamTls;
typedef Envoy__Extensions__TransportSockets__Tls__V3__UpstreamTlsContext UpstreamTls;
typedef Envoy__Extensions__TransportSockets__Tls__V3__CommonTlsContext CommonTls;

#define TD "mesh.test"
#define FRONT_ID "spiffe://" TD "/mesh/m/virtualNode/front"
#define A_ID "spiffe://" TD "/mesh/m/virtualNode/a"
#define BUNDLE "spiffe://" TD

static ProtobufCMessage *ts_unpack(const Envoy__Config__Core__V3__TransportSocket *ts,
                                   const ProtobufCMessageDescriptor *d)
{
    assert_non_null(ts);
    assert_string_equal(ts->name, "envoy.transport_sockets.tls");
    assert_non_null(strstr(ts->typed_config->type_url, d->name));
    return protobuf_c_message_unpack(d, NULL, ts->typed_config->value.len,
                                     ts->typed_config->value.data);
}

/* The chain of `l` for destination port `port` and transport protocol `tp` ("" for any). */
static FilterChain *chain_for(const Listener *l, uint32_t port, const char *tp)
{
    for (size_t i = 0; i < l->n_filter_chains; i++) {
        const Envoy__Config__Listener__V3__FilterChainMatch *m =
            l->filter_chains[i]->filter_chain_match;
        if (m->destination_port->value == port && strcmp(m->transport_protocol, tp) == 0) {
            return l->filter_chains[i];
        }
    }
    return NULL;
}

/* A node whose listeners are STRICT (mTLS, SAN pinned) and PERMISSIVE, and whose backends use
 * client policy tls: with a CA, DownstreamTlsContexts and UpstreamTlsContexts over SDS, the
 * secrets named, and remora's own builder takes it all (with an ads_config). */
static void test_tls_translated_with_ca(void **state)
{
    (void)state;
    json_t *spec = json_deep_copy(fx.vn[0].spec);
    json_t *ls = json_object_get(fx.vn[0].spec, "listeners");
    json_object_set_new(
        json_array_get(ls, 0), "tls",
        J("{\"mode\":\"STRICT\",\"certificate\":{\"sds\":{\"secretName\":\"" FRONT_ID
          "\"}},\"validation\":{\"trust\":{\"sds\":{\"secretName\":\"" BUNDLE
          "\"}},\"subjectAlternativeNames\":{\"match\":{\"exact\":[\"" A_ID "\"]}}}}"));
    json_object_set_new(json_array_get(ls, 1), "tls",
                        J("{\"mode\":\"PERMISSIVE\",\"certificate\":{\"sds\":{}}}"));
    json_object_set_new(fx.vn[0].spec, "backendDefaults",
                        J("{\"clientPolicy\":{\"tls\":{\"certificate\":{\"sds\":{\"secretName\":"
                          "\"" FRONT_ID "\"}},\"validation\":{\"trust\":{\"sds\":{\"secretName\":"
                          "\"" BUNDLE "\"}}}}}}"));
    fx.m.trust_domain = TD;
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    fx.m.trust_domain = NULL;

    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
                         &envoy__config__listener__v3__listener__descriptor);
    /* 8080 STRICT (one TLS chain), 9000 PERMISSIVE (tls + raw_buffer), 7000 plaintext */
    assert_int_equal(l->n_filter_chains, 4);
    assert_int_equal(l->n_listener_filters, 2);
    assert_string_equal(l->listener_filters[1]->name, "envoy.filters.listener.tls_inspector");
    FilterChain *strict = chain_for(l, 8080, "");
    DownstreamTls *d = (DownstreamTls *)ts_unpack(
        strict->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_true(d->require_client_certificate->value);
    CommonTls *c = d->common_tls_context;
    assert_int_equal(c->n_tls_certificate_sds_secret_configs, 1);
    assert_string_equal(c->tls_certificate_sds_secret_configs[0]->name, FRONT_ID);
    assert_non_null(c->tls_certificate_sds_secret_configs[0]->sds_config->ads);
    assert_int_equal(
        c->validation_context_type_case,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__COMMON_TLS_CONTEXT__VALIDATION_CONTEXT_TYPE_COMBINED_VALIDATION_CONTEXT);
    assert_string_equal(c->combined_validation_context->validation_context_sds_secret_config->name,
                        BUNDLE);
    const Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext *v =
        c->combined_validation_context->default_validation_context;
    assert_int_equal(v->n_match_typed_subject_alt_names, 1);
    assert_int_equal(
        v->match_typed_subject_alt_names[0]->san_type,
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SUBJECT_ALT_NAME_MATCHER__SAN_TYPE__URI);
    assert_string_equal(v->match_typed_subject_alt_names[0]->matcher->exact, A_ID);
    /* an HTTP listener: App Mesh's ALPN, h2 then http/1.1 */
    assert_int_equal(c->n_alpn_protocols, 2);
    assert_string_equal(c->alpn_protocols[0], "h2");
    assert_string_equal(c->alpn_protocols[1], "http/1.1");
    protobuf_c_message_free_unpacked(&d->base, NULL);

    FilterChain *ptls = chain_for(l, 9000, "tls"), *praw = chain_for(l, 9000, "raw_buffer");
    assert_non_null(ptls);
    assert_non_null(praw);
    assert_null(praw->transport_socket);
    d = (DownstreamTls *)ts_unpack(
        ptls->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_null(d->require_client_certificate); /* no validation: no client certificate */
    /* no secretName: the node's own identity */
    assert_string_equal(d->common_tls_context->tls_certificate_sds_secret_configs[0]->name,
                        FRONT_ID);
    assert_int_equal(d->common_tls_context->n_alpn_protocols, 0); /* tcp: not HTTP */
    protobuf_c_message_free_unpacked(&d->base, NULL);
    assert_null(chain_for(l, 7000, "")->transport_socket);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    Cluster *cl = unpack(s, XDS_CDS, "cds_egress_m_a_http_8080",
                         &envoy__config__cluster__v3__cluster__descriptor);
    UpstreamTls *u = (UpstreamTls *)ts_unpack(
        cl->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_string_equal(u->common_tls_context->tls_certificate_sds_secret_configs[0]->name,
                        FRONT_ID);
    assert_string_equal(u->common_tls_context->validation_context_sds_secret_config->name, BUNDLE);
    /* ALPN: the cluster's own protocol (an HTTP/1.1 cluster must not be offered h2) */
    assert_int_equal(u->common_tls_context->n_alpn_protocols, 1);
    assert_string_equal(u->common_tls_context->alpn_protocols[0], "http/1.1");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    protobuf_c_message_free_unpacked(&cl->base, NULL);
    cl = unpack(s, XDS_CDS, "cds_egress_m_a_grpc_50051",
                &envoy__config__cluster__v3__cluster__descriptor);
    u = (UpstreamTls *)ts_unpack(
        cl->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_int_equal(u->common_tls_context->n_alpn_protocols, 1);
    assert_string_equal(u->common_tls_context->alpn_protocols[0], "h2");
    protobuf_c_message_free_unpacked(&u->base, NULL);
    protobuf_c_message_free_unpacked(&cl->base, NULL);
    cl = unpack(s, XDS_CDS, "cds_egress_m_db_tcp_5432",
                &envoy__config__cluster__v3__cluster__descriptor);
    u = (UpstreamTls *)ts_unpack(
        cl->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__upstream_tls_context__descriptor);
    assert_int_equal(u->common_tls_context->n_alpn_protocols, 0);
    protobuf_c_message_free_unpacked(&u->base, NULL);
    protobuf_c_message_free_unpacked(&cl->base, NULL);
    /* the ingress (local app) clusters stay plaintext */
    cl = unpack(s, XDS_CDS, "cds_ingress_m_front_http_8080",
                &envoy__config__cluster__v3__cluster__descriptor);
    assert_null(cl->transport_socket);
    protobuf_c_message_free_unpacked(&cl->base, NULL);

    assert_int_equal(s->n_secrets, 2);
    assert_string_equal(s->secrets[0].name, FRONT_ID);
    assert_false(s->secrets[0].ca);
    assert_string_equal(s->secrets[1].name, BUNDLE);
    assert_true(s->secrets[1].ca);

    /* remora takes it: a bootstrap with the snapshot as static resources and an ads_config */
    json_t *b = xds_snapshot_bootstrap(s);
    json_t *clusters = json_object_get(json_object_get(b, "static_resources"), "clusters");
    json_array_append_new(
        clusters,
        J("{\"name\":\"xds\",\"type\":\"STATIC\",\"typed_extension_protocol_options\":{"
          "\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\":{\"@type\":\"type."
          "googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\","
          "\"explicit_http_config\":{\"http2_protocol_options\":{}}}},\"load_assignment\":{"
          "\"cluster_name\":\"xds\",\"endpoints\":[{\"lb_endpoints\":[{\"endpoint\":{\"address\":"
          "{\"socket_address\":{\"address\":\"127.0.0.1\",\"port_value\":18000}}}}]}]}}"));
    json_object_set_new(b, "dynamic_resources",
                        J("{\"ads_config\":{\"api_type\":\"GRPC\",\"transport_api_version\":\"V3\","
                          "\"grpc_services\":[{\"envoy_grpc\":{\"cluster_name\":\"xds\"}}]}}"));
    char *text = json_dumps(b, JSON_COMPACT);
    json_decref(b);
    struct err err = {0};
    struct config *cfg = config_load_text(text, strlen(text), &err);
    if (cfg == NULL) {
        fail_msg("remora refuses the TLS resources: %s\nbootstrap: %s", err.msg, text);
    }
    uint32_t ads_secrets = 0;
    for (uint32_t i = 0; i < cfg->n_sds; i++) {
        ads_secrets += cfg->sds[i].ads ? 1 : 0;
    }
    assert_int_equal(ads_secrets, 2);
    config_unref(cfg);
    free(text);
    xds_snapshot_free(s);
    json_decref(fx.vn[0].spec);
    fx.vn[0].spec = spec;
}

/* Without a CA, SDS sources are not translated: STRICT is left out (fail closed), PERMISSIVE
 * serves plaintext only, client policy tls over SDS stays plaintext (the former behaviour);
 * `file` sources are translated with their paths; `acm` fails closed even with a CA. */
static void test_tls_without_ca_file_and_acm(void **state)
{
    (void)state;
    json_t *spec = json_deep_copy(fx.vn[0].spec);
    json_t *ls = json_object_get(fx.vn[0].spec, "listeners");
    json_object_set_new(json_array_get(ls, 0), "tls",
                        J("{\"mode\":\"STRICT\",\"certificate\":{\"sds\":{}}}"));
    json_object_set_new(json_array_get(ls, 1), "tls",
                        J("{\"mode\":\"STRICT\",\"certificate\":{\"file\":{\"certificateChain\":"
                          "\"/etc/c.pem\",\"privateKey\":\"/etc/k.pem\"}},\"validation\":{"
                          "\"trust\":{\"file\":{\"certificateChain\":\"/etc/ca.pem\"}}}}"));
    json_object_set_new(json_array_get(ls, 2), "tls",
                        J("{\"mode\":\"PERMISSIVE\",\"certificate\":{\"sds\":{}}}"));
    json_object_set_new(
        fx.vn[0].spec, "backendDefaults",
        J("{\"clientPolicy\":{\"tls\":{\"validation\":{\"trust\":{\"sds\":{}}}}}}"));
    struct xds_snapshot *s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_int_equal(l->n_filter_chains, 2);
    assert_null(chain_for(l, 8080, ""));                   /* STRICT over SDS: left out */
    assert_null(chain_for(l, 7000, "")->transport_socket); /* PERMISSIVE: plaintext */
    assert_int_equal(l->n_listener_filters, 1);
    DownstreamTls *d = (DownstreamTls *)ts_unpack(
        chain_for(l, 9000, "")->transport_socket,
        &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    CommonTls *c = d->common_tls_context;
    assert_string_equal(c->tls_certificates[0]->certificate_chain->filename, "/etc/c.pem");
    assert_string_equal(c->tls_certificates[0]->private_key->filename, "/etc/k.pem");
    assert_string_equal(c->validation_context->trusted_ca->filename, "/etc/ca.pem");
    assert_true(d->require_client_certificate->value);
    protobuf_c_message_free_unpacked(&d->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);
    Cluster *cl = unpack(s, XDS_CDS, "cds_egress_m_a_http_8080",
                         &envoy__config__cluster__v3__cluster__descriptor);
    assert_null(cl->transport_socket);
    protobuf_c_message_free_unpacked(&cl->base, NULL);
    assert_int_equal(s->n_secrets, 0);
    xds_snapshot_free(s);

    /* acm, with a CA: the STRICT listener is left out, and so are the clusters of a client
     * policy that cannot be translated */
    json_object_set_new(json_array_get(ls, 0), "tls",
                        J("{\"mode\":\"STRICT\",\"certificate\":{\"acm\":{\"certificateArn\":"
                          "\"arn:x\"}}}"));
    json_object_set_new(fx.vn[0].spec, "backendDefaults",
                        J("{\"clientPolicy\":{\"tls\":{\"validation\":{\"trust\":{\"acm\":{"
                          "\"certificateAuthorityArns\":[\"arn:y\"]}}}}}}"));
    fx.m.trust_domain = TD;
    s = translate_sidecar(&fx.m, "front", fake_resolve, NULL);
    fx.m.trust_domain = NULL;
    l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_15000",
               &envoy__config__listener__v3__listener__descriptor);
    assert_null(chain_for(l, 8080, ""));
    protobuf_c_message_free_unpacked(&l->base, NULL);
    assert_null(xds_snapshot_find(s, XDS_CDS, "cds_egress_m_a_http_8080"));
    xds_snapshot_free(s);
    json_decref(fx.vn[0].spec);
    fx.vn[0].spec = spec;
}

/* Service names that would make the egress routes invalid (a '*', the same name but for
 * case) are left out; the rest stays, and remora still takes it. */
static void test_bad_domains_left_out(void **state)
{
    (void)state;
    struct tr_item vs[6];
    memcpy(vs, fx.vs, sizeof(fx.vs));
    vs[4] = (struct tr_item){"SVC.LOCAL", NULL,
                             J("{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"r\"}}}")};
    vs[5] = (struct tr_item){"*.local", NULL,
                             J("{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"r\"}}}")};
    struct tr_item front = fx.vn[0];
    json_t *spec = json_deep_copy(front.spec);
    json_t *bs = json_object_get(spec, "backends");
    json_array_append_new(bs, J("{\"virtualService\":{\"virtualServiceName\":\"SVC.LOCAL\"}}"));
    json_array_append_new(bs, J("{\"virtualService\":{\"virtualServiceName\":\"*.local\"}}"));
    struct tr_item vn[4];
    memcpy(vn, fx.vn, sizeof(fx.vn));
    vn[0].spec = spec;
    struct tr_mesh m = fx.m;
    m.vservices = vs;
    m.n_vservices = 6;
    m.vnodes = vn;
    struct xds_snapshot *s = translate_sidecar(&m, "front", fake_resolve, NULL);
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_egress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 2);
    assert_string_equal(rc->virtual_hosts[0]->domains[0], "svc.local");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    builds_in_remora(s, 2);
    xds_snapshot_free(s);
    json_decref(spec);
    json_decref(vs[4].spec);
    json_decref(vs[5].spec);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ingress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_tls_listener_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_all_allows_amazonaws, setup, teardown),
        cmocka_unit_test_setup_teardown(test_egress_clusters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_node_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dns_response_type_and_ip_preference, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remora_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_logs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remora_refuses_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_domains_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_translated_with_ca, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_without_ca_file_and_acm, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
