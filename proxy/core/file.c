#include "proxy/core/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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

int file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        return -errno;
    }
    size_t put = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || put != len || rename(tmp, path) != 0) {
        int e = errno != 0 ? errno : EIO;
        unlink(tmp);
        return -e;
    }
    return 0;
}
