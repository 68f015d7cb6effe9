//! `start`, `kill` and `delete`.

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;

use super::{require, Paths};
use crate::cgroups::Cgroup;
use crate::error::{Context, Error, IoContext, Result};
use crate::state::{self, State, StateDir, Status};
use crate::sys::process::{pidfd_open, pidfd_send_signal};
use crate::sys::Errno;

/// Lets the created container exec its program. Returns once the exec happened; an
/// exec failure (reported by init over the start socket) is the error.
pub fn start(paths: &Paths, id: &str) -> Result<()> {
    let dir = StateDir::open(&paths.root, id)?;
    let mut st = dir.load()?.ok_or_else(|| Error::NotFound(id.into()))?;
    require(&st, &[Status::Created], "start it")?;
    let sock_path = crate::init::start_socket_path(&dir.path);
    // The socket goes when a start reaches the process: a start that was killed after
    // that (the process runs) but before recording it is completed here.
    if !sock_path.exists() {
        st.status = Status::Running;
        dir.save(&st).step("recording state")?;
        return Ok(());
    }
    crate::fault::point("start.before-signal");
    let mut conn =
        crate::init::connect_start_socket(&dir.path).step("reaching the container process")?;
    let _ = std::fs::remove_file(&sock_path);
    let mut failure = String::new();
    // EOF comes when the exec closed the (close-on-exec) connection.
    conn.read_to_string(&mut failure).at(&sock_path)?;
    crate::fault::point("start.after-signal");
    if !failure.is_empty() {
        st.status = Status::Stopped;
        dir.save(&st)?;
        return Err(Error::Init(failure)).step("starting the container process");
    }
    st.status = Status::Running;
    dir.save(&st).step("recording state")?;
    // poststart: after the user process started, before `start` returns; failures warn.
    if let Ok(spec) = super::load_snapshot(paths, id) {
        use crate::hooks::{state_for, Stage};
        let hooks = Stage::Poststart.hooks(&spec);
        if !hooks.is_empty() {
            // The process may already have exited: the document still names it.
            let pid = st.init.map(|i| i.pid);
            let state = state_for(st.oci_json(), Stage::Poststart, pid);
            crate::hooks::run(Stage::Poststart, &hooks, &state)?;
        }
    }
    Ok(())
}

/// `update`: applies new `linux.resources` values to the container's group and records
/// them in the config snapshot (what `exec` and later updates start from).
pub fn update(paths: &Paths, id: &str, changes: &serde_json::Value) -> Result<()> {
    let dir = StateDir::open(&paths.root, id)?;
    let st = dir.load()?.ok_or_else(|| Error::NotFound(id.into()))?;
    require(
        &st,
        &[Status::Created, Status::Running, Status::Paused],
        "update it",
    )?;
    // The merged resources are applied whole: a lone --memory-swap is measured against
    // the current memory limit, and applying twice converges.
    let snapshot_path = dir.file(crate::state::CONFIG_SNAPSHOT);
    let text = std::fs::read_to_string(&snapshot_path).at(&snapshot_path)?;
    let mut config: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::Init(format!("config snapshot: {e}")))?;
    merge(&mut config["linux"]["resources"], changes);
    let resources: oci_spec::runtime::LinuxResources =
        serde_path_to_error::deserialize(config["linux"]["resources"].clone())
            .map_err(|e| Error::config(format!("linux.resources.{}", e.path()), e.into_inner()))?;
    let settings = crate::cgroups::resources::settings(&resources)?;
    let group = st.cgroup.clone().ok_or_else(|| {
        Error::Unsupported("the container has no cgroup (no cgroup2 hierarchy)".into())
    })?;
    let mount = crate::cgroups::hierarchy()
        .ok_or_else(|| Error::Unsupported("no cgroup2 hierarchy".into()))?;
    crate::cgroups::resources::apply(&mount, &group, &settings, None)
        .step("applying the update")?;
    crate::rootfs::cpuview::refresh(&dir.path, &group).step("updating the CPU view")?;
    if changes.get("devices").is_some() {
        let nodes: Option<Vec<oci_spec::runtime::LinuxDevice>> =
            serde_json::from_value(config["linux"]["devices"].clone()).unwrap_or_default();
        if let Some(rules) =
            crate::cgroups::devices::rules(resources.devices().as_deref(), nodes.as_deref())?
        {
            crate::cgroups::devices::install(&group, &rules)
                .step("replacing the device program")?;
        }
    }
    let bytes = serde_json::to_vec(&config).map_err(|e| Error::Init(e.to_string()))?;
    crate::state::write_atomic(&snapshot_path, &bytes, 0o600).step("recording the update")
}

/// Overlays `changes` on `base`, object by object.
fn merge(base: &mut serde_json::Value, changes: &serde_json::Value) {
    match (base, changes) {
        (serde_json::Value::Object(b), serde_json::Value::Object(c)) => {
            for (k, v) in c {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, c) => *b = c.clone(),
    }
}

/// `pause`: freezes every process of a running container (`cgroup.freeze`).
pub fn pause(paths: &Paths, id: &str) -> Result<()> {
    set_frozen(paths, id, true)
}

/// `resume`: thaws a paused container.
pub fn resume(paths: &Paths, id: &str) -> Result<()> {
    set_frozen(paths, id, false)
}

fn set_frozen(paths: &Paths, id: &str, frozen: bool) -> Result<()> {
    let dir = StateDir::open(&paths.root, id)?;
    let mut st = dir.load()?.ok_or_else(|| Error::NotFound(id.into()))?;
    let (from, to, action) = if frozen {
        (Status::Running, Status::Paused, "pause it")
    } else {
        (Status::Paused, Status::Running, "resume it")
    };
    require(&st, &[from], action)?;
    let cgroup = st.cgroup.clone().ok_or_else(|| {
        Error::Unsupported("the container has no cgroup (no cgroup2 hierarchy) to freeze".into())
    })?;
    Cgroup { dir: cgroup }.freeze(frozen).step(if frozen {
        "freezing the cgroup"
    } else {
        "thawing the cgroup"
    })?;
    st.status = to;
    dir.save(&st).step("recording state")
}

/// Parses `TERM`, `SIGTERM`, `sigterm` or `15`.
pub fn parse_signal(text: &str) -> Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| Error::Usage(format!("unknown signal number {n}")));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse()
        .map_err(|_| Error::Usage(format!("unknown signal {text:?}")))
}

pub fn kill(paths: &Paths, id: &str, signal: Signal, all: bool) -> Result<()> {
    let st = state::read(&paths.root, id)?;
    require(
        &st,
        &[Status::Created, Status::Running, Status::Paused],
        "send it a signal",
    )?;
    if all {
        if let Some(dir) = &st.cgroup {
            return Cgroup { dir: dir.clone() }
                .signal_all(signal)
                .step("signalling every process");
        }
    }
    signal_init(&st, signal)
}

/// Signals the init process through a pidfd, after checking it is still ours.
fn signal_init(st: &State, signal: Signal) -> Result<()> {
    let init = st.init.ok_or_else(|| Error::WrongState {
        state: "creating".into(),
        message: "no process yet".into(),
    })?;
    let pidfd = match pidfd_open(init.pid()) {
        Err(e) if e.errno == Errno::ESRCH => return Ok(()),
        other => other?,
    };
    if !init.is_alive() {
        return Ok(());
    }
    match pidfd_send_signal(pidfd.as_fd(), signal) {
        Err(e) if e.errno == Errno::ESRCH => Ok(()),
        other => Ok(other?),
    }
}

/// Removes a container. Without `force`, a running one is refused; with it, everything
/// is killed first. Deleting what does not exist succeeds with `force`.
pub fn delete(paths: &Paths, id: &str, force: bool) -> Result<()> {
    let dir = match StateDir::open(&paths.root, id) {
        Err(Error::NotFound(_)) if force => return Ok(()),
        other => other?,
    };
    // poststop hooks run once the container is gone, before `delete` returns.
    let poststop = super::load_snapshot(paths, id)
        .ok()
        .map(|spec| crate::hooks::Stage::Poststop.hooks(&spec))
        .filter(|h| !h.is_empty());
    let mut last_state = None;
    // No state file: a create that crashed before recording anything.
    if let Some(st) = dir.load().unwrap_or(None) {
        last_state = Some(st.oci_json());
        let status = st.status();
        if matches!(status, Status::Running | Status::Paused) && !force {
            return Err(Error::WrongState {
                state: status.to_string(),
                message: "cannot delete it; stop it first or use --force".into(),
            });
        }
        destroy(&st)?;
    }
    crate::cgroups::pinning::Pins::new(&paths.root)
        .release(id)
        .step("releasing the pinned CPU")?;
    crate::fault::point("delete.before-state-removal");
    dir.remove().step("removing the state directory")?;
    if let (Some(hooks), Some(state)) = (poststop, last_state) {
        use crate::hooks::{state_for, Stage};
        crate::hooks::run(
            Stage::Poststop,
            &hooks,
            &state_for(state, Stage::Poststop, None),
        )?;
    }
    Ok(())
}

/// Kills every process of the container, waits for init to exit, removes the cgroup.
pub fn destroy(st: &State) -> Result<()> {
    let cgroup = st.cgroup.as_ref().map(|dir| Cgroup { dir: dir.clone() });
    if let Some(init) = st.init.filter(|i| i.is_alive()) {
        if let Ok(pidfd) = pidfd_open(init.pid()) {
            if init.is_alive() {
                let _ = pidfd_send_signal(pidfd.as_fd(), Signal::SIGKILL);
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(10_000u16));
            }
        }
    }
    crate::fault::point("delete.after-kill");
    if let Some(cg) = cgroup {
        cg.destroy().step("removing the cgroup")?;
    }
    crate::fault::point("delete.after-cgroup");
    Ok(())
}

/// Waits up to `timeout` for a process behind a pidfd to exit.
pub fn wait_exit(pid: nix::unistd::Pid, timeout: Duration) -> bool {
    let Ok(pidfd) = pidfd_open(pid) else {
        return true;
    };
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("SIGINT").unwrap(), Signal::SIGINT);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
