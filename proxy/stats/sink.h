/* sink: Envoy's push stats sinks, envoy.stat_sinks.statsd and envoy.stat_sinks.dog_statsd
 * (config: proxy/config/build_stats.h).
 *
 * Every stats_flush_interval (default 5 s) a timer on main's loop (never a worker's) sums the
 * workers' blocks as /stats does (stats_each) and sends, to each sink, every used counter as
 * its delta since the last flush (`|c`) and every used gauge (`|g`), as Envoy's sinks do:
 *   statsd:    <prefix>.<full name>:<value>|c
 *   DogStatsD: <prefix>.<tag-extracted name>:<value>|c|#<tag>:<value>,...   (tags.h)
 * Histograms are not sent: remora keeps them as bucket counts, and Envoy's sinks send each
 * recorded value (`|ms`), which remora does not keep.
 *
 * Lines are packed into datagrams of at most max_bytes_per_datagram bytes (DogStatsD; default,
 * and always for statsd: one line per datagram, as Envoy), never splitting a line; a line
 * longer than the limit goes alone. Sends are non-blocking (UDP, or a Unix datagram socket for a
 * `pipe` address, connected again at the next flush when the peer was not there); a datagram
 * that cannot be sent is dropped and counted (Envoy has no stat for it: the first drop of a
 * sink is logged at warning level, the rest at debug level).
 *
 * A stat's tag-extracted name and tags are computed once, the first time it is flushed, and
 * kept (with its last counter value) in a name-sorted cache that each flush walks alongside the
 * sorted stats; stats gone from /stats leave the cache. Thread: main. */
#pragma once

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/err.h"
#include "proxy/stats/stats.h"

struct config;
struct admin_ctx;

/* One line into `out`: `prefix`.`name`:`value`|`type`, then `tags` ("|#..." or "") if not NULL.
 * Characters that would break the line (':' '|' '\n' '\r' in the name) become '_'. */
void statsd_line(struct buf *out, const char *prefix, const char *name, uint64_t value, char type,
                 const char *tags);

/* Datagram packing: lines joined by '\n' up to `max` bytes (0: one line per datagram). */
struct dgram_packer {
    struct buf b;
    size_t max;
    void (*send)(void *arg, const char *p, size_t n);
    void *arg;
};
void packer_init(struct dgram_packer *pk, size_t max,
                 void (*send)(void *arg, const char *p, size_t n), void *arg);
void packer_add(struct dgram_packer *pk, const char *line, size_t n);
void packer_flush(struct dgram_packer *pk);
void packer_deinit(struct dgram_packer *pk);

/* The sinks' state without sockets: the cache and a packer per sink, whose datagrams go to
 * `send(arg, sink index, bytes)`. A flush is begin, every stat in ascending name order
 * (stats_each's), end. */
struct sink_state;
struct sink_state *sink_state_new(const struct config *c,
                                  void (*send)(void *arg, uint32_t sink, const char *p, size_t n),
                                  void *arg, struct err *err);
void sink_state_free(struct sink_state *st);
void sink_state_begin(struct sink_state *st);
void sink_state_stat(struct sink_state *st, const char *name, enum stat_kind kind, uint64_t value);
void sink_state_end(struct sink_state *st);

/* The timer and sockets for c->stats_sinks (c->n_stats_sinks > 0), reading the stats through
 * `ctx` (admin.h; main's, filled in). Returns NULL with `err` set when a socket cannot be made. */
struct stats_flusher;
struct stats_flusher *stats_flusher_start(struct ev_loop *loop, const struct config *c,
                                          struct admin_ctx *ctx, struct err *err);
void stats_flusher_flush(struct stats_flusher *f);
void stats_flusher_stop(struct stats_flusher *f);
