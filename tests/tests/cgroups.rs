//! cgroup v2 limits (`linux.resources`): written into the container's group before its
//! first process runs, observed from inside the container (its cgroup namespace shows
//! its own group at /sys/fs/cgroup) and by effect. These need a host with cgroup v2
//! controllers (the Debian 13 VM); on a host without them, a limit must fail naming
//! the missing controller.

use left4me_runtime_tests::*;
use serde_json::json;

/// The controllers the container's parent group can hand out, if the host is pure v2.
fn v2_controllers() -> Option<String> {
    let text = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok()?;
    text.contains("memory").then_some(text)
}

#[test]
fn limits_appear_in_the_containers_group() {
    if !can_run() {
        return;
    }
    let Some(controllers) = v2_controllers() else {
        eprintln!("skipped: no cgroup v2 controllers here (see the VM suite)");
        return;
    };
    assert!(controllers.contains("pids") && controllers.contains("cpuset"));
    let rt = Runtime::new();
    let mut b = Bundle::shell(
        "cd /sys/fs/cgroup; for f in memory.max memory.low memory.high memory.swap.max \
         pids.max cpu.max cpu.weight cpuset.cpus io.weight; do echo \"$f=$(cat $f | head -1)\"; done",
    );
    b.edit(|c| {
        c["linux"]["resources"] = json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "memory": {"limit": 67108864, "reservation": 16777216, "swap": 67108864},
            "pids": {"limit": 64},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0"},
            "blockIO": {"weight": 500},
            "unified": {"memory.high": "50331648"}
        });
    });
    let out = ok(&rt.run(&b, "cg-limits"));
    for line in [
        "memory.max=67108864",
        "memory.low=16777216",
        "memory.high=50331648",
        "memory.swap.max=0",
        "pids.max=64",
        "cpu.max=50000 100000",
        "cpu.weight=39",
        "cpuset.cpus=0",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // io.weight needs the io controller; its file shows "default N".
    if controllers.contains("io") {
        assert!(out.contains("io.weight=default 4950"), "{out}");
    }
}

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    if !can_run() || v2_controllers().is_none() {
        return;
    }
    let rt = Runtime::new();
    // The bomb runs in a child shell (which dies when fork fails); the outer shell then
    // reads the counters with builtins only, since it cannot fork either.
    let mut b = Bundle::shell(
        "sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 30 & done' 2>/dev/null; \
         read current < /sys/fs/cgroup/pids.current; echo $current; \
         while read line; do echo \"$line\"; done < /sys/fs/cgroup/pids.events",
    );
    b.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 10}));
    let out = ok(&rt.run(&b, "cg-pids"));
    let current: u32 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        current <= 10,
        "pids.current {current} above pids.max:\n{out}"
    );
    assert!(
        out.contains("max ") && !out.contains("max 0"),
        "no fork refused:\n{out}"
    );
}

#[test]
fn memory_max_gets_a_hog_oom_killed() {
    if !can_run() || v2_controllers().is_none() {
        return;
    }
    let rt = Runtime::new();
    // The child shell keeps the whole 200 MB string in memory: it grows until killed,
    // while the outer shell stays small and reports. The outer shell is shielded
    // (oomScoreAdj -500) and the hog volunteers (1000), so the killer's choice is fixed.
    let mut b = Bundle::shell(
        "sh -c 'echo 1000 > /proc/self/oom_score_adj; \
         x=$(head -c 200000000 /dev/zero | tr \"\\0\" a); echo ${#x}'; echo status=$?; \
         grep oom_kill /sys/fs/cgroup/memory.events",
    );
    b.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
        c["process"]["oomScoreAdj"] = json!(-500);
    });
    let run = rt.run(&b, "cg-oom");
    let out = ok(&run);
    assert!(out.contains("status=137"), "the hog was not killed:\n{out}");
    // `run` tells the owner why, in one line on stderr.
    let err = stderr(&run);
    let line = err
        .lines()
        .find(|l| l.contains("killed by the OOM killer"))
        .unwrap_or_else(|| panic!("no OOM line on stderr: {err}"));
    assert!(
        line.contains("container cg-oom") && line.contains("memory.max=33554432"),
        "{line}"
    );
    let kills: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(kills >= 1, "memory.events shows no oom_kill:\n{out}");
}

#[test]
fn a_limit_without_its_controller_fails_naming_it() {
    if !can_run() {
        return;
    }
    if v2_controllers().is_some() {
        eprintln!("skipped: every controller is available here");
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["resources"]["memory"] = json!({"limit": 100000000}));
    let err = fails_with(
        &rt.run(&b, "cg-missing"),
        "the memory controller is not available",
    );
    assert!(err.contains("linux.resources.memory.limit"), "{err}");
    assert!(rt.state("cg-missing").is_none(), "state left behind");
}

#[test]
fn invalid_values_are_refused_before_anything_exists() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| c["linux"]["resources"]["cpu"] = json!({"cpus": "5-2"}));
    fails_with(&rt.run(&b, "cg-invalid"), "linux.resources.cpu.cpus");
    assert!(rt.state("cg-invalid").is_none());
    assert!(!rt.root.join("cg-invalid").exists());
}

#[test]
fn pause_freezes_and_resume_thaws_the_group() {
    // cgroup.freeze is a core cgroup2 file: this works on a host without controllers too.
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b =
        Bundle::shell("i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done");
    b.edit(|c| c["root"]["readonly"] = json!(false));
    let id = "cg-pause";
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    let count = b.rootfs().join("tmp/count");
    let read = || std::fs::read_to_string(&count).unwrap_or_default();
    wait_for(|| !read().is_empty());
    fails_with(&rt.cmd(&["resume", id]), "running");
    ok(&rt.cmd(&["pause", id]));
    assert_eq!(rt.status(id).as_deref(), Some("paused"));
    let state = rt.state(id).unwrap();
    let cgroup = cgroup_dir_of(state["pid"].as_i64().unwrap());
    let events = std::fs::read_to_string(cgroup.join("cgroup.events")).unwrap();
    assert!(events.lines().any(|l| l == "frozen 1"), "{events}");
    fails_with(&rt.cmd(&["exec", id, "true"]), "paused");
    fails_with(&rt.cmd(&["delete", id]), "paused");
    ok(&rt.cmd(&["resume", id]));
    assert_eq!(rt.status(id).as_deref(), Some("running"));
    let before = read();
    wait_for(|| read() != before && !read().is_empty());
    // A paused container can still be killed and deleted.
    ok(&rt.cmd(&["pause", id]));
    ok(&rt.cmd(&["delete", "--force", id]));
    assert!(rt.state(id).is_none());
    assert!(!cgroup.exists(), "cgroup left behind");
}

/// The host directory of the cgroup2 group `pid` is in.
fn cgroup_dir_of(pid: i64) -> std::path::PathBuf {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let rel = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    let mount = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|m| {
            std::path::Path::new(m).join("cgroup.procs").exists()
                && std::fs::read_to_string("/proc/self/mountinfo")
                    .unwrap()
                    .lines()
                    .any(|l| l.contains(&format!(" {m} ")) && l.contains(" - cgroup2 "))
        })
        .unwrap();
    std::path::Path::new(mount).join(rel.trim_start_matches('/'))
}

#[test]
fn update_changes_the_limits_of_a_running_container() {
    if !can_run() || v2_controllers().is_none() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "600"]);
    b.edit(|c| {
        c["linux"]["resources"]["memory"] = json!({"limit": 67108864});
        c["linux"]["resources"]["pids"] = json!({"limit": 50});
    });
    let id = "cg-update";
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    let group = cgroup_dir_of(rt.state(id).unwrap()["pid"].as_i64().unwrap());
    let read = |f: &str| {
        std::fs::read_to_string(group.join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory.max"), "67108864");
    ok(&rt.cmd(&[
        "update",
        "--memory",
        "134217728",
        "--memory-swap",
        "134217728",
        "--pids-limit",
        "20",
        "--cpu-quota",
        "20000",
        "--cpu-period",
        "100000",
        "--cpu-shares",
        "2048",
        id,
    ]));
    assert_eq!(read("memory.max"), "134217728");
    assert_eq!(read("memory.swap.max"), "0");
    assert_eq!(read("pids.max"), "20");
    assert_eq!(read("cpu.max"), "20000 100000");
    assert_eq!(read("cpu.weight"), "79");
    // --resources FILE, and -1 for unlimited.
    let file = b.dir.join("resources.json");
    std::fs::write(
        &file,
        r#"{"pids": {"limit": -1}, "unified": {"memory.high": "100000000"}}"#,
    )
    .unwrap();
    ok(&rt.cmd(&["update", "--resources", file.to_str().unwrap(), id]));
    assert_eq!(read("pids.max"), "max");
    assert_eq!(
        read("memory.high"),
        "99999744",
        "memory.high is page-rounded"
    );
    fails_with(
        &rt.cmd(&["update", "--cpuset-cpus", "9-1", id]),
        "linux.resources.cpu.cpus",
    );
    ok(&rt.cmd(&["delete", "--force", id]));
    fails_with(&rt.cmd(&["update", "--memory", "1", id]), "does not exist");
}

/// Opens the device nodes `/dev/fakesda` (b 8:0) and `/dev/fakemem` (c 1:1), made in
/// scratch and bind-mounted in, and reports how each open ended: `denied` is the device
/// program's EPERM; `absent`/`ok`/`other` mean it let the open through to the driver.
const PROBE: &str = "for d in fakesda fakemem; do for m in r w; do \
     if [ $m = r ]; then err=$(head -c 1 /dev/$d 2>&1 >/dev/null); else err=$(true 2>&1 >/dev/$d); fi; \
     case \"$err\" in *'not permitted'*) r=denied;; *'No such device'*) r=absent;; '') r=ok;; *) r=\"other:$err\";; esac; \
     echo $d.$m=$r; done; done; echo null=$(echo x >/dev/null 2>&1 && echo ok)";

fn device_bundle(devices: serde_json::Value) -> Bundle {
    let mut b = Bundle::shell(PROBE);
    let nodes = b.dir.join("nodes");
    std::fs::create_dir_all(&nodes).unwrap();
    for (name, kind, major, minor) in [("fakesda", "b", "8", "0"), ("fakemem", "c", "1", "1")] {
        let st = std::process::Command::new("mknod")
            .arg(nodes.join(name))
            .args([kind, major, minor])
            .status()
            .unwrap();
        assert!(st.success(), "mknod {name}");
    }
    b.edit(|c| {
        for name in ["fakesda", "fakemem"] {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": format!("/dev/{name}"), "type": "bind",
                "source": nodes.join(name), "options": ["bind"]
            }));
        }
        c["linux"]["resources"]["devices"] = devices;
    });
    b
}

#[test]
fn the_device_program_denies_unlisted_devices_and_allows_the_defaults() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    // runc's default: deny everything; the standard devices stay usable.
    let b = device_bundle(json!([{"allow": false, "access": "rwm"}]));
    let out = ok(&rt.run(&b, "cg-dev-deny"));
    for line in [
        "fakesda.r=denied",
        "fakesda.w=denied",
        "fakemem.r=denied",
        "null=ok",
    ] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // Later rules override earlier ones, per access bit: sda readable, not writable.
    let b = device_bundle(json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"},
        {"allow": false, "type": "b", "major": 8, "minor": 0, "access": "w"},
    ]));
    let out = ok(&rt.run(&b, "cg-dev-allow"));
    for line in ["fakesda.r=absent", "fakesda.w=denied", "fakemem.r=denied"] {
        assert!(out.lines().any(|l| l == line), "{line} missing:\n{out}");
    }
    // No devices list: no program, the driver answers.
    let b = device_bundle(serde_json::Value::Null);
    let out = ok(&rt.run(&b, "cg-dev-none"));
    assert!(out.lines().any(|l| l == "fakesda.r=absent"), "{out}");
}

#[test]
fn update_replaces_the_device_program() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = device_bundle(json!([{"allow": false, "access": "rwm"}]));
    b.edit(|c| c["process"]["args"] = json!(["sleep", "600"]));
    let id = "cg-dev-update";
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    let probe = |rt: &Runtime| ok(&rt.cmd(&["exec", id, "sh", "-c", PROBE]));
    assert!(probe(&rt).contains("fakesda.r=denied"));
    let file = b.dir.join("devices.json");
    std::fs::write(
        &file,
        r#"{"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "r"}]}"#,
    )
    .unwrap();
    ok(&rt.cmd(&["update", "--resources", file.to_str().unwrap(), id]));
    let out = probe(&rt);
    assert!(out.contains("fakesda.r=absent"), "{out}");
    assert!(out.contains("fakesda.w=denied"), "{out}");
    ok(&rt.cmd(&["delete", "--force", id]));
}

/// Runs the runtime with `args` from inside cgroup `group` (as systemd starts a service's
/// main process in the service's group).
fn runtime_in_group(rt: &Runtime, group: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(group)
        .arg(runtime_bin())
        .arg("--root")
        .arg(&rt.root)
        .args(args);
    run_captured(&mut cmd)
}

#[test]
fn a_delegated_service_group_gets_a_supervisor_leaf_and_sibling_containers() {
    if !can_run() || v2_controllers().is_none() {
        return;
    }
    // A simulated `Delegate=yes` service: its group, with controllers handed down to it.
    let svc = std::path::Path::new("/sys/fs/cgroup/l4m-test-delegate.service");
    let _ = std::fs::remove_dir(svc.join("supervisor"));
    let _ = std::fs::remove_dir(svc);
    std::fs::create_dir(svc).unwrap();
    std::fs::write("/sys/fs/cgroup/cgroup.subtree_control", "+memory +pids").unwrap();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "600"]);
    b.edit(|c| {
        c["linux"]["resources"] = json!({"memory": {"limit": 67108864}, "pids": {"limit": 32}});
        c["linux"].as_object_mut().unwrap().remove("cgroupsPath");
    });
    let bundle = b.dir.to_str().unwrap();
    ok(&runtime_in_group(
        &rt,
        svc,
        &["create", "--bundle", bundle, "deleg-a"],
    ));
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    // The runtime moved out of the service group into supervisor/, the container sits in
    // a sibling leaf with its limits, and the service group holds no process.
    assert_eq!(
        read(svc.join("cgroup.procs")).trim(),
        "",
        "internal processes left"
    );
    assert!(svc.join("supervisor").is_dir());
    let a = svc.join("left4me-deleg-a");
    let init = rt.state("deleg-a").unwrap()["pid"].as_i64().unwrap();
    assert_eq!(read(a.join("cgroup.procs")).trim(), init.to_string());
    assert_eq!(read(a.join("memory.max")).trim(), "67108864");
    assert_eq!(read(a.join("pids.max")).trim(), "32");
    let enabled = read(svc.join("cgroup.subtree_control"));
    assert!(
        enabled.contains("memory") && enabled.contains("pids"),
        "{enabled}"
    );
    // A runtime started from the supervisor leaf puts its container next to it, not inside.
    ok(&runtime_in_group(
        &rt,
        &svc.join("supervisor"),
        &["create", "--bundle", bundle, "deleg-b"],
    ));
    assert!(svc.join("left4me-deleg-b/memory.max").exists());
    assert!(!svc.join("supervisor/left4me-deleg-b").exists());
    // `run` in the foreground, started in a fresh service group (as systemd does on every
    // start), moves to supervisor/ and stays there while its container runs.
    let svc2 = std::path::Path::new("/sys/fs/cgroup/l4m-test-delegate2.service");
    let _ = std::fs::remove_dir(svc2.join("supervisor"));
    let _ = std::fs::remove_dir(svc2);
    std::fs::create_dir(svc2).unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("echo $$ > \"$1/cgroup.procs\" && shift && exec \"$@\"")
        .arg("sh")
        .arg(svc2)
        .arg(runtime_bin())
        .arg("--root")
        .arg(&rt.root)
        .args(["run", "--bundle", bundle, "deleg-c"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for(|| {
        rt.status("deleg-c").as_deref() == Some("running")
            || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "run exited before its container ran"
    );
    let own = read(format!("/proc/{}/cgroup", child.id()).into());
    assert!(
        own.trim()
            .ends_with("/l4m-test-delegate2.service/supervisor"),
        "{own}"
    );
    assert_eq!(read(svc2.join("cgroup.procs")).trim(), "");
    assert!(svc2.join("left4me-deleg-c/memory.max").exists());
    for (group, id) in [(svc, "deleg-a"), (svc, "deleg-b"), (svc2, "deleg-c")] {
        ok(&rt.cmd(&["delete", "--force", id]));
        assert!(
            !group.join(format!("left4me-{id}")).exists(),
            "{id} group left"
        );
    }
    child.wait().unwrap();
    for group in [svc, svc2] {
        std::fs::remove_dir(group.join("supervisor")).unwrap();
        std::fs::remove_dir(group).unwrap();
    }
}

#[test]
fn events_report_stats_and_oom_kills() {
    if !can_run() {
        return;
    }
    let v2 = v2_controllers().is_some();
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "600"]);
    if v2 {
        b.edit(|c| {
            c["linux"]["resources"]["memory"] = json!({"limit": 33554432, "swap": 33554432});
            c["linux"]["resources"]["pids"] = json!({"limit": 64});
        });
    }
    let id = "cg-events";
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    let line = ok(&rt.cmd(&["events", "--stats", id]));
    let ev: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], id);
    // cpu.stat is a core file: every cgroup2 group has usage figures.
    assert!(
        ev["data"]["cpu"]["usage"]["total"].as_u64().is_some(),
        "{ev}"
    );
    if !v2 {
        assert!(ev["data"].get("memory").is_none(), "{ev}");
        ok(&rt.cmd(&["delete", "--force", id]));
        return;
    }
    assert_eq!(ev["data"]["memory"]["usage"]["limit"], 33554432, "{ev}");
    assert_eq!(ev["data"]["pids"]["limit"], 64, "{ev}");
    assert!(ev["data"]["pids"]["current"].as_u64().unwrap() >= 1, "{ev}");
    // The stream: stats every interval, and an oom event when a process is OOM-killed.
    let log = b.dir.join("events.log");
    let mut events = rt.command();
    events
        .args(["events", "--interval", "500ms", id])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null());
    let mut stream = events.spawn().unwrap();
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(|| lines().lines().filter(|l| l.contains("\"stats\"")).count() >= 2);
    let oom = json!({"type": "oom", "id": id});
    let has_oom = |text: String| {
        text.lines()
            .any(|l| serde_json::from_str::<serde_json::Value>(l).ok().as_ref() == Some(&oom))
    };
    assert!(
        !has_oom(lines()),
        "an oom event before any OOM:\n{}",
        lines()
    );
    rt.cmd(&[
        "exec",
        id,
        "sh",
        "-c",
        "echo 1000 > /proc/self/oom_score_adj; x=$(head -c 200000000 /dev/zero | tr '\\0' a)",
    ]);
    wait_for(|| has_oom(lines()));
    ok(&rt.cmd(&["delete", "--force", id]));
    // The stream ends by itself once the container is gone.
    wait_for(|| matches!(stream.try_wait(), Ok(Some(_))));
    for l in lines().lines() {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{l}: {e}"));
    }
}

#[test]
fn unlimited_values_need_no_controller() {
    if !can_run() || v2_controllers().is_some() {
        return;
    }
    // What podman sends for --pids-limit 0 / -1, and memory -1: no limit, no controller.
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    b.edit(|c| {
        c["linux"]["resources"]["pids"] = json!({"limit": 0});
        c["linux"]["resources"]["memory"] = json!({"limit": -1});
    });
    ok(&rt.run(&b, "cg-unlimited"));
    b.edit(|c| c["linux"]["resources"]["pids"] = json!({"limit": 5}));
    fails_with(
        &rt.run(&b, "cg-unlimited"),
        "the pids controller is not available",
    );
}
