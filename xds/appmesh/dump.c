/* dump: snapshots as Envoy JSON (dump.h). */
#include "xds/appmesh/dump.h"

#include <string.h>

#include "envoy/config/cluster/v3/cluster.pb-c.h"
#include "envoy/config/endpoint/v3/endpoint.pb-c.h"
#include "envoy/config/listener/v3/listener.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/log.h"

static const ProtobufCMessageDescriptor *const type_desc[XDS_NTYPES] = {
    [XDS_CDS] = &envoy__config__cluster__v3__cluster__descriptor,
    [XDS_EDS] = &envoy__config__endpoint__v3__cluster_load_assignment__descriptor,
    [XDS_LDS] = &envoy__config__listener__v3__listener__descriptor,
    [XDS_RDS] = &envoy__config__route__v3__route_configuration__descriptor,
};

static const char *const type_key[XDS_NTYPES] = {
    [XDS_CDS] = "clusters",
    [XDS_EDS] = "endpoints",
    [XDS_LDS] = "listeners",
    [XDS_RDS] = "route_configs",
};

/* Resource `r` of type `t` as JSON (with "@type" first when `typed`), or NULL. */
static json_t *resource_json(enum xds_type t, const struct xds_resource *r, bool typed)
{
    ProtobufCMessage *m = protobuf_c_message_unpack(type_desc[t], NULL, r->len, r->data);
    if (m == NULL) {
        LOG_W("xds: %s %s does not decode: left out of the dump", type_key[t], r->name);
        return NULL;
    }
    json_t *body = pbjson_encode(m, pbtypes_find);
    protobuf_c_message_free_unpacked(m, NULL);
    if (!typed) {
        return body;
    }
    json_t *o = json_object();
    json_object_set_new(o, "@type", json_string(xds_type_url[t]));
    json_object_update(o, body);
    json_decref(body);
    return o;
}

json_t *xds_snapshot_json(const struct xds_snapshot *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "mesh", json_string(s->mesh));
    json_object_set_new(o, "node", s->vnode && !s->gateway ? json_string(s->vnode) : json_null());
    if (s->gateway) {
        json_object_set_new(o, "virtualGateway", json_string(s->vnode));
    }
    static const enum xds_type order[] = {XDS_LDS, XDS_CDS, XDS_RDS, XDS_EDS};
    for (size_t k = 0; k < 4; k++) {
        enum xds_type t = order[k];
        json_t *arr = json_array();
        for (size_t i = 0; i < s->n[t]; i++) {
            json_t *j = resource_json(t, &s->res[t][i], true);
            if (j != NULL) {
                json_array_append_new(arr, j);
            }
        }
        json_object_set_new(o, type_key[t], arr);
    }
    return o;
}

#define HCM_TYPE                                                                                   \
    "type.googleapis.com/"                                                                         \
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

/* A chain's connection managers get their route configuration inline. */
static void inline_routes(const struct xds_snapshot *s, json_t *chain)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(chain, "filters"), i, f)
    {
        json_t *tc = json_object_get(f, "typed_config");
        const char *type = json_string_value(json_object_get(tc, "@type"));
        json_t *rds = json_object_get(tc, "rds");
        if (type == NULL || strcmp(type, HCM_TYPE) != 0 || rds == NULL) {
            continue;
        }
        const char *name = json_string_value(json_object_get(rds, "route_config_name"));
        const struct xds_resource *r = xds_snapshot_find(s, XDS_RDS, name ? name : "");
        json_t *rc = r != NULL ? resource_json(XDS_RDS, r, false) : NULL;
        if (rc == NULL) {
            rc = json_pack("{s:s}", "name", name ? name : "");
        }
        json_object_del(tc, "rds");
        json_object_set_new(tc, "route_config", rc);
    }
}

json_t *xds_snapshot_bootstrap(const struct xds_snapshot *s)
{
    json_t *listeners = json_array(), *clusters = json_array();
    for (size_t i = 0; i < s->n[XDS_LDS]; i++) {
        json_t *l = resource_json(XDS_LDS, &s->res[XDS_LDS][i], false);
        if (l == NULL) {
            continue;
        }
        size_t k;
        json_t *fc;
        json_array_foreach(json_object_get(l, "filter_chains"), k, fc)
        {
            inline_routes(s, fc);
        }
        if (json_object_get(l, "default_filter_chain") != NULL) {
            inline_routes(s, json_object_get(l, "default_filter_chain"));
        }
        json_array_append_new(listeners, l);
    }
    for (size_t i = 0; i < s->n[XDS_CDS]; i++) {
        const struct xds_resource *r = &s->res[XDS_CDS][i];
        json_t *c = resource_json(XDS_CDS, r, false);
        if (c == NULL) {
            continue;
        }
        const char *type = json_string_value(json_object_get(c, "type"));
        if (type != NULL && strcmp(type, "EDS") == 0) {
            const struct xds_resource *e = xds_snapshot_find(s, XDS_EDS, r->name);
            json_t *la = e != NULL ? resource_json(XDS_EDS, e, false) : NULL;
            if (la == NULL) {
                la = json_pack("{s:s}", "cluster_name", r->name);
            }
            json_object_set_new(c, "type", json_string("STATIC"));
            json_object_del(c, "eds_cluster_config");
            json_object_set_new(c, "load_assignment", la);
        }
        json_array_append_new(clusters, c);
    }
    return json_pack("{s:{s:o,s:o}}", "static_resources", "listeners", listeners, "clusters",
                     clusters);
}
