//! config.json as a bundle's owner may write it: parsing, validation (every problem
//! `config validate` reports) and the runtime's own reading (`Bundle::from_value`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = left4me_runtime::edit::problems(&doc, None);
    let _ = left4me_runtime::spec::Bundle::from_value("/nonexistent-bundle".into(), doc);
});
