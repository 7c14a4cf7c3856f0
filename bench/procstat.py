#!/usr/bin/env python3
"""Process and port helpers for bench/run.sh (python3 stdlib only).

Every figure is taken over a process *tree*: the pid that run.sh started plus all its
descendants (nginx master + worker, nghttpx main + worker). /proc/PID/stat of a thread-group
leader already counts all of its threads, so summing over processes covers threads too.

  procstat.py ports N            print N distinct free loopback TCP ports, one per line
  procstat.py tree PID...        print the pids of the trees rooted at PID...
  procstat.py cpu PID...         print user+sys clock ticks summed over the trees
  procstat.py rss PID...         print VmRSS in KiB summed over the trees
  procstat.py sample OUT PID...  sample rss every 0.1 s until SIGTERM/SIGINT (or 600 s);
                                 keeps the maximum seen in OUT (KiB), rewritten after each sample
  procstat.py clktck             print the kernel clock tick rate (ticks per second)
  procstat.py pingpong A B        print the mean round trip, in microseconds, of one byte over a
                                 socketpair between two processes pinned to cores A and B
  procstat.py snap ROOT          print "busy total steal ours": machine-wide user+nice+system,
                                 all, and steal ticks from /proc/stat, and the ticks of ROOT's
                                 tree including reaped children (utime+stime+cutime+cstime);
                                 two snaps give the CPU that processes outside ROOT used
"""

import os
import signal
import socket
import sys
import time


def children_map():
    """Map ppid -> [pid] over every process currently in /proc."""
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(roots):
    kids = children_map()
    seen = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen or not os.path.exists(f"/proc/{pid}"):
            continue
        seen.append(pid)
        todo.extend(kids.get(pid, []))
    return seen


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        total += int(fields[11]) + int(fields[12])
    return total


def tree_ticks_with_children(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total


def snap(root):
    with open("/proc/stat") as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    busy = cpu[0] + cpu[1] + cpu[2]
    total = sum(cpu[:8])
    return busy, total, cpu[7], tree_ticks_with_children(tree([root]))


def pingpong(core_a, core_b, n=5000):
    """Calibration: what one wakeup across cores costs on this machine, against the same core."""
    s1, s2 = socket.socketpair()
    child = os.fork()
    if child == 0:
        try:
            os.sched_setaffinity(0, {core_b})
            for _ in range(n):
                s2.recv(1)
                s2.send(b"x")
        finally:
            os._exit(0)
    os.sched_setaffinity(0, {core_a})
    t0 = time.perf_counter()
    for _ in range(n):
        s1.send(b"x")
        s1.recv(1)
    dt = time.perf_counter() - t0
    os.waitpid(child, 0)
    return dt / n * 1e6


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def free_ports(n):
    # Hold every socket open until all are bound, so the n ports are distinct.
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def sample(out, roots):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    best = 0
    deadline = time.monotonic() + 600
    while not stop and time.monotonic() < deadline:
        # Re-walk the tree each time: a proxy may fork or reap workers during the run.
        cur = rss_kib(tree(roots))
        if cur > best:
            best = cur
            tmp = out + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{best}\n")
            os.replace(tmp, out)
        time.sleep(0.1)
    if best == 0:
        with open(out, "w") as f:
            f.write("0\n")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "ports":
        print("\n".join(str(p) for p in free_ports(int(args[0]))))
    elif cmd == "tree":
        print(" ".join(str(p) for p in tree(int(a) for a in args)))
    elif cmd == "cpu":
        print(cpu_ticks(tree(int(a) for a in args)))
    elif cmd == "rss":
        print(rss_kib(tree(int(a) for a in args)))
    elif cmd == "sample":
        sample(args[0], [int(a) for a in args[1:]])
    elif cmd == "pingpong":
        print("%.1f" % pingpong(int(args[0]), int(args[1])))
    elif cmd == "snap":
        print(" ".join(str(x) for x in snap(int(args[0]))))
    elif cmd == "clktck":
        print(os.sysconf("SC_CLK_TCK"))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
