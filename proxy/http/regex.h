/* regex: Envoy's `safe_regex` (RE2 syntax) on PCRE2, for route paths (RouteMatch.safe_regex),
 * string matchers (header and query parameter matchers) and RouteAction.regex_rewrite.
 *
 * Envoy uses RE2, which runs in linear time. PCRE2 backtracks, so every pattern here is
 * JIT-compiled and matched under a match limit (REGEX_MATCH_LIMIT) and a depth limit: a match
 * that hits a limit (catastrophic backtracking such as `(a+)+$` on a long input) ends early
 * and counts as no match, in microseconds rather than minutes. Options are chosen to follow RE2's
 * defaults: UTF-8 (invalid UTF-8 in the subject is tolerated, never an error), `$` only at the
 * very end (RE2 has no "before a final newline"), `.` does not match a newline, `\d \w \s`
 * are ASCII only, `\C` is refused. The JIT runs on the calling thread's stack (PCRE2's default
 * 32 KiB, no JIT stack is assigned); a pattern that needs more fails with a limit error, which
 * is no match like any other. Unlike RE2, PCRE2 accepts backreferences and lookaround; they
 * work here but would not load into Envoy.
 *
 * Ownership and threads: a `struct regex` is built on the main thread at config time and owned
 * by the config snapshot (build.c registers regex_free() as a snapshot cleanup). After that it
 * is read-only, and PCRE2 code and match contexts are safe to share between threads read-only.
 * The per-match state (pcre2_match_data) is the calling thread's own, made on its first match
 * and kept for the next ones (freed when the thread exits), so workers share no mutable state
 * and a match allocates nothing. JIT-compiled patterns are matched with pcre2_jit_match (the
 * same JIT code and limits, without pcre2_match's argument checks). A REGEX_FULL pattern that
 * starts with literal text first compares that text with memcmp, so a subject that cannot
 * match costs no call into PCRE2. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct arena;
struct regex;

/* Limits applied to every match (pcre2_set_match_limit / pcre2_set_depth_limit). The match
 * limit bounds the work one match may do: with the JIT, 100,000 is around a millisecond at the
 * very worst, and far above what a linear-time pattern needs on an 8 KiB header value. */
#define REGEX_MATCH_LIMIT 100000
#define REGEX_DEPTH_LIMIT 10000

/* Flags for regex_new(). */
enum {
    /* The whole subject must match (RE2::FullMatch, what Envoy's route and string matchers
     * do). Without it, regex_match() searches and regex_replace_all() replaces every match. */
    REGEX_FULL = 1u << 0,
};

/* Compiles `pattern` (NUL-terminated, RE2 syntax) with `flags` (REGEX_*) and JIT-compiles it
 * when the platform has a JIT (without one, matching falls back to the interpreter, under the
 * same limits). Returns the regex (owned by the caller; free with regex_free), or NULL with a
 * message such as "missing closing parenthesis at offset 3" in `err` (`err_len` bytes). */
struct regex *regex_new(const char *pattern, unsigned flags, char *err, size_t err_len);

/* Frees `re` (NULL is ignored). Takes `void *` so that it can be a config cleanup callback. */
void regex_free(void *re);

/* Does `re` match `subject` (the whole of it with REGEX_FULL, anywhere without)? A match that
 * hits a limit, or any other matching error, is no match. Thread: any. */
bool regex_match(const struct regex *re, struct str subject);

/* The number of capture groups in the pattern. */
uint32_t regex_capture_count(const struct regex *re);

/* Checks an RE2 rewrite string for regex_replace_all(): `\0`-`\9` refer to the whole match and
 * the capture groups, `\\` is a backslash; any other backslash, or a group the pattern does not
 * have, is an error. Returns 0, or -EINVAL with a message in `err`. */
int regex_check_rewrite(const struct regex *re, struct str rewrite, char *err, size_t err_len);

/* Replaces every non-overlapping match of `re` (compiled without REGEX_FULL) in `subject` with
 * `rewrite` (checked by regex_check_rewrite), as RE2::GlobalReplace does: after an empty match
 * the next character is copied and the search goes on, and an empty match right after the
 * previous match is skipped. Returns the number of replacements; when it is more than 0,
 * `*out` is the new string, allocated in `a` (NUL-terminated), else `*out` is `subject`. A limit
 * hit stops the replacing there (the rest is copied unchanged). Thread: any. */
uint32_t regex_replace_all(const struct regex *re, struct str subject, struct str rewrite,
                           struct arena *a, struct str *out);
