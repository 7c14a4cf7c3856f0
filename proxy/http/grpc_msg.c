/* grpc_msg: gRPC message framing (see grpc_msg.h). */
#include "proxy/http/grpc_msg.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/core/xmalloc.h"

void grpc_msg_reader_init(struct grpc_msg_reader *r, uint32_t max)
{
    memset(r, 0, sizeof(*r));
    r->max = max;
}

void grpc_msg_reader_reset(struct grpc_msg_reader *r)
{
    free(r->buf);
    grpc_msg_reader_init(r, r->max);
}

int grpc_msg_partial(const struct grpc_msg_reader *r)
{
    return r->hdr_len > 0;
}

void grpc_msg_prefix(uint8_t out[GRPC_MSG_PREFIX], uint32_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}

/* Ends the current message: hands it over (from the caller's bytes when it arrived whole in one
 * piece, else from buf) and gets ready for the next prefix. */
static enum grpc_msg_err deliver(struct grpc_msg_reader *r, const uint8_t *msg, grpc_msg_cb cb,
                                 void *arg)
{
    uint32_t len = r->len;
    int rc = cb(arg, msg, len);
    free(r->buf);
    r->buf = NULL;
    r->hdr_len = 0;
    r->len = 0;
    r->have = 0;
    return rc != 0 ? GRPC_MSG_CALLBACK : GRPC_MSG_OK;
}

enum grpc_msg_err grpc_msg_feed(struct grpc_msg_reader *r, const uint8_t *p, size_t n,
                                grpc_msg_cb cb, void *arg)
{
    while (n > 0) {
        if (r->hdr_len < GRPC_MSG_PREFIX) {
            size_t take = GRPC_MSG_PREFIX - r->hdr_len;
            if (take > n)
                take = n;
            memcpy(r->hdr + r->hdr_len, p, take);
            r->hdr_len += (uint32_t)take;
            p += take;
            n -= take;
            if (r->hdr_len < GRPC_MSG_PREFIX)
                return GRPC_MSG_OK;
            if (r->hdr[0] != 0)
                return GRPC_MSG_COMPRESSED;
            r->len = (uint32_t)r->hdr[1] << 24 | (uint32_t)r->hdr[2] << 16 |
                     (uint32_t)r->hdr[3] << 8 | r->hdr[4];
            if (r->len > r->max)
                return GRPC_MSG_TOO_LARGE;
            r->have = 0;
            if (r->len <= n) { /* whole in this piece: no copy */
                const uint8_t *msg = p;
                p += r->len;
                n -= r->len;
                enum grpc_msg_err e = deliver(r, msg, cb, arg);
                if (e != GRPC_MSG_OK)
                    return e;
                continue;
            }
            r->buf = xmalloc(r->len);
        }
        size_t take = r->len - r->have;
        if (take > n)
            take = n;
        memcpy(r->buf + r->have, p, take);
        r->have += (uint32_t)take;
        p += take;
        n -= take;
        if (r->have == r->len) {
            enum grpc_msg_err e = deliver(r, r->buf, cb, arg);
            if (e != GRPC_MSG_OK)
                return e;
        }
    }
    return GRPC_MSG_OK;
}
