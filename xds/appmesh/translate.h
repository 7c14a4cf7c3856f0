/* translate: one mesh's App Mesh resources -> Envoy v3 xDS resources for proxyless gRPC
 * clients (gRPC's xds resolver, which dials `xds:///NAME` and asks ADS for a Listener NAME).
 *
 * Pure functions of the stored JSON specs (and a hostname resolver the caller passes in): no
 * store, no socket. The result is a snapshot: per xDS type, the resources of the mesh sorted
 * by name, each packed (the bytes of the resource message itself, i.e. Any.value).
 *
 * Naming (see xds/README.md "xDS"):
 *   Listener            NAME and NAME:PORT for each virtual service NAME and each listener
 *                       port of its provider (router or node)
 *   RouteConfiguration  rds_<mesh>_<listener name>
 *   Cluster, and its ClusterLoadAssignment
 *                       cds_egress_<mesh>_<virtualNode>_<protocol>_<port>, one per listener
 *                       of each virtual node
 * Whatever a spec holds that is not translated is logged (warning) at each translation and
 * listed in the README; nothing is emitted that gRPC clients are known to NACK. */
#pragma once

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* xDS types, in the order pushes go out (xds-wire.md §7: CDS, EDS, LDS, RDS). */
enum xds_type { XDS_CDS, XDS_EDS, XDS_LDS, XDS_RDS, XDS_NTYPES };

extern const char *const xds_type_url[XDS_NTYPES];

/* The type whose URL is `url`, or -1. */
int xds_type_from_url(const char *url);

struct xds_resource {
    char *name;
    uint8_t *data; /* the packed resource message */
    size_t len;
};

struct xds_snapshot {
    char *mesh;
    struct xds_resource *res[XDS_NTYPES]; /* sorted by name, names unique */
    size_t n[XDS_NTYPES];
};

/* One stored resource of the mesh, borrowed: its name, its parent (a route's router, else
 * NULL or "") and its spec. */
struct tr_item {
    const char *name;
    const char *parent;
    json_t *spec;
};

struct tr_mesh {
    const char *mesh;
    struct tr_item *vnodes, *vservices, *vrouters, *routes;
    size_t n_vnodes, n_vservices, n_vrouters, n_routes;
};

/* Resolves `host` to at most `max` IP literals (written NUL-terminated into out[i]); returns
 * how many, 0 when it does not resolve. */
#define TR_ADDR_MAX 46
#define TR_ADDRS_MAX 16
typedef size_t (*tr_resolve_cb)(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max);

/* Translates `m` into a new snapshot (never NULL; free with xds_snapshot_free). */
struct xds_snapshot *translate_mesh(const struct tr_mesh *m, tr_resolve_cb resolve, void *arg);
void xds_snapshot_free(struct xds_snapshot *s);

/* The resource of type `t` named `name`, or NULL. */
const struct xds_resource *xds_snapshot_find(const struct xds_snapshot *s, enum xds_type t,
                                             const char *name);

/* The cluster name of a virtual node's listener (protocol, port): written into `buf`. */
void translate_cluster_name(char *buf, size_t cap, const char *mesh, const char *vnode,
                            const char *protocol, long port);
