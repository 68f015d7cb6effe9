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

/// `org.left4me.notify`: `runtime` (the default: the runtime says READY=1 once the
/// container's process has started) or `container` (the process says it itself, through
/// a socket the runtime passes in).
pub const ANNOTATION: &str = "org.left4me.notify";
/// Where the container finds the socket (`NOTIFY_SOCKET` in its environment).
pub const IN_CONTAINER: &str = "/run/notify/notify.sock";
const SOCKET_FILE: &str = "notify.sock";

/// Whether the config asks for the container to report readiness itself.
pub fn container_reports(spec: &oci_spec::runtime::Spec) -> crate::error::Result<bool> {
    match spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) {
        None => Ok(false),
        Some(v) if v == "runtime" => Ok(false),
        Some(v) if v == "container" => Ok(true),
        Some(v) => Err(crate::error::Error::config(
            format!("annotations.{ANNOTATION}"),
            format!("{v:?}: expected \"runtime\" or \"container\""),
        )),
    }
}

/// The runtime's end of a passed-in notify socket: a datagram socket in the state
/// directory, bind-mounted into the container. Messages are relayed to `$NOTIFY_SOCKET`
/// from the runtime itself — the unit's main process — because systemd ignores
/// notifications from processes outside the unit's cgroup (the game runs in its own
/// group) unless they come from the main PID, as runc's notify proxy does.
pub struct Proxy {
    socket: UnixDatagram,
    pub host_path: std::path::PathBuf,
}

impl Proxy {
    /// Binds the socket in `state_dir`, writable by the container's user whoever it is.
    pub fn bind(state_dir: &std::path::Path) -> Result<Proxy> {
        let socket =
            crate::init::with_socket_address(state_dir, SOCKET_FILE, |p| UnixDatagram::bind(p))?;
        let host_path = state_dir.join(SOCKET_FILE);
        std::fs::set_permissions(
            &host_path,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )
        .at(&host_path)?;
        Ok(Proxy { socket, host_path })
    }

    /// Adds the mounts (a small tmpfs at `/run/notify` holding the socket) and sets
    /// `NOTIFY_SOCKET` in the process's environment.
    pub fn pass_into(&self, spec: &mut oci_spec::runtime::Spec) -> crate::error::Result<()> {
        use oci_spec::runtime::MountBuilder;
        let bad = |e: oci_spec::OciSpecError| crate::error::Error::Init(e.to_string());
        let dir = std::path::Path::new(IN_CONTAINER)
            .parent()
            .expect("has a parent");
        let tmpfs = MountBuilder::default()
            .destination(dir)
            .typ("tmpfs")
            .source("tmpfs")
            .options(
                ["nosuid", "nodev", "noexec", "mode=755", "size=64k"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .map_err(bad)?;
        let bind = MountBuilder::default()
            .destination(IN_CONTAINER)
            .typ("bind")
            .source(&self.host_path)
            .options(
                ["bind", "nosuid", "nodev", "noexec"]
                    .map(String::from)
                    .to_vec(),
            )
            .build()
            .map_err(bad)?;
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.retain(|m| !m.destination().starts_with(dir));
        mounts.extend([tmpfs, bind]);
        spec.set_mounts(Some(mounts));
        let mut process = spec.process().clone().unwrap_or_default();
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
        env.push(format!("NOTIFY_SOCKET={IN_CONTAINER}"));
        process.set_env(Some(env));
        spec.set_process(Some(process));
        Ok(())
    }

    /// Relays what the container says to `$NOTIFY_SOCKET` on a thread of its own until
    /// [`Relay::finish`]; `MAINPID=` (a pid of the container's namespace) is replaced by
    /// the runtime's.
    pub fn relay_in_background(self) -> Result<Relay> {
        let control = self.socket.try_clone().at(&self.host_path)?;
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            // 0 bytes: finish() shut the socket down and the queue is drained.
            while let Ok(n @ 1..) = self.socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                let message = relayed(&text, std::process::id());
                if let Err(e) = send(&message) {
                    crate::log::warn(&format!("relaying sd_notify {message:?}: {e}"));
                }
            }
        });
        Ok(Relay { control, thread })
    }
}

/// A running relay.
pub struct Relay {
    control: UnixDatagram,
    thread: std::thread::JoinHandle<()>,
}

impl Relay {
    /// Relays what is still queued (the container may say STOPPING=1 and exit at once),
    /// then stops.
    pub fn finish(self) {
        let _ = self.control.shutdown(std::net::Shutdown::Read);
        let _ = self.thread.join();
    }
}

fn relayed(text: &str, main_pid: u32) -> String {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with("MAINPID="))
        .collect();
    let pid = format!("MAINPID={main_pid}");
    if lines.contains(&"READY=1") {
        lines.push(&pid);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::relayed;

    #[test]
    fn the_containers_pid_never_reaches_systemd() {
        assert_eq!(relayed("READY=1\nMAINPID=1\n", 42), "READY=1\nMAINPID=42");
        assert_eq!(relayed("STATUS=loading maps", 42), "STATUS=loading maps");
    }
}
