/* identity: remora-xds's mesh CA at work (--ca-dir, certs/ca.h): the X.509-SVIDs of the
 * sidecars it serves, and the Secrets (SDS over ADS) that carry them.
 *
 * Each sidecar node (mesh/<m>/virtualNode/<vn>) gets one identity,
 * spiffe://<trust domain>/mesh/<m>/virtualNode/<vn>, issued on first use (mesh_ca_issue, a
 * fresh key, valid for the configured lifetime) and cached per node; once half its lifetime
 * has passed it is issued anew and `changed(arg)` runs so the streams push the new Secret (an
 * SDS rotation: the proxies' new handshakes use it, open connections keep theirs). The cache
 * holds at most IDENTITY_MAX nodes (node names come from clients: a full cache starts over).
 *
 * Secrets of a node: a certificate secret (tls_certificate {certificate_chain, private_key},
 * inline) under the node's SPIFFE ID and under every certificate name its translated resources
 * name (xds_snapshot.secrets), and a validation secret (validation_context {trusted_ca}: the
 * CA) under spiffe://<trust domain> and every validation name they name.
 *
 * Thread: remora-xds's loop. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "xds/appmesh/translate.h"

struct ev_loop;
struct mesh_ca;
struct identities;

#define IDENTITY_MAX 4096

/* Takes `ca`. `lifetime_s` >= 120. */
struct identities *identities_new(struct ev_loop *loop, struct mesh_ca *ca, uint64_t lifetime_s,
                                  void (*changed)(void *arg), void *arg);
void identities_free(struct identities *ids);

const char *identities_trust_domain(const struct identities *ids);

/* Fills s->res[XDS_SDS] (sorted, unique names) with the Secrets of sidecar `vnode` of `mesh`
 * (see above; `kind` TR_VIRTUAL_GATEWAY: of virtual gateway `vnode`, whose identity is
 * spiffe://<td>/mesh/<m>/virtualGateway/<vg>), issuing its identity when needed. Returns 0, or
 * -1 (logged) when issuing failed: the snapshot then carries no Secret and the proxies keep
 * (or wait for) theirs. */
int identities_fill(struct identities *ids, const char *mesh, enum tr_proxy kind, const char *vnode,
                    struct xds_snapshot *s);
