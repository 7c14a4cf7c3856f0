/* Unit tests for schema: each validation rule of the App Mesh model (types, required and
 * unknown members, enums, lengths, ranges, list sizes, unions) rejects with the field path of
 * the offending value, and valid bodies pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "xds/appmesh/schema.h"

struct vcase {
    const char *shape;
    const char *body;
    const char *want; /* NULL: valid; else the exact error message */
};

static const struct vcase cases[] = {
    /* valid bodies */
    {"CreateMeshInput", "{\"meshName\":\"m\"}", NULL},
    {"CreateMeshInput",
     "{\"meshName\":\"m\",\"spec\":{\"egressFilter\":{\"type\":\"ALLOW_ALL\"}},"
     "\"tags\":[{\"key\":\"k\",\"value\":\"\"}],\"clientToken\":\"t\"}",
     NULL},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":8080,"
     "\"protocol\":\"http\"},\"timeout\":{\"http\":{\"idle\":{\"unit\":\"s\",\"value\":5}}}}],"
     "\"serviceDiscovery\":{\"dns\":{\"hostname\":\"a.local\"}},\"backends\":[{\"virtualService\":"
     "{\"virtualServiceName\":\"b.local\"}}]}}",
     NULL},
    {"CreateMeshInput", "{\"meshName\":\"m\",\"spec\":null}", NULL}, /* null = absent */
    /* required */
    {"CreateMeshInput", "{}", "meshName: required"},
    {"CreateVirtualNodeInput", "{\"virtualNodeName\":\"vn\"}", "spec: required"},
    {"CreateVirtualNodeInput", "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{}]}}",
     "spec.listeners[0].portMapping: required"},
    {"CreateMeshInput", "{\"meshName\":\"m\",\"spec\":{\"egressFilter\":{}}}",
     "spec.egressFilter.type: required"},
    /* unknown members, at every depth */
    {"CreateMeshInput", "{\"meshName\":\"m\",\"bogus\":1}", "bogus: unknown field"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":1,"
     "\"protocol\":\"http\",\"name\":\"x\"}}]}}",
     "spec.listeners[0].portMapping.name: unknown field"},
    /* enums */
    {"CreateMeshInput", "{\"meshName\":\"m\",\"spec\":{\"egressFilter\":{\"type\":\"SOME\"}}}",
     "spec.egressFilter.type: must be one of ALLOW_ALL|DROP_ALL"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":1,"
     "\"protocol\":\"udp\"}}]}}",
     "spec.listeners[0].portMapping.protocol: must be one of http|tcp|http2|grpc"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":1,"
     "\"protocol\":\"http\"},\"timeout\":{\"http\":{\"idle\":{\"unit\":\"m\",\"value\":5}}}}]}}",
     "spec.listeners[0].timeout.http.idle.unit: must be one of s|ms"},
    /* ranges */
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":0,"
     "\"protocol\":\"http\"}}]}}",
     "spec.listeners[0].portMapping.port: must be 1-65535"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":65536,"
     "\"protocol\":\"http\"}}]}}",
     "spec.listeners[0].portMapping.port: must be 1-65535"},
    {"CreateRouteInput",
     "{\"routeName\":\"r\",\"spec\":{\"priority\":1001,\"tcpRoute\":{\"action\":{"
     "\"weightedTargets\":[{\"virtualNode\":\"a\",\"weight\":1}]}}}}",
     "spec.priority: must be 0-1000"},
    {"CreateRouteInput",
     "{\"routeName\":\"r\",\"spec\":{\"tcpRoute\":{\"action\":{\"weightedTargets\":[{"
     "\"virtualNode\":\"a\",\"weight\":101}]}}}}",
     "spec.tcpRoute.action.weightedTargets[0].weight: must be 0-100"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":1,"
     "\"protocol\":\"http\"},\"timeout\":{\"http\":{\"idle\":{\"unit\":\"s\",\"value\":-1}}}}]}}",
     "spec.listeners[0].timeout.http.idle.value: must be at least 0"},
    /* list sizes */
    {"CreateRouteInput",
     "{\"routeName\":\"r\",\"spec\":{\"tcpRoute\":{\"action\":{\"weightedTargets\":[]}}}}",
     "spec.tcpRoute.action.weightedTargets: must have at least 1 entry"},
    {"CreateRouteInput",
     "{\"routeName\":\"r\",\"spec\":{\"tcpRoute\":{\"action\":{\"weightedTargets\":["
     "{\"virtualNode\":\"a\",\"weight\":1},{\"virtualNode\":\"a\",\"weight\":1},"
     "{\"virtualNode\":\"a\",\"weight\":1},{\"virtualNode\":\"a\",\"weight\":1},"
     "{\"virtualNode\":\"a\",\"weight\":1},{\"virtualNode\":\"a\",\"weight\":1},"
     "{\"virtualNode\":\"a\",\"weight\":1},{\"virtualNode\":\"a\",\"weight\":1},"
     "{\"virtualNode\":\"a\",\"weight\":1},{\"virtualNode\":\"a\",\"weight\":1},"
     "{\"virtualNode\":\"a\",\"weight\":1}]}}}}",
     "spec.tcpRoute.action.weightedTargets: must have at most 10 entries"},
    /* names: 1-255 characters (characters, not bytes) */
    {"CreateMeshInput", "{\"meshName\":\"\"}", "meshName: must be 1-255 characters long"},
    /* unions: exactly one member */
    {"CreateVirtualServiceInput",
     "{\"virtualServiceName\":\"s\",\"spec\":{\"provider\":{\"virtualNode\":{\"virtualNodeName\":"
     "\"a\"},\"virtualRouter\":{\"virtualRouterName\":\"b\"}}}}",
     "spec.provider: exactly one of virtualNode, virtualRouter must be set (2 are)"},
    {"CreateVirtualServiceInput", "{\"virtualServiceName\":\"s\",\"spec\":{\"provider\":{}}}",
     "spec.provider: exactly one of virtualNode, virtualRouter must be set (0 are)"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"serviceDiscovery\":{\"dns\":{\"hostname\":\"h\"},"
     "\"awsCloudMap\":{\"namespaceName\":\"n\",\"serviceName\":\"s\"}}}}",
     "spec.serviceDiscovery: exactly one of awsCloudMap, dns must be set (2 are)"},
    /* types */
    {"CreateMeshInput", "{\"meshName\":5}", "meshName: must be a string"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":\"80\","
     "\"protocol\":\"http\"}}]}}",
     "spec.listeners[0].portMapping.port: must be an integer"},
    {"CreateVirtualNodeInput",
     "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[{\"portMapping\":{\"port\":80.5,"
     "\"protocol\":\"http\"}}]}}",
     "spec.listeners[0].portMapping.port: must be an integer"},
    {"CreateVirtualNodeInput", "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":{}}}",
     "spec.listeners: must be an array"},
    {"CreateVirtualNodeInput", "{\"virtualNodeName\":\"vn\",\"spec\":[]}",
     "spec: must be an object"},
    {"CreateVirtualNodeInput", "{\"virtualNodeName\":\"vn\",\"spec\":{\"listeners\":[null]}}",
     "spec.listeners[0]: must not be null"},
    {"TagResourceInput", "{\"tags\":[{\"key\":\"\",\"value\":\"v\"}]}",
     "tags[0].key: must be 1-128 characters long"},
    {"UntagResourceInput", "{}", "tagKeys: required"},
};

static void test_schema_rules_name_the_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct vcase *c = &cases[i];
        const struct schema_shape *sh = schema_find(c->shape);
        assert_non_null(sh);
        json_error_t je;
        json_t *v = json_loads(c->body, 0, &je);
        if (v == NULL) {
            fail_msg("case %zu: bad test JSON: %s", i, je.text);
        }
        struct err err;
        err_clear(&err);
        int rc = schema_validate(sh, v, "", &err);
        json_decref(v);
        if (c->want == NULL) {
            if (rc != 0) {
                fail_msg("case %zu: want valid, got \"%s\"", i, err.msg);
            }
        } else if (rc == 0 || strcmp(err.msg, c->want) != 0) {
            fail_msg("case %zu: want \"%s\", got rc %d \"%s\"", i, c->want, rc, err.msg);
        }
    }
}

static void test_schema_name_length_counts_characters(void **state)
{
    (void)state;
    /* 255 two-byte characters pass (510 bytes); 256 do not. */
    char body[1200];
    size_t o = (size_t)snprintf(body, sizeof(body), "{\"meshName\":\"");
    for (int i = 0; i < 255; i++) {
        memcpy(body + o, "\xc3\xa9", 2);
        o += 2;
    }
    strcpy(body + o, "\"}");
    const struct schema_shape *sh = schema_find("CreateMeshInput");
    json_t *v = json_loads(body, 0, NULL);
    struct err err;
    err_clear(&err);
    assert_int_equal(schema_validate(sh, v, "", &err), 0);
    json_decref(v);
    strcpy(body + o, "\xc3\xa9\"}");
    v = json_loads(body, 0, NULL);
    assert_int_not_equal(schema_validate(sh, v, "", &err), 0);
    assert_string_equal(err.msg, "meshName: must be 1-255 characters long");
    json_decref(v);
}

static void test_schema_every_kind_has_create_and_update(void **state)
{
    (void)state;
    static const char *const kinds[] = {"Mesh",          "VirtualNode", "VirtualService",
                                        "VirtualRouter", "Route",       "VirtualGateway",
                                        "GatewayRoute"};
    for (size_t i = 0; i < 7; i++) {
        char n[64];
        snprintf(n, sizeof(n), "Create%sInput", kinds[i]);
        assert_non_null(schema_find(n));
        snprintf(n, sizeof(n), "Update%sInput", kinds[i]);
        assert_non_null(schema_find(n));
    }
    assert_null(schema_find("NoSuchInput"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_rules_name_the_path),
        cmocka_unit_test(test_schema_name_length_counts_characters),
        cmocka_unit_test(test_schema_every_kind_has_create_and_update),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
