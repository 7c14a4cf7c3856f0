/* build: Envoy v3 Bootstrap -> validated, compiled `struct config` snapshot (see build.h). Runs
 * on the main thread at startup and on every config change, never on the request path.
 *
 * Decode (pbjson) has already rejected unknown fields and type errors by the time a Bootstrap
 * message reaches build_bootstrap(); this file then validates semantics, rejects every field
 * that is set but not supported with "not supported by remora yet", and compiles into the
 * snapshot arena. Typed configs (Any) are unpacked on the way and freed before returning: the
 * snapshot copies every byte it keeps. The Bootstrap message itself is kept (owned) by the
 * snapshot for /config_dump. */
#include "proxy/config/build.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/accesslog/v3/accesslog.pb-c.h"
#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/core/v3/address.pb-c.h"
#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/core/v3/health_check.pb-c.h"
#include "envoy/config/core/v3/protocol.pb-c.h"
#include "envoy/config/core/v3/substitution_format_string.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint_components.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/listener/v3/listener_components.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/config/route/v3/route_components.pb-c.h"
#include "envoy/extensions/access_loggers/file/v3/file.pb-c.h"
#include "envoy/extensions/access_loggers/stream/v3/stream.pb-c.h"
#include "envoy/extensions/filters/http/router/v3/router.pb-c.h"
#include "envoy/extensions/filters/listener/original_dst/v3/original_dst.pb-c.h"
#include "envoy/extensions/filters/listener/proxy_protocol/v3/proxy_protocol.pb-c.h"
#include "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.pb-c.h"
#include "envoy/extensions/retry/host/previous_hosts/v3/previous_hosts.pb-c.h"
#include "envoy/extensions/upstreams/http/v3/http_protocol_options.pb-c.h"
#include "envoy/type/matcher/v3/regex.pb-c.h"
#include "envoy/type/matcher/v3/string.pb-c.h"
#include "envoy/type/v3/percent.pb-c.h"
#include "envoy/type/v3/range.pb-c.h"
#include "filters/cors/cors.h"
#include "filters/rbac/rbac_network.h"
#include "google/protobuf/duration.pb-c.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "proxy/config/build_ads.h"
#include "proxy/config/build_health.h"
#include "proxy/config/build_stats.h"
#include "proxy/config/build_tls.h"
#include "proxy/config/build_tracing.h"
#include "proxy/config/cluster_map.h"
#include "proxy/config/duration.h"
#include "proxy/config/filter_build.h"
#include "proxy/config/fpath.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbmerge.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/core/file.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/access_log.h"
#include "proxy/http/filter_chain.h"
#include "proxy/http/regex.h"
#include "proxy/http/retry.h"
#include "proxy/net/accepted.h"
#include "proxy/net/chain_match.h"
#include "proxy/net/proxy_protocol.h"
#include "proxy/net/resolver.h"
#include "proxy/upstream/lb_hash.h"

/* Short names for the generated protobuf-c types (their full names run to 90 characters). */
#define PbBootstrap Envoy__Config__Bootstrap__V3__Bootstrap
#define PbAdmin Envoy__Config__Bootstrap__V3__Admin
#define PbAddress Envoy__Config__Core__V3__Address
#define PbSocketAddress Envoy__Config__Core__V3__SocketAddress
#define PbDataSource Envoy__Config__Core__V3__DataSource
#define PbHeaderValueOption Envoy__Config__Core__V3__HeaderValueOption
#define PbDuration Google__Protobuf__Duration
#define PbAny Google__Protobuf__Any
#define PbCluster Envoy__Config__Cluster__V3__Cluster
#define PbLbEndpoint Envoy__Config__Endpoint__V3__LbEndpoint
#define PbLocalityLbEndpoints Envoy__Config__Endpoint__V3__LocalityLbEndpoints
#define PbListener Envoy__Config__Listener__V3__Listener
#define PbFilterChain Envoy__Config__Listener__V3__FilterChain
#define PbFilter Envoy__Config__Listener__V3__Filter
#define PbFilterChainMatch Envoy__Config__Listener__V3__FilterChainMatch
#define PbListenerFilter Envoy__Config__Listener__V3__ListenerFilter
#define PbCidrRange Envoy__Config__Core__V3__CidrRange
#define PbHcm Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager
#define PbXfccDetails                                                                              \
    Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpConnectionManager__SetCurrentClientCertDetails
#define PbHttpFilter Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__HttpFilter
#define PbRouter Envoy__Extensions__Filters__Http__Router__V3__Router
#define PbAccessLog Envoy__Config__Accesslog__V3__AccessLog
#define PbAccessLogFilter Envoy__Config__Accesslog__V3__AccessLogFilter
#define PbComparisonFilter Envoy__Config__Accesslog__V3__ComparisonFilter
#define PbFileAccessLog Envoy__Extensions__AccessLoggers__File__V3__FileAccessLog
#define PbStdoutAccessLog Envoy__Extensions__AccessLoggers__Stream__V3__StdoutAccessLog
#define PbStderrAccessLog Envoy__Extensions__AccessLoggers__Stream__V3__StderrAccessLog
#define PbFormatString Envoy__Config__Core__V3__SubstitutionFormatString
#define PbRouteConfiguration Envoy__Config__Route__V3__RouteConfiguration
#define PbVirtualHost Envoy__Config__Route__V3__VirtualHost
#define PbRoute Envoy__Config__Route__V3__Route
#define PbRouteMatch Envoy__Config__Route__V3__RouteMatch
#define PbRouteAction Envoy__Config__Route__V3__RouteAction
#define PbDirectResponse Envoy__Config__Route__V3__DirectResponseAction
#define PbHeaderMatcher Envoy__Config__Route__V3__HeaderMatcher
#define PbStringMatcher Envoy__Type__Matcher__V3__StringMatcher
#define PbRegexMatcher Envoy__Type__Matcher__V3__RegexMatcher
#define PbQueryParameterMatcher Envoy__Config__Route__V3__QueryParameterMatcher
#define PbWeightedCluster Envoy__Config__Route__V3__WeightedCluster
#define PbClusterWeight Envoy__Config__Route__V3__WeightedCluster__ClusterWeight
#define PbHashPolicy Envoy__Config__Route__V3__RouteAction__HashPolicy

#define HCM_DESC                                                                                   \
    envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__descriptor
#define ROUTER_DESC envoy__extensions__filters__http__router__v3__router__descriptor
#define ORIGINAL_DST_DESC                                                                          \
    envoy__extensions__filters__listener__original_dst__v3__original_dst__descriptor
#define TLS_INSPECTOR_DESC                                                                         \
    envoy__extensions__filters__listener__tls_inspector__v3__tls_inspector__descriptor
#define PROXY_PROTOCOL_DESC                                                                        \
    envoy__extensions__filters__listener__proxy_protocol__v3__proxy_protocol__descriptor

/* Envoy's defaults. */
#define DEFAULT_CONNECT_TIMEOUT_MS 5000
#define DEFAULT_ROUTE_TIMEOUT_MS 15000
#define DEFAULT_STREAM_IDLE_TIMEOUT_MS 300000
#define DEFAULT_IDLE_TIMEOUT_MS 3600000
#define DEFAULT_MAX_REQUEST_HEADERS_KB 60
#define MAX_REQUEST_HEADERS_KB_LIMIT 8192
#define DEFAULT_MAX_HEADERS_COUNT 100
#define DEFAULT_DRAIN_TIMEOUT_MS 5000 /* the HCM's drain_timeout (HTTP/2 two-phase GOAWAY) */
#define DEFAULT_BUFFER_LIMIT (1024 * 1024)
#define DEFAULT_LR_CHOICE_COUNT 2
#define DEFAULT_LR_ACTIVE_REQUEST_BIAS 1.0
/* Far above any useful bias (Envoy's docs discuss 0-1); bounds pow() in the picker. */
#define LR_ACTIVE_REQUEST_BIAS_MAX 100.0
#define DEFAULT_DIRECT_BODY_MAX 4096
/* Access log formats read from a file: generous, but bounded. */
#define FORMAT_FILE_MAX (64 * 1024)
#define BOOTSTRAP_FILE_MAX (64 * 1024 * 1024)

#define UNSUPPORTED "not supported by remora yet"

#define HTTP_ROUTER_NAME "envoy.filters.http.router"

/* ---- build context and field paths ---- */

struct bctx {
    struct config *c; /* the snapshot being built; freed by the caller on failure */
    struct arena *a;  /* &c->arena */
    struct err *err;
    struct fpath fp; /* the field being built, e.g. "static_resources.clusters[0]" */
    /* The connection manager being built (its route table's typed_per_filter_config refers to
     * its http_filters), or NULL. */
    const struct hcm_cfg *hcm;
    /* The filter chains of the listeners built so far (config.chains), and their count. */
    struct filter_chain_cfg *chains;
    uint32_t n_chains;
    /* A route configuration from RDS (build_route_table): validate_clusters defaults to false,
     * as in Envoy, so a route may name a cluster that does not exist (yet): 503 NC. */
    bool rds;
    bool missing_clusters_ok; /* the route configuration being built does not validate them */
    bool rebuild;             /* an RDS table compiled again after a CDS change: never
                               * validates clusters (Envoy checks them when RDS delivers) */
    bool cds;                 /* a cluster from CDS (build_cluster): EDS is possible */
    bool eds_endpoints;       /* ...with its load_assignment from EDS (cds.c) */
    bool lds;                 /* a listener from LDS (build_listener) */
    bool egress;              /* the listener being built is OUTBOUND (tracing's span kind) */
};

/* Field paths: thin wrappers over fpath.c, so the builders share one implementation. */
__attribute__((format(printf, 2, 3))) static size_t at(struct bctx *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = fpath_vpush(&b->fp, fmt, ap);
    va_end(ap);
    return old;
}

static void up(struct bctx *b, size_t mark)
{
    fpath_pop(&b->fp, mark);
}

/* Sets the error at the current path and returns -EINVAL. */
__attribute__((format(printf, 2, 3))) static int fail(struct bctx *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fpath_vfail(&b->fp, b->err, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* Sets the error at the current path plus `field` ("connect_timeout", "[2]"). */
__attribute__((format(printf, 3, 4))) static int fail_at(struct bctx *b, const char *field,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fpath_vfail(&b->fp, b->err, field, fmt, ap);
    va_end(ap);
    return rc;
}

static int unsupported(struct bctx *b, const char *field)
{
    return fail_at(b, field, UNSUPPORTED);
}

/* Rejects field `name` of `msg` when it is set (non-NULL, non-zero, non-empty). */
#define REJECT_IF(cond, name)                                                                      \
    do {                                                                                           \
        if (cond) {                                                                                \
            return unsupported(b, name);                                                           \
        }                                                                                          \
    } while (0)

static const char *enum_name(const ProtobufCEnumDescriptor *ed, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
    return ev != NULL ? ev->name : "?";
}

/* Rejects a value of an enum field: "'RING_HASH' is not supported by remora yet". */
static int unsupported_value(struct bctx *b, const char *field, const ProtobufCEnumDescriptor *ed,
                             int v)
{
    return fail_at(b, field, "%s is " UNSUPPORTED, enum_name(ed, v));
}

/* ---- small helpers ---- */

static bool is_set_str(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static struct str dup_str(struct bctx *b, const char *s)
{
    return arena_strdup(b->a, str_from_c(s != NULL ? s : ""));
}

static struct str dup_lower(struct bctx *b, const char *s)
{
    struct str r = dup_str(b, s);
    char *p = (char *)r.p;
    for (size_t i = 0; i < r.len; i++) {
        p[i] = (char)tolower((unsigned char)p[i]);
    }
    return r;
}

/* RFC 9110 token characters: what a header name may hold. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool valid_header_name(const char *s, bool allow_pseudo)
{
    if (allow_pseudo && s[0] == ':') {
        s++;
    }
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        if (!is_tchar((unsigned char)*s)) {
            return false;
        }
    }
    return true;
}

static bool valid_header_value(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n') {
            return false;
        }
    }
    return true;
}

/* A Duration as milliseconds, sub-millisecond remainders rounded up (so that a tiny timeout
 * does not become 0, "disabled"). NULL gives `dflt`. Negative values are errors; `positive`
 * also rejects zero. */
static int dur_ms(struct bctx *b, const char *field, const PbDuration *d, uint64_t dflt,
                  bool positive, uint64_t *out)
{
    if (d == NULL) {
        *out = dflt;
        return 0;
    }
    const char *why = duration_ms(d, positive, out);
    return why != NULL ? fail_at(b, field, "%s", why) : 0;
}

static uint32_t u32_or(const Google__Protobuf__UInt32Value *w, uint32_t dflt)
{
    return w != NULL ? w->value : dflt;
}

static bool bool_or(const Google__Protobuf__BoolValue *w, bool dflt)
{
    return w != NULL ? (bool)w->value : dflt;
}

/* A DataSource (file, inline bytes or inline string) copied into the snapshot, at most `max`
 * bytes. */
static int data_source(struct bctx *b, const char *field, const PbDataSource *ds, size_t max,
                       struct str *out)
{
    size_t mark = at(b, ".%s", field);
    int rc = 0;
    switch (ds->specifier_case) {
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_FILENAME: {
        size_t len;
        char *p = file_read(ds->filename, max, &len);
        if (p == NULL) {
            rc =
                errno == EFBIG
                    ? fail_at(b, "filename", "'%s' is larger than %zu bytes", ds->filename, max)
                    : fail_at(b, "filename", "cannot read '%s': %s", ds->filename, strerror(errno));
            break;
        }
        *out = arena_strdup(b->a, (struct str){p, len});
        free(p);
        break;
    }
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_BYTES:
        if (ds->inline_bytes.len > max) {
            rc = fail_at(b, "inline_bytes", "larger than %zu bytes", max);
            break;
        }
        *out = arena_strdup(
            b->a, (struct str){(const char *)ds->inline_bytes.data, ds->inline_bytes.len});
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_INLINE_STRING:
        if (strlen(ds->inline_string) > max) {
            rc = fail_at(b, "inline_string", "larger than %zu bytes", max);
            break;
        }
        *out = dup_str(b, ds->inline_string);
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER_ENVIRONMENT_VARIABLE:
        rc = unsupported(b, "environment_variable");
        break;
    case ENVOY__CONFIG__CORE__V3__DATA_SOURCE__SPECIFIER__NOT_SET:
    default:
        rc = fail(b, "one of filename, inline_bytes, inline_string is required");
        break;
    }
    up(b, mark);
    return rc;
}

/* ---- addresses ---- */

static void sock_addr_text(struct bctx *b, struct sock_addr *sa)
{
    char text[SOCKADDR_TEXT_MAX];
    size_t n = sockaddr_text((const struct sockaddr *)&sa->ss, text);
    sa->text = arena_strdup(b->a, (struct str){text, n});
}

/* Parses an IP literal into `sa` (zeroed first, so the bytes hash deterministically). */
static bool parse_ip(const char *ip, uint16_t port, struct sock_addr *sa)
{
    memset(sa, 0, sizeof(*sa));
    struct sockaddr_in *in = (struct sockaddr_in *)&sa->ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa->ss;
    if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        sa->len = sizeof(*in);
        return true;
    }
    memset(sa, 0, sizeof(*sa));
    if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        sa->len = sizeof(*in6);
        return true;
    }
    return false;
}

enum addr_use {
    ADDR_LISTENER, /* IP literal; port 0 allowed (the kernel picks one) */
    ADDR_ENDPOINT, /* IP literal; port 1-65535 */
    ADDR_DNS,      /* hostname or IP; port 1-65535; not parsed here */
};

/* Validates the fields of an Address common to every use, under path `field`, and returns its
 * SocketAddress and port. */
static int socket_address(struct bctx *b, const char *field, const PbAddress *addr,
                          enum addr_use use, const PbSocketAddress **out, uint16_t *port)
{
    if (addr == NULL) {
        return fail_at(b, field, "required");
    }
    size_t mark = at(b, ".%s", field);
    int rc = 0;
    if (addr->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE) {
        rc = unsupported(b, "pipe");
        goto out;
    }
    if (addr->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS) {
        rc = fail_at(b, "socket_address", "required");
        goto out;
    }
    const PbSocketAddress *sa = addr->socket_address;
    at(b, ".socket_address");
    if (sa->protocol != ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PROTOCOL__TCP) {
        rc = unsupported_value(b, "protocol",
                               &envoy__config__core__v3__socket_address__protocol__descriptor,
                               (int)sa->protocol);
        goto out;
    }
    if (is_set_str(sa->resolver_name)) {
        rc = unsupported(b, "resolver_name");
        goto out;
    }
    if (sa->ipv4_compat && use != ADDR_LISTENER) {
        rc = unsupported(b, "ipv4_compat"); /* a listener's only (an IPv6 socket's option) */
        goto out;
    }
    if (sa->port_specifier_case ==
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_NAMED_PORT) {
        rc = unsupported(b, "named_port");
        goto out;
    }
    if (sa->port_specifier_case !=
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE) {
        rc = fail_at(b, "port_value", "required");
        goto out;
    }
    if (sa->port_value > 65535) {
        rc = fail_at(b, "port_value", "port %u out of range (0-65535)", sa->port_value);
        goto out;
    }
    if (sa->port_value == 0 && use != ADDR_LISTENER) {
        rc = fail_at(b, "port_value", "port 0 is not a valid destination (1-65535)");
        goto out;
    }
    if (!is_set_str(sa->address)) {
        rc = fail_at(b, "address", "required");
        goto out;
    }
    *out = sa;
    *port = (uint16_t)sa->port_value;
out:
    up(b, mark);
    return rc;
}

/* An Address that must be an IP literal (listeners, admin, STATIC endpoints). */
static int ip_address(struct bctx *b, const char *field, const PbAddress *addr, enum addr_use use,
                      struct sock_addr *out)
{
    const PbSocketAddress *sa;
    uint16_t port;
    int rc = socket_address(b, field, addr, use, &sa, &port);
    if (rc != 0) {
        return rc;
    }
    if (!parse_ip(sa->address, port, out)) {
        size_t mark = at(b, ".%s.socket_address", field);
        rc = fail_at(b, "address", "'%s' is not an IP address", sa->address);
        up(b, mark);
        return rc;
    }
    sock_addr_text(b, out);
    return 0;
}

/* ---- header edits (*_headers_to_add / *_headers_to_remove) ---- */

/* Envoy refuses to let configuration rewrite pseudo-headers or Host this way. */
static bool modifiable_header(const char *lower)
{
    return lower[0] != ':' && strcmp(lower, "host") != 0;
}

static int header_add(struct bctx *b, const PbHeaderValueOption *o, struct header_add *out)
{
    if (o->header == NULL) {
        return fail_at(b, "header", "required");
    }
    const char *key = o->header->key;
    const char *value = o->header->value != NULL ? o->header->value : "";
    size_t mark = at(b, ".header");
    int rc = 0;
    out->name = dup_lower(b, key);
    out->value = dup_str(b, value);
    if (!is_set_str(key)) {
        rc = fail_at(b, "key", "required");
    } else if (!modifiable_header(out->name.p)) {
        rc = fail_at(b, "key", "'%s': pseudo-headers and host may not be modified", out->name.p);
    } else if (!valid_header_name(key, false)) {
        rc = fail_at(b, "key", "invalid header name '%s'", key);
    } else if (!valid_header_value(value, strlen(value))) {
        rc = fail_at(b, "value", "contains CR or LF");
    } else if (strchr(value, '%') != NULL) {
        /* Envoy expands %COMMAND% formatters in header values; remora copies values
         * verbatim, so a '%' would silently mean something else. */
        rc = fail_at(b, "value", "header value formatters (%%...%%) are " UNSUPPORTED);
    }
    up(b, mark);
    if (rc != 0) {
        return rc;
    }
    REJECT_IF(o->keep_empty_value, "keep_empty_value");
    if (o->append != NULL &&
        o->append_action !=
            ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD) {
        return fail_at(b, "append_action", "append and append_action may not both be set");
    }
    if (o->append != NULL) {
        out->action = o->append->value ? HA_APPEND_IF_EXISTS_OR_ADD : HA_OVERWRITE_IF_EXISTS_OR_ADD;
        return 0;
    }
    switch (o->append_action) {
    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__APPEND_IF_EXISTS_OR_ADD:
        out->action = HA_APPEND_IF_EXISTS_OR_ADD;
        return 0;
    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__ADD_IF_ABSENT:
        out->action = HA_ADD_IF_ABSENT;
        return 0;
    case ENVOY__CONFIG__CORE__V3__HEADER_VALUE_OPTION__HEADER_APPEND_ACTION__OVERWRITE_IF_EXISTS_OR_ADD:
        out->action = HA_OVERWRITE_IF_EXISTS_OR_ADD;
        return 0;
    default:
        return unsupported_value(
            b, "append_action",
            &envoy__config__core__v3__header_value_option__header_append_action__descriptor,
            (int)o->append_action);
    }
}

/* One level's request or response edits: `add_field`/`rm_field` name the two fields. */
static int header_edits(struct bctx *b, PbHeaderValueOption *const *add, size_t n_add,
                        const char *add_field, char *const *rm, size_t n_rm, const char *rm_field,
                        struct header_edits *out)
{
    struct header_add *adds = ARENA_NEW_N(b->a, struct header_add, n_add);
    for (size_t i = 0; i < n_add; i++) {
        size_t mark = at(b, ".%s[%zu]", add_field, i);
        int rc = header_add(b, add[i], &adds[i]);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    struct str *rms = ARENA_NEW_N(b->a, struct str, n_rm);
    for (size_t i = 0; i < n_rm; i++) {
        size_t mark = at(b, ".%s[%zu]", rm_field, i);
        int rc = 0;
        rms[i] = dup_lower(b, rm[i]);
        if (!modifiable_header(rms[i].p)) {
            rc = fail(b, "'%s': pseudo-headers and host may not be removed", rms[i].p);
        } else if (!valid_header_name(rm[i], false)) {
            rc = fail(b, "invalid header name '%s'", rm[i]);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    out->add = adds;
    out->n_add = (uint32_t)n_add;
    out->remove = rms;
    out->n_remove = (uint32_t)n_rm;
    return 0;
}

/* Request and response edits of one level; every level has the same four field names. */
#define EDITS(b, m, req, resp)                                                                     \
    (header_edits((b), (m)->request_headers_to_add, (m)->n_request_headers_to_add,                 \
                  "request_headers_to_add", (m)->request_headers_to_remove,                        \
                  (m)->n_request_headers_to_remove, "request_headers_to_remove", (req)) ||         \
     header_edits((b), (m)->response_headers_to_add, (m)->n_response_headers_to_add,               \
                  "response_headers_to_add", (m)->response_headers_to_remove,                      \
                  (m)->n_response_headers_to_remove, "response_headers_to_remove", (resp)))

/* ---- clusters ---- */

/* A growing endpoint list on the heap; copied into the arena once complete. */
struct ep_vec {
    struct endpoint_cfg *v; /* owned */
    size_t n;
    size_t cap;
    struct str *hosts; /* owned array (strings in the arena): STRICT_DNS names, distinct */
    uint32_t n_hosts;
    uint32_t cap_hosts;
    struct cluster_dns_ep *dns_eps; /* owned array: every STRICT_DNS lb_endpoint */
    uint32_t n_dns_eps;
    uint32_t cap_dns_eps;
};

static struct endpoint_cfg *ep_push(struct ep_vec *e)
{
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 8;
        e->v = xrealloc(e->v, e->cap * sizeof(*e->v));
    }
    struct endpoint_cfg *ep = &e->v[e->n++];
    memset(ep, 0, sizeof(*ep));
    return ep;
}

/* The lookup family of dns_lookup_family, as Envoy's: AUTO (the default) asks for IPv6 and
 * falls back to IPv4 when the name has no IPv6 address; V4_PREFERRED the other way round. */
static enum resolver_family dns_family(const PbCluster *pc)
{
    switch (pc->dns_lookup_family) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_ONLY:
        return RESOLVER_V4_ONLY;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V6_ONLY:
        return RESOLVER_V6_ONLY;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__ALL:
        return RESOLVER_ALL;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DNS_LOOKUP_FAMILY__V4_PREFERRED:
        return RESOLVER_V4_PREFERRED;
    default: /* AUTO */
        return RESOLVER_V6_PREFERRED;
    }
}

/* Remembers `host` among the cluster's DNS names (cluster_cfg.dns_hosts), once. */
static void dns_host_add(struct bctx *b, const char *host, struct str **hosts, uint32_t *n,
                         uint32_t *cap)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (strcmp((*hosts)[i].p, host) == 0) {
            return;
        }
    }
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 4;
        *hosts = xrealloc(*hosts, *cap * sizeof(**hosts));
    }
    (*hosts)[(*n)++] = dup_str(b, host);
}

static void logical_addr_destroy(void *arg)
{
    struct logical_addr *la = arg;
    pthread_mutex_destroy(&la->mu);
}

/* Adds one endpoint per address of a STRICT_DNS name (LOGICAL_DNS: exactly one, the first
 * address, or none yet; see struct logical_addr): for a CDS cluster or a bootstrap cluster's
 * later version, its last answer (the resolver threads', proxy/dns_refresh.h; none yet: no
 * endpoints from this name for now); for the bootstrap itself, resolved now (see build.h). */
static void resolve_endpoint(struct bctx *b, const PbCluster *pc, const char *host, uint16_t port,
                             uint32_t weight, struct ep_vec *eps)
{
    struct resolver_answer *ans = xcalloc(1, sizeof(*ans));
    const char *addrs[RESOLVER_ADDRS_MAX];
    size_t n = 0;
    if (b->c->dns != NULL) {
        n = b->c->dns->answer(b->c->dns->ud, pc->name, host, addrs, RESOLVER_ADDRS_MAX);
    } else {
        resolver_getaddrinfo(host, dns_family(pc), ans);
        n = ans->n;
        for (size_t i = 0; i < n; i++) {
            addrs[i] = ans->addrs[i];
        }
        if (n == 0) {
            LOG_W("cluster '%s': %s: cannot resolve '%s'%s%s; no endpoints from this name",
                  pc->name, b->fp.p, host, ans->gai_err ? ": " : "",
                  ans->gai_err ? gai_strerror(ans->gai_err) : "");
        }
    }
    struct str hostname = dup_str(b, host);
    bool logical = pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS;
    for (size_t i = 0; i < n; i++) {
        struct sock_addr sa;
        if (!parse_ip(addrs[i], port, &sa)) {
            continue;
        }
        struct endpoint_cfg *ep = ep_push(eps);
        ep->addr = sa;
        sock_addr_text(b, &ep->addr);
        ep->weight = weight;
        ep->hostname = hostname;
        if (logical) {
            break; /* its one host: the first address */
        }
    }
    if (logical) {
        /* The one host, resolved or not yet (no address: a connection to it fails until its
         * name resolves), with its current address where connections read it. */
        struct logical_addr *la = ARENA_NEW(b->a, struct logical_addr);
        pthread_mutex_init(&la->mu, NULL);
        config_on_free(b->c, logical_addr_destroy, la);
        la->addr.ss.ss_family = AF_UNSPEC;
        if (eps->n == 0) {
            struct endpoint_cfg *ep = ep_push(eps);
            ep->addr.ss.ss_family = AF_UNSPEC;
            char text[300];
            snprintf(text, sizeof(text), "%s:%u", host, port);
            ep->addr.text = dup_str(b, text);
            ep->weight = weight;
            ep->hostname = hostname;
        } else {
            la->addr = eps->v[0].addr;
            snprintf(la->text, sizeof(la->text), "%.*s", STR_FMT(la->addr.text));
            la->addr.text = (struct str){la->text, strlen(la->text)};
        }
        eps->v[eps->n - 1].logical = la;
    }
    free(ans);
}

/* Whether a cluster's endpoints are names resolved by remora (STRICT_DNS, LOGICAL_DNS). */
static bool is_dns_type(const PbCluster *pc)
{
    return pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS ||
           pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS;
}

/* A health_check_config.hostname goes into a request head as it is. */
static bool valid_hc_host(const char *h)
{
    return h == NULL || strpbrk(h, "\r\n") == NULL;
}

static int lb_endpoint(struct bctx *b, const PbCluster *pc, const PbLbEndpoint *le,
                       struct ep_vec *eps)
{
    if (le->host_identifier_case ==
        ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT_NAME) {
        return unsupported(b, "endpoint_name");
    }
    if (le->host_identifier_case !=
            ENVOY__CONFIG__ENDPOINT__V3__LB_ENDPOINT__HOST_IDENTIFIER_ENDPOINT ||
        le->endpoint == NULL) {
        return fail_at(b, "endpoint", "required");
    }
    if (le->health_status != ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__UNKNOWN &&
        le->health_status != ENVOY__CONFIG__CORE__V3__HEALTH_STATUS__HEALTHY) {
        return unsupported_value(b, "health_status",
                                 &envoy__config__core__v3__health_status__descriptor,
                                 (int)le->health_status);
    }
    if (le->load_balancing_weight != NULL && le->load_balancing_weight->value == 0) {
        return fail_at(b, "load_balancing_weight", "must be at least 1");
    }
    uint32_t weight = u32_or(le->load_balancing_weight, 1);
    const Envoy__Config__Endpoint__V3__Endpoint *e = le->endpoint;
    size_t mark = at(b, ".endpoint");
    int rc = 0;
    size_t first = eps->n;
    const Envoy__Config__Endpoint__V3__Endpoint__HealthCheckConfig *hcc = e->health_check_config;
    if (hcc != NULL && hcc->port_value > 65535) {
        rc = fail_at(b, "health_check_config.port_value", "port %u out of range (0-65535)",
                     hcc->port_value);
    } else if (hcc != NULL && !valid_hc_host(hcc->hostname)) {
        rc = fail_at(b, "health_check_config.hostname", "contains CR or LF");
    } else if (is_dns_type(pc)) {
        const PbSocketAddress *sa;
        uint16_t port;
        rc = socket_address(b, "address", e->address, ADDR_DNS, &sa, &port);
        if (rc == 0) {
            dns_host_add(b, sa->address, &eps->hosts, &eps->n_hosts, &eps->cap_hosts);
            if (eps->n_dns_eps == eps->cap_dns_eps) {
                eps->cap_dns_eps = eps->cap_dns_eps ? eps->cap_dns_eps * 2 : 4;
                eps->dns_eps = xrealloc(eps->dns_eps, eps->cap_dns_eps * sizeof(*eps->dns_eps));
            }
            eps->dns_eps[eps->n_dns_eps++] = (struct cluster_dns_ep){dup_str(b, sa->address), port};
            resolve_endpoint(b, pc, sa->address, port, weight, eps);
        }
    } else {
        struct sock_addr addr;
        rc = ip_address(b, "address", e->address, ADDR_ENDPOINT, &addr);
        if (rc == 0) {
            struct endpoint_cfg *ep = ep_push(eps);
            ep->addr = addr;
            ep->weight = weight;
        }
    }
    /* health_check_config (Envoy's): where and as whom the active checks of these endpoints go */
    for (size_t i = first; rc == 0 && hcc != NULL && i < eps->n; i++) {
        eps->v[i].hc_port = (uint16_t)hcc->port_value;
        eps->v[i].hc_host = dup_str(b, hcc->hostname != NULL ? hcc->hostname : "");
    }
    up(b, mark);
    return rc;
}

static int load_assignment(struct bctx *b, const PbCluster *pc, struct ep_vec *eps)
{
    const Envoy__Config__Endpoint__V3__ClusterLoadAssignment *la = pc->load_assignment;
    if (la == NULL) {
        return 0; /* no endpoints: allowed, requests get 503 (no healthy upstream) */
    }
    size_t mark = at(b, ".load_assignment");
    int rc = 0;
    if (!is_set_str(la->cluster_name)) {
        rc = fail_at(b, "cluster_name", "required");
    }
    if (rc == 0 && pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS) {
        /* Envoy's rule (LogicalDnsCluster): one host, so one name */
        if (la->n_endpoints != 1) {
            rc = fail_at(b, "endpoints",
                         "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a "
                         "single lb_endpoint (got %zu locality_lb_endpoints)",
                         la->n_endpoints);
        } else if (la->endpoints[0]->n_lb_endpoints != 1) {
            rc = fail_at(b, "endpoints[0].lb_endpoints",
                         "LOGICAL_DNS clusters must have a single locality_lb_endpoint and a "
                         "single lb_endpoint (got %zu lb_endpoints)",
                         la->endpoints[0]->n_lb_endpoints);
        }
    }
    for (size_t i = 0; i < la->n_endpoints && rc == 0; i++) {
        const PbLocalityLbEndpoints *lle = la->endpoints[i];
        size_t m2 = at(b, ".endpoints[%zu]", i);
        if (lle->priority > 128) {
            rc = fail_at(b, "priority", "must be at most 128");
        } else if (lle->load_balancing_weight != NULL && lle->load_balancing_weight->value == 0) {
            rc = fail_at(b, "load_balancing_weight", "must be at least 1");
        }
        /* locality and the locality weight only matter for locality-weighted balancing and
         * zone-aware routing, which are opt-in elsewhere (and not supported): accepted. */
        for (size_t k = 0; k < lle->n_lb_endpoints && rc == 0; k++) {
            size_t m3 = at(b, ".lb_endpoints[%zu]", k);
            size_t first = eps->n;
            rc = lb_endpoint(b, pc, lle->lb_endpoints[k], eps);
            for (size_t e = first; e < eps->n; e++) {
                eps->v[e].priority = lle->priority; /* health and failover: hostset.h */
            }
            up(b, m3);
        }
        up(b, m2);
    }
    up(b, mark);
    return rc;
}

/* ---- circuit breakers and upstream HTTP protocol options ---- */

#define PbThresholds Envoy__Config__Cluster__V3__CircuitBreakers__Thresholds
#define PbHttpProtocolOptions Envoy__Config__Core__V3__HttpProtocolOptions
#define PbUpstreamHttpOptions Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions
#define UPSTREAM_HTTP_OPTIONS_NAME "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
/* The extension's older name, which Envoy still accepts as the map key. */
#define UPSTREAM_HTTP_OPTIONS_OLD_NAME "envoy.upstreams.http.http_protocol_options"

/* Envoy's circuit-breaker defaults. */
#define DEFAULT_CB_MAX_CONNECTIONS 1024
#define DEFAULT_CB_MAX_PENDING 1024
#define DEFAULT_CB_MAX_REQUESTS 1024
#define DEFAULT_CB_MAX_RETRIES 3
#define DEFAULT_RETRY_BUDGET_PERCENT 20.0
#define DEFAULT_RETRY_MIN_CONCURRENCY 3

static void breaker_defaults(struct breaker_cfg *bc)
{
    *bc = (struct breaker_cfg){
        .max_connections = DEFAULT_CB_MAX_CONNECTIONS,
        .max_pending_requests = DEFAULT_CB_MAX_PENDING,
        .max_requests = DEFAULT_CB_MAX_REQUESTS,
        .max_retries = DEFAULT_CB_MAX_RETRIES,
        .budget_percent = DEFAULT_RETRY_BUDGET_PERCENT,
        .min_retry_concurrency = DEFAULT_RETRY_MIN_CONCURRENCY,
    };
}

static int threshold(struct bctx *b, const PbThresholds *t, struct breaker_cfg *bc)
{
    REJECT_IF(t->max_connection_pools != NULL, "max_connection_pools");
    bc->max_connections = u32_or(t->max_connections, DEFAULT_CB_MAX_CONNECTIONS);
    bc->max_pending_requests = u32_or(t->max_pending_requests, DEFAULT_CB_MAX_PENDING);
    bc->max_requests = u32_or(t->max_requests, DEFAULT_CB_MAX_REQUESTS);
    bc->max_retries = u32_or(t->max_retries, DEFAULT_CB_MAX_RETRIES);
    bc->track_remaining = t->track_remaining;
    if (t->retry_budget != NULL) {
        bc->has_budget = true;
        if (t->retry_budget->budget_percent != NULL) {
            double v = t->retry_budget->budget_percent->value;
            if (!(v >= 0.0 && v <= 100.0)) {
                return fail_at(b, "retry_budget.budget_percent", "must be within 0-100");
            }
            bc->budget_percent = v;
        }
        bc->min_retry_concurrency =
            u32_or(t->retry_budget->min_retry_concurrency, DEFAULT_RETRY_MIN_CONCURRENCY);
    }
    return 0;
}

/* circuit_breakers: thresholds per priority (the first entry of a priority wins, as in Envoy).
 * HIGH is accepted and shown by /clusters; no route is HIGH priority, so its limits never
 * apply. */
static int circuit_breakers(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc)
{
    breaker_defaults(&cc->breakers[0]);
    breaker_defaults(&cc->breakers[1]);
    const Envoy__Config__Cluster__V3__CircuitBreakers *cb = pc->circuit_breakers;
    if (cb == NULL) {
        return 0;
    }
    size_t mark = at(b, ".circuit_breakers");
    int rc = 0;
    bool seen[2] = {false, false};
    if (cb->n_per_host_thresholds > 0) {
        rc = unsupported(b, "per_host_thresholds");
    }
    for (size_t i = 0; i < cb->n_thresholds && rc == 0; i++) {
        const PbThresholds *t = cb->thresholds[i];
        size_t m2 = at(b, ".thresholds[%zu]", i);
        int prio = t->priority == ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH ? 1 : 0;
        if (t->priority != ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__DEFAULT &&
            t->priority != ENVOY__CONFIG__CORE__V3__ROUTING_PRIORITY__HIGH) {
            rc = fail_at(b, "priority", "unknown priority %d", (int)t->priority);
        } else if (seen[prio]) {
            LOG_W("cluster '%s': %s: a second %s threshold is ignored (the first one applies)",
                  pc->name, b->fp.p, prio ? "HIGH" : "DEFAULT");
        } else {
            seen[prio] = true;
            rc = threshold(b, t, &cc->breakers[prio]);
        }
        up(b, m2);
    }
    up(b, mark);
    return rc;
}

/* common_http_protocol_options as they apply to a cluster's upstream connections. */
static int upstream_common_options(struct bctx *b, const char *field,
                                   const PbHttpProtocolOptions *po, struct cluster_cfg *cc)
{
    if (po == NULL) {
        return 0;
    }
    size_t mark = at(b, ".%s", field);
    int rc = 0;
    if (po->max_headers_count != NULL) {
        rc = unsupported(b, "max_headers_count");
    } else if (po->max_stream_duration != NULL) {
        rc = unsupported(b, "max_stream_duration");
    } else if (
        po->headers_with_underscores_action !=
        ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__HEADERS_WITH_UNDERSCORES_ACTION__ALLOW) {
        rc = unsupported(b, "headers_with_underscores_action");
    } else if ((rc = dur_ms(b, "idle_timeout", po->idle_timeout, DEFAULT_IDLE_TIMEOUT_MS, false,
                            &cc->pool_idle_timeout_ms)) == 0) {
        rc = dur_ms(b, "max_connection_duration", po->max_connection_duration, 0, false,
                    &cc->max_connection_duration_ms);
    }
    if (rc == 0 && po->max_requests_per_connection != NULL) {
        cc->max_requests_per_connection = po->max_requests_per_connection->value;
    }
    up(b, mark);
    return rc;
}

static bool http1_options_set(const Envoy__Config__Core__V3__Http1ProtocolOptions *o)
{
    return o != NULL && (o->allow_absolute_url != NULL || o->accept_http_10 ||
                         is_set_str(o->default_host_for_http_10) || o->enable_trailers ||
                         o->allow_chunked_length);
}

/* Http1ProtocolOptions for the upstream: accepted empty (remora's HTTP/1.1 has no option). */
static int upstream_http1_options(struct bctx *b, const char *field,
                                  const Envoy__Config__Core__V3__Http1ProtocolOptions *o)
{
    if (!http1_options_set(o)) {
        return 0;
    }
    size_t mark = at(b, ".%s", field);
    static const char *const none[] = {NULL};
    const char *f = pbjson_first_set_field(&o->base, none);
    int rc = unsupported(b, f != NULL ? f : "?");
    up(b, mark);
    return rc;
}

/* A KeepaliveSettings duration: unset is 0; a set one is at least 1ms, as Envoy validates. */
static int keepalive_ms(struct bctx *b, const char *field, const PbDuration *d, uint64_t *out)
{
    if (d == NULL) {
        *out = 0;
        return 0;
    }
    if (d->seconds == 0 && d->nanos >= 0 && d->nanos < 1000000) {
        return fail_at(b, field, "must be at least 1ms");
    }
    return dur_ms(b, field, d, 0, true, out);
}

/* Http2ProtocolOptions.connection_keepalive (proxy/http/h2_keepalive.h): interval, timeout
 * (required), interval_jitter (percent, default 15) and connection_idle_interval. `o` NULL:
 * keepalive off. */
static int keepalive_settings(struct bctx *b, const Envoy__Config__Core__V3__KeepaliveSettings *o,
                              struct h2_keepalive_cfg *out)
{
    memset(out, 0, sizeof(*out));
    if (o == NULL) {
        return 0;
    }
    size_t mark = at(b, ".connection_keepalive");
    int rc = 0;
    out->jitter_percent = 15.0;
    if (o->timeout == NULL) {
        rc = fail_at(b, "timeout", "required");
    } else if ((rc = keepalive_ms(b, "timeout", o->timeout, &out->timeout_ms)) == 0 &&
               (rc = keepalive_ms(b, "interval", o->interval, &out->interval_ms)) == 0 &&
               (rc = keepalive_ms(b, "connection_idle_interval", o->connection_idle_interval,
                                  &out->idle_interval_ms)) == 0 &&
               o->interval_jitter != NULL) {
        double v = o->interval_jitter->value;
        if (!(v >= 0.0 && v <= 100.0)) {
            rc = fail_at(b, "interval_jitter.value", "must be 0-100");
        }
        out->jitter_percent = v;
    }
    up(b, mark);
    return rc;
}

/* Envoy's defaults for upstream HTTP/2 (Http2ProtocolOptions' documented defaults). */
#define UPSTREAM_H2_MAX_STREAMS 2147483647u
#define UPSTREAM_H2_WINDOW (256u << 20) /* 268435456, stream and connection */
#define UPSTREAM_H2_HPACK 4096u

/* Http2ProtocolOptions for the upstream: the settings remora sends (ranges as Envoy validates
 * them); every other field set is rejected with its path. `o` may be NULL (the defaults). */
static int upstream_http2_options(struct bctx *b, const char *field,
                                  const Envoy__Config__Core__V3__Http2ProtocolOptions *o,
                                  struct cluster_cfg *cc)
{
    cc->h2_max_concurrent_streams = UPSTREAM_H2_MAX_STREAMS;
    cc->h2_initial_stream_window = UPSTREAM_H2_WINDOW;
    cc->h2_initial_conn_window = UPSTREAM_H2_WINDOW;
    cc->h2_hpack_table_size = UPSTREAM_H2_HPACK;
    memset(&cc->h2_keepalive, 0, sizeof(cc->h2_keepalive));
    if (o == NULL) {
        return 0;
    }
    size_t mark = at(b, ".%s", field);
    static const char *const supported[] = {
        "hpack_table_size",           "max_concurrent_streams",
        "initial_stream_window_size", "initial_connection_window_size",
        "connection_keepalive",       NULL};
    const char *other = pbjson_first_set_field(&o->base, supported);
    cc->h2_max_concurrent_streams = u32_or(o->max_concurrent_streams, UPSTREAM_H2_MAX_STREAMS);
    cc->h2_initial_stream_window = u32_or(o->initial_stream_window_size, UPSTREAM_H2_WINDOW);
    cc->h2_initial_conn_window = u32_or(o->initial_connection_window_size, UPSTREAM_H2_WINDOW);
    cc->h2_hpack_table_size = u32_or(o->hpack_table_size, UPSTREAM_H2_HPACK);
    int rc = 0;
    if (other != NULL) {
        rc = unsupported(b, other);
    } else if (cc->h2_max_concurrent_streams < 1 || cc->h2_max_concurrent_streams > 2147483647u) {
        rc = fail_at(b, "max_concurrent_streams", "%u is out of range (1-2147483647)",
                     cc->h2_max_concurrent_streams);
    } else if (cc->h2_initial_stream_window < 65535 || cc->h2_initial_stream_window > 2147483647u) {
        rc = fail_at(b, "initial_stream_window_size", "%u is out of range (65535-2147483647)",
                     cc->h2_initial_stream_window);
    } else if (cc->h2_initial_conn_window < 65535 || cc->h2_initial_conn_window > 2147483647u) {
        rc = fail_at(b, "initial_connection_window_size", "%u is out of range (65535-2147483647)",
                     cc->h2_initial_conn_window);
    } else {
        rc = keepalive_settings(b, o->connection_keepalive, &cc->h2_keepalive);
    }
    up(b, mark);
    return rc;
}

/* typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]:
 * explicit_http_config (HTTP/1.1 without options, or HTTP/2), use_downstream_protocol_config,
 * and common_http_protocol_options. auto_config needs ALPN over TLS, which remora's upstreams do
 * not have yet. */
static int upstream_http_options(struct bctx *b, const PbAny *any, struct cluster_cfg *cc)
{
    ProtobufCMessage *m = NULL;
    int rc = pbjson_any_unpack(any, pbtypes_find, b->fp.p, &m, b->err);
    if (rc != 0) {
        return rc;
    }
    const PbUpstreamHttpOptions *o = (const PbUpstreamHttpOptions *)m;
    switch (o->upstream_protocol_options_case) {
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_EXPLICIT_HTTP_CONFIG: {
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__ExplicitHttpConfig *e =
            o->explicit_http_config;
        size_t mark = at(b, ".explicit_http_config");
        if (e->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP2_PROTOCOL_OPTIONS) {
            cc->protocol = UPSTREAM_PROTO_HTTP2;
            rc = upstream_http2_options(b, "http2_protocol_options", e->http2_protocol_options, cc);
        } else if (
            e->protocol_config_case ==
            ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__EXPLICIT_HTTP_CONFIG__PROTOCOL_CONFIG_HTTP_PROTOCOL_OPTIONS) {
            rc = upstream_http1_options(b, "http_protocol_options", e->http_protocol_options);
        } else {
            rc = fail(b, "one of http_protocol_options or http2_protocol_options is required");
        }
        up(b, mark);
        break;
    }
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_USE_DOWNSTREAM_PROTOCOL_CONFIG: {
        const Envoy__Extensions__Upstreams__Http__V3__HttpProtocolOptions__UseDownstreamHttpConfig
            *u = o->use_downstream_protocol_config;
        size_t mark = at(b, ".use_downstream_protocol_config");
        cc->protocol = UPSTREAM_PROTO_DOWNSTREAM;
        rc = upstream_http1_options(b, "http_protocol_options", u->http_protocol_options);
        if (rc == 0) {
            rc = upstream_http2_options(b, "http2_protocol_options", u->http2_protocol_options, cc);
        }
        up(b, mark);
        break;
    }
    case ENVOY__EXTENSIONS__UPSTREAMS__HTTP__V3__HTTP_PROTOCOL_OPTIONS__UPSTREAM_PROTOCOL_OPTIONS_AUTO_CONFIG:
        rc = unsupported(b, "auto_config");
        break;
    default:
        break;
    }
    if (rc == 0) {
        rc = upstream_common_options(b, "common_http_protocol_options",
                                     o->common_http_protocol_options, cc);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

/* The deprecated Cluster fields that chose the upstream protocol before HttpProtocolOptions:
 * http2_protocol_options (HTTP/2), http_protocol_options (HTTP/1.1, no option supported) and
 * protocol_selection (USE_DOWNSTREAM_PROTOCOL: HTTP/2 only when the request came over HTTP/2
 * and http2_protocol_options is set, as Envoy does). */
static int deprecated_protocol_fields(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc,
                                      bool typed)
{
    bool any =
        pc->http2_protocol_options != NULL || pc->http_protocol_options != NULL ||
        pc->protocol_selection !=
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_CONFIGURED_PROTOCOL;
    if (!any) {
        return 0;
    }
    if (typed) {
        /* Envoy refuses the old fields next to the typed options, too. */
        return fail_at(b,
                       pc->http2_protocol_options != NULL  ? "http2_protocol_options"
                       : pc->http_protocol_options != NULL ? "http_protocol_options"
                                                           : "protocol_selection",
                       "cannot be set together with typed_extension_protocol_options");
    }
    int rc = upstream_http1_options(b, "http_protocol_options", pc->http_protocol_options);
    if (rc == 0 && pc->http2_protocol_options != NULL) {
        cc->protocol = UPSTREAM_PROTO_HTTP2;
        rc = upstream_http2_options(b, "http2_protocol_options", pc->http2_protocol_options, cc);
    }
    if (rc == 0 &&
        pc->protocol_selection ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_PROTOCOL_SELECTION__USE_DOWNSTREAM_PROTOCOL &&
        cc->protocol == UPSTREAM_PROTO_HTTP2) {
        cc->protocol = UPSTREAM_PROTO_DOWNSTREAM;
    }
    return rc;
}

static int protocol_options(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc)
{
    cc->pool_idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    cc->max_connection_duration_ms = 0;
    cc->max_requests_per_connection = 0;
    cc->protocol = UPSTREAM_PROTO_HTTP1;
    int rc = upstream_http2_options(b, NULL, NULL, cc); /* the defaults */
    bool typed = false;
    for (size_t i = 0; i < pc->n_typed_extension_protocol_options && rc == 0; i++) {
        const Envoy__Config__Cluster__V3__Cluster__TypedExtensionProtocolOptionsEntry *e =
            pc->typed_extension_protocol_options[i];
        const char *key = e->key != NULL ? e->key : "";
        size_t mark = at(b, ".typed_extension_protocol_options[\"%s\"]", key);
        if (strcmp(key, UPSTREAM_HTTP_OPTIONS_NAME) != 0 &&
            strcmp(key, UPSTREAM_HTTP_OPTIONS_OLD_NAME) != 0) {
            rc = fail(b, "protocol options '%s' are " UNSUPPORTED, key);
        } else if (
            e->value == NULL ||
            !pbjson_any_is(
                e->value,
                &envoy__extensions__upstreams__http__v3__http_protocol_options__descriptor)) {
            rc = fail(b, "expected a typed config of type " UPSTREAM_HTTP_OPTIONS_NAME);
        } else {
            typed = true;
            rc = upstream_http_options(b, e->value, cc);
        }
        up(b, mark);
    }
    if (rc == 0 && pc->common_http_protocol_options != NULL) {
        if (typed) {
            /* Envoy refuses the deprecated field next to the typed one, too. */
            return fail_at(b, "common_http_protocol_options",
                           "cannot be set together with typed_extension_protocol_options");
        }
        rc = upstream_common_options(b, "common_http_protocol_options",
                                     pc->common_http_protocol_options, cc);
    }
    if (rc == 0) {
        rc = deprecated_protocol_fields(b, pc, cc, typed);
    }
    if (rc == 0 && pc->max_requests_per_connection != NULL) {
        /* The deprecated cluster field; Envoy allows only one of the two. */
        if (cc->max_requests_per_connection > 0) {
            return fail_at(b, "max_requests_per_connection",
                           "cannot be set together with "
                           "common_http_protocol_options.max_requests_per_connection");
        }
        cc->max_requests_per_connection = pc->max_requests_per_connection->value;
    }
    return rc;
}

/* ---- consistent-hashing load balancers (RING_HASH, MAGLEV) ---- */

#define PbRingHashLbConfig Envoy__Config__Cluster__V3__Cluster__RingHashLbConfig

/* ring_hash_lb_config / maglev_lb_config: each only with its own lb_policy, as Envoy checks. */
static int hash_lb_config(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc)
{
    cc->hash_lb_size = cc->lb == LB_MAGLEV ? LB_HASH_MAGLEV_DEFAULT : LB_HASH_RING_MIN_DEFAULT;
    cc->hash_lb_max_size = LB_HASH_RING_MAX_DEFAULT;
    int rc = 0;
    if (pc->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_RING_HASH_LB_CONFIG &&
        pc->ring_hash_lb_config != NULL) {
        const PbRingHashLbConfig *rh = pc->ring_hash_lb_config;
        size_t mark = at(b, ".ring_hash_lb_config");
        cc->hash_lb_size =
            rh->minimum_ring_size != NULL ? rh->minimum_ring_size->value : LB_HASH_RING_MIN_DEFAULT;
        cc->hash_lb_max_size =
            rh->maximum_ring_size != NULL ? rh->maximum_ring_size->value : LB_HASH_RING_MAX_DEFAULT;
        if (cc->lb != LB_RING_HASH) {
            rc = fail(b, "requires lb_policy RING_HASH");
        } else if (
            rh->hash_function !=
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__RING_HASH_LB_CONFIG__HASH_FUNCTION__XX_HASH) {
            rc = unsupported_value(
                b, "hash_function",
                &envoy__config__cluster__v3__cluster__ring_hash_lb_config__hash_function__descriptor,
                (int)rh->hash_function);
        } else if (cc->hash_lb_size > LB_HASH_RING_LIMIT) {
            rc = fail_at(b, "minimum_ring_size", "%llu is over the limit of %u",
                         (unsigned long long)cc->hash_lb_size, LB_HASH_RING_LIMIT);
        } else if (cc->hash_lb_max_size > LB_HASH_RING_LIMIT) {
            rc = fail_at(b, "maximum_ring_size", "%llu is over the limit of %u",
                         (unsigned long long)cc->hash_lb_max_size, LB_HASH_RING_LIMIT);
        } else if (cc->hash_lb_size == 0) {
            rc = fail_at(b, "minimum_ring_size", "must be at least 1");
        } else if (cc->hash_lb_size > cc->hash_lb_max_size) {
            rc = fail(b,
                      "minimum_ring_size (%llu) must not be greater than maximum_ring_size "
                      "(%llu)",
                      (unsigned long long)cc->hash_lb_size,
                      (unsigned long long)cc->hash_lb_max_size);
        }
        up(b, mark);
    } else if (pc->lb_config_case ==
                   ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_MAGLEV_LB_CONFIG &&
               pc->maglev_lb_config != NULL) {
        size_t mark = at(b, ".maglev_lb_config");
        const Google__Protobuf__UInt64Value *ts = pc->maglev_lb_config->table_size;
        cc->hash_lb_size = ts != NULL ? ts->value : LB_HASH_MAGLEV_DEFAULT;
        if (cc->lb != LB_MAGLEV) {
            rc = fail(b, "requires lb_policy MAGLEV");
        } else if (cc->hash_lb_size > LB_HASH_MAGLEV_LIMIT) {
            rc = fail_at(b, "table_size", "%llu is over the limit of %u",
                         (unsigned long long)cc->hash_lb_size, LB_HASH_MAGLEV_LIMIT);
        } else if (!lb_hash_is_prime(cc->hash_lb_size)) {
            rc = fail_at(b, "table_size", "%llu is not a prime number",
                         (unsigned long long)cc->hash_lb_size);
        }
        up(b, mark);
    }
    return rc;
}

/* The ring or table of each priority (after build_health_cluster: endpoints and priorities are
 * final). Health does not change them: a pick that lands on an endpoint the worker may not use
 * moves on (cluster.c). */
static void hash_lb_build(struct bctx *b, struct cluster_cfg *cc)
{
    if ((cc->lb != LB_RING_HASH && cc->lb != LB_MAGLEV) || cc->n_endpoints == 0) {
        return;
    }
    uint32_t n_prio = 1;
    for (uint32_t i = 0; i < cc->n_endpoints; i++) {
        if (cc->endpoints[i].priority + 1 > n_prio) {
            n_prio = cc->endpoints[i].priority + 1;
        }
    }
    const struct lb_hash **tables = ARENA_NEW_N(b->a, const struct lb_hash *, n_prio);
    uint32_t *idx = xcalloc(cc->n_endpoints, sizeof(*idx));
    for (uint32_t p = 0; p < n_prio; p++) {
        uint32_t n = 0;
        for (uint32_t i = 0; i < cc->n_endpoints; i++) {
            if (cc->endpoints[i].priority == p) {
                idx[n++] = i;
            }
        }
        if (n == 0) {
            continue;
        }
        tables[p] = cc->lb == LB_RING_HASH
                        ? lb_hash_ring_build(b->a, cc->endpoints, idx, n, cc->hash_lb_size,
                                             cc->hash_lb_max_size)
                        : lb_hash_maglev_build(b->a, cc->endpoints, idx, n, cc->hash_lb_size);
    }
    free(idx);
    cc->hash_lb = tables;
}

static int cluster_checks(struct bctx *b, const PbCluster *pc)
{
    if (!is_set_str(pc->name)) {
        return fail_at(b, "name", "required");
    }
    if (pc->cluster_discovery_type_case ==
        ENVOY__CONFIG__CLUSTER__V3__CLUSTER__CLUSTER_DISCOVERY_TYPE_CLUSTER_TYPE) {
        return unsupported(b, "cluster_type");
    }
    bool eds = pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS;
    if (pc->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STATIC &&
        pc->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS &&
        pc->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS &&
        pc->type != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST && !eds) {
        return unsupported_value(b, "type",
                                 &envoy__config__cluster__v3__cluster__discovery_type__descriptor,
                                 (int)pc->type);
    }
    if (eds && !b->cds) {
        /* the bootstrap's clusters are fixed for the life of the process (routes index their
         * workers' state); an EDS cluster is a CDS cluster */
        return fail_at(b, "type",
                       "EDS in static_resources is " UNSUPPORTED
                       " (EDS clusters can come from dynamic_resources.cds_config)");
    }
    if (!eds && pc->eds_cluster_config != NULL) {
        return fail_at(b, "eds_cluster_config", "needs type EDS");
    }
    if (eds && pc->eds_cluster_config == NULL) {
        return fail_at(b, "eds_cluster_config", "required for type EDS");
    }
    if (eds && !b->eds_endpoints && pc->load_assignment != NULL) {
        /* Envoy ignores it; remora says so rather than serve endpoints nobody sees change */
        return fail_at(b, "load_assignment",
                       "an EDS cluster takes its endpoints from eds_cluster_config, not here");
    }
    REJECT_IF(pc->n_transport_socket_matches > 0, "transport_socket_matches");
    REJECT_IF(pc->lrs_server != NULL, "lrs_server");
    return 0;
}

#define PbOriginalDstLbConfig Envoy__Config__Cluster__V3__Cluster__OriginalDstLbConfig
#define DEFAULT_OD_CLEANUP_MS 5000
#define DEFAULT_OD_HEADER "x-envoy-original-dst-host"

/* ORIGINAL_DST and what goes with it, as Envoy checks them: the CLUSTER_PROVIDED policy (only
 * there), no configured endpoints, original_dst_lb_config and cleanup_interval. Health checks
 * and outlier detection have no fixed hosts to watch here yet: refused. */
static int original_dst_cluster(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc)
{
    bool od = cc->type == CLUSTER_ORIGINAL_DST;
    bool provided =
        pc->lb_policy == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED;
    if (od != provided) {
        return fail_at(b, "lb_policy",
                       "%s is not valid for cluster type %s: ORIGINAL_DST clusters take "
                       "CLUSTER_PROVIDED, and only they do (as in Envoy)",
                       enum_name(&envoy__config__cluster__v3__cluster__lb_policy__descriptor,
                                 (int)pc->lb_policy),
                       enum_name(&envoy__config__cluster__v3__cluster__discovery_type__descriptor,
                                 (int)pc->type));
    }
    const PbOriginalDstLbConfig *lc =
        pc->lb_config_case == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_ORIGINAL_DST_LB_CONFIG
            ? pc->original_dst_lb_config
            : NULL;
    if (!od) {
        if (lc != NULL) {
            return fail_at(b, "original_dst_lb_config", "needs type ORIGINAL_DST");
        }
        if (pc->cleanup_interval != NULL) {
            return fail_at(b, "cleanup_interval", "needs type ORIGINAL_DST");
        }
        return 0;
    }
    if (pc->load_assignment != NULL && pc->load_assignment->n_endpoints > 0) {
        return fail_at(b, "load_assignment",
                       "ORIGINAL_DST clusters must have no endpoints (as in Envoy)");
    }
    REJECT_IF(pc->n_health_checks > 0, "health_checks");
    REJECT_IF(pc->outlier_detection != NULL, "outlier_detection");
    int rc = dur_ms(b, "cleanup_interval", pc->cleanup_interval, DEFAULT_OD_CLEANUP_MS, true,
                    &cc->od_cleanup_ms);
    if (rc != 0) {
        return rc;
    }
    if (lc != NULL) {
        size_t mark = at(b, ".original_dst_lb_config");
        if (lc->upstream_port_override != NULL &&
            (lc->upstream_port_override->value == 0 || lc->upstream_port_override->value > 65535)) {
            rc = fail_at(b, "upstream_port_override", "must be 1-65535, not %u",
                         lc->upstream_port_override->value);
        } else if (is_set_str(lc->http_header_name) && !lc->use_http_header) {
            rc = fail_at(b, "http_header_name", "needs use_http_header");
        } else if (is_set_str(lc->http_header_name) &&
                   !valid_header_name(lc->http_header_name, false)) {
            rc = fail_at(b, "http_header_name", "'%s' is not a header name", lc->http_header_name);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        if (lc->use_http_header) {
            cc->od_header = dup_lower(b, is_set_str(lc->http_header_name) ? lc->http_header_name
                                                                          : DEFAULT_OD_HEADER);
        }
        cc->od_port_override =
            lc->upstream_port_override != NULL ? lc->upstream_port_override->value : 0;
    }
    return 0;
}

#define DEFAULT_DNS_REFRESH_MS 5000

/* dns_refresh_rate, dns_failure_refresh_rate, respect_dns_ttl and dns_lookup_family, as Envoy
 * checks them (rates above 1 ms; the failure rate's max at least its base). They matter to
 * STRICT_DNS and LOGICAL_DNS clusters only (Envoy ignores them elsewhere), which are resolved
 * again while remora runs (proxy/dns_refresh.h). respect_dns_ttl is refused: getaddrinfo gives
 * no TTL. */
static int dns_config(struct bctx *b, const PbCluster *pc, struct cluster_cfg *cc)
{
    cc->dns_family = (uint32_t)dns_family(pc);
    REJECT_IF(pc->respect_dns_ttl, "respect_dns_ttl");
    int rc = dur_ms(b, "dns_refresh_rate", pc->dns_refresh_rate, DEFAULT_DNS_REFRESH_MS, true,
                    &cc->dns_refresh_ms);
    if (rc != 0) {
        return rc;
    }
    if (pc->dns_refresh_rate != NULL && cc->dns_refresh_ms <= 1) {
        return fail_at(b, "dns_refresh_rate", "must be greater than 1ms");
    }
    const Envoy__Config__Cluster__V3__Cluster__RefreshRate *fr = pc->dns_failure_refresh_rate;
    if (fr == NULL) {
        return 0;
    }
    size_t mark = at(b, ".dns_failure_refresh_rate");
    if (fr->base_interval == NULL) {
        rc = fail_at(b, "base_interval", "required");
    } else if ((rc = dur_ms(b, "base_interval", fr->base_interval, 0, true,
                            &cc->dns_fail_base_ms)) == 0 &&
               cc->dns_fail_base_ms <= 1) {
        rc = fail_at(b, "base_interval", "must be greater than 1ms");
    }
    if (rc == 0) {
        rc = dur_ms(b, "max_interval", fr->max_interval, cc->dns_fail_base_ms * 10, true,
                    &cc->dns_fail_max_ms);
    }
    if (rc == 0 && cc->dns_fail_max_ms < cc->dns_fail_base_ms) {
        rc = fail_at(b, "max_interval", "must be at least base_interval");
    }
    up(b, mark);
    return rc;
}

static int cluster(struct bctx *b, const PbCluster *pc, uint32_t index, struct cluster_cfg *cc)
{
    int rc = cluster_checks(b, pc);
    if (rc != 0) {
        return rc;
    }
    for (uint32_t i = 0; i < index; i++) {
        if (strcmp(b->c->clusters[i].name.p, pc->name) == 0) {
            return fail_at(b, "name", "duplicate cluster name '%s'", pc->name);
        }
    }
    cc->name = dup_str(b, pc->name);
    cc->index = index;
    cc->type = pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__STRICT_DNS
                   ? CLUSTER_STRICT_DNS
               : pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__ORIGINAL_DST
                   ? CLUSTER_ORIGINAL_DST
               : pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__EDS ? CLUSTER_EDS
               : pc->type == ENVOY__CONFIG__CLUSTER__V3__CLUSTER__DISCOVERY_TYPE__LOGICAL_DNS
                   ? CLUSTER_LOGICAL_DNS
                   : CLUSTER_STATIC;
    if (cc->type == CLUSTER_EDS) {
        const Envoy__Config__Cluster__V3__Cluster__EdsClusterConfig *ec = pc->eds_cluster_config;
        size_t mark = at(b, ".eds_cluster_config");
        if (ec->eds_config == NULL) {
            rc = fail_at(b, "eds_config", "required");
        } else {
            size_t m2 = at(b, ".eds_config");
            if (ec->eds_config->config_source_specifier_case ==
                ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
                /* over ADS: whether ads_config exists is the bootstrap's (cds.c checks) */
                cc->eds_ads = true;
                cc->eds_path = dup_str(b, "");
                cc->eds_watched_dir = cc->eds_path;
                rc = config_source_ads(ec->eds_config, b->fp.p, true,
                                       &cc->eds_initial_fetch_timeout_ms, b->err);
            } else {
                rc = config_source_file(ec->eds_config, b->fp.p, &cc->eds_path,
                                        &cc->eds_watched_dir, b->a, b->err);
            }
            up(b, m2);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        cc->eds_service_name =
            dup_str(b, is_set_str(ec->service_name) ? ec->service_name : pc->name);
    }
    if ((rc = original_dst_cluster(b, pc, cc)) != 0 || (rc = dns_config(b, pc, cc)) != 0) {
        return rc;
    }
    switch (pc->lb_policy) {
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__ROUND_ROBIN:
        cc->lb = LB_ROUND_ROBIN;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST:
        cc->lb = LB_LEAST_REQUEST;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RANDOM:
        cc->lb = LB_RANDOM;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__RING_HASH:
        cc->lb = LB_RING_HASH;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__MAGLEV:
        cc->lb = LB_MAGLEV;
        break;
    case ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__CLUSTER_PROVIDED:
        cc->lb = LB_CLUSTER_PROVIDED;
        break;
    default:
        return unsupported_value(b, "lb_policy",
                                 &envoy__config__cluster__v3__cluster__lb_policy__descriptor,
                                 (int)pc->lb_policy);
    }
    cc->lr_choice_count = DEFAULT_LR_CHOICE_COUNT;
    cc->lr_active_request_bias = DEFAULT_LR_ACTIVE_REQUEST_BIAS;
    if ((rc = hash_lb_config(b, pc, cc)) != 0) {
        return rc;
    }
    if (pc->lb_config_case ==
            ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_CONFIG_LEAST_REQUEST_LB_CONFIG &&
        pc->least_request_lb_config != NULL) {
        const Envoy__Config__Cluster__V3__Cluster__LeastRequestLbConfig *lr =
            pc->least_request_lb_config;
        size_t mark = at(b, ".least_request_lb_config");
        if (pc->lb_policy != ENVOY__CONFIG__CLUSTER__V3__CLUSTER__LB_POLICY__LEAST_REQUEST) {
            rc = fail(b, "requires lb_policy LEAST_REQUEST");
        } else if (lr->active_request_bias != NULL &&
                   !(lr->active_request_bias->default_value >= 0.0 &&
                     lr->active_request_bias->default_value <= LR_ACTIVE_REQUEST_BIAS_MAX)) {
            /* runtime_key is accepted: remora has no runtime layer, so, as in an Envoy whose
             * runtime lacks the key, default_value applies. */
            rc = fail_at(b, "active_request_bias.default_value", "must be within 0-%g",
                         LR_ACTIVE_REQUEST_BIAS_MAX);
        } else if (lr->choice_count != NULL && lr->choice_count->value < 2) {
            rc = fail_at(b, "choice_count", "must be at least 2");
        } else {
            cc->lr_choice_count = u32_or(lr->choice_count, DEFAULT_LR_CHOICE_COUNT);
            if (lr->active_request_bias != NULL) {
                cc->lr_active_request_bias = lr->active_request_bias->default_value;
            }
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    rc = dur_ms(b, "connect_timeout", pc->connect_timeout, DEFAULT_CONNECT_TIMEOUT_MS, true,
                &cc->connect_timeout_ms);
    if (rc != 0) {
        return rc;
    }
    cc->per_connection_buffer_limit =
        u32_or(pc->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    if ((rc = circuit_breakers(b, pc, cc)) != 0 || (rc = protocol_options(b, pc, cc)) != 0) {
        return rc;
    }
    if (pc->transport_socket != NULL) {
        size_t mark = at(b, ".transport_socket");
        rc = build_tls_transport_socket(b->c, b->err, b->fp.p, pc->transport_socket,
                                        BUILD_TLS_UPSTREAM, cc->protocol, &cc->tls);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }

    struct ep_vec eps = {0};
    rc = load_assignment(b, pc, &eps);
    if (rc == 0) {
        uint64_t sum = 0;
        for (size_t i = 0; i < eps.n; i++) {
            sum += eps.v[i].weight;
        }
        if (sum > UINT32_MAX) {
            rc = fail_at(b, "load_assignment", "endpoint weights add up to more than 4294967295");
        }
    }
    if (rc == 0) {
        struct endpoint_cfg *v = ARENA_NEW_N(b->a, struct endpoint_cfg, eps.n);
        if (eps.n > 0) {
            memcpy(v, eps.v, eps.n * sizeof(*v));
        }
        cc->endpoints = v;
        cc->n_endpoints = (uint32_t)eps.n;
        struct str *hosts = ARENA_NEW_N(b->a, struct str, eps.n_hosts ? eps.n_hosts : 1);
        if (eps.n_hosts > 0) {
            memcpy(hosts, eps.hosts, eps.n_hosts * sizeof(*hosts));
        }
        cc->dns_hosts = hosts;
        cc->n_dns_hosts = eps.n_hosts;
        struct cluster_dns_ep *deps =
            ARENA_NEW_N(b->a, struct cluster_dns_ep, eps.n_dns_eps ? eps.n_dns_eps : 1);
        if (eps.n_dns_eps > 0) {
            memcpy(deps, eps.dns_eps, eps.n_dns_eps * sizeof(*deps));
        }
        cc->dns_eps = deps;
        cc->n_dns_eps = eps.n_dns_eps;
        rc = build_health_cluster(b->c, b->a, b->err, b->fp.p, pc, cc);
    }
    if (rc == 0) {
        hash_lb_build(b, cc);
    }
    free(eps.v);
    free(eps.hosts);
    free(eps.dns_eps);
    return rc;
}

static int clusters(struct bctx *b, PbCluster *const *pcs, size_t n)
{
    struct cluster_cfg *ccs = ARENA_NEW_N(b->a, struct cluster_cfg, n);
    /* Published before they are complete so that duplicate-name checks can see the earlier
     * ones; n_clusters only counts finished ones. */
    b->c->clusters = ccs;
    b->c->n_clusters = 0;
    for (size_t i = 0; i < n; i++) {
        size_t mark = at(b, ".clusters[%zu]", i);
        int rc = cluster(b, pcs[i], (uint32_t)i, &ccs[i]);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        b->c->n_clusters = (uint32_t)(i + 1);
    }
    struct cluster_map *cm = ARENA_NEW(b->a, struct cluster_map);
    cluster_map_init(cm, b->a, ccs, (uint32_t)n);
    b->c->cluster_map = cm;
    return 0;
}

/* ---- access logs ---- */

/* A format dictionary (json_format, at the current path) into out->json: string values are
 * format strings (compiled here to report errors with their key's path), numbers, booleans and
 * null literal; nested objects and lists are not supported. */
static int json_format(struct bctx *b, const Google__Protobuf__Struct *st, bool typed,
                       struct access_log_cfg *out)
{
    size_t mark = at(b, ".json_format");
    size_t n = st != NULL ? st->n_fields : 0;
    struct al_json_in *v = ARENA_NEW_N(b->a, struct al_json_in, n ? n : 1);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const Google__Protobuf__Struct__FieldsEntry *fe = st->fields[i];
        const Google__Protobuf__Value *val = fe->value;
        v[i].key = dup_str(b, fe->key != NULL ? fe->key : "");
        size_t m2 = at(b, ".%s", v[i].key.p);
        int kind = val != NULL ? (int)val->kind_case : GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE;
        char num[64];
        switch (kind) {
        case GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE:
            v[i].format = dup_str(b, val->string_value);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_NUMBER_VALUE:
            if (val->number_value != val->number_value || val->number_value > 1e300 ||
                val->number_value < -1e300) {
                rc = fail(b, "not a finite number");
                break;
            }
            snprintf(num, sizeof(num), "%.17g", val->number_value);
            v[i].raw = dup_str(b, num);
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_BOOL_VALUE:
            v[i].raw = dup_str(b, val->bool_value ? "true" : "false");
            break;
        case GOOGLE__PROTOBUF__VALUE__KIND_NULL_VALUE:
        case GOOGLE__PROTOBUF__VALUE__KIND__NOT_SET:
            v[i].raw = dup_str(b, "null");
            break;
        default:
            rc = fail(b, "nested objects and lists are " UNSUPPORTED);
            break;
        }
        up(b, m2);
    }
    if (rc == 0) {
        /* compiled again by each worker; here for the errors and their paths */
        struct al_format f;
        struct err e;
        err_clear(&e);
        if (access_log_format_compile_json(&f, v, (uint32_t)n, typed, b->a, &e) != 0) {
            rc = fail(b, "%s", e.msg);
        }
    }
    if (rc == 0) {
        out->json = v;
        out->n_json = (uint32_t)n;
        out->json_typed = typed;
    }
    up(b, mark);
    return rc;
}

/* A text format the workers will compile (worker.c): checked here, so an operator remora does
 * not know is a config error at `field`, not a default format at run time. */
static int check_text_format(struct bctx *b, const char *field, struct str fmt)
{
    if (fmt.len == 0) {
        return 0;
    }
    struct arena scratch;
    arena_init(&scratch, 1024);
    struct al_format f;
    struct err e;
    err_clear(&e);
    int rc = access_log_format_compile(&f, fmt, &scratch, &e);
    arena_deinit(&scratch);
    return rc != 0 ? fail_at(b, field, "%s", e.msg) : 0;
}

static int log_format(struct bctx *b, const PbFormatString *sf, struct access_log_cfg *out)
{
    struct str *format = &out->format;
    size_t mark = at(b, ".log_format");
    int rc = 0;
    if (sf->omit_empty_values) {
        rc = unsupported(b, "omit_empty_values");
    } else if (is_set_str(sf->content_type)) {
        rc = unsupported(b, "content_type");
    } else {
        switch (sf->format_case) {
        case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT:
            *format = dup_str(b, sf->text_format);
            rc = check_text_format(b, "text_format", *format);
            break;
        case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_TEXT_FORMAT_SOURCE:
            rc = data_source(b, "text_format_source", sf->text_format_source, FORMAT_FILE_MAX,
                             format);
            if (rc == 0) {
                rc = check_text_format(b, "text_format_source", *format);
            }
            break;
        case ENVOY__CONFIG__CORE__V3__SUBSTITUTION_FORMAT_STRING__FORMAT_JSON_FORMAT:
            rc = json_format(b, sf->json_format, true, out);
            break;
        default:
            rc = fail(b, "one of text_format, text_format_source, json_format is required");
            break;
        }
    }
    up(b, mark);
    return rc;
}

static int header_matcher(struct bctx *b, const PbHeaderMatcher *h, struct header_matcher *hm);

/* Nesting of and_filter/or_filter: deeper trees are rejected (the evaluation recurses). */
#define AL_FILTER_DEPTH_MAX 16

/* A ComparisonFilter (at `field`, required) into out->op and out->value: runtime_key is
 * accepted and its default_value used (remora has no runtime layer). */
static int al_comparison(struct bctx *b, const char *field, const PbComparisonFilter *c,
                         struct al_filter *out)
{
    if (c == NULL) {
        return fail_at(b, field, "required");
    }
    switch (c->op) {
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__EQ:
        out->op = AL_CMP_EQ;
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__GE:
        out->op = AL_CMP_GE;
        break;
    case ENVOY__CONFIG__ACCESSLOG__V3__COMPARISON_FILTER__OP__LE:
        out->op = AL_CMP_LE;
        break;
    default:
        return fail_at(b, field, "op: unknown value %d", (int)c->op);
    }
    out->value = c->value != NULL ? c->value->default_value : 0;
    return 0;
}

static int al_filter(struct bctx *b, const PbAccessLogFilter *pb, struct al_filter *out, int depth);

static int al_filter_list(struct bctx *b, const char *field, PbAccessLogFilter *const *v, size_t n,
                          struct al_filter *out, int depth)
{
    size_t mark = at(b, ".%s.filters", field);
    int rc = 0;
    if (n < 2) {
        rc = fail(b, "at least 2 filters are required");
    }
    struct al_filter *sub = ARENA_NEW_N(b->a, struct al_filter, n ? n : 1);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t m2 = at(b, "[%zu]", i);
        rc = al_filter(b, v[i], &sub[i], depth + 1);
        up(b, m2);
    }
    up(b, mark);
    out->sub = sub;
    out->n_sub = (uint32_t)n;
    return rc;
}

/* An AccessLogFilter (at the current path) into `out`, its parts in the snapshot's arena. */
static int al_filter(struct bctx *b, const PbAccessLogFilter *pb, struct al_filter *out, int depth)
{
    memset(out, 0, sizeof(*out));
    if (depth > AL_FILTER_DEPTH_MAX) {
        return fail(b, "filters nested deeper than %d", AL_FILTER_DEPTH_MAX);
    }
    switch (pb->filter_specifier_case) {
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_STATUS_CODE_FILTER:
        out->kind = ALF_STATUS_CODE;
        return al_comparison(b, "status_code_filter.comparison", pb->status_code_filter->comparison,
                             out);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_DURATION_FILTER:
        out->kind = ALF_DURATION;
        return al_comparison(b, "duration_filter.comparison", pb->duration_filter->comparison, out);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_NOT_HEALTH_CHECK_FILTER:
        out->kind = ALF_NOT_HEALTH_CHECK;
        return 0;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_TRACEABLE_FILTER:
        out->kind = ALF_TRACEABLE;
        return 0;
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RUNTIME_FILTER: {
        const Envoy__Config__Accesslog__V3__RuntimeFilter *r = pb->runtime_filter;
        out->kind = ALF_RUNTIME;
        if (!is_set_str(r->runtime_key)) {
            return fail_at(b, "runtime_filter.runtime_key", "required");
        }
        out->denom = 100;
        if (r->percent_sampled != NULL) {
            out->value = r->percent_sampled->numerator;
            switch (r->percent_sampled->denominator) {
            case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__HUNDRED:
                break;
            case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__TEN_THOUSAND:
                out->denom = 10000;
                break;
            case ENVOY__TYPE__V3__FRACTIONAL_PERCENT__DENOMINATOR_TYPE__MILLION:
                out->denom = 1000000;
                break;
            default:
                return fail_at(b, "runtime_filter.percent_sampled.denominator", "unknown value %d",
                               (int)r->percent_sampled->denominator);
            }
        }
        out->independent = r->use_independent_randomness;
        return 0;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_AND_FILTER:
        out->kind = ALF_AND;
        return al_filter_list(b, "and_filter", pb->and_filter->filters, pb->and_filter->n_filters,
                              out, depth);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_OR_FILTER:
        out->kind = ALF_OR;
        return al_filter_list(b, "or_filter", pb->or_filter->filters, pb->or_filter->n_filters, out,
                              depth);
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_HEADER_FILTER: {
        out->kind = ALF_HEADER;
        if (pb->header_filter->header == NULL) {
            return fail_at(b, "header_filter.header", "required");
        }
        struct header_matcher *hm = ARENA_NEW(b->a, struct header_matcher);
        size_t mark = at(b, ".header_filter.header");
        int rc = header_matcher(b, pb->header_filter->header, hm);
        up(b, mark);
        out->header = hm;
        return rc;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_RESPONSE_FLAG_FILTER: {
        const Envoy__Config__Accesslog__V3__ResponseFlagFilter *r = pb->response_flag_filter;
        out->kind = ALF_RESPONSE_FLAG;
        for (size_t i = 0; i < r->n_flags; i++) {
            int64_t bit = access_log_flag_bit(str_from_c(r->flags[i] ? r->flags[i] : ""));
            if (bit < 0) {
                size_t mark = at(b, ".response_flag_filter.flags[%zu]", i);
                int rc = fail(b, "unknown response flag '%s'", r->flags[i]);
                up(b, mark);
                return rc;
            }
            out->mask |= (uint32_t)bit;
        }
        if (r->n_flags > 0 && out->mask == 0) {
            out->mask = 1u << 31; /* only flags remora never sets: matches nothing */
        }
        return 0;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_GRPC_STATUS_FILTER: {
        const Envoy__Config__Accesslog__V3__GrpcStatusFilter *g = pb->grpc_status_filter;
        out->kind = ALF_GRPC_STATUS;
        for (size_t i = 0; i < g->n_statuses; i++) {
            if ((int)g->statuses[i] < 0 || (int)g->statuses[i] > 16) {
                size_t mark = at(b, ".grpc_status_filter.statuses[%zu]", i);
                int rc = fail(b, "unknown value %d", (int)g->statuses[i]);
                up(b, mark);
                return rc;
            }
            out->mask |= 1u << (int)g->statuses[i];
        }
        out->exclude = g->exclude;
        return 0;
    }
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_EXTENSION_FILTER:
        return unsupported(b, "extension_filter");
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_METADATA_FILTER:
        return unsupported(b, "metadata_filter");
    case ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG_FILTER__FILTER_SPECIFIER_LOG_TYPE_FILTER:
        return unsupported(b, "log_type_filter");
    default:
        return fail(b, "one filter is required");
    }
}

/* One AccessLog entry: file, stdout or stderr, with an optional text format. */
static int access_log(struct bctx *b, const PbAccessLog *al, struct access_log_cfg *out)
{
    if (al->config_type_case !=
            ENVOY__CONFIG__ACCESSLOG__V3__ACCESS_LOG__CONFIG_TYPE_TYPED_CONFIG ||
        al->typed_config == NULL) {
        return fail_at(b, "typed_config", "required");
    }
    if (al->filter != NULL) {
        struct al_filter *f = ARENA_NEW(b->a, struct al_filter);
        size_t fm = at(b, ".filter");
        int frc = al_filter(b, al->filter, f, 0);
        up(b, fm);
        if (frc != 0) {
            return frc;
        }
        out->filter = f;
    }
    size_t mark = at(b, ".typed_config");
    ProtobufCMessage *m = NULL;
    int rc = pbjson_any_unpack(al->typed_config, pbtypes_find, b->fp.p, &m, b->err);
    if (rc != 0) {
        goto out;
    }
    if (m->descriptor ==
        &envoy__extensions__access_loggers__file__v3__file_access_log__descriptor) {
        const PbFileAccessLog *f = (const PbFileAccessLog *)m;
        if (!is_set_str(f->path)) {
            rc = fail_at(b, "path", "required");
            goto out;
        }
        out->path = dup_str(b, f->path);
        switch (f->access_log_format_case) {
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_FORMAT:
            out->format = dup_str(b, f->format);
            rc = check_text_format(b, "format", out->format);
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_JSON_FORMAT:
            rc = json_format(b, f->json_format, false, out); /* "all values are strings" */
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_TYPED_JSON_FORMAT:
            rc = unsupported(b, "typed_json_format");
            break;
        case ENVOY__EXTENSIONS__ACCESS_LOGGERS__FILE__V3__FILE_ACCESS_LOG__ACCESS_LOG_FORMAT_LOG_FORMAT:
            rc = log_format(b, f->log_format, out);
            break;
        default:
            break;
        }
    } else if (m->descriptor ==
               &envoy__extensions__access_loggers__stream__v3__stdout_access_log__descriptor) {
        const PbStdoutAccessLog *s = (const PbStdoutAccessLog *)m;
        out->path = dup_str(b, "/dev/stdout");
        if (s->log_format != NULL) {
            rc = log_format(b, s->log_format, out);
        }
    } else if (m->descriptor ==
               &envoy__extensions__access_loggers__stream__v3__stderr_access_log__descriptor) {
        const PbStderrAccessLog *s = (const PbStderrAccessLog *)m;
        out->path = dup_str(b, "/dev/stderr");
        if (s->log_format != NULL) {
            rc = log_format(b, s->log_format, out);
        }
    } else {
        rc = fail(b, "access logger %s is " UNSUPPORTED, m->descriptor->name);
    }
out:
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    up(b, mark);
    return rc;
}

static int access_logs(struct bctx *b, PbAccessLog *const *als, size_t n,
                       const struct access_log_cfg **out, uint32_t *n_out)
{
    struct access_log_cfg *v = ARENA_NEW_N(b->a, struct access_log_cfg, n);
    for (size_t i = 0; i < n; i++) {
        size_t mark = at(b, ".access_log[%zu]", i);
        int rc = access_log(b, als[i], &v[i]);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = v;
    *n_out = (uint32_t)n;
    return 0;
}

/* ---- routes ---- */

/* A RegexMatcher under `field`, compiled (PCRE2 under limits, proxy/http/regex.h) and owned by
 * the snapshot. `flags`: REGEX_FULL for matchers (RE2::FullMatch), 0 for rewrites. */
static int safe_regex(struct bctx *b, const char *field, const PbRegexMatcher *rm, unsigned flags,
                      const struct regex **out)
{
    if (rm == NULL) {
        return fail_at(b, field, "required");
    }
    size_t mark = at(b, ".%s", field);
    int rc = 0;
    if (rm->engine_type_case == ENVOY__TYPE__MATCHER__V3__REGEX_MATCHER__ENGINE_TYPE_GOOGLE_RE2 &&
        rm->google_re2 != NULL && rm->google_re2->max_program_size != NULL) {
        /* RE2's program size has no PCRE2 counterpart; the match limit is remora's guard. */
        rc = unsupported(b, "google_re2.max_program_size");
    } else if (!is_set_str(rm->regex)) {
        rc = fail_at(b, "regex", "must not be empty");
    } else {
        char msg[ERR_MSG_MAX / 2];
        struct regex *re = regex_new(rm->regex, flags, msg, sizeof(msg));
        if (re == NULL) {
            rc = fail_at(b, "regex", "%s", msg);
        } else {
            config_on_free(b->c, regex_free, re);
            *out = re;
        }
    }
    up(b, mark);
    return rc;
}

/* A StringMatcher at the current path: the value is required but for exact (Envoy's rules);
 * safe_regex refuses ignore_case (as Envoy). */
static int string_match(struct bctx *b, const PbStringMatcher *sm, struct str_match *out)
{
    int rc = 0;
    const char *v = NULL;
    const char *field = NULL;
    switch (sm->match_pattern_case) {
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_EXACT:
        out->kind = SM_EXACT;
        v = sm->exact;
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_PREFIX:
        out->kind = SM_PREFIX;
        v = sm->prefix;
        field = "prefix";
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SUFFIX:
        out->kind = SM_SUFFIX;
        v = sm->suffix;
        field = "suffix";
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_CONTAINS:
        out->kind = SM_CONTAINS;
        v = sm->contains;
        field = "contains";
        break;
    case ENVOY__TYPE__MATCHER__V3__STRING_MATCHER__MATCH_PATTERN_SAFE_REGEX:
        out->kind = SM_REGEX;
        if (sm->ignore_case) {
            rc = fail_at(b, "ignore_case", "has no effect for safe_regex"); /* Envoy refuses it */
        } else {
            rc = safe_regex(b, "safe_regex", sm->safe_regex, REGEX_FULL, &out->regex);
            v = rc == 0 ? sm->safe_regex->regex : NULL;
        }
        break;
    default:
        rc = fail(b, "one of exact, prefix, suffix, safe_regex, contains is required");
        break;
    }
    if (rc == 0 && field != NULL && !is_set_str(v)) {
        rc = fail_at(b, field, "must not be empty");
    }
    if (rc == 0) {
        out->value = dup_str(b, v);
        out->ignore_case = sm->ignore_case;
    }
    return rc;
}

/* A header matcher's string_match. */
static int string_matcher(struct bctx *b, const PbStringMatcher *sm, struct header_matcher *hm)
{
    static const enum header_match_kind kinds[] = {
        [SM_EXACT] = HM_EXACT,       [SM_PREFIX] = HM_PREFIX, [SM_SUFFIX] = HM_SUFFIX,
        [SM_CONTAINS] = HM_CONTAINS, [SM_REGEX] = HM_REGEX,
    };
    size_t mark = at(b, ".string_match");
    struct str_match m = {0};
    int rc = string_match(b, sm, &m);
    if (rc == 0) {
        hm->kind = kinds[m.kind];
        hm->value = m.value;
        hm->ignore_case = m.ignore_case;
        hm->regex = m.regex;
    }
    up(b, mark);
    return rc;
}

static int header_matcher(struct bctx *b, const PbHeaderMatcher *h, struct header_matcher *hm)
{
    if (!is_set_str(h->name)) {
        return fail_at(b, "name", "required");
    }
    if (!valid_header_name(h->name, true)) {
        return fail_at(b, "name", "invalid header name '%s'", h->name);
    }
    hm->name = dup_lower(b, h->name);
    hm->invert = h->invert_match;
    const char *v = NULL;
    const char *field = NULL;
    switch (h->header_match_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER__NOT_SET:
        /* Envoy: no specifier means "the header is present". */
        hm->kind = HM_PRESENT;
        hm->present_value = true;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PRESENT_MATCH:
        hm->kind = HM_PRESENT;
        hm->present_value = h->present_match;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_EXACT_MATCH:
        hm->kind = HM_EXACT;
        v = h->exact_match;
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_PREFIX_MATCH:
        hm->kind = HM_PREFIX;
        v = h->prefix_match;
        field = "prefix_match";
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SUFFIX_MATCH:
        hm->kind = HM_SUFFIX;
        v = h->suffix_match;
        field = "suffix_match";
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_CONTAINS_MATCH:
        hm->kind = HM_CONTAINS;
        v = h->contains_match;
        field = "contains_match";
        break;
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_STRING_MATCH:
        return string_matcher(b, h->string_match, hm);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_SAFE_REGEX_MATCH:
        hm->kind = HM_REGEX;
        return safe_regex(b, "safe_regex_match", h->safe_regex_match, REGEX_FULL, &hm->regex);
    case ENVOY__CONFIG__ROUTE__V3__HEADER_MATCHER__HEADER_MATCH_SPECIFIER_RANGE_MATCH:
        /* [start, end); an empty or inverted range matches nothing (Envoy does not check) */
        hm->kind = HM_RANGE;
        if (h->range_match == NULL) {
            return fail_at(b, "range_match", "required");
        }
        hm->range_start = h->range_match->start;
        hm->range_end = h->range_match->end;
        return 0;
    default:
        return fail(b, "unknown header match specifier");
    }
    if (field != NULL && !is_set_str(v)) {
        return fail_at(b, field, "must not be empty");
    }
    hm->value = dup_str(b, v);
    return 0;
}

/* RouteMatch.query_parameters: matched against the raw (not percent-decoded) query string,
 * first value of a name, as Envoy does. */
static int query_matchers(struct bctx *b, const PbRouteMatch *m, struct route_cfg *r)
{
    struct header_matcher *qs = ARENA_NEW_N(b->a, struct header_matcher, m->n_query_parameters);
    int rc = 0;
    for (size_t i = 0; i < m->n_query_parameters && rc == 0; i++) {
        const PbQueryParameterMatcher *q = m->query_parameters[i];
        size_t mark = at(b, ".query_parameters[%zu]", i);
        qs[i].name = dup_str(b, q->name);
        if (!is_set_str(q->name)) {
            rc = fail_at(b, "name", "required");
        } else if (
            q->query_parameter_match_specifier_case ==
            ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_STRING_MATCH) {
            rc = string_matcher(b, q->string_match, &qs[i]);
        } else {
            /* present_match, or no specifier: "the parameter is present" */
            qs[i].kind = HM_PRESENT;
            qs[i].present_value =
                q->query_parameter_match_specifier_case !=
                    ENVOY__CONFIG__ROUTE__V3__QUERY_PARAMETER_MATCHER__QUERY_PARAMETER_MATCH_SPECIFIER_PRESENT_MATCH ||
                q->present_match;
        }
        up(b, mark);
    }
    r->query = qs;
    r->n_query = (uint32_t)m->n_query_parameters;
    return rc;
}

static int route_match(struct bctx *b, const PbRouteMatch *m, struct route_cfg *rc_out)
{
    if (m == NULL) {
        return fail_at(b, "match", "required");
    }
    size_t mark = at(b, ".match");
    int rc = 0;
    switch (m->path_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PREFIX:
        rc_out->match_kind = RM_PREFIX;
        rc_out->match = dup_str(b, m->prefix);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH:
        rc_out->match_kind = RM_PATH;
        rc_out->match = dup_str(b, m->path);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_SAFE_REGEX:
        rc_out->match_kind = RM_REGEX;
        rc = safe_regex(b, "safe_regex", m->safe_regex, REGEX_FULL, &rc_out->path_regex);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_CONNECT_MATCHER:
        rc = unsupported(b, "connect_matcher");
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_MATCH__PATH_SPECIFIER_PATH_SEPARATED_PREFIX:
        rc = unsupported(b, "path_separated_prefix");
        break;
    default:
        rc = fail(b, "one of prefix, path, safe_regex is required");
        break;
    }
    if (rc == 0) {
        rc = query_matchers(b, m, rc_out);
    }
    rc_out->match_grpc = m->grpc != NULL;
    if (rc == 0) {
        rc_out->case_sensitive = bool_or(m->case_sensitive, true);
        struct header_matcher *hms = ARENA_NEW_N(b->a, struct header_matcher, m->n_headers);
        for (size_t i = 0; i < m->n_headers && rc == 0; i++) {
            size_t m2 = at(b, ".headers[%zu]", i);
            rc = header_matcher(b, m->headers[i], &hms[i]);
            up(b, m2);
        }
        rc_out->headers = hms;
        rc_out->n_headers = (uint32_t)m->n_headers;
    }
    up(b, mark);
    return rc;
}

/* ---- retry policy ---- */

#define PbRetryPolicy Envoy__Config__Route__V3__RetryPolicy
#define PbRetryHostPredicate Envoy__Config__Route__V3__RetryPolicy__RetryHostPredicate
#define PREVIOUS_HOSTS_NAME "envoy.retry_host_predicates.previous_hosts"
#define DEFAULT_RETRY_BACKOFF_BASE_MS 25
#define DEFAULT_NUM_RETRIES 1

static int retry_host_predicates(struct bctx *b, const PbRetryPolicy *rp, struct retry_policy *p)
{
    for (size_t i = 0; i < rp->n_retry_host_predicate; i++) {
        const PbRetryHostPredicate *hp = rp->retry_host_predicate[i];
        size_t mark = at(b, ".retry_host_predicate[%zu]", i);
        int rc = 0;
        bool typed =
            hp->config_type_case ==
                ENVOY__CONFIG__ROUTE__V3__RETRY_POLICY__RETRY_HOST_PREDICATE__CONFIG_TYPE_TYPED_CONFIG &&
            hp->typed_config != NULL;
        const ProtobufCMessageDescriptor *ph =
            &envoy__extensions__retry__host__previous_hosts__v3__previous_hosts_predicate__descriptor;
        if (typed ? !pbjson_any_is(hp->typed_config, ph)
                  : (hp->name == NULL || strcmp(hp->name, PREVIOUS_HOSTS_NAME) != 0)) {
            rc = fail(b,
                      "retry host predicate '%s' is " UNSUPPORTED " (only " PREVIOUS_HOSTS_NAME ")",
                      hp->name != NULL ? hp->name : "");
        } else {
            p->previous_hosts = true;
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* A RetryPolicy (route or virtual host) into the snapshot. */
static int retry_policy(struct bctx *b, const PbRetryPolicy *rp, const struct retry_policy **out)
{
    size_t mark = at(b, ".retry_policy");
    struct retry_policy *p = ARENA_NEW(b->a, struct retry_policy);
    struct str bad = STR_NULL;
    int rc = retry_on_parse(str_from_c(rp->retry_on), true, &p->retry_on, &bad);
    if (rc == -ENOTSUP) {
        rc = fail_at(b, "retry_on", "'%.*s' is " UNSUPPORTED, STR_FMT(bad));
    } else if (rc != 0) {
        rc = fail_at(b, "retry_on", "unknown retry condition '%.*s'", STR_FMT(bad));
    } else if (rp->n_retriable_headers > 0) {
        rc = unsupported(b, "retriable_headers");
    } else if (rp->n_retriable_request_headers > 0) {
        rc = unsupported(b, "retriable_request_headers");
    } else if (rp->host_selection_retry_max_attempts < 0) {
        rc = fail_at(b, "host_selection_retry_max_attempts", "must not be negative");
    }
    if (rc == 0) {
        rc = dur_ms(b, "per_try_timeout", rp->per_try_timeout, 0, false, &p->per_try_timeout_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "per_try_idle_timeout", rp->per_try_idle_timeout, 0, false,
                    &p->per_try_idle_timeout_ms);
    }
    if (rc != 0) {
        goto out;
    }
    p->num_retries = u32_or(rp->num_retries, DEFAULT_NUM_RETRIES);
    int64_t hs = rp->host_selection_retry_max_attempts;
    p->host_selection_max_attempts = hs == 0 ? 1 : hs > UINT32_MAX ? UINT32_MAX : (uint32_t)hs;
    uint32_t *codes = ARENA_NEW_N(b->a, uint32_t, rp->n_retriable_status_codes);
    for (size_t i = 0; i < rp->n_retriable_status_codes; i++) {
        if (rp->retriable_status_codes[i] < 100 || rp->retriable_status_codes[i] > 599) {
            rc = fail_at(b, "retriable_status_codes", "%u is not an HTTP status (100-599)",
                         rp->retriable_status_codes[i]);
            goto out;
        }
        codes[i] = rp->retriable_status_codes[i];
    }
    p->retriable_status_codes = codes;
    p->n_retriable_status_codes = (uint32_t)rp->n_retriable_status_codes;
    p->backoff_base_ms = DEFAULT_RETRY_BACKOFF_BASE_MS;
    p->backoff_max_ms = 0;
    if (rp->retry_back_off != NULL) {
        size_t m2 = at(b, ".retry_back_off");
        if (rp->retry_back_off->base_interval == NULL) {
            rc = fail_at(b, "base_interval", "required");
        } else {
            rc = dur_ms(b, "base_interval", rp->retry_back_off->base_interval, 0, true,
                        &p->backoff_base_ms);
        }
        if (rc == 0 && rp->retry_back_off->max_interval != NULL) {
            rc = dur_ms(b, "max_interval", rp->retry_back_off->max_interval, 0, true,
                        &p->backoff_max_ms);
            if (rc == 0 && p->backoff_max_ms < p->backoff_base_ms) {
                rc = fail_at(b, "max_interval", "must be at least base_interval");
            }
        }
        up(b, m2);
        if (rc != 0) {
            goto out;
        }
    }
    if (p->backoff_max_ms == 0) {
        p->backoff_max_ms = 10 * p->backoff_base_ms;
    }
    rc = retry_host_predicates(b, rp, p);
    *out = p;
out:
    up(b, mark);
    return rc;
}

/* ---- cluster choice, hashing and rewriting on a route (weighted_clusters, hash_policy,
 * regex_rewrite) ---- */

static int weighted_clusters(struct bctx *b, const PbWeightedCluster *wc, struct route_cfg *r)
{
    size_t mark = at(b, ".weighted_clusters");
    int rc = 0;
    /* runtime_key_prefix is accepted: remora has no runtime layer, and an Envoy whose runtime
     * lacks the keys uses the configured weights too. */
    if (wc->n_clusters == 0) {
        rc = fail_at(b, "clusters", "at least one cluster is required");
        goto out;
    }
    struct weighted_cluster *ws = ARENA_NEW_N(b->a, struct weighted_cluster, wc->n_clusters);
    uint64_t sum = 0;
    for (size_t i = 0; i < wc->n_clusters && rc == 0; i++) {
        const PbClusterWeight *cw = wc->clusters[i];
        size_t m2 = at(b, ".clusters[%zu]", i);
        if (!is_set_str(cw->name)) {
            rc = fail_at(b, "name", "required");
        } else if ((ws[i].cluster = config_find_cluster(b->c, str_from_c(cw->name))) == NULL &&
                   !b->missing_clusters_ok) {
            rc = fail_at(b, "name", "unknown cluster '%s'", cw->name);
        } else if (EDITS(b, cw, &ws[i].request_edits, &ws[i].response_edits)) {
            rc = -EINVAL;
        } else {
            ws[i].weight = u32_or(cw->weight, 0);
            sum += ws[i].weight;
            ws[i].cum_weight = sum;
        }
        up(b, m2);
    }
    if (rc != 0) {
        goto out;
    }
    if (wc->total_weight != NULL && wc->total_weight->value != sum) {
        /* total_weight is deprecated, but when it is set Envoy still requires the sum */
        rc = fail_at(b, "total_weight", "the cluster weights add up to %llu, not %u",
                     (unsigned long long)sum, wc->total_weight->value);
    } else if (sum == 0) {
        rc = fail_at(b, "clusters", "the weights add up to 0: at least one must be positive");
    } else if (sum > UINT32_MAX) {
        rc = fail_at(b, "clusters", "the weights add up to more than 4294967295");
    }
    r->weighted = ws;
    r->n_weighted = (uint32_t)wc->n_clusters;
    r->total_weight = sum;
out:
    up(b, mark);
    return rc;
}

static int hash_policy(struct bctx *b, const PbHashPolicy *hp, struct hash_policy *out, bool *used)
{
    *used = true;
    out->terminal = hp->terminal;
    switch (hp->policy_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_HEADER:
        out->kind = HP_HEADER;
        out->name = dup_lower(b, hp->header->header_name);
        if (!is_set_str(hp->header->header_name)) {
            return fail_at(b, "header.header_name", "required");
        }
        if (!valid_header_name(hp->header->header_name, true)) {
            return fail_at(b, "header.header_name", "invalid header name '%s'",
                           hp->header->header_name);
        }
        REJECT_IF(hp->header->regex_rewrite != NULL, "header.regex_rewrite");
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_COOKIE:
        out->kind = HP_COOKIE;
        out->name = dup_str(b, hp->cookie->name);
        if (!is_set_str(hp->cookie->name)) {
            return fail_at(b, "cookie.name", "required");
        }
        /* ttl asks Envoy to generate the cookie when it is absent: not done here */
        REJECT_IF(hp->cookie->ttl != NULL, "cookie.ttl");
        REJECT_IF(is_set_str(hp->cookie->path), "cookie.path");
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_CONNECTION_PROPERTIES:
        out->kind = HP_SOURCE_IP;
        /* source_ip false hashes nothing: Envoy adds no policy for it */
        *used = hp->connection_properties->source_ip;
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_QUERY_PARAMETER:
        out->kind = HP_QUERY;
        out->name = dup_str(b, hp->query_parameter->name);
        if (!is_set_str(hp->query_parameter->name)) {
            return fail_at(b, "query_parameter.name", "required");
        }
        return 0;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HASH_POLICY__POLICY_SPECIFIER_FILTER_STATE:
        return unsupported(b, "filter_state");
    default:
        return fail(b, "one of header, cookie, connection_properties, query_parameter is "
                       "required");
    }
}

static int hash_policies(struct bctx *b, const PbRouteAction *ra, struct route_cfg *r)
{
    struct hash_policy *hps = ARENA_NEW_N(b->a, struct hash_policy, ra->n_hash_policy);
    uint32_t n = 0;
    for (size_t i = 0; i < ra->n_hash_policy; i++) {
        size_t mark = at(b, ".hash_policy[%zu]", i);
        bool used = false;
        int rc = hash_policy(b, ra->hash_policy[i], &hps[n], &used);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        n += used;
    }
    r->hash_policies = hps;
    r->n_hash_policies = n;
    return 0;
}

/* regex_rewrite: applied to the path without its query string (stream.c). */
static int regex_rewrite(struct bctx *b, const PbRouteAction *ra, struct route_cfg *r)
{
    if (is_set_str(ra->prefix_rewrite)) {
        return fail(b, "only one of prefix_rewrite, regex_rewrite may be set");
    }
    size_t mark = at(b, ".regex_rewrite");
    int rc = safe_regex(b, "pattern", ra->regex_rewrite->pattern, 0, &r->regex_rewrite);
    if (rc == 0) {
        char msg[ERR_MSG_MAX / 2];
        r->regex_substitution = dup_str(b, ra->regex_rewrite->substitution);
        if (regex_check_rewrite(r->regex_rewrite, r->regex_substitution, msg, sizeof(msg)) != 0) {
            rc = fail_at(b, "substitution", "%s", msg);
        } else if (!valid_header_value(r->regex_substitution.p, r->regex_substitution.len)) {
            rc = fail_at(b, "substitution", "contains CR or LF");
        }
    }
    up(b, mark);
    return rc;
}

/* max_stream_duration and the deprecated max_grpc_timeout / grpc_timeout_offset (config.h's
 * route_cfg says how they apply; proxy/http/stream.c applies them). */
static int route_grpc_timeouts(struct bctx *b, const PbRouteAction *ra, struct route_cfg *r)
{
    int rc = 0;
    const Envoy__Config__Route__V3__RouteAction__MaxStreamDuration *msd = ra->max_stream_duration;
    if (msd != NULL) {
        size_t mark = at(b, ".max_stream_duration");
        r->has_max_stream_duration = true;
        r->has_msd_duration = msd->max_stream_duration != NULL;
        r->has_grpc_header_max = msd->grpc_timeout_header_max != NULL;
        rc = dur_ms(b, "max_stream_duration", msd->max_stream_duration, 0, false,
                    &r->msd_duration_ms);
        if (rc == 0) {
            rc = dur_ms(b, "grpc_timeout_header_max", msd->grpc_timeout_header_max, 0, false,
                        &r->grpc_header_max_ms);
        }
        if (rc == 0) {
            rc = dur_ms(b, "grpc_timeout_header_offset", msd->grpc_timeout_header_offset, 0, false,
                        &r->grpc_header_offset_ms);
        }
        up(b, mark);
    }
    if (rc == 0 && ra->max_grpc_timeout != NULL) {
        r->has_max_grpc_timeout = true;
        rc = dur_ms(b, "max_grpc_timeout", ra->max_grpc_timeout, 0, false, &r->max_grpc_timeout_ms);
    }
    if (rc == 0) {
        rc = dur_ms(b, "grpc_timeout_offset", ra->grpc_timeout_offset, 0, false,
                    &r->grpc_timeout_offset_ms);
    }
    return rc;
}

static int route_action(struct bctx *b, const PbRouteAction *ra, struct route_cfg *r)
{
    size_t mark = at(b, ".route");
    int rc = 0;
    switch (ra->cluster_specifier_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER:
        if (!is_set_str(ra->cluster)) {
            rc = fail_at(b, "cluster", "must not be empty");
            break;
        }
        r->cluster = config_find_cluster(b->c, str_from_c(ra->cluster));
        if (r->cluster == NULL && !b->missing_clusters_ok) {
            rc = fail_at(b, "cluster", "unknown cluster '%s'", ra->cluster);
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_CLUSTER_HEADER:
        r->cluster_kind = RCK_HEADER;
        r->cluster_header = dup_lower(b, ra->cluster_header);
        r->clusters = b->c->cluster_map;
        if (!is_set_str(ra->cluster_header)) {
            rc = fail_at(b, "cluster_header", "must not be empty");
        } else if (!valid_header_name(ra->cluster_header, true)) {
            rc = fail_at(b, "cluster_header", "invalid header name '%s'", ra->cluster_header);
        }
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS:
        r->cluster_kind = RCK_WEIGHTED;
        rc = weighted_clusters(b, ra->weighted_clusters, r);
        break;
    default:
        rc = fail_at(b, "cluster", "required");
        break;
    }
    if (rc != 0) {
        goto out;
    }
    r->action = RA_CLUSTER;
    r->cluster_not_found_status =
        ra->cluster_not_found_response_code ==
                ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__CLUSTER_NOT_FOUND_RESPONSE_CODE__NOT_FOUND
            ? 404
            : 503;
    if ((rc = hash_policies(b, ra, r)) != 0 ||
        (ra->regex_rewrite != NULL && (rc = regex_rewrite(b, ra, r)) != 0)) {
        goto out;
    }
    if (ra->host_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_AUTO_HOST_REWRITE) {
        rc = unsupported(b, "auto_host_rewrite");
    } else if (ra->host_rewrite_specifier_case ==
               ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_HEADER) {
        rc = unsupported(b, "host_rewrite_header");
    } else if (ra->retry_policy != NULL) {
        rc = retry_policy(b, ra->retry_policy, &r->retry);
    }
    if (rc != 0) {
        goto out;
    }
    /* Envoy treats an empty prefix_rewrite as unset. */
    r->has_prefix_rewrite = is_set_str(ra->prefix_rewrite);
    r->prefix_rewrite = dup_str(b, ra->prefix_rewrite);
    if (ra->host_rewrite_specifier_case ==
        ENVOY__CONFIG__ROUTE__V3__ROUTE_ACTION__HOST_REWRITE_SPECIFIER_HOST_REWRITE_LITERAL) {
        if (!valid_header_value(ra->host_rewrite_literal, strlen(ra->host_rewrite_literal))) {
            rc = fail_at(b, "host_rewrite_literal", "contains CR or LF");
            goto out;
        }
        r->host_rewrite = dup_str(b, ra->host_rewrite_literal);
    }
    rc = dur_ms(b, "timeout", ra->timeout, DEFAULT_ROUTE_TIMEOUT_MS, false, &r->timeout_ms);
    r->timeout_text = arena_u64(b->a, r->timeout_ms);
    if (rc == 0 && ra->idle_timeout != NULL) {
        r->has_idle_timeout = true;
        rc = dur_ms(b, "idle_timeout", ra->idle_timeout, 0, false, &r->idle_timeout_ms);
    }
    if (rc == 0) {
        rc = route_grpc_timeouts(b, ra, r);
    }
    if (rc == 0 && ra->cors != NULL) {
        size_t cm = at(b, ".cors");
        rc = cors_route_policy_new(b->c, b->fp.p, ra->cors, &r->cors_policy, b->err);
        up(b, cm);
    }
out:
    up(b, mark);
    return rc;
}

static int direct_response(struct bctx *b, const PbDirectResponse *dr, uint32_t body_max,
                           struct route_cfg *r)
{
    size_t mark = at(b, ".direct_response");
    int rc = 0;
    if (dr->status < 100 || dr->status > 599) {
        rc = fail_at(b, "status", "%u is not an HTTP status (100-599)", dr->status);
    } else if (dr->body != NULL) {
        rc = data_source(b, "body", dr->body, body_max, &r->direct_body);
    }
    r->action = RA_DIRECT_RESPONSE;
    r->direct_status = dr->status;
    up(b, mark);
    return rc;
}

/* typed_per_filter_config of a Route or VirtualHost (filter_build.c does the work). */
static int per_filter_configs(struct bctx *b, ProtobufCMessage *const *entries, size_t n,
                              const void *const **out)
{
    size_t mark = at(b, ".typed_per_filter_config");
    int rc = filter_build_per_filter_configs(b->c, b->fp.p, entries, n, b->hcm,
                                             b->hcm != NULL ? b->hcm->stat_prefix : STR_NULL, out,
                                             b->err);
    up(b, mark);
    return rc;
}

static int route(struct bctx *b, const PbRoute *pr, uint32_t body_max, struct route_cfg *r)
{
    int rc = route_match(b, pr->match, r);
    if (rc != 0) {
        return rc;
    }
    switch (pr->action_case) {
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_ROUTE:
        rc = route_action(b, pr->route, r);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_DIRECT_RESPONSE:
        rc = direct_response(b, pr->direct_response, body_max, r);
        break;
    case ENVOY__CONFIG__ROUTE__V3__ROUTE__ACTION_REDIRECT:
        rc = unsupported(b, "redirect");
        break;
    default:
        rc = fail(b, "one of route, direct_response is required");
        break;
    }
    if (rc != 0) {
        return rc;
    }
    if ((rc = per_filter_configs(b, (ProtobufCMessage *const *)pr->typed_per_filter_config,
                                 pr->n_typed_per_filter_config, &r->filter_cfgs)) != 0) {
        return rc;
    }
    r->name = dup_str(b, pr->name);
    r->per_request_buffer_limit = u32_or(pr->per_request_buffer_limit_bytes, UINT32_MAX);
    return EDITS(b, pr, &r->request_edits, &r->response_edits) ? -EINVAL : 0;
}

/* A domain seen in a route configuration, for the duplicate check. */
struct seen_domain {
    const char *domain; /* lower case, as written (with its '*') */
    const char *vhost;
};

/* Sorts a domain into its virtual host's exact / suffix / prefix / wildcard lists. Envoy's
 * forms: "*", "exact.com", "*.suffix.com" or "*suffix", "prefix.*" or "prefix*". */
static int domain(struct bctx *b, const char *d, struct vhost_cfg *vh, struct str *exact,
                  struct str *suffixes, struct str *prefixes)
{
    size_t len = strlen(d);
    if (len == 0) {
        return fail(b, "empty domain");
    }
    const char *star = strchr(d, '*');
    if (star == NULL) {
        exact[vh->n_exact++] = dup_lower(b, d);
        return 0;
    }
    if (len == 1) {
        vh->is_wildcard = true;
        return 0;
    }
    if (strchr(star + 1, '*') == NULL) {
        if (star == d) {
            suffixes[vh->n_suffixes++] = dup_lower(b, d + 1);
            return 0;
        }
        if (star == d + len - 1) {
            struct str p = dup_lower(b, d);
            p.len--;
            ((char *)p.p)[p.len] = '\0';
            prefixes[vh->n_prefixes++] = p;
            return 0;
        }
    }
    return fail(b,
                "invalid domain '%s': a wildcard is allowed only as the whole domain, "
                "at its start or at its end",
                d);
}

static int vhost(struct bctx *b, const PbVirtualHost *pv, uint32_t body_max,
                 struct seen_domain *seen, size_t *n_seen, struct vhost_cfg *vh)
{
    if (!is_set_str(pv->name)) {
        return fail_at(b, "name", "required");
    }
    if (pv->n_domains == 0) {
        return fail_at(b, "domains", "at least one domain is required");
    }
    REJECT_IF(pv->require_tls != ENVOY__CONFIG__ROUTE__V3__VIRTUAL_HOST__TLS_REQUIREMENT_TYPE__NONE,
              "require_tls");
    if (pv->cors != NULL) {
        size_t cm = at(b, ".cors");
        int crc = cors_route_policy_new(b->c, b->fp.p, pv->cors, &vh->cors_policy, b->err);
        up(b, cm);
        if (crc != 0) {
            return crc;
        }
    }
    if (per_filter_configs(b, (ProtobufCMessage *const *)pv->typed_per_filter_config,
                           pv->n_typed_per_filter_config, &vh->filter_cfgs) != 0) {
        return -EINVAL;
    }
    vh->name = dup_str(b, pv->name);
    if (pv->retry_policy != NULL) {
        int rc = retry_policy(b, pv->retry_policy, &vh->retry);
        if (rc != 0) {
            return rc;
        }
    }
    vh->per_request_buffer_limit = u32_or(pv->per_request_buffer_limit_bytes, UINT32_MAX);
    vh->include_request_attempt_count = pv->include_request_attempt_count;
    vh->include_attempt_count_in_response = pv->include_attempt_count_in_response;
    vh->include_is_timeout_retry_header = pv->include_is_timeout_retry_header;

    struct str *exact = ARENA_NEW_N(b->a, struct str, pv->n_domains);
    struct str *suffixes = ARENA_NEW_N(b->a, struct str, pv->n_domains);
    struct str *prefixes = ARENA_NEW_N(b->a, struct str, pv->n_domains);
    for (size_t i = 0; i < pv->n_domains; i++) {
        size_t mark = at(b, ".domains[%zu]", i);
        struct str lower = dup_lower(b, pv->domains[i]);
        int rc = 0;
        for (size_t k = 0; k < *n_seen && rc == 0; k++) {
            if (strcmp(seen[k].domain, lower.p) == 0) {
                rc = fail(b, "duplicate domain '%s' (also in virtual host '%s')", lower.p,
                          seen[k].vhost);
            }
        }
        if (rc == 0) {
            seen[*n_seen].domain = lower.p;
            seen[*n_seen].vhost = vh->name.p;
            (*n_seen)++;
            rc = domain(b, pv->domains[i], vh, exact, suffixes, prefixes);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    vh->exact = exact;
    vh->suffixes = suffixes;
    vh->prefixes = prefixes;

    struct route_cfg *routes = ARENA_NEW_N(b->a, struct route_cfg, pv->n_routes);
    for (size_t i = 0; i < pv->n_routes; i++) {
        size_t mark = at(b, ".routes[%zu]", i);
        int rc = route(b, pv->routes[i], body_max, &routes[i]);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    vh->routes = routes;
    vh->n_routes = (uint32_t)pv->n_routes;
    return EDITS(b, pv, &vh->request_edits, &vh->response_edits) ? -EINVAL : 0;
}

/* A RouteConfiguration at the current path (route_config, or an RDS resource). */
static int route_table_at(struct bctx *b, const PbRouteConfiguration *prc,
                          const struct route_table **out)
{
    struct route_table *rt = ARENA_NEW(b->a, struct route_table);
    struct seen_domain *seen = NULL;
    size_t n_seen = 0, n_domains = 0;
    int rc = 0;
    if (prc->vhds != NULL) {
        rc = unsupported(b, "vhds");
    } else if (prc->n_internal_only_headers > 0) {
        rc = unsupported(b, "internal_only_headers");
    } else if (!b->rds && prc->validate_clusters != NULL && !prc->validate_clusters->value) {
        /* Routes point straight at their cluster, and a static table is never rebuilt, so a
         * route to a cluster that arrives later could not be represented. (RDS tables are
         * rebuilt on every CDS change: proxy/reload.c.) */
        rc = unsupported(b, "validate_clusters");
    }
    /* Envoy's default: true for a static route_config, false for RDS. */
    b->missing_clusters_ok =
        b->rebuild ||
        (b->rds && (prc->validate_clusters == NULL || !prc->validate_clusters->value));
    if (rc != 0) {
        goto out;
    }
    uint32_t body_max = u32_or(prc->max_direct_response_body_size_bytes, DEFAULT_DIRECT_BODY_MAX);
    rt->name = dup_str(b, prc->name);
    for (size_t i = 0; i < prc->n_virtual_hosts; i++) {
        n_domains += prc->virtual_hosts[i]->n_domains;
    }
    seen = xcalloc(n_domains + 1, sizeof(*seen));
    struct vhost_cfg *vhs = ARENA_NEW_N(b->a, struct vhost_cfg, prc->n_virtual_hosts);
    for (size_t i = 0; i < prc->n_virtual_hosts && rc == 0; i++) {
        size_t m2 = at(b, ".virtual_hosts[%zu]", i);
        for (size_t k = 0; k < i && rc == 0; k++) {
            if (strcmp(vhs[k].name.p, prc->virtual_hosts[i]->name) == 0) {
                rc = fail_at(b, "name", "duplicate virtual host name '%s'", vhs[k].name.p);
            }
        }
        if (rc == 0) {
            rc = vhost(b, prc->virtual_hosts[i], body_max, seen, &n_seen, &vhs[i]);
        }
        up(b, m2);
    }
    if (rc == 0 && EDITS(b, prc, &rt->request_edits, &rt->response_edits)) {
        rc = -EINVAL;
    }
    rt->vhosts = vhs;
    rt->n_vhosts = (uint32_t)prc->n_virtual_hosts;
    *out = rt;
out:
    free(seen);
    return rc;
}

static int route_table(struct bctx *b, const PbRouteConfiguration *prc,
                       const struct route_table **out)
{
    size_t mark = at(b, ".route_config");
    int rc = route_table_at(b, prc, out);
    up(b, mark);
    return rc;
}

/* ---- HTTP connection manager ---- */

static int router_config(struct bctx *b, const PbHttpFilter *hf, struct hcm_cfg *hc)
{
    if (hf->disabled) {
        return fail_at(b, "disabled", "the router filter cannot be disabled");
    }
    if (hf->config_type_case !=
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG ||
        hf->typed_config == NULL) {
        return 0;
    }
    size_t mark = at(b, ".typed_config");
    ProtobufCMessage *m = NULL;
    int rc = pbjson_any_unpack(hf->typed_config, pbtypes_find, b->fp.p, &m, b->err);
    if (rc == 0) {
        const PbRouter *r = (const PbRouter *)m;
        if (r->dynamic_stats != NULL) {
            rc = unsupported(b, "dynamic_stats");
        } else if (r->start_child_span) {
            rc = unsupported(b, "start_child_span");
        } else if (r->n_upstream_log > 0) {
            rc = unsupported(b, "upstream_log");
        } else if (r->n_strict_check_headers > 0) {
            rc = unsupported(b, "strict_check_headers");
        } else if (r->respect_expected_rq_timeout) {
            rc = unsupported(b, "respect_expected_rq_timeout");
        } else if (r->suppress_grpc_request_failure_code_stats) {
            rc = unsupported(b, "suppress_grpc_request_failure_code_stats");
        }
        hc->suppress_envoy_headers = r->suppress_envoy_headers;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    up(b, mark);
    return rc;
}

/* Envoy finds an HTTP filter's factory by its typed_config type, falling back to its name. */
static bool is_router(const PbHttpFilter *hf)
{
    if (hf->config_type_case ==
            ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_FILTER__CONFIG_TYPE_TYPED_CONFIG &&
        hf->typed_config != NULL) {
        return pbjson_any_is(hf->typed_config, &ROUTER_DESC);
    }
    return hf->name != NULL && strcmp(hf->name, HTTP_ROUTER_NAME) == 0;
}

/* http_filters must end with the router, exactly once. Other filters are not supported yet. */
/* http_filters must end with the router, exactly once; the filters before it are compiled into
 * hc->filters through filters/registry.c (filter_build.c). */
static int http_filters(struct bctx *b, PbHttpFilter *const *hfs, size_t n, const char *stat_prefix,
                        struct hcm_cfg *hc)
{
    if (n == 0) {
        return fail_at(b, "http_filters", "must end with " HTTP_ROUTER_NAME);
    }
    struct filter_cfg *fcs = ARENA_NEW_N(b->a, struct filter_cfg, n);
    hc->filters = fcs;
    hc->n_filters = 0;
    for (size_t i = 0; i < n; i++) {
        const PbHttpFilter *hf = hfs[i];
        size_t mark = at(b, ".http_filters[%zu]", i);
        int rc = 0;
        if (is_router(hf)) {
            rc = i + 1 < n ? fail(b, HTTP_ROUTER_NAME " must be the last filter, and appear once")
                           : router_config(b, hf, hc);
        } else if (i + 1 == n) {
            rc = fail(b, "the last HTTP filter must be " HTTP_ROUTER_NAME);
        } else {
            rc = filter_build_http_filter(b->c, b->fp.p, hf, str_from_c(stat_prefix), fcs,
                                          hc->n_filters, &fcs[hc->n_filters], b->err);
            hc->n_filters += rc == 0;
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int hcm_checks(struct bctx *b, const PbHcm *h)
{
    switch (h->codec_type) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__AUTO:
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1:
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2:
        break;
    default:
        return unsupported_value(
            b, "codec_type",
            &envoy__extensions__filters__network__http_connection_manager__v3__http_connection_manager__codec_type__descriptor,
            (int)h->codec_type);
    }
    if (!is_set_str(h->stat_prefix)) {
        return fail_at(b, "stat_prefix", "required");
    }
    switch (h->route_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG:
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS:
        break; /* validated and loaded by rds_build_initial() (rds.c) */
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_SCOPED_ROUTES:
        return unsupported(b, "scoped_routes");
    default:
        return fail_at(b, "route_config", "required");
    }
    REJECT_IF(h->add_user_agent != NULL && h->add_user_agent->value, "add_user_agent");
    REJECT_IF(is_set_str(h->server_name), "server_name");
    REJECT_IF(h->delayed_close_timeout != NULL, "delayed_close_timeout");
    REJECT_IF(is_set_str(h->via), "via");
    REJECT_IF(h->proxy_100_continue, "proxy_100_continue");
    return 0;
}

/* normalize_path, merge_slashes and path_with_escaped_slashes_action (path_norm.h). Unset
 * normalize_path is false: Envoy reads the runtime key http_connection_manager.normalize_path
 * then, false by default, and remora has no runtime. */
static int hcm_path_norm(struct bctx *b, const PbHcm *h, struct hcm_cfg *hc)
{
    hc->path_norm.normalize = bool_or(h->normalize_path, false);
    hc->path_norm.merge_slashes = h->merge_slashes;
    int rc = 0;
    switch (h->path_with_escaped_slashes_action) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__IMPLEMENTATION_SPECIFIC_DEFAULT:
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__KEEP_UNCHANGED:
        hc->path_norm.escaped_slashes = PATH_SLASHES_KEEP;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__REJECT_REQUEST:
        hc->path_norm.escaped_slashes = PATH_SLASHES_REJECT;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__UNESCAPE_AND_REDIRECT:
        hc->path_norm.escaped_slashes = PATH_SLASHES_UNESCAPE_REDIRECT;
        break;
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__PATH_WITH_ESCAPED_SLASHES_ACTION__UNESCAPE_AND_FORWARD:
        hc->path_norm.escaped_slashes = PATH_SLASHES_UNESCAPE_FORWARD;
        break;
    default: /* protobuf from xDS: proto3 enums are open (JSON names them) */
        rc = fail_at(b, "path_with_escaped_slashes_action", "unknown value %d",
                     (int)h->path_with_escaped_slashes_action);
    }
    hc->path_norm.any = path_norm_enabled(&hc->path_norm);
    return rc;
}

static int hcm_timeouts(struct bctx *b, const PbHcm *h, struct hcm_cfg *hc)
{
    int rc;
    if ((rc = dur_ms(b, "stream_idle_timeout", h->stream_idle_timeout,
                     DEFAULT_STREAM_IDLE_TIMEOUT_MS, false, &hc->stream_idle_timeout_ms)) != 0 ||
        (rc = dur_ms(b, "request_timeout", h->request_timeout, 0, false,
                     &hc->request_timeout_ms)) != 0 ||
        (rc = dur_ms(b, "request_headers_timeout", h->request_headers_timeout, 0, false,
                     &hc->request_headers_timeout_ms)) != 0 ||
        (rc = dur_ms(b, "drain_timeout", h->drain_timeout, DEFAULT_DRAIN_TIMEOUT_MS, false,
                     &hc->drain_timeout_ms)) != 0) {
        return rc;
    }
    hc->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT_MS;
    hc->max_request_headers_count = DEFAULT_MAX_HEADERS_COUNT;
    const Envoy__Config__Core__V3__HttpProtocolOptions *po = h->common_http_protocol_options;
    if (po == NULL) {
        return 0;
    }
    size_t mark = at(b, ".common_http_protocol_options");
    if (po->max_connection_duration != NULL) {
        rc = unsupported(b, "max_connection_duration");
    } else if (po->max_requests_per_connection != NULL) {
        rc = unsupported(b, "max_requests_per_connection");
    } else if (
        po->headers_with_underscores_action !=
        ENVOY__CONFIG__CORE__V3__HTTP_PROTOCOL_OPTIONS__HEADERS_WITH_UNDERSCORES_ACTION__ALLOW) {
        rc = unsupported_value(
            b, "headers_with_underscores_action",
            &envoy__config__core__v3__http_protocol_options__headers_with_underscores_action__descriptor,
            (int)po->headers_with_underscores_action);
    } else if (po->max_headers_count != NULL && po->max_headers_count->value < 1) {
        rc = fail_at(b, "max_headers_count", "must be at least 1");
    } else if ((rc = dur_ms(b, "idle_timeout", po->idle_timeout, DEFAULT_IDLE_TIMEOUT_MS, false,
                            &hc->idle_timeout_ms)) == 0) {
        rc = dur_ms(b, "max_stream_duration", po->max_stream_duration, 0, false,
                    &hc->max_stream_duration_ms);
        hc->max_request_headers_count = u32_or(po->max_headers_count, DEFAULT_MAX_HEADERS_COUNT);
    }
    up(b, mark);
    return rc;
}

/* http2_protocol_options for downstream HTTP/2. Defaults are Envoy's current ones (1.36:
 * 1024 streams, 16 MiB stream window, 24 MiB connection window; flood limits as in Envoy's
 * protocol.proto); ranges are Envoy's. The HCM's stream_error_on_invalid_http_message applies
 * unless the options' override_stream_error_on_invalid_http_message is set (the deprecated
 * stream_error_on_invalid_http_messaging counts when neither is). */
/* http_protocol_options (downstream HTTP/1.1): only enable_trailers; the other fields are
 * rejected with their path. */
static int hcm_http1_options(struct bctx *b, const PbHcm *h, struct hcm_cfg *hc)
{
    const Envoy__Config__Core__V3__Http1ProtocolOptions *o = h->http_protocol_options;
    if (o == NULL) {
        return 0;
    }
    size_t mark = at(b, ".http_protocol_options");
    static const char *const supported[] = {"enable_trailers", NULL};
    const char *f = pbjson_first_set_field(&o->base, supported);
    int rc = f != NULL ? unsupported(b, f) : 0;
    hc->h1_enable_trailers = o->enable_trailers;
    up(b, mark);
    return rc;
}

static int hcm_http2_options(struct bctx *b, const PbHcm *h, struct hcm_cfg *hc)
{
    const Envoy__Config__Core__V3__Http2ProtocolOptions *o = h->http2_protocol_options;
    static const Envoy__Config__Core__V3__Http2ProtocolOptions none =
        ENVOY__CONFIG__CORE__V3__HTTP2_PROTOCOL_OPTIONS__INIT;
    size_t mark = 0;
    if (o == NULL) {
        o = &none;
    } else {
        mark = at(b, ".http2_protocol_options");
    }
    int rc = 0;
    hc->h2_max_concurrent_streams = u32_or(o->max_concurrent_streams, 1024);
    hc->h2_initial_stream_window = u32_or(o->initial_stream_window_size, 16u << 20);
    hc->h2_initial_conn_window = u32_or(o->initial_connection_window_size, 24u << 20);
    hc->h2_hpack_table_size = u32_or(o->hpack_table_size, 4096);
    hc->h2_max_outbound_frames = u32_or(o->max_outbound_frames, 10000);
    hc->h2_max_outbound_control_frames = u32_or(o->max_outbound_control_frames, 1000);
    hc->h2_max_empty_frames = u32_or(o->max_consecutive_inbound_frames_with_empty_payload, 1);
    hc->h2_max_priority_per_stream = u32_or(o->max_inbound_priority_frames_per_stream, 100);
    hc->h2_max_wu_per_data_sent =
        u32_or(o->max_inbound_window_update_frames_per_data_frame_sent, 10);
    hc->h2_stream_error_on_invalid = o->override_stream_error_on_invalid_http_message != NULL
                                         ? o->override_stream_error_on_invalid_http_message->value
                                         : bool_or(h->stream_error_on_invalid_http_message,
                                                   o->stream_error_on_invalid_http_messaging);
    if (o->allow_connect) {
        rc = unsupported(b, "allow_connect");
    } else if (o->allow_metadata) {
        rc = unsupported(b, "allow_metadata");
    } else if (o->use_oghttp2_codec != NULL && o->use_oghttp2_codec->value) {
        rc = unsupported(b, "use_oghttp2_codec");
    } else if (hc->h2_max_concurrent_streams < 1 || hc->h2_max_concurrent_streams > 2147483647u) {
        rc = fail_at(b, "max_concurrent_streams", "%u is out of range (1-2147483647)",
                     hc->h2_max_concurrent_streams);
    } else if (hc->h2_initial_stream_window < 65535 || hc->h2_initial_stream_window > 2147483647u) {
        rc = fail_at(b, "initial_stream_window_size", "%u is out of range (65535-2147483647)",
                     hc->h2_initial_stream_window);
    } else if (hc->h2_initial_conn_window < 65535 || hc->h2_initial_conn_window > 2147483647u) {
        rc = fail_at(b, "initial_connection_window_size", "%u is out of range (65535-2147483647)",
                     hc->h2_initial_conn_window);
    } else if (hc->h2_max_outbound_frames < 1) {
        rc = fail_at(b, "max_outbound_frames", "must be at least 1");
    } else if (hc->h2_max_outbound_control_frames < 1) {
        rc = fail_at(b, "max_outbound_control_frames", "must be at least 1");
    } else if (hc->h2_max_wu_per_data_sent < 1) {
        rc = fail_at(b, "max_inbound_window_update_frames_per_data_frame_sent",
                     "must be at least 1");
    } else {
        rc = keepalive_settings(b, o->connection_keepalive, &hc->h2_keepalive);
    }
    if (o != &none) {
        up(b, mark);
    }
    return rc;
}

static int hcm(struct bctx *b, const PbHcm *h, struct hcm_cfg *hc)
{
    int rc = hcm_checks(b, h);
    if (rc != 0) {
        return rc;
    }
    if ((rc = http_filters(b, h->http_filters, h->n_http_filters, h->stat_prefix, hc)) != 0 ||
        (rc = hcm_timeouts(b, h, hc)) != 0 || (rc = hcm_path_norm(b, h, hc)) != 0) {
        return rc;
    }
    hc->stat_prefix = dup_str(b, h->stat_prefix);
    hc->codec =
        h->codec_type ==
                ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP1
            ? CODEC_HTTP1
        : h->codec_type ==
                ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__CODEC_TYPE__HTTP2
            ? CODEC_HTTP2
            : CODEC_AUTO;
    if ((rc = hcm_http2_options(b, h, hc)) != 0 || (rc = hcm_http1_options(b, h, hc)) != 0) {
        return rc;
    }
    hc->max_request_headers_kb = u32_or(h->max_request_headers_kb, DEFAULT_MAX_REQUEST_HEADERS_KB);
    if (hc->max_request_headers_kb < 1 ||
        hc->max_request_headers_kb > MAX_REQUEST_HEADERS_KB_LIMIT) {
        return fail_at(b, "max_request_headers_kb", "%u is out of range (1-%u)",
                       hc->max_request_headers_kb, MAX_REQUEST_HEADERS_KB_LIMIT);
    }
    if (h->tracing != NULL) {
        size_t tmark = at(b, ".tracing");
        rc = build_tracing_hcm(b->c, b->err, b->fp.p, h->tracing, str_from_c(h->stat_prefix),
                               b->egress, b->c->tracer, &hc->tracing);
        up(b, tmark);
        if (rc != 0) {
            return rc;
        }
    }
    hc->use_remote_address = bool_or(h->use_remote_address, false);
    hc->generate_request_id = bool_or(h->generate_request_id, true);
    hc->xff_num_trusted_hops = h->xff_num_trusted_hops;
    hc->skip_xff_append = h->skip_xff_append;
    if ((unsigned)h->forward_client_cert_details > XFCC_ALWAYS_FORWARD_ONLY) {
        return fail_at(b, "forward_client_cert_details", "unknown value %d",
                       (int)h->forward_client_cert_details);
    }
    hc->xfcc = (enum xfcc_mode)h->forward_client_cert_details; /* same order as the proto */
    const PbXfccDetails *xd = h->set_current_client_cert_details;
    if (xd != NULL) {
        hc->xfcc_details = (xd->cert ? XFCC_CERT : 0u) | (xd->chain ? XFCC_CHAIN : 0u) |
                           (bool_or(xd->subject, false) ? XFCC_SUBJECT : 0u) |
                           (xd->uri ? XFCC_URI : 0u) | (xd->dns ? XFCC_DNS : 0u);
    }
    if ((rc = access_logs(b, h->access_log, h->n_access_log, &hc->access_logs,
                          &hc->n_access_logs)) != 0) {
        return rc;
    }
    b->hcm = hc;
    if (h->route_specifier_case ==
        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_RDS) {
        /* RDS from a file: the file must load now (rds.h says why). */
        if (b->lds && (h->rds->config_source == NULL ||
                       h->rds->config_source->config_source_specifier_case !=
                           ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS)) {
            /* An LDS listener's RDS subscriptions follow the listener set over ADS
             * (proxy/lds.h); files are watched for the bootstrap's connection managers only. */
            return fail_at(b, "rds.config_source",
                           "RDS from a file in a listener from LDS is " UNSUPPORTED
                           " (use ads: {} or route_config)");
        }
        size_t mark = at(b, ".rds");
        rc = rds_build_initial(b->c, hc, b->fp.p, h->rds, b->err);
        up(b, mark);
    } else {
        rc = route_table(b, h->route_config, &hc->routes);
    }
    b->hcm = NULL;
    return rc;
}

/* ---- listeners ---- */

typedef Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy PbTcpProxy;
#define TCP_PROXY_DESC envoy__extensions__filters__network__tcp_proxy__v3__tcp_proxy__descriptor

/* envoy.filters.network.tcp_proxy */
/* A tcp_proxy cluster the bootstrap does not hold: with a cds_config it is looked up by name
 * in the CDS clusters at connection time (none then: the connection is closed and counted as
 * downstream_cx_no_route, as in Envoy); without, an error (Envoy would accept it). */
static int tcp_cds_name(struct bctx *b, const char *name, struct str *out)
{
    if (!b->c->has_cds || name == NULL || name[0] == '\0') {
        return -1;
    }
    *out = dup_str(b, name);
    b->c->tcp_cds = true;
    return 0;
}

static int tcp_proxy(struct bctx *b, const PbTcpProxy *t, struct tcp_proxy_cfg *out)
{
    if (t->stat_prefix == NULL || t->stat_prefix[0] == '\0') {
        return fail_at(b, "stat_prefix", "required");
    }
    out->stat_prefix = arena_strdup(b->a, str_from_c(t->stat_prefix));
    REJECT_IF(t->on_demand != NULL, "on_demand");
    REJECT_IF(t->downstream_idle_timeout != NULL, "downstream_idle_timeout");
    REJECT_IF(t->upstream_idle_timeout != NULL, "upstream_idle_timeout");
    REJECT_IF(t->tunneling_config != NULL, "tunneling_config");
    REJECT_IF(t->max_downstream_connection_duration != NULL, "max_downstream_connection_duration");
    REJECT_IF(t->access_log_flush_interval != NULL, "access_log_flush_interval");
    REJECT_IF(t->flush_access_log_on_connected, "flush_access_log_on_connected");
    REJECT_IF(t->access_log_options != NULL, "access_log_options");
    int rc = dur_ms(b, "idle_timeout", t->idle_timeout, 3600000, false, &out->idle_timeout_ms);
    if (rc != 0) {
        return rc;
    }
    out->max_connect_attempts = u32_or(t->max_connect_attempts, 1);
    if (out->max_connect_attempts < 1) {
        return fail_at(b, "max_connect_attempts", "must be at least 1");
    }
    switch (t->cluster_specifier_case) {
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_CLUSTER: {
        struct tcp_cluster_weight *w = ARENA_NEW(b->a, struct tcp_cluster_weight);
        w->cluster = config_find_cluster(b->c, str_from_c(t->cluster));
        if (w->cluster == NULL && tcp_cds_name(b, t->cluster, &w->name) != 0) {
            return fail_at(b, "cluster", "unknown cluster '%s'", t->cluster);
        }
        w->cum_weight = 1;
        out->clusters = w;
        out->n_clusters = 1;
        out->total_weight = 1;
        break;
    }
    case ENVOY__EXTENSIONS__FILTERS__NETWORK__TCP_PROXY__V3__TCP_PROXY__CLUSTER_SPECIFIER_WEIGHTED_CLUSTERS: {
        const Envoy__Extensions__Filters__Network__TcpProxy__V3__TcpProxy__WeightedCluster *wc =
            t->weighted_clusters;
        if (wc->n_clusters == 0) {
            return fail_at(b, "weighted_clusters.clusters", "needs at least one cluster");
        }
        struct tcp_cluster_weight *ws =
            ARENA_NEW_N(b->a, struct tcp_cluster_weight, wc->n_clusters);
        uint64_t cum = 0;
        for (size_t i = 0; i < wc->n_clusters; i++) {
            size_t mark = at(b, ".weighted_clusters.clusters[%zu]", i);
            const char *name = wc->clusters[i]->name ? wc->clusters[i]->name : "";
            ws[i].cluster = config_find_cluster(b->c, str_from_c(name));
            if (ws[i].cluster == NULL && tcp_cds_name(b, name, &ws[i].name) != 0) {
                rc = fail_at(b, "name", "unknown cluster '%s'", name);
            } else if (wc->clusters[i]->weight == 0) {
                rc = fail_at(b, "weight", "must be at least 1");
            }
            up(b, mark);
            if (rc != 0) {
                return rc;
            }
            cum += wc->clusters[i]->weight;
            ws[i].cum_weight = cum;
        }
        out->clusters = ws;
        out->n_clusters = (uint32_t)wc->n_clusters;
        out->total_weight = cum;
        break;
    }
    default:
        return fail(b, "one of cluster or weighted_clusters is required");
    }
    return access_logs(b, t->access_log, t->n_access_log, &out->access_logs, &out->n_access_logs);
}

/* The network filters: envoy.filters.network.rbac filters (filters/rbac/rbac_network.h), then
 * the terminal one, the HTTP connection manager or the TCP proxy, found by its typed_config
 * type, which must be the last filter of the chain. */
static int network_filters(struct bctx *b, const PbFilterChain *fc, struct filter_chain_cfg *lc)
{
    if (fc->n_filters == 0) {
        return fail_at(b, "filters",
                       "a filter chain needs the http_connection_manager or tcp_proxy filter");
    }
    const struct rbac_net_cfg **rbac =
        ARENA_NEW_N(b->a, const struct rbac_net_cfg *, fc->n_filters);
    lc->rbac = rbac;
    for (size_t i = 0; i < fc->n_filters; i++) {
        const PbFilter *f = fc->filters[i];
        size_t mark = at(b, ".filters[%zu]", i);
        int rc = 0;
        bool is_hcm = false, is_tcp = false;
        if (f->config_type_case != ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
            f->typed_config == NULL) {
            rc = fail_at(b, "typed_config", "required");
        } else if (rbac_network_is(f->typed_config)) {
            if (i + 1 == fc->n_filters) {
                rc = fail(b, "the last network filter must be the http_connection_manager or "
                             "tcp_proxy");
            } else {
                size_t m2 = at(b, ".typed_config");
                bool local = false;
                rc = rbac_network_build(b->c, b->fp.p, f->typed_config, &rbac[lc->n_rbac], &local,
                                        b->err);
                lc->n_rbac += rc == 0;
                lc->wants_local = lc->wants_local || local;
                up(b, m2);
            }
        } else if (!(is_hcm = pbjson_any_is(f->typed_config, &HCM_DESC)) &&
                   !(is_tcp = pbjson_any_is(f->typed_config, &TCP_PROXY_DESC))) {
            size_t tlen;
            const char *type = pbjson_type_name(f->typed_config->type_url, &tlen);
            rc = fail(b, "network filter '%s' (%.*s) is " UNSUPPORTED, f->name ? f->name : "",
                      (int)tlen, type);
        } else if (i + 1 < fc->n_filters) {
            rc = fail(b, "the %s must be the last network filter of the chain",
                      is_hcm ? "http_connection_manager" : "tcp_proxy");
        } else {
            size_t m2 = at(b, ".typed_config");
            ProtobufCMessage *m = NULL;
            rc = pbjson_any_unpack(f->typed_config, pbtypes_find, b->fp.p, &m, b->err);
            if (rc == 0 && is_hcm) {
                struct hcm_cfg *hc = ARENA_NEW(b->a, struct hcm_cfg);
                rc = hcm(b, (const PbHcm *)m, hc);
                lc->hcm = hc;
            } else if (rc == 0) {
                struct tcp_proxy_cfg *tc = ARENA_NEW(b->a, struct tcp_proxy_cfg);
                rc = tcp_proxy(b, (const PbTcpProxy *)m, tc);
                lc->tcp = tc;
            }
            if (m != NULL) {
                protobuf_c_message_free_unpacked(m, NULL);
            }
            up(b, m2);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* ---- listeners: listener filters, filter chains and their filter_chain_match ---- */

static int cidr_ranges(struct bctx *b, const char *field, PbCidrRange *const *rs, size_t n,
                       const struct cidr **out, uint32_t *n_out)
{
    struct cidr *v = n > 0 ? ARENA_NEW_N(b->a, struct cidr, n) : NULL;
    for (size_t i = 0; i < n; i++) {
        const PbCidrRange *r = rs[i];
        /* Envoy: an unset prefix_len is 0. */
        uint32_t len = r->prefix_len != NULL ? r->prefix_len->value : 0;
        if (!cidr_parse(str_from_c(r->address_prefix), len, &v[i])) {
            size_t mark = at(b, ".%s[%zu]", field, i);
            int rc = fail(b, "'%s/%u' is not an IP address range", r->address_prefix, len);
            up(b, mark);
            return rc;
        }
    }
    *out = v;
    *n_out = (uint32_t)n;
    return 0;
}

/* server_names, lower-cased as Envoy keeps them; partial wildcards are refused, as Envoy does
 * ("*.example.com" is the only wildcard form). */
static int server_names(struct bctx *b, const PbFilterChainMatch *m, struct chain_match *out)
{
    if (m->n_server_names == 0) {
        return 0;
    }
    struct str *v = ARENA_NEW_N(b->a, struct str, m->n_server_names);
    for (size_t i = 0; i < m->n_server_names; i++) {
        v[i] = dup_lower(b, m->server_names[i]);
        if (!chain_server_name_valid(v[i])) {
            return fail_at(b, "server_names",
                           "[%zu] '%s': empty, or a partial wildcard (only \"*.example.com\" "
                           "wildcards are supported, as in Envoy)",
                           i, m->server_names[i]);
        }
    }
    out->server_names = v;
    out->n_server_names = (uint32_t)m->n_server_names;
    return 0;
}

static int chain_match(struct bctx *b, const PbFilterChainMatch *m, struct chain_match *out)
{
    memset(out, 0, sizeof(*out));
    if (m == NULL) {
        return 0;
    }
    size_t mark = at(b, ".filter_chain_match");
    int rc = 0;
    if (is_set_str(m->transport_protocol) && strcmp(m->transport_protocol, "raw_buffer") != 0 &&
        strcmp(m->transport_protocol, "tls") != 0) {
        rc = fail_at(b, "transport_protocol",
                     "'%s' is " UNSUPPORTED " (\"tls\" or \"raw_buffer\": the tls_inspector "
                     "listener filter tells them apart)",
                     m->transport_protocol);
    } else if (m->destination_port != NULL &&
               (m->destination_port->value == 0 || m->destination_port->value > 65535)) {
        rc = fail_at(b, "destination_port", "must be 1-65535, not %u", m->destination_port->value);
    } else if ((unsigned)m->source_type > CHAIN_SRC_EXTERNAL) {
        rc = fail_at(b, "source_type", "unknown value %d", (int)m->source_type);
    }
    out->dst_port = m->destination_port != NULL ? m->destination_port->value : 0;
    out->transport = !is_set_str(m->transport_protocol)          ? CHAIN_TRANSPORT_ANY
                     : strcmp(m->transport_protocol, "tls") == 0 ? CHAIN_TRANSPORT_TLS
                                                                 : CHAIN_TRANSPORT_RAW_BUFFER;
    if (rc == 0) {
        rc = server_names(b, m, out);
    }
    if (rc == 0 && m->n_application_protocols > 0) {
        struct str *v = ARENA_NEW_N(b->a, struct str, m->n_application_protocols);
        for (size_t i = 0; i < m->n_application_protocols && rc == 0; i++) {
            v[i] = dup_str(b, m->application_protocols[i]);
            if (v[i].len == 0 || v[i].len > 255) {
                rc = fail_at(b, "application_protocols", "[%zu] must be 1-255 bytes long", i);
            }
        }
        out->alpn = v;
        out->n_alpn = (uint32_t)m->n_application_protocols;
    }
    out->src_type = (enum chain_source_type)m->source_type;
    if (rc == 0 && m->n_source_ports > 0) {
        uint16_t *ports = ARENA_NEW_N(b->a, uint16_t, m->n_source_ports);
        for (size_t i = 0; i < m->n_source_ports && rc == 0; i++) {
            if (m->source_ports[i] == 0 || m->source_ports[i] > 65535) {
                rc = fail_at(b, "source_ports", "[%zu] must be 1-65535, not %u", i,
                             m->source_ports[i]);
            }
            ports[i] = (uint16_t)m->source_ports[i];
        }
        out->src_ports = ports;
        out->n_src_ports = (uint32_t)m->n_source_ports;
    }
    if (rc == 0) {
        rc = cidr_ranges(b, "prefix_ranges", m->prefix_ranges, m->n_prefix_ranges, &out->dst,
                         &out->n_dst);
    }
    if (rc == 0) {
        rc = cidr_ranges(b, "direct_source_prefix_ranges", m->direct_source_prefix_ranges,
                         m->n_direct_source_prefix_ranges, &out->direct_src, &out->n_direct_src);
    }
    if (rc == 0) {
        rc = cidr_ranges(b, "source_prefix_ranges", m->source_prefix_ranges,
                         m->n_source_prefix_ranges, &out->src, &out->n_src);
    }
    up(b, mark);
    return rc;
}

/* A chain's criteria that need the connection's local address (or the original one). */
static bool match_needs_local(const struct chain_match *m)
{
    return m->dst_port != 0 || m->n_dst > 0 || m->src_type != CHAIN_SRC_ANY;
}

static bool match_is_empty(const struct chain_match *m)
{
    return !match_needs_local(m) && m->transport == CHAIN_TRANSPORT_ANY && m->n_server_names == 0 &&
           m->n_alpn == 0 && m->n_direct_src == 0 && m->n_src == 0 && m->n_src_ports == 0;
}

static bool format_wants_local(const struct access_log_cfg *al, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (al[i].format.len > 0 &&
            memmem(al[i].format.p, al[i].format.len, "%DOWNSTREAM_LOCAL_", 18) != NULL) {
            return true;
        }
        for (uint32_t j = 0; j < al[i].n_json; j++) {
            struct str f = al[i].json[j].format;
            if (f.len > 0 && memmem(f.p, f.len, "%DOWNSTREAM_LOCAL_", 18) != NULL) {
                return true;
            }
        }
    }
    return false;
}

/* One filter chain (`m` NULL: the default chain, whose filter_chain_match Envoy ignores). */
static int filter_chain(struct bctx *b, const PbFilterChain *fc, struct filter_chain_cfg *out,
                        struct chain_match *m)
{
    int rc = 0;
    if (fc->transport_socket != NULL) {
        size_t mark = at(b, ".transport_socket");
        rc = build_tls_transport_socket(b->c, b->err, b->fp.p, fc->transport_socket,
                                        BUILD_TLS_DOWNSTREAM, UPSTREAM_PROTO_HTTP1, &out->tls);
        up(b, mark);
    }
    if (rc == 0) {
        rc = dur_ms(b, "transport_socket_connect_timeout", fc->transport_socket_connect_timeout, 0,
                    false, &out->handshake_timeout_ms);
    }
    if (rc != 0) {
        return rc;
    }
    if (m == NULL) {
        REJECT_IF(fc->filter_chain_match != NULL, "filter_chain_match");
    } else if ((rc = chain_match(b, fc->filter_chain_match, m)) != 0) {
        return rc;
    }
    out->name = dup_str(b, fc->name);
    rc = network_filters(b, fc, out);
    if (rc == 0) {
        /* wants_local may already be set by a network RBAC filter's destination rules */
        out->wants_local = out->wants_local ||
                           format_wants_local(chain_access_logs(out), chain_n_access_logs(out));
    }
    return rc;
}

#define ORIGINAL_DST_NAME "envoy.filters.listener.original_dst"
#define TLS_INSPECTOR_NAME "envoy.filters.listener.tls_inspector"
#define PROXY_PROTOCOL_NAME "envoy.filters.listener.proxy_protocol"

/* The tls_inspector's TlsInspector: JA3 fingerprints (which nothing in remora could use yet)
 * and initial_read_buffer_size (remora peeks into the worker's 64 KiB scratch space) are not
 * supported; enable_ja3_fingerprinting: false is accepted. */
static int tls_inspector_cfg(struct bctx *b, const PbAny *any)
{
    ProtobufCMessage *m = NULL;
    size_t mark = at(b, ".typed_config");
    int rc = pbjson_any_unpack(any, pbtypes_find, b->fp.p, &m, b->err);
    if (rc == 0) {
        const Envoy__Extensions__Filters__Listener__TlsInspector__V3__TlsInspector *t =
            (const void *)m;
        if (bool_or(t->enable_ja3_fingerprinting, false)) {
            rc = unsupported(b, "enable_ja3_fingerprinting");
        } else if (t->initial_read_buffer_size != NULL) {
            rc = unsupported(b, "initial_read_buffer_size");
        }
    }
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    up(b, mark);
    return rc;
}

/* The proxy_protocol filter's ProxyProtocol: allow_requests_without_proxy_protocol and
 * disallowed_versions; TLVs are skipped, so rules and pass_through_tlvs (which would keep them
 * as metadata or filter state) are not supported, nor a stat_prefix (the proxy_proto.*
 * counters are shown unprefixed). */
static int proxy_protocol_cfg(struct bctx *b, const PbAny *any, struct listener_cfg *lc)
{
    ProtobufCMessage *m = NULL;
    size_t mark = at(b, ".typed_config");
    int rc = pbjson_any_unpack(any, pbtypes_find, b->fp.p, &m, b->err);
    if (rc == 0) {
        const Envoy__Extensions__Filters__Listener__ProxyProtocol__V3__ProxyProtocol *p =
            (const void *)m;
        lc->pp_allow_without = p->allow_requests_without_proxy_protocol;
        if (p->n_rules > 0) {
            rc = unsupported(b, "rules");
        } else if (p->pass_through_tlvs != NULL) {
            rc = unsupported(b, "pass_through_tlvs");
        } else if (is_set_str(p->stat_prefix)) {
            rc = unsupported(b, "stat_prefix");
        }
        for (size_t i = 0; rc == 0 && i < p->n_disallowed_versions; i++) {
            int v = p->disallowed_versions[i];
            if (v == ENVOY__CONFIG__CORE__V3__PROXY_PROTOCOL_CONFIG__VERSION__V1) {
                lc->pp_versions &= (uint8_t)~PP_V1;
            } else if (v == ENVOY__CONFIG__CORE__V3__PROXY_PROTOCOL_CONFIG__VERSION__V2) {
                lc->pp_versions &= (uint8_t)~PP_V2;
            } else {
                rc = fail_at(b, "disallowed_versions", "unknown version %d", v);
            }
        }
    }
    if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    up(b, mark);
    return rc;
}

/* Listener filters: original_dst, proxy_protocol and tls_inspector, found by their typed_config
 * type (or, without one, by their name, as Envoy still allows), run in Envoy's order: original_dst
 * reads the destination at once, proxy_protocol then waits for and reads the PROXY header, the
 * tls_inspector then peeks at the first bytes after it: remora runs them in this order whatever
 * the configured one (a tls_inspector before proxy_protocol would only see the header). */
static int listener_filters(struct bctx *b, const PbListener *pl, struct listener_cfg *lc)
{
    for (size_t i = 0; i < pl->n_listener_filters; i++) {
        const PbListenerFilter *f = pl->listener_filters[i];
        size_t mark = at(b, ".listener_filters[%zu]", i);
        int rc = 0;
        bool typed = f->config_type_case ==
                         ENVOY__CONFIG__LISTENER__V3__LISTENER_FILTER__CONFIG_TYPE_TYPED_CONFIG &&
                     f->typed_config != NULL;
        if (typed ? pbjson_any_is(f->typed_config, &ORIGINAL_DST_DESC)
                  : strcmp(f->name, ORIGINAL_DST_NAME) == 0) {
            lc->original_dst = true;
        } else if (typed ? pbjson_any_is(f->typed_config, &TLS_INSPECTOR_DESC)
                         : strcmp(f->name, TLS_INSPECTOR_NAME) == 0) {
            lc->tls_inspector = true;
            rc = typed ? tls_inspector_cfg(b, f->typed_config) : 0;
        } else if (typed ? pbjson_any_is(f->typed_config, &PROXY_PROTOCOL_DESC)
                         : strcmp(f->name, PROXY_PROTOCOL_NAME) == 0) {
            if (lc->proxy_protocol) {
                rc = fail(b, "a second proxy_protocol listener filter");
            }
            lc->proxy_protocol = true;
            lc->pp_versions = PP_V1 | PP_V2;
            rc = rc == 0 && typed ? proxy_protocol_cfg(b, f->typed_config, lc) : rc;
        } else if (typed) {
            size_t tlen;
            const char *type = pbjson_type_name(f->typed_config->type_url, &tlen);
            rc = fail(b, "listener filter '%s' (%.*s) is " UNSUPPORTED, f->name, (int)tlen, type);
        } else {
            rc = fail(b, "listener filter '%s' is " UNSUPPORTED, f->name);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* traffic_direction is kept for /drain_listeners?inboundonly (Envoy drains and stops only the
 * INBOUND listeners) and gives tracing its span kind (OUTBOUND: CLIENT, else SERVER; listener()
 * sets bctx.egress); Envoy's other uses (some control planes' stats tags) remora has not. */
static int listener_checks(struct bctx *b, const PbListener *pl)
{
    REJECT_IF(pl->use_original_dst != NULL && pl->use_original_dst->value, "use_original_dst");
    REJECT_IF(pl->api_listener != NULL, "api_listener");
    REJECT_IF(pl->n_access_log > 0, "access_log");
    if (pl->n_filter_chains == 0 && pl->default_filter_chain == NULL) {
        return fail_at(b, "filter_chains", "a listener needs a filter chain");
    }
    if (pl->n_filter_chains > CHAIN_MATCH_MAX) {
        return fail_at(b, "filter_chains", "more than %d filter chains", CHAIN_MATCH_MAX);
    }
    return 0;
}

/* listener_filters_timeout (Envoy: default 15 s, 0 disables it) and
 * continue_on_listener_filters_timeout. */
static int listener_filter_timeout(struct bctx *b, const PbListener *pl, struct listener_cfg *lc)
{
    lc->continue_on_filters_timeout = pl->continue_on_listener_filters_timeout;
    return dur_ms(b, "listener_filters_timeout", pl->listener_filters_timeout, 15000, false,
                  &lc->filters_timeout_ms);
}

/* The listener's filter chains, then its default chain, at b->chains[b->n_chains...]. */
static int listener_chains(struct bctx *b, const PbListener *pl, struct listener_cfg *lc)
{
    struct filter_chain_cfg *chains = &b->chains[b->n_chains];
    uint32_t n = (uint32_t)pl->n_filter_chains;
    struct chain_match *ms = n > 0 ? ARENA_NEW_N(b->a, struct chain_match, n) : NULL;
    lc->chains = chains;
    lc->n_chains = n;
    lc->matches = ms;
    lc->has_default = pl->default_filter_chain != NULL;
    bool local = lc->original_dst;
    for (uint32_t i = 0; i < n + (lc->has_default ? 1 : 0); i++) {
        bool dflt = i == n;
        struct filter_chain_cfg *fc = &chains[i];
        fc->index = b->n_chains;
        fc->listener = lc;
        size_t mark = dflt ? at(b, ".default_filter_chain") : at(b, ".filter_chains[%u]", i);
        int rc = filter_chain(b, dflt ? pl->default_filter_chain : pl->filter_chains[i], fc,
                              dflt ? NULL : &ms[i]);
        for (uint32_t j = 0; rc == 0 && !dflt && j < i; j++) {
            if (chain_match_overlap(&ms[j], &ms[i])) {
                rc = fail_at(b, "filter_chain_match",
                             "matches the same connections as filter_chains[%u] (Envoy: "
                             "multiple filter chains with the same matching rules)",
                             j);
            }
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        b->n_chains++;
        local = local || fc->wants_local || (!dflt && match_needs_local(&ms[i]));
    }
    lc->select = n != 1 || lc->has_default || !match_is_empty(&ms[0]);
    lc->wants_local = local;
    return 0;
}

static bool same_addr(const struct sock_addr *a, const struct sock_addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

static uint16_t addr_port(const struct sock_addr *sa)
{
    return ntohs(sa->ss.ss_family == AF_INET ? ((const struct sockaddr_in *)&sa->ss)->sin_port
                                             : ((const struct sockaddr_in6 *)&sa->ss)->sin6_port);
}

static int listener(struct bctx *b, const PbListener *pl, uint32_t index, struct listener_cfg *lc)
{
    b->egress = pl->traffic_direction == ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__OUTBOUND;
    int rc = listener_checks(b, pl);
    if (rc == 0) {
        rc = listener_filters(b, pl, lc);
    }
    if (rc == 0) {
        rc = listener_filter_timeout(b, pl, lc);
    }
    if (rc != 0) {
        return rc;
    }
    if ((rc = ip_address(b, "address", pl->address, ADDR_LISTENER, &lc->addr)) != 0) {
        return rc;
    }
    lc->ipv4_compat = pl->address->socket_address->ipv4_compat;
    lc->index = index;
    /* Envoy names an unnamed listener itself; the address is unique here, so use it. */
    lc->name = is_set_str(pl->name) ? dup_str(b, pl->name) : lc->addr.text;
    for (uint32_t i = 0; i < index; i++) {
        const struct listener_cfg *o = &b->c->listeners[i];
        if (str_eq(o->name, lc->name)) {
            return fail_at(b, "name", "duplicate listener name '%s'", lc->name.p);
        }
        /* Several listeners may ask for port 0: the kernel gives each its own. */
        if (addr_port(&lc->addr) != 0 && same_addr(&o->addr, &lc->addr)) {
            return fail_at(b, "address", "%s is already used by listener '%s'", lc->addr.text.p,
                           o->name.p);
        }
    }
    if (is_set_str(pl->stat_prefix)) {
        lc->stat_name = dup_str(b, pl->stat_prefix);
    } else {
        /* Envoy: listener.<address>. with ':' sanitised to '_' ("127.0.0.1_10000"). */
        lc->stat_name = arena_strdup(b->a, lc->addr.text);
        for (size_t i = 0; i < lc->stat_name.len; i++) {
            if (lc->stat_name.p[i] == ':') {
                ((char *)lc->stat_name.p)[i] = '_';
            }
        }
    }
    lc->per_connection_buffer_limit =
        u32_or(pl->per_connection_buffer_limit_bytes, DEFAULT_BUFFER_LIMIT);
    lc->inbound = pl->traffic_direction == ENVOY__CONFIG__CORE__V3__TRAFFIC_DIRECTION__INBOUND;
    lc->drain_modify_only =
        pl->drain_type == ENVOY__CONFIG__LISTENER__V3__LISTENER__DRAIN_TYPE__MODIFY_ONLY;
    return listener_chains(b, pl, lc);
}

static int listeners(struct bctx *b, PbListener *const *pls, size_t n)
{
    struct listener_cfg *lcs = ARENA_NEW_N(b->a, struct listener_cfg, n);
    b->c->listeners = lcs;
    b->c->n_listeners = 0;
    size_t n_chains = 0;
    for (size_t i = 0; i < n; i++) {
        n_chains += pls[i]->n_filter_chains + (pls[i]->default_filter_chain != NULL ? 1 : 0);
    }
    b->chains = ARENA_NEW_N(b->a, struct filter_chain_cfg, n_chains > 0 ? n_chains : 1);
    b->n_chains = 0;
    b->c->chains = b->chains;
    for (size_t i = 0; i < n; i++) {
        size_t mark = at(b, ".listeners[%zu]", i);
        int rc = listener(b, pls[i], (uint32_t)i, &lcs[i]);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
        b->c->n_listeners = (uint32_t)(i + 1);
        b->c->n_chains = b->n_chains;
    }
    return 0;
}

/* ---- bootstrap ---- */

static int admin(struct bctx *b, const PbAdmin *pa)
{
    size_t mark = at(b, "admin");
    int rc = 0;
    if (is_set_str(pa->profile_path)) {
        rc = unsupported(b, "profile_path");
    } else if (pa->n_access_log > 1 || (pa->n_access_log == 1 && is_set_str(pa->access_log_path))) {
        rc = fail_at(b, "access_log", "more than one admin access log is " UNSUPPORTED);
    } else if (pa->n_access_log == 1) {
        struct access_log_cfg al = {0};
        size_t m2 = at(b, ".access_log[0]");
        rc = access_log(b, pa->access_log[0], &al);
        if (rc == 0 && al.format.len > 0) {
            rc = fail(b, "an admin access log format is " UNSUPPORTED);
        }
        up(b, m2);
        b->c->admin_access_log_path = al.path;
    } else {
        b->c->admin_access_log_path = dup_str(b, pa->access_log_path);
    }
    if (rc == 0 && pa->address != NULL) {
        rc = ip_address(b, "address", pa->address, ADDR_LISTENER, &b->c->admin_addr);
        if (rc == 0 && pa->address->socket_address->ipv4_compat) {
            size_t m3 = at(b, ".address.socket_address");
            rc = unsupported(b, "ipv4_compat"); /* listeners' only */
            up(b, m3);
        }
        b->c->has_admin = rc == 0;
    }
    up(b, mark);
    return rc;
}

static int build_bootstrap(struct bctx *b, const PbBootstrap *pb)
{
    int rc = 0;
    if (pb->node != NULL) {
        /* metadata, locality, user agent and client features describe the node to a
         * management server; they are kept in bootstrap_pb for the xDS client. */
        b->c->node_id = dup_str(b, pb->node->id);
        b->c->node_cluster = dup_str(b, pb->node->cluster);
    }
    if (pb->dynamic_resources != NULL) {
        /* Clusters can come from a file or ADS (cds_config, proxy/cds.h), routes from files or
         * ADS (an HCM's `rds`; ads_config: proxy/config/build_ads.h); listeners cannot yet. */
        const Envoy__Config__Bootstrap__V3__Bootstrap__DynamicResources *dr = pb->dynamic_resources;
        if (dr->lds_config != NULL) {
            /* listeners from a file or ADS (proxy/lds.h) */
            size_t mark = at(b, "dynamic_resources.lds_config");
            if (dr->lds_config->config_source_specifier_case ==
                ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
                b->c->lds_ads = true;
                b->c->lds_path = dup_str(b, "");
                b->c->lds_watched_dir = b->c->lds_path;
                rc = config_source_ads(dr->lds_config, b->fp.p, dr->ads_config != NULL,
                                       &b->c->lds_initial_fetch_timeout_ms, b->err);
            } else {
                rc = config_source_file(dr->lds_config, b->fp.p, &b->c->lds_path,
                                        &b->c->lds_watched_dir, b->a, b->err);
            }
            up(b, mark);
            if (rc != 0) {
                return rc;
            }
            b->c->has_lds = true;
        }
        if (dr->cds_config != NULL) {
            size_t mark = at(b, "dynamic_resources.cds_config");
            if (dr->cds_config->config_source_specifier_case ==
                ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
                /* a wildcard Cluster subscription on the ADS stream (proxy/xds/ads.h) */
                b->c->cds_ads = true;
                b->c->cds_path = dup_str(b, "");
                b->c->cds_watched_dir = b->c->cds_path;
                rc = config_source_ads(dr->cds_config, b->fp.p, dr->ads_config != NULL,
                                       &b->c->cds_initial_fetch_timeout_ms, b->err);
            } else {
                rc = config_source_file(dr->cds_config, b->fp.p, &b->c->cds_path,
                                        &b->c->cds_watched_dir, b->a, b->err);
            }
            up(b, mark);
            if (rc != 0) {
                return rc;
            }
            b->c->has_cds = true;
        }
        rc = ads_build_config(b->c, dr, b->err);
        if (rc != 0) {
            return rc;
        }
    }
    if (pb->tracing != NULL && pb->tracing->http != NULL) {
        size_t mark = at(b, "tracing.http");
        rc = build_tracing_provider(b->c, b->err, b->fp.p, pb->tracing->http, &b->c->tracer);
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    if (pb->static_resources != NULL) {
        const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = pb->static_resources;
        size_t mark = at(b, "static_resources");
        /* Clusters first: routes point at them. */
        rc = clusters(b, sr->clusters, sr->n_clusters);
        if (rc == 0) {
            rc = listeners(b, sr->listeners, sr->n_listeners);
        }
        up(b, mark);
        if (rc != 0) {
            return rc;
        }
    }
    if (b->c->ads != NULL && (rc = ads_build_resolve(b->c, b->err)) != 0) {
        return rc;
    }
    if (b->c->tracer != NULL &&
        (rc = build_tracing_resolve(b->c, b->err, "tracing.http",
                                    (struct tracer_cfg *)b->c->tracer)) != 0) {
        return rc;
    }
    if (pb->admin != NULL) {
        rc = admin(b, pb->admin);
    }
    if (rc == 0) {
        rc = build_stats_config(b->c, pb, b->err);
    }
    return rc;
}

struct config *config_build_take(struct Envoy__Config__Bootstrap__V3__Bootstrap *pb,
                                 struct err *err)
{
    if (pb == NULL) {
        err_set(err, NULL, "no bootstrap");
        return NULL;
    }
    /* The snapshot lives in its own arena (config_unref frees the arena last). */
    struct arena a;
    arena_init(&a, 16 * 1024);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    struct bctx b = {.c = c, .a = &c->arena, .err = err};
    b.fp.p[0] = '\0';
    /* A Bootstrap unpacked from binary may carry fields this build does not know; they would
     * otherwise be dropped without a word. (Decoded from JSON, it cannot.) */
    if (pbjson_check_unknown(&pb->base, pbtypes_find, "", err) != 0 ||
        build_bootstrap(&b, pb) != 0) {
        config_unref(c); /* runs the cleanups (compiled regexes), then frees the arena */
        protobuf_c_message_free_unpacked(&pb->base, NULL);
        return NULL;
    }
    c->bootstrap_pb = pb;
    return c;
}

/* Bootstrap text (JSON when `json`, else JSON or YAML by its first character) into a message
 * owned by the caller, or NULL with the error. */
static PbBootstrap *decode_bootstrap(const char *text, size_t len, bool json, struct err *err)
{
    json_t *j = json ? pbjson_load_json(text, len, err) : pbjson_load_text(text, len, err);
    if (j == NULL) {
        return NULL;
    }
    ProtobufCMessage *m = pbjson_decode(&envoy__config__bootstrap__v3__bootstrap__descriptor, j,
                                        pbtypes_find, "", err);
    json_decref(j);
    return (PbBootstrap *)m;
}

/* The bootstrap file at `path` (JSON if it ends in ".json", as Envoy decides). */
static PbBootstrap *decode_bootstrap_file(const char *path, struct err *err)
{
    size_t len;
    char *text = file_read(path, BOOTSTRAP_FILE_MAX, &len);
    if (text == NULL) {
        err_set(err, path, "cannot read: %s", strerror(errno));
        return NULL;
    }
    size_t plen = strlen(path);
    PbBootstrap *pb =
        decode_bootstrap(text, len, plen > 5 && strcmp(path + plen - 5, ".json") == 0, err);
    free(text);
    return pb;
}

struct config *config_load_text(const char *text, size_t len, struct err *err)
{
    PbBootstrap *pb = decode_bootstrap(text, len, false, err);
    return pb != NULL ? config_build_take(pb, err) : NULL;
}

struct config *config_load_file(const char *path, struct err *err)
{
    PbBootstrap *pb = decode_bootstrap_file(path, err);
    return pb != NULL ? config_build_take(pb, err) : NULL;
}

struct config *config_load_merged(const char *path, const char *text, size_t len, struct err *err)
{
    PbBootstrap *base = decode_bootstrap_file(path, err);
    if (base == NULL) {
        return NULL;
    }
    PbBootstrap *over = decode_bootstrap(text, len, false, err);
    if (over == NULL) {
        char msg[ERR_MSG_MAX];
        memcpy(msg, err->msg, sizeof(msg));
        err_set(err, "--config-yaml", "%s", msg);
        protobuf_c_message_free_unpacked(&base->base, NULL);
        return NULL;
    }
    PbBootstrap *pb = (PbBootstrap *)pbmerge(&base->base, &over->base);
    protobuf_c_message_free_unpacked(&base->base, NULL);
    protobuf_c_message_free_unpacked(&over->base, NULL);
    if (pb == NULL) {
        err_set(err, "--config-yaml", "the merged bootstrap does not encode");
        return NULL;
    }
    return config_build_take(pb, err);
}

int config_validate_text(const char *text, size_t len, struct err *err)
{
    struct config *c = config_load_text(text, len, err);
    if (c == NULL) {
        return -EINVAL;
    }
    config_unref(c);
    return 0;
}

/* ---- for HTTP filters (filter_build.c) ---- */

int build_header_matcher(struct config *c, const char *path, const PbHeaderMatcher *pb,
                         struct header_matcher *out, struct err *err)
{
    struct bctx b = {.c = c, .a = &c->arena, .err = err};
    fpath_push(&b.fp, "%s", path);
    return header_matcher(&b, pb, out);
}

int build_string_match(struct config *c, const char *path, const PbStringMatcher *pb,
                       struct str_match *out, struct err *err)
{
    struct bctx b = {.c = c, .a = &c->arena, .err = err};
    fpath_push(&b.fp, "%s", path);
    return string_match(&b, pb, out);
}

int build_header_add(struct arena *a, const char *path, const PbHeaderValueOption *pb,
                     struct header_add *out, struct err *err)
{
    struct bctx b = {.c = NULL, .a = a, .err = err}; /* header_add needs only the arena */
    fpath_push(&b.fp, "%s", path);
    return header_add(&b, pb, out);
}

/* ---- for RDS (rds.c) ---- */

int build_route_table(struct config *c, const struct hcm_cfg *hcm, const char *path,
                      const struct Envoy__Config__Route__V3__RouteConfiguration *prc, bool rebuild,
                      const struct route_table **out, struct err *err)
{
    struct bctx b = {
        .c = c, .a = &c->arena, .err = err, .hcm = hcm, .rds = true, .rebuild = rebuild};
    fpath_push(&b.fp, "%s", path);
    return route_table_at(&b, prc, out);
}

/* ---- for CDS (proxy/cds.c) ---- */

int build_cluster(struct config *c, const char *path,
                  const struct Envoy__Config__Cluster__V3__Cluster *pc, bool eds_endpoints,
                  struct err *err)
{
    struct bctx b = {
        .c = c, .a = &c->arena, .err = err, .cds = true, .eds_endpoints = eds_endpoints};
    fpath_push(&b.fp, "%s", path);
    struct cluster_cfg *cc = ARENA_NEW(b.a, struct cluster_cfg);
    c->clusters = cc;
    c->n_clusters = 0;
    c->dynamic = true; /* SDS over ADS only (build_tls.c) */
    int rc = cluster(&b, pc, 0, cc);
    if (rc != 0) {
        return rc;
    }
    c->n_clusters = 1;
    struct cluster_map *cm = ARENA_NEW(b.a, struct cluster_map);
    cluster_map_init(cm, b.a, cc, 1);
    c->cluster_map = cm;
    return 0;
}

/* ---- for LDS (proxy/lds.c) ---- */

int build_listener(struct config *c, const char *path,
                   const struct Envoy__Config__Listener__V3__Listener *pl, struct err *err)
{
    struct bctx b = {.c = c, .a = &c->arena, .err = err, .lds = true};
    fpath_push(&b.fp, "%s", path);
    struct listener_cfg *lc = ARENA_NEW(b.a, struct listener_cfg);
    c->listeners = lc;
    c->n_listeners = 0;
    size_t n_chains = pl->n_filter_chains + (pl->default_filter_chain != NULL ? 1 : 0);
    b.chains = ARENA_NEW_N(b.a, struct filter_chain_cfg, n_chains > 0 ? n_chains : 1);
    b.n_chains = 0;
    c->chains = b.chains;
    c->dynamic = true; /* SDS over ADS only (build_tls.c) */
    int rc = listener(&b, pl, 0, lc);
    if (rc != 0) {
        return rc;
    }
    c->n_listeners = 1;
    c->n_chains = b.n_chains;
    return 0;
}

/* ---- /config_dump ---- */

#define TYPE_PREFIX "type.googleapis.com/"

/* {"@type": <type of m>, ...fields of m} */
static json_t *typed(const ProtobufCMessage *m)
{
    json_t *o = json_object();
    json_object_set_new(o, "@type", json_sprintf(TYPE_PREFIX "%s", m->descriptor->name));
    json_t *j = pbjson_encode(m, pbtypes_find);
    json_object_update(o, j);
    json_decref(j);
    return o;
}

json_t *config_dump_resource(const ProtobufCMessage *m)
{
    json_t *o = typed(m);
    build_tls_redact(o);
    return o;
}

json_t *config_dump_section(json_t *configs, const char *type)
{
    char full[128];
    snprintf(full, sizeof(full), TYPE_PREFIX "envoy.admin.v3.%s", type);
    size_t i;
    json_t *v;
    json_array_foreach(configs, i, v)
    {
        const char *t = json_string_value(json_object_get(v, "@type"));
        if (t != NULL && strcmp(t, full) == 0) {
            return v;
        }
    }
    json_t *dump = json_object();
    json_object_set_new(dump, "@type", json_string(full));
    json_array_append_new(configs, dump);
    return dump;
}

static json_t *dump_section(const char *type, const char *list_key, json_t *list)
{
    json_t *o = json_object();
    json_object_set_new(o, "@type", json_string(type));
    json_object_set_new(o, list_key, list);
    return o;
}

/* The inline route configurations, from each listener's connection manager. */
static json_t *dump_routes(const PbBootstrap *pb)
{
    json_t *list = json_array();
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = pb->static_resources;
    for (size_t i = 0; sr != NULL && i < sr->n_listeners; i++) {
        const PbListener *pl = sr->listeners[i];
        for (size_t k = 0; k < pl->n_filter_chains; k++) {
            const PbFilterChain *fc = pl->filter_chains[k];
            for (size_t f = 0; f < fc->n_filters; f++) {
                const PbFilter *flt = fc->filters[f];
                ProtobufCMessage *m = NULL;
                struct err e;
                if (flt->config_type_case !=
                        ENVOY__CONFIG__LISTENER__V3__FILTER__CONFIG_TYPE_TYPED_CONFIG ||
                    !pbjson_any_is(flt->typed_config, &HCM_DESC) ||
                    pbjson_any_unpack(flt->typed_config, pbtypes_find, "", &m, &e) != 0) {
                    continue;
                }
                const PbHcm *h = (const PbHcm *)m;
                if (h->route_specifier_case ==
                        ENVOY__EXTENSIONS__FILTERS__NETWORK__HTTP_CONNECTION_MANAGER__V3__HTTP_CONNECTION_MANAGER__ROUTE_SPECIFIER_ROUTE_CONFIG &&
                    h->route_config != NULL) {
                    json_t *e2 = json_object();
                    json_object_set_new(e2, "route_config", typed(&h->route_config->base));
                    json_array_append_new(list, e2);
                }
                protobuf_c_message_free_unpacked(m, NULL);
            }
        }
    }
    return list;
}

json_t *config_dump_json(const struct config *c)
{
    json_t *root = json_object();
    json_t *configs = json_array();
    json_object_set_new(root, "configs", configs);
    if (c == NULL || c->bootstrap_pb == NULL) {
        return root;
    }
    const PbBootstrap *pb = c->bootstrap_pb;
    json_t *boot = json_object();
    json_object_set_new(boot, "@type",
                        json_string(TYPE_PREFIX "envoy.admin.v3.BootstrapConfigDump"));
    json_object_set_new(boot, "bootstrap", pbjson_encode(&pb->base, pbtypes_find));
    json_array_append_new(configs, boot);

    json_t *cl = json_array();
    json_t *ls = json_array();
    const Envoy__Config__Bootstrap__V3__Bootstrap__StaticResources *sr = pb->static_resources;
    for (size_t i = 0; sr != NULL && i < sr->n_clusters; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "cluster", typed(&sr->clusters[i]->base));
        json_array_append_new(cl, e);
    }
    for (size_t i = 0; sr != NULL && i < sr->n_listeners; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "listener", typed(&sr->listeners[i]->base));
        json_array_append_new(ls, e);
    }
    json_array_append_new(configs, dump_section(TYPE_PREFIX "envoy.admin.v3.ClustersConfigDump",
                                                "static_clusters", cl));
    json_array_append_new(configs, dump_section(TYPE_PREFIX "envoy.admin.v3.ListenersConfigDump",
                                                "static_listeners", ls));
    json_array_append_new(configs, dump_section(TYPE_PREFIX "envoy.admin.v3.RoutesConfigDump",
                                                "static_route_configs", dump_routes(pb)));
    build_tls_redact(root);
    return root;
}
