//! The runc-compatible command line: spec, exec, kill, list, ps, features, logging,
//! console sockets, pid files, signal forwarding, fd passing and config errors.

use std::fs::File;
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use left4me_runtime_tests::terminal::{read_until, recv_fd};
use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// A container id unique to this test process: cgroups are named after ids, and the
/// cgroup tree is shared by every test binary running at the same time.
fn uid(tag: &str) -> String {
    format!("cli-{tag}-{}", std::process::id())
}

/// A container created and started with a writable rootfs, running `args`.
fn running(rt: &Runtime, id: &str, args: &[&str]) -> Bundle {
    let mut b = Bundle::new(args);
    b.edit(|c| c["root"]["readonly"] = Value::Bool(false));
    ok(&rt.create(&b, id));
    ok(&rt.cmd(&["start", id]));
    assert_eq!(rt.status(id).as_deref(), Some("running"));
    b
}

fn init_pid(rt: &Runtime, id: &str) -> i32 {
    rt.state(id).expect("state")["pid"].as_i64().unwrap() as i32
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !stat.is_empty() && !state.starts_with(['Z', 'X'])
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// True when `v` is an array holding the string `x`.
fn has(v: &Value, x: &str) -> bool {
    v.as_array().is_some_and(|a| a.iter().any(|e| e == x))
}

/// `exec [FLAGS] ID sh -c SCRIPT`.
fn sh(rt: &Runtime, flags: &[&str], id: &str, script: &str) -> Output {
    let args = [&["exec"], flags, &[id, "sh", "-c", script]].concat();
    if flags.contains(&"--detach") {
        rt.cmd_reaped(&args)
    } else {
        rt.cmd(&args)
    }
}

fn ps_pids(rt: &Runtime, id: &str) -> Vec<i32> {
    serde_json::from_value(json_out(&rt.cmd(&["ps", "-f", "json", id]))).unwrap()
}

fn json_out(out: &Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn json_lines(path: &Path) -> Vec<Value> {
    let text = read_lossy(path);
    let parse = |l: &str| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
    text.lines().map(parse).collect()
}

fn assert_no_trace(rt: &Runtime, id: &str) {
    assert_eq!(ok(&rt.cmd(&["list", "-q"])), "", "list shows it");
    assert!(!rt.root.join(id).exists(), "state dir of {id} left behind");
}

#[test]
fn spec_writes_runc_defaults_and_refuses_to_overwrite() {
    if !can_run() {
        return;
    }
    let b = Bundle::new(&["true"]);
    let mut spec = Command::new(runtime_bin());
    spec.args(["spec", "--bundle"]).arg(&b.dir);
    let config = b.dir.join("config.json");
    fails_with(&run_captured(&mut spec), "config.json");
    std::fs::remove_file(&config).unwrap();
    ok(&run_captured(&mut spec));
    let c: Value = serde_json::from_str(&read_lossy(&config)).unwrap();
    assert!(c["ociVersion"].as_str().unwrap().starts_with("1."), "{c}");
    assert_eq!(c["process"]["args"], json!(["sh"]));
    assert_eq!(c["process"]["terminal"], true);
    assert_eq!(c["root"], json!({"path": "rootfs", "readonly": true}));
    let ns = json!([{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}]);
    assert_eq!(c["linux"]["namespaces"], ns);
    assert!(has(&c["linux"]["maskedPaths"], "/proc/kcore"));
    assert!(has(&c["linux"]["readonlyPaths"], "/proc/sys"));
}

#[test]
fn exec_joins_the_namespaces_of_a_running_container() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("exns");
    let _b = running(&rt, id, &["sleep", "600"]);
    let pid = init_pid(&rt, id);
    let names = ["pid", "mnt", "uts", "ipc", "net", "cgroup"];
    let script = format!(
        "for n in {}; do readlink /proc/self/ns/$n; done",
        names.join(" ")
    );
    let inside = ok(&sh(&rt, &[], id, &script));
    let ns = |p: &str, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    let pid = pid.to_string();
    let host: Vec<_> = names
        .iter()
        .map(|n| ns(&pid, n).display().to_string())
        .collect();
    assert_eq!(inside.lines().collect::<Vec<_>>(), host);
    assert_ne!(ns(&pid, "pid"), ns("self", "pid"), "no PID namespace");
    // In the container's PID namespace: init is 1, the exec'd shell is not.
    let script = "echo $$; cat /proc/1/cmdline; echo; ls /proc | grep -c '^[0-9]'";
    let out = ok(&sh(&rt, &[], id, script));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].parse::<u32>().unwrap() > 1, "{out}");
    assert!(lines[1].starts_with("sleep"), "pid 1 is not init: {out}");
    assert!(lines[2].parse::<u32>().unwrap() < 10, "{out}");
    let status = ok(&rt.cmd(&["exec", id, "cat", "/proc/self/status"]));
    // The container's /proc shows its own PID namespace only: one pid, not 1.
    let nspid = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    let nspid: Vec<&str> = nspid.split_whitespace().skip(1).collect();
    assert!(nspid.len() == 1 && nspid[0] != "1", "{nspid:?}");
}

#[test]
fn exec_options_env_cwd_user_process_and_exit_code() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("exopt");
    let b = running(&rt, id, &["sleep", "600"]);
    let out = sh(&rt, &[], id, "exit 9");
    assert_eq!(out.status.code(), Some(9), "stderr: {}", stderr(&out));
    let env = sh(
        &rt,
        &["--env", "K=V", "-e", "PATH=/bin"],
        id,
        "echo $K $PATH",
    );
    assert_eq!(ok(&env), "V /bin\n");
    assert_eq!(ok(&rt.cmd(&["exec", "--cwd", "/tmp", id, "pwd"])), "/tmp\n");
    let who = ok(&rt.cmd(&["exec", "--user", "1000:1000", id, "id"]));
    assert!(
        who.starts_with("uid=1000(") && who.contains(" gid=1000("),
        "{who}"
    );
    let process = b.dir.join("process.json");
    let p = json!({
        "terminal": false, "user": {"uid": 0, "gid": 0}, "cwd": "/etc",
        "args": ["sh", "-c", "echo $FOO; pwd; exit 4"],
        "env": ["PATH=/bin:/usr/bin", "FOO=from-process-json"]
    });
    std::fs::write(&process, p.to_string()).unwrap();
    let out = rt.cmd(&["exec", "--process", process.to_str().unwrap(), id]);
    assert_eq!(out.status.code(), Some(4), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "from-process-json\n/etc\n");
}

#[test]
fn exec_detach_returns_at_once_and_tty_gets_a_pty() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("exdet");
    let _b = running(&rt, id, &["sleep", "600"]);
    // The detached process cannot finish before /tmp/go exists, which the test creates
    // only after `exec --detach` returned: so returning proves it did not wait.
    let script =
        "echo started > /tmp/d; until [ -e /tmp/go ]; do sleep 0.1; done; echo done >> /tmp/d";
    ok(&sh(&rt, &["--detach"], id, script));
    wait_for(|| ok(&rt.cmd(&["exec", id, "cat", "/tmp/d"])) == "started\n");
    ok(&rt.cmd(&["exec", id, "touch", "/tmp/go"]));
    wait_for(|| ok(&rt.cmd(&["exec", id, "cat", "/tmp/d"])) == "started\ndone\n");
    let out = rt.cmd(&["exec", "--tty", id, "--", "sh", "-c", "tty; exit 5"]);
    assert_eq!(out.status.code(), Some(5), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("/dev/pts/"), "{}", stdout(&out));
    let out = rt.cmd(&["exec", id, "tty"]);
    assert_eq!(stdout(&out), "not a tty\n", "a pty without --tty");
}

#[test]
fn exec_into_stopped_or_missing_container_fails() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("exstop");
    let _b = running(&rt, id, &["sleep", "600"]);
    ok(&rt.cmd(&["kill", id, "KILL"]));
    wait_for(|| rt.status(id).as_deref() == Some("stopped"));
    fails_with(&rt.cmd(&["exec", id, "true"]), "stopped");
    fails_with(&rt.cmd(&["exec", &uid("exnope"), "true"]), "does not exist");
}

#[test]
fn kill_by_name_number_default_and_all() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("kill");
    let script = "trap 'echo TERM >> /tmp/log' TERM; trap 'echo USR1 >> /tmp/log' USR1; \
                  echo > /tmp/ready; while true; do sleep 0.1; done";
    let b = running(&rt, id, &["sh", "-c", script]);
    let log = b.rootfs().join("tmp/log");
    wait_for(|| b.rootfs().join("tmp/ready").exists());
    let sent: [&[&str]; 5] = [&["TERM"], &["SIGTERM"], &["15"], &[], &["USR1"]];
    for (n, sig) in sent.iter().enumerate() {
        ok(&rt.cmd(&[&["kill", id.as_str()][..], sig].concat()));
        wait_for(|| read_lossy(&log).lines().count() == n + 1);
    }
    assert_eq!(read_lossy(&log), "TERM\nTERM\nTERM\nTERM\nUSR1\n");
    fails_with(&rt.cmd(&["kill", id, "SIGNOPE"]), "signal");
    fails_with(&rt.cmd(&["kill", id, "NOPE"]), "signal");
    // Background processes, then --all KILL takes them all.
    ok(&rt.cmd_reaped(&["exec", "--detach", id, "sleep", "500"]));
    ok(&rt.cmd_reaped(&["exec", "--detach", id, "sleep", "501"]));
    let pids = ps_pids(&rt, id);
    assert!(pids.len() >= 3, "{pids:?}");
    ok(&rt.cmd(&["kill", "--all", id, "KILL"]));
    wait_for(|| rt.status(id).as_deref() == Some("stopped"));
    wait_for(|| pids.iter().all(|p| !alive(*p)));
}

#[test]
fn list_table_and_json_like_runc() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    std::fs::create_dir_all(&rt.root).unwrap();
    let table = ok(&rt.cmd(&["list"]));
    assert_eq!(table.lines().count(), 1, "{table}");
    let header: Vec<&str> = table.split_whitespace().collect();
    assert_eq!(header.join(" "), "ID PID STATUS BUNDLE CREATED OWNER");
    let empty = json_out(&rt.cmd(&["list", "--format", "json"]));
    assert!(empty.is_null() || empty == json!([]), "{empty}");
    let id = &uid("list");
    let b = Bundle::new(&["sleep", "600"]);
    ok(&rt.create(&b, id));
    let pid = init_pid(&rt, id).to_string();
    let bundle = b.dir.to_str().unwrap();
    let table = ok(&rt.cmd(&["list"]));
    let row = table.lines().nth(1).expect("a row");
    let row: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(row.len(), 6, "{table}");
    assert_eq!(row[..4], [id.as_str(), &pid, "created", bundle]);
    assert_eq!(row[5], "root", "OWNER is the user name: {table}");
    let items = json_out(&rt.cmd(&["list", "-f", "json"]));
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    let v = &items[0];
    assert_eq!((&v["id"], &v["status"]), (&json!(id), &json!("created")));
    assert_eq!((&v["bundle"], v["pid"].to_string()), (&json!(bundle), pid));
    assert!(v["created"].is_string() && v["ociVersion"].is_string());
    assert_eq!(v["owner"], "root", "{v}");
    assert_eq!(ok(&rt.cmd(&["list", "-q"])), format!("{id}\n"));
}

#[test]
fn ps_lists_the_container_processes() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("ps");
    let _b = running(&rt, id, &["sleep", "600"]);
    let pid = init_pid(&rt, id);
    ok(&rt.cmd_reaped(&["exec", "--detach", id, "sleep", "500"]));
    let pids = ps_pids(&rt, id);
    assert!(pids.contains(&pid) && pids.len() == 2, "{pids:?} {pid}");
    let table = ok(&rt.cmd(&["ps", id]));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows[0].contains(&"PID"), "{table}");
    for p in pids.iter().map(i32::to_string) {
        assert!(rows[1..].iter().any(|r| r.contains(&&*p)), "{p}: {table}");
    }
}

#[test]
fn features_prints_the_oci_features_document() {
    if !can_run() {
        return;
    }
    let f = json_out(&run_captured(Command::new(runtime_bin()).arg("features")));
    let version = |k: &str| f[k].as_str().unwrap_or_default().to_string();
    assert!(version("ociVersionMin").starts_with("1.0"), "{f}");
    assert!(version("ociVersionMax").starts_with("1."), "{f}");
    assert!(f["hooks"].is_array(), "{f}");
    for o in ["bind", "rbind", "ro", "nosuid"] {
        assert!(has(&f["mountOptions"], o), "{o}: {f}");
    }
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(has(&f["linux"]["namespaces"], n), "{n}: {f}");
    }
    assert!(has(&f["linux"]["capabilities"], "CAP_SYS_ADMIN"), "{f}");
}

#[test]
fn log_file_gets_json_lines_and_debug() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["true"]);
    let log = b.dir.join("err.log");
    let mut cmd = rt.command();
    cmd.arg("--log").arg(&log).args(["--log-format", "json"]);
    cmd.args(["state", &uid("nolog")]);
    fails_with(&run_captured(&mut cmd), "does not exist");
    let lines = json_lines(&log);
    assert!(!lines.is_empty(), "nothing logged");
    for l in &lines {
        let keys = ["msg", "level", "time"];
        assert!(keys.iter().all(|k| l[k].is_string()), "{l}");
    }
    let msg = |l: &Value| l["msg"].as_str().unwrap().to_string();
    let error = |l: &&Value| l["level"] == "error" && msg(l).contains("does not exist");
    assert!(lines.iter().any(|l| error(&l)), "{lines:?}");
    let dlog = b.dir.join("debug.log");
    let mut cmd = rt.command();
    cmd.args(["--debug", "--log-format", "json", "--log"])
        .arg(&dlog);
    cmd.args(["create", "--bundle"]).arg(&b.dir).arg(uid("dbg"));
    ok(&run_captured(&mut cmd));
    let debug = json_lines(&dlog).iter().any(|l| l["level"] == "debug");
    assert!(debug, "{}", read_lossy(&dlog));
}

#[test]
fn console_socket_receives_the_pty_master() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let id = &uid("con");
    let mut b = Bundle::shell("tty; echo hi; read x; echo got-$x");
    b.edit(|c| c["process"]["terminal"] = Value::Bool(true));
    // Without a socket a detached terminal has nowhere to go.
    fails_with(&rt.create(&b, id), "console");
    assert_no_trace(&rt, id);
    let sock_path = b.dir.join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let sock = sock_path.to_str().unwrap();
    let dir = b.dir.to_str().unwrap();
    let (out, master) = std::thread::scope(|s| {
        let h = s.spawn(|| rt.cmd(&["create", "--console-socket", sock, "--bundle", dir, id]));
        let (conn, _) = listener.accept().unwrap();
        let master = recv_fd(&conn);
        (h.join().unwrap(), master)
    });
    ok(&out);
    ok(&rt.cmd(&["start", id]));
    let mut master = File::from(master);
    let text = read_until(&mut master, "hi");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    master.write_all(b"abc\n").unwrap();
    read_until(&mut master, "got-abc");
}

#[test]
fn pid_file_on_create_and_run_detach() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "600"]);
    let dir = b.dir.to_str().unwrap();
    for (cmd, want) in [("create", "created"), ("run", "running")] {
        let id = &uid(cmd);
        let pids = b.dir.join(format!("pids-{cmd}"));
        std::fs::create_dir(&pids).unwrap();
        let file = pids.join("pid");
        let detach: &[&str] = if cmd == "run" { &["--detach"] } else { &[] };
        let pid_file = ["--pid-file", file.to_str().unwrap(), "--bundle", dir, id];
        let args = [&[cmd], detach, &pid_file].concat();
        ok(&rt.cmd(&args));
        assert_eq!(rt.status(id).as_deref(), Some(want));
        assert_eq!(read_lossy(&file).trim(), init_pid(&rt, id).to_string());
        let names = std::fs::read_dir(&pids)
            .unwrap()
            .map(|e| e.unwrap().file_name());
        assert_eq!(names.collect::<Vec<_>>(), ["pid"], "temporary files left");
    }
}

/// `run` in the foreground forwards `sig` to a container that traps it.
fn forwards(sig: i32, name: &str) {
    let rt = Runtime::new();
    let b = Bundle::shell(&format!(
        "trap 'echo got-{name}; exit 11' {name}; echo ready; while true; do sleep 0.1; done"
    ));
    let (out, err) = (b.dir.join("out"), b.dir.join("err"));
    let mut cmd = rt.command();
    cmd.args(["run", "--bundle"])
        .arg(&b.dir)
        .arg(uid(&format!("fwd-{name}")));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let mut child = cmd.spawn().unwrap();
    let exited = |child: &mut std::process::Child| child.try_wait().unwrap().is_some();
    wait_for(|| read_lossy(&out).contains("ready") || exited(&mut child));
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !exited(&mut child) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill(); // on timeout; the Runtime's drop cleans the container up
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(11), "{name}: {}", read_lossy(&err));
    assert!(read_lossy(&out).contains(&format!("got-{name}")), "{name}");
}

#[test]
fn run_foreground_forwards_signals() {
    if !can_run() {
        return;
    }
    use libc::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
    let sigs = [SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT];
    let names = ["TERM", "INT", "HUP", "USR1", "USR2", "QUIT"];
    std::thread::scope(|s| {
        for (sig, name) in sigs.into_iter().zip(names) {
            s.spawn(move || forwards(sig, name));
        }
    });
}

/// `sh -c 'exec 3<DATA; PRELUDE exec runtime ARGS...'`, captured.
fn run_with_fd3(rt: &Runtime, data: &Path, prelude: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 3<\"$0\"; {prelude} exec \"$@\""))
        .arg(data)
        .arg(runtime_bin())
        .arg("--root")
        .arg(&rt.root)
        .args(args)
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    ok(&run_captured(&mut cmd))
}

#[test]
fn preserve_fds_and_socket_activation() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::shell(
        "if [ -e /proc/self/fd/3 ]; then cat <&3; else echo closed; fi; \
         echo fds=${LISTEN_FDS:-none} pid=${LISTEN_PID:-none}",
    );
    let data = b.dir.join("data");
    std::fs::write(&data, "from-fd3\n").unwrap();
    let dir = b.dir.to_str().unwrap();
    let run = |prelude: &str, extra: &[&str], tag: &str| {
        let id = uid(tag);
        let args = [&["run"][..], extra, &["--bundle", dir, &id]].concat();
        run_with_fd3(&rt, &data, prelude, &args)
    };
    let out = run("", &["--preserve-fds", "1"], "pf1");
    assert_eq!(out, "from-fd3\nfds=none pid=none\n");
    let out = run("", &[], "pf0");
    assert_eq!(out, "closed\nfds=none pid=none\n", "fd 3 leaked");
    // systemd socket activation: LISTEN_FDS for this pid passes the fds, LISTEN_PID=1.
    let out = run("export LISTEN_FDS=1 LISTEN_PID=$$;", &[], "pfl");
    assert_eq!(out, "from-fd3\nfds=1 pid=1\n");
    // LISTEN_PID naming another process: not for us (go-systemd's activation.Files).
    let out = run("export LISTEN_FDS=1 LISTEN_PID=1;", &[], "pfs");
    assert_eq!(out, "closed\nfds=none pid=none\n", "stale LISTEN_PID");
}

#[test]
fn bad_configs_fail_with_one_line_and_leave_nothing() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let mut b = Bundle::new(&["true"]);
    let good = b.config.clone();
    let id = &uid("bad");
    b.edit(|c| c["process"]["args"] = Value::from("sh"));
    fails_with(&rt.create(&b, id), "process.args");
    assert_no_trace(&rt, id);
    b.edit(|c| *c = good);
    let config = b.dir.join("config.json");
    std::fs::remove_file(&config).unwrap();
    fails_with(&rt.create(&b, id), config.to_str().unwrap());
    assert_no_trace(&rt, id);
    b.save();
    for bad in ["../x", "", "a/b", ".."] {
        fails_with(&rt.create(&b, bad), "invalid container id");
    }
    assert!(!scratch().join("x").exists());
    let mut cmd = rt.command();
    cmd.args(["--systemd-cgroup", "create", "--bundle"])
        .arg(&b.dir)
        .arg(id);
    fails_with(&run_captured(&mut cmd), "not supported");
    assert_no_trace(&rt, id);
}

#[test]
fn concurrent_creates_with_one_id_one_wins() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "600"]);
    let id = &uid("race");
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4).map(|_| s.spawn(|| rt.create(&b, id))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (wins, losses): (Vec<_>, Vec<_>) = outs.iter().partition(|o| o.status.success());
    let errors: Vec<String> = outs.iter().map(stderr).collect();
    assert_eq!(wins.len(), 1, "{errors:?}");
    for o in losses {
        fails_with(o, "already exists");
    }
    assert_eq!(rt.status(id).as_deref(), Some("created"));
    assert_eq!(ok(&rt.cmd(&["list", "-q"])), format!("{id}\n"));
}

#[test]
fn delete_created_and_state_of_externally_killed_init() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    let b = Bundle::new(&["sleep", "600"]);
    let (created, killed) = (&uid("delc"), &uid("ext"));
    ok(&rt.create(&b, created));
    let pid = init_pid(&rt, created);
    ok(&rt.cmd(&["delete", created]));
    assert!(rt.state(created).is_none());
    wait_for(|| !alive(pid));
    ok(&rt.create(&b, killed));
    ok(&rt.cmd(&["start", killed]));
    let pid = init_pid(&rt, killed);
    // SAFETY: killing the container's init from the host.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    wait_for(|| rt.status(killed).as_deref() == Some("stopped"));
    assert_eq!(rt.state(killed).unwrap()["pid"], 0, "pid of a stopped one");
    fails_with(&rt.cmd(&["exec", killed, "true"]), "stopped");
    ok(&rt.cmd(&["delete", killed]));
    assert!(rt.state(killed).is_none());
}

#[test]
fn long_roots_and_podman_length_ids_fit_the_start_socket() {
    if !can_run() {
        return;
    }
    // sun_path holds 108 bytes; ROOT/ID/start.sock here is far longer.
    let mut rt = Runtime::new();
    rt.root = rt
        .root
        .join("a-rather-long-state-directory-name-like-a-service-would-use");
    let id = "0123456789abcdef".repeat(4);
    assert!(rt.root.join(&id).join("start.sock").as_os_str().len() > 108);
    let b = Bundle::new(&["true"]);
    ok(&rt.create(&b, &id));
    ok(&rt.cmd(&["start", &id]));
    wait_for(|| rt.status(&id).as_deref() == Some("stopped"));
    ok(&rt.cmd(&["delete", &id]));
}
