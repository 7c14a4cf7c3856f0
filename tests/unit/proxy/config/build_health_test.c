/* Unit tests for proxy/config/build_health: health_checks, outlier_detection, common_lb_config
 * and priorities, compiled from a bootstrap with Envoy's defaults, and rejected with their
 * field paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/outlier.h"

#define C0 "static_resources.clusters[0]"

/* A bootstrap with one cluster: `cluster` is spliced into the cluster object and `eps` is its
 * endpoints list (LocalityLbEndpoints). */
static struct config *build(const char *cluster, const char *eps, struct err *err)
{
    static char text[8192];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {\"clusters\": [{\"name\": \"backend\", "
             "\"connect_timeout\": \"1s\" %s, \"load_assignment\": {\"cluster_name\": "
             "\"backend\" %s}}]}}",
             cluster, eps);
    err_clear(err);
    return config_load_text(text, strlen(text), err);
}

#define ONE_EP                                                                                     \
    ", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "     \
    "{\"address\": \"127.0.0.1\", \"port_value\": 8080}}}}]}]"

static void expect_error(const char *cluster, const char *eps, const char *want)
{
    struct err err;
    struct config *c = build(cluster, eps, &err);
    if (c != NULL) {
        config_unref(c);
        fail_msg("expected error '%s'", want);
    }
    if (strstr(err.msg, want) == NULL) {
        fail_msg("error '%s' does not contain '%s'", err.msg, want);
    }
}

static void test_build_health_defaults(void **state)
{
    (void)state;
    struct err err;
    struct config *c = build("", ONE_EP, &err);
    assert_non_null(c);
    const struct cluster_cfg *cc = &c->clusters[0];
    assert_null(cc->health_check);
    assert_null(cc->outlier);
    assert_int_equal(cc->panic_threshold, 50);
    assert_int_equal(cc->overprovisioning_factor, 140);
    assert_int_equal(cc->n_priorities, 1);
    config_unref(c);
}

static void test_build_health_http_check(void **state)
{
    (void)state;
    struct err err;
    struct config *c =
        build(", \"health_checks\": [{\"timeout\": \"0.5s\", \"interval\": \"2s\", "
              "\"unhealthy_threshold\": 3, \"healthy_threshold\": 2, \"http_health_check\": "
              "{\"path\": \"/healthz\", \"request_headers_to_add\": [{\"header\": {\"key\": "
              "\"X-Check\", \"value\": \"1\"}}], \"expected_statuses\": [{\"start\": 200, "
              "\"end\": 300}]}}]",
              ONE_EP, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    const struct health_check_cfg *h = c->clusters[0].health_check;
    assert_non_null(h);
    assert_int_equal(h->kind, HC_HTTP);
    assert_int_equal(h->timeout_ms, 500);
    assert_int_equal(h->interval_ms, 2000);
    assert_int_equal(h->unhealthy_threshold, 3);
    assert_int_equal(h->healthy_threshold, 2);
    assert_true(h->reuse_connection);
    assert_int_equal(h->no_traffic_interval_ms, 60000);
    assert_int_equal(h->no_traffic_healthy_interval_ms, 60000);
    assert_int_equal(h->unhealthy_interval_ms, 2000);
    assert_int_equal(h->unhealthy_edge_interval_ms, 2000);
    assert_int_equal(h->healthy_edge_interval_ms, 2000);
    assert_true(str_eq_lit(h->path, "/healthz"));
    assert_int_equal(h->n_headers_add, 1);
    assert_true(str_eq_lit(h->headers_add[0].name, "x-check"));
    assert_true(hc_range_contains(h->expected, h->n_expected, 204));
    assert_false(hc_range_contains(h->expected, h->n_expected, 300));
    config_unref(c);

    /* Default expected status: 200 only; TCP connect-only. */
    c = build(", \"health_checks\": [{\"timeout\": \"1s\", \"interval\": \"1s\", "
              "\"unhealthy_threshold\": 1, \"healthy_threshold\": 1, \"no_traffic_interval\": "
              "\"3s\", \"http_health_check\": {\"path\": \"/\"}}]",
              ONE_EP, &err);
    assert_non_null(c);
    h = c->clusters[0].health_check;
    assert_true(hc_range_contains(h->expected, h->n_expected, 200));
    assert_false(hc_range_contains(h->expected, h->n_expected, 201));
    assert_int_equal(h->no_traffic_healthy_interval_ms, 3000);
    config_unref(c);
    c = build(", \"health_checks\": [{\"timeout\": \"1s\", \"interval\": \"1s\", "
              "\"unhealthy_threshold\": 1, \"healthy_threshold\": 1, \"tcp_health_check\": {}}]",
              ONE_EP, &err);
    assert_non_null(c);
    assert_int_equal(c->clusters[0].health_check->kind, HC_TCP);
    config_unref(c);
}

#define HC_BASE                                                                                    \
    "\"timeout\": \"1s\", \"interval\": \"1s\", \"unhealthy_threshold\": 1, "                      \
    "\"healthy_threshold\": 1"

static void test_build_health_check_rejects(void **state)
{
    (void)state;
    expect_error(", \"health_checks\": [{\"interval\": \"1s\", \"unhealthy_threshold\": 1, "
                 "\"healthy_threshold\": 1, \"tcp_health_check\": {}}]",
                 ONE_EP, C0 ".health_checks[0].timeout: required");
    expect_error(", \"health_checks\": [{" HC_BASE "}]", ONE_EP,
                 C0 ".health_checks[0]: one of http_health_check, tcp_health_check or "
                    "grpc_health_check is required");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"event_log_path\": \"/tmp/x\", "
                 "\"tcp_health_check\": {}}]",
                 ONE_EP, C0 ".health_checks[0].event_log_path: not supported by remora yet");
    expect_error(", \"health_checks\": [{" HC_BASE
                 ", \"grpc_health_check\": {\"initial_metadata\": "
                 "[{\"header\": {\"key\": \":path\", \"value\": \"x\"}}]}}]",
                 ONE_EP,
                 C0 ".health_checks[0].grpc_health_check.initial_metadata[0].header.key: "
                    "':path': pseudo-headers and host may not be modified");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"tcp_health_check\": {\"send\": "
                 "{\"text\": \"00\"}}}]",
                 ONE_EP, C0 ".health_checks[0].tcp_health_check.send: payloads are not supported");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"http_health_check\": {}}]", ONE_EP,
                 C0 ".health_checks[0].http_health_check.path: required");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"http_health_check\": {\"path\": \"/\", "
                 "\"expected_statuses\": [{\"start\": 200, \"end\": 601}]}}]",
                 ONE_EP, "expected_statuses[0]: expecting end <= 600");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"http_health_check\": {\"path\": \"/\", "
                 "\"codec_client_type\": \"HTTP3\"}}]",
                 ONE_EP, "codec_client_type: HTTP3 is not supported by remora yet");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"tcp_health_check\": {}}]",
                 ", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": "
                 "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 80}}, "
                 "\"health_check_config\": {\"port_value\": 65536}}}]}]",
                 C0 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint.health_check_config."
                    "port_value: port 65536 out of range (0-65535)");
    expect_error(", \"health_checks\": [{" HC_BASE ", \"tcp_health_check\": {}}, {" HC_BASE
                 ", \"tcp_health_check\": {}}]",
                 ONE_EP, C0 ".health_checks: only one health check per cluster");
}

/* HTTP/2 and gRPC checks, and an endpoint's health_check_config. */
static void test_build_health_h2_grpc_and_hc_config(void **state)
{
    (void)state;
    struct err err;
    struct config *c = build(", \"health_checks\": [{" HC_BASE ", \"http_health_check\": "
                             "{\"path\": \"/h\", \"codec_client_type\": \"HTTP2\"}}]",
                             ONE_EP, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    const struct health_check_cfg *h = c->clusters[0].health_check;
    assert_int_equal(h->kind, HC_HTTP);
    assert_true(h->http2);
    assert_int_equal(c->clusters[0].endpoints[0].hc_port, 0);
    config_unref(c);

    c = build(", \"health_checks\": [{" HC_BASE ", \"grpc_health_check\": {\"service_name\": "
              "\"svc.A\", \"authority\": \"hc.example\", \"initial_metadata\": [{\"header\": "
              "{\"key\": \"X-Token\", \"value\": \"t\"}}]}}]",
              ", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": "
              "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 80}}, "
              "\"health_check_config\": {\"port_value\": 9901, \"hostname\": \"ep.example\"}}}]}]",
              &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    h = c->clusters[0].health_check;
    assert_int_equal(h->kind, HC_GRPC);
    assert_true(h->http2);
    assert_true(str_eq_lit(h->path, "/grpc.health.v1.Health/Check"));
    assert_true(str_eq_lit(h->grpc_service, "svc.A"));
    assert_true(str_eq_lit(h->host, "hc.example"));
    assert_int_equal(h->n_headers_add, 1);
    assert_true(str_eq_lit(h->headers_add[0].name, "x-token"));
    assert_int_equal(c->clusters[0].endpoints[0].hc_port, 9901);
    assert_true(str_eq_lit(c->clusters[0].endpoints[0].hc_host, "ep.example"));
    config_unref(c);
}

static void test_build_health_outlier(void **state)
{
    (void)state;
    struct err err;
    struct config *c = build(", \"outlier_detection\": {}", ONE_EP, &err);
    assert_non_null(c);
    const struct outlier_cfg *o = c->clusters[0].outlier;
    assert_non_null(o);
    assert_int_equal(o->consecutive_5xx, 5);
    assert_int_equal(o->consecutive_gateway_failure, 5);
    assert_int_equal(o->interval_ms, 10000);
    assert_int_equal(o->base_ejection_time_ms, 30000);
    assert_int_equal(o->max_ejection_time_ms, 300000);
    assert_int_equal(o->max_ejection_percent, 10);
    assert_int_equal(o->enforcing_consecutive_5xx, 100);
    assert_int_equal(o->enforcing_consecutive_gateway_failure, 0);
    assert_int_equal(o->enforcing_success_rate, 100);
    assert_int_equal(o->success_rate_minimum_hosts, 5);
    assert_int_equal(o->success_rate_request_volume, 100);
    assert_int_equal(o->success_rate_stdev_factor, 1900);
    assert_int_equal(o->failure_percentage_threshold, 85);
    assert_int_equal(o->enforcing_failure_percentage, 0);
    assert_true(o->successful_active_health_check_uneject_host);
    assert_false(o->always_eject_one_host);
    assert_false(o->split_external_local_origin_errors);
    config_unref(c);
    /* max_ejection_time defaults to base_ejection_time when that is larger than 300 s */
    c = build(", \"outlier_detection\": {\"base_ejection_time\": \"400s\"}", ONE_EP, &err);
    assert_non_null(c);
    assert_int_equal(c->clusters[0].outlier->max_ejection_time_ms, 400000);
    config_unref(c);
    expect_error(", \"outlier_detection\": {\"base_ejection_time\": \"10s\", "
                 "\"max_ejection_time\": \"5s\"}",
                 ONE_EP,
                 C0 ".outlier_detection.max_ejection_time: cannot be smaller than "
                    "base_ejection_time");
    expect_error(", \"outlier_detection\": {\"max_ejection_percent\": 101}", ONE_EP,
                 C0 ".outlier_detection.max_ejection_percent: must be at most 100");
    expect_error(", \"outlier_detection\": {\"interval\": \"0s\"}", ONE_EP,
                 C0 ".outlier_detection.interval: must be greater than 0");
}

static void test_build_health_priorities_and_panic(void **state)
{
    (void)state;
    struct err err;
    struct config *c = build(
        ", \"common_lb_config\": {\"healthy_panic_threshold\": {\"value\": 25.9}}",
        ", \"policy\": {\"overprovisioning_factor\": 100}, \"endpoints\": [{\"lb_endpoints\": "
        "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 1}}}}]}, {\"priority\": 2, \"lb_endpoints\": [{\"endpoint\": "
        "{\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 2}}}}]}]",
        &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    const struct cluster_cfg *cc = &c->clusters[0];
    assert_int_equal(cc->panic_threshold, 25); /* truncated */
    assert_int_equal(cc->overprovisioning_factor, 100);
    assert_int_equal(cc->n_priorities, 3);
    assert_int_equal(cc->endpoints[0].priority, 0);
    assert_int_equal(cc->endpoints[1].priority, 2);
    config_unref(c);
    expect_error(", \"common_lb_config\": {\"healthy_panic_threshold\": {\"value\": 101}}", ONE_EP,
                 C0 ".common_lb_config.healthy_panic_threshold.value: must be between");
    expect_error(", \"common_lb_config\": {\"ignore_new_hosts_until_first_hc\": true}", ONE_EP,
                 C0 ".common_lb_config.ignore_new_hosts_until_first_hc: not supported");
    expect_error(", \"common_lb_config\": {\"update_merge_window\": \"1s\"}", ONE_EP,
                 C0 ".common_lb_config.update_merge_window: not supported");
    expect_error("", ", \"policy\": {\"overprovisioning_factor\": 0}" ONE_EP,
                 "overprovisioning_factor: must be greater than 0");
    expect_error("",
                 ", \"endpoints\": [{\"priority\": 129, \"lb_endpoints\": [{\"endpoint\": "
                 "{\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
                 "\"port_value\": 2}}}}]}]",
                 C0 ".load_assignment.endpoints[0].priority: must be at most 128");
    /* A merge window of 0 is what remora does anyway. */
    c = build(", \"common_lb_config\": {\"update_merge_window\": \"0s\"}", ONE_EP, &err);
    assert_non_null(c);
    config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_health_defaults),
        cmocka_unit_test(test_build_health_http_check),
        cmocka_unit_test(test_build_health_check_rejects),
        cmocka_unit_test(test_build_health_h2_grpc_and_hc_config),
        cmocka_unit_test(test_build_health_outlier),
        cmocka_unit_test(test_build_health_priorities_and_panic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
