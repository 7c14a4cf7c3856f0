/* libFuzzer target for the request path normalizer (proxy/http/path_norm.h): the hostile
 * inputs catalogue's target (6), path normalization, with its invariants checked on every
 * input.
 *
 * Input: one byte of options (bit 0 normalize_path, bit 1 merge_slashes, bits 2-3
 * path_with_escaped_slashes_action), then the :path. It aborts when the output passes
 * path_norm_bound() (the buffer is exactly that size, so ASan sees it), when a forwarded result
 * does not normalize to itself again (idempotence: n(n(x)) == n(x)), when normalize_path leaves
 * a dot segment, a NUL or an escape made by decoding ("%%30%30" must not become "%00"), when
 * merge_slashes leaves "//" in the path part (but for a path that is "//" itself, Envoy's
 * all-slash case), or when the query changed.
 *
 *   make fuzz-run FUZZ_SECONDS=60      (or build/fuzz/path_norm_fuzz tests/fuzz/corpus/path_norm)
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/http/path_norm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

static bool has_dot_segment(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '/') {
            continue;
        }
        size_t j = i + 1;
        if (j < n && p[j] == '.') {
            j++;
        }
        if (j < n && p[j] == '.') {
            j++;
        }
        if (j > i + 1 && (j == n || p[j] == '/')) {
            return true;
        }
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    struct path_norm_opts o = {.normalize = (data[0] & 1) != 0,
                               .merge_slashes = (data[0] & 2) != 0,
                               .escaped_slashes = (uint8_t)((data[0] >> 2) & 3)};
    struct str in = {(const char *)data + 1, size - 1};
    size_t bound = path_norm_bound(&o, in);
    char *out = malloc(bound);
    check(out != NULL);
    size_t n = 0;
    enum path_norm_result r = path_normalize(&o, in, out, &n);
    check(n <= bound);
    if (r == PATH_NORM_REJECT) {
        free(out);
        return 0;
    }
    check(o.escaped_slashes != PATH_SLASHES_REJECT || r == PATH_NORM_CONTINUE);
    const char *iq = memchr(in.p, '?', in.len);
    const char *oq = memchr(out, '?', n);
    size_t plen = oq != NULL ? (size_t)(oq - out) : n;
    /* the query, byte for byte */
    check((iq == NULL) == (oq == NULL));
    check(iq == NULL || (size_t)(in.p + in.len - iq) == (size_t)(out + n - oq));
    check(iq == NULL || memcmp(iq, oq, (size_t)(out + n - oq)) == 0);
    if (o.normalize) {
        check(plen > 0 && out[0] == '/');
        check(!has_dot_segment(out, plen));
        check(memchr(out, '\0', plen) == NULL);
        for (size_t i = 0; i + 2 < plen; i++) {
            check(!(out[i] == '%' && out[i + 1] == '0' && out[i + 2] == '0'));
            check(!(out[i] == '%' && out[i + 1] == '2' && (out[i + 2] | 0x20) == 'e'));
        }
    }
    if (o.merge_slashes && !(plen == 2 && out[0] == '/' && out[1] == '/')) {
        for (size_t i = 0; i + 1 < plen; i++) {
            check(!(out[i] == '/' && out[i + 1] == '/'));
        }
    }
    if (o.normalize || o.merge_slashes) {
        /* idempotence, without the escaped-slash step (which changes what it finds) */
        struct path_norm_opts o2 = o;
        o2.escaped_slashes = PATH_SLASHES_KEEP;
        struct str s2 = {out, n};
        size_t bound2 = path_norm_bound(&o2, s2);
        char *out2 = malloc(bound2);
        check(out2 != NULL);
        size_t n2 = 0;
        enum path_norm_result r2 = path_normalize(&o2, s2, out2, &n2);
        check(r2 == PATH_NORM_CONTINUE && n2 == n && memcmp(out, out2, n) == 0);
        free(out2);
    }
    free(out);
    return 0;
}
