//! What the aggregator knows about each registry, for debug endpoints and
//! metrics.

use std::time::SystemTime;

use serde::Serialize;
use sextant_core::RegistryId;
use sextant_core::time::{rfc3339, rfc3339_opt};

/// Where a registry stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// No full read has completed yet.
    Syncing,
    /// In sync with its source.
    Synced,
    /// The source is unreachable; the last-known-good contribution is served.
    Stale,
    /// Stale for longer than the maximum staleness: its contribution was dropped.
    Dropped,
}

/// A recorded error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ErrorRecord {
    /// The object the error is about, when it is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
    /// The message with its causes.
    pub message: String,
    /// When it was last seen.
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// What a source's stream carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Services, from a [`sextant_core::Registry`].
    Services,
    /// Traffic rules, from a [`sextant_core::RuleSource`].
    Rules,
}

/// One registry (or rule source) as the aggregator sees it.
#[derive(Clone, Debug, Serialize)]
pub struct RegistryStatus {
    /// The registry.
    pub id: RegistryId,
    /// Services or rules.
    pub kind: SourceKind,
    /// Where it stands.
    pub state: SyncState,
    /// When its last full read (Reset) arrived.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_sync: Option<SystemTime>,
    /// Since when it is stale, while it is.
    #[serde(serialize_with = "rfc3339_opt")]
    pub stale_since: Option<SystemTime>,
    /// Services it contributes.
    pub services: usize,
    /// Endpoints it contributes.
    pub endpoints: usize,
    /// Route rules it holds (a rule source).
    pub routes: usize,
    /// Destination policies it holds (a rule source).
    pub policies: usize,
    /// Scope rules it holds (a rule source).
    pub scopes: usize,
    /// The last error of any kind.
    pub last_error: Option<ErrorRecord>,
    /// Objects currently rejected (invalid objects and services that failed
    /// validation), by object; cleared by the registry's next full read.
    pub problems: Vec<ErrorRecord>,
    /// Events received.
    pub events_total: u64,
    /// Errors received.
    pub errors_total: u64,
    /// Services rejected by validation.
    pub rejected_total: u64,
}

/// The aggregator's whole status.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AggregateStatus {
    /// True once a view is being served.
    pub ready: bool,
    /// Registries that had not synced when the start-up timeout passed.
    pub missing_at_startup: Vec<RegistryId>,
    /// Generation of the latest published view.
    pub generation: u64,
    /// Services in the latest view.
    pub services: usize,
    /// Endpoints in the latest view.
    pub endpoints: usize,
    /// Conflicts in the latest view.
    pub conflicts: usize,
    /// Each registry, in priority order.
    pub registries: Vec<RegistryStatus>,
}

impl AggregateStatus {
    /// The status of one registry.
    pub fn registry(&self, id: &str) -> Option<&RegistryStatus> {
        self.registries.iter().find(|r| r.id.as_str() == id)
    }
}
