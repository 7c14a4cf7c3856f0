/* h2_keepalive: PINGs on an HTTP/2 connection and the close when one goes unanswered (see
 * h2_keepalive.h). Two libev timers per connection: `send` (the next PING) and `wait` (its
 * ACK); nothing is allocated. */
#include "proxy/http/h2_keepalive.h"

#include <string.h>

#include "proxy/core/log.h"
#include "proxy/core/rand.h"

static uint64_t next_rand(struct h2_keepalive *k)
{
    return rand_next(&k->rng);
}

/* Envoy's onKeepaliveResponse: the next PING in interval + random % (jitter% of interval). */
static void schedule(struct h2_keepalive *k)
{
    ev_timer_stop(k->loop, &k->send);
    uint64_t ms = k->cfg->interval_ms;
    if (ms == 0) {
        return;
    }
    uint64_t jitter = (uint64_t)(k->cfg->jitter_percent * (double)ms / 100.0);
    if (jitter > 0) {
        ms += next_rand(k) % jitter;
    }
    ev_timer_set(&k->send, (double)ms / 1000.0, 0);
    ev_timer_start(k->loop, &k->send);
}

/* Submits a PING and starts waiting for its ACK; false when one is outstanding already. */
static bool send_ping(struct h2_keepalive *k)
{
    if (k->sess == NULL || ev_is_active(&k->wait)) {
        return false;
    }
    k->opaque = next_rand(k);
    uint8_t data[8];
    memcpy(data, &k->opaque, sizeof(data));
    if (nghttp2_submit_ping(k->sess, NGHTTP2_FLAG_NONE, data) != 0) {
        return false; /* out of memory: the next interval tries again */
    }
    k->n_sent++;
    ev_timer_set(&k->wait, (double)k->cfg->timeout_ms / 1000.0, 0);
    ev_timer_start(k->loop, &k->wait);
    return true;
}

static void send_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2_keepalive *k = t->data;
    if (send_ping(k)) {
        k->ops->flush(k->ud);
    }
}

static void wait_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)loop;
    (void)revents;
    struct h2_keepalive *k = t->data;
    ev_timer_stop(k->loop, &k->send);
    LOG_D("h2 keepalive: no PING ACK within %llu ms: closing",
          (unsigned long long)k->cfg->timeout_ms);
    k->ops->timeout(k->ud); /* may free k */
}

void h2_keepalive_init(struct h2_keepalive *k, struct ev_loop *loop,
                       const struct h2_keepalive_cfg *cfg, const struct h2_keepalive_ops *ops,
                       void *ud, uint64_t seed)
{
    memset(k, 0, sizeof(*k));
    k->loop = loop;
    k->cfg = h2_keepalive_enabled(cfg) ? cfg : NULL;
    k->ops = ops;
    k->ud = ud;
    k->rng = seed != 0 ? seed : 0x9E3779B97F4A7C15ULL;
    ev_init(&k->send, send_cb);
    k->send.data = k;
    ev_init(&k->wait, wait_cb);
    k->wait.data = k;
}

void h2_keepalive_start(struct h2_keepalive *k, nghttp2_session *sess)
{
    if (k->cfg == NULL) {
        return;
    }
    k->sess = sess;
    k->last_rx = ev_now(k->loop);
    schedule(k);
}

void h2_keepalive_on_frame(struct h2_keepalive *k, const nghttp2_frame *f)
{
    if (k->cfg == NULL || k->sess == NULL) {
        return;
    }
    k->last_rx = ev_now(k->loop);
    if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK)) {
        ev_timer_stop(k->loop, &k->wait);
        schedule(k);
    } else if (ev_is_active(&k->wait)) {
        ev_timer_stop(k->loop, &k->wait);
        ev_timer_set(&k->wait, (double)k->cfg->timeout_ms / 1000.0, 0);
        ev_timer_start(k->loop, &k->wait);
    }
}

void h2_keepalive_before_stream(struct h2_keepalive *k)
{
    if (k->cfg == NULL || k->sess == NULL || k->cfg->idle_interval_ms == 0) {
        return;
    }
    if ((ev_now(k->loop) - k->last_rx) * 1000.0 > (double)k->cfg->idle_interval_ms) {
        send_ping(k);
    }
}

void h2_keepalive_stop(struct h2_keepalive *k)
{
    if (k->loop == NULL) {
        return;
    }
    ev_timer_stop(k->loop, &k->send);
    ev_timer_stop(k->loop, &k->wait);
    k->sess = NULL;
}
