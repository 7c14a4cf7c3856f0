/* err: a config or input error message with its field path, such as
 * "static_resources.clusters[1].lb_polcy: unknown field". The text becomes the validate-mode
 * output and an xDS NACK's error_detail, so it is written for users. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define ERR_MSG_MAX 1024

struct err {
    char msg[ERR_MSG_MAX]; /* "" when no error */
};

static inline void err_clear(struct err *e)
{
    e->msg[0] = '\0';
}

static inline bool err_is_set(const struct err *e)
{
    return e->msg[0] != '\0';
}

/* Formats "`path`: message" into `e` (overwriting) and returns -EINVAL, so a validator can
 * `return err_set(err, path, "...")`. `path` may be NULL or "" for a message without a path. */
int err_set(struct err *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Appends `e`'s message to `all`'s ("; " between them, cut at the buffer's end): the failures
 * of one update that applies what it can (CDS, LDS). */
void err_join(struct err *all, const struct err *e);
