//! Registry files (YAML, or JSON by extension): parsing, per-entry
//! decoding and validation of services and rules.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for name in ["mesh.yaml", "mesh.json"] {
        if let Ok(content) = sextant_file::parse_file(Path::new(name), text) {
            let _ = sextant_core::rules::analyze(&content.services, &content.rules);
        }
    }
});
