/* xmalloc: allocation that never fails back to the caller. Running out of memory aborts the
 * process (Envoy's rule): the defence against hostile input is the limits checked before
 * allocating (header bytes, buffer watermarks, connection counts), not NULL checks. */
#pragma once

#include <stddef.h>

void *xmalloc(size_t len);
void *xcalloc(size_t n, size_t len);
void *xrealloc(void *p, size_t len);
char *xstrndup(const char *s, size_t len);
char *xstrdup(const char *s);
