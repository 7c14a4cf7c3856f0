/* drain: the graceful drain's decision and the state word main hands the workers (see
 * drain.h). Pure functions: the worker supplies the time and the random value. */
#include "proxy/drain.h"

#include <errno.h>
#include <math.h>
#include <string.h>

int drain_strategy_parse(const char *s, enum drain_strategy *out)
{
    if (strcmp(s, "gradual") == 0) {
        *out = DRAIN_GRADUAL;
        return 0;
    }
    if (strcmp(s, "immediate") == 0) {
        *out = DRAIN_IMMEDIATE;
        return 0;
    }
    return -EINVAL;
}

const char *drain_strategy_name(enum drain_strategy st)
{
    return st == DRAIN_IMMEDIATE ? "Immediate" : "Gradual";
}

bool drain_close_decide(double elapsed_s, uint32_t drain_time_s, enum drain_strategy st,
                        uint64_t rnd)
{
    if (st == DRAIN_IMMEDIATE || drain_time_s == 0) {
        return true;
    }
    if (!(elapsed_s > 0)) {
        elapsed_s = 0; /* also NaN */
    }
    double left = (double)drain_time_s - elapsed_s;
    if (left <= 0) {
        return true; /* the deadline passed */
    }
    /* Envoy casts the time left to whole seconds (rounding down), so the elapsed count it
     * compares rounds up: 1 just after the start, drain_time_s in the last second. */
    uint64_t left_s = (uint64_t)floor(left);
    uint64_t elapsed = drain_time_s - left_s;
    return elapsed > rnd % drain_time_s;
}

enum {
    W_ACTIVE = 1u << 0,
    W_INBOUND_ONLY = 1u << 1,
    W_HC_FAILED = 1u << 2,
    W_IMMEDIATE = 1u << 3,
    W_TIME_SHIFT = 32,
};

uint64_t drain_word_pack(const struct drain_state *st)
{
    if (!st->active && !st->hc_failed) {
        return 0;
    }
    uint64_t t = st->drain_time_s > DRAIN_TIME_MAX_S ? DRAIN_TIME_MAX_S : st->drain_time_s;
    return (st->active ? W_ACTIVE : 0) | (st->inbound_only ? W_INBOUND_ONLY : 0) |
           (st->hc_failed ? W_HC_FAILED : 0) | (st->strategy == DRAIN_IMMEDIATE ? W_IMMEDIATE : 0) |
           (t << W_TIME_SHIFT);
}

void drain_word_unpack(uint64_t word, struct drain_state *st)
{
    memset(st, 0, sizeof(*st));
    st->active = (word & W_ACTIVE) != 0;
    st->inbound_only = (word & W_INBOUND_ONLY) != 0;
    st->hc_failed = (word & W_HC_FAILED) != 0;
    st->strategy = (word & W_IMMEDIATE) ? DRAIN_IMMEDIATE : DRAIN_GRADUAL;
    st->drain_time_s = (uint32_t)(word >> W_TIME_SHIFT);
}
