/* Unit tests for the RBAC filters' engine (filters/rbac/rbac_policy.c): every permission and
 * principal kind, nesting, ALLOW / DENY / LOG, the effective policy, shadow rules through the
 * HTTP filter's config, the peer certificate's URI SAN / DNS SAN / subject, and config errors
 * with their field paths (among them the nesting bound and the network filter's refusal of
 * header and url_path). The sources are included for their statics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "filters/rbac/rbac.c"
#include "filters/rbac/rbac_policy.c"
#include "tests/unit/filters/filter_config.h"
#include "envoy/extensions/filters/network/rbac/v3/rbac.pb-c.h"
#include "proxy/http/headers.h"

static struct config cfg;
static struct err err;

static void reset(void)
{
    for (struct config_cleanup *c = cfg.cleanups; c != NULL; c = c->next) {
        c->fn(c->arg);
    }
    arena_deinit(&cfg.arena);
    memset(&cfg, 0, sizeof(cfg));
    arena_init(&cfg.arena, 0);
}

/* An HTTP RBAC filter config from JSON; returns the error text ("" on success). */
static const char *build(const char *json, const struct rbac_cfg **out)
{
    reset();
    const void *built = NULL;
    const char *e =
        filter_config_from_json(&envoy__extensions__filters__http__rbac__v3__rbac__descriptor,
                                rbac_config_new, json, &cfg, &err, &built);
    if (out != NULL) {
        *out = built;
    }
    return e;
}

/* The network filter's rules (network = true) from the JSON of a config.rbac.v3.RBAC. */
static int net_build(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const struct rbac_engine *e = NULL;
    int rc = rbac_policy_build(fb, (const Envoy__Config__Rbac__V3__RBAC *)pb, true, &e);
    *out = e;
    return rc;
}

static const char *net(const char *json)
{
    reset();
    return filter_config_from_json(&envoy__config__rbac__v3__rbac__descriptor, net_build, json,
                                   &cfg, &err, NULL);
}

/* One ALLOW policy "p" with `perm` and `id` (JSON objects); its engine. */
static const struct rbac_engine *allow(const char *perm, const char *id)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"rules\": {\"policies\": {\"p\": {\"permissions\": [%s], \"principals\": [%s]}}}}",
             perm, id);
    const struct rbac_cfg *c = NULL;
    const char *e = build(json, &c);
    if (e[0] != '\0') {
        fail_msg("%s: %s", json, e);
    }
    return c->rules;
}

struct req {
    struct arena a;
    struct headers h;
    struct route_req rq;
    struct sockaddr_in local;
    struct rbac_input in;
};

static void req_init(struct req *r, const char *method, const char *path)
{
    memset(r, 0, sizeof(*r));
    arena_init(&r->a, 0);
    headers_init(&r->h, &r->a, 4);
    r->rq = (struct route_req){.method = str_from_c(method),
                               .path = str_from_c(path),
                               .authority = STR_LIT("api"),
                               .scheme = STR_LIT("http"),
                               .headers = &r->h};
    r->local.sin_family = AF_INET;
    r->local.sin_port = htons(8443);
    inet_pton(AF_INET, "10.1.2.3", &r->local.sin_addr);
    r->in = (struct rbac_input){.http = &r->rq,
                                .direct_ip = STR_LIT("192.168.7.9"),
                                .local = (const struct sockaddr *)&r->local,
                                .sni = STR_LIT("api.mesh.local")};
}

static bool judge(const struct rbac_engine *e, struct req *r)
{
    struct str p;
    return rbac_policy_eval(e, &r->in, &p);
}

static void test_rbac_permission_kinds(void **state)
{
    (void)state;
    struct req r;
    req_init(&r, "GET", "/api/items?x=1");
    headers_add(&r.h, STR_LIT("x-team"), STR_LIT("blue"));
    const char *any_id = "{\"any\": true}";
    assert_true(judge(allow("{\"any\": true}", any_id), &r));
    assert_true(judge(allow("{\"header\": {\"name\": \":method\", \"string_match\": {\"exact\": "
                            "\"GET\"}}}",
                            any_id),
                      &r));
    assert_false(judge(
        allow("{\"header\": {\"name\": \":method\", \"exact_match\": \"POST\"}}", any_id), &r));
    assert_true(
        judge(allow("{\"header\": {\"name\": \"x-team\", \"present_match\": true}}", any_id), &r));
    /* url_path: the path without its query string; each StringMatcher kind */
    assert_true(
        judge(allow("{\"url_path\": {\"path\": {\"exact\": \"/api/items\"}}}", any_id), &r));
    assert_true(judge(allow("{\"url_path\": {\"path\": {\"prefix\": \"/API\", \"ignore_case\": "
                            "true}}}",
                            any_id),
                      &r));
    assert_true(judge(allow("{\"url_path\": {\"path\": {\"suffix\": \"items\"}}}", any_id), &r));
    assert_false(judge(allow("{\"url_path\": {\"path\": {\"suffix\": \"x=1\"}}}", any_id), &r));
    assert_true(judge(allow("{\"url_path\": {\"path\": {\"contains\": \"/it\"}}}", any_id), &r));
    assert_true(judge(allow("{\"url_path\": {\"path\": {\"safe_regex\": {\"regex\": "
                            "\"/api/[a-z]+\"}}}}",
                            any_id),
                      &r));
    assert_false(
        judge(allow("{\"url_path\": {\"path\": {\"safe_regex\": {\"regex\": \"/api\"}}}}", any_id),
              &r)); /* a full match */
    /* destination */
    assert_true(judge(allow("{\"destination_ip\": {\"address_prefix\": \"10.1.0.0\", "
                            "\"prefix_len\": 16}}",
                            any_id),
                      &r));
    assert_false(judge(allow("{\"destination_ip\": {\"address_prefix\": \"10.2.0.0\", "
                             "\"prefix_len\": 16}}",
                             any_id),
                       &r));
    assert_true(judge(allow("{\"destination_port\": 8443}", any_id), &r));
    assert_false(judge(allow("{\"destination_port\": 8080}", any_id), &r));
    assert_true(
        judge(allow("{\"destination_port_range\": {\"start\": 8000, \"end\": 8444}}", any_id), &r));
    assert_false(
        judge(allow("{\"destination_port_range\": {\"start\": 8000, \"end\": 8443}}", any_id),
              &r)); /* end is exclusive */
    assert_true(
        judge(allow("{\"requested_server_name\": {\"suffix\": \".mesh.local\"}}", any_id), &r));
    assert_false(judge(allow("{\"requested_server_name\": {\"exact\": \"other\"}}", any_id), &r));
    assert_true(judge(allow("{\"requested_server_name\": {\"exact\": \"API.Mesh.local\", "
                            "\"ignore_case\": true}}",
                            any_id),
                      &r));
    assert_false(
        judge(allow("{\"requested_server_name\": {\"exact\": \"API.Mesh.local\"}}", any_id), &r));
    /* unknown local address: destination rules do not match */
    r.in.local = NULL;
    assert_false(judge(allow("{\"destination_port\": 8443}", any_id), &r));
    assert_true(judge(allow("{\"not_rule\": {\"destination_port\": 8443}}", any_id), &r));
    arena_deinit(&r.a);
}

static void test_rbac_principal_kinds(void **state)
{
    (void)state;
    struct req r;
    req_init(&r, "GET", "/");
    const char *any = "{\"any\": true}";
    assert_true(judge(allow(any, "{\"direct_remote_ip\": {\"address_prefix\": \"192.168.0.0\", "
                                 "\"prefix_len\": 16}}"),
                      &r));
    assert_false(judge(allow(any, "{\"direct_remote_ip\": {\"address_prefix\": \"192.168.7.8\", "
                                  "\"prefix_len\": 32}}"),
                       &r));
    assert_true(judge(allow(any, "{\"source_ip\": {\"address_prefix\": \"192.168.7.9\", "
                                 "\"prefix_len\": 32}}"),
                      &r));
    /* remote_ip: the trusted client address (x-forwarded-for), else the peer */
    const struct rbac_engine *e =
        allow(any, "{\"remote_ip\": {\"address_prefix\": \"203.0.113.0\", \"prefix_len\": 24}}");
    assert_false(judge(e, &r));
    r.in.remote_ip = STR_LIT("203.0.113.50");
    assert_true(judge(e, &r));
    r.in.remote_ip = STR_LIT("::ffff:203.0.113.50"); /* v4-mapped counts as IPv4 */
    assert_true(judge(e, &r));
    e = allow(any, "{\"remote_ip\": {\"address_prefix\": \"2001:db8::\", \"prefix_len\": 33}}");
    r.in.remote_ip = STR_LIT("2001:db8:7fff::1");
    assert_true(judge(e, &r));
    r.in.remote_ip = STR_LIT("2001:db8:8000::1");
    assert_false(judge(e, &r));
    /* header and url_path principals */
    headers_add(&r.h, STR_LIT("x-user"), STR_LIT("alice"));
    assert_true(
        judge(allow(any, "{\"header\": {\"name\": \"x-user\", \"exact_match\": \"alice\"}}"), &r));
    assert_false(
        judge(allow(any, "{\"header\": {\"name\": \"x-user\", \"exact_match\": \"bob\"}}"), &r));
    assert_true(judge(allow(any, "{\"url_path\": {\"path\": {\"exact\": \"/\"}}}"), &r));
    /* authenticated: plaintext never is, with or without principal_name */
    assert_false(judge(allow(any, "{\"authenticated\": {}}"), &r));
    assert_false(
        judge(allow(any, "{\"authenticated\": {\"principal_name\": {\"safe_regex\": {\"regex\": "
                         "\".*\"}}}}"),
              &r));
    assert_true(judge(allow(any, "{\"not_id\": {\"authenticated\": {}}}"), &r));
    arena_deinit(&r.a);
}

static void test_rbac_nesting_and_actions(void **state)
{
    (void)state;
    struct req r;
    req_init(&r, "POST", "/api/x");
    /* (GET or POST) and not /admin*, from 192.168.0.0/16 and not 192.168.7.9 */
    const char *perm = "{\"and_rules\": {\"rules\": ["
                       "{\"or_rules\": {\"rules\": ["
                       "{\"header\": {\"name\": \":method\", \"exact_match\": \"GET\"}},"
                       "{\"header\": {\"name\": \":method\", \"exact_match\": \"POST\"}}]}},"
                       "{\"not_rule\": {\"url_path\": {\"path\": {\"prefix\": \"/admin\"}}}}]}}";
    const char *id = "{\"and_ids\": {\"ids\": ["
                     "{\"direct_remote_ip\": {\"address_prefix\": \"192.168.0.0\", \"prefix_len\":"
                     " 16}},"
                     "{\"not_id\": {\"or_ids\": {\"ids\": [{\"direct_remote_ip\": "
                     "{\"address_prefix\": \"192.168.7.9\", \"prefix_len\": 32}}]}}}]}}";
    const struct rbac_engine *e = allow(perm, id);
    assert_false(judge(e, &r)); /* the one excluded peer */
    r.in.direct_ip = STR_LIT("192.168.1.1");
    assert_true(judge(e, &r));
    r.rq.path = STR_LIT("/admin/users");
    assert_false(judge(e, &r));
    r.rq.path = STR_LIT("/api");
    r.rq.method = STR_LIT("DELETE");
    assert_false(judge(e, &r));

    /* DENY: denied when a policy matches; the effective policy is the first by name */
    const struct rbac_cfg *c;
    assert_string_equal(
        build("{\"rules\": {\"action\": \"DENY\", \"policies\": {"
              "\"zeta\": {\"permissions\": [{\"any\": true}], \"principals\": [{\"any\": true}]},"
              "\"alpha\": {\"permissions\": [{\"url_path\": {\"path\": {\"prefix\": \"/api\"}}}],"
              " \"principals\": [{\"any\": true}]}}}}",
              &c),
        "");
    struct str p;
    assert_false(rbac_policy_eval(c->rules, &r.in, &p));
    assert_int_equal(p.len, 5);
    assert_memory_equal(p.p, "alpha", 5);
    r.rq.path = STR_LIT("/other");
    assert_false(rbac_policy_eval(c->rules, &r.in, &p));
    assert_memory_equal(p.p, "zeta", 4);
    /* DENY with no policies allows; ALLOW with none denies; LOG always allows */
    assert_string_equal(build("{\"rules\": {\"action\": \"DENY\"}}", &c), "");
    assert_true(rbac_policy_eval(c->rules, &r.in, &p));
    assert_int_equal(p.len, 0);
    assert_string_equal(build("{\"rules\": {}}", &c), "");
    assert_false(rbac_policy_eval(c->rules, &r.in, &p));
    assert_string_equal(build("{\"rules\": {\"action\": \"LOG\", \"policies\": {\"l\": "
                              "{\"permissions\": [{\"any\": true}], \"principals\": [{\"any\": "
                              "true}]}}}}",
                              &c),
                        "");
    assert_true(rbac_policy_eval(c->rules, &r.in, &p));
    assert_memory_equal(p.p, "l", 1);
    arena_deinit(&r.a);
}

static void test_rbac_shadow_and_stats(void **state)
{
    (void)state;
    const struct rbac_cfg *c;
    assert_string_equal(build("{\"shadow_rules\": {\"policies\": {\"s\": {\"permissions\": "
                              "[{\"any\": true}], \"principals\": [{\"authenticated\": {}}]}}},"
                              "\"shadow_rules_stat_prefix\": \"sh_\", \"rules_stat_prefix\": "
                              "\"r_\"}",
                              &c),
                        "");
    assert_null(c->rules); /* shadow only: nothing is enforced */
    assert_non_null(c->shadow);
    assert_string_equal(cfg.stat_defs[c->st_allowed].stat, "rbac.r_allowed");
    assert_string_equal(cfg.stat_defs[c->st_denied].stat, "rbac.r_denied");
    assert_string_equal(cfg.stat_defs[c->st_shadow_allowed].stat, "rbac.sh_shadow_allowed");
    assert_string_equal(cfg.stat_defs[c->st_shadow_denied].stat, "rbac.sh_shadow_denied");
    assert_string_equal(cfg.stat_defs[c->st_denied].scope, "http");
    assert_memory_equal(cfg.stat_defs[c->st_denied].tag.p, "ingress", 7);
}

static void test_rbac_config_errors(void **state)
{
    (void)state;
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"principals\": [{\"any\": "
                              "true}]}}}}",
                              NULL),
                        "f.rules.policies.p.permissions: must not be empty");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": [{\"any\": "
                              "true}]}}}}",
                              NULL),
                        "f.rules.policies.p.principals: must not be empty");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": [{}], "
                              "\"principals\": [{\"any\": true}]}}}}",
                              NULL),
                        "f.rules.policies.p.permissions[0]: one of and_rules, or_rules, any, "
                        "header, url_path, destination_ip, destination_port, "
                        "destination_port_range, not_rule, requested_server_name is required");
    assert_string_equal(build("{\"shadow_rules\": {\"policies\": {\"p\": {\"permissions\": "
                              "[{\"metadata\": {}}], \"principals\": [{\"any\": true}]}}}}",
                              NULL),
                        "f.shadow_rules.policies.p.permissions[0].metadata: unknown field");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": [{\"any\": "
                              "true}], \"principals\": [{\"filter_state\": {}}]}}}}",
                              NULL),
                        "f.rules.policies.p.principals[0].filter_state: unknown field");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": [{\"any\": "
                              "true}], \"principals\": [{\"any\": true}], \"condition\": {}}}}}",
                              NULL),
                        "f.rules.policies.p.condition: unknown field");
    assert_string_equal(build("{\"matcher\": {}}", NULL), "f.matcher: unknown field");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": "
                              "[{\"and_rules\": {\"rules\": [{\"any\": true}, {\"destination_ip\": "
                              "{\"address_prefix\": \"10.0.0.300\"}}]}}], \"principals\": "
                              "[{\"any\": true}]}}}}",
                              NULL),
                        "f.rules.policies.p.permissions[0].and_rules.rules[1].destination_ip: "
                        "'10.0.0.300/0' is not an IP address range");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": [{\"any\": "
                              "true}], \"principals\": [{\"or_ids\": {\"ids\": []}}]}}}}",
                              NULL),
                        "f.rules.policies.p.principals[0].or_ids: ids must not be empty");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": "
                              "[{\"url_path\": {\"path\": {\"safe_regex\": {\"regex\": \"(\"}}}}],"
                              " \"principals\": [{\"any\": true}]}}}}",
                              NULL)[0] != '\0'
                            ? "error"
                            : "",
                        "error");
    assert_string_equal(build("{\"rules\": {\"policies\": {\"p\": {\"permissions\": "
                              "[{\"destination_port_range\": {\"start\": 10, \"end\": 5}}],"
                              " \"principals\": [{\"any\": true}]}}}}",
                              NULL),
                        "f.rules.policies.p.permissions[0].destination_port_range: [10, 5) is not "
                        "a port range");
    /* the network filter refuses request rules, as Envoy */
    assert_string_equal(net("{\"policies\": {\"p\": {\"permissions\": [{\"header\": {\"name\": "
                            "\"a\", \"present_match\": true}}], \"principals\": [{\"any\": "
                            "true}]}}}"),
                        "f.policies.p.permissions[0].header: header rules are not supported by "
                        "the network filter");
    assert_string_equal(net("{\"policies\": {\"p\": {\"permissions\": [{\"any\": true}], "
                            "\"principals\": [{\"not_id\": {\"url_path\": {\"path\": {\"exact\": "
                            "\"/\"}}}}]}}}"),
                        "f.policies.p.principals[0].not_id.url_path: url_path rules are not "
                        "supported by the network filter");
    assert_string_equal(net("{\"policies\": {\"p\": {\"permissions\": [{\"destination_port\": "
                            "443}], \"principals\": [{\"remote_ip\": {\"address_prefix\": "
                            "\"10.0.0.0\", \"prefix_len\": 8}}]}}}"),
                        "");
}

/* A binary RBAC may repeat a map key: refused (found among sorted neighbours, not by comparing
 * every pair). */
static void test_rbac_duplicate_policy_names(void **state)
{
    (void)state;
    reset();
    Envoy__Config__Rbac__V3__Principal id = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__INIT;
    id.identifier_case = ENVOY__CONFIG__RBAC__V3__PRINCIPAL__IDENTIFIER_ANY;
    id.any = true;
    Envoy__Config__Rbac__V3__Permission perm = ENVOY__CONFIG__RBAC__V3__PERMISSION__INIT;
    perm.rule_case = ENVOY__CONFIG__RBAC__V3__PERMISSION__RULE_ANY;
    perm.any = true;
    Envoy__Config__Rbac__V3__Principal *ids[] = {&id};
    Envoy__Config__Rbac__V3__Permission *perms[] = {&perm};
    Envoy__Config__Rbac__V3__Policy pol = ENVOY__CONFIG__RBAC__V3__POLICY__INIT;
    pol.permissions = perms;
    pol.n_permissions = 1;
    pol.principals = ids;
    pol.n_principals = 1;
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry e[3] = {
        ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT,
        ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT,
        ENVOY__CONFIG__RBAC__V3__RBAC__POLICIES_ENTRY__INIT};
    e[0].key = "b";
    e[1].key = "a";
    e[2].key = "b";
    Envoy__Config__Rbac__V3__RBAC__PoliciesEntry *ep[] = {&e[0], &e[1], &e[2]};
    for (int i = 0; i < 3; i++) {
        e[i].value = &pol;
    }
    Envoy__Config__Rbac__V3__RBAC rbac = ENVOY__CONFIG__RBAC__V3__RBAC__INIT;
    rbac.policies = ep;
    rbac.n_policies = 3;
    struct filter_build fb;
    memset(&fb, 0, sizeof(fb));
    fb.c = &cfg;
    fb.a = &cfg.arena;
    fb.err = &err;
    strcpy(fb.path, "r");
    fb.plen = 1;
    err_clear(&err);
    const struct rbac_engine *eng = NULL;
    assert_int_equal(rbac_policy_build(&fb, &rbac, false, &eng), -EINVAL);
    assert_string_equal(err.msg, "r.policies.b: duplicate policy name");
    e[2].key = "c";
    assert_int_equal(rbac_policy_build(&fb, &rbac, false, &eng), 0);
    assert_int_equal(eng->n_policies, 3);
    assert_memory_equal(eng->policies[0].name.p, "a", 1); /* name order */
    assert_memory_equal(eng->policies[2].name.p, "c", 1);
}

/* Nested not_rule chains: RBAC_MAX_DEPTH levels build, one more is refused, and a hostile depth
 * is refused without deep recursion at evaluation. */
static void test_rbac_depth_bound(void **state)
{
    (void)state;
    for (int depth = RBAC_MAX_DEPTH - 1; depth <= RBAC_MAX_DEPTH + 1; depth++) {
        char json[8192];
        size_t n = 0;
        n += (size_t)snprintf(json + n, sizeof(json) - n,
                              "{\"rules\": {\"policies\": {\"p\": {\"permissions\": [");
        for (int i = 0; i < depth; i++) {
            n += (size_t)snprintf(json + n, sizeof(json) - n, "{\"not_rule\": ");
        }
        n += (size_t)snprintf(json + n, sizeof(json) - n, "{\"any\": true}");
        for (int i = 0; i < depth; i++) {
            n += (size_t)snprintf(json + n, sizeof(json) - n, "}");
        }
        snprintf(json + n, sizeof(json) - n, "], \"principals\": [{\"any\": true}]}}}}");
        const struct rbac_cfg *c = NULL;
        const char *e = build(json, &c);
        if (depth < RBAC_MAX_DEPTH) {
            assert_string_equal(e, "");
            struct req r;
            req_init(&r, "GET", "/");
            /* an odd number of nots around any: no match, so ALLOW denies */
            assert_int_equal(judge(c->rules, &r), depth % 2 == 0);
            arena_deinit(&r.a);
        } else {
            assert_non_null(strstr(e, "rules nested deeper than 32 levels"));
        }
    }
}

/* A certificate with `uri` and `dns` SANs (either may be NULL) and subject CN=`cn`. */
static X509 *cert(const char *cn, const char *uri, const char *dns)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"mesh", -1, -1, 0);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    char sans[512] = "";
    if (uri != NULL) {
        snprintf(sans, sizeof(sans), "URI:%s", uri);
    }
    if (dns != NULL) {
        size_t n = strlen(sans);
        snprintf(sans + n, sizeof(sans) - n, "%sDNS:%s", n ? "," : "", dns);
    }
    if (sans[0] != '\0') {
        X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, sans);
        assert_non_null(ext);
        X509_add_ext(x, ext, -1);
        X509_EXTENSION_free(ext);
    }
    return x;
}

static struct str_match exact(const char *v)
{
    return (struct str_match){.kind = SM_EXACT, .value = str_from_c(v)};
}

static void test_rbac_peer_identity(void **state)
{
    (void)state;
    X509 *x = cert("web", "spiffe://mesh.test/ns/shop/sa/web", "web.shop.svc");
    struct str_match m = exact("spiffe://mesh.test/ns/shop/sa/web");
    assert_true(san_match(x, 6, &m));
    assert_false(san_match(x, 2, &m));
    m = exact("web.shop.svc");
    assert_true(san_match(x, 2, &m));
    assert_false(san_match(x, 6, &m));
    m = (struct str_match){.kind = SM_PREFIX, .value = STR_LIT("spiffe://mesh.test/")};
    assert_true(san_match(x, 6, &m));
    struct rbac_subject sub = {0};
    struct str s = peer_subject(x, &sub);
    assert_int_equal(s.len, strlen("CN=web,O=mesh"));
    assert_memory_equal(s.p, "CN=web,O=mesh", s.len);
    assert_true(sub.done);
    X509_free(x);
    /* no SAN extension: nothing matches there */
    x = cert("plain", NULL, NULL);
    m = exact("plain");
    assert_false(san_match(x, 6, &m));
    assert_false(san_match(x, 2, &m));
    X509_free(x);
    /* several SANs: each is tried */
    x = cert("two", "spiffe://a/1", "a.example,DNS:b.example");
    m = exact("b.example");
    assert_true(san_match(x, 2, &m));
    X509_free(x);
}

/* Permission{not_rule: ... {any: true}} nested `n` deep, as protobuf bytes, into an Any. */
static uint8_t *nested_permission(size_t n, Google__Protobuf__Any *any)
{
    size_t cap = n * 6 + 8;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    size_t start = cap;
    buf[--start] = 1;
    buf[--start] = 0x18; /* any (3): true */
    for (size_t i = 0; i < n; i++) {
        size_t len = cap - start;
        uint8_t v[10];
        int k = 0;
        do {
            v[k++] = (uint8_t)((len & 0x7f) | (len > 0x7f ? 0x80 : 0));
            len >>= 7;
        } while (len != 0);
        while (k > 0) {
            buf[--start] = v[--k];
        }
        buf[--start] = 0x42; /* not_rule (8), length-delimited */
    }
    *any = (Google__Protobuf__Any)GOOGLE__PROTOBUF__ANY__INIT;
    any->type_url = "type.googleapis.com/envoy.config.rbac.v3.Permission";
    any->value.data = buf + start;
    any->value.len = cap - start;
    return buf;
}

/* A hostile binary config (xDS) nesting rules 300000 deep is refused before protobuf-c, which
 * recurses without a limit, unpacks it (it overflowed the stack); a shallow one unpacks. */
static void test_rbac_binary_nesting_is_bounded(void **state)
{
    (void)state;
    Google__Protobuf__Any any;
    uint8_t *buf = nested_permission(300000, &any);
    ProtobufCMessage *m = NULL;
    err_clear(&err);
    assert_int_equal(pbjson_any_unpack(&any, pbtypes_find, "x", &m, &err), -EINVAL);
    assert_null(m);
    assert_string_equal(err.msg, "x: envoy.config.rbac.v3.Permission nested deeper than 64 levels");
    free(buf);
    buf = nested_permission(40, &any);
    assert_int_equal(pbjson_any_unpack(&any, pbtypes_find, "x", &m, &err), 0);
    assert_non_null(m);
    protobuf_c_message_free_unpacked(m, NULL);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rbac_permission_kinds),
        cmocka_unit_test(test_rbac_principal_kinds),
        cmocka_unit_test(test_rbac_nesting_and_actions),
        cmocka_unit_test(test_rbac_shadow_and_stats),
        cmocka_unit_test(test_rbac_config_errors),
        cmocka_unit_test(test_rbac_duplicate_policy_names),
        cmocka_unit_test(test_rbac_depth_bound),
        cmocka_unit_test(test_rbac_peer_identity),
        cmocka_unit_test(test_rbac_binary_nesting_is_bounded),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    reset();
    arena_deinit(&cfg.arena);
    return rc;
}
