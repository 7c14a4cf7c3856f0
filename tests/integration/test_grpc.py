"""gRPC end to end with a real @grpc/grpc-js server and client (tests/grpc, via grpcutil.py).

First the harness itself, client straight to server: the four call kinds, status codes and
messages, trailing metadata, deadlines, the retry counter. Then the same calls through remora:
h2c downstream -> remora -> h2c upstream (cluster http2_protocol_options), where trailers,
statuses, grpc-timeout deadlines and retry_on "unavailable" must behave as gRPC says."""

from grpcutil import (DEADLINE_EXCEEDED, INTERNAL, INVALID_ARGUMENT, NOT_FOUND, OK,
                      PERMISSION_DENIED, UNAUTHENTICATED, UNAVAILABLE, grpc_call, need_node,
                      start_grpc_server)
from lib import bootstrap_dict, wait_for

# ---- the harness, without remora ----------------------------------------------------------------


def test_grpc_harness_unary(ctx):
    srv = start_grpc_server(ctx, name="g1")
    r = grpc_call(srv.port, "unary", messages=[{"text": "hi"}],
                  metadata=[("x-send-header", "h1=hv"), ("x-send-trailer", "t1=v1"),
                            ("x-send-trailer", "t2=v2"), ("x-custom", "c")])
    assert (r["code"], r["code_name"]) == (OK, "OK")
    (m,) = r["messages"]
    assert m["text"] == "hi" and m["name"] == "g1" and m["metadata"]["x-custom"] == "c"
    assert m["deadline_ms"] is None
    assert r["headers"]["h1"] == "hv"
    assert r["trailers"]["t1"] == "v1" and r["trailers"]["t2"] == "v2"
    assert r["trailers"]["x-server-name"] == "g1"
    st = srv.stats()
    assert st["calls"] == 1 and st["by_method"] == {"Unary": 1}
    assert st["last_metadata"]["x-custom"] == "c"
    assert srv.reset_stats()["calls"] == 0


def test_grpc_harness_streams(ctx):
    srv = start_grpc_server(ctx)
    r = grpc_call(srv.port, "server", messages=[{"n": 5, "text": "s"}],
                  metadata={"x-response-size": "1000"})
    assert r["code"] == OK and [m["seq"] for m in r["messages"]] == list(range(5))
    assert all(m["text"] == "s" and len(m["pad"]) == 1000 for m in r["messages"])
    r = grpc_call(srv.port, "client", messages=[{"value": v} for v in (1, 2, 3.5)])
    assert r["code"] == OK and r["messages"] == [{"sum": 6.5, "count": 3}]
    msgs = [{"i": i} for i in range(4)]
    r = grpc_call(srv.port, "bidi", messages=msgs)
    assert r["code"] == OK and [m["echo"] for m in r["messages"]] == msgs
    assert srv.stats()["by_method"] == {"ServerStream": 1, "ClientStream": 1, "BidiStream": 1}


def test_grpc_harness_status_codes(ctx):
    srv = start_grpc_server(ctx)
    for code in (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, INTERNAL, UNAUTHENTICATED):
        r = grpc_call(srv.port, "unary", metadata={"x-fail-code": str(code),
                                                   "x-fail-message": f"no {code}",
                                                   "x-send-trailer": "why=because"})
        assert (r["code"], r["details"]) == (code, f"no {code}") and r["messages"] == []
        assert r["trailers"]["why"] == "because"
    # A server stream that fails after two messages keeps the two.
    r = grpc_call(srv.port, "server", messages=[{"n": 5}],
                  metadata={"x-fail-code": str(INTERNAL), "x-fail-after": "2"})
    assert r["code"] == INTERNAL and len(r["messages"]) == 2
    r = grpc_call(srv.port, "bidi", messages=[{"a": 1}, {"a": 2}, {"a": 3}],
                  metadata={"x-fail-code": str(NOT_FOUND), "x-fail-after": "1"})
    assert r["code"] == NOT_FOUND and len(r["messages"]) == 1


def test_grpc_harness_deadline(ctx):
    srv = start_grpc_server(ctx)
    r = grpc_call(srv.port, "unary", metadata={"x-delay-ms": "2000"}, deadline_ms=300)
    assert r["code"] == DEADLINE_EXCEEDED and r["elapsed_ms"] < 1500
    # The server sees the deadline (sent as grpc-timeout, which grpc-js keeps out of the
    # metadata).
    r = grpc_call(srv.port, "unary", deadline_ms=5000)
    assert r["code"] == OK and 0 < r["messages"][0]["deadline_ms"] <= 5000


def test_grpc_harness_fail_first_n(ctx):
    srv = start_grpc_server(ctx)
    md = {"x-attempt-key": "k1", "x-fail-first": "2"}
    assert grpc_call(srv.port, "unary", metadata=md)["code"] == UNAVAILABLE
    assert grpc_call(srv.port, "unary", metadata=md)["code"] == UNAVAILABLE
    assert grpc_call(srv.port, "unary", metadata=md)["code"] == OK
    assert grpc_call(srv.port, "unary", metadata={"x-attempt-key": "k2"})["code"] == OK
    st = srv.stats()
    assert st["attempts"] == {"k1": 3, "k2": 1} and st["calls"] == 4


# ---- through remora ---------------------------------------------------------------------------


def start_grpc_proxy(ctx, srv, route_extra=None):
    """remora with an AUTO (h2c-detecting) listener and one HTTP/2 cluster at ``srv``; the
    route "/" may carry extra RouteAction fields (retry_policy, max_stream_duration, ...)."""
    need_node()
    action = {"cluster": "grpc"}
    action.update(route_extra or {})
    cfg = bootstrap_dict(listener_port="{{L}}", clusters={"grpc": [srv.port]},
                         routes=[{"match": {"prefix": "/"}, "route": action}],
                         cluster_extra={"http2_protocol_options": {}})
    return ctx.start_remora(cfg)


def test_grpc_proxy_unary_and_trailers(ctx):
    srv = start_grpc_server(ctx, name="up")
    px = start_grpc_proxy(ctx, srv)
    r = grpc_call(px.port(0), "unary", messages=[{"text": "via"}],
                  metadata=[("x-send-header", "h1=hv"), ("x-send-trailer", "t1=v1"),
                            ("x-custom", "c")])
    assert r["code"] == OK, r
    (m,) = r["messages"]
    assert m["text"] == "via" and m["metadata"]["x-custom"] == "c"
    assert r["headers"]["h1"] == "hv"
    assert r["trailers"]["t1"] == "v1" and r["trailers"]["x-server-name"] == "up"
    # A 1 MiB response message crosses both HTTP/2 hops' flow control.
    r = grpc_call(px.port(0), "unary", metadata={"x-response-size": str(1 << 20)})
    assert r["code"] == OK and len(r["messages"][0]["pad"]) == 1 << 20
    assert srv.stats()["calls"] == 2


def test_grpc_proxy_streams(ctx):
    srv = start_grpc_server(ctx)
    px = start_grpc_proxy(ctx, srv)
    r = grpc_call(px.port(0), "server", messages=[{"n": 50}],
                  metadata={"x-response-size": "2000", "x-send-trailer": "end=yes"})
    assert r["code"] == OK, r
    assert [m["seq"] for m in r["messages"]] == list(range(50))
    assert r["trailers"]["end"] == "yes"
    r = grpc_call(px.port(0), "client", messages=[{"value": i} for i in range(100)])
    assert r["code"] == OK and r["messages"] == [{"sum": 4950, "count": 100}]
    msgs = [{"i": i, "s": "x" * 100} for i in range(20)]
    r = grpc_call(px.port(0), "bidi", messages=msgs)
    assert r["code"] == OK and [m["echo"] for m in r["messages"]] == msgs
    assert srv.stats()["by_method"] == {"ServerStream": 1, "ClientStream": 1, "BidiStream": 1}


def test_grpc_proxy_error_statuses_pass_through(ctx):
    srv = start_grpc_server(ctx)
    px = start_grpc_proxy(ctx, srv)
    for code in (INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, INTERNAL, UNAUTHENTICATED,
                 UNAVAILABLE):
        r = grpc_call(
            px.port(0), "unary", metadata={"x-fail-code": str(code),
                                           "x-fail-message": f"bad {code}",
                                           "x-send-trailer": "why=because"})
        assert (r["code"], r["details"]) == (code, f"bad {code}"), r
        assert r["trailers"]["why"] == "because" and r["trailers"]["x-server-name"] == "grpc"
    r = grpc_call(px.port(0), "server", messages=[{"n": 10}],
                  metadata={"x-fail-code": str(INTERNAL), "x-fail-after": "3"})
    assert r["code"] == INTERNAL and len(r["messages"]) == 3
    # Without retry_on, an UNAVAILABLE is not retried: one attempt upstream.
    r = grpc_call(px.port(0), "unary", metadata={"x-attempt-key": "once", "x-fail-first": "1"})
    assert r["code"] == UNAVAILABLE
    assert srv.stats()["attempts"] == {"once": 1}


def test_grpc_proxy_deadline_exceeded(ctx):
    srv = start_grpc_server(ctx)
    px = start_grpc_proxy(ctx, srv, {"max_stream_duration": {"grpc_timeout_header_max": "0s"}})
    # The client's deadline travels as grpc-timeout; the upstream sees it.
    r = grpc_call(px.port(0), "unary", deadline_ms=5000)
    assert r["code"] == OK and 0 < r["messages"][0]["deadline_ms"] <= 5000
    r = grpc_call(px.port(0), "unary", metadata={"x-delay-ms": "3000"}, deadline_ms=300)
    assert r["code"] == DEADLINE_EXCEEDED and r["elapsed_ms"] < 2000, r


def test_grpc_proxy_deadline_from_the_proxy(ctx):
    """grpc_timeout_header_max caps the client's 10 s deadline at 300 ms: the DEADLINE_EXCEEDED
    comes from remora, long before the client would give up by itself."""
    srv = start_grpc_server(ctx)
    px = start_grpc_proxy(ctx, srv, {"max_stream_duration": {"grpc_timeout_header_max": "0.3s"}})
    r = grpc_call(px.port(0), "unary", metadata={"x-delay-ms": "5000"}, deadline_ms=10000)
    assert r["code"] == DEADLINE_EXCEEDED, r
    assert 250 <= r["elapsed_ms"] < 3000, r


def test_grpc_proxy_retry_on_unavailable(ctx):
    srv = start_grpc_server(ctx)
    px = start_grpc_proxy(ctx, srv, {"retry_policy": {"retry_on": "unavailable",
                                                      "num_retries": 2}})
    r = grpc_call(px.port(0), "unary", messages=[{"text": "again"}],
                  metadata={"x-attempt-key": "r1", "x-fail-first": "1"})
    assert r["code"] == OK and r["messages"][0]["text"] == "again", r
    assert srv.stats()["attempts"] == {"r1": 2}
    # Other codes are not retried by retry_on: unavailable.
    r = grpc_call(px.port(0), "unary", metadata={"x-attempt-key": "r2", "x-fail-first": "1",
                                                 "x-fail-code": str(INTERNAL)})
    assert r["code"] == INTERNAL and r["details"] == "failed by x-fail-code", r
    # More failures than retries: the last UNAVAILABLE reaches the client after 3 attempts.
    r = grpc_call(px.port(0), "unary", metadata={"x-attempt-key": "r3", "x-fail-first": "5"})
    assert r["code"] == UNAVAILABLE, r
    st = wait_for(lambda: (s := srv.stats())["attempts"].get("r3") == 3 and s,
                  what="three attempts of r3")
    assert st["attempts"]["r2"] == 1
