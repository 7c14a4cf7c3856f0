/* api: the App Mesh REST API over the store (see api.h). Each request is routed by its path
 * segments to (kind, operation), its body checked against the model's input shape
 * (schema.c) and then against the rules the model cannot state (check_rules), and the
 * operation runs in one store transaction. Responses follow the SDK model: Create, Describe,
 * Update and Delete return the resource's Data object as the whole body (the model's
 * `payload`), List returns `{<kinds>: [Ref...], nextToken}`. */
#include "xds/appmesh/api.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "proxy/core/err.h"
#include "proxy/core/log.h"
#include "proxy/core/str.h"
#include "proxy/core/xmalloc.h"
#include "xds/appmesh/schema.h"
#include "xds/appmesh/store.h"

#define API_PREFIX "/v20190125"
#define NAME_MAX_CHARS 255
#define LIST_LIMIT_MAX 100
#define TAGS_MAX 50
#define MAX_SEGMENTS 8
#define MAX_QUERY_PARAMS 16

/* One resource kind: its names in paths, bodies and messages. */
struct kind_info {
    const char *kind;               /* store and ARN name: "virtualNode" */
    const char *collection;         /* path segment of the collection: "virtualNodes" */
    const char *name_field;         /* "virtualNodeName" */
    const char *op;                 /* shape-name stem: "VirtualNode" (CreateVirtualNodeInput) */
    const char *label;              /* in messages: "virtual node" */
    const struct kind_info *parent; /* routes: virtual router; gateway routes: virtual gateway */
};

static const struct kind_info k_mesh = {"mesh", "meshes", "meshName", "Mesh", "mesh", NULL};
static const struct kind_info k_vnode = {"virtualNode", "virtualNodes", "virtualNodeName",
                                         "VirtualNode", "virtual node", NULL};
static const struct kind_info k_vservice = {"virtualService",     "virtualServices",
                                            "virtualServiceName", "VirtualService",
                                            "virtual service",    NULL};
static const struct kind_info k_vrouter = {"virtualRouter", "virtualRouters", "virtualRouterName",
                                           "VirtualRouter", "virtual router", NULL};
static const struct kind_info k_route = {"route", "routes", "routeName",
                                         "Route", "route",  &k_vrouter};
static const struct kind_info k_vgateway = {"virtualGateway",     "virtualGateways",
                                            "virtualGatewayName", "VirtualGateway",
                                            "virtual gateway",    NULL};
static const struct kind_info k_groute = {"gatewayRoute", "gatewayRoutes", "gatewayRouteName",
                                          "GatewayRoute", "gateway route", &k_vgateway};

static const struct kind_info *const mesh_children[] = {&k_vnode, &k_vservice, &k_vrouter,
                                                        &k_vgateway};

struct api {
    struct store *store; /* borrowed */
    char *region;        /* owned */
    char *account;       /* owned */
};

struct query_param {
    char *key, *value; /* owned, decoded */
};

/* One request being handled: its decoded path and query, and the response being built. */
struct call {
    struct api *a;
    const struct api_request *rq;
    struct api_response *out;
    char *seg[MAX_SEGMENTS]; /* owned, decoded */
    size_t n_seg;
    struct query_param q[MAX_QUERY_PARAMS];
    size_t n_q;
};

/* ---- responses -------------------------------------------------------------------------- */

static void respond_json(struct call *c, int status, json_t *body)
{
    /* Timestamps are the only reals: epoch seconds with milliseconds (15 digits keep them). */
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(body);
    if (text == NULL) {
        abort(); /* jansson fails only on allocation */
    }
    free(c->out->body);
    c->out->status = status;
    c->out->body = text;
    c->out->body_len = strlen(text);
}

static int fail(struct call *c, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Fills an AWS error response. Returns -1 so handlers can `return fail(...)`. */
static int fail(struct call *c, int status, const char *type, const char *fmt, ...)
{
    char msg[ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond_json(c, status, json_pack("{s:s}", "message", msg));
    c->out->error_type = type;
    return -1;
}

static int bad_request(struct call *c, const struct err *e)
{
    return fail(c, 400, "BadRequestException", "%s", e->msg);
}

static int internal(struct call *c)
{
    store_rollback(c->a->store);
    return fail(c, 500, "InternalServerErrorException", "the store failed; see the server log");
}

/* ---- names, ARNs, tokens -------------------------------------------------------------- */

size_t api_arn(char *buf, size_t cap, const char *region, const char *account_id, const char *mesh,
               const char *parent_kind, const char *parent, const char *kind, const char *name)
{
    int n;
    if (kind == NULL || strcmp(kind, "mesh") == 0) {
        n = snprintf(buf, cap, "arn:aws:appmesh:%s:%s:mesh/%s", region, account_id, mesh);
    } else if (parent_kind != NULL) {
        n = snprintf(buf, cap, "arn:aws:appmesh:%s:%s:mesh/%s/%s/%s/%s/%s", region, account_id,
                     mesh, parent_kind, parent, kind, name);
    } else {
        n = snprintf(buf, cap, "arn:aws:appmesh:%s:%s:mesh/%s/%s/%s", region, account_id, mesh,
                     kind, name);
    }
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

char *api_token_encode(const char *name)
{
    static const char hex[] = "0123456789abcdef";
    size_t len = strlen(name);
    char *t = xmalloc(3 + 2 * len + 1);
    memcpy(t, "v1.", 3);
    for (size_t i = 0; i < len; i++) {
        t[3 + 2 * i] = hex[(unsigned char)name[i] >> 4];
        t[3 + 2 * i + 1] = hex[(unsigned char)name[i] & 15];
    }
    t[3 + 2 * len] = '\0';
    return t;
}

char *api_token_decode(const char *token)
{
    size_t len = strlen(token);
    if (len < 5 || strncmp(token, "v1.", 3) != 0 || (len - 3) % 2 != 0 ||
        (len - 3) / 2 > 4 * NAME_MAX_CHARS) {
        return NULL;
    }
    size_t n = (len - 3) / 2;
    char *name = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        int hi = hex_val((unsigned char)token[3 + 2 * i]),
            lo = hex_val((unsigned char)token[3 + 2 * i + 1]);
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            free(name);
            return NULL;
        }
        name[i] = (char)(hi << 4 | lo);
    }
    name[n] = '\0';
    return name;
}

static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return n;
}

static int check_uri_name(struct call *c, const char *field, const char *v)
{
    size_t n = utf8_chars(v);
    if (n < 1 || n > NAME_MAX_CHARS) {
        return fail(c, 400, "BadRequestException", "%s: must be 1-%d characters long", field,
                    NAME_MAX_CHARS);
    }
    return 0;
}

static const char *query_get(const struct call *c, const char *key)
{
    for (size_t i = 0; i < c->n_q; i++) {
        if (strcmp(c->q[i].key, key) == 0) {
            return c->q[i].value;
        }
    }
    return NULL;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *new_uid(void)
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
        abort(); /* the kernel's CSPRNG does not fail after boot */
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    char *u = xmalloc(37);
    snprintf(u, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
    return u;
}

/* ---- response shapes ------------------------------------------------------------------ */

static json_t *timestamp(int64_t ms)
{
    return json_real((double)ms / 1000.0);
}

static void arn_of(const struct api *a, const struct kind_info *k, const struct store_res *r,
                   char *buf, size_t cap)
{
    api_arn(buf, cap, a->region, a->account, r->mesh, k->parent ? k->parent->kind : NULL, r->parent,
            k->kind, r->name);
}

/* The model's <Kind>Data: names, spec, metadata (ResourceMetadata), status. */
static json_t *data_json(const struct api *a, const struct kind_info *k, const struct store_res *r)
{
    char arn[2048];
    arn_of(a, k, r, arn, sizeof(arn));
    json_t *spec = json_loads(r->spec, 0, NULL);
    if (spec == NULL) {
        spec = json_object(); /* the store holds only validated JSON; never reached */
    }
    json_t *d = json_pack("{s:s, s:o, s:{s:s, s:s, s:I, s:o, s:o, s:s, s:s}, s:{s:s}}", "meshName",
                          r->mesh, "spec", spec, "metadata", "arn", arn, "uid", r->uid, "version",
                          (json_int_t)r->version, "createdAt", timestamp(r->created_ms),
                          "lastUpdatedAt", timestamp(r->updated_ms), "meshOwner", a->account,
                          "resourceOwner", a->account, "status", "status", r->status);
    if (k != &k_mesh) {
        json_object_set_new(d, k->name_field, json_string(r->name));
    }
    if (k->parent != NULL) {
        json_object_set_new(d, k->parent->name_field, json_string(r->parent));
    }
    return d;
}

/* The model's <Kind>Ref, a list entry. */
static json_t *ref_json(const struct api *a, const struct kind_info *k, const struct store_res *r)
{
    char arn[2048];
    arn_of(a, k, r, arn, sizeof(arn));
    json_t *d = json_pack("{s:s, s:o, s:o, s:s, s:s, s:s, s:I}", "arn", arn, "createdAt",
                          timestamp(r->created_ms), "lastUpdatedAt", timestamp(r->updated_ms),
                          "meshName", r->mesh, "meshOwner", a->account, "resourceOwner", a->account,
                          "version", (json_int_t)r->version);
    json_object_set_new(d, k->name_field, json_string(r->name));
    if (k->parent != NULL) {
        json_object_set_new(d, k->parent->name_field, json_string(r->parent));
    }
    return d;
}

/* ---- validation beyond the model ------------------------------------------------------- */

static int exactly_one(const json_t *obj, const char *const *names, size_t n, const char *path,
                       struct err *err)
{
    size_t set = 0;
    char list[256] = "";
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_object_get(obj, names[i]);
        set += v != NULL && !json_is_null(v);
        int w = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "", names[i]);
        off += w > 0 && (size_t)w < sizeof(list) - off ? (size_t)w : 0;
    }
    if (set != 1) {
        return err_set(err, path, "exactly one of %s must be set (%zu are)", list, set);
    }
    return 0;
}

/* Listener ports must differ: a port names the listener (routes' and targets' `port`). */
static int unique_ports(const json_t *listeners, struct err *err)
{
    size_t n = json_array_size(listeners);
    for (size_t i = 0; i < n; i++) {
        json_t *pi =
            json_object_get(json_object_get(json_array_get(listeners, i), "portMapping"), "port");
        for (size_t j = 0; j < i; j++) {
            json_t *pj = json_object_get(
                json_object_get(json_array_get(listeners, j), "portMapping"), "port");
            if (json_integer_value(pi) == json_integer_value(pj)) {
                char path[96];
                snprintf(path, sizeof(path), "spec.listeners[%zu].portMapping.port", i);
                return err_set(err, path, "port %lld is already used by listeners[%zu]",
                               (long long)json_integer_value(pi), j);
            }
        }
    }
    return 0;
}

static int check_weighted_targets(const json_t *action, const char *path, struct err *err)
{
    const json_t *wt = json_object_get(action, "weightedTargets");
    size_t n = json_array_size(wt);
    for (size_t i = 0; i < n; i++) {
        if (json_integer_value(json_object_get(json_array_get(wt, i), "weight")) > 0) {
            return 0;
        }
    }
    return err_set(err, path, "at least one weight must be greater than 0");
}

static int check_route(const json_t *spec, struct err *err)
{
    static const char *const kinds[] = {"grpcRoute", "http2Route", "httpRoute", "tcpRoute"};
    int rc = exactly_one(spec, kinds, 4, "spec", err);
    if (rc < 0) {
        return rc;
    }
    for (size_t i = 0; i < 4; i++) {
        const json_t *r = json_object_get(spec, kinds[i]);
        if (r == NULL || json_is_null(r)) {
            continue;
        }
        char path[96];
        snprintf(path, sizeof(path), "spec.%s.action.weightedTargets", kinds[i]);
        rc = check_weighted_targets(json_object_get(r, "action"), path, err);
        if (rc < 0) {
            return rc;
        }
        const json_t *prefix = json_object_get(json_object_get(r, "match"), "prefix");
        if (json_is_string(prefix) && json_string_value(prefix)[0] != '/') {
            snprintf(path, sizeof(path), "spec.%s.match.prefix", kinds[i]);
            return err_set(err, path, "must start with /");
        }
    }
    return 0;
}

static int check_gateway_route(const json_t *spec, struct err *err)
{
    static const char *const kinds[] = {"grpcRoute", "http2Route", "httpRoute"};
    int rc = exactly_one(spec, kinds, 3, "spec", err);
    if (rc < 0) {
        return rc;
    }
    for (size_t i = 1; i < 3; i++) {
        const json_t *prefix =
            json_object_get(json_object_get(json_object_get(spec, kinds[i]), "match"), "prefix");
        if (!json_is_string(prefix)) {
            continue;
        }
        const char *p = json_string_value(prefix);
        char path[96];
        snprintf(path, sizeof(path), "spec.%s.match.prefix", kinds[i]);
        if (p[0] != '/') {
            return err_set(err, path, "must start with /");
        }
        /* App Mesh reserves these for its own (Envoy admin and health) paths. */
        if (strncmp(p, "/aws-appmesh", 12) == 0 || strncmp(p, "/aws-app-mesh", 13) == 0) {
            return err_set(err, path, "prefixes /aws-appmesh* and /aws-app-mesh* are reserved");
        }
    }
    return 0;
}

/* The rules the model cannot state, on a spec the schema has accepted. */
static int check_rules(const struct kind_info *k, const json_t *spec, struct err *err)
{
    if (k == &k_vnode || k == &k_vrouter || k == &k_vgateway) {
        return unique_ports(json_object_get(spec, "listeners"), err);
    }
    if (k == &k_route) {
        return check_route(spec, err);
    }
    if (k == &k_groute) {
        return check_gateway_route(spec, err);
    }
    return 0;
}

/* The resources a spec names that must exist in the mesh (AWS checks these at write time):
 * a virtual service's provider, a route's weighted targets, a gateway route's target. */
struct ref_list {
    struct store_ref r[32];
    char path[32][96];
    size_t n;
};

static void ref_add(struct ref_list *l, const char *kind, const json_t *name, const char *path)
{
    if (!json_is_string(name) || l->n == 32) {
        return;
    }
    l->r[l->n].kind = kind;
    l->r[l->n].name = json_string_value(name);
    snprintf(l->path[l->n], sizeof(l->path[0]), "%s", path);
    l->n++;
}

static void collect_refs(const struct kind_info *k, const json_t *spec, struct ref_list *l)
{
    l->n = 0;
    if (k == &k_vservice) {
        const json_t *p = json_object_get(spec, "provider");
        ref_add(l, "virtualNode",
                json_object_get(json_object_get(p, "virtualNode"), "virtualNodeName"),
                "spec.provider.virtualNode.virtualNodeName");
        ref_add(l, "virtualRouter",
                json_object_get(json_object_get(p, "virtualRouter"), "virtualRouterName"),
                "spec.provider.virtualRouter.virtualRouterName");
    } else if (k == &k_route) {
        static const char *const kinds[] = {"grpcRoute", "http2Route", "httpRoute", "tcpRoute"};
        for (size_t i = 0; i < 4; i++) {
            const json_t *wt = json_object_get(
                json_object_get(json_object_get(spec, kinds[i]), "action"), "weightedTargets");
            for (size_t j = 0; j < json_array_size(wt); j++) {
                char path[96];
                snprintf(path, sizeof(path), "spec.%s.action.weightedTargets[%zu].virtualNode",
                         kinds[i], j);
                ref_add(l, "virtualNode", json_object_get(json_array_get(wt, j), "virtualNode"),
                        path);
            }
        }
    } else if (k == &k_groute) {
        static const char *const kinds[] = {"grpcRoute", "http2Route", "httpRoute"};
        for (size_t i = 0; i < 3; i++) {
            char path[96];
            snprintf(path, sizeof(path), "spec.%s.action.target.virtualService.virtualServiceName",
                     kinds[i]);
            ref_add(
                l, "virtualService",
                json_object_get(
                    json_object_get(
                        json_object_get(json_object_get(json_object_get(spec, kinds[i]), "action"),
                                        "target"),
                        "virtualService"),
                    "virtualServiceName"),
                path);
        }
    }
}

static const char *kind_label(const char *kind)
{
    static const struct kind_info *const all[] = {&k_mesh,  &k_vnode,    &k_vservice, &k_vrouter,
                                                  &k_route, &k_vgateway, &k_groute};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(all[i]->kind, kind) == 0) {
            return all[i]->label;
        }
    }
    return kind;
}

/* ---- operations ------------------------------------------------------------------------ */

/* The target of an operation: kind, mesh, parent ("" or the router/gateway), name (NULL on a
 * collection). */
struct target {
    const struct kind_info *k;
    const char *mesh;
    const char *parent;
    const char *name;
};

static int parse_body(struct call *c, const char *shape_name, json_t **out)
{
    json_error_t je;
    if (c->rq->body_len == 0) {
        *out = json_object(); /* an absent body is an empty one, as the SDKs send it */
    } else {
        *out = json_loadb(c->rq->body, c->rq->body_len, JSON_REJECT_DUPLICATES, &je);
        if (*out == NULL) {
            return fail(c, 400, "SerializationException", "body: invalid JSON: %s (at byte %d)",
                        je.text, je.position);
        }
    }
    if (!json_is_object(*out)) {
        json_decref(*out);
        *out = NULL;
        return fail(c, 400, "SerializationException", "body: must be a JSON object");
    }
    const struct schema_shape *sh = schema_find(shape_name);
    struct err err;
    err_clear(&err);
    if (sh == NULL || schema_validate(sh, *out, "", &err) < 0) {
        json_decref(*out);
        *out = NULL;
        return sh == NULL ? internal(c) : bad_request(c, &err);
    }
    return 0;
}

/* The spec as stored: the body's, or {} when absent, with AWS's defaults filled in (a mesh's
 * egress filter is DROP_ALL). Returns a new reference. */
static json_t *normalized_spec(const struct kind_info *k, json_t *body)
{
    json_t *spec = json_object_get(body, "spec");
    spec = spec != NULL && !json_is_null(spec) ? json_deep_copy(spec) : json_object();
    if (k == &k_mesh && json_object_get(spec, "egressFilter") == NULL) {
        json_object_set_new(spec, "egressFilter", json_pack("{s:s}", "type", "DROP_ALL"));
    }
    return spec;
}

static int load_mesh_and_parent(struct call *c, const struct target *t)
{
    struct store_res r = {0};
    int rc = store_get(c->a->store, "mesh", t->mesh, "", t->mesh, &r);
    store_res_clear(&r);
    if (rc == -ENOENT) {
        return fail(c, 404, "NotFoundException", "mesh %s not found", t->mesh);
    }
    if (rc < 0) {
        return internal(c);
    }
    if (t->k->parent != NULL) {
        rc = store_get(c->a->store, t->k->parent->kind, t->mesh, "", t->parent, &r);
        store_res_clear(&r);
        if (rc == -ENOENT) {
            return fail(c, 404, "NotFoundException", "%s %s not found in mesh %s",
                        t->k->parent->label, t->parent, t->mesh);
        }
        if (rc < 0) {
            return internal(c);
        }
    }
    return 0;
}

static int check_refs_exist(struct call *c, const struct target *t, const struct ref_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        struct store_res r = {0};
        int rc = store_get(c->a->store, l->r[i].kind, t->mesh, "", l->r[i].name, &r);
        store_res_clear(&r);
        if (rc == -ENOENT) {
            return fail(c, 404, "NotFoundException", "%s: %s %s not found in mesh %s", l->path[i],
                        kind_label(l->r[i].kind), l->r[i].name, t->mesh);
        }
        if (rc < 0) {
            return internal(c);
        }
    }
    return 0;
}

static const char *token_of(json_t *body)
{
    const char *t = json_string_value(json_object_get(body, "clientToken"));
    return t != NULL ? t : "";
}

static void op_create(struct call *c, struct target *t)
{
    char shape[64];
    snprintf(shape, sizeof(shape), "Create%sInput", t->k->op);
    json_t *body = NULL;
    json_t *spec = NULL;
    struct store_res old = {0};
    struct ref_list *refs = xcalloc(1, sizeof(*refs));
    if (parse_body(c, shape, &body) < 0) {
        goto out;
    }
    t->name = json_string_value(json_object_get(body, t->k->name_field));
    if (t->k == &k_mesh) {
        t->mesh = t->name;
    }
    spec = normalized_spec(t->k, body);
    struct err err;
    err_clear(&err);
    if (check_rules(t->k, spec, &err) < 0) {
        bad_request(c, &err);
        goto out;
    }
    json_t *tags = json_object_get(body, "tags");
    char *tags_text =
        tags != NULL && !json_is_null(tags) ? json_dumps(tags, JSON_COMPACT) : xstrdup("[]");
    char *spec_text = json_dumps(spec, JSON_COMPACT);
    if (store_begin(c->a->store) < 0) {
        internal(c);
        goto out_text;
    }
    if (t->k != &k_mesh && load_mesh_and_parent(c, t) < 0) {
        goto out_rollback;
    }
    int rc = store_get(c->a->store, t->k->kind, t->mesh, t->parent, t->name, &old);
    if (rc == 0) {
        /* A retry of the create that made it (same clientToken, same request) gets the
         * resource; anything else is a conflict. */
        json_t *old_spec = json_loads(old.spec, 0, NULL);
        json_t *old_tags = json_loads(old.tags, 0, NULL);
        json_t *new_tags = json_loads(tags_text, 0, NULL);
        bool same = token_of(body)[0] != '\0' && old.version == 1 &&
                    strcmp(token_of(body), old.client_token) == 0 && json_equal(old_spec, spec) &&
                    json_equal(old_tags, new_tags);
        json_decref(old_spec);
        json_decref(old_tags);
        json_decref(new_tags);
        store_rollback(c->a->store);
        if (same) {
            respond_json(c, 200, data_json(c->a, t->k, &old));
        } else if (t->k->parent != NULL) {
            fail(c, 409, "ConflictException", "%s %s already exists in %s %s of mesh %s",
                 t->k->label, t->name, t->k->parent->label, t->parent, t->mesh);
        } else if (t->k == &k_mesh) {
            fail(c, 409, "ConflictException", "mesh %s already exists", t->name);
        } else {
            fail(c, 409, "ConflictException", "%s %s already exists in mesh %s", t->k->label,
                 t->name, t->mesh);
        }
        goto out_text;
    }
    if (rc != -ENOENT) {
        internal(c);
        goto out_text;
    }
    collect_refs(t->k, spec, refs);
    if (check_refs_exist(c, t, refs) < 0) {
        goto out_rollback;
    }
    int64_t now = now_ms();
    struct store_res r = {
        .kind = (char *)t->k->kind,
        .mesh = (char *)t->mesh,
        .parent = (char *)t->parent,
        .name = (char *)t->name,
        .spec = spec_text,
        .tags = tags_text,
        .uid = new_uid(),
        .status = "ACTIVE",
        .client_token = (char *)token_of(body),
        .version = 1,
        .created_ms = now,
        .updated_ms = now,
    };
    if (store_insert(c->a->store, &r) < 0 ||
        store_refs_set(c->a->store, t->k->kind, t->mesh, t->parent, t->name, refs->r, refs->n) <
            0 ||
        store_commit(c->a->store) < 0) {
        free(r.uid);
        internal(c);
        goto out_text;
    }
    respond_json(c, 200, data_json(c->a, t->k, &r));
    free(r.uid);
    goto out_text;
out_rollback:
    store_rollback(c->a->store);
out_text:
    free(tags_text);
    free(spec_text);
out:
    store_res_clear(&old);
    free(refs);
    json_decref(spec);
    json_decref(body);
}

static int get_existing(struct call *c, const struct target *t, struct store_res *r)
{
    int rc = store_get(c->a->store, t->k->kind, t->mesh, t->parent, t->name, r);
    if (rc == -ENOENT) {
        if (t->k == &k_mesh) {
            return fail(c, 404, "NotFoundException", "mesh %s not found", t->mesh);
        }
        /* Name the first missing level, as a caller would look for it. */
        if (load_mesh_and_parent(c, t) < 0) {
            return -1;
        }
        if (t->k->parent != NULL) {
            return fail(c, 404, "NotFoundException", "%s %s not found in %s %s of mesh %s",
                        t->k->label, t->name, t->k->parent->label, t->parent, t->mesh);
        }
        return fail(c, 404, "NotFoundException", "%s %s not found in mesh %s", t->k->label, t->name,
                    t->mesh);
    }
    return rc < 0 ? internal(c) : 0;
}

static void op_describe(struct call *c, const struct target *t)
{
    struct store_res r = {0};
    if (get_existing(c, t, &r) == 0) {
        respond_json(c, 200, data_json(c->a, t->k, &r));
    }
    store_res_clear(&r);
}

static void op_update(struct call *c, const struct target *t)
{
    char shape[64];
    snprintf(shape, sizeof(shape), "Update%sInput", t->k->op);
    json_t *body = NULL, *spec = NULL, *old_spec = NULL;
    char *spec_text = NULL;
    struct store_res r = {0};
    struct ref_list *refs = xcalloc(1, sizeof(*refs));
    if (parse_body(c, shape, &body) < 0) {
        goto out;
    }
    spec = normalized_spec(t->k, body);
    struct err err;
    err_clear(&err);
    if (check_rules(t->k, spec, &err) < 0) {
        bad_request(c, &err);
        goto out;
    }
    if (store_begin(c->a->store) < 0) {
        internal(c);
        goto out;
    }
    if (get_existing(c, t, &r) < 0) {
        store_rollback(c->a->store);
        goto out;
    }
    old_spec = json_loads(r.spec, 0, NULL);
    if (token_of(body)[0] != '\0' && strcmp(token_of(body), r.client_token) == 0 &&
        json_equal(old_spec, spec)) {
        /* A retry of the update that made this version. */
        store_rollback(c->a->store);
        respond_json(c, 200, data_json(c->a, t->k, &r));
        goto out;
    }
    collect_refs(t->k, spec, refs);
    if (check_refs_exist(c, t, refs) < 0) {
        store_rollback(c->a->store);
        goto out;
    }
    spec_text = json_dumps(spec, JSON_COMPACT);
    free(r.spec);
    r.spec = spec_text;
    spec_text = NULL;
    free(r.client_token);
    r.client_token = xstrdup(token_of(body));
    r.version++;
    r.updated_ms = now_ms();
    if (store_update(c->a->store, &r) < 0 ||
        store_refs_set(c->a->store, t->k->kind, t->mesh, t->parent, t->name, refs->r, refs->n) <
            0 ||
        store_commit(c->a->store) < 0) {
        internal(c);
        goto out;
    }
    respond_json(c, 200, data_json(c->a, t->k, &r));
out:
    store_res_clear(&r);
    free(refs);
    free(spec_text);
    json_decref(old_spec);
    json_decref(spec);
    json_decref(body);
}

/* AWS's deletion rules, checked in the delete's transaction:
 *  - a mesh with any virtual node, service, router or gateway left;
 *  - a virtual router with routes, a virtual gateway with gateway routes;
 *  - a resource another one names: a virtual node or router that is a virtual service's
 *    provider, a virtual node that is a route's target, a virtual service that is a gateway
 *    route's target.
 * Each is 409 ResourceInUseException naming one resource in the way. */
static int check_in_use(struct call *c, const struct target *t)
{
    struct store_res who = {0};
    int rc;
    if (t->k == &k_mesh) {
        rc = store_child_find(c->a->store, t->mesh, NULL, NULL, &who);
    } else if (t->k == &k_vrouter || t->k == &k_vgateway) {
        rc = store_child_find(c->a->store, t->mesh, t->k == &k_vrouter ? "route" : "gatewayRoute",
                              t->name, &who);
    } else {
        rc = -ENOENT;
    }
    if (rc == 0) {
        fail(c, 409, "ResourceInUseException", "%s %s still has resources: %s %s%s%s", t->k->label,
             t->name, kind_label(who.kind), who.name, who.parent[0] ? " of " : "", who.parent);
        store_res_clear(&who);
        return -1;
    }
    if (rc == -ENOENT && t->k != &k_mesh) {
        rc = store_ref_find(c->a->store, t->mesh, t->k->kind, t->name, &who);
        if (rc == 0) {
            fail(c, 409, "ResourceInUseException", "%s %s is in use by %s %s%s%s", t->k->label,
                 t->name, kind_label(who.kind), who.name, who.parent[0] ? " of " : "", who.parent);
            store_res_clear(&who);
            return -1;
        }
    }
    store_res_clear(&who);
    return rc == -ENOENT ? 0 : internal(c);
}

static void op_delete(struct call *c, const struct target *t)
{
    struct store_res r = {0};
    if (store_begin(c->a->store) < 0) {
        internal(c);
        return;
    }
    if (get_existing(c, t, &r) < 0 || check_in_use(c, t) < 0) {
        store_rollback(c->a->store);
        store_res_clear(&r);
        return;
    }
    if (store_delete(c->a->store, t->k->kind, t->mesh, t->parent, t->name) < 0 ||
        store_commit(c->a->store) < 0) {
        internal(c);
        store_res_clear(&r);
        return;
    }
    free(r.status);
    r.status = xstrdup("DELETED");
    respond_json(c, 200, data_json(c->a, t->k, &r));
    store_res_clear(&r);
}

/* `limit` (1-100, default 100) and `nextToken` of a List call. */
static int page_params(struct call *c, int max, int *limit, char **after)
{
    *after = NULL;
    *limit = max;
    const char *l = query_get(c, "limit");
    if (l != NULL) {
        char *end = NULL;
        long v = strtol(l, &end, 10);
        if (end == l || *end != '\0' || v < 1 || v > max) {
            return fail(c, 400, "BadRequestException", "limit: must be 1-%d", max);
        }
        *limit = (int)v;
    }
    const char *tok = query_get(c, "nextToken");
    if (tok != NULL) {
        *after = api_token_decode(tok);
        if (*after == NULL) {
            return fail(c, 400, "BadRequestException", "nextToken: not a token this API issued");
        }
    }
    return 0;
}

static void op_list(struct call *c, const struct target *t)
{
    int limit;
    char *after = NULL;
    struct store_res *list = NULL;
    size_t n = 0;
    bool more = false;
    if (page_params(c, LIST_LIMIT_MAX, &limit, &after) < 0) {
        goto out;
    }
    if (t->k != &k_mesh && load_mesh_and_parent(c, t) < 0) {
        goto out;
    }
    if (store_list(c->a->store, t->k->kind, t->mesh, t->parent, after, limit, &list, &n, &more) <
        0) {
        internal(c);
        goto out;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(arr, ref_json(c->a, t->k, &list[i]));
    }
    json_t *o = json_object();
    json_object_set_new(o, t->k->collection, arr);
    if (more) {
        char *tok = api_token_encode(list[n - 1].name);
        json_object_set_new(o, "nextToken", json_string(tok));
        free(tok);
    }
    respond_json(c, 200, o);
out:
    store_res_list_free(list, n);
    free(after);
}

/* ---- tags ------------------------------------------------------------------------------ */

/* Resolves `resourceArn` to a stored resource of this region and account. */
static int arn_target(struct call *c, struct store_res *r, const struct kind_info **kout)
{
    const char *arn = query_get(c, "resourceArn");
    if (arn == NULL) {
        return fail(c, 400, "BadRequestException", "resourceArn: required");
    }
    char prefix[256];
    int pn = snprintf(prefix, sizeof(prefix), "arn:aws:appmesh:%s:%s:mesh/", c->a->region,
                      c->a->account);
    if (strncmp(arn, prefix, (size_t)pn) != 0) {
        return fail(c, 404, "NotFoundException",
                    "resourceArn: %s is not a resource of this mesh "
                    "server (arn:aws:appmesh:%s:%s:mesh/...)",
                    arn, c->a->region, c->a->account);
    }
    char *rest = xstrdup(arn + pn);
    char *part[6];
    size_t np = 0;
    for (char *save = NULL, *p = strtok_r(rest, "/", &save); p != NULL;
         p = strtok_r(NULL, "/", &save)) {
        if (np == 6) {
            np = 7;
            break;
        }
        part[np++] = p;
    }
    const struct kind_info *k = NULL;
    const char *parent = "", *name = NULL;
    if (np == 1) {
        k = &k_mesh;
        name = part[0];
    } else if (np == 3) {
        for (size_t i = 0; i < 4; i++) {
            if (strcmp(part[1], mesh_children[i]->kind) == 0) {
                k = mesh_children[i];
            }
        }
        name = part[2];
    } else if (np == 5) {
        if (strcmp(part[1], "virtualRouter") == 0 && strcmp(part[3], "route") == 0) {
            k = &k_route;
        } else if (strcmp(part[1], "virtualGateway") == 0 && strcmp(part[3], "gatewayRoute") == 0) {
            k = &k_groute;
        }
        parent = part[2];
        name = part[4];
    }
    int rc = -1;
    if (k == NULL) {
        fail(c, 400, "BadRequestException", "resourceArn: %s is not an App Mesh resource ARN", arn);
        goto out;
    }
    rc = store_get(c->a->store, k->kind, part[0], parent, name, r);
    if (rc == -ENOENT) {
        rc = fail(c, 404, "NotFoundException", "resourceArn: %s not found", arn);
    } else if (rc < 0) {
        rc = internal(c);
    }
    *kout = k;
out:
    free(rest);
    return rc;
}

static void op_tags(struct call *c, int which)
{
    json_t *body = NULL, *tags = NULL;
    struct store_res r = {0};
    const struct kind_info *k = NULL;
    int limit = TAGS_MAX;
    char *after = NULL;
    if (which == 0 && page_params(c, TAGS_MAX, &limit, &after) < 0) {
        goto out;
    }
    if (which != 0 &&
        parse_body(c, which == 1 ? "TagResourceInput" : "UntagResourceInput", &body) < 0) {
        goto out;
    }
    if (store_begin(c->a->store) < 0) {
        internal(c);
        goto out;
    }
    if (arn_target(c, &r, &k) < 0) {
        store_rollback(c->a->store);
        goto out;
    }
    tags = json_loads(r.tags, 0, NULL);
    if (!json_is_array(tags)) {
        json_decref(tags);
        tags = json_array();
    }
    if (which == 0) {
        store_rollback(c->a->store);
        /* Tags are few (at most 50): a page token is the index of the next one. */
        size_t start = 0;
        if (after != NULL) {
            char *end = NULL;
            start = strtoul(after, &end, 10);
            if (*end != '\0') {
                fail(c, 400, "BadRequestException", "nextToken: not a token this API issued");
                goto out;
            }
        }
        json_t *page = json_array();
        for (size_t i = start; i < json_array_size(tags) && i < start + (size_t)limit; i++) {
            json_array_append(page, json_array_get(tags, i));
        }
        json_t *o = json_pack("{s:o}", "tags", page);
        if (start + (size_t)limit < json_array_size(tags)) {
            char idx[32];
            snprintf(idx, sizeof(idx), "%zu", start + (size_t)limit);
            char *tok = api_token_encode(idx);
            json_object_set_new(o, "nextToken", json_string(tok));
            free(tok);
        }
        respond_json(c, 200, o);
        goto out;
    }
    if (which == 1) {
        json_t *add = json_object_get(body, "tags");
        for (size_t i = 0; i < json_array_size(add); i++) {
            json_t *t = json_array_get(add, i);
            const char *key = json_string_value(json_object_get(t, "key"));
            size_t j = 0;
            while (j < json_array_size(tags) &&
                   strcmp(json_string_value(json_object_get(json_array_get(tags, j), "key")),
                          key) != 0) {
                j++;
            }
            if (j < json_array_size(tags)) {
                json_array_set(tags, j, t);
            } else {
                json_array_append(tags, t);
            }
        }
        if (json_array_size(tags) > TAGS_MAX) {
            store_rollback(c->a->store);
            fail(c, 400, "TooManyTagsException", "tags: a resource has at most %d tags", TAGS_MAX);
            goto out;
        }
    } else {
        json_t *keys = json_object_get(body, "tagKeys");
        for (size_t i = 0; i < json_array_size(keys); i++) {
            const char *key = json_string_value(json_array_get(keys, i));
            for (size_t j = 0; j < json_array_size(tags); j++) {
                if (strcmp(json_string_value(json_object_get(json_array_get(tags, j), "key")),
                           key) == 0) {
                    json_array_remove(tags, j);
                    break;
                }
            }
        }
    }
    free(r.tags);
    r.tags = json_dumps(tags, JSON_COMPACT);
    /* Tags are not part of the spec: the version and lastUpdatedAt stay. */
    if (store_update(c->a->store, &r) < 0 || store_commit(c->a->store) < 0) {
        internal(c);
        goto out;
    }
    respond_json(c, 200, json_object());
out:
    free(after);
    store_res_clear(&r);
    json_decref(tags);
    json_decref(body);
}

/* ---- routing --------------------------------------------------------------------------- */

static int split_request(struct call *c)
{
    const char *p = c->rq->path;
    size_t len = c->rq->path_len;
    size_t plen = strlen(API_PREFIX);
    if (len < plen || memcmp(p, API_PREFIX, plen) != 0 || (len > plen && p[plen] != '/')) {
        return -1;
    }
    p += plen;
    len -= plen;
    while (len > 0) {
        /* p[0] == '/' */
        p++;
        len--;
        const char *slash = memchr(p, '/', len);
        size_t n = slash ? (size_t)(slash - p) : len;
        if (n == 0 || c->n_seg == MAX_SEGMENTS) {
            return -1; /* "//", a trailing '/' or too deep: no such operation */
        }
        c->seg[c->n_seg] = str_pct_decode(p, n, false);
        if (c->seg[c->n_seg] == NULL) {
            return -1;
        }
        c->n_seg++;
        p += n;
        len -= n;
    }
    if (c->rq->query != NULL) {
        const char *q = c->rq->query, *qend = q + c->rq->query_len;
        while (q < qend) {
            const char *amp = memchr(q, '&', (size_t)(qend - q));
            const char *e = amp ? amp : qend;
            const char *eq = memchr(q, '=', (size_t)(e - q));
            if (e > q) {
                if (c->n_q == MAX_QUERY_PARAMS) {
                    return -2;
                }
                const char *kend = eq ? eq : e;
                char *key = str_pct_decode(q, (size_t)(kend - q), false);
                char *val = eq ? str_pct_decode(eq + 1, (size_t)(e - eq - 1), false) : xstrdup("");
                if (key == NULL || val == NULL) {
                    free(key);
                    free(val);
                    return -2;
                }
                c->q[c->n_q].key = key;
                c->q[c->n_q].value = val;
                c->n_q++;
            }
            q = e + 1;
        }
    }
    return 0;
}

static bool is(const char *m, const char *want)
{
    return strcmp(m, want) == 0;
}

static void method_not_allowed(struct call *c, const char *allow)
{
    fail(c, 405, "MethodNotAllowedException", "%s is not allowed here (allowed: %s)", c->rq->method,
         allow);
    c->out->allow = allow;
}

static void dispatch(struct call *c)
{
    const char *m = c->rq->method;
    char **s = c->seg;
    size_t n = c->n_seg;
    if (n == 1 && (is(s[0], "tag") || is(s[0], "untag") || is(s[0], "tags"))) {
        const char *want = is(s[0], "tags") ? "GET" : "PUT";
        if (!is(m, want)) {
            method_not_allowed(c, want);
            return;
        }
        op_tags(c, is(s[0], "tags") ? 0 : is(s[0], "tag") ? 1 : 2);
        return;
    }
    if (n == 0 || !is(s[0], "meshes")) {
        goto unknown;
    }
    struct target t = {.k = NULL, .mesh = n > 1 ? s[1] : NULL, .parent = "", .name = NULL};
    bool item;
    if (n <= 2) {
        t.k = &k_mesh;
        item = n == 2;
        t.name = t.mesh;
    } else if (n <= 4) {
        for (size_t i = 0; i < 4; i++) {
            if (is(s[2], mesh_children[i]->collection)) {
                t.k = mesh_children[i];
            }
        }
        item = n == 4;
        t.name = item ? s[3] : NULL;
    } else {
        if (is(s[2], "virtualRouter") && is(s[4], "routes")) {
            t.k = &k_route;
        } else if (is(s[2], "virtualGateway") && is(s[4], "gatewayRoutes")) {
            t.k = &k_groute;
        }
        t.parent = s[3];
        item = n == 6;
        t.name = item ? s[5] : NULL;
        if (n > 6) {
            t.k = NULL;
        }
    }
    if (t.k == NULL) {
        goto unknown;
    }
    if (t.mesh != NULL && check_uri_name(c, "meshName", t.mesh) < 0) {
        return;
    }
    if (t.k->parent != NULL && check_uri_name(c, t.k->parent->name_field, t.parent) < 0) {
        return;
    }
    if (item && check_uri_name(c, t.k->name_field, t.name) < 0) {
        return;
    }
    const char *owner = query_get(c, "meshOwner");
    if (owner != NULL && strcmp(owner, c->a->account) != 0) {
        if (strlen(owner) != 12) {
            fail(c, 400, "BadRequestException", "meshOwner: must be 12 characters long");
            return;
        }
        /* Meshes shared from other accounts do not exist here. */
        fail(c, 404, "NotFoundException", "mesh %s of account %s not found", t.mesh ? t.mesh : "",
             owner);
        return;
    }
    if (!item) {
        if (is(m, "GET")) {
            op_list(c, &t);
        } else if (is(m, "PUT")) {
            op_create(c, &t);
        } else {
            method_not_allowed(c, "GET, PUT");
        }
        return;
    }
    if (is(m, "GET")) {
        op_describe(c, &t);
    } else if (is(m, "PUT")) {
        op_update(c, &t);
    } else if (is(m, "DELETE")) {
        op_delete(c, &t);
    } else {
        method_not_allowed(c, "DELETE, GET, PUT");
    }
    return;
unknown:
    fail(c, 404, "UnknownOperationException", "no App Mesh operation for %s %.*s", m,
         (int)(c->rq->path_len > 512 ? 512 : c->rq->path_len), c->rq->path);
}

void api_handle(struct api *a, const struct api_request *rq, struct api_response *out)
{
    memset(out, 0, sizeof(*out));
    struct call *c = xcalloc(1, sizeof(*c));
    c->a = a;
    c->rq = rq;
    c->out = out;
    int rc = split_request(c);
    if (rc == -1) {
        fail(c, 404, "UnknownOperationException", "no App Mesh operation for %s %.*s", rq->method,
             (int)(rq->path_len > 512 ? 512 : rq->path_len), rq->path);
    } else if (rc == -2) {
        fail(c, 400, "BadRequestException", "query: malformed or more than %d parameters",
             MAX_QUERY_PARAMS);
    } else {
        dispatch(c);
    }
    for (size_t i = 0; i < c->n_seg; i++) {
        free(c->seg[i]);
    }
    for (size_t i = 0; i < c->n_q; i++) {
        free(c->q[i].key);
        free(c->q[i].value);
    }
    free(c);
}

struct api *api_new(struct store *s, const char *region, const char *account_id)
{
    struct api *a = xcalloc(1, sizeof(*a));
    a->store = s;
    a->region = xstrdup(region);
    a->account = xstrdup(account_id);
    return a;
}

void api_free(struct api *a)
{
    if (a == NULL) {
        return;
    }
    free(a->region);
    free(a->account);
    free(a);
}
