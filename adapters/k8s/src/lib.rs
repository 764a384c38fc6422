//! A registry read from a Kubernetes API server: Services and
//! `discovery.k8s.io/v1` EndpointSlices, and Nodes for localities.
//! See [`convert`] for how objects become services.
//!
//! How it follows the API server:
//! - A session lists every watched kind (in pages) and sends the whole
//!   state as one [`Event::Reset`], then watches each kind from the version
//!   its list returned, with bookmarks, restarting each watch from its
//!   latest version when the server ends it (`timeoutSeconds`).
//! - A change to a Service or one of its slices sends that one service
//!   ([`Event::Apply`] or [`Event::Delete`]); changes that arrive together
//!   are applied together. A Node matters only when its region or zone
//!   labels change (status heartbeats are ignored).
//! - `410 Gone` (the version is too old) re-lists everything and sends one
//!   Reset: the view never empties in between.
//! - An unreachable or failing API server ends the session: the registry is
//!   marked stale and keeps serving its last-known-good services; the next
//!   session (after jittered backoff, [`sextant_core::recover`]) re-lists.
//! - `403 Forbidden` names the missing RBAC permission. Nodes are optional:
//!   without permission to read them, endpoints get only their slice's zone
//!   and a warning says why.
//! - An object that cannot be decoded or converted is skipped and reported
//!   as [`Error::InvalidObject`] (counted by the aggregator); the rest keeps
//!   working. So is a watch event that is not valid JSON: it is named by
//!   kind, namespace and name when those can be read from it, else by its
//!   byte offset in the watch, and skipped (the object keeps its last good
//!   state); a watch event longer than [`MAX_EVENT_BYTES`] likewise.
//!   A problem belongs to its object, named as a readable object would be
//!   (`KIND NAMESPACE/NAME`): when the object is fixed or deleted, its
//!   problem alone is retracted ([`Event::Resolved`]).
//!
//! Where things are: `registry.rs` holds the settings and the registry's
//! face; `services.rs` the services session and what it knows; `rules.rs` the
//! rules session and route status; `entries.rs` the ServiceEntries and
//! WorkloadEntries, a registry of their own ([`K8sEntries`]); `watch.rs` the list/watch machinery both
//! run on; `kinds.rs` what each kind is called; `convert.rs`, `istio.rs`
//! and `gateway.rs` the pure conversions (Gateways, Ingresses, Istio's
//! Gateway among them; `rules/` writes their status).
//!
//! Built on kube-rs's client (`kube::Api` list and watch, rustls with ring)
//! and k8s-openapi's types. kube-runtime's watcher is not used: it hides when
//! a re-list starts and ends across kinds, and when a broken watch is back,
//! which is what lets this adapter send one Reset per re-list and clear
//! staleness only after a fresh read.
//!
//! The `client` feature (on by default) is the registry itself; without it
//! the crate is the pure conversions alone (`convert`, `istio`, `gateway`),
//! with neither kube's client nor tokio (what the fuzz targets build).

#![forbid(unsafe_code)]

pub mod convert;
#[cfg(feature = "client")]
mod entries;
pub mod gateway;
#[cfg(feature = "client")]
pub mod groups;
pub mod istio;
#[cfg(feature = "client")]
mod kinds;
#[cfg(feature = "client")]
mod registry;
#[cfg(feature = "client")]
pub mod root_cert;
#[cfg(feature = "client")]
mod rules;
#[cfg(feature = "client")]
mod services;
#[cfg(feature = "client")]
pub mod tokens;
#[cfg(feature = "client")]
mod watch;

#[cfg(feature = "client")]
pub use entries::K8sEntries;
#[cfg(feature = "client")]
pub use registry::*;
