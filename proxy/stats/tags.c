/* tags: tag extraction (see tags.h). */
#include "proxy/stats/tags.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proxy/config/config.h"
#include "proxy/core/xmalloc.h"

/* Written for PCRE2 after Envoy's well_known_names.cc (same tag names, same effect on remora's
 * names). The first group is removed, the second is the value. */
static const struct {
    const char *name;
    const char *regex;
} defaults[] = {
    /* cluster.<name>.* (a name with dots is cut at its first dot, as in Envoy) */
    {"envoy.cluster_name", "^cluster\\.((.*?)\\.)"},
    /* http.<stat_prefix>.* */
    {"envoy.http_conn_manager_prefix", "^http\\.((.*?)\\.)"},
    /* listener.<address>_<port>.* (IPv4 digits and dots, or IPv6 in brackets) */
    {"envoy.listener_address",
     "^listener\\.(((?:[_.[:digit:]]*|[_\\[\\]aAbBcCdDeEfF[:digit:]]*))\\.)"},
    /* *_rq_<code> */
    {"envoy.response_code", "_rq(_(\\d{3}))$"},
    /* *_rq_<class>xx: the digit removed (Envoy's upstream_rq_xx) */
    {"envoy.response_code_class", "_rq_(\\d)xx$"},
    /* http.<stat_prefix>.rds.<route_config>.<stat> */
    {"envoy.rds_route_config", "^http\\.[^.]*\\.rds\\.((.*?)\\.)\\w+$"},
    /* tcp.<stat_prefix>.<stat> */
    {"envoy.tcp_prefix", "^tcp\\.((.*?)\\.)\\w+$"},
    /* listener.<address>.ssl.cipher.<cipher> */
    {"envoy.ssl_cipher", "^listener\\..*?\\.ssl\\.cipher(\\.(.*?))$"},
    /* cluster.<name>.ssl.ciphers.<cipher> */
    {"envoy.ssl_cipher_suite", "^cluster\\..*?\\.ssl\\.ciphers(\\.(.*?))$"},
};
#define N_DEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

struct extractor {
    char *name;
    pcre2_code *re;
    pcre2_match_data *md;
};

/* A bound on one match's backtracking, so a configured regex that backtracks badly costs a
 * flush a little time, not the main loop (the match fails: no tag). */
#define MATCH_LIMIT 100000

struct tag_producer {
    pcre2_match_context *mc;
    struct stat_tag *fixed; /* [n_fixed] */
    uint32_t n_fixed;
    struct extractor *ex; /* [n_ex] */
    uint32_t n_ex;
};

static char *dup_n(const char *p, size_t n)
{
    char *s = xmalloc(n + 1);
    if (n > 0) {
        memcpy(s, p, n);
    }
    s[n] = '\0';
    return s;
}

const char *tags_default_regex(const char *name)
{
    for (size_t i = 0; i < N_DEFAULTS; i++) {
        if (strcmp(defaults[i].name, name) == 0) {
            return defaults[i].regex;
        }
    }
    return NULL;
}

static int add_extractor(struct tag_producer *tp, const char *name, const char *regex, uint32_t i,
                         struct err *err)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)regex, PCRE2_ZERO_TERMINATED, 0, &ec, &eo, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof(msg));
        err_set(err, NULL, "stats_config.stats_tags[%u].regex: invalid regex at offset %zu: %s", i,
                (size_t)eo, (const char *)msg);
        return -1;
    }
    uint32_t groups = 0;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &groups);
    if (groups == 0) {
        pcre2_code_free(re);
        err_set(err, NULL,
                "stats_config.stats_tags[%u].regex: needs a capture group (the part removed "
                "from the name)",
                i);
        return -1;
    }
    struct extractor *e = &tp->ex[tp->n_ex++];
    e->name = xstrdup(name);
    e->re = re;
    e->md = pcre2_match_data_create_from_pattern(re, NULL);
    return 0;
}

static bool name_taken(const struct tag_producer *tp, const char *name)
{
    for (uint32_t i = 0; i < tp->n_fixed; i++) {
        if (strcmp(tp->fixed[i].name, name) == 0) {
            return true;
        }
    }
    for (uint32_t i = 0; i < tp->n_ex; i++) {
        if (strcmp(tp->ex[i].name, name) == 0) {
            return true;
        }
    }
    return false;
}

struct tag_producer *tag_producer_new(const struct stats_tag_cfg *tags, uint32_t n,
                                      bool use_defaults, struct err *err)
{
    struct tag_producer *tp = xcalloc(1, sizeof(*tp));
    tp->mc = pcre2_match_context_create(NULL);
    pcre2_set_match_limit(tp->mc, MATCH_LIMIT);
    tp->fixed = xcalloc(n ? n : 1, sizeof(*tp->fixed));
    tp->ex = xcalloc(n + N_DEFAULTS, sizeof(*tp->ex));
    for (uint32_t i = 0; i < n; i++) {
        const struct stats_tag_cfg *t = &tags[i];
        char name[256];
        snprintf(name, sizeof(name), "%.*s", STR_FMT(t->name));
        if (t->name.len == 0) {
            err_set(err, NULL, "stats_config.stats_tags[%u].tag_name: required", i);
            goto fail;
        }
        if (name_taken(tp, name)) {
            err_set(err, NULL, "stats_config.stats_tags[%u].tag_name: '%s' specified twice", i,
                    name);
            goto fail;
        }
        if (t->is_fixed) {
            struct stat_tag *f = &tp->fixed[tp->n_fixed++];
            f->name = xstrdup(name);
            f->value = dup_n(t->fixed_value.p, t->fixed_value.len);
            continue;
        }
        const char *re = NULL;
        char *owned = NULL;
        if (t->regex.len > 0) {
            owned = dup_n(t->regex.p, t->regex.len);
            re = owned;
        } else {
            re = tags_default_regex(name);
        }
        if (re == NULL) {
            err_set(err, NULL,
                    "stats_config.stats_tags[%u]: '%s' needs a regex or a fixed_value (it is "
                    "not one of the default tags)",
                    i, name);
            goto fail;
        }
        int rc = add_extractor(tp, name, re, i, err);
        free(owned);
        if (rc != 0) {
            goto fail;
        }
    }
    for (size_t i = 0; use_defaults && i < N_DEFAULTS; i++) {
        if (!name_taken(tp, defaults[i].name) &&
            add_extractor(tp, defaults[i].name, defaults[i].regex, 0, err) != 0) {
            goto fail; /* cannot happen: the defaults compile */
        }
    }
    return tp;
fail:
    tag_producer_free(tp);
    return NULL;
}

void tag_producer_free(struct tag_producer *tp)
{
    if (tp == NULL) {
        return;
    }
    for (uint32_t i = 0; i < tp->n_fixed; i++) {
        free(tp->fixed[i].name);
        free(tp->fixed[i].value);
    }
    for (uint32_t i = 0; i < tp->n_ex; i++) {
        free(tp->ex[i].name);
        pcre2_match_data_free(tp->ex[i].md);
        pcre2_code_free(tp->ex[i].re);
    }
    pcre2_match_context_free(tp->mc);
    free(tp->fixed);
    free(tp->ex);
    free(tp);
}

void tags_produce(const struct tag_producer *tp, const char *name, struct stat_tags *out)
{
    size_t len = strlen(name);
    out->n = 0;
    out->v = xcalloc(tp->n_fixed + tp->n_ex + 1, sizeof(*out->v));
    for (uint32_t i = 0; i < tp->n_fixed; i++) {
        out->v[out->n].name = xstrdup(tp->fixed[i].name);
        out->v[out->n].value = xstrdup(tp->fixed[i].value);
        out->n++;
    }
    /* the characters of `name` removed by some extractor */
    bool *removed = xcalloc(len + 1, sizeof(bool));
    for (uint32_t i = 0; i < tp->n_ex; i++) {
        const struct extractor *e = &tp->ex[i];
        int rc = pcre2_match(e->re, (PCRE2_SPTR)name, len, 0, 0, e->md, tp->mc);
        if (rc < 2) {
            continue; /* no match, or group 1 did not take part */
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        int vg = rc >= 3 && ov[4] != PCRE2_UNSET ? 2 : 1;
        if (ov[2] == PCRE2_UNSET) {
            continue;
        }
        for (PCRE2_SIZE k = ov[2]; k < ov[3]; k++) {
            removed[k] = true;
        }
        out->v[out->n].name = xstrdup(e->name);
        out->v[out->n].value = dup_n(name + ov[2 * vg], ov[2 * vg + 1] - ov[2 * vg]);
        out->n++;
    }
    out->name = xmalloc(len + 1);
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        if (!removed[i]) {
            out->name[k++] = name[i];
        }
    }
    out->name[k] = '\0';
    free(removed);
}

void stat_tags_free(struct stat_tags *t)
{
    for (uint32_t i = 0; i < t->n; i++) {
        free(t->v[i].name);
        free(t->v[i].value);
    }
    free(t->v);
    free(t->name);
    t->v = NULL;
    t->name = NULL;
    t->n = 0;
}
