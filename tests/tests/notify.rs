//! systemd's readiness protocol under `run` (Type=notify units): by default the runtime
//! says READY=1 with its own pid once the container's process runs; with
//! `org.left4me.notify=container` the container gets a socket of its own at
//! /run/notify/notify.sock and what it says reaches NOTIFY_SOCKET through the runtime,
//! with MAINPID rewritten to the runtime's pid (systemd only listens to the main PID).

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use left4me_runtime_tests::*;
use serde_json::json;

/// What the container does: report what it sees, and (when it has a socket) speak
/// sd_notify with python3 from the host's /usr.
const PROBE: &str = r#"
import os, socket
path = os.environ.get("NOTIFY_SOCKET")
print("NOTIFY_SOCKET=%s" % path)
if path:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"READY=1\nSTATUS=serving from the container\nMAINPID=1", path)
    s.sendto(b"STOPPING=1", path)
"#;

struct Listener {
    socket: UnixDatagram,
    path: std::path::PathBuf,
}

impl Listener {
    fn new(tag: &str) -> Listener {
        std::fs::create_dir_all(scratch()).unwrap();
        let path = scratch().join(format!("n-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        Listener { socket, path }
    }

    fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Each test its own id: the default cgroup (`left4me-ID`) is shared by equal ids.
fn run_under(listener: &Listener, id: &str, notify: Option<&str>) -> (String, u32) {
    let mut b = Bundle::new(&["/usr/bin/python3", "-c", PROBE]);
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        for dir in ["/usr", "/lib", "/lib64", "/bin"] {
            if std::path::Path::new(dir).exists() {
                mounts.push(json!({"destination": dir, "type": "bind", "source": dir,
                                   "options": ["rbind", "ro"]}));
            }
        }
        if let Some(mode) = notify {
            c["annotations"] = json!({ "org.left4me.notify": mode });
        }
    });
    let rt = Runtime::new();
    let mut cmd = rt.command();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), id])
        .env("NOTIFY_SOCKET", &listener.path)
        .stdin(Stdio::null());
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (ok(&out), pid)
}

#[test]
fn by_default_the_runtime_says_ready_with_its_own_pid() {
    if !can_run() {
        return;
    }
    let listener = Listener::new("rt");
    let (out, pid) = run_under(&listener, "notify-runtime", None);
    assert!(out.contains("NOTIFY_SOCKET=None"), "{out}");
    assert_eq!(listener.messages(), vec![format!("READY=1\nMAINPID={pid}")]);
}

#[test]
fn a_container_that_asks_speaks_through_the_runtime() {
    if !can_run() {
        return;
    }
    let listener = Listener::new("ct");
    let (out, pid) = run_under(&listener, "notify-container", Some("container"));
    assert!(
        out.contains("NOTIFY_SOCKET=/run/notify/notify.sock"),
        "{out}"
    );
    // The runtime did not say READY itself: the container's READY=1 (with the
    // runtime's pid), then STOPPING=1 even though the container exited right after it.
    assert_eq!(
        listener.messages(),
        vec![
            format!("READY=1\nSTATUS=serving from the container\nMAINPID={pid}"),
            "STOPPING=1".to_string()
        ]
    );
}

#[test]
fn an_unknown_notify_mode_is_refused_before_anything_runs() {
    if !can_run() {
        return;
    }
    let listener = Listener::new("bad");
    let mut b = Bundle::shell("true");
    b.edit(|c| c["annotations"] = json!({"org.left4me.notify": "sometimes"}));
    let rt = Runtime::new();
    let mut cmd = rt.command();
    cmd.args(["run", "--bundle", b.dir.to_str().unwrap(), "bad-notify"])
        .env("NOTIFY_SOCKET", &listener.path);
    fails_with(&run_captured(&mut cmd), "org.left4me.notify");
    assert!(listener.messages().is_empty());
    assert!(rt.state("bad-notify").is_none());
}
