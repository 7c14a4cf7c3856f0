/* registry: the const table of HTTP filters (see registry.h). Lookups run at config time only,
 * over a handful of entries: a linear scan. */
#include "filters/registry.h"

#include <string.h>

#include "proxy/http/filter.h"

static const struct filter_ops *const filters[] = {
    &fault_filter_ops,
    &local_ratelimit_filter_ops,
    &header_mutation_filter_ops,
    &grpc_stats_filter_ops,
    &rbac_filter_ops,
    &buffer_filter_ops,
    &health_check_filter_ops,
    &cors_filter_ops,
};

#define N_FILTERS (sizeof(filters) / sizeof(filters[0]))

const struct filter_ops *filter_registry_find(const char *type_name, size_t type_len,
                                              const char *name)
{
    for (size_t i = 0; i < N_FILTERS; i++) {
        const struct filter_ops *o = filters[i];
        if (type_len > 0) {
            const char *t = o->config_type->name;
            if (strlen(t) == type_len && memcmp(t, type_name, type_len) == 0) {
                return o;
            }
        } else if (name != NULL && strcmp(o->name, name) == 0) {
            return o;
        }
    }
    return NULL;
}

size_t filter_registry_count(void)
{
    return N_FILTERS;
}

const struct filter_ops *filter_registry_at(size_t i)
{
    return i < N_FILTERS ? filters[i] : NULL;
}
