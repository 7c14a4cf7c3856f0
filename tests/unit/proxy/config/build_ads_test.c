/* Unit tests for proxy/config/build_ads.c and the ADS branch of rds.c: dynamic_resources.
 * ads_config and an HCM's rds with config_source.ads, accepted and rejected with field paths. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/net/tls.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define HPO "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define H2_OPTS                                                                                    \
    "\"typed_extension_protocol_options\": {\"" HPO "\": {\"@type\": \"type.googleapis.com/" HPO   \
    "\", \"explicit_http_config\": {\"http2_protocol_options\": {}}}}"
/* ads_config without grpc_services (ADS_BASE), and with the usual one (ADS_OK) */
#define ADS_BASE                                                                                   \
    "\"api_type\": \"GRPC\", \"transport_api_version\": \"V3\", "                                  \
    "\"set_node_on_first_message_only\": true"
#define ADS_OK ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"xds\"}}]"
#define CS_OK "\"ads\": {}, \"resource_api_version\": \"V3\", \"initial_fetch_timeout\": \"5s\""
#define ADSP "dynamic_resources.ads_config"
#define RDSP                                                                                       \
    "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.rds.config_source"

/* A transport_socket with an UpstreamTlsContext whose common_tls_context holds `common`. */
#define UP_TLS(common)                                                                             \
    "\"transport_socket\": {\"name\": \"envoy.transport_sockets.tls\", \"typed_config\": "         \
    "{\"@type\": \"type.googleapis.com/"                                                           \
    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\", \"sni\": \"xds.test\", "      \
    "\"common_tls_context\": {" common "}}}"

/* A bootstrap: `ads` is the ads_config body (NULL: no dynamic_resources), `xds` extra fields of
 * cluster "xds" (after its name), `cs` the rds config_source body. */
static char *boot(const char *ads, const char *xds, const char *cs)
{
    char *s = NULL;
    char dyn[2048] = "";
    if (ads != NULL) {
        snprintf(dyn, sizeof(dyn), "\"dynamic_resources\": {\"ads_config\": {%s}},", ads);
    }
    int n = asprintf(
        &s,
        "{\"node\": {\"id\": \"n\", \"cluster\": \"c\", \"locality\": {\"zone\": \"z\"}}, %s"
        " \"static_resources\": {\"clusters\": ["
        "  {\"name\": \"web\", \"load_assignment\": {\"cluster_name\": \"web\", \"endpoints\": "
        "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 8080}}}}]}]}},"
        "  {\"name\": \"xds\" %s, \"load_assignment\": {\"cluster_name\": \"xds\", \"endpoints\": "
        "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 18000}}}}]}]}}],"
        " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{\"name\": "
        "\"hcm\", \"typed_config\": {\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"in\", "
        "\"rds\": {\"route_config_name\": \"r1\", \"config_source\": {%s}}, \"http_filters\": "
        "[{\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}]}]}]}}",
        dyn, xds, cs);
    assert_true(n > 0);
    return s;
}

static struct config *load(const char *ads, const char *xds, const char *cs, struct err *e)
{
    char *text = boot(ads, xds, cs);
    err_clear(e);
    struct config *c = config_load_text(text, strlen(text), e);
    free(text);
    return c;
}

static void expect_error(const char *ads, const char *xds, const char *cs, const char *want)
{
    struct err e;
    struct config *c = load(ads, xds, cs, &e);
    if (c != NULL) {
        config_unref(c);
        fail_msg("built, but expected: %s", want);
    }
    assert_string_equal(e.msg, want);
}

static void test_ads_config_accepted(void **state)
{
    (void)state;
    struct err e;
    struct config *c = load(
        ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"xds\", "
                 "\"authority\": \"cp.example\"}, \"initial_metadata\": [{\"key\": \"X-Mesh\", "
                 "\"value\": \"m1\"}]}]",
        ", " H2_OPTS, CS_OK, &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_non_null(c->ads);
    assert_string_equal(c->ads->cluster->name.p, "xds");
    assert_string_equal(c->ads->authority.p, "cp.example");
    assert_int_equal(c->ads->n_headers, 1);
    assert_string_equal(c->ads->headers[0].key.p, "x-mesh");
    assert_true(c->ads->set_node_on_first_message_only);
    assert_int_equal(c->n_rds, 1);
    assert_true(c->rds[0].ads);
    assert_int_equal(c->rds[0].initial_fetch_timeout_ms, 5000);
    /* Until routes arrive the connection manager routes on an empty table (404 NR). */
    assert_int_equal(c->listeners[0].chains[0].hcm->routes->n_vhosts, 0);
    config_unref(c);

    /* Defaults: authority = the cluster's name, initial_fetch_timeout 15 s; 0 = wait forever;
     * transport_api_version unset (AUTO) is V3, as in Envoy since 1.31. */
    c = load("\"api_type\": \"GRPC\", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": "
             "\"xds\"}}]",
             ", " H2_OPTS, "\"ads\": {}, \"initial_fetch_timeout\": \"0s\"", &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_string_equal(c->ads->authority.p, "xds");
    assert_int_equal(c->rds[0].initial_fetch_timeout_ms, 0);
    config_unref(c);
    c = load(ADS_OK, ", " H2_OPTS, "\"ads\": {}", &e);
    assert_non_null(c);
    assert_int_equal(c->rds[0].initial_fetch_timeout_ms, 15000);
    config_unref(c);
}

static void test_ads_config_rejected_with_paths(void **state)
{
    (void)state;
    static const struct {
        const char *ads, *xds, *cs, *want;
    } cases[] = {
        {"\"api_type\": \"DELTA_GRPC\", \"transport_api_version\": \"V3\"", ", " H2_OPTS, CS_OK,
         ADSP ".api_type: DELTA_GRPC (incremental xDS) is not supported by remora yet (use "
              "GRPC)"},
        {"\"api_type\": \"REST\"", ", " H2_OPTS, CS_OK,
         ADSP ".api_type: must be GRPC (state of the world over gRPC)"},
        {"\"api_type\": \"GRPC\", \"transport_api_version\": \"V2\"", ", " H2_OPTS, CS_OK,
         ADSP ".transport_api_version: V2 is not supported (use V3)"},
        {"\"api_type\": \"GRPC\", \"transport_api_version\": \"V3\"", ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services: required (one entry)"},
        {ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"xds\"}}, "
                  "{\"envoy_grpc\": {\"cluster_name\": \"xds\"}}]",
         ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services: more than one entry (failover) is not supported by remora yet"},
        {ADS_BASE ", \"grpc_services\": [{\"timeout\": \"1s\"}]", ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services[0]: envoy_grpc is required"},
        {ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"xds\"}, "
                  "\"timeout\": \"1s\"}]",
         ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services[0].timeout: not supported by remora yet on a streaming ADS call"},
        {ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"\"}}]", ", " H2_OPTS,
         CS_OK, ADSP ".grpc_services[0].envoy_grpc.cluster_name: required"},
        {ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"nope\"}}]",
         ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services[0].envoy_grpc.cluster_name: unknown cluster 'nope' (the ADS "
              "cluster must be a static cluster)"},
        {ADS_BASE ", \"grpc_services\": [{\"envoy_grpc\": {\"cluster_name\": \"xds\"}, "
                  "\"initial_metadata\": [{\"key\": \":path\", \"value\": \"x\"}]}]",
         ", " H2_OPTS, CS_OK,
         ADSP ".grpc_services[0].initial_metadata[0].key: must not be a pseudo-header"},
        {ADS_OK ", \"cluster_names\": [\"xds\"]", ", " H2_OPTS, CS_OK,
         ADSP ".cluster_names: is for REST sources; a gRPC source names its cluster in "
              "grpc_services"},
        {ADS_OK ", \"refresh_delay\": \"1s\"", ", " H2_OPTS, CS_OK,
         ADSP ".refresh_delay: is for REST sources"},
        /* Rate limiting is not declared: rejected as an unknown field, with its path. */
        {ADS_OK ", \"rate_limit_settings\": {}", ", " H2_OPTS, CS_OK,
         ADSP ".rate_limit_settings: unknown field"},
        /* The cluster must speak HTTP/2. */
        {ADS_OK, "", CS_OK,
         "static_resources.clusters[1]: cluster 'xds' carries the ADS stream (gRPC) and must "
         "speak HTTP/2: set typed_extension_protocol_options' "
         "explicit_http_config.http2_protocol_options"},
        /* TLS to it, but with a secret that would come over the stream it secures. */
        {ADS_OK,
         ", " H2_OPTS ", " UP_TLS("\"tls_certificate_sds_secret_configs\": [{\"name\": \"me\", "
                                  "\"sds_config\": {\"ads\": {}}}]"),
         CS_OK,
         "static_resources.clusters[1].transport_socket: secret 'me' over ADS (sds_config: "
         "{ads: {}}) cannot secure the ADS cluster 'xds': it would come over the stream it "
         "secures (use files, inline PEM, or SDS from a file)"},
        /* lds/cds stay static. */
        {NULL, ", " H2_OPTS, CS_OK, RDSP ".ads: needs dynamic_resources.ads_config"},
        /* The rds side. */
        {ADS_OK, ", " H2_OPTS, "\"ads\": {}, \"resource_api_version\": \"V2\"",
         RDSP ".resource_api_version: V2 is not supported (use V3)"},
        {ADS_OK, ", " H2_OPTS, "\"ads\": {}, \"initial_fetch_timeout\": \"-1s\"",
         RDSP ".initial_fetch_timeout: must not be negative"},
        {ADS_OK, ", " H2_OPTS, "\"api_config_source\": {\"api_type\": \"GRPC\"}",
         RDSP ".api_config_source: not supported by remora yet (only a filesystem path is)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(cases[i].ads, cases[i].xds, cases[i].cs, cases[i].want);
    }
}

/* TLS to the control plane: the ADS cluster's UpstreamTlsContext is compiled as any
 * cluster's (here: SNI and ALPN h2 for an HTTP/2 cluster). */
static void test_ads_cluster_tls_accepted(void **state)
{
    (void)state;
    struct err e;
    struct config *c = load(ADS_OK, ", " H2_OPTS ", " UP_TLS(""), CS_OK, &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_non_null(c->ads->cluster->tls);
    assert_false(c->ads->cluster->tls->server);
    assert_string_equal(c->ads->cluster->tls->sni, "xds.test");
    assert_int_equal(c->ads->cluster->tls->alpn_len, 3);
    assert_memory_equal(c->ads->cluster->tls->alpn, "\x02h2", 3);
    config_unref(c);
}

/* ads_config followed by a cds_config body (boot()'s dynamic_resources is
 * {"ads_config": {%s}}: this closes it and opens cds_config) */
#define WITH_CDS(cds) ADS_OK "}, \"cds_config\": {" cds
#define CDSP "dynamic_resources.cds_config"

/* cds_config with ads: a wildcard Cluster subscription on the ADS stream. */
static void test_cds_over_ads_accepted(void **state)
{
    (void)state;
    struct err e;
    struct config *c = load(WITH_CDS("\"ads\": {}, \"resource_api_version\": \"V3\", "
                                     "\"initial_fetch_timeout\": \"2.5s\""),
                            ", " H2_OPTS, CS_OK, &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_true(c->has_cds);
    assert_true(c->cds_ads);
    assert_int_equal(c->cds_initial_fetch_timeout_ms, 2500);
    config_unref(c);
    c = load(WITH_CDS("\"ads\": {}"), ", " H2_OPTS, CS_OK, &e);
    assert_non_null(c);
    assert_int_equal(c->cds_initial_fetch_timeout_ms, 15000); /* Envoy's default */
    config_unref(c);
}

static void test_cds_over_ads_rejected_with_paths(void **state)
{
    (void)state;
    expect_error(WITH_CDS("\"ads\": {}, \"resource_api_version\": \"V2\""), ", " H2_OPTS, CS_OK,
                 CDSP ".resource_api_version: V2 is not supported (use V3)");
    expect_error(WITH_CDS("\"ads\": {}, \"initial_fetch_timeout\": \"-1s\""), ", " H2_OPTS, CS_OK,
                 CDSP ".initial_fetch_timeout: must not be negative");
    expect_error(WITH_CDS("\"self\": {}"), ", " H2_OPTS, CS_OK,
                 CDSP ".self: not supported by remora yet (only a filesystem path is)");
    /* An EDS cluster in static_resources stays rejected, whatever its eds_config. */
    expect_error(ADS_OK,
                 ", " H2_OPTS ", \"type\": \"EDS\", \"eds_cluster_config\": "
                 "{\"eds_config\": {\"ads\": {}}}",
                 CS_OK,
                 "static_resources.clusters[1].type: EDS in static_resources is not supported by "
                 "remora yet (EDS clusters can come from dynamic_resources.cds_config)");
}

static void test_dynamic_resources_lds_cds_rejected(void **state)
{
    (void)state;
    struct err e;
    const char *texts[] = {
        "{\"dynamic_resources\": {\"lds_config\": {\"ads\": {}}}}",
        "{\"dynamic_resources\": {\"cds_config\": {\"ads\": {}}}}",
    };
    const char *want[] = {
        "dynamic_resources.lds_config.ads: needs dynamic_resources.ads_config",
        "dynamic_resources.cds_config.ads: needs dynamic_resources.ads_config",
    };
    for (size_t i = 0; i < 2; i++) {
        err_clear(&e);
        assert_null(config_load_text(texts[i], strlen(texts[i]), &e));
        assert_string_equal(e.msg, want[i]);
    }
}

/* examples/ads.yaml builds: routes over ADS from xds_cluster. */
static void test_example_ads_yaml(void **state)
{
    (void)state;
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/build_ads_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/ads.yaml", cut ? (int)(cut - f) : 0, f);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_string_equal(c->ads->cluster->name.p, "xds_cluster");
    assert_int_equal(c->n_rds, 1);
    assert_true(c->rds[0].ads);
    assert_string_equal(c->rds[0].route_config_name.p, "web-routes");
    assert_int_equal(c->rds[0].initial_fetch_timeout_ms, 5000);
    config_unref(c);
}

/* examples/ads_cds.yaml builds: clusters (and their endpoints) and routes over ADS. */
static void test_example_ads_cds_yaml(void **state)
{
    (void)state;
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/build_ads_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/ads_cds.yaml", cut ? (int)(cut - f) : 0, f);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_true(c->has_cds && c->cds_ads);
    assert_int_equal(c->cds_initial_fetch_timeout_ms, 10000);
    assert_int_equal(c->n_clusters, 1);
    assert_int_equal(c->n_rds, 1);
    assert_true(c->rds[0].ads);
    assert_string_equal(c->rds[0].route_config_name.p, "rds_egress_http_8080");
    config_unref(c);
}

/* examples/ads_sidecar.yaml builds: listeners, clusters (and their endpoints) over ADS, nothing
 * static but the xDS cluster. */
static void test_example_ads_sidecar_yaml(void **state)
{
    (void)state;
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/build_ads_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/ads_sidecar.yaml", cut ? (int)(cut - f) : 0, f);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_true(c->has_lds && c->lds_ads);
    assert_true(c->has_cds && c->cds_ads);
    assert_string_equal(c->ads->cluster->name.p, "xds_cluster");
    assert_int_equal(c->n_listeners, 0);
    assert_int_equal(c->n_clusters, 1);
    assert_int_equal(c->n_rds, 0);
    assert_string_equal(c->node_id.p, "mesh/shop/virtualNode/front");
    config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ads_config_accepted),
        cmocka_unit_test(test_ads_config_rejected_with_paths),
        cmocka_unit_test(test_ads_cluster_tls_accepted),
        cmocka_unit_test(test_cds_over_ads_accepted),
        cmocka_unit_test(test_cds_over_ads_rejected_with_paths),
        cmocka_unit_test(test_dynamic_resources_lds_cds_rejected),
        cmocka_unit_test(test_example_ads_yaml),
        cmocka_unit_test(test_example_ads_cds_yaml),
        cmocka_unit_test(test_example_ads_sidecar_yaml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
