/* store: App Mesh resources in SQLite (see store.h). One connection, prepared statements,
 * WAL journal (readers never block the writer, and a crash loses at most the transaction in
 * flight), synchronous=NORMAL (WAL's durable-at-checkpoint setting; a power loss may drop the
 * last commits, never corrupt the file). */
#include "xds/appmesh/store.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

enum stmt_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_GET,
    ST_INSERT,
    ST_UPDATE,
    ST_DELETE,
    ST_DELETE_REFS,
    ST_LIST,
    ST_LIST_MESHES,
    ST_REF_ADD,
    ST_REF_FIND,
    ST_CHILD_ANY,
    ST_CHILD_KIND,
    ST_N,
};

#define COLS                                                                                       \
    "kind, mesh, parent, name, spec, tags, uid, status, client_token, version, created_ms, "       \
    "updated_ms"

static const char *const stmt_sql[ST_N] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_GET] = "SELECT " COLS " FROM resources WHERE kind=?1 AND mesh=?2 AND parent=?3 AND name=?4",
    [ST_INSERT] = "INSERT INTO resources(" COLS ") VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12)",
    [ST_UPDATE] = "UPDATE resources SET spec=?5, tags=?6, uid=?7, status=?8, client_token=?9, "
                  "version=?10, created_ms=?11, updated_ms=?12 "
                  "WHERE kind=?1 AND mesh=?2 AND parent=?3 AND name=?4",
    [ST_DELETE] = "DELETE FROM resources WHERE kind=?1 AND mesh=?2 AND parent=?3 AND name=?4",
    [ST_DELETE_REFS] = "DELETE FROM refs WHERE kind=?1 AND mesh=?2 AND parent=?3 AND name=?4",
    [ST_LIST] = "SELECT " COLS " FROM resources WHERE kind=?1 AND mesh=?2 AND parent=?3 "
                "AND name>?4 ORDER BY name LIMIT ?5",
    [ST_LIST_MESHES] = "SELECT " COLS " FROM resources WHERE kind=?1 AND name>?4 "
                       "ORDER BY name LIMIT ?5",
    [ST_REF_ADD] = "INSERT OR IGNORE INTO refs(kind, mesh, parent, name, ref_kind, ref_name) "
                   "VALUES (?1,?2,?3,?4,?5,?6)",
    [ST_REF_FIND] = "SELECT kind, parent, name FROM refs WHERE mesh=?1 AND ref_kind=?2 "
                    "AND ref_name=?3 ORDER BY kind, parent, name LIMIT 1",
    [ST_CHILD_ANY] = "SELECT kind, parent, name FROM resources WHERE mesh=?1 AND kind<>'mesh' "
                     "ORDER BY kind, parent, name LIMIT 1",
    [ST_CHILD_KIND] = "SELECT kind, parent, name FROM resources WHERE mesh=?1 AND kind=?2 "
                      "AND parent=?3 ORDER BY name LIMIT 1",
};

static const char schema_sql[] =
    "CREATE TABLE resources ("
    " kind TEXT NOT NULL, mesh TEXT NOT NULL, parent TEXT NOT NULL, name TEXT NOT NULL,"
    " spec TEXT NOT NULL, tags TEXT NOT NULL, uid TEXT NOT NULL, status TEXT NOT NULL,"
    " client_token TEXT NOT NULL, version INTEGER NOT NULL, created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " PRIMARY KEY (kind, mesh, parent, name)) WITHOUT ROWID;"
    "CREATE TABLE refs ("
    " kind TEXT NOT NULL, mesh TEXT NOT NULL, parent TEXT NOT NULL, name TEXT NOT NULL,"
    " ref_kind TEXT NOT NULL, ref_name TEXT NOT NULL,"
    " PRIMARY KEY (kind, mesh, parent, name, ref_kind, ref_name)) WITHOUT ROWID;"
    "CREATE INDEX refs_target ON refs (mesh, ref_kind, ref_name);"
    "PRAGMA user_version = 1;";

struct store {
    sqlite3 *db;              /* owned */
    sqlite3_stmt *stmt[ST_N]; /* owned, prepared at open */
    bool in_tx;
};

static int db_fail(struct store *s, const char *what)
{
    LOG_E("store: %s: %s", what, sqlite3_errmsg(s->db));
    return -EIO;
}

static sqlite3_stmt *stmt(struct store *s, enum stmt_id id)
{
    sqlite3_stmt *st = s->stmt[id];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void bind_key(sqlite3_stmt *st, const char *kind, const char *mesh, const char *parent,
                     const char *name)
{
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, mesh, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, parent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, name, -1, SQLITE_STATIC);
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return xstrdup(t != NULL ? (const char *)t : "");
}

static void read_row(sqlite3_stmt *st, struct store_res *r)
{
    r->kind = col_text(st, 0);
    r->mesh = col_text(st, 1);
    r->parent = col_text(st, 2);
    r->name = col_text(st, 3);
    r->spec = col_text(st, 4);
    r->tags = col_text(st, 5);
    r->uid = col_text(st, 6);
    r->status = col_text(st, 7);
    r->client_token = col_text(st, 8);
    r->version = sqlite3_column_int64(st, 9);
    r->created_ms = sqlite3_column_int64(st, 10);
    r->updated_ms = sqlite3_column_int64(st, 11);
}

void store_res_clear(struct store_res *r)
{
    free(r->kind);
    free(r->mesh);
    free(r->parent);
    free(r->name);
    free(r->spec);
    free(r->tags);
    free(r->uid);
    free(r->status);
    free(r->client_token);
    memset(r, 0, sizeof(*r));
}

void store_res_list_free(struct store_res *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        store_res_clear(&list[i]);
    }
    free(list);
}

static int exec(struct store *s, const char *path, const char *sql, struct err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(err, NULL, "%s: %s", path, msg != NULL ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -EIO;
    }
    return 0;
}

static int user_version(struct store *s, int *v)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) {
        return -EIO;
    }
    int rc = sqlite3_step(st);
    *v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -EIO;
}

int store_open(struct store **out, const char *path, struct err *err)
{
    struct store *s = xcalloc(1, sizeof(*s));
    int rc = -EIO;
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        err_set(err, NULL, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        goto fail;
    }
    /* Another process holding the write lock (a backup, the sqlite3 shell) is waited for, not
     * failed on at once. */
    sqlite3_busy_timeout(s->db, 2000);
    if (exec(s, path, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON",
             err) < 0) {
        goto fail;
    }
    int v;
    if (user_version(s, &v) < 0) {
        err_set(err, NULL, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    if (v > STORE_SCHEMA_VERSION) {
        err_set(err, NULL, "%s: schema version %d is newer than this remora-xds supports (%d)",
                path, v, STORE_SCHEMA_VERSION);
        rc = -EINVAL;
        goto fail;
    }
    if (v == 0) {
        if (exec(s, path, "BEGIN IMMEDIATE", err) < 0) {
            goto fail;
        }
        if (exec(s, path, schema_sql, err) < 0) {
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
            goto fail;
        }
        if (exec(s, path, "COMMIT", err) < 0) {
            goto fail;
        }
    }
    for (int i = 0; i < ST_N; i++) {
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                               NULL) != SQLITE_OK) {
            err_set(err, NULL, "%s: preparing \"%s\": %s", path, stmt_sql[i],
                    sqlite3_errmsg(s->db));
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    store_free(s);
    return rc;
}

void store_free(struct store *s)
{
    if (s == NULL) {
        return;
    }
    for (int i = 0; i < ST_N; i++) {
        sqlite3_finalize(s->stmt[i]);
    }
    sqlite3_close(s->db);
    free(s);
}

static int step_done(struct store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : db_fail(s, what);
}

int store_begin(struct store *s)
{
    int rc = step_done(s, stmt(s, ST_BEGIN), "begin");
    s->in_tx = rc == 0;
    return rc;
}

int store_commit(struct store *s)
{
    int rc = step_done(s, stmt(s, ST_COMMIT), "commit");
    if (rc == 0) {
        s->in_tx = false;
    }
    return rc;
}

void store_rollback(struct store *s)
{
    if (s->in_tx) {
        step_done(s, stmt(s, ST_ROLLBACK), "rollback");
        s->in_tx = false;
    }
}

int store_get(struct store *s, const char *kind, const char *mesh, const char *parent,
              const char *name, struct store_res *out)
{
    store_res_clear(out);
    sqlite3_stmt *st = stmt(s, ST_GET);
    bind_key(st, kind, mesh, parent, name);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        read_row(st, out);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? -ENOENT : db_fail(s, "get");
}

static void bind_row(sqlite3_stmt *st, const struct store_res *r)
{
    bind_key(st, r->kind, r->mesh, r->parent, r->name);
    sqlite3_bind_text(st, 5, r->spec, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, r->tags, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, r->uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, r->status, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, r->client_token, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 10, r->version);
    sqlite3_bind_int64(st, 11, r->created_ms);
    sqlite3_bind_int64(st, 12, r->updated_ms);
}

int store_insert(struct store *s, const struct store_res *r)
{
    sqlite3_stmt *st = stmt(s, ST_INSERT);
    bind_row(st, r);
    int rc = sqlite3_step(st);
    int ext = sqlite3_extended_errcode(s->db);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) {
        return 0;
    }
    if (ext == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return -EEXIST;
    }
    return db_fail(s, "insert");
}

int store_update(struct store *s, const struct store_res *r)
{
    sqlite3_stmt *st = stmt(s, ST_UPDATE);
    bind_row(st, r);
    int rc = step_done(s, st, "update");
    if (rc < 0) {
        return rc;
    }
    return sqlite3_changes(s->db) == 1 ? 0 : -ENOENT;
}

int store_delete(struct store *s, const char *kind, const char *mesh, const char *parent,
                 const char *name)
{
    sqlite3_stmt *st = stmt(s, ST_DELETE);
    bind_key(st, kind, mesh, parent, name);
    int rc = step_done(s, st, "delete");
    if (rc < 0) {
        return rc;
    }
    if (sqlite3_changes(s->db) != 1) {
        return -ENOENT;
    }
    st = stmt(s, ST_DELETE_REFS);
    bind_key(st, kind, mesh, parent, name);
    return step_done(s, st, "delete refs");
}

int store_list(struct store *s, const char *kind, const char *mesh, const char *parent,
               const char *after, int limit, struct store_res **out, size_t *n, bool *more)
{
    bool meshes = strcmp(kind, "mesh") == 0;
    sqlite3_stmt *st = stmt(s, meshes ? ST_LIST_MESHES : ST_LIST);
    sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
    if (!meshes) {
        sqlite3_bind_text(st, 2, mesh, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, parent, -1, SQLITE_STATIC);
    }
    sqlite3_bind_text(st, 4, after != NULL ? after : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, limit + 1); /* one more tells whether a next page exists */
    struct store_res *list = xcalloc((size_t)limit + 1, sizeof(*list));
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        read_row(st, &list[count++]);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        store_res_list_free(list, count);
        return db_fail(s, "list");
    }
    *more = count > (size_t)limit;
    if (*more) {
        store_res_clear(&list[--count]);
    }
    *out = list;
    *n = count;
    return 0;
}

int store_refs_set(struct store *s, const char *kind, const char *mesh, const char *parent,
                   const char *name, const struct store_ref *refs, size_t n_refs)
{
    sqlite3_stmt *st = stmt(s, ST_DELETE_REFS);
    bind_key(st, kind, mesh, parent, name);
    if (step_done(s, st, "delete refs") < 0) {
        return -EIO;
    }
    for (size_t i = 0; i < n_refs; i++) {
        st = stmt(s, ST_REF_ADD);
        bind_key(st, kind, mesh, parent, name);
        sqlite3_bind_text(st, 5, refs[i].kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, refs[i].name, -1, SQLITE_STATIC);
        if (step_done(s, st, "add ref") < 0) {
            return -EIO;
        }
    }
    return 0;
}

static int find_one(struct store *s, sqlite3_stmt *st, struct store_res *who, const char *what)
{
    store_res_clear(who);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        who->kind = col_text(st, 0);
        who->parent = col_text(st, 1);
        who->name = col_text(st, 2);
        sqlite3_reset(st);
        return 0;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? -ENOENT : db_fail(s, what);
}

int store_ref_find(struct store *s, const char *mesh, const char *ref_kind, const char *ref_name,
                   struct store_res *who)
{
    sqlite3_stmt *st = stmt(s, ST_REF_FIND);
    sqlite3_bind_text(st, 1, mesh, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, ref_kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, ref_name, -1, SQLITE_STATIC);
    return find_one(s, st, who, "ref find");
}

int store_child_find(struct store *s, const char *mesh, const char *kind, const char *parent,
                     struct store_res *who)
{
    sqlite3_stmt *st = stmt(s, kind == NULL ? ST_CHILD_ANY : ST_CHILD_KIND);
    sqlite3_bind_text(st, 1, mesh, -1, SQLITE_STATIC);
    if (kind != NULL) {
        sqlite3_bind_text(st, 2, kind, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, parent, -1, SQLITE_STATIC);
    }
    return find_one(s, st, who, "child find");
}
