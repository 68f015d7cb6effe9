//! One error convention for the whole runtime (as crun has): every failure is an [`Error`]
//! that says what failed (a syscall on a path, a config field, a state file), and the
//! operation wraps it with the step it was in. The CLI prints it as one line:
//! `left4me-runtime: container ID: STEP: CAUSE`.

use std::fmt;
use std::path::PathBuf;

use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Sys(#[from] SysError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A config.json field that cannot be honoured, named by its JSON path.
    #[error("config: {field}: {message}")]
    Config { field: String, message: String },

    /// A command-line argument that cannot be honoured.
    #[error("{0}")]
    Usage(String),

    #[error("container {0} does not exist")]
    NotFound(String),

    #[error("container {0} already exists")]
    AlreadyExists(String),

    /// An operation that the container's current state does not allow.
    #[error("container is {state}: {message}")]
    WrongState { state: String, message: String },

    /// A failure reported by the container's init process, already formatted.
    #[error("{0}")]
    Init(String),

    #[error("{0}")]
    Unsupported(String),

    /// A bundle the policy refuses, or a policy file that cannot be trusted.
    #[error("{0}")]
    Policy(String),

    /// A sandbox build that a limit ended or that produced an unusable overlay.
    #[error("{0}")]
    Build(String),

    /// `step: cause`, where step is what the runtime was doing.
    #[error("{step}: {source}")]
    Step {
        step: String,
        #[source]
        source: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn config(field: impl Into<String>, message: impl fmt::Display) -> Self {
        Error::Config {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// The innermost errno, if the root cause was a system call.
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            Error::Sys(e) => Some(e.errno),
            Error::Io { source, .. } => source.raw_os_error().map(nix::errno::Errno::from_raw),
            Error::Step { source, .. } => source.errno(),
            _ => None,
        }
    }
}

/// Adds the step being performed to an error: `.step("mounting /proc")?`.
pub trait Context<T> {
    fn step(self, step: impl fmt::Display) -> Result<T>;
    fn step_with<S: fmt::Display>(self, step: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn step(self, step: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Step {
            step: step.to_string(),
            source: Box::new(e.into()),
        })
    }

    fn step_with<S: fmt::Display>(self, step: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Step {
            step: step().to_string(),
            source: Box::new(e.into()),
        })
    }
}

/// `std::io::Result` with the path it was about.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_nest_into_one_line() {
        let inner: Result<()> =
            Err(SysError::new("mount", "/proc", nix::errno::Errno::EPERM).into());
        let err = inner
            .step("mounting /proc")
            .step("creating container")
            .unwrap_err();
        let line = err.to_string();
        assert_eq!(
            line,
            "creating container: mounting /proc: mount /proc: Operation not permitted"
        );
        assert!(!line.contains('\n'));
        assert_eq!(err.errno(), Some(nix::errno::Errno::EPERM));
    }
}
