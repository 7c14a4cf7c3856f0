/* path_norm: the connection manager's request path normalization, Envoy's
 * ConnectionManagerUtility::maybeNormalizePath with the HCM fields
 *   path_with_escaped_slashes_action -> normalize_path -> merge_slashes
 * applied in that order to the path part of `:path` (up to the first '?'; the query is kept
 * byte for byte):
 *
 *  1. escaped slashes (unless KEEP_UNCHANGED): %2F/%2f become '/', %5C/%5c become '\'.
 *     REJECT_REQUEST rejects the request when there was one (before the other steps);
 *     UNESCAPE_AND_REDIRECT redirects to the final path when there was one.
 *  2. normalize_path: RFC 3986 section 6 as Envoy does it (its snapshot of Chromium's
 *     url_canon_path): a '/' is put first when missing; '\' becomes '/'; percent-escapes of
 *     unreserved characters (ALPHA DIGIT - . _ ~) are decoded, the others kept with their hex
 *     case as received (Envoy does not change it: "/%2F%2f" stays); a '%' that starts no valid
 *     escape is kept, as "%25" when decoding what follows would make it one ("%%32%65" ->
 *     "%252e", never "%2e"); bytes not allowed in a path (controls, space, " # < > ^ ` { | },
 *     DEL, >= 0x80) are percent-escaped in upper case; dot segments "." and ".." (also as %2e)
 *     are removed (RFC 3986 5.2.4), never above the root. A NUL byte, raw or as %00, fails: 400.
 *  3. merge_slashes: each run of '/' becomes one, except that a path of slashes only becomes
 *     "//" (Envoy's split-and-join keeps a leading and a trailing '/'). normalize_path alone
 *     keeps "//" everywhere, as Envoy's canonicalizer does.
 *
 * Pure functions: no allocation, no state; safe on any thread. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

/* HttpConnectionManager.PathWithEscapedSlashesAction (IMPLEMENTATION_SPECIFIC_DEFAULT is
 * KEEP_UNCHANGED, as in Envoy). */
enum path_slashes_action {
    PATH_SLASHES_KEEP = 0,
    PATH_SLASHES_REJECT,
    PATH_SLASHES_UNESCAPE_REDIRECT,
    PATH_SLASHES_UNESCAPE_FORWARD,
};

struct path_norm_opts {
    bool any;                /* path_norm_enabled(): one test on the request path */
    bool normalize;          /* normalize_path */
    bool merge_slashes;      /* merge_slashes */
    uint8_t escaped_slashes; /* enum path_slashes_action */
};

enum path_norm_result {
    PATH_NORM_CONTINUE, /* route and forward the output */
    PATH_NORM_REJECT,   /* 400 (downstream_rq_failed_path_normalization) */
    PATH_NORM_REDIRECT, /* 307 to the output (downstream_rq_redirected_with_normalized_path);
                         * a gRPC request gets the 400 instead, as in Envoy */
};

/* Whether any step is on (the request path skips this module otherwise). */
static inline bool path_norm_enabled(const struct path_norm_opts *o)
{
    return o->normalize || o->merge_slashes || o->escaped_slashes != PATH_SLASHES_KEEP;
}

/* The size of the buffer path_normalize() needs for `in`: the input's length, 2 more for each
 * byte that may be escaped or each '%', 1 for a leading '/', and room for step 1's copy of the
 * path part when it may unescape. */
size_t path_norm_bound(const struct path_norm_opts *o, struct str in);

/* Normalizes `in` (a :path in origin form, query included) into `out`, which holds
 * path_norm_bound(o, in) bytes and does not overlap `in`; the result's length goes to
 * *out_len (also on PATH_NORM_REJECT, where the output means nothing). */
enum path_norm_result path_normalize(const struct path_norm_opts *o, struct str in, char *out,
                                     size_t *out_len);
