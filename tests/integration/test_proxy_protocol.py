"""The proxy_protocol listener filter (HAProxy's PROXY protocol v1 and v2 in front of the
connection): the header's source and destination become the connection's remote and local
addresses (x-forwarded-for with use_remote_address, %DOWNSTREAM_REMOTE_ADDRESS%,
%DOWNSTREAM_LOCAL_ADDRESS%), the socket's peer stays the direct remote address; a malformed or
missing header closes the connection (proxy_proto.* counters), unless
allow_requests_without_proxy_protocol. Real processes on loopback: remora, the test upstream
(which echoes the request headers), python3 clients writing the headers by hand, and HAProxy
(send-proxy / send-proxy-v2) as a real sender."""

import json
import shutil
import socket
import struct
import subprocess

from lib import (Skip, bootstrap_dict, free_port, parse_responses, recv_until_closed, slow_factor,
                 wait_closed, wait_for)
from proxyutil import file_access_log, header_values, start_proxy, stats, wait_log
from test_rbac import validate

PP_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"
FMT = ("%REQ(:PATH)% remote=%DOWNSTREAM_REMOTE_ADDRESS% direct=%DOWNSTREAM_DIRECT_REMOTE_ADDRESS% "
       "local=%DOWNSTREAM_LOCAL_ADDRESS%\n")
SIG2 = b"\r\n\r\n\x00\r\nQUIT\n"


def pp_filter(**cfg):
    return {"name": "envoy.filters.listener.proxy_protocol",
            "typed_config": dict({"@type": PP_TYPE}, **cfg)}


def setup(ctx, pp=None, **listener):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    lx = {"listener_filters": [pp_filter(**(pp or {}))], "listener_filters_timeout": "0.5s"}
    lx.update(listener)
    r = start_proxy(ctx, {"c": [u]}, listener_extra=lx,
                    hcm_extra={"use_remote_address": True},
                    access_log=[file_access_log(log, FMT)])
    return r, log


def v2_header(cmd, fam, body):
    return SIG2 + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body)) + body


def v2_inet(src, sport, dst, dport, tlvs=b""):
    return v2_header(1, 0x11, socket.inet_aton(src) + socket.inet_aton(dst)
                     + struct.pack(">HH", sport, dport) + tlvs)


def v2_inet6(src, sport, dst, dport):
    return v2_header(1, 0x21, socket.inet_pton(socket.AF_INET6, src)
                     + socket.inet_pton(socket.AF_INET6, dst) + struct.pack(">HH", sport, dport))


def send(port, head, path="/", pieces=1):
    """Sends `head` then an echo request for `path` (the whole in `pieces` writes); returns
    (the response or None when closed without one, the client's own port)."""
    data = head + (f"GET {path} HTTP/1.1\r\nhost: x\r\nx-upstream-echo: 1\r\n"
                   "connection: close\r\n\r\n").encode()
    s = socket.create_connection(("127.0.0.1", port), timeout=5 * slow_factor())
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        step = max(1, len(data) // pieces)
        try:
            for i in range(0, len(data), step):
                s.sendall(data[i:i + step])
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            out = recv_until_closed(s, 5 * slow_factor())
        except ConnectionResetError:
            out = b""
        return (parse_responses(out)[0] if out else None), s.getsockname()[1]
    finally:
        s.close()


def stat_end(r, suffix, prefix=""):
    """The value of the one stat whose name starts with `prefix` and is or ends with `suffix`."""
    st = stats(r)
    hits = [v for k, v in st.items()
            if k.startswith(prefix) and (k == suffix or k.endswith("." + suffix))]
    assert len(hits) == 1, (suffix, sorted(st))
    return hits[0]


def test_v1_and_v2_headers_set_remote_and_local_addresses(ctx):
    r, log = setup(ctx)
    port = r.port()
    # v1 TCP4, the header in several writes (the filter waits for the whole line)
    resp, cport = send(port, b"PROXY TCP4 192.0.2.7 10.9.8.7 40001 8080\r\n", "/v1", pieces=7)
    assert resp is not None and resp.status == 200, resp
    assert header_values(resp.json(), "x-forwarded-for") == ["192.0.2.7"]
    line = wait_log(log, lambda ln: ln.startswith("/v1 "))
    assert line == f"/v1 remote=192.0.2.7:40001 direct=127.0.0.1:{cport} local=10.9.8.7:8080"
    # v2 PROXY over IPv6, with a TLV (skipped)
    resp, cport = send(port, v2_inet6("2001:db8::7", 443, "2001:db8::1", 80), "/v2")
    assert resp is not None and resp.status == 200, resp
    assert header_values(resp.json(), "x-forwarded-for") == ["2001:db8::7"]
    line = wait_log(log, lambda ln: ln.startswith("/v2 "))
    assert line == f"/v2 remote=[2001:db8::7]:443 direct=127.0.0.1:{cport} local=[2001:db8::1]:80"
    resp, _ = send(port, v2_inet("198.51.100.1", 1, "10.0.0.1", 2, tlvs=b"\x04\x00\x02ab"), "/t")
    assert header_values(resp.json(), "x-forwarded-for") == ["198.51.100.1"]
    # v2 LOCAL and v1 UNKNOWN: the socket's own addresses
    resp, cport = send(port, v2_header(0, 0, b""), "/local")
    assert header_values(resp.json(), "x-forwarded-for") == ["127.0.0.1"]
    line = wait_log(log, lambda ln: ln.startswith("/local "))
    assert line == (f"/local remote=127.0.0.1:{cport} direct=127.0.0.1:{cport} "
                    f"local=127.0.0.1:{port}")
    resp, _ = send(port, b"PROXY UNKNOWN 1.2.3.4\r\n", "/unknown")
    assert header_values(resp.json(), "x-forwarded-for") == ["127.0.0.1"]
    assert stat_end(r, "proxy_proto.versions.v1.found") == 2
    assert stat_end(r, "proxy_proto.versions.v2.found") == 3
    assert stat_end(r, "downstream_cx_proxy_proto_error") == 0


def test_bad_or_missing_header_closes(ctx):
    r, _ = setup(ctx)
    port = r.port()
    for head in (b"PROXY TCP4 192.0.2.7 10.9.8.7 40001\r\n",
                 b"PROXY TCP4 999.0.2.7 10.9.8.7 1 2\r\n",
                 b"PROXY " + b"A" * 200):
        assert send(port, head)[0] is None, head
    assert send(port, v2_header(1, 0x31, b"\0" * 216))[0] is None  # AF_UNIX
    assert send(port, SIG2 + b"\x21\x11\xff\xff")[0] is None  # over the length cap
    assert send(port, b"")[0] is None  # no header at all
    assert stat_end(r, "proxy_proto.versions.v1.error") == 3
    assert stat_end(r, "proxy_proto.versions.v2.error") == 2
    assert stat_end(r, "proxy_proto.not_found_disallowed") == 1
    assert stat_end(r, "downstream_cx_proxy_proto_error") == 6
    assert stat_end(r, "downstream_cx_total", "listener.") == 0  # none became a connection
    # a client that sends only part of a header is closed at listener_filters_timeout
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    c.sendall(b"PROXY TCP4 1.2")
    wait_closed(c, 5)
    c.close()
    assert stat_end(r, "downstream_pre_cx_timeout", "listener.") == 1
    wait_for(lambda: stat_end(r, "downstream_pre_cx_active", "listener.") == 0, 2)


def test_allow_requests_without_proxy_protocol_and_disallowed_versions(ctx):
    r, log = setup(ctx, pp={"allow_requests_without_proxy_protocol": True,
                            "disallowed_versions": ["V1"]})
    port = r.port()
    resp, cport = send(port, b"", "/plain")
    assert resp is not None and resp.status == 200, resp
    assert header_values(resp.json(), "x-forwarded-for") == ["127.0.0.1"]
    resp, _ = send(port, v2_inet("192.0.2.9", 9, "10.0.0.9", 99), "/v2")
    assert header_values(resp.json(), "x-forwarded-for") == ["192.0.2.9"]
    # V1 is disallowed: with allow_requests_without_proxy_protocol its line is not a header
    # at all but the request's first bytes, which the HTTP codec refuses (400)
    resp, _ = send(port, b"PROXY TCP4 192.0.2.7 10.9.8.7 40001 8080\r\n", "/v1")
    assert resp is not None and resp.status == 400, resp
    assert stat_end(r, "proxy_proto.not_found_allowed") == 2
    assert stat_end(r, "proxy_proto.versions.v2.found") == 1
    assert stat_end(r, "proxy_proto.versions.v1.found") == 0
    r.stop(5)
    # without allow_requests_without_proxy_protocol a disallowed version closes, counted
    r, _ = setup(ctx, pp={"disallowed_versions": ["V2"]})
    assert send(r.port(), v2_inet("192.0.2.9", 9, "10.0.0.9", 99))[0] is None
    assert stat_end(r, "proxy_proto.versions.v2.disallowed") == 1
    resp, _ = send(r.port(), b"PROXY TCP4 192.0.2.7 10.9.8.7 40001 8080\r\n")
    assert header_values(resp.json(), "x-forwarded-for") == ["192.0.2.7"]


def test_unsupported_fields_are_rejected_with_their_path(ctx):
    base = "static_resources.listeners[0].listener_filters[0].typed_config"
    for field, value in (("rules", [{"tlv_type": 5, "on_tlv_present": {"key": "k"}}]),
                         ("pass_through_tlvs", {"match_type": "INCLUDE_ALL"}),
                         ("stat_prefix", "x")):
        cfg = bootstrap_dict(clusters={"c": [1]})
        cfg["static_resources"]["listeners"][0]["listener_filters"] = [
            pp_filter(**{field: value})]
        rc, out = validate(ctx, cfg)
        assert rc != 0 and f"{base}.{field}" in out, out
    cfg = bootstrap_dict(clusters={"c": [1]})
    cfg["static_resources"]["listeners"][0]["listener_filters"] = [
        pp_filter(allow_requests_without_proxy_protocol=True, disallowed_versions=["V1"])]
    rc, out = validate(ctx, cfg)
    assert rc == 0, out


def test_haproxy_send_proxy_v1_and_v2(ctx):
    """HAProxy in TCP mode in front of remora, as an NLB would be: remora sees the client's
    own address and port (the access log), the socket's peer is HAProxy."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        raise Skip("haproxy not installed")
    r, log = setup(ctx)
    fronts = {}
    lines = ["global", "  maxconn 64", "defaults", "  mode tcp", "  timeout connect 5s",
             "  timeout client 10s", "  timeout server 10s"]
    for name, opt in (("v1", "send-proxy"), ("v2", "send-proxy-v2")):
        fronts[name] = free_port()
        lines += [f"listen {name}", f"  bind 127.0.0.1:{fronts[name]}",
                  f"  server remora 127.0.0.1:{r.port()} {opt}"]
    cfg = ctx.tmp / "haproxy.cfg"
    cfg.write_text("\n".join(lines) + "\n")
    subprocess.run([haproxy, "-c", "-f", str(cfg)], check=True, capture_output=True, timeout=10)
    ctx.spawn("haproxy", [haproxy, "-db", "-f", str(cfg)])

    def up(p):
        try:
            socket.create_connection(("127.0.0.1", p), timeout=0.2).close()
            return True
        except OSError:
            return False
    for name, p in fronts.items():
        wait_for(lambda p=p: up(p), 5, "haproxy listening")
        resp, cport = send(p, b"", f"/{name}")
        assert resp is not None and resp.status == 200, resp
        assert header_values(resp.json(), "x-forwarded-for") == ["127.0.0.1"]
        line = wait_log(log, lambda ln, n=name: ln.startswith(f"/{n} "))
        # the client's port (HAProxy's own connection to remora has another one)
        assert line.startswith(f"/{name} remote=127.0.0.1:{cport} direct=127.0.0.1:"), line
        assert not line.startswith(f"/{name} remote=127.0.0.1:{cport} direct=127.0.0.1:{cport} ")
        assert line.endswith(f" local=127.0.0.1:{p}"), line
    assert stat_end(r, "proxy_proto.versions.v1.found") >= 1
    assert stat_end(r, "proxy_proto.versions.v2.found") >= 1


def test_rbac_remote_ip_is_the_headers_direct_remote_ip_the_socket(ctx):
    """HTTP RBAC: remote_ip sees the header's source, direct_remote_ip the socket's peer."""
    u = ctx.start_upstream()
    pol = {"action": "DENY", "policies": {
        "blocked-client": {"permissions": [{"any": True}], "principals": [
            {"remote_ip": {"address_prefix": "192.0.2.0", "prefix_len": 24}}]},
        "direct-not-loopback": {"permissions": [{"any": True}], "principals": [
            {"not_id": {"direct_remote_ip": {"address_prefix": "127.0.0.0", "prefix_len": 8}}}]}}}
    d = bootstrap_dict(clusters={"c": [u.port]}, http_filters=[
        {"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": pol}}])
    d["static_resources"]["listeners"][0]["listener_filters"] = [pp_filter()]
    r = ctx.start_remora(d)
    resp, _ = send(r.port(), b"PROXY TCP4 192.0.2.7 10.9.8.7 40001 8080\r\n")
    assert resp.status == 403, resp  # remote_ip: the header's source
    resp, _ = send(r.port(), b"PROXY TCP4 198.51.100.7 10.9.8.7 40001 8080\r\n")
    assert resp.status == 200, resp  # direct_remote_ip: still the loopback socket peer


def test_filter_chain_match_on_the_headers_addresses(ctx):
    """source_prefix_ranges and destination_port match the header's addresses,
    direct_source_prefix_ranges the socket's peer (Envoy's filter chain manager runs after
    the listener filters)."""
    u = ctx.start_upstream()
    d = bootstrap_dict(clusters={"c": [u.port]})
    lst = d["static_resources"]["listeners"][0]
    lst["listener_filters"] = [pp_filter()]
    proto = lst["filter_chains"][0]

    def chain(name, match):
        c = json_copy(proto)
        c["filter_chain_match"] = match
        hcm = c["filters"][0]["typed_config"]
        hcm["route_config"]["virtual_hosts"][0]["routes"] = [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {
                "inline_string": name}}}]
        return c
    def ranges(ip, n):
        return [{"address_prefix": ip, "prefix_len": n}]
    lst["filter_chains"] = [
        chain("src", {"direct_source_prefix_ranges": ranges("127.0.0.1", 32),
                      "source_prefix_ranges": ranges("192.0.2.0", 24)}),
        chain("other", {"direct_source_prefix_ranges": ranges("127.0.0.1", 32),
                        "source_prefix_ranges": ranges("198.51.100.0", 24)}),
        # would take 192.0.2.7 at the direct source level if that were the header's address
        chain("wrong", {"direct_source_prefix_ranges": ranges("192.0.2.0", 24)}),
        chain("port", {"destination_port": 8443}),
    ]
    r = ctx.start_remora(d)
    resp, _ = send(r.port(), b"PROXY TCP4 192.0.2.7 10.9.8.7 40001 8080\r\n")
    assert resp.body == b"src", resp
    resp, _ = send(r.port(), b"PROXY TCP4 198.51.100.7 10.9.8.7 40001 8080\r\n")
    assert resp.body == b"other", resp
    resp, _ = send(r.port(), b"PROXY TCP4 198.51.100.7 10.9.8.7 40001 8443\r\n")
    assert resp.body == b"port", resp


def json_copy(o):
    return json.loads(json.dumps(o))
