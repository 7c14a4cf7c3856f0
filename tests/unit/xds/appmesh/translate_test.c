/* Unit tests for translate: App Mesh specs (as the store keeps them) -> Envoy v3 resources for
 * gRPC clients, checked by decoding the packed resources: listener names and the HCM (RDS over
 * ADS, router last), route order by priority, path/header/metadata matches, weights and
 * total_weight, retry and timeouts, clusters (EDS over ADS, round robin, outlier detection,
 * circuit breakers), endpoints (resolved addresses, locality and weight), and what is left
 * out (tcp routes, query parameters, zero weights, Cloud Map). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "xds/appmesh/translate.h"
#include "tests/unit/xds/appmesh/tr_test.h"

typedef Envoy__Config__Route__V3__RouteConfiguration RouteConfiguration;
typedef Envoy__Config__Route__V3__Route Route;
typedef Envoy__Config__Route__V3__HeaderMatcher HeaderMatcher;

static size_t fake_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max)
{
    (void)arg;
    assert_true(max >= 2);
    if (strcmp(host, "a.local") == 0) {
        strcpy(out[0], "10.0.0.1");
        strcpy(out[1], "10.0.0.2");
        return 2;
    }
    if (strcmp(host, "127.0.0.1") == 0) {
        strcpy(out[0], "127.0.0.1");
        return 1;
    }
    return 0;
}

struct fixture {
    struct tr_item vn[3], vs[2], vr[1], rt[6];
    struct tr_mesh m;
    struct xds_snapshot *snap;
};

static struct fixture fx;

static int setup(void **state)
{
    (void)state;
    memset(&fx, 0, sizeof(fx));
    fx.vn[0] = (struct tr_item){
        "a", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":50051,\"protocol\":\"grpc\"},"
          "\"outlierDetection\":{\"maxServerErrors\":5,\"interval\":{\"unit\":\"s\",\"value\":10},"
          "\"baseEjectionDuration\":{\"unit\":\"ms\",\"value\":30500},\"maxEjectionPercent\":50},"
          "\"connectionPool\":{\"grpc\":{\"maxRequests\":7}}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"a.local\","
          "\"responseType\":\"ENDPOINTS\"}}}")};
    fx.vn[1] = (struct tr_item){
        "b", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":50052,\"protocol\":\"grpc\"}},"
          "{\"portMapping\":{\"port\":8080,\"protocol\":\"http2\"}}],"
          "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"127.0.0.1\"}}}")};
    fx.vn[2] = (struct tr_item){
        "c", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":7000,\"protocol\":\"grpc\"}}],"
          "\"serviceDiscovery\":{\"awsCloudMap\":{\"namespaceName\":\"ns\",\"serviceName\":\"c\"}}"
          "}")};
    fx.vr[0] = (struct tr_item){
        "r", NULL,
        J("{\"listeners\":[{\"portMapping\":{\"port\":8080,\"protocol\":\"grpc\"}},"
          "{\"portMapping\":{\"port\":9090,\"protocol\":\"grpc\"}}]}")};
    fx.vs[0] = (struct tr_item){
        "svc.local", NULL, J("{\"provider\":{\"virtualRouter\":{\"virtualRouterName\":\"r\"}}}")};
    fx.vs[1] = (struct tr_item){"node.local", NULL,
                                J("{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"c\"}}}")};
    /* grpc, priority 1: split 80/20 with a retry policy and a timeout. */
    fx.rt[0] = (struct tr_item){
        "g", "r",
        J("{\"priority\":1,\"grpcRoute\":{\"match\":{\"serviceName\":\"pkg.Svc\","
          "\"methodName\":\"Get\",\"metadata\":[{\"name\":\"x-user\",\"invert\":true,"
          "\"match\":{\"prefix\":\"adm\"}}]},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":80},"
          "{\"virtualNode\":\"b\",\"weight\":20,\"port\":50052}]},"
          "\"retryPolicy\":{\"maxRetries\":3,\"perRetryTimeout\":{\"unit\":\"ms\",\"value\":250},"
          "\"grpcRetryEvents\":[\"unavailable\",\"cancelled\"],\"httpRetryEvents\":[\"server-"
          "error\"]},"
          "\"timeout\":{\"perRequest\":{\"unit\":\"s\",\"value\":2}}}}")};
    /* http, priority 0: prefix and every header matcher kind. */
    fx.rt[1] = (struct tr_item){
        "h", "r",
        J("{\"priority\":0,\"http2Route\":{\"match\":{\"prefix\":\"/x\",\"headers\":["
          "{\"name\":\"e\",\"match\":{\"exact\":\"v\"}},"
          "{\"name\":\"s\",\"match\":{\"suffix\":\"z\"}},"
          "{\"name\":\"re\",\"match\":{\"regex\":\"a.*\"}},"
          "{\"name\":\"rg\",\"match\":{\"range\":{\"start\":1,\"end\":10}}},"
          "{\"name\":\"p\"}]},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":100},"
          "{\"virtualNode\":\"b\",\"weight\":0}]},"
          "\"retryPolicy\":{\"maxRetries\":0,\"perRetryTimeout\":{\"unit\":\"s\",\"value\":1},"
          "\"grpcRetryEvents\":[\"unavailable\"]}}}")};
    /* No priority: after all. */
    fx.rt[2] = (struct tr_item){
        "a-last", "r",
        J("{\"httpRoute\":{\"match\":{\"path\":{\"exact\":\"/pkg.Svc/Put\"}},"
          "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"b\",\"weight\":1}]}}}")};
    fx.rt[3] = (struct tr_item){"tcp", "r",
                                J("{\"priority\":2,\"tcpRoute\":{\"action\":{\"weightedTargets\":"
                                  "[{\"virtualNode\":\"a\",\"weight\":1}]}}}")};
    fx.rt[4] = (struct tr_item){
        "qp", "r",
        J("{\"priority\":3,\"httpRoute\":{\"match\":{\"prefix\":\"/\",\"queryParameters\":"
          "[{\"name\":\"q\"}]},\"action\":{\"weightedTargets\":[{\"virtualNode\":\"a\","
          "\"weight\":1}]}}}")};
    /* Only on port 9090. */
    fx.rt[5] =
        (struct tr_item){"p9090", "r",
                         J("{\"priority\":4,\"grpcRoute\":{\"match\":{\"port\":9090},\"action\":{"
                           "\"weightedTargets\":[{\"virtualNode\":\"b\",\"weight\":1}]}}}")};
    fx.m = (struct tr_mesh){.mesh = "m",
                            .vnodes = fx.vn,
                            .n_vnodes = 3,
                            .vservices = fx.vs,
                            .n_vservices = 2,
                            .vrouters = fx.vr,
                            .n_vrouters = 1,
                            .routes = fx.rt,
                            .n_routes = 6};
    fx.snap = translate_mesh(&fx.m, fake_resolve, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    xds_snapshot_free(fx.snap);
    struct tr_item *all[] = {fx.vn, fx.vs, fx.vr, fx.rt};
    size_t ns[] = {3, 2, 1, 6};
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < ns[k]; i++) {
            json_decref(all[k][i].spec);
        }
    }
    return 0;
}

static const struct xds_resource *must(enum xds_type t, const char *name)
{
    const struct xds_resource *r = xds_snapshot_find(fx.snap, t, name);
    if (r == NULL) {
        fail_msg("no resource %s of type %d", name, t);
    }
    return r;
}

static void test_names(void **state)
{
    (void)state;
    /* Listeners: bare name and one per router (or node) listener port. */
    assert_int_equal(fx.snap->n[XDS_LDS], 5);
    must(XDS_LDS, "svc.local");
    must(XDS_LDS, "svc.local:8080");
    must(XDS_LDS, "svc.local:9090");
    must(XDS_LDS, "node.local");
    must(XDS_LDS, "node.local:7000");
    must(XDS_RDS, "rds_m_svc.local:9090");
    /* One cluster (and one load assignment) per virtual node listener. */
    assert_int_equal(fx.snap->n[XDS_CDS], 4);
    assert_int_equal(fx.snap->n[XDS_EDS], 4);
    must(XDS_CDS, "cds_egress_m_a_grpc_50051");
    must(XDS_CDS, "cds_egress_m_b_grpc_50052");
    must(XDS_CDS, "cds_egress_m_b_http2_8080");
    must(XDS_EDS, "cds_egress_m_c_grpc_7000");
    assert_int_equal(xds_type_from_url("type.googleapis.com/envoy.config.cluster.v3.Cluster"),
                     XDS_CDS);
    assert_int_equal(xds_type_from_url("type.googleapis.com/nope"), -1);
}

static void test_listener(void **state)
{
    (void)state;
    const struct xds_resource *r = must(XDS_LDS, "svc.local:8080");
    Envoy__Config__Listener__V3__Listener *l =
        envoy__config__listener__v3__listener__unpack(NULL, r->len, r->data);
    assert_non_null(l);
    assert_string_equal(l->name, "svc.local:8080");
    assert_non_null(l->api_listener);
    assert_string_equal(l->api_listener->api_listener->type_url,
                        "type.googleapis.com/envoy.extensions.filters.network."
                        "http_connection_manager.v3.HttpConnectionManager");
    assert_int_equal(l->n_filter_chains, 0);
    assert_int_equal(l->n_listener_filters, 0);
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h =
        envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__unpack(
            NULL, l->api_listener->api_listener->value.len,
            l->api_listener->api_listener->value.data);
    assert_non_null(h);
    assert_int_equal(
        h->route_specifier_case,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS);
    assert_string_equal(h->rds->route_config_name, "rds_m_svc.local:8080");
    assert_int_equal(h->rds->config_source->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_non_null(h->rds->config_source->ads);
    assert_int_equal(h->rds->config_source->resource_api_version,
                     ENVOY__CONFIG__CORE__V3__API_VERSION__V3);
    assert_int_equal(h->n_http_filters, 1);
    assert_string_equal(h->http_filters[h->n_http_filters - 1]->typed_config->type_url,
                        "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router");
    envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__free_unpacked(
        h, NULL);
    envoy__config__listener__v3__listener__free_unpacked(l, NULL);
}

static RouteConfiguration *rds(const char *name)
{
    const struct xds_resource *r = must(XDS_RDS, name);
    RouteConfiguration *rc =
        envoy__config__route__v3__route_configuration__unpack(NULL, r->len, r->data);
    assert_non_null(rc);
    assert_int_equal(rc->n_virtual_hosts, 1);
    return rc;
}

static void test_routes_order_and_matches(void **state)
{
    (void)state;
    RouteConfiguration *rc = rds("rds_m_svc.local:8080");
    Envoy__Config__Route__V3__VirtualHost *vh = rc->virtual_hosts[0];
    assert_int_equal(vh->n_domains, 1);
    assert_string_equal(vh->domains[0], "svc.local:8080");
    /* h (0), g (1), a-last (none); tcp, qp left out; p9090 not on this port. */
    assert_int_equal(vh->n_routes, 3);
    assert_string_equal(vh->routes[0]->name, "h");
    assert_string_equal(vh->routes[1]->name, "g");
    assert_string_equal(vh->routes[2]->name, "a-last");

    Route *h = vh->routes[0];
    assert_int_equal(h->match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    assert_string_equal(h->match->prefix, "/x");
    assert_int_equal(h->match->n_headers, 5);
    HeaderMatcher **hm = h->match->headers;
    assert_int_equal(hm[0]->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH);
    assert_string_equal(hm[0]->exact_match, "v");
    assert_string_equal(hm[1]->suffix_match, "z");
    assert_string_equal(hm[2]->safe_regex_match->regex, "a.*");
    assert_int_equal(hm[3]->header_match_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH);
    assert_int_equal(hm[3]->range_match->start, 1);
    assert_int_equal(hm[3]->range_match->end, 10);
    assert_true(hm[4]->present_match);
    /* 100/0: the zero weight is dropped, one cluster remains. */
    assert_int_equal(h->route->cluster_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER);
    assert_string_equal(h->route->cluster, "cds_egress_m_a_grpc_50051");
    /* maxRetries 0: no policy (gRPC NACKs num_retries 0). */
    assert_null(h->route->retry_policy);

    Route *g = vh->routes[1];
    assert_int_equal(g->match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH);
    assert_string_equal(g->match->path, "/pkg.Svc/Get");
    assert_int_equal(g->match->n_headers, 1);
    assert_string_equal(g->match->headers[0]->name, "x-user");
    assert_string_equal(g->match->headers[0]->prefix_match, "adm");
    assert_true(g->match->headers[0]->invert_match);
    Envoy__Config__Route__V3__RouteAction *ra = g->route;
    assert_int_equal(ra->cluster_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS);
    assert_int_equal(ra->weighted_clusters->n_clusters, 2);
    assert_string_equal(ra->weighted_clusters->clusters[0]->name, "cds_egress_m_a_grpc_50051");
    assert_int_equal(ra->weighted_clusters->clusters[0]->weight->value, 80);
    assert_string_equal(ra->weighted_clusters->clusters[1]->name, "cds_egress_m_b_grpc_50052");
    assert_int_equal(ra->weighted_clusters->clusters[1]->weight->value, 20);
    assert_int_equal(ra->weighted_clusters->total_weight->value, 100);
    /* server-error: App Mesh's codes (500-508, 510, 511) and reset, not Envoy's 5xx */
    assert_string_equal(ra->retry_policy->retry_on,
                        "unavailable,cancelled,retriable-status-codes,reset");
    assert_int_equal(ra->retry_policy->n_retriable_status_codes, 11);
    assert_int_equal(ra->retry_policy->retriable_status_codes[0], 500);
    assert_int_equal(ra->retry_policy->retriable_status_codes[8], 508);
    assert_int_equal(ra->retry_policy->retriable_status_codes[9], 510);
    assert_int_equal(ra->retry_policy->retriable_status_codes[10], 511);
    assert_int_equal(ra->retry_policy->num_retries->value, 3);
    assert_int_equal(ra->retry_policy->per_try_timeout->seconds, 0);
    assert_int_equal(ra->retry_policy->per_try_timeout->nanos, 250000000);
    assert_int_equal(ra->timeout->seconds, 2);
    assert_int_equal(ra->max_stream_duration->max_stream_duration->seconds, 2);

    Route *last = vh->routes[2];
    assert_string_equal(last->match->path, "/pkg.Svc/Put");
    envoy__config__route__v3__route_configuration__free_unpacked(rc, NULL);

    /* Port 9090 also gets the route matching that port; the bare name (two router
     * listeners) only the routes without a port. */
    rc = rds("rds_m_svc.local:9090");
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 4);
    Route *p = rc->virtual_hosts[0]->routes[2];
    assert_string_equal(p->name, "p9090");
    /* A grpcRoute without serviceName matches everything: prefix "" is on the wire. */
    assert_int_equal(p->match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    assert_string_equal(p->match->prefix, "");
    envoy__config__route__v3__route_configuration__free_unpacked(rc, NULL);
    rc = rds("rds_m_svc.local");
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 3);
    envoy__config__route__v3__route_configuration__free_unpacked(rc, NULL);
}

static void test_node_provider(void **state)
{
    (void)state;
    RouteConfiguration *rc = rds("rds_m_node.local");
    assert_int_equal(rc->virtual_hosts[0]->n_routes, 1);
    Route *r = rc->virtual_hosts[0]->routes[0];
    assert_int_equal(r->match->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    assert_string_equal(r->match->prefix, "");
    assert_string_equal(r->route->cluster, "cds_egress_m_c_grpc_7000");
    envoy__config__route__v3__route_configuration__free_unpacked(rc, NULL);
}

static void test_cluster(void **state)
{
    (void)state;
    const struct xds_resource *r = must(XDS_CDS, "cds_egress_m_a_grpc_50051");
    Envoy__Config__Cluster__V3__Cluster *c =
        envoy__config__cluster__v3__cluster__unpack(NULL, r->len, r->data);
    assert_non_null(c);
    assert_int_equal(c->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS);
    assert_int_equal(c->eds_cluster_config->eds_config->config_source_specifier_case,
                     ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS);
    assert_int_equal(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN);
    assert_int_equal(c->outlier_detection->consecutive_5xx->value, 5);
    assert_int_equal(c->outlier_detection->interval->seconds, 10);
    assert_int_equal(c->outlier_detection->base_ejection_time->seconds, 30);
    assert_int_equal(c->outlier_detection->base_ejection_time->nanos, 500000000);
    assert_int_equal(c->outlier_detection->max_ejection_percent->value, 50);
    assert_int_equal(c->circuit_breakers->n_thresholds, 1);
    assert_int_equal(c->circuit_breakers->thresholds[0]->max_requests->value, 7);
    envoy__config__cluster__v3__cluster__free_unpacked(c, NULL);
    /* No outlier detection or pool: none. */
    r = must(XDS_CDS, "cds_egress_m_b_grpc_50052");
    c = envoy__config__cluster__v3__cluster__unpack(NULL, r->len, r->data);
    assert_null(c->outlier_detection);
    assert_null(c->circuit_breakers);
    envoy__config__cluster__v3__cluster__free_unpacked(c, NULL);
}

static void test_endpoints(void **state)
{
    (void)state;
    const struct xds_resource *r = must(XDS_EDS, "cds_egress_m_a_grpc_50051");
    Envoy__Config__Endpoint__V3__ClusterLoadAssignment *cla =
        envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->data);
    assert_string_equal(cla->cluster_name, "cds_egress_m_a_grpc_50051");
    assert_int_equal(cla->n_endpoints, 1);
    assert_non_null(cla->endpoints[0]->locality);
    assert_int_equal(cla->endpoints[0]->load_balancing_weight->value, 1);
    assert_int_equal(cla->endpoints[0]->n_lb_endpoints, 2);
    Envoy__Config__Core__V3__SocketAddress *sa =
        cla->endpoints[0]->lb_endpoints[1]->endpoint->address->socket_address;
    assert_string_equal(sa->address, "10.0.0.2");
    assert_int_equal(sa->port_specifier_case,
                     ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE);
    assert_int_equal(sa->port_value, 50051);
    envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(cla, NULL);
    /* The node's second listener: the same address, its own port. */
    r = must(XDS_EDS, "cds_egress_m_b_http2_8080");
    cla = envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->data);
    assert_int_equal(
        cla->endpoints[0]->lb_endpoints[0]->endpoint->address->socket_address->port_value, 8080);
    envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(cla, NULL);
    /* Cloud Map: no endpoints (there is no Cloud Map here). */
    r = must(XDS_EDS, "cds_egress_m_c_grpc_7000");
    cla = envoy__config__endpoint__v3__cluster_load_assignment__unpack(NULL, r->len, r->data);
    assert_string_equal(cla->cluster_name, "cds_egress_m_c_grpc_7000");
    assert_int_equal(cla->n_endpoints, 0);
    envoy__config__endpoint__v3__cluster_load_assignment__free_unpacked(cla, NULL);
}

static void test_empty_mesh(void **state)
{
    (void)state;
    struct tr_mesh m = {.mesh = "empty"};
    struct xds_snapshot *s = translate_mesh(&m, fake_resolve, NULL);
    for (int t = 0; t < XDS_NTYPES; t++) {
        assert_int_equal(s->n[t], 0);
    }
    assert_null(xds_snapshot_find(s, XDS_LDS, "x"));
    xds_snapshot_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_listener),
        cmocka_unit_test(test_routes_order_and_matches),
        cmocka_unit_test(test_node_provider),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_empty_mesh),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
