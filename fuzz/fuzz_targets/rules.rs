//! Route rules, destination policies and scope rules as files and etcd
//! write them: decoding, validation (regexes, weights, bounds), the
//! analyzer, and scope selection and matching.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
#[allow(dead_code)]
mod common;
use sextant_core::Rule;
use sextant_core::rules::{PolicyEntry, RouteEntry, ScopeEntry};

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
    if let Ok(e) = serde_yaml_ng::from_str::<ScopeEntry>(text) {
        rules.push(Rule::from(e));
    }
    for r in &rules {
        let _ = r.validate();
        if let Some(scope) = r.as_scope() {
            for h in &scope.hosts {
                let _ = h.matches(Some(&r.key.namespace), "default", "a.default.svc");
                let _ = sextant_core::ScopeHost::parse(&h.to_string());
            }
        }
    }
    let scopes: Vec<std::sync::Arc<Rule>> =
        rules.iter().cloned().map(std::sync::Arc::new).collect();
    let _ = sextant_core::rules::scope::select(&scopes, "istio-system", Some("default"), &Default::default());
    let _ = sextant_core::rules::analyze(&common::mesh(2, 2), &rules);
});
