//! Security regression tests: each one replays the shape of a known container escape
//! against the runtime and checks that it is stopped. Every test explains how the attack
//! works without the protection, and is written so that removing the protection makes it
//! fail (several were checked that way by running the runtime with its protection off).
//!
//! - CVE-2019-5736: overwriting the runtime binary through `/proc/PID/exe` (`exe_guard`).
//! - CVE-2024-21626: a leaked descriptor as working directory (`process::enter_cwd`,
//!   `close_range` before exec).
//! - CVE-2021-30465: mount destinations redirected by symlinks (`rootfs::paths`).
//! - CVE-2019-16884 / CVE-2023-27561 / CVE-2025-31133 family: masked and read-only paths
//!   redirected by symlinks, `/dev/null` swapped for a symlink (`rootfs::mask_path`).
//!
//! `root.path` being a symlink is not tested: it is chosen by whoever writes the bundle
//! on the host, not by the container, so following it is not an escape.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use left4me_runtime_tests::*;
use serde_json::{json, Value};

static N: AtomicUsize = AtomicUsize::new(0);

/// A name no other test (or test run) uses.
fn uniq(prefix: &str) -> String {
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Host paths a test creates (or that an escape would create) outside the scratch
/// directory, removed when the test ends, pass or fail.
struct HostPaths(Vec<PathBuf>);

impl HostPaths {
    fn new(names: &[&str]) -> HostPaths {
        HostPaths(
            names
                .iter()
                .map(|n| Path::new("/tmp").join(uniq(n)))
                .collect(),
        )
    }
}

impl Drop for HostPaths {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir_all(p);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A private copy of the runtime binary. The `/proc/PID/exe` attacks write to whatever
/// binary the runtime runs from: on a copy, a regression corrupts only the copy, and no
/// concurrently running test keeps the inode busy (ETXTBSY would hide the attack).
struct PrivateBin(PathBuf);

impl PrivateBin {
    fn new() -> PrivateBin {
        let path = scratch().join(uniq("runtime-copy"));
        std::fs::create_dir_all(scratch()).unwrap();
        std::fs::copy(runtime_bin(), &path).unwrap();
        PrivateBin(path)
    }

    fn cmd(&self, rt: &Runtime, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.0);
        cmd.arg("--root").arg(&rt.root).args(args);
        run_captured(&mut cmd)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for PrivateBin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Makes `cmd` start with `files[i]` open, without close-on-exec, as descriptor
/// `numbers[i]`: what a careless caller (or a systemd unit) hands the runtime.
fn with_fds(cmd: &mut Command, files: &[&File], numbers: &[i32]) {
    let pairs: Vec<(i32, i32)> = files
        .iter()
        .map(|f| f.as_raw_fd())
        .zip(numbers.iter().copied())
        .collect();
    // SAFETY: only fcntl/dup2 (async-signal-safe) run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0i32; 8];
            for (i, (src, _)) in pairs.iter().enumerate() {
                high[i] = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 500);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, (_, dst)) in pairs.iter().enumerate() {
                if libc::dup2(high[i], *dst) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// `left4me-runtime ARGS` started with extra descriptors (see [`with_fds`]).
fn cmd_with_fds(rt: &Runtime, args: &[&str], files: &[&File], numbers: &[i32]) -> Output {
    let mut cmd = rt.command();
    cmd.args(args);
    with_fds(&mut cmd, files, numbers);
    run_captured(&mut cmd)
}

/// Waits until `pid` has exec'd `program` (it no longer runs the runtime).
fn wait_exec(pid: i32, program: &str) {
    let path = format!("/proc/{pid}/cmdline");
    wait_for(|| std::fs::read(&path).is_ok_and(|c| c.starts_with(program.as_bytes())));
}

fn pid_of(rt: &Runtime, id: &str) -> i32 {
    rt.state(id).expect("state")["pid"].as_i64().expect("pid") as i32
}

/// The descriptors a process has open, with their targets, read from the host.
fn fds_of(pid: i32) -> Vec<(i32, String)> {
    wait_exec(pid, "sleep");
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let n = e.file_name().to_str().unwrap().parse().unwrap();
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            (n, target.display().to_string())
        })
        .collect();
    fds.sort();
    fds
}

fn numbers(fds: &[(i32, String)]) -> Vec<i32> {
    fds.iter().map(|f| f.0).collect()
}

fn mountinfo(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap()
}

/// True if `info` (a mountinfo text) has a mount at `point` of type `fstype` ("" = any).
fn has_mount(info: &str, point: &str, fstype: &str) -> bool {
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|x| *x == "-").unwrap();
        f[4] == point && (fstype.is_empty() || f[sep + 1] == fstype)
    })
}

/// None of `paths` appears in the host's mount table.
fn assert_no_host_mounts(paths: &HostPaths) {
    let host = mountinfo("self");
    for p in &paths.0 {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            !host.contains(name),
            "the host got a mount at {name}:\n{host}"
        );
    }
}

/// Where the absolute container path `p` is in `b`'s rootfs.
fn in_root(b: &Bundle, p: &Path) -> PathBuf {
    b.rootfs().join(p.strip_prefix("/").unwrap())
}

fn append(path: &str) -> std::io::Result<File> {
    std::fs::OpenOptions::new().append(true).open(path)
}

/// Waits for the container to write a (one-line) file, and returns it.
fn wait_for_file(path: &Path) -> String {
    wait_for(|| std::fs::read_to_string(path).is_ok_and(|t| t.ends_with('\n')));
    std::fs::read_to_string(path).unwrap()
}

// ==== 1. CVE-2019-5736: /proc/PID/exe ====
//
// While a runtime process lives in the container (init waiting for `start`, or an
// `exec`), a container process can open `/proc/PID/exe` of it: that link leads to the
// runtime's binary on the host. Writing fails with ETXTBSY while the runtime runs, so the
// attacker keeps an O_PATH/read-only handle and reopens it for writing through
// `/proc/self/fd/N` once the runtime process is gone (init exec'd, exec finished). The
// next `left4me-runtime` anything on the host then runs the attacker's code as root.
// Two defences: init makes itself non-dumpable before anything of the container exists,
// so a container process without CAP_SYS_PTRACE cannot open its /proc/PID/exe at all;
// and where that is not enough (the container shares or joins a PID namespace, runs
// hooks inside, may hold CAP_SYS_PTRACE, rootless; and always for `exec`) exe_guard
// re-executes the runtime from a read-only detached bind mount (or a sealed memfd)
// first, so the handle leads to something that refuses writes (EROFS/EPERM).

/// True if `fd` (a handle on a runtime's exe) cannot be written through: a read-only
/// mount or a memfd sealed against writes.
fn write_protected(fd: &File) -> bool {
    // SAFETY: plain syscalls on a valid descriptor with a zeroed out-struct.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        let ro_mount =
            libc::fstatvfs(fd.as_raw_fd(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0;
        let seals = libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS);
        ro_mount || (seals >= 0 && seals & libc::F_SEAL_WRITE != 0)
    }
}

#[test]
fn created_init_exe_is_not_the_writable_runtime_binary() {
    if !can_run() {
        return;
    }
    let real_before = std::fs::read(runtime_bin()).unwrap();
    let bin = PrivateBin::new();
    let before = bin.bytes();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "60"]);
    // In the host's PID namespace the container could see the runtime's processes:
    // this create must run from the protected copy (exe_guard::needed_for).
    b.edit(|c| {
        let namespaces = c["linux"]["namespaces"].as_array_mut().unwrap();
        namespaces.retain(|ns| ns["type"] != "pid");
    });
    let dir = b.dir.to_str().unwrap();
    ok(&bin.cmd(&rt, &["create", "--bundle", dir, "exe-host"]));
    let pid = pid_of(&rt, "exe-host");
    let exe = format!("/proc/{pid}/exe");
    // Still the runtime, waiting for start, but not running from the binary's own path.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("create"));
    let link = std::fs::read_link(&exe).unwrap();
    assert_ne!(
        link,
        bin.0.canonicalize().unwrap(),
        "init runs from the binary"
    );
    let handle = File::open(&exe).unwrap();
    let what = format!("{exe} -> {}", link.display());
    assert!(write_protected(&handle), "{what}: writable");
    let err = append(&exe).expect_err("opened a created init's /proc/PID/exe for writing");
    let refused = [libc::EROFS, libc::ETXTBSY, libc::EACCES, libc::EPERM];
    assert!(refused.contains(&err.raw_os_error().unwrap()), "{err}");
    // The attack proper: keep the handle, let init exec (nothing runs the binary any
    // more), then reopen it for writing through /proc/self/fd.
    ok(&bin.cmd(&rt, &["start", "exe-host"]));
    wait_exec(pid, "sleep");
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    match append(&reopen) {
        // ETXTBSY is no answer here: nothing runs the binary any more.
        Err(e) => {
            let errno = e.raw_os_error().unwrap();
            assert!(errno != libc::ETXTBSY && refused.contains(&errno), "{e}")
        }
        Ok(mut f) => {
            // Only a sealed memfd may be opened; its seals must refuse the write.
            use std::io::Write;
            assert!(write_protected(&f), "reopened the binary for writing");
            assert!(f.write_all(b"x").is_err(), "wrote to the sealed copy");
        }
    }
    assert!(bin.bytes() == before, "the runtime binary was modified");
    assert!(std::fs::read(runtime_bin()).unwrap() == real_before);
}

#[test]
fn a_runtime_on_a_read_only_mount_runs_without_a_copy_and_stays_unwritable() {
    if !can_run() {
        return;
    }
    // Installed read-only (BindReadOnlyPaths=, a read-only /usr), the runtime skips the
    // re-exec from a protected copy: init's exe is the binary itself, and the mount is
    // what refuses the CVE-2019-5736 write. The read-only bind lives in a private mount
    // namespace (the host's mount table is shared with the other tests).
    let dir = scratch().join(uniq("ro-install"));
    std::fs::create_dir_all(&dir).unwrap();
    let installed = dir.join("left4me-runtime");
    std::fs::copy(runtime_bin(), &installed).unwrap();
    let before = std::fs::read(&installed).unwrap();
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "60"]);
    let d = dir.display();
    let script = format!(
        "mount --bind {d} {d} && mount -o remount,bind,ro {d} && exec {} --root {} create \
         --bundle {} exe-ro",
        installed.display(),
        rt.root.display(),
        b.dir.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    ok(&run_captured(&mut cmd));
    let pid = pid_of(&rt, "exe-ro");
    let exe = format!("/proc/{pid}/exe");
    // Seen from here, the bind (in another mount namespace) is named from its own root:
    // "/left4me-runtime". The protected copy would be "/", the root of a file mount.
    let link = std::fs::read_link(&exe).unwrap();
    assert_eq!(link, Path::new("/left4me-runtime"), "init runs from a copy");
    let same = |a: &Path, b: &Path| {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = (std::fs::metadata(a).unwrap(), std::fs::metadata(b).unwrap());
        (a.dev(), a.ino()) == (b.dev(), b.ino())
    };
    assert!(
        same(Path::new(&exe), &installed),
        "init's exe is another file"
    );
    let handle = File::open(&exe).unwrap();
    assert!(write_protected(&handle), "{exe}: writable");
    let err = append(&exe).expect_err("opened a created init's exe for writing");
    let refused = [Some(libc::EROFS), Some(libc::ETXTBSY)];
    assert!(refused.contains(&err.raw_os_error()), "{err}");
    ok(&rt.cmd(&["start", "exe-ro"]));
    wait_exec(pid, "sleep");
    let reopen = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let err = append(&reopen).expect_err("reopened the binary for writing");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    drop(rt);
    assert!(std::fs::read(&installed).unwrap() == before);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_cannot_overwrite_runtime_through_created_init() {
    if !can_run() {
        return;
    }
    // Deterministic CVE-2019-5736: `exec` into a *created* container, whose pid 1 is
    // still the runtime. The attacker holds /proc/1/exe open (in a `sleep`'s stdin),
    // waits for `start` (init execs, the binary is no longer running, so no ETXTBSY),
    // then reopens the held file for writing. The container has a PID namespace of its
    // own, so create did not re-exec (exe_guard::needed_for): init runs from the binary
    // itself and only its being non-dumpable stops the attacker's open of /proc/1/exe.
    // Without that this appends to the runtime binary (checked: it does).
    let bin = PrivateBin::new();
    let before = bin.bytes();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let dir = b.dir.to_str().unwrap();
    ok(&bin.cmd(&rt, &["create", "--bundle", dir, "exe-init"]));
    let script = r#"
        exec 2>/tmp/attack.err
        sleep 1000 < /proc/1/exe & h=$!
        while [ -e /proc/$h/fd/0 ] && ! [ /proc/$h/fd/0 -ef /proc/1/exe ]; do :; done
        if [ /proc/$h/fd/0 -ef /proc/1/exe ]; then echo held > /tmp/ready
        else echo no-access > /tmp/ready; fi
        while [ ! -e /tmp/go ]; do usleep 10000; done
        if { echo x >> /proc/$h/fd/0; }; then echo WROTE > /tmp/result
        else echo refused > /tmp/result; fi
    "#;
    // Under a subreaper, as conmon runs it: the detached process outlives this command.
    let mut detached = Command::new(subreaper_bin());
    detached
        .arg(&bin.0)
        .arg("--root")
        .arg(&rt.root)
        .args(["exec", "--detach", "exe-init", "sh", "-c", script]);
    ok(&run_captured(&mut detached));
    let ready = wait_for_file(&b.rootfs().join("tmp/ready"));
    ok(&bin.cmd(&rt, &["start", "exe-init"]));
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    let result = wait_for_file(&b.rootfs().join("tmp/result"));
    let err = std::fs::read_to_string(b.rootfs().join("tmp/attack.err")).unwrap_or_default();
    assert_eq!(result.trim(), "refused", "ready: {ready} stderr: {err}");
    assert!(bin.bytes() == before, "the runtime binary was modified");
}

#[test]
fn container_cannot_overwrite_runtime_during_exec() {
    if !can_run() {
        return;
    }
    // The classic shape: a container loop grabs /proc/PID/exe of every new process that
    // is not busybox (i.e. an `exec` still in the runtime), keeps it open in a `sleep`,
    // and keeps trying to reopen it for writing after the runtime is gone. A huge PATH
    // keeps each exec'd process in the runtime's PATH search (after it dropped its
    // capabilities, so /proc/PID/exe is reachable) long enough to be caught.
    // Without exe_guard this corrupts the binary (checked: it does).
    let bin = PrivateBin::new();
    let before = bin.bytes();
    let real_before = std::fs::read(runtime_bin()).unwrap();
    let rt = Runtime::new();
    // A holder is used only once its stdin *is* the grabbed file: until the redirection,
    // its stdin is the shell's (the host's /dev/null), where writes "succeed".
    let script = r#"
        exec 2>/dev/null
        seen=" "; holders=""
        : > /tmp/log
        while :; do
          for e in /proc/[0-9]*/exe; do
            p=${e#/proc/}; p=${p%/exe}
            case "$seen" in *" $p "*) continue;; esac
            if [ $e -ef /bin/busybox ]; then seen="$seen$p "; continue; fi
            if command exec 3< $e; then
              sleep 1000 <&3 & h=$!
              while [ -e /proc/$h/fd/0 ] && ! [ /proc/$h/fd/0 -ef /proc/$$/fd/3 ]
              do :; done
              exec 3<&-
              seen="$seen$p $h "; holders="$holders $h"
              echo "held $p" >> /tmp/log
            fi
          done
          for h in $holders; do
            if { echo x >> /proc/$h/fd/0; }; then echo "WROTE $h" >> /tmp/log; fi
          done
        done
    "#;
    let mut b = Bundle::shell(script);
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let dir = b.dir.to_str().unwrap();
    ok(&bin.cmd(&rt, &["run", "--detach", "--bundle", dir, "exe-exec"]));
    wait_for(|| b.rootfs().join("tmp/log").exists());
    let path = format!("PATH={}:/bin", vec!["/nonexistent"; 8000].join(":"));
    // Not asserted one by one: once the binary is being written, it cannot be run.
    let mut execs = Vec::new();
    for _ in 0..6 {
        let mut exec = Command::new(&bin.0);
        exec.arg("--root").arg(&rt.root);
        exec.args(["exec", "--env", &path, "exe-exec", "true"]);
        execs.push(exec.stdin(std::process::Stdio::null()).output());
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    ok(&bin.cmd(&rt, &["delete", "--force", "exe-exec"]));
    let log = std::fs::read_to_string(b.rootfs().join("tmp/log")).unwrap();
    eprintln!("attack loop log:\n{log}");
    assert!(!log.contains("WROTE"), "a write went through: {log}");
    assert!(bin.bytes() == before, "the runtime binary was modified");
    assert!(std::fs::read(runtime_bin()).unwrap() == real_before);
    ok(execs[0].as_ref().expect("spawning exec"));
}

// ==== 2. No descriptor leaks (the first half of CVE-2024-21626) ====
//
// Any descriptor the runtime holds (state dir, cgroup dir, sockets) or inherits from its
// caller that survives exec gives the container a handle on the host: `fchdir` or
// `/proc/self/fd/N/..` walks out of the rootfs. The runtime must close everything from
// 3 + --preserve-fds up. The tests hand the runtime extra, non-close-on-exec descriptors
// (as a careless caller would), so dropping `close_range(CLOEXEC)` makes them fail.

#[test]
fn no_descriptors_leak_into_run_create_or_exec() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let leak = File::open("/etc/passwd").unwrap();
    // `run`: ls itself opens /proc/self/fd as 3, nothing else may be there.
    let b = Bundle::shell("ls /proc/self/fd");
    let run = ["run", "--bundle", b.dir.to_str().unwrap(), "fd-run"];
    let out = cmd_with_fds(&rt, &run, &[&leak, &leak], &[5, 42]);
    assert_eq!(ok(&out), "0\n1\n2\n3\n");
    // create/start: the container process, seen from the host.
    let b = Bundle::new(&["sleep", "60"]);
    let create = ["create", "--bundle", b.dir.to_str().unwrap(), "fd-ctr"];
    ok(&cmd_with_fds(&rt, &create, &[&leak, &leak], &[3, 9]));
    ok(&rt.cmd(&["start", "fd-ctr"]));
    let fds = fds_of(pid_of(&rt, "fd-ctr"));
    assert_eq!(numbers(&fds), [0, 1, 2], "{fds:?}");
    // exec, also handed stray descriptors.
    let pid_file = b.dir.join("exec.pid");
    let pid_arg = pid_file.to_str().unwrap();
    let exec = ["exec", "-d", "--pid-file", pid_arg, "fd-ctr", "sleep", "60"];
    ok(&cmd_with_fds(&rt, &exec, &[&leak, &leak], &[3, 7]));
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let fds = fds_of(pid.trim().parse().unwrap());
    assert_eq!(numbers(&fds), [0, 1, 2], "{fds:?}");
}

#[test]
fn preserve_fds_passes_exactly_the_asked_descriptors() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("ls -l /proc/self/fd; read -r line <&3 && echo \"fd3=$line\"");
    let keep_path = b.dir.join("keep-me");
    std::fs::write(&keep_path, "KEPT\n").unwrap();
    let keep = File::open(&keep_path).unwrap();
    let stray = File::open("/etc/passwd").unwrap();
    // run --preserve-fds 1: fd 3 reaches the container, fd 4 does not (there, fd 4 is
    // ls's own directory, never /etc/passwd).
    let dir = b.dir.to_str().unwrap();
    let run = ["run", "--preserve-fds", "1", "--bundle", dir, "fd-keep-run"];
    let out = ok(&cmd_with_fds(&rt, &run, &[&keep, &stray], &[3, 4]));
    assert!(out.contains("fd3=KEPT"), "{out}");
    assert!(
        out.contains(&format!(" 3 -> {}", keep_path.display())),
        "{out}"
    );
    assert!(
        !out.contains("/etc/passwd") && !out.contains(" 5 -> "),
        "{out}"
    );
    // create --preserve-fds 1, seen from the host.
    let b2 = Bundle::new(&["sleep", "60"]);
    let dir = b2.dir.to_str().unwrap();
    let create = ["create", "--preserve-fds", "1", "--bundle", dir, "fd-keep"];
    let fds = [&keep, &stray, &stray];
    ok(&cmd_with_fds(&rt, &create, &fds, &[3, 4, 10]));
    ok(&rt.cmd(&["start", "fd-keep"]));
    let fds = fds_of(pid_of(&rt, "fd-keep"));
    assert_eq!(numbers(&fds), [0, 1, 2, 3], "{fds:?}");
    assert_eq!(fds[3].1, keep_path.display().to_string());
}

// ==== 3. process.cwd (CVE-2024-21626) ====
//
// runc leaked a descriptor of the host's /sys/fs/cgroup into init and then did a plain
// `chdir(process.cwd)`: with cwd `/proc/self/fd/7` the container started *in a host
// directory* and reached the host's / through `..`. The runtime resolves cwd with
// openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS) after pivot_root and checks getcwd.

/// The container's answer for `cwd`: the run either fails with one line or runs inside
/// the container: its `..`-chain ends at the container's root (which has `root_marker`)
/// and nothing in `host_marker` is visible.
fn assert_cwd_contained(out: &Output, root_marker: &str, host_marker: &str, what: &str) {
    if !out.status.success() {
        fails_with(out, "cwd");
        return;
    }
    let text = stdout(out);
    assert!(text.starts_with('/'), "{what}: pwd is not a path:\n{text}");
    assert!(
        text.contains(root_marker),
        "{what}: `..` left the root:\n{text}"
    );
    assert!(
        !text.contains(host_marker),
        "{what}: host dir seen:\n{text}"
    );
}

const CWD_SCRIPT: &str = "pwd; ls -a; echo ==; ls -a ../../../../../../../../../../../..";

/// A host directory in /tmp holding a uniquely named marker file.
fn host_dir_with_marker() -> (HostPaths, PathBuf, String) {
    let guard = HostPaths::new(&["l4m-hostcwd"]);
    let marker = uniq("HOST-MARKER");
    std::fs::create_dir(&guard.0[0]).unwrap();
    std::fs::write(guard.0[0].join(&marker), "").unwrap();
    let dir = guard.0[0].clone();
    (guard, dir, marker)
}

fn cwd_bundle(cwd: &str, root_marker: &str) -> Bundle {
    let mut b = Bundle::shell(CWD_SCRIPT);
    b.edit(|c| c["process"]["cwd"] = json!(cwd));
    std::fs::write(b.rootfs().join(root_marker), "").unwrap();
    b
}

#[test]
fn cwd_through_a_leaked_descriptor_is_refused() {
    if !can_run() {
        return;
    }
    let (_guard, host_dir, host_marker) = host_dir_with_marker();
    let root_marker = uniq("CONTAINER-ROOT");
    let dir_fd = File::open(&host_dir).unwrap();
    let rt = Runtime::new();
    // A host directory handed to the runtime as fd 5 (not preserved) + cwd through it.
    let b = cwd_bundle("/proc/self/fd/5", &root_marker);
    let run = ["run", "--bundle", b.dir.to_str().unwrap(), "cwd-leak"];
    let out = cmd_with_fds(&rt, &run, &[&dir_fd], &[5]);
    assert_cwd_contained(&out, &root_marker, &host_marker, "/proc/self/fd/5");
    // The runtime's own descriptors during setup (runc's was the cgroup dir, fd 7).
    for n in 3..=12 {
        let cwd = format!("/proc/self/fd/{n}");
        let b = cwd_bundle(&cwd, &root_marker);
        let out = rt.run(&b, &format!("cwd-fd{n}"));
        assert_cwd_contained(&out, &root_marker, "cgroup.procs", &cwd);
    }
    // Same through `exec --cwd`.
    let sleeper = Bundle::new(&["sleep", "60"]);
    ok(&rt.create(&sleeper, "cwd-exec"));
    ok(&rt.cmd(&["start", "cwd-exec"]));
    std::fs::write(sleeper.rootfs().join(&root_marker), "").unwrap();
    for cwd in ["/proc/self/fd/5", "/proc/self/fd/7", "/proc/self/cwd"] {
        let exec = ["exec", "--cwd", cwd, "cwd-exec", "sh", "-c", CWD_SCRIPT];
        let out = cmd_with_fds(&rt, &exec, &[&dir_fd], &[5]);
        assert_cwd_contained(&out, &root_marker, &host_marker, cwd);
    }
}

#[test]
fn cwd_symlinks_resolve_inside_the_container() {
    if !can_run() {
        return;
    }
    // Without in-root resolution (a chdir done before pivot_root, or against the
    // rootfs's host path), these links lead to the host: `up` to the host's /, `abs` to
    // a host directory with a marker.
    let (_guard, host_dir, host_marker) = host_dir_with_marker();
    let root_marker = uniq("CONTAINER-ROOT");
    let rt = Runtime::new();
    let b = cwd_bundle("/up", &root_marker);
    std::os::unix::fs::symlink("../../../../../../../../../../", b.rootfs().join("up")).unwrap();
    let out = rt.run(&b, "cwd-up");
    assert_cwd_contained(&out, &root_marker, &host_marker, "/up -> ../../..");
    if out.status.success() {
        assert_eq!(stdout(&out).lines().next(), Some("/"), "{}", stdout(&out));
    }
    let b = cwd_bundle("/abs", &root_marker);
    std::os::unix::fs::symlink(&host_dir, b.rootfs().join("abs")).unwrap();
    let inside = in_root(&b, &host_dir);
    std::fs::create_dir_all(&inside).unwrap();
    std::fs::write(inside.join("IN-ROOT-MARKER"), "").unwrap();
    let out = rt.run(&b, "cwd-abs");
    assert_cwd_contained(&out, &root_marker, &host_marker, "/abs -> host dir");
    if out.status.success() {
        let text = stdout(&out);
        assert_eq!(text.lines().next(), host_dir.to_str(), "{text}");
        assert!(text.contains("IN-ROOT-MARKER"), "{text}");
    }
}

// ==== 4. Mount destinations (CVE-2021-30465) ====
//
// A mount destination is a path in a rootfs the image (or a racing container) controls.
// Resolved naively on the host (`rootfs + dest`, following symlinks), `/evil -> /tmp/x`
// mounts over, or creates, the host's /tmp/x. The runtime resolves destinations with
// openat2(RESOLVE_IN_ROOT), creating missing parts inside the root only.

#[test]
fn mount_destinations_behind_symlinks_stay_in_the_rootfs() {
    if !can_run() {
        return;
    }
    let host = HostPaths::new(&["hostdir", "hostdir2", "hostdir3"]);
    let (abs, rel, bind_target) = (&host.0[0], &host.0[1], &host.0[2]);
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "60"]);
    let rootfs = b.rootfs();
    std::os::unix::fs::symlink(abs, rootfs.join("evil")).unwrap();
    let up = "../".repeat(12);
    let rel_name = rel.file_name().unwrap().to_str().unwrap();
    std::os::unix::fs::symlink(format!("{up}tmp/{rel_name}"), rootfs.join("evil2")).unwrap();
    // An existing host directory as well: a bind onto it would hide the host's content.
    std::fs::create_dir(bind_target).unwrap();
    std::fs::write(bind_target.join("host-file"), "host").unwrap();
    std::os::unix::fs::symlink(bind_target, rootfs.join("evil3")).unwrap();
    let src = b.dir.join("bindsrc");
    std::fs::create_dir(&src).unwrap();
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for dest in ["/evil", "/evil2/sub"] {
            mounts.push(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        }
        mounts.push(json!({"destination": "/evil3", "type": "bind",
                           "source": src.to_str().unwrap(), "options": ["rbind"]}));
    });
    ok(&rt.create(&b, "mnt-link"));
    let pid = pid_of(&rt, "mnt-link");
    assert_no_host_mounts(&host);
    assert!(!abs.exists(), "{} was created on the host", abs.display());
    assert!(!rel.exists(), "{} was created on the host", rel.display());
    assert!(bind_target.join("host-file").exists());
    assert_eq!(std::fs::read_dir(bind_target).unwrap().count(), 1);
    // Inside, the mounts sit at the symlinks' targets taken inside the root.
    let inside = mountinfo(&pid.to_string());
    let sub = rel.join("sub");
    for (point, fstype) in [(abs, "tmpfs"), (&sub, "tmpfs"), (bind_target, "")] {
        let found = has_mount(&inside, point.to_str().unwrap(), fstype);
        assert!(found, "no {fstype} mount at {point:?} inside:\n{inside}");
        assert!(in_root(&b, point).is_dir());
    }
}

// ==== 5./6. Masked and read-only paths (CVE-2019-16884, -2023-27561, -2025-31133) ====
//
// Masking binds /dev/null over a file. If that /dev/null is the *container's* (runc),
// a container that replaces it with a symlink (here: a /dev bind from a directory it
// controls, where `null` is a symlink) gets an arbitrary file bound over the masked path
// instead: the mask reveals data or, bound writable, exposes e.g. /proc/sys files. The
// runtime binds the host's /dev/null, checked by descriptor, and resolves every masked
// and read-only path inside the root.

#[test]
fn masking_ignores_a_dev_null_symlink() {
    if !can_run() {
        return;
    }
    let host = HostPaths::new(&["l4m-leak"]);
    let leak = &host.0[0];
    std::fs::write(leak, "HOST-LEAK").unwrap();
    let rt = Runtime::new();
    let script = "cat /etc/l4m-masked; echo '|'; cat /proc/self/mountinfo";
    let mut b = Bundle::shell(script);
    let in_root_leak = in_root(&b, leak);
    std::fs::write(&in_root_leak, "ROOTFS-LEAK").unwrap();
    std::fs::write(b.rootfs().join("etc/l4m-masked"), "SECRET").unwrap();
    let fake_dev = b.dir.join("fakedev");
    std::fs::create_dir(&fake_dev).unwrap();
    std::os::unix::fs::symlink(leak, fake_dev.join("null")).unwrap();
    b.edit(|c| {
        c["mounts"] = json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "bind", "source": fake_dev.to_str().unwrap(),
             "options": ["rbind"]}
        ]);
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.push(json!("/etc/l4m-masked"));
    });
    let out = rt.run(&b, "mask-null");
    let text = ok(&out);
    let (masked, info) = text.split_once("|\n").unwrap();
    assert_eq!(masked, "", "masked file is not empty:\n{text}");
    let name = leak.file_name().unwrap().to_str().unwrap();
    assert!(!info.contains(name), "symlink target got mounted:\n{info}");
    assert_no_host_mounts(&host);
    assert_eq!(std::fs::read_to_string(leak).unwrap(), "HOST-LEAK");
    assert_eq!(std::fs::read(in_root_leak).unwrap(), b"ROOTFS-LEAK");
}

#[test]
fn masked_and_readonly_symlinks_resolve_inside_the_root() {
    if !can_run() {
        return;
    }
    // Resolved on the host, these links would mask/bind host files (in the container's
    // mount namespace) and leave the container's own targets writable and unmasked.
    let host = HostPaths::new(&["l4m-maskt", "l4m-maskt2", "l4m-rot"]);
    let (mask_abs, mask_rel, ro_dir) = (&host.0[0], &host.0[1], &host.0[2]);
    std::fs::write(mask_abs, "HOST1").unwrap();
    std::fs::write(mask_rel, "HOST2").unwrap();
    std::fs::create_dir(ro_dir).unwrap();
    let ro = ro_dir.display();
    let script = format!(
        "cat /etc/l4m-mask-abs /etc/l4m-mask-rel {} {}; echo '|'; \
         touch {ro}/probe && echo RW || echo RO; touch /etc/l4m-ro/probe2 && echo RW || echo RO",
        mask_abs.display(),
        mask_rel.display()
    );
    let rt = Runtime::new();
    let mut b = Bundle::shell(&script);
    std::fs::write(in_root(&b, mask_abs), "INROOT1").unwrap();
    std::fs::write(in_root(&b, mask_rel), "INROOT2").unwrap();
    std::fs::create_dir(in_root(&b, ro_dir)).unwrap();
    let etc = b.rootfs().join("etc");
    std::os::unix::fs::symlink(mask_abs, etc.join("l4m-mask-abs")).unwrap();
    let up = "../".repeat(12);
    let rel_name = mask_rel.file_name().unwrap().to_str().unwrap();
    std::os::unix::fs::symlink(format!("{up}tmp/{rel_name}"), etc.join("l4m-mask-rel")).unwrap();
    std::os::unix::fs::symlink(ro_dir, etc.join("l4m-ro")).unwrap();
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        let linux = &mut c["linux"];
        let masked = linux["maskedPaths"].as_array_mut().unwrap();
        masked.extend([json!("/etc/l4m-mask-abs"), json!("/etc/l4m-mask-rel")]);
        let ro: &mut Vec<Value> = linux["readonlyPaths"].as_array_mut().unwrap();
        ro.push(json!("/etc/l4m-ro"));
    });
    let text = ok(&rt.run(&b, "mask-links"));
    assert_eq!(
        text, "|\nRO\nRO\n",
        "in-root targets not masked / read-only"
    );
    assert_eq!(std::fs::read_to_string(mask_abs).unwrap(), "HOST1");
    assert_eq!(std::fs::read_to_string(mask_rel).unwrap(), "HOST2");
    std::fs::write(ro_dir.join("host-probe"), "").unwrap();
    assert_no_host_mounts(&host);
    assert_eq!(std::fs::read(in_root(&b, mask_abs)).unwrap(), b"INROOT1");
}

/// `org.left4me.network=public-only`: connect() and UDP sends to private ranges are
/// refused (EPERM) while other destinations go out. Everything happens between two
/// network namespaces this test creates: 198.51.100.1 (a documentation range standing
/// in for "the internet") and 10.199.0.1 (a private one) both belong to the test's own
/// veth peer; nothing listens, so an allowed connection is answered "refused".
#[test]
fn public_only_refuses_private_destinations() {
    if !can_run() {
        return;
    }
    let tag = std::process::id();
    let (cns, pns) = (format!("l4m-nd-c-{tag}"), format!("l4m-nd-p-{tag}"));
    let sh = |script: &str| {
        let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    sh(&format!(
        "ip netns add {cns} && ip netns add {pns} && \
         ip link add l4mnd{tag} netns {cns} type veth peer name l4mpd{tag} netns {pns} && \
         ip -n {cns} addr add 10.199.0.2/24 dev l4mnd{tag} && ip -n {cns} addr add 198.51.100.2/24 dev l4mnd{tag} && \
         ip -n {pns} addr add 10.199.0.1/24 dev l4mpd{tag} && ip -n {pns} addr add 198.51.100.1/24 dev l4mpd{tag} && \
         ip -n {cns} link set l4mnd{tag} up && ip -n {pns} link set l4mpd{tag} up && ip -n {cns} link set lo up"
    ));
    let probe = "for a in 198.51.100.1 10.199.0.1 127.0.0.1; do \
                 r=$(nc -w 3 $a 8080 </dev/null 2>&1); \
                 case \"$r\" in *'not permitted'*) echo $a=denied;; *refused*) echo $a=allowed;; *) echo \"$a=other:$r\";; esac; done; \
                 r=$(timeout 2 tftp -g -r x -l /dev/null 10.199.0.1 2>&1); \
                 case \"$r\" in *'not permitted'*) echo udp=denied;; *) echo udp=other;; esac";
    let run = |public_only: bool| {
        let mut b = Bundle::shell(probe);
        b.edit(|c| {
            for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
                if ns["type"] == "network" {
                    ns["path"] = json!(format!("/run/netns/{cns}"));
                }
            }
            if public_only {
                c["annotations"] = json!({"org.left4me.network": "public-only"});
            }
        });
        ok(&Runtime::new().run(&b, &format!("netdeny-{public_only}")))
    };
    let open = run(false);
    let closed = run(true);
    sh(&format!("ip netns del {cns}; ip netns del {pns}"));
    assert!(
        open.contains("10.199.0.1=allowed")
            && open.contains("127.0.0.1=allowed")
            && open.contains("udp=other"),
        "{open}"
    );
    for line in [
        "198.51.100.1=allowed",
        "10.199.0.1=denied",
        "127.0.0.1=denied",
        "udp=denied",
    ] {
        assert!(
            closed.lines().any(|l| l == line),
            "{line} missing:\n{closed}"
        );
    }
}
