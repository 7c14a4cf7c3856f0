/* header_edit: applies configured header edits (config.h's `struct header_add` and `struct
 * header_edits`: Envoy's request/response_headers_to_add and _to_remove, and the
 * header_mutation filter's appends) to a header list. Pure functions over the list: values are
 * borrowed from the config snapshot, which outlives every stream using it; the list grows in its
 * own arena. Thread: any. */
#pragma once

struct headers;
struct header_add;
struct header_edits;

/* Applies one addition with its append action: append (Envoy's default), add only when absent,
 * or overwrite every header of that name. */
void header_add_apply(struct headers *h, const struct header_add *a);

/* Applies one level's edits: every removal first, then the additions in order (Envoy's order
 * within a level). */
void header_edits_apply(struct headers *h, const struct header_edits *e);
