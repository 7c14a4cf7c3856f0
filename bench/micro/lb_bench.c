/* lb_bench: load-balancer picks (cluster_pick, cluster_pick_hashed) on clusters of 3 and 100
 * endpoints compiled from generated Envoy YAML, with per-worker state set up as a worker does
 * (stats block, cluster_shared, cluster_rt_init): so each pick includes the health-view check
 * and the priority choice of the real request path. RING_HASH and MAGLEV use the tables the
 * config build made (Envoy's defaults: ring of at least 1024 points, Maglev table of 65537)
 * and a different random key per pick. */
#include <stdlib.h>
#include <string.h>

#include "bench/micro/harness.h"
#include "proxy/config/config.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/cluster.h"
#include "proxy/upstream/lb_hash.h"
#include "proxy/upstream/shared.h"

#define N_RND 1024

struct lb_kind {
    const char *label;  /* row name */
    const char *policy; /* lb_policy */
    bool weighted;      /* endpoint weights differ */
};

static const struct lb_kind kinds[] = {
    {"ROUND_ROBIN, equal weights", "ROUND_ROBIN", false},
    {"ROUND_ROBIN, weighted", "ROUND_ROBIN", true},
    {"LEAST_REQUEST, equal (P2C)", "LEAST_REQUEST", false},
    {"LEAST_REQUEST, weighted", "LEAST_REQUEST", true},
    {"RANDOM, equal weights", "RANDOM", false},
    {"RANDOM, weighted", "RANDOM", true},
    {"RING_HASH", "RING_HASH", false},
    {"MAGLEV", "MAGLEV", false},
};
#define N_KINDS (sizeof(kinds) / sizeof(kinds[0]))

static const uint32_t sizes[] = {3, 100};
#define N_SIZES (sizeof(sizes) / sizeof(sizes[0]))

/* 3 endpoints: 5:1:1 (nginx's example of a smooth sequence); 100: 1..10 cycling. */
static uint32_t weight_of(uint32_t n, uint32_t i)
{
    if (n == 3) {
        return i == 0 ? 5 : 1;
    }
    return 1 + i % 10;
}

static char *clusters_yaml(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    for (uint32_t s = 0; s < N_SIZES; s++) {
        for (uint32_t k = 0; k < N_KINDS; k++) {
            fprintf(f,
                    "  - name: lb_%u_%u\n"
                    "    type: STATIC\n"
                    "    connect_timeout: 1s\n"
                    "    lb_policy: %s\n"
                    "    load_assignment:\n"
                    "      cluster_name: lb_%u_%u\n"
                    "      endpoints:\n"
                    "      - lb_endpoints:\n",
                    s, k, kinds[k].policy, s, k);
            for (uint32_t i = 0; i < sizes[s]; i++) {
                fprintf(f,
                        "        - endpoint: { address: { socket_address: { address: 10.0.%u.%u, "
                        "port_value: 8080 } } }\n",
                        i / 250, i % 250 + 1);
                if (kinds[k].weighted) {
                    fprintf(f, "          load_balancing_weight: %u\n", weight_of(sizes[s], i));
                }
            }
        }
    }
    fclose(f);
    return text;
}

struct lb_ctx {
    struct cluster_rt *c;
    uint64_t rnd[N_RND]; /* precomputed draws and keys: a pick's input costs a load */
};

static uint64_t run_pick(void *ctx, uint64_t iters)
{
    struct lb_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        acc += (uint64_t)cluster_pick(c->c, c->rnd[i % N_RND]);
    }
    return acc;
}

static uint64_t run_pick_hashed(void *ctx, uint64_t iters)
{
    struct lb_ctx *c = ctx;
    uint64_t acc = 0;
    for (uint64_t i = 0; i < iters; i++) {
        const uint64_t *key = &c->rnd[i % N_RND];
        acc += (uint64_t)cluster_pick_hashed(c->c, key, c->rnd[(i + 1) % N_RND]);
    }
    return acc;
}

void bench_lb(struct bench *b)
{
    bench_group(b, "lb pick");
    char *clusters = clusters_yaml();
    size_t len;
    char *text = bench_bootstrap("              - match: { prefix: \"/\" }\n"
                                 "                route: { cluster: lb_0_0 }\n",
                                 clusters, &len);
    struct config *cfg = bench_load_config(text, len);
    free(text);
    free(clusters);

    /* What a worker sets up (proxy/worker.c). */
    struct stats_block *sb = stats_block_new(cfg);
    struct cluster_shared *sh = cluster_shared_new(cfg);
    struct cluster_rt *rts = calloc(cfg->n_clusters, sizeof(*rts));
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        cluster_rt_init(&rts[i], &cfg->clusters[i], &sb->cluster[i], sb->host[i], &sh[i]);
    }
    struct lb_ctx *c = calloc(1, sizeof(*c));
    uint64_t seed = 7;
    for (int i = 0; i < N_RND; i++) {
        c->rnd[i] = bench_rand(&seed);
    }

    for (uint32_t k = 0; k < N_KINDS; k++) {
        for (uint32_t s = 0; s < N_SIZES; s++) {
            uint32_t idx = s * N_KINDS + k;
            c->c = &rts[idx];
            /* LEAST_REQUEST: some requests in flight, unevenly */
            for (uint32_t i = 0; i < c->c->n_eps; i++) {
                c->c->eps[i].active_rq = i * 7 % 5;
            }
            char name[96];
            const struct lb_hash *t =
                cfg->clusters[idx].hash_lb ? cfg->clusters[idx].hash_lb[0] : NULL;
            if (t != NULL) {
                snprintf(name, sizeof(name), "%s, %u endpoints (%llu %s)", kinds[k].label, sizes[s],
                         (unsigned long long)t->size, t->kind == LB_HASH_RING ? "points" : "slots");
            } else {
                snprintf(name, sizeof(name), "%s, %u endpoints", kinds[k].label, sizes[s]);
            }
            bench_run(b, name, t != NULL ? run_pick_hashed : run_pick, c, 0);
        }
    }

    free(c);
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        cluster_rt_deinit(&rts[i]);
    }
    free(rts);
    cluster_shared_free(sh, cfg);
    stats_block_free(sb, cfg);
    config_unref(cfg);
}
