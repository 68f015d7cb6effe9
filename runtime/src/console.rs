//! `process.terminal`: a pty made inside the container (from its own devpts), whose master
//! is handed over the `--console-socket` with runc's protocol (one `SCM_RIGHTS` message),
//! or, for `run`/`exec` in the foreground without a socket, proxied to the runtime's stdio.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, unlockpt};
use nix::sys::termios::{self, SetArg, Termios};

use crate::error::{Context, Error, IoContext, Result};
use crate::sys::fd::{borrow_stdio, dup_onto, open_pty_peer, recv_with_fds, send_with_fds};
use crate::sys::SysError;

/// Connects to the caller's console socket (before forking, on the host side).
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let stream = UnixStream::connect(path)
        .at(path)
        .step("connecting to --console-socket")?;
    Ok(stream.into())
}

/// In the container: opens a pty, sends its master over `socket`, and makes the slave the
/// process's stdio and controlling terminal. Returns the slave.
///
/// The slave comes from the master itself (`TIOCGPTPEER`), never from `/dev/pts/N` by
/// name: the container's `/dev` may be the rootfs's own directory, where `pts/N` can be a
/// symlink to a host file such as `/proc/sys/kernel/core_pattern` (CVE-2025-52565 class).
pub fn setup_in_container(socket: BorrowedFd<'_>, size: Option<(u16, u16)>) -> Result<OwnedFd> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(|e| SysError::new("posix_openpt", "/dev/ptmx", e))
        .step("process.terminal")?;
    if !is_pty_multiplexer(master.as_fd())? {
        return Err(Error::Unsupported(
            "process.terminal: /dev/ptmx in the container is not the pty multiplexer (c 5:2)"
                .into(),
        ));
    }
    grantpt(&master).map_err(|e| SysError::new("grantpt", "", e))?;
    unlockpt(&master).map_err(|e| SysError::new("unlockpt", "", e))?;
    let slave = open_pty_peer(master.as_fd()).step("process.terminal")?;
    if let Some((rows, cols)) = size {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        crate::sys::fd::set_winsize(slave.as_fd(), &ws)?;
    }
    send_with_fds(socket, b"/dev/ptmx", &[master.as_raw_fd()])
        .step("sending the pty to --console-socket")?;
    drop(master);
    nix::unistd::setsid().map_err(|e| SysError::new("setsid", "", e))?;
    crate::sys::fd::set_controlling_tty(slave.as_fd())?;
    for fd in 0..3 {
        dup_onto(slave.as_fd(), fd)?;
    }
    Ok(slave)
}

/// True when `fd` is the character device 5:2 (`/dev/ptmx` or `/dev/pts/ptmx`).
fn is_pty_multiplexer(fd: BorrowedFd<'_>) -> Result<bool> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| SysError::new("fstat", "/dev/ptmx", e))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && nix::sys::stat::major(st.st_rdev) == 5
        && nix::sys::stat::minor(st.st_rdev) == 2)
}

/// Receives the pty master sent by the container.
pub fn receive(socket: BorrowedFd<'_>) -> Result<OwnedFd> {
    let (_, mut fds) = recv_with_fds(socket, 4096)?;
    fds.pop()
        .ok_or_else(|| Error::Init("the container sent no terminal".into()))
}

/// Puts the runtime's stdin in raw mode for the life of the guard, if it is a terminal.
pub struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub fn enter() -> RawMode {
        let stdin = borrow_stdio(0);
        let saved = termios::tcgetattr(stdin).ok();
        if let Some(orig) = &saved {
            let mut raw = orig.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin, SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.saved {
            let _ = termios::tcsetattr(borrow_stdio(0), SetArg::TCSANOW, orig);
        }
    }
}

/// Copies the runtime's terminal size to the pty.
pub fn copy_winsize(master: BorrowedFd<'_>) {
    if let Ok(ws) = crate::sys::fd::get_winsize(borrow_stdio(0)) {
        let _ = crate::sys::fd::set_winsize(master, &ws);
    }
}
