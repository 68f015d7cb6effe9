//! The container's root filesystem, built inside its own mount namespace as an ordered
//! list of typed [`Step`]s (see [`plan`]), so the whole setup reads top to bottom and can
//! be printed (`--debug`) and tested without a kernel.

pub mod cpuview;
pub mod devices;
pub mod mounts;
pub mod paths;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};
use crate::spec::Bundle;
use crate::sys::fd::{openat2, Resolve};
use crate::sys::mount_api::{
    self, attach, attr, clone_tree, set_attr, FsContext, Propagation, SetAttr,
};
use crate::sys::Errno;
use devices::Node;
use paths::{open_in_root, Kind};

/// One step of the rootfs setup, in the order it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Stop mount events flowing between the host and the container (`/` recursively).
    IsolatePropagation(Propagation),
    /// Bind the rootfs onto itself: pivot_root needs a mount point.
    BindRootfs,
    /// Attach the layered root (the overlay the runtime built detached) at `root.path`.
    AttachLayeredRoot,
    /// `mounts[i]`.
    Mount(usize),
    Device(Node),
    DevLinks,
    Sysctls,
    /// A generated CPU view file (see cpuview), bound over its original if that exists.
    CpuView(PathBuf),
    ReadonlyPath(PathBuf),
    MaskPath(PathBuf),
    /// `process.cwd` created (0755, like runc) if missing, while the root is writable.
    EnsureCwd(PathBuf),
    PivotRoot,
    /// `--no-pivot`: move the rootfs over `/` and chroot.
    MoveRoot,
    /// `linux.rootfsPropagation` on the new `/`.
    RootPropagation(Propagation, bool),
    ReadonlyRoot,
}

/// What the setup needs to know beyond the config.
pub struct Env<'a> {
    pub bundle: &'a Bundle,
    pub in_userns: bool,
    pub new_cgroupns: bool,
    pub cgroup_dir: Option<&'a Path>,
    pub no_pivot: bool,
    pub prepared: &'a Prepared,
    /// The layers, for a layered root assembled here (rootless).
    pub stack: Option<&'a crate::layers::Stack>,
    /// Called right before pivot_root (the hooks' point in the OCI lifecycle).
    pub before_pivot: Option<&'a dyn Fn() -> Result<()>>,
}

/// Mounts the runtime builds detached, on the host, before init exists: they need
/// privileges init may not have (CAP_SYS_ADMIN in the initial user namespace for
/// idmapping). Init inherits the descriptors and attaches them in its own mount
/// namespace, so they never appear in the host's mount table.
#[derive(Default)]
pub struct Prepared {
    /// The merged view of `left4me.layers`.
    pub root: Option<OwnedFd>,
    /// Where the root is attached: the rootfs directory a policy check opened.
    pub mount_point: Option<OwnedFd>,
    /// Rootless: the layered root is assembled by init (see overlay::InInit).
    pub layers_in_init: Option<crate::layers::overlay::InInit>,
    /// Bind mounts cloned runtime side, by `mounts[]` index: idmapped ones, and under a
    /// policy every bind, cloned from the descriptor the policy approved.
    pub binds: Vec<(usize, OwnedFd)>,
    /// CPU view files for a container whose cpuset is smaller than the machine.
    pub cpu_view: Vec<cpuview::CpuView>,
}

impl Prepared {
    fn bind(&self, index: usize) -> Option<BorrowedFd<'_>> {
        self.binds
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, fd)| fd.as_fd())
    }
}

/// Builds the [`Prepared`] mounts of a bundle (runtime side, host namespaces).
/// `owner` is the host uid/gid that a newly created upper layer gets; `checked` holds
/// what a policy check opened and approved (the rootfs, bind sources), which is then
/// what gets mounted, whatever the bundle's owner renames meanwhile.
pub fn prepare(
    bundle: &Bundle,
    stack: Option<&crate::layers::Stack>,
    owner: crate::layers::overlay::Owner,
    checked: Option<&crate::policy::Checked>,
) -> Result<Prepared> {
    let rootless = crate::rootless::active();
    let layers_in_init = stack
        .filter(|_| rootless)
        .map(crate::layers::overlay::InInit::prepare)
        .transpose()
        .step("preparing the layered root")?;
    let mut root = stack
        .filter(|_| !rootless)
        .map(|s| crate::layers::overlay::build(s, owner))
        .transpose()
        .step("building the layered root")?;
    let checked_root = checked.and_then(|c| c.root.as_ref());
    let mount_point = checked_root
        .map(|fd| fd.try_clone())
        .transpose()
        .map_err(|e| Error::io(&bundle.rootfs, e))?;
    if let (None, Some(fd)) = (&root, checked_root) {
        root = Some(clone_tree(Some(fd.as_fd()), Path::new(""), true).step("cloning the rootfs")?);
    }
    let mut binds = Vec::new();
    for (i, m) in bundle.spec.mounts().iter().flatten().enumerate() {
        let source_fd = checked.and_then(|c| c.bind_source(i));
        let idmapped = m.uid_mappings().is_some() || m.gid_mappings().is_some();
        if !idmapped && source_fd.is_none() {
            continue;
        }
        let fd = mounts::prepare_bind(&bundle.dir, m, source_fd)
            .step_with(|| format!("mounts[{i}] {}", m.destination().display()))?;
        binds.push((i, fd));
    }
    Ok(Prepared {
        root,
        mount_point,
        layers_in_init,
        binds,
        cpu_view: Vec::new(),
    })
}

pub fn parse_root_propagation(value: &str) -> Result<(Propagation, bool)> {
    Ok(match value {
        "private" => (Propagation::Private, false),
        "rprivate" => (Propagation::Private, true),
        "shared" => (Propagation::Shared, false),
        "rshared" => (Propagation::Shared, true),
        "slave" => (Propagation::Slave, false),
        "rslave" => (Propagation::Slave, true),
        "unbindable" => (Propagation::Unbindable, false),
        "runbindable" => (Propagation::Unbindable, true),
        other => {
            return Err(Error::config(
                "linux.rootfsPropagation",
                format!("unknown propagation {other:?}"),
            ))
        }
    })
}

/// The ordered setup for a bundle.
pub fn plan(env: &Env<'_>) -> Result<Vec<Step>> {
    let spec = &env.bundle.spec;
    let linux = spec.linux().as_ref();
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .filter(|p| !p.is_empty())
        .map(parse_root_propagation)
        .transpose()?;
    let mut steps = vec![
        // Host mount events may flow in (slave) but never out. Shared propagation, if
        // asked for, is applied to the new root after pivot_root, which refuses shared
        // mounts.
        IsolatePropagation(match propagation {
            Some((Propagation::Private, _)) => Propagation::Private,
            _ => Propagation::Slave,
        }),
        if env.prepared.root.is_some() || env.prepared.layers_in_init.is_some() {
            AttachLayeredRoot
        } else {
            BindRootfs
        },
    ];
    use Step::*;
    steps.extend((0..mounts.len()).map(Mount));
    let dev_is_host_bind = mounts.iter().any(|m| {
        m.destination() == Path::new("/dev")
            && mounts::parse_options(m.options().as_deref().unwrap_or_default()).bind
    });
    if !dev_is_host_bind {
        steps.extend(devices::defaults().into_iter().map(Device));
    }
    for d in linux
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        steps.push(Device(devices::from_spec(d)?));
    }
    if !dev_is_host_bind {
        steps.push(DevLinks);
    }
    if linux
        .and_then(|l| l.sysctl().as_ref())
        .is_some_and(|s| !s.is_empty())
    {
        steps.push(Sysctls);
    }
    for view in &env.prepared.cpu_view {
        steps.push(CpuView(view.dest.clone()));
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        steps.push(ReadonlyPath(PathBuf::from(p)));
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        steps.push(MaskPath(PathBuf::from(p)));
    }
    if let Some(process) = spec.process() {
        steps.push(EnsureCwd(process.cwd().clone()));
    }
    steps.push(if env.no_pivot { MoveRoot } else { PivotRoot });
    if let Some((p, recursive)) = propagation {
        steps.push(RootPropagation(p, recursive));
    }
    if spec
        .root()
        .as_ref()
        .is_some_and(|r| r.readonly() == Some(true))
    {
        steps.push(ReadonlyRoot);
    }
    Ok(steps)
}

/// Runs the plan. On return the process's `/` is the container's root.
pub fn setup(env: &Env<'_>, steps: &[Step]) -> Result<()> {
    // The host's /dev/null, checked by descriptor: masking binds *this* inode, so a
    // /dev/null swapped for a symlink in the rootfs cannot redirect the mount.
    let null = open_host_null()?;
    let rootfs = &env.bundle.rootfs;
    let mut root: Option<OwnedFd> = None;
    let mounts = env.bundle.spec.mounts().as_deref().unwrap_or_default();
    let sysctls: Vec<(String, String)> = env
        .bundle
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.sysctl().clone())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    for step in steps {
        crate::debug!("rootfs step {step:?}");
        let root_fd = || -> Result<BorrowedFd<'_>> {
            root.as_ref()
                .map(|r| r.as_fd())
                .ok_or_else(|| Error::Init("rootfs used before it was bound".into()))
        };
        match step {
            Step::IsolatePropagation(p) => {
                mount_api::set_propagation_path(Path::new("/"), *p, true)
                    .step("isolating mount propagation")?
            }
            Step::BindRootfs => {
                mount_api::bind_self(rootfs).step("binding the rootfs")?;
                root = Some(openat2(
                    None,
                    rootfs,
                    libc::O_PATH | libc::O_DIRECTORY,
                    0,
                    Resolve::default(),
                )?);
            }
            Step::AttachLayeredRoot => {
                let assembled = match (&env.prepared.layers_in_init, env.stack) {
                    (Some(in_init), Some(stack)) => {
                        Some(in_init.assemble(stack).step("mounting the layered root")?)
                    }
                    _ => None,
                };
                let merged = assembled
                    .as_ref()
                    .or(env.prepared.root.as_ref())
                    .ok_or_else(|| Error::Init("no layered root was prepared".into()))?;
                // The mount point the policy check opened (the descriptor belongs to
                // the host's mount namespace: found again here, and refused if root.path
                // now leads elsewhere), else root.path now.
                let mount_point = match &env.prepared.mount_point {
                    Some(fd) => crate::layers::overlay::reopen_here(rootfs, fd)?,
                    None => openat2(
                        None,
                        rootfs,
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                        Resolve::default(),
                    )?,
                };
                attach(merged.as_fd(), mount_point.as_fd(), rootfs)
                    .step("attaching the layered root")?;
                // The attached tree's own descriptor is the root from here on (never
                // looked up again by path).
                root = Some(merged.try_clone().map_err(|e| Error::io(rootfs, e))?);
            }
            Step::Mount(i) => {
                let m = &mounts[*i];
                let menv = mounts::MountEnv {
                    root: root_fd()?,
                    bundle: &env.bundle.dir,
                    in_userns: env.in_userns,
                    new_cgroupns: env.new_cgroupns,
                    cgroup_dir: env.cgroup_dir,
                };
                mounts::mount_entry(&menv, m, env.prepared.bind(*i))
                    .step_with(|| format!("mounts[{i}] {}", m.destination().display()))?;
            }
            Step::Device(node) => devices::create(root_fd()?, node, env.in_userns)?,
            Step::DevLinks => devices::create_links(root_fd()?)?,
            Step::Sysctls => crate::sysctl::apply(root_fd()?, &sysctls)?,
            Step::CpuView(dest) => {
                let view = env
                    .prepared
                    .cpu_view
                    .iter()
                    .find(|v| &v.dest == dest)
                    .ok_or_else(|| Error::Init(format!("no CPU view for {}", dest.display())))?;
                // Without /proc or /sys in the container there is nothing to cover.
                match open_in_root(root_fd()?, dest) {
                    Err(e) if e.errno == Errno::ENOENT => {}
                    target => attach(view.mount.as_fd(), target?.as_fd(), dest)
                        .step_with(|| format!("CPU view {}", dest.display()))?,
                }
            }
            Step::ReadonlyPath(p) => readonly_path(root_fd()?, p)
                .step_with(|| format!("read-only path {}", p.display()))?,
            Step::MaskPath(p) => {
                mask_path(root_fd()?, p, &null).step_with(|| format!("masking {}", p.display()))?
            }
            Step::EnsureCwd(cwd) => {
                paths::ensure_in_root(root_fd()?, cwd, Kind::Dir)
                    .step_with(|| format!("process.cwd {}", cwd.display()))?;
            }
            Step::PivotRoot => {
                if let Some(hooks) = env.before_pivot {
                    hooks()?;
                }
                mount_api::pivot_into(root_fd()?).step("pivot_root")?
            }
            Step::MoveRoot => {
                if let Some(hooks) = env.before_pivot {
                    hooks()?;
                }
                mount_api::move_root(root_fd()?).step("moving the rootfs to /")?
            }
            Step::RootPropagation(p, recursive) => {
                mount_api::set_propagation_path(Path::new("/"), *p, *recursive)
                    .step("linux.rootfsPropagation")?
            }
            Step::ReadonlyRoot => {
                let slash = openat2(None, Path::new("/"), libc::O_PATH, 0, Resolve::default())?;
                set_attr(
                    slash.as_fd(),
                    SetAttr {
                        set: attr::RDONLY,
                        ..Default::default()
                    },
                    Path::new("/"),
                )
                .step("making the root read-only")?;
            }
        }
    }
    Ok(())
}

fn open_host_null() -> Result<OwnedFd> {
    let null = openat2(
        None,
        Path::new("/dev/null"),
        libc::O_PATH,
        0,
        Resolve {
            no_symlinks: true,
            ..Default::default()
        },
    )?;
    let st = nix::sys::stat::fstat(null.as_fd())
        .map_err(|e| crate::sys::SysError::new("fstat", "/dev/null", e))?;
    let is_null = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && nix::sys::stat::major(st.st_rdev) == 1
        && nix::sys::stat::minor(st.st_rdev) == 3;
    if !is_null {
        return Err(Error::Unsupported(
            "the host's /dev/null is not the null device".into(),
        ));
    }
    Ok(null)
}

/// Binds a path onto itself read-only (plus nosuid, nodev, noexec, as runc does).
fn readonly_path(root: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let target = match open_in_root(root, path) {
        Err(e) if e.errno == Errno::ENOENT => return Ok(()),
        other => other?,
    };
    let tree = clone_tree(Some(target.as_fd()), Path::new(""), true)?;
    let change = SetAttr {
        set: attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC,
        recursive: true,
        ..Default::default()
    };
    set_attr(tree.as_fd(), change, path)?;
    attach(tree.as_fd(), target.as_fd(), path)?;
    Ok(())
}

/// Hides a path: an empty read-only tmpfs over a directory, the null device over a file.
fn mask_path(root: BorrowedFd<'_>, path: &Path, null: &OwnedFd) -> Result<()> {
    let target = match open_in_root(root, path) {
        Err(e) if e.errno == Errno::ENOENT => return Ok(()),
        other => other?,
    };
    let cover = if paths::is_dir(target.as_fd())? {
        let ctx = FsContext::open("tmpfs")?;
        ctx.set("size", Some("0"))?;
        ctx.mount(attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC)?
    } else {
        clone_tree(Some(null.as_fd()), Path::new(""), false)?
    };
    attach(cover.as_fd(), target.as_fd(), path)?;
    Ok(())
}

/// Binds the terminal's pty (`pty`, the slave itself) onto `/dev/console`, created as an
/// empty file when missing. A `/dev/console` that is, or lies behind, a symlink is refused
/// rather than followed: the bind would put the terminal over whatever the link names (a
/// masked path, a procfs file) instead of the console.
pub fn bind_console(pty: BorrowedFd<'_>) -> Result<()> {
    let console = Path::new("/dev/console");
    let slash = openat2(
        None,
        Path::new("/"),
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve::default(),
    )?;
    let no_links = Resolve {
        no_symlinks: true,
        in_root: true,
        ..Default::default()
    };
    let open = || {
        openat2(
            Some(slash.as_fd()),
            Path::new("dev/console"),
            libc::O_PATH,
            0,
            no_links,
        )
    };
    let target = match open() {
        Err(e) if e.errno == Errno::ENOENT => {
            paths::ensure_in_root(slash.as_fd(), console, Kind::File)?;
            open()
        }
        other => other,
    };
    let target =
        match target {
            Err(e) if e.errno == Errno::ELOOP => return Err(Error::config(
                "process.terminal",
                "/dev/console in the container is a symlink (or behind one): refused, not followed",
            )),
            other => other?,
        };
    if paths::is_dir(target.as_fd())? {
        return Err(Error::config(
            "process.terminal",
            "/dev/console in the container is a directory",
        ));
    }
    let tree = clone_tree(Some(pty), Path::new(""), false)?;
    attach(tree.as_fd(), target.as_fd(), console).step("binding /dev/console")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: serde_json::Value) -> Bundle {
        let spec = crate::spec::parse(&config.to_string()).unwrap();
        Bundle {
            dir: "/b".into(),
            spec,
            rootfs: "/b/rootfs".into(),
            layers: None,
            userns: None,
        }
    }

    #[test]
    fn the_default_config_plans_in_runc_order() {
        let b = bundle(crate::spec::default_config());
        let env = Env {
            bundle: &b,
            in_userns: false,
            new_cgroupns: true,
            cgroup_dir: None,
            no_pivot: false,
            prepared: &Prepared::default(),
            stack: None,
            before_pivot: None,
        };
        let steps = plan(&env).unwrap();
        assert_eq!(steps[0], Step::IsolatePropagation(Propagation::Slave));
        assert_eq!(steps[1], Step::BindRootfs);
        assert_eq!(steps[2], Step::Mount(0));
        let pos = |s: &Step| steps.iter().position(|x| x == s).unwrap();
        assert!(pos(&Step::Mount(6)) < pos(&Step::DevLinks));
        assert!(
            pos(&Step::ReadonlyPath("/proc/sys".into()))
                < pos(&Step::MaskPath("/proc/kcore".into()))
        );
        assert!(pos(&Step::MaskPath("/proc/scsi".into())) < pos(&Step::PivotRoot));
        assert_eq!(steps.last(), Some(&Step::ReadonlyRoot));
    }

    #[test]
    fn host_dev_bind_skips_device_creation_and_no_pivot_moves() {
        let mut config = crate::spec::default_config();
        config["mounts"][1] = serde_json::json!({"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]});
        config["linux"]["rootfsPropagation"] = "rshared".into();
        let b = bundle(config);
        let env = Env {
            bundle: &b,
            in_userns: false,
            new_cgroupns: true,
            cgroup_dir: None,
            no_pivot: true,
            prepared: &Prepared::default(),
            stack: None,
            before_pivot: None,
        };
        let steps = plan(&env).unwrap();
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::Device(_) | Step::DevLinks)));
        assert!(steps.contains(&Step::MoveRoot));
        assert_eq!(steps[0], Step::IsolatePropagation(Propagation::Slave));
        assert!(steps.contains(&Step::RootPropagation(Propagation::Shared, true)));
    }
}
