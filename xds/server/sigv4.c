/* sigv4: AWS Signature Version 4 checking for the App Mesh API (sigv4.h). Builds the canonical
 * request and the string to sign from the request as received, derives the signing key with
 * OpenSSL's HMAC and compares signatures with CRYPTO_memcmp. Owns the key set (a flat array:
 * a handful of keys, looked up once per request). */
#include "xds/server/sigv4.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"

#define ALGORITHM "AWS4-HMAC-SHA256"

struct sigv4_key {
    char *akid;   /* owned */
    char *secret; /* owned; cleansed when freed */
};

struct sigv4 {
    char *region;  /* owned */
    char *service; /* owned */
    struct sigv4_key *keys;
    size_t n_keys, cap;
};

/* ---- a growable string -------------------------------------------------------------------- */

struct sb {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sb *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = xrealloc(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sb *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_chr(struct sb *b, char c)
{
    sb_add(b, &c, 1);
}

/* ---- keys ---------------------------------------------------------------------------------- */

struct sigv4 *sigv4_new(const char *region, const char *service)
{
    struct sigv4 *v = xcalloc(1, sizeof(*v));
    v->region = xstrdup(region);
    v->service = xstrdup(service);
    return v;
}

static const struct sigv4_key *find_key(const struct sigv4 *v, const char *akid, size_t len)
{
    for (size_t i = 0; i < v->n_keys; i++) {
        if (strlen(v->keys[i].akid) == len && memcmp(v->keys[i].akid, akid, len) == 0) {
            return &v->keys[i];
        }
    }
    return NULL;
}

int sigv4_add_key(struct sigv4 *v, const char *akid, const char *secret)
{
    if (akid[0] == '\0' || secret[0] == '\0') {
        return -EINVAL;
    }
    if (find_key(v, akid, strlen(akid)) != NULL) {
        return -EEXIST;
    }
    if (v->n_keys >= SIGV4_MAX_KEYS) {
        return -E2BIG;
    }
    if (v->n_keys == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 4;
        v->keys = xrealloc(v->keys, v->cap * sizeof(*v->keys));
    }
    v->keys[v->n_keys].akid = xstrdup(akid);
    v->keys[v->n_keys].secret = xstrdup(secret);
    v->n_keys++;
    return 0;
}

size_t sigv4_n_keys(const struct sigv4 *v)
{
    return v->n_keys;
}

void sigv4_free(struct sigv4 *v)
{
    if (v == NULL) {
        return;
    }
    for (size_t i = 0; i < v->n_keys; i++) {
        free(v->keys[i].akid);
        OPENSSL_cleanse(v->keys[i].secret, strlen(v->keys[i].secret));
        free(v->keys[i].secret);
    }
    free(v->keys);
    free(v->region);
    free(v->service);
    free(v);
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) {
        s[--n] = '\0';
    }
    return s;
}

/* Ends a section: both keys, or neither (an empty section). */
static int section_end(struct sigv4 *v, const char *path, const char *section, char **akid,
                       char **secret, struct err *err)
{
    int rc = 0;
    if ((*akid == NULL) != (*secret == NULL)) {
        rc = err_set(err, "--credentials-file", "%s: section [%s] has %s but not %s", path, section,
                     *akid ? "aws_access_key_id" : "aws_secret_access_key",
                     *akid ? "aws_secret_access_key" : "aws_access_key_id");
    } else if (*akid != NULL) {
        int r = sigv4_add_key(v, *akid, *secret);
        if (r == -EEXIST) {
            rc = err_set(err, "--credentials-file", "%s: section [%s]: access key id %s twice",
                         path, section, *akid);
        } else if (r == -E2BIG) {
            rc = err_set(err, "--credentials-file", "%s: more than %d keys", path, SIGV4_MAX_KEYS);
        } else if (r != 0) {
            rc =
                err_set(err, "--credentials-file", "%s: section [%s]: an empty key", path, section);
        }
    }
    free(*akid);
    if (*secret != NULL) {
        OPENSSL_cleanse(*secret, strlen(*secret));
    }
    free(*secret);
    *akid = *secret = NULL;
    return rc;
}

int sigv4_load(struct sigv4 *v, const char *path, struct err *err)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        err_set(err, "--credentials-file", "%s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        err_set(err, "--credentials-file", "%s: not a regular file", path);
        return -1;
    }
    if (st.st_mode & (S_IROTH | S_IWOTH | S_IWGRP)) {
        fclose(f);
        err_set(err, "--credentials-file",
                "%s: mode %03o lets other users read or change the secret keys (chmod 600 it)",
                path, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    if (st.st_mode & S_IRGRP) {
        LOG_W("--credentials-file %s: mode %03o: its group may read the secret keys", path,
              (unsigned)(st.st_mode & 0777));
    }
    char *line = NULL, *akid = NULL, *secret = NULL;
    size_t cap = 0;
    char section[128] = "";
    bool in_section = false;
    int rc = 0;
    unsigned lineno = 0;
    while (rc == 0 && getline(&line, &cap, f) >= 0) {
        lineno++;
        char *s = trim(line);
        if (s[0] == '\0' || s[0] == '#' || s[0] == ';') {
            continue;
        }
        if (s[0] == '[') {
            size_t n = strlen(s);
            if (n < 3 || s[n - 1] != ']') {
                rc = err_set(err, "--credentials-file", "%s:%u: a section header is [name]", path,
                             lineno);
                break;
            }
            if ((rc = section_end(v, path, section, &akid, &secret, err)) != 0) {
                break;
            }
            s[n - 1] = '\0';
            snprintf(section, sizeof(section), "%s", trim(s + 1));
            in_section = true;
            continue;
        }
        char *eq = strchr(s, '=');
        if (eq == NULL || !in_section) {
            rc = err_set(err, "--credentials-file", "%s:%u: %s", path, lineno,
                         in_section ? "want key = value" : "a key before any [section]");
            break;
        }
        *eq = '\0';
        char *k = trim(s), *val = trim(eq + 1);
        char **slot = NULL;
        if (strcmp(k, "aws_access_key_id") == 0) {
            slot = &akid;
        } else if (strcmp(k, "aws_secret_access_key") == 0) {
            slot = &secret;
        } else if (strcmp(k, "aws_session_token") == 0) {
            continue; /* a client's: remora-xds has no STS to check it against */
        } else {
            rc = err_set(err, "--credentials-file",
                         "%s:%u: [%s] %s: unknown key (aws_access_key_id, aws_secret_access_key "
                         "and aws_session_token are)",
                         path, lineno, section, k);
            break;
        }
        if (*slot != NULL || val[0] == '\0') {
            rc = err_set(err, "--credentials-file", "%s:%u: [%s] %s: %s", path, lineno, section, k,
                         val[0] == '\0' ? "empty" : "given twice");
            break;
        }
        *slot = xstrdup(val);
    }
    if (rc == 0) {
        rc = section_end(v, path, section, &akid, &secret, err);
    } else {
        struct err ignored;
        section_end(v, path, section, &akid, &secret, &ignored);
    }
    if (line != NULL) {
        OPENSSL_cleanse(line, cap);
    }
    free(line);
    fclose(f);
    if (rc == 0 && v->n_keys == 0) {
        rc = err_set(err, "--credentials-file",
                     "%s: no key (want [name] sections of aws_access_key_id and "
                     "aws_secret_access_key)",
                     path);
    }
    return rc < 0 ? -1 : 0;
}

/* ---- canonical request --------------------------------------------------------------------- */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* AWS's URI encoding: every byte but the unreserved ones as %XX (upper-case hex). */
static void uri_encode(struct sb *b, const char *s, size_t n, bool keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            sb_chr(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sb_add(b, e, 3);
        }
    }
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Percent-decodes `n` bytes of `s` into `out` (at least `n` bytes); a '%' not followed by two hex
 * digits stays as it is. Returns the decoded length. */
static size_t pct_decode(const char *s, size_t n, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            out[w++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[w++] = s[i];
        }
    }
    return w;
}

/* The canonical URI: the path as received with "." and ".." segments and empty segments removed
 * (botocore's remove_dot_segments), each byte URI-encoded again ('/' kept): services other than
 * S3 sign the already-encoded path encoded once more. */
static void canonical_uri(struct sb *b, const char *path, size_t len)
{
    if (len == 0) {
        sb_chr(b, '/');
        return;
    }
    size_t start = b->len;
    /* Segment boundaries of what is kept. */
    size_t n_seg = 0, cap = 8;
    size_t(*seg)[2] = xmalloc(cap * sizeof(*seg));
    size_t i = 0;
    while (i <= len) {
        size_t j = i;
        while (j < len && path[j] != '/') {
            j++;
        }
        size_t sl = j - i;
        if (sl == 0 || (sl == 1 && path[i] == '.')) {
            /* skipped */
        } else if (sl == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (n_seg > 0) {
                n_seg--;
            }
        } else {
            if (n_seg == cap) {
                cap *= 2;
                seg = xrealloc(seg, cap * sizeof(*seg));
            }
            seg[n_seg][0] = i;
            seg[n_seg][1] = sl;
            n_seg++;
        }
        i = j + 1;
    }
    if (path[0] == '/') {
        sb_chr(b, '/');
    }
    for (size_t k = 0; k < n_seg; k++) {
        if (k > 0) {
            sb_chr(b, '/');
        }
        uri_encode(b, path + seg[k][0], seg[k][1], false);
    }
    if (path[len - 1] == '/' && n_seg > 0) {
        sb_chr(b, '/');
    }
    if (b->len == start) {
        sb_chr(b, '/');
    }
    free(seg);
}

struct qpair {
    char *s; /* owned: "key=value", both encoded */
    size_t key_len;
};

static int qpair_cmp(const void *a, const void *b)
{
    const struct qpair *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->s, y->s, n);
    if (c != 0) {
        return c;
    }
    if (x->key_len != y->key_len) {
        return x->key_len < y->key_len ? -1 : 1;
    }
    return strcmp(x->s + x->key_len + 1, y->s + y->key_len + 1);
}

/* The canonical query string: each key and value decoded and encoded again the AWS way, sorted by
 * key then value, "k=v" joined with '&'. */
static void canonical_query(struct sb *b, const char *q, size_t len)
{
    if (q == NULL || len == 0) {
        return;
    }
    size_t n = 0, cap = 8;
    struct qpair *ps = xmalloc(cap * sizeof(*ps));
    char *tmp = xmalloc(len + 1);
    size_t i = 0;
    while (i < len) {
        size_t j = i;
        while (j < len && q[j] != '&') {
            j++;
        }
        if (j > i) {
            const char *eq = memchr(q + i, '=', j - i);
            size_t kl = eq ? (size_t)(eq - (q + i)) : j - i;
            struct sb e = {0};
            size_t dl = pct_decode(q + i, kl, tmp);
            uri_encode(&e, tmp, dl, false);
            size_t ekl = e.len;
            sb_chr(&e, '=');
            if (eq != NULL) {
                dl = pct_decode(eq + 1, (size_t)(q + j - (eq + 1)), tmp);
                uri_encode(&e, tmp, dl, false);
            }
            if (n == cap) {
                cap *= 2;
                ps = xrealloc(ps, cap * sizeof(*ps));
            }
            ps[n].s = e.p != NULL ? e.p : xstrdup("=");
            ps[n].key_len = ekl;
            n++;
        }
        i = j + 1;
    }
    qsort(ps, n, sizeof(*ps), qpair_cmp);
    for (size_t k = 0; k < n; k++) {
        if (k > 0) {
            sb_chr(b, '&');
        }
        sb_str(b, ps[k].s);
        free(ps[k].s);
    }
    free(ps);
    free(tmp);
}

/* A header value the canonical way: leading and trailing whitespace gone, inner runs of spaces
 * one space. */
static void canonical_value(struct sb *b, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && (v[i] == ' ' || v[i] == '\t')) {
        i++;
    }
    while (n > i && (v[n - 1] == ' ' || v[n - 1] == '\t')) {
        n--;
    }
    bool space = false;
    for (; i < n; i++) {
        if (v[i] == ' ' || v[i] == '\t') {
            space = true;
            continue;
        }
        if (space) {
            sb_chr(b, ' ');
            space = false;
        }
        sb_chr(b, v[i]);
    }
}

char *sigv4_canonical_request(const struct api_request *rq, const char *signed_headers,
                              size_t sh_len, const char *payload_hex)
{
    struct sb b = {0};
    sb_str(&b, rq->method);
    sb_chr(&b, '\n');
    canonical_uri(&b, rq->path, rq->path_len);
    sb_chr(&b, '\n');
    canonical_query(&b, rq->query, rq->query_len);
    sb_chr(&b, '\n');
    size_t i = 0;
    while (i < sh_len) {
        size_t j = i;
        while (j < sh_len && signed_headers[j] != ';') {
            j++;
        }
        const char *name = signed_headers + i;
        size_t nl = j - i;
        sb_add(&b, name, nl);
        sb_chr(&b, ':');
        bool first = true;
        for (size_t h = 0; h < rq->n_headers; h++) {
            const struct api_header *hd = &rq->headers[h];
            if (hd->name_len == nl && strncasecmp(hd->name, name, nl) == 0) {
                if (!first) {
                    sb_chr(&b, ',');
                }
                canonical_value(&b, hd->value, hd->value_len);
                first = false;
            }
        }
        sb_chr(&b, '\n');
        i = j + 1;
    }
    sb_chr(&b, '\n');
    sb_add(&b, signed_headers, sh_len);
    sb_chr(&b, '\n');
    sb_str(&b, payload_hex);
    return b.p;
}

/* ---- crypto -------------------------------------------------------------------------------- */

static void to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
    out[2 * n] = '\0';
}

void sigv4_sha256_hex(const void *p, size_t len, char hex[65])
{
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(p != NULL ? p : (const void *)"", len, d);
    to_hex(d, sizeof(d), hex);
}

static void hmac(const unsigned char *key, size_t key_len, const char *msg, size_t msg_len,
                 unsigned char out[32])
{
    unsigned int n = 32;
    if (HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, msg_len, out, &n) ==
        NULL) {
        memset(out, 0, 32); /* never matches a real signature's key */
    }
}

void sigv4_sign(const char *secret, const char *date8, const char *region, const char *service,
                const char *sts, char hex[65])
{
    size_t sl = strlen(secret);
    unsigned char *k0 = xmalloc(sl + 4);
    memcpy(k0, "AWS4", 4);
    memcpy(k0 + 4, secret, sl);
    unsigned char k[32], sig[32];
    hmac(k0, sl + 4, date8, strlen(date8), k);
    hmac(k, 32, region, strlen(region), k);
    hmac(k, 32, service, strlen(service), k);
    hmac(k, 32, "aws4_request", 12, k);
    hmac(k, 32, sts, strlen(sts), sig);
    to_hex(sig, sizeof(sig), hex);
    OPENSSL_cleanse(k0, sl + 4);
    OPENSSL_cleanse(k, sizeof(k));
    free(k0);
}

/* ---- verification -------------------------------------------------------------------------- */

static int refuse(struct sigv4_result *r, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int refuse(struct sigv4_result *r, const char *type, const char *fmt, ...)
{
    r->status = 403;
    r->type = type;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->message, sizeof(r->message), fmt, ap);
    va_end(ap);
    return -1;
}

static const struct api_header *header(const struct api_request *rq, const char *name, int *count)
{
    const struct api_header *found = NULL;
    size_t nl = strlen(name);
    *count = 0;
    for (size_t i = 0; i < rq->n_headers; i++) {
        if (rq->headers[i].name_len == nl && strncasecmp(rq->headers[i].name, name, nl) == 0) {
            if (found == NULL) {
                found = &rq->headers[i];
            }
            (*count)++;
        }
    }
    return found;
}

struct span {
    const char *p;
    size_t len;
};

static bool span_is(struct span s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

/* Whether `name` is one of the ';'-separated signed headers. */
static bool signed_has(struct span sh, const char *name)
{
    size_t i = 0, nl = strlen(name);
    while (i < sh.len) {
        size_t j = i;
        while (j < sh.len && sh.p[j] != ';') {
            j++;
        }
        if (j - i == nl && memcmp(sh.p + i, name, nl) == 0) {
            return true;
        }
        i = j + 1;
    }
    return false;
}

/* "YYYYMMDDTHHMMSSZ" to seconds since the epoch; -1 when it is not one. */
static long long parse_amz_date(const char *s, size_t n)
{
    if (n != 16 || s[8] != 'T' || s[15] != 'Z') {
        return -1;
    }
    int f[6];
    const int at[6] = {0, 4, 6, 9, 11, 13}, w[6] = {4, 2, 2, 2, 2, 2};
    for (int k = 0; k < 6; k++) {
        f[k] = 0;
        for (int d = 0; d < w[k]; d++) {
            char c = s[at[k] + d];
            if (c < '0' || c > '9') {
                return -1;
            }
            f[k] = f[k] * 10 + (c - '0');
        }
    }
    if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 60) {
        return -1;
    }
    struct tm tm = {.tm_year = f[0] - 1900,
                    .tm_mon = f[1] - 1,
                    .tm_mday = f[2],
                    .tm_hour = f[3],
                    .tm_min = f[4],
                    .tm_sec = f[5]};
    return (long long)timegm(&tm);
}

static void fmt_amz_date(long long t, char out[17])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, 17, "%Y%m%dT%H%M%SZ", &tm);
}

#define MSG_MISMATCH                                                                               \
    "The request signature we calculated does not match the signature you provided. Check your "   \
    "AWS Secret Access Key and signing method. Consult the service documentation for details."

int sigv4_verify(const struct sigv4 *v, const struct api_request *rq, time_t now,
                 struct sigv4_result *r)
{
    int count;
    const struct api_header *auth = header(rq, "authorization", &count);
    if (auth == NULL) {
        return refuse(r, "MissingAuthenticationTokenException", "Missing Authentication Token");
    }
    if (count > 1) {
        return refuse(r, "IncompleteSignatureException", "more than one Authorization header");
    }
    /* "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=..." */
    const char *p = auth->value, *end = auth->value + auth->value_len;
    const char *sp = memchr(p, ' ', (size_t)(end - p));
    struct span alg = {p, sp ? (size_t)(sp - p) : (size_t)(end - p)};
    if (!span_is(alg, ALGORITHM)) {
        return refuse(r, "IncompleteSignatureException",
                      "Unsupported AWS 'algorithm': '%.*s' (only " ALGORITHM " is)",
                      (int)(alg.len > 64 ? 64 : alg.len), alg.p);
    }
    struct span cred = {0}, sh = {0}, sig = {0};
    p = alg.p + alg.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == ',')) {
            p++;
        }
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *e = c ? c : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        if (eq != NULL) {
            struct span k = {p, (size_t)(eq - p)}, val = {eq + 1, (size_t)(e - eq - 1)};
            while (val.len > 0 && val.p[val.len - 1] == ' ') {
                val.len--;
            }
            if (span_is(k, "Credential")) {
                cred = val;
            } else if (span_is(k, "SignedHeaders")) {
                sh = val;
            } else if (span_is(k, "Signature")) {
                sig = val;
            }
        }
        p = e;
    }
    if (cred.p == NULL || sh.p == NULL || sig.p == NULL) {
        return refuse(r, "IncompleteSignatureException", "%s%s%s",
                      cred.p ? "" : "Authorization header requires 'Credential' parameter. ",
                      sig.p ? "" : "Authorization header requires 'Signature' parameter. ",
                      sh.p ? "" : "Authorization header requires 'SignedHeaders' parameter. ");
    }
    /* Credential: AKID/YYYYMMDD/region/service/aws4_request */
    struct span part[5];
    size_t np = 0;
    const char *q = cred.p, *cend = cred.p + cred.len;
    while (np < 5) {
        const char *sl = memchr(q, '/', (size_t)(cend - q));
        part[np].p = q;
        part[np].len = sl ? (size_t)(sl - q) : (size_t)(cend - q);
        np++;
        if (sl == NULL) {
            break;
        }
        q = sl + 1;
    }
    if (np != 5 || part[4].p + part[4].len != cend) {
        return refuse(r, "IncompleteSignatureException",
                      "Credential must have exactly 5 slash-delimited elements, e.g. "
                      "keyid/date/region/service/term, got '%.*s'",
                      (int)(cred.len > 200 ? 200 : cred.len), cred.p);
    }
    const struct api_header *dh = header(rq, "x-amz-date", &count);
    if (dh == NULL) {
        return refuse(r, "IncompleteSignatureException",
                      "Authorization header requires existence of either a 'X-Amz-Date' or a "
                      "'Date' header (remora-xds reads X-Amz-Date only)");
    }
    long long t = parse_amz_date(dh->value, dh->value_len);
    if (t < 0 || count > 1) {
        return refuse(r, "IncompleteSignatureException",
                      "X-Amz-Date must be one date in ISO-8601 basic format (YYYYMMDDTHHMMSSZ), "
                      "got '%.*s'",
                      (int)(dh->value_len > 64 ? 64 : dh->value_len), dh->value);
    }
    const struct sigv4_key *key = find_key(v, part[0].p, part[0].len);
    if (key == NULL) {
        return refuse(r, "UnrecognizedClientException",
                      "The security token included in the request is invalid.");
    }
    if (!span_is(part[4], "aws4_request")) {
        return refuse(r, "InvalidSignatureException",
                      "Credential should be scoped with a valid terminator: 'aws4_request', not "
                      "'%.*s'.",
                      (int)(part[4].len > 64 ? 64 : part[4].len), part[4].p);
    }
    if (!span_is(part[2], v->region)) {
        return refuse(r, "InvalidSignatureException",
                      "Credential should be scoped to a valid region, not '%.*s'. (this server's "
                      "region is '%s')",
                      (int)(part[2].len > 64 ? 64 : part[2].len), part[2].p, v->region);
    }
    if (!span_is(part[3], v->service)) {
        return refuse(r, "InvalidSignatureException",
                      "Credential should be scoped to correct service: '%s'.", v->service);
    }
    if (part[1].len != 8 || memcmp(part[1].p, dh->value, 8) != 0) {
        return refuse(r, "InvalidSignatureException",
                      "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
                      "date from HTTP: '%.*s' != '%.8s', from '%.16s'.",
                      (int)(part[1].len > 16 ? 16 : part[1].len), part[1].p, dh->value, dh->value);
    }
    if (!signed_has(sh, "host")) {
        return refuse(r, "InvalidSignatureException",
                      "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.");
    }
    if (!signed_has(sh, "x-amz-date")) {
        return refuse(r, "InvalidSignatureException",
                      "'X-Amz-Date' must be a 'SignedHeader' in the AWS Authorization.");
    }
    char d_now[17], d_edge[17], d_req[17];
    fmt_amz_date(t, d_req);
    fmt_amz_date((long long)now, d_now);
    if (t < (long long)now - SIGV4_MAX_SKEW_S) {
        fmt_amz_date((long long)now - SIGV4_MAX_SKEW_S, d_edge);
        return refuse(r, "InvalidSignatureException",
                      "Signature expired: %s is now earlier than %s (%s - 15 min.)", d_req, d_edge,
                      d_now);
    }
    if (t > (long long)now + SIGV4_MAX_SKEW_S) {
        fmt_amz_date((long long)now + SIGV4_MAX_SKEW_S, d_edge);
        return refuse(r, "InvalidSignatureException",
                      "Signature not yet current: %s is still later than %s (%s + 15 min.)", d_req,
                      d_edge, d_now);
    }
    char payload[65];
    sigv4_sha256_hex(rq->body, rq->body_len, payload);
    char *creq = sigv4_canonical_request(rq, sh.p, sh.len, payload);
    char creq_hex[65];
    sigv4_sha256_hex(creq, strlen(creq), creq_hex);
    free(creq);
    char sts[256], date8[9], region[64], service[64];
    snprintf(date8, sizeof(date8), "%.8s", dh->value);
    snprintf(region, sizeof(region), "%s", v->region);
    snprintf(service, sizeof(service), "%s", v->service);
    snprintf(sts, sizeof(sts), ALGORITHM "\n%.16s\n%s/%s/%s/aws4_request\n%s", dh->value, date8,
             region, service, creq_hex);
    char want[65];
    sigv4_sign(key->secret, date8, region, service, sts, want);
    if (sig.len != 64 || CRYPTO_memcmp(want, sig.p, 64) != 0) {
        return refuse(r, "InvalidSignatureException", MSG_MISMATCH);
    }
    return 0;
}
