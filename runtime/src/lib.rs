//! left4me-runtime: an OCI container runtime built directly on Linux namespaces.
//!
//! One module per kernel facility, each with a small typed API; `sys` holds every raw
//! system call. See docs/architecture.md for the setup pipeline.

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod console;
pub mod container;
pub mod edit;
pub mod error;
pub mod exe_guard;
pub mod fault;
pub mod hooks;
pub mod idblocks;
pub mod idmap;
pub mod init;
pub mod instance;
pub mod layers;
pub mod log;
pub mod namespaces;
pub mod notify;
pub mod policy;
pub mod process;
pub mod rootfs;
pub mod rootless;
pub mod sandbox;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sys;
pub mod sysctl;
pub mod table;
