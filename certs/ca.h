/* ca: the mesh's certificate authority. It makes a CA (an ECDSA P-256 key and a self-signed
 * certificate for one SPIFFE trust domain), keeps it in a directory (ca.pem, and ca.key readable
 * by its owner only), and issues workload certificates: X.509-SVIDs in the SPIFFE sense, each
 * with a fresh P-256 key and exactly one URI SAN, its SPIFFE ID (spiffe://<trust domain>/<path>),
 * usable as a TLS server and as a client certificate (mTLS). remora's SAN matchers
 * (match_typed_subject_alt_names with san_type URI) check those IDs.
 *
 * An issued identity is delivered as an SDS file (sds_secret_json): the certificate and key as
 * one `tls_certificate` secret and the CA as one `validation_context` secret, inline, in the
 * DiscoveryResponse shape remora and Envoy read from a path_config_source. Writing that file
 * atomically is what rotates a proxy's certificate (proxy/config/sds.h watches it).
 *
 * Used by certs/cli (build/remora-certs). Thread: any; nothing is shared. Errors are messages
 * in a struct err. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "proxy/core/err.h"

struct mesh_ca;

/* Limits of a SPIFFE ID (the SPIFFE ID spec: at most 2048 bytes). */
#define SPIFFE_ID_MAX 2048
#define TRUST_DOMAIN_MAX 255

/* Checks `td` as a SPIFFE trust domain: 1-255 bytes of lower-case letters, digits, '.', '-' and
 * '_'. Returns 0 or an error naming what is wrong. */
int spiffe_check_trust_domain(const char *td, struct err *err);

/* Checks `id` as a SPIFFE ID: "spiffe://" then a trust domain, then a path of one or more
 * segments "/seg" where a segment is 1+ of [A-Za-z0-9.-_] and is not "." or ".."; no query,
 * fragment, port or user info; at most SPIFFE_ID_MAX bytes. When `td` is non-NULL the trust
 * domain must equal it. Returns 0 or an error. */
int spiffe_check_id(const char *id, const char *td, struct err *err);

/* Makes a new CA for trust domain `td`, valid from a minute ago for `days` days. NULL and an
 * error on failure. */
struct mesh_ca *mesh_ca_create(const char *td, unsigned days, struct err *err);

/* Writes `dir`/ca.pem (0644) and `dir`/ca.key (0600), each atomically. `dir` must exist. */
int mesh_ca_save(const struct mesh_ca *ca, const char *dir, struct err *err);

/* Loads the CA saved in `dir`: checks that the key is the certificate's and that the
 * certificate is a CA naming a trust domain ("spiffe://<td>" URI SAN). */
struct mesh_ca *mesh_ca_load(const char *dir, struct err *err);

void mesh_ca_free(struct mesh_ca *ca);

/* The CA's trust domain and its certificate in PEM (owned by `ca`). */
const char *mesh_ca_trust_domain(const struct mesh_ca *ca);
const char *mesh_ca_cert_pem(const struct mesh_ca *ca);

/* A workload certificate as issued: PEM strings (malloc'd, NUL-terminated) and its validity. */
struct svid {
    char *cert_pem;
    char *key_pem;
    time_t not_before;
    time_t not_after;
    char serial_hex[41]; /* the serial number in upper-case hex */
};

/* Issues a certificate for `spiffe_id` (checked with spiffe_check_id against the CA's trust
 * domain), valid from `now` - 60 s (clock skew between nodes) to `now` + `lifetime_s`, never
 * past the CA's own notAfter. A fresh P-256 key, a random 127-bit serial, SAN = the URI only,
 * basicConstraints CA:FALSE, keyUsage digitalSignature, extendedKeyUsage serverAuth and
 * clientAuth, subject and authority key identifiers. Returns 0, or an error. */
int mesh_ca_issue(const struct mesh_ca *ca, const char *spiffe_id, uint64_t lifetime_s, time_t now,
                  struct svid *out, struct err *err);

/* The path of the SPIFFE ID a server certificate (mesh_ca_issue_server) carries besides its
 * names: spiffe://<trust domain>/remora-xds. */
#define MESH_CA_SERVER_PATH "remora-xds"

/* Checks `host` as a server certificate's name: an IPv4 or IPv6 literal, or a DNS name (labels
 * of 1-63 letters, digits and inner '-', at most 253 bytes; no wildcard). 0 or an error. */
int mesh_ca_check_host(const char *host, struct err *err);

/* Issues a TLS server certificate (remora-xds's own, for its xDS port) for `hosts` (each checked
 * with mesh_ca_check_host): their iPAddress or dNSName SANs, plus the URI SAN
 * spiffe://<trust domain>/remora-xds, extendedKeyUsage serverAuth only; otherwise as
 * mesh_ca_issue (validity, key, serial). Returns 0, or an error. */
int mesh_ca_issue_server(const struct mesh_ca *ca, const char *const *hosts, size_t n_hosts,
                         uint64_t lifetime_s, time_t now, struct svid *out, struct err *err);

void svid_free(struct svid *s);

/* True when the first certificate in `pem` was signed by this CA and its only URI SAN is
 * `spiffe_id`: the check a renewer makes before keeping a certificate it finds on disk. */
bool mesh_ca_signed(const struct mesh_ca *ca, const char *pem, const char *spiffe_id);

/* Reads the validity of the first certificate in `pem`. Returns 0, or -1 when it is no PEM
 * certificate. */
int pem_cert_validity(const char *pem, time_t *not_before, time_t *not_after);

/* The SDS file of an identity (a DiscoveryResponse in JSON, malloc'd): secret `cert_name` with
 * tls_certificate {certificate_chain, private_key} inline and secret `ca_name` with
 * validation_context {trusted_ca} inline, under `version`. */
char *sds_secret_json(const struct svid *s, const char *ca_pem, const char *cert_name,
                      const char *ca_name, const char *version);
