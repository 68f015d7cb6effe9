//! The container's root filesystem, observed from inside: read-only root, pivot_root,
//! propagation, `mounts[]` (binds, tmpfs, special filesystems), `/dev`, masked and
//! read-only paths, path escapes, and that the host's mount table is left untouched.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// One line of /proc/self/mountinfo.
#[derive(Debug)]
struct Mnt {
    root: String,
    point: String,
    opts: String,
    optional: Vec<String>,
    fstype: String,
    sopts: String,
}

impl Mnt {
    /// All of `opts` among the per-mount options.
    fn has(&self, opts: &[&str]) -> bool {
        opts.iter().all(|o| self.opts.split(',').any(|x| x == *o))
    }
    /// All of `opts` among the superblock options.
    fn has_super(&self, opts: &[&str]) -> bool {
        opts.iter().all(|o| self.sopts.split(',').any(|x| x == *o))
    }
    /// Whether an optional field starts with `tag` ("shared:", "master:", ...).
    fn tagged(&self, tag: &str) -> bool {
        self.optional.iter().any(|o| o.starts_with(tag))
    }
}

/// The mountinfo lines in `text` (other output lines are skipped).
fn mountinfo(text: &str) -> Vec<Mnt> {
    text.lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            (f.len() >= 6 && g.len() >= 3).then(|| Mnt {
                root: f[3].into(),
                point: f[4].into(),
                opts: f[5].into(),
                optional: f[6..].iter().map(|s| s.to_string()).collect(),
                fstype: g[0].into(),
                sopts: g[2].into(),
            })
        })
        .collect()
}

/// The topmost mount at `point`.
#[track_caller]
fn at<'a>(ms: &'a [Mnt], point: &str) -> &'a Mnt {
    ms.iter()
        .rev()
        .find(|m| m.point == point)
        .unwrap_or_else(|| panic!("no mount at {point} in {ms:#?}"))
}

#[track_caller]
fn contains_all(out: &str, needles: &[&str]) {
    for n in needles {
        assert!(out.contains(n), "{n:?} missing from:\n{out}");
    }
}

/// Lines of the host's mountinfo that mention `path`.
fn host_lines_mentioning(path: &Path) -> Vec<String> {
    let needle = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .map(String::from)
        .collect()
}

fn uniq(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    format!("{tag}-{}-{n}", std::process::id())
}

/// Host-side mounts (and optionally a scratch directory) undone when dropped.
#[derive(Default)]
struct Host {
    dir: Option<PathBuf>,
    mounts: Vec<PathBuf>,
}

impl Host {
    /// A fresh empty directory on the host.
    fn dir(tag: &str) -> Host {
        let dir = scratch().join(uniq(tag));
        std::fs::create_dir_all(&dir).unwrap();
        Host {
            dir: Some(dir),
            mounts: Vec::new(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.clone().unwrap()
    }

    /// `mount ARGS TARGET` (undone on drop); `shared` gives it a peer group of its own.
    fn mount(&mut self, args: &[&str], target: &Path, shared: bool) {
        std::fs::create_dir_all(target).unwrap();
        mount_cmd(args, target);
        self.mounts.push(target.to_path_buf());
        if shared {
            mount_cmd(&["--make-private"], target);
            mount_cmd(&["--make-shared"], target);
        }
    }

    /// A small tmpfs at `target`.
    fn tmpfs(&mut self, target: &Path, shared: bool) {
        self.mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], target, shared);
    }

    /// The bundle directory bound onto itself and made shared, as on systemd hosts,
    /// where mount events would flow both ways if the runtime did not isolate them.
    fn shared_bundle(b: &Bundle) -> Host {
        let mut h = Host::default();
        h.mount(&["--bind", b.dir.to_str().unwrap()], &b.dir, true);
        h
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            let c = std::ffi::CString::new(m.to_str().unwrap()).unwrap();
            // SAFETY: a valid C string; failure only leaves a mount behind.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[track_caller]
fn mount_cmd(args: &[&str], target: &Path) {
    let mut cmd = std::process::Command::new("mount");
    let out = cmd.args(args).arg(target).output().unwrap();
    assert!(out.status.success(), "mount {args:?}: {}", stderr(&out));
}

/// A bind mount entry.
fn bind(dest: &str, source: &Path, options: &[&str]) -> Value {
    json!({"destination": dest, "type": "bind", "source": source, "options": options})
}

/// A config edit appending `extra` to `mounts`.
fn with_mounts(extra: Vec<Value>) -> impl FnOnce(&mut Value) {
    move |c: &mut Value| c["mounts"].as_array_mut().unwrap().extend(extra)
}

/// Runs `script` in a fresh container (config edited by `edit`) and returns its stdout.
#[track_caller]
fn run_script(id: &str, script: &str, edit: impl FnOnce(&mut Value)) -> String {
    let rt = Runtime::new();
    let mut b = Bundle::shell(script);
    b.edit(edit);
    ok(&rt.run(&b, id))
}

/// Checks that the container sees only its own mounts, with its rootfs at `/`.
#[track_caller]
fn assert_only_container_mounts(out: &str, b: &Bundle) {
    let ms = mountinfo(out);
    let roots: Vec<&Mnt> = ms.iter().filter(|m| m.point == "/").collect();
    assert_eq!(roots.len(), 1, "one mount at /: {ms:#?}");
    let name = b.dir.file_name().unwrap().to_str().unwrap();
    let root = &roots[0].root;
    assert!(root.ends_with(&format!("{name}/rootfs")), "/ is {root}");
    for m in ms.iter().filter(|m| m.point != "/") {
        let ours = ["/proc", "/dev", "/sys"]
            .iter()
            .any(|p| m.point == *p || m.point.starts_with(&format!("{p}/")));
        assert!(ours, "a host mount leaked in: {m:?}");
        assert!(!m.root.contains(name), "bundle path leaked: {m:?}");
    }
    assert!(ms.len() < 40, "too many mounts: {}", ms.len());
    assert!(out.contains("MARKER-OK"), "rootfs content not at /: {out}");
}

#[test]
fn root_readonly_decides_whether_root_is_writable() {
    if !can_run() {
        return;
    }
    for readonly in [true, false] {
        let rt = Runtime::new();
        let mut b = Bundle::shell("cat /proc/self/mountinfo; touch /x 2>&1; echo rc=$?");
        b.edit(|c| c["root"]["readonly"] = json!(readonly));
        let out = ok(&rt.run(&b, &format!("root-ro-{readonly}")));
        let ms = mountinfo(&out);
        let root = at(&ms, "/");
        assert_eq!(root.has(&["ro"]), readonly, "{root:?}");
        assert_eq!(out.contains("Read-only file system"), readonly, "{out}");
        assert!(
            out.contains(if readonly { "rc=1" } else { "rc=0" }),
            "{out}"
        );
        assert_eq!(b.rootfs().join("x").exists(), !readonly);
    }
}

#[test]
fn pivot_root_and_no_pivot_hide_the_hosts_mounts() {
    if !can_run() {
        return;
    }
    for flags in [&[][..], &["--no-pivot"][..]] {
        let rt = Runtime::new();
        let b = Bundle::shell("cat /proc/self/mountinfo; cat /marker; ls /");
        std::fs::write(b.rootfs().join("marker"), "MARKER-OK\n").unwrap();
        let dir = b.dir.to_str().unwrap();
        let args = [&["run"], flags, &["--bundle", dir, "pivot"]].concat();
        let out = ok(&rt.cmd(&args));
        assert_only_container_mounts(&out, &b);
        assert!(out.contains("\nbin\n"), "{flags:?}: {out}");
    }
}

#[test]
fn rootfs_propagation_sets_the_propagation_of_root() {
    if !can_run() {
        return;
    }
    // (rootfsPropagation, expect shared:, expect master:), with the bundle on a shared
    // host mount so that a slave has a master to follow. Whether a shared root also
    // follows the host is left open: runc makes the rootfs's parent private first.
    let cases = [
        (None, false, Some(true)), // runc's default: rslave
        (Some("private"), false, Some(false)),
        (Some("rprivate"), false, Some(false)),
        (Some("rslave"), false, Some(true)),
        (Some("shared"), true, None),
        (Some("rshared"), true, None),
    ];
    for (i, (prop, shared, master)) in cases.into_iter().enumerate() {
        let rt = Runtime::new();
        let mut b = Bundle::shell("cat /proc/self/mountinfo");
        if let Some(p) = prop {
            b.edit(|c| c["linux"]["rootfsPropagation"] = json!(p));
        }
        let _shared = Host::shared_bundle(&b);
        let out = ok(&rt.run(&b, &format!("rprop{i}")));
        let ms = mountinfo(&out);
        let root = at(&ms, "/");
        assert_eq!(root.tagged("shared:"), shared, "{prop:?}: {root:?}");
        if let Some(master) = master {
            assert_eq!(root.tagged("master:"), master, "{prop:?}: {root:?}");
        }
        if prop == Some("rshared") {
            let proc_ = at(&ms, "/proc");
            assert!(proc_.tagged("shared:"), "rshared is recursive: {proc_:?}");
        }
    }
}

#[test]
fn container_mounts_never_reach_the_host_even_from_a_shared_bundle() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::shell("sleep 60");
    b.edit(|c| c["linux"]["rootfsPropagation"] = json!("rshared"));
    let _shared = Host::shared_bundle(&b);
    let before = host_lines_mentioning(&b.dir);
    assert_eq!(before.len(), 1, "{before:#?}");
    ok(&rt.create(&b, "noleak"));
    ok(&rt.cmd(&["start", "noleak"]));
    assert_eq!(host_lines_mentioning(&b.dir), before, "mounts leaked");
    ok(&rt.cmd(&["delete", "--force", "noleak"]));
    assert_eq!(host_lines_mentioning(&b.dir), before);
}

#[test]
fn binds_of_a_dir_and_a_file_readonly() {
    if !can_run() {
        return;
    }
    let h = Host::dir("src-robind");
    let conf = h.path().join("app.conf");
    std::fs::write(h.path().join("file"), "from-host\n").unwrap();
    std::fs::write(&conf, "key=value\n").unwrap();
    let script = "cat /in/file; { echo x > /in/file; } 2>&1; touch /in/new 2>&1; \
                  stat -c '%F' /new/dir/app.conf; cat /new/dir/app.conf; \
                  cat /proc/self/mountinfo";
    let out = run_script("robind", script, |c| {
        c["root"]["readonly"] = json!(false);
        with_mounts(vec![
            bind("/in", &h.path(), &["bind", "ro"]),
            // A file source onto a destination that does not exist yet (nor its parents).
            bind("/new/dir/app.conf", &conf, &["bind", "ro"]),
        ])(c)
    });
    assert!(out.starts_with("from-host\n"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 2, "{out}");
    assert!(out.contains("\nregular file\nkey=value\n"), "{out}");
    let ms = mountinfo(&out);
    assert!(at(&ms, "/in").has(&["ro"]) && at(&ms, "/new/dir/app.conf").has(&["ro"]));
    let file = std::fs::read_to_string(h.path().join("file")).unwrap();
    assert_eq!(file, "from-host\n");
    assert!(!h.path().join("new").exists());
}

#[test]
fn rbind_carries_submounts_bind_does_not_and_the_host_is_untouched() {
    if !can_run() {
        return;
    }
    let mut h = Host::dir("src-rbind");
    let sub = h.path().join("sub");
    h.tmpfs(&sub, false);
    std::fs::write(sub.join("inner"), "submount\n").unwrap();
    let script = "cat /r/sub/inner; echo n=$(ls -A /n/sub | wc -l); cat /proc/self/mountinfo";
    let rt = Runtime::new();
    let mut b = Bundle::shell(script);
    b.edit(with_mounts(vec![
        bind("/r", &h.path(), &["rbind"]),
        bind("/n", &h.path(), &["bind"]),
    ]));
    let src_before = host_lines_mentioning(&h.path());
    let out = ok(&rt.run(&b, "rbind"));
    assert!(out.starts_with("submount\n"), "{out}");
    assert!(out.contains("n=0\n"), "bind shows the submount: {out}");
    let ms = mountinfo(&out);
    assert_eq!(at(&ms, "/r/sub").fstype, "tmpfs");
    assert!(!ms.iter().any(|m| m.point == "/n/sub"), "{ms:#?}");
    // Nothing leaked into (or was removed from) the host's mount table.
    assert_eq!(host_lines_mentioning(&b.dir), Vec::<String>::new());
    assert_eq!(host_lines_mentioning(&h.path()), src_before);
}

#[test]
fn rro_is_recursive_and_ro_is_not() {
    if !can_run() {
        return;
    }
    let mut h = Host::dir("src-rro");
    h.tmpfs(&h.path().join("sub"), false);
    let script = "touch /a/sub/x 2>&1; echo a=$?; touch /c/sub/y && echo c=ok; \
                  cat /proc/self/mountinfo";
    let out = run_script(
        "rro",
        script,
        with_mounts(vec![
            bind("/a", &h.path(), &["rbind", "rro"]),
            bind("/c", &h.path(), &["rbind", "ro"]),
        ]),
    );
    let ms = mountinfo(&out);
    assert!(at(&ms, "/a").has(&["ro"]), "{out}");
    assert!(at(&ms, "/a/sub").has(&["ro"]), "rro not recursive: {out}");
    contains_all(&out, &["Read-only file system", "a=1", "c=ok"]);
    // Plain "ro" on an rbind applies to the top mount only (runc remounts just it).
    assert!(at(&ms, "/c").has(&["ro"]) && at(&ms, "/c/sub").has(&["rw"]));
}

#[test]
fn tmpfs_options_and_nested_destination() {
    if !can_run() {
        return;
    }
    let script = "stat -c mode=%a /t/u/v; printf '#!/bin/sh\\necho ran\\n' > /t/u/v/s; \
                  chmod +x /t/u/v/s; /t/u/v/s 2>&1; echo rc=$?; cat /proc/self/mountinfo";
    let tmpfs = json!({"destination": "/t/u/v", "type": "tmpfs", "source": "tmpfs",
                       "options": ["size=1m", "mode=0700", "nosuid", "nodev", "noexec"]});
    let out = run_script("tmpfs", script, with_mounts(vec![tmpfs]));
    let ms = mountinfo(&out);
    let m = at(&ms, "/t/u/v");
    assert_eq!(m.fstype, "tmpfs");
    assert!(m.has(&["rw", "nosuid", "nodev", "noexec"]), "{m:?}");
    assert!(m.has_super(&["size=1024k", "mode=700"]), "{m:?}");
    assert!(out.starts_with("mode=700\n"), "{out}");
    contains_all(&out, &["Permission denied", "rc=126"]);
    assert!(!out.contains("\nran\n"), "noexec ignored: {out}");
}

/// A shared host tmpfs with a submount, as a bind source for propagation tests.
fn shared_source(tag: &str) -> (Host, PathBuf) {
    let mut h = Host::dir(tag);
    let src = h.path().join("src");
    h.tmpfs(&src, true);
    h.tmpfs(&src.join("sub"), false);
    (h, src)
}

#[test]
fn mount_options_rslave_and_rprivate() {
    if !can_run() {
        return;
    }
    let (_h, src) = shared_source("src-prop");
    let out = run_script(
        "mprop",
        "cat /proc/self/mountinfo",
        with_mounts(vec![
            bind("/pl", &src, &["rbind", "rslave"]),
            bind("/pp", &src, &["rbind", "rprivate"]),
        ]),
    );
    let ms = mountinfo(&out);
    for p in ["/pl", "/pl/sub"] {
        let m = at(&ms, p);
        assert!(m.tagged("master:") && !m.tagged("shared:"), "{m:?}");
    }
    for p in ["/pp", "/pp/sub"] {
        assert!(at(&ms, p).optional.is_empty(), "{:?}", at(&ms, p));
    }
}

#[test]
fn mount_option_rshared_makes_the_mount_shared() {
    if !can_run() {
        return;
    }
    let (_h, src) = shared_source("src-rshared");
    let mount = bind("/ps", &src, &["rbind", "rshared"]);
    let out = run_script(
        "mshared",
        "cat /proc/self/mountinfo",
        with_mounts(vec![mount]),
    );
    let ms = mountinfo(&out);
    for p in ["/ps", "/ps/sub"] {
        let m = at(&ms, p);
        assert!(m.tagged("shared:"), "{p} not shared: {m:?}");
    }
}

#[test]
fn default_special_filesystems_are_mounted() {
    if !can_run() {
        return;
    }
    let script = "cat /proc/self/mountinfo; grep '^0::' /proc/self/cgroup; \
         test -f /sys/fs/cgroup/cgroup.controllers && echo controllers; \
         stat -c 'ptmx=%a' /dev/pts/ptmx; stat -c 'shm=%a' /dev/shm";
    let out = run_script("specialfs", script, |_| {});
    let ms = mountinfo(&out);
    for (point, fstype) in [
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
        ("/sys/fs/cgroup", "cgroup2"),
    ] {
        assert_eq!(at(&ms, point).fstype, fstype, "{point}");
    }
    let pts = at(&ms, "/dev/pts");
    assert!(pts.has(&["nosuid", "noexec"]), "{pts:?}");
    assert!(
        pts.has_super(&["ptmxmode=666", "mode=620", "gid=5"]),
        "{pts:?}"
    );
    assert!(at(&ms, "/sys").has(&["ro", "nosuid", "nodev", "noexec"]));
    let cg = at(&ms, "/sys/fs/cgroup");
    assert!(cg.has(&["ro", "nosuid", "nodev", "noexec"]), "{cg:?}");
    let dev = at(&ms, "/dev");
    assert!(
        dev.has(&["nosuid"]) && dev.has_super(&["mode=755"]),
        "{dev:?}"
    );
    assert!(at(&ms, "/dev/shm").has(&["nosuid", "nodev", "noexec"]));
    // Own cgroup namespace: the container's group is the root of /sys/fs/cgroup.
    contains_all(
        &out,
        &["\n0::/\n", "controllers\n", "ptmx=666\n", "shm=1777\n"],
    );
}

#[test]
fn dev_has_the_standard_nodes_and_links() {
    if !can_run() {
        return;
    }
    let script = "for d in null zero full random urandom tty; do \
         stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do echo \"$l->$(readlink /dev/$l)\"; done; \
         head -c 64 /dev/zero | od -An -v -tx1 | tr -d ' \\n'; echo; \
         { echo x > /dev/full; } 2>&1; echo full=$?; echo x > /dev/null && echo null-ok; \
         test $(head -c 32 /dev/urandom | wc -c) = 32 && echo urandom-ok; \
         stat -c 'pts %F' /dev/pts";
    let out = run_script("devnodes", script, |_| {});
    let nodes = "null 1:3 zero 1:5 full 1:7 random 1:8 urandom 1:9 tty 5:0";
    for pair in nodes.split(' ').collect::<Vec<_>>().chunks(2) {
        let (d, majmin) = (pair[0], pair[1]);
        let line = format!("/dev/{d} character special file {majmin} 666\n");
        assert!(out.contains(&line), "{line:?} missing: {out}");
    }
    contains_all(
        &out,
        &[
            "fd->/proc/self/fd\n",
            "stdin->/proc/self/fd/0\n",
            "stdout->/proc/self/fd/1\n",
            "stderr->/proc/self/fd/2\n",
            "ptmx->pts/ptmx\n",
            &format!("\n{}\n", "00".repeat(64)),
            "No space left on device",
            "full=1\n",
            "null-ok\n",
            "urandom-ok\n",
            "pts directory\n",
        ],
    );
}

#[test]
fn linux_devices_are_created_with_their_mode_and_owner() {
    if !can_run() {
        return;
    }
    let script = "stat -c '%n %F %t:%T %a %u:%g' /dev/mydev /dev/sub/d2 /dev/myblk /dev/myfifo; \
                  echo x > /dev/mydev && echo write-ok";
    let out = run_script("devices", script, |c| {
        c["linux"]["devices"] = json!([
            {"path": "/dev/mydev", "type": "c", "major": 1, "minor": 3,
             "fileMode": 438, "uid": 0, "gid": 0},
            {"path": "/dev/sub/d2", "type": "c", "major": 1, "minor": 5,
             "fileMode": 0o640, "uid": 1000, "gid": 1001},
            {"path": "/dev/myblk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600},
            {"path": "/dev/myfifo", "type": "p", "fileMode": 0o644}
        ]);
    });
    contains_all(
        &out,
        &[
            "/dev/mydev character special file 1:3 666 0:0\n",
            "/dev/sub/d2 character special file 1:5 640 1000:1001\n",
            "/dev/myblk block special file 7:0 600 0:0\n",
            "/dev/myfifo fifo 0:0 644 0:0\n",
            "write-ok\n",
        ],
    );
}

#[test]
fn masked_paths_hide_files_and_directories() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let script = "echo secret=[$(cat /etc/secret)]; echo hidden=$(ls -A /data/hidden | wc -l); \
         touch /data/hidden/x 2>&1; \
         for p in /proc/acpi /proc/keys /proc/timer_list /sys/firmware; do \
           if [ -d $p ]; then echo \"$p dir $(ls -A $p | wc -l)\"; \
           elif [ -e $p ]; then echo \"$p file $(head -c 100 $p | wc -c)\"; fi; done; \
         echo visible=$(cat /data/visible)";
    let mut b = Bundle::shell(script);
    let r = b.rootfs();
    std::fs::create_dir_all(r.join("data/hidden/deeper")).unwrap();
    std::fs::write(r.join("etc/secret"), "topsecret\n").unwrap();
    std::fs::write(r.join("data/hidden/inner"), "x\n").unwrap();
    std::fs::write(r.join("data/visible"), "shown\n").unwrap();
    b.edit(|c| {
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        for p in ["/etc/secret", "/data/hidden", "/does/not/exist"] {
            masked.push(json!(p));
        }
    });
    let out = ok(&rt.run(&b, "masked"));
    let expect = ["secret=[]\n", "hidden=0\n", "Read-only", "visible=shown\n"];
    contains_all(&out, &expect);
    for l in out.lines().filter(|l| l.starts_with('/')) {
        assert!(l.ends_with(" 0"), "default masked path not empty: {l}");
    }
}

#[test]
fn readonly_paths_refuse_writes_but_allow_reads() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let script = "cat /data/ro/f; { echo y > /data/ro/f; } 2>&1; touch /data/ro/new 2>&1; \
         touch /data/rw/new && echo rw-ok; cat /proc/sys/kernel/ostype; \
         { echo dom > /proc/sys/kernel/domainname; } 2>&1; cat /proc/self/mountinfo";
    let mut b = Bundle::shell(script);
    std::fs::create_dir_all(b.rootfs().join("data/ro")).unwrap();
    std::fs::create_dir_all(b.rootfs().join("data/rw")).unwrap();
    std::fs::write(b.rootfs().join("data/ro/f"), "orig\n").unwrap();
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        let ro = c["linux"]["readonlyPaths"].as_array_mut().unwrap();
        ro.push(json!("/data/ro"));
    });
    let out = ok(&rt.run(&b, "ropaths"));
    assert!(out.starts_with("orig\n"), "{out}");
    assert_eq!(out.matches("Read-only file system").count(), 3, "{out}");
    assert!(out.contains("rw-ok\nLinux\n"), "{out}");
    let ms = mountinfo(&out);
    for p in ["/data/ro", "/proc/sys"] {
        let m = at(&ms, p);
        assert!(m.has(&["ro", "nosuid", "nodev", "noexec"]), "{m:?}");
    }
    let f = std::fs::read_to_string(b.rootfs().join("data/ro/f")).unwrap();
    assert_eq!(f, "orig\n");
}

#[test]
fn destinations_cannot_leave_the_rootfs() {
    if !can_run() {
        return;
    }
    let name = uniq("l4m-escape");
    let h = Host::dir("escape-target");
    let rt = Runtime::new();
    let mut b = Bundle::shell("cat /proc/self/mountinfo");
    // An absolute symlink to a real host directory, planted in the image.
    std::os::unix::fs::symlink(h.path(), b.rootfs().join("evil")).unwrap();
    b.edit(with_mounts(vec![
        json!({"destination": format!("/../../../../{name}"), "type": "tmpfs",
               "source": "tmpfs"}),
        json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}),
    ]));
    let out = rt.run(&b, "escape");
    assert!(!Path::new("/").join(&name).exists(), "created on the host");
    let mut entries = std::fs::read_dir(h.path()).unwrap();
    assert!(
        entries.next().is_none(),
        "symlink followed out of the rootfs"
    );
    assert!(host_lines_mentioning(&h.path()).is_empty());
    assert!(host_lines_mentioning(&Path::new("/").join(&name)).is_empty());
    if out.status.success() {
        // Resolved inside the container: `..` at / stays at /.
        let ms = mountinfo(&stdout(&out));
        assert_eq!(at(&ms, &format!("/{name}")).fstype, "tmpfs");
        assert!(b.rootfs().join(&name).is_dir());
    } else {
        fails_with(&out, "");
    }
}

#[test]
fn missing_bind_source_fails_cleanly() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let missing = scratch().join(uniq("no-such-source"));
    let mut b = Bundle::shell("echo should-not-run");
    b.edit(with_mounts(vec![bind(
        "/mnt/missing",
        &missing,
        &["rbind"],
    )]));
    let out = rt.run(&b, "nosource");
    let err = fails_with(&out, missing.to_str().unwrap());
    assert!(err.contains("/mnt/missing"), "destination not named: {err}");
    assert!(!stdout(&out).contains("should-not-run"));
    fails_with(&rt.cmd(&["state", "nosource"]), "does not exist");
    assert!(!rt.root.join("nosource").exists(), "state left behind");
    assert!(host_lines_mentioning(&b.dir).is_empty(), "mounts leaked");
}
