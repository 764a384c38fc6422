//! etcd keys and documents: the key's class, then the value decoded as a
//! service, endpoint, rule or entry document (ServiceEntry,
//! WorkloadEntry, WorkloadGroup). Input: KEY, a newline, VALUE.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_etcd::convert::{self, Layout};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == b'\n');
    let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
        return;
    };
    let Ok(key) = std::str::from_utf8(key) else {
        return;
    };
    let layout = Layout {
        prefix: "/sextant/".into(),
        naming_prefix: Some("/services/".into()),
    };
    if let Ok(Some(k)) = layout.classify(key) {
        let _ = convert::parse(&k, value);
    }
    if let Ok(Some(k)) = layout.classify_entry(key) {
        let _ = convert::parse_entry(&k, value);
    }
    if let Ok(Some(k)) = layout.classify_rule(key) {
        if let Ok(rule) = convert::parse_rule(&k, value) {
            let _ = rule.validate();
        }
    }
});
