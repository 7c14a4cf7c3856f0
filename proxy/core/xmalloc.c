/* xmalloc: abort-on-OOM allocation wrappers (see xmalloc.h). */
#include "proxy/core/xmalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void oom(size_t len)
{
    fprintf(stderr, "remora: out of memory allocating %zu bytes\n", len);
    abort();
}

void *xmalloc(size_t len)
{
    void *p = malloc(len ? len : 1);
    if (p == NULL) {
        oom(len);
    }
    return p;
}

void *xcalloc(size_t n, size_t len)
{
    void *p = calloc(n ? n : 1, len ? len : 1);
    if (p == NULL) {
        oom(n * len);
    }
    return p;
}

void *xrealloc(void *p, size_t len)
{
    void *q = realloc(p, len ? len : 1);
    if (q == NULL) {
        oom(len);
    }
    return q;
}

char *xstrndup(const char *s, size_t len)
{
    char *p = xmalloc(len + 1);
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}
