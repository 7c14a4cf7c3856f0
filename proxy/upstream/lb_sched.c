/* lb_sched: building the EDF heaps and cumulative weights of weighted picks (see lb_sched.h). */
#include "proxy/upstream/lb_sched.h"

#include "proxy/config/config.h"
#include "proxy/upstream/hostset.h"

/* Bottom-up heap construction over h[0..n). */
static void heapify(struct lb_edf_entry *h, uint32_t n)
{
    for (uint32_t i = n / 2; i-- > 0;) {
        lb_edf_sift_down_at(h, n, i);
    }
}

void lb_sched_build(struct lb_set *s, const struct cluster_cfg *cfg)
{
    if (s->equal_weights || s->n == 0) {
        return;
    }
    if (s->cum != NULL) {
        uint64_t acc = 0;
        for (uint32_t k = 0; k < s->n; k++) {
            acc += cfg->endpoints[s->idx[k]].weight;
            s->cum[k] = acc;
        }
    }
    if (s->edf == NULL) {
        return;
    }
    bool rr = cfg->lb != LB_LEAST_REQUEST;
    for (uint32_t k = 0; k < s->n; k++) {
        struct lb_edf_entry *e = &s->edf[k];
        uint32_t w = cfg->endpoints[s->idx[k]].weight;
        w = w > 0 ? w : 1;
        e->ep = s->idx[k];
        e->weight = w;
        /* The first deadline: (k + 1) / (n + 1) of the endpoint's period. */
        uint64_t phase = (uint64_t)(k + 1) * LB_EDF_SCALE / ((uint64_t)s->n + 1);
        if (rr) {
            e->u.rr.q = (uint32_t)(LB_EDF_SCALE / w);
            e->u.rr.r = (uint32_t)(LB_EDF_SCALE % w);
            e->key = phase / w;
            e->u.rr.rem = (uint32_t)(phase % w);
        } else {
            /* From the configured weight: active requests count from the first re-insertion. */
            e->u.step = (double)LB_EDF_SCALE / (double)w;
            e->key = phase / w;
        }
    }
    heapify(s->edf, s->n);
}
