//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd passes
//! `NOTIFY_SOCKET` and waits for `READY=1`. `run` sends it once the container's process
//! has started, so a unit running `left4me-runtime run` is "active" exactly when the
//! game server process exists (not merely when the runtime does).

use std::os::unix::net::{SocketAddr, UnixDatagram};

use crate::error::{IoContext, Result};

/// Sends `message` to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket);
/// false when the variable is not set.
pub fn send(message: &str) -> Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let text = target.to_string_lossy().into_owned();
    let addr = match text.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(&text),
    }
    .at(format!("NOTIFY_SOCKET {text}"))?;
    let sock = UnixDatagram::unbound().at("notify socket")?;
    sock.send_to_addr(message.as_bytes(), &addr)
        .at(format!("NOTIFY_SOCKET {text}"))?;
    Ok(true)
}

/// `READY=1` with the runtime's pid as the service's main process.
pub fn ready() -> Result<bool> {
    send(&format!("READY=1\nMAINPID={}", std::process::id()))
}
