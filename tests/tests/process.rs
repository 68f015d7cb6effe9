//! `process` and the per-process parts of `linux`, observed from inside the container:
//! capabilities, user, umask, no_new_privs, rlimits, oom score, scheduler, I/O priority,
//! CPU affinity, personality, env/cwd/args, UTS names, user namespaces, namespace joins,
//! sysctls and exit codes.
//!
//! Values are read by the container's first program (`sh`) through shell redirections
//! (`show FILE`), so no further exec can change what is observed.

use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// Prints a file with shell builtins only (no fork, no exec).
const SHOW: &str = "show() { while IFS= read -r l; do printf '%s\\n' \"$l\"; done < \"$1\"; }; ";

const CAP_CHOWN: u32 = 0;
const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_SYS_RESOURCE: u32 = 24;
const CAP_AUDIT_WRITE: u32 = 29;

/// A container id unique across concurrently running test binaries (cgroups are named
/// after the id).
fn cid(name: &str) -> String {
    format!("proc-{}-{name}", std::process::id())
}

/// A `sh -c` bundle with `show` defined.
fn shell(script: &str) -> Bundle {
    Bundle::shell(&format!("{SHOW}{script}"))
}

/// Runs the bundle in the foreground on a fresh runtime and returns its stdout.
#[track_caller]
fn run_ok(b: &Bundle, name: &str) -> String {
    ok(&Runtime::new().run(b, &cid(name)))
}

/// The value of `Key:` in /proc/PID/status-like text.
#[track_caller]
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {key}: in\n{text}"))
}

/// A capability mask as /proc/PID/status prints it.
fn mask(caps: &[u32]) -> String {
    format!("{:016x}", caps.iter().fold(0u64, |m, c| m | 1 << c))
}

fn names(caps: &[&str]) -> Value {
    caps.iter().map(|c| Value::from(*c)).collect()
}

/// Soft and hard columns of a /proc/PID/limits line.
#[track_caller]
fn limit(limits: &str, name: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in\n{limits}"));
    let cols: Vec<&str> = line[name.len()..].split_whitespace().collect();
    (cols[0].to_string(), cols[1].to_string())
}

fn host_rlimit(resource: libc::__rlimit_resource_t) -> (u64, u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(resource, &mut r) }, 0);
    (r.rlim_cur, r.rlim_max)
}

fn host_has_cap(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    u64::from_str_radix(field(&status, "CapEff"), 16).unwrap() & (1 << cap) != 0
}

/// The CPUs this test may use (its own affinity).
fn host_cpus() -> Vec<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mut cpus = Vec::new();
    for part in field(&status, "Cpus_allowed_list").split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
                cpus.extend((a..=b).map(|c| c.to_string()));
            }
            None => cpus.push(part.to_string()),
        }
    }
    cpus
}

/// `sh -c SCRIPT` as a foreground `exec` in a running container, returning stdout.
#[track_caller]
fn exec_ok(rt: &Runtime, id: &str, script: &str) -> String {
    ok(&rt.cmd(&["exec", id, "sh", "-c", &format!("{SHOW}{script}")]))
}

/// Creates and starts a long-running container; returns its pid.
#[track_caller]
fn start_sleeper(rt: &Runtime, b: &Bundle, id: &str) -> i64 {
    ok(&rt.create(b, id));
    ok(&rt.cmd(&["start", id]));
    rt.state(id).unwrap()["pid"].as_i64().unwrap()
}

#[test]
fn all_five_capability_sets_are_applied() {
    if !can_run() {
        return;
    }
    let mut b = shell("show /proc/self/status");
    b.edit(|c| {
        c["process"]["capabilities"] = json!({
            "bounding": names(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]),
            "effective": names(&["CAP_CHOWN", "CAP_KILL"]),
            "permitted": names(&["CAP_CHOWN", "CAP_KILL"]),
            "inheritable": names(&["CAP_KILL"]),
            "ambient": names(&["CAP_KILL"]),
        });
    });
    let out = run_ok(&b, "caps");
    // Root's exec would gain the whole bounding set, but noNewPrivileges (true in the
    // default spec) caps the permitted set at what the runtime set before exec.
    assert_eq!(
        field(&out, "CapBnd"),
        mask(&[CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE])
    );
    assert_eq!(field(&out, "CapEff"), mask(&[CAP_CHOWN, CAP_KILL]));
    assert_eq!(field(&out, "CapPrm"), mask(&[CAP_CHOWN, CAP_KILL]));
    assert_eq!(field(&out, "CapInh"), mask(&[CAP_KILL]));
    assert_eq!(field(&out, "CapAmb"), mask(&[CAP_KILL]));
}

#[test]
fn default_spec_gives_root_runc_default_capabilities() {
    if !can_run() {
        return;
    }
    let out = run_ok(&shell("show /proc/self/status"), "defcaps");
    let runc_default = mask(&[CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE]);
    assert_eq!(runc_default, "0000000020000420");
    for set in ["CapBnd", "CapEff", "CapPrm"] {
        assert_eq!(field(&out, set), runc_default, "{set}");
    }
    assert_eq!(field(&out, "CapInh"), mask(&[]));
    assert_eq!(field(&out, "CapAmb"), mask(&[]));
}

#[test]
fn unknown_capability_is_dropped_with_a_warning_and_the_container_runs() {
    if !can_run() {
        return;
    }
    let mut b = shell("show /proc/self/status");
    b.edit(|c| {
        let caps = names(&["CAP_KILL", "CAP_FROM_THE_FUTURE"]);
        for set in ["bounding", "effective", "permitted"] {
            c["process"]["capabilities"][set] = caps.clone();
        }
    });
    let out = Runtime::new().run(&b, &cid("unknowncap"));
    let text = ok(&out);
    assert!(
        stderr(&out).contains("CAP_FROM_THE_FUTURE"),
        "no warning naming the capability: {}",
        stderr(&out)
    );
    assert_eq!(field(&text, "CapBnd"), mask(&[CAP_KILL]));
    assert_eq!(field(&text, "CapEff"), mask(&[CAP_KILL]));
}

#[test]
fn user_uid_gid_and_additional_gids_are_applied() {
    if !can_run() {
        return;
    }
    let mut b = shell("show /proc/self/status; id -u; id -g; id -G");
    b.edit(|c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000, "additionalGids": [980, 65534]});
    });
    let out = run_ok(&b, "user");
    assert_eq!(field(&out, "Uid"), "1000\t1000\t1000\t1000");
    assert_eq!(field(&out, "Gid"), "1000\t1000\t1000\t1000");
    let groups: Vec<&str> = field(&out, "Groups").split_whitespace().collect();
    assert_eq!(groups, ["980", "65534"]);
    let ids: Vec<&str> = out.lines().rev().take(3).collect();
    assert_eq!(ids, ["1000 980 65534", "1000", "1000"], "id output: {out}");
}

#[test]
fn non_root_user_keeps_only_ambient_capabilities_across_exec() {
    if !can_run() {
        return;
    }
    let caps = |ambient: &[&str]| {
        json!({
            "bounding": names(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"]),
            "effective": names(&["CAP_CHOWN", "CAP_KILL"]),
            "permitted": names(&["CAP_CHOWN", "CAP_KILL"]),
            "inheritable": names(&["CAP_KILL"]),
            "ambient": names(ambient),
        })
    };
    for (ambient, expect) in [(vec!["CAP_KILL"], mask(&[CAP_KILL])), (vec![], mask(&[]))] {
        let mut b = shell("show /proc/self/status");
        b.edit(|c| {
            c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
            c["process"]["capabilities"] = caps(&ambient);
        });
        let out = run_ok(&b, "userambient");
        assert_eq!(field(&out, "CapEff"), expect, "ambient {ambient:?}");
        assert_eq!(field(&out, "CapPrm"), expect, "ambient {ambient:?}");
        assert_eq!(field(&out, "CapAmb"), expect, "ambient {ambient:?}");
        assert_eq!(field(&out, "CapInh"), mask(&[CAP_KILL]));
        assert_eq!(
            field(&out, "CapBnd"),
            mask(&[CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE])
        );
    }
}

#[test]
fn home_is_taken_from_passwd_when_env_lacks_it() {
    if !can_run() {
        return;
    }
    // runc sets HOME from the container's /etc/passwd if process.env has none.
    let mut b = shell("echo \"${HOME-unset}\"");
    b.edit(|c| c["process"]["user"] = json!({"uid": 1000, "gid": 1000}));
    assert_eq!(run_ok(&b, "home"), "/home/user\n");
}

#[test]
fn umask_is_applied() {
    if !can_run() {
        return;
    }
    let mut b = shell("umask; : > /dev/shm/f; mkdir /dev/shm/d; stat -c %a /dev/shm/f /dev/shm/d");
    b.edit(|c| c["process"]["user"]["umask"] = json!(0o027));
    assert_eq!(run_ok(&b, "umask"), "0027\n640\n750\n");
}

#[test]
fn no_new_privileges_sets_the_flag_only_when_true() {
    if !can_run() {
        return;
    }
    for (nnp, expect) in [(true, "1"), (false, "0")] {
        let mut b = shell("show /proc/self/status");
        b.edit(|c| c["process"]["noNewPrivileges"] = json!(nnp));
        let out = run_ok(&b, "nnp");
        assert_eq!(field(&out, "NoNewPrivs"), expect, "noNewPrivileges {nnp}");
    }
}

#[test]
fn rlimits_at_or_below_the_hard_limits_are_applied() {
    if !can_run() {
        return;
    }
    let (_, nproc_hard) = host_rlimit(libc::RLIMIT_NPROC);
    let nproc_hard = nproc_hard.min(5000);
    let nproc_soft = nproc_hard / 2;
    let mut b = shell("show /proc/self/limits");
    b.edit(|c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 4096},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_NPROC", "soft": nproc_soft, "hard": nproc_hard},
        ]);
    });
    let out = run_ok(&b, "rlimits");
    let s = |n: u64| n.to_string();
    assert_eq!(limit(&out, "Max open files"), (s(1024), s(4096)));
    assert_eq!(limit(&out, "Max core file size"), (s(0), s(0)));
    assert_eq!(limit(&out, "Max processes"), (s(nproc_soft), s(nproc_hard)));
}

#[test]
fn rlimit_above_the_allowed_hard_limit_fails_with_a_one_line_error() {
    if !can_run() {
        return;
    }
    // Without CAP_SYS_RESOURCE no hard limit can be raised; with it, NOFILE still stops
    // at fs.nr_open.
    let hard = if host_has_cap(CAP_SYS_RESOURCE) {
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap();
        nr_open.trim().parse::<u64>().unwrap() + 1
    } else {
        host_rlimit(libc::RLIMIT_NOFILE).1 + 1
    };
    let mut b = shell("echo started");
    b.edit(|c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": hard}]);
    });
    let err = refused(&b, "rlimithigh", "");
    assert!(
        err.to_lowercase().contains("nofile"),
        "error does not name the rlimit: {err}"
    );
}

#[test]
fn oom_score_adj_is_applied() {
    if !can_run() {
        return;
    }
    let mut b = shell("show /proc/self/oom_score_adj");
    b.edit(|c| c["process"]["oomScoreAdj"] = json!(500));
    assert_eq!(run_ok(&b, "oom"), "500\n");
}

/// (nice, policy) from /proc/self/stat fields 19 and 41.
fn nice_and_policy(stat: &str) -> (String, String) {
    let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    // rest[0] is field 3.
    (rest[19 - 3].to_string(), rest[41 - 3].to_string())
}

#[test]
fn scheduler_policy_and_nice_are_applied() {
    if !can_run() {
        return;
    }
    // left4me runs servers at nice -5; SCHED_BATCH is policy 3.
    for (policy, nice, expect) in [
        ("SCHED_OTHER", -5, ("-5", "0")),
        ("SCHED_BATCH", 3, ("3", "3")),
    ] {
        let mut b = shell("show /proc/self/stat");
        b.edit(|c| c["process"]["scheduler"] = json!({"policy": policy, "nice": nice}));
        let out = run_ok(&b, "sched");
        let (n, p) = nice_and_policy(&out);
        assert_eq!((n.as_str(), p.as_str()), expect, "{policy}: {out}");
    }
}

#[test]
fn io_priority_is_applied() {
    if !can_run() {
        return;
    }
    let mut b = shell("ionice -p $$");
    b.edit(|c| c["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 4}));
    assert_eq!(run_ok(&b, "ioprio"), "best-effort: prio 4\n");
}

#[test]
fn exec_cpu_affinity_initial_pins_an_exec_process() {
    if !can_run() {
        return;
    }
    let cpus = host_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    // The spec defines execCPUAffinity for exec'd processes (not the init process).
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "60"]);
    let id = cid("affinity");
    start_sleeper(&rt, &b, &id);
    let last = cpus.last().unwrap();
    let process = json!({
        "terminal": false, "cwd": "/",
        "args": ["sh", "-c", format!("{SHOW}show /proc/self/status")],
        "env": ["PATH=/bin"],
        // runc accepts a process.json without "user"; this runtime requires it.
        "user": {"uid": 0, "gid": 0},
        "execCPUAffinity": {"initial": last},
    });
    let file = b.dir.join("process.json");
    std::fs::write(&file, process.to_string()).unwrap();
    let out = ok(&rt.cmd(&["exec", "--process", file.to_str().unwrap(), &id]));
    assert_eq!(field(&out, "Cpus_allowed_list"), last.as_str());
}

#[test]
fn exec_cpu_affinity_final_applies_after_joining_the_cgroup() {
    if !can_run() {
        return;
    }
    let cpus = host_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let (first, second) = (cpus[0].clone(), cpus[1].clone());
    let rt = Runtime::new();
    let mut b = Bundle::new(&["sleep", "60"]);
    b.edit(|c| {
        c["process"]["execCPUAffinity"] = json!({"initial": first, "final": second});
    });
    let id = cid("affinityfinal");
    start_sleeper(&rt, &b, &id);
    let out = exec_ok(&rt, &id, "show /proc/self/status");
    assert_eq!(field(&out, "Cpus_allowed_list"), second);
}

#[test]
fn personality_linux32_reports_a_32_bit_machine() {
    if !can_run() {
        return;
    }
    let expect = match std::env::consts::ARCH {
        "x86_64" => "i686",
        "aarch64" => "armv8l",
        other => {
            eprintln!("skipped: no 32-bit name known for {other}");
            return;
        }
    };
    let mut b = shell("uname -m");
    b.edit(|c| c["linux"]["personality"] = json!({"domain": "LINUX32"}));
    assert_eq!(run_ok(&b, "linux32"), format!("{expect}\n"));
}

#[test]
fn env_is_exactly_the_configured_list_and_cwd_is_entered() {
    if !can_run() {
        return;
    }
    let mut b = shell("printf '%s|%s|%s|%s\\n' \"$GREETING\" \"${EMPTY-unset}\" \"$PATH\" \"${CARGO_MANIFEST_DIR-unset}\"; pwd");
    b.edit(|c| {
        c["process"]["env"] = json!(["PATH=/bin", "GREETING=hello world", "EMPTY="]);
        c["process"]["cwd"] = json!("/tmp");
    });
    assert_eq!(run_ok(&b, "envcwd"), "hello world||/bin|unset\n/tmp\n");
}

#[test]
fn missing_cwd_is_created_like_runc() {
    if !can_run() {
        return;
    }
    // runc creates process.cwd (mode 0755) before the root is made read-only.
    let mut b = shell("pwd; stat -c %a .");
    b.edit(|c| c["process"]["cwd"] = json!("/srv/game/data"));
    assert_eq!(run_ok(&b, "mkcwd"), "/srv/game/data\n755\n");
}

#[test]
fn relative_program_is_found_on_the_container_path() {
    if !can_run() {
        return;
    }
    let mut b = Bundle::new(&["hello", "arg1"]);
    let dir = b.rootfs().join("opt/bin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello"), "#!/bin/sh\necho \"hello $1\"\n").unwrap();
    let status = std::process::Command::new("chmod")
        .arg("755")
        .arg(dir.join("hello"))
        .status()
        .unwrap();
    assert!(status.success());
    b.edit(|c| c["process"]["env"] = json!(["PATH=/nonexistent:/opt/bin:/bin"]));
    assert_eq!(run_ok(&b, "relpath"), "hello arg1\n");
}

#[test]
fn missing_program_fails_with_a_one_line_error() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["no-such-program-l4m"]);
    refused(&b, "noprog", "no-such-program-l4m");
}

#[test]
fn exit_code_of_the_process_is_the_exit_code_of_run() {
    if !can_run() {
        return;
    }
    let out = Runtime::new().run(&shell("exit 7"), &cid("exit7"));
    assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
}

#[test]
fn hostname_and_domainname_are_set_in_the_uts_namespace() {
    if !can_run() {
        return;
    }
    let host_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let mut b = shell("hostname; show /proc/sys/kernel/hostname; show /proc/sys/kernel/domainname");
    b.edit(|c| {
        c["hostname"] = json!("l4m-host");
        c["domainname"] = json!("l4m.example");
    });
    assert_eq!(run_ok(&b, "uts"), "l4m-host\nl4m-host\nl4m.example\n");
    let host_after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(host_before, host_after, "the host's hostname changed");
}

#[test]
fn user_namespace_maps_container_root_to_the_host_range() {
    if !can_run() {
        return;
    }
    let mut b = shell(
        "show /proc/self/uid_map; show /proc/self/gid_map; id -u; id -g; \
         while [ ! -e /tmp/go ]; do sleep 0.05; done",
    );
    let status = std::process::Command::new("chown")
        .args(["-hR", "100000:100000"])
        .arg(b.rootfs())
        .status()
        .unwrap();
    assert!(status.success());
    b.edit(|c| {
        c["root"]["readonly"] = json!(false);
        let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        c["linux"]["uidMappings"] = map.clone();
        c["linux"]["gidMappings"] = map;
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
    });
    let rt = Runtime::new();
    let id = cid("userns");
    let mut run = rt.command();
    run.args(["run", "--bundle", b.dir.to_str().unwrap(), &id]);
    let runner = std::thread::spawn(move || run_captured(&mut run));
    wait_for(|| rt.status(&id).as_deref() == Some("running") || runner.is_finished());
    let host_view = rt.state(&id).map(|s| {
        let pid = s["pid"].as_i64().unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
    });
    std::fs::write(b.rootfs().join("tmp/go"), "").unwrap();
    let out = ok(&runner.join().unwrap());
    let host_view = host_view.expect("the container was running");
    assert_eq!(field(&host_view, "Uid"), "100000\t100000\t100000\t100000");
    assert_eq!(field(&host_view, "Gid"), "100000\t100000\t100000\t100000");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], ["0", "100000", "65536"], "uid_map");
    assert_eq!(lines[1], ["0", "100000", "65536"], "gid_map");
    assert_eq!(lines[2], ["0"], "id -u");
    assert_eq!(lines[3], ["0"], "id -g");
}

#[test]
fn namespace_paths_are_joined() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let a = Bundle::new(&["sleep", "60"]);
    let pid = start_sleeper(&rt, &a, &cid("nsowner"));
    let mut b = Bundle::shell(
        "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; \
         readlink /proc/self/ns/uts; readlink /proc/self/ns/mnt",
    );
    b.edit(|c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            let file = match ns["type"].as_str().unwrap() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                _ => continue,
            };
            ns["path"] = json!(format!("/proc/{pid}/ns/{file}"));
        }
    });
    let out = ok(&rt.run(&b, &cid("nsjoiner")));
    let host = |ns: &str| {
        std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], [host("net"), host("ipc"), host("uts")], "{out}");
    assert_ne!(lines[3], host("mnt"), "the mount namespace must be new");
}

#[test]
fn namespaced_sysctls_are_written_inside_the_container() {
    if !can_run() {
        return;
    }
    let read = |k: &str| std::fs::read_to_string(format!("/proc/sys/{k}")).unwrap();
    let host_before = (read("net/ipv4/ip_forward"), read("kernel/shmmax"));
    // cat, not show: sysctl files answer reads at an offset with EOF.
    let mut b = shell("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax");
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"});
    });
    assert_eq!(run_ok(&b, "sysctl"), "1\n123456789\n");
    let host_after = (read("net/ipv4/ip_forward"), read("kernel/shmmax"));
    assert_eq!(host_before, host_after, "the host's sysctls changed");
}

/// Runs a bundle that must be refused before its process runs, with a one-line error
/// naming `needle`, leaving no container behind.
#[track_caller]
fn refused(b: &Bundle, name: &str, needle: &str) -> String {
    let rt = Runtime::new();
    let id = cid(name);
    let out = rt.run(b, &id);
    let err = fails_with(&out, needle);
    assert!(!stdout(&out).contains("started"), "the process ran");
    assert!(rt.state(&id).is_none(), "a failed run leaves no container");
    err
}

#[test]
fn sysctls_outside_the_container_namespaces_are_refused() {
    if !can_run() {
        return;
    }
    let before = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    let mut b = shell("echo started");
    b.edit(|c| c["linux"]["sysctl"] = json!({"vm.swappiness": "1"}));
    refused(&b, "sysctlhost", "vm.swappiness");
    let after = std::fs::read_to_string("/proc/sys/vm/swappiness").unwrap();
    assert_eq!(before, after);

    let mut b = shell("echo started");
    b.edit(|c| {
        c["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != "network");
    });
    refused(&b, "sysctlnonet", "net.ipv4.ip_forward");
}
