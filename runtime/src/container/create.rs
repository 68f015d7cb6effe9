//! `create`: everything is set up and the container's init waits for `start`.
//!
//! Runtime side, in order: load and validate the bundle (nothing exists yet) → claim the
//! state directory → cgroup → start socket → fork init into its namespaces and cgroup
//! (through a stage-1 child when existing namespaces are joined) → write ID maps → let
//! init build the container → record `created`. Any failure undoes every earlier step.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::Paths;
use crate::cgroups::{self, Cgroup};
use crate::error::{Context, Error, IoContext, Result};
use crate::init::{self, InitArgs};
use crate::namespaces::{self, Plan};
use crate::spec::Bundle;
use crate::state::{self, ProcessId, State, StateDir, Status};
use crate::sync::{self, Message};
use crate::sys::process::{exit_child, fork_with, Forked};

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub preserve_fds: u32,
    /// `run` in the foreground with a terminal and no socket: the runtime itself takes
    /// the pty master and proxies it.
    pub own_console: bool,
    /// `run` in the foreground under `NOTIFY_SOCKET`: when the config asks for it
    /// (`org.left4me.notify=container`), pass a relayed socket into the container.
    pub notify_relay: bool,
}

/// A created container, as `run` needs it.
pub struct Created {
    pub init: ProcessId,
    pub console: Option<OwnedFd>,
    /// The passed-in notify socket, for the caller to relay.
    pub notify: Option<crate::notify::Proxy>,
}

pub fn create(paths: &Paths, id: &str, opts: &CreateOptions) -> Result<Created> {
    state::validate_id(id)?;
    let mut bundle = Bundle::load(&opts.bundle).step("loading the bundle")?;
    let checked = match &paths.policy {
        Some(policy) => crate::policy::enforce(policy, &opts.bundle, &bundle)?,
        None => None,
    };
    // Nothing exists yet: when the re-exec happens, the command starts over protected.
    if crate::exe_guard::needed_for(&bundle.spec) {
        crate::exe_guard::ensure_protected()?;
    }
    if let Some(auto) = bundle.userns.clone().filter(|a| a.auto) {
        let start = crate::idblocks::Allocator::new(&paths.id_blocks)
            .allocate(id, &auto)
            .step("allocating a UID/GID block")?;
        bundle.use_id_block(start)?;
        crate::fault::point("create.after-id-block");
    }
    let linux = bundle.spec.linux().as_ref().expect("validated");
    let plan = Plan::from_spec(linux)?;
    // Resource values are checked before anything exists, too.
    let limits = match linux.resources() {
        Some(r) => crate::cgroups::resources::settings(r)?,
        None => Vec::new(),
    };
    let pin = cgroups::pinning::wanted(&bundle.spec)?;
    let public_only = cgroups::netdeny::wanted(&bundle.spec)?;
    let container_notifies = crate::notify::container_reports(&bundle.spec)?;
    let seccomp = linux
        .seccomp()
        .as_ref()
        .map(crate::seccomp::Filter::compile)
        .transpose()?;
    let device_rules = cgroups::devices::rules(
        linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().as_deref()),
        linux.devices().as_deref(),
    )?;
    // Every layer reference is checked and opened before anything exists.
    let stack = bundle
        .layers
        .as_ref()
        .map(|l| crate::layers::resolve(l, &bundle.dir))
        .transpose()
        .step("checking the layers")?;
    let terminal = bundle.spec.process().as_ref().and_then(|p| p.terminal()) == Some(true);
    if terminal && opts.console_socket.is_none() && !opts.own_console {
        return Err(Error::Usage(
            "process.terminal is true: --console-socket is required".into(),
        ));
    }
    if !terminal && opts.console_socket.is_some() {
        return Err(Error::Usage(
            "--console-socket given but process.terminal is false".into(),
        ));
    }
    let dir = StateDir::create(&paths.root, id)?;
    crate::fault::point("create.after-state-dir");
    let notify = match relay_notify(&dir, opts.notify_relay && container_notifies, &mut bundle) {
        Ok(n) => n,
        Err(e) => {
            let _ = dir.remove();
            return Err(e);
        }
    };
    let mut undo = Undo {
        cgroup: None,
        init: None,
        poststop: None,
        pinned: None,
    };
    let request = Request {
        id,
        limits: &limits,
        device_rules: device_rules.as_deref(),
        pin,
        public_only,
        seccomp: seccomp.as_ref(),
        bundle: &bundle,
        stack: stack.as_ref(),
        plan: &plan,
        opts,
        terminal,
        checked: checked.as_ref(),
    };
    match build(&dir, &request, &mut undo) {
        Ok(created) => Ok(Created { notify, ..created }),
        Err(e) => {
            undo.run();
            let _ = dir.remove();
            Err(e)
        }
    }
}

/// `org.left4me.notify=container` under `run` with `NOTIFY_SOCKET`: the relayed socket,
/// passed into the bundle's mounts and environment.
fn relay_notify(
    dir: &StateDir,
    wanted: bool,
    bundle: &mut Bundle,
) -> Result<Option<crate::notify::Proxy>> {
    if !wanted || std::env::var_os("NOTIFY_SOCKET").is_none() {
        return Ok(None);
    }
    let proxy = crate::notify::Proxy::bind(&dir.path).step("creating the notify socket")?;
    proxy.pass_into(&mut bundle.spec)?;
    Ok(Some(proxy))
}

/// What to tear down if creation fails part-way.
struct Undo {
    cgroup: Option<Cgroup>,
    init: Option<Pid>,
    /// Once hooks have started, a failure ends with the poststop hooks (OCI lifecycle).
    poststop: Option<(Vec<oci_spec::runtime::Hook>, serde_json::Value)>,
    /// The state root whose pinning table has an entry for the id.
    pinned: Option<(std::path::PathBuf, String)>,
}

impl Undo {
    fn run(self) {
        if let Some(pid) = self.init {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup {
            if let Err(e) = cg.destroy() {
                crate::log::warn(&format!("cleaning up cgroup {}: {e}", cg.dir.display()));
            }
        }
        if let Some((root, id)) = self.pinned {
            let _ = cgroups::pinning::Pins::new(&root).release(&id);
        }
        if let Some((hooks, state)) = self.poststop {
            let _ = crate::hooks::run(crate::hooks::Stage::Poststop, &hooks, &state);
        }
    }
}

/// Everything `create` checked before claiming the id.
struct Request<'a> {
    id: &'a str,
    limits: &'a [crate::cgroups::resources::Setting],
    device_rules: Option<&'a [cgroups::devices::Rule]>,
    /// `org.left4me.cpuset=auto`: choose a CPU for the container.
    pin: bool,
    /// `org.left4me.network=public-only`: refuse private destinations.
    public_only: bool,
    seccomp: Option<&'a crate::seccomp::Filter>,
    bundle: &'a Bundle,
    stack: Option<&'a crate::layers::Stack>,
    plan: &'a Plan,
    opts: &'a CreateOptions,
    terminal: bool,
    /// What the policy approved, by descriptor (governed bundles).
    checked: Option<&'a crate::policy::Checked>,
}

fn build(dir: &StateDir, request: &Request<'_>, undo: &mut Undo) -> Result<Created> {
    let Request {
        id,
        limits,
        device_rules,
        pin,
        public_only,
        seccomp,
        bundle,
        stack,
        plan,
        opts,
        terminal,
        checked,
    } = *request;
    let linux = bundle.spec.linux().as_ref().expect("validated");
    let mount = cgroups::hierarchy();
    let cgroup_dir = match &mount {
        Some(mount) => Some(cgroups::resolve(
            mount,
            linux.cgroups_path().as_deref(),
            id,
        )?),
        None if !limits.is_empty() || device_rules.is_some() || pin || public_only => {
            let wanted = [
                (!limits.is_empty(), "linux.resources".to_string()),
                (device_rules.is_some(), "linux.resources.devices".into()),
                (pin, format!("annotations.{}", cgroups::pinning::ANNOTATION)),
                (
                    public_only,
                    format!("annotations.{}", cgroups::netdeny::ANNOTATION),
                ),
            ];
            let wanted: Vec<String> = wanted
                .into_iter()
                .filter(|(w, _)| *w)
                .map(|(_, k)| k)
                .collect();
            return Err(Error::Unsupported(format!(
                "{}: needs a cgroup2 hierarchy, and none is mounted here",
                wanted.join(", ")
            )));
        }
        None if linux.cgroups_path().is_some() => {
            return Err(Error::Unsupported(
                "linux.cgroupsPath: the host has no cgroup2 hierarchy".into(),
            ))
        }
        None => None,
    };
    let cgroup_dir = match cgroup_dir {
        Some(dir) if crate::rootless::active() && !crate::rootless::may_create(&dir) => {
            if !limits.is_empty() || pin || public_only {
                return Err(Error::Unsupported(format!(
                    "rootless: {} is outside the cgroup subtree delegated to this user, and \
                     linux.resources (or a cgroup annotation) needs a group; run under \
                     `systemd-run --user --scope -p Delegate=yes` or drop the limits",
                    dir.display()
                )));
            }
            // Device rules need no group here: a user namespace cannot create devices.
            crate::log::debug(&format!(
                "rootless: no cgroup ({} is not writable), none needed",
                dir.display()
            ));
            None
        }
        other => other,
    };
    let mut st = State {
        oci_version: bundle.spec.version().clone(),
        id: id.to_string(),
        status: Status::Creating,
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        annotations: bundle.spec.annotations().clone().unwrap_or_default(),
        created: crate::log::rfc3339_now(),
        init: None,
        creator: Some(ProcessId::of(nix::unistd::getpid())?),
        cgroup: cgroup_dir.clone(),
        namespaces: Vec::new(),
        owner: nix::unistd::geteuid().as_raw(),
    };
    // Recorded before the cgroup exists, so `delete` after a crash knows what to remove.
    dir.save(&st).step("recording state")?;
    crate::fault::point("create.after-state-record");
    let snapshot = serde_json::to_vec(&bundle.spec).map_err(|e| Error::Init(e.to_string()))?;
    state::write_atomic(&dir.file(state::CONFIG_SNAPSHOT), &snapshot, 0o600)?;
    if let Some(cg_dir) = cgroup_dir {
        let mut limits = limits.to_vec();
        if pin {
            undo.pinned = Some((state_root(dir), id.to_string()));
            let cpu = pin_cpu(dir, id, &cg_dir).step("choosing a CPU (org.left4me.cpuset)")?;
            limits.push(cgroups::resources::Setting {
                controller: "cpuset",
                file: "cpuset.cpus".into(),
                value: cpu.to_string(),
                key: format!("annotations.{}", cgroups::pinning::ANNOTATION),
            });
        }
        let cg = Cgroup::create(cg_dir).step("creating the cgroup")?;
        crate::fault::point("create.after-cgroup");
        let mount = mount.as_deref().expect("a group needs a hierarchy");
        let delegated = cgroups::own_base()?;
        let delegated = mount.join(delegated.strip_prefix("/").unwrap_or(&delegated));
        let applied = cgroups::resources::apply(mount, &cg.dir, &limits, Some(&delegated));
        undo.cgroup = Some(cg);
        // Before the container's first process exists: it is cloned into the group.
        applied.step("applying linux.resources")?;
        crate::fault::point("create.after-limits");
        if let Some(rules) = device_rules {
            let cg = undo.cgroup.as_ref().expect("just set");
            cgroups::devices::install(&cg.dir, rules)
                .step("installing the device program (linux.resources.devices)")?;
        }
        if public_only {
            let cg = undo.cgroup.as_ref().expect("just set");
            cgroups::netdeny::install(&cg.dir)
                .step("installing the network deny list (org.left4me.network)")?;
        }
    }
    let start_socket = init::bind_start_socket(&dir.path).step("creating the start socket")?;
    let (console_for_init, console_for_us) = console_sockets(opts, terminal)?;
    let (parent_ch, child_ch) = sync::pair()?;
    let cgroup_fd = undo.cgroup.as_ref().map(Cgroup::open).transpose()?;
    let listen = init::listen_fds().unwrap_or(0);
    let mut prepared = crate::rootfs::prepare(bundle, stack, upper_owner(bundle), checked)?;
    prepared.cpu_view =
        crate::rootfs::cpuview::prepare(&dir.path, undo.cgroup.as_ref().map(|c| c.dir.as_path()))
            .step("preparing the CPU view")?;
    let spawn = |child_ch: sync::Channel| {
        init::run(InitArgs {
            bundle,
            plan,
            channel: child_ch,
            start_socket,
            console_socket: console_for_init,
            cgroup_dir: undo.cgroup.as_ref().map(|c| c.dir.clone()),
            no_pivot: opts.no_pivot,
            preserve_fds: opts.preserve_fds + listen,
            listen_fds: listen,
            prepared: &prepared,
            stack,
            seccomp,
        })
    };
    let pid = spawn_init(dir, plan, cgroup_fd.as_ref(), &parent_ch, child_ch, spawn)?;
    undo.init = Some(pid);
    crate::fault::point("create.after-init-spawn");
    if cgroup_fd.is_none() {
        if let Some(cg) = &undo.cgroup {
            cg.add(pid).step("joining the cgroup")?;
        }
    }
    if plan.new_user {
        namespaces::write_id_maps(pid, linux)?;
        crate::fault::point("create.after-id-maps");
    }
    if let Some(adj) = bundle
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.oom_score_adj())
    {
        let path = format!("/proc/{pid}/oom_score_adj");
        std::fs::write(&path, adj.to_string())
            .at(&path)
            .step("process.oomScoreAdj")?;
    }
    st.init = Some(ProcessId::of(pid)?);
    dir.save(&st)?;
    parent_ch.send(&Message::Go)?;
    crate::fault::point("create.after-init-go");
    if crate::hooks::any_before_start(&bundle.spec) {
        run_runtime_hooks(&parent_ch, &st, pid, bundle, undo)?;
    }
    parent_ch.expect_ready()?;
    crate::fault::point("create.after-init-ready");
    let console = match console_for_us {
        Some(sock) => Some(crate::console::receive(sock.as_fd())?),
        None => None,
    };
    st.status = Status::Created;
    st.creator = None;
    dir.save(&st).step("recording state")?;
    if let Some(pid_file) = &opts.pid_file {
        write_pid_file(pid_file, pid)?;
    }
    crate::fault::point("create.after-created");
    Ok(Created {
        init: st.init.expect("set above"),
        console,
        notify: None,
    })
}

/// The socket init sends the pty over: the caller's, or one end of a pair we keep.
fn console_sockets(
    opts: &CreateOptions,
    terminal: bool,
) -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
    if !terminal {
        return Ok((None, None));
    }
    if let Some(path) = &opts.console_socket {
        return Ok((Some(crate::console::connect(path)?), None));
    }
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().at("console socketpair")?;
    Ok((Some(theirs.into()), Some(ours.into())))
}

/// Forks init with its namespaces and cgroup. With namespaces to join, a stage-1 child
/// joins them first and clones init as *our* child (`CLONE_PARENT`), then exits.
fn spawn_init(
    dir: &StateDir,
    plan: &Plan,
    cgroup: Option<&OwnedFd>,
    parent_ch: &sync::Channel,
    child_ch: sync::Channel,
    init: impl FnOnce(sync::Channel),
) -> Result<Pid> {
    let cg = cgroup.map(|c| c.as_fd());
    if plan.join.is_empty() {
        return match fork_with(plan.create, cg).step("cloning the container process")? {
            Forked::Child => {
                parent_ch.close_in_child();
                dir.close_in_child();
                init(child_ch);
                exit_child(1)
            }
            Forked::Parent(pid) => Ok(pid),
        };
    }
    match fork_with(CloneFlags::empty(), None).step("forking to join namespaces")? {
        Forked::Child => {
            parent_ch.close_in_child();
            dir.close_in_child();
            let result = namespaces::join_all(&plan.join)
                .step("joining namespaces")
                .and_then(|_| {
                    fork_with(plan.create | CloneFlags::CLONE_PARENT, cg)
                        .step("cloning the container process")
                });
            match result {
                Ok(Forked::Child) => {
                    init(child_ch);
                    exit_child(1)
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
        Forked::Parent(stage1) => {
            drop(child_ch);
            let reply = parent_ch.recv();
            let _ = nix::sys::wait::waitpid(stage1, None);
            match reply? {
                Some(Message::Pid(pid)) => Ok(Pid::from_raw(pid)),
                Some(Message::Failed(msg)) => Err(Error::Init(msg)),
                other => Err(Error::Init(format!("stage-1 child failed ({other:?})"))),
            }
        }
    }
}

/// The host ids of the container's process user: a new upper layer belongs to them.
fn upper_owner(bundle: &Bundle) -> crate::layers::overlay::Owner {
    let linux = bundle.spec.linux().as_ref();
    let user = bundle.spec.process().as_ref().map(|p| p.user());
    let (uid, gid) = user.map_or((0, 0), |u| (u.uid(), u.gid()));
    crate::layers::overlay::Owner {
        uid: namespaces::to_host(uid, linux.and_then(|l| l.uid_mappings().as_ref())).unwrap_or(uid),
        gid: namespaces::to_host(gid, linux.and_then(|l| l.gid_mappings().as_ref())).unwrap_or(gid),
    }
}

pub fn write_pid_file(path: &Path, pid: Pid) -> Result<()> {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().at(".")?.join(path)
    };
    state::write_atomic(&path, pid.to_string().as_bytes(), 0o644).step("writing --pid-file")
}

/// The state root a container directory lives in.
fn state_root(dir: &StateDir) -> std::path::PathBuf {
    dir.path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path.clone())
}

/// Chooses and records the CPU of a pinned container.
fn pin_cpu(dir: &StateDir, id: &str, group: &Path) -> Result<usize> {
    let allowed = cgroups::pinning::allowed_cpus(group)?;
    let topo = cgroups::pinning::Topology::read(Path::new(cgroups::pinning::SYSFS_CPU), &allowed);
    cgroups::pinning::Pins::new(&state_root(dir)).assign(id, &allowed, &topo)
}

/// At init's hook point (mounts made, pivot_root next): the prestart and createRuntime
/// hooks run here, in the runtime's namespaces; init then runs createContainer hooks.
fn run_runtime_hooks(
    channel: &sync::Channel,
    st: &State,
    pid: Pid,
    bundle: &Bundle,
    undo: &mut Undo,
) -> Result<()> {
    match channel.recv()? {
        Some(Message::Hooks) => {}
        Some(Message::Failed(msg)) => return Err(Error::Init(msg)),
        other => {
            return Err(Error::Init(format!(
                "expected the hook point, got {other:?}"
            )))
        }
    }
    use crate::hooks::{state_for, Stage};
    let base = st.oci_json();
    undo.poststop = Some((
        Stage::Poststop.hooks(&bundle.spec),
        state_for(base.clone(), Stage::Poststop, None),
    ));
    for stage in [Stage::Prestart, Stage::CreateRuntime] {
        let state = state_for(base.clone(), stage, Some(pid.as_raw()));
        if let Err(e) = crate::hooks::run(stage, &stage.hooks(&bundle.spec), &state) {
            let _ = channel.send(&Message::Failed(e.to_string()));
            return Err(e);
        }
    }
    let state = state_for(base, Stage::CreateContainer, Some(pid.as_raw()));
    channel.send(&Message::HooksDone(state.to_string()))
}
