"""Advanced routing and load balancing through remora: weighted_clusters (a 90/10 canary split
over 10,000 requests), safe_regex routes and header matchers (including a pathological pattern),
regex_rewrite, cluster_header (503 NC), query parameter and range matchers, and hash_policy
stickiness through RING_HASH and MAGLEV clusters."""

import threading
import time
from collections import Counter

from lib import HttpConn, http_request, slow_factor, wait_for
from proxyutil import echo, file_access_log, header_values, proxy_config, stats, wait_log


def _cluster(name, ports, lb_policy="ROUND_ROBIN", **extra):
    c = {
        "name": name,
        "connect_timeout": "1s",
        "type": "STATIC",
        "lb_policy": lb_policy,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": p}}}}
            for p in ports]}]},
    }
    c.update(extra)
    return c


def _config(clusters, routes, access_log=None):
    """A bootstrap with `clusters` (cluster dicts) and `routes` on one virtual host."""
    first = clusters[0]["name"]
    d = proxy_config({first: []}, routes=routes, access_log=access_log)
    d["static_resources"]["clusters"] = clusters
    return d


def _get(port, path="/", headers=None):
    r = http_request(port, "GET", path, headers=list((headers or {}).items()))
    return r.status, r.header("x-upstream-name"), r


def test_weighted_clusters_90_10_over_10000_requests(ctx):
    """The canary split: weights 90/10 (and a weight-0 entry that gets nothing) over 10,000
    requests on keep-alive connections from several concurrent clients land within one
    percentage point; %UPSTREAM_CLUSTER% names the picked cluster, and the canary entry's
    header edits apply only to requests sent to it."""
    stable = ctx.start_upstream(name="stable")
    canary = ctx.start_upstream(name="canary")
    off = ctx.start_upstream(name="off")
    log = ctx.tmp / "access.log"
    route = {"match": {"prefix": "/"}, "route": {"weighted_clusters": {
        "total_weight": 100,
        "clusters": [
            {"name": "stable", "weight": 90},
            {"name": "off", "weight": 0},
            {"name": "canary", "weight": 10,
             "request_headers_to_add": [{"header": {"key": "x-canary", "value": "yes"}}],
             "response_headers_to_add": [{"header": {"key": "x-served-by", "value": "canary"}}]},
        ]}}}
    cfg = _config([_cluster("stable", [stable.port]), _cluster("canary", [canary.port]),
                   _cluster("off", [off.port])], [route],
                  access_log=[file_access_log(log, "%UPSTREAM_CLUSTER% %RESP(X-UPSTREAM-NAME)%\n")])
    r = ctx.start_remora(cfg)

    n_clients, per_client = 8, 1250
    counts = Counter()
    errors = []
    lock = threading.Lock()

    def client():
        mine = Counter()
        try:
            with HttpConn(r.port()) as c:
                for _ in range(per_client):
                    resp = c.request()
                    if resp.status != 200:
                        raise AssertionError(f"status {resp.status}: {resp!r}")
                    name = resp.header("x-upstream-name")
                    if (resp.header("x-served-by") == "canary") != (name == "canary"):
                        raise AssertionError(f"x-served-by on a {name} response")
                    mine[name] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
        with lock:
            counts.update(mine)

    threads = [threading.Thread(target=client) for _ in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120 * slow_factor())
    assert not errors, errors[:3]
    total = n_clients * per_client
    assert sum(counts.values()) == total, counts
    assert counts["off"] == 0, counts
    share = counts["canary"] / total
    assert abs(share - 0.10) <= 0.01, f"canary got {counts['canary']} of {total} ({share:.4f})"
    assert stable.stats()["requests"] == counts["stable"]
    assert canary.stats()["requests"] == counts["canary"]
    assert off.stats()["requests"] == 0

    # The access log names the cluster each request went to.
    def logged():
        lines = log.read_text().splitlines() if log.exists() else []
        return len(lines) >= total and lines
    lines = wait_for(logged, 10, "10,000 access log lines")
    per_cluster = Counter()
    for line in lines:
        cluster, upstream = line.split(" ")
        assert cluster == upstream, line
        per_cluster[cluster] += 1
    assert per_cluster == counts, (per_cluster, counts)

    # Only the canary's requests carry its request header.
    with HttpConn(r.port()) as c:
        seen = set()
        for _ in range(200):
            j = c.request(headers=[("x-upstream-echo", "1")]).json()
            seen.add((j["name"], tuple(header_values(j, "x-canary"))))
    assert seen == {("stable", ()), ("canary", ("yes",))}, seen


def test_regex_routes_and_header_matchers(ctx):
    u = ctx.start_upstream()
    routes = [
        {"match": {"safe_regex": {"google_re2": {}, "regex": "/users/[0-9]+"}},
         "direct_response": {"status": 200, "body": {"inline_string": "user"}}},
        {"match": {"prefix": "/h", "headers": [
            {"name": "x-version", "safe_regex_match": {"regex": "v[0-9]+\\.[0-9]+"}}]},
         "direct_response": {"status": 200, "body": {"inline_string": "version"}}},
        {"match": {"prefix": "/h", "headers": [
            {"name": "x-tier", "string_match": {"safe_regex": {"regex": "(gold|silver)"}}}]},
         "direct_response": {"status": 200, "body": {"inline_string": "tier"}}},
        {"match": {"prefix": "/h", "headers": [
            {"name": "x-n", "range_match": {"start": 100, "end": 200}}]},
         "direct_response": {"status": 200, "body": {"inline_string": "range"}}},
        # A repeated header is matched as its values joined with "," (Envoy).
        {"match": {"prefix": "/multi", "headers": [
            {"name": "x-m", "string_match": {"exact": "a,b"}}]},
         "direct_response": {"status": 200, "body": {"inline_string": "joined"}}},
        # Catastrophic backtracking in a plain backtracking engine; here it hits the match
        # limit and simply does not match.
        {"match": {"prefix": "/evil", "headers": [
            {"name": "x-evil", "safe_regex_match": {"regex": "(a+)+$"}}]},
         "direct_response": {"status": 200, "body": {"inline_string": "evil-matched"}}},
        {"match": {"prefix": "/"},
         "direct_response": {"status": 200, "body": {"inline_string": "default"}}},
    ]
    r = ctx.start_remora(proxy_config({"c": [u.port]}, routes=routes))
    p = r.port()
    cases = [
        ("/users/42", {}, "user"),
        ("/users/42?tab=1", {}, "user"),          # the query string is not matched
        ("/users/42/posts", {}, "default"),       # a full match of the path
        ("/users/abc", {}, "default"),
        ("/h", {"x-version": "v2.10"}, "version"),
        ("/h", {"x-version": "v2.10-rc"}, "default"),
        ("/h", {"x-tier": "gold"}, "tier"),
        ("/h", {"x-tier": "golden"}, "default"),
        ("/h", {"x-n": "150"}, "range"),
        ("/h", {"x-n": "200"}, "default"),         # [start, end)
        ("/h", {"x-n": "-1"}, "default"),
        ("/h", {"x-n": "15o"}, "default"),
        ("/evil", {"x-evil": "aaaa"}, "evil-matched"),
    ]
    got = []
    for path, hs, want in cases:
        resp = http_request(p, "GET", path, headers=list(hs.items()))
        got.append((path, hs, resp.status, resp.body.decode()))
    assert got == [(path, hs, 200, want) for path, hs, want in cases], got
    resp = http_request(p, "GET", "/multi", headers=[("x-m", "a"), ("x-m", "b")])
    assert resp.body == b"joined", resp

    # The pathological input: a long run of a's that does not end the way the pattern needs.
    t0 = time.monotonic()
    with HttpConn(p) as c:
        for _ in range(20):
            resp = c.request(path="/evil", headers=[("x-evil", "a" * 5000 + "!")])
            assert resp.status == 200 and resp.body == b"default", resp
    assert time.monotonic() - t0 < 5 * slow_factor()


def test_regex_rewrite(ctx):
    u = ctx.start_upstream()
    routes = [
        {"match": {"prefix": "/service/"},
         "route": {"cluster": "c", "regex_rewrite": {
             "pattern": {"google_re2": {}, "regex": "^/service/([^/]+)(/.*)$"},
             "substitution": "\\2/instance/\\1"}}},
        {"match": {"prefix": "/all/"},
         "route": {"cluster": "c", "regex_rewrite": {
             "pattern": {"regex": "one"}, "substitution": "two"}}},
    ]
    r = ctx.start_remora(proxy_config({"c": [u.port]}, routes=routes))
    j = echo(r.port(), path="/service/foo/v1/api?x=/service/a/b")
    # only the path is rewritten; the query string is kept as it was
    assert j["path"] == "/v1/api/instance/foo?x=/service/a/b", j["path"]
    assert header_values(j, "x-envoy-original-path") == ["/service/foo/v1/api?x=/service/a/b"]
    j = echo(r.port(), path="/all/one/x/one?one=1")
    assert j["path"] == "/all/two/x/two?one=1", j["path"]
    j = echo(r.port(), path="/service/nomatch")  # no match: unchanged
    assert j["path"] == "/service/nomatch"


def test_cluster_header(ctx):
    a = ctx.start_upstream(name="a")
    b = ctx.start_upstream(name="b")
    log = ctx.tmp / "access.log"
    routes = [
        {"match": {"prefix": "/nf"},
         "route": {"cluster_header": "x-cluster", "cluster_not_found_response_code": "NOT_FOUND"}},
        {"match": {"prefix": "/"}, "route": {"cluster_header": "x-cluster"}},
    ]
    cfg = _config([_cluster("svc-a", [a.port]), _cluster("svc-b", [b.port])], routes,
                  access_log=[file_access_log(log)])
    r = ctx.start_remora(cfg)
    p = r.port()
    assert _get(p, "/x", {"x-cluster": "svc-a"})[:2] == (200, "a")
    assert _get(p, "/x", {"x-cluster": "svc-b"})[:2] == (200, "b")
    with HttpConn(p) as c:  # per request, on one connection
        names = [c.request(headers=[("x-cluster", n)]).header("x-upstream-name")
                 for n in ("svc-b", "svc-a", "svc-b")]
    assert names == ["b", "a", "b"]
    assert _get(p, "/unknown", {"x-cluster": "svc-c"})[0] == 503
    assert _get(p, "/missing")[0] == 503
    assert _get(p, "/x", {"x-cluster": "SVC-A"})[0] == 503  # names are case-sensitive
    assert _get(p, "/nf", {"x-cluster": "nope"})[0] == 404
    line = wait_log(log, lambda ln: '"GET /unknown' in ln)
    assert " 503 NC " in line, line
    assert stats(r)["http.ingress_http.no_cluster"] == 4
    assert a.stats()["requests"] + b.stats()["requests"] == 5


def test_query_parameter_routing(ctx):
    u = ctx.start_upstream()

    def qr(body, *qs):
        return {"match": {"prefix": "/q", "query_parameters": list(qs)},
                "direct_response": {"status": 200, "body": {"inline_string": body}}}

    routes = [
        qr("exact", {"name": "tier", "string_match": {"exact": "gold"}}),
        qr("regex", {"name": "id", "string_match": {"safe_regex": {"regex": "[0-9]+"}}}),
        qr("present", {"name": "debug", "present_match": True},
           {"name": "legacy", "present_match": False}),
        {"match": {"prefix": "/"},
         "direct_response": {"status": 200, "body": {"inline_string": "default"}}},
    ]
    r = ctx.start_remora(proxy_config({"c": [u.port]}, routes=routes))
    cases = {
        "/q?tier=gold": "exact",
        "/q?a=1&tier=gold&b": "exact",
        "/q?tier=gold&tier=silver": "exact",   # the first value counts
        "/q?tier=Gold": "default",
        "/q?id=123": "regex",
        "/q?id=12a": "default",
        "/q?debug": "present",
        "/q?debug=1&legacy=0": "default",      # present_match false: must be absent
        "/q": "default",
    }
    got = {path: http_request(r.port(), "GET", path).body.decode() for path in cases}
    assert got == cases, got


def _hash_config(upstreams, lb_policy, hash_policy, **cluster_extra):
    return _config([_cluster("sticky", [u.port for u in upstreams], lb_policy=lb_policy,
                             **cluster_extra)],
                   [{"match": {"prefix": "/"},
                     "route": {"cluster": "sticky", "hash_policy": hash_policy}}])


def _check_sticky(ctx, lb_policy, **cluster_extra):
    ups = [ctx.start_upstream(name=f"u{i}") for i in range(3)]
    cfg = _hash_config(ups, lb_policy, [
        {"header": {"header_name": "x-user"}, "terminal": True},
        {"query_parameter": {"name": "user"}},
    ], **cluster_extra)
    # Two workers: the ring/table is part of the config, so every worker agrees.
    r = ctx.start_remora(cfg, concurrency=2)
    p = r.port()
    owner = {}
    with HttpConn(p) as c:
        for i in range(40):
            names = {c.request(headers=[("x-user", f"user-{i}")]).header("x-upstream-name")
                     for _ in range(3)}
            assert len(names) == 1, (i, names)
            owner[i] = names.pop()
    # New connections (either worker) and the query parameter fallback agree.
    for i in range(0, 40, 4):
        assert _get(p, "/", {"x-user": f"user-{i}"})[1] == owner[i]
    # The same key by query parameter: a different key source, but sticky on its own.
    q_owner = {_get(p, "/?user=k7")[1] for _ in range(5)}
    assert len(q_owner) == 1, q_owner
    spread = Counter(owner.values())
    assert len(spread) == 3, f"40 keys all on {spread}"
    # No key: picks are spread over the endpoints.
    with HttpConn(p) as c:
        keyless = Counter(c.request().header("x-upstream-name") for _ in range(90))
    assert len(keyless) == 3 and min(keyless.values()) >= 10, keyless


def test_hash_policy_sticky_ring_hash(ctx):
    _check_sticky(ctx, "RING_HASH", ring_hash_lb_config={"minimum_ring_size": 1024})


def test_hash_policy_sticky_maglev(ctx):
    _check_sticky(ctx, "MAGLEV", maglev_lb_config={"table_size": 65537})


def test_hash_policy_source_ip_and_cookie(ctx):
    ups = [ctx.start_upstream(name=f"u{i}") for i in range(3)]
    cfg = _hash_config(ups, "RING_HASH", [
        {"cookie": {"name": "session"}, "terminal": True},
        {"connection_properties": {"source_ip": True}},
    ])
    r = ctx.start_remora(cfg)
    p = r.port()
    # No cookie: every request from 127.0.0.1 hashes the same.
    assert len({_get(p, "/")[1] for _ in range(10)}) == 1
    # A cookie wins over the address; equal cookies stick, quoted or not.
    owners = {}
    for i in range(30):
        got = {_get(p, "/", {"cookie": f"a=b; session={i}"})[1],
               _get(p, "/", {"cookie": f'session="{i}"'})[1]}
        assert len(got) == 1, (i, got)
        owners[i] = got.pop()
    assert len(set(owners.values())) == 3, owners
