//! OCI runtime hooks: the six stages, each run at the point and in the namespaces the
//! runtime spec names (see docs/architecture.md). A hook gets the container's state JSON
//! on stdin, exactly its `args` (args[0] is argv[0]) and `env` (nothing else), and is
//! killed when its `timeout` (seconds) passes. Its stdout and stderr go to the runtime's
//! log. A failing prestart/createRuntime/createContainer/startContainer hook is an
//! error that stops the container; a failing poststart/poststop hook is a warning.

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Prestart,
        Stage::CreateRuntime,
        Stage::CreateContainer,
        Stage::StartContainer,
        Stage::Poststart,
        Stage::Poststop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    /// Whether a failure stops the container (else it is only reported).
    pub fn fatal(self) -> bool {
        !matches!(self, Stage::Poststart | Stage::Poststop)
    }

    /// The hooks of this stage in `spec`, in order.
    pub fn hooks(self, spec: &Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks() else {
            return Vec::new();
        };
        #[allow(deprecated)]
        let list = match self {
            Stage::Prestart => h.prestart(),
            Stage::CreateRuntime => h.create_runtime(),
            Stage::CreateContainer => h.create_container(),
            Stage::StartContainer => h.start_container(),
            Stage::Poststart => h.poststart(),
            Stage::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// A memory file for a hook's output (no filesystem needed: startContainer hooks run
/// inside the container, whose /tmp may be read-only).
fn capture(name: &str) -> Result<std::fs::File> {
    let fd: OwnedFd = nix::sys::memfd::memfd_create(name, nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| crate::sys::SysError::new("memfd_create", name, e))?;
    Ok(std::fs::File::from(fd))
}

fn read_back(mut file: std::fs::File) -> String {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text
}

/// Runs one hook to completion (or its timeout). Returns why it failed, if it did.
fn run_one(hook: &Hook, state: &str) -> std::result::Result<(), String> {
    let path = hook.path();
    let mut cmd = Command::new(path);
    let args = hook.args().clone().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        match kv.split_once('=') {
            Some((k, v)) => cmd.env(k, v),
            None => cmd.env(kv, ""),
        };
    }
    let out = capture("hook-stdout").map_err(|e| e.to_string())?;
    let err = capture("hook-stderr").map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::piped())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?);
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut child = cmd.spawn().map_err(|e| format!("cannot run: {e}"))?;
    // The state is fed without blocking, inside the wait loop: a hook that never reads
    // a state bigger than the pipe must still meet its timeout.
    let mut stdin = child.stdin.take();
    if let Some(s) = &stdin {
        let _ = nix::fcntl::fcntl(
            s,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
    }
    let mut fed = 0usize;
    let status = loop {
        if let Some(s) = stdin.as_mut() {
            match s.write(&state.as_bytes()[fed..]) {
                Ok(n) => fed += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A hook that closes its stdin early: that is its business.
                Err(_) => fed = state.len(),
            }
            if fed >= state.len() {
                stdin = None;
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("waiting: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            break Err(format!(
                "timed out after {} s and was killed",
                hook.timeout().unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let (stdout, stderr) = (read_back(out), read_back(err));
    for line in stdout.lines().chain(stderr.lines()) {
        crate::log::info(&format!("hook {}: {line}", path.display()));
    }
    let why = match status {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (_, Some(sig)) => format!("killed by signal {sig}"),
            _ => "failed".to_string(),
        },
        Err(e) => e,
    };
    let detail = stderr.trim();
    Err(if detail.is_empty() {
        why
    } else {
        format!("{why}: {}", detail.lines().last().unwrap_or(detail))
    })
}

/// Runs `hooks` of `stage` in order with `state` on their stdin. A fatal stage stops at
/// the first failure and returns it; the others report each failure as a warning.
pub fn run(stage: Stage, hooks: &[Hook], state: &serde_json::Value) -> Result<()> {
    let state = state.to_string();
    for (i, hook) in hooks.iter().enumerate() {
        crate::debug!(
            "running {} hook {i}: {}",
            stage.name(),
            hook.path().display()
        );
        if let Err(why) = run_one(hook, &state) {
            let message = format!(
                "{} hook {i} ({}) {why}",
                stage.name(),
                hook.path().display()
            );
            if stage.fatal() {
                return Err(Error::Init(message));
            }
            crate::log::warn(&message);
        }
    }
    Ok(())
}

/// Whether `spec` has a hook at any stage.
pub fn any(spec: &Spec) -> bool {
    Stage::ALL.iter().any(|s| !s.hooks(spec).is_empty())
}

/// Whether init must stop before pivot_root for hooks (prestart, createRuntime,
/// createContainer) or keep the state document for startContainer hooks.
pub fn any_before_start(spec: &Spec) -> bool {
    [
        Stage::Prestart,
        Stage::CreateRuntime,
        Stage::CreateContainer,
        Stage::StartContainer,
    ]
    .iter()
    .any(|s| !s.hooks(spec).is_empty())
}

/// The state document a stage's hooks get: `state` with its status and pid as the
/// spec defines them for that stage.
pub fn state_for(
    mut state: serde_json::Value,
    stage: Stage,
    pid: Option<i32>,
) -> serde_json::Value {
    let status = match stage {
        Stage::Prestart | Stage::CreateRuntime | Stage::CreateContainer => "creating",
        Stage::StartContainer => "created",
        Stage::Poststart => "running",
        Stage::Poststop => "stopped",
    };
    state["status"] = status.into();
    if let Some(pid) = pid {
        state["pid"] = pid.into();
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(json: serde_json::Value) -> Hook {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_hook_gets_state_args_and_only_its_env() {
        let dir = std::env::temp_dir().join(format!("l4m-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hook(serde_json::json!({
            "path": "/bin/sh",
            "args": ["my-hook", "-c", format!("echo \"$(head -c 7 /proc/$$/cmdline) $0 $FOO ${{CARGO_MANIFEST_DIR:-clean}}\" > {0}; cat >> {0}", out.display()), "arg1"],
            "env": ["FOO=bar"]
        }));
        run(Stage::CreateRuntime, &[h], &serde_json::json!({"id": "x"})).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        // argv[0] is args[0]; $0 of `sh -c` is the next argument; FOO came through and
        // nothing of the runtime's environment (cargo sets CARGO_MANIFEST_DIR for us).
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(text.starts_with("my-hook arg1 bar clean\n"), "{text}");
        assert!(text.ends_with("{\"id\":\"x\"}"), "{text}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn failures_and_timeouts_name_the_hook() {
        let fail = hook(
            serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo bad thing >&2; exit 3"]}),
        );
        let err = run(
            Stage::Prestart,
            std::slice::from_ref(&fail),
            &serde_json::json!({}),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("prestart hook 0 (/bin/sh) exited with status 3: bad thing"),
            "{text}"
        );
        // Non-fatal stages only warn.
        run(Stage::Poststop, &[fail], &serde_json::json!({})).unwrap();
        let slow =
            hook(serde_json::json!({"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}));
        let start = Instant::now();
        let text = run(Stage::CreateRuntime, &[slow], &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(text.contains("timed out after 1 s"), "{text}");
        assert!(start.elapsed() < Duration::from_secs(20));
        let missing = hook(serde_json::json!({"path": "/nonexistent/hook"}));
        let text = run(Stage::StartContainer, &[missing], &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(text.contains("cannot run"), "{text}");
    }
}
