//! One OCI `mounts[]` entry: its options parsed into mount attributes, propagation and
//! filesystem data, then built as a detached mount and attached to a target descriptor.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use super::paths::{ensure_in_root, is_dir, Kind};
use crate::error::{Context, Error, Result};
use crate::sys::mount_api::{attach, attr, clone_tree, set_attr, FsContext, Propagation, SetAttr};
use crate::sys::Errno;

/// A mount's options, sorted by what consumes them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    pub bind: bool,
    pub recursive_bind: bool,
    /// Attributes for the top mount.
    pub set: u64,
    pub clear: u64,
    /// Attributes for the whole tree (`rro`, `rnosuid`...).
    pub rec_set: u64,
    pub rec_clear: u64,
    pub propagation: Option<(Propagation, bool)>,
    /// Everything else: handed to the filesystem (`mode=755`, `size=64m`, `newinstance`).
    pub data: Vec<(String, Option<String>)>,
}

/// Parses runc's mount options. Unknown words become filesystem data, which the kernel
/// then accepts or refuses by name.
pub fn parse_options(options: &[String]) -> Options {
    let mut o = Options::default();
    for opt in options {
        let (word, recursive) = match opt.strip_prefix('r') {
            Some(rest) if is_attr_word(rest) => (rest, true),
            _ => (opt.as_str(), false),
        };
        let (set, clear) = if recursive {
            (&mut o.rec_set, &mut o.rec_clear)
        } else {
            (&mut o.set, &mut o.clear)
        };
        let bits = Bits { set, clear };
        match word {
            "ro" => bits.flag(true, attr::RDONLY),
            "rw" => bits.flag(false, attr::RDONLY),
            "nosuid" => bits.flag(true, attr::NOSUID),
            "suid" => bits.flag(false, attr::NOSUID),
            "nodev" => bits.flag(true, attr::NODEV),
            "dev" => bits.flag(false, attr::NODEV),
            "noexec" => bits.flag(true, attr::NOEXEC),
            "exec" => bits.flag(false, attr::NOEXEC),
            "nodiratime" => bits.flag(true, attr::NODIRATIME),
            "diratime" => bits.flag(false, attr::NODIRATIME),
            "nosymfollow" => bits.flag(true, attr::NOSYMFOLLOW),
            "symfollow" => bits.flag(false, attr::NOSYMFOLLOW),
            // The kernel's default mode is relatime; "atime" and "nostrictatime" ask for it.
            "relatime" | "atime" | "nostrictatime" => bits.atime(attr::RELATIME),
            "noatime" => bits.atime(attr::NOATIME),
            "strictatime" | "norelatime" => bits.atime(attr::STRICTATIME),
            "bind" => o.bind = true,
            "rbind" => {
                o.bind = true;
                o.recursive_bind = true;
            }
            "private" | "rprivate" => {
                o.propagation = Some((Propagation::Private, opt.starts_with('r')))
            }
            "shared" | "rshared" => {
                o.propagation = Some((Propagation::Shared, opt.starts_with('r')))
            }
            "slave" | "rslave" => o.propagation = Some((Propagation::Slave, opt.starts_with('r'))),
            "unbindable" | "runbindable" => {
                o.propagation = Some((Propagation::Unbindable, opt.starts_with('r')))
            }
            "defaults" | "async" | "nomand" => {}
            _ => {
                let (k, v) = match opt.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (opt.clone(), None),
                };
                o.data.push((k, v));
            }
        }
    }
    o
}

/// The attribute words of one option, applied to the top-mount or the recursive sets.
struct Bits<'a> {
    set: &'a mut u64,
    clear: &'a mut u64,
}

impl Bits<'_> {
    fn flag(self, on: bool, bit: u64) {
        if on {
            *self.set |= bit;
            *self.clear &= !bit;
        } else {
            *self.clear |= bit;
            *self.set &= !bit;
        }
    }

    fn atime(self, mode: u64) {
        *self.set = (*self.set & !attr::ATIME_MASK) | mode;
        *self.clear |= attr::ATIME_MASK;
    }
}

/// Words that take an `r` prefix for "recursive" (as runc's `rro`, `rnosuid`...).
fn is_attr_word(w: &str) -> bool {
    matches!(
        w,
        "ro" | "rw"
            | "nosuid"
            | "suid"
            | "nodev"
            | "dev"
            | "noexec"
            | "exec"
            | "nodiratime"
            | "diratime"
            | "relatime"
            | "norelatime"
            | "atime"
            | "noatime"
            | "strictatime"
            | "nostrictatime"
            | "nosymfollow"
            | "symfollow"
    )
}

/// What the rest of the container setup tells each mount.
pub struct MountEnv<'a> {
    pub root: BorrowedFd<'a>,
    pub bundle: &'a Path,
    /// Inside a user namespace: mounts the kernel refuses there fall back to binds.
    pub in_userns: bool,
    pub new_cgroupns: bool,
    /// The container's cgroup directory on the host, for a cgroup mount without cgroupns.
    pub cgroup_dir: Option<&'a Path>,
}

/// A `proc` or `sysfs` mount (or `/dev`) whose destination is a symlink in the rootfs
/// (`/proc -> /etc`) is refused, as runc does: everything that later trusts "/proc" or
/// "/dev" (masked paths, sysctls, the CPU view, device nodes) would be aimed elsewhere.
fn refuse_symlinked_destination(root: BorrowedFd<'_>, dest: &Path, typ: &str) -> Result<()> {
    let rel = dest.strip_prefix("/").unwrap_or(dest);
    let opened = crate::sys::fd::openat2(
        Some(root),
        rel,
        libc::O_PATH | libc::O_NOFOLLOW,
        0,
        crate::sys::fd::Resolve::IN_ROOT,
    );
    let Ok(fd) = opened else { return Ok(()) };
    let is_link =
        nix::sys::stat::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
    if is_link {
        return Err(Error::config(
            format!("mounts[{}]", dest.display()),
            format!(
                "the {typ} mount's destination is a symlink in the rootfs; it must be a \
                 directory"
            ),
        ));
    }
    Ok(())
}

/// Runtime side: the detached clone of a bind mount's source — from `checked`, the
/// descriptor a policy check opened and approved, when there is one (so what is mounted
/// is what was checked) — idmapped when the entry has `uidMappings`/`gidMappings` (OCI
/// format: on-disk `containerID` appears as `hostID`). Only bind mounts can be idmapped.
pub fn prepare_bind(bundle: &Path, m: &Mount, checked: Option<BorrowedFd<'_>>) -> Result<OwnedFd> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("bind");
    if !(opts.bind || typ == "bind") {
        return Err(Error::config(
            format!("mounts[{}].uidMappings", m.destination().display()),
            "only bind mounts can be idmapped",
        ));
    }
    let source = bind_source(bundle, m)?;
    let tree = match checked {
        Some(fd) => clone_tree(Some(fd), Path::new(""), opts.recursive_bind),
        None => clone_tree(None, &source, opts.recursive_bind),
    }
    .step_with(|| format!("cloning bind source {}", source.display()))?;
    if m.uid_mappings().is_none() && m.gid_mappings().is_none() {
        return Ok(tree);
    }
    let (Some(uids), Some(gids)) = (m.uid_mappings(), m.gid_mappings()) else {
        return Err(Error::config(
            format!("mounts[{}].uidMappings", m.destination().display()),
            "an idmapped mount needs both uidMappings and gidMappings",
        ));
    };
    let to_ranges = |maps: &Vec<oci_spec::runtime::LinuxIdMapping>| {
        maps.iter()
            .map(crate::idmap::IdRange::from)
            .collect::<Vec<_>>()
    };
    let userns = crate::idmap::Userns::with_mappings(&to_ranges(uids), &to_ranges(gids))?;
    crate::sys::mount_api::idmap(tree.as_fd(), userns.as_fd(), opts.recursive_bind, &source)
        .step("idmapping the bind mount")?;
    Ok(tree)
}

/// Mounts one `mounts[]` entry at its destination inside the rootfs; `prepared` is the
/// runtime's clone of a bind mount's source (idmapped ones, and every bind of a bundle
/// under a policy).
pub fn mount_entry(env: &MountEnv<'_>, m: &Mount, prepared: Option<BorrowedFd<'_>>) -> Result<()> {
    let opts = parse_options(m.options().as_deref().unwrap_or_default());
    let typ = m
        .typ()
        .as_deref()
        .unwrap_or(if opts.bind { "bind" } else { "" });
    let dest = m.destination();
    let detached = if let Some(prepared) = prepared {
        let source = bind_source(env.bundle, m)?;
        let tree = prepared
            .try_clone_to_owned()
            .map_err(|e| Error::io("prepared bind mount descriptor", e))?;
        apply_bind_attrs(&tree, &opts, &source)?;
        tree
    } else if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(Error::Init(format!(
            "mounts[{}]: idmapped mount was not prepared",
            dest.display()
        )));
    } else if opts.bind || typ == "bind" {
        let source = bind_source(env.bundle, m)?;
        let tree = clone_tree(None, &source, opts.recursive_bind)
            .step_with(|| format!("cloning bind source {}", source.display()))?;
        apply_bind_attrs(&tree, &opts, &source)?;
        tree
    } else {
        match new_filesystem(env, typ, m, &opts) {
            Ok(fd) => fd,
            // sysfs and mqueue refuse a user namespace that does not own the matching
            // net/ipc namespace: bind the host's, like runc.
            Err(e)
                if env.in_userns
                    && e.errno() == Some(Errno::EPERM)
                    && matches!(typ, "sysfs" | "mqueue") =>
            {
                let host = if typ == "sysfs" {
                    "/sys"
                } else {
                    "/dev/mqueue"
                };
                let tree = clone_tree(None, Path::new(host), true)?;
                apply_bind_attrs(&tree, &opts, Path::new(host))?;
                tree
            }
            Err(e) => return Err(e),
        }
    };
    let kind = if is_dir(detached.as_fd())? {
        Kind::Dir
    } else {
        Kind::File
    };
    if matches!(typ, "proc" | "sysfs") || dest == Path::new("/dev") {
        refuse_symlinked_destination(env.root, dest, typ)?;
    }
    let target = ensure_in_root(env.root, dest, kind)?;
    attach(detached.as_fd(), target.as_fd(), dest)?;
    if let Some((propagation, recursive)) = opts.propagation {
        let mounted = super::paths::open_in_root(env.root, dest)?;
        set_attr(
            mounted.as_fd(),
            SetAttr {
                propagation: Some(propagation),
                recursive,
                ..Default::default()
            },
            dest,
        )?;
    }
    Ok(())
}

fn bind_source(bundle: &Path, m: &Mount) -> Result<PathBuf> {
    let source = m.source().as_ref().ok_or_else(|| {
        Error::config(
            format!("mounts[{}].source", m.destination().display()),
            "a bind mount needs a source",
        )
    })?;
    Ok(if source.is_absolute() {
        source.clone()
    } else {
        bundle.join(source)
    })
}

fn apply_bind_attrs(tree: &OwnedFd, opts: &Options, source: &Path) -> Result<()> {
    if opts.rec_set | opts.rec_clear != 0 {
        let change = SetAttr {
            set: opts.rec_set,
            clear: opts.rec_clear,
            recursive: true,
            ..Default::default()
        };
        set_attr(tree.as_fd(), change, source)?;
    }
    if opts.set | opts.clear != 0 {
        let change = SetAttr {
            set: opts.set,
            clear: opts.clear,
            recursive: false,
            ..Default::default()
        };
        set_attr(tree.as_fd(), change, source)?;
    }
    Ok(())
}

fn new_filesystem(env: &MountEnv<'_>, typ: &str, m: &Mount, opts: &Options) -> Result<OwnedFd> {
    let fstype = match typ {
        "cgroup" | "cgroup2" if !env.new_cgroupns => {
            // Without its own cgroup namespace the container sees only its own group.
            let dir = env.cgroup_dir.ok_or_else(|| {
                Error::Unsupported("a cgroup mount needs a cgroup2 hierarchy".into())
            })?;
            let tree = clone_tree(None, dir, false)?;
            apply_bind_attrs(&tree, opts, dir)?;
            return Ok(tree);
        }
        "cgroup" => "cgroup2",
        "" => {
            return Err(Error::config(
                format!("mounts {}", m.destination().display()),
                "no type and no bind option",
            ))
        }
        other => other,
    };
    let step = || format!("mounting {fstype} on {}", m.destination().display());
    let ctx = FsContext::open(fstype).step_with(step)?;
    if let Some(source) = m.source() {
        // Not every filesystem takes a source; the kernel ignores it for those.
        let _ = ctx.set("source", Some(&source.to_string_lossy()));
    }
    for (key, value) in &opts.data {
        if fstype == "devpts" && key == "newinstance" {
            continue; // devpts is always a new instance since Linux 4.7.
        }
        ctx.set(key, value.as_deref()).step_with(step)?;
    }
    let attrs = (opts.set | opts.rec_set) & !attr::IDMAP;
    ctx.mount(attrs).step_with(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(words: &[&str]) -> Options {
        parse_options(&words.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn runc_options_split_into_attrs_propagation_and_data() {
        let o = parse(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.set, attr::NOSUID | attr::STRICTATIME);
        assert_eq!(
            o.data,
            vec![
                ("mode".into(), Some("755".into())),
                ("size".into(), Some("65536k".into()))
            ]
        );
        let o = parse(&["rbind", "rro", "rprivate", "nodev"]);
        assert!(o.bind && o.recursive_bind);
        assert_eq!(o.rec_set, attr::RDONLY);
        assert_eq!(o.set, attr::NODEV);
        assert_eq!(o.propagation, Some((Propagation::Private, true)));
        let o = parse(&["ro", "rw"]);
        assert_eq!((o.set, o.clear), (0, attr::RDONLY));
        let o = parse(&["newinstance", "ptmxmode=0666"]);
        assert_eq!(o.data[0], ("newinstance".into(), None));
        let o = parse(&["noatime"]);
        assert_eq!(o.set & attr::ATIME_MASK, attr::NOATIME);
    }
}
