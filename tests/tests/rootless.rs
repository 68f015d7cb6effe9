//! Rootless mode: the runtime run by an ordinary user (no sudo). Each test makes its own
//! user (`l4m-rl-NAME`, with a subordinate id range in /etc/subuid and /etc/subgid),
//! gives it its own bundles and `$XDG_RUNTIME_DIR`, and runs the runtime through
//! `setpriv` as that user: state goes under `$XDG_RUNTIME_DIR/left4me-runtime`, the
//! caller's own ids are mapped directly and subordinate ids through newuidmap and
//! newgidmap, a layered root is mounted inside the container's user namespace, and a
//! cgroup is used only where one was delegated. After every test the user has no
//! container, no process and no mount left on the host.
//!
//! In the VM (docs/vm-testing.md) /etc/shadow is a bind mount that useradd cannot
//! replace: there the user is written straight into /etc/passwd and /etc/group (the
//! guest's /etc is a throw-away overlay). The delegated-cgroup test runs only there,
//! where cgroup v2 has controllers.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// Serialises changes to /etc/passwd, /etc/group, /etc/subuid and /etc/subgid between
/// the tests of this binary (useradd takes its own locks, the manual fallback does not).
static ACCOUNTS: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

const SUB_COUNT: u32 = 65536;
const ACCOUNT_FILES: [&str; 5] = [
    "/etc/passwd",
    "/etc/group",
    "/etc/gshadow",
    "/etc/subuid",
    "/etc/subgid",
];
const PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn accounts() -> std::sync::MutexGuard<'static, ()> {
    ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner())
}

#[track_caller]
fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `getent passwd KEY` split into fields.
fn passwd_entry(key: &str) -> Option<Vec<String>> {
    let out = Command::new("getent").args(["passwd", key]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .to_string();
    out.status
        .success()
        .then(|| line.split(':').map(str::to_string).collect())
}

fn group_exists(key: &str) -> bool {
    Command::new("getent")
        .args(["group", key])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Rewrites `file` without the lines `drop` selects (in place: in the VM some of these
/// files cannot be renamed over).
fn remove_lines(file: &str, drop: impl Fn(&str) -> bool) {
    let Ok(text) = fs::read_to_string(file) else {
        return;
    };
    let kept: String = text
        .lines()
        .filter(|l| !drop(l))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept != text {
        fs::write(file, kept).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

fn append_line(file: &str, line: &str) {
    let mut text = fs::read_to_string(file).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    fs::write(file, text).unwrap_or_else(|e| panic!("{file}: {e}"));
}

/// The range `/etc/sub{u,g}id` grants `name` or `id`, if any.
fn sub_range(file: &str, name: &str, id: u32) -> Option<(u32, u32)> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if f.len() != 3 || (f[0] != name && f[0] != id.to_string()) {
            return None;
        }
        Some((f[1].parse().ok()?, f[2].parse().ok()?))
    })
}

/// A start above every range `file` grants (and at least 200000).
fn free_sub_start(file: &str) -> u32 {
    let text = fs::read_to_string(file).unwrap_or_default();
    let end = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split(':').collect();
            let start: u64 = f.get(1)?.parse().ok()?;
            let count: u64 = f.get(2)?.parse().ok()?;
            Some(start + count)
        })
        .max()
        .unwrap_or(0);
    u32::try_from(end.max(200_000)).expect("subordinate ids overflow")
}

#[derive(Debug, PartialEq)]
enum Made {
    /// The user existed before the test: left as it was.
    Existing,
    /// `useradd`: removed with `userdel -r`.
    Useradd,
    /// Written into /etc/passwd and /etc/group by hand (the VM): lines removed.
    Manual,
}

/// A user made for one test, with its own scratch directory (bundles, the
/// `$XDG_RUNTIME_DIR`). Dropping it deletes its containers, ends its processes, removes
/// its files and, if the test created it, the user.
struct User {
    name: String,
    uid: u32,
    gid: u32,
    sub_uid: (u32, u32),
    sub_gid: (u32, u32),
    made: Made,
    /// Lines this test added to /etc/subuid and /etc/subgid.
    added_sub: Vec<(&'static str, String)>,
    /// Owned by the user: bundles and xdg/.
    dir: PathBuf,
    /// Host mount count when the test started.
    mounts: usize,
}

impl User {
    fn new(tag: &str, preferred_uid: u32) -> User {
        let name = format!("l4m-rl-{tag}");
        let guard = accounts();
        let made = match passwd_entry(&name) {
            Some(_) => Made::Existing,
            None => {
                let uid = (preferred_uid..preferred_uid + 200)
                    .find(|u| {
                        passwd_entry(&u.to_string()).is_none() && !group_exists(&u.to_string())
                    })
                    .expect("a free uid");
                let out = Command::new("useradd")
                    .args(["--create-home", "--uid", &uid.to_string(), "--user-group"])
                    .arg(&name)
                    .output()
                    .expect("useradd");
                if out.status.success() {
                    Made::Useradd
                } else {
                    // The VM: useradd wrote /etc/passwd, then could not replace the
                    // bind-mounted /etc/shadow. Write the entries by hand instead.
                    eprintln!(
                        "useradd {name} failed ({}); writing /etc/passwd and /etc/group directly",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                    let mine = |l: &str| l.starts_with(&format!("{name}:"));
                    for f in ACCOUNT_FILES {
                        remove_lines(f, mine);
                    }
                    append_line(
                        "/etc/passwd",
                        &format!("{name}:x:{uid}:{uid}::/nonexistent:/bin/sh"),
                    );
                    append_line("/etc/group", &format!("{name}:x:{uid}:"));
                    Made::Manual
                }
            }
        };
        let entry = passwd_entry(&name).expect("the user exists now");
        let (uid, gid): (u32, u32) = (entry[2].parse().unwrap(), entry[3].parse().unwrap());
        let mut added_sub = Vec::new();
        let mut grant = |file: &'static str, id: u32| match sub_range(file, &name, id) {
            Some(r) if r.1 >= SUB_COUNT => r,
            _ => {
                let start = free_sub_start(file);
                let line = format!("{name}:{start}:{SUB_COUNT}");
                append_line(file, &line);
                added_sub.push((file, line));
                (start, SUB_COUNT)
            }
        };
        let sub_uid = grant("/etc/subuid", uid);
        let sub_gid = grant("/etc/subgid", gid);
        drop(guard);
        let dir = scratch().join(format!(
            "rl-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir(dir.join("xdg")).unwrap();
        fs::set_permissions(dir.join("xdg"), fs::Permissions::from_mode(0o700)).unwrap();
        let user = User {
            name,
            uid,
            gid,
            sub_uid,
            sub_gid,
            made,
            added_sub,
            dir,
            mounts: host_mount_count(),
        };
        user.chown(&user.dir);
        // Every component of the path must be traversable by the user.
        let mut p = user.dir.parent();
        while let Some(d) = p {
            let mode = fs::metadata(d).unwrap().mode();
            assert!(
                mode & 0o001 != 0,
                "{} ({mode:o}) is not traversable by others",
                d.display()
            );
            p = d.parent();
        }
        user
    }

    fn xdg(&self) -> PathBuf {
        self.dir.join("xdg")
    }

    /// The runtime's default state root for this user.
    fn state_root(&self) -> PathBuf {
        self.xdg().join("left4me-runtime")
    }

    fn chown(&self, path: &Path) {
        sh(Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path));
    }

    /// The runtime as this user: `setpriv` (real, effective and saved ids, the user's
    /// groups, a login environment) then `env` with `$XDG_RUNTIME_DIR` (unless `xdg` is
    /// false) and PATH. With `cgroup`, the process first joins that group (as root).
    /// `create` runs under the harness's subreaper, which reaps the container's init
    /// once the runtime has exited (the VM's PID 1 does not reap orphans).
    fn command(&self, xdg: bool, cgroup: Option<&Path>, args: &[&str]) -> Command {
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(group) = cgroup {
            argv.extend(
                [
                    "sh",
                    "-c",
                    "echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"",
                    "sh",
                ]
                .map(Into::into),
            );
            argv.push(group.into());
        }
        if args.contains(&"create") {
            argv.push(subreaper_bin().into());
        }
        argv.push("setpriv".into());
        argv.extend(
            [
                "--reuid".to_string(),
                self.uid.to_string(),
                "--regid".into(),
                self.gid.to_string(),
                "--init-groups".into(),
                "--reset-env".into(),
                "env".into(),
                PATH.into(),
            ]
            .map(Into::into),
        );
        if xdg {
            argv.push(format!("XDG_RUNTIME_DIR={}", self.xdg().display()).into());
        }
        argv.push(runtime_bin().into());
        argv.extend(args.iter().map(Into::into));
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd
    }

    fn rt(&self, args: &[&str]) -> Output {
        run_captured(&mut self.command(true, None, args))
    }

    fn rt_in(&self, group: &Path, args: &[&str]) -> Output {
        run_captured(&mut self.command(true, Some(group), args))
    }

    fn run(&self, b: &UserBundle, id: &str) -> Output {
        self.rt(&["run", "--bundle", b.dir.to_str().unwrap(), id])
    }

    fn status(&self, id: &str) -> Option<String> {
        let out = self.rt(&["state", id]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).expect("state prints JSON");
        v["status"].as_str().map(str::to_string)
    }

    /// Whether a host uid belongs to this user (its own or its subordinate range).
    fn owns_uid(&self, uid: u32) -> bool {
        uid == self.uid || (self.sub_uid.0..self.sub_uid.0 + self.sub_uid.1).contains(&uid)
    }

    /// Processes running as this user's ids: (pid, state line, command line).
    fn processes(&self) -> Vec<String> {
        let mut found = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(status) = fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            let ids = |key: &str| -> Vec<u32> {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|v| {
                        v.split_whitespace()
                            .filter_map(|x| x.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            if ids("Uid:").into_iter().any(|u| self.owns_uid(u)) {
                let state = status
                    .lines()
                    .find(|l| l.starts_with("State:"))
                    .unwrap_or_default()
                    .to_string();
                let cmdline = fs::read(e.path().join("cmdline"))
                    .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                    .unwrap_or_default();
                found.push(format!("{name} [{state}] {cmdline}"));
            }
        }
        found
    }

    /// Mount lines of the host that mention this test's directory.
    fn our_mounts(&self) -> Vec<String> {
        let dir = self.dir.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&dir))
            .map(str::to_string)
            .collect()
    }

    /// The host's mount table is what it was when the test started (the count settles
    /// within 30 s: other root tests on this machine may mount briefly) and no mount
    /// mentions this test's files.
    #[track_caller]
    fn assert_host_mounts_unchanged(&self) {
        assert_eq!(
            self.our_mounts(),
            Vec::<String>::new(),
            "mounts on the host"
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while host_mount_count() != self.mounts && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(host_mount_count(), self.mounts, "host mount count changed");
    }

    /// Nothing of this user's containers is left: no state directory, `list -q` empty,
    /// no process of the user, the host's mount table unchanged.
    #[track_caller]
    fn assert_clean(&self) {
        let left: Vec<String> = fs::read_dir(self.state_root())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            left,
            Vec::<String>::new(),
            "container dirs left in the state root"
        );
        assert_eq!(ok(&self.rt(&["list", "-q"])).trim(), "", "list -q");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut procs = self.processes();
        while !procs.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            procs = self.processes();
        }
        assert_eq!(
            procs,
            Vec::<String>::new(),
            "processes of {} left",
            self.name
        );
        self.assert_host_mounts_unchanged();
    }

    /// A bundle owned by the user: a busybox rootfs copy, `spec --rootless` run as the
    /// user, `sh -c SCRIPT`, and the host directory `out/` bind-mounted at /out.
    fn bundle(&self, script: &str) -> UserBundle {
        let dir = self
            .dir
            .join(format!("bundle-{}", COUNTER.fetch_add(1, Ordering::SeqCst)));
        fs::create_dir(&dir).unwrap();
        copy_busybox_rootfs(&dir.join("rootfs"));
        fs::create_dir(dir.join("out")).unwrap();
        self.chown(&dir);
        ok(&self.rt(&["spec", "--rootless", "--bundle", dir.to_str().unwrap()]));
        let text = fs::read_to_string(dir.join("config.json")).unwrap();
        let mut config: Value = serde_json::from_str(&text).unwrap();
        config["process"]["terminal"] = json!(false);
        config["process"]["args"] = json!(["sh", "-c", script]);
        config["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/out",
            "type": "bind",
            "source": dir.join("out"),
            "options": ["rbind", "rw"]
        }));
        let b = UserBundle {
            dir,
            config,
            uid: self.uid,
            gid: self.gid,
        };
        b.save();
        b
    }

    /// A layered bundle: a store owned by the user with `base` (the busybox rootfs) and
    /// `overlays/marker` (one file, /marker.txt), the upper and work directories in the
    /// bundle, and an empty `rootfs/` where the merged view appears.
    fn layered_bundle(&self, script: &str) -> UserBundle {
        let mut b = self.bundle(script);
        let store = b.dir.join("store");
        fs::create_dir_all(store.join("overlays/marker")).unwrap();
        fs::rename(b.dir.join("rootfs"), store.join("base")).unwrap();
        fs::create_dir(b.dir.join("rootfs")).unwrap();
        fs::write(store.join("overlays/marker/marker.txt"), "from-the-layer\n").unwrap();
        self.chown(&b.dir);
        b.edit(|c| {
            c["root"] = json!({"path": "rootfs", "readonly": false});
            c["left4me"] = json!({"layers": {
                "store": "store",
                "allowedRoots": ["base", "overlays"],
                "lower": [{"path": "overlays/marker"}, {"path": "base"}],
                "upper": "upper",
                "work": "work"
            }});
        });
        b
    }
}

impl Drop for User {
    fn drop(&mut self) {
        // Containers first (as the user, so the runtime cleans up what it made), then
        // whatever process of the user is still there (only this test's user has them).
        if let Ok(entries) = fs::read_dir(self.state_root()) {
            for e in entries.flatten() {
                if let Some(id) = e.file_name().to_str() {
                    let _ = self.rt(&["delete", "--force", id]);
                }
            }
        }
        for _ in 0..50 {
            let procs = self.processes();
            if procs.is_empty() {
                break;
            }
            for p in procs {
                if let Some(pid) = p.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    // SAFETY: kill(2) on a process of this test's own user.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = fs::remove_dir_all(&self.dir);
        let _guard = accounts();
        let mine = |l: &str| l.starts_with(&format!("{}:", self.name));
        match self.made {
            Made::Existing => {}
            Made::Useradd => {
                let out = Command::new("userdel").arg("-r").arg(&self.name).output();
                if let Ok(out) = out {
                    if !out.status.success() {
                        eprintln!(
                            "userdel -r {}: {}",
                            self.name,
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
                remove_lines("/etc/subuid", mine);
                remove_lines("/etc/subgid", mine);
            }
            Made::Manual => {
                for f in ACCOUNT_FILES {
                    remove_lines(f, mine);
                }
            }
        }
        for (file, line) in &self.added_sub {
            remove_lines(file, |l| l == line);
        }
    }
}

/// A bundle in the user's directory (removed with it).
struct UserBundle {
    dir: PathBuf,
    config: Value,
    uid: u32,
    gid: u32,
}

impl UserBundle {
    fn save(&self) {
        let path = self.dir.join("config.json");
        fs::write(&path, serde_json::to_vec_pretty(&self.config).unwrap()).unwrap();
        std::os::unix::fs::chown(&path, Some(self.uid), Some(self.gid)).unwrap();
    }

    fn edit(&mut self, f: impl FnOnce(&mut Value)) {
        f(&mut self.config);
        self.save();
    }

    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }

    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }
}

/// `/proc/self/{uid,gid}_map` lines as numbers.
fn map_lines(text: &str) -> Vec<Vec<u64>> {
    text.lines()
        .map(|l| {
            l.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .filter(|v: &Vec<u64>| v.len() == 3)
        .collect()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// Waits (at most 120 s) for `child` to exit; kills it if it does not.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the runtime did not exit within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cgroup2 hierarchy's mount point, if the host has one.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .find(|m| {
            info.lines()
                .any(|l| l.contains(&format!(" {m} ")) && l.contains(" - cgroup2 "))
        })
        .map(PathBuf::from)
}

/// True on a pure cgroup v2 host with controllers (the VM).
fn v2_controllers() -> bool {
    fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|t| t.contains("memory"))
}

#[test]
fn a_rootless_spec_runs_as_the_callers_own_ids_and_passes_the_exit_status_back() {
    if !can_run() {
        return;
    }
    let user = User::new("own", 1601);
    let b = user.bundle(
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; \
         echo written > /out/file; exit 3",
    );
    // What `spec --rootless` wrote: the caller's ids, once, and a user namespace.
    let mapping = |id: u32| json!([{"containerID": 0, "hostID": id, "size": 1}]);
    assert_eq!(b.config["linux"]["uidMappings"], mapping(user.uid));
    assert_eq!(b.config["linux"]["gidMappings"], mapping(user.gid));
    let namespaces = b.config["linux"]["namespaces"].to_string();
    assert!(namespaces.contains("\"user\""), "{namespaces}");
    assert!(!namespaces.contains("\"network\""), "{namespaces}");

    let out = user.run(&b, "rl-own");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "id -u: {text}");
    assert_eq!(lines.get(1), Some(&"0"), "id -g: {text}");
    let maps = map_lines(&text);
    assert_eq!(
        maps,
        vec![
            vec![0, u64::from(user.uid), 1],
            vec![0, u64::from(user.gid), 1]
        ],
        "{text}"
    );
    let file = b.out().join("file");
    assert_eq!(fs::read_to_string(&file).unwrap(), "written\n");
    assert_eq!(owner(&file), (user.uid, user.gid), "owner on the host");
    // State lived under $XDG_RUNTIME_DIR.
    assert!(
        user.state_root().is_dir(),
        "no state root under XDG_RUNTIME_DIR"
    );
    assert_eq!(owner(&user.state_root()).0, user.uid);
    user.assert_clean();
}

#[test]
fn signals_reach_a_rootless_container_from_kill_and_through_run() {
    if !can_run() {
        return;
    }
    let user = User::new("sig", 1602);
    // Detached: create + start, then `kill ID KILL` as the user.
    let mut b = user.bundle("");
    b.edit(|c| c["process"]["args"] = json!(["sleep", "1000"]));
    ok(&user.rt(&["create", "--bundle", b.path(), "rl-sig"]));
    assert_eq!(user.status("rl-sig").as_deref(), Some("created"));
    ok(&user.rt(&["start", "rl-sig"]));
    assert_eq!(user.status("rl-sig").as_deref(), Some("running"));
    ok(&user.rt(&["kill", "rl-sig", "KILL"]));
    wait_for(|| user.status("rl-sig").as_deref() == Some("stopped"));
    ok(&user.rt(&["delete", "rl-sig"]));
    assert_eq!(user.status("rl-sig"), None);

    // Foreground: `run` forwards SIGTERM and SIGINT to the container's process.
    let fg =
        user.bundle("trap 'exit 7' TERM; trap 'exit 8' INT; touch /out/ready; sleep 1000 & wait");
    for (signal, code) in [(libc::SIGTERM, 7), (libc::SIGINT, 8)] {
        let ready = fg.out().join("ready");
        let _ = fs::remove_file(&ready);
        let log = user.dir.join(format!("fg-{signal}.err"));
        let mut child = user
            .command(true, None, &["run", "--bundle", fg.path(), "rl-fg"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for(|| ready.exists() || matches!(child.try_wait(), Ok(Some(_))));
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "run exited early: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
        // SAFETY: kill(2) on our own child (setpriv exec'd env, which exec'd the runtime).
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let status = wait_exit(&mut child);
        assert_eq!(
            status.code(),
            Some(code),
            "signal {signal}: {}",
            fs::read_to_string(&log).unwrap_or_default()
        );
    }
    user.assert_clean();
}

#[test]
fn a_layered_root_is_mounted_inside_the_users_namespace_and_never_on_the_host() {
    if !can_run() {
        return;
    }
    let user = User::new("layers", 1603);
    let b = user.layered_bundle(
        "cat /marker.txt > /seen.tmp; id -u >> /seen.tmp; mv /seen.tmp /seen; sleep 1000",
    );
    ok(&user.rt(&["create", "--bundle", b.path(), "rl-layers"]));
    // The overlay exists (init mounted it), but only inside the container.
    user.assert_host_mounts_unchanged();
    assert_eq!(
        fs::read_dir(b.dir.join("rootfs")).unwrap().count(),
        0,
        "root.path is not empty on the host"
    );
    ok(&user.rt(&["start", "rl-layers"]));
    let seen = b.dir.join("upper/seen");
    wait_for(|| seen.exists());
    assert_eq!(fs::read_to_string(&seen).unwrap(), "from-the-layer\n0\n");
    assert_eq!(owner(&seen), (user.uid, user.gid), "the write's owner");
    assert_eq!(owner(&b.dir.join("upper")).0, user.uid, "upper's owner");
    // The lower layers are untouched.
    assert!(!b.dir.join("store/base/seen").exists());
    user.assert_host_mounts_unchanged();
    ok(&user.rt(&["kill", "rl-layers", "KILL"]));
    wait_for(|| user.status("rl-layers").as_deref() == Some("stopped"));
    ok(&user.rt(&["delete", "rl-layers"]));
    // `delete` keeps the upper layer.
    assert!(seen.exists(), "the upper layer was not kept");
    assert_eq!(fs::read_dir(b.dir.join("rootfs")).unwrap().count(), 0);
    user.assert_clean();
}

#[test]
fn an_idmapped_layer_is_refused_rootless_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let user = User::new("idmap", 1604);
    let mut b = user.layered_bundle("echo should-not-run");
    let (uid, gid) = (user.uid, user.gid);
    b.edit(|c| {
        let layer = &mut c["left4me"]["layers"]["lower"][0];
        layer["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}]);
        layer["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}]);
    });
    let out = user.run(&b, "rl-idmap");
    let err = fails_with(&out, "asks for an idmap");
    assert!(err.contains("rootless: layer overlays/marker"), "{err}");
    assert!(!stdout(&out).contains("should-not-run"));
    for dir in ["upper", "work"] {
        assert!(!b.dir.join(dir).exists(), "{dir}/ was created");
    }
    assert_eq!(fs::read_dir(b.dir.join("rootfs")).unwrap().count(), 0);
    assert_eq!(user.status("rl-idmap"), None);
    user.assert_clean();
}

#[test]
fn subordinate_ids_are_mapped_through_newuidmap_within_the_users_grant() {
    if !can_run() {
        return;
    }
    let user = User::new("subid", 1605);
    let (uid, gid, su, sg) = (user.uid, user.gid, user.sub_uid.0, user.sub_gid.0);
    let maps = |own: u32, sub: u32| {
        json!([
            {"containerID": 0, "hostID": own, "size": 1},
            {"containerID": 1, "hostID": sub, "size": SUB_COUNT}
        ])
    };
    let mut b = user.bundle("cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /out/by-one");
    fs::set_permissions(b.out(), fs::Permissions::from_mode(0o777)).unwrap();
    b.edit(|c| {
        c["linux"]["uidMappings"] = maps(uid, su);
        c["linux"]["gidMappings"] = maps(gid, sg);
        c["process"]["user"] = json!({"uid": 1, "gid": 1});
    });
    let text = ok(&user.run(&b, "rl-subid"));
    let want = |own: u32, sub: u32| {
        vec![
            vec![0, u64::from(own), 1],
            vec![1, u64::from(sub), u64::from(SUB_COUNT)],
        ]
    };
    let got = map_lines(&text);
    assert_eq!(got.len(), 4, "{text}");
    assert_eq!(got[..2], want(uid, su)[..], "uid_map: {text}");
    assert_eq!(got[2..], want(gid, sg)[..], "gid_map: {text}");
    assert_eq!(text.lines().last(), Some("1"), "id -u: {text}");
    assert_eq!(
        owner(&b.out().join("by-one")),
        (su, sg),
        "container id 1 is the first subordinate id on the host"
    );
    user.assert_clean();

    // Past the grant: newuidmap (then newgidmap) refuses, and nothing is left.
    fs::remove_file(b.out().join("by-one")).unwrap();
    let beyond = su + SUB_COUNT;
    b.edit(|c| {
        c["linux"]["uidMappings"] = json!([
            {"containerID": 0, "hostID": uid, "size": 1},
            {"containerID": 1, "hostID": beyond, "size": 10}
        ]);
    });
    let err = fails_with(&user.run(&b, "rl-subid-u"), "newuidmap");
    assert!(err.contains("/etc/subuid"), "{err}");
    assert_eq!(user.status("rl-subid-u"), None);
    user.assert_clean();
    let beyond = sg + SUB_COUNT;
    b.edit(|c| {
        c["linux"]["uidMappings"] = maps(uid, su);
        c["linux"]["gidMappings"] = json!([
            {"containerID": 0, "hostID": gid, "size": 1},
            {"containerID": 1, "hostID": beyond, "size": 10}
        ]);
    });
    let err = fails_with(&user.run(&b, "rl-subid-g"), "newgidmap");
    assert!(err.contains("/etc/subgid"), "{err}");
    user.assert_clean();
    assert!(!b.out().join("by-one").exists(), "the process ran");
}

#[test]
fn without_xdg_runtime_dir_or_root_the_runtime_refuses_and_policy_is_for_root_only() {
    if !can_run() {
        return;
    }
    let user = User::new("env", 1606);
    let b = user.bundle("echo ran");
    let out = run_captured(&mut user.command(false, None, &["list"]));
    fails_with(&out, "XDG_RUNTIME_DIR");
    let out =
        run_captured(&mut user.command(false, None, &["run", "--bundle", b.path(), "rl-noxdg"]));
    fails_with(&out, "XDG_RUNTIME_DIR");
    assert_eq!(stdout(&out), "");
    // An explicit --root needs no XDG_RUNTIME_DIR.
    let root = user.dir.join("explicit-root");
    let out = run_captured(&mut user.command(
        false,
        None,
        &[
            "--root",
            root.to_str().unwrap(),
            "run",
            "--bundle",
            b.path(),
            "rl-root",
        ],
    ));
    assert_eq!(ok(&out), "ran\n");
    assert!(root.is_dir());
    assert_eq!(
        fs::read_dir(&root).unwrap().count(),
        0,
        "state left in --root"
    );

    // A policy must not be chosen by the user it constrains.
    let policy = user.dir.join("policy.json");
    fs::write(&policy, "{}").unwrap();
    let out = user.rt(&[
        "--policy",
        policy.to_str().unwrap(),
        "run",
        "--bundle",
        b.path(),
        "rl-policy",
    ]);
    fails_with(&out, "--policy is for root");
    assert_eq!(stdout(&out), "");
    user.assert_clean();
}

/// A cgroup subtree made for one test (VM only), removed with everything in it.
struct CgroupTree {
    base: PathBuf,
    /// Controllers this test enabled in the root's cgroup.subtree_control.
    enabled_at_root: Vec<&'static str>,
}

impl CgroupTree {
    fn new(tag: &str) -> CgroupTree {
        let base = PathBuf::from(format!(
            "/sys/fs/cgroup/l4m-rl-{tag}-{}",
            std::process::id()
        ));
        let root_control = fs::read_to_string("/sys/fs/cgroup/cgroup.subtree_control").unwrap();
        let enabled_at_root: Vec<&'static str> = ["memory", "pids"]
            .into_iter()
            .filter(|c| !root_control.split_whitespace().any(|x| x == *c))
            .collect();
        for c in &enabled_at_root {
            fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("+{c}")).unwrap();
        }
        fs::create_dir(&base).unwrap();
        CgroupTree {
            base,
            enabled_at_root,
        }
    }

    /// `base/REL`, created (as root), and handed to `user` as systemd's Delegate=yes
    /// does: the directory and its cgroup.procs, cgroup.subtree_control and
    /// cgroup.threads.
    fn group(&self, rel: &str, user: Option<&User>) -> PathBuf {
        let dir = self.base.join(rel);
        fs::create_dir(&dir).unwrap();
        if let Some(u) = user {
            for f in [
                "",
                "cgroup.procs",
                "cgroup.subtree_control",
                "cgroup.threads",
            ] {
                let p = if f.is_empty() {
                    dir.clone()
                } else {
                    dir.join(f)
                };
                std::os::unix::fs::chown(&p, Some(u.uid), Some(u.gid)).unwrap();
            }
        }
        dir
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        let _ = fs::write(self.base.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && fs::read_to_string(self.base.join("cgroup.events"))
                .is_ok_and(|t| t.contains("populated 1"))
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Deepest first.
        let mut dirs = vec![self.base.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(entries) = fs::read_dir(&dirs[i]) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        dirs.push(e.path());
                    }
                }
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            if let Err(e) = fs::remove_dir(d) {
                eprintln!("removing {}: {e}", d.display());
            }
        }
        for c in &self.enabled_at_root {
            let _ = fs::write("/sys/fs/cgroup/cgroup.subtree_control", format!("-{c}"));
        }
    }
}

#[test]
fn without_a_delegated_cgroup_a_memory_limit_fails_naming_delegate_yes() {
    if !can_run() {
        return;
    }
    let Some(mount) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 hierarchy here");
        return;
    };
    let tree = v2_controllers().then(|| CgroupTree::new("nodeleg"));
    let user = User::new("nodeleg", 1607);
    // The user's runtime sits in a group owned by root: in the VM one made for this
    // test; on the host the test's own group (never created or changed here).
    let group = match &tree {
        Some(t) => t.group("locked", None),
        None => {
            let own = fs::read_to_string("/proc/self/cgroup").unwrap();
            let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            mount.join(rel.trim_start_matches('/'))
        }
    };
    let meta = fs::metadata(&group).unwrap();
    assert!(
        meta.uid() == 0 && meta.mode() & 0o002 == 0,
        "{} is writable by others",
        group.display()
    );
    let run = |b: &UserBundle, id: &str| match &tree {
        Some(_) => user.rt_in(&group, &["run", "--bundle", b.path(), id]),
        None => user.run(b, id),
    };
    let mut limited = user.bundle("echo should-not-run");
    limited.edit(|c| c["linux"]["resources"] = json!({"memory": {"limit": 67108864}}));
    let out = run(&limited, "rl-nodeleg");
    let err = fails_with(&out, "Delegate=yes");
    assert!(err.contains("delegated"), "{err}");
    assert!(!stdout(&out).contains("should-not-run"));
    user.assert_clean();
    // Without limits it needs no group, and runs.
    let free = user.bundle("echo ran; cat /proc/self/cgroup");
    let text = ok(&run(&free, "rl-nodeleg-free"));
    assert_eq!(text.lines().next(), Some("ran"), "{text}");
    if let Some(t) = &tree {
        assert_eq!(
            fs::read_dir(&group)
                .unwrap()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .count(),
            0,
            "a group was made in the root-owned group"
        );
        assert!(t.base.is_dir());
    }
    user.assert_clean();
    drop(user);
    if let Some(t) = tree {
        let base = t.base.clone();
        drop(t);
        assert!(!base.exists(), "{} left", base.display());
    }
}

#[test]
fn a_delegated_cgroup_subtree_takes_a_memory_limit() {
    if !can_run() {
        return;
    }
    if !v2_controllers() {
        eprintln!("skipped: no cgroup v2 controllers here (the VM suite runs this)");
        return;
    }
    let tree = CgroupTree::new("deleg");
    // systemd would enable these for a delegated unit's parent.
    fs::write(tree.base.join("cgroup.subtree_control"), "+memory +pids").unwrap();
    let user = User::new("deleg", 1608);
    tree.group("user", Some(&user));
    let shell = tree.group("user/shell", Some(&user));
    let mut b =
        user.bundle("cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max /proc/self/cgroup");
    b.edit(|c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 64}});
        c["linux"]["cgroupsPath"] = json!("rl-ctr");
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
        }));
    });
    let text = ok(&user.rt_in(&shell, &["run", "--bundle", b.path(), "rl-deleg"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["67108864", "64", "0::/"], "{text}");
    // The runtime made the group under its own (delegated) one, and removed it.
    assert!(
        !shell.join("rl-ctr").exists(),
        "the container's group is left"
    );
    // Detached, the limit shows from the host while it runs. The first runtime moved to
    // shell/supervisor to enable controllers in shell/ (which now takes no process): a
    // runtime started from that leaf puts its container next to it.
    let supervisor = shell.join("supervisor");
    assert!(supervisor.is_dir(), "no supervisor leaf");
    let mut d = user.bundle("");
    d.edit(|c| {
        c["process"]["args"] = json!(["sleep", "1000"]);
        c["linux"]["resources"] = json!({"memory": {"limit": 33554432}});
        c["linux"]["cgroupsPath"] = json!("rl-ctr2");
    });
    ok(&user.rt_in(&supervisor, &["create", "--bundle", d.path(), "rl-deleg2"]));
    let group = shell.join("rl-ctr2");
    assert_eq!(
        fs::read_to_string(group.join("memory.max")).unwrap().trim(),
        "33554432"
    );
    let init = {
        let out = ok(&user.rt(&["state", "rl-deleg2"]));
        let v: Value = serde_json::from_str(&out).unwrap();
        v["pid"].as_i64().unwrap()
    };
    assert_eq!(
        fs::read_to_string(group.join("cgroup.procs"))
            .unwrap()
            .trim(),
        init.to_string()
    );
    assert_eq!(owner(&group).0, user.uid, "the group's owner");
    ok(&user.rt(&["delete", "--force", "rl-deleg2"]));
    assert!(
        !group.exists(),
        "the container's group is left after delete"
    );
    user.assert_clean();
    drop(user);
    let base = tree.base.clone();
    drop(tree);
    assert!(!base.exists(), "{} left", base.display());
}
