//! Attack regressions, continued from security.rs: each test performs an attack on the
//! runtime while it builds a container and checks that it fails to break out.
//!
//! - CVE-2025-52565 class: the container's `/dev/pts/N` or `/dev/console` swapped for a
//!   symlink, so that binding the terminal hands out (or covers) another file.
//! - CVE-2025-31133 class, as a race: `/dev/null` swapped back and forth for a symlink to
//!   a procfs file while masked paths are applied.
//! - CVE-2025-52881 class: a fake procfs (a directory bound at `/proc` or `/proc/sys`)
//!   receiving the runtime's sysctl writes.
//! - ptrace (and the /proc links ptrace rules guard) of the container's init by a process
//!   of the container while init still runs the runtime's code, before its exec.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use left4me_runtime_tests::terminal::{read_until, try_recv_fd};
use left4me_runtime_tests::*;
use serde_json::{json, Value};

/// A container id unique to this test process (cgroups are named after ids).
fn uid(tag: &str) -> String {
    unique(&format!("atk-{tag}"))
}

/// `mknod PATH c MAJOR MINOR`.
fn mknod(path: &Path, major: u32, minor: u32) {
    let st = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "mknod {}", path.display());
}

/// A directory of the bundle that the config binds at `/dev` instead of a tmpfs: the
/// rootfs's own `/dev`, whose entries the attacker controls.
fn host_bound_dev(b: &mut Bundle, keep_devpts: bool) -> PathBuf {
    let dev = b.dir.join("fakedev");
    std::fs::create_dir(&dev).unwrap();
    mknod(&dev.join("null"), 1, 3);
    let source = dev.to_str().unwrap().to_string();
    b.edit(|c| {
        let mounts = c["mounts"].as_array_mut().unwrap();
        mounts.retain(|m| keep_devpts || m["destination"] != "/dev/pts");
        for m in mounts.iter_mut() {
            if m["destination"] == "/dev" {
                *m = json!({"destination": "/dev", "type": "bind", "source": source,
                            "options": ["rbind"]});
            }
        }
    });
    dev
}

/// The host's `core_pattern`: what a container writing through a redirected terminal
/// or mount would change (it runs a program as root on the host at the next crash).
fn core_pattern() -> String {
    std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap()
}

/// `create --console-socket` then `start`; returns create's output and the pty master.
fn create_with_terminal(
    rt: &Runtime,
    b: &Bundle,
    id: &str,
) -> (std::process::Output, Option<File>) {
    let sock_path = b.dir.join("console.sock");
    let _ = std::fs::remove_file(&sock_path);
    let listener = UnixListener::bind(&sock_path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let sock = sock_path.to_str().unwrap();
    let dir = b.dir.to_str().unwrap();
    std::thread::scope(|s| {
        let create = s.spawn(|| rt.cmd(&["create", "--console-socket", sock, "--bundle", dir, id]));
        // The master arrives during create; a create that fails never sends one.
        let mut master = None;
        let mut connected = false;
        while !connected && !create.is_finished() {
            match listener.accept() {
                Ok((conn, _)) => {
                    connected = true;
                    master = try_recv_fd(&conn).map(File::from);
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
        // A create that finished may have connected (and sent the master) between the
        // last accept and the check: its connection waits in the backlog.
        if !connected {
            if let Ok((conn, _)) = listener.accept() {
                master = try_recv_fd(&conn).map(File::from);
            }
        }
        (create.join().unwrap(), master)
    })
}

#[test]
fn a_pty_path_swapped_for_a_symlink_never_becomes_the_terminal() {
    if !can_run() {
        return;
    }
    // The container's /dev is its own directory. Its ptmx is a symlink into a devpts
    // mounted at /dev/realpts (ptmx finds the devpts beside itself), so /dev/ptmx gives a
    // real pty, but /dev/pts, where the pty's name says its slave is, holds a symlink to
    // the host's core_pattern for every number. A runtime that opens the slave by that
    // name gives the container's stdio (and /dev/console) a writable core_pattern: root
    // on the host at the next crash. The slave must come from the master itself.
    let before = core_pattern();
    let rt = Runtime::new();
    let id = &uid("pts");
    let script = "[ -t 0 ] && echo stdin-is-a-tty; stat -L -c 'stdin=%t' /proc/self/fd/0; \
                  stat -c 'console=%F %t' /dev/console; echo done";
    let mut b = Bundle::shell(script);
    let dev = host_bound_dev(&mut b, false);
    std::os::unix::fs::symlink("realpts/ptmx", dev.join("ptmx")).unwrap();
    let pts = dev.join("pts");
    std::fs::create_dir(&pts).unwrap();
    // A new devpts instance numbers its ptys from 0.
    for n in 0..64 {
        std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", pts.join(n.to_string()))
            .unwrap();
    }
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(json!({
            "destination": "/dev/realpts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
        }));
    });
    b.edit(|c| {
        c["process"]["terminal"] = Value::Bool(true);
        c["root"]["readonly"] = Value::Bool(false);
        // /proc/sys writable, so that a redirected open would really get write access.
        let ro = c["linux"]["readonlyPaths"].as_array_mut().unwrap();
        ro.retain(|p| p != "/proc/sys");
    });
    let (out, master) = create_with_terminal(&rt, &b, id);
    ok(&out);
    let mut master = master.expect("the pty master arrived");
    ok(&rt.cmd(&["start", id]));
    let text = read_until(&mut master, "done");
    assert!(text.contains("stdin-is-a-tty"), "{text:?}");
    // Major 136-143 (0x88-0x8f): a pty slave, not procfs (0) or anything else.
    assert!(
        text.contains("stdin=8"),
        "stdin is not a pty slave: {text:?}"
    );
    assert!(
        text.contains("console=character special file 8"),
        "/dev/console is not the pty: {text:?}"
    );
    assert_eq!(core_pattern(), before, "the host's core_pattern changed");
}

#[test]
fn a_dev_console_swapped_for_a_symlink_before_the_terminal_is_bound_is_refused() {
    if !can_run() {
        return;
    }
    // A prestart hook runs after the container's /dev exists and right before the
    // terminal is bound: it swaps /dev/console for a symlink to a host path (the
    // attacker's timing). Followed, the bind would cover what the link names; the
    // runtime must refuse the symlink, fail in one line and leave nothing.
    let host = PathBuf::from("/tmp").join(uid("host-console"));
    std::fs::write(&host, "HOST").unwrap();
    let _cleanup = Removed(host.clone());
    let rt = Runtime::new();
    let id = &uid("console");
    let mut b = Bundle::shell("echo ran");
    let hook = b.dir.join("swap-console.sh");
    let rootfs = b.rootfs();
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\npid=$(sed -n 's/.*\"pid\": *\\([0-9][0-9]*\\).*/\\1/p')\n\
             dev=/proc/$pid/root{}/dev\nrm -f \"$dev/console\"\nln -s {} \"$dev/console\"\n",
            rootfs.display(),
            host.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    b.edit(|c| {
        c["process"]["terminal"] = Value::Bool(true);
        c["hooks"] = json!({"prestart": [{"path": hook}]});
    });
    let mounts_before = host_mount_count();
    let (out, _master) = create_with_terminal(&rt, &b, id);
    fails_with(&out, "/dev/console");
    assert!(rt.state(id).is_none(), "a refused container is still there");
    assert_eq!(host_mount_count(), mounts_before);
    assert_eq!(std::fs::read_to_string(&host).unwrap(), "HOST");
    // The same bundle without the hook gets its terminal.
    b.edit(|c| c["hooks"] = json!({}));
    let (out, master) = create_with_terminal(&rt, &b, id);
    ok(&out);
    ok(&rt.cmd(&["start", id]));
    read_until(&mut master.expect("the pty master arrived"), "ran");
}

/// Removes a host file when dropped.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn dev_null_swapped_back_and_forth_during_setup_never_redirects_masking() {
    if !can_run() {
        return;
    }
    // While containers are set up, /dev/null in their (host-bound) /dev flips between
    // the null device and a symlink to /proc/sys/kernel/core_pattern. A runtime that
    // masks with "the container's /dev/null" binds core_pattern, writable, over the
    // masked paths whenever it loses the race.
    let before = core_pattern();
    let rt = Runtime::new();
    let script = "for p in /etc/l4m-masked /proc/kcore /proc/keys; do \
                  [ -e $p ] && stat -c '%n=%F %t:%T' $p; done; echo end";
    let mut b = Bundle::shell(script);
    let dev = host_bound_dev(&mut b, true);
    std::fs::write(b.rootfs().join("etc/l4m-masked"), "SECRET").unwrap();
    std::os::unix::fs::symlink("/proc/sys/kernel/core_pattern", dev.join("null.alt")).unwrap();
    b.edit(|c| {
        let masked = c["linux"]["maskedPaths"].as_array_mut().unwrap();
        masked.push(json!("/etc/l4m-masked"));
    });
    let stop = AtomicBool::new(false);
    let (null, alt) = (dev.join("null"), dev.join("null.alt"));
    std::thread::scope(|s| {
        let swapper = s.spawn(|| {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(&null, &alt);
                swaps += 1;
            }
            swaps
        });
        // Collected first and checked after the swapper stopped: a failed assertion
        // inside the scope would leave it running and the scope waiting forever.
        let outputs: Vec<_> = (0..10)
            .map(|i| rt.run(&b, &uid(&format!("null{i}"))))
            .collect();
        stop.store(true, Ordering::Relaxed);
        assert!(swapper.join().unwrap() > 10, "the swapper hardly ran");
        for out in &outputs {
            let text = ok(out);
            assert!(text.ends_with("end\n"), "{text}");
            let lines: Vec<&str> = text.lines().filter(|l| l.contains('=')).collect();
            assert!(
                lines.iter().any(|l| l.starts_with("/etc/l4m-masked=")),
                "{text}"
            );
            for line in lines {
                assert!(
                    line.ends_with("=character special file 1:3"),
                    "a masked path is not the null device: {line}\n{text}"
                );
            }
        }
    });
    assert_eq!(core_pattern(), before);
}

/// A bundle that writes `kernel.shmmax` (an IPC-namespace sysctl) with `extra` mounts
/// appended, and a fake `sys/kernel/shmmax` under `fake` for them to bind.
fn sysctl_bundle(fake: &str) -> (Bundle, PathBuf) {
    let mut b = Bundle::new(&["true"]);
    let dir = b.dir.join(fake);
    std::fs::create_dir_all(dir.join("sys/kernel")).unwrap();
    std::fs::write(dir.join("sys/kernel/shmmax"), "FAKE").unwrap();
    b.edit(|c| c["linux"]["sysctl"] = json!({"kernel.shmmax": "4096000"}));
    (b, dir)
}

#[test]
fn sysctls_are_never_written_into_a_fake_procfs() {
    if !can_run() {
        return;
    }
    let rt = Runtime::new();
    // 1. A directory of the bundle bound at /proc instead of procfs.
    let (mut b, fake) = sysctl_bundle("fakeproc");
    let source = fake.to_str().unwrap().to_string();
    b.edit(|c| {
        for m in c["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/proc" {
                *m = json!({"destination": "/proc", "type": "bind", "source": source,
                            "options": ["rbind"]});
            }
        }
    });
    let mounts_before = host_mount_count();
    fails_with(&rt.run(&b, &uid("fakeproc")), "not procfs");
    assert_eq!(read(&fake.join("sys/kernel/shmmax")), "FAKE");

    // 2. The real procfs, with a directory bound over /proc/sys.
    let (mut b, fake) = sysctl_bundle("fakesys");
    let source = fake.join("sys").to_str().unwrap().to_string();
    b.edit(|c| {
        c["mounts"].as_array_mut().unwrap().push(
            json!({"destination": "/proc/sys", "type": "bind", "source": source,
                   "options": ["rbind"]}),
        )
    });
    fails_with(&rt.run(&b, &uid("fakesys")), "kernel.shmmax");
    assert_eq!(read(&fake.join("sys/kernel/shmmax")), "FAKE");
    assert_eq!(host_mount_count(), mounts_before);

    // The same sysctl through the real procfs works (so the refusals are the fakes').
    let (mut b, _) = sysctl_bundle("unused");
    b.edit(|c| c["process"]["args"] = json!(["cat", "/proc/sys/kernel/shmmax"]));
    assert_eq!(ok(&rt.run(&b, &uid("realsys"))), "4096000\n");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `KEY=VALUE` lines of `text` as pairs.
fn fields(text: &str) -> Vec<(&str, &str)> {
    text.lines().filter_map(|l| l.split_once('=')).collect()
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    fields(text)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"))
}

/// What a process exec'd into the created container reaches of init (pid 1, still the
/// runtime's code) and of a sibling it started itself (an ordinary process).
const PEEK: &str = r#"sleep 600 & c=$!
for t in 1 $c; do
  name=$([ $t = 1 ] && echo init || echo sibling)
  echo "$name.attach=$(/probe64 sys:101:16:$t | cut -d= -f2)"
  readlink /proc/$t/exe >/dev/null 2>&1 && echo "$name.exe=read" || echo "$name.exe=denied"
  readlink /proc/$t/root >/dev/null 2>&1 && echo "$name.root=read" || echo "$name.root=denied"
  ls -l /proc/$t/fd/ 2>/dev/null | grep -q -- '->' && echo "$name.fds=read" || echo "$name.fds=denied"
  cat /proc/$t/environ >/dev/null 2>&1 && echo "$name.environ=read" || echo "$name.environ=denied"
done
kill -9 $c
"#;

fn peek_at_created_init(user_namespace: bool) {
    let rt = Runtime::new();
    let id = &uid(if user_namespace {
        "ptrace-userns"
    } else {
        "ptrace"
    });
    let mut b = Bundle::new(&["sh", "-c", "echo started"]);
    std::fs::copy(probe_dir().join("probe64"), b.rootfs().join("probe64")).unwrap();
    b.edit(|c| {
        // No filter: the kernel's ptrace rules are what is tested, not seccomp's.
        c["linux"].as_object_mut().unwrap().remove("seccomp");
        if user_namespace {
            let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
            ns.push(json!({"type": "user"}));
            let map = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
            c["linux"]["uidMappings"] = map.clone();
            c["linux"]["gidMappings"] = map;
            // Root of the container's namespace with CAP_SYS_PTRACE there.
            for set in ["bounding", "effective", "permitted"] {
                let caps = c["process"]["capabilities"][set].as_array_mut().unwrap();
                caps.push(json!("CAP_SYS_PTRACE"));
            }
        }
    });
    ok(&rt.create(&b, id));
    let out = rt.cmd(&["exec", id, "sh", "-c", PEEK]);
    let text = ok(&out);
    // An ordinary process of the same user is in reach: the probes work...
    for what in ["exe", "root", "fds", "environ"] {
        assert_eq!(field(&text, &format!("sibling.{what}")), "read", "{text}");
    }
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope");
    if yama.map_or(true, |v| v.trim() == "0") {
        assert_eq!(field(&text, "sibling.attach"), "ok", "{text}");
    }
    // ...and init, non-dumpable until its exec, is not.
    assert_eq!(
        field(&text, "init.attach"),
        "err:1",
        "init could be ptraced:\n{text}"
    );
    for what in ["exe", "root", "fds", "environ"] {
        assert_eq!(
            field(&text, &format!("init.{what}")),
            "denied",
            "init's {what} was in reach before its exec:\n{text}"
        );
    }
    // Init was not disturbed: it still starts the container's process.
    ok(&rt.cmd(&["start", id]));
    wait_for(|| rt.status(id).as_deref() == Some("stopped"));
}

#[test]
fn a_process_of_the_container_cannot_ptrace_init_before_its_exec() {
    if !can_run() {
        return;
    }
    peek_at_created_init(false);
}

#[test]
fn ptrace_rights_in_the_containers_user_namespace_do_not_reach_init_before_its_exec() {
    if !can_run() {
        return;
    }
    peek_at_created_init(true);
}
