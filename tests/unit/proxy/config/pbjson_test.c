/* Unit tests for proxy/config/pbjson: the proto3 JSON/YAML <-> protobuf-c mapper. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/struct.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"

#define CLUSTER_DESC envoy__config__cluster__v3__cluster__descriptor
#define BOOTSTRAP_DESC envoy__config__bootstrap__v3__bootstrap__descriptor
#define HCM_URL                                                                                    \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

/* Loads `text` (JSON or YAML) and decodes it as `desc`; NULL with the error in `e`. */
static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const char *text,
                                struct err *e)
{
    err_clear(e);
    json_t *j = pbjson_load_text(text, strlen(text), e);
    if (j == NULL) {
        return NULL;
    }
    ProtobufCMessage *m = pbjson_decode(desc, j, pbtypes_find, "", e);
    json_decref(j);
    return m;
}

/* Decodes and expects failure with exactly `want` as the error. */
static void expect_error(const ProtobufCMessageDescriptor *desc, const char *text, const char *want)
{
    struct err e;
    ProtobufCMessage *m = decode(desc, text, &e);
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    assert_null(m);
    assert_string_equal(e.msg, want);
}

static Envoy__Config__Cluster__V3__Cluster *cluster(const char *text)
{
    struct err e;
    ProtobufCMessage *m = decode(&CLUSTER_DESC, text, &e);
    if (m == NULL) {
        fail_msg("decode failed: %s", e.msg);
    }
    return (Envoy__Config__Cluster__V3__Cluster *)m;
}

static void free_msg(void *m)
{
    protobuf_c_message_free_unpacked(m, NULL);
}

static void test_pbjson_snake_and_camel_names(void **state)
{
    (void)state;
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"name\": \"a\", \"connectTimeout\": \"2s\", \"lb_policy\": \"RANDOM\","
                " \"perConnectionBufferLimitBytes\": 100, \"dns_lookup_family\": \"V4_ONLY\"}");
    assert_string_equal(c->name, "a");
    assert_non_null(c->connect_timeout);
    assert_int_equal(c->connect_timeout->seconds, 2);
    assert_int_equal(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM);
    assert_non_null(c->per_connection_buffer_limit_bytes);
    assert_int_equal(c->per_connection_buffer_limit_bytes->value, 100);
    assert_int_equal(c->dns_lookup_family,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY);
    free_msg(c);
}

static void test_pbjson_same_field_under_both_names(void **state)
{
    (void)state;
    expect_error(&CLUSTER_DESC, "{\"lb_policy\": \"RANDOM\", \"lbPolicy\": \"ROUND_ROBIN\"}",
                 "lbPolicy: field 'lb_policy' is set twice");
}

static void test_pbjson_enums(void **state)
{
    (void)state;
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"lb_policy\": 1, \"type\": \"STRICT_DNS\"}");
    assert_int_equal(c->lb_policy, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST);
    assert_int_equal(c->cluster_discovery_type_case,
                     ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_TYPE);
    assert_int_equal(c->type, ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS);
    free_msg(c);
    expect_error(&CLUSTER_DESC, "{\"lb_policy\": \"ROUND_ROBINN\"}",
                 "lb_policy: unknown value \"ROUND_ROBINN\" for "
                 "envoy.config.cluster.v3.Cluster.LbPolicy (expected one of ROUND_ROBIN, "
                 "LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, "
                 "LOAD_BALANCING_POLICY_CONFIG)");
    expect_error(&CLUSTER_DESC, "{\"lb_policy\": 4}",
                 "lb_policy: unknown value 4 for envoy.config.cluster.v3.Cluster.LbPolicy "
                 "(expected one of ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, "
                 "CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG)");
    expect_error(&CLUSTER_DESC, "{\"lb_policy\": true}",
                 "lb_policy: expected an enum name (envoy.config.cluster.v3.Cluster.LbPolicy), "
                 "got true");
}

static void test_pbjson_durations(void **state)
{
    (void)state;
    static const struct {
        const char *json;
        int64_t seconds;
        int32_t nanos;
    } good[] = {
        {"\"1.5s\"", 1, 500000000},     {"\"300s\"", 300, 0},
        {"\"0.000000001s\"", 0, 1},     {"\"-0.25s\"", 0, -250000000},
        {"\"-2.5s\"", -2, -500000000},  {"{\"seconds\": 7, \"nanos\": 3}", 7, 3},
        {"{\"seconds\": \"8\"}", 8, 0},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "{\"connect_timeout\": %s}", good[i].json);
        Envoy__Config__Cluster__V3__Cluster *c = cluster(text);
        assert_non_null(c->connect_timeout);
        assert_int_equal(c->connect_timeout->seconds, good[i].seconds);
        assert_int_equal(c->connect_timeout->nanos, good[i].nanos);
        free_msg(c);
    }
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": \"5x\"}",
                 "connect_timeout: invalid duration \"5x\" (expected e.g. \"1.5s\")");
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": \"1.5\"}",
                 "connect_timeout: invalid duration \"1.5\" (expected e.g. \"1.5s\")");
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": \"1.0000000001s\"}",
                 "connect_timeout: invalid duration \"1.0000000001s\" (expected e.g. \"1.5s\")");
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": \"s\"}",
                 "connect_timeout: invalid duration \"s\" (expected e.g. \"1.5s\")");
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": 5}",
                 "connect_timeout: invalid duration 5 (expected e.g. \"1.5s\")");
    expect_error(&CLUSTER_DESC, "{\"connect_timeout\": \"315576000001s\"}",
                 "connect_timeout: invalid duration \"315576000001s\" (expected e.g. \"1.5s\")");
}

static void test_pbjson_wrappers_are_bare_values(void **state)
{
    (void)state;
    /* A wrapper set to 0 is still present: that is the point of wrappers. */
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"per_connection_buffer_limit_bytes\": 0, \"max_requests_per_connection\": "
                "\"12\"}");
    assert_non_null(c->per_connection_buffer_limit_bytes);
    assert_int_equal(c->per_connection_buffer_limit_bytes->value, 0);
    assert_non_null(c->max_requests_per_connection);
    assert_int_equal(c->max_requests_per_connection->value, 12);
    free_msg(c);

    struct err e;
    Envoy__Config__Route__V3__RouteMatch *m =
        (void *)decode(&envoy__config__route__v3__route_match__descriptor,
                       "{\"prefix\": \"/\", \"case_sensitive\": false}", &e);
    assert_non_null(m);
    assert_non_null(m->case_sensitive);
    assert_false(m->case_sensitive->value);
    free_msg(m);

    expect_error(&CLUSTER_DESC, "{\"per_connection_buffer_limit_bytes\": {\"value\": 3}}",
                 "per_connection_buffer_limit_bytes: expected an integer (uint32), got an object");
}

static void test_pbjson_integer_ranges_and_strings(void **state)
{
    (void)state;
    expect_error(&CLUSTER_DESC, "{\"per_connection_buffer_limit_bytes\": 4294967296}",
                 "per_connection_buffer_limit_bytes: value 4294967296 out of range for uint32");
    expect_error(&CLUSTER_DESC, "{\"per_connection_buffer_limit_bytes\": -1}",
                 "per_connection_buffer_limit_bytes: value -1 out of range for uint32");
    expect_error(&CLUSTER_DESC, "{\"per_connection_buffer_limit_bytes\": 1.5}",
                 "per_connection_buffer_limit_bytes: expected an integer (uint32), got 1.5");
    expect_error(&CLUSTER_DESC, "{\"per_connection_buffer_limit_bytes\": \"12abc\"}",
                 "per_connection_buffer_limit_bytes: expected an integer (uint32), got "
                 "\"12abc\"");
    /* int64 as a string, beyond what a JSON double holds exactly. */
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"connect_timeout\": {\"seconds\": \"9007199254740993\"}}");
    assert_int_equal(c->connect_timeout->seconds, 9007199254740993LL);
    free_msg(c);
    expect_error(&CLUSTER_DESC, "{\"name\": 5}", "name: expected a string, got 5");
    expect_error(&CLUSTER_DESC, "{\"name\": \"a\\u0000b\"}",
                 "name: string contains a NUL character");
}

static void test_pbjson_any_with_type(void **state)
{
    (void)state;
    struct err e;
    Envoy__Config__Listener__V3__Filter *f =
        (void *)decode(&envoy__config__listener__v3__filter__descriptor,
                       "{\"name\": \"hcm\", \"typed_config\": {\"@type\": \"" HCM_URL "\", "
                       "\"statPrefix\": \"in\", \"codec_type\": \"HTTP1\"}}",
                       &e);
    assert_non_null(f);
    assert_int_equal(f->config_type_case,
                     ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG);
    assert_string_equal(f->typed_config->type_url, HCM_URL);

    ProtobufCMessage *inner = NULL;
    assert_int_equal(pbjson_any_unpack(f->typed_config, pbtypes_find, "typed_config", &inner, &e),
                     0);
    const Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager *h =
        (const void *)inner;
    assert_ptr_equal(
        inner->descriptor,
        &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor);
    assert_string_equal(h->stat_prefix, "in");
    assert_int_equal(
        h->codec_type,
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1);
    free_msg(inner);
    free_msg(f);

    /* A well-known type inside an Any carries its JSON form under "value". */
    Google__Protobuf__Any *any = (void *)decode(
        &google__protobuf__any__descriptor,
        "{\"@type\": \"type.googleapis.com/google.protobuf.Duration\", \"value\": \"3s\"}", &e);
    assert_non_null(any);
    assert_int_equal(pbjson_any_unpack(any, pbtypes_find, "", &inner, &e), 0);
    assert_int_equal(((Google__Protobuf__Duration *)inner)->seconds, 3);
    free_msg(inner);
    free_msg(any);
}

static void test_pbjson_any_errors(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *fd = &envoy__config__listener__v3__filter__descriptor;
    expect_error(fd, "{\"typed_config\": {\"stat_prefix\": \"x\"}}",
                 "typed_config: missing \"@type\"");
    expect_error(fd, "{\"typed_config\": {\"@type\": \"type.googleapis.com/foo.Bar\"}}",
                 "typed_config.@type: unknown type \"type.googleapis.com/foo.Bar\"");
    expect_error(fd, "{\"typed_config\": {\"@type\": \"NoSlash\"}}",
                 "typed_config.@type: invalid type URL \"NoSlash\" (expected "
                 "\"type.googleapis.com/<message>\")");
    expect_error(fd, "{\"typed_config\": {\"@type\": \"" HCM_URL "\", \"stat_prefx\": \"x\"}}",
                 "typed_config.stat_prefx: unknown field");

    /* Without a registry, every Any is unknown. */
    struct err e;
    json_t *j = json_loads("{\"typed_config\": {\"@type\": \"" HCM_URL "\"}}", 0, NULL);
    assert_null(pbjson_decode(fd, j, NULL, "", &e));
    assert_string_equal(e.msg, "typed_config.@type: unknown type \"" HCM_URL "\"");
    json_decref(j);
}

static void test_pbjson_oneof_conflict(void **state)
{
    (void)state;
    const ProtobufCMessageDescriptor *md = &envoy__config__route__v3__route_match__descriptor;
    expect_error(md, "{\"prefix\": \"/\", \"path\": \"/a\"}",
                 "path: conflicts with 'prefix': only one of them may be set (oneof)");
    expect_error(&CLUSTER_DESC, "{\"type\": \"STATIC\", \"cluster_type\": {\"name\": \"x\"}}",
                 "cluster_type: conflicts with 'type': only one of them may be set (oneof)");
    /* null is "not set", so it does not take the oneof. */
    struct err e;
    Envoy__Config__Route__V3__RouteMatch *m =
        (void *)decode(md, "{\"prefix\": null, \"path\": \"/a\"}", &e);
    assert_non_null(m);
    assert_int_equal(m->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH);
    assert_string_equal(m->path, "/a");
    free_msg(m);
}

static void test_pbjson_empty_string_in_oneof_is_set(void **state)
{
    (void)state;
    struct err e;
    const ProtobufCMessageDescriptor *md = &envoy__config__route__v3__route_match__descriptor;
    Envoy__Config__Route__V3__RouteMatch *m = (void *)decode(md, "{\"prefix\": \"\"}", &e);
    assert_non_null(m);
    assert_int_equal(m->path_specifier_case,
                     ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX);
    json_t *j = pbjson_encode(&m->base, pbtypes_find);
    json_t *want = json_loads("{\"prefix\": \"\"}", 0, NULL);
    assert_true(json_equal(j, want));
    json_decref(want);
    json_decref(j);
    free_msg(m);
}

static const char boot_yaml[] = "static_resources:\n"
                                "  clusters:\n"
                                "  - name: a\n"
                                "    connect_timeout: 0.25s\n"
                                "  - name: b\n"
                                "    lb_polcy: ROUND_ROBIN\n";

static void test_pbjson_unknown_field_path_at_depth(void **state)
{
    (void)state;
    expect_error(&BOOTSTRAP_DESC, boot_yaml,
                 "static_resources.clusters[1].lb_polcy: unknown field");
    expect_error(&BOOTSTRAP_DESC,
                 "{\"static_resources\": {\"listeners\": [{\"name\": \"l\", \"filter_chains\": "
                 "[{\"filters\": [{\"typed_config\": {\"@type\": \"" HCM_URL "\", "
                 "\"route_config\": {\"virtual_hosts\": [{\"routes\": [{}, {\"match\": "
                 "{\"prefx\": \"/\"}}]}]}}}]}]}]}}",
                 "static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
                 "route_config.virtual_hosts[0].routes[1].match.prefx: unknown field");
}

static void test_pbjson_yaml_and_json_give_the_same_message(void **state)
{
    (void)state;
    static const char yaml[] =
        "node: {id: n1, cluster: c1, metadata: {app: web, replicas: 3, tags: [a, b], on: true}}\n"
        "static_resources:\n"
        "  clusters:\n"
        "  - name: \"backend\"\n"
        "    connectTimeout: 1.5s\n"
        "    type: STRICT_DNS\n"
        "    per_connection_buffer_limit_bytes: 32768\n"
        "    load_assignment:\n"
        "      cluster_name: backend\n"
        "      endpoints:\n"
        "      - lb_endpoints:\n"
        "        - endpoint: {address: {socket_address: {address: 0.0.0.0, port_value: 80}}}\n"
        "          load_balancing_weight: 2\n";
    static const char json[] =
        "{\"node\": {\"id\": \"n1\", \"cluster\": \"c1\", \"metadata\": {\"app\": \"web\", "
        "\"replicas\": 3, \"tags\": [\"a\", \"b\"], \"on\": true}},"
        " \"static_resources\": {\"clusters\": [{\"name\": \"backend\", \"connect_timeout\": "
        "\"1.5s\", \"type\": \"STRICT_DNS\", \"perConnectionBufferLimitBytes\": 32768,"
        " \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": [{\"lb_endpoints\":"
        " [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"0.0.0.0\","
        " \"port_value\": 80}}}, \"load_balancing_weight\": 2}]}]}}]}}";
    struct err e;
    ProtobufCMessage *a = decode(&BOOTSTRAP_DESC, yaml, &e);
    assert_non_null(a);
    ProtobufCMessage *b = decode(&BOOTSTRAP_DESC, json, &e);
    assert_non_null(b);
    size_t la = protobuf_c_message_get_packed_size(a);
    size_t lb = protobuf_c_message_get_packed_size(b);
    assert_int_equal(la, lb);
    uint8_t *pa = malloc(la), *pb = malloc(lb);
    protobuf_c_message_pack(a, pa);
    protobuf_c_message_pack(b, pb);
    assert_memory_equal(pa, pb, la);
    const Envoy__Config__Bootstrap__V3__Bootstrap *boot = (const void *)a;
    assert_string_equal(boot->static_resources->clusters[0]
                            ->load_assignment->endpoints[0]
                            ->lb_endpoints[0]
                            ->endpoint->address->socket_address->address,
                        "0.0.0.0");
    free(pa);
    free(pb);
    free_msg(a);
    free_msg(b);
}

static void test_pbjson_encode_round_trip(void **state)
{
    (void)state;
    static const char json[] =
        "{\"node\": {\"id\": \"n1\", \"metadata\": {\"app\": \"web\", \"n\": 3.0, \"l\": [true,"
        " null, {\"x\": \"y\"}]}},"
        " \"static_resources\": {\"clusters\": [{\"name\": \"backend\", \"type\": \"STATIC\","
        " \"connect_timeout\": \"0.010s\", \"lb_policy\": \"LEAST_REQUEST\","
        " \"per_connection_buffer_limit_bytes\": 0,"
        " \"least_request_lb_config\": {\"choice_count\": 3},"
        " \"typed_extension_protocol_options\": {\"k\": {\"@type\":"
        " \"type.googleapis.com/google.protobuf.UInt32Value\", \"value\": 7}}}],"
        " \"listeners\": [{\"name\": \"l\", \"filter_chains\": [{\"filters\": [{\"name\":"
        " \"hcm\", \"typed_config\": {\"@type\": \"" HCM_URL "\", \"stat_prefix\": \"in\","
        " \"stream_idle_timeout\": \"-1.000000500s\", \"route_config\": {\"virtual_hosts\":"
        " [{\"name\": \"v\", \"routes\": [{\"match\": {\"prefix\": \"\"}, \"direct_response\":"
        " {\"status\": 200, \"body\": {\"inline_bytes\": \"aGk=\"}}}]}]}}}]}]}]}}";
    struct err e;
    json_t *in = json_loads(json, 0, NULL);
    assert_non_null(in);
    ProtobufCMessage *m = pbjson_decode(&BOOTSTRAP_DESC, in, pbtypes_find, "", &e);
    assert_non_null(m);
    json_t *out = pbjson_encode(m, pbtypes_find);
    if (!json_equal(in, out)) {
        char *s = json_dumps(out, JSON_SORT_KEYS);
        fail_msg("round trip differs: %s", s);
    }
    /* And the re-encoded JSON decodes to the same bytes. */
    ProtobufCMessage *m2 = pbjson_decode(&BOOTSTRAP_DESC, out, pbtypes_find, "", &e);
    assert_non_null(m2);
    size_t l1 = protobuf_c_message_get_packed_size(m);
    size_t l2 = protobuf_c_message_get_packed_size(m2);
    assert_int_equal(l1, l2);
    uint8_t *p1 = malloc(l1), *p2 = malloc(l2);
    protobuf_c_message_pack(m, p1);
    protobuf_c_message_pack(m2, p2);
    assert_memory_equal(p1, p2, l1);
    free(p1);
    free(p2);
    free_msg(m2);
    free_msg(m);
    json_decref(out);
    json_decref(in);
}

static void test_pbjson_encode_uses_proto3_forms(void **state)
{
    (void)state;
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"name\": \"x\", \"connectTimeout\": {\"seconds\": 2, \"nanos\": 500000},"
                " \"lb_policy\": \"ROUND_ROBIN\", \"dns_refresh_rate\": \"-0.5s\"}");
    json_t *j = pbjson_encode(&c->base, pbtypes_find);
    /* snake_case names, Duration as text, default enum (ROUND_ROBIN = 0) left out. */
    json_t *want = json_loads("{\"name\": \"x\", \"connect_timeout\": \"2.000500s\","
                              " \"dns_refresh_rate\": \"-0.500s\"}",
                              0, NULL);
    assert_true(json_equal(j, want));
    json_decref(want);
    json_decref(j);
    free_msg(c);
}

static void test_pbjson_null_means_unset(void **state)
{
    (void)state;
    Envoy__Config__Cluster__V3__Cluster *c =
        cluster("{\"name\": \"x\", \"connect_timeout\": null, \"load_assignment\": null}");
    assert_null(c->connect_timeout);
    assert_null(c->load_assignment);
    free_msg(c);
    expect_error(&CLUSTER_DESC, "{\"health_checks\": [null]}",
                 "health_checks[0]: null is not allowed in a list");
}

static void test_pbjson_maps_and_bytes(void **state)
{
    (void)state;
    struct err e;
    Envoy__Config__Core__V3__DataSource *ds =
        (void *)decode(&envoy__config__core__v3__data_source__descriptor,
                       "{\"inline_bytes\": \"aGVsbG8_\"}", &e); /* URL-safe alphabet */
    assert_non_null(ds);
    assert_int_equal(ds->inline_bytes.len, 6);
    assert_memory_equal(ds->inline_bytes.data, "hello?", 6);
    free_msg(ds);
    expect_error(&envoy__config__core__v3__data_source__descriptor, "{\"inline_bytes\": \"a\"}",
                 "inline_bytes: invalid base64 \"a\"");

    Envoy__Config__Route__V3__VirtualHost *vh =
        (void *)decode(&envoy__config__route__v3__virtual_host__descriptor,
                       "{\"typed_per_filter_config\": {\"f1\": {\"@type\": "
                       "\"type.googleapis.com/google.protobuf.StringValue\", \"value\": \"v\"}}}",
                       &e);
    assert_non_null(vh);
    assert_int_equal(vh->n_typed_per_filter_config, 1);
    assert_string_equal(vh->typed_per_filter_config[0]->key, "f1");
    free_msg(vh);
    expect_error(&envoy__config__route__v3__virtual_host__descriptor,
                 "{\"typed_per_filter_config\": [1]}",
                 "typed_per_filter_config: expected an object (a map), got an array");
}

static void test_pbjson_yaml_scalars(void **state)
{
    (void)state;
    struct err e;
    json_t *j = pbjson_load_yaml("a: true\nb: 'true'\nc: 10000\nd: 0.0.0.0\ne: ~\nf: 1.5\n"
                                 "g: \"10\"\nh:\ni: 18446744073709551616\nj: 1e3\nk: 5s\n",
                                 strlen("a: true\nb: 'true'\nc: 10000\nd: 0.0.0.0\ne: ~\nf: 1.5\n"
                                        "g: \"10\"\nh:\ni: 18446744073709551616\nj: 1e3\nk: 5s\n"),
                                 &e);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "a")));
    assert_string_equal(json_string_value(json_object_get(j, "b")), "true");
    assert_int_equal(json_integer_value(json_object_get(j, "c")), 10000);
    assert_string_equal(json_string_value(json_object_get(j, "d")), "0.0.0.0");
    assert_true(json_is_null(json_object_get(j, "e")));
    assert_true(json_is_real(json_object_get(j, "f")));
    assert_string_equal(json_string_value(json_object_get(j, "g")), "10");
    assert_true(json_is_null(json_object_get(j, "h")));
    assert_string_equal(json_string_value(json_object_get(j, "i")), "18446744073709551616");
    assert_true(json_is_real(json_object_get(j, "j")));
    assert_string_equal(json_string_value(json_object_get(j, "k")), "5s");
    json_decref(j);
}

static void test_pbjson_yaml_errors(void **state)
{
    (void)state;
    static const struct {
        const char *yaml;
        const char *want;
    } cases[] = {
        {"a: 1\na: 2\n", "YAML: line 2 column 1: duplicate key \"a\""},
        {"a: &x 1\nb: *x\n", "YAML: line 2 column 4: YAML aliases (*x) are not supported"},
        {"a: [1, 2\n", "YAML: line 2 column 1: did not find expected ',' or ']' while parsing a "
                       "flow sequence"},
        {"a: 1\n---\nb: 2\n", "YAML: line 2 column 1: more than one YAML document; remora reads "
                              "only one"},
        {"a: !!binary aGk=\n", "YAML: line 1 column 4: YAML tag tag:yaml.org,2002:binary is not "
                               "supported"},
        {"? [a]\n: 1\n", "YAML: line 1 column 3: mapping keys must be scalars"},
        {"", "YAML: empty document"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct err e;
        err_clear(&e);
        json_t *j = pbjson_load_yaml(cases[i].yaml, strlen(cases[i].yaml), &e);
        assert_null(j);
        assert_string_equal(e.msg, cases[i].want);
    }
    /* Quoted "true" is a string, so a bool field refuses it. */
    expect_error(&envoy__config__route__v3__route_match__descriptor,
                 "prefix: /\ncase_sensitive: \"false\"\n",
                 "case_sensitive: expected true or false, got \"false\"");
}

static void test_pbjson_load_text_sniffs_json(void **state)
{
    (void)state;
    struct err e;
    const char *t = "  {\"a\": [1, 2]}";
    json_t *j = pbjson_load_text(t, strlen(t), &e);
    assert_non_null(j);
    assert_int_equal(json_array_size(json_object_get(j, "a")), 2);
    json_decref(j);
    /* YAML flow style is not JSON but still loads. */
    t = "{a: b}";
    j = pbjson_load_text(t, strlen(t), &e);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "a")), "b");
    json_decref(j);
    /* Broken JSON reports the JSON error. */
    t = "{\"a\": 1,, }";
    err_clear(&e);
    assert_null(pbjson_load_text(t, strlen(t), &e));
    assert_true(strncmp(e.msg, "JSON: line 1 column ", 20) == 0);
    t = "{\"a\": 1, \"a\": 2}";
    assert_null(pbjson_load_json(t, strlen(t), &e));
    assert_non_null(strstr(e.msg, "duplicate object key"));
}

/* Appends a field with an unknown number to packed bytes, as a newer control plane would. */
static void test_pbjson_check_unknown_reports_path(void **state)
{
    (void)state;
    struct err e;
    /* A RouteMatch {prefix: "/"} with field 99 (varint 1) appended. */
    static const uint8_t match[] = {0x0a, 0x01, '/', 0x98, 0x06, 0x01};
    /* Route {name: "r", match: <above>} */
    uint8_t route[32];
    size_t n = 0;
    route[n++] = 0x0a; /* match = 1, length-delimited */
    route[n++] = sizeof(match);
    memcpy(route + n, match, sizeof(match));
    n += sizeof(match);
    route[n++] = 0x72; /* name = 14 */
    route[n++] = 1;
    route[n++] = 'r';
    ProtobufCMessage *m =
        protobuf_c_message_unpack(&envoy__config__route__v3__route__descriptor, NULL, n, route);
    assert_non_null(m);
    assert_int_equal(pbjson_check_unknown(m, pbtypes_find, "routes[3]", &e), -EINVAL);
    assert_string_equal(e.msg, "routes[3].match: unknown field 99");
    free_msg(m);

    /* The same walk goes through Any payloads. */
    Envoy__Config__Listener__V3__Filter *f = (void *)decode(
        &envoy__config__listener__v3__filter__descriptor,
        "{\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.config.route.v3.Route\"}}", &e);
    assert_non_null(f);
    free(f->typed_config->value.data);
    f->typed_config->value.data = malloc(n);
    memcpy(f->typed_config->value.data, route, n);
    f->typed_config->value.len = n;
    assert_int_equal(pbjson_check_unknown(&f->base, pbtypes_find, "", &e), -EINVAL);
    assert_string_equal(e.msg, "typed_config.match: unknown field 99");
    free_msg(f);

    Envoy__Config__Route__V3__RouteMatch *ok = (void *)decode(
        &envoy__config__route__v3__route_match__descriptor, "{\"prefix\": \"/\"}", &e);
    assert_int_equal(pbjson_check_unknown(&ok->base, pbtypes_find, "", &e), 0);
    free_msg(ok);
}

static void test_pbjson_nesting_limit(void **state)
{
    (void)state;
    /* Struct values nest: 80 levels of {"a": ...} inside node.metadata. */
    char text[1024] = "{\"node\": {\"metadata\": ";
    for (int i = 0; i < 80; i++) {
        strcat(text, "{\"a\": ");
    }
    strcat(text, "1");
    for (int i = 0; i < 80; i++) {
        strcat(text, "}");
    }
    strcat(text, "}}");
    struct err e;
    ProtobufCMessage *m = decode(&BOOTSTRAP_DESC, text, &e);
    assert_null(m);
    assert_non_null(strstr(e.msg, "nested deeper than 64 levels"));
}

static void test_pbjson_registry_covers_typed_configs(void **state)
{
    (void)state;
    const char *names[] = {
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "envoy.extensions.filters.http.router.v3.Router",
        "envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
        "envoy.config.cluster.v3.Cluster",
        "google.protobuf.Duration",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const ProtobufCMessageDescriptor *d = pbtypes_find(names[i], strlen(names[i]));
        assert_non_null(d);
        assert_string_equal(d->name, names[i]);
    }
    assert_null(pbtypes_find("envoy.config.cluster.v3.Clusterx", 32));
    assert_null(pbtypes_find("envoy.config.cluster.v3", 23));
    assert_true(pbtypes_count() > 50);
    size_t n;
    assert_string_equal(pbjson_type_name("type.googleapis.com/a.B", &n), "a.B");
    assert_int_equal(n, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pbjson_snake_and_camel_names),
        cmocka_unit_test(test_pbjson_same_field_under_both_names),
        cmocka_unit_test(test_pbjson_enums),
        cmocka_unit_test(test_pbjson_durations),
        cmocka_unit_test(test_pbjson_wrappers_are_bare_values),
        cmocka_unit_test(test_pbjson_integer_ranges_and_strings),
        cmocka_unit_test(test_pbjson_any_with_type),
        cmocka_unit_test(test_pbjson_any_errors),
        cmocka_unit_test(test_pbjson_oneof_conflict),
        cmocka_unit_test(test_pbjson_empty_string_in_oneof_is_set),
        cmocka_unit_test(test_pbjson_unknown_field_path_at_depth),
        cmocka_unit_test(test_pbjson_yaml_and_json_give_the_same_message),
        cmocka_unit_test(test_pbjson_encode_round_trip),
        cmocka_unit_test(test_pbjson_encode_uses_proto3_forms),
        cmocka_unit_test(test_pbjson_null_means_unset),
        cmocka_unit_test(test_pbjson_maps_and_bytes),
        cmocka_unit_test(test_pbjson_yaml_scalars),
        cmocka_unit_test(test_pbjson_yaml_errors),
        cmocka_unit_test(test_pbjson_load_text_sniffs_json),
        cmocka_unit_test(test_pbjson_check_unknown_reports_path),
        cmocka_unit_test(test_pbjson_nesting_limit),
        cmocka_unit_test(test_pbjson_registry_covers_typed_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
