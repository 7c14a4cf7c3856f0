/* remora-certs: the mesh CA on the command line (certs/ca.h does the work).
 *
 *   remora-certs init-ca --dir DIR --trust-domain TD [--days N] [--force]
 *   remora-certs issue   --ca-dir DIR --spiffe-id ID --sds FILE [--lifetime D]
 *                        [--cert-name NAME] [--ca-name NAME]
 *   remora-certs rotate  (the options of issue) [--renew-at F]
 *
 * `issue` writes one identity as an SDS file (atomically, mode 0600: it holds the key), which a
 * proxy names in tls_certificate_sds_secret_configs / validation_context_sds_secret_config with
 * a path_config_source. `rotate` keeps that file fresh: it issues when the file is missing, not
 * from this CA, not for this ID, or past `--renew-at` of its lifetime (0.5: halfway, as SPIRE
 * does), then waits for the next renewal; SIGHUP renews at once, SIGTERM/SIGINT exit 0. A proxy
 * watching the file takes each new certificate for new handshakes. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "certs/ca.h"
#include "proxy/core/file.h"
#include "proxy/core/log.h"

#define SDS_FILE_MAX (256 * 1024)

struct opts {
    const char *dir, *td, *ca_dir, *id, *sds, *cert_name, *ca_name;
    unsigned days;
    uint64_t lifetime_s;
    double renew_at;
    bool force;
};

static void usage(FILE *f)
{
    fputs("usage:\n"
          "  remora-certs init-ca --dir DIR --trust-domain TD [--days N (365)] [--force]\n"
          "  remora-certs issue   --ca-dir DIR --spiffe-id spiffe://TD/PATH --sds FILE\n"
          "                       [--lifetime D (24h; s, m, h, d)] [--cert-name NAME (default)]\n"
          "                       [--ca-name NAME (ROOTCA)]\n"
          "  remora-certs rotate  (the options of issue) [--renew-at F (0.5 of the lifetime)]\n"
          "  common: -l LEVEL (info)\n",
          f);
}

/* "90s", "30m", "24h", "7d" or plain seconds. */
static int parse_duration(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || v == 0 || s[0] == '-') {
        return -1;
    }
    uint64_t mul = 1;
    if (*end != '\0') {
        if (end[1] != '\0') {
            return -1;
        }
        switch (*end) {
        case 's':
            mul = 1;
            break;
        case 'm':
            mul = 60;
            break;
        case 'h':
            mul = 3600;
            break;
        case 'd':
            mul = 86400;
            break;
        default:
            return -1;
        }
    }
    if (v > UINT64_MAX / mul) {
        return -1;
    }
    *out = v * mul;
    return 0;
}

static int cmd_init_ca(const struct opts *o)
{
    if (o->dir == NULL || o->td == NULL) {
        fputs("remora-certs init-ca: --dir and --trust-domain are required\n", stderr);
        return 2;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/ca.key", o->dir);
    struct stat st;
    if (!o->force && stat(path, &st) == 0) {
        fprintf(
            stderr,
            "remora-certs: %s exists; --force replaces the CA (every issued certificate then fails "
            "verification by peers that trust only the new one)\n",
            path);
        return 1;
    }
    if (mkdir(o->dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "remora-certs: %s: %s\n", o->dir, strerror(errno));
        return 1;
    }
    struct err err;
    err_clear(&err);
    struct mesh_ca *ca = mesh_ca_create(o->td, o->days, &err);
    if (ca == NULL || mesh_ca_save(ca, o->dir, &err) != 0) {
        fprintf(stderr, "remora-certs: %s\n", err.msg);
        mesh_ca_free(ca);
        return 1;
    }
    LOG_I("CA for trust domain %s written to %s/ca.pem and %s/ca.key", o->td, o->dir, o->dir);
    mesh_ca_free(ca);
    return 0;
}

/* Issues and writes the SDS file. Returns 0 and the new certificate's validity, or -1. */
static int issue(const struct opts *o, const struct mesh_ca *ca, time_t *nb, time_t *na)
{
    struct err err;
    err_clear(&err);
    struct svid s;
    if (mesh_ca_issue(ca, o->id, o->lifetime_s, time(NULL), &s, &err) != 0) {
        LOG_E("%s", err.msg);
        return -1;
    }
    char *text = sds_secret_json(&s, mesh_ca_cert_pem(ca), o->cert_name, o->ca_name, s.serial_hex);
    size_t len = strlen(text);
    int rc = file_write_atomic_mode(o->sds, text, len, 0600);
    memset(text, 0, len);
    free(text);
    if (rc != 0) {
        LOG_E("%s: %s", o->sds, strerror(-rc));
        svid_free(&s);
        return -1;
    }
    char until[32];
    struct tm tm;
    strftime(until, sizeof(until), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&s.not_after, &tm));
    LOG_I("issued %s (serial %s, valid until %s) into %s", o->id, s.serial_hex, until, o->sds);
    *nb = s.not_before;
    *na = s.not_after;
    svid_free(&s);
    return 0;
}

/* The certificate in an SDS file written by `issue`, if it is this CA's for this ID: its
 * validity. -1 when the file is missing or holds anything else. */
static int current(const struct opts *o, const struct mesh_ca *ca, time_t *nb, time_t *na)
{
    size_t len;
    char *text = file_read(o->sds, SDS_FILE_MAX, &len);
    if (text == NULL) {
        return -1;
    }
    json_t *doc = json_loadb(text, len, 0, NULL);
    memset(text, 0, len);
    free(text);
    int rc = -1;
    json_t *res = json_object_get(doc, "resources");
    for (size_t i = 0; i < json_array_size(res) && rc != 0; i++) {
        json_t *r = json_array_get(res, i);
        const char *name = json_string_value(json_object_get(r, "name"));
        const char *pem = json_string_value(json_object_get(
            json_object_get(json_object_get(r, "tls_certificate"), "certificate_chain"),
            "inline_string"));
        if (name != NULL && pem != NULL && strcmp(name, o->cert_name) == 0 &&
            mesh_ca_signed(ca, pem, o->id) && pem_cert_validity(pem, nb, na) == 0) {
            rc = 0;
        }
    }
    json_decref(doc);
    return rc;
}

static int cmd_issue(const struct opts *o, bool keep_rotating)
{
    if (o->ca_dir == NULL || o->id == NULL || o->sds == NULL) {
        fprintf(stderr, "remora-certs %s: --ca-dir, --spiffe-id and --sds are required\n",
                keep_rotating ? "rotate" : "issue");
        return 2;
    }
    struct err err;
    err_clear(&err);
    struct mesh_ca *ca = mesh_ca_load(o->ca_dir, &err);
    if (ca == NULL || spiffe_check_id(o->id, mesh_ca_trust_domain(ca), &err) != 0) {
        fprintf(stderr, "remora-certs: %s\n", err.msg);
        mesh_ca_free(ca);
        return 1;
    }
    time_t nb, na;
    if (!keep_rotating) {
        int rc = issue(o, ca, &nb, &na) == 0 ? 0 : 1;
        mesh_ca_free(ca);
        return rc;
    }
    /* rotate: signals are taken synchronously, so the wait below is the only place they land */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    bool renew_now = false;
    int failures = 0;
    for (;;) {
        time_t now = time(NULL);
        double wait_s;
        if (renew_now || current(o, ca, &nb, &na) != 0 ||
            now >= nb + 60 + (time_t)((double)(na - (nb + 60)) * o->renew_at)) {
            renew_now = false;
            if (issue(o, ca, &nb, &na) != 0) {
                /* keep the old file; try again soon, backing off to a minute */
                failures++;
                wait_s = failures < 6 ? (double)(1 << failures) : 60.0;
                goto wait;
            }
            failures = 0;
        }
        /* the renewal point of the certificate in force (issue time + renew_at of its life) */
        wait_s = (double)(nb + 60) + (double)(na - (nb + 60)) * o->renew_at - (double)time(NULL);
        if (wait_s < 0.1) {
            wait_s = 0.1;
        }
    wait:;
        struct timespec ts = {.tv_sec = (time_t)wait_s,
                              .tv_nsec = (long)((wait_s - (double)(time_t)wait_s) * 1e9)};
        siginfo_t si;
        int sig = sigtimedwait(&set, &si, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            LOG_I("signal %d: exiting", sig);
            break;
        }
        if (sig == SIGHUP) {
            LOG_I("SIGHUP: renewing now");
            renew_now = true;
        }
    }
    mesh_ca_free(ca);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *cmd = argv[1];
    struct opts o = {.days = 365,
                     .lifetime_s = 86400,
                     .renew_at = 0.5,
                     .cert_name = "default",
                     .ca_name = "ROOTCA"};
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},
        {"trust-domain", required_argument, NULL, 't'},
        {"days", required_argument, NULL, 'D'},
        {"force", no_argument, NULL, 'f'},
        {"ca-dir", required_argument, NULL, 'c'},
        {"spiffe-id", required_argument, NULL, 'i'},
        {"sds", required_argument, NULL, 's'},
        {"lifetime", required_argument, NULL, 'L'},
        {"cert-name", required_argument, NULL, 'n'},
        {"ca-name", required_argument, NULL, 'N'},
        {"renew-at", required_argument, NULL, 'r'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    optind = 2;
    int c;
    while ((c = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        char *end;
        switch (c) {
        case 'd':
            o.dir = optarg;
            break;
        case 't':
            o.td = optarg;
            break;
        case 'D': {
            unsigned long v = strtoul(optarg, &end, 10);
            if (*end != '\0' || v == 0 || v > 36500) {
                fprintf(stderr, "remora-certs: --days: 1 to 36500\n");
                return 2;
            }
            o.days = (unsigned)v;
            break;
        }
        case 'f':
            o.force = true;
            break;
        case 'c':
            o.ca_dir = optarg;
            break;
        case 'i':
            o.id = optarg;
            break;
        case 's':
            o.sds = optarg;
            break;
        case 'L':
            if (parse_duration(optarg, &o.lifetime_s) != 0) {
                fprintf(stderr,
                        "remora-certs: --lifetime: a number with s, m, h or d, such as 24h\n");
                return 2;
            }
            break;
        case 'n':
            o.cert_name = optarg;
            break;
        case 'N':
            o.ca_name = optarg;
            break;
        case 'r':
            o.renew_at = strtod(optarg, &end);
            if (*end != '\0' || !(o.renew_at > 0.0 && o.renew_at < 1.0)) {
                fprintf(
                    stderr,
                    "remora-certs: --renew-at: a fraction of the lifetime, above 0 and below 1\n");
                return 2;
            }
            break;
        case 'l': {
            int lvl = log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "remora-certs: unknown log level %s\n", optarg);
                return 2;
            }
            log_set_level((enum log_level)lvl);
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "remora-certs: unexpected argument %s\n", argv[optind]);
        return 2;
    }
    if (strcmp(cmd, "init-ca") == 0) {
        return cmd_init_ca(&o);
    }
    if (strcmp(cmd, "issue") == 0) {
        return cmd_issue(&o, false);
    }
    if (strcmp(cmd, "rotate") == 0) {
        return cmd_issue(&o, true);
    }
    fprintf(stderr, "remora-certs: unknown command %s\n", cmd);
    usage(stderr);
    return 2;
}
