/* Unit tests for regex: RE2-style full matching on PCRE2, the backtracking limits, and
 * RE2::GlobalReplace-style rewriting. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

/* A REGEX_FULL pattern's literal head is compared with memcmp before PCRE2 runs; that shortcut
 * must never change an answer, whatever follows the literal text. */
static void test_regex_literal_prefix_never_changes_a_result(void **state)
{
    (void)state;
    static const struct {
        const char *pattern, *subject;
        bool match;
    } cases[] = {
        {"/api/v[0-9]+/.*", "/api/v2/x", true},
        {"/api/v[0-9]+/.*", "/api/w2/x", false},
        {"/api/v[0-9]+/.*", "/ap", false}, /* shorter than the literal head */
        {"/api/v[0-9]+/.*", "", false},
        {"abc", "abc", true},
        {"abc", "abd", false},
        {"abc", "ab", false},
        /* a quantifier takes the last literal character out of the head */
        {"ab*c", "ac", true},
        {"ab?", "a", true},
        {"ab+", "abbb", true},
        {"ab{0}c", "ac", true},
        {"ab{2}c", "abbc", true},
        /* alternation anywhere: no head at all */
        {"abc|xyz", "xyz", true},
        {"ab(c|d)", "abd", true},
        {"a(?:bc|xy)", "axy", true},
        /* escapes, classes, groups and anchors end the head */
        {"a\\.b", "a.b", true},
        {"a\\.b", "axb", false},
        {"a[bc]d", "acd", true},
        {"a(?i)BC", "abc", true},
        {"(?i)ABC", "abc", true},
        {"^abc", "abc", true},
        {"a\\Qb*\\E", "ab*", true},
        /* a multi-byte character followed by a quantifier repeats the whole character */
        {"caf\xc3\xa9+", "caf\xc3\xa9\xc3\xa9", true},
        {"\xc3\xa9*x", "x", true},
        /* a subject with invalid UTF-8 after the head (invalid bytes match nothing) */
        {"ab.", "ab\xff", false},
        {"ab.*", "ab\xff\xfe", false},
        {"ab.*", "ab", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (full(cases[i].pattern, cases[i].subject) != cases[i].match) {
            fail_msg("%s on \"%s\": expected %s", cases[i].pattern, cases[i].subject,
                     cases[i].match ? "a match" : "no match");
        }
    }
}

/* Several threads match and rewrite with the same compiled regexes at once (each thread's match
 * data is its own); every answer stays right, and the match limit still holds on every thread. */
struct regex_thread_arg {
    const struct regex *route, *groups, *patho;
    int errors;
};

static void *regex_thread(void *p)
{
    struct regex_thread_arg *t = p;
    struct arena a;
    arena_init(&a, 0);
    char path[64];
    for (int i = 0; i < 3000; i++) {
        int len = snprintf(path, sizeof(path), "/api/v%d/users", i);
        bool want = true;
        if (i % 3 == 1) {
            path[5] = 'w'; /* /api/w...: no match */
            want = false;
        }
        if (regex_match(t->route, (struct str){path, (size_t)len}) != want) {
            t->errors++;
        }
        if (i % 100 == 0) {
            struct str out;
            uint32_t n = regex_replace_all(t->groups, STR_LIT("/svc/a1/b2/c3"),
                                           STR_LIT("\\3-\\2-\\1"), &a, &out);
            if (n != 1 || !str_eq(out, STR_LIT("c3-b2-a1"))) {
                t->errors++;
            }
            arena_reset(&a);
        }
        if (i % 1000 == 0 &&
            regex_match(t->patho, STR_LIT("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))) {
            t->errors++;
        }
    }
    arena_deinit(&a);
    return NULL;
}

static void test_regex_threads_share_compiled_regexes(void **state)
{
    (void)state;
    struct regex *route = must("/api/v[0-9]+/users", REGEX_FULL);
    struct regex *groups = must("/svc/([a-z0-9]+)/([a-z0-9]+)/([a-z0-9]+)", 0);
    struct regex *patho = must("(x+x+)+y", REGEX_FULL);
    enum { N = 4 };
    pthread_t th[N];
    struct regex_thread_arg args[N];
    for (int i = 0; i < N; i++) {
        args[i] = (struct regex_thread_arg){route, groups, patho, 0};
        assert_int_equal(pthread_create(&th[i], NULL, regex_thread, &args[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].errors, 0);
    }
    /* and on this thread, after the others ended */
    struct regex_thread_arg self = {route, groups, patho, 0};
    regex_thread(&self);
    assert_int_equal(self.errors, 0);
    regex_free(route);
    regex_free(groups);
    regex_free(patho);
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
        cmocka_unit_test(test_regex_literal_prefix_never_changes_a_result),
        cmocka_unit_test(test_regex_threads_share_compiled_regexes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
