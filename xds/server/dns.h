/* dns: the names remora-xds's translation resolves (virtual nodes' `serviceDiscovery.dns`
 * hostnames, virtual service names for TCP backends), cached and resolved off the loop.
 *
 * getaddrinfo blocks, for the resolver's whole timeout when a DNS server does not answer, so it
 * runs on the resolver threads of proxy/net/resolver.h, never on the loop. The first time a name is
 * asked for, the loop waits for its answer a short while (`first_wait_ms`, shared by everything one
 * loop iteration asks for: a translation of many new names waits that long in all), so a name that
 * resolves at once is in the first snapshot; a slower one resolves to nothing for now, and when its
 * answer comes `changed` is called (on the loop) so the snapshots are made again with it. A
 * timer re-resolves every cached name every `refresh_ms`, and `changed` is called when an
 * answer differs. IP literals are answered as they are. At most DNS_CACHE_MAX names are kept;
 * past that the cache starts over (names come from API clients). */
#pragma once

#include <stddef.h>

#include "proxy/net/resolver.h"
#include "xds/appmesh/translate.h"

struct ev_loop;
struct dns;

typedef void (*dns_changed_cb)(void *arg);

#define DNS_CACHE_MAX 4096

struct dns *dns_new(struct ev_loop *loop, double refresh_ms, double first_wait_ms,
                    dns_changed_cb changed, void *arg);
/* Stops the timer and leaves the resolver threads to end by themselves (one may be inside
 * getaddrinfo for a while): nothing of `d` is touched after this. */
void dns_free(struct dns *d);

/* A tr_resolve_cb (translate.h) over `arg` = struct dns. */
size_t dns_resolve(void *arg, const char *host, char out[][TR_ADDR_MAX], size_t max);

/* getaddrinfo by default (resolver_getaddrinfo, IPv4 and IPv6: RESOLVER_ALL); tests put in a
 * lookup they control. Before the first dns_resolve. */
void dns_set_lookup(struct dns *d, resolver_lookup_fn fn);
