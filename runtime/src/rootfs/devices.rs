//! The container's `/dev`: the default device nodes, `linux.devices`, and the usual
//! symlinks. Inside a user namespace `mknod` is refused, so nodes are bind mounts of the
//! host's (as runc does).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::paths::{ensure_in_root, open_in_root, Kind};
use crate::error::{Context, Error, Result};
use crate::sys::mount_api::{attach, clone_tree};
use crate::sys::{Errno, SysError};

/// A device node to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The devices every container gets (the OCI spec's list).
pub fn defaults() -> Vec<Node> {
    [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ]
    .into_iter()
    .map(|(name, major, minor)| Node {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> Result<Node> {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::config(
                "linux.devices",
                format!("{}: type 'a' is not a device", d.path().display()),
            ))
        }
    };
    if !d.path().starts_with("/dev") {
        return Err(Error::config(
            "linux.devices",
            format!("{} is not under /dev", d.path().display()),
        ));
    }
    Ok(Node {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Creates `node` inside the rootfs (replacing whatever file is there).
pub fn create(root: BorrowedFd<'_>, node: &Node, bind_from_host: bool) -> Result<()> {
    let step = || format!("creating device {}", node.path.display());
    let name = node
        .path
        .file_name()
        .ok_or_else(|| Error::config("linux.devices", "empty path"))?;
    let parent_path = node.path.parent().unwrap_or(Path::new("/dev"));
    let parent = ensure_in_root(root, parent_path, Kind::Dir).step_with(step)?;
    let dir = crate::sys::fd::openat2(
        Some(parent.as_fd()),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
        0,
        Default::default(),
    )?;
    if bind_from_host {
        let target = ensure_in_root(root, &node.path, Kind::File).step_with(step)?;
        let tree = clone_tree(None, &node.path, false).step_with(step)?;
        return attach(tree.as_fd(), target.as_fd(), &node.path).step_with(step);
    }
    match nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(SysError::new("unlink", node.path.display(), e)).step_with(step),
    }
    let dev = nix::sys::stat::makedev(node.major, node.minor);
    nix::sys::stat::mknodat(
        dir.as_fd(),
        name,
        node.kind,
        Mode::from_bits_truncate(node.mode),
        dev,
    )
    .map_err(|e| SysError::new("mknod", node.path.display(), e))
    .step_with(step)?;
    // mknod applies the umask: set the mode exactly, then the owner.
    nix::sys::stat::fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(node.mode),
        nix::sys::stat::FchmodatFlags::NoFollowSymlink,
    )
    .or_else(|e| {
        if e == Errno::EOPNOTSUPP {
            Ok(())
        } else {
            Err(e)
        }
    })
    .map_err(|e| SysError::new("chmod", node.path.display(), e))
    .step_with(step)?;
    nix::unistd::fchownat(
        dir.as_fd(),
        name,
        Some(nix::unistd::Uid::from_raw(node.uid)),
        Some(nix::unistd::Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| SysError::new("chown", node.path.display(), e))
    .step_with(step)
}

/// `/dev/fd`, `/dev/std{in,out,err}`, `/dev/ptmx` and `/dev/core` links, where absent.
pub fn create_links(root: BorrowedFd<'_>) -> Result<()> {
    let dev = open_in_root(root, Path::new("/dev"))?;
    let dir = crate::sys::fd::openat2(
        Some(dev.as_fd()),
        Path::new("."),
        libc::O_DIRECTORY | libc::O_RDONLY,
        0,
        Default::default(),
    )?;
    let links = [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ];
    for (name, target) in links {
        match nix::unistd::symlinkat(target, dir.as_fd(), name) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(SysError::new("symlink", format!("/dev/{name}"), e))
                    .step("creating /dev links")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceBuilder;

    #[test]
    fn spec_devices_are_checked() {
        let fuse = LinuxDeviceBuilder::default()
            .path("/dev/fuse")
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(229)
            .build()
            .unwrap();
        let node = from_spec(&fuse).unwrap();
        assert_eq!((node.major, node.minor, node.mode), (10, 229, 0o666));
        let outside = LinuxDeviceBuilder::default()
            .path("/etc/evil")
            .typ(LinuxDeviceType::C)
            .major(1)
            .minor(3)
            .build()
            .unwrap();
        assert!(from_spec(&outside).is_err());
        assert_eq!(defaults().len(), 6);
    }
}
