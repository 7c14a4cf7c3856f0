/* Unit tests for proxy/config/rds: an HCM's `rds` at bootstrap time (the file must load) and
 * route updates compiled against the bootstrap snapshot (Envoy's RDS rules, field-path errors,
 * the container's references). Files are written to a temp directory. */
#include <errno.h>
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
#include "proxy/http/router.h"

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
#define RC_TYPE "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define HCM "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"

static char dir[64];

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A DiscoveryResponse with one RouteConfiguration named `name`: "/" to `cluster`. */
static void write_rds(const char *path, const char *version, const char *name, const char *cluster)
{
    char text[1024];
    snprintf(text, sizeof(text),
             "version_info: %s\n"
             "resources:\n"
             "- \"@type\": " RC_TYPE "\n"
             "  name: %s\n"
             "  virtual_hosts:\n"
             "  - name: vh\n"
             "    domains: [\"*\"]\n"
             "    routes:\n"
             "    - match: {prefix: /}\n"
             "      route: {cluster: %s}\n",
             version, name, cluster);
    write_text(path, text);
}

#define ROUTER "{\"name\": \"envoy.filters.http.router\"}"
#define LRL_TYPE                                                                                   \
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"

/* A bootstrap whose HCM takes its routes from `rds_block` (JSON), with `filters` (JSON list
 * entries, the router last). */
static struct config *load_boot_filters(const char *rds_block, const char *filters, struct err *err)
{
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {"
             " \"clusters\": [{\"name\": \"a\", \"load_assignment\": {\"cluster_name\": \"a\", "
             "\"endpoints\": [{\"lb_endpoints\": [{\"endpoint\": {\"address\": "
             "{\"socket_address\": {\"address\": \"127.0.0.1\", \"port_value\": 1}}}}]}]}},"
             "  {\"name\": \"b\"}],"
             " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": 10000}},"
             "  \"filter_chains\": [{\"filters\": [{\"name\": \"hcm\", \"typed_config\": {"
             "\"@type\": \"" HCM_TYPE "\", \"stat_prefix\": \"in\", \"rds\": %s,"
             " \"http_filters\": [%s]}}]}]}]}}",
             rds_block, filters);
    err_clear(err);
    return config_load_text(text, strlen(text), err);
}

static struct config *load_boot(const char *rds_block, struct err *err)
{
    return load_boot_filters(rds_block, ROUTER, err);
}

static struct config *must_boot(const char *file)
{
    char block[512];
    snprintf(block, sizeof(block),
             "{\"route_config_name\": \"rc\", \"config_source\": {\"path_config_source\": "
             "{\"path\": \"%s\"}, \"resource_api_version\": \"V3\"}}",
             file);
    struct err e;
    struct config *c = load_boot(block, &e);
    if (c == NULL) {
        fail_msg("%s", e.msg);
    }
    return c;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/remora-rds-test-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_of(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", dir, name);
}

static const char *cluster_of(const struct route_table *t)
{
    return t->vhosts[0].routes[0].cluster->name.p;
}

/* Reads `file` and builds it as an update of `base`'s subscription 0. */
static int update(const struct config *base, const char *file, uint64_t cur,
                  const struct route_snap **out, struct err *e)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse *resp = NULL;
    err_clear(e);
    int rv = rds_read_file(file, &resp, e);
    if (rv != 0) {
        return rv;
    }
    rv = rds_snap_build(base, 0, resp->version_info, resp->resources, resp->n_resources, cur, file,
                        out, e);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

static void test_rds_bootstrap_loads_file(void **state)
{
    (void)state;
    char f[128];
    path_of(f, sizeof(f), "boot.yaml");
    write_rds(f, "v1", "rc", "b");
    struct config *c = must_boot(f);
    assert_int_equal(c->n_rds, 1);
    const struct hcm_cfg *h = c->listeners[0].chains[0].hcm;
    assert_true(h->has_rds);
    assert_int_equal(h->rds_index, 0);
    assert_string_equal(cluster_of(h->routes), "b");
    assert_true(str_eq_lit(c->rds[0].route_config_name, "rc"));
    assert_true(str_eq_lit(c->rds[0].version_info, "v1"));
    assert_true(c->rds[0].hcm == h);
    assert_non_null(c->rds[0].pb);
    assert_int_not_equal(c->rds[0].content_hash, 0);
    config_unref(c);
}

static void test_rds_bootstrap_errors(void **state)
{
    (void)state;
    char f[128], block[512], want[512];
    struct err e;
    path_of(f, sizeof(f), "missing.yaml");
    snprintf(block, sizeof(block),
             "{\"route_config_name\": \"rc\", \"config_source\": {\"path\": \"%s\"}}", f);
    assert_null(load_boot(block, &e));
    snprintf(want, sizeof(want), HCM ".rds: %s: cannot read: No such file or directory", f);
    assert_string_equal(e.msg, want);

    /* an unknown cluster loads (503 NC: RDS does not validate clusters by default), unless
     * validate_clusters asks */
    path_of(f, sizeof(f), "unknown.yaml");
    write_rds(f, "v1", "rc", "nope");
    snprintf(block, sizeof(block),
             "{\"route_config_name\": \"rc\", \"config_source\": {\"path\": \"%s\"}}", f);
    struct config *c = load_boot(block, &e);
    assert_non_null(c);
    config_unref(c);
    write_text(f, "resources:\n"
                  "- \"@type\": " RC_TYPE "\n"
                  "  name: rc\n"
                  "  validate_clusters: true\n"
                  "  virtual_hosts:\n"
                  "  - name: vh\n"
                  "    domains: [\"*\"]\n"
                  "    routes:\n"
                  "    - match: {prefix: /}\n"
                  "      route: {cluster: nope}\n");
    assert_null(load_boot(block, &e));
    snprintf(want, sizeof(want),
             HCM ".rds: %s: resources[0].virtual_hosts[0].routes[0].route.cluster: unknown "
                 "cluster 'nope'",
             f);
    assert_string_equal(e.msg, want);

    assert_null(load_boot("{\"config_source\": {\"path\": \"/x\"}}", &e));
    assert_string_equal(e.msg, HCM ".rds.route_config_name: required");
    assert_null(load_boot("{\"route_config_name\": \"rc\"}", &e));
    assert_string_equal(e.msg, HCM ".rds.config_source: required");
    assert_null(
        load_boot("{\"route_config_name\": \"rc\", \"config_source\": "
                  "{\"path_config_source\": {\"path\": \"/x\", \"watched_directory\": {}}}}",
                  &e));
    assert_string_equal(e.msg, HCM
                        ".rds.config_source.path_config_source.watched_directory.path: required");
    assert_null(load_boot("{\"route_config_name\": \"rc\", \"config_source\": {\"path\": \"/x\", "
                          "\"initial_fetch_timeout\": \"1s\"}}",
                          &e));
    assert_string_equal(e.msg, HCM ".rds.config_source.initial_fetch_timeout: not supported by "
                                   "remora yet with a filesystem config source");
}

static void test_rds_update_rules(void **state)
{
    (void)state;
    char f[128], g[128];
    path_of(f, sizeof(f), "rules.yaml");
    write_rds(f, "v1", "rc", "a");
    struct config *base = must_boot(f);
    uint32_t refs0 = atomic_load(&base->refs);
    struct err e;
    const struct route_snap *snap = NULL;

    /* unchanged content: nothing built */
    assert_int_equal(update(base, f, base->rds[0].content_hash, &snap, &e), RDS_UNCHANGED);

    /* a new table, pointing at the base's clusters, holding a reference on the base */
    path_of(g, sizeof(g), "v2.yaml");
    write_rds(g, "v2", "rc", "b");
    assert_int_equal(update(base, g, base->rds[0].content_hash, &snap, &e), 0);
    assert_non_null(snap);
    assert_true(snap->table->vhosts[0].routes[0].cluster == &base->clusters[1]);
    assert_true(str_eq_lit(snap->version_info, "v2"));
    assert_int_equal(atomic_load(&base->refs), refs0 + 1);
    assert_int_equal(update(base, g, snap->content_hash, &snap, &e), RDS_UNCHANGED);
    rds_snap_unref(snap);
    assert_int_equal(atomic_load(&base->refs), refs0);

    /* an unknown cluster: as in Envoy, RDS does not validate clusters by default (the route
     * answers 503 NC until CDS brings it) */
    write_rds(g, "v3", "rc", "zzz");
    assert_int_equal(update(base, g, 0, &snap, &e), 0);
    assert_null(snap->table->vhosts[0].routes[0].cluster);
    rds_snap_unref(snap);

    /* rejected: unknown cluster with validate_clusters, wrong name, two resources, wrong type,
     * unknown field */
    char want[512];
    write_text(g, "version_info: v3\n"
                  "resources:\n"
                  "- \"@type\": " RC_TYPE "\n"
                  "  name: rc\n"
                  "  validate_clusters: true\n"
                  "  virtual_hosts:\n"
                  "  - name: vh\n"
                  "    domains: [\"*\"]\n"
                  "    routes:\n"
                  "    - match: {prefix: /}\n"
                  "      route: {cluster: zzz}\n");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    snprintf(want, sizeof(want),
             "%s: resources[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'zzz'", g);
    assert_string_equal(e.msg, want);
    write_rds(g, "v3", "other", "a");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    snprintf(want, sizeof(want),
             "%s: resources[0].name: unexpected RDS configuration (expecting 'rc'): 'other'", g);
    assert_string_equal(e.msg, want);
    write_text(g, "resources: [{\"@type\": \"" RC_TYPE "\", name: rc}, {\"@type\": \"" RC_TYPE
                  "\", name: rc}]\n");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    snprintf(want, sizeof(want), "%s: resources: unexpected RDS resource length: 2 (expected 1)",
             g);
    assert_string_equal(e.msg, want);
    write_text(g, "resources: [{\"@type\": "
                  "type.googleapis.com/envoy.config.route.v3.VirtualHost, name: rc}]\n");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "resources[0]: type "));
    write_text(g, "resources: [{\"@type\": \"" RC_TYPE "\", name: rc, bogus: 1}]\n");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    snprintf(want, sizeof(want), "%s: resources[0].bogus: unknown field", g);
    assert_string_equal(e.msg, want);
    write_text(g, "resources: [ {\n");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "YAML"));

    /* empty */
    write_text(g, "version_info: e\nresources: []\n");
    assert_int_equal(update(base, g, 0, &snap, &e), RDS_EMPTY);

    /* unreadable */
    path_of(g, sizeof(g), "nope.yaml");
    assert_int_equal(update(base, g, 0, &snap, &e), -EIO);
    assert_int_equal(atomic_load(&base->refs), refs0);
    config_unref(base);
}

/* A table outlives the bootstrap snapshot's last other reference: the container keeps it. */
static void test_rds_snapshot_keeps_base_alive(void **state)
{
    (void)state;
    char f[128], g[128];
    path_of(f, sizeof(f), "alive.yaml");
    write_rds(f, "v1", "rc", "a");
    struct config *base = must_boot(f);
    path_of(g, sizeof(g), "alive2.yaml");
    write_rds(g, "v2", "rc", "b");
    const struct route_snap *snap = NULL;
    struct err e;
    assert_int_equal(update(base, g, 0, &snap, &e), 0);
    config_unref(base); /* the snapshot's reference is the last one now */
    assert_string_equal(cluster_of(snap->table), "b");
    rds_snap_unref(snap); /* frees both; ASan reports a leak or a use-after-free otherwise */
}

/* A per-route local_ratelimit with stat prefix `prefix` on the only route. */
static void write_rl_rds(const char *path, const char *version, const char *prefix)
{
    char text[2048];
    snprintf(text, sizeof(text),
             "version_info: %s\n"
             "resources:\n"
             "- \"@type\": " RC_TYPE "\n"
             "  name: rc\n"
             "  virtual_hosts:\n"
             "  - name: vh\n"
             "    domains: [\"*\"]\n"
             "    routes:\n"
             "    - match: {prefix: /}\n"
             "      route: {cluster: a}\n"
             "      typed_per_filter_config:\n"
             "        envoy.filters.http.local_ratelimit:\n"
             "          \"@type\": " LRL_TYPE "\n"
             "          stat_prefix: %s\n"
             "          token_bucket: {max_tokens: 5, tokens_per_fill: 5, fill_interval: 1s}\n",
             version, prefix);
    write_text(path, text);
}

/* Workers' stats blocks are sized by the bootstrap: an update whose per-route filter config
 * declares a stat the bootstrap did not is rejected; one reusing the same stats is fine. */
static void test_rds_update_new_filter_stats_rejected(void **state)
{
    (void)state;
    char f[128], g[128], block[512], want[512];
    path_of(f, sizeof(f), "rl.yaml");
    write_rl_rds(f, "v1", "r1");
    snprintf(block, sizeof(block),
             "{\"route_config_name\": \"rc\", \"config_source\": {\"path\": \"%s\"}}", f);
    struct err e;
    struct config *base = load_boot_filters(
        block,
        "{\"name\": \"envoy.filters.http.local_ratelimit\", \"typed_config\": {\"@type\": "
        "\"" LRL_TYPE "\", \"stat_prefix\": \"rl\"}}, " ROUTER,
        &e);
    if (base == NULL) {
        fail_msg("%s", e.msg);
    }
    uint32_t n_defs = base->n_stat_defs;
    const struct route_snap *snap = NULL;
    path_of(g, sizeof(g), "rl2.yaml");
    write_rl_rds(g, "v2", "r1"); /* same stats: a new bucket, no new stat */
    assert_int_equal(update(base, g, 0, &snap, &e), 0);
    assert_non_null(snap->table->vhosts[0].routes[0].filter_cfgs);
    rds_snap_unref(snap);
    write_rl_rds(g, "v3", "r2");
    assert_int_equal(update(base, g, 0, &snap, &e), -EINVAL);
    snprintf(want, sizeof(want),
             "%s: resources[0]: typed_per_filter_config declares stat "
             "'r2.http_local_rate_limit.enabled' that the bootstrap's routes do not: new filter "
             "stats in an RDS update are not supported by remora yet",
             g);
    assert_string_equal(e.msg, want);
    assert_int_equal(base->n_stat_defs, n_defs); /* the base is untouched */
    config_unref(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rds_bootstrap_loads_file),
        cmocka_unit_test(test_rds_bootstrap_errors),
        cmocka_unit_test(test_rds_update_rules),
        cmocka_unit_test(test_rds_snapshot_keeps_base_alive),
        cmocka_unit_test(test_rds_update_new_filter_stats_rejected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
