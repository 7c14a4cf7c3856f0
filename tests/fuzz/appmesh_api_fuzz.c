/* libFuzzer target for remora-xds's App Mesh API: hostile request bodies, paths and queries
 * into the same router, JSON parser, schema validator, rules and store that serve the CLI.
 *
 * Input: byte 0 picks the request (method and path from the table below), byte 1 the query
 * from its table, the rest is the body. The store is an in-memory SQLite database made once
 * and seeded with a mesh, a virtual node, a router and a gateway, so creates and updates reach
 * the reference and in-use checks; the resources the inputs create accumulate, as they would
 * on a real server. Beyond the sanitizers, it aborts when a response is not a JSON object, an
 * error has no message or no type, or a success carries a type.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/appmesh_api_fuzz
 * tests/fuzz/corpus/appmesh_api) */
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/log.h"
#include "xds/appmesh/api.h"
#include "xds/appmesh/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct {
    const char *method;
    const char *path;
} reqs[] = {
    {"PUT", "/v20190125/meshes"},
    {"PUT", "/v20190125/meshes/m"},
    {"PUT", "/v20190125/meshes/m/virtualNodes"},
    {"PUT", "/v20190125/meshes/m/virtualNodes/vn"},
    {"PUT", "/v20190125/meshes/m/virtualServices"},
    {"PUT", "/v20190125/meshes/m/virtualServices/s"},
    {"PUT", "/v20190125/meshes/m/virtualRouters"},
    {"PUT", "/v20190125/meshes/m/virtualRouters/vr"},
    {"PUT", "/v20190125/meshes/m/virtualRouter/vr/routes"},
    {"PUT", "/v20190125/meshes/m/virtualRouter/vr/routes/r"},
    {"PUT", "/v20190125/meshes/m/virtualGateways"},
    {"PUT", "/v20190125/meshes/m/virtualGateway/gw/gatewayRoutes"},
    {"PUT", "/v20190125/tag"},
    {"PUT", "/v20190125/untag"},
    {"GET", "/v20190125/tags"},
    {"GET", "/v20190125/meshes"},
    {"GET", "/v20190125/meshes/m/virtualNodes"},
    {"DELETE", "/v20190125/meshes/m/virtualNodes/vn"},
    {"DELETE", "/v20190125/meshes/m/virtualRouters/vr"},
    {"DELETE", "/v20190125/meshes/m"},
};

static const char *const queries[] = {
    NULL,
    "limit=1",
    "limit=2&nextToken=v1.6d",
    "nextToken=%zz",
    "meshOwner=111122223333",
    "meshOwner=999999999999",
    "resourceArn=arn%3Aaws%3Aappmesh%3Aus-west-2%3A111122223333%3Amesh%2Fm",
    "resourceArn=arn%3Aaws%3Aappmesh%3Aus-west-2%3A111122223333%3Amesh%2Fm%2FvirtualNode%2Fvn",
};

static struct api *api_once(void)
{
    static struct store *store;
    static struct api *api;
    if (api != NULL) {
        return api;
    }
    log_set_level(LOG_OFF);
    struct err err;
    if (store_open(&store, ":memory:", &err) != 0) {
        fprintf(stderr, "store: %s\n", err.msg);
        abort();
    }
    api = api_new(store, "us-west-2", "111122223333");
    static const char *const seed[][2] = {
        {"/v20190125/meshes", "{\"meshName\":\"m\"}"},
        {"/v20190125/meshes/m/virtualNodes",
         "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80,"
         "\"protocol\":\"http\"}}]}}"},
        {"/v20190125/meshes/m/virtualRouters",
         "{\"virtualRouterName\":\"vr\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80,"
         "\"protocol\":\"http\"}}]}}"},
        {"/v20190125/meshes/m/virtualGateways",
         "{\"virtualGatewayName\":\"gw\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80,"
         "\"protocol\":\"http\"}}]}}"},
    };
    for (size_t i = 0; i < sizeof(seed) / sizeof(seed[0]); i++) {
        struct api_request rq = {.method = "PUT",
                                 .path = seed[i][0],
                                 .path_len = strlen(seed[i][0]),
                                 .body = seed[i][1],
                                 .body_len = strlen(seed[i][1])};
        struct api_response out;
        api_handle(api, &rq, &out);
        if (out.status != 200) {
            fprintf(stderr, "seed %zu: %d %.*s\n", i, out.status, (int)out.body_len, out.body);
            abort();
        }
        free(out.body);
    }
    return api;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 64 * 1024) {
        return 0;
    }
    struct api *api = api_once();
    size_t ri = data[0] % (sizeof(reqs) / sizeof(reqs[0]));
    const char *q = queries[data[1] % (sizeof(queries) / sizeof(queries[0]))];
    struct api_request rq = {
        .method = reqs[ri].method,
        .path = reqs[ri].path,
        .path_len = strlen(reqs[ri].path),
        .query = q,
        .query_len = q ? strlen(q) : 0,
        .body = (const char *)data + 2,
        .body_len = size - 2,
    };
    struct api_response out;
    api_handle(api, &rq, &out);
    json_t *j = json_loadb(out.body, out.body_len, 0, NULL);
    if (!json_is_object(j)) {
        fprintf(stderr, "response is not a JSON object: %.*s\n", (int)out.body_len, out.body);
        abort();
    }
    bool ok = out.status == 200;
    if (ok != (out.error_type == NULL) || (!ok && !json_is_string(json_object_get(j, "message")))) {
        fprintf(stderr, "bad error response %d %s: %.*s\n", out.status,
                out.error_type ? out.error_type : "-", (int)out.body_len, out.body);
        abort();
    }
    json_decref(j);
    free(out.body);
    return 0;
}
