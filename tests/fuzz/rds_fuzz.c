/* libFuzzer target for RDS updates: hostile DiscoveryResponse documents into the path a
 * changed RDS file takes on the main thread (proxy/config/rds.h): the text loader, the proto3
 * JSON mapper, the RDS resource rules and the route builder, compiled against a fixed bootstrap
 * snapshot (clusters "a" and "b", a local_ratelimit filter, subscription "rc"), as the xDS
 * client will feed resources later.
 *
 * Input: the document (YAML or JSON). A built table is released again, so LeakSanitizer checks
 * the error paths; it aborts when a rejected update leaves no error message, when a built one
 * reports one, or when the bootstrap snapshot's reference count does not come back.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/rds_fuzz tests/fuzz/corpus/rds) */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/config/rds.h"
#include "proxy/core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DOC (256 * 1024)

static const char initial[] =
    "{\"version_info\": \"0\", \"resources\": [{\"@type\": "
    "\"type.googleapis.com/envoy.config.route.v3.RouteConfiguration\", \"name\": \"rc\", "
    "\"virtual_hosts\": [{\"name\": \"vh\", \"domains\": [\"*\"], \"routes\": [{\"match\": "
    "{\"prefix\": \"/\"}, \"route\": {\"cluster\": \"a\"}}]}]}]}";

/* The bootstrap snapshot every input is built against (made once; it reads its RDS file from a
 * temp file at that moment only). */
static struct config *base_config(void)
{
    char path[64];
    snprintf(path, sizeof(path), "/tmp/remora-rds-fuzz-%d.json", (int)getpid());
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        abort();
    }
    fputs(initial, f);
    fclose(f);
    char text[4096];
    snprintf(text, sizeof(text),
             "{\"static_resources\": {\"clusters\": [{\"name\": \"a\"}, {\"name\": \"b\"}],"
             " \"listeners\": [{\"name\": \"l\", \"address\": {\"socket_address\": {\"address\": "
             "\"127.0.0.1\", \"port_value\": 10000}}, \"filter_chains\": [{\"filters\": [{"
             "\"name\": \"hcm\", \"typed_config\": {\"@type\": \"type.googleapis.com/"
             "envoy.extensions.filters.network.http_connection_manager.v3."
             "HttpConnectionManager\", \"stat_prefix\": \"in\", \"rds\": {\"route_config_name\": "
             "\"rc\", \"config_source\": {\"path\": \"%s\"}}, \"http_filters\": ["
             "{\"name\": \"envoy.filters.http.local_ratelimit\", \"typed_config\": {\"@type\": "
             "\"type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3."
             "LocalRateLimit\", \"stat_prefix\": \"rl\"}},"
             " {\"name\": \"envoy.filters.http.router\"}]}}]}]}]}}",
             path);
    struct err err;
    err_clear(&err);
    struct config *c = config_load_text(text, strlen(text), &err);
    unlink(path);
    if (c == NULL) {
        fprintf(stderr, "rds_fuzz: bootstrap: %s\n", err.msg);
        abort();
    }
    return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config *base;
    if (base == NULL) {
        log_set_level(LOG_OFF);
        base = base_config(); /* lives for the process */
    }
    if (size > MAX_DOC) {
        return 0;
    }
    uint32_t refs = atomic_load(&base->refs);
    struct err err;
    err_clear(&err);
    json_t *j = pbjson_load_text((const char *)data, size, &err);
    if (j == NULL) {
        if (!err_is_set(&err)) {
            abort(); /* a rejection without a reason */
        }
        return 0;
    }
    ProtobufCMessage *m = pbjson_decode(
        &envoy__service__discovery__v3__discovery_response__descriptor, j, pbtypes_find, "", &err);
    json_decref(j);
    if (m == NULL) {
        if (!err_is_set(&err)) {
            abort();
        }
        return 0;
    }
    const Envoy__Service__Discovery__V3__DiscoveryResponse *resp =
        (const Envoy__Service__Discovery__V3__DiscoveryResponse *)m;
    const struct route_snap *snap = NULL;
    err_clear(&err);
    int rv = rds_snap_build(base, 0, resp->version_info, resp->resources, resp->n_resources,
                            base->rds[0].content_hash, "fuzz", &snap, &err);
    if (rv < 0 && !err_is_set(&err)) {
        abort();
    }
    if (rv >= 0 && err_is_set(&err)) {
        abort(); /* accepted, yet an error was reported */
    }
    if (rv == 0) {
        if (snap == NULL || snap->table == NULL) {
            abort();
        }
        rds_snap_unref(snap);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (atomic_load(&base->refs) != refs) {
        abort(); /* a table kept (or dropped) a reference on the bootstrap */
    }
    return 0;
}
