#!/usr/bin/env python3
"""Runs the integration tests: every function named test_* in tests/integration/test_*.py,
sorted by file then name, each with a fresh lib.Ctx that is cleaned up afterwards.

    python3 tests/integration/run.py [-k SUBSTR] [-v] [-x] [-j N] [--timeout S]

REMORA_BUILD names the build dir (default "build"; "build/san" under sanitizers). Prints one
line per test and ends with "N passed, N failed" (", N skipped" when some raised lib.Skip).
Exits 1 when any test failed.

-j N (default: REMORA_TEST_JOBS, else 1) runs the tests in N forked worker processes, each
taking the next test when it finishes one; lines are printed as tests finish. Each worker picks
its free ports from its own slice of the range (lib.free_port), and netns names carry the
worker's pid, so tests of different workers do not meet. A test file that sets
``SERIAL = True`` (timing or memory measurements that another test's load would disturb) has
its tests run after the others, one at a time.
"""

import argparse
import importlib.util
import multiprocessing
import os
import signal
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree

import lib  # noqa: E402


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit")


def discover(pattern):
    tests = []
    for path in sorted(HERE.glob("test_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for name in sorted(n for n in vars(mod) if n.startswith("test_")):
            fn = getattr(mod, name)
            full = f"{path.stem}::{name}"
            if callable(fn) and (pattern is None or pattern in full):
                tests.append((full, fn, bool(getattr(mod, "SERIAL", False))))
    return tests


def indent(text):
    return "".join("    " + line + "\n" for line in text.rstrip("\n").splitlines())


def run_one(full, fn, args):
    """Returns ("ok"|"FAIL"|"skip", seconds, detail)."""
    ctx = lib.Ctx(full, verbose=args.verbose)
    t0 = time.monotonic()
    status, detail = "ok", ""
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(args.timeout * lib.slow_factor()))
    try:
        fn(ctx)
    except lib.Skip as e:
        status, detail = "skip", str(e)
    except BaseException as e:  # noqa: BLE001 - report everything, including timeouts
        if isinstance(e, KeyboardInterrupt):
            ctx.cleanup()
            ctx.discard()
            raise
        status, detail = "FAIL", traceback.format_exc()
    finally:
        signal.alarm(0)
    problems = ctx.cleanup()
    if problems:
        if status != "FAIL":
            status, detail = "FAIL", ""
        detail += "cleanup found:\n" + "\n".join(problems) + "\n"
    if status == "FAIL" or (args.verbose and ctx.procs):
        logs = ctx.logs(200 if args.verbose else 30)
        if logs:
            detail += logs + "\n"
    if status == "FAIL":
        detail += f"(files kept in {ctx.tmp})\n"
    else:
        ctx.discard()
    return status, time.monotonic() - t0, detail


def _worker(k, jobs, tests, todo, results, args):
    """Worker k of a -j run: runs the tests whose indices come from ``todo`` until None."""
    lib.set_port_slice(k, jobs)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
    while True:
        i = todo.get()
        if i is None:
            return
        full, fn, _ = tests[i]
        results.put((i, *run_one(full, fn, args)))


def run_parallel(tests, idx, args, report):
    """Runs tests[i] for i in idx on args.jobs forked workers; calls report(i, ...) as each
    finishes. Returns False if it stopped early (-x)."""
    ctx = multiprocessing.get_context("fork")
    todo, results = ctx.Queue(), ctx.Queue()
    for i in idx:
        todo.put(i)
    n = min(args.jobs, len(idx))
    for _ in range(n):
        todo.put(None)
    procs = [ctx.Process(target=_worker, args=(k, n, tests, todo, results, args))
             for k in range(n)]
    for p in procs:
        p.start()
    try:
        for _ in idx:
            while True:
                try:
                    i, status, secs, detail = results.get(timeout=1.0)
                    break
                except Exception:  # queue.Empty: check that the workers live
                    if not any(p.is_alive() for p in procs) and results.empty():
                        raise RuntimeError("every worker exited with tests left") from None
            if not report(i, status, secs, detail):
                return False
        return True
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: run_one's cleanup does not run; pdeathsig reaps
        for p in procs:
            p.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="pattern", help="run tests whose file::name contains SUBSTR")
    ap.add_argument("-v", dest="verbose", action="store_true", help="show process logs")
    ap.add_argument("-x", dest="exitfirst", action="store_true", help="stop at first failure")
    ap.add_argument("-j", dest="jobs", type=int,
                    default=int(os.environ.get("REMORA_TEST_JOBS", "1") or 1),
                    help="tests run at once, in forked workers (SERIAL files alone, at the end)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-test limit in seconds")
    args = ap.parse_args()

    tests = discover(args.pattern)
    counts = {"ok": 0, "FAIL": 0, "skip": 0}
    failed = []
    t_all = time.monotonic()
    print(f"build dir: {lib.build_dir()}" + (f", {args.jobs} jobs" if args.jobs > 1 else ""),
          flush=True)

    def report(i, status, secs, detail):
        full = tests[i][0]
        counts[status] += 1
        label = {"ok": "ok  ", "FAIL": "FAIL", "skip": "skip"}[status]
        line = f"{label} {full} ({secs:.2f}s)"
        if status == "skip":
            line += f": {detail}"
        print(line, flush=True)
        if status == "FAIL" or (args.verbose and detail and status != "skip"):
            print(indent(detail), end="", flush=True)
        if status == "FAIL":
            failed.append(full)
        return not (status == "FAIL" and args.exitfirst)

    parallel = [i for i, t in enumerate(tests) if args.jobs > 1 and not t[2]]
    serial = [i for i in range(len(tests)) if i not in set(parallel)]
    going = True
    if parallel:
        going = run_parallel(tests, parallel, args, report)
    for i in serial if going else ():
        full, fn, _ = tests[i]
        if args.verbose:
            print(f"run  {full}", flush=True)
        if not report(i, *run_one(full, fn, args)):
            break
    summary = f"{counts['ok']} passed, {counts['FAIL']} failed"
    if counts["skip"]:
        summary += f", {counts['skip']} skipped"
    print(f"({time.monotonic() - t_all:.1f}s)")
    if failed and args.jobs > 1:
        print("failed: " + " ".join(failed))
    print(summary, flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
