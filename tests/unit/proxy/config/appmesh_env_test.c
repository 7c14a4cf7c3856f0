/* Unit tests for proxy/config/appmesh_env.c: App Mesh's Envoy image variables -> the bootstrap
 * (each variable, its default, its errors naming it), and the result built by build.c. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "proxy/config/appmesh_env.h"
#include "proxy/config/config.h"

#define ARN "arn:aws:appmesh:us-west-2:111122223333:mesh/shop/virtualNode/front"
#define EP "APPMESH_XDS_ENDPOINT=127.0.0.1:18000"
#define MAX_ENV 32

/* Loads an environment of the given "NAME=value" strings (NULL-terminated list). */
static int load_env(struct appmesh_env *e, struct err *err, const char *first, va_list ap)
{
    const char *envp[MAX_ENV + 1];
    size_t n = 0;
    for (const char *s = first; s != NULL && n < MAX_ENV; s = va_arg(ap, const char *)) {
        envp[n++] = s;
    }
    envp[n] = NULL;
    err_clear(err);
    return appmesh_env_load(envp, e, err);
}

/* An environment that must load; the caller deinits `e`. */
static void ok(struct appmesh_env *e, const char *first, ...)
{
    struct err err;
    va_list ap;
    va_start(ap, first);
    int rc = load_env(e, &err, first, ap);
    va_end(ap);
    if (rc != 0) {
        fail_msg("expected to load, got: %s", err.msg);
    }
}

/* An environment that must be refused with exactly `want`. */
static void bad(const char *want, const char *first, ...)
{
    struct appmesh_env e;
    struct err err;
    va_list ap;
    va_start(ap, first);
    int rc = load_env(&e, &err, first, ap);
    va_end(ap);
    if (rc == 0) {
        appmesh_env_deinit(&e);
        fail_msg("loaded, but expected: %s", want);
    }
    assert_int_equal(rc, -EINVAL);
    assert_string_equal(err.msg, want);
}

/* The value at a path of object keys and array indexes ("a.b.0.c") in `root`, or NULL. */
static json_t *at(json_t *root, const char *path)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *j = root;
    for (char *save = NULL, *seg = strtok_r(buf, ".", &save); seg != NULL && j != NULL;
         seg = strtok_r(NULL, ".", &save)) {
        j = json_is_array(j) ? json_array_get(j, strtoul(seg, NULL, 10)) : json_object_get(j, seg);
    }
    return j;
}

static const char *str_at(json_t *root, const char *path)
{
    json_t *j = at(root, path);
    if (!json_is_string(j)) {
        fail_msg("%s is not a string", path);
    }
    return json_string_value(j);
}

static json_int_t int_at(json_t *root, const char *path)
{
    json_t *j = at(root, path);
    if (!json_is_integer(j)) {
        fail_msg("%s is not an integer", path);
    }
    return json_integer_value(j);
}

#define XC "static_resources.clusters.0"
#define SA XC ".load_assignment.endpoints.0.lb_endpoints.0.endpoint.address.socket_address"
#define VC XC ".transport_socket.typed_config.common_tls_context.validation_context"

static void test_appmesh_env_defaults(void **state)
{
    (void)state;
    struct appmesh_env e;
    ok(&e, "APPMESH_RESOURCE_ARN=" ARN, EP, "PATH=/usr/bin", NULL);
    json_t *b = e.bootstrap;
    assert_string_equal(str_at(b, "node.id"), ARN);
    assert_string_equal(str_at(b, "node.cluster"), ARN); /* the id, as App Mesh */
    assert_string_equal(str_at(b, "node.metadata.mesh"), "shop");
    assert_null(json_object_get(at(b, "node.metadata"), "aws.appmesh.platformInfo"));
    assert_string_equal(str_at(b, "admin.address.socket_address.address"), "0.0.0.0");
    assert_int_equal(int_at(b, "admin.address.socket_address.port_value"), 9901);
    assert_string_equal(str_at(b, "admin.access_log.0.typed_config.path"),
                        "/tmp/envoy_admin_access.log");
    assert_string_equal(str_at(b, "dynamic_resources.ads_config.api_type"), "GRPC");
    assert_string_equal(
        str_at(b, "dynamic_resources.ads_config.grpc_services.0.envoy_grpc.cluster_name"),
        "xds_cluster");
    assert_non_null(at(b, "dynamic_resources.lds_config.ads"));
    assert_non_null(at(b, "dynamic_resources.cds_config.ads"));
    /* ENVOY_INITIAL_FETCH_TIMEOUT's default, 0: wait for ever, as the image */
    assert_string_equal(str_at(b, "dynamic_resources.lds_config.initial_fetch_timeout"), "0s");
    assert_string_equal(str_at(b, "dynamic_resources.cds_config.initial_fetch_timeout"), "0s");
    assert_string_equal(str_at(b, XC ".name"), "xds_cluster");
    assert_string_equal(str_at(b, XC ".type"), "STATIC");
    assert_string_equal(str_at(b, SA ".address"), "127.0.0.1");
    assert_int_equal(int_at(b, SA ".port_value"), 18000);
    json_t *hpo = json_object_get(at(b, XC ".typed_extension_protocol_options"),
                                  "envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    assert_non_null(at(hpo, "explicit_http_config.http2_protocol_options"));
    /* App Mesh's xDS keepalive: a PING every 10 s, closed after 20 s without its ACK */
    assert_string_equal(
        str_at(hpo, "explicit_http_config.http2_protocol_options.connection_keepalive.interval"),
        "10s");
    assert_string_equal(
        str_at(hpo, "explicit_http_config.http2_protocol_options.connection_keepalive.timeout"),
        "20s");
    assert_null(at(b, XC ".transport_socket")); /* plaintext */
    assert_false(e.xds_tls);
    assert_null(e.log_level);
    assert_int_equal(e.concurrency, 0);
    assert_int_equal(e.drain_time_s, 20);
    assert_null(e.config_file);

    /* It builds (the same builder as a file): node, admin, the ADS cluster, LDS/CDS over ADS. */
    struct err err;
    struct config *c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    assert_string_equal(c->node_id.p, ARN);
    assert_true(c->has_admin);
    assert_string_equal(c->admin_addr.text.p, "0.0.0.0:9901");
    assert_string_equal(c->admin_access_log_path.p, "/tmp/envoy_admin_access.log");
    assert_non_null(c->ads);
    assert_string_equal(c->ads->cluster->name.p, "xds_cluster");
    assert_int_equal(c->ads->cluster->h2_keepalive.interval_ms, 10000);
    assert_int_equal(c->ads->cluster->h2_keepalive.timeout_ms, 20000);
    assert_true(c->ads->cluster->h2_keepalive.jitter_percent == 15.0);
    assert_true(c->lds_ads && c->cds_ads);
    assert_int_equal(c->lds_initial_fetch_timeout_ms, 0);
    config_unref(c);
    appmesh_env_deinit(&e);
}

static void test_appmesh_env_every_variable(void **state)
{
    (void)state;
    struct appmesh_env e;
    ok(&e, "APPMESH_RESOURCE_ARN= " ARN " ", "APPMESH_RESOURCE_CLUSTER=front-svc",
       "APPMESH_XDS_ENDPOINT=xds.mesh.internal:18443", "ENVOY_ADMIN_ACCESS_PORT=9911",
       "ENVOY_ADMIN_ACCESS_LOG_FILE=/dev/stdout", "ENVOY_ADMIN_ACCESS_ENABLE_IPV6=true",
       "ENVOY_INITIAL_FETCH_TIMEOUT=30", "ENVOY_LOG_LEVEL=debug", "ENVOY_CONCURRENCY=2",
       "LISTENER_DRAIN_WAIT_TIME_S=7", "AWS_REGION=us-west-2", "AWS_EXECUTION_ENV=AWS_ECS_EC2",
       "ECS_CONTAINER_INSTANCE_ARN=arn:aws:ecs:us-west-2:111122223333:container-instance/x",
       "APPMESH_PREVIEW=0", "APPMESH_DUALSTACK_ENDPOINT=false", "ENABLE_ENVOY_STATS_TAGS=0",
       "ENABLE_ENVOY_XRAY_TRACING=0", "ENVOY_ADMIN_MODE=tcp", "APPNET_ENVOY_RESTART_COUNT=0",
       "APPMESH_METRIC_EXTENSION_VERSION=0", "APPMESH_SET_TRACING_DECISION=true", NULL);
    json_t *b = e.bootstrap;
    assert_string_equal(str_at(b, "node.id"), ARN); /* trimmed */
    assert_string_equal(str_at(b, "node.cluster"), "front-svc");
    json_t *pi = json_object_get(at(b, "node.metadata"), "aws.appmesh.platformInfo");
    assert_string_equal(str_at(pi, "ecsPlatformInfo.ecsLaunchType"), "AWS_ECS_EC2");
    assert_string_equal(str_at(pi, "ecsPlatformInfo.ecsContainerInstanceArn"),
                        "arn:aws:ecs:us-west-2:111122223333:container-instance/x");
    assert_string_equal(str_at(b, "admin.address.socket_address.address"), "::");
    assert_int_equal(int_at(b, "admin.address.socket_address.port_value"), 9911);
    assert_string_equal(str_at(b, "admin.access_log.0.typed_config.path"), "/dev/stdout");
    assert_string_equal(str_at(b, "dynamic_resources.lds_config.initial_fetch_timeout"), "30s");
    assert_string_equal(str_at(b, "dynamic_resources.cds_config.initial_fetch_timeout"), "30s");
    /* A DNS name: STRICT_DNS. */
    assert_string_equal(str_at(b, XC ".type"), "STRICT_DNS");
    assert_string_equal(str_at(b, SA ".address"), "xds.mesh.internal");
    assert_int_equal(int_at(b, SA ".port_value"), 18443);
    assert_string_equal(e.log_level, "debug");
    assert_int_equal(e.concurrency, 2);
    assert_int_equal(e.drain_time_s, 7);
    appmesh_env_deinit(&e);

    /* The legacy names, in the image's order of preference; the legacy cluster name; k8s. */
    ok(&e, "APPMESH_VIRTUAL_NODE_NAME=mesh/m2/virtualNode/old", EP,
       "APPMESH_VIRTUAL_NODE_CLUSTER=old-cluster", "APPMESH_PLATFORM_K8S_VERSION=v1.29",
       "APPMESH_PLATFORM_K8S_POD_UID=1234", "APPMESH_PLATFORM_APP_MESH_CONTROLLER_VERSION=v1.13",
       NULL);
    assert_string_equal(str_at(e.bootstrap, "node.id"), "mesh/m2/virtualNode/old");
    assert_string_equal(str_at(e.bootstrap, "node.cluster"), "old-cluster");
    assert_string_equal(str_at(e.bootstrap, "node.metadata.mesh"), "m2");
    pi = json_object_get(at(e.bootstrap, "node.metadata"), "aws.appmesh.platformInfo");
    assert_string_equal(str_at(pi, "k8sPlatformInfo.podUid"), "1234");
    appmesh_env_deinit(&e);
    ok(&e, "APPMESH_VIRTUAL_NODE_NAME=mesh/m2/virtualNode/old",
       "APPMESH_RESOURCE_NAME=mesh/m3/virtualGateway/gw", EP,
       "APPMESH_RESOURCE_CLUSTER=", "APPMESH_VIRTUAL_NODE_CLUSTER=legacy", NULL);
    assert_string_equal(str_at(e.bootstrap, "node.id"), "mesh/m3/virtualGateway/gw");
    assert_string_equal(str_at(e.bootstrap, "node.cluster"), "legacy"); /* empty = unset */
    appmesh_env_deinit(&e);
    ok(&e, "APPMESH_RESOURCE_ARN=" ARN, "APPMESH_RESOURCE_NAME=mesh/m3/virtualGateway/gw",
       "APPMESH_XDS_ENDPOINT=[::1]:18000", NULL);
    assert_string_equal(str_at(e.bootstrap, "node.id"), ARN);
    assert_string_equal(str_at(e.bootstrap, SA ".address"), "::1");
    assert_string_equal(str_at(e.bootstrap, XC ".type"), "STATIC");
    appmesh_env_deinit(&e);
}

/* What the App Mesh controller for Kubernetes injects into a pod's envoy container (its
 * sidecar_builder: the node name, region, IPv6 admin flag, dual-stack and preview flags, log
 * level, admin port and log, platform facts), plus the endpoint: all accepted as they are. */
static void test_appmesh_env_k8s_controller_sidecar(void **state)
{
    (void)state;
    struct appmesh_env e;
    ok(&e, "APPMESH_VIRTUAL_NODE_NAME=mesh/shop/virtualNode/front_shop", "AWS_REGION=eu-west-1",
       "ENVOY_ADMIN_ACCESS_ENABLE_IPV6=false", "APPMESH_DUALSTACK_ENDPOINT=", "APPMESH_PREVIEW=0",
       "ENVOY_LOG_LEVEL=info", "ENVOY_ADMIN_ACCESS_PORT=9901",
       "ENVOY_ADMIN_ACCESS_LOG_FILE=/tmp/envoy_admin_access.log",
       "APPMESH_PLATFORM_K8S_VERSION=v1.29.1",
       "APPMESH_PLATFORM_APP_MESH_CONTROLLER_VERSION=v1.13.1",
       "APPMESH_PLATFORM_K8S_POD_UID=7c1a2b9e-0000-4000-8000-000000000000", EP, NULL);
    assert_string_equal(str_at(e.bootstrap, "node.id"), "mesh/shop/virtualNode/front_shop");
    assert_string_equal(str_at(e.bootstrap, "admin.address.socket_address.address"), "0.0.0.0");
    json_t *pi = json_object_get(at(e.bootstrap, "node.metadata"), "aws.appmesh.platformInfo");
    assert_string_equal(str_at(pi, "k8sPlatformInfo.k8sVersion"), "v1.29.1");
    assert_string_equal(str_at(pi, "k8sPlatformInfo.appMeshControllerVersion"), "v1.13.1");
    assert_string_equal(e.log_level, "info");
    appmesh_env_deinit(&e);
}

static void test_appmesh_env_node_id_errors(void **state)
{
    (void)state;
    bad("APPMESH_RESOURCE_ARN: required: the ARN of the virtual node or gateway this proxy runs "
        "as (or APPMESH_RESOURCE_NAME / APPMESH_VIRTUAL_NODE_NAME: "
        "mesh/<mesh>/virtualNode/<name>)",
        EP, "APPMESH_RESOURCE_ARN=  ", NULL);
    bad("APPMESH_RESOURCE_ARN: 'arn:aws:s3:us-west-2:111122223333:mesh/a/virtualNode/b' is "
        "not an App Mesh ARN (arn:aws:appmesh:...)",
        EP, "APPMESH_RESOURCE_ARN=arn:aws:s3:us-west-2:111122223333:mesh/a/virtualNode/b", NULL);
    bad("APPMESH_RESOURCE_ARN: 'arn:aws:appmesh:us-west-2:1234:mesh/a/virtualNode/b': the ARN's "
        "account is not 12 digits",
        EP, "APPMESH_RESOURCE_ARN=arn:aws:appmesh:us-west-2:1234:mesh/a/virtualNode/b", NULL);
    bad("APPMESH_RESOURCE_ARN: 'arn:aws:appmesh' is not an App Mesh ARN "
        "(arn:aws:appmesh:<region>:<account>:mesh/<mesh>/virtualNode/<name>)",
        EP, "APPMESH_RESOURCE_ARN=arn:aws:appmesh", NULL);
    bad("APPMESH_RESOURCE_ARN: 'arn:aws:appmesh:us-west-2:111122223333:mesh/a/virtualService/s' "
        "must name a virtualNode or a virtualGateway (the resources a proxy runs as)",
        EP, "APPMESH_RESOURCE_ARN=arn:aws:appmesh:us-west-2:111122223333:mesh/a/virtualService/s",
        NULL);
    bad("APPMESH_VIRTUAL_NODE_NAME: 'front' does not name a virtual node or gateway "
        "(mesh/<mesh>/virtualNode/<name>, or its ARN)",
        EP, "APPMESH_VIRTUAL_NODE_NAME=front", NULL);
    bad("APPMESH_RESOURCE_NAME: 'mesh/m/virtualNode/a/b': no valid virtual node or gateway name",
        EP, "APPMESH_RESOURCE_NAME=mesh/m/virtualNode/a/b", NULL);
    bad("APPMESH_RESOURCE_NAME: 'mesh//virtualNode/a': no valid mesh name after mesh/", EP,
        "APPMESH_RESOURCE_NAME=mesh//virtualNode/a", NULL);
}

static void test_appmesh_env_endpoint_errors(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    bad("APPMESH_XDS_ENDPOINT: required: remora-xds's xDS address, host:port (App Mesh's "
        "default, appmesh-envoy-management.<region>.amazonaws.com:443, needs SigV4, which "
        "remora does not do)",
        id, "AWS_REGION=us-west-2", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'xds.local' is not host:port (an IPv6 address goes in brackets)", id,
        "APPMESH_XDS_ENDPOINT=xds.local", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'xds.local:0': the port is not in 1..65535", id,
        "APPMESH_XDS_ENDPOINT=xds.local:0", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'xds.local:70000': the port is not in 1..65535", id,
        "APPMESH_XDS_ENDPOINT=xds.local:70000", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'xds.local:+5': the port is not in 1..65535", id,
        "APPMESH_XDS_ENDPOINT=xds.local:+5", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'https://xds.local:443' is not host:port (no scheme: TLS is "
        "REMORA_XDS_CA_FILE)",
        id, "APPMESH_XDS_ENDPOINT=https://xds.local:443", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'unix:///tmp/relay.sock': a Unix socket (the image's relay mode) "
        "is not supported by remora; give remora-xds's host:port",
        id, "APPMESH_XDS_ENDPOINT=unix:///tmp/relay.sock", NULL);
    bad("APPMESH_XDS_ENDPOINT: '::1:18000' is not host:port (an IPv6 address goes in brackets)", id,
        "APPMESH_XDS_ENDPOINT=::1:18000", NULL);
    bad("APPMESH_XDS_ENDPOINT: '[xds]:1': 'xds' is not an IPv6 address", id,
        "APPMESH_XDS_ENDPOINT=[xds]:1", NULL);
    bad("APPMESH_XDS_ENDPOINT: 'bad host:1': 'bad host' is not a host name or IP address", id,
        "APPMESH_XDS_ENDPOINT=bad host:1", NULL);
}

static void test_appmesh_env_value_errors(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    bad("ENVOY_ADMIN_ACCESS_PORT: '99999' is not an integer in 1..65535", id, EP,
        "ENVOY_ADMIN_ACCESS_PORT=99999", NULL);
    bad("ENVOY_ADMIN_ACCESS_PORT: 'x' is not an integer in 1..65535", id, EP,
        "ENVOY_ADMIN_ACCESS_PORT=x", NULL);
    bad("ENVOY_ADMIN_ACCESS_ENABLE_IPV6: 'yes' is not a boolean", id, EP,
        "ENVOY_ADMIN_ACCESS_ENABLE_IPV6=yes", NULL);
    bad("ENVOY_INITIAL_FETCH_TIMEOUT: '-1' is not an integer in 0..315576000000", id, EP,
        "ENVOY_INITIAL_FETCH_TIMEOUT=-1", NULL);
    bad("ENVOY_INITIAL_FETCH_TIMEOUT: '5s' is not an integer in 0..315576000000", id, EP,
        "ENVOY_INITIAL_FETCH_TIMEOUT=5s", NULL);
    bad("ENVOY_LOG_LEVEL: 'loud' is not a level (trace, debug, info, warning, error, critical, "
        "off)",
        id, EP, "ENVOY_LOG_LEVEL=loud", NULL);
    bad("ENVOY_CONCURRENCY: '0' is not an integer in 1..1024", id, EP, "ENVOY_CONCURRENCY=0", NULL);
    bad("LISTENER_DRAIN_WAIT_TIME_S: '4' is not an integer in 5..110", id, EP,
        "LISTENER_DRAIN_WAIT_TIME_S=4", NULL);
    bad("LISTENER_DRAIN_WAIT_TIME_S: '111' is not an integer in 5..110", id, EP,
        "LISTENER_DRAIN_WAIT_TIME_S=111", NULL);
}

static void test_appmesh_env_unsupported_variables(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    bad("ENABLE_ENVOY_DATADOG_TRACING: '1' is not supported by remora: tracing (Datadog); only "
        "this is accepted: false or 0",
        id, EP, "ENABLE_ENVOY_DATADOG_TRACING=1", NULL);
    bad("APPMESH_SDS_SOCKET_PATH: '/run/spire.sock' is not supported by remora: SDS over a local "
        "Unix socket (SPIRE) is not supported; remora-xds --ca-dir delivers identities over ADS; "
        "unset it",
        id, EP, "APPMESH_SDS_SOCKET_PATH=/run/spire.sock", NULL);
    bad("ENVOY_ADMIN_MODE: 'uds' is not supported by remora: the admin interface on a Unix socket "
        "(uds); only this is accepted: tcp",
        id, EP, "ENVOY_ADMIN_MODE=uds", NULL);
    bad("APPMESH_PREVIEW: '1' is not supported by remora: selects App Mesh's preview endpoint; "
        "only this is accepted: false or 0",
        id, EP, "APPMESH_PREVIEW=1", NULL);
    bad("APPMESH_SET_TRACING_DECISION: 'false' is not supported by remora: false asks the proxy "
        "to rewrite tracing decisions in x-request-id, which remora never does; only this is "
        "accepted: true or 1",
        id, EP, "APPMESH_SET_TRACING_DECISION=false", NULL);
    bad("APPMESH_SLEEP_DURATION: '5' is not supported by remora: a sleep before start; unset it",
        id, EP, "APPMESH_SLEEP_DURATION=5", NULL);
    /* Refused before anything else, even without a node id. */
    bad("APPMESH_FIPS_ENDPOINT: '1' is not supported by remora: selects App Mesh's FIPS endpoint; "
        "only this is accepted: false or 0",
        "APPMESH_FIPS_ENDPOINT=1", NULL);
    /* A variable named like one but longer is another variable. */
    struct appmesh_env e;
    ok(&e, id, EP, "APPMESH_SLEEP_DURATIONX=1", "XAPPMESH_SLEEP_DURATION=1", NULL);
    appmesh_env_deinit(&e);
}

/* A file with `text` in a temporary directory; returns its path (static buffer per slot). */
static const char *tmp_file(int slot, const char *text)
{
    static char paths[4][64];
    snprintf(paths[slot], sizeof(paths[slot]), "/tmp/appmesh_env_test_%d_%d.yaml", (int)getpid(),
             slot);
    FILE *f = fopen(paths[slot], "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return paths[slot];
}

static void test_appmesh_env_xds_tls(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    const char *ca = tmp_file(0, "not checked here: build_tls reads it\n");
    char ca_var[128], cert_var[128], key_var[128];
    snprintf(ca_var, sizeof(ca_var), "REMORA_XDS_CA_FILE=%s", ca);
    snprintf(cert_var, sizeof(cert_var), "REMORA_XDS_CERT_FILE=%s", ca);
    snprintf(key_var, sizeof(key_var), "REMORA_XDS_KEY_FILE=%s", ca);

    /* CA only, an IP endpoint: remora-xds's SPIFFE ID pinned, no SNI. */
    struct appmesh_env e;
    ok(&e, id, EP, ca_var, NULL);
    assert_true(e.xds_tls);
    json_t *b = e.bootstrap;
    assert_string_equal(str_at(b, XC ".transport_socket.typed_config.@type"),
                        "type.googleapis.com/"
                        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
    assert_string_equal(str_at(b, VC ".trusted_ca.filename"), ca);
    assert_string_equal(str_at(b, VC ".match_typed_subject_alt_names.0.san_type"), "URI");
    assert_string_equal(str_at(b, VC ".match_typed_subject_alt_names.0.matcher.safe_regex.regex"),
                        "spiffe://[^/]+/remora-xds");
    assert_null(at(b, XC ".transport_socket.typed_config.sni"));
    assert_null(at(b, XC ".transport_socket.typed_config.common_tls_context.tls_certificates"));
    appmesh_env_deinit(&e);

    /* A DNS endpoint: its name is the SNI; a client certificate; a DNS SAN. */
    ok(&e, id, "APPMESH_XDS_ENDPOINT=xds.mesh.internal:18000", ca_var, cert_var, key_var,
       "REMORA_XDS_SAN=xds.mesh.internal", NULL);
    b = e.bootstrap;
    assert_string_equal(str_at(b, XC ".transport_socket.typed_config.sni"), "xds.mesh.internal");
    assert_string_equal(str_at(b, XC ".transport_socket.typed_config.common_tls_context."
                                     "tls_certificates.0.certificate_chain.filename"),
                        ca);
    assert_string_equal(str_at(b, XC ".transport_socket.typed_config.common_tls_context."
                                     "tls_certificates.0.private_key.filename"),
                        ca);
    assert_string_equal(str_at(b, VC ".match_typed_subject_alt_names.0.san_type"), "DNS");
    assert_string_equal(str_at(b, VC ".match_typed_subject_alt_names.0.matcher.exact"),
                        "xds.mesh.internal");
    appmesh_env_deinit(&e);

    /* REMORA_XDS_SNI wins; a URI SAN and an IP SAN. */
    ok(&e, id, "APPMESH_XDS_ENDPOINT=xds.mesh.internal:18000", ca_var, "REMORA_XDS_SNI=cp.test",
       "REMORA_XDS_SAN=spiffe://mesh.local/remora-xds", NULL);
    assert_string_equal(str_at(e.bootstrap, XC ".transport_socket.typed_config.sni"), "cp.test");
    assert_string_equal(str_at(e.bootstrap, VC ".match_typed_subject_alt_names.0.san_type"), "URI");
    appmesh_env_deinit(&e);
    ok(&e, id, EP, ca_var, "REMORA_XDS_SAN=10.0.0.5", NULL);
    assert_string_equal(str_at(e.bootstrap, VC ".match_typed_subject_alt_names.0.san_type"),
                        "IP_ADDRESS");
    appmesh_env_deinit(&e);

    bad("REMORA_XDS_CERT_FILE: needs REMORA_XDS_CA_FILE (TLS to the xDS endpoint verifies the "
        "server against that CA bundle)",
        id, EP, cert_var, key_var, NULL);
    bad("REMORA_XDS_SNI: needs REMORA_XDS_CA_FILE (TLS to the xDS endpoint verifies the server "
        "against that CA bundle)",
        id, EP, "REMORA_XDS_SNI=x", NULL);
    bad("REMORA_XDS_KEY_FILE: required with REMORA_XDS_CERT_FILE (a client certificate and its "
        "key go together)",
        id, EP, ca_var, cert_var, NULL);
    bad("REMORA_XDS_CA_FILE: cannot read '/nonexistent/ca.pem': No such file or directory", id, EP,
        "REMORA_XDS_CA_FILE=/nonexistent/ca.pem", NULL);
    bad("REMORA_XDS_SNI: 'a b' is not a host name", id, EP, ca_var, "REMORA_XDS_SNI=a b", NULL);
    bad("REMORA_XDS_SAN: 'a b' is not a URI (spiffe://...), IP address or DNS name", id, EP, ca_var,
        "REMORA_XDS_SAN=a b", NULL);
    unlink(ca);
}

static void test_appmesh_env_resources_file(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    const char *res = tmp_file(1, "staticResources:\n"
                                  "  clusters:\n"
                                  "  - name: app\n"
                                  "    load_assignment:\n"
                                  "      cluster_name: app\n"
                                  "      endpoints: [{lb_endpoints: [{endpoint: {address: "
                                  "{socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]\n"
                                  "node: {id: replaced, cluster: c}\n");
    char var[128];
    snprintf(var, sizeof(var), "ENVOY_RESOURCES_CONFIG_FILE=%s", res);
    struct appmesh_env e;
    ok(&e, id, EP, var, NULL);
    /* Clusters appended after the xDS cluster; another top-level field replaces the generated. */
    assert_string_equal(str_at(e.bootstrap, XC ".name"), "xds_cluster");
    assert_string_equal(str_at(e.bootstrap, "static_resources.clusters.1.name"), "app");
    assert_string_equal(str_at(e.bootstrap, "node.id"), "replaced");
    assert_string_equal(e.replaced, "node");
    struct err err;
    struct config *c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(c->n_clusters, 2);
    config_unref(c);
    appmesh_env_deinit(&e);

    /* A file that is not a valid bootstrap: its own field path, under the variable. */
    res = tmp_file(2, "static_resources: {clusters: [{name: x, lb_polcy: ROUND_ROBIN}]}\n");
    snprintf(var, sizeof(var), "ENVOY_RESOURCES_CONFIG_FILE=%s", res);
    char want[512];
    snprintf(want, sizeof(want),
             "ENVOY_RESOURCES_CONFIG_FILE: '%s': static_resources.clusters[0].lb_polcy: unknown "
             "field",
             res);
    bad(want, id, EP, var, NULL);
    bad("ENVOY_RESOURCES_CONFIG_FILE: cannot read '/nonexistent.yaml': No such file or directory",
        id, EP, "ENVOY_RESOURCES_CONFIG_FILE=/nonexistent.yaml", NULL);
    unlink(tmp_file(1, ""));
    unlink(res);
}

static void test_appmesh_env_config_file(void **state)
{
    (void)state;
    const char *f = tmp_file(3, "node: {id: mesh/m/virtualNode/n, cluster: c}\n"
                                "admin: {address: {socket_address: {address: 127.0.0.1, "
                                "port_value: 9901}}}\n");
    char var[128];
    snprintf(var, sizeof(var), "ENVOY_CONFIG_FILE=%s", f);
    struct appmesh_env e;
    /* The whole bootstrap: no node id or endpoint needed; those set are reported unused. */
    ok(&e, var, "APPMESH_RESOURCE_ARN=" ARN, "ENVOY_ADMIN_ACCESS_PORT=1", "ENVOY_LOG_LEVEL=warn",
       "LISTENER_DRAIN_WAIT_TIME_S=10", NULL);
    assert_string_equal(e.config_file, f);
    assert_string_equal(e.unused, "APPMESH_RESOURCE_ARN ENVOY_ADMIN_ACCESS_PORT");
    assert_string_equal(e.log_level, "warn");
    assert_int_equal(e.drain_time_s, 10);
    assert_string_equal(str_at(e.bootstrap, "node.id"), "mesh/m/virtualNode/n");
    struct err err;
    struct config *c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    assert_string_equal(c->node_id.p, "mesh/m/virtualNode/n");
    config_unref(c);
    appmesh_env_deinit(&e);

    bad("ENVOY_RESOURCES_CONFIG_FILE: not with ENVOY_CONFIG_FILE (that file is the whole "
        "bootstrap)",
        var, "ENVOY_RESOURCES_CONFIG_FILE=/x", NULL);
    bad("ENVOY_CONFIG_FILE: cannot read '/nonexistent.yaml': No such file or directory",
        "ENVOY_CONFIG_FILE=/nonexistent.yaml", NULL);
    unlink(f);
}

#define XR "tracing.http.typed_config"

/* ENABLE_ENVOY_XRAY_TRACING and ENABLE_ENVOY_JAEGER_TRACING: the bootstrap's tracing.http, as
 * the image writes it, and built by build.c. */
static void test_appmesh_env_tracing(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    struct appmesh_env e;
    ok(&e, id, EP, NULL);
    assert_null(json_object_get(e.bootstrap, "tracing"));
    appmesh_env_deinit(&e);

    ok(&e, id, EP, "ENABLE_ENVOY_XRAY_TRACING=1", NULL);
    json_t *b = e.bootstrap;
    assert_string_equal(str_at(b, "tracing.http.name"), "envoy.tracers.xray");
    assert_string_equal(str_at(b, XR ".segment_name"), "shop/front");
    assert_string_equal(str_at(b, XR ".daemon_endpoint.address"), "127.0.0.1");
    assert_int_equal(int_at(b, XR ".daemon_endpoint.port_value"), 2000);
    assert_string_equal(str_at(b, XR ".daemon_endpoint.protocol"), "UDP");
    struct err err;
    err_clear(&err);
    struct config *c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("build: %s", err.msg);
    }
    config_unref(c);
    appmesh_env_deinit(&e);

    ok(&e, id, EP, "ENABLE_ENVOY_XRAY_TRACING=true", "XRAY_DAEMON_PORT=3000",
       "XRAY_SEGMENT_NAME=seg", "XRAY_SAMPLING_RATE=0.5", NULL);
    b = e.bootstrap;
    assert_string_equal(str_at(b, XR ".segment_name"), "seg");
    assert_int_equal(int_at(b, XR ".daemon_endpoint.port_value"), 3000);
    json_t *m = json_loads(str_at(b, XR ".sampling_rule_manifest.inline_string"), 0, NULL);
    assert_non_null(m);
    assert_int_equal(int_at(m, "default.fixed_target"), 1);
    assert_true(json_real_value(at(m, "default.rate")) == 0.5);
    json_decref(m);
    c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("build: %s", err.msg);
    }
    config_unref(c);
    appmesh_env_deinit(&e);

    ok(&e, id, EP, "ENABLE_ENVOY_XRAY_TRACING=1",
       "AWS_XRAY_DAEMON_ADDRESS=tcp:10.0.0.9:2000 udp:10.0.0.8:2001", NULL);
    assert_string_equal(str_at(e.bootstrap, XR ".daemon_endpoint.address"), "10.0.0.8");
    assert_int_equal(int_at(e.bootstrap, XR ".daemon_endpoint.port_value"), 2001);
    appmesh_env_deinit(&e);

    ok(&e, id, EP, "ENABLE_ENVOY_JAEGER_TRACING=1", "JAEGER_TRACER_PORT=9412", NULL);
    b = e.bootstrap;
    assert_string_equal(str_at(b, "tracing.http.name"), "envoy.tracers.zipkin");
    assert_string_equal(str_at(b, XR ".collector_cluster"), "jaeger");
    assert_string_equal(str_at(b, XR ".collector_endpoint"), "/api/v2/spans");
    assert_string_equal(str_at(b, XR ".collector_endpoint_version"), "HTTP_JSON");
    assert_string_equal(str_at(b, "static_resources.clusters.1.name"), "jaeger");
    assert_int_equal(int_at(b, "static_resources.clusters.1.load_assignment.endpoints.0."
                               "lb_endpoints.0.endpoint.address.socket_address.port_value"),
                     9412);
    c = appmesh_env_build(&e, &err);
    if (c == NULL) {
        fail_msg("build: %s", err.msg);
    }
    config_unref(c);
    appmesh_env_deinit(&e);

    bad("ENABLE_ENVOY_XRAY_TRACING: 'maybe' is not a boolean", id, EP,
        "ENABLE_ENVOY_XRAY_TRACING=maybe", NULL);
    bad("XRAY_DAEMON_PORT: '0' is not an integer in 1..65535", id, EP,
        "ENABLE_ENVOY_XRAY_TRACING=1", "XRAY_DAEMON_PORT=0", NULL);
    bad("XRAY_SAMPLING_RATE: '1.5' is not a rate from 0 to 1", id, EP,
        "ENABLE_ENVOY_XRAY_TRACING=1", "XRAY_SAMPLING_RATE=1.5", NULL);
    bad("AWS_XRAY_DAEMON_ADDRESS: 'xray.local:2000': remora needs the daemon's IP address (it "
        "does not resolve names for X-Ray)",
        id, EP, "ENABLE_ENVOY_XRAY_TRACING=1", "AWS_XRAY_DAEMON_ADDRESS=xray.local:2000", NULL);
    bad("ENABLE_ENVOY_JAEGER_TRACING: set with ENABLE_ENVOY_XRAY_TRACING: one tracer at a time", id,
        EP, "ENABLE_ENVOY_XRAY_TRACING=1", "ENABLE_ENVOY_JAEGER_TRACING=1", NULL);
    bad("JAEGER_TRACER_VERSION: 'PROTO' is not supported by remora: it sends Zipkin's JSON "
        "(HTTP_JSON), which Jaeger's collector accepts; unset it or say JSON",
        id, EP, "ENABLE_ENVOY_JAEGER_TRACING=1", "JAEGER_TRACER_VERSION=PROTO", NULL);
}

static void test_appmesh_env_dump(void **state)
{
    (void)state;
    struct appmesh_env e;
    ok(&e, "APPMESH_RESOURCE_ARN=" ARN, EP, NULL);
    char *s = appmesh_env_dump(&e);
    assert_non_null(strstr(s, "\"id\": \"" ARN "\""));
    assert_int_equal(s[strlen(s) - 1], '\n');
    struct err err;
    err_clear(&err);
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j); /* the printed text loads back */
    json_decref(j);
    free(s);
    appmesh_env_deinit(&e);
}

/* The stats variables (stats_env): DogStatsD, stats tags, the flush interval, the stats files. */
static struct config *build_ok(const struct appmesh_env *e)
{
    struct err err;
    struct config *c = appmesh_env_build(e, &err);
    if (c == NULL) {
        fail_msg("%s", err.msg);
    }
    return c;
}

static void test_appmesh_env_stats(void **state)
{
    (void)state;
    const char *id = "APPMESH_RESOURCE_ARN=" ARN;
    struct appmesh_env e;
    /* none set: no sinks, no stats_config, Envoy's 5 s */
    ok(&e, id, EP, NULL);
    assert_null(at(e.bootstrap, "stats_sinks"));
    assert_null(at(e.bootstrap, "stats_config"));
    struct config *c = build_ok(&e);
    assert_int_equal(c->n_stats_sinks, 0);
    assert_int_equal(c->stats_flush_interval_ms, 5000);
    config_unref(c);
    appmesh_env_deinit(&e);

    /* DogStatsD at the image's default address, the tags, a flush interval */
    ok(&e, id, EP, "ENABLE_ENVOY_DOG_STATSD=1", "ENABLE_ENVOY_STATS_TAGS=true",
       "ENVOY_STATS_FLUSH_INTERVAL=200ms", NULL);
    assert_string_equal(str_at(e.bootstrap, "stats_sinks.0.name"), "envoy.stat_sinks.dog_statsd");
    assert_string_equal(str_at(e.bootstrap, "stats_sinks.0.typed_config.address.socket_address."
                                            "address"),
                        "127.0.0.1");
    assert_int_equal(int_at(e.bootstrap, "stats_sinks.0.typed_config.address.socket_address."
                                         "port_value"),
                     8125);
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.0.tag_name"), "appmesh.mesh");
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.0.fixed_value"), "shop");
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.1.tag_name"),
                        "appmesh.virtual_node");
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.1.fixed_value"), "front");
    c = build_ok(&e);
    assert_int_equal(c->n_stats_sinks, 1);
    assert_int_equal(c->stats_sinks[0].kind, STATS_SINK_DOG_STATSD);
    assert_string_equal(c->stats_sinks[0].addr.text.p, "127.0.0.1:8125");
    assert_string_equal(c->stats_sinks[0].prefix.p, "envoy");
    assert_int_equal(c->stats_flush_interval_ms, 200);
    assert_int_equal(c->n_stats_tags, 2);
    assert_true(c->stats_tags[1].is_fixed);
    config_unref(c);
    appmesh_env_deinit(&e);

    /* address and port; a virtual gateway's tag; seconds */
    ok(&e, "APPMESH_RESOURCE_NAME=mesh/shop/virtualGateway/edge", EP, "ENABLE_ENVOY_DOG_STATSD=1",
       "STATSD_ADDRESS=::1", "STATSD_PORT=9125", "ENABLE_ENVOY_STATS_TAGS=1",
       "ENVOY_STATS_FLUSH_INTERVAL=10s", NULL);
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.1.tag_name"),
                        "appmesh.virtual_gateway");
    assert_string_equal(str_at(e.bootstrap, "stats_config.stats_tags.1.fixed_value"), "edge");
    c = build_ok(&e);
    assert_string_equal(c->stats_sinks[0].addr.text.p, "[::1]:9125");
    assert_int_equal(c->stats_flush_interval_ms, 10000);
    config_unref(c);
    appmesh_env_deinit(&e);

    /* a Unix datagram socket */
    ok(&e, id, EP, "ENABLE_ENVOY_DOG_STATSD=1", "STATSD_SOCKET_PATH=/var/run/datadog/dsd.socket",
       NULL);
    c = build_ok(&e);
    assert_true(c->stats_sinks[0].is_pipe);
    assert_string_equal(c->stats_sinks[0].pipe_path.p, "/var/run/datadog/dsd.socket");
    config_unref(c);
    appmesh_env_deinit(&e);

    /* the stats files: sinks appended after DogStatsD, stats_config replacing the tags */
    const char *sinks = tmp_file(0, "stats_sinks:\n"
                                    "- name: envoy.stat_sinks.statsd\n"
                                    "  typed_config:\n"
                                    "    \"@type\": type.googleapis.com/"
                                    "envoy.config.metrics.v3.StatsdSink\n"
                                    "    address: {socket_address: {address: 127.0.0.1, "
                                    "port_value: 8126}}\n"
                                    "    prefix: cw\n");
    const char *scfg = tmp_file(1, "statsConfig: {stats_tags: [{tag_name: team, fixed_value: a}], "
                                   "use_all_default_tags: false}\n");
    char v1[128], v2[128];
    snprintf(v1, sizeof(v1), "ENVOY_STATS_SINKS_CFG_FILE=%s", sinks);
    snprintf(v2, sizeof(v2), "ENVOY_STATS_CONFIG_FILE=%s", scfg);
    ok(&e, id, EP, "ENABLE_ENVOY_DOG_STATSD=1", "ENABLE_ENVOY_STATS_TAGS=1", v1, v2, NULL);
    c = build_ok(&e);
    assert_int_equal(c->n_stats_sinks, 2);
    assert_int_equal(c->stats_sinks[1].kind, STATS_SINK_STATSD);
    assert_string_equal(c->stats_sinks[1].prefix.p, "cw");
    assert_int_equal(c->n_stats_tags, 1);
    assert_false(c->use_all_default_tags);
    config_unref(c);
    appmesh_env_deinit(&e);

    /* errors name the variable */
    char want[512];
    const char *other = tmp_file(2, "stats_sinks: []\nadmin: {}\n");
    snprintf(v1, sizeof(v1), "ENVOY_STATS_SINKS_CFG_FILE=%s", other);
    snprintf(want, sizeof(want),
             "ENVOY_STATS_SINKS_CFG_FILE: '%s': only stats_sinks may be in this file, not admin",
             other);
    bad(want, id, EP, v1, NULL);
    snprintf(v1, sizeof(v1), "ENVOY_STATS_SINKS_CFG_FILE=%s", sinks);
    bad("ENVOY_STATS_CONFIG_FILE: cannot read '/nonexistent.yaml': No such file or directory", id,
        EP, v1, "ENVOY_STATS_CONFIG_FILE=/nonexistent.yaml", NULL);
    bad("ENABLE_ENVOY_DOG_STATSD: 'yes' is not a boolean", id, EP, "ENABLE_ENVOY_DOG_STATSD=yes",
        NULL);
    bad("STATSD_ADDRESS: 'localhost' is not an IP address", id, EP, "ENABLE_ENVOY_DOG_STATSD=1",
        "STATSD_ADDRESS=localhost", NULL);
    bad("STATSD_PORT: '0' is not an integer in 1..65535", id, EP, "ENABLE_ENVOY_DOG_STATSD=1",
        "STATSD_PORT=0", NULL);
    bad("ENVOY_STATS_FLUSH_INTERVAL: '5' is not a duration from 1ms to 299s (5000ms, 10s)", id, EP,
        "ENVOY_STATS_FLUSH_INTERVAL=5", NULL);
    bad("ENVOY_STATS_FLUSH_INTERVAL: '300s' is not a duration from 1ms to 299s (5000ms, 10s)", id,
        EP, "ENVOY_STATS_FLUSH_INTERVAL=300s", NULL);
    bad("ENVOY_STATS_FLUSH_INTERVAL: '0ms' is not a duration from 1ms to 299s (5000ms, 10s)", id,
        EP, "ENVOY_STATS_FLUSH_INTERVAL=0ms", NULL);
    unlink(sinks);
    unlink(scfg);
    unlink(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_appmesh_env_defaults),
        cmocka_unit_test(test_appmesh_env_every_variable),
        cmocka_unit_test(test_appmesh_env_k8s_controller_sidecar),
        cmocka_unit_test(test_appmesh_env_node_id_errors),
        cmocka_unit_test(test_appmesh_env_endpoint_errors),
        cmocka_unit_test(test_appmesh_env_value_errors),
        cmocka_unit_test(test_appmesh_env_unsupported_variables),
        cmocka_unit_test(test_appmesh_env_xds_tls),
        cmocka_unit_test(test_appmesh_env_resources_file),
        cmocka_unit_test(test_appmesh_env_config_file),
        cmocka_unit_test(test_appmesh_env_dump),
        cmocka_unit_test(test_appmesh_env_stats),
        cmocka_unit_test(test_appmesh_env_tracing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
