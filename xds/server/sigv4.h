/* sigv4: checks AWS Signature Version 4 on the App Mesh API (--credentials-file). The AWS CLI
 * and the SDKs sign every request: an `Authorization: AWS4-HMAC-SHA256 Credential=AKID/<date>/
 * <region>/<service>/aws4_request, SignedHeaders=h1;h2, Signature=<hex>` header and `X-Amz-Date`.
 * The server rebuilds the canonical request from what it received (method, the path's segments
 * URI-encoded once more, the query sorted and re-encoded, the signed headers lowercased, trimmed
 * and joined, the SHA-256 of the body it read), the string to sign over the credential scope,
 * the signing key (HMAC-SHA256 chain from "AWS4" + secret over date, region, service,
 * "aws4_request") and compares the signature in constant time (CRYPTO_memcmp). The crypto is
 * OpenSSL's (SHA256, HMAC).
 *
 * Keys come from an AWS shared-credentials file (the INI format of ~/.aws/credentials: sections
 * of aws_access_key_id and aws_secret_access_key), so the file a CLI user already has works as
 * it is. Session tokens (X-Amz-Security-Token) are not checked: there is no STS here.
 *
 * Errors are AWS's (403, the exception name, AWS's message text): MissingAuthenticationToken,
 * IncompleteSignature, UnrecognizedClient (unknown key), InvalidSignature (wrong signature,
 * scope, or a date more than 15 minutes from now: "Signature expired").
 *
 * Thread: any; a struct sigv4 is read-only once loaded. */
#pragma once

#include <stddef.h>
#include <time.h>

#include "proxy/core/err.h"
#include "xds/appmesh/api.h"

struct sigv4;

#define SIGV4_MAX_SKEW_S (15 * 60)
#define SIGV4_MAX_KEYS 1024

/* An empty key set for `region` and `service` (copied). Keys are added with sigv4_add_key. */
struct sigv4 *sigv4_new(const char *region, const char *service);

/* Adds a key (both copied). Returns 0, or -EEXIST for an access key id already there, -E2BIG
 * past SIGV4_MAX_KEYS, -EINVAL for an empty id or secret. */
int sigv4_add_key(struct sigv4 *v, const char *akid, const char *secret);

/* Reads the keys of the shared-credentials file `path` into `v`. Refuses (-1 and `err`) a file
 * other users may read or anyone but its owner may write, one that does not parse (the line
 * number), a section with only one of the two keys, and a file without a key. */
int sigv4_load(struct sigv4 *v, const char *path, struct err *err);

/* How many keys `v` holds. */
size_t sigv4_n_keys(const struct sigv4 *v);

void sigv4_free(struct sigv4 *v);

/* What a refused request gets: 403, the exception name (static) and AWS's message. */
struct sigv4_result {
    int status;
    const char *type;
    char message[512];
};

/* Checks the signature of `rq` at time `now`. Returns 0 when it is valid (by a known key,
 * scoped to the region and service, dated within SIGV4_MAX_SKEW_S of `now`), else -1 with `r`
 * filled. */
int sigv4_verify(const struct sigv4 *v, const struct api_request *rq, time_t now,
                 struct sigv4_result *r);

/* The canonical request of `rq` for the signed headers `signed_headers` (";"-separated,
 * lowercase, as the Authorization header lists them; `sh_len` bytes) and the body's hash
 * `payload_hex` (64 hex digits). Returns a malloc'd NUL-terminated string. */
char *sigv4_canonical_request(const struct api_request *rq, const char *signed_headers,
                              size_t sh_len, const char *payload_hex);

/* The hex SHA-256 of `len` bytes at `p` into `hex` (65 bytes: 64 digits and a NUL). */
void sigv4_sha256_hex(const void *p, size_t len, char hex[65]);

/* The signature (hex, 64 digits and a NUL) of `sts` (the string to sign) with the key derived
 * from `secret` for `date8` (YYYYMMDD), `region` and `service`. */
void sigv4_sign(const char *secret, const char *date8, const char *region, const char *service,
                const char *sts, char hex[65]);
