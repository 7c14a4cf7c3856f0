"""Network namespaces for the transparent-capture tests (test_capture.py).

    pair = netns_pair(ctx)    two fresh namespaces joined by a veth pair, deleted at cleanup
        .task .svc            namespace names: "remora-t-<pid>-<n>" (the ECS task, where remora
                              runs as the proxy uid) and "remora-s-<pid>-<n>" (a "service" host)
        .task_ip .svc_ip      their addresses on the veth (a /30 in 10.0.0.0/8 derived from
                              the pid and n; the pair is alone in its namespaces anyway)
        .rundir               a directory in ctx.tmp owned by PROXY_UID, for remora's logs
        .exec_prefix(ns, uid=None)  argv words to run a program in ns (as uid, via setpriv)
        .call(ns, fn, *args)  runs fn in a thread that has entered ns: sockets it opens
                              (lib.http_request, lib.raw_exchange, remora.admin, ...) live there
        .run(ns, argv)        a short command in ns, checked
        .curl(ns, args)       curl -sS ARGS in ns (as root, so an "app" whose traffic is captured)
        .add_svc_address(ip)  one more address on the service host, routed from the task
    install_ecs_rules(pair, ...)  the nat rules of ECS's aws-appmesh CNI plugin in pair.task
    start_remora_in_task(ctx, pair, config) -> lib.Remora running as PROXY_UID in pair.task

Everything raises lib.Skip when the machine cannot do it (not root, no `ip netns`, no
iptables, or an iptables whose nat table does not work in a namespace)."""

import ctypes
import itertools
import os
import re
import shlex
import shutil
import subprocess
import threading

import lib

PROXY_UID = 1337  # the proxy's IgnoredUID in ECS's APPMESH proxyConfiguration
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
NAME_RE = re.compile(r"^remora-[ts]-(\d+)-\d+$")

_counter = itertools.count()
_backend = None  # the iptables command that works in a namespace, once found
_reaped = False


def _run(argv, timeout=10.0, check=True):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                       timeout=timeout * lib.slow_factor())
    if check and p.returncode != 0:
        raise lib.TestFailure(f"{shlex.join(map(str, argv))} exited with {p.returncode}: "
                              f"{p.stderr.strip() or p.stdout.strip()}")
    return p


def _reap_stale():
    """Deletes namespaces left by an earlier run that was killed before its cleanup (their
    names carry the pid of a runner that no longer exists)."""
    global _reaped
    if _reaped:
        return
    _reaped = True
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return
    for name in names:
        m = NAME_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            _run(["ip", "netns", "delete", name], check=False)


def _need_tools():
    if os.geteuid() != 0:
        raise lib.Skip("network namespaces need root")
    for tool in ("ip", "setpriv", "curl"):
        if shutil.which(tool) is None:
            raise lib.Skip(f"{tool} is not installed (scripts/deps.sh installs it)")


def _iptables(ns):
    """The iptables command whose nat table works in ``ns``: `iptables` (nft on Debian 12),
    else `iptables-legacy`. Raises Skip when neither does."""
    global _backend
    if _backend is not None:
        return _backend
    tried = []
    for cmd in ("iptables", "iptables-nft", "iptables-legacy"):
        if shutil.which(cmd) is None:
            tried.append(f"{cmd}: not installed")
            continue
        p = _run(["ip", "netns", "exec", ns, cmd, "-w", "-t", "nat", "-S"], check=False)
        if p.returncode == 0:
            _backend = cmd
            return cmd
        tried.append(f"{cmd}: {p.stderr.strip()[:200]}")
    raise lib.Skip("no iptables with a working nat table in a namespace (" +
                   "; ".join(tried) + ")")


def iptables_backend():
    """The command chosen (after the first install_ecs_rules), with its version line."""
    if _backend is None:
        return None
    return _run([_backend, "--version"]).stdout.strip()


class NetnsPair:
    def __init__(self, ctx):
        _need_tools()
        _reap_stale()
        self.ctx = ctx
        n = next(_counter)
        pid = os.getpid()
        self.task = f"remora-t-{pid}-{n}"
        self.svc = f"remora-s-{pid}-{n}"
        # 10.A.B.C/30: A in 64..191 and B from the pid, C from n; 64 pairs per runner.
        a = 64 + (pid >> 8) % 128
        b = pid & 0xFF
        c = (n % 64) * 4
        self.prefix_len = 30
        self.task_ip = f"10.{a}.{b}.{c + 1}"
        self.svc_ip = f"10.{a}.{b}.{c + 2}"
        self.task_dev, self.svc_dev = "eth-task", "eth-svc"
        self._created = []
        ctx.on_cleanup(self.teardown)
        for ns in (self.task, self.svc):
            p = _run(["ip", "netns", "add", ns], check=False)
            if p.returncode != 0:
                raise lib.Skip(f"ip netns add failed: {p.stderr.strip()}")
            self._created.append(ns)
        batch = [
            f"-n {self.task} link set lo up",
            f"-n {self.svc} link set lo up",
            f"-n {self.task} link add {self.task_dev} type veth peer name {self.svc_dev} "
            f"netns {self.svc}",
            f"-n {self.task} addr add {self.task_ip}/{self.prefix_len} dev {self.task_dev}",
            f"-n {self.svc} addr add {self.svc_ip}/{self.prefix_len} dev {self.svc_dev}",
            f"-n {self.task} link set {self.task_dev} up",
            f"-n {self.svc} link set {self.svc_dev} up",
        ]
        for line in batch:
            _run(["ip", *line.split()])
        # A directory remora (as PROXY_UID) can write its logs to; ctx.tmp itself is 0700.
        os.chmod(ctx.tmp, 0o711)
        self.rundir = ctx.tmp / f"netns-{n}"
        self.rundir.mkdir()
        os.chown(self.rundir, PROXY_UID, PROXY_UID)

    def teardown(self):
        """Deletes both namespaces (their veth ends go with them). Idempotent."""
        errors = []
        while self._created:
            ns = self._created.pop()
            p = _run(["ip", "netns", "delete", ns], check=False)
            if p.returncode != 0 and os.path.exists(f"{NETNS_DIR}/{ns}"):
                errors.append(f"{ns}: {p.stderr.strip()}")
        if errors:
            raise lib.TestFailure("could not delete namespaces: " + "; ".join(errors))

    # -- running things inside --

    def exec_prefix(self, ns, uid=None):
        """`ip netns exec NS` (and setpriv to ``uid`` with no groups, keeping the parent-death
        signal). Both exec the program, so its pid and signals are the program's own."""
        words = ["ip", "netns", "exec", ns]
        if uid is not None:
            words += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                      "--pdeathsig", "keep", "--"]
        return words

    def run(self, ns, argv, timeout=10.0, check=True):
        return _run(self.exec_prefix(ns) + [str(a) for a in argv], timeout, check)

    def curl(self, ns, args, timeout=10.0):
        """curl -sS ARGS run as root in ``ns`` (CompletedProcess, bytes)."""
        return subprocess.run(self.exec_prefix(ns) + ["curl", "-sS", *map(str, args)],
                              capture_output=True, timeout=timeout * lib.slow_factor())

    def call(self, ns, fn, *args, **kwargs):
        """fn(*args, **kwargs) in a new thread that first enters ``ns`` (setns affects only
        the calling thread); returns its value or raises its exception here."""
        box = {}

        def body():
            try:
                fd = os.open(f"{NETNS_DIR}/{ns}", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    libc = ctypes.CDLL(None, use_errno=True)
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        e = ctypes.get_errno()
                        raise OSError(e, f"setns {ns}: {os.strerror(e)}")
                finally:
                    os.close(fd)
                box["value"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                box["error"] = e

        t = threading.Thread(target=body, name=f"in-{ns}", daemon=True)
        t.start()
        t.join(60.0 * lib.slow_factor())
        if t.is_alive():
            raise TimeoutError(f"{getattr(fn, '__name__', fn)} in {ns} still running after 60s")
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def add_svc_address(self, ip):
        """Puts ``ip`` on the service host too and routes it from the task (to reach an
        address ECS ignores, like 169.254.170.2)."""
        _run(["ip", "-n", self.svc, "addr", "add", f"{ip}/32", "dev", self.svc_dev])
        _run(["ip", "-n", self.task, "route", "add", f"{ip}/32", "dev", self.task_dev])


def netns_pair(ctx):
    return NetnsPair(ctx)


def ecs_rules(ignored_uid=None, ignored_gid=None, proxy_ingress_port=None,
              proxy_egress_port=None, app_ports=(), egress_ignored_ips=(),
              egress_ignored_ports=()):
    """The nat-table rules ECS's aws-appmesh CNI plugin installs for a proxyConfiguration of
    type APPMESH (docs: /work/shared/reference/appmesh-and-envoy.md section 2), as argv lists
    for iptables (without the command). Validates like the plugin, and appends the two
    addresses the ECS agent always ignores."""
    if ignored_uid is None and ignored_gid is None:
        raise ValueError("IgnoredUID or IgnoredGID is required")
    if proxy_egress_port is None:
        raise ValueError("ProxyEgressPort is required")
    if (proxy_ingress_port is None) != (not app_ports):
        raise ValueError("ProxyIngressPort and AppPorts must be both set or both unset")
    ips = list(egress_ignored_ips)
    for ip in ("169.254.170.2", "169.254.169.254"):  # the ECS agent adds these
        if ip not in ips:
            ips.append(ip)
    rules = []
    if proxy_ingress_port is not None:
        ports = ",".join(str(p) for p in list(app_ports)[:15])  # multiport takes 15
        rules += [
            ["-t", "nat", "-N", "APPMESH_INGRESS"],
            ["-t", "nat", "-A", "APPMESH_INGRESS", "-p", "tcp", "-m", "multiport", "--dports",
             ports, "-j", "REDIRECT", "--to-port", str(proxy_ingress_port)],
            ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "-m", "addrtype", "!",
             "--src-type", "LOCAL", "-j", "APPMESH_INGRESS"],
        ]
    rules.append(["-t", "nat", "-N", "APPMESH_EGRESS"])
    if ignored_uid is not None:
        rules.append(["-t", "nat", "-A", "APPMESH_EGRESS", "-m", "owner", "--uid-owner",
                      str(ignored_uid), "-j", "RETURN"])
    if ignored_gid is not None:
        rules.append(["-t", "nat", "-A", "APPMESH_EGRESS", "-m", "owner", "--gid-owner",
                      str(ignored_gid), "-j", "RETURN"])
    if egress_ignored_ports:
        rules.append(["-t", "nat", "-A", "APPMESH_EGRESS", "-p", "tcp", "-m", "multiport",
                      "--dports", ",".join(str(p) for p in list(egress_ignored_ports)[:15]),
                      "-j", "RETURN"])
    rules += [
        ["-t", "nat", "-A", "APPMESH_EGRESS", "-p", "tcp", "-d", ",".join(ips), "-j",
         "RETURN"],
        ["-t", "nat", "-A", "APPMESH_EGRESS", "-p", "tcp", "-j", "REDIRECT", "--to",
         str(proxy_egress_port)],
        ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "addrtype", "!", "--dst-type",
         "LOCAL", "-j", "APPMESH_EGRESS"],
    ]
    return rules


def install_ecs_rules(pair, ignored_uid=PROXY_UID, ignored_gid=None, proxy_ingress_port=None,
                      proxy_egress_port=15001, app_ports=(), egress_ignored_ips=(),
                      egress_ignored_ports=()):
    """Installs ecs_rules(...) in pair.task with one shell (one namespace entry); returns the
    `iptables -t nat -S` listing afterwards."""
    rules = ecs_rules(ignored_uid, ignored_gid, proxy_ingress_port, proxy_egress_port,
                      app_ports, egress_ignored_ips, egress_ignored_ports)
    cmd = _iptables(pair.task)
    script = "\n".join(shlex.join([cmd, "-w", *r]) for r in rules)
    pair.run(pair.task, ["sh", "-ec", script])
    return pair.run(pair.task, [cmd, "-w", "-t", "nat", "-S"]).stdout


def start_remora_in_task(ctx, pair, config, timeout=10.0, **kw):
    """ctx.start_remora(config) in pair.task as PROXY_UID; waits for admin /ready from inside
    the namespace (the config's admin address must be on 127.0.0.1 there)."""
    r = ctx.start_remora(config, prefix=pair.exec_prefix(pair.task, uid=PROXY_UID),
                         wait_ready=False, **kw)

    def ready():
        if not r.alive():
            return "exited"  # e.g. a config it rejects: fail now, not after the deadline
        return r.admin("GET", "/ready").status == 200

    pair.call(pair.task, lib.wait_for, ready, timeout, f"{r.name} ready in {pair.task}")
    if not r.alive():
        raise lib.TestFailure(f"{r.name} exited with {r.returncode}:\n{r.tail()}")
    return r


def start_upstream_in(ctx, pair, ns, name, listen):
    """A test upstream in namespace ``ns`` (as root) listening on ``listen`` (ADDR:PORT)."""
    return ctx.start_upstream(name=name, listen=listen, prefix=pair.exec_prefix(ns))
