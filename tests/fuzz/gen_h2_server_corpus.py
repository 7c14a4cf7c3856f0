"""Writes the seed corpus of h2_server_fuzz (tests/fuzz/corpus/h2_server/) from the attack
cases of tests/integration/test_h2_hostile.py. Byte 0 is the fuzzer's flags (bit 0: a client
that hardly reads, bit 1: stream errors), the rest is frames after the client preface.

    python3 tests/fuzz/gen_h2_server_corpus.py"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import h2raw as h  # noqa: E402

OUT = os.path.join(HERE, "corpus", "h2_server")
GET = h.get_block()
BASE = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]
S0 = h.settings()


def seeds():
    yield "get", 0, S0 + h.headers(1, GET)
    yield "post_body", 0, S0 + h.headers(1, h.block(BASE[:0] + [
        (":method", "POST"), (":scheme", "http"), (":path", "/p"), (":authority", "a"),
        ("content-length", "5")]), end_stream=False) + h.frame(h.DATA, h.END_STREAM, 1, b"hello")
    yield "trailers", 0, S0 + h.headers(1, GET, end_stream=False) + \
        h.frame(h.DATA, 0, 1, b"abc") + h.headers(1, h.block([("x-t", "1")]))
    yield "rapid_reset", 0, S0 + b"".join(h.headers(2 * i + 1, GET) + h.rst(2 * i + 1)
                                          for i in range(600))
    no_path = h.block([(":method", "GET"), (":scheme", "http"), (":authority", "a")])
    yield "malformed_headers", 2, S0 + b"".join(h.headers(2 * i + 1, no_path) for i in range(600))
    yield "continuation_flood", 0, S0 + h.headers(1, GET, end_headers=False) + \
        h.frame(h.CONTINUATION, 0, 1, h.lit("x", "a")) * 20
    bomb = GET + h.lit("x", "v" * 4000, indexing=True) + b"\xbe" * 3000
    yield "hpack_bomb", 0, S0 + h.frame(h.HEADERS, h.END_STREAM, 1, bomb[:16384]) + \
        h.frame(h.CONTINUATION, h.END_HEADERS, 1, bomb[16384:])
    yield "cookie_crumbs", 0, S0 + h.headers(1, h.get_block(
        extra=[("cookie", f"c{i}=1") for i in range(200)]))
    yield "ping_flood_slow", 1, S0 + h.ping() * 3000
    yield "settings_flood_slow", 1, S0 + h.settings((h.S_MAX_CONCURRENT_STREAMS, 100)) * 3000
    yield "empty_data", 0, S0 + h.headers(1, GET, end_stream=False) + h.frame(h.DATA, 0, 1) * 50
    yield "empty_headers", 2, S0 + b"".join(h.frame(h.HEADERS, h.END_HEADERS, 2 * i + 1)
                                            for i in range(5))
    yield "zero_window", 1, h.settings((h.S_INITIAL_WINDOW_SIZE, 0)) + h.headers(1, GET) + \
        h.headers(3, GET)
    yield "wu_overflow", 0, S0 + h.window_update(0, 0x7fffffff) * 2
    yield "wu_stream_overflow", 0, S0 + h.headers(1, GET) + h.window_update(1, 0x7fffffff) * 2
    yield "wu_flood", 0, S0 + h.window_update(0, 1) * 50
    yield "priority_flood", 0, S0 + b"".join(h.priority(2 * i + 1, 0) for i in range(120))
    yield "priority_self", 0, S0 + h.priority(1, 1)
    yield "concurrent", 0, h.settings((h.S_MAX_CONCURRENT_STREAMS, 2)) + \
        b"".join(h.headers(sid, GET) for sid in range(1, 200, 2))
    yield "even_stream", 0, S0 + h.headers(2, GET)
    yield "decreasing_stream", 0, S0 + h.headers(5, GET) + h.headers(3, GET)
    yield "oversized_data", 0, S0 + h.headers(1, GET, end_stream=False) + \
        h.frame(h.DATA, h.END_STREAM, 1, b"x" * 20000)
    yield "cl_mismatch", 2, S0 + h.headers(1, h.block(BASE + [("content-length", "0")]),
                                           end_stream=False) + \
        h.frame(h.DATA, h.END_STREAM, 1, b"GET /smuggle HTTP/1.1\r\nHost: a\r\n\r\n")
    invalid = {
        "crlf_value": BASE + [("foo", "bar\r\nTransfer-Encoding: chunked")],
        "upper_name": BASE + [("Foo", "bar")],
        "space_name": BASE + [("foo bar", "x")],
        "colon_name": BASE + [("foo:bar", "x")],
        "connection": BASE + [("connection", "close")],
        "te_gzip": BASE + [("te", "gzip")],
        "empty_path": [(":method", "GET"), (":scheme", "http"), (":path", ""), (":authority", "a")],
        "asterisk_get": [(":method", "GET"), (":scheme", "http"), (":path", "*"),
                         (":authority", "a")],
        "path_crlf": [(":method", "GET"), (":scheme", "http"), (":path", "/ HTTP/1.1\r\nHost: x"),
                      (":authority", "a")],
        "dup_path": BASE + [(":path", "/x")],
        "late_pseudo": [(":method", "GET"), (":scheme", "http"), ("x", "1"), (":path", "/"),
                        (":authority", "a")],
        "authority_host": BASE + [("host", "b")],
    }
    for name, fields in invalid.items():
        yield "invalid_" + name, 0, S0 + h.headers(1, h.block(fields)) + h.headers(3, GET)
        yield "invalid_" + name + "_stream", 2, S0 + h.headers(1, h.block(fields)) + \
            h.headers(3, GET)


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, flags, data in seeds():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([flags]) + data)


if __name__ == "__main__":
    main()
