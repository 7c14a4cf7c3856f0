/* main: remora's entry point. Parses Envoy's command-line flags, loads and compiles the
 * bootstrap, binds one SO_REUSEPORT socket per listener per worker (so bind errors surface
 * before anything starts), starts the workers, and runs the main thread's loop: the admin
 * endpoint, signals and the drain sequence.
 *
 * Signals: the first SIGTERM drains (stop accepting, finish in-flight requests with
 * `Connection: close`, exit when done or after --drain-time-s); under --bootstrap-from-env it
 * does what App Mesh's image agent does instead: a graceful drain (listeners keep accepting,
 * responses close their connections by --drain-strategy) for --drain-time-s, then exit. A
 * second SIGTERM, or SIGINT, exits at once. POST /drain_listeners?graceful runs the same
 * graceful drain and then stops the listeners (proxy/drain.h). This file holds the process's only
 * mutable globals-free state: everything lives in `struct server` on main's stack. */
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/config/appmesh_env.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/drain.h"
#include "proxy/http/access_log.h"
#include "proxy/lds.h"
#include "proxy/reload.h"
#include "proxy/stats/admin.h"
#include "proxy/stats/sink.h"
#include "proxy/stats/stats.h"
#include "proxy/upstream/health_check.h"
#include "proxy/upstream/outlier.h"
#include "proxy/upstream/shared.h"
#include "proxy/worker.h"
#include "proxy/xds/ads.h"

#define TRIM_INTERVAL_S 5.0
#define TRIM_MIN_FREE_BYTES (4u << 20)

#ifndef REMORA_VERSION
#define REMORA_VERSION "0.1.0"
#endif

/* How long startup waits for the first answers of CDS STRICT_DNS clusters' names (a name whose
 * nameserver does not answer would otherwise hold it for getaddrinfo's whole timeout). */
#define DNS_INIT_BOUND_MS 15000

struct options {
    const char *config_path;
    const char *config_yaml;
    const char *mode;
    long concurrency;
    const char *log_level;
    const char *service_node;
    const char *service_cluster;
    long drain_time_s;
    enum drain_strategy drain_strategy; /* --drain-strategy (default gradual) */
    bool from_env;        /* --bootstrap-from-env: App Mesh's image variables (appmesh_env.h) */
    bool print_bootstrap; /* --print-bootstrap */
    bool has_concurrency, has_log_level, has_drain_time; /* given as flags: they win */
};

struct server {
    struct ev_loop *loop;
    struct options opt;
    struct config *cfg;
    struct worker **workers;
    uint32_t n_workers;
    struct stats_block **blocks;
    struct sockaddr_storage *bound; /* owned; [cfg->n_listeners]: each listener's bound address */
    struct access_log_sink **sinks;
    uint32_t n_sinks;
    struct cluster_shared *shared; /* owned: cluster-wide breaker and health state */
    struct health_check **hcs;     /* owned; [cfg->n_clusters], NULL without health_checks */
    struct outlier **ods;          /* owned; [cfg->n_clusters], NULL without outlier_detection */
    uint32_t n_warming;            /* clusters whose first health-check round is not done,
                                    * plus 1 while the ADS client initialises, plus 1 while
                                    * CDS STRICT_DNS names await their first answers, plus 1
                                    * while CDS clusters warm (hold_for_cds_warming) */
    bool workers_started;
    bool dns_held;  /* hold_for_dns has held startup once */
    bool warm_held; /* hold_for_cds_warming has held startup once */
    struct admin *admin;
    struct reload *reload; /* owned: RDS file watching (reload.h) */
    struct ads *ads;       /* owned: the ADS client (xds/ads.h), or NULL */
    struct admin_ctx admin_ctx;
    char *options_json;
    ev_signal sigterm;
    ev_signal sigint;
    ev_async worker_exit;
    ev_timer drain_deadline;
    ev_timer trim;
    struct stats_flusher *flusher; /* stats_sinks (proxy/stats/sink.h), or NULL */
    int n_sigterm;
    bool stopping;
    /* the graceful drain (/drain_listeners?graceful, App Mesh SIGTERM): its query's
     * ADMIN_DRAIN_* bits and the timer that ends it (the listeners stop then) */
    bool graceful;
    unsigned graceful_flags;
    ev_timer graceful_end;
};

static void usage(FILE *f)
{
    fprintf(f, "Usage: remora [options]\n"
               "\n"
               "An Envoy-compatible service-mesh proxy. Flags follow Envoy's.\n"
               "\n"
               "  -c, --config-path PATH     Envoy v3 bootstrap file (YAML or JSON)\n"
               "      --config-yaml TEXT     inline YAML bootstrap (merged over -c's)\n"
               "      --mode serve|validate  serve (default), or validate the config: print OK or\n"
               "                             the error with its field path, exit 0 or 1\n"
               "      --concurrency N        worker threads (default: number of cores)\n"
               "  -l, --log-level LEVEL      trace, debug, info (default), warning, error,\n"
               "                             critical, off\n"
               "      --service-node NAME    node id (overrides node.id)\n"
               "      --service-cluster NAME node cluster (overrides node.cluster)\n"
               "      --drain-time-s N       how long a drain may take (default 600)\n"
               "      --drain-strategy S     gradual (default: the share of connections told\n"
               "                             to close grows over the drain time) or immediate\n"
               "      --bootstrap-from-env   no -c: build the bootstrap from App Mesh's Envoy\n"
               "                             image variables (APPMESH_RESOURCE_ARN,\n"
               "                             APPMESH_XDS_ENDPOINT, ...; see README.md)\n"
               "      --print-bootstrap      with --bootstrap-from-env: print the bootstrap as\n"
               "                             JSON, check it, exit 0 or 1\n"
               "      --version              print the version and exit\n"
               "  -h, --help                 this help\n"
               "\n"
               "Signals: SIGTERM drains and exits (with --bootstrap-from-env: keeps serving\n"
               "through a graceful drain of --drain-time-s, then exits); a second SIGTERM or\n"
               "SIGINT exits at once.\n");
}

static int parse_args(int argc, char **argv, struct options *o)
{
    enum {
        OPT_CONFIG_YAML = 256,
        OPT_MODE,
        OPT_CONCURRENCY,
        OPT_SERVICE_NODE,
        OPT_SERVICE_CLUSTER,
        OPT_DRAIN_TIME,
        OPT_DRAIN_STRATEGY,
        OPT_VERSION,
        OPT_FROM_ENV,
        OPT_PRINT_BOOTSTRAP,
    };
    static const struct option longopts[] = {
        {"config-path", required_argument, NULL, 'c'},
        {"config-yaml", required_argument, NULL, OPT_CONFIG_YAML},
        {"mode", required_argument, NULL, OPT_MODE},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"log-level", required_argument, NULL, 'l'},
        {"service-node", required_argument, NULL, OPT_SERVICE_NODE},
        {"service-cluster", required_argument, NULL, OPT_SERVICE_CLUSTER},
        {"drain-time-s", required_argument, NULL, OPT_DRAIN_TIME},
        {"drain-strategy", required_argument, NULL, OPT_DRAIN_STRATEGY},
        {"version", no_argument, NULL, OPT_VERSION},
        {"bootstrap-from-env", no_argument, NULL, OPT_FROM_ENV},
        {"print-bootstrap", no_argument, NULL, OPT_PRINT_BOOTSTRAP},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(o, 0, sizeof(*o));
    o->mode = "serve";
    o->concurrency = sysconf(_SC_NPROCESSORS_ONLN);
    o->log_level = "info";
    o->drain_time_s = 600;
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "c:l:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            o->config_path = optarg;
            break;
        case OPT_CONFIG_YAML:
            o->config_yaml = optarg;
            break;
        case OPT_MODE:
            o->mode = optarg;
            break;
        case OPT_CONCURRENCY:
            o->concurrency = strtol(optarg, &end, 10);
            if (*end != '\0' || o->concurrency < 1 || o->concurrency > 1024) {
                fprintf(stderr, "remora: --concurrency must be 1..1024\n");
                return -1;
            }
            o->has_concurrency = true;
            break;
        case 'l':
            o->log_level = optarg;
            o->has_log_level = true;
            break;
        case OPT_SERVICE_NODE:
            o->service_node = optarg;
            break;
        case OPT_SERVICE_CLUSTER:
            o->service_cluster = optarg;
            break;
        case OPT_DRAIN_TIME:
            o->drain_time_s = strtol(optarg, &end, 10);
            if (*end != '\0' || o->drain_time_s < 0 || o->drain_time_s > DRAIN_TIME_MAX_S) {
                fprintf(stderr, "remora: --drain-time-s must be a non-negative integer\n");
                return -1;
            }
            o->has_drain_time = true;
            break;
        case OPT_DRAIN_STRATEGY:
            if (drain_strategy_parse(optarg, &o->drain_strategy) != 0) {
                fprintf(stderr, "remora: --drain-strategy must be gradual or immediate\n");
                return -1;
            }
            break;
        case OPT_FROM_ENV:
            o->from_env = true;
            break;
        case OPT_PRINT_BOOTSTRAP:
            o->print_bootstrap = true;
            break;
        case OPT_VERSION:
            printf("remora version: %s\n", REMORA_VERSION);
            exit(0);
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "remora: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    if (strcmp(o->mode, "serve") != 0 && strcmp(o->mode, "validate") != 0) {
        fprintf(stderr, "remora: --mode must be serve or validate\n");
        return -1;
    }
    if (log_level_parse(o->log_level) < 0) {
        fprintf(stderr, "remora: unknown log level '%s'\n", o->log_level);
        return -1;
    }
    if (o->from_env && (o->config_path != NULL || o->config_yaml != NULL)) {
        fprintf(stderr, "remora: --bootstrap-from-env builds the whole bootstrap: not with -c "
                        "or --config-yaml (ENVOY_CONFIG_FILE names a file instead)\n");
        return -1;
    }
    if (o->print_bootstrap && !o->from_env) {
        fprintf(stderr, "remora: --print-bootstrap goes with --bootstrap-from-env\n");
        return -1;
    }
    if (o->config_path == NULL && o->config_yaml == NULL && !o->from_env) {
        fprintf(stderr, "remora: no configuration: give -c PATH, --config-yaml TEXT or "
                        "--bootstrap-from-env\n");
        return -1;
    }
    return 0;
}

/* --bootstrap-from-env: the image's process variables (ENVOY_LOG_LEVEL, ENVOY_CONCURRENCY,
 * LISTENER_DRAIN_WAIT_TIME_S, ENVOY_CONFIG_FILE) as flags, unless given as flags. `o` borrows
 * strings from `env`. */
static void apply_env(struct options *o, const struct appmesh_env *env)
{
    if (!o->has_log_level && env->log_level != NULL) {
        o->log_level = env->log_level;
    }
    if (!o->has_concurrency && env->concurrency > 0) {
        o->concurrency = env->concurrency;
    }
    if (!o->has_drain_time) {
        o->drain_time_s = env->drain_time_s;
    }
    o->config_path = env->config_file;
}

static char *options_to_json(const struct options *o)
{
    json_t *j = json_object();
    json_object_set_new(j, "concurrency", json_integer(o->concurrency));
    json_object_set_new(j, "config_path", json_string(o->config_path ? o->config_path : ""));
    json_object_set_new(j, "config_yaml", json_string(o->config_yaml ? o->config_yaml : ""));
    json_object_set_new(j, "log_level", json_string(o->log_level));
    json_object_set_new(j, "service_node", json_string(o->service_node ? o->service_node : ""));
    json_object_set_new(j, "service_cluster",
                        json_string(o->service_cluster ? o->service_cluster : ""));
    char dt[32];
    snprintf(dt, sizeof(dt), "%lds", o->drain_time_s);
    json_object_set_new(j, "drain_time", json_string(dt));
    json_object_set_new(j, "drain_strategy", json_string(drain_strategy_name(o->drain_strategy)));
    json_object_set_new(j, "mode",
                        json_string(strcmp(o->mode, "validate") == 0 ? "Validate" : "Serve"));
    char *s = json_dumps(j, JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

/* Starts the worker threads and goes LIVE. Returns 0, or -1 after printing why. */
static int start_workers(struct server *s)
{
    const struct config *cfg = s->cfg;
    s->workers_started = true;
    for (uint32_t w = 0; w < s->n_workers; w++) {
        int rc = worker_start(s->workers[w]);
        if (rc < 0) {
            fprintf(stderr, "remora: cannot start worker thread: %s\n", strerror(-rc));
            return -1;
        }
    }
    s->admin_ctx.state = SERVER_LIVE;
    for (uint32_t i = 0; i < cfg->n_listeners; i++) {
        LOG_I("listener '%.*s' on %.*s", STR_FMT(cfg->listeners[i].name),
              STR_FMT(cfg->listeners[i].addr.text));
    }
    if (cfg->has_admin) {
        LOG_I("admin on %.*s", STR_FMT(cfg->admin_addr.text));
    }
    LOG_I("remora %s started with %u worker(s)", REMORA_VERSION, s->n_workers);
    return 0;
}

/* Workers must run before they can be told to stop or drain (worker_free joins them): a
 * shutdown during health-check warm-up starts them first. */
static void ensure_workers(struct server *s)
{
    if (!s->workers_started && start_workers(s) != 0) {
        exit(1); /* threads cannot be created: nothing is serving, nothing to drain */
    }
}

/* A cluster finished its first health-check round (Envoy's cluster warming). Workers start,
 * and accept what waited in the listen backlog, once every cluster has. */
static void on_cluster_warm(void *ud);

/* Startup would be done: unless CDS STRICT_DNS clusters (from the file, or over ADS by now) still
 * wait for their names' first answers, which is one more warming item (Envoy's init manager
 * waits for a STRICT_DNS cluster's first resolution), once. True when it holds. */
static bool hold_for_dns(struct server *s)
{
    if (s->dns_held || !reload_dns_hold_init(s->reload, DNS_INIT_BOUND_MS, on_cluster_warm, s)) {
        return false;
    }
    s->dns_held = true;
    s->n_warming++;
    return true;
}

/* Then: the CDS clusters still warming (health-checked ones until their first round; names'
 * lookups and assignments were waited for before), once, bounded as the DNS hold. */
static bool hold_for_cds_warming(struct server *s)
{
    if (s->warm_held || !reload_warm_hold_init(s->reload, DNS_INIT_BOUND_MS, on_cluster_warm, s)) {
        return false;
    }
    s->warm_held = true;
    s->n_warming++;
    return true;
}

static void on_cluster_warm(void *ud)
{
    struct server *s = ud;
    if (s->n_warming > 0 && --s->n_warming == 0 && !s->workers_started) {
        if (hold_for_dns(s) || hold_for_cds_warming(s)) {
            return;
        }
        LOG_I("initialisation done");
        ensure_workers(s);
    } else if (s->n_warming == 1 && ads_initializing(s->ads) &&
               s->admin_ctx.state == SERVER_PRE_INITIALIZING) {
        s->admin_ctx.state = SERVER_INITIALIZING; /* clusters are warm; ADS is not yet */
    }
}

/* Outlier detectors and active health checkers for every cluster that configures them, on
 * main's loop. Returns how many clusters have health checks (to wait for). */
static uint32_t start_health(struct server *s)
{
    const struct config *cfg = s->cfg;
    uint64_t seed = (uint64_t)(ev_time() * 1e6) ^ ((uint64_t)getpid() << 32);
    s->hcs = xcalloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*s->hcs));
    s->ods = xcalloc(cfg->n_clusters ? cfg->n_clusters : 1, sizeof(*s->ods));
    uint32_t n = 0;
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        if (cfg->clusters[i].outlier != NULL && cfg->clusters[i].boot_dns == NULL) {
            s->ods[i] = outlier_new(s->loop, &cfg->clusters[i], &s->shared[i], seed + 2 * i);
        }
        if (cfg->clusters[i].health_check != NULL) {
            n++;
        }
    }
    s->n_warming = n;
    /* a bootstrap STRICT_DNS cluster re-resolved has its version's checker and detector
     * (proxy/cds.h), whose first round counts here too */
    reload_set_boot_warm(s->reload, on_cluster_warm, s);
    for (uint32_t i = 0; i < cfg->n_clusters; i++) {
        if (cfg->clusters[i].health_check != NULL && cfg->clusters[i].boot_dns == NULL) {
            s->hcs[i] = health_check_new(s->loop, &cfg->clusters[i], &s->shared[i], s->blocks,
                                         s->n_workers, seed + 2 * i + 1, on_cluster_warm, s);
        }
    }
    return n;
}

static void stop_health(struct server *s)
{
    for (uint32_t i = 0; s->hcs != NULL && i < s->cfg->n_clusters; i++) {
        health_check_free(s->hcs[i]);
        outlier_free(s->ods[i]);
    }
    free(s->hcs);
    free(s->ods);
}

static void stop_now(struct server *s)
{
    ensure_workers(s);
    s->stopping = true;
    for (uint32_t i = 0; i < s->n_workers; i++) {
        worker_command(s->workers[i], WORKER_CMD_STOP);
    }
}

static void start_drain(struct server *s)
{
    LOG_I("draining: no new connections; exiting when in-flight requests finish or after %lds",
          s->opt.drain_time_s);
    ensure_workers(s);
    s->admin_ctx.state = SERVER_DRAINING;
    reload_stop_listening(s->reload);
    for (uint32_t i = 0; i < s->n_workers; i++) {
        worker_command(s->workers[i], WORKER_CMD_DRAIN);
    }
    ev_timer_set(&s->drain_deadline, (double)s->opt.drain_time_s, 0);
    ev_timer_start(s->loop, &s->drain_deadline);
}

/* Tells every worker the graceful drain state: whether a drain runs (and for which listeners),
 * and whether the server fails health checks (then every response closes its connection). */
static void post_drain_state(struct server *s)
{
    struct drain_state st = {
        .active = s->graceful,
        .inbound_only = (s->graceful_flags & ADMIN_DRAIN_INBOUND_ONLY) != 0,
        .hc_failed = s->admin_ctx.healthcheck_failed,
        .strategy = s->opt.drain_strategy,
        .drain_time_s = (uint32_t)s->opt.drain_time_s,
    };
    uint64_t word = drain_word_pack(&st);
    for (uint32_t i = 0; i < s->n_workers; i++) {
        worker_drain_post(s->workers[i], word);
    }
}

static void stop_listening(struct server *s, bool inbound_only)
{
    /* LDS adds and modifies no listener from now on (a modified one would dup() sockets the
     * workers are closing; an added inbound one would accept again) */
    reload_stop_listening(s->reload);
    for (uint32_t i = 0; i < s->n_workers; i++) {
        worker_command(s->workers[i],
                       inbound_only ? WORKER_CMD_STOP_INBOUND : WORKER_CMD_STOP_LISTENING);
    }
}

/* Envoy's graceful drain (DrainManagerImpl::startDrainSequence from /drain_listeners?graceful):
 * for --drain-time-s the listeners keep accepting while responses tell their connections to
 * close (--drain-strategy), then the listeners (only the INBOUND ones with `inboundonly`, none
 * with `skip_exit`) stop accepting. Connections still open stay until they close or the server
 * exits. A second request while one runs changes nothing, as in Envoy. */
static void start_graceful(struct server *s, unsigned flags)
{
    if (s->graceful) {
        return;
    }
    LOG_I("graceful drain%s: listeners accept for %lds while connections are told to close (%s)",
          (flags & ADMIN_DRAIN_INBOUND_ONLY) ? " of inbound listeners" : "", s->opt.drain_time_s,
          s->opt.drain_strategy == DRAIN_IMMEDIATE ? "immediate" : "gradual");
    s->graceful = true;
    s->graceful_flags = flags;
    post_drain_state(s);
    ev_timer_set(&s->graceful_end, (double)s->opt.drain_time_s, 0);
    ev_timer_start(s->loop, &s->graceful_end);
}

static void on_graceful_end(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = t->data;
    if (s->graceful_flags & ADMIN_DRAIN_SKIP_EXIT) {
        LOG_I("graceful drain done; listeners stay open (skip_exit)");
        return;
    }
    LOG_I("graceful drain done: %s listeners stop accepting",
          (s->graceful_flags & ADMIN_DRAIN_INBOUND_ONLY) ? "inbound" : "all");
    stop_listening(s, (s->graceful_flags & ADMIN_DRAIN_INBOUND_ONLY) != 0);
}

/* Under --bootstrap-from-env, SIGTERM does what App Mesh's image agent does on it: a graceful
 * drain of every listener (/drain_listeners?graceful), serving through LISTENER_DRAIN_WAIT_TIME_S
 * (--drain-time-s), then stop (the agent's SIGTERM to Envoy, which exits at once). The server
 * says DRAINING meanwhile (/ready 503), as remora's own SIGTERM drain does. Before it went LIVE
 * there is nothing to drain: SIGTERM then takes remora's own drain, which exits at once. */
static void start_appmesh_drain(struct server *s)
{
    LOG_I("SIGTERM: graceful drain for %lds (LISTENER_DRAIN_WAIT_TIME_S), then exit",
          s->opt.drain_time_s);
    ensure_workers(s);
    s->admin_ctx.state = SERVER_DRAINING;
    start_graceful(s, 0);
    ev_timer_set(&s->drain_deadline, (double)s->opt.drain_time_s, 0);
    ev_timer_start(s->loop, &s->drain_deadline);
}

static void on_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct server *s = w->data;
    /* Not serving yet (waiting for the first configuration): nothing to drain gracefully. */
    if (++s->n_sigterm == 1 && s->opt.from_env && s->admin_ctx.state == SERVER_LIVE) {
        start_appmesh_drain(s);
    } else if (s->n_sigterm == 1) {
        start_drain(s);
    } else {
        LOG_I("second SIGTERM: exiting now");
        stop_now(s);
    }
}

static void on_sigint(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    LOG_I("SIGINT: exiting now");
    stop_now(w->data);
}

static void on_drain_deadline(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    LOG_I("drain time is up: closing what is left");
    stop_now(t->data);
}

static void on_worker_exit(struct ev_loop *loop, ev_async *a, int revents)
{
    (void)revents;
    struct server *s = a->data;
    for (uint32_t i = 0; i < s->n_workers; i++) {
        if (!atomic_load_explicit(&s->workers[i]->exited, memory_order_acquire)) {
            return;
        }
    }
    ev_break(loop, EVBREAK_ALL);
}

/* After a burst (say 1000 requests in flight at once) the allocator keeps the freed pages of
 * every worker's heap, and an idle proxy would stay at its peak RSS. Every few seconds, if a
 * good amount of memory is free inside the heaps, give the free pages back. */
static void on_trim(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)t;
    (void)revents;
    struct mallinfo2 mi = mallinfo2();
    if (mi.fordblks > TRIM_MIN_FREE_BYTES) {
        malloc_trim(0);
    }
}

static void admin_quit(void *ud)
{
    stop_now(ud);
}

static void admin_drain_listeners(void *ud, unsigned flags)
{
    struct server *s = ud;
    if (flags & ADMIN_DRAIN_GRACEFUL) {
        start_graceful(s, flags);
    } else {
        stop_listening(s, (flags & ADMIN_DRAIN_INBOUND_ONLY) != 0);
    }
}

static void admin_healthcheck_changed(void *ud)
{
    post_drain_state(ud);
}

static void admin_dump_dynamic(void *ud, json_t *configs)
{
    struct server *s = ud;
    reload_dump(s->reload, configs);
}

static void admin_dyn_clusters(void *ud, const struct cluster_view **v, uint32_t *n,
                               const struct cm_stats **cm)
{
    struct server *s = ud;
    reload_cluster_views(s->reload, v, n, cm);
}

static void admin_dyn_secrets(void *ud, const struct sds_stat_view **v, uint32_t *n)
{
    struct server *s = ud;
    *n = reload_sds_dyn_stats(s->reload, v);
}

static void admin_dyn_listeners(void *ud, const struct lds_view **v, uint32_t *n,
                                const struct lds_stats **lm)
{
    struct server *s = ud;
    reload_listener_views(s->reload, v, n, lm);
}

static struct config *load(const struct options *o, struct err *err)
{
    if (o->config_path != NULL && o->config_yaml != NULL) {
        return config_load_merged(o->config_path, o->config_yaml, strlen(o->config_yaml), err);
    }
    if (o->config_path != NULL) {
        return config_load_file(o->config_path, err);
    }
    return config_load_text(o->config_yaml, strlen(o->config_yaml), err);
}

/* Closes the first `n` of `fds` and frees the array (a startup failure's undo). */
static void close_fds(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        close(fds[i]);
    }
    free(fds);
}

static int serve(struct server *s)
{
    struct config *cfg = s->cfg;
    s->loop = ev_default_loop(EVFLAG_AUTO);
    s->n_workers = (uint32_t)s->opt.concurrency;

    /* Bind every socket first: a bind error stops us before anything runs. Worker 0's socket
     * binds the configured address; the others bind the address it got (getsockname), which is
     * the same but for port 0, where they take the port the kernel gave the first one. */
    int *fds = xcalloc((size_t)s->n_workers * (cfg->n_listeners + 1), sizeof(int));
    s->bound = xcalloc(cfg->n_listeners ? cfg->n_listeners : 1, sizeof(*s->bound));
    for (uint32_t w = 0; w < s->n_workers; w++) {
        for (uint32_t i = 0; i < cfg->n_listeners; i++) {
            const struct listener_cfg *l = &cfg->listeners[i];
            int fd = lds_bind(w == 0 ? &l->addr.ss : &s->bound[i], l->addr.len, l->ipv4_compat);
            if (fd >= 0 && w == 0) {
                socklen_t blen = sizeof(s->bound[i]);
                if (getsockname(fd, (struct sockaddr *)&s->bound[i], &blen) != 0) {
                    int e = errno;
                    close(fd);
                    fd = -e;
                }
            }
            if (fd < 0) {
                fprintf(stderr, "remora: listener '%.*s': cannot bind %.*s: %s\n",
                        STR_FMT(cfg->listeners[i].name), STR_FMT(cfg->listeners[i].addr.text),
                        strerror(-fd));
                close_fds(fds, w * cfg->n_listeners + i);
                return 1;
            }
            fds[w * cfg->n_listeners + i] = fd;
        }
    }
    size_t n_fds = (size_t)s->n_workers * cfg->n_listeners;
    /* The admin socket too, before anything that would need undoing: its handlers read
     * admin_ctx, which is filled in below, only once the loop runs. */
    if (cfg->has_admin) {
        struct err err;
        s->admin = admin_start(s->loop, &cfg->admin_addr, &s->admin_ctx, &err);
        if (s->admin == NULL ||
            (cfg->admin_access_log_path.len > 0 &&
             admin_open_access_log(s->admin, cfg->admin_access_log_path.p, &err) != 0)) {
            fprintf(stderr, "remora: %s\n", err.msg);
            admin_stop(s->admin);
            s->admin = NULL;
            close_fds(fds, n_fds);
            return 1;
        }
    }

    /* Access log sinks, chain by chain (config.chains). */
    for (uint32_t i = 0; i < cfg->n_chains; i++) {
        s->n_sinks += chain_n_access_logs(&cfg->chains[i]);
    }
    s->sinks = xcalloc(s->n_sinks ? s->n_sinks : 1, sizeof(*s->sinks));
    uint32_t k = 0;
    for (uint32_t i = 0; i < cfg->n_chains; i++) {
        const struct filter_chain_cfg *fc = &cfg->chains[i];
        const struct access_log_cfg *logs = chain_access_logs(fc);
        for (uint32_t j = 0; j < chain_n_access_logs(fc); j++) {
            struct err err;
            s->sinks[k] = access_log_sink_open(logs[j].path.p, &err);
            if (s->sinks[k] == NULL) {
                fprintf(stderr, "remora: %s\n", err.msg);
                for (uint32_t m = 0; m < k; m++) {
                    access_log_sink_close(s->sinks[m]);
                }
                free(s->sinks);
                admin_stop(s->admin);
                close_fds(fds, n_fds);
                return 1;
            }
            k++;
        }
    }

    ev_async_init(&s->worker_exit, on_worker_exit);
    s->worker_exit.data = s;
    ev_async_start(s->loop, &s->worker_exit);

    s->shared = cluster_shared_new(cfg);
    s->workers = xcalloc(s->n_workers, sizeof(*s->workers));
    s->blocks = xcalloc(s->n_workers, sizeof(*s->blocks));
    /* The CDS file loads before the workers exist, so a bad one stops startup cleanly; the
     * route tables compiled against its clusters reach the workers below. */
    s->reload = reload_new(s->loop, cfg, s->workers, s->n_workers);
    reload_set_drain_time(s->reload, (double)s->opt.drain_time_s);
    struct err rerr;
    err_clear(&rerr);
    if (reload_start(s->reload, &rerr) != 0) {
        fprintf(stderr, "remora: invalid configuration: %s\n", rerr.msg);
        reload_free(s->reload);
        cluster_shared_free(s->shared, cfg);
        free(s->workers);
        free(s->blocks);
        for (uint32_t i = 0; i < s->n_sinks; i++) {
            access_log_sink_close(s->sinks[i]);
        }
        free(s->sinks);
        admin_stop(s->admin);
        close_fds(fds, n_fds);
        return 1;
    }
    for (uint32_t w = 0; w < s->n_workers; w++) {
        s->workers[w] = worker_new(w, cfg, &fds[w * cfg->n_listeners], s->sinks, s->shared, s->loop,
                                   &s->worker_exit);
        if (s->workers[w] == NULL) {
            fprintf(stderr, "remora: cannot create worker %u\n", w);
            return 1;
        }
        s->blocks[w] = s->workers[w]->stats;
    }
    free(fds);
    reload_publish_all(s->reload);

    s->options_json = options_to_json(&s->opt);
    s->admin_ctx = (struct admin_ctx){
        .cfg = cfg,
        .blocks = s->blocks,
        .n_blocks = s->n_workers,
        .shared = s->shared,
        .rds = reload_rds_stats(s->reload),
        .sds = reload_sds_stats(s->reload),
        .listener_addrs = s->bound,
        .dump_dynamic = admin_dump_dynamic,
        .dyn_clusters = admin_dyn_clusters,
        .od = worker_od_reports_new(s->workers, s->n_workers),
        .dyn_listeners = admin_dyn_listeners,
        .dyn_secrets = admin_dyn_secrets,
        .start_time = ev_time(),
        .state = SERVER_PRE_INITIALIZING,
        .options_json = s->options_json,
        .quit = admin_quit,
        .drain_listeners = admin_drain_listeners,
        .healthcheck_changed = admin_healthcheck_changed,
        .ud = s,
    };
    if (cfg->ads != NULL) {
        /* The ADS client: its first responses (or initial_fetch_timeouts) are one more thing
         * startup waits for (Envoy's init manager), counted with the warming clusters. */
        s->ads = ads_new(s->loop, cfg, s->reload, on_cluster_warm, s);
        s->admin_ctx.ads = ads_get_stats(s->ads);
    }
    if (cfg->n_stats_sinks > 0) {
        struct err serr;
        s->flusher = stats_flusher_start(s->loop, cfg, &s->admin_ctx, &serr);
        if (s->flusher == NULL) {
            fprintf(stderr, "remora: %s\n", serr.msg);
            return 1;
        }
    }
    ev_signal_init(&s->sigterm, on_sigterm, SIGTERM);
    s->sigterm.data = s;
    ev_signal_start(s->loop, &s->sigterm);
    ev_signal_init(&s->sigint, on_sigint, SIGINT);
    s->sigint.data = s;
    ev_signal_start(s->loop, &s->sigint);
    ev_timer_init(&s->drain_deadline, on_drain_deadline, 0, 0);
    s->drain_deadline.data = s;
    ev_timer_init(&s->graceful_end, on_graceful_end, 0, 0);
    s->graceful_end.data = s;
    ev_timer_init(&s->trim, on_trim, TRIM_INTERVAL_S, TRIM_INTERVAL_S);
    ev_timer_start(s->loop, &s->trim);
    ev_unref(s->loop);
    signal(SIGPIPE, SIG_IGN);

    /* Health checking and outlier detection run on this loop. As in Envoy, serving waits for
     * every health-checked endpoint's first result (cluster warming): workers start then, and
     * until then connections wait in the listen backlog and /ready answers 503. */
    if (start_health(s) == 0 && ads_initializing(s->ads)) {
        s->admin_ctx.state = SERVER_INITIALIZING;
    }
    s->n_warming += ads_initializing(s->ads) ? 1 : 0;
    if (s->n_warming == 0 && !hold_for_dns(s) && !hold_for_cds_warming(s) &&
        start_workers(s) != 0) {
        return 1;
    }

    ev_run(s->loop, 0);

    stats_flusher_stop(s->flusher);
    admin_stop(s->admin);
    worker_od_reports_free(s->admin_ctx.od);
    ads_free(s->ads);
    reload_stop(s->reload);
    for (uint32_t w = 0; w < s->n_workers; w++) {
        worker_free(s->workers[w]);
    }
    reload_free(s->reload); /* after the workers: CDS clusters they held go here */
    stop_health(s);
    for (uint32_t i = 0; i < s->n_sinks; i++) {
        access_log_sink_close(s->sinks[i]);
    }
    free(s->sinks);
    cluster_shared_free(s->shared, cfg);
    free(s->workers);
    free(s->blocks);
    free(s->options_json);
    LOG_I("exiting");
    return 0;
}

int main(int argc, char **argv)
{
    /* A fixed mmap threshold: large body buffers are mmapped and go back to the system when
     * freed (glibc's sliding threshold would otherwise keep them in the heap after the first
     * one, and a slow reader's burst would stay resident). */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    struct server s;
    memset(&s, 0, sizeof(s));
    if (parse_args(argc, argv, &s.opt) != 0) {
        return 1;
    }
    struct err err;
    err_clear(&err);
    struct appmesh_env env = {0};
    if (s.opt.from_env) {
        if (appmesh_env_load((const char *const *)environ, &env, &err) != 0) {
            fprintf(stderr, "remora: invalid environment: %s\n", err.msg);
            return 1;
        }
        apply_env(&s.opt, &env);
    }
    log_set_level((enum log_level)log_level_parse(s.opt.log_level));
    if (s.opt.print_bootstrap) {
        char *text = appmesh_env_dump(&env);
        fputs(text, stdout);
        free(text);
    }

    s.cfg = s.opt.from_env ? appmesh_env_build(&env, &err) : load(&s.opt, &err);
    const char *name = s.opt.config_path ? s.opt.config_path
                       : s.opt.from_env  ? "--bootstrap-from-env"
                                         : "--config-yaml";
    if (s.cfg == NULL) {
        fprintf(stderr, "remora: invalid configuration: %s\n", err.msg);
        if (strcmp(s.opt.mode, "validate") == 0) {
            printf("error initializing configuration '%s': %s\n", name, err.msg);
        }
        appmesh_env_deinit(&env);
        return 1;
    }
    if (s.opt.service_node != NULL) {
        s.cfg->node_id = arena_strdup(&s.cfg->arena, str_from_c(s.opt.service_node));
    }
    if (s.opt.service_cluster != NULL) {
        s.cfg->node_cluster = arena_strdup(&s.cfg->arena, str_from_c(s.opt.service_cluster));
    }
    if (strcmp(s.opt.mode, "validate") == 0 || s.opt.print_bootstrap) {
        if (!s.opt.print_bootstrap) {
            printf("configuration '%s' OK\n", name);
        }
        config_unref(s.cfg);
        appmesh_env_deinit(&env);
        return 0;
    }
    int rc = serve(&s);
    free(s.bound);
    config_unref(s.cfg);
    appmesh_env_deinit(&env); /* after serve: s.opt borrows its strings */
    return rc;
}
