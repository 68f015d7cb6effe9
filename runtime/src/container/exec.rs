//! `exec`: a new process in a running container. A stage-1 child joins all of the
//! container's namespaces at once (`setns` on a pidfd, immune to pid reuse), then clones
//! the process into the container's cgroup as the runtime's own child.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::{Process, Spec};

use super::{require, Paths};
use crate::cgroups::Cgroup;
use crate::error::{Context, Error, IoContext, Result};
use crate::process::AffinityStage;
use crate::state::{self, Status};
use crate::sync::{self, Message};
use crate::sys::process::{exit_child, fork_with, pidfd_open, setns_pidfd, Forked};

pub struct ExecOptions {
    pub process_file: Option<PathBuf>,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, u32)>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub preserve_fds: u32,
    pub detach: bool,
}

/// The process to run: `--process FILE`, or the container's own process with the
/// command line and the `--env/--cwd/--user/--tty` overrides (runc's rules).
pub fn build_process(spec: &Spec, opts: &ExecOptions) -> Result<Process> {
    if let Some(path) = &opts.process_file {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::config(path.display().to_string(), e))?;
        // runc accepts a process without `user` (root).
        if let Some(obj) = value.as_object_mut() {
            obj.entry("user")
                .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        }
        // Reuse config.json's capability filtering by wrapping the process.
        let wrapped = serde_json::json!({"ociVersion": "1.0.0", "process": value.take()});
        let spec = crate::spec::parse(&wrapped.to_string())?;
        return spec
            .process()
            .clone()
            .ok_or_else(|| Error::config("process", "missing"));
    }
    if opts.args.is_empty() {
        return Err(Error::Usage(
            "exec needs a command (or --process FILE)".into(),
        ));
    }
    let mut process = spec
        .process()
        .clone()
        .ok_or_else(|| Error::config("process", "missing"))?;
    process.set_args(Some(opts.args.clone()));
    let mut env = process.env().clone().unwrap_or_default();
    for var in &opts.env {
        let key = var.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(var.clone());
    }
    process.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some((uid, gid)) = opts.user {
        let mut user = process.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        user.set_additional_gids(None);
        process.set_user(user);
    }
    process.set_terminal(Some(opts.tty));
    Ok(process)
}

/// Starts the process; returns its pid and, for a foreground tty, the pty master.
pub fn exec(paths: &Paths, id: &str, opts: &ExecOptions) -> Result<(Pid, Option<OwnedFd>)> {
    let st = state::read(&paths.root, id)?;
    require(&st, &[Status::Created, Status::Running], "exec in it")?;
    let spec = super::load_snapshot(paths, id)?;
    let process = build_process(&spec, opts)?;
    let init = st.init.expect("a created container has an init");
    let pidfd = pidfd_open(init.pid()).step("opening the container's init")?;
    if !init.is_alive() {
        return Err(Error::WrongState {
            state: "stopped".into(),
            message: "cannot exec in it".into(),
        });
    }
    let join = crate::namespaces::differing(init.pid())?;
    let cgroup_fd = match &st.cgroup {
        Some(dir) => Some(Cgroup { dir: dir.clone() }.open()?),
        None => None,
    };
    let terminal = process.terminal() == Some(true);
    let (console_for_child, console_for_us) = match (terminal, &opts.console_socket) {
        (false, _) => (None, None),
        (true, Some(path)) => (Some(crate::console::connect(path)?), None),
        (true, None) if opts.detach => {
            return Err(Error::Usage(
                "--tty with --detach needs --console-socket".into(),
            ))
        }
        (true, None) => {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair().at("console socketpair")?;
            (Some(OwnedFd::from(theirs)), Some(OwnedFd::from(ours)))
        }
    };
    let (parent_ch, child_ch) = sync::pair()?;
    let linux = spec.linux().clone().unwrap_or_default();
    // exec'd processes run under the container's filter too.
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(crate::seccomp::Filter::compile)
        .transpose()?;
    let cgroup = cgroup_fd.as_ref().map(|c| c.as_fd());
    let stage1 = match fork_with(CloneFlags::empty(), None).step("forking to join the container")? {
        Forked::Child => {
            parent_ch.close_in_child();
            // Before joining: the container must not ptrace or /proc-read the runtime's
            // copy (inherited by the process cloned into it, reset by its exec).
            let cloned = crate::sys::process::set_non_dumpable()
                .and_then(|_| setns_pidfd(pidfd.as_fd(), join))
                .step("joining the container's namespaces")
                .and_then(|_| {
                    fork_with(CloneFlags::CLONE_PARENT, cgroup).step("cloning into the container")
                });
            match cloned {
                Ok(Forked::Child) => {
                    let err = run_child(
                        &process,
                        &linux,
                        console_for_child,
                        opts.preserve_fds,
                        seccomp.as_ref(),
                    );
                    let _ = child_ch.send(&Message::Failed(err.to_string()));
                    exit_child(127)
                }
                Ok(Forked::Parent(pid)) => {
                    let _ = child_ch.send(&Message::Pid(pid.as_raw()));
                    exit_child(0)
                }
                Err(e) => {
                    let _ = child_ch.send(&Message::Failed(e.to_string()));
                    exit_child(1)
                }
            }
        }
        Forked::Parent(pid) => pid,
    };
    drop(child_ch);
    let first = parent_ch.recv();
    let _ = nix::sys::wait::waitpid(stage1, None);
    let pid = match first? {
        Some(Message::Pid(pid)) if pid > 0 => Pid::from_raw(pid),
        Some(Message::Failed(msg)) => return Err(Error::Init(msg)),
        other => return Err(Error::Init(format!("exec setup failed ({other:?})"))),
    };
    if let Some(adj) = process.oom_score_adj() {
        // Written from the host's /proc: the container's could be anything.
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, adj.to_string())
            .at(&path)
            .step("process.oomScoreAdj")?;
    }
    // The console arrives before the exec; then EOF means the exec happened.
    let console = match console_for_us {
        Some(sock) => Some(crate::console::receive(sock.as_fd())?),
        None => None,
    };
    match parent_ch.recv()? {
        None => {}
        Some(Message::Failed(msg)) => {
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(Error::Init(msg));
        }
        Some(other) => return Err(Error::Init(format!("unexpected sync message {other:?}"))),
    }
    if let Some(pid_file) = &opts.pid_file {
        super::create::write_pid_file(pid_file, pid)?;
    }
    Ok((pid, console))
}

/// In the container: set the process up and exec. Returns only the error.
fn run_child(
    process: &Process,
    linux: &oci_spec::runtime::Linux,
    console: Option<OwnedFd>,
    preserve_fds: u32,
    seccomp: Option<&crate::seccomp::Filter>,
) -> Error {
    type Prepared<'f> = (
        PathBuf,
        Vec<String>,
        Vec<String>,
        Option<&'f crate::seccomp::Filter>,
    );
    let result = (|| -> Result<Prepared<'_>> {
        crate::process::apply_exec_affinity(process, AffinityStage::Initial)?;
        if let Some(sock) = &console {
            let size = process
                .console_size()
                .as_ref()
                .map(|b| (b.height() as u16, b.width() as u16));
            crate::console::setup_in_container(sock.as_fd(), size)?;
        }
        crate::process::apply_limits(process, linux.personality().as_ref())?;
        let seccomp = crate::process::install_seccomp_early(process, seccomp)?;
        crate::process::become_user(process)?;
        crate::process::enter_cwd(process.cwd())?;
        let args = process.args().clone().unwrap_or_default();
        let env = crate::process::env_with_home(
            process.env().clone().unwrap_or_default(),
            process.user().uid(),
        );
        let program = crate::process::find_program(&args[0], &env)?;
        crate::process::apply_exec_affinity(process, AffinityStage::Final)?;
        Ok((program, args, env, seccomp))
    })();
    match result {
        Ok((program, args, env, seccomp)) => {
            crate::process::exec(&program, &args, &env, preserve_fds, seccomp)
        }
        Err(e) => e,
    }
}
