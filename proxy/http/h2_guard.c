/* h2_guard: flood accounting, request checks and session setup of downstream HTTP/2 (see
 * h2_guard.h). */
#include "proxy/http/h2_guard.h"

#include <string.h>

#include "proxy/config/config.h"

void h2_limits_from_cfg(struct h2_limits *l, const struct hcm_cfg *hc)
{
    l->max_outbound_frames = hc->h2_max_outbound_frames;
    l->max_outbound_control_frames = hc->h2_max_outbound_control_frames;
    l->max_empty_frames = hc->h2_max_empty_frames;
    l->max_priority_per_stream = hc->h2_max_priority_per_stream;
    l->max_wu_per_data_sent = hc->h2_max_wu_per_data_sent;
}

void h2_guard_init(struct h2_guard *g, const struct h2_limits *l)
{
    memset(g, 0, sizeof(*g));
    g->lim = *l;
}

enum h2_flood h2_guard_inbound(struct h2_guard *g, const nghttp2_frame_hd *hd)
{
    switch (hd->type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
    case NGHTTP2_CONTINUATION:
        if (hd->length == 0 && !(hd->flags & NGHTTP2_FLAG_END_STREAM)) {
            if (++g->empty_frames > g->lim.max_empty_frames) {
                return H2_FLOOD_EMPTY_FRAMES;
            }
        } else {
            g->empty_frames = 0;
        }
        break;
    case NGHTTP2_PRIORITY:
        if (++g->priority_frames >
            (uint64_t)g->lim.max_priority_per_stream * (1 + g->opened_streams)) {
            return H2_FLOOD_PRIORITY;
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (++g->wu_frames >
            5 + 2 * (g->opened_streams + (uint64_t)g->lim.max_wu_per_data_sent * g->data_sent)) {
            return H2_FLOOD_WINDOW_UPDATE;
        }
        break;
    default:
        break;
    }
    return H2_FLOOD_NONE;
}

void h2_guard_sent(struct h2_guard *g, uint8_t type)
{
    g->pending++;
    switch (type) {
    case NGHTTP2_DATA:
        g->data_sent++;
        break;
    case NGHTTP2_PING:
    case NGHTTP2_SETTINGS:
    case NGHTTP2_RST_STREAM:
        g->pending_control++;
        break;
    default:
        break;
    }
}

void h2_guard_stream_opened(struct h2_guard *g)
{
    g->opened_streams++;
}

void h2_guard_drained(struct h2_guard *g)
{
    g->pending = 0;
    g->pending_control = 0;
}

enum h2_flood h2_guard_outbound(struct h2_guard *g, size_t queued)
{
    if (g->pending_control > g->lim.max_outbound_control_frames) {
        return H2_FLOOD_OUTBOUND_CONTROL;
    }
    if ((uint64_t)g->pending + queued > g->lim.max_outbound_frames) {
        return H2_FLOOD_OUTBOUND;
    }
    return H2_FLOOD_NONE;
}

enum h2_flood h2_guard_stream_closed(struct h2_guard *g, bool premature)
{
    g->closed_streams++;
    if (premature) {
        g->premature_resets++;
    }
    if (g->closed_streams >= H2_PREMATURE_MIN_STREAMS &&
        g->premature_resets * 2 >= g->closed_streams) {
        return H2_FLOOD_PREMATURE_RESET;
    }
    return H2_FLOOD_NONE;
}

bool h2_check_path(const uint8_t *method, size_t method_len, const uint8_t *path, size_t len)
{
    if (len == 1 && path[0] == '*') {
        return method_len == 7 && memcmp(method, "OPTIONS", 7) == 0;
    }
    if (len == 0 || path[0] != '/') {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        if (path[i] <= 0x20 || path[i] == 0x7f) {
            return false;
        }
    }
    return true;
}

bool h2_same_authority(const char *authority, size_t alen, const char *host, size_t hlen)
{
    if (alen != hlen) {
        return false;
    }
    for (size_t i = 0; i < alen; i++) {
        char a = authority[i], h = host[i];
        if (a >= 'A' && a <= 'Z') {
            a = (char)(a + 32);
        }
        if (h >= 'A' && h <= 'Z') {
            h = (char)(h + 32);
        }
        if (a != h) {
            return false;
        }
    }
    return true;
}

int h2_server_options(nghttp2_option **opt, const struct h2_limits *l)
{
    int rc = nghttp2_option_new(opt);
    if (rc != 0) {
        return rc;
    }
    nghttp2_option_set_no_auto_window_update(*opt, 1);
    /* As Envoy: closed streams are not kept for the (deprecated) priority tree. nghttp2 would
     * otherwise keep up to max_concurrent_streams of them per connection (a 1024-stream
     * default: megabytes per busy connection); a frame on a closed stream is then ignored
     * instead of answered with STREAM_CLOSED, which RFC 9113 5.1 allows. */
    nghttp2_option_set_no_closed_streams(*opt, 1);
    nghttp2_option_set_max_outbound_ack(*opt, l->max_outbound_control_frames);
    nghttp2_option_set_max_settings(*opt, 32);
    nghttp2_option_set_max_continuations(*opt, H2_MAX_CONTINUATIONS);
    return 0;
}

size_t h2_server_settings(nghttp2_settings_entry iv[4], const struct hcm_cfg *hc)
{
    iv[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                     hc->h2_max_concurrent_streams};
    iv[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
                                     hc->h2_initial_stream_window};
    iv[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                     hc->max_request_headers_kb * 1024};
    iv[3] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, hc->h2_hpack_table_size};
    return 4;
}
