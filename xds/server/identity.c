/* identity: per-node SVIDs from the mesh CA, as SDS Secrets (identity.h). */
#include "xds/server/identity.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "certs/ca.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/common.pb-c.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

struct ident {
    char *id; /* the SPIFFE ID */
    struct svid svid;
    time_t renew_at; /* not_before + half the lifetime */
    struct ident *next;
};

struct identities {
    struct ev_loop *loop;
    struct mesh_ca *ca;
    uint64_t lifetime_s;
    void (*changed)(void *arg);
    void *arg;
    struct ident *list;
    size_t n;
    ev_timer renew; /* at the earliest renew_at */
};

static void ident_free(struct ident *e)
{
    free(e->id);
    svid_free(&e->svid);
    free(e);
}

static void clear(struct identities *ids)
{
    while (ids->list != NULL) {
        struct ident *e = ids->list;
        ids->list = e->next;
        ident_free(e);
    }
    ids->n = 0;
}

static void arm(struct identities *ids)
{
    ev_timer_stop(ids->loop, &ids->renew);
    if (ids->list == NULL) {
        return;
    }
    time_t first = ids->list->renew_at;
    for (struct ident *e = ids->list; e != NULL; e = e->next) {
        if (e->renew_at < first) {
            first = e->renew_at;
        }
    }
    double in = difftime(first, time(NULL));
    ev_timer_set(&ids->renew, in > 0 ? in : 0.001, 0);
    ev_timer_start(ids->loop, &ids->renew);
}

static int issue(struct identities *ids, struct ident *e)
{
    struct svid s = {0};
    struct err err;
    err_clear(&err);
    time_t now = time(NULL);
    if (mesh_ca_issue(ids->ca, e->id, ids->lifetime_s, now, &s, &err) != 0) {
        LOG_E("xds: identity %s: cannot issue: %s", e->id, err.msg);
        return -1;
    }
    svid_free(&e->svid);
    e->svid = s;
    /* half the actual validity (the CA's own notAfter may cut it short) */
    e->renew_at = now + (s.not_after - now) / 2;
    LOG_I("xds: identity %s issued (serial %s), renewed after %lds", e->id, s.serial_hex,
          (long)(e->renew_at - now));
    return 0;
}

static void renew_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct identities *ids = w->data;
    time_t now = time(NULL);
    bool any = false;
    for (struct ident *e = ids->list; e != NULL; e = e->next) {
        if (e->renew_at <= now && issue(ids, e) == 0) {
            any = true;
        } else if (e->renew_at <= now) {
            e->renew_at = now + 60; /* retry in a minute; the old one is still valid */
        }
    }
    arm(ids);
    if (any) {
        ids->changed(ids->arg);
    }
}

struct identities *identities_new(struct ev_loop *loop, struct mesh_ca *ca, uint64_t lifetime_s,
                                  void (*changed)(void *arg), void *arg)
{
    struct identities *ids = xcalloc(1, sizeof(*ids));
    ids->loop = loop;
    ids->ca = ca;
    ids->lifetime_s = lifetime_s;
    ids->changed = changed;
    ids->arg = arg;
    ev_init(&ids->renew, renew_cb);
    ids->renew.data = ids;
    return ids;
}

void identities_free(struct identities *ids)
{
    if (ids == NULL) {
        return;
    }
    ev_timer_stop(ids->loop, &ids->renew);
    clear(ids);
    mesh_ca_free(ids->ca);
    free(ids);
}

const char *identities_trust_domain(const struct identities *ids)
{
    return mesh_ca_trust_domain(ids->ca);
}

static struct ident *get(struct identities *ids, const char *id)
{
    for (struct ident *e = ids->list; e != NULL; e = e->next) {
        if (strcmp(e->id, id) == 0) {
            return e;
        }
    }
    if (ids->n >= IDENTITY_MAX) {
        clear(ids);
    }
    struct ident *e = xcalloc(1, sizeof(*e));
    e->id = xstrdup(id);
    if (issue(ids, e) != 0) {
        ident_free(e);
        return NULL;
    }
    e->next = ids->list;
    ids->list = e;
    ids->n++;
    arm(ids);
    return e;
}

/* Appends Secret `name` (a certificate, or the CA) to s->res[XDS_SDS] unless it is there. */
static void add_secret(struct xds_snapshot *s, const char *name, const struct ident *e,
                       const char *ca_pem)
{
    for (size_t i = 0; i < s->n[XDS_SDS]; i++) {
        if (strcmp(s->res[XDS_SDS][i].name, name) == 0) {
            return;
        }
    }
    Secret sec = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__INIT;
    Envoy__Extensions__TransportSockets__Tls__V3__TlsCertificate tc =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__TLS_CERTIFICATE__INIT;
    Envoy__Extensions__TransportSockets__Tls__V3__CertificateValidationContext vc =
        ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__CERTIFICATE_VALIDATION_CONTEXT__INIT;
    Envoy__Config__Core__V3__DataSource chain = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    Envoy__Config__Core__V3__DataSource key = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__INIT;
    sec.name = (char *)name;
    if (e != NULL) {
        chain.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
        chain.inline_string = e->svid.cert_pem;
        key.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
        key.inline_string = e->svid.key_pem;
        tc.certificate_chain = &chain;
        tc.private_key = &key;
        sec.type_case = ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE;
        sec.tls_certificate = &tc;
    } else {
        chain.specifier_case = ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING;
        chain.inline_string = (char *)ca_pem;
        vc.trusted_ca = &chain;
        sec.type_case =
            ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_VALIDATION_CONTEXT;
        sec.validation_context = &vc;
    }
    size_t len = protobuf_c_message_get_packed_size(&sec.base);
    uint8_t *data = xmalloc(len ? len : 1);
    protobuf_c_message_pack(&sec.base, data);
    s->res[XDS_SDS] = xrealloc(s->res[XDS_SDS], (s->n[XDS_SDS] + 1) * sizeof(*s->res[XDS_SDS]));
    s->res[XDS_SDS][s->n[XDS_SDS]++] = (struct xds_resource){xstrdup(name), data, len};
}

static int res_cmp(const void *x, const void *y)
{
    return strcmp(((const struct xds_resource *)x)->name, ((const struct xds_resource *)y)->name);
}

int identities_fill(struct identities *ids, const char *mesh, enum tr_proxy kind, const char *vnode,
                    struct xds_snapshot *s)
{
    const char *td = mesh_ca_trust_domain(ids->ca);
    char id[SPIFFE_ID_MAX + 1];
    translate_proxy_spiffe_id(id, sizeof(id), td, mesh, kind, vnode);
    struct err err;
    err_clear(&err);
    if (spiffe_check_id(id, td, &err) != 0) {
        LOG_W("xds: node %s of mesh %s has no SPIFFE identity: %s", vnode, mesh, err.msg);
        return -1;
    }
    struct ident *e = get(ids, id);
    if (e == NULL) {
        return -1;
    }
    char bundle[TRUST_DOMAIN_MAX + 16];
    translate_bundle_name(bundle, sizeof(bundle), td);
    const char *ca_pem = mesh_ca_cert_pem(ids->ca);
    add_secret(s, id, e, ca_pem);
    add_secret(s, bundle, NULL, ca_pem);
    for (size_t i = 0; i < s->n_secrets; i++) {
        add_secret(s, s->secrets[i].name, s->secrets[i].ca ? NULL : e, ca_pem);
    }
    qsort(s->res[XDS_SDS], s->n[XDS_SDS], sizeof(*s->res[XDS_SDS]), res_cmp);
    return 0;
}
