"""Helpers shared by the integration tests (Python 3 standard library only).

A test is a function ``test_x(ctx)`` in ``tests/integration/test_*.py``; ``run.py`` gives each
one a fresh :class:`Ctx` and cleans it up afterwards. Everything binds to loopback, ports come
from the kernel (port 0) or :func:`free_port`, and waiting is done by polling a condition with a
deadline (:func:`wait_for`), never by sleeping a fixed time.

Processes
    ctx.start_upstream(name="upstream", threads=1, record=False) -> Upstream
        .port .name .pid .stats() .reset_stats() .recorded() .url(path)
    ctx.start_remora(config, extra_args=(), concurrency=1, log_level="info", vars=None)
        -> Remora  .port(index_or_name) .admin_port .admin(method, path) .pid
    ctx.spawn(name, argv) -> Proc   any other program (nghttpd, ...), cleaned up the same way
    spawn, start_upstream and start_remora take prefix=[...]: argv words put before the
    program (e.g. "ip netns exec NS setpriv ..."; each must exec the next, so the pid and
    signals are the program's). ctx.on_cleanup(fn) runs fn after every process has stopped.
    Proc: .pid .stdout .stderr (text so far) .alive() .wait(timeout) .signal(sig) .kill()

    Cleanup sends SIGTERM to every process, SIGKILL after a deadline, and fails the test when a
    process printed a sanitizer report, died of a signal nobody sent, or ignored SIGTERM.

Config
    bootstrap(listener_port=None, admin_port=None, clusters={name: [ports]}, routes=None, ...)
        -> YAML text for a basic Envoy v3 bootstrap; bootstrap_dict(...) gives the dict and
        to_yaml(obj) turns any dict into YAML. Text passed to start_remora may hold {{NAME}}
        placeholders: each one not given in ``vars`` gets a free port.

HTTP
    http_request(port, method="GET", path="/", headers=None, body=None) -> Response
    HttpConn(port) for keep-alive: .request(...), .send(raw), .read_response(), .close()
    raw_exchange(port, data, timeout=2.0, until=None) -> RawReply (bytes + .end: eof|rst|timeout)
    parse_responses(data) -> [Response]   responses in raw bytes (pipelining, hostile upstreams)
    curl(args, timeout=30) -> subprocess.CompletedProcess (bytes)
    is_closed(sock), wait_closed(sock, timeout)

Misc
    wait_for(pred, timeout=5, what="...") -> the predicate's first truthy value
    free_port(), Skip, proc_rss_kb(pid), proc_hwm_kb(pid), proc_fd_count(pid)
"""

import ctypes
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SANITIZER_MARKERS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: AddressSanitizer",
    "LeakSanitizer has encountered a fatal error",
)

# Sanitizer settings for every child process; values already in the environment win.
SAN_ENV = {
    "ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1:halt_on_error=1:strict_string_checks=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "",
}


class Skip(Exception):
    """Raise to skip a test (for example when a binary it needs is not built)."""


class TestFailure(AssertionError):
    pass


# ---- generic helpers ---------------------------------------------------------------------------


def build_dir():
    """The build directory holding remora and remora-test-upstream ($REMORA_BUILD, default
    "build"), relative paths taken from the repository root."""
    p = Path(os.environ.get("REMORA_BUILD", "build"))
    return p if p.is_absolute() else REPO / p


def is_sanitized():
    return "san" in build_dir().name


def slow_factor():
    """Deadlines are multiplied by this under sanitizers, which run 2-5x slower."""
    return 3.0 if is_sanitized() else 1.0


def wait_for(pred, timeout=5.0, what="condition", interval=0.005):
    """Polls ``pred()`` until it returns something truthy and returns that value. Raises
    TimeoutError naming ``what`` (and the last exception pred raised, if any) after
    ``timeout`` seconds (scaled by slow_factor())."""
    deadline = time.monotonic() + timeout * slow_factor()
    last_exc = None
    delay = interval
    while True:
        try:
            v = pred()
            if v:
                return v
            last_exc = None
        except Exception as e:  # noqa: BLE001 - the predicate may fail until ready
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout * slow_factor():.1f}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            raise TimeoutError(msg)
        time.sleep(delay)
        delay = max(interval, min(delay * 2, 0.05))  # an interval above 50 ms is kept


_handed_out = set()
_port_slice = (0, 1)  # (k, n): this process takes the k-th of n equal parts of the range


def set_port_slice(k, n):
    """run.py -j: worker k of n picks free ports from its own part of the range only, so two
    workers never hand out the same port."""
    global _port_slice
    _port_slice = (k, n)


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago, chosen below the kernel's ephemeral range: the
    kernel hands ephemeral ports to outgoing connections (the proxy's upstream connections, the
    clients'), and one of those taking a port between this check and the listener's bind made
    "Address already in use" flakes. A port is handed out once per test run."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    hi = min(_ephemeral_low(), 65536)
    lo = 10000 if hi > 12000 else 1024
    k, n = _port_slice
    lo, hi = lo + (hi - lo) * k // n, lo + (hi - lo) * (k + 1) // n
    for _ in range(1000):
        port = random.randrange(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(fam, socket.SOCK_STREAM) as s:  # nothing found: any free port
        s.bind((host, 0))
        return s.getsockname()[1]


def _proc_status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def proc_rss_kb(pid):
    return _proc_status_kb(pid, "VmRSS")


def proc_hwm_kb(pid):
    """Peak resident set size so far."""
    return _proc_status_kb(pid, "VmHWM")


def proc_fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def _set_pdeathsig():
    # Children die with the runner even if it is SIGKILLed (PR_SET_PDEATHSIG = 1).
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except Exception:  # noqa: BLE001 - best effort
        pass


# ---- processes ---------------------------------------------------------------------------------


class Proc:
    """A child process whose stdout and stderr go to files in the test's temp dir (no pipes,
    so a chatty child can never block)."""

    def __init__(self, ctx, name, argv, env=None, managed=True):
        self.ctx = ctx
        self.name = name
        self.argv = [str(a) for a in argv]
        self.managed = managed  # ours: must exit 0 on SIGTERM
        self.expected_signals = set()
        self.term_timeout = None
        self.stdout_path = ctx.tmp / f"{name}.stdout"
        self.stderr_path = ctx.tmp / f"{name}.stderr"
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        self.needed_kill = False
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=env,
            cwd=str(ctx.tmp),
            preexec_fn=_set_pdeathsig,
        )

    @property
    def pid(self):
        return self.popen.pid

    @property
    def stdout(self):
        return self.stdout_path.read_text(errors="replace")

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    @property
    def returncode(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def wait(self, timeout=10.0):
        """Waits for exit and returns the exit code (negative: killed by that signal)."""
        return self.popen.wait(timeout=timeout * slow_factor())

    def signal(self, sig):
        """Sends ``sig``; a death by it is then not reported as a crash."""
        self.expected_signals.add(sig)
        if self.alive():
            self.popen.send_signal(sig)

    def kill(self):
        self.signal(signal.SIGKILL)

    def wait_output(self, text, timeout=5.0, stream="stderr"):
        """Waits until ``text`` appears in the process's stderr (or stdout)."""
        return wait_for(lambda: text in getattr(self, stream) or self._check_alive(),
                        timeout, f"{text!r} in {self.name} {stream}")

    def _check_alive(self):
        if not self.alive():
            raise TestFailure(f"{self.name} exited with {self.returncode}:\n{self.tail()}")
        return False

    def tail(self, n=30):
        lines = self.stderr.splitlines()
        return "\n".join(lines[-n:])

    def stop(self, timeout):
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Returns the exit code."""
        if self.alive():
            self.expected_signals.add(signal.SIGTERM)
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.needed_kill = True
                self.popen.kill()
                self.popen.wait()
        self._out.close()
        self._err.close()
        return self.popen.returncode

    def problems(self):
        """What cleanup should report about this process (after stop())."""
        out = []
        err = self.stderr
        for marker in SANITIZER_MARKERS:
            i = err.find(marker)
            if i >= 0:
                start = err.rfind("\n", 0, max(0, i - 200)) + 1
                out.append(f"{self.name}: sanitizer report:\n{err[start:start + 4000]}")
                break
        rc = self.popen.returncode
        if self.needed_kill and self.managed:
            out.append(f"{self.name}: still running {self.term_timeout:.0f}s after SIGTERM "
                       "(killed)")
        elif rc is not None and rc < 0 and -rc not in self.expected_signals:
            out.append(f"{self.name}: died of signal {-rc} "
                       f"({signal.Signals(-rc).name}):\n{self.tail()}")
        elif rc and self.managed and not out:
            out.append(f"{self.name}: exited with status {rc}:\n{self.tail()}")
        return out


class Upstream(Proc):
    """A running remora-test-upstream (see tests/upstream/upstream.c for its controls)."""

    port = None
    upstream_name = None
    record_path = None

    def url(self, path="/"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self):
        """{"requests", "connections", "bytes_received", "parse_errors",
        "incomplete_requests", "active_connections"}; the stats request itself is not counted."""
        r = http_request(self.port, "GET", "/__upstream/stats")
        if r.status != 200:
            raise TestFailure(f"{self.name}: stats answered {r.status}")
        return r.json()

    def reset_stats(self):
        r = http_request(self.port, "POST", "/__upstream/reset")
        if r.status != 200:
            raise TestFailure(f"{self.name}: reset answered {r.status}")
        return r.json()

    def recorded(self):
        """Every byte received so far (needs record=True)."""
        if self.record_path is None:
            raise TestFailure("start_upstream(record=True) to record")
        try:
            return self.record_path.read_bytes()
        except FileNotFoundError:
            return b""


class Remora(Proc):
    """A running remora. ``listeners`` is [(name, port)] in config order."""

    listeners = ()
    admin_port = None
    vars = None
    config_path = None
    config_text = ""

    def port(self, which=0):
        """The port of listener ``which``: its index in the config, its name, or the name of
        the {{PLACEHOLDER}} that gave it."""
        if isinstance(which, int):
            return self.listeners[which][1]
        for name, port in self.listeners:
            if name == which:
                return port
        if self.vars and which in self.vars:
            return int(self.vars[which])
        raise KeyError(f"no listener {which!r}; have {list(self.listeners)}")

    def admin(self, method="GET", path="/ready", headers=None, body=None):
        if self.admin_port is None:
            raise TestFailure("config has no admin address")
        return http_request(self.admin_port, method, path, headers, body)

    def wait_ready(self, timeout=10.0):
        def ready():
            self._check_alive()
            if self.admin_port is not None:
                status = self.admin("GET", "/ready").status
                if status != 404:  # 404: no /ready yet, so fall back to the listener
                    return status == 200
            if not self.listeners:
                return self.admin_port is not None
            with socket.create_connection(("127.0.0.1", self.port(0)), timeout=1):
                return True

        wait_for(ready, timeout, f"{self.name} ready")


class Ctx:
    """One test's world: a temp dir and every process the test started."""

    _ids = itertools.count()

    def __init__(self, test_name="test", verbose=False):
        self.test_name = test_name
        self.verbose = verbose
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", test_name)[:80]
        self.tmp = Path(tempfile.mkdtemp(prefix=f"remora-{safe}-"))
        self.procs = []
        self.sockets = []
        self._names = set()
        self._finalizers = []
        env = dict(os.environ)
        for k, v in SAN_ENV.items():
            if v:
                env[k] = v + (":" + env[k] if env.get(k) else "")
        self.env = env

    # -- processes --

    def bin(self, name):
        return build_dir() / name

    def _unique(self, name):
        base, n = name, 1
        while name in self._names:
            n += 1
            name = f"{base}-{n}"
        self._names.add(name)
        return name

    def spawn(self, name, argv, managed=False, cls=Proc, prefix=()):
        """Starts ``argv`` (stdout/stderr to files in ctx.tmp). ``managed`` processes must exit
        0 on SIGTERM. ``prefix``: words run before argv, each exec'ing the next (ip netns
        exec, setpriv)."""
        argv = list(prefix) + list(argv)
        p = cls(self, self._unique(name), argv, env=self.env, managed=managed)
        p.term_timeout = 5.0 * slow_factor()
        self.procs.append(p)
        return p

    def start_upstream(self, name="upstream", threads=1, record=False, listen="127.0.0.1:0",
                       extra_args=(), timeout=5.0, prefix=()):
        """Starts remora-test-upstream and waits for its port file."""
        exe = self.bin("remora-test-upstream")
        if not exe.exists():
            raise TestFailure(f"{exe} is not built (make {exe.relative_to(REPO)})")
        pname = self._unique(f"upstream-{name}")
        self._names.discard(pname)
        port_file = self.tmp / f"{pname}.port"
        argv = [exe, "--listen", listen, "--name", name, "--port-file", port_file]
        record_path = None
        if record:
            record_path = self.tmp / f"{pname}.record"
            argv += ["--record", record_path]
        if threads != 1:
            argv += ["--threads", str(threads)]
        argv += list(extra_args)
        p = self.spawn(pname, argv, managed=True, cls=Upstream, prefix=prefix)
        p.upstream_name = name
        p.record_path = record_path

        def port_ready():
            p._check_alive()
            text = port_file.read_text() if port_file.exists() else ""
            return text.endswith("\n") and int(text)

        p.port = wait_for(port_ready, timeout, f"{pname} port file")
        return p

    def start_xds(self, db=None, extra_args=(), name="xds", timeout=5.0, prefix=()):
        """Starts remora-xds (the App Mesh API) on 127.0.0.1:0 with ``db`` (default: a new
        file in ctx.tmp) and waits for its port file. The Proc gets ``port`` and ``db``.
        ``prefix``: argv words to run it under (a namespace). Raises Skip if remora-xds is not
        built."""
        exe = self.bin("remora-xds")
        if not exe.exists():
            raise Skip(f"{exe} is not built")
        pname = self._unique(name)
        self._names.discard(pname)
        port_file = self.tmp / f"{pname}.port"
        if port_file.exists():
            port_file.unlink()
        db = db or (self.tmp / f"{pname}.db")
        argv = [exe, "--listen", "127.0.0.1:0", "--port-file", port_file, "--db", db]
        argv += list(extra_args)
        p = self.spawn(pname, argv, managed=True, prefix=prefix)
        p.db = db

        def port_ready():
            p._check_alive()
            text = port_file.read_text() if port_file.exists() else ""
            return text.endswith("\n") and int(text)

        p.port = wait_for(port_ready, timeout, f"{pname} port file")
        return p

    def start_remora(self, config, extra_args=(), concurrency=1, log_level="info", vars=None,
                     wait_ready=True, timeout=10.0, name="remora", prefix=()):
        """Writes ``config`` (YAML text with optional {{NAME}} placeholders, or a bootstrap
        dict) and runs ``remora -c FILE --concurrency N -l LEVEL``. Placeholders not given in
        ``vars`` get a free port each. Waits until admin GET /ready answers 200 (or, with no
        admin address or a 404 for /ready, until the first listener accepts). Raises Skip if
        remora is not built."""
        exe = self.bin("remora")
        if not exe.exists():
            raise Skip(f"{exe.relative_to(REPO) if exe.is_relative_to(REPO) else exe} "
                       "is not built")
        vars = dict(vars or {})
        if isinstance(config, dict):
            text = to_yaml(config)
        else:
            text = str(config)
        for key in sorted(set(re.findall(r"\{\{([A-Za-z0-9_]+)\}\}", text))):
            if key not in vars:
                vars[key] = free_port()
            text = text.replace("{{" + key + "}}", str(vars[key]))
        path = self.tmp / f"{name}-{next(self._ids)}.yaml"
        path.write_text(text)
        if prefix:
            path.chmod(0o644)  # the prefix may drop to another uid
        argv = [exe, "-c", path, "--concurrency", str(concurrency), "-l", log_level]
        argv += list(extra_args)
        p = self.spawn(name, argv, managed=True, cls=Remora, prefix=prefix)
        p.vars = vars
        p.config_path = path
        p.config_text = text
        p.listeners, p.admin_port = scan_ports(text)
        if wait_ready:
            p.wait_ready(timeout)
        return p

    # -- sockets --

    def connect(self, port, host="127.0.0.1", timeout=5.0):
        """A client socket closed at cleanup."""
        s = socket.create_connection((host, port), timeout=timeout)
        self.sockets.append(s)
        return s

    # -- cleanup --

    def on_cleanup(self, fn):
        """Runs ``fn()`` at cleanup, after every process has stopped (last added, first run);
        an exception it raises is reported as a problem."""
        self._finalizers.append(fn)

    def cleanup(self):
        """Stops everything and returns a list of problems (empty when all is well)."""
        for s in self.sockets:
            try:
                s.close()
            except OSError:
                pass
        problems = []
        for p in reversed(self.procs):
            p.stop(p.term_timeout)
        for p in self.procs:
            problems += p.problems()
        while self._finalizers:
            fn = self._finalizers.pop()
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - reported, and the other finalizers run
                problems.append(f"cleanup {getattr(fn, '__name__', fn)}: {e!r}")
        return problems

    def discard(self):
        """Removes the temp dir (the runner does this for tests that passed)."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def logs(self, n=40):
        """Tails of every process's stderr, for failure reports."""
        out = []
        for p in self.procs:
            try:
                tail = p.tail(n)
            except OSError:
                continue
            out.append(f"--- {p.name} (pid {p.pid}, rc {p.returncode}) stderr:\n{tail}")
        return "\n".join(out)


# ---- config ------------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_PLACEHOLDER = re.compile(r"^\{\{[A-Za-z0-9_]+\}\}$")


def _yaml_scalar(v):
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str) and _PLACEHOLDER.match(v):
        return v  # substituted by start_remora before any YAML parser sees it
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def _yaml_inline(v):
    if isinstance(v, dict):
        return "{}"  # only called for empty containers
    if isinstance(v, list):
        return "[]"
    return _yaml_scalar(v)


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars (strings always quoted)."""
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        if not obj:
            return pad + "{}"
        for k, v in obj.items():
            key = k if _PLAIN_KEY.match(k) else json.dumps(k)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 2))
            else:
                lines.append(f"{pad}{key}: {_yaml_inline(v)}")
    elif isinstance(obj, list):
        if not obj:
            return pad + "[]"
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 2)
                lines.append(pad + "- " + inner[indent + 2:])
            else:
                lines.append(f"{pad}- {_yaml_inline(v)}")
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


def socket_address(port, host="127.0.0.1"):
    return {"socket_address": {"address": host, "port_value": port}}


HCM_TYPE = ("type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
            "HttpConnectionManager")
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def bootstrap_dict(listener_port=None, admin_port=None, clusters=None, routes=None,
                   http_filters=None, listener_name="listener_0", stat_prefix="ingress_http",
                   connect_timeout="1s", lb_policy="ROUND_ROBIN", hcm_extra=None,
                   cluster_extra=None, domains=("*",)):
    """A basic Envoy v3 bootstrap as a dict: one HTTP listener, an admin address, and one
    STATIC cluster per ``clusters`` entry ({name: [port, ...]} or {name: [(host, port), ...]}).

    ``routes``: a list of (prefix, cluster) pairs or ready-made route dicts; by default "/"
    goes to the first cluster. ``http_filters``: filter dicts placed before the router.
    ``listener_port``/``admin_port`` default to free ports; "{{NAME}}" strings are left as
    placeholders for start_remora."""
    clusters = clusters or {}
    if listener_port is None:
        listener_port = free_port()
    if admin_port is None:
        admin_port = free_port()
    if routes is None:
        routes = [("/", next(iter(clusters)))] if clusters else []
    route_list = []
    for r in routes:
        if isinstance(r, dict):
            route_list.append(r)
        else:
            prefix, cluster = r
            route_list.append({"match": {"prefix": prefix}, "route": {"cluster": cluster}})
    hcm = {
        "@type": HCM_TYPE,
        "stat_prefix": stat_prefix,
        "codec_type": "AUTO",
        "route_config": {
            "name": "local_route",
            "virtual_hosts": [{"name": "backend", "domains": list(domains),
                               "routes": route_list}],
        },
        "http_filters": list(http_filters or []) + [
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}}],
    }
    hcm.update(hcm_extra or {})
    cluster_list = []
    for name, endpoints in clusters.items():
        lb_endpoints = []
        for ep in endpoints:
            host, port = ep if isinstance(ep, tuple) else ("127.0.0.1", ep)
            lb_endpoints.append({"endpoint": {"address": socket_address(port, host)}})
        c = {
            "name": name,
            "connect_timeout": connect_timeout,
            "type": "STATIC",
            "lb_policy": lb_policy,
            "load_assignment": {"cluster_name": name,
                                "endpoints": [{"lb_endpoints": lb_endpoints}]},
        }
        c.update(cluster_extra or {})
        cluster_list.append(c)
    return {
        "admin": {"address": socket_address(admin_port)},
        "static_resources": {
            "listeners": [{
                "name": listener_name,
                "address": socket_address(listener_port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
            "clusters": cluster_list,
        },
    }


def bootstrap(*args, **kwargs):
    """bootstrap_dict(...) as YAML text."""
    return to_yaml(bootstrap_dict(*args, **kwargs)) + "\n"


def scan_ports(text):
    """Finds [(listener name, port)] and the admin port in bootstrap YAML text. A light scan
    of block-style YAML (what to_yaml writes, and what tests usually write), not a parser."""
    admin_port = None
    m = re.search(r"^admin:\s*\n((?:[ \t]+.*\n?|\s*\n)*)", text, re.M)
    if m:
        pm = re.search(r"port_value:\s*\"?(\d+)", m.group(1))
        admin_port = int(pm.group(1)) if pm else None
    listeners = []
    m = re.search(r"^([ \t]*)listeners:\s*\n", text, re.M)
    if m:
        base = len(m.group(1))
        block = []
        for line in text[m.end():].splitlines():
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                ind = len(line) - len(line.lstrip())
                if ind < base or (ind == base and not stripped.startswith("-")):
                    break
            block.append(line)
        item_ind = None
        items = []
        for line in block:
            stripped = line.lstrip()
            ind = len(line) - len(stripped)
            if stripped.startswith("- ") and (item_ind is None or ind == item_ind):
                item_ind = ind
                items.append([line])
            elif items:
                items[-1].append(line)
        for i, item in enumerate(items):
            chunk = "\n".join(item)
            nm = re.search(r"^[ \t-]*name:\s*[\"']?([^\"'\n]+?)[\"']?\s*$", chunk, re.M)
            pm = re.search(r"port_value:\s*\"?(\d+)", chunk)
            if pm:
                listeners.append((nm.group(1) if nm else f"listener_{i}", int(pm.group(1))))
    return listeners, admin_port


# ---- HTTP --------------------------------------------------------------------------------------


class Response:
    """An HTTP/1.x response. Header names and values are str (latin-1), in order, names as
    received; ``interim`` holds 1xx responses as (status, headers)."""

    def __init__(self):
        self.version = ""
        self.status = 0
        self.reason = ""
        self.headers = []
        self.trailers = []
        self.interim = []
        self.body = b""
        self.head_raw = b""
        self.chunked = False
        self.eof = False  # the body was close-delimited, or the peer closed right after

    def header(self, name, default=None):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def header_all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode("latin-1")

    def __repr__(self):
        return f"<Response {self.status} {self.headers!r} body={self.body[:80]!r}>"


class _Reader:
    """Buffered reading from a socket (or from bytes) with a deadline."""

    def __init__(self, sock=None, data=b"", timeout=5.0):
        self.sock = sock
        self.buf = bytearray(data)
        self.timeout = timeout
        self.at_eof = sock is None

    def _fill(self):
        if self.at_eof:
            return False
        self.sock.settimeout(self.timeout)
        d = self.sock.recv(262144)
        if not d:
            self.at_eof = True
            return False
        self.buf += d
        return True

    def line(self):
        """One line including its LF (a bare LF ends a line too)."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                out = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return out
            if not self._fill():
                raise EOFError(f"connection closed mid-line after {bytes(self.buf[:200])!r}")

    def exact(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed after {len(self.buf)} of {n} body bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def to_eof(self):
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out


def _read_head(r):
    raw = bytearray()
    line = r.line()
    raw += line
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"bad status line {line[:200]!r}")
    version, status, reason = parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""
    headers = []
    while True:
        line = r.line()
        raw += line
        if line in (b"\r\n", b"\n"):
            break
        k, sep, v = line.decode("latin-1").rstrip("\r\n").partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:200]!r}")
        headers.append((k, v.strip(" \t")))
    return version, status, reason, headers, bytes(raw)


def _read_response(r, method="GET"):
    resp = Response()
    while True:
        version, status, reason, headers, raw = _read_head(r)
        resp.head_raw += raw
        if 100 <= status < 200 and status != 101:
            resp.interim.append((status, headers))
            continue
        break
    resp.version, resp.status, resp.reason, resp.headers = version, status, reason, headers
    te = resp.header("transfer-encoding", "")
    cl = resp.header("content-length")
    if method == "HEAD" or status in (204, 304) or status < 200:
        return resp
    if "chunked" in te.lower():
        resp.chunked = True
        body = bytearray()
        while True:
            size_line = r.line().decode("latin-1").strip()
            size = int(size_line.split(";")[0], 16)
            if size == 0:
                break
            body += r.exact(size)
            if r.line() not in (b"\r\n", b"\n"):
                raise ValueError("chunk data not followed by CRLF")
        while True:
            line = r.line()
            if line in (b"\r\n", b"\n"):
                break
            k, _, v = line.decode("latin-1").rstrip("\r\n").partition(":")
            resp.trailers.append((k, v.strip()))
        resp.body = bytes(body)
    elif cl is not None:
        resp.body = r.exact(int(cl))
    else:
        resp.body = r.to_eof()
        resp.eof = True
    return resp


def _norm_headers(headers):
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


def build_request(method="GET", path="/", headers=None, body=None, host="127.0.0.1"):
    """Request bytes. Adds Host unless given; adds content-length for a bytes body, or
    transfer-encoding: chunked (and chunk framing) for a list of chunks."""
    hs = _norm_headers(headers)
    names = {k.lower() for k, _ in hs}
    if "host" not in names:
        hs.insert(0, ("Host", host))
    payload = b""
    if isinstance(body, (list, tuple)):
        if "transfer-encoding" not in names:
            hs.append(("Transfer-Encoding", "chunked"))
        for chunk in body:
            chunk = chunk.encode() if isinstance(chunk, str) else chunk
            if chunk:
                payload += b"%x\r\n%s\r\n" % (len(chunk), chunk)
        payload += b"0\r\n\r\n"
    elif body is not None:
        payload = body.encode() if isinstance(body, str) else bytes(body)
        if "content-length" not in names and "transfer-encoding" not in names:
            hs.append(("Content-Length", str(len(payload))))
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hs) + "\r\n"
    return head.encode("latin-1") + payload


class HttpConn:
    """A keep-alive HTTP/1.1 client connection over a raw socket."""

    def __init__(self, port, host="127.0.0.1", timeout=5.0):
        self.port = port
        self.host = host
        self.sock = socket.create_connection((host, port), timeout=timeout * slow_factor())
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = _Reader(self.sock, timeout=timeout * slow_factor())

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method="GET", path="/", headers=None, body=None):
        self.send(build_request(method, path, headers, body, f"{self.host}:{self.port}"))
        return self.read_response(method)

    def read_response(self, method="GET"):
        resp = _read_response(self.reader, method)
        if not resp.eof and not self.reader.buf and is_closed(self.sock, 0.0):
            resp.eof = True
        return resp

    def closed(self, timeout=0.0):
        return is_closed(self.sock, timeout)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def http_request(port, method="GET", path="/", headers=None, body=None, host="127.0.0.1",
                 timeout=5.0):
    """One request on a new connection; returns the Response (closes the connection)."""
    with HttpConn(port, host, timeout) as c:
        return c.request(method, path, headers, body)


class RawReply(bytes):
    """Bytes received, plus ``end``: "eof" (peer closed), "rst" (connection reset) or
    "timeout" (still open when the time ran out, or ``until`` matched)."""

    end = "timeout"

    def __new__(cls, data, end):
        obj = super().__new__(cls, data)
        obj.end = end
        return obj

    def __repr__(self):
        return f"RawReply({bytes(self)!r}, end={self.end!r})"


def raw_exchange(port, data, timeout=2.0, host="127.0.0.1", until=None, shut_wr=False):
    """Sends ``data`` (bytes, or a list of pieces sent separately) and returns everything
    received until the server closes, ``until(received)`` is true, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout * slow_factor()
    s = socket.create_connection((host, port), timeout=timeout * slow_factor())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = bytearray()
    end = "timeout"
    try:
        try:
            for piece in data if isinstance(data, (list, tuple)) else [data]:
                s.sendall(piece)
            if shut_wr:
                s.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            pass  # read what the server said before it went away
        while True:
            if until is not None and until(bytes(out)):
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                d = s.recv(262144)
            except socket.timeout:
                break
            except ConnectionResetError:
                end = "rst"
                break
            if not d:
                end = "eof"
                break
            out += d
    finally:
        s.close()
    return RawReply(bytes(out), end)


def parse_responses(data, method="GET"):
    """Every complete response in ``data`` (for pipelined or hostile output). A trailing
    incomplete response raises EOFError unless it is close-delimited."""
    r = _Reader(None, data)
    out = []
    while r.buf:
        out.append(_read_response(r, method))
    return out


def is_closed(sock, timeout=0.0):
    """True when the peer closed the connection (EOF or RST) and no unread data is left.
    Waits up to ``timeout`` seconds for something to happen."""
    old = sock.gettimeout()
    try:
        sock.settimeout(timeout if timeout > 0 else 0.0)
        d = sock.recv(1, socket.MSG_PEEK)
        return d == b""
    except (BlockingIOError, socket.timeout, InterruptedError):
        return False
    except (ConnectionResetError, BrokenPipeError, OSError):
        return True
    finally:
        try:
            sock.settimeout(old)
        except OSError:
            pass


def wait_closed(sock, timeout=5.0):
    return wait_for(lambda: is_closed(sock, 0.05), timeout, "the peer to close the connection")


def recv_until_closed(sock, timeout=5.0):
    """Everything the peer sends until it closes (EOF) or resets the connection; a socket
    timeout (``timeout`` seconds without a byte, scaled by slow_factor) is an error."""
    sock.settimeout(timeout * slow_factor())
    data = b""
    try:
        while (d := sock.recv(65536)) != b"":
            data += d
    except ConnectionResetError:
        pass
    return data


def curl(args, timeout=30.0, check=False):
    """Runs the real curl (``curl -sS ARGS``) and returns the CompletedProcess (bytes)."""
    exe = shutil.which("curl")
    if exe is None:
        raise Skip("curl is not installed")
    return subprocess.run([exe, "-sS", *map(str, args)], capture_output=True,
                          timeout=timeout * slow_factor(), check=check)
