/* build_stats: stats sinks and stats tags from the bootstrap (see build_stats.h). */
#include "proxy/config/build_stats.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "envoy/config/bootstrap/v3/bootstrap.pb-c.h"
#include "envoy/config/metrics/v3/stats.pb-c.h"
#include "proxy/config/config.h"
#include "proxy/config/duration.h"
#include "proxy/config/pbjson.h"
#include "proxy/config/pbtypes.h"
#include "proxy/stats/tags.h"

#define DEFAULT_FLUSH_MS 5000
#define MAX_FLUSH_MS 300000 /* Envoy: lt 300 s */

static struct str dup_cstr(struct arena *a, const char *s)
{
    return arena_strdup(a, (struct str){s, strlen(s)});
}

/* An IP literal and port into `out` (its text as "ip:port" / "[ip]:port"). */
static bool ip_port(struct arena *a, const char *ip, uint32_t port, struct sock_addr *out)
{
    memset(out, 0, sizeof(*out));
    char text[INET6_ADDRSTRLEN + 16];
    struct sockaddr_in *v4 = (struct sockaddr_in *)&out->ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&out->ss;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        out->len = sizeof(*v4);
        snprintf(text, sizeof(text), "%s:%u", ip, port);
    } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        out->len = sizeof(*v6);
        snprintf(text, sizeof(text), "[%s]:%u", ip, port);
    } else {
        return false;
    }
    out->text = dup_cstr(a, text);
    return true;
}

static int sink_address(struct config *c, const char *path,
                        const Envoy__Config__Core__V3__Address *addr, struct stats_sink_cfg *out,
                        struct err *err)
{
    if (addr == NULL) {
        return err_set(err, NULL, "%s.address: required", path);
    }
    if (addr->address_case == ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_PIPE) {
        const char *p = addr->pipe->path;
        if (p == NULL || p[0] == '\0') {
            return err_set(err, NULL, "%s.address.pipe.path: required", path);
        }
        if (strlen(p) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            return err_set(err, NULL, "%s.address.pipe.path: longer than a socket path can be",
                           path);
        }
        if (p[0] == '@') {
            return err_set(err, NULL,
                           "%s.address.pipe.path: abstract sockets are not supported by remora",
                           path);
        }
        if (addr->pipe->mode != 0) {
            return err_set(err, NULL, "%s.address.pipe.mode: not supported by remora", path);
        }
        out->is_pipe = true;
        out->pipe_path = dup_cstr(&c->arena, p);
        return 0;
    }
    if (addr->address_case != ENVOY__CONFIG__CORE__V3__ADDRESS__ADDRESS_SOCKET_ADDRESS) {
        return err_set(err, NULL, "%s.address.socket_address: required", path);
    }
    const Envoy__Config__Core__V3__SocketAddress *sa = addr->socket_address;
    if (sa->resolver_name != NULL && sa->resolver_name[0] != '\0') {
        return err_set(err, NULL,
                       "%s.address.socket_address.resolver_name: not supported by remora", path);
    }
    if (sa->ipv4_compat) {
        return err_set(err, NULL, "%s.address.socket_address.ipv4_compat: not supported by remora",
                       path);
    }
    if (sa->port_specifier_case !=
        ENVOY__CONFIG__CORE__V3__SOCKET_ADDRESS__PORT_SPECIFIER_PORT_VALUE) {
        return err_set(err, NULL, "%s.address.socket_address.port_value: required", path);
    }
    if (sa->port_value == 0 || sa->port_value > 65535) {
        return err_set(err, NULL,
                       "%s.address.socket_address.port_value: %u is not a port (1-65535)", path,
                       sa->port_value);
    }
    /* protocol: the sink sends UDP whatever it says (Envoy's statsd sinks do too) */
    if (sa->address == NULL || !ip_port(&c->arena, sa->address, sa->port_value, &out->addr)) {
        return err_set(err, NULL, "%s.address.socket_address.address: '%s' is not an IP address",
                       path, sa->address != NULL ? sa->address : "");
    }
    return 0;
}

static int sink(struct config *c, const char *path, const Envoy__Config__Metrics__V3__StatsSink *ps,
                struct stats_sink_cfg *out, struct err *err)
{
    char tpath[128];
    snprintf(tpath, sizeof(tpath), "%s.typed_config", path);
    if (ps->config_type_case != ENVOY__CONFIG__METRICS__V3__STATS_SINK__CONFIG_TYPE_TYPED_CONFIG) {
        return err_set(err, NULL, "%s: required", tpath);
    }
    const Google__Protobuf__Any *any = ps->typed_config;
    bool statsd = pbjson_any_is(any, &envoy__config__metrics__v3__statsd_sink__descriptor);
    bool dog = pbjson_any_is(any, &envoy__config__metrics__v3__dog_statsd_sink__descriptor);
    if (!statsd && !dog) {
        return err_set(err, NULL,
                       "%s: type '%s' is not supported by remora (envoy.stat_sinks.statsd and "
                       "envoy.stat_sinks.dog_statsd are)",
                       tpath, any->type_url != NULL ? any->type_url : "");
    }
    ProtobufCMessage *m = NULL;
    int rc = pbjson_any_unpack(any, pbtypes_find, tpath, &m, err);
    if (rc != 0) {
        return rc;
    }
    const char *prefix = NULL;
    if (statsd) {
        const Envoy__Config__Metrics__V3__StatsdSink *s = (const void *)m;
        out->kind = STATS_SINK_STATSD;
        prefix = s->prefix;
        if (s->statsd_specifier_case ==
            ENVOY__CONFIG__METRICS__V3__STATSD_SINK__STATSD_SPECIFIER_TCP_CLUSTER_NAME) {
            rc = err_set(err, NULL,
                         "%s.tcp_cluster_name: not supported by remora (statsd over TCP); use "
                         "address (UDP)",
                         tpath);
        } else {
            rc = sink_address(
                c, tpath,
                s->statsd_specifier_case ==
                        ENVOY__CONFIG__METRICS__V3__STATSD_SINK__STATSD_SPECIFIER_ADDRESS
                    ? s->address
                    : NULL,
                out, err);
        }
    } else {
        const Envoy__Config__Metrics__V3__DogStatsdSink *d = (const void *)m;
        out->kind = STATS_SINK_DOG_STATSD;
        prefix = d->prefix;
        rc = sink_address(c, tpath, d->address, out, err);
        if (rc == 0 && d->max_bytes_per_datagram != NULL) {
            uint64_t v = d->max_bytes_per_datagram->value;
            if (v == 0 || v > 65507) {
                rc = err_set(err, NULL,
                             "%s.max_bytes_per_datagram: %llu is not a datagram size (1-65507)",
                             tpath, (unsigned long long)v);
            }
            out->max_bytes_per_datagram = v;
        }
    }
    out->prefix = dup_cstr(&c->arena, prefix != NULL && prefix[0] != '\0' ? prefix : "envoy");
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int build_stats_config(struct config *c, const struct Envoy__Config__Bootstrap__V3__Bootstrap *pb,
                       struct err *err)
{
    c->stats_flush_interval_ms = DEFAULT_FLUSH_MS;
    c->use_all_default_tags = true;
    if (pb->stats_flush_interval != NULL) {
        uint64_t ms = 0;
        const char *why = duration_ms(pb->stats_flush_interval, true, &ms);
        if (why == NULL && ms >= MAX_FLUSH_MS) {
            why = "must be less than 300s";
        }
        if (why != NULL) {
            return err_set(err, NULL, "stats_flush_interval: %s", why);
        }
        c->stats_flush_interval_ms = ms;
    }
    if (pb->n_stats_sinks > 0) {
        struct stats_sink_cfg *sinks =
            ARENA_NEW_N(&c->arena, struct stats_sink_cfg, pb->n_stats_sinks);
        for (size_t i = 0; i < pb->n_stats_sinks; i++) {
            char path[64];
            snprintf(path, sizeof(path), "stats_sinks[%zu]", i);
            int rc = sink(c, path, pb->stats_sinks[i], &sinks[i], err);
            if (rc != 0) {
                return rc;
            }
        }
        c->stats_sinks = sinks;
        c->n_stats_sinks = (uint32_t)pb->n_stats_sinks;
    }
    const Envoy__Config__Metrics__V3__StatsConfig *sc = pb->stats_config;
    if (sc == NULL) {
        return 0;
    }
    if (sc->use_all_default_tags != NULL) {
        c->use_all_default_tags = sc->use_all_default_tags->value;
    }
    if (sc->n_stats_tags > 0) {
        struct stats_tag_cfg *tags = ARENA_NEW_N(&c->arena, struct stats_tag_cfg, sc->n_stats_tags);
        for (size_t i = 0; i < sc->n_stats_tags; i++) {
            const Envoy__Config__Metrics__V3__TagSpecifier *t = sc->stats_tags[i];
            tags[i].name = dup_cstr(&c->arena, t->tag_name != NULL ? t->tag_name : "");
            if (t->tag_value_case ==
                ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_FIXED_VALUE) {
                tags[i].is_fixed = true;
                tags[i].fixed_value = dup_cstr(&c->arena, t->fixed_value);
            } else if (t->tag_value_case ==
                       ENVOY__CONFIG__METRICS__V3__TAG_SPECIFIER__TAG_VALUE_REGEX) {
                tags[i].regex = dup_cstr(&c->arena, t->regex);
            }
        }
        c->stats_tags = tags;
        c->n_stats_tags = (uint32_t)sc->n_stats_tags;
    }
    /* Compiled here to report a bad one with its path; the sinks compile their own. */
    struct tag_producer *tp =
        tag_producer_new(c->stats_tags, c->n_stats_tags, c->use_all_default_tags, err);
    if (tp == NULL) {
        return -EINVAL;
    }
    tag_producer_free(tp);
    return 0;
}
