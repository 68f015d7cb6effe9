//! The five capability sets of `process.capabilities`, applied with the caps crate.
//!
//! Order matters: the bounding set is trimmed while the process still has CAP_SETPCAP,
//! the identity change keeps the permitted set (`PR_SET_KEEPCAPS`), and effective,
//! permitted, inheritable and finally ambient are set last.

use std::str::FromStr;

use caps::{CapSet, Capability, CapsHashSet};
use oci_spec::runtime::LinuxCapabilities;

use crate::error::{Error, Result};

/// The five sets, as the caps crate names capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sets {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

fn convert(set: &Option<oci_spec::runtime::Capabilities>) -> CapsHashSet {
    set.iter()
        .flatten()
        // Both crates spell capabilities "CAP_X"; names unknown to either were dropped
        // (with a warning) when config.json was loaded.
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| Capability::from_str(v.as_str()?).ok())
        .collect()
}

impl Sets {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Sets {
        let Some(c) = caps else {
            return Sets::default();
        };
        Sets {
            bounding: convert(c.bounding()),
            effective: convert(c.effective()),
            permitted: convert(c.permitted()),
            inheritable: convert(c.inheritable()),
            ambient: convert(c.ambient()),
        }
    }
}

fn caps_err(what: &str, e: caps::errors::CapsError) -> Error {
    Error::Init(format!("capabilities: {what}: {e}"))
}

/// Drops every capability not in the bounding set (needs CAP_SETPCAP, so it runs first).
pub fn limit_bounding(sets: &Sets) -> Result<()> {
    let supported = caps::runtime::thread_all_supported();
    for cap in supported.difference(&sets.bounding) {
        caps::drop(None, CapSet::Bounding, *cap)
            .map_err(|e| caps_err(&format!("dropping {cap} from the bounding set"), e))?;
    }
    Ok(())
}

/// Keeps the permitted set across the uid change that follows.
pub fn keep_across_setuid(keep: bool) -> Result<()> {
    caps::securebits::set_keepcaps(keep).map_err(|e| caps_err("PR_SET_KEEPCAPS", e))
}

/// Sets effective, permitted, inheritable, then ambient.
pub fn apply(sets: &Sets) -> Result<()> {
    let supported = caps::runtime::thread_all_supported();
    let only_supported =
        |s: &CapsHashSet| s.intersection(&supported).copied().collect::<CapsHashSet>();
    // Permitted must contain effective: set permitted (raising effective temporarily is
    // allowed only within it), then the rest.
    caps::set(
        None,
        CapSet::Effective,
        &only_supported(&sets.effective)
            .intersection(&caps::read(None, CapSet::Permitted).unwrap_or_default())
            .copied()
            .collect(),
    )
    .map_err(|e| caps_err("effective", e))?;
    caps::set(None, CapSet::Permitted, &only_supported(&sets.permitted))
        .map_err(|e| caps_err("permitted", e))?;
    caps::set(None, CapSet::Effective, &only_supported(&sets.effective))
        .map_err(|e| caps_err("effective", e))?;
    caps::set(
        None,
        CapSet::Inheritable,
        &only_supported(&sets.inheritable),
    )
    .map_err(|e| caps_err("inheritable", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_err("clearing ambient", e))?;
    for cap in only_supported(&sets.ambient) {
        caps::raise(None, CapSet::Ambient, cap).map_err(|e| {
            caps_err(
                &format!("raising ambient {cap} (it must be permitted and inheritable)"),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_names_convert_to_caps_names() {
        let spec = crate::spec::parse(&crate::spec::default_config().to_string()).unwrap();
        let sets = Sets::from_spec(spec.process().as_ref().unwrap().capabilities().as_ref());
        let expected: CapsHashSet = [
            Capability::CAP_AUDIT_WRITE,
            Capability::CAP_KILL,
            Capability::CAP_NET_BIND_SERVICE,
        ]
        .into();
        assert_eq!(sets.bounding, expected);
        assert_eq!(sets.effective, expected);
        assert!(sets.ambient.is_empty());
    }
}
