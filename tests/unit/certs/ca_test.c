/* certs/ca: SPIFFE ID rules, a CA and the certificates it issues checked by OpenSSL's own
 * verifier, the CA's files, and mesh_ca_signed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs/ca.h"

static void spiffe_ids(void **state)
{
    (void)state;
    struct err e;
    static const char *const good[] = {"spiffe://mesh.local/web",
                                       "spiffe://example.org/ns/shop/sa/cart",
                                       "spiffe://a_b-c.d/x.y-z_0/A"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        err_clear(&e);
        assert_int_equal(spiffe_check_id(good[i], NULL, &e), 0);
    }
    static const char *const bad[] = {
        "http://mesh.local/web",
        "spiffe://mesh.local",
        "spiffe://mesh.local/",
        "spiffe://Mesh.local/web",
        "spiffe:///web",
        "spiffe://mesh.local:8/web",
        "spiffe://u@mesh.local/w",
        "spiffe://mesh.local/a//b",
        "spiffe://mesh.local/.",
        "spiffe://mesh.local/a/..",
        "spiffe://mesh.local/a?b=c",
        "spiffe://mesh.local/a#f",
        "spiffe://mesh.local/a%20b",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err_clear(&e);
        assert_int_not_equal(spiffe_check_id(bad[i], NULL, &e), 0);
        assert_true(err_is_set(&e));
    }
    err_clear(&e);
    assert_int_not_equal(spiffe_check_id("spiffe://other/web", "mesh.local", &e), 0);
    assert_non_null(strstr(e.msg, "not in trust domain"));
    char longid[SPIFFE_ID_MAX + 16] = "spiffe://t/";
    memset(longid + 11, 'a', SPIFFE_ID_MAX);
    longid[11 + SPIFFE_ID_MAX] = '\0';
    err_clear(&e);
    assert_int_not_equal(spiffe_check_id(longid, NULL, &e), 0);
    err_clear(&e);
    assert_int_not_equal(spiffe_check_trust_domain("", &e), 0);
}

static X509 *parse(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    return x;
}

/* OpenSSL's verifier, with the CA as the only trust anchor and the purpose of a TLS peer. */
static int verify(const char *ca_pem, const char *leaf_pem, int purpose)
{
    X509_STORE *st = X509_STORE_new();
    X509 *ca = parse(ca_pem), *leaf = parse(leaf_pem);
    X509_STORE_add_cert(st, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, st, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    int ok = X509_verify_cert(ctx);
    int err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_free(leaf);
    X509_free(ca);
    X509_STORE_free(st);
    return ok == 1 ? 0 : err;
}

static void issue_and_verify(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct mesh_ca *ca = mesh_ca_create("mesh.local", 30, &e);
    assert_non_null(ca);
    assert_string_equal(mesh_ca_trust_domain(ca), "mesh.local");
    struct svid s;
    time_t now = time(NULL);
    assert_int_equal(mesh_ca_issue(ca, "spiffe://mesh.local/ns/shop/sa/web", 3600, now, &s, &e), 0);
    /* a TLS server and a TLS client certificate, both */
    assert_int_equal(verify(mesh_ca_cert_pem(ca), s.cert_pem, X509_PURPOSE_SSL_SERVER), 0);
    assert_int_equal(verify(mesh_ca_cert_pem(ca), s.cert_pem, X509_PURPOSE_SSL_CLIENT), 0);
    assert_int_equal(s.not_before, now - 60);
    assert_int_equal(s.not_after, now + 3600);
    time_t nb, na;
    assert_int_equal(pem_cert_validity(s.cert_pem, &nb, &na), 0);
    assert_int_equal(nb, s.not_before);
    assert_int_equal(na, s.not_after);
    assert_true(mesh_ca_signed(ca, s.cert_pem, "spiffe://mesh.local/ns/shop/sa/web"));
    assert_false(mesh_ca_signed(ca, s.cert_pem, "spiffe://mesh.local/ns/shop/sa/we"));

    /* exactly one SAN, the URI; not a CA; the key is the certificate's */
    X509 *x = parse(s.cert_pem);
    GENERAL_NAMES *gns = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(gns), 1);
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, 0);
    assert_int_equal(gn->type, GEN_URI);
    GENERAL_NAMES_free(gns);
    assert_int_equal(X509_check_ca(x), 0);
    BIO *kb = BIO_new_mem_buf(s.key_pem, -1);
    EVP_PKEY *k = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    BIO_free(kb);
    assert_int_equal(X509_check_private_key(x, k), 1);
    EVP_PKEY_free(k);
    X509_free(x);

    /* two issues, two serials */
    struct svid s2;
    assert_int_equal(mesh_ca_issue(ca, "spiffe://mesh.local/ns/shop/sa/web", 3600, now, &s2, &e),
                     0);
    assert_string_not_equal(s.serial_hex, s2.serial_hex);
    svid_free(&s2);

    /* another CA's certificate is not this CA's, and does not verify against it */
    struct mesh_ca *other = mesh_ca_create("mesh.local", 30, &e);
    assert_non_null(other);
    assert_false(mesh_ca_signed(other, s.cert_pem, "spiffe://mesh.local/ns/shop/sa/web"));
    assert_int_not_equal(verify(mesh_ca_cert_pem(other), s.cert_pem, X509_PURPOSE_SSL_SERVER), 0);
    mesh_ca_free(other);

    /* never past the CA's own end; nothing for another trust domain */
    struct svid s3;
    assert_int_equal(mesh_ca_issue(ca, "spiffe://mesh.local/long", 3650ull * 86400, now, &s3, &e),
                     0);
    assert_true(s3.not_after <= now + 30 * 86400);
    svid_free(&s3);
    err_clear(&e);
    assert_int_not_equal(mesh_ca_issue(ca, "spiffe://other.local/web", 3600, now, &s3, &e), 0);
    assert_null(s3.cert_pem);
    svid_free(&s);
    mesh_ca_free(ca);
}

static void files_and_modes(void **state)
{
    (void)state;
    char dir[] = "/tmp/remora-ca-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct err e;
    err_clear(&e);
    struct mesh_ca *ca = mesh_ca_create("mesh.local", 30, &e);
    assert_int_equal(mesh_ca_save(ca, dir, &e), 0);
    char path[256];
    struct stat st;
    snprintf(path, sizeof(path), "%s/ca.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0077, 0); /* the key: its owner only */
    struct mesh_ca *back = mesh_ca_load(dir, &e);
    assert_non_null(back);
    assert_string_equal(mesh_ca_trust_domain(back), "mesh.local");
    assert_string_equal(mesh_ca_cert_pem(back), mesh_ca_cert_pem(ca));
    struct svid s;
    assert_int_equal(mesh_ca_issue(back, "spiffe://mesh.local/web", 60, time(NULL), &s, &e), 0);
    assert_int_equal(verify(mesh_ca_cert_pem(ca), s.cert_pem, X509_PURPOSE_SSL_CLIENT), 0);

    /* the SDS file: two secrets, inline PEM, the serial as the version */
    char *text = sds_secret_json(&s, mesh_ca_cert_pem(ca), "default", "ROOTCA", s.serial_hex);
    json_t *doc = json_loads(text, 0, NULL);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "version_info")), s.serial_hex);
    json_t *res = json_object_get(doc, "resources");
    assert_int_equal(json_array_size(res), 2);
    json_t *c0 = json_array_get(res, 0), *c1 = json_array_get(res, 1);
    assert_string_equal(json_string_value(json_object_get(c0, "name")), "default");
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(c0, "tls_certificate"), "private_key"),
                            "inline_string")),
                        s.key_pem);
    assert_string_equal(json_string_value(json_object_get(c1, "name")), "ROOTCA");
    json_decref(doc);
    free(text);
    svid_free(&s);
    mesh_ca_free(back);

    /* a key that is not the certificate's is refused */
    struct mesh_ca *other = mesh_ca_create("mesh.local", 30, &e);
    char other_dir[] = "/tmp/remora-ca-test-XXXXXX";
    assert_non_null(mkdtemp(other_dir));
    assert_int_equal(mesh_ca_save(other, other_dir, &e), 0);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "cp %s/ca.key %s/ca.key", other_dir, dir);
    assert_int_equal(system(cmd), 0);
    err_clear(&e);
    assert_null(mesh_ca_load(dir, &e));
    assert_non_null(strstr(e.msg, "not the key"));
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir, other_dir);
    assert_int_equal(system(cmd), 0);
    mesh_ca_free(other);
    mesh_ca_free(ca);
}

/* remora-xds's server certificate: the names as iPAddress / dNSName SANs beside its SPIFFE ID,
 * a server certificate only; bad names refused. */
static void issue_server(void **state)
{
    (void)state;
    struct err e;
    err_clear(&e);
    struct mesh_ca *ca = mesh_ca_create("mesh.local", 30, &e);
    assert_non_null(ca);
    const char *const hosts[] = {"xds.mesh.local", "127.0.0.1", "::1"};
    struct svid s;
    time_t now = time(NULL);
    assert_int_equal(mesh_ca_issue_server(ca, hosts, 3, 3600, now, &s, &e), 0);
    assert_int_equal(verify(mesh_ca_cert_pem(ca), s.cert_pem, X509_PURPOSE_SSL_SERVER), 0);
    assert_int_not_equal(verify(mesh_ca_cert_pem(ca), s.cert_pem, X509_PURPOSE_SSL_CLIENT), 0);
    assert_int_equal(s.not_after, now + 3600);
    X509 *x = parse(s.cert_pem);
    assert_int_equal(X509_check_host(x, "xds.mesh.local", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(x, "other.mesh.local", 0, 0, NULL), 0);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "::1", 0), 1);
    assert_int_equal(X509_check_ip_asc(x, "127.0.0.2", 0), 0);
    GENERAL_NAMES *gns = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(gns), 4);
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(gns, 0);
    assert_int_equal(gn->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
                        "spiffe://mesh.local/remora-xds");
    GENERAL_NAMES_free(gns);
    X509_free(x);
    svid_free(&s);

    static const char *const bad[] = {"",    "a..b", "-a.b",  "a-.b", "*.mesh.local",
                                      "a b", "a/b",  "x.y:80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err_clear(&e);
        assert_int_not_equal(mesh_ca_issue_server(ca, &bad[i], 1, 3600, now, &s, &e), 0);
        assert_true(err_is_set(&e));
        assert_null(s.cert_pem);
    }
    err_clear(&e);
    assert_int_not_equal(mesh_ca_issue_server(ca, hosts, 0, 3600, now, &s, &e), 0);
    mesh_ca_free(ca);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(spiffe_ids),
        cmocka_unit_test(issue_and_verify),
        cmocka_unit_test(issue_server),
        cmocka_unit_test(files_and_modes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
