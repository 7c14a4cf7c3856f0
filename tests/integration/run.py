#!/usr/bin/env python3
"""Runs the integration tests: every function named test_* in tests/integration/test_*.py,
sorted by file then name, each with a fresh lib.Ctx that is cleaned up afterwards.

    python3 tests/integration/run.py [-k SUBSTR] [-v] [-x] [--timeout S]

REMORA_BUILD names the build dir (default "build"; "build/san" under sanitizers). Prints one
line per test and ends with "N passed, N failed" (", N skipped" when some raised lib.Skip).
Exits 1 when any test failed.
"""

import argparse
import importlib.util
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
                tests.append((full, fn))
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


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", dest="pattern", help="run tests whose file::name contains SUBSTR")
    ap.add_argument("-v", dest="verbose", action="store_true", help="show process logs")
    ap.add_argument("-x", dest="exitfirst", action="store_true", help="stop at first failure")
    ap.add_argument("--timeout", type=float, default=60.0, help="per-test limit in seconds")
    args = ap.parse_args()

    tests = discover(args.pattern)
    counts = {"ok": 0, "FAIL": 0, "skip": 0}
    t_all = time.monotonic()
    print(f"build dir: {lib.build_dir()}", flush=True)
    for full, fn in tests:
        if args.verbose:
            print(f"run  {full}", flush=True)
        status, secs, detail = run_one(full, fn, args)
        counts[status] += 1
        label = {"ok": "ok  ", "FAIL": "FAIL", "skip": "skip"}[status]
        line = f"{label} {full} ({secs:.2f}s)"
        if status == "skip":
            line += f": {detail}"
        print(line, flush=True)
        if status == "FAIL" or (args.verbose and detail and status != "skip"):
            print(indent(detail), end="", flush=True)
        if status == "FAIL" and args.exitfirst:
            break
    summary = f"{counts['ok']} passed, {counts['FAIL']} failed"
    if counts["skip"]:
        summary += f", {counts['skip']} skipped"
    print(f"({time.monotonic() - t_all:.1f}s)")
    print(summary, flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
