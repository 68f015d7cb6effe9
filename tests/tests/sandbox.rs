//! `sandbox build`: left4me's script sandbox, run for real. A user's bash script fills an
//! overlay directory inside a read-only host system, as an unprivileged uid without
//! capabilities, under the `sandbox` seccomp profile, with a public-only network, cgroup
//! limits, a wall-time limit and a size check of the overlay afterwards.
//!
//! The development host has no cgroup v2 controllers (hybrid v1): there, builds pass
//! `--skip-unavailable-limits`, and the tests of enforced limits return early. In the
//! Debian 13 VM (pure cgroup v2, all controllers) those limits are enforced and tested.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

const RESOLV_CONF: &str = "nameserver 192.0.2.53\noptions ndots:1\n";
const SKIP_FLAG: &str = "--skip-unavailable-limits";

/// The controllers the cgroup2 hierarchy offers (at /sys/fs/cgroup, or at
/// /sys/fs/cgroup/unified on a hybrid host); empty when there are none.
fn controllers() -> String {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .find_map(|m| std::fs::read_to_string(Path::new(m).join("cgroup.controllers")).ok())
        .unwrap_or_default()
}

fn has_controllers(names: &[&str]) -> bool {
    let text = controllers();
    let available: Vec<&str> = text.split_whitespace().collect();
    names.iter().all(|n| available.contains(n))
}

/// The template's limits (memory, pids, cpu) can all be enforced here.
fn limits_enforced() -> bool {
    has_controllers(&["memory", "pids", "cpu"])
}

/// Where a build's cgroup lives: `build-ID` beside the runtime's own group (the test's,
/// or its parent when the runtime moved the group's processes into `supervisor/`).
fn build_cgroup(id: &str) -> Option<PathBuf> {
    let mount = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(Path::new)
        .find(|m| m.join("cgroup.procs").exists())?;
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let own = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let own = Path::new(own);
    let base = match own.file_name() {
        Some(n) if n == "supervisor" => own.parent().unwrap_or(own),
        _ => own,
    };
    let rel = base.strip_prefix("/").unwrap_or(base);
    Some(mount.join(rel).join(format!("build-{id}")))
}

/// Mount points of the test's mount namespace, without the network namespace files
/// (/run/netns/*) that the network test binds while other tests run beside it.
fn mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_some_and(|p| !p.starts_with("/run/netns"))
        })
        .count()
}

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(raw) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{pid}: {cmdline}"));
            }
        }
    }
    found
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

/// The line of `text` starting with `prefix`, without the prefix.
fn line_after<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"))
}

/// Asserts the command failed and said `needle` on stderr; returns stderr.
#[track_caller]
fn fails_mentioning(out: &Output, needle: &str) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success\nstdout: {}\nstderr: {err}",
        stdout(out)
    );
    assert!(
        err.contains(needle),
        "stderr lacks {needle:?}: {err}\nstdout: {}",
        stdout(out)
    );
    err
}

/// Starts `cmd` with stdout and stderr going to files (read back by [`finish`]).
fn spawn_captured(cmd: &mut Command, dir: &Path) -> (Child, PathBuf, PathBuf) {
    let (out, err) = (dir.join(unique("stdout")), dir.join(unique("stderr")));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawning the runtime");
    (child, out, err)
}

fn finish((mut child, out, err): (Child, PathBuf, PathBuf)) -> Output {
    let status = child.wait().unwrap();
    Output {
        status,
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    }
}

/// One build's files under scratch (script, resolv.conf, overlay, work directory) and
/// its own runtime state directory; everything is removed when dropped.
struct Sandbox {
    dir: PathBuf,
    id: String,
    rt: Runtime,
}

impl Sandbox {
    fn new(name: &str, script: &str) -> Sandbox {
        let dir = scratch().join(unique(&format!("sandbox-{name}")));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("script.sh"), script).unwrap();
        std::fs::write(dir.join("resolv.conf"), RESOLV_CONF).unwrap();
        Sandbox {
            id: unique(name),
            dir,
            rt: Runtime::new(),
        }
    }

    fn overlay(&self) -> PathBuf {
        self.dir.join("overlay")
    }

    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    fn script(&self) -> PathBuf {
        self.dir.join("script.sh")
    }

    /// `--root ROOT sandbox build ...` with `extra` flags, exactly as given.
    fn args(&self, extra: &[&str]) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--root".into(), self.rt.root.clone().into()];
        args.extend(["sandbox", "build", "--id"].map(OsString::from));
        args.push(self.id.clone().into());
        for (flag, path) in [
            ("--script", self.script()),
            ("--overlay", self.overlay()),
            ("--resolv-conf", self.dir.join("resolv.conf")),
            ("--work", self.work()),
        ] {
            args.push(flag.into());
            args.push(path.into());
        }
        args.extend(extra.iter().map(OsString::from));
        args
    }

    /// The build with `extra` flags, plus `--skip-unavailable-limits` where the host
    /// cannot enforce the template's limits.
    fn command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(runtime_bin());
        cmd.args(self.args(extra));
        if !limits_enforced() {
            cmd.arg(SKIP_FLAG);
        }
        cmd
    }

    fn build(&self, extra: &[&str]) -> Output {
        run_captured(&mut self.command(extra))
    }

    /// Nothing of the build is left: no bundle in the work directory, no container
    /// state, no cgroup.
    #[track_caller]
    fn assert_gone(&self) {
        let bundle = self.work().join(&self.id);
        assert!(!bundle.exists(), "{} survived the build", bundle.display());
        let state = self.rt.cmd(&["state", &self.id]);
        assert!(
            !state.status.success(),
            "state {} still answers: {}",
            self.id,
            stdout(&state)
        );
        assert!(
            !self.rt.root.join(&self.id).exists(),
            "the state directory of {} survived",
            self.id
        );
        if let Some(group) = build_cgroup(&self.id) {
            assert!(!group.exists(), "{} survived the build", group.display());
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_script_fills_the_overlay_as_an_unprivileged_user_in_a_read_only_system() {
    if !can_run() {
        return;
    }
    let private_tmp = unique("l4m-sandbox-private");
    let sb = Sandbox::new(
        "fills",
        &format!(
            r#"set -u
mkdir -p maps/sub && echo hello > maps/sub/greeting && echo top > top.txt
echo "uid=$(id -u) gid=$(id -g)"
echo "pwd=$PWD"
echo "home=$HOME"
echo "overlay=$OVERLAY"
grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\t'
echo "resolv=$(tr '\n' ';' < /etc/resolv.conf)"
for f in /usr/bin/l4m-x /etc/l4m-x /l4m-x; do
  if r=$(touch "$f" 2>&1); then echo "wrote $f"; else echo "refused $f: $r"; fi
done
if r=$( (echo evil >> /script.sh) 2>&1); then echo "wrote /script.sh"; else echo "refused /script.sh: $r"; fi
echo private > /tmp/{private_tmp} && echo "tmp=$(cat /tmp/{private_tmp})"
"#
        ),
    );
    // Writable by anyone on the host: only the read-only mount protects it.
    std::fs::set_permissions(sb.script(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let script_before = std::fs::read(sb.script()).unwrap();
    let mounts_before = mount_count();
    assert!(!sb.overlay().exists());

    let out = sb.build(&[]);
    let text = ok(&out);
    let err = stderr(&out);

    // The overlay, created for uid 981, holds what the script wrote, owned by 981.
    let overlay = sb.overlay();
    assert_eq!(
        std::fs::read_to_string(overlay.join("maps/sub/greeting")).unwrap(),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(overlay.join("top.txt")).unwrap(),
        "top\n"
    );
    for rel in ["", "maps", "maps/sub", "maps/sub/greeting", "top.txt"] {
        let meta = std::fs::metadata(overlay.join(rel)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (981, 981),
            "owner of overlay/{rel}"
        );
    }
    assert!(
        err.contains(&format!("build {}: done in", sb.id)) && err.contains(" holds "),
        "{err}"
    );

    // Who and where the script ran.
    for line in [
        "uid=981 gid=981",
        "pwd=/overlay",
        "home=/tmp",
        "overlay=/overlay",
        "CapEff:0000000000000000",
        "CapBnd:0000000000000000",
        "NoNewPrivs:1",
        "Seccomp:2",
        "resolv=nameserver 192.0.2.53;options ndots:1;",
        "tmp=private",
    ] {
        assert!(has_line(&text, line), "{line:?} missing:\n{text}\n{err}");
    }
    // The system is read-only (not merely unwritable by uid 981), the script too.
    for path in ["/usr/bin/l4m-x", "/etc/l4m-x", "/l4m-x", "/script.sh"] {
        let result = line_after(&text, &format!("refused {path}: "));
        assert!(result.contains("Read-only file system"), "{path}: {result}");
    }
    assert_eq!(std::fs::read(sb.script()).unwrap(), script_before);
    // /tmp was the sandbox's own.
    assert!(
        !Path::new("/tmp").join(&private_tmp).exists(),
        "the sandbox's /tmp file appeared in the host's /tmp"
    );

    // Nothing is left behind.
    sb.assert_gone();
    assert_eq!(mount_count(), mounts_before, "host mounts changed");
}

#[test]
fn mounts_new_namespaces_and_other_processes_are_out_of_reach() {
    if !can_run() {
        return;
    }
    let secret = unique("hunter2-secret-value");
    let sb = Sandbox::new(
        "escapes",
        r#"mount -t tmpfs t /tmp 2>/dev/null; echo "mount=$?"
unshare -r true 2>/dev/null; echo "unshare-r=$?"
unshare -m true 2>/dev/null; echo "unshare-m=$?"
unshare -U true 2>/dev/null; echo "unshare-U=$?"
unshare -n true 2>/dev/null; echo "unshare-n=$?"
echo "--- environ"
tr '\0' '\n' < /proc/1/environ
echo "--- env"
env
echo "--- ps"
ps -e -o pid=,comm=
echo "--- end"
"#,
    );
    let mut cmd = sb.command(&[]);
    cmd.env("LEFT4ME_TEST_SECRET", &secret);
    let out = run_captured(&mut cmd);
    let text = ok(&out);

    for escape in ["mount", "unshare-r", "unshare-m", "unshare-U", "unshare-n"] {
        let status = line_after(&text, &format!("{escape}="));
        assert_ne!(status, "0", "{escape} succeeded:\n{text}");
    }

    assert!(
        !text.contains(&secret) && !text.contains("LEFT4ME_TEST_SECRET"),
        "the runtime's environment leaked into the sandbox:\n{text}"
    );
    let section = |name: &str| -> Vec<&str> {
        text.split(&format!("--- {name}\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {name} section:\n{text}"))
            .split("--- ")
            .next()
            .unwrap()
            .lines()
            .collect()
    };
    // pid 1 is the script's bash, with the sandbox's environment only.
    let environ = section("environ");
    assert!(environ.contains(&"HOME=/tmp"), "{environ:?}");
    assert!(environ.contains(&"OVERLAY=/overlay"), "{environ:?}");
    for var in &environ {
        let name = var.split('=').next().unwrap();
        assert!(
            ["PATH", "HOME", "TMPDIR", "OVERLAY", "LANG"].contains(&name),
            "unexpected variable in pid 1's environment: {var}"
        );
    }
    // Only the sandbox's own processes: bash as pid 1 and ps.
    let ps: Vec<(u32, &str)> = section("ps")
        .iter()
        .map(|l| {
            let mut f = l.split_whitespace();
            (f.next().unwrap().parse().unwrap(), f.next().unwrap_or(""))
        })
        .collect();
    assert!(ps.contains(&(1, "bash")), "{ps:?}");
    assert_eq!(ps.len(), 2, "processes beyond the sandbox's own: {ps:?}");
    assert!(ps.iter().all(|(_, c)| ["bash", "ps"].contains(c)), "{ps:?}");
    sb.assert_gone();
}

#[test]
fn the_scripts_exit_status_is_the_builds() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("status", "echo partial > partial.txt\nexit 7\n");
    let out = sb.build(&[]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "build {}: the script failed with exit status 7",
            sb.id
        )),
        "{err}"
    );
    assert!(!err.contains("task limit"), "{err}");
    assert!(!err.contains("done in"), "{err}");
    assert!(sb.overlay().join("partial.txt").exists());
    sb.assert_gone();
}

#[test]
fn a_build_past_its_wall_time_is_stopped_with_all_its_processes() {
    if !can_run() {
        return;
    }
    // A unique sleep length: the processes are found by it on the host.
    let marker = format!(
        "300.{}{}",
        std::process::id(),
        COUNTER.load(Ordering::SeqCst)
    );
    let sb = Sandbox::new(
        "timeout",
        &format!("sleep {marker} &\nsleep {marker}\necho not reached > late.txt\n"),
    );
    let started = Instant::now();
    let mut running = spawn_captured(&mut sb.command(&["--timeout", "3s"]), &sb.dir);
    let (mut group_seen, mut sleeping) = (false, false);
    wait_for(|| {
        if let Some(g) = build_cgroup(&sb.id) {
            group_seen |= g.exists();
        }
        sleeping = processes_with(&marker).len() >= 2;
        sleeping || running.0.try_wait().unwrap().is_some()
    });
    let out = finish(running);
    assert!(
        sleeping,
        "the script's sleeps were never seen: {}",
        stderr(&out)
    );
    let took = started.elapsed();

    let err = fails_mentioning(&out, "stopped at its wall-time limit of 3s");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(took >= Duration::from_secs(3), "stopped after {took:?}");
    assert!(
        took < Duration::from_secs(30),
        "took {took:?} for a 3 s limit"
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    assert!(!sb.overlay().join("late.txt").exists());
    if build_cgroup(&sb.id).is_some() {
        assert!(group_seen, "the build's cgroup was never seen while it ran");
    }
    sb.assert_gone();
}

#[test]
fn an_overlay_over_its_size_limit_fails_the_build() {
    if !can_run() {
        return;
    }
    let script = "head -c 3145728 /dev/urandom > blob.bin\n";
    let small = Sandbox::new("size-small", script);
    let out = small.build(&["--size-limit", "1M"]);
    let err = fails_mentioning(&out, "over the limit of 1.0 MiB");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("done in"), "{err}");
    // Left for inspection.
    assert_eq!(
        std::fs::metadata(small.overlay().join("blob.bin"))
            .unwrap()
            .len(),
        3 << 20
    );
    small.assert_gone();

    let large = Sandbox::new("size-large", script);
    let out = large.build(&["--size-limit", "10M"]);
    ok(&out);
    assert!(stderr(&out).contains("done in"), "{}", stderr(&out));
    assert_eq!(
        std::fs::metadata(large.overlay().join("blob.bin"))
            .unwrap()
            .len(),
        3 << 20
    );
    large.assert_gone();
}

#[test]
fn an_overlay_owned_by_another_uid_is_refused_before_anything_runs() {
    if !can_run() {
        return;
    }
    let sb = Sandbox::new("owner", "echo ran > ran.txt\nid -u\n");
    for owner in [0, 1234] {
        std::fs::create_dir_all(sb.overlay()).unwrap();
        std::os::unix::fs::chown(sb.overlay(), Some(owner), Some(owner)).unwrap();
        let out = sb.build(&[]);
        let err = fails_mentioning(&out, &format!("owned by uid {owner}"));
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("981"), "{err}");
        assert!(!sb.overlay().join("ran.txt").exists(), "the script ran");
        assert!(!sb.work().join(&sb.id).exists());
        sb.assert_gone();
    }
    // The same directory is fine for a build running as its owner.
    let out = sb.build(&["--uid", "1234"]);
    assert!(has_line(&ok(&out), "1234"), "{}", stdout(&out));
    let meta = std::fs::metadata(sb.overlay().join("ran.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 1234));
}

#[test]
fn limits_the_host_cannot_enforce_are_refused_unless_skipped_by_name() {
    if !can_run() || has_controllers(&["memory"]) {
        return; // hosts with cgroup v2 controllers enforce the limits
    }
    let sb = Sandbox::new("skip", "echo ran > ran.txt\n");
    let mut cmd = Command::new(runtime_bin());
    cmd.args(sb.args(&[]));
    let out = run_captured(&mut cmd);
    let err = fails_mentioning(&out, SKIP_FLAG);
    assert!(err.contains("controller"), "{err}");
    assert!(!sb.overlay().join("ran.txt").exists(), "the script ran");
    sb.assert_gone();

    let mut cmd = Command::new(runtime_bin());
    cmd.args(sb.args(&[SKIP_FLAG]));
    let out = run_captured(&mut cmd);
    ok(&out);
    let err = stderr(&out);
    let warning = err
        .lines()
        .find(|l| l.contains("WARNING"))
        .unwrap_or_else(|| panic!("no WARNING line: {err}"));
    for limit in ["memory {", "pids {", "cpu {"] {
        assert!(warning.contains(limit), "{limit:?} not named: {warning}");
    }
    assert!(sb.overlay().join("ran.txt").exists());
    sb.assert_gone();
}

#[test]
fn the_scripts_cgroup_shows_the_limits_in_force() {
    if !can_run() || !limits_enforced() {
        return; // cgroup v2 controllers only (the VM)
    }
    let script = r#"cd /sys/fs/cgroup
echo "memory.max=$(cat memory.max)"
if [ -e memory.swap.max ]; then echo "memory.swap.max=$(cat memory.swap.max)"; else echo "memory.swap.max=absent"; fi
echo "pids.max=$(cat pids.max)"
echo "cpu.max=$(cat cpu.max)"
for f in memory.max pids.max cpu.max; do
  if r=$( (echo max > $f) 2>&1 ); then echo "raised $f"; else echo "kept $f"; fi
done
echo "memory.max after=$(cat memory.max)"
"#;
    let defaults = Sandbox::new("limits", script);
    let text = ok(&defaults.build(&[]));
    for line in [
        "memory.max=4294967296",
        "pids.max=512",
        "cpu.max=200000 100000",
    ] {
        assert!(has_line(&text, line), "{line:?} missing:\n{text}");
    }
    let swap = line_after(&text, "memory.swap.max=");
    assert!(swap == "0" || swap == "absent", "swap allowed: {swap}");
    // The script cannot lift its own limits.
    for line in [
        "kept memory.max",
        "kept pids.max",
        "kept cpu.max",
        "memory.max after=4294967296",
    ] {
        assert!(has_line(&text, line), "{line:?} missing:\n{text}");
    }
    defaults.assert_gone();

    let chosen = Sandbox::new("limits-chosen", script);
    let text = ok(&chosen.build(&["--memory", "256M", "--tasks", "64", "--cpu-percent", "50"]));
    for line in [
        "memory.max=268435456",
        "pids.max=64",
        "cpu.max=50000 100000",
    ] {
        assert!(has_line(&text, line), "{line:?} missing:\n{text}");
    }
    let swap = line_after(&text, "memory.swap.max=");
    assert!(swap == "0" || swap == "absent", "swap allowed: {swap}");
    chosen.assert_gone();
}

#[test]
fn a_script_over_its_memory_limit_fails_as_out_of_memory() {
    if !can_run() || !has_controllers(&["memory"]) {
        return; // cgroup v2 controllers only (the VM)
    }
    let sb = Sandbox::new(
        "oom",
        "x=$(head -c 300000000 /dev/zero | tr '\\0' a)\necho ${#x} > length.txt\n",
    );
    let out = sb.build(&["--memory", "64M", "--timeout", "10m"]);
    let err = fails_mentioning(&out, "ran out of memory");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("limit 67108864 bytes"), "{err}");
    assert!(!sb.overlay().join("length.txt").exists());
    sb.assert_gone();
}

#[test]
fn a_script_over_its_task_limit_fails_saying_so() {
    if !can_run() || !has_controllers(&["pids"]) {
        return; // cgroup v2 controllers only (the VM)
    }
    let sb = Sandbox::new(
        "tasks",
        "for i in $(seq 60); do sleep 60 & done\nwait\necho all forked > done.txt\n",
    );
    let out = sb.build(&["--tasks", "20", "--timeout", "10m"]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the script failed with exit status")
            && err.contains("(it hit the task limit: fork failed)"),
        "{err}"
    );
    assert!(!sb.overlay().join("done.txt").exists());
    sb.assert_gone();
}

/// Two network namespaces joined by a veth pair (10.199.0.0/24 private, 198.51.100.0/24
/// standing for the public internet) and the HTTP servers in them; all removed when
/// dropped, also when the test fails.
struct NetLab {
    client: String,
    peer: String,
    servers: Vec<Child>,
}

impl NetLab {
    fn new() -> NetLab {
        let tag = format!(
            "{}{}",
            std::process::id() % 100_000,
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let lab = NetLab {
            client: format!("l4m-sb-c-{tag}"),
            peer: format!("l4m-sb-p-{tag}"),
            servers: Vec::new(),
        };
        let (c, p) = (&lab.client, &lab.peer);
        sh(&format!(
            "ip netns add {c} && ip netns add {p} && \
             ip link add l4msbc{tag} netns {c} type veth peer name l4msbp{tag} netns {p} && \
             ip -n {c} addr add 10.199.0.2/24 dev l4msbc{tag} && \
             ip -n {c} addr add 198.51.100.2/24 dev l4msbc{tag} && \
             ip -n {p} addr add 10.199.0.1/24 dev l4msbp{tag} && \
             ip -n {p} addr add 198.51.100.1/24 dev l4msbp{tag} && \
             ip -n {c} link set l4msbc{tag} up && ip -n {p} link set l4msbp{tag} up && \
             ip -n {c} link set lo up && ip -n {p} link set lo up"
        ));
        lab
    }

    /// `python3 -m http.server` serving `dir` in namespace `ns`.
    fn serve(&mut self, ns: &str, bind: &str, port: u16, dir: &Path) {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "/usr/bin/python3", "-m", "http.server"])
            .args(["--bind", bind, "--directory"])
            .arg(dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting python3 -m http.server");
        self.servers.push(child);
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.client])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer])
            .status();
    }
}

#[track_caller]
fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bash function `fetch HOST PORT FILE`: the file over HTTP, with curl or /dev/tcp.
const FETCH: &str = r#"fetch() {
  if [ -x /usr/bin/curl ]; then
    curl -sS --max-time 20 "http://$1:$2/$3"
  else
    ( exec 3<>"/dev/tcp/$1/$2" && printf 'GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n' "$3" "$1" >&3 &&
      sed '1,/^\r$/d' <&3 )
  fi
}
"#;

#[test]
fn the_network_reaches_public_addresses_only() {
    if !can_run() {
        return;
    }
    let mut lab = NetLab::new();
    let files = scratch().join(unique("sandbox-net-files"));
    let _files = DirGuard(files.clone());
    let (public, local) = (files.join("public"), files.join("local"));
    std::fs::create_dir_all(&public).unwrap();
    std::fs::create_dir_all(&local).unwrap();
    let public_text = unique("public-content");
    let local_text = unique("loopback-content");
    std::fs::write(public.join("pub.txt"), &public_text).unwrap();
    std::fs::write(local.join("loop.txt"), &local_text).unwrap();
    let (client, peer) = (lab.client.clone(), lab.peer.clone());
    // The peer listens on every address (10.199.0.1 too), the client on its loopback.
    lab.serve(&peer, "0.0.0.0", 8080, &public);
    lab.serve(&client, "127.0.0.1", 8079, &local);

    // Outside the sandbox, in the same namespace, every server answers.
    let fetch_outside = |host: &str, port: u16, file: &str| -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &client, "bash", "-c"])
            .arg(format!("{FETCH}fetch {host} {port} {file}"))
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(|| fetch_outside("198.51.100.1", 8080, "pub.txt") == public_text);
    wait_for(|| fetch_outside("10.199.0.1", 8080, "pub.txt") == public_text);
    wait_for(|| fetch_outside("127.0.0.1", 8079, "loop.txt") == local_text);

    let sb = Sandbox::new(
        "net",
        &format!(
            r#"{FETCH}
if fetch 198.51.100.1 8080 pub.txt > pub.txt; then echo "public=$(cat pub.txt)"; else echo "public=failed"; fi
for t in 127.0.0.1/8079 10.199.0.1/8080 ::1/8079 fd00::1/80; do
  if r=$( (exec 3<>/dev/tcp/$t) 2>&1 ); then echo "tcp $t=connected"; else echo "tcp $t=$(echo $r)"; fi
done
for t in 10.199.0.1/53 127.0.0.1/53; do
  if r=$( (echo x > /dev/udp/$t) 2>&1 ); then echo "udp $t=sent"; else echo "udp $t=$(echo $r)"; fi
done
"#
        ),
    );
    // The runtime (and so the sandbox, which shares its network) in the client
    // namespace. nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup2
    // hierarchy the deny list is attached in.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{client}"))
        .arg("--")
        .arg(runtime_bin())
        .args(sb.args(&[]));
    if !limits_enforced() {
        cmd.arg(SKIP_FLAG);
    }
    let out = run_captured(&mut cmd);
    let text = ok(&out);

    assert!(
        has_line(&text, &format!("public={public_text}")),
        "the public server was not reached:\n{text}\n{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(sb.overlay().join("pub.txt")).unwrap(),
        public_text
    );
    for probe in [
        "tcp 127.0.0.1/8079",
        "tcp 10.199.0.1/8080",
        "tcp ::1/8079",
        "tcp fd00::1/80",
        "udp 10.199.0.1/53",
        "udp 127.0.0.1/53",
    ] {
        let result = line_after(&text, &format!("{probe}="));
        assert!(
            result.contains("Operation not permitted"),
            "{probe} not refused: {result}\n{text}"
        );
    }
    assert!(!text.contains(&local_text), "{text}");
    sb.assert_gone();
}

/// A directory removed when dropped.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Cancelling a build (`systemctl stop` sends SIGTERM to the runtime) ends it at once,
/// background processes included, although bash as PID 1 ignores SIGTERM.
#[test]
fn a_cancelled_build_stops_at_once_with_all_its_processes() {
    if !can_run() {
        return;
    }
    let marker = format!(
        "400.{}{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    );
    let sb = Sandbox::new(
        "cancel",
        &format!("sleep {marker} &\nsleep {marker}\necho not reached > late.txt\n"),
    );
    let mut running = spawn_captured(&mut sb.command(&[]), &sb.dir);
    wait_for(|| processes_with(&marker).len() >= 2 || running.0.try_wait().unwrap().is_some());
    assert_eq!(processes_with(&marker).len(), 2, "the sleeps never ran");
    let signalled = Instant::now();
    // SAFETY: kill(2) on our own child.
    assert_eq!(
        unsafe { libc::kill(running.0.id() as i32, libc::SIGTERM) },
        0
    );
    let out = finish(running);
    let err = fails_mentioning(&out, "cancelled (stop signal)");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?}",
        signalled.elapsed()
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new());
    assert!(!sb.overlay().join("late.txt").exists());
    sb.assert_gone();
}
