/* access_log: compile and render Envoy access log formats (see access_log.h). */
#include "proxy/http/access_log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proxy/core/xmalloc.h"
#include "proxy/http/grpc.h"
#include "proxy/http/headers.h"
#include "proxy/http/router.h"
#include "proxy/http/stream.h"
#include "proxy/net/accepted.h"
#include "proxy/net/tls.h"

enum al_op {
    AL_LITERAL,
    AL_START_TIME,
    AL_REQ,
    AL_RESP,
    AL_PROTOCOL,
    AL_RESPONSE_CODE,
    AL_RESPONSE_FLAGS,
    AL_BYTES_RECEIVED,
    AL_BYTES_SENT,
    AL_DURATION,
    AL_RESPONSE_DURATION,
    AL_UPSTREAM_HOST,
    AL_UPSTREAM_CLUSTER,
    AL_ROUTE_NAME,
    AL_DOWNSTREAM_REMOTE_ADDRESS,
    AL_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS,
    AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT,
    AL_DOWNSTREAM_LOCAL_ADDRESS,
    AL_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
    AL_DOWNSTREAM_LOCAL_PORT,
    AL_TLS,            /* a field of the client's TLS session: al_token.tls_field */
    AL_START_TIME_FMT, /* START_TIME(fmt): text is the format */
    AL_TRAILER,        /* TRAILER(X?Y): a response trailer */
    AL_RESPONSE_CODE_DETAILS,
    AL_CONNECTION_TERMINATION_DETAILS,
    AL_UPSTREAM_TRANSPORT_FAILURE_REASON,
    AL_REQUEST_DURATION,
    AL_REQUEST_TX_DURATION,
    AL_RESPONSE_TX_DURATION,
    AL_UPSTREAM_REMOTE_ADDRESS,
    AL_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT,
    AL_UPSTREAM_REMOTE_PORT,
    AL_HOSTNAME, /* text: gethostname() at compile time */
    AL_CONNECTION_ID,
    AL_UPSTREAM_REQUEST_ATTEMPT_COUNT,
    AL_GRPC_STATUS,        /* CAMEL_STRING (the default) */
    AL_GRPC_STATUS_NUMBER, /* GRPC_STATUS_NUMBER, GRPC_STATUS(NUMBER) */
    AL_RESPONSE_FLAGS_LONG,
    AL_REQUEST_HEADERS_BYTES,
    AL_RESPONSE_HEADERS_BYTES,
    AL_RESPONSE_TRAILERS_BYTES,
    AL_VIRTUAL_CLUSTER_NAME, /* always "-": remora has no virtual clusters */
    AL_DOWNSTREAM_REMOTE_PORT,
    AL_DOWNSTREAM_DIRECT_REMOTE_PORT,
    AL_UPSTREAM_LOCAL_ADDRESS,
    AL_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT,
    AL_UPSTREAM_LOCAL_PORT,
    AL_UPSTREAM_CONNECTION_ID,
};

struct al_token {
    enum al_op op;
    struct str text;  /* literal, or the header name (lower case) for REQ/RESP */
    struct str alt;   /* REQ(X?Y): the fallback header */
    uint32_t max_len; /* :N truncation, 0 = none */
    enum tls_field tls_field;
};

static const struct {
    const char *name;
    enum tls_field field;
} tls_ops[] = {
    {"REQUESTED_SERVER_NAME", TLS_FIELD_SNI},
    {"DOWNSTREAM_TLS_VERSION", TLS_FIELD_VERSION},
    {"DOWNSTREAM_TLS_CIPHER", TLS_FIELD_CIPHER},
    {"DOWNSTREAM_PEER_URI_SAN", TLS_FIELD_PEER_URI_SAN},
    {"DOWNSTREAM_LOCAL_URI_SAN", TLS_FIELD_LOCAL_URI_SAN},
    {"DOWNSTREAM_PEER_SUBJECT", TLS_FIELD_PEER_SUBJECT},
};

static const struct {
    const char *name;
    enum al_op op;
} simple_ops[] = {
    {"START_TIME", AL_START_TIME},
    {"PROTOCOL", AL_PROTOCOL},
    {"RESPONSE_CODE", AL_RESPONSE_CODE},
    {"RESPONSE_FLAGS", AL_RESPONSE_FLAGS},
    {"BYTES_RECEIVED", AL_BYTES_RECEIVED},
    {"BYTES_SENT", AL_BYTES_SENT},
    {"DURATION", AL_DURATION},
    {"RESPONSE_DURATION", AL_RESPONSE_DURATION},
    {"UPSTREAM_HOST", AL_UPSTREAM_HOST},
    {"UPSTREAM_CLUSTER", AL_UPSTREAM_CLUSTER},
    {"ROUTE_NAME", AL_ROUTE_NAME},
    {"DOWNSTREAM_REMOTE_ADDRESS", AL_DOWNSTREAM_REMOTE_ADDRESS},
    {"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", AL_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS", AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS},
    {"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
     AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT},
    {"DOWNSTREAM_LOCAL_ADDRESS", AL_DOWNSTREAM_LOCAL_ADDRESS},
    {"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", AL_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT},
    {"DOWNSTREAM_LOCAL_PORT", AL_DOWNSTREAM_LOCAL_PORT},
    {"RESPONSE_CODE_DETAILS", AL_RESPONSE_CODE_DETAILS},
    {"CONNECTION_TERMINATION_DETAILS", AL_CONNECTION_TERMINATION_DETAILS},
    {"UPSTREAM_TRANSPORT_FAILURE_REASON", AL_UPSTREAM_TRANSPORT_FAILURE_REASON},
    {"REQUEST_DURATION", AL_REQUEST_DURATION},
    {"REQUEST_TX_DURATION", AL_REQUEST_TX_DURATION},
    {"RESPONSE_TX_DURATION", AL_RESPONSE_TX_DURATION},
    {"UPSTREAM_REMOTE_ADDRESS", AL_UPSTREAM_REMOTE_ADDRESS},
    {"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", AL_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT},
    {"UPSTREAM_REMOTE_PORT", AL_UPSTREAM_REMOTE_PORT},
    {"HOSTNAME", AL_HOSTNAME},
    {"CONNECTION_ID", AL_CONNECTION_ID},
    {"UPSTREAM_REQUEST_ATTEMPT_COUNT", AL_UPSTREAM_REQUEST_ATTEMPT_COUNT},
    {"GRPC_STATUS", AL_GRPC_STATUS},
    {"GRPC_STATUS_NUMBER", AL_GRPC_STATUS_NUMBER},
    {"RESPONSE_FLAGS_LONG", AL_RESPONSE_FLAGS_LONG},
    {"REQUEST_HEADERS_BYTES", AL_REQUEST_HEADERS_BYTES},
    {"RESPONSE_HEADERS_BYTES", AL_RESPONSE_HEADERS_BYTES},
    {"RESPONSE_TRAILERS_BYTES", AL_RESPONSE_TRAILERS_BYTES},
    {"VIRTUAL_CLUSTER_NAME", AL_VIRTUAL_CLUSTER_NAME},
    {"DOWNSTREAM_REMOTE_PORT", AL_DOWNSTREAM_REMOTE_PORT},
    {"DOWNSTREAM_DIRECT_REMOTE_PORT", AL_DOWNSTREAM_DIRECT_REMOTE_PORT},
    {"UPSTREAM_LOCAL_ADDRESS", AL_UPSTREAM_LOCAL_ADDRESS},
    {"UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT", AL_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT},
    {"UPSTREAM_LOCAL_PORT", AL_UPSTREAM_LOCAL_PORT},
    {"UPSTREAM_CONNECTION_ID", AL_UPSTREAM_CONNECTION_ID},
};

/* Operators Envoy has that remora cannot honour (no dynamic metadata, no filter state, no
 * upstream TLS details kept per stream): rejected by name, with this note. */
static const char *const unsupported_ops[] = {
    "DYNAMIC_METADATA",
    "CLUSTER_METADATA",
    "UPSTREAM_METADATA",
    "FILTER_STATE",
    "UPSTREAM_FILTER_STATE",
    "UPSTREAM_TLS_VERSION",
    "UPSTREAM_TLS_CIPHER",
    "UPSTREAM_TLS_SESSION_ID",
    "UPSTREAM_PEER_URI_SAN",
    "UPSTREAM_PEER_SUBJECT",
    "UPSTREAM_PEER_ISSUER",
    "UPSTREAM_PEER_CERT",
    "UPSTREAM_LOCAL_URI_SAN",
    "UPSTREAM_LOCAL_SUBJECT",
    "REQ_WITHOUT_QUERY",
    "ENVIRONMENT",
    "CEL",
    "METADATA",
    "STREAM_ID",
    "UNIQUE_ID",
    "TRACE_ID",
    "ACCESS_LOG_TYPE",
    "CUSTOM_FLAGS",
    "QUERY_PARAM",
    "PATH",
    "ROUNDTRIP_DURATION",
    "DOWNSTREAM_HANDSHAKE_DURATION",
    "COMMON_DURATION",
    "UPSTREAM_WIRE_BYTES_SENT",
    "UPSTREAM_WIRE_BYTES_RECEIVED",
    "UPSTREAM_HEADER_BYTES_SENT",
    "UPSTREAM_HEADER_BYTES_RECEIVED",
    "DOWNSTREAM_WIRE_BYTES_SENT",
    "DOWNSTREAM_WIRE_BYTES_RECEIVED",
    "DOWNSTREAM_HEADER_BYTES_SENT",
    "DOWNSTREAM_HEADER_BYTES_RECEIVED",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_HOST_NAME",
    "DOWNSTREAM_TRANSPORT_FAILURE_REASON",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS",
    "DOWNSTREAM_DIRECT_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_LOCAL_PORT",
    "DOWNSTREAM_LOCAL_SUBJECT",
    "DOWNSTREAM_PEER_ISSUER",
    "DOWNSTREAM_PEER_CERT",
    "DOWNSTREAM_PEER_SERIAL",
    "DOWNSTREAM_PEER_FINGERPRINT_1",
    "DOWNSTREAM_PEER_FINGERPRINT_256",
    "DOWNSTREAM_PEER_CERT_V_START",
    "DOWNSTREAM_PEER_CERT_V_END",
    "DOWNSTREAM_PEER_DNS_SAN",
    "DOWNSTREAM_LOCAL_DNS_SAN",
    "DOWNSTREAM_PEER_IP_SAN",
    "DOWNSTREAM_LOCAL_IP_SAN",
    "DOWNSTREAM_TLS_SESSION_ID",
};

static struct str lower_dup(struct arena *a, const char *p, size_t len)
{
    char *d = arena_alloc(a, len + 1);
    for (size_t i = 0; i < len; i++) {
        d[i] = (char)tolower((unsigned char)p[i]);
    }
    d[len] = '\0';
    return (struct str){d, len};
}

int access_log_format_compile(struct al_format *f, struct str fmt, struct arena *a, struct err *err)
{
    if (fmt.len == 0) {
        fmt = STR_LIT(ACCESS_LOG_DEFAULT_FORMAT);
    }
    /* Upper bound on tokens: each '%' starts at most one. */
    size_t cap = 1;
    for (size_t i = 0; i < fmt.len; i++) {
        cap += fmt.p[i] == '%';
    }
    struct al_token *t = ARENA_NEW_N(a, struct al_token, cap * 2 + 1);
    uint32_t n = 0;
    size_t i = 0;
    while (i < fmt.len) {
        const char *pct = memchr(fmt.p + i, '%', fmt.len - i);
        size_t lit_end = pct ? (size_t)(pct - fmt.p) : fmt.len;
        if (lit_end > i) {
            t[n].op = AL_LITERAL;
            t[n].text = arena_strdup(a, (struct str){fmt.p + i, lit_end - i});
            n++;
        }
        if (pct == NULL) {
            break;
        }
        i = lit_end + 1;
        /* NAME(arg): the operator ends at the '%' after the ')' (START_TIME's argument has
         * '%' of its own) */
        size_t j = i;
        while (j < fmt.len && (isupper((unsigned char)fmt.p[j]) ||
                               isdigit((unsigned char)fmt.p[j]) || fmt.p[j] == '_')) {
            j++;
        }
        const char *end;
        if (j < fmt.len && fmt.p[j] == '(') {
            const char *cl = memchr(fmt.p + j, ')', fmt.len - j);
            end = cl != NULL ? memchr(cl, '%', fmt.len - (size_t)(cl - fmt.p)) : NULL;
        } else {
            end = memchr(fmt.p + i, '%', fmt.len - i);
        }
        if (end == NULL) {
            return err_set(err, NULL, "access log format: unterminated '%%' at offset %zu",
                           lit_end);
        }
        struct str cmd = {fmt.p + i, (size_t)(end - (fmt.p + i))};
        i = (size_t)(end - fmt.p) + 1;
        if (cmd.len == 0) {
            t[n].op = AL_LITERAL; /* "%%" is a literal percent sign */
            t[n].text = STR_LIT("%");
            n++;
            continue;
        }
        struct al_token *tk = &t[n];
        memset(tk, 0, sizeof(*tk));
        /* trailing ":N" */
        const char *close = memchr(cmd.p, ')', cmd.len);
        const char *colon =
            memchr(close ? close : cmd.p, ':', cmd.len - (size_t)((close ? close : cmd.p) - cmd.p));
        if (colon != NULL) {
            unsigned long long v;
            if (str_to_u64((struct str){colon + 1, cmd.len - (size_t)(colon + 1 - cmd.p)}, &v) !=
                0) {
                return err_set(err, NULL, "access log format: bad length in %%%.*s%%",
                               STR_FMT(cmd));
            }
            tk->max_len = (uint32_t)v;
            cmd.len = (size_t)(colon - cmd.p);
        }
        const char *paren = memchr(cmd.p, '(', cmd.len);
        struct str name = paren ? (struct str){cmd.p, (size_t)(paren - cmd.p)} : cmd;
        struct str arg = STR_NULL;
        if (paren != NULL) {
            if (cmd.p[cmd.len - 1] != ')') {
                return err_set(err, NULL, "access log format: missing ')' in %%%.*s%%",
                               STR_FMT(cmd));
            }
            arg = (struct str){paren + 1, cmd.len - (size_t)(paren + 1 - cmd.p) - 1};
        }
        bool is_req = paren && str_eq_lit(name, "REQ");
        bool is_resp = paren && str_eq_lit(name, "RESP");
        bool is_trailer = paren && str_eq_lit(name, "TRAILER");
        if (is_req || is_resp || is_trailer) {
            const char *q = memchr(arg.p, '?', arg.len);
            tk->op = is_req ? AL_REQ : is_resp ? AL_RESP : AL_TRAILER;
            tk->text = lower_dup(a, arg.p, q ? (size_t)(q - arg.p) : arg.len);
            if (q != NULL) {
                tk->alt = lower_dup(a, q + 1, arg.len - (size_t)(q + 1 - arg.p));
            }
            n++;
            continue;
        }
        if (paren && str_eq_lit(name, "START_TIME")) {
            tk->op = arg.len > 0 ? AL_START_TIME_FMT : AL_START_TIME;
            tk->text = arena_strdup(a, arg);
            n++;
            continue;
        }
        if (paren && str_eq_lit(name, "GRPC_STATUS")) {
            if (str_eq_lit(arg, "NUMBER")) {
                tk->op = AL_GRPC_STATUS_NUMBER;
            } else if (arg.len == 0 || str_eq_lit(arg, "CAMEL_STRING")) {
                tk->op = AL_GRPC_STATUS;
            } else {
                return err_set(err, NULL,
                               "access log format: %%%.*s%%: only CAMEL_STRING and NUMBER are "
                               "supported by remora yet",
                               STR_FMT(cmd));
            }
            n++;
            continue;
        }
        for (size_t k = 0; k < sizeof(unsupported_ops) / sizeof(unsupported_ops[0]); k++) {
            if (str_eq_lit(name, unsupported_ops[k])) {
                return err_set(err, NULL,
                               "access log format: command %%%.*s%% not supported by remora yet",
                               STR_FMT(cmd));
            }
        }
        if (paren != NULL) {
            return err_set(err, NULL,
                           "access log format: command %%%.*s%% is not an Envoy command operator",
                           STR_FMT(cmd));
        }
        if (str_eq_lit(cmd, "HOSTNAME")) {
            char host[256];
            if (gethostname(host, sizeof(host)) != 0) {
                host[0] = '\0';
            }
            host[sizeof(host) - 1] = '\0';
            tk->op = AL_HOSTNAME;
            tk->text = arena_strdup(a, str_from_c(host));
            n++;
            continue;
        }
        bool found = false;
        for (size_t k = 0; k < sizeof(simple_ops) / sizeof(simple_ops[0]); k++) {
            if (str_eq_lit(cmd, simple_ops[k].name)) {
                tk->op = simple_ops[k].op;
                found = true;
                break;
            }
        }
        for (size_t k = 0; !found && k < sizeof(tls_ops) / sizeof(tls_ops[0]); k++) {
            if (str_eq_lit(cmd, tls_ops[k].name)) {
                tk->op = AL_TLS;
                tk->tls_field = tls_ops[k].field;
                found = true;
            }
        }
        if (!found) {
            return err_set(err, NULL,
                           "access log format: command %%%.*s%% is not an Envoy command operator",
                           STR_FMT(cmd));
        }
        n++;
    }
    memset(f, 0, sizeof(*f));
    f->tokens = t;
    f->n_tokens = n;
    return 0;
}

/* A compiled dictionary entry: `key` as JSON (quoted, escaped, with its ':'), then the value. */
struct al_json {
    struct str key;
    struct al_format value; /* tokens only */
    struct str raw;         /* set: a literal JSON value instead */
};

static void put_json_string(struct buf *out, const char *p, size_t n)
{
    buf_append(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        buf_append(out, p + run, i - run);
        run = i + 1;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_append(out, e, 2);
        } else if (c == '\n') {
            buf_append(out, "\\n", 2);
        } else {
            buf_printf(out, "\\u%04x", c);
        }
    }
    buf_append(out, p + run, n - run);
    buf_append(out, "\"", 1);
}

static int json_in_cmp(const void *x, const void *y)
{
    const struct al_json_in *a = x;
    const struct al_json_in *b = y;
    size_t n = a->key.len < b->key.len ? a->key.len : b->key.len;
    int c = memcmp(a->key.p, b->key.p, n);
    return c != 0 ? c : (a->key.len > b->key.len) - (a->key.len < b->key.len);
}

int access_log_format_compile_json(struct al_format *f, const struct al_json_in *in, uint32_t n,
                                   bool typed, struct arena *a, struct err *err)
{
    struct al_json_in *sorted = ARENA_NEW_N(a, struct al_json_in, n ? n : 1);
    if (n > 0) {
        memcpy(sorted, in, n * sizeof(*in));
    }
    qsort(sorted, n, sizeof(*sorted), json_in_cmp);
    struct al_json *j = ARENA_NEW_N(a, struct al_json, n ? n : 1);
    for (uint32_t i = 0; i < n; i++) {
        struct buf k;
        buf_init(&k);
        put_json_string(&k, sorted[i].key.p, sorted[i].key.len);
        buf_append(&k, ":", 1);
        j[i].key = arena_strdup(a, (struct str){(const char *)buf_head(&k), buf_len(&k)});
        buf_deinit(&k);
        if (sorted[i].raw.len > 0) {
            j[i].raw = arena_strdup(a, sorted[i].raw);
            continue;
        }
        if (sorted[i].format.len == 0) {
            continue; /* "": an empty string (not the default format) */
        }
        if (access_log_format_compile(&j[i].value, sorted[i].format, a, err) != 0) {
            char msg[sizeof(err->msg)];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            return err_set(err, NULL, "key '%.*s': %s", STR_FMT(sorted[i].key), msg);
        }
    }
    memset(f, 0, sizeof(*f));
    f->json = j;
    f->n_json = n;
    f->typed = typed;
    return 0;
}

void access_log_time(char *dst, double t)
{
    /* Round to the millisecond first: 1700000000.123 is not exact in binary and truncating
     * it would print .122. */
    long long total_ms = (long long)(t * 1000.0 + 0.5);
    time_t sec = (time_t)(total_ms / 1000);
    unsigned ms = (unsigned)(total_ms % 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(dst, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(dst + n, 32 - n, ".%03uZ", ms);
}

/* An address with its port, Envoy's way: "10.0.0.1:80", "[::1]:80". */
static void put_address(struct buf *out, struct str ip, uint16_t port)
{
    bool v6 = memchr(ip.p, ':', ip.len) != NULL;
    buf_printf(out, v6 ? "[%.*s]:%u" : "%.*s:%u", STR_FMT(ip), port);
}

/* The downstream local address (the original destination, when restored) as one of the
 * three %DOWNSTREAM_LOCAL_*% operators; "-" when unknown. */
static void put_local(struct buf *out, const struct sockaddr *sa, int kind)
{
    if (sa == NULL || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) {
        buf_append(out, "-", 1);
        return;
    }
    char ip[48];
    uint16_t port;
    accepted_addr_text(sa, ip, &port);
    if (kind == AL_DOWNSTREAM_LOCAL_ADDRESS || kind == AL_UPSTREAM_LOCAL_ADDRESS) {
        put_address(out, str_from_c(ip), port);
    } else if (kind == AL_DOWNSTREAM_LOCAL_PORT || kind == AL_UPSTREAM_LOCAL_PORT) {
        buf_printf(out, "%u", (unsigned)port);
    } else {
        buf_append_str(out, ip);
    }
}

static void put_value(struct buf *out, struct str v, uint32_t max_len)
{
    if (v.len == 0) {
        buf_append(out, "-", 1);
        return;
    }
    if (max_len && v.len > max_len) {
        v.len = max_len;
    }
    buf_append(out, v.p, v.len);
}

static struct str req_header(const struct al_entry *s, struct str name)
{
    if (str_eq_lit(name, ":method")) {
        return s->method;
    }
    if (str_eq_lit(name, ":path")) {
        return s->path;
    }
    if (str_eq_lit(name, ":authority") || str_eq_lit(name, "host")) {
        return s->authority;
    }
    if (str_eq_lit(name, ":scheme")) {
        return s->tls != NULL ? STR_LIT("https") : STR_LIT("http");
    }
    const struct header *h = s->req != NULL ? headers_get(s->req, name) : NULL;
    return h ? h->value : STR_NULL;
}

static const struct {
    uint32_t bit;
    const char *name;
} flag_names[] = {
    {RF_UH, "UH"}, {RF_UF, "UF"},   {RF_UT, "UT"},   {RF_UC, "UC"},   {RF_NR, "NR"}, {RF_DC, "DC"},
    {RF_SI, "SI"}, {RF_DPE, "DPE"}, {RF_UPE, "UPE"}, {RF_UR, "UR"},   {RF_DT, "DT"}, {RF_DI, "DI"},
    {RF_FI, "FI"}, {RF_RL, "RL"},   {RF_UO, "UO"},   {RF_URX, "URX"}, {RF_NC, "NC"}, {RF_LH, "LH"},
};

/* Envoy's long response flag names, in flag_names' order. */
static const char *const flag_long_names[] = {
    "NoHealthyUpstream",      "UpstreamConnectionFailure",
    "UpstreamRequestTimeout", "UpstreamConnectionTermination",
    "NoRouteFound",           "DownstreamConnectionTermination",
    "StreamIdleTimeout",      "DownstreamProtocolError",
    "UpstreamProtocolError",  "UpstreamRemoteReset",
    "DurationTimeout",        "DelayInjected",
    "FaultInjected",          "RateLimited",
    "UpstreamOverflow",       "UpstreamRetryLimitExceeded",
    "NoClusterFound",         "FailedLocalHealthCheck",
};
_Static_assert(sizeof(flag_long_names) / sizeof(flag_long_names[0]) ==
                   sizeof(flag_names) / sizeof(flag_names[0]),
               "a long name for each flag");

/* Envoy's short flag names that remora never sets (response_flag_filter accepts them). */
static const char *const flags_never_set[] = {
    "LR", "UAEX", "RLSE", "IH", "UMSDR", "RFCF", "NFCF", "DO", "DF", "OM", "DR", "UDO",
};

int64_t access_log_flag_bit(struct str name)
{
    for (size_t k = 0; k < sizeof(flag_names) / sizeof(flag_names[0]); k++) {
        if (str_eq_lit(name, flag_names[k].name)) {
            return flag_names[k].bit;
        }
    }
    for (size_t k = 0; k < sizeof(flags_never_set) / sizeof(flags_never_set[0]); k++) {
        if (str_eq_lit(name, flags_never_set[k])) {
            return 0;
        }
    }
    return -1;
}

static void put_flags(struct buf *out, uint32_t flags, bool long_names)
{
    bool any = false;
    for (size_t k = 0; k < sizeof(flag_names) / sizeof(flag_names[0]); k++) {
        if (flags & flag_names[k].bit) {
            if (any) {
                buf_append(out, ",", 1);
            }
            buf_append_str(out, long_names ? flag_long_names[k] : flag_names[k].name);
            any = true;
        }
    }
    if (!any) {
        buf_append(out, "-", 1);
    }
}

/* gRPC status names as Envoy's GRPC_STATUS prints them (CAMEL_STRING). */
static const char *const grpc_names[] = {
    "OK",       "Canceled",        "Unknown",          "InvalidArgument",   "DeadlineExceeded",
    "NotFound", "AlreadyExists",   "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
    "Aborted",  "OutOfRange",      "Unimplemented",    "Internal",          "Unavailable",
    "DataLoss", "Unauthenticated",
};

/* The response's gRPC status as Envoy's Grpc::Common::getGrpcStatus finds it: grpc-status in
 * the trailers, else in the headers (Trailers-Only), else inferred from the HTTP status; -1
 * when there is none (no response). */
static int64_t grpc_status_of(const struct al_entry *e)
{
    const struct headers *hs[2] = {e->resp_trailers, e->resp};
    for (int i = 0; i < 2; i++) {
        const struct header *h = hs[i] != NULL ? headers_get(hs[i], STR_LIT("grpc-status")) : NULL;
        uint32_t v;
        if (h != NULL && grpc_status_parse(h->value, &v) == 0) {
            return v;
        }
    }
    return e->status > 0 ? grpc_status_from_http(e->status) : -1;
}

/* Milliseconds from `a` to `b` (loop times), or "-" when either is unknown. */
static void put_ms(struct buf *out, double a, double b)
{
    if (a > 0 && b > 0 && b >= a) {
        buf_printf(out, "%.0f", (b - a) * 1000.0);
    } else {
        buf_append(out, "-", 1);
    }
}

/* Envoy's HeaderMap::byteSize(): the sum of the names' and values' lengths. */
static uint64_t hdr_bytes(const struct headers *h)
{
    uint64_t n = 0;
    for (uint32_t i = 0; h != NULL && i < h->n; i++) {
        n += h->v[i].name.len + h->v[i].value.len;
    }
    return n;
}

/* START_TIME(fmt): strftime (UTC) with Envoy's additions: %s (seconds since the epoch), %f
 * and %1f..%9f (the fraction of the second, 9 digits by default). */
static void put_start_time(struct buf *out, struct str fmt, double t)
{
    double whole = (double)(long long)t;
    long long nanos = (long long)((t - whole) * 1e9 + 0.5);
    if (nanos >= 1000000000LL) {
        nanos = 999999999LL;
    }
    time_t sec = (time_t)whole;
    struct tm tm;
    gmtime_r(&sec, &tm);
    char spec[512];
    size_t n = 0;
    for (size_t i = 0; i < fmt.len && n + 24 < sizeof(spec); i++) {
        char c = fmt.p[i];
        if (c != '%' || i + 1 >= fmt.len) {
            spec[n++] = c;
            continue;
        }
        char d = fmt.p[i + 1];
        if (d == 's') {
            n += (size_t)snprintf(spec + n, sizeof(spec) - n, "%lld", (long long)sec);
            i++;
        } else if (d == 'f' || (d >= '1' && d <= '9' && i + 2 < fmt.len && fmt.p[i + 2] == 'f')) {
            int digits = d == 'f' ? 9 : d - '0';
            char frac[24];
            snprintf(frac, sizeof(frac), "%09lld", nanos);
            memcpy(spec + n, frac, (size_t)digits);
            n += (size_t)digits;
            i += d == 'f' ? 1 : 2;
        } else {
            spec[n++] = c; /* strftime's: copied with the next character */
            spec[n++] = d;
            i++;
        }
    }
    spec[n] = '\0';
    char res[1024];
    /* the format is the operator's argument, checked when the config was built */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    size_t len = n > 0 ? strftime(res, sizeof(res), spec, &tm) : 0;
#pragma GCC diagnostic pop
    put_value(out, (struct str){res, len}, 0);
}

static void put_details(struct buf *out, const struct al_entry *e)
{
    if (e->details == NULL) {
        buf_append(out, "-", 1);
        return;
    }
    buf_append_str(out, e->details);
    if (e->reset_reason != NULL) {
        buf_printf(out, "{%s", e->reset_reason);
        if (e->transport_errno != 0) {
            buf_printf(out, ",delayed_connect_error:_%d", e->transport_errno);
        }
        buf_append(out, "}", 1);
    }
}

/* The upstream host text "ip:port" / "[v6]:port" split at its last ':'. */
static void put_upstream_part(struct buf *out, struct str host, enum al_op op)
{
    const char *colon = NULL;
    for (size_t i = host.len; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            colon = host.p + i - 1;
            break;
        }
    }
    if (host.len == 0 || colon == NULL) {
        put_value(out, op == AL_UPSTREAM_REMOTE_PORT ? STR_NULL : host, 0);
        return;
    }
    if (op == AL_UPSTREAM_REMOTE_PORT) {
        buf_append(out, colon + 1, host.len - (size_t)(colon + 1 - host.p));
        return;
    }
    struct str ip = {host.p, (size_t)(colon - host.p)};
    if (ip.len >= 2 && ip.p[0] == '[' && ip.p[ip.len - 1] == ']') {
        ip.p++;
        ip.len -= 2;
    }
    buf_append(out, ip.p, ip.len);
}

static void render_tokens(struct buf *out, const struct al_format *f, const struct al_entry *s);

/* A typed dictionary's value that is one operator alone: a number (the numeric operators) or
 * null (any operator without a value, "-" in text) when it is one; else nothing is written. */
static bool put_typed(struct buf *out, const struct al_format *v, const struct al_entry *s)
{
    if (v->n_tokens != 1 || v->tokens[0].op == AL_LITERAL) {
        return false;
    }
    enum al_op op = v->tokens[0].op;
    bool numeric = op == AL_RESPONSE_CODE || op == AL_BYTES_RECEIVED || op == AL_BYTES_SENT ||
                   op == AL_DURATION || op == AL_RESPONSE_DURATION || op == AL_REQUEST_DURATION ||
                   op == AL_REQUEST_TX_DURATION || op == AL_RESPONSE_TX_DURATION ||
                   op == AL_CONNECTION_ID || op == AL_UPSTREAM_REQUEST_ATTEMPT_COUNT ||
                   op == AL_GRPC_STATUS_NUMBER || op == AL_REQUEST_HEADERS_BYTES ||
                   op == AL_RESPONSE_HEADERS_BYTES || op == AL_RESPONSE_TRAILERS_BYTES ||
                   op == AL_UPSTREAM_REMOTE_PORT || op == AL_UPSTREAM_LOCAL_PORT ||
                   op == AL_UPSTREAM_CONNECTION_ID;
    size_t before = buf_len(out);
    render_tokens(out, v, s);
    size_t len = buf_len(out) - before;
    /* buf is contiguous: dropping what was just rendered is moving its end back */
    if (len == 1 && buf_head(out)[before] == '-') {
        out->end -= 1;
        buf_append(out, "null", 4);
        return true;
    }
    if (numeric) {
        return true;
    }
    out->end -= len; /* a string: the caller quotes it */
    return false;
}

static void render_json(struct buf *out, const struct al_format *f, const struct al_entry *s)
{
    buf_append(out, "{", 1);
    struct buf v;
    buf_init(&v);
    for (uint32_t i = 0; i < f->n_json; i++) {
        const struct al_json *j = &f->json[i];
        if (i > 0) {
            buf_append(out, ",", 1);
        }
        buf_append(out, j->key.p, j->key.len);
        if (j->raw.len > 0) {
            buf_append(out, j->raw.p, j->raw.len);
            continue;
        }
        if (f->typed && put_typed(out, &j->value, s)) {
            continue;
        }
        render_tokens(&v, &j->value, s);
        put_json_string(out, (const char *)buf_head(&v), buf_len(&v));
        buf_consume(&v, buf_len(&v));
    }
    buf_deinit(&v);
    buf_append(out, "}\n", 2);
}

void access_log_render(struct buf *out, const struct al_format *f, const struct al_entry *s)
{
    if (f->json != NULL) {
        render_json(out, f, s);
        return;
    }
    render_tokens(out, f, s);
}

static void render_tokens(struct buf *out, const struct al_format *f, const struct al_entry *s)
{
    char tmp[64];
    for (uint32_t i = 0; i < f->n_tokens; i++) {
        const struct al_token *t = &f->tokens[i];
        switch (t->op) {
        case AL_LITERAL:
            buf_append(out, t->text.p, t->text.len);
            break;
        case AL_START_TIME:
            access_log_time(tmp, s->t_start);
            buf_append_str(out, tmp);
            break;
        case AL_REQ: {
            struct str v = req_header(s, t->text);
            if (v.len == 0 && t->alt.len > 0) {
                v = req_header(s, t->alt);
            }
            put_value(out, v, t->max_len);
            break;
        }
        case AL_RESP: {
            struct str v = STR_NULL;
            const struct header *h = s->resp != NULL ? headers_get(s->resp, t->text) : NULL;
            if (h == NULL && t->alt.len > 0 && s->resp != NULL) {
                h = headers_get(s->resp, t->alt);
            }
            if (h != NULL) {
                v = h->value;
            }
            put_value(out, v, t->max_len);
            break;
        }
        case AL_PROTOCOL:
            put_value(out, s->protocol, 0);
            break;
        case AL_RESPONSE_CODE:
            buf_printf(out, "%d", s->status);
            break;
        case AL_RESPONSE_FLAGS:
        case AL_RESPONSE_FLAGS_LONG:
            put_flags(out, s->flags, t->op == AL_RESPONSE_FLAGS_LONG);
            break;
        case AL_BYTES_RECEIVED:
            buf_printf(out, "%llu", (unsigned long long)s->bytes_received);
            break;
        case AL_BYTES_SENT:
            buf_printf(out, "%llu", (unsigned long long)s->bytes_sent);
            break;
        case AL_DURATION:
            buf_printf(out, "%.0f", (s->t_end - s->t_start) * 1000.0);
            break;
        case AL_RESPONSE_DURATION:
            if (s->t_upstream_headers > 0) {
                buf_printf(out, "%.0f", (s->t_upstream_headers - s->t_start) * 1000.0);
            } else {
                buf_append(out, "-", 1);
            }
            break;
        case AL_UPSTREAM_HOST:
            put_value(out, s->upstream_host, 0);
            break;
        case AL_UPSTREAM_CLUSTER:
            put_value(out, s->cluster, 0);
            break;
        case AL_ROUTE_NAME:
            put_value(out, s->route_name, 0);
            break;
        case AL_DOWNSTREAM_REMOTE_ADDRESS:
            if (s->remote_ip.p != NULL) {
                put_address(out, s->remote_ip, s->remote_port);
            } else {
                put_address(out, str_from_c(s->peer_ip), s->peer_port);
            }
            break;
        case AL_DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
            if (s->remote_ip.p != NULL) {
                buf_append(out, s->remote_ip.p, s->remote_ip.len);
            } else {
                buf_append_str(out, s->peer_ip);
            }
            break;
        case AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS:
            put_address(out, str_from_c(s->direct_ip != NULL ? s->direct_ip : s->peer_ip),
                        s->direct_ip != NULL ? s->direct_port : s->peer_port);
            break;
        case AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT:
            buf_append_str(out, s->direct_ip != NULL ? s->direct_ip : s->peer_ip);
            break;
        case AL_DOWNSTREAM_LOCAL_ADDRESS:
        case AL_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
        case AL_DOWNSTREAM_LOCAL_PORT:
            put_local(out, s->local, (int)t->op);
            break;
        case AL_START_TIME_FMT:
            put_start_time(out, t->text, s->t_start);
            break;
        case AL_TRAILER: {
            const struct headers *tr = s->resp_trailers;
            const struct header *h = tr != NULL ? headers_get(tr, t->text) : NULL;
            if (h == NULL && t->alt.len > 0 && tr != NULL) {
                h = headers_get(tr, t->alt);
            }
            put_value(out, h != NULL ? h->value : STR_NULL, t->max_len);
            break;
        }
        case AL_RESPONSE_CODE_DETAILS:
            put_details(out, s);
            break;
        case AL_CONNECTION_TERMINATION_DETAILS:
            put_value(out, s->conn_termination ? str_from_c(s->conn_termination) : STR_NULL, 0);
            break;
        case AL_UPSTREAM_TRANSPORT_FAILURE_REASON:
            if (s->transport_errno != 0) {
                buf_printf(out, "delayed_connect_error:_%d", s->transport_errno);
            } else {
                buf_append(out, "-", 1);
            }
            break;
        case AL_REQUEST_DURATION:
            put_ms(out, s->t_start, s->t_req_done);
            break;
        case AL_REQUEST_TX_DURATION:
            put_ms(out, s->t_start, s->t_req_sent);
            break;
        case AL_RESPONSE_TX_DURATION:
            put_ms(out, s->t_upstream_headers, s->t_upstream_headers > 0 ? s->t_end : 0);
            break;
        case AL_UPSTREAM_REMOTE_ADDRESS:
            put_value(out, s->upstream_host, 0);
            break;
        case AL_UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT:
        case AL_UPSTREAM_REMOTE_PORT:
            put_upstream_part(out, s->upstream_host, t->op);
            break;
        case AL_HOSTNAME:
            put_value(out, t->text, 0);
            break;
        case AL_CONNECTION_ID:
            buf_printf(out, "%llu", (unsigned long long)s->conn_id);
            break;
        case AL_UPSTREAM_REQUEST_ATTEMPT_COUNT:
            buf_printf(out, "%u", (unsigned)s->attempts);
            break;
        case AL_UPSTREAM_LOCAL_ADDRESS:
        case AL_UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
        case AL_UPSTREAM_LOCAL_PORT:
            put_local(out, s->upstream_local, (int)t->op);
            break;
        case AL_UPSTREAM_CONNECTION_ID:
            if (s->upstream_conn_id != 0) {
                buf_printf(out, "%llu", (unsigned long long)s->upstream_conn_id);
            } else {
                buf_append(out, "-", 1);
            }
            break;
        case AL_GRPC_STATUS:
        case AL_GRPC_STATUS_NUMBER: {
            int64_t gs = s->is_grpc ? grpc_status_of(s) : -1;
            if (gs < 0) {
                buf_append(out, "-", 1);
            } else if (t->op == AL_GRPC_STATUS &&
                       gs < (int64_t)(sizeof(grpc_names) / sizeof(grpc_names[0]))) {
                buf_append_str(out, grpc_names[gs]);
            } else {
                buf_printf(out, "%lld", (long long)gs);
            }
            break;
        }
        case AL_REQUEST_HEADERS_BYTES: {
            /* the pseudo-headers remora keeps apart count as Envoy's header map holds them */
            uint64_t n = hdr_bytes(s->req);
            if (s->method.len > 0) {
                n += 7 + s->method.len + 5 + s->path.len + 10 + s->authority.len + 7 +
                     (s->tls != NULL ? 5 : 4);
            }
            buf_printf(out, "%llu", (unsigned long long)n);
            break;
        }
        case AL_RESPONSE_HEADERS_BYTES:
            buf_printf(out, "%llu",
                       (unsigned long long)(hdr_bytes(s->resp) + (s->status > 0 ? 10 : 0)));
            break;
        case AL_RESPONSE_TRAILERS_BYTES:
            buf_printf(out, "%llu", (unsigned long long)hdr_bytes(s->resp_trailers));
            break;
        case AL_VIRTUAL_CLUSTER_NAME:
            buf_append(out, "-", 1);
            break;
        case AL_DOWNSTREAM_REMOTE_PORT: /* 0 for an x-forwarded-for address, as Envoy's */
            buf_printf(out, "%u",
                       (unsigned)(s->remote_ip.p != NULL ? s->remote_port : s->peer_port));
            break;
        case AL_DOWNSTREAM_DIRECT_REMOTE_PORT:
            buf_printf(out, "%u", (unsigned)(s->direct_ip != NULL ? s->direct_port : s->peer_port));
            break;
        case AL_TLS:
            if (t->tls_field == TLS_FIELD_SNI && s->tls == NULL && s->sni.len > 0) {
                put_value(out, s->sni, t->max_len); /* passed through, seen by tls_inspector */
                break;
            }
            tls_conn_put_field(s->tls, t->tls_field, out);
            break;
        }
    }
}

struct access_log_sink *access_log_sink_open(const char *path, struct err *err)
{
    int fd;
    if (strcmp(path, "/dev/stdout") == 0) {
        fd = dup(1);
    } else if (strcmp(path, "/dev/stderr") == 0) {
        fd = dup(2);
    } else {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    }
    if (fd < 0) {
        err_set(err, NULL, "access log %s: %s", path, strerror(errno));
        return NULL;
    }
    struct access_log_sink *s = xcalloc(1, sizeof(*s));
    s->fd = fd;
    s->path = xstrdup(path);
    return s;
}

void access_log_sink_close(struct access_log_sink *s)
{
    if (s == NULL) {
        return;
    }
    close(s->fd);
    free(s->path);
    free(s);
}

void access_log_flush(struct access_log_sink *sink, struct buf *b)
{
    while (buf_len(b) > 0) {
        size_t len = buf_len(b);
        if (len > PIPE_BUF) {
            /* cut at the last newline within PIPE_BUF, so lines stay whole */
            const uint8_t *p = buf_head(b);
            size_t cut = PIPE_BUF;
            while (cut > 0 && p[cut - 1] != '\n') {
                cut--;
            }
            len = cut ? cut : PIPE_BUF;
        }
        ssize_t n = write(sink->fd, buf_head(b), len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break; /* a log that cannot be written is dropped, never allowed to block */
        }
        buf_consume(b, (size_t)n);
    }
    b->start = b->end = 0;
    buf_release(b);
}

/* ---- filters ---- */

static bool compare(enum al_cmp op, uint64_t v, uint64_t ref)
{
    switch (op) {
    case AL_CMP_GE:
        return v >= ref;
    case AL_CMP_LE:
        return v <= ref;
    case AL_CMP_EQ:
    default:
        return v == ref;
    }
}

/* x-request-id's leading 8 hex digits, as Envoy's UUID request id extension reads it for
 * runtime_filter's sampling; false when absent or not hex. */
static bool request_id_value(const struct al_entry *e, uint64_t *out)
{
    const struct header *h = e->req != NULL ? headers_get(e->req, STR_LIT("x-request-id")) : NULL;
    if (h == NULL || h->value.len < 8) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++) {
        int c = tolower((unsigned char)h->value.p[i]);
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) {
            return false;
        }
        v = v * 16 + (uint64_t)d;
    }
    *out = v;
    return true;
}

bool access_log_filter_eval(const struct al_filter *f, const struct al_entry *e, uint64_t rnd)
{
    switch (f->kind) {
    case ALF_STATUS_CODE:
        return compare(f->op, e->status > 0 ? (uint64_t)e->status : 0, f->value);
    case ALF_DURATION: {
        double ms = (e->t_end - e->t_start) * 1000.0;
        return compare(f->op, ms > 0 ? (uint64_t)(ms + 0.5) : 0, f->value);
    }
    case ALF_NOT_HEALTH_CHECK:
        return !e->is_health_check;
    case ALF_TRACEABLE:
        return e->traceable;
    case ALF_RUNTIME: {
        uint64_t v = rnd;
        if (!f->independent) {
            request_id_value(e, &v);
        }
        return v % f->denom < f->value;
    }
    case ALF_AND:
        for (uint32_t i = 0; i < f->n_sub; i++) {
            if (!access_log_filter_eval(&f->sub[i], e, rnd)) {
                return false;
            }
        }
        return true;
    case ALF_OR:
        for (uint32_t i = 0; i < f->n_sub; i++) {
            if (access_log_filter_eval(&f->sub[i], e, rnd)) {
                return true;
            }
        }
        return false;
    case ALF_HEADER: {
        struct route_req rq = {
            .method = e->method,
            .path = e->path,
            .authority = e->authority,
            .scheme = e->tls != NULL ? STR_LIT("https") : STR_LIT("http"),
            .headers = e->req,
            .grpc = e->is_grpc,
        };
        return router_headers_match(f->header, 1, &rq);
    }
    case ALF_RESPONSE_FLAG:
        return f->mask == 0 ? e->flags != 0 : (e->flags & f->mask) != 0;
    case ALF_GRPC_STATUS: {
        /* Envoy: no status at all counts as UNKNOWN */
        int64_t gs = grpc_status_of(e);
        if (gs < 0) {
            gs = 2;
        }
        bool found = gs < 32 && (f->mask & (1u << gs)) != 0;
        return f->exclude ? !found : found;
    }
    }
    return true;
}
