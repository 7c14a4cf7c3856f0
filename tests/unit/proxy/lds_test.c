/* lds: Listener resources through lds_update (proxy/lds.h): the bootstrap's builder and field
 * paths, the rejections of its own (names, addresses), same bytes kept, and the example in
 * examples/dynamic_listeners (paths relative to the repository root, the tests' working
 * directory). Sockets bind 127.0.0.1 port 0. */
#include <errno.h>
#include <ev.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/lds.h"
#include "proxy/stats/stats.h"

static const char *BOOT =
    "{\"static_resources\": {\"clusters\": [{\"name\": \"backend\", \"type\": \"STATIC\", "
    "\"connect_timeout\": \"1s\", \"load_assignment\": {\"cluster_name\": \"backend\", "
    "\"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "
    "{\"address\": \"127.0.0.1\", \"port_value\": 8080}}}}]}]}}], \"listeners\": [{\"name\": "
    "\"static\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": "
    "0}}, \"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.tcp_proxy\", "
    "\"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.filters.network."
    "tcp_proxy.v3.TcpProxy\", \"stat_prefix\": \"t\", \"cluster\": \"backend\"}}]}]}]}}";

#define LST(name, extra, cluster)                                                                  \
    "{\"@type\": \"type.googleapis.com/envoy.config.listener.v3.Listener\", \"name\": \"" name     \
    "\", \"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 0}}, "     \
    "\"filter_chains\": [{\"filters\": [{\"name\": \"envoy.filters.network.http_connection_"       \
    "manager\", \"typed_config\": {\"@type\": \"type.googleapis.com/envoy.extensions.filters."     \
    "network.http_connection_manager.v3.HttpConnectionManager\", \"stat_prefix\": \"d\", " extra   \
    "\"http_filters\": [{\"name\": \"envoy.filters.http.router\", \"typed_config\": {\"@type\": "  \
    "\"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\"}}]}}]}]}"
#define ROUTES(cluster)                                                                            \
    "\"route_config\": {\"virtual_hosts\": [{\"name\": \"v\", \"domains\": [\"*\"], \"routes\": "  \
    "[{\"match\": {\"prefix\": \"/\"}, \"route\": {\"cluster\": \"" cluster "\"}}]}]}, "

#define UNSUPPORTED_TEXT "not supported by remora yet"

static char lds_file[64];
static bool last_changed; /* lds_update's *changed in the last update() */

/* lds_update with a DiscoveryResponse given as JSON (through a file: rds_read_file decodes the
 * Any payloads' JSON). */
static int update(struct lds *l, const char *json, struct err *e)
{
    FILE *f = fopen(lds_file, "w");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    Envoy__Service__Discovery__V3__DiscoveryResponse *r = NULL;
    err_clear(e);
    last_changed = false;
    int rv = rds_read_file(lds_file, &r, e);
    if (rv != 0) {
        return rv;
    }
    rv = lds_update(l, r->version_info, r->resources, r->n_resources, NULL, e, &last_changed);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rv;
}

static void test_lds_updates_and_rejections(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct config *base = config_load_text(BOOT, strlen(BOOT), &e);
    if (base == NULL) {
        fail_msg("%s", e.msg);
    }
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct worker *workers[2] = {NULL, NULL};
    struct lds *l = lds_new(loop, base, workers, 2);
    struct lds_stats *st = lds_get_stats(l);
    const char *one =
        "{\"version_info\": \"1\", \"resources\": [" LST("a", ROUTES("backend"), "") "]}";
    assert_int_equal(update(l, one, &e), 1);
    assert_int_equal(stat_get(&st->listener_added), 1);
    assert_int_equal(update(l, one, &e), 0); /* same bytes: nothing changes */
    const struct lds_view *v = NULL;
    assert_int_equal(lds_views(l, &v), 1);
    assert_true(v[0].active);
    /* each bad resource is skipped and the rest applied (here: "a", unchanged) */
#define A ", " LST("a", ROUTES("backend"), "")
    static const struct {
        const char *doc;
        const char *want;
    } bad[] = {
        {"{\"resources\": [" LST("b", ROUTES("nope"), "") A "]}",
         "resources[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0]."
         "routes[0].route.cluster: unknown cluster 'nope'"},
        {"{\"resources\": [" LST("static", ROUTES("backend"), "") A "]}",
         "resources[0].name: 'static' is a static listener (bootstrap): LDS cannot replace it"},
        {"{\"resources\": [" LST("a", ROUTES("backend"), "") A "]}",
         "resources[1].name: duplicate listener name 'a'"},
        {"{\"resources\": [" LST("b",
                                 "\"rds\": {\"route_config_name\": \"r\", \"config_source\": "
                                 "{\"ads\": {}}}, ",
                                 "") A "]}",
         "resources[0].filter_chains[0].filters[0].typed_config.rds.config_source.ads: needs "
         "dynamic_resources.ads_config"},
        {"{\"resources\": [" LST("b",
                                 "\"rds\": {\"route_config_name\": \"r\", \"config_source\": "
                                 "{\"path\": \"/nonexistent/rds.yaml\"}}, ",
                                 "") A "]}",
         "resources[0].filter_chains[0].filters[0].typed_config.rds.config_source: RDS from a "
         "file in a listener from LDS is " UNSUPPORTED_TEXT},
        {"{\"resources\": [{\"@type\": \"type.googleapis.com/envoy.config.cluster.v3.Cluster\"}" A
         "]}",
         "resources[0]: type 'type.googleapis.com/envoy.config.cluster.v3.Cluster' is not "
         "type.googleapis.com/envoy.config.listener.v3.Listener"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(update(l, bad[i].doc, &e), -EINVAL);
        assert_false(last_changed);
        if (strncmp(e.msg, bad[i].want, strlen(bad[i].want)) != 0) {
            fail_msg("case %zu: got '%s', want '%s'", i, e.msg, bad[i].want);
        }
    }
    assert_int_equal(lds_views(l, &v), 1); /* nothing changed */
    assert_int_equal(stat_get(&st->listener_removed), 0);
    /* partial: b (new, valid) is added, c (new, bad) is not, a (bad now) keeps its version */
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", ROUTES("nope"), "") ", " LST(
                                "b", ROUTES("backend"), "") ", " LST("c", ROUTES("nope"), "") "]}",
                            &e),
                     -EINVAL);
    assert_true(last_changed);
    if (strstr(e.msg, "resources[0].filter_chains") == NULL ||
        strstr(e.msg, "; resources[2].filter_chains") == NULL) {
        fail_msg("got '%s'", e.msg);
    }
    assert_int_equal(lds_views(l, &v), 2);
    assert_int_equal(stat_get(&st->listener_added), 2);
    assert_int_equal(stat_get(&st->listener_modified), 0);
    assert_int_equal(stat_get(&st->total_listeners_active), 2);
    /* b alone: a goes */
    assert_int_equal(update(l, "{\"resources\": [" LST("b", ROUTES("backend"), "") "]}", &e), 1);
    assert_int_equal(lds_views(l, &v), 1);
    assert_int_equal(stat_get(&st->listener_removed), 1);
#undef A
    /* removed: a draining version no worker ever held is freed at once */
    assert_int_equal(update(l, "{\"version_info\": \"2\"}", &e), 1);
    assert_int_equal(stat_get(&st->listener_removed), 2);
    assert_int_equal(lds_views(l, &v), 0);
    lds_free(l);
    ev_loop_destroy(loop);
    config_unref(base);
}

/* A bootstrap with an ads_config (cluster "xds"), so listeners may name routes over ADS. */
static const char *BOOT_ADS =
    "{\"node\": {\"id\": \"n\", \"cluster\": \"c\"}, \"dynamic_resources\": {\"ads_config\": "
    "{\"api_type\": \"GRPC\", \"transport_api_version\": \"V3\", \"grpc_services\": "
    "[{\"envoy_grpc\": {\"cluster_name\": \"xds\"}}]}}, \"static_resources\": {\"clusters\": "
    "[{\"name\": \"backend\", \"load_assignment\": {\"cluster_name\": \"backend\", \"endpoints\": "
    "[{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": "
    "\"127.0.0.1\", \"port_value\": 8080}}}}]}]}}, {\"name\": \"xds\", "
    "\"typed_extension_protocol_options\": {\"envoy.extensions.upstreams.http.v3."
    "HttpProtocolOptions\": {\"@type\": \"type.googleapis.com/envoy.extensions.upstreams.http.v3."
    "HttpProtocolOptions\", \"explicit_http_config\": {\"http2_protocol_options\": {}}}}, "
    "\"load_assignment\": {\"cluster_name\": \"xds\", \"endpoints\": [{\"lb_endpoints\": "
    "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "
    "\"port_value\": 18000}}}}]}]}}]}}";
#define RDS_ADS(name, timeout)                                                                     \
    "\"rds\": {\"route_config_name\": \"" name "\", \"config_source\": {\"ads\": {}, "             \
    "\"initial_fetch_timeout\": \"" timeout "\"}}, "

static struct lds_listener *version_named(struct lds *l, const char *name, bool serving)
{
    const struct lds_view *v = NULL;
    uint32_t n = lds_views(l, &v);
    for (struct lds_listener *ll = lds_active_next(l, NULL); ll != NULL;
         ll = lds_active_next(l, ll)) {
        const struct config *c = lds_listener_cfg(ll);
        bool on = false;
        for (uint32_t i = 0; i < n; i++) {
            on = on || (v[i].cfg == c && v[i].active);
        }
        if (strcmp(c->listeners[0].name.p, name) == 0 && on == serving) {
            return ll;
        }
    }
    return NULL;
}

static bool hold; /* wait_hook: something besides routes (reload.c: SDS secrets) not there */
static bool wait_hook(void *ud, const struct config *c, double since, double now, double *next)
{
    (void)ud;
    (void)c;
    (void)since;
    (void)now;
    (void)next;
    return hold;
}

/* Envoy's listener warming: a version whose routes over ADS have not arrived does not serve
 * (an added one is not published; a modified one's predecessor serves) until its routes are
 * answered or its initial_fetch_timeout passes. */
static void test_lds_warming(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct config *base = config_load_text(BOOT_ADS, strlen(BOOT_ADS), &e);
    if (base == NULL) {
        fail_msg("%s", e.msg);
    }
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct worker *workers[2] = {NULL, NULL};
    struct lds *l = lds_new(loop, base, workers, 2);
    struct lds_stats *st = lds_get_stats(l);
    /* a: inline routes (serves at once); b: routes over ADS (warms) */
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", ROUTES("backend"), "") ", " LST(
                                "b", RDS_ADS("rb", "60s"), "") "]}",
                            &e),
                     1);
    assert_int_equal(stat_get(&st->total_listeners_active), 1);
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    assert_non_null(version_named(l, "a", true));
    struct lds_listener *b = version_named(l, "b", false);
    assert_non_null(b);
    lds_warm_check(l); /* nothing arrived: still warming */
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    lds_route_answered(b, 0);
    lds_warm_check(l);
    assert_int_equal(stat_get(&st->total_listeners_warming), 0);
    assert_int_equal(stat_get(&st->total_listeners_active), 2);
    assert_ptr_equal(version_named(l, "b", true), b);

    /* a modified to wait for routes: its old version serves meanwhile; a second modification
     * while it warms replaces the warming one (dropped), the old one still serves */
    struct lds_listener *a1 = version_named(l, "a", true);
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", RDS_ADS("ra", "60s"), "") ", " LST(
                                "b", RDS_ADS("rb", "60s"), "") "]}",
                            &e),
                     1);
    assert_ptr_equal(version_named(l, "a", true), a1);
    assert_non_null(version_named(l, "a", false));
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    assert_int_equal(stat_get(&st->total_listeners_active), 2);
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", RDS_ADS("ra", "0.2s"), "") ", " LST(
                                "b", RDS_ADS("rb", "60s"), "") "]}",
                            &e),
                     1);
    assert_ptr_equal(version_named(l, "a", true), a1);
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    /* its initial_fetch_timeout: it serves on its empty table, a1 drains (freed: no worker) */
    ev_tstamp until = ev_time() + 5;
    while (stat_get(&st->total_listeners_warming) != 0 && ev_time() < until) {
        ev_run(loop, EVRUN_ONCE);
    }
    assert_int_equal(stat_get(&st->total_listeners_warming), 0);
    assert_non_null(version_named(l, "a", true));
    assert_ptr_not_equal(version_named(l, "a", true), a1);
    assert_int_equal(stat_get(&st->total_listeners_active), 2);
    assert_int_equal(stat_get(&st->total_listeners_draining), 0);

    /* a warming listener removed: gone, with nothing serving for its name */
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", RDS_ADS("ra", "0.2s"), "") ", " LST(
                                "c", RDS_ADS("rc", "60s"), "") "]}",
                            &e),
                     1);
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    assert_int_equal(update(l, "{\"resources\": [" LST("a", RDS_ADS("ra", "0.2s"), "") "]}", &e),
                     1);
    assert_int_equal(stat_get(&st->total_listeners_warming), 0);
    assert_int_equal(stat_get(&st->total_listeners_active), 1);
    assert_null(version_named(l, "c", false));

    /* the wait hook keeps a new version warming even without routes to wait for */
    lds_set_wait_hook(l, wait_hook, NULL);
    hold = true;
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", RDS_ADS("ra", "0.2s"),
                                                    "") ", " LST("e", ROUTES("backend"), "") "]}",
                            &e),
                     1);
    assert_int_equal(stat_get(&st->total_listeners_warming), 1);
    assert_null(version_named(l, "e", true));
    hold = false;
    lds_warm_check(l);
    assert_int_equal(stat_get(&st->total_listeners_warming), 0);
    assert_non_null(version_named(l, "e", true));

    /* once listeners are stopped (drain), nothing is added or modified; removals still are */
    lds_stop_listening(l);
    assert_int_equal(update(l,
                            "{\"resources\": [" LST("a", ROUTES("backend"),
                                                    "") ", " LST("d", ROUTES("backend"), "") "]}",
                            &e),
                     1); /* e removed */
    assert_int_equal(stat_get(&st->total_listeners_active), 1);
    assert_null(version_named(l, "d", true));
    assert_int_equal(update(l, "{\"resources\": []}", &e), 1);
    assert_int_equal(stat_get(&st->total_listeners_active), 0);
    lds_free(l);
    ev_loop_destroy(loop);
    config_unref(base);
}

/* examples/dynamic_listeners: the bootstrap builds, and its LDS file's listener compiles
 * (build_listener) against the bootstrap's clusters. */
static void test_lds_example_dynamic_listeners(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct config *base = config_load_file("examples/dynamic_listeners/bootstrap.yaml", &e);
    if (base == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_true(base->has_lds && !base->lds_ads);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    assert_int_equal(rds_read_file(base->lds_path.p, &resp, &e), 0);
    assert_int_equal(resp->n_resources, 1);
    ProtobufCMessage *m = NULL;
    assert_int_equal(pbjson_any_unpack(resp->resources[0], pbtypes_find, "resources[0]", &m, &e),
                     0);
    struct arena a;
    arena_init(&a, 4096);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    c->clusters = base->clusters;
    c->n_clusters = base->n_clusters;
    c->cluster_map = base->cluster_map;
    if (build_listener(c, "resources[0]", (const Envoy__Config__Listener__V3__Listener *)m, &e) !=
        0) {
        fail_msg("%s", e.msg);
    }
    assert_string_equal(c->listeners[0].name.p, "ingress");
    assert_int_equal(c->n_chains, 1);
    config_unref(c);
    protobuf_c_message_free_unpacked(m, NULL);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    config_unref(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lds_updates_and_rejections),
        cmocka_unit_test(test_lds_warming),
        cmocka_unit_test(test_lds_example_dynamic_listeners),
    };
    snprintf(lds_file, sizeof(lds_file), "/tmp/remora-lds-test-%d.json", (int)getpid());
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(lds_file);
    return rc;
}
