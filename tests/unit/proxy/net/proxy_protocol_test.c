/* Unit tests for proxy/net/proxy_protocol.c: the PROXY protocol v1 and v2 header parser. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/net/proxy_protocol.h"

#define ALL (PP_V1 | PP_V2)

static const uint8_t SIG2[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* Parses exactly `len` bytes from a heap copy, so ASan sees any read past them. */
static enum pp_rc parse_n(const void *p, size_t len, unsigned versions, struct pp_header *h)
{
    uint8_t *copy = malloc(len > 0 ? len : 1);
    memcpy(copy, p, len);
    enum pp_rc rc = pp_parse(copy, len, versions, h);
    free(copy);
    return rc;
}

static enum pp_rc parse_s(const char *s, struct pp_header *h)
{
    return parse_n(s, strlen(s), ALL, h);
}

static void assert_addr(const union sockaddr_ip *a, const char *ip, uint16_t port)
{
    char text[48];
    uint16_t p;
    accepted_addr_text(&a->sa, text, &p);
    assert_string_equal(text, ip);
    assert_int_equal(p, port);
}

/* Every proper prefix of a whole header asks for more, and for at most what is missing. */
static void assert_prefixes_more(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        struct pp_header h;
        assert_int_equal(parse_n(p, i, ALL, &h), PP_MORE);
        assert_true(h.need > i);
        assert_true(h.need <= len);
    }
}

static void test_v1_tcp4(void **state)
{
    (void)state;
    const char *s = "PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080\r\nGET / HTTP/1.1\r\n";
    struct pp_header h;
    assert_int_equal(parse_s(s, &h), PP_DONE);
    assert_int_equal(h.version, 1);
    assert_int_equal(h.len, strlen("PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080\r\n"));
    assert_true(h.has_addrs);
    assert_addr(&h.src, "192.0.2.7", 40001);
    assert_addr(&h.dst, "10.0.0.2", 8080);
    assert_prefixes_more((const uint8_t *)s, h.len);
}

static void test_v1_tcp6_unknown(void **state)
{
    (void)state;
    struct pp_header h;
    assert_int_equal(parse_s("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n", &h), PP_DONE);
    assert_addr(&h.src, "2001:db8::1", 65535);
    assert_addr(&h.dst, "::1", 0);
    assert_int_equal(parse_s("PROXY UNKNOWN\r\n", &h), PP_DONE);
    assert_false(h.has_addrs);
    assert_int_equal(h.len, 15);
    assert_int_equal(parse_s("PROXY UNKNOWN ffff::1 ::1 1 2\r\nxyz", &h), PP_DONE);
    assert_false(h.has_addrs);
    assert_int_equal(h.len, 31);
}

static void test_v1_bad(void **state)
{
    (void)state;
    static const char *bad[] = {
        "PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080\n",     /* no \r */
        "PROXY TCP4 192.0.2.7 10.0.0.2 40001\r\n",        /* a field missing */
        "PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080 9\r\n", /* one too many */
        "PROXY TCP4 192.0.2.7  10.0.0.2 40001 8080\r\n",  /* two spaces */
        "PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080 \r\n",  /* a trailing space */
        "PROXY TCP4 ::1 10.0.0.2 40001 8080\r\n",         /* IPv6 in TCP4 */
        "PROXY TCP6 10.0.0.1 ::1 40001 8080\r\n",         /* IPv4 in TCP6 */
        "PROXY TCP4 192.0.2.7 10.0.0.2 65536 8080\r\n",   /* port out of range */
        "PROXY TCP4 192.0.2.7 10.0.0.2 -1 8080\r\n",      /* not digits */
        "PROXY TCP4 192.0.2.7 10.0.0.2 123456 80\r\n",    /* too many digits */
        "PROXY TCP4 192.0.2.256 10.0.0.2 1 80\r\n",       /* bad address */
        "PROXY UDP4 192.0.2.7 10.0.0.2 1 80\r\n",         /* not TCP */
        "PROXY \r\n",                                     /* nothing */
        "PROXY\r\n",                                      /* no space: not quite the sig */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pp_header h;
        enum pp_rc want = i == sizeof(bad) / sizeof(bad[0]) - 1 ? PP_NOT_PP : PP_ERROR;
        enum pp_rc rc = parse_s(bad[i], &h);
        if (rc != want) {
            print_error("not refused: %s\n", bad[i]);
        }
        assert_int_equal(rc, want);
    }
}

static void test_v1_too_long(void **state)
{
    (void)state;
    char line[200];
    memset(line, 'A', sizeof(line));
    memcpy(line, "PROXY UNKNOWN ", 14);
    struct pp_header h;
    /* no "\n" within 107 bytes: an error, whatever more may come */
    assert_int_equal(parse_n(line, PP_V1_MAX, ALL, &h), PP_ERROR);
    assert_int_equal(parse_n(line, sizeof(line), ALL, &h), PP_ERROR);
    assert_int_equal(parse_n(line, PP_V1_MAX - 1, ALL, &h), PP_MORE);
    assert_int_equal(h.need, PP_V1_MAX);
    /* exactly 107 bytes with "\r\n" at the end is fine */
    line[PP_V1_MAX - 2] = '\r';
    line[PP_V1_MAX - 1] = '\n';
    assert_int_equal(parse_n(line, PP_V1_MAX, ALL, &h), PP_DONE);
    assert_int_equal(h.len, PP_V1_MAX);
}

static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body, uint16_t blen)
{
    memcpy(out, SIG2, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    if (blen > 0) {
        memcpy(out + 16, body, blen);
    }
    return 16u + blen;
}

static void test_v2_inet(void **state)
{
    (void)state;
    /* 192.0.2.7:40001 -> 10.0.0.2:8080, then a TLV (type 0x04 NOOP, 3 bytes) */
    uint8_t body[18] = {192,  0,    2,    7,    10,   0,    0, 2, 0x9c,
                        0x41, 0x1f, 0x90, 0x04, 0x00, 0x03, 1, 2, 3};
    uint8_t buf[64];
    size_t n = v2(buf, 0x21, 0x11, body, sizeof(body));
    memcpy(buf + n, "GET", 3);
    struct pp_header h;
    assert_int_equal(parse_n(buf, n + 3, ALL, &h), PP_DONE);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.len, n);
    assert_true(h.has_addrs);
    assert_addr(&h.src, "192.0.2.7", 40001);
    assert_addr(&h.dst, "10.0.0.2", 8080);
    assert_prefixes_more(buf, n);
}

static void test_v2_inet6_local_unspec(void **state)
{
    (void)state;
    uint8_t body[36] = {0};
    body[0] = 0x20;
    body[1] = 0x01;
    body[2] = 0x0d;
    body[3] = 0xb8;
    body[15] = 1; /* 2001:db8::1 */
    body[31] = 1; /* ::1 */
    body[32] = 0x01;
    body[33] = 0xbb; /* 443 */
    body[35] = 80;
    uint8_t buf[64];
    size_t n = v2(buf, 0x21, 0x21, body, sizeof(body));
    struct pp_header h;
    assert_int_equal(parse_n(buf, n, ALL, &h), PP_DONE);
    assert_addr(&h.src, "2001:db8::1", 443);
    assert_addr(&h.dst, "::1", 80);
    /* LOCAL: any family, addresses skipped */
    n = v2(buf, 0x20, 0x11, body, 12);
    assert_int_equal(parse_n(buf, n, ALL, &h), PP_DONE);
    assert_false(h.has_addrs);
    assert_int_equal(h.len, 28);
    n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse_n(buf, n, ALL, &h), PP_DONE);
    assert_false(h.has_addrs);
    /* PROXY with AF_UNSPEC: the socket's addresses */
    n = v2(buf, 0x21, 0x00, NULL, 0);
    assert_int_equal(parse_n(buf, n, ALL, &h), PP_DONE);
    assert_false(h.has_addrs);
}

static void test_v2_bad(void **state)
{
    (void)state;
    uint8_t body[216] = {0};
    uint8_t buf[300];
    struct pp_header h;
    assert_int_equal(parse_n(buf, v2(buf, 0x11, 0x11, body, 12), ALL, &h), PP_ERROR);  /* ver 1 */
    assert_int_equal(parse_n(buf, v2(buf, 0x22, 0x11, body, 12), ALL, &h), PP_ERROR);  /* cmd 2 */
    assert_int_equal(parse_n(buf, v2(buf, 0x21, 0x11, body, 11), ALL, &h), PP_ERROR);  /* short */
    assert_int_equal(parse_n(buf, v2(buf, 0x21, 0x21, body, 35), ALL, &h), PP_ERROR);  /* short */
    assert_int_equal(parse_n(buf, v2(buf, 0x21, 0x12, body, 12), ALL, &h), PP_ERROR);  /* DGRAM */
    assert_int_equal(parse_n(buf, v2(buf, 0x21, 0x31, body, 216), ALL, &h), PP_ERROR); /* UNIX */
    assert_int_equal(parse_n(buf, v2(buf, 0x21, 0x41, body, 12), ALL, &h), PP_ERROR);
    assert_int_equal(h.version, 2);
    /* a length over the cap: refused at the 16 bytes, before waiting for the rest */
    v2(buf, 0x21, 0x11, body, 12);
    buf[14] = 0xff;
    buf[15] = 0xff;
    assert_int_equal(parse_n(buf, 16, ALL, &h), PP_ERROR);
    buf[14] = (uint8_t)((PP_V2_MAX - 16) >> 8);
    buf[15] = (uint8_t)(PP_V2_MAX - 16);
    assert_int_equal(parse_n(buf, 16, ALL, &h), PP_MORE);
    assert_int_equal(h.need, PP_V2_MAX);
}

static void test_not_pp_and_mask(void **state)
{
    (void)state;
    struct pp_header h;
    assert_int_equal(parse_s("GET / HTTP/1.1\r\n", &h), PP_NOT_PP);
    assert_int_equal(parse_s("\x16\x03\x01", &h), PP_NOT_PP);
    assert_int_equal(parse_s("PROXX", &h), PP_NOT_PP);
    assert_int_equal(parse_n("", 0, ALL, &h), PP_MORE);
    /* "\r\n" is the start of the v2 signature: wait */
    assert_int_equal(parse_s("\r\n", &h), PP_MORE);
    assert_int_equal(parse_s("\r\n\r\n\0x", &h), PP_MORE); /* strlen stops at the NUL */
    assert_int_equal(parse_n("\r\n\r\n\0x", 6, ALL, &h), PP_NOT_PP);
    /* a version not in the mask is no signature */
    const char *v1 = "PROXY TCP4 192.0.2.7 10.0.0.2 40001 8080\r\n";
    assert_int_equal(parse_n(v1, strlen(v1), PP_V2, &h), PP_NOT_PP);
    assert_int_equal(parse_n(v1, 3, PP_V2, &h), PP_NOT_PP);
    assert_int_equal(parse_n(v1, strlen(v1), PP_V1, &h), PP_DONE);
    uint8_t buf[32];
    size_t n = v2(buf, 0x20, 0x00, NULL, 0);
    assert_int_equal(parse_n(buf, n, PP_V1, &h), PP_NOT_PP);
}

/* Random bytes after either signature: never a read past the end (ASan), never a header longer
 * than the bytes, never a wait beyond the caps. */
static void test_fuzz(void **state)
{
    (void)state;
    uint64_t x = 88172645463325252ull;
    uint8_t buf[256];
    for (int i = 0; i < 20000; i++) {
        size_t len = 0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = x % sizeof(buf);
        if (x & 1) {
            memcpy(buf, "PROXY ", 6);
            len = 6;
        } else {
            memcpy(buf, SIG2, 12);
            len = 12;
        }
        for (; len < n; len++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[len] = (x & 4) ? (uint8_t)(" .:0123456789TCP46\r\n"[x % 20]) : (uint8_t)(x >> 24);
        }
        struct pp_header h;
        enum pp_rc rc = parse_n(buf, len, ALL, &h);
        if (rc == PP_DONE) {
            assert_true(h.len <= len);
        } else if (rc == PP_MORE) {
            assert_true(h.need > len && h.need <= PP_V2_MAX);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4), cmocka_unit_test(test_v1_tcp6_unknown),
        cmocka_unit_test(test_v1_bad),  cmocka_unit_test(test_v1_too_long),
        cmocka_unit_test(test_v2_inet), cmocka_unit_test(test_v2_inet6_local_unspec),
        cmocka_unit_test(test_v2_bad),  cmocka_unit_test(test_not_pp_and_mask),
        cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
