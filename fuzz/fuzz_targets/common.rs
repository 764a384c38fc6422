//! What several targets share: a snapshot of a small mesh with rules, and
//! splitting one input into several messages.

use std::sync::{Arc, OnceLock};

use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Event, RegistryId};
use sextant_xds::TranslateOptions;
use sextant_xds::snapshot::Snapshot;

/// A snapshot of 20 services, built once.
pub fn snapshot() -> Arc<Snapshot> {
    static SNAP: OnceLock<Arc<Snapshot>> = OnceLock::new();
    SNAP.get_or_init(|| {
        let id = RegistryId::new("memory/fuzz");
        let mut merge = MergeState::new(MergeMode::Union);
        merge.add_shard(id.clone());
        merge.apply(&id, Event::Reset(sextant_testkit::fixtures::mesh(20, 3)));
        let view = Arc::new(merge.build_view(true).expect("a view"));
        Arc::new(Snapshot::empty(TranslateOptions::default()).next(view))
    })
    .clone()
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
