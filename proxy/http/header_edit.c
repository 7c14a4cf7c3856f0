/* header_edit: header additions and removals from config (see header_edit.h). Used by the
 * router part of stream.c (route, virtual host and route configuration edits) and by HTTP
 * filters (header_mutation). */
#include "proxy/http/header_edit.h"

#include "proxy/config/config.h"
#include "proxy/http/headers.h"

void header_add_apply(struct headers *h, const struct header_add *a)
{
    switch (a->action) {
    case HA_ADD_IF_ABSENT:
        if (headers_get(h, a->name) == NULL) {
            headers_add(h, a->name, a->value);
        }
        break;
    case HA_OVERWRITE_IF_EXISTS_OR_ADD:
        headers_remove(h, a->name);
        headers_add(h, a->name, a->value);
        break;
    case HA_APPEND_IF_EXISTS_OR_ADD:
    default:
        headers_add(h, a->name, a->value);
        break;
    }
}

void header_edits_apply(struct headers *h, const struct header_edits *e)
{
    for (uint32_t i = 0; i < e->n_remove; i++) {
        headers_remove(h, e->remove[i]);
    }
    for (uint32_t i = 0; i < e->n_add; i++) {
        header_add_apply(h, &e->add[i]);
    }
}
