/* ads: the ADS (SotW) gRPC server of remora-xds (ads.h).
 *
 * A connection is an nghttp2 server session fed from the socket (nghttp2_session_mem_recv)
 * and drained into it (nghttp2_session_mem_send, whose bytes stay valid until the next call,
 * so a partial write keeps its pointer). A stream is accepted at the end of its request
 * HEADERS: a bad content-type is answered 415, another path grpc-status 12, the ADS method
 * :status 200 at once and then DiscoveryResponses as they are due, through a data provider
 * over the stream's queue (deferred while the queue is empty). Errors end the stream with
 * trailers (grpc-status, grpc-message).
 *
 * With TLS (ads_tls.h), a connection first runs the server handshake (proxy/net/tls.c's
 * tls_conn, bounded by `handshake_timeout_ms` on the idle timer); the HTTP/2 session starts
 * when it is done, and every byte then goes through the session. A failed handshake is counted
 * and logged (rate-limited) and closes that connection only.
 *
 * Keepalive PINGs and the max connection age are per connection (ads.h); both start once the
 * HTTP/2 session does (after the TLS handshake). */
#include "xds/server/ads.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "envoy/service/discovery/v3/discovery.pb-c.h"
#include "proxy/core/log.h"
#include "proxy/core/rand.h"
#include "proxy/core/xmalloc.h"
#include "proxy/http/grpc_msg.h"
#include "proxy/http/h2_keepalive.h"
#include "proxy/net/sockio.h"
#include "proxy/net/tls.h"
#include "xds/server/meshes.h"
#include "xds/server/sotw.h"

#define ADS_PATH "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
#define READ_CHUNK 16384

typedef Envoy__Service__Discovery__V3__DiscoveryRequest DiscoveryRequest;
typedef Envoy__Service__Discovery__V3__DiscoveryResponse DiscoveryResponse;

struct astream {
    struct aconn *c;
    int32_t id;
    char path[128];
    bool path_long, ct_ok, method_post;
    bool accepted; /* the ADS method: :status 200 sent */
    bool closing;  /* trailers are due once the queue is written */
    int status;
    char message[512]; /* grpc-message, percent-encoded */
    struct grpc_msg_reader rd;
    size_t held; /* bytes the reader holds for a partial message (counted in ads.held) */
    uint8_t *q;  /* queued response bytes */
    size_t q_len, q_off, q_cap;
    struct sotw sotw;
    char *mesh_hint; /* from the node: NULL means "the only mesh" */
    char *vnode;     /* a sidecar's virtual node or a virtual gateway (flavour B, `kind`) */
    enum tr_proxy kind;
    bool have_node;
    struct astream *prev, *next;
};

struct aconn {
    struct ads *a;
    int fd;
    struct tls_conn *tls; /* owned; NULL on a plaintext port */
    char peer[INET6_ADDRSTRLEN + 8];
    /* With node authorization: the client certificate's SPIFFE ID (owned), or NULL with why
     * (static) once the handshake is done. */
    char *spiffe_id;
    const char *spiffe_problem;
    ev_io io;
    ev_timer idle; /* the handshake's timeout until it is done, then the idle timeout */
    ev_timer age;  /* max connection age, then its grace */
    struct h2_keepalive ka;
    bool aged; /* GOAWAY sent for the max connection age */
    nghttp2_session *sess;
    const uint8_t *pend; /* bytes from mem_send not yet written */
    size_t pend_len;
    struct astream *streams;
    size_t n_streams;
    bool dead;
    struct aconn *prev, *next;
};

struct ads {
    struct ev_loop *loop;
    int lfd;
    ev_io accept_io;
    struct ads_limits lim;
    struct meshes *m;
    const struct tls_ctx *tls; /* borrowed; NULL: h2c */
    char *authz_td;            /* owned; node authorization on (ads_authorize_nodes), else NULL */
    uint64_t n_denied;
    struct ads_tls_stats tls_stats;
    ev_tstamp tls_fail_logged;      /* when a failed handshake was last logged at warning level */
    struct h2_keepalive_cfg ka_cfg; /* from lim: keepalive_time_ms, keepalive_timeout_ms */
    uint64_t n_keepalive_timeouts;  /* connections closed for an unanswered PING */
    uint64_t n_aged;                /* connections sent away for their age */
    uint64_t rng;                   /* the age's jitter */
    struct aconn *conns;
    size_t n_conns;
    size_t held;   /* partial request messages, all streams */
    size_t queued; /* response bytes not yet taken by nghttp2, all streams */
};

static void conn_close(struct aconn *c);
static void conn_flush(struct aconn *c);

/* ---- streams ------------------------------------------------------------------------------- */

static void stream_free(struct astream *s)
{
    struct aconn *c = s->c;
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        c->streams = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    c->n_streams--;
    c->a->held -= s->held;
    c->a->queued -= s->q_len - s->q_off;
    grpc_msg_reader_reset(&s->rd);
    sotw_free(&s->sotw);
    free(s->mesh_hint);
    free(s->vnode);
    free(s->q);
    free(s);
    if (c->n_streams == 0) {
        ev_timer_again(c->a->loop, &c->idle);
    }
}

static ssize_t data_read_cb(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *user)
{
    (void)user;
    struct astream *s = src->ptr;
    size_t avail = s->q_len - s->q_off;
    if (avail == 0) {
        if (!s->closing) {
            return NGHTTP2_ERR_DEFERRED;
        }
        char st[12];
        snprintf(st, sizeof(st), "%d", s->status);
        nghttp2_nv tr[2] = {
            {(uint8_t *)"grpc-status", (uint8_t *)st, 11, strlen(st), NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"grpc-message", (uint8_t *)s->message, 12, strlen(s->message),
             NGHTTP2_NV_FLAG_NONE},
        };
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(sess, id, tr, s->message[0] ? 2 : 1) != 0) {
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return 0;
    }
    size_t n = avail < length ? avail : length;
    memcpy(buf, s->q + s->q_off, n);
    s->q_off += n;
    s->c->a->queued -= n;
    if (s->q_off == s->q_len) {
        s->q_off = s->q_len = 0;
    }
    return (ssize_t)n;
}

/* Percent-encodes what grpc-message may not carry as it is (PROTOCOL-HTTP2.md). */
static void set_message(struct astream *s, const char *msg)
{
    size_t w = 0;
    for (const unsigned char *p = (const unsigned char *)msg; *p && w + 4 < sizeof(s->message);
         p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            s->message[w++] = (char)*p;
        } else {
            w += (size_t)snprintf(s->message + w, 4, "%%%02X", *p);
        }
    }
    s->message[w] = '\0';
}

/* Ends the stream with a gRPC status (after what is queued, if the response has begun). */
static void stream_fail(struct astream *s, int status, const char *msg)
{
    if (s->closing) {
        return;
    }
    s->closing = true;
    s->status = status;
    set_message(s, msg);
    if (status != 0) {
        LOG_D("xds: stream %d: grpc-status %d: %s", s->id, status, msg);
    }
    if (s->accepted) {
        nghttp2_session_resume_data(s->c->sess, s->id);
        return;
    }
    char st[12];
    snprintf(st, sizeof(st), "%d", status);
    nghttp2_nv nv[4] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-status", (uint8_t *)st, 11, strlen(st), NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)s->message, 12, strlen(s->message),
         NGHTTP2_NV_FLAG_NONE},
    };
    /* Trailers-Only. */
    nghttp2_submit_response(s->c->sess, s->id, nv, s->message[0] ? 4 : 3, NULL);
}

static void queue_msg(struct astream *s, const ProtobufCMessage *m)
{
    struct ads *a = s->c->a;
    size_t len = protobuf_c_message_get_packed_size(m);
    size_t add = GRPC_MSG_PREFIX + len;
    if (s->q_len - s->q_off + add > a->lim.max_queued ||
        a->queued + add > a->lim.max_queued_total) {
        LOG_W("xds: stream %d: the peer does not read (%zu bytes queued, %zu in all): reset", s->id,
              s->q_len - s->q_off, a->queued);
        nghttp2_submit_rst_stream(s->c->sess, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_ENHANCE_YOUR_CALM);
        s->closing = true;
        return;
    }
    if (s->q_off > 0) {
        memmove(s->q, s->q + s->q_off, s->q_len - s->q_off);
        s->q_len -= s->q_off;
        s->q_off = 0;
    }
    size_t need = s->q_len + add;
    a->queued += add;
    if (need > s->q_cap) {
        s->q_cap = need > 2 * s->q_cap ? need : 2 * s->q_cap;
        s->q = xrealloc(s->q, s->q_cap);
    }
    grpc_msg_prefix(s->q + s->q_len, (uint32_t)len);
    protobuf_c_message_pack(m, s->q + s->q_len + GRPC_MSG_PREFIX);
    s->q_len = need;
    nghttp2_session_resume_data(s->c->sess, s->id);
}

static void send_resp(struct astream *s, enum xds_type t, struct sotw_resp *r)
{
    sotw_commit(&s->sotw, t, r);
    DiscoveryResponse resp = ENVOY__SERVICE__DISCOVERY__V3__DISCOVERY_RESPONSE__INIT;
    Google__Protobuf__Any *anys = xcalloc(r->n ? r->n : 1, sizeof(*anys));
    Google__Protobuf__Any **ap = xcalloc(r->n ? r->n : 1, sizeof(*ap));
    for (size_t i = 0; i < r->n; i++) {
        google__protobuf__any__init(&anys[i]);
        anys[i].type_url = (char *)xds_type_url[t];
        anys[i].value.data = r->res[i]->data;
        anys[i].value.len = r->res[i]->len;
        ap[i] = &anys[i];
    }
    resp.version_info = r->version;
    resp.resources = ap;
    resp.n_resources = r->n;
    resp.type_url = (char *)xds_type_url[t];
    resp.nonce = r->nonce;
    queue_msg(s, &resp.base);
    LOG_D("xds: stream %d: %s version %s nonce %s, %zu resource(s)", s->id, xds_type_url[t],
          r->version, r->nonce, r->n);
    free(anys);
    free(ap);
}

static const struct xds_snapshot *stream_snapshot(struct astream *s)
{
    if (s->vnode != NULL) {
        return meshes_get_proxy(s->c->a->m, s->mesh_hint, s->kind, s->vnode);
    }
    return meshes_get(s->c->a->m, s->mesh_hint);
}

/* Pushes every type whose content changed, CDS first unless it removes clusters (then last),
 * and EDS again after a CDS change. */
static void stream_push(struct astream *s)
{
    if (!s->accepted || s->closing) {
        return;
    }
    const struct xds_snapshot *snap = stream_snapshot(s);
    struct sotw_resp r[XDS_NTYPES];
    bool due[XDS_NTYPES];
    for (int t = 0; t < XDS_NTYPES; t++) {
        due[t] = sotw_prepare(&s->sotw, (enum xds_type)t, snap, false, &r[t]);
    }
    bool cds_last = due[XDS_CDS] && r[XDS_CDS].removes;
    for (int t = 0; t < XDS_NTYPES; t++) {
        if (due[t] && !(t == XDS_CDS && cds_last)) {
            send_resp(s, (enum xds_type)t, &r[t]);
            sotw_resp_clear(&r[t]);
        }
    }
    if (cds_last) {
        send_resp(s, XDS_CDS, &r[XDS_CDS]);
        sotw_resp_clear(&r[XDS_CDS]);
    }
    /* A CDS change is followed by the assignments, changed or not: a cluster the proxy adds or
     * modifies warms until its assignment comes, and its re-subscription names no new resource
     * (Envoy's SotW clients need the server to send EDS again after CDS). */
    struct sotw_resp e;
    if (due[XDS_CDS] && (!due[XDS_EDS] || cds_last) &&
        sotw_prepare(&s->sotw, XDS_EDS, snap, true, &e)) {
        send_resp(s, XDS_EDS, &e);
        sotw_resp_clear(&e);
    }
}

/* A node's mesh: metadata "mesh", else from an App Mesh node id, else NULL (the only mesh). */
static char *node_mesh(const Envoy__Config__Core__V3__Node *n)
{
    if (n->metadata != NULL) {
        for (size_t i = 0; i < n->metadata->n_fields; i++) {
            Google__Protobuf__Struct__FieldsEntry *f = n->metadata->fields[i];
            if (f->key != NULL && strcmp(f->key, "mesh") == 0 && f->value != NULL &&
                f->value->kind_case == GOOGLE__PROTOBUF__VALUE__KIND_STRING_VALUE) {
                return xstrdup(f->value->string_value);
            }
        }
    }
    const char *id = n->id ? n->id : "";
    const char *p = strstr(id, "mesh/");
    if (p != NULL && (p == id || p[-1] == ':')) {
        p += 5;
        const char *end = strchr(p, '/');
        if (end != NULL && end > p) {
            return xstrndup(p, (size_t)(end - p));
        }
    }
    return NULL;
}

/* Node authorization (ads_authorize_nodes): the stream's node must be what the client
 * certificate's SPIFFE ID names. A sidecar's or gateway's id must give exactly that ID
 * (spiffe://<td>/mesh/<m>/virtualNode/<vn> or .../virtualGateway/<g>); any other node (a
 * proxyless gRPC client) gets the mesh its certificate names and no other. Returns NULL when
 * allowed, else why (into `buf`). */
static const char *authorize(struct astream *s, const Envoy__Config__Core__V3__Node *node,
                             char *buf, size_t cap)
{
    struct aconn *c = s->c;
    const char *td = c->a->authz_td;
    if (node == NULL) {
        return "the stream's first DiscoveryRequest carries no node";
    }
    if (c->spiffe_id == NULL) {
        snprintf(buf, cap, "the client certificate %s",
                 c->spiffe_problem ? c->spiffe_problem : "is missing");
        return buf;
    }
    if (s->vnode != NULL) {
        char want[512];
        translate_proxy_spiffe_id(want, sizeof(want), td, s->mesh_hint, s->kind, s->vnode);
        if (strcmp(want, c->spiffe_id) == 0) {
            return NULL;
        }
        snprintf(buf, cap, "node %.160s: the client certificate is %.200s (want %.200s)",
                 node->id ? node->id : "", c->spiffe_id, want);
        return buf;
    }
    /* A proxyless client: spiffe://<td>/mesh/<m>/... gives its mesh. */
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "spiffe://%s/mesh/", td);
    size_t pl = strlen(prefix);
    const char *m = strncmp(c->spiffe_id, prefix, pl) == 0 ? c->spiffe_id + pl : NULL;
    const char *end = m != NULL ? strchr(m, '/') : NULL;
    if (end == NULL || end == m) {
        snprintf(buf, cap, "%.200s names no mesh of trust domain %.100s", c->spiffe_id, td);
        return buf;
    }
    size_t ml = (size_t)(end - m);
    if (s->mesh_hint == NULL) {
        s->mesh_hint = xstrndup(m, ml);
        return NULL;
    }
    if (strlen(s->mesh_hint) == ml && strncmp(s->mesh_hint, m, ml) == 0) {
        return NULL;
    }
    snprintf(buf, cap, "node %.160s: mesh %.100s, but the client certificate is %.200s",
             node->id ? node->id : "", s->mesh_hint, c->spiffe_id);
    return buf;
}

static int on_message(void *arg, const uint8_t *msg, size_t len)
{
    struct astream *s = arg;
    DiscoveryRequest *rq = envoy__service__discovery__v3__discovery_request__unpack(NULL, len, msg);
    if (rq == NULL) {
        stream_fail(s, 3, "DiscoveryRequest does not decode");
        return 1;
    }
    if (rq->n_resource_names > s->c->a->lim.max_names) {
        char m[96];
        snprintf(m, sizeof(m), "more than %zu resource_names", s->c->a->lim.max_names);
        envoy__service__discovery__v3__discovery_request__free_unpacked(rq, NULL);
        stream_fail(s, 3, m);
        return 1;
    }
    if (!s->have_node && s->c->a->authz_td != NULL && rq->node == NULL) {
        const char *why = "the stream's first DiscoveryRequest carries no node";
        envoy__service__discovery__v3__discovery_request__free_unpacked(rq, NULL);
        s->c->a->n_denied++;
        LOG_W("xds: stream %d from %s: PERMISSION_DENIED: %s", s->id, s->c->peer, why);
        stream_fail(s, 7, why);
        return 1;
    }
    if (!s->have_node && rq->node != NULL) {
        s->have_node = true;
        /* A node id naming a virtual node is that node's sidecar, one naming a virtual
         * gateway that gateway (flavour B); any other node is a proxyless gRPC client. */
        if (!translate_proxy_id(rq->node->id ? rq->node->id : "", &s->mesh_hint, &s->vnode,
                                &s->kind)) {
            s->mesh_hint = node_mesh(rq->node);
        }
        LOG_I("xds: stream %d: node %s (%s), mesh %s%s%s", s->id, rq->node->id ? rq->node->id : "",
              rq->node->user_agent_name ? rq->node->user_agent_name : "",
              s->mesh_hint ? s->mesh_hint : "(the only one)",
              s->vnode == NULL                ? ""
              : s->kind == TR_VIRTUAL_GATEWAY ? ", virtual gateway "
                                              : ", sidecar of ",
              s->vnode ? s->vnode : "");
        char buf[768];
        const char *why =
            s->c->a->authz_td != NULL ? authorize(s, rq->node, buf, sizeof(buf)) : NULL;
        if (why != NULL) {
            s->c->a->n_denied++;
            LOG_W("xds: stream %d from %s: PERMISSION_DENIED: %s", s->id, s->c->peer, why);
            stream_fail(s, 7, why);
            envoy__service__discovery__v3__discovery_request__free_unpacked(rq, NULL);
            return 1;
        }
    }
    int t = xds_type_from_url(rq->type_url ? rq->type_url : "");
    if (t < 0) {
        LOG_D("xds: stream %d: type %s is not served", s->id, rq->type_url ? rq->type_url : "");
        envoy__service__discovery__v3__discovery_request__free_unpacked(rq, NULL);
        return 0;
    }
    bool nack = rq->error_detail != NULL;
    enum sotw_verdict v = sotw_request(&s->sotw, (enum xds_type)t, rq->response_nonce,
                                       rq->resource_names, rq->n_resource_names, nack);
    if (nack) {
        LOG_W("xds: stream %d: NACK of %s nonce %s: %s", s->id, rq->type_url,
              rq->response_nonce ? rq->response_nonce : "",
              rq->error_detail->message ? rq->error_detail->message : "");
    }
    envoy__service__discovery__v3__discovery_request__free_unpacked(rq, NULL);
    if (v == SOTW_ANSWER) {
        struct sotw_resp r;
        if (sotw_prepare(&s->sotw, (enum xds_type)t, stream_snapshot(s), true, &r)) {
            send_resp(s, (enum xds_type)t, &r);
            sotw_resp_clear(&r);
        }
    }
    return s->closing ? 1 : 0;
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *user)
{
    struct aconn *c = user;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) {
        return 0;
    }
    if (c->n_streams >= c->a->lim.max_streams) {
        nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, f->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    struct astream *s = xcalloc(1, sizeof(*s));
    s->c = c;
    s->id = f->hd.stream_id;
    grpc_msg_reader_init(&s->rd, c->a->lim.max_msg);
    s->next = c->streams;
    if (c->streams) {
        c->streams->prev = s;
    }
    c->streams = s;
    c->n_streams++;
    ev_timer_stop(c->a->loop, &c->idle);
    nghttp2_session_set_stream_user_data(sess, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user)
{
    (void)flags;
    (void)user;
    struct astream *s = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (s == NULL || f->hd.type != NGHTTP2_HEADERS) {
        return 0;
    }
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        if (valuelen >= sizeof(s->path)) {
            s->path_long = true;
        } else {
            memcpy(s->path, value, valuelen);
            s->path[valuelen] = '\0';
        }
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        s->method_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        s->ct_ok = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                   (valuelen == 16 || value[16] == '+' || value[16] == ';');
    }
    return 0;
}

static void accept_stream(struct astream *s)
{
    nghttp2_session *sess = s->c->sess;
    if (!s->ct_ok || !s->method_post) {
        int code = s->method_post ? 415 : 405;
        nghttp2_nv nv[1] = {
            {(uint8_t *)":status", (uint8_t *)(code == 415 ? "415" : "405"), 7, 3,
             NGHTTP2_NV_FLAG_NONE},
        };
        s->closing = true;
        nghttp2_submit_response(sess, s->id, nv, 1, NULL);
        return;
    }
    if (s->path_long || strcmp(s->path, ADS_PATH) != 0) {
        char m[200];
        snprintf(m, sizeof(m), "unknown method %.150s (remora-xds serves ADS state of the world)",
                 s->path_long ? "(too long)" : s->path);
        stream_fail(s, 12, m);
        return;
    }
    nghttp2_nv nv[2] = {
        {(uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = data_read_cb};
    if (nghttp2_submit_response(sess, s->id, nv, 2, &dp) == 0) {
        s->accepted = true;
    }
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *user)
{
    struct aconn *c = user;
    h2_keepalive_on_frame(&c->ka, f);
    struct astream *s = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (s == NULL) {
        return 0;
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        accept_stream(s);
    }
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && s->accepted && !s->closing) {
        /* The client ended its side: so does the server. */
        if (grpc_msg_partial(&s->rd)) {
            stream_fail(s, 13, "the request stream ended inside a message");
        } else {
            stream_fail(s, 0, "");
        }
    }
    return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *user)
{
    (void)flags;
    (void)user;
    struct astream *s = nghttp2_session_get_stream_user_data(sess, id);
    if (s == NULL || !s->accepted || s->closing) {
        return 0;
    }
    struct ads *a = s->c->a;
    enum grpc_msg_err e = grpc_msg_feed(&s->rd, data, len, on_message, s);
    if (e != GRPC_MSG_OK) {
        grpc_msg_reader_reset(&s->rd);
    }
    /* The reader allocates a message whole once its prefix is in: count what all streams
     * hold, so many streams announcing large messages cannot add up without bound. */
    size_t held = s->rd.buf != NULL ? s->rd.len : 0;
    a->held = a->held - s->held + held;
    s->held = held;
    if (e == GRPC_MSG_OK && a->held > a->lim.max_held_total) {
        LOG_W("xds: stream %d: %zu bytes of partial requests held in all: failed", s->id, a->held);
        grpc_msg_reader_reset(&s->rd);
        a->held -= s->held;
        s->held = 0;
        stream_fail(s, 8, "the server holds too many partial requests");
        return 0;
    }
    if (e == GRPC_MSG_TOO_LARGE) {
        char m[96];
        snprintf(m, sizeof(m), "a message over %u bytes", s->c->a->lim.max_msg);
        stream_fail(s, 8, m);
    } else if (e == GRPC_MSG_COMPRESSED) {
        stream_fail(s, 12, "compressed messages are not supported");
    }
    return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *user)
{
    (void)code;
    (void)user;
    struct astream *s = nghttp2_session_get_stream_user_data(sess, id);
    if (s != NULL) {
        nghttp2_session_set_stream_user_data(sess, id, NULL);
        stream_free(s);
    }
    return 0;
}

/* ---- connections --------------------------------------------------------------------------- */

static void conn_close(struct aconn *c)
{
    struct ads *a = c->a;
    ev_io_stop(a->loop, &c->io);
    ev_timer_stop(a->loop, &c->idle);
    ev_timer_stop(a->loop, &c->age);
    h2_keepalive_stop(&c->ka);
    while (c->streams) {
        nghttp2_session_set_stream_user_data(c->sess, c->streams->id, NULL);
        stream_free(c->streams);
    }
    ev_timer_stop(a->loop, &c->idle);
    nghttp2_session_del(c->sess);
    if (c->tls != NULL) {
        tls_conn_shutdown(c->tls);
        tls_conn_destroy(c->tls);
    }
    free(c->spiffe_id);
    close(c->fd);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        a->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    a->n_conns--;
    free(c);
}

static void watch(struct aconn *c, int ev)
{
    if (c->io.events != ev) {
        ev_io_stop(c->a->loop, &c->io);
        ev_io_set(&c->io, c->fd, ev);
        ev_io_start(c->a->loop, &c->io);
    }
}

static void conn_flush(struct aconn *c)
{
    if (c->tls != NULL && !c->tls->handshake_done) {
        return; /* conn_handshake watches the socket; HTTP/2 starts after it */
    }
    for (;;) {
        if (c->pend_len == 0) {
            const uint8_t *d = NULL;
            ssize_t n = nghttp2_session_mem_send(c->sess, &d);
            if (n < 0) {
                c->dead = true;
                break;
            }
            if (n == 0) {
                break;
            }
            c->pend = d;
            c->pend_len = (size_t)n;
        }
        ssize_t w = sock_send(c->fd, c->tls, c->pend, c->pend_len);
        if (w == -EAGAIN) {
            break;
        }
        if (w < 0) {
            c->dead = true;
            break;
        }
        c->pend += w;
        c->pend_len -= (size_t)w;
    }
    int ev = 0;
    if (!c->dead && nghttp2_session_want_read(c->sess)) {
        ev |= EV_READ;
    }
    if (!c->dead && (c->pend_len > 0 || (c->tls != NULL && c->tls->want_write))) {
        ev |= EV_WRITE;
    }
    if (ev == 0) {
        /* Nothing to read and nothing left to write (or the socket failed). */
        conn_close(c);
        return;
    }
    watch(c, ev);
}

static void ka_flush(void *ud)
{
    conn_flush(ud);
}

static void ka_timeout(void *ud)
{
    struct aconn *c = ud;
    c->a->n_keepalive_timeouts++;
    LOG_I("xds: connection %d from %s: no PING ACK within %.0f ms: closed (%llu so far)", c->fd,
          c->peer, c->a->lim.keepalive_timeout_ms, (unsigned long long)c->a->n_keepalive_timeouts);
    conn_close(c);
}

static const struct h2_keepalive_ops ka_ops = {.flush = ka_flush, .timeout = ka_timeout};

/* Max connection age: GOAWAY and every stream ended (UNAVAILABLE) after what is queued for it;
 * closed when they are done (conn_flush), or when the grace runs out. */
static void conn_age_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct aconn *c = w->data;
    struct ads *a = c->a;
    if (c->aged || (c->tls != NULL && !c->tls->handshake_done)) {
        LOG_D("xds: connection %d: max connection age grace over: closed", c->fd);
        conn_close(c);
        return;
    }
    c->aged = true;
    a->n_aged++;
    LOG_D("xds: connection %d from %s: max connection age: GOAWAY", c->fd, c->peer);
    nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->sess), NGHTTP2_NO_ERROR,
                          (const uint8_t *)"max_age", 7);
    for (struct astream *s = c->streams; s != NULL; s = s->next) {
        stream_fail(s, 14, "max connection age");
    }
    ev_timer_stop(a->loop, &c->age);
    ev_timer_set(&c->age, a->lim.max_age_grace_ms / 1000.0, 0);
    ev_timer_start(a->loop, &c->age);
    conn_flush(c); /* may close (and free) c */
}

static uint64_t next_rand(struct ads *a)
{
    return rand_next(&a->rng);
}

/* The HTTP/2 session starts (at accept, or once the TLS handshake is done): keepalive PINGs and
 * the max connection age (+-10%, as gRPC jitters it) from now. */
static void session_started(struct aconn *c)
{
    struct ads *a = c->a;
    h2_keepalive_start(&c->ka, c->sess);
    if (a->lim.max_age_ms > 0) {
        double f = 0.9 + 0.2 * (double)(next_rand(a) % 10001) / 10000.0;
        ev_timer_set(&c->age, a->lim.max_age_ms * f / 1000.0, 0);
        ev_timer_start(a->loop, &c->age);
    }
}

/* A handshake failed (`why`) or timed out: counted, logged (at warning level at most once a
 * second, so a flood of bad clients cannot flood the log), and the connection closed. */
static void handshake_failed(struct aconn *c, const char *why)
{
    struct ads *a = c->a;
    a->tls_stats.failed++;
    ev_tstamp now = ev_now(a->loop);
    if (a->tls_fail_logged == 0 || now - a->tls_fail_logged >= 1.0) {
        a->tls_fail_logged = now;
        LOG_W("xds: TLS handshake with %s failed: %s (so far %llu done, %llu failed: %llu without "
              "a client certificate, %llu not verified, %llu timed out)",
              c->peer, why, (unsigned long long)a->tls_stats.handshakes,
              (unsigned long long)a->tls_stats.failed, (unsigned long long)a->tls_stats.no_cert,
              (unsigned long long)a->tls_stats.verify, (unsigned long long)a->tls_stats.timeouts);
    } else {
        LOG_D("xds: TLS handshake with %s failed: %s", c->peer, why);
    }
    conn_close(c);
}

/* The SPIFFE ID of the client's (verified) certificate: its one URI SAN, which must be a
 * spiffe:// URI of the authorized trust domain. Sets c->spiffe_id or c->spiffe_problem. */
static void peer_spiffe_id(struct aconn *c)
{
    X509 *cert = SSL_get1_peer_certificate(c->tls->ssl);
    if (cert == NULL) {
        c->spiffe_problem = "is missing";
        return;
    }
    GENERAL_NAMES *gns = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int n_uri = 0;
    const ASN1_STRING *uri = NULL;
    for (int i = 0; gns != NULL && i < sk_GENERAL_NAME_num(gns); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gns, i);
        if (g->type == GEN_URI) {
            n_uri++;
            uri = g->d.uniformResourceIdentifier;
        }
    }
    if (n_uri != 1) {
        c->spiffe_problem = n_uri == 0 ? "has no URI SAN (SPIFFE ID)"
                                       : "has more than one URI SAN (a SPIFFE ID is one)";
    } else {
        const char *p = (const char *)ASN1_STRING_get0_data(uri);
        size_t len = (size_t)ASN1_STRING_length(uri);
        const char *td = c->a->authz_td;
        size_t tl = strlen(td);
        if (memchr(p, '\0', len) != NULL || len < 10 + tl || strncmp(p, "spiffe://", 9) != 0 ||
            strncmp(p + 9, td, tl) != 0 || p[9 + tl] != '/') {
            c->spiffe_problem = "has a URI SAN that is no SPIFFE ID of the mesh's trust domain";
        } else {
            c->spiffe_id = xstrndup(p, len);
        }
    }
    GENERAL_NAMES_free(gns);
    X509_free(cert);
}

/* Runs the handshake on readiness. Returns true once it is done (the HTTP/2 session may go
 * on), false while it goes on or when it failed (then `c` is freed). */
static bool conn_handshake(struct aconn *c)
{
    int r = tls_conn_handshake(c->tls);
    if (r < 0) {
        const char *why = tls_fail_reason(c->tls);
        if (c->tls->fail == TLS_FAIL_NO_CERT) {
            c->a->tls_stats.no_cert++;
        } else if (c->tls->fail == TLS_FAIL_VERIFY) {
            c->a->tls_stats.verify++;
        }
        handshake_failed(c, why);
        return false;
    }
    if (r == 0) {
        watch(c, tls_conn_wait_events(c->tls));
        return false;
    }
    c->tls->just_done = false;
    c->a->tls_stats.handshakes++;
    if (c->a->authz_td != NULL) {
        peer_spiffe_id(c);
    }
    LOG_D("xds: connection %d: TLS handshake with %s done (%s)", c->fd, c->peer,
          SSL_get_version(c->tls->ssl));
    c->idle.repeat = c->a->lim.idle_timeout_ms / 1000.0;
    ev_timer_again(c->a->loop, &c->idle);
    session_started(c);
    return true;
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    struct aconn *c = w->data;
    if (c->tls != NULL && !c->tls->handshake_done) {
        if (!conn_handshake(c)) {
            return;
        }
        revents |= EV_READ; /* what came with the handshake's last flight, if anything */
    }
    /* Over TLS, records OpenSSL read ahead are drained here: the socket may not wake us for
     * them again (tls_conn_pending). */
    while (revents & EV_READ) {
        uint8_t buf[READ_CHUNK];
        ssize_t n = sock_recv(c->fd, c->tls, buf, sizeof(buf));
        if (n == -EAGAIN) {
            break;
        }
        if (n <= 0) {
            conn_close(c);
            return;
        }
        if (nghttp2_session_mem_recv(c->sess, buf, (size_t)n) < 0) {
            /* Not HTTP/2, or a protocol error: drop it. */
            LOG_D("xds: connection %d: HTTP/2 error: closed", c->fd);
            conn_close(c);
            return;
        }
        if (c->tls == NULL || !tls_conn_pending(c->tls)) {
            break;
        }
    }
    conn_flush(c);
}

static void conn_idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct aconn *c = w->data;
    if (c->tls != NULL && !c->tls->handshake_done) {
        c->a->tls_stats.timeouts++;
        handshake_failed(c, "timed out");
        return;
    }
    if (c->n_streams == 0) {
        LOG_D("xds: connection %d: idle: closed", c->fd);
        conn_close(c);
    }
}

/* "ADDR:PORT" of a peer, for the log. */
static void peer_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *v6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &v6->sin6_addr, host, sizeof(host));
        port = ntohs(v6->sin6_port);
        snprintf(out, cap, "[%s]:%d", host, port);
        return;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &v4->sin_addr, host, sizeof(host));
        port = ntohs(v4->sin_port);
    }
    snprintf(out, cap, "%s:%d", host, port);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct ads *a = w->data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(a->lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            return;
        }
        if (a->n_conns >= a->lim.max_conns) {
            LOG_W("xds: more than %zu connections: closed at accept", a->lim.max_conns);
            close(fd);
            continue;
        }
        struct aconn *c = xcalloc(1, sizeof(*c));
        c->a = a;
        c->fd = fd;
        peer_text(&ss, c->peer, sizeof(c->peer));
        if (a->tls != NULL && (c->tls = tls_conn_new(a->tls, fd)) == NULL) {
            LOG_E("xds: TLS: out of memory: connection from %s closed", c->peer);
            close(fd);
            free(c);
            continue;
        }
        nghttp2_session_callbacks *cb;
        nghttp2_session_callbacks_new(&cb);
        nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
        nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
        nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
        nghttp2_option *opt;
        nghttp2_option_new(&opt);
        nghttp2_option_set_max_settings(opt, 32);
        nghttp2_session_server_new2(&c->sess, cb, c, opt);
        nghttp2_option_del(opt);
        nghttp2_session_callbacks_del(cb);
        nghttp2_settings_entry iv[2] = {
            {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, a->lim.max_streams},
            {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
        };
        nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, 2);
        ev_io_init(&c->io, conn_io_cb, fd, EV_READ);
        c->io.data = c;
        ev_io_start(loop, &c->io);
        ev_init(&c->idle, conn_idle_cb);
        c->idle.repeat =
            (c->tls != NULL ? a->lim.handshake_timeout_ms : a->lim.idle_timeout_ms) / 1000.0;
        c->idle.data = c;
        ev_timer_again(loop, &c->idle);
        ev_init(&c->age, conn_age_cb);
        c->age.data = c;
        h2_keepalive_init(&c->ka, loop, &a->ka_cfg, &ka_ops, c, next_rand(a));
        c->next = a->conns;
        if (a->conns) {
            a->conns->prev = c;
        }
        a->conns = c;
        a->n_conns++;
        if (c->tls == NULL) {
            session_started(c);
            conn_flush(c);
        } /* else: the SETTINGS go once the handshake is done (conn_io_cb) */
    }
}

struct ads *ads_new(struct ev_loop *loop, int lfd, const struct ads_limits *lim, struct meshes *m,
                    const struct tls_ctx *tls)
{
    struct ads *a = xcalloc(1, sizeof(*a));
    a->loop = loop;
    a->lfd = lfd;
    a->lim = *lim;
    a->m = m;
    a->tls = tls;
    a->rng = (uint64_t)(uintptr_t)a ^ (uint64_t)(ev_time() * 1e6);
    if (lim->keepalive_time_ms > 0 && lim->keepalive_timeout_ms > 0) {
        a->ka_cfg.interval_ms = (uint64_t)lim->keepalive_time_ms;
        a->ka_cfg.timeout_ms = (uint64_t)lim->keepalive_timeout_ms;
    }
    ev_io_init(&a->accept_io, accept_cb, lfd, EV_READ);
    a->accept_io.data = a;
    ev_io_start(loop, &a->accept_io);
    return a;
}

void ads_authorize_nodes(struct ads *a, const char *trust_domain)
{
    free(a->authz_td);
    a->authz_td = trust_domain != NULL ? xstrdup(trust_domain) : NULL;
}

uint64_t ads_denied(const struct ads *a)
{
    return a->n_denied;
}

void ads_push(struct ads *a)
{
    for (struct aconn *c = a->conns, *next; c != NULL; c = next) {
        next = c->next;
        for (struct astream *s = c->streams; s != NULL; s = s->next) {
            stream_push(s);
        }
        conn_flush(c);
    }
}

void ads_free(struct ads *a)
{
    if (a == NULL) {
        return;
    }
    ev_io_stop(a->loop, &a->accept_io);
    close(a->lfd);
    while (a->conns) {
        conn_close(a->conns);
    }
    free(a->authz_td);
    free(a);
}
