/* remora-xds: the control plane: the App Mesh REST API (2019-01-25) over a SQLite store, and
 * xDS (ADS, state of the world, over gRPC) translated from it. One process, one libev loop:
 * the HTTP server (httpd.c) hands each request to the API (xds/appmesh/api.c), which reads and
 * writes the store (xds/appmesh/store.c) synchronously; after each successful write the ADS
 * server (ads.c) pushes what changed to its streams (snapshots from meshes.c, translate.c).
 *
 *   remora-xds --db PATH [--listen ADDR:PORT] [--port-file PATH] [--region R]
 *              [--account-id ID] [-l LEVEL] [--xds-listen ADDR:PORT] [--xds-port-file PATH]
 *              [--ca-dir DIR] [--cert-lifetime D] [--xds-tls] [--xds-tls-cert FILE
 *              --xds-tls-key FILE] [--xds-tls-name NAME]... [--xds-tls-client-ca FILE]
 *              [--xds-keepalive-time D] [--xds-keepalive-timeout D]
 *              [--xds-max-connection-age D] [--xds-max-connection-age-grace D]
 *              [--credentials-file FILE] [--xds-tls-authorize-nodes]
 *
 * With --credentials-file every API request (and /debug/xds) must carry a valid SigV4
 * signature by one of its keys (sigv4.c); without it the API does not authenticate and must
 * listen on loopback or a trusted network. With --xds-tls-authorize-nodes an xDS stream is
 * served only the node its client certificate names (ads.c). SIGTERM or SIGINT exit 0 after
 * closing the store. */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "certs/ca.h"
#include "proxy/core/err.h"
#include "proxy/core/file.h"
#include "proxy/core/log.h"
#include "xds/appmesh/api.h"
#include "xds/appmesh/store.h"
#include "xds/server/ads.h"
#include "xds/server/ads_tls.h"
#include "xds/server/httpd.h"
#include "xds/server/identity.h"
#include "xds/server/debug.h"
#include "xds/server/meshes.h"
#include "xds/server/sigv4.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: remora-xds --db PATH [--listen ADDR:PORT] [--port-file PATH]\n"
        "                  [--region REGION] [--account-id ID] [-l LEVEL]\n"
        "                  [--xds-listen ADDR:PORT] [--xds-port-file PATH]\n"
        "  --db PATH           SQLite file holding the resources (created if missing)\n"
        "  --listen ADDR:PORT  default 127.0.0.1:8080; port 0 picks a free port\n"
        "  --port-file PATH    write the bound port and \"\\n\" there once listening\n"
        "  --region REGION     for ARNs (default us-west-2)\n"
        "  --account-id ID     12 digits, for ARNs and meshOwner (default 111122223333)\n"
        "  -l, --log-level L   trace|debug|info|warning|error|critical|off (default info)\n"
        "  --idle-timeout-ms N, --request-timeout-ms N   connection timeouts (60000, 10000)\n"
        "  --xds-listen ADDR:PORT  serve xDS (ADS over gRPC, h2c) there; port 0 picks one\n"
        "  --xds-port-file PATH    write the xDS port and \"\\n\" there once listening\n"
        "  --ca-dir DIR        the mesh CA (remora-certs init-ca): sidecars get their SPIFFE\n"
        "                      identities and the CA over SDS, and App Mesh TLS is translated\n"
        "  --cert-lifetime D   of an issued identity, e.g. 24h, 90m, 3600s (default 24h);\n"
        "                      re-issued at half of it\n"
        "  --xds-tls           serve xDS over TLS (ALPN h2) instead of h2c; implied by the\n"
        "                      --xds-tls-* flags below\n"
        "  --xds-tls-cert FILE, --xds-tls-key FILE   its certificate chain and key (PEM);\n"
        "                      without them, with --ca-dir, one is issued by the mesh CA\n"
        "                      (renewed at half of --cert-lifetime)\n"
        "  --xds-tls-name NAME a DNS name or IP address of the issued certificate (repeat\n"
        "                      for more; default 127.0.0.1)\n"
        "  --xds-tls-client-ca FILE   mTLS: clients must present a certificate chaining to\n"
        "                      one of these PEM CAs\n"
        "  --xds-tls-authorize-nodes  mTLS with the mesh CA (--ca-dir; or --xds-tls-client-ca):\n"
        "                      a stream is served only the node its certificate's SPIFFE ID\n"
        "                      names, else PERMISSION_DENIED\n"
        "  --credentials-file FILE    require AWS SigV4 on the API by a key of FILE (the AWS\n"
        "                      shared-credentials INI format; mode 600)\n"
        "  --xds-keepalive-time D     PING each xDS connection this often, e.g. 30s, 500ms\n"
        "                      (default 60s; 0 turns keepalive off)\n"
        "  --xds-keepalive-timeout D  close a connection whose PING is not answered within\n"
        "                      this (default 20s)\n"
        "  --xds-max-connection-age D send a connection away (GOAWAY, its streams ended with\n"
        "                      UNAVAILABLE: clients reconnect) after D +-10%% (default 0: never;\n"
        "                      App Mesh's is 40m)\n"
        "  --xds-max-connection-age-grace D   then close it after D at the latest (10s)\n"
        "remora-xds does not authenticate requests: listen on loopback or a trusted "
        "network.\n");
}

static int parse_listen(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL) {
        return -EINVAL;
    }
    char host[64];
    size_t hl = (size_t)(colon - spec);
    if (hl >= 2 && spec[0] == '[' && spec[hl - 1] == ']') {
        spec++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        return -EINVAL;
    }
    memcpy(host, spec, hl);
    host[hl] = '\0';
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535) {
        return -EINVAL;
    }
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*v6);
    } else {
        return -EINVAL;
    }
    return 0;
}

static int write_port_file(const char *path, int port)
{
    char text[16];
    int n = snprintf(text, sizeof(text), "%d\n", port);
    return file_write_atomic(path, text, (size_t)n);
}

struct server {
    struct api *api;
    struct meshes *meshes; /* NULL without --xds-listen */
    struct ads *ads;
    struct identities *ids; /* --ca-dir, or NULL */
    struct sigv4 *auth;     /* --credentials-file, or NULL (no authentication) */
};

/* An identity was re-issued: the snapshots carry the old Secret; push the new one. */
static void ids_changed(void *arg)
{
    struct server *srv = arg;
    meshes_invalidate(srv->meshes);
    ads_push(srv->ads);
}

/* "24h", "90m", "3600s", "2d" or plain seconds: 120 s to 366 days. */
static bool parse_lifetime(const char *s, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || s[0] == '-') {
        return false;
    }
    uint64_t mul = 1;
    if (*end == 'm') {
        mul = 60;
    } else if (*end == 'h') {
        mul = 3600;
    } else if (*end == 'd') {
        mul = 86400;
    } else if (*end != 's' && *end != '\0') {
        return false;
    }
    if (*end != '\0' && end[1] != '\0') {
        return false;
    }
    if (v > 366ull * 86400 || v * mul < 120 || v * mul > 366ull * 86400) {
        return false;
    }
    *out = v * mul;
    return true;
}

static void handler(void *ctx, const struct api_request *rq, struct api_response *out)
{
    struct server *srv = ctx;
    struct sigv4_result ar;
    if (srv->auth != NULL && sigv4_verify(srv->auth, rq, time(NULL), &ar) != 0) {
        LOG_I("%s %.*s: %s: %s", rq->method, (int)(rq->path_len > 200 ? 200 : rq->path_len),
              rq->path, ar.type, ar.message);
        json_t *j = json_pack("{s:s}", "message", ar.message);
        out->status = ar.status;
        out->error_type = ar.type;
        out->allow = NULL;
        out->body = json_dumps(j, JSON_COMPACT);
        out->body_len = out->body != NULL ? strlen(out->body) : 0;
        json_decref(j);
        return;
    }
    if (debug_handle(srv->meshes, rq, out)) {
        return;
    }
    api_handle(srv->api, rq, out);
    /* A successful write may change what the xDS streams should hold. */
    if (srv->ads != NULL && strcmp(rq->method, "GET") != 0 && out->status >= 200 &&
        out->status < 300) {
        meshes_invalidate(srv->meshes);
        ads_push(srv->ads);
    }
}

static void dns_changed(void *arg)
{
    struct server *srv = arg;
    if (srv->ads != NULL) {
        ads_push(srv->ads);
    }
}

/* Binds and listens on `spec`; prints "<what> on ADDR:PORT". Returns the socket (and *port)
 * or -1 with a message on stderr. */
static int open_listener(const char *spec, const char *what, int *port, char *addr, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(spec, &ss, &sslen) != 0) {
        fprintf(stderr, "remora-xds: bad address %s (want ADDR:PORT)\n", spec);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, sslen) != 0 || listen(fd, SOMAXCONN) != 0) {
        fprintf(stderr, "remora-xds: listen %s: %s\n", spec, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    socklen_t l = sizeof(ss);
    getsockname(fd, (struct sockaddr *)&ss, &l);
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, addr, (socklen_t)cap);
        *port = ntohs(v6->sin6_port);
        printf("%s on [%s]:%d\n", what, addr, *port);
    } else {
        struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &v4->sin_addr, addr, (socklen_t)cap);
        *port = ntohs(v4->sin_port);
        printf("%s on %s:%d\n", what, addr, *port);
    }
    fflush(stdout);
    return fd;
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)revents;
    LOG_I("signal %d: exiting", w->signum);
    ev_break(loop, EVBREAK_ALL);
}

static bool all_digits(const char *s, size_t n)
{
    if (strlen(s) != n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
    }
    return true;
}

static bool valid_region(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-')) {
            return false;
        }
    }
    return true;
}

/* A duration flag: N followed by ms, s, m or h (a bare 0 too), at most 1 day; in ms. */
static bool parse_dur_ms(const char *s, double *out)
{
    char *end = NULL;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || s[0] == '-' || v > 86400000ull) {
        return false;
    }
    double mul;
    if (strcmp(end, "ms") == 0) {
        mul = 1;
    } else if (strcmp(end, "s") == 0) {
        mul = 1000;
    } else if (strcmp(end, "m") == 0) {
        mul = 60000;
    } else if (strcmp(end, "h") == 0) {
        mul = 3600000;
    } else if (*end == '\0' && v == 0) {
        mul = 0;
    } else {
        return false;
    }
    if ((double)v * mul > 86400000.0) {
        return false;
    }
    *out = (double)v * mul;
    return true;
}

static bool parse_ms(const char *s, double *out)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (end == s || *end != '\0' || v < 1 || v > 86400000) {
        return false;
    }
    *out = (double)v;
    return true;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'L'},
        {"port-file", required_argument, NULL, 'p'},
        {"db", required_argument, NULL, 'd'},
        {"region", required_argument, NULL, 'r'},
        {"account-id", required_argument, NULL, 'a'},
        {"log-level", required_argument, NULL, 'l'},
        {"idle-timeout-ms", required_argument, NULL, 'I'},
        {"request-timeout-ms", required_argument, NULL, 'R'},
        {"xds-listen", required_argument, NULL, 'X'},
        {"xds-port-file", required_argument, NULL, 'P'},
        {"ca-dir", required_argument, NULL, 'C'},
        {"cert-lifetime", required_argument, NULL, 'T'},
        {"xds-tls", no_argument, NULL, 'S'},
        {"xds-tls-cert", required_argument, NULL, 'E'},
        {"xds-tls-key", required_argument, NULL, 'K'},
        {"xds-tls-name", required_argument, NULL, 'N'},
        {"xds-tls-client-ca", required_argument, NULL, 'A'},
        {"xds-keepalive-time", required_argument, NULL, 'k'},
        {"xds-keepalive-timeout", required_argument, NULL, 'o'},
        {"xds-max-connection-age", required_argument, NULL, 'g'},
        {"xds-max-connection-age-grace", required_argument, NULL, 'G'},
        {"credentials-file", required_argument, NULL, 'F'},
        {"xds-tls-authorize-nodes", no_argument, NULL, 'Z'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen_spec = "127.0.0.1:8080", *port_file = NULL, *db = NULL;
    const char *region = "us-west-2", *account = "111122223333";
    const char *xds_listen = NULL, *xds_port_file = NULL, *ca_dir = NULL;
    uint64_t cert_lifetime = 24 * 3600;
    bool xds_tls = false, authorize_nodes = false;
    const char *credentials_file = NULL;
    char ca_pem[4096];
    const char *tls_names[ADS_TLS_MAX_NAMES];
    struct ads_tls_opts topts = {.names = tls_names};
    struct httpd_limits lim = {
        .head_max = 64 * 1024,
        .body_max = 1024 * 1024,
        .request_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_conns = 1024,
    };
    /* gRPC's option names; defaults: a dead client is noticed within about 80 s, for one
     * 17-byte PING a minute per connection; no age limit unless asked (App Mesh uses 40m) */
    double ka_time_ms = 60000, ka_timeout_ms = 20000, age_ms = 0, age_grace_ms = 10000;
    int o;
    while ((o = getopt_long(argc, argv, "l:h", opts, NULL)) != -1) {
        switch (o) {
        case 'L':
            listen_spec = optarg;
            break;
        case 'p':
            port_file = optarg;
            break;
        case 'd':
            db = optarg;
            break;
        case 'r':
            region = optarg;
            break;
        case 'a':
            account = optarg;
            break;
        case 'l': {
            int lvl = log_level_parse(optarg);
            if (lvl < 0) {
                fprintf(stderr, "remora-xds: unknown log level %s\n", optarg);
                return 2;
            }
            log_set_level((enum log_level)lvl);
            break;
        }
        case 'I':
        case 'R':
            if (!parse_ms(optarg, o == 'I' ? &lim.idle_timeout_ms : &lim.request_timeout_ms)) {
                fprintf(stderr, "remora-xds: --%s must be 1-86400000\n",
                        o == 'I' ? "idle-timeout-ms" : "request-timeout-ms");
                return 2;
            }
            break;
        case 'X':
            xds_listen = optarg;
            break;
        case 'P':
            xds_port_file = optarg;
            break;
        case 'C':
            ca_dir = optarg;
            break;
        case 'T':
            if (!parse_lifetime(optarg, &cert_lifetime)) {
                fprintf(stderr, "remora-xds: --cert-lifetime must be 120s to 366d (e.g. 24h)\n");
                return 2;
            }
            break;
        case 'S':
            xds_tls = true;
            break;
        case 'E':
            xds_tls = true;
            topts.cert_file = optarg;
            break;
        case 'K':
            xds_tls = true;
            topts.key_file = optarg;
            break;
        case 'A':
            xds_tls = true;
            topts.client_ca_file = optarg;
            break;
        case 'N': {
            xds_tls = true;
            struct err e;
            err_clear(&e);
            if (topts.n_names == ADS_TLS_MAX_NAMES) {
                fprintf(stderr, "remora-xds: at most %d --xds-tls-name\n", ADS_TLS_MAX_NAMES);
                return 2;
            }
            if (mesh_ca_check_host(optarg, &e) != 0) {
                fprintf(stderr, "remora-xds: --xds-tls-name: %s\n", e.msg);
                return 2;
            }
            tls_names[topts.n_names++] = optarg;
            break;
        }
        case 'k':
        case 'o':
        case 'g':
        case 'G': {
            double *dst = o == 'k'   ? &ka_time_ms
                          : o == 'o' ? &ka_timeout_ms
                          : o == 'g' ? &age_ms
                                     : &age_grace_ms;
            if (!parse_dur_ms(optarg, dst) || (o == 'o' && *dst == 0)) {
                fprintf(stderr,
                        "remora-xds: --%s: '%s' is not a duration up to 24h (e.g. 30s, "
                        "500ms, 40m%s)\n",
                        o == 'k'   ? "xds-keepalive-time"
                        : o == 'o' ? "xds-keepalive-timeout"
                        : o == 'g' ? "xds-max-connection-age"
                                   : "xds-max-connection-age-grace",
                        optarg, o == 'o' ? "; not 0" : "");
                return 2;
            }
            break;
        }
        case 'F':
            credentials_file = optarg;
            break;
        case 'Z':
            xds_tls = true;
            authorize_nodes = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc || db == NULL) {
        usage(stderr);
        return 2;
    }
    if (!valid_region(region)) {
        fprintf(stderr, "remora-xds: --region must be lower-case letters, digits and '-'\n");
        return 2;
    }
    if (!all_digits(account, 12)) {
        fprintf(stderr, "remora-xds: --account-id must be 12 digits\n");
        return 2;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(listen_spec, &ss, &sslen) != 0) {
        fprintf(stderr, "remora-xds: bad --listen %s (want ADDR:PORT)\n", listen_spec);
        return 2;
    }
    if (xds_listen != NULL && parse_listen(xds_listen, &ss, &sslen) != 0) {
        fprintf(stderr, "remora-xds: bad --xds-listen %s (want ADDR:PORT)\n", xds_listen);
        return 2;
    }
    if (xds_port_file != NULL && xds_listen == NULL) {
        fprintf(stderr, "remora-xds: --xds-port-file needs --xds-listen\n");
        return 2;
    }
    if (ca_dir != NULL && xds_listen == NULL) {
        fprintf(stderr, "remora-xds: --ca-dir needs --xds-listen\n");
        return 2;
    }
    if (xds_tls && xds_listen == NULL) {
        fprintf(stderr, "remora-xds: --xds-tls needs --xds-listen\n");
        return 2;
    }
    if ((topts.cert_file == NULL) != (topts.key_file == NULL)) {
        fprintf(stderr, "remora-xds: --xds-tls-cert and --xds-tls-key go together\n");
        return 2;
    }
    if (topts.cert_file != NULL && topts.n_names > 0) {
        fprintf(stderr, "remora-xds: --xds-tls-name is for a certificate remora-xds issues "
                        "(without --xds-tls-cert)\n");
        return 2;
    }
    if (authorize_nodes && ca_dir == NULL) {
        fprintf(stderr, "remora-xds: --xds-tls-authorize-nodes needs --ca-dir (the mesh CA whose "
                        "SPIFFE IDs name the nodes)\n");
        return 2;
    }
    if (xds_tls && topts.cert_file == NULL && ca_dir == NULL) {
        fprintf(stderr, "remora-xds: --xds-tls needs --xds-tls-cert and --xds-tls-key, or "
                        "--ca-dir to issue its own certificate\n");
        return 2;
    }
    if (authorize_nodes && topts.client_ca_file == NULL) {
        /* The mesh CA verifies the clients' chains unless another bundle is given. */
        snprintf(ca_pem, sizeof(ca_pem), "%s/ca.pem", ca_dir);
        topts.client_ca_file = ca_pem;
    }
    if (topts.n_names == 0) {
        tls_names[topts.n_names++] = "127.0.0.1";
    }
    signal(SIGPIPE, SIG_IGN);

    struct err err;
    err_clear(&err);
    struct mesh_ca *ca = NULL;
    if (ca_dir != NULL && (ca = mesh_ca_load(ca_dir, &err)) == NULL) {
        fprintf(stderr, "remora-xds: --ca-dir %s: %s\n", ca_dir, err.msg);
        return 1;
    }
    struct sigv4 *auth = NULL;
    if (credentials_file != NULL) {
        auth = sigv4_new(region, "appmesh");
        if (sigv4_load(auth, credentials_file, &err) != 0) {
            fprintf(stderr, "remora-xds: %s\n", err.msg);
            sigv4_free(auth);
            mesh_ca_free(ca);
            return 1;
        }
    }
    struct ev_loop *loop = ev_default_loop(0);
    struct ads_tls *tls = NULL;
    if (xds_tls) {
        topts.ca = ca;
        topts.lifetime_s = cert_lifetime;
        if ((tls = ads_tls_new(loop, &topts, &err)) == NULL) {
            fprintf(stderr, "remora-xds: %s\n", err.msg);
            sigv4_free(auth);
            mesh_ca_free(ca);
            return 1;
        }
    }
    struct store *store = NULL;
    if (store_open(&store, db, &err) < 0) {
        fprintf(stderr, "remora-xds: %s\n", err.msg);
        sigv4_free(auth);
        ads_tls_free(tls);
        mesh_ca_free(ca);
        return 1;
    }
    char addr[INET6_ADDRSTRLEN], xaddr[INET6_ADDRSTRLEN];
    int port = 0, xport = 0, xfd = -1;
    int fd = open_listener(listen_spec, "listening", &port, addr, sizeof(addr));
    if (fd >= 0 && xds_listen != NULL) {
        xfd = open_listener(xds_listen, "xds listening", &xport, xaddr, sizeof(xaddr));
        if (xfd < 0) {
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0) {
        sigv4_free(auth);
        store_free(store);
        ads_tls_free(tls);
        mesh_ca_free(ca);
        return 1;
    }

    struct server srv = {.api = api_new(store, region, account), .auth = auth};
    struct httpd *h = httpd_new(loop, fd, &lim, handler, &srv);
    if (xfd >= 0) {
        struct ads_limits al = {
            .max_conns = 1024,
            .max_streams = 16,
            .max_msg = 4 * 1024 * 1024,
            .max_names = 10000,
            .max_queued = 16 * 1024 * 1024,
            .max_queued_total = 256 * 1024 * 1024,
            .max_held_total = 64 * 1024 * 1024,
            .idle_timeout_ms = lim.idle_timeout_ms,
            .handshake_timeout_ms = lim.request_timeout_ms,
            .keepalive_time_ms = ka_time_ms,
            .keepalive_timeout_ms = ka_timeout_ms,
            .max_age_ms = age_ms,
            .max_age_grace_ms = age_grace_ms,
        };
        srv.meshes = meshes_new(loop, store, 30000, dns_changed, &srv);
        srv.ads = ads_new(loop, xfd, &al, srv.meshes, tls != NULL ? ads_tls_ctx(tls) : NULL);
        if (authorize_nodes) {
            ads_authorize_nodes(srv.ads, mesh_ca_trust_domain(ca));
            LOG_I("remora-xds: xDS node authorization: a stream gets only the node its client "
                  "certificate names (spiffe://%s/mesh/<m>/virtualNode/<vn>)",
                  mesh_ca_trust_domain(ca));
        }
        if (ca != NULL) {
            srv.ids = identities_new(loop, ca, cert_lifetime, ids_changed, &srv);
            meshes_set_identities(srv.meshes, srv.ids);
            LOG_I("remora-xds: mesh CA of trust domain %s: sidecars get identities over SDS "
                  "(lifetime %llus)",
                  mesh_ca_trust_domain(ca), (unsigned long long)cert_lifetime);
            if (tls == NULL) {
                LOG_W("remora-xds: the xDS port serves plaintext (h2c): the sidecars' identities, "
                      "private keys included, travel unencrypted; keep it on loopback or a "
                      "trusted network, or use --xds-tls");
            }
        } else {
            LOG_I("remora-xds: no --ca-dir: App Mesh TLS from SDS is not translated (STRICT "
                  "listeners are left out, client policy tls over SDS stays plaintext)");
        }
    }
    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, signal_cb, SIGTERM);
    ev_signal_init(&sigint, signal_cb, SIGINT);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigint);
    int rc = 0;
    if (port_file != NULL) {
        int e = write_port_file(port_file, port);
        if (e < 0) {
            fprintf(stderr, "remora-xds: %s: %s\n", port_file, strerror(-e));
            rc = 1;
        }
    }
    if (rc == 0 && xds_port_file != NULL) {
        int e = write_port_file(xds_port_file, xport);
        if (e < 0) {
            fprintf(stderr, "remora-xds: %s: %s\n", xds_port_file, strerror(-e));
            rc = 1;
        }
    }
    if (rc == 0) {
        LOG_I("remora-xds: App Mesh API on %s:%d, store %s (region %s, account %s)", addr, port, db,
              region, account);
        if (auth != NULL) {
            LOG_I("remora-xds: the API requires SigV4 (service appmesh, region %s) by one of %zu "
                  "key(s) from %s",
                  region, sigv4_n_keys(auth), credentials_file);
        } else {
            LOG_W("remora-xds: no --credentials-file: the App Mesh API (and /debug/xds) answers "
                  "anyone who reaches %s:%d, without authentication",
                  addr, port);
        }
        if (xfd >= 0 && tls != NULL) {
            LOG_I("remora-xds: xDS (ADS) over TLS on %s:%d, %s", xaddr, xport,
                  ads_tls_describe(tls));
        } else if (xfd >= 0) {
            LOG_I("remora-xds: xDS (ADS) over h2c (plaintext) on %s:%d", xaddr, xport);
        }
        ev_run(loop, 0);
    }
    ads_free(srv.ads);
    ads_tls_free(tls); /* before the identities: it borrows their CA */
    meshes_free(srv.meshes);
    identities_free(srv.ids);
    httpd_free(h);
    api_free(srv.api);
    sigv4_free(auth);
    store_free(store);
    ev_loop_destroy(loop);
    return rc;
}
