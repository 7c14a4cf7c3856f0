#include "proxy/core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
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
    return file_write_atomic_mode(path, data, len, 0666);
}

int file_write_atomic_mode(const char *path, const void *data, size_t len, unsigned mode)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    unlink(tmp); /* a leftover of a crash keeps its own mode: start afresh */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) {
        return -errno;
    }
    const char *p = data;
    size_t left = len;
    int e = 0;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            e = n < 0 ? errno : EIO;
            break;
        }
        p += n;
        left -= (size_t)n;
    }
    if (close(fd) != 0 && e == 0) {
        e = errno;
    }
    if (e == 0 && rename(tmp, path) != 0) {
        e = errno;
    }
    if (e != 0) {
        unlink(tmp);
        return -e;
    }
    return 0;
}
