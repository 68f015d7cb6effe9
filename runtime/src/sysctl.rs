//! `linux.sysctl`: only keys that belong to one of the container's own namespaces, written
//! through the container's procfs after checking that it really is procfs.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxNamespaceType;

use crate::error::{Context, Error, Result};
use crate::sys::fd::{fs_magic, openat2, Resolve, PROC_SUPER_MAGIC};

const IPC_KEYS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which namespace a key belongs to, or an error for host-wide keys.
pub fn check_namespaced(
    key: &str,
    has_ns: &dyn Fn(LinuxNamespaceType) -> bool,
) -> std::result::Result<(), String> {
    let needed = if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else {
        return Err("not a namespaced sysctl: it would change the host".into());
    };
    if has_ns(needed) {
        Ok(())
    } else {
        Err(format!("needs the container's own {needed} namespace"))
    }
}

/// `net.ipv4.ip_forward` → `sys/net/ipv4/ip_forward` (a `/` in a key stays a `.`, as
/// `sysctl(8)` allows for interface names such as `eth0.100`).
pub fn key_path(key: &str) -> PathBuf {
    let mut path = PathBuf::from("sys");
    for part in key.split('.') {
        path.push(part);
    }
    path
}

/// Writes each key under the container's `/proc`, opened through `root`.
pub fn apply(root: BorrowedFd<'_>, sysctls: &[(String, String)]) -> Result<()> {
    if sysctls.is_empty() {
        return Ok(());
    }
    let proc_dir = super::rootfs::paths::open_in_root(root, Path::new("/proc"))?;
    if fs_magic(proc_dir.as_fd())? != PROC_SUPER_MAGIC {
        return Err(Error::config(
            "linux.sysctl",
            "/proc in the container is not procfs",
        ));
    }
    for (key, value) in sysctls {
        let no_escape = Resolve {
            no_symlinks: true,
            no_xdev: true,
            no_magiclinks: true,
            in_root: false,
        };
        let step = || format!("writing sysctl {key}");
        let fd = openat2(
            Some(proc_dir.as_fd()),
            &key_path(key),
            libc::O_WRONLY,
            0,
            no_escape,
        )
        .step_with(step)?;
        std::fs::File::from(fd)
            .write_all(value.as_bytes())
            .map_err(|e| Error::io(format!("/proc/{}", key_path(key).display()), e))
            .step_with(step)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_namespaced_keys_pass() {
        let all = |_| true;
        let none = |_| false;
        assert!(check_namespaced("net.ipv4.ip_forward", &all).is_ok());
        assert!(check_namespaced("net.ipv4.ip_forward", &none).is_err());
        assert!(check_namespaced("kernel.shmmax", &all).is_ok());
        assert!(check_namespaced("fs.mqueue.msg_max", &all).is_ok());
        assert!(check_namespaced("kernel.panic", &all).is_err());
        assert!(check_namespaced("vm.swappiness", &all).is_err());
        assert_eq!(
            key_path("net.ipv4.ip_forward"),
            PathBuf::from("sys/net/ipv4/ip_forward")
        );
    }
}
