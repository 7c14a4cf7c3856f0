"""HCM http_protocol_options.enable_trailers: response trailers reach HTTP/1.1 clients as the
trailer section of a chunked body (from HTTP/2 upstreams and from HTTP/1.1 chunked ones), as
Envoy's HTTP/1 encoder does; a response framed by content-length has no room for them and ends
as usual; without the option they are dropped (Envoy's default). The other
http_protocol_options fields are rejected with their path."""

from lib import HttpConn
from proxyutil import proxy_config, start_proxy, stats
from test_h2_upstream import _ChunkedTrailerServer, h2_cluster
from test_proxy_lifecycle import _validate

ON = {"http_protocol_options": {"enable_trailers": True}}
TRAILERS = {"x-upstream-trailer": "grpc-status: 0", "x-upstream-body-size": "10"}


def _get(port, path, headers):
    c = HttpConn(port)
    try:
        return c.request("GET", path, headers)
    finally:
        c.close()


def test_enable_trailers_h2_upstream_to_h1_client(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(), hcm_extra=ON)
    # no content-length from the upstream: chunked towards the client, trailers at its end
    hs = dict(TRAILERS, **{"x-upstream-chunked": "1"})
    c = HttpConn(r.port())
    resp = c.request("GET", "/chunked", hs)
    assert resp.status == 200 and resp.chunked and resp.body == b"abcdefghij", resp
    assert resp.trailers == [("grpc-status", "0")], resp.trailers
    # a response without a body: the trailer section follows the empty body
    resp = c.request("GET", "/empty", {"x-upstream-trailer": "grpc-message: fine",
                                       "x-upstream-body-size": "0", "x-upstream-chunked": "1"})
    assert resp.status == 200 and resp.body == b"", resp
    assert resp.trailers == [("grpc-message", "fine")], (resp.chunked, resp.trailers)
    # the connection is still in sync after a trailer section
    resp = c.request("GET", "/after")
    assert resp.status == 200 and resp.body == b"upstream\n", resp
    c.close()
    # content-length framing: no trailers, the body is whole
    resp = _get(r.port(), "/cl", TRAILERS)
    assert not resp.chunked and resp.body == b"abcdefghij" and resp.trailers == [], resp
    assert stats(r)["cluster.c.upstream_rq_200"] == 4


def test_enable_trailers_h1_upstream_chunked_trailers(ctx):
    srv = _ChunkedTrailerServer(ctx)
    r = start_proxy(ctx, {"c": [srv.port]}, hcm_extra=ON)
    resp = _get(r.port(), "/h1", None)
    assert resp.status == 200 and resp.chunked and resp.body == b"body", resp
    assert resp.trailers == [("x-up-trailer", "yes"), ("grpc-status", "0")], resp.trailers


def test_trailers_dropped_without_enable_trailers(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, cluster_extra=h2_cluster(),
                    hcm_extra={"http_protocol_options": {"enable_trailers": False}})
    resp = _get(r.port(), "/off", dict(TRAILERS, **{"x-upstream-chunked": "1"}))
    assert resp.chunked and resp.body == b"abcdefghij" and resp.trailers == [], resp


def test_http_protocol_options_other_fields_rejected(ctx):
    base = ("static_resources.listeners[0].filter_chains[0].filters[0].typed_config."
            "http_protocol_options")
    for field, value in (("accept_http_10", True), ("allow_chunked_length", True),
                         ("default_host_for_http_10", "h")):
        cfg = proxy_config({"c": [9]}, hcm_extra={"http_protocol_options": {
            "enable_trailers": True, field: value}})
        p = _validate(ctx, cfg, f"{field}.yaml")
        out = p.stdout + p.stderr
        assert p.returncode == 1 and f"{base}.{field}: not supported" in out, out
    p = _validate(ctx, proxy_config({"c": [9]}, hcm_extra=ON), "ok.yaml")
    assert p.returncode == 0, p.stdout + p.stderr
