/* Unit tests for sotw: the state-of-the-world ADS rules of xds-wire.md §7 on one stream: a first
 * request is answered, an ACK or a NACK is not, a stale nonce is ignored, a subscription change
 * is answered, LDS/CDS wildcard versus named subscriptions, pushes only when the content a
 * subscription selects changes (versions follow content), and removals are flagged. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/core/xmalloc.h"
#include "xds/server/sotw.h"

/* A snapshot with the given resources of one type, data = the name's bytes + `salt`. */
static struct xds_snapshot *snap_of(enum xds_type t, const char *const *names, size_t n,
                                    const char *salt)
{
    struct xds_snapshot *s = xcalloc(1, sizeof(*s));
    s->mesh = xstrdup("m");
    s->res[t] = xcalloc(n ? n : 1, sizeof(struct xds_resource));
    for (size_t i = 0; i < n; i++) {
        s->res[t][i].name = xstrdup(names[i]);
        size_t len = strlen(names[i]) + strlen(salt);
        s->res[t][i].data = xmalloc(len + 1);
        strcpy((char *)s->res[t][i].data, names[i]);
        strcat((char *)s->res[t][i].data, salt);
        s->res[t][i].len = len;
    }
    s->n[t] = n;
    return s;
}

/* Answers a request of `t` as the server does; returns the nonce sent ("" when none). */
static char last_nonce[24];
static size_t answer(struct sotw *s, enum xds_type t, const struct xds_snapshot *snap, bool force,
                     char *version)
{
    struct sotw_resp r;
    last_nonce[0] = '\0';
    if (!sotw_prepare(s, t, snap, force, &r)) {
        return (size_t)-1;
    }
    sotw_commit(s, t, &r);
    strcpy(last_nonce, r.nonce);
    if (version) {
        strcpy(version, r.version);
    }
    size_t n = r.n;
    sotw_resp_clear(&r);
    return n;
}

static void test_first_ack_nack_stale(void **state)
{
    (void)state;
    const char *names[] = {"a", "b"};
    struct xds_snapshot *snap = snap_of(XDS_LDS, names, 2, "1");
    struct sotw s = {0};
    char *want[] = {"a"};
    assert_int_equal(sotw_request(&s, XDS_LDS, "", want, 1, false), SOTW_ANSWER);
    char v1[17];
    assert_int_equal(answer(&s, XDS_LDS, snap, true, v1), 1);
    char n1[24];
    strcpy(n1, last_nonce);
    assert_string_not_equal(n1, "");
    /* ACK: same names, last nonce: nothing to answer, and nothing to push either. */
    assert_int_equal(sotw_request(&s, XDS_LDS, n1, want, 1, false), SOTW_ACK);
    assert_int_equal(answer(&s, XDS_LDS, snap, false, NULL), (size_t)-1);
    /* A stale nonce is ignored, even with other names. */
    char *both[] = {"a", "b"};
    assert_int_equal(sotw_request(&s, XDS_LDS, "not-ours", both, 2, false), SOTW_STALE);
    assert_int_equal(s.t[XDS_LDS].n_names, 1);
    /* NACK with the same names: not answered; not pushed while the content is the same. */
    assert_int_equal(sotw_request(&s, XDS_LDS, n1, want, 1, true), SOTW_NACK);
    assert_int_equal(answer(&s, XDS_LDS, snap, false, NULL), (size_t)-1);
    /* The content changes: pushed, with a new version and nonce. */
    struct xds_snapshot *snap2 = snap_of(XDS_LDS, names, 2, "2");
    char v2[17];
    assert_int_equal(answer(&s, XDS_LDS, snap2, false, v2), 1);
    assert_string_not_equal(v1, v2);
    assert_string_not_equal(last_nonce, n1);
    /* A change elsewhere (resource b, not subscribed) pushes nothing. */
    const char *names3[] = {"a", "b", "c"};
    struct xds_snapshot *snap3 = snap_of(XDS_LDS, names3, 3, "2");
    assert_int_equal(answer(&s, XDS_LDS, snap3, false, NULL), (size_t)-1);
    /* The old nonce is now stale. */
    assert_int_equal(sotw_request(&s, XDS_LDS, n1, both, 2, false), SOTW_STALE);
    sotw_free(&s);
    xds_snapshot_free(snap);
    xds_snapshot_free(snap2);
    xds_snapshot_free(snap3);
}

static void test_names_change_answered(void **state)
{
    (void)state;
    const char *names[] = {"a", "b"};
    struct xds_snapshot *snap = snap_of(XDS_CDS, names, 2, "");
    struct sotw s = {0};
    char *a[] = {"a"}, *ab[] = {"b", "a", "a"};
    assert_int_equal(sotw_request(&s, XDS_CDS, "", a, 1, false), SOTW_ANSWER);
    assert_int_equal(answer(&s, XDS_CDS, snap, true, NULL), 1);
    char n1[24];
    strcpy(n1, last_nonce);
    /* grpc-js grows its CDS list: answered with both (duplicates collapse). */
    assert_int_equal(sotw_request(&s, XDS_CDS, n1, ab, 3, false), SOTW_ANSWER);
    assert_int_equal(s.t[XDS_CDS].n_names, 2);
    assert_int_equal(answer(&s, XDS_CDS, snap, true, NULL), 2);
    /* Dropping a name is a change too; the response lacks b: a removal. */
    assert_int_equal(sotw_request(&s, XDS_CDS, last_nonce, a, 1, false), SOTW_ANSWER);
    struct sotw_resp r;
    assert_true(sotw_prepare(&s, XDS_CDS, snap, true, &r));
    assert_true(r.removes);
    assert_int_equal(r.n, 1);
    sotw_resp_clear(&r);
    sotw_free(&s);
    xds_snapshot_free(snap);
}

static void test_wildcard(void **state)
{
    (void)state;
    const char *names[] = {"a", "b", "c"};
    struct xds_snapshot *snap = snap_of(XDS_CDS, names, 3, "");
    struct sotw s = {0};
    /* An empty first CDS request is the wildcard: everything. */
    assert_int_equal(sotw_request(&s, XDS_CDS, "", NULL, 0, false), SOTW_ANSWER);
    assert_true(s.t[XDS_CDS].wildcard);
    assert_int_equal(answer(&s, XDS_CDS, snap, true, NULL), 3);
    /* Its ACKs (empty again) stay wildcard and need no answer. */
    assert_int_equal(sotw_request(&s, XDS_CDS, last_nonce, NULL, 0, false), SOTW_ACK);
    assert_true(s.t[XDS_CDS].wildcard);
    /* A new cluster is pushed to a wildcard subscriber. */
    const char *names4[] = {"a", "b", "c", "d"};
    struct xds_snapshot *snap4 = snap_of(XDS_CDS, names4, 4, "");
    assert_int_equal(answer(&s, XDS_CDS, snap4, false, NULL), 4);
    /* "*" is the wildcard too. */
    struct sotw s2 = {0};
    char *star[] = {"*"};
    assert_int_equal(sotw_request(&s2, XDS_LDS, "", star, 1, false), SOTW_ANSWER);
    assert_true(s2.t[XDS_LDS].wildcard);
    /* RDS and EDS have no wildcard: an empty first request subscribes to nothing, and no
     * response is due for it. */
    assert_int_equal(sotw_request(&s2, XDS_RDS, "", NULL, 0, false), SOTW_ANSWER);
    assert_false(s2.t[XDS_RDS].wildcard);
    assert_int_equal(answer(&s2, XDS_RDS, snap4, true, NULL), (size_t)-1);
    /* After names were sent, an empty LDS list means none (not the wildcard). */
    struct sotw s3 = {0};
    char *a[] = {"a"};
    assert_int_equal(sotw_request(&s3, XDS_LDS, "", a, 1, false), SOTW_ANSWER);
    answer(&s3, XDS_LDS, snap4, true, NULL);
    assert_int_equal(sotw_request(&s3, XDS_LDS, last_nonce, NULL, 0, false), SOTW_ANSWER);
    assert_false(s3.t[XDS_LDS].wildcard);
    assert_int_equal(answer(&s3, XDS_LDS, snap4, true, NULL), 0);
    sotw_free(&s);
    sotw_free(&s2);
    sotw_free(&s3);
    xds_snapshot_free(snap);
    xds_snapshot_free(snap4);
}

static void test_missing_and_deleted(void **state)
{
    (void)state;
    struct sotw s = {0};
    char *x[] = {"x"};
    /* A name that does not exist: the answer carries nothing (no mesh: NULL snapshot). */
    assert_int_equal(sotw_request(&s, XDS_EDS, "", x, 1, false), SOTW_ANSWER);
    assert_int_equal(answer(&s, XDS_EDS, NULL, true, NULL), 0);
    /* It appears: pushed. */
    const char *names[] = {"x"};
    struct xds_snapshot *snap = snap_of(XDS_EDS, names, 1, "");
    assert_int_equal(answer(&s, XDS_EDS, snap, false, NULL), 1);
    /* It goes: pushed as an empty response, flagged as a removal. */
    struct sotw_resp r;
    assert_true(sotw_prepare(&s, XDS_EDS, NULL, false, &r));
    assert_true(r.removes);
    assert_int_equal(r.n, 0);
    sotw_resp_clear(&r);
    sotw_free(&s);
    xds_snapshot_free(snap);
}

static void test_versions_follow_content(void **state)
{
    (void)state;
    const char *names[] = {"a"};
    struct xds_snapshot *s1 = snap_of(XDS_RDS, names, 1, "same");
    struct xds_snapshot *s2 = snap_of(XDS_RDS, names, 1, "same");
    struct sotw a = {0}, b = {0};
    char *n[] = {"a"};
    char va[17], vb[17];
    sotw_request(&a, XDS_RDS, "", n, 1, false);
    sotw_request(&b, XDS_RDS, "", n, 1, false);
    answer(&a, XDS_RDS, s1, true, va);
    answer(&b, XDS_RDS, s2, true, vb);
    /* Same content, same version, on any stream (a reconnect is answered in full). */
    assert_string_equal(va, vb);
    sotw_free(&a);
    sotw_free(&b);
    xds_snapshot_free(s1);
    xds_snapshot_free(s2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_ack_nack_stale),
        cmocka_unit_test(test_names_change_answered),
        cmocka_unit_test(test_wildcard),
        cmocka_unit_test(test_missing_and_deleted),
        cmocka_unit_test(test_versions_follow_content),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
