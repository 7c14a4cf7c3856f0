/* Unit tests for the resolver threads (proxy/net/resolver.h), moved here with them from
 * remora-xds's dns tests: answers come back on the loop; a hanging lookup holds neither the loop
 * nor the names behind it (a pool of threads), and when every thread hangs the queue waits; a
 * cancelled query's callback never runs (queued, being looked up, or answered); resolver_wait
 * delivers the answer inside the call, or times out; resolver_free with a lookup still running; the
 * family reaches the lookup; getaddrinfo on literals. The lookup is the test's, gated by a
 * condition variable. */
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

#include "proxy/net/resolver.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;                /* "slow*" names wait for this */
static int lookups;                   /* calls of fake_lookup */
static enum resolver_family none_fam; /* the family the "none*" name was asked with */

struct got {
    int calls;
    char host[64];
    char first[RESOLVER_ADDR_MAX];
    size_t n;
};

static void fake_lookup(const char *host, enum resolver_family fam, struct resolver_answer *out)
{
    pthread_mutex_lock(&mu);
    lookups++;
    if (strncmp(host, "none", 4) == 0) {
        none_fam = fam;
    }
    while (strncmp(host, "slow", 4) == 0 && !gate_open) {
        pthread_cond_wait(&cv, &mu);
    }
    pthread_mutex_unlock(&mu);
    if (strncmp(host, "none", 4) == 0) {
        out->gai_err = -2;
        return;
    }
    snprintf(out->addrs[0], RESOLVER_ADDR_MAX, "10.0.0.%zu", strlen(host));
    out->n = 1;
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

static void on_done(void *arg, const char *host, const struct resolver_answer *a)
{
    struct got *g = arg;
    g->calls++;
    snprintf(g->host, sizeof(g->host), "%s", host);
    g->n = a->n;
    snprintf(g->first, sizeof(g->first), "%s", a->n > 0 ? a->addrs[0] : "");
}

static int setup(void **state)
{
    (void)state;
    gate_open = false;
    lookups = 0;
    return 0;
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until *calls reaches `want`, or 5 s. */
static void run_until(struct ev_loop *loop, const int *calls, int want)
{
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, 5.0, 0);
    ev_timer_start(loop, &deadline);
    while (*calls < want && ev_is_active(&deadline)) {
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &deadline);
}

static void test_resolver_answers_on_the_loop(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got g = {0}, none = {0};
    resolver_query(r, "abc.example", RESOLVER_V6_ONLY, on_done, &g);
    resolver_query(r, "none.example", RESOLVER_V4_ONLY, on_done, &none);
    assert_int_equal(g.calls, 0); /* never inside resolver_query */
    /* two resolver threads: the answers come in either order */
    run_until(loop, &none.calls, 1);
    run_until(loop, &g.calls, 1);
    assert_int_equal(g.calls, 1);
    assert_string_equal(g.host, "abc.example");
    assert_int_equal(g.n, 1);
    assert_string_equal(g.first, "10.0.0.11");
    assert_int_equal(none.calls, 1);
    assert_int_equal(none.n, 0);
    assert_int_equal(none_fam, RESOLVER_V4_ONLY);
    resolver_free(r);
    ev_loop_destroy(loop);
}

/* Waits (bounded) until the lookup function has been entered `n` times. */
static void wait_lookups(int n)
{
    for (int i = 0; i < 5000 && lookup_count() < n; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_true(lookup_count() >= n);
}

static void test_resolver_hanging_lookup_does_not_hold_the_loop(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got slow = {0}, quick = {0};
    resolver_query(r, "slow.example", RESOLVER_ALL, on_done, &slow);
    resolver_query(r, "quick.example", RESOLVER_ALL, on_done, &quick);
    ev_run(loop, EVRUN_NOWAIT); /* returns: nothing blocks the loop */
    /* another thread answers the name behind the one that hangs (no head-of-line blocking) */
    run_until(loop, &quick.calls, 1);
    assert_int_equal(quick.calls, 1);
    assert_int_equal(slow.calls, 0);
    open_gate();
    run_until(loop, &slow.calls, 1);
    assert_int_equal(slow.calls, 1);
    resolver_free(r);
    ev_loop_destroy(loop);
}

/* With every thread inside a lookup that hangs, the next name waits on the queue (the pool is
 * bounded), and is answered once one comes back. */
static void test_resolver_pool_is_bounded(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got slow[RESOLVER_THREADS] = {0}, queued = {0};
    for (int i = 0; i < RESOLVER_THREADS; i++) {
        char host[32];
        snprintf(host, sizeof(host), "slow%d.example", i);
        resolver_query(r, host, RESOLVER_ALL, on_done, &slow[i]);
    }
    wait_lookups(RESOLVER_THREADS);
    resolver_query(r, "queued.example", RESOLVER_ALL, on_done, &queued);
    struct timespec ms = {0, 50000000};
    nanosleep(&ms, NULL); /* (not synchronisation: nothing may happen in this window) */
    ev_run(loop, EVRUN_NOWAIT);
    assert_int_equal(lookup_count(), RESOLVER_THREADS);
    assert_int_equal(queued.calls, 0);
    open_gate();
    run_until(loop, &queued.calls, 1);
    assert_int_equal(queued.calls, 1);
    for (int i = 0; i < RESOLVER_THREADS; i++) {
        run_until(loop, &slow[i].calls, 1);
        assert_int_equal(slow[i].calls, 1);
    }
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void test_resolver_cancelled_query_is_never_answered(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got slow = {0}, others[RESOLVER_THREADS] = {0}, queued = {0}, after = {0},
               answered = {0};
    struct resolver_query *qs = resolver_query(r, "slow.example", RESOLVER_ALL, on_done, &slow);
    for (int i = 1; i < RESOLVER_THREADS; i++) { /* every thread busy: the next one queues */
        char host[32];
        snprintf(host, sizeof(host), "slow%d.example", i);
        resolver_query(r, host, RESOLVER_ALL, on_done, &others[i]);
    }
    wait_lookups(RESOLVER_THREADS); /* every thread is inside a slow lookup */
    struct resolver_query *qq = resolver_query(r, "queued.example", RESOLVER_ALL, on_done, &queued);
    resolver_cancel(r, qs); /* being looked up */
    resolver_cancel(r, qq); /* still queued */
    struct resolver_query *qa =
        resolver_query(r, "answered.example", RESOLVER_ALL, on_done, &answered);
    resolver_query(r, "after.example", RESOLVER_ALL, on_done, &after);
    open_gate();
    assert_true(resolver_wait(r, qa, 5.0)); /* answered.example delivered here... */
    assert_int_equal(answered.calls, 1);
    run_until(loop, &after.calls, 1);
    assert_int_equal(after.calls, 1);
    assert_int_equal(slow.calls, 0);
    assert_int_equal(queued.calls, 0);
    assert_int_equal(answered.calls, 1); /* ...and only there */
    /* the cancelled queued one was never looked up */
    assert_int_equal(lookup_count(), RESOLVER_THREADS + 2);

    /* answered, not yet delivered, then cancelled */
    struct got late = {0};
    struct resolver_query *ql = resolver_query(r, "late.example", RESOLVER_ALL, on_done, &late);
    wait_lookups(RESOLVER_THREADS + 3);
    struct timespec ms = {0, 20000000};
    nanosleep(&ms, NULL); /* (not synchronisation: the cancel is right whichever state ql is in) */
    resolver_cancel(r, ql);
    struct got marker = {0};
    resolver_query(r, "marker.example", RESOLVER_ALL, on_done, &marker);
    run_until(loop, &marker.calls, 1);
    assert_int_equal(late.calls, 0);
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void test_resolver_wait_times_out(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got slow = {0};
    struct resolver_query *q = resolver_query(r, "slow.example", RESOLVER_ALL, on_done, &slow);
    assert_false(resolver_wait(r, q, 0.05));
    assert_int_equal(slow.calls, 0);
    open_gate();
    run_until(loop, &slow.calls, 1); /* delivered later, as usual */
    assert_int_equal(slow.calls, 1);
    resolver_free(r);
    ev_loop_destroy(loop);
}

static void test_resolver_free_while_a_lookup_hangs(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct resolver *r = resolver_new(loop);
    resolver_set_lookup(r, fake_lookup);
    struct got a = {0}, b = {0};
    resolver_query(r, "slow.example", RESOLVER_ALL, on_done, &a);
    resolver_query(r, "slow2.example", RESOLVER_ALL, on_done, &b);
    wait_lookups(2);
    resolver_free(r); /* two threads are inside the lookups */
    ev_loop_destroy(loop);
    open_gate(); /* it finishes, touches nothing of r's or the loop's, frees what is shared */
    struct timespec ms = {0, 50000000};
    nanosleep(&ms, NULL); /* (ASan would see a use after free in this window) */
    assert_int_equal(a.calls, 0);
    assert_int_equal(b.calls, 0);
}

static void test_resolver_getaddrinfo_literals_and_families(void **state)
{
    (void)state;
    struct resolver_answer a;
    resolver_getaddrinfo("192.0.2.1", RESOLVER_V4_PREFERRED, &a);
    assert_int_equal(a.n, 1);
    assert_string_equal(a.addrs[0], "192.0.2.1");
    resolver_getaddrinfo("2001:db8::1", RESOLVER_V4_PREFERRED, &a); /* falls back to IPv6 */
    assert_int_equal(a.n, 1);
    assert_string_equal(a.addrs[0], "2001:db8::1");
    resolver_getaddrinfo("192.0.2.1", RESOLVER_V6_PREFERRED, &a); /* falls back to IPv4 */
    assert_int_equal(a.n, 1);
    assert_string_equal(a.addrs[0], "192.0.2.1");
    resolver_getaddrinfo("2001:db8::1", RESOLVER_V4_ONLY, &a);
    assert_int_equal(a.n, 0);
    assert_int_not_equal(a.gai_err, 0);
    assert_true(resolver_is_literal("10.1.2.3"));
    assert_true(resolver_is_literal("::1"));
    assert_false(resolver_is_literal("example.com"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_resolver_answers_on_the_loop, setup),
        cmocka_unit_test_setup(test_resolver_hanging_lookup_does_not_hold_the_loop, setup),
        cmocka_unit_test_setup(test_resolver_pool_is_bounded, setup),
        cmocka_unit_test_setup(test_resolver_cancelled_query_is_never_answered, setup),
        cmocka_unit_test_setup(test_resolver_wait_times_out, setup),
        cmocka_unit_test_setup(test_resolver_getaddrinfo_literals_and_families, setup),
        /* last: its thread outlives the test */
        cmocka_unit_test_setup(test_resolver_free_while_a_lookup_hangs, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
