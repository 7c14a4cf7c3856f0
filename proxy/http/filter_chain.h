/* filter_chain: runs a stream's HTTP filters (the contract is proxy/http/filter.h). stream.c
 * calls the hooks below at its few points of the data path; each returns true when the stream
 * goes on at once (stream.c then does the next step itself) and false when a filter stopped
 * the direction or the stream was answered. A stopped direction resumes through stream_resume(),
 * which runs the remaining filters and then calls stream.c's next step (stream_route_request,
 * stream_forward_request_body, stream_send_response_head, stream_send_response_body) itself.
 *
 * The snapshot side: each connection manager holds its compiled chain (`hcm_cfg.filters`), and
 * routes and virtual hosts hold their typed_per_filter_config by chain position; the stream's
 * `struct filter` takes the most specific one (route, then virtual host, then the chain's).
 *
 * Thread: the stream's worker, except worker state (main, before and after the worker runs). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proxy/core/str.h"

struct config;
struct filter_conn;
struct filter_ops;
struct headers;
struct stream;
struct worker;

/* One entry of a connection manager's chain, in the snapshot. */
struct filter_cfg {
    const struct filter_ops *ops; /* borrowed from filters/registry.c (static) */
    const void *cfg;              /* ops->config_new's result, in the snapshot arena */
    struct str name;              /* HttpFilter.name: typed_per_filter_config's key */
    uint32_t slot;                /* config-wide index: the worker's state for this entry */
};

/* The request head, after routing (s->route and s->vhost set; either may be NULL). Creates
 * s->fc and runs on_request_headers in chain order. True: go on to the router. */
bool filter_chain_request_headers(struct stream *s);

/* A piece of the request body, or its end (`len` 0, `end`). True: forward it now; false: held
 * (or the stream was answered: drop it). */
bool filter_chain_request_data(struct stream *s, const uint8_t *p, size_t len, bool end);

/* The response head in s->resp (status s->status), in reverse chain order; `end`: a response
 * without a body. True: send it now. */
bool filter_chain_response_headers(struct stream *s, bool end);

/* A piece of the response body, or its end. True: send it now. */
bool filter_chain_response_data(struct stream *s, const uint8_t *p, size_t len, bool end);

/* A local reply's head `h` (status s->status) is about to be sent: it passes the
 * on_response_headers callbacks of the filters that saw the request head, in reverse order. */
void filter_chain_local_reply(struct stream *s, struct headers *h);

/* The stream ends: on_done for every filter, held bytes freed. Idempotent. */
void filter_chain_done(struct stream *s);

/* Per-worker state of every chain entry of `c` (ops->worker_new), indexed by filter_cfg.slot;
 * owned by the worker. Thread: main, before the worker runs. */
void **filter_chain_worker_new(const struct config *c, struct worker *w);
void filter_chain_worker_free(void **wstate, const struct config *c);

/* Frees a connection's filter_conn_state() blocks (called when the connection is freed). */
void filter_conn_free(struct filter_conn *list);
