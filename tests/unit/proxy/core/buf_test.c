/* Unit tests for proxy/core/buf: growth, release when drained, and the thread's block cache. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/blkcache.h"
#include "proxy/core/buf.h"

static void test_append_consume_and_grow_keep_the_bytes(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_append(&b, "hello ", 6);
    buf_consume(&b, 2);
    char big[3000];
    memset(big, 'x', sizeof(big));
    buf_append(&b, big, sizeof(big)); /* past the first block: grows, keeps "llo " in front */
    assert_int_equal(buf_len(&b), 4 + sizeof(big));
    assert_memory_equal(buf_head(&b), "llo x", 5);
    assert_true(b.cap >= 4 + sizeof(big));
    buf_consume(&b, buf_len(&b));
    buf_release(&b);
    assert_null(b.data);
    assert_int_equal(b.cap, 0);
    buf_deinit(&b);
}

static void test_release_keeps_a_buffer_that_holds_bytes(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    buf_release(&b); /* nothing held: nothing to do */
    assert_null(b.data);
    buf_append(&b, "ab", 2);
    buf_release(&b);
    assert_non_null(b.data);
    assert_memory_equal(buf_head(&b), "ab", 2);
    buf_deinit(&b);
    assert_null(b.data);
}

static void test_first_blocks_come_from_and_go_back_to_the_threads_cache(void **state)
{
    (void)state;
    struct blk_cache c;
    blk_cache_init(&c, BUF_MIN_CAP, 2);
    buf_use_block_cache(&c);
    struct buf a, b;
    buf_init(&a);
    buf_init(&b);
    buf_append(&a, "x", 1);
    void *first = a.data;
    assert_int_equal(a.cap, BUF_MIN_CAP);
    buf_consume(&a, 1);
    buf_release(&a); /* drained: its block goes to the cache, not to malloc */
    assert_int_equal(c.n, 1);
    buf_append(&b, "y", 1);
    assert_ptr_equal(b.data, first); /* the next buffer takes that same block */
    assert_int_equal(c.n, 0);

    char big[BUF_MIN_CAP + 1];
    memset(big, 'z', sizeof(big));
    buf_append(&b, big,
               sizeof(big)); /* grows: the small block goes back, the big one is malloc's */
    assert_int_equal(c.n, 1);
    assert_true(b.cap > BUF_MIN_CAP);
    assert_memory_equal(buf_head(&b), "yz", 2);
    buf_deinit(&b); /* a big block is freed, never cached (ASan checks it is freed) */
    assert_int_equal(c.n, 1);

    buf_use_block_cache(NULL); /* back to plain malloc */
    buf_append(&a, "w", 1);
    assert_int_equal(c.n, 1);
    buf_deinit(&a);
    assert_int_equal(c.n, 1);
    blk_cache_deinit(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_consume_and_grow_keep_the_bytes),
        cmocka_unit_test(test_release_keeps_a_buffer_that_holds_bytes),
        cmocka_unit_test(test_first_blocks_come_from_and_go_back_to_the_threads_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
