/* sds: Secret resources from a file -> TLS contexts (see sds.h). Runs on main, at startup
 * (from build_tls.c) and on every change of an SDS file (from proxy/reload.c). */
#include "proxy/config/sds.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/build_tls.h"
#include "proxy/config/fpath.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/tls.h"

#define PbSecret Envoy__Extensions__TransportSockets__Tls__V3__Secret
#define PbDiscoveryResponse Envoy__Service__Discovery__V3__DiscoveryResponse

int sds_read_secret(const char *file, const char *name, PbSecret **out, size_t *index,
                    char **version_info, struct err *err)
{
    *out = NULL;
    PbDiscoveryResponse *resp = NULL;
    int rv = rds_read_file(file, &resp, err); /* the same DiscoveryResponse reader as RDS */
    if (rv != 0) {
        return rv;
    }
    PbSecret *found = NULL;
    struct err e;
    err_clear(&e);
    for (size_t i = 0; i < resp->n_resources && rv == 0; i++) {
        const struct Google__Protobuf__Any *any = resp->resources[i];
        char at[48];
        snprintf(at, sizeof(at), "resources[%zu]", i);
        ProtobufCMessage *m = NULL;
        if (pbjson_resource_unpack(
                any, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor,
                pbtypes_find, at, &m, &e) != 0) {
            rv = err_set(err, file, "%s", e.msg);
            break;
        }
        PbSecret *s = (PbSecret *)m;
        if (s->name == NULL || strcmp(s->name, name) != 0) {
            protobuf_c_message_free_unpacked(m, NULL);
            continue;
        }
        if (found != NULL) {
            protobuf_c_message_free_unpacked(m, NULL);
            rv = err_set(err, file, "%s.name: a second secret named '%s'", at, name);
            break;
        }
        found = s;
        *index = i;
    }
    if (rv == 0 && found == NULL) {
        rv = err_set(err, file, "resources: no secret named '%s'", name);
    }
    if (rv == 0) {
        *out = found;
        *version_info = xstrdup(resp->version_info != NULL ? resp->version_info : "");
    } else if (found != NULL) {
        protobuf_c_message_free_unpacked(&found->base, NULL);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return rv;
}

int sds_apply_users(const PbSecret *s, const struct tls_ctx *const *cert, uint32_t n_cert,
                    const struct tls_ctx *const *val, uint32_t n_val, const char *where,
                    struct err *err)
{
    struct tls_material mc = {0}, mv = {0};
    int rv = 0;
    if (n_cert > 0) {
        rv = build_tls_secret(s, false, where, &mc, err);
    }
    if (rv == 0 && n_val > 0) {
        rv = build_tls_secret(s, true, where, &mv, err);
    }
    /* All users or none: a certificate another user cannot take fails the whole update. */
    for (uint32_t u = 0; rv == 0 && u < n_cert; u++) {
        char why[256];
        if (tls_live_check_cert(cert[u], &mc, why, sizeof(why)) != 0) {
            rv = err_set(err, where, "tls_certificate: %s", why);
        }
    }
    for (uint32_t u = 0; rv == 0 && u < n_val; u++) {
        tls_live_set_store(val[u], &mv);
        atomic_fetch_add_explicit(&val[u]->live->updates, 1, memory_order_relaxed);
    }
    for (uint32_t u = 0; rv == 0 && u < n_cert; u++) {
        char why[256];
        if (tls_live_set_cert(cert[u], &mc, why, sizeof(why)) != 0) {
            /* Only on an OpenSSL failure (the checks passed): earlier users keep theirs. */
            rv = err_set(err, where, "tls_certificate: %s", why);
            break;
        }
        atomic_fetch_add_explicit(&cert[u]->live->updates, 1, memory_order_relaxed);
    }
    tls_material_free(&mc);
    tls_material_free(&mv);
    return rv;
}

int sds_apply(const struct config *c, uint32_t idx, const PbSecret *s, const char *where,
              struct err *err)
{
    const struct sds_cfg *sc = &c->sds[idx];
    if (s->name == NULL || strcmp(s->name, sc->name.p) != 0) {
        return err_set(err, where, "name: '%s' is not secret '%s'", s->name ? s->name : "",
                       sc->name.p);
    }
    if (sc->validation) {
        return sds_apply_users(s, NULL, 0, sc->users, sc->n_users, where, err);
    }
    return sds_apply_users(s, sc->users, sc->n_users, NULL, 0, where, err);
}

int sds_update(const struct config *c, uint32_t idx, PbSecret **secret, char **version_info,
               struct err *err)
{
    const struct sds_cfg *sc = &c->sds[idx];
    PbSecret *s = NULL;
    size_t i = 0;
    char *version = NULL;
    int rv = sds_read_secret(sc->path.p, sc->name.p, &s, &i, &version, err);
    if (rv != 0) {
        return rv;
    }
    char where[FPATH_CAP];
    snprintf(where, sizeof(where), "%s: resources[%zu]", sc->path.p, i);
    rv = sds_apply(c, idx, s, where, err);
    if (rv != 0) {
        protobuf_c_message_free_unpacked(&s->base, NULL);
        free(version);
        return rv;
    }
    *secret = s;
    *version_info = version;
    return 0;
}

const char *sds_role_conflict(const struct config *a, const struct config *b)
{
    for (uint32_t i = 0; i < a->n_sds; i++) {
        for (uint32_t j = 0; a->sds[i].ads && j < b->n_sds; j++) {
            if (b->sds[j].ads && b->sds[j].validation != a->sds[i].validation &&
                str_eq(a->sds[i].name, b->sds[j].name)) {
                return a->sds[i].name.p;
            }
        }
    }
    return NULL;
}

int sds_unpack(const struct Google__Protobuf__Any *any, const char *where, PbSecret **out,
               struct err *err)
{
    ProtobufCMessage *m = NULL;
    int rv = pbjson_resource_unpack(
        any, &envoy__extensions__transport_sockets__tls__v3__secret__descriptor, pbtypes_find,
        where, &m, err);
    *out = (PbSecret *)m;
    return rv;
}
