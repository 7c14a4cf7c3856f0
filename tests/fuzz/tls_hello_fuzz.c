/* libFuzzer target for the tls_inspector's ClientHello reader (proxy/net/tls_inspector.c:
 * tls_hello_parse), which sees the first bytes of every connection to a listener with the
 * filter, before any TLS library has checked them. Beyond the sanitizers, it aborts when a
 * result breaks the reader's promises: TLS_HELLO_MORE must ask for more bytes than it was
 * given and no more than the ClientHello limit allows; a found SNI must be lower-case
 * printable ASCII of the reported length; ALPN entries must lie inside the result's own buffer
 * and within its limits; and the same bytes must give the same answer twice (no state kept).
 *
 * Input: the client's first bytes. Seeds: ClientHellos written by OpenSSL (Python's ssl), in
 * tests/fuzz/corpus/tls_hello.
 *
 * Build and run: `make fuzz` / `make fuzz-replay`;
 *   ./build/fuzz/tls_hello_fuzz tests/fuzz/corpus/tls_hello */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/net/tls_inspector.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "tls_hello_fuzz: check failed: %s (line %d)\n", #cond, __LINE__);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void check_result(enum tls_hello_rc rc, const struct tls_hello *h, size_t size)
{
    switch (rc) {
    case TLS_HELLO_MORE:
        CHECK(h->need > size);
        CHECK(h->need <= TLS_HELLO_MAX);
        break;
    case TLS_HELLO_FOUND:
        CHECK(h->sni_len < sizeof(h->sni));
        CHECK(strlen(h->sni) == h->sni_len);
        for (size_t i = 0; i < h->sni_len; i++) {
            char c = h->sni[i];
            CHECK(c > 0x20 && c < 0x7f && !(c >= 'A' && c <= 'Z'));
        }
        CHECK(h->n_alpn <= TLS_HELLO_ALPN_MAX);
        CHECK(h->n_alpn == 0 || h->alpn_found);
        for (uint32_t i = 0; i < h->n_alpn; i++) {
            const char *p = h->alpn[i].p;
            CHECK(h->alpn[i].len > 0);
            CHECK(p >= h->alpn_buf && p + h->alpn[i].len <= h->alpn_buf + sizeof(h->alpn_buf));
        }
        break;
    case TLS_HELLO_NOT_TLS:
    case TLS_HELLO_TOO_LARGE:
        break;
    default:
        CHECK(!"unknown result");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct tls_hello a, b; /* large (about 1 KiB): not on the stack each run */
    memset(&a, 0xa5, sizeof(a));
    memset(&b, 0x5a, sizeof(b));
    enum tls_hello_rc ra = tls_hello_parse(data, size, &a);
    check_result(ra, &a, size);
    enum tls_hello_rc rb = tls_hello_parse(data, size, &b);
    CHECK(ra == rb);
    if (ra == TLS_HELLO_MORE) {
        CHECK(a.need == b.need);
    }
    if (ra == TLS_HELLO_FOUND) {
        CHECK(a.sni_len == b.sni_len && memcmp(a.sni, b.sni, a.sni_len) == 0);
        CHECK(a.n_alpn == b.n_alpn);
        for (uint32_t i = 0; i < a.n_alpn; i++) {
            CHECK(a.alpn[i].len == b.alpn[i].len &&
                  memcmp(a.alpn[i].p, b.alpn[i].p, a.alpn[i].len) == 0);
        }
    }
    return 0;
}
