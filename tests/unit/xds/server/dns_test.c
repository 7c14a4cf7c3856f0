/* Unit tests for remora-xds's name cache (xds/server/dns.h, over proxy/net/resolver.h, whose
 * own tests are tests/unit/proxy/net/resolver_test.c): IP literals as they are; a name
 * that answers at once is in the first answer; a name whose lookup hangs does not hold the
 * loop (nothing for now, `changed` when it answers); the refresh notices a changed answer; one
 * loop iteration waits once in all; dns_free with a lookup still running. The lookup is the
 * test's, gated by a condition variable. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <ev.h>

#include "xds/server/dns.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;     /* "slow*" names wait for this */
static int lookups;        /* calls of fake_lookup */
static const char *answer; /* what names resolve to ("" : nothing) */
static int changed_calls;

static void fake_lookup(const char *host, enum resolver_family fam, struct resolver_answer *out)
{
    (void)fam;
    pthread_mutex_lock(&mu);
    lookups++;
    while (strncmp(host, "slow", 4) == 0 && !gate_open) {
        pthread_cond_wait(&cv, &mu);
    }
    if (answer[0] != '\0') {
        strcpy(out->addrs[0], answer);
        out->n = 1;
    }
    pthread_mutex_unlock(&mu);
}

static void open_gate(void)
{
    pthread_mutex_lock(&mu);
    gate_open = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

static int lookup_count(void)
{
    pthread_mutex_lock(&mu);
    int n = lookups;
    pthread_mutex_unlock(&mu);
    return n;
}

static void on_changed(void *arg)
{
    (void)arg;
    changed_calls++;
}

static int setup(void **state)
{
    (void)state;
    gate_open = false;
    lookups = 0;
    answer = "10.0.0.7";
    changed_calls = 0;
    return 0;
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until `changed` was called `want` times, or 5 s. */
static void run_until_changed(struct ev_loop *loop, int want)
{
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, 5.0, 0);
    ev_timer_start(loop, &deadline);
    while (changed_calls < want && ev_is_active(&deadline)) {
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &deadline);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_literals_need_no_lookup(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 60000, 200, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    assert_int_equal(dns_resolve(d, "192.0.2.1", out, TR_ADDRS_MAX), 1);
    assert_string_equal(out[0], "192.0.2.1");
    assert_int_equal(dns_resolve(d, "2001:db8::1", out, TR_ADDRS_MAX), 1);
    assert_string_equal(out[0], "2001:db8::1");
    assert_int_equal(lookup_count(), 0);
    dns_free(d);
    ev_loop_destroy(loop);
}

static void test_a_quick_name_is_in_the_first_answer_and_cached(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 60000, 2000, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    assert_int_equal(dns_resolve(d, "quick.example", out, TR_ADDRS_MAX), 1);
    assert_string_equal(out[0], "10.0.0.7");
    assert_int_equal(dns_resolve(d, "quick.example", out, TR_ADDRS_MAX), 1);
    assert_int_equal(lookup_count(), 1);
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(changed_calls, 0); /* the first answer was used by the caller */
    dns_free(d);
    ev_loop_destroy(loop);
}

static void test_a_hanging_name_does_not_hold_the_loop(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 60000, 50, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    assert_int_equal(dns_resolve(d, "slow.example", out, TR_ADDRS_MAX), 0);
    /* asked again while the lookup hangs: no second lookup, no wait */
    ev_now_update(loop);
    assert_int_equal(dns_resolve(d, "slow.example", out, TR_ADDRS_MAX), 0);
    open_gate();
    run_until_changed(loop, 1);
    assert_int_equal(changed_calls, 1);
    assert_int_equal(dns_resolve(d, "slow.example", out, TR_ADDRS_MAX), 1);
    assert_string_equal(out[0], "10.0.0.7");
    assert_int_equal(lookup_count(), 1);
    dns_free(d);
    ev_loop_destroy(loop);
}

static void test_one_iteration_waits_once(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 60000, 1000, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    double t0 = now_s();
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "slow%d.example", i);
        assert_int_equal(dns_resolve(d, name, out, TR_ADDRS_MAX), 0);
    }
    double spent = now_s() - t0;
    assert_true(spent >= 0.9); /* the first name waited its second */
    assert_true(spent < 2.5);  /* the four others did not wait theirs */
    open_gate();               /* the answers come in one or more batches */
    for (int i = 0; i < 5; i++) {
        char name[32];
        snprintf(name, sizeof(name), "slow%d.example", i);
        for (int k = 0; k < 50 && dns_resolve(d, name, out, TR_ADDRS_MAX) == 0; k++) {
            run_until_changed(loop, changed_calls + 1);
        }
        assert_int_equal(dns_resolve(d, name, out, TR_ADDRS_MAX), 1);
    }
    dns_free(d);
    ev_loop_destroy(loop);
}

static void test_refresh_notices_a_new_answer(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 20, 2000, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    assert_int_equal(dns_resolve(d, "moving.example", out, TR_ADDRS_MAX), 1);
    pthread_mutex_lock(&mu);
    answer = "10.0.0.8";
    pthread_mutex_unlock(&mu);
    run_until_changed(loop, 1);
    assert_int_equal(changed_calls, 1);
    assert_int_equal(dns_resolve(d, "moving.example", out, TR_ADDRS_MAX), 1);
    assert_string_equal(out[0], "10.0.0.8");
    pthread_mutex_lock(&mu);
    answer = "";
    pthread_mutex_unlock(&mu);
    run_until_changed(loop, 2);
    assert_int_equal(dns_resolve(d, "moving.example", out, TR_ADDRS_MAX), 0);
    dns_free(d);
    ev_loop_destroy(loop);
}

static void test_free_while_a_lookup_hangs(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct dns *d = dns_new(loop, 60000, 10, on_changed, NULL);
    dns_set_lookup(d, fake_lookup);
    char out[TR_ADDRS_MAX][TR_ADDR_MAX];
    assert_int_equal(dns_resolve(d, "slow.example", out, TR_ADDRS_MAX), 0);
    assert_int_equal(dns_resolve(d, "slow2.example", out, TR_ADDRS_MAX), 0);
    dns_free(d); /* the thread is inside the lookup; a second job waits behind it */
    ev_loop_destroy(loop);
    open_gate(); /* it finishes, touches nothing of d's or the loop's, and frees what is shared */
    for (int i = 0; i < 500 && lookup_count() < 1; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_int_equal(changed_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_literals_need_no_lookup, setup),
        cmocka_unit_test_setup(test_a_quick_name_is_in_the_first_answer_and_cached, setup),
        cmocka_unit_test_setup(test_a_hanging_name_does_not_hold_the_loop, setup),
        cmocka_unit_test_setup(test_one_iteration_waits_once, setup),
        cmocka_unit_test_setup(test_refresh_notices_a_new_answer, setup),
        cmocka_unit_test_setup(test_free_while_a_lookup_hangs, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
