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
    return chain_select(m, n, (struct sockaddr *)&l, (struct sockaddr *)&p);
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
    assert_int_equal(chain_select(any, 2, NULL, NULL), 1);
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
        {.src_type = CHAIN_SRC_LOCAL, .raw_buffer = true},
        {.src_type = CHAIN_SRC_EXTERNAL, .raw_buffer = true},
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
    struct chain_match t1 = {.raw_buffer = true};
    assert_false(chain_match_overlap(&t1, &e1));
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
