//! Rootless mode: the runtime run by an ordinary user (no sudo). It then keeps its
//! state under `$XDG_RUNTIME_DIR`, maps the caller's ids (and the subordinate ids
//! `/etc/subuid` grants, through the setuid newuidmap/newgidmap helpers), builds the
//! root filesystem inside the user namespace, and uses cgroup v2 only where the user's
//! delegated subtree allows it (docs/security.md).

use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Context, Error, IoContext, Result};

/// Whether this process runs without root's privileges.
pub fn active() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// `--root`'s default: `/run/left4me-runtime` for root, else
/// `$XDG_RUNTIME_DIR/left4me-runtime` (a per-user tmpfs that systemd-logind removes at
/// logout).
pub fn default_root() -> Result<PathBuf> {
    if !active() {
        return Ok(PathBuf::from("/run/left4me-runtime"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir).join("left4me-runtime")),
        None => Err(Error::Usage(
            "rootless: XDG_RUNTIME_DIR is not set; set it (e.g. by logging in through \
             systemd-logind) or pass --root DIR"
                .into(),
        )),
    }
}

/// `--id-blocks`' default: the system table for root; rootless containers have no
/// automatic blocks (they can only map the caller's subordinate ids).
pub fn default_id_blocks() -> PathBuf {
    if active() {
        let home = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/nonexistent"));
        home.join("left4me-runtime/id-blocks.json")
    } else {
        PathBuf::from(crate::idblocks::DEFAULT_FILE)
    }
}

/// Whether this user may create the cgroup `dir`: the deepest existing directory on its
/// way must be writable (a subtree systemd delegated to the user).
pub fn may_create(dir: &std::path::Path) -> bool {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            return nix::unistd::access(d, nix::unistd::AccessFlags::W_OK).is_ok();
        }
        cur = d.parent();
    }
    false
}

/// The container's maps, as an unprivileged user may write them.
pub fn write_id_maps(
    pid: Pid,
    uids: &Option<Vec<LinuxIdMapping>>,
    gids: &Option<Vec<LinuxIdMapping>>,
) -> Result<()> {
    let own = |maps: &Option<Vec<LinuxIdMapping>>, id: u32| {
        maps.as_ref()
            .is_none_or(|m| m.len() == 1 && m[0].host_id() == id && m[0].size() == 1)
    };
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let write = |file: &str, text: String| -> Result<()> {
        let path = proc.join(file);
        std::fs::write(&path, text).at(&path)
    };
    if let Some(maps) = gids {
        if own(gids, gid) {
            write("setgroups", "deny".into())?;
            write("gid_map", crate::namespaces::map_lines(maps)).step("writing gid_map")?;
        } else {
            helper("newgidmap", pid, maps)?;
        }
    }
    if let Some(maps) = uids {
        if own(uids, uid) {
            write("uid_map", crate::namespaces::map_lines(maps)).step("writing uid_map")?;
        } else {
            helper("newuidmap", pid, maps)?;
        }
    }
    Ok(())
}

/// `newuidmap PID CONTAINER HOST SIZE...` (from the uidmap package).
fn helper(name: &str, pid: Pid, maps: &[LinuxIdMapping]) -> Result<()> {
    let mut cmd = std::process::Command::new(name);
    cmd.arg(pid.to_string());
    for m in maps {
        cmd.args([
            m.container_id().to_string(),
            m.host_id().to_string(),
            m.size().to_string(),
        ]);
    }
    let out = cmd.output().map_err(|e| {
        Error::Unsupported(format!(
            "rootless: mapping subordinate ids needs {name} (Debian package uidmap): {e}"
        ))
    })?;
    if !out.status.success() {
        return Err(Error::Unsupported(format!(
            "rootless: {name} refused the mapping (are the ids granted in /etc/sub{}id?): {}",
            if name == "newuidmap" { "u" } else { "g" },
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
