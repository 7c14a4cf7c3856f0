/* Unit tests for hash: XXH64 against reference values (computed with the reference
 * implementation, libxxhash 0.8.1), covering every tail length path and seeds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/hash.h"

static void test_hash_xxh64_reference_values(void **state)
{
    (void)state;
    assert_true(hash_xxh64(NULL, 0, 0) == 0xef46db3751d8e999ULL); /* {NULL, 0}: no UB */
    assert_true(hash_xxh64("", 0, 0) == 0xef46db3751d8e999ULL);
    assert_true(hash_xxh64("a", 1, 0) == 0xd24ec4f1a98c6e5bULL);
    assert_true(hash_xxh64("abc", 3, 0) == 0x44bc2cf5ad770999ULL);
    assert_true(hash_xxh64("abc", 3, 1) == 0xbea9ca8199328908ULL);
    const char *k = "127.0.0.1:8080_0";
    assert_true(hash_xxh64(k, strlen(k), 0) == 0xf673a43b9624fa24ULL);
    const char *s = "Nobody inspects the spammish repetition";
    assert_true(hash_xxh64(s, strlen(s), 0) == 0xfbcea83c8a378bf1ULL);
    const char *t = "0123456789abcdef0123456789abcdef0";
    assert_true(hash_xxh64(t, strlen(t), 7) == 0x4f54109a9de9ef94ULL);
    uint8_t b[200];
    for (int i = 0; i < 200; i++) {
        b[i] = (uint8_t)i;
    }
    assert_true(hash_xxh64(b, sizeof(b), 0) == 0x50dc1079b99e879cULL);
    assert_true(hash_xxh64(b, sizeof(b), 0x9E3779B185EBCA8DULL) == 0x7d8145b8ed9b5317ULL);
}

static void test_hash_xxh64_unaligned_input(void **state)
{
    (void)state;
    /* The same bytes at every alignment hash the same. */
    char buf[80];
    const char *s = "Nobody inspects the spammish repetition";
    size_t n = strlen(s);
    for (size_t off = 0; off < 8; off++) {
        memcpy(buf + off, s, n);
        assert_true(hash_xxh64(buf + off, n, 0) == 0xfbcea83c8a378bf1ULL);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hash_xxh64_reference_values),
        cmocka_unit_test(test_hash_xxh64_unaligned_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
