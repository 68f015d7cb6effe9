//! `seccomp(SECCOMP_SET_MODE_FILTER)`: installs a classic BPF program built by
//! `crate::seccomp`. seccompiler's `apply_filter` always sets no_new_privs, which the OCI
//! spec leaves to `process.noNewPrivileges`, so the call is made here.

use super::{check, SysResult};

/// One classic BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

pub const FLAG_TSYNC: u32 = 1;
pub const FLAG_LOG: u32 = 1 << 1;
pub const FLAG_SPEC_ALLOW: u32 = 1 << 2;

/// Installs `program` for the calling thread (all threads with `FLAG_TSYNC`). Needs
/// no_new_privs or CAP_SYS_ADMIN in the current user namespace.
pub fn install_filter(program: &[SockFilter], flags: u32) -> SysResult<()> {
    let prog = SockFprog {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: prog points at `program`, which outlives the call; the kernel copies it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags as libc::c_ulong,
            &prog as *const SockFprog,
        )
    };
    let target = format!("{} instructions", program.len());
    let ret = check(ret, "seccomp(SECCOMP_SET_MODE_FILTER)", target)?;
    // With TSYNC, a positive return is the id of a thread that could not be synced.
    if ret > 0 {
        return Err(super::SysError::new(
            "seccomp(SECCOMP_FILTER_FLAG_TSYNC)",
            format!("thread {ret}"),
            super::Errno::ESRCH,
        ));
    }
    Ok(())
}

/// Runs `program` through the kernel's classic-BPF checker without installing it
/// anywhere that matters: it is attached to a throwaway socket (no privilege needed).
pub fn check_program(program: &[SockFilter]) -> SysResult<()> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| {
        super::SysError::new(
            "socket",
            "check",
            super::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let prog = SockFprog {
        len: program.len() as u16,
        filter: program.as_ptr(),
    };
    // SAFETY: prog points at `program`, alive for the call; the kernel copies it.
    let ret = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            &prog as *const SockFprog as *const libc::c_void,
            std::mem::size_of::<SockFprog>() as libc::socklen_t,
        )
    };
    check(
        ret as libc::c_long,
        "setsockopt(SO_ATTACH_FILTER)",
        format!("{} instructions", program.len()),
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_instruction_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<super::SockFilter>(), 8);
        assert_eq!(std::mem::size_of::<super::SockFprog>(), 16);
    }
}
