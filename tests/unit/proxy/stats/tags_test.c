/* Unit tests for proxy/stats/tags.c: Envoy's tag extraction with the default extractors,
 * custom regex ones and fixed tags, and the errors of a bad stats_config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/stats/tags.h"

#define S(lit) ((struct str){lit, sizeof(lit) - 1})

/* "name|tag=value|tag=value" of `full` */
static void produce(const struct tag_producer *tp, const char *full, char *out, size_t cap)
{
    struct stat_tags t;
    tags_produce(tp, full, &t);
    size_t n = (size_t)snprintf(out, cap, "%s", t.name);
    for (uint32_t i = 0; i < t.n && n < cap; i++) {
        n += (size_t)snprintf(out + n, cap - n, "|%s=%s", t.v[i].name, t.v[i].value);
    }
    stat_tags_free(&t);
}

#define EXPECT(tp, full, want)                                                                     \
    do {                                                                                           \
        char got_[512];                                                                            \
        produce(tp, full, got_, sizeof(got_));                                                     \
        assert_string_equal(got_, want);                                                           \
    } while (0)

static void test_tags_defaults(void **state)
{
    (void)state;
    struct err err;
    struct tag_producer *tp = tag_producer_new(NULL, 0, true, &err);
    assert_non_null(tp);
    EXPECT(tp, "cluster.foo.upstream_rq_200",
           "cluster.upstream_rq|envoy.cluster_name=foo|envoy.response_code=200");
    EXPECT(tp, "cluster.foo.upstream_rq_2xx",
           "cluster.upstream_rq_xx|envoy.cluster_name=foo|envoy.response_code_class=2");
    EXPECT(tp, "cluster.foo.upstream_rq_total", "cluster.upstream_rq_total|envoy.cluster_name=foo");
    EXPECT(tp, "http.ingress.downstream_rq_5xx",
           "http.downstream_rq_xx|envoy.http_conn_manager_prefix=ingress|"
           "envoy.response_code_class=5");
    EXPECT(tp, "listener.127.0.0.1_10000.downstream_cx_total",
           "listener.downstream_cx_total|envoy.listener_address=127.0.0.1_10000");
    EXPECT(tp, "listener.[__1]_10000.downstream_cx_active",
           "listener.downstream_cx_active|envoy.listener_address=[__1]_10000");
    EXPECT(tp, "http.ingress.rds.routes.config_reload",
           "http.rds.config_reload|envoy.http_conn_manager_prefix=ingress|"
           "envoy.rds_route_config=routes");
    EXPECT(tp, "tcp.db.downstream_cx_total", "tcp.downstream_cx_total|envoy.tcp_prefix=db");
    EXPECT(
        tp, "cluster.foo.ssl.ciphers.TLS_AES_128_GCM_SHA256",
        "cluster.ssl.ciphers|envoy.cluster_name=foo|envoy.ssl_cipher_suite=TLS_AES_128_GCM_SHA256");
    EXPECT(tp, "server.live", "server.live");
    tag_producer_free(tp);

    /* use_all_default_tags: false: nothing extracted */
    tp = tag_producer_new(NULL, 0, false, &err);
    EXPECT(tp, "cluster.foo.upstream_rq_200", "cluster.foo.upstream_rq_200");
    tag_producer_free(tp);
}

static void test_tags_custom(void **state)
{
    (void)state;
    struct err err;
    struct stats_tag_cfg cfg[] = {
        {.name = S("appmesh.mesh"), .is_fixed = true, .fixed_value = S("shop")},
        {.name = S("appmesh.virtual_node"), .is_fixed = true, .fixed_value = S("front")},
        /* group 1 removed, group 2 the value */
        {.name = S("route"), .regex = S("^cluster\\.[^.]+\\.(route_(\\w+)\\.)")},
        /* one group: removed and the value */
        {.name = S("kind"), .regex = S("\\.(upstream)_")},
        /* a default's name without a value: the default regex */
        {.name = S("envoy.cluster_name")},
    };
    struct tag_producer *tp = tag_producer_new(cfg, 5, false, &err);
    if (tp == NULL) {
        fail_msg("%s", err.msg);
    }
    /* fixed first, then the extractors in order; removals applied together */
    EXPECT(tp, "cluster.c1.route_r1.upstream_rq_200",
           "cluster._rq_200|appmesh.mesh=shop|appmesh.virtual_node=front|route=r1|kind=upstream|"
           "envoy.cluster_name=c1");
    EXPECT(tp, "server.live", "server.live|appmesh.mesh=shop|appmesh.virtual_node=front");
    tag_producer_free(tp);

    /* with the defaults: a custom one of the same name replaces the default */
    struct stats_tag_cfg cn[] = {
        {.name = S("envoy.cluster_name"), .regex = S("^cluster\\.(([^_]+)_)")},
    };
    tp = tag_producer_new(cn, 1, true, &err);
    EXPECT(tp, "cluster.a_b.upstream_rq_200",
           "cluster.b.upstream_rq|envoy.cluster_name=a|envoy.response_code=200");
    tag_producer_free(tp);
}

static void test_tags_errors(void **state)
{
    (void)state;
    struct err err;
    struct stats_tag_cfg bad_re[] = {{.name = S("x"), .regex = S("(unclosed")}};
    assert_null(tag_producer_new(bad_re, 1, true, &err));
    assert_non_null(strstr(err.msg, "stats_config.stats_tags[0].regex: invalid regex"));
    struct stats_tag_cfg no_group[] = {{.name = S("x"), .regex = S("abc")}};
    assert_null(tag_producer_new(no_group, 1, true, &err));
    assert_string_equal(err.msg, "stats_config.stats_tags[0].regex: needs a capture group (the "
                                 "part removed from the name)");
    struct stats_tag_cfg twice[] = {
        {.name = S("a"), .is_fixed = true, .fixed_value = S("1")},
        {.name = S("a"), .is_fixed = true, .fixed_value = S("2")},
    };
    assert_null(tag_producer_new(twice, 2, true, &err));
    assert_string_equal(err.msg, "stats_config.stats_tags[1].tag_name: 'a' specified twice");
    struct stats_tag_cfg nothing[] = {{.name = S("mine")}};
    assert_null(tag_producer_new(nothing, 1, true, &err));
    assert_string_equal(err.msg, "stats_config.stats_tags[0]: 'mine' needs a regex or a "
                                 "fixed_value (it is not one of the default tags)");
    struct stats_tag_cfg unnamed[] = {{.name = S(""), .is_fixed = true}};
    assert_null(tag_producer_new(unnamed, 1, true, &err));
    assert_string_equal(err.msg, "stats_config.stats_tags[0].tag_name: required");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tags_defaults),
        cmocka_unit_test(test_tags_custom),
        cmocka_unit_test(test_tags_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
