//! Automatic user namespaces: each container id gets its own 65 536-id UID/GID block,
//! allocated first-fit from a range (default from 1 000 000), persisted in one JSON
//! file, stable across restarts of the same id (so its upper layer's ownership stays
//! valid) and released only by `left4me-runtime userns release ID`.
//!
//! Every change happens under an exclusive `flock` of a sibling lock file and is written
//! as temp file + rename: a crash at any point leaves the old table or the new one, and
//! allocating again for the same id returns the same block (idempotent).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::table::LockedTable;

pub const BLOCK_SIZE: u32 = 65_536;
pub const DEFAULT_RANGE_START: u32 = 1_000_000;
pub const DEFAULT_FILE: &str = "/var/lib/left4me-runtime/id-blocks.json";

/// `left4me.userns` in config.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoUserns {
    /// Allocate a block for this container and map container ids 0..65535 onto it.
    pub auto: bool,
    #[serde(default = "default_start")]
    pub range_start: u32,
    /// Blocks available from `range_start` (default: as many as fit below 2^32).
    #[serde(default)]
    pub range_blocks: Option<u32>,
}

fn default_start() -> u32 {
    DEFAULT_RANGE_START
}

impl AutoUserns {
    pub fn from_config(config: &serde_json::Value) -> Result<Option<AutoUserns>> {
        let Some(value) = config.pointer("/left4me/userns") else {
            return Ok(None);
        };
        serde_path_to_error::deserialize(value.clone())
            .map(Some)
            .map_err(|e| Error::config(format!("left4me.userns.{}", e.path()), e.into_inner()))
    }

    fn blocks(&self) -> u32 {
        let fit = (u32::MAX - self.range_start) / BLOCK_SIZE;
        self.range_blocks.map_or(fit, |n| n.min(fit))
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Table {
    /// Container id → first host id of its block.
    blocks: BTreeMap<String, u32>,
}

/// The persisted allocation table.
pub struct Allocator {
    table: LockedTable,
}

impl Allocator {
    pub fn new(file: impl Into<PathBuf>) -> Allocator {
        Allocator {
            table: LockedTable::new(file),
        }
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>> {
        self.table.lock()
    }

    fn read(&self) -> Result<Table> {
        self.table.read()
    }

    fn write(&self, table: &Table) -> Result<()> {
        self.table.write(table)
    }

    /// The block of `id`: the one it already has, else the lowest free one.
    pub fn allocate(&self, id: &str, config: &AutoUserns) -> Result<u32> {
        let _lock = self.lock()?;
        let mut table = self.read()?;
        if let Some(start) = table.blocks.get(id) {
            return Ok(*start);
        }
        let used: std::collections::BTreeSet<u32> = table.blocks.values().copied().collect();
        let start = (0..config.blocks())
            .map(|i| config.range_start + i * BLOCK_SIZE)
            .find(|start| {
                // Taken if any existing block overlaps [start, start + BLOCK_SIZE).
                !used
                    .iter()
                    .any(|u| *u < start + BLOCK_SIZE && *start < u.saturating_add(BLOCK_SIZE))
            })
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "no free {BLOCK_SIZE}-id block left in the range from {}",
                    config.range_start
                ))
            })?;
        table.blocks.insert(id.to_string(), start);
        self.write(&table)?;
        Ok(start)
    }

    /// Frees the block of `id`; true if it had one.
    pub fn release(&self, id: &str) -> Result<bool> {
        let _lock = self.lock()?;
        let mut table = self.read()?;
        let had = table.blocks.remove(id).is_some();
        if had {
            self.write(&table)?;
        }
        Ok(had)
    }

    pub fn list(&self) -> Result<BTreeMap<String, u32>> {
        let _lock = self.lock()?;
        Ok(self.read()?.blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("l4m-idblocks-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("blocks.json")
    }

    fn auto(start: u32, blocks: Option<u32>) -> AutoUserns {
        AutoUserns {
            auto: true,
            range_start: start,
            range_blocks: blocks,
        }
    }

    #[test]
    fn blocks_are_disjoint_stable_and_first_fit() {
        let file = scratch("fit");
        let a = Allocator::new(&file);
        let cfg = auto(DEFAULT_RANGE_START, None);
        let x = a.allocate("x", &cfg).unwrap();
        let y = a.allocate("y", &cfg).unwrap();
        assert_eq!(x, 1_000_000);
        assert_eq!(y, 1_000_000 + BLOCK_SIZE);
        // Same id, same block — also through a fresh allocator (a restarted runtime).
        assert_eq!(Allocator::new(&file).allocate("x", &cfg).unwrap(), x);
        assert!(a.release("x").unwrap());
        assert!(!a.release("x").unwrap());
        // First fit reuses the hole.
        assert_eq!(a.allocate("z", &cfg).unwrap(), x);
        assert_eq!(a.list().unwrap().len(), 2);
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_full_range_is_a_clear_error() {
        let file = scratch("full");
        let a = Allocator::new(&file);
        let cfg = auto(2_000_000, Some(1));
        a.allocate("one", &cfg).unwrap();
        let err = a.allocate("two", &cfg).unwrap_err().to_string();
        assert!(err.contains("no free"), "{err}");
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    }

    #[test]
    fn concurrent_allocations_never_share_a_block() {
        let file = scratch("race");
        let cfg = auto(DEFAULT_RANGE_START, None);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (file, cfg) = (file.clone(), cfg.clone());
                std::thread::spawn(move || {
                    Allocator::new(&file)
                        .allocate(&format!("c{i}"), &cfg)
                        .unwrap()
                })
            })
            .collect();
        let mut starts: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        starts.sort();
        starts.dedup();
        assert_eq!(starts.len(), 8);
        std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    }
}
