//! The container's view of CPUs follows its cpuset: `/sys/devices/system/cpu/online`
//! (what glibc's `get_nprocs`, `nproc --all`-less tools and Python's `os.cpu_count()`
//! read) lists only its CPUs, and `/proc/cpuinfo` only their processor blocks, copied
//! verbatim (so `flags` — srcds checks `constant_tsc` — stays intact).
//!
//! The files are generated in the container's state directory and bound read-only over
//! the originals, like `prepare`d mounts: cloned on the host, attached by init. `update`
//! rewrites them in place (the bind mounts hold the inodes) when the cpuset changes.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::process::parse_cpu_list;
use crate::sys::mount_api::{attr, clone_tree, set_attr, SetAttr};

pub const ONLINE: &str = "/sys/devices/system/cpu/online";
pub const CPUINFO: &str = "/proc/cpuinfo";
const ONLINE_FILE: &str = "cpu-online";
const CPUINFO_FILE: &str = "cpuinfo";

/// A generated file, cloned as a detached read-only bind mount, and where it goes.
pub struct CpuView {
    pub dest: PathBuf,
    pub mount: OwnedFd,
}

/// `0-3,6` from a set of CPUs.
pub fn format_cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().expect("peeked");
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The processor blocks of `cpuinfo` whose `processor` number is in `cpus`, verbatim.
pub fn filter_cpuinfo(cpuinfo: &str, cpus: &BTreeSet<usize>) -> String {
    let mut out = String::new();
    for block in cpuinfo.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let number = block.lines().find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "processor").then(|| value.trim().parse::<usize>().ok())?
        });
        if number.is_none_or(|n| cpus.contains(&n)) {
            out.push_str(block.trim_start_matches('\n'));
            out.push_str("\n\n");
        }
    }
    out
}

fn cpu_set(list: &str) -> Option<BTreeSet<usize>> {
    parse_cpu_list(list.trim())
        .ok()
        .map(|v| v.into_iter().collect())
}

/// The CPUs of `group` when they are fewer than the host's online CPUs.
fn restricted(group: &Path) -> Option<BTreeSet<usize>> {
    let effective = cpu_set(&std::fs::read_to_string(group.join("cpuset.cpus.effective")).ok()?)?;
    let online = cpu_set(&std::fs::read_to_string(ONLINE).ok()?)?;
    (effective != online && !effective.is_empty()).then_some(effective)
}

/// Writes the view files for `cpus` into `state_dir` (in place, keeping the inodes).
fn write_files(state_dir: &Path, cpus: &BTreeSet<usize>) -> Result<()> {
    let online = state_dir.join(ONLINE_FILE);
    std::fs::write(&online, format!("{}\n", format_cpu_list(cpus))).at(&online)?;
    let host = std::fs::read_to_string(CPUINFO).at(CPUINFO)?;
    let cpuinfo = state_dir.join(CPUINFO_FILE);
    std::fs::write(&cpuinfo, filter_cpuinfo(&host, cpus)).at(&cpuinfo)
}

/// The views for a container in `group`; none when its cpuset is the whole machine.
pub fn prepare(state_dir: &Path, group: Option<&Path>) -> Result<Vec<CpuView>> {
    let Some(cpus) = group.and_then(restricted) else {
        return Ok(Vec::new());
    };
    write_files(state_dir, &cpus)?;
    [(ONLINE_FILE, ONLINE), (CPUINFO_FILE, CPUINFO)]
        .into_iter()
        .map(|(file, dest)| {
            let source = state_dir.join(file);
            let mount = clone_tree(None, &source, false)?;
            let change = SetAttr {
                set: attr::RDONLY | attr::NOSUID | attr::NODEV | attr::NOEXEC,
                ..Default::default()
            };
            set_attr(mount.as_fd(), change, &source)?;
            Ok(CpuView {
                dest: PathBuf::from(dest),
                mount,
            })
        })
        .collect()
}

/// After `update`: rewrites the views of a container that has them.
pub fn refresh(state_dir: &Path, group: &Path) -> Result<()> {
    if !state_dir.join(ONLINE_FILE).exists() {
        return Ok(());
    }
    let cpus = restricted(group)
        .or_else(|| cpu_set(&std::fs::read_to_string(ONLINE).ok()?))
        .unwrap_or_default();
    write_files(state_dir, &cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_compressed_into_ranges() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(format_cpu_list(&set(&[0, 1, 2, 3, 6])), "0-3,6");
        assert_eq!(format_cpu_list(&set(&[5])), "5");
        assert_eq!(format_cpu_list(&set(&[1, 3, 4])), "1,3-4");
    }

    #[test]
    fn cpuinfo_keeps_only_the_cpuset_and_every_flag() {
        let host = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu tsc constant_tsc\n\n\
                    processor\t: 1\nmodel name\t: X\nflags\t\t: fpu tsc constant_tsc\n\n\
                    processor\t: 2\nmodel name\t: X\nflags\t\t: fpu tsc constant_tsc\n\n";
        let out = filter_cpuinfo(host, &BTreeSet::from([1]));
        assert_eq!(
            out,
            "processor\t: 1\nmodel name\t: X\nflags\t\t: fpu tsc constant_tsc\n\n"
        );
        let real = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        let all: BTreeSet<usize> = (0..4096).collect();
        assert_eq!(filter_cpuinfo(&real, &all), real);
    }
}
