/* store: remora-xds's persistent App Mesh resources, in one SQLite file (WAL mode).
 *
 * Every resource kind lives in one table keyed by (kind, mesh, parent, name): `parent` is the
 * virtual router of a route or the virtual gateway of a gateway route, "" otherwise; a mesh's
 * own row has mesh = name. The spec and tags are JSON text exactly as validated; the metadata
 * (uid, version, times, status) and the last write's clientToken sit beside them. A second
 * table holds the references between resources (a virtual service's provider, a route's
 * targets), so "is this resource in use" is one indexed lookup. The schema version is
 * `PRAGMA user_version` (STORE_SCHEMA_VERSION).
 *
 * All statements are prepared once at open. The store is used from one thread (the server's
 * loop); callers group the statements of one API write in store_begin()/store_commit(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"

#define STORE_SCHEMA_VERSION 1

struct store;

/* A resource row. Every string is owned (freed by store_res_clear). */
struct store_res {
    char *kind;   /* "mesh", "virtualNode", ... (api.c's kind names) */
    char *mesh;   /* the mesh's name */
    char *parent; /* router or gateway name, "" for other kinds */
    char *name;
    char *spec;                     /* JSON object text */
    char *tags;                     /* JSON array text of {key, value} */
    char *uid;                      /* a random UUID, fixed at create */
    char *status;                   /* "ACTIVE" */
    char *client_token;             /* of the last create or update, "" when none */
    int64_t version;                /* 1 at create, +1 per update */
    int64_t created_ms, updated_ms; /* Unix epoch milliseconds */
};

/* A reference from a resource to another in the same mesh. */
struct store_ref {
    const char *kind; /* the referenced resource's kind */
    const char *name;
};

/* Opens (creating if missing) the database at `path` and prepares the statements. A file
 * whose user_version is newer than STORE_SCHEMA_VERSION is refused. Returns 0 and *out, or
 * -EIO/-EINVAL with `err` set. */
int store_open(struct store **out, const char *path, struct err *err);
void store_free(struct store *s);

/* Transactions (BEGIN IMMEDIATE). Return 0 or -EIO. store_rollback is safe to call when no
 * transaction is open. */
int store_begin(struct store *s);
int store_commit(struct store *s);
void store_rollback(struct store *s);

/* Reads one resource into `out` (cleared first). Returns 0, -ENOENT or -EIO. */
int store_get(struct store *s, const char *kind, const char *mesh, const char *parent,
              const char *name, struct store_res *out);

/* Inserts `r` (-EEXIST when the key exists) or rewrites the row with `r`'s key (-ENOENT when
 * there is none). Return 0 or a negative errno (-EIO for SQLite failures). */
int store_insert(struct store *s, const struct store_res *r);
int store_update(struct store *s, const struct store_res *r);

/* Deletes the row and its outgoing references. Returns 0, -ENOENT or -EIO. */
int store_delete(struct store *s, const char *kind, const char *mesh, const char *parent,
                 const char *name);

/* Lists resources of `kind` in `mesh` (any mesh for "mesh") under `parent`, by name, starting
 * after the name `after` (NULL: from the first), at most `limit`. Returns 0 with *out (owned:
 * store_res_list_free), *n and *more (true when rows remain after the last one returned), or
 * -EIO. */
int store_list(struct store *s, const char *kind, const char *mesh, const char *parent,
               const char *after, int limit, struct store_res **out, size_t *n, bool *more);
void store_res_list_free(struct store_res *list, size_t n);

/* Replaces the references of the resource (kind, mesh, parent, name) by `refs`. 0 or -EIO. */
int store_refs_set(struct store *s, const char *kind, const char *mesh, const char *parent,
                   const char *name, const struct store_ref *refs, size_t n_refs);

/* Finds a resource in `mesh` that references (ref_kind, ref_name). Returns 0 with `who` filled
 * (kind, parent, name only), -ENOENT when none does, or -EIO. */
int store_ref_find(struct store *s, const char *mesh, const char *ref_kind, const char *ref_name,
                   struct store_res *who);

/* Finds a child resource: with `kind` NULL any resource of `mesh` other than the mesh itself,
 * else one of `kind` under `parent`. Returns 0 with `who` (kind, parent, name), -ENOENT or
 * -EIO. */
int store_child_find(struct store *s, const char *mesh, const char *kind, const char *parent,
                     struct store_res *who);

void store_res_clear(struct store_res *r);
