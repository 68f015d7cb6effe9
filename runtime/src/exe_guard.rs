//! Protects the runtime binary from being overwritten by a container (CVE-2019-5736):
//! a process in the container can reach the runtime's executable through
//! `/proc/PID/exe` while the runtime is inside, and write to it once the runtime exits.
//!
//! Before entering any container, the runtime re-executes itself from a read-only,
//! detached bind mount of its own binary (or, where mounts are not allowed, a sealed
//! memfd copy). `/proc/PID/exe` then leads only to something that refuses writes.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::fd::{exec_fd, openat2, sealed_memfd_copy, Resolve};
use crate::sys::mount_api::{attr, clone_tree, set_attr, SetAttr};

const MARKER: &str = "_LEFT4ME_RUNTIME_PROTECTED_EXE";

/// Re-executes the runtime from a protected copy unless it already runs from one.
/// On success this does not return.
pub fn ensure_protected() -> Result<()> {
    let reexecuted = std::env::var_os(MARKER).is_some();
    if reexecuted {
        // Keeps the marker out of the environment of everything the runtime starts
        // (the runtime is still single-threaded here).
        std::env::remove_var(MARKER);
    }
    // The marker is only a hint: a caller could set it. Trust what the kernel says, which
    // also spares the re-exec to a runtime installed on a read-only mount.
    if running_protected() {
        return Ok(());
    }
    if reexecuted {
        return Err(Error::Unsupported(
            "re-executed from a protected copy of the runtime, which the kernel does not show \
             as read-only"
                .into(),
        ));
    }
    let exe = protected_exe()?;
    let argv: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| Error::Usage("NUL in argument".into())))
        .collect::<Result<_>>()?;
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    envp.push(CString::new(format!("{MARKER}=1")).expect("no NUL"));
    Err(exec_fd(exe.as_fd(), &argv, &envp).into())
}

/// True when this process's executable refuses writes: on a read-only mount, or a
/// memfd sealed against writing.
pub fn running_protected() -> bool {
    let Ok(exe) = openat2(
        None,
        Path::new("/proc/self/exe"),
        libc::O_RDONLY,
        0,
        Resolve::default(),
    ) else {
        return false;
    };
    let read_only_mount = nix::sys::statvfs::fstatvfs(&exe)
        .is_ok_and(|v| v.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let sealed = nix::fcntl::fcntl(&exe, nix::fcntl::FcntlArg::F_GET_SEALS).is_ok_and(|seals| {
        nix::fcntl::SealFlag::from_bits_truncate(seals).contains(nix::fcntl::SealFlag::F_SEAL_WRITE)
    });
    read_only_mount || sealed
}

/// A descriptor of the runtime binary that cannot be written through.
fn protected_exe() -> Result<OwnedFd> {
    let self_exe = Path::new("/proc/self/exe");
    match clone_tree(None, self_exe, false) {
        Ok(tree) => {
            set_attr(
                tree.as_fd(),
                SetAttr {
                    set: attr::RDONLY | attr::NOSUID | attr::NODEV,
                    ..Default::default()
                },
                self_exe,
            )?;
            Ok(tree)
        }
        Err(_) => {
            let file = openat2(None, self_exe, libc::O_RDONLY, 0, Resolve::default())?;
            Ok(sealed_memfd_copy("left4me-runtime", file.as_fd())?)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_test_binary_is_not_protected() {
        // target/debug is an ordinary writable file on a writable mount.
        assert!(!super::running_protected());
    }
}
