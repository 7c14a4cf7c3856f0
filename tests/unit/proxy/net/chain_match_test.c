/* Unit tests for proxy/net/chain_match.c: filter chain selection as Envoy does it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/net/chain_match.h"

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
    } else {
        assert_int_equal(inet_pton(AF_INET6, ip, &in6->sin6_addr), 1);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
    }
    return ss;
}

static int pick(const struct chain_match *m, uint32_t n, const char *lip, uint16_t lport,
                const char *pip, uint16_t pport)
{
    struct sockaddr_storage l = sa(lip, lport), p = sa(pip, pport);
    return chain_select(m, n, (struct sockaddr *)&l, (struct sockaddr *)&p, NULL);
}

/* A TLS connection with server name `sni` ("" none) and ALPN list `alpn` (NULL-terminated). */
static int pick_tls(const struct chain_match *m, uint32_t n, const char *sni, const char **alpn)
{
    struct sockaddr_storage l = sa("10.0.0.2", 443), p = sa("10.0.0.1", 40000);
    struct str protos[8];
    uint32_t k = 0;
    for (; alpn != NULL && alpn[k] != NULL; k++) {
        protos[k] = str_from_c(alpn[k]);
    }
    struct chain_tls t = {.tls = true, .sni = str_from_c(sni), .alpn = protos, .n_alpn = k};
    return chain_select(m, n, (struct sockaddr *)&l, (struct sockaddr *)&p, &t);
}

static struct cidr range(const char *ip, uint32_t len)
{
    struct cidr c;
    assert_true(cidr_parse(str_from_c(ip), len, &c));
    return c;
}

static void test_cidr_parse(void **state)
{
    (void)state;
    struct cidr c = range("10.1.2.3", 8);
    assert_false(c.v6);
    assert_int_equal(c.len, 8);
    assert_int_equal(c.b[0], 10);
    assert_int_equal(c.b[1], 0); /* bits past the prefix are cleared, as Envoy does */
    assert_int_equal(c.b[3], 0);
    c = range("10.1.2.3", 20);
    assert_int_equal(c.b[1], 1);
    assert_int_equal(c.b[2], 0);
    c = range("fd00::1", 8);
    assert_true(c.v6);
    assert_int_equal(c.b[0], 0xfd);
    assert_int_equal(c.b[15], 0);
    assert_false(cidr_parse(str_from_c("10.0.0.0"), 33, &c));
    assert_true(cidr_parse(str_from_c("::"), 128, &c));
    assert_false(cidr_parse(str_from_c("::"), 129, &c));
    assert_false(cidr_parse(str_from_c("example.com"), 8, &c));
    assert_false(cidr_parse(str_from_c(""), 0, &c));
    assert_false(cidr_parse(str_from_c("10.0.0.0/8"), 8, &c));
}

/* Destination port first: a chain for the port beats one for any port; none for another port. */
static void test_destination_port(void **state)
{
    (void)state;
    struct chain_match m[2] = {{.dst_port = 8080}, {.dst_port = 9090}};
    assert_int_equal(pick(m, 2, "10.0.0.2", 8080, "10.0.0.1", 40000), 0);
    assert_int_equal(pick(m, 2, "10.0.0.2", 9090, "10.0.0.1", 40000), 1);
    assert_int_equal(pick(m, 2, "10.0.0.2", 7070, "10.0.0.1", 40000), -1);
    struct chain_match any[2] = {{.dst_port = 8080}, {0}};
    assert_int_equal(pick(any, 2, "10.0.0.2", 8080, "10.0.0.1", 1), 0);
    assert_int_equal(pick(any, 2, "10.0.0.2", 7070, "10.0.0.1", 1), 1);
    /* Without a local address, criteria on it miss; the catch-all still matches. */
    assert_int_equal(chain_select(any, 2, NULL, NULL, NULL), 1);
}

/* The longest destination prefix wins, whatever the order of the chains. */
static void test_destination_prefix_longest_wins(void **state)
{
    (void)state;
    struct cidr wide = range("10.0.0.0", 8), narrow = range("10.1.0.0", 16);
    struct cidr all = range("0.0.0.0", 0);
    struct chain_match m[3] = {{.dst = &wide, .n_dst = 1}, {.dst = &narrow, .n_dst = 1}, {0}};
    assert_int_equal(pick(m, 3, "10.1.2.3", 80, "1.1.1.1", 1), 1);
    assert_int_equal(pick(m, 3, "10.2.2.3", 80, "1.1.1.1", 1), 0);
    assert_int_equal(pick(m, 3, "192.168.0.1", 80, "1.1.1.1", 1), 2);
    assert_int_equal(pick(m, 3, "fd00::1", 80, "::1", 1), 2); /* IPv4 ranges miss IPv6 */
    /* A /0 range is more specific than no range at all. */
    struct chain_match z[2] = {{0}, {.dst = &all, .n_dst = 1}};
    assert_int_equal(pick(z, 2, "192.168.0.1", 80, "1.1.1.1", 1), 1);
    /* IPv4-mapped IPv6 addresses are IPv4. */
    assert_int_equal(pick(m, 3, "::ffff:10.1.0.9", 80, "::1", 1), 1);
}

/* The levels are ordered: a port match is decided before the address is looked at, so a chain
 * with the port wins over a chain with a better address but no port. */
static void test_levels_in_order(void **state)
{
    (void)state;
    struct cidr narrow = range("10.1.2.3", 32);
    struct chain_match m[2] = {{.dst_port = 80}, {.dst = &narrow, .n_dst = 1}};
    assert_int_equal(pick(m, 2, "10.1.2.3", 80, "1.1.1.1", 1), 0);
    assert_int_equal(pick(m, 2, "10.1.2.3", 81, "1.1.1.1", 1), 1);
    /* Once a level chose, a later level cannot fall back to a chain it dropped: the port chain
     * wins the first level and then misses on the source, so nothing matches (Envoy's tree). */
    struct cidr src = range("192.168.0.0", 16);
    struct chain_match n[2] = {{.dst_port = 80, .src = &src, .n_src = 1}, {0}};
    assert_int_equal(pick(n, 2, "10.1.2.3", 80, "192.168.1.1", 1), 0);
    assert_int_equal(pick(n, 2, "10.1.2.3", 80, "172.16.0.1", 1), -1);
    assert_int_equal(pick(n, 2, "10.1.2.3", 81, "172.16.0.1", 1), 1);
}

static void test_source_criteria(void **state)
{
    (void)state;
    static const uint16_t ports[] = {1000, 2000};
    struct cidr direct = range("172.16.0.0", 12);
    struct chain_match m[4] = {
        {.src_ports = ports, .n_src_ports = 2},
        {.direct_src = &direct, .n_direct_src = 1},
        {.src_type = CHAIN_SRC_LOCAL, .transport = CHAIN_TRANSPORT_RAW_BUFFER},
        {.src_type = CHAIN_SRC_EXTERNAL, .transport = CHAIN_TRANSPORT_RAW_BUFFER},
    };
    /* raw_buffer is more specific than no transport protocol, so the source type chains win
     * every connection without TLS... */
    assert_int_equal(pick(m, 4, "10.0.0.2", 80, "127.0.0.1", 1000), 2);
    assert_int_equal(pick(m, 4, "10.0.0.2", 80, "10.0.0.2", 5), 2); /* same IP */
    assert_int_equal(pick(m, 4, "10.0.0.2", 80, "10.0.0.3", 5), 3);
    /* ...and without them, the direct source, then the source port decide. */
    assert_int_equal(pick(m, 2, "10.0.0.2", 80, "172.20.0.1", 2000), 1);
    assert_int_equal(pick(m, 2, "10.0.0.2", 80, "10.0.0.3", 2000), 0);
    assert_int_equal(pick(m, 2, "10.0.0.2", 80, "10.0.0.3", 3000), -1);
}

static void test_overlap(void **state)
{
    (void)state;
    struct cidr a = range("10.0.0.0", 8), a2 = range("10.9.9.9", 8), b = range("10.0.0.0", 16);
    struct chain_match e1 = {0}, e2 = {0};
    assert_true(chain_match_overlap(&e1, &e2));
    struct chain_match p80 = {.dst_port = 80}, p81 = {.dst_port = 81};
    assert_false(chain_match_overlap(&p80, &p81));
    assert_false(chain_match_overlap(&p80, &e1)); /* a port and the wildcard differ */
    struct chain_match ra = {.dst = &a, .n_dst = 1}, ra2 = {.dst = &a2, .n_dst = 1};
    struct chain_match rb = {.dst = &b, .n_dst = 1};
    assert_true(chain_match_overlap(&ra, &ra2)); /* the same range once normalised */
    assert_false(chain_match_overlap(&ra, &rb));
    static const uint16_t p1[] = {1, 2}, p2[] = {3, 2}, p3[] = {4};
    struct chain_match s1 = {.src_ports = p1, .n_src_ports = 2};
    struct chain_match s2 = {.src_ports = p2, .n_src_ports = 2};
    struct chain_match s3 = {.src_ports = p3, .n_src_ports = 1};
    assert_true(chain_match_overlap(&s1, &s2));
    assert_false(chain_match_overlap(&s1, &s3));
    struct chain_match t1 = {.transport = CHAIN_TRANSPORT_RAW_BUFFER};
    assert_false(chain_match_overlap(&t1, &e1));
    struct chain_match t2 = {.transport = CHAIN_TRANSPORT_TLS};
    assert_false(chain_match_overlap(&t1, &t2));
    /* server names and ALPN: a shared value overlaps (Envoy: the same leaf of its tree) */
    struct str n1[] = {STR_LIT("a.test"), STR_LIT("*.b.test")}, n2[] = {STR_LIT("*.b.test")};
    struct str n3[] = {STR_LIT("b.test")};
    struct chain_match sn1 = {.server_names = n1, .n_server_names = 2};
    struct chain_match sn2 = {.server_names = n2, .n_server_names = 1};
    struct chain_match sn3 = {.server_names = n3, .n_server_names = 1};
    assert_true(chain_match_overlap(&sn1, &sn2));
    assert_false(chain_match_overlap(&sn1, &sn3));
    assert_false(chain_match_overlap(&sn3, &e1));
    struct str a1[] = {STR_LIT("h2"), STR_LIT("http/1.1")}, a2x[] = {STR_LIT("http/1.1")};
    struct str a3[] = {STR_LIT("h3")};
    struct chain_match al1 = {.alpn = a1, .n_alpn = 2}, al2 = {.alpn = a2x, .n_alpn = 1};
    struct chain_match al3 = {.alpn = a3, .n_alpn = 1};
    assert_true(chain_match_overlap(&al1, &al2));
    assert_false(chain_match_overlap(&al1, &al3));
    /* the same names with different transport protocols do not overlap */
    struct chain_match sn2t = {
        .server_names = n2, .n_server_names = 1, .transport = CHAIN_TRANSPORT_TLS};
    assert_false(chain_match_overlap(&sn2, &sn2t));
}

/* Server names: exact beats any wildcard, a longer wildcard suffix beats a shorter one, names
 * match whole labels only, and chains without names take the rest. */
static void test_server_names(void **state)
{
    (void)state;
    struct str exact[] = {STR_LIT("www.example.com")}, w1[] = {STR_LIT("*.example.com")};
    struct str w2[] = {STR_LIT("*.com")}, other[] = {STR_LIT("a.test"), STR_LIT("b.test")};
    struct chain_match m[5] = {
        {.server_names = w2, .n_server_names = 1},
        {.server_names = w1, .n_server_names = 1},
        {.server_names = exact, .n_server_names = 1},
        {.server_names = other, .n_server_names = 2},
        {0},
    };
    assert_int_equal(pick_tls(m, 5, "www.example.com", NULL), 2);
    assert_int_equal(pick_tls(m, 5, "api.example.com", NULL), 1);
    assert_int_equal(pick_tls(m, 5, "x.y.example.com", NULL), 1);
    assert_int_equal(pick_tls(m, 5, "example.com", NULL), 0); /* "*.example.com" needs a label */
    assert_int_equal(pick_tls(m, 5, "b.test", NULL), 3);
    assert_int_equal(pick_tls(m, 5, "c.test", NULL), 4);
    assert_int_equal(pick_tls(m, 5, "", NULL), 4);
    assert_int_equal(pick_tls(m, 5, "xexample.com", NULL), 0);       /* ".example.com" is a label */
    assert_int_equal(pick(m, 5, "10.0.0.2", 443, "10.0.0.1", 1), 4); /* plaintext: no name */
    /* without a catch-all chain an unknown name matches nothing */
    assert_int_equal(pick_tls(m, 4, "c.test", NULL), -1);
    assert_int_equal(pick_tls(m, 4, "", NULL), -1);
    /* the order of the chains does not matter */
    struct chain_match r[3] = {m[2], m[1], m[0]};
    assert_int_equal(pick_tls(r, 3, "www.example.com", NULL), 0);
    assert_int_equal(pick_tls(r, 3, "ftp.example.com", NULL), 1);
    assert_int_equal(pick_tls(r, 3, "ftp.other.com", NULL), 2);
}

/* The server name level chose: a later level that misses does not fall back to a chain the
 * name level dropped (Envoy's tree); the listener's default chain takes it. */
static void test_server_name_no_fallback(void **state)
{
    (void)state;
    struct str a[] = {STR_LIT("a.test")}, h2[] = {STR_LIT("h2")};
    struct chain_match m[2] = {
        {.server_names = a, .n_server_names = 1, .alpn = h2, .n_alpn = 1},
        {0},
    };
    const char *want_h2[] = {"h2", NULL}, *want_h1[] = {"http/1.1", NULL};
    assert_int_equal(pick_tls(m, 2, "a.test", want_h2), 0);
    assert_int_equal(pick_tls(m, 2, "a.test", want_h1), -1);
    assert_int_equal(pick_tls(m, 2, "b.test", want_h1), 1);
    /* the same with the transport protocol after a wildcard */
    struct str w[] = {STR_LIT("*.test")};
    struct chain_match t[2] = {
        {.server_names = w, .n_server_names = 1, .transport = CHAIN_TRANSPORT_RAW_BUFFER},
        {.transport = CHAIN_TRANSPORT_TLS},
    };
    assert_int_equal(pick_tls(t, 2, "x.test", NULL), -1);
    assert_int_equal(pick_tls(t, 2, "x.other", NULL), 1);
}

/* Transport protocol: "tls" takes ClientHellos, "raw_buffer" the rest (PERMISSIVE mode), and a
 * chain without one takes both at a lower rank. */
static void test_transport_protocol(void **state)
{
    (void)state;
    struct chain_match m[2] = {{.transport = CHAIN_TRANSPORT_TLS},
                               {.transport = CHAIN_TRANSPORT_RAW_BUFFER}};
    assert_int_equal(pick_tls(m, 2, "", NULL), 0);
    assert_int_equal(pick(m, 2, "10.0.0.2", 443, "10.0.0.1", 1), 1);
    struct chain_match any[2] = {{.transport = CHAIN_TRANSPORT_TLS}, {0}};
    assert_int_equal(pick_tls(any, 2, "a.test", NULL), 0);
    assert_int_equal(pick(any, 2, "10.0.0.2", 443, "10.0.0.1", 1), 1);
    struct chain_match tls_only[1] = {{.transport = CHAIN_TRANSPORT_TLS}};
    assert_int_equal(pick(tls_only, 1, "10.0.0.2", 443, "10.0.0.1", 1), -1);
}

/* Application protocols: the client's earliest protocol that some chain lists wins. */
static void test_application_protocols(void **state)
{
    (void)state;
    struct str h2[] = {STR_LIT("h2")}, h1[] = {STR_LIT("http/1.1"), STR_LIT("http/1.0")};
    struct chain_match m[3] = {{.alpn = h2, .n_alpn = 1}, {.alpn = h1, .n_alpn = 2}, {0}};
    const char *a[] = {"h2", "http/1.1", NULL}, *b[] = {"http/1.1", "h2", NULL};
    const char *c[] = {"spdy/3", "http/1.0", NULL}, *d[] = {"acme-tls/1", NULL};
    assert_int_equal(pick_tls(m, 3, "", a), 0);
    assert_int_equal(pick_tls(m, 3, "", b), 1);
    assert_int_equal(pick_tls(m, 3, "", c), 1);
    assert_int_equal(pick_tls(m, 3, "", d), 2);
    assert_int_equal(pick_tls(m, 3, "", NULL), 2);
    assert_int_equal(pick_tls(m, 2, "", d), -1);
}

static void test_server_name_valid(void **state)
{
    (void)state;
    assert_true(chain_server_name_valid(STR_LIT("a.test")));
    assert_true(chain_server_name_valid(STR_LIT("*.test")));
    assert_false(chain_server_name_valid(STR_LIT("")));
    assert_false(chain_server_name_valid(STR_LIT("*")));
    assert_false(chain_server_name_valid(STR_LIT("*.")));
    assert_false(chain_server_name_valid(STR_LIT("a*.test")));
    assert_false(chain_server_name_valid(STR_LIT("*.*.test")));
    assert_false(chain_server_name_valid(STR_LIT("www.*.test")));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse),
        cmocka_unit_test(test_destination_port),
        cmocka_unit_test(test_destination_prefix_longest_wins),
        cmocka_unit_test(test_levels_in_order),
        cmocka_unit_test(test_source_criteria),
        cmocka_unit_test(test_overlap),
        cmocka_unit_test(test_server_names),
        cmocka_unit_test(test_server_name_no_fallback),
        cmocka_unit_test(test_transport_protocol),
        cmocka_unit_test(test_application_protocols),
        cmocka_unit_test(test_server_name_valid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
