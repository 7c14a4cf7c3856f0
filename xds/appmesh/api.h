/* api: the App Mesh REST API (2019-01-25) over the store: request routing by method and path,
 * body validation (schema.c plus the rules the model cannot state), the operations on meshes,
 * virtual nodes, virtual services, virtual routers, routes, virtual gateways and gateway
 * routes, tags, and AWS's response and error shapes. It knows nothing of sockets: httpd.c
 * hands it a parsed request and sends back what it fills in.
 *
 * Errors are AWS's: an HTTP status, the exception's name for the `x-amzn-ErrorType` header
 * (which the SDKs and the CLI read) and a `{"message": ...}` body. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct store;
struct api;

/* A request header as received (name and value not NUL-terminated; the value without the
 * whitespace around it). */
struct api_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
};

struct api_request {
    const char *method; /* NUL-terminated, e.g. "PUT" */
    const char *path;   /* the request target's path, still percent-encoded */
    size_t path_len;
    const char *query; /* after '?', percent-encoded; NULL when none */
    size_t query_len;
    const char *body; /* may be NULL when body_len is 0 */
    size_t body_len;
    const struct api_header *headers; /* [n_headers], in the order received; may be NULL */
    size_t n_headers;
};

struct api_response {
    int status;             /* HTTP status */
    const char *error_type; /* static; NULL on success */
    const char *allow;      /* static; the Allow header of a 405, else NULL */
    char *body;             /* owned (free()); JSON text */
    size_t body_len;
};

/* A new API over `s` (borrowed, must outlive it). `region` and `account_id` (copied) build
 * ARNs and are the only owner accepted in `meshOwner`. */
struct api *api_new(struct store *s, const char *region, const char *account_id);
void api_free(struct api *a);

/* Handles one request synchronously and fills `out` (its body is then the caller's to free).
 * Never fails: store errors become 500 InternalServerErrorException. */
void api_handle(struct api *a, const struct api_request *rq, struct api_response *out);

/* The ARN of a resource: "arn:aws:appmesh:<region>:<account>:mesh/<mesh>" and below it
 * "/<kind>/<name>", with `parent_kind`/`parent` between for routes and gateway routes (NULL
 * otherwise). Returns the length written (truncated to fit `cap`, always NUL-terminated). */
size_t api_arn(char *buf, size_t cap, const char *region, const char *account_id, const char *mesh,
               const char *parent_kind, const char *parent, const char *kind, const char *name);

/* Page tokens: `name` (the last name of a page) as an opaque token, and back. The token is
 * stable: it names a position in the name order, so a page after inserts or deletes neither
 * repeats nor skips a resource that existed throughout. api_token_decode returns a malloc'd
 * name or NULL when `token` is not one of ours. */
char *api_token_encode(const char *name);
char *api_token_decode(const char *token);
