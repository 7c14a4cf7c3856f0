/* log: leveled stderr logging (see log.h). The level is the one piece of process-wide mutable
 * state outside main.c: an atomic, because the admin thread changes it while workers read it. */
#include "proxy/core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static _Atomic int current_level = LOG_INFO;

static const char *const level_names[] = {
    [LOG_TRACE] = "trace", [LOG_DEBUG] = "debug",       [LOG_INFO] = "info", [LOG_WARN] = "warning",
    [LOG_ERROR] = "error", [LOG_CRITICAL] = "critical", [LOG_OFF] = "off",
};

int log_level_parse(const char *name)
{
    if (strcmp(name, "warn") == 0) {
        return LOG_WARN;
    }
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

const char *log_level_name(enum log_level l)
{
    return (unsigned)l <= LOG_OFF ? level_names[l] : "?";
}

void log_set_level(enum log_level l)
{
    atomic_store_explicit(&current_level, (int)l, memory_order_relaxed);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load_explicit(&current_level, memory_order_relaxed);
}

void log_msg(enum log_level l, const char *fmt, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "[%04d-%02d-%02d %02d:%02d:%02d.%03ld][%s] ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, log_level_name(l));
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line)) {
        vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    }
    va_end(ap);
    /* One fputs per line keeps lines whole across threads (stdio locks the stream). */
    size_t len = strlen(line);
    if (len + 1 < sizeof(line)) {
        line[len] = '\n';
        line[len + 1] = '\0';
    }
    fputs(line, stderr);
}
