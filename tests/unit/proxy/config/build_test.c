/* Unit tests for proxy/config/build: Bootstrap -> validated, compiled snapshot. Most cases start
 * from one working bootstrap (JSON, below) and change one spot, marked @NAME@ in the template:
 * the marker is replaced by the test's fragment, every other marker by its default. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/http/access_log.h"
#include "proxy/http/stream.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/net/chain_match.h"
#include "proxy/net/resolver.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"
#include "proxy/upstream/lb_hash.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define ROUTER_FILTER                                                                              \
    "{\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\": "                     \
    "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}"

/* Paths of the template's parts, as errors print them. */
#define C0 "static_resources.clusters[0]"
#define L0 "static_resources.listeners[0]"
/* A filter chain's filters: a TCP proxy to cluster "backend". */
#define TCP_CHAIN_FILTERS                                                                          \
    "\"filters\": [{\"name\": \"tcp\", \"typed_config\": {\"@type\": "                             \
    "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "             \
    "\"stat_prefix\": \"t\", \"cluster\": \"backend\"}}]"
#define HCM L0 ".filter_chains[0].filters[0].typed_config"
#define RC HCM ".route_config"
#define VH0 RC ".virtual_hosts[0]"
#define R0 VH0 ".routes[0]"
#define UNSUPPORTED "not supported by remora yet"
#define TLSI_TYPE                                                                                  \
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

static const char tmpl[] =
    "{\"node\": {\"id\": \"node-1\", \"cluster\": \"c1\"} @BOOT@,"
    " \"admin\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": "
    "9901}} @ADMIN@},"
    " \"static_resources\": {"
    "  \"clusters\": [{\"name\": \"backend\", \"connect_timeout\": @CTO@ @CLUSTER@,"
    "    \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{\"lb_endpoints\": ["
    "     {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": @EPADDR@, "
    "\"port_value\": 8080}}} @LBE@},"
    "     {\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"::1\", "
    "\"port_value\": 8081}}}, \"load_balancing_weight\": 3}]}]}},"
    "    {\"name\": \"other\"} @CLUSTERS@],"
    "  \"listeners\": [{\"name\": \"l1\", \"address\": {\"socket_address\": {\"address\": "
    "@LADDR@, \"port_value\": @LPORT@}} @LISTENER@,"
    "    \"filter_chains\": [{\"filters\": [@NETFILTERS@ {\"name\": \"hcm\", \"typed_config\": "
    "{\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"ingress\" @HCM@, @ROUTES@,"
    "      \"http_filters\": [@HTTP_FILTERS@]}}] @CHAIN@} @CHAINS@]} @LISTENERS@]}}";

struct marker {
    const char *name;
    const char *dflt;
};

static const struct marker markers[] = {
    {"@BOOT@", ""},
    {"@ADMIN@", ""},
    {"@CTO@", "\"1s\""},
    {"@CLUSTER@", ""},
    {"@EPADDR@", "\"127.0.0.1\""},
    {"@LBE@", ""},
    {"@CLUSTERS@", ""},
    {"@LADDR@", "\"127.0.0.1\""},
    {"@LPORT@", "10000"},
    {"@LISTENER@", ""},
    {"@NETFILTERS@", ""},
    {"@HCM@", ""},
    {"@ROUTES@", "\"route_config\": {\"name\": \"rc\" @RC@, \"virtual_hosts\": [{\"name\": "
                 "\"vh\", \"domains\": [@DOMAINS@] @VHOST@, \"routes\": [{\"match\": {@MATCH@} "
                 "@ROUTE@, @ACTION@}]} @VHOSTS@]}"},
    {"@RC@", ""},
    {"@DOMAINS@", "\"*\""},
    {"@VHOST@", ""},
    {"@MATCH@", "\"prefix\": \"/\""},
    {"@ROUTE@", ""},
    {"@ACTION@", "\"route\": {\"cluster\": \"backend\" @RA@}"},
    {"@RA@", ""},
    {"@VHOSTS@", ""},
    {"@HTTP_FILTERS@", ROUTER_FILTER},
    {"@CHAIN@", ""},
    {"@CHAINS@", ""},
    {"@LISTENERS@", ""},
};

/* The template with `name` replaced by `frag` (NULL: all defaults). Caller frees. */
static char *make_boot(const char *name, const char *frag)
{
    char *s = strdup(tmpl);
    for (;;) {
        const struct marker *hit = NULL;
        char *at = NULL;
        for (size_t i = 0; i < sizeof(markers) / sizeof(markers[0]) && hit == NULL; i++) {
            at = strstr(s, markers[i].name);
            hit = at != NULL ? &markers[i] : NULL;
        }
        if (hit == NULL) {
            return s;
        }
        const char *with = name != NULL && strcmp(name, hit->name) == 0 ? frag : hit->dflt;
        size_t pre = (size_t)(at - s), ml = strlen(hit->name), wl = strlen(with);
        char *n = malloc(strlen(s) - ml + wl + 1);
        memcpy(n, s, pre);
        memcpy(n + pre, with, wl);
        strcpy(n + pre + wl, at + ml);
        free(s);
        s = n;
    }
}

static struct config *load(const char *name, const char *frag, struct err *e)
{
    char *text = make_boot(name, frag);
    err_clear(e);
    struct config *c = config_load_text(text, strlen(text), e);
    free(text);
    return c;
}

static struct config *must_load(const char *name, const char *frag)
{
    struct err e;
    struct config *c = load(name, frag, &e);
    if (c == NULL) {
        fail_msg("build failed: %s", e.msg);
    }
    return c;
}

static void expect_error(const char *name, const char *frag, const char *want)
{
    struct err e;
    struct config *c = load(name, frag, &e);
    if (c != NULL) {
        config_unref(c);
        fail_msg("built, but expected: %s", want);
    }
    assert_string_equal(e.msg, want);
}

static const struct route_cfg *route0(const struct config *c)
{
    return &c->listeners[0].chains[0].hcm->routes->vhosts[0].routes[0];
}

static void test_build_template_compiles_with_defaults(void **state)
{
    (void)state;
    struct config *c = must_load(NULL, NULL);
    assert_int_equal(atomic_load(&c->refs), 1);
    assert_non_null(c->bootstrap_pb);
    assert_true(str_eq_lit(c->node_id, "node-1"));
    assert_true(str_eq_lit(c->node_cluster, "c1"));

    /* clusters */
    assert_int_equal(c->n_clusters, 2);
    const struct cluster_cfg *cc = &c->clusters[0];
    assert_true(str_eq_lit(cc->name, "backend"));
    assert_int_equal(cc->index, 0);
    assert_int_equal(c->clusters[1].index, 1);
    assert_int_equal(cc->type, CLUSTER_STATIC);
    assert_int_equal(cc->lb, LB_ROUND_ROBIN);
    assert_int_equal(cc->connect_timeout_ms, 1000);
    assert_int_equal(cc->per_connection_buffer_limit, 1024 * 1024);
    assert_int_equal(cc->lr_choice_count, 2);
    assert_int_equal(cc->n_endpoints, 2);
    assert_true(str_eq_lit(cc->endpoints[0].addr.text, "127.0.0.1:8080"));
    assert_int_equal(cc->endpoints[0].weight, 1);
    assert_int_equal(cc->endpoints[0].hostname.len, 0);
    assert_true(str_eq_lit(cc->endpoints[1].addr.text, "[::1]:8081"));
    assert_int_equal(cc->endpoints[1].addr.ss.ss_family, AF_INET6);
    assert_int_equal(cc->endpoints[1].weight, 3);
    /* A cluster without endpoints is allowed (its requests get 503). */
    assert_int_equal(c->clusters[1].n_endpoints, 0);
    assert_int_equal(c->clusters[1].connect_timeout_ms, 5000);

    /* listener and connection manager */
    assert_int_equal(c->n_listeners, 1);
    const struct listener_cfg *l = &c->listeners[0];
    assert_true(str_eq_lit(l->name, "l1"));
    assert_true(str_eq_lit(l->addr.text, "127.0.0.1:10000"));
    const struct sockaddr_in *in = (const struct sockaddr_in *)&l->addr.ss;
    assert_int_equal(ntohs(in->sin_port), 10000);
    assert_int_equal(l->addr.len, sizeof(struct sockaddr_in));
    assert_true(str_eq_lit(l->stat_name, "127.0.0.1_10000"));
    assert_int_equal(l->per_connection_buffer_limit, 1024 * 1024);
    const struct hcm_cfg *h = l->chains[0].hcm;
    assert_true(str_eq_lit(h->stat_prefix, "ingress"));
    assert_int_equal(h->codec, CODEC_AUTO);
    assert_int_equal(h->max_request_headers_kb, 60);
    assert_int_equal(h->max_request_headers_count, 100);
    assert_int_equal(h->idle_timeout_ms, 3600000);
    assert_int_equal(h->stream_idle_timeout_ms, 300000);
    assert_int_equal(h->request_timeout_ms, 0);
    assert_int_equal(h->request_headers_timeout_ms, 0);
    assert_int_equal(h->max_stream_duration_ms, 0);
    assert_false(h->use_remote_address);
    assert_true(h->generate_request_id);
    assert_false(h->skip_xff_append);
    assert_int_equal(h->xff_num_trusted_hops, 0);
    assert_int_equal(h->n_access_logs, 0);

    /* routes */
    assert_true(str_eq_lit(h->routes->name, "rc"));
    assert_int_equal(h->routes->n_vhosts, 1);
    const struct vhost_cfg *vh = &h->routes->vhosts[0];
    assert_true(vh->is_wildcard);
    assert_int_equal(vh->n_exact + vh->n_suffixes + vh->n_prefixes, 0);
    const struct route_cfg *r = route0(c);
    assert_int_equal(r->match_kind, RM_PREFIX);
    assert_true(str_eq_lit(r->match, "/"));
    assert_true(r->case_sensitive);
    assert_int_equal(r->action, RA_CLUSTER);
    assert_ptr_equal(r->cluster, &c->clusters[0]);
    assert_int_equal(r->timeout_ms, 15000);
    assert_false(r->has_prefix_rewrite);
    assert_int_equal(r->host_rewrite.len, 0);

    /* admin */
    assert_true(c->has_admin);
    assert_true(str_eq_lit(c->admin_addr.text, "127.0.0.1:9901"));
    config_unref(c);
}

/* AccessLog.filter: compiled into a tree; unsupported kinds and bad values name their path. */
static void test_build_access_log_filter(void **state)
{
    (void)state;
#define AL_PRE                                                                                     \
    ", \"access_log\": [{\"name\": \"f\", \"typed_config\": {\"@type\": "                          \
    "\"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\"}, "         \
    "\"filter\": "
    struct config *c = must_load(
        "@HCM@", AL_PRE "{\"or_filter\": {\"filters\": [{\"status_code_filter\": {\"comparison\": "
                        "{\"op\": \"GE\", \"value\": {\"default_value\": 500, \"runtime_key\": "
                        "\"k\"}}}}, {\"and_filter\": {\"filters\": [{\"response_flag_filter\": "
                        "{\"flags\": [\"NR\", \"LH\"]}}, {\"header_filter\": {\"header\": "
                        "{\"name\": \"x-log\", \"present_match\": true}}}]}}, "
                        "{\"grpc_status_filter\": {\"statuses\": [\"UNAVAILABLE\"], \"exclude\": "
                        "true}}, {\"runtime_filter\": {\"runtime_key\": \"r\", "
                        "\"percent_sampled\": {\"numerator\": 5, \"denominator\": "
                        "\"TEN_THOUSAND\"}}}]}}}]");
    const struct al_filter *f = c->listeners[0].chains[0].hcm->access_logs[0].filter;
    assert_non_null(f);
    assert_int_equal(f->kind, ALF_OR);
    assert_int_equal(f->n_sub, 4);
    assert_int_equal(f->sub[0].kind, ALF_STATUS_CODE);
    assert_int_equal(f->sub[0].op, AL_CMP_GE);
    assert_int_equal(f->sub[0].value, 500);
    assert_int_equal(f->sub[1].kind, ALF_AND);
    assert_int_equal(f->sub[1].sub[0].mask, RF_NR | RF_LH);
    assert_int_equal(f->sub[1].sub[1].kind, ALF_HEADER);
    assert_true(str_eq_lit(f->sub[1].sub[1].header->name, "x-log"));
    assert_int_equal(f->sub[2].mask, 1u << 14);
    assert_true(f->sub[2].exclude);
    assert_int_equal(f->sub[3].value, 5);
    assert_int_equal(f->sub[3].denom, 10000);
    config_unref(c);

    const char *base = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
                       ".access_log[0].filter";
    char want[512];
    snprintf(want, sizeof(want), "%s.metadata_filter: not supported by remora yet", base);
    expect_error("@HCM@", AL_PRE "{\"metadata_filter\": {}}}]", want);
    snprintf(want, sizeof(want), "%s.extension_filter: not supported by remora yet", base);
    expect_error("@HCM@", AL_PRE "{\"extension_filter\": {\"name\": \"x\"}}}]", want);
    snprintf(want, sizeof(want), "%s.log_type_filter: not supported by remora yet", base);
    expect_error("@HCM@", AL_PRE "{\"log_type_filter\": {}}}]", want);
    snprintf(want, sizeof(want), "%s.response_flag_filter.flags[1]: unknown response flag 'ZZ'",
             base);
    expect_error("@HCM@", AL_PRE "{\"response_flag_filter\": {\"flags\": [\"UF\", \"ZZ\"]}}}]",
                 want);
    snprintf(want, sizeof(want), "%s.and_filter.filters: at least 2 filters are required", base);
    expect_error("@HCM@", AL_PRE "{\"and_filter\": {\"filters\": [{\"traceable_filter\": {}}]}}}]",
                 want);
    snprintf(want, sizeof(want), "%s.status_code_filter.comparison: required", base);
    expect_error("@HCM@", AL_PRE "{\"status_code_filter\": {}}}]", want);
    snprintf(want, sizeof(want), "%s.runtime_filter.runtime_key: required", base);
    expect_error("@HCM@", AL_PRE "{\"runtime_filter\": {}}}]", want);
    snprintf(want, sizeof(want), "%s: one filter is required", base);
    expect_error("@HCM@", AL_PRE "{}}]", want);
#undef AL_PRE
}

static void test_build_example_basic_yaml(void **state)
{
    (void)state;
    /* __FILE__ is tests/unit/proxy/config/build_test.c, relative to the repository root when
     * built by make; find examples/ from it. */
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/build_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/basic.yaml", cut ? (int)(cut - f) : 0, f);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    assert_int_equal(c->n_listeners, 1);
    assert_true(str_eq_lit(c->listeners[0].addr.text, "127.0.0.1:10000"));
    assert_true(str_eq_lit(c->listeners[0].stat_name, "127.0.0.1_10000"));
    assert_int_equal(c->n_clusters, 1);
    assert_int_equal(c->clusters[0].type, CLUSTER_STATIC);
    assert_int_equal(c->clusters[0].n_endpoints, 2);
    assert_true(str_eq_lit(c->clusters[0].endpoints[0].addr.text, "127.0.0.1:18080"));
    assert_true(str_eq_lit(c->clusters[0].endpoints[1].addr.text, "127.0.0.1:18081"));
    assert_true(c->has_admin);
    assert_true(str_eq_lit(c->admin_addr.text, "127.0.0.1:9901"));
    const struct hcm_cfg *h = c->listeners[0].chains[0].hcm;
    assert_int_equal(h->n_access_logs, 1);
    assert_true(str_eq_lit(h->access_logs[0].path, "/dev/stdout"));
    assert_int_equal(h->access_logs[0].format.len, 0);
    assert_ptr_equal(h->routes->vhosts[0].routes[0].cluster, &c->clusters[0]);
    config_unref(c);

    err_clear(&e);
    assert_null(config_load_file("/nonexistent/remora.yaml", &e));
    assert_string_equal(e.msg, "/nonexistent/remora.yaml: cannot read: No such file or directory");
}

static void test_build_explicit_values(void **state)
{
    (void)state;
    struct config *c = must_load(
        "@HCM@",
        ", \"codec_type\": \"HTTP1\", \"max_request_headers_kb\": 96, \"use_remote_address\": "
        "true, \"generate_request_id\": false, \"xff_num_trusted_hops\": 2,"
        " \"skip_xff_append\": true,"
        " \"stream_idle_timeout\": \"0s\", \"request_timeout\": \"30s\","
        " \"request_headers_timeout\": \"0.0005s\","
        " \"common_http_protocol_options\": {\"idle_timeout\": \"60s\", \"max_headers_count\": 20,"
        " \"max_stream_duration\": \"2.5s\"},"
        " \"access_log\": [{\"name\": \"f\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", \"path\": "
        "\"/tmp/a.log\", \"log_format\": {\"text_format_source\": {\"inline_string\": "
        "\"%START_TIME% %RESPONSE_CODE%\\n\"}}}},"
        " {\"name\": \"e\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog\"}}]");
    const struct hcm_cfg *h = c->listeners[0].chains[0].hcm;
    assert_int_equal(h->codec, CODEC_HTTP1);
    assert_int_equal(h->max_request_headers_kb, 96);
    assert_true(h->use_remote_address);
    assert_false(h->generate_request_id);
    assert_int_equal(h->xff_num_trusted_hops, 2);
    assert_true(h->skip_xff_append);
    assert_int_equal(h->stream_idle_timeout_ms, 0);
    assert_int_equal(h->request_timeout_ms, 30000);
    assert_int_equal(h->request_headers_timeout_ms, 1); /* sub-millisecond rounds up */
    assert_int_equal(h->idle_timeout_ms, 60000);
    assert_int_equal(h->max_request_headers_count, 20);
    assert_int_equal(h->max_stream_duration_ms, 2500);
    assert_int_equal(h->n_access_logs, 2);
    assert_true(str_eq_lit(h->access_logs[0].path, "/tmp/a.log"));
    assert_true(str_eq_lit(h->access_logs[0].format, "%START_TIME% %RESPONSE_CODE%\n"));
    assert_true(str_eq_lit(h->access_logs[1].path, "/dev/stderr"));
    config_unref(c);

    /* Format dictionaries: SubstitutionFormatString's (typed) and FileAccessLog's (strings). */
    c = must_load("@HCM@",
                  ", \"access_log\": [{\"name\": \"f\", \"typed_config\": {\"@type\": "
                  "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
                  "\"path\": \"/tmp/a.log\", \"log_format\": {\"json_format\": {\"code\": "
                  "\"%RESPONSE_CODE%\", \"n\": 2, \"ok\": true}}}},"
                  " {\"name\": \"g\", \"typed_config\": {\"@type\": "
                  "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
                  "\"path\": \"/tmp/b.log\", \"json_format\": {\"p\": \"%REQ(:PATH)%\"}}}]");
    h = c->listeners[0].chains[0].hcm;
    assert_int_equal(h->n_access_logs, 2);
    assert_int_equal(h->access_logs[0].n_json, 3);
    assert_true(h->access_logs[0].json_typed);
    assert_int_equal(h->access_logs[1].n_json, 1);
    assert_false(h->access_logs[1].json_typed);
    assert_true(str_eq_lit(h->access_logs[1].json[0].format, "%REQ(:PATH)%"));
    config_unref(c);

    c = must_load("@CLUSTER@",
                  ", \"lb_policy\": \"LEAST_REQUEST\", \"least_request_lb_config\": "
                  "{\"choice_count\": 4}, \"per_connection_buffer_limit_bytes\": 4096");
    assert_int_equal(c->clusters[0].lb, LB_LEAST_REQUEST);
    assert_int_equal(c->clusters[0].lr_choice_count, 4);
    assert_int_equal(c->clusters[0].per_connection_buffer_limit, 4096);
    config_unref(c);

    c = must_load("@LISTENER@", ", \"stat_prefix\": \"public\", "
                                "\"per_connection_buffer_limit_bytes\": 32768");
    assert_true(str_eq_lit(c->listeners[0].stat_name, "public"));
    assert_int_equal(c->listeners[0].per_connection_buffer_limit, 32768);
    config_unref(c);

    c = must_load("@LADDR@", "\"::1\"");
    assert_true(str_eq_lit(c->listeners[0].addr.text, "[::1]:10000"));
    assert_true(str_eq_lit(c->listeners[0].stat_name, "[__1]_10000"));
    assert_false(c->listeners[0].ipv4_compat);
    config_unref(c);
    /* ipv4_compat: a listener's (its IPv6 socket takes IPv4 too), nowhere else */
    c = must_load("@LPORT@", "10000, \"ipv4_compat\": true");
    assert_true(c->listeners[0].ipv4_compat);
    config_unref(c);
    expect_error("@EPADDR@", "\"127.0.0.1\", \"ipv4_compat\": true",
                 "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0]."
                 "endpoint.address.socket_address.ipv4_compat: " UNSUPPORTED);

    c = must_load("@ADMIN@", ", \"access_log_path\": \"/dev/null\"");
    assert_true(str_eq_lit(c->admin_access_log_path, "/dev/null"));
    config_unref(c);
}

static void test_build_routes_compile(void **state)
{
    (void)state;
    struct config *c = must_load(
        "@ROUTE@",
        ", \"name\": \"r0\", \"request_headers_to_add\": [{\"header\": {\"key\": \"X-Added\", "
        "\"value\": \"1\"}}, {\"header\": {\"key\": \"x-b\", \"value\": \"2\"}, \"append\": false},"
        " {\"header\": {\"key\": \"x-c\", \"value\": \"3\"}, \"append_action\": "
        "\"ADD_IF_ABSENT\"}],"
        " \"response_headers_to_remove\": [\"Server\"]");
    const struct route_cfg *r = route0(c);
    assert_true(str_eq_lit(r->name, "r0"));
    assert_int_equal(r->request_edits.n_add, 3);
    assert_true(str_eq_lit(r->request_edits.add[0].name, "x-added"));
    assert_true(str_eq_lit(r->request_edits.add[0].value, "1"));
    assert_int_equal(r->request_edits.add[0].action, HA_APPEND_IF_EXISTS_OR_ADD);
    assert_int_equal(r->request_edits.add[1].action, HA_OVERWRITE_IF_EXISTS_OR_ADD);
    assert_int_equal(r->request_edits.add[2].action, HA_ADD_IF_ABSENT);
    assert_int_equal(r->response_edits.n_remove, 1);
    assert_true(str_eq_lit(r->response_edits.remove[0], "server"));
    config_unref(c);

    c = must_load("@MATCH@",
                  "\"path\": \"/exact\", \"case_sensitive\": false, \"headers\": ["
                  "{\"name\": \"X-Exact\", \"exact_match\": \"v\"},"
                  " {\"name\": \"x-p\", \"prefix_match\": \"pre\", \"invert_match\": true},"
                  " {\"name\": \"x-present\"},"
                  " {\"name\": \"x-absent\", \"present_match\": false},"
                  " {\"name\": \":authority\", \"string_match\": {\"suffix\": \".com\", "
                  "\"ignore_case\": true}}]");
    r = route0(c);
    assert_int_equal(r->match_kind, RM_PATH);
    assert_true(str_eq_lit(r->match, "/exact"));
    assert_false(r->case_sensitive);
    assert_int_equal(r->n_headers, 5);
    assert_true(str_eq_lit(r->headers[0].name, "x-exact"));
    assert_int_equal(r->headers[0].kind, HM_EXACT);
    assert_true(str_eq_lit(r->headers[0].value, "v"));
    assert_int_equal(r->headers[1].kind, HM_PREFIX);
    assert_true(r->headers[1].invert);
    assert_int_equal(r->headers[2].kind, HM_PRESENT);
    assert_true(r->headers[2].present_value);
    assert_int_equal(r->headers[3].kind, HM_PRESENT);
    assert_false(r->headers[3].present_value);
    assert_true(str_eq_lit(r->headers[4].name, ":authority"));
    assert_int_equal(r->headers[4].kind, HM_SUFFIX);
    assert_true(r->headers[4].ignore_case);
    config_unref(c);

    c = must_load("@RA@", ", \"prefix_rewrite\": \"/v2/\", \"host_rewrite_literal\": "
                          "\"up.internal\", \"timeout\": \"0s\"");
    r = route0(c);
    assert_true(r->has_prefix_rewrite);
    assert_true(str_eq_lit(r->prefix_rewrite, "/v2/"));
    assert_true(str_eq_lit(r->host_rewrite, "up.internal"));
    assert_int_equal(r->timeout_ms, 0);
    config_unref(c);

    c = must_load("@ACTION@", "\"direct_response\": {\"status\": 418, \"body\": "
                              "{\"inline_string\": \"teapot\"}}");
    r = route0(c);
    assert_int_equal(r->action, RA_DIRECT_RESPONSE);
    assert_int_equal(r->direct_status, 418);
    assert_true(str_eq_lit(r->direct_body, "teapot"));
    assert_null(r->cluster);
    config_unref(c);

    /* Routes point at the cluster they name, not at the first one. */
    c = must_load("@ACTION@", "\"route\": {\"cluster\": \"other\"}");
    assert_ptr_equal(route0(c)->cluster, &c->clusters[1]);
    assert_ptr_equal(config_find_cluster(c, STR_LIT("other")), &c->clusters[1]);
    config_unref(c);
}

static void test_build_domain_forms(void **state)
{
    (void)state;
    struct config *c = must_load("@DOMAINS@", "\"Exact.COM\", \"*.Suffix.com\", \"*-bar.foo.com\","
                                              " \"prefix.*\", \"api-*\", \"*\"");
    const struct vhost_cfg *vh = &c->listeners[0].chains[0].hcm->routes->vhosts[0];
    assert_int_equal(vh->n_exact, 1);
    assert_true(str_eq_lit(vh->exact[0], "exact.com"));
    assert_int_equal(vh->n_suffixes, 2);
    assert_true(str_eq_lit(vh->suffixes[0], ".suffix.com"));
    assert_true(str_eq_lit(vh->suffixes[1], "-bar.foo.com"));
    assert_int_equal(vh->n_prefixes, 2);
    assert_true(str_eq_lit(vh->prefixes[0], "prefix."));
    assert_true(str_eq_lit(vh->prefixes[1], "api-"));
    assert_true(vh->is_wildcard);
    config_unref(c);

    static const char *bad[] = {"\"a*b.com\"", "\"*a*\"", "\"**\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char want[256], frag[64];
        snprintf(frag, sizeof(frag), "\"ok.com\", %s", bad[i]);
        snprintf(want, sizeof(want),
                 VH0 ".domains[1]: invalid domain '%.*s': a wildcard is allowed only as the whole "
                     "domain, at its start or at its end",
                 (int)strlen(bad[i]) - 2, bad[i] + 1);
        expect_error("@DOMAINS@", frag, want);
    }
    expect_error("@DOMAINS@", "\"\"", VH0 ".domains[0]: empty domain");
    expect_error("@DOMAINS@", "", VH0 ".domains: at least one domain is required");
    expect_error("@VHOSTS@", ", {\"name\": \"vh2\", \"domains\": [\"a.com\", \"*\"]}",
                 RC ".virtual_hosts[1].domains[1]: duplicate domain '*' (also in virtual host "
                    "'vh')");
    expect_error("@DOMAINS@", "\"A.com\", \"a.COM\"",
                 VH0 ".domains[1]: duplicate domain 'a.com' (also in virtual host 'vh')");
}

/* normalize_path, merge_slashes and path_with_escaped_slashes_action compile into
 * hcm->path_norm (path_norm.h); all unset is "off" (Envoy's runtime default for normalize_path,
 * KEEP_UNCHANGED for IMPLEMENTATION_SPECIFIC_DEFAULT), and path_norm.any says whether any is on. */
static void test_build_path_normalization(void **state)
{
    (void)state;
    struct config *c = must_load(NULL, NULL);
    const struct path_norm_opts *o = &c->listeners[0].chains[0].hcm->path_norm;
    assert_false(o->any);
    assert_false(o->normalize);
    assert_false(o->merge_slashes);
    assert_int_equal(o->escaped_slashes, PATH_SLASHES_KEEP);
    config_unref(c);

    c = must_load("@HCM@", ", \"normalize_path\": true, \"merge_slashes\": true");
    o = &c->listeners[0].chains[0].hcm->path_norm;
    assert_true(o->any);
    assert_true(o->normalize);
    assert_true(o->merge_slashes);
    assert_int_equal(o->escaped_slashes, PATH_SLASHES_KEEP);
    config_unref(c);

    c = must_load("@HCM@", ", \"normalize_path\": false");
    assert_false(c->listeners[0].chains[0].hcm->path_norm.any);
    config_unref(c);

    static const struct {
        const char *name;
        int want;
        bool any;
    } actions[] = {
        {"IMPLEMENTATION_SPECIFIC_DEFAULT", PATH_SLASHES_KEEP, false},
        {"KEEP_UNCHANGED", PATH_SLASHES_KEEP, false},
        {"REJECT_REQUEST", PATH_SLASHES_REJECT, true},
        {"UNESCAPE_AND_REDIRECT", PATH_SLASHES_UNESCAPE_REDIRECT, true},
        {"UNESCAPE_AND_FORWARD", PATH_SLASHES_UNESCAPE_FORWARD, true},
    };
    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++) {
        char frag[128];
        snprintf(frag, sizeof(frag), ", \"path_with_escaped_slashes_action\": \"%s\"",
                 actions[i].name);
        c = must_load("@HCM@", frag);
        o = &c->listeners[0].chains[0].hcm->path_norm;
        assert_int_equal(o->escaped_slashes, actions[i].want);
        assert_int_equal(o->any, actions[i].any);
        assert_false(o->normalize);
        config_unref(c);
    }
    expect_error("@HCM@", ", \"path_with_escaped_slashes_action\": 9",
                 HCM ".path_with_escaped_slashes_action: unknown value 9 for "
                     "envoy.extensions.filters.network.http_connection_manager.v3."
                     "HttpConnectionManager.PathWithEscapedSlashesAction (expected one of "
                     "IMPLEMENTATION_SPECIFIC_DEFAULT, KEEP_UNCHANGED, REJECT_REQUEST, "
                     "UNESCAPE_AND_REDIRECT, UNESCAPE_AND_FORWARD)");
}

/* An xDS listener in protobuf can carry a path_with_escaped_slashes_action JSON cannot name
 * (proto3 enums are open): rejected with its field path. */
static void test_build_path_normalization_unknown_action_from_xds(void **state)
{
    (void)state;
    static const char lst[] =
        "{\"name\": \"x\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 0}}, \"filter_chains\": [{\"filters\": [{\"name\": \"hcm\", "
        "\"typed_config\": {\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"d\", "
        "\"route_config\": {}, \"http_filters\": [" ROUTER_FILTER "]}}]}]}";
    struct err e;
    err_clear(&e);
    json_t *j = pbjson_load_json(lst, sizeof(lst) - 1, &e);
    assert_non_null(j);
    ProtobufCMessage *m = pbjson_decode(&envoy__config__listener__v3__listener__descriptor, j,
                                        pbtypes_find, "resources[0]", &e);
    json_decref(j);
    if (m == NULL) {
        fail_msg("%s", e.msg);
    }
    Envoy__Config__Listener__V3__Listener *pl = (Envoy__Config__Listener__V3__Listener *)m;
    Google__Protobuf__Any *any = pl->filter_chains[0]->filters[0]->typed_config;
    ProtobufCMessage *hm = NULL;
    assert_int_equal(pbjson_any_unpack(any, pbtypes_find, "x", &hm, &e), 0);
    ((Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *)hm)
        ->path_with_escaped_slashes_action = 9;
    size_t n = protobuf_c_message_get_packed_size(hm);
    uint8_t *bytes = malloc(n);
    assert_non_null(bytes);
    protobuf_c_message_pack(hm, bytes);
    protobuf_c_message_free_unpacked(hm, NULL);
    free(any->value.data); /* protobuf-c's default allocator: freed with the message */
    any->value.data = bytes;
    any->value.len = n;

    struct config *base = must_load(NULL, NULL);
    struct arena a;
    arena_init(&a, 4096);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    c->clusters = base->clusters;
    c->n_clusters = base->n_clusters;
    c->cluster_map = base->cluster_map;
    assert_int_not_equal(build_listener(c, "resources[0]", pl, &e), 0);
    assert_string_equal(e.msg, "resources[0].filter_chains[0].filters[0].typed_config."
                               "path_with_escaped_slashes_action: unknown value 9");
    config_unref(c);
    config_unref(base);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_build_rejects_unsupported_fields(void **state)
{
    (void)state;
    static const struct {
        const char *marker;
        const char *frag;
        const char *want;
    } cases[] = {
        {"@BOOT@", ", \"dynamic_resources\": {\"lds_config\": {\"ads\": {}}}",
         "dynamic_resources.lds_config.ads: needs dynamic_resources.ads_config"},
        {"@BOOT@", ", \"dynamic_resources\": {\"lds_config\": {\"api_config_source\": {}}}",
         "dynamic_resources.lds_config.api_config_source: " UNSUPPORTED
         " (only a filesystem path is)"},
        {"@BOOT@", ", \"dynamic_resources\": {\"cds_config\": {\"ads\": {}}}",
         "dynamic_resources.cds_config.ads: needs dynamic_resources.ads_config"},
        {"@BOOT@", ", \"dynamic_resources\": {\"cds_config\": {\"api_config_source\": {}}}",
         "dynamic_resources.cds_config.api_config_source: " UNSUPPORTED
         " (only a filesystem path is)"},
        {"@BOOT@",
         ", \"dynamic_resources\": {\"cds_config\": {\"path\": \"/x\", "
         "\"initial_fetch_timeout\": \"1s\"}}",
         "dynamic_resources.cds_config.initial_fetch_timeout: " UNSUPPORTED
         " with a filesystem config source"},
        {"@BOOT@", ", \"dynamic_resources\": {\"cds_config\": {}}",
         "dynamic_resources.cds_config: one of path, path_config_source is required"},
        {"@BOOT@",
         ", \"dynamic_resources\": {\"cds_config\": {\"path_config_source\": {\"path\": \"/x\", "
         "\"watched_directory\": {}}}}",
         "dynamic_resources.cds_config.path_config_source.watched_directory.path: required"},
        {"@BOOT@",
         ", \"dynamic_resources\": {\"cds_config\": {\"path\": \"/x\", "
         "\"resource_api_version\": \"V2\"}}",
         "dynamic_resources.cds_config.resource_api_version: V2 is not supported (use V3)"},
        {"@ROUTES@", "\"rds\": {\"route_config_name\": \"r\", \"config_source\": {\"ads\": {}}}",
         HCM ".rds.config_source.ads: needs dynamic_resources.ads_config"},
        {"@CLUSTER@", ", \"transport_socket_matches\": [{\"name\": \"m\"}]",
         C0 ".transport_socket_matches: " UNSUPPORTED},
        {"@CLUSTER@", ", \"circuit_breakers\": {\"per_host_thresholds\": [{\"max_requests\": 10}]}",
         C0 ".circuit_breakers.per_host_thresholds: " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"health_checks\": [{\"timeout\": \"1s\", \"interval\": \"2s\", "
         "\"unhealthy_threshold\": 1, \"healthy_threshold\": 1, \"http_health_check\": "
         "{\"path\": \"/\", \"codec_client_type\": \"HTTP3\"}}]",
         C0 ".health_checks[0].http_health_check.codec_client_type: HTTP3 is " UNSUPPORTED},
        {"@CLUSTER@", ", \"common_lb_config\": {\"locality_weighted_lb_config\": {}}",
         C0 ".common_lb_config.locality_weighted_lb_config: " UNSUPPORTED},
        {"@CLUSTER@", ", \"eds_cluster_config\": {\"eds_config\": {\"ads\": {}}}",
         C0 ".eds_cluster_config: needs type EDS"},
        {"@CLUSTER@", ", \"type\": \"EDS\"",
         C0 ".type: EDS in static_resources is " UNSUPPORTED
            " (EDS clusters can come from dynamic_resources.cds_config)"},
        {"@CLUSTER@", ", \"type\": \"LOGICAL_DNS\"",
         C0 ".load_assignment.endpoints[0].lb_endpoints: LOGICAL_DNS clusters must have a single "
            "locality_lb_endpoint and a single lb_endpoint (got 2 lb_endpoints)"},
        {"@CLUSTER@", ", \"cluster_type\": {\"name\": \"custom\"}",
         C0 ".cluster_type: " UNSUPPORTED},
        {"@CLUSTER@", ", \"lb_policy\": \"LOAD_BALANCING_POLICY_CONFIG\"",
         C0 ".lb_policy: LOAD_BALANCING_POLICY_CONFIG is " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"lb_policy\": \"RING_HASH\", \"ring_hash_lb_config\": {\"hash_function\": "
         "\"MURMUR_HASH_2\"}",
         C0 ".ring_hash_lb_config.hash_function: MURMUR_HASH_2 is " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http"
         ".v3.HttpProtocolOptions\": {\"@type\": "
         "\"type.googleapis.com/google.protobuf.Struct\", \"value\": {}}}",
         C0 ".typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3."
            "HttpProtocolOptions\"]: expected a typed config of type "
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"},
        {"@CLUSTER@",
         ", \"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http"
         ".v3.HttpProtocolOptions\": {\"@type\": \"type.googleapis.com/envoy.extensions."
         "upstreams.http.v3.HttpProtocolOptions\", \"auto_config\": {}}}",
         C0 ".typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3."
            "HttpProtocolOptions\"].auto_config: " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http"
         ".v3.HttpProtocolOptions\": {\"@type\": \"type.googleapis.com/envoy.extensions."
         "upstreams.http.v3.HttpProtocolOptions\", \"explicit_http_config\": "
         "{\"http2_protocol_options\": {\"allow_connect\": true}}}}",
         C0 ".typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3."
            "HttpProtocolOptions\"].explicit_http_config.http2_protocol_options.allow_connect:"
            " " UNSUPPORTED},
        {"@CLUSTER@", ", \"http2_protocol_options\": {\"max_concurrent_streams\": 0}",
         C0 ".http2_protocol_options.max_concurrent_streams: 0 is out of range (1-2147483647)"},
        {"@LBE@", ", \"health_status\": \"DRAINING\"",
         C0
         ".load_assignment.endpoints[0].lb_endpoints[0].health_status: DRAINING is " UNSUPPORTED},
        {"@MATCH@",
         "\"safe_regex\": {\"google_re2\": {\"max_program_size\": 100}, \"regex\": \"/a.*\"}",
         R0 ".match.safe_regex.google_re2.max_program_size: " UNSUPPORTED},
        {"@RA@", ", \"hash_policy\": [{\"filter_state\": {\"key\": \"k\"}}]",
         R0 ".route.hash_policy[0].filter_state: " UNSUPPORTED},
        {"@RA@", ", \"hash_policy\": [{\"cookie\": {\"name\": \"c\", \"ttl\": \"10s\"}}]",
         R0 ".route.hash_policy[0].cookie.ttl: " UNSUPPORTED},
        {"@RA@",
         ", \"hash_policy\": [{\"header\": {\"header_name\": \"x\", \"regex_rewrite\": "
         "{\"pattern\": {\"regex\": \"a\"}, \"substitution\": \"b\"}}}]",
         R0 ".route.hash_policy[0].header.regex_rewrite: " UNSUPPORTED},
        {"@RA@", ", \"retry_policy\": {\"retry_on\": \"5xx,envoy-ratelimited\"}",
         R0 ".route.retry_policy.retry_on: 'envoy-ratelimited' is " UNSUPPORTED},
        {"@ACTION@", "\"redirect\": {\"path_redirect\": \"/x\"}", R0 ".redirect: " UNSUPPORTED},
        {"@VHOST@",
         ", \"retry_policy\": {\"retriable_headers\": [{\"name\": \"x\", "
         "\"present_match\": true}]}",
         VH0 ".retry_policy.retriable_headers: " UNSUPPORTED},
        {"@VHOST@",
         ", \"retry_policy\": {\"retry_host_predicate\": [{\"name\": "
         "\"envoy.retry_host_predicates.omit_canary_hosts\"}]}",
         VH0 ".retry_policy.retry_host_predicate[0]: retry host predicate "
             "'envoy.retry_host_predicates.omit_canary_hosts' is " UNSUPPORTED
             " (only envoy.retry_host_predicates.previous_hosts)"},
        {"@VHOST@", ", \"require_tls\": \"ALL\"", VH0 ".require_tls: " UNSUPPORTED},
        {"@HCM@", ", \"codec_type\": \"HTTP3\"", HCM ".codec_type: HTTP3 is " UNSUPPORTED},
        {"@HCM@", ", \"http2_protocol_options\": {\"allow_connect\": true}",
         HCM ".http2_protocol_options.allow_connect: " UNSUPPORTED},
        {"@HCM@", ", \"common_http_protocol_options\": {\"max_connection_duration\": \"10s\"}",
         HCM ".common_http_protocol_options.max_connection_duration: " UNSUPPORTED},
        {"@HTTP_FILTERS@", "{\"name\": \"envoy.filters.http.lua\"}, " ROUTER_FILTER,
         HCM ".http_filters[0]: HTTP filter 'envoy.filters.http.lua' is " UNSUPPORTED},
        {"@HTTP_FILTERS@",
         "{\"name\": \"envoy.filters.http.lua\", \"is_optional\": true}, " ROUTER_FILTER,
         HCM ".http_filters[0]: HTTP filter 'envoy.filters.http.lua' is " UNSUPPORTED},
        {"@HTTP_FILTERS@",
         "{\"name\": \"my.filter\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/google.protobuf.Struct\", \"value\": {}}}, " ROUTER_FILTER,
         HCM ".http_filters[0]: HTTP filter 'my.filter' (google.protobuf.Struct) is " UNSUPPORTED},
        {"@HTTP_FILTERS@",
         "{\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\""
         ": \"type.googleapis.com/envoy.extensions.filters.http.router.v3."
         "Router\", \"respect_expected_rq_timeout\": true}}",
         HCM ".http_filters[0].typed_config.respect_expected_rq_timeout: " UNSUPPORTED},
        {"@NETFILTERS@",
         "{\"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\": "
         "{\"@type\": \"type.googleapis.com/google.protobuf.Struct\", "
         "\"value\": {}}},",
         L0 ".filter_chains[0].filters[0]: network filter 'envoy.filters.network.tcp_proxy' "
            "(google.protobuf.Struct) is " UNSUPPORTED},
        {"@CHAIN@", ", \"transport_socket\": {\"name\": \"tls\"}",
         L0 ".filter_chains[0].transport_socket.name: transport socket 'tls' is " UNSUPPORTED},
        {"@CHAIN@", ", \"filter_chain_match\": {\"server_names\": [\"a.com\", \"a*.com\"]}",
         L0 ".filter_chains[0].filter_chain_match.server_names: [1] 'a*.com': empty, or a partial "
            "wildcard (only \"*.example.com\" wildcards are supported, as in Envoy)"},
        {"@CHAIN@", ", \"filter_chain_match\": {\"application_protocols\": [\"\"]}",
         L0 ".filter_chains[0].filter_chain_match.application_protocols: [0] must be 1-255 bytes "
            "long"},
        {"@CHAIN@", ", \"filter_chain_match\": {\"transport_protocol\": \"quic\"}",
         L0 ".filter_chains[0].filter_chain_match.transport_protocol: 'quic' is " UNSUPPORTED
            " (\"tls\" or \"raw_buffer\": the tls_inspector listener filter tells them apart)"},
        {"@LISTENER@",
         ", \"listener_filters\": [{\"name\": \"t\", \"typed_config\": {\"@type\": \"" TLSI_TYPE
         "\", \"enable_ja3_fingerprinting\": true}}]",
         L0 ".listener_filters[0].typed_config.enable_ja3_fingerprinting: " UNSUPPORTED},
        {"@LISTENER@",
         ", \"listener_filters\": [{\"name\": \"t\", \"typed_config\": {\"@type\": \"" TLSI_TYPE
         "\", \"initial_read_buffer_size\": 1024}}]",
         L0 ".listener_filters[0].typed_config.initial_read_buffer_size: " UNSUPPORTED},
        {"@LISTENER@", ", \"listener_filters_timeout\": \"-1s\"",
         L0 ".listener_filters_timeout: must not be negative"},
        {"@LISTENER@", ", \"listener_filters\": [{\"name\": \"tls_inspector\"}]",
         L0 ".listener_filters[0]: listener filter 'tls_inspector' is " UNSUPPORTED},
        {"@LISTENER@",
         ", \"listener_filters\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/google.protobuf.Struct\", \"value\": {}}}]",
         L0 ".listener_filters[0]: listener filter 'x' (google.protobuf.Struct) is " UNSUPPORTED},
        {"@LISTENER@", ", \"use_original_dst\": true", L0 ".use_original_dst: " UNSUPPORTED},
        {"@LISTENER@",
         ", \"default_filter_chain\": {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"destination_port\": 80}}",
         L0 ".default_filter_chain.filter_chain_match: " UNSUPPORTED},
        {"@LISTENER@", ", \"api_listener\": {}", L0 ".api_listener: " UNSUPPORTED},
        {"@RC@", ", \"internal_only_headers\": [\"x-internal\"]",
         RC ".internal_only_headers: " UNSUPPORTED},
        {"@RC@", ", \"validate_clusters\": false", RC ".validate_clusters: " UNSUPPORTED},
        {"@ADMIN@", ", \"profile_path\": \"/tmp/prof\"", "admin.profile_path: " UNSUPPORTED},
        {"@ROUTE@",
         ", \"request_headers_to_add\": [{\"header\": {\"key\": \"x\", \"value\": "
         "\"%DOWNSTREAM_REMOTE_ADDRESS%\"}}]",
         R0 ".request_headers_to_add[0].header.value: header value formatters (%...%) "
            "are " UNSUPPORTED},
        {"@ROUTE@",
         ", \"request_headers_to_add\": [{\"header\": {\"key\": \"x\", \"value\": "
         "\"v\"}, \"append_action\": \"OVERWRITE_IF_EXISTS\"}]",
         R0 ".request_headers_to_add[0].append_action: OVERWRITE_IF_EXISTS is " UNSUPPORTED},
        {"@EPADDR@", "\"127.0.0.1\", \"protocol\": \"UDP\"",
         C0 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address"
            ".protocol: UDP is " UNSUPPORTED},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(cases[i].marker, cases[i].frag, cases[i].want);
    }
}

static void test_build_semantic_errors(void **state)
{
    (void)state;
    /* A second listener, for the duplicate checks. */
#define LISTENER2_HCM(name, port, hcm)                                                             \
    ", {\"name\": \"" name "\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "   \
    "\"port_value\": " #port "}}, \"filter_chains\": [{\"filters\": [{\"name\": \"hcm\", "         \
    "\"typed_config\": {\"@type\": \"" HCM_TYPE "\"" hcm ", \"http_filters\": [" ROUTER_FILTER     \
    "]}}]}]}"
#define LISTENER2(name, port)                                                                      \
    LISTENER2_HCM(name, port, ", \"stat_prefix\": \"s\", \"route_config\": {}")
#define L1 "static_resources.listeners[1]"
    static const struct {
        const char *marker;
        const char *frag;
        const char *want;
    } cases[] = {
        {"@LISTENERS@", LISTENER2("l1", 10001),
         "static_resources.listeners[1].name: duplicate listener name 'l1'"},
        {"@LISTENERS@", LISTENER2("l2", 10000),
         "static_resources.listeners[1].address: 127.0.0.1:10000 is already used by listener "
         "'l1'"},
        {"@CLUSTERS@", ", {\"name\": \"backend\"}",
         "static_resources.clusters[2].name: duplicate cluster name 'backend'"},
        {"@VHOSTS@", ", {\"name\": \"vh\", \"domains\": [\"a.com\"]}",
         RC ".virtual_hosts[1].name: duplicate virtual host name 'vh'"},
        {"@ACTION@", "\"route\": {\"cluster\": \"nope\"}",
         R0 ".route.cluster: unknown cluster 'nope'"},
        {"@ACTION@", "\"route\": {}", R0 ".route.cluster: required"},
        {"@HTTP_FILTERS@", "", HCM ".http_filters: must end with envoy.filters.http.router"},
        {"@HTTP_FILTERS@", ROUTER_FILTER ", " ROUTER_FILTER,
         HCM ".http_filters[0]: envoy.filters.http.router must be the last filter, and appear "
             "once"},
        {"@LADDR@", "\"not-an-ip\"",
         L0 ".address.socket_address.address: 'not-an-ip' is not an IP address"},
        {"@LADDR@", "\"127.0.0.256\"",
         L0 ".address.socket_address.address: '127.0.0.256' is not an IP address"},
        {"@LPORT@", "70000",
         L0 ".address.socket_address.port_value: port 70000 out of range "
            "(0-65535)"},
        {"@EPADDR@", "\"localhost\"",
         C0 ".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address"
            ".address: 'localhost' is not an IP address"},
        {"@CTO@", "\"-1s\"", C0 ".connect_timeout: must not be negative"},
        {"@CTO@", "\"0s\"", C0 ".connect_timeout: must be greater than 0"},
        {"@RA@", ", \"timeout\": \"-0.5s\"", R0 ".route.timeout: must not be negative"},
        {"@HCM@", ", \"stream_idle_timeout\": \"-3s\"",
         HCM ".stream_idle_timeout: must not be "
             "negative"},
        {"@HCM@", ", \"max_request_headers_kb\": 0",
         HCM ".max_request_headers_kb: 0 is out of range (1-8192)"},
        {"@HCM@", ", \"max_request_headers_kb\": 8193",
         HCM ".max_request_headers_kb: 8193 is out of range (1-8192)"},
        {"@HCM@", ", \"common_http_protocol_options\": {\"max_headers_count\": 0}",
         HCM ".common_http_protocol_options.max_headers_count: must be at least 1"},
        {"@LBE@", ", \"load_balancing_weight\": 0",
         C0 ".load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight: must be at "
            "least 1"},
        {"@CLUSTER@", ", \"least_request_lb_config\": {\"choice_count\": 3}",
         C0 ".least_request_lb_config: requires lb_policy LEAST_REQUEST"},
        {"@CLUSTER@",
         ", \"lb_policy\": \"LEAST_REQUEST\", \"least_request_lb_config\": "
         "{\"choice_count\": 1}",
         C0 ".least_request_lb_config.choice_count: must be at least 2"},
        {"@ACTION@", "\"direct_response\": {\"status\": 99}",
         R0 ".direct_response.status: 99 is not an HTTP status (100-599)"},
        {"@ACTION@",
         "\"direct_response\": {\"status\": 200, \"body\": {\"filename\": "
         "\"/nonexistent/body\"}}",
         R0 ".direct_response.body.filename: cannot read '/nonexistent/body': No such file or "
            "directory"},
        {"@MATCH@", "\"headers\": []", R0 ".match: one of prefix, path, safe_regex is required"},
        {"@MATCH@", "\"prefix\": \"/\", \"headers\": [{\"name\": \"x\", \"prefix_match\": \"\"}]",
         R0 ".match.headers[0].prefix_match: must not be empty"},
        {"@MATCH@", "\"prefix\": \"/\", \"headers\": [{\"name\": \"bad header\"}]",
         R0 ".match.headers[0].name: invalid header name 'bad header'"},
        {"@ROUTE@",
         ", \"request_headers_to_add\": [{\"header\": {\"key\": \":path\", \"value\": "
         "\"/x\"}}]",
         R0 ".request_headers_to_add[0].header.key: ':path': pseudo-headers and host may not be "
            "modified"},
        {"@ROUTE@", ", \"request_headers_to_remove\": [\"Host\"]",
         R0 ".request_headers_to_remove[0]: 'host': pseudo-headers and host may not be removed"},
        {"@ROUTE@",
         ", \"response_headers_to_add\": [{\"header\": {\"key\": \"x\", \"value\": "
         "\"v\"}, \"append\": true, \"append_action\": \"ADD_IF_ABSENT\"}]",
         R0 ".response_headers_to_add[0].append_action: append and append_action may not both "
            "be set"},
        {"@ROUTE@", ", \"response_headers_to_add\": [{\"append\": true}]",
         R0 ".response_headers_to_add[0].header: required"},
        {"@LISTENERS@", LISTENER2_HCM("l2", 10001, ", \"route_config\": {}"),
         L1 ".filter_chains[0].filters[0].typed_config.stat_prefix: required"},
        {"@LISTENERS@", LISTENER2_HCM("l2", 10001, ", \"stat_prefix\": \"s\""),
         L1 ".filter_chains[0].filters[0].typed_config.route_config: required"},
        {"@LISTENERS@",
         ", {\"name\": \"l2\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
         "\"port_value\": 10001}}, \"filter_chains\": []}",
         L1 ".filter_chains: a listener needs a filter chain"},
        {"@CHAINS@", ", {" TCP_CHAIN_FILTERS "}",
         L0 ".filter_chains[1].filter_chain_match: matches the same connections as "
            "filter_chains[0] (Envoy: multiple filter chains with the same matching rules)"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"destination_port\": 9000}}, {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"destination_port\": 9000, "
         "\"source_ports\": []}}",
         L0 ".filter_chains[2].filter_chain_match: matches the same connections as "
            "filter_chains[1] (Envoy: multiple filter chains with the same matching rules)"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"prefix_ranges\": [{"
         "\"address_prefix\": \"10.1.0.0\", \"prefix_len\": 16}]}}, {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"prefix_ranges\": [{\"address_prefix\": \"10.9.0.0\", "
         "\"prefix_len\": 16}, {\"address_prefix\": \"10.1.7.7\", \"prefix_len\": 16}]}}",
         L0 ".filter_chains[2].filter_chain_match: matches the same connections as "
            "filter_chains[1] (Envoy: multiple filter chains with the same matching rules)"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"server_names\": [\"a.test\", "
         "\"*.B.test\"]}}, {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"server_names\": [\"*.b.TEST\"]}}",
         L0 ".filter_chains[2].filter_chain_match: matches the same connections as "
            "filter_chains[1] (Envoy: multiple filter chains with the same matching rules)"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"application_protocols\": "
         "[\"h2\", \"http/1.1\"]}}, {" TCP_CHAIN_FILTERS
         ", \"filter_chain_match\": {\"application_protocols\": [\"http/1.1\"]}}",
         L0 ".filter_chains[2].filter_chain_match: matches the same connections as "
            "filter_chains[1] (Envoy: multiple filter chains with the same matching rules)"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"prefix_ranges\": [{"
         "\"address_prefix\": \"10.0.0.0\", \"prefix_len\": 33}]}}",
         L0 ".filter_chains[1].filter_chain_match.prefix_ranges[0]: '10.0.0.0/33' is not an IP "
            "address range"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"source_prefix_ranges\": [{"
         "\"address_prefix\": \"host.example\"}]}}",
         L0 ".filter_chains[1].filter_chain_match.source_prefix_ranges[0]: 'host.example/0' is "
            "not an IP address range"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"destination_port\": 70000}}",
         L0 ".filter_chains[1].filter_chain_match.destination_port: must be 1-65535, not 70000"},
        {"@CHAINS@",
         ", {" TCP_CHAIN_FILTERS ", \"filter_chain_match\": {\"source_ports\": [80, 0]}}",
         L0 ".filter_chains[1].filter_chain_match.source_ports: [1] must be 1-65535, not 0"},
        {"@LISTENERS@",
         ", {\"name\": \"l2\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
         "\"port_value\": 10001}}, \"filter_chains\": [{\"filters\": []}]}",
         L1 ".filter_chains[0].filters: a filter chain needs the http_connection_manager or "
            "tcp_proxy filter"},
        {"@LISTENERS@",
         ", {\"name\": \"l2\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
         "\"port_value\": 10001}}, \"filter_chains\": [{\"filters\": [{\"name\": \"x\"}]}]}",
         L1 ".filter_chains[0].filters[0].typed_config: required"},
        {"@CLUSTERS@", ", {\"name\": \"x\", \"load_assignment\": {\"endpoints\": []}}",
         "static_resources.clusters[2].load_assignment.cluster_name: required"},
        {"@CLUSTERS@", ", {\"name\": \"\"}", "static_resources.clusters[2].name: required"},
#define C2 "static_resources.clusters[2]"
#define OD_CLUSTER ", {\"name\": \"od\", \"type\": \"ORIGINAL_DST\", "
        {"@CLUSTERS@", ", {\"name\": \"od\", \"type\": \"ORIGINAL_DST\"}",
         C2 ".lb_policy: ROUND_ROBIN is not valid for cluster type ORIGINAL_DST: ORIGINAL_DST "
            "clusters take CLUSTER_PROVIDED, and only they do (as in Envoy)"},
        {"@CLUSTERS@", ", {\"name\": \"x\", \"lb_policy\": \"CLUSTER_PROVIDED\"}",
         C2 ".lb_policy: CLUSTER_PROVIDED is not valid for cluster type STATIC: ORIGINAL_DST "
            "clusters take CLUSTER_PROVIDED, and only they do (as in Envoy)"},
        {"@CLUSTERS@",
         OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"load_assignment\": {\"cluster_name\": "
                    "\"od\", \"endpoints\": [{\"lb_endpoints\": []}]}}",
         C2 ".load_assignment: ORIGINAL_DST clusters must have no endpoints (as in Envoy)"},
        {"@CLUSTERS@", OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"outlier_detection\": {}}",
         C2 ".outlier_detection: " UNSUPPORTED},
        {"@CLUSTERS@",
         OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"cleanup_interval\": "
                    "\"0s\"}",
         C2 ".cleanup_interval: must be greater than 0"},
        {"@CLUSTERS@",
         ", {\"name\": \"x\", \"original_dst_lb_config\": {\"use_http_header\": true}}",
         C2 ".original_dst_lb_config: needs type ORIGINAL_DST"},
        {"@CLUSTERS@", ", {\"name\": \"x\", \"cleanup_interval\": \"1s\"}",
         C2 ".cleanup_interval: needs type ORIGINAL_DST"},
        {"@CLUSTERS@",
         OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"original_dst_lb_config\": {"
                    "\"upstream_port_override\": 0}}",
         C2 ".original_dst_lb_config.upstream_port_override: must be 1-65535, not 0"},
        {"@CLUSTERS@",
         OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"original_dst_lb_config\": {"
                    "\"http_header_name\": \"x-dst\"}}",
         C2 ".original_dst_lb_config.http_header_name: needs use_http_header"},
        {"@CLUSTERS@",
         OD_CLUSTER "\"lb_policy\": \"CLUSTER_PROVIDED\", \"original_dst_lb_config\": {"
                    "\"use_http_header\": true, \"http_header_name\": \"x dst\"}}",
         C2 ".original_dst_lb_config.http_header_name: 'x dst' is not a header name"},
        {"@VHOSTS@", ", {\"domains\": [\"a.com\"]}", RC ".virtual_hosts[1].name: required"},
        {"@ADMIN@", ", \"access_log_path\": \"/a\", \"access_log\": [{\"name\": \"x\"}]",
         "admin.access_log: more than one admin access log is " UNSUPPORTED},
        {"@HCM@", ", \"access_log\": [{\"name\": \"x\"}]",
         HCM ".access_log[0].typed_config: required"},
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\"}}]",
         HCM ".access_log[0].typed_config.path: required"},
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
         "\"path\": \"/a\", \"log_format\": {\"json_format\": {\"a\": {\"b\": 1}}}}}]",
         HCM ".access_log[0].typed_config.log_format.json_format.a: nested objects and lists are "
             "not supported by remora yet"},
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
         "\"path\": \"/a\", \"json_format\": {\"s\": \"%NOPE%\"}}}]",
         HCM ".access_log[0].typed_config.json_format: key 's': access log format: command "
             "%NOPE% is not an Envoy command operator"},
        /* text formats are checked when built, as dictionaries are (they were taken, and the
         * workers fell back to the default format) */
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
         "\"path\": \"/a\", \"log_format\": {\"text_format\": \"%NOPE% %START_TIME%\"}}}]",
         HCM ".access_log[0].typed_config.log_format.text_format: access log format: command "
             "%NOPE% is not an Envoy command operator"},
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog\", "
         "\"log_format\": {\"text_format_source\": {\"inline_string\": \"%REQ(:PATH\"}}}}]",
         HCM ".access_log[0].typed_config.log_format.text_format_source: access log format: "
             "unterminated '%' at offset 0"},
        {"@HCM@",
         ", \"access_log\": [{\"name\": \"x\", \"typed_config\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\", "
         "\"path\": \"/a\", \"format\": \"%DURATION%%BYTES%\"}}]",
         HCM ".access_log[0].typed_config.format: access log format: command %BYTES% is not "
             "an Envoy command operator"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(cases[i].marker, cases[i].frag, cases[i].want);
    }
    /* Direct response bodies are capped by max_direct_response_body_size_bytes (4096). */
    char frag[5200] = "\"direct_response\": {\"status\": 200, \"body\": {\"inline_string\": \"";
    size_t n = strlen(frag);
    memset(frag + n, 'x', 4097);
    strcpy(frag + n + 4097, "\"}}");
    expect_error("@ACTION@", frag,
                 R0 ".direct_response.body.inline_string: larger than 4096 bytes");
    frag[n + 4096] = '"';
    strcpy(frag + n + 4097, "}}");
    struct config *c = must_load("@ACTION@", frag);
    assert_int_equal(route0(c)->direct_body.len, 4096);
    config_unref(c);
}

/* http2_protocol_options.connection_keepalive: upstream (typed options and the deprecated
 * cluster field) and downstream; Envoy's defaults and ranges; what is wrong names its path. */
#define HPO_KA(ka)                                                                                 \
    ", \"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3."               \
    "HttpProtocolOptions\": {\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3." \
    "HttpProtocolOptions\", \"explicit_http_config\": {\"http2_protocol_options\": "               \
    "{\"connection_keepalive\": " ka "}}}}"
#define HPO_PATH                                                                                   \
    C0 ".typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3."                   \
       "HttpProtocolOptions\"].explicit_http_config.http2_protocol_options.connection_keepalive"

static void test_build_h2_connection_keepalive(void **state)
{
    (void)state;
    struct config *c =
        must_load("@CLUSTER@", HPO_KA("{\"interval\": \"10s\", \"timeout\": \"0.25s\", "
                                      "\"interval_jitter\": {\"value\": 5.5}, "
                                      "\"connection_idle_interval\": \"30s\"}"));
    const struct h2_keepalive_cfg *k = &c->clusters[0].h2_keepalive;
    assert_int_equal(c->clusters[0].protocol, UPSTREAM_PROTO_HTTP2);
    assert_int_equal(k->interval_ms, 10000);
    assert_int_equal(k->timeout_ms, 250);
    assert_true(k->jitter_percent == 5.5);
    assert_int_equal(k->idle_interval_ms, 30000);
    assert_true(h2_keepalive_enabled(k));
    config_unref(c);
    /* timeout alone: no interval PINGs, Envoy's 15% jitter */
    c = must_load("@CLUSTER@", HPO_KA("{\"timeout\": \"1s\"}"));
    k = &c->clusters[0].h2_keepalive;
    assert_int_equal(k->interval_ms, 0);
    assert_int_equal(k->timeout_ms, 1000);
    assert_true(k->jitter_percent == 15.0);
    config_unref(c);
    /* unset: off, upstream and downstream */
    c = must_load(NULL, NULL);
    assert_false(h2_keepalive_enabled(&c->clusters[0].h2_keepalive));
    assert_false(h2_keepalive_enabled(&c->listeners[0].chains[0].hcm->h2_keepalive));
    config_unref(c);
    /* the deprecated cluster field */
    c = must_load("@CLUSTER@", ", \"http2_protocol_options\": {\"connection_keepalive\": "
                               "{\"interval\": \"2s\", \"timeout\": \"1s\"}}");
    assert_int_equal(c->clusters[0].h2_keepalive.interval_ms, 2000);
    assert_int_equal(c->clusters[0].h2_keepalive.timeout_ms, 1000);
    config_unref(c);
    /* downstream (the HttpConnectionManager's) */
    c = must_load("@HCM@", ", \"http2_protocol_options\": {\"connection_keepalive\": "
                           "{\"interval\": \"3s\", \"timeout\": \"2s\", \"interval_jitter\": "
                           "{\"value\": 0}}}");
    const struct hcm_cfg *h = c->listeners[0].chains[0].hcm;
    assert_int_equal(h->h2_keepalive.interval_ms, 3000);
    assert_int_equal(h->h2_keepalive.timeout_ms, 2000);
    assert_true(h->h2_keepalive.jitter_percent == 0.0);
    config_unref(c);

    expect_error("@CLUSTER@", HPO_KA("{\"interval\": \"1s\"}"), HPO_PATH ".timeout: required");
    expect_error("@CLUSTER@", HPO_KA("{\"timeout\": \"0.0005s\"}"),
                 HPO_PATH ".timeout: must be at least 1ms");
    expect_error("@CLUSTER@", HPO_KA("{\"timeout\": \"1s\", \"interval\": \"0s\"}"),
                 HPO_PATH ".interval: must be at least 1ms");
    expect_error("@CLUSTER@",
                 HPO_KA("{\"timeout\": \"1s\", \"connection_idle_interval\": \"-1s\"}"),
                 HPO_PATH ".connection_idle_interval: must not be negative");
    expect_error("@CLUSTER@",
                 HPO_KA("{\"timeout\": \"1s\", \"interval_jitter\": {\"value\": 101}}"),
                 HPO_PATH ".interval_jitter.value: must be 0-100");
    /* (the JSON decoder writes the map key without brackets) */
    expect_error("@CLUSTER@", HPO_KA("{\"timeout\": \"1s\", \"intervall\": \"1s\"}"),
                 C0 ".typed_extension_protocol_options.envoy.extensions.upstreams.http.v3."
                    "HttpProtocolOptions.explicit_http_config.http2_protocol_options."
                    "connection_keepalive.intervall: unknown field");
    expect_error("@CLUSTER@",
                 ", \"http2_protocol_options\": {\"connection_keepalive\": {\"timeout\": \"1x\"}}",
                 C0 ".http2_protocol_options.connection_keepalive.timeout: invalid duration "
                    "\"1x\" (expected e.g. \"1.5s\")");
    expect_error("@HCM@",
                 ", \"http2_protocol_options\": {\"connection_keepalive\": {\"interval\": \"1s\"}}",
                 HCM ".http2_protocol_options.connection_keepalive.timeout: required");
    /* still not supported: custom SETTINGS */
    expect_error("@HCM@",
                 ", \"http2_protocol_options\": {\"custom_settings_parameters\": "
                 "[{\"identifier\": 9, \"value\": 1}]}",
                 HCM ".http2_protocol_options.custom_settings_parameters: unknown field");
}

static void test_build_decode_errors_keep_their_path(void **state)
{
    (void)state;
    expect_error("@CLUSTERS@", ", {\"name\": \"x\", \"lb_polcy\": \"ROUND_ROBIN\"}",
                 "static_resources.clusters[2].lb_polcy: unknown field");
    expect_error("@CTO@", "\"5x\"",
                 C0 ".connect_timeout: invalid duration \"5x\" (expected e.g. \"1.5s\")");
    expect_error("@MATCH@", "\"prefix\": \"/\", \"path\": \"/a\"",
                 R0 ".match.path: conflicts with 'prefix': only one of them may be set (oneof)");

    static const char yaml[] = "static_resources:\n"
                               "  clusters:\n"
                               "  - name: a\n"
                               "  - name: b\n"
                               "    lb_polcy: ROUND_ROBIN\n";
    struct err e;
    err_clear(&e);
    assert_int_equal(config_validate_text(yaml, strlen(yaml), &e), -EINVAL);
    assert_string_equal(e.msg, "static_resources.clusters[1].lb_polcy: unknown field");
    static const char ok[] = "static_resources:\n  clusters:\n  - name: a\n";
    assert_int_equal(config_validate_text(ok, strlen(ok), &e), 0);
}

/* A Bootstrap unpacked from binary (as xDS or a .pb file would give) with a field this build
 * does not know is refused, not silently trimmed. */
static void test_build_rejects_unknown_binary_fields(void **state)
{
    (void)state;
    /* Bootstrap { node (1) { id (1): "n", field 99: varint 1 } } */
    static const uint8_t bytes[] = {0x0a, 0x06, 0x0a, 0x01, 'n', 0x98, 0x06, 0x01};
    ProtobufCMessage *m = protobuf_c_message_unpack(
        &envoy__config__bootstrap__v3__bootstrap__descriptor, NULL, sizeof(bytes), bytes);
    assert_non_null(m);
    struct err e;
    err_clear(&e);
    assert_null(config_build_take((Envoy__Config__Bootstrap__V3__Bootstrap *)m, &e));
    assert_string_equal(e.msg, "node: unknown field 99");

    /* Without the unknown field the same message builds, and the snapshot owns it. */
    m = protobuf_c_message_unpack(&envoy__config__bootstrap__v3__bootstrap__descriptor, NULL, 5,
                                  (const uint8_t[]){0x0a, 0x03, 0x0a, 0x01, 'n'});
    assert_non_null(m);
    struct config *c = config_build_take((Envoy__Config__Bootstrap__V3__Bootstrap *)m, &e);
    assert_non_null(c);
    assert_ptr_equal(c->bootstrap_pb, m);
    assert_true(str_eq_lit(c->node_id, "n"));
    assert_int_equal(c->n_listeners, 0);
    assert_false(c->has_admin);
    config_unref(c);
}

static void test_build_strict_dns_resolves_at_build_time(void **state)
{
    (void)state;
    struct config *c =
        must_load("@CLUSTERS@",
                  ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", \"dns_lookup_family\": "
                  "\"V4_ONLY\", \"load_assignment\": {\"cluster_name\": \"dns\", \"endpoints\": "
                  "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
                  "{\"address\": \"localhost\", \"port_value\": 9000}}}, "
                  "\"load_balancing_weight\": 5}]}]}}");
    const struct cluster_cfg *cc = &c->clusters[2];
    assert_int_equal(cc->type, CLUSTER_STRICT_DNS);
    assert_true(cc->n_endpoints >= 1);
    assert_int_equal(cc->endpoints[0].addr.ss.ss_family, AF_INET);
    assert_true(str_eq_lit(cc->endpoints[0].addr.text, "127.0.0.1:9000"));
    assert_true(str_eq_lit(cc->endpoints[0].hostname, "localhost"));
    assert_int_equal(cc->endpoints[0].weight, 5);
    config_unref(c);

    /* A name that does not resolve leaves the cluster empty (Envoy-like), not the config
     * broken. ".invalid" is reserved never to resolve (RFC 6761). */
    c = must_load("@CLUSTERS@",
                  ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", \"load_assignment\": "
                  "{\"cluster_name\": \"dns\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": "
                  "{\"address\": {\"socket_address\": {\"address\": \"no-such-host.invalid\", "
                  "\"port_value\": 9000}}}}]}]}}");
    assert_int_equal(c->clusters[2].n_endpoints, 0);
    config_unref(c);
}

static void test_build_refcount_frees_on_last_unref(void **state)
{
    (void)state;
    struct config *c = must_load(NULL, NULL);
    config_ref(c);
    assert_int_equal(atomic_load(&c->refs), 2);
    config_unref(c);
    assert_int_equal(atomic_load(&c->refs), 1);
    config_unref(c); /* ASan reports a leak if anything survives */
    config_unref(NULL);
}

/* A tcp_proxy cluster the bootstrap does not hold: an error without a cds_config; with one,
 * named for a lookup in the CDS clusters at connection time (config.tcp_cds). */
static void test_build_tcp_proxy_cds_cluster_by_name(void **state)
{
    (void)state;
    const char *lst =
        ", {\"name\": \"t\", \"address\": {\"socket_address\": {\"address\": "
        "\"127.0.0.1\", \"port_value\": 10001}}, \"filter_chains\": [{\"filters\": "
        "[{\"name\": \"tcp\", \"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "
        "\"stat_prefix\": \"t\", \"weighted_clusters\": {\"clusters\": [{\"name\": "
        "\"backend\", \"weight\": 1}, {\"name\": \"dyn\", \"weight\": 1}]}}}]}]}";
    expect_error("@LISTENERS@", lst,
                 L1 ".filter_chains[0].filters[0].typed_config.weighted_clusters.clusters[1].name: "
                    "unknown cluster 'dyn'");
    static const char boot[] =
        "{\"dynamic_resources\": {\"cds_config\": {\"path\": \"/x/cds.yaml\"}}, "
        "\"static_resources\": {\"clusters\": [{\"name\": \"backend\"}], \"listeners\": [{"
        "\"name\": \"t\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 10001}}, \"filter_chains\": [{\"filters\": [{\"name\": \"tcp\", "
        "\"typed_config\": {\"@type\": "
        "\"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", "
        "\"stat_prefix\": \"t\", \"weighted_clusters\": {\"clusters\": [{\"name\": "
        "\"backend\", \"weight\": 1}, {\"name\": \"dyn\", \"weight\": 1}]}}}]}]}]}}";
    struct err e;
    err_clear(&e);
    struct config *c = config_load_text(boot, strlen(boot), &e);
    if (c == NULL) {
        fail_msg("build failed: %s", e.msg);
    }
    const struct tcp_proxy_cfg *t = c->listeners[0].chains[0].tcp;
    assert_true(c->tcp_cds);
    assert_non_null(t->clusters[0].cluster);
    assert_null(t->clusters[1].cluster);
    assert_string_equal(t->clusters[1].name.p, "dyn");
    config_unref(c);
}

static void test_build_config_dump_shape(void **state)
{
    (void)state;
    struct config *c = must_load(NULL, NULL);
    json_t *j = config_dump_json(c);
    json_t *configs = json_object_get(j, "configs");
    assert_int_equal(json_array_size(configs), 4);
    json_t *boot = json_array_get(configs, 0);
    assert_string_equal(json_string_value(json_object_get(boot, "@type")),
                        "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump");
    json_t *bs = json_object_get(boot, "bootstrap");
    assert_string_equal(json_string_value(json_object_get(json_object_get(bs, "node"), "id")),
                        "node-1");
    /* snake_case names, durations as text, Any expanded with @type */
    json_t *cl0 =
        json_array_get(json_object_get(json_object_get(bs, "static_resources"), "clusters"), 0);
    assert_string_equal(json_string_value(json_object_get(cl0, "connect_timeout")), "1s");
    json_t *l0 =
        json_array_get(json_object_get(json_object_get(bs, "static_resources"), "listeners"), 0);
    json_t *tc = json_object_get(
        json_array_get(
            json_object_get(json_array_get(json_object_get(l0, "filter_chains"), 0), "filters"), 0),
        "typed_config");
    assert_string_equal(json_string_value(json_object_get(tc, "@type")), HCM_TYPE);
    assert_string_equal(json_string_value(json_object_get(tc, "stat_prefix")), "ingress");

    json_t *clusters = json_array_get(configs, 1);
    assert_string_equal(json_string_value(json_object_get(clusters, "@type")),
                        "type.googleapis.com/envoy.admin.v3.ClustersConfigDump");
    json_t *sc = json_object_get(clusters, "static_clusters");
    assert_int_equal(json_array_size(sc), 2);
    json_t *c0 = json_object_get(json_array_get(sc, 0), "cluster");
    assert_string_equal(json_string_value(json_object_get(c0, "@type")),
                        "type.googleapis.com/envoy.config.cluster.v3.Cluster");
    assert_string_equal(json_string_value(json_object_get(c0, "name")), "backend");
    json_t *ls = json_object_get(json_array_get(configs, 2), "static_listeners");
    assert_int_equal(json_array_size(ls), 1);
    json_t *rs = json_object_get(json_array_get(configs, 3), "static_route_configs");
    assert_int_equal(json_array_size(rs), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_array_get(rs, 0), "route_config"), "name")),
                        "rc");
    json_decref(j);
    config_unref(c);

    /* A snapshot built without a Bootstrap message dumps an empty list. */
    struct config bare;
    memset(&bare, 0, sizeof(bare));
    j = config_dump_json(&bare);
    assert_int_equal(json_array_size(json_object_get(j, "configs")), 0);
    json_decref(j);
}

/* ---- routing and load balancing (issue 4) ---- */

static struct config *load_example(const char *name)
{
    char path[1024];
    const char *f = __FILE__;
    const char *cut = strstr(f, "tests/unit/proxy/config/build_test.c");
    snprintf(path, sizeof(path), "%.*sexamples/%s", cut ? (int)(cut - f) : 0, f, name);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_file(path, &e);
    if (c == NULL) {
        fail_msg("%s: %s", path, e.msg);
    }
    return c;
}

/* examples/tls.yaml: mTLS on the listener and to the cluster, with the test PKI in
 * examples/tls/ (paths relative to the repository root, the tests' working directory). */
static void test_build_example_tls_yaml(void **state)
{
    (void)state;
    struct config *c = load_example("tls.yaml");
    const struct tls_ctx *down = c->chains[0].tls, *up = c->clusters[0].tls;
    assert_non_null(down);
    assert_true(down->server);
    assert_int_equal(SSL_CTX_get_verify_mode(down->ssl_ctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    assert_int_equal(down->sans->n, 1);
    assert_int_equal(down->alpn_len, 12); /* h2, http/1.1 */
    assert_int_equal(c->chains[0].handshake_timeout_ms, 10000);
    assert_non_null(up);
    assert_false(up->server);
    assert_string_equal(up->sni, "backend.mesh.test");
    assert_int_equal(SSL_CTX_get_verify_mode(up->ssl_ctx), SSL_VERIFY_PEER);
    assert_int_equal(SSL_CTX_get_max_proto_version(up->ssl_ctx), TLS1_3_VERSION);
    assert_non_null(SSL_CTX_get0_certificate(up->ssl_ctx));
    config_unref(c);
}

/* examples/tls_sds/bootstrap.yaml: the listener's certificate and trusted CA and the cluster's
 * client certificate come from examples/tls_sds/sds.yaml: two subscriptions (the certificate
 * one shared by the listener and the cluster). */
static void test_build_example_tls_sds(void **state)
{
    (void)state;
    struct config *c = load_example("tls_sds/bootstrap.yaml");
    const struct tls_ctx *down = c->chains[0].tls, *up = c->clusters[0].tls;
    assert_int_equal(c->n_sds, 2);
    assert_string_equal(c->sds[0].name.p, "proxy_identity");
    assert_int_equal(c->sds[0].n_users, 2);
    assert_string_equal(c->sds[1].name.p, "mesh_ca");
    assert_true(c->sds[1].validation);
    assert_non_null(down->live);
    assert_non_null(down->live->store);
    assert_int_equal(SSL_CTX_get_verify_mode(down->ssl_ctx),
                     SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
    assert_non_null(SSL_CTX_get0_certificate(down->ssl_ctx));
    assert_non_null(up->live);
    assert_null(up->live->store);
    assert_non_null(SSL_CTX_get0_certificate(up->ssl_ctx));
    config_unref(c);
}

/* examples/sidecar_capture.yaml: listener filters, chains by destination port, a default chain
 * and an ORIGINAL_DST cluster compile as documented. */
static void test_build_example_sidecar_capture_yaml(void **state)
{
    (void)state;
    struct config *c = load_example("sidecar_capture.yaml");
    assert_int_equal(c->n_listeners, 2);
    assert_int_equal(c->n_chains, 3);
    const struct listener_cfg *in = &c->listeners[0], *out = &c->listeners[1];
    assert_true(in->original_dst);
    assert_int_equal(in->n_chains, 1);
    assert_false(in->has_default);
    assert_true(in->select); /* a destination_port chain can miss */
    assert_true(in->wants_local);
    assert_int_equal(in->matches[0].dst_port, 8080);
    assert_ptr_equal(in->chains, &c->chains[0]);
    assert_ptr_equal(in->chains[0].listener, in);
    assert_non_null(in->chains[0].hcm);
    assert_int_equal(out->n_chains, 1);
    assert_true(out->has_default);
    assert_int_equal(out->matches[0].dst_port, 80);
    assert_int_equal(out->chains[0].index, 1);
    assert_true(out->chains[0].wants_local); /* its access log has %DOWNSTREAM_LOCAL_ADDRESS% */
    assert_int_equal(out->chains[1].index, 2);
    assert_non_null(out->chains[1].tcp);
    assert_null(out->chains[1].hcm);
    const struct cluster_cfg *pt = &c->clusters[3];
    assert_true(str_eq_lit(pt->name, "passthrough"));
    assert_int_equal(pt->type, CLUSTER_ORIGINAL_DST);
    assert_int_equal(pt->lb, LB_CLUSTER_PROVIDED);
    assert_int_equal(pt->n_endpoints, 0);
    assert_int_equal(pt->od_cleanup_ms, 5000);
    assert_int_equal(pt->od_header.len, 0);
    assert_int_equal(pt->od_port_override, 0);
    config_unref(c);
}

/* A listener with the tls_inspector and chains by server name, transport protocol and ALPN:
 * the names are lower-cased, the listener filter timeout defaults to Envoy's 15 s. */
static void test_build_tls_inspector(void **state)
{
    (void)state;
    struct config *c = must_load(
        "@LISTENERS@",
        ", {\"name\": \"sni\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
        "\"port_value\": 10443}}, \"listener_filters\": [{\"name\": \"tls_inspector\", "
        "\"typed_config\": {\"@type\": \"" TLSI_TYPE "\", \"enable_ja3_fingerprinting\": "
        "false}}], \"filter_chains\": [{" TCP_CHAIN_FILTERS
        ", \"filter_chain_match\": {\"server_names\": [\"A.Test\", \"*.b.test\"]}}, "
        "{" TCP_CHAIN_FILTERS
        ", \"filter_chain_match\": {\"transport_protocol\": \"tls\", \"application_protocols\": "
        "[\"h2\"]}}, {" TCP_CHAIN_FILTERS
        ", \"filter_chain_match\": {\"transport_protocol\": \"raw_buffer\"}}]}");
    const struct listener_cfg *l = &c->listeners[1];
    assert_true(l->tls_inspector);
    assert_false(l->original_dst);
    assert_int_equal(l->filters_timeout_ms, 15000);
    assert_false(l->continue_on_filters_timeout);
    assert_true(l->select);
    assert_false(l->wants_local); /* names and protocols need no local address */
    assert_int_equal(l->n_chains, 3);
    assert_int_equal(l->matches[0].n_server_names, 2);
    assert_true(str_eq_lit(l->matches[0].server_names[0], "a.test"));
    assert_true(str_eq_lit(l->matches[0].server_names[1], "*.b.test"));
    assert_int_equal(l->matches[1].transport, CHAIN_TRANSPORT_TLS);
    assert_int_equal(l->matches[1].n_alpn, 1);
    assert_true(str_eq_lit(l->matches[1].alpn[0], "h2"));
    assert_int_equal(l->matches[2].transport, CHAIN_TRANSPORT_RAW_BUFFER);
    assert_false(c->listeners[0].tls_inspector);
    config_unref(c);

    /* the filter by name alone, the timeout set, and chains by name without the filter (Envoy
     * takes them: a connection then has no server name, and its transport is raw_buffer) */
    c = must_load("@LISTENER@", ", \"listener_filters\": [{\"name\": "
                                "\"envoy.filters.listener.tls_inspector\"}], "
                                "\"listener_filters_timeout\": \"0.5s\", "
                                "\"continue_on_listener_filters_timeout\": true");
    assert_true(c->listeners[0].tls_inspector);
    assert_int_equal(c->listeners[0].filters_timeout_ms, 500);
    assert_true(c->listeners[0].continue_on_filters_timeout);
    config_unref(c);
    c = must_load("@CHAIN@", ", \"filter_chain_match\": {\"server_names\": [\"a.test\"]}");
    assert_false(c->listeners[0].tls_inspector);
    assert_true(c->listeners[0].select);
    config_unref(c);
    c = must_load("@LISTENER@", ", \"listener_filters_timeout\": \"0s\"");
    assert_int_equal(c->listeners[0].filters_timeout_ms, 0); /* 0: no timeout */
    config_unref(c);

    /* examples/sni_passthrough.yaml compiles as documented */
    c = load_example("sni_passthrough.yaml");
    l = &c->listeners[0];
    assert_true(l->tls_inspector);
    assert_int_equal(l->filters_timeout_ms, 5000);
    assert_int_equal(l->n_chains, 4);
    assert_true(l->has_default);
    assert_true(str_eq_lit(l->matches[1].server_names[0], "*.apps.example.com"));
    assert_int_equal(l->matches[2].transport, CHAIN_TRANSPORT_TLS);
    assert_int_equal(l->matches[3].transport, CHAIN_TRANSPORT_RAW_BUFFER);
    assert_non_null(l->chains[3].hcm);
    assert_non_null(l->chains[4].tcp);
    config_unref(c);
}

static void test_build_example_weighted_and_ring_hash_yaml(void **state)
{
    (void)state;
    struct config *c = load_example("weighted.yaml");
    const struct vhost_cfg *vh = &c->listeners[0].chains[0].hcm->routes->vhosts[0];
    assert_int_equal(vh->n_routes, 2);
    assert_int_equal(vh->routes[0].cluster_kind, RCK_HEADER);
    assert_true(str_eq_lit(vh->routes[0].cluster_header, "x-cluster"));
    assert_int_equal(vh->routes[0].cluster_not_found_status, 503);
    const struct route_cfg *w = &vh->routes[1];
    assert_int_equal(w->cluster_kind, RCK_WEIGHTED);
    assert_int_equal(w->n_weighted, 2);
    assert_int_equal(w->total_weight, 100);
    assert_ptr_equal(w->weighted[0].cluster, &c->clusters[0]);
    assert_int_equal(w->weighted[0].weight, 90);
    assert_int_equal(w->weighted[0].cum_weight, 90);
    assert_ptr_equal(w->weighted[1].cluster, &c->clusters[1]);
    assert_int_equal(w->weighted[1].cum_weight, 100);
    assert_int_equal(w->weighted[1].request_edits.n_add, 1);
    assert_true(str_eq_lit(w->weighted[1].request_edits.add[0].name, "x-canary"));
    assert_int_equal(w->weighted[1].response_edits.n_add, 1);
    config_unref(c);

    c = load_example("ring_hash.yaml");
    const struct cluster_cfg *ring = &c->clusters[0], *mag = &c->clusters[1];
    assert_int_equal(ring->lb, LB_RING_HASH);
    assert_int_equal(ring->hash_lb_size, 1024);
    assert_int_equal(ring->hash_lb_max_size, 65536);
    assert_non_null(ring->hash_lb);
    assert_int_equal(ring->hash_lb[0]->size, 1026); /* 3 x ceil(1024 / 3) */
    assert_int_equal(mag->lb, LB_MAGLEV);
    assert_int_equal(mag->hash_lb[0]->size, 65537);
    vh = &c->listeners[0].chains[0].hcm->routes->vhosts[0];
    assert_int_equal(vh->routes[0].n_hash_policies, 3);
    assert_int_equal(vh->routes[0].hash_policies[0].kind, HP_HEADER);
    assert_true(str_eq_lit(vh->routes[0].hash_policies[0].name, "x-user-id"));
    assert_true(vh->routes[0].hash_policies[0].terminal);
    assert_int_equal(vh->routes[0].hash_policies[1].kind, HP_COOKIE);
    assert_int_equal(vh->routes[0].hash_policies[2].kind, HP_SOURCE_IP);
    assert_int_equal(vh->routes[1].n_hash_policies, 1);
    assert_int_equal(vh->routes[1].hash_policies[0].kind, HP_QUERY);
    config_unref(c);
}

static void test_build_routing_features(void **state)
{
    (void)state;
    struct config *c = must_load(
        "@MATCH@",
        "\"safe_regex\": {\"google_re2\": {}, \"regex\": \"/api/v[0-9]+/.*\"},"
        " \"headers\": [{\"name\": \"x-n\", \"range_match\": {\"start\": -5, \"end\": 10}},"
        " {\"name\": \"x-v\", \"safe_regex_match\": {\"regex\": \"v[0-9]\"}},"
        " {\"name\": \"x-s\", \"string_match\": {\"safe_regex\": {\"regex\": \"a+\"}},"
        " \"invert_match\": true}],"
        " \"query_parameters\": [{\"name\": \"q\", \"string_match\": {\"prefix\": \"x\","
        " \"ignore_case\": true}}, {\"name\": \"p\", \"present_match\": false},"
        " {\"name\": \"r\"}]");
    const struct route_cfg *r = route0(c);
    assert_int_equal(r->match_kind, RM_REGEX);
    assert_non_null(r->path_regex);
    assert_int_equal(r->n_headers, 3);
    assert_int_equal(r->headers[0].kind, HM_RANGE);
    assert_int_equal(r->headers[0].range_start, -5);
    assert_int_equal(r->headers[0].range_end, 10);
    assert_int_equal(r->headers[1].kind, HM_REGEX);
    assert_non_null(r->headers[1].regex);
    assert_int_equal(r->headers[2].kind, HM_REGEX);
    assert_true(r->headers[2].invert);
    assert_int_equal(r->n_query, 3);
    assert_true(str_eq_lit(r->query[0].name, "q"));
    assert_int_equal(r->query[0].kind, HM_PREFIX);
    assert_true(r->query[0].ignore_case);
    assert_int_equal(r->query[1].kind, HM_PRESENT);
    assert_false(r->query[1].present_value);
    assert_int_equal(r->query[2].kind, HM_PRESENT); /* no specifier: present */
    assert_true(r->query[2].present_value);
    config_unref(c);

    c = must_load("@RA@", ", \"regex_rewrite\": {\"pattern\": {\"regex\": \"^/v1/(.*)$\"}, "
                          "\"substitution\": \"/v2/\\\\1\"}, \"hash_policy\": [{\"header\": "
                          "{\"header_name\": \"X-User\"}, \"terminal\": true}, "
                          "{\"connection_properties\": {\"source_ip\": false}}, "
                          "{\"query_parameter\": {\"name\": \"id\"}}, {\"cookie\": {\"name\": "
                          "\"s\"}}], \"cluster_not_found_response_code\": \"NOT_FOUND\"");
    r = route0(c);
    assert_non_null(r->regex_rewrite);
    assert_true(str_eq_lit(r->regex_substitution, "/v2/\\1"));
    /* source_ip false adds no policy, as in Envoy */
    assert_int_equal(r->n_hash_policies, 3);
    assert_int_equal(r->hash_policies[0].kind, HP_HEADER);
    assert_true(str_eq_lit(r->hash_policies[0].name, "x-user"));
    assert_true(r->hash_policies[0].terminal);
    assert_int_equal(r->hash_policies[1].kind, HP_QUERY);
    assert_int_equal(r->hash_policies[2].kind, HP_COOKIE);
    assert_int_equal(r->cluster_kind, RCK_CLUSTER);
    assert_int_equal(r->cluster_not_found_status, 404);
    config_unref(c);

    c = must_load("@ACTION@",
                  "\"route\": {\"weighted_clusters\": {\"total_weight\": 10, \"clusters\": ["
                  "{\"name\": \"backend\", \"weight\": 7}, {\"name\": \"other\", \"weight\": 0},"
                  " {\"name\": \"other\", \"weight\": 3, \"request_headers_to_remove\": "
                  "[\"x-drop\"], \"response_headers_to_add\": [{\"header\": {\"key\": \"x-w\","
                  " \"value\": \"1\"}}]}]}}");
    r = route0(c);
    assert_int_equal(r->cluster_kind, RCK_WEIGHTED);
    assert_int_equal(r->n_weighted, 3);
    assert_int_equal(r->total_weight, 10);
    assert_int_equal(r->weighted[1].weight, 0);
    assert_int_equal(r->weighted[1].cum_weight, 7);
    assert_int_equal(r->weighted[2].cum_weight, 10);
    assert_ptr_equal(r->weighted[2].cluster, &c->clusters[1]);
    assert_int_equal(r->weighted[2].request_edits.n_remove, 1);
    assert_int_equal(r->weighted[2].response_edits.n_add, 1);
    config_unref(c);

    c = must_load("@ACTION@", "\"route\": {\"cluster_header\": \"X-Target\"}");
    r = route0(c);
    assert_int_equal(r->cluster_kind, RCK_HEADER);
    assert_true(str_eq_lit(r->cluster_header, "x-target"));
    assert_ptr_equal(r->clusters, c->cluster_map);
    assert_int_equal(r->cluster_not_found_status, 503);
    config_unref(c);

    /* load balancers */
    c = must_load("@CLUSTER@", ", \"lb_policy\": \"RING_HASH\"");
    const struct cluster_cfg *cc = &c->clusters[0];
    assert_int_equal(cc->lb, LB_RING_HASH);
    assert_int_equal(cc->hash_lb_size, 1024);
    assert_int_equal(cc->hash_lb_max_size, 8 * 1024 * 1024);
    /* weights 1 and 3: the light endpoint gets 256 points, the heavy one 768 */
    assert_int_equal(cc->hash_lb[0]->size, 1024);
    assert_int_equal(cc->hash_lb[0]->min_per_ep, 256);
    assert_null(c->clusters[1].hash_lb); /* round robin: no table */
    config_unref(c);
    c = must_load("@CLUSTER@", ", \"lb_policy\": \"RING_HASH\", \"ring_hash_lb_config\": "
                               "{\"minimum_ring_size\": 4096, \"maximum_ring_size\": 4096}");
    assert_int_equal(c->clusters[0].hash_lb[0]->size, 4096);
    config_unref(c);
    c = must_load("@CLUSTER@", ", \"lb_policy\": \"MAGLEV\"");
    assert_int_equal(c->clusters[0].lb, LB_MAGLEV);
    assert_int_equal(c->clusters[0].hash_lb[0]->size, 65537);
    config_unref(c);
    c = must_load("@CLUSTER@",
                  ", \"lb_policy\": \"MAGLEV\", \"maglev_lb_config\": {\"table_size\": 251}");
    assert_int_equal(c->clusters[0].hash_lb[0]->size, 251);
    config_unref(c);
    c = must_load("@CLUSTER@", ", \"lb_policy\": \"LEAST_REQUEST\", \"least_request_lb_config\":"
                               " {\"active_request_bias\": {\"default_value\": 0.5, "
                               "\"runtime_key\": \"lb.bias\"}}");
    assert_true(c->clusters[0].lr_active_request_bias == 0.5);
    config_unref(c);
    c = must_load(NULL, NULL);
    assert_true(c->clusters[0].lr_active_request_bias == 1.0); /* Envoy's default */
    config_unref(c);
}

static void test_build_routing_errors(void **state)
{
    (void)state;
#define HM(frag) "\"prefix\": \"/\", \"headers\": [{\"name\": \"x\", " frag "}]"
#define WC(frag) "\"route\": {\"weighted_clusters\": {" frag "}}"
    static const struct {
        const char *marker;
        const char *frag;
        const char *want;
    } cases[] = {
        {"@MATCH@", "\"safe_regex\": {\"regex\": \"/a(b\"}",
         R0 ".match.safe_regex.regex: invalid regex: missing closing parenthesis at offset 4"},
        {"@MATCH@", "\"safe_regex\": {\"regex\": \"\"}",
         R0 ".match.safe_regex.regex: must not be empty"},
        {"@MATCH@",
         HM("\"string_match\": {\"safe_regex\": {\"regex\": \"a\"}, \"ignore_case\": true}"),
         R0 ".match.headers[0].string_match.ignore_case: has no effect for safe_regex"},
        {"@MATCH@", HM("\"safe_regex_match\": {\"regex\": \"[\"}"),
         R0 ".match.headers[0].safe_regex_match.regex: invalid regex: missing terminating ] for "
            "character class at offset 1"},
        {"@MATCH@", "\"prefix\": \"/\", \"query_parameters\": [{\"present_match\": true}]",
         R0 ".match.query_parameters[0].name: required"},
        {"@ACTION@", WC("\"clusters\": []"),
         R0 ".route.weighted_clusters.clusters: at least one cluster is required"},
        {"@ACTION@",
         WC("\"clusters\": [{\"name\": \"backend\", \"weight\": 90}, {\"name\": \"nope\", "
            "\"weight\": 10}]"),
         R0 ".route.weighted_clusters.clusters[1].name: unknown cluster 'nope'"},
        {"@ACTION@", WC("\"clusters\": [{\"weight\": 90}]"),
         R0 ".route.weighted_clusters.clusters[0].name: required"},
        {"@ACTION@",
         WC("\"total_weight\": 100, \"clusters\": [{\"name\": \"backend\", \"weight\": 90}]"),
         R0 ".route.weighted_clusters.total_weight: the cluster weights add up to 90, not 100"},
        {"@ACTION@",
         WC("\"clusters\": [{\"name\": \"backend\", \"weight\": 0}, {\"name\": \"other\"}]"),
         R0 ".route.weighted_clusters.clusters: the weights add up to 0: at least one must be "
            "positive"},
        {"@ACTION@",
         WC("\"clusters\": [{\"name\": \"backend\", \"weight\": 4294967295}, {\"name\": "
            "\"other\", \"weight\": 1}]"),
         R0 ".route.weighted_clusters.clusters: the weights add up to more than 4294967295"},
        {"@ACTION@",
         WC("\"clusters\": [{\"name\": \"backend\", \"weight\": 1, \"request_headers_to_add\": "
            "[{\"header\": {\"key\": \":path\", \"value\": \"/\"}}]}]"),
         R0 ".route.weighted_clusters.clusters[0].request_headers_to_add[0].header.key: ':path': "
            "pseudo-headers and host may not be modified"},
        {"@ACTION@", "\"route\": {\"cluster_header\": \"bad header\"}",
         R0 ".route.cluster_header: invalid header name 'bad header'"},
        {"@RA@",
         ", \"prefix_rewrite\": \"/x\", \"regex_rewrite\": {\"pattern\": {\"regex\": \"a\"}, "
         "\"substitution\": \"b\"}",
         R0 ".route: only one of prefix_rewrite, regex_rewrite may be set"},
        {"@RA@",
         ", \"regex_rewrite\": {\"pattern\": {\"regex\": \"(a)\"}, \"substitution\": "
         "\"\\\\2\"}",
         R0 ".route.regex_rewrite.substitution: '\\2' refers to a group the pattern does not "
            "have (it has 1)"},
        {"@RA@", ", \"regex_rewrite\": {\"substitution\": \"x\"}",
         R0 ".route.regex_rewrite.pattern: required"},
        {"@RA@", ", \"hash_policy\": [{\"header\": {}}]",
         R0 ".route.hash_policy[0].header.header_name: required"},
        {"@RA@", ", \"hash_policy\": [{\"terminal\": true}]",
         R0 ".route.hash_policy[0]: one of header, cookie, connection_properties, "
            "query_parameter is required"},
        {"@CLUSTER@", ", \"lb_policy\": \"MAGLEV\", \"maglev_lb_config\": {\"table_size\": 65536}",
         C0 ".maglev_lb_config.table_size: 65536 is not a prime number"},
        {"@CLUSTER@",
         ", \"lb_policy\": \"MAGLEV\", \"maglev_lb_config\": {\"table_size\": 5000012}",
         C0 ".maglev_lb_config.table_size: 5000012 is over the limit of 5000011"},
        {"@CLUSTER@", ", \"maglev_lb_config\": {}",
         C0 ".maglev_lb_config: requires lb_policy MAGLEV"},
        {"@CLUSTER@", ", \"lb_policy\": \"MAGLEV\", \"ring_hash_lb_config\": {}",
         C0 ".ring_hash_lb_config: requires lb_policy RING_HASH"},
        {"@CLUSTER@",
         ", \"lb_policy\": \"RING_HASH\", \"ring_hash_lb_config\": {\"minimum_ring_size\": 2048, "
         "\"maximum_ring_size\": 1024}",
         C0 ".ring_hash_lb_config: minimum_ring_size (2048) must not be greater than "
            "maximum_ring_size (1024)"},
        {"@CLUSTER@",
         ", \"lb_policy\": \"RING_HASH\", \"ring_hash_lb_config\": {\"maximum_ring_size\": "
         "8388609}",
         C0 ".ring_hash_lb_config.maximum_ring_size: 8388609 is over the limit of 8388608"},
        {"@CLUSTER@",
         ", \"lb_policy\": \"LEAST_REQUEST\", \"least_request_lb_config\": "
         "{\"active_request_bias\": {\"default_value\": -1}}",
         C0 ".least_request_lb_config.active_request_bias.default_value: must be within 0-100"},
    };
#undef HM
#undef WC
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        expect_error(cases[i].marker, cases[i].frag, cases[i].want);
    }
}

/* ---- retries, timeouts and circuit breakers (issue 4) ---- */

static void test_build_retries_timeouts_breakers(void **state)
{
    (void)state;
    struct config *c = load_example("retries.yaml");
    const struct vhost_cfg *vh = &c->listeners[0].chains[0].hcm->routes->vhosts[0];
    const struct retry_policy *vp = vh->retry;
    assert_non_null(vp);
    assert_int_equal(vp->retry_on, RETRY_ON_5XX | RETRY_ON_RESET | RETRY_ON_CONNECT_FAILURE);
    assert_int_equal(vp->num_retries, 2);
    assert_int_equal(vp->per_try_timeout_ms, 2000);
    assert_true(vp->previous_hosts);
    assert_int_equal(vp->host_selection_max_attempts, 3);
    assert_int_equal(vp->backoff_base_ms, 25);
    assert_int_equal(vp->backoff_max_ms, 250);
    assert_true(vh->include_request_attempt_count);
    assert_false(vh->include_attempt_count_in_response);
    assert_int_equal(vh->per_request_buffer_limit, UINT32_MAX);
    const struct route_cfg *orders = &vh->routes[0];
    const struct retry_policy *rp = orders->retry;
    assert_int_equal(rp->retry_on, RETRY_ON_GATEWAY_ERROR | RETRY_ON_RETRIABLE_STATUS_CODES);
    assert_int_equal(rp->n_retriable_status_codes, 1);
    assert_int_equal(rp->retriable_status_codes[0], 409);
    assert_int_equal(rp->num_retries, 3);
    assert_int_equal(rp->per_try_idle_timeout_ms, 1000);
    assert_int_equal(rp->backoff_base_ms, 50);
    assert_int_equal(rp->backoff_max_ms, 1000);
    assert_false(rp->previous_hosts);
    assert_int_equal(orders->per_request_buffer_limit, 65536);
    assert_true(orders->has_idle_timeout);
    assert_int_equal(orders->idle_timeout_ms, 5000);
    assert_null(vh->routes[1].retry);
    assert_false(vh->routes[1].has_idle_timeout);
    const struct cluster_cfg *cc = &c->clusters[0];
    const struct breaker_cfg *b = &cc->breakers[0];
    assert_int_equal(b->max_connections, 512);
    assert_int_equal(b->max_pending_requests, 256);
    assert_int_equal(b->max_requests, 1024);
    assert_int_equal(b->max_retries, 3);
    assert_true(b->has_budget);
    assert_true(b->budget_percent > 19.99 && b->budget_percent < 20.01);
    assert_int_equal(b->min_retry_concurrency, 3);
    assert_true(b->track_remaining);
    assert_int_equal(cc->breakers[1].max_connections, 1024);
    assert_false(cc->breakers[1].has_budget);
    assert_int_equal(cc->pool_idle_timeout_ms, 30000);
    assert_int_equal(cc->max_connection_duration_ms, 600000);
    config_unref(c);

    /* defaults: no policy anywhere, Envoy's breaker limits, a one-hour pool idle timeout */
    c = must_load(NULL, NULL);
    assert_null(route0(c)->retry);
    assert_null(c->listeners[0].chains[0].hcm->routes->vhosts[0].retry);
    assert_int_equal(c->clusters[0].breakers[0].max_connections, 1024);
    assert_int_equal(c->clusters[0].breakers[0].max_pending_requests, 1024);
    assert_int_equal(c->clusters[0].breakers[0].max_requests, 1024);
    assert_int_equal(c->clusters[0].breakers[0].max_retries, 3);
    assert_false(c->clusters[0].breakers[0].has_budget);
    assert_int_equal(c->clusters[0].pool_idle_timeout_ms, 3600000);
    assert_int_equal(c->clusters[0].max_connection_duration_ms, 0);
    config_unref(c);

    /* a policy with nothing set: num_retries 1, 25 ms back-off, no condition */
    c = must_load("@RA@", ", \"retry_policy\": {}");
    assert_int_equal(route0(c)->retry->retry_on, 0);
    assert_int_equal(route0(c)->retry->num_retries, 1);
    assert_int_equal(route0(c)->retry->host_selection_max_attempts, 1);
    config_unref(c);
    /* a retry budget with nothing set: 20% and 3; HIGH thresholds kept apart */
    c = must_load("@CLUSTER@",
                  ", \"circuit_breakers\": {\"thresholds\": [{\"priority\": \"HIGH\", "
                  "\"max_requests\": 5}, {\"retry_budget\": {}, \"max_connections\": 2}]}");
    assert_int_equal(c->clusters[0].breakers[1].max_requests, 5);
    assert_int_equal(c->clusters[0].breakers[0].max_requests, 1024);
    assert_int_equal(c->clusters[0].breakers[0].max_connections, 2);
    assert_true(c->clusters[0].breakers[0].has_budget);
    assert_int_equal(c->clusters[0].breakers[0].min_retry_concurrency, 3);
    config_unref(c);
    /* the deprecated cluster-level common_http_protocol_options */
    c = must_load("@CLUSTER@", ", \"common_http_protocol_options\": {\"idle_timeout\": \"0s\"}");
    assert_int_equal(c->clusters[0].pool_idle_timeout_ms, 0);
    config_unref(c);

    static const struct {
        const char *marker;
        const char *frag;
        const char *want;
    } errors[] = {
        {"@RA@", ", \"retry_policy\": {\"retry_on\": \"5xx,bogus\"}",
         R0 ".route.retry_policy.retry_on: unknown retry condition 'bogus'"},
        {"@RA@", ", \"retry_policy\": {\"retriable_status_codes\": [99]}",
         R0 ".route.retry_policy.retriable_status_codes: 99 is not an HTTP status (100-599)"},
        {"@RA@", ", \"retry_policy\": {\"retry_back_off\": {\"max_interval\": \"1s\"}}",
         R0 ".route.retry_policy.retry_back_off.base_interval: required"},
        {"@RA@", ", \"retry_policy\": {\"retry_back_off\": {\"base_interval\": \"0s\"}}",
         R0 ".route.retry_policy.retry_back_off.base_interval: must be greater than 0"},
        {"@RA@",
         ", \"retry_policy\": {\"retry_back_off\": {\"base_interval\": \"2s\", "
         "\"max_interval\": \"1s\"}}",
         R0 ".route.retry_policy.retry_back_off.max_interval: must be at least base_interval"},
        {"@RA@", ", \"retry_policy\": {\"per_try_timeout\": \"-1s\"}",
         R0 ".route.retry_policy.per_try_timeout: must not be negative"},
        {"@RA@", ", \"retry_policy\": {\"host_selection_retry_max_attempts\": -2}",
         R0 ".route.retry_policy.host_selection_retry_max_attempts: must not be negative"},
        {"@CLUSTER@",
         ", \"circuit_breakers\": {\"thresholds\": [{\"retry_budget\": {\"budget_percent\": "
         "{\"value\": 120}}}]}",
         C0 ".circuit_breakers.thresholds[0].retry_budget.budget_percent: must be within 0-100"},
        {"@CLUSTER@", ", \"circuit_breakers\": {\"thresholds\": [{\"max_connection_pools\": 3}]}",
         C0 ".circuit_breakers.thresholds[0].max_connection_pools: " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.tcp.v3."
         "TcpProtocolOptions\": {\"@type\": \"type.googleapis.com/google.protobuf.Struct\", "
         "\"value\": {}}}",
         C0 ".typed_extension_protocol_options[\"envoy.extensions.upstreams.tcp.v3."
            "TcpProtocolOptions\"]: protocol options 'envoy.extensions.upstreams.tcp.v3."
            "TcpProtocolOptions' are " UNSUPPORTED},
        {"@CLUSTER@", ", \"common_http_protocol_options\": {\"max_headers_count\": 10}",
         C0 ".common_http_protocol_options.max_headers_count: " UNSUPPORTED},
        {"@CLUSTER@",
         ", \"common_http_protocol_options\": {}, \"typed_extension_protocol_options\": "
         "{\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\": {\"@type\": "
         "\"type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"}}",
         C0 ".common_http_protocol_options: cannot be set together with "
            "typed_extension_protocol_options"},
    };
    for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++) {
        expect_error(errors[i].marker, errors[i].frag, errors[i].want);
    }
}

/* The DNS settings: the names and defaults recorded for re-resolution (proxy/dns_refresh.h),
 * on a bootstrap cluster too; respect_dns_ttl refused; dns_lookup_family as Envoy's (AUTO: IPv6
 * first); LOGICAL_DNS: one host with its movable address, Envoy's one-endpoint rule. */
static void test_build_strict_dns_settings(void **state)
{
    (void)state;
    struct config *c = must_load(
        "@CLUSTERS@",
        ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", \"dns_lookup_family\": \"ALL\", "
        "\"load_assignment\": {\"cluster_name\": \"dns\", \"endpoints\": [{\"lb_endpoints\": "
        "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"localhost\", "
        "\"port_value\": 9000}}}}, {\"endpoint\": {\"address\": {\"socket_address\": "
        "{\"address\": \"localhost\", \"port_value\": 9001}}}}, {\"endpoint\": {\"address\": "
        "{\"socket_address\": {\"address\": \"127.0.0.9\", \"port_value\": 9000}}}}]}]}}");
    const struct cluster_cfg *cc = &c->clusters[2];
    assert_int_equal(cc->n_dns_hosts, 2); /* distinct names */
    assert_true(str_eq_lit(cc->dns_hosts[0], "localhost"));
    assert_true(str_eq_lit(cc->dns_hosts[1], "127.0.0.9"));
    assert_int_equal(cc->dns_family, RESOLVER_ALL);
    assert_int_equal(cc->dns_refresh_ms, 5000); /* Envoy's default */
    assert_int_equal(cc->dns_fail_base_ms, 0);
    config_unref(c);
    c = must_load("@CLUSTERS@", ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", "
                                "\"dns_refresh_rate\": \"1s\", \"dns_lookup_family\": \"AUTO\"}");
    assert_int_equal(c->clusters[2].dns_refresh_ms, 1000);
    assert_int_equal(c->clusters[2].dns_family, RESOLVER_V6_PREFERRED);
    config_unref(c);
    c = must_load("@CLUSTERS@", ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", "
                                "\"dns_lookup_family\": \"V4_PREFERRED\"}");
    assert_int_equal(c->clusters[2].dns_family, RESOLVER_V4_PREFERRED);
    config_unref(c);
    /* LOGICAL_DNS: the first address, one host whose address can move */
    c = must_load("@CLUSTERS@",
                  ", {\"name\": \"lg\", \"type\": \"LOGICAL_DNS\", \"dns_lookup_family\": "
                  "\"V4_ONLY\", \"dns_refresh_rate\": \"2s\", \"load_assignment\": "
                  "{\"cluster_name\": \"lg\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": "
                  "{\"address\": {\"socket_address\": {\"address\": \"localhost\", "
                  "\"port_value\": 9000}}}}]}]}}");
    cc = &c->clusters[2];
    assert_int_equal(cc->type, CLUSTER_LOGICAL_DNS);
    assert_int_equal(cc->n_endpoints, 1);
    assert_int_equal(cc->dns_refresh_ms, 2000);
    assert_non_null(cc->endpoints[0].logical);
    assert_true(str_eq_lit(cc->endpoints[0].addr.text, "127.0.0.1:9000"));
    struct sock_addr tmp;
    const struct sock_addr *a = endpoint_connect_addr(&cc->endpoints[0], &tmp);
    assert_true(str_eq_lit(a->text, "127.0.0.1:9000"));
    assert_true(logical_addr_set(cc->endpoints[0].logical, "2001:db8::5", 9000));
    assert_false(logical_addr_set(cc->endpoints[0].logical, "not-an-ip", 9000));
    a = endpoint_connect_addr(&cc->endpoints[0], &tmp);
    assert_int_equal(a->ss.ss_family, AF_INET6);
    assert_true(str_eq_lit(a->text, "[2001:db8::5]:9000"));
    assert_ptr_equal(endpoint_connect_addr(&c->clusters[0].endpoints[0], &tmp),
                     &c->clusters[0].endpoints[0].addr); /* other types: as configured */
    config_unref(c);
    expect_error("@CLUSTERS@",
                 ", {\"name\": \"lg\", \"type\": \"LOGICAL_DNS\", \"load_assignment\": "
                 "{\"cluster_name\": \"lg\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": "
                 "{\"address\": {\"socket_address\": {\"address\": \"localhost\", "
                 "\"port_value\": 9000}}}}]}, {\"lb_endpoints\": []}]}}",
                 "static_resources.clusters[2].load_assignment.endpoints: LOGICAL_DNS clusters "
                 "must have a single locality_lb_endpoint and a single lb_endpoint (got 2 "
                 "locality_lb_endpoints)");
    expect_error("@CLUSTERS@",
                 ", {\"name\": \"dns\", \"type\": \"STRICT_DNS\", \"respect_dns_ttl\": true}",
                 "static_resources.clusters[2].respect_dns_ttl: not supported by remora yet");
    /* other types ignore the rates, as Envoy does */
    c = must_load("@CLUSTERS@",
                  ", {\"name\": \"st\", \"type\": \"STATIC\", \"dns_refresh_rate\": \"1s\"}");
    config_unref(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_build_template_compiles_with_defaults),
        cmocka_unit_test(test_build_access_log_filter),
        cmocka_unit_test(test_build_example_basic_yaml),
        cmocka_unit_test(test_build_explicit_values),
        cmocka_unit_test(test_build_routes_compile),
        cmocka_unit_test(test_build_domain_forms),
        cmocka_unit_test(test_build_path_normalization),
        cmocka_unit_test(test_build_path_normalization_unknown_action_from_xds),
        cmocka_unit_test(test_build_rejects_unsupported_fields),
        cmocka_unit_test(test_build_h2_connection_keepalive),
        cmocka_unit_test(test_build_semantic_errors),
        cmocka_unit_test(test_build_decode_errors_keep_their_path),
        cmocka_unit_test(test_build_rejects_unknown_binary_fields),
        cmocka_unit_test(test_build_strict_dns_resolves_at_build_time),
        cmocka_unit_test(test_build_refcount_frees_on_last_unref),
        cmocka_unit_test(test_build_config_dump_shape),
        cmocka_unit_test(test_build_tcp_proxy_cds_cluster_by_name),
        cmocka_unit_test(test_build_example_weighted_and_ring_hash_yaml),
        cmocka_unit_test(test_build_example_sidecar_capture_yaml),
        cmocka_unit_test(test_build_example_tls_yaml),
        cmocka_unit_test(test_build_example_tls_sds),
        cmocka_unit_test(test_build_tls_inspector),
        cmocka_unit_test(test_build_routing_features),
        cmocka_unit_test(test_build_routing_errors),
        cmocka_unit_test(test_build_retries_timeouts_breakers),
        cmocka_unit_test(test_build_strict_dns_settings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
