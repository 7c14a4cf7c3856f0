"""A dependency-free raw HTTP/2 client for hostile-input tests: frames built by hand (HPACK
literals without Huffman), sent in bounded batches, and the server's answer read back as
frames until EOF or a deadline (the recipe of ../shared/reference/hostile-inputs.md §(d)).

    c = H2Raw(port)                       # preface + empty SETTINGS
    c.handshake()                         # optional: SETTINGS exchanged and acknowledged
    c.send(headers(1, get_block(), end_stream=True))
    ev = c.read(timeout=2)                # Events: frames, goaways, rsts, settings, closed

Frame builders for every frame type (padding and priority included), HPACK literals and table
size updates; enough for test_h2spec.py's port of h2spec's cases.
"""

import socket
import struct
import time

from lib import slow_factor

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20

NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, \
    FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, \
    ENHANCE_YOUR_CALM = range(12)

S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE, \
    S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE = range(1, 7)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + \
        struct.pack(">I", sid & 0xffffffff) + payload


def settings(*pairs, ack=False):
    """SETTINGS with (id, value) pairs, or an ACK."""
    if ack:
        return frame(SETTINGS, ACK, 0)
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def rst(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def ping(data=b"12345678", ack=False):
    return frame(PING, ACK if ack else 0, 0, data)


def priority(sid, dep, weight=15, exclusive=False):
    return frame(PRIORITY, 0, sid, struct.pack(">I", dep | (0x80000000 if exclusive else 0)) +
                 bytes([weight]))


def _int(value, prefix_bits, first):
    """HPACK integer with an N-bit prefix; `first` holds the pattern bits above the prefix."""
    lim = (1 << prefix_bits) - 1
    if value < lim:
        return bytes([first | value])
    out = [first | lim]
    value -= lim
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _str(b):
    return _int(len(b), 7, 0) + b


def lit(name, value, indexing=False):
    """A literal field with a new (literal) name, without indexing (or with incremental
    indexing). Names and values are sent byte for byte: nothing is validated here."""
    n = name.encode("latin1") if isinstance(name, str) else name
    v = value.encode("latin1") if isinstance(value, str) else value
    return (b"\x40" if indexing else b"\x00") + _str(n) + _str(v)


def block(fields):
    """A request header block: GET http / (static table) and :authority, unless `fields`
    replaces them: a list of (name, value) pairs, sent as literals, or raw bytes."""
    if isinstance(fields, bytes):
        return fields
    return b"".join(lit(n, v) for n, v in fields)


def get_block(path="/", method="GET", authority="a", extra=()):
    return block([(":method", method), (":scheme", "http"), (":path", path),
                  (":authority", authority), *extra])


def headers(sid, blk, end_stream=True, end_headers=True, pad=None, prio=None):
    """HEADERS; `pad`: padding bytes (PADDED), `prio`: (dependency, weight, exclusive)."""
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = blk
    if prio is not None:
        dep, weight, excl = prio
        flags |= PRIORITY_FLAG
        payload = struct.pack(">I", dep | (0x80000000 if excl else 0)) + bytes([weight]) + payload
    if pad is not None:
        flags |= PADDED
        payload = bytes([len(pad)]) + payload + pad
    return frame(HEADERS, flags, sid, payload)


def data(sid, payload=b"", end_stream=True, pad=None):
    """DATA; `pad`: padding bytes (PADDED)."""
    flags = END_STREAM if end_stream else 0
    if pad is not None:
        flags |= PADDED
        payload = bytes([len(pad)]) + payload + pad
    return frame(DATA, flags, sid, payload)


def continuation(sid, blk, end_headers=True):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, blk)


def goaway(last_sid, code=NO_ERROR, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last_sid, code) + debug)


def push_promise(sid, promised, blk, end_headers=True):
    return frame(PUSH_PROMISE, END_HEADERS if end_headers else 0, sid,
                 struct.pack(">I", promised) + blk)


def size_update(n):
    """An HPACK dynamic table size update to `n` (RFC 7541 6.3)."""
    return _int(n, 5, 0x20)


def parse_settings(payload):
    """{id: value} of a SETTINGS payload (a trailing partial entry is ignored)."""
    return {int.from_bytes(payload[i:i + 2], "big"): int.from_bytes(payload[i + 2:i + 6], "big")
            for i in range(0, len(payload) - 5, 6)}


class Events:
    """What the server sent: all frames, GOAWAYs as (last_stream_id, code), RSTs as
    {sid: code}, and whether the connection ended."""

    def __init__(self, frames, closed):
        self.frames = frames
        self.closed = closed
        self.goaways = [(int.from_bytes(p[:4], "big") & 0x7fffffff, int.from_bytes(p[4:8], "big"))
                        for t, _, _, p in frames if t == GOAWAY]
        self.rsts = {sid: int.from_bytes(p[:4], "big") for t, _, sid, p in frames
                     if t == RST_STREAM}
        self.pings = [(fl, p) for t, fl, _, p in frames if t == PING]
        self.settings = [(fl, parse_settings(p)) for t, fl, _, p in frames if t == SETTINGS]

    def since(self, mark):
        """The Events of the frames after `mark` (H2Raw.mark())."""
        return Events(self.frames[mark:], self.closed)

    def on(self, sid, ftype=None):
        return [f for f in self.frames if f[2] == sid and (ftype is None or f[0] == ftype)]

    def ended(self, sid):
        """Stream `sid` got a frame with END_STREAM."""
        return any(f[2] == sid and f[0] in (HEADERS, DATA) and f[1] & END_STREAM
                   for f in self.frames)

    def status(self, sid):
        """The :status of the first response HEADERS on `sid` when it is a static-table index
        (what nghttp2 sends for 200/204/206/304/400/404/500), else None."""
        table = {0x88: 200, 0x89: 204, 0x8a: 206, 0x8b: 304, 0x8c: 400, 0x8d: 404, 0x8e: 500}
        for t, _, s, p in self.frames:
            if s == sid and t == HEADERS and p:
                return table.get(p[0])
        return None

    def __repr__(self):
        return (f"Events(goaways={self.goaways}, rsts={self.rsts}, closed={self.closed}, "
                f"types={[(f[0], f[2]) for f in self.frames][:40]})")


def split_frames(buf):
    """The whole frames at the start of `buf` as [(type, flags, sid, payload)], and the bytes
    left over (a partial frame)."""
    out = []
    while len(buf) >= 9:
        n = int.from_bytes(buf[:3], "big")
        if len(buf) < 9 + n:
            break
        out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n]))
        buf = buf[9 + n:]
    return out, buf


class H2Raw:
    def __init__(self, port, host="127.0.0.1", preface=True, first=None, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect((host, port))
        self.buf = b""
        self.frames = []
        self.closed = False
        self.peer_settings = {}  # the server's first SETTINGS, after handshake()
        if preface:
            self.send(PREFACE + (settings() if first is None else first))

    def send(self, data):
        """Sends `data`; False when the server has already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            return False

    def _parse(self):
        frames, self.buf = split_frames(self.buf)
        self.frames += frames

    def read(self, timeout=2.0, until=None):
        """Reads until EOF, `timeout` (scaled by slow_factor), or until `until(Events)` holds.
        Returns the Events of everything read on this connection so far."""
        deadline = time.monotonic() + timeout * slow_factor()
        while not self.closed:
            if until is not None and until(Events(self.frames, self.closed)):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(min(left, 0.2))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, OSError):
                self.closed = True
                break
            if not chunk:
                self.closed = True
                break
            self.buf += chunk
            self._parse()
        return Events(self.frames, self.closed)

    def handshake(self, timeout=2.0):
        """h2spec's handshake: waits for the server's SETTINGS (answered with an ACK) and for
        the ACK of ours. Returns the server's settings ({id: value}); raises AssertionError when
        they do not come."""
        ev = self.read(timeout, until=lambda e: any(not fl & ACK for fl, _ in e.settings) and
                       any(fl & ACK for fl, _ in e.settings))
        server = [st for fl, st in ev.settings if not fl & ACK]
        assert server and any(fl & ACK for fl, _ in ev.settings), f"no SETTINGS handshake: {ev}"
        self.send(settings(ack=True))
        self.peer_settings = server[0]
        return server[0]

    def mark(self):
        """The number of frames read so far (see Events.since)."""
        return len(self.frames)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
