//! `events ID [--stats] [--interval D]`: runc's JSON lines. `stats` events every
//! interval, and an `oom` event as soon as `memory.events` counts a new OOM (the kernel
//! wakes a poll on that file when it changes, so no event waits for the next tick).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde_json::json;

use super::{require, Paths};
use crate::cgroups::stats;
use crate::error::{Error, IoContext, Result};
use crate::state::{self, Status};

/// Go-style durations as runc takes them: `5s`, `250ms`, `1m`, `1h`, or bare seconds;
/// `flag` names the option in errors.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration> {
    let bad = || Error::Usage(format!("{flag} {text:?}: expected e.g. 5s, 250ms, 1m"));
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !(0.001..=86_400.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn group_of(paths: &Paths, id: &str) -> Result<std::path::PathBuf> {
    let st = state::read(&paths.root, id)?;
    require(
        &st,
        &[Status::Created, Status::Running, Status::Paused],
        "report events",
    )?;
    st.cgroup
        .ok_or_else(|| Error::Unsupported(format!("container {id} has no cgroup")))
}

fn emit(out: &mut impl Write, event: serde_json::Value) -> Result<()> {
    writeln!(out, "{event}")
        .and_then(|()| out.flush())
        .at("standard output")
}

fn stats_event(id: &str, group: &Path) -> serde_json::Value {
    json!({"type": "stats", "id": id, "data": stats::collect(group)})
}

/// Prints one stats event.
pub fn stats_once(paths: &Paths, id: &str, out: &mut impl Write) -> Result<()> {
    let group = group_of(paths, id)?;
    emit(out, stats_event(id, &group))
}

/// Streams events until the container stops or is deleted.
pub fn stream(paths: &Paths, id: &str, interval: Duration, out: &mut impl Write) -> Result<()> {
    let group = group_of(paths, id)?;
    let events_file = File::open(group.join("memory.events")).ok();
    let mut seen = stats::oom_counters(&group).unwrap_or_default();
    let mut next_tick = Instant::now();
    loop {
        let alive = state::read(&paths.root, id)
            .map(|st| st.status() != Status::Stopped)
            .unwrap_or(false);
        if !alive || !group.exists() {
            return Ok(());
        }
        if let Some(now) = stats::oom_counters(&group) {
            if now.0 > seen.0 || now.1 > seen.1 {
                emit(out, json!({"type": "oom", "id": id}))?;
            }
            seen = now;
        }
        if Instant::now() >= next_tick {
            emit(out, stats_event(id, &group))?;
            next_tick = Instant::now() + interval;
        }
        // Wake at the next tick, on a memory.events change, or at least once a second
        // to notice that the container is gone.
        let wait = next_tick
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        match &events_file {
            Some(f) => {
                // Reading re-arms the kernel's change notification for this descriptor.
                let _ = f.read_at(&mut [0u8; 512], 0);
                let mut fds = [PollFd::new(f.as_fd(), PollFlags::POLLPRI)];
                let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        return Err(crate::sys::SysError::new("poll", "memory.events", e).into())
                    }
                }
            }
            None => std::thread::sleep(wait),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_like_runc() {
        assert_eq!(
            parse_duration("--interval", "5s").unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            parse_duration("--interval", "250ms").unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!(
            parse_duration("--interval", "1m").unwrap(),
            Duration::from_secs(60)
        );
        assert_eq!(
            parse_duration("--interval", "2").unwrap(),
            Duration::from_secs(2)
        );
        assert!(parse_duration("--interval", "0s").is_err());
        assert!(parse_duration("--interval", "5x").is_err());
        assert!(parse_duration("--interval", "").is_err());
    }
}
