/* access_log: Envoy-format access log lines. A format string of Envoy's command operators
 * (README.md lists those remora has: %START_TIME(fmt)%, %REQ(X?Y):N%, %RESPONSE_CODE_DETAILS%,
 * the durations, the DOWNSTREAM_* and UPSTREAM_* addresses, gRPC status, ...; the downstream
 * address operators give the trusted client address or the TCP peer, and the local address or
 * the original destination the original_dst listener filter restored)
 * is compiled once into tokens; each finished stream renders one line into its worker's buffer,
 * which is written out at most once a second or when it passes 64 KiB (Envoy flushes file logs
 * every second too), so logging costs no syscall per request.
 *
 * A format dictionary (Envoy's json_format) renders one JSON object per line: its keys in sorted
 * order (Envoy sorts them), each value a format string of the same operators, rendered as a
 * JSON string (escaped); literal numbers, booleans and null pass as they are. "Typed"
 * dictionaries (SubstitutionFormatString.json_format) follow Envoy's value types: a value that
 * is one numeric operator alone (%RESPONSE_CODE%, the byte counts and header sizes, the
 * durations, %CONNECTION_ID%, %UPSTREAM_REQUEST_ATTEMPT_COUNT%, %GRPC_STATUS_NUMBER%, the port
 * operators) is a JSON number, and one operator alone with no value is null;
 * FileAccessLog.json_format renders every value as a string, as Envoy documents it.
 *
 * Values are computed only when a line is written: the stream records pointers to static
 * strings (%RESPONSE_CODE_DETAILS%) and numbers where things happen; a filter (struct
 * al_filter) is evaluated before anything is formatted.
 *
 * The sink (an O_APPEND file descriptor) is opened by the main thread and shared: every write is
 * a run of whole lines no longer than PIPE_BUF, so lines from different workers never mix. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/err.h"
#include "proxy/core/str.h"

struct headers;
struct sockaddr;

/* What a log line is made of: one finished HTTP stream or TCP session, filled by its owner
 * (stream.c, tcp_proxy.c) just before rendering. Strings and headers are borrowed for the
 * duration of the call. */
struct al_entry {
    struct str method, path, authority; /* empty for TCP */
    struct str protocol;                /* "HTTP/1.1", "HTTP/2"; empty for TCP */
    int status;                         /* 0 when none (TCP) */
    uint32_t flags;                     /* RF_* (stream.h) */
    uint64_t bytes_received, bytes_sent;
    double t_start, t_end;                       /* loop times */
    double t_upstream_start, t_upstream_headers; /* 0 when unknown */
    struct str upstream_host, cluster, route_name;
    const char *peer_ip; /* the connection's remote address (the TCP peer, or the PROXY header's
                          * source) */
    uint16_t peer_port;
    const char *direct_ip; /* the TCP peer (%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%); NULL: peer_ip */
    uint16_t direct_port;
    const struct sockaddr *local; /* %DOWNSTREAM_LOCAL_ADDRESS%; NULL or AF_UNSPEC: "-" */
    struct str remote_ip;         /* the trusted client address (%DOWNSTREAM_REMOTE_ADDRESS%); NULL:
                                   * the peer */
    uint16_t remote_port;         /* 0 for an address from x-forwarded-for, as in Envoy */
    const struct headers *req, *resp; /* may be NULL */
    const struct tls_conn *tls;       /* the client's TLS session, or NULL (plaintext) */
    struct str sni; /* the tls_inspector's SNI when TLS passes through (tls is NULL) */
    const struct headers *resp_trailers; /* may be NULL */
    /* %RESPONSE_CODE_DETAILS%: a static string, or NULL ("-"). With reset_reason (static) it
     * is rendered "<details>{<reset_reason>[,delayed_connect_error:_<transport_errno>]}". */
    const char *details;
    const char *reset_reason;
    int transport_errno;          /* the upstream connect's errno, 0 when none */
    const char *conn_termination; /* %CONNECTION_TERMINATION_DETAILS%: static, or NULL */
    double t_req_done;            /* the request's last byte came (0: not yet) */
    double t_req_sent;            /* the request's last byte went upstream (0: not yet) */
    uint32_t attempts;            /* upstream attempts (%UPSTREAM_REQUEST_ATTEMPT_COUNT%) */
    uint64_t conn_id;             /* the downstream connection's id (%CONNECTION_ID%) */
    uint64_t upstream_conn_id;    /* %UPSTREAM_CONNECTION_ID%; 0: none ("-") */
    const struct sockaddr *upstream_local; /* %UPSTREAM_LOCAL_ADDRESS%; NULL/AF_UNSPEC: "-" */
    bool is_grpc;                          /* a gRPC request (%GRPC_STATUS%, grpc_status_filter) */
    bool traceable;                        /* the stream is traced and sampled (traceable_filter) */
    bool is_health_check; /* the health_check filter matched it (not_health_check_filter) */
};

/* Envoy's default format. */
#define ACCESS_LOG_DEFAULT_FORMAT                                                                  \
    "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" "             \
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "                   \
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" "      \
    "\"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n"

struct al_token;
struct al_json;
struct tls_conn;

struct al_format {
    const struct al_token *tokens; /* in the arena given to compile */
    uint32_t n_tokens;
    const struct al_json *json; /* a format dictionary: [n_json] fields, sorted by key; else NULL */
    uint32_t n_json;
    bool typed; /* json: Envoy's typed values (see above) */
};

/* One entry of a format dictionary as configured: `key` and either a format string `format` or,
 * when `raw` is set, a literal JSON value (a number, true, false, null) written as it is. */
struct al_json_in {
    struct str key;
    struct str format;
    struct str raw;
};

/* Compiles `fmt` (empty means the default). Returns 0, or -EINVAL with a message in `err`. */
int access_log_format_compile(struct al_format *f, struct str fmt, struct arena *a,
                              struct err *err);

/* Compiles format dictionary `in[n]` (keys unique, in any order; n may be 0: "{}") into `f`,
 * typed or not. Returns 0, or -EINVAL with a message naming the key in `err`. */
int access_log_format_compile_json(struct al_format *f, const struct al_json_in *in, uint32_t n,
                                   bool typed, struct arena *a, struct err *err);

/* An access log filter (config.accesslog.v3.AccessLogFilter), compiled at config build time
 * into a tree in the snapshot's arena and evaluated before a line is rendered. */
enum al_filter_kind {
    ALF_STATUS_CODE,      /* status_code_filter: status (0 when none) `op` value */
    ALF_DURATION,         /* duration_filter: %DURATION% in ms `op` value */
    ALF_NOT_HEALTH_CHECK, /* not_health_check_filter: not a request the health_check filter took */
    ALF_TRACEABLE,        /* traceable_filter: the stream is traced and sampled */
    ALF_RUNTIME,          /* runtime_filter: value / denom sampled */
    ALF_AND,              /* and_filter: every one of sub[n_sub] */
    ALF_OR,               /* or_filter: any one of sub[n_sub] */
    ALF_HEADER,           /* header_filter: the request header matcher `header` */
    ALF_RESPONSE_FLAG,    /* response_flag_filter: any flag in `mask` (all flags when empty) */
    ALF_GRPC_STATUS,      /* grpc_status_filter: the status's bit in `mask`, or not (exclude) */
};

enum al_cmp {
    AL_CMP_EQ,
    AL_CMP_GE,
    AL_CMP_LE,
};

struct header_matcher;

struct al_filter {
    enum al_filter_kind kind;
    enum al_cmp op;
    uint32_t value;   /* the comparison's value; ALF_RUNTIME: the numerator */
    uint32_t denom;   /* ALF_RUNTIME: 100, 10000 or 1000000 */
    bool independent; /* ALF_RUNTIME: use_independent_randomness */
    bool exclude;     /* ALF_GRPC_STATUS */
    uint32_t mask;    /* ALF_RESPONSE_FLAG: RF_* bits; ALF_GRPC_STATUS: 1 << status */
    const struct header_matcher *header; /* ALF_HEADER: in the snapshot */
    const struct al_filter *sub;         /* ALF_AND, ALF_OR: [n_sub] */
    uint32_t n_sub;
};

/* Whether `f` lets the line for `e` be written. `rnd` is a fresh random value (runtime_filter
 * samples on it, or on x-request-id's leading 8 hex digits as Envoy does). */
bool access_log_filter_eval(const struct al_filter *f, const struct al_entry *e, uint64_t rnd);

/* The RF_* bit for Envoy's short response flag name `name`: 0 for a flag Envoy has that remora
 * never sets, -1 for a name Envoy does not know. */
int64_t access_log_flag_bit(struct str name);

/* Appends the line for `e` to `out`. */
void access_log_render(struct buf *out, const struct al_format *f, const struct al_entry *e);

/* A destination shared by all workers. */
struct access_log_sink {
    int fd;     /* owned */
    char *path; /* owned */
};

/* Opens `path` for appending ("/dev/stdout" and "/dev/stderr" reuse fds 1 and 2). */
struct access_log_sink *access_log_sink_open(const char *path, struct err *err);
void access_log_sink_close(struct access_log_sink *s);

/* Writes whole lines from `b` to the sink, in writes of at most PIPE_BUF bytes. */
void access_log_flush(struct access_log_sink *sink, struct buf *b);

/* Formats an Envoy timestamp ("2024-01-02T03:04:05.678Z") into `dst` (>= 32 bytes). */
void access_log_time(char *dst, double t);
