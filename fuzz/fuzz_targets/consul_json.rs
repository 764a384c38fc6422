//! Consul's JSON: health entries of a service, and config entries
//! (router, splitter, resolver) with subset filter expressions. The first
//! byte picks which.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sextant_consul::convert::{self, Mapping, ServiceEntry};
use sextant_consul::{entries, filter};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    let m = Mapping::default();
    match kind % 3 {
        0 => {
            if let Ok(list) = serde_json::from_slice::<Vec<ServiceEntry>>(json) {
                let _ = convert::to_service("web", &list, &m);
                // And each instance against a filter made of the same input.
                if let Ok(text) = std::str::from_utf8(json)
                    && let Ok(expr) = filter::parse(text)
                {
                    for e in &list {
                        let _ = filter::eval(&expr, e);
                    }
                }
            }
        }
        1 => {
            let Ok(v) = serde_json::from_slice::<[serde_json::Value; 3]>(json) else {
                return;
            };
            let router = serde_json::from_value::<entries::Router>(v[0].clone()).ok();
            let splitter = serde_json::from_value::<entries::Splitter>(v[1].clone()).ok();
            let resolver = serde_json::from_value::<entries::Resolver>(v[2].clone()).ok();
            // The same splitter and resolver for every service its splits
            // and routes may name: chains, loops, fan-out.
            let names = ["web", "api", "a", "b", ""];
            let splitters: std::collections::BTreeMap<String, entries::Splitter> = names
                .iter()
                .filter_map(|n| splitter.clone().map(|s| ((*n).to_owned(), s)))
                .collect();
            let resolvers: std::collections::BTreeMap<String, entries::Resolver> = names
                .iter()
                .filter_map(|n| resolver.clone().map(|r| ((*n).to_owned(), r)))
                .collect();
            let chain = entries::Chain {
                splitters: Some(&splitters),
                resolvers: Some(&resolvers),
            };
            if let Ok(c) = entries::convert(
                &m,
                "web",
                router.as_ref(),
                splitter.as_ref(),
                resolver.as_ref(),
                chain,
            ) {
                for r in c.route.iter().chain(c.policy.iter()) {
                    let _ = r.validate();
                }
            }
            if let Some(r) = &resolver {
                let _ = entries::evaluated_subsets(r);
            }
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(json) {
                let _ = filter::parse(text);
                let _ = entries::filter_labels(text);
            }
        }
    }
});
