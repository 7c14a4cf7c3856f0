/* libFuzzer target for the downstream HTTP/2 server session: arbitrary bytes (after a valid
 * client preface, so that the frame layer is reached) into an nghttp2 server session set up as
 * proxy/http/downstream_h2.c sets it up: the same options and SETTINGS (h2_server_options,
 * h2_server_settings), the same flood accounting (h2_guard_*), the same header limits and
 * request checks (h2_check_path, h2_same_authority), a field nghttp2 would drop refused as a
 * messaging error. The downstream is a fake: every accepted request is answered 200 with a
 * small body; output is taken as downstream_h2_flush takes it (while a virtual write buffer
 * holds less than 64 KiB; DATA frames through send_data with NO_COPY, PAUSE past the mark),
 * and the socket takes everything at once, except when bit 0 of byte 0 is set: then only
 * every 64th round (a client that hardly reads), so the outbound limits are reached. Fields
 * come through on_header_callback2; the :path buffer is held (a reference, as the proxy holds
 * them all) until the stream closes and checked to be intact when the head is forwarded.
 *
 * Input: byte 0 flags (bit 0: slow reader, bit 1: stream errors instead of connection errors),
 * the rest is fed in pieces of 1-64 bytes (sizes from the data itself). Beyond the sanitizers,
 * it aborts when a request reaches the fake upstream that the checks promise never gets there:
 * a field name with an upper-case letter, a space or control byte, a colon after its first
 * byte, a connection-specific name; a value with CR, LF or NUL; more header fields than the
 * limit; a request after the connection was ended.
 *
 * Build and run: `make fuzz` / `make fuzz-replay` (needs clang and libnghttp2-dev);
 *   ./build/fuzz/h2_server_fuzz tests/fuzz/corpus/h2_server   (no dictionary: binary frames)
 * nghttp2 itself is the system library, not instrumented: coverage guides through our code. */
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/http/h2_guard.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "h2_server_fuzz: check failed: %s (line %d)\n", #cond, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define FZ_MAX_STREAMS 64
#define FZ_MAX_VAL 256

struct fz_stream {
    int32_t id;
    bool used;
    bool bad;       /* refused by a check: must never be "forwarded" */
    bool forwarded; /* the head reached the fake upstream */
    size_t bytes;
    uint32_t n;
    char method[16];
    char path[FZ_MAX_VAL];
    size_t path_len;
    nghttp2_rcbuf *path_rc; /* held: one reference, given back when the stream closes */
    char authority[FZ_MAX_VAL];
    size_t authority_len;
    char host[FZ_MAX_VAL];
    size_t host_len;
    bool has_host;
};

struct fz {
    nghttp2_session *sess;
    struct hcm_cfg hc;
    struct h2_guard guard;
    struct fz_stream st[FZ_MAX_STREAMS];
    bool terminated;
    bool stream_errors;
    size_t wbuf; /* the virtual write buffer's bytes */
};

static const char fz_body[] = "upstream\n";

static struct fz_stream *fz_find(struct fz *z, int32_t id, bool create)
{
    for (int i = 0; i < FZ_MAX_STREAMS; i++) {
        if (z->st[i].used && z->st[i].id == id) {
            return &z->st[i];
        }
    }
    if (!create) {
        return NULL;
    }
    for (int i = 0; i < FZ_MAX_STREAMS; i++) {
        if (!z->st[i].used) {
            memset(&z->st[i], 0, sizeof(z->st[i]));
            z->st[i].used = true;
            z->st[i].id = id;
            return &z->st[i];
        }
    }
    return NULL;
}

static void fz_terminate(struct fz *z, uint32_t code)
{
    if (!z->terminated) {
        z->terminated = true;
        nghttp2_session_terminate_session(z->sess, code);
    }
}

static void fz_messaging_error(struct fz *z, struct fz_stream *s)
{
    if (s != NULL) {
        s->bad = true;
    }
    if (z->stream_errors) {
        if (s != NULL) {
            nghttp2_submit_rst_stream(z->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_PROTOCOL_ERROR);
        }
        return;
    }
    fz_terminate(z, NGHTTP2_PROTOCOL_ERROR);
}

static int fz_begin_frame(nghttp2_session *ss, const nghttp2_frame_hd *hd, void *ud)
{
    (void)ss;
    struct fz *z = ud;
    if (h2_guard_inbound(&z->guard, hd) != H2_FLOOD_NONE) {
        fz_terminate(z, NGHTTP2_ENHANCE_YOUR_CALM);
    }
    return 0;
}

static int fz_begin_headers(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    (void)ss;
    struct fz *z = ud;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST && fz_find(z, f->hd.stream_id, true) == NULL) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the fake holds 64 streams */
    }
    return 0;
}

static void fz_copy(char *dst, size_t *dlen, const uint8_t *v, size_t len)
{
    size_t n = len < FZ_MAX_VAL ? len : FZ_MAX_VAL;
    memcpy(dst, v, n);
    *dlen = len; /* the real length: longer values are not compared */
}

static void fz_release(struct fz_stream *s)
{
    if (s->path_rc != NULL) {
        nghttp2_rcbuf_decref(s->path_rc);
        s->path_rc = NULL;
    }
}

static int fz_header(nghttp2_session *ss, const nghttp2_frame *f, nghttp2_rcbuf *name_rc,
                     nghttp2_rcbuf *value_rc, uint8_t flags, void *ud)
{
    (void)ss;
    (void)flags;
    struct fz *z = ud;
    struct fz_stream *s = fz_find(z, f->hd.stream_id, false);
    if (s == NULL || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    nghttp2_vec nb = nghttp2_rcbuf_get_buf(name_rc), vb = nghttp2_rcbuf_get_buf(value_rc);
    const uint8_t *name = nb.base, *value = vb.base;
    size_t namelen = nb.len, valuelen = vb.len;
    /* what nghttp2 (with the invalid-header callback) promises before we see a field */
    for (size_t i = 0; i < namelen; i++) {
        CHECK(!(name[i] >= 'A' && name[i] <= 'Z') && name[i] > 0x20 && name[i] != 0x7f);
        CHECK(i == 0 || name[i] != ':');
    }
    for (size_t i = 0; i < valuelen; i++) {
        CHECK(value[i] != '\r' && value[i] != '\n' && value[i] != '\0');
    }
    CHECK(!(namelen == 10 && memcmp(name, "connection", 10) == 0));
    CHECK(!(namelen == 17 && memcmp(name, "transfer-encoding", 17) == 0));
    /* downstream_h2.c's header limits */
    s->bytes += namelen + valuelen;
    s->n++;
    if (s->bytes > (size_t)z->hc.max_request_headers_kb * 1024 ||
        s->n > z->hc.max_request_headers_count) {
        s->bad = true;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        size_t n = valuelen < sizeof(s->method) - 1 ? valuelen : sizeof(s->method) - 1;
        memcpy(s->method, value, n);
        s->method[n] = '\0';
    } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        fz_copy(s->path, &s->path_len, value, valuelen);
        fz_release(s);
        nghttp2_rcbuf_incref(value_rc);
        s->path_rc = value_rc;
    } else if (namelen == 10 && memcmp(name, ":authority", 10) == 0) {
        fz_copy(s->authority, &s->authority_len, value, valuelen);
    } else if (namelen == 4 && memcmp(name, "host", 4) == 0) {
        fz_copy(s->host, &s->host_len, value, valuelen);
        s->has_host = true;
    }
    return 0;
}

static int fz_invalid_header(nghttp2_session *ss, const nghttp2_frame *f, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                             void *ud)
{
    (void)ss;
    (void)f;
    (void)name;
    (void)namelen;
    (void)value;
    (void)valuelen;
    (void)flags;
    (void)ud;
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static ssize_t fz_read_body(nghttp2_session *ss, int32_t id, uint8_t *dst, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)ss;
    (void)id;
    (void)src;
    (void)ud;
    size_t n = sizeof(fz_body) - 1;
    if (n > len) {
        n = len;
    }
    memcpy(dst, fz_body, n);
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_COPY;
    return (ssize_t)n;
}

/* downstream_h2.c's send_data: the frame goes into the write buffer; PAUSE past the mark */
static int fz_send_data(nghttp2_session *ss, nghttp2_frame *f, const uint8_t *framehd,
                        size_t length, nghttp2_data_source *src, void *ud)
{
    (void)ss;
    (void)framehd;
    (void)src;
    struct fz *z = ud;
    CHECK(length <= sizeof(fz_body) - 1);
    z->wbuf += 9 + f->data.padlen + length;
    return z->wbuf >= 65536 ? NGHTTP2_ERR_PAUSE : 0;
}

static void fz_deliver(struct fz *z, struct fz_stream *s)
{
    if (s->bad || s->forwarded) {
        return;
    }
    size_t plen = s->path_len < FZ_MAX_VAL ? s->path_len : FZ_MAX_VAL;
    if (s->path_rc != NULL) { /* the held buffer is intact after the rest of the block */
        nghttp2_vec pb = nghttp2_rcbuf_get_buf(s->path_rc);
        CHECK(pb.len == s->path_len && memcmp(pb.base, s->path, plen) == 0);
    }
    if (s->path_len > 0 && !h2_check_path((const uint8_t *)s->method, strlen(s->method),
                                          (const uint8_t *)s->path, plen)) {
        fz_messaging_error(z, s);
        return;
    }
    if (s->authority_len > 0 && s->has_host &&
        (s->authority_len > FZ_MAX_VAL || s->host_len > FZ_MAX_VAL ||
         !h2_same_authority(s->authority, s->authority_len, s->host, s->host_len))) {
        fz_messaging_error(z, s);
        return;
    }
    /* what the proxy would forward */
    CHECK(!z->terminated);
    CHECK(s->n <= z->hc.max_request_headers_count);
    CHECK(s->method[0] != '\0');
    s->forwarded = true;
    nghttp2_nv nv = {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE};
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = fz_read_body};
    if (nghttp2_submit_response(z->sess, s->id, &nv, 1, &prd) == 0) {
        h2_guard_stream_opened(&z->guard);
    }
}

static int fz_frame_recv(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    (void)ss;
    struct fz *z = ud;
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && !z->terminated) {
        struct fz_stream *s = fz_find(z, f->hd.stream_id, false);
        if (s != NULL) {
            fz_deliver(z, s);
        }
    }
    return 0;
}

static int fz_invalid_frame(nghttp2_session *ss, const nghttp2_frame *f, int err, void *ud)
{
    (void)ss;
    struct fz *z = ud;
    struct fz_stream *s = f->hd.stream_id != 0 ? fz_find(z, f->hd.stream_id, false) : NULL;
    if (s != NULL) {
        s->bad = true;
    }
    if (err == NGHTTP2_ERR_HTTP_HEADER || err == NGHTTP2_ERR_HTTP_MESSAGING) {
        fz_messaging_error(z, NULL);
    }
    return 0;
}

static int fz_frame_send(nghttp2_session *ss, const nghttp2_frame *f, void *ud)
{
    (void)ss;
    struct fz *z = ud;
    h2_guard_sent(&z->guard, f->hd.type);
    return 0;
}

static int fz_stream_close(nghttp2_session *ss, int32_t id, uint32_t code, void *ud)
{
    (void)ss;
    (void)code;
    struct fz *z = ud;
    struct fz_stream *s = fz_find(z, id, false);
    if (s != NULL) {
        if (h2_guard_stream_closed(&z->guard, !s->forwarded) != H2_FLOOD_NONE) {
            fz_terminate(z, NGHTTP2_ENHANCE_YOUR_CALM);
        }
        fz_release(s);
        s->used = false;
    }
    return 0;
}

static void fz_defaults(struct hcm_cfg *hc)
{
    memset(hc, 0, sizeof(*hc));
    hc->max_request_headers_kb = 60;
    hc->max_request_headers_count = 100;
    hc->h2_max_concurrent_streams = 1024;
    hc->h2_initial_stream_window = 16u << 20;
    hc->h2_initial_conn_window = 24u << 20;
    hc->h2_hpack_table_size = 4096;
    hc->h2_max_outbound_frames = 10000;
    hc->h2_max_outbound_control_frames = 1000;
    hc->h2_max_empty_frames = 1;
    hc->h2_max_priority_per_stream = 100;
    hc->h2_max_wu_per_data_sent = 10;
}

/* Takes the session's output as downstream_h2_flush does: frames while the (virtual) write
 * buffer holds less than 64 KiB; `drain`: the socket took everything. Returns false when the
 * connection would close. */
static bool fz_send(struct fz *z, bool drain)
{
    size_t *wbuf = &z->wbuf;
    while (*wbuf < 65536) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(z->sess, &out);
        if (n < 0) {
            return false;
        }
        if (n == 0) {
            break;
        }
        *wbuf += (size_t)n;
    }
    if (drain) {
        *wbuf = 0;
        h2_guard_drained(&z->guard);
    } else if (h2_guard_outbound(&z->guard, nghttp2_session_get_outbound_queue_size(z->sess)) !=
               H2_FLOOD_NONE) {
        return false;
    }
    return nghttp2_session_want_read(z->sess) || nghttp2_session_want_write(z->sess);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (size < 1) {
        return 0;
    }
    struct fz *z = calloc(1, sizeof(*z));
    CHECK(z != NULL);
    fz_defaults(&z->hc);
    bool slow = data[0] & 1;
    z->stream_errors = (data[0] & 2) != 0;
    data++;
    size--;
    struct h2_limits lim;
    h2_limits_from_cfg(&lim, &z->hc);
    h2_guard_init(&z->guard, &lim);
    nghttp2_session_callbacks *cbs;
    CHECK(nghttp2_session_callbacks_new(&cbs) == 0);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cbs, fz_begin_frame);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, fz_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(cbs, fz_header);
    nghttp2_session_callbacks_set_send_data_callback(cbs, fz_send_data);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cbs, fz_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, fz_frame_recv);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cbs, fz_invalid_frame);
    nghttp2_session_callbacks_set_on_frame_send_callback(cbs, fz_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, fz_stream_close);
    nghttp2_option *opt;
    CHECK(h2_server_options(&opt, &lim) == 0);
    CHECK(nghttp2_session_server_new2(&z->sess, cbs, z, opt) == 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_settings_entry iv[4];
    size_t niv = h2_server_settings(iv, &z->hc);
    CHECK(nghttp2_submit_settings(z->sess, NGHTTP2_FLAG_NONE, iv, niv) == 0);
    nghttp2_session_set_local_window_size(z->sess, NGHTTP2_FLAG_NONE, 0,
                                          (int32_t)z->hc.h2_initial_conn_window);
    bool open = nghttp2_session_mem_recv(z->sess, (const uint8_t *)preface, sizeof(preface) - 1) ==
                (ssize_t)(sizeof(preface) - 1);
    size_t off = 0;
    unsigned round = 0;
    while (open && off < size) {
        size_t piece = 1 + data[off] % 64;
        if (piece > size - off) {
            piece = size - off;
        }
        ssize_t n = nghttp2_session_mem_recv(z->sess, data + off, piece);
        if (n < 0) {
            break; /* the proxy closes the connection */
        }
        CHECK((size_t)n == piece);
        off += piece;
        open = fz_send(z, !slow || ++round % 64 == 0);
    }
    nghttp2_session_del(z->sess);
    for (int i = 0; i < FZ_MAX_STREAMS; i++) {
        fz_release(&z->st[i]); /* the buffers outlive the session (its free function) */
    }
    free(z);
    return 0;
}
