//! Layered root filesystems: the container's root is a kernel overlay of layers from a
//! layer store (left4me: `overlays/<id>`... then `installation`) with a per-container
//! upper layer, mounted detached by the runtime and attached by init inside the
//! container's own mount namespace — so nothing ever appears in the host's mount table.
//!
//! The configuration is an extension of config.json, the top-level `left4me.layers`
//! object (docs/config.md); other OCI runtimes ignore it. Every reference is validated
//! and opened by descriptor before anything is mounted, and the overlay is built from
//! those descriptors, so what was checked is what gets mounted.

pub mod overlay;
pub mod report;

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::idmap::IdRange;
use crate::sys::fd::{openat2, Resolve};

/// The overlayfs limit on lower layers.
pub const MAX_LAYERS: usize = 500;

/// The store subdirectories layers may live in (and symlinks may point into) by default.
pub const DEFAULT_ALLOWED_ROOTS: [&str; 4] = [
    "installation",
    "overlays",
    "global_overlay_cache",
    "workshop_cache",
];

/// `left4me.layers` in config.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayersConfig {
    /// The layer store (e.g. `/var/lib/left4me`); relative paths are relative to the bundle.
    pub store: PathBuf,
    /// Store subdirectories layers must resolve into.
    #[serde(default = "default_allowed_roots")]
    pub allowed_roots: Vec<String>,
    /// Lower layers relative to the store, FIRST = HIGHEST precedence.
    pub lower: Vec<LayerRef>,
    /// The upper (writable) layer; relative paths are relative to the bundle.
    #[serde(default = "default_upper")]
    pub upper: PathBuf,
    /// Overlayfs' work directory, on the same filesystem as `upper`.
    #[serde(default = "default_work")]
    pub work: PathBuf,
    /// No upper layer: the merged view is read-only.
    #[serde(default)]
    pub readonly: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LayerRef {
    pub path: String,
    /// Idmap for this layer, OCI mount format (on-disk `containerID` appears as `hostID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid_mappings: Option<Vec<IdRange>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid_mappings: Option<Vec<IdRange>>,
    /// With `left4me.userns.auto`: idmap this layer onto the container's block, so
    /// on-disk id N appears as container id N.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idmap_to_container: bool,
}

fn default_allowed_roots() -> Vec<String> {
    DEFAULT_ALLOWED_ROOTS
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_upper() -> PathBuf {
    PathBuf::from("upper")
}
fn default_work() -> PathBuf {
    PathBuf::from("work")
}

const FIELD: &str = "left4me.layers";

impl LayersConfig {
    /// Reads `left4me.layers` from the raw config.json value, if present.
    pub fn from_config(config: &Value) -> Result<Option<LayersConfig>> {
        let Some(value) = config.pointer("/left4me/layers") else {
            return Ok(None);
        };
        serde_path_to_error::deserialize(value.clone())
            .map(Some)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    FIELD.to_string()
                } else {
                    format!("{FIELD}.{path}")
                };
                Error::config(field, e.into_inner())
            })
    }
}

/// One lower layer, checked and opened.
#[derive(Debug)]
pub struct Layer {
    /// As written in the config.
    pub reference: String,
    /// Where it resolved to (symlinks followed).
    pub resolved: PathBuf,
    /// `O_PATH` descriptor of `resolved`, opened without following symlinks.
    pub fd: OwnedFd,
    pub uid: u32,
    pub gid: u32,
    pub uid_mappings: Option<Vec<IdRange>>,
    pub gid_mappings: Option<Vec<IdRange>>,
}

/// The whole stack, validated: lowers top to bottom, and the upper/work paths.
#[derive(Debug)]
pub struct Stack {
    pub lower: Vec<Layer>,
    /// `(upper, work)`, absolute; `None` when read-only.
    pub upper: Option<(PathBuf, PathBuf)>,
}

/// Checks a layer reference's syntax: relative, no `..`, `.` or empty components.
pub fn check_reference(reference: &str) -> std::result::Result<(), String> {
    if reference.is_empty() {
        return Err("empty layer reference".into());
    }
    if reference.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    if reference.contains('\0') {
        return Err("NUL byte in layer reference".into());
    }
    for part in reference.split('/') {
        match part {
            "" if reference.ends_with('/') && !reference.contains("//") => {}
            "" => return Err("empty path component (a//b)".into()),
            ".." => return Err("'..' components are not allowed".into()),
            "." => return Err("'.' components are not allowed".into()),
            _ => {}
        }
    }
    Ok(())
}

/// Validates every reference and opens every layer; nothing is created or mounted.
pub fn resolve(config: &LayersConfig, bundle_dir: &Path) -> Result<Stack> {
    // Relative to the bundle, like root.path (ready-made bundles ship with their store).
    let store_path = bundle_dir.join(&config.store);
    let store = std::fs::canonicalize(&store_path)
        .at(&store_path)
        .map_err(|e| Error::config(format!("{FIELD}.store"), e))?;
    let allowed = allowed_roots(config, &store)?;
    if config.lower.is_empty() {
        return Err(Error::config(format!("{FIELD}.lower"), "no layers"));
    }
    if config.lower.len() > MAX_LAYERS {
        return Err(Error::config(
            format!("{FIELD}.lower"),
            format!(
                "{} layers: overlayfs allows at most {MAX_LAYERS}",
                config.lower.len()
            ),
        ));
    }
    let lower = config
        .lower
        .iter()
        .enumerate()
        .map(|(i, layer)| {
            resolve_layer(layer, &store, &allowed).map_err(|message| {
                Error::config(format!("{FIELD}.lower[{i}] {:?}", layer.path), message)
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let upper = (!config.readonly).then(|| {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                bundle_dir.join(p)
            }
        };
        (abs(&config.upper), abs(&config.work))
    });
    Ok(Stack { lower, upper })
}

fn allowed_roots(config: &LayersConfig, store: &Path) -> Result<Vec<PathBuf>> {
    let mut roots = Vec::new();
    for (i, root) in config.allowed_roots.iter().enumerate() {
        let field = format!("{FIELD}.allowedRoots[{i}]");
        check_reference(root).map_err(|m| Error::config(&field, m))?;
        // A root that does not exist allows nothing; one that is a symlink out of the
        // store would allow the outside.
        match std::fs::canonicalize(store.join(root)) {
            Ok(real) if real.starts_with(store) => roots.push(real),
            Ok(real) => {
                return Err(Error::config(
                    field,
                    format!("resolves to {}, outside the store", real.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::config(field, e)),
        }
    }
    Ok(roots)
}

fn resolve_layer(
    layer: &LayerRef,
    store: &Path,
    allowed: &[PathBuf],
) -> std::result::Result<Layer, String> {
    check_reference(&layer.path)?;
    let joined = store.join(&layer.path);
    let resolved = std::fs::canonicalize(&joined).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{} does not exist", joined.display()),
        _ => format!("{}: {e}", joined.display()),
    })?;
    if !allowed.iter().any(|root| resolved.starts_with(root)) {
        return Err(format!(
            "resolves to {}, outside the allowed roots of the store",
            resolved.display()
        ));
    }
    // Opened without following any symlink: the path is canonical, so a symlink here
    // means it was swapped in after the check.
    let fd = openat2(
        None,
        &resolved,
        libc::O_PATH | libc::O_DIRECTORY,
        0,
        Resolve {
            no_symlinks: true,
            ..Default::default()
        },
    )
    .map_err(|e| match e.errno {
        nix::errno::Errno::ENOTDIR => format!("{} is not a directory", resolved.display()),
        _ => e.to_string(),
    })?;
    let meta = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| format!("fstat: {e}"))?;
    for (name, maps) in [
        ("uidMappings", &layer.uid_mappings),
        ("gidMappings", &layer.gid_mappings),
    ] {
        if let Some(maps) = maps {
            crate::idmap::validate(maps, name).map_err(|e| e.to_string())?;
        }
    }
    if layer.idmap_to_container && layer.uid_mappings.is_none() {
        return Err("idmapToContainer needs left4me.userns.auto (or explicit mappings)".into());
    }
    if layer.uid_mappings.is_some() != layer.gid_mappings.is_some() {
        return Err("an idmapped layer needs both uidMappings and gidMappings".into());
    }
    Ok(Layer {
        reference: layer.path.clone(),
        resolved,
        fd,
        uid: meta.st_uid,
        gid: meta.st_gid,
        uid_mappings: layer.uid_mappings.clone(),
        gid_mappings: layer.gid_mappings.clone(),
    })
}

#[cfg(test)]
mod tests;
