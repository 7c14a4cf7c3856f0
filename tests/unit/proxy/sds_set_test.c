/* Unit tests for proxy/sds_set.c: the ADS secrets by name shared by the bootstrap and the LDS
 * listeners and CDS clusters (census of the names in use, name-set changes that make a new
 * Secret request, the generation that seeds a new container once, and the startup-wait
 * decision). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/sds_set.h"

static int freed;

static void free_pb(void *pb)
{
    freed++;
    free(pb);
}

static void test_sds_set_census_follows_names_in_use(void **state)
{
    (void)state;
    struct sds_set s;
    sds_set_init(&s, free_pb);
    struct sds_stats boot_st = {0};
    struct sds_entry *b = sds_set_add_boot(&s, "boot", 0, 15000, &boot_st);
    assert_ptr_equal(b->stats, &boot_st);
    assert_true(sds_set_end(&s)); /* the bootstrap's names: the first set */

    /* an LDS listener names "cert" and "ca": two new names */
    sds_set_begin(&s);
    struct sds_entry *c = sds_set_use(&s, "cert", 1000);
    sds_set_use(&s, "ca", 0);
    sds_set_use(&s, "cert", 5000); /* a second user: one entry, the first timeout kept */
    assert_true(sds_set_end(&s));
    assert_int_equal(s.n, 3);
    assert_int_equal(c->fetch_timeout_ms, 1000);
    assert_ptr_equal(c->stats, &c->own);
    const char *names[4];
    assert_int_equal(sds_set_names(&s, names, 4), 3);
    assert_string_equal(names[0], "boot");
    assert_string_equal(names[1], "cert");
    assert_string_equal(names[2], "ca");

    /* the same names again: no new request */
    sds_set_begin(&s);
    sds_set_use(&s, "ca", 0);
    sds_set_use(&s, "cert", 0);
    assert_false(sds_set_end(&s));

    /* "cert" arrives, then goes out of use: dropped with its secret; the bootstrap's stays
     * even when no dynamic container names it */
    sds_set_accept(&s, sds_set_find(&s, "cert"), malloc(8), "v1", 1.0);
    freed = 0;
    sds_set_begin(&s);
    sds_set_use(&s, "ca", 0);
    assert_true(sds_set_end(&s));
    assert_int_equal(freed, 1);
    assert_null(sds_set_find(&s, "cert"));
    assert_non_null(sds_set_find(&s, "boot"));
    assert_int_equal(sds_set_names(&s, NULL, 0), 2);

    /* a dynamic container naming the bootstrap's secret shares its entry and stats */
    sds_set_begin(&s);
    assert_ptr_equal(sds_set_use(&s, "boot", 0), b);
    assert_true(sds_set_end(&s)); /* "ca" went */
    assert_int_equal(s.n, 1);
    sds_set_deinit(&s);
}

static void test_sds_set_generation_seeds_once(void **state)
{
    (void)state;
    struct sds_set s;
    sds_set_init(&s, free_pb);
    sds_set_begin(&s);
    struct sds_entry *e = sds_set_use(&s, "cert", 0);
    sds_set_end(&s);
    /* nothing arrived: nothing to give a new container (it fails closed) */
    assert_false(sds_set_needs_seed(e, 0));
    freed = 0;
    sds_set_accept(&s, e, malloc(8), "v1", 2.0);
    assert_true(e->arrived);
    assert_int_equal(e->gen, 1);
    assert_string_equal(e->version, "v1");
    assert_true(sds_set_needs_seed(e, 0));       /* a container made before it arrived */
    assert_false(sds_set_needs_seed(e, 1));      /* given already */
    sds_set_accept(&s, e, malloc(8), "v2", 3.0); /* a rotation */
    assert_int_equal(freed, 1);                  /* the previous secret */
    assert_true(sds_set_needs_seed(e, 1));
    assert_false(sds_set_needs_seed(e, 2));
    sds_set_deinit(&s);
    assert_int_equal(freed, 2);
}

static void test_sds_set_warming_decisions(void **state)
{
    (void)state;
    struct sds_set s;
    sds_set_init(&s, NULL);
    struct sds_stats st = {0};
    struct sds_entry *b = sds_set_add_boot(&s, "boot", 0, 0, &st);
    sds_set_begin(&s);
    struct sds_entry *e = sds_set_use(&s, "cert", 0);
    sds_set_end(&s);
    /* at startup a dynamic name not received yet is waited for, once */
    assert_true(sds_set_should_wait(e, true));
    e->wait_started = true;
    assert_false(sds_set_should_wait(e, true));
    /* the bootstrap's names have their own wait */
    assert_false(sds_set_should_wait(b, true));
    /* after startup nothing waits: the listener or cluster fails closed until it arrives */
    struct sds_entry *late = NULL;
    sds_set_begin(&s);
    sds_set_use(&s, "cert", 0);
    late = sds_set_use(&s, "late", 0);
    sds_set_end(&s);
    assert_false(sds_set_should_wait(late, false));
    /* a name received already is not waited for */
    static char pb[1];
    sds_set_accept(&s, late, pb, "v", 1.0);
    assert_false(sds_set_should_wait(late, true));
    sds_set_deinit(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sds_set_census_follows_names_in_use),
        cmocka_unit_test(test_sds_set_generation_seeds_once),
        cmocka_unit_test(test_sds_set_warming_decisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
