/* log: leveled logging to stderr with Envoy's level names (trace, debug, info, warning, error,
 * critical, off). The level is process-wide and may change at run time (POST /logging), so it
 * is an atomic read on each call; messages below it cost one load and a branch. */
#pragma once

enum log_level {
    LOG_TRACE,
    LOG_DEBUG,
    LOG_INFO,
    LOG_WARN,
    LOG_ERROR,
    LOG_CRITICAL,
    LOG_OFF,
};

/* Parses an Envoy level name ("warning" and "warn" both work). Returns the level or -1. */
int log_level_parse(const char *name);
const char *log_level_name(enum log_level l);
void log_set_level(enum log_level l);
enum log_level log_get_level(void);

void log_msg(enum log_level l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG(lvl, ...)                                                                              \
    do {                                                                                           \
        if ((lvl) >= log_get_level()) {                                                            \
            log_msg((lvl), __VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)
#define LOG_T(...) LOG(LOG_TRACE, __VA_ARGS__)
#define LOG_D(...) LOG(LOG_DEBUG, __VA_ARGS__)
#define LOG_I(...) LOG(LOG_INFO, __VA_ARGS__)
#define LOG_W(...) LOG(LOG_WARN, __VA_ARGS__)
#define LOG_E(...) LOG(LOG_ERROR, __VA_ARGS__)
