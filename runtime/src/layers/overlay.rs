//! Building the layered root as ONE detached mount: idmapped copies of the layers that
//! need them, then an overlay whose layers are given one per `lowerdir+` (never a joined
//! `lowerdir=` string, which mount(2) truncates at a page and fsconfig at 255 bytes).
//! Layers are named through `/proc/self/fd/N` of descriptors opened during validation.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Layer, Stack};
use crate::error::{Context, Error, IoContext, Result};
use crate::idmap::{IdRange, Userns};
use crate::sys::fd::{openat2, Resolve};
use crate::sys::fd::{recv_with_fds, send_with_fds};
use crate::sys::mount_api::{
    attach, attr, clone_tree, idmap, set_attr, set_propagation_path, FsContext, Propagation,
    SetAttr,
};
use crate::sys::process::{exit_child, fork_with, Forked};
use nix::sched::CloneFlags;

/// The owner given to upper and work directories the runtime creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// The user namespaces made so far, by mappings: layers with equal maps share one.
type NamespaceCache = Vec<((Vec<IdRange>, Vec<IdRange>), Userns)>;

fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// The detached mount of the merged view. Dropping it before it is attached unmounts it.
///
/// Overlayfs (before 6.15) only takes layers that are mounted in the mount namespace of
/// the process creating it, so the overlay is assembled in a short-lived child with a
/// private mount namespace: idmapped layer clones are attached there (never in the
/// host's), the overlay is created, and its detached mount comes back over a socket.
/// The overlay keeps private clones of its layers, so it outlives that namespace.
pub fn build(stack: &Stack, owner: Owner) -> Result<OwnedFd> {
    let upper = match &stack.upper {
        None => None,
        Some((upper, work)) => Some(prepare_dirs(upper, work, Some(owner))?),
    };
    in_private_mount_namespace(|| assemble(stack, upper.as_ref()))
}

/// Rootless: the overlay is mounted by the container's init, inside its own user and
/// mount namespaces (the only place an unprivileged user may mount one); the runtime
/// only prepares the upper and work directories, owned by the caller.
pub struct InInit {
    upper: Option<UpperDirs>,
}

impl InInit {
    pub fn prepare(stack: &Stack) -> Result<InInit> {
        if let Some(layer) = stack.lower.iter().find(|l| l.uid_mappings.is_some()) {
            return Err(Error::Unsupported(format!(
                "rootless: layer {} asks for an idmap; idmapped mounts need root \
                 (CAP_SYS_ADMIN in the initial user namespace)",
                layer.reference
            )));
        }
        let upper = match &stack.upper {
            None => None,
            Some((upper, work)) => Some(prepare_dirs(upper, work, None)?),
        };
        Ok(InInit { upper })
    }

    /// In init (its private mount namespace): the merged view, detached.
    pub fn assemble(&self, stack: &Stack) -> Result<OwnedFd> {
        assemble(stack, self.upper.as_ref())
    }
}

struct UpperDirs {
    upper: (PathBuf, OwnedFd),
    work: (PathBuf, OwnedFd),
}

/// Creates (if missing) and checks the upper and work directories; `owner` None: left
/// to the caller (rootless).
fn prepare_dirs(upper: &Path, work: &Path, owner: Option<Owner>) -> Result<UpperDirs> {
    let root = owner.map(|_| Owner { uid: 0, gid: 0 });
    let upper_fd = ensure_dir(upper, owner).step("preparing the upper layer")?;
    let work_fd = ensure_dir(work, root).step("preparing the work directory")?;
    let (up, wk) = (
        nix::sys::stat::fstat(upper_fd.as_fd()),
        nix::sys::stat::fstat(work_fd.as_fd()),
    );
    if let (Ok(up), Ok(wk)) = (up, wk) {
        if up.st_dev != wk.st_dev {
            return Err(Error::config(
                "left4me.layers.work",
                format!(
                    "{} is not on the same filesystem as the upper layer {}",
                    work.display(),
                    upper.display()
                ),
            ));
        }
    }
    if upper.starts_with(work) || work.starts_with(upper) {
        return Err(Error::config(
            "left4me.layers.work",
            "the upper and work directories must not contain each other",
        ));
    }
    Ok(UpperDirs {
        upper: (upper.to_path_buf(), upper_fd),
        work: (work.to_path_buf(), work_fd),
    })
}

/// Runs `f` in a forked child with a private mount namespace and returns the
/// descriptor it produced (passed back with SCM_RIGHTS).
fn in_private_mount_namespace(f: impl FnOnce() -> Result<OwnedFd>) -> Result<OwnedFd> {
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| crate::sys::SysError::new("socketpair", "overlay helper", e))?;
    match fork_with(CloneFlags::CLONE_NEWNS, None).step("forking the overlay helper")? {
        Forked::Child => {
            drop(ours);
            let result = set_propagation_path(Path::new("/"), Propagation::Private, true)
                .map_err(Error::from)
                .and_then(|_| f());
            let sent = match result {
                Ok(fd) => send_with_fds(theirs.as_fd(), b"ok", &[fd.as_raw_fd()]),
                Err(e) => send_with_fds(theirs.as_fd(), format!("!{e}").as_bytes(), &[]),
            };
            exit_child(if sent.is_ok() { 0 } else { 1 })
        }
        Forked::Parent(child) => {
            drop(theirs);
            let received = recv_with_fds(ours.as_fd(), 64 * 1024);
            let _ = nix::sys::wait::waitpid(child, None);
            let (bytes, mut fds) = received?;
            match (bytes.first(), fds.len()) {
                (Some(b'o'), 1) => Ok(fds.remove(0)),
                (Some(b'!'), _) => Err(Error::Init(
                    String::from_utf8_lossy(&bytes[1..]).into_owned(),
                )),
                _ => Err(Error::Init("the overlay helper died".into())),
            }
        }
    }
}

/// Opens `path` again in the current mount namespace and checks it is still the
/// directory validated as `checked` (same device and inode).
pub(crate) fn reopen_here(path: &Path, checked: &OwnedFd) -> Result<OwnedFd> {
    let here = openat2(
        None,
        path,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve {
            no_symlinks: true,
            ..Default::default()
        },
    )?;
    let same = match (
        nix::sys::stat::fstat(here.as_fd()),
        nix::sys::stat::fstat(checked.as_fd()),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    };
    if !same {
        return Err(Error::Init(format!(
            "{} changed after it was checked",
            path.display()
        )));
    }
    Ok(here)
}

/// In the helper's private mount namespace: the layers, then the overlay.
fn assemble(stack: &Stack, upper: Option<&UpperDirs>) -> Result<OwnedFd> {
    let mut namespaces: NamespaceCache = Vec::new();
    let mut lowers: Vec<OwnedFd> = Vec::with_capacity(stack.lower.len());
    for layer in &stack.lower {
        lowers.push(
            layer_mount(layer, &mut namespaces)
                .step_with(|| format!("preparing layer {}", layer.reference))?,
        );
    }
    let Some(upper) = upper else {
        if let [only] = lowers.as_slice() {
            // overlayfs needs two lowers without an upper; one layer is just a read-only
            // bind (a detached clone: it needs no namespace).
            let tree = clone_tree(Some(only.as_fd()), Path::new(""), true)?;
            let change = SetAttr {
                set: attr::RDONLY,
                recursive: true,
                ..Default::default()
            };
            set_attr(tree.as_fd(), change, &stack.lower[0].resolved)?;
            return Ok(tree);
        }
        return mount_overlay(&lowers, None);
    };
    let upper_fd = reopen_here(&upper.upper.0, &upper.upper.1)?;
    let work_fd = reopen_here(&upper.work.0, &upper.work.1)?;
    mount_overlay(&lowers, Some((&upper_fd, &work_fd)))
}

/// One layer as a mount of the current (private) namespace: the layer directory itself,
/// or, when it has mappings, an idmapped clone attached on top of it.
fn layer_mount(layer: &Layer, namespaces: &mut NamespaceCache) -> Result<OwnedFd> {
    let here = reopen_here(&layer.resolved, &layer.fd)?;
    let (Some(uids), Some(gids)) = (&layer.uid_mappings, &layer.gid_mappings) else {
        return Ok(here);
    };
    let key = (uids.clone(), gids.clone());
    let index = match namespaces.iter().position(|(k, _)| *k == key) {
        Some(i) => i,
        None => {
            namespaces.push((key, Userns::with_mappings(uids, gids)?));
            namespaces.len() - 1
        }
    };
    let tree = clone_tree(Some(here.as_fd()), Path::new(""), true)?;
    idmap(
        tree.as_fd(),
        namespaces[index].1.as_fd(),
        true,
        &layer.resolved,
    )?;
    attach(tree.as_fd(), here.as_fd(), &layer.resolved)?;
    Ok(tree)
}

fn mount_overlay(lowers: &[OwnedFd], upper: Option<(&OwnedFd, &OwnedFd)>) -> Result<OwnedFd> {
    let ctx = FsContext::open("overlay")?;
    for (i, lower) in lowers.iter().enumerate() {
        ctx.set("lowerdir+", Some(&fd_path(lower)))
            .step_with(|| format!("adding lower layer {i}"))?;
    }
    if let Some((upper, work)) = upper {
        ctx.set("upperdir", Some(&fd_path(upper)))?;
        ctx.set("workdir", Some(&fd_path(work)))?;
    }
    ctx.mount(0).step("mounting the overlay")
}

/// Opens `dir`, creating it (and missing parents) with `owner` if absent.
fn ensure_dir(dir: &Path, owner: Option<Owner>) -> Result<OwnedFd> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(Error::config(
                "left4me.layers",
                format!("{} exists and is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .at(parent)?;
            }
            // Created under a temporary name and renamed, so a crash never leaves a
            // directory with the wrong owner under the real name.
            let tmp = temp_sibling(dir);
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&tmp)
                .at(&tmp)?;
            if let Some(owner) = owner {
                std::os::unix::fs::chown(&tmp, Some(owner.uid), Some(owner.gid)).at(&tmp)?;
            }
            match std::fs::rename(&tmp, dir) {
                Ok(()) => {}
                // Someone else created it meanwhile: theirs wins.
                Err(_) if dir.is_dir() => {
                    let _ = std::fs::remove_dir(&tmp);
                }
                Err(e) => return Err(Error::io(dir, e)),
            }
        }
        Err(e) => return Err(Error::io(dir, e)),
    }
    Ok(openat2(
        None,
        dir,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve {
            no_symlinks: true,
            ..Default::default()
        },
    )?)
}

fn temp_sibling(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ))
}

/// The owner of an existing directory (for reports).
pub fn owner_of(path: &Path) -> Result<Owner> {
    let meta = std::fs::metadata(path).at(path)?;
    Ok(Owner {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}
