//! Merges every registry into one [`sextant_core::MeshView`].
//!
//! [`Aggregator`] keeps one shard per registry, so that dropping a registry
//! drops exactly its contribution, and publishes the merged view as
//! `Arc<MeshView>` on a `tokio::sync::watch` channel whenever it changes.
//!
//! Rules (see the README's "Merging registries"):
//! - The same hostname from several registries is one service. Ports,
//!   namespace, labels and addresses come from the first registry in
//!   priority order that has it; endpoints are the union
//!   ([`MergeMode::Union`], default) or the first registry's only
//!   ([`MergeMode::First`]). Disagreements are recorded as
//!   [`sextant_core::Conflict`]s in the view.
//! - Nothing is published until every registry has sent its first full read
//!   or [`AggregatorConfig::startup_timeout`] passed; then the registries
//!   still missing are named in the status.
//! - A registry that reports [`sextant_core::Error::Unavailable`] keeps its
//!   last-known-good contribution, marked stale, until its next full read;
//!   [`AggregatorConfig::max_stale`] optionally drops it.
//! - Services that fail validation are rejected; their previous version stays.
//!
//! Start reading at [`merge::MergeState`] (the pure merge) and
//! [`Aggregator::run`] (the event loop).
//!
//! ```no_run
//! use std::sync::Arc;
//! use sextant_aggregate::{Aggregator, AggregatorConfig};
//! use sextant_core::{MemoryRegistry, Registry};
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let registry = MemoryRegistry::new("memory/main");
//! let (aggregator, handle) = Aggregator::new(
//!     AggregatorConfig::default(),
//!     vec![Arc::new(registry.clone()) as Arc<dyn Registry>],
//! )?;
//! tokio::spawn(aggregator.run());
//! let view = handle.ready().await?;
//! println!("generation {} has {} services", view.generation, view.services.len());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod aggregator;
pub mod error;
pub mod merge;
pub mod status;

pub use aggregator::{Aggregator, AggregatorConfig, AggregatorHandle};
pub use error::{Error, Result};
pub use merge::{MergeMode, MergeState};
pub use status::{AggregateStatus, ErrorRecord, RegistryStatus, SourceKind, SyncState};
