//! The container's cgroup v2 group: placement, tracking, kill-all and removal.
//!
//! Limits (`linux.resources`) belong to the cgroup v2 issue; this module gives every
//! container a group on whatever cgroup2 hierarchy the host has (`/sys/fs/cgroup` on a
//! pure v2 host, `/sys/fs/cgroup/unified` on a hybrid one), so processes are tracked and
//! killed as a unit, and the init process is cloned straight into it.

pub mod devices;
pub mod netdeny;
pub mod pinning;
pub mod resources;
pub mod stats;

use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Error, IoContext, Result};
use crate::sys::fd::{openat2, Resolve};

const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

/// The mount point of the cgroup2 hierarchy, if the host has one.
pub fn hierarchy() -> Option<PathBuf> {
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        })
}

/// The cgroup2 path of the calling process (`0::/path` in /proc/self/cgroup).
pub fn own_path() -> Result<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").at("/proc/self/cgroup")?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(PathBuf::from)
        .ok_or_else(|| Error::Unsupported("no cgroup2 entry in /proc/self/cgroup".into()))
}

/// The leaf the runtime moves itself (and its group's other processes) into when it must
/// enable controllers in its own group: cgroup v2 forbids processes in a group whose
/// `cgroup.subtree_control` hands out domain controllers ("no internal processes").
pub const SUPERVISOR_LEAF: &str = "supervisor";

/// The group containers are placed under by default: the runtime's own group, or its
/// parent when the runtime already sits in the supervisor leaf (so every container of a
/// delegated service is a sibling of `supervisor/`, never nested in it).
pub fn own_base() -> Result<PathBuf> {
    let own = own_path()?;
    match own.file_name() {
        Some(name) if name == SUPERVISOR_LEAF => {
            Ok(own.parent().map(Path::to_path_buf).unwrap_or(own))
        }
        _ => Ok(own),
    }
}

/// Moves every process of `group` into `group/supervisor`, so that controllers can be
/// enabled in `group` — what a runtime started by a `Delegate=yes` service must do.
/// Processes forking meanwhile are caught by re-reading until the group is empty.
pub fn vacate_into_supervisor(group: &Path) -> Result<PathBuf> {
    let leaf = group.join(SUPERVISOR_LEAF);
    std::fs::create_dir_all(&leaf).at(&leaf)?;
    let target = Cgroup { dir: leaf.clone() };
    let source = Cgroup {
        dir: group.to_path_buf(),
    };
    for _ in 0..100 {
        let pids = source.pids()?;
        if pids.is_empty() {
            return Ok(leaf);
        }
        for pid in pids {
            match target.add(pid) {
                Ok(()) => {}
                // Exited meanwhile.
                Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Err(Error::Unsupported(format!(
        "{}: processes keep appearing while moving them to {SUPERVISOR_LEAF}/",
        group.display()
    )))
}

/// Where the container's group goes: `cgroupsPath` absolute = from the hierarchy root;
/// relative = under the runtime's own group; empty = `left4me-ID` under the runtime's group.
pub fn resolve(mount: &Path, cgroups_path: Option<&Path>, id: &str) -> Result<PathBuf> {
    let relative = match cgroups_path.filter(|p| !p.as_os_str().is_empty()) {
        Some(p) if p.to_string_lossy().contains(':') => {
            return Err(Error::Unsupported(format!(
                "linux.cgroupsPath {}: systemd slice:prefix:name paths are not supported (use a cgroupfs path)",
                p.display()
            )))
        }
        Some(p) if p.is_absolute() => p.to_path_buf(),
        Some(p) => own_base()?.join(p),
        None => own_base()?.join(format!("left4me-{id}")),
    };
    let mut clean = PathBuf::new();
    for c in relative.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::RootDir | Component::CurDir => {}
            // A leading `/` or `..` must never take the group outside the hierarchy.
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::config("linux.cgroupsPath", "must not contain .."));
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(Error::config(
            "linux.cgroupsPath",
            "resolves to the cgroup root",
        ));
    }
    Ok(mount.join(clean))
}

/// A container's group directory.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates the directory (and missing parents); an existing empty group is reused.
    pub fn create(dir: PathBuf) -> Result<Cgroup> {
        std::fs::create_dir_all(&dir).at(&dir)?;
        let cg = Cgroup { dir };
        if !cg.pids()?.is_empty() {
            return Err(Error::config(
                "linux.cgroupsPath",
                format!("{} already holds processes", cg.dir.display()),
            ));
        }
        Ok(cg)
    }

    /// A directory descriptor for `clone3(CLONE_INTO_CGROUP)`.
    pub fn open(&self) -> Result<OwnedFd> {
        Ok(openat2(
            None,
            &self.dir,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
            Resolve::default(),
        )?)
    }

    pub fn pids(&self) -> Result<Vec<Pid>> {
        let path = self.dir.join("cgroup.procs");
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            other => other.at(&path)?,
        };
        Ok(text
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(Pid::from_raw)
            .collect())
    }

    /// `oom_kill` from `memory.events` with `memory.max`, when the OOM killer killed
    /// something in the group (None without the memory controller or without kills).
    pub fn oom_kills(&self) -> Option<(u64, String)> {
        let events = std::fs::read_to_string(self.dir.join("memory.events")).ok()?;
        let kills: u64 = events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))?
            .trim()
            .parse()
            .ok()?;
        let max = std::fs::read_to_string(self.dir.join("memory.max")).unwrap_or_default();
        (kills > 0).then(|| (kills, max.trim().to_string()))
    }

    /// How often a fork was refused at `pids.max` (`pids.events`).
    pub fn task_limit_hits(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("pids.events"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("max "))
                    .and_then(|n| n.trim().parse().ok())
            })
            .unwrap_or(0)
    }

    /// Freezes (`true`) or thaws the group through `cgroup.freeze` and waits until the
    /// kernel reports it done in `cgroup.events`.
    pub fn freeze(&self, frozen: bool) -> Result<()> {
        let path = self.dir.join("cgroup.freeze");
        std::fs::write(&path, if frozen { "1" } else { "0" }).at(&path)?;
        let want = if frozen { "frozen 1" } else { "frozen 0" };
        let events = self.dir.join("cgroup.events");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&events).at(&events)?;
            if text.lines().any(|l| l.trim() == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unsupported(format!(
                    "{}: the kernel did not report {want:?} within 10 s",
                    events.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Moves `pid` into the group (the fallback where clone3 could not place it).
    pub fn add(&self, pid: Pid) -> Result<()> {
        let path = self.dir.join("cgroup.procs");
        std::fs::write(&path, pid.to_string()).at(path)
    }

    /// Sends `signal` to every process in the group; SIGKILL uses `cgroup.kill`, which
    /// also catches processes forking while we look.
    pub fn signal_all(&self, signal: Signal) -> Result<()> {
        let kill_file = self.dir.join("cgroup.kill");
        if signal == Signal::SIGKILL && kill_file.exists() {
            return std::fs::write(&kill_file, "1").at(kill_file);
        }
        for pid in self.pids()? {
            match nix::sys::signal::kill(pid, signal) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => return Err(crate::sys::SysError::new("kill", pid, e).into()),
            }
        }
        Ok(())
    }

    /// Kills everything left and removes the directory. Idempotent.
    pub fn destroy(&self) -> Result<()> {
        if !self.dir.exists() {
            return Ok(());
        }
        self.signal_all(Signal::SIGKILL)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                // Killed processes leave the group asynchronously.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    let _ = self.signal_all(Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(Error::io(&self.dir, e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_hierarchy() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(
            resolve(m, Some(Path::new("/a/b")), "x").unwrap(),
            Path::new("/sys/fs/cgroup/a/b")
        );
        assert!(resolve(m, Some(Path::new("/a/../../etc")), "x").is_err());
        assert!(resolve(m, Some(Path::new("/")), "x").is_err());
        assert!(resolve(m, Some(Path::new("system.slice:l4m:x")), "x").is_err());
        let own = own_path().unwrap();
        let default = resolve(m, None, "web").unwrap();
        assert!(default.ends_with("left4me-web"));
        assert!(default.starts_with(m.join(own.strip_prefix("/").unwrap())));
    }
}
