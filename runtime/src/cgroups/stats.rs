//! A group's figures as runc's `events --stats` prints them (cpu, memory, pids, io),
//! read from the cgroup v2 files. A controller that is not enabled for the group simply
//! has no section.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

/// `key value` lines (cpu.stat, memory.stat, memory.events) as a map.
pub fn flat_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// A single-value file; `max` reads as u64::MAX (runc's convention for "no limit").
fn number(dir: &Path, file: &str) -> Option<u64> {
    let text = read(dir, file)?;
    match text.trim() {
        "max" => Some(u64::MAX),
        v => v.parse().ok(),
    }
}

fn cpu(dir: &Path) -> Option<Value> {
    let s = flat_keyed(&read(dir, "cpu.stat")?);
    let ns = |k: &str| s.get(k).copied().unwrap_or(0) * 1000;
    Some(json!({
        "usage": {"total": ns("usage_usec"), "user": ns("user_usec"), "kernel": ns("system_usec")},
        "throttling": {
            "periods": s.get("nr_periods").copied().unwrap_or(0),
            "throttledPeriods": s.get("nr_throttled").copied().unwrap_or(0),
            "throttledTime": ns("throttled_usec"),
        },
    }))
}

fn memory(dir: &Path) -> Option<Value> {
    let usage = number(dir, "memory.current")?;
    let raw = read(dir, "memory.stat")
        .map(|t| flat_keyed(&t))
        .unwrap_or_default();
    let events = read(dir, "memory.events")
        .map(|t| flat_keyed(&t))
        .unwrap_or_default();
    let mut out = json!({
        "usage": {
            "usage": usage,
            "limit": number(dir, "memory.max").unwrap_or(u64::MAX),
            "max": number(dir, "memory.peak").unwrap_or(0),
            "failcnt": events.get("max").copied().unwrap_or(0),
        },
        "raw": raw,
    });
    if let Some(swap) = number(dir, "memory.swap.current") {
        out["swap"] = json!({
            "usage": swap,
            "limit": number(dir, "memory.swap.max").unwrap_or(u64::MAX),
        });
    }
    out["oom"] = json!(events.get("oom").copied().unwrap_or(0));
    out["oomKill"] = json!(events.get("oom_kill").copied().unwrap_or(0));
    Some(out)
}

fn pids(dir: &Path) -> Option<Value> {
    Some(json!({
        "current": number(dir, "pids.current")?,
        "limit": number(dir, "pids.max").unwrap_or(u64::MAX),
    }))
}

/// io.stat (`MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..`) in runc's blkio layout.
fn io(dir: &Path) -> Option<Value> {
    let text = read(dir, "io.stat")?;
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some((major, minor)) = parts.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse::<u64>(), minor.parse::<u64>()) else {
            continue;
        };
        for kv in parts {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(value) = v.parse::<u64>() else {
                continue;
            };
            let entry =
                |op: &str| json!({"major": major, "minor": minor, "op": op, "value": value});
            match k {
                "rbytes" => bytes.push(entry("Read")),
                "wbytes" => bytes.push(entry("Write")),
                "rios" => ios.push(entry("Read")),
                "wios" => ios.push(entry("Write")),
                _ => {}
            }
        }
    }
    Some(json!({"ioServiceBytesRecursive": bytes, "ioServicedRecursive": ios}))
}

/// Every section the group has.
pub fn collect(dir: &Path) -> Value {
    let mut out = Map::new();
    for (name, value) in [
        ("cpu", cpu(dir)),
        ("memory", memory(dir)),
        ("pids", pids(dir)),
        ("blkio", io(dir)),
    ] {
        if let Some(v) = value {
            out.insert(name.to_string(), v);
        }
    }
    Value::Object(out)
}

/// The `(oom, oom_kill)` counters of memory.events, if the group has the file.
pub fn oom_counters(dir: &Path) -> Option<(u64, u64)> {
    let events = flat_keyed(&read(dir, "memory.events")?);
    Some((
        events.get("oom").copied().unwrap_or(0),
        events.get("oom_kill").copied().unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_come_from_the_v2_files() {
        let dir = std::env::temp_dir().join(format!("l4m-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = [
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 2\nthrottled_usec 30\n"),
            ("memory.current", "4096\n"),
            ("memory.max", "max\n"),
            ("memory.stat", "anon 1024\nfile 2048\n"),
            ("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"),
            ("pids.current", "3\n"),
            ("pids.max", "64\n"),
            ("io.stat", "8:0 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n"),
        ];
        for (f, t) in files {
            std::fs::write(dir.join(f), t).unwrap();
        }
        let s = collect(&dir);
        assert_eq!(s["cpu"]["usage"]["total"], 1_500_000);
        assert_eq!(s["cpu"]["throttling"]["throttledTime"], 30_000);
        assert_eq!(s["memory"]["usage"]["usage"], 4096);
        assert_eq!(s["memory"]["usage"]["limit"], u64::MAX);
        assert_eq!(s["memory"]["usage"]["failcnt"], 3);
        assert_eq!(s["memory"]["raw"]["file"], 2048);
        assert_eq!(s["memory"]["oomKill"], 1);
        assert_eq!(s["pids"], json!({"current": 3, "limit": 64}));
        assert_eq!(
            s["blkio"]["ioServiceBytesRecursive"][1],
            json!({"major": 8, "minor": 0, "op": "Write", "value": 1024})
        );
        assert_eq!(oom_counters(&dir), Some((1, 1)));
        std::fs::remove_file(dir.join("pids.current")).unwrap();
        assert!(collect(&dir).get("pids").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
