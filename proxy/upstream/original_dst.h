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
 * Differences from Envoy: its hosts are shared by all workers; these are per worker (a
 * destination used on two workers has a host on each). /clusters lists them from reports the
 * workers make when the admin asks (original_dst_report; worker.h's worker_od_*), a host per
 * destination with the workers' stats added up. Thread: the owning worker. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy/core/str.h"
#include "proxy/net/accepted.h"
#include "proxy/stats/stats.h"

struct cluster_rt;
struct cluster_cfg;
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

/* What one worker has of ORIGINAL_DST hosts, copied for the admin (another thread): every host
 * of its bootstrap ORIGINAL_DST clusters and of the CDS ones it has set up (worker.od_dyn). */
struct od_report_host {
    const struct cluster_cfg *cluster; /* compared with the admin's clusters, never read */
    char addr[SOCKADDR_TEXT_MAX];      /* "10.0.0.1:80", "[::1]:80" */
    struct host_stats st;              /* a copy */
};
struct od_report {
    uint64_t gen; /* the request it answers (worker.h: worker_od_request) */
    uint32_t n;
    struct od_report_host *h; /* owned; [n] */
};

/* The report of worker `w` (owned by the caller: original_dst_report_free). Thread: `w`. */
struct od_report *original_dst_report(struct worker *w, uint64_t gen);
void original_dst_report_free(struct od_report *r);
