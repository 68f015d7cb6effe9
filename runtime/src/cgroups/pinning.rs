//! Automatic core pinning for game servers (`org.left4me.cpuset=auto`): `create` picks
//! one CPU for the container from its parent group's `cpuset.cpus.effective` — the CPU
//! with the fewest instances, preferring a whole idle physical core (no instance on any
//! SMT sibling) while one remains. Choices are recorded in a table in the state root,
//! under its lock, so containers created at the same moment spread evenly; entries of
//! containers that no longer exist are dropped at the next choice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::process::parse_cpu_list;
use crate::table::LockedTable;

pub const ANNOTATION: &str = "org.left4me.cpuset";
pub const TABLE_FILE: &str = "cpus.json";

/// Whether the config asks for automatic pinning (`auto`); other values are errors.
pub fn wanted(spec: &oci_spec::runtime::Spec) -> Result<bool> {
    let Some(value) = spec.annotations().as_ref().and_then(|a| a.get(ANNOTATION)) else {
        return Ok(false);
    };
    let field = format!("annotations.{ANNOTATION}");
    if value != "auto" {
        return Err(Error::config(
            field,
            format!("{value:?}: the only value is \"auto\""),
        ));
    }
    let cpus = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| c.cpus().clone());
    if cpus.is_some_and(|c| !c.is_empty()) {
        return Err(Error::config(
            field,
            "conflicts with linux.resources.cpu.cpus (choose one)",
        ));
    }
    Ok(true)
}

/// Which CPUs share a physical core.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// CPU → the CPUs of its core (itself included).
    pub siblings: BTreeMap<usize, BTreeSet<usize>>,
}

impl Topology {
    /// Reads `cpuN/topology/thread_siblings_list` under `sysfs_cpu` (normally
    /// /sys/devices/system/cpu) for each of `cpus`; a CPU without the file is its own core.
    pub fn read(sysfs_cpu: &Path, cpus: &[usize]) -> Topology {
        let siblings = cpus
            .iter()
            .map(|cpu| {
                let path = sysfs_cpu.join(format!("cpu{cpu}/topology/thread_siblings_list"));
                let set = std::fs::read_to_string(path)
                    .ok()
                    .and_then(|t| parse_cpu_list(t.trim()).ok())
                    .map(|v| v.into_iter().collect())
                    .unwrap_or_else(|| BTreeSet::from([*cpu]));
                (*cpu, set)
            })
            .collect();
        Topology { siblings }
    }

    fn core_of(&self, cpu: usize) -> BTreeSet<usize> {
        self.siblings
            .get(&cpu)
            .cloned()
            .unwrap_or_else(|| BTreeSet::from([cpu]))
    }
}

/// The CPU for one more instance, given the allowed CPUs and how many instances each
/// CPU already has: a CPU whose whole core is idle first, else the CPU with the fewest
/// instances, then the one whose core is least busy, then the lowest number.
pub fn choose(allowed: &[usize], topo: &Topology, load: &BTreeMap<usize, usize>) -> Option<usize> {
    let on = |cpu: &usize| load.get(cpu).copied().unwrap_or(0);
    let core_load = |cpu: usize| {
        topo.core_of(cpu)
            .iter()
            .filter(|c| allowed.contains(c))
            .map(on)
            .sum::<usize>()
    };
    allowed
        .iter()
        .copied()
        .min_by_key(|cpu| (on(cpu), core_load(*cpu), *cpu))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    /// Container id → its CPU.
    pins: BTreeMap<String, usize>,
}

/// The pinning table of a state root.
pub struct Pins {
    table: LockedTable,
    root: PathBuf,
}

impl Pins {
    pub fn new(state_root: &Path) -> Pins {
        Pins {
            table: LockedTable::new(state_root.join(TABLE_FILE)),
            root: state_root.to_path_buf(),
        }
    }

    /// Entries of containers that are gone (no state directory) or stopped are dropped;
    /// a state that cannot be read right now (a create half-way) keeps its entry.
    fn live(&self, table: &mut Table) {
        table
            .pins
            .retain(|id, _| match crate::state::read(&self.root, id) {
                Ok(st) => st.status() != crate::state::Status::Stopped,
                Err(crate::error::Error::NotFound(_)) => false,
                Err(_) => true,
            });
    }

    /// Chooses (or returns the existing) CPU of `id` among `allowed`, and records it.
    pub fn assign(&self, id: &str, allowed: &[usize], topo: &Topology) -> Result<usize> {
        let _lock = self.table.lock()?;
        let mut table: Table = self.table.read()?;
        if let Some(cpu) = table.pins.get(id).filter(|c| allowed.contains(c)) {
            return Ok(*cpu);
        }
        table.pins.remove(id);
        self.live(&mut table);
        let mut load = BTreeMap::new();
        for cpu in table.pins.values() {
            *load.entry(*cpu).or_insert(0) += 1;
        }
        let cpu = choose(allowed, topo, &load)
            .ok_or_else(|| Error::Unsupported("no CPU available for pinning".into()))?;
        table.pins.insert(id.to_string(), cpu);
        self.table.write(&table)?;
        Ok(cpu)
    }

    /// Forgets `id` (at `delete`, or when `create` fails). Idempotent.
    pub fn release(&self, id: &str) -> Result<()> {
        if !self.table.file.exists() {
            return Ok(());
        }
        let _lock = self.table.lock()?;
        let mut table: Table = self.table.read()?;
        if table.pins.remove(id).is_some() {
            self.table.write(&table)?;
        }
        Ok(())
    }

    /// Live containers and their CPUs.
    pub fn list(&self) -> Result<BTreeMap<String, usize>> {
        let _lock = self.table.lock()?;
        let mut table: Table = self.table.read()?;
        self.live(&mut table);
        Ok(table.pins)
    }
}

/// The CPUs a new group at `group` may use: `cpuset.cpus.effective` of its nearest
/// ancestor that has the file (groups without the cpuset controller do not restrict).
pub fn allowed_cpus(group: &Path) -> Result<Vec<usize>> {
    let path = group
        .ancestors()
        .skip(1)
        .map(|a| a.join("cpuset.cpus.effective"))
        .find(|p| p.exists())
        .ok_or_else(|| {
            Error::config(
                format!("annotations.{ANNOTATION}"),
                format!(
                    "needs the cpuset controller, which no group above {} has",
                    group.display()
                ),
            )
        })?;
    let text = std::fs::read_to_string(&path).at(&path)?;
    parse_cpu_list(text.trim()).map_err(|m| Error::config(path.display().to_string(), m))
}

/// The host's CPU topology directory.
pub const SYSFS_CPU: &str = "/sys/devices/system/cpu";

/// `left4me-runtime cpus`: each CPU of `allowed`, its core, and the containers on it.
pub fn report(allowed: &[usize], topo: &Topology, pins: &BTreeMap<String, usize>) -> String {
    let mut out = format!("{:<5} {:<12} {}\n", "CPU", "CORE", "CONTAINERS");
    for cpu in allowed {
        let core = topo
            .core_of(*cpu)
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let ids: Vec<&str> = pins
            .iter()
            .filter(|(_, c)| *c == cpu)
            .map(|(id, _)| id.as_str())
            .collect();
        out.push_str(&format!("{cpu:<5} {core:<12} {}\n", ids.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs fixture: 8 CPUs, SMT pairs (0,4)(1,5)(2,6)(3,7).
    fn fixture(tag: &str) -> (PathBuf, Topology) {
        let dir = std::env::temp_dir().join(format!("l4m-topo-{tag}-{}", std::process::id()));
        for cpu in 0..8 {
            let t = dir.join(format!("cpu{cpu}/topology"));
            std::fs::create_dir_all(&t).unwrap();
            let core = cpu % 4;
            std::fs::write(
                t.join("thread_siblings_list"),
                format!("{core},{}\n", core + 4),
            )
            .unwrap();
        }
        let topo = Topology::read(&dir, &(0..8).collect::<Vec<_>>());
        (dir, topo)
    }

    fn place(n: usize, allowed: &[usize], topo: &Topology) -> Vec<usize> {
        let mut load = BTreeMap::new();
        (0..n)
            .map(|_| {
                let cpu = choose(allowed, topo, &load).unwrap();
                *load.entry(cpu).or_insert(0) += 1;
                cpu
            })
            .collect()
    }

    #[test]
    fn whole_cores_first_then_siblings_then_round_robin() {
        let (dir, topo) = fixture("cores");
        assert_eq!(topo.siblings[&5], BTreeSet::from([1, 5]));
        let all: Vec<usize> = (0..8).collect();
        assert_eq!(place(10, &all, &topo), vec![0, 1, 2, 3, 4, 5, 6, 7, 0, 1]);
        // Restricted to CPUs 2-5: cores (2,6)(3,7) half-usable, (0,4)(1,5) half-usable.
        assert_eq!(place(4, &[2, 3, 4, 5], &topo), vec![2, 3, 4, 5]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_instance_avoids_the_sibling_of_a_busy_core() {
        let (dir, topo) = fixture("busy");
        let all: Vec<usize> = (0..8).collect();
        // Someone sits on CPU 4: core (0,4) is busy, so 0 is not a whole core any more.
        let load = BTreeMap::from([(4, 1)]);
        assert_eq!(choose(&all, &topo, &load), Some(1));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_smt_instances_go_round_robin() {
        let topo = Topology::read(Path::new("/nonexistent"), &[0, 1]);
        assert_eq!(place(4, &[0, 1], &topo), vec![0, 1, 0, 1]);
    }

    #[test]
    fn the_table_is_stable_and_forgets_released_ids() {
        let root = std::env::temp_dir().join(format!("l4m-pins-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let (dir, topo) = fixture("table");
        let pins = Pins::new(&root);
        // No state directories exist here, so each choice sees an empty table of live
        // containers; an existing pin of the same id is returned as it is.
        let a = pins.assign("a", &[0, 1], &topo).unwrap();
        assert_eq!(pins.assign("a", &[0, 1], &topo).unwrap(), a);
        pins.release("a").unwrap();
        pins.release("a").unwrap();
        let text = std::fs::read_to_string(root.join(TABLE_FILE)).unwrap();
        assert!(!text.contains("\"a\""), "{text}");
        std::fs::remove_dir_all(root).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }
}
