/* original_dst: the hosts of an ORIGINAL_DST cluster, made at run time, one per destination
 * address, as Envoy's original destination cluster does: a request (or TCP session) goes to the
 * address its connection had before an iptables REDIRECT sent it to remora (restored by the
 * original_dst listener filter), or, with original_dst_lb_config.use_http_header, to the
 * address in that header (x-envoy-original-dst-host by default). upstream_port_override
 * replaces the port.
 *
 * Each worker keeps its own hosts (a list per cluster, most recently used first), each with its
 * own connection pool; nothing is shared, so no lock. A host not picked during a whole
 * cleanup_interval (default 5 s), with no request, TCP session or busy connection on it, has
 * its idle connections closed and is freed (deferred, after those connections). At most
 * OD_MAX_HOSTS hosts per worker and cluster: past that a pick fails (503 UH) until the sweep
 * frees some.
 *
 * Differences from Envoy: its hosts are shared by all workers and listed by /clusters; these
 * are per worker and not listed (the cluster's own stats count their traffic). Thread: the
 * owning worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/str.h"

struct cluster_rt;
struct endpoint_rt;
struct worker;

#define OD_MAX_HOSTS 4096

/* The host for destination `dst` (IPv4 or IPv6) in ORIGINAL_DST cluster `c`, made if new;
 * NULL when `dst` is no IP address or the cluster is full. */
struct endpoint_rt *original_dst_host(struct cluster_rt *c, const struct sockaddr *dst);

/* Parses "10.0.0.1:80" or "[fd00::1]:80" (a header's value) into `out`. */
bool original_dst_parse(struct str s, struct sockaddr_storage *out);

/* The sweep: every cleanup_interval, frees the hosts of `c` that nothing used since the last
 * one. Called from the worker's one-second tick with the loop's time. */
void original_dst_sweep(struct worker *w, struct cluster_rt *c, double now);

/* Frees every host of `c` (the worker stops: busy connections are gone). */
void original_dst_free_all(struct cluster_rt *c);
