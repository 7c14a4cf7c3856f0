/* ads_tls: the xDS port's TLS server context (ads_tls.h): an OpenSSL SSL_CTX wrapped in the
 * proxy's struct tls_ctx, so ads.c drives its connections with proxy/net/tls.c and classifies
 * handshake failures with proxy/net/tls_verify.c. Owns the SSL_CTX and, for a certificate it
 * issued itself, the renewal timer. */
#include "xds/server/ads_tls.h"

#include <errno.h>
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "certs/ca.h"
#include "proxy/core/log.h"
#include "proxy/core/xmalloc.h"
#include "proxy/net/tls.h"
#include "proxy/net/tls_verify.h"

#define RETRY_S 60.0 /* a failed re-issue is tried again after this */

struct ads_tls {
    struct tls_ctx tc; /* tc.ssl_ctx owned */
    struct ev_loop *loop;
    const struct mesh_ca *ca; /* borrowed; NULL when the certificate came from files */
    const char *names[ADS_TLS_MAX_NAMES];
    size_t n_names;
    uint64_t lifetime_s;
    ev_timer renew;
    char describe[512];
};

static const char *openssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e != 0 ? ERR_reason_error_string(e) : NULL;
    return r != NULL ? r : "unknown reason";
}

/* "h2" when the client offers it; a client offering only other protocols is refused. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char h2[] = {2, 'h', '2'};
    unsigned char *o = NULL;
    if (SSL_select_next_proto(&o, outlen, h2, sizeof(h2), in, inlen) != OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

/* Issues a certificate from the mesh CA and makes it the context's; arms the renewal at half its
 * lifetime. Returns 0, or -1 with an error. */
static int issue(struct ads_tls *t, struct err *err)
{
    struct svid s;
    time_t now = time(NULL);
    if (mesh_ca_issue_server(t->ca, t->names, t->n_names, t->lifetime_s, now, &s, err) != 0) {
        return -1;
    }
    BIO *cb = BIO_new_mem_buf(s.cert_pem, -1);
    BIO *kb = BIO_new_mem_buf(s.key_pem, -1);
    X509 *x = cb != NULL ? PEM_read_bio_X509(cb, NULL, tls_no_password, NULL) : NULL;
    EVP_PKEY *k = kb != NULL ? PEM_read_bio_PrivateKey(kb, NULL, tls_no_password, NULL) : NULL;
    /* remora-xds is single-threaded: no SSL_new runs while the certificate changes, and each
     * SSL made before keeps its own copy (see struct tls_live in proxy/net/tls.h). */
    int rc =
        x != NULL && k != NULL && SSL_CTX_use_cert_and_key(t->tc.ssl_ctx, x, k, NULL, 1) == 1
            ? 0
            : err_set(err, NULL, "the issued certificate cannot be used (%s)", openssl_reason());
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(k);
    BIO_free(cb);
    BIO_free(kb);
    if (rc == 0) {
        double half = (double)(s.not_after - s.not_before) / 2.0;
        double due = (double)s.not_before + half - (double)now;
        ev_timer_stop(t->loop, &t->renew);
        ev_timer_set(&t->renew, due > 1.0 ? due : 1.0, 0);
        ev_timer_start(t->loop, &t->renew);
        LOG_I("xds: TLS certificate issued by the mesh CA (serial %s), valid until %lld, "
              "renewed in %.0f s",
              s.serial_hex, (long long)s.not_after, due);
    }
    svid_free(&s);
    return rc < 0 ? -1 : 0;
}

static void renew_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct ads_tls *t = w->data;
    struct err err;
    err_clear(&err);
    if (issue(t, &err) != 0) {
        /* The one in force stays until it expires: try again shortly. */
        LOG_E("xds: renewing the xDS port's TLS certificate: %s; retrying in %.0f s", err.msg,
              RETRY_S);
        ev_timer_set(w, RETRY_S, 0);
        ev_timer_start(loop, w);
    }
}

static int from_files(struct ads_tls *t, const struct ads_tls_opts *o, struct err *err)
{
    SSL_CTX *ctx = t->tc.ssl_ctx;
    if (SSL_CTX_use_certificate_chain_file(ctx, o->cert_file) != 1) {
        return err_set(err, "--xds-tls-cert", "no usable PEM certificate chain in '%s' (%s)",
                       o->cert_file, openssl_reason());
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
        return err_set(err, "--xds-tls-key",
                       "no usable PEM private key in '%s' (%s; encrypted keys are not supported)",
                       o->key_file, openssl_reason());
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        return err_set(err, "--xds-tls-key", "'%s' is not the key of the certificate in '%s'",
                       o->key_file, o->cert_file);
    }
    snprintf(t->describe, sizeof(t->describe), "certificate from %s", o->cert_file);
    return 0;
}

static int client_ca(struct ads_tls *t, const char *file, struct err *err)
{
    SSL_CTX *ctx = t->tc.ssl_ctx;
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(file);
    if (names == NULL || sk_X509_NAME_num(names) == 0 ||
        SSL_CTX_load_verify_locations(ctx, file, NULL) != 1) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return err_set(err, "--xds-tls-client-ca", "no usable PEM CA certificate in '%s' (%s)",
                       file, openssl_reason());
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes the list */
    /* tls_verify_cb classifies a chain failure; tls_verify_info_cb a missing certificate. */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, tls_verify_cb);
    SSL_CTX_set_info_callback(ctx, tls_verify_info_cb);
    size_t n = strlen(t->describe);
    snprintf(t->describe + n, sizeof(t->describe) - n, ", clients verified against %s (mTLS)",
             file);
    return 0;
}

struct ads_tls *ads_tls_new(struct ev_loop *loop, const struct ads_tls_opts *o, struct err *err)
{
    struct ads_tls *t = xcalloc(1, sizeof(*t));
    t->loop = loop;
    ev_init(&t->renew, renew_cb);
    t->renew.data = t;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        err_set(err, NULL, "OpenSSL: %s", openssl_reason());
        free(t);
        return NULL;
    }
    t->tc.ssl_ctx = ctx;
    t->tc.server = true;
    SSL_CTX_set_app_data(ctx, &t->tc); /* tls_verify_cb finds the (absent) SAN matchers */
    SSL_CTX_set_default_passwd_cb(ctx, tls_no_password);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    static const unsigned char sid[] = "remora-xds";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof(sid) - 1);
    int rc;
    if (o->cert_file != NULL) {
        rc = from_files(t, o, err);
    } else if (o->ca == NULL) {
        rc = err_set(err, "--xds-tls",
                     "needs a certificate: --xds-tls-cert and --xds-tls-key, or --ca-dir "
                     "(remora-xds issues its own)");
    } else if (o->n_names > ADS_TLS_MAX_NAMES) {
        rc = err_set(err, "--xds-tls-name", "at most %d names", ADS_TLS_MAX_NAMES);
    } else {
        t->ca = o->ca;
        t->lifetime_s = o->lifetime_s;
        t->n_names = o->n_names;
        size_t w = (size_t)snprintf(t->describe, sizeof(t->describe),
                                    "certificate issued by the mesh CA for");
        for (size_t i = 0; i < o->n_names; i++) {
            t->names[i] = o->names[i];
            if (w < sizeof(t->describe)) {
                w += (size_t)snprintf(t->describe + w, sizeof(t->describe) - w, " %s", o->names[i]);
            }
        }
        rc = issue(t, err);
    }
    if (rc == 0 && o->client_ca_file != NULL) {
        rc = client_ca(t, o->client_ca_file, err);
    }
    ERR_clear_error();
    if (rc != 0) {
        ads_tls_free(t);
        return NULL;
    }
    return t;
}

const struct tls_ctx *ads_tls_ctx(const struct ads_tls *t)
{
    return &t->tc;
}

const char *ads_tls_describe(const struct ads_tls *t)
{
    return t->describe;
}

void ads_tls_free(struct ads_tls *t)
{
    if (t == NULL) {
        return;
    }
    ev_timer_stop(t->loop, &t->renew);
    SSL_CTX_free(t->tc.ssl_ctx);
    free(t);
}
