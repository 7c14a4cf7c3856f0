#include "proxy/core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "proxy/core/xmalloc.h"

char *file_read(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    errno = 0;
    size_t cap = 4096, n = 0;
    char *p = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= max + 1) {
                break;
            }
            cap *= 2;
            p = xrealloc(p, cap + 1);
        }
        size_t got = fread(p + n, 1, cap - n, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    int rerr = ferror(f) ? (errno != 0 ? errno : EIO) : 0;
    fclose(f);
    if (rerr == 0 && n > max) {
        rerr = EFBIG;
    }
    if (rerr != 0) {
        free(p);
        errno = rerr;
        return NULL;
    }
    p[n] = '\0';
    *len = n;
    return p;
}
