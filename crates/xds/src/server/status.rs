//! What the server exposes about itself: metrics and per-connection state.

use std::net::SocketAddr;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use super::codec::Wire;
pub use crate::metrics::{Histogram, Metrics};
use crate::resource::ResourceType;

pub(crate) fn rfc3339<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    // Seconds since the epoch with millisecond precision: sortable, and no
    // date library for one field.
    s.serialize_f64((secs * 1000.0).round() / 1000.0)
}

/// A recorded NACK.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NackRecord {
    /// The client's node id.
    pub node_id: String,
    /// The resource type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// The nonce of the rejected response.
    pub nonce: String,
    /// The version the client rejected.
    pub version: String,
    /// The resources the rejected response carried.
    pub resources: Vec<String>,
    /// The client's error message.
    pub error: String,
    /// When it arrived.
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// The other end of a connection: where it connects from and, once the
/// server can authenticate proxies, who it proved to be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// The address it connects from, when the transport knows it.
    pub addr: Option<SocketAddr>,
    /// The identity it proved: the SPIFFE id of its client certificate,
    /// or of the bearer token it sent once that is validated. An
    /// unauthenticated node id is not one.
    pub identity: Option<String>,
    /// The bearer token of the stream's `authorization` metadata, if any;
    /// never shown.
    #[serde(skip)]
    pub token: Option<sextant_core::Secret>,
}

/// One type on one connection.
#[derive(Clone, Debug, Serialize)]
pub struct TypeStatus {
    /// The type.
    #[serde(rename = "type")]
    pub kind: ResourceType,
    /// Subscribed to everything.
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub subscribed: usize,
    /// Resources the client holds (as far as the server knows).
    pub held: usize,
    /// Version of the last response sent.
    pub sent_version: String,
    /// Version of the last response acknowledged.
    pub acked_version: String,
    /// A response is waiting for its ACK.
    pub in_flight: bool,
    /// Responses sent.
    pub responses: u64,
    /// The last NACK, if any.
    pub last_nack: Option<NackRecord>,
}

/// One connected proxy or client.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionStatus {
    /// Server-assigned id.
    pub id: u64,
    /// The node id the client sent.
    pub node_id: String,
    /// The node's cluster.
    pub node_cluster: String,
    /// Who is at the other end.
    pub peer: Peer,
    /// SotW or delta.
    pub protocol: Wire,
    /// When it connected.
    #[serde(serialize_with = "rfc3339")]
    pub connected_at: SystemTime,
    /// The kind of client (from the node's user agent): which form of the
    /// configuration it receives.
    pub client: crate::translate::Client,
    /// The user agent it named (`envoy`, `gRPC Go`, `gRPC C-core`...).
    pub user_agent: String,
    /// What the node says about itself: namespace, workload labels,
    /// instance IPs, interception mode (see [`crate::identity`]).
    pub identity: crate::identity::NodeIdentity,
    /// Its own services: those with an endpoint at one of its instance IPs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_services: Vec<String>,
    /// The hosts it may see, when scoped (absent: every host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeStatus>,
    /// In capture mode: its own inbound ports, and the service ports
    /// capture cannot reach for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureStatus>,
    /// Rule features that bind to the services this client uses and that
    /// it cannot honour: each is left out of what it receives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unhonoured: Vec<crate::translate::Unhonoured>,
    /// Per type, in push order; only types the client asked for.
    pub types: Vec<TypeStatus>,
}

/// A connection's scope, on /debug/syncz.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScopeStatus {
    /// What gave it: `scope NAMESPACE/NAME`, or `default` (the mesh-wide
    /// default hosts).
    pub source: String,
    /// How many hosts it lets through.
    pub hosts: usize,
}

/// A capture-mode connection's layout, on /debug/syncz.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CaptureStatus {
    /// The ports of its own workload that inbound traffic is delivered to.
    pub inbound_ports: Vec<u32>,
    /// Service ports capture cannot reach for it: TCP ports without a
    /// virtual IP (capture cannot tell them apart), and ports equal to the
    /// proxy's own 15001/15006: `HOST:PORT`, with the reason for the latter.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
}
