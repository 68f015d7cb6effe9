//! File-descriptor level wrappers: path resolution confined to a root (`openat2`),
//! descriptor hygiene (`close_range`), descriptor passing (`SCM_RIGHTS`) and sealed memfds.

use std::ffi::CString;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use super::{check, retry_eintr, Errno, SysError, SysResult};

/// How `openat2` may resolve a path (`RESOLVE_*`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Resolve {
    /// Treat the directory fd as `/`: `..` and absolute symlinks stay inside it.
    pub in_root: bool,
    /// Refuse `/proc/self/fd/N`-style magic links.
    pub no_magiclinks: bool,
    /// Refuse every symlink.
    pub no_symlinks: bool,
    /// Refuse crossing into another mount.
    pub no_xdev: bool,
}

impl Resolve {
    /// Resolution used for anything that comes from a container's rootfs.
    pub const IN_ROOT: Resolve = Resolve {
        in_root: true,
        no_magiclinks: true,
        no_symlinks: false,
        no_xdev: false,
    };

    fn bits(self) -> u64 {
        const RESOLVE_NO_XDEV: u64 = 0x01;
        const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
        const RESOLVE_NO_SYMLINKS: u64 = 0x04;
        const RESOLVE_IN_ROOT: u64 = 0x10;
        let mut bits = 0;
        if self.in_root {
            bits |= RESOLVE_IN_ROOT;
        }
        if self.no_magiclinks {
            bits |= RESOLVE_NO_MAGICLINKS;
        }
        if self.no_symlinks {
            bits |= RESOLVE_NO_SYMLINKS;
        }
        if self.no_xdev {
            bits |= RESOLVE_NO_XDEV;
        }
        bits
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub(crate) fn path_cstring(path: &Path) -> SysResult<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| SysError::new("path", path.display(), Errno::EINVAL))
}

/// `openat2(dirfd, path, flags, mode, resolve)`; `O_CLOEXEC` is always added.
pub fn openat2(
    dir: Option<BorrowedFd<'_>>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: Resolve,
) -> SysResult<OwnedFd> {
    let c_path = path_cstring(path)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: u64::from(mode),
        resolve: resolve.bits(),
    };
    let dirfd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    let attempt = || {
        // SAFETY: c_path and how outlive the call; the size matches the struct we pass.
        retry_eintr(|| unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                c_path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        })
    };
    // With RESOLVE_IN_ROOT/BENEATH, a ".." step fails with EAGAIN when any mount or
    // rename happened meanwhile anywhere on the system (openat2(2): retry).
    let mut ret = attempt();
    for _ in 0..1000 {
        if ret != -1 || Errno::last() != Errno::EAGAIN {
            break;
        }
        ret = attempt();
    }
    let fd = check(ret, "openat2", path.display())?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Marks every descriptor from `first` upwards close-on-exec, so nothing of the runtime
/// reaches the container's process.
pub fn cloexec_from(first: u32) -> SysResult<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    check(ret, "close_range", format!("{first}..")).map(|_| ())
}

/// Clears close-on-exec on a descriptor that must survive exec (`--preserve-fds`, stdio).
pub fn clear_cloexec(fd: RawFd) -> SysResult<()> {
    nix::fcntl::fcntl(
        // SAFETY: fcntl on a raw number is harmless if it is not open (EBADF).
        unsafe { BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    )
    .map(|_| ())
    .map_err(|e| SysError::new("fcntl(F_SETFD)", fd, e))
}

/// Duplicates `fd` onto `target` (dup3 without O_CLOEXEC), unless they are the same.
pub fn dup_onto(fd: BorrowedFd<'_>, target: RawFd) -> SysResult<()> {
    if fd.as_raw_fd() == target {
        return clear_cloexec(target);
    }
    // SAFETY: dup2 onto a fixed number; the caller decided that number is free to replace.
    let ret = unsafe { libc::dup2(fd.as_raw_fd(), target) };
    check(ret as libc::c_long, "dup2", target).map(|_| ())
}

/// Sends `payload` and descriptors over a unix socket (`SCM_RIGHTS`).
pub fn send_with_fds(sock: BorrowedFd<'_>, payload: &[u8], fds: &[RawFd]) -> SysResult<()> {
    let iov = [IoSlice::new(payload)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map(|_| ())
        .map_err(|e| SysError::new("sendmsg", "", e))
}

/// The size of the next packet on a SOCK_SEQPACKET socket, without taking it
/// (`MSG_PEEK | MSG_TRUNC`; no control buffer, so no descriptor is received twice).
pub fn next_packet_len(sock: BorrowedFd<'_>) -> SysResult<usize> {
    loop {
        match nix::sys::socket::recv(
            sock.as_raw_fd(),
            &mut [0u8; 1],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(|e| SysError::new("recv(MSG_PEEK)", "", e)),
        }
    }
}

/// Receives one message and any descriptors sent with it (`SCM_RIGHTS`). An empty
/// payload means EOF. On a SOCK_SEQPACKET socket a message longer than `max_len` would
/// be cut silently: pass [`next_packet_len`].
pub fn recv_with_fds(sock: BorrowedFd<'_>, max_len: usize) -> SysResult<(Vec<u8>, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; max_len.max(1)];
    let mut cmsg_space = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let (len, fds) = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(SysError::new("recvmsg", "", e)),
            Ok(msg) => {
                let mut fds = Vec::new();
                for cmsg in msg.cmsgs().map_err(|e| SysError::new("recvmsg", "", e))? {
                    if let ControlMessageOwned::ScmRights(raw) = cmsg {
                        // SAFETY: SCM_RIGHTS gave us new descriptors that nothing else owns.
                        fds.extend(
                            raw.into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
                break (msg.bytes, fds);
            }
        }
    };
    buf.truncate(len);
    Ok((buf, fds))
}

/// Filesystem magic of the filesystem `fd` lives on (`fstatfs`).
pub fn fs_magic(fd: BorrowedFd<'_>) -> SysResult<i64> {
    nix::sys::statfs::fstatfs(fd)
        .map(|s| s.filesystem_type().0)
        .map_err(|e| SysError::new("fstatfs", fd.as_raw_fd(), e))
}

pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// Filesystem magic of devpts (`/dev/pts`).
pub const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;

/// A sealed, read-only, executable copy of `source` in memory (the fallback used to
/// protect the runtime binary when a read-only bind mount cannot be made).
pub fn sealed_memfd_copy(name: &str, source: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    const MFD_CLOEXEC: libc::c_uint = 0x1;
    const MFD_ALLOW_SEALING: libc::c_uint = 0x2;
    let c_name =
        CString::new(name).map_err(|_| SysError::new("memfd_create", name, Errno::EINVAL))?;
    // SAFETY: c_name outlives the call.
    let ret = unsafe { libc::memfd_create(c_name.as_ptr(), MFD_CLOEXEC | MFD_ALLOW_SEALING) };
    let raw = check(ret as libc::c_long, "memfd_create", name)?;
    // SAFETY: new descriptor owned by nobody else.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
    let size = nix::sys::stat::fstat(source)
        .map_err(|e| SysError::new("fstat", "runtime binary", e))?
        .st_size as usize;
    let mut copied = 0usize;
    while copied < size {
        // SAFETY: plain descriptors, null offset pointer means "use the file offsets".
        let n = retry_eintr(|| unsafe {
            libc::sendfile(
                memfd.as_raw_fd(),
                source.as_raw_fd(),
                std::ptr::null_mut(),
                size - copied,
            ) as libc::c_long
        });
        let n = check(n, "sendfile", name)?;
        if n == 0 {
            break;
        }
        copied += n as usize;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl with an integer argument.
    let ret = unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
    check(ret as libc::c_long, "fcntl(F_ADD_SEALS)", name)?;
    Ok(memfd)
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: executes the file behind `fd`.
/// Returns only on failure.
pub fn exec_fd(fd: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> SysError {
    let argv_ptrs = null_terminated(argv);
    let envp_ptrs = null_terminated(envp);
    let empty = c"";
    // SAFETY: the pointer arrays are NUL-terminated and outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            empty.as_ptr(),
            argv_ptrs.as_ptr(),
            envp_ptrs.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    SysError::last("execveat", "runtime binary")
}

/// `execve(path, argv, envp)`. Returns only on failure.
pub fn exec_path(path: &CString, argv: &[CString], envp: &[CString]) -> SysError {
    let argv_ptrs = null_terminated(argv);
    let envp_ptrs = null_terminated(envp);
    // SAFETY: the pointer arrays are NUL-terminated and outlive the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr()) };
    SysError::last("execve", path.to_string_lossy())
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Borrowed view of a raw descriptor number the process is known to own (stdio).
pub fn borrow_stdio(fd: RawFd) -> BorrowedFd<'static> {
    debug_assert!((0..=2).contains(&fd));
    // SAFETY: 0-2 stay open for the life of the process (the runtime never closes them).
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// `TIOCSWINSZ`.
pub fn set_winsize(fd: BorrowedFd<'_>, ws: &nix::pty::Winsize) -> SysResult<()> {
    // SAFETY: ws outlives the call and has the kernel's struct winsize layout.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCSWINSZ,
            ws as *const nix::pty::Winsize,
        )
    };
    check(ret as libc::c_long, "ioctl(TIOCSWINSZ)", fd.as_raw_fd()).map(|_| ())
}

/// `TIOCGWINSZ`.
pub fn get_winsize(fd: BorrowedFd<'_>) -> SysResult<nix::pty::Winsize> {
    let mut ws = nix::pty::Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: ws is a valid, writable struct winsize.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TIOCGWINSZ,
            &mut ws as *mut nix::pty::Winsize,
        )
    };
    check(ret as libc::c_long, "ioctl(TIOCGWINSZ)", fd.as_raw_fd()).map(|_| ws)
}

/// `TIOCGPTPEER`: opens the slave of the pty master `master` without looking up
/// `/dev/pts/N` by name, so a path swapped for a symlink cannot hand over another file.
pub fn open_pty_peer(master: BorrowedFd<'_>) -> SysResult<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: integer arguments only; the kernel returns a new descriptor.
    let ret = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) };
    let fd = check(
        ret as libc::c_long,
        "ioctl(TIOCGPTPEER)",
        master.as_raw_fd(),
    )?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `TIOCSCTTY`: makes the terminal the session's controlling terminal.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> SysResult<()> {
    // SAFETY: integer argument only.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    check(ret as libc::c_long, "ioctl(TIOCSCTTY)", fd.as_raw_fd()).map(|_| ())
}

/// Closes a descriptor number inherited through fork whose owner (a copy of a parent-side
/// object) will never run its destructor in this process.
pub fn close_inherited(fd: RawFd) {
    // SAFETY: the caller guarantees nothing in this process uses `fd` afterwards.
    unsafe { libc::close(fd) };
}

/// True when `fd` refers to an open descriptor.
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on any number is harmless.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

pub fn as_borrowed(fd: &impl AsFd) -> BorrowedFd<'_> {
    fd.as_fd()
}

/// The path the kernel has for an open descriptor (what was really opened).
pub fn fd_path(fd: &impl AsRawFd) -> std::io::Result<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn openat2_in_root_keeps_dotdot_and_absolute_symlinks_inside() {
        let dir = std::env::temp_dir().join(format!("l4m-openat2-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/marker"), "inside").unwrap();
        let _ = std::fs::remove_file(dir.join("escape"));
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
        let root = openat2(
            None,
            &dir,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
            Resolve::default(),
        )
        .unwrap();
        // /escape -> /etc must resolve to <root>/etc, not the host's /etc.
        let f = openat2(
            Some(root.as_fd()),
            Path::new("escape/marker"),
            libc::O_RDONLY,
            0,
            Resolve::IN_ROOT,
        );
        assert!(f.is_ok(), "symlink inside root must resolve inside: {f:?}");
        let f = openat2(
            Some(root.as_fd()),
            Path::new("../../../etc/marker"),
            libc::O_RDONLY,
            0,
            Resolve::IN_ROOT,
        );
        assert!(f.is_ok());
        let host = openat2(
            Some(root.as_fd()),
            Path::new("escape/passwd"),
            libc::O_RDONLY,
            0,
            Resolve::IN_ROOT,
        );
        assert_eq!(host.unwrap_err().errno, Errno::ENOENT);
        let magic = openat2(
            None,
            Path::new("/proc/self/fd/0"),
            libc::O_PATH,
            0,
            Resolve::IN_ROOT,
        );
        assert!(magic.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn descriptors_cross_a_socket() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        send_with_fds(a.as_fd(), b"hello", &[file.as_raw_fd()]).unwrap();
        let (payload, fds) = recv_with_fds(b.as_fd(), 64).unwrap();
        assert_eq!(payload, b"hello");
        assert_eq!(fds.len(), 1);
        assert_eq!(fs_magic(fds[0].as_fd()).unwrap(), PROC_SUPER_MAGIC);
    }

    #[test]
    fn sealed_memfd_refuses_writes() {
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let memfd = sealed_memfd_copy("test", exe.as_fd()).unwrap();
        let written = nix::unistd::write(&memfd, b"x");
        assert_eq!(written.unwrap_err(), Errno::EPERM);
    }

    #[test]
    fn a_pty_peer_is_the_masters_slave_and_only_masters_have_one() {
        let flags = nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY;
        let master = nix::pty::posix_openpt(flags).unwrap();
        nix::pty::unlockpt(&master).unwrap();
        let slave = open_pty_peer(master.as_fd()).unwrap();
        assert_eq!(fs_magic(slave.as_fd()).unwrap(), DEVPTS_SUPER_MAGIC);
        nix::unistd::write(&slave, b"x\n").unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            open_pty_peer(null.as_fd()).unwrap_err().errno,
            Errno::ENOTTY
        );
    }
}
