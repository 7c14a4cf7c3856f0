/* micro: the micro-benchmark driver (`make bench-micro`). Runs every area's cases (HTTP/1
 * parsing, route matching, weighted and load-balancer picks, header list operations), prints a
 * markdown table of ns per operation to stdout and, with -o, writes it with a header describing
 * the machine to a file (bench/micro/results.md).
 *
 *   build/bench/micro [-t SECONDS_PER_CASE] [-f SUBSTRING] [-o FILE]
 */
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench/micro/harness.h"
#include "proxy/core/log.h"

static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL) {
        return;
    }
    char line[256];
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            const char *v = strchr(line, ':');
            if (v != NULL) {
                v += strspn(v + 1, " \t") + 1;
                snprintf(out, cap, "%.*s", (int)strcspn(v, "\n"), v);
            }
            break;
        }
    }
    fclose(f);
}

/* The source tree's commit ("8ec1a4a-dirty"), or "unknown" outside a git checkout. */
static void git_rev(char *out, size_t cap)
{
    snprintf(out, cap, "unknown");
    FILE *p = popen("git describe --always --dirty 2>/dev/null", "r");
    if (p == NULL) {
        return;
    }
    char line[64];
    if (fgets(line, sizeof(line), p) != NULL && line[0] != '\0' && line[0] != '\n') {
        snprintf(out, cap, "%.*s", (int)strcspn(line, "\n"), line);
    }
    pclose(p);
}

static void write_header(FILE *f, const struct bench *b, double total_s)
{
    char cpu[128], date[64], rev[64];
    cpu_model(cpu, sizeof(cpu));
    git_rev(rev, sizeof(rev));
    time_t t = time(NULL);
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", gmtime(&t));
    struct utsname u;
    if (uname(&u) != 0) {
        memset(&u, 0, sizeof(u));
    }
    fprintf(f, "# remora micro-benchmarks\n\n");
    fprintf(f, "Written by `make bench-micro` (bench/micro/main.c); see bench/README.md.\n\n");
    fprintf(f, "- %s, remora %s, %s x %ld online CPUs, Linux %s, cc %s, -O2\n", date, rev, cpu,
            sysconf(_SC_NPROCESSORS_ONLN), u.release, __VERSION__);
    fprintf(f,
            "- each case: warm-up and calibration, then %d timed runs of ~%.0f ms; ns/op is the "
            "median run's, min the fastest run's; spread = (slowest - fastest run) / median\n",
            BENCH_RUNS, b->budget_s * 1e3 / BENCH_RUNS);
    fprintf(f, "- whole run: %.1f s; a shared, noisy VM: compare runs, not single figures\n\n",
            total_s);
}

static void usage(void)
{
    fprintf(stderr, "usage: micro [-t SECONDS_PER_CASE] [-f SUBSTRING] [-o FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct bench *b = calloc(1, sizeof(*b));
    b->budget_s = 0.2;
    const char *out = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "t:f:o:h")) != -1) {
        switch (opt) {
        case 't':
            b->budget_s = atof(optarg);
            if (b->budget_s <= 0) {
                usage();
            }
            break;
        case 'f':
            b->filter = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        default:
            usage();
        }
    }
    /* Config builds log warnings nobody needs here. */
    log_set_level(LOG_ERROR);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bench_parse(b);
    bench_route(b);
    bench_lb(b);
    bench_headers(b);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double total_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;

    fprintf(stderr, "\n");
    bench_print_table(b, stdout);
    if (out != NULL) {
        FILE *f = fopen(out, "w");
        if (f == NULL) {
            perror(out);
            return 1;
        }
        write_header(f, b, total_s);
        bench_print_table(b, f);
        if (fclose(f) != 0) {
            perror(out);
            return 1;
        }
        fprintf(stderr, "wrote %s (%.1f s)\n", out, total_s);
    }
    free(b);
    return 0;
}
