/* appmesh_env: `remora --bootstrap-from-env`. App Mesh's Envoy image (aws-appmesh-envoy) is
 * configured only by environment variables: its agent renders an Envoy bootstrap from them and
 * runs Envoy. This module reads the same variables and builds the same shape of bootstrap in
 * memory (a jansson tree): node (id from APPMESH_RESOURCE_ARN or the legacy names, cluster,
 * metadata), admin (ENVOY_ADMIN_ACCESS_*), ADS to APPMESH_XDS_ENDPOINT (a static HTTP/2
 * cluster, TLS from REMORA_XDS_*), lds_config/cds_config `ads: {}` with
 * ENVOY_INITIAL_FETCH_TIMEOUT, plus ENVOY_RESOURCES_CONFIG_FILE's static resources merged in;
 * or, with ENVOY_CONFIG_FILE, that file whole. The tree then goes through the one bootstrap
 * builder (proxy/config/build.h) as text, exactly like `--config-yaml`.
 *
 * The image's process-level variables (ENVOY_LOG_LEVEL, ENVOY_CONCURRENCY,
 * LISTENER_DRAIN_WAIT_TIME_S) come back as flag values for main.c. Every variable of the image
 * that remora does not implement is refused when set (naming it), except where its value is
 * the one remora behaves as (APPMESH_PREVIEW=0, ...): the table in appmesh_env.c, documented
 * in README.md ("Moving an App Mesh task to remora").
 *
 * Thread: main, at startup. */
#pragma once

#include <stdbool.h>

#include <jansson.h>

#include "proxy/core/arena.h"
#include "proxy/core/err.h"

struct config;

/* LISTENER_DRAIN_WAIT_TIME_S: the image's default and bounds (seconds). */
#define APPMESH_ENV_DRAIN_DEFAULT_S 20
#define APPMESH_ENV_DRAIN_MIN_S 5
#define APPMESH_ENV_DRAIN_MAX_S 110

struct appmesh_env {
    struct arena arena;       /* owns every string below */
    json_t *bootstrap;        /* owned: the generated bootstrap, or ENVOY_CONFIG_FILE's tree */
    const char *config_file;  /* ENVOY_CONFIG_FILE, or NULL (the bootstrap is generated) */
    const char *log_level;    /* ENVOY_LOG_LEVEL (a valid level name), or NULL when unset */
    long concurrency;         /* ENVOY_CONCURRENCY (1..1024), or 0 when unset */
    long drain_time_s;        /* LISTENER_DRAIN_WAIT_TIME_S, or APPMESH_ENV_DRAIN_DEFAULT_S */
    const char *xds_endpoint; /* APPMESH_XDS_ENDPOINT as given (NULL with ENVOY_CONFIG_FILE) */
    bool xds_tls;             /* REMORA_XDS_CA_FILE was set: TLS to the xDS endpoint */
    const char *unused;       /* with ENVOY_CONFIG_FILE: the bootstrap variables also set
                               * (space-separated), which that file replaces; or NULL */
    const char *replaced;     /* the generated top-level fields ENVOY_RESOURCES_CONFIG_FILE
                               * replaced (space-separated), or NULL */
};

/* Reads the App Mesh image's variables from `envp` (NULL-terminated "NAME=value" strings, as
 * `environ`; values are trimmed and an empty value counts as unset, as the image's agent does)
 * into `out`, generating the bootstrap. Returns 0, or -EINVAL with the error in `err`, which
 * names the variable ("APPMESH_XDS_ENDPOINT: 'x' is not host:port"); `out` holds nothing to
 * free then. Reads the files ENVOY_CONFIG_FILE and ENVOY_RESOURCES_CONFIG_FILE name and checks
 * that the REMORA_XDS_* files are readable. Logs nothing. */
int appmesh_env_load(const char *const *envp, struct appmesh_env *out, struct err *err);

/* Builds the snapshot from `e` through the bootstrap builder: config_load_text of the generated
 * tree, or config_load_file of ENVOY_CONFIG_FILE. Logs what the environment chose (the xDS
 * endpoint, TLS or a plaintext warning, the variables ENVOY_CONFIG_FILE makes unused). Returns
 * a new snapshot (one reference), or NULL with a field-path error in `err`. */
struct config *appmesh_env_build(const struct appmesh_env *e, struct err *err);

/* The bootstrap as pretty JSON text (which is YAML too), ending in a newline; free() it. */
char *appmesh_env_dump(const struct appmesh_env *e);

void appmesh_env_deinit(struct appmesh_env *e);
