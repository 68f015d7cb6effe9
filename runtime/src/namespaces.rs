//! Namespaces: which ones a container creates, which it joins (by path), and the user
//! namespace's ID maps, written by the runtime on the host side.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};

use crate::error::{Context, Error, IoContext, Result};
use crate::sys::SysError;

/// Every namespace type the runtime handles, in the order `/proc/PID/ns` lists them.
pub const ALL: [(LinuxNamespaceType, &str); 7] = [
    (LinuxNamespaceType::User, "user"),
    (LinuxNamespaceType::Mount, "mnt"),
    (LinuxNamespaceType::Pid, "pid"),
    (LinuxNamespaceType::Ipc, "ipc"),
    (LinuxNamespaceType::Uts, "uts"),
    (LinuxNamespaceType::Network, "net"),
    (LinuxNamespaceType::Cgroup, "cgroup"),
];

pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// A namespace to join, opened before anything else happens.
pub struct Join {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// What the container does with each namespace type.
pub struct Plan {
    /// Namespaces created fresh, as clone flags (without cgroup: see `new_cgroup`).
    pub create: CloneFlags,
    /// A new cgroup namespace, unshared by init once it sits in its cgroup, so the
    /// namespace is rooted there.
    pub new_cgroup: bool,
    pub join: Vec<Join>,
    /// The container gets a user namespace (new or joined).
    pub user: bool,
    pub new_user: bool,
}

impl Plan {
    pub fn from_spec(linux: &Linux) -> Result<Plan> {
        let mut plan = Plan {
            create: CloneFlags::empty(),
            new_cgroup: false,
            join: Vec::new(),
            user: false,
            new_user: false,
        };
        for ns in linux.namespaces().iter().flatten() {
            let typ = ns.typ();
            plan.user |= typ == LinuxNamespaceType::User;
            match ns.path() {
                Some(path) => {
                    let file = File::open(path)
                        .at(path)
                        .step_with(|| format!("opening {typ} namespace to join"))?;
                    check_ns_kind(&file, typ, path)?;
                    plan.join.push(Join {
                        typ,
                        path: path.clone(),
                        fd: file.into(),
                    });
                }
                None if typ == LinuxNamespaceType::Cgroup => plan.new_cgroup = true,
                None => {
                    plan.new_user |= typ == LinuxNamespaceType::User;
                    plan.create |= clone_flag(typ);
                }
            }
        }
        Ok(plan)
    }

    pub fn has(&self, typ: LinuxNamespaceType) -> bool {
        self.create.contains(clone_flag(typ))
            || (typ == LinuxNamespaceType::Cgroup && self.new_cgroup)
            || self.join.iter().any(|j| j.typ == typ)
    }
}

/// Refuses a namespace path of the wrong type (joining a net namespace as "pid").
fn check_ns_kind(file: &File, typ: LinuxNamespaceType, path: &Path) -> Result<()> {
    let kind = crate::sys::process::ns_type(file.as_fd()).map_err(|e| {
        Error::config(
            "linux.namespaces",
            format!("{} is not a namespace: {}", path.display(), e.errno.desc()),
        )
    })?;
    if CloneFlags::from_bits_retain(kind) != clone_flag(typ) {
        return Err(Error::config(
            "linux.namespaces",
            format!("{} is not a {typ} namespace", path.display()),
        ));
    }
    Ok(())
}

/// Joins the namespaces in `joins`. Namespaces owned by the host's user namespace need
/// the host's privileges, so everything but the user namespace is tried first, then the
/// user namespace, then whatever was refused before it.
pub fn join_all(joins: &[Join]) -> Result<()> {
    let mut retry = Vec::new();
    for j in joins.iter().filter(|j| j.typ != LinuxNamespaceType::User) {
        if let Err(e) = nix::sched::setns(j.fd.as_fd(), clone_flag(j.typ)) {
            retry.push((j, e));
        }
    }
    if let Some(user) = joins.iter().find(|j| j.typ == LinuxNamespaceType::User) {
        nix::sched::setns(user.fd.as_fd(), CloneFlags::CLONE_NEWUSER)
            .map_err(|e| SysError::new("setns", user.path.display(), e))?;
    }
    for (j, _) in retry {
        nix::sched::setns(j.fd.as_fd(), clone_flag(j.typ))
            .map_err(|e| SysError::new("setns", j.path.display(), e))?;
    }
    Ok(())
}

/// Renders OCI mappings in `/proc/PID/uid_map` format.
pub fn map_lines(mappings: &[LinuxIdMapping]) -> String {
    mappings
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the container's uid and gid maps for `pid` (which sits in a new user namespace).
/// Rootless, the kernel lets a user map only their own ids (after denying setgroups);
/// other (subordinate) ids go through the setuid newuidmap/newgidmap helpers, which
/// check them against /etc/subuid and /etc/subgid.
pub fn write_id_maps(pid: Pid, linux: &Linux) -> Result<()> {
    if crate::rootless::active() {
        return crate::rootless::write_id_maps(pid, linux.uid_mappings(), linux.gid_mappings());
    }
    let write = |file: &str, content: String| -> Result<()> {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, content.as_bytes()).at(&path)
    };
    if let Some(gids) = linux.gid_mappings() {
        write("gid_map", map_lines(gids)).step("writing gid_map")?;
    }
    if let Some(uids) = linux.uid_mappings() {
        write("uid_map", map_lines(uids)).step("writing uid_map")?;
    }
    Ok(())
}

/// Maps a container id to its host id through `mappings` (identity when there are none).
pub fn to_host(id: u32, mappings: Option<&Vec<LinuxIdMapping>>) -> Option<u32> {
    let Some(mappings) = mappings.filter(|m| !m.is_empty()) else {
        return Some(id);
    };
    mappings.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id())?;
        (offset < m.size()).then(|| m.host_id() + offset)
    })
}

/// The inode identifying the `kind` namespace (`user`, `mnt`...) of `pid`.
pub fn ns_inode(pid: &str, kind: &str) -> Result<u64> {
    let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
    std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .at(path)
}

/// The namespaces of `pid` that differ from the caller's: what `exec` must join.
pub fn differing(pid: Pid) -> Result<CloneFlags> {
    let mut flags = CloneFlags::empty();
    for (typ, kind) in ALL {
        if ns_inode(&pid.to_string(), kind)? != ns_inode("self", kind)? {
            flags |= clone_flag(typ);
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxIdMappingBuilder;

    fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    #[test]
    fn ids_map_through_ranges() {
        let maps = vec![mapping(0, 100_000, 1000), mapping(1000, 980, 1)];
        assert_eq!(to_host(0, Some(&maps)), Some(100_000));
        assert_eq!(to_host(999, Some(&maps)), Some(100_999));
        assert_eq!(to_host(1000, Some(&maps)), Some(980));
        assert_eq!(to_host(1001, Some(&maps)), None);
        assert_eq!(to_host(5, None), Some(5));
        assert_eq!(map_lines(&maps), "0 100000 1000\n1000 980 1\n");
    }

    #[test]
    fn own_namespaces_do_not_differ() {
        assert_eq!(
            differing(nix::unistd::getpid()).unwrap(),
            CloneFlags::empty()
        );
    }
}
