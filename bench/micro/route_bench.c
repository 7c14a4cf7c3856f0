/* route_bench: route matching (router_route: virtual host selection, then the first matching
 * route in order) over tables compiled from generated Envoy YAML by config_load_text, exactly
 * as the proxy builds them; the weighted_clusters pick (router_pick_cluster); and, for scale,
 * the cost of building those configs.
 *
 * Tables of N routes: route i matches prefix "/api/svc-<i>/" (or, in the regex table, the
 * safe_regex "/api/svc-<i>/v[0-9]+/.*"; in the "no literal head" table "[/]api/svc-<i>/v[0-9]+/.*",
 * which regex.c cannot turn down with a memcmp of its literal head, so every route tried is a
 * PCRE2 call), and every even route also requires the header
 * x-tenant: tenant-<i>; the last route is a catch-all prefix "/". The request carries a
 * browser's headers with x-tenant last, and targets route 2 ("start") or route N-2 ("end"),
 * both of which have a header matcher. */
#include <stdlib.h>
#include <string.h>

#include "bench/micro/harness.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/arena.h"
#include "proxy/http/headers.h"
#include "proxy/http/router.h"

#define N_RND 1024

static const char cluster_backend[] = "  - name: backend\n"
                                      "    type: STATIC\n"
                                      "    connect_timeout: 1s\n"
                                      "    load_assignment:\n"
                                      "      cluster_name: backend\n"
                                      "      endpoints:\n"
                                      "      - lb_endpoints:\n"
                                      "        - endpoint: { address: { socket_address: { address: "
                                      "127.0.0.1, port_value: 8080 } } }\n";

enum table_kind { T_PREFIX, T_REGEX, T_REGEX_NOLIT };

/* The route list for a table of `n` routes; malloc'ed. */
static char *routes_yaml(uint32_t n, enum table_kind kind)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    for (uint32_t i = 0; i + 1 < n; i++) {
        if (kind != T_PREFIX) {
            fprintf(f,
                    "              - match:\n"
                    "                  safe_regex: { regex: \"%sapi/svc-%u/v[0-9]+/.*\" }\n",
                    kind == T_REGEX_NOLIT ? "[/]" : "/", i);
        } else {
            fprintf(f,
                    "              - match:\n"
                    "                  prefix: \"/api/svc-%u/\"\n",
                    i);
        }
        if (i % 2 == 0) {
            fprintf(f,
                    "                  headers:\n"
                    "                  - name: x-tenant\n"
                    "                    string_match: { exact: \"tenant-%u\" }\n",
                    i);
        }
        fputs("                route: { cluster: backend }\n", f);
    }
    fputs("              - match: { prefix: \"/\" }\n"
          "                route: { cluster: backend }\n",
          f);
    fclose(f);
    return text;
}

static struct config *load_table(uint32_t n, enum table_kind kind)
{
    char *routes = routes_yaml(n, kind);
    size_t len;
    char *text = bench_bootstrap(routes, cluster_backend, &len);
    struct config *c = bench_load_config(text, len);
    free(routes);
    free(text);
    return c;
}

struct route_ctx {
    const struct route_table *t;
    struct route_req rq;
};

static uint64_t run_route(void *ctx, uint64_t iters)
{
    struct route_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        const struct vhost_cfg *vh;
        acc += (uintptr_t)router_route(c->t, &c->rq, &vh);
    }
    return acc;
}

/* A browser request's headers (as the codec and stream leave them), with x-tenant last. */
static void request_headers(struct headers *h, struct arena *a, struct str tenant)
{
    headers_init(h, a, 0);
    headers_add(h, STR_LIT("host"), STR_LIT("www.example.com"));
    headers_add(h, STR_LIT("user-agent"),
                STR_LIT("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"));
    headers_add(h, STR_LIT("accept"), STR_LIT("application/json"));
    headers_add(h, STR_LIT("accept-language"), STR_LIT("en-US,en;q=0.5"));
    headers_add(h, STR_LIT("accept-encoding"), STR_LIT("gzip, deflate, br, zstd"));
    headers_add(h, STR_LIT("cookie"), STR_LIT("session=3f2a9c81d4e0b7a6; theme=dark"));
    headers_add(h, STR_LIT("x-forwarded-for"), STR_LIT("10.1.2.3"));
    headers_add(h, STR_LIT("x-forwarded-proto"), STR_LIT("http"));
    headers_add(h, STR_LIT("x-request-id"), STR_LIT("6b0a1d2e-4f3c-4b5a-9c8d-7e6f5a4b3c2d"));
    headers_add(h, STR_LIT("x-tenant"), tenant);
}

static void route_case(struct bench *b, const struct config *cfg, enum table_kind kind,
                       uint32_t target, const char *label)
{
    char name[96], path[64], tenant[32];
    const struct route_table *t = cfg->listeners[0].hcm->routes;
    snprintf(name, sizeof(name), "%u %s routes, match #%u (%s)", t->vhosts[1].n_routes,
             kind == T_PREFIX  ? "prefix"
             : kind == T_REGEX ? "regex"
                               : "regex (no literal head)",
             target, label);
    if (!bench_wanted(b, name)) {
        return;
    }
    snprintf(path, sizeof(path), "/api/svc-%u/v2/items?id=42", target);
    snprintf(tenant, sizeof(tenant), "tenant-%u", target);
    struct arena a;
    arena_init(&a, 0);
    struct headers h;
    request_headers(&h, &a, str_from_c(tenant));
    struct route_ctx c = {
        .t = t,
        .rq = {.method = STR_LIT("GET"),
               .path = str_from_c(path),
               .authority = STR_LIT("www.example.com"),
               .scheme = STR_LIT("http"),
               .headers = &h,
               .source_ip = STR_LIT("10.1.2.3"),
               .arena = &a},
    };
    const struct vhost_cfg *vh;
    const struct route_cfg *rt = router_route(c.t, &c.rq, &vh);
    if (rt == NULL || vh == NULL || rt != &vh->routes[target]) {
        fprintf(stderr, "bench: %s: matched the wrong route (%d)\n", name,
                rt && vh ? (int)(rt - vh->routes) : -1);
        exit(1);
    }
    bench_run(b, name, run_route, &c, 0);
    arena_deinit(&a);
}

/* ---- weighted_clusters ---- */

struct weighted_ctx {
    const struct route_cfg *rt;
    struct route_req rq;
    uint64_t rnd[N_RND]; /* precomputed, so the draw costs a load, not the PRNG */
};

static uint64_t run_weighted(void *ctx, uint64_t iters)
{
    struct weighted_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        const struct weighted_cluster *wc;
        const struct cluster_cfg *cl = router_pick_cluster(c->rt, &c->rq, c->rnd[i % N_RND], &wc);
        acc += cl->index;
    }
    return acc;
}

static void bench_weighted(struct bench *b)
{
    bench_group(b, "weighted pick");
    char *clusters = NULL, *routes = NULL;
    size_t clen = 0, rlen = 0;
    FILE *f = open_memstream(&clusters, &clen);
    for (int i = 0; i < 10; i++) {
        fprintf(f,
                "  - name: c%d\n"
                "    type: STATIC\n"
                "    connect_timeout: 1s\n"
                "    load_assignment:\n"
                "      cluster_name: c%d\n"
                "      endpoints:\n"
                "      - lb_endpoints:\n"
                "        - endpoint: { address: { socket_address: { address: 127.0.0.1, "
                "port_value: %d } } }\n",
                i, i, 8080 + i);
    }
    fclose(f);
    f = open_memstream(&routes, &rlen);
    fputs("              - match: { prefix: \"/canary\" }\n"
          "                route:\n"
          "                  weighted_clusters:\n"
          "                    clusters:\n"
          "                    - { name: c0, weight: 90 }\n"
          "                    - { name: c1, weight: 10 }\n"
          "              - match: { prefix: \"/split\" }\n"
          "                route:\n"
          "                  weighted_clusters:\n"
          "                    clusters:\n",
          f);
    for (int i = 0; i < 10; i++) {
        fprintf(f, "                    - { name: c%d, weight: 10 }\n", i);
    }
    fclose(f);
    size_t len;
    char *text = bench_bootstrap(routes, clusters, &len);
    struct config *cfg = bench_load_config(text, len);
    free(text);
    free(routes);
    free(clusters);

    const struct vhost_cfg *vh = &cfg->listeners[0].hcm->routes->vhosts[1];
    struct weighted_ctx *c = calloc(1, sizeof(*c));
    c->rq = (struct route_req){.method = STR_LIT("GET"),
                               .path = STR_LIT("/"),
                               .authority = STR_LIT("www.example.com"),
                               .scheme = STR_LIT("http")};
    uint64_t seed = 1;
    for (int i = 0; i < N_RND; i++) {
        c->rnd[i] = bench_rand(&seed);
    }
    c->rt = &vh->routes[0];
    bench_run(b, "90/10 (2 clusters)", run_weighted, c, 0);
    c->rt = &vh->routes[1];
    bench_run(b, "10-way equal split", run_weighted, c, 0);
    free(c);
    config_unref(cfg);
}

/* ---- config build ---- */

struct build_ctx {
    char *text;
    size_t len;
};

static uint64_t run_build(void *ctx, uint64_t iters)
{
    struct build_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        struct config *cfg = bench_load_config(c->text, c->len);
        acc += cfg->listeners[0].hcm->routes->vhosts[1].n_routes;
        config_unref(cfg);
    }
    return acc;
}

static void build_case(struct bench *b, uint32_t n, bool regex)
{
    char name[96];
    char *routes = routes_yaml(n, regex ? T_REGEX : T_PREFIX);
    struct build_ctx c;
    c.text = bench_bootstrap(routes, cluster_backend, &c.len);
    free(routes);
    snprintf(name, sizeof(name), "config_load_text, %u %s routes (%zu KiB YAML)", n,
             regex ? "regex" : "prefix", c.len / 1024);
    bench_run(b, name, run_build, &c, 0);
    free(c.text);
}

void bench_route(struct bench *b)
{
    bench_group(b, "route match");
    struct config *c10 = load_table(10, T_PREFIX);
    route_case(b, c10, T_PREFIX, 2, "start");
    route_case(b, c10, T_PREFIX, 8, "end");
    config_unref(c10);
    struct config *c1000 = load_table(1000, T_PREFIX);
    route_case(b, c1000, T_PREFIX, 2, "start");
    route_case(b, c1000, T_PREFIX, 998, "end");
    config_unref(c1000);
    struct config *r1000 = load_table(1000, T_REGEX);
    route_case(b, r1000, T_REGEX, 2, "start");
    route_case(b, r1000, T_REGEX, 998, "end");
    config_unref(r1000);
    struct config *n1000 = load_table(1000, T_REGEX_NOLIT);
    route_case(b, n1000, T_REGEX_NOLIT, 2, "start");
    route_case(b, n1000, T_REGEX_NOLIT, 998, "end");
    config_unref(n1000);

    bench_weighted(b);

    bench_group(b, "config build");
    build_case(b, 10, false);
    build_case(b, 1000, false);
    build_case(b, 1000, true);
}
