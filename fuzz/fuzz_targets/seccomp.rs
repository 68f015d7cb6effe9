//! `linux.seccomp` translation into one BPF program (rules, architectures, argument
//! conditions, jumps), then the kernel-independent program checks.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(seccomp) = serde_json::from_slice::<oci_spec::runtime::LinuxSeccomp>(data) else {
        return;
    };
    let _ = left4me_runtime::seccomp::Filter::compile(&seccomp);
});
