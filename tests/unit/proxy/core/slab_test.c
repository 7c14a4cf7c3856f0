/* Unit tests for the slab allocator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/slab.h"

static void test_slab_alloc_free_reuse(void **state)
{
    (void)state;
    struct slab s;
    slab_init(&s, 100);
    assert_int_equal(s.obj_size % 16, 0);
    void *a = slab_alloc(&s);
    void *b = slab_alloc(&s);
    assert_ptr_not_equal(a, b);
    assert_int_equal((uintptr_t)a % 16, 0);
    assert_int_equal((uintptr_t)b % 16, 0);
    memset(a, 0xab, 100);
    slab_free(&s, a);
    void *c = slab_alloc(&s);
    assert_ptr_equal(a, c); /* the free list hands back the last freed object */
    for (int i = 0; i < 100; i++) {
        assert_int_equal(((unsigned char *)c)[i], 0); /* zeroed */
    }
    assert_int_equal(s.n_live, 2);
    slab_free(&s, b);
    slab_free(&s, c);
    assert_int_equal(s.n_live, 0);
    slab_deinit(&s);
}

static void test_slab_many_objects_distinct(void **state)
{
    (void)state;
    struct slab s;
    slab_init(&s, 1000);
    enum { N = 500 }; /* several chunks */
    unsigned char *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = slab_alloc(&s);
        memset(p[i], i & 0xff, 1000);
    }
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < 1000; k += 97) {
            assert_int_equal(p[i][k], i & 0xff); /* no overlap between objects */
        }
    }
    for (int i = 0; i < N; i++) {
        slab_free(&s, p[i]);
    }
    assert_int_equal(s.n_live, 0);
    slab_deinit(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slab_alloc_free_reuse),
        cmocka_unit_test(test_slab_many_objects_distinct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
