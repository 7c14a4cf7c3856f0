/* harness: the timing loop shared by the micro-benchmarks (bench/micro/, `make bench-micro`).
 *
 * A case is a function that does its operation `iters` times and returns a value folded from
 * every result (a sum of indices, lengths, pointers). The harness stores that value into a
 * volatile sink, so the compiler cannot drop the work; the operations themselves are calls into
 * build/libremora.a, opaque to the optimiser without LTO.
 *
 * Method, per case: warm up and calibrate (double the iteration count until one run takes
 * ~10 ms), size a run at a fifth of the case's time budget (0.2 s by default), time 5 runs with
 * CLOCK_MONOTONIC and report the median ns per operation, the fastest run, and the spread
 * (max - min) / median of the 5 runs as a noise indicator.
 *
 * Thread: single-threaded. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct config;

/* Runs the operation `iters` times on `ctx`; returns a value depending on every result. */
typedef uint64_t (*bench_fn_cb)(void *ctx, uint64_t iters);

#define BENCH_RUNS 5
#define BENCH_MAX_ROWS 128

struct bench_row {
    const char *group;   /* static */
    char name[96];       /* the case */
    double ns_per_op;    /* median of BENCH_RUNS */
    double ns_min;       /* the fastest run: steadier than the median on a noisy machine */
    double spread;       /* (max - min) / median of the runs */
    size_t bytes_per_op; /* for MB/s; 0 when throughput means nothing */
};

struct bench {
    double budget_s;        /* time per case, all runs together (-t, default 0.2) */
    const char *filter;     /* run only cases whose "group/name" contains this (-f), or NULL */
    const char *group;      /* the group cases are being added to */
    volatile uint64_t sink; /* every case's folded result lands here */
    struct bench_row rows[BENCH_MAX_ROWS];
    uint32_t n_rows;
};

/* Starts group `group` (a static string): the heading rows are filed under. */
void bench_group(struct bench *b, const char *group);

/* Times one case (see the file comment) and records a row; `bytes_per_op` > 0 adds MB/s. Prints
 * the row to stderr as it finishes. Skipped when the filter does not match. */
void bench_run(struct bench *b, const char *name, bench_fn_cb fn, void *ctx, size_t bytes_per_op);

/* True when a case named `name` of the current group would run (lets an area skip an expensive
 * setup nobody asked for). */
bool bench_wanted(const struct bench *b, const char *name);

/* Writes the markdown table of every recorded row to `f`. */
void bench_print_table(const struct bench *b, FILE *f);

/* Builds a config snapshot from bootstrap text; exits with the error on failure (the generated
 * YAML is ours, so a failure is a bug in the benchmark). */
struct config *bench_load_config(const char *text, size_t len);

/* A bootstrap with one listener whose route config is `routes_yaml` (the virtual host's
 * `routes:` list items, indented 14 spaces) and clusters `clusters_yaml` (list items, indented
 * 2 spaces). Returns malloc'ed text; the caller frees it. */
char *bench_bootstrap(const char *routes_yaml, const char *clusters_yaml, size_t *len_out);

/* A small fast PRNG (splitmix64) for varying inputs in loops; advances `*state`. */
static inline uint64_t bench_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The areas (one file each); each sets up its data, runs its cases and frees what it made. */
void bench_parse(struct bench *b);
void bench_route(struct bench *b);
void bench_lb(struct bench *b);
void bench_headers(struct bench *b);
