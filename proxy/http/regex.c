/* regex: PCRE2-backed safe_regex (see regex.h). Compiled once per config into a `struct regex`
 * holding the pattern, a match context with the limits and the pattern's literal prefix; all
 * read-only afterwards. The per-match state (pcre2_match_data) is the calling thread's own
 * (one per thread, grown to the largest group count asked for, freed when the thread exits), so
 * a match allocates nothing and nothing mutable is shared between worker threads. */
#include "proxy/http/regex.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "proxy/core/arena.h"
#include "proxy/core/buf.h"
#include "proxy/core/xmalloc.h"

struct regex {
    pcre2_code *code;          /* owned */
    pcre2_match_context *mctx; /* owned: the limits; read-only after regex_new */
    uint32_t n_groups;
    bool jit;         /* JIT-compiled: matches go through pcre2_jit_match */
    uint32_t lit_len; /* REGEX_FULL: every match starts with lit[0..lit_len) */
    char *lit;        /* owned (NULL when lit_len is 0) */
};

/* ---- the thread's match data ----
 *
 * pcre2_match_data_create() is a malloc (and _free a free) of ~100 bytes: done around every
 * match, it cost about as much as the JIT match itself. Each thread keeps one instead, with as
 * many ovector pairs as the largest request so far. A pthread key frees it when the thread ends
 * (the main thread's lives until exit). Matching never re-enters itself on one thread, so one
 * per thread is enough. */

struct tls_md {
    pcre2_match_data *md;
    uint32_t pairs;
};

static _Thread_local struct tls_md tls_md;
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;

static void md_destroy(void *p)
{
    pcre2_match_data_free(p);
    tls_md.md = NULL;
    tls_md.pairs = 0;
}

static void md_key_init(void)
{
    md_key_ok = pthread_key_create(&md_key, md_destroy) == 0;
}

/* The calling thread's match data with at least `pairs` ovector pairs, or NULL (out of memory:
 * the match is then no match). */
static pcre2_match_data *thread_md(uint32_t pairs)
{
    if (tls_md.md != NULL && tls_md.pairs >= pairs) {
        return tls_md.md;
    }
    pthread_once(&md_once, md_key_init);
    /* A little headroom so that a few patterns with slightly different group counts do not
     * replace it one after another. */
    uint32_t want = pairs < 4 ? 4 : pairs;
    pcre2_match_data *md = pcre2_match_data_create(want, NULL);
    if (md == NULL) {
        return NULL;
    }
    if (md_key_ok && pthread_setspecific(md_key, md) != 0) {
        pcre2_match_data_free(md);
        return NULL;
    }
    pcre2_match_data_free(tls_md.md);
    tls_md.md = md;
    tls_md.pairs = pcre2_get_ovector_count(md);
    return md;
}

/* The literal text every full match of `pattern` must start with: the leading run of plain
 * ASCII characters, less the last one when a quantifier follows it ("ab*" -> "a"). Nothing for
 * a pattern with a `|` anywhere (a top-level alternation would make it wrong; one inside a
 * group or class is rare enough not to bother), or one starting with a group, class, escape or
 * anchor. A mismatch on this prefix is answered with a memcmp instead of a call into PCRE2,
 * which makes a table of regex routes with distinct literal heads cost about what prefix routes
 * do. Returns the prefix length. */
static size_t literal_prefix(const char *pattern)
{
    if (strchr(pattern, '|') != NULL) {
        return 0;
    }
    size_t n = 0;
    while (pattern[n] != '\0' && (unsigned char)pattern[n] < 0x80 &&
           strchr("\\^$.|?*+()[]{}", pattern[n]) == NULL) {
        n++;
    }
    if (n > 0 && pattern[n] != '\0' && strchr("?*+{", pattern[n]) != NULL) {
        n--;
    }
    return n;
}

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
    bool jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    struct regex *re = xcalloc(1, sizeof(*re));
    re->code = code;
    re->jit = jit;
    if (flags & REGEX_FULL) {
        size_t n = literal_prefix(pattern);
        if (n > 0) {
            re->lit = xmalloc(n);
            memcpy(re->lit, pattern, n);
            re->lit_len = (uint32_t)n;
        }
    }
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
    free(re->lit);
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
    /* pcre2_jit_match skips pcre2_match's option and argument checks (ours are always valid)
     * and runs the same JIT code under the same match context, so the limits still apply.
     * Skipping the UTF check is safe: the pattern was compiled with PCRE2_MATCH_INVALID_UTF. */
    if (re->jit) {
        return pcre2_jit_match(re->code, p, s.len, offset, 0, md, re->mctx);
    }
    return pcre2_match(re->code, p, s.len, offset, 0, md, re->mctx);
}

bool regex_match(const struct regex *re, struct str subject)
{
    if (re->lit_len > 0 &&
        (subject.len < re->lit_len || memcmp(subject.p, re->lit, re->lit_len) != 0)) {
        return false;
    }
    pcre2_match_data *md = thread_md(1);
    if (md == NULL) {
        return false;
    }
    /* 0 means a match whose groups did not fit the ovector: still a match. */
    return match_at(re, subject, 0, md) >= 0;
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
    pcre2_match_data *md = thread_md(re->n_groups + 1);
    if (md == NULL) {
        return 0;
    }
    /* The thread's match data may have more pairs than this pattern has groups. */
    uint32_t n_pairs = pcre2_get_ovector_count(md);
    if (n_pairs > re->n_groups + 1) {
        n_pairs = re->n_groups + 1;
    }
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
    if (count > 0) {
        if (pos < subject.len) {
            buf_append(&b, subject.p + pos, subject.len - pos);
        }
        *out = arena_strdup(a, (struct str){(const char *)buf_head(&b), buf_len(&b)});
    }
    buf_deinit(&b);
    return count;
}
