/* err: field-path error messages (see err.h). */
#include "proxy/core/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int err_set(struct err *e, const char *path, const char *fmt, ...)
{
    size_t off = 0;
    if (path != NULL && path[0] != '\0') {
        int n = snprintf(e->msg, sizeof(e->msg), "%s: ", path);
        off = n > 0 && (size_t)n < sizeof(e->msg) ? (size_t)n : sizeof(e->msg) - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg + off, sizeof(e->msg) - off, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

void err_join(struct err *all, const struct err *e)
{
    size_t used = strlen(all->msg);
    const char *parts[2] = {used > 0 ? "; " : "", e->msg};
    for (int k = 0; k < 2; k++) {
        size_t len = strnlen(parts[k], sizeof(all->msg) - 1 - used);
        memcpy(all->msg + used, parts[k], len);
        used += len;
    }
    all->msg[used] = '\0';
}
