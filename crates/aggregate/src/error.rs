//! Errors of the aggregator's API.

use sextant_core::RegistryId;

/// What can go wrong when configuring the aggregator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two registries share an id; ids key the shards. Not retryable.
    #[error("registry id {0} is used twice")]
    DuplicateRegistry(RegistryId),
    /// The aggregator has stopped (its task ended). Not retryable.
    #[error("aggregator has stopped")]
    Stopped,
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
