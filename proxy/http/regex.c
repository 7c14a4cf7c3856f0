/* regex: PCRE2-backed safe_regex (see regex.h). Compiled once per config into a `struct regex`
 * holding the pattern and a match context with the limits; both are read-only afterwards. Each
 * match makes its own small pcre2_match_data (a malloc of about 100 bytes), so nothing mutable
 * is shared between worker threads. */
#include "proxy/http/regex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/xmalloc.h"

struct regex {
    pcre2_code *code;          /* owned */
    pcre2_match_context *mctx; /* owned: the limits; read-only after regex_new */
    uint32_t n_groups;
};

/* RE2-like defaults (see regex.h). */
#define COMPILE_OPTIONS                                                                            \
    (PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY | PCRE2_NEVER_BACKSLASH_C)

struct regex *regex_new(const char *pattern, unsigned flags, char *err, size_t err_len)
{
    uint32_t opts = COMPILE_OPTIONS;
    if (flags & REGEX_FULL) {
        /* Both anchors at compile time: the JIT supports them there (not at match time), and
         * PCRE2 backtracks into alternatives until a match reaches the end, so "a|ab" fully
         * matches "ab" as RE2::FullMatch does. */
        opts |= PCRE2_ANCHORED | PCRE2_ENDANCHORED;
    }
    int ec = 0;
    PCRE2_SIZE eoff = 0;
    pcre2_code *code =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &ec, &eoff, NULL);
    if (code == NULL) {
        PCRE2_UCHAR msg[160];
        if (pcre2_get_error_message(ec, msg, sizeof(msg)) < 0) {
            snprintf((char *)msg, sizeof(msg), "error %d", ec);
        }
        snprintf(err, err_len, "invalid regex: %s at offset %zu", (const char *)msg, (size_t)eoff);
        return NULL;
    }
    /* No JIT on this platform (or it is disabled) is not an error: pcre2_match() then
     * interprets, under the same limits. */
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    struct regex *re = xcalloc(1, sizeof(*re));
    re->code = code;
    re->mctx = pcre2_match_context_create(NULL);
    if (re->mctx == NULL) {
        pcre2_code_free(code);
        free(re);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    pcre2_set_match_limit(re->mctx, REGEX_MATCH_LIMIT);
    pcre2_set_depth_limit(re->mctx, REGEX_DEPTH_LIMIT);
    uint32_t n = 0;
    pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &n);
    re->n_groups = n;
    return re;
}

void regex_free(void *p)
{
    struct regex *re = p;
    if (re == NULL) {
        return;
    }
    pcre2_match_context_free(re->mctx);
    pcre2_code_free(re->code);
    free(re);
}

uint32_t regex_capture_count(const struct regex *re)
{
    return re->n_groups;
}

/* One match at `offset`. Returns the pcre2_match() result: >= 0 on a match (0: the ovector
 * was too small for every group), anything negative (no match, a limit, an error) is no
 * match. */
static int match_at(const struct regex *re, struct str s, size_t offset, pcre2_match_data *md)
{
    /* An empty subject may have a NULL pointer; PCRE2 wants a valid one. */
    PCRE2_SPTR p = (PCRE2_SPTR)(s.p != NULL ? s.p : "");
    return pcre2_match(re->code, p, s.len, offset, 0, md, re->mctx);
}

bool regex_match(const struct regex *re, struct str subject)
{
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    if (md == NULL) {
        return false;
    }
    int rc = match_at(re, subject, 0, md);
    pcre2_match_data_free(md);
    /* 0 means a match whose groups did not fit the one-pair ovector: still a match. */
    return rc >= 0;
}

int regex_check_rewrite(const struct regex *re, struct str rw, char *err, size_t err_len)
{
    for (size_t i = 0; i < rw.len; i++) {
        if (rw.p[i] != '\\') {
            continue;
        }
        if (i + 1 == rw.len) {
            snprintf(err, err_len, "a '\\' at the end (write '\\\\' for a backslash)");
            return -EINVAL;
        }
        char c = rw.p[++i];
        if (c == '\\') {
            continue;
        }
        if (c < '0' || c > '9') {
            snprintf(err, err_len, "'\\%c' is not a group reference (\\0-\\9) or '\\\\'", c);
            return -EINVAL;
        }
        if ((uint32_t)(c - '0') > re->n_groups) {
            snprintf(err, err_len, "'\\%c' refers to a group the pattern does not have (it has %u)",
                     c, re->n_groups);
            return -EINVAL;
        }
    }
    return 0;
}

/* Appends `rw` with group references expanded from the match in `ov` over `s`. */
static void expand(struct buf *out, struct str s, struct str rw, const PCRE2_SIZE *ov,
                   uint32_t n_pairs)
{
    for (size_t i = 0; i < rw.len; i++) {
        char c = rw.p[i];
        if (c != '\\' || i + 1 == rw.len) {
            buf_append(out, &c, 1);
            continue;
        }
        c = rw.p[++i];
        if (c == '\\') {
            buf_append(out, &c, 1);
            continue;
        }
        uint32_t g = (uint32_t)(c - '0');
        /* An unset group (an alternative not taken) expands to nothing, as in RE2. */
        if (g < n_pairs && ov[2 * g] != PCRE2_UNSET) {
            buf_append(out, s.p + ov[2 * g], ov[2 * g + 1] - ov[2 * g]);
        }
    }
}

/* Length of the UTF-8 character starting at s[i] (1 for a stray byte), bounded by the string:
 * after an empty match RE2 steps over one whole character. */
static size_t char_len(struct str s, size_t i)
{
    size_t n = 1;
    while (i + n < s.len && ((unsigned char)s.p[i + n] & 0xc0) == 0x80 && n < 4) {
        n++;
    }
    return n;
}

uint32_t regex_replace_all(const struct regex *re, struct str subject, struct str rewrite,
                           struct arena *a, struct str *out)
{
    *out = subject;
    pcre2_match_data *md = pcre2_match_data_create(re->n_groups + 1, NULL);
    if (md == NULL) {
        return 0;
    }
    uint32_t n_pairs = pcre2_get_ovector_count(md);
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    struct buf b;
    buf_init(&b);
    uint32_t count = 0;
    size_t pos = 0;             /* next byte of `subject` not yet copied or replaced */
    size_t last_end = SIZE_MAX; /* where the previous replaced match ended */
    while (pos <= subject.len) {
        if (match_at(re, subject, pos, md) < 0) {
            break;
        }
        size_t ms = ov[0], me = ov[1];
        if (ms < pos || me < ms) {
            break; /* \K can report a start before the search offset; stop rather than loop */
        }
        buf_append(&b, subject.p + pos, ms - pos);
        if (ms == me && ms == last_end) {
            /* An empty match where the previous match ended is not replaced: copy one
             * character and search on. */
            if (ms == subject.len) {
                pos = ms;
                break;
            }
            size_t n = char_len(subject, ms);
            buf_append(&b, subject.p + ms, n);
            pos = ms + n;
            continue;
        }
        expand(&b, subject, rewrite, ov, n_pairs);
        count++;
        last_end = me;
        if (me == ms) {
            /* An empty match: the character after it is kept, and the search goes on past it
             * (never finding the same empty match twice). */
            if (me == subject.len) {
                pos = me + 1;
                break;
            }
            size_t n = char_len(subject, me);
            buf_append(&b, subject.p + me, n);
            pos = me + n;
            continue;
        }
        pos = me;
    }
    pcre2_match_data_free(md);
    if (count > 0) {
        if (pos < subject.len) {
            buf_append(&b, subject.p + pos, subject.len - pos);
        }
        *out = arena_strdup(a, (struct str){(const char *)buf_head(&b), buf_len(&b)});
    }
    buf_deinit(&b);
    return count;
}
