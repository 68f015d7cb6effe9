//! Layered root filesystems (`left4me.layers`), through the CLI and observed from inside
//! the container: layer precedence, invalid references, the 500-layer limit, idmapped
//! layers, user namespaces, a staged upper layer, read-only stacks, the host mount table
//! across many cycles and killed creates, idmapped bind mounts, and upper layers that
//! outlive `delete`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A layer store under `scratch()`: `store/installation` (a copy of the busybox rootfs),
/// `store/overlays/`, and `outside/` (not in the store). Removed on drop.
struct Store {
    base: PathBuf,
}

impl Store {
    fn new() -> Store {
        let s = Store::bare();
        host(
            Command::new("cp")
                .arg("-a")
                .arg(busybox_rootfs())
                .arg(s.path("installation")),
        );
        s
    }

    /// A store without an installation (for tests that only need a scratch directory).
    fn bare() -> Store {
        let base = scratch().join(format!(
            "layers-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(base.join("store/overlays")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        Store { base }
    }

    fn store(&self) -> PathBuf {
        self.base.join("store")
    }

    /// `store/LAYER`.
    fn path(&self, layer: &str) -> PathBuf {
        self.store().join(layer)
    }

    /// Writes `LAYER/FILE` (creating the layer and parents).
    fn put(&self, layer: &str, file: &str, content: &str) -> PathBuf {
        let p = self.path(layer).join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// Runs a host command, asserting success.
#[track_caller]
fn host(cmd: &mut Command) {
    let status = cmd.status().unwrap();
    assert!(status.success(), "{cmd:?} failed");
}

fn chown_r(owner: &str, path: &Path) {
    host(Command::new("chown").arg("-R").arg(owner).arg(path));
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).unwrap().next().is_none()
}

fn plain(path: &str) -> Value {
    json!({ "path": path })
}

fn stack(paths: &[&str]) -> Vec<Value> {
    paths.iter().map(|p| plain(p)).collect()
}

/// A layer whose on-disk ids `from..from+size` appear as `to..to+size` (uids and gids).
fn mapped(path: &str, maps: Value) -> Value {
    json!({ "path": path, "uidMappings": maps, "gidMappings": maps })
}

fn range(from: u32, to: u32, size: u32) -> Value {
    json!({ "containerID": from, "hostID": to, "size": size })
}

/// `overlays/0..n` then `installation`.
fn numbered(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| plain(&format!("overlays/{i}")))
        .chain([plain("installation")])
        .collect()
}

/// A `sh -c SCRIPT` bundle whose root is the layered view of `lower` (root writable),
/// with an empty `rootfs/` on the host.
fn layered(store: &Store, script: &str, lower: Vec<Value>) -> Bundle {
    let mut b = Bundle::shell(script);
    std::fs::remove_dir_all(b.rootfs()).unwrap();
    std::fs::create_dir(b.rootfs()).unwrap();
    let st = store.store();
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        c["left4me"] = json!({ "layers": { "store": st, "lower": lower } });
    });
    b
}

/// Host mountinfo lines that mention any of `paths`.
fn mounts_mentioning(paths: &[&Path]) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| paths.iter().any(|p| l.contains(p.to_str().unwrap())))
        .map(String::from)
        .collect()
}

/// Pids of live processes whose command line contains `needle` (`pgrep -f`).
fn pgrep(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Where the runtime puts container ID's cgroup by default (`left4me-ID` under ours).
fn default_cgroup(id: &str) -> PathBuf {
    let text = read(Path::new("/proc/self/cgroup"));
    let own = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let hybrid = !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let mount = Path::new(if hybrid {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    });
    mount
        .join(own.trim_start_matches('/'))
        .join(format!("left4me-{id}"))
}

/// `delete --force ID`, given `limit` to finish. On a hang it SIGKILLs the hung delete
/// and every process of ours mentioning ID (so the harness can clean up), then panics.
#[track_caller]
fn delete_force_within(rt: &Runtime, id: &str, limit: Duration, what: &str) {
    let mut child = rt
        .command()
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "{what}: delete --force failed: {err}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    let survivors = pgrep(id);
    for &pid in &survivors {
        // SAFETY: plain kill(2) of a process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    panic!("{what}: delete --force hung for {limit:?}; live processes of {id}: {survivors:?}");
}

#[test]
fn first_layer_wins_and_writes_go_to_the_upper_layer() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    for (layer, tag) in [
        ("overlays/a", "a"),
        ("overlays/b", "b"),
        ("installation", "i"),
    ] {
        s.put(layer, "same", &format!("{tag}\n"));
        s.put(layer, &format!("only-{tag}"), &format!("{tag}\n"));
    }
    let rt = Runtime::new();
    let script = "cat /same /only-a /only-b /only-i; echo new > /new && echo more >> /only-i \
                  && echo wrote";
    let lower = stack(&["overlays/a", "overlays/b", "installation"]);
    let b = layered(&s, script, lower);
    let out = ok(&rt.run(&b, "precedence"));
    assert_eq!(out, "a\na\nb\ni\nwrote\n");
    let upper = b.dir.join("upper");
    assert_eq!(read(&upper.join("new")), "new\n");
    assert_eq!(read(&upper.join("only-i")), "i\nmore\n", "copied up");
    for layer in ["overlays/a", "overlays/b", "installation"] {
        assert!(!s.path(layer).join("new").exists(), "{layer} was written");
    }
    assert_eq!(read(&s.path("installation/only-i")), "i\n");
    assert_eq!(read(&s.path("overlays/b/same")), "b\n");
    assert!(is_empty_dir(&b.rootfs()), "root.path on the host");
    assert!(mounts_mentioning(&[&s.base, &b.dir]).is_empty());
}

#[test]
fn every_invalid_reference_is_refused_naming_the_layer_and_leaving_nothing() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    s.put("overlays/a", "afile", "a\n");
    std::fs::write(s.path("overlays/file"), "").unwrap();
    std::os::unix::fs::symlink(s.base.join("outside"), s.path("overlays/evil")).unwrap();
    std::os::unix::fs::symlink("/", s.path("overlays/root")).unwrap();
    std::fs::create_dir_all(s.path("elsewhere")).unwrap();
    let cases = [
        ("/etc", "absolute"),
        ("overlays/../installation", "'..'"),
        ("overlays//a", "empty path component"),
        ("overlays/missing", "does not exist"),
        ("overlays/file", "not a directory"),
        ("overlays/evil", "outside the allowed roots"),
        ("overlays/root", "outside the allowed roots"),
        ("elsewhere", "outside the allowed roots"),
    ];
    let rt = Runtime::new();
    let count = host_mount_count();
    for (i, (reference, why)) in cases.into_iter().enumerate() {
        let lower = stack(&["overlays/a", reference, "installation"]);
        let b = layered(&s, "echo ran", lower);
        let id = format!("bad{i}");
        let out = rt.run(&b, &id);
        let err = fails_with(&out, "left4me.layers.lower[1]");
        assert!(err.contains(why), "{reference}: wanted {why:?} in {err}");
        assert!(!stdout(&out).contains("ran"), "{reference}: it ran");
        assert!(rt.state(&id).is_none(), "{reference}: state left behind");
        assert!(!b.dir.join("upper").exists(), "{reference}: upper created");
        assert_eq!(host_mount_count(), count, "{reference}: host mounts");
    }
    // A layer in an existing store directory that `allowedRoots` does not list.
    let mut b = layered(&s, "echo ran", stack(&["overlays/a", "installation"]));
    b.edit(|c| c["left4me"]["layers"]["allowedRoots"] = json!(["installation"]));
    let err = fails_with(&rt.run(&b, "notallowed"), "left4me.layers.lower[0]");
    assert!(err.contains("outside the allowed roots"), "{err}");
    assert!(rt.state("notallowed").is_none());
    assert_eq!(host_mount_count(), count);
    assert!(mounts_mentioning(&[&s.base]).is_empty());
}

#[test]
fn five_hundred_layers_mount_and_five_hundred_and_one_are_refused() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    for i in 0..500 {
        s.put(&format!("overlays/{i}"), &format!("f{i}"), "");
    }
    s.put("overlays/0", "which", "0\n");
    s.put("overlays/498", "which", "498\n");
    let rt = Runtime::new();
    let b = layered(&s, "ls / | grep -c '^f'; cat /which", numbered(499));
    assert_eq!(ok(&rt.run(&b, "l500")), "499\n0\n");
    assert!(is_empty_dir(&b.rootfs()));
    let b = layered(&s, "echo ran", numbered(500));
    let err = fails_with(&rt.run(&b, "l501"), "501");
    assert!(err.contains("500"), "{err}");
    assert!(rt.state("l501").is_none());
}

#[test]
fn an_idmapped_layer_shows_shifted_owners_and_copy_up_keeps_them() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    let bfile = s.put("overlays/b", "bfile", "b\n");
    chown_r("981:981", &s.path("overlays/b"));
    // Writable by all: root here has no CAP_DAC_OVERRIDE (runc's default capabilities).
    host(Command::new("chmod").arg("0666").arg(&bfile));
    let rt = Runtime::new();
    let script = "stat -c %u:%g /bfile; echo x >> /bfile && echo appended";
    let lower = vec![
        mapped("overlays/b", json!([range(981, 980, 1)])),
        plain("installation"),
    ];
    let b = layered(&s, script, lower);
    assert_eq!(ok(&rt.run(&b, "idmapped")), "980:980\nappended\n");
    let copy = b.dir.join("upper/bfile");
    assert_eq!(read(&copy), "b\nx\n");
    assert_eq!(owner(&copy), (980, 980), "copy-up keeps the apparent owner");
    assert_eq!(owner(&bfile), (981, 981), "the layer is untouched");
    assert_eq!(read(&bfile), "b\n");
    // Without the mapping the on-disk owner shows.
    let lower = stack(&["overlays/b", "installation"]);
    let b = layered(&s, "stat -c %u:%g /bfile", lower);
    assert_eq!(ok(&rt.run(&b, "unmapped")), "981:981\n");
}

#[test]
fn a_user_namespace_container_runs_on_an_idmapped_installation() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    let rt = Runtime::new();
    let script = "stat -c %u:%g /bin/busybox; id -u; echo hi > /newfile && echo wrote";
    let lower = vec![mapped("installation", json!([range(0, 100000, 65536)]))];
    let mut b = layered(&s, script, lower);
    b.edit(|c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.push(json!({ "type": "user" }));
        c["linux"]["uidMappings"] = json!([range(0, 100000, 65536)]);
        c["linux"]["gidMappings"] = json!([range(0, 100000, 65536)]);
    });
    assert_eq!(ok(&rt.run(&b, "userns")), "0:0\n0\nwrote\n");
    let upper = b.dir.join("upper");
    assert_eq!(owner(&upper), (100000, 100000), "upper: container root");
    assert_eq!(owner(&upper.join("newfile")), (100000, 100000));
    assert_eq!(read(&upper.join("newfile")), "hi\n");
    assert_eq!(owner(&s.path("installation/bin/busybox")).0, 0);
}

#[test]
fn a_non_root_process_writes_copy_ups_of_files_mapped_to_its_uid() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    let cfg = s.put("installation", "srv/game/server.cfg", "hostname x\n");
    chown_r("981:981", &s.path("installation/srv"));
    let rt = Runtime::new();
    let script = "id -u; stat -c %u:%g /srv/game/server.cfg /srv/game /bin/busybox; \
                  echo more >> /srv/game/server.cfg && echo appended; \
                  echo new > /srv/game/new && echo created; \
                  touch /etc/nope 2>/dev/null || echo denied";
    // Everything below 980 as is; the installation's owner 981 appears as srcds' 980.
    let maps = json!([range(0, 0, 980), range(981, 980, 1)]);
    let mut b = layered(&s, script, vec![mapped("installation", maps)]);
    b.edit(|c| c["process"]["user"] = json!({ "uid": 980, "gid": 980 }));
    let out = ok(&rt.run(&b, "srcds"));
    assert_eq!(
        out,
        "980\n980:980\n980:980\n0:0\nappended\ncreated\ndenied\n"
    );
    let upper = b.dir.join("upper");
    assert_eq!(owner(&upper), (980, 980), "upper owned by the process user");
    let copy = upper.join("srv/game/server.cfg");
    assert_eq!(read(&copy), "hostname x\nmore\n");
    assert_eq!(owner(&copy), (980, 980));
    assert_eq!(owner(&upper.join("srv/game/new")), (980, 980));
    assert_eq!(owner(&cfg), (981, 981));
    assert_eq!(read(&cfg), "hostname x\n");
}

#[test]
fn a_staged_upper_file_overrides_the_installation() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    s.put("installation", "server.cfg", "from installation\n");
    let rt = Runtime::new();
    let b = layered(
        &s,
        "cat /server.cfg; stat -c %u:%g /server.cfg",
        stack(&["installation"]),
    );
    std::fs::create_dir(b.dir.join("upper")).unwrap();
    let staged = b.dir.join("upper/server.cfg");
    std::fs::write(&staged, "staged\n").unwrap();
    std::os::unix::fs::chown(&staged, Some(980), Some(980)).unwrap();
    assert_eq!(ok(&rt.run(&b, "staged")), "staged\n980:980\n");
    assert_eq!(
        read(&s.path("installation/server.cfg")),
        "from installation\n"
    );
}

#[test]
fn a_readonly_stack_refuses_writes_and_creates_no_upper() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    s.put("overlays/a", "afile", "a\n");
    let rt = Runtime::new();
    let script = "{ echo x > /new; } 2>&1; touch /bin/busybox 2>&1; echo done";
    // Two layers are an overlay without an upper; one is a read-only bind of the layer.
    for (i, lower) in [
        stack(&["overlays/a", "installation"]),
        stack(&["installation"]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = layered(&s, script, lower);
        b.edit(|c| c["left4me"]["layers"]["readonly"] = json!(true));
        let out = ok(&rt.run(&b, &format!("ro{i}")));
        assert_eq!(
            out.matches("Read-only file system").count(),
            2,
            "layers #{i}: {out}"
        );
        assert!(out.ends_with("done\n"), "{out}");
        assert!(!b.dir.join("upper").exists(), "upper created");
        assert!(!b.dir.join("work").exists(), "work created");
        assert!(!s.path("installation/new").exists());
    }
}

#[test]
fn a_hundred_cycles_leave_the_host_mount_table_alone() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    s.put("overlays/a", "afile", "a\n");
    let rt = Runtime::new();
    let b = layered(&s, "sleep 10", stack(&["overlays/a", "installation"]));
    let watch = [s.base.as_path(), b.dir.as_path(), rt.root.as_path()];
    let count = host_mount_count();
    let started = Instant::now();
    for i in 0..100 {
        let id = format!("cycle{i}");
        ok(&rt.create(&b, &id));
        ok(&rt.cmd(&["start", &id]));
        ok(&rt.cmd(&["kill", &id, "KILL"]));
        // Plain delete, retried while the kill is still landing.
        let mut deleted = false;
        for _ in 0..500 {
            if rt.cmd(&["delete", &id]).status.success() {
                deleted = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(deleted, "cycle {i}: delete kept failing");
        assert!(mounts_mentioning(&watch).is_empty(), "cycle {i}");
    }
    eprintln!("100 cycles took {:?}", started.elapsed());
    assert_eq!(host_mount_count(), count);
    assert!(is_empty_dir(&b.rootfs()));
    assert!(is_empty_dir(&rt.root), "state left behind");
    assert_eq!(read(&s.path("overlays/a/afile")), "a\n");
}

#[test]
fn a_create_killed_midway_is_cleaned_up_by_delete_force() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    for i in 0..499 {
        s.put(&format!("overlays/{i}"), &format!("f{i}"), "");
    }
    let rt = Runtime::new();
    let b = layered(&s, "sleep 30", numbered(499));
    let dir = b.dir.to_str().unwrap().to_string();
    let watch = [s.base.as_path(), b.dir.as_path(), rt.root.as_path()];
    let count = host_mount_count();
    // How long a whole create takes (the faster of two), to spread the kills over it.
    let mut full = Duration::MAX;
    for id in ["measure1", "measure2"] {
        let t = Instant::now();
        ok(&rt.create(&b, id));
        full = full.min(t.elapsed());
        ok(&rt.cmd(&["delete", "--force", id]));
    }
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    // Ten kills after random delays spread over a create, then six the moment the state
    // says "created" (the end of a create, while the runtime still tidies up).
    for i in 0..16u32 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let jitter = Duration::from_micros((seed >> 33) % (full.as_micros() as u64 / 10 + 1));
        let id = format!("killed{}x{i}y", std::process::id());
        let state_file = rt.root.join(&id).join("state.json");
        let mut child = rt
            .command()
            .args(["create", "--bundle", &dir, &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        if i < 10 {
            std::thread::sleep(full * i / 10 + jitter);
        } else {
            while child.try_wait().unwrap().is_none()
                && !std::fs::read_to_string(&state_file)
                    .is_ok_and(|s| s.contains(r#""status":"created""#))
            {
                std::thread::yield_now();
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        let what = format!(
            "create #{i} killed after {:?} (a create takes {full:?})",
            t.elapsed()
        );
        delete_force_within(&rt, &id, Duration::from_secs(120), &what);
        assert!(rt.state(&id).is_none(), "{what}: state left");
        assert!(!default_cgroup(&id).exists(), "{what}: cgroup left");
        assert!(mounts_mentioning(&watch).is_empty(), "{what}: host mounts");
        let mut left = Vec::new();
        for _ in 0..250 {
            left = pgrep(&id);
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(left.is_empty(), "{what}: processes {left:?} survive");
    }
    assert_eq!(host_mount_count(), count);
    assert!(is_empty_dir(&b.rootfs()));
}

#[test]
fn an_idmapped_bind_mount_shifts_owners_inside_only() {
    if !can_run() {
        return;
    }
    let s = Store::bare();
    let data = s.base.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("file"), "hello\n").unwrap();
    chown_r("981:981", &data);
    let rt = Runtime::new();
    let mut b = Bundle::shell("stat -c %u:%g /data/file /data; cat /data/file");
    b.edit(|c| {
        let maps = json!([range(981, 1000, 1)]);
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/data", "type": "bind", "source": data,
            "options": ["rbind"], "uidMappings": maps, "gidMappings": maps,
        }));
    });
    assert_eq!(ok(&rt.run(&b, "idbind")), "1000:1000\n1000:1000\nhello\n");
    assert_eq!(owner(&data.join("file")), (981, 981));
    assert!(mounts_mentioning(&[&data]).is_empty());
}

#[test]
fn the_upper_layer_outlives_delete_and_the_next_run_sees_it() {
    if !can_run() {
        return;
    }
    let s = Store::new();
    let rt = Runtime::new();
    let script = "cat /persist 2>/dev/null || echo none; echo kept >> /persist";
    let b = layered(&s, script, stack(&["installation"]));
    ok(&rt.create(&b, "first"));
    ok(&rt.cmd(&["start", "first"]));
    wait_for(|| rt.status("first").as_deref() == Some("stopped"));
    ok(&rt.cmd(&["delete", "first"]));
    assert!(rt.state("first").is_none());
    let persist = b.dir.join("upper/persist");
    assert_eq!(read(&persist), "kept\n", "instance data survives delete");
    assert!(is_empty_dir(&b.rootfs()));
    assert_eq!(ok(&rt.run(&b, "first")), "kept\n");
    assert_eq!(read(&persist), "kept\nkept\n");
    assert!(!s.path("installation/persist").exists());
}
