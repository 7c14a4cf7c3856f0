/* Unit tests for proxy/core/blkcache: a bounded LIFO of freed blocks in front of malloc. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/arena.h"
#include "proxy/core/blkcache.h"

static void test_reuses_the_last_block_given_back(void **state)
{
    (void)state;
    struct blk_cache c;
    blk_cache_init(&c, 256, 4);
    void *a = blk_cache_get(&c);
    void *b = blk_cache_get(&c);
    memset(a, 0xab, 256); /* the whole block is usable */
    blk_cache_put(&c, a);
    blk_cache_put(&c, b);
    assert_int_equal(c.n, 2);
    assert_ptr_equal(blk_cache_get(&c), b); /* LIFO: the warm one first */
    assert_ptr_equal(blk_cache_get(&c), a);
    assert_int_equal(c.n, 0);
    blk_cache_put(&c, a);
    blk_cache_put(&c, b);
    blk_cache_deinit(&c);
}

static void test_keeps_at_most_cap_and_trims_to_empty(void **state)
{
    (void)state;
    struct blk_cache c;
    blk_cache_init(&c, 64, 3);
    void *p[5];
    for (int i = 0; i < 5; i++) {
        p[i] = blk_cache_get(&c);
    }
    for (int i = 0; i < 5; i++) {
        blk_cache_put(&c, p[i]); /* the last two go back to malloc (ASan checks they are freed) */
    }
    assert_int_equal(c.n, 3);
    blk_cache_deinit(&c); /* a trim: the cache stays usable */
    assert_int_equal(c.n, 0);
    assert_null(c.free);
    void *q = blk_cache_get(&c);
    assert_non_null(q);
    blk_cache_put(&c, q);
    assert_int_equal(c.n, 1);
    blk_cache_deinit(&c);
}

static void test_cached_arena_takes_and_returns_normal_blocks_only(void **state)
{
    (void)state;
    struct blk_cache c;
    blk_cache_init(&c, arena_cache_block_size(512), 8);
    struct arena a;
    arena_init_cached(&a, &c);
    assert_int_equal(a.block_size, 512);
    arena_alloc(&a, 100);
    arena_alloc(&a, 200);
    arena_alloc(&a, 250);  /* does not fit what is left: a second normal block */
    arena_alloc(&a, 4000); /* a big one-off block: malloc, not the cache */
    arena_deinit(&a);
    assert_int_equal(c.n, 2);
    arena_init_cached(&a, &c);
    arena_alloc(&a, 10);
    assert_int_equal(c.n, 1); /* the first block came from the cache */
    arena_deinit(&a);
    assert_int_equal(c.n, 2);
    blk_cache_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reuses_the_last_block_given_back),
        cmocka_unit_test(test_keeps_at_most_cap_and_trims_to_empty),
        cmocka_unit_test(test_cached_arena_takes_and_returns_normal_blocks_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
