//! Idmapped mounts: a detached copy of a directory tree whose file ownership is shifted
//! through a set of ID mappings (`mount_setattr(MOUNT_ATTR_IDMAP)`).
//!
//! The kernel takes the mappings as a user namespace. [`Userns::with_mappings`] makes one
//! that only exists to carry the mappings: a child is cloned into a new user namespace,
//! its maps are written, the namespace is opened, and the child exits. The namespace
//! lives as long as the descriptor (and any mount idmapped with it).
//!
//! Mappings use the OCI format: on-disk id `containerID + k` appears as `hostID + k`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxIdMapping;

use crate::error::{Error, IoContext, Result};
use crate::sys::fd::{openat2, Resolve};
use crate::sys::mount_api::{clone_tree, idmap};
use crate::sys::process::{exit_child, fork_with, Forked};
use crate::sys::SysError;

/// One contiguous range: on-disk ids `[from, from+size)` appear as `[to, to+size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    #[serde(rename = "containerID")]
    pub from: u32,
    #[serde(rename = "hostID")]
    pub to: u32,
    pub size: u32,
}

impl From<&LinuxIdMapping> for IdRange {
    fn from(m: &LinuxIdMapping) -> Self {
        IdRange {
            from: m.container_id(),
            to: m.host_id(),
            size: m.size(),
        }
    }
}

/// The kernel's limit on lines in a uid_map/gid_map.
const MAX_RANGES: usize = 340;

/// Checks a list of ranges the way the kernel would, so errors name the field.
pub fn validate(ranges: &[IdRange], field: &str) -> Result<()> {
    if ranges.is_empty() {
        return Err(Error::config(field, "no mappings"));
    }
    if ranges.len() > MAX_RANGES {
        return Err(Error::config(
            field,
            format!("{} ranges, the kernel allows {MAX_RANGES}", ranges.len()),
        ));
    }
    for (i, r) in ranges.iter().enumerate() {
        if r.size == 0 {
            return Err(Error::config(format!("{field}[{i}].size"), "must be > 0"));
        }
        let end = |start: u32| start.checked_add(r.size - 1);
        if end(r.from).is_none() || end(r.to).is_none() {
            return Err(Error::config(format!("{field}[{i}]"), "range overflows"));
        }
        for (j, other) in ranges.iter().enumerate().take(i) {
            let overlap = |a: u32, b: u32| a < b + other.size && b < a + r.size;
            if overlap(r.from, other.from) || overlap(r.to, other.to) {
                return Err(Error::config(
                    format!("{field}[{i}]"),
                    format!("overlaps {field}[{j}]"),
                ));
            }
        }
    }
    Ok(())
}

fn map_text(ranges: &[IdRange]) -> String {
    ranges
        .iter()
        .map(|r| format!("{} {} {}\n", r.from, r.to, r.size))
        .collect()
}

/// A user namespace holding a set of ID mappings, for idmapping mounts.
pub struct Userns {
    fd: OwnedFd,
}

impl Userns {
    pub fn with_mappings(uids: &[IdRange], gids: &[IdRange]) -> Result<Userns> {
        validate(uids, "uidMappings")?;
        validate(gids, "gidMappings")?;
        let (hold_read, hold_write) =
            nix::unistd::pipe().map_err(|e| SysError::new("pipe", "idmap", e))?;
        let child = match fork_with(CloneFlags::CLONE_NEWUSER, None)
            .map_err(|e| SysError::new(e.call, "a user namespace for an idmap", e.errno))?
        {
            Forked::Child => {
                drop(hold_write);
                // Exists only to own the namespace until the parent has opened it.
                let _ = nix::unistd::read(&hold_read, &mut [0u8; 1]);
                exit_child(0)
            }
            Forked::Parent(pid) => pid,
        };
        drop(hold_read);
        let result = (|| {
            let proc = PathBuf::from(format!("/proc/{child}"));
            let write = |file: &str, text: &str| -> Result<()> {
                let path = proc.join(file);
                std::fs::write(&path, text).at(&path)
            };
            write("setgroups", "deny")?;
            write("uid_map", &map_text(uids))?;
            write("gid_map", &map_text(gids))?;
            let ns = proc.join("ns/user");
            Ok(std::fs::File::open(&ns).at(&ns)?.into())
        })();
        drop(hold_write);
        let _ = nix::sys::wait::waitpid(child, None);
        result.map(|fd| Userns { fd })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A detached, idmapped copy of the tree at `dir` (recursive: submounts come along).
/// It is attached nowhere: it exists only through the returned descriptor.
pub fn idmapped_tree(dir: &Path, userns: &Userns) -> Result<OwnedFd> {
    let dir_fd = openat2(
        None,
        dir,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::default(),
    )?;
    let tree = clone_tree(Some(dir_fd.as_fd()), Path::new(""), true)?;
    idmap(tree.as_fd(), userns.as_fd(), true, dir)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn r(from: u32, to: u32, size: u32) -> IdRange {
        IdRange { from, to, size }
    }

    #[test]
    fn validation_names_the_bad_range() {
        assert!(validate(&[r(0, 1000, 10), r(10, 2000, 5)], "m").is_ok());
        let err = validate(&[r(0, 1000, 10), r(5, 3000, 1)], "m").unwrap_err();
        assert!(err.to_string().contains("m[1]"), "{err}");
        let err = validate(&[r(0, 1000, 10), r(100, 1005, 1)], "m").unwrap_err();
        assert!(err.to_string().contains("overlaps m[0]"), "{err}");
        assert!(validate(&[r(0, 0, 0)], "m").is_err());
        assert!(validate(&[r(u32::MAX, 0, 2)], "m").is_err());
        assert!(validate(&[], "m").is_err());
    }

    #[test]
    fn an_idmapped_tree_shows_shifted_owners() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // tmpfs supports idmapped mounts (6.3+); a temp dir on / might not.
        let dir = tempdir_on_tmpfs();
        std::fs::write(dir.join("f"), "x").unwrap();
        std::os::unix::fs::chown(dir.join("f"), Some(981), Some(981)).unwrap();
        let ns = Userns::with_mappings(&[r(981, 980, 1)], &[r(981, 980, 1)]).unwrap();
        let tree = idmapped_tree(&dir, &ns).unwrap();
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}/f",
            std::os::fd::AsRawFd::as_raw_fd(&tree)
        ));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (980, 980));
        // The original is untouched.
        assert_eq!(std::fs::metadata(dir.join("f")).unwrap().uid(), 981);
        drop(tree);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir_on_tmpfs() -> PathBuf {
        let shm = Path::new("/dev/shm");
        let on_tmpfs = nix::sys::statfs::statfs(shm)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let base = if on_tmpfs {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("l4m-idmap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
