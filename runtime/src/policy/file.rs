//! Reading the policy file so that only root can have written it: the file and every
//! directory above it are owned by root and writable by no one else, checked on the
//! descriptor that is then read (a swapped path cannot slip in between).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::Policy;
use crate::error::{Error, IoContext, Result};

pub const DEFAULT_FILE: &str = "/etc/left4me-runtime/policy.json";

/// Loads the policy at `path`. `Ok(None)`: there is none (only allowed for the default
/// path; a policy named with `--policy` must exist).
pub fn load(path: &Path, explicit: bool) -> Result<Option<Policy>> {
    let file = match open_trusted(path) {
        Err(Error::Io { source, .. })
            if !explicit && source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None)
        }
        other => other?,
    };
    let mut text = String::new();
    (&file).read_to_string(&mut text).at(path)?;
    let mut policy: Policy = serde_json::from_str(&text)
        .map_err(|e| Error::config(format!("policy {}", path.display()), e))?;
    policy.path = path.to_path_buf();
    for scope in &policy.scopes {
        if scope.bundles.iter().any(|b| !b.is_absolute()) {
            return Err(Error::config(
                format!("policy {}: scope {:?}: bundles", path.display(), scope.name),
                "bundle directories must be absolute",
            ));
        }
    }
    Ok(Some(policy))
}

/// Opens `path` (no symlink at its end) and checks the file and its directories.
fn open_trusted(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .at(path)?;
    let meta = file.metadata().at(path)?;
    if !meta.is_file() {
        return Err(untrusted(path, "is not a regular file"));
    }
    check_owner(path, &meta)?;
    // The directories above, through the descriptor's own path (what was opened).
    let real = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).at(path)?;
    let mut dir: Option<PathBuf> = real.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let meta = std::fs::metadata(&d).at(&d)?;
        check_owner(&d, &meta)?;
        dir = d.parent().map(Path::to_path_buf);
    }
    Ok(file)
}

fn check_owner(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    if meta.uid() != 0 {
        return Err(untrusted(
            path,
            &format!("is owned by uid {}, not root", meta.uid()),
        ));
    }
    // The sticky /tmp is still not a place for a policy.
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            path,
            &format!(
                "is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

fn untrusted(path: &Path, why: &str) -> Error {
    Error::Policy(format!(
        "policy file: {} {why}; a policy must be writable by root only",
        path.display()
    ))
}
