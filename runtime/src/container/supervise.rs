//! The foreground runtime (`run`, `exec` without `--detach`): forwards signals to the
//! container's process, proxies its terminal, reaps it and turns its end into an exit
//! code (128+N when killed by signal N, like a shell).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::console::{copy_winsize, RawMode};
use crate::error::Result;
use crate::sys::fd::borrow_stdio;
use crate::sys::{Errno, SysError};

/// What a systemd unit (or a shell) sends that the container's process should get.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Blocks the forwarded signals (plus SIGCHLD and SIGWINCH) and returns a signalfd for
/// them. Called before the container process is forked, so no signal is lost in
/// between; the child unblocks everything before its exec.
pub fn block_signals() -> Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in FORWARDED.iter().chain(&[Signal::SIGCHLD, Signal::SIGWINCH]) {
        mask.add(*s);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| SysError::new("sigprocmask", "", e))?;
    // After blocking: nothing is delivered (and acted on by default) in between.
    crate::sys::process::default_dispositions(&FORWARDED)?;
    Ok(
        SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| SysError::new("signalfd", "", e))?,
    )
}

fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Work the supervisor does once, when the process has been running for a while:
/// a short-lived container (a build step, `run /bin/true`) exits before it and never
/// pays for it.
pub struct Settle {
    pub at: std::time::Instant,
    pub work: fn(),
}

/// How the supervised process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The exit status (128+N for signal N).
    pub code: i32,
    /// The wall-time limit passed and the process was killed.
    pub timed_out: bool,
    /// A stop signal came with `kill_on_stop` and the process was killed.
    pub cancelled: bool,
}

/// Waits for `pid` (a child of this process) while forwarding signals and the terminal;
/// at `deadline`, kills it with SIGKILL (init's death ends its whole PID namespace).
pub fn supervise(
    signals: &SignalFd,
    pid: Pid,
    console: Option<OwnedFd>,
    deadline: Option<std::time::Instant>,
    kill_on_stop: bool,
    mut settle: Option<Settle>,
) -> Result<Outcome> {
    let mut timed_out = false;
    let mut cancelled = false;
    let _raw = console.as_ref().map(|_| RawMode::enter());
    if let Some(master) = &console {
        copy_winsize(master.as_fd());
    }
    let mut stdin_open = console.is_some();
    let mut master_open = console.is_some();
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    if let Some(master) = &console {
                        drain(master);
                    }
                    return Ok(Outcome {
                        code,
                        timed_out,
                        cancelled,
                    });
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("waitpid", pid, e).into()),
        }
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(master) = &console {
            if stdin_open {
                fds.push(PollFd::new(borrow_stdio(0), PollFlags::POLLIN));
            }
            if master_open {
                fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
            }
        }
        let now = std::time::Instant::now();
        if let Some(due) = settle.take_if(|s| s.at <= now) {
            (due.work)();
        }
        let mut wake = settle.as_ref().map(|s| s.at);
        if let Some(d) = deadline.filter(|_| !timed_out) {
            if d <= now {
                timed_out = true;
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                continue;
            }
            wake = Some(wake.map_or(d, |w| w.min(d)));
        }
        let timeout = match wake {
            None => PollTimeout::NONE,
            Some(w) => PollTimeout::try_from(
                w.saturating_duration_since(now)
                    .min(std::time::Duration::from_secs(60)),
            )
            .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("poll", "", e).into()),
            Ok(_) => {}
        }
        let ready: Vec<(i32, bool)> = fds
            .iter()
            .map(|f| {
                (
                    f.as_fd().as_raw_fd(),
                    f.revents().is_some_and(|r| !r.is_empty()),
                )
            })
            .collect();
        for (fd, is_ready) in ready {
            if !is_ready {
                continue;
            }
            if fd == signals.as_fd().as_raw_fd() {
                while let Ok(Some(info)) = signals.read_signal() {
                    match Signal::try_from(info.ssi_signo as i32) {
                        Ok(Signal::SIGWINCH) => {
                            if let Some(master) = &console {
                                copy_winsize(master.as_fd());
                            }
                        }
                        Ok(Signal::SIGCHLD) | Err(_) => {}
                        // A build's init (bash as PID 1) ignores what it has no handler
                        // for: stopping it means killing it, and its namespace with it.
                        Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) if kill_on_stop => {
                            cancelled = true;
                            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                        }
                        Ok(sig) => {
                            let _ = nix::sys::signal::kill(pid, sig);
                        }
                    }
                }
            } else if fd == 0 {
                let master = console
                    .as_ref()
                    .expect("stdin is polled only with a console");
                stdin_open = copy(borrow_stdio(0), master.as_fd());
            } else if let Some(master) = &console {
                master_open = copy(master.as_fd(), borrow_stdio(1));
            }
        }
    }
}

/// Copies one chunk; false on EOF or a dead end (the other side closed).
fn copy(from: std::os::fd::BorrowedFd<'_>, to: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from, &mut buf) {
        Ok(0) | Err(Errno::EIO) => false,
        Ok(n) => write_all(to, &buf[..n]),
        Err(Errno::EINTR | Errno::EAGAIN) => true,
        Err(_) => false,
    }
}

fn write_all(to: std::os::fd::BorrowedFd<'_>, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(to, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Copies what the process wrote to its terminal before exiting.
fn drain(master: &OwnedFd) {
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
            || !copy(master.as_fd(), borrow_stdio(1))
        {
            return;
        }
    }
}
