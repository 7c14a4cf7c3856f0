/* Unit tests for proxy/worker's route-table handoff (RDS): main publishes into a worker's
 * mailbox, the next request adopts the table, streams pin the table they routed with, and every
 * table's reference is dropped exactly when its last user is gone. The worker here is a bare
 * struct with a loop (no thread): the functions under test run on the caller's thread. */
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
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/rds.h"
#include "proxy/worker.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define RC_TYPE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

static char file[64];

static void write_rds(const char *version, const char *cluster)
{
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fprintf(f,
            "version_info: %s\nresources:\n- \"@type\": " RC_TYPE "\n  name: rc\n"
            "  virtual_hosts: [{name: vh, domains: [\"*\"], routes: [{match: {prefix: /}, "
            "route: {cluster: %s}}]}]\n",
            version, cluster);
    fclose(f);
}

static struct config *boot(void)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {\"clusters\": [{\"name\": \"a\"}, {\"name\": \"b\"}],"
             " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{"
             "\"name\": \"hcm\", \"typed_config\": {\"@type\": \"" HCM_TYPE "\", "
             "\"stat_prefix\": \"in\", \"rds\": {\"route_config_name\": \"rc\", "
             "\"config_source\": {\"path\": \"%s\"}}, "
             "\"http_filters\": [{\"name\": \"envoy.filters.http.router\"}]}}]}]}]}}",
             file);
    struct err e;
    err_clear(&e);
    struct config *c = config_load_text(text, strlen(text), &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    return c;
}

static const struct route_snap *snap_for(const struct config *base, const char *version,
                                         const char *cluster)
{
    write_rds(version, cluster);
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    struct err e;
    err_clear(&e);
    assert_int_equal(rds_read_file(file, &resp, &e), 0);
    const struct route_snap *s = NULL;
    int rv = rds_snap_build(base, 0, resp->version_info, resp->resources, resp->n_resources, 0,
                            file, &s, &e);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    assert_int_equal(rv, 0);
    return s;
}

static uint32_t refs(const struct route_snap *s)
{
    return atomic_load(&s->c->refs);
}

static void nop_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)loop;
    (void)a;
    (void)revents;
}

static const char *cluster_of(const struct route_table *t)
{
    return t->vhosts[0].routes[0].cluster->name.p;
}

static void test_worker_routes_handoff_and_pins(void **state)
{
    (void)state;
    snprintf(file, sizeof(file), "/tmp/remora-worker-test-%d.yaml", (int)getpid());
    write_rds("v0", "a");
    struct config *base = boot();
    const struct hcm_cfg *hcm = base->listeners[0].chains[0].hcm;

    struct worker w;
    memset(&w, 0, sizeof(w));
    w.loop = ev_loop_new(EVFLAG_AUTO);
    ev_async_init(&w.wake, nop_cb);
    ev_async_start(w.loop, &w.wake);
    w.cfg = base;
    w.rds = calloc(1, sizeof(*w.rds));
    atomic_init(&w.rds[0].inbox, NULL);

    /* Nothing published: the bootstrap's table, no pin. */
    struct route_pin *p0 = NULL;
    assert_ptr_equal(worker_routes_acquire(&w, hcm, &p0), hcm->routes);
    assert_null(p0);

    /* v1 published (main keeps its own reference): the next request adopts it. */
    const struct route_snap *s1 = snap_for(base, "v1", "b");
    worker_routes_publish(&w, 0, s1);
    assert_int_equal(refs(s1), 2);
    struct route_pin *p1 = NULL;
    const struct route_table *t1 = worker_routes_acquire(&w, hcm, &p1);
    assert_string_equal(cluster_of(t1), "b");
    assert_non_null(p1);
    assert_int_equal(p1->users, 2); /* current + this stream */

    /* v2 published and, before the worker took it, v3: v2 is dropped unread. */
    const struct route_snap *s2 = snap_for(base, "v2", "a");
    const struct route_snap *s3 = snap_for(base, "v3", "a");
    worker_routes_publish(&w, 0, s2);
    worker_routes_publish(&w, 0, s3);
    assert_int_equal(refs(s2), 1);
    rds_snap_unref(s2);

    /* The next request routes on v3; the stream on v1 still holds v1. */
    struct route_pin *p3 = NULL;
    const struct route_table *t3 = worker_routes_acquire(&w, hcm, &p3);
    assert_ptr_equal(t3, s3->table);
    assert_int_equal(p1->users, 1);
    assert_int_equal(refs(s1), 2);
    worker_routes_release(&w, p1); /* the v1 stream ends: the worker's reference goes */
    assert_int_equal(refs(s1), 1);
    rds_snap_unref(s1); /* main's: v1 is freed now (ASan checks) */

    /* A command-driven take (no request) works the same way. */
    const struct route_snap *s4 = snap_for(base, "v4", "b");
    worker_routes_publish(&w, 0, s4);
    ev_run(w.loop, EVRUN_NOWAIT); /* the async fires nop_cb here; the real worker takes then */
    worker_routes_release(&w, p3);
    struct route_pin *p4 = NULL;
    assert_string_equal(cluster_of(worker_routes_acquire(&w, hcm, &p4)), "b");
    worker_routes_release(&w, p4);
    assert_int_equal(refs(s3), 1); /* v3 lost its last worker user when v4 came in */
    rds_snap_unref(s3);

    /* Tear down as worker_free does. */
    worker_routes_release(&w, w.rds[0].cur);
    rds_snap_unref(atomic_exchange(&w.rds[0].inbox, NULL));
    assert_int_equal(refs(s4), 1);
    rds_snap_unref(s4);
    free(w.rds);
    ev_loop_destroy(w.loop);
    config_unref(base);
    unlink(file);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_worker_routes_handoff_and_pins),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
