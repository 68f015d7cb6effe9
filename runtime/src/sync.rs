//! The channel between the runtime and the processes it forks (init, exec): a
//! `SOCK_SEQPACKET` pair carrying one small JSON message per packet, so neither side can
//! misread a partial message, and EOF means the other side is gone.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys::fd::{recv_with_fds, send_with_fds};
use crate::sys::SysError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Runtime → child: ID maps are written and the cgroup is set; carry on.
    Go,
    /// Stage-1 → runtime: the pid of the process it cloned.
    Pid(i32),
    /// Child → runtime: everything is set up; only the exec is left.
    Ready,
    /// Child → runtime: setup failed (already formatted as `step: cause`).
    Failed(String),
    /// Init → runtime: the mounts are made, pivot_root is next: run the prestart and
    /// createRuntime hooks.
    Hooks,
    /// Runtime → init: they passed; the state document for the container's own hooks.
    HooksDone(String),
}

pub struct Channel {
    fd: OwnedFd,
}

/// A connected pair: the runtime keeps the first end, the child the second.
pub fn pair() -> Result<(Channel, Channel)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| SysError::new("socketpair", "sync", e))?;
    Ok((Channel { fd: a }, Channel { fd: b }))
}

impl Channel {
    pub fn send(&self, msg: &Message) -> Result<()> {
        let bytes = serde_json::to_vec(msg).map_err(|e| Error::Init(e.to_string()))?;
        Ok(send_with_fds(self.fd.as_fd(), &bytes, &[])?)
    }

    /// The next message, or `None` when the other side closed its end (exited).
    pub fn recv(&self) -> Result<Option<Message>> {
        // Messages carry state documents of any size (annotations): read the whole packet.
        let len = crate::sys::fd::next_packet_len(self.fd.as_fd())?;
        let (bytes, _) = recv_with_fds(self.fd.as_fd(), len)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Init(format!("garbled sync message: {e}")))
    }

    /// Waits for `Ready`; a `Failed` or EOF becomes the error.
    pub fn expect_ready(&self) -> Result<()> {
        match self.recv()? {
            Some(Message::Ready) => Ok(()),
            Some(Message::Failed(msg)) => Err(Error::Init(msg)),
            Some(other) => Err(Error::Init(format!("unexpected sync message {other:?}"))),
            None => Err(Error::Init(
                "the container process exited during setup".into(),
            )),
        }
    }

    /// In a forked child: closes the child's copy of the runtime's end, so that the
    /// runtime exiting is seen as EOF. The child never drops it (it leaves by exec/_exit).
    pub fn close_in_child(&self) {
        crate::sys::fd::close_inherited(std::os::fd::AsRawFd::as_raw_fd(&self.fd));
    }

    pub fn expect_go(&self) -> Result<()> {
        match self.recv()? {
            Some(Message::Go) => Ok(()),
            other => Err(Error::Init(format!(
                "runtime went away before setup ({other:?})"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = pair().unwrap();
        a.send(&Message::Failed("mounting /proc: EPERM".into()))
            .unwrap();
        assert_eq!(
            b.expect_ready().unwrap_err().to_string(),
            "mounting /proc: EPERM"
        );
        b.send(&Message::Pid(42)).unwrap();
        assert_eq!(a.recv().unwrap(), Some(Message::Pid(42)));
        drop(b);
        assert_eq!(a.recv().unwrap(), None);
    }
}
