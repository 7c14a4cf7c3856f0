/* Unit tests for proxy/net/tls: tls_no_password, the pass phrase callback every PEM read of
 * remora and remora-xds uses (config and SDS material, the ADS server's certificate, the mesh
 * CA): an encrypted key fails to load instead of prompting on the terminal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "proxy/net/tls.h"
#include "tests/unit/proxy/net/tls_test_pki.h"

static int give_secret(char *buf, int size, int rwflag, void *u)
{
    (void)rwflag;
    (void)u;
    assert_true(size >= 6);
    memcpy(buf, "secret", 6);
    return 6;
}

static void test_tls_no_password_refuses_an_encrypted_key(void **state)
{
    (void)state;
    EVP_PKEY *k = pki_key();
    BIO *enc = BIO_new(BIO_s_mem());
    assert_int_equal(
        PEM_write_bio_PrivateKey(enc, k, EVP_aes_128_cbc(), NULL, 0, give_secret, NULL), 1);
    BIO *plain = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(plain, k, NULL, NULL, 0, NULL, NULL), 1);
    char buf[8] = "x";
    assert_int_equal(tls_no_password(buf, sizeof(buf), 0, NULL), -1);
    /* encrypted: refused (no prompt); the right pass phrase would open it */
    const char *p = NULL;
    long n = BIO_get_mem_data(enc, &p);
    BIO *b = BIO_new_mem_buf(p, (int)n);
    assert_null(PEM_read_bio_PrivateKey(b, NULL, tls_no_password, NULL));
    BIO_free(b);
    b = BIO_new_mem_buf(p, (int)n);
    EVP_PKEY *got = PEM_read_bio_PrivateKey(b, NULL, give_secret, NULL);
    assert_non_null(got);
    EVP_PKEY_free(got);
    BIO_free(b);
    /* a key in the clear loads */
    n = BIO_get_mem_data(plain, &p);
    b = BIO_new_mem_buf(p, (int)n);
    got = PEM_read_bio_PrivateKey(b, NULL, tls_no_password, NULL);
    assert_non_null(got);
    EVP_PKEY_free(got);
    BIO_free(b);
    BIO_free(enc);
    BIO_free(plain);
    EVP_PKEY_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls_no_password_refuses_an_encrypted_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
