/* Unit tests for regex: RE2-style full matching on PCRE2, the backtracking limits, and
 * RE2::GlobalReplace-style rewriting. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "proxy/core/arena.h"
#include "proxy/http/regex.h"

static struct regex *must(const char *pattern, unsigned flags)
{
    char err[200];
    struct regex *re = regex_new(pattern, flags, err, sizeof(err));
    if (re == NULL) {
        fail_msg("%s: %s", pattern, err);
    }
    return re;
}

static bool full(const char *pattern, const char *subject)
{
    struct regex *re = must(pattern, REGEX_FULL);
    bool m = regex_match(re, str_from_c(subject));
    regex_free(re);
    return m;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_regex_full_match_is_anchored(void **state)
{
    (void)state;
    assert_true(full("/api/v[0-9]+/users", "/api/v12/users"));
    assert_false(full("/api/v[0-9]+/users", "/api/v12/users/7")); /* not a search */
    assert_false(full("/api/v[0-9]+/users", "x/api/v1/users"));
    assert_false(full("api", "/api"));
    /* FullMatch backtracks into alternatives to reach the end, as RE2 does */
    assert_true(full("a|ab", "ab"));
    assert_true(full("(foo|foobar)", "foobar"));
    /* `$` is only the very end (RE2), never "before a final newline" */
    assert_false(full("abc$", "abc\n"));
    /* `.` does not match a newline; (?s) makes it */
    assert_false(full("a.c", "a\nc"));
    assert_true(full("(?s)a.c", "a\nc"));
    /* case-insensitive flag, RE2 syntax */
    assert_true(full("(?i)/Users/[a-z]+", "/USERS/Bob"));
    /* \d is ASCII only */
    assert_true(full("\\d+", "0123"));
    /* an empty subject */
    assert_true(full("x*", ""));
    assert_false(full("x+", ""));
    /* UTF-8 characters count as one, and invalid UTF-8 in a subject is no error */
    assert_true(full("caf.", "caf\xc3\xa9"));
    assert_false(full("caf.", "caf\xff\xfe"));
    /* named groups, RE2 style */
    assert_true(full("/(?P<id>[0-9]+)", "/42"));
}

static void test_regex_search_without_full(void **state)
{
    (void)state;
    struct regex *re = must("v[0-9]+", 0);
    assert_true(regex_match(re, STR_LIT("/api/v2/x")));
    assert_false(regex_match(re, STR_LIT("/api/x")));
    regex_free(re);
}

static void test_regex_invalid_patterns_fail_with_a_message(void **state)
{
    (void)state;
    char err[200];
    assert_null(regex_new("(abc", REGEX_FULL, err, sizeof(err)));
    assert_non_null(strstr(err, "invalid regex: missing closing parenthesis"));
    assert_null(regex_new("a{2,1}", REGEX_FULL, err, sizeof(err)));
    assert_non_null(strstr(err, "invalid regex"));
    assert_null(regex_new("a\\Cb", REGEX_FULL, err, sizeof(err))); /* \C is refused */
}

static void test_regex_pathological_pattern_finishes_fast(void **state)
{
    (void)state;
    /* (a+)+$ against "aaaa...a!" backtracks exponentially in a plain backtracking engine
     * (2^n paths for n a's). Under the match limit it gives up at once, as no match. */
    char subject[4097];
    memset(subject, 'a', sizeof(subject) - 2);
    subject[sizeof(subject) - 2] = '!';
    subject[sizeof(subject) - 1] = '\0';
    struct regex *search = must("(a+)+$", 0);
    struct regex *fullre = must("(a+)+", REGEX_FULL);
    struct regex *nested = must("(x+x+)+y", REGEX_FULL);
    double t0 = now_s();
    for (int i = 0; i < 10; i++) {
        assert_false(regex_match(search, str_from_c(subject)));
        assert_false(regex_match(fullre, str_from_c(subject)));
        assert_false(
            regex_match(nested, STR_LIT("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx")));
    }
    double dt = now_s() - t0;
    /* 30 matches; each is bounded by REGEX_MATCH_LIMIT (about a millisecond with the JIT).
     * Unbounded, one of them would not end this century. Generous for sanitizer builds. */
    assert_true(dt < 2.0);
    /* The same patterns still match what they should. */
    assert_true(regex_match(search, STR_LIT("xaaaa")));
    assert_true(regex_match(fullre, STR_LIT("aaaa")));
    regex_free(search);
    regex_free(fullre);
    regex_free(nested);
}

static void test_regex_linear_patterns_on_long_values_still_match(void **state)
{
    (void)state;
    /* A typical header matcher on an 8 KiB value stays far below the limit. */
    char v[8193];
    memset(v, 'x', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    v[4000] = 'a';
    v[8000] = 'b';
    struct regex *re = must(".*a.*b.*", REGEX_FULL);
    assert_true(regex_match(re, str_from_c(v)));
    regex_free(re);
}

static void test_regex_check_rewrite(void **state)
{
    (void)state;
    char err[200];
    struct regex *re = must("^/service/([^/]+)(/.*)$", 0);
    assert_int_equal(regex_capture_count(re), 2);
    assert_int_equal(regex_check_rewrite(re, STR_LIT("\\2/instance/\\1"), err, sizeof(err)), 0);
    assert_int_equal(regex_check_rewrite(re, STR_LIT("\\0 and \\\\"), err, sizeof(err)), 0);
    assert_int_equal(regex_check_rewrite(re, STR_LIT("\\3"), err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "(it has 2)"));
    assert_int_equal(regex_check_rewrite(re, STR_LIT("\\n"), err, sizeof(err)), -EINVAL);
    assert_int_equal(regex_check_rewrite(re, STR_LIT("abc\\"), err, sizeof(err)), -EINVAL);
    regex_free(re);
}

static const char *replace(const char *pattern, const char *subject, const char *rw,
                           struct arena *a, uint32_t *count)
{
    struct regex *re = must(pattern, 0);
    struct str out;
    *count = regex_replace_all(re, str_from_c(subject), str_from_c(rw), a, &out);
    regex_free(re);
    return arena_strdup(a, out).p;
}

static void test_regex_replace_all_like_re2(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    uint32_t n;
    /* Envoy's documented regex_rewrite examples */
    assert_string_equal(
        replace("^/service/([^/]+)(/.*)$", "/service/foo/v1/api", "\\2/instance/\\1", &a, &n),
        "/v1/api/instance/foo");
    assert_int_equal(n, 1);
    assert_string_equal(replace("one", "/xxx/one/yyy/one/zzz", "two", &a, &n),
                        "/xxx/two/yyy/two/zzz");
    assert_int_equal(n, 2);
    assert_string_equal(replace("^(.*?)one(.*)$", "/xxx/one/yyy/one/zzz", "\\1two\\2", &a, &n),
                        "/xxx/two/yyy/one/zzz");
    assert_string_equal(replace("(?i)/xxx/", "/aaa/XxX/bbb", "/yyy/", &a, &n), "/aaa/yyy/bbb");
    /* no match: the subject unchanged, count 0 */
    assert_string_equal(replace("nope", "/a/b", "x", &a, &n), "/a/b");
    assert_int_equal(n, 0);
    /* empty matches, as RE2::GlobalReplace: "a*" on "baaac" gives "-b-c-" */
    assert_string_equal(replace("a*", "baaac", "-", &a, &n), "-b-c-");
    assert_int_equal(n, 3);
    assert_string_equal(replace("", "abc", "-", &a, &n), "-a-b-c-");
    /* \0 is the whole match; \\ a backslash; an unset group is empty */
    assert_string_equal(replace("b+", "abbc", "[\\0\\\\]", &a, &n), "a[bb\\]c");
    assert_string_equal(replace("(x)|(b)", "ab", "<\\1\\2>", &a, &n), "a<b>");
    /* multi-byte characters are stepped over whole after an empty match */
    assert_string_equal(replace("", "\xc3\xa9", "-", &a, &n), "-\xc3\xa9-");
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_regex_full_match_is_anchored),
        cmocka_unit_test(test_regex_search_without_full),
        cmocka_unit_test(test_regex_invalid_patterns_fail_with_a_message),
        cmocka_unit_test(test_regex_pathological_pattern_finishes_fast),
        cmocka_unit_test(test_regex_linear_patterns_on_long_values_still_match),
        cmocka_unit_test(test_regex_check_rewrite),
        cmocka_unit_test(test_regex_replace_all_like_re2),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
