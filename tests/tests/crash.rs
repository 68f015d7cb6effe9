//! Crash consistency and concurrency: a runtime killed half-way through an operation (the
//! fault-injection build SIGKILLs itself at a named point, see runtime/src/fault.rs), or
//! two operations on one container at once, must never leave garbage. After every crash
//! a normal `delete --force` removes everything: processes, mounts, the cgroup, the state
//! directory, the pinning entry; the id's UID/GID block stays (blocks outlive containers)
//! until `userns release`; and the same id runs again.
//!
//! The bundle asks for everything a point can need: an automatic user namespace (the
//! block table, ID maps) and a cgroup (every host has cgroup2 somewhere); with cgroup v2
//! controllers (the VM) also a memory limit and automatic core pinning.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Barrier, OnceLock};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// `left4me_runtime::fault::POINTS` (the tests crate does not link the runtime): checked
/// against the source by `the_point_list_is_the_runtimes`.
const POINTS: &[&str] = &[
    "create.after-id-block",
    "create.after-state-dir",
    "create.after-state-record",
    "create.after-cgroup",
    "create.after-limits",
    "create.after-init-spawn",
    "create.after-id-maps",
    "create.after-init-go",
    "create.after-init-ready",
    "create.after-created",
    "start.before-signal",
    "start.after-signal",
    "run.after-start",
    "delete.after-kill",
    "delete.after-cgroup",
    "delete.before-state-removal",
];

fn index(point: &str) -> usize {
    POINTS
        .iter()
        .position(|p| *p == point)
        .expect("a listed point")
}

/// True when `point` comes at or after `from` and before `until` (exclusive) in the
/// order the operations pass them.
fn between(point: &str, from: &str, until: &str) -> bool {
    (index(from)..index(until)).contains(&index(point))
}

#[test]
fn the_point_list_is_the_runtimes() {
    let source = std::fs::read_to_string(workspace().join("runtime/src/fault.rs")).unwrap();
    let start = source.find("pub const POINTS").expect("POINTS in fault.rs");
    let list = &source[start..];
    let list = &list[list.find("&[").unwrap()..list.find("];").unwrap()];
    let names: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert_eq!(
        names, POINTS,
        "runtime/src/fault.rs changed: update POINTS here"
    );
}

/// cgroup v2 with the memory and cpuset controllers (the Debian 13 VM).
fn v2_controllers() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok_and(|c| {
        let c: Vec<&str> = c.split_whitespace().collect();
        c.contains(&"memory") && c.contains(&"cpuset")
    })
}

/// The cgroup2 mount point (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host).
fn cgroup2_mount() -> Option<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|t| t.starts_with("cgroup2 "))
        })
        .and_then(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
}

/// The fault-injection runtime; in the VM a copy on the scratch tmpfs (executing from
/// the 9p host filesystem under emulation is slow).
fn fault_runtime() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = fault_bin();
        let Some(scratch) = std::env::var_os("LEFT4ME_SCRATCH").map(PathBuf::from) else {
            return built;
        };
        let dir = scratch.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        let copy = dir.join(format!("left4me-runtime-fault-{}", std::process::id()));
        std::fs::copy(&built, &copy).unwrap();
        copy
    })
    .clone()
}

/// Mount points of the host's mount namespace, with how often each is mounted.
fn mounts() -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
    {
        if let Some(point) = line.split(' ').nth(4) {
            *out.entry(point.to_string()).or_insert(0) += 1;
        }
    }
    out
}

/// Mount points mounted more often now than in `before`.
fn new_mounts(before: &BTreeMap<String, usize>) -> Vec<String> {
    mounts()
        .into_iter()
        .filter(|(p, n)| before.get(p).copied().unwrap_or(0) < *n)
        .map(|(p, _)| p)
        .collect()
}

/// Live processes whose arguments name `id` (the runtime and the container's init
/// before its exec carry the runtime's command line) or are `sleep MARKER`.
fn processes(id: &str, marker: &str) -> Vec<(i32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // Gone meanwhile, or a zombie (empty command line): nothing left running.
        let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let sleeper = args
            .windows(2)
            .any(|w| w[0].ends_with("sleep") && w[1] == marker);
        if sleeper || args.iter().any(|a| a == id) {
            found.push((pid, args.join(" ")));
        }
    }
    found
}

/// Directories under the cgroup2 mount named for `id` (`left4me-ID` by default).
fn groups_named(id: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, id: &str, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if name == id || name.ends_with(suffix) {
                out.push(e.path());
            }
            walk(&e.path(), id, suffix, out);
        }
    }
    let mut out = Vec::new();
    if let Some(mount) = cgroup2_mount() {
        walk(&mount, id, &format!("-{id}"), &mut out);
    }
    out
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON ({e}): {text}", path.display())),
    )
}

/// Names in `dir` (empty if it does not exist).
fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a crash must be checked against: one state root, one block table, a bundle that
/// sleeps (`sleep MARKER`, unique to the fixture) and one that runs `true`.
struct Fixture {
    rt: Runtime,
    blocks_dir: PathBuf,
    sleeper: Bundle,
    quick: Bundle,
    marker: String,
    /// The VM's controllers: a memory limit and core pinning are in the bundles.
    full: bool,
}

impl Fixture {
    fn new(tag: u32) -> Fixture {
        let rt = Runtime::new();
        let blocks_dir = PathBuf::from(format!("{}-blocks", rt.root.display()));
        let marker = format!("7{:07}{tag:03}", std::process::id());
        let full = v2_controllers();
        let setup = |b: &mut Bundle| {
            b.edit(|c| {
                c["left4me"] = json!({ "userns": { "auto": true } });
                if full {
                    c["linux"]["resources"]["memory"] = json!({ "limit": 128 << 20 });
                    c["annotations"] = json!({ "org.left4me.cpuset": "auto" });
                }
            });
        };
        let mut sleeper = Bundle::new(&["sleep", &marker]);
        setup(&mut sleeper);
        let mut quick = Bundle::new(&["true"]);
        setup(&mut quick);
        Fixture {
            rt,
            blocks_dir,
            sleeper,
            quick,
            marker,
            full,
        }
    }

    fn blocks_file(&self) -> PathBuf {
        self.blocks_dir.join("id-blocks.json")
    }

    fn with_args(&self, mut cmd: Command, args: &[&str]) -> Output {
        cmd.arg("--root")
            .arg(&self.rt.root)
            .arg("--id-blocks")
            .arg(self.blocks_file())
            .args(args);
        run_captured(&mut cmd)
    }

    /// The normal runtime.
    fn cmd(&self, args: &[&str]) -> Output {
        self.with_args(Command::new(runtime_bin()), args)
    }

    /// The fault-injection runtime, killing itself at `point`.
    fn faulty(&self, point: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(fault_runtime());
        cmd.env("LEFT4ME_FAULT", point);
        self.with_args(cmd, args)
    }

    fn create(&self, bundle: &Bundle, id: &str) -> Output {
        self.cmd(&["create", "--bundle", bundle.dir.to_str().unwrap(), id])
    }

    fn state_file(&self, id: &str) -> Option<Value> {
        read_json(&self.rt.root.join(id).join("state.json"))
    }

    /// The block table, checked to be whole JSON (an empty one if there is no file).
    fn blocks(&self) -> BTreeMap<String, u64> {
        let Some(table) = read_json(&self.blocks_file()) else {
            return BTreeMap::new();
        };
        serde_json::from_value(table["blocks"].clone())
            .unwrap_or_else(|e| panic!("id-blocks table malformed ({e}): {table}"))
    }

    /// The block table, which `userns list` must show as it is on disk, and with no
    /// block shared.
    #[track_caller]
    fn assert_blocks_consistent(&self) -> BTreeMap<String, u64> {
        let blocks = self.blocks();
        let listed: BTreeMap<String, u64> =
            serde_json::from_str(&ok(&self.cmd(&["userns", "list", "--format", "json"]))).unwrap();
        assert_eq!(listed, blocks, "userns list disagrees with the table");
        let starts: BTreeSet<u64> = blocks.values().copied().collect();
        assert_eq!(
            starts.len(),
            blocks.len(),
            "two ids share a block: {blocks:?}"
        );
        blocks
    }

    /// The pinning table (cpus.json in the state root), checked to be whole JSON.
    fn pins(&self) -> BTreeMap<String, u64> {
        let Some(table) = read_json(&self.rt.root.join("cpus.json")) else {
            return BTreeMap::new();
        };
        serde_json::from_value(table["pins"].clone())
            .unwrap_or_else(|e| panic!("cpus.json malformed ({e}): {table}"))
    }

    /// Frees the block of `id`, which must have one; the table stays whole and
    /// consistent (no id twice on one block).
    fn release_block(&self, id: &str) {
        let before = self.blocks();
        assert!(before.contains_key(id), "{id} has no block: {before:?}");
        ok(&self.cmd(&["userns", "release", id]));
        let after = self.assert_blocks_consistent();
        let mut expected = before;
        expected.remove(id);
        assert_eq!(after, expected, "userns release {id} changed other blocks");
    }

    /// Nothing of `id` is left: no state, process, mount, cgroup or pinning entry, and
    /// no temp file next to the tables.
    #[track_caller]
    fn assert_clean(&self, id: &str, group: Option<&Path>, before: &BTreeMap<String, usize>) {
        assert!(
            !self.rt.root.join(id).exists(),
            "{id}: state directory left: {:?}",
            names_in(&self.rt.root.join(id))
        );
        fails_with(&self.cmd(&["state", id]), "does not exist");
        let procs = processes(id, &self.marker);
        assert!(procs.is_empty(), "{id}: processes left: {procs:?}");
        if let Some(group) = group {
            assert!(!group.exists(), "{id}: cgroup {} left", group.display());
        }
        let groups = groups_named(id);
        assert!(groups.is_empty(), "{id}: cgroups left: {groups:?}");
        // Mounts of tests running in other processes come and go; a leak stays.
        let mut leaked = new_mounts(before);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !leaked.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            leaked = new_mounts(before);
        }
        assert!(leaked.is_empty(), "{id}: mounts left: {leaked:?}");
        let pins = self.pins();
        assert!(!pins.contains_key(id), "{id}: still pinned: {pins:?}");
        let root_files = names_in(&self.rt.root);
        let tables: BTreeSet<String> = ["cpus.json", "cpus.lock"].map(String::from).into();
        assert!(
            root_files.is_subset(&tables),
            "{id}: garbage in the state root: {root_files:?}"
        );
        let block_files = names_in(&self.blocks_dir);
        let tables: BTreeSet<String> = ["id-blocks.json", "id-blocks.lock"]
            .map(String::from)
            .into();
        assert!(
            block_files.is_subset(&tables),
            "{id}: garbage next to the block table: {block_files:?}"
        );
    }

    /// Runs the operation of `point` on `id` with the fault-injection runtime (after
    /// preparing the container with the normal one) and returns what the crash left.
    fn crash(&self, point: &str, id: &str) -> Output {
        let dir = self.sleeper.dir.to_str().unwrap();
        match point.split('.').next().unwrap() {
            "create" => self.faulty(point, &["create", "--bundle", dir, id]),
            "start" => {
                ok(&self.create(&self.sleeper, id));
                self.faulty(point, &["start", id])
            }
            "run" => self.faulty(point, &["run", "--bundle", dir, id]),
            "delete" => {
                ok(&self.create(&self.sleeper, id));
                ok(&self.cmd(&["start", id]));
                self.faulty(point, &["delete", "--force", id])
            }
            other => panic!("no operation {other}"),
        }
    }

    /// One crash at `point`, then recovery: see the module documentation.
    fn crash_and_recover(&self, point: &str) {
        let id = format!("crash-{}-{point}", std::process::id());
        let before = mounts();
        let out = self.crash(point, &id);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGKILL),
            "{point}: the runtime was not killed there ({:?})\nstderr: {}",
            out.status,
            stderr(&out)
        );
        // What the crash left: its block always (allocated first), the state from the
        // directory on, the cgroup from its creation until delete removed it.
        assert!(
            self.blocks().contains_key(&id),
            "{point}: no block recorded"
        );
        let dir = self.rt.root.join(&id);
        assert_eq!(
            dir.exists(),
            point != "create.after-id-block",
            "{point}: state directory"
        );
        let st = self.state_file(&id);
        assert_eq!(
            st.is_some(),
            !matches!(point, "create.after-id-block" | "create.after-state-dir"),
            "{point}: state file"
        );
        let group = st
            .as_ref()
            .and_then(|s| s["cgroup"].as_str())
            .map(PathBuf::from);
        if st.is_some() {
            assert!(group.is_some(), "{point}: no cgroup recorded: {st:?}");
        }
        if let Some(g) = &group {
            let should_exist = between(point, "create.after-cgroup", "delete.after-cgroup");
            assert_eq!(g.exists(), should_exist, "{point}: cgroup {}", g.display());
        }
        if self.full && between(point, "create.after-cgroup", "delete.before-state-removal") {
            assert!(self.pins().contains_key(&id), "{point}: no CPU recorded");
        }
        // A crashed create is recognisably dead (its creator is gone).
        if between(point, "create.after-state-record", "create.after-created") {
            assert_eq!(self.rt.status(&id).as_deref(), Some("stopped"), "{point}");
        }
        if point == "create.after-state-dir" {
            fails_with(&self.cmd(&["state", &id]), "use delete --force");
        }
        // Recovery, twice: the second delete finds nothing and succeeds.
        ok(&self.cmd(&["delete", "--force", &id]));
        self.assert_clean(&id, group.as_deref(), &before);
        ok(&self.cmd(&["delete", "--force", &id]));
        self.assert_clean(&id, group.as_deref(), &before);
        // Blocks outlive containers by design: released by hand.
        self.release_block(&id);
        // The id is usable again.
        let dir = self.quick.dir.to_str().unwrap();
        ok(&self.cmd(&["run", "--bundle", dir, &id]));
        ok(&self.cmd(&["delete", "--force", &id]));
        self.assert_clean(&id, None, &before);
        self.release_block(&id);
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.blocks_dir);
    }
}

fn crash_at(points: impl Fn(&str) -> bool, tag: u32) {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(tag);
    for point in POINTS.iter().filter(|p| points(p)) {
        let started = std::time::Instant::now();
        fx.crash_and_recover(point);
        eprintln!("{point}: {:.1}s", started.elapsed().as_secs_f64());
    }
}

#[test]
fn a_create_killed_before_its_init_exists_leaves_nothing_after_delete() {
    crash_at(
        |p| between(p, "create.after-id-block", "create.after-init-spawn"),
        1,
    );
}

#[test]
fn a_create_killed_after_its_init_exists_leaves_nothing_after_delete() {
    crash_at(
        |p| between(p, "create.after-init-spawn", "start.before-signal"),
        2,
    );
}

#[test]
fn a_start_or_run_killed_half_way_leaves_nothing_after_delete() {
    crash_at(|p| p.starts_with("start.") || p.starts_with("run."), 3);
}

#[test]
fn a_delete_killed_half_way_is_finished_by_the_next_delete() {
    crash_at(|p| p.starts_with("delete."), 4);
}

#[test]
fn every_point_is_covered_by_one_of_the_crash_tests() {
    for point in POINTS {
        let create = point.starts_with("create.");
        let groups = [
            create && between(point, "create.after-id-block", "create.after-init-spawn"),
            create && between(point, "create.after-init-spawn", "start.before-signal"),
            point.starts_with("start.") || point.starts_with("run."),
            point.starts_with("delete."),
        ];
        assert_eq!(
            groups.iter().filter(|g| **g).count(),
            1,
            "{point} is not crashed exactly once"
        );
    }
}

/// Runs `f(i)` for i in 0..n on n threads released at once, returning the results.
fn at_once<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn parallel_creates_of_distinct_ids_all_succeed_and_get_their_own_blocks() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(5);
    let before = mounts();
    let ids: Vec<String> = (0..20)
        .map(|i| format!("par-{}-{i}", std::process::id()))
        .collect();
    for out in at_once(20, |i| fx.create(&fx.sleeper, &ids[i])) {
        ok(&out);
    }
    let blocks = fx.blocks();
    for id in &ids {
        assert_eq!(fx.rt.status(id).as_deref(), Some("created"), "{id}");
        assert!(blocks.contains_key(id), "{id} has no block");
    }
    let starts: BTreeSet<u64> = blocks.values().copied().collect();
    assert_eq!(starts.len(), 20, "blocks shared: {blocks:?}");
    if fx.full {
        assert_eq!(fx.pins().len(), 20, "pins: {:?}", fx.pins());
    }
    let groups: Vec<Option<PathBuf>> = ids
        .iter()
        .map(|id| {
            fx.state_file(id).unwrap()["cgroup"]
                .as_str()
                .map(PathBuf::from)
        })
        .collect();
    for out in at_once(20, |i| fx.cmd(&["delete", "--force", &ids[i]])) {
        ok(&out);
    }
    for (id, group) in ids.iter().zip(&groups) {
        fx.assert_clean(id, group.as_deref(), &before);
    }
    // Blocks outlive their containers; released at once, they all go.
    assert_eq!(fx.assert_blocks_consistent(), blocks);
    for out in at_once(20, |i| fx.cmd(&["userns", "release", &ids[i]])) {
        ok(&out);
    }
    assert!(fx.assert_blocks_consistent().is_empty());
}

#[test]
fn parallel_creates_of_one_id_make_exactly_one_container() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(6);
    let before = mounts();
    let id = format!("same-{}", std::process::id());
    let outs = at_once(20, |_| fx.create(&fx.sleeper, &id));
    let won = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "{won} creates of one id succeeded");
    for out in outs.iter().filter(|o| !o.status.success()) {
        fails_with(out, &format!("container {id} already exists"));
    }
    // The winner's container, whole and alone.
    let st = fx.rt.state(&id).unwrap();
    assert_eq!(st["status"], "created");
    let init = st["pid"].as_i64().unwrap() as i32;
    let file = fx.state_file(&id).unwrap();
    assert!(file["creator"].is_null(), "{file}");
    let procs = processes(&id, &fx.marker);
    assert_eq!(
        procs.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![init],
        "{procs:?}"
    );
    let group = PathBuf::from(file["cgroup"].as_str().unwrap());
    let members = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    assert_eq!(members.trim(), init.to_string());
    assert_eq!(groups_named(&id), vec![group.clone()]);
    assert_eq!(
        fx.blocks().keys().collect::<Vec<_>>(),
        vec![&id],
        "the losers left blocks"
    );
    if fx.full {
        assert_eq!(fx.pins().keys().collect::<Vec<_>>(), vec![&id]);
    }
    ok(&fx.cmd(&["start", &id]));
    assert_eq!(processes(&id, &fx.marker).len(), 1);
    ok(&fx.cmd(&["delete", "--force", &id]));
    fx.assert_clean(&id, Some(&group), &before);
    fx.release_block(&id);
}

#[test]
fn parallel_force_deletes_of_one_container_all_succeed() {
    if !can_run() {
        return;
    }
    let fx = Fixture::new(7);
    let before = mounts();
    let id = format!("deletes-{}", std::process::id());
    ok(&fx.create(&fx.sleeper, &id));
    ok(&fx.cmd(&["start", &id]));
    assert_eq!(fx.rt.status(&id).as_deref(), Some("running"));
    let group = PathBuf::from(fx.state_file(&id).unwrap()["cgroup"].as_str().unwrap());
    for out in at_once(10, |_| fx.cmd(&["delete", "--force", &id])) {
        ok(&out);
    }
    fx.assert_clean(&id, Some(&group), &before);
    fx.release_block(&id);
}

#[test]
fn a_create_after_a_crashed_create_of_the_same_id_says_it_exists() {
    // The runtime does not take over a dead creator's leftovers: the id stays taken
    // (`state` calls it stopped) until `delete --force`, and a create says so. Before
    // the state directory exists nothing holds the id, and a create just succeeds, with
    // the block the crashed one recorded.
    if !can_run() {
        return;
    }
    let fx = Fixture::new(8);
    let dir = fx.sleeper.dir.to_str().unwrap();
    for point in [
        "create.after-id-block",
        "create.after-state-dir",
        "create.after-limits",
        "create.after-init-ready",
        "create.after-created",
    ] {
        let id = format!("again-{}-{point}", std::process::id());
        let before = mounts();
        let out = fx.faulty(point, &["create", "--bundle", dir, &id]);
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{point}");
        let block = fx.blocks()[&id];
        let leftover = names_in(&fx.rt.root.join(&id));
        let group = fx
            .state_file(&id)
            .and_then(|s| s["cgroup"].as_str().map(PathBuf::from));
        let again = fx.create(&fx.sleeper, &id);
        if point == "create.after-id-block" {
            ok(&again);
            assert_eq!(fx.rt.status(&id).as_deref(), Some("created"));
        } else {
            fails_with(&again, &format!("container {id} already exists"));
            // The refused create touched nothing of what the crash left.
            assert_eq!(names_in(&fx.rt.root.join(&id)), leftover, "{point}");
            if let Some(g) = &group {
                let should_exist = point != "create.after-state-dir";
                assert_eq!(g.exists(), should_exist, "{point}: {}", g.display());
            }
            let expected = if point == "create.after-created" {
                "created"
            } else {
                "stopped"
            };
            if point != "create.after-state-dir" {
                assert_eq!(fx.rt.status(&id).as_deref(), Some(expected), "{point}");
            }
        }
        assert_eq!(fx.blocks()[&id], block, "{point}: the block changed");
        ok(&fx.cmd(&["delete", "--force", &id]));
        fx.assert_clean(&id, group.as_deref(), &before);
        fx.release_block(&id);
    }
}
