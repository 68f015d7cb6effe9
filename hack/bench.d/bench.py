"""hack/bench's harness: left4me-runtime against crun and runc (docs/benchmarks.md).

    python3 hack/bench.d/bench.py --work DIR --out DIR [--quick] [--only s1,s3]
        --ours BIN --busybox DIR --probes DIR --l4d2-store DIR

Normally started by hack/bench, which installs, builds and cleans up around it. Exit
status: 0 when every scenario ran (whatever the timings, and even if a runtime failed a
scenario: that is reported in its table); 1 when the harness itself broke; 2 when the
cgroup isolation could not be verified (nothing was run then)."""

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lib  # noqa: E402
import scenarios  # noqa: E402

OURS = scenarios.OURS
MiB = 1024


def sh(*argv):
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return ""


def machine_facts(ours_bin, repo):
    """Read in the host's namespace, before anything is changed."""
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    v1 = sorted(so.split(",")[-1] for mp, fs, so in lib.mountinfo() if fs == "cgroup")
    v2 = [mp for mp, fs, _ in lib.mountinfo() if fs == "cgroup2"]
    ctrl = ""
    if v2:
        try:
            ctrl = open(os.path.join(v2[0], "cgroup.controllers")).read().strip()
        except OSError:
            pass
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0")  # read-only: never refresh the index
    git = lambda *a: subprocess.run(["git", "-C", repo, *a], capture_output=True, text=True,
                                    env=env).stdout.strip()
    dirty = git("status", "--porcelain", "--untracked-files=no")
    kind = sh("file", "-L", ours_bin)
    linkage = ("static-pie" if "static-pie linked" in kind
               else "static" if "statically linked" in kind else "dynamic")
    vuln = lambda n: open(f"/sys/devices/system/cpu/vulnerabilities/{n}").read().strip() \
        if os.path.exists(f"/sys/devices/system/cpu/vulnerabilities/{n}") else "?"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
        "memory_gib": round(mem / 1024 / 1024, 1),
        "left4me-runtime": sh(ours_bin, "--version"),
        "git_commit": git("rev-parse", "HEAD") + (" (+ uncommitted changes)" if dirty else ""),
        "binary": f"{os.path.getsize(ours_bin)} bytes, {linkage}ally linked",
        "crun": " ".join(sh("crun", "--version").splitlines()[:2]),
        "runc": " ".join(sh("runc", "--version").splitlines()[:2]),
        "cgroups": (f"hybrid: cgroup v1 hierarchies {', '.join(v1)}; cgroup2 at {', '.join(v2) or '-'}"
                    f" with controllers [{ctrl}]") if v1 else f"cgroup2 only, controllers [{ctrl}]",
        "spec_store_bypass": vuln("spec_store_bypass"),
        "loadavg_at_start": open("/proc/loadavg").read().split(" ")[0],
        "isolation": ("every runtime runs in a private mount namespace of the harness (propagation "
                      "private) where /sys/fs/cgroup/memory is lazily unmounted and replaced by an "
                      "empty tmpfs; for runc and crun /sys/fs/cgroup/unified too (crun 1.8.1 refuses "
                      "a hybrid layout whose cgroup2 has a controller; crun also gets "
                      "--cgroup-manager=disabled). left4me-runtime keeps the cgroup2 mount: it needs "
                      "one for the device rule of runc's default spec (eBPF). State roots on a tmpfs, "
                      "one per runtime. Network: containers get their own network namespace "
                      "(loopback only); the game instance shares the host's, bound to 127.0.0.1."),
    }


class Ctx:
    def __init__(self, a, ns, runtimes):
        self.quick, self.ns, self.runtimes = a.quick, ns, runtimes
        self.work, self.ours_bin, self.busybox = a.work, a.ours, a.busybox
        self.probe_dir, self.l4d2_store = a.probes, a.l4d2_store
        self.legacy_helper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy-overlay")
        self.helper_log = lib.Log(os.path.join(a.work, "logs", "legacy-helper.log"))
        self.prefix = f"b{os.getpid()}-"
        # A sleep argument no other process on the host uses: finds strays at the end.
        self.marker = str(3_000_000 + os.getpid())

    def path(self, name):
        return os.path.join(self.work, "b", name)


def bars(results):
    """The issue's bars, evaluated from this run's medians."""
    out = []
    d = {r["id"]: r["data"] for r in results}

    def add(name, met, detail):
        out.append({"bar": name, "met": met, "detail": detail})

    for sid, label in (("s1", "create+start+delete"), ("s2", "run of /bin/true")):
        x = d.get(sid, {})
        if OURS in x and "crun" in x and "runc" in x:
            rc, rr = x[OURS]["median"] / x["crun"]["median"], x[OURS]["median"] / x["runc"]["median"]
            add(f"{label}: ≤ 0.8 × crun and ≤ 0.25 × runc", rc <= 0.8 and rr <= 0.25,
                f"{rc:.2f} × crun, {rr:.2f} × runc (medians {x[OURS]['median'] * 1000:.1f} / "
                f"{x['crun']['median'] * 1000:.1f} / {x['runc']['median'] * 1000:.1f} ms)")
        else:
            add(f"{label}: ≤ 0.8 × crun and ≤ 0.25 × runc", None, "not measured")
    sup = (d.get("s3", {}).get(OURS) or {}).get("sup")
    if sup:
        add("supervising process < 2 MiB RSS", sup["rss"] < 2 * MiB,
            f"RSS {sup['rss'] / MiB:.2f} MiB, PSS {sup['pss'] / MiB:.2f} MiB, private "
            f"{sup['private'] / MiB:.2f} MiB (median per `run`)")
    else:
        add("supervising process < 2 MiB RSS", None, "not measured")
    l500 = (d.get("s4", {}).get("500") or {}).get(OURS)
    if l500:
        add("500 layers mounted correctly < 50 ms", l500["mount_est"] < 0.050,
            f"{l500['mount_est'] * 1000:.1f} ms layer cost (check passed every sample); `run` of "
            f"the check {l500['total']['median'] * 1000:.1f} ms")
    else:
        add("500 layers mounted correctly < 50 ms", None, "not measured (--quick or failed)")
    s5 = d.get("s5", {})
    checks = []  # (where, syscall, ours − crun's overhead stats)
    for where in ("container", "filter_only"):
        for mode in ("getppid", "personality"):
            diff = ((s5.get(where) or {}).get(OURS) or {}).get(mode, {}).get("minus_crun")
            if diff:
                checks.append((where.replace("_", " "), mode, diff))
    if checks:
        # "No worse": no measurement shows ours above crun's beyond the noise, i.e. the 95 %
        # interval of the paired difference reaches 0 or below (the median without one).
        low = lambda x: (x["ci95"] or [x["median"]])[0]
        add("seccomp overhead per syscall ≤ crun's (same profile)",
            all(low(x) <= 0 for _, _, x in checks),
            "; ".join(f"{w}, {m}: {x['median']:+.2f} ns"
                      + (f" [{x['ci95'][0]:+.2f}, {x['ci95'][1]:+.2f}]" if x["ci95"] else "")
                      for w, m, x in checks)
            + " (ours − crun's overhead, paired medians [95 % CI])")
    else:
        add("seccomp overhead per syscall ≤ crun's (same profile)", None, "not measured")
    return out


def markdown(facts, results, bar_list, mode):
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = [f"# left4me-runtime benchmarks ({mode} mode)", ""]
    lines += [f"- **{k}**: {esc(v)}" for k, v in facts.items()]
    for r in results:
        lines += ["", f"## {r['title']}", ""]
        if r.get("harness_error"):
            lines += [f"**harness error**: {esc(r['harness_error'])}"]
            continue
        lines.append("| " + " | ".join(r["headers"]) + " |")
        lines.append("|" + "---|" * len(r["headers"]))
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in r["rows"]]
        lines += [""] + [f"- {n}" for n in r["notes"]]
    lines += ["", "## Bars", ""]
    if mode == "quick":
        lines += ["Quick mode: every count is tiny, so these verdicts are indicative only.", ""]
    lines += ["| bar | met | measured |", "|---|---|---|"]
    lines += [f"| {b['bar']} | {'yes' if b['met'] else 'n/a' if b['met'] is None else 'NO'} | "
              f"{esc(b['detail'])} |" for b in bar_list]
    return "\n".join(lines) + "\n"


def final_cleanup(ctx, ns, runtimes):
    """Deletes every container, kills stray container processes (our marker), removes any
    cgroup our ids left; returns what was found left over (a harness failure)."""
    leftovers = []
    for rt in runtimes:
        try:
            left = lib.cleanup_runtime(rt, ns)
        except (OSError, subprocess.SubprocessError) as e:
            left = [f"cleanup failed: {e}"]
        leftovers += [f"{rt.name}: container {c} still listed" for c in left]
    for pid in lib.pids_with_cmdline(["sleep", ctx.marker]):
        leftovers.append(f"stray container process {pid}")
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for name in ("ours", "others"):
        ns.enter(name)
        groups = lib.leftover_cgroups(ctx.prefix)
        lib.remove_cgroups(groups)
        leftovers += [f"cgroup {g} left (removed)" for g in groups]
    return leftovers


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    for opt in ("--work", "--out", "--ours", "--busybox", "--probes", "--l4d2-store"):
        ap.add_argument(opt, required=True)
    a = ap.parse_args()
    a.work, a.ours, a.out = os.path.abspath(a.work), os.path.abspath(a.ours), os.path.abspath(a.out)
    os.makedirs(os.path.join(a.work, "logs"), exist_ok=True)
    os.makedirs(os.path.join(a.work, "b"), exist_ok=True)
    os.makedirs(a.out, exist_ok=True)
    os.environ["BENCH_IDMAP_BIND"] = os.path.join(os.path.abspath(a.probes), "idmap-bind")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    facts = machine_facts(a.ours, repo)
    t_start = time.time()
    try:
        ns = lib.Namespaces(os.path.join(a.work, "run"))
    except (lib.IsolationError, OSError) as e:
        print(f"bench: cgroup isolation could not be set up or verified, nothing run: {e}", file=sys.stderr)
        return 2
    st = lambda n: os.path.join(a.work, "run", n)
    logs = os.path.join(a.work, "logs")
    runtimes = [lib.Runtime(OURS, a.ours, st("left4me-runtime"), "ours", log_dir=logs),
                lib.Runtime("crun", "crun", st("crun"), "others", ["--cgroup-manager=disabled"], logs),
                lib.Runtime("runc", "runc", st("runc"), "others", log_dir=logs)]
    ctx = Ctx(a, ns, runtimes)
    only = [s for s in a.only.split(",") if s] or list(scenarios.ALL)
    results, broken = [], []
    try:
        for sid in only:
            t0 = time.time()
            print(f"bench: {sid} ...", file=sys.stderr, flush=True)
            try:
                r = scenarios.ALL[sid](ctx)
                if not r["data"]:
                    broken.append(f"{sid}: no runtime produced a result")
            except Exception as e:  # a harness failure: reported, then the next scenario
                traceback.print_exc()
                r = {"id": sid, "title": sid, "harness_error": f"{type(e).__name__}: {e}",
                     "data": {}, "rows": [], "notes": [], "headers": []}
                broken.append(f"{sid}: {e}")
            for name, e in r.get("errors", {}).items():
                print(f"bench: {sid}: {name} failed: {e}", file=sys.stderr)
            # Between scenarios: nothing may be left (a runtime's failed command included).
            left = final_cleanup(ctx, ns, runtimes)
            if left:
                print(f"bench: {sid}: cleaned up after it: {'; '.join(left)}", file=sys.stderr)
            print(f"bench: {sid} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
            results.append(r)
    finally:
        final_cleanup(ctx, ns, runtimes)
        # A second pass must find nothing: whatever it finds could not be cleaned up.
        left = final_cleanup(ctx, ns, runtimes)
        if left:
            broken.append("left over after cleanup: " + "; ".join(left))
    facts["harness_seconds"] = round(time.time() - t_start)
    facts["loadavg_at_end"] = open("/proc/loadavg").read().split(" ")[0]
    bar_list = bars(results)
    md = markdown(facts, results, bar_list, "quick" if a.quick else "full")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"mode": "quick" if a.quick else "full", "machine": facts, "scenarios": results,
                   "bars": bar_list, "harness_problems": broken}, f, indent=1, default=str)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    print(md)
    for b in broken:
        print(f"bench: HARNESS PROBLEM: {b}", file=sys.stderr)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
