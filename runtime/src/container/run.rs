//! `run` in the foreground: create + start, tell systemd the service is ready, supervise
//! the container's process (signals, terminal, wall-time limit), say why it ended when
//! the OOM killer or the limit ended it, then delete. The script sandbox's `build` runs
//! its container through the same path.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{create, lifecycle, supervise, Paths};
use crate::error::Result;
use crate::log;

/// How a foreground container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The process's exit status (128+N for signal N).
    pub code: i32,
    /// It was killed at its wall-time limit.
    pub timed_out: bool,
    /// The OOM killer visited its group: (kills, memory.max).
    pub oom: Option<(u64, String)>,
    /// Forks refused at the task limit (`pids.events`).
    pub task_limit_hits: u64,
    /// Stopped by SIGTERM/SIGINT/SIGHUP under `kill_on_stop`.
    pub cancelled: bool,
}

/// Creates, starts and supervises `id` until its process ends; deletes it unless `keep`.
/// A failure before the process runs leaves nothing behind.
pub fn foreground(
    paths: &Paths,
    id: &str,
    opts: &create::CreateOptions,
    keep: bool,
    limit: Option<Duration>,
    kill_on_stop: bool,
) -> Result<Report> {
    let signals = supervise::block_signals()?;
    let created = create::create(paths, id, opts)?;
    if let Err(e) = lifecycle::start(paths, id) {
        let _ = lifecycle::delete(paths, id, true);
        return Err(e);
    }
    crate::fault::point("run.after-start");
    if let Some(notice) = &paths.policy_notice {
        log::warn(notice);
    }
    let mut relay = None;
    if let Some(proxy) = created.notify {
        log::debug(&format!(
            "container {id}: NOTIFY_SOCKET passed in; the container reports readiness"
        ));
        match proxy.relay_in_background() {
            Ok(r) => relay = Some(r),
            Err(e) => log::warn(&format!("container {id}: relaying NOTIFY_SOCKET: {e}")),
        }
    } else if let Err(e) = crate::notify::ready() {
        // Type=notify units: ready once the container's process runs. A failure to
        // notify is reported but does not stop the game server.
        log::warn(&format!("sd_notify READY=1: {e}"));
    }
    let deadline = limit.map(|l| Instant::now() + l);
    let outcome = supervise::supervise(
        &signals,
        created.init.pid(),
        created.console,
        deadline,
        kill_on_stop,
        Some(supervise::Settle {
            at: Instant::now() + SETTLE_AFTER,
            work: release_supervisor_memory,
        }),
    );
    if let Some(relay) = relay {
        relay.finish();
    }
    if matches!(outcome, Ok(o) if o.timed_out || o.cancelled) {
        // Everything left in the group goes too (processes outside init's namespace).
        let _ = lifecycle::kill(paths, id, Signal::SIGKILL, true);
    }
    if matches!(outcome, Ok(o) if o.timed_out) {
        say(&format!(
            "container {id}: killed after its wall-time limit of {} (--timeout)",
            human_duration(limit.unwrap_or_default())
        ));
    }
    let group = crate::state::read(&paths.root, id)
        .ok()
        .and_then(|st| st.cgroup)
        .map(|dir| crate::cgroups::Cgroup { dir });
    let oom = group.as_ref().and_then(|g| g.oom_kills());
    let task_limit_hits = group.as_ref().map_or(0, |g| g.task_limit_hits());
    if let Some((kills, max)) = &oom {
        say(&format!(
            "container {id}: process killed by the OOM killer, memory.max={max} ({kills} kill(s))"
        ));
    }
    let deleted = if keep {
        Ok(())
    } else {
        lifecycle::delete(paths, id, true)
    };
    let outcome = outcome?;
    deleted?;
    Ok(Report {
        code: outcome.code,
        timed_out: outcome.timed_out,
        cancelled: outcome.cancelled,
        oom,
        task_limit_hits,
    })
}

/// Owners must never have to guess why a server vanished: one line on stderr (and in
/// the log file, when there is one).
fn say(line: &str) {
    eprintln!("left4me-runtime: {line}");
    if log::has_file() {
        log::warn(line);
    }
}

/// `1h`, `90s`, `1m30s`, `250ms`: how limits are written on the command line.
pub fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    let mut out = String::new();
    for (n, unit) in [(h, "h"), (m, "m"), (s, "s")] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    if out.is_empty() {
        "0s".into()
    } else {
        out
    }
}

/// How long the container runs before its supervisor gives back what building it
/// needed: long enough that a short run (a build step, a test) never pays for it.
const SETTLE_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// From here on this process only waits (one per game server): what built the
/// container need not stay resident.
fn release_supervisor_memory() {
    match crate::sys::memory::release_clean_file_pages() {
        Ok(bytes) => log::debug(&format!(
            "supervisor: released {} KiB of mappings",
            bytes / 1024
        )),
        Err(e) => log::debug(&format!("supervisor: releasing clean pages: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::human_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_written() {
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::ZERO), "0s");
    }
}
