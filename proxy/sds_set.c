/* sds_set: ADS secrets by name, shared by the bootstrap's and the dynamic listeners' and
 * clusters' TLS contexts (see sds_set.h). Pure bookkeeping on main. */
#include "proxy/sds_set.h"

#include <stdlib.h>
#include <string.h>

#include "proxy/core/xmalloc.h"

void sds_set_init(struct sds_set *s, void (*free_pb)(void *pb))
{
    memset(s, 0, sizeof(*s));
    s->free_pb = free_pb;
}

static void entry_free(struct sds_set *s, struct sds_entry *e)
{
    if (e->pb != NULL && s->free_pb != NULL) {
        s->free_pb(e->pb);
    }
    free(e->version);
    free(e->name);
    free(e);
}

void sds_set_deinit(struct sds_set *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        entry_free(s, s->v[i]);
    }
    free(s->v);
    s->v = NULL;
    s->n = 0;
}

struct sds_entry *sds_set_find(const struct sds_set *s, const char *name)
{
    for (uint32_t i = 0; i < s->n; i++) {
        if (strcmp(s->v[i]->name, name) == 0) {
            return s->v[i];
        }
    }
    return NULL;
}

static struct sds_entry *add(struct sds_set *s, const char *name, uint64_t fetch_timeout_ms)
{
    struct sds_entry *e = xcalloc(1, sizeof(*e));
    e->name = xstrdup(name);
    e->boot = -1;
    e->fetch_timeout_ms = fetch_timeout_ms;
    e->stats = &e->own;
    s->v = xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
    s->v[s->n++] = e;
    s->changed = true;
    return e;
}

struct sds_entry *sds_set_add_boot(struct sds_set *s, const char *name, int32_t boot,
                                   uint64_t fetch_timeout_ms, struct sds_stats *st)
{
    struct sds_entry *e = sds_set_find(s, name);
    if (e == NULL) {
        e = add(s, name, fetch_timeout_ms);
    }
    if (e->boot < 0) {
        e->boot = boot;
        e->stats = st;
    }
    e->used = true;
    return e;
}

void sds_set_begin(struct sds_set *s)
{
    for (uint32_t i = 0; i < s->n; i++) {
        s->v[i]->used = s->v[i]->boot >= 0;
    }
}

struct sds_entry *sds_set_use(struct sds_set *s, const char *name, uint64_t fetch_timeout_ms)
{
    struct sds_entry *e = sds_set_find(s, name);
    if (e == NULL) {
        e = add(s, name, fetch_timeout_ms);
    }
    e->used = true;
    return e;
}

bool sds_set_end(struct sds_set *s)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n; i++) {
        if (s->v[i]->used) {
            s->v[k++] = s->v[i];
        } else {
            entry_free(s, s->v[i]);
            s->changed = true;
        }
    }
    s->n = k;
    bool changed = s->changed;
    s->changed = false;
    return changed;
}

uint32_t sds_set_names(const struct sds_set *s, const char **names, uint32_t cap)
{
    for (uint32_t i = 0; i < s->n && i < cap; i++) {
        names[i] = s->v[i]->name;
    }
    return s->n;
}

void sds_set_accept(struct sds_set *s, struct sds_entry *e, void *pb, const char *version,
                    double now)
{
    if (e->pb != NULL && s->free_pb != NULL) {
        s->free_pb(e->pb);
    }
    free(e->version);
    e->pb = pb;
    e->version = xstrdup(version != NULL ? version : "");
    e->updated = now;
    e->arrived = true;
    e->gen++;
}

bool sds_set_should_wait(const struct sds_entry *e, bool starting)
{
    return starting && e->used && !e->arrived && !e->wait_started && e->boot < 0;
}

bool sds_set_needs_seed(const struct sds_entry *e, uint64_t seen)
{
    return e->arrived && e->gen != seen;
}
