/* registry: the HTTP filters compiled into remora, as one explicit const table in registry.c
 * (nginx's ngx_modules[] style: no constructors, no linker sections). A new filter adds its ops
 * here and in registry.c (filters/README.md). The router is not in the table: it is built into
 * proxy/http/stream.c and build.c checks that it ends every chain. No state; thread: any. */
#pragma once

#include <stddef.h>

struct filter_ops;

extern const struct filter_ops fault_filter_ops;
extern const struct filter_ops local_ratelimit_filter_ops;
extern const struct filter_ops header_mutation_filter_ops;
extern const struct filter_ops grpc_stats_filter_ops;
extern const struct filter_ops rbac_filter_ops;
extern const struct filter_ops buffer_filter_ops;
extern const struct filter_ops health_check_filter_ops;
extern const struct filter_ops cors_filter_ops;

/* Finds a filter by its typed_config message type (full name, `type_len` bytes, as in an Any's
 * type URL after the last '/') or, when `type_len` is 0, by its HttpFilter `name` (Envoy's
 * lookup order). Returns NULL when remora has no such filter. */
const struct filter_ops *filter_registry_find(const char *type_name, size_t type_len,
                                              const char *name);

/* The number of registered filters and the i-th one (0 <= i < count), for tests and docs. */
size_t filter_registry_count(void);
const struct filter_ops *filter_registry_at(size_t i);
