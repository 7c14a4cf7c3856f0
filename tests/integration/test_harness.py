"""Tests of the harness (lib.py): cleanup must catch what it promises to catch, and the
config helpers must produce what start_remora expects."""

import json
import time

import lib
from lib import Ctx, bootstrap, bootstrap_dict, scan_ports, to_yaml, wait_for


def _inner_cleanup(argv, managed=False, term_timeout=None):
    inner = Ctx("inner")
    p = inner.spawn("victim", argv, managed=managed)
    if term_timeout is not None:
        p.term_timeout = term_timeout
    return p, inner


def _cleanup(inner):
    problems = inner.cleanup()
    inner.discard()
    return problems


def test_cleanup_reports_sanitizer_output(ctx):
    p, inner = _inner_cleanup(["sh", "-c", "echo '==7==ERROR: AddressSanitizer: "
                               "heap-use-after-free on address 0x1' >&2; exec sleep 30"])
    p.wait_output("AddressSanitizer")
    problems = _cleanup(inner)
    assert any("sanitizer report" in x and "heap-use-after-free" in x for x in problems), problems


def test_cleanup_reports_ubsan_and_lsan(ctx):
    for text in ("x.c:3:5: runtime error: signed integer overflow",
                 "==9==ERROR: LeakSanitizer: detected memory leaks"):
        p, inner = _inner_cleanup(["sh", "-c", f"echo '{text}' >&2"])
        p.wait(5)
        assert any("sanitizer report" in x for x in _cleanup(inner))


def test_cleanup_reports_crash_and_clean_exit_is_quiet(ctx):
    p, inner = _inner_cleanup(["sh", "-c", "kill -SEGV $$"])
    p.wait(5)
    problems = _cleanup(inner)
    assert any("SIGSEGV" in x for x in problems), problems
    p, inner = _inner_cleanup(["sleep", "30"])
    assert _cleanup(inner) == []


def test_cleanup_reports_ignored_sigterm(ctx):
    p, inner = _inner_cleanup(["sh", "-c", "trap '' TERM; echo armed; "
                               "while :; do sleep 0.05; done"], managed=True, term_timeout=0.3)
    p.wait_output("armed", stream="stdout")
    t0 = time.monotonic()
    problems = _cleanup(inner)
    assert time.monotonic() - t0 < 5
    assert any("after SIGTERM" in x for x in problems), problems
    assert not p.alive()


def test_wait_for(ctx):
    box = []
    assert wait_for(lambda: box.append(1) or len(box) >= 3 and "done", 1, "three polls") == "done"
    try:
        wait_for(lambda: 1 / 0, 0.05, "the impossible")
        raise AssertionError("wait_for did not time out")
    except TimeoutError as e:
        assert "the impossible" in str(e) and "ZeroDivisionError" in str(e)


def test_bootstrap_and_scan_ports(ctx):
    y = bootstrap(1234, 5678, clusters={"c1": [1111, ("127.0.0.2", 2222)], "c2": [3333]},
                  routes=[("/two", "c2"), ("/", "c1")])
    assert scan_ports(y) == ([("listener_0", 1234)], 5678)
    assert '"@type": "type.googleapis.com/envoy.extensions.filters.network.' in y
    d = bootstrap_dict(1234, 5678, clusters={"c1": [1111]})
    hosts = d["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    assert hosts["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] == 1111
    # Placeholders stay bare, so the substituted port is a YAML number.
    y = bootstrap("{{PORT}}", "{{ADMIN}}", clusters={"c": [1]})
    assert "port_value: {{PORT}}" in y and "port_value: {{ADMIN}}" in y
    try:
        import yaml  # PyYAML, when present, checks that the text is the same tree
    except ImportError:
        yaml = None
    if yaml is not None:
        assert yaml.safe_load(bootstrap(1, 2, clusters={"c": [3]})) == json.loads(
            json.dumps(bootstrap_dict(1, 2, clusters={"c": [3]})))


def test_scan_ports_hand_written(ctx):
    text = """
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 9901 }
static_resources:
  listeners:
  - name: public
    address:
      socket_address:
        address: 127.0.0.1
        port_value: 10000
    filter_chains: []
  - address:
      socket_address: {address: 127.0.0.1, port_value: 10001}
    name: "internal"
  clusters:
  - name: c
    load_assignment:
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 7}}}
"""
    assert scan_ports(text) == ([("public", 10000), ("internal", 10001)], 9901)


def test_to_yaml_quoting(ctx):
    y = to_yaml({"a": "x: y", "@k": [1, True, None, "#c", [], {}], "e": {}, "l": []})
    assert y == '''a: "x: y"
"@k":
  - 1
  - true
  - null
  - "#c"
  - []
  - {}
e: {}
l: []'''


def test_start_remora_needs_binary_or_skips(ctx):
    if lib.build_dir().joinpath("remora").exists():
        raise lib.Skip("remora is built; covered by the proxy tests")
    try:
        ctx.start_remora(bootstrap("{{P}}", "{{A}}", clusters={"c": [1]}))
    except lib.Skip as e:
        assert "not built" in str(e)
    else:
        raise AssertionError("start_remora did not skip")
