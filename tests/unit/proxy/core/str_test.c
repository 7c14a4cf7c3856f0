/* Unit tests for proxy/core/str: the case-insensitive comparisons (ASCII letters only, a NUL an
 * ordinary byte: SAN matching relies on it, hostile-inputs.md case 50) and percent-decoding
 * (remora-xds's API paths and queries, its /debug/xds query). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/str.h"

#define S(lit) ((struct str){(lit), sizeof(lit) - 1})

static void test_str_nocase_compares(void **state)
{
    (void)state;
    assert_true(str_eq_nocase(S("Spiffe://A"), S("spiffe://a")));
    assert_false(str_eq_nocase(S("spiffe://a"), S("spiffe://b")));
    assert_false(str_eq_nocase(S("ab"), S("abc")));
    assert_true(str_eq_nocase(STR_NULL, S("")));
    /* a NUL does not end the comparison (strncasecmp would stop there and say equal) */
    assert_false(str_eq_nocase(S("a\0x"), S("a\0y")));
    assert_true(str_eq_nocase(S("A\0X"), S("a\0x")));
    assert_false(str_has_prefix_nocase(S("ab\0cd"), S("AB\0CE")));
    assert_false(str_has_suffix_nocase(S("x\0ab"), S("y\0AB")));
    assert_true(str_has_suffix_nocase(S("x.Example.COM"), S(".example.com")));
    assert_false(str_contains(S("ab\0cd"), S("b\0ce"), true));
    assert_true(str_contains(S("ab\0cd"), S("B\0C"), true));
    /* only ASCII letters fold: '@' (0x40) is not '`' (0x60), '[' not '{', bytes >= 0x80 kept */
    assert_false(str_eq_nocase(S("@"), S("`")));
    assert_false(str_eq_nocase(S("["), S("{")));
    assert_false(str_eq_nocase(S("\xc0"), S("\xe0")));
    assert_true(str_eq_nocase(S("\xc0z"), S("\xc0Z")));
}

static void check_decode(const char *in, bool plus, const char *want)
{
    char *got = str_pct_decode(in, strlen(in), plus);
    if (want == NULL) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

static void test_str_pct_decode(void **state)
{
    (void)state;
    check_decode("", false, "");
    check_decode("a%20b%2Fc%2fd", false, "a b/c/d");
    check_decode("%41%7e", false, "A~");
    check_decode("a+b", false, "a+b");
    check_decode("a+b%2B", true, "a b+");
    /* a bad or cut escape, and an encoded NUL, fail */
    check_decode("%", false, NULL);
    check_decode("a%2", false, NULL);
    check_decode("%zz", false, NULL);
    check_decode("%00", false, NULL);
    check_decode("a%0", true, NULL);
    /* not NUL-terminated input: only len bytes are read */
    char *got = str_pct_decode("ab%41cd", 5, false);
    assert_string_equal(got, "abA");
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_str_nocase_compares),
        cmocka_unit_test(test_str_pct_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
