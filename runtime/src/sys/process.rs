//! Process-level wrappers nix lacks: `clone3` (with namespaces and `CLONE_INTO_CGROUP`),
//! pidfds, `sched_setattr` and `ioprio_set`.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{check, Errno, SysError, SysResult};

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x200000000;

/// Which side of a fork-like `clone3` this process is on.
pub enum Forked {
    Child,
    Parent(Pid),
}

/// A fork with extra clone flags (namespaces, `CLONE_PARENT`) and, optionally, placement
/// into a cgroup2 directory so the child never runs a single instruction outside it.
///
/// Like `fork`, the child runs on a copy of the caller's stack. The caller must be
/// single-threaded (the runtime is), so the child may allocate and use locks.
pub fn fork_with(
    flags: nix::sched::CloneFlags,
    cgroup: Option<BorrowedFd<'_>>,
) -> SysResult<Forked> {
    let parent_flags = nix::sched::CloneFlags::CLONE_PARENT;
    let mut args = CloneArgs {
        flags: flags.bits() as u32 as u64,
        // With CLONE_PARENT the kernel takes the exit signal from the caller instead.
        exit_signal: if flags.contains(parent_flags) {
            0
        } else {
            libc::SIGCHLD as u64
        },
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: args outlives the call; with a null stack clone3 behaves like fork.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match check(ret, "clone3", format!("{flags:?}"))? {
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(Pid::from_raw(pid as i32))),
    }
}

/// A process handle that survives pid reuse.
pub fn pidfd_open(pid: Pid) -> SysResult<OwnedFd> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = check(ret, "pidfd_open", pid)?;
    // SAFETY: a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` through a pidfd: never reaches a recycled pid.
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: Signal) -> SysResult<()> {
    // SAFETY: a null siginfo means "like kill(2)".
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    check(ret, "pidfd_send_signal", signal).map(|_| ())
}

/// Joins every namespace in `flags` of the process behind `pidfd` in one atomic step.
pub fn setns_pidfd(pidfd: BorrowedFd<'_>, flags: nix::sched::CloneFlags) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::setns(pidfd.as_raw_fd(), flags.bits()) };
    check(ret as libc::c_long, "setns", format!("{flags:?}")).map(|_| ())
}

/// The `CLONE_NEW*` flag of the namespace behind `fd` (`NS_GET_NSTYPE`).
pub fn ns_type(fd: BorrowedFd<'_>) -> SysResult<i32> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    check(ret as libc::c_long, "ioctl(NS_GET_NSTYPE)", fd.as_raw_fd()).map(|k| k as i32)
}

#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// The scheduling parameters of OCI `process.scheduler`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedParams {
    pub policy: u32,
    pub flags: u64,
    pub nice: i32,
    pub priority: u32,
    pub runtime: u64,
    pub deadline: u64,
    pub period: u64,
}

/// `sched_setattr(0, attr, 0)` for the calling thread.
pub fn sched_setattr(params: SchedParams) -> SysResult<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: params.policy,
        sched_flags: params.flags,
        sched_nice: params.nice,
        sched_priority: params.priority,
        sched_runtime: params.runtime,
        sched_deadline: params.deadline,
        sched_period: params.period,
        ..Default::default()
    };
    // SAFETY: attr outlives the call and carries its own size.
    let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    check(
        ret,
        "sched_setattr",
        format!("policy {} nice {}", params.policy, params.nice),
    )
    .map(|_| ())
}

/// `ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level)`.
pub fn ioprio_set(class: u16, level: u16) -> SysResult<()> {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    if level > 7 || class > 3 {
        return Err(SysError::new(
            "ioprio_set",
            format!("class {class} level {level}"),
            Errno::EINVAL,
        ));
    }
    let value = (libc::c_int::from(class) << 13) | libc::c_int::from(level);
    // SAFETY: integer arguments only.
    let ret = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    check(ret, "ioprio_set", format!("class {class} level {level}")).map(|_| ())
}

/// Applies a CPU list (already parsed) to the calling thread.
pub fn set_affinity(cpus: &[usize]) -> SysResult<()> {
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .map_err(|e| SysError::new("sched_setaffinity", format!("cpu {cpu}"), e))?;
    }
    nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
        .map_err(|e| SysError::new("sched_setaffinity", format!("{cpus:?}"), e))
}

/// Resets every signal disposition to default and unblocks all signals, so the container's
/// process starts with a clean slate (Rust ignores SIGPIPE, and `run` blocks the signals it
/// forwards; both would otherwise leak through exec).
pub fn reset_signals() -> SysResult<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for signal in Signal::iterator() {
        if signal == Signal::SIGKILL || signal == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound.
        unsafe { sigaction(signal, &default) }
            .map_err(|e| SysError::new("sigaction", signal, e))?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(|e| SysError::new("sigprocmask", "", e))
}

/// Marks this process non-dumpable until its next exec (which resets it): no process
/// of the container — same uid, and later the same capabilities — can ptrace it or open
/// its `/proc/PID/{mem,fd,environ,exe}` while it still holds the runtime's descriptors
/// and memory.
pub fn set_non_dumpable() -> SysResult<()> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| SysError::new("prctl", "PR_SET_DUMPABLE", e))
}

/// Sets `signals` back to their default disposition: a signal the caller inherited as
/// ignored (a shell's background job ignores SIGINT) is discarded by the kernel before any
/// signalfd could see it.
pub fn default_dispositions(signals: &[Signal]) -> SysResult<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &signal in signals {
        // SAFETY: installing SIG_DFL is always sound (the signals are blocked and read
        // through a signalfd right after).
        unsafe { sigaction(signal, &default) }
            .map_err(|e| SysError::new("sigaction", signal, e))?;
    }
    Ok(())
}

/// `setdomainname(2)` (the NIS domain of the UTS namespace).
pub fn set_domainname(name: &str) -> SysResult<()> {
    // SAFETY: the pointer and length describe `name`'s bytes for the duration of the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    check(ret as libc::c_long, "setdomainname", name).map(|_| ())
}

/// Leaves a forked child immediately, without running the parent's destructors or atexit
/// handlers (which belong to the parent's copy of the process).
pub fn exit_child(code: i32) -> ! {
    // SAFETY: _exit never returns and is always safe to call.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};

    #[test]
    fn fork_with_no_flags_behaves_like_fork() {
        match fork_with(nix::sched::CloneFlags::empty(), None).unwrap() {
            Forked::Child => exit_child(7),
            Forked::Parent(pid) => {
                assert_eq!(waitpid(pid, None).unwrap(), WaitStatus::Exited(pid, 7));
            }
        }
    }

    #[test]
    fn ioprio_rejects_out_of_range_levels() {
        assert_eq!(ioprio_set(2, 9).unwrap_err().errno, Errno::EINVAL);
    }

    #[test]
    fn pidfd_signals_reach_the_process() {
        match fork_with(nix::sched::CloneFlags::empty(), None).unwrap() {
            Forked::Child => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                exit_child(0)
            }
            Forked::Parent(pid) => {
                let fd = pidfd_open(pid).unwrap();
                pidfd_send_signal(std::os::fd::AsFd::as_fd(&fd), Signal::SIGTERM).unwrap();
                assert_eq!(
                    waitpid(pid, None).unwrap(),
                    WaitStatus::Signaled(pid, Signal::SIGTERM, false)
                );
            }
        }
    }
}
