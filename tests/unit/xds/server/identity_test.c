/* Unit tests for remora-xds's identities (xds/server/identity.h): a sidecar's Secrets from the
 * mesh CA: its SPIFFE identity (cached per node) under its ID and every certificate name its
 * resources name, the CA under spiffe://<td> and every validation name, sorted; and the proxy's
 * own SDS code (build_tls_secret) takes them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>

#include "certs/ca.h"
#include "envoy/extensions/transport_sockets/tls/v3/secret.pb-c.h"
#include "proxy/config/build_tls.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/tls.h"
#include "xds/server/identity.h"

typedef Envoy__Extensions__TransportSockets__Tls__V3__Secret Secret;

static int changed_calls;

static void on_changed(void *arg)
{
    (void)arg;
    changed_calls++;
}

static Secret *secret_at(const struct xds_snapshot *s, size_t i)
{
    return envoy__extensions__transport_sockets__tls__v3__secret__unpack(
        NULL, s->res[XDS_SDS][i].len, s->res[XDS_SDS][i].data);
}

static void test_fill(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct mesh_ca *ca = mesh_ca_create("mesh.test", 30, &e);
    assert_non_null(ca);
    struct ev_loop *loop = ev_loop_new(0);
    struct identities *ids = identities_new(loop, ca, 3600, on_changed, NULL);
    assert_string_equal(identities_trust_domain(ids), "mesh.test");

    struct xds_snapshot *s = xcalloc(1, sizeof(*s));
    s->n_secrets = 2;
    s->secrets = xcalloc(2, sizeof(*s->secrets));
    s->secrets[0] = (struct xds_secret_ref){xstrdup("my-cert"), false};
    s->secrets[1] = (struct xds_secret_ref){xstrdup("spiffe://mesh.test"), true};
    assert_int_equal(identities_fill(ids, "m", TR_VIRTUAL_NODE, "back", s), 0);
    /* sorted: my-cert, spiffe://mesh.test, spiffe://mesh.test/mesh/m/virtualNode/back */
    assert_int_equal(s->n[XDS_SDS], 3);
    assert_string_equal(s->res[XDS_SDS][0].name, "my-cert");
    assert_string_equal(s->res[XDS_SDS][1].name, "spiffe://mesh.test");
    assert_string_equal(s->res[XDS_SDS][2].name, "spiffe://mesh.test/mesh/m/virtualNode/back");
    Secret *id = secret_at(s, 2), *alias = secret_at(s, 0), *bundle = secret_at(s, 1);
    assert_int_equal(id->type_case,
                     ENVOY__EXTENSIONS__TRANSPORT_SOCKETS__TLS__V3__SECRET__TYPE_TLS_CERTIFICATE);
    assert_string_equal(id->tls_certificate->certificate_chain->inline_string,
                        alias->tls_certificate->certificate_chain->inline_string);
    assert_true(mesh_ca_signed(ca, id->tls_certificate->certificate_chain->inline_string,
                               "spiffe://mesh.test/mesh/m/virtualNode/back"));
    assert_string_equal(bundle->validation_context->trusted_ca->inline_string,
                        mesh_ca_cert_pem(ca));
    /* the proxy's SDS compile takes both */
    struct tls_material m = {0};
    assert_int_equal(build_tls_secret(id, false, "resources[2]", &m, &e), 0);
    tls_material_free(&m);
    assert_int_equal(build_tls_secret(bundle, true, "resources[1]", &m, &e), 0);
    tls_material_free(&m);

    /* cached: a second snapshot of the node carries the same certificate; another node gets
     * its own */
    struct xds_snapshot *s2 = xcalloc(1, sizeof(*s2));
    assert_int_equal(identities_fill(ids, "m", TR_VIRTUAL_NODE, "back", s2), 0);
    assert_int_equal(s2->n[XDS_SDS], 2);
    Secret *again = secret_at(s2, 1);
    assert_string_equal(again->tls_certificate->certificate_chain->inline_string,
                        id->tls_certificate->certificate_chain->inline_string);
    struct xds_snapshot *s3 = xcalloc(1, sizeof(*s3));
    assert_int_equal(identities_fill(ids, "m", TR_VIRTUAL_NODE, "front", s3), 0);
    Secret *other = secret_at(s3, 1);
    assert_string_equal(s3->res[XDS_SDS][1].name, "spiffe://mesh.test/mesh/m/virtualNode/front");
    assert_string_not_equal(other->tls_certificate->certificate_chain->inline_string,
                            id->tls_certificate->certificate_chain->inline_string);
    /* a node name that makes no SPIFFE ID gets no Secrets */
    struct xds_snapshot *s4 = xcalloc(1, sizeof(*s4));
    assert_int_equal(identities_fill(ids, "m", TR_VIRTUAL_NODE, "bad name", s4), -1);
    assert_int_equal(s4->n[XDS_SDS], 0);
    /* a virtual gateway of the same name as a node has its own identity */
    struct xds_snapshot *s5 = xcalloc(1, sizeof(*s5));
    assert_int_equal(identities_fill(ids, "m", TR_VIRTUAL_GATEWAY, "back", s5), 0);
    assert_int_equal(s5->n[XDS_SDS], 2);
    assert_string_equal(s5->res[XDS_SDS][1].name, "spiffe://mesh.test/mesh/m/virtualGateway/back");
    Secret *gw = secret_at(s5, 1);
    assert_true(mesh_ca_signed(ca, gw->tls_certificate->certificate_chain->inline_string,
                               "spiffe://mesh.test/mesh/m/virtualGateway/back"));
    protobuf_c_message_free_unpacked(&gw->base, NULL);
    xds_snapshot_free(s5);
    assert_int_equal(changed_calls, 0);

    protobuf_c_message_free_unpacked(&id->base, NULL);
    protobuf_c_message_free_unpacked(&alias->base, NULL);
    protobuf_c_message_free_unpacked(&bundle->base, NULL);
    protobuf_c_message_free_unpacked(&again->base, NULL);
    protobuf_c_message_free_unpacked(&other->base, NULL);
    xds_snapshot_free(s);
    xds_snapshot_free(s2);
    xds_snapshot_free(s3);
    xds_snapshot_free(s4);
    identities_free(ids);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
