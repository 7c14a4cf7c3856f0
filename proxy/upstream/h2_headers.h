/* h2_headers: HTTP/1.1-style field lists to HTTP/2 header blocks for the upstream HTTP/2 codec
 * (upstream_h2.c): the request pseudo-header fields from the method, path and Host, lower-case
 * names, and no connection-specific field (RFC 9113 8.2.2: Connection and the fields it names,
 * Keep-Alive, Proxy-Connection, Transfer-Encoding, Upgrade; TE except "te: trailers"). A cookie
 * is split into one field per crumb (RFC 9113 8.2.3), within H2_COOKIE_SPLIT_MAX_FIELDS. Pure
 * functions: nothing here allocates outside the arena given, or touches the loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <nghttp2/nghttp2.h>

#include "proxy/core/arena.h"
#include "proxy/core/str.h"
#include "proxy/http/headers.h"

/* A cookie is split into crumbs only while the whole block then has at most this many fields
 * (Envoy's default max_request_headers_count): a request the downstream side accepted is never
 * made into one that an upstream with the same default refuses for its field count (hostile-
 * inputs case 36 counts crumbs as fields). Past it the cookie goes as one field. */
#define H2_COOKIE_SPLIT_MAX_FIELDS 100

/* True for the fields HTTP/2 forbids (connection-specific) and for pseudo-header names: they
 * are never copied into an HTTP/2 block. `te` is not one of them: see h2_headers_request. */
bool h2_headers_forbidden(struct str name);

/* Builds the request block for `method` and `path` from `h` into a new array in `a`: :method,
 * :scheme (`scheme`), :authority (Host's value; none without Host), :path, then the fields of
 * `h` minus Host, the forbidden ones, any field the Connection header names, and TE unless its
 * value lists "trailers" (sent as "te: trailers"). Names are lower-cased (a configured header
 * edit may be mixed case). A cookie field becomes one field per non-empty crumb ("; "
 * separated, bytes kept: joining them again with "; " gives the value back when it had no
 * empty crumb) unless that would make more than H2_COOKIE_SPLIT_MAX_FIELDS fields. The nv
 * entries borrow `h`'s bytes and `a`'s. Sets `*n` to the entry count and returns the array. */
nghttp2_nv *h2_headers_request(struct arena *a, struct str method, struct str scheme,
                               struct str path, const struct headers *h, size_t *n);

/* Builds a trailer block from `t`: the fields h1_trailer_allowed() accepts (codec_h1.h),
 * lower-cased. Returns the array (in `a`) and its count in `*n` (0: nothing to send). */
nghttp2_nv *h2_headers_trailers(struct arena *a, const struct headers *t, size_t *n);
