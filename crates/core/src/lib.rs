//! Sextant's core: the canonical service model, the [`Registry`] contract
//! every adapter implements, and the merged [`MeshView`].
//!
//! Data flows one way:
//!
//! ```text
//! Registry::watch() --Event--> aggregator --Arc<MeshView>--> translator --> ADS server
//! ```
//!
//! Where to start reading:
//! - [`model`]: [`Service`], [`Endpoint`] and friends; also the registry file format.
//! - [`registry`]: the [`Registry`] trait and its [`Event`] vocabulary, with a
//!   complete example adapter.
//! - [`recover`]: reconnecting with jittered backoff, so adapters do not.
//! - [`rules`]: traffic rules, the second stream beside services:
//!   [`RuleSource`], [`Rule`].
//! - [`memory`]: [`MemoryRegistry`], fed from code.
//! - [`view`]: [`MeshView`], what the aggregator publishes.
//!
//! Writing an adapter takes three steps: convert your platform's objects
//! into [`Service`] values (a pure function, easy to test with tables);
//! report through a [`recover::EventSender`] (`reset`, `apply`, `delete`,
//! `invalid` and `resolved`); and let [`recover`] do the reconnecting. A
//! source with a watch API writes one connect-read-follow session and runs
//! it with [`recover::resilient_task`] inside [`Registry::watch`], as the
//! built-in etcd, Consul and Kubernetes adapters do. A source that can only
//! be read whole returns one read from a function and hands it to
//! [`recover::poll`], which sends only what changed: `examples/http-registry`
//! works so. `sextant_testkit::contract` checks the result
//! (`registry_contract`, `rule_source_contract`, `problems_contract`).

#![forbid(unsafe_code)]

pub mod entries;
pub mod error;
pub mod export;
pub mod groups;
pub mod journal;
pub mod memory;
pub mod model;
pub mod progress;
pub mod recover;
pub mod registry;
pub mod rules;
pub mod secret;
pub mod sent;
pub mod time;
pub mod validate;
pub mod view;

pub use error::{BoxError, Error, Result};
pub use memory::MemoryRegistry;
pub use model::{
    Address, Endpoint, Health, Hostname, Identities, Labels, Locality, Location, Protocol,
    Resolution, Service, ServicePort,
};
pub use registry::{Event, EventStream, Keyed, Registry, RegistryId, changes};
pub use rules::{
    DestinationPolicy, MemoryRules, PolicyEntry, RouteEntry, RouteRule, Rule, RuleKey, RuleKind,
    RuleProblems, RuleSource, RuleSpec, RuleStream, ScopeEntry, ScopeHost, ScopeRule,
};
pub use secret::Secret;
pub use sent::SentServices;
pub use validate::{ValidationError, ValidationErrors};
pub use view::{Change, Conflict, ConflictField, MeshService, MeshView, NamespacedRules};
