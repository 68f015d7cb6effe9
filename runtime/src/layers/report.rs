//! `left4me-runtime layers check`: validates a bundle's layer stack exactly as `create`
//! would (nothing is created or mounted) and describes it, top layer first.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{resolve, Layer};
use crate::error::{Context, Error, Result};
use crate::idmap::IdRange;
use crate::spec::Bundle;

#[derive(Debug, Serialize)]
pub struct Report {
    pub store: PathBuf,
    /// Top (highest precedence) first.
    pub lower: Vec<LayerReport>,
    /// `None` when the stack is read-only.
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    pub reference: String,
    pub resolved: PathBuf,
    pub uid: u32,
    pub gid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_mappings: Option<Vec<IdRange>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid_mappings: Option<Vec<IdRange>>,
    /// Bytes of regular files in the layer (symlinks not followed, one filesystem).
    pub size: u64,
}

pub fn check(bundle_dir: &Path) -> Result<Report> {
    let bundle = Bundle::load(bundle_dir).step("loading the bundle")?;
    let config = bundle.layers.as_ref().ok_or_else(|| {
        Error::config(
            "left4me.layers",
            "the bundle's config.json has no layer stack",
        )
    })?;
    let stack = resolve(config, &bundle.dir)?;
    let (upper, work) = match stack.upper {
        Some((u, w)) => (Some(u), Some(w)),
        None => (None, None),
    };
    Ok(Report {
        store: config.store.clone(),
        lower: stack.lower.iter().map(describe).collect(),
        upper,
        work,
    })
}

fn describe(layer: &Layer) -> LayerReport {
    LayerReport {
        reference: layer.reference.clone(),
        resolved: layer.resolved.clone(),
        uid: layer.uid,
        gid: layer.gid,
        uid_mappings: layer.uid_mappings.clone(),
        gid_mappings: layer.gid_mappings.clone(),
        size: tree_size(&layer.resolved),
    }
}

fn tree_size(root: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(root) else {
        return 0;
    };
    let device = meta.dev();
    let mut total = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() && meta.dev() == device {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

fn idmap_text(uids: &Option<Vec<IdRange>>, gids: &Option<Vec<IdRange>>) -> String {
    let ranges = |m: &Vec<IdRange>| {
        m.iter()
            .map(|r| format!("{}->{}+{}", r.from, r.to, r.size))
            .collect::<Vec<_>>()
            .join(",")
    };
    match (uids, gids) {
        (Some(u), Some(g)) => format!("uid {} gid {}", ranges(u), ranges(g)),
        _ => "-".to_string(),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

impl Report {
    pub fn table(&self) -> String {
        let mut text = format!(
            "{:<4} {:<32} {:<11} {:>8}  {:<28} {}\n",
            "#", "LAYER", "OWNER", "SIZE", "IDMAP", "RESOLVED"
        );
        for (i, l) in self.lower.iter().enumerate() {
            text.push_str(&format!(
                "{:<4} {:<32} {:<11} {:>8}  {:<28} {}\n",
                i,
                l.reference,
                format!("{}:{}", l.uid, l.gid),
                human(l.size),
                idmap_text(&l.uid_mappings, &l.gid_mappings),
                l.resolved.display()
            ));
        }
        match (&self.upper, &self.work) {
            (Some(u), Some(w)) => {
                text.push_str(&format!("upper {}\nwork  {}\n", u.display(), w.display()))
            }
            _ => text.push_str("read-only: no upper layer\n"),
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_du_apparent() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(3 * 1024 * 1024 * 1024), "3.0G");
    }
}
