/* config: snapshot reference counting (see config.h). The snapshot is built by build.c. */
#include "proxy/config/config.h"

#include "proxy/config/cluster_map.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>

#include <protobuf-c/protobuf-c.h>

void config_ref(const struct config *c)
{
    struct config *m = (struct config *)c;
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

void config_unref(const struct config *c)
{
    if (c == NULL) {
        return;
    }
    struct config *m = (struct config *)c;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (m->bootstrap_pb != NULL) {
        protobuf_c_message_free_unpacked(m->bootstrap_pb, NULL);
    }
    for (struct config_cleanup *cu = m->cleanups; cu != NULL; cu = cu->next) {
        cu->fn(cu->arg);
    }
    /* The struct itself lives in its own arena: copy the arena out before freeing. */
    struct arena a = m->arena;
    arena_deinit(&a);
}

void config_on_free(struct config *c, void (*fn)(void *arg), void *arg)
{
    struct config_cleanup *cu = ARENA_NEW(&c->arena, struct config_cleanup);
    cu->fn = fn;
    cu->arg = arg;
    cu->next = c->cleanups;
    c->cleanups = cu;
}

const struct cluster_cfg *config_find_cluster(const struct config *c, struct str name)
{
    if (c->cluster_map != NULL) {
        /* built with the clusters; an RDS container's may hold CDS clusters too (cds.h) */
        return cluster_map_find(c->cluster_map, name);
    }
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        if (str_eq(c->clusters[i].name, name)) {
            return &c->clusters[i];
        }
    }
    return NULL;
}

const struct sock_addr *endpoint_connect_addr(const struct endpoint_cfg *ep, struct sock_addr *tmp)
{
    if (ep->logical == NULL) {
        return &ep->addr;
    }
    struct logical_addr *la = ep->logical;
    pthread_mutex_lock(&la->mu);
    *tmp = la->addr; /* (its text points into la: only ss and len are used to connect) */
    pthread_mutex_unlock(&la->mu);
    return tmp;
}

bool endpoint_resolved(const struct endpoint_cfg *ep)
{
    if (ep->logical == NULL) {
        return true;
    }
    pthread_mutex_lock(&ep->logical->mu);
    bool r = ep->logical->addr.len > 0;
    pthread_mutex_unlock(&ep->logical->mu);
    return r;
}

struct str endpoint_addr_text(const struct endpoint_cfg *ep, char *buf, size_t cap)
{
    if (ep->logical == NULL) {
        return ep->addr.text;
    }
    struct logical_addr *la = ep->logical;
    pthread_mutex_lock(&la->mu);
    int n = la->addr.len > 0 ? snprintf(buf, cap, "%s", la->text) : 0;
    pthread_mutex_unlock(&la->mu);
    return (struct str){buf, n > 0 ? ((size_t)n < cap ? (size_t)n : cap - 1) : 0};
}

bool logical_addr_set(struct logical_addr *la, const char *ip, uint16_t port)
{
    struct sock_addr a = {0};
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a.ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a.ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(port);
        a.len = sizeof(*v4);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(port);
        a.len = sizeof(*v6);
    } else {
        return false;
    }
    pthread_mutex_lock(&la->mu);
    int n = snprintf(la->text, sizeof(la->text), a.ss.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u",
                     ip, port);
    a.text = (struct str){la->text, n > 0 ? (size_t)n : 0};
    la->addr = a;
    pthread_mutex_unlock(&la->mu);
    return true;
}
