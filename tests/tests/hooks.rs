//! OCI hooks: the six stages run at their points in the lifecycle, in their namespaces,
//! in order, each with the state JSON on stdin and exactly its args and env; a failing
//! prestart/createRuntime/createContainer/startContainer hook stops the container (after
//! the poststop hooks) and leaves nothing behind; a failing poststart/poststop hook only
//! warns. Hooks are shell scripts that append records to files under the bundle, which
//! the container sees at /rec (a bind mount) for the hooks that run inside it.

use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use left4me_runtime_tests::*;
use serde_json::{json, Value};

const PATH_ENV: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
const STAGES: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// `record TAG LOG BUNDLE`: appends "TAG MNT-NS PID-NS VIEW STATE-JSON" to LOG, where
/// VIEW says whether the bundle directory is visible (the runtime's filesystem view).
const RECORD: &str = r#"#!/bin/sh
s=$(cat)
if [ -d "$3/rootfs" ]; then v=host; else v=container; fi
echo "$1 $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/pid) $v $s" >> "$2"
"#;

/// `fail STAGE`: complains on stderr and exits 3.
const FAIL: &str = "#!/bin/sh\necho first line >&2\necho \"$1 went wrong\" >&2\nexit 3\n";

/// A bundle running `script` with /rec bound to DIR/rec, and the `record` and `fail`
/// scripts both in the bundle (for hooks on the host side) and in the rootfs (for the
/// startContainer hooks, whose path is resolved in the container).
fn bundle(script: &str) -> Bundle {
    let mut b = Bundle::shell(script);
    let rec = b.dir.join("rec");
    std::fs::create_dir(&rec).unwrap();
    std::fs::create_dir(b.rootfs().join("rec")).unwrap();
    for dir in [b.dir.clone(), b.rootfs()] {
        for (name, text) in [("record", RECORD), ("fail", FAIL)] {
            std::fs::write(dir.join(name), text).unwrap();
            std::fs::set_permissions(dir.join(name), Permissions::from_mode(0o755)).unwrap();
        }
    }
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/rec", "type": "bind", "source": rec, "options": ["rbind", "rw"]
        }));
        c["hooks"] = json!({});
    });
    b
}

/// A `record` hook: the host's script and log, or for startContainer (which runs after
/// pivot_root) the rootfs's script and the log through /rec.
fn record_hook(dir: &Path, stage: &str, tag: &str) -> Value {
    let (log, record) = if stage == "startContainer" {
        ("/rec/log".into(), "/record".into())
    } else {
        let d = dir.display();
        (format!("{d}/rec/log"), format!("{d}/record"))
    };
    json!({"path": record, "args": ["record", tag, log, dir], "env": [PATH_ENV]})
}

fn fail_hook(dir: &Path, stage: &str) -> (Value, String) {
    let path = if stage == "startContainer" {
        "/fail".to_string()
    } else {
        format!("{}/fail", dir.display())
    };
    (json!({"path": path, "args": ["fail", stage]}), path)
}

fn add_hook(b: &mut Bundle, stage: &str, hook: Value) {
    b.edit(|c| {
        let list = &mut c["hooks"][stage];
        if list.is_null() {
            *list = json!([]);
        }
        list.as_array_mut().unwrap().push(hook);
    });
}

struct Record {
    tag: String,
    mnt: String,
    pid: String,
    view: String,
    state: Value,
}

fn records(b: &Bundle) -> Vec<Record> {
    let text = std::fs::read_to_string(b.dir.join("rec/log")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.splitn(5, ' ').collect();
            assert_eq!(f.len(), 5, "bad record {line:?}");
            Record {
                tag: f[0].into(),
                mnt: f[1].into(),
                pid: f[2].into(),
                view: f[3].into(),
                state: serde_json::from_str(f[4]).unwrap_or_else(|e| panic!("{e}: {line}")),
            }
        })
        .collect()
}

fn tags(b: &Bundle) -> Vec<String> {
    records(b).into_iter().map(|r| r.tag).collect()
}

fn ns(pid: &str, kind: &str) -> String {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    link.to_string_lossy().into_owned()
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
}

/// The directory of the cgroup `line` ("0::/path") names, if the host has cgroup2.
fn cgroup_dir(line: &str) -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = mountinfo
        .lines()
        .find(|l| l.contains(" - cgroup2 "))?
        .split(' ')
        .nth(4)?
        .to_string();
    let rel = line.trim().strip_prefix("0::/")?;
    Some(Path::new(&mount).join(rel))
}

/// A prestart hook that writes "PID CGROUP-LINE" of the container's init to DIR/rec/init.
fn init_probe(dir: &Path) -> Value {
    let out = dir.join("rec/init");
    let script = format!(
        "p=$(sed -n 's/.*\"pid\":\\([0-9]*\\).*/\\1/p'); echo \"$p $(grep ^0:: /proc/$p/cgroup)\" > {}",
        out.display()
    );
    json!({"path": "/bin/sh", "args": ["sh", "-c", script], "env": [PATH_ENV]})
}

fn probed_init(b: &Bundle) -> (i64, Option<PathBuf>) {
    let text = std::fs::read_to_string(b.dir.join("rec/init")).unwrap();
    let (pid, cg) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    (pid.parse().unwrap(), cgroup_dir(cg))
}

/// A container id unique to this test process (ids also name cgroups, shared by all
/// state roots on the machine).
fn unique_id(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn run_env(rt: &Runtime, b: &Bundle, id: &str) -> (Output, Duration) {
    let mut cmd = rt.command();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), id])
        .env("L4M_LEAK", "1");
    let start = Instant::now();
    let out = run_captured(&mut cmd);
    (out, start.elapsed())
}

/// Test 1 (and 7, the split lifecycle): two hooks per stage; `create` runs prestart,
/// createRuntime and createContainer, `start` startContainer and poststart, `delete`
/// poststop — each in its namespaces, in order, with its state.
#[test]
fn every_stage_runs_at_its_point_in_its_namespaces_in_order() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = bundle(
        "until grep -q '^poststart-2 ' /rec/log; do sleep 0.05; done; \
         echo \"process x x x {}\" >> /rec/log",
    );
    let dir = b.dir.clone();
    for stage in STAGES {
        for n in 1..=2 {
            add_hook(
                &mut b,
                stage,
                record_hook(&dir, stage, &format!("{stage}-{n}")),
            );
        }
    }
    let expected: Vec<String> = STAGES
        .iter()
        .flat_map(|s| [format!("{s}-1"), format!("{s}-2")])
        .collect();
    let id = unique_id("hooks-stages");
    let id = id.as_str();
    ok(&rt.create(&b, id));
    assert_eq!(tags(&b), expected[..6], "after create");
    let st = rt.state(id).unwrap();
    assert_eq!(st["status"], "created");
    let init = st["pid"].as_i64().unwrap();
    let (init_mnt, init_pidns) = (ns(&init.to_string(), "mnt"), ns(&init.to_string(), "pid"));
    let (host_mnt, host_pidns) = (ns("self", "mnt"), ns("self", "pid"));
    assert_ne!(init_mnt, host_mnt);
    assert_ne!(init_pidns, host_pidns);
    ok(&rt.cmd(&["start", id]));
    assert_eq!(tags(&b)[..10], expected[..10], "after start");
    wait_for(|| rt.status(id).as_deref() == Some("stopped"));
    assert_eq!(tags(&b).len(), 11, "poststop before delete: {:?}", tags(&b));
    ok(&rt.cmd(&["delete", id]));
    let mut all = expected.clone();
    all.insert(10, "process".into());
    assert_eq!(tags(&b), all, "after delete");

    for r in records(&b).into_iter().filter(|r| r.tag != "process") {
        let stage = r.tag.split('-').next().unwrap();
        let inside = matches!(stage, "createContainer" | "startContainer");
        let (mnt, pidns) = if inside {
            (&init_mnt, &init_pidns)
        } else {
            (&host_mnt, &host_pidns)
        };
        assert_eq!((&r.mnt, &r.pid), (mnt, pidns), "{} namespaces", r.tag);
        // Only startContainer runs after pivot_root: the bundle is out of its sight.
        let view = if stage == "startContainer" {
            "container"
        } else {
            "host"
        };
        assert_eq!(r.view, view, "{} filesystem view", r.tag);
        let status = match stage {
            "prestart" | "createRuntime" | "createContainer" => "creating",
            "startContainer" => "created",
            "poststart" => "running",
            _ => "stopped",
        };
        let s = &r.state;
        assert_eq!(s["status"], status, "{}: {s}", r.tag);
        assert_eq!(s["id"], id, "{}: {s}", r.tag);
        assert_eq!(s["bundle"], b.dir.to_str().unwrap(), "{}: {s}", r.tag);
        assert_eq!(s["ociVersion"], b.config["ociVersion"], "{}: {s}", r.tag);
        // A stopped container has no process: the runtime reports pid 0.
        let pid = if stage == "poststop" { 0 } else { init };
        assert_eq!(s["pid"], pid, "{}: {s}", r.tag);
    }
}

/// Test 2: argv is exactly `args` (args[0] as argv[0]) and the environment exactly
/// `env`, in every stage; nothing of the runtime's environment leaks in.
#[test]
fn hooks_get_exactly_their_args_and_env() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = bundle("true");
    // /proc/self is opened by the shell itself (no fork), so fds 3 and 4 are its own
    // cmdline and environ even before pivot_root, where /proc is the host's; the final
    // builtin keeps the shell from exec'ing the last cat, which would replace them.
    let script = "exec 3</proc/self/cmdline 4</proc/self/environ; \
                  /bin/cat <&3 > \"$1.argv\"; /bin/cat <&4 > \"$1.env\"; exit 0";
    let mut wanted = Vec::new();
    for stage in STAGES {
        // The container's /bin/sh is busybox, which picks its applet by argv[0]'s name.
        let (dir, argv0) = if stage == "startContainer" {
            ("/rec".to_string(), "/custom-argv0/sh")
        } else {
            (b.dir.join("rec").display().to_string(), "custom-argv0")
        };
        let prefix = format!("{dir}/{stage}");
        let args = [argv0, "-c", script, stage, &prefix];
        let hook = json!({"path": "/bin/sh", "args": args, "env": ["A=1", "B=two words"]});
        add_hook(&mut b, stage, hook);
        wanted.push((stage, args.join("\0") + "\0"));
    }
    let (out, _) = run_env(&rt, &b, &unique_id("hooks-env"));
    ok(&out);
    for (stage, argv) in wanted {
        let read = |ext: &str| std::fs::read(b.dir.join(format!("rec/{stage}.{ext}")));
        let seen = String::from_utf8(read("argv").unwrap()).unwrap();
        assert_eq!(seen, argv, "{stage} argv");
        let env = String::from_utf8(read("env").unwrap()).unwrap();
        assert_eq!(env, "A=1\0B=two words\0", "{stage} environment");
    }
}

/// Test 3: a failing hook of a fatal stage: the command fails naming the stage, the
/// hook and its stderr; later hooks of the stage do not run; poststop hooks do; the
/// state, the cgroup and the init process are gone.
#[test]
fn a_failing_creation_hook_stops_and_cleans_up() {
    if !can_run() {
        return;
    }
    for stage in &STAGES[..4] {
        // `run`, and the split commands: `create` (or `create` + `start` + `delete`).
        for split in [false, true] {
            let rt = Runtime::new();
            let mut b = bundle("echo should not run");
            let dir = b.dir.clone();
            add_hook(&mut b, "prestart", init_probe(&dir));
            let (fail, path) = fail_hook(&dir, stage);
            let index = if *stage == "prestart" { 1 } else { 0 };
            add_hook(&mut b, stage, fail);
            add_hook(&mut b, stage, record_hook(&dir, stage, "after-the-failure"));
            for t in ["poststop-1", "poststop-2"] {
                add_hook(&mut b, "poststop", record_hook(&dir, "poststop", t));
            }
            let id = unique_id("hooks-fail");
            let id = id.as_str();
            let message =
                format!("{stage} hook {index} ({path}) exited with status 3: {stage} went wrong");
            let out = if !split {
                run_env(&rt, &b, id).0
            } else if *stage == "startContainer" {
                ok(&rt.create(&b, id));
                let out = rt.cmd(&["start", id]);
                // Stopped, not gone: `delete` removes it and runs the poststop hooks.
                assert_eq!(
                    rt.status(id).as_deref(),
                    Some("stopped"),
                    "{}",
                    stderr(&out)
                );
                assert!(tags(&b).is_empty(), "{:?}", tags(&b));
                let pid = probed_init(&b).0;
                wait_for(|| !alive(pid));
                ok(&rt.cmd(&["delete", id]));
                out
            } else {
                rt.create(&b, id)
            };
            let err = fails_with(&out, &message);
            assert!(!err.contains("first line"), "{err}");
            assert!(!stdout(&out).contains("should not run"));
            assert_eq!(tags(&b), ["poststop-1", "poststop-2"], "{stage}");
            for r in records(&b) {
                assert_eq!(
                    (r.state["status"].as_str(), r.state["id"].as_str()),
                    (Some("stopped"), Some(id))
                );
            }
            assert!(!rt.root.join(id).exists(), "{stage}: state left");
            assert!(rt.state(id).is_none());
            let (pid, cgroup) = probed_init(&b);
            assert!(!alive(pid), "{stage}: init {pid} still runs");
            if let Some(cg) = cgroup {
                assert!(!cg.exists(), "{stage}: {} left", cg.display());
            }
        }
    }
}

/// Test 4: a hook outliving its timeout is killed and reported; in a fatal stage the
/// command fails, in poststart it only warns.
#[test]
fn a_hook_past_its_timeout_is_killed() {
    if !can_run() {
        return;
    }
    for stage in ["createRuntime", "startContainer", "poststart"] {
        let rt = Runtime::new();
        let mut b = bundle("echo ran");
        let dir = b.dir.clone();
        // A unique duration to find the process by.
        let secs = format!(
            "{}.{}",
            500 + STAGES.iter().position(|s| *s == stage).unwrap(),
            std::process::id()
        );
        let hook = json!({"path": "/bin/sleep", "args": ["sleep", secs], "timeout": 1});
        add_hook(&mut b, stage, hook);
        add_hook(
            &mut b,
            "poststop",
            record_hook(&dir, "poststop", "poststop"),
        );
        let (out, took) = run_env(&rt, &b, &unique_id("hooks-timeout"));
        let message = format!("{stage} hook 0 (/bin/sleep) timed out after 1 s and was killed");
        if stage == "poststart" {
            assert_eq!(ok(&out), "ran\n");
            assert!(stderr(&out).contains(&message), "{}", stderr(&out));
        } else {
            fails_with(&out, &message);
        }
        assert!(took < Duration::from_secs(60), "{stage}: took {took:?}");
        assert_eq!(tags(&b), ["poststop"], "{stage}");
        let sleeping = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c == format!("sleep\0{secs}\0").as_bytes())
        });
        assert!(!sleeping, "{stage}: the hook still runs");
    }
}

/// Test 5: failing poststart and poststop hooks are warnings naming the hook; the next
/// hooks of the stage still run and `run` returns the container's exit status.
#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = bundle("echo out; exit 7");
    let dir = b.dir.clone();
    for stage in ["poststart", "poststop"] {
        add_hook(&mut b, stage, fail_hook(&dir, stage).0);
        add_hook(&mut b, stage, record_hook(&dir, stage, stage));
    }
    let id = unique_id("hooks-warn");
    let (out, _) = run_env(&rt, &b, &id);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    let err = stderr(&out);
    for stage in ["poststart", "poststop"] {
        let path = b.dir.join("fail");
        let warning = format!(
            "{stage} hook 0 ({}) exited with status 3: {stage} went wrong",
            path.display()
        );
        let line = err
            .lines()
            .find(|l| l.contains(&warning))
            .unwrap_or_else(|| panic!("no {stage} warning: {err}"));
        assert!(line.contains("warn"), "{line}");
    }
    let lines = err.lines().filter(|l| !l.contains("no policy in force"));
    assert_eq!(lines.count(), 2, "{err}");
    assert_eq!(tags(&b), ["poststart", "poststop"]);
    assert!(!rt.root.join(&id).exists());
}

/// Test 6: `run` in the foreground runs poststop after the container exited and was
/// deleted, and returns only after the poststop hooks finished.
#[test]
fn run_returns_after_poststop() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = bundle("echo \"process x x x {}\" >> /rec/log");
    let dir = b.dir.clone();
    add_hook(&mut b, "prestart", init_probe(&dir));
    let id = unique_id("hooks-run");
    let id = id.as_str();
    let (init, state) = (b.dir.join("rec/init"), rt.root.join(id));
    // Slow on purpose: `run` returning early would find no record.
    let script = format!(
        "sleep 1; p=$(cut -d' ' -f1 {}); [ -e /proc/$p ] && echo init-alive x x x {{}} >> \"$1\"; \
         [ -e {} ] && echo state-left x x x {{}} >> \"$1\"; echo \"poststop x x x $(cat)\" >> \"$1\"",
        init.display(),
        state.display()
    );
    let log = b.dir.join("rec/log");
    let hook =
        json!({"path": "/bin/sh", "args": ["sh", "-c", script, "x", log], "env": [PATH_ENV]});
    add_hook(&mut b, "poststop", hook);
    ok(&run_env(&rt, &b, id).0);
    assert_eq!(tags(&b), ["process", "poststop"]);
    assert_eq!(records(&b)[1].state["status"], "stopped");
}

/// A state document over 64 KiB (large annotations) reaches the hooks whole (the sync
/// channel once cut it at its 64 KiB buffer), and a hook that never reads such a state
/// still meets its timeout (the runtime once blocked writing it before the clock started).
#[test]
fn a_large_state_reaches_the_hooks_and_timeouts_still_hold() {
    if !can_run() {
        return;
    }
    let big = "x".repeat(100_000);
    let rt = Runtime::new();
    let mut b = bundle("true");
    let dir = b.dir.clone();
    b.edit(|c| c["annotations"] = json!({"big": big}));
    add_hook(
        &mut b,
        "prestart",
        record_hook(&dir, "prestart", "prestart"),
    );
    let out = run_env(&rt, &b, &unique_id("hooks-big")).0;
    ok(&out);
    assert_eq!(records(&b)[0].state["annotations"]["big"], big);
    // The sleep never reads the state: its timeout must still end it.
    let mut b = bundle("true");
    b.edit(|c| c["annotations"] = json!({"big": big}));
    let hook = json!({"path": "/bin/sleep", "args": ["sleep", "90"], "timeout": 1});
    add_hook(&mut b, "poststart", hook);
    let (out, took) = run_env(&rt, &b, &unique_id("hooks-big-timeout"));
    assert!(
        stderr(&out).contains("timed out after 1 s"),
        "{}",
        stderr(&out)
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
