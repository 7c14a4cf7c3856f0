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
 * Head bytes are copied once: the guard copies them into the head block and scans that copy,
 * lower-casing field names in place and adding each field to msg.headers as views into the
 * block; llhttp then parses the same copy, so the method and target are spans of the block and
 * llhttp's field callbacks only check framing headers (it reports no field spans in a head).
 * Body, chunk and trailer bytes are scanned and parsed where the owner fed them.
 *
 *   IDLE -> START line -> field lines -> HEAD_END --(on_headers_complete sets framing)-->
 *     none | BODY_CL | BODY_EOF | CHUNK_SIZE -> CHUNK_DATA -> ... -> trailer lines
 *     -> MSG_END --(on_message_complete: pause, llhttp reset)--> DONE (or CLOSED)
 *     --(next feed)--> IDLE          (an interim 1xx response goes from MSG_END back to IDLE)
 *
 * Owns: the llhttp state, a head block (the raw head, grown on demand up to max_head_bytes) and
 * a small arena for the header array. Both are reset at the
 * next message's first byte and can be given back with h1_parser_release(). */
#include "proxy/http/codec_h1.h"

#include <stdlib.h>
#include <string.h>

#include <llhttp.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
    bool interim_done; /* ... after an interim response: run_llhttp resets the head */
    bool head_clean;   /* nothing since head_reset: the next message needs no reset */
    bool seg_in_blk;   /* the segment guard_scan accepted is head bytes, copied into the block
                        * at seg_off: llhttp parses that copy */
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
    uint32_t seg_off;
    uint32_t line_off;  /* the head field line the guard is in: its name's start, */
    uint32_t val_off;   /* and its value's (block offsets) */
    uint32_t field_idx; /* head fields llhttp has reported (an index into msg.headers) */
    uint32_t tok_off;   /* the token llhttp is reporting: its span so far in the block */
    uint32_t tok_len;
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

/* Lower-case ASCII: only 'A'..'Z' change. */
/* clang-format off */
#define LC4(c) (uint8_t)((c) >= 'A' && (c) <= 'Z' ? (c) | 0x20 : (c))
#define LC16(c) LC4(c), LC4((c) + 1), LC4((c) + 2), LC4((c) + 3), LC4((c) + 4), LC4((c) + 5), \
    LC4((c) + 6), LC4((c) + 7), LC4((c) + 8), LC4((c) + 9), LC4((c) + 10), LC4((c) + 11), \
    LC4((c) + 12), LC4((c) + 13), LC4((c) + 14), LC4((c) + 15)
static const uint8_t lower_tab[256] = {
    LC16(0x00), LC16(0x10), LC16(0x20), LC16(0x30), LC16(0x40), LC16(0x50), LC16(0x60), LC16(0x70),
    LC16(0x80), LC16(0x90), LC16(0xa0), LC16(0xb0), LC16(0xc0), LC16(0xd0), LC16(0xe0), LC16(0xf0),
};
#undef LC16
#undef LC4
/* clang-format on */

/* Eight bytes at a time: a word holds b[i, i + 8) with b[i] in its low byte. The masks below set
 * the high bit of each byte that matches (the classic SWAR "has zero" and "has less than" tests).
 * A borrow can also flag a byte above a true match, never one below it, so the lowest flagged
 * byte is always a true match: that is all the scans ask for. Other byte orders scan byte by
 * byte. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && defined(__GNUC__)
#define H1_SWAR 1
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

static inline uint64_t load8(const uint8_t *b)
{
    uint64_t w;
    memcpy(&w, b, 8);
    return w;
}

/* Bytes below `c` (c <= 0x80). */
static inline uint64_t mask_lt(uint64_t w, uint8_t c)
{
    return (w - ONES * c) & ~w & HIGHS;
}

/* Bytes equal to `c`. */
static inline uint64_t mask_eq(uint64_t w, uint8_t c)
{
    uint64_t x = w ^ (ONES * c);
    return (x - ONES) & ~x & HIGHS;
}

/* Bytes 'A'..'Z', exactly (no borrow: each byte's low seven bits plus a constant stay within
 * the byte). */
static inline uint64_t mask_upper(uint64_t w)
{
    uint64_t h = w & ~HIGHS;
    uint64_t ge_a = h + ONES * (0x80 - 'A');
    uint64_t gt_z = h + ONES * (0x80 - 'Z' - 1);
    return ge_a & ~gt_z & ~w & HIGHS;
}

/* Index of the lowest flagged byte of a non-zero mask. */
static inline size_t first_flag(uint64_t m)
{
    return (size_t)__builtin_ctzll(m) >> 3;
}
#else
#define H1_SWAR 0
#endif

/* Sixteen bytes at a time where SSE2 is there (every x86-64): bit k of a mask is b[i + k]. */
#if defined(__SSE2__) && H1_SWAR
#define H1_SSE2 1
static inline __m128i load16(const uint8_t *b)
{
    return _mm_loadu_si128((const __m128i *)(const void *)b);
}

/* Bytes at or below `c`, unsigned. */
static inline __m128i v_le(__m128i x, char c)
{
    return _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(c)), x);
}

static inline unsigned v_mask(__m128i m)
{
    return (unsigned)_mm_movemask_epi8(m);
}
#else
#define H1_SSE2 0
#endif

/* Lower-cases the bytes of b[i, i + 16) flagged in `up`. */
static inline void lower_flagged(uint8_t *lw, size_t i, uint64_t up)
{
    while (up != 0) {
        lw[i + (size_t)__builtin_ctzll(up)] |= 0x20;
        up &= up - 1;
    }
}

/* Skips start-line or field-value bytes (text, ':', SP, HTAB) in b[i, end) and returns the
 * index of the first other byte (a control: CR ends the line), or `end`. */
static size_t skip_text(const uint8_t *b, size_t i, size_t end)
{
#if H1_SSE2
    while (end - i >= 16) {
        __m128i x = load16(b + i);
        unsigned m = v_mask(_mm_or_si128(v_le(x, 0x1f), _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f))));
        if (m == 0) {
            i += 16;
            continue;
        }
        i += (size_t)__builtin_ctz(m);
        if (b[i] != '\t') {
            return i;
        }
        i++; /* HTAB is text in a value: go on after it */
    }
#endif
#if H1_SWAR
    while (end - i >= 8) {
        uint64_t w = load8(b + i);
        uint64_t m = mask_lt(w, 0x20) | mask_eq(w, 0x7f);
        if (m == 0) {
            i += 8;
            continue;
        }
        i += first_flag(m);
        if (b[i] != '\t') {
            return i;
        }
        i++; /* HTAB is text in a value: go on after it */
    }
#endif
    while (i < end && byte_class[b[i]] <= C_WS) {
        i++;
    }
    return i;
}

/* Skips field-name bytes (C_TEXT) in b[i, end) and returns the index of the first other byte,
 * or `end`. With `lw` (the same bytes, writable) upper-case ASCII is lower-cased in place. */
static size_t skip_name(const uint8_t *b, uint8_t *lw, size_t i, size_t end)
{
#if H1_SSE2
    while (end - i >= 16) {
        __m128i x = load16(b + i);
        unsigned m =
            v_mask(_mm_or_si128(_mm_or_si128(v_le(x, 0x20), _mm_cmpeq_epi8(x, _mm_set1_epi8(':'))),
                                _mm_cmpeq_epi8(x, _mm_set1_epi8(0x7f))));
        /* 'A'..'Z': signed compares, so obs-text (negative) is never upper case. */
        unsigned up = v_mask(_mm_and_si128(_mm_cmpgt_epi8(x, _mm_set1_epi8('A' - 1)),
                                           _mm_cmplt_epi8(x, _mm_set1_epi8('Z' + 1))));
        size_t k = m ? (size_t)__builtin_ctz(m) : 16;
        up &= (1u << k) - 1; /* only the name's bytes (k <= 16) */
        if (up != 0 && lw != NULL) {
            lower_flagged(lw, i, up);
        }
        i += k;
        if (k < 16) {
            return i;
        }
    }
#endif
#if H1_SWAR
    while (end - i >= 8) {
        uint64_t w = load8(b + i);
        uint64_t m = mask_lt(w, 0x21) | mask_eq(w, ':') | mask_eq(w, 0x7f);
        uint64_t up = mask_upper(w);
        size_t k = m ? first_flag(m) : 8;
        if (k < 8) {
            up &= (1ull << (8 * k)) - 1; /* only the name's bytes */
        }
        if (up != 0 && lw != NULL) {
            w |= up >> 2; /* 0x80 >> 2 is the case bit */
            memcpy(lw + i, &w, 8);
        }
        i += k;
        if (k < 8) {
            return i;
        }
    }
#endif
    while (i < end && byte_class[b[i]] == C_TEXT) {
        if (lw != NULL) {
            lw[i] = lower_tab[b[i]];
        }
        i++;
    }
    return i;
}

/* Host header bytes: RFC 3986 reg-name, IPv4, IP-literal and port characters. */
/* clang-format off */
static const bool host_chars[256] = {
    ['-'] = true, ['.'] = true, ['_'] = true, ['~'] = true, ['%'] = true, ['!'] = true,
    ['$'] = true, ['&'] = true, ['\''] = true, ['('] = true, [')'] = true, ['*'] = true,
    ['+'] = true, [','] = true, [';'] = true, ['='] = true, [':'] = true, ['['] = true,
    [']'] = true,
    ['0'] = true, ['1'] = true, ['2'] = true, ['3'] = true, ['4'] = true, ['5'] = true,
    ['6'] = true, ['7'] = true, ['8'] = true, ['9'] = true,
    ['A'] = true, ['B'] = true, ['C'] = true, ['D'] = true, ['E'] = true, ['F'] = true,
    ['G'] = true, ['H'] = true, ['I'] = true, ['J'] = true, ['K'] = true, ['L'] = true,
    ['M'] = true, ['N'] = true, ['O'] = true, ['P'] = true, ['Q'] = true, ['R'] = true,
    ['S'] = true, ['T'] = true, ['U'] = true, ['V'] = true, ['W'] = true, ['X'] = true,
    ['Y'] = true, ['Z'] = true,
    ['a'] = true, ['b'] = true, ['c'] = true, ['d'] = true, ['e'] = true, ['f'] = true,
    ['g'] = true, ['h'] = true, ['i'] = true, ['j'] = true, ['k'] = true, ['l'] = true,
    ['m'] = true, ['n'] = true, ['o'] = true, ['p'] = true, ['q'] = true, ['r'] = true,
    ['s'] = true, ['t'] = true, ['u'] = true, ['v'] = true, ['w'] = true, ['x'] = true,
    ['y'] = true, ['z'] = true,
};
/* clang-format on */

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
    p->tok_len = 0;
    p->line_off = p->val_off = 0;
    p->field_idx = 0;
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
    p->head_clean = true;
}

/* ---- head block ----------------------------------------------------------------------------- */

/* Makes room for `len` more bytes. The block moves, so header views are rebased; the other
 * views are kept as offsets until the head completes. Total size stays under twice
 * max_head_bytes: it grows only when the guard has scanned all it holds and the head goes on. */
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

/* A span of the token llhttp is reporting, a view into the block (llhttp parses the block's
 * copy of the head). A token split across feeds is contiguous there. */
static inline void tok_span(struct h1_parser *p, const char *at, size_t len)
{
    if (p->tok_len == 0) {
        p->tok_off = (uint32_t)(at - p->blk);
    }
    p->tok_len += (uint32_t)len;
}

static struct str blk_str(const struct h1_parser *p, uint32_t off, uint32_t len)
{
    return (struct str){len ? p->blk + off : "", len};
}

/* ---- the guard ------------------------------------------------------------------------------ */

/* The guard builds the head's header list as it scans the block (so llhttp needs no span
 * callbacks for fields): a field is added when its colon is seen, with its value set when its
 * CR is. llhttp's field callbacks then find field k at msg.headers.v[k] (on_header_field_complete):
 * both parse the same bytes, and where llhttp would read a field differently (a byte that is
 * not a token character, whitespace before the colon) it fails first. */
static void head_add_name(struct h1_parser *p, size_t off, size_t len)
{
    struct headers *h = &p->msg.headers;
    if (h->cap == 0) {
        /* 15 entries (480 bytes) fit half an arena block, so the array comes from the warm
         * block instead of a one-off allocation per message (see arena_alloc). */
        headers_init(h, &p->arena, 15);
    }
    headers_add(h, (struct str){p->blk + off, len}, STR_LIT(""));
}

/* The last added field's value: b[s, e) less leading and trailing OWS. */
static void head_set_value(struct h1_parser *p, size_t s, size_t e)
{
    const char *b = p->blk;
    while (s < e && (b[s] == ' ' || b[s] == '\t')) {
        s++;
    }
    while (e > s && (b[e - 1] == ' ' || b[e - 1] == '\t')) {
        e--;
    }
    if (e > s) {
        struct headers *h = &p->msg.headers;
        h->v[h->n - 1].value = (struct str){b + s, e - s};
    }
}

static int fail_line(struct h1_parser *p, const char *head_reason, const char *trailer_reason)
{
    return gfail(p, 400, p->in_trailers ? trailer_reason : head_reason);
}

/* Scans head or trailer lines in b[*pi, end). Stops at `end`, at the end of the section
 * (state G_HEAD_END or G_MSG_END) or at an error (-1, *pi at the offending byte). With `lw` (b
 * itself, writable: the head block) field names are lower-cased in place. */
static int scan_lines(struct h1_parser *p, const uint8_t *b, uint8_t *lw, size_t *pi, size_t end)
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
            p->line_off = (uint32_t)i;
            {
                /* Fast path: a whole, well-formed field line goes through at once. Anything
                 * else (a line cut by `end`, a fault) is scanned again from G_NAME. */
                size_t j = skip_name(b, lw, i, end);
                if (j < end && b[j] == ':') {
                    size_t k = skip_text(b, j + 1, end);
                    if (end - k >= 2 && b[k] == '\r' && b[k + 1] == '\n') {
                        if (lw != NULL) {
                            head_add_name(p, i, j - i);
                            head_set_value(p, j + 1, k);
                        }
                        i = k + 2;
                        p->g = G_LINE_BEGIN;
                    }
                }
            }
            break;
        case G_NAME:
            i = skip_name(b, lw, i, end);
            if (i == end) {
                break;
            }
            switch (byte_class[b[i]]) {
            case C_COLON:
                if (lw != NULL) {
                    head_add_name(p, p->line_off, i - p->line_off);
                }
                p->g = G_VALUE;
                i++;
                p->val_off = (uint32_t)i;
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
                if (lw != NULL) {
                    head_set_value(p, p->val_off, i);
                }
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

/* The section is out of budget with more bytes waiting. */
static int section_too_large(struct h1_parser *p)
{
    if (p->in_trailers) {
        return gfail(p, 431, "trailer section too large");
    }
    if (p->kind == H1_REQUEST && p->g <= G_START_CR) {
        return gfail(p, 414, "request line too long");
    }
    return gfail(p, 431, "header section too large");
}

/* Scans a head section, bounding it by max_head_bytes. The bytes are copied into the head block
 * (as much as it holds, growing it only when the head needs more) and scanned there: names are
 * lower-cased in place, and llhttp then parses the block's copy (run_llhttp), so its spans are
 * views into the block and nothing is copied twice. The block holds the whole raw head from
 * its first byte: block offset == section offset. */
static int scan_head(struct h1_parser *p, const uint8_t *b, size_t n, size_t *pi)
{
    size_t i = *pi;
    int rc = 0;

    while (i < n) {
        size_t left = p->max_head_bytes - p->section_bytes;
        if (left == 0) {
            rc = section_too_large(p); /* after the bytes scanned so far */
            break;
        }
        if (p->blk_len == p->blk_cap) {
            blk_grow(p, 1);
        }
        size_t room = p->blk_cap - p->blk_len;
        size_t take = n - i;
        take = take < left ? take : left;
        take = take < room ? take : room;
        uint8_t *blk = (uint8_t *)p->blk;
        memcpy(blk + p->blk_len, b + i, take);
        size_t j = p->blk_len;
        rc = scan_lines(p, blk, blk, &j, p->blk_len + take);
        size_t used = j - p->blk_len;
        p->blk_len = (uint32_t)j;
        p->section_bytes += used;
        i += used;
        if (rc < 0 || p->g > G_BLANK_CR) {
            break;
        }
    }
    *pi = i;
    return rc;
}

/* Scans a trailer section in place, bounding it by max_head_bytes. */
static int scan_trailers(struct h1_parser *p, const uint8_t *b, size_t n, size_t *pi)
{
    size_t start = *pi;
    size_t left = p->max_head_bytes - p->section_bytes;
    size_t end = n - start > left ? start + left : n;

    int rc = scan_lines(p, b, NULL, pi, end);
    p->section_bytes += *pi - start;
    if (rc < 0) {
        return rc;
    }
    if (p->g <= G_BLANK_CR && end < n) {
        return section_too_large(p);
    }
    return 0;
}

/* Scans chunk-size lines and the CRLF after chunk data; chunk data itself is skipped by
 * count, not looked at. The chunk state lives in locals while it runs (a body of small chunks
 * is mostly state changes) and goes back to the parser when it stops. */
static int scan_chunked(struct h1_parser *p, const uint8_t *b, size_t n, size_t *pi)
{
    size_t i = *pi;
    int rc = 0;
    enum g_state g = p->g;
    uint64_t remaining = p->remaining;
    uint32_t line = p->chunk_line;
    uint8_t digits = p->chunk_digits;
    bool has_digit = p->chunk_has_digit;

    while (i < n) {
        uint8_t c = b[i];
        switch (g) {
        case G_CHUNK_SIZE: {
            int h = hex_val(c);
            if (h >= 0) {
                if (digits > 0 || h > 0) {
                    if (++digits > H1_CHUNK_DIGITS_MAX) {
                        rc = gfail(p, 400, "invalid chunk size");
                        goto out;
                    }
                }
                remaining = remaining * 16 + (uint64_t)h;
                has_digit = true;
            } else if (has_digit && c == ';') {
                g = G_CHUNK_EXT;
            } else if (has_digit && c == '\r') {
                g = G_CHUNK_SIZE_CR;
            } else {
                rc = gfail(p, 400, c == '\n' ? "bare LF in chunk line" : "invalid chunk size");
                goto out;
            }
            if (++line > H1_CHUNK_LINE_MAX) {
                rc = gfail(p, 400, "chunk line too long");
                goto out;
            }
            i++;
            break;
        }
        case G_CHUNK_EXT: {
            size_t lim = n - i > H1_CHUNK_LINE_MAX - line ? i + (H1_CHUNK_LINE_MAX - line) : n;
            size_t s = i;
            while (i < lim && byte_class[b[i]] <= C_WS) {
                i++;
            }
            line += (uint32_t)(i - s);
            if (i == n) {
                break;
            }
            if (i == lim) {
                rc = gfail(p, 400, "chunk line too long");
                goto out;
            }
            if (b[i] == '\r') {
                g = G_CHUNK_SIZE_CR;
                line++;
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
            if (remaining == 0) {
                /* Last chunk: the trailer section follows, bounded like a head. */
                p->chunk_line = line;
                p->chunk_digits = digits;
                p->chunk_has_digit = has_digit;
                p->remaining = 0;
                p->in_trailers = true;
                p->section_bytes = 0;
                p->n_fields = 0;
                p->g = G_LINE_BEGIN;
                *pi = i;
                return scan_trailers(p, b, n, pi);
            }
            g = G_CHUNK_DATA;
            break;
        case G_CHUNK_DATA: {
            size_t take = n - i < remaining ? n - i : (size_t)remaining;
            i += take;
            remaining -= take;
            if (remaining == 0) {
                g = G_CHUNK_DATA_CR;
            }
            break;
        }
        case G_CHUNK_DATA_CR:
            if (c != '\r') {
                rc = gfail(p, 400, "chunk data not followed by CRLF");
                goto out;
            }
            i++;
            g = G_CHUNK_DATA_LF;
            break;
        case G_CHUNK_DATA_LF:
            if (c != '\n') {
                rc = gfail(p, 400, "chunk data not followed by CRLF");
                goto out;
            }
            i++;
            g = G_CHUNK_SIZE;
            line = 0;
            digits = 0;
            has_digit = false;
            break;
        default:
            goto out;
        }
    }
out:
    p->g = g;
    p->remaining = remaining;
    p->chunk_line = line;
    p->chunk_digits = digits;
    p->chunk_has_digit = has_digit;
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

    p->head_clean = false;
    p->seg_in_blk = p->g <= G_BLANK_CR && !p->in_trailers;
    p->seg_off = p->blk_len;
    while (i < n && rc == 0) {
        if (p->g <= G_BLANK_CR) {
            rc = p->in_trailers ? scan_trailers(p, b, n, &i) : scan_head(p, b, n, &i);
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
        if (!host_chars[(unsigned char)h.p[i]]) {
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

static void ll_settings(struct h1_parser *p, bool body);

static int on_message_begin(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    if (p->msg.headers.cap == 0) {
        headers_init(&p->msg.headers, &p->arena, 15); /* a head without fields */
    }
    return 0;
}

static int on_method(llhttp_t *ll, const char *at, size_t len)
{
    tok_span(ll->data, at, len);
    return 0;
}

static int on_method_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    p->method_off = p->tok_off;
    p->method_len = p->tok_len;
    p->tok_len = 0;
    return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
    tok_span(ll->data, at, len);
    return 0;
}

static int on_url_complete(llhttp_t *ll)
{
    struct h1_parser *p = ll->data;
    p->target_off = p->tok_off;
    p->target_len = p->tok_len;
    p->tok_len = 0;
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

/* Trailer fields only: the head's are in msg.headers already (head_add_name). */
static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
    tr_append(ll->data, at, len, true);
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
    if (p->field_idx >= p->msg.headers.n) {
        return fail(p, 400, "framing mismatch"); /* cannot happen: the guard is ahead */
    }
    struct str name = p->msg.headers.v[p->field_idx].name;
    p->cur_kind = classify(name.p, name.len);
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
    tr_append(ll->data, at, len, false);
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
    /* OWS-trimmed by the guard; an empty value points at a literal (blk_grow rebases only
     * non-empty ones). */
    struct str v = p->msg.headers.v[p->field_idx++].value;

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
    ll_settings(p, true);
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
        /* Skipped; the final response's head follows. llhttp is still parsing the block, so
         * run_llhttp resets the head when it returns. */
        p->interim_done = true;
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

/* Two sets: in a head the guard has the fields already, so llhttp reports their spans only in
 * a trailer section (on_headers_complete switches to the body set, run_llhttp back after each
 * message). */
static const llhttp_settings_t ll_head_settings = {
    .on_message_begin = on_message_begin,
    .on_method = on_method,
    .on_method_complete = on_method_complete,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_version_complete = on_version_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static const llhttp_settings_t ll_body_settings = {
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

static void ll_settings(struct h1_parser *p, bool body)
{
    /* llhttp keeps the pointer as void * and reads it only through const */
    p->ll.settings = (void *)(uintptr_t)(body ? &ll_body_settings : &ll_head_settings);
}

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
    llhttp_init(&p->ll, kind == H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &ll_head_settings);
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
    const char *s = p->seg_in_blk ? p->blk + p->seg_off : (const char *)b;
    p->ended = false;
    p->interim_done = false;
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
        ll_settings(p, false);
        if (p->interim_done) {
            head_reset(p);
            p->g = G_IDLE;
        }
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
        if (!p->head_clean) { /* h1_parser_release did it already */
            head_reset(p);
        }
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

/* The bytes of the header lines and the blank line. */
static size_t headers_wire_len(const struct headers *h)
{
    size_t len = 2;
    for (uint32_t i = 0; i < h->n; i++) {
        len += h->v[i].name.len + h->v[i].value.len + 4;
    }
    return len;
}

/* Writes the header lines and the blank line into room counted by headers_wire_len(). */
static char *put_headers(char *d, const struct headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        d = mem_put(d, h->v[i].name.p, h->v[i].name.len);
        d = mem_put(d, ": ", 2);
        d = mem_put(d, h->v[i].value.p, h->v[i].value.len);
        d = mem_put(d, "\r\n", 2);
    }
    return mem_put(d, "\r\n", 2);
}

void h1_encode_request_head(struct buf *out, struct str method, struct str target,
                            const struct headers *h)
{
    static const char version[] = " HTTP/1.1\r\n";
    size_t len = method.len + 1 + target.len + sizeof(version) - 1 + headers_wire_len(h);
    char *s = (char *)buf_reserve(out, len);
    char *d = mem_put(s, method.p, method.len);
    *d++ = ' ';
    d = mem_put(d, target.p, target.len);
    d = mem_put(d, version, sizeof(version) - 1);
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
    char *d = mem_put(s, "HTTP/1.1 ", 9);
    *d++ = (char)('0' + status / 100);
    *d++ = (char)('0' + status / 10 % 10);
    *d++ = (char)('0' + status % 10);
    *d++ = ' ';
    d = mem_put(d, reason, rlen);
    d = mem_put(d, "\r\n", 2);
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
    memcpy(s, hex + sizeof(hex) - nd, nd); /* nd <= 16: not through mem_put(), whose large-copy
                                            * branch GCC would flag for this array */
    char *d = mem_put(s + nd, "\r\n", 2);
    d = mem_put(d, (const char *)p, len);
    d = mem_put(d, "\r\n", 2);
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
