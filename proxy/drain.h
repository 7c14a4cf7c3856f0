/* drain: the whole-server graceful drain's pure parts, shared by main (which starts and ends a
 * drain) and the workers (which decide, response by response, whether a connection closes).
 *
 * Envoy's drain manager (DrainManagerImpl::drainClose) decides per response whether the
 * connection is told to close: HTTP/1.1 answers with `connection: close`, HTTP/2 starts its
 * GOAWAY sequence. With --drain-strategy immediate every response does; with gradual (the
 * default) the chance grows linearly over --drain-time-s, counted in whole seconds as Envoy
 * counts them. While the server fails health checks (POST /healthcheck/fail) every response
 * does, drain or not.
 *
 * Main tells each worker the state through one 64-bit word (drain_word_pack), so a worker
 * never reads a half-written state. No I/O, no allocation: unit-tested in
 * tests/unit/proxy/drain_test.c. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

enum drain_strategy {
    DRAIN_GRADUAL,   /* Envoy's default: P(close) = elapsed / drain time */
    DRAIN_IMMEDIATE, /* every response closes its connection at once */
};

/* Parses a --drain-strategy value ("gradual", "immediate"). Returns 0 or -EINVAL. */
int drain_strategy_parse(const char *s, enum drain_strategy *out);

/* Envoy's name of the strategy in /server_info's command_line_options ("Gradual"). */
const char *drain_strategy_name(enum drain_strategy st);

/* Whether a response `elapsed_s` seconds into a drain of `drain_time_s` seconds closes its
 * connection, given the uniform random value `rnd`. Envoy's arithmetic: at or past the deadline,
 * with a drain time of 0, or the immediate strategy: always; else the whole seconds left
 * (rounded down) give the elapsed seconds e = drain_time_s - left, and the answer is
 * e > rnd % drain_time_s. So during the first second 1 in drain_time_s responses close, during
 * the last one every response. A negative `elapsed_s` counts as 0. */
bool drain_close_decide(double elapsed_s, uint32_t drain_time_s, enum drain_strategy st,
                        uint64_t rnd);

/* The state main hands a worker. */
struct drain_state {
    bool active;       /* a graceful drain (/drain_listeners?graceful, App Mesh SIGTERM) runs */
    bool inbound_only; /* ... only for listeners with traffic_direction INBOUND */
    bool hc_failed;    /* POST /healthcheck/fail: every response closes its connection */
    enum drain_strategy strategy;
    uint32_t drain_time_s; /* --drain-time-s, at most DRAIN_TIME_MAX_S */
};

/* The longest --drain-time-s a drain state carries (about 34 years). */
#define DRAIN_TIME_MAX_S 0x3fffffffu

/* Packs `st` into one word (0 when nothing is on) and back. */
uint64_t drain_word_pack(const struct drain_state *st);
void drain_word_unpack(uint64_t word, struct drain_state *st);
