//! Core pinning (`org.left4me.cpuset=auto`), `cpus`, and the container's CPU view
//! (/sys/devices/system/cpu/online and /proc/cpuinfo follow its cpuset). The pinning
//! needs the cpuset controller (the Debian 13 VM); on a host without it, asking for it
//! must fail naming the controller.

use std::collections::BTreeMap;

use left4me_runtime_tests::*;
use serde_json::json;

fn has_cpuset() -> bool {
    std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpuset"))
}

fn online_cpus() -> Vec<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let mut out = Vec::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

fn pinned_bundle(args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| c["annotations"] = json!({"org.left4me.cpuset": "auto"}));
    b
}

/// `cpus -f json` as container id → CPU.
fn placements(rt: &Runtime) -> BTreeMap<String, u64> {
    let out = ok(&rt.cmd(&["cpus", "--format", "json"]));
    let cpus: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let mut map = BTreeMap::new();
    for cpu in cpus.as_array().unwrap() {
        for id in cpu["containers"].as_array().unwrap() {
            map.insert(
                id.as_str().unwrap().to_string(),
                cpu["cpu"].as_u64().unwrap(),
            );
        }
    }
    map
}

#[test]
fn auto_pinning_without_the_cpuset_controller_fails_naming_it() {
    if !can_run() || has_cpuset() {
        return;
    }
    let rt = Runtime::new();
    let b = pinned_bundle(&["true"]);
    let err = fails_with(&rt.run(&b, "pin-none"), "cpuset");
    assert!(err.contains("org.left4me.cpuset"), "{err}");
    assert!(rt.state("pin-none").is_none());
    assert!(placements(&rt).is_empty());
}

#[test]
fn bad_pinning_requests_are_refused_before_anything_exists() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = pinned_bundle(&["true"]);
    b.edit(|c| c["annotations"]["org.left4me.cpuset"] = json!("3"));
    fails_with(&rt.run(&b, "pin-bad"), "the only value is \"auto\"");
    b.edit(|c| {
        c["annotations"]["org.left4me.cpuset"] = json!("auto");
        c["linux"]["resources"]["cpu"] = json!({"cpus": "0"});
    });
    fails_with(
        &rt.run(&b, "pin-bad"),
        "conflicts with linux.resources.cpu.cpus",
    );
    assert!(!rt.root.join("pin-bad").exists());
}

#[test]
fn instances_spread_over_the_cpus_and_see_only_their_own() {
    if !can_run() || !has_cpuset() {
        return;
    }
    let cpus = online_cpus();
    let rt = Runtime::new();
    let b = pinned_bundle(&["sleep", "600"]);
    let ids: Vec<String> = (0..2 * cpus.len()).map(|i| format!("pin-{i}")).collect();
    for id in &ids {
        ok(&rt.create(&b, id));
        ok(&rt.cmd(&["start", id]));
    }
    // Round robin over the CPUs (the VM has no SMT siblings): each CPU gets two.
    let placed = placements(&rt);
    assert_eq!(placed.len(), ids.len(), "{placed:?}");
    for cpu in &cpus {
        let n = placed.values().filter(|c| **c == *cpu as u64).count();
        assert_eq!(n, 2, "CPU {cpu}: {placed:?}");
    }
    let table = ok(&rt.cmd(&["cpus"]));
    assert!(
        table.contains("pin-0") && table.starts_with("CPU"),
        "{table}"
    );
    let host_flags = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap()
        .to_string();
    for id in &ids {
        let cpu = placed[id];
        let out = ok(&rt.cmd(&[
            "exec",
            id,
            "sh",
            "-c",
            "echo online=$(cat /sys/devices/system/cpu/online); echo nproc=$(nproc); \
             echo processors=$(grep -c ^processor /proc/cpuinfo); \
             grep ^processor /proc/cpuinfo; grep -m1 ^flags /proc/cpuinfo; \
             echo cpuset=$(cat /sys/fs/cgroup/cpuset.cpus)",
        ]));
        for line in [
            format!("online={cpu}"),
            "nproc=1".to_string(),
            "processors=1".to_string(),
            format!("cpuset={cpu}"),
        ] {
            assert!(
                out.lines().any(|l| l == line),
                "{id}: {line} missing:\n{out}"
            );
        }
        assert!(
            out.lines()
                .any(|l| l.starts_with("processor") && l.ends_with(&format!(": {cpu}"))),
            "{out}"
        );
        assert!(
            out.lines().any(|l| l == host_flags),
            "flags changed:\n{out}"
        );
    }
    // Deleting releases the CPUs.
    for id in &ids {
        ok(&rt.cmd(&["delete", "--force", id]));
    }
    assert!(placements(&rt).is_empty());
}

#[test]
fn instances_created_at_once_spread_evenly() {
    if !can_run() || !has_cpuset() {
        return;
    }
    let cpus = online_cpus();
    let rt = std::sync::Arc::new(Runtime::new());
    let b = std::sync::Arc::new(pinned_bundle(&["sleep", "600"]));
    let n = 10 * cpus.len();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (rt, b) = (rt.clone(), b.clone());
            std::thread::spawn(move || ok(&rt.create(&b, &format!("burst-{i}"))))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let placed = placements(&rt);
    for i in 0..n {
        let id = format!("burst-{i}");
        let st = rt.state(&id);
        assert!(
            placed.contains_key(&id),
            "{id} not pinned; state {st:?}; {placed:?}"
        );
    }
    for cpu in &cpus {
        let count = placed.values().filter(|c| **c == *cpu as u64).count();
        assert_eq!(count, 10, "CPU {cpu}: {placed:?}");
    }
    for i in 0..n {
        ok(&rt.cmd(&["delete", "--force", &format!("burst-{i}")]));
    }
}

#[test]
fn the_cpu_view_follows_update() {
    if !can_run() || !has_cpuset() || online_cpus().len() < 2 {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "600"]);
    b.edit(|c| c["linux"]["resources"]["cpu"] = json!({"cpus": "1"}));
    let id = "view-update";
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    let online = |rt: &Runtime| ok(&rt.cmd(&["exec", id, "cat", "/sys/devices/system/cpu/online"]));
    assert_eq!(online(&rt).trim(), "1");
    ok(&rt.cmd(&["update", "--cpuset-cpus", "0", id]));
    assert_eq!(online(&rt).trim(), "0");
    let info = ok(&rt.cmd(&["exec", id, "grep", "^processor", "/proc/cpuinfo"]));
    assert_eq!(info.lines().count(), 1, "{info}");
    // The view is read-only for the container.
    let out = rt.cmd(&[
        "exec",
        id,
        "sh",
        "-c",
        "echo 0-7 > /sys/devices/system/cpu/online",
    ]);
    assert!(!out.status.success());
    ok(&rt.cmd(&["delete", "--force", id]));
}

#[test]
fn a_container_on_every_cpu_sees_the_host_files() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("cat /sys/devices/system/cpu/online; grep -c ^processor /proc/cpuinfo");
    let out = ok(&rt.run(&b, "view-all"));
    let host_online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    assert_eq!(out.lines().next().unwrap(), host_online.trim());
    assert_eq!(
        out.lines().nth(1).unwrap().parse::<usize>().unwrap(),
        online_cpus().len()
    );
}
