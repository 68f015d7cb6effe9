"""Scenario 5: seccomp cost per syscall, measured two ways.

In the container: the probe loops over raw syscalls inside each runtime's container, with
the `default` profile and without `linux.seccomp` — the figure the issue asks for, which
also carries whatever differs between the runtimes' containers (cgroup placement, parent).

Filter only: each runtime's filter is taken from one of its running containers
(PTRACE_SECCOMP_GET_FILTER) and run in one plain process, the same for all: the cost of the
BPF program each runtime generated and nothing else.

Every round measures with and without the filter back to back, so the overhead is taken
per round (paired) and the difference to crun per round too; medians come with their
distribution-free 95 % interval, so a difference inside the noise reads as one."""

import os
import time

from lib import RunError, error_rows, interleave, make_bundle, median_ci, run, summary

OURS = "left4me-runtime"
MODES = ("getppid", "personality")


def _paired(samples, key_with, key_without):
    return [s[key_with] - s[key_without] for s in samples]


def _stats(xs):
    ci = median_ci(xs)
    d = summary(xs)
    d["ci95"] = list(ci) if ci else None
    return d


def _fmt_ci(d):
    if not d:
        return "—"
    ci = d.get("ci95")
    return f"{d['median']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def _in_container(ctx, calls, iters, warm, errors):
    bundles = {}
    for mode in MODES:
        for sec in (True, False):
            bd = make_bundle(ctx.ours_bin, ctx.path(f"s5-{mode}-{'sec' if sec else 'none'}"),
                             ["/getppid", str(calls), *([mode] if mode != "getppid" else [])],
                             ctx.busybox, seccomp=sec)
            _copy_probe(ctx, bd)
            bundles[(mode, sec)] = bd

    def one(rt, i, warm):
        out = {}
        for (mode, sec), bd in bundles.items():
            cid = f"{ctx.prefix}5-{i}"
            rt.ids.add(cid)
            _, text = run(rt.cmd("run", "--bundle", bd, cid), rt.log, capture=True, timeout=120)
            rt.ids.discard(cid)
            out[(mode, sec)] = _ns(text)
        return out

    return interleave(ctx, iters, warm, one, errors)


def _copy_probe(ctx, bundle):
    import shutil
    shutil.copy2(os.path.join(ctx.probe_dir, "getppid"), os.path.join(bundle, "rootfs", "getppid"))


def _ns(text):
    try:
        return float(text.strip())
    except ValueError:
        raise RunError(f"getppid probe printed {text!r}")


def _capture_filters(ctx, errors):
    """{runtime: path of its raw BPF program}, from a `sleep` container under the profile."""
    bd = make_bundle(ctx.ours_bin, ctx.path("s5-hold"), ["sleep", "600"], ctx.busybox)
    tool = os.path.join(ctx.probe_dir, "seccomp-filter")
    out = {}
    for rt in ctx.runtimes:
        if rt.name in errors:
            continue
        ctx.ns.enter(rt.ns_name)
        cid = f"{ctx.prefix}5-hold"
        rt.ids.add(cid)
        path = ctx.path(f"s5-{rt.name}.bpf")
        try:
            run(rt.cmd("create", "--bundle", bd, cid), rt.log)
            run(rt.cmd("start", cid), rt.log)
            pid = _wait_filtered(rt, cid)
            _, n = run([tool, "dump", str(pid), path], rt.log, capture=True)
            out[rt.name] = {"path": path, "instructions": int(n)}
        except (RunError, ValueError) as e:
            errors[rt.name] = f"filter capture: {e}"
        finally:
            run(rt.cmd("delete", "--force", cid), rt.log, check=False)
            rt.ids.discard(cid)
    return out


def _wait_filtered(rt, cid, timeout=10.0):
    """The container's pid once its process runs `sleep` under a seccomp filter."""
    import json
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        _, text = run(rt.cmd("state", cid), rt.log, capture=True)
        pid = json.loads(text).get("pid") or 0
        try:
            with open(f"/proc/{pid}/status") as f:
                status = dict(l.split(":", 1) for l in f if ":" in l)
            if status["Name"].strip() == "sleep" and status["Seccomp"].strip() == "2":
                return pid
        except (OSError, KeyError):
            pass
        time.sleep(0.01)
    raise RunError(f"{cid}: no filtered `sleep` process after {timeout:.0f} s")


def _filter_only(ctx, filters, calls, iters, warm):
    """Rounds of: no filter, then each runtime's filter, in one plain process each."""
    tool = os.path.join(ctx.probe_dir, "seccomp-filter")
    probe = os.path.join(ctx.probe_dir, "getppid")
    empty = ctx.path("s5-none.bpf")
    open(empty, "wb").close()
    log = ctx.runtimes[0].log
    samples = {name: [] for name in filters}
    for i in range(warm + iters):
        round_ = {name: {} for name in filters}
        for mode in MODES:
            extra = [mode] if mode != "getppid" else []
            none = _ns(run([tool, "load", empty, probe, str(calls), *extra], log, capture=True)[1])
            for name, f in filters.items():
                round_[name][(mode, False)] = none
                round_[name][(mode, True)] = _ns(run([tool, "load", f["path"], probe, str(calls),
                                                      *extra], log, capture=True)[1])
        if i >= warm:
            for name, s in round_.items():
                samples[name].append(s)
    return samples


def _analyse(samples):
    """Per runtime and mode: with/without summaries, paired overhead, paired − crun's."""
    data = {}
    for name, ss in samples.items():
        if not ss:
            continue
        data[name] = {}
        for mode in MODES:
            ov = _paired(ss, (mode, True), (mode, False))
            data[name][mode] = {"seccomp": summary([s[(mode, True)] for s in ss]),
                                "none": summary([s[(mode, False)] for s in ss]),
                                "overhead": _stats(ov), "overhead_samples": ov}
    for ref in ("crun", "runc"):
        if ref not in data:
            continue
        for name, d in data.items():
            for mode in MODES:
                mine, theirs = d[mode]["overhead_samples"], data[ref][mode]["overhead_samples"]
                n = min(len(mine), len(theirs))
                d[mode][f"minus_{ref}"] = _stats([mine[k] - theirs[k] for k in range(n)])
    return data


def _rows(data, label):
    rows = []
    for mode in MODES:
        for name, d in data.items():
            m = d[mode]
            rows.append([label, mode, name, f"{m['seccomp']['median']:.2f}",
                         f"{m['none']['median']:.2f}", _fmt_ci(m["overhead"]),
                         _fmt_ci(m.get("minus_crun")), _fmt_ci(m.get("minus_runc"))])
    return rows


def s5_seccomp(ctx):
    calls = 200_000 if ctx.quick else 2_000_000
    iters, warm = (1, 0) if ctx.quick else (31, 2)
    errors = {}
    container = _analyse(_in_container(ctx, calls, iters, warm, errors))
    filters = _capture_filters(ctx, errors)
    alone = _analyse(_filter_only(ctx, filters, calls, iters, warm)) if filters else {}
    for name, f in filters.items():
        if name in alone:
            alone[name]["instructions"] = f["instructions"]
    rows = _rows(container, "in container") + _rows(alone, "filter only")
    rows += [[""] + r for r in error_rows(errors, 7)]
    insns = ", ".join(f"{n} {f['instructions']}" for n, f in filters.items())
    return {"id": "s5", "title": f"5. seccomp cost per syscall ({calls:,} calls per sample, "
                                 f"{iters} rounds, ns per call)",
            "headers": ["where", "syscall", "runtime", "default profile median ns",
                        "no seccomp median ns", "overhead ns [95 % CI]",
                        "overhead − crun's ns [95 % CI]", "overhead − runc's ns [95 % CI]"],
            "rows": rows, "data": {"container": container, "filter_only": alone},
            "errors": errors,
            "notes": ["images/bench-probe/getppid.c (static): raw syscalls in a loop. In "
                      "container: the same config.json for the three runtimes, `default` profile "
                      "(bundles/seccomp/default.json, `left4me-runtime config seccomp --profile "
                      "default`) vs the same bundle without `linux.seccomp`; each runtime compiles "
                      "the profile itself (runc/crun through libseccomp).",
                      "Filter only: images/bench-probe/seccomp-filter.c dumps the program each "
                      "runtime installed (PTRACE_SECCOMP_GET_FILTER on its running container) and "
                      "runs it in one plain process, flags 0, round by round with a no-filter run; "
                      f"instructions: {insns or '—'}.",
                      "getppid is allowed without argument conditions, so after the first call the "
                      "kernel's seccomp action cache (bitmap, Linux >= 5.11) answers it without "
                      "running the BPF program: the same kernel path for every runtime. "
                      "personality(0xffffffff) is allowed only for that argument, so every call "
                      "runs the whole filter: that row shows the cost of each runtime's BPF code.",
                      "Overhead = with − without the filter in the same round; differences to crun "
                      "and runc are per round too (paired). The brackets are the distribution-free "
                      "95 % interval of the median: an interval containing 0 is no measurable "
                      "difference."]}
