//! The new mount API (`fsopen`/`fsconfig`/`fsmount`, `open_tree`, `move_mount`,
//! `mount_setattr`): every mount is built detached and attached to a target *descriptor*,
//! so no path is resolved twice and a symlink swapped in between cannot redirect it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::fd::path_cstring;
use super::{check, Errno, SysError, SysResult};

const FSOPEN_CLOEXEC: libc::c_uint = 0x1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 0x1;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const OPEN_TREE_CLOEXEC: libc::c_uint = libc::O_CLOEXEC as libc::c_uint;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;

/// Per-mount attributes (`MOUNT_ATTR_*`).
pub mod attr {
    pub const RDONLY: u64 = 0x1;
    pub const NOSUID: u64 = 0x2;
    pub const NODEV: u64 = 0x4;
    pub const NOEXEC: u64 = 0x8;
    /// The mask of the three exclusive atime modes below.
    pub const ATIME_MASK: u64 = 0x70;
    pub const RELATIME: u64 = 0x0;
    pub const NOATIME: u64 = 0x10;
    pub const STRICTATIME: u64 = 0x20;
    pub const NODIRATIME: u64 = 0x80;
    pub const IDMAP: u64 = 0x100000;
    pub const NOSYMFOLLOW: u64 = 0x200000;
}

/// Mount propagation types, as `mount_setattr` and `mount(2)` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Private,
    Shared,
    Slave,
    Unbindable,
}

impl Propagation {
    pub fn ms_flag(self) -> u64 {
        match self {
            Propagation::Private => libc::MS_PRIVATE,
            Propagation::Shared => libc::MS_SHARED,
            Propagation::Slave => libc::MS_SLAVE,
            Propagation::Unbindable => libc::MS_UNBINDABLE,
        }
    }
}

/// What `mount_setattr` changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub set: u64,
    pub clear: u64,
    pub propagation: Option<Propagation>,
    pub recursive: bool,
}

#[repr(C)]
struct MountAttrRaw {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn owned(ret: libc::c_long) -> OwnedFd {
    // SAFETY: callers pass only a successful return value that is a new descriptor.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

/// A filesystem context being configured (`fsopen`).
pub struct FsContext {
    fd: OwnedFd,
    fstype: String,
}

impl FsContext {
    pub fn open(fstype: &str) -> SysResult<Self> {
        let c_type =
            CString::new(fstype).map_err(|_| SysError::new("fsopen", fstype, Errno::EINVAL))?;
        // SAFETY: c_type outlives the call.
        let ret = unsafe { libc::syscall(libc::SYS_fsopen, c_type.as_ptr(), FSOPEN_CLOEXEC) };
        let fd = owned(check(ret, "fsopen", fstype)?);
        Ok(FsContext {
            fd,
            fstype: fstype.to_string(),
        })
    }

    fn config(&self, cmd: libc::c_uint, key: Option<&str>, value: Option<&str>) -> SysResult<()> {
        let what = format!(
            "{} {}={}",
            self.fstype,
            key.unwrap_or(""),
            value.unwrap_or("")
        );
        let c_key = key
            .map(CString::new)
            .transpose()
            .map_err(|_| SysError::new("fsconfig", &what, Errno::EINVAL))?;
        let c_value = value
            .map(CString::new)
            .transpose()
            .map_err(|_| SysError::new("fsconfig", &what, Errno::EINVAL))?;
        let key_ptr = c_key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr());
        let value_ptr = c_value.as_ref().map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: key and value strings outlive the call; aux is unused for these commands.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                key_ptr,
                value_ptr,
                0,
            )
        };
        check(ret, "fsconfig", what).map(|_| ())
    }

    /// `key=value`, or a flag `key` when `value` is `None`.
    pub fn set(&self, key: &str, value: Option<&str>) -> SysResult<()> {
        match value {
            Some(v) => self.config(FSCONFIG_SET_STRING, Some(key), Some(v)),
            None => self.config(FSCONFIG_SET_FLAG, Some(key), None),
        }
    }

    /// Creates the superblock and a detached mount of it with `attrs` (`MOUNT_ATTR_*`).
    pub fn mount(self, attrs: u64) -> SysResult<OwnedFd> {
        self.config(FSCONFIG_CMD_CREATE, None, None)?;
        // SAFETY: plain integer arguments.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs as libc::c_uint,
            )
        };
        Ok(owned(check(ret, "fsmount", &self.fstype)?))
    }
}

/// `open_tree(dir, path, OPEN_TREE_CLONE [| AT_RECURSIVE])`: a detached copy of the mount
/// tree at `path` (a bind mount that is not attached anywhere yet).
pub fn clone_tree(dir: Option<BorrowedFd<'_>>, path: &Path, recursive: bool) -> SysResult<OwnedFd> {
    let c_path = path_cstring(path)?;
    let mut flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: c_path outlives the call.
    let ret = unsafe { libc::syscall(libc::SYS_open_tree, dirfd, c_path.as_ptr(), flags) };
    Ok(owned(check(ret, "open_tree", path.display())?))
}

/// Attaches the detached mount `mount` on top of the object `target` refers to.
pub fn attach(mount: BorrowedFd<'_>, target: BorrowedFd<'_>, what: &Path) -> SysResult<()> {
    let empty = c"";
    // SAFETY: both paths are the empty string; descriptors are borrowed for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            empty.as_ptr(),
            target.as_raw_fd(),
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(ret, "move_mount", what.display()).map(|_| ())
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE], attr)`.
pub fn set_attr(mount: BorrowedFd<'_>, change: SetAttr, what: &Path) -> SysResult<()> {
    let raw = MountAttrRaw {
        attr_set: change.set,
        attr_clr: change.clear,
        propagation: change.propagation.map_or(0, Propagation::ms_flag),
        userns_fd: 0,
    };
    mount_setattr(mount, change.recursive, &raw, "mount_setattr", what)
}

/// Idmaps the detached mount `mount` (recursively when asked) with the ID mappings of the
/// user namespace `userns`: a file owned by id `i` on disk appears owned by whatever `i`
/// maps to in `userns`. Needs CAP_SYS_ADMIN in the initial user namespace.
pub fn idmap(
    mount: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    recursive: bool,
    what: &Path,
) -> SysResult<()> {
    let raw = MountAttrRaw {
        attr_set: attr::IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    mount_setattr(mount, recursive, &raw, "mount_setattr(idmap)", what)
}

fn mount_setattr(
    mount: BorrowedFd<'_>,
    recursive: bool,
    raw: &MountAttrRaw,
    call: &'static str,
    what: &Path,
) -> SysResult<()> {
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= AT_RECURSIVE;
    }
    let empty = c"";
    // SAFETY: raw outlives the call and its size is passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            empty.as_ptr(),
            flags,
            raw as *const MountAttrRaw,
            std::mem::size_of::<MountAttrRaw>(),
        )
    };
    check(ret, call, what.display()).map(|_| ())
}

/// Changes the propagation of the mount at `path` with legacy `mount(2)` (used on `/`,
/// which has no descriptor-based equivalent before the rootfs is opened).
pub fn set_propagation_path(
    path: &Path,
    propagation: Propagation,
    recursive: bool,
) -> SysResult<()> {
    let mut flags = nix::mount::MsFlags::from_bits_truncate(propagation.ms_flag());
    if recursive {
        flags |= nix::mount::MsFlags::MS_REC;
    }
    nix::mount::mount::<str, Path, str, str>(None, path, None, flags, None)
        .map_err(|e| SysError::new("mount(propagation)", path.display(), e))
}

/// Recursively bind-mounts `path` onto itself so it becomes a mount point (pivot_root needs one).
pub fn bind_self(path: &Path) -> SysResult<()> {
    let flags = nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC;
    nix::mount::mount::<Path, Path, str, str>(Some(path), path, None, flags, None)
        .map_err(|e| SysError::new("mount(bind)", path.display(), e))
}

/// `pivot_root(".", ".")` in `new_root`, then lazily detaches the old root stacked on top.
pub fn pivot_into(new_root: BorrowedFd<'_>) -> SysResult<()> {
    use nix::fcntl::OFlag;
    // The old root, by descriptor: after the pivot, "." must name *it* (stacked on the
    // new root) for the propagation change, or the change would hit the container's
    // own tree and undo any shared mounts it asked for.
    let old_root = nix::fcntl::open(
        "/",
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| SysError::new("open", "old root", e))?;
    nix::unistd::fchdir(new_root).map_err(|e| SysError::new("fchdir", "rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| SysError::new("pivot_root", "rootfs", e))?;
    nix::unistd::fchdir(&old_root).map_err(|e| SysError::new("fchdir", "old root", e))?;
    // Unmounting the old root must not propagate back to the host.
    set_propagation_path(Path::new("."), Propagation::Slave, true)?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| SysError::new("umount2", "old root", e))?;
    nix::unistd::chdir("/").map_err(|e| SysError::new("chdir", "/", e))
}

/// The `--no-pivot` path: move the rootfs mount over `/` and chroot into it.
pub fn move_root(new_root: BorrowedFd<'_>) -> SysResult<()> {
    nix::unistd::fchdir(new_root).map_err(|e| SysError::new("fchdir", "rootfs", e))?;
    nix::mount::mount::<str, str, str, str>(
        Some("."),
        "/",
        None,
        nix::mount::MsFlags::MS_MOVE,
        None,
    )
    .map_err(|e| SysError::new("mount(MS_MOVE)", "rootfs", e))?;
    nix::unistd::chroot(".").map_err(|e| SysError::new("chroot", "rootfs", e))?;
    nix::unistd::chdir("/").map_err(|e| SysError::new("chdir", "/", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fd::{openat2, Resolve};
    use std::os::fd::AsFd;

    /// Runs `f` in a child process inside a private mount namespace, so the test never
    /// changes the host's mounts; returns whether the child succeeded.
    fn in_private_mount_ns(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        use nix::sys::wait::{waitpid, WaitStatus};
        use nix::unistd::{fork, ForkResult};
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return Ok(());
        }
        // SAFETY: the test harness may have threads, but the child only makes syscalls
        // and exits with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = (|| {
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                        .map_err(|e| e.to_string())?;
                    set_propagation_path(Path::new("/"), Propagation::Private, true)
                        .map_err(|e| e.to_string())?;
                    f()
                })()
                .map(|_| 0)
                .unwrap_or_else(|e| {
                    eprintln!("{e}");
                    1
                });
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, 0) => Ok(()),
                other => Err(format!("child failed: {other:?}")),
            },
        }
    }

    #[test]
    fn tmpfs_mounts_on_a_descriptor_with_attributes() {
        let dir = std::env::temp_dir().join(format!("l4m-mountapi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.clone();
        let result = in_private_mount_ns(move || {
            let ctx = FsContext::open("tmpfs").map_err(|e| e.to_string())?;
            ctx.set("size", Some("1m")).map_err(|e| e.to_string())?;
            let mnt = ctx
                .mount(attr::RDONLY | attr::NOSUID)
                .map_err(|e| e.to_string())?;
            let target = openat2(None, &d, libc::O_PATH, 0, Resolve::default())
                .map_err(|e| e.to_string())?;
            attach(mnt.as_fd(), target.as_fd(), &d).map_err(|e| e.to_string())?;
            match std::fs::write(d.join("x"), "x") {
                Err(e) if e.raw_os_error() == Some(libc::EROFS) => Ok(()),
                other => Err(format!("expected EROFS, got {other:?}")),
            }
        });
        std::fs::remove_dir_all(&dir).unwrap();
        result.unwrap();
    }

    #[test]
    fn fsconfig_errors_name_the_option() {
        let Ok(ctx) = FsContext::open("tmpfs") else {
            return;
        };
        let err = ctx.set("no-such-option", Some("1")).unwrap_err();
        assert!(err.to_string().contains("no-such-option"), "{err}");
    }
}
