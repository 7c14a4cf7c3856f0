/* meshes: the xDS snapshots of the stored meshes, translated on demand and cached until the
 * next API write (meshes_invalidate) or until a name the translation resolved (virtual node
 * hostnames, TCP backends' service names) resolves to something else (dns.h: names resolve on
 * a thread of their own, re-resolved every `dns_refresh_ms`); `changed` is then called so the
 * streams get the new endpoints. */
#pragma once

#include "xds/appmesh/translate.h"

struct ev_loop;
struct meshes;
struct store;

typedef void (*meshes_changed_cb)(void *arg);

struct meshes *meshes_new(struct ev_loop *loop, struct store *st, double dns_refresh_ms,
                          meshes_changed_cb changed, void *arg);
void meshes_free(struct meshes *m);

/* The snapshot of `mesh`; NULL `mesh` means the only mesh when exactly one exists. Returns
 * NULL when there is no such mesh. Valid until the next meshes_invalidate, meshes_get or
 * meshes_get_node (a full cache starts over). */
const struct xds_snapshot *meshes_get(struct meshes *m, const char *mesh);

/* The snapshot of the sidecar of virtual node `vnode` of `mesh` (flavour B; `vnode` NULL: the
 * mesh's, as meshes_get). Cached per (mesh, node) until the next meshes_invalidate. NULL when
 * there is no such mesh; an empty snapshot when there is no such node. */
const struct xds_snapshot *meshes_get_node(struct meshes *m, const char *mesh, const char *vnode);
/* The same for a virtual node or (TR_VIRTUAL_GATEWAY) a virtual gateway `name`. */
const struct xds_snapshot *meshes_get_proxy(struct meshes *m, const char *mesh, enum tr_proxy kind,
                                            const char *name);

/* With a mesh CA (remora-xds --ca-dir; `ids` borrowed, outliving `m`): sidecar snapshots are
 * translated with its trust domain (TLS over SDS) and carry their Secrets (identity.h). */
struct identities;
void meshes_set_identities(struct meshes *m, struct identities *ids);

/* Drops every snapshot (after a write through the API). */
void meshes_invalidate(struct meshes *m);

/* Loads one mesh's resources from the store into `out` (specs parsed; free with
 * meshes_tr_clear). Returns 0, -ENOENT (no such mesh) or -EIO. */
int meshes_load(struct store *st, const char *mesh, struct tr_mesh *out);
void meshes_tr_clear(struct tr_mesh *m);
