//! The OCI lifecycle, observed through the CLI: states, exit codes, idempotent delete.

use left4me_runtime_tests::*;

#[test]
fn run_returns_the_container_exit_code() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("echo hello; exit 42");
    let out = rt.run(&b, "exit42");
    assert_eq!(out.status.code(), Some(42), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    // run deletes the container afterwards.
    assert!(rt.state("exit42").is_none());
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    if !can_run() {
        return;
    }
    // PID 1 of a PID namespace ignores signals it has no handler for (even from the
    // parent namespace), except SIGKILL from outside: that is what kills it here.
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "60"]);
    let dir = b.dir.to_str().unwrap().to_string();
    let mut run = rt.command();
    run.args(["run", "--bundle", &dir, "sig"]);
    let runner = std::thread::spawn(move || run_captured(&mut run));
    wait_for(|| rt.status("sig").as_deref() == Some("running"));
    ok(&rt.cmd(&["kill", "sig", "KILL"]));
    let out = runner.join().unwrap();
    assert_eq!(out.status.code(), Some(128 + 9), "stderr: {}", stderr(&out));
    assert!(rt.state("sig").is_none(), "run deletes the container");
}

#[test]
fn create_start_state_kill_delete_walk_the_oci_states() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("trap 'exit 0' TERM; while true; do sleep 0.1; done");
    ok(&rt.create(&b, "walk"));
    let state = rt.state("walk").unwrap();
    assert_eq!(state["status"], "created");
    let pid = state["pid"].as_i64().unwrap();
    assert!(pid > 0);
    assert_eq!(state["bundle"], b.dir.to_str().unwrap());
    assert_eq!(state["id"], "walk");
    // The process waits in the runtime before exec: its command line is still ours.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("create"));
    ok(&rt.cmd(&["start", "walk"]));
    assert_eq!(rt.status("walk").as_deref(), Some("running"));
    fails_with(&rt.cmd(&["start", "walk"]), "running");
    fails_with(&rt.cmd(&["delete", "walk"]), "running");
    ok(&rt.cmd(&["kill", "walk", "TERM"]));
    for _ in 0..100 {
        if rt.status("walk").as_deref() == Some("stopped") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(rt.status("walk").as_deref(), Some("stopped"));
    fails_with(&rt.cmd(&["kill", "walk", "TERM"]), "stopped");
    ok(&rt.cmd(&["delete", "walk"]));
    fails_with(&rt.cmd(&["state", "walk"]), "does not exist");
}

#[test]
fn delete_force_is_idempotent() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    ok(&rt.cmd(&["delete", "--force", "never-existed"]));
    fails_with(&rt.cmd(&["delete", "never-existed"]), "does not exist");
    let b = Bundle::shell("sleep 60");
    ok(&rt.create(&b, "twice"));
    ok(&rt.cmd(&["start", "twice"]));
    ok(&rt.cmd(&["delete", "--force", "twice"]));
    ok(&rt.cmd(&["delete", "--force", "twice"]));
    assert!(rt.state("twice").is_none());
}

#[test]
fn same_id_twice_is_refused() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("sleep 60");
    ok(&rt.create(&b, "dup"));
    fails_with(&rt.create(&b, "dup"), "already exists");
    assert_eq!(rt.status("dup").as_deref(), Some("created"));
}

/// `Type=notify` units: `run` sends READY=1 (with its own pid as MAINPID) on
/// NOTIFY_SOCKET once the container's process runs, and not before.
#[test]
fn run_notifies_systemd_when_the_process_runs() {
    if !can_run() {
        return;
    }
    let dir = scratch().join(format!("notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock_path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let rt = Runtime::new();
    // Runs until the test lets it go (the rootfs is the host's directory).
    let b = Bundle::shell("until [ -e /go ]; do sleep 0.1; done");
    let mut cmd = rt.command();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), "notify-run"])
        .env("NOTIFY_SOCKET", &sock_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("no READY=1 within 60 s");
    let msg = String::from_utf8_lossy(&buf[..n]).to_string();
    assert_eq!(msg, format!("READY=1\nMAINPID={}", child.id()));
    // By then the container's process exists and runs.
    assert_eq!(rt.status("notify-run").as_deref(), Some("running"));
    std::fs::write(b.rootfs().join("go"), "").unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `run --timeout`: the whole container is killed at the wall-time limit (a child
/// forked away keeps nothing alive) and the runtime says so in one line.
#[test]
fn run_timeout_kills_the_whole_container_and_says_so() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell("sleep 300 & sleep 300");
    let started = std::time::Instant::now();
    let out = rt.cmd(&[
        "run",
        "--timeout",
        "2s",
        "--bundle",
        b.dir.to_str().unwrap(),
        "timeout-run",
    ]);
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("container timeout-run: killed after its wall-time limit of 2s (--timeout)"),
        "{err}"
    );
    assert!(rt.state("timeout-run").is_none(), "container left behind");
    fails_with(
        &rt.cmd(&[
            "run",
            "--timeout",
            "soon",
            "--bundle",
            b.dir.to_str().unwrap(),
            "timeout-bad",
        ]),
        "--timeout \"soon\"",
    );
}

#[test]
fn run_supervisor_gives_back_its_setup_memory_only_when_the_container_keeps_running() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    // 300 ms after the start (container/run.rs SETTLE_AFTER) the supervisor releases
    // what building the container needed; a short run exits before and never pays.
    let long = Bundle::new(&["sleep", "1"]);
    let out = rt.cmd(&[
        "--debug",
        "run",
        "--bundle",
        long.dir.to_str().unwrap(),
        "settle",
    ]);
    ok(&out);
    assert!(
        stderr(&out).contains("supervisor: released"),
        "stderr: {}",
        stderr(&out)
    );
    let short = Bundle::new(&["true"]);
    let out = rt.cmd(&[
        "--debug",
        "run",
        "--bundle",
        short.dir.to_str().unwrap(),
        "quick",
    ]);
    ok(&out);
    assert!(
        !stderr(&out).contains("supervisor: released"),
        "a run of `true` released memory: {}",
        stderr(&out)
    );
}
