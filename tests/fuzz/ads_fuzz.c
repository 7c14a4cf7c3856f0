/* libFuzzer target for the ADS client's protocol state (proxy/xds/ads_state.h): hostile
 * DiscoveryResponse messages, as whole gRPC messages off the stream, into the SotW state of one
 * subscription (RouteConfiguration "r1" and "r2"), then the request that answers them.
 *
 * Input: the message bytes. The apply callback checks what it is given (only subscribed names,
 * indexes inside the response, the response's type) and rejects "r2" to take the NACK path; it
 * aborts when a NACK or a bad message carries no error, or when a request does not unpack.
 * LeakSanitizer checks every path.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/ads_fuzz tests/fuzz/corpus/ads) */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "proxy/xds/ads_state.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RC_URL "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"

static int apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                 struct err *err)
{
    (void)ud;
    if (version == NULL || n == 0 || n > ADS_MAX_RESOURCES) {
        abort();
    }
    bool reject = false;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(res[i].name, "r1") != 0 && strcmp(res[i].name, "r2") != 0) {
            abort(); /* not subscribed */
        }
        if (res[i].any == NULL || strcmp(res[i].any->type_url, RC_URL) != 0) {
            abort();
        }
        reject |= strcmp(res[i].name, "r2") == 0;
    }
    return reject ? err_set(err, "resources[0]", "r2 is rejected") : 0;
}

static const struct ads_type types[] = {{RC_URL, "rds", apply, NULL}};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;
    struct ads_state st;
    ads_state_init(&st, types, 1, &node, true);
    const char *names[] = {"r1", "r2"};
    ads_state_subscribe(&st, 0, names, 2);
    for (int round = 0; round < 2; round++) {
        struct err err;
        err_clear(&err);
        int t;
        enum ads_resp r = ads_state_on_response(&st, data, size, &t, &err);
        if ((r == ADS_RESP_NACK || r == ADS_RESP_BAD) && !err_is_set(&err)) {
            abort();
        }
        uint8_t *req;
        size_t len;
        while (ads_state_next_request(&st, &req, &len) >= 0) {
            Envoy__Service__Discovery__V3__DiscoveryRequest *rq =
                envoy__service__discovery__v3__discovery_request__unpack(NULL, len, req);
            free(req);
            if (rq == NULL) {
                abort();
            }
            protobuf_c_message_free_unpacked(&rq->base, NULL);
        }
        ads_state_stream_start(&st); /* the second round on a "new stream" */
    }
    const uint8_t *p;
    size_t n;
    (void)ads_pb_field(data, size, 1, &p, &n);
    ads_state_free(&st);
    return 0;
}
