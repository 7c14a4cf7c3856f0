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
 * listed in the README; nothing is emitted that gRPC clients are known to NACK.
 *
 * Flavour B, translate_sidecar: the resources App Mesh's control plane gives the Envoy of one
 * virtual node, behind ECS's iptables capture (inbound app ports -> 15000, outbound -> 15001):
 *   Listener            lds_ingress_0.0.0.0_15000: original_dst, a chain per listener of the
 *                       node by destination_port (http/http2/grpc: HCM with RDS
 *                       rds_ingress_http_<port>; tcp: tcp_proxy to the local cluster);
 *                       lds_egress_0.0.0.0_15001: original_dst, a chain per destination port
 *                       of the backends' HTTP listeners (HCM, RDS rds_egress_http_<port>), a
 *                       chain per TCP listener by port and the service name's addresses, and
 *                       with egressFilter ALLOW_ALL a default chain to the passthrough, with
 *                       DROP_ALL a chain for TLS to *.amazonaws.com (by SNI) to it
 *   RouteConfiguration  rds_ingress_http_<port> (all to the local cluster, the listener's
 *                       timeouts); rds_egress_http_<port> (a virtual host per backend service,
 *                       domains NAME and NAME:PORT; ALLOW_ALL adds "*" to the passthrough,
 *                       DROP_ALL "*.amazonaws.com")
 *   Cluster             cds_ingress_<mesh>_<vn>_<protocol>_<port> (STATIC 127.0.0.1:<port>,
 *                       the connectionPool as circuit breakers); cds_egress_... of every node
 *                       the backends reach (as flavour A's names, with HTTP/2 for http2/grpc
 *                       listeners and the target listener's healthCheck and outlierDetection);
 *                       cds_egress_passthrough (ORIGINAL_DST)
 *   ClusterLoadAssignment  of each cds_egress_ cluster, as flavour A
 *
 * Flavour B for a virtual gateway, translate_gateway: App Mesh's standalone gateway Envoy
 * (no iptables; it binds its listeners' ports):
 *   Listener            lds_ingress_0.0.0.0_<port> per gateway listener (0.0.0.0:<port>, an
 *                       HCM with RDS rds_ingress_http_<port>, the listener's tls as a sidecar's)
 *   RouteConfiguration  rds_ingress_http_<port>: one virtual host "*" holding the gateway routes
 *                       of that port in App Mesh's order, each expanded into its target
 *                       service's routes (hostname as an :authority matcher; rewrites)
 *   Cluster, ClusterLoadAssignment
 *                       cds_egress_... of every node the targets reach, as a sidecar's, with
 *                       the gateway's backendDefaults.clientPolicy
 * Everything emitted is something remora's own config builder accepts (unit-tested). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* xDS types, in the order pushes go out (xds-wire.md §7: CDS, EDS, LDS, RDS). */
enum xds_type { XDS_CDS, XDS_EDS, XDS_LDS, XDS_RDS, XDS_SDS, XDS_NTYPES };

extern const char *const xds_type_url[XDS_NTYPES];

/* The type whose URL is `url`, or -1. */
int xds_type_from_url(const char *url);

struct xds_resource {
    char *name;
    uint8_t *data; /* the packed resource message */
    size_t len;
};

/* A Secret a sidecar's TLS contexts name over ADS (SdsSecretConfig with `ads {}`): its
 * identity (a certificate) or the mesh's trust bundle (a validation context). remora-xds
 * serves them (xds/server/identity.h); translate only names them. */
struct xds_secret_ref {
    char *name;
    bool ca; /* a validation context (trust bundle), else a certificate (the node's identity) */
};

/* The App Mesh resource an Envoy node stands for (flavour B). */
enum tr_proxy { TR_VIRTUAL_NODE, TR_VIRTUAL_GATEWAY };

struct xds_snapshot {
    char *mesh;
    char *vnode; /* flavour B: the virtual node whose sidecar this is, or the virtual gateway
                  * (`gateway`); NULL for flavour A */
    bool gateway;
    struct xds_resource *res[XDS_NTYPES]; /* sorted by name, names unique; XDS_SDS: filled by
                                           * remora-xds (meshes.c), never by translate */
    size_t n[XDS_NTYPES];
    struct xds_secret_ref *secrets; /* flavour B with TLS: the secrets named, unique */
    size_t n_secrets;
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
    /* The SPIFFE trust domain of remora-xds's CA (--ca-dir), or NULL without one: then TLS
     * whose certificate or trust comes over SDS is not translated (fail closed, logged). */
    const char *trust_domain;
    json_t *mesh_spec; /* the mesh's spec (egressFilter); may be NULL */
    struct tr_item *vnodes, *vservices, *vrouters, *routes;
    size_t n_vnodes, n_vservices, n_vrouters, n_routes;
    struct tr_item *vgateways, *groutes; /* a gateway route's parent: its virtual gateway */
    size_t n_vgateways, n_groutes;
};

/* Resolves `host` to at most `max` IP literals (written NUL-terminated into out[i]); returns
 * how many, 0 when it does not resolve. */
#define TR_ADDR_MAX 46
#define TR_ADDRS_MAX 16
typedef size_t (*tr_resolve_cb)(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max);

/* Translates `m` into a new snapshot (never NULL; free with xds_snapshot_free). */
struct xds_snapshot *translate_mesh(const struct tr_mesh *m, tr_resolve_cb resolve, void *arg);

/* Flavour B: the resources of the sidecar of virtual node `vnode` of `m` (never NULL; empty
 * when there is no such node). See xds/README.md "Sidecars". */
#define TR_INGRESS_LISTENER "lds_ingress_0.0.0.0_15000"
#define TR_EGRESS_LISTENER "lds_egress_0.0.0.0_15001"
#define TR_PASSTHROUGH_CLUSTER "cds_egress_passthrough"
struct xds_snapshot *translate_sidecar(const struct tr_mesh *m, const char *vnode,
                                       tr_resolve_cb resolve, void *arg);

/* Flavour B for virtual gateway `vgateway` of `m` (never NULL; empty when there is no such
 * gateway). See xds/README.md "Virtual gateways". */
struct xds_snapshot *translate_gateway(const struct tr_mesh *m, const char *vgateway,
                                       tr_resolve_cb resolve, void *arg);

/* Whether node id `id` names a virtual node or a virtual gateway the App Mesh way,
 * `mesh/<m>/virtualNode/<vn>`, `mesh/<m>/virtualGateway/<vg>` or their ARNs
 * (`arn:aws:appmesh:<region>:<account>:mesh/...`): then sets *mesh, *name (free them) and
 * *kind. */
bool translate_proxy_id(const char *id, char **mesh, char **name, enum tr_proxy *kind);

/* Whether node id `id` names a virtual node the App Mesh way, `mesh/<m>/virtualNode/<vn>` or
 * `arn:aws:appmesh:<region>:<account>:mesh/<m>/virtualNode/<vn>`: then sets *mesh and *vnode
 * (free them). */
bool translate_node_id(const char *id, char **mesh, char **vnode);
void xds_snapshot_free(struct xds_snapshot *s);

/* A virtual node's SPIFFE ID, spiffe://<td>/mesh/<mesh>/virtualNode/<vnode>, into `buf`. */
void translate_spiffe_id(char *buf, size_t cap, const char *td, const char *mesh,
                         const char *vnode);
/* The same for either kind (virtualGateway/<vg> for a gateway). */
void translate_proxy_spiffe_id(char *buf, size_t cap, const char *td, const char *mesh,
                               enum tr_proxy kind, const char *name);

/* The name of the mesh CA's trust bundle secret: spiffe://<td>. */
void translate_bundle_name(char *buf, size_t cap, const char *td);

/* The resource of type `t` named `name`, or NULL. */
const struct xds_resource *xds_snapshot_find(const struct xds_snapshot *s, enum xds_type t,
                                             const char *name);

/* The cluster name of a virtual node's listener (protocol, port): written into `buf`. */
void translate_cluster_name(char *buf, size_t cap, const char *mesh, const char *vnode,
                            const char *protocol, long port);
/* A sidecar's cluster of its local app's listener: cds_ingress_<mesh>_<vn>_<protocol>_<port>. */
void translate_ingress_cluster_name(char *buf, size_t cap, const char *mesh, const char *vnode,
                                    const char *protocol, long port);
