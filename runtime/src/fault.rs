//! Named crash points for the crash-consistency tests: built with the `fault-injection`
//! feature, the runtime kills itself with SIGKILL at the point named by `LEFT4ME_FAULT`
//! (no cleanup, no destructors — what a power cut or an OOM kill leaves). Without the
//! feature every point compiles to nothing.

/// Every point, in the order the operations pass them.
pub const POINTS: &[&str] = &[
    "create.after-id-block",
    "create.after-state-dir",
    "create.after-state-record",
    "create.after-cgroup",
    "create.after-limits",
    "create.after-init-spawn",
    "create.after-id-maps",
    "create.after-init-go",
    "create.after-init-ready",
    "create.after-created",
    "start.before-signal",
    "start.after-signal",
    "run.after-start",
    "delete.after-kill",
    "delete.after-cgroup",
    "delete.before-state-removal",
];

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    debug_assert!(POINTS.contains(&name), "unlisted fault point {name}");
    if std::env::var("LEFT4ME_FAULT").is_ok_and(|want| want == name) {
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
