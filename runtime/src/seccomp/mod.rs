//! `linux.seccomp` compiled by the runtime into one classic BPF program covering every
//! listed architecture (x86_64, i386 — srcds is a 32-bit program — and x32), with a
//! binary search over syscall numbers so a syscall's cost grows with log2 of the rules,
//! not with their number.
//!
//! seccompiler generates one architecture per filter (and no i386/x32), compares rules
//! linearly, and its `apply_filter` always sets no_new_privs; the OCI semantics need
//! all three differently, so code generation is our own (codegen.rs, ~250 lines) and
//! the syscall tables come from the `syscalls` crate.

pub mod codegen;
pub mod profiles;
pub mod rules;

#[cfg(test)]
mod tests;

use oci_spec::runtime::LinuxSeccomp;

use crate::error::{Context, Error, Result};
use crate::sys::seccomp::{install_filter, SockFilter};

/// A compiled filter, ready to install.
#[derive(Debug, Clone)]
pub struct Filter {
    pub program: Vec<SockFilter>,
    pub flags: u32,
}

impl Filter {
    /// Compiles `linux.seccomp`; every problem is an error naming its field.
    pub fn compile(seccomp: &LinuxSeccomp) -> Result<Filter> {
        let policy = rules::policy(seccomp)?;
        let program = codegen::program(&policy);
        if program.len() > codegen::MAX_INSNS {
            return Err(Error::config(
                "linux.seccomp",
                format!(
                    "the filter needs {} BPF instructions; the kernel takes {}",
                    program.len(),
                    codegen::MAX_INSNS
                ),
            ));
        }
        Ok(Filter {
            program,
            flags: policy.flags,
        })
    }

    /// Installs the filter on the calling process.
    pub fn install(&self) -> Result<()> {
        install_filter(&self.program, self.flags)
            .map_err(Error::from)
            .step("installing the seccomp filter")
    }
}
