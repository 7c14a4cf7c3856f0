/* Unit tests for router: virtual host selection, route matching (path, regex, headers, query
 * parameters), the route's cluster (cluster_header, weighted_clusters) and hash keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/config/cluster_map.h"
#include "proxy/config/config.h"
#include "proxy/core/hash.h"
#include "proxy/http/headers.h"
#include "proxy/http/regex.h"
#include "proxy/http/router.h"

static const struct str exact_dom[] = {STR_LIT("api.example.com")};
static const struct str suffix_short[] = {STR_LIT(".example.com")};
static const struct str suffix_long[] = {STR_LIT(".api2.example.com")};
static const struct str prefix_dom[] = {STR_LIT("api.")};

static struct vhost_cfg vhosts[5];

static void setup_vhosts(void)
{
    memset(vhosts, 0, sizeof(vhosts));
    vhosts[0].name = STR_LIT("wild");
    vhosts[0].is_wildcard = true;
    vhosts[1].name = STR_LIT("suffix");
    vhosts[1].suffixes = suffix_short;
    vhosts[1].n_suffixes = 1;
    vhosts[2].name = STR_LIT("suffix-long");
    vhosts[2].suffixes = suffix_long;
    vhosts[2].n_suffixes = 1;
    vhosts[3].name = STR_LIT("prefix");
    vhosts[3].prefixes = prefix_dom;
    vhosts[3].n_prefixes = 1;
    vhosts[4].name = STR_LIT("exact");
    vhosts[4].exact = exact_dom;
    vhosts[4].n_exact = 1;
}

static void test_router_vhost_precedence(void **state)
{
    (void)state;
    setup_vhosts();
    struct route_table t = {.vhosts = vhosts, .n_vhosts = 5};
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("api.example.com")), &vhosts[4]);
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("API.Example.COM")), &vhosts[4]);
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("x.api2.example.com")), &vhosts[2]);
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("www.example.com")), &vhosts[1]);
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("api.other.org")), &vhosts[3]);
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("nothing.org")), &vhosts[0]);
    /* the suffix needs at least one character before it */
    assert_ptr_equal(router_select_vhost(&t, STR_LIT(".example.com")), &vhosts[0]);
    /* the port is part of the Host (Envoy does not strip it by default) */
    assert_ptr_equal(router_select_vhost(&t, STR_LIT("api.example.com:8080")), &vhosts[3]);
}

static void test_router_no_wildcard_no_vhost(void **state)
{
    (void)state;
    setup_vhosts();
    struct route_table t = {.vhosts = &vhosts[4], .n_vhosts = 1};
    assert_null(router_select_vhost(&t, STR_LIT("other")));
}

static struct route_req req(const char *method, const char *path, const struct headers *h)
{
    return (struct route_req){.method = str_from_c(method),
                              .path = str_from_c(path),
                              .authority = STR_LIT("host"),
                              .scheme = STR_LIT("http"),
                              .headers = h,
                              .source_ip = STR_LIT("10.1.2.3")};
}

static void test_router_prefix_path_and_order(void **state)
{
    (void)state;
    struct route_cfg routes[3] = {
        {.name = STR_LIT("exact"),
         .match_kind = RM_PATH,
         .match = STR_LIT("/a"),
         .case_sensitive = true},
        {.name = STR_LIT("pfx"),
         .match_kind = RM_PREFIX,
         .match = STR_LIT("/a"),
         .case_sensitive = true},
        {.name = STR_LIT("all"),
         .match_kind = RM_PREFIX,
         .match = STR_LIT("/"),
         .case_sensitive = true},
    };
    struct vhost_cfg vh = {.routes = routes, .n_routes = 3};
    struct route_req r = req("GET", "/a", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[0]);
    r = req("GET", "/a?x=1", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[0]); /* query ignored for path */
    r = req("GET", "/abc", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[1]);
    r = req("GET", "/A", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[2]); /* case-sensitive */
    routes[1].case_sensitive = false;
    assert_ptr_equal(router_match_route(&vh, &r), &routes[1]);
}

static void test_router_header_matchers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 4);
    headers_add(&h, STR_LIT("x-user"), STR_LIT("Alice-Admin"));
    headers_add(&h, STR_LIT("x-canary"), STR_LIT("1"));

    struct header_matcher m[] = {
        {.name = STR_LIT("x-user"),
         .kind = HM_PREFIX,
         .value = STR_LIT("alice"),
         .ignore_case = true},
        {.name = STR_LIT("x-user"), .kind = HM_SUFFIX, .value = STR_LIT("Admin")},
        {.name = STR_LIT("x-user"), .kind = HM_CONTAINS, .value = STR_LIT("e-A")},
        {.name = STR_LIT("x-canary"), .kind = HM_EXACT, .value = STR_LIT("1")},
        {.name = STR_LIT("x-debug"), .kind = HM_PRESENT, .present_value = false},
        {.name = STR_LIT(":method"), .kind = HM_EXACT, .value = STR_LIT("POST"), .invert = true},
    };
    struct route_cfg rt = {.match_kind = RM_PREFIX,
                           .match = STR_LIT("/"),
                           .case_sensitive = true,
                           .headers = m,
                           .n_headers = 6};
    struct vhost_cfg vh = {.routes = &rt, .n_routes = 1};
    struct route_req r = req("GET", "/", &h);
    assert_ptr_equal(router_match_route(&vh, &r), &rt);
    r = req("POST", "/", &h); /* inverted method matcher fails */
    assert_null(router_match_route(&vh, &r));
    m[3].value = STR_LIT("0"); /* exact mismatch */
    r = req("GET", "/", &h);
    assert_null(router_match_route(&vh, &r));
    m[3].value = STR_LIT("1");
    headers_add(&h, STR_LIT("x-debug"), STR_LIT("on")); /* must be absent */
    assert_null(router_match_route(&vh, &r));
    headers_remove(&h, STR_LIT("x-debug"));
    assert_ptr_equal(router_match_route(&vh, &r), &rt);
    /* an absent header never matches a value matcher, even inverted */
    struct header_matcher inv = {
        .name = STR_LIT("x-missing"), .kind = HM_EXACT, .value = STR_LIT("v"), .invert = true};
    rt.headers = &inv;
    rt.n_headers = 1;
    assert_null(router_match_route(&vh, &r));
    arena_deinit(&a);
}

static struct regex *re_full(const char *pattern)
{
    char err[200];
    struct regex *re = regex_new(pattern, REGEX_FULL, err, sizeof(err));
    if (re == NULL) {
        fail_msg("%s: %s", pattern, err);
    }
    return re;
}

static void test_router_regex_path(void **state)
{
    (void)state;
    struct regex *re = re_full("/api/v[0-9]+/users");
    struct route_cfg routes[2] = {
        {.match_kind = RM_REGEX, .path_regex = re},
        {.match_kind = RM_PREFIX, .match = STR_LIT("/"), .case_sensitive = true},
    };
    struct vhost_cfg vh = {.routes = routes, .n_routes = 2};
    struct route_req r = req("GET", "/api/v12/users", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[0]);
    r = req("GET", "/api/v1/users?page=2", NULL); /* the query string is not matched */
    assert_ptr_equal(router_match_route(&vh, &r), &routes[0]);
    r = req("GET", "/api/v1/users/7", NULL); /* the whole path must match */
    assert_ptr_equal(router_match_route(&vh, &r), &routes[1]);
    r = req("GET", "/x/api/v1/users", NULL);
    assert_ptr_equal(router_match_route(&vh, &r), &routes[1]);
    regex_free(re);
}

static void test_router_range_and_regex_header_matchers(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 4);
    struct regex *re = re_full("v[0-9]+\\.[0-9]+");
    struct header_matcher m = {
        .name = STR_LIT("x-n"), .kind = HM_RANGE, .range_start = 10, .range_end = 20};
    struct route_cfg rt = {.match_kind = RM_PREFIX,
                           .match = STR_LIT("/"),
                           .case_sensitive = true,
                           .headers = &m,
                           .n_headers = 1};
    struct vhost_cfg vh = {.routes = &rt, .n_routes = 1};
    struct route_req r = req("GET", "/", &h);
    static const struct {
        const char *v;
        bool want;
    } cases[] = {
        {"10", true},
        {"19", true},
        {"15", true},
        {"+12", true},
        {"20", false},
        {"9", false},
        {"-15", false},
        {"1a", false},
        {"", false},
        {"0x10", false},
        {"99999999999999999999", false}, /* out of int64 range: not a number */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        headers_remove(&h, STR_LIT("x-n"));
        headers_add(&h, STR_LIT("x-n"), str_from_c(cases[i].v));
        if ((router_match_route(&vh, &r) != NULL) != cases[i].want) {
            fail_msg("range [10,20) on '%s': want %d", cases[i].v, cases[i].want);
        }
    }
    /* negative ranges, and the int64 extremes */
    m.range_start = -10;
    m.range_end = 0;
    headers_remove(&h, STR_LIT("x-n"));
    headers_add(&h, STR_LIT("x-n"), STR_LIT("-10"));
    assert_non_null(router_match_route(&vh, &r));
    m.range_start = INT64_MIN;
    m.range_end = INT64_MAX;
    headers_remove(&h, STR_LIT("x-n"));
    headers_add(&h, STR_LIT("x-n"), STR_LIT("-9223372036854775808"));
    assert_non_null(router_match_route(&vh, &r));
    /* inverted: a value outside matches, an absent header never does */
    m.range_start = 10;
    m.range_end = 20;
    m.invert = true;
    assert_non_null(router_match_route(&vh, &r));
    headers_remove(&h, STR_LIT("x-n"));
    assert_null(router_match_route(&vh, &r));

    /* safe_regex header matcher: a full match */
    struct header_matcher mr = {.name = STR_LIT("x-version"), .kind = HM_REGEX, .regex = re};
    rt.headers = &mr;
    headers_add(&h, STR_LIT("x-version"), STR_LIT("v2.10"));
    assert_non_null(router_match_route(&vh, &r));
    headers_remove(&h, STR_LIT("x-version"));
    headers_add(&h, STR_LIT("x-version"), STR_LIT("v2.10-beta"));
    assert_null(router_match_route(&vh, &r));
    /* a repeated header is matched as its values joined with ',' (Envoy), given an arena */
    struct regex *jre = re_full("a,b");
    struct header_matcher mj = {.name = STR_LIT("x-j"), .kind = HM_REGEX, .regex = jre};
    rt.headers = &mj;
    headers_add(&h, STR_LIT("x-j"), STR_LIT("a"));
    headers_add(&h, STR_LIT("x-j"), STR_LIT("b"));
    assert_null(router_match_route(&vh, &r)); /* no arena: the first value only */
    r.arena = &a;
    assert_non_null(router_match_route(&vh, &r));
    r.arena = NULL;
    regex_free(jre);
    /* pseudo-headers: :path (query included) and :method */
    struct regex *pre = re_full("/p/[a-z]+\\?id=[0-9]+");
    struct header_matcher mp = {.name = STR_LIT(":path"), .kind = HM_REGEX, .regex = pre};
    rt.headers = &mp;
    r = req("GET", "/p/abc?id=7", &h);
    assert_non_null(router_match_route(&vh, &r));
    r = req("GET", "/p/abc", &h);
    assert_null(router_match_route(&vh, &r));
    regex_free(pre);
    regex_free(re);
    arena_deinit(&a);
}

static void test_router_query_parameters(void **state)
{
    (void)state;
    struct regex *re = re_full("[0-9]+");
    struct header_matcher q[] = {
        {.name = STR_LIT("debug"), .kind = HM_PRESENT, .present_value = true},
        {.name = STR_LIT("mode"), .kind = HM_EXACT, .value = STR_LIT("Fast"), .ignore_case = true},
        {.name = STR_LIT("id"), .kind = HM_REGEX, .regex = re},
        {.name = STR_LIT("legacy"), .kind = HM_PRESENT, .present_value = false},
    };
    struct route_cfg rt = {.match_kind = RM_PREFIX,
                           .match = STR_LIT("/"),
                           .case_sensitive = true,
                           .query = q,
                           .n_query = 4};
    struct vhost_cfg vh = {.routes = &rt, .n_routes = 1};
    static const struct {
        const char *path;
        bool want;
    } cases[] = {
        {"/x?debug&mode=fast&id=42", true},
        {"/x?id=42&mode=FAST&debug=0", true}, /* order does not matter; debug has a value */
        {"/x?mode=fast&id=42", false},        /* debug absent */
        {"/x?debug&mode=fast&id=42x", false}, /* regex is a full match */
        {"/x?debug&mode=slow&id=42", false},
        {"/x?debug&mode=fast&id=42&mode=slow", true}, /* the first value counts */
        {"/x?debug&mode=slow&id=42&mode=fast", false},
        {"/x?debug&mode=fast&id=42&legacy=1", false}, /* present_match false: must be absent */
        {"/x?DEBUG&mode=fast&id=42", false},          /* names are case-sensitive */
        {"/x?debug&mode=fast&id=4%32", false},        /* values are not percent-decoded */
        {"/x", false},
        {"/x?debug&mode=fast&id=", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_req r = req("GET", cases[i].path, NULL);
        if ((router_match_route(&vh, &r) != NULL) != cases[i].want) {
            fail_msg("%s: want %d", cases[i].path, cases[i].want);
        }
    }
    regex_free(re);
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void test_router_weighted_pick_precision(void **state)
{
    (void)state;
    struct cluster_cfg cs[3] = {
        {.name = STR_LIT("stable")}, {.name = STR_LIT("canary")}, {.name = STR_LIT("off")}};
    struct weighted_cluster w[3] = {
        {.cluster = &cs[0], .weight = 90, .cum_weight = 90},
        {.cluster = &cs[2], .weight = 0, .cum_weight = 90},
        {.cluster = &cs[1], .weight = 10, .cum_weight = 100},
    };
    /* exact boundaries: draws 0..89 -> stable, 90..99 -> canary, never the weight-0 entry */
    for (uint64_t x = 0; x < 100; x++) {
        assert_ptr_equal(router_weighted_pick(w, 3, x), x < 90 ? &w[0] : &w[2]);
    }
    struct route_cfg rt = {
        .cluster_kind = RCK_WEIGHTED, .weighted = w, .n_weighted = 3, .total_weight = 100};
    struct route_req r = req("GET", "/", NULL);
    /* 10,000 picks: 90/10 within one percentage point */
    uint64_t seed = 42;
    int count[3] = {0};
    for (int i = 0; i < 10000; i++) {
        const struct weighted_cluster *wc;
        const struct cluster_cfg *c = router_pick_cluster(&rt, &r, splitmix(&seed), &wc);
        assert_ptr_equal(c, wc->cluster);
        count[c - cs]++;
    }
    assert_int_equal(count[2], 0);
    assert_int_equal(count[0] + count[1], 10000);
    assert_true(count[1] >= 900 && count[1] <= 1100);
    /* one entry: always it */
    struct route_cfg one = {
        .cluster_kind = RCK_WEIGHTED, .weighted = w, .n_weighted = 1, .total_weight = 90};
    const struct weighted_cluster *wc;
    assert_ptr_equal(router_pick_cluster(&one, &r, 12345, &wc), &cs[0]);
    /* a plain cluster route gives no weighted entry */
    struct route_cfg plain = {.cluster_kind = RCK_CLUSTER, .cluster = &cs[1]};
    assert_ptr_equal(router_pick_cluster(&plain, &r, 0, &wc), &cs[1]);
    assert_null(wc);
}

static void test_router_cluster_header(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct cluster_cfg cs[20];
    char names[20][16];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof(names[i]), "svc-%d", i);
        cs[i] = (struct cluster_cfg){.name = str_from_c(names[i]), .index = (uint32_t)i};
    }
    struct cluster_map map;
    cluster_map_init(&map, &a, cs, 20);
    for (int i = 0; i < 20; i++) {
        assert_ptr_equal(cluster_map_find(&map, str_from_c(names[i])), &cs[i]);
    }
    assert_null(cluster_map_find(&map, STR_LIT("svc-20")));
    assert_null(cluster_map_find(&map, STR_LIT("SVC-1"))); /* names are case-sensitive */
    assert_null(cluster_map_find(&map, STR_LIT("")));

    struct headers h;
    headers_init(&h, &a, 4);
    struct route_cfg rt = {.cluster_kind = RCK_HEADER,
                           .cluster_header = STR_LIT("x-cluster"),
                           .clusters = &map,
                           .cluster_not_found_status = 503};
    const struct weighted_cluster *wc;
    struct route_req r = req("GET", "/", &h);
    assert_null(router_pick_cluster(&rt, &r, 0, &wc)); /* header missing */
    headers_add(&h, STR_LIT("x-cluster"), STR_LIT("svc-7"));
    assert_ptr_equal(router_pick_cluster(&rt, &r, 0, &wc), &cs[7]);
    headers_remove(&h, STR_LIT("x-cluster"));
    headers_add(&h, STR_LIT("x-cluster"), STR_LIT("nope"));
    assert_null(router_pick_cluster(&rt, &r, 0, &wc));
    /* a pseudo-header names the cluster too */
    rt.cluster_header = STR_LIT(":authority");
    r.authority = STR_LIT("svc-3");
    assert_ptr_equal(router_pick_cluster(&rt, &r, 0, &wc), &cs[3]);
    arena_deinit(&a);
}

static uint64_t xx(const char *s)
{
    return hash_xxh64(s, strlen(s), 0);
}

static uint64_t rotl1(uint64_t h)
{
    return (h << 1) | (h >> 63);
}

static void test_router_hash_key(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    headers_init(&h, &a, 8);
    struct hash_policy hp[4] = {
        {.kind = HP_HEADER, .name = STR_LIT("x-user")},
        {.kind = HP_COOKIE, .name = STR_LIT("session")},
        {.kind = HP_SOURCE_IP},
        {.kind = HP_QUERY, .name = STR_LIT("shard")},
    };
    struct route_cfg rt = {.hash_policies = hp, .n_hash_policies = 1};
    struct route_req r = req("GET", "/x?a=1&shard=7", &h);
    uint64_t k = 0;
    /* no policies, or none yields a hash: no key */
    struct route_cfg none = {0};
    assert_false(router_hash_key(&none, &r, &k));
    assert_false(router_hash_key(&rt, &r, &k));
    /* header: XXH64 of the value */
    headers_add(&h, STR_LIT("x-user"), STR_LIT("alice"));
    assert_true(router_hash_key(&rt, &r, &k));
    assert_true(k == xx("alice"));
    /* several values: sorted, chained; their order does not matter */
    headers_add(&h, STR_LIT("x-user"), STR_LIT("aaron"));
    uint64_t k2 = 0;
    assert_true(router_hash_key(&rt, &r, &k2));
    assert_true(k2 == hash_xxh64("alice", 5, hash_xxh64("aaron", 5, 0)));
    headers_remove(&h, STR_LIT("x-user"));
    headers_add(&h, STR_LIT("x-user"), STR_LIT("aaron"));
    headers_add(&h, STR_LIT("x-user"), STR_LIT("alice"));
    assert_true(router_hash_key(&rt, &r, &k) && k == k2);
    headers_remove(&h, STR_LIT("x-user"));
    /* cookie: found among several cookies and headers, quotes removed */
    rt.hash_policies = &hp[1];
    headers_add(&h, STR_LIT("cookie"), STR_LIT("a=1; b=2"));
    assert_false(router_hash_key(&rt, &r, &k));
    headers_add(&h, STR_LIT("cookie"), STR_LIT("theme=dark;  session=\"s-123\"; x=y"));
    assert_true(router_hash_key(&rt, &r, &k) && k == xx("s-123"));
    /* source IP, query parameter */
    rt.hash_policies = &hp[2];
    assert_true(router_hash_key(&rt, &r, &k) && k == xx("10.1.2.3"));
    rt.hash_policies = &hp[3];
    assert_true(router_hash_key(&rt, &r, &k) && k == xx("7"));
    /* several: combined by rotating and xoring; a missing one is skipped */
    rt.hash_policies = hp;
    rt.n_hash_policies = 4; /* header missing, cookie, ip, query */
    uint64_t want = rotl1(rotl1(xx("s-123")) ^ xx("10.1.2.3")) ^ xx("7");
    assert_true(router_hash_key(&rt, &r, &k) && k == want);
    /* terminal: a policy that made a key ends the list */
    hp[1].terminal = true;
    assert_true(router_hash_key(&rt, &r, &k) && k == xx("s-123"));
    /* a terminal policy that made no key does not */
    hp[1].terminal = false;
    hp[0].terminal = true;
    assert_true(router_hash_key(&rt, &r, &k) && k == want);
    arena_deinit(&a);
}

static void test_router_regex_rewrite_keeps_the_query(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a, 0);
    char err[200];
    struct regex *re = regex_new("^/service/([^/]+)(/.*)$", 0, err, sizeof(err));
    assert_non_null(re);
    struct route_cfg rt = {.regex_rewrite = re, .regex_substitution = STR_LIT("\\2/instance/\\1")};
    struct str p = router_regex_rewrite(&rt, STR_LIT("/service/foo/v1/api?x=/service/a/b"), &a);
    assert_true(str_eq_lit(p, "/v1/api/instance/foo?x=/service/a/b"));
    p = router_regex_rewrite(&rt, STR_LIT("/other/path?q"), &a);
    assert_true(str_eq_lit(p, "/other/path?q"));
    regex_free(re);
    arena_deinit(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_vhost_precedence),
        cmocka_unit_test(test_router_no_wildcard_no_vhost),
        cmocka_unit_test(test_router_prefix_path_and_order),
        cmocka_unit_test(test_router_header_matchers),
        cmocka_unit_test(test_router_regex_path),
        cmocka_unit_test(test_router_range_and_regex_header_matchers),
        cmocka_unit_test(test_router_query_parameters),
        cmocka_unit_test(test_router_weighted_pick_precision),
        cmocka_unit_test(test_router_cluster_header),
        cmocka_unit_test(test_router_hash_key),
        cmocka_unit_test(test_router_regex_rewrite_keeps_the_query),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
