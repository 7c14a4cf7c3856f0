/* Unit tests for the virtual gateway flavour of translate (translate_gateway): a representative
 * gateway (http, http2 and grpc listeners; STRICT and PERMISSIVE TLS over SDS; a connection
 * pool; a file access log; a client policy) whose gateway routes go to a service behind a
 * router with two routes (prefix rewrites composed with the router's prefixes), to a service
 * provided by a node (by hostname, exact path with a path rewrite, no rewrites), and to a gRPC
 * service, in App Mesh's priority and longest-prefix order. Checked by decoding what it packed;
 * node ids; and the acceptance test: every resource, made into a static bootstrap
 * (xds_snapshot_bootstrap), is taken by remora's own config builder (config_load_text). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/tls.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "xds/appmesh/dump.h"
#include "xds/appmesh/translate.h"
#include "tests/unit/xds/appmesh/tr_test.h"

typedef Envoy__Config__Listener__V3__Listener Listener;
typedef Envoy__Config__Cluster__V3__Cluster Cluster;
typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Config__Route__V3__Route Route;
typedef Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager Hcm;

#define TD "mesh.test"
#define GW_ID "spiffe://" TD "/mesh/m/virtualGateway/gw"

static size_t fake_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    (void)arg;
    (void)max;
    if (strcmp(host, "a.local") == 0) {
        strcpy(out[0], "10.0.0.1");
        return 1;
    }
    if (strcmp(host, "b.local") == 0) {
        strcpy(out[0], "10.0.0.2");
        return 1;
    }
    if (strcmp(host, "c.local") == 0) {
        strcpy(out[0], "10.0.0.3");
        return 1;
    }
    return 0;
}

struct fixture {
    struct tr_item vn[4], vs[3], vr[1], rt[2], vg[1], gr[8];
    struct tr_mesh m;
};

static struct fixture fx;

#define VS_ROUTER "{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"r\"}}}"
#define ACT(vs) "\"action\":{\"target\":{\"virtualService\":{\"virtualServiceName\":\"" vs "\"}}"

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.vn[0] = (struct tr_item){
        "a", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"},"
          "\"healthCheck\":{\"protocol\":\"http\",\"path\":\"/health\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":3,\"intervalMillis\":5000,\"timeoutMillis\":2000},"
          "\"outlierDetection\":{\"maxServerErrors\":5,\"interval\":{\"unit\":\"s\",\"value\":10},"
          "\"baseEjectionDuration\":{\"unit\":\"s\",\"value\":30},\"maxEjectionPercent\":50}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"a.local\"}}}")};
    fx.vn[1] = (struct tr_item){
        "b", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"b.local\"}}}")};
    fx.vn[2] = (struct tr_item){
        "c", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":9090,\"protocol\":\"http2\"},"
          "\"healthCheck\":{\"protocol\":\"http2\",\"path\":\"/hz\",\"port\":9091,"
          "\"healthyThreshold\":2,\"unhealthyThreshold\":2,\"intervalMillis\":5000,"
          "\"timeoutMillis\":2000}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"c.local\"}}}")};
    fx.vn[3] = (struct tr_item){
        "g", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"},"
          "\"healthCheck\":{\"protocol\":\"grpc\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":2,\"intervalMillis\":5000,\"timeoutMillis\":2000}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"c.local\"}}}")};
    fx.vr[0] = (struct tr_item){
        "r", NULL, J("{\"listeners\":[{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"}}]}")};
    /* the router: /api to b first, the rest 80/20 to a and b */
    fx.rt[0] = (struct tr_item){
        "api", "r",
        J("{\"priority\":0,\"httpRoute\":{\"match\":{\"prefix\":\"/api\"},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"b\",\"weight\":1}]}}}")};
    fx.rt[1] = (struct tr_item){
        "web", "r",
        J("{\"priority\":5,\"httpRoute\":{\"match\":{\"prefix\":\"/\"},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":80},"
          "{\"virtualNode\":\"b\",\"weight\":20}]},"
          "\"retryPolicy\":{\"maxRetries\":2,\"httpRetryEvents\":[\"server-error\"]}}}")};
    fx.vs[0] = (struct tr_item){"svc.local", NULL, J(VS_ROUTER)};
    fx.vs[1] = (struct tr_item){"c.local", NULL,
                                J("{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"c\"}}}")};
    fx.vs[2] = (struct tr_item){"g.local", NULL,
                                J("{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"g\"}}}")};
    fx.vg[0] = (struct tr_item){
        "gw", NULL,
        J("{\"listeners\":["
          "{\"portMapping\":{\"port\":8080,\"protocol\":\"http\"},"
          "\"tls\":{\"mode\":\"PERMISSIVE\",\"certificate\":{\"sds\":{}}},"
          "\"healthCheck\":{\"protocol\":\"http\",\"path\":\"/\",\"healthyThreshold\":2,"
          "\"unhealthyThreshold\":2,\"intervalMillis\":5000,\"timeoutMillis\":2000},"
          "\"connectionPool\":{\"http\":{\"maxConnections\":100,\"maxPendingRequests\":10}}},"
          "{\"portMapping\":{\"port\":8443,\"protocol\":\"http2\"},"
          "\"tls\":{\"mode\":\"STRICT\",\"certificate\":{\"sds\":{}},"
          "\"validation\":{\"trust\":{\"sds\":{}}}}},"
          "{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"}}],"
          "\"backendDefaults\":{\"clientPolicy\":{\"tls\":{\"validation\":{\"trust\":{\"sds\":{}}}}"
          "}},"
          "\"logging\":{\"accessLog\":{\"file\":{\"path\":\"/dev/stdout\"}}}}")};
    /* http on 8080: by prefix to the router's service (default rewrites) */
    fx.gr[0] = (struct tr_item){
        "to-svc", "gw",
        J("{\"httpRoute\":{\"match\":{\"prefix\":\"/svc\",\"port\":8080}," ACT("svc.local") "}}}")};
    /* a longer prefix without a priority: before /svc */
    fx.gr[1] =
        (struct tr_item){"to-c-long", "gw",
                         J("{\"httpRoute\":{\"match\":{\"prefix\":\"/svc/c/\",\"port\":8080}," ACT(
                             "c.local") ",\"rewrite\":{\"prefix\":{\"value\":\"/x/\"}}}}}")};
    /* priority 1, by hostname, no rewrites, GET ?v=1 with a header */
    fx.gr[2] = (struct tr_item){
        "by-host", "gw",
        J("{\"priority\":1,\"httpRoute\":{\"match\":{\"prefix\":\"/\",\"port\":8080,"
          "\"hostname\":{\"suffix\":\".example.com\"},\"method\":\"GET\","
          "\"queryParameters\":[{\"name\":\"v\",\"match\":{\"exact\":\"1\"}}],"
          "\"headers\":[{\"name\":\"x-h\",\"match\":{\"exact\":\"y\"}}]}," ACT(
              "c.local") ",\"rewrite\":{\"hostname\":{\"defaultTargetHostname\":\"DISABLED\"},"
                         "\"prefix\":{\"defaultPrefix\":\"DISABLED\"}}}}}")};
    /* priority 0: an exact path rewritten */
    fx.gr[3] =
        (struct tr_item){"exact", "gw",
                         J("{\"priority\":0,\"httpRoute\":{\"match\":{\"path\":{\"exact\":\"/"
                           "old\"},\"port\":8080}," ACT(
                               "c.local") ",\"rewrite\":{\"path\":{\"exact\":\"/new\"}}}}}")};
    /* http2 on 8443: a hostname */
    fx.gr[4] =
        (struct tr_item){"h2", "gw",
                         J("{\"http2Route\":{\"match\":{\"prefix\":\"/\",\"port\":8443,"
                           "\"hostname\":{\"exact\":\"c.example.com\"}}," ACT("c.local") "}}}")};
    /* grpc on 50051 */
    fx.gr[5] = (struct tr_item){
        "rpc", "gw",
        J("{\"grpcRoute\":{\"match\":{\"serviceName\":\"pkg.Svc\",\"port\":50051,"
          "\"metadata\":[{\"name\":\"tenant\",\"match\":{\"exact\":\"t1\"}}]}," ACT(
              "g.local") "}}}")};
    /* a target that does not exist: left out */
    fx.gr[6] =
        (struct tr_item){"gone", "gw",
                         J("{\"httpRoute\":{\"match\":{\"prefix\":\"/gone\",\"port\":8080}," ACT(
                             "nope.local") "}}}")};
    /* another gateway's route: not this one's */
    fx.gr[7] = (struct tr_item){
        "other", "gw2",
        J("{\"httpRoute\":{\"match\":{\"prefix\":\"/\",\"port\":8080}," ACT("c.local") "}}}")};
    fx.m = (struct tr_mesh){.mesh = "m",
                            .trust_domain = TD,
                            .vnodes = fx.vn,
                            .n_vnodes = 4,
                            .vservices = fx.vs,
                            .n_vservices = 3,
                            .vrouters = fx.vr,
                            .n_vrouters = 1,
                            .routes = fx.rt,
                            .n_routes = 2,
                            .vgateways = fx.vg,
                            .n_vgateways = 1,
                            .groutes = fx.gr,
                            .n_groutes = 8};
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    struct tr_item *all[] = {fx.vn, fx.vs, fx.vr, fx.rt, fx.vg, fx.gr};
    size_t ns[] = {4, 3, 1, 2, 1, 8};
    for (size_t k = 0; k < 6; k++) {
        for (size_t i = 0; i < ns[k]; i++) {
            json_decref(all[k][i].spec);
        }
    }
    return 0;
}

static ProtobufCMessage *any_unpack(const Google__Protobuf__Any *a,
                                    const ProtobufCMessageDescriptor *d)
{
    assert_non_null(strstr(a->type_url, d->name));
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, a->value.len, a->value.data);
    assert_non_null(m);
    return m;
}

static Hcm *listener_hcm(const Listener *l, size_t chain)
{
    assert_true(chain < l->n_filter_chains);
    assert_int_equal(l->filter_chains[chain]->n_filters, 1);
    return (Hcm *)any_unpack(
        l->filter_chains[chain]->filters[0]->typed_config,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
}

/* App Mesh's gateway Envoy shape: the names, one listener per port bound directly (no
 * original_dst, no iptables), the clusters of the nodes the targets reach. */
static void test_names_and_listeners(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_gateway(&fx.m, "gw", fake_resolve, NULL);
    assert_true(s->gateway);
    assert_string_equal(s->vnode, "gw");
    names_are(s, XDS_LDS,
              (const char *[]){"lds_ingress_0.0.0.0_50051", "lds_ingress_0.0.0.0_8080",
                               "lds_ingress_0.0.0.0_8443"},
              3);
    names_are(s, XDS_RDS,
              (const char *[]){"rds_ingress_http_50051", "rds_ingress_http_8080",
                               "rds_ingress_http_8443"},
              3);
    names_are(s, XDS_CDS,
              (const char *[]){"cds_egress_m_a_http_8080", "cds_egress_m_b_http_8080",
                               "cds_egress_m_c_http2_9090", "cds_egress_m_g_grpc_50051"},
              4);
    names_are(s, XDS_EDS,
              (const char *[]){"cds_egress_m_a_http_8080", "cds_egress_m_b_http_8080",
                               "cds_egress_m_c_http2_9090", "cds_egress_m_g_grpc_50051"},
              4);

    /* http: 0.0.0.0:8080, PERMISSIVE (tls and plaintext chains, the tls_inspector), AUTO */
    Listener *l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_8080",
                         &envoy__config__listener__v3__listener__descriptor);
    assert_string_equal(l->address->socket_address->address, "0.0.0.0");
    assert_int_equal(l->address->socket_address->port_value, 8080);
    assert_int_equal(l->n_listener_filters, 1);
    assert_string_equal(l->listener_filters[0]->name, "envoy.filters.listener.tls_inspector");
    assert_int_equal(l->n_filter_chains, 2);
    assert_string_equal(l->filter_chains[0]->filter_chain_match->transport_protocol, "tls");
    assert_null(l->filter_chains[0]->filter_chain_match->destination_port);
    assert_non_null(l->filter_chains[0]->transport_socket);
    assert_string_equal(l->filter_chains[1]->filter_chain_match->transport_protocol, "raw_buffer");
    assert_null(l->filter_chains[1]->transport_socket);
    Hcm *h = listener_hcm(l, 0);
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO);
    assert_string_equal(h->rds->route_config_name, "rds_ingress_http_8080");
    assert_non_null(h->rds->config_source->ads);
    /* App Mesh's gateway normalizes paths: both on (remora's builder takes them, below) */
    assert_non_null(h->normalize_path);
    assert_true(h->normalize_path->value);
    assert_true(h->merge_slashes);
    assert_int_equal(h->path_with_escaped_slashes_action, 0);
    assert_int_equal(h->n_access_log, 1);
    Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *fl =
        (Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog *)any_unpack(
            h->access_log[0]->typed_config,
            &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor);
    assert_string_equal(fl->path, "/dev/stdout");
    protobuf_c_message_free_unpacked(&fl->base, NULL);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* http2: STRICT (mTLS), HTTP2 codec; grpc: plaintext, HTTP2 */
    l = unpack(s, XDS_LDS, "lds_ingress_0.0.0.0_8443",
               &envoy__config__listener__v3__listener__descriptor);
    assert_int_equal(l->n_filter_chains, 1);
    assert_int_equal(l->n_listener_filters, 0);
    Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *d =
        (Envoy__Extensions__TransportSockets__Tls__V3__DownstreamTlsContext *)any_unpack(
            l->filter_chains[0]->transport_socket->typed_config,
            &envoy__extensions__transport_sockets__tls__v3__downstream_tls_context__descriptor);
    assert_true(d->require_client_certificate->value);
    assert_string_equal(d->common_tls_context->tls_certificate_sds_secret_configs[0]->name, GW_ID);
    /* App Mesh's ALPN: a client may choose h2 (an http2 or grpc listener needs it) */
    assert_int_equal(d->common_tls_context->n_alpn_protocols, 2);
    assert_string_equal(d->common_tls_context->alpn_protocols[0], "h2");
    assert_string_equal(d->common_tls_context->alpn_protocols[1], "http/1.1");
    protobuf_c_message_free_unpacked(&d->base, NULL);
    h = listener_hcm(l, 0);
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2);
    protobuf_c_message_free_unpacked(&h->base, NULL);
    protobuf_c_message_free_unpacked(&l->base, NULL);

    /* the egress clusters: EDS, the client policy's UpstreamTlsContext, the pool as circuit
     * breakers, the target's health check; HTTP/2 for an http2 node */
    Cluster *c = unpack(s, XDS_CDS, "cds_egress_m_a_http_8080",
                        &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_non_null(c->transport_socket);
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_connections->value, 100);
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_pending_requests->value, 10);
    /* what the http pool does not set: App Mesh's 2147483647, not Envoy's 1024 and 3 */
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_requests->value, 2147483647u);
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_retries->value, 2147483647u);
    assert_int_equal(c->n_health_checks, 1);
    assert_non_null(c->outlier_detection);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    c = unpack(s, XDS_CDS, "cds_egress_m_c_http2_9090",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_typed_extension_protocol_options, 1);
    /* the target's http2 check on another port: HTTP/2, and health_check_config.port_value */
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->http_health_check->codec_client_type,
                     ENVOY__TYPE__V3__CODEC_CLIENT_TYPE__HTTP2);
    protobuf_c_message_free_unpacked(&c->base, NULL);
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla =
        unpack(s, XDS_EDS, "cds_egress_m_c_http2_9090",
               &envoy__config__endpoint__v3__cluster_load_assignment__descriptor);
    assert_int_equal(cla->endpoints[0]->lb_endpoints[0]->endpoint->health_check_config->port_value,
                     9091);
    protobuf_c_message_free_unpacked(&cla->base, NULL);
    c = unpack(s, XDS_CDS, "cds_egress_m_g_grpc_50051",
               &envoy__config__cluster__v3__cluster__descriptor);
    assert_int_equal(c->n_health_checks, 1);
    assert_int_equal(c->health_checks[0]->health_checker_case,
                     ENVOY__CONFIG__CORE__V3__HEALTH_CHECK__HEALTH_CHECKER_GRPC_HEALTH_CHECK);
    protobuf_c_message_free_unpacked(&c->base, NULL);

    /* the identity and the bundle are named for remora-xds to serve */
    assert_int_equal(s->n_secrets, 2);
    assert_string_equal(s->secrets[0].name, GW_ID);
    xds_snapshot_free(s);

    /* no such gateway: nothing */
    s = translate_gateway(&fx.m, "nope", fake_resolve, NULL);
    for (int t = 0; t < XDS_NTYPES; t++) {
        assert_int_equal(s->n[t], 0);
    }
    assert_true(s->gateway);
    xds_snapshot_free(s);
}

static const char *cluster_of(const Route *r)
{
    return r->route->cluster_specifier_case ==
                   ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER
               ? r->route->cluster
               : "(weighted)";
}

/* The routes of port 8080: priority 0 (exact, path rewrite), priority 1 (hostname suffix, no
 * rewrites, method/query/header), then without priority the longest prefix first, each
 * expanded into its service's routes with the rewrites composed. */
static void test_routes(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_gateway(&fx.m, "gw", fake_resolve, NULL);
    if (getenv("GW_DUMP") != NULL) {
        json_t *j = xds_snapshot_json(s);
        json_dumpf(j, stderr, JSON_INDENT(1));
        json_decref(j);
    }
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_ingress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->n_virtual_hosts, 1);
    assert_int_equal(rc->virtual_hosts[0]->n_domains, 1);
    assert_string_equal(rc->virtual_hosts[0]->domains[0], "*");
    Route **r = rc->virtual_hosts[0]->routes;
    static const char *const names[] = {"exact",      "by-host",    "to-c-long", "to-svc/api",
                                        "to-svc/web", "to-svc/api", "to-svc/web"};
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_string_equal(r[i]->name, names[i]);
    }
    /* exact: the whole path rewritten, Host to the service */
    assert_string_equal(r[0]->match->path, "/old");
    assert_string_equal(r[0]->route->prefix_rewrite, "/new");
    assert_string_equal(r[0]->route->host_rewrite_literal, "c.local");
    assert_string_equal(cluster_of(r[0]), "cds_egress_m_c_http2_9090");
    /* c.local's provider is a node: its route has App Mesh's default retry policy */
    assert_string_equal(r[0]->route->retry_policy->retry_on,
                        "unavailable,connect-failure,refused-stream,retriable-status-codes");
    assert_int_equal(r[0]->route->retry_policy->num_retries->value, 2);
    assert_int_equal(r[0]->route->retry_policy->retriable_status_codes[0], 503);
    /* by-host: :method, :authority (suffix, any case, optional port), x-h; ?v=1; no rewrites */
    assert_string_equal(r[1]->match->prefix, "/");
    assert_int_equal(r[1]->match->n_headers, 3);
    assert_string_equal(r[1]->match->headers[0]->name, ":method");
    assert_string_equal(r[1]->match->headers[1]->name, ":authority");
    assert_string_equal(r[1]->match->headers[1]->safe_regex_match->regex,
                        "(?i).*\\.example\\.com(:[0-9]+)?");
    assert_string_equal(r[1]->match->headers[2]->name, "x-h");
    assert_int_equal(r[1]->match->n_query_parameters, 1);
    assert_string_equal(r[1]->route->prefix_rewrite, "");
    assert_int_equal(r[1]->route->host_rewrite_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER__NOT_SET);
    /* to-c-long: /svc/c/ -> /x/ */
    assert_string_equal(r[2]->match->prefix, "/svc/c/");
    assert_string_equal(r[2]->route->prefix_rewrite, "/x/");
    /* to-svc, "/svc/" form first: the router's /api (after the rewrite) and / */
    assert_string_equal(r[3]->match->prefix, "/svc/api");
    assert_string_equal(r[3]->route->prefix_rewrite, "/api");
    assert_string_equal(r[3]->route->host_rewrite_literal, "svc.local");
    assert_string_equal(cluster_of(r[3]), "cds_egress_m_b_http_8080");
    assert_string_equal(r[4]->match->prefix, "/svc/");
    assert_string_equal(r[4]->route->prefix_rewrite, "/");
    assert_int_equal(r[4]->route->weighted_clusters->n_clusters, 2);
    assert_int_equal(r[4]->route->retry_policy->num_retries->value, 2);
    assert_string_equal(r[4]->route->retry_policy->retry_on,
                        "retriable-status-codes,reset"); /* its own, not the default */
    /* then "/svc" itself ("/svc" -> "/", "/svcapi" -> "/api") */
    assert_string_equal(r[5]->match->prefix, "/svcapi");
    assert_string_equal(r[6]->match->prefix, "/svc");
    assert_string_equal(r[6]->route->prefix_rewrite, "/");
    protobuf_c_message_free_unpacked(&rc->base, NULL);

    /* grpc: the service's prefix, metadata as headers, Host rewritten */
    rc = unpack(s, XDS_RDS, "rds_ingress_http_50051",
                &envoy__config__route__v3__route_configuration__descriptor);
    r = rc->virtual_hosts[0]->routes;
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 1);
    assert_string_equal(r[0]->match->prefix, "/pkg.Svc/");
    assert_string_equal(r[0]->match->headers[0]->name, "tenant");
    assert_string_equal(r[0]->route->prefix_rewrite, "");
    assert_string_equal(r[0]->route->host_rewrite_literal, "g.local");
    assert_string_equal(cluster_of(r[0]), "cds_egress_m_g_grpc_50051");
    protobuf_c_message_free_unpacked(&rc->base, NULL);

    /* http2: an exact hostname */
    rc = unpack(s, XDS_RDS, "rds_ingress_http_8443",
                &envoy__config__route__v3__route_configuration__descriptor);
    r = rc->virtual_hosts[0]->routes;
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 1);
    assert_string_equal(r[0]->match->headers[0]->safe_regex_match->regex,
                        "(?i)c\\.example\\.com(:[0-9]+)?");
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    xds_snapshot_free(s);
}

static void test_proxy_id(void **state)
{
    (void)state;
    char *mesh = NULL, *name = NULL;
    enum tr_proxy kind = TR_VIRTUAL_NODE;
    assert_true(translate_proxy_id("mesh/m/virtualGateway/gw", &mesh, &name, &kind));
    assert_string_equal(mesh, "m");
    assert_string_equal(name, "gw");
    assert_int_equal(kind, TR_VIRTUAL_GATEWAY);
    free(mesh);
    free(name);
    assert_true(translate_proxy_id("arn:aws:appmesh:us-east-1:111122223333:mesh/m/"
                                   "virtualGateway/gw",
                                   &mesh, &name, &kind));
    assert_string_equal(name, "gw");
    assert_int_equal(kind, TR_VIRTUAL_GATEWAY);
    free(mesh);
    free(name);
    assert_true(translate_proxy_id("mesh/m/virtualNode/a", &mesh, &name, &kind));
    assert_int_equal(kind, TR_VIRTUAL_NODE);
    free(mesh);
    free(name);
    /* translate_node_id stays for virtual nodes only */
    assert_false(translate_node_id("mesh/m/virtualGateway/gw", &mesh, &name));
    static const char *const bad[] = {"mesh/m/virtualGateway/", "mesh/m/virtualGateway/a/b",
                                      "mesh//virtualGateway/gw", "mesh/m/virtualgateway/gw"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (translate_proxy_id(bad[i], &mesh, &name, &kind)) {
            fail_msg("%s parsed as a proxy id", bad[i]);
        }
    }
    char buf[256];
    translate_proxy_spiffe_id(buf, sizeof(buf), TD, "m", TR_VIRTUAL_GATEWAY, "gw");
    assert_string_equal(buf, GW_ID);
}

/* The acceptance test: remora's own builder takes every resource (with an ads_config for the
 * SDS secrets the TLS contexts name). */
static void test_remora_accepts(void **state)
{
    (void)state;
    struct xds_snapshot *s = translate_gateway(&fx.m, "gw", fake_resolve, NULL);
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
    struct config *c = config_load_text(text, strlen(text), &err);
    if (c == NULL) {
        fail_msg("remora refuses the gateway's resources: %s\nbootstrap: %s", err.msg, text);
    }
    assert_int_equal(c->n_listeners, 3);
    assert_int_equal(c->n_clusters, s->n[XDS_CDS] + 1);
    for (uint32_t i = 0; i < c->n_listeners; i++) {
        /* each gateway listener's HCM normalizes paths (normalize_path + merge_slashes) */
        const struct path_norm_opts *o = &c->listeners[i].chains[0].hcm->path_norm;
        assert_true(o->any && o->normalize && o->merge_slashes);
        assert_int_equal(o->escaped_slashes, PATH_SLASHES_KEEP);
    }
    config_unref(c);
    free(text);
    xds_snapshot_free(s);
}

/* A route whose target cannot be composed (a router route matching a regex behind a prefix
 * rewrite) is left out, the rest stays; a gateway route without a port on a gateway with
 * several listeners is left out too. */
static void test_left_out(void **state)
{
    (void)state;
    json_t *saved = fx.rt[0].spec;
    fx.rt[0].spec = J("{\"priority\":0,\"httpRoute\":{\"match\":{\"path\":{\"regex\":\"/a.*\"}},"
                      "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"b\",\"weight\":1}]}}}");
    json_t *gsaved = fx.gr[3].spec;
    fx.gr[3].spec = J("{\"httpRoute\":{\"match\":{\"prefix\":\"/p\"}," ACT("c.local") "}}}");
    struct xds_snapshot *s = translate_gateway(&fx.m, "gw", fake_resolve, NULL);
    RouteConfiguration *rc = unpack(s, XDS_RDS, "rds_ingress_http_8080",
                                    &envoy__config__route__v3__route_configuration__descriptor);
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 4); /* by-host, to-c-long, 2 x to-svc/web */
    for (size_t i = 0; i < rc->virtual_hosts[0]->n_routes; i++) {
        assert_null(strstr(rc->virtual_hosts[0]->routes[i]->name, "api"));
        assert_null(strstr(rc->virtual_hosts[0]->routes[i]->name, "exact"));
    }
    protobuf_c_message_free_unpacked(&rc->base, NULL);
    xds_snapshot_free(s);
    json_decref(fx.rt[0].spec);
    fx.rt[0].spec = saved;
    json_decref(fx.gr[3].spec);
    fx.gr[3].spec = gsaved;
}

/* examples/ads_gateway.yaml builds: the gateway's node, listeners and clusters over ADS,
 * nothing static but the xDS cluster. */
static void test_example_ads_gateway_yaml(void **state)
{
    (void)state;
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/xds/appmesh/translate_gateway_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/ads_gateway.yaml", cut ? (int)(cut - f) : 0, f);
    struct err e = {0};
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_true(c->has_lds && c->lds_ads);
    assert_true(c->has_cds && c->cds_ads);
    assert_int_equal(c->n_listeners, 0);
    assert_int_equal(c->n_clusters, 1);
    char *mesh = NULL, *name = NULL;
    enum tr_proxy kind = TR_VIRTUAL_NODE;
    assert_true(translate_proxy_id(c->node_id.p, &mesh, &name, &kind));
    assert_int_equal(kind, TR_VIRTUAL_GATEWAY);
    free(mesh);
    free(name);
    config_unref(c);
}

int main(void)
{
    log_set_level(LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_names_and_listeners, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remora_accepts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_left_out, setup, teardown),
        cmocka_unit_test(test_example_ads_gateway_yaml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
