/* Unit tests for proxy/http/trust: IP address parsing, Envoy's default internal ranges, and
 * x-forwarded-for entries counted from the right. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/http/trust.h"

static bool parses(const char *s)
{
    struct trust_ip ip;
    return trust_ip_parse(str_from_c(s), &ip);
}

static void test_parse(void **state)
{
    (void)state;
    assert_true(parses("1.2.3.4"));
    assert_true(parses("255.255.255.255"));
    assert_true(parses("::1"));
    assert_true(parses("2001:db8::8:800:200c:417a"));
    assert_true(parses("::ffff:10.1.2.3"));
    /* not bare addresses */
    assert_false(parses(""));
    assert_false(parses("1.2.3"));
    assert_false(parses("1.2.3.4.5"));
    assert_false(parses("256.1.1.1"));
    assert_false(parses("1.2.3.4:80"));
    assert_false(parses("[::1]"));
    assert_false(parses("::1%eth0"));
    assert_false(parses(" 1.2.3.4"));
    assert_false(parses("unknown"));
    assert_false(parses("example.com"));
    assert_false(parses("1111:2222:3333:4444:5555:6666:7777:8888:9999:aaaa:bbbb:cccc")); /* long */
    struct trust_ip ip;
    assert_true(trust_ip_parse(STR_LIT("10.20.30.40"), &ip));
    assert_false(ip.v6);
    assert_int_equal(ip.b[0], 10);
    assert_int_equal(ip.b[3], 40);
    /* a view into a longer buffer: only its bytes count */
    assert_true(trust_ip_parse((struct str){"1.2.3.4, 5.6.7.8", 7}, &ip));
}

static void test_internal_ranges(void **state)
{
    (void)state;
    static const char *const yes[] = {
        "10.0.0.1",         "10.255.255.255",    "172.16.0.1",
        "172.31.255.255",   "192.168.0.1",       "192.168.255.255",
        "127.0.0.1",        "127.1.2.3",         "::1",
        "fd00::1",          "fdff:ffff::1",      "::ffff:10.1.2.3",
        "::ffff:127.0.0.1", "::ffff:172.20.0.1", "::ffff:192.168.1.1",
    };
    static const char *const no[] = {
        "1.2.3.4",
        "9.255.255.255",
        "11.0.0.1",
        "172.15.255.255",
        "172.32.0.0",
        "192.167.1.1",
        "192.169.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "::",
        "::2",
        "fc00::1",
        "fe80::1",
        "2001:db8::1",
        "::ffff:1.2.3.4",
        "::ffff:172.32.0.1",
        "::10.0.0.1",
        "not-an-ip",
        "",
    };
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (!trust_text_is_internal(str_from_c(yes[i]))) {
            fail_msg("%s should be internal", yes[i]);
        }
    }
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        if (trust_text_is_internal(str_from_c(no[i]))) {
            fail_msg("%s should not be internal", no[i]);
        }
    }
}

/* The entry, or "(none)". */
static const char *entry(const char *xff, uint32_t skip, bool *only)
{
    static char out[64];
    struct str e;
    bool o = false;
    if (!trust_xff_entry(str_from_c(xff), skip, &e, &o)) {
        return "(none)";
    }
    snprintf(out, sizeof(out), "%.*s", (int)e.len, e.p);
    if (only != NULL) {
        *only = o;
    }
    return out;
}

static void test_xff_entry(void **state)
{
    (void)state;
    bool only = false;
    assert_string_equal(entry("1.2.3.4", 0, &only), "1.2.3.4");
    assert_true(only);
    assert_string_equal(entry("  10.0.0.1 \t", 0, &only), "10.0.0.1");
    assert_true(only);
    assert_string_equal(entry("1.1.1.1, 2.2.2.2,3.3.3.3", 0, &only), "3.3.3.3");
    assert_false(only);
    assert_string_equal(entry("1.1.1.1, 2.2.2.2,3.3.3.3", 1, &only), "2.2.2.2");
    assert_false(only);
    assert_string_equal(entry("1.1.1.1, 2.2.2.2,3.3.3.3", 2, &only), "1.1.1.1");
    assert_false(only); /* the first entry, but skip > 0: not a single address */
    assert_string_equal(entry("1.1.1.1, 2.2.2.2,3.3.3.3", 3, NULL), "(none)");
    assert_string_equal(entry("1.1.1.1", 1, NULL), "(none)");
    assert_string_equal(entry("1.1.1.1", UINT32_MAX, NULL), "(none)");
    assert_string_equal(entry("2001:db8::1, ::1", 0, NULL), "::1");
    assert_string_equal(entry("2001:db8::1, ::1", 1, NULL), "2001:db8::1");
    /* an entry that is no address gives none, even when others are */
    assert_string_equal(entry("1.1.1.1, unknown", 0, NULL), "(none)");
    assert_string_equal(entry("1.1.1.1, unknown", 1, NULL), "1.1.1.1");
    assert_string_equal(entry("1.1.1.1,", 0, NULL), "(none)");
    assert_string_equal(entry("1.1.1.1:8080", 0, NULL), "(none)");
    assert_string_equal(entry("", 0, NULL), "(none)");
    assert_string_equal(entry(",", 1, NULL), "(none)");
    assert_string_equal(entry(",,,,", 3, NULL), "(none)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_internal_ranges),
        cmocka_unit_test(test_xff_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
