//! What several targets share: a snapshot of a small mesh with rules, and
//! splitting one input into several messages.

use std::sync::{Arc, OnceLock};

use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Endpoint, Event, Locality, Protocol, RegistryId, Service};
use sextant_xds::TranslateOptions;
use sextant_xds::snapshot::Snapshot;

/// A snapshot of 20 services, built once.
pub fn snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let id = RegistryId::new("memory/fuzz");
        let mut merge = MergeState::new(MergeMode::Union);
        merge.add_shard(id.clone());
        merge.apply(&id, Event::Reset(mesh(20, 3)));
        let view = Arc::new(merge.build_view(true).expect("a view"));
        Arc::new(Snapshot::empty(TranslateOptions::default()).next(view))
    })
    .clone()
}

/// `services` HTTP services of `endpoints` endpoints each, over three
/// zones (written here rather than taken from the test kit, whose doubles
/// and peers would be compiled, instrumented, into every target).
pub fn mesh(services: usize, endpoints: usize) -> Vec<Service> {
    (0..services)
        .map(|i| {
            let mut s = Service::new(format!("svc-{i}.mesh.svc")).with_port("http", 8080, Protocol::Http);
            s.namespace = "mesh".into();
            s.endpoints = (0..endpoints)
                .map(|e| {
                    let n = i * endpoints + e + 1;
                    let ip = std::net::Ipv4Addr::new(10, (n >> 16) as u8, (n >> 8) as u8, n as u8);
                    let mut ep = Endpoint::new(std::net::IpAddr::V4(ip).into()).with_port("http", 9000);
                    ep.locality = Locality {
                        region: "region-1".into(),
                        zone: format!("zone-{}", e % 3),
                        subzone: String::new(),
                    };
                    ep
                })
                .collect();
            s
        })
        .collect()
}

/// Splits `data` into messages: each is a 2-byte big-endian length, then
/// that many bytes (the last takes what is left).
pub fn messages(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 32 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        data = &data[2..];
        let take = len.min(data.len());
        out.push(&data[..take]);
        data = &data[take..];
    }
    out
}
