//! The server's settings.

use std::time::Duration;

use super::auth::{Tokens, XdsAuth};
use super::limits;
use crate::scope::ScopeConfig;
use crate::translate::capture::CaptureOptions;

/// Server tuning.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// How long to wait for the ACK of a response before assuming it was
    /// lost and moving on. Default 30 s: far above any live client's
    /// processing time, short enough that a lost message does not freeze a
    /// connection for long.
    pub ack_timeout: Duration,
    /// NACKs kept for the debug endpoint. Default 100.
    pub nack_history: usize,
    /// The largest request accepted, in bytes; a larger one ends its
    /// stream (gRPC status `OUT_OF_RANGE`, message length too large).
    /// Default [`DEFAULT_MAX_REQUEST_BYTES`], gRPC's own default limit for
    /// received messages: an Envoy's EDS request restating 50,000 cluster
    /// names is about 2.5 MB.
    pub max_request_bytes: usize,
    /// TCP connections open at once; more are closed as soon as they are
    /// accepted (`sextant_xds_connections_refused_total`). Default
    /// [`limits::default_max_connections`]: the open-file limit less
    /// headroom for the admin port, registries and files, which so keep
    /// working however many sockets are opened.
    pub max_connections: usize,
    /// TCP connections one client address may hold at once, so that one
    /// source cannot take every slot of [`ServerConfig::max_connections`].
    /// Default [`limits::default_max_connections_per_client`] of it: a
    /// quarter. Proxies behind one NAT address share it: raise it there.
    pub max_connections_per_client: usize,
    /// How long a new connection has to send its HTTP/2 preface before it
    /// is closed. Default 10 s.
    pub handshake_timeout: Duration,
    /// After the preface, the server pings every connection this often
    /// (HTTP/2 PING). Default 30 s.
    pub keepalive_interval: Duration,
    /// A connection that does not answer a ping within this is closed: a
    /// client gone silent, or one that never reads. Default 20 s.
    pub keepalive_timeout: Duration,
    /// Concurrent streams per connection, advertised as HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS`. Default 16: Envoy and the gRPC
    /// clients open one ADS stream per connection.
    pub max_streams_per_connection: u32,
    /// What a proxy must prove to be served (`--xds-auth`). Default none.
    /// A proved identity is always checked against the node's claimed
    /// namespace, whatever this says.
    pub auth: XdsAuth,
    /// Validates bearer tokens, for `auth` token or any.
    pub tokens: Option<Tokens>,
    /// Per-proxy scoping: the root namespace and the default hosts.
    pub scoping: ScopeConfig,
    /// Capture mode's ports and outbound policy.
    pub capture: CaptureOptions,
    /// Auto-registration of workloads that name a WorkloadGroup; `None`
    /// refuses their streams (see [`super::register`]).
    pub registrar: Option<super::register::Registrar>,
}

/// [`ServerConfig::max_request_bytes`]'s default: 4 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 4 << 20;

/// [`ServerConfig::ack_timeout`]'s default.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// [`ServerConfig::handshake_timeout`]'s default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for ServerConfig {
    fn default() -> Self {
        let max_connections = limits::default_max_connections();
        ServerConfig {
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            nack_history: 100,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_connections,
            max_connections_per_client: limits::default_max_connections_per_client(max_connections),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            max_streams_per_connection: 16,
            auth: XdsAuth::None,
            tokens: None,
            scoping: ScopeConfig::default(),
            capture: CaptureOptions::default(),
            registrar: None,
        }
    }
}
