/* header_mutation: envoy.filters.http.header_mutation
 * (envoy.extensions.filters.http.header_mutation.v3.HeaderMutation). Applies
 * mutations.request_mutations to the request head (before the router and its route-level
 * header edits, as in Envoy) and mutations.response_mutations to every response head, local
 * replies included, each list in order. A mutation is `remove: name` or `append:
 * HeaderValueOption` (with its append_action); the additions go through the router's own
 * validation and apply code (header_edit.h). No per-stream state, no stats. Not supported:
 * remove_on_match and regex_copy (unknown fields), parameter_mutations (unknown field), and
 * typed_per_filter_config (HeaderMutationPerRoute). */
#include <ctype.h>
#include <string.h>

#include "envoy/extensions/filters/http/header_mutation/v3/header_mutation.pb-c.h"
#include "filters/registry.h"
#include "proxy/config/config.h"
#include "proxy/http/filter.h"
#include "proxy/http/header_edit.h"
#include "proxy/http/headers.h"

#define PbHeaderMutationCfg Envoy__Extensions__Filters__Http__HeaderMutation__V3__HeaderMutation
#define PbMutation Envoy__Config__Common__MutationRules__V3__HeaderMutation

struct hm_op {
    bool is_remove;
    struct str name;       /* is_remove: lower case */
    struct header_add add; /* !is_remove */
};

struct hm_cfg {
    const struct hm_op *req;
    uint32_t n_req;
    const struct hm_op *resp;
    uint32_t n_resp;
};

static void apply(struct headers *h, const struct hm_op *ops, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ops[i].is_remove) {
            headers_remove(h, ops[i].name);
        } else {
            header_add_apply(h, &ops[i].add);
        }
    }
}

static enum filter_status hm_request_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct hm_cfg *c = f->cfg;
    apply(h, c->req, c->n_req);
    return FILTER_CONTINUE;
}

static enum filter_status hm_response_headers(struct filter *f, struct headers *h, bool end)
{
    (void)end;
    const struct hm_cfg *c = f->cfg;
    apply(h, c->resp, c->n_resp);
    return FILTER_CONTINUE;
}

/* RFC 9110 token: what a header name may hold. */
static bool valid_name(const char *s)
{
    if (*s == '\0') {
        return false;
    }
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (!isalnum(c) && strchr("!#$%&'*+-.^_`|~", c) == NULL) {
            return false;
        }
    }
    return true;
}

static int mutations(struct filter_build *fb, const char *field, PbMutation *const *v, size_t n,
                     const struct hm_op **out, uint32_t *n_out)
{
    struct hm_op *ops = ARENA_NEW_N(fb->a, struct hm_op, n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        const PbMutation *m = v[i];
        size_t mark = filter_build_at(fb, ".%s[%zu]", field, i);
        int rc = 0;
        switch (m->action_case) {
        case ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_REMOVE: {
            ops[i].is_remove = true;
            struct str low = arena_strdup(fb->a, str_from_c(m->remove));
            for (size_t k = 0; k < low.len; k++) {
                ((char *)low.p)[k] = (char)tolower((unsigned char)low.p[k]);
            }
            ops[i].name = low;
            if (!valid_name(m->remove)) {
                rc = filter_build_fail(fb, "remove", "invalid header name '%s'", m->remove);
            } else if (strcmp(low.p, "host") == 0) {
                rc = filter_build_fail(fb, "remove", "'host' may not be removed");
            }
            break;
        }
        case ENVOY__CONFIG__COMMON__MUTATION_RULES__V3__HEADER_MUTATION__ACTION_APPEND: {
            size_t m2 = filter_build_at(fb, ".append");
            rc = filter_build_header_add(fb, m->append, &ops[i].add);
            filter_build_up(fb, m2);
            break;
        }
        default:
            rc = filter_build_fail(fb, NULL, "one of remove, append is required");
            break;
        }
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = ops;
    *n_out = (uint32_t)n;
    return 0;
}

static int hm_config_new(struct filter_build *fb, const ProtobufCMessage *pb, const void **out)
{
    const PbHeaderMutationCfg *m = (const PbHeaderMutationCfg *)pb;
    struct hm_cfg *c = ARENA_NEW(fb->a, struct hm_cfg);
    /* most_specific_header_mutations_wins orders per-route mutations, which remora does not
     * take: accepted, it changes nothing here. */
    if (m->mutations != NULL) {
        size_t mark = filter_build_at(fb, ".mutations");
        int rc = mutations(fb, "request_mutations", m->mutations->request_mutations,
                           m->mutations->n_request_mutations, &c->req, &c->n_req);
        if (rc == 0) {
            rc = mutations(fb, "response_mutations", m->mutations->response_mutations,
                           m->mutations->n_response_mutations, &c->resp, &c->n_resp);
        }
        filter_build_up(fb, mark);
        if (rc != 0) {
            return rc;
        }
    }
    *out = c;
    return 0;
}

const struct filter_ops header_mutation_filter_ops = {
    .name = "envoy.filters.http.header_mutation",
    .config_type =
        &envoy__extensions__filters__http__header_mutation__v3__header_mutation__descriptor,
    .config_new = hm_config_new,
    .on_request_headers = hm_request_headers,
    .on_response_headers = hm_response_headers,
};
