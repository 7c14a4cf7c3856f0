/* Unit tests for filter_chain: order in both directions, stop and resume (in the head, in the
 * body, a second stop while resuming, a resume from inside the callback), local replies,
 * backpressure and strict buffering, on_done, per-worker state. The chain's .c is included and
 * stream.c's next steps (router, forwarding, sending) are fakes that record what reached them,
 * so the chain runs without sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "proxy/http/filter_chain.c"

/* ---- a trace of everything that happened, as text ---- */

static char trace[4096];

static void tr(const char *fmt, ...)
{
    size_t n = strlen(trace);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(trace + n, sizeof(trace) - n, fmt, ap);
    va_end(ap);
}

/* ---- fakes for what the chain calls outside itself ---- */

static bool dc_paused;

void stream_route_request(struct stream *s)
{
    (void)s;
    tr("R ");
}

void stream_forward_request_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    (void)s;
    tr("B(%.*s%s) ", (int)len, p ? (const char *)p : "", end ? ",end" : "");
}

void stream_send_response_head(struct stream *s)
{
    s->resp_started = true;
    tr("H ");
}

void stream_send_response_body(struct stream *s, const uint8_t *p, size_t len, bool end)
{
    (void)s;
    tr("b(%.*s%s) ", (int)len, p ? (const char *)p : "", end ? ",end" : "");
}

void stream_set_details(struct stream *s, const char *details)
{
    s->details = details;
}

void stream_local_reply(struct stream *s, int status, const char *body, uint32_t flag)
{
    (void)body;
    s->flags |= flag;
    s->status = status;
    tr("L%d ", status);
    struct headers h;
    headers_init(&h, &s->arena, 4);
    if (s->fc != NULL) {
        filter_chain_local_reply(s, &h);
    }
    s->resp_started = true;
}

void downstream_pause_read(struct downstream *d, bool pause)
{
    (void)d;
    dc_paused = pause;
    tr("%s ", pause ? "pause" : "unpause");
}

/* The stream's codec: only pause_read is reached from the filter chain. */
static void fake_pause_read(struct stream *s, bool pause)
{
    downstream_pause_read(s->dc, pause);
}

static const struct downstream_ops fake_dc_ops = {.pause_read = fake_pause_read};

void downstream_flush(struct downstream *d)
{
    (void)d;
}

uint64_t worker_rand(struct worker *w)
{
    (void)w;
    return 42;
}

/* ---- a scriptable filter ---- */

struct fake_cfg {
    char id;
    enum filter_status head;  /* on_request_headers */
    enum filter_status data;  /* on_request_data, for the first piece */
    enum filter_status rhead; /* on_response_headers */
    int reply;                /* answer locally from on_request_headers with this status */
    bool resume_inline;       /* call stream_resume() before returning a STOP */
    bool buffer_until_end;    /* data: FILTER_STOP_AND_BUFFER until the end, then CONTINUE */
    uint32_t limit;           /* filter_set_buffer_limit() from on_request_headers */
};

struct fake_state {
    int n_data;
    int n_done;
};

static struct filter *last_stopped[8];

static enum filter_status fake_req_head(struct filter *f, struct headers *h, bool end)
{
    (void)h;
    const struct fake_cfg *c = f->cfg;
    tr("%ch%s ", c->id, end ? "!" : "");
    if (c->limit) {
        filter_set_buffer_limit(f, c->limit);
    }
    if (c->reply) {
        filter_local_reply(f, c->reply, "", 0);
        return FILTER_STOP;
    }
    if (c->head != FILTER_CONTINUE) {
        last_stopped[f->index] = f;
        if (c->resume_inline) {
            stream_resume(f->s, f);
        }
    }
    return c->head;
}

static enum filter_status fake_req_data(struct filter *f, const uint8_t *p, size_t len, bool end)
{
    const struct fake_cfg *c = f->cfg;
    struct fake_state *st = f->state;
    tr("%cd(%.*s%s) ", c->id, (int)len, p ? (const char *)p : "", end ? ",end" : "");
    if (c->buffer_until_end) {
        return end ? FILTER_CONTINUE : FILTER_STOP_AND_BUFFER;
    }
    if (st->n_data++ == 0 && c->data != FILTER_CONTINUE) {
        last_stopped[f->index] = f;
        return c->data;
    }
    return FILTER_CONTINUE;
}

static enum filter_status fake_resp_head(struct filter *f, struct headers *h, bool end)
{
    (void)h;
    (void)end;
    const struct fake_cfg *c = f->cfg;
    tr("%cH ", c->id);
    if (c->rhead != FILTER_CONTINUE) {
        last_stopped[f->index] = f;
    }
    return c->rhead;
}

static enum filter_status fake_resp_data(struct filter *f, const uint8_t *p, size_t len, bool end)
{
    const struct fake_cfg *c = f->cfg;
    tr("%cD(%.*s%s) ", c->id, (int)len, p ? (const char *)p : "", end ? ",end" : "");
    return FILTER_CONTINUE;
}

static void fake_done(struct filter *f)
{
    const struct fake_cfg *c = f->cfg;
    struct fake_state *st = f->state;
    st->n_done++;
    tr("%cx ", c->id);
}

static void *fake_worker_new(const void *cfg, struct worker *w)
{
    (void)w;
    const struct fake_cfg *c = cfg;
    char *p = xmalloc(2);
    p[0] = c->id;
    p[1] = '\0';
    return p;
}

static const struct filter_ops fake_ops = {
    .name = "test.fake",
    .state_size = sizeof(struct fake_state),
    .on_request_headers = fake_req_head,
    .on_request_data = fake_req_data,
    .on_response_headers = fake_resp_head,
    .on_response_data = fake_resp_data,
    .on_done = fake_done,
    .worker_new = fake_worker_new,
    .worker_free = free,
};

/* ---- a stream with three fake filters a, b, c ---- */

struct rig {
    struct fake_cfg cfgs[3];
    struct filter_cfg fcs[3];
    struct hcm_cfg hcm;
    struct listener_cfg lcfg;
    struct stats_block stats;
    stat_t ext[4];
    struct worker w;
    struct worker_scope sc;
    struct downstream dc;
    struct stream s;
};

static void rig_init(struct rig *r, bool has_body)
{
    memset(r, 0, sizeof(*r));
    memset(last_stopped, 0, sizeof(last_stopped));
    trace[0] = '\0';
    dc_paused = false;
    for (int i = 0; i < 3; i++) {
        r->cfgs[i].id = (char)('a' + i);
        r->fcs[i] = (struct filter_cfg){&fake_ops, &r->cfgs[i], STR_LIT("f"), (uint32_t)i};
    }
    r->hcm.filters = r->fcs;
    r->hcm.n_filters = 3;
    r->lcfg.per_connection_buffer_limit = 8;
    r->stats.ext = r->ext;
    r->w.stats = &r->stats;
    r->sc.stats = &r->stats;
    r->s.w = &r->w;
    r->s.dc = &r->dc;
    r->dc.sc = &r->sc;
    r->dc.ops = &fake_dc_ops;
    r->s.hcm = &r->hcm;
    r->s.lcfg = &r->lcfg;
    r->s.req_has_body = has_body;
    arena_init(&r->s.arena, 0);
}

static void rig_deinit(struct rig *r)
{
    if (r->s.fc != NULL) {
        filter_chain_done(&r->s);
    }
    arena_deinit(&r->s.arena);
}

static bool req_data(struct rig *r, const char *p, bool end)
{
    return filter_chain_request_data(&r->s, (const uint8_t *)p, p ? strlen(p) : 0, end);
}

static void test_filter_chain_order_both_directions(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    assert_true(filter_chain_request_headers(&r.s));
    assert_true(req_data(&r, "xy", false));
    assert_true(req_data(&r, NULL, true));
    assert_true(filter_chain_response_headers(&r.s, false));
    assert_true(filter_chain_response_data(&r.s, (const uint8_t *)"ok", 2, true));
    assert_string_equal(trace, "ah bh ch ad(xy) bd(xy) cd(xy) ad(,end) bd(,end) cd(,end) "
                               "cH bH aH cD(ok,end) bD(ok,end) aD(ok,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_bodiless_request_has_no_data_callbacks(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    assert_true(filter_chain_request_headers(&r.s));
    assert_true(req_data(&r, NULL, true));
    assert_string_equal(trace, "ah! bh! ch! ");
    rig_deinit(&r);
}

static void test_filter_chain_stop_in_head_holds_body_until_resume(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[1].head = FILTER_STOP;
    assert_false(filter_chain_request_headers(&r.s));
    /* held bytes still pass a and b (the one that stopped), then wait */
    assert_false(req_data(&r, "12", false));
    assert_false(req_data(&r, "34", true));
    assert_string_equal(trace, "ah bh ad(12) bd(12) ad(34,end) bd(34,end) ");
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[1]);
    assert_string_equal(trace, "ch R cd(1234,end) B(1234,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_stop_in_body(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[1].data = FILTER_STOP;
    assert_true(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "ab", false));
    assert_false(req_data(&r, "cd", false));
    assert_string_equal(trace, "ah bh ch ad(ab) bd(ab) ad(cd) bd(cd) ");
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[1]);
    assert_string_equal(trace, "cd(abcd) B(abcd) ");
    /* flowing again */
    trace[0] = '\0';
    assert_true(req_data(&r, "e", true));
    assert_string_equal(trace, "ad(e,end) bd(e,end) cd(e,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_second_stop_while_resuming(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[0].head = FILTER_STOP;
    r.cfgs[2].head = FILTER_STOP;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "xy", false));
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[0]);
    /* b passes, c stops: the held bytes catch up through b and c */
    assert_string_equal(trace, "bh ch bd(xy) cd(xy) ");
    trace[0] = '\0';
    assert_false(req_data(&r, "z", true));
    assert_string_equal(trace, "ad(z,end) bd(z,end) cd(z,end) ");
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[2]);
    assert_string_equal(trace, "R B(xyz,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_bodiless_end_waits_behind_a_stop(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    r.cfgs[0].head = FILTER_STOP;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, NULL, true));
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[0]);
    assert_string_equal(trace, "bh! ch! R B(,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_resume_inside_callback_is_continue(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    r.cfgs[1].head = FILTER_STOP;
    r.cfgs[1].resume_inline = true;
    assert_true(filter_chain_request_headers(&r.s));
    assert_string_equal(trace, "ah! bh! ch! ");
    rig_deinit(&r);
}

static void test_filter_chain_local_reply_skips_the_rest(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[1].reply = 429;
    assert_false(filter_chain_request_headers(&r.s));
    /* the reply's head passes the filters that saw the request, in reverse */
    assert_string_equal(trace, "ah bh L429 bH aH ");
    trace[0] = '\0';
    assert_false(req_data(&r, "late", true)); /* dropped */
    assert_string_equal(trace, "");
    /* a resume after the answer does nothing */
    stream_resume(&r.s, &r.s.fc->v[1]);
    assert_string_equal(trace, "");
    rig_deinit(&r);
}

static void test_filter_chain_backpressure_while_held(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true); /* buffer limit 8 */
    r.cfgs[0].head = FILTER_STOP;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "12345", false));
    assert_false(dc_paused);
    assert_false(req_data(&r, "6789", false));
    assert_true(dc_paused);
    stream_resume(&r.s, last_stopped[0]);
    assert_false(dc_paused);
    rig_deinit(&r);
}

static void test_filter_chain_strict_buffer_overflow_is_413(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    struct hcm_stats hs;
    memset(&hs, 0, sizeof(hs));
    r.s.hstats = &hs;
    r.cfgs[0].head = FILTER_STOP_AND_BUFFER;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "123456789", false));
    assert_false(dc_paused);
    assert_int_equal(r.s.status, 413);
    assert_int_equal(stat_get(&hs.downstream_rq_too_large), 1);
    rig_deinit(&r);
}

/* The buffer filter's shape: a strict stop in the head, released by the same filter's data
 * callback at the end of the body; its own limit replaces the listener's (8). */
static void test_filter_chain_strict_stop_released_by_its_data_callback(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[1].head = FILTER_STOP_AND_BUFFER;
    r.cfgs[1].buffer_until_end = true;
    r.cfgs[1].limit = 12;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "12345", false));
    assert_false(req_data(&r, "6789", false));
    assert_false(dc_paused);
    assert_int_equal(r.s.status, 0); /* 9 bytes: past the listener's 8, within the filter's 12 */
    trace[0] = '\0';
    assert_false(req_data(&r, "ab", true));
    assert_string_equal(trace,
                        "ad(ab,end) bd(ab,end) ch R cd(123456789ab,end) B(123456789ab,end) ");
    rig_deinit(&r);
}

/* The same filter after an earlier stop: the held bytes catch up to it on the resume, end
 * included, and it lets go at once. */
static void test_filter_chain_strict_stop_released_while_catching_up(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, true);
    r.cfgs[0].head = FILTER_STOP;
    r.cfgs[1].head = FILTER_STOP_AND_BUFFER;
    r.cfgs[1].buffer_until_end = true;
    assert_false(filter_chain_request_headers(&r.s));
    assert_false(req_data(&r, "12", false));
    assert_false(req_data(&r, NULL, true));
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[0]);
    assert_string_equal(trace, "bh bd(12,end) ch R cd(12,end) B(12,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_response_stop_and_resume(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    r.cfgs[1].rhead = FILTER_STOP;
    assert_true(filter_chain_request_headers(&r.s));
    trace[0] = '\0';
    assert_false(filter_chain_response_headers(&r.s, false));
    assert_false(filter_chain_response_data(&r.s, (const uint8_t *)"ok", 2, true));
    assert_string_equal(trace, "cH bH cD(ok,end) bD(ok,end) ");
    trace[0] = '\0';
    stream_resume(&r.s, last_stopped[1]);
    assert_string_equal(trace, "aH H aD(ok,end) b(ok,end) ");
    rig_deinit(&r);
}

static void test_filter_chain_done_once_for_every_filter(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    r.cfgs[0].reply = 503; /* b and c never run, but still get on_done */
    assert_false(filter_chain_request_headers(&r.s));
    trace[0] = '\0';
    filter_chain_done(&r.s);
    filter_chain_done(&r.s);
    assert_string_equal(trace, "ax bx cx ");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(((struct fake_state *)r.s.fc->v[i].state)->n_done, 1);
    }
    rig_deinit(&r);
}

static void test_filter_chain_per_route_config_wins(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    struct fake_cfg vh_b = {.id = 'V'}, rt_b = {.id = 'X'}, vh_c = {.id = 'W'};
    const void *vh_cfgs[3] = {NULL, &vh_b, &vh_c};
    const void *rt_cfgs[3] = {NULL, &rt_b, NULL};
    struct vhost_cfg vh;
    struct route_cfg rt;
    memset(&vh, 0, sizeof(vh));
    memset(&rt, 0, sizeof(rt));
    vh.filter_cfgs = vh_cfgs;
    rt.filter_cfgs = rt_cfgs;
    r.s.vhost = &vh;
    r.s.route = &rt;
    assert_true(filter_chain_request_headers(&r.s));
    assert_string_equal(trace, "ah! Xh! Wh! ");
    rig_deinit(&r);
}

static void test_filter_chain_worker_state(void **state)
{
    (void)state;
    struct rig r;
    rig_init(&r, false);
    struct filter_chain_cfg fc;
    memset(&fc, 0, sizeof(fc));
    fc.hcm = &r.hcm;
    struct config c;
    memset(&c, 0, sizeof(c));
    c.chains = &fc;
    c.n_chains = 1;
    c.n_filter_slots = 3;
    void **ws = filter_chain_worker_new(&c, &r.w);
    assert_string_equal(ws[2], "c");
    r.w.filter_wstate = ws;
    r.sc.filter_wstate = ws; /* what a connection's scope hands its filters (worker.h) */
    assert_true(filter_chain_request_headers(&r.s));
    assert_string_equal(r.s.fc->v[1].wstate, "b");
    rig_deinit(&r);
    filter_chain_worker_free(ws, &c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filter_chain_order_both_directions),
        cmocka_unit_test(test_filter_chain_bodiless_request_has_no_data_callbacks),
        cmocka_unit_test(test_filter_chain_stop_in_head_holds_body_until_resume),
        cmocka_unit_test(test_filter_chain_stop_in_body),
        cmocka_unit_test(test_filter_chain_second_stop_while_resuming),
        cmocka_unit_test(test_filter_chain_bodiless_end_waits_behind_a_stop),
        cmocka_unit_test(test_filter_chain_resume_inside_callback_is_continue),
        cmocka_unit_test(test_filter_chain_local_reply_skips_the_rest),
        cmocka_unit_test(test_filter_chain_backpressure_while_held),
        cmocka_unit_test(test_filter_chain_strict_buffer_overflow_is_413),
        cmocka_unit_test(test_filter_chain_strict_stop_released_by_its_data_callback),
        cmocka_unit_test(test_filter_chain_strict_stop_released_while_catching_up),
        cmocka_unit_test(test_filter_chain_response_stop_and_resume),
        cmocka_unit_test(test_filter_chain_done_once_for_every_filter),
        cmocka_unit_test(test_filter_chain_per_route_config_wins),
        cmocka_unit_test(test_filter_chain_worker_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
