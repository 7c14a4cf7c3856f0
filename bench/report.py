#!/usr/bin/env python3
"""Parsing and reporting for bench/run.sh (python3 stdlib only).

  report.py record RESULTS --target T --workload W --rep N --tool wrk|h2load --out FILE
                   [--h2log FILE] [--cpu-ticks N] [--clktck N] [--rss-load KIB]
                   [--rss-idle1k KIB] [--extra TEXT]
      Parse one wrk/h2load run and append a row to RESULTS (TSV). Prints a one-line summary.
  report.py strace FILE REQUESTS
      Parse `strace -c` output: prints "<calls per request>\t<top syscalls per request>".
  report.py wrk-requests FILE
      Print the requests a wrk run completed (for the backend choice).
  report.py callgrind DUMP H2LOAD_OUT
      Instructions per request of one callgrind count: prints "<Ir per request>\t<Ir>\t<requests>",
      or a one-line reason and exits 1 (no totals, or a request failed).
  report.py render RESULTS FACTS META
      Print the markdown report. FACTS is TSV "target key value" (status, rss_idle, syscalls,
      ...); META is "key=value" lines (date, machine, versions, durations, notes_file).
"""

import argparse
import os
import statistics
import sys

COLS = ["target", "workload", "rep", "rps", "requests", "p50_us", "p99_us", "errors",
        "cpu_ticks", "cpu_us_req", "rss_load_kib", "rss_idle1k_kib", "rss_pre_kib",
        "rss_seq_kib", "bg_pct", "steal_pct", "extra", "rss_settled_kib"]

WORKLOADS = {
    "c64": "wrk -c64: throughput, small body",
    "c8": "wrk -c8: latency, small body",
    "c1": "wrk -c1: single connection, small body",
    "idle-c64": "wrk -c64 with 1000 idle keep-alive connections held open",
    "weighted": "wrk -c64, 90/10 weighted split over two clusters",
    "big": "wrk -c8, 1 MiB response body",
    "h2": "h2load -c16 -m10 over h2c (prior knowledge)",
    "tls": "wrk -c64 over HTTPS: TLS 1.3 termination (ECDSA P-256), small body",
}

TARGET_NAMES = {"direct": "direct", "remora": "remora", "haproxy": "HAProxy",
                "nginx": "nginx", "nghttpx": "nghttpx"}


# ---- parsing --------------------------------------------------------------------------------

def to_us(text):
    """wrk prints durations as 612.00us, 1.23ms, 2.00s or 1.50m."""
    for suffix, mult in (("us", 1.0), ("ms", 1e3), ("s", 1e6), ("m", 60e6)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * mult
    return float(text)


def parse_wrk(path):
    r = {"rps": None, "requests": None, "p50_us": None, "p99_us": None, "errors": 0}
    with open(path) as f:
        for line in f:
            w = line.split()
            if not w:
                continue
            if w[0] == "Requests/sec:":
                r["rps"] = float(w[1])
            elif len(w) >= 3 and w[1] == "requests" and w[2] == "in":
                r["requests"] = int(w[0])
            elif w[0] == "50%" and len(w) == 2:
                r["p50_us"] = to_us(w[1])
            elif w[0] == "99%" and len(w) == 2:
                r["p99_us"] = to_us(w[1])
            elif line.strip().startswith("Non-2xx or 3xx responses:"):
                r["errors"] += int(w[-1])
            elif w[0] == "Socket" and w[1] == "errors:":
                # Socket errors: connect 0, read 0, write 0, timeout 0
                r["errors"] += sum(int(x.strip(",")) for x in w[3::2])
    return r


def parse_h2load(path, log):
    r = {"rps": None, "requests": None, "p50_us": None, "p99_us": None, "errors": 0,
         "succeeded": None, "failed": 0, "non2xx": 0}
    with open(path) as f:
        for line in f:
            w = line.replace(",", "").split()
            if not w:
                continue
            if w[0] == "finished" and "req/s" in w:
                r["rps"] = float(w[w.index("req/s") - 1])
            elif w[0] == "requests:":
                # requests: T total, S started, D done, OK succeeded, F failed, E errored, TO timeout
                r["requests"] = int(w[5])
                r["succeeded"], r["failed"] = int(w[7]), int(w[9])
                r["errors"] += int(w[9]) + int(w[11]) + int(w[13])
            elif w[0] == "status" and w[1] == "codes:":
                r["errors"] += int(w[4]) + int(w[6]) + int(w[8])
                r["non2xx"] = int(w[4]) + int(w[6]) + int(w[8])
    if log and os.path.exists(log):
        # --log-file: start time (us since epoch), status, duration (us); one line per request.
        durs = []
        with open(log) as f:
            for line in f:
                w = line.split("\t")
                if len(w) >= 3:
                    durs.append(float(w[2]))
        if durs:
            durs.sort()
            r["p50_us"] = durs[int(0.50 * (len(durs) - 1))]
            r["p99_us"] = durs[int(0.99 * (len(durs) - 1))]
    return r


def parse_strace(path, requests):
    """strace -c table: '% time  seconds  usecs/call  calls  errors  syscall', then 'total'."""
    rows = []
    total = None
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) < 5 or not w[0].replace(".", "").isdigit():
                continue
            calls = int(w[3])
            if w[-1] == "total":
                total = calls
            else:
                rows.append((calls, w[-1]))
    if total is None or requests <= 0:
        return None, ""
    rows.sort(reverse=True)
    top = ", ".join("%s %.2f" % (name, calls / requests) for calls, name in rows[:6])
    return total / requests, top


def parse_callgrind(dump, h2load_out):
    """(Ir per request, Ir, requests) of a callgrind dump and the h2load run it counted, or
    (None, reason)."""
    ir = None
    try:
        with open(dump) as f:
            for line in f:
                if line.startswith("totals:"):
                    ir = int(line.split()[1])
                elif line.startswith("summary:") and ir is None:
                    ir = int(line.split()[1]) or None
    except OSError:
        return None, "no callgrind dump"
    try:
        r = parse_h2load(h2load_out, None)
    except (OSError, ValueError, IndexError):
        return None, "h2load output unreadable"
    if not r["succeeded"]:
        return None, "h2load: no request succeeded"
    if r["failed"] or r["non2xx"]:
        return None, "h2load: %d of %d requests failed, %d answers not 2xx" % (
            r["failed"], r["succeeded"] + r["failed"], r["non2xx"])
    if not ir:
        return None, "no instructions in the callgrind dump"
    return (ir / r["succeeded"], ir, r["succeeded"]), ""


# ---- recording -------------------------------------------------------------------------------

def fmt_num(v):
    return "" if v is None else ("%.3f" % v if isinstance(v, float) else str(v))


def cmd_record(argv):
    ap = argparse.ArgumentParser(prog="report.py record")
    ap.add_argument("results")
    ap.add_argument("--target", required=True)
    ap.add_argument("--workload", required=True)
    ap.add_argument("--rep", type=int, required=True)
    ap.add_argument("--tool", choices=["wrk", "h2load"], required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--h2log", help="h2load --log-file of the latency run (with --lat-out)")
    ap.add_argument("--lat-out", help="h2load output of the latency run, the one with --h2log")
    ap.add_argument("--cpu-ticks", type=int)
    ap.add_argument("--clktck", type=int, default=100)
    ap.add_argument("--rss-load", type=int)
    ap.add_argument("--rss-idle1k", type=int)
    ap.add_argument("--rss-pre", type=int)
    ap.add_argument("--rss-seq", type=int)
    ap.add_argument("--rss-settled", type=int)
    ap.add_argument("--snaps", help="two procstat.py snaps: 'B0 T0 S0 O0 B1 T1 S1 O1'")
    ap.add_argument("--ncpu", type=int, default=os.cpu_count())
    ap.add_argument("--extra", default="")
    a = ap.parse_args(argv)
    r = parse_wrk(a.out) if a.tool == "wrk" else parse_h2load(a.out, None)
    if r["rps"] is None or not r["requests"]:
        print("no result in %s" % a.out, file=sys.stderr)
        return 1
    extra = a.extra
    if a.lat_out and os.path.exists(a.lat_out):
        # h2load's percentiles come from a second run that wrote the per-request log (run.sh:
        # the log costs the load core too much to be written during the timed run).
        lat = parse_h2load(a.lat_out, a.h2log)
        r["p50_us"], r["p99_us"] = lat["p50_us"], lat["p99_us"]
        if lat["rps"] is not None:
            extra = "latency run %.0f req/s" % lat["rps"] + ("; " + extra if extra else "")
    cpu_us = None
    if a.cpu_ticks is not None:
        cpu_us = a.cpu_ticks * 1e6 / a.clktck / r["requests"]
    bg = steal = None
    if a.snaps:
        b0, t0, s0, o0, b1, t1, s1, o1 = (int(x) for x in a.snaps.split())
        wall = (t1 - t0) / a.ncpu  # ticks of one core over the run
        if wall > 0:
            bg = max(0.0, ((b1 - b0) - (o1 - o0)) * 100.0 / wall)
            steal = (s1 - s0) * 100.0 / wall
    row = [a.target, a.workload, a.rep, r["rps"], r["requests"], r["p50_us"], r["p99_us"],
           r["errors"], a.cpu_ticks, cpu_us, a.rss_load, a.rss_idle1k, a.rss_pre, a.rss_seq,
           bg, steal, extra, a.rss_settled]
    new = not os.path.exists(a.results)
    with open(a.results, "a") as f:
        if new:
            f.write("\t".join(COLS) + "\n")
        f.write("\t".join(fmt_num(v) for v in row) + "\n")
    msg = "%8.0f req/s  p50 %s  p99 %s" % (r["rps"], us(r["p50_us"]), us(r["p99_us"]))
    if cpu_us is not None:
        msg += "  cpu %.1f us/req" % cpu_us
    if a.rss_load:
        msg += "  rss %.1f MiB" % (a.rss_load / 1024)
    if bg is not None:
        msg += "  bg %.0f%%" % bg
    if r["errors"]:
        msg += "  ERRORS %d" % r["errors"]
    print(msg)
    return 0


# ---- rendering -------------------------------------------------------------------------------

def us(v):
    if v is None:
        return "-"
    if v >= 10000:
        return "%.1f ms" % (v / 1000)
    return "%.0f µs" % v


def rps(v):
    return "-" if v is None else "{:,.0f}".format(v)


def mib(kib):
    return "-" if kib is None else "%.1f" % (kib / 1024)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


def load_results(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            vals = line.rstrip("\n").split("\t")
            row = dict(zip(header, vals))
            for k in ("rps", "p50_us", "p99_us", "cpu_us_req", "bg_pct", "steal_pct"):
                row[k] = float(row[k]) if row.get(k) else None
            for k in ("requests", "errors", "rss_load_kib", "rss_idle1k_kib", "rss_pre_kib",
                      "rss_seq_kib", "rss_settled_kib", "rep"):
                row[k] = int(row[k]) if row.get(k) else None
            rows.append(row)
    return rows


class Stat:
    """Median and range of one figure over the repetitions."""

    def __init__(self, values):
        self.v = [x for x in values if x is not None]

    @property
    def med(self):
        return statistics.median(self.v) if self.v else None

    def show(self, f):
        if not self.v:
            return "-"
        if len(self.v) == 1:
            return f(self.v[0])
        return "%s (%s..%s)" % (f(self.med), f(min(self.v)), f(max(self.v)))


def cpu(v):
    return "-" if v is None else "%.1f" % v


def targets_table(p, stat, rep1, facts, pair_ratio_med, measured):
    """The issue's targets for remora, each with this run's figure. Informational: a benchmark
    never fails on a number, and one run on this machine drifts by more than some margins."""
    if not measured("remora", "c64"):
        return
    rows = []

    def row(what, goal, value, ok):
        rows.append((what, goal, value, "" if ok is None else "met" if ok else "**not met**"))

    def rel(t, w, k, ref):
        a, b = stat(t, w, k).med, stat(ref, w, k).med
        return a / b if a is not None and b else None

    if measured("haproxy", "c64"):
        x = rel("remora", "c64", "rps", "haproxy")
        if x is not None:
            row("c64 req/s against HAProxy", ">= 1.10x", "%.3fx" % x, x >= 1.10)
        x = rel("remora", "c64", "cpu_us_req", "haproxy")
        if x is not None:
            row("c64 CPU per request against HAProxy", "<= 0.85x", "%.3fx" % x, x <= 0.85)
    sc = facts.get(("remora", "syscalls"))
    if sc:
        row("syscalls per request at c64", "<= 4.5", sc, float(sc) <= 4.5)
    if measured("remora", "c8") and measured("haproxy", "c8"):
        a, b = stat("remora", "c8", "p99_us").med, stat("haproxy", "c8", "p99_us").med
        if a is not None and b is not None:
            row("p99 at c8 against HAProxy's", "no higher", "%s vs %s" % (us(a), us(b)), a <= b)
    idle = facts.get(("remora", "rss_idle"))
    if idle:
        row("RSS idle", "< 8 MiB", mib(int(idle)) + " MiB", int(idle) < 8 * 1024)
    if measured("remora", "idle-c64"):
        pre = rep1("remora", "idle-c64", "rss_pre_kib")
        after = rep1("remora", "idle-c64", "rss_idle1k_kib")
        seq = rep1("remora", "idle-c64", "rss_seq_kib")
        if pre and after:
            row("RSS growth with 1000 idle keep-alive connections (after the burst; "
                "sequential)", "< 2 MiB", "%s; %s MiB" % (mib(after - pre),
                                                          mib(seq - pre) if seq else "-"),
                after - pre < 2048)
    if measured("remora", "h2") and measured("nghttpx", "h2"):
        x = rel("remora", "h2", "rps", "nghttpx")
        if x is not None:
            row("h2c req/s against nghttpx", ">= 1.10x", "%.3fx" % x, x >= 1.10)
    if measured("remora", "weighted"):
        x = pair_ratio_med("remora", "weighted", "single90", "rps")
        if x is not None:
            row("90/10 split against a single cluster with the same 90/10 load (endpoint "
                "weights; req/s, median of the pairs)", "cost < 5 %", "%.3fx" % x, x > 0.95)
        x = pair_ratio_med("remora", "weighted", "single", "rps")
        if x is not None:
            row("90/10 split against the round-robin c64 route (req/s, median of the pairs; "
                "also measures the backends' uneven load)", "(information)", "%.3fx" % x, None)
    cw = facts.get(("remora", "cg:weighted"))
    cs = facts.get(("remora", "cg:single90")) or facts.get(("remora", "cg:c64"))
    if cw and cs:
        x = float(cw) / float(cs)
        row("90/10 split against a single cluster (user-space instructions per request, "
            "callgrind)", "cost < 5 %", "%+.2f %%" % (100 * (x - 1)), x < 1.05)
    if not rows:
        return
    p("## The targets of the benchmark issue, in this run")
    p("")
    p("| target | goal | this run | |")
    p("|---|---|---|---|")
    for r in rows:
        p("| %s | %s | %s | %s |" % r)
    p("")


def instr(v):
    return "-" if not v else "{:,.0f}".format(float(v))


def cmd_render(argv):
    results_path, facts_path, meta_path = argv
    rows = load_results(results_path)
    facts = {}
    if os.path.exists(facts_path):
        with open(facts_path) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t", 2)
                if len(parts) == 3:
                    facts[(parts[0], parts[1])] = parts[2]
    meta = {}
    with open(meta_path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            meta[k] = v
    targets = meta.get("targets", "").split(",")
    workloads = meta.get("workloads", "").split(",")
    durations = dict(kv.split(":") for kv in meta.get("durations", "").split(",") if kv)

    def get(t, w):
        return [r for r in rows if r["target"] == t and r["workload"] == w]

    def stat(t, w, k):
        return Stat(r[k] for r in get(t, w))

    def rep1(t, w, k):
        """A figure of the first repetition: RSS under load, before later bursts inflate it."""
        first = [r[k] for r in get(t, w) if r["rep"] == 1 and r[k] is not None]
        return first[0] if first else stat(t, w, k).med

    def pair_stat(t, w, base, k):
        """W over BASE, repetition by repetition: for runs made next to each other."""
        a = {r["rep"]: r[k] for r in get(t, w) if r[k] is not None}
        b = {r["rep"]: r[k] for r in get(t, base) if r[k]}
        return Stat(a[i] / b[i] for i in a if i in b)

    def pair_ratio(t, w, k, base="single"):
        return pair_stat(t, w, base, k).show(lambda v: "%.2f" % v)

    def status(t):
        return facts.get((t, "status"), "")

    def cell_status(t, w):
        """Why a target has no figures for a workload, or None if it should have some."""
        if status(t) != "ok":
            return status(t) or "not run"
        why = facts.get((t, "na:" + w))
        if why:
            return why
        if not get(t, w):
            return "no result (see log)"
        return None

    def applies(t, w):
        return facts.get((t, "applies:" + w)) == "yes"

    out = []
    p = out.append
    p("# remora load benchmark")
    p("")
    p("- date: %s" % meta.get("date", "?"))
    p("- machine: %s" % meta.get("machine", "?"))
    p("- kernel: %s" % meta.get("kernel", "?"))
    if meta.get("pingpong"):
        p("- wakeup calibration: %s" % meta["pingpong"])
    p("- versions: %s" % meta.get("versions", "?"))
    p("- remora: %s" % meta.get("remora", "?"))
    p("- mode: %s; %s repetition(s), interleaved across targets; figures are medians, "
      "(min..max) over the repetitions" % (meta.get("mode", "?"), meta.get("reps", "?")))
    p("- backends: %s" % meta.get("backends", "?"))
    p("- pinning: %s" % meta.get("pinning", "?"))
    bgs = [r["bg_pct"] for r in rows if r["bg_pct"] is not None]
    steals = [r["steal_pct"] for r in rows if r["steal_pct"] is not None]
    if bgs:
        p("- background CPU (processes outside the benchmark, %% of one core, during the runs): "
          "median %.0f, max %.0f; steal: median %.1f, max %.1f%s" % (
              statistics.median(bgs), max(bgs), statistics.median(steals), max(steals),
              "; **the machine was busy: req/s and latency are unreliable, CPU µs/req less so**"
              if statistics.median(bgs) > 10 else ""))
    if meta.get("quiet"):
        p("- quiet wait: %s" % meta["quiet"])
    p("- duration per run: %s" % ", ".join("%s %ss" % (w, durations.get(w, "?"))
                                          for w in workloads))
    p("")

    # Summary: the c64 workload plus memory, with ratios.
    base_w = "c64" if "c64" in workloads else None
    if base_w:
        p("## Summary (wrk -t1 -c64, small body)")
        p("")
        p("| target | req/s | p50 | p99 | CPU µs/req | RSS idle MiB | RSS load MiB (rep 1) | "
          "RSS 1000 idle MiB | req/s ×direct | req/s ×HAProxy | CPU ×HAProxy | syscalls/req | "
          "instructions/req |")
        p("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        d_rps = stat("direct", base_w, "rps").med
        h_rps = stat("haproxy", base_w, "rps").med
        h_cpu = stat("haproxy", base_w, "cpu_us_req").med
        for t in targets:
            if not applies(t, base_w):
                continue
            why = cell_status(t, base_w)
            if why:
                p("| %s | %s |%s" % (TARGET_NAMES.get(t, t), why, " |" * 11))
                continue
            r, c = stat(t, base_w, "rps").med, stat(t, base_w, "cpu_us_req").med
            idle_k = facts.get((t, "rss_idle"))
            idle1k = rep1(t, "idle-c64", "rss_idle1k_kib")
            p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                TARGET_NAMES.get(t, t), rps(r), us(stat(t, base_w, "p50_us").med),
                us(stat(t, base_w, "p99_us").med), cpu(c),
                mib(int(idle_k)) if idle_k else "-",
                mib(rep1(t, base_w, "rss_load_kib")), mib(idle1k),
                ratio(r, d_rps) if t != "direct" else "1.00",
                ratio(r, h_rps), ratio(c, h_cpu) if c is not None else "-",
                facts.get((t, "syscalls"), "-"), instr(facts.get((t, "cg:c64")))))
        p("")

    targets_table(p, stat, rep1, facts, lambda *a: pair_stat(*a).med, lambda t, w: (
        applies(t, w) and not cell_status(t, w)))

    for w in workloads:
        p("## %s" % WORKLOADS.get(w, w))
        p("")
        ref_t = "nghttpx" if w == "h2" else "haproxy"
        ref_name = TARGET_NAMES[ref_t]
        p("| target | req/s | p50 | p99 | CPU µs/req | RSS load MiB (rep 1) | req/s ×direct | "
          "req/s ×%s | CPU ×%s | bg / steal %% | notes |" % (ref_name, ref_name))
        p("|---|---|---|---|---|---|---|---|---|---|---|")
        d_rps = stat("direct", w, "rps").med
        h_rps = stat(ref_t, w, "rps").med
        h_cpu = stat(ref_t, w, "cpu_us_req").med
        for t in targets:
            if not applies(t, w):
                continue
            why = cell_status(t, w)
            if why:
                p("| %s | %s |%s" % (TARGET_NAMES.get(t, t), why, " |" * 9))
                continue
            r = stat(t, w, "rps")
            c = stat(t, w, "cpu_us_req")
            errs = sum(x["errors"] or 0 for x in get(t, w))
            notes = []
            if errs:
                notes.append("%d errors (non-2xx or socket)" % errs)
            extras = sorted(set(x["extra"] for x in get(t, w) if x.get("extra")))
            notes.extend(extras)
            bg = Stat(x["bg_pct"] for x in get(t, w))
            st = Stat(x["steal_pct"] for x in get(t, w))
            p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                TARGET_NAMES.get(t, t), r.show(rps), stat(t, w, "p50_us").show(us),
                stat(t, w, "p99_us").show(us), c.show(cpu),
                mib(rep1(t, w, "rss_load_kib")),
                ratio(r.med, d_rps) if d_rps and t != "direct" else "-",
                ratio(r.med, h_rps), ratio(c.med, h_cpu),
                "-" if bg.med is None else "%.0f (max %.0f) / %.0f (max %.0f)" % (
                    bg.med, max(bg.v), st.med, max(st.v)),
                "; ".join(notes)))
        p("")
        if w == "idle-c64":
            settle = meta.get("settle_s")
            p("Memory with %s idle keep-alive connections, read before the wrk run, in the first "
              "repetition (later ones reuse what the proxy kept from it). *sequential*: the "
              "connections were opened one at a time, one request each: the cost of idle "
              "connections alone. *burst*: then one more request on every connection at once "
              "(1000 in flight, up to 1000 upstream connections), then all idle, read as soon as "
              "the last response arrived: what the proxy keeps from a burst counts too; this is "
              "the usual \"RSS with 1000 idle connections\". *burst, %s s later*: the same, with "
              "the connections left idle %s s more, so each proxy's periodic trims have run "
              "(full mode only). Growths are against the RSS just before the connections were "
              "opened." % (meta.get("idle_conns", "1000"), settle or "?", settle or "?"))
            p("")
            p("| target | RSS idle at start MiB | RSS before MiB | RSS 1000 idle MiB | "
              "growth, burst MiB | growth, burst, %s s later MiB | growth, sequential MiB | "
              "req/s vs c64 | p99 vs c64 |" % (settle or "?"))
            p("|---|---|---|---|---|---|---|---|---|")
            for t in targets:
                if not applies(t, w) or cell_status(t, w) or t == "direct":
                    continue
                idle_k = facts.get((t, "rss_idle"))
                pre = rep1(t, w, "rss_pre_kib")
                after = rep1(t, w, "rss_idle1k_kib")
                seq = rep1(t, w, "rss_seq_kib")
                settled = rep1(t, w, "rss_settled_kib")
                p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    TARGET_NAMES.get(t, t), mib(int(idle_k)) if idle_k else "-", mib(pre),
                    mib(after), mib(after - pre) if after and pre else "-",
                    mib(settled - pre) if settled and pre else "-",
                    mib(seq - pre) if seq and pre else "-",
                    ratio(stat(t, w, "rps").med, stat(t, "c64", "rps").med),
                    ratio(stat(t, w, "p99_us").med, stat(t, "c64", "p99_us").med)))
            p("")
        if w == "weighted":
            p("Weighted split against a single cluster, in pairs: each weighted run is next "
              "to a run of the c64 route (*single*: one cluster, the two backends round robin) "
              "and, for remora, of a route to one cluster whose two endpoints have weights 90 "
              "and 10 (*single90*: the backends carry the split's load), with the same "
              "duration and connections, the order alternating between repetitions. HAProxy's "
              "and nginx's weighted routes are one backend with weighted servers: their "
              "*single90* would be the same route. The ratios are per pair, then the median "
              "(min..max) over the pairs:")
            p("")
            p("| target | req/s weighted | req/s single | weighted/single | req/s single90 | "
              "weighted/single90 | CPU µs/req weighted | CPU µs/req single | CPU µs/req "
              "single90 | CPU weighted/single90 |")
            p("|---|---|---|---|---|---|---|---|---|---|")
            for t in targets:
                if not applies(t, w) or cell_status(t, w):
                    continue
                s90 = bool(get(t, "single90"))
                p("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    TARGET_NAMES.get(t, t), rps(stat(t, w, "rps").med),
                    rps(stat(t, "single", "rps").med), pair_ratio(t, w, "rps"),
                    rps(stat(t, "single90", "rps").med) if s90 else "-",
                    pair_ratio(t, w, "rps", "single90") if s90 else "-",
                    cpu(stat(t, w, "cpu_us_req").med), cpu(stat(t, "single", "cpu_us_req").med),
                    cpu(stat(t, "single90", "cpu_us_req").med) if s90 else "-",
                    pair_ratio(t, w, "cpu_us_req", "single90") if s90 else "-"))
            p("")
        if w == "big":
            p("1 MiB bodies, as MiB/s (median req/s × 1 MiB): " + ", ".join(
                "%s %s" % (TARGET_NAMES.get(t, t), rps(stat(t, w, "rps").med))
                for t in targets if applies(t, w) and not cell_status(t, w)))
            p("")

    sys_rows = [t for t in targets if (t, "syscalls") in facts or (t, "syscalls_na") in facts]
    if sys_rows:
        p("## Syscalls per proxied request (strace -c -f -p, wrk -c64, %ss)" %
          meta.get("strace_duration", "?"))
        p("")
        p("| target | syscalls/req | top syscalls per request | requests under strace |")
        p("|---|---|---|---|")
        for t in sys_rows:
            if (t, "syscalls") in facts:
                p("| %s | %s | %s | %s |" % (TARGET_NAMES.get(t, t), facts[(t, "syscalls")],
                                             facts.get((t, "syscalls_top"), ""),
                                             facts.get((t, "syscalls_requests"), "")))
            else:
                p("| %s | %s | | |" % (TARGET_NAMES.get(t, t), facts[(t, "syscalls_na")]))
        p("")

    cg_cols = [("c64", "HTTP/1.1 c64"), ("weighted", "weighted 90/10"), ("h2", "h2c"),
               ("tls", "HTTPS c64")]
    cg_rows = [t for t in targets if any((t, k + w) in facts for w, _ in cg_cols
                                         for k in ("cg:", "cg_na:"))]
    if cg_rows:
        p("## Instructions per proxied request (callgrind, user space)")
        p("")
        p("Wall-clock figures drift between runs on this VM; instruction counts repeat. After "
          "its timed runs, each proxy is started again, alone, as one process under `valgrind "
          "--tool=callgrind` with the same config, pinned to core %s. Per cell: %s unrecorded "
          "warm-up requests, then N = %s requests with instrumentation on (HTTP/1.1 and HTTPS: "
          "`h2load --h1 -c64 -n N`, on 64 new connections, so HTTPS counts their 64 TLS "
          "handshakes too; h2c: `h2load -c16 -m10 -n N`); the instructions (Ir) of those "
          "requests, divided by the requests that succeeded. **User space only**: the kernel's "
          "share, most of a proxy's CPU time here, is not counted. The counts depend on the "
          "backends (see above: nginx's responses carry more headers than the test upstream's). "
          "The phase took %s s." % (
              meta.get("proxy_cpu", "?"), meta.get("callgrind_warmup", "?"),
              meta.get("callgrind_reqs", "?"), meta.get("callgrind_secs", "?")))
        p("")
        p("*weighted/single*: the split over a single cluster with the same 90/10 endpoint "
          "weights (single90) where it was counted, else over the c64 route.")
        p("")
        p("| target | HTTP/1.1 c64 | weighted 90/10 | weighted/single | h2c | HTTPS c64 | "
          "×HAProxy (HTTP/1.1) | ×nghttpx (h2c) | ×HAProxy (HTTPS) |")
        p("|---|---|---|---|---|---|---|---|---|")

        def cg(t, w):
            v = facts.get((t, "cg:" + w))
            return float(v) if v else None

        def cg_cell(t, w):
            if (t, "cg:" + w) in facts:
                return instr(facts[(t, "cg:" + w)])
            return facts.get((t, "cg_na:" + w), "-")

        h_c64, x_h2, h_tls = cg("haproxy", "c64"), cg("nghttpx", "h2"), cg("haproxy", "tls")
        for t in cg_rows:
            single, weighted = cg(t, "single90") or cg(t, "c64"), cg(t, "weighted")
            ws = "-"
            if single and weighted:
                ws = "%.3f (%+.0f)" % (weighted / single, weighted - single)
            p("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                TARGET_NAMES.get(t, t), cg_cell(t, "c64"), cg_cell(t, "weighted"), ws,
                cg_cell(t, "h2"), cg_cell(t, "tls"), ratio(cg(t, "c64"), h_c64),
                ratio(cg(t, "h2"), x_h2), ratio(cg(t, "tls"), h_tls)))
        p("")

    notes = []
    if meta.get("notes_file") and os.path.exists(meta["notes_file"]):
        with open(meta["notes_file"]) as f:
            notes = [line.rstrip("\n") for line in f if line.strip()]
    if notes:
        p("## Notes")
        p("")
        for n in notes:
            p("- " + n)
        p("")
    print("\n".join(out))
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == "record":
        return cmd_record(argv[2:])
    if cmd == "strace":
        per, top = parse_strace(argv[2], int(argv[3]))
        if per is None:
            return 1
        print("%.1f\t%s" % (per, top))
        return 0
    if cmd == "callgrind":
        res, why = parse_callgrind(argv[2], argv[3])
        if res is None:
            print(why)
            return 1
        print("%.0f\t%d\t%d" % res)
        return 0
    if cmd == "wrk-requests":
        r = parse_wrk(argv[2])
        if r["requests"] is None:
            return 1
        print(r["requests"])
        return 0
    if cmd == "render":
        return cmd_render(argv[2:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
