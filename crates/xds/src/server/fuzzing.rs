//! Entry points for the fuzz targets: raw request bytes through the same
//! decoding and per-connection protocol code a stream's requests take, with
//! the responses planned and encoded as they would be sent.

use std::sync::Arc;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use prost::Message;

use super::codec::Wire;
use super::conn::{ConnState, Serving, Subscriptions};
use super::request::SotwRequest;
use crate::snapshot::Snapshot;

/// One connection of either wire against a fixed snapshot.
pub struct Connection {
    state: ConnState,
    serving: Serving,
}

impl Connection {
    /// A connection serving `snapshot`.
    pub fn new(wire: Wire, snapshot: Arc<Snapshot>) -> Connection {
        Connection {
            state: ConnState::new(wire, Arc::<Subscriptions>::default()),
            serving: Serving::alone(snapshot),
        }
    }

    /// Decodes `raw` as the stream's next request (SotW or delta, as the
    /// connection's wire), applies it, and plans and encodes every response
    /// due. Returns whether it decoded.
    pub fn request(&mut self, raw: &[u8]) -> bool {
        let applied = match self.state.wire {
            Wire::Sotw => match SotwRequest::decode_shared(Bytes::copy_from_slice(raw)) {
                Ok(req) => {
                    self.state.sotw_request(req);
                    true
                }
                Err(_) => false,
            },
            Wire::Delta => match DeltaDiscoveryRequest::decode(raw) {
                Ok(req) => {
                    self.state.delta_request(req);
                    true
                }
                Err(_) => false,
            },
        };
        // Bounded: each step sends at most one response per type.
        for _ in 0..16 {
            match self.state.pump(&self.serving) {
                Some(out) => {
                    let _ = out.frames();
                }
                None => break,
            }
        }
        applied
    }
}
