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
#include "proxy/http/headers.h"
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
    AL_TLS, /* a field of the client's TLS session: al_token.tls_field */
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
        const char *end = memchr(fmt.p + i, '%', fmt.len - i);
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
        bool is_req = str_has_prefix(cmd, STR_LIT("REQ("));
        bool is_resp = str_has_prefix(cmd, STR_LIT("RESP("));
        if (is_req || is_resp) {
            size_t skip = is_req ? 4 : 5;
            if (cmd.p[cmd.len - 1] != ')') {
                return err_set(err, NULL, "access log format: missing ')' in %%%.*s%%",
                               STR_FMT(cmd));
            }
            struct str arg = {cmd.p + skip, cmd.len - skip - 1};
            const char *q = memchr(arg.p, '?', arg.len);
            tk->op = is_req ? AL_REQ : AL_RESP;
            tk->text = lower_dup(a, arg.p, q ? (size_t)(q - arg.p) : arg.len);
            if (q != NULL) {
                tk->alt = lower_dup(a, q + 1, arg.len - (size_t)(q + 1 - arg.p));
            }
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
                           "access log format: command %%%.*s%% not supported by remora yet",
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
    if (kind == AL_DOWNSTREAM_LOCAL_ADDRESS) {
        put_address(out, str_from_c(ip), port);
    } else if (kind == AL_DOWNSTREAM_LOCAL_PORT) {
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
                   op == AL_DURATION || op == AL_RESPONSE_DURATION;
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
        case AL_RESPONSE_FLAGS: {
            bool any = false;
            for (size_t k = 0; k < sizeof(flag_names) / sizeof(flag_names[0]); k++) {
                if (s->flags & flag_names[k].bit) {
                    if (any) {
                        buf_append(out, ",", 1);
                    }
                    buf_append_str(out, flag_names[k].name);
                    any = true;
                }
            }
            if (!any) {
                buf_append(out, "-", 1);
            }
            break;
        }
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
            put_address(out, str_from_c(s->peer_ip), s->peer_port);
            break;
        case AL_DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT:
            buf_append_str(out, s->peer_ip);
            break;
        case AL_DOWNSTREAM_LOCAL_ADDRESS:
        case AL_DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT:
        case AL_DOWNSTREAM_LOCAL_PORT:
            put_local(out, s->local, (int)t->op);
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
