/* fpath: the field path a config builder is at ("static_resources.clusters[2].name"), and the
 * error reported there. One implementation for the bootstrap compiler (build.c) and the
 * health-check compiler (build_health.c), so their messages have one format. */
#pragma once

#include <stdarg.h>
#include <stddef.h>

#include "proxy/core/err.h"

#define FPATH_CAP 768

struct fpath {
    char p[FPATH_CAP]; /* NUL-terminated */
    size_t len;
};

/* Appends a segment (".name" or "[i]"; a leading '.' is dropped at the start of an empty path).
 * Returns the previous length, for fpath_pop. A path longer than the buffer is cut, never
 * overflowed. */
size_t fpath_vpush(struct fpath *f, const char *fmt, va_list ap);
size_t fpath_push(struct fpath *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Returns to the length `mark` that fpath_push returned. */
void fpath_pop(struct fpath *f, size_t mark);

/* Sets `err` to "<path>[.field]: message" and returns -EINVAL. `field` may be NULL (the current
 * path), "name" (appended as ".name") or "[i]". */
int fpath_vfail(struct fpath *f, struct err *err, const char *field, const char *fmt, va_list ap);
