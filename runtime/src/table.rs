//! A small JSON table shared by concurrent runtime invocations (UID/GID blocks, core
//! pinning): every read-modify-write happens under an exclusive `flock` of a sibling
//! `.lock` file, and writes are temp file + rename, so a crash leaves the old table or
//! the new one, never a torn one.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};

pub struct LockedTable {
    pub file: PathBuf,
}

impl LockedTable {
    pub fn new(file: impl Into<PathBuf>) -> LockedTable {
        LockedTable { file: file.into() }
    }

    /// Takes the table's lock (released when the guard drops).
    pub fn lock(&self) -> Result<Flock<File>> {
        let dir = self.file.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).at(dir)?;
        let lock_path = self.file.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::io(&lock_path, e.into()))
    }

    /// The table (its default when the file does not exist yet). Call under the lock.
    pub fn read<T: DeserializeOwned + Default>(&self) -> Result<T> {
        match std::fs::read(&self.file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| Error::config(self.file.display().to_string(), e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
            Err(e) => Err(Error::io(&self.file, e)),
        }
    }

    /// Replaces the table atomically. Call under the lock.
    pub fn write<T: Serialize>(&self, table: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(table).expect("a table serializes");
        crate::state::write_atomic(&self.file, &bytes, 0o644)
    }
}
