//! A state file (possibly truncated or corrupted by a crash): read, rendered as the OCI
//! state document, or refused as corrupt — never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = left4me_runtime::state::parse(data, std::path::Path::new("state.json")) {
        let _ = state.oci_json();
    }
});
