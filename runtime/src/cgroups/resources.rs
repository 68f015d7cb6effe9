//! `linux.resources` as cgroup v2 files: every OCI field that means something on v2 is
//! converted (with runc's formulas) into `(controller, file, value)` settings, checked
//! before anything is created — an invalid value fails `create` naming its key — and
//! written into the group before the container's first process exists.
//!
//! cgroups-rs is not used for this: on v2 it writes `io.bfq.weight` instead of
//! `io.weight`, ignores `unified`, and fails on any `devices` list. Writing the files
//! directly is shorter than wrapping those gaps.

use std::collections::BTreeSet;
use std::path::Path;

use oci_spec::runtime::{LinuxResources, LinuxThrottleDevice, LinuxWeightDevice};

use crate::error::{Error, IoContext, Result};
use crate::process::parse_cpu_list;

/// One file to write in the container's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub controller: &'static str,
    pub file: String,
    pub value: String,
    /// The config key it comes from, for errors.
    pub key: String,
}

fn setting(controller: &'static str, file: &str, value: String, key: &str) -> Setting {
    Setting {
        controller,
        file: file.to_string(),
        value,
        key: format!("linux.resources.{key}"),
    }
}

/// runc's conversion of cgroup v1 `cpu.shares` (2..262144) to v2 `cpu.weight` (1..10000).
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// runc's conversion of blkio weight (10..1000) to `io.weight` (1..10000).
pub fn blkio_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    1 + (u64::from(weight.clamp(10, 1000)) - 10) * 9999 / 990
}

/// -1 is OCI's "no limit"; anything more negative is a mistake, not a wish.
fn checked(value: i64, key: &str) -> Result<i64> {
    if value < -1 {
        return Err(Error::config(
            format!("linux.resources.{key}"),
            format!("{value}: -1 means no limit; other negative values are invalid"),
        ));
    }
    Ok(value)
}

fn limit(value: i64) -> String {
    if value < 0 {
        "max".into()
    } else {
        value.to_string()
    }
}

/// The settings for `resources`, in the order they are written.
pub fn settings(resources: &LinuxResources) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            out.push(setting(
                "cpu",
                "cpu.weight",
                shares_to_weight(shares).to_string(),
                "cpu.shares",
            ));
        }
        let quota = cpu.quota();
        let period = cpu.period();
        if quota.is_some_and(|q| q != 0) || period.is_some_and(|p| p != 0) {
            let period = period.filter(|p| *p != 0).unwrap_or(100_000);
            if !(1000..=1_000_000).contains(&period) {
                return Err(Error::config(
                    "linux.resources.cpu.period",
                    format!("{period}: must be 1000-1000000 microseconds"),
                ));
            }
            let quota = match quota {
                Some(q) if q > 0 => {
                    if q < 1000 {
                        return Err(Error::config(
                            "linux.resources.cpu.quota",
                            format!("{q}: must be at least 1000 microseconds"),
                        ));
                    }
                    q.to_string()
                }
                _ => "max".into(),
            };
            out.push(setting(
                "cpu",
                "cpu.max",
                format!("{quota} {period}"),
                "cpu.quota",
            ));
        }
        if let Some(burst) = cpu.burst() {
            out.push(setting(
                "cpu",
                "cpu.max.burst",
                burst.to_string(),
                "cpu.burst",
            ));
        }
        if let Some(idle) = cpu.idle() {
            if !(0..=1).contains(&idle) {
                return Err(Error::config("linux.resources.cpu.idle", "must be 0 or 1"));
            }
            out.push(setting("cpu", "cpu.idle", idle.to_string(), "cpu.idle"));
        }
        if cpu.realtime_runtime().is_some_and(|r| r != 0)
            || cpu.realtime_period().is_some_and(|p| p != 0)
        {
            return Err(Error::config(
                "linux.resources.cpu.realtimeRuntime",
                "real-time CPU limits do not exist on cgroup v2",
            ));
        }
        for (field, value) in [("cpus", cpu.cpus()), ("mems", cpu.mems())] {
            if let Some(list) = value.as_deref().filter(|s| !s.is_empty()) {
                parse_cpu_list(list)
                    .map_err(|m| Error::config(format!("linux.resources.cpu.{field}"), m))?;
                out.push(setting(
                    "cpuset",
                    &format!("cpuset.{field}"),
                    list.to_string(),
                    &format!("cpu.{field}"),
                ));
            }
        }
    }
    if let Some(mem) = resources.memory() {
        if let Some(l) = mem.limit() {
            let l = checked(l, "memory.limit")?;
            out.push(setting("memory", "memory.max", limit(l), "memory.limit"));
        }
        if let Some(r) = mem.reservation() {
            let r = checked(r, "memory.reservation")?;
            out.push(setting(
                "memory",
                "memory.low",
                limit(r),
                "memory.reservation",
            ));
        }
        if let Some(swap) = mem.swap() {
            let swap = checked(swap, "memory.swap")?;
            // OCI's swap is memory+swap (v1's memsw); v2 limits swap alone.
            let value = match (swap, mem.limit()) {
                (s, _) if s < 0 => "max".to_string(),
                (s, Some(l)) if l >= 0 => {
                    if s < l {
                        return Err(Error::config(
                            "linux.resources.memory.swap",
                            format!("{s} is below memory.limit {l} (swap counts memory+swap)"),
                        ));
                    }
                    (s - l).to_string()
                }
                (_, _) => {
                    return Err(Error::config(
                        "linux.resources.memory.swap",
                        "needs memory.limit (swap counts memory+swap)",
                    ))
                }
            };
            out.push(setting("memory", "memory.swap.max", value, "memory.swap"));
        }
        if mem.swappiness().is_some_and(|s| s != 0) {
            return Err(Error::config(
                "linux.resources.memory.swappiness",
                "per-group swappiness does not exist on cgroup v2",
            ));
        }
    }
    if let Some(pids) = resources.pids() {
        checked(pids.limit(), "pids.limit")?;
        out.push(setting(
            "pids",
            "pids.max",
            limit(if pids.limit() <= 0 { -1 } else { pids.limit() }),
            "pids.limit",
        ));
    }
    if let Some(io) = resources.block_io() {
        let mut weights = Vec::new();
        if let Some(w) = io.weight().filter(|w| *w > 0) {
            weights.push(format!("default {}", blkio_to_io_weight(w)));
        }
        for d in io.weight_device().iter().flatten() {
            weights.push(weight_device(d)?);
        }
        for w in weights {
            out.push(setting("io", "io.weight", w, "blockIO.weight"));
        }
        let throttles: [(&str, &Option<Vec<LinuxThrottleDevice>>); 4] = [
            ("rbps", io.throttle_read_bps_device()),
            ("wbps", io.throttle_write_bps_device()),
            ("riops", io.throttle_read_iops_device()),
            ("wiops", io.throttle_write_iops_device()),
        ];
        for (name, devices) in throttles {
            for d in devices.iter().flatten() {
                let value = format!(
                    "{}:{} {name}={}",
                    d.major(),
                    d.minor(),
                    limit(d.rate() as i64)
                );
                out.push(setting("io", "io.max", value, "blockIO.throttle"));
            }
        }
    }
    for h in resources.hugepage_limits().iter().flatten() {
        let size = h.page_size();
        if size.is_empty() || !size.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::config(
                "linux.resources.hugepageLimits.pageSize",
                format!("{size:?}"),
            ));
        }
        out.push(setting(
            "hugetlb",
            &format!("hugetlb.{size}.max"),
            h.limit().to_string(),
            "hugepageLimits",
        ));
    }
    for (key, value) in resources.unified().iter().flatten() {
        out.push(unified(key, value)?);
    }
    Ok(out)
}

fn weight_device(d: &LinuxWeightDevice) -> Result<String> {
    let w = d
        .weight()
        .ok_or_else(|| Error::config("linux.resources.blockIO.weightDevice", "weight missing"))?;
    Ok(format!(
        "{}:{} {}",
        d.major(),
        d.minor(),
        blkio_to_io_weight(w)
    ))
}

/// The controllers whose files are written verbatim through `unified`.
const UNIFIED_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuset", "memory", "pids", "io", "hugetlb", "rdma", "misc",
];

fn unified(key: &str, value: &str) -> Result<Setting> {
    let field = format!("linux.resources.unified.{key}");
    let valid_name = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
        && !key.contains("..");
    let controller = key.split('.').next().unwrap_or_default();
    let Some(controller) = UNIFIED_CONTROLLERS
        .iter()
        .find(|c| **c == controller)
        .copied()
    else {
        return Err(Error::config(
            field,
            "not a file of a cgroup v2 controller (cgroup.* core files are the runtime's)",
        ));
    };
    if !valid_name || !key.contains('.') {
        return Err(Error::config(field, "not a cgroup file name"));
    }
    Ok(Setting {
        controller,
        file: key.to_string(),
        value: value.to_string(),
        key: field,
    })
}

/// The controllers `settings` need.
pub fn controllers(settings: &[Setting]) -> BTreeSet<&'static str> {
    settings.iter().map(|s| s.controller).collect()
}

/// Makes `controllers` available in `group` (enabling them in every ancestor's
/// `cgroup.subtree_control` from `root` down) and writes `settings` into it. A missing
/// controller is an error naming it and the key that needed it.
///
/// `delegated` is the group the runtime may reorganise (its own): if controllers must be
/// enabled there while it holds processes, they move to its `supervisor/` leaf first.
pub fn apply(
    root: &Path,
    group: &Path,
    settings: &[Setting],
    delegated: Option<&Path>,
) -> Result<()> {
    // "No limit" needs no controller: podman sends `pids.limit: 0` for "unlimited", and
    // that must not fail on a host without the pids controller.
    let at_root = read_set(&root.join("cgroup.controllers"))?;
    let settings: Vec<Setting> = settings
        .iter()
        .filter(|s| at_root.contains(s.controller) || !is_unlimited(&s.value))
        .cloned()
        .collect();
    let settings = settings.as_slice();
    let needed = controllers(settings);
    if needed.is_empty() {
        return Ok(());
    }
    let rel = group.strip_prefix(root).unwrap_or(group);
    let mut dir = root.to_path_buf();
    for part in rel.components() {
        let available = read_set(&dir.join("cgroup.controllers"))?;
        let enabled = read_set(&dir.join("cgroup.subtree_control"))?;
        for c in &needed {
            if !available.contains(*c) {
                let key = &settings
                    .iter()
                    .find(|s| s.controller == *c)
                    .expect("needed")
                    .key;
                return Err(Error::config(
                    key.clone(),
                    format!("the {c} controller is not available in {}", dir.display()),
                ));
            }
            if !enabled.contains(*c) && delegated == Some(dir.as_path()) && dir != root {
                let holds_processes = !crate::cgroups::Cgroup { dir: dir.clone() }
                    .pids()?
                    .is_empty();
                if holds_processes {
                    crate::cgroups::vacate_into_supervisor(&dir)?;
                }
            }
            // Written even when already listed: the kernel lists a controller as soon as
            // another writer asked for it, before it has created the children's files; a
            // write (a no-op then) waits until that writer is done. Skipping it, 20
            // concurrent creates found their cpuset.cpus missing (the VM's cpus test).
            // An ancestor the caller may not write (rootless, above its delegated
            // subtree) with the controller listed is fine as it is.
            let path = dir.join("cgroup.subtree_control");
            let written = write_existing(&path, &format!("+{c}"));
            let not_ours = |e: &std::io::Error| {
                matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
            };
            if let Err(e) = written.or_else(|e| {
                if enabled.contains(*c) && not_ours(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }) {
                let why = if e.raw_os_error() == Some(libc::EBUSY) {
                    " (the group holds processes: cgroup v2 allows controllers only \
                     for groups without processes of their own)"
                } else {
                    ""
                };
                return Err(Error::config(
                    key_for(settings, c),
                    format!("enabling {c} in {}: {e}{why}", path.display()),
                ));
            }
        }
        dir.push(part);
    }
    for s in settings {
        let path = group.join(&s.file);
        write_existing(&path, &s.value).at(&path).map_err(|e| {
            Error::config(s.key.clone(), format!("{} = {:?}: {e}", s.file, s.value))
        })?;
    }
    Ok(())
}

/// Writes a control file that must exist (no `O_CREAT`: on cgroupfs a missing file would
/// otherwise read as "permission denied").
fn write_existing(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// `max` (or `max PERIOD` for cpu.max): the kernel's default, i.e. no limit.
fn is_unlimited(value: &str) -> bool {
    value == "max" || value.starts_with("max ")
}

fn key_for(settings: &[Setting], controller: &str) -> String {
    settings
        .iter()
        .find(|s| s.controller == controller)
        .map(|s| s.key.clone())
        .unwrap_or_default()
}

fn read_set(path: &Path) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).at(path)?;
    Ok(text.split_whitespace().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    fn files(r: serde_json::Value) -> Vec<(String, String)> {
        settings(&parse(r))
            .unwrap()
            .into_iter()
            .map(|s| (s.file, s.value))
            .collect()
    }

    #[test]
    fn runc_formulas_convert_v1_values() {
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(blkio_to_io_weight(10), 1);
        assert_eq!(blkio_to_io_weight(1000), 10_000);
        assert_eq!(blkio_to_io_weight(500), 4950);
    }

    #[test]
    fn every_resource_maps_to_its_v2_file() {
        let f = files(serde_json::json!({
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0", "idle": 0},
            "memory": {"limit": 2147483648i64, "reservation": 1073741824, "swap": 3221225472i64},
            "pids": {"limit": 256},
            "blockIO": {"weight": 500, "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "unified": {"memory.high": "1610612736", "memory.oom.group": "1"}
        }));
        let want = [
            ("cpu.weight", "39"),
            ("cpu.max", "50000 100000"),
            ("cpu.idle", "0"),
            ("cpuset.cpus", "0-1"),
            ("cpuset.mems", "0"),
            ("memory.max", "2147483648"),
            ("memory.low", "1073741824"),
            ("memory.swap.max", "1073741824"),
            ("pids.max", "256"),
            ("io.weight", "default 4950"),
            ("io.max", "8:0 rbps=1048576"),
            ("hugetlb.2MB.max", "0"),
            ("memory.high", "1610612736"),
            ("memory.oom.group", "1"),
        ];
        for (file, value) in want {
            assert!(
                f.contains(&(file.to_string(), value.to_string())),
                "{file}={value} missing from {f:?}"
            );
        }
    }

    #[test]
    fn unlimited_values_write_max() {
        let f = files(
            serde_json::json!({"memory": {"limit": -1, "swap": -1}, "pids": {"limit": 0}, "cpu": {"quota": -1}}),
        );
        assert!(f.contains(&("memory.max".into(), "max".into())));
        assert!(f.contains(&("memory.swap.max".into(), "max".into())));
        assert!(f.contains(&("pids.max".into(), "max".into())));
        assert!(f.contains(&("cpu.max".into(), "max 100000".into())));
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            (
                serde_json::json!({"cpu": {"cpus": "3-1"}}),
                "linux.resources.cpu.cpus",
            ),
            (
                serde_json::json!({"cpu": {"quota": 10, "period": 100000}}),
                "linux.resources.cpu.quota",
            ),
            (
                serde_json::json!({"cpu": {"period": 10}}),
                "linux.resources.cpu.period",
            ),
            (
                serde_json::json!({"memory": {"limit": 100, "swap": 50}}),
                "linux.resources.memory.swap",
            ),
            (
                serde_json::json!({"unified": {"cgroup.procs": "1"}}),
                "linux.resources.unified.cgroup.procs",
            ),
            (
                serde_json::json!({"unified": {"memory/../x": "1"}}),
                "linux.resources.unified",
            ),
            (
                serde_json::json!({"cpu": {"realtimeRuntime": 5}}),
                "realtimeRuntime",
            ),
        ];
        for (r, key) in cases {
            let err = settings(&parse(r.clone())).unwrap_err().to_string();
            assert!(err.contains(key), "{r}: {err}");
        }
    }

    #[test]
    fn devices_alone_need_no_controller() {
        let r = parse(serde_json::json!({"devices": [{"allow": false, "access": "rwm"}]}));
        assert!(settings(&r).unwrap().is_empty());
    }
}
