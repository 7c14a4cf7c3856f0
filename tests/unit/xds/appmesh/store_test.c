/* Unit tests for store: rows round-trip through SQLite and survive closing and reopening the
 * file, keys are unique, listing pages by name, references and children are found, and a
 * database from a newer schema is refused. Each test works in its own temporary directory. */
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
#include <sqlite3.h>

#include "xds/appmesh/store.h"

struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/remora-store-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    snprintf(f->path, sizeof(f->path), "%s/db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) {
        return -1;
    }
    free(f);
    return 0;
}

static struct store *open_ok(const char *path)
{
    struct store *s = NULL;
    struct err err;
    err_clear(&err);
    int rc = store_open(&s, path, &err);
    if (rc != 0) {
        fail_msg("store_open: %s", err.msg);
    }
    return s;
}

static struct store_res row(const char *kind, const char *mesh, const char *parent,
                            const char *name, int64_t version)
{
    return (struct store_res){
        .kind = (char *)kind,
        .mesh = (char *)mesh,
        .parent = (char *)parent,
        .name = (char *)name,
        .spec = "{\"a\":1}",
        .tags = "[]",
        .uid = "u-1",
        .status = "ACTIVE",
        .client_token = "tok",
        .version = version,
        .created_ms = 1000,
        .updated_ms = 2000,
    };
}

static void test_store_round_trip_and_restart(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    struct store_res r = row("virtualNode", "m", "", "vn", 1);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_insert(s, &r), 0);
    assert_int_equal(store_insert(s, &r), -EEXIST);
    assert_int_equal(store_commit(s), 0);
    r.version = 2;
    r.spec = "{\"b\":2}";
    assert_int_equal(store_update(s, &r), 0);
    struct store_res missing = row("virtualNode", "m", "", "other", 1);
    assert_int_equal(store_update(s, &missing), -ENOENT);
    store_free(s);

    /* Reopened: the update is there, every column intact. */
    s = open_ok(f->path);
    struct store_res got = {0};
    assert_int_equal(store_get(s, "virtualNode", "m", "", "vn", &got), 0);
    assert_string_equal(got.spec, "{\"b\":2}");
    assert_string_equal(got.uid, "u-1");
    assert_string_equal(got.client_token, "tok");
    assert_string_equal(got.status, "ACTIVE");
    assert_int_equal(got.version, 2);
    assert_int_equal(got.created_ms, 1000);
    assert_int_equal(got.updated_ms, 2000);
    assert_int_equal(store_get(s, "virtualNode", "m", "", "nope", &got), -ENOENT);
    assert_int_equal(store_delete(s, "virtualNode", "m", "", "vn"), 0);
    assert_int_equal(store_delete(s, "virtualNode", "m", "", "vn"), -ENOENT);
    store_res_clear(&got);
    store_free(s);
}

static void test_store_rollback_discards(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    struct store_res r = row("mesh", "m", "", "m", 1);
    assert_int_equal(store_begin(s), 0);
    assert_int_equal(store_insert(s, &r), 0);
    store_rollback(s);
    struct store_res got = {0};
    assert_int_equal(store_get(s, "mesh", "m", "", "m", &got), -ENOENT);
    store_free(s);
}

static void test_store_list_pages_by_name(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    const char *names[] = {"e", "a", "d", "b", "c"};
    for (size_t i = 0; i < 5; i++) {
        struct store_res r = row("route", "m", "r1", names[i], 1);
        assert_int_equal(store_insert(s, &r), 0);
    }
    struct store_res other = row("route", "m", "r2", "a0", 1); /* another router */
    assert_int_equal(store_insert(s, &other), 0);
    struct store_res *list;
    size_t n;
    bool more;
    assert_int_equal(store_list(s, "route", "m", "r1", NULL, 2, &list, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_string_equal(list[0].name, "a");
    assert_string_equal(list[1].name, "b");
    store_res_list_free(list, n);
    /* After "b", with "bb" inserted meanwhile: the page continues by name. */
    struct store_res bb = row("route", "m", "r1", "bb", 1);
    assert_int_equal(store_insert(s, &bb), 0);
    assert_int_equal(store_list(s, "route", "m", "r1", "b", 2, &list, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_true(more);
    assert_string_equal(list[0].name, "bb");
    assert_string_equal(list[1].name, "c");
    store_res_list_free(list, n);
    assert_int_equal(store_list(s, "route", "m", "r1", "c", 2, &list, &n, &more), 0);
    assert_int_equal(n, 2);
    assert_false(more);
    assert_string_equal(list[1].name, "e");
    store_res_list_free(list, n);
    store_free(s);
}

static void test_store_refs_and_children(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    struct store_res who = {0};
    assert_int_equal(store_child_find(s, "m", NULL, NULL, &who), -ENOENT);
    struct store_res mesh = row("mesh", "m", "", "m", 1);
    struct store_res vs = row("virtualService", "m", "", "svc", 1);
    assert_int_equal(store_insert(s, &mesh), 0);
    assert_int_equal(store_child_find(s, "m", NULL, NULL, &who), -ENOENT);
    assert_int_equal(store_insert(s, &vs), 0);
    assert_int_equal(store_child_find(s, "m", NULL, NULL, &who), 0);
    assert_string_equal(who.name, "svc");
    struct store_ref refs[] = {{"virtualRouter", "vr"}};
    assert_int_equal(store_refs_set(s, "virtualService", "m", "", "svc", refs, 1), 0);
    assert_int_equal(store_ref_find(s, "m", "virtualRouter", "vr", &who), 0);
    assert_string_equal(who.kind, "virtualService");
    assert_string_equal(who.name, "svc");
    assert_int_equal(store_ref_find(s, "other", "virtualRouter", "vr", &who), -ENOENT);
    /* Deleting the referrer drops its references. */
    assert_int_equal(store_delete(s, "virtualService", "m", "", "svc"), 0);
    assert_int_equal(store_ref_find(s, "m", "virtualRouter", "vr", &who), -ENOENT);
    store_res_clear(&who);
    store_free(s);
}

static void test_store_refuses_newer_schema(void **state)
{
    struct fixture *f = *state;
    struct store *s = open_ok(f->path);
    store_free(s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    struct err err;
    err_clear(&err);
    assert_int_equal(store_open(&s, f->path, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "schema version 99 is newer"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_round_trip_and_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_rollback_discards, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_list_pages_by_name, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refs_and_children, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_refuses_newer_schema, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
