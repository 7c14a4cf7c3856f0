/* Unit tests for proxy/core/timer_list: O(1) timers on FIFO lists per duration, with libev's
 * heap as the fallback. They run a real libev loop with durations of a few milliseconds and
 * wait for what they expect with a deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/timer_list.h"

#define MAX_T 16

struct fixture {
    struct ev_loop *loop;
    struct timer_lists set;
    struct tl_timer t[MAX_T];
    int order[64]; /* indices of the timers that fired, in firing order */
    int n_fired;
    ev_tstamp fired_at[MAX_T];
    ev_tstamp started_at[MAX_T];
    /* what a callback does besides recording: */
    int stop_on_fire[MAX_T];    /* stop this timer (index + 1; 0: none) */
    uint64_t restart_ms[MAX_T]; /* restart itself on the lists for that long (0: no) */
};

static struct fixture F;

static void on_fire(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    assert_int_equal(revents, EV_TIMER);
    int i = (int)(intptr_t)w->data;
    F.order[F.n_fired++] = i;
    F.fired_at[i] = ev_now(F.loop);
    if (F.stop_on_fire[i] > 0) {
        timer_list_stop(&F.set, &F.t[F.stop_on_fire[i] - 1]);
    }
    if (F.restart_ms[i] > 0) {
        uint64_t ms = F.restart_ms[i];
        F.restart_ms[i] = 0;
        F.started_at[i] = ev_now(F.loop);
        timer_list_start(&F.set, &F.t[i], ms);
    }
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof(F));
    F.loop = ev_loop_new(EVFLAG_AUTO);
    assert_non_null(F.loop);
    timer_lists_init(&F.set, F.loop);
    for (int i = 0; i < MAX_T; i++) {
        tl_timer_init(&F.t[i], on_fire, (void *)(intptr_t)i);
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < MAX_T; i++) {
        timer_list_stop(&F.set, &F.t[i]);
    }
    timer_lists_deinit(&F.set);
    ev_loop_destroy(F.loop);
    return 0;
}

static void start(int i, uint64_t ms)
{
    ev_now_update(F.loop);
    F.started_at[i] = ev_now(F.loop);
    timer_list_start(&F.set, &F.t[i], ms);
}

static void on_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

/* Runs the loop until `n` timers fired in all, or 2 s passed (then the test fails on what it
 * checks next). A guard timer wakes the loop at the deadline whatever else is armed. */
static void run_until_fired(int n)
{
    ev_tstamp end = ev_time() + 2.0;
    ev_timer guard;
    ev_timer_init(&guard, on_guard, 2.0, 0);
    ev_timer_start(F.loop, &guard);
    while (F.n_fired < n && ev_time() < end) {
        ev_run(F.loop, EVRUN_ONCE);
    }
    ev_timer_stop(F.loop, &guard);
}

/* Fires every timer that can be fired within `secs`, for checks that something did NOT fire. */
static void run_for(double secs)
{
    ev_tstamp end = ev_time() + secs;
    while (ev_time() < end) {
        ev_run(F.loop, EVRUN_NOWAIT);
        ev_sleep(0.001);
    }
}

static void test_same_duration_fires_in_start_order_and_not_early(void **state)
{
    (void)state;
    for (int i = 0; i < 4; i++) {
        start(i, 20);
        ev_sleep(0.002); /* distinct start times */
    }
    assert_true(F.t[0].list != NULL);
    assert_ptr_equal(F.t[0].list, F.t[3].list); /* one list serves one duration */
    run_until_fired(4);
    assert_int_equal(F.n_fired, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(F.order[i], i);
        assert_true(F.fired_at[i] >= F.started_at[i] + 0.020 - 1e-9);
        assert_false(tl_timer_active(&F.t[i]));
    }
}

static void test_stopped_timers_never_fire_wherever_they_sit(void **state)
{
    (void)state;
    for (int i = 0; i < 5; i++) {
        start(i, 15);
    }
    timer_list_stop(&F.set, &F.t[0]); /* head */
    timer_list_stop(&F.set, &F.t[2]); /* middle */
    timer_list_stop(&F.set, &F.t[4]); /* tail */
    timer_list_stop(&F.set, &F.t[4]); /* twice: nothing */
    assert_false(tl_timer_active(&F.t[2]));
    run_until_fired(2);
    run_for(0.03);
    assert_int_equal(F.n_fired, 2);
    assert_int_equal(F.order[0], 1);
    assert_int_equal(F.order[1], 3);
}

static void test_restart_moves_the_timer_to_its_new_deadline(void **state)
{
    (void)state;
    start(0, 30);
    start(1, 30);
    ev_sleep(0.01);
    start(0, 30); /* now behind timer 1 */
    run_until_fired(2);
    assert_int_equal(F.order[0], 1);
    assert_int_equal(F.order[1], 0);
    assert_true(F.fired_at[0] >= F.started_at[0] + 0.030 - 1e-9);
}

static void test_each_duration_gets_its_own_list_and_extra_ones_use_the_heap(void **state)
{
    (void)state;
    /* TIMER_LISTS + 2 distinct durations, started longest first: all fire, shortest first. */
    int n = TIMER_LISTS + 2;
    for (int i = 0; i < n; i++) {
        start(i, (uint64_t)(60 - 5 * i));
    }
    int listed = 0;
    for (int i = 0; i < n; i++) {
        listed += F.t[i].list != NULL;
    }
    assert_int_equal(listed, TIMER_LISTS);
    assert_true(tl_timer_active(&F.t[n - 1])); /* on libev's heap */
    assert_null(F.t[n - 1].list);
    run_until_fired(n);
    assert_int_equal(F.n_fired, n);
    for (int i = 0; i < n; i++) {
        assert_int_equal(F.order[i], n - 1 - i);
        assert_true(F.fired_at[i] >= F.started_at[i] + (60 - 5 * i) / 1000.0 - 1e-9);
    }
}

static void test_a_list_freed_by_a_long_duration_serves_a_short_one_on_time(void **state)
{
    (void)state;
    /* Every list serves a 10 s timer, then all are stopped (their libev timers stay armed for
     * 10 s). A 20 ms timer takes one of those lists: it must fire at 20 ms, not after 10 s. */
    for (int i = 0; i < TIMER_LISTS; i++) {
        start(i, 10000 + (uint64_t)i);
    }
    for (int i = 0; i < TIMER_LISTS; i++) {
        timer_list_stop(&F.set, &F.t[i]);
    }
    start(TIMER_LISTS, 20);
    assert_non_null(F.t[TIMER_LISTS].list);
    run_until_fired(1);
    assert_int_equal(F.n_fired, 1);
    assert_int_equal(F.order[0], TIMER_LISTS);
    assert_true(F.fired_at[TIMER_LISTS] < F.started_at[TIMER_LISTS] + 1.0);
}

static void test_callbacks_may_stop_and_restart_timers_on_the_firing_list(void **state)
{
    (void)state;
    F.stop_on_fire[0] = 1 + 1; /* timer 0 stops timer 1, due at the same moment */
    F.restart_ms[2] = 10;      /* timer 2 goes round once more */
    start(0, 10);
    start(1, 10);
    start(2, 10);
    start(3, 10);
    run_until_fired(4);
    run_for(0.03);
    assert_int_equal(F.n_fired, 4);
    assert_int_equal(F.order[0], 0);
    assert_int_equal(F.order[1], 2);
    assert_int_equal(F.order[2], 3);
    assert_int_equal(F.order[3], 2); /* its second round */
}

static void test_heap_start_is_a_plain_libev_timer(void **state)
{
    (void)state;
    start(0, 40);
    ev_now_update(F.loop);
    F.started_at[1] = ev_now(F.loop);
    timer_list_start_heap(&F.set, &F.t[1], 0.01);
    assert_null(F.t[1].list);
    assert_true(tl_timer_active(&F.t[1]));
    timer_list_start_heap(&F.set, &F.t[0], 0.005); /* off its list, onto the heap */
    assert_null(F.t[0].list);
    run_until_fired(2);
    assert_int_equal(F.order[0], 0);
    assert_int_equal(F.order[1], 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_same_duration_fires_in_start_order_and_not_early,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopped_timers_never_fire_wherever_they_sit, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_restart_moves_the_timer_to_its_new_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_each_duration_gets_its_own_list_and_extra_ones_use_the_heap, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_a_list_freed_by_a_long_duration_serves_a_short_one_on_time, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_callbacks_may_stop_and_restart_timers_on_the_firing_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heap_start_is_a_plain_libev_timer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
