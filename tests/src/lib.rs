//! Harness for the integration tests: real containers, run as root, on the real kernel.
//!
//! Each test makes its own bundle (a copy of the busybox rootfs plus a config.json based
//! on `left4me-runtime spec`) and its own `--root` state directory, so tests run in
//! parallel without seeing each other. Everything is removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use serde_json::Value;

pub mod terminal;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The runtime binary under test (`LEFT4ME_RUNTIME_BIN`, else target/debug).
pub fn runtime_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LEFT4ME_RUNTIME_BIN") {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let bin = target.join("debug/left4me-runtime");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build` first (hack/test does)",
        bin.display()
    );
    bin
}

/// The runtime built with `--features fault-injection` (named crash points, see
/// runtime/src/fault.rs): `LEFT4ME_FAULT_BIN`, else built here into target/fault once.
pub fn fault_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("LEFT4ME_FAULT_BIN") {
            return PathBuf::from(bin);
        }
        let target = workspace().join("target/fault");
        let st = Command::new("cargo")
            .args(["build", "--release", "-p", "left4me-runtime"])
            .args(["--features", "fault-injection", "--target-dir"])
            .arg(&target)
            .current_dir(workspace())
            .status()
            .expect("running cargo");
        assert!(st.success(), "building the fault-injection runtime");
        target.join("release/left4me-runtime")
    })
    .clone()
}

/// tests/src/bin/subreaper.rs, built by cargo with the integration tests (see
/// [`Runtime::cmd_reaped`]).
pub fn subreaper_bin() -> PathBuf {
    std::env::var_os("LEFT4ME_SUBREAPER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            target.join("debug/subreaper")
        })
}

/// True when the tests can run containers; tests return early (and say so) otherwise.
pub fn can_run() -> bool {
    if !nix_is_root() {
        eprintln!("skipped: integration tests need root");
        return false;
    }
    true
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where tests put bundles and state: `LEFT4ME_SCRATCH` (a tmpfs in the VM) or /tmp.
pub fn scratch() -> PathBuf {
    std::env::var_os("LEFT4ME_SCRATCH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("l4m-tests")
}

/// The busybox rootfs, built once per machine by images/busybox/build.sh.
pub fn busybox_rootfs() -> PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS
        .get_or_init(|| {
            // Prebuilt (hack/test builds it once; the VM reuses the host's).
            if let Some(dir) = std::env::var_os("LEFT4ME_BUSYBOX_ROOTFS").map(PathBuf::from) {
                if dir.join("bin/busybox").exists() {
                    return dir;
                }
            }
            let out = workspace().join("images/out/busybox");
            let status = Command::new(workspace().join("images/busybox/build.sh"))
                .arg(&out)
                .stdout(Stdio::null())
                .status()
                .expect("running images/busybox/build.sh");
            assert!(status.success(), "building the busybox rootfs failed");
            out
        })
        .clone()
}

/// A private copy of the busybox rootfs at `dest`.
pub fn copy_busybox_rootfs(dest: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(busybox_rootfs())
        .arg(dest)
        .status()
        .unwrap();
    assert!(status.success(), "copying the rootfs to {}", dest.display());
}

/// `PREFIX-PID-N`: names no other test (or test process) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

/// A bundle directory with its own rootfs copy and a config.json to edit.
pub struct Bundle {
    pub dir: PathBuf,
    pub config: Value,
}

impl Bundle {
    /// runc's default config, with `terminal: false` and the given command.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = scratch().join(unique("bundle"));
        std::fs::create_dir_all(&dir).unwrap();
        copy_busybox_rootfs(&dir.join("rootfs"));
        let out = Command::new(runtime_bin())
            .args(["spec", "--bundle"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config["process"]["terminal"] = Value::Bool(false);
        config["process"]["args"] = args.iter().map(|a| Value::from(*a)).collect();
        let b = Bundle { dir, config };
        b.save();
        b
    }

    /// A `sh -c SCRIPT` bundle.
    pub fn shell(script: &str) -> Bundle {
        Bundle::new(&["sh", "-c", script])
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// Writes the (edited) config back.
    pub fn save(&self) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .unwrap();
    }

    /// Edits the config and saves it.
    pub fn edit(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.config);
        self.save();
        self
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A runtime with its own state directory. Deletes its containers when dropped.
pub struct Runtime {
    pub root: PathBuf,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            root: scratch().join(unique("root")),
        }
    }

    /// A command for the runtime binary with `--root` set.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(runtime_bin());
        cmd.arg("--root").arg(&self.root);
        cmd
    }

    /// Runs the runtime with `args`, capturing output (stdin is /dev/null).
    ///
    /// Output goes through files, not pipes: after `create` or `run --detach` the
    /// container keeps the runtime's stdio, so a pipe would never reach EOF.
    pub fn cmd(&self, args: &[&str]) -> Output {
        let mut cmd = self.command();
        cmd.args(args);
        run_captured(&mut cmd)
    }

    /// Like [`Runtime::cmd`], under a child subreaper that outlives the command and
    /// reaps what it leaves (as conmon does): for `exec --detach`, whose process is
    /// re-parented to the nearest subreaper when the runtime exits.
    pub fn cmd_reaped(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(subreaper_bin());
        cmd.arg(runtime_bin())
            .arg("--root")
            .arg(&self.root)
            .args(args);
        run_captured(&mut cmd)
    }

    /// `run --bundle DIR ID` in the foreground.
    pub fn run(&self, bundle: &Bundle, id: &str) -> Output {
        let dir = bundle.dir.to_str().unwrap();
        self.cmd(&["run", "--bundle", dir, id])
    }

    pub fn create(&self, bundle: &Bundle, id: &str) -> Output {
        let dir = bundle.dir.to_str().unwrap();
        self.cmd(&["create", "--bundle", dir, id])
    }

    /// The `status` field of `state ID`, or None if the command failed.
    pub fn status(&self, id: &str) -> Option<String> {
        self.state(id)
            .map(|v| v["status"].as_str().unwrap_or_default().to_string())
    }

    pub fn state(&self, id: &str) -> Option<Value> {
        let out = self.cmd(&["state", id]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("state prints JSON"))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if let Some(id) = e.file_name().to_str() {
                    let _ = self.cmd(&["delete", "--force", id]);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr captured through unlinked
/// temporary files, returning once the command itself exits.
pub fn run_captured(cmd: &mut Command) -> Output {
    let dir = scratch();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(unique("out"));
    let out_file = std::fs::File::create(&path).unwrap();
    let err_path = dir.join(unique("err"));
    let err_file = std::fs::File::create(&err_path).unwrap();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out_file)
        .stderr(err_file)
        .status()
        .expect("spawning the runtime");
    let stdout = std::fs::read(&path).unwrap();
    let stderr = std::fs::read(&err_path).unwrap();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&err_path);
    Output {
        status,
        stdout,
        stderr,
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts success and returns stdout.
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "expected success, got {:?}\nstdout: {}\nstderr: {}",
        out.status,
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Asserts failure with a one-line error that contains `needle`; returns stderr.
#[track_caller]
pub fn fails_with(out: &Output, needle: &str) -> String {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "expected failure, got success\nstdout: {}",
        stdout(out)
    );
    assert!(err.contains(needle), "stderr lacks {needle:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    err
}

/// Mount points of the host's mount namespace (field 5 of /proc/self/mountinfo).
pub fn host_mount_count() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

/// Polls `cond` every 20 ms; panics if it never holds within 120 s of wall time (a
/// liveness bound, generous because the VM suite runs under emulation — never a
/// performance check).
#[track_caller]
pub fn wait_for(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if cond() {
        return;
    }
    panic!("condition not reached within 120 s");
}

/// A free UDP port on loopback.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What python-a2s (the third-party client from PyPI) sees of the game server on
/// 127.0.0.1:`port`, retried until it answers, `limit` passes or `server` exits.
pub fn a2s_info(
    port: u16,
    limit: std::time::Duration,
    server: &mut std::process::Child,
) -> Option<Value> {
    let script = "import a2s, json, sys\n\
                  i = a2s.info(('127.0.0.1', int(sys.argv[1])), timeout=1.0)\n\
                  print(json.dumps({'name': i.server_name, 'map': i.map_name, 'folder': i.folder, \
                  'app_id': i.app_id, 'port': i.port, 'dedicated': i.server_type}))";
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline && matches!(server.try_wait(), Ok(None)) {
        let out = Command::new("python3")
            .args(["-c", script, &port.to_string()])
            .output()
            .expect("python3");
        if out.status.success() {
            return Some(serde_json::from_slice(&out.stdout).unwrap());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("ModuleNotFoundError"),
            "python-a2s is not installed (hack/install-deps installs it): {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    None
}

/// The stand-in game's layer store (images/srcds-standin/build.sh, built once). With
/// LEFT4ME_SCRATCH (the VM's tmpfs) a copy there is used: the VM sees the source tree
/// over 9p, where idmapped mounts do not exist.
pub fn l4d2_store() -> PathBuf {
    static STORE: OnceLock<PathBuf> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let built = workspace().join("images/out/l4d2-store");
            let st = Command::new(workspace().join("images/srcds-standin/build.sh"))
                .arg(busybox_rootfs())
                .arg(&built)
                .stdout(Stdio::null())
                .status()
                .expect("running images/srcds-standin/build.sh");
            assert!(st.success(), "building the stand-in store");
            if std::env::var_os("LEFT4ME_SCRATCH").is_none() {
                return built;
            }
            let copy = scratch().join(unique("l4d2-store"));
            std::fs::create_dir_all(scratch()).unwrap();
            let st = Command::new("cp")
                .arg("-a")
                .arg(&built)
                .arg(&copy)
                .status()
                .unwrap();
            assert!(st.success(), "copying the store to scratch");
            copy
        })
        .clone()
}

/// The probes: `LEFT4ME_PROBE_DIR`, else images/out/probe (where hack/test builds them),
/// built or refreshed once by images/seccomp-probe/build.sh (idempotent).
pub fn probe_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let has = |d: &PathBuf| d.join("probe64").exists() && d.join("probe32").exists();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("LEFT4ME_PROBE_DIR").map(PathBuf::from) {
            if has(&dir) {
                return dir;
            }
        }
        let out = workspace().join("images/out/probe");
        let status = Command::new(workspace().join("images/seccomp-probe/build.sh"))
            .arg(&out)
            .stdout(Stdio::null())
            .status()
            .expect("running images/seccomp-probe/build.sh");
        assert!(
            status.success() && has(&out),
            "building the seccomp probes failed"
        );
        out
    })
    .clone()
}

/// Swaps two paths atomically (renameat2 RENAME_EXCHANGE).
pub fn exchange(a: &Path, b: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let a = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let b = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: both strings outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "renameat2: {}", std::io::Error::last_os_error());
}
