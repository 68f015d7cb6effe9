//! Paths inside the container's rootfs, resolved with `openat2(RESOLVE_IN_ROOT)` so that
//! neither `..` nor a symlink (absolute or relative, planted by the image or by a
//! process racing us) can lead a mount or a write outside the rootfs.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::error::{Context, Result};
use crate::sys::fd::{openat2, Resolve};
use crate::sys::{Errno, SysError};

/// What a mount target must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect()
}

/// Opens `path` (absolute in the container) as `O_PATH`, resolved inside `root`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> Result<OwnedFd, SysError> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    openat2(Some(root), &rel, libc::O_PATH, 0, Resolve::IN_ROOT)
        .map_err(|e| SysError::new(e.call, path.display(), e.errno))
}

/// Opens `path` for reading or writing (`flags`), resolved inside `root`.
pub fn open_file_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
) -> Result<OwnedFd, SysError> {
    openat2(Some(root), &relative(path), flags, 0, Resolve::IN_ROOT)
        .map_err(|e| SysError::new(e.call, path.display(), e.errno))
}

/// Opens `path` inside `root`, creating it (and missing parent directories, mode 0755)
/// as `kind` if it does not exist. Returns an `O_PATH` descriptor of the target.
pub fn ensure_in_root(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<OwnedFd> {
    ensure_following(root, path, kind, 0)
}

/// Symlinks followed while creating one path (the kernel's own limit).
const MAX_LINKS: usize = 40;

fn ensure_following(
    root: BorrowedFd<'_>,
    path: &Path,
    kind: Kind,
    links: usize,
) -> Result<OwnedFd> {
    match open_in_root(root, path) {
        Ok(fd) => return Ok(fd),
        Err(e) if e.errno == Errno::ENOENT => {}
        Err(e) => return Err(e.into()),
    }
    let rel = relative(path);
    let mut parent: Option<OwnedFd> = None;
    let mut prefix = PathBuf::new();
    let count = rel.components().count();
    for (i, component) in rel.components().enumerate() {
        prefix.push(component);
        let is_last = i + 1 == count;
        let dir_fd = parent.as_ref().map_or(root, |p| p.as_fd());
        match open_in_root(root, &prefix) {
            Ok(fd) => {
                parent = Some(fd);
                continue;
            }
            Err(e) if e.errno == Errno::ENOENT => {}
            Err(e) => return Err(e.into()),
        }
        let name = component.as_os_str();
        if is_last && kind == Kind::File {
            let created = nix::fcntl::openat(
                dir_fd,
                name,
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            );
            match created {
                Ok(_) => {}
                Err(Errno::EEXIST) => {
                    if let Some(next) = dangling_target(dir_fd, name, &prefix, &rel, i) {
                        return follow(root, &next, kind, links, path);
                    }
                }
                Err(e) => {
                    return Err(SysError::new("create", prefix.display(), e))
                        .step("creating mount target")
                }
            }
        } else {
            match nix::sys::stat::mkdirat(dir_fd, name, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    // A dangling symlink: create what it points to, inside the root.
                    if let Some(next) = dangling_target(dir_fd, name, &prefix, &rel, i) {
                        return follow(root, &next, kind, links, path);
                    }
                }
                Err(e) => {
                    return Err(SysError::new("mkdir", prefix.display(), e))
                        .step("creating mount target")
                }
            }
        }
        parent = Some(open_in_root(root, &prefix)?);
    }
    Ok(parent.expect("a non-empty path has a last component"))
}

/// If `name` (the `index`th component of `rel`) is a symlink, the path to create instead:
/// its target (absolute targets are taken from the container's root) plus the rest.
fn dangling_target(
    dir: BorrowedFd<'_>,
    name: &std::ffi::OsStr,
    prefix: &Path,
    rel: &Path,
    index: usize,
) -> Option<PathBuf> {
    let target = PathBuf::from(nix::fcntl::readlinkat(dir, name).ok()?);
    let base = match target.is_absolute() {
        true => PathBuf::from("/"),
        false => Path::new("/").join(prefix.parent().unwrap_or(Path::new(""))),
    };
    let rest: PathBuf = rel.components().skip(index + 1).collect();
    Some(base.join(target).join(rest))
}

fn follow(
    root: BorrowedFd<'_>,
    next: &Path,
    kind: Kind,
    links: usize,
    original: &Path,
) -> Result<OwnedFd> {
    if links >= MAX_LINKS {
        return Err(SysError::new("mkdir", original.display(), Errno::ELOOP).into());
    }
    ensure_following(root, next, kind, links + 1)
}

/// True when `fd` is a directory.
pub fn is_dir(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| SysError::new("fstat", "", e))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_created_inside_even_through_escaping_symlinks() {
        let root = std::env::temp_dir().join(format!("l4m-paths-{}", std::process::id()));
        let outside = std::env::temp_dir().join(format!("l4m-paths-out-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink("../../../..", root.join("up")).unwrap();
        let root_fd = openat2(
            None,
            &root,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            Resolve::default(),
        )
        .unwrap();
        ensure_in_root(root_fd.as_fd(), Path::new("/link/a/b"), Kind::Dir).unwrap();
        ensure_in_root(root_fd.as_fd(), Path::new("/up/etc/x"), Kind::File).unwrap();
        // The absolute symlink was followed *inside* the root: nothing appeared outside.
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("a/b")
            .is_dir());
        assert!(root.join("etc/x").is_file());
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
