/* Unit tests for proxy/net/tls_inspector.c's ClientHello parser, on ClientHellos that OpenSSL's
 * own client writes. */
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/net/chain_match.h"
#include "proxy/net/tls_inspector.h"

/* The bytes OpenSSL's client sends first, with server name `sni` (NULL: none) and ALPN wire
 * list `alpn[alpn_len]` (NULL: none), TLS versions up to `max_version`. Returns the length. */
static size_t client_hello(const char *sni, const unsigned char *alpn, unsigned alpn_len,
                           int max_version, uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    if (sni != NULL) {
        assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
    }
    if (alpn != NULL) {
        assert_int_equal(SSL_set_alpn_protos(ssl, alpn, alpn_len), 0);
    }
    SSL_set_connect_state(ssl);
    assert_true(SSL_do_handshake(ssl) <= 0); /* waits for the server */
    char *p;
    long n = BIO_get_mem_data(wb, &p);
    assert_true(n > 0 && (size_t)n <= cap);
    memcpy(out, p, (size_t)n);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static const unsigned char ALPN_H2_H1[] = "\x02h2\x08http/1.1";

static void test_sni_and_alpn(void **state)
{
    (void)state;
    uint8_t b[4096];
    size_t n = client_hello("WWW.Example.COM", ALPN_H2_H1, sizeof(ALPN_H2_H1) - 1, TLS1_3_VERSION,
                            b, sizeof(b));
    struct tls_hello h;
    assert_int_equal(tls_hello_parse(b, n, &h), TLS_HELLO_FOUND);
    assert_string_equal(h.sni, "www.example.com"); /* lower-cased, as Envoy keeps it */
    assert_int_equal(h.sni_len, 15);
    assert_true(h.alpn_found);
    assert_int_equal(h.n_alpn, 2);
    assert_true(str_eq_lit(h.alpn[0], "h2"));
    assert_true(str_eq_lit(h.alpn[1], "http/1.1"));
    struct chain_tls t;
    tls_hello_view(&h, true, &t);
    assert_true(t.tls);
    assert_true(str_eq_lit(t.sni, "www.example.com"));
    assert_int_equal(t.n_alpn, 2);
    /* TLS 1.2 ClientHellos too */
    n = client_hello("a.test", NULL, 0, TLS1_2_VERSION, b, sizeof(b));
    assert_int_equal(tls_hello_parse(b, n, &h), TLS_HELLO_FOUND);
    assert_string_equal(h.sni, "a.test");
    assert_false(h.alpn_found);
    assert_int_equal(h.n_alpn, 0);
}

static void test_no_sni(void **state)
{
    (void)state;
    uint8_t b[4096];
    size_t n = client_hello(NULL, NULL, 0, TLS1_3_VERSION, b, sizeof(b));
    struct tls_hello h;
    assert_int_equal(tls_hello_parse(b, n, &h), TLS_HELLO_FOUND);
    assert_int_equal(h.sni_len, 0);
    assert_string_equal(h.sni, "");
    assert_false(h.alpn_found);
}

/* Every prefix of a ClientHello asks for more, and for no more than the whole; the whole is
 * found. */
static void test_truncated(void **state)
{
    (void)state;
    uint8_t b[4096];
    size_t n =
        client_hello("a.test", ALPN_H2_H1, sizeof(ALPN_H2_H1) - 1, TLS1_3_VERSION, b, sizeof(b));
    struct tls_hello h;
    for (size_t len = 0; len < n; len++) {
        assert_int_equal(tls_hello_parse(b, len, &h), TLS_HELLO_MORE);
        assert_true(h.need > len);
        assert_true(h.need <= n);
    }
    assert_int_equal(tls_hello_parse(b, 3, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, 5); /* the record header first */
    assert_int_equal(tls_hello_parse(b, 5, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, n); /* then the record: one wakeup, not one per segment */
    assert_int_equal(tls_hello_parse(b, n, &h), TLS_HELLO_FOUND);
}

/* The same ClientHello cut into records of 100 bytes: still found, and the record walk waits for
 * each record. */
static void test_fragmented_records(void **state)
{
    (void)state;
    uint8_t b[4096], f[8192];
    size_t n = client_hello("frag.test", NULL, 0, TLS1_3_VERSION, b, sizeof(b));
    size_t body = n - 5, fl = 0;
    for (size_t off = 0; off < body; off += 100) {
        size_t k = body - off < 100 ? body - off : 100;
        f[fl++] = 0x16;
        f[fl++] = b[1];
        f[fl++] = b[2];
        f[fl++] = (uint8_t)(k >> 8);
        f[fl++] = (uint8_t)k;
        memcpy(f + fl, b + 5 + off, k);
        fl += k;
    }
    struct tls_hello h;
    assert_int_equal(tls_hello_parse(f, 105 + 2, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, 105 + 5);
    assert_int_equal(tls_hello_parse(f, 105 + 5, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, 105 + 105);
    assert_int_equal(tls_hello_parse(f, fl - 1, &h), TLS_HELLO_MORE);
    assert_int_equal(tls_hello_parse(f, fl, &h), TLS_HELLO_FOUND);
    assert_string_equal(h.sni, "frag.test");
}

static void test_not_tls(void **state)
{
    (void)state;
    struct tls_hello h;
    const char *get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(tls_hello_parse((const uint8_t *)get, strlen(get), &h), TLS_HELLO_NOT_TLS);
    /* decided on the first byte, without waiting for more */
    assert_int_equal(tls_hello_parse((const uint8_t *)"G", 1, &h), TLS_HELLO_NOT_TLS);
    const uint8_t sslv2[] = {0x80, 0x2e, 0x01, 0x00, 0x02};
    assert_int_equal(tls_hello_parse(sslv2, sizeof(sslv2), &h), TLS_HELLO_NOT_TLS);
    const uint8_t bad_version[] = {0x16, 0x01, 0x00};
    assert_int_equal(tls_hello_parse(bad_version, sizeof(bad_version), &h), TLS_HELLO_NOT_TLS);
    /* a handshake record whose message is not a ClientHello: OpenSSL refuses it */
    const uint8_t server_hello[] = {0x16, 0x03, 0x03, 0x00, 0x08, 0x02, 0x00,
                                    0x00, 0x04, 0x03, 0x03, 0x00, 0x00};
    assert_int_equal(tls_hello_parse(server_hello, sizeof(server_hello), &h), TLS_HELLO_NOT_TLS);
    /* a record over the TLS limit: OpenSSL refuses it at its header */
    const uint8_t huge_record[] = {0x16, 0x03, 0x01, 0xff, 0xff, 0x01};
    assert_int_equal(tls_hello_parse(huge_record, sizeof(huge_record), &h), TLS_HELLO_NOT_TLS);
    /* garbage inside a well-framed ClientHello */
    uint8_t junk[64] = {0x16, 0x03, 0x01, 0x00, 59, 0x01, 0x00, 0x00, 55};
    memset(junk + 9, 0xee, sizeof(junk) - 9);
    assert_int_equal(tls_hello_parse(junk, sizeof(junk), &h), TLS_HELLO_NOT_TLS);
}

/* A ClientHello announced at over 64 KiB (Envoy's limit) is too large as soon as its length is
 * read, and so is one still incomplete after 64 KiB. */
static void test_too_large(void **state)
{
    (void)state;
    struct tls_hello h;
    uint8_t *b = calloc(1, TLS_HELLO_MAX + 16);
    assert_non_null(b);
    /* records of 16 KiB carrying a 70000-byte ClientHello */
    const uint8_t head[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x01, 0x11, 0x70};
    memcpy(b, head, sizeof(head));
    assert_int_equal(tls_hello_parse(b, 9, &h), TLS_HELLO_MORE);
    assert_int_equal(tls_hello_parse(b, 5 + 16384, &h), TLS_HELLO_TOO_LARGE);
    /* a ClientHello of 65000 bytes in records of 1000: its record headers take it over the
     * limit, which shows once the bytes before the limit are all there */
    memset(b, 0, TLS_HELLO_MAX);
    for (size_t off = 0; off + 5 <= TLS_HELLO_MAX; off += 1005) {
        const uint8_t rec[] = {0x16, 0x03, 0x01, 0x03, 0xe8};
        memcpy(b + off, rec, sizeof(rec));
    }
    const uint8_t hs[] = {0x01, 0x00, 0xfd, 0xe8};
    memcpy(b + 5, hs, sizeof(hs));
    assert_int_equal(tls_hello_parse(b, 1005, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, 1005 + 5);
    assert_int_equal(tls_hello_parse(b, 65 * 1005, &h), TLS_HELLO_MORE);
    assert_int_equal(tls_hello_parse(b, 65 * 1005 + 5, &h), TLS_HELLO_TOO_LARGE);
    assert_int_equal(tls_hello_parse(b, TLS_HELLO_MAX, &h), TLS_HELLO_TOO_LARGE);
    /* one within the limit waits for its next record */
    const uint8_t head3[] = {0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x80, 0x00};
    memcpy(b, head3, sizeof(head3));
    assert_int_equal(tls_hello_parse(b, 5 + 16384, &h), TLS_HELLO_MORE);
    assert_int_equal(h.need, 5 + 16384 + 5);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sni_and_alpn), cmocka_unit_test(test_no_sni),
        cmocka_unit_test(test_truncated),    cmocka_unit_test(test_fragmented_records),
        cmocka_unit_test(test_not_tls),      cmocka_unit_test(test_too_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
