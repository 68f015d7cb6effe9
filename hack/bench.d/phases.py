"""Where one `left4me-runtime run` of /bin/true spends its wall time, step by step.

    sudo python3 hack/bench.d/phases.py [--runs 40] [--layers N] [--bin PATH]

Runs the release binary N times on a busybox bundle (with --layers: on a store of N
lower layers) under `perf record` with syscall tracepoints only (no ptrace: strace's
overhead hides exactly the steps that matter), inside the same private mount namespace
as hack/bench's "ours", and prints the median of each step. The steps are delimited by
syscalls each run makes once (execveat = the exe_guard re-exec where there is one,
signalfd4 = run's signal setup, clone3 = init, pivot_root, seccomp, execve of the
process). Needs `perf` (Debian: linux-perf) and the images hack/bench builds."""

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSCALLS = ["execve", "execveat", "open_tree", "signalfd4", "mkdir", "bpf", "clone3",
            "sethostname", "fsopen", "fsmount", "pivot_root", "umount", "seccomp", "readlink"]


def record(binary, bundle, root, runs, out):
    events = [a for s in SYSCALLS for a in ("-e", f"syscalls:sys_enter_{s}", "-e", f"syscalls:sys_exit_{s}")]
    loop = f'for i in $(seq 1 {runs}); do "{binary}" --root "{root}" run --bundle "{bundle}" p$i 2>/dev/null; done'
    subprocess.run(["perf", "record", "-q", *events, "-e", "sched:sched_process_exit", "-o", out,
                    "--", "sh", "-c", loop], check=True)
    text = subprocess.run(["perf", "script", "-i", out, "-F", "comm,tid,time,event"],
                          capture_output=True, text=True, check=True).stdout
    ev = collections.defaultdict(list)
    for line in text.splitlines():
        m = re.match(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+\S+:(\S+):", line)
        if m:
            ev[int(m.group(2))].append((m.group(1), float(m.group(3)), m.group(4)))
    return ev


def first(es, name, after=0.0):
    return next((t for _, t, n in es if n == name and t >= after), None)


def last(es, name):
    ts = [t for _, t, n in es if n == name]
    return ts[-1] if ts else None


def child_of(ev, parent, t_clone):
    """The process whose first event is the exit of a clone3 made at t_clone."""
    cands = [(es[0][1] - t_clone, pid) for pid, es in ev.items()
             if pid != parent and es[0][2] == "sys_exit_clone3" and es[0][1] >= t_clone]
    return min(cands)[1] if cands else None


def phases(ev):
    out = collections.defaultdict(list)
    for pid, es in ev.items():
        clones = [t for _, t, n in es if n == "sys_enter_clone3"]
        if not clones or es[0][0] != "sh":  # a runtime process: forked by the loop's sh
            continue
        init = child_of(ev, pid, clones[-1])
        helper = child_of(ev, pid, clones[0]) if len(clones) > 1 else None
        if init is None:
            continue
        ei = ev[init]
        t0 = first(es, "sys_enter_execve")
        x1 = first(es, "sys_exit_execve")
        ot = first(es, "sys_enter_open_tree")
        c = first(es, "sys_exit_execve", ot or 0)
        sfd = first(es, "sys_enter_signalfd4", c or 0)
        mk = first(es, "sys_enter_mkdir", sfd or 0)
        b0, b1 = first(es, "sys_enter_bpf"), last(es, "sys_exit_bpf")
        steps = [("execve(2) of the runtime (kernel)", t0, x1)]
        if ot is not None:  # the exe_guard re-exec (exe_guard::needed_for)
            steps += [("ld.so + Rust/clap start until open_tree(/proc/self/exe)", x1, ot),
                      ("exe_guard: clone + execveat(2) (kernel)", ot, c),
                      ("ld.so + start again, CLI, policy lookup -> signalfd4", c, sfd)]
        else:
            steps += [("runtime start, CLI, policy lookup -> signalfd4", x1, sfd)]
        steps += [("config.json load + checks (+ layer checks) -> state mkdir", sfd, mk),
                 ("state dir, cgroup mkdir -> bpf", mk, b0),
                 ("device eBPF program load + attach", b0, b1)]
        if helper:
            eh = ev[helper]
            steps += [("layers: prepare -> helper clone3", b1, clones[0]),
                      ("layers helper: open layers -> fsopen(overlay)", eh[0][1], first(eh, "sys_enter_fsopen")),
                      ("layers helper: fsconfig lowerdir+ per layer -> fsmount", first(eh, "sys_enter_fsopen"),
                       first(eh, "sys_exit_fsmount")),
                      ("layers helper: fsmount -> exit", first(eh, "sys_exit_fsmount"),
                       first(eh, "sched_process_exit")),
                      ("helper exit -> init clone3", first(eh, "sched_process_exit"), clones[-1])]
        else:
            steps += [("sockets -> clone3", b1, clones[-1])]
        steps += [("clone3 of init (new namespaces)", clones[-1], first(es, "sys_exit_clone3", clones[-1])),
                  ("id maps, Go -> init's sethostname", first(es, "sys_exit_clone3", clones[-1]),
                   first(ei, "sys_enter_sethostname")),
                  ("init: rootfs mounts, devices, masks -> pivot_root", first(ei, "sys_enter_sethostname"),
                   first(ei, "sys_enter_pivot_root")),
                  ("init: pivot_root + detach old root", first(ei, "sys_enter_pivot_root"), first(ei, "sys_exit_umount")),
                  ("init: rlimits, caps, ids, cwd, start handshake -> seccomp", first(ei, "sys_exit_umount"),
                   first(ei, "sys_enter_seccomp")),
                  ("init: seccomp(2) filter load", first(ei, "sys_enter_seccomp"), first(ei, "sys_exit_seccomp")),
                  ("-> execve of the process", first(ei, "sys_exit_seccomp"), first(ei, "sys_enter_execve")),
                  ("the process runs and exits (/bin/true)", first(ei, "sys_enter_execve"),
                   first(ei, "sched_process_exit")),
                  ("reap, delete, runtime exit", first(ei, "sched_process_exit"), first(es, "sched_process_exit")),
                  ("TOTAL", t0, first(es, "sched_process_exit"))]
        for name, a, b in steps:
            if a is not None and b is not None:
                out[name].append((b - a) * 1000)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--layers", type=int, default=0, help="lower layers (1-500); 0: plain rootfs")
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release/left4me-runtime"))
    ap.add_argument("--busybox", default=os.path.join(REPO, "images/out/busybox"))
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="left4me-phases.")
    ns = None
    try:
        ns = lib.Namespaces(os.path.join(work, "run"))
        ns.enter("ours")
        bundle = os.path.join(work, "bundle")
        if a.layers:
            store = os.path.join(work, "store")
            os.makedirs(os.path.join(store, "overlays"))
            subprocess.run(["cp", "-a", a.busybox, os.path.join(store, "installation")], check=True)
            for i in range(a.layers - 1):
                os.makedirs(os.path.join(store, "overlays", str(i)))
            lib.make_bundle(a.bin, bundle, ["/bin/true"], readonly=False)
            lower = [{"path": f"overlays/{i}"} for i in range(a.layers - 1)] + [{"path": "installation"}]
            lib.edit_config(bundle, lambda c: c.__setitem__("left4me", {"layers": {"store": store, "lower": lower}}))
        else:
            lib.make_bundle(a.bin, bundle, ["/bin/true"], a.busybox)
        ev = record(a.bin, bundle, os.path.join(work, "run", "state"), a.runs, os.path.join(work, "perf.data"))
        res = phases(ev)
        n = len(res.get("TOTAL", []))
        print(f"`run` of /bin/true, {'%d layers' % a.layers if a.layers else 'busybox rootfs'}: "
              f"medians of {n} runs under syscall tracepoints (ms)")
        for name, v in res.items():
            print(f"  {statistics.median(v):7.3f}  {name}")
    finally:
        if ns:
            ns.enter("host")  # the state tmpfs is mounted only inside the namespaces
        subprocess.run(["rm", "-rf", work])
    return 0


if __name__ == "__main__":
    sys.exit(main())
