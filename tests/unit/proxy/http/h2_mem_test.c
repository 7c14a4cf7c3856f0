/* Unit tests for proxy/http/h2_mem: nghttp2's allocator from per-worker size classes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/http/h2_mem.h"

static void test_blocks_come_back_to_their_class(void **state)
{
    (void)state;
    struct h2_mem m;
    h2_mem_init(&m);
    nghttp2_mem *mem = &m.mem;
    void *small = mem->malloc(40, mem->mem_user_data); /* 40 + header fits 64 */
    void *mid = mem->malloc(200, mem->mem_user_data);  /* 256 */
    assert_int_equal((uintptr_t)small % 16, 0);
    memset(small, 1, 40);
    memset(mid, 2, 200);
    mem->free(small, mem->mem_user_data);
    mem->free(mid, mem->mem_user_data);
    assert_int_equal(m.cls[0].n, 1);
    assert_int_equal(m.cls[2].n, 1);
    /* the next allocation of that class reuses the block */
    assert_ptr_equal(mem->malloc(30, mem->mem_user_data), small);
    mem->free(small, mem->mem_user_data);
    mem->free(NULL, mem->mem_user_data);
    h2_mem_trim(&m);
}

static void test_big_calloc_and_realloc(void **state)
{
    (void)state;
    struct h2_mem m;
    h2_mem_init(&m);
    nghttp2_mem *mem = &m.mem;
    uint8_t *z = mem->calloc(10, 10, mem->mem_user_data);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(z[i], 0);
    }
    memset(z, 7, 100);
    /* growing past the class keeps the bytes and frees the old block into its class */
    uint8_t *g = mem->realloc(z, 3000, mem->mem_user_data);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(g[i], 7);
    }
    assert_int_equal(m.cls[1].n, 1); /* 100 + header: the 128-byte class */
    /* beyond the largest class: plain malloc, and realloc of it too */
    uint8_t *big = mem->realloc(g, 100000, mem->mem_user_data);
    assert_int_equal(big[99], 7);
    big = mem->realloc(big, 200000, mem->mem_user_data);
    assert_int_equal(big[0], 7);
    mem->free(big, mem->mem_user_data);
    assert_null(mem->calloc(SIZE_MAX / 2, 4, mem->mem_user_data)); /* overflow */
    h2_mem_trim(&m);
    for (int c = 0; c < H2_MEM_CLASSES; c++) {
        assert_int_equal(m.cls[c].n, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks_come_back_to_their_class),
        cmocka_unit_test(test_big_calloc_and_realloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
