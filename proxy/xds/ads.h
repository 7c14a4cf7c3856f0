/* ads: the proxy's xDS client, one Aggregated Discovery Service stream (state of the world) to
 * the cluster named by dynamic_resources.ads_config, on the main thread's loop.
 *
 *   socket (plain TCP, the cluster's endpoints in turn) -> nghttp2 client session (h2c, prior
 *   knowledge) -> one POST .../AggregatedDiscoveryService/StreamAggregatedResources stream ->
 *   gRPC messages (proxy/http/grpc_msg.h: bounded reader, prefix writer) -> ads_state (pure:
 *   per-type versions, nonces, ACK/NACK; proxy/xds/ads_state.h) -> a type's apply callback.
 *
 * Types: a table (`types[]` in ads.c), one entry per type URL with its apply callback, in
 * Envoy's order (requests due together are written in table order):
 *   - Cluster (cds_config `ads {}`): a wildcard subscription; each response goes whole through
 *     reload_clusters() (proxy/reload.h: all or nothing, the file path's builder and stats);
 *   - ClusterLoadAssignment (with any cds_config): the service names of the CDS clusters of
 *     type EDS whose eds_config is `ads {}`, following every change of the CDS set
 *     (reload_set_cds_hook); each assignment through reload_endpoints() for the clusters
 *     naming it; the last accepted one per name is kept for a cluster that comes back or
 *     changes its EDS source under the same name;
 *   - RouteConfiguration: every connection manager whose `rds` uses `ads {}`
 *     (config.rds[i].ads) subscribes its route_config_name, and a response's resources go
 *     through reload_routes(): the same builder, validation, stats and /config_dump as RDS
 *     from files; plus the route names of the LDS listeners' connection managers with
 *     `ads {}`, following every change of the listener set (reload_set_lds_hook), each
 *     resource through reload_lds_routes();
 *   - Listener (lds_config `ads {}`): a wildcard subscription through reload_listeners();
 *   - Secret: every name a TLS context's SdsSecretConfig takes with sds_config `ads {}`, in
 *     the bootstrap (config.sds[i].ads) or in the LDS listeners and CDS clusters in force
 *     (proxy/sds_set.h, following their sets: reload_set_sds_hook), each Secret through
 *     reload_sds_secret() to every user of its name: the same compile, swap, stats and
 *     /config_dump as SDS from files; a bad one is NACKed, the old one serving.
 *
 * States: IDLE -> CONNECTING (TCP connect, bounded by the cluster's connect_timeout) ->
 * STREAMING (request HEADERS sent; responses flow) -> on any failure (connect error, EOF, a
 * GOAWAY, the stream ending with any grpc-status, a non-200 or non-gRPC answer, a protocol
 * error, an oversize or undecodable message, a keepalive PING unanswered within the ADS
 * cluster's http2_protocol_options.connection_keepalive timeout) BACKOFF (Envoy's jittered
 * exponential back-off: 500 ms base, 30 s max, reset by each response) -> CONNECTING again, on the
 * next endpoint. A new stream re-sends every subscription with its last accepted version and an
 * empty nonce. What was accepted keeps serving while the stream is down.
 *
 * Initialisation (Envoy's init manager): startup waits for each ADS route subscription (a
 * response carried its resource, accepted or rejected, as in Envoy, or its
 * initial_fetch_timeout passed; 0: never), each ADS secret of the bootstrap and of the
 * listeners and clusters the first LDS/CDS responses bring (likewise: a listener whose
 * certificate comes over ADS does not serve before it, as Envoy's listener warming), the
 * first CDS response (or its timeout), and, from
 * that response on, the first assignment (or timeout) of each EDS-over-ADS cluster it brought
 * without endpoints. When the last one is done, `on_init(ud)` runs once.
 *
 * Bounds: messages of at most ADS_MAX_MESSAGE bytes (a longer prefix fails the stream before
 * its bytes are buffered), ADS_MAX_RESOURCES per response, at most one request (per type) queued,
 * and the write buffer capped; a hostile server costs a reconnect, never memory.
 *
 * Stats (Envoy's): control_plane.connected_state (1 while a stream is up),
 * control_plane.rate_limit_enforced (0: no rate limit is configured or supported),
 * control_plane.pending_requests (requests due, not yet written). The connection does not go
 * through the cluster's pools, so cluster.<ads cluster>.* does not count it, except
 * http2.keepalive_timeout (ads_stats.keepalive_timeout, added in when stats are rendered).
 *
 * Thread: main only. */
#pragma once

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "proxy/stats/stats.h"

struct config;
struct reload;

#define ADS_MAX_MESSAGE (16u * 1024 * 1024)

struct ads;

/* Starts the client for cfg->ads (must be set; `cfg` and `reload` borrowed, outliving the
 * client): subscribes, starts the initial fetch timers and connects. `on_init(ud)` runs once
 * when every ADS subscription is initialised (see above); never from inside ads_new. */
struct ads *ads_new(struct ev_loop *loop, const struct config *cfg, struct reload *reload,
                    void (*on_init)(void *ud), void *ud);

/* True until every ADS subscription is initialised. */
bool ads_initializing(const struct ads *a);

/* The stats, for the admin endpoint. */
const struct ads_stats *ads_get_stats(const struct ads *a);

/* Closes the stream and frees everything. NULL is fine. */
void ads_free(struct ads *a);
