/* codec_h1: HTTP/1.x message parser and encoder (see codec_h1.h).
 *
 * Sits between a connection's input buffer and its streams, on both sides of the proxy. Bytes
 * go through two machines in lockstep: the guard below, which scans the raw framing (head lines,
 * chunk lines, trailers) with the strict rules llhttp 8.1.0 lacks, and llhttp, which parses the
 * same bytes and drives the callbacks. The guard always scans a segment first and stops at each
 * framing boundary (end of head, end of message); only then does llhttp see the segment, so
 * llhttp never parses a byte the guard has not accepted, and the two must agree on where each
 * message ends ("framing mismatch" otherwise).
 *
 *   IDLE -> START line -> field lines -> HEAD_END --(on_headers_complete sets framing)-->
 *     none | BODY_CL | BODY_EOF | CHUNK_SIZE -> CHUNK_DATA -> ... -> trailer lines
 *     -> MSG_END --(on_message_complete: pause, llhttp reset)--> DONE (or CLOSED)
 *     --(next feed)--> IDLE          (an interim 1xx response goes from MSG_END back to IDLE)
 *
 * Owns: the llhttp state, a head block (method, target, header names and values, grown on
 * demand up to max_head_bytes) and a small arena for the header array. Both are reset at the
 * next message's first byte and can be given back with h1_parser_release(). */
#include "proxy/http/codec_h1.h"

#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "proxy/core/blkcache.h"
#include "proxy/core/buf.h"
#include "proxy/core/xmalloc.h"

/* The head block starts this small and doubles; most request heads fit. A block grown past
 * H1_BLOCK_KEEP by a big head is given back when the next message starts. */
#define H1_BLOCK_MIN H1_PARSER_HEAD_BLOCK
#define H1_BLOCK_KEEP 4096
/* The header-array arena's block size: 16 headers take 512 bytes, 48 fit before a new block. */
#define H1_ARENA_BLOCK H1_PARSER_ARENA_BLOCK /* with its header, within glibc's tcache sizes */
/* A chunk-size line (size plus extensions) longer than this is refused: extensions carry
 * nothing we use, and this bounds what a peer can make us scan per chunk. */
#define H1_CHUNK_LINE_MAX 4096
/* Chunk sizes are limited to 15 significant hex digits (< 2^60). */
#define H1_CHUNK_DIGITS_MAX 15
/* More interim (1xx) responses than this before the final one: the upstream is hostile. */
#define H1_MAX_INTERIM 10

/* Guard states; the order matters: everything up to G_BLANK_CR is a line state. */
enum g_state {
    G_IDLE,          /* before a start line; empty lines (CRLF) are skipped */
    G_IDLE_CR,       /* CR before a start line, LF must follow */
    G_START,         /* in the start line */
    G_START_CR,      /* CR ending the start line */
    G_LINE_BEGIN,    /* first byte of a field line, or of the blank line */
    G_NAME,          /* field name, up to the colon */
    G_VALUE,         /* after the colon, up to CR */
    G_FIELD_CR,      /* CR ending a field line */
    G_BLANK_CR,      /* CR at a line start: LF ends the section */
    G_HEAD_END,      /* head scanned; on_headers_complete must set the framing */
    G_BODY_CL,       /* `remaining` body bytes left */
    G_BODY_EOF,      /* body runs to EOF (responses only) */
    G_CHUNK_SIZE,    /* hex digits of a chunk-size line */
    G_CHUNK_EXT,     /* chunk extensions, up to CR */
    G_CHUNK_SIZE_CR, /* CR ending a chunk-size line */
    G_CHUNK_DATA,    /* `remaining` chunk bytes left */
    G_CHUNK_DATA_CR, /* CR after chunk data */
    G_CHUNK_DATA_LF, /* LF after chunk data */
    G_MSG_END,       /* message scanned; on_message_complete must come */
    G_DONE,          /* message complete, more may follow */
    G_CLOSED,        /* message complete, nothing may follow */
    G_ERROR,         /* sticky */
};

/* Headers with framing meaning, recognised once per name. */
enum hdr_kind {
    HK_OTHER,
    HK_CONTENT_LENGTH,
    HK_TRANSFER_ENCODING,
    HK_HOST,
    HK_EXPECT,
};

#define SEEN_CL (1u << 0)
#define SEEN_TE (1u << 1)
#define SEEN_HOST (1u << 2)

enum body_kind {
    BODY_NONE,
    BODY_CL,
    BODY_CHUNKED,
    BODY_EOF,
};

struct h1_parser {
    llhttp_t ll;
    enum h1_kind kind;
    enum g_state g;
    const struct h1_parser_cbs *cbs; /* borrowed from the owner, valid for the parser's life */
    void *ud;
    size_t max_head_bytes;
    uint32_t max_headers;

    /* Guard counters, per head (or trailer section). */
    size_t section_bytes; /* raw bytes of the current head or trailer section */
    uint32_t n_fields;    /* field lines in the current section */
    uint32_t chunk_line;  /* bytes of the current chunk-size line */
    uint8_t chunk_digits; /* significant hex digits seen */
    bool chunk_has_digit;
    bool in_trailers;  /* the guard scans the trailer section */
    bool in_body;      /* llhttp is past the head: header callbacks are trailers */
    bool in_msg;       /* a message (or its interim responses) has started */
    bool is_interim;   /* the message being completed is a 1xx to skip */
    bool ended;        /* on_message_complete paused llhttp */
    bool no_body_next; /* h1_parser_expect_no_body() */
    uint8_t n_interim;
    uint64_t remaining; /* body or chunk bytes left */

    /* Semantic state, per head. */
    unsigned seen; /* SEEN_* */
    enum hdr_kind cur_kind;
    bool te_unknown; /* a coding other than chunked */
    bool te_chunked_last;
    bool te_bad; /* empty list element, or chunked twice */

    /* Head block: owned, grown by doubling; views in `msg` point into it. */
    char *blk;
    struct blk_cache *arena_cache; /* borrowed, or NULL: h1_parser_use_caches */
    struct blk_cache *head_cache;
    uint32_t blk_len;
    uint32_t blk_cap;
    uint32_t tok_off; /* start of the token being copied */
    uint32_t name_off, name_len;
    uint32_t method_off, method_len;
    uint32_t target_off, target_len;
    uint32_t host_off, host_len;

    struct arena arena; /* owned: the header array; reset per message */
    struct buf tr;      /* owned: the trailer field being read (name, then value), when the
                         * owner takes trailers (cbs->on_trailer) */
    uint32_t tr_name_len;
    struct h1_msg msg;

    int err_status; /* 0: no error, or a callback stopped us */
    const char *err_reason;
    /* A guard error waits here while llhttp parses the bytes before it, so that an earlier
     * llhttp error wins whatever the split of the input (see h1_parser_feed). */
    int pend_status;
    const char *pend_reason;
};

/* ---- byte classes --------------------------------------------------------------------------- */

enum {
    C_TEXT = 0, /* VCHAR but ':', and obs-text */
    C_COLON,    /* ':' */
    C_WS,       /* SP, HTAB */
    C_CR,
    C_LF,
    C_CTL, /* other controls and DEL: never valid in a head */
};

/* clang-format off */
static const uint8_t byte_class[256] = {
    /* 0x00 */ C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL,
               C_CTL, C_WS,  C_LF,  C_CTL, C_CTL, C_CR,  C_CTL, C_CTL,
    /* 0x10 */ C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL,
               C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL, C_CTL,
    /* 0x20 */ C_WS,
    /* 0x3a */ [':'] = C_COLON,
    /* 0x7f */ [0x7f] = C_CTL,
    /* everything else, obs-text included, is C_TEXT (0) */
};
/* clang-format on */

/* True when one of the 8 bytes in `w` is below 0x20 or is DEL (the classic SWAR "has less
 * than" and "has zero" tests; exact for "any byte", which is all we ask). */
static inline bool word_has_ctl(uint64_t w)
{
    const uint64_t ones = 0x0101010101010101ull;
    const uint64_t highs = 0x8080808080808080ull;
    uint64_t del = w ^ (ones * 0x7f);
    return (((w - ones * 0x20) & ~w) | ((del - ones) & ~del)) & highs;
}

/* Skips start-line or field-value bytes (text, ':', SP, HTAB) in b[i, end) and returns the
 * index of the first other byte, or `end`. Most heads hold no control byte but the CRLFs, so
 * eight bytes are tested at a time and only a flagged word is looked at byte by byte. */
static size_t skip_text(const uint8_t *b, size_t i, size_t end)
{
    while (i < end) {
        if (end - i >= 8) {
            uint64_t w;
            memcpy(&w, b + i, 8);
            if (!word_has_ctl(w)) {
                i += 8;
                continue;
            }
        }
        if (byte_class[b[i]] > C_WS) {
            break;
        }
        i++;
    }
    return i;
}

/* Host header bytes: RFC 3986 reg-name, IPv4, IP-literal and port characters. */
static bool host_char(unsigned char c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') {
        return true;
    }
    if (c >= '0' && c <= '9') {
        return true;
    }
    switch (c) {
    case '-':
    case '.':
    case '_':
    case '~':
    case '%':
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case '+':
    case ',':
    case ';':
    case '=':
    case ':':
    case '[':
    case ']':
        return true;
    default:
        return false;
    }
}

static int unhex(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c |= 0x20;
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* ---- errors --------------------------------------------------------------------------------- */

/* Records the first error. `status` is the request-side answer; any fault in a response is the
 * upstream's, answered 502. Returns -1 for tail calls. */
static int fail(struct h1_parser *p, int status, const char *reason)
{
    if (p->g != G_ERROR) {
        p->err_status = p->kind == H1_RESPONSE ? 502 : status;
        p->err_reason = reason;
        p->g = G_ERROR;
    }
    return -1;
}

/* The owner's callback asked to stop. */
static int stopped(struct h1_parser *p)
{
    if (p->g != G_ERROR) {
        p->err_status = 0;
        p->err_reason = "stopped by callback";
        p->g = G_ERROR;
    }
    return -1;
}

static int fail_llhttp(struct h1_parser *p, enum llhttp_errno e)
{
    switch (e) {
    case HPE_INVALID_METHOD:
        return fail(p, 400, "invalid method");
    case HPE_INVALID_URL:
        return fail(p, 400, "invalid request target");
    case HPE_INVALID_VERSION:
        return fail(p, 400, "invalid HTTP version");
    case HPE_INVALID_CONSTANT:
        return fail(p, 400, p->kind == H1_REQUEST ? "invalid request line" : "invalid status line");
    case HPE_INVALID_STATUS:
        return fail(p, 400, "invalid status line");
    case HPE_INVALID_HEADER_TOKEN:
        return fail(p, 400, "invalid header");
    case HPE_INVALID_CONTENT_LENGTH:
        return fail(p, 400, "invalid Content-Length");
    case HPE_UNEXPECTED_CONTENT_LENGTH:
        return fail(p, 400,
                    (p->seen & SEEN_TE) ? "Content-Length with Transfer-Encoding"
                                        : "duplicate Content-Length");
    case HPE_INVALID_TRANSFER_ENCODING:
        return fail(p, 400, "invalid Transfer-Encoding");
    case HPE_INVALID_CHUNK_SIZE:
        return fail(p, 400, "invalid chunk size");
    case HPE_CLOSED_CONNECTION:
        return fail(p, 400, "data after Connection: close");
    case HPE_PAUSED_H2_UPGRADE:
        return fail(p, 505, "unsupported HTTP version");
    default:
        return fail(p, 400, "malformed message");
    }
}

/* A guard error: recorded, committed by h1_parser_feed. Returns -1. */
static int gfail(struct h1_parser *p, int status, const char *reason)
{
    p->pend_status = status;
    p->pend_reason = reason;
    return -1;
}

/* ---- per-message state ---------------------------------------------------------------------- */

/* Frees the head block (back to the head cache when it has the cache's size). */
static void blk_free(struct h1_parser *p)
{
    if (p->blk != NULL && p->head_cache != NULL && p->blk_cap == H1_BLOCK_MIN) {
        blk_cache_put(p->head_cache, p->blk);
    } else {
        free(p->blk);
    }
    p->blk = NULL;
    p->blk_cap = 0;
}

static void arena_start(struct h1_parser *p)
{
    if (p->arena_cache != NULL) {
        arena_init_cached(&p->arena, p->arena_cache);
    } else {
        arena_init(&p->arena, H1_ARENA_BLOCK);
    }
}

/* Forgets the current head (not the interim count): called when a new message starts and after
 * an interim response. The previous message's views die here. */
static void head_reset(struct h1_parser *p)
{
    arena_reset(&p->arena);
    if (p->blk_cap > H1_BLOCK_KEEP) {
        blk_free(p); /* give back what one big head made us grow */
    }
    p->blk_len = 0;
    p->tok_off = 0;
    p->name_off = p->name_len = 0;
    p->method_off = p->method_len = 0;
    p->target_off = p->target_len = 0;
    p->host_off = p->host_len = 0;
    p->section_bytes = 0;
    p->n_fields = 0;
    p->chunk_line = 0;
    p->chunk_digits = 0;
    p->chunk_has_digit = false;
    p->in_trailers = false;
    p->in_body = false;
    p->is_interim = false;
    buf_consume(&p->tr, buf_len(&p->tr));
    p->tr_name_len = 0;
    p->remaining = 0;
    p->seen = 0;
    p->cur_kind = HK_OTHER;
    p->te_unknown = false;
    p->te_chunked_last = false;
    p->te_bad = false;
    memset(&p->msg, 0, sizeof(p->msg));
    p->msg.content_length = -1;
    p->msg.headers.arena = &p->arena;
}

/* ---- head block ----------------------------------------------------------------------------- */

/* Makes room for `len` more bytes. The block moves, so header views are rebased; the other
 * views are kept as offsets until the head completes. Total size stays under max_head_bytes
 * because only bytes the guard counted are copied. */
static void blk_grow(struct h1_parser *p, size_t len)
{
    size_t cap = p->blk_cap ? (size_t)p->blk_cap * 2 : H1_BLOCK_MIN;
    while (cap - p->blk_len < len) {
        cap *= 2;
    }
    char *nb =
        cap == H1_BLOCK_MIN && p->head_cache != NULL ? blk_cache_get(p->head_cache) : xmalloc(cap);
    if (p->blk_len > 0) {
        memcpy(nb, p->blk, p->blk_len);
    }
    struct headers *h = &p->msg.headers;
    for (uint32_t i = 0; i < h->n; i++) {
        /* (names are never empty; an empty value points at a literal, not the block) */
        h->v[i].name.p = nb + (h->v[i].name.p - p->blk);
        if (h->v[i].value.len > 0) {
            h->v[i].value.p = nb + (h->v[i].value.p - p->blk);
        }
    }
    blk_free(p);
    p->blk = nb;
    p->blk_cap = (uint32_t)cap;
}

static void blk_append(struct h1_parser *p, const char *at, size_t len, bool lower)
{
    if (len == 0) {
        return;
    }
    if (p->blk_cap - p->blk_len < len) {
        blk_grow(p, len);
    }
    char *d = p->blk + p->blk_len;
    if (lower) {
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)at[i];
            d[i] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
        }
    } else {
        memcpy(d, at, len);
    }
    p->blk_len += (uint32_t)len;
}

static struct str blk_str(const struct h1_parser *p, uint32_t off, uint32_t len)
{
    return (struct str){len ? p->blk + off : "", len};
}

/* ---- the guard ------------------------------------------------------------------------------ */

static int fail_line(struct h1_parser *p, const char *head_reason, const char *trailer_reason)
{
    return gfail(p, 400, p->in_trailers ? trailer_reason : head_reason);
}

/* Scans head or trailer lines in b[*pi, end). Stops at `end`, at the end of the section
 * (state G_HEAD_END or G_MSG_END) or at an error (-1, *pi at the offending byte). */
static int scan_lines(struct h1_parser *p, const uint8_t *b, size_t *pi, size_t end)
{
    size_t i = *pi;
    int rc = 0;

    while (i < end) {
        uint8_t c = b[i];
        switch (p->g) {
        case G_IDLE:
            if (c == '\r') {
                p->g = G_IDLE_CR;
                i++;
                break;
            }
            if (c == '\n') {
                rc = gfail(p, 400, "bare LF in header section");
                goto out;
            }
            p->in_msg = true;
            p->g = G_START;
            break;
        case G_IDLE_CR:
        case G_START_CR:
        case G_FIELD_CR:
            if (c != '\n') {
                rc = fail_line(p, "bare CR in header section", "bare CR in trailer section");
                goto out;
            }
            i++;
            p->g = p->g == G_IDLE_CR ? G_IDLE : G_LINE_BEGIN;
            break;
        case G_START:
            i = skip_text(b, i, end);
            if (i == end) {
                break;
            }
            if (b[i] == '\r') {
                p->g = G_START_CR;
                i++;
                break;
            }
            rc = gfail(p, 400,
                       b[i] == '\n' ? "bare LF in header section"
                                    : "control character in header section");
            goto out;
        case G_LINE_BEGIN:
            if (c == '\r') {
                p->g = G_BLANK_CR;
                i++;
                break;
            }
            if (c == ' ' || c == '\t') {
                rc = fail_line(p, "obs-fold in header section", "obs-fold in trailer section");
                goto out;
            }
            if (c == ':') {
                rc = gfail(p, 400, "empty header name");
                goto out;
            }
            if (c == '\n') {
                rc = fail_line(p, "bare LF in header section", "bare LF in trailer section");
                goto out;
            }
            if (++p->n_fields > p->max_headers) {
                rc = gfail(p, 431, p->in_trailers ? "too many trailers" : "too many headers");
                goto out;
            }
            p->g = G_NAME;
            break;
        case G_NAME:
            while (i < end && byte_class[b[i]] == C_TEXT) {
                i++;
            }
            if (i == end) {
                break;
            }
            switch (byte_class[b[i]]) {
            case C_COLON:
                p->g = G_VALUE;
                i++;
                continue;
            case C_WS:
                rc = gfail(p, 400, "whitespace before colon");
                break;
            case C_CR:
            case C_LF:
                rc = gfail(p, 400, "header line without colon");
                break;
            default:
                rc = fail_line(p, "control character in header section",
                               "control character in trailer section");
                break;
            }
            goto out;
        case G_VALUE:
            i = skip_text(b, i, end);
            if (i == end) {
                break;
            }
            if (b[i] == '\r') {
                p->g = G_FIELD_CR;
                i++;
                break;
            }
            if (b[i] == '\n') {
                rc = fail_line(p, "bare LF in header section", "bare LF in trailer section");
            } else {
                rc = fail_line(p, "control character in header section",
                               "control character in trailer section");
            }
            goto out;
        case G_BLANK_CR:
            if (c != '\n') {
                rc = fail_line(p, "bare CR in header section", "bare CR in trailer section");
                goto out;
            }
            i++;
            p->g = p->in_trailers ? G_MSG_END : G_HEAD_END;
            goto out;
        default:
            goto out;
        }
    }
out:
    *pi = i;
    return rc;
}

/* Scans a head or trailer section, bounding it by max_head_bytes. */
static int scan_section(struct h1_parser *p, const uint8_t *b, size_t n, size_t *pi)
{
    size_t start = *pi;
    size_t left = p->max_head_bytes - p->section_bytes;
    size_t end = n - start > left ? start + left : n;

    int rc = scan_lines(p, b, pi, end);
    p->section_bytes += *pi - start;
    if (rc < 0) {
        return rc;
    }
    if (p->g <= G_BLANK_CR && end < n) {
        /* Out of budget with more bytes waiting and the section still open. */
        if (p->in_trailers) {
            return gfail(p, 431, "trailer section too large");
        }
        if (p->kind == H1_REQUEST && p->g <= G_START_CR) {
            return gfail(p, 414, "request line too long");
        }
        return gfail(p, 431, "header section too large");
    }
    return 0;
}

/* Scans chunk-size lines and the CRLF after chunk data; chunk data itself is skipped by
 * count, not looked at. */
static int scan_chunked(struct h1_parser *p, const uint8_t *b, size_t n, size_t *pi)
{
    size_t i = *pi;
    int rc = 0;

    while (i < n) {
        uint8_t c = b[i];
        switch (p->g) {
        case G_CHUNK_SIZE: {
            int h = unhex(c);
            if (h >= 0) {
                if (p->chunk_digits > 0 || h > 0) {
                    if (++p->chunk_digits > H1_CHUNK_DIGITS_MAX) {
                        rc = gfail(p, 400, "invalid chunk size");
                        goto out;
                    }
                }
                p->remaining = p->remaining * 16 + (uint64_t)h;
                p->chunk_has_digit = true;
            } else if (p->chunk_has_digit && c == ';') {
                p->g = G_CHUNK_EXT;
            } else if (p->chunk_has_digit && c == '\r') {
                p->g = G_CHUNK_SIZE_CR;
            } else {
                rc = gfail(p, 400, c == '\n' ? "bare LF in chunk line" : "invalid chunk size");
                goto out;
            }
            if (++p->chunk_line > H1_CHUNK_LINE_MAX) {
                rc = gfail(p, 400, "chunk line too long");
                goto out;
            }
            i++;
            break;
        }
        case G_CHUNK_EXT: {
            size_t lim = n - i > H1_CHUNK_LINE_MAX - p->chunk_line
                             ? i + (H1_CHUNK_LINE_MAX - p->chunk_line)
                             : n;
            size_t s = i;
            while (i < lim && byte_class[b[i]] <= C_WS) {
                i++;
            }
            p->chunk_line += (uint32_t)(i - s);
            if (i == n) {
                break;
            }
            if (i == lim) {
                rc = gfail(p, 400, "chunk line too long");
                goto out;
            }
            if (b[i] == '\r') {
                p->g = G_CHUNK_SIZE_CR;
                p->chunk_line++;
                i++;
                break;
            }
            rc = gfail(p, 400,
                       b[i] == '\n' ? "bare LF in chunk line" : "control character in chunk line");
            goto out;
        }
        case G_CHUNK_SIZE_CR:
            if (c != '\n') {
                rc = gfail(p, 400, "bare CR in chunk line");
                goto out;
            }
            i++;
            if (p->remaining == 0) {
                /* Last chunk: the trailer section follows, bounded like a head. */
                p->in_trailers = true;
                p->section_bytes = 0;
                p->n_fields = 0;
                p->g = G_LINE_BEGIN;
                *pi = i;
                return scan_section(p, b, n, pi);
            }
            p->g = G_CHUNK_DATA;
            break;
        case G_CHUNK_DATA: {
            size_t take = n - i < p->remaining ? n - i : (size_t)p->remaining;
            i += take;
            p->remaining -= take;
            if (p->remaining == 0) {
                p->g = G_CHUNK_DATA_CR;
            }
            break;
        }
        case G_CHUNK_DATA_CR:
        case G_CHUNK_DATA_LF:
            if (c != (p->g == G_CHUNK_DATA_CR ? '\r' : '\n')) {
                rc = gfail(p, 400, "chunk data not followed by CRLF");
                goto out;
            }
            i++;
            if (p->g == G_CHUNK_DATA_CR) {
                p->g = G_CHUNK_DATA_LF;
            } else {
                p->g = G_CHUNK_SIZE;
                p->chunk_line = 0;
                p->chunk_digits = 0;
                p->chunk_has_digit = false;
            }
            break;
        default:
            goto out;
        }
    }
out:
    *pi = i;
    return rc;
}

/* Scans b[0, n) up to the next framing boundary. On return *out is the number of bytes the
 * guard accepted: all of them, or up to a boundary (G_HEAD_END, G_MSG_END), or up to the
 * offending byte when it returns -1. */
static int guard_scan(struct h1_parser *p, const uint8_t *b, size_t n, size_t *out)
{
    size_t i = 0;
    int rc = 0;

    while (i < n && rc == 0) {
        if (p->g <= G_BLANK_CR) {
            rc = scan_section(p, b, n, &i);
            continue;
        }
        switch (p->g) {
        case G_BODY_CL: {
            size_t take = n - i < p->remaining ? n - i : (size_t)p->remaining;
            i += take;
            p->remaining -= take;
            if (p->remaining == 0) {
                p->g = G_MSG_END;
            }
            break;
        }
        case G_BODY_EOF:
            i = n;
            break;
        case G_CHUNK_SIZE:
        case G_CHUNK_EXT:
        case G_CHUNK_SIZE_CR:
        case G_CHUNK_DATA:
        case G_CHUNK_DATA_CR:
        case G_CHUNK_DATA_LF:
            rc = scan_chunked(p, b, n, &i);
            break;
        default:
            /* A boundary: llhttp must act on what was scanned before we go on. */
            *out = i;
            return 0;
        }
    }
    *out = i;
    return rc;
}

/* ---- header semantics ----------------------------------------------------------------------- */

static enum hdr_kind classify(const char *name, size_t len)
{
    switch (len) {
    case 4:
        return memcmp(name, "host", 4) == 0 ? HK_HOST : HK_OTHER;
    case 6:
        return memcmp(name, "expect", 6) == 0 ? HK_EXPECT : HK_OTHER;
    case 14:
        return memcmp(name, "content-length", 14) == 0 ? HK_CONTENT_LENGTH : HK_OTHER;
    case 17:
        return memcmp(name, "transfer-encoding", 17) == 0 ? HK_TRANSFER_ENCODING : HK_OTHER;
    default:
        return HK_OTHER;
    }
}

/* One Transfer-Encoding line: a comma list of codings, accumulated across lines. Only a lone,
 * final `chunked` is accepted later; anything else is noted here. */
static void parse_te(struct h1_parser *p, struct str v)
{
    size_t i = 0;
    for (;;) {
        size_t s = i;
        while (i < v.len && v.p[i] != ',') {
            i++;
        }
        struct str el = str_trim_ows((struct str){v.p + s, i - s});
        if (el.len == 0) {
            p->te_bad = true;
        } else if (str_eq_nocase(el, STR_LIT("chunked"))) {
            if (p->te_chunked_last) {
                p->te_bad = true;
            }
            p->te_chunked_last = true;
        } else {
            p->te_unknown = true;
            p->te_chunked_last = false;
        }
        if (i == v.len) {
            return;
        }
        i++;
    }
}

static bool host_valid(struct str h)
{
    for (size_t i = 0; i < h.len; i++) {
        if (!host_char((unsigned char)h.p[i])) {
            return false;
        }
    }
    return true;
}

/* Finds the authority of an absolute-form target ("http://a:80/x" -> "a:80"). Returns false
 * for the origin, asterisk and authority (CONNECT) forms. */
static bool absolute_authority(struct str target, struct str *auth)
{
    if (target.len == 0 || target.p[0] == '/' || target.p[0] == '*') {
        return false;
    }
    /* The scheme ends at the first ':'; absolute-form has "://" there. */
    size_t i = 0;
    while (i < target.len && target.p[i] != ':' && target.p[i] != '/') {
        i++;
    }
    if (target.len - i < 3 || memcmp(target.p + i, "://", 3) != 0) {
        return false;
    }
    size_t s = i + 3;
    size_t e = s;
    while (e < target.len && target.p[e] != '/' && target.p[e] != '?' && target.p[e] != '#') {
        e++;
    }
    *auth = (struct str){target.p + s, e - s};
    return true;
}

/* The request's host (RFC 9112 3.2.2): an absolute-form target's authority overrides Host, so
 * the two must agree, or routing (by msg.host) and the upstream (by the target) could see
 * different hosts. Without a Host header (HTTP/1.0) the authority is the host. */
static int check_host(struct h1_parser *p, struct h1_msg *m)
{
    struct str auth;
    if (!absolute_authority(m->target, &auth)) {
        if (!(p->seen & SEEN_HOST) && m->version_minor == 1) {
            return fail(p, 400, "missing Host");
        }
        return 0;
    }
    if (memchr(auth.p, '@', auth.len) != NULL) {
        return fail(p, 400, "userinfo in request target");
    }
    if (p->seen & SEEN_HOST) {
        if (!str_eq_nocase(auth, m->host)) {
            return fail(p, 400, "Host does not match request target");
        }
        return 0;
    }
    if (m->version_minor == 1) {
        return fail(p, 400, "missing Host");
    }
    if (!host_valid(auth)) {
        return fail(p, 400, "invalid Host");
    }
    m->host = auth;
    return 0;
}

/* ---- llhttp callbacks ----------------------------------------------------------------------- */

static int on_message_begin(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    /* 15 entries (480 bytes) fit half an arena block, so the array comes from the warm block
     * instead of a one-off allocation per message (see arena_alloc). */
    headers_init(&p->msg.headers, &p->arena, 15);
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t len)
{
    blk_append(ll->data, at, len, false);
    return 0;
}

static int on_method_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    p->method_off = p->tok_off;
    p->method_len = p->blk_len - p->tok_off;
    p->tok_off = p->blk_len;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    blk_append(ll->data, at, len, false);
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    p->target_off = p->tok_off;
    p->target_len = p->blk_len - p->tok_off;
    p->tok_off = p->blk_len;
    return 0;
}

static int on_version_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    if (ll->http_major != 1 || ll->http_minor > 1) {
        return fail(p, 505, "unsupported HTTP version");
    }
    return 0;
}

/* A trailer field's bytes: kept apart from the head block, whose views the owner still holds
 * (growing the block would move them). */
static void tr_append(struct h1_parser *p, const char *at, size_t len, bool lower)
{
    if (p->cbs->on_trailer == NULL || len == 0) {
        return;
    }
    uint8_t *d = buf_reserve(&p->tr, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)at[i];
        d[i] = (uint8_t)(lower && c >= 'A' && c <= 'Z' ? c | 0x20 : c);
    }
    buf_commit(&p->tr, len);
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = ll->data;
    if (!p->in_body) {
        blk_append(p, at, len, true);
    } else {
        tr_append(p, at, len, true);
    }
    return 0;
}

/* Framing headers are checked as soon as their name is known, before llhttp's own (less
 * precise) checks on the value. */
static int on_header_field_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    if (p->in_body) {
        p->tr_name_len = (uint32_t)buf_len(&p->tr);
        return 0;
    }
    p->name_off = p->tok_off;
    p->name_len = p->blk_len - p->tok_off;
    p->tok_off = p->blk_len;
    p->cur_kind = classify(p->blk + p->name_off, p->name_len);
    switch (p->cur_kind) {
    case HK_CONTENT_LENGTH:
        if (p->seen & SEEN_TE) {
            return fail(p, 400, "Content-Length with Transfer-Encoding");
        }
        if (p->seen & SEEN_CL) {
            return fail(p, 400, "duplicate Content-Length");
        }
        p->seen |= SEEN_CL;
        break;
    case HK_TRANSFER_ENCODING:
        if (p->seen & SEEN_CL) {
            return fail(p, 400, "Content-Length with Transfer-Encoding");
        }
        p->seen |= SEEN_TE;
        break;
    case HK_HOST:
        if (p->kind == H1_REQUEST) {
            if (p->seen & SEEN_HOST) {
                return fail(p, 400, "duplicate Host");
            }
            p->seen |= SEEN_HOST;
        }
        break;
    default:
        break;
    }
    return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = ll->data;
    if (!p->in_body) {
        blk_append(p, at, len, false);
    } else {
        tr_append(p, at, len, false);
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    if (p->in_body) {
        if (p->cbs->on_trailer == NULL) {
            return 0;
        }
        const char *b = (const char *)buf_head(&p->tr);
        struct str name = {b, p->tr_name_len};
        struct str val =
            str_trim_ows((struct str){b + p->tr_name_len, buf_len(&p->tr) - p->tr_name_len});
        int rc = name.len > 0 ? p->cbs->on_trailer(p->ud, name, val) : 0;
        buf_consume(&p->tr, buf_len(&p->tr));
        p->tr_name_len = 0;
        return rc < 0 ? stopped(p) : 0;
    }
    struct str v = str_trim_ows(blk_str(p, p->tok_off, p->blk_len - p->tok_off));
    /* Trailing OWS is given back to the block; an empty value points at a literal. */
    p->blk_len = v.len ? (uint32_t)(v.p + v.len - p->blk) : p->tok_off;
    p->tok_off = p->blk_len;
    if (v.len == 0) {
        v = STR_LIT("");
    }

    switch (p->cur_kind) {
    case HK_CONTENT_LENGTH: {
        unsigned long long cl;
        if (v.len == 0) {
            return fail(p, 400, "empty Content-Length");
        }
        if (str_to_u64(v, &cl) < 0 || cl > INT64_MAX) {
            return fail(p, 400, "invalid Content-Length");
        }
        p->msg.content_length = (int64_t)cl;
        break;
    }
    case HK_TRANSFER_ENCODING:
        parse_te(p, v);
        break;
    case HK_HOST:
        if (p->kind == H1_REQUEST) {
            if (!host_valid(v)) {
                return fail(p, 400, "invalid Host");
            }
            p->host_off = v.len ? (uint32_t)(v.p - p->blk) : 0;
            p->host_len = (uint32_t)v.len;
        }
        break;
    case HK_EXPECT:
        if (str_eq_nocase(v, STR_LIT("100-continue"))) {
            p->msg.expect_continue = true;
        }
        break;
    default:
        break;
    }
    headers_add(&p->msg.headers, blk_str(p, p->name_off, p->name_len), v);
    return 0;
}

/* Decides the body framing from the validated headers. Returns the body kind or -1. */
static int decide_framing(struct h1_parser *p)
{
    struct h1_msg *m = &p->msg;
    bool has_te = p->seen & SEEN_TE;

    if (has_te) {
        if (p->seen & SEEN_CL) {
            return fail(p, 400, "Content-Length with Transfer-Encoding");
        }
        if (m->version_minor == 0) {
            return fail(p, 400, "Transfer-Encoding on HTTP/1.0");
        }
        if (p->te_unknown) {
            return fail(p, 501, "unsupported Transfer-Encoding");
        }
        /* Both parsers must read the same framing: llhttp 8.1.0 does not see `chunked<HTAB>`
         * as chunked, and would read that body to EOF. */
        if (p->te_bad || !p->te_chunked_last || !(p->ll.flags & F_CHUNKED)) {
            return fail(p, 400, "invalid Transfer-Encoding");
        }
        m->chunked = true;
    }
    if ((p->seen & SEEN_CL) && (!(p->ll.flags & F_CONTENT_LENGTH) ||
                                p->ll.content_length != (uint64_t)m->content_length)) {
        return fail(p, 400, "invalid Content-Length");
    }
    if (p->kind == H1_RESPONSE) {
        if (m->status < 200 || m->status == 204 || m->status == 304 || p->no_body_next) {
            return BODY_NONE;
        }
        if (m->chunked) {
            return BODY_CHUNKED;
        }
        if (m->content_length < 0) {
            return BODY_EOF;
        }
        return m->content_length > 0 ? BODY_CL : BODY_NONE;
    }
    if (p->ll.method == HTTP_CONNECT) {
        /* llhttp ends a CONNECT request at its head whatever it says: so do we. */
        return BODY_NONE;
    }
    if (m->chunked) {
        return BODY_CHUNKED;
    }
    return m->content_length > 0 ? BODY_CL : BODY_NONE;
}

static int on_headers_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    struct h1_msg *m = &p->msg;

    if (p->g != G_HEAD_END) {
        return fail(p, 400, "framing mismatch");
    }
    p->in_body = true;
    if (ll->http_major != 1 || ll->http_minor > 1) {
        /* A request line without a version (HTTP/0.9 style) never reaches
         * on_version_complete. */
        return fail(p, 505, "unsupported HTTP version");
    }
    m->version_minor = ll->http_minor;
    if (p->kind == H1_REQUEST) {
        m->method = blk_str(p, p->method_off, p->method_len);
        m->target = blk_str(p, p->target_off, p->target_len);
        m->host = blk_str(p, p->host_off, p->host_len);
        if (check_host(p, m) < 0) {
            return -1;
        }
        /* Expect means nothing before HTTP/1.1 (RFC 9110 10.1.1). */
        m->expect_continue = m->expect_continue && m->version_minor == 1;
    } else {
        m->status = ll->status_code;
        m->expect_continue = false;
        if (m->status < 100) {
            return fail(p, 502, "invalid status line");
        }
    }

    int body = decide_framing(p);
    if (body < 0) {
        return -1;
    }
    /* llhttp_should_keep_alive's rule, applied to our framing decision. */
    if (m->version_minor == 1) {
        m->keep_alive = !(ll->flags & F_CONNECTION_CLOSE);
    } else {
        m->keep_alive = (ll->flags & F_CONNECTION_KEEP_ALIVE) != 0;
    }
    if (body == BODY_EOF) {
        m->keep_alive = false;
    }
    m->upgrade = (ll->flags & F_UPGRADE) && (ll->flags & F_CONNECTION_UPGRADE) &&
                 (p->kind == H1_REQUEST || m->status == 101);

    if (p->kind == H1_RESPONSE && m->status < 200 && m->status != 101) {
        /* Interim response: skipped, counted, never shown to the owner. */
        if (++p->n_interim > H1_MAX_INTERIM) {
            return fail(p, 502, "too many interim responses");
        }
        if (!m->keep_alive) {
            return fail(p, 502, "interim response closes the connection");
        }
        p->is_interim = true;
        p->g = G_MSG_END;
        return 1;
    }

    switch (body) {
    case BODY_CL:
        p->g = G_BODY_CL;
        p->remaining = (uint64_t)m->content_length;
        break;
    case BODY_CHUNKED:
        p->g = G_CHUNK_SIZE;
        p->remaining = 0;
        break;
    case BODY_EOF:
        p->g = G_BODY_EOF;
        break;
    default:
        p->g = G_MSG_END;
        break;
    }
    if (p->cbs->on_head != NULL && p->cbs->on_head(p->ud, m) < 0) {
        return stopped(p);
    }
    /* 1 tells llhttp there is no body, whatever the headers say (HEAD, 204, 304, CONNECT). */
    return body == BODY_NONE ? 1 : 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
    struct h1_parser *p = ll->data;
    if (p->cbs->on_body != NULL && p->cbs->on_body(p->ud, (const uint8_t *)at, len) < 0) {
        return stopped(p);
    }
    return 0;
}

static int on_message_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;

    if (p->g != G_MSG_END) {
        return fail(p, 400, "framing mismatch");
    }
    p->ended = true;
    if (p->is_interim) {
        /* Skipped; the final response's head follows. */
        head_reset(p);
        p->g = G_IDLE;
        return HPE_PAUSED;
    }
    p->in_msg = false;
    p->no_body_next = false;
    /* After a 101 the bytes are another protocol's. */
    if (!p->msg.keep_alive || (p->kind == H1_RESPONSE && p->msg.status == 101)) {
        p->g = G_CLOSED;
    } else {
        p->g = G_DONE;
    }
    if (p->cbs->on_done != NULL && p->cbs->on_done(p->ud) < 0) {
        return stopped(p);
    }
    /* One message per feed: h1_parser_feed returns here (run_llhttp). */
    return HPE_PAUSED;
}

static const llhttp_settings_t ll_settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_method_complete = on_method_complete,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version_complete = on_version_complete,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- public API ----------------------------------------------------------------------------- */

size_t h1_parser_sizeof(void)
{
    return sizeof(struct h1_parser);
}

struct h1_parser *h1_parser_init(void *mem, enum h1_kind kind, size_t max_head_bytes,
                                 uint32_t max_headers, const struct h1_parser_cbs *cbs, void *ud)
{
    struct h1_parser *p = mem;
    memset(p, 0, sizeof(*p));
    p->kind = kind;
    p->cbs = cbs;
    p->ud = ud;
    /* The head block's offsets are 32-bit. */
    p->max_head_bytes = max_head_bytes < (1u << 30) ? max_head_bytes : (1u << 30);
    p->max_headers = max_headers;
    llhttp_init(&p->ll, kind == H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &ll_settings);
    p->ll.data = p;
    /* Off after init already; said again because our strictness depends on it. */
    llhttp_set_lenient_headers(&p->ll, 0);
    llhttp_set_lenient_chunked_length(&p->ll, 0);
    llhttp_set_lenient_keep_alive(&p->ll, 0);
    llhttp_set_lenient_transfer_encoding(&p->ll, 0);
    arena_init(&p->arena, H1_ARENA_BLOCK);
    head_reset(p);
    p->g = G_IDLE;
    return p;
}

struct h1_parser *h1_parser_new(enum h1_kind kind, size_t max_head_bytes, uint32_t max_headers,
                                const struct h1_parser_cbs *cbs, void *ud)
{
    return h1_parser_init(xmalloc(sizeof(struct h1_parser)), kind, max_head_bytes, max_headers, cbs,
                          ud);
}

void h1_parser_deinit(struct h1_parser *p)
{
    arena_deinit(&p->arena);
    buf_deinit(&p->tr);
    blk_free(p);
}

void h1_parser_use_caches(struct h1_parser *p, struct blk_cache *arena_blocks,
                          struct blk_cache *head_blocks)
{
    arena_deinit(&p->arena);
    blk_free(p);
    p->arena_cache = arena_blocks;
    p->head_cache = head_blocks;
    arena_start(p);
    head_reset(p);
}

void h1_parser_free(struct h1_parser *p)
{
    if (p == NULL) {
        return;
    }
    h1_parser_deinit(p);
    free(p);
}

void h1_parser_release(struct h1_parser *p)
{
    if (p->in_msg) {
        return;
    }
    arena_deinit(&p->arena);
    arena_start(p);
    buf_release(&p->tr);
    p->tr_name_len = 0;
    blk_free(p);
    head_reset(p);
}

/* Runs llhttp over b[0, n), which the guard accepted. Returns the bytes consumed (n, or fewer
 * when a message completed: llhttp paused in on_message_complete) or -1.
 *
 * After each message llhttp is reset rather than resumed: resuming would run llhttp's own
 * end-of-message step, whose keep-alive verdict trailer fields can flip (a `Connection: close`
 * or `Transfer-Encoding` trailer), after which llhttp 8.1.0 silently swallows what follows.
 * Keep-alive is decided once, from the head (msg.keep_alive), and trailers have no effect. */
static ssize_t run_llhttp(struct h1_parser *p, const uint8_t *b, size_t n)
{
    const char *s = (const char *)b;
    p->ended = false;
    enum llhttp_errno e = llhttp_execute(&p->ll, s, n);

    if (p->g == G_ERROR) {
        return -1; /* one of our callbacks failed */
    }
    if (e == HPE_OK) {
        if (p->g == G_HEAD_END || p->g == G_MSG_END) {
            /* The guard saw a boundary that llhttp did not. */
            return fail(p, 400, "framing mismatch");
        }
        return (ssize_t)n;
    }
    if (e == HPE_PAUSED && p->ended) {
        /* error_pos is just past the message's last byte. */
        size_t used = (size_t)(llhttp_get_error_pos(&p->ll) - s);
        llhttp_reset(&p->ll);
        if (used != n) {
            return fail(p, 400, "framing mismatch");
        }
        return (ssize_t)used;
    }
    return fail_llhttp(p, e);
}

ssize_t h1_parser_feed(struct h1_parser *p, const uint8_t *data, size_t len)
{
    if (p->g == G_ERROR) {
        return -1;
    }
    if (len == 0) {
        return 0;
    }
    if (p->g == G_CLOSED) {
        return fail(p, 400, "data after Connection: close");
    }
    if (p->g == G_DONE) {
        p->n_interim = 0;
        head_reset(p);
        p->g = G_IDLE;
    }

    size_t pos = 0;
    while (pos < len) {
        size_t n = 0;
        int grc = guard_scan(p, data + pos, len - pos, &n);
        if (n > 0) {
            ssize_t used = run_llhttp(p, data + pos, n);
            if (used < 0) {
                return -1;
            }
            pos += (size_t)used;
            if (p->g == G_DONE || p->g == G_CLOSED) {
                return (ssize_t)pos;
            }
        }
        if (grc < 0) {
            /* llhttp found nothing wrong before the guard's error: the guard's stands. */
            return fail(p, p->pend_status, p->pend_reason);
        }
        if (n == 0) {
            return fail(p, 400, "framing mismatch");
        }
    }
    return (ssize_t)pos;
}

int h1_parser_eof(struct h1_parser *p)
{
    if (p->g == G_ERROR) {
        return -1;
    }
    if (p->g == G_BODY_EOF) {
        /* The body ran to EOF: llhttp_finish completes it (on_message_complete). */
        p->g = G_MSG_END;
        p->ended = false;
        enum llhttp_errno e = llhttp_finish(&p->ll);
        if (p->g == G_ERROR) {
            return -1;
        }
        if (e != HPE_PAUSED || !p->ended) {
            return e == HPE_OK ? fail(p, 400, "framing mismatch") : fail_llhttp(p, e);
        }
        llhttp_resume(&p->ll);
        p->g = G_CLOSED;
        return 0;
    }
    if (p->in_msg) {
        return fail(p, 400, "truncated message");
    }
    p->g = G_CLOSED;
    return 0;
}

void h1_parser_expect_no_body(struct h1_parser *p)
{
    p->no_body_next = true;
}

bool h1_parser_in_message(const struct h1_parser *p)
{
    return p->in_msg;
}

int h1_parser_error(const struct h1_parser *p, const char **reason)
{
    if (reason != NULL) {
        *reason = p->err_reason;
    }
    return p->err_status;
}

/* ---- encoders ------------------------------------------------------------------------------- */

static char *put(char *d, const char *s, size_t n)
{
    if (n > 0) {
        memcpy(d, s, n);
    }
    return d + n;
}

/* Writes the header lines and the blank line into room counted by headers_wire_len(). */
static size_t headers_wire_len(const struct headers *h)
{
    size_t len = 2;
    for (uint32_t i = 0; i < h->n; i++) {
        len += h->v[i].name.len + h->v[i].value.len + 4;
    }
    return len;
}

static char *put_headers(char *d, const struct headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        d = put(d, h->v[i].name.p, h->v[i].name.len);
        d = put(d, ": ", 2);
        d = put(d, h->v[i].value.p, h->v[i].value.len);
        d = put(d, "\r\n", 2);
    }
    return put(d, "\r\n", 2);
}

void h1_encode_request_head(struct buf *out, struct str method, struct str target,
                            const struct headers *h)
{
    static const char version[] = " HTTP/1.1\r\n";
    size_t len = method.len + 1 + target.len + sizeof(version) - 1 + headers_wire_len(h);
    char *s = (char *)buf_reserve(out, len);
    char *d = put(s, method.p, method.len);
    *d++ = ' ';
    d = put(d, target.p, target.len);
    d = put(d, version, sizeof(version) - 1);
    d = put_headers(d, h);
    buf_commit(out, (size_t)(d - s));
}

void h1_encode_response_head(struct buf *out, int status, const struct headers *h)
{
    if (status < 100 || status > 999) {
        status = 500; /* never put a malformed status line on the wire */
    }
    const char *reason = h1_reason_phrase(status);
    size_t rlen = strlen(reason);
    size_t len = sizeof("HTTP/1.1 000 \r\n") - 1 + rlen + headers_wire_len(h);
    char *s = (char *)buf_reserve(out, len);
    char *d = put(s, "HTTP/1.1 ", 9);
    *d++ = (char)('0' + status / 100);
    *d++ = (char)('0' + status / 10 % 10);
    *d++ = (char)('0' + status % 10);
    *d++ = ' ';
    d = put(d, reason, rlen);
    d = put(d, "\r\n", 2);
    d = put_headers(d, h);
    buf_commit(out, (size_t)(d - s));
}

void h1_encode_chunk(struct buf *out, const uint8_t *p, size_t len)
{
    if (len == 0) {
        buf_append(out, "0\r\n\r\n", 5);
        return;
    }
    char hex[2 * sizeof(size_t)];
    size_t nd = 0;
    for (size_t v = len; v > 0; v >>= 4) {
        hex[sizeof(hex) - 1 - nd++] = "0123456789abcdef"[v & 0xf];
    }
    char *s = (char *)buf_reserve(out, nd + 2 + len + 2);
    char *d = put(s, hex + sizeof(hex) - nd, nd);
    d = put(d, "\r\n", 2);
    d = put(d, (const char *)p, len);
    d = put(d, "\r\n", 2);
    buf_commit(out, (size_t)(d - s));
}

void h1_encode_last_chunk(struct buf *out, const struct headers *trailers)
{
    if (trailers == NULL || trailers->n == 0) {
        buf_append(out, "0\r\n\r\n", 5);
        return;
    }
    buf_append(out, "0\r\n", 3);
    for (uint32_t i = 0; i < trailers->n; i++) {
        const struct header *f = &trailers->v[i];
        if (!h1_trailer_allowed(f->name)) {
            continue;
        }
        buf_append(out, f->name.p, f->name.len);
        buf_append(out, ": ", 2);
        buf_append(out, f->value.p, f->value.len);
        buf_append(out, "\r\n", 2);
    }
    buf_append(out, "\r\n", 2);
}

bool h1_trailer_allowed(struct str name)
{
    /* Framing, routing and connection-specific fields never ride in a trailer (RFC 9110 6.5.1;
     * RFC 9113 8.2.2 forbids the connection-specific ones on HTTP/2). */
    if (name.len == 0 || name.p[0] == ':') {
        return false;
    }
    return !(str_eq_lit(name, "connection") || str_eq_lit(name, "keep-alive") ||
             str_eq_lit(name, "proxy-connection") || str_eq_lit(name, "transfer-encoding") ||
             str_eq_lit(name, "upgrade") || str_eq_lit(name, "content-length") ||
             str_eq_lit(name, "host") || str_eq_lit(name, "te") || str_eq_lit(name, "trailer"));
}

/* clang-format off */
const char *h1_reason_phrase(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 305: return "Use Proxy";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 511: return "Network Authentication Required";
    default: return "Unknown";
    }
}
/* clang-format on */
