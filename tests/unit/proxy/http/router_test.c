/* Unit tests for router: virtual host selection and route matching. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/config/config.h"
#include "proxy/http/headers.h"
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
    return (struct route_req){str_from_c(method), str_from_c(path), STR_LIT("host"),
                              STR_LIT("http"), h};
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_vhost_precedence),
        cmocka_unit_test(test_router_no_wildcard_no_vhost),
        cmocka_unit_test(test_router_prefix_path_and_order),
        cmocka_unit_test(test_router_header_matchers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
