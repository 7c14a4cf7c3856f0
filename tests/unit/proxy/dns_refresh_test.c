/* Unit tests for proxy/dns_refresh.h: answers compared as sets; the refresh delay and its
 * jitter; a cluster's names looked up at once, answered to the builder, looked up again on the
 * timer; a changed answer calls `changed`, the same one counts update_no_rebuild, a failed one
 * keeps the last addresses (update_failure) and retries on dns_failure_refresh_rate; a removed
 * cluster's names are dropped; the startup hold ends with the first answers. The lookup is the
 * test's (resolver_set_lookup). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>

#include "proxy/config/config.h"
#include "proxy/dns_refresh.h"
#include "proxy/net/resolver.h"
#include "proxy/stats/stats.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char answer_a[RESOLVER_ADDR_MAX]; /* what every name resolves to now ("": nothing) */
static char answer_b[RESOLVER_ADDR_MAX]; /* a second address, or "" */
static int lookups;

static void fake_lookup(const char *host, enum resolver_family fam, struct resolver_answer *out)
{
    (void)host;
    (void)fam;
    pthread_mutex_lock(&mu);
    lookups++;
    if (answer_a[0] != '\0') {
        snprintf(out->addrs[out->n++], RESOLVER_ADDR_MAX, "%s", answer_a);
    }
    if (answer_b[0] != '\0') {
        snprintf(out->addrs[out->n++], RESOLVER_ADDR_MAX, "%s", answer_b);
    }
    pthread_mutex_unlock(&mu);
}

static void set_answer(const char *a, const char *b)
{
    pthread_mutex_lock(&mu);
    snprintf(answer_a, sizeof(answer_a), "%s", a);
    snprintf(answer_b, sizeof(answer_b), "%s", b);
    pthread_mutex_unlock(&mu);
}

struct owner {
    struct eds_stats st;
    int changed;
    int init_done;
    bool known; /* the cluster exists (stats given) */
};

static struct eds_stats *o_stats(void *ud, const char *cluster)
{
    struct owner *o = ud;
    (void)cluster;
    return o->known ? &o->st : NULL;
}

static void o_changed(void *ud, const char *cluster)
{
    struct owner *o = ud;
    assert_string_equal(cluster, "dyn");
    o->changed++;
}

static void o_init_done(void *ud)
{
    struct owner *o = ud;
    o->init_done++;
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

/* Runs the loop until *v >= want, or 5 s. */
static void run_until(struct ev_loop *loop, const int *v, int want)
{
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, 5.0, 0);
    ev_timer_start(loop, &deadline);
    while (*v < want && ev_is_active(&deadline)) {
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &deadline);
}

static void run_until_stat(struct ev_loop *loop, const stat_t *s, uint64_t want)
{
    ev_timer deadline;
    ev_timer_init(&deadline, on_deadline, 5.0, 0);
    ev_timer_start(loop, &deadline);
    while (stat_get(s) < want && ev_is_active(&deadline)) {
        ev_run(loop, EVRUN_ONCE);
    }
    ev_timer_stop(loop, &deadline);
}

static size_t builder_view(struct dns_refresh *d, const char *host, const char **out)
{
    const struct config_dns *dns = dns_refresh_dns(d);
    return dns->answer(dns->ud, "dyn", host, out, RESOLVER_ADDRS_MAX);
}

static struct cluster_cfg make_cfg(const struct str *hosts, uint32_t n, uint64_t refresh_ms,
                                   uint64_t fail_base_ms)
{
    struct cluster_cfg c;
    memset(&c, 0, sizeof(c));
    c.name = STR_LIT("dyn");
    c.type = CLUSTER_STRICT_DNS;
    c.dns_hosts = hosts;
    c.n_dns_hosts = n;
    c.dns_family = RESOLVER_V4_ONLY;
    c.dns_refresh_ms = refresh_ms;
    c.dns_fail_base_ms = fail_base_ms;
    c.dns_fail_max_ms = fail_base_ms * 4;
    return c;
}

static void test_dns_refresh_same_addrs_is_a_set_comparison(void **state)
{
    (void)state;
    struct resolver_answer a = {0}, b = {0};
    assert_true(dns_refresh_same_addrs(&a, &b));
    strcpy(a.addrs[a.n++], "10.0.0.1");
    strcpy(a.addrs[a.n++], "10.0.0.2");
    strcpy(b.addrs[b.n++], "10.0.0.2");
    assert_false(dns_refresh_same_addrs(&a, &b));
    strcpy(b.addrs[b.n++], "10.0.0.1");
    assert_true(dns_refresh_same_addrs(&a, &b)); /* another order, same addresses */
    strcpy(b.addrs[1], "10.0.0.3");
    assert_false(dns_refresh_same_addrs(&a, &b));
}

static void test_dns_refresh_next_ms_jitters_below_a_tenth(void **state)
{
    (void)state;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint64_t r = 0; r < 1000; r++) {
        uint64_t ms = dns_refresh_next_ms(5000, r * 2654435761u);
        lo = ms < lo ? ms : lo;
        hi = ms > hi ? ms : hi;
    }
    assert_true(lo >= 5000);
    assert_true(hi < 5500);
    assert_true(hi > lo);                               /* it does spread */
    assert_int_equal(dns_refresh_next_ms(5, 12345), 5); /* below 10 ms: no jitter */
    assert_int_equal(dns_refresh_next_ms(0, 7), 1);
}

static void test_dns_refresh_resolves_changes_keeps_and_drops(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct owner o = {.known = true};
    struct dns_refresh_ops ops = {
        .stats = o_stats, .changed = o_changed, .init_done = o_init_done, .ud = &o};
    struct dns_refresh *d = dns_refresh_new(loop, &ops);
    resolver_set_lookup(dns_refresh_resolver(d), fake_lookup);
    set_answer("10.0.0.1", "");
    struct str hosts[2] = {STR_LIT("backend.test"), STR_LIT("192.0.2.9")};
    struct cluster_cfg cfg = make_cfg(hosts, 2, 30, 0);
    const struct cluster_cfg *v[1] = {&cfg};
    const char *out[RESOLVER_ADDRS_MAX];

    dns_refresh_sync(d, v, 1);
    assert_int_equal(stat_get(&o.st.update_attempt), 1); /* the name; the literal needs none */
    assert_int_equal(builder_view(d, "backend.test", out), 0); /* no answer yet */
    assert_int_equal(builder_view(d, "192.0.2.9", out), 1);
    assert_string_equal(out[0], "192.0.2.9");
    assert_true(dns_refresh_hold_init(d, 5000));
    run_until(loop, &o.changed, 1);
    assert_int_equal(o.changed, 1);
    assert_int_equal(o.init_done, 1);
    assert_int_equal(builder_view(d, "backend.test", out), 1);
    assert_string_equal(out[0], "10.0.0.1");
    assert_false(dns_refresh_hold_init(d, 5000)); /* nothing pending any more */

    /* the same answer again: no change, update_no_rebuild */
    run_until_stat(loop, &o.st.update_no_rebuild, 1);
    assert_int_equal(o.changed, 1);

    /* a new answer: changed */
    set_answer("10.0.0.2", "10.0.0.3");
    run_until(loop, &o.changed, 2);
    assert_int_equal(builder_view(d, "backend.test", out), 2);
    assert_string_equal(out[0], "10.0.0.2");

    /* no answer: the last one stays */
    set_answer("", "");
    uint64_t fails = stat_get(&o.st.update_failure);
    run_until_stat(loop, &o.st.update_failure, fails + 2);
    assert_int_equal(o.changed, 2);
    assert_int_equal(builder_view(d, "backend.test", out), 2);
    assert_true(stat_get(&o.st.update_success) >= 2);
    assert_true(stat_get(&o.st.update_attempt) >=
                stat_get(&o.st.update_success) + stat_get(&o.st.update_failure));

    /* the cluster goes: its names are dropped, nothing more is looked up for it */
    dns_refresh_sync(d, v, 0);
    assert_int_equal(builder_view(d, "backend.test", out), 0);
    pthread_mutex_lock(&mu);
    int before = lookups;
    pthread_mutex_unlock(&mu);
    ev_timer idle;
    ev_timer_init(&idle, on_deadline, 0.15, 0);
    ev_timer_start(loop, &idle);
    ev_run(loop, 0);
    pthread_mutex_lock(&mu);
    assert_true(lookups <= before + 1); /* at most the one already on its way */
    pthread_mutex_unlock(&mu);
    assert_int_equal(o.init_done, 1);
    dns_refresh_free(d);
    ev_loop_destroy(loop);
}

static void test_dns_refresh_failure_rate_backs_off(void **state)
{
    (void)state;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct owner o = {.known = true};
    struct dns_refresh_ops ops = {
        .stats = o_stats, .changed = o_changed, .init_done = o_init_done, .ud = &o};
    struct dns_refresh *d = dns_refresh_new(loop, &ops);
    resolver_set_lookup(dns_refresh_resolver(d), fake_lookup);
    set_answer("", "");
    struct str hosts[1] = {STR_LIT("backend.test")};
    /* refresh every 60 s, but failures every 10-40 ms: retries come quickly */
    struct cluster_cfg cfg = make_cfg(hosts, 1, 60000, 10);
    const struct cluster_cfg *v[1] = {&cfg};
    dns_refresh_sync(d, v, 1);
    run_until_stat(loop, &o.st.update_failure, 4);
    assert_true(stat_get(&o.st.update_failure) >= 4);
    assert_int_equal(o.changed, 0);
    set_answer("10.0.0.1", "");
    run_until(loop, &o.changed, 1); /* the next retry succeeds */
    assert_int_equal(o.changed, 1);
    uint64_t attempts = stat_get(&o.st.update_attempt);
    ev_timer idle;
    ev_timer_init(&idle, on_deadline, 0.2, 0);
    ev_timer_start(loop, &idle);
    ev_run(loop, 0);
    assert_int_equal(stat_get(&o.st.update_attempt), attempts); /* back to every 60 s */
    dns_refresh_free(d);
    ev_loop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dns_refresh_same_addrs_is_a_set_comparison),
        cmocka_unit_test(test_dns_refresh_next_ms_jitters_below_a_tenth),
        cmocka_unit_test(test_dns_refresh_resolves_changes_keeps_and_drops),
        cmocka_unit_test(test_dns_refresh_failure_rate_backs_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
