/* shared: allocation of the cluster-wide state (see shared.h). */
#include "proxy/upstream/shared.h"

#include <stdlib.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"

struct cluster_shared *cluster_shared_new(const struct config *c)
{
    struct cluster_shared *s = xcalloc(c->n_clusters ? c->n_clusters : 1, sizeof(*s));
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        s[i].n_eps = c->clusters[i].n_endpoints;
        s[i].eps = xcalloc(s[i].n_eps ? s[i].n_eps : 1, sizeof(*s[i].eps));
    }
    return s;
}

void cluster_shared_free(struct cluster_shared *s, const struct config *c)
{
    if (s == NULL) {
        return;
    }
    for (uint32_t i = 0; i < c->n_clusters; i++) {
        free(s[i].eps);
    }
    free(s);
}
