//! Container state under `--root`: one directory per container holding `state.json`
//! (written by temp file + rename, so readers never see half a file), a snapshot of the
//! config, and `start.sock` while the container waits for `start`.
//!
//! Every command that changes a container holds an exclusive `flock` on its directory.
//! `mkdir` of the directory is what makes `create` of one id exclusive: exactly one of
//! several concurrent creates wins, the others see "already exists".

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

pub const STATE_FILE: &str = "state.json";
pub const CONFIG_SNAPSHOT: &str = "config.json";
pub const START_SOCKET: &str = "start.sock";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    /// Frozen through `cgroup.freeze` (`pause`).
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// A process identified beyond its pid: the start time (in clock ticks since boot)
/// tells a live container process from an unrelated one that reused the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    pub fn of(pid: Pid) -> Result<ProcessId> {
        let stat = read_stat(pid.as_raw())
            .ok_or_else(|| Error::Init(format!("process {pid} vanished")))?;
        Ok(ProcessId {
            pid: pid.as_raw(),
            start_time: stat.start_time,
        })
    }

    /// True while the process runs (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid)
            .is_some_and(|s| s.start_time == self.start_time && s.state != 'Z' && s.state != 'X')
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.pid)
    }
}

struct Stat {
    state: char,
    start_time: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    // Field 22 overall is starttime; `rest` starts at field 3.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(Stat { state, start_time })
}

/// The persisted record of one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    /// The status last recorded; see [`State::status`] for the live one.
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    pub created: String,
    /// The container's init process, once it exists.
    pub init: Option<ProcessId>,
    /// The runtime process running `create`, while the status is `creating`.
    pub creator: Option<ProcessId>,
    /// The container's cgroup directory (absolute, under the cgroup2 mount), if any.
    pub cgroup: Option<PathBuf>,
    /// Clone flags of the namespaces the container owns or joined.
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub owner: u32,
}

impl State {
    /// The live status: a recorded created/running container whose init has gone is
    /// stopped, whoever was (or was not) waiting for it; a `creating` whose creator died
    /// is stopped too (a crash half-way, for `delete` to clean up).
    pub fn status(&self) -> Status {
        match self.status {
            Status::Creating => match self.creator {
                Some(c) if c.is_alive() => Status::Creating,
                _ => Status::Stopped,
            },
            Status::Created | Status::Running | Status::Paused => match self.init {
                Some(init) if init.is_alive() => self.status,
                _ => Status::Stopped,
            },
            Status::Stopped => Status::Stopped,
        }
    }

    /// The OCI state document (`state` command, hooks' stdin).
    pub fn oci_json(&self) -> serde_json::Value {
        let status = self.status();
        let mut v = serde_json::json!({
            "ociVersion": self.oci_version,
            "id": self.id,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "created": self.created,
            "owner": "",
        });
        if let Some(init) = self
            .init
            .filter(|_| matches!(status, Status::Created | Status::Running | Status::Paused))
        {
            v["pid"] = init.pid.into();
        } else {
            v["pid"] = 0.into();
        }
        if !self.annotations.is_empty() {
            v["annotations"] = serde_json::to_value(&self.annotations).unwrap_or_default();
        }
        v
    }
}

/// Container ids are used as directory and cgroup names: runc's rule (letters, digits,
/// `_+-.`, not `.`/`..`) keeps them safe as one path component.
/// The longest id: a file name (255 bytes) less the room the runtime adds around it
/// (`left4me-ID` cgroups, `.ID.tmp.PID` files).
pub const MAX_ID_LEN: usize = 200;

pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(64).collect();
        let more = if id.chars().count() > 64 { "..." } else { "" };
        Err(Error::Usage(format!(
            "invalid container id {shown:?}{more} ({} bytes): use letters, digits and _+-., \
             at most {MAX_ID_LEN}",
            id.len()
        )))
    }
}

/// The state directory of one container, locked.
pub struct StateDir {
    pub path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Creates the directory of a new container; fails if the id is taken.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .at(root)?;
        let path = root.join(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(id.into()))
            }
            other => other.at(&path)?,
        }
        Self::lock(path, id)
    }

    /// Opens and locks the directory of an existing container, waiting for other
    /// commands on it to finish.
    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        let dir = Self::lock(root.join(id), id)?;
        Ok(dir)
    }

    fn lock(path: PathBuf, id: &str) -> Result<StateDir> {
        // Only directories are containers: files in the root (tables, locks) are not.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&path)
        {
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                return Err(Error::NotFound(id.into()))
            }
            other => other.at(&path)?,
        };
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io(&path, std::io::Error::from(e)))?;
        // A delete that held the lock before us may have removed the directory.
        if !path.exists() {
            return Err(Error::NotFound(id.into()));
        }
        Ok(StateDir { path, _lock: lock })
    }

    /// In a forked child (init, stage-1): closes the child's copy of the lock descriptor.
    /// flock locks belong to the open file, so a copy kept by init would hold the lock
    /// for init's whole life if the runtime died before unlocking, and every later
    /// command on the container (even `delete --force`) would wait forever.
    pub fn close_in_child(&self) {
        crate::sys::fd::close_inherited(std::os::fd::AsRawFd::as_raw_fd(&*self._lock));
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn load(&self) -> Result<Option<State>> {
        load_file(&self.file(STATE_FILE))
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let bytes =
            serde_json::to_vec(state).map_err(|e| Error::Init(format!("encoding state: {e}")))?;
        write_atomic(&self.file(STATE_FILE), &bytes, 0o600)
    }

    /// Removes the directory and everything in it. Idempotent.
    pub fn remove(self) -> Result<()> {
        match std::fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other.at(&self.path),
        }
    }
}

/// Reads a state file without locking (renames make every read see a whole file).
pub fn load_file(path: &Path) -> Result<Option<State>> {
    match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
        Ok(bytes) => parse(&bytes, path).map(Some),
    }
}

/// A state file's contents; anything but a well-formed state is a "corrupt state" error.
pub fn parse(bytes: &[u8], path: &Path) -> Result<State> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Init(format!("{}: corrupt state: {e}", path.display())))
}

/// Reads the state of `id` without taking the lock.
pub fn read(root: &Path, id: &str) -> Result<State> {
    validate_id(id)?;
    let dir = root.join(id);
    if !dir.is_dir() {
        return Err(Error::NotFound(id.into()));
    }
    match load_file(&dir.join(STATE_FILE))? {
        // A `creating` whose creator is gone may just have been finished: the creator
        // records `created` before it exits, so a second read after seeing it dead
        // tells a finished create from a crashed one.
        Some(state) if state.status == Status::Creating && state.status() == Status::Stopped => {
            Ok(load_file(&dir.join(STATE_FILE))?.unwrap_or(state))
        }
        Some(state) => Ok(state),
        None if dir.exists() => Err(Error::WrongState {
            state: "creating".into(),
            message: "no state recorded yet (or a crashed create: use delete --force)".into(),
        }),
        None => Err(Error::NotFound(id.into())),
    }
}

/// Writes `bytes` to `path` through a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("state");
    let prefix = format!(".{name}.tmp.");
    let tmp = path.with_file_name(format!("{prefix}{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&tmp)
        .at(&tmp)?;
    file.write_all(bytes).at(&tmp)?;
    nix::unistd::fsync(file.as_fd()).map_err(|e| Error::io(&tmp, e.into()))?;
    std::fs::rename(&tmp, path).at(path)?;
    remove_stale_temps(path, &prefix);
    Ok(())
}

/// Temp files of writers that were killed before their rename (`.NAME.tmp.PID` whose PID
/// no longer exists) would otherwise pile up next to long-lived files (the id-block and
/// pinning tables).
fn remove_stale_temps(path: &Path, prefix: &str) {
    let Some(dir) = path.parent() else { return };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Ids of every container under `root`.
pub fn list_ids(root: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other.at(root)?,
    };
    let mut ids: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| validate_id(id).is_ok())
        .collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_single_safe_components() {
        for ok in ["web-1", "a.b_c+d", "x"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = ProcessId::of(nix::unistd::getpid()).unwrap();
        assert!(me.is_alive());
        let impostor = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!impostor.is_alive());
    }

    #[test]
    fn create_is_exclusive_and_remove_is_idempotent() {
        let root = std::env::temp_dir().join(format!("l4m-state-{}", std::process::id()));
        let dir = StateDir::create(&root, "c1").unwrap();
        assert!(matches!(
            StateDir::create(&root, "c1"),
            Err(Error::AlreadyExists(_))
        ));
        write_atomic(&dir.file("x"), b"1", 0o600).unwrap();
        dir.remove().unwrap();
        assert!(matches!(
            StateDir::open(&root, "c1"),
            Err(Error::NotFound(_))
        ));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
