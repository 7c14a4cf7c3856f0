/* harness: timing, the median of runs, the results table and config helpers for the
 * micro-benchmarks (see harness.h). */
#include "bench/micro/harness.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proxy/config/build.h"
#include "proxy/core/err.h"

/* One calibration run must last this long before its rate is trusted; it doubles as warm-up. */
#define CALIBRATE_NS 10e6

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static double time_run(struct bench *b, bench_fn_cb fn, void *ctx, uint64_t iters)
{
    double t0 = now_ns();
    uint64_t v = fn(ctx, iters);
    double t1 = now_ns();
    b->sink += v;
    return t1 - t0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_group(struct bench *b, const char *group)
{
    b->group = group;
}

bool bench_wanted(const struct bench *b, const char *name)
{
    if (b->filter == NULL) {
        return true;
    }
    char full[160];
    snprintf(full, sizeof(full), "%s/%s", b->group, name);
    return strstr(full, b->filter) != NULL;
}

void bench_run(struct bench *b, const char *name, bench_fn_cb fn, void *ctx, size_t bytes_per_op)
{
    if (!bench_wanted(b, name) || b->n_rows == BENCH_MAX_ROWS) {
        return;
    }
    /* Calibrate: double the count until a run is long enough to measure. */
    uint64_t iters = 1;
    double t = time_run(b, fn, ctx, iters);
    while (t < CALIBRATE_NS && iters < (1ULL << 40)) {
        iters *= 2;
        t = time_run(b, fn, ctx, iters);
    }
    double per_op = t / (double)iters;
    double run_ns = b->budget_s * 1e9 / BENCH_RUNS;
    uint64_t n = (uint64_t)(run_ns / per_op);
    if (n == 0) {
        n = 1;
    }
    double ns[BENCH_RUNS];
    for (int i = 0; i < BENCH_RUNS; i++) {
        ns[i] = time_run(b, fn, ctx, n) / (double)n;
    }
    qsort(ns, BENCH_RUNS, sizeof(ns[0]), cmp_double);

    struct bench_row *r = &b->rows[b->n_rows++];
    r->group = b->group;
    snprintf(r->name, sizeof(r->name), "%s", name);
    r->ns_per_op = ns[BENCH_RUNS / 2];
    r->ns_min = ns[0];
    r->spread = (ns[BENCH_RUNS - 1] - ns[0]) / r->ns_per_op;
    r->bytes_per_op = bytes_per_op;
    fprintf(stderr, "  %-14s %-52s %12.1f ns/op  (%llu x %d runs, spread %.0f%%)\n", r->group,
            r->name, r->ns_per_op, (unsigned long long)n, BENCH_RUNS, r->spread * 100.0);
}

/* "12.3 M", "850.2 k", "41" */
static void fmt_rate(char *out, size_t cap, double v)
{
    if (v >= 1e6) {
        snprintf(out, cap, "%.1f M", v / 1e6);
    } else if (v >= 1e3) {
        snprintf(out, cap, "%.1f k", v / 1e3);
    } else {
        snprintf(out, cap, "%.0f", v);
    }
}

/* Digits that mean something at each size: 3.47, 41.2, 1234, 1,234,567. */
static void fmt_ns(char *out, size_t cap, double v)
{
    if (v < 10) {
        snprintf(out, cap, "%.2f", v);
    } else if (v < 1000) {
        snprintf(out, cap, "%.1f", v);
    } else if (v < 1e6) {
        snprintf(out, cap, "%.0f", v);
    } else {
        unsigned long long x = (unsigned long long)(v + 0.5);
        snprintf(out, cap, "%llu,%03llu,%03llu", x / 1000000, x / 1000 % 1000, x % 1000);
    }
}

void bench_print_table(const struct bench *b, FILE *f)
{
    fprintf(f, "| area | case | ns/op | ops/s | MB/s | min ns/op | spread |\n");
    fprintf(f, "|---|---|---:|---:|---:|---:|---:|\n");
    for (uint32_t i = 0; i < b->n_rows; i++) {
        const struct bench_row *r = &b->rows[i];
        char ns[32], ns_min[32], ops[32], mbs[32] = "";
        fmt_ns(ns, sizeof(ns), r->ns_per_op);
        fmt_ns(ns_min, sizeof(ns_min), r->ns_min);
        fmt_rate(ops, sizeof(ops), 1e9 / r->ns_per_op);
        if (r->bytes_per_op > 0) {
            /* bytes per ns * 1e9 / 1e6 */
            snprintf(mbs, sizeof(mbs), "%.0f", (double)r->bytes_per_op * 1e3 / r->ns_per_op);
        }
        fprintf(f, "| %s | %s | %s | %s | %s | %s | %.0f%% |\n", r->group, r->name, ns, ops, mbs,
                ns_min, r->spread * 100.0);
    }
}

struct config *bench_load_config(const char *text, size_t len)
{
    struct err e;
    err_clear(&e);
    struct config *c = config_load_text(text, len, &e);
    if (c == NULL) {
        fprintf(stderr, "bench: generated config rejected: %s\n", e.msg);
        exit(1);
    }
    return c;
}

char *bench_bootstrap(const char *routes_yaml, const char *clusters_yaml, size_t *len_out)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        perror("open_memstream");
        exit(1);
    }
    fputs("static_resources:\n"
          "  listeners:\n"
          "  - name: bench\n"
          "    address:\n"
          "      socket_address: { address: 127.0.0.1, port_value: 10000 }\n"
          "    filter_chains:\n"
          "    - filters:\n"
          "      - name: envoy.filters.network.http_connection_manager\n"
          "        typed_config:\n"
          "          \"@type\": type.googleapis.com/envoy.extensions.filters.network."
          "http_connection_manager.v3.HttpConnectionManager\n"
          "          stat_prefix: bench\n"
          "          http_filters:\n"
          "          - name: envoy.filters.http.router\n"
          "            typed_config:\n"
          "              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3."
          "Router\n"
          "          route_config:\n"
          "            name: bench\n"
          "            virtual_hosts:\n"
          "            - name: other\n"
          "              domains: [\"api.example.org\", \"*.example.net\"]\n"
          "              routes:\n"
          "              - match: { prefix: \"/\" }\n"
          "                direct_response: { status: 404 }\n"
          "            - name: main\n"
          "              domains: [\"www.example.com\", \"example.com\"]\n"
          "              routes:\n",
          f);
    fputs(routes_yaml, f);
    fputs("  clusters:\n", f);
    fputs(clusters_yaml, f);
    if (fclose(f) != 0) {
        perror("open_memstream");
        exit(1);
    }
    *len_out = len;
    return text;
}
