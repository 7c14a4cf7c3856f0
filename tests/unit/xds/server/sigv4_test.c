/* Unit tests for remora-xds's SigV4 check (xds/server/sigv4.h): the canonical request and the
 * signature against AWS's published Signature Version 4 test suite (AKIDEXAMPLE, region
 * us-east-1, service "service", 20150830T123600Z: get-vanilla, get-vanilla-query-order-key-case,
 * post-vanilla, post-header-value-case, get-header-value-trim, get-header-key-duplicate,
 * get-unreserved), then sigv4_verify's answers (valid, each AWS exception, the 15-minute window,
 * the scope), and the credentials file (its format and its mode). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "xds/server/sigv4.h"

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define AMZ_DATE "20150830T123600Z"
#define T0 1440938160 /* 2015-08-30T12:36:00Z */
#define EMPTY_SHA "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct vec {
    const char *name, *method, *path, *query;
    const char *hdrs[8][2]; /* besides Host and X-Amz-Date; NULL-terminated */
    const char *signed_headers;
    const char *creq_sha; /* NULL: not published with the case */
    const char *sig;
};

static const struct vec vecs[] = {
    {"get-vanilla",
     "GET",
     "/",
     NULL,
     {{NULL}},
     "host;x-amz-date",
     "bb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63",
     "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
    {"get-vanilla-query-order-key-case",
     "GET",
     "/",
     "Param2=value2&Param1=value1",
     {{NULL}},
     "host;x-amz-date",
     "816cd5b414d056048ba4f7c5386d6e0533120fb1fcfa93762cf0fc39e2cf19e0",
     "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
    {"post-vanilla",
     "POST",
     "/",
     NULL,
     {{NULL}},
     "host;x-amz-date",
     NULL,
     "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
    {"post-header-value-case",
     "POST",
     "/",
     NULL,
     {{"My-Header1", "VALUE1"}, {NULL}},
     "host;my-header1;x-amz-date",
     NULL,
     "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
    {"get-header-value-trim",
     "GET",
     "/",
     NULL,
     {{"My-Header1", " value1"}, {"My-Header2", "\"a   b   c\""}, {NULL}},
     "host;my-header1;my-header2;x-amz-date",
     NULL,
     "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
    {"get-header-key-duplicate",
     "GET",
     "/",
     NULL,
     {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}, {NULL}},
     "host;my-header1;x-amz-date",
     NULL,
     "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
    {"get-unreserved",
     "GET",
     "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
     NULL,
     {{NULL}},
     "host;x-amz-date",
     NULL,
     "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
};

struct req {
    struct api_header h[16];
    char auth[512];
    struct api_request rq;
};

static void hdr(struct req *r, const char *name, const char *value)
{
    size_t i = r->rq.n_headers++;
    r->h[i] = (struct api_header){name, strlen(name), value, strlen(value)};
}

/* The request of `v` with Host and X-Amz-Date (no Authorization yet). */
static void build(struct req *r, const struct vec *v, const char *date)
{
    memset(r, 0, sizeof(*r));
    r->rq.method = v->method;
    r->rq.path = v->path;
    r->rq.path_len = strlen(v->path);
    r->rq.query = v->query;
    r->rq.query_len = v->query ? strlen(v->query) : 0;
    r->rq.headers = r->h;
    hdr(r, "Host", "example.amazonaws.com");
    hdr(r, "X-Amz-Date", date);
    for (size_t i = 0; v->hdrs[i][0] != NULL; i++) {
        hdr(r, v->hdrs[i][0], v->hdrs[i][1]);
    }
}

static void authorize(struct req *r, const char *akid, const char *scope_tail,
                      const char *signed_headers, const char *sig)
{
    snprintf(r->auth, sizeof(r->auth),
             "AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", akid, scope_tail,
             signed_headers, sig);
    hdr(r, "Authorization", r->auth);
}

static void test_sigv4_aws_test_suite(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(vecs) / sizeof(vecs[0]); i++) {
        const struct vec *v = &vecs[i];
        struct req r;
        build(&r, v, AMZ_DATE);
        char *creq =
            sigv4_canonical_request(&r.rq, v->signed_headers, strlen(v->signed_headers), EMPTY_SHA);
        char h[65];
        sigv4_sha256_hex(creq, strlen(creq), h);
        if (v->creq_sha != NULL && strcmp(h, v->creq_sha) != 0) {
            fail_msg("%s: canonical request\n%s\nhashes to %s", v->name, creq, h);
        }
        char sts[256], sig[65];
        snprintf(sts, sizeof(sts),
                 "AWS4-HMAC-SHA256\n" AMZ_DATE "\n20150830/us-east-1/service/aws4_request\n%s", h);
        sigv4_sign(SECRET, "20150830", "us-east-1", "service", sts, sig);
        if (strcmp(sig, v->sig) != 0) {
            fail_msg("%s: signature %s, want %s; canonical request\n%s", v->name, sig, v->sig,
                     creq);
        }
        free(creq);

        /* And the whole check accepts the suite's Authorization header. */
        struct sigv4 *sv = sigv4_new("us-east-1", "service");
        assert_int_equal(sigv4_add_key(sv, AKID, SECRET), 0);
        authorize(&r, AKID, "20150830/us-east-1/service/aws4_request", v->signed_headers, v->sig);
        struct sigv4_result res;
        if (sigv4_verify(sv, &r.rq, T0, &res) != 0) {
            fail_msg("%s: refused: %s %s", v->name, res.type, res.message);
        }
        sigv4_free(sv);
    }
}

/* The canonical forms the App Mesh API's requests need: a percent-encoded path segment encoded
 * again, a query re-encoded and sorted by key then value, a body's hash. */
static void test_sigv4_canonical_forms(void **state)
{
    (void)state;
    struct vec v = {"appmesh", "GET",    "/v20190125/meshes/a%20b/./virtualNodes//x",
                    NULL,      {{NULL}}, "host;x-amz-date",
                    NULL,      NULL};
    v.query = "resourceArn=arn%3Aaws%3Aappmesh%3Aus-west-2%3A1%3Amesh%2Fshop&limit=5&b=2&b=1&flag";
    struct req r;
    build(&r, &v, AMZ_DATE);
    char *creq = sigv4_canonical_request(&r.rq, "host;x-amz-date", 15, EMPTY_SHA);
    assert_string_equal(creq, "GET\n"
                              "/v20190125/meshes/a%2520b/virtualNodes/x\n"
                              "b=1&b=2&flag=&limit=5&resourceArn=arn%3Aaws%3Aappmesh%3Aus-west-"
                              "2%3A1%3Amesh%2Fshop\n"
                              "host:example.amazonaws.com\n"
                              "x-amz-date:" AMZ_DATE "\n"
                              "\n"
                              "host;x-amz-date\n" EMPTY_SHA);
    free(creq);
    char h[65];
    sigv4_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

/* A valid request for `body` at T0, signed with `secret`, scope `tail`. */
static void signed_req(struct req *r, const char *secret, const char *date, const char *tail)
{
    static const struct vec v = {
        "x", "PUT", "/v20190125/meshes", NULL, {{NULL}}, "host;x-amz-date", NULL, NULL};
    build(r, &v, date);
    r->rq.body = "{\"meshName\":\"shop\"}";
    r->rq.body_len = strlen(r->rq.body);
    char payload[65], creq_h[65], sts[256], sig[65];
    sigv4_sha256_hex(r->rq.body, r->rq.body_len, payload);
    char *creq = sigv4_canonical_request(&r->rq, "host;x-amz-date", 15, payload);
    sigv4_sha256_hex(creq, strlen(creq), creq_h);
    free(creq);
    snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s\n%s", date, tail, creq_h);
    char d8[9], region[32], service[32];
    sscanf(tail, "%8[0-9]/%31[^/]/%31[^/]", d8, region, service);
    sigv4_sign(secret, d8, region, service, sts, sig);
    authorize(r, AKID, tail, "host;x-amz-date", sig);
}

static void expect(const struct sigv4 *sv, struct req *r, time_t now, const char *type,
                   const char *msg_part)
{
    struct sigv4_result res;
    int rc = sigv4_verify(sv, &r->rq, now, &res);
    if (type == NULL) {
        if (rc != 0) {
            fail_msg("refused: %s %s", res.type, res.message);
        }
        return;
    }
    assert_int_equal(rc, -1);
    assert_int_equal(res.status, 403);
    assert_string_equal(res.type, type);
    if (strstr(res.message, msg_part) == NULL) {
        fail_msg("message '%s' lacks '%s'", res.message, msg_part);
    }
}

#define SCOPE "20150830/us-west-2/appmesh/aws4_request"

static void test_sigv4_verify_answers(void **state)
{
    (void)state;
    struct sigv4 *sv = sigv4_new("us-west-2", "appmesh");
    assert_int_equal(sigv4_add_key(sv, AKID, SECRET), 0);
    assert_int_equal(sigv4_add_key(sv, AKID, "other"), -EEXIST);
    struct req r;

    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    expect(sv, &r, T0, NULL, NULL);
    expect(sv, &r, T0 + 15 * 60, NULL, NULL); /* the window's edges */
    expect(sv, &r, T0 - 15 * 60, NULL, NULL);
    expect(sv, &r, T0 + 15 * 60 + 1, "InvalidSignatureException",
           "Signature expired: 20150830T123600Z is now earlier than 20150830T123601Z "
           "(20150830T125101Z - 15 min.)");
    expect(sv, &r, T0 - 15 * 60 - 1, "InvalidSignatureException", "Signature not yet current");

    /* The body is signed: one byte changed is a mismatch. */
    r.rq.body = "{\"meshName\":\"shoq\"}";
    expect(sv, &r, T0, "InvalidSignatureException",
           "The request signature we calculated does not match the signature you provided.");

    signed_req(&r, "not the secret", AMZ_DATE, SCOPE);
    expect(sv, &r, T0, "InvalidSignatureException", "does not match");

    signed_req(&r, SECRET, AMZ_DATE, "20150830/us-east-1/appmesh/aws4_request");
    expect(sv, &r, T0, "InvalidSignatureException", "scoped to a valid region, not 'us-east-1'");
    signed_req(&r, SECRET, AMZ_DATE, "20150830/us-west-2/s3/aws4_request");
    expect(sv, &r, T0, "InvalidSignatureException", "scoped to correct service: 'appmesh'");
    signed_req(&r, SECRET, AMZ_DATE, "20150831/us-west-2/appmesh/aws4_request");
    expect(sv, &r, T0, "InvalidSignatureException", "Date in Credential scope does not match");
    signed_req(&r, SECRET, AMZ_DATE, "20150830/us-west-2/appmesh/aws5_request");
    expect(sv, &r, T0, "InvalidSignatureException", "terminator");

    /* An unknown key. */
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    r.rq.n_headers--;
    authorize(&r, "AKIDOTHER", SCOPE, "host;x-amz-date", "00");
    expect(sv, &r, T0, "UnrecognizedClientException", "security token included in the request");

    /* No Authorization; a partial one; another algorithm; two. */
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    r.rq.n_headers--;
    expect(sv, &r, T0, "MissingAuthenticationTokenException", "Missing Authentication Token");
    hdr(&r, "Authorization", "AWS4-HMAC-SHA256 Credential=" AKID "/" SCOPE);
    expect(sv, &r, T0, "IncompleteSignatureException",
           "Authorization header requires 'Signature' parameter. Authorization header requires "
           "'SignedHeaders' parameter.");
    r.rq.n_headers--;
    hdr(&r, "Authorization",
        "AWS4-HMAC-SHA256 Credential=" AKID "/us-west-2, SignedHeaders=host, "
        "Signature=00");
    expect(sv, &r, T0, "IncompleteSignatureException", "exactly 5 slash-delimited elements");
    r.rq.n_headers--;
    hdr(&r, "Authorization", "AWS HMAC");
    expect(sv, &r, T0, "IncompleteSignatureException", "Unsupported AWS 'algorithm': 'AWS'");
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    hdr(&r, "authorization", r.auth);
    expect(sv, &r, T0, "IncompleteSignatureException", "more than one Authorization header");

    /* Host and X-Amz-Date must be signed; the date must be there and parse. */
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    r.rq.n_headers--;
    authorize(&r, AKID, SCOPE, "x-amz-date", "00");
    expect(sv, &r, T0, "InvalidSignatureException", "'Host' or ':authority' must be a");
    r.rq.n_headers--;
    authorize(&r, AKID, SCOPE, "host", "00");
    expect(sv, &r, T0, "InvalidSignatureException", "'X-Amz-Date' must be a 'SignedHeader'");
    signed_req(&r, SECRET, "20150830T123600", SCOPE);
    expect(sv, &r, T0, "IncompleteSignatureException", "ISO-8601 basic format");
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    r.h[1].name = "X-Other";
    r.h[1].name_len = 7;
    expect(sv, &r, T0, "IncompleteSignatureException", "'X-Amz-Date' or a 'Date' header");

    /* A signature of the wrong length or case never matches. */
    signed_req(&r, SECRET, AMZ_DATE, SCOPE);
    char up[65];
    const char *s = strstr(r.auth, "Signature=") + 10;
    for (int i = 0; i < 64; i++) {
        up[i] = (char)(s[i] >= 'a' && s[i] <= 'f' ? s[i] - 32 : s[i]);
    }
    up[64] = '\0';
    r.rq.n_headers--;
    authorize(&r, AKID, SCOPE, "host;x-amz-date", up);
    expect(sv, &r, T0, "InvalidSignatureException", "does not match");
    sigv4_free(sv);
}

static char tmpdir[64];

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[128];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static void load_fails(const char *text, mode_t mode, const char *want)
{
    struct sigv4 *sv = sigv4_new("us-west-2", "appmesh");
    struct err err;
    err_clear(&err);
    const char *p = write_file("bad", text, mode);
    assert_int_equal(sigv4_load(sv, p, &err), -1);
    if (strstr(err.msg, want) == NULL) {
        fail_msg("error '%s' lacks '%s'", err.msg, want);
    }
    sigv4_free(sv);
}

static void test_sigv4_credentials_file(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sigv4_test.XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    struct sigv4 *sv = sigv4_new("us-west-2", "appmesh");
    struct err err;
    err_clear(&err);
    const char *p = write_file("good",
                               "# keys\n[default]\naws_access_key_id = AKID1\n"
                               "aws_secret_access_key=secret/1+x \n\n"
                               "[ci]\r\n; a comment\r\naws_access_key_id=AKID2\r\n"
                               "aws_secret_access_key = s2\r\naws_session_token = tok\r\n[empty]\n",
                               0600);
    assert_int_equal(sigv4_load(sv, p, &err), 0);
    assert_int_equal(sigv4_n_keys(sv), 2);
    sigv4_free(sv);

    load_fails("[a]\naws_access_key_id=A\naws_secret_access_key=S\n", 0644, "mode 644");
    load_fails("[a]\naws_access_key_id=A\naws_secret_access_key=S\n", 0620, "mode 620");
    load_fails("[a]\naws_access_key_id=A\n", 0600, "[a] has aws_access_key_id but not");
    load_fails("[a]\naws_access_key_id=A\naws_secret_access_key=S\n[b]\naws_access_key_id=A\n"
               "aws_secret_access_key=T\n",
               0600, "access key id A twice");
    load_fails("[a]\nregion=us-west-2\n", 0600, ":2: [a] region: unknown key");
    load_fails("aws_access_key_id=A\n", 0600, ":1: a key before any [section]");
    load_fails("[a]\njunk\n", 0600, ":2: want key = value");
    load_fails("[a\n", 0600, ":1: a section header is [name]");
    load_fails("[a]\naws_access_key_id=\n", 0600, "aws_access_key_id: empty");
    load_fails("# nothing\n", 0600, "no key");
    load_fails("", 0600, "no key");
    struct sigv4 *none = sigv4_new("us-west-2", "appmesh");
    assert_int_equal(sigv4_load(none, "/nonexistent/creds", &err), -1);
    assert_non_null(strstr(err.msg, "No such file"));
    sigv4_free(none);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigv4_aws_test_suite),
        cmocka_unit_test(test_sigv4_canonical_forms),
        cmocka_unit_test(test_sigv4_verify_answers),
        cmocka_unit_test(test_sigv4_credentials_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
