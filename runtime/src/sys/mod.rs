//! The thin layer between the runtime and the kernel.
//!
//! Every `unsafe` block and every raw system call of the runtime lives below this module.
//! Each wrapper takes and returns owned, typed values (`OwnedFd`, `Pid`, flag sets) and
//! reports failures as [`SysError`], which names the call and the object it acted on.
//! Wrappers exist only where `nix` has a gap (see docs/architecture.md): the new mount API,
//! `openat2`, `clone3`, pidfds, `close_range`, `sched_setattr`, `ioprio_set`, memfd sealing, `bpf`.

pub mod bpf;
pub mod fd;
pub mod memory;
pub mod mount_api;
pub mod process;
pub mod seccomp;

use std::fmt;

pub use nix::errno::Errno;

/// A failed system call: which call, on what, and the errno it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysError {
    pub call: &'static str,
    pub target: String,
    pub errno: Errno,
}

impl SysError {
    pub fn new(call: &'static str, target: impl fmt::Display, errno: Errno) -> Self {
        SysError {
            call,
            target: target.to_string(),
            errno,
        }
    }

    /// The errno of the most recent failed call of this thread.
    pub fn last(call: &'static str, target: impl fmt::Display) -> Self {
        Self::new(call, target, Errno::last())
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.target.is_empty() {
            write!(f, "{}: {}", self.call, self.errno.desc())
        } else {
            write!(f, "{} {}: {}", self.call, self.target, self.errno.desc())
        }
    }
}

impl std::error::Error for SysError {}

pub type SysResult<T> = Result<T, SysError>;

/// Converts a raw syscall return value (`-1` on failure) into a result.
fn check(
    ret: libc::c_long,
    call: &'static str,
    target: impl fmt::Display,
) -> SysResult<libc::c_long> {
    if ret < 0 {
        Err(SysError::last(call, target))
    } else {
        Ok(ret)
    }
}

/// Retries a call while it fails with EINTR.
fn retry_eintr(mut f: impl FnMut() -> libc::c_long) -> libc::c_long {
    loop {
        let ret = f();
        if ret != -1 || Errno::last() != Errno::EINTR {
            return ret;
        }
    }
}
