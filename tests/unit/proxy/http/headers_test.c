/* Unit tests for the header list. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/headers.h"

static void test_headers_add_get_remove_grow(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 2);
    headers_add(&h, STR_LIT("host"), STR_LIT("a"));
    headers_add(&h, STR_LIT("x-a"), STR_LIT("1"));
    headers_add(&h, STR_LIT("x-a"), STR_LIT("2")); /* grows past the hint */
    headers_add(&h, STR_LIT("x-b"), STR_LIT("3"));
    assert_int_equal(h.n, 4);
    assert_true(str_eq_lit(headers_get(&h, STR_LIT("x-a"))->value, "1"));
    assert_null(headers_get(&h, STR_LIT("X-A"))); /* names are stored lower case */
    assert_int_equal(headers_remove(&h, STR_LIT("x-a")), 2);
    assert_int_equal(h.n, 2);
    /* order of the others is kept */
    assert_true(str_eq_lit(h.v[0].name, "host"));
    assert_true(str_eq_lit(h.v[1].name, "x-b"));
    assert_int_equal(headers_remove(&h, STR_LIT("nothing")), 0);
    arena_deinit(&a);
}

static void test_headers_copy_lowercases_and_owns(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 0);
    char name[] = "X-Mixed-Case";
    char value[] = "Value";
    headers_add_copy(&h, str_from_c(name), str_from_c(value));
    name[0] = 'Q';
    value[0] = 'Q';
    struct header *x = headers_get(&h, STR_LIT("x-mixed-case"));
    assert_non_null(x);
    assert_true(str_eq_lit(x->value, "Value"));
    headers_set_copy(&h, STR_LIT("x-mixed-case"), STR_LIT("new"));
    assert_int_equal(h.n, 1);
    assert_true(str_eq_lit(headers_get(&h, STR_LIT("x-mixed-case"))->value, "new"));
    assert_int_equal(headers_bytes(&h), strlen("x-mixed-case") + 3);
    arena_deinit(&a);
}

static void test_headers_join_cookie_crumbs(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 4);
    headers_add(&h, STR_LIT("x-a"), STR_LIT("1"));
    assert_int_equal(headers_join(&h, STR_LIT("cookie"), STR_LIT("; ")), 0);
    headers_add(&h, STR_LIT("cookie"), STR_LIT("a=1"));
    assert_int_equal(headers_join(&h, STR_LIT("cookie"), STR_LIT("; ")), 1); /* alone: as is */
    headers_add(&h, STR_LIT("x-b"), STR_LIT("2"));
    headers_add(&h, STR_LIT("cookie"), STR_LIT("b=2"));
    headers_add(&h, STR_LIT("cookie"), STR_LIT(""));
    headers_add(&h, STR_LIT("cookie"), STR_LIT("c=3"));
    assert_int_equal(headers_join(&h, STR_LIT("cookie"), STR_LIT("; ")), 4);
    /* one field, at the first crumb's place, the others' order kept */
    assert_int_equal(h.n, 3);
    assert_true(str_eq_lit(h.v[0].name, "x-a"));
    assert_true(str_eq_lit(h.v[1].name, "cookie"));
    assert_true(str_eq_lit(h.v[1].value, "a=1; b=2; ; c=3"));
    assert_true(str_eq_lit(h.v[2].name, "x-b"));
    arena_deinit(&a);

    /* 100 crumbs of 600 bytes: one copy of the result, not one per crumb (a join per field
     * would copy ~3 MB into the stream's arena) */
    static char crumb[600];
    memset(crumb, 'c', sizeof(crumb));
    arena_init(&a, 0);
    headers_init(&h, &a, 128);
    for (int i = 0; i < 100; i++) {
        headers_add(&h, STR_LIT("cookie"), (struct str){crumb, sizeof(crumb)});
    }
    size_t before = a.used;
    assert_int_equal(headers_join(&h, STR_LIT("cookie"), STR_LIT("; ")), 100);
    assert_int_equal(h.n, 1);
    assert_int_equal(h.v[0].value.len, 100 * 600 + 99 * 2);
    assert_true(a.used - before < 100 * 600 + 99 * 2 + 64);
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers_add_get_remove_grow),
        cmocka_unit_test(test_headers_copy_lowercases_and_owns),
        cmocka_unit_test(test_headers_join_cookie_crumbs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
