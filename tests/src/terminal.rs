//! Terminals: receiving a pty master over a console socket, and reading what the
//! container writes to it.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Receives one fd sent with SCM_RIGHTS on `sock` (runc's console-socket protocol).
pub fn recv_fd(sock: &UnixStream) -> OwnedFd {
    try_recv_fd(sock).expect("no fd on the console socket")
}

/// Like [`recv_fd`], or None when the sender closed the socket without sending one.
pub fn try_recv_fd(sock: &UnixStream) -> Option<OwnedFd> {
    let timeout = Some(Duration::from_secs(10));
    sock.set_read_timeout(timeout).unwrap();
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 64];
    // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: msg describes valid buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the control buffer was filled by the kernel and is checked before use.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return None;
        }
        assert_eq!((*cmsg).cmsg_type, libc::SCM_RIGHTS);
        Some(OwnedFd::from_raw_fd(std::ptr::read_unaligned(
            libc::CMSG_DATA(cmsg).cast(),
        )))
    }
}

/// Reads `file` until the text read contains `needle` (a liveness bound of 120 s, generous
/// for emulated VMs); returns the text.
pub fn read_until(file: &mut File, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut text = String::new();
    while !text.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let left = left.as_millis() as i32;
        assert!(left > 0, "timed out waiting for {needle:?}; read {text:?}");
        let mut pfd = libc::pollfd {
            fd: file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, left) } <= 0 {
            continue;
        }
        let mut buf = [0u8; 1024];
        match file.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    text
}
