#!/usr/bin/env python3
"""Hold N idle HTTP/1.1 keep-alive connections open to a server (python3 stdlib only).

  idle_conns.py --port P [--host 127.0.0.1] [--count 1000] [--path /] --ready FILE [--hold-max 600]

Two phases, so run.sh can read the server's memory after each:
  1. sequential: open the connections one after another, each carrying one full request and
     response before the next is opened; then write "seq N" to FILE.seq and wait (30 s at most)
     for FILE.go to appear. This is the cost of N connections that are only idle.
  2. burst: send a second request on every connection before reading any response, so the
     server has N requests in flight at once (and a proxy opens up to N upstream connections),
     then read all the responses. Writes "ready N" to FILE. This is the usual "1000 idle
     connections" figure: it includes what the server kept from the burst.
Then holds them idle until SIGTERM/SIGINT or --hold-max seconds. On the way out it counts the
connections the server closed meanwhile and writes "open N" (still open) to FILE.done. Exits
non-zero, with the reason in FILE.err, if any connection fails during setup.
"""

import argparse
import os
import select
import signal
import socket
import sys
import time


def read_response(sock, buf):
    """Read one response from `sock`; `buf` holds bytes already read. Returns the leftover."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before response headers")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()
    if len(status) < 2 or status[1] != b"200":
        raise ConnectionError("status line %r" % lines[0][:80])
    length = None
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        # Enough for a benchmark: the body ends at the zero-size chunk with no trailers.
        while b"0\r\n\r\n" not in rest:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed inside chunked body")
            rest += chunk
        return rest[rest.index(b"0\r\n\r\n") + 5:]
    if length is None:
        raise ConnectionError("response without Content-Length or chunked framing")
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside body")
        rest += chunk
    return rest[length:]


def still_open(socks):
    """Count connections that the peer has not closed (no EOF or error pending)."""
    n = 0
    poller = select.poll()
    for s in socks:
        poller.register(s, select.POLLIN)
    ready = {fd: ev for fd, ev in poller.poll(0)}
    for s in socks:
        ev = ready.get(s.fileno(), 0)
        if ev == 0:
            n += 1
            continue
        if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
            continue
        try:
            data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:
            continue
        if data:
            n += 1  # unexpected bytes, but the connection is open
    return n


def write_atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--path", default="/")
    ap.add_argument("--ready", required=True)
    ap.add_argument("--hold-max", type=float, default=600)
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUser-Agent: remora-bench-idle\r\n\r\n"
           % (a.path, a.host, a.port)).encode()
    socks = []
    phase = "sequential"
    idx = 0
    try:
        for idx in range(a.count):
            s = socket.create_connection((a.host, a.port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(req)
            if read_response(s, b""):
                raise ConnectionError("unexpected bytes after the response")
            socks.append(s)
            if stop:
                return 1
        write_atomic(a.ready + ".seq", "seq %d\n" % len(socks))
        deadline = time.monotonic() + 30
        while not os.path.exists(a.ready + ".go") and time.monotonic() < deadline and not stop:
            time.sleep(0.01)
        phase = "burst"
        for idx, s in enumerate(socks):
            s.sendall(req)
        for idx, s in enumerate(socks):
            if read_response(s, b""):
                raise ConnectionError("unexpected bytes after the response")
    except (OSError, ConnectionError, ValueError) as e:
        with open(a.ready + ".err", "w") as f:
            f.write("%s phase, connection %d of %d: %s\n" % (phase, idx + 1, a.count, e))
        return 1

    write_atomic(a.ready, "ready %d\n" % len(socks))

    deadline = time.monotonic() + a.hold_max
    while not stop and time.monotonic() < deadline:
        time.sleep(0.05)

    with open(a.ready + ".done", "w") as f:
        f.write("open %d\n" % still_open(socks))
    for s in socks:
        s.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
