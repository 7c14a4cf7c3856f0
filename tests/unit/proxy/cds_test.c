/* Unit tests for proxy/cds: state-of-the-world updates (added, unchanged, modified, removed;
 * rejections with their field paths, partial updates as Envoy applies them), RDS tables compiled
 * against the set (routes to clusters that come and go), and the lifetime of a cluster's worker
 * state: set up when a worker takes a table naming it, torn down when its last table goes after
 * main retired it, freed by main after that (ASan checks). The worker is a bare struct with a loop.
 */
#include <arpa/inet.h>
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

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/cds.h"
#include "proxy/config/build.h"
#include "proxy/config/cluster_map.h"
#include "proxy/config/config.h"
#include "proxy/config/rds.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/original_dst.h"
#include "proxy/worker.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define RC_TYPE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define CL "{\"@type\": \"" CDS_TYPE_URL "\", "

static char rds_file[64], cds_file[64];
static bool last_changed; /* cds_update's *changed in the last update() */

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static struct config *boot(void)
{
    write_text(rds_file, "version_info: r1\nresources:\n- \"@type\": " RC_TYPE "\n  name: rc\n"
                         "  virtual_hosts: [{name: vh, domains: [\"*\"], routes: [{match: "
                         "{prefix: /}, route: {cluster: d}}]}]\n");
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {\"clusters\": [{\"name\": \"s\"}],"
             " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{"
             "\"name\": \"hcm\", \"typed_config\": {\"@type\": \"" HCM_TYPE "\", "
             "\"stat_prefix\": \"in\", \"rds\": {\"route_config_name\": \"rc\", "
             "\"config_source\": {\"path\": \"%s\"}}, "
             "\"http_filters\": [{\"name\": \"envoy.filters.http.router\"}]}}]}]}]},"
             " \"dynamic_resources\": {\"cds_config\": {\"path\": \"%s\"}}}",
             rds_file, cds_file);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_text(text, strlen(text), &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    return c;
}

/* Applies the JSON list of Cluster resources `list` as version `v`. */
static int update(struct cds *cd, const char *v, const char *list, struct err *e)
{
    char text[4096];
    snprintf(text, sizeof(text), "{\"version_info\": \"%s\", \"resources\": [%s]}", v, list);
    write_text(cds_file, text);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    err_clear(e);
    last_changed = false;
    int rv = rds_read_file(cds_file, &resp, e); /* Any payloads in JSON decode here: a file
                                                 * with an unknown field is rejected whole */
    if (rv != 0) {
        return rv;
    }
    rv = cds_update(cd, resp->version_info, resp->resources, resp->n_resources, "cds.json", e,
                    &last_changed);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

#define EP(port)                                                                                   \
    "\"load_assignment\": {\"cluster_name\": \"x\", \"endpoints\": [{\"lb_endpoints\": "           \
    "[{\"endpoint\": {\"address\": {\"socket_address\": {\"address\": \"127.0.0.1\", "             \
    "\"port_value\": " #port "}}}}]}]}"

/* A transport socket whose trust store is SDS secret 'ca' from sds_config `src`. */
#define UTLS(src)                                                                                  \
    "\"transport_socket\": {\"name\": \"tls\", \"typed_config\": {\"@type\": "                     \
    "\"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\", "       \
    "\"common_tls_context\": {\"validation_context_sds_secret_config\": {\"name\": \"ca\", "       \
    "\"sds_config\": " src "}}}}"

static void run_deferred(struct worker *w)
{
    while (!list_empty(&w->deferred)) {
        struct list *n = list_first(&w->deferred);
        list_remove(n);
        struct deferred *d = LIST_ENTRY(n, struct deferred, link);
        d->free_fn(d);
    }
}

static void nop_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)a;
    (void)revents;
}

static void test_cds_updates_and_rejections(void **state)
{
    (void)state;
    struct config *base = boot();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct cm_stats *st = cds_stats(cd);
    struct err e;
    assert_null(cds_rds_clusters(cd));
    assert_int_equal(stat_get(&st->cluster_added), 1); /* the bootstrap's, as Envoy counts */

    assert_int_equal(update(cd, "v1", CL "\"name\": \"d\", " EP(1) "}, " CL "\"name\": \"e\"}", &e),
                     1);
    const struct rds_clusters *rc = cds_rds_clusters(cd);
    assert_non_null(rc);
    const struct cluster_cfg *d1 = cluster_map_find(rc->map, STR_LIT("d"));
    assert_non_null(d1);
    assert_non_null(d1->dyn_rt);
    assert_int_equal(d1->n_endpoints, 1);
    assert_non_null(cluster_map_find(rc->map, STR_LIT("s"))); /* the static one too */
    assert_null(cluster_map_find(rc->map, STR_LIT("s"))->dyn_rt);
    assert_int_equal(stat_get(&st->cluster_added), 3);
    assert_int_equal(stat_get(&st->active_clusters), 3);

    /* the same bytes: nothing happens */
    assert_int_equal(update(cd, "v2", CL "\"name\": \"d\", " EP(1) "}, " CL "\"name\": \"e\"}", &e),
                     0);
    /* e changes, d does not: d keeps its cluster (same cfg, same state) */
    assert_int_equal(
        update(cd, "v3", CL "\"name\": \"d\", " EP(1) "}, " CL "\"name\": \"e\", " EP(2) "}", &e),
        1);
    rc = cds_rds_clusters(cd);
    assert_ptr_equal(cluster_map_find(rc->map, STR_LIT("d")), d1);
    assert_int_equal(cluster_map_find(rc->map, STR_LIT("e"))->n_endpoints, 1);
    assert_int_equal(stat_get(&st->cluster_modified), 1);

    /* rejections with their field paths: the bad resource is skipped, the cluster of its name in
     * force stays (d1), and the rest of each update is what is in force (d1, e): nothing
     * changes */
#define GOOD_D CL "\"name\": \"d\", " EP(1) "}"
#define GOOD_E ", " CL "\"name\": \"e\", " EP(2) "}"
    static const struct {
        const char *list;
        const char *want;
    } bad[] = {
        {CL "\"name\": \"d\", \"bogus\": 1}" GOOD_E, "cds.json: resources[0].bogus: unknown field"},
        {CL "\"name\": \"d\", \"bogus\": 1}, " CL "\"name\": \"x\"}" GOOD_E,
         "cds.json: resources[0].bogus: unknown field"},
        {GOOD_D ", " CL "\"name\": \"d\"}" GOOD_E,
         "cds.json: resources[1].name: duplicate cluster name 'd'"},
        {CL "\"name\": \"s\"}, " GOOD_D GOOD_E,
         "cds.json: resources[0].name: 's' is a static cluster (bootstrap): CDS cannot replace "
         "it"},
        {GOOD_D ", " CL "\"name\": \"\"}" GOOD_E, "cds.json: resources[1].name: required"},
        {CL "\"name\": \"d\", \"connect_timeout\": \"-1s\"}" GOOD_E,
         "cds.json: resources[0].connect_timeout: "},
        /* ORIGINAL_DST from CDS is checked as in the bootstrap */
        {CL "\"name\": \"d\", \"type\": \"ORIGINAL_DST\"}" GOOD_E,
         "cds.json: resources[0].lb_policy: ROUND_ROBIN is not valid for cluster type "
         "ORIGINAL_DST"},
        {CL "\"name\": \"d\", \"type\": \"ORIGINAL_DST\", \"lb_policy\": \"CLUSTER_PROVIDED\", "
            "\"outlier_detection\": {}}" GOOD_E,
         "cds.json: resources[0].outlier_detection: not supported by remora yet"},
        /* SDS in a CDS cluster: over ADS only (shared by name), which needs an ads_config */
        {CL "\"name\": \"d\", " UTLS("{\"path\": \"/x\"}") "}" GOOD_E,
         "cds.json: resources[0].transport_socket.typed_config.common_tls_context."
         "validation_context_sds_secret_config.sds_config: an SDS secret from a file in a "
         "listener from LDS or a cluster from CDS is not supported by remora yet"},
        {CL "\"name\": \"d\", " UTLS("{\"ads\": {}}") "}" GOOD_E,
         "cds.json: resources[0].transport_socket.typed_config.common_tls_context."
         "validation_context_sds_secret_config.sds_config.ads: needs "
         "dynamic_resources.ads_config"},
        /* a resource that does not decode keeps the cluster its bytes name (field 1) */
        {"{\"@type\": \"" RC_TYPE "\", \"name\": \"d\"}" GOOD_E,
         "cds.json: resources[0]: type '" RC_TYPE "' is not " CDS_TYPE_URL},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(update(cd, "x", bad[i].list, &e), -EINVAL);
        assert_false(last_changed);
        /* "<file>: ..." when the resource does not decode, "cds.json: ..." after */
        const char *tail = bad[i].want + strlen("cds.json: ");
        if (strstr(e.msg, tail) == NULL || strstr(e.msg, ": resources[") == NULL) {
            fail_msg("case %zu: got '%s', want '%s'", i, e.msg, bad[i].want);
        }
        assert_ptr_equal(cds_rds_clusters(cd), rc); /* nothing changed */
        assert_ptr_equal(cluster_map_find(rc->map, STR_LIT("d")), d1);
    }
    assert_int_equal(stat_get(&st->cluster_removed), 0);

    /* everything goes */
    assert_int_equal(update(cd, "v4", "", &e), 1);
    assert_null(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")));
    assert_int_equal(stat_get(&st->cluster_removed), 2);
    assert_int_equal(stat_get(&st->active_clusters), 1);
    ev_run(loop, EVRUN_NOWAIT); /* main reaps what nobody holds */
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

/* Envoy's partial update: the valid clusters of a response with a bad one are applied, the bad
 * one is skipped and the cluster of its name in force stays, left-out ones are removed; the
 * error names every failure. */
static void test_cds_partial_updates(void **state)
{
    (void)state;
    struct config *base = boot();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct cm_stats *st = cds_stats(cd);
    struct err e;
#define BAD(name) CL "\"name\": \"" name "\", \"connect_timeout\": \"-1s\"}"
    /* the first update: the bad one is not added, the good ones are */
    assert_int_equal(update(cd, "v1",
                            CL "\"name\": \"d\", " EP(1) "}, " BAD(
                                "x") ", " CL "\"name\": \"e\", " EP(2) "}, " CL "\"name\": \"f\"}",
                            &e),
                     -EINVAL);
    assert_true(last_changed);
    assert_non_null(strstr(e.msg, "cds.json: resources[1].connect_timeout"));
    const struct rds_clusters *rc = cds_rds_clusters(cd);
    assert_non_null(rc);
    const struct cluster_cfg *d1 = cluster_map_find(rc->map, STR_LIT("d"));
    const struct cluster_cfg *e1 = cluster_map_find(rc->map, STR_LIT("e"));
    assert_non_null(d1);
    assert_non_null(e1);
    assert_null(cluster_map_find(rc->map, STR_LIT("x")));
    assert_int_equal(stat_get(&st->cluster_added), 4); /* s, d, e, f */
    /* d changes, e's new version is bad (e stays as it was), f is left out (removed), g comes,
     * h is bad and new (not added) */
    assert_int_equal(
        update(cd, "v2",
               CL "\"name\": \"d\", " EP(3) "}, " BAD("e") ", " CL "\"name\": \"g\"}, " BAD("h"),
               &e),
        -EINVAL);
    assert_true(last_changed);
    if (strstr(e.msg, "resources[1].connect_timeout") == NULL ||
        strstr(e.msg, "; resources[3].connect_timeout") == NULL) {
        fail_msg("got '%s'", e.msg);
    }
    rc = cds_rds_clusters(cd);
    assert_ptr_not_equal(cluster_map_find(rc->map, STR_LIT("d")), d1);
    assert_ptr_equal(cluster_map_find(rc->map, STR_LIT("e")), e1); /* kept */
    assert_null(cluster_map_find(rc->map, STR_LIT("f")));
    assert_non_null(cluster_map_find(rc->map, STR_LIT("g")));
    assert_null(cluster_map_find(rc->map, STR_LIT("h")));
    assert_int_equal(stat_get(&st->cluster_added), 5);
    assert_int_equal(stat_get(&st->cluster_modified), 1);
    assert_int_equal(stat_get(&st->cluster_removed), 1);
    assert_int_equal(stat_get(&st->active_clusters), 4); /* s, d, e, g */
    d1 = cluster_map_find(rc->map, STR_LIT("d"));
    /* only failures, nothing else changes: not applied at all */
    assert_int_equal(
        update(cd, "v3",
               CL "\"name\": \"d\", " EP(3) "}, " BAD("e") ", " CL "\"name\": \"g\"}, " BAD("h"),
               &e),
        -EINVAL);
    assert_false(last_changed);
    assert_ptr_equal(cds_rds_clusters(cd), rc);
    /* duplicates: the second of two is the bad one, whichever is valid; a bad first one's name
     * counts too (d stays as it was) */
    assert_int_equal(
        update(cd, "v4",
               BAD("d") ", " CL "\"name\": \"d\", " EP(4) "}, " BAD("e") ", " CL "\"name\": \"g\"}",
               &e),
        -EINVAL);
    assert_non_null(strstr(e.msg, "resources[1].name: duplicate cluster name 'd'"));
    assert_false(last_changed);
    assert_ptr_equal(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")), d1);
    assert_int_equal(update(cd, "v5",
                            CL "\"name\": \"d\", " EP(3) "}, " CL "\"name\": \"d\", " EP(
                                5) "}, " BAD("e") ", " CL "\"name\": \"g\"}",
                            &e),
                     -EINVAL);
    assert_false(last_changed);
    assert_string_equal(
        cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"))->endpoints[0].addr.text.p,
        "127.0.0.1:3");
    /* a bootstrap name is refused, the others apply */
    assert_int_equal(update(cd, "v6", CL "\"name\": \"s\"}, " CL "\"name\": \"g\"}", &e), -EINVAL);
    assert_true(last_changed); /* d and e removed */
    assert_non_null(strstr(e.msg, "resources[0].name: 's' is a static cluster"));
    assert_null(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")));
    assert_non_null(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("g")));
    /* many failures: the joined message is cut at the error buffer's size */
    char many[4096] = "";
    for (int k = 0; k < 30; k++) {
        char one[128];
        snprintf(one, sizeof(one), "%s" CL "\"name\": \"bad%d\", \"connect_timeout\": \"-1s\"}",
                 k > 0 ? ", " : "", k);
        strncat(many, one, sizeof(many) - strlen(many) - 1);
    }
    assert_int_equal(update(cd, "v7", many, &e), -EINVAL);
    assert_true(strlen(e.msg) < sizeof(e.msg) && strlen(e.msg) > sizeof(e.msg) - 80);
    assert_non_null(strstr(e.msg, "; resources[1].connect_timeout"));
#undef BAD
    ev_run(loop, EVRUN_NOWAIT);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

static void test_cds_worker_state_follows_its_tables(void **state)
{
    (void)state;
    struct config *base = boot();
    const struct hcm_cfg *hcm = base->listeners[0].chains[0].hcm;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct err e;

    struct worker w;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    ev_async_init(&w.wake, nop_cb);
    ev_async_start(w.loop, &w.wake);
    w.cfg = base;
    list_init(&w.deferred);
    w.rds = calloc(1, sizeof(*w.rds));
    atomic_init(&w.rds[0].inbox, NULL);

    /* The bootstrap's table routes to nothing yet: d does not exist at build time. */
    assert_null(hcm->routes->vhosts[0].routes[0].cluster);

    assert_int_equal(update(cd, "v1", CL "\"name\": \"d\", " EP(1) "}", &e), 1);
    const struct route_snap *t1 = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, NULL, cds_rds_clusters(cd), false, &t1, &e), 0);
    const struct cluster_cfg *d1 = t1->table->vhosts[0].routes[0].cluster;
    assert_non_null(d1);
    assert_string_equal(d1->name.p, "d");
    worker_routes_publish(&w, 0, t1);
    struct route_pin *p1 = NULL;
    worker_routes_acquire(&w, hcm, &p1);     /* a stream routes with t1 */
    assert_ptr_equal(d1->dyn_rt[0].cfg, d1); /* the worker set its state up */

    /* d changes: a new cluster; t2 points at it. The stream on t1 keeps the old one. */
    assert_int_equal(update(cd, "v2", CL "\"name\": \"d\", " EP(2) "}", &e), 1);
    const struct route_snap *t2 = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, t1, cds_rds_clusters(cd), false, &t2, &e), 0);
    const struct cluster_cfg *d2 = t2->table->vhosts[0].routes[0].cluster;
    assert_true(d2 != d1);
    rds_snap_unref(t1); /* main's */
    worker_routes_publish(&w, 0, t2);
    struct route_pin *p2 = NULL;
    worker_routes_acquire(&w, hcm, &p2);
    assert_ptr_equal(d2->dyn_rt[0].cfg, d2);
    run_deferred(&w);
    assert_ptr_equal(d1->dyn_rt[0].cfg, d1); /* still held by the t1 stream */
    worker_routes_release(&w, p1);           /* it ends: d1's state goes, deferred */
    run_deferred(&w);
    assert_null(d1->dyn_rt[0].eps);
    ev_run(loop, EVRUN_NOWAIT); /* main frees d1 (ASan checks no one reads it after) */

    /* d goes: the route answers NC (no cluster). */
    assert_int_equal(update(cd, "v3", "", &e), 1);
    const struct route_snap *t3 = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, t2, cds_rds_clusters(cd), false, &t3, &e), 0);
    assert_null(t3->table->vhosts[0].routes[0].cluster);
    rds_snap_unref(t2);
    worker_routes_publish(&w, 0, t3);
    struct route_pin *p3 = NULL;
    worker_routes_acquire(&w, hcm, &p3);
    worker_routes_release(&w, p2);
    run_deferred(&w);
    worker_routes_release(&w, p3);

    /* tear down as main does: retire, workers let go, then free */
    cds_retire_all(cd);
    worker_routes_release(&w, w.rds[0].cur);
    rds_snap_unref(atomic_exchange(&w.rds[0].inbox, NULL));
    run_deferred(&w);
    rds_snap_unref(t3);
    free(w.rds);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

/* An ORIGINAL_DST cluster from CDS: a worker that sets it up sweeps it (worker.od_dyn); the same
 * bytes keep its hosts, changed bytes make a fresh one, and the old one leaves the sweep list
 * when the worker tears it down. */
static void test_cds_original_dst(void **state)
{
    (void)state;
    struct config *base = boot();
    const struct hcm_cfg *hcm = base->listeners[0].chains[0].hcm;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct err e;
    struct worker w;
    memset(&w, 0, sizeof(w));
    w.loop = loop;
    ev_async_init(&w.wake, nop_cb);
    ev_async_start(w.loop, &w.wake);
    w.cfg = base;
    list_init(&w.deferred);
    list_init(&w.od_dyn);
    w.rds = calloc(1, sizeof(*w.rds));
    atomic_init(&w.rds[0].inbox, NULL);
#define OD(extra)                                                                                  \
    CL "\"name\": \"d\", \"type\": \"ORIGINAL_DST\", \"lb_policy\": \"CLUSTER_PROVIDED\"" extra "}"

    assert_int_equal(update(cd, "v1", OD(""), &e), 1);
    const struct route_snap *t1 = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, NULL, cds_rds_clusters(cd), false, &t1, &e), 0);
    const struct cluster_cfg *d1 = t1->table->vhosts[0].routes[0].cluster;
    assert_int_equal(d1->type, CLUSTER_ORIGINAL_DST);
    assert_int_equal(d1->od_cleanup_ms, 5000);
    worker_routes_publish(&w, 0, t1);
    struct route_pin *p1 = NULL;
    worker_routes_acquire(&w, hcm, &p1);
    assert_ptr_equal(list_first(&w.od_dyn), &d1->dyn_rt[0].od_link);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(9)};
    dst.sin_addr.s_addr = htonl(0x7f000001);
    assert_non_null(original_dst_host(&d1->dyn_rt[0], (struct sockaddr *)&dst));
    assert_int_equal(d1->dyn_rt[0].n_od_hosts, 1);

    /* the same bytes: the same cluster, its host kept */
    assert_int_equal(update(cd, "v2", OD(""), &e), 0);
    assert_ptr_equal(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")), d1);
    assert_int_equal(d1->dyn_rt[0].n_od_hosts, 1);

    /* changed: a fresh cluster with its own sweep; the old one goes when its stream ends */
    assert_int_equal(update(cd, "v3", OD(", \"cleanup_interval\": \"2s\""), &e), 1);
    const struct route_snap *t2 = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, t1, cds_rds_clusters(cd), false, &t2, &e), 0);
    const struct cluster_cfg *d2 = t2->table->vhosts[0].routes[0].cluster;
    assert_true(d2 != d1);
    assert_int_equal(d2->od_cleanup_ms, 2000);
    rds_snap_unref(t1);
    worker_routes_publish(&w, 0, t2);
    struct route_pin *p2 = NULL;
    worker_routes_acquire(&w, hcm, &p2);
    assert_int_equal(d2->dyn_rt[0].n_od_hosts, 0);
    worker_routes_release(&w, p1);
    run_deferred(&w);
    assert_ptr_equal(list_first(&w.od_dyn), &d2->dyn_rt[0].od_link);
    assert_ptr_equal(w.od_dyn.prev, &d2->dyn_rt[0].od_link); /* d1 left it */
    ev_run(loop, EVRUN_NOWAIT);

    worker_routes_release(&w, p2);
    cds_retire_all(cd);
    worker_routes_release(&w, w.rds[0].cur);
    run_deferred(&w);
    assert_true(list_empty(&w.od_dyn));
    rds_snap_unref(t2);
    free(w.rds);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
#undef OD
}

/* Applies the JSON list of ClusterLoadAssignment resources `list` to EDS cluster `cluster`. */
static int eds(struct cds *cd, const char *cluster, const char *list, struct err *e)
{
    char text[4096];
    snprintf(text, sizeof(text), "{\"version_info\": \"e\", \"resources\": [%s]}", list);
    write_text(cds_file, text);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    err_clear(e);
    int rv = rds_read_file(cds_file, &resp, e);
    if (rv != 0) {
        return rv;
    }
    rv = cds_update_endpoints(cd, cluster, resp->version_info, resp->resources, resp->n_resources,
                              "eds.json", e);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

#define CLA "{\"@type\": \"" CDS_EDS_TYPE_URL "\", "
#define EDS_CL(name, svc)                                                                          \
    CL "\"name\": \"" name "\", \"type\": \"EDS\", \"eds_cluster_config\": {\"service_name\": "    \
       "\"" svc "\", \"eds_config\": {\"path\": \"/e.yaml\"}}}"
#define CLA_EP(port)                                                                               \
    "\"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": {\"socket_address\": "       \
    "{\"address\": \"127.0.0.1\", \"port_value\": " #port "}}}}]}]"

static void test_cds_eds_clusters(void **state)
{
    (void)state;
    struct config *base = boot();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct err e;

    /* EDS settings are checked with the cluster, with their paths */
    static const struct {
        const char *list;
        const char *want;
    } bad[] = {
        {CL "\"name\": \"d\", \"type\": \"EDS\"}",
         "resources[0].eds_cluster_config: required for type EDS"},
        {CL "\"name\": \"d\", \"eds_cluster_config\": {}}",
         "resources[0].eds_cluster_config: needs type EDS"},
        {CL "\"name\": \"d\", \"type\": \"EDS\", \"eds_cluster_config\": {}}",
         "resources[0].eds_cluster_config.eds_config: required"},
        {CL "\"name\": \"d\", \"type\": \"EDS\", \"eds_cluster_config\": {\"eds_config\": "
            "{\"ads\": {}}}}",
         "resources[0].eds_cluster_config.eds_config.ads: needs dynamic_resources.ads_config"},
        {CL "\"name\": \"d\", \"type\": \"EDS\", \"eds_cluster_config\": {\"eds_config\": "
            "{\"ads\": {}, \"initial_fetch_timeout\": \"-2s\"}}}",
         "resources[0].eds_cluster_config.eds_config.initial_fetch_timeout: must not be negative"},
        {CL "\"name\": \"d\", \"type\": \"EDS\", \"eds_cluster_config\": {\"eds_config\": "
            "{\"path\": \"/e\"}}, " EP(1) "}",
         "resources[0].load_assignment: an EDS cluster takes its endpoints from "
         "eds_cluster_config, not here"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(update(cd, "x", bad[i].list, &e), -EINVAL);
        if (strstr(e.msg, bad[i].want) == NULL) {
            fail_msg("case %zu: got '%s', want '%s'", i, e.msg, bad[i].want);
        }
    }

    assert_int_equal(update(cd, "v1", EDS_CL("d", "svc"), &e), 1);
    const struct cluster_cfg *d0 = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_int_equal(d0->type, CLUSTER_EDS);
    assert_int_equal(d0->n_endpoints, 0); /* until its assignment comes */
    assert_string_equal(d0->eds_service_name.p, "svc");
    assert_string_equal(d0->eds_path.p, "/e.yaml");
    struct cds_eds list[2];
    assert_int_equal(cds_eds_clusters(cd, list, 2), 1);
    assert_string_equal(list[0].cluster, "d");
    assert_false(list[0].loaded);
    const struct eds_stats *st = cds_eds_stats(cd, "d");
    assert_non_null(st);
    assert_null(cds_eds_stats(cd, "nope"));

    assert_int_equal(eds(cd, "d", CLA "\"cluster_name\": \"svc\", " CLA_EP(1) "}", &e), 1);
    const struct cluster_cfg *d1 = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_true(d1 != d0);
    assert_int_equal(d1->n_endpoints, 1);
    assert_int_equal(stat_get(&st->membership_change), 1);
    /* the same bytes: nothing */
    assert_int_equal(eds(cd, "d", CLA "\"cluster_name\": \"svc\", " CLA_EP(1) "}", &e), 0);
    assert_int_equal(stat_get(&st->update_no_rebuild), 1);
    /* empty: the endpoints stay */
    assert_int_equal(eds(cd, "d", "", &e), 0);
    assert_int_equal(stat_get(&st->update_empty), 1);
    assert_ptr_equal(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")), d1);
    /* rejected, with paths */
    assert_int_equal(eds(cd, "d", CLA "\"cluster_name\": \"x\"}", &e), -EINVAL);
    assert_string_equal(e.msg, "eds.json: resources[0].cluster_name: unexpected EDS cluster "
                               "(expecting 'svc'): 'x'");
    assert_int_equal(
        eds(cd, "d", CLA "\"cluster_name\": \"svc\"}, " CLA "\"cluster_name\": \"svc\"}", &e),
        -EINVAL);
    assert_string_equal(e.msg,
                        "eds.json: resources: unexpected EDS resource length: 2 (expected 1)");
    assert_int_equal(
        eds(cd, "d", CLA "\"cluster_name\": \"svc\", \"endpoints\": [{\"priority\": 200}]}", &e),
        -EINVAL);
    assert_string_equal(e.msg, "eds.json: resources[0].endpoints[0].priority: must be at most 128");
    assert_int_equal(stat_get(&st->update_rejected), 3);
    assert_int_equal(eds(cd, "s", "", &e), -EINVAL); /* not an EDS cluster */
    assert_ptr_equal(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d")), d1);

    /* a CDS change of d on the same EDS source keeps its endpoints; on another, it waits */
    assert_int_equal(update(cd, "v2",
                            CL
                            "\"name\": \"d\", \"type\": \"EDS\", \"connect_timeout\": \"3s\", "
                            "\"eds_cluster_config\": {\"service_name\": \"svc\", \"eds_config\": "
                            "{\"path\": \"/e.yaml\"}}}",
                            &e),
                     1);
    const struct cluster_cfg *d2 = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_true(d2 != d1);
    assert_int_equal(d2->connect_timeout_ms, 3000);
    assert_int_equal(d2->n_endpoints, 1);
    assert_int_equal(cds_eds_clusters(cd, list, 2), 1);
    assert_true(list[0].loaded);
    assert_int_equal(eds(cd, "d", CLA "\"cluster_name\": \"svc\", " CLA_EP(1) "}", &e), 0);
    assert_int_equal(stat_get(&st->update_no_rebuild), 2); /* the same assignment */
    assert_int_equal(update(cd, "v3", EDS_CL("d", "svc2"), &e), 1);
    assert_int_equal(cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"))->n_endpoints, 0);
    assert_int_equal(cds_eds_clusters(cd, list, 2), 1);
    assert_false(list[0].loaded);

    ev_run(loop, EVRUN_NOWAIT);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

/* examples/dynamic_clusters: the bootstrap builds, its CDS file gives api and web (EDS), web's
 * EDS file its two endpoints, and the RDS table points at both (paths relative to the
 * repository root, the tests' working directory). */
/* Runs `loop` until no cluster of `cd` warms (a health-checked one: its first round, refused on
 * loopback or timed out), at most 5 s. */
static void run_until_warm(struct ev_loop *loop, struct cds *cd)
{
    double end = ev_time() + 5.0;
    while (stat_get(&cds_stats(cd)->warming_clusters) > 0 && ev_time() < end) {
        ev_run(loop, EVRUN_ONCE);
    }
}

static void test_cds_example_dynamic_clusters(void **state)
{
    (void)state;
    const char *dir = "examples/dynamic_clusters/";
    char path[256];
    snprintf(path, sizeof(path), "%sbootstrap.yaml", dir);
    struct err e;
    err_clear(&e);
    struct config *base = config_load_file(path, &e);
    if (base == NULL) {
        fail_msg("%s", e.msg);
    }
    assert_true(base->has_cds);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    assert_int_equal(rds_read_file(base->cds_path.p, &resp, &e), 0);
    int rv =
        cds_update(cd, resp->version_info, resp->resources, resp->n_resources, "cds", &e, NULL);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rv != 1) {
        fail_msg("%s", e.msg);
    }
    struct cds_eds list[1];
    assert_int_equal(cds_eds_clusters(cd, list, 1), 1);
    assert_string_equal(list[0].cluster, "web");
    assert_int_equal(rds_read_file(list[0].path, &resp, &e), 0);
    rv = cds_update_endpoints(cd, "web", resp->version_info, resp->resources, resp->n_resources,
                              "eds", &e);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rv != 1) {
        fail_msg("%s", e.msg);
    }
    /* web is health-checked: warming (not in the routing set) until its first round */
    assert_int_equal(stat_get(&cds_stats(cd)->warming_clusters), 1);
    const struct route_snap *t = NULL;
    assert_int_equal(rds_snap_rebuild(base, 0, NULL, cds_rds_clusters(cd), false, &t, &e), 0);
    assert_null(t->table->vhosts[0].routes[1].cluster);
    rds_snap_unref(t);
    run_until_warm(loop, cd);
    assert_int_equal(stat_get(&cds_stats(cd)->warming_clusters), 0);
    assert_int_equal(rds_snap_rebuild(base, 0, NULL, cds_rds_clusters(cd), false, &t, &e), 0);
    const struct vhost_cfg *vh = &t->table->vhosts[0];
    assert_string_equal(vh->routes[0].cluster->name.p, "api");
    assert_string_equal(vh->routes[1].cluster->name.p, "web");
    assert_int_equal(vh->routes[1].cluster->n_endpoints, 2);
    assert_non_null(vh->routes[1].cluster->health_check);
    rds_snap_unref(t);
    ev_run(loop, EVRUN_NOWAIT);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

static int setup(void **state)
{
    (void)state;
    snprintf(rds_file, sizeof(rds_file), "/tmp/remora-cds-test-rds-%d.yaml", (int)getpid());
    snprintf(cds_file, sizeof(cds_file), "/tmp/remora-cds-test-cds-%d.json", (int)getpid());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(rds_file);
    unlink(cds_file);
    return 0;
}

/* A fake answer table for STRICT_DNS clusters (config_dns): every name resolves to dns_addrs. */
static const char *dns_addrs[4];
static size_t n_dns_addrs;

static size_t fake_answer(void *ud, const char *cluster, const char *host, const char **out,
                          size_t max)
{
    (void)ud;
    (void)cluster;
    (void)host;
    size_t n = n_dns_addrs < max ? n_dns_addrs : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = dns_addrs[i];
    }
    return n;
}

#define DNS_CL(name, extra)                                                                        \
    CL "\"name\": \"" name "\", \"type\": \"STRICT_DNS\"" extra ", \"load_assignment\": "          \
       "{\"cluster_name\": \"x\", \"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": "             \
       "{\"address\": "                                                                            \
       "{\"socket_address\": {\"address\": \"backend.test\", \"port_value\": 80}}}}]}]}}"

/* STRICT_DNS clusters take their addresses from the answers (never a lookup here); a changed
 * answer makes a new version as EDS does (membership_change, same stats), the same addresses
 * change nothing, and a CDS modification of the cluster takes the answers at once. */
static void test_cds_strict_dns(void **state)
{
    (void)state;
    struct config *base = boot();
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cds *cd = cds_new(loop, base, 1);
    struct config_dns dns = {.answer = fake_answer};
    cds_set_dns(cd, &dns);
    struct err e;
    n_dns_addrs = 0;
    assert_int_equal(update(cd, "v1", DNS_CL("d", ""), &e), 1);
    const struct cluster_cfg *list[2];
    assert_int_equal(cds_dns_clusters(cd, list, 2), 1);
    assert_int_equal(list[0]->n_endpoints, 0); /* no answer yet */
    assert_int_equal(list[0]->n_dns_hosts, 1);
    assert_int_equal(list[0]->dns_refresh_ms, 5000);
    struct eds_stats *st = cds_dns_stats(cd, "d");
    assert_non_null(st);
    assert_null(cds_eds_stats(cd, "d"));

    assert_int_equal(cds_update_dns(cd, "d"), 0); /* still nothing */
    dns_addrs[0] = "10.0.0.1";
    n_dns_addrs = 1;
    assert_int_equal(cds_update_dns(cd, "d"), 1);
    const struct cluster_cfg *d = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_int_equal(d->n_endpoints, 1);
    assert_true(str_eq_lit(d->endpoints[0].addr.text, "10.0.0.1:80"));
    assert_true(str_eq_lit(d->endpoints[0].hostname, "backend.test"));
    assert_int_equal(stat_get(&st->membership_change), 1);
    assert_int_equal(cds_update_dns(cd, "d"), 0); /* the same addresses */

    dns_addrs[0] = "10.0.0.2";
    dns_addrs[1] = "10.0.0.1";
    n_dns_addrs = 2;
    assert_int_equal(cds_update_dns(cd, "d"), 1);
    assert_ptr_equal(cds_dns_stats(cd, "d"), st); /* the stats carry over */
    assert_int_equal(stat_get(&st->membership_change), 2);
    d = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_int_equal(d->n_endpoints, 2);

    /* the same resource: the version (and its addresses) stays */
    assert_int_equal(update(cd, "v2", DNS_CL("d", ""), &e), 0);
    /* a modified one: the answers at once */
    assert_int_equal(update(cd, "v3", DNS_CL("d", ", \"connect_timeout\": \"2s\""), &e), 1);
    d = cluster_map_find(cds_rds_clusters(cd)->map, STR_LIT("d"));
    assert_int_equal(d->n_endpoints, 2);
    assert_int_equal(d->connect_timeout_ms, 2000);
    assert_int_equal(cds_update_dns(cd, "nope"), 0);

    /* a STRICT_DNS cluster becoming STATIC: another stats shape, as a removal and an addition */
    assert_int_equal(update(cd, "v4", CL "\"name\": \"d\", " EP(1) "}", &e), 1);
    assert_null(cds_dns_stats(cd, "d"));
    assert_int_equal(cds_dns_clusters(cd, list, 2), 0);

    ev_run(loop, EVRUN_NOWAIT);
    cds_free(cd);
    ev_loop_destroy(loop);
    config_unref(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cds_updates_and_rejections),
        cmocka_unit_test(test_cds_partial_updates),
        cmocka_unit_test(test_cds_worker_state_follows_its_tables),
        cmocka_unit_test(test_cds_original_dst),
        cmocka_unit_test(test_cds_eds_clusters),
        cmocka_unit_test(test_cds_example_dynamic_clusters),
        cmocka_unit_test(test_cds_strict_dns),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
