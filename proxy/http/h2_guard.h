/* h2_guard: the protections of a downstream HTTP/2 server session that nghttp2 does not give
 * by itself, kept apart from the connection code so the fuzz target (tests/fuzz/
 * h2_server_fuzz.c) runs exactly the same checks and session setup.
 *
 * - Flood accounting, with Envoy's limits and formulas (http2_protocol_options):
 *   consecutive inbound HEADERS/CONTINUATION/DATA frames with an empty payload and no
 *   END_STREAM (max_consecutive_inbound_frames_with_empty_payload, default 1); PRIORITY frames
 *   (max_inbound_priority_frames_per_stream x (1 + opened streams), default 100); WINDOW_UPDATE
 *   frames (5 + 2 x (opened streams + max_inbound_window_update_frames_per_data_frame_sent x
 *   DATA frames sent), default 10); frames waiting to be written (max_outbound_frames, 10000)
 *   and PING/SETTINGS/RST_STREAM among them (max_outbound_control_frames, 1000); and Envoy's
 *   premature-reset rule (CVE-2023-44487): once 500 streams closed, the connection ends when at
 *   least half of them were reset within a second of opening, before a response head.
 *   "Opened streams" is, as in Envoy, the number of responses whose head was submitted.
 * - Request validation beyond nghttp2's RFC 9113 checks (which stay on): `:path` must be
 *   "*" (OPTIONS only) or start with '/' and hold no control, space or DEL byte; a `host`
 *   field must name the same authority as `:authority` (RFC 9113 8.3.1).
 * - Session setup: the nghttp2 options and the server SETTINGS every session gets.
 *
 * No allocation; every call is O(1) (h2_check_path is O(path)). Thread: the owning worker. */
#pragma once

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hcm_cfg;

enum h2_flood {
    H2_FLOOD_NONE = 0,
    H2_FLOOD_EMPTY_FRAMES,     /* http2.inbound_empty_frames_flood */
    H2_FLOOD_PRIORITY,         /* http2.inbound_priority_frames_flood */
    H2_FLOOD_WINDOW_UPDATE,    /* http2.inbound_window_update_frames_flood */
    H2_FLOOD_OUTBOUND,         /* http2.outbound_flood */
    H2_FLOOD_OUTBOUND_CONTROL, /* http2.outbound_control_flood */
    H2_FLOOD_PREMATURE_RESET,  /* http.<prefix>.downstream_rq_too_many_premature_resets */
};

#define H2_PREMATURE_MIN_STREAMS 500 /* Envoy: decide only after this many closed streams */
#define H2_PREMATURE_LIFETIME_S 1.0  /* Envoy: a reset within this of the stream's start */
#define H2_MAX_CONTINUATIONS 8       /* CONTINUATION frames after one HEADERS (CVE-2024-28182) */

struct h2_limits {
    uint32_t max_outbound_frames;
    uint32_t max_outbound_control_frames;
    uint32_t max_empty_frames;
    uint32_t max_priority_per_stream;
    uint32_t max_wu_per_data_sent;
};

struct h2_guard {
    struct h2_limits lim;
    uint32_t empty_frames;    /* consecutive inbound frames with an empty payload */
    uint64_t priority_frames; /* inbound PRIORITY frames, connection lifetime */
    uint64_t wu_frames;       /* inbound WINDOW_UPDATE frames, connection lifetime */
    uint64_t opened_streams;  /* response heads submitted */
    uint64_t data_sent;       /* outbound DATA frames */
    uint32_t pending;         /* frames produced since the write buffer was last empty */
    uint32_t pending_control; /* PING, SETTINGS and RST_STREAM among them */
    uint64_t closed_streams;
    uint64_t premature_resets;
};

/* Limits from an HCM's http2_protocol_options. */
void h2_limits_from_cfg(struct h2_limits *l, const struct hcm_cfg *hc);

void h2_guard_init(struct h2_guard *g, const struct h2_limits *l);

/* An inbound frame header (nghttp2's on_begin_frame). Returns the flood it completes. */
enum h2_flood h2_guard_inbound(struct h2_guard *g, const nghttp2_frame_hd *hd);

/* A frame went to the write buffer (nghttp2's on_frame_send). */
void h2_guard_sent(struct h2_guard *g, uint8_t type);

/* A response head was submitted (an "opened stream" in Envoy's formulas). */
void h2_guard_stream_opened(struct h2_guard *g);

/* The write buffer is empty: every frame produced so far reached the socket. */
void h2_guard_drained(struct h2_guard *g);

/* Frames waiting: ours produced since the last drain plus `queued` still in nghttp2's queue
 * (nghttp2_session_get_outbound_queue_size). Call when frames remain unwritten. */
enum h2_flood h2_guard_outbound(struct h2_guard *g, size_t queued);

/* A request stream closed; `premature`: reset within H2_PREMATURE_LIFETIME_S of its start,
 * before any response head. */
enum h2_flood h2_guard_stream_closed(struct h2_guard *g, bool premature);

/* Is `path` an acceptable `:path` for `method`? (nghttp2 has already refused an empty one.) */
bool h2_check_path(const uint8_t *method, size_t method_len, const uint8_t *path, size_t len);

/* Does `host` name the same authority as `:authority` (ASCII case-insensitive)? */
bool h2_same_authority(const char *authority, size_t alen, const char *host, size_t hlen);

/* The nghttp2 options of a downstream session: no automatic WINDOW_UPDATE (the stream acks
 * what its upstream took), the outbound ACK cap at max_outbound_control_frames, nghttp2's
 * SETTINGS-entries cap (32) and CONTINUATION cap (8). The caller owns `*opt`. */
int h2_server_options(nghttp2_option **opt, const struct h2_limits *l);

/* The server SETTINGS (4 entries into `iv`); returns the count. */
size_t h2_server_settings(nghttp2_settings_entry iv[4], const struct hcm_cfg *hc);
