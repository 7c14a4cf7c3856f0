/* Unit tests for proxy/drain: Envoy's per-response drain decision (immediate, gradual in whole
 * seconds, past the deadline, drain time 0), the share of closing responses growing with the
 * elapsed time, the strategy flag's values, and the state word main hands the workers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy/drain.h"

static void test_drain_immediate_always_closes(void **state)
{
    (void)state;
    for (uint64_t r = 0; r < 100; r++) {
        assert_true(drain_close_decide(0.0, 600, DRAIN_IMMEDIATE, r));
        assert_true(drain_close_decide(599.5, 600, DRAIN_IMMEDIATE, r * 7919));
    }
}

static void test_drain_zero_time_and_deadline_close(void **state)
{
    (void)state;
    assert_true(drain_close_decide(0.0, 0, DRAIN_GRADUAL, 12345));
    assert_true(drain_close_decide(10.0, 10, DRAIN_GRADUAL, 9));
    assert_true(drain_close_decide(11.5, 10, DRAIN_GRADUAL, 9));
}

/* Envoy rounds the time left down to whole seconds: at the very start nothing closes, just
 * after it 1 in drain_time, in the last second all. */
static void test_drain_gradual_whole_seconds(void **state)
{
    (void)state;
    /* exactly at the start: elapsed 0, never */
    for (uint64_t r = 0; r < 10; r++) {
        assert_false(drain_close_decide(0.0, 10, DRAIN_GRADUAL, r));
    }
    assert_false(drain_close_decide(-3.0, 10, DRAIN_GRADUAL, 0)); /* clock skew: as 0 */
    /* 0.1 s in: 9 whole seconds left, elapsed 1: closes only when rnd % 10 == 0 */
    assert_true(drain_close_decide(0.1, 10, DRAIN_GRADUAL, 0));
    assert_true(drain_close_decide(0.1, 10, DRAIN_GRADUAL, 20));
    assert_false(drain_close_decide(0.1, 10, DRAIN_GRADUAL, 1));
    assert_false(drain_close_decide(0.1, 10, DRAIN_GRADUAL, 9));
    /* 5.5 s in: 4 left, elapsed 6: rnd % 10 in 0..5 */
    assert_true(drain_close_decide(5.5, 10, DRAIN_GRADUAL, 5));
    assert_false(drain_close_decide(5.5, 10, DRAIN_GRADUAL, 6));
    /* the last second: elapsed 10 > any rnd % 10 */
    for (uint64_t r = 0; r < 10; r++) {
        assert_true(drain_close_decide(9.2, 10, DRAIN_GRADUAL, r));
    }
}

/* Over every residue the share closing is elapsed/drain_time, growing monotonically. */
static void test_drain_gradual_share_grows(void **state)
{
    (void)state;
    const uint32_t T = 20;
    unsigned prev = 0;
    for (double t = 0.0; t < 21.0; t += 0.25) {
        unsigned n = 0;
        for (uint64_t r = 0; r < T; r++) {
            n += drain_close_decide(t, T, DRAIN_GRADUAL, r) ? 1 : 0;
        }
        assert_true(n >= prev);
        if (t > 0 && t < T) {
            unsigned want = (unsigned)(T - (uint32_t)(T - t)); /* ceil-ish elapsed seconds */
            assert_int_equal(n, want);
        }
        prev = n;
    }
    assert_int_equal(prev, T);
}

static void test_drain_strategy_parse(void **state)
{
    (void)state;
    enum drain_strategy st = DRAIN_IMMEDIATE;
    assert_int_equal(drain_strategy_parse("gradual", &st), 0);
    assert_int_equal(st, DRAIN_GRADUAL);
    assert_int_equal(drain_strategy_parse("immediate", &st), 0);
    assert_int_equal(st, DRAIN_IMMEDIATE);
    assert_int_equal(drain_strategy_parse("Gradual", &st), -EINVAL);
    assert_int_equal(drain_strategy_parse("", &st), -EINVAL);
    assert_string_equal(drain_strategy_name(DRAIN_GRADUAL), "Gradual");
    assert_string_equal(drain_strategy_name(DRAIN_IMMEDIATE), "Immediate");
}

static void test_drain_word_round_trip(void **state)
{
    (void)state;
    struct drain_state off = {.strategy = DRAIN_IMMEDIATE, .drain_time_s = 20};
    assert_int_equal(drain_word_pack(&off), 0); /* nothing on: the workers' fast path */
    struct drain_state in = {.active = true,
                             .inbound_only = true,
                             .hc_failed = false,
                             .strategy = DRAIN_IMMEDIATE,
                             .drain_time_s = 110};
    struct drain_state out;
    drain_word_unpack(drain_word_pack(&in), &out);
    assert_true(out.active);
    assert_true(out.inbound_only);
    assert_false(out.hc_failed);
    assert_int_equal(out.strategy, DRAIN_IMMEDIATE);
    assert_int_equal(out.drain_time_s, 110);
    struct drain_state hc = {.hc_failed = true, .drain_time_s = 4000000000u};
    drain_word_unpack(drain_word_pack(&hc), &out);
    assert_false(out.active);
    assert_true(out.hc_failed);
    assert_int_equal(out.strategy, DRAIN_GRADUAL);
    assert_int_equal(out.drain_time_s, DRAIN_TIME_MAX_S); /* clamped */
    drain_word_unpack(0, &out);
    assert_false(out.active || out.hc_failed);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_drain_immediate_always_closes),
        cmocka_unit_test(test_drain_zero_time_and_deadline_close),
        cmocka_unit_test(test_drain_gradual_whole_seconds),
        cmocka_unit_test(test_drain_gradual_share_grows),
        cmocka_unit_test(test_drain_strategy_parse),
        cmocka_unit_test(test_drain_word_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
