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
use crate::sys::mount_api::{attr, clone_tree, idmap, set_attr, FsContext, SetAttr};

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
pub fn build(stack: &Stack, owner: Owner) -> Result<OwnedFd> {
    let mut namespaces: NamespaceCache = Vec::new();
    let mut lowers: Vec<OwnedFd> = Vec::with_capacity(stack.lower.len());
    for layer in &stack.lower {
        lowers.push(
            layer_mount(layer, &mut namespaces)
                .step_with(|| format!("preparing layer {}", layer.reference))?,
        );
    }
    let Some((upper, work)) = &stack.upper else {
        if let [only] = lowers.as_slice() {
            // overlayfs needs two lowers without an upper; one layer is just a read-only bind.
            let change = SetAttr {
                set: attr::RDONLY,
                recursive: true,
                ..Default::default()
            };
            set_attr(only.as_fd(), change, &stack.lower[0].resolved)?;
            return Ok(lowers.pop().expect("one layer"));
        }
        return mount_overlay(&lowers, None);
    };
    let upper_fd = ensure_dir(upper, owner).step("preparing the upper layer")?;
    let work_fd =
        ensure_dir(work, Owner { uid: 0, gid: 0 }).step("preparing the work directory")?;
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
    mount_overlay(&lowers, Some((&upper_fd, &work_fd)))
}

/// A detached mount of one layer: an idmapped clone when the layer has mappings, else a
/// plain clone (so a layer renamed on the host after validation changes nothing).
fn layer_mount(layer: &Layer, namespaces: &mut NamespaceCache) -> Result<OwnedFd> {
    let tree = clone_tree(Some(layer.fd.as_fd()), Path::new(""), true)?;
    if let (Some(uids), Some(gids)) = (&layer.uid_mappings, &layer.gid_mappings) {
        let key = (uids.clone(), gids.clone());
        let index = match namespaces.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                namespaces.push((key, Userns::with_mappings(uids, gids)?));
                namespaces.len() - 1
            }
        };
        idmap(
            tree.as_fd(),
            namespaces[index].1.as_fd(),
            true,
            &layer.resolved,
        )?;
    }
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

/// Opens `dir`, creating it (and missing parents, root-owned) with `owner` if absent.
fn ensure_dir(dir: &Path, owner: Owner) -> Result<OwnedFd> {
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
            std::os::unix::fs::chown(&tmp, Some(owner.uid), Some(owner.gid)).at(&tmp)?;
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
