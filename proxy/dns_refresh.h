/* dns_refresh: STRICT_DNS clusters from CDS, and LOGICAL_DNS clusters (the bootstrap's and
 * CDS's), resolved again and again while remora runs, as Envoy's are, on main's loop with the
 * lookups on the resolver threads (proxy/net/resolver.h): never a getaddrinfo on main's or a
 * worker's loop.
 *
 * Each hostname of each current STRICT_DNS cluster (cluster_cfg.dns_hosts) is a target with its
 * own timer: resolved at once when the cluster appears, then every dns_refresh_rate (plus a
 * jitter below a tenth of it, so clusters do not resolve in step); after a failed lookup, every
 * dns_failure_refresh_rate (Envoy's jittered exponential back-off from base_interval to
 * max_interval) or, without it, dns_refresh_rate. Per lookup, as Envoy counts them on
 * cluster.<name>.*: update_attempt; then update_success (the name gave addresses) or
 * update_failure (it did not: the addresses it had stay, as Envoy keeps its last good answer);
 * a success with the same addresses (as a set) as before is update_no_rebuild, else the
 * cluster's hosts are made again from every target's last good answer through `changed`
 * (reload.c -> cds_update_dns: a new version of the cluster that keeps the health-check and
 * outlier state of the addresses that stay, as an EDS update does). For a LOGICAL_DNS cluster
 * only the first address counts (a new first address is a change), and `changed` moves its one
 * host to it in place (struct logical_addr in proxy/config/config.h).
 *
 * The builder takes a cluster's addresses from here (struct config_dns, dns_refresh_dns()), so
 * a cluster modified by CDS keeps the answers of its names at once.
 *
 * Thread: main. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct eds_stats;
struct cluster_cfg;
struct config_dns;
struct resolver;
struct resolver_answer;
struct dns_refresh;

/* What dns_refresh needs from its owner (reload.c). */
struct dns_refresh_ops {
    /* cluster.<name>.update_* of the current version of `cluster`, or NULL */
    struct eds_stats *(*stats)(void *ud, const char *cluster);
    /* the last good answers of `cluster`'s names changed: make its hosts again */
    void (*changed)(void *ud, const char *cluster);
    /* every cluster known at dns_refresh_hold_init() has its first answers (or failures), or
     * the init bound passed: startup may go on */
    void (*init_done)(void *ud);
    /* a name of `cluster` had its first lookup back (good or failed; after `changed`): a
     * warming cluster may be initialized now (config_dns.pending). NULL ok. */
    void (*resolved)(void *ud, const char *cluster);
    void *ud;
};

/* A refresher on `loop` with its own resolver thread. `ops` is copied. */
struct dns_refresh *dns_refresh_new(struct ev_loop *loop, const struct dns_refresh_ops *ops);

/* Cancels every lookup and timer, stops the resolver thread (resolver_free). NULL is fine. */
void dns_refresh_free(struct dns_refresh *d);

/* The current STRICT_DNS and LOGICAL_DNS clusters, after every CDS change: `cfgs[n]` (borrowed
 * for the call).
 * A cluster's targets are kept (answers, timers, back-off) for the names it still has; new
 * names and new clusters are resolved at once; gone ones are dropped and their lookups
 * cancelled. A changed refresh rate applies from the next lookup. */
void dns_refresh_sync(struct dns_refresh *d, const struct cluster_cfg *const *cfgs, uint32_t n);

/* Gives the target `host` of cluster `cluster` (after dns_refresh_sync) answer `a` as its
 * first, if it has none yet: the addresses a bootstrap cluster was built with. Its lookup goes
 * on; an equal answer is then update_no_rebuild. */
void dns_refresh_seed(struct dns_refresh *d, const char *cluster, const char *host,
                      const struct resolver_answer *a);

/* The builder's view (config_dns.answer over `d`): valid while `d` lives. */
const struct config_dns *dns_refresh_dns(struct dns_refresh *d);

/* Startup (Envoy's init manager waits for a STRICT_DNS cluster's first resolution): returns
 * true when some known target has no first answer yet; then `init_done` is called once they
 * all have, or after `bound_ms`, whichever is first. False: nothing to wait for (and
 * `init_done` is not called). */
bool dns_refresh_hold_init(struct dns_refresh *d, uint64_t bound_ms);

/* Tests replace the resolver's lookup (resolver_set_lookup), before the first sync. */
struct resolver *dns_refresh_resolver(struct dns_refresh *d);

/* ---- pure parts (unit-tested) ---- */

/* Whether two answers hold the same addresses, in any order. */
bool dns_refresh_same_addrs(const struct resolver_answer *a, const struct resolver_answer *b);

/* The delay before the next refresh of a target: `refresh_ms` plus a jitter from `rnd` below
 * refresh_ms / 10 (at least 1 ms). */
uint64_t dns_refresh_next_ms(uint64_t refresh_ms, uint64_t rnd);
