/* fpath: config field paths and errors at them (see fpath.h). */
#include "proxy/config/fpath.h"

#include <stdio.h>

size_t fpath_vpush(struct fpath *f, const char *fmt, va_list ap)
{
    size_t old = f->len;
    if (f->len == 0 && fmt[0] == '.') {
        fmt++;
    }
    int n = vsnprintf(f->p + f->len, sizeof(f->p) - f->len, fmt, ap);
    if (n > 0) {
        f->len += (size_t)n;
        if (f->len >= sizeof(f->p)) {
            f->len = sizeof(f->p) - 1;
        }
    }
    return old;
}

size_t fpath_push(struct fpath *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t old = fpath_vpush(f, fmt, ap);
    va_end(ap);
    return old;
}

void fpath_pop(struct fpath *f, size_t mark)
{
    f->len = mark;
    f->p[mark] = '\0';
}

int fpath_vfail(struct fpath *f, struct err *err, const char *field, const char *fmt, va_list ap)
{
    char msg[ERR_MSG_MAX];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t mark = f->len;
    if (field != NULL) {
        fpath_push(f, field[0] == '[' ? "%s" : ".%s", field);
    }
    int rc = err_set(err, f->p, "%s", msg);
    fpath_pop(f, mark);
    return rc;
}
