/* sds_set: the secrets taken over ADS (SdsSecretConfig with `sds_config: {ads: {}}`), one entry
 * per secret name, shared by every user of that name: the bootstrap's listeners and clusters
 * and the containers of the LDS listeners and CDS clusters in force (Envoy's one SDS
 * subscription per secret name). reload.c owns the set (proxy/reload.h); the ADS client
 * subscribes its names (proxy/xds/ads.h).
 *
 * An entry holds what the name's users share: the last accepted Secret (for /config_dump and to
 * seed a listener or cluster that comes later), its version, a generation bumped by each
 * accepted Secret (a container's subscription remembers the generation it was given,
 * sds_cfg.seen, so a new container gets the material once, before the workers see it), and
 * the sds.<name>.* stats (the bootstrap's own block for a name it uses, else the entry's).
 *
 * Census: the names in use follow the listener and cluster sets. After each change, reload.c
 * marks every name still used (sds_set_begin, sds_set_use for each, sds_set_end); names nobody
 * uses go, with their secret (memory stays bounded by what is in use), and sds_set_end says
 * whether the name set changed (the ADS client then sends a new Secret request).
 *
 * Pure: no I/O, no OpenSSL; the Secret is opaque here (freed with the set's `free_pb`).
 * Thread: main. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/stats/stats.h"

struct sds_entry {
    char *name;                /* owned */
    int32_t boot;              /* the bootstrap's subscription (config.sds[boot]), or -1 */
    bool used;                 /* named by someone at the last census (a bootstrap name: always) */
    bool arrived;              /* a Secret was accepted */
    bool wait_started;         /* a startup wait (init gate) was started for it */
    uint64_t gen;              /* accepted Secrets so far (0: none) */
    uint64_t fetch_timeout_ms; /* initial_fetch_timeout of its first user (0: for ever) */
    void *pb;                  /* owned (free_pb): the last accepted Secret, or NULL */
    char *version;             /* owned: its version_info, or NULL */
    double updated;            /* when it was accepted (Unix seconds) */
    struct sds_stats *stats;   /* the bootstrap's (borrowed) or &own */
    struct sds_stats own;
};

struct sds_set {
    struct sds_entry **v; /* owned; [n], in the order names were first used */
    uint32_t n;
    bool changed; /* the name set changed since the last sds_set_end */
    void (*free_pb)(void *pb);
};

/* An empty set; `free_pb` frees an entry's Secret (may be NULL: not freed). */
void sds_set_init(struct sds_set *s, void (*free_pb)(void *pb));
void sds_set_deinit(struct sds_set *s);

/* The entry of `name`, or NULL. */
struct sds_entry *sds_set_find(const struct sds_set *s, const char *name);

/* A name the bootstrap uses (its subscription `boot`, its stats `st`: borrowed, outliving the
 * set): always in use. Call once per bootstrap ADS subscription, before any census. */
struct sds_entry *sds_set_add_boot(struct sds_set *s, const char *name, int32_t boot,
                                   uint64_t fetch_timeout_ms, struct sds_stats *st);

/* A census: sds_set_begin, then sds_set_use for every name a dynamic listener or cluster uses
 * (found or added; `fetch_timeout_ms` is kept from the first use), then sds_set_end, which
 * drops the entries nobody used (freeing their Secret) and returns whether the set of names
 * changed since the previous sds_set_end (added or dropped names). */
void sds_set_begin(struct sds_set *s);
struct sds_entry *sds_set_use(struct sds_set *s, const char *name, uint64_t fetch_timeout_ms);
bool sds_set_end(struct sds_set *s);

/* The names in use: up to `cap` into names[] (borrowed, valid until the next census); returns
 * how many there are. */
uint32_t sds_set_names(const struct sds_set *s, const char **names, uint32_t cap);

/* Records an accepted Secret for `e` (takes `pb` and a copy of `version`): bumps its
 * generation. The previous Secret is freed. */
void sds_set_accept(struct sds_set *s, struct sds_entry *e, void *pb, const char *version,
                    double now);

/* Warming: whether the init gate should wait for `e` now. `starting`: the gate is still closed
 * (the first LDS/CDS responses are being applied, or other things are still awaited). A name
 * whose Secret arrived, or that already has a wait (started, or the bootstrap's own), does not;
 * after startup nothing waits: a listener or cluster whose secret has not arrived fails closed
 * (its TLS context has no certificate or no trust store). */
bool sds_set_should_wait(const struct sds_entry *e, bool starting);

/* Whether a container subscription given generation `seen` of `e` needs the current material:
 * the Secret arrived and is newer than what it has. */
bool sds_set_needs_seed(const struct sds_entry *e, uint64_t seen);
