/* sds: TLS secrets that arrive while the proxy runs (Envoy's SDS), from files today: a
 * CommonTlsContext's `tls_certificate_sds_secret_configs[0]` or
 * `validation_context_sds_secret_config` is an SdsSecretConfig {name, sds_config} whose
 * sds_config is a filesystem ConfigSource (`path_config_source {path, watched_directory}` or the
 * deprecated `path`). The file holds a DiscoveryResponse (YAML or JSON, as RDS files) whose
 * resources are `envoy.extensions.transport_sockets.tls.v3.Secret`s; the one named `name` is
 * used: its tls_certificate (certificate_chain + private_key) or its validation_context
 * (trusted_ca only: SAN matchers and the other checks are static config).
 *
 * This module is the config side: reading a file and picking the secret, and applying a new
 * secret to every TLS context that uses it (proxy/net/tls.h: struct tls_live). Compiling the
 * secret's PEM is build_tls.c's (the same code as static certificates). Watching the file is
 * proxy/reload.c's.
 *
 * Subscriptions: one per (file, secret name), however many contexts name it (config.sds[]).
 * Over ADS (sds_config `ads: {}`, proxy/xds/ads.h): one subscription per secret name, shared
 * with the LDS listeners' and CDS clusters' contexts (proxy/sds_set.h; files are for the
 * bootstrap's only: a dynamic container rejects a file sds_config with its path); nothing
 * is loaded at startup (the contexts fail closed until the secret arrives, and startup waits
 * for it up to initial_fetch_timeout, as Envoy's warming); each Secret the stream brings goes
 * through sds_unpack and sds_apply_users (reload_sds_secret), as a file's does.
 * Startup (files): the file must exist and hold a valid secret, or the bootstrap is rejected with
 * the field path (Envoy would start and keep the listener or cluster warming until the secret
 * arrives; remora refuses to start, as for RDS files, so a typo never serves without TLS).
 *
 * Files named inside a secret (DataSource `filename`) are read when the secret is (at startup and
 * on every change of the SDS file) and are not watched themselves: to rotate them, write them,
 * then touch or replace the SDS file.
 *
 * Thread: main. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "proxy/config/config.h"
#include "proxy/core/err.h"

struct Envoy__Extensions__TransportSockets__Tls__V3__Secret;
struct Google__Protobuf__Any;

#define SDS_SECRET_TYPE "envoy.extensions.transport_sockets.tls.v3.Secret"
#define SDS_TYPE_URL "type.googleapis.com/" SDS_SECRET_TYPE

/* Reads DiscoveryResponse file `file` and picks the Secret named `name` from its resources
 * (each must be a Secret; the names must differ). Unlike Envoy, which wants exactly one
 * resource, a file may hold several secrets. Returns 0 with *out (free with
 * protobuf_c_message_free_unpacked), *index (its position in resources) and *version_info (a
 * new heap string, free()); -EIO when the file cannot be read; -EINVAL when it does not parse
 * or has no such secret ("<file>: resources: no secret named 'x'"). */
int sds_read_secret(const char *file, const char *name,
                    struct Envoy__Extensions__TransportSockets__Tls__V3__Secret **out,
                    size_t *index, char **version_info, struct err *err);

/* An update of subscription `c->sds[idx]`: reads its file, compiles the secret (build_tls.c)
 * and applies it to every context using it. Nothing changes unless all of that succeeds for
 * every user. Returns 0 with the new secret in *secret and its version in *version_info (the
 * caller owns both), -EIO (unreadable) or -EINVAL (rejected), the error in `err`. */
int sds_update(const struct config *c, uint32_t idx,
               struct Envoy__Extensions__TransportSockets__Tls__V3__Secret **secret,
               char **version_info, struct err *err);

/* Compiles Secret `s` (which must be named as subscription `c->sds[idx]`; `where` prefixes the
 * errors' field paths) and applies it to every context using it: all users or none (an OpenSSL
 * failure halfway is logged by the caller). Returns 0, or -EINVAL with the error in `err`. */
int sds_apply(const struct config *c, uint32_t idx,
              const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
              const char *where, struct err *err);

/* Compiles Secret `s` for the roles its users need and applies it: contexts `cert[n_cert]` take
 * its tls_certificate, `val[n_val]` its validation_context (trusted_ca). All users or none (an
 * OpenSSL failure halfway is logged by the caller); `where` prefixes the errors' field paths.
 * Used for a name shared by the bootstrap and the dynamic listeners and clusters (reload.c).
 * Returns 0, or -EINVAL with the error in `err`. */
struct tls_ctx;
int sds_apply_users(const struct Envoy__Extensions__TransportSockets__Tls__V3__Secret *s,
                    const struct tls_ctx *const *cert, uint32_t n_cert,
                    const struct tls_ctx *const *val, uint32_t n_val, const char *where,
                    struct err *err);

/* A secret over ADS that snapshots `a` and `b` both name, one as a certificate and the other
 * as a validation context (one Secret cannot be both: its updates would be NACKed for every
 * user), or NULL. Checked when an LDS listener or CDS cluster comes, against the bootstrap, the
 * others of its kind in the set its update makes and those of the other kind in force
 * (check_roles in proxy/lds.c and proxy/cds.c). */
const char *sds_role_conflict(const struct config *a, const struct config *b);

/* Unpacks an ADS resource `any` (at `where`) as a Secret, unknown fields rejected. Returns 0
 * with *out (free with protobuf_c_message_free_unpacked), or -EINVAL. */
int sds_unpack(const struct Google__Protobuf__Any *any, const char *where,
               struct Envoy__Extensions__TransportSockets__Tls__V3__Secret **out, struct err *err);
