"""hack/bench's plumbing: the private mount namespaces the runtimes run in, timed command
execution, container bundles, statistics and cleanup. Stdlib only (Python 3.11)."""

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import time

# --- mount namespaces ----------------------------------------------------------------
#
# runc and crun create cgroups in every cgroup v1 hierarchy they find. On this host the
# v1 `memory` hierarchy holds the machine's own supervisor cgroup, which must never be
# touched, and Debian's crun 1.8.1 refuses a hybrid layout whose cgroup2 mount has any
# controller. So every runtime runs inside a private mount namespace of this process:
#
#   "ours":   /sys/fs/cgroup/memory replaced by an empty tmpfs; the cgroup2 mount at
#             /sys/fs/cgroup/unified kept (our runtime puts its group there and needs a
#             cgroup2 hierarchy for the eBPF device program of runc's default spec);
#   "others": a copy of "ours" where /sys/fs/cgroup/unified is an empty tmpfs as well.
#
# The harness switches between them with setns() before each command (it is single
# threaded, which setns(CLONE_NEWNS) requires). Nothing is mounted in the host's
# namespace: every mount a runtime or the legacy helper makes dies with the namespaces.

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
MS_REC, MS_PRIVATE = 0x4000, 1 << 18
MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(src, target, fstype, flags, data):
    enc = lambda s: None if s is None else s.encode()
    _check(_libc.mount(enc(src), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or ''} {target}")


def _empty_tmpfs_over(path):
    _check(_libc.umount2(path.encode(), MNT_DETACH), f"umount -l {path}")
    _mount("bench-empty", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")


def mountinfo(pid="self"):
    """[(mount point, fstype, super options)] in mount order."""
    out = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fstype, _src, sopts = right.split(" ", 2)
            out.append((left.split(" ")[4], fstype, sopts.strip()))
    return out


class IsolationError(Exception):
    pass


class Namespaces:
    """The two private mount namespaces; `enter(name)` switches this process into one."""

    def __init__(self, state_dir):
        self.host_ns = os.readlink("/proc/self/ns/mnt")
        # Kept only so that a tool can leave the namespaces to clean up (phases.py).
        self.fds = {"host": os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)}
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _mount(None, "/", None, MS_REC | MS_PRIVATE, None)
        _empty_tmpfs_over("/sys/fs/cgroup/memory")
        # State directories on a tmpfs, as /run is in production; shared by both
        # namespaces (the copy made by the next unshare refers to the same superblock).
        os.makedirs(state_dir, exist_ok=True)
        _mount("bench-state", state_dir, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self.fds["ours"] = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _empty_tmpfs_over("/sys/fs/cgroup/unified")
        self.fds["others"] = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        self.current = "others"
        self.verify()

    def enter(self, name):
        if name != self.current:
            _check(_libc.setns(self.fds[name], CLONE_NEWNS), f"setns({name})")
            self.current = name
            os.chdir("/")

    def verify(self):
        """Aborts unless the host's cgroup mounts are out of reach (checked before the first
        runc/crun call): in both namespaces the memory hierarchy is a tmpfs and no cgroup
        mount carries the memory controller; in "others" no cgroup2 mount is left; and the
        host's own namespace still has its memory hierarchy (nothing was changed there)."""
        for name in ("ours", "others"):
            self.enter(name)
            if os.readlink("/proc/self/ns/mnt") == self.host_ns:
                raise IsolationError(f"namespace {name} is the host's")
            mi = mountinfo()
            top = [fs for mp, fs, _ in mi if mp == "/sys/fs/cgroup/memory"]
            if not top or top[-1] != "tmpfs":
                raise IsolationError(f"{name}: /sys/fs/cgroup/memory is not a tmpfs: {top}")
            if any(fs == "cgroup" and "memory" in so.split(",") for _, fs, so in mi):
                raise IsolationError(f"{name}: a cgroup v1 memory hierarchy is still mounted")
            if name == "others" and any(fs == "cgroup2" for _, fs, _ in mi):
                raise IsolationError("others: a cgroup2 hierarchy is still mounted")
        host = mountinfo(os.getppid())
        if not any(mp == "/sys/fs/cgroup/memory" and fs == "cgroup" for mp, fs, _ in host):
            raise IsolationError("the host's /sys/fs/cgroup/memory is not where it was")


# --- running commands ----------------------------------------------------------------

class RunError(Exception):
    pass


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


signal.signal(signal.SIGALRM, _on_alarm)


class Deadline:
    """SIGALRM-based timeout: Popen.wait(timeout=...) polls with sleeps of up to 50 ms,
    which would distort millisecond timings; a blocking waitpid() interrupted by an alarm
    does not."""

    def __init__(self, seconds, what):
        self.seconds, self.what = seconds, what

    def __enter__(self):
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, typ, exc, tb):
        signal.setitimer(signal.ITIMER_REAL, 0)
        if typ is _Timeout:
            raise RunError(f"{self.what}: timed out after {self.seconds} s")
        return False


class Log:
    """One stderr log file per runtime: commands append to it, and a failure quotes what
    that command wrote (read back from its offset)."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def offset(self):
        return os.fstat(self.fd).st_size

    def since(self, off, limit=600):
        with open(self.path, "rb") as f:
            f.seek(off)
            text = f.read().decode(errors="replace")
        lines = [l for l in text.splitlines() if "no policy in force" not in l]
        return " | ".join(lines)[-limit:]


def run(argv, log, *, timeout=60, capture=False, check=True, stdout=None):
    """Runs argv to completion; returns (elapsed seconds, stdout text or None)."""
    off = log.offset()
    out = subprocess.PIPE if capture else (stdout if stdout is not None else subprocess.DEVNULL)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log.fd)
    try:
        with Deadline(timeout, " ".join(argv[:4])):
            text = p.communicate()[0] if capture else None
            rc = p.wait()
    except RunError:
        p.kill()
        p.wait()
        raise
    elapsed = time.perf_counter() - t0
    if check and rc != 0:
        raise RunError(f"`{' '.join(os.path.basename(a) if i == 0 else a for i, a in enumerate(argv))}`"
                       f" exited {rc}: {log.since(off)}")
    return elapsed, (text.decode(errors="replace") if capture else None)


class Runtime:
    """One OCI runtime: its binary, its state root and the namespace it runs in."""

    def __init__(self, name, binary, state_root, ns_name, extra=(), log_dir=None):
        self.name, self.binary, self.ns_name = name, binary, ns_name
        self.root = state_root
        self.args = [binary, "--root", state_root, *extra]
        self.log = Log(os.path.join(log_dir, f"{name}.log"))
        self.ids = set()  # every container id ever used, for the final cleanup

    def cmd(self, *args):
        return [*self.args, *args]

    def version(self):
        try:
            out = subprocess.run([self.binary, "--version"], capture_output=True, text=True,
                                 timeout=10).stdout
            return out.splitlines()[0].strip() if out else "?"
        except OSError as e:
            return f"unavailable: {e}"

    def list_ids(self):
        out = subprocess.run(self.cmd("list", "-q"), capture_output=True, text=True, timeout=30)
        return [l for l in out.stdout.split() if l]


# --- statistics ----------------------------------------------------------------------

def percentile(xs, q):
    """Linear interpolation between closest ranks (numpy's default)."""
    s = sorted(xs)
    if not s:
        return None
    k = (len(s) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(xs):
    if not xs:
        return None
    return {"n": len(xs), "median": percentile(xs, 50), "p95": percentile(xs, 95),
            "min": min(xs), "max": max(xs), "mean": sum(xs) / len(xs)}


def ratio(a, b):
    return None if a is None or not b else a / b


# --- bundles -------------------------------------------------------------------------

def make_bundle(ours_bin, path, args, rootfs_src=None, readonly=True, seccomp=True):
    """A bundle from `left4me-runtime spec` (runc's default config.json, with the default
    seccomp profile): the SAME config.json is then used by every runtime. ociVersion is
    set to 1.0.2 because crun 1.8.1 refuses anything but 1.0.x (all three accept it)."""
    os.makedirs(path, exist_ok=True)
    subprocess.run([ours_bin, "spec", "--bundle", path], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rootfs = os.path.join(path, "rootfs")
    if rootfs_src:
        subprocess.run(["cp", "-a", rootfs_src, rootfs], check=True)
        try:
            os.unlink(os.path.join(rootfs, ".stamp"))
        except FileNotFoundError:
            pass
    else:
        os.makedirs(rootfs, exist_ok=True)
    edit_config(path, lambda c: _basic(c, args, readonly, seccomp))
    return path


def _basic(c, args, readonly, seccomp):
    c["ociVersion"] = "1.0.2"
    c["process"]["terminal"] = False
    c["process"]["args"] = args
    c["root"]["readonly"] = readonly
    c["hostname"] = "bench"
    if not seccomp:
        c["linux"].pop("seccomp", None)


def edit_config(bundle, fn):
    p = os.path.join(bundle, "config.json")
    with open(p) as f:
        c = json.load(f)
    fn(c)
    with open(p + ".tmp", "w") as f:
        json.dump(c, f, indent=1)
    os.replace(p + ".tmp", p)


# --- processes and memory ------------------------------------------------------------

def meminfo_available_kib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    raise RunError("no MemAvailable in /proc/meminfo")


def proc_memory(pid):
    """{'rss': VmRSS, 'pss', 'pss_anon', 'pss_file', 'private'} in KiB, or None if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
        vals = {}
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                m = re.match(r"(\w+):\s+(\d+) kB", line)
                if m:
                    vals[m.group(1)] = int(m.group(2))
    except (OSError, StopIteration):
        return None
    return {"rss": rss, "pss": vals.get("Pss", 0), "pss_anon": vals.get("Pss_Anon", 0),
            "pss_file": vals.get("Pss_File", 0),
            "private": vals.get("Private_Clean", 0) + vals.get("Private_Dirty", 0)}


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def pids_with_cmdline(cmdline):
    """Host pids whose argv is exactly `cmdline` (a list)."""
    want = ("\0".join(cmdline) + "\0").encode()
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    if f.read() == want:
                        found.append(int(d))
            except OSError:
                pass
    return found


# --- cleanup -------------------------------------------------------------------------

def cleanup_runtime(rt, ns):
    """Deletes (force) every container the runtime still lists or that the harness used."""
    ns.enter(rt.ns_name)
    left = set(rt.list_ids()) if os.path.isdir(rt.root) else set()
    for cid in sorted(left | rt.ids):
        subprocess.run(rt.cmd("delete", "--force", cid), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    rt.ids.clear()
    return sorted(left)


def leftover_cgroups(prefix):
    """Group directories named after our container ids that a runtime left behind in any
    hierarchy visible in the current namespace (never looking into /sys/fs/cgroup/memory,
    which is an empty tmpfs in our namespaces anyway)."""
    found = []
    for mp, fs, _ in mountinfo():
        if fs not in ("cgroup", "cgroup2") or mp.startswith("/sys/fs/cgroup/memory"):
            continue
        for dirpath, dirnames, _files in os.walk(mp):
            for d in dirnames:
                if d.startswith(prefix) or d.startswith("left4me-" + prefix):
                    found.append(os.path.join(dirpath, d))
    return found


def remove_cgroups(paths):
    """rmdir (deepest first) of empty groups our containers left; never below memory."""
    for p in sorted(paths, key=len, reverse=True):
        if p.startswith("/sys/fs/cgroup/memory"):
            continue
        try:
            os.rmdir(p)
        except OSError:
            pass


def rmtree(path):
    shutil.rmtree(path, ignore_errors=True)


def median_ci(xs, conf=0.95):
    """Distribution-free confidence interval of the median (order statistics of the
    binomial(n, 1/2) law): (low, high), or None with fewer than 6 samples (no interval
    reaches 95 % below that)."""
    s, n = sorted(xs), len(xs)
    if n < 6:
        return None
    from math import comb
    # largest k with P(Binom(n, 1/2) < k) <= (1 - conf) / 2: [s[k-1], s[n-k]] covers conf
    tail, k = 0.0, 0
    while True:
        nxt = tail + comb(n, k) / 2 ** n
        if nxt > (1 - conf) / 2:
            break
        tail, k = nxt, k + 1
    if k == 0:
        return None
    return s[k - 1], s[n - k]


# --- scenario helpers ----------------------------------------------------------------

def interleave(ctx, iterations, warmup, fn, errors, runtimes=None):
    """fn(rt, i, warm) -> sample, for every runtime in turn, `warmup` unrecorded rounds
    first. A runtime whose command fails is dropped from the rest of the scenario and the
    failure recorded (a result, not a harness failure)."""
    runtimes = runtimes or ctx.runtimes
    samples = {rt.name: [] for rt in runtimes}
    active = [rt for rt in runtimes if rt.name not in errors]
    for i in range(warmup + iterations):
        for rt in list(active):
            ctx.ns.enter(rt.ns_name)
            try:
                s = fn(rt, i, i < warmup)
            except RunError as e:
                errors[rt.name] = str(e)
                active.remove(rt)
                continue
            if i >= warmup:
                samples[rt.name].append(s)
    return samples


def error_rows(errors, width):
    return [[name, *(["failed: " + msg[:300]] + [""] * (width - 2))] for name, msg in errors.items()]
