//! Translates the merged view into Envoy resources and serves them over
//! ADS, state-of-the-world and delta, to Envoy and proxyless gRPC clients.
//!
//! ```text
//! watch<Arc<MeshView>> --publisher (debounce)--> watch<Arc<Snapshot>> --> XdsServer (one task per connection)
//! ```
//!
//! - [`translate`]: pure functions from a `MeshService` to clusters,
//!   assignments, listeners and routes. Start here for *what* proxies get.
//! - [`resource`]: a resource is encoded once into shared bytes; its version
//!   is a hash of those bytes, equal on every replica and after a restart.
//! - [`snapshot`]: all resources for one view, built from the previous
//!   snapshot by re-translating only the services that changed, and
//!   recording which names changed per type.
//! - [`publisher`]: coalesces views into snapshots: a short debounce for
//!   endpoint-only changes (only assignments are re-encoded and sent), a
//!   longer one for structural changes, and a maximum delay.
//! - `lens`: what one proxy sees of a snapshot (its scope, its capture
//!   layout), built per connection and shared by alike proxies.
//! - [`server`]: the ADS service. `server::conn` holds the protocol rules
//!   per connection: subscriptions, nonces, ACK/NACK, ordering.
//!
//! What proxies receive:
//! - a Cluster `outbound|PORT||HOSTNAME` per service port (EDS over ADS;
//!   HTTP/2 upstream for HTTP2 and GRPC ports; STRICT_DNS with inline
//!   endpoints when a service's endpoints are DNS names, since EDS carries
//!   IP addresses);
//! - a ClusterLoadAssignment per EDS cluster, endpoints grouped by locality,
//!   every endpoint and locality weighted (gRPC clients require both);
//! - the Listener `outbound_http` on the outbound address with RDS route
//!   `outbound_http`: a virtual host per HTTP-like service port (domains
//!   `HOSTNAME:PORT`, plus `HOSTNAME` for the first such port), and a
//!   catch-all that answers 404;
//! - per GRPC or HTTP2 port, a Listener `HOSTNAME:PORT` with an
//!   `api_listener` and its RouteConfiguration, for `xds:///HOSTNAME:PORT`.
//!
//! Protocol rules (see `server::conn`):
//! - one response in flight per type, in the order clusters, endpoints,
//!   listeners, routes, then cluster removals; a type waits for what it
//!   depends on, not for the other types' ACKs: Envoy never sees a route to
//!   a cluster it does not have, and a new cluster never waits for its own
//!   ACK to get its endpoints;
//! - every subscription is answered; an assignment or route configuration
//!   that does not exist is answered with an empty one, so nothing warms
//!   until a timeout;
//! - a NACK is recorded and counted, and the rejected version is not sent
//!   again; the next different version is;
//! - a SotW client reconnecting with the version of exactly what it would
//!   get, and a delta client declaring what it holds, are sent nothing again.

#![forbid(unsafe_code)]

pub mod bootstrap;
pub mod capture;
mod generational;
pub mod identity;
mod lens;
pub mod metrics;
pub mod publisher;
pub mod resource;
mod route_table;
pub mod router;
pub mod scope;
pub mod server;
pub mod snapshot;
pub mod translate;

pub use publisher::{Debounce, publisher};
pub use resource::{Resource, ResourceType};
pub use server::{
    CacheSizes, ConnectionStatus, DEFAULT_MAX_REQUEST_BYTES, Metrics, NackRecord, ServerConfig,
    XdsServer,
};
pub use snapshot::Snapshot;
pub use translate::{Client, TranslateOptions, Unhonoured};
