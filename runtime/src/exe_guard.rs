//! Protects the runtime binary from being overwritten by a container (CVE-2019-5736):
//! a process in the container can reach the runtime's executable through
//! `/proc/PID/exe` while the runtime is inside, and write to it once the runtime exits.
//!
//! Before a container's processes could see it, the runtime re-executes itself from a
//! read-only, detached bind mount of its own binary (or, where mounts are not allowed, a
//! sealed memfd copy). `/proc/PID/exe` then leads only to something that refuses writes.
//!
//! `exec` always does (it joins a container whose processes run). `create`/`run` do when
//! [`needed_for`] says the container could reach this binary. Otherwise nothing of the
//! container can: init is non-dumpable until it executes the container's program, no
//! hook runs, and a PID namespace of its own hides the runtime's other processes (the
//! supervisor). A container program that resolves to this binary
//! (`/proc/self/exe` as `process.args[0]`) becomes the container's init, and when it
//! ends, the PID namespace ends with every process that could hold its executable.
//! Skipping the re-exec saves a whole process start per create/run (docs/benchmarks.md).

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

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

/// Whether a container made from `spec` could reach the executable of a process running
/// this binary. Init makes itself non-dumpable before anything of the container exists
/// (init.rs), so a process of the container needs CAP_SYS_PTRACE over it to open its
/// `/proc/PID/exe`; the re-exec is needed when the container shares or joins a PID
/// namespace (it may see the runtime's other processes), when its processes may hold
/// CAP_SYS_PTRACE, rootless (init stays dumpable until its ID maps are written), and
/// with any hook: createContainer/startContainer hooks run inside the container while
/// init runs this binary, and the others run where this runtime runs — which is inside
/// a container when a container's program is this binary (`/proc/self/exe`) driving a
/// nested bundle, next to a dumpable process of this binary.
pub fn needed_for(spec: &Spec) -> bool {
    let own_pid_namespace = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
        });
    let hooks = crate::hooks::any(spec);
    let may_ptrace = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .is_some_and(|caps| {
            [
                caps.bounding(),
                caps.effective(),
                caps.permitted(),
                caps.inheritable(),
                caps.ambient(),
            ]
            .iter()
            .any(|set| {
                set.as_ref()
                    .is_some_and(|s| s.contains(&oci_spec::runtime::Capability::SysPtrace))
            })
        });
    !own_pid_namespace || hooks || may_ptrace || crate::rootless::active()
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
    fn spec(json: serde_json::Value) -> oci_spec::runtime::Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn only_a_container_in_its_own_pid_namespace_without_hooks_or_ptrace_is_spared() {
        let ns = |list: serde_json::Value| {
            spec(
                serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"},
                                     "linux": {"namespaces": list}}),
            )
        };
        let own = serde_json::json!([{"type": "mount"}, {"type": "pid"}]);
        assert!(!super::needed_for(&ns(own.clone())));
        // The host's PID namespace, or one joined by path: others may look in.
        assert!(super::needed_for(&ns(
            serde_json::json!([{"type": "mount"}])
        )));
        assert!(super::needed_for(&ns(
            serde_json::json!([{"type": "pid", "path": "/proc/1/ns/pid"}])
        )));
        for stage in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            let mut s = ns(own.clone());
            let hooks: oci_spec::runtime::Hooks =
                serde_json::from_value(serde_json::json!({stage: [{"path": "/bin/true"}]}))
                    .unwrap();
            s.set_hooks(Some(hooks));
            assert!(super::needed_for(&s), "{stage}");
        }
        let mut s = ns(own);
        let caps: oci_spec::runtime::LinuxCapabilities = serde_json::from_value(
            serde_json::json!({"bounding": ["CAP_KILL", "CAP_SYS_PTRACE"], "effective": ["CAP_KILL"]}),
        )
        .unwrap();
        let mut process = oci_spec::runtime::Process::default();
        process.set_capabilities(Some(caps));
        s.set_process(Some(process));
        assert!(super::needed_for(&s), "CAP_SYS_PTRACE");
    }

    #[test]
    fn the_test_binary_is_not_protected() {
        // target/debug is an ordinary writable file on a writable mount.
        assert!(!super::running_protected());
    }
}
