//! The container's init process: forked by `create` into the new namespaces, it builds
//! the container around itself, reports `Ready`, waits for `start`, and execs the user's
//! program. Nothing here returns: the process ends in exec or `_exit`.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use crate::error::{Context, IoContext, Result};
use crate::namespaces::Plan;
use crate::rootfs;
use crate::spec::Bundle;
use crate::sync::{Channel, Message};
use crate::sys::process::exit_child;
use crate::sys::SysError;

/// What init needs from the runtime; everything was opened before the fork.
pub struct InitArgs<'a> {
    pub bundle: &'a Bundle,
    pub plan: &'a Plan,
    pub channel: Channel,
    /// The listening socket `start` connects to.
    pub start_socket: UnixListener,
    pub console_socket: Option<OwnedFd>,
    pub cgroup_dir: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    /// Socket-activation fds (from 3) passed on with `LISTEN_FDS`; part of `preserve_fds`.
    pub listen_fds: u32,
    /// Mounts the runtime built for init to attach.
    pub prepared: &'a rootfs::Prepared,
    /// The validated layers (rootless: init mounts the overlay itself).
    pub stack: Option<&'a crate::layers::Stack>,
    /// `linux.seccomp`, compiled by the runtime before anything existed.
    pub seccomp: Option<&'a crate::seccomp::Filter>,
}

/// The program to exec, resolved during setup so that "not found" fails `create`.
pub struct Ready {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// A seccomp filter still to install, right before the exec (noNewPrivileges).
    pub seccomp: Option<crate::seccomp::Filter>,
    /// startContainer hooks, run after `start` and right before the exec, and the
    /// state document they get.
    pub start_hooks: Vec<oci_spec::runtime::Hook>,
    pub state: Option<serde_json::Value>,
}

pub fn run(args: InitArgs<'_>) -> ! {
    // Before anything of the container can see this process. Rootless, the runtime
    // (an ordinary user) still has to write this process's uid_map: after "go".
    if !crate::rootless::active() {
        if let Err(e) = crate::sys::process::set_non_dumpable() {
            let _ = args.channel.send(&Message::Failed(e.to_string()));
            exit_child(1)
        }
    }
    let ready = match setup(&args) {
        Ok(ready) => ready,
        Err(e) => {
            let _ = args.channel.send(&Message::Failed(e.to_string()));
            exit_child(1)
        }
    };
    if let Err(e) = args.channel.send(&Message::Ready) {
        let _ = writeln!(std::io::stderr(), "left4me-runtime init: {e}");
        exit_child(1)
    }
    drop(args.channel);
    wait_for_start_and_exec(args.start_socket, &ready, args.preserve_fds)
}

/// Blocks until `start` connects, then execs. The connection is close-on-exec: `start`
/// sees EOF exactly when exec succeeded, or reads the error if it failed.
pub fn wait_for_start_and_exec(listener: UnixListener, ready: &Ready, preserve_fds: u32) -> ! {
    let conn = loop {
        match listener.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => exit_child(1),
        }
    };
    drop(listener);
    if !ready.start_hooks.is_empty() {
        let state = crate::hooks::state_for(
            ready.state.clone().unwrap_or_default(),
            crate::hooks::Stage::StartContainer,
            None,
        );
        if let Err(e) = crate::hooks::run(
            crate::hooks::Stage::StartContainer,
            &ready.start_hooks,
            &state,
        ) {
            let mut conn = conn;
            let _ = conn.write_all(e.to_string().as_bytes());
            exit_child(1)
        }
    }
    let err = crate::process::exec(
        &ready.program,
        &ready.args,
        &ready.env,
        preserve_fds,
        ready.seccomp.as_ref(),
    );
    let mut conn = conn;
    let _ = conn.write_all(err.to_string().as_bytes());
    exit_child(127)
}

fn setup(args: &InitArgs<'_>) -> Result<Ready> {
    args.channel.expect_go()?;
    if crate::rootless::active() {
        crate::sys::process::set_non_dumpable()?;
    }
    let spec = &args.bundle.spec;
    let process = spec.process().as_ref().expect("validated: process exists");
    let linux = spec.linux().as_ref().expect("validated: linux exists");
    if args.plan.new_user {
        become_namespace_root(linux);
    }
    if args.plan.new_cgroup {
        nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
            .map_err(|e| SysError::new("unshare", "cgroup namespace", e))?;
    }
    if let Some(name) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name).map_err(|e| SysError::new("sethostname", name, e))?;
    }
    if let Some(name) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        crate::sys::process::set_domainname(name)?;
    }
    // The hooks' point: the runtime runs prestart and createRuntime hooks, then this
    // process runs createContainer hooks in the container's namespaces, before pivot_root.
    let state: std::cell::RefCell<Option<serde_json::Value>> = Default::default();
    let run_hooks = || -> Result<()> {
        args.channel.send(&Message::Hooks)?;
        let text = match args.channel.recv()? {
            Some(Message::HooksDone(text)) => text,
            Some(Message::Failed(msg)) => return Err(crate::error::Error::Init(msg)),
            other => {
                return Err(crate::error::Error::Init(format!(
                    "unexpected sync message {other:?} at the hooks"
                )))
            }
        };
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| crate::error::Error::Init(format!("hook state: {e}")))?;
        let stage = crate::hooks::Stage::CreateContainer;
        crate::hooks::run(stage, &stage.hooks(spec), &value)?;
        *state.borrow_mut() = Some(value);
        Ok(())
    };
    let hooks_wanted = crate::hooks::any_before_start(spec);
    let env = rootfs::Env {
        bundle: args.bundle,
        in_userns: args.plan.user,
        new_cgroupns: args.plan.new_cgroup,
        cgroup_dir: args.cgroup_dir.as_deref(),
        no_pivot: args.no_pivot,
        prepared: args.prepared,
        stack: args.stack,
        before_pivot: if hooks_wanted { Some(&run_hooks) } else { None },
    };
    let steps = rootfs::plan(&env)?;
    rootfs::setup(&env, &steps).step("preparing the rootfs")?;
    let state = state.into_inner();
    if process.terminal() == Some(true) {
        let socket = args.console_socket.as_ref().ok_or_else(|| {
            crate::error::Error::Usage("process.terminal needs --console-socket".into())
        })?;
        let size = process
            .console_size()
            .as_ref()
            .map(|b| (b.height() as u16, b.width() as u16));
        let slave = crate::console::setup_in_container(socket.as_fd(), size)?;
        rootfs::bind_console(slave.as_fd())?;
    }
    crate::process::apply_limits(process, linux.personality().as_ref())?;
    let seccomp_at_exec = crate::process::install_seccomp_early(process, args.seccomp)?;
    crate::process::become_user(process)?;
    crate::process::enter_cwd(process.cwd())?;
    let args_v = process.args().clone().unwrap_or_default();
    let mut env_v = crate::process::env_with_home(
        process.env().clone().unwrap_or_default(),
        process.user().uid(),
    );
    if args.listen_fds > 0 {
        let n = args.listen_fds;
        env_v.retain(|v| !v.starts_with("LISTEN_FDS=") && !v.starts_with("LISTEN_PID="));
        env_v.push(format!("LISTEN_FDS={n}"));
        env_v.push(format!("LISTEN_PID={}", nix::unistd::getpid()));
    }
    let program = crate::process::find_program(&args_v[0], &env_v)?;
    Ok(Ready {
        program,
        args: args_v,
        env: env_v,
        seccomp: seccomp_at_exec.cloned(),
        start_hooks: crate::hooks::Stage::StartContainer.hooks(spec),
        state,
    })
}

/// Socket activation: systemd's `LISTEN_FDS`, honoured only when `LISTEN_PID` names
/// this process (as runc, via go-systemd): a stale pair inherited from a parent passes
/// nothing. Call in the runtime, before forking.
pub fn listen_fds() -> Option<u32> {
    let pid: i32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != nix::unistd::getpid().as_raw() {
        return None;
    }
    std::env::var("LISTEN_FDS")
        .ok()?
        .parse()
        .ok()
        .filter(|n| *n > 0)
}

/// In a fresh user namespace the process starts as the overflow uid; become the
/// namespace's root if it is mapped, so setup runs with a real identity.
fn become_namespace_root(linux: &oci_spec::runtime::Linux) {
    let mapped = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .any(|e| e.container_id() == 0 && e.size() > 0)
    };
    if mapped(linux.gid_mappings()) {
        let _ = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0));
    }
    if mapped(linux.uid_mappings()) {
        let _ = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0));
    }
}

/// Where the start socket of a container lives.
pub fn start_socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(crate::state::START_SOCKET)
}

/// Runs `f` with an address for the socket `name` in the state directory that fits
/// `sun_path` (108 bytes): the path itself, or — under a long `--root` with podman's
/// 64-character ids — the same file reached through `/proc/self/fd/N` of the opened
/// state directory.
pub fn with_socket_address<T>(
    state_dir: &Path,
    name: &str,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> Result<T> {
    let path = state_dir.join(name);
    if path.as_os_str().len() < 100 {
        return f(&path).at(&path);
    }
    let dir = crate::sys::fd::openat2(
        None,
        state_dir,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        crate::sys::fd::Resolve::default(),
    )?;
    let short = PathBuf::from(format!(
        "/proc/self/fd/{}/{name}",
        std::os::fd::AsRawFd::as_raw_fd(&dir),
    ));
    f(&short).at(&path)
}

/// Binds the start socket of a container (mode 0600).
pub fn bind_start_socket(state_dir: &Path) -> Result<std::os::unix::net::UnixListener> {
    let listener = with_socket_address(state_dir, crate::state::START_SOCKET, |p| {
        std::os::unix::net::UnixListener::bind(p)
    })?;
    let path = start_socket_path(state_dir);
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .at(&path)?;
    Ok(listener)
}

/// Connects to the start socket of a container.
pub fn connect_start_socket(state_dir: &Path) -> Result<std::os::unix::net::UnixStream> {
    with_socket_address(state_dir, crate::state::START_SOCKET, |p| {
        std::os::unix::net::UnixStream::connect(p)
    })
}
