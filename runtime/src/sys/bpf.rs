//! The few `bpf(2)` commands a cgroup device program needs: load, attach, query,
//! detach. nix and libc have no typed wrappers for them; the attribute layouts below
//! follow `union bpf_attr` in include/uapi/linux/bpf.h (the kernel accepts a shorter or
//! longer attribute as long as the bytes it does not know are zero).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::{check, SysResult};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;

const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_CGROUP_DEVICE: u32 = 6;

/// Where a `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SockAddrHook {
    Inet4Connect = 10,
    Inet6Connect = 11,
    Udp4Sendmsg = 14,
    Udp6Sendmsg = 15,
}
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    /// dst in the low nibble, src in the high one.
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    pub const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            regs: (src << 4) | (dst & 0x0f),
            off,
            imm,
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T, call: &'static str, target: &str) -> SysResult<i64> {
    // SAFETY: attr is a live, initialised repr(C) bpf_attr prefix of the given size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    check(ret, call, target)
}

/// Loads a `BPF_PROG_TYPE_CGROUP_DEVICE` program; on a verifier rejection the error's
/// target carries the verifier log, which says which instruction is wrong.
pub fn load_device_program(insns: &[Insn], name: &str) -> SysResult<OwnedFd> {
    load(BPF_PROG_TYPE_CGROUP_DEVICE, 0, insns, name)
}

/// Loads a `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` program for `hook`.
pub fn load_sock_addr_program(
    insns: &[Insn],
    hook: SockAddrHook,
    name: &str,
) -> SysResult<OwnedFd> {
    load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, hook as u32, insns, name)
}

/// Attaches a socket-address program to a cgroup2 directory, next to any already there.
pub fn attach_sock_addr_program(
    cgroup: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    hook: SockAddrHook,
) -> SysResult<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: hook as u32,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr, "bpf(BPF_PROG_ATTACH)", "cgroup").map(drop)
}

fn load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    name: &str,
) -> SysResult<OwnedFd> {
    // Without a log first: the kernel formats the verifier's log even for a program it
    // accepts (about a quarter of a millisecond per container, issue 10's profile).
    // Only a rejected program is loaded again, with the log, to say why.
    match load_with_log(prog_type, expected_attach_type, insns, name, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut log = vec![0u8; 64 * 1024];
            match load_with_log(prog_type, expected_attach_type, insns, name, Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(mut e) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    let text = String::from_utf8_lossy(&log[..end]);
                    let last = text.lines().rev().take(3).collect::<Vec<_>>();
                    if !last.is_empty() {
                        e.target = format!("{name} (verifier: {})", last.join(" / "));
                    }
                    Err(if e.errno == first.errno { e } else { first })
                }
            }
        }
    }
}

fn load_with_log(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[Insn],
    name: &str,
    log: Option<&mut [u8]>,
) -> SysResult<OwnedFd> {
    let license = c"GPL";
    let mut prog_name = [0u8; 16];
    for (dst, src) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src;
    }
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (1, buf.len() as u32, buf.as_mut_ptr() as u64),
        None => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type,
        expected_attach_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr, "bpf(BPF_PROG_LOAD)", name)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a device program to a cgroup2 directory, alongside any already there.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    bpf(BPF_PROG_ATTACH, &mut attr, "bpf(BPF_PROG_ATTACH)", "cgroup").map(drop)
}

/// Detaches one device program from a cgroup2 directory.
pub fn detach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> SysResult<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: 0,
    };
    bpf(BPF_PROG_DETACH, &mut attr, "bpf(BPF_PROG_DETACH)", "cgroup").map(drop)
}

/// The device programs attached directly to a cgroup2 directory, as descriptors.
pub fn device_programs(cgroup: BorrowedFd<'_>) -> SysResult<Vec<OwnedFd>> {
    let mut ids = [0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr, "bpf(BPF_PROG_QUERY)", "cgroup")?;
    let count = (attr.prog_cnt as usize).min(ids.len());
    let mut out = Vec::with_capacity(count);
    for id in &ids[..count] {
        let mut get = GetFdAttr {
            prog_id: *id,
            ..Default::default()
        };
        let fd = bpf(
            BPF_PROG_GET_FD_BY_ID,
            &mut get,
            "bpf(BPF_PROG_GET_FD_BY_ID)",
            &id.to_string(),
        )?;
        // SAFETY: a new descriptor owned by nobody else.
        out.push(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    Ok(out)
}

/// Attaches `prog` and then detaches every other device program of the group, so the
/// group is never without a filter while its rules change.
pub fn replace_device_programs(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> SysResult<()> {
    let old = device_programs(cgroup)?;
    attach_device_program(cgroup, prog)?;
    for p in old {
        detach_device_program(cgroup, p.as_fd())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_layout_matches_the_kernel() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        let i = Insn::new(0x61, 2, 1, 4, 0);
        assert_eq!(i.regs, 0x12);
    }

    #[test]
    fn a_broken_program_is_rejected_with_the_verifier_log() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        // r0 is never set before exit: the verifier refuses.
        let err = load_device_program(&[Insn::new(0x95, 0, 0, 0, 0)], "broken").unwrap_err();
        assert_eq!(err.call, "bpf(BPF_PROG_LOAD)");
        assert!(err.target.contains("verifier"), "{err}");
    }
}
