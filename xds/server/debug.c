/* debug: GET /debug/xds (debug.h). */
#include "xds/server/debug.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/core/str.h"
#include "proxy/core/xmalloc.h"
#include "xds/appmesh/dump.h"
#include "xds/server/meshes.h"

#define DEBUG_PATH "/debug/xds"

__attribute__((format(printf, 4, 5))) static void
answer_error(struct api_response *out, int status, const char *type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s}", "message", msg);
    out->status = status;
    out->error_type = type;
    out->body = json_dumps(j, JSON_COMPACT);
    out->body_len = strlen(out->body);
    json_decref(j);
}

bool debug_handle(struct meshes *m, const struct api_request *rq, struct api_response *out)
{
    if (rq->path_len != strlen(DEBUG_PATH) || memcmp(rq->path, DEBUG_PATH, rq->path_len) != 0) {
        return false;
    }
    memset(out, 0, sizeof(*out));
    if (strcmp(rq->method, "GET") != 0) {
        out->allow = "GET";
        answer_error(out, 405, "MethodNotAllowedException", "%s " DEBUG_PATH ": only GET",
                     rq->method);
        return true;
    }
    if (m == NULL) {
        answer_error(out, 404, "UnknownOperationException",
                     DEBUG_PATH ": xDS is not served (start with --xds-listen)");
        return true;
    }
    char *node = NULL, *mesh = NULL, *format = NULL;
    const char *bad = NULL;
    for (const char *q = rq->query, *end = rq->query ? rq->query + rq->query_len : NULL;
         q != NULL && q < end && bad == NULL;) {
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *e = amp ? amp : end;
        const char *eq = memchr(q, '=', (size_t)(e - q));
        const char *kend = eq ? eq : e;
        char *val = eq ? str_pct_decode(eq + 1, (size_t)(e - eq - 1), true) : xstrdup("");
        char **slot = NULL;
        if ((size_t)(kend - q) == 4 && memcmp(q, "node", 4) == 0) {
            slot = &node;
        } else if ((size_t)(kend - q) == 4 && memcmp(q, "mesh", 4) == 0) {
            slot = &mesh;
        } else if ((size_t)(kend - q) == 6 && memcmp(q, "format", 6) == 0) {
            slot = &format;
        }
        if (val == NULL) {
            bad = "a parameter is not percent-encoded properly";
        } else if (slot == NULL) {
            bad = "unknown parameter (node, mesh, format)";
        } else if (*slot != NULL) {
            bad = "a parameter given twice";
        }
        if (bad == NULL) {
            *slot = val;
        } else {
            free(val);
        }
        q = amp ? amp + 1 : end;
    }
    bool bootstrap = false;
    if (bad == NULL && format != NULL) {
        if (strcmp(format, "bootstrap") == 0) {
            bootstrap = true;
        } else if (strcmp(format, "resources") != 0) {
            bad = "format: resources or bootstrap";
        }
    }
    if (bad == NULL && (node == NULL) == (mesh == NULL)) {
        bad = "exactly one of node, mesh is required";
    }
    char *vn_mesh = NULL, *vnode = NULL;
    enum tr_proxy kind = TR_VIRTUAL_NODE;
    if (bad == NULL && node != NULL && !translate_proxy_id(node, &vn_mesh, &vnode, &kind)) {
        bad = "node: an id naming a virtual node or gateway (mesh/<mesh>/virtualNode/<node>, "
              "mesh/<mesh>/virtualGateway/<gateway> or their ARNs); use mesh=<mesh> for a "
              "mesh's gRPC resources";
    }
    if (bad != NULL) {
        answer_error(out, 400, "BadRequestException", DEBUG_PATH ": %s", bad);
    } else {
        const char *want = vn_mesh != NULL ? vn_mesh : mesh;
        const struct xds_snapshot *s = meshes_get_proxy(m, want, kind, vnode);
        if (s == NULL) {
            answer_error(out, 404, "NotFoundException", "mesh %s not found", want);
        } else {
            json_t *j = bootstrap ? xds_snapshot_bootstrap(s) : xds_snapshot_json(s);
            out->status = 200;
            out->body = json_dumps(j, JSON_INDENT(2));
            out->body_len = strlen(out->body);
            json_decref(j);
        }
    }
    free(node);
    free(mesh);
    free(format);
    free(vn_mesh);
    free(vnode);
    return true;
}
