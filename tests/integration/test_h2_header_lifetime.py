"""HTTP/2 request fields live as long as their stream. The downstream codec keeps nghttp2's
header buffers (a reference each) instead of copying the fields; the HPACK table drops its
own reference when a later field evicts the entry, and the freed buffer is soon reused for
another field of the same size. So a field that a retry re-sends, or the access log prints,
after later requests evicted it must still read as it was sent (a missing reference shows as
another request's value here, or as a use-after-free under ASan).

The requests go out in one write: every header block is decoded (and the early ones' table
entries evicted) before any upstream has answered, so the first attempts' 503s, the retries
and the access log lines all come after the evictions."""

import json

from h2raw import END_STREAM, DATA, HEADERS, H2Raw, headers, lit
from proxyutil import file_access_log, route, start_proxy, stats, wait_log

H2 = {"codec_type": "HTTP2"}
PREVIOUS_HOSTS = [{"name": "envoy.retry_host_predicates.previous_hosts",
                   "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                             "previous_hosts.v3.PreviousHostsPredicate"}}]
N = 16  # streams; 600-byte indexed values: the 4 KiB HPACK table holds about 6 of them


def _value(sid):
    return (f"{sid:04d}-" * 120)[:600]


def _block(sid):
    """GET /life/<sid> with three fields added to the HPACK table: a 600-byte x-life value,
    a per-stream field name, and a per-stream :authority; plus the faults for endpoint "a"."""
    return b"".join([
        b"\x82\x86",  # :method GET, :scheme http (static table)
        lit(":path", f"/life/{sid}"),
        lit(":authority", f"host-{sid}.example", indexing=True),
        lit("x-life", _value(sid), indexing=True),
        lit(f"x-name-{sid:03d}", f"v{sid}", indexing=True),
        lit("user-agent", f"agent-{sid}"),
        lit("x-upstream-only", "a"),
        lit("x-upstream-status", "503"),
        lit("x-upstream-echo", "1"),
    ])


def _bodies(ev):
    """{sid: body bytes} of the streams that ended, from the DATA frames read."""
    out, ended = {}, set()
    for t, fl, sid, p in ev.frames:
        if t == DATA:
            out[sid] = out.get(sid, b"") + p
        if t in (DATA, HEADERS) and fl & END_STREAM:
            ended.add(sid)
    return {sid: out.get(sid, b"") for sid in ended}


def test_h2_request_fields_outlive_hpack_eviction_for_retries_and_access_log(ctx):
    a, b = ctx.start_upstream("a"), ctx.start_upstream("b")
    log = ctx.tmp / "access.log"
    fmt = "life %REQ(:PATH)% %REQ(:AUTHORITY)% %REQ(USER-AGENT)% %REQ(X-LIFE)%\n"
    policy = {"retry_on": "5xx", "num_retries": 2, "retry_host_predicate": PREVIOUS_HOSTS,
              "retry_back_off": {"base_interval": "0.02s"}}
    # max_retries: Envoy's default allows 3 retries at once; about half of these retry together
    r = start_proxy(ctx, {"c": [a, b]}, hcm_extra=H2,
                    routes=[route("/", "c", retry_policy=policy)],
                    cluster_extra={"circuit_breakers": {"thresholds": [{"max_retries": 100}]}},
                    access_log=[file_access_log(log, fmt)])
    sids = [2 * i + 1 for i in range(N)]
    with H2Raw(r.port()) as c:
        c.handshake()
        assert c.send(b"".join(headers(sid, _block(sid)) for sid in sids))
        ev = c.read(timeout=10, until=lambda e: len(_bodies(e)) == N)
    bodies = _bodies(ev)
    assert sorted(bodies) == sids, ev
    for sid in sids:
        echo = json.loads(bodies[sid])
        assert echo["name"] == "b", (sid, echo)  # "a" answered 503: retried on "b"
        got = dict((n, v) for n, v in echo["headers"])
        assert echo["path"] == f"/life/{sid}", (sid, echo["path"])
        assert got["host"] == f"host-{sid}.example", (sid, got)
        assert got["x-life"] == _value(sid), (sid, got["x-life"][:40])
        assert got[f"x-name-{sid:03d}"] == f"v{sid}", (sid, got)
        assert got["user-agent"] == f"agent-{sid}", (sid, got)
    st = stats(r)
    assert st["cluster.c.upstream_rq_retry"] >= N // 2 - 1, st  # round robin: about half
    assert a.stats()["requests"] == st["cluster.c.upstream_rq_retry"]
    for sid in sids:
        line = wait_log(log, lambda ln, sid=sid: ln.startswith(f"life /life/{sid} "))
        assert line == f"life /life/{sid} host-{sid}.example agent-{sid} {_value(sid)}", line
