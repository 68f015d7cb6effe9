//! `config get/set/unset PATH`: the path expressions, applied to a real config.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = left4me_runtime::edit::path::parse(text) else {
        return;
    };
    let mut doc = left4me_runtime::spec::default_config();
    let _ = left4me_runtime::edit::path::get(&doc, &path);
    let _ = left4me_runtime::edit::set(&mut doc, text, serde_json::json!(1));
});
