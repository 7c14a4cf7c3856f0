/* Unit tests for proxy/xds/ads_state.c: the ADS client's SotW state machine (requests, ACK and
 * NACK, re-subscription on a new stream, bounds) and its back-off. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <protobuf-c/protobuf-c.h>

#include "envoy/config/core/v3/base.pb-c.h"
#include "envoy/config/route/v3/route.pb-c.h"
#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "google/protobuf/any.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proxy/xds/ads_state.h"

#define RC_URL "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
#define CL_URL "type.googleapis.com/envoy.config.cluster.v3.Cluster"

/* What the apply callback saw, and what it answers. */
static struct {
    int calls;
    char names[8][32];
    uint32_t index[8];
    size_t n;
    char version[32];
    const char *fail; /* non-NULL: reject with this message */
} seen;

static int apply(void *ud, const char *version, const struct ads_resource *res, size_t n,
                 struct err *err)
{
    (void)ud;
    seen.calls++;
    seen.n = n;
    snprintf(seen.version, sizeof(seen.version), "%s", version);
    for (size_t i = 0; i < n && i < 8; i++) {
        snprintf(seen.names[i], sizeof(seen.names[i]), "%s", res[i].name);
        seen.index[i] = res[i].index;
    }
    if (seen.fail != NULL) {
        return err_set(err, NULL, "%s", seen.fail);
    }
    return 0;
}

static const struct ads_type types[] = {{RC_URL, "rds", apply, NULL}};

static Envoy__Config__Core__V3__Node node = ENVOY__CONFIG__CORE__V3__NODE__INIT;

/* A packed RouteConfiguration named `name` (as an Any's value; caller frees). */
static uint8_t *rc_bytes(const char *name, size_t *len)
{
    Envoy__Config__Route__V3__RouteConfiguration rc =
        ENVOY__CONFIG__ROUTE__V3__ROUTE_CONFIGURATION__INIT;
    rc.name = (char *)name;
    *len = protobuf_c_message_get_packed_size(&rc.base);
    uint8_t *p = malloc(*len + 1);
    protobuf_c_message_pack(&rc.base, p);
    return p;
}

/* A packed DiscoveryResponse of type `url` with resources named `names` (each typed `rurl`). */
static uint8_t *response(const char *url, const char *rurl, const char *version, const char *nonce,
                         const char *const *names, size_t n, size_t *len)
{
    Envoy__Service__Discovery__V3__DiscoveryResponse r =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    Google__Protobuf__Any anys[8];
    Google__Protobuf__Any *ptrs[8];
    for (size_t i = 0; i < n; i++) {
        google__protobuf__any__init(&anys[i]);
        anys[i].type_url = (char *)rurl;
        anys[i].value.data = rc_bytes(names[i], &anys[i].value.len);
        ptrs[i] = &anys[i];
    }
    r.type_url = (char *)url;
    r.version_info = (char *)version;
    r.nonce = (char *)nonce;
    r.resources = ptrs;
    r.n_resources = n;
    *len = protobuf_c_message_get_packed_size(&r.base);
    uint8_t *p = malloc(*len + 1);
    protobuf_c_message_pack(&r.base, p);
    for (size_t i = 0; i < n; i++) {
        free(anys[i].value.data);
    }
    return p;
}

static enum ads_resp feed(struct ads_state *st, const char *url, const char *rurl,
                          const char *version, const char *nonce, const char *const *names,
                          size_t n, struct err *err)
{
    size_t len;
    uint8_t *p = response(url, rurl, version, nonce, names, n, &len);
    int t;
    err_clear(err);
    enum ads_resp r = ads_state_on_response(st, p, len, &t, err);
    free(p);
    return r;
}

/* The next request, unpacked (free with protobuf_c_message_free_unpacked), or NULL. */
static Envoy__Service__Discovery__V3__DiscoveryRequest *next(struct ads_state *st)
{
    uint8_t *p;
    size_t len;
    if (ads_state_next_request(st, &p, &len) < 0) {
        return NULL;
    }
    Envoy__Service__Discovery__V3__DiscoveryRequest *rq =
        envoy__service__discovery__v3__discovery_request__unpack(NULL, len, p);
    free(p);
    assert_non_null(rq);
    return rq;
}

static void setup_state(struct ads_state *st, bool node_once)
{
    memset(&seen, 0, sizeof(seen));
    node.id = "n1";
    node.cluster = "c1";
    ads_state_init(st, types, 1, &node, node_once);
    const char *names[] = {"r2", "r1", "r2"};
    assert_int_equal(ads_state_subscribe(st, 0, names, 3), 0);
}

static void test_first_request_ack_and_node_once(void **state)
{
    (void)state;
    struct ads_state st;
    setup_state(&st, true);
    Envoy__Service__Discovery__V3__DiscoveryRequest *rq = next(&st);
    assert_string_equal(rq->type_url, RC_URL);
    assert_int_equal(rq->n_resource_names, 2); /* sorted, unique */
    assert_string_equal(rq->resource_names[0], "r1");
    assert_string_equal(rq->resource_names[1], "r2");
    assert_string_equal(rq->version_info, "");
    assert_string_equal(rq->response_nonce, "");
    assert_non_null(rq->node);
    assert_string_equal(rq->node->id, "n1");
    assert_null(rq->error_detail);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    assert_null(next(&st)); /* nothing more due */

    /* A response: the subscribed resources go to apply (r3 is not subscribed). */
    struct err err;
    const char *names[] = {"r3", "r1"};
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v1", "n-1", names, 2, &err), ADS_RESP_ACK);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.n, 1);
    assert_string_equal(seen.names[0], "r1");
    assert_int_equal(seen.index[0], 1);
    assert_string_equal(seen.version, "v1");
    rq = next(&st);
    assert_string_equal(rq->version_info, "v1");
    assert_string_equal(rq->response_nonce, "n-1");
    assert_null(rq->error_detail);
    assert_null(rq->node); /* set_node_on_first_message_only */
    assert_int_equal(rq->n_resource_names, 2);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    ads_state_free(&st);

    /* Without node_once, every request carries the node. */
    setup_state(&st, false);
    protobuf_c_message_free_unpacked(&next(&st)->base, NULL);
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v1", "a", names, 2, &err), ADS_RESP_ACK);
    rq = next(&st);
    assert_non_null(rq->node);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    ads_state_free(&st);
}

static void test_nack_keeps_version_and_carries_error(void **state)
{
    (void)state;
    struct ads_state st;
    setup_state(&st, true);
    protobuf_c_message_free_unpacked(&next(&st)->base, NULL);
    struct err err;
    const char *names[] = {"r1"};
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v1", "1", names, 1, &err), ADS_RESP_ACK);
    protobuf_c_message_free_unpacked(&next(&st)->base, NULL);

    seen.fail = "resources[0].virtual_hosts[0].routes[0].route.cluster: unknown cluster 'x'";
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v2", "2", names, 1, &err), ADS_RESP_NACK);
    Envoy__Service__Discovery__V3__DiscoveryRequest *rq = next(&st);
    assert_string_equal(rq->version_info, "v1"); /* the previous accepted version */
    assert_string_equal(rq->response_nonce, "2");
    assert_non_null(rq->error_detail);
    assert_int_equal(rq->error_detail->code, 3); /* INVALID_ARGUMENT */
    assert_string_equal(rq->error_detail->message, seen.fail);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    assert_int_equal(st.types[0].nacks, 1);

    /* A mismatched Any type: NACKed without calling apply, naming the resource. */
    seen.fail = NULL;
    int calls = seen.calls;
    assert_int_equal(feed(&st, RC_URL, CL_URL, "v3", "3", names, 1, &err), ADS_RESP_NACK);
    assert_int_equal(seen.calls, calls);
    assert_string_equal(err.msg, "resources[0]: type '" CL_URL
                                 "' does not match the response's type_url '" RC_URL "'");
    rq = next(&st);
    assert_string_equal(rq->version_info, "v1");
    assert_string_equal(rq->response_nonce, "3");
    assert_non_null(rq->error_detail);
    protobuf_c_message_free_unpacked(&rq->base, NULL);

    /* After a NACK the next good response is ACKed with no error left over. */
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v4", "4", names, 1, &err), ADS_RESP_ACK);
    rq = next(&st);
    assert_string_equal(rq->version_info, "v4");
    assert_null(rq->error_detail);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    ads_state_free(&st);
}

static void test_responses_coalesce_and_new_stream_resubscribes(void **state)
{
    (void)state;
    struct ads_state st;
    setup_state(&st, true);
    protobuf_c_message_free_unpacked(&next(&st)->base, NULL);
    struct err err;
    const char *names[] = {"r1"};
    /* Two responses before the socket takes a request: one request, for the newest. */
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v1", "1", names, 1, &err), ADS_RESP_ACK);
    assert_int_equal(feed(&st, RC_URL, RC_URL, "v2", "2", names, 1, &err), ADS_RESP_ACK);
    assert_int_equal(ads_state_pending(&st), 1);
    Envoy__Service__Discovery__V3__DiscoveryRequest *rq = next(&st);
    assert_string_equal(rq->version_info, "v2");
    assert_string_equal(rq->response_nonce, "2");
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    assert_null(next(&st));

    /* A new stream: last accepted version, empty nonce, the node again. */
    ads_state_stream_start(&st);
    rq = next(&st);
    assert_string_equal(rq->version_info, "v2");
    assert_string_equal(rq->response_nonce, "");
    assert_non_null(rq->node);
    assert_int_equal(rq->n_resource_names, 1 + 1);
    protobuf_c_message_free_unpacked(&rq->base, NULL);

    /* A subscription change makes a request due; the same names do not. */
    const char *same[] = {"r1", "r2"};
    assert_int_equal(ads_state_subscribe(&st, 0, same, 2), 0);
    assert_int_equal(ads_state_pending(&st), 0);
    const char *fewer[] = {"r1"};
    assert_int_equal(ads_state_subscribe(&st, 0, fewer, 1), 0);
    rq = next(&st);
    assert_int_equal(rq->n_resource_names, 1);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    ads_state_free(&st);
}

static void test_unknown_types_garbage_and_bounds(void **state)
{
    (void)state;
    struct ads_state st;
    setup_state(&st, true);
    protobuf_c_message_free_unpacked(&next(&st)->base, NULL);
    struct err err;
    const char *names[] = {"c1"};
    assert_int_equal(feed(&st, CL_URL, CL_URL, "v1", "1", names, 1, &err), ADS_RESP_IGNORED);
    assert_int_equal(ads_state_pending(&st), 0); /* no answer, as Envoy */

    int t;
    static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0xff, 0x0f};
    err_clear(&err);
    assert_int_equal(ads_state_on_response(&st, garbage, sizeof(garbage), &t, &err), ADS_RESP_BAD);

    /* A resource whose bytes do not parse, or that has no name: NACK. */
    Envoy__Service__Discovery__V3__DiscoveryResponse r =
        ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Protobuf__Any *ap = &any;
    static uint8_t bad[] = {0x0a, 0x10, 'x'}; /* field 1, 16 bytes announced, 1 there */
    any.type_url = RC_URL;
    any.value.data = bad;
    any.value.len = sizeof(bad);
    r.type_url = RC_URL;
    r.nonce = "9";
    r.resources = &ap;
    r.n_resources = 1;
    uint8_t buf[256];
    size_t len = protobuf_c_message_pack(&r.base, buf);
    err_clear(&err);
    assert_int_equal(ads_state_on_response(&st, buf, len, &t, &err), ADS_RESP_NACK);
    assert_string_equal(err.msg, "resources[0]: does not decode as " RC_URL);
    any.value.len = 0;
    len = protobuf_c_message_pack(&r.base, buf);
    err_clear(&err);
    assert_int_equal(ads_state_on_response(&st, buf, len, &t, &err), ADS_RESP_NACK);
    assert_string_equal(err.msg, "resources[0]: name: required");

    /* More resources than ADS_MAX_RESOURCES (empty Anys, 2 bytes each): refused before
     * unpacking, which would cost far more memory than the message. */
    size_t big_len = 2 * (ADS_MAX_RESOURCES + 1);
    uint8_t *big = malloc(big_len);
    for (size_t i = 0; i < big_len; i += 2) {
        big[i] = 0x12; /* field 2, length-delimited */
        big[i + 1] = 0;
    }
    err_clear(&err);
    assert_int_equal(ads_state_on_response(&st, big, big_len, &t, &err), ADS_RESP_BAD);
    assert_string_equal(err.msg, "resources: more than 10000 resources");
    free(big);
    ads_state_free(&st);
}

static void test_pb_field(void **state)
{
    (void)state;
    /* field 2 varint 150, field 3 fixed64, field 1 "ab" */
    static const uint8_t m[] = {0x10, 0x96, 0x01, 0x19, 1, 2, 3, 4, 5, 6, 7, 8, 0x0a, 2, 'a', 'b'};
    const uint8_t *p;
    size_t n;
    assert_int_equal(ads_pb_field(m, sizeof(m), 1, &p, &n), 0);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "ab", 2);
    assert_int_equal(ads_pb_field(m, sizeof(m), 4, &p, &n), 1);
    for (size_t cut = 1; cut < sizeof(m); cut++) {
        if (cut == 3 || cut == 12) {
            continue; /* whole fields: "absent", fine */
        }
        assert_int_equal(ads_pb_field(m, cut, 4, &p, &n), -1);
    }
}

static void test_backoff_envoy_jittered_exponential(void **state)
{
    (void)state;
    struct ads_backoff b;
    ads_backoff_init(&b, 500, 30000);
    uint64_t caps[] = {500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000};
    for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
        /* the largest draw is just below the interval */
        assert_int_equal(ads_backoff_next(&b, UINT64_MAX - (UINT64_MAX % caps[i]) - 1),
                         caps[i] - 1);
    }
    assert_int_equal(ads_backoff_next(&b, 12345), 12345 % 30000);
    ads_backoff_reset(&b);
    assert_true(ads_backoff_next(&b, 999999) < 500);
}

/* A wildcard type (CDS): asked for first with no names, every resource applied, an empty
 * response applied too (it removes everything), and asked again on a new stream with its last
 * version. */
static void test_wildcard_type(void **state)
{
    (void)state;
    static const struct ads_type two[] = {{CL_URL, "cds", apply, NULL},
                                          {RC_URL, "rds", apply, NULL}};
    struct ads_state st;
    ads_state_init(&st, two, 2, &node, true);
    const char *r1[] = {"r1"};
    assert_int_equal(ads_state_subscribe(&st, 1, r1, 1), 0);
    ads_state_subscribe_wildcard(&st, 0);
    ads_state_stream_start(&st);
    assert_int_equal(ads_state_pending(&st), 2);
    Envoy__Service__Discovery__V3__DiscoveryRequest *rq = next(&st);
    assert_string_equal(rq->type_url, CL_URL); /* table order: CDS first */
    assert_int_equal(rq->n_resource_names, 0);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    rq = next(&st);
    assert_string_equal(rq->type_url, RC_URL);
    protobuf_c_message_free_unpacked(&rq->base, NULL);

    memset(&seen, 0, sizeof(seen));
    struct err e;
    const char *names[] = {"a", "b"};
    assert_int_equal(feed(&st, CL_URL, CL_URL, "v1", "n1", names, 2, &e), ADS_RESP_ACK);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.n, 2);
    assert_string_equal(seen.names[1], "b");
    assert_int_equal(feed(&st, CL_URL, CL_URL, "v2", "n2", NULL, 0, &e), ADS_RESP_ACK);
    assert_int_equal(seen.calls, 2); /* none: applied (all removed) */
    assert_int_equal(seen.n, 0);
    rq = next(&st);
    assert_string_equal(rq->version_info, "v2");
    assert_int_equal(rq->n_resource_names, 0);
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    /* A non-wildcard type with no subscribed resource in a response: apply not called. */
    assert_int_equal(feed(&st, RC_URL, RC_URL, "x", "n3", names, 2, &e), ADS_RESP_ACK);
    assert_int_equal(seen.calls, 2);
    rq = next(&st);
    protobuf_c_message_free_unpacked(&rq->base, NULL);

    ads_state_stream_start(&st);
    rq = next(&st);
    assert_string_equal(rq->type_url, CL_URL);
    assert_string_equal(rq->version_info, "v2");
    assert_string_equal(rq->response_nonce, "");
    protobuf_c_message_free_unpacked(&rq->base, NULL);
    ads_state_free(&st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_request_ack_and_node_once),
        cmocka_unit_test(test_nack_keeps_version_and_carries_error),
        cmocka_unit_test(test_responses_coalesce_and_new_stream_resubscribes),
        cmocka_unit_test(test_unknown_types_garbage_and_bounds),
        cmocka_unit_test(test_wildcard_type),
        cmocka_unit_test(test_pb_field),
        cmocka_unit_test(test_backoff_envoy_jittered_exponential),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
