//! Route rules and destination policies as files and etcd write them:
//! decoding, validation (regexes, weights, bounds) and the analyzer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_core::Rule;
use sextant_core::rules::{PolicyEntry, RouteEntry};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut rules = Vec::new();
    if let Ok(e) = serde_yaml_ng::from_str::<RouteEntry>(text) {
        rules.push(Rule::from(e));
    }
    if let Ok(e) = serde_yaml_ng::from_str::<PolicyEntry>(text) {
        rules.push(Rule::from(e));
    }
    for r in &rules {
        let _ = r.validate();
    }
    let _ = sextant_core::rules::analyze(&sextant_testkit::fixtures::mesh(2, 2), &rules);
});
