//! `subreaper CMD ARGS...`: runs CMD under a child subreaper and exits with CMD's status,
//! while the subreaper stays behind (detached) reaping whatever CMD left, until nothing
//! is left. It plays the part conmon or containerd-shim play for `exec --detach`: the
//! runtime exits and the detached process is re-parented to the nearest subreaper. On a
//! host whose PID 1 does not reap, an unreaped process would otherwise keep its
//! container's init from finishing its exit.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{exit, Command};

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: subreaper CMD ARGS...");
        exit(2);
    }
    let (mut ours, mut theirs) = UnixStream::pair().expect("socketpair");
    // SAFETY: single-threaded here; the child only uses async-signal-safe calls or
    // exits through std's process machinery as a fresh process would.
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("subreaper: fork failed");
            exit(1)
        }
        0 => {
            drop(ours);
            // SAFETY: plain prctl.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            let code = match Command::new(&args[0]).args(&args[1..]).status() {
                Ok(s) => s.code().unwrap_or(128 + 9),
                Err(e) => {
                    eprintln!("subreaper: {:?}: {e}", args[0]);
                    127
                }
            };
            let _ = theirs.write_all(&[code as u8]);
            drop(theirs);
            // Nobody waits for our output any more.
            let null = std::fs::File::open("/dev/null").expect("/dev/null");
            for fd in 0..3 {
                // SAFETY: replacing stdio with /dev/null.
                unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
            }
            loop {
                // SAFETY: reaps any child; ECHILD means nothing is left.
                if unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) } < 0
                    && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
                {
                    exit(0);
                }
            }
        }
        _ => {
            drop(theirs);
            let mut code = [1u8];
            let _ = ours.read_exact(&mut code);
            exit(i32::from(code[0]))
        }
    }
}
