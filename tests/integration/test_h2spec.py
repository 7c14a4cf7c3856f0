"""h2spec's conformance cases against remora's downstream HTTP/2 (hostile-inputs.md case 47).

h2spec (https://github.com/summerwind/h2spec, MIT license, Copyright (c) 2016 Moto Ishizawa) is
a Go conformance tester for HTTP/2 servers. It is not installable here, so its cases -- what
each one sends and what it expects, read from its http2/, hpack/ and generic/ test groups --
are ported to the table CASES below, one row per h2spec case under h2spec's id ("http2/6.5.3/1":
group, section, number in the section). The code is ours (frames from h2raw.py); only the cases
come from h2spec. Where h2spec's file has an evident slip, the row follows the case's stated
intent and says so (http2/6.7/4, http2/8.1.2.3/2 and /7).

Each case runs on its own connection, after h2spec's handshake (SETTINGS both ways, both
acknowledged), against one remora in front of an HTTP/1.1 test upstream; cases run in parallel,
every wait bounded by DEADLINE. The expectations are h2spec's:
  conn(codes)     connection error: GOAWAY with one of `codes`, then the connection closes
  stream(codes)   stream error: RST_STREAM with one of `codes`, or a connection error with one
                  (RFC 9113 5.4.1 lets an endpoint treat a stream error as a connection error;
                  remora does so for invalid requests by default, as Envoy does)
  CLOSED          the connection closes
  RESPONSE        a 200 response HEADERS on stream 1 (the upstream answered)
  ping_ack(data), SETTINGS_ACK, data_len(n), first_settings, ...
We are a little stricter than h2spec: a connection error must come with its GOAWAY (h2spec also
takes a bare close), and a request that must not be forwarded (`nofwd`) must never reach the
upstream. DEVIATIONS lists the cases where remora knowingly differs, why, and what it does
instead (that is checked too, and a deviation that starts passing fails the test).

Run directly (python3 tests/integration/test_h2spec.py PORT) it sweeps any h2c server on
127.0.0.1:PORT, e.g. `nghttpd --no-tls -d /tmp PORT`, the reference for what nghttp2 does.
"""

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import h2raw as h
from h2raw import H2Raw
from lib import slow_factor

DEADLINE = 2.0  # seconds per wait (h2spec's default timeout is 2 s)
DUMMY = "x" * 4000  # h2spec's DummyHeaders value (its default max header length)

# ---- expectations: f(Events since the case's mark) -> True (passed), False (failed), None
# (not decided yet) ----


def _desc(f, text):
    f.desc = text
    return f


def conn(*codes):
    def v(ev):
        if any(g[1] in codes for g in ev.goaways):
            return True if ev.closed else None
        if ev.goaways or ev.closed:
            return False
        return None
    return _desc(v, f"connection error {_names(codes)}")


def stream(*codes, sid=None):
    def v(ev):
        if any(c in codes and (sid is None or s == sid) for s, c in ev.rsts.items()):
            return True
        if any(g[1] in codes for g in ev.goaways):
            return True if ev.closed else None
        if ev.goaways or ev.closed:
            return False
        return None
    return _desc(v, f"stream error {_names(codes)}")


def rst(sid, code):
    """Strictly an RST_STREAM on `sid` (h2spec waits for that frame type)."""
    def v(ev):
        if sid in ev.rsts:
            return ev.rsts[sid] == code
        return False if ev.goaways or ev.closed else None
    return _desc(v, f"RST_STREAM({_names([code])}) on {sid}")


def _closed(ev):
    return True if ev.closed else None


CLOSED = _desc(_closed, "connection closed")


def _response(ev, sid=1, status=200):
    got = ev.on(sid, h.HEADERS)
    if got:
        return status is None or ev.status(sid) == status
    return False if ev.goaways or ev.closed or sid in ev.rsts else None


RESPONSE = _desc(_response, "a 200 response HEADERS on stream 1")


def ping_ack(data=bytes(8), or_close=False):
    def v(ev):
        if any(fl & h.ACK and p == data for fl, p in ev.pings):
            return True
        if ev.closed:
            return or_close
        return None
    return _desc(v, f"PING ACK {data!r}" + (" or connection closed" if or_close else ""))


def _ping_ack_only_for_ours(ev):
    """6.7/2: the PING we sent with ACK gets no answer; the other one gets its ACK."""
    if any(p == b"invalid\0" for _, p in ev.pings):
        return False
    return ping_ack(b"h2spec\0\0")(ev)


def _settings_ack(ev):
    if any(fl & h.ACK for fl, _ in ev.settings):
        return True
    return False if ev.closed else None


SETTINGS_ACK = _desc(_settings_ack, "SETTINGS ACK")


def _first_settings(ev):
    if ev.frames:
        t, fl, _, _ = ev.frames[0]
        return t == h.SETTINGS and not fl & h.ACK
    return False if ev.closed else None


FIRST_SETTINGS = _desc(_first_settings, "a SETTINGS frame (no ACK) first")


def data_len(n, sid=1):
    def v(ev):
        d = ev.on(sid, h.DATA)
        if d:
            return len(d[0][3]) == n
        return False if ev.goaways or ev.closed or sid in ev.rsts else None
    return _desc(v, f"DATA of length {n} on stream {sid}")


def _any_goaway(ev):
    if ev.goaways:
        return True
    return False if ev.closed else None


GOAWAY = _desc(_any_goaway, "a GOAWAY frame")


def _any_data(ev):
    if any(t == h.DATA for t, _, _, _ in ev.frames):
        return True
    return False if ev.goaways or ev.closed else None


ANY_DATA = _desc(_any_data, "a DATA frame")

_CODE_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
               "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
               "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM"]


def _names(codes):
    return "/".join(_CODE_NAMES[c] if c < len(_CODE_NAMES) else hex(c) for c in codes)


P, FS, SC, FC, CO, RS = (h.PROTOCOL_ERROR, h.FRAME_SIZE_ERROR, h.STREAM_CLOSED,
                         h.FLOW_CONTROL_ERROR, h.COMPRESSION_ERROR, h.REFUSED_STREAM)

# ---- what a case does ----


class StepFailed(AssertionError):
    pass


class Step:
    """A case's view of its connection: h2spec's CommonHeaders (with a :path naming the case,
    so the upstream's record shows which cases reached it), sends, and bounded waits. `m` is
    the mark after which the expectation looks."""

    def __init__(self, c, cid):
        self.c = c
        self.cid = cid
        self.m = c.mark()

    @property
    def path(self):
        return f"/h2spec/{self.cid}"

    def common(self, method="GET"):
        return [(":method", method), (":scheme", "http"), (":path", self.path),
                (":authority", "h2spec.test")]

    def block(self, method="GET", extra=(), fields=None):
        return h.block(list(fields if fields is not None else self.common(method)) +
                       list(extra))

    def send(self, *frames):
        self.c.send(b"".join(frames))

    def wait(self, pred, what):
        ev = self.c.read(DEADLINE, until=lambda e: pred(e.since(self.m)))
        if not pred(ev.since(self.m)):
            raise StepFailed(f"while waiting for {what}: {ev.since(self.m)}")

    def wait_settings_ack(self):
        self.wait(lambda e: any(fl & h.ACK for fl, _ in e.settings), "SETTINGS ACK")

    def wait_ended(self, sid=1):
        self.wait(lambda e: e.ended(sid), f"the end of stream {sid}")

    def remark(self):
        self.m = self.c.mark()


def dummy(n=1):
    return [(f"x-dummy{i}", DUMMY) for i in range(n)]


class Case:
    def __init__(self, cid, desc, expect, run, nofwd=False, handshake=True, malformed=False):
        self.id = cid
        self.desc = desc
        self.expect = expect
        self.run = run
        self.nofwd = nofwd  # the request must never reach the upstream
        self.handshake = handshake  # False: run() sends the preface itself
        self.malformed = malformed  # a malformed request: a stream error (RFC 9113 8.1.1)


CASES = []


def case(cid, desc, expect, nofwd=False, handshake=True, malformed=False):
    def deco(fn):
        CASES.append(Case(cid, desc, expect, fn, nofwd, handshake, malformed))
        return fn
    return deco


def simple(cid, desc, expect, fn, **kw):
    CASES.append(Case(cid, desc, expect, fn, **kw))


UNKNOWN_FRAME = h.frame(0x16, 0, 0, bytes(8))  # h2spec's "type 255" frame is really type 0x16
ZERO8 = bytes(8)


def _preface_only(s):
    s.send(h.PREFACE, h.settings((h.S_INITIAL_WINDOW_SIZE, 65535)))


# -- http2/3.2, 3.5: the connection preface
simple("http2/3.2/1", "Sends client connection preface", FIRST_SETTINGS, _preface_only,
       handshake=False)
simple("http2/3.5/1", "Sends client connection preface", FIRST_SETTINGS, _preface_only,
       handshake=False)
simple("http2/3.5/2", "Sends invalid connection preface", CLOSED,
       lambda s: s.send(b"INVALID CONNECTION PREFACE\r\n\r\n"), handshake=False)

# -- http2/4.1: frame format
simple("http2/4.1/1", "Sends a frame with unknown type", ping_ack(),
       lambda s: s.send(UNKNOWN_FRAME, h.ping(ZERO8)))
simple("http2/4.1/2", "Sends a frame with undefined flag", ping_ack(),
       lambda s: s.send(h.frame(h.PING, 0x16, 0, ZERO8)))
simple("http2/4.1/3", "Sends a frame with reserved field bit", ping_ack(),
       lambda s: s.send(h.frame(h.PING, 0x16, 0x80000000, ZERO8)))


# -- http2/4.2: frame size
@case("http2/4.2/1", "Sends a DATA frame with 2^14 octets in length", RESPONSE)
def _(s):
    s.send(h.headers(1, s.block("POST"), end_stream=False),
           h.data(1, b"x" * s.c.peer_settings.get(h.S_MAX_FRAME_SIZE, 16384)))


@case("http2/4.2/2", "Sends a large size DATA frame that exceeds the SETTINGS_MAX_FRAME_SIZE",
      stream(FS))
def _(s):
    s.send(h.headers(1, s.block("POST"), end_stream=False),
           h.data(1, b"x" * (s.c.peer_settings.get(h.S_MAX_FRAME_SIZE, 16384) + 1)))


simple("http2/4.2/3", "Sends a large size HEADERS frame that exceeds the SETTINGS_MAX_FRAME_SIZE",
       conn(FS), lambda s: s.send(h.headers(1, s.block(extra=dummy(5)))), nofwd=True)

# -- http2/4.3: header compression and decompression
simple("http2/4.3/1", "Sends invalid header block fragment", conn(CO),
       lambda s: s.send(b"\x00\x00\x01\x01\x05\x00\x00\x00\x01\x40"))


def _headers_priority_continuation(s):
    s.send(h.headers(1, s.block(), end_stream=False, end_headers=False),
           h.priority(1, 0, 255), h.continuation(1, h.block(dummy())))


def _headers_other_stream_continuation(s):
    s.send(h.headers(1, s.block(), end_stream=False, end_headers=False),
           h.headers(3, s.block()), h.continuation(1, h.block(dummy())))


simple("http2/4.3/2", "Sends a PRIORITY frame while sending the header blocks", conn(P),
       _headers_priority_continuation, nofwd=True)
simple("http2/4.3/3", "Sends a HEADERS frame to another stream while sending the header blocks",
       conn(P), _headers_other_stream_continuation, nofwd=True)

# -- http2/5.1: stream states
simple("http2/5.1/1", "idle: Sends a DATA frame", conn(P), lambda s: s.send(h.data(1, b"test")))
simple("http2/5.1/2", "idle: Sends a RST_STREAM frame", conn(P),
       lambda s: s.send(h.rst(1, h.CANCEL)))
simple("http2/5.1/3", "idle: Sends a WINDOW_UPDATE frame", conn(P),
       lambda s: s.send(h.window_update(1, 100)))
simple("http2/5.1/4", "idle: Sends a CONTINUATION frame", conn(P),
       lambda s: s.send(h.continuation(1, s.block())))
simple("http2/5.1/5", "half closed (remote): Sends a DATA frame", stream(SC),
       lambda s: s.send(h.headers(1, s.block()), h.data(1, b"test")))
simple("http2/5.1/6", "half closed (remote): Sends a HEADERS frame", stream(SC),
       lambda s: s.send(h.headers(1, s.block()), h.headers(1, s.block())))
simple("http2/5.1/7", "half closed (remote): Sends a CONTINUATION frame", stream(SC, P),
       lambda s: s.send(h.headers(1, s.block()), h.continuation(1, s.block())))
simple("http2/5.1/8", "closed: Sends a DATA frame after sending RST_STREAM frame", stream(SC),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False), h.rst(1, h.CANCEL),
                        h.data(1, b"test")))
simple("http2/5.1/9", "closed: Sends a HEADERS frame after sending RST_STREAM frame", stream(SC),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False), h.rst(1, h.CANCEL),
                        h.headers(1, s.block())))
simple("http2/5.1/10", "closed: Sends a CONTINUATION frame after sending RST_STREAM frame",
       stream(SC, P),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False), h.rst(1, h.CANCEL),
                        h.continuation(1, h.block(dummy()))))


def _after_close(frame_fn):
    def run(s):
        s.send(h.headers(1, s.block()))
        s.wait_ended(1)
        s.remark()
        s.send(frame_fn(s))
    return run


simple("http2/5.1/11", "closed: Sends a DATA frame", conn(SC),
       _after_close(lambda s: h.data(1, b"test")))
simple("http2/5.1/12", "closed: Sends a HEADERS frame", conn(SC),
       _after_close(lambda s: h.headers(1, s.block())))
simple("http2/5.1/13", "closed: Sends a CONTINUATION frame", conn(SC, P),
       _after_close(lambda s: h.continuation(1, h.block(dummy()))))

# -- http2/5.1.1: stream identifiers
simple("http2/5.1.1/1", "Sends even-numbered stream identifier", conn(P),
       lambda s: s.send(h.headers(2, s.block())), nofwd=True)
simple("http2/5.1.1/2", "Sends stream identifier that is numerically smaller than previous",
       conn(P), lambda s: s.send(h.headers(5, s.block()), h.headers(3, s.block())))
simple("http2/5.1.1/3", "Sends HEADERS frame with the stream which is in half-closed (remote) "
       "state", stream(SC), lambda s: s.send(h.headers(5, s.block()), h.headers(5, s.block())))


# -- http2/5.1.2: stream concurrency
@case("http2/5.1.2/1", "Sends HEADERS frames that causes their advertised concurrent stream "
      "limit to be exceeded", stream(P, RS))
def _(s):
    n = s.c.peer_settings.get(h.S_MAX_CONCURRENT_STREAMS)
    assert n is not None and n <= 1000, f"SETTINGS_MAX_CONCURRENT_STREAMS {n}: set it lower"
    blk = s.block()
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 0)),
           *(h.headers(2 * i + 1, blk) for i in range(n + 1)))


# -- http2/5.3.1: stream dependencies
simple("http2/5.3.1/1", "Sends HEADERS frame that depends on itself", stream(P),
       lambda s: s.send(h.headers(1, s.block(), prio=(1, 255, False))), nofwd=True)
simple("http2/5.3.1/2", "Sends PRIORITY frame that depend on itself", stream(P),
       lambda s: s.send(h.priority(1, 1, 255)))

# -- http2/5.4.1: connection error handling (the second one is h2spec's "strict" kind)
BAD_PING = h.frame(h.PING, 0, 3, ZERO8)
simple("http2/5.4.1/1", "Sends an invalid PING frame for connection close", CLOSED,
       lambda s: s.send(BAD_PING))
simple("http2/5.4.1/2", "Sends an invalid PING frame to receive GOAWAY frame", GOAWAY,
       lambda s: s.send(BAD_PING))

# -- http2/5.5: extending HTTP/2
simple("http2/5.5/1", "Sends an unknown extension frame", ping_ack(),
       lambda s: s.send(UNKNOWN_FRAME, h.ping(ZERO8)))
simple("http2/5.5/2", "Sends an unknown extension frame in the middle of a header block",
       conn(P), lambda s: s.send(h.headers(1, s.block(), end_headers=False), UNKNOWN_FRAME),
       nofwd=True)

# -- http2/6.1: DATA
simple("http2/6.1/1", "Sends a DATA frame with 0x0 stream identifier", conn(P),
       lambda s: s.send(h.data(0, b"test")))
simple("http2/6.1/2", "Sends a DATA frame on the stream that is not in \"open\" or "
       "\"half-closed (local)\" state", stream(SC),
       lambda s: s.send(h.headers(1, s.block("POST")), h.data(1, b"test")))
simple("http2/6.1/3", "Sends a DATA frame with invalid pad length", conn(P),
       lambda s: s.send(h.headers(1, s.block("POST", [("content-length", "4")]), end_stream=False),
                        b"\x00\x00\x05\x00\x09\x00\x00\x00\x01" + b"\x06Test"))

# -- http2/6.2: HEADERS
simple("http2/6.2/1", "Sends a HEADERS frame without the END_HEADERS flag, and a PRIORITY frame",
       conn(P), _headers_priority_continuation, nofwd=True)
simple("http2/6.2/2", "Sends a HEADERS frame to another stream while sending a HEADERS frame",
       conn(P), _headers_other_stream_continuation, nofwd=True)
simple("http2/6.2/3", "Sends a HEADERS frame with 0x0 stream identifier", conn(P),
       lambda s: s.send(h.headers(0, s.block())), nofwd=True)


@case("http2/6.2/4", "Sends a HEADERS frame with invalid pad length", stream(P), nofwd=True)
def _(s):
    blk = s.block()
    s.send(h.frame(h.HEADERS, h.END_STREAM | h.END_HEADERS | h.PADDED, 1,
                   bytes([len(blk) + 2]) + blk))


# -- http2/6.3: PRIORITY
simple("http2/6.3/1", "Sends a PRIORITY frame with 0x0 stream identifier", conn(P),
       lambda s: s.send(h.priority(0, 0, 255)))
simple("http2/6.3/2", "Sends a PRIORITY frame with a length other than 5 octets", stream(FS),
       lambda s: s.send(h.headers(1, s.block()), h.frame(h.PRIORITY, 0, 1, b"\x80\x00\x00\x01")))
simple("http2/6.3/3", "Sends a PRIORITY frame for an idle stream, then send a HEADER frame for "
       "a lower stream ID", RESPONSE,
       lambda s: s.send(h.priority(3, 0, 255), h.headers(1, s.block())))

# -- http2/6.4: RST_STREAM
simple("http2/6.4/1", "Sends a RST_STREAM frame with 0x0 stream identifier", conn(P),
       lambda s: s.send(h.rst(0, h.CANCEL)))
simple("http2/6.4/2", "Sends a RST_STREAM frame on a idle stream", conn(P),
       lambda s: s.send(h.rst(1, h.CANCEL)))
simple("http2/6.4/3", "Sends a RST_STREAM frame with a length other than 4 octets", stream(FS),
       lambda s: s.send(h.headers(1, s.block()), h.frame(h.RST_STREAM, 0, 1, bytes(3))))

# -- http2/6.5: SETTINGS
simple("http2/6.5/1", "Sends a SETTINGS frame with ACK flag and payload", conn(FS),
       lambda s: s.send(h.frame(h.SETTINGS, h.ACK, 0, b"\x00")))
simple("http2/6.5/2", "Sends a SETTINGS frame with 0x1 stream identifier", conn(P),
       lambda s: s.send(h.frame(h.SETTINGS, 0, 1, b"\x00\x03\x00\x00\x00\x64")))
simple("http2/6.5/3", "Sends a SETTINGS frame with a length other than a multiple of 6 octets",
       stream(P, FS), lambda s: s.send(h.frame(h.SETTINGS, 0, 0, b"\x00\x03\x00\x00\x00\x64\x00"
                                               b"\x02\x00")))

# -- http2/6.5.2: defined SETTINGS parameters
simple("http2/6.5.2/1", "SETTINGS_ENABLE_PUSH (0x2): Sends the value other than 0 or 1",
       conn(P), lambda s: s.send(h.settings((h.S_ENABLE_PUSH, 2))))
simple("http2/6.5.2/2", "SETTINGS_INITIAL_WINDOW_SIZE (0x4): Sends the value above the maximum "
       "flow control window size", conn(FC),
       lambda s: s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 2147483648))))
simple("http2/6.5.2/3", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value below the initial value",
       conn(P), lambda s: s.send(h.settings((h.S_MAX_FRAME_SIZE, 16383))))
simple("http2/6.5.2/4", "SETTINGS_MAX_FRAME_SIZE (0x5): Sends the value above the maximum "
       "allowed frame size", conn(P), lambda s: s.send(h.settings((h.S_MAX_FRAME_SIZE, 16777216))))
simple("http2/6.5.2/5", "Sends a SETTINGS frame with unknown identifier", ping_ack(),
       lambda s: s.send(h.settings((0xFF, 1)), h.ping(ZERO8)))


# -- http2/6.5.3: settings synchronization
@case("http2/6.5.3/1", "Sends multiple values of SETTINGS_INITIAL_WINDOW_SIZE", data_len(1))
def _(s):
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 100), (h.S_INITIAL_WINDOW_SIZE, 1)))
    s.wait_settings_ack()
    s.send(h.headers(1, s.block()))


simple("http2/6.5.3/2", "Sends a SETTINGS frame without ACK flag", SETTINGS_ACK,
       lambda s: s.send(h.settings((h.S_ENABLE_PUSH, 0))))

# -- http2/6.7: PING
simple("http2/6.7/1", "Sends a PING frame", ping_ack(b"h2spec\0\0"),
       lambda s: s.send(h.ping(b"h2spec\0\0")))
simple("http2/6.7/2", "Sends a PING frame with ACK",
       _desc(_ping_ack_only_for_ours, "no answer to a PING ACK, an ACK of the other PING"),
       lambda s: s.send(h.ping(b"invalid\0", ack=True), h.ping(b"h2spec\0\0")))
simple("http2/6.7/3", "Sends a PING frame with a stream identifier field value other than 0x0",
       conn(P), lambda s: s.send(h.frame(h.PING, 0, 1, ZERO8)))
# (one version of h2spec's file sent this on stream 1 expecting PROTOCOL_ERROR; its later
# version, followed here, uses stream 0 and FRAME_SIZE_ERROR)
simple("http2/6.7/4", "Sends a PING frame with a length field value other than 8", conn(FS),
       lambda s: s.send(h.frame(h.PING, 0, 0, bytes(6))))

# -- http2/6.8: GOAWAY
simple("http2/6.8/1", "Sends a GOAWAY frame with a stream identifier other than 0x0", conn(P),
       lambda s: s.send(h.frame(h.GOAWAY, 0, 1, bytes(8))))

# -- http2/6.9: WINDOW_UPDATE
simple("http2/6.9/1", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0",
       conn(P), lambda s: s.send(h.window_update(0, 0)))
simple("http2/6.9/2", "Sends a WINDOW_UPDATE frame with a flow control window increment of 0 on "
       "a stream", stream(P),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False), h.window_update(1, 0)))
simple("http2/6.9/3", "Sends a WINDOW_UPDATE frame with a length other than 4 octets", conn(FS),
       lambda s: s.send(h.frame(h.WINDOW_UPDATE, 0, 0, b"\x00\x00\x01")))


# -- http2/6.9.1: the flow-control window
@case("http2/6.9.1/1", "Sends SETTINGS frame to set the initial window size to 1 and sends "
      "HEADERS frame", data_len(1))
def _(s):
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 1)))
    s.wait_settings_ack()
    s.send(h.headers(1, s.block()))


simple("http2/6.9.1/2", "Sends multiple WINDOW_UPDATE frames increasing the flow control window "
       "to above 2^31-1", conn(FC), lambda s: s.send(h.window_update(0, 2147483647) * 2))
simple("http2/6.9.1/3", "Sends multiple WINDOW_UPDATE frames increasing the flow control window "
       "to above 2^31-1 on a stream", rst(1, FC),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False),
                        h.window_update(1, 2147483647) * 2))


# -- http2/6.9.2: initial flow-control window size
@case("http2/6.9.2/1", "Changes SETTINGS_INITIAL_WINDOW_SIZE after sending HEADERS frame",
      data_len(1))
def _(s):
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 0)))
    s.wait_settings_ack()
    s.remark()
    s.send(h.headers(1, s.block()))
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 1)))
    s.wait_settings_ack()


@case("http2/6.9.2/2", "Sends a SETTINGS frame for window size to be negative", data_len(1))
def _(s):
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 3)))
    s.wait_settings_ack()
    s.send(h.headers(1, s.block()))
    s.wait(lambda e: e.on(1, h.DATA), "the first DATA (3 bytes)")
    s.remark()
    s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 2)))
    s.wait_settings_ack()
    s.send(h.window_update(1, 2))


simple("http2/6.9.2/3", "Sends a SETTINGS_INITIAL_WINDOW_SIZE settings with an exceeded maximum "
       "window size value", conn(FC),
       lambda s: s.send(b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x04\x80\x00\x00\x00"))

# -- http2/6.10: CONTINUATION
simple("http2/6.10/1", "Sends multiple CONTINUATION frames preceded by a HEADERS frame", RESPONSE,
       lambda s: s.send(h.headers(1, s.block(), end_headers=False),
                        h.continuation(1, h.block(dummy()), end_headers=False),
                        h.continuation(1, h.block(dummy()))))
simple("http2/6.10/2", "Sends a CONTINUATION frame followed by any frame other than CONTINUATION",
       conn(P), lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False, end_headers=False),
                                 h.continuation(1, h.block(dummy()), end_headers=False),
                                 h.data(1, b"test")), nofwd=True)
simple("http2/6.10/3", "Sends a CONTINUATION frame with 0x0 stream identifier", conn(P),
       lambda s: s.send(h.headers(1, s.block(), end_headers=False),
                        h.continuation(0, h.block(dummy()))), nofwd=True)
simple("http2/6.10/4", "Sends a CONTINUATION frame preceded by a HEADERS frame with END_HEADERS "
       "flag", conn(P),
       lambda s: s.send(h.headers(1, s.block()), h.continuation(1, h.block(dummy()))))
simple("http2/6.10/5", "Sends a CONTINUATION frame preceded by a CONTINUATION frame with "
       "END_HEADERS flag", conn(P),
       lambda s: s.send(h.headers(1, s.block(), end_headers=False),
                        h.continuation(1, h.block(dummy())), h.continuation(1, h.block(dummy()))))
simple("http2/6.10/6", "Sends a CONTINUATION frame preceded by a DATA frame", conn(P),
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False, end_headers=False),
                        h.data(1, b"test"), h.continuation(1, h.block(dummy()), end_headers=False),
                        h.continuation(0, h.block(dummy()))), nofwd=True)

# -- http2/7: error codes
simple("http2/7/1", "Sends a GOAWAY frame with unknown error code", CLOSED,
       lambda s: s.send(h.goaway(0, 0xff)))
simple("http2/7/2", "Sends a RST_STREAM frame with unknown error code", ping_ack(),
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False), h.rst(1, 0xff),
                        h.ping(ZERO8)))

# -- http2/8.1: HTTP request/response exchange
simple("http2/8.1/1", "Sends a second HEADERS frame without the END_STREAM flag", stream(P),
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False),
                        h.data(1, b"test", end_stream=False),
                        h.headers(1, h.block([("x-test", "ok")]), end_stream=False)),
       malformed=True)

# -- http2/8.1.2: HTTP header fields
simple("http2/8.1.2/1", "Sends a HEADERS frame that contains the header field name in uppercase "
       "letters", stream(P), lambda s: s.send(h.headers(1, s.block(extra=[("X-TEST", "ok")]))),
       nofwd=True, malformed=True)

# -- http2/8.1.2.1: pseudo-header fields
simple("http2/8.1.2.1/1", "Sends a HEADERS frame that contains a unknown pseudo-header field",
       stream(P), lambda s: s.send(h.headers(1, s.block(extra=[(":test", "ok")]))), nofwd=True,
       malformed=True)
simple("http2/8.1.2.1/2", "Sends a HEADERS frame that contains the pseudo-header field defined "
       "for response", stream(P),
       lambda s: s.send(h.headers(1, s.block(extra=[(":status", "200")]))), nofwd=True,
       malformed=True)
simple("http2/8.1.2.1/3", "Sends a HEADERS frame that contains a pseudo-header field as "
       "trailers", stream(P),
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False),
                        h.data(1, b"test", end_stream=False),
                        h.headers(1, h.block([(":method", "POST")]), end_stream=False)),
       malformed=True)
simple("http2/8.1.2.1/4", "Sends a HEADERS frame that contains a pseudo-header field that "
       "appears in a header block after a regular header field", stream(P),
       lambda s: s.send(h.headers(1, s.block(fields=[("x-test", "ok")] + s.common()))),
       nofwd=True, malformed=True)

# -- http2/8.1.2.2: connection-specific header fields
simple("http2/8.1.2.2/1", "Sends a HEADERS frame that contains the connection-specific header "
       "field", stream(P), lambda s: s.send(h.headers(1, s.block(extra=[("connection",
                                                                          "keep-alive")]))),
       nofwd=True, malformed=True)
simple("http2/8.1.2.2/2", "Sends a HEADERS frame that contains the TE header field with any "
       "value other than \"trailers\"", stream(P),
       lambda s: s.send(h.headers(1, s.block(extra=[("trailers", "test"),
                                                    ("te", "trailers, deflate")]))),
       nofwd=True, malformed=True)


# -- http2/8.1.2.3: request pseudo-header fields (h2spec's file drops :scheme too in /2 and
# duplicates :method instead of :path in /7; the rows follow the cases' titles)
def _pseudo(s, drop=None, dup=None, empty_path=False):
    f = s.common()
    if empty_path:
        f[2] = (":path", "")
    if drop is not None:
        f = [x for x in f if x[0] != drop]
    if dup is not None:
        f.append(next(x for x in s.common() if x[0] == dup))
    s.send(h.headers(1, s.block(fields=f)))


for _n, _d, _kw in [(1, "with empty \":path\"", {"empty_path": True}),
                    (2, "that omits \":method\"", {"drop": ":method"}),
                    (3, "that omits \":scheme\"", {"drop": ":scheme"}),
                    (4, "that omits \":path\"", {"drop": ":path"}),
                    (5, "with duplicated \":method\"", {"dup": ":method"}),
                    (6, "with duplicated \":scheme\"", {"dup": ":scheme"}),
                    (7, "with duplicated \":path\"", {"dup": ":path"})]:
    simple(f"http2/8.1.2.3/{_n}", f"Sends a HEADERS frame {_d} pseudo-header field", stream(P),
           lambda s, kw=_kw: _pseudo(s, **kw), nofwd=True, malformed=True)

# -- http2/8.1.2.6: malformed requests and responses
simple("http2/8.1.2.6/1", "Sends a HEADERS frame with the \"content-length\" header field which "
       "does not equal the DATA frame payload length", stream(P),
       lambda s: s.send(h.headers(1, s.block("POST", [("content-length", "1")]), end_stream=False),
                        h.data(1, b"test")), malformed=True)
simple("http2/8.1.2.6/2", "Sends a HEADERS frame with the \"content-length\" header field which "
       "does not equal the sum of the multiple DATA frames payload length", stream(P),
       lambda s: s.send(h.headers(1, s.block("POST", [("content-length", "1")]), end_stream=False),
                        h.data(1, b"test", end_stream=False), h.data(1, b"test")), malformed=True)

# -- http2/8.2: server push
simple("http2/8.2/1", "Sends a PUSH_PROMISE frame", conn(P),
       lambda s: s.send(h.push_promise(1, 3, s.block())))


# -- hpack/: decoding errors are connection errors of type COMPRESSION_ERROR
def _append(rep):
    return lambda s: s.send(h.headers(1, s.block() + rep))


simple("hpack/2.3.3/1", "Sends a header field representation with invalid index", conn(CO),
       _append(b"\xfe"), nofwd=True)
simple("hpack/4.2/1", "Sends a dynamic table size update at the end of header block", conn(CO),
       _append(b"\x21"), nofwd=True)
simple("hpack/5.2/1", "Sends a Huffman-encoded string literal representation with padding "
       "longer than 7 bits", conn(CO),
       _append(b"\x00\x85\xf2\xb2\x4a\x84\xff\x84\x49\x50\x9f\xff"), nofwd=True)
simple("hpack/5.2/2", "Sends a Huffman-encoded string literal representation padded by zero",
       conn(CO), _append(b"\x00\x85\xf2\xb2\x4a\x84\xff\x83\x49\x50\x90"), nofwd=True)
simple("hpack/5.2/3", "Sends a Huffman-encoded string literal representation containing the EOS "
       "symbol", conn(CO), _append(b"\x00\x85\xf2\xb2\x4a\x87\xff\xff\xff\xfd\x25\x42\x7f"),
       nofwd=True)
simple("hpack/6.1/1", "Sends a indexed header field representation with index 0", conn(CO),
       _append(b"\x80"), nofwd=True)
simple("hpack/6.3/1", "Sends a dynamic table size update larger than the value of "
       "SETTINGS_HEADER_TABLE_SIZE", conn(CO),
       lambda s: s.send(h.headers(1, h.size_update(
           s.c.peer_settings.get(h.S_HEADER_TABLE_SIZE, 4096) + 1) + s.block())), nofwd=True)

# -- generic/: what every server must accept
simple("generic/1/1", "Sends a client connection preface", FIRST_SETTINGS, _preface_only,
       handshake=False)
simple("generic/2/1", "Sends a PRIORITY frame on idle stream", ping_ack(),
       lambda s: s.send(h.priority(1, 0, 255), h.ping(ZERO8)))
simple("generic/2/2", "Sends a WINDOW_UPDATE frame on half-closed (remote) stream", ANY_DATA,
       lambda s: s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 0)), h.headers(1, s.block()),
                        h.window_update(1, 1)))
simple("generic/2/3", "Sends a PRIORITY frame on half-closed (remote) stream", ANY_DATA,
       lambda s: s.send(h.settings((h.S_INITIAL_WINDOW_SIZE, 0)), h.headers(1, s.block()),
                        h.priority(1, 0, 255), h.window_update(1, 1)))
simple("generic/2/4", "Sends a RST_STREAM frame on half-closed (remote) stream",
       ping_ack(or_close=True),
       lambda s: s.send(h.headers(1, s.block()), h.rst(1, h.CANCEL), h.ping(ZERO8)))
simple("generic/2/5", "Sends a PRIORITY frame on closed stream", ping_ack(),
       _after_close(lambda s: h.priority(1, 0, 255) + h.ping(ZERO8)))
simple("generic/3.1/1", "Sends a DATA frame", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False), h.data(1, b"test")))
simple("generic/3.1/2", "Sends multiple DATA frames", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False),
                        h.data(1, b"test", end_stream=False), h.data(1, b"test")))
simple("generic/3.1/3", "Sends a DATA frame with padding", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False),
                        h.data(1, b"test", pad=b"padded")))
simple("generic/3.2/1", "Sends a HEADERS frame", RESPONSE,
       lambda s: s.send(h.headers(1, s.block())))
simple("generic/3.2/2", "Sends a HEADERS frame with padding", RESPONSE,
       lambda s: s.send(h.headers(1, s.block(), pad=bytes(8))))
simple("generic/3.2/3", "Sends a HEADERS frame with priority", RESPONSE,
       lambda s: s.send(h.headers(1, s.block(), prio=(0, 255, False))))
for _n, _d, _prio in [(1, "with priority 1", (1, 0, 0, False)),
                      (2, "with priority 256", (1, 0, 255, False)),
                      (3, "with stream dependency", (3, 1, 0, False)),
                      (4, "with exclusive", (1, 0, 0, True)),
                      (5, "for an idle stream, then send a HEADER frame for a lower stream ID",
                       (3, 0, 255, False))]:
    simple(f"generic/3.3/{_n}", f"Sends a PRIORITY frame {_d}", RESPONSE,
           lambda s, p=_prio: s.send(h.priority(*p), h.headers(1, s.block())))
simple("generic/3.4/1", "Sends a RST_STREAM frame", ping_ack(or_close=True),
       lambda s: s.send(h.headers(1, s.block(), end_stream=False), h.rst(1, h.CANCEL),
                        h.ping(ZERO8)))
simple("generic/3.5/1", "Sends a SETTINGS frame", SETTINGS_ACK,
       lambda s: s.send(h.settings((h.S_HEADER_TABLE_SIZE, 4096), (h.S_ENABLE_PUSH, 1),
                                   (h.S_MAX_CONCURRENT_STREAMS, 100),
                                   (h.S_INITIAL_WINDOW_SIZE, 65535), (h.S_MAX_FRAME_SIZE, 16384),
                                   (h.S_MAX_HEADER_LIST_SIZE, 100))))
simple("generic/3.7/1", "Sends a PING frame", ping_ack(b"h2spec\0\0"),
       lambda s: s.send(h.ping(b"h2spec\0\0")))
simple("generic/3.8/1", "Sends a GOAWAY frame", CLOSED,
       lambda s: s.send(h.goaway(0, h.NO_ERROR, b"h2spec")))
simple("generic/3.9/1", "Sends a WINDOW_UPDATE frame with stream ID 0", ping_ack(),
       lambda s: s.send(h.window_update(0, 1), h.ping(ZERO8)))
simple("generic/3.9/2", "Sends a WINDOW_UPDATE frame with stream ID 1", RESPONSE,
       lambda s: s.send(h.headers(1, s.block()), h.window_update(1, 1)))
simple("generic/3.10/1", "Sends a CONTINUATION frame", RESPONSE,
       lambda s: s.send(h.headers(1, s.block()[:5], end_headers=False),
                        h.continuation(1, s.block()[5:])))
simple("generic/3.10/2", "Sends multiple CONTINUATION frames", RESPONSE,
       lambda s: s.send(h.headers(1, s.block()[:5], end_headers=False),
                        h.continuation(1, s.block()[5:10], end_headers=False),
                        h.continuation(1, s.block()[10:])))
simple("generic/4/1", "Sends a GET request", RESPONSE, lambda s: s.send(h.headers(1, s.block())))
simple("generic/4/2", "Sends a HEAD request", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("HEAD"))))
simple("generic/4/3", "Sends a POST request", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("POST"), end_stream=False), h.data(1, b"test")))
simple("generic/4/4", "Sends a POST request with trailers", RESPONSE,
       lambda s: s.send(h.headers(1, s.block("POST", [("trailer", "x-test")]), end_stream=False),
                        h.data(1, b"test", end_stream=False),
                        h.headers(1, h.block([("x-test", "ok")]))))
UA_H2SPEC = b"\x0auser-agent\x06h2spec"  # literal name and value
UA_H2SPEC_HUFF = b"\x87\xb5\x05\xb1\x61\xcc\x5a\x93\x84\x9c\x48\xac\xa4"  # Huffman-coded
XTEST_H2SPEC = b"\x06x-test\x06h2spec"
XTEST_H2SPEC_HUFF = b"\x85\xf2\xb2\x4a\x84\xff\x84\x9c\x48\xac\xa4"
for _n, _d, _rep in [
        (1, "a indexed header field representation", b"\xba"),
        (2, "a literal header field with incremental indexing - indexed name",
         b"\x40" + UA_H2SPEC_HUFF),
        (3, "a literal header field with incremental indexing - indexed name (with Huffman "
         "coding)", b"\x40" + UA_H2SPEC),
        (4, "a literal header field with incremental indexing - new name", b"\x40" + XTEST_H2SPEC),
        (5, "a literal header field with incremental indexing - new name (with Huffman coding)",
         b"\x40" + XTEST_H2SPEC_HUFF),
        (6, "a literal header field without indexing - indexed name", b"\x00" + UA_H2SPEC),
        (7, "a literal header field without indexing - indexed name (with Huffman coding)",
         b"\x00" + UA_H2SPEC_HUFF),
        (8, "a literal header field without indexing - new name", b"\x00" + XTEST_H2SPEC),
        (9, "a literal header field without indexing - new name (huffman encoded)",
         b"\x00" + XTEST_H2SPEC_HUFF),
        (10, "a literal header field never indexed - indexed name", b"\x10" + UA_H2SPEC),
        (11, "a literal header field never indexed - indexed name (huffman encoded)",
         b"\x10" + UA_H2SPEC_HUFF),
        (12, "a literal header field never indexed - new name", b"\x10" + XTEST_H2SPEC),
        (13, "a literal header field never indexed - new name (huffman encoded)",
         b"\x10" + XTEST_H2SPEC_HUFF)]:
    simple(f"generic/5/{_n}", f"Sends {_d}", RESPONSE, _append(_rep))
simple("generic/5/14", "Sends a dynamic table size update", RESPONSE,
       lambda s: s.send(h.headers(1, b"\x20" + s.block())))
simple("generic/5/15", "Sends multiple dynamic table size update", RESPONSE,
       lambda s: s.send(h.headers(1, b"\x20\x3f\xe1\x1f" + s.block())))

BY_ID = {c.id: c for c in CASES}
assert len(BY_ID) == len(CASES), "duplicate case ids"


def _lower_id_ignored_run(s):
    s.send(h.headers(5, s.block()), h.headers(3, s.block()))
    s.wait_ended(5)
    s.send(h.ping(b"barrier\0"))


def _lower_id_ignored(ev):
    if ev.goaways or ev.closed or ev.on(3):
        return False
    if any(fl & h.ACK and p == b"barrier\0" for fl, p in ev.pings):
        return ev.status(5) == 200
    return None


def _then_barrier(cid):
    """The case's own frames, then a PING: what follows them shows whether they were ignored."""
    def run(s):
        BY_ID[cid].run(s)
        s.send(h.ping(b"barrier\0"))
    return run


def _ignored(ev):
    """Nothing but the PING's answer (and stream 1's response, if the case started one)."""
    if (ev.goaways or ev.closed or any(sid != 1 for sid in ev.rsts)
            or ev.rsts.get(1) == h.STREAM_CLOSED):
        return False
    if any(fl & h.ACK and p == b"barrier\0" for fl, p in ev.pings):
        return True
    return None


CLOSED_STREAMS_NOT_KEPT = (
    "remora, as Envoy, sets nghttp2's no_closed_streams: closed streams are not kept for the "
    "deprecated priority tree (they cost up to max_concurrent_streams stream objects per "
    "connection), so a frame on a stream that is already closed is ignored rather than "
    "answered with STREAM_CLOSED, which RFC 9113 5.1 allows ('MAY treat')")

# Where remora knowingly differs from h2spec: id -> (why, what it does instead: an expectation
# and, when the case's own frames do not show it, the frames to send; both are checked).
DEVIATIONS = {
    **{cid: (CLOSED_STREAMS_NOT_KEPT,
             _desc(_ignored, "the frame is ignored: no GOAWAY, no close, no STREAM_CLOSED, a "
                   "PING after it answered"),
             _then_barrier(cid))
       for cid in ("http2/5.1/8", "http2/5.1/9", "http2/5.1/11", "http2/5.1/12")},
    "http2/5.1.1/2": (
        "nghttp2 (nghttpd does the same; Envoy's nghttp2-based codec too) ignores a HEADERS whose stream id is "
        "lower than one already used and names no stream it remembers: it cannot tell a new "
        "stream from a late trailer on a stream it already reset and forgot (a legitimate "
        "race, RFC 9113 5.1 'closed'), and failing the connection there would break busy "
        "honest clients. The request is neither served nor forwarded; the connection goes on",
        _desc(_lower_id_ignored, "stream 5 served, nothing on stream 3, no GOAWAY, a PING "
              "after it answered"),
        _lower_id_ignored_run),
}


# ---- running ----

def run_case(port, cs, expect=None, want_status=200, run=None, cid=None):
    """Runs one case on a new connection (its own frames, or `run`'s); returns None when it
    passed, else what happened."""
    expect = expect or cs.expect
    if want_status != 200 and expect is RESPONSE:
        expect = _desc(lambda e: _response(e, status=None), "a response HEADERS on stream 1")
    try:
        with H2Raw(port, preface=cs.handshake) as c:
            if cs.handshake:
                c.handshake(DEADLINE)
            s = Step(c, cid or cs.id)
            try:
                (run or cs.run)(s)
            except StepFailed as e:
                return str(e)
            ev = c.read(DEADLINE, until=lambda e: expect(e.since(s.m)) is not None)
            got = expect(ev.since(s.m))
            if got:
                return None
            return (f"expected {expect.desc}, got {'nothing decisive' if got is None else 'other'}"
                    f": {ev.since(s.m)}")
    except (AssertionError, OSError) as e:
        return f"{type(e).__name__}: {e}"


def sweep(port, cases, plan=None, want_status=200, workers=6):
    """{id: None (passed) or failure text} for `cases`, several connections at a time;
    `plan(case)` may give another (expectation, run) than the case's."""
    def one(cs):
        expect, run = plan(cs) if plan else (None, None)
        return cs.id, run_case(port, cs, expect, want_status, run=run)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return dict(ex.map(one, cases))


def _judge(results, deviations=DEVIATIONS):
    """Failure lines: cases that failed without a documented deviation, and deviations that
    no longer happen."""
    bad = []
    for cid, res in results.items():
        if cid in deviations:
            if res is None:
                bad.append(f"{cid}: passes now; drop it from DEVIATIONS")
        elif res is not None:
            bad.append(f"{cid} ({BY_ID[cid].desc}): {res}")
    return bad


def _proxy(ctx, **hcm):
    from proxyutil import start_proxy
    u = ctx.start_upstream(record=True)
    extra = {"codec_type": "HTTP2", "http2_protocol_options": {"max_concurrent_streams": 100}}
    extra.update(hcm)
    return u, start_proxy(ctx, {"c": [u]}, hcm_extra=extra)


def _still_serves(r, pid):
    assert r.pid == pid and r.alive()
    with H2Raw(r.port()) as c:
        c.send(h.headers(1, h.get_block()))
        ev = c.read(3, until=lambda e: e.ended(1) or e.closed)
        assert ev.status(1) == 200 and ev.ended(1), ev


def _check_deviations(port):
    """A deviation's alternative behaviour holds (its path gets an "/alt" suffix)."""
    bad = []
    for cid, (why, alt, alt_run) in DEVIATIONS.items():
        res = run_case(port, BY_ID[cid], alt, run=alt_run, cid=cid + "/alt")
        if res is not None:
            bad.append(f"{cid} deviation ({why}): {res}")
    return bad


def test_h2spec_sweep(ctx):
    u, r = _proxy(ctx)
    pid = r.pid
    t0 = time.monotonic()
    results = sweep(r.port(), CASES)
    took = time.monotonic() - t0
    bad = _judge(results) + _check_deviations(r.port())
    assert not bad, f"{len(bad)} of {len(CASES)} h2spec cases:\n" + "\n".join(bad)
    assert took < 30 * slow_factor(), took
    # nothing malformed, and no header block that ended in an error, reached the upstream
    rec = u.recorded()
    leaked = [cs.id for cs in CASES if cs.nofwd and f"/h2spec/{cs.id} ".encode() in rec]
    assert not leaked, f"forwarded to the upstream: {leaked}"
    # ... while the valid requests did (the record is what makes the check above meaningful)
    assert b"GET /h2spec/generic/4/1 HTTP/1.1" in rec and b"/h2spec/generic/5/13 " in rec
    # 5.1.1/2's ignored HEADERS (stream 3) never went upstream: only stream 5 did, each time
    assert rec.count(b"/h2spec/http2/5.1.1/2 ") == 1, rec.count(b"/h2spec/http2/5.1.1/2 ")
    assert rec.count(b"/h2spec/http2/5.1.1/2/alt ") == 1
    _still_serves(r, pid)


def test_h2spec_malformed_requests_stream_errors_when_configured(ctx):
    # with stream_error_on_invalid_http_message, each malformed request resets its stream only
    u, r = _proxy(ctx, stream_error_on_invalid_http_message=True)
    malformed = [cs for cs in CASES if cs.malformed]
    assert len(malformed) >= 15
    results = sweep(r.port(), malformed, plan=_reset_then_ping)
    bad = _judge(results, {})
    assert not bad, "\n".join(bad)
    rec = u.recorded()
    leaked = [cs.id for cs in malformed if cs.nofwd and f"/h2spec/{cs.id} ".encode() in rec]
    assert not leaked, f"forwarded to the upstream: {leaked}"


def _reset_then_ping(cs):
    """The case's frames, then (once stream 1 was reset) a PING: RST_STREAM(PROTOCOL_ERROR) on
    stream 1, no GOAWAY, and the PING answered: the connection goes on."""
    def run(s):
        cs.run(s)
        s.wait(lambda e: 1 in e.rsts or e.goaways or e.closed, "stream 1's reset")
        s.send(h.ping(b"goes-on\0"))

    def v(ev):
        if ev.goaways or ev.closed or ev.rsts.get(1, h.PROTOCOL_ERROR) != h.PROTOCOL_ERROR:
            return False
        if any(fl & h.ACK and p == b"goes-on\0" for fl, p in ev.pings):
            return 1 in ev.rsts
        return None
    return _desc(v, "RST_STREAM(PROTOCOL_ERROR) on 1, then a PING answered, no GOAWAY"), run


AUTO_SAMPLE = ["http2/3.5/1", "http2/3.5/2", "http2/4.1/1", "http2/4.3/1", "http2/5.1/1",
               "http2/6.5/1", "http2/6.9.1/2", "http2/8.1.2.3/1", "hpack/6.1/1", "generic/3.10/2",
               "generic/4/3", "generic/5/15"]


def test_h2spec_sample_with_codec_auto(ctx):
    # codec_type AUTO: the preface picks HTTP/2, so the cases behave as with HTTP2 (the
    # invalid preface is an HTTP/1.1 request line there: a 400 and a close)
    u, r = _proxy(ctx, codec_type="AUTO")
    results = sweep(r.port(), [BY_ID[i] for i in AUTO_SAMPLE])
    bad = _judge({i: res for i, res in results.items()},
                 {i: d for i, d in DEVIATIONS.items() if i in AUTO_SAMPLE})
    assert not bad, "\n".join(bad)
    _still_serves(r, r.pid)


def main(argv):
    """python3 test_h2spec.py PORT [ID-PREFIX]: the sweep against an h2c server (any status
    counts as a response), one line per case."""
    port = int(argv[1])
    cases = [cs for cs in CASES if len(argv) < 3 or cs.id.startswith(argv[2])]
    results = sweep(port, cases, want_status=None)
    for cs in cases:
        res = results[cs.id]
        print(f"{'ok  ' if res is None else 'FAIL'} {cs.id} {cs.desc}" +
              ("" if res is None else f"\n     {res}"))
    print(f"{sum(r is None for r in results.values())} of {len(cases)} passed")


if __name__ == "__main__":
    main(sys.argv)
