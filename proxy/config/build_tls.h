/* build_tls: the part of config building (build.c) that compiles a TransportSocket
 * (`envoy.transport_sockets.tls` with a DownstreamTlsContext on a filter chain, or an
 * UpstreamTlsContext on a cluster; `envoy.transport_sockets.raw_buffer`) into a
 * `struct tls_ctx` (proxy/net/tls.h): an OpenSSL SSL_CTX with the certificate, key, trust
 * store, versions, ciphers, groups, verify mode and callbacks (proxy/net/tls_verify.h) and
 * ALPN. Same rules as build.c: Envoy's defaults and validation, field-path errors, anything set
 * but not supported is rejected with "not supported by remora yet".
 *
 * Files (certificate_chain, private_key, trusted_ca given by `filename`) are read once, here:
 * a later change of a file is not picked up. Certificates and trust stores that may change at
 * run time come from SDS files (tls_certificate_sds_secret_configs,
 * validation_context_sds_secret_config: proxy/config/sds.h); their contexts get a
 * `struct tls_live` and one subscription per (file, secret name) in config.sds.
 *
 * The tls_ctx and its matchers live in the snapshot arena; the SSL_CTX (and compiled regexes)
 * are freed by the snapshot's cleanups (config_on_free).
 *
 * Thread: main (config time only). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"

struct Envoy__Config__Core__V3__TransportSocket;
struct Envoy__Extensions__TransportSockets__Tls__V3__Secret;
struct tls_ctx;
struct tls_material;

/* What the transport socket is for. */
enum build_tls_side {
    BUILD_TLS_DOWNSTREAM, /* a filter chain: DownstreamTlsContext, the server side */
    BUILD_TLS_UPSTREAM,   /* a cluster: UpstreamTlsContext, the client side */
};

/* Compiles transport socket `ts` (may be NULL: plaintext) found at field path `path` (e.g.
 * "static_resources.clusters[2].transport_socket") into snapshot `c`. `protocol` is the
 * cluster's upstream protocol (BUILD_TLS_UPSTREAM only: an HTTP/2 cluster without
 * alpn_protocols offers "h2"). Sets *out (NULL for plaintext). Returns 0 or -EINVAL with a
 * field-path error in `err`. */
int build_tls_transport_socket(struct config *c, struct err *err, const char *path,
                               const struct Envoy__Config__Core__V3__TransportSocket *ts,
                               enum build_tls_side side, enum upstream_protocol protocol,
                               const struct tls_ctx **out);

/* SDS (proxy/config/sds.c): compiles Secret `s` into `m` with the rules of a static context: its
 * validation_context (trusted_ca only) when `validation`, else its tls_certificate. Error paths
 * start with `where` ("<file>: resources[2]"). Returns 0, or -EINVAL (m left empty). */
int build_tls_secret(const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
                     bool validation, const char *where, struct tls_material *m, struct err *err);

/* For /config_dump (build.c): replaces, anywhere in `j`, every string inside the fields Envoy
 * marks sensitive in the TLS API (TlsCertificate private_key, password, pkcs12;
 * DownstreamTlsContext session_ticket_keys; GenericSecret secret, secrets) with "[redacted]", as
 * Envoy's admin does, so an inline private key is never served. */
void build_tls_redact(json_t *j);
