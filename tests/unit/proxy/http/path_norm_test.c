/* Unit tests for proxy/http/path_norm: RFC 3986's dot-segment examples, Envoy's own
 * path_utility cases, the hostile paths of the hostile-inputs catalogue (traversal, encoded
 * slashes and dots, nested escapes, NUL), the order of the three steps, and bounds (long paths,
 * many segments, '%' at the end). Every output is written into a buffer of exactly
 * path_norm_bound() bytes (ASan checks the bound) and normalized again (idempotence). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/path_norm.h"

static const struct path_norm_opts NORM = {.normalize = true};
static const struct path_norm_opts MERGE = {.merge_slashes = true};
static const struct path_norm_opts BOTH = {.normalize = true, .merge_slashes = true};

static struct path_norm_opts with_slashes(bool normalize, bool merge, enum path_slashes_action a)
{
    return (struct path_norm_opts){
        .normalize = normalize, .merge_slashes = merge, .escaped_slashes = (uint8_t)a};
}

/* Normalizes in[0, len) into a malloc'd NUL-terminated string (the caller frees it). */
static char *run_n(const struct path_norm_opts *o, const char *in, size_t len,
                   enum path_norm_result *r)
{
    struct str s = {in, len};
    size_t bound = path_norm_bound(o, s);
    char *out = malloc(bound); /* exactly the bound: ASan reports a write past it */
    assert_non_null(out);
    size_t n = 12345;
    *r = path_normalize(o, s, out, &n);
    assert_true(n <= bound);
    char *z = malloc(n + 1);
    assert_non_null(z);
    memcpy(z, out, n);
    z[n] = '\0';
    free(out);
    return z;
}

static char *run(const struct path_norm_opts *o, const char *in, enum path_norm_result *r)
{
    return run_n(o, in, strlen(in), r);
}

/* `in` normalizes to `want` with result `want_r`; a CONTINUE output normalizes to itself (the
 * escaped-slash step aside, which is not idempotent by design: it changes what was there). */
static void check(const struct path_norm_opts *o, const char *in, const char *want,
                  enum path_norm_result want_r)
{
    enum path_norm_result r;
    char *got = run(o, in, &r);
    if (r != want_r || (want != NULL && strcmp(got, want) != 0)) {
        fail_msg("%s: got \"%s\" (%d), want \"%s\" (%d)", in, got, (int)r, want ? want : "",
                 (int)want_r);
    }
    if (r == PATH_NORM_CONTINUE) {
        enum path_norm_result r2;
        char *again = run(o, got, &r2);
        if (r2 != PATH_NORM_CONTINUE || strcmp(again, got) != 0) {
            fail_msg("not idempotent: %s -> %s -> %s", in, got, again);
        }
        free(again);
    }
    free(got);
}

struct pair {
    const char *in, *want;
};

/* RFC 3986 5.4.1 and 5.4.2, as the merged paths remove_dot_segments sees (base /b/c/d;p),
 * and 5.2.4's own examples. */
static void test_rfc3986_dot_segments(void **state)
{
    (void)state;
    static const struct pair cases[] = {
        {"/b/c/g", "/b/c/g"},
        {"/b/c/./g", "/b/c/g"},
        {"/b/c/g/", "/b/c/g/"},
        {"/g", "/g"},
        {"/b/c/.", "/b/c/"},
        {"/b/c/./", "/b/c/"},
        {"/b/c/..", "/b/"},
        {"/b/c/../", "/b/"},
        {"/b/c/../g", "/b/g"},
        {"/b/c/../..", "/"},
        {"/b/c/../../", "/"},
        {"/b/c/../../g", "/g"},
        /* 5.4.2 abnormal examples */
        {"/b/c/../../../g", "/g"},
        {"/b/c/../../../../g", "/g"},
        {"/./g", "/g"},
        {"/../g", "/g"},
        {"/b/c/g.", "/b/c/g."},
        {"/b/c/.g", "/b/c/.g"},
        {"/b/c/g..", "/b/c/g.."},
        {"/b/c/..g", "/b/c/..g"},
        {"/b/c/./../g", "/b/g"},
        {"/b/c/./g/.", "/b/c/g/"},
        {"/b/c/g/./h", "/b/c/g/h"},
        {"/b/c/g/../h", "/b/c/h"},
        {"/b/c/g;x=1/./y", "/b/c/g;x=1/y"},
        {"/b/c/g;x=1/../y", "/b/c/y"},
        /* 5.2.4 */
        {"/a/b/c/./../../g", "/a/g"},
        {"mid/content=5/../6", "/mid/6"},
        /* never above the root */
        {"/..", "/"},
        {"/../..", "/"},
        {"/.", "/"},
        {"/a/..", "/"},
        {"/a//../b", "/a/b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check(&NORM, cases[i].in, cases[i].want, PATH_NORM_CONTINUE);
    }
}

/* Envoy's test/common/http/path_utility_test.cc cases. */
static void test_envoy_cases(void **state)
{
    (void)state;
    static const struct pair normalize[] = {
        {"/xyz", "/xyz"},
        {"/x/y/z", "/x/y/z"},
        {"/a/b/../c", "/a/c"},
        {"/a/b/./c", "/a/b/c"},
        {"a/b/../c", "/a/c"},
        {"/a/b/../../../../c", "/c"},
        {"/a/..\\c", "/c"},
        {"/%c0%af", "/%c0%af"},
        {"/%5c%25", "/%5c%25"},
        {"/a/b/%2E%2E/c", "/a/c"},
        {"/A/B/C", "/A/B/C"},
        {"/a/b/%2e%2e/c", "/a/c"},
        {"/a/%2F%2f/c", "/a/%2F%2f/c"},
    };
    for (size_t i = 0; i < sizeof(normalize) / sizeof(normalize[0]); i++) {
        check(&NORM, normalize[i].in, normalize[i].want, PATH_NORM_CONTINUE);
    }
    static const char *const invalid[] = {"/xyz/.%00../abc", "/xyz/%00.%00./abc",
                                          "/xyz/AAAAA%%0000/abc"};
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        check(&NORM, invalid[i], NULL, PATH_NORM_REJECT);
    }
    static const struct pair merge[] = {
        {"a/b/c", "a/b/c"},
        {"a//b/c", "a/b/c"},
        {"/a//b/c", "/a/b/c"},
        {"/a//b/c/", "/a/b/c/"},
        {"//a/b/c", "/a/b/c"},
        {"/a/b/c//", "/a/b/c/"},
        {"/a////b/c", "/a/b/c"},
        {"/a/b/c?x//y", "/a/b/c?x//y"},
        {"/a//b/c?x//y", "/a/b/c?x//y"},
        {"/a/b/c?", "/a/b/c?"},
        /* Envoy's split-and-join keeps a leading and a trailing '/': slashes only give "//" */
        {"//", "//"},
        {"////", "//"},
        {"///?x//", "//?x//"},
        {"/", "/"},
    };
    for (size_t i = 0; i < sizeof(merge) / sizeof(merge[0]); i++) {
        check(&MERGE, merge[i].in, merge[i].want, PATH_NORM_CONTINUE);
    }
}

static void test_percent_decoding(void **state)
{
    (void)state;
    static const struct pair cases[] = {
        {"/%41%42c", "/ABc"},           /* unreserved: decoded */
        {"/%7e%7E%2d%5f%30", "/~~-_0"}, /* ~ - _ and digits too */
        {"/a%3Ab%3ac", "/a%3Ab%3ac"},   /* reserved or other: kept, hex case as received */
        {"/%25%2525", "/%25%2525"},     /* an escaped '%' stays escaped */
        {"/a%zz", "/a%zz"},             /* not an escape: kept (Envoy's permissive rule) */
        {"/a%", "/a%"},                 /* '%' at the end */
        {"/a%4", "/a%4"},
        {"/%", "/%"},
        {"/a/%2e%2", "/a/.%2"},
        {"/%2e", "/"},
        {"/%2e%2E", "/"},
        {"/a/%2ex", "/a/.x"},
        /* nested escapes never become escapes in the output */
        {"/%%30%30", "/%2500"},
        {"/%%300", "/%2500"},
        {"/%3%30", "/%2530"},
        {"/%%41", "/%A"},
        {"/%%32%65%%32%65/admin", "/%252e%252e/admin"},
        /* bytes a path cannot carry are escaped in upper case */
        {"/a b", "/a%20b"},
        {"/caf\xc3\xa9", "/caf%C3%A9"},
        {"/a\"<>^`{|}", "/a%22%3C%3E%5E%60%7B%7C%7D"},
        {"/admin#x", "/admin%23x"},
        {"/a\x7f", "/a%7F"},
        {"/a!$&'()*+,;=:@[]", "/a!$&'()*+,;=:@[]"},
        /* the query is kept byte for byte */
        {"/a/../b?c/../d%41", "/b?c/../d%41"},
        {"/a?", "/a?"},
        {"/?%00", "/?%00"},
        {"\\a\\b", "/a/b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        check(&NORM, cases[i].in, cases[i].want, PATH_NORM_CONTINUE);
    }
    check(&NORM, "/admin%00", NULL, PATH_NORM_REJECT);
    check(&NORM, "/a%00b", NULL, PATH_NORM_REJECT);
    enum path_norm_result r;
    char *got = run_n(&NORM, "/a\0b", 4, &r); /* a raw NUL */
    assert_int_equal(r, PATH_NORM_REJECT);
    free(got);
}

/* The catalogue's RBAC-bypass paths (deny /admin): none may come out as /admin unless it was
 * meant as /admin after normalization. */
static void test_hostile_paths(void **state)
{
    (void)state;
    check(&NORM, "/public/../admin", "/admin", PATH_NORM_CONTINUE);
    check(&NORM, "/public/%2e%2e/admin", "/admin", PATH_NORM_CONTINUE);
    check(&NORM, "/public/%2E./admin", "/admin", PATH_NORM_CONTINUE);
    /* escaped slashes: one segment unless the action unescapes them */
    check(&NORM, "/public%2F..%2Fadmin", "/public%2F..%2Fadmin", PATH_NORM_CONTINUE);
    check(&NORM, "/public/..%5Cadmin", "/public/..%5Cadmin", PATH_NORM_CONTINUE);
    struct path_norm_opts fwd = with_slashes(true, true, PATH_SLASHES_UNESCAPE_FORWARD);
    check(&fwd, "/public%2F..%2Fadmin", "/admin", PATH_NORM_CONTINUE);
    check(&fwd, "/public/..%5Cadmin", "/admin", PATH_NORM_CONTINUE);
    check(&fwd, "/public/..%5cadmin", "/admin", PATH_NORM_CONTINUE);
    struct path_norm_opts rej = with_slashes(true, true, PATH_SLASHES_REJECT);
    check(&rej, "/public%2F..%2Fadmin", NULL, PATH_NORM_REJECT);
    check(&rej, "/public/..%5cadmin", NULL, PATH_NORM_REJECT);
    check(&rej, "/public/../admin", "/admin", PATH_NORM_CONTINUE);
    check(&rej, "/a?x=%2F", "/a?x=%2F", PATH_NORM_CONTINUE); /* only the path counts */
    struct path_norm_opts redir = with_slashes(true, true, PATH_SLASHES_UNESCAPE_REDIRECT);
    check(&redir, "/public%2F..%2Fadmin?q=%2F", "/admin?q=%2F", PATH_NORM_REDIRECT);
    check(&redir, "/public/x", "/public/x", PATH_NORM_CONTINUE);
    check(&BOTH, "//admin", "/admin", PATH_NORM_CONTINUE);
    check(&BOTH, "/admin;x=1", "/admin;x=1", PATH_NORM_CONTINUE);
    check(&BOTH, "/public/..;x/admin", "/public/..;x/admin", PATH_NORM_CONTINUE);
    check(&BOTH, "/ADMIN", "/ADMIN", PATH_NORM_CONTINUE);
    check(&BOTH, "/admin%00", NULL, PATH_NORM_REJECT);
    check(&BOTH, "/%%32%65%%32%65/admin", "/%252e%252e/admin", PATH_NORM_CONTINUE);
}

/* Step order: escaped slashes, then normalize_path, then merge_slashes (Envoy's). */
static void test_order(void **state)
{
    (void)state;
    /* merging after normalizing: "/a/.//../b" keeps /a (merging first would give /b) */
    check(&BOTH, "/a/.//../b", "/a/b", PATH_NORM_CONTINUE);
    check(&MERGE, "/a/.//../b", "/a/./../b", PATH_NORM_CONTINUE);
    /* unescaping before normalizing: the %2F..%2F becomes a dot segment */
    struct path_norm_opts fwd_only = with_slashes(false, false, PATH_SLASHES_UNESCAPE_FORWARD);
    check(&fwd_only, "/a%2Fb%2fc%5Cd%5ce", "/a/b/c\\d\\e", PATH_NORM_CONTINUE);
    check(&fwd_only, "/a%2F?b%2F", "/a/?b%2F", PATH_NORM_CONTINUE);
    check(&fwd_only, "/a%2", "/a%2", PATH_NORM_CONTINUE);
    check(&fwd_only, "/a%%2F2F", "/a%/2F", PATH_NORM_CONTINUE);
    struct path_norm_opts redir = with_slashes(false, true, PATH_SLASHES_UNESCAPE_REDIRECT);
    check(&redir, "/a%2F%2Fb", "/a/b", PATH_NORM_REDIRECT);
    /* nothing on: the input, unchanged */
    struct path_norm_opts none = {0};
    assert_false(path_norm_enabled(&none));
    assert_true(path_norm_enabled(&fwd_only));
    check(&none, "/a/../b//c", "/a/../b//c", PATH_NORM_CONTINUE);
    /* normalize_path alone keeps "//" (only merge_slashes merges), as Envoy's canonicalizer */
    check(&NORM, "//", "//", PATH_NORM_CONTINUE);
    check(&NORM, "/a//b/./c//", "/a//b/c//", PATH_NORM_CONTINUE);
    check(&NORM, "//a/../b", "//b", PATH_NORM_CONTINUE);
    check(&BOTH, "//a/../b", "/b", PATH_NORM_CONTINUE);
    check(&BOTH, "/.//", "//", PATH_NORM_CONTINUE);
}

static void test_bounds(void **state)
{
    (void)state;
    enum { N = 64 * 1024 };
    char *in = malloc(3 * N + 2);
    assert_non_null(in);
    /* a long path of one-letter segments: unchanged */
    for (size_t i = 0; i < N; i += 2) {
        in[i] = '/';
        in[i + 1] = 'a';
    }
    in[N] = '\0';
    check(&BOTH, in, in, PATH_NORM_CONTINUE);
    /* many ".." segments climb to the root and no further */
    size_t n = 0;
    for (int i = 0; i < 10000; i++) {
        memcpy(in + n, "/a", 2);
        n += 2;
    }
    for (int i = 0; i < 20000; i++) {
        memcpy(in + n, "/..", 3);
        n += 3;
    }
    in[n] = '\0';
    check(&BOTH, in, "/", PATH_NORM_CONTINUE);
    /* every byte grows (escaped): the bound holds */
    memset(in, 0x80, N);
    in[0] = '/';
    in[N] = '\0';
    enum path_norm_result r;
    char *got = run(&NORM, in, &r);
    assert_int_equal(r, PATH_NORM_CONTINUE);
    assert_int_equal(strlen(got), 1 + 3 * (N - 1));
    free(got);
    /* every '%' a nested escape candidate: "%%30%30" repeated */
    n = 0;
    in[n++] = '/';
    while (n + 7 < N) {
        memcpy(in + n, "%%30%30", 7);
        n += 7;
    }
    in[n] = '\0';
    struct path_norm_opts all = with_slashes(true, true, PATH_SLASHES_UNESCAPE_FORWARD);
    got = run(&all, in, &r);
    assert_int_equal(r, PATH_NORM_CONTINUE);
    assert_null(strstr(got, "%00"));
    free(got);
    /* all slashes, escaped or not */
    n = 0;
    in[n++] = '/';
    while (n + 3 < N) {
        memcpy(in + n, "%2F", 3);
        n += 3;
    }
    in[n] = '\0';
    check(&all, in, "//", PATH_NORM_CONTINUE); /* slashes only: Envoy's "//" */
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3986_dot_segments),
        cmocka_unit_test(test_envoy_cases),
        cmocka_unit_test(test_percent_decoding),
        cmocka_unit_test(test_hostile_paths),
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
