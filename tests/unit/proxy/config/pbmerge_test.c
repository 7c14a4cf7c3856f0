/* Unit tests for proxy/config/pbmerge: protobuf MergeFrom semantics on protobuf-c messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbmerge.h"
#include "proxy/config/pbtypes.h"

#define CLUSTER_DESC envoy__config__cluster__v3__cluster__descriptor
#define BOOTSTRAP_DESC envoy__config__bootstrap__v3__bootstrap__descriptor

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *desc, const char *text)
{
    struct err e;
    err_clear(&e);
    json_t *j = pbjson_load_text(text, strlen(text), &e);
    assert_non_null(j);
    ProtobufCMessage *m = pbjson_decode(desc, j, pbtypes_find, "", &e);
    json_decref(j);
    if (m == NULL) {
        fail_msg("%s", e.msg);
    }
    return m;
}

/* Merges b into a and returns the result as compact JSON text (caller frees). */
static char *merged_json(const ProtobufCMessageDescriptor *desc, const char *a, const char *b)
{
    ProtobufCMessage *ma = decode(desc, a);
    ProtobufCMessage *mb = decode(desc, b);
    ProtobufCMessage *m = pbmerge(ma, mb);
    assert_non_null(m);
    json_t *j = pbjson_encode(m, pbtypes_find);
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    protobuf_c_message_free_unpacked(ma, NULL);
    protobuf_c_message_free_unpacked(mb, NULL);
    protobuf_c_message_free_unpacked(m, NULL);
    return s;
}

static void expect_merge(const ProtobufCMessageDescriptor *desc, const char *a, const char *b,
                         const char *want)
{
    char *got = merged_json(desc, a, b);
    char *w = merged_json(desc, want, "{}");
    assert_string_equal(got, w);
    free(got);
    free(w);
}

static void test_scalars_of_the_override_win(void **state)
{
    (void)state;
    expect_merge(&CLUSTER_DESC, "{name: a, lb_policy: RANDOM, connect_timeout: 2s}", "{name: b}",
                 "{name: b, lb_policy: RANDOM, connect_timeout: 2s}");
    /* A default value in the override sets nothing (proto3 has no presence for scalars). */
    expect_merge(&CLUSTER_DESC, "{name: a, lb_policy: RANDOM}", "{lb_policy: ROUND_ROBIN}",
                 "{name: a, lb_policy: RANDOM}");
}

static void test_messages_merge_and_lists_append(void **state)
{
    (void)state;
    expect_merge(&BOOTSTRAP_DESC,
                 "{node: {id: x, cluster: c}, static_resources: {clusters: "
                 "[{name: a}]}}",
                 "{node: {id: y}, static_resources: {clusters: [{name: b}]}}",
                 "{node: {id: y, cluster: c}, static_resources: {clusters: [{name: a}, "
                 "{name: b}]}}");
    /* Wrappers are messages: the override's value replaces the file's. */
    expect_merge(&CLUSTER_DESC, "{name: a, per_connection_buffer_limit_bytes: 10}",
                 "{per_connection_buffer_limit_bytes: 20}",
                 "{name: a, per_connection_buffer_limit_bytes: 20}");
}

static void test_oneof_takes_the_override_member(void **state)
{
    (void)state;
    /* cluster_discovery_type: `type` and `cluster_type` are one oneof. */
    expect_merge(&CLUSTER_DESC, "{name: a, type: STRICT_DNS}", "{type: STATIC}",
                 "{name: a, type: STATIC}");
}

static void test_map_keys_of_the_override_replace(void **state)
{
    (void)state;
    /* Struct is map<string, Value>: a key in both takes the override's entry whole. */
    expect_merge(&BOOTSTRAP_DESC, "{node: {metadata: {k1: 1, k2: {a: 1, b: 2}}}}",
                 "{node: {metadata: {k2: {c: 3}, k3: [4]}}}",
                 "{node: {metadata: {k1: 1, k2: {c: 3}, k3: [4]}}}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars_of_the_override_win),
        cmocka_unit_test(test_messages_merge_and_lists_append),
        cmocka_unit_test(test_oneof_takes_the_override_member),
        cmocka_unit_test(test_map_keys_of_the_override_replace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
