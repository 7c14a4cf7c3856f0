/* appmesh_env: App Mesh's Envoy image environment -> an Envoy v3 bootstrap (a jansson tree),
 * for `remora --bootstrap-from-env` (see appmesh_env.h). Startup only: nothing here is on the
 * data path. The generated tree is built through build.c like any bootstrap text, so it meets
 * the same validation; this file checks each variable first, so that a bad value is reported
 * under its own name rather than as a field path of a bootstrap the user never wrote. */
#include "proxy/config/appmesh_env.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/file.h"
#include "proxy/core/log.h"
#include "proxy/core/str.h"
#include "proxy/core/xmalloc.h"

#define RESOURCES_FILE_MAX (64u * 1024 * 1024)
#define XDS_CLUSTER "xds_cluster"
#define HPO "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#define XDS_KEEPALIVE_INTERVAL "10s" /* App Mesh's xDS keepalive (appmesh-and-envoy.md, [S6]) */
#define XDS_KEEPALIVE_TIMEOUT "20s"
#define TYPE_PREFIX "type.googleapis.com/"
#define TLS_UP TYPE_PREFIX "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
#define FILE_LOG TYPE_PREFIX "envoy.extensions.access_loggers.file.v3.FileAccessLog"
/* remora-xds's own identity (xds/README.md, "TLS on the xDS port"): its certificate from the
 * mesh CA carries spiffe://<trust domain>/remora-xds. The CA bundle fixes the trust domain. */
#define XDS_SPIFFE_RE "spiffe://[^/]+/remora-xds"

/* Accepted values of a variable remora does not implement (see `unsupported[]`). */
enum accept {
    ACCEPT_NONE,  /* any value is refused */
    ACCEPT_FALSE, /* a false boolean (the image's default) is accepted */
    ACCEPT_TRUE,  /* a true boolean (the image's default) is accepted */
    ACCEPT_ZERO,  /* "0" (the image's default) is accepted */
    ACCEPT_TCP,   /* "tcp" (the image's default) is accepted */
};

/* The image's variables remora does not implement. Set to a value other than the accepted one,
 * startup fails naming the variable and saying why. */
static const struct {
    const char *name;
    enum accept accept;
    const char *why;
} unsupported[] = {
    {"APPMESH_SIGNING_NAME", ACCEPT_NONE,
     "SigV4 signing of the xDS stream is App Mesh's; remora-xds authenticates with TLS "
     "(REMORA_XDS_CA_FILE, REMORA_XDS_CERT_FILE)"},
    {"APPMESH_PREVIEW", ACCEPT_FALSE, "selects App Mesh's preview endpoint"},
    {"APPMESH_DUALSTACK_ENDPOINT", ACCEPT_FALSE, "selects App Mesh's dual-stack endpoint"},
    {"APPMESH_FIPS_ENDPOINT", ACCEPT_FALSE, "selects App Mesh's FIPS endpoint"},
    {"APPMESH_SDS_SOCKET_PATH", ACCEPT_NONE,
     "SDS over a local Unix socket (SPIRE) is not supported; remora-xds --ca-dir delivers "
     "identities over ADS"},
    {"APPMESH_METRIC_EXTENSION_VERSION", ACCEPT_ZERO, "App Mesh's metric extension"},
    {"APPMESH_SET_TRACING_DECISION", ACCEPT_TRUE,
     "false asks the proxy to rewrite tracing decisions in x-request-id, which remora never "
     "does"},
    {"APPMESH_SLEEP_DURATION", ACCEPT_NONE, "a sleep before start"},
    {"ENVOY_ADMIN_MODE", ACCEPT_TCP, "the admin interface on a Unix socket (uds)"},
    {"ENABLE_ENVOY_DATADOG_TRACING", ACCEPT_FALSE, "tracing (Datadog)"},
    {"DATADOG_TRACER_PORT", ACCEPT_NONE, "tracing (Datadog)"},
    {"DATADOG_TRACER_ADDRESS", ACCEPT_NONE, "tracing (Datadog)"},
    {"DD_SERVICE", ACCEPT_NONE, "tracing (Datadog)"},
    {"ENVOY_TRACING_CFG_FILE", ACCEPT_NONE,
     "a tracing config file (ENABLE_ENVOY_XRAY_TRACING and ENABLE_ENVOY_JAEGER_TRACING are "
     "supported)"},
    {"ENVOY_NO_EXTENSION_LOOKUP_BY_NAME", ACCEPT_NONE, "an Envoy runtime flag"},
    {"ENVOY_ENABLE_TCP_POOL_IDLE_TIMEOUT", ACCEPT_NONE, "an Envoy runtime flag"},
    {"ENVOY_SANITIZE_ORIGINAL_PATH", ACCEPT_NONE, "an Envoy runtime flag"},
    {"MAX_REQUESTS_PER_IO_CYCLE", ACCEPT_NONE, "an Envoy runtime flag"},
    {"ENVOY_OUTLIER_DETECTION_EVENT_LOG_PATH", ACCEPT_NONE, "the outlier detection event log"},
    {"APPNET_ENVOY_RESTART_COUNT", ACCEPT_ZERO,
     "restarts by the image's agent; remora has no agent (the orchestrator restarts the "
     "container)"},
    {"PID_POLL_INTERVAL_MS", ACCEPT_NONE, "the image's agent supervision"},
    {"HC_POLL_INTERVAL_MS", ACCEPT_NONE, "the image's agent supervision"},
    {"HC_DISCONNECTED_TIMEOUT_S", ACCEPT_NONE, "the image's agent supervision"},
    {"APPNET_AGENT_ADMIN_MODE", ACCEPT_NONE,
     "the image's agent management interface (remora's admin serves /ready, "
     "/stats/prometheus, /drain_listeners)"},
    {"APPNET_AGENT_HTTP_PORT", ACCEPT_NONE, "the image's agent management interface"},
    {"APPNET_AGENT_HTTP_BIND_ADDRESS", ACCEPT_NONE, "the image's agent management interface"},
    {"APPNET_AGENT_ADMIN_UDS_PATH", ACCEPT_NONE, "the image's agent management interface"},
};

/* The variables that shape the generated bootstrap: with ENVOY_CONFIG_FILE they are unused. */
static const char *const bootstrap_vars[] = {
    "APPMESH_RESOURCE_ARN",
    "APPMESH_RESOURCE_NAME",
    "APPMESH_VIRTUAL_NODE_NAME",
    "APPMESH_RESOURCE_CLUSTER",
    "APPMESH_VIRTUAL_NODE_CLUSTER",
    "APPMESH_XDS_ENDPOINT",
    "ENVOY_ADMIN_ACCESS_PORT",
    "ENVOY_ADMIN_ACCESS_LOG_FILE",
    "ENVOY_ADMIN_ACCESS_ENABLE_IPV6",
    "ENVOY_INITIAL_FETCH_TIMEOUT",
    "REMORA_XDS_CA_FILE",
    "REMORA_XDS_CERT_FILE",
    "REMORA_XDS_KEY_FILE",
    "REMORA_XDS_SNI",
    "REMORA_XDS_SAN",
    /* stats (stats_env) */
    "ENABLE_ENVOY_STATS_TAGS",
    "ENABLE_ENVOY_DOG_STATSD",
    "STATSD_ADDRESS",
    "STATSD_PORT",
    "STATSD_SOCKET_PATH",
    "ENVOY_STATS_FLUSH_INTERVAL",
    "ENVOY_STATS_SINKS_CFG_FILE",
    "ENVOY_STATS_CONFIG_FILE",
    /* tracing (tracing_env) */
    "ENABLE_ENVOY_XRAY_TRACING",
    "XRAY_DAEMON_PORT",
    "AWS_XRAY_DAEMON_ADDRESS",
    "XRAY_SAMPLING_RATE",
    "XRAY_SAMPLING_RULE_MANIFEST",
    "XRAY_SEGMENT_NAME",
    "ENABLE_ENVOY_JAEGER_TRACING",
    "JAEGER_TRACER_ADDRESS",
    "JAEGER_TRACER_PORT",
    "JAEGER_TRACER_VERSION",
};

struct env {
    const char *const *envp;
    struct arena *a;
    struct err *err;
};

/* The trimmed value of `name` (NUL-terminated, in the arena), or NULL when unset or blank. */
static const char *get(const struct env *e, const char *name)
{
    size_t nlen = strlen(name);
    for (const char *const *p = e->envp; p != NULL && *p != NULL; p++) {
        if (strncmp(*p, name, nlen) == 0 && (*p)[nlen] == '=') {
            struct str v = str_from_c(*p + nlen + 1);
            while (v.len > 0 && isspace((unsigned char)v.p[v.len - 1])) {
                v.len--;
            }
            while (v.len > 0 && isspace((unsigned char)v.p[0])) {
                v.p++;
                v.len--;
            }
            return v.len > 0 ? arena_strdup(e->a, v).p : NULL;
        }
    }
    return NULL;
}

/* Go's strconv.ParseBool, which the image's agent uses: 1 if true, 0 if false, -1 if neither. */
static int parse_bool(const char *v)
{
    static const char *const t[] = {"1", "t", "T", "TRUE", "true", "True"};
    static const char *const f[] = {"0", "f", "F", "FALSE", "false", "False"};
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(v, t[i]) == 0) {
            return 1;
        }
        if (strcmp(v, f[i]) == 0) {
            return 0;
        }
    }
    return -1;
}

/* A decimal integer in [lo, hi] into *out (left alone when unset), or -EINVAL naming `name`. */
static int get_long(const struct env *e, const char *name, long lo, long hi, long *out)
{
    const char *v = get(e, name);
    if (v == NULL) {
        return 0;
    }
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno != 0 || *end != '\0' || end == v || n < lo || n > hi) {
        return err_set(e->err, name, "'%s' is not an integer in %ld..%ld", v, lo, hi);
    }
    *out = n;
    return 0;
}

static int check_unsupported(const struct env *e)
{
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        const char *v = get(e, unsupported[i].name);
        if (v == NULL) {
            continue;
        }
        bool ok = false;
        const char *accepted = NULL;
        switch (unsupported[i].accept) {
        case ACCEPT_NONE:
            break;
        case ACCEPT_FALSE:
            ok = parse_bool(v) == 0;
            accepted = "false or 0";
            break;
        case ACCEPT_TRUE:
            ok = parse_bool(v) == 1;
            accepted = "true or 1";
            break;
        case ACCEPT_ZERO:
            ok = strcmp(v, "0") == 0;
            accepted = "0";
            break;
        case ACCEPT_TCP:
            ok = strcmp(v, "tcp") == 0;
            accepted = "tcp";
            break;
        }
        if (!ok) {
            return err_set(e->err, unsupported[i].name, "'%s' is not supported by remora: %s; %s%s",
                           v, unsupported[i].why, accepted ? "only this is accepted: " : "unset it",
                           accepted ? accepted : "");
        }
    }
    return 0;
}

/* An App Mesh name (mesh, virtual node or gateway): 1-255 characters, no '/', no blanks. */
static bool valid_name(const char *p, size_t len)
{
    if (len == 0 || len > 255) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch <= ' ' || ch == 0x7f || ch == '/' || ch == '"' || ch == '\\') {
            return false;
        }
    }
    return true;
}

/* The node id: `arn:<partition>:appmesh:<region>:<account>:mesh/<m>/<kind>/<name>` or
 * `mesh/<m>/<kind>/<name>`, kind virtualNode or virtualGateway (what remora-xds serves).
 * Sets *mesh to the mesh's name (in the arena). Returns 0 or -EINVAL naming `var`. */
static int parse_node_id(const struct env *e, const char *var, const char *id, const char **mesh)
{
    const char *p = id;
    if (strncmp(id, "arn:", 4) == 0) {
        const char *f[6];
        size_t flen[6];
        const char *q = id;
        for (int i = 0; i < 5; i++) {
            const char *c = strchr(q, ':');
            if (c == NULL) {
                return err_set(
                    e->err, var,
                    "'%s' is not an App Mesh ARN "
                    "(arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>)",
                    id);
            }
            f[i] = q;
            flen[i] = (size_t)(c - q);
            q = c + 1;
        }
        f[5] = q;
        flen[5] = strlen(q);
        if (flen[1] == 0 || flen[2] != 7 || strncmp(f[2], "appmesh", 7) != 0) {
            return err_set(e->err, var, "'%s' is not an App Mesh ARN (arn:aws:appmesh:...)", id);
        }
        if (flen[3] == 0) {
            return err_set(e->err, var, "'%s': the ARN has no region", id);
        }
        bool digits = flen[4] == 12;
        for (size_t i = 0; digits && i < 12; i++) {
            digits = isdigit((unsigned char)f[4][i]) != 0;
        }
        if (!digits) {
            return err_set(e->err, var, "'%s': the ARN's account is not 12 digits", id);
        }
        p = f[5];
    }
    if (strncmp(p, "mesh/", 5) != 0) {
        return err_set(e->err, var,
                       "'%s' does not name a virtual node or gateway "
                       "(mesh/<mesh>/virtualNode/<name>, or its ARN)",
                       id);
    }
    p += 5;
    const char *slash = strchr(p, '/');
    if (slash == NULL || !valid_name(p, (size_t)(slash - p))) {
        return err_set(e->err, var, "'%s': no valid mesh name after mesh/", id);
    }
    const char *name;
    if (strncmp(slash, "/virtualNode/", 13) == 0) {
        name = slash + 13;
    } else if (strncmp(slash, "/virtualGateway/", 16) == 0) {
        name = slash + 16;
    } else {
        return err_set(e->err, var,
                       "'%s' must name a virtualNode or a virtualGateway (the resources a "
                       "proxy runs as)",
                       id);
    }
    if (!valid_name(name, strlen(name))) {
        return err_set(e->err, var, "'%s': no valid virtual node or gateway name", id);
    }
    *mesh = arena_strdup(e->a, (struct str){p, (size_t)(slash - p)}).p;
    return 0;
}

/* A DNS name: labels of letters, digits, '-' and '_', separated by dots, at most 253 bytes. */
static bool valid_hostname(const char *h)
{
    size_t len = strlen(h), label = 0;
    if (len == 0 || len > 253) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (ch == '.') {
            if (label == 0) {
                return false;
            }
            label = 0;
        } else if (isalnum((unsigned char)ch) || ch == '-' || ch == '_') {
            if (++label > 63) {
                return false;
            }
        } else {
            return false;
        }
    }
    return true;
}

/* APPMESH_XDS_ENDPOINT: host:port, [v6]:port. Sets *host (in the arena), *port and *is_ip. */
static int parse_endpoint(const struct env *e, const char *v, const char **host, long *port,
                          bool *is_ip)
{
    const char *var = "APPMESH_XDS_ENDPOINT";
    if (strncmp(v, "unix://", 7) == 0) {
        return err_set(e->err, var,
                       "'%s': a Unix socket (the image's relay mode) is not supported by remora; "
                       "give remora-xds's host:port",
                       v);
    }
    if (strstr(v, "://") != NULL) {
        return err_set(e->err, var, "'%s' is not host:port (no scheme: TLS is REMORA_XDS_CA_FILE)",
                       v);
    }
    const char *colon;
    struct str h;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        if (close == NULL || close[1] != ':') {
            return err_set(e->err, var, "'%s' is not [IPv6]:port", v);
        }
        h = (struct str){v + 1, (size_t)(close - v - 1)};
        colon = close + 1;
    } else {
        colon = strrchr(v, ':');
        if (colon == NULL || memchr(v, ':', (size_t)(colon - v)) != NULL) {
            return err_set(e->err, var, "'%s' is not host:port (an IPv6 address goes in brackets)",
                           v);
        }
        h = (struct str){v, (size_t)(colon - v)};
    }
    char *end;
    errno = 0;
    long n = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno != 0 || n < 1 || n > 65535 ||
        !isdigit((unsigned char)colon[1])) {
        return err_set(e->err, var, "'%s': the port is not in 1..65535", v);
    }
    *host = arena_strdup(e->a, h).p;
    unsigned char buf[16];
    bool v6 = inet_pton(AF_INET6, *host, buf) == 1;
    *is_ip = v6 || inet_pton(AF_INET, *host, buf) == 1;
    if (v[0] == '[' && !v6) {
        return err_set(e->err, var, "'%s': '%s' is not an IPv6 address", v, *host);
    }
    if (!*is_ip && !valid_hostname(*host)) {
        return err_set(e->err, var, "'%s': '%s' is not a host name or IP address", v, *host);
    }
    *port = n;
    return 0;
}

/* A file the proxy will read at build time: check now, so the error names the variable. */
static int readable(const struct env *e, const char *var, const char *path)
{
    if (access(path, R_OK) != 0) {
        return err_set(e->err, var, "cannot read '%s': %s", path, strerror(errno));
    }
    return 0;
}

/* The UpstreamTlsContext of the xDS cluster from REMORA_XDS_*, or NULL (plaintext) when none
 * is set. Returns 0 and *out (a new reference or NULL), or -EINVAL. */
static int xds_tls(const struct env *e, const char *host, bool is_ip, json_t **out)
{
    const char *ca = get(e, "REMORA_XDS_CA_FILE");
    const char *cert = get(e, "REMORA_XDS_CERT_FILE");
    const char *key = get(e, "REMORA_XDS_KEY_FILE");
    const char *sni = get(e, "REMORA_XDS_SNI");
    const char *san = get(e, "REMORA_XDS_SAN");
    *out = NULL;
    if (ca == NULL) {
        const char *other = cert  ? "REMORA_XDS_CERT_FILE"
                            : key ? "REMORA_XDS_KEY_FILE"
                            : sni ? "REMORA_XDS_SNI"
                            : san ? "REMORA_XDS_SAN"
                                  : NULL;
        if (other != NULL) {
            return err_set(e->err, other,
                           "needs REMORA_XDS_CA_FILE (TLS to the xDS endpoint verifies the "
                           "server against that CA bundle)");
        }
        return 0;
    }
    if ((cert == NULL) != (key == NULL)) {
        return err_set(e->err, cert ? "REMORA_XDS_KEY_FILE" : "REMORA_XDS_CERT_FILE",
                       "required with %s (a client certificate and its key go together)",
                       cert ? "REMORA_XDS_CERT_FILE" : "REMORA_XDS_KEY_FILE");
    }
    if (readable(e, "REMORA_XDS_CA_FILE", ca) != 0 ||
        (cert != NULL && (readable(e, "REMORA_XDS_CERT_FILE", cert) != 0 ||
                          readable(e, "REMORA_XDS_KEY_FILE", key) != 0))) {
        return -EINVAL;
    }
    if (sni != NULL && !valid_hostname(sni)) {
        return err_set(e->err, "REMORA_XDS_SNI", "'%s' is not a host name", sni);
    }
    json_t *san_m;
    if (san == NULL) {
        san_m = json_pack("{s:s, s:{s:{s:s}}}", "san_type", "URI", "matcher", "safe_regex", "regex",
                          XDS_SPIFFE_RE);
    } else {
        unsigned char buf[16];
        const char *type = strstr(san, "://") != NULL ? "URI"
                           : inet_pton(AF_INET, san, buf) == 1 || inet_pton(AF_INET6, san, buf) == 1
                               ? "IP_ADDRESS"
                           : valid_hostname(san) ? "DNS"
                                                 : NULL;
        if (type == NULL) {
            return err_set(e->err, "REMORA_XDS_SAN",
                           "'%s' is not a URI (spiffe://...), IP address or DNS name", san);
        }
        san_m = json_pack("{s:s, s:{s:s}}", "san_type", type, "matcher", "exact", san);
    }
    json_t *vc = json_pack("{s:{s:s}, s:[o]}", "trusted_ca", "filename", ca,
                           "match_typed_subject_alt_names", san_m);
    json_t *common = json_pack("{s:o}", "validation_context", vc);
    if (cert != NULL) {
        json_object_set_new(common, "tls_certificates",
                            json_pack("[{s:{s:s}, s:{s:s}}]", "certificate_chain", "filename", cert,
                                      "private_key", "filename", key));
    }
    json_t *tls = json_pack("{s:s, s:o}", "@type", TLS_UP, "common_tls_context", common);
    if (sni != NULL || !is_ip) {
        /* As a gRPC client would: the endpoint's host name is the SNI unless told otherwise. */
        json_object_set_new(tls, "sni", json_string(sni != NULL ? sni : host));
    }
    *out = json_pack("{s:s, s:o}", "name", "envoy.transport_sockets.tls", "typed_config", tls);
    return 0;
}

/* node.metadata: what remora-xds reads ("mesh": the mesh of the node's id, which it uses for a
 * node that is not a sidecar or gateway id) and the platform facts the image's agent reports
 * from the environment under "aws.appmesh.platformInfo" (not those it fetches from the ECS
 * task metadata endpoint or IMDS). */
static json_t *node_metadata(const struct env *e, const char *mesh)
{
    json_t *md = json_pack("{s:s}", "mesh", mesh);
    json_t *pi = json_object();
    const char *k8s = get(e, "APPMESH_PLATFORM_K8S_VERSION");
    const char *pod = get(e, "APPMESH_PLATFORM_K8S_POD_UID");
    const char *ctl = get(e, "APPMESH_PLATFORM_APP_MESH_CONTROLLER_VERSION");
    if (k8s != NULL && pod != NULL && ctl != NULL) {
        json_object_set_new(pi, "k8sPlatformInfo",
                            json_pack("{s:s, s:s, s:s}", "k8sVersion", k8s, "podUid", pod,
                                      "appMeshControllerVersion", ctl));
    }
    const char *launch = get(e, "AWS_EXECUTION_ENV");
    if (launch != NULL) {
        json_t *ecs = json_pack("{s:s}", "ecsLaunchType", launch);
        const char *ci = get(e, "ECS_CONTAINER_INSTANCE_ARN");
        if (ci != NULL) {
            json_object_set_new(ecs, "ecsContainerInstanceArn", json_string(ci));
        }
        json_object_set_new(pi, "ecsPlatformInfo", ecs);
    }
    if (json_object_size(pi) > 0) {
        json_object_set_new(md, "aws.appmesh.platformInfo", pi);
    } else {
        json_decref(pi);
    }
    return md;
}

/* lowerCamelCase -> snake_case, for the top-level keys of a resources file. */
static const char *snake(const struct env *e, const char *k)
{
    char buf[128];
    size_t n = 0;
    for (const char *p = k; *p != '\0' && n + 2 < sizeof(buf); p++) {
        if (isupper((unsigned char)*p)) {
            buf[n++] = '_';
            buf[n++] = (char)tolower((unsigned char)*p);
        } else {
            buf[n++] = *p;
        }
    }
    return arena_strdup(e->a, (struct str){buf, n}).p;
}

/* The JSON or YAML file at `path`, named by variable `var` in errors; NULL with e->err set when it
 * cannot be read or parsed. */
static json_t *load_file(const struct env *e, const char *var, const char *path)
{
    size_t len;
    char *text = file_read(path, RESOURCES_FILE_MAX, &len);
    if (text == NULL) {
        err_set(e->err, var, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct err perr;
    err_clear(&perr);
    json_t *j = pbjson_load_text(text, len, &perr);
    free(text);
    if (j == NULL) {
        err_set(e->err, var, "'%s': %s", path, perr.msg);
    }
    return j;
}

/* ENVOY_RESOURCES_CONFIG_FILE, merged into `boot` as the image's agent does: static_resources'
 * listeners and clusters are appended; any other top-level field replaces the generated one
 * (logged when remora builds). The file must be a valid bootstrap on its own (checked here,
 * with its field paths). Returns 0 or -EINVAL. */
static int merge_resources(const struct env *e, const char *path, json_t *boot,
                           const char **replaced)
{
    const char *var = "ENVOY_RESOURCES_CONFIG_FILE";
    json_t *j = load_file(e, var, path);
    if (j == NULL) {
        return -EINVAL;
    }
    struct err perr;
    err_clear(&perr);
    ProtobufCMessage *m = NULL;
    if (!json_is_object(j)) {
        err_set(&perr, NULL, "not a bootstrap object");
    } else {
        m = pbjson_decode(&envoy__config__bootstrap__v3__bootstrap__descriptor, j, pbtypes_find, "",
                          &perr);
    }
    if (m == NULL) {
        json_decref(j);
        return err_set(e->err, var, "'%s': %s", path, perr.msg);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        const char *sk = snake(e, k);
        if (strcmp(sk, "static_resources") == 0) {
            json_t *dst = json_object_get(boot, "static_resources");
            if (dst == NULL) {
                dst = json_object();
                json_object_set_new(boot, "static_resources", dst);
            }
            const char *rk;
            json_t *rv;
            json_object_foreach(v, rk, rv)
            {
                json_t *arr = json_object_get(dst, rk);
                if (arr == NULL) {
                    json_object_set(dst, rk, rv);
                } else {
                    json_array_extend(arr, rv);
                }
            }
            continue;
        }
        if (json_object_get(boot, sk) != NULL) {
            *replaced = *replaced == NULL ? sk : arena_printf(e->a, "%s %s", *replaced, sk).p;
        }
        json_object_set(boot, sk, v);
    }
    json_decref(j);
    return 0;
}

/* ---- stats: DogStatsD, stats tags, the flush interval and the stats files ---- */

/* A file holding one top-level key `key` (stats_sinks or stats_config), as the image's
 * ENVOY_STATS_SINKS_CFG_FILE and ENVOY_STATS_CONFIG_FILE; the key's value (a new reference) in
 * *out. Its contents are checked when the bootstrap is built, with their field paths. */
static int stats_file(const struct env *e, const char *var, const char *key, json_t **out)
{
    const char *path = get(e, var);
    *out = NULL;
    if (path == NULL) {
        return 0;
    }
    json_t *j = load_file(e, var, path);
    if (j == NULL) {
        return -EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (strcmp(snake(e, k), key) != 0) {
            err_set(e->err, var, "'%s': only %s may be in this file, not %s", path, key, k);
            json_decref(*out);
            *out = NULL;
            json_decref(j);
            return -EINVAL;
        }
        *out = json_incref(v);
    }
    json_decref(j);
    if (*out == NULL) {
        return err_set(e->err, var, "'%s': no %s in it", path, key);
    }
    return 0;
}

/* ENVOY_STATS_FLUSH_INTERVAL: <n>ms or <n>s (the image's default, 5000ms, is Envoy's) into a
 * Duration's JSON ("5.000s"), or NULL (unset), or -EINVAL. */
static int flush_interval(const struct env *e, char *out, size_t cap)
{
    const char *var = "ENVOY_STATS_FLUSH_INTERVAL";
    const char *v = get(e, var);
    out[0] = '\0';
    if (v == NULL) {
        return 0;
    }
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    unsigned long long ms = 0;
    if (errno == 0 && end != v && isdigit((unsigned char)v[0]) && strcmp(end, "ms") == 0) {
        ms = n;
    } else if (errno == 0 && end != v && isdigit((unsigned char)v[0]) && strcmp(end, "s") == 0 &&
               n < 300) {
        ms = n * 1000;
    }
    if (ms == 0 || ms >= 300000) {
        return err_set(e->err, var, "'%s' is not a duration from 1ms to 299s (5000ms, 10s)", v);
    }
    snprintf(out, cap, "%llu.%03llus", ms / 1000, ms % 1000);
    return 0;
}

/* The stats part of the generated bootstrap, as the image renders it: ENABLE_ENVOY_DOG_STATSD
 * a DogStatsD sink to STATSD_ADDRESS:STATSD_PORT (127.0.0.1:8125) over UDP, or to the Unix
 * datagram socket STATSD_SOCKET_PATH; ENVOY_STATS_SINKS_CFG_FILE's sinks after it;
 * ENABLE_ENVOY_STATS_TAGS the fixed tags appmesh.mesh and appmesh.virtual_node (or
 * appmesh.virtual_gateway) from the node id; ENVOY_STATS_CONFIG_FILE's stats_config instead of
 * those; ENVOY_STATS_FLUSH_INTERVAL. */
static int stats_env(const struct env *e, const char *id, json_t *boot)
{
    json_t *sinks = json_array();
    const char *dog = get(e, "ENABLE_ENVOY_DOG_STATSD");
    int dog_on = dog != NULL ? parse_bool(dog) : 0;
    int tags_on = 0;
    const char *tags = get(e, "ENABLE_ENVOY_STATS_TAGS");
    if (tags != NULL) {
        tags_on = parse_bool(tags);
    }
    if (dog_on < 0 || tags_on < 0) {
        json_decref(sinks);
        return err_set(e->err, dog_on < 0 ? "ENABLE_ENVOY_DOG_STATSD" : "ENABLE_ENVOY_STATS_TAGS",
                       "'%s' is not a boolean", dog_on < 0 ? dog : tags);
    }
    const char *sock = get(e, "STATSD_SOCKET_PATH");
    const char *addr = get(e, "STATSD_ADDRESS");
    long port = 8125;
    if (get_long(e, "STATSD_PORT", 1, 65535, &port) != 0) {
        json_decref(sinks);
        return -EINVAL;
    }
    if (dog_on == 1) {
        json_t *a;
        if (sock != NULL) {
            a = json_pack("{s:{s:s}}", "pipe", "path", sock);
        } else {
            unsigned char buf[16];
            const char *ip = addr != NULL ? addr : "127.0.0.1";
            if (inet_pton(AF_INET, ip, buf) != 1 && inet_pton(AF_INET6, ip, buf) != 1) {
                json_decref(sinks);
                return err_set(e->err, "STATSD_ADDRESS", "'%s' is not an IP address", ip);
            }
            a = json_pack("{s:{s:s, s:s, s:i}}", "socket_address", "protocol", "UDP", "address", ip,
                          "port_value", (json_int_t)port);
        }
        json_array_append_new(
            sinks,
            json_pack("{s:s, s:{s:s, s:o}}", "name", "envoy.stat_sinks.dog_statsd", "typed_config",
                      "@type", TYPE_PREFIX "envoy.config.metrics.v3.DogStatsdSink", "address", a));
    } else if (sock != NULL || addr != NULL || get(e, "STATSD_PORT") != NULL) {
        LOG_W("STATSD_ADDRESS, STATSD_PORT and STATSD_SOCKET_PATH are used with "
              "ENABLE_ENVOY_DOG_STATSD=1 only");
    }
    json_t *more = NULL, *sc = NULL;
    if (stats_file(e, "ENVOY_STATS_SINKS_CFG_FILE", "stats_sinks", &more) != 0 ||
        stats_file(e, "ENVOY_STATS_CONFIG_FILE", "stats_config", &sc) != 0) {
        json_decref(more);
        json_decref(sinks);
        return -EINVAL;
    }
    if (more != NULL && !json_is_array(more)) {
        json_decref(more);
        json_decref(sinks);
        json_decref(sc);
        return err_set(e->err, "ENVOY_STATS_SINKS_CFG_FILE", "stats_sinks is not a list");
    }
    if (more != NULL) {
        json_array_extend(sinks, more);
        json_decref(more);
    }
    if (json_array_size(sinks) > 0) {
        json_object_set(boot, "stats_sinks", sinks);
    }
    json_decref(sinks);
    if (sc == NULL && tags_on == 1) {
        /* the node id is checked already: ...mesh/<mesh>/virtual{Node,Gateway}/<name> */
        const char *m = strstr(id, "mesh/") + 5;
        const char *slash = strchr(m, '/');
        bool gw = strncmp(slash, "/virtualGateway/", 16) == 0;
        const char *name = slash + (gw ? 16 : 13);
        sc =
            json_pack("{s:[{s:s, s:s%}, {s:s, s:s}]}", "stats_tags", "tag_name", "appmesh.mesh",
                      "fixed_value", m, (size_t)(slash - m), "tag_name",
                      gw ? "appmesh.virtual_gateway" : "appmesh.virtual_node", "fixed_value", name);
    }
    if (sc != NULL) {
        json_object_set_new(boot, "stats_config", sc);
    }
    char interval[32];
    if (flush_interval(e, interval, sizeof(interval)) != 0) {
        return -EINVAL;
    }
    if (interval[0] != '\0') {
        json_object_set_new(boot, "stats_flush_interval", json_string(interval));
    }
    return 0;
}

static const char *node_id(const struct env *e, const char **var)
{
    static const char *const names[] = {"APPMESH_RESOURCE_ARN", "APPMESH_RESOURCE_NAME",
                                        "APPMESH_VIRTUAL_NODE_NAME"};
    for (size_t i = 0; i < 3; i++) {
        const char *v = get(e, names[i]);
        if (v != NULL) {
            *var = names[i];
            return v;
        }
    }
    return NULL;
}

/* A boolean variable: 0 when unset. Returns 0/1, or -EINVAL naming it. */
static int flag(const struct env *e, const char *name, int *out)
{
    const char *v = get(e, name);
    *out = v != NULL ? parse_bool(v) : 0;
    if (*out < 0) {
        return err_set(e->err, name, "'%s' is not a boolean", v);
    }
    return 0;
}

/* An IPv4 or IPv6 literal (the X-Ray daemon's address: remora sends to an address, it does not
 * resolve names for it). */
static bool ip_literal(const char *h)
{
    unsigned char b[16];
    return inet_pton(AF_INET, h, b) == 1 || inet_pton(AF_INET6, h, b) == 1;
}

/* AWS_XRAY_DAEMON_ADDRESS: "host:port", or "udp:host:port tcp:host:port" (the X-Ray SDKs'
 * form; the UDP one counts). Sets *ip (in the arena) and *port. */
static int xray_address(const struct env *e, const char *v, const char **ip, long *port)
{
    const char *var = "AWS_XRAY_DAEMON_ADDRESS";
    const char *p = v;
    const char *udp = strstr(v, "udp:");
    if (udp != NULL) {
        p = udp + 4;
    } else if (strncmp(v, "tcp:", 4) == 0) {
        return err_set(e->err, var, "'%s' has no udp: address", v);
    }
    size_t len = strcspn(p, " ");
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        if (p[i] == ':') {
            colon = p + i;
        }
    }
    if (colon == NULL) {
        return err_set(e->err, var, "'%s' is not host:port", v);
    }
    struct str host = {p, (size_t)(colon - p)};
    if (host.len > 2 && host.p[0] == '[' && host.p[host.len - 1] == ']') {
        host.p++;
        host.len -= 2;
    }
    const char *h = arena_strdup(e->a, host).p;
    char *end = NULL;
    errno = 0;
    long n = strtol(colon + 1, &end, 10);
    if (end != p + len || errno != 0 || n < 1 || n > 65535 || colon[1] == '\0') {
        return err_set(e->err, var, "'%s': the port must be 1-65535", v);
    }
    if (!ip_literal(h)) {
        return err_set(e->err, var,
                       "'%s': remora needs the daemon's IP address (it does not resolve names "
                       "for X-Ray)",
                       v);
    }
    *ip = h;
    *port = n;
    return 0;
}

/* ENABLE_ENVOY_XRAY_TRACING: the image's tracing.http (envoy.tracers.xray): the daemon at
 * 127.0.0.1:XRAY_DAEMON_PORT (2000) or AWS_XRAY_DAEMON_ADDRESS, segment XRAY_SEGMENT_NAME
 * (default "<mesh>/<node or gateway name>"), and XRAY_SAMPLING_RATE (0-1, default 0.05) as a
 * sampling_rule_manifest with only a default rule (1 request a second, then the rate), or
 * XRAY_SAMPLING_RULE_MANIFEST (a file, the same shape). */
static int xray_tracing(const struct env *e, const char *mesh, const char *id, json_t **out)
{
    long port = 2000;
    const char *ip = "127.0.0.1";
    const char *addr = get(e, "AWS_XRAY_DAEMON_ADDRESS");
    if (get_long(e, "XRAY_DAEMON_PORT", 1, 65535, &port) != 0 ||
        (addr != NULL && xray_address(e, addr, &ip, &port) != 0)) {
        return -EINVAL;
    }
    const char *seg = get(e, "XRAY_SEGMENT_NAME");
    if (seg == NULL) {
        const char *slash = strrchr(id, '/');
        seg = arena_printf(e->a, "%s/%s", mesh, slash != NULL ? slash + 1 : id).p;
    }
    json_t *cfg = json_pack("{s:s, s:s, s:{s:s, s:s, s:I}}", "@type",
                            TYPE_PREFIX "envoy.config.trace.v3.XRayConfig", "segment_name", seg,
                            "daemon_endpoint", "protocol", "UDP", "address", ip, "port_value",
                            (json_int_t)port);
    const char *rate = get(e, "XRAY_SAMPLING_RATE");
    const char *manifest = get(e, "XRAY_SAMPLING_RULE_MANIFEST");
    if (rate != NULL && manifest != NULL) {
        json_decref(cfg);
        return err_set(e->err, "XRAY_SAMPLING_RATE",
                       "set with XRAY_SAMPLING_RULE_MANIFEST: give one");
    }
    if (rate != NULL) {
        char *end = NULL;
        errno = 0;
        double r = strtod(rate, &end);
        if (end == rate || *end != '\0' || errno != 0 || !(r >= 0.0 && r <= 1.0)) {
            json_decref(cfg);
            return err_set(e->err, "XRAY_SAMPLING_RATE", "'%s' is not a rate from 0 to 1", rate);
        }
        json_t *rules =
            json_pack("{s:i, s:{s:i, s:f}}", "version", 2, "default", "fixed_target", 1, "rate", r);
        char *m = json_dumps(rules, JSON_COMPACT);
        json_decref(rules);
        json_object_set_new(cfg, "sampling_rule_manifest", json_pack("{s:s}", "inline_string", m));
        free(m);
    } else if (manifest != NULL) {
        if (readable(e, "XRAY_SAMPLING_RULE_MANIFEST", manifest) != 0) {
            json_decref(cfg);
            return -EINVAL;
        }
        json_object_set_new(cfg, "sampling_rule_manifest",
                            json_pack("{s:s}", "filename", manifest));
    }
    *out = json_pack("{s:s, s:o}", "name", "envoy.tracers.xray", "typed_config", cfg);
    return 0;
}

/* ENABLE_ENVOY_JAEGER_TRACING: as the image, Zipkin's format to Jaeger's collector
 * (JAEGER_TRACER_ADDRESS, default 127.0.0.1; JAEGER_TRACER_PORT, default 9411) through a
 * `jaeger` cluster, at /api/v2/spans. remora sends HTTP_JSON (Jaeger's Zipkin endpoint takes
 * JSON and proto alike); JAEGER_TRACER_VERSION may be unset or JSON. */
static int jaeger_tracing(const struct env *e, json_t *boot, json_t **out)
{
    long port = 9411;
    if (get_long(e, "JAEGER_TRACER_PORT", 1, 65535, &port) != 0) {
        return -EINVAL;
    }
    const char *ver = get(e, "JAEGER_TRACER_VERSION");
    if (ver != NULL && strcasecmp(ver, "JSON") != 0) {
        return err_set(e->err, "JAEGER_TRACER_VERSION",
                       "'%s' is not supported by remora: it sends Zipkin's JSON (HTTP_JSON), "
                       "which Jaeger's collector accepts; unset it or say JSON",
                       ver);
    }
    const char *host = get(e, "JAEGER_TRACER_ADDRESS");
    if (host == NULL) {
        host = "127.0.0.1";
    }
    if (!ip_literal(host) && !valid_hostname(host)) {
        return err_set(e->err, "JAEGER_TRACER_ADDRESS", "'%s' is not a host name or IP address",
                       host);
    }
    json_t *jc =
        json_pack("{s:s, s:s, s:{s:s, s:[{s:[{s:{s:{s:{s:s, s:I}}}}]}]}}", "name", "jaeger", "type",
                  ip_literal(host) ? "STATIC" : "STRICT_DNS", "load_assignment", "cluster_name",
                  "jaeger", "endpoints", "lb_endpoints", "endpoint", "address", "socket_address",
                  "address", host, "port_value", (json_int_t)port);
    json_array_append_new(json_object_get(json_object_get(boot, "static_resources"), "clusters"),
                          jc);
    *out = json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:b}}", "name", "envoy.tracers.zipkin",
                     "typed_config", "@type", TYPE_PREFIX "envoy.config.trace.v3.ZipkinConfig",
                     "collector_cluster", "jaeger", "collector_endpoint", "/api/v2/spans",
                     "collector_endpoint_version", "HTTP_JSON", "shared_span_context", 0);
    return 0;
}

/* The bootstrap's tracing.http from ENABLE_ENVOY_XRAY_TRACING or ENABLE_ENVOY_JAEGER_TRACING
 * (not both: Envoy has one bootstrap tracer). Connection managers from remora-xds carry
 * `tracing: {}` and so take it (Envoy v3's bootstrap-level provider). */
static int tracing_env(const struct env *e, const char *mesh, const char *id, json_t *boot)
{
    int xray = 0, jaeger = 0;
    if (flag(e, "ENABLE_ENVOY_XRAY_TRACING", &xray) != 0 ||
        flag(e, "ENABLE_ENVOY_JAEGER_TRACING", &jaeger) != 0) {
        return -EINVAL;
    }
    if (xray && jaeger) {
        return err_set(e->err, "ENABLE_ENVOY_JAEGER_TRACING",
                       "set with ENABLE_ENVOY_XRAY_TRACING: one tracer at a time");
    }
    json_t *http = NULL;
    if (xray && xray_tracing(e, mesh, id, &http) != 0) {
        return -EINVAL;
    }
    if (jaeger && jaeger_tracing(e, boot, &http) != 0) {
        return -EINVAL;
    }
    if (http != NULL) {
        json_object_set_new(boot, "tracing", json_pack("{s:o}", "http", http));
    }
    return 0;
}

/* The generated bootstrap; returns 0 and sets out->bootstrap, or -EINVAL. */
static int generate(const struct env *e, struct appmesh_env *out)
{
    const char *idvar = NULL, *mesh = NULL;
    const char *id = node_id(e, &idvar);
    if (id == NULL) {
        return err_set(e->err, "APPMESH_RESOURCE_ARN",
                       "required: the ARN of the virtual node or gateway this proxy runs as "
                       "(or APPMESH_RESOURCE_NAME / APPMESH_VIRTUAL_NODE_NAME: "
                       "mesh/<mesh>/virtualNode/<name>)");
    }
    if (parse_node_id(e, idvar, id, &mesh) != 0) {
        return -EINVAL;
    }
    const char *cluster = get(e, "APPMESH_RESOURCE_CLUSTER");
    if (cluster == NULL) {
        cluster = get(e, "APPMESH_VIRTUAL_NODE_CLUSTER");
    }
    if (cluster == NULL) {
        cluster = id;
    }

    const char *ep = get(e, "APPMESH_XDS_ENDPOINT");
    if (ep == NULL) {
        return err_set(e->err, "APPMESH_XDS_ENDPOINT",
                       "required: remora-xds's xDS address, host:port (App Mesh's default, "
                       "appmesh-envoy-management.<region>.amazonaws.com:443, needs SigV4, which "
                       "remora does not do)");
    }
    const char *host = NULL;
    long port = 0, admin_port = 9901, fetch_s = 0;
    bool is_ip = false;
    if (parse_endpoint(e, ep, &host, &port, &is_ip) != 0 ||
        get_long(e, "ENVOY_ADMIN_ACCESS_PORT", 1, 65535, &admin_port) != 0 ||
        get_long(e, "ENVOY_INITIAL_FETCH_TIMEOUT", 0, 315576000000L, &fetch_s) != 0) {
        return -EINVAL;
    }
    out->xds_endpoint = ep;
    bool v6 = false;
    const char *ipv6 = get(e, "ENVOY_ADMIN_ACCESS_ENABLE_IPV6");
    if (ipv6 != NULL) {
        int b = parse_bool(ipv6);
        if (b < 0) {
            return err_set(e->err, "ENVOY_ADMIN_ACCESS_ENABLE_IPV6", "'%s' is not a boolean", ipv6);
        }
        v6 = b == 1;
    }
    const char *alog = get(e, "ENVOY_ADMIN_ACCESS_LOG_FILE");
    json_t *tls = NULL;
    if (xds_tls(e, host, is_ip, &tls) != 0) {
        return -EINVAL;
    }
    out->xds_tls = tls != NULL;

    json_t *boot = json_object();
    json_object_set_new(boot, "node",
                        json_pack("{s:s, s:s, s:o}", "id", id, "cluster", cluster, "metadata",
                                  node_metadata(e, mesh)));
    json_object_set_new(
        boot, "admin",
        json_pack("{s:[{s:s, s:{s:s, s:s}}], s:{s:{s:s, s:i}}}", "access_log", "name",
                  "envoy.access_loggers.file", "typed_config", "@type", FILE_LOG, "path",
                  alog != NULL ? alog : "/tmp/envoy_admin_access.log", "address", "socket_address",
                  "address", v6 ? "::" : "0.0.0.0", "port_value", (json_int_t)admin_port));
    char timeout[32];
    snprintf(timeout, sizeof(timeout), "%lds", fetch_s);
    json_t *ads_cs = json_pack("{s:{}, s:s, s:s}", "ads", "resource_api_version", "V3",
                               "initial_fetch_timeout", timeout);
    json_object_set_new(boot, "dynamic_resources",
                        json_pack("{s:{s:s, s:s, s:[{s:{s:s}}], s:b}, s:O, s:o}", "ads_config",
                                  "api_type", "GRPC", "transport_api_version", "V3",
                                  "grpc_services", "envoy_grpc", "cluster_name", XDS_CLUSTER,
                                  "set_node_on_first_message_only", 1, "lds_config", ads_cs,
                                  "cds_config", ads_cs));
    /* App Mesh's image pings its control plane every 10 s and gives up after 20 s without an
     * answer (ECS agent envoy_bootstrap.go): the same connection_keepalive here. */
    json_t *xc = json_pack(
        "{s:s, s:s, s:{s:{s:s, s:{s:{s:{s:s, s:s}}}}}, s:{s:s, s:[{s:[{s:{s:{s:{s:s, s:i}}}}]}]}}",
        "name", XDS_CLUSTER, "type", is_ip ? "STATIC" : "STRICT_DNS",
        "typed_extension_protocol_options", HPO, "@type", TYPE_PREFIX HPO, "explicit_http_config",
        "http2_protocol_options", "connection_keepalive", "interval", XDS_KEEPALIVE_INTERVAL,
        "timeout", XDS_KEEPALIVE_TIMEOUT, "load_assignment", "cluster_name", XDS_CLUSTER,
        "endpoints", "lb_endpoints", "endpoint", "address", "socket_address", "address", host,
        "port_value", (json_int_t)port);
    if (tls != NULL) {
        json_object_set_new(xc, "transport_socket", tls);
    }
    json_object_set_new(boot, "static_resources", json_pack("{s:[o]}", "clusters", xc));
    out->bootstrap = boot;
    if (stats_env(e, id, boot) != 0 || tracing_env(e, mesh, id, boot) != 0) {
        json_decref(boot);
        out->bootstrap = NULL;
        return -EINVAL;
    }

    const char *res = get(e, "ENVOY_RESOURCES_CONFIG_FILE");
    const char *replaced = NULL;
    if (res != NULL && merge_resources(e, res, boot, &replaced) != 0) {
        json_decref(boot);
        out->bootstrap = NULL;
        return -EINVAL;
    }
    out->replaced = replaced;
    return 0;
}

int appmesh_env_load(const char *const *envp, struct appmesh_env *out, struct err *err)
{
    memset(out, 0, sizeof(*out));
    arena_init(&out->arena, 4096);
    struct env e = {.envp = envp, .a = &out->arena, .err = err};
    out->drain_time_s = APPMESH_ENV_DRAIN_DEFAULT_S;
    int rc = check_unsupported(&e);
    if (rc == 0) {
        out->log_level = get(&e, "ENVOY_LOG_LEVEL");
        if (out->log_level != NULL && log_level_parse(out->log_level) < 0) {
            rc = err_set(err, "ENVOY_LOG_LEVEL",
                         "'%s' is not a level (trace, debug, info, warning, error, critical, off)",
                         out->log_level);
        }
    }
    if (rc == 0) {
        rc = get_long(&e, "ENVOY_CONCURRENCY", 1, 1024, &out->concurrency);
    }
    if (rc == 0) {
        rc = get_long(&e, "LISTENER_DRAIN_WAIT_TIME_S", APPMESH_ENV_DRAIN_MIN_S,
                      APPMESH_ENV_DRAIN_MAX_S, &out->drain_time_s);
    }
    if (rc == 0) {
        out->config_file = get(&e, "ENVOY_CONFIG_FILE");
        if (out->config_file == NULL) {
            rc = generate(&e, out);
        } else if (get(&e, "ENVOY_RESOURCES_CONFIG_FILE") != NULL) {
            rc = err_set(err, "ENVOY_RESOURCES_CONFIG_FILE",
                         "not with ENVOY_CONFIG_FILE (that file is the whole bootstrap)");
        } else {
            size_t len;
            char *text = file_read(out->config_file, RESOURCES_FILE_MAX, &len);
            if (text == NULL) {
                rc = err_set(err, "ENVOY_CONFIG_FILE", "cannot read '%s': %s", out->config_file,
                             strerror(errno));
            } else {
                struct err perr;
                err_clear(&perr);
                out->bootstrap = pbjson_load_text(text, len, &perr);
                free(text);
                if (out->bootstrap == NULL) {
                    rc = err_set(err, "ENVOY_CONFIG_FILE", "'%s': %s", out->config_file, perr.msg);
                }
            }
            const char *unused = NULL;
            for (size_t i = 0; rc == 0 && i < sizeof(bootstrap_vars) / sizeof(bootstrap_vars[0]);
                 i++) {
                if (get(&e, bootstrap_vars[i]) != NULL) {
                    unused = unused == NULL
                                 ? bootstrap_vars[i]
                                 : arena_printf(&out->arena, "%s %s", unused, bootstrap_vars[i]).p;
                }
            }
            out->unused = unused;
        }
    }
    if (rc != 0) {
        appmesh_env_deinit(out);
        return -EINVAL;
    }
    return 0;
}

struct config *appmesh_env_build(const struct appmesh_env *e, struct err *err)
{
    if (e->config_file != NULL) {
        LOG_I("bootstrap from ENVOY_CONFIG_FILE %s", e->config_file);
        if (e->unused != NULL) {
            LOG_W("ENVOY_CONFIG_FILE is the whole bootstrap: not used: %s", e->unused);
        }
        return config_load_file(e->config_file, err);
    }
    if (e->replaced != NULL) {
        LOG_W("ENVOY_RESOURCES_CONFIG_FILE replaces the generated %s", e->replaced);
    }
    if (e->xds_tls) {
        LOG_I("xDS (ADS) to %s over TLS (REMORA_XDS_CA_FILE)", e->xds_endpoint);
    } else {
        LOG_W("xDS (ADS) to %s in plaintext (h2c): set REMORA_XDS_CA_FILE (remora-xds "
              "--xds-tls) for TLS",
              e->xds_endpoint);
    }
    char *text = json_dumps(e->bootstrap, JSON_PRESERVE_ORDER);
    struct config *c = config_load_text(text, strlen(text), err);
    free(text);
    return c;
}

char *appmesh_env_dump(const struct appmesh_env *e)
{
    char *s = json_dumps(e->bootstrap, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    size_t n = strlen(s);
    s = xrealloc(s, n + 2);
    s[n] = '\n';
    s[n + 1] = '\0';
    return s;
}

void appmesh_env_deinit(struct appmesh_env *e)
{
    json_decref(e->bootstrap);
    e->bootstrap = NULL;
    arena_deinit(&e->arena);
}
