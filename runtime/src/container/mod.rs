//! Container lifecycle operations, one per CLI command, each on top of the facility
//! modules (state, namespaces, rootfs, cgroups, process).

pub mod create;
pub mod events;
pub mod exec;
pub mod info;
pub mod lifecycle;
pub mod run;
pub mod supervise;

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::state::{State, Status};

/// Where the runtime keeps its state.
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    /// The UID/GID block table of automatic user namespaces (`--id-blocks`).
    pub id_blocks: PathBuf,
    /// The policy in force (None: bundles are fully trusted).
    pub policy: Option<std::sync::Arc<crate::policy::Policy>>,
    /// Said once a container exists (`run` without a policy), so that a refused
    /// bundle's error stays one line.
    pub policy_notice: Option<String>,
}

/// Fails unless the container's live status is one of `allowed`.
pub fn require(state: &State, allowed: &[Status], action: &str) -> Result<Status> {
    let status = state.status();
    if allowed.contains(&status) {
        Ok(status)
    } else {
        Err(Error::WrongState {
            state: status.to_string(),
            message: format!("cannot {action}"),
        })
    }
}

/// Loads the config snapshot taken at `create`.
pub fn load_snapshot(paths: &Paths, id: &str) -> Result<oci_spec::runtime::Spec> {
    let path = paths.root.join(id).join(crate::state::CONFIG_SNAPSHOT);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    crate::spec::parse(&text)
}
