//! A registry read from Consul's catalog and health endpoints with blocking
//! queries. See [`convert`] for how instances become endpoints.
//!
//! How it follows Consul (learning from Istio's removed adapter, which
//! blocked only on the service list, re-listed everything on any change and
//! ignored health):
//! - One blocking query on `/v1/catalog/services` for the set of services,
//!   and one per service on `/v1/health/service/NAME` for its instances and
//!   their checks. A change to one service costs one query for that service.
//! - Consul's rules for blocking queries: `index` and `wait`, the index from
//!   `X-Consul-Index`; an index that goes backwards starts again from 0; an
//!   index of 0 is taken as 1; identical queries are at least
//!   `min_interval` apart, so a flapping service cannot spin a CPU.
//! - The first full read (catalog, then every service) is one `Reset`.
//!   Any failure (unreachable agent, 5xx, 403, malformed JSON) ends the
//!   session: the registry is marked stale, keeps serving its last-known-good
//!   services, and reconnects with jittered backoff ([`sextant_core::recover`]).
//! - A service that leaves the catalog leaves the view.
//! - Config entries: the services side also follows `service-defaults`
//!   (a service's protocol) and `service-resolver` (subset filters that
//!   are not plain label selectors are evaluated on each instance, see
//!   [`filter`]) with blocking queries; a change converts the services it
//!   touches again. The rules side ([`RuleSource`]) follows routers,
//!   splitters and resolvers. A kind Consul does not serve to us (404:
//!   Consul before 1.5 or a Consul-compatible registry; 403: a token
//!   without the right to read config entries) is logged once and asked
//!   for again every [`ConsulConfig::config_entries_retry`]; services flow
//!   meanwhile, without what that kind would add.
//! - Problems belong to their object (`consul service NAME`, a config
//!   entry): one that goes away is retracted on its own.
//!
//! Built on `reqwest` with rustls (ring): no Consul crate covered health,
//! weights, meta and blocking queries together. The `client` feature (on by
//! default) is the registry itself, in `registry.rs`; without it the crate
//! is the wire types and pure conversions alone (what the fuzz targets
//! build).

#![forbid(unsafe_code)]

pub mod api;
pub mod convert;
pub mod entries;
pub mod filter;
pub mod mapping;
#[cfg(feature = "client")]
mod registry;

pub use api::{MAX_RESPONSE_BYTES, next_index};
#[cfg(feature = "client")]
pub use registry::*;
