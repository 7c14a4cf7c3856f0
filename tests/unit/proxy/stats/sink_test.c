/* Unit tests for proxy/stats/sink.c: statsd lines, datagram packing at the size limit, and a
 * flush's counter deltas, used-only rule and tags (without sockets). */
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
#include "proxy/stats/sink.h"

#define MAX_DGRAMS 16

struct sent {
    char *d[MAX_DGRAMS];
    uint32_t sink[MAX_DGRAMS];
    size_t n;
};

static void sent_reset(struct sent *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->d[i]);
    }
    s->n = 0;
}

static void capture(void *arg, const char *p, size_t n)
{
    struct sent *s = arg;
    assert_true(s->n < MAX_DGRAMS);
    s->d[s->n] = strndup(p, n);
    s->n++;
}

static void capture_sink(void *arg, uint32_t sink, const char *p, size_t n)
{
    struct sent *s = arg;
    s->sink[s->n] = sink;
    capture(arg, p, n);
}

static void test_sink_line(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    statsd_line(&b, "envoy", "cluster.foo.upstream_rq_total", 42, 'c', NULL);
    buf_append(&b, "", 1);
    assert_string_equal((const char *)buf_head(&b), "envoy.cluster.foo.upstream_rq_total:42|c");
    buf_consume(&b, buf_len(&b));
    /* a name cannot break the line or the format */
    statsd_line(&b, "p", "cluster.a:b|c\nd.x", 1, 'g', "|#envoy.cluster_name:a");
    buf_append(&b, "", 1);
    assert_string_equal((const char *)buf_head(&b),
                        "p.cluster.a_b_c_d.x:1|g|#envoy.cluster_name:a");
    buf_deinit(&b);
}

static void test_sink_packing(void **state)
{
    (void)state;
    struct sent s = {0};
    struct dgram_packer pk;
    packer_init(&pk, 20, capture, &s);
    packer_add(&pk, "aaaaa", 5);
    packer_add(&pk, "bbbbb", 5);
    packer_add(&pk, "ccccc", 5); /* 17 bytes so far */
    assert_int_equal(s.n, 0);
    packer_add(&pk, "dd", 2); /* exactly 20: full, sent */
    assert_int_equal(s.n, 1);
    assert_string_equal(s.d[0], "aaaaa\nbbbbb\nccccc\ndd");
    packer_add(&pk, "eeeeeeeeee", 10);
    packer_add(&pk, "ffffffffff", 10); /* 10 + 1 + 10 > 20: the first goes alone */
    assert_int_equal(s.n, 2);
    assert_string_equal(s.d[1], "eeeeeeeeee");
    packer_add(&pk, "gggggggggggggggggggggggggggg", 28); /* longer than the limit: alone */
    assert_int_equal(s.n, 4);
    assert_string_equal(s.d[2], "ffffffffff");
    assert_string_equal(s.d[3], "gggggggggggggggggggggggggggg");
    packer_add(&pk, "h", 1);
    packer_flush(&pk);
    packer_flush(&pk); /* nothing left: nothing sent */
    assert_int_equal(s.n, 5);
    assert_string_equal(s.d[4], "h");
    for (size_t i = 0; i < s.n; i++) {
        assert_true(strlen(s.d[i]) <= 20 || strchr(s.d[i], '\n') == NULL);
    }
    packer_deinit(&pk);
    sent_reset(&s);

    /* 0: one line per datagram (Envoy's default) */
    packer_init(&pk, 0, capture, &s);
    packer_add(&pk, "a", 1);
    packer_add(&pk, "b", 1);
    packer_flush(&pk);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.d[0], "a");
    assert_string_equal(s.d[1], "b");
    packer_deinit(&pk);
    sent_reset(&s);
}

static const char *const BOOT =
    "stats_sinks:\n"
    "- name: envoy.stat_sinks.dog_statsd\n"
    "  typed_config:\n"
    "    \"@type\": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink\n"
    "    address: {socket_address: {address: 127.0.0.1, port_value: 8125}}\n"
    "    max_bytes_per_datagram: 1400\n"
    "- name: envoy.stat_sinks.statsd\n"
    "  typed_config:\n"
    "    \"@type\": type.googleapis.com/envoy.config.metrics.v3.StatsdSink\n"
    "    address: {socket_address: {address: \"::1\", port_value: 8125}}\n"
    "    prefix: pre\n"
    "stats_config:\n"
    "  stats_tags: [{tag_name: appmesh.mesh, fixed_value: shop}]\n";

static void flush(struct sink_state *st, const char *const *names, const enum stat_kind *kinds,
                  const uint64_t *values, size_t n)
{
    sink_state_begin(st);
    for (size_t i = 0; i < n; i++) {
        sink_state_stat(st, names[i], kinds[i], values[i]);
    }
    sink_state_end(st);
}

static void test_sink_flush_deltas(void **state)
{
    (void)state;
    struct err err;
    struct config *c = config_load_text(BOOT, strlen(BOOT), &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    struct sent s = {0};
    struct sink_state *st = sink_state_new(c, capture_sink, &s, &err);
    assert_non_null(st);
    const char *names[] = {"cluster.foo.upstream_rq_200", "cluster.foo.upstream_rq_timeout",
                           "server.live"};
    const enum stat_kind kinds[] = {STAT_KIND_COUNTER, STAT_KIND_COUNTER, STAT_KIND_GAUGE};

    /* first flush: a counter's whole value; the unused counter is not sent */
    uint64_t v1[] = {5, 0, 1};
    flush(st, names, kinds, v1, 3);
    assert_int_equal(s.n, 3); /* DogStatsD packed into one; statsd one per line */
    assert_int_equal(s.sink[0], 1);
    assert_string_equal(s.d[0], "pre.cluster.foo.upstream_rq_200:5|c");
    assert_int_equal(s.sink[1], 1);
    assert_string_equal(s.d[1], "pre.server.live:1|g");
    assert_int_equal(s.sink[2], 0);
    assert_string_equal(s.d[2], "envoy.cluster.upstream_rq:5|c|#appmesh.mesh:shop,"
                                "envoy.cluster_name:foo,envoy.response_code:200\n"
                                "envoy.server.live:1|g|#appmesh.mesh:shop");
    sent_reset(&s);

    /* the delta since the last flush */
    uint64_t v2[] = {8, 0, 1};
    flush(st, names, kinds, v2, 3);
    assert_string_equal(s.d[0], "pre.cluster.foo.upstream_rq_200:3|c");
    sent_reset(&s);

    /* unchanged: 0, still sent (a used counter, as Envoy); the timeout counter counts now */
    uint64_t v3[] = {8, 2, 0};
    flush(st, names, kinds, v3, 3);
    assert_int_equal(s.n, 4);
    assert_string_equal(s.d[0], "pre.cluster.foo.upstream_rq_200:0|c");
    assert_string_equal(s.d[1], "pre.cluster.foo.upstream_rq_timeout:2|c");
    assert_string_equal(s.d[2], "pre.server.live:0|g"); /* a used gauge stays sent */
    sent_reset(&s);

    /* a counter below its last value (its cluster made again) counts from 0 */
    uint64_t v4[] = {3, 2, 0};
    flush(st, names, kinds, v4, 3);
    assert_string_equal(s.d[0], "pre.cluster.foo.upstream_rq_200:3|c");
    sent_reset(&s);

    /* a stat that went away leaves the cache: back later, it counts from 0 */
    flush(st, names + 1, kinds + 1, v4 + 1, 2);
    sent_reset(&s);
    uint64_t v5[] = {4, 2, 0};
    flush(st, names, kinds, v5, 3);
    assert_string_equal(s.d[0], "pre.cluster.foo.upstream_rq_200:4|c");
    sent_reset(&s);

    sink_state_free(st);
    config_unref(c);
}

/* A stat without tags: a DogStatsD line without "|#". */
static void test_sink_no_tags(void **state)
{
    (void)state;
    static const char *const boot =
        "stats_sinks:\n"
        "- name: envoy.stat_sinks.dog_statsd\n"
        "  typed_config:\n"
        "    \"@type\": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink\n"
        "    address: {socket_address: {address: 127.0.0.1, port_value: 8125}}\n";
    struct err err;
    struct config *c = config_load_text(boot, strlen(boot), &err);
    assert_non_null(c);
    assert_int_equal(c->stats_sinks[0].max_bytes_per_datagram, 0);
    struct sent s = {0};
    struct sink_state *st = sink_state_new(c, capture_sink, &s, &err);
    const char *names[] = {"cluster.foo.upstream_cx_total", "server.live"};
    const enum stat_kind kinds[] = {STAT_KIND_COUNTER, STAT_KIND_GAUGE};
    uint64_t v[] = {1, 1};
    flush(st, names, kinds, v, 2);
    assert_int_equal(s.n, 2); /* Envoy's default: one line per datagram */
    assert_string_equal(s.d[0], "envoy.cluster.upstream_cx_total:1|c|#envoy.cluster_name:foo");
    assert_string_equal(s.d[1], "envoy.server.live:1|g");
    sent_reset(&s);
    sink_state_free(st);
    config_unref(c);
}

static void bad_config(const char *extra, const char *want)
{
    char text[2048];
    snprintf(text, sizeof(text), "%s", extra);
    struct err err;
    struct config *c = config_load_text(text, strlen(text), &err);
    if (c != NULL) {
        config_unref(c);
        fail_msg("loaded, but expected: %s", want);
    }
    assert_string_equal(err.msg, want);
}

#define DOG "\"@type\": type.googleapis.com/envoy.config.metrics.v3.DogStatsdSink"
#define SD "\"@type\": type.googleapis.com/envoy.config.metrics.v3.StatsdSink"

static void test_sink_config_errors(void **state)
{
    (void)state;
    bad_config("stats_sinks: [{name: s, typed_config: {" SD ", tcp_cluster_name: c}}]",
               "stats_sinks[0].typed_config.tcp_cluster_name: not supported by remora (statsd "
               "over TCP); use address (UDP)");
    bad_config("stats_sinks: [{name: s, typed_config: {" SD
               ", address: {socket_address: {address: statsd.local, port_value: 8125}}}}]",
               "stats_sinks[0].typed_config.address.socket_address.address: 'statsd.local' is "
               "not an IP address");
    bad_config("stats_sinks: [{name: s, typed_config: {" DOG "}}]",
               "stats_sinks[0].typed_config.address: required");
    bad_config("stats_sinks: [{name: s, typed_config: {" DOG
               ", address: {socket_address: {address: 127.0.0.1, port_value: 8125}}, "
               "max_bytes_per_datagram: 0}}]",
               "stats_sinks[0].typed_config.max_bytes_per_datagram: 0 is not a datagram size "
               "(1-65507)");
    bad_config("stats_sinks: [{name: envoy.stat_sinks.hystrix}]",
               "stats_sinks[0].typed_config: required");
    bad_config("stats_flush_interval: 300s", "stats_flush_interval: must be less than 300s");
    bad_config("stats_flush_interval: 0s", "stats_flush_interval: must be greater than 0");
    bad_config("stats_config: {stats_tags: [{tag_name: x, regex: '('}]}",
               "stats_config.stats_tags[0].regex: invalid regex at offset 1: missing closing "
               "parenthesis");
    bad_config("stats_config: {stats_matcher: {reject_all: true}}",
               "stats_config.stats_matcher: unknown field");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sink_line),          cmocka_unit_test(test_sink_packing),
        cmocka_unit_test(test_sink_flush_deltas),  cmocka_unit_test(test_sink_no_tags),
        cmocka_unit_test(test_sink_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
