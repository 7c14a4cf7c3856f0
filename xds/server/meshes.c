/* meshes: the snapshot cache of remora-xds's xDS server (meshes.h). */
#include "xds/server/meshes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "xds/appmesh/store.h"
#include "xds/server/dns.h"
#include "xds/server/identity.h"

struct snap_entry {
    char *mesh;
    char *vnode; /* a sidecar's or gateway's (flavour B), or NULL: the mesh's gRPC resources */
    enum tr_proxy kind;
    struct xds_snapshot *snap;
    struct snap_entry *next;
};

struct meshes {
    struct ev_loop *loop;
    struct store *st;
    meshes_changed_cb changed;
    void *arg;
    struct dns *dns;
    struct snap_entry *snaps;
    size_t n_snaps;
    struct identities *ids; /* borrowed, or NULL: no CA */
};

void meshes_set_identities(struct meshes *m, struct identities *ids)
{
    m->ids = ids;
}

/* Snapshots cached at once (a mesh's, or a node's): node ids come from clients, so the cache
 * starts over when full (they are recomputed on demand). */
#define SNAPS_MAX 1024
/* How long the loop waits for a name it has not resolved before, per loop iteration (dns.h). */
#define DNS_FIRST_WAIT_MS 250

/* A name resolves to something else, or resolved at last: the snapshots are made again. */
static void dns_changed(void *arg)
{
    struct meshes *m = arg;
    meshes_invalidate(m);
    m->changed(m->arg);
}

struct meshes *meshes_new(struct ev_loop *loop, struct store *st, double dns_refresh_ms,
                          meshes_changed_cb changed, void *arg)
{
    struct meshes *m = xcalloc(1, sizeof(*m));
    m->loop = loop;
    m->st = st;
    m->changed = changed;
    m->arg = arg;
    m->dns = dns_new(loop, dns_refresh_ms, DNS_FIRST_WAIT_MS, dns_changed, m);
    return m;
}

void meshes_invalidate(struct meshes *m)
{
    while (m->snaps) {
        struct snap_entry *e = m->snaps;
        m->snaps = e->next;
        xds_snapshot_free(e->snap);
        free(e->mesh);
        free(e->vnode);
        free(e);
    }
    m->n_snaps = 0;
}

void meshes_free(struct meshes *m)
{
    if (m == NULL) {
        return;
    }
    dns_free(m->dns);
    meshes_invalidate(m);
    free(m);
}

/* Lists every resource of `kind` in `mesh` under `parent` into a growing item array. */
static int load_kind(struct store *st, const char *kind, const char *mesh, const char *parent,
                     struct tr_item **v, size_t *n)
{
    char *after = NULL;
    for (;;) {
        struct store_res *list = NULL;
        size_t cnt = 0;
        bool more = false;
        int rc = store_list(st, kind, mesh, parent, after, 100, &list, &cnt, &more);
        if (rc < 0) {
            free(after);
            return rc;
        }
        *v = xrealloc(*v, (*n + cnt + 1) * sizeof(**v));
        for (size_t i = 0; i < cnt; i++) {
            json_t *spec = json_loads(list[i].spec, 0, NULL);
            (*v)[(*n)++] = (struct tr_item){.name = xstrdup(list[i].name),
                                            .parent = xstrdup(parent),
                                            .spec = spec ? spec : json_object()};
        }
        free(after);
        after = cnt > 0 ? xstrdup(list[cnt - 1].name) : NULL;
        store_res_list_free(list, cnt);
        if (!more || after == NULL) {
            free(after);
            return 0;
        }
    }
}

int meshes_load(struct store *st, const char *mesh, struct tr_mesh *out)
{
    memset(out, 0, sizeof(*out));
    struct store_res r = {0};
    int rc = store_get(st, "mesh", mesh, "", mesh, &r);
    if (rc < 0) {
        store_res_clear(&r);
        return rc;
    }
    out->mesh_spec = r.spec != NULL ? json_loads(r.spec, 0, NULL) : NULL;
    store_res_clear(&r);
    out->mesh = xstrdup(mesh);
    if ((rc = load_kind(st, "virtualNode", mesh, "", &out->vnodes, &out->n_vnodes)) < 0 ||
        (rc = load_kind(st, "virtualService", mesh, "", &out->vservices, &out->n_vservices)) < 0 ||
        (rc = load_kind(st, "virtualRouter", mesh, "", &out->vrouters, &out->n_vrouters)) < 0) {
        meshes_tr_clear(out);
        return rc;
    }
    for (size_t i = 0; i < out->n_vrouters; i++) {
        rc = load_kind(st, "route", mesh, out->vrouters[i].name, &out->routes, &out->n_routes);
        if (rc < 0) {
            meshes_tr_clear(out);
            return rc;
        }
    }
    if ((rc = load_kind(st, "virtualGateway", mesh, "", &out->vgateways, &out->n_vgateways)) < 0) {
        meshes_tr_clear(out);
        return rc;
    }
    for (size_t i = 0; i < out->n_vgateways; i++) {
        rc = load_kind(st, "gatewayRoute", mesh, out->vgateways[i].name, &out->groutes,
                       &out->n_groutes);
        if (rc < 0) {
            meshes_tr_clear(out);
            return rc;
        }
    }
    return 0;
}

static void items_free(struct tr_item *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free((char *)v[i].name);
        free((char *)v[i].parent);
        json_decref(v[i].spec);
    }
    free(v);
}

void meshes_tr_clear(struct tr_mesh *m)
{
    items_free(m->vnodes, m->n_vnodes);
    items_free(m->vservices, m->n_vservices);
    items_free(m->vrouters, m->n_vrouters);
    items_free(m->routes, m->n_routes);
    items_free(m->vgateways, m->n_vgateways);
    items_free(m->groutes, m->n_groutes);
    json_decref(m->mesh_spec);
    free((char *)m->mesh);
    memset(m, 0, sizeof(*m));
}

const struct xds_snapshot *meshes_get(struct meshes *m, const char *mesh)
{
    char *only = NULL;
    if (mesh == NULL) {
        struct store_res *list = NULL;
        size_t n = 0;
        bool more = false;
        if (store_list(m->st, "mesh", NULL, "", NULL, 2, &list, &n, &more) < 0) {
            return NULL;
        }
        if (n == 1) {
            only = xstrdup(list[0].name);
        }
        store_res_list_free(list, n);
        if (only == NULL) {
            return NULL;
        }
        mesh = only;
    }
    const struct xds_snapshot *s = meshes_get_node(m, mesh, NULL);
    free(only);
    return s;
}

const struct xds_snapshot *meshes_get_node(struct meshes *m, const char *mesh, const char *vnode)
{
    return meshes_get_proxy(m, mesh, TR_VIRTUAL_NODE, vnode);
}

const struct xds_snapshot *meshes_get_proxy(struct meshes *m, const char *mesh, enum tr_proxy kind,
                                            const char *vnode)
{
    for (struct snap_entry *e = m->snaps; e != NULL; e = e->next) {
        if (strcmp(e->mesh, mesh) == 0 &&
            (vnode == NULL ? e->vnode == NULL
                           : e->vnode != NULL && e->kind == kind && strcmp(e->vnode, vnode) == 0)) {
            return e->snap;
        }
    }
    struct tr_mesh tm;
    if (meshes_load(m->st, mesh, &tm) < 0) {
        return NULL;
    }
    if (m->n_snaps >= SNAPS_MAX) {
        meshes_invalidate(m);
    }
    struct snap_entry *e = xcalloc(1, sizeof(*e));
    e->mesh = xstrdup(mesh);
    e->vnode = vnode != NULL ? xstrdup(vnode) : NULL;
    e->kind = kind;
    tm.trust_domain = m->ids != NULL ? identities_trust_domain(m->ids) : NULL;
    if (vnode == NULL) {
        e->snap = translate_mesh(&tm, dns_resolve, m->dns);
    } else if (kind == TR_VIRTUAL_GATEWAY) {
        e->snap = translate_gateway(&tm, vnode, dns_resolve, m->dns);
    } else {
        e->snap = translate_sidecar(&tm, vnode, dns_resolve, m->dns);
    }
    if (vnode != NULL && m->ids != NULL) {
        identities_fill(m->ids, mesh, kind, vnode, e->snap);
    } else if (vnode != NULL && e->snap->n_secrets == 0 && tm.n_vnodes > 0) {
        LOG_D("xds: mesh %s: no --ca-dir: sidecar %s gets no Secrets", mesh, vnode);
    }
    meshes_tr_clear(&tm);
    e->next = m->snaps;
    m->snaps = e;
    m->n_snaps++;
    return e->snap;
}
