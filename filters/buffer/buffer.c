/* buffer: envoy.filters.http.buffer (envoy.extensions.filters.http.buffer.v3.Buffer). Holds the
 * request head and body until the whole body is in, then lets both go on; a body larger than
 * max_request_bytes ends the stream with 413 (Envoy's setDecoderBufferLimit with
 * StopIterationAndBuffer; the chain counts downstream_rq_too_large). A request without
 * content-length (chunked HTTP/1.1, HTTP/2 without the header) goes upstream with the body's
 * length as content-length, as Envoy's buffer_filter_populate_content_length does; a request with
 * trailers keeps its chunked framing. Per route, BufferPerRoute turns it off (`disabled: true`)
 * or sets another limit (`buffer`). State: the byte count of one request. No stats of its own
 * (Envoy has none). */
#include <stdint.h>

#include "envoy/extensions/filters/http/buffer/v3/buffer.pb-c.h"
#include "filters/registry.h"
#include "proxy/http/filter.h"
#include "proxy/http/headers.h"
#include "proxy/http/stream.h"

#define PbBuffer Envoy__Extensions__Filters__Http__Buffer__V3__Buffer
#define PbBufferPerRoute Envoy__Extensions__Filters__Http__Buffer__V3__BufferPerRoute

struct buffer_cfg {
    bool is_disabled;           /* BufferPerRoute.disabled */
    uint32_t max_request_bytes; /* > 0 unless disabled */
};

struct buffer_state {
    uint64_t len; /* body bytes seen */
};

static enum filter_status buffer_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)h;
    const struct buffer_cfg *c = f->cfg;
    if (c->is_disabled || end) {
        return FILTER_CONTINUE; /* a request without a body needs no buffering */
    }
    filter_set_buffer_limit(f, c->max_request_bytes);
    return FILTER_STOP_AND_BUFFER;
}

static enum filter_status buffer_request_data(struct filter *f, const uint8_t *p, size_t len,
                                              bool end)
{
    (void)p;
    const struct buffer_cfg *c = f->cfg;
    if (c->is_disabled) {
        return FILTER_CONTINUE;
    }
    struct buffer_state *st = f->state;
    st->len += len;
    if (!end) {
        return FILTER_STOP_AND_BUFFER;
    }
    if (headers_get(&f->s->req, STR_LIT("content-length")) == NULL) {
        (void)filter_set_request_content_length(f, st->len);
    }
    return FILTER_CONTINUE;
}

static int buffer_config(struct filter_build *fb, const PbBuffer *m, struct buffer_cfg *c)
{
    if (m->max_request_bytes == NULL) {
        return filter_build_fail(fb, "max_request_bytes", "required");
    }
    if (m->max_request_bytes->value == 0) {
        return filter_build_fail(fb, "max_request_bytes", "must be greater than 0");
    }
    c->max_request_bytes = m->max_request_bytes->value;
    return 0;
}

static int buffer_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    struct buffer_cfg *c = ARENA_NEW(fb->a, struct buffer_cfg);
    int rc = buffer_config(fb, (const PbBuffer *)pb, c);
    if (rc == 0) {
        *out = c;
    }
    return rc;
}

static int buffer_route_config_new(struct filter_build *fb, const ProtobufCMessage *pb,
                                   const void **out)
{
    const PbBufferPerRoute *m = (const PbBufferPerRoute *)pb;
    struct buffer_cfg *c = ARENA_NEW(fb->a, struct buffer_cfg);
    int rc = 0;
    switch (m->override_case) {
    case ENVOY__EXTENSIONS__FILTERS__HTTP__BUFFER__V3__BUFFER_PER_ROUTE__OVERRIDE_DISABLED:
        if (!m->disabled) {
            rc = filter_build_fail(fb, "disabled", "must be true when set");
        }
        c->is_disabled = true;
        break;
    case ENVOY__EXTENSIONS__FILTERS__HTTP__BUFFER__V3__BUFFER_PER_ROUTE__OVERRIDE_BUFFER: {
        size_t mark = filter_build_at(fb, ".buffer");
        rc = buffer_config(fb, m->buffer, c);
        filter_build_up(fb, mark);
        break;
    }
    default:
        rc = filter_build_fail(fb, NULL, "one of disabled, buffer is required");
        break;
    }
    if (rc == 0) {
        *out = c;
    }
    return rc;
}

const struct filter_ops buffer_filter_ops = {
    .name = "envoy.filters.http.buffer",
    .config_type = &envoy__extensions__filters__http__buffer__v3__buffer__descriptor,
    .route_config_type =
        &envoy__extensions__filters__http__buffer__v3__buffer_per_route__descriptor,
    .state_size = sizeof(struct buffer_state),
    .config_new = buffer_config_new,
    .route_config_new = buffer_route_config_new,
    .on_request_headers = buffer_request_headers,
    .on_request_data = buffer_request_data,
};
