//! podman 4.3 (Debian 12) driving left4me-runtime through `podman --runtime`, with
//! `--rootfs` (a copy of the busybox rootfs) instead of an image.
//!
//! Every scenario is one shell script run in a private mount namespace, so `run -d`'s
//! conmon and the later `exec`/`stop`/`rm` see the same mounts. On a hybrid cgroup host
//! podman (cgroupfs manager) and conmon make groups in every v1 hierarchy: in that
//! namespace each v1 hierarchy is replaced by an empty tmpfs (never touching the host's
//! mounts), except the ones a test exposes read-only so podman passes their limit on
//! (never memory). Pure cgroup v2 (the VM) needs no replacement.
//!
//! podman keeps everything in the test's scratch directory: `--root`, `--runroot`,
//! `--tmpdir`, `CONTAINERS_CONF` (file locks instead of /dev/shm, a private network
//! config dir) and `CONTAINERS_STORAGE_CONF` (vfs). `--runtime` is a wrapper that pins the
//! runtime's `--root` (podman 4.3 does not pass `--runtime-flag` to the cleanup process
//! conmon spawns) and logs every call.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use left4me_runtime_tests::*;
use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// rlimits within the host's hard limits: podman's defaults (RLIMIT_NOFILE 1048576, ...)
/// need CAP_SYS_RESOURCE, which this host lacks.
const RUN_FLAGS: &str = "--ulimit nofile=1024:1024 --ulimit nproc=1024:1024";

/// One private podman setup with its own rootfs copy, state and cgroup parent.
struct Podman {
    dir: PathBuf,
    /// Unique; also the `--cgroup-parent` (relative to the cgroup2 root).
    name: String,
    /// The runtime's `--root`, in scratch: `ROOT/<64-hex id>/start.sock` is longer than
    /// sun_path (108 bytes), which the runtime must handle.
    state: PathBuf,
}

struct Mounts {
    /// Mount points of cgroup v1 hierarchies (hybrid hosts only).
    v1: Vec<String>,
    /// The cgroup2 mount (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
    v2: PathBuf,
}

fn cgroup_mounts() -> Mounts {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (mut v1, mut v2) = (Vec::new(), None);
    for line in text.lines() {
        let (left, right) = line.split_once(" - ").unwrap();
        let point = left.split(' ').nth(4).unwrap().to_string();
        match right.split(' ').next() {
            Some("cgroup") => v1.push(point),
            Some("cgroup2") => v2 = Some(PathBuf::from(point)),
            _ => {}
        }
    }
    Mounts {
        v1,
        v2: v2.expect("no cgroup2 mount"),
    }
}

/// Whether the cgroup2 root can hand out `controller` (the VM: yes; this host: no).
fn v2_has(controller: &str) -> bool {
    std::fs::read_to_string(cgroup_mounts().v2.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .any(|c| c == controller)
}

/// Directories podman or conmon made in the host's v1 hierarchies (the memory one holds
/// the machine's own supervisor group: nothing may appear there). Read-only listing.
fn podman_groups_in_v1(parent: &str) -> String {
    let v1 = cgroup_mounts().v1;
    if v1.is_empty() {
        return String::new();
    }
    let mut find = Command::new("find");
    find.args(v1).args(["-maxdepth", "4", "-type", "d", "("]);
    find.args([
        "-name", "*libpod*", "-o", "-name", "*conmon*", "-o", "-name", parent, ")",
    ]);
    stdout(&find.output().unwrap())
}

impl Podman {
    /// None (the test is skipped) when not root; a missing podman fails.
    fn new() -> Option<Podman> {
        if !can_run() {
            return None;
        }
        let version = Command::new("podman").arg("--version").output();
        // hack/install-deps installs podman: its absence is a failure, not a skip.
        assert!(
            version.is_ok_and(|o| o.status.success()),
            "podman is not installed (hack/install-deps installs it)"
        );
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("l4m-podman-{}-{n}", std::process::id());
        let dir = scratch().join(&name);
        let state = dir.join("runtime-state");
        std::fs::create_dir_all(&dir).unwrap();
        copy_busybox_rootfs(&dir.join("rootfs"));
        let (d, bin) = (dir.display(), runtime_bin());
        let write = |file: &str, text: String| std::fs::write(dir.join(file), text).unwrap();
        let locks = "[engine]\nlock_type = \"file\"\n";
        write(
            "containers.conf",
            format!("{locks}[network]\nnetwork_config_dir = \"{d}/net\"\n"),
        );
        let storage = format!("graphroot = \"{d}/storage\"\nrunroot = \"{d}/run\"\n");
        write(
            "storage.conf",
            format!("[storage]\ndriver = \"vfs\"\n{storage}"),
        );
        let (bin, root) = (bin.display(), state.display());
        let log = format!("echo \"$*\" >> {d}/calls.log");
        write(
            "rt",
            format!("#!/bin/sh\n{log}\nexec {bin} --root {root} \"$@\"\n"),
        );
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(dir.join("rt"), mode).unwrap();
        Some(Podman { dir, name, state })
    }

    fn rootfs_file(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.join("rootfs").join(path)).unwrap_or_default()
    }

    /// The runtime calls podman and conmon made, one per line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.dir.join("calls.log")).unwrap_or_default()
    }

    /// Containers left in the runtime's state directory.
    fn runtime_containers(&self) -> Vec<String> {
        names(&self.state)
    }

    /// Runs `body` (sh) in a private mount namespace where the v1 hierarchies named in
    /// `expose` are read-only and every other v1 hierarchy is an empty tmpfs. The body
    /// has `p` (podman), `$R` (flags for run/create), `$RT` (the runtime, unlogged),
    /// `cg PID` (the host directory of PID's cgroup2 group) and `$ROOTFS`.
    fn script(&self, expose: &[&str], body: &str) -> Output {
        assert!(!expose.contains(&"memory"), "memory stays hidden");
        let mounts = cgroup_mounts();
        let exposed = |m: &str| {
            let base = m.rsplit('/').next().unwrap_or_default();
            base.split(',').any(|c| expose.contains(&c))
        };
        let (ro, hidden): (Vec<&String>, Vec<&String>) = mounts.v1.iter().partition(|m| exposed(m));
        let mut setup = String::from("set -e\n");
        for m in &hidden {
            setup += &format!("umount -l {m}\nmount -t tmpfs l4m-hidden {m}\n");
        }
        for m in &ro {
            setup += &format!("mount -o remount,bind,ro {m}\n");
        }
        let d = self.dir.display();
        let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
        let text = format!(
            r#"set -u
export CONTAINERS_CONF={d}/containers.conf CONTAINERS_STORAGE_CONF={d}/storage.conf
export XDG_RUNTIME_DIR={d}/xdg TMPDIR={d}/tmp
mkdir -p {d}/xdg {d}/tmp
top() {{ awk -v m="$1" '$5 == m {{ t = $0 }} END {{ print t }}' /proc/self/mountinfo; }}
for m in {hidden}; do
  top "$m" | grep -q ' - tmpfs l4m-hidden ' || {{ echo "ns-bad: $m is not the empty tmpfs"; exit 99; }}
done
for m in {ro}; do
  top "$m" | grep -q "^[^ ]* [^ ]* [^ ]* [^ ]* $m ro," || {{ echo "ns-bad: $m is not read-only"; exit 99; }}
done
echo ns-ok
p() {{ podman --root {d}/storage --runroot {d}/run --tmpdir {d}/libpod --cgroup-manager cgroupfs \
  --events-backend file --runtime {d}/rt "$@"; }}
R="{RUN_FLAGS} --cgroup-parent /{parent} --rootfs {d}/rootfs"
RT="{bin} --root {state}"
ROOTFS={d}/rootfs
cg() {{ echo "{v2}$(sed -n 's/^0:://p' /proc/$1/cgroup)"; }}
waitfile() {{ i=0; while [ ! -s "$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; }}
trap 'p rm -af -t 0 >/dev/null 2>&1' EXIT
{body}
"#,
            hidden = list(&hidden),
            ro = list(&ro),
            parent = self.name,
            bin = runtime_bin().display(),
            state = self.state.display(),
            v2 = mounts.v2.display(),
        );
        let script = self.dir.join("script.sh");
        std::fs::write(&script, text).unwrap();
        setup += &format!("exec sh {}\n", script.display());

        let mounts_before = host_mount_count();
        let out = run_captured(
            Command::new("timeout")
                .args("-k 10 900 unshare -m --propagation private sh -c".split(' '))
                .arg(&setup),
        );
        let ctx = texts(&out).1;
        assert!(ctx.starts_with("ns-ok\n"), "namespace setup failed: {ctx}");
        assert_eq!(host_mount_count(), mounts_before, "host mounts changed");
        let leaked = podman_groups_in_v1(&self.name);
        assert!(leaked.is_empty(), "groups in v1 hierarchies: {leaked}");
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for id in self.runtime_containers() {
            let _ = Command::new(runtime_bin())
                .arg("--root")
                .arg(&self.state)
                .args(["delete", "--force", &id])
                .output();
        }
        // The runtime removes each container's group; the parent (and on cgroup v2,
        // podman's conmon group in it) stay, as with runc.
        let groups = cgroup_mounts().v2.join(&self.name);
        let _ = Command::new("find")
            .arg(groups)
            .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The value of the first `key=value` line.
#[track_caller]
fn get<'a>(out: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    out.lines()
        .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{out}"))
}

/// stdout, and stdout + stderr for failure messages.
fn texts(out: &Output) -> (String, String) {
    let text = stdout(out);
    let ctx = format!("{text}\nstderr: {}", stderr(out));
    (text, ctx)
}

/// File names in `dir` (none if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Neither runtime state nor container groups (`libpod-ID`) are left behind.
fn assert_clean(pm: &Podman) {
    assert_eq!(
        pm.runtime_containers(),
        Vec::<String>::new(),
        "runtime state left"
    );
    let groups = names(&cgroup_mounts().v2.join(&pm.name));
    let containers: Vec<_> = groups.iter().filter(|n| n.starts_with("libpod-")).collect();
    assert!(
        containers.is_empty(),
        "container groups left: {containers:?}"
    );
}

#[test]
fn run_rm_passes_output_and_exit_status() {
    let Some(pm) = Podman::new() else { return };
    let out = pm.script(
        &[],
        "p run --rm --network none $R sh -c 'echo out-line; echo err-line >&2; exit 9'
         echo rc=$?
         echo left=$(p ps -aq | wc -l)",
    );
    let (text, ctx) = texts(&out);
    assert!(text.lines().any(|l| l == "out-line"), "{ctx}");
    assert!(stderr(&out).contains("err-line"), "{ctx}");
    assert_eq!(get(&text, "rc"), "9", "exit status not passed on: {ctx}");
    assert_eq!(get(&text, "left"), "0", "--rm left the container: {ctx}");
    let calls = pm.calls();
    for verb in ["create --bundle", "start ", "delete --force "] {
        assert!(calls.contains(verb), "runtime never got {verb:?}:\n{calls}");
    }
    assert_clean(&pm);
}

#[test]
fn detached_container_pauses_stops_and_is_removed() {
    let Some(pm) = Podman::new() else { return };
    let out = pm.script(
        &[],
        r#"p run -d --name c1 --network none $R sh -c \
             'trap "echo term > /tmp/term; exit 7" TERM; while :; do sleep 0.1; done' >/dev/null
         echo rc-run=$?
         id=$(p inspect -f '{{.Id}}' c1)
         pid=$(p inspect -f '{{.State.Pid}}' c1)
         echo podman-running="$(p inspect -f '{{.State.Status}}' c1) $pid"
         echo ps-running=$(p ps --filter status=running --format '{{.Names}}')
         echo runtime-running=$($RT state $id | tr -d ' \n')
         p exec -d c1 sh -c 'echo exec-ran > /tmp/exec'; echo rc-exec-d=$?
         waitfile $ROOTFS/tmp/exec
         group=$(cg $pid)
         p pause c1 >/dev/null; echo rc-pause=$?
         echo podman-paused=$(p inspect -f '{{.State.Status}}' c1)
         echo ps-paused=$(p ps --filter status=paused --format '{{.Names}}')
         echo runtime-paused=$($RT state $id | tr -d ' \n')
         echo frozen=$(grep frozen $group/cgroup.events)
         p unpause c1 >/dev/null; echo rc-unpause=$?
         echo podman-unpaused=$(p inspect -f '{{.State.Status}}' c1)
         echo frozen-after=$(grep frozen $group/cgroup.events)
         p stop -t 60 c1 >/dev/null; echo rc-stop=$?
         echo stopped="$(p inspect -f '{{.State.Status}} {{.State.ExitCode}}' c1)"
         p rm c1 >/dev/null; echo rc-rm=$?
         echo left=$(p ps -aq | wc -l)
         [ -d "$group" ] && echo group=left || echo group=gone"#,
    );
    let (text, ctx) = texts(&out);
    for rc in "rc-run rc-exec-d rc-pause rc-unpause rc-stop rc-rm".split(' ') {
        assert_eq!(get(&text, rc), "0", "{rc}: {ctx}");
    }
    let (status, pid) = get(&text, "podman-running").split_once(' ').unwrap();
    assert_eq!(status, "running", "{ctx}");
    assert_eq!(get(&text, "ps-running"), "c1", "{ctx}");
    let state: Value = serde_json::from_str(get(&text, "runtime-running")).unwrap();
    assert_eq!(state["status"], "running", "{ctx}");
    assert_eq!(state["pid"].to_string(), pid, "podman and runtime disagree");
    assert_eq!(pm.rootfs_file("tmp/exec"), "exec-ran\n", "exec -d: {ctx}");
    assert_eq!(get(&text, "podman-paused"), "paused", "{ctx}");
    assert_eq!(get(&text, "ps-paused"), "c1", "{ctx}");
    let state: Value = serde_json::from_str(get(&text, "runtime-paused")).unwrap();
    assert_eq!(state["status"], "paused", "{ctx}");
    assert_eq!(get(&text, "frozen"), "frozen 1", "{ctx}");
    assert_eq!(get(&text, "podman-unpaused"), "running", "{ctx}");
    assert_eq!(get(&text, "frozen-after"), "frozen 0", "{ctx}");
    // stop sends SIGTERM (the container's trap ran and chose the exit status).
    assert_eq!(pm.rootfs_file("tmp/term"), "term\n", "{ctx}");
    assert_eq!(get(&text, "stopped"), "exited 7", "{ctx}");
    assert_eq!(get(&text, "left"), "0", "{ctx}");
    assert_eq!(get(&text, "group"), "gone", "{ctx}");
    let calls = pm.calls();
    for verb in ["exec ", "pause ", "resume ", " 15\n", "delete "] {
        assert!(calls.contains(verb), "runtime never got {verb:?}:\n{calls}");
    }
    assert_clean(&pm);
}

#[test]
fn kill_sends_the_signal_given_and_kill_by_default() {
    let Some(pm) = Podman::new() else { return };
    let out = pm.script(
        &[],
        r#"p run -d --name k1 --network none $R sh -c \
             'trap "echo usr1 > /tmp/usr1" USR1; while :; do sleep 0.1; done' >/dev/null
         echo rc-run=$?
         p kill -s USR1 k1 >/dev/null; echo rc-usr1=$?
         waitfile $ROOTFS/tmp/usr1
         echo after-usr1=$(p inspect -f '{{.State.Status}}' k1)
         p kill k1 >/dev/null; echo rc-kill=$?
         echo waited=$(p wait k1)
         echo killed="$(p inspect -f '{{.State.Status}} {{.State.ExitCode}}' k1)"
         p rm k1 >/dev/null; echo rc-rm=$?"#,
    );
    let (text, ctx) = texts(&out);
    for rc in ["rc-run", "rc-usr1", "rc-kill", "rc-rm"] {
        assert_eq!(get(&text, rc), "0", "{rc}: {ctx}");
    }
    assert_eq!(pm.rootfs_file("tmp/usr1"), "usr1\n", "{ctx}");
    assert_eq!(get(&text, "after-usr1"), "running", "{ctx}");
    assert_eq!(get(&text, "waited"), "137", "{ctx}");
    assert_eq!(get(&text, "killed"), "exited 137", "{ctx}");
    let calls = pm.calls();
    assert!(calls.contains(" 10\n") && calls.contains(" 9\n"), "{calls}");
    assert_clean(&pm);
}

/// conmon runs `exec --detach` and reaps the process itself as the caller's subreaper:
/// the process must be left to it (as runc does), not to the container's init, or
/// `podman exec` returns 255 at once.
#[test]
fn exec_waits_and_passes_the_exit_status() {
    let Some(pm) = Podman::new() else { return };
    let out = pm.script(
        &[],
        r#"p run -d --name e1 --network none $R sleep 600 >/dev/null
         echo rc-run=$?
         start=$(date +%s)
         p exec e1 sh -c 'sleep 2; echo exec-out; exit 3'; echo rc-exec=$?
         echo took=$(( $(date +%s) - start ))
         p exec -t e1 sh -c 'test -t 0 && echo exec-tty=yes'; echo rc-exec-t=$?
         p rm -f -t 0 e1 >/dev/null"#,
    );
    let (text, ctx) = texts(&out);
    assert_eq!(get(&text, "rc-run"), "0", "{ctx}");
    assert!(text.lines().any(|l| l == "exec-out"), "{ctx}");
    assert_eq!(get(&text, "rc-exec"), "3", "{ctx}");
    assert!(get(&text, "took").parse::<u32>().unwrap() >= 2, "{ctx}");
    assert_eq!(get(&text, "exec-tty"), "yes", "{ctx}");
    assert_eq!(get(&text, "rc-exec-t"), "0", "{ctx}");
}

#[test]
fn run_t_gives_the_process_a_terminal() {
    let Some(pm) = Podman::new() else { return };
    let out = pm.script(
        &[],
        "p run --rm -t --network none $R sh -c 'test -t 0 && test -t 1 && echo tty=yes; echo name=$(tty); exit 5'
         echo rc-t=$?
         p run --rm --network none $R sh -c 'test -t 1 || echo tty=no'",
    );
    let (text, ctx) = texts(&out);
    assert_eq!(get(&text, "tty"), "yes", "{ctx}");
    assert!(get(&text, "name").starts_with("/dev/pts/"), "{ctx}");
    assert_eq!(get(&text, "rc-t"), "5", "{ctx}");
    assert!(text.lines().any(|l| l == "tty=no"), "{ctx}");
    assert!(pm.calls().contains("--console-socket"), "{}", pm.calls());
    assert_clean(&pm);
}

#[test]
fn network_none_has_only_loopback_and_host_shares_the_hosts() {
    let Some(pm) = Podman::new() else { return };
    let ifaces = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ,";
    let out = pm.script(
        &[],
        &format!(
            "echo none=$(p run --rm --network none $R sh -c \"{ifaces}\")
             echo host=$(p run --rm --network host $R sh -c \"{ifaces}\")
             echo outside=$(sh -c \"{ifaces}\")"
        ),
    );
    let (text, ctx) = texts(&out);
    assert_eq!(get(&text, "none"), "lo,", "{ctx}");
    assert_eq!(get(&text, "host"), get(&text, "outside"), "{ctx}");
    assert_clean(&pm);
}

/// Runs a detached container with `flag`, prints `rc-run`, the group's `file` (`host=`)
/// and what the container printed into /tmp/inside (`inside=`).
fn limit_scenario(pm: &Podman, expose: &[&str], flag: &str, file: &str, inside: &str) -> Output {
    pm.script(
        expose,
        &format!(
            r#"p run -d --name l1 --network none {flag} $R sh -c '{inside} > /tmp/inside; exec sleep 600' >/dev/null
             rc=$?; echo rc-run=$rc
             [ $rc = 0 ] || exit 0
             waitfile $ROOTFS/tmp/inside
             pid=$(p inspect -f '{{{{.State.Pid}}}}' l1)
             echo host=$(cat $(cg $pid)/{file} 2>/dev/null || echo none)
             echo inside=$(cat $ROOTFS/tmp/inside)
             p rm -f -t 0 l1 >/dev/null"#
        ),
    )
}

/// A limit whose controller the cgroup2 root lacks: the runtime's one-line error names
/// it and the key, podman reports it, and nothing is left behind.
#[track_caller]
fn assert_refused(pm: &Podman, out: &Output, controller: &str, key: &str) {
    let err = stderr(out);
    assert_eq!(get(&stdout(out), "rc-run"), "126", "{err}");
    let line = format!("the {controller} controller is not available");
    assert!(err.contains(&line) && err.contains(key), "{err}");
    assert_clean(pm);
}

#[test]
fn memory_limit_reaches_memory_max() {
    let Some(pm) = Podman::new() else { return };
    let out = limit_scenario(&pm, &[], "--memory 64m", "memory.max", "echo ran");
    let (text, ctx) = texts(&out);
    if v2_has("memory") {
        assert_eq!(get(&text, "rc-run"), "0", "{ctx}");
        assert_eq!(get(&text, "host"), "67108864", "{ctx}");
    } else if cgroup_mounts().v1.iter().any(|m| m.ends_with("/memory")) {
        // The v1 memory hierarchy is hidden here: podman drops the limit itself.
        assert!(stderr(&out).contains("memory limit"), "{ctx}");
        assert_eq!(get(&text, "inside"), "ran", "{ctx}");
        assert_eq!(get(&text, "host"), "none", "{ctx}");
    } else {
        assert_refused(&pm, &out, "memory", "linux.resources.memory.limit");
    }
}

#[test]
fn cpuset_cpus_reaches_cpuset_cpus() {
    let Some(pm) = Podman::new() else { return };
    let out = limit_scenario(&pm, &["cpuset"], "--cpuset-cpus 0", "cpuset.cpus", "nproc");
    let (text, ctx) = texts(&out);
    if v2_has("cpuset") {
        assert_eq!(get(&text, "rc-run"), "0", "{ctx}");
        assert_eq!(get(&text, "host"), "0", "{ctx}");
        assert_eq!(get(&text, "inside"), "1", "nproc: {ctx}");
    } else {
        assert_refused(&pm, &out, "cpuset", "linux.resources.cpu.cpus");
    }
}

#[test]
fn pids_limit_reaches_pids_max() {
    let Some(pm) = Podman::new() else { return };
    let out = limit_scenario(
        &pm,
        &["pids"],
        "--pids-limit 64",
        "pids.max",
        "cat /sys/fs/cgroup/pids.max",
    );
    let (text, ctx) = texts(&out);
    if v2_has("pids") {
        assert_eq!(get(&text, "rc-run"), "0", "{ctx}");
        assert_eq!(get(&text, "host"), "64", "{ctx}");
        // podman 4.3 gives the container its own cgroup namespace on cgroup v2.
        assert_eq!(get(&text, "inside"), "64", "{ctx}");
    } else {
        assert_refused(&pm, &out, "pids", "linux.resources.pids.limit");
    }
}
