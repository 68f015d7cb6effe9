//! Layer references (`left4me.layers.lower[].path`): syntax checks must refuse every
//! escape and never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if left4me_runtime::layers::check_reference(text).is_ok() {
        assert!(
            !text.starts_with('/'),
            "absolute reference accepted: {text:?}"
        );
        // One trailing slash is allowed (`overlays/map/`).
        let body = text.strip_suffix('/').unwrap_or(text);
        assert!(
            !body
                .split('/')
                .any(|c| c == ".." || c == "." || c.is_empty()),
            "escaping reference accepted: {text:?}"
        );
    }
});
