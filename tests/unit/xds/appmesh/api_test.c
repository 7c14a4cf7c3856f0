/* Unit tests for api: App Mesh operations end to end over a real store in a temp directory,
 * called as httpd calls them (method, raw path and query, body): response shapes, versions,
 * idempotent creates, paging tokens, AWS's error types, the deletion rules and references,
 * ARNs. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "xds/appmesh/api.h"
#include "xds/appmesh/store.h"

struct fixture {
    char dir[64];
    struct store *store;
    struct api *api;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/remora-api-test-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        return -1;
    }
    char path[128];
    snprintf(path, sizeof(path), "%s/db", f->dir);
    struct err err;
    if (store_open(&f->store, path, &err) != 0) {
        return -1;
    }
    f->api = api_new(f->store, "eu-west-1", "123456789012");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    api_free(f->api);
    store_free(f->store);
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

struct reply {
    int status;
    const char *type;
    json_t *json; /* owned */
};

/* Calls the API; `target` is "path[?query]". */
static struct reply call(struct fixture *f, const char *method, const char *target,
                         const char *body)
{
    const char *q = strchr(target, '?');
    struct api_request rq = {
        .method = method,
        .path = target,
        .path_len = q ? (size_t)(q - target) : strlen(target),
        .query = q ? q + 1 : NULL,
        .query_len = q ? strlen(q + 1) : 0,
        .body = body,
        .body_len = body ? strlen(body) : 0,
    };
    struct api_response out;
    api_handle(f->api, &rq, &out);
    struct reply r = {out.status, out.error_type, json_loadb(out.body, out.body_len, 0, NULL)};
    assert_non_null(r.json);
    free(out.body);
    return r;
}

static const char *message(const struct reply *r)
{
    return json_string_value(json_object_get(r->json, "message"));
}

/* Expects `status` (and `type` on errors, and a message containing `msg`). */
static void expect(struct fixture *f, const char *method, const char *target, const char *body,
                   int status, const char *type, const char *msg)
{
    struct reply r = call(f, method, target, body);
    if (r.status != status || (type && (!r.type || strcmp(r.type, type) != 0)) ||
        (msg && (!message(&r) || !strstr(message(&r), msg)))) {
        char *t = json_dumps(r.json, 0);
        fail_msg("%s %s: want %d %s \"%s\", got %d %s %s", method, target, status, type ? type : "",
                 msg ? msg : "", r.status, r.type ? r.type : "", t);
    }
    json_decref(r.json);
}

static void ok(struct fixture *f, const char *method, const char *target, const char *body)
{
    expect(f, method, target, body, 200, NULL, NULL);
}

static void test_api_arn_and_tokens(void **state)
{
    (void)state;
    char b[256];
    api_arn(b, sizeof(b), "us-west-2", "111122223333", "m", NULL, NULL, "mesh", "m");
    assert_string_equal(b, "arn:aws:appmesh:us-west-2:111122223333:mesh/m");
    api_arn(b, sizeof(b), "us-west-2", "111122223333", "m", NULL, NULL, "virtualNode", "vn");
    assert_string_equal(b, "arn:aws:appmesh:us-west-2:111122223333:mesh/m/virtualNode/vn");
    api_arn(b, sizeof(b), "us-west-2", "111122223333", "m", "virtualRouter", "vr", "route", "r");
    assert_string_equal(b,
                        "arn:aws:appmesh:us-west-2:111122223333:mesh/m/virtualRouter/vr/route/r");
    char *t = api_token_encode("name-1");
    char *n = api_token_decode(t);
    assert_string_equal(n, "name-1");
    free(t);
    free(n);
    assert_null(api_token_decode("garbage"));
    assert_null(api_token_decode("v1.6"));    /* odd length */
    assert_null(api_token_decode("v1.zz"));   /* not hex */
    assert_null(api_token_decode("v1.0000")); /* NUL */
}

static void test_api_mesh_lifecycle(void **state)
{
    struct fixture *f = *state;
    struct reply r =
        call(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\",\"clientToken\":\"a\"}");
    assert_int_equal(r.status, 200);
    /* The Data object is the body (the model's payload), with AWS's default egress filter. */
    assert_string_equal(json_string_value(json_object_get(r.json, "meshName")), "m");
    json_t *md = json_object_get(r.json, "metadata");
    assert_string_equal(json_string_value(json_object_get(md, "arn")),
                        "arn:aws:appmesh:eu-west-1:123456789012:mesh/m");
    assert_int_equal(json_integer_value(json_object_get(md, "version")), 1);
    assert_true(json_is_real(json_object_get(md, "createdAt")));
    assert_string_equal(json_string_value(json_object_get(md, "meshOwner")), "123456789012");
    assert_string_equal(
        json_string_value(json_object_get(
            json_object_get(json_object_get(r.json, "spec"), "egressFilter"), "type")),
        "DROP_ALL");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "status"), "status")), "ACTIVE");
    const char *uid = json_string_value(json_object_get(md, "uid"));
    assert_int_equal(strlen(uid), 36);
    char uid1[40];
    strcpy(uid1, uid);
    json_decref(r.json);

    /* A retry with the same clientToken gets the same mesh; another token is a conflict. */
    r = call(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\",\"clientToken\":\"a\"}");
    assert_int_equal(r.status, 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "metadata"), "uid")), uid1);
    json_decref(r.json);
    expect(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\",\"clientToken\":\"b\"}", 409,
           "ConflictException", "mesh m already exists");
    expect(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\"}", 409, "ConflictException", NULL);

    /* Updates bump the version. */
    r = call(f, "PUT", "/v20190125/meshes/m",
             "{\"spec\":{\"egressFilter\":{\"type\":\"ALLOW_ALL\"}},\"clientToken\":\"u1\"}");
    assert_int_equal(r.status, 200);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.json, "metadata"), "version")), 2);
    json_decref(r.json);
    /* ... except a retry of the same update. */
    r = call(f, "PUT", "/v20190125/meshes/m",
             "{\"spec\":{\"egressFilter\":{\"type\":\"ALLOW_ALL\"}},\"clientToken\":\"u1\"}");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.json, "metadata"), "version")), 2);
    json_decref(r.json);
    r = call(f, "PUT", "/v20190125/meshes/m", "{}");
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.json, "metadata"), "version")), 3);
    json_decref(r.json);

    r = call(f, "DELETE", "/v20190125/meshes/m", NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "status"), "status")), "DELETED");
    json_decref(r.json);
    expect(f, "GET", "/v20190125/meshes/m", NULL, 404, "NotFoundException", "mesh m not found");
    expect(f, "DELETE", "/v20190125/meshes/m", NULL, 404, "NotFoundException", NULL);
    expect(f, "PUT", "/v20190125/meshes/m", "{}", 404, "NotFoundException", NULL);
}

static void test_api_list_paging(void **state)
{
    struct fixture *f = *state;
    const char *names[] = {"m3", "m1", "m5", "m2", "m4"};
    for (size_t i = 0; i < 5; i++) {
        char b[64];
        snprintf(b, sizeof(b), "{\"meshName\":\"%s\"}", names[i]);
        ok(f, "PUT", "/v20190125/meshes", b);
    }
    char target[256] = "/v20190125/meshes?limit=2";
    char seen[64] = "";
    for (int page = 0; page < 5; page++) {
        struct reply r = call(f, "GET", target, NULL);
        assert_int_equal(r.status, 200);
        json_t *arr = json_object_get(r.json, "meshes");
        assert_true(json_array_size(arr) <= 2);
        for (size_t i = 0; i < json_array_size(arr); i++) {
            strcat(seen, json_string_value(json_object_get(json_array_get(arr, i), "meshName")));
        }
        const char *tok = json_string_value(json_object_get(r.json, "nextToken"));
        if (tok == NULL) {
            json_decref(r.json);
            break;
        }
        snprintf(target, sizeof(target), "/v20190125/meshes?nextToken=%s&limit=2", tok);
        json_decref(r.json);
    }
    assert_string_equal(seen, "m1m2m3m4m5");
    expect(f, "GET", "/v20190125/meshes?limit=0", NULL, 400, "BadRequestException",
           "limit: must be 1-100");
    expect(f, "GET", "/v20190125/meshes?limit=101", NULL, 400, "BadRequestException", NULL);
    expect(f, "GET", "/v20190125/meshes?limit=x", NULL, 400, "BadRequestException", NULL);
    expect(f, "GET", "/v20190125/meshes?nextToken=abc", NULL, 400, "BadRequestException",
           "nextToken");
}

#define VN(name, port)                                                                             \
    "{\"virtualNodeName\":\"" name "\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":" #port \
    ",\"protocol\":\"http\"}}]}}"

static void test_api_children_need_their_mesh(void **state)
{
    struct fixture *f = *state;
    expect(f, "PUT", "/v20190125/meshes/nope/virtualNodes", VN("a", 80), 404, "NotFoundException",
           "mesh nope not found");
    expect(f, "GET", "/v20190125/meshes/nope/virtualNodes", NULL, 404, "NotFoundException",
           "mesh nope not found");
    ok(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\"}");
    expect(f, "GET", "/v20190125/meshes/m/virtualNodes/a", NULL, 404, "NotFoundException",
           "virtual node a not found in mesh m");
    ok(f, "PUT", "/v20190125/meshes/m/virtualNodes", VN("a", 80));
    ok(f, "GET", "/v20190125/meshes/m/virtualNodes/a", NULL);
    expect(f, "PUT", "/v20190125/meshes/m/virtualNodes", VN("a", 80), 409, "ConflictException",
           "virtual node a already exists in mesh m");
    expect(f, "PUT", "/v20190125/meshes/m/virtualNodes",
           "{\"virtualNodeName\":\"b\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80,"
           "\"protocol\":\"http\"}},{\"portMapping\":{\"port\":80,\"protocol\":\"tcp\"}}]}}",
           400, "BadRequestException",
           "spec.listeners[1].portMapping.port: port 80 is already used by listeners[0]");
    expect(f, "DELETE", "/v20190125/meshes/m", NULL, 409, "ResourceInUseException",
           "mesh m still has resources: virtual node a");
    /* The mesh in the path is the mesh: a body cannot name another. */
    expect(f, "PUT", "/v20190125/meshes/m/virtualNodes",
           "{\"meshName\":\"x\",\"virtualNodeName\":\"c\",\"spec\":{}}", 400, "BadRequestException",
           "meshName: unknown field");
}

static void test_api_references_and_in_use(void **state)
{
    struct fixture *f = *state;
    ok(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\"}");
    expect(f, "PUT", "/v20190125/meshes/m/virtualServices",
           "{\"virtualServiceName\":\"s.local\",\"spec\":{\"provider\":{\"virtualRouter\":{"
           "\"virtualRouterName\":\"vr\"}}}}",
           404, "NotFoundException",
           "spec.provider.virtualRouter.virtualRouterName: virtual router vr not found in mesh m");
    ok(f, "PUT", "/v20190125/meshes/m/virtualRouters",
       "{\"virtualRouterName\":\"vr\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80,"
       "\"protocol\":\"http\"}}]}}");
    ok(f, "PUT", "/v20190125/meshes/m/virtualServices",
       "{\"virtualServiceName\":\"s.local\",\"spec\":{\"provider\":{\"virtualRouter\":{"
       "\"virtualRouterName\":\"vr\"}}}}");
    const char *route =
        "{\"routeName\":\"r\",\"spec\":{\"httpRoute\":{\"match\":{\"prefix\":\"/\"},"
        "\"action\":{\"weightedTargets\":[{\"virtualNode\":\"vn\",\"weight\":1}]}}}}";
    expect(f, "PUT", "/v20190125/meshes/m/virtualRouter/vr/routes", route, 404, "NotFoundException",
           "spec.httpRoute.action.weightedTargets[0].virtualNode: virtual node vn not found");
    expect(f, "PUT", "/v20190125/meshes/m/virtualRouter/nope/routes", route, 404,
           "NotFoundException", "virtual router nope not found in mesh m");
    ok(f, "PUT", "/v20190125/meshes/m/virtualNodes", VN("vn", 80));
    struct reply r = call(f, "PUT", "/v20190125/meshes/m/virtualRouter/vr/routes", route);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "virtualRouterName")), "vr");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.json, "metadata"), "arn")),
        "arn:aws:appmesh:eu-west-1:123456789012:mesh/m/virtualRouter/vr/route/r");
    json_decref(r.json);
    expect(f, "PUT", "/v20190125/meshes/m/virtualRouter/vr/routes",
           "{\"routeName\":\"r2\",\"spec\":{}}", 400, "BadRequestException",
           "spec: exactly one of grpcRoute, http2Route, httpRoute, tcpRoute must be set (0 are)");
    expect(f, "PUT", "/v20190125/meshes/m/virtualRouter/vr/routes",
           "{\"routeName\":\"r2\",\"spec\":{\"tcpRoute\":{\"action\":{\"weightedTargets\":[{"
           "\"virtualNode\":\"vn\",\"weight\":0}]}}}}",
           400, "BadRequestException",
           "spec.tcpRoute.action.weightedTargets: at least one weight must be greater than 0");

    /* Deletion order: each resource in use names what uses it. */
    expect(f, "DELETE", "/v20190125/meshes/m/virtualNodes/vn", NULL, 409, "ResourceInUseException",
           "virtual node vn is in use by route r of vr");
    expect(f, "DELETE", "/v20190125/meshes/m/virtualRouters/vr", NULL, 409,
           "ResourceInUseException", "virtual router vr still has resources: route r");
    ok(f, "DELETE", "/v20190125/meshes/m/virtualRouter/vr/routes/r", NULL);
    ok(f, "DELETE", "/v20190125/meshes/m/virtualNodes/vn", NULL);
    expect(f, "DELETE", "/v20190125/meshes/m/virtualRouters/vr", NULL, 409,
           "ResourceInUseException", "virtual router vr is in use by virtual service s.local");
    /* Updating the service to another provider frees the router. */
    ok(f, "PUT", "/v20190125/meshes/m/virtualNodes", VN("vn2", 80));
    ok(f, "PUT", "/v20190125/meshes/m/virtualServices/s.local",
       "{\"spec\":{\"provider\":{\"virtualNode\":{\"virtualNodeName\":\"vn2\"}}}}");
    ok(f, "DELETE", "/v20190125/meshes/m/virtualRouters/vr", NULL);
}

static void test_api_gateways(void **state)
{
    struct fixture *f = *state;
    ok(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"m\"}");
    ok(f, "PUT", "/v20190125/meshes/m/virtualGateways",
       "{\"virtualGatewayName\":\"gw\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":8080,"
       "\"protocol\":\"http\"}}]}}");
    ok(f, "PUT", "/v20190125/meshes/m/virtualServices",
       "{\"virtualServiceName\":\"s\",\"spec\":{}}");
    expect(f, "PUT", "/v20190125/meshes/m/virtualGateway/gw/gatewayRoutes",
           "{\"gatewayRouteName\":\"g\",\"spec\":{\"httpRoute\":{\"match\":{\"prefix\":"
           "\"/aws-appmesh/x\"},\"action\":{\"target\":{\"virtualService\":{"
           "\"virtualServiceName\":\"s\"}}}}}}",
           400, "BadRequestException", "spec.httpRoute.match.prefix: prefixes /aws-appmesh*");
    ok(f, "PUT", "/v20190125/meshes/m/virtualGateway/gw/gatewayRoutes",
       "{\"gatewayRouteName\":\"g\",\"spec\":{\"httpRoute\":{\"match\":{\"prefix\":\"/\"},"
       "\"action\":{\"target\":{\"virtualService\":{\"virtualServiceName\":\"s\"}}}}}}");
    expect(f, "DELETE", "/v20190125/meshes/m/virtualServices/s", NULL, 409,
           "ResourceInUseException", "in use by gateway route g of gw");
    expect(f, "DELETE", "/v20190125/meshes/m/virtualGateways/gw", NULL, 409,
           "ResourceInUseException", "still has resources: gateway route g");
    struct reply r = call(f, "GET", "/v20190125/meshes/m/virtualGateway/gw/gatewayRoutes", NULL);
    json_t *e = json_array_get(json_object_get(r.json, "gatewayRoutes"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "gatewayRouteName")), "g");
    assert_string_equal(json_string_value(json_object_get(e, "virtualGatewayName")), "gw");
    json_decref(r.json);
}

static void test_api_http_level_errors(void **state)
{
    struct fixture *f = *state;
    expect(f, "GET", "/v20190125/nothing", NULL, 404, "UnknownOperationException", NULL);
    expect(f, "GET", "/other/meshes", NULL, 404, "UnknownOperationException", NULL);
    expect(f, "GET", "/v20190125/meshes/", NULL, 404, "UnknownOperationException", NULL);
    expect(f, "GET", "/v20190125/meshes/m/virtualRouters/vr/routes", NULL, 404,
           "UnknownOperationException", NULL); /* routes hang off the singular virtualRouter */
    expect(f, "POST", "/v20190125/meshes", "{}", 405, "MethodNotAllowedException", NULL);
    expect(f, "DELETE", "/v20190125/meshes", NULL, 405, NULL, NULL);
    expect(f, "PATCH", "/v20190125/meshes/m", NULL, 405, NULL, NULL);
    expect(f, "PUT", "/v20190125/meshes", "{\"meshName\":", 400, "SerializationException",
           "body: invalid JSON");
    expect(f, "PUT", "/v20190125/meshes", "[1]", 400, "SerializationException",
           "body: must be a JSON object");
    expect(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"a\",\"meshName\":\"b\"}", 400,
           "SerializationException", NULL);
    /* Percent-encoded names are decoded, and checked like body names. */
    ok(f, "PUT", "/v20190125/meshes", "{\"meshName\":\"a b\"}");
    ok(f, "GET", "/v20190125/meshes/a%20b", NULL);
    expect(f, "GET", "/v20190125/meshes/a%2", NULL, 404, "UnknownOperationException", NULL);
    char longname[400] = "/v20190125/meshes/";
    memset(longname + strlen(longname), 'x', 256);
    expect(f, "GET", longname, NULL, 400, "BadRequestException",
           "meshName: must be 1-255 characters long");
    /* meshOwner: this account is fine, another one owns nothing here. */
    ok(f, "GET", "/v20190125/meshes/a%20b?meshOwner=123456789012", NULL);
    expect(f, "GET", "/v20190125/meshes/a%20b?meshOwner=999999999999", NULL, 404,
           "NotFoundException", "of account 999999999999 not found");
    expect(f, "GET", "/v20190125/meshes/a%20b?meshOwner=1", NULL, 400, "BadRequestException",
           "meshOwner");
}

static void test_api_tags(void **state)
{
    struct fixture *f = *state;
    ok(f, "PUT", "/v20190125/meshes",
       "{\"meshName\":\"m\",\"tags\":[{\"key\":\"team\",\"value\":\"a\"}]}");
    const char *arn = "resourceArn=arn%3Aaws%3Aappmesh%3Aeu-west-1%3A123456789012%3Amesh%2Fm";
    char t[256];
    snprintf(t, sizeof(t), "/v20190125/tag?%s", arn);
    ok(f, "PUT", t,
       "{\"tags\":[{\"key\":\"team\",\"value\":\"b\"},{\"key\":\"env\",\"value\":"
       "\"dev\"}]}");
    snprintf(t, sizeof(t), "/v20190125/tags?%s", arn);
    struct reply r = call(f, "GET", t, NULL);
    char *s = json_dumps(r.json, JSON_COMPACT);
    assert_string_equal(s, "{\"tags\":[{\"key\":\"team\",\"value\":\"b\"},{\"key\":\"env\","
                           "\"value\":\"dev\"}]}");
    free(s);
    json_decref(r.json);
    snprintf(t, sizeof(t), "/v20190125/untag?%s", arn);
    ok(f, "PUT", t, "{\"tagKeys\":[\"team\"]}");
    snprintf(t, sizeof(t), "/v20190125/tags?%s", arn);
    r = call(f, "GET", t, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "tags")), 1);
    json_decref(r.json);
    /* Tags do not change the resource's version. */
    r = call(f, "GET", "/v20190125/meshes/m", NULL);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(r.json, "metadata"), "version")), 1);
    json_decref(r.json);
    expect(f, "GET",
           "/v20190125/tags?resourceArn=arn%3Aaws%3Aappmesh%3Aeu-west-1%3A123456789012%3Amesh%2Fzz",
           NULL, 404, "NotFoundException", NULL);
    expect(f, "GET", "/v20190125/tags", NULL, 400, "BadRequestException", "resourceArn: required");
}

/* The files of examples/appmesh/ (the CLI's --cli-input-json form) are created through the API in
 * order, each accepted; the URI members move from the body to the path as the CLI moves them. */
static void test_api_examples_are_accepted(void **state)
{
    struct fixture *f = *state;
    static const struct {
        const char *file;
        const char *target;
    } ex[] = {
        {"1-mesh.json", "/v20190125/meshes"},
        {"2-virtual-node-blue.json", "/v20190125/meshes/colorapp/virtualNodes"},
        {"3-virtual-node-red.json", "/v20190125/meshes/colorapp/virtualNodes"},
        {"4-virtual-router.json", "/v20190125/meshes/colorapp/virtualRouters"},
        {"5-route.json", "/v20190125/meshes/colorapp/virtualRouter/color-router/routes"},
        {"6-virtual-service.json", "/v20190125/meshes/colorapp/virtualServices"},
        {"7-virtual-node-front.json", "/v20190125/meshes/colorapp/virtualNodes"},
    };
    const char *me = __FILE__;
    const char *cut = strstr(me, "tests/unit/xds/appmesh/api_test.c");
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%.*sexamples/appmesh/%s", cut ? (int)(cut - me) : 0, me,
                 ex[i].file);
        json_error_t je;
        json_t *j = json_load_file(path, 0, &je);
        if (j == NULL) {
            fail_msg("%s: %s", path, je.text);
        }
        if (i > 0) {
            json_object_del(j, "meshName");
        }
        if (strstr(ex[i].target, "/routes") != NULL) {
            json_object_del(j, "virtualRouterName"); /* in the path */
        }
        char *body = json_dumps(j, 0);
        expect(f, "PUT", ex[i].target, body, 200, NULL, NULL);
        free(body);
        json_decref(j);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_arn_and_tokens),
        cmocka_unit_test_setup_teardown(test_api_mesh_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_list_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_children_need_their_mesh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_references_and_in_use, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_gateways, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_http_level_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_tags, setup, teardown),
        cmocka_unit_test_setup_teardown(test_api_examples_are_accepted, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
