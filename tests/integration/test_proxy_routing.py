"""Routing through remora: virtual host domains, path matching, header matchers, direct
responses, rewrites, header edits at each level, no-route, and load balancing."""

import select
import socket

from lib import HttpConn, build_request, http_request, slow_factor
from proxyutil import (direct, echo, file_access_log, header_values, log_fields, proxy_config,
                       route, start_proxy, stats, wait_log)


def _body(port, path="/", host=None, headers=None):
    hs = list((headers or {}).items())
    if host is not None:
        hs.insert(0, ("Host", host))
    r = http_request(port, "GET", path, headers=hs)
    return r.status, r.body.decode("latin-1")


def test_virtual_host_domain_matching(ctx):
    """Envoy's order: exact, then the longest `*suffix`, then the longest `prefix*`, then `*`;
    the Host header is matched without regard to case."""
    u = ctx.start_upstream()

    def vh(name, domains):
        return {"name": name, "domains": domains, "routes": [direct("/", 200, name)]}

    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=[
        vh("wild", ["*"]),
        vh("prefix", ["prefix.*"]),
        vh("longprefix", ["prefix.long.*"]),
        vh("suffix", ["*.suffix.com"]),
        vh("longsuffix", ["*.b.suffix.com"]),
        vh("exact", ["exact.com", "exact.suffix.com", "other.exact:8080"]),
    ])
    p = r.port()
    cases = {
        "exact.com": "exact",
        "EXACT.Com": "exact",
        "exact.suffix.com": "exact",         # exact beats suffix
        "other.exact:8080": "exact",
        "a.suffix.com": "suffix",
        "x.y.suffix.com": "suffix",
        "x.b.suffix.com": "longsuffix",      # the longest suffix wins
        "suffix.com": "wild",                # "*.suffix.com" needs something before the dot
        "prefix.org": "prefix",
        "prefix.long.org": "longprefix",     # the longest prefix wins
        "prefix.suffix.com": "suffix",       # suffix beats prefix
        "nothing.example": "wild",
    }
    got = {host: _body(p, host=host) for host in cases}
    assert got == {h: (200, v) for h, v in cases.items()}, got


def test_no_matching_virtual_host_is_404(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, virtual_hosts=[
        {"name": "only", "domains": ["only.example"], "routes": [route("/", "c")]}])
    assert _body(r.port(), host="only.example") == (200, "upstream\n")
    assert _body(r.port(), host="other.example")[0] == 404
    assert u.stats()["requests"] == 1


def test_prefix_path_and_case_insensitive_matching(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[
        {"match": {"path": "/exact"}, "direct_response": {"status": 200, "body": {
            "inline_string": "path"}}},
        direct("/pre", 200, "prefix"),
        {"match": {"prefix": "/CaseI", "case_sensitive": False},
         "direct_response": {"status": 200, "body": {"inline_string": "nocase"}}},
        {"match": {"path": "/Exact2", "case_sensitive": False},
         "direct_response": {"status": 200, "body": {"inline_string": "nocase-path"}}},
        direct("/", 200, "default"),
    ])
    p = r.port()
    cases = {
        "/exact": "path",
        "/exact?x=1": "path",               # the query is not part of the path
        "/exact/more": "default",           # a path match is exact
        "/Exact": "default",                # and case sensitive by default
        "/pre": "prefix",
        "/prefix/x": "prefix",
        "/PRE": "default",
        "/casei": "nocase",
        "/CASEINSENSITIVE/x": "nocase",
        "/exact2": "nocase-path",
        "/EXACT2?q": "nocase-path",
        "/": "default",
    }
    got = {path: _body(p, path)[1] for path in cases}
    assert got == cases, got


def test_header_matchers(ctx):
    u = ctx.start_upstream()

    def hm(prefix, name, body, **m):
        return direct(prefix, 200, body, headers=[dict(name=name, **m)])

    r = start_proxy(ctx, {"c": [u]}, routes=[
        hm("/m/exact", "x-h", "exact", string_match={"exact": "Yes"}),
        hm("/m/nocase", "x-h", "nocase", string_match={"exact": "yes", "ignore_case": True}),
        hm("/m/prefix", "x-h", "prefix", string_match={"prefix": "ab"}),
        hm("/m/suffix", "x-h", "suffix", string_match={"suffix": "yz"}),
        hm("/m/contains", "x-h", "contains", string_match={"contains": "mid"}),
        hm("/m/present", "x-h", "present", present_match=True),
        hm("/m/absent", "x-h", "absent", present_match=False),
        hm("/m/invert", "x-h", "invert", string_match={"exact": "no"}, invert_match=True),
        hm("/m/bare", "x-h", "bare"),  # no specifier: "the header is present"
        direct("/m/two", 200, "two", headers=[
            {"name": "x-a", "string_match": {"exact": "1"}},
            {"name": "x-b", "string_match": {"exact": "2"}}]),
        direct("/", 200, "none"),
    ])
    p = r.port()
    cases = [
        ("/m/exact", {"x-h": "Yes"}, "exact"),
        ("/m/exact", {"x-h": "yes"}, "none"),
        ("/m/exact", {"x-h": "Yes!"}, "none"),
        ("/m/exact", {}, "none"),
        ("/m/nocase", {"x-h": "YES"}, "nocase"),
        ("/m/prefix", {"x-h": "abc"}, "prefix"),
        ("/m/prefix", {"x-h": "xab"}, "none"),
        ("/m/suffix", {"x-h": "xyz"}, "suffix"),
        ("/m/suffix", {"x-h": "yzx"}, "none"),
        ("/m/contains", {"x-h": "amidb"}, "contains"),
        ("/m/contains", {"x-h": "mi d"}, "none"),
        ("/m/present", {"x-h": ""}, "present"),
        ("/m/present", {}, "none"),
        ("/m/absent", {}, "absent"),
        ("/m/absent", {"x-h": "v"}, "none"),
        ("/m/invert", {"x-h": "yes"}, "invert"),
        ("/m/invert", {"x-h": "no"}, "none"),
        ("/m/bare", {"x-h": "anything"}, "bare"),
        ("/m/bare", {}, "none"),
        ("/m/two", {"x-a": "1", "x-b": "2"}, "two"),
        ("/m/two", {"x-a": "1"}, "none"),
        ("/m/two", {"x-a": "1", "x-b": "3"}, "none"),
    ]
    wrong = []
    for path, hs, want in cases:
        status, body = _body(p, path, headers=hs)
        if (status, body) != (200, want):
            wrong.append((path, hs, want, status, body))
    assert not wrong, wrong


def test_direct_response(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[
        direct("/teapot", 418, "short and stout\n"),
        direct("/empty", 503),
        direct("/moved", 301, ""),
    ])
    resp = http_request(r.port(), path="/teapot")
    assert resp.status == 418 and resp.body == b"short and stout\n"
    assert resp.header("content-length") == str(len(b"short and stout\n"))
    resp = http_request(r.port(), path="/empty")
    assert resp.status == 503 and resp.body == b""
    assert http_request(r.port(), path="/moved").status == 301
    # Keep-alive after a direct response.
    with HttpConn(r.port()) as c:
        assert c.request(path="/teapot").status == 418
        assert c.request(path="/teapot").body == b"short and stout\n"
    assert u.stats()["requests"] == 0


def test_prefix_rewrite_and_host_rewrite(ctx):
    u = ctx.start_upstream()
    r = start_proxy(ctx, {"c": [u]}, routes=[
        route("/api/", "c", prefix_rewrite="/v2/"),
        route("/strip", "c", prefix_rewrite="/"),
        route("/host", "c", host_rewrite_literal="rewritten.example"),
        route("/", "c"),
    ])
    j = echo(r.port(), path="/api/users?id=7")
    assert j["path"] == "/v2/users?id=7"
    j = echo(r.port(), path="/strip/x")
    assert j["path"] in ("//x", "/x")
    j = echo(r.port(), path="/host/a", host="original.example")
    assert header_values(j, "host") == ["rewritten.example"] and j["path"] == "/host/a"
    j = echo(r.port(), path="/plain", host="original.example")
    assert header_values(j, "host") == ["original.example"] and j["path"] == "/plain"


def _edits(level):
    return {
        "request_headers_to_add": [
            {"header": {"key": f"x-{level}-req", "value": level}},
            {"header": {"key": "x-overwrite", "value": level},
             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
        ],
        "request_headers_to_remove": [f"x-drop-{level}"],
        "response_headers_to_add": [{"header": {"key": f"x-{level}-resp", "value": level}}],
        "response_headers_to_remove": [f"x-resp-drop-{level}"],
    }


def test_header_edits_at_route_vhost_and_route_config(ctx):
    u = ctx.start_upstream()
    rt = route("/", "c")
    rt.update(_edits("route"))
    rt["request_headers_to_add"].append(
        {"header": {"key": "x-absent-only", "value": "proxy"},
         "append_action": "ADD_IF_ABSENT"})
    vh = {"name": "vh", "domains": ["*"], "routes": [rt]}
    vh.update(_edits("vhost"))
    d = proxy_config({"c": [u.port]}, virtual_hosts=[vh])
    rc = d["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"]["route_config"]
    rc.update(_edits("rc"))
    r = ctx.start_remora(d)
    with HttpConn(r.port()) as c:
        resp = c.request(path="/e", headers=[
            ("x-upstream-echo", "1"), ("x-drop-route", "1"), ("x-drop-vhost", "1"),
            ("x-drop-rc", "1"), ("x-keep", "1"), ("x-overwrite", "client"),
            ("x-absent-only", "client"),
            ("x-upstream-response-header", "x-resp-drop-route: 1"),
            ("x-upstream-response-header", "x-resp-drop-vhost: 1"),
            ("x-upstream-response-header", "x-resp-drop-rc: 1"),
            ("x-upstream-response-header", "x-resp-keep: 1")])
    assert resp.status == 200
    j = resp.json()
    for level in ("route", "vhost", "rc"):
        assert header_values(j, f"x-{level}-req") == [level], (level, j["headers"])
        assert header_values(j, f"x-drop-{level}") == [], (level, j["headers"])
        assert resp.header(f"x-{level}-resp") == level, (level, resp.headers)
        assert resp.header(f"x-resp-drop-{level}") is None, (level, resp.headers)
    assert header_values(j, "x-keep") == ["1"]
    assert resp.header("x-resp-keep") == "1"
    # OVERWRITE at every level: Envoy evaluates route, then virtual host, then route
    # configuration (most_specific_header_mutations_wins false), so the last one stands.
    assert header_values(j, "x-overwrite") == ["rc"], j["headers"]
    assert header_values(j, "x-absent-only") == ["client"]


def test_no_route_is_404_with_nr_flag(ctx):
    u = ctx.start_upstream()
    log = ctx.tmp / "access.log"
    r = start_proxy(ctx, {"c": [u]}, routes=[route("/only", "c")],
                    access_log=[file_access_log(log)])
    resp = http_request(r.port(), path="/elsewhere")
    assert resp.status == 404
    line = wait_log(log, lambda ln: "/elsewhere" in ln)
    f = log_fields(line)
    assert (f["code"], f["flags"], f["upstream"]) == ("404", "NR", "-"), line
    assert http_request(r.port(), path="/only/x").status == 200
    assert u.stats()["requests"] == 1
    assert stats(r)["http.ingress_http.no_route"] == 1


def _names(port, n):
    out = []
    with HttpConn(port) as c:
        for _ in range(n):
            resp = c.request()
            assert resp.status == 200, resp
            out.append(resp.header("x-upstream-name"))
    return out


def test_round_robin_alternates(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = start_proxy(ctx, {"c": [a, b]})
    names = _names(r.port(), 10)
    assert set(names) == {"a", "b"}, names
    assert all(x != y for x, y in zip(names, names[1:])), f"round robin did not alternate: {names}"
    # New connections continue the rotation.
    more = [http_request(r.port()).header("x-upstream-name") for _ in range(4)]
    assert all(x != y for x, y in zip(names[-1:] + more, more)), (names, more)


def test_least_request_and_random_use_both_endpoints(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    for policy in ("LEAST_REQUEST", "RANDOM"):
        a.reset_stats()
        b.reset_stats()
        r = start_proxy(ctx, {"c": [a, b]}, lb_policy=policy)
        names = _names(r.port(), 200)
        na = names.count("a")
        assert 40 <= na <= 160, f"{policy}: {na} of 200 requests to a"
        assert a.stats()["requests"] + b.stats()["requests"] == 200
        r.stop(5)


def test_least_request_avoids_the_busy_endpoint(ctx):
    """LEAST_REQUEST (two random choices, keep the one with fewer active requests): endpoint a
    accepts connections but never answers, so every request sent there stays active. Then a
    can win only when both choices fall on it (~1/4 of picks), against ~1/2 for RANDOM or
    ROUND_ROBIN."""
    a = socket.socket()
    ctx.sockets.append(a)
    a.bind(("127.0.0.1", 0))
    a.listen(256)
    a.setblocking(False)
    b = ctx.start_upstream(name="b")
    r = start_proxy(ctx, {"c": [a.getsockname()[1], b]}, lb_policy="LEAST_REQUEST")
    n, to_a = 160, 0
    for i in range(n):
        c = ctx.connect(r.port())
        c.sendall(build_request(path=f"/lr{i}"))
        # Either b answers, or the proxy connects to a: whichever comes first says where it
        # went.
        ready, _, _ = select.select([c, a], [], [], 3 * slow_factor())
        assert ready, f"request {i} went nowhere"
        if a in ready:
            conn, _ = a.accept()
            ctx.sockets.append(conn)  # held open, never answered: the request stays active
            to_a += 1
        else:
            assert c.recv(100).startswith(b"HTTP/1.1 200")
    # Expected ~40 (sd ~5.5); RANDOM or ROUND_ROBIN give ~80.
    assert 1 <= to_a <= 60, f"LEAST_REQUEST sent {to_a} of {n} requests to the endpoint " \
                            "that has every one of them still active"


def _weighted_config(a, b, wa, wb, policy):
    d = proxy_config({"c": [a.port, b.port]}, lb_policy=policy)
    eps = d["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    eps[0]["load_balancing_weight"] = wa
    eps[1]["load_balancing_weight"] = wb
    return d


def test_random_endpoint_weights_3_to_1(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = ctx.start_remora(_weighted_config(a, b, 3, 1, "RANDOM"))
    n = 2000
    with HttpConn(r.port()) as c:
        for _ in range(n):
            assert c.request().status == 200
    na, nb = a.stats()["requests"], b.stats()["requests"]
    assert na + nb == n
    # Binomial sd at n=2000, p=0.75 is ~1%: 3.5 sd either side.
    assert abs(na / n - 0.75) < 0.035, f"a got {na} of {n} ({na / n:.3f}), want ~0.75"


def test_round_robin_endpoint_weights(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    r = ctx.start_remora(_weighted_config(a, b, 3, 1, "ROUND_ROBIN"))
    names = _names(r.port(), 400)
    na = names.count("a")
    assert 270 <= na <= 330, f"weighted round robin sent {na} of 400 to the weight-3 endpoint"
