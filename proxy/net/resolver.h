/* resolver: getaddrinfo on threads of its own, answered on a libev loop. Shared by the proxy's
 * STRICT_DNS and LOGICAL_DNS clusters (proxy/dns_refresh.h) and remora-xds's name cache
 * (xds/server/dns.h).
 *
 * getaddrinfo blocks, for the resolver's whole timeout when a DNS server does not answer, so it
 * never runs on an event loop: a query goes on a job queue, a fixed pool of RESOLVER_THREADS
 * threads takes the jobs in order, and the answers come back to the loop through an ev_async,
 * where each query's `done` callback runs. A lookup that hangs holds one thread: the others go
 * on with the names behind it (no head-of-line blocking until every thread hangs). The loop and
 * the threads share only the queue (a mutex, two condition variables); a thread may sit in
 * getaddrinfo long after resolver_free, so what they share is freed by whichever lets go last.
 * Memory: the threads are fixed; the queue holds what callers asked (dns_refresh never has two
 * lookups of one name of one cluster on it).
 *
 * Thread: the loop's, except the lookup function (a resolver thread). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct ev_loop;
struct resolver;
struct resolver_query;

/* Room for one address in text (INET6_ADDRSTRLEN), and for the addresses of one answer. */
#define RESOLVER_ADDR_MAX 46
#define RESOLVER_ADDRS_MAX 64

/* The threads of one resolver (glibc's getaddrinfo is thread-safe). */
#define RESOLVER_THREADS 4

/* Which address families a lookup asks for, as Envoy's Cluster.dns_lookup_family. */
enum resolver_family {
    RESOLVER_V4_PREFERRED, /* IPv4; IPv6 when the name has no IPv4 address */
    RESOLVER_V4_ONLY,
    RESOLVER_V6_ONLY,
    RESOLVER_ALL,          /* both, in getaddrinfo's order */
    RESOLVER_V6_PREFERRED, /* IPv6; IPv4 when the name has no IPv6 address (Envoy's AUTO) */
};

/* One answer: distinct IP addresses in text, in the order the lookup gave them. `n` is 0 when
 * the name does not resolve; `gai_err` is then getaddrinfo's error (0: no address of the
 * families asked for). */
struct resolver_answer {
    size_t n;
    int gai_err;
    char addrs[RESOLVER_ADDRS_MAX][RESOLVER_ADDR_MAX];
};

/* What the resolver threads run for a name (getaddrinfo by default; tests put in a lookup they
 * control): fills `out` (zeroed). Thread: a resolver thread (several at once). */
typedef void (*resolver_lookup_fn)(const char *host, enum resolver_family fam,
                                   struct resolver_answer *out);

/* A query's answer, on the loop. `a` is borrowed for the call. The query is gone after it. */
typedef void (*resolver_done_cb)(void *arg, const char *host, const struct resolver_answer *a);

/* Starts the resolver threads (aborts when it cannot: nothing would resolve) with its ev_async
 * on `loop`. The async watcher does not keep the loop running (ev_unref). */
struct resolver *resolver_new(struct ev_loop *loop);

/* Stops the async watcher and leaves the threads to end by themselves (one may be inside
 * getaddrinfo for a while): no `done` is called after this and nothing of `r` is touched. */
void resolver_free(struct resolver *r);

/* Replaces the lookup function; before the first query. */
void resolver_set_lookup(struct resolver *r, resolver_lookup_fn fn);

/* Queues a lookup of `host` (copied) for families `fam`; `done(arg, ...)` is called on the loop
 * with the answer, unless the query is cancelled first. Returns the query (owned by the
 * resolver until done runs or resolver_cancel). */
struct resolver_query *resolver_query(struct resolver *r, const char *host,
                                      enum resolver_family fam, resolver_done_cb done, void *arg);

/* `done` will not be called for `q` (which may be on the queue, being looked up, or answered
 * and not yet delivered). `q` is invalid after this. */
void resolver_cancel(struct resolver *r, struct resolver_query *q);

/* Blocks the loop up to `seconds` for `q`'s answer. If it comes, its `done` runs now (inside
 * this call) and true is returned; else false and it will be delivered later as usual. For a
 * caller that must answer synchronously and can afford a short wait (remora-xds). */
bool resolver_wait(struct resolver *r, struct resolver_query *q, double seconds);

/* The default lookup: getaddrinfo for `fam` (V4_PREFERRED: AF_INET, then AF_INET6 when that
 * gave nothing; V6_PREFERRED the other way round), IPv4 and IPv6 addresses only, duplicates
 * dropped, at most RESOLVER_ADDRS_MAX. Blocking; any thread. */
void resolver_getaddrinfo(const char *host, enum resolver_family fam, struct resolver_answer *out);

/* Whether `host` is an IPv4 or IPv6 literal (answered without a lookup by the callers that want
 * it). */
bool resolver_is_literal(const char *host);
