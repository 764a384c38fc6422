//! Kubernetes objects as the API server sends them (JSON): a Service with
//! a slice, a Node and a Pod; and VirtualService, DestinationRule,
//! HTTPRoute and GRPCRoute specs. The first byte picks the kind.
#![no_main]

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use libfuzzer_sys::fuzz_target;
use sextant_k8s::convert::{self, Mapping};
use sextant_k8s::gateway::{self, RouteKind};
use sextant_k8s::istio;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, json)) = data.split_first() else {
        return;
    };
    let m = Mapping::default();
    match kind % 6 {
        0 => {
            // A Service, then its slice, one JSON document each per line.
            let mut lines = json.splitn(2, |b| *b == b'\n');
            let (Some(svc), slice) = (lines.next(), lines.next()) else {
                return;
            };
            let Ok(svc) = serde_json::from_slice::<Service>(svc) else {
                return;
            };
            let slices: Vec<EndpointSlice> = slice
                .and_then(|s| serde_json::from_slice(s).ok())
                .into_iter()
                .collect();
            let refs: Vec<&EndpointSlice> = slices.iter().collect();
            let _ = convert::service(&m, &svc, &refs, &HashMap::new(), &HashMap::new());
            for s in &slices {
                let _ = convert::slice_owner(s);
            }
        }
        1 => {
            if let Ok(node) = serde_json::from_slice::<Node>(json) {
                let _ = convert::node_locality(&node);
            }
        }
        k => {
            let Ok(spec) = serde_json::from_slice::<serde_json::Value>(json) else {
                return;
            };
            // A grant into `other`: both sides of the permission check.
            let mut grants = gateway::Grants::default();
            let _ = grants.insert(
                "other",
                "fuzz",
                &serde_json::json!({
                    "from": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}],
                    "to": [{"group": "", "kind": "Service"}],
                }),
            );
            let _ = match k {
                2 => istio::virtual_service(&m, "default", "fuzz", &spec),
                3 => istio::destination_rule(&m, "default", "fuzz", &spec),
                4 => gateway::route(&m, &grants, RouteKind::Http, "default", "fuzz", &spec),
                _ => gateway::route(&m, &grants, RouteKind::Grpc, "default", "fuzz", &spec),
            }
            .map(|c| c.rule.map(|r| r.validate()));
        }
    }
});
