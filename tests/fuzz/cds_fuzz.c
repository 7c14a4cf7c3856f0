/* libFuzzer target for CDS and EDS updates: hostile DiscoveryResponse documents into the path a
 * changed CDS file takes on the main thread (proxy/cds.h): the text loader, the proto3 JSON
 * mapper, CDS's all-or-nothing rules and the cluster builder; then the same resources as the
 * assignment of every EDS cluster the update left (EDS's rules and the endpoint builder), as
 * the xDS client will feed them later. Against a fixed bootstrap (static cluster "s", CDS
 * from a file), with a fresh cds per input, freed after it, so LeakSanitizer checks every path.
 *
 * Input: the CDS document (YAML or JSON), optionally followed by a line "---" and the EDS
 * document (else the CDS one is applied as EDS too). Aborts when a rejection has no message, or
 * an accepted update reports one.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/cds_fuzz tests/fuzz/corpus/cds) */
#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/cds.h"
#include "proxy/config/build.h"
#include "proxy/config/config.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_DOC (256 * 1024)
#define MAX_EDS 4

static struct config *base_config(void)
{
    static const char text[] =
        "{\"static_resources\": {\"clusters\": [{\"name\": \"s\"}]},"
        " \"dynamic_resources\": {\"cds_config\": {\"path\": \"/nonexistent/cds.yaml\"}}}";
    struct err err;
    err_clear(&err);
    struct config *c = config_load_text(text, strlen(text), &err);
    if (c == NULL) {
        fprintf(stderr, "cds_fuzz: bootstrap: %s\n", err.msg);
        abort();
    }
    return c;
}

static void check(int rv, const struct err *err)
{
    if (rv < 0 && !err_is_set(err)) {
        abort(); /* a rejection without a reason */
    }
    if (rv >= 0 && err_is_set(err)) {
        abort(); /* accepted, yet an error was reported */
    }
}

/* A DiscoveryResponse, or NULL (after checking the rejection has a reason). */
static ProtobufCMessage *decode(const uint8_t *data, size_t size, struct err *err)
{
    err_clear(err);
    json_t *j = pbjson_load_text((const char *)data, size, err);
    if (j == NULL) {
        check(-1, err);
        return NULL;
    }
    ProtobufCMessage *m = pbjson_decode(
        &envoy__service__discovery__v3__discovery_response__descriptor, j, pbtypes_find, "", err);
    json_decref(j);
    if (m == NULL) {
        check(-1, err);
    }
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config *base;
    static struct ev_loop *loop;
    if (base == NULL) {
        log_set_level(LOG_OFF);
        base = base_config(); /* lives for the process */
        loop = ev_loop_new(EVFLAG_AUTO);
    }
    if (size > MAX_DOC) {
        return 0;
    }
    size_t cds_len = size;
    const uint8_t *eds_data = NULL;
    for (size_t i = 0; i + 5 <= size; i++) {
        if (memcmp(data + i, "\n---\n", 5) == 0) {
            cds_len = i + 1;
            eds_data = data + i + 5;
            break;
        }
    }
    struct err err;
    ProtobufCMessage *m = decode(data, cds_len, &err);
    if (m == NULL) {
        return 0;
    }
    ProtobufCMessage *m2 =
        eds_data != NULL ? decode(eds_data, size - (size_t)(eds_data - data), &err) : NULL;
    const Envoy__Service__Discovery__V3__DiscoveryResponse *resp =
        (const Envoy__Service__Discovery__V3__DiscoveryResponse *)m;
    const Envoy__Service__Discovery__V3__DiscoveryResponse *eresp =
        m2 != NULL ? (const Envoy__Service__Discovery__V3__DiscoveryResponse *)m2 : resp;
    struct cds *cd = cds_new(loop, base, 2);
    err_clear(&err);
    int rv =
        cds_update(cd, resp->version_info, resp->resources, resp->n_resources, "fuzz", &err, NULL);
    check(rv, &err);
    if (rv == 1) {
        struct cds_eds eds[MAX_EDS];
        uint32_t n = cds_eds_clusters(cd, eds, MAX_EDS);
        char names[MAX_EDS][128];
        for (uint32_t i = 0; i < n && i < MAX_EDS; i++) {
            snprintf(names[i], sizeof(names[i]), "%s", eds[i].cluster);
        }
        for (uint32_t i = 0; i < n && i < MAX_EDS; i++) {
            err_clear(&err);
            rv = cds_update_endpoints(cd, names[i], eresp->version_info, eresp->resources,
                                      eresp->n_resources, "fuzz", &err);
            check(rv, &err);
        }
    }
    cds_free(cd);
    protobuf_c_message_free_unpacked(m, NULL);
    if (m2 != NULL) {
        protobuf_c_message_free_unpacked(m2, NULL);
    }
    return 0;
}
