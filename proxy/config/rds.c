/* rds: RouteConfiguration resources -> compiled `struct route_snap` (see rds.h). Runs on the
 * main thread at startup (inside the bootstrap build) and on every change of an RDS file;
 * never on the request path. Owns nothing long-lived itself: each snapshot owns its container
 * config, which references the bootstrap snapshot whose clusters its routes point at. */
#include "proxy/config/rds.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/config_source.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/duration.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/hash.h"
#include "proxy/core/file.h"
#include "proxy/core/xmalloc.h"

#define PbRds Envoy__Extensions__Filters__Network__HttpConnectionManager__V3__Rds
#define PbConfigSource Envoy__Config__Core__V3__ConfigSource
#define PbRouteConfiguration Envoy__Config__Route__V3__RouteConfiguration
#define PbDiscoveryResponse Envoy__Service__Discovery__V3__DiscoveryResponse

#define RDS_FILE_MAX (16u * 1024 * 1024)
#define UNSUPPORTED "not supported by remora yet"

int rds_read_file(const char *file, PbDiscoveryResponse **out, struct err *err)
{
    size_t len = 0;
    char *text = file_read(file, RDS_FILE_MAX, &len);
    if (text == NULL) {
        err_set(err, file, "cannot read: %s", strerror(errno));
        return -EIO;
    }
    struct err e;
    err_clear(&e);
    size_t flen = strlen(file);
    json_t *j = flen > 5 && strcmp(file + flen - 5, ".json") == 0 ? pbjson_load_json(text, len, &e)
                                                                  : pbjson_load_text(text, len, &e);
    free(text);
    if (j == NULL) {
        return err_set(err, file, "%s", e.msg);
    }
    ProtobufCMessage *m = pbjson_decode(
        &envoy__service__discovery__v3__discovery_response__descriptor, j, pbtypes_find, "", &e);
    json_decref(j);
    if (m == NULL) {
        return err_set(err, file, "%s", e.msg);
    }
    *out = (PbDiscoveryResponse *)m;
    return 0;
}

/* The one RouteConfiguration of `resources[n]` (Envoy's RDS rules; the caller checks its name
 * once unpacked). Returns 0 with *any set, RDS_EMPTY, or -EINVAL. */
static int pick(struct Google__Protobuf__Any *const *resources, size_t n, const char *where,
                const struct Google__Protobuf__Any **any, struct err *err)
{
    if (n == 0) {
        return RDS_EMPTY;
    }
    if (n > 1) {
        return err_set(err, where, "resources: unexpected RDS resource length: %zu (expected 1)",
                       n);
    }
    *any = resources[0];
    return 0;
}

static void free_pb(void *arg)
{
    protobuf_c_message_free_unpacked(arg, NULL);
}

static void unref_base(void *arg)
{
    config_unref(arg);
}

static void unref_dyn(void *arg)
{
    const struct rds_clusters *d = arg;
    d->unref(d->owner);
}

/* A container for a route table compiled against `base` and, when `dyn` is not NULL, the CDS
 * clusters it names (see rds.h). */
static struct config *container_new(const struct config *base, const struct rds_clusters *dyn)
{
    struct arena a;
    arena_init(&a, 16 * 1024);
    struct config *c = ARENA_NEW(&a, struct config);
    c->arena = a;
    atomic_init(&c->refs, 1);
    config_ref(base);
    config_on_free(c, unref_base, (void *)base); /* registered first: runs last */
    c->clusters = base->clusters;
    c->n_clusters = base->n_clusters;
    c->cluster_map = base->cluster_map;
    if (dyn != NULL) {
        struct rds_clusters *d = ARENA_NEW(&c->arena, struct rds_clusters);
        *d = *dyn;
        d->ref(d->owner);
        config_on_free(c, unref_dyn, d);
        c->cluster_map = d->map;
    }
    c->n_filter_slots = base->n_filter_slots;
    /* A private copy of the filter stat declarations, at the capacity filter_build_stat()
     * assumes (the next power of two), so a declaration never writes into base's array. */
    uint32_t cap = 1;
    while (cap < base->n_stat_defs) {
        cap *= 2;
    }
    struct stat_def *defs = ARENA_NEW_N(&c->arena, struct stat_def, cap);
    if (base->n_stat_defs > 0) {
        memcpy(defs, base->stat_defs, base->n_stat_defs * sizeof(*defs));
    }
    c->stat_defs = defs;
    c->n_stat_defs = base->n_stat_defs;
    return c;
}

/* Compiles RouteConfiguration `m` (taken) for subscription `idx` into a new snapshot. */
/* `rp` is the resource's path in its response ("resources[0]" in a file, its own index in an
 * xDS response). */
static int snap_from_msg(const struct config *base, uint32_t idx, ProtobufCMessage *m,
                         const char *version_info, uint64_t h, const char *where, const char *rp,
                         const struct rds_clusters *dyn, bool rebuild,
                         const struct route_snap **out, struct err *err)
{
    const struct rds_cfg *rc = &base->rds[idx];
    const PbRouteConfiguration *prc = (const PbRouteConfiguration *)m;
    struct err e;
    err_clear(&e);
    struct config *c = container_new(base, dyn);
    config_on_free(c, free_pb, m);
    const struct route_table *table = NULL;
    if (build_route_table(c, rc->hcm, rp, prc, rebuild, &table, &e) != 0) {
        config_unref(c);
        return err_set(err, where, "%s", e.msg);
    }
    if (c->n_stat_defs != base->n_stat_defs) {
        /* Workers' stats blocks are sized by the bootstrap: a new filter stat has no slot. */
        const struct stat_def *d = &c->stat_defs[base->n_stat_defs];
        err_set(err, where,
                "%s: typed_per_filter_config declares stat '%s.%s' that the "
                "bootstrap's routes do not: new filter stats in an RDS update are " UNSUPPORTED,
                rp, d->scope, d->stat);
        config_unref(c);
        return -EINVAL;
    }
    struct route_snap *s = ARENA_NEW(&c->arena, struct route_snap);
    s->c = c;
    s->table = table;
    s->version_info = arena_strdup(&c->arena, str_from_c(version_info ? version_info : ""));
    s->content_hash = h;
    s->pb = m;
    s->dyn = dyn != NULL ? dyn->owner : NULL;
    *out = s;
    return 0;
}

int rds_snap_rebuild(const struct config *base, uint32_t idx, const struct route_snap *cur,
                     const struct rds_clusters *dyn, bool validate, const struct route_snap **out,
                     struct err *err)
{
    const struct rds_cfg *rc = &base->rds[idx];
    const ProtobufCMessage *m0 = cur != NULL ? cur->pb : rc->pb;
    /* an owned copy of the message: the new container frees it */
    size_t len = protobuf_c_message_get_packed_size(m0);
    uint8_t *bytes = xmalloc(len ? len : 1);
    protobuf_c_message_pack(m0, bytes);
    ProtobufCMessage *m = protobuf_c_message_unpack(m0->descriptor, NULL, len, bytes);
    free(bytes);
    if (m == NULL) {
        return err_set(err, rc->path.p, "cannot copy the route configuration");
    }
    return snap_from_msg(base, idx, m, cur != NULL ? cur->version_info.p : rc->version_info.p,
                         cur != NULL ? cur->content_hash : rc->content_hash, rc->path.p,
                         "resources[0]", dyn, !validate, out, err);
}

int rds_snap_build(const struct config *base, uint32_t idx, const char *version_info,
                   struct Google__Protobuf__Any *const *resources, size_t n, uint64_t current_hash,
                   const char *where, const struct route_snap **out, struct err *err)
{
    return rds_snap_build_dyn(base, idx, version_info, resources, n, current_hash, where, NULL, out,
                              err);
}

int rds_snap_build_dyn(const struct config *base, uint32_t idx, const char *version_info,
                       struct Google__Protobuf__Any *const *resources, size_t n,
                       uint64_t current_hash, const char *where, const struct rds_clusters *dyn,
                       const struct route_snap **out, struct err *err)
{
    const struct rds_cfg *rc = &base->rds[idx];
    /* `where` is a file (prefixed to "resources[0]..."), or an xDS response's own path of the
     * resource ("resources[2]"), which then replaces "resources[0]". */
    const char *rp = "resources[0]";
    if (where != NULL && strncmp(where, "resources[", 10) == 0) {
        rp = where;
        where = NULL;
    }
    const struct Google__Protobuf__Any *any = NULL;
    int rv = pick(resources, n, where, &any, err);
    if (rv != 0) {
        return rv;
    }
    uint64_t h = hash_xxh64(any->value.data, any->value.len, 0);
    if (h == current_hash) {
        return RDS_UNCHANGED;
    }
    struct err e;
    err_clear(&e);
    ProtobufCMessage *m = NULL;
    if (pbjson_resource_unpack(any, &envoy__config__route__v3__route_configuration__descriptor,
                               pbtypes_find, rp, &m, &e) != 0) {
        return err_set(err, where, "%s", e.msg);
    }
    const PbRouteConfiguration *prc = (const PbRouteConfiguration *)m;
    const char *got = prc->name != NULL ? prc->name : "";
    if (strcmp(got, rc->route_config_name.p) != 0) {
        err_set(err, where, "%s.name: unexpected RDS configuration (expecting '%s'): '%s'", rp,
                rc->route_config_name.p, got);
        protobuf_c_message_free_unpacked(m, NULL);
        return -EINVAL;
    }
    return snap_from_msg(base, idx, m, version_info, h, where, rp, dyn, false, out, err);
}

void rds_snap_unref(const struct route_snap *snap)
{
    if (snap != NULL) {
        config_unref(snap->c);
    }
}

/* ---- the bootstrap's `rds` block ---- */

int config_source_file(const PbConfigSource *cs, const char *path, struct str *file,
                       struct str *dir, struct arena *a, struct err *err)
{
    char p[768];
    switch (cs->config_source_specifier_case) {
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH:
        if (cs->path == NULL || cs->path[0] == '\0') {
            snprintf(p, sizeof(p), "%s.path", path);
            return err_set(err, p, "must not be empty");
        }
        *file = arena_strdup(a, str_from_c(cs->path));
        break;
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_PATH_CONFIG_SOURCE: {
        const Envoy__Config__Core__V3__PathConfigSource *pcs = cs->path_config_source;
        if (pcs->path == NULL || pcs->path[0] == '\0') {
            snprintf(p, sizeof(p), "%s.path_config_source.path", path);
            return err_set(err, p, "required");
        }
        *file = arena_strdup(a, str_from_c(pcs->path));
        if (pcs->watched_directory != NULL) {
            const char *d = pcs->watched_directory->path;
            if (d == NULL || d[0] == '\0') {
                snprintf(p, sizeof(p), "%s.path_config_source.watched_directory.path", path);
                return err_set(err, p, "required");
            }
            *dir = arena_strdup(a, str_from_c(d));
        }
        break;
    }
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_API_CONFIG_SOURCE:
        snprintf(p, sizeof(p), "%s.api_config_source", path);
        return err_set(err, p, UNSUPPORTED " (only a filesystem path is)");
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS:
        snprintf(p, sizeof(p), "%s.ads", path);
        return err_set(err, p, UNSUPPORTED " (only a filesystem path is)");
    case ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_SELF:
        snprintf(p, sizeof(p), "%s.self", path);
        return err_set(err, p, UNSUPPORTED " (only a filesystem path is)");
    default:
        snprintf(p, sizeof(p), "%s", path);
        return err_set(err, p, "one of path, path_config_source is required");
    }
    if (cs->initial_fetch_timeout != NULL) {
        /* A file is read synchronously: there is no fetch to time out. */
        snprintf(p, sizeof(p), "%s.initial_fetch_timeout", path);
        return err_set(err, p, UNSUPPORTED " with a filesystem config source");
    }
    if (cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        snprintf(p, sizeof(p), "%s.resource_api_version", path);
        return err_set(err, p, "V2 is not supported (use V3)");
    }
    return 0;
}

int config_source_ads(const PbConfigSource *cs, const char *path, bool have_ads,
                      uint64_t *timeout_ms, struct err *err)
{
    char p[768];
    if (!have_ads) {
        snprintf(p, sizeof(p), "%s.ads", path);
        return err_set(err, p, "needs dynamic_resources.ads_config");
    }
    if (cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        snprintf(p, sizeof(p), "%s.resource_api_version", path);
        return err_set(err, p, "V2 is not supported (use V3)");
    }
    *timeout_ms = 15000; /* Envoy's default */
    if (cs->initial_fetch_timeout != NULL) {
        const char *why = duration_ms(cs->initial_fetch_timeout, false, timeout_ms);
        if (why != NULL) {
            snprintf(p, sizeof(p), "%s.initial_fetch_timeout", path);
            return err_set(err, p, "%s", why);
        }
    }
    return 0;
}

/* Appends `rc` to c->rds and makes it `hc`'s subscription. */
static void add_sub(struct config *c, struct hcm_cfg *hc, const struct rds_cfg *rc)
{
    struct rds_cfg *v = ARENA_NEW_N(&c->arena, struct rds_cfg, c->n_rds + 1);
    if (c->n_rds > 0) {
        memcpy(v, c->rds, c->n_rds * sizeof(*v));
    }
    v[c->n_rds] = *rc;
    hc->has_rds = true;
    hc->rds_index = c->n_rds;
    c->rds = v;
    c->n_rds++;
}

/* `rds` with config_source.ads (at `p`, the config_source's path): routes from the ADS client
 * (proxy/xds/ads.h). Nothing is loaded now: until the first RouteConfiguration arrives the
 * connection manager routes on an empty table (every request 404 NR, as Envoy after an
 * initial_fetch_timeout), and startup waits for it (main.c). */
static int rds_build_ads(struct config *c, struct hcm_cfg *hc, const char *p, const PbRds *rds,
                         struct err *err)
{
    const PbConfigSource *cs = rds->config_source;
    char q[800];
    if (c->ads == NULL) {
        snprintf(q, sizeof(q), "%s.ads", p);
        return err_set(err, q, "needs dynamic_resources.ads_config");
    }
    if (cs->resource_api_version == ENVOY__CONFIG__CORE__V3__API_VERSION__V2) {
        snprintf(q, sizeof(q), "%s.resource_api_version", p);
        return err_set(err, q, "V2 is not supported (use V3)");
    }
    struct rds_cfg rc = {0};
    rc.ads = true;
    rc.initial_fetch_timeout_ms = 15000; /* Envoy's default */
    if (cs->initial_fetch_timeout != NULL) {
        const char *why =
            duration_ms(cs->initial_fetch_timeout, false, &rc.initial_fetch_timeout_ms);
        if (why != NULL) {
            snprintf(q, sizeof(q), "%s.initial_fetch_timeout", p);
            return err_set(err, q, "%s", why);
        }
    }
    rc.route_config_name = arena_strdup(&c->arena, str_from_c(rds->route_config_name));
    rc.path = arena_strdup(&c->arena, str_from_c(""));
    rc.watched_dir = rc.path;
    rc.version_info = rc.path;
    rc.hcm = hc;
    struct route_table *empty = ARENA_NEW(&c->arena, struct route_table);
    empty->name = rc.route_config_name;
    hc->routes = empty;
    add_sub(c, hc, &rc);
    return 0;
}

int rds_build_initial(struct config *c, struct hcm_cfg *hc, const char *path, const PbRds *rds,
                      struct err *err)
{
    char p[768];
    if (rds->route_config_name == NULL || rds->route_config_name[0] == '\0') {
        snprintf(p, sizeof(p), "%s.route_config_name", path);
        return err_set(err, p, "required");
    }
    if (rds->config_source == NULL) {
        snprintf(p, sizeof(p), "%s.config_source", path);
        return err_set(err, p, "required");
    }
    struct rds_cfg rc = {0};
    snprintf(p, sizeof(p), "%s.config_source", path);
    if (rds->config_source->config_source_specifier_case ==
        ENVOY__CONFIG__CORE__V3__CONFIG_SOURCE__CONFIG_SOURCE_SPECIFIER_ADS) {
        return rds_build_ads(c, hc, p, rds, err);
    }
    int rv = config_source_file(rds->config_source, p, &rc.path, &rc.watched_dir, &c->arena, err);
    if (rv != 0) {
        return rv;
    }
    rc.route_config_name = arena_strdup(&c->arena, str_from_c(rds->route_config_name));
    rc.hcm = hc;

    /* Load the file now, with the same rules as an update. */
    struct err e;
    err_clear(&e);
    PbDiscoveryResponse *resp = NULL;
    if (rds_read_file(rc.path.p, &resp, &e) != 0) {
        return err_set(err, path, "%s", e.msg);
    }
    const struct Google__Protobuf__Any *any = NULL;
    rv = pick(resp->resources, resp->n_resources, rc.path.p, &any, &e);
    if (rv == RDS_EMPTY) {
        rv =
            err_set(&e, rc.path.p, "resources: no RouteConfiguration '%s'", rc.route_config_name.p);
    }
    ProtobufCMessage *m = NULL;
    if (rv == 0) {
        struct err e2;
        err_clear(&e2);
        if (pbjson_any_unpack(any, pbtypes_find, "resources[0]", &m, &e2) != 0) {
            rv = err_set(&e, rc.path.p, "%s", e2.msg);
        } else {
            const char *got = ((const PbRouteConfiguration *)m)->name;
            got = got != NULL ? got : "";
            if (strcmp(got, rc.route_config_name.p) != 0) {
                rv = err_set(&e, rc.path.p,
                             "resources[0].name: unexpected RDS configuration (expecting "
                             "'%s'): '%s'",
                             rc.route_config_name.p, got);
            } else if (build_route_table(c, hc, "resources[0]", (const PbRouteConfiguration *)m,
                                         c->has_cds, &hc->routes, &e2) != 0) {
                /* (with CDS, its clusters are checked once the CDS file is loaded: reload.c) */
                rv = err_set(&e, rc.path.p, "%s", e2.msg);
            }
        }
    }
    if (rv == 0) {
        rc.content_hash = hash_xxh64(any->value.data, any->value.len, 0);
        rc.version_info =
            arena_strdup(&c->arena, str_from_c(resp->version_info ? resp->version_info : ""));
        rc.pb = m; /* kept for /config_dump */
        config_on_free(c, free_pb, m);
    } else if (m != NULL) {
        protobuf_c_message_free_unpacked(m, NULL);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (rv != 0) {
        return err_set(err, path, "%s", e.msg);
    }

    add_sub(c, hc, &rc);
    return 0;
}
